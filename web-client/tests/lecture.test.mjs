//! A lecture on one node: a stage room with two real Chromium speakers (the owner and an
//! admin, who start on stage) playing a known beep, 100 synthetic listeners from
//! `testnet crowd` (str0m connections to the node's audio server, sessions of one member)
//! and two real Chromium listeners (two pages of one Chromium process, to spare the CPU).
//! Every synthetic listener connects and gets packets on two streams (both speakers) with
//! under 1 % loss; both Chromium listeners hear both speakers (audioLevel > 0 on two slots).
//! Prints the crowd's figures. Needs the `testnet` binary next to VOICECHAT_BIN
//! (`cargo build -p voicechat-testnet`). Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertPrivateNetns, testnetBin, crowd, tempDir, writeBeepWav, startNode, launchBrowser, launchSharedBrowser, waitFor, registerOn, registerOverHttp, sfuSlots } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const LISTENERS = 100;
const SECS = 15;
const SPEAKERS = ['ada@alpha', 'bea@alpha'];
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('a lecture: 2 Chromium speakers, 100 synthetic and 2 Chromium listeners', { timeout: 300_000 }, () => {
  let node;
  let dir;
  let A;
  let B;
  let L;
  let bin;

  before(async () => {
    assertPrivateNetns();
    bin = testnetBin();
    dir = tempDir('lecture');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    // The crowd is LISTENERS sessions of one member, all in the call: above the node's
    // per-user defaults (8 sockets, 1 call seat), which are settings for load like this.
    const perUser = String(LISTENERS + 8);
    node = await startNode({ args: ['--sockets-per-user', perUser, '--call-seats-per-user', perUser] });
    [A, B, L] = await Promise.all([launchBrowser(wav), launchBrowser(wav), launchSharedBrowser(wav, 2)]);
  });

  after(async () => {
    for (const [who, b] of [['A', A], ['B', B], ...(L ? L.pages.map((p, i) => [`L${i + 1}`, p]) : [])]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
    for (const b of [A, B, L]) if (b) await b.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every listener hears both speakers', async () => {
    const listeners = L.pages.map((p) => p.page);
    await registerOn(A.page, node.url, 'ada', PASSWORD);
    await registerOn(B.page, node.url, 'bea', PASSWORD);
    for (const [i, page] of listeners.entries()) await registerOn(page, node.url, `lis${i + 1}`, PASSWORD);
    await registerOverHttp(node.url, 'crowd', PASSWORD);

    await byId(A.page, 'group-create-name').fill('University');
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill('Lecture hall');
    await byId(A.page, 'room-create-stage').check();
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-stage-Lecture hall').waitFor();
    for (const u of ['bea', 'lis1', 'lis2', 'crowd']) {
      await byId(A.page, 'member-add-input').fill(u);
      await byId(A.page, 'member-add-submit').click();
      await byId(A.page, `member-${u}@alpha`).waitFor();
    }
    // bea becomes an admin: a moderator, on stage from the start.
    await byId(A.page, 'member-role-bea@alpha').selectOption('admin');
    await byId(A.page, 'member-bea@alpha').locator('.role-admin').waitFor();
    await byId(A.page, 'room-link-Lecture hall').click();
    await byId(A.page, 'call-join').waitFor();
    const roomUrl = A.page.url();
    const [, , gid, , rid] = new URL(roomUrl).pathname.split('/');

    for (const page of [A.page, B.page]) {
      if (page.url() !== roomUrl) await page.goto(roomUrl);
      await byId(page, 'call-join').click();
      await waitFor(async () => (await byId(page, 'stage-role').getAttribute('data-place').catch(() => null)) === 'speaker', { message: 'a moderator on stage' });
    }
    for (const page of listeners) {
      await page.goto(roomUrl);
      await byId(page, 'call-join').click();
      await waitFor(async () => (await byId(page, 'stage-role').getAttribute('data-place').catch(() => null)) === 'audience', { message: 'a listener in the audience' });
    }

    // The crowd joins as one member's sessions and listens for SECS; meanwhile the pages.
    const started = Date.now();
    const running = crowd(bin, ['--url', node.url.replace(/\/$/, ''), '--user', 'crowd', '--password', PASSWORD, '--group', gid, '--room', rid, '--listeners', String(LISTENERS), '--secs', String(SECS)], 180_000);
    running.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile
    await waitFor(async () => Number(await byId(A.page, 'audience-count').textContent()) === LISTENERS + listeners.length, {
      timeout: 90_000,
      interval: 500,
      message: `the moderator to see ${LISTENERS + listeners.length} listeners`,
    });
    console.log(`${LISTENERS} synthetic listeners in the room after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    // With the crowd in: both Chromium listeners hear both speakers, each on its own slot.
    for (const [i, page] of listeners.entries()) {
      await waitFor(async () => {
        const slots = await sfuSlots(page);
        return SPEAKERS.every((u) => slots.some((s) => s.user === u && s.audioLevel > 0)) && slots;
      }, { timeout: 30_000, interval: 100, message: `listener ${i + 1} to hear both speakers (audioLevel > 0 on two slots)` });
    }

    const figures = await running;
    const { each, ...totals } = figures;
    const jitter = each.map((e) => e.jitter_ms).sort((a, b) => a - b);
    const streams = each.map((e) => e.streams);
    console.log(`crowd: ${JSON.stringify(totals)}`);
    console.log(`crowd: streams per listener ${Math.min(...streams)}–${Math.max(...streams)}, loss max ${(Math.max(...each.map((e) => e.loss)) * 100).toFixed(2)} %, jitter p50 ${jitter[jitter.length >> 1].toFixed(1)} ms max ${jitter.at(-1).toFixed(1)} ms`);
    assert.equal(totals.listeners, LISTENERS);
    const unconnected = each.map((e, i) => ({ i, ice: e.ice, error: e.error })).filter((_, i) => !each[i].connected);
    assert.equal(totals.connected, LISTENERS, `every synthetic listener connected to the audio server; not: ${JSON.stringify(unconnected)}`);
    const deaf = each.filter((e) => e.streams < 2 || e.received === 0).length;
    assert.equal(deaf, 0, `${deaf} synthetic listeners got packets on fewer than two streams`);
    assert.ok(totals.min_streams >= 2);
    assert.ok(totals.loss < 0.01, `loss ${(totals.loss * 100).toFixed(2)} %`);
    // Two speakers at 50 packets/s for SECS: the crowd received most of them.
    assert.ok(totals.received > LISTENERS * 2 * 50 * SECS * 0.8, `received ${totals.received}`);
  });
});
