//! Calls on the node's audio server (SFU): (a) at `--sfu-threshold 2` two browsers are put on
//! it, hear each other through the node, say it is encrypted end to end with the same safety
//! code on both pages (e2ee.test.mjs shows the node cannot hear it) and keep no mesh
//! connection; (c) mute there silences and unmute brings the sound back; (d) UDP to the node
//! blocked for a while: the connection is made anew and audio comes back; (e) the socket
//! drops: a new session re-joins and reconnects to the node; (b) three browsers
//! in a mesh move to it when a fourth participant (a plain socket) pushes the call over
//! `--sfu-threshold 4`, without leaving and with a short gap (printed). Run through
//! tests/run.sh (private netns).

import { execFileSync } from 'node:child_process';
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, audioStats, sleep, setUpRoom, joinCall, sfuStats } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** A participant without a browser: registers over HTTP (with the CSRF token) and holds a seat over a bare WebSocket. */
async function syntheticUser(url, username) {
  const origin = new URL(url).origin;
  const jar = new Map();
  const cookies = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  async function call(method, p, body) {
    const headers = { Accept: 'application/json', Cookie: cookies(), Origin: origin };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (jar.has('vc_csrf')) headers['X-CSRF-Token'] = jar.get('vc_csrf');
    const res = await fetch(new URL(p, url), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const i = kv.indexOf('=');
      jar.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim());
    }
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
  await call('GET', '/api/session');
  await call('POST', '/api/register', { username, password: PASSWORD });
  return { id: `${username}@alpha`, seat: (gid, rid) => seat(url, cookies(), gid, rid) };
}

/** Opens /ws with `cookie`, joins the room and resolves once joined; `close()` leaves. */
function seat(url, cookie, group, room) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString('base64');
    const req = http.request(new URL('/ws', url), {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key, Cookie: cookie, Origin: new URL(url).origin },
    });
    const timer = setTimeout(() => reject(new Error('the synthetic participant was not joined in 10 s')), 10_000);
    req.on('error', reject);
    req.on('response', (res) => reject(new Error(`no WebSocket upgrade: ${res.statusCode}`)));
    req.on('upgrade', (_res, sock, head) => {
      const send = (msg) => {
        const data = Buffer.from(JSON.stringify(msg));
        const mask = crypto.randomBytes(4);
        const head = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length]) : Buffer.from([0x81, 0x80 | 126, data.length >> 8, data.length & 255]);
        sock.write(Buffer.concat([head, mask, data.map((b, i) => b ^ mask[i % 4])]));
      };
      let buf = Buffer.alloc(0);
      const take = (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          if (buf.length < 2) return;
          let len = buf[1] & 127;
          let at = 2;
          if (len === 126) [len, at] = [buf.readUInt16BE(2), 4];
          else if (len === 127) [len, at] = [Number(buf.readBigUInt64BE(2)), 10];
          if (buf.length < at + len) return;
          const opcode = buf[0] & 15;
          const text = buf.subarray(at, at + len).toString();
          buf = buf.subarray(at + len);
          if (opcode !== 1) continue;
          const m = JSON.parse(text);
          if (m.type === 'hello') send({ type: 'join', group, room, muted: true });
          else if (m.type === 'joined') {
            clearTimeout(timer);
            resolve({ mode: m.mode, close: () => sock.destroy() });
          } else if (m.type === 'error') reject(new Error(`the node refused the synthetic participant: ${text}`));
        }
      };
      sock.on('data', take);
      take(head); // what came with the upgrade (the hello)
      sock.on('error', () => {});
    });
    req.end();
  });
}

const sfuOf = (page) => page.evaluate(() => window.__voicechat.sfu());
const meshUsers = (page) => page.evaluate(() => window.__voicechat.connections().map((c) => c.user));

/** The page hears through the node: packets and energy rise on its SFU connection, audioLevel above 0. */
async function hearsThroughNode(page, name) {
  const first = await sfuStats(page);
  await waitFor(async () => {
    const s = await sfuStats(page);
    return s.packetsReceived > first.packetsReceived + 50 && s.totalAudioEnergy > first.totalAudioEnergy;
  }, { message: `${name} to receive audio through the node` });
  await waitFor(async () => (await sfuStats(page)).audioLevel > 0.001, { interval: 100, message: `${name} to see a non-zero audioLevel from the node` });
}

