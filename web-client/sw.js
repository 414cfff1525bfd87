//! The service worker of the installable app (PWA): it keeps the app shell (the page, its
//! modules, styles and icons) so that when the node cannot be reached the page still opens
//! and says "offline, reconnecting" instead of the browser's error. Network first: a node
//! that was upgraded serves its new files at once; the cache is only the fallback. The API,
//! the socket, sign-in with a provider and everything of other origins are never touched.

/** This worker's global scope, typed as what it is (tsconfig.worker.json). */
const sw = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));

const CACHE = 'voicechat-shell-1';
/** What the page needs to open at all; the rest is kept as it is fetched. */
const SHELL = ['/', '/style.css', '/app.js', '/favicon.svg', '/manifest.webmanifest', '/icons/icon-192.png'];

sw.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      const page = await fetch('/', { cache: 'no-store' });
      if (page.ok) await cache.put('/index.html', page);
      await cache.addAll(SHELL.filter((p) => p !== '/'));
      await sw.skipWaiting();
    })(),
  );
});

sw.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await sw.clients.claim();
    })(),
  );
});

/** Whether a request is the app's own file (never the API, the socket or another origin). */
function isShell(request) {
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== sw.location.origin) return false;
  // Not the node's own endpoints: the API, the socket, sign-in with a provider (redirects
  // that must reach the node every time), its card, its metrics.
  const p = url.pathname;
  return !(p.startsWith('/api/') || p === '/ws' || p.startsWith('/auth/') || p.startsWith('/.well-known/') || p === '/metrics');
}

sw.addEventListener('fetch', (event) => {
  const request = event.request;
  if (!isShell(request)) return;
  // Every page route is the same index.html (client-side routing).
  const key = request.mode === 'navigate' ? '/index.html' : request;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(key, response.clone());
        return response;
      } catch (err) {
        const kept = await cache.match(key);
        if (kept) return kept;
        throw err;
      }
    })(),
  );
});
