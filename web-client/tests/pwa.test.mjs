//! The installable app (PWA): (a) Chromium finds the manifest and the service worker good
//! enough to install the app (CDP Page.getInstallabilityErrors: none; the manifest parses
//! without errors); (b) with the node stopped, the page still opens from the service
//! worker's cache and says it is offline and reconnecting, then comes back by itself when
//! the node is up again; (c) in a call the Media Session names the room and its group, and
//! the page asked for a screen Wake Lock (what Chromium answered is printed); leaving clears
//! both. Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, setUpRoom, joinCall } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** A free loopback port, so the node can be started again where the page expects it. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

describe('the installable app', { timeout: 120_000 }, () => {
  let dir;
  let node;
  let A;
  let port;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('pwa');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'));
    port = await freePort();
    node = await startNode({ listen: `127.0.0.1:${port}` });
    A = await launchBrowser(wav);
  });

  after(async () => {
    if (A) await A.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('(a) Chromium can install it: a valid manifest and a service worker in control', async () => {
    await A.page.goto(node.url);
    await A.page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    // The worker controls the page once it is reloaded under it.
    await A.page.reload();
    await waitFor(() => A.page.evaluate(() => !!navigator.serviceWorker.controller), { message: 'the service worker to control the page' });
    const cdp = await A.context.newCDPSession(A.page);
    const manifest = await cdp.send('Page.getAppManifest');
    assert.deepEqual(manifest.errors, [], `manifest errors: ${JSON.stringify(manifest.errors)}`);
    assert.match(manifest.url, /\/manifest\.webmanifest$/);
    const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
    assert.deepEqual(installabilityErrors, [], `installability errors: ${JSON.stringify(installabilityErrors)}`);
  });

  it('(b) node down: the page opens from the cache, says offline, and comes back by itself', async () => {
    const { roomUrl } = await setUpRoom(node.url, [A], ['ada']);
    const dataDir = node.dataDir;
    await node.stop({ keepData: true });
    await A.page.goto(roomUrl);
    await byId(A.page, 'offline').waitFor({ timeout: 15_000 });
    assert.match(await byId(A.page, 'offline').textContent(), /Offline.*Reconnecting/);
    assert.equal(await A.page.locator('.brand').count(), 1, 'the app shell, not the browser error page');
    node = await startNode({ listen: `127.0.0.1:${port}`, dataDir });
    await byId(A.page, 'call-join').waitFor({ timeout: 30_000 });
    assert.equal(await byId(A.page, 'offline').count(), 0);
  });

  it('(c) in a call: the Media Session names the room, a Wake Lock is asked for; leaving clears both', async () => {
    const roomUrl = A.page.url();
    await joinCall(A.page, roomUrl);
    const inCall = await waitFor(async () => {
      const d = await A.page.evaluate(() => window.__voicechat.device());
      return d.inCall && d.title && d.wakeLock && d;
    }, { message: 'the Media Session and the Wake Lock of the call' });
    console.log(`device in the call: ${JSON.stringify(inCall)}`);
    assert.equal(inCall.title, 'Hall');
    assert.equal(inCall.artist, 'Big Room Group');
    assert.match(inCall.wakeLock, /^(held|refused: \w+)$/, 'the page asked for the lock');
    await byId(A.page, 'call-leave').click();
    const out = await A.page.evaluate(() => window.__voicechat.device());
    assert.equal(out.inCall, false);
    assert.equal(out.title, null, 'the Media Session is cleared');
    assert.notEqual(out.wakeLock, 'held', 'the Wake Lock is released');
  });
});