/** How much energy the page receives per second (every connection), over `ms`. */
async function energyRate(page, ms) {
  const a = await audioStats(page);
  await sleep(ms);
  const b = await audioStats(page);
  return ((b.totalAudioEnergy - a.totalAudioEnergy) * 1000) / ms;
}

function pageErrors(browsers) {
  for (const [who, b] of Object.entries(browsers)) {
    const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
    if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
  }
}

let dir;
let wav;
before(() => {
  assertPrivateNetns();
  dir = tempDir('sfu');
  wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
});
after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('two browsers on the audio server (--sfu-threshold 2)', { timeout: 120_000 }, () => {
  let node;
  let A;
  let B;

  before(async () => {
    node = await startNode({ args: ['--sfu-threshold', '2'] });
    [A, B] = await Promise.all([launchBrowser(wav), launchBrowser(wav)]);
  });

  after(async () => {
    pageErrors({ A, B });
    for (const b of [A, B]) if (b) await b.close();
    if (node) await node.stop();
  });

  it('(a) both are put on the node, hear each other through it, end to end, with one safety code', async () => {
    const { roomUrl } = await setUpRoom(node.url, [A, B], ['ada', 'bob']);
    await joinCall(A.page, roomUrl);
    await joinCall(B.page, roomUrl);
    for (const [page, other] of [[A.page, 'bob@alpha'], [B.page, 'ada@alpha']]) {
      await waitFor(async () => {
        const s = await sfuOf(page);
        return s.mode === 'sfu' && s.state === 'connected' && s.slots.includes(other);
      }, { message: `${other} on a slot of the node's connection` });
      await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', { message: `${other} shown connected` });
      assert.equal(await byId(page, `path-${other}`).getAttribute('data-path'), 'node');
    }
    await hearsThroughNode(A.page, 'A');
    await hearsThroughNode(B.page, 'B');
    for (const page of [A.page, B.page]) {
      const words = await byId(page, 'call-transport').textContent();
      assert.match(words, /encrypted end to end/);
      assert.match(words, /through this node/);
      assert.doesNotMatch(words, /not end to end/);
      assert.deepEqual(await meshUsers(page), [], 'a mesh connection between people of the same node on the SFU');
    }
    // Both pages show the same safety code (16 digits).
    const codes = await Promise.all([A.page, B.page].map((p) => byId(p, 'safety-code').getAttribute('data-code')));
    assert.match(codes[0], /^\d{4} \d{4} \d{4} \d{4}$/);
    assert.equal(codes[0], codes[1], 'the two pages read the same safety code');
    // The speaking indicator and the volume follow the slot that carries the person.
    await waitFor(async () => (await byId(A.page, 'participant-bob@alpha').getAttribute('data-speaking')) === 'true', { interval: 50, message: 'A to see bob speaking' });
    await byId(A.page, 'volume-bob@alpha').fill('30');
    const volume = await A.page.evaluate(() => {
      const slot = window.__voicechat.sfu().slots.indexOf('bob@alpha');
      const el = document.querySelector(`audio[data-session="sfu-${slot}"]`);
      return el ? el.volume : null;
    });
    assert.equal(volume, 0.3, "bob's volume on the slot that carries him");
    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    for (const [w, hgt] of [[1280, 800], [390, 844]]) {
      await A.page.setViewportSize({ width: w, height: hgt });
      await sleep(300);
      await A.page.screenshot({ path: path.join(out, `room-sfu-${w}x${hgt}.png`) });
      assert.ok((await A.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)) <= 0, `wider than ${w}px`);
    }
    await A.page.setViewportSize({ width: 1280, height: 800 });
  });

  it('(c) mute on the node silences for the other; unmute brings it back', async () => {
    const talking = await energyRate(B.page, 1500);
    assert.ok(talking > 0, `B receives no energy before mute (rate ${talking})`);
    await byId(A.page, 'call-mute').click();
    await waitFor(async () => (await energyRate(B.page, 1500)) < talking * 0.01, {
      timeout: 15_000,
      interval: 0,
      message: `B's received energy to stop rising (talking rate ${talking})`,
    });
    await byId(A.page, 'call-mute').click();
    await waitFor(async () => (await energyRate(B.page, 1500)) > talking * 0.2, { timeout: 15_000, interval: 0, message: "B's energy to rise again after unmute" });
    const s = await sfuOf(A.page);
    assert.equal(s.state, 'connected', 'mute must not touch the connection');
  });

  /** The UDP port of the node's audio server, from the answer's candidate. */
  const sfuPort = (page) =>
    page.evaluate(() => {
      const sdp = window.__voicechat.peers().get('sfu').remoteDescription.sdp;
      return Number(sdp.match(/a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host/i)[1]);
    });

  it('(d) UDP to the node blocked for a while: A connects anew (no ICE restart on ICE-lite) and hears B again', async () => {
    const port = await sfuPort(A.page);
    // Every datagram to the node's audio port is dropped (both browsers lose it).
    const rule = ['OUTPUT', '-p', 'udp', '--dport', String(port), '-j', 'DROP'];
    const ufrag = () => A.page.evaluate(() => window.__voicechat.peers().get('sfu').localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]);
    const pcBefore = await ufrag();
    execFileSync('iptables', ['-I', ...rule]);
    try {
      await waitFor(async () => (await sfuOf(A.page)).state !== 'connected', { timeout: 20_000, message: "A to notice the node's connection is gone" });
      await sleep(3000);
    } finally {
      execFileSync('iptables', ['-D', ...rule]);
    }
    for (const [page, name] of [[A.page, 'A'], [B.page, 'B']]) {
      await waitFor(async () => (await sfuOf(page)).state === 'connected', { timeout: 30_000, message: `${name} connected to the node again` });
      await hearsThroughNode(page, `${name} after the block`);
      assert.equal(await page.evaluate(() => window.__voicechat.callStatus()), 'joined');
    }
    assert.notEqual(await ufrag(), pcBefore, 'a new connection from a new offer');
  });

  it('(e) B loses its socket: the new session re-joins, connects to the node again, and they hear each other', async () => {
    await B.context.setOffline(true);
    await sleep(2500);
    await B.context.setOffline(false);
    await waitFor(async () => (await B.page.evaluate(() => window.__voicechat.callStatus())) === 'joined' && (await sfuOf(B.page)).state === 'connected', {
      timeout: 30_000,
      message: 'B to re-join and reconnect to the node',
    });
    for (const [page, other] of [[A.page, 'bob@alpha'], [B.page, 'ada@alpha']]) {
      await waitFor(async () => (await sfuOf(page)).slots.includes(other), { timeout: 20_000, message: `${other} on a slot again` });
    }
    await hearsThroughNode(A.page, 'A after B reconnected');
    await hearsThroughNode(B.page, 'B after reconnecting');
    assert.deepEqual(await meshUsers(A.page), []);
    assert.equal(await B.page.locator('[data-testid^="participant-bob@alpha"]').count(), 1, 'B is listed twice');
  });
});

