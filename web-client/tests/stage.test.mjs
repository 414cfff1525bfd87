//! A stage room in three browsers: the owner A moderates (on stage from the start), members
//! B and C listen with their microphones never opened. B raises a hand and A sees it live;
//! A invites B, B sees who asks and joins the stage, and C hears B through the node; A mutes
//! B (B's page says so, C stops hearing B); A moves B back to the audience (B's microphone
//! is released); A takes C out of the call (C's page says so, A sees C go); A steps down
//! and goes back on stage by itself. Screenshots at 360 px go to
//! target/screenshots/stage-*.png. Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, registerOn, sleep, slotOf, countGetUserMedia } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const GROUP = 'Lectures';
const ROOM = 'Main hall';
const [ADA, BOB, CYD] = ['ada@alpha', 'bob@alpha', 'cyd@alpha'];
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const shots = path.join(REPO, 'target', 'screenshots');

/** The microphone as the page has it: getUserMedia calls, the stream's tracks, the SFU sender's track. */
function micOf(page) {
  return page.evaluate(() => {
    const stream = window.__voicechat.localStream();
    const pc = window.__voicechat.peers().get('sfu');
    const sender = pc ? pc.getTransceivers()[0].sender : null;
    return {
      gum: window.__gum,
      tracks: stream ? stream.getAudioTracks().map((t) => t.readyState) : [],
      sending: !!(sender && sender.track && sender.track.readyState === 'live'),
      direction: pc ? pc.getTransceivers()[0].direction : null,
    };
  });
}

/** Energy per second C receives on the slot carrying `user` (0 when no slot does) over `ms`. */
async function energyRate(page, user, ms) {
  const a = await slotOf(page, user);
  await sleep(ms);
  const b = await slotOf(page, user);
  if (!a || !b) return 0;
  return ((b.totalAudioEnergy - a.totalAudioEnergy) * 1000) / ms;
}

