//! A real OpenID provider for the tests: `oidc-provider` (a certified implementation) on a
//! loopback address, with its built-in development sign-in pages (any login name, any
//! password) and accounts whose email is verified, plus an impostor origin whose discovery
//! document names the real issuer (for the "wrong issuer" check).

import http from 'node:http';
import { Provider } from 'oidc-provider';

/** Listens on `host:0`; resolves to the server and its origin. */
function listen(host) {
  const server = http.createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve({ server, origin: `http://${host}:${server.address().port}` }));
  });
}

/**
 * Starts the provider on 127.0.0.2 (another site than the node on 127.0.0.1, as a real
 * provider is). `clients(issuer)` is called once the node's redirect URIs are known, via
 * `configure({ redirectUris })`. Returns `{ issuer, impostor, configure, stop }`.
 */
export async function startProvider({ clientId = 'voicechat', clientSecret = 'test-client-secret' } = {}) {
  const real = await listen('127.0.0.2');
  const fake = await listen('127.0.0.3');
  const issuer = real.origin;
  let provider = null;
  real.server.on('request', (req, res) => {
    if (!provider) {
      res.writeHead(503).end('provider not configured yet');
      return;
    }
    provider.callback()(req, res);
  });
  // The impostor serves the real provider's discovery document unchanged: it names an
  // issuer other than the impostor's own URL, which a relying party must refuse.
  fake.server.on('request', async (req, res) => {
    const r = await fetch(`${issuer}/.well-known/openid-configuration`);
    res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text());
  });
  return {
    issuer,
    impostor: fake.origin,
    clientId,
    clientSecret,
    /** Creates the provider, accepting these redirect URIs for the client. */
    configure({ redirectUris }) {
      provider = new Provider(issuer, {
        clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris, response_types: ['code'], grant_types: ['authorization_code'] }],
        // Every login name is an account; its email is verified.
        async findAccount(ctx, sub) {
          return {
            accountId: sub,
            async claims() {
              return { sub, email: `${sub}@example.org`, email_verified: true, preferred_username: sub, name: sub };
            },
          };
        },
        claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username', 'name'] },
        pkce: { required: () => true },
        cookies: { keys: ['a-test-only-cookie-signing-key'] },
        features: { devInteractions: { enabled: true } },
      });
      // The provider's own warnings about development settings are expected here.
      provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));
    },
    stop() {
      real.server.closeAllConnections();
      fake.server.closeAllConnections();
      real.server.close();
      fake.server.close();
    },
  };
}