describe('a mesh of three moves to the audio server at --sfu-threshold 4', { timeout: 150_000 }, () => {
  let node;
  let A;
  let B;
  let C;
  let dora;

  before(async () => {
    node = await startNode({ args: ['--sfu-threshold', '4'] });
    [A, B, C] = await Promise.all([launchBrowser(wav), launchBrowser(wav), launchBrowser(wav)]);
  });

  after(async () => {
    pageErrors({ A, B, C });
    if (dora) dora.close();
    for (const b of [A, B, C]) if (b) await b.close();
    if (node) await node.stop();
  });

  it('(b) a fourth participant pushes the call over: all three switch without leaving and keep hearing each other', async () => {
    const d = await syntheticUser(node.url, 'dora');
    const users = ['ann', 'ben', 'cat'];
    const ids = users.map((u) => `${u}@alpha`);
    const pages = [A.page, B.page, C.page];
    const { gid, rid, roomUrl } = await setUpRoom(node.url, [A, B, C], users, ['dora']);
    for (const page of pages) await joinCall(page, roomUrl);
    for (const [i, page] of pages.entries()) {
      for (const other of ids.filter((_, j) => j !== i)) {
        await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', { timeout: 30_000, message: `${users[i]} connected to ${other} in the mesh` });
      }
      assert.equal((await sfuOf(page)).mode, 'mesh');
      assert.match(await byId(page, 'call-transport').textContent(), /straight between browsers/);
    }
    for (const [i, page] of pages.entries()) {
      const first = await audioStats(page);
      await waitFor(async () => (await audioStats(page)).packetsReceived > first.packetsReceived + 50, { message: `${users[i]} hears the mesh` });
    }

    // Every ~50 ms, the longest time in which no inbound audio stream of the page got a new
    // packet: `polled` as the polls saw it, and `gap` corrected for the polls' own stalls (on
    // two busy cores a page's timers can stall for hundreds of ms while audio flows): between
    // two polls the best stream covered (new packets × 20 ms Opus frames) of the time passed;
    // the rest is a hole, counted both with the run before it and as the start of the next.
    const startProbe = (page) =>
      page.evaluate(() => {
        const g = { on: true, prev: performance.now(), last: performance.now(), polled: 0, run: 0, gap: 0, counts: new Map(), tick: 0 };
        window.__gap = g;
        const tick = async () => {
          if (!g.on) return;
          const now = performance.now();
          let best = 0;
          for (const [key, pc] of window.__voicechat.peers()) {
            const stats = await pc.getStats().catch(() => null);
            if (!stats) continue;
            stats.forEach((st) => {
              if (st.type !== 'inbound-rtp' || st.kind !== 'audio') return;
              const k = `${key}/${st.id}`;
              const n = st.packetsReceived || 0;
              best = Math.max(best, n - (g.counts.get(k) || 0));
              g.counts.set(k, n);
            });
          }
          if (best > 0) {
            g.polled = Math.max(g.polled, now - g.last);
            g.last = now;
          }
          const elapsed = now - g.prev;
          g.prev = now;
          g.tick = Math.max(g.tick, elapsed);
          const hole = Math.max(0, elapsed - best * 20);
          g.gap = Math.max(g.gap, g.run + hole);
          g.run = best > 0 ? hole : g.run + hole;
          setTimeout(tick, 50);
        };
        tick();
      });
    /** The figures so far; `stop` ends the probe, else they start over. */
    const readProbe = (page, stop) =>
      page.evaluate((end) => {
        const g = window.__gap;
        const now = performance.now();
        const out = { gap: Math.round(Math.max(g.gap, g.run)), polled: Math.round(Math.max(g.polled, now - g.last)), tick: Math.round(g.tick) };
        Object.assign(g, { gap: 0, polled: 0, tick: 0, on: !end });
        return out;
      }, stop);
    await Promise.all(pages.map(startProbe));
    await sleep(2000);
    const steady = await Promise.all(pages.map((p) => readProbe(p, false)));

    dora = await d.seat(gid, rid);
    assert.equal(dora.mode, 'sfu', 'the fourth participant should have put the call on the node');

    for (const [i, page] of pages.entries()) {
      const others = ids.filter((_, j) => j !== i);
      await waitFor(async () => {
        const s = await sfuOf(page);
        const mesh = await meshUsers(page);
        return s.mode === 'sfu' && s.state === 'connected' && others.every((o) => s.slots.includes(o)) && mesh.length === 0;
      }, { timeout: 30_000, message: `${users[i]} on the node, hearing the other two there, the mesh closed` });
      assert.equal(await page.evaluate(() => window.__voicechat.callStatus()), 'joined');
    }
    await sleep(1000);
    const gaps = await Promise.all(pages.map((p) => readProbe(p, true)));
    gaps.forEach((g, i) => {
      const was = steady[i];
      console.log(`switch gap ${'ABC'[i]}: ${g.gap} ms (polls saw none for ${g.polled} ms, polled at most ${g.tick} ms apart; before the switch: ${was.gap}/${was.polled}/${was.tick} ms)`);
    });
    for (const [i, g] of gaps.entries()) assert.ok(g.gap < 1000, `${users[i]} heard nothing for ${g.gap} ms during the switch`);

    for (const [i, page] of pages.entries()) {
      await hearsThroughNode(page, users[i]);
      assert.match(await byId(page, 'call-transport').textContent(), /through this node, encrypted end to end/);
      // The page was never left: same room, nobody gone.
      assert.equal(await byId(page, 'call-leave').count(), 1);
      for (const other of ids.filter((_, j) => j !== i)) {
        assert.equal(await byId(page, `peer-state-${other}`).getAttribute('data-state'), 'connected');
      }
    }
  });
});
