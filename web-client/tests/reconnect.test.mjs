//! The WebSocket drops mid-call (the browser goes offline for a moment): the client
//! reconnects on its own and resumes its session, and both ends keep their peer
//! connection. A restart of the node leaves the audio flowing. Also both people press Join
//! at the same moment (glare on the first offers), and push-to-talk keeps the microphone
//! off unless Space is held.

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

    // Mark the connections, to tell afterwards whether they were kept or made anew.
    const mark = (page) => page.evaluate(() => {
      for (const pc of window.__voicechat.peers().values()) pc.__mark = 'first';
      return [...window.__voicechat.peers().keys()];
    });
    const kept = (page) => page.evaluate(() => [...window.__voicechat.peers()].map(([k, pc]) => `${k}:${pc.__mark || 'new'}:${pc.connectionState}`));
    const beforeA = await mark(A.page);
    const beforeB = await mark(B.page);
    const bSession = beforeA[0].split('/')[1];
    await B.context.setOffline(true);
    await sleep(2500);
    await B.context.setOffline(false);
    // B's new socket resumes its session: the node kept its seat, and both ends keep the
    // connection they had (no new offer, no gap).
    await waitFor(async () => (await B.page.evaluate(() => window.__voicechat.callStatus())) === 'joined' && (await B.page.evaluate(() => window.__voicechat.connections().length)) === 1, {
      timeout: 30_000,
      message: 'B to be back in the call',
    });
    assert.deepEqual(await kept(A.page), beforeA.map((k) => `${k}:first:connected`), 'A kept its connection to B');
    assert.deepEqual(await kept(B.page), beforeB.map((k) => `${k}:first:connected`), 'B kept its connection to A');
    assert.ok(beforeA[0].endsWith(bSession));
    await flowing(A.page, 'A after reconnect');
    await flowing(B.page, 'B after reconnect');
    assert.equal(await B.page.locator('[data-testid^="participant-ben@alpha"]').count(), 1, 'B is listed twice');
  });

  it('a restart of the node leaves the audio flowing, with no gap over 200 ms', async () => {
    // B reads the packets from A every 20 ms (getStats). A gap is the time between two
    // packets' arrival beyond the 20 ms of audio each carries, so that a late reading
    // (the page busy reconnecting) is not taken for one: per reading, the arrival time of
    // the last packet minus that of the one before the reading's first new packet, less
    // 20 ms for each of the others. Also the samples the decoder had to make up
    // (concealed), which is what a listener would hear. First a window without restart.
    const startSampler = () => B.page.evaluate(() => {
      const pc = [...window.__voicechat.peers().values()][0];
      const s = { pc, last: null, maxGap: 0, samples: 0, reset: false, concealed0: null, concealed: 0 };
      window.__gap = s;
      s.timer = setInterval(async () => {
        const stats = await s.pc.getStats();
        let r = null;
        stats.forEach((x) => {
          if (x.type === 'inbound-rtp' && x.kind === 'audio') r = x;
        });
        if (!r) return;
        s.samples += 1;
        if (s.concealed0 === null) s.concealed0 = r.concealedSamples;
        s.concealed = r.concealedSamples - s.concealed0;
        const now = { n: r.packetsReceived, at: r.lastPacketReceivedTimestamp };
        if (s.last && now.n < s.last.n) s.reset = true;
        if (s.last && now.n > s.last.n) s.maxGap = Math.max(s.maxGap, now.at - s.last.at - 20 * (now.n - s.last.n - 1));
        // Nothing new: the silence so far counts too (the report's time, on the same clock).
        if (s.last && now.n === s.last.n) s.maxGap = Math.max(s.maxGap, r.timestamp - s.last.at);
        if (!s.last || now.n !== s.last.n) s.last = now;
      }, 20);
    });
    const stopSampler = () => B.page.evaluate(() => {
      const s = window.__gap;
      clearInterval(s.timer);
      return { maxGap: s.maxGap, samples: s.samples, reset: s.reset, concealedMs: s.concealed / 48, same: [...window.__voicechat.peers().values()][0] === s.pc };
    });
    await startSampler();
    await sleep(4000);
    const control = await stopSampler();

    await startSampler();
    const marks = await A.page.evaluate(() => [...window.__voicechat.peers()].map(([k, pc]) => `${k}:${pc.__mark}`));
    const port = new URL(node.url).port;
    await node.stop({ keepData: true });
    await sleep(1000);
    node = await startNode({ dataDir: node.dataDir, listen: `127.0.0.1:${port}` });
    // Both pages come back (resuming their sessions) and the node lists both again.
    for (const [page, other] of [[A.page, 'ben@alpha'], [B.page, 'ann@alpha']]) {
      await waitFor(async () => (await byId(page, `participant-${other}`).count()) === 1 && (await page.evaluate(() => window.__voicechat.callStatus())) === 'joined', {
        timeout: 30_000,
        message: `${other} to be listed again after the restart`,
      });
    }
    await sleep(2000);
    const gap = await stopSampler();
    console.log(
      `node restart: longest gap in A's packets at B ${gap.maxGap.toFixed(0)} ms (without a restart ${control.maxGap.toFixed(0)} ms); ` +
        `concealed ${gap.concealedMs.toFixed(0)} ms (without ${control.concealedMs.toFixed(0)} ms); ${gap.samples} readings`,
    );
    assert.ok(gap.same && !gap.reset, 'B kept its connection to A (its counters did not restart)');
    assert.deepEqual(await A.page.evaluate(() => [...window.__voicechat.peers()].map(([k, pc]) => `${k}:${pc.__mark}`)), marks, 'A kept its connection');
    assert.ok(gap.samples > 100, `enough readings (${gap.samples})`);
    assert.ok(gap.maxGap <= 200, `the longest gap was ${gap.maxGap.toFixed(0)} ms`);
    await flowing(A.page, 'A after the restart');
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
