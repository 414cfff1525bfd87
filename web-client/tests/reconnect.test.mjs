//! The WebSocket drops mid-call (the browser goes offline for a moment): the client
//! reconnects on its own, re-joins the room under its new session, and audio flows again.
//! Also both people press Join at the same moment (glare on the first offers), and
//! push-to-talk keeps the microphone off unless Space is held.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, audioStats, sleep } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('reconnect and simultaneous join', { timeout: 150_000 }, () => {
  let node;
  let A;
  let B;
  let dir;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('reconnect');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 5, periodMs: 500, beepMs: 250 });
    node = await startNode();
    A = await launchBrowser(wav);
    B = await launchBrowser(wav);
  });

  after(async () => {
    for (const b of [A, B]) if (b) await b.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connected(page, other) {
    await byId(page, `participant-${other}`).waitFor({ timeout: 20_000 });
    await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', {
      message: `peer state of ${other} to be "connected"`,
    });
  }

  async function flowing(page, name) {
    const first = await audioStats(page);
    await waitFor(async () => {
      const s = await audioStats(page);
      return s.packetsReceived > first.packetsReceived + 25 && s.totalAudioEnergy > first.totalAudioEnergy;
    }, { message: `${name} to receive audio` });
  }

  it('both press Join at once; then B loses its socket, reconnects and re-joins', async () => {
    for (const [b, u] of [[A, 'ann'], [B, 'ben']]) {
      await b.page.goto(new URL('/register', node.url).href);
      await byId(b.page, 'register-username').fill(u);
      await byId(b.page, 'register-password').fill(`${u}-password`);
      await byId(b.page, 'register-submit').click();
      await byId(b.page, 'group-list').waitFor();
    }
    await byId(A.page, 'group-create-name').fill('Pair');
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill('Room');
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-link-Room').waitFor();
    await byId(A.page, 'member-add-input').fill('ben');
    await byId(A.page, 'member-add-submit').click();
    await byId(B.page, 'group-link-Pair').click();
    await byId(B.page, 'room-link-Room').click();
    await byId(A.page, 'room-link-Room').click();
    await byId(A.page, 'call-join').waitFor();
    await byId(B.page, 'call-join').waitFor();
    await Promise.all([byId(A.page, 'call-join').click(), byId(B.page, 'call-join').click()]);
    await connected(A.page, 'ben@alpha');
    await connected(B.page, 'ann@alpha');
    await flowing(A.page, 'A');
    await flowing(B.page, 'B');

    const before = await B.page.evaluate(() => [...window.__voicechat.peers().keys()]);
    await B.context.setOffline(true);
    await sleep(2500);
    await B.context.setOffline(false);
    // B's new socket has a new session: A must end up with one connection, to that session.
    await waitFor(async () => {
      const keys = await A.page.evaluate(() => [...window.__voicechat.peers().keys()]);
      return keys.length === 1 && !before.some((k) => keys[0].endsWith(k.split('/')[1])) && (await B.page.evaluate(() => window.__voicechat.callStatus())) === 'joined';
    }, { timeout: 30_000, message: 'B to re-join under a new session' });
    await connected(A.page, 'ben@alpha');
    await connected(B.page, 'ann@alpha');
    await flowing(A.page, 'A after reconnect');
    await flowing(B.page, 'B after reconnect');
    assert.equal(await B.page.locator('[data-testid^="participant-ben@alpha"]').count(), 1, 'B is listed twice');
  });

  it('push-to-talk: the microphone is off unless Space is held', async () => {
    const enabled = () => A.page.evaluate(() => window.__voicechat.localStream().getAudioTracks()[0].enabled);
    await byId(A.page, 'ptt-toggle').check();
    assert.equal(await enabled(), false);
    await waitFor(async () => (await byId(B.page, 'participant-ann@alpha').getAttribute('class')).includes('is-muted'), { message: 'B to see A muted' });
    await A.page.keyboard.down('Space');
    assert.equal(await enabled(), true);
    await A.page.keyboard.up('Space');
    assert.equal(await enabled(), false);
    await byId(A.page, 'ptt-toggle').uncheck();
    assert.equal(await enabled(), true);
  });
});
