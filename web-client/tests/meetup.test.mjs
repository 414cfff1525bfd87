//! A conversation across two federated nodes, big enough for their audio servers: with the
//! threshold at 3, ann and amy on alpha and bea on beta make the call move to the SFU on both
//! nodes, the SFUs cascade (each pulls the other's people), and the pages drop their direct
//! connections to the other node's people: each page keeps one connection, to its own node,
//! and hears both others through it, still end-to-end encrypted.
//! Run through tests/run.sh.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertPrivateNetns, tempDir, writeBeepWav, startPeeredPair, launchBrowser, waitFor, registerOn, pageApi, soundingTracks } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('a conversation across two nodes on their cascaded audio servers', { timeout: 180_000 }, () => {
  let alpha;
  let beta;
  let dir;
  let browsers = [];

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('meetup');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    [alpha, beta] = await startPeeredPair('alpha', 'beta', { args: ['--sfu-threshold', '3'] });
    browsers = await Promise.all([launchBrowser(wav), launchBrowser(wav), launchBrowser(wav)]);
  });

  after(async () => {
    for (const b of browsers) {
      const errors = b.consoleLines.filter((l) => l.startsWith('[pageerror]'));
      if (errors.length) console.log(`page errors:\n${errors.join('\n')}`);
      await b.close();
    }
    for (const n of [alpha, beta]) if (n) await n.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('three people, two nodes: one connection each, to their own node, and everyone hears everyone', async () => {
    const [ann, amy, bea] = browsers.map((b) => b.page);
    await Promise.all([registerOn(ann, alpha.url, 'ann', PASSWORD), registerOn(amy, alpha.url, 'amy', PASSWORD), registerOn(bea, beta.url, 'bea', PASSWORD)]);
    const gid = (await pageApi(ann, 'POST', '/api/groups', { name: 'Meetup' })).body.id;
    const room = await pageApi(ann, 'POST', `/api/groups/${gid}/rooms`, { name: 'Lounge' });
    assert.equal(room.status, 201, JSON.stringify(room.body));
    const rid = room.body.id;
    for (const user of ['amy', 'bea@beta']) {
      await waitFor(async () => (await pageApi(ann, 'POST', `/api/groups/${gid}/members`, { user })).status === 201, { timeout: 30_000, message: `adding ${user}` });
    }
    await waitFor(async () => (await pageApi(bea, 'POST', `/api/invitations/${gid}/accept`)).status === 200, { timeout: 30_000, message: 'bea accepting' });

    for (const [page, node] of [[ann, alpha], [amy, alpha], [bea, beta]]) {
      await page.goto(new URL(`/g/${gid}/r/${rid}`, node.url).href);
      await byId(page, 'call-join').click();
      await byId(page, 'call-leave').waitFor();
    }
    const joined = Date.now();
    // Each page ends with one connection, to its own node's audio server, and hears the
    // other two through it.
    for (const [who, page] of [['ann@alpha', ann], ['amy@alpha', amy], ['bea@beta', bea]]) {
      await waitFor(async () => {
        const peers = await page.evaluate(() => [...window.__voicechat.peers().keys()]);
        return peers.length === 1 && peers[0] === 'sfu';
      }, { timeout: 45_000, interval: 200, message: `${who} connected to its node only` });
    }
    const settled = Date.now() - joined;
    // And the pages say so.
    for (const [who, page] of [['ann@alpha', ann], ['amy@alpha', amy], ['bea@beta', bea]]) {
      await waitFor(async () => /through this node, encrypted end to end.* People of other nodes come through their own node too, which cannot hear it either\./.test(await byId(page, 'call-transport').textContent()), { message: `${who}'s page saying how the audio goes` });
    }
    for (const [who, page] of [['ann@alpha', ann], ['amy@alpha', amy], ['bea@beta', bea]]) {
      await waitFor(async () => (await soundingTracks(page)) >= 2, { timeout: 30_000, interval: 200, message: `${who} hearing both others through the audio server` });
      const e2ee = await waitFor(async () => {
        const s = await page.evaluate(() => window.__voicechat.e2ee());
        return s.on && s.stats && s.stats.decrypted > 0 ? s : null;
      }, { message: `${who} decrypting` });
      assert.equal(e2ee.stats.plaintext || 0, 0, `${who} got plaintext frames`);
    }
    // The nodes' metrics: each pulls the other once.
    for (const node of [alpha, beta]) {
      const text = await (await fetch(new URL('/metrics', node.url))).text();
      assert.match(text, /^voicechat_sfu_cascade_links\{dir="in"\} 1$/m, `${node.url} pulls once`);
    }
    console.log(`three people on two nodes: ${settled} ms from the last join to one connection each (the cascade up both ways)`);
  });
});