async function screenshot(page, name) {
  fs.mkdirSync(shots, { recursive: true });
  const size = page.viewportSize();
  await page.setViewportSize({ width: 360, height: 800 });
  await sleep(300);
  await page.screenshot({ path: path.join(shots, `stage-${name}.png`), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.setViewportSize(size);
  assert.ok(overflow <= 0, `stage-${name}: the page is ${overflow}px wider than 360px`);
}

describe('a stage: a moderator, two listeners', { timeout: 240_000 }, () => {
  let node;
  let dir;
  let A;
  let B;
  let C;
  let roomUrl;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('stage');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    node = await startNode();
    [A, B, C] = await Promise.all([launchBrowser(wav), launchBrowser(wav), launchBrowser(wav)]);
    for (const b of [A, B, C]) await countGetUserMedia(b.context);
  });

  after(async () => {
    for (const [who, b] of [['A', A], ['B', B], ['C', C]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
    for (const b of [A, B, C]) if (b) await b.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('(a) A makes a stage room; everyone joins: A on stage, B and C in the audience with no microphone', async () => {
    await registerOn(A.page, node.url, 'ada', PASSWORD);
    await registerOn(B.page, node.url, 'bob', PASSWORD);
    await registerOn(C.page, node.url, 'cyd', PASSWORD);
    await byId(A.page, 'group-create-name').fill(GROUP);
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill(ROOM);
    await byId(A.page, 'room-create-stage').check();
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, `room-stage-${ROOM}`).waitFor();
    for (const u of ['bob', 'cyd']) {
      await byId(A.page, 'member-add-input').fill(u);
      await byId(A.page, 'member-add-submit').click();
      await byId(A.page, `member-${u}@alpha`).waitFor();
    }
    // The members see the room marked as a stage, live.
    await byId(B.page, `group-link-${GROUP}`).click();
    await byId(B.page, `room-stage-${ROOM}`).waitFor();

    await byId(A.page, `room-link-${ROOM}`).click();
    await byId(A.page, 'call-join').click();
    roomUrl = A.page.url();
    await waitFor(async () => (await byId(A.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'A on stage' });
    for (const page of [B.page, C.page]) {
      await page.goto(roomUrl);
      await byId(page, 'stage-hint').waitFor();
      await byId(page, 'call-join').click();
      await waitFor(async () => (await byId(page, 'stage-role').getAttribute('data-place').catch(() => null)) === 'audience', { message: 'a listener in the audience' });
    }
    await waitFor(async () => (await byId(A.page, 'audience-count').textContent()) === '2', { message: 'A sees two listeners' });
    assert.equal(await byId(A.page, 'speaker-count').textContent(), '1');
    await byId(A.page, `stage-speakers`).locator(`[data-testid="participant-${ADA}"]`).waitFor();
    for (const [page, name] of [[B.page, 'B'], [C.page, 'C']]) {
      await waitFor(async () => (await page.evaluate(() => window.__voicechat.sfu().state)) === 'connected', { message: `${name} on the node's audio server` });
      const mic = await micOf(page);
      assert.deepEqual(mic, { gum: 0, tracks: [], sending: false, direction: 'sendonly' }, `${name}'s microphone is untouched while listening`);
      // A listener has no mute, push-to-talk or microphone choice.
      for (const id of ['call-mute', 'callbar-mute', 'ptt-toggle', 'mic-select']) assert.equal(await byId(page, id).count(), 0, `${name} shows ${id}`);
    }
    const a = await micOf(A.page);
    assert.ok(a.sending && a.gum === 1, `A sends its microphone: ${JSON.stringify(a)}`);
    await byId(A.page, 'call-mute').waitFor();
    // Mute is not shown twice: the header strip stays out of the call's own room page.
    assert.equal(await byId(A.page, 'callbar-mute').count(), 0, 'Mute twice on the room page');
    // Listeners hear A.
    await waitFor(async () => ((await slotOf(C.page, ADA)) || {}).audioLevel > 0, { interval: 100, message: 'C hears A' });
  });

  it('(b) B raises a hand: A sees it live; A invites B, who sees who asks and joins the stage; C hears B', async () => {
    await byId(B.page, 'stage-hand').click();
    await waitFor(async () => (await byId(B.page, 'stage-hand').textContent()) === 'Lower hand', { message: "B's button to say Lower hand" });
    const hand = byId(A.page, `hand-${BOB}`);
    await hand.waitFor({ state: 'visible' });
    assert.equal(await hand.getAttribute('aria-label'), 'bob raised a hand');
    assert.match(await byId(A.page, `participant-${BOB}`).innerText(), /✋/);
    await screenshot(A.page, 'moderator');

    await byId(A.page, `moderate-invite-${BOB}`).click();
    await byId(A.page, `invited-${BOB}`).waitFor({ state: 'visible' });
    await byId(B.page, 'stage-invitation').waitFor();
    assert.equal(await byId(B.page, 'stage-invitation-text').textContent(), 'ada invites you to speak.');
    assert.equal((await micOf(B.page)).gum, 0, 'an invitation alone opens no microphone');
    await screenshot(B.page, 'invitation');

    await byId(B.page, 'stage-accept').click();
    await waitFor(async () => (await byId(B.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'B on stage' });
    await waitFor(async () => (await micOf(B.page)).sending, { message: "B's microphone on its connection to the node" });
    await byId(B.page, 'call-mute').waitFor();
    await byId(A.page, 'stage-speakers').locator(`[data-testid="participant-${BOB}"]`).waitFor();
    await byId(C.page, 'stage-speakers').locator(`[data-testid="participant-${BOB}"]`).waitFor();

    // C hears B on the slot that carries B: packets, energy rising, a level above 0.
    const first = await waitFor(() => slotOf(C.page, BOB), { message: 'a slot of C carries B' });
    await waitFor(async () => {
      const s = await slotOf(C.page, BOB);
      return s && s.packetsReceived > first.packetsReceived + 50 && s.totalAudioEnergy > first.totalAudioEnergy;
    }, { message: 'C receives B through the node' });
    await waitFor(async () => ((await slotOf(C.page, BOB)) || {}).audioLevel > 0, { interval: 100, message: "C sees B's audioLevel above 0" });
    await screenshot(B.page, 'speaker');
  });

  it('(c) A mutes B: B is told, C stops hearing B', async () => {
    const talking = await energyRate(C.page, BOB, 1500);
    assert.ok(talking > 0, `C receives no energy from B (rate ${talking})`);
    await byId(A.page, `moderate-mute-${BOB}`).click();
    await byId(B.page, 'stage-moderated').waitFor();
    assert.match(await byId(B.page, 'stage-moderated').textContent(), /^A moderator \(ada\) muted you\./);
    assert.match(await byId(B.page, 'notice').textContent(), /A moderator \(ada\) muted you/);
    assert.equal(await byId(B.page, 'call-mute').textContent(), 'Unmute');
    await waitFor(async () => (await energyRate(C.page, BOB, 1500)) < talking * 0.01, { timeout: 15_000, interval: 0, message: "C's energy from B to stop rising" });
    await byId(A.page, `participant-${BOB}`).locator('.muted-badge:visible').waitFor();
  });

  it('(d) A moves B back to the audience: B is a listener again and its microphone is released', async () => {
    await byId(A.page, `moderate-audience-${BOB}`).click();
    await waitFor(async () => (await byId(B.page, 'stage-role').getAttribute('data-place')) === 'audience', { message: 'B back in the audience' });
    await waitFor(async () => {
      const m = await micOf(B.page);
      return !m.sending && m.tracks.length === 1 && m.tracks[0] === 'ended';
    }, { message: "B's microphone track stopped" });
    await byId(A.page, 'stage-audience').locator(`[data-testid="participant-${BOB}"]`).waitFor();
    assert.equal(await byId(B.page, 'call-mute').count(), 0);
    await screenshot(C.page, 'audience');
  });

  it('(e) A takes C out of the call: C is told and is out, A sees C go', async () => {
    A.page.once('dialog', (d) => d.accept());
    await byId(A.page, `moderate-remove-${CYD}`).click();
    await byId(C.page, 'stage-moderated').waitFor();
    assert.match(await byId(C.page, 'stage-moderated').textContent(), /A moderator \(ada\) took you out of the call\./);
    await waitFor(async () => (await C.page.evaluate(() => window.__voicechat.callStatus())) === 'idle', { message: 'C out of the call' });
    await byId(C.page, 'call-join').waitFor();
    assert.equal(await C.page.evaluate(() => window.__voicechat.peers().size), 0, 'C keeps a connection');
    await byId(A.page, `participant-${CYD}`).waitFor({ state: 'detached' });
    await waitFor(async () => (await byId(A.page, 'audience-count').textContent()) === '1', { message: 'A counts one listener' });
    await screenshot(C.page, 'removed');
  });

  it('(f) A steps down from the stage (its microphone is released) and goes back on stage by itself', async () => {
    await byId(A.page, 'stage-leave').click();
    await waitFor(async () => (await byId(A.page, 'stage-role').getAttribute('data-place')) === 'audience', { message: 'A in the audience' });
    await waitFor(async () => !(await micOf(A.page)).sending, { message: "A's microphone released" });
    await byId(B.page, 'stage-audience').locator(`[data-testid="participant-${ADA}"]`).waitFor();
    await byId(A.page, 'stage-back').click();
    await waitFor(async () => (await byId(A.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'A back on stage' });
    await waitFor(async () => (await micOf(A.page)).sending, { message: "A's microphone on its connection again" });
    await waitFor(async () => ((await slotOf(B.page, ADA)) || {}).audioLevel > 0, { interval: 100, message: 'B hears A again' });
  });
});
