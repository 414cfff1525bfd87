//! Calls across NATs: the node on a "public" network (203.0.113.1), alice and bob each at
//! home behind a router that masquerades their LAN, one Chromium per home. Built from named
//! network namespaces by nat-net.sh (root, iproute2, iptables); the NAT rules are swapped
//! between the cases:
//!   (a) no relay offered and direct UDP blocked: the call cannot connect, each page says so;
//!   (b) cone NAT, relay offered: audio flows, straight between the homes ("direct");
//!   (e) in the call of (b), "network changed" events restart ICE, no more often than the
//!       rate limit allows; nobody leaves, audio flows on;
//!   (c) symmetric NAT on both sides, direct UDP blocked: audio flows through TURN ("relayed");
//!   (d) all UDP blocked at bob's router: audio flows over TURN/TCP;
//!   (f) alice's laptop gets a new address mid-call: her dead socket is replaced by one that
//!       resumes her session, the same peer connections restart ICE, audio flows again,
//!       neither page leaves the call.
//! The relay is the node's own STUN/TURN server (on by default; `--turn off` for (a)).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, REPO, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, audioStats } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NET = path.join(HERE, 'nat-net.sh');
const PREFIX = `vcnat${process.pid}`;
const NS = { pub: `${PREFIX}-pub`, home1: `${PREFIX}-home1`, home2: `${PREFIX}-home2` };
const NODE_IP = '203.0.113.1';
const PORT = 8080;
const ORIGIN = `http://${NODE_IP}:${PORT}`;
const PASSWORD = 'correct horse battery';
const ALICE = 'alice@alpha';
const BOB = 'bob@alpha';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

function sh(...args) {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function have(cmd) {
  try {
    sh('sh', '-c', `command -v ${cmd}`);
    return true;
  } catch {
    return false;
  }
}

/** The namespaces of runs that died without cleaning up (their process is gone). */
function removeStaleNetworks() {
  let list = '';
  try {
    list = sh('ip', 'netns', 'list');
  } catch {
    return;
  }
  const dead = new Set();
  for (const m of list.matchAll(/^vcnat(\d+)-/gm)) {
    const pid = Number(m[1]);
    try {
      process.kill(pid, 0);
    } catch (err) {
      if (err.code === 'ESRCH') dead.add(pid);
    }
  }
  for (const pid of dead) sh(NET, 'down', `vcnat${pid}`);
}

let netUp = false;
function netDown() {
  if (!netUp) return;
  netUp = false;
  try {
    sh(NET, 'down', PREFIX);
  } catch (err) {
    console.error(`nat-net.sh down ${PREFIX} failed: ${err.message}`);
  }
}
// Whatever happens (a failed hook, a signal, an uncaught error), the namespaces go.
process.on('exit', netDown);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    netDown();
    process.exit(130);
  });
}

