//! Two users in two Chromium processes on one real node: register, group, room, membership
//! appearing live, a call with audio both ways over DTLS-SRTP, mute, leave, a non-member
//! kept out, and screenshots of the room view. Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, audioStats, sleep } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const GROUP = 'Team Lobby';
const ROOM = 'Daily';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('a call between two browsers', { timeout: 240_000 }, () => {
  let node;
  let A;
  let B;
  let C;
  let dir;
  let alice;
  let bob;
  let groupUrl;
  let roomUrl;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('e2e');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    node = await startNode();
    A = await launchBrowser(wav);
    B = await launchBrowser(wav);
  });

  after(async () => {
    for (const b of [A, B, C]) if (b) await b.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    for (const [who, b] of [['A', A], ['B', B], ['C', C]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
  });

  async function register(page, username) {
    await page.goto(new URL('/register', node.url).href);
    await byId(page, 'register-username').fill(username);
    await byId(page, 'register-password').fill(PASSWORD);
    await byId(page, 'register-submit').click();
    await byId(page, 'group-list').waitFor();
    return `${username}@alpha`;
  }

  it('(a) A creates a group and a room, adds B; B sees the group live; both join the call', async () => {
    alice = await register(A.page, 'alice');
    bob = await register(B.page, 'bob');
    await B.page.evaluate(() => {
      window.__noReload = true;
    });

    await byId(A.page, 'group-create-name').fill(GROUP);
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    assert.equal(await byId(A.page, 'group-title').textContent(), GROUP);
    groupUrl = A.page.url();

    await byId(A.page, 'room-create-name').fill(ROOM);
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, `room-link-${ROOM}`).waitFor();

    await byId(A.page, 'member-add-input').fill('bob');
    await byId(A.page, 'member-add-submit').click();
    await byId(A.page, `member-${bob}`).waitFor();

    // B never reloads: the group arrives over the WebSocket.
    await byId(B.page, `group-link-${GROUP}`).waitFor({ timeout: 20_000 });
    assert.equal(await B.page.evaluate(() => window.__noReload), true, 'B reloaded the page');

    await byId(A.page, `room-link-${ROOM}`).click();
    await byId(A.page, 'call-join').waitFor();
    roomUrl = A.page.url();
    assert.equal((await byId(A.page, 'call-join').textContent()).trim(), 'Start call');
    await byId(A.page, 'call-join').click();
    await byId(A.page, 'call-leave').waitFor();
    await byId(A.page, `participant-${alice}`).waitFor();

    await byId(B.page, `group-link-${GROUP}`).click();
    await byId(B.page, `room-link-${ROOM}`).click();
    await waitFor(async () => (await byId(B.page, 'call-join').textContent()).trim() === 'Join', { message: 'B to see "Join" (A already in the call)' });
    await byId(B.page, 'call-join').click();
    await byId(B.page, 'call-leave').waitFor();

    for (const [page, other] of [[A.page, bob], [B.page, alice]]) {
      await byId(page, `participant-${other}`).waitFor({ timeout: 20_000 });
      await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', {
        message: `peer state of ${other} to be "connected"`,
      });
      await byId(page, `volume-${other}`).waitFor();
    }
  });

  it('(b) audio flows both ways: packets and energy rise on each side', async () => {
    for (const [name, page] of [['A', A.page], ['B', B.page]]) {
      const first = await audioStats(page);
      assert.equal(first.peers, 1, `${name} should have exactly one peer connection`);
      const later = await waitFor(
        async () => {
          const s = await audioStats(page);
          return s.packetsReceived > first.packetsReceived + 50 && s.totalAudioEnergy > first.totalAudioEnergy && s ? s : null;
        },
        { message: `${name} to receive audio packets with rising energy` },
      );
      assert.ok(later.totalAudioEnergy > 0, `${name}: totalAudioEnergy is 0`);
      await waitFor(async () => (await audioStats(page)).audioLevel > 0.001, { interval: 100, message: `${name} to see a non-zero audioLevel` });
    }
  });

  it('(c) the media is encrypted: DTLS connected and an SRTP cipher negotiated', async () => {
    for (const [name, page] of [['A', A.page], ['B', B.page]]) {
      const s = await audioStats(page);
      assert.ok(s.dtlsStates.length > 0 && s.dtlsStates.every((d) => d === 'connected'), `${name}: dtls states ${s.dtlsStates}`);
      assert.ok(s.srtpCiphers.length > 0 && s.srtpCiphers.every(Boolean), `${name}: no srtpCipher reported`);
    }
  });

  it('(c2) and end to end: every frame each page plays was decrypted by its frame worker', async () => {
    // A receive transform Chromium never engages would hand the decoder ciphertext, whose
    // noise still shows as audioLevel: count what the worker decrypted against what arrived,
    // both read at once in the page, over 3 s (a few frames may be in flight between them).
    const read = (page) =>
      page.evaluate(async () => {
        let received = 0;
        for (const pc of window.__voicechat.peers().values()) {
          (await pc.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'audio') received += s.packetsReceived || 0;
          });
        }
        return { received, e2ee: await window.__voicechat.e2ee() };
      });
    for (const [name, page] of [['A', A.page], ['B', B.page]]) {
      const before = await read(page);
      await sleep(3000);
      const after = await read(page);
      const arrived = after.received - before.received;
      const decrypted = after.e2ee.stats.decrypted - before.e2ee.stats.decrypted;
      assert.ok(after.e2ee.on, `${name}: the page says end to end`);
      assert.ok(arrived > 100 && decrypted >= arrived * 0.85, `${name}: ${decrypted} frames decrypted of ${arrived} packets received`);
      assert.equal(after.e2ee.stats.failed + after.e2ee.stats.plaintext, 0, `${name}: ${JSON.stringify(after.e2ee.stats)}`);
      assert.equal(after.e2ee.stats.bypassed, null, `${name}: the page's own check saw packets bypass the worker`);
    }
  });

  /** How much energy B receives per second, over `ms`. */
  async function energyRate(page, ms = 2000) {
    const a = await audioStats(page);
    await sleep(ms);
    const b = await audioStats(page);
    return ((b.totalAudioEnergy - a.totalAudioEnergy) * 1000) / ms;
  }

  it('(d) mute stops the audio reaching B; unmute brings it back', async () => {
    const talking = await energyRate(B.page);
    assert.ok(talking > 0, `B receives no energy before mute (rate ${talking})`);

    await byId(A.page, 'call-mute').click();
    assert.equal(await byId(A.page, 'call-mute').getAttribute('aria-pressed'), 'true');
    await waitFor(async () => (await byId(B.page, `participant-${alice}`).getAttribute('class')).includes('is-muted'), {
      message: 'B to show A as muted',
    });
    // Let packets in flight drain, then the energy must stay flat.
    const muted = await waitFor(async () => {
      const r = await energyRate(B.page, 1500);
      return r < talking * 0.01 ? { r } : null;
    }, { timeout: 15_000, interval: 0, message: `B's received energy to stop rising (talking rate ${talking})` });
    assert.ok(muted.r < talking * 0.01);

    await byId(A.page, 'call-mute').click();
    assert.equal(await byId(A.page, 'call-mute').getAttribute('aria-pressed'), 'false');
    await waitFor(async () => (await energyRate(B.page, 1500)) > talking * 0.2, {
      timeout: 15_000,
      interval: 0,
      message: "B's received energy to rise again after unmute",
    });
  });

  it('(g) screenshots of the room view at 1280×800 and 390×844', async () => {
    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    for (const [w, hgt] of [[1280, 800], [390, 844]]) {
      await A.page.setViewportSize({ width: w, height: hgt });
      await sleep(400);
      const file = path.join(out, `room-${w}x${hgt}.png`);
      await A.page.screenshot({ path: file, fullPage: false });
      assert.ok(fs.statSync(file).size > 5000, `${file} looks empty`);
      // Nothing may overflow sideways on a phone.
      const overflow = await A.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page is ${overflow}px wider than the ${w}px viewport`);
    }
    await A.page.setViewportSize({ width: 1280, height: 800 });
  });

  it('(e) A leaves: B sees it live; A releases the microphone and closes every connection', async () => {
    await byId(A.page, 'call-leave').click();
    await byId(A.page, 'call-join').waitFor();
    const a = await A.page.evaluate(() => ({
      states: window.__voicechat.localStream().getTracks().map((t) => t.readyState),
      peers: window.__voicechat.peers().size,
    }));
    assert.deepEqual(a.states, ['ended']);
    assert.equal(a.peers, 0);
    await byId(B.page, `participant-${alice}`).waitFor({ state: 'detached', timeout: 20_000 });
    await waitFor(async () => (await B.page.evaluate(() => window.__voicechat.peers().size)) === 0, { message: 'B to close its connection to A' });
    assert.equal(await B.page.evaluate(() => window.__noReload), true, 'B reloaded the page');
  });

  it('(f) a non-member cannot see the group, open it by URL, or join its room', async () => {
    C = await launchBrowser(path.join(dir, 'beeps.wav'));
    await register(C.page, 'carol');
    await sleep(500);
    assert.equal(await byId(C.page, `group-link-${GROUP}`).count(), 0, 'carol sees the group in her list');

    await C.page.goto(groupUrl);
    await byId(C.page, 'not-found').waitFor();
    assert.equal(await byId(C.page, 'group-title').count(), 0);

    await C.page.goto(roomUrl);
    await byId(C.page, 'not-found').waitFor();
    assert.equal(await byId(C.page, 'call-join').count(), 0, 'carol is offered a Join button');

    // Even bypassing the UI, the node refuses the join.
    const [, , gid, , rid] = new URL(roomUrl).pathname.split('/');
    const reply = await C.page.evaluate(
      ({ gid: g, rid: r }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
          const timer = setTimeout(() => resolve({ timeout: true }), 10_000);
          ws.onmessage = (ev) => {
            const m = JSON.parse(ev.data);
            if (m.type === 'hello') ws.send(JSON.stringify({ type: 'join', group: g, room: r }));
            else if (m.type === 'error' || m.type === 'joined') {
              clearTimeout(timer);
              ws.close();
              resolve(m);
            }
          };
        }),
      { gid, rid },
    );
    assert.equal(reply.type, 'error', `the node let a non-member join: ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'not_found');
  });
});