describe('calls across NATs', { timeout: 240_000 }, () => {
  let dir;
  let wav;
  let node;
  let nodeDir;
  let A; // alice, home1
  let B; // bob, home2
  let roomUrl;

  before(async () => {
    assert.equal(process.getuid(), 0, 'the NAT test builds network namespaces: run it as root');
    for (const cmd of ['ip', 'iptables']) assert.ok(have(cmd), `${cmd} is missing: apt-get install ${cmd === 'ip' ? 'iproute2' : cmd} (.ci/run installs it)`);

    removeStaleNetworks();
    sh(NET, 'up', PREFIX);
    netUp = true;
    dir = tempDir('nat');
    nodeDir = tempDir('nat-node');
    wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 5, periodMs: 500, beepMs: 250 });

    const browser = async (ns) => {
      const wrapper = path.join(dir, `chromium-${ns}.sh`);
      fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
      return launchBrowser(wav, {
        executablePath: wrapper,
        loopback: false,
        args: [`--unsafely-treat-insecure-origin-as-secure=${ORIGIN}`],
      });
    };
    [A, B] = await Promise.all([browser(NS.home1), browser(NS.home2)]);
    await setUpRoom();
  });

  after(async () => {
    for (const b of [A, B]) if (b) await b.close();
    if (node) await node.stop();
    netDown();
    for (const d of [dir, nodeDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
    for (const [who, b] of [['alice', A], ['bob', B]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors of ${who}:\n${errors.join('\n')}`);
    }
  });

  /** The node in the public namespace, with a relay for browsers or without one. */
  async function startAlpha({ relay }) {
    if (node && node.relay === relay) return;
    if (node) await node.stop({ keepData: true });
    // Its own STUN/TURN on 203.0.113.1:3478 (UDP and TCP), or none at all.
    const args = relay ? [] : ['--turn', 'off'];
    node = await startNode({ name: 'alpha', dataDir: nodeDir, netns: NS.pub, listen: `${NODE_IP}:${PORT}`, p2pListen: `/ip4/${NODE_IP}/tcp/0`, args });
    node.relay = relay;
    assert.equal(node.url, `${ORIGIN}/`);
  }

  function rules(nat, block) {
    sh(NET, 'rules', PREFIX, nat, block);
  }

  async function join(page) {
    await page.goto(roomUrl);
    await byId(page, 'call-join').waitFor();
    // Every notice the page shows, kept (the notice area clears itself after a while).
    await page.evaluate(() => {
      const el = document.getElementById('notice');
      window.__notices = [];
      new MutationObserver(() => {
        if (el.textContent) window.__notices.push(el.textContent);
      }).observe(el, { childList: true, subtree: true, characterData: true });
    });
    await byId(page, 'call-join').click();
    await waitFor(() => page.evaluate(() => window.__voicechat.callStatus() === 'joined'), { message: 'the call to be joined' }).catch(async (err) => {
      console.log(`join failed: ${JSON.stringify(await page.evaluate(() => ({ status: window.__voicechat.callStatus(), notices: window.__notices })))}`);
      throw err;
    });
  }

  async function leave(page) {
    await byId(page, 'call-leave').click();
    await byId(page, 'call-join').waitFor();
  }

  /** A screenshot of `page` at 360 px (target/screenshots/nat-NAME.png); nothing may overflow sideways. */
  async function narrowShot(page, name) {
    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    await page.setViewportSize({ width: 360, height: 740 });
    try {
      await byId(page, 'participant-list').scrollIntoViewIfNeeded();
      await page.screenshot({ path: path.join(out, `nat-${name}.png`) });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${name}: the page is ${overflow}px wider than 360 px`);
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  }

  /** The page's one connection as the test hook describes it. */
  async function connection(page) {
    const list = await page.evaluate(() => window.__voicechat.connections());
    return list.length === 1 ? list[0] : null;
  }

  /** Both ways: the connection is up, packets arrive with energy and a non-zero audioLevel. */
  async function audioBothWays(label) {
    for (const [name, page, other] of [['alice', A.page, BOB], ['bob', B.page, ALICE]]) {
      await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', {
        timeout: 30_000,
        message: `${label}: ${name}'s connection to ${other} to be "connected"`,
      });
    }
    for (const [name, page] of [['alice', A.page], ['bob', B.page]]) {
      const first = await audioStats(page);
      await waitFor(async () => {
        const s = await audioStats(page);
        return s.packetsReceived > first.packetsReceived + 25 && s.totalAudioEnergy > first.totalAudioEnergy;
      }, { timeout: 15_000, message: `${label}: ${name} to receive audio` });
      await waitFor(async () => (await audioStats(page)).audioLevel > 0.001, { interval: 100, timeout: 10_000, message: `${label}: ${name} to hear a non-zero audioLevel` });
    }
  }

  /** On a failure: what the page knows of its connection, and every candidate pair that got anywhere. */
  async function diagnose(page) {
    const d = await page.evaluate(async () => {
      const pairs = [];
      for (const [key, pc] of window.__voicechat.peers()) {
        pairs.push(`${key}: ${pc.connectionState} ${pc.signalingState} senders ${pc.getSenders().map((s) => (s.track ? s.track.readyState + '/' + s.track.enabled : 'none')).join(',')} transceivers ${pc.getTransceivers().map((t) => t.currentDirection).join(',')}`);
        const st = await pc.getStats();
        st.forEach((s) => {
          if (s.type !== 'candidate-pair' || !(s.nominated || s.responsesReceived)) return;
          const l = st.get(s.localCandidateId) || {};
          const r = st.get(s.remoteCandidateId) || {};
          pairs.push(`${s.state}${s.nominated ? ' nominated' : ''}: ${l.candidateType}/${l.relayProtocol || l.protocol} ${l.address}:${l.port} → ${r.candidateType} ${r.address}:${r.port}`);
        });
        st.forEach((s) => {
          if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') pairs.push(`${s.type}: packets ${s.packetsReceived ?? s.packetsSent}, energy ${s.totalAudioEnergy ?? '-'}`);
        });
      }
      return { status: window.__voicechat.callStatus(), connections: window.__voicechat.connections(), pairs };
    });
    console.log(`diagnosis: ${JSON.stringify(d, null, 1)}`);
  }

  /** The path shown next to `other` on `page`, once the hook reports one. */
  async function shownPath(page, other) {
    const info = await waitFor(async () => {
      const c = await connection(page);
      return c && c.path ? c : null;
    }, { timeout: 10_000, message: `a path for ${other}` }).catch(async (err) => {
      await diagnose(page);
      throw err;
    });
    await waitFor(async () => (await byId(page, `path-${other}`).textContent()) === info.path && (await byId(page, `path-${other}`).isVisible()), {
      timeout: 5_000,
      message: `path-${other} to show "${info.path}"`,
    });
    return info;
  }

  /** alice and bob register on alpha (no relay yet); alice makes a group with a room, adds bob. */
  async function setUpRoom() {
    rules('cone', 'direct');
    await startAlpha({ relay: false });
    for (const [b, name] of [[A, 'alice'], [B, 'bob']]) {
      await b.page.goto(`${ORIGIN}/register`);
      await byId(b.page, 'register-username').fill(name);
      await byId(b.page, 'register-password').fill(PASSWORD);
      await byId(b.page, 'register-submit').click();
      await byId(b.page, 'group-list').waitFor();
    }
    await byId(A.page, 'group-create-name').fill('Far apart');
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill('Talk');
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-link-Talk').waitFor();
    await byId(A.page, 'member-add-input').fill('bob');
    await byId(A.page, 'member-add-submit').click();
    await byId(A.page, `member-${BOB}`).waitFor();
    await byId(A.page, 'room-link-Talk').click();
    await byId(A.page, 'call-join').waitFor();
    roomUrl = A.page.url();

  }

  it('(a) no relay, direct UDP blocked: the call does not connect and each page says why', async () => {
    const t0 = Date.now();
    await startAlpha({ relay: false });
    rules('cone', 'direct');
    await Promise.all([join(A.page), join(B.page)]);
    const ice = await A.page.evaluate(() => window.__voicechat.ice());
    assert.ok(!ice.urls.some((u) => /^turns?:/.test(u)), `a relay was offered: ${ice.urls}`);

    for (const [name, page, other, shown] of [['alice', A.page, BOB, 'bob'], ['bob', B.page, ALICE, 'alice']]) {
      const failed = byId(page, `peer-failed-${other}`);
      await failed.waitFor({ state: 'visible', timeout: 60_000 });
      const text = await failed.textContent();
      assert.match(text, new RegExp(`^Can't reach ${shown}: the network blocks the call \\(this node offers no relay\\)`), `${name}'s page says: ${text}`);
      assert.equal(await byId(page, `peer-state-${other}`).getAttribute('data-state'), 'unreachable');
      assert.equal(await byId(page, `path-${other}`).isVisible(), false);
      const c = await connection(page);
      assert.ok(c.unreachable && c.state !== 'connected', `${name}: ${JSON.stringify(c)}`);
      assert.equal((await audioStats(page)).packetsReceived, 0, `${name} received audio`);
    }
    // The notice area said it too.
    for (const [page, shown] of [[A.page, 'bob'], [B.page, 'alice']]) {
      const notices = await page.evaluate(() => window.__notices);
      assert.ok(notices.some((n) => n.startsWith(`Can't reach ${shown}: the network blocks the call`)), `notices: ${JSON.stringify(notices)}`);
    }
    console.log(`# (a) unreachable shown after ${Date.now() - t0} ms`);
    await narrowShot(B.page, 'unreachable');
    await Promise.all([leave(A.page), leave(B.page)]);
  });

  it('(b) cone NAT with a relay offered: audio flows, straight between the homes', async () => {
    const t0 = Date.now();
    await startAlpha({ relay: true });
    rules('cone', 'none');
    await Promise.all([join(A.page), join(B.page)]);
    const ice = await A.page.evaluate(() => window.__voicechat.ice());
    assert.ok(ice.urls.some((u) => u.startsWith(`turn:${NODE_IP}:3478`)), `no TURN offered: ${ice.urls}`);
    for (const t of ['udp', 'tcp']) assert.ok(ice.urls.includes(`turn:${NODE_IP}:3478?transport=${t}`), `no TURN over ${t}: ${ice.urls}`);
    assert.equal(typeof ice.expiresAt, 'number', 'the node gave no expires_at with its TURN credentials');
    await audioBothWays('(b)');
    for (const [page, other] of [[A.page, BOB], [B.page, ALICE]]) {
      const info = await waitFor(async () => {
        const c = await connection(page);
        return c && c.path === 'direct' ? c : null;
      }, { timeout: 10_000, message: `the direct path to ${other}` }).catch(async (err) => {
        await diagnose(page);
        throw err;
      });
      assert.notEqual(info.localCandidateType, 'relay');
      assert.notEqual(info.remoteCandidateType, 'relay');
      assert.equal(await shownPath(page, other).then((i) => i.path), 'direct');
    }
    console.log(`# (b) ${Date.now() - t0} ms`);
    // (e) goes on in this call.
  });

  it('(e) network events mid-call restart ICE, rate-limited, with fresh TURN credentials: same sessions, audio flows on', async () => {
    const t0 = Date.now();
    const before = await connection(A.page);
    // The TURN user name the connection holds: "<expiry>:<user id>".
    const turnUser = () => A.page.evaluate(() => {
      const pc = [...window.__voicechat.peers().values()][0];
      const server = pc.getConfiguration().iceServers.find((s) => s.username);
      return server ? server.username : null;
    });
    const user0 = await turnUser();
    assert.match(user0, new RegExp(`^\\d+:${ALICE}$`));
    const ice0 = await A.page.evaluate(() => window.__voicechat.ice());
    // Three hours on alice's clock: her 4-hour credentials are past half their lifetime, so
    // the next restart fetches new ones first and gives them to the connection.
    await A.page.evaluate(() => {
      const real = Date.now;
      Date.now = () => real() + 3 * 3600 * 1000;
    });
    const ufrag = () => A.page.evaluate(async () => {
      let u = null;
      for (const pc of window.__voicechat.peers().values()) (await pc.getStats()).forEach((s) => { if (s.type === 'transport') u = s.iceLocalUsernameFragment; });
      return u;
    });
    const oldUfrag = await ufrag();
    // Four "back online" events 1.2 s apart: each one is a network change, but restarts are
    // at least 3 s apart per peer.
    await A.page.evaluate(async () => {
      for (let i = 0; i < 4; i++) {
        window.dispatchEvent(new Event('online'));
        await new Promise((r) => setTimeout(r, 1200));
      }
    });
    await waitFor(async () => (await ufrag()) !== oldUfrag, { timeout: 10_000, message: 'new ICE credentials on alice\'s side' });
    await audioBothWays('(e)');
    const now = await connection(A.page);
    assert.equal(now.session, before.session, 'bob\'s session changed: somebody left the room');
    assert.equal((await connection(B.page)).user, ALICE);
    const restarts = now.restarts - before.restarts;
    assert.ok(restarts >= 1 && restarts <= 3, `alice restarted ICE ${restarts} times for 4 events in 5 s`);
    const ice1 = await A.page.evaluate(() => window.__voicechat.ice());
    assert.ok(ice1.fetchedAt > ice0.fetchedAt, 'the ICE servers were not fetched again');
    const user1 = await turnUser();
    assert.match(user1, new RegExp(`^\\d+:${ALICE}$`));
    assert.notEqual(user1, user0, 'the connection still holds the old TURN credentials');
    console.log(`# (e) ${restarts} restarts, ${Date.now() - t0} ms`);
    await Promise.all([leave(A.page), leave(B.page)]);
  });

  it('(c) symmetric NAT on both sides, direct UDP blocked: audio flows through the relay', async () => {
    const t0 = Date.now();
    await startAlpha({ relay: true });
    rules('symmetric', 'direct');
    await Promise.all([join(A.page), join(B.page)]);
    await audioBothWays('(c)');
    for (const [name, page, other] of [['alice', A.page, BOB], ['bob', B.page, ALICE]]) {
      const info = await shownPath(page, other);
      assert.equal(info.path, 'relayed', `${name}: ${JSON.stringify(info)}`);
      assert.ok(info.localCandidateType === 'relay' || info.remoteCandidateType === 'relay', `${name}: ${JSON.stringify(info)}`);
    }
    console.log(`# (c) ${Date.now() - t0} ms`);
    await Promise.all([leave(A.page), leave(B.page)]);
  });

  it('(d) every UDP packet blocked at bob\'s router: audio flows over TURN/TCP', async () => {
    const t0 = Date.now();
    await startAlpha({ relay: true });
    rules('cone', 'udp2');
    await Promise.all([join(A.page), join(B.page)]);
    await audioBothWays('(d)');
    const bob = await shownPath(B.page, ALICE);
    assert.equal(bob.path, 'relayed', JSON.stringify(bob));
    assert.equal(bob.localCandidateType, 'relay', JSON.stringify(bob));
    assert.equal(bob.protocol, 'tcp', JSON.stringify(bob));
    assert.equal((await shownPath(A.page, BOB)).path, 'relayed');
    await narrowShot(B.page, 'relayed');
    console.log(`# (d) ${Date.now() - t0} ms`);
    await Promise.all([leave(A.page), leave(B.page)]);
  });

  // Last: alice's laptop moves to another network.
  it("(f) alice's laptop gets a new address mid-call: the call carries on by itself", async () => {
    const t0 = Date.now();
    await startAlpha({ relay: true });
    rules('cone', 'none');
    await Promise.all([join(A.page), join(B.page)]);
    await audioBothWays('(f) before');
    let left = false;
    const watch = setInterval(async () => {
      for (const page of [A.page, B.page]) if ((await page.evaluate(() => window.__voicechat.callStatus()).catch(() => 'joined')) === 'idle') left = true;
    }, 250);
    const oldSession = (await connection(B.page)).session;
    const pcOf = (page) => page.evaluate(() => {
      const [k, pc] = [...window.__voicechat.peers()][0] || [];
      if (pc && !pc.__mark) pc.__mark = Math.random().toString(36).slice(2);
      return pc ? `${k}:${pc.__mark}` : null;
    });
    const before = await Promise.all([pcOf(A.page), pcOf(B.page)]);
    try {
      sh(NET, 'move', PREFIX, '1', '3');
      // Her socket died with the old address: a new one resumes her session, and the
      // connection to bob restarts ICE from the new address (the same connection).
      await waitFor(async () => {
        const list = await B.page.evaluate(() => window.__voicechat.connections());
        return list.length === 1 && list[0].session === oldSession && list[0].state === 'connected';
      }, { timeout: 30_000, message: 'bob to be connected to the same session of alice' });
      assert.deepEqual(await Promise.all([pcOf(A.page), pcOf(B.page)]), before, 'the peer connections were made anew');
      for (const [name, page, other] of [['alice', A.page, BOB], ['bob', B.page, ALICE]]) {
        await waitFor(async () => {
          const list = await page.evaluate(() => window.__voicechat.connections());
          return list.some((c) => c.user === other && c.state === 'connected' && c.path);
        }, { timeout: 10_000, message: `${name} to be connected to ${other} again` });
        const first = await audioStats(page);
        await waitFor(async () => {
          const s = await audioStats(page);
          return s.packetsReceived > first.packetsReceived + 25 && s.totalAudioEnergy > first.totalAudioEnergy;
        }, { timeout: 15_000, message: `${name} to receive audio again` }).catch(async (err) => {
          await diagnose(A.page);
          await diagnose(B.page);
          throw err;
        });
      }
    } finally {
      clearInterval(watch);
    }
    assert.equal(left, false, 'a page left the call');
    console.log(`# (f) ${Date.now() - t0} ms`);
    await Promise.all([leave(A.page), leave(B.page)]);
  });
});
