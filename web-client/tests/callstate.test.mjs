//! The call's connection state machine (mesh.js, callmesh.js) under `node --test` with a fake
//! RTCPeerConnection (fake-rtc.mjs) and simulated time, no browser: the first exchange
//! (the impolite side offers, the polite one waits), glare (both offer at once: exactly one
//! exchange wins and each side keeps one connection), an ICE failure followed by an ICE
//! restart with new credentials, the rate limit and "unreachable" after two failed
//! attempts, a stalled attempt restarted by the watchdog, a lasting "disconnected", and
//! leaving (bye to every peer, every connection closed).

import { describe, it, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { FakePC, fakeStream, installFakes, installBrowserFakes } from './fake-rtc.mjs';

installFakes();
const browser = installBrowserFakes(async (path) => (path.startsWith('/api/ice') ? { ice_servers: [], e2ee: false } : {}));
// Simulated time: mesh.js reads performance.now() and sets timers; both follow `advance`.
let clock = 0;
Object.defineProperty(globalThis, 'performance', { value: { now: () => clock }, configurable: true, writable: true });

const { Mesh } = await import('../mesh.js');
const { createMesh, reachedElsewhere } = await import('../callmesh.js');
const { Call } = await import('../call.js');

/** Let queued tasks (negotiationneeded, candidates) and promise chains run. */
async function settle() {
  for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r));
}

/** Move simulated time on by `ms`, in small steps, letting everything due run. */
async function advance(ms, step = 100) {
  for (let t = 0; t < ms; t += step) {
    clock += step;
    mock.timers.tick(step);
    await settle();
  }
}

/**
 * The node between the pages: signals queue up until delivered (in order), as the node
 * relays them: `{type: "signal", from, from_session, kind, data}`.
 */
class Net {
  constructor() {
    this.sides = new Map(); // session → {user, mesh}
    this.queue = [];
    this.sent = []; // every signal, for assertions
  }

  add(user, session, extraHooks = {}) {
    const side = { user, session, events: [], mesh: null };
    side.mesh = new Mesh({
      mySession: session,
      iceServers: [],
      localStream: fakeStream(),
      hooks: {
        send: (msg) => {
          this.sent.push({ from: session, ...msg });
          this.queue.push({ from: user, from_session: session, msg });
        },
        onTrack: () => {},
        onState: (peer, state) => side.events.push(['state', peer.session, state, peer.unreachable]),
        onClose: (peer) => side.events.push(['close', peer.session]),
        onUnreachable: (peer) => side.events.push(['unreachable', peer.session]),
        ...extraHooks,
      },
    });
    this.sides.set(session, side);
    return side;
  }

  /** Deliver queued signals (and those they cause) until none is left. */
  async deliverAll() {
    await settle();
    while (this.queue.length) {
      const { from, from_session, msg } = this.queue.shift();
      const to = this.sides.get(msg.to_session);
      if (to) await to.mesh.handleSignal({ type: 'signal', from, from_session, kind: msg.kind, data: msg.data });
      await settle();
    }
  }

  kinds(from) {
    return this.sent.filter((s) => s.from === from && s.kind !== 'candidate').map((s) => s.kind);
  }
}

const pcOf = (side, other) => side.mesh.peers.get(other.session).pc;
const ufrag = (desc) => desc.sdp.match(/ice-ufrag:(\S+)/)[1];

/** The two ends agree: both stable, each one's local description is the other's remote one. */
function assertAgreed(a, b) {
  const [pa, pb] = [pcOf(a, b), pcOf(b, a)];
  assert.equal(pa.signalingState, 'stable', `${a.user} is ${pa.signalingState}`);
  assert.equal(pb.signalingState, 'stable', `${b.user} is ${pb.signalingState}`);
  assert.equal(pa.localDescription.sdp, pb.remoteDescription.sdp, `${a.user}'s description is not what ${b.user} has`);
  assert.equal(pb.localDescription.sdp, pa.remoteDescription.sdp, `${b.user}'s description is not what ${a.user} has`);
}

/** Two sides listed in one call; the session ids decide who is polite (the higher one). */
async function connectedPair() {
  const net = new Net();
  const ada = net.add('ada@alpha', 'aaaa'); // lower: impolite, offers first
  const bob = net.add('bob@alpha', 'bbbb'); // higher: polite
  const list = [{ user: 'ada@alpha', session: 'aaaa' }, { user: 'bob@alpha', session: 'bbbb' }];
  ada.mesh.sync(list);
  bob.mesh.sync(list);
  await net.deliverAll();
  pcOf(ada, bob).setIce('connected');
  pcOf(bob, ada).setIce('connected');
  return { net, ada, bob };
}

describe('the mesh state machine', () => {
  beforeEach(() => {
    FakePC.reset();
    clock = 0;
    mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  });
  afterEach(() => mock.timers.reset());

  it('first exchange: the impolite side offers, the polite side waits for it and answers', async () => {
    const { net, ada, bob } = await connectedPair();
    assert.equal(pcOf(bob, ada).signalingState, 'stable');
    assert.deepEqual(net.kinds('aaaa'), ['offer'], 'ada (lower session) made the only offer');
    assert.deepEqual(net.kinds('bbbb'), ['answer'], 'bob (higher session) only answered');
    assertAgreed(ada, bob);
    assert.equal(FakePC.all.length, 2, 'one connection on each side');
    assert.ok(pcOf(bob, ada).candidates.length >= 1 && pcOf(ada, bob).candidates.length >= 1, 'candidates crossed');
    // The polite side's fallback timer does not offer again once connected.
    await advance(5000);
    assert.deepEqual(net.kinds('bbbb'), ['answer']);
    assert.equal(FakePC.all.length, 2);
  });

  it('glare at the start: the polite side gives up waiting while the offer is on its way; one exchange wins', async () => {
    const net = new Net();
    const ada = net.add('ada@alpha', 'aaaa');
    const bob = net.add('bob@alpha', 'bbbb');
    const list = [{ user: 'ada@alpha', session: 'aaaa' }, { user: 'bob@alpha', session: 'bbbb' }];
    ada.mesh.sync(list);
    bob.mesh.sync(list);
    await advance(4100); // bob's wait (4 s) is over with ada's offer still undelivered
    assert.deepEqual(net.kinds('aaaa'), ['offer']);
    assert.deepEqual(net.kinds('bbbb'), ['offer'], 'bob offered too: glare');
    await net.deliverAll();
    assertAgreed(ada, bob);
    assert.equal(FakePC.all.length, 2, 'still exactly one connection on each side');
    assert.ok(pcOf(ada, bob).localDescription.sdp.startsWith('offer'), "ada's offer won (she is impolite)");
    assert.equal(pcOf(bob, ada).rollbacks, 1, 'bob rolled his offer back');
    assert.equal(pcOf(ada, bob).answers, 0, 'ada ignored the colliding offer');
  });

  it('glare on an ICE restart: both restart at once, one exchange wins with new credentials', async () => {
    const { net, ada, bob } = await connectedPair();
    const [pa, pb] = [pcOf(ada, bob), pcOf(bob, ada)];
    const before = [ufrag(pa.localDescription), ufrag(pb.localDescription)];
    ada.mesh.restartAll('network change');
    bob.mesh.restartAll('network change');
    await settle();
    assert.equal(pa.signalingState, 'have-local-offer');
    assert.equal(pb.signalingState, 'have-local-offer', 'both offered: glare');
    await net.deliverAll();
    assertAgreed(ada, bob);
    assert.notEqual(ufrag(pa.localDescription), before[0], "ada's ICE credentials are new");
    assert.equal(FakePC.all.length, 2, 'no new connection, on either side');
    assert.deepEqual([pa.restartIceCalls, pb.restartIceCalls], [1, 1]);
  });

  it('ICE failed: an ICE restart at once (new credentials, renegotiated); two failed attempts in a row: unreachable', async () => {
    const { net, ada, bob } = await connectedPair();
    const pa = pcOf(ada, bob);
    const first = ufrag(pa.localDescription);
    pa.setIce('failed');
    await settle();
    assert.equal(pa.restartIceCalls, 1, 'a failed ICE state restarts ICE');
    assert.equal(pa.signalingState, 'have-local-offer', 'with a new offer');
    await net.deliverAll();
    assertAgreed(ada, bob);
    assert.notEqual(ufrag(pa.localDescription), first, 'the restart offer carries new ICE credentials');
    assert.equal(ada.mesh.peers.get('bbbb').unreachable, false, 'one failure is not unreachable');
    // The new attempt fails too, within the rate limit's gap: the restart waits for it.
    pa.setIce('checking');
    pa.setIce('failed');
    await settle();
    const peer = ada.mesh.peers.get('bbbb');
    assert.equal(peer.unreachable, true, 'two failed attempts in a row: unreachable');
    assert.deepEqual(ada.events.filter((e) => e[0] === 'unreachable'), [['unreachable', 'bbbb']], 'said once');
    assert.equal(pa.restartIceCalls, 1, 'no restart before the gap and the slow retry');
    await advance(29_000);
    assert.equal(pa.restartIceCalls, 1, 'an unreachable peer is retried only every 30 s');
    await advance(1500);
    assert.equal(pa.restartIceCalls, 2, 'retried after 30 s');
    await net.deliverAll();
    pa.setIce('connected');
    assert.equal(peer.unreachable, false, 'connected: reachable again');
    assert.deepEqual(ada.events.at(-1), ['state', 'bbbb', 'connected', false]);
  });

  it('restarts are rate-limited: never two within 3 s, whatever asks', async () => {
    const { net, ada, bob } = await connectedPair();
    const pa = pcOf(ada, bob);
    for (let i = 0; i < 5; i++) ada.mesh.restartAll('network change');
    await settle();
    assert.equal(pa.restartIceCalls, 1);
    await net.deliverAll();
    ada.mesh.restartAll('network change');
    await advance(2800);
    assert.equal(pa.restartIceCalls, 1, 'the second waits for the gap');
    await advance(400);
    assert.equal(pa.restartIceCalls, 2, 'and then happens');
  });

  it('an attempt that never connects (its answer lost) is restarted by the watchdog', async () => {
    const net = new Net();
    const ada = net.add('ada@alpha', 'aaaa');
    net.add('bob@alpha', 'bbbb');
    ada.mesh.sync([{ user: 'bob@alpha', session: 'bbbb' }]);
    await settle();
    net.queue.length = 0; // the offer is lost
    const pa = ada.mesh.peers.get('bbbb').pc;
    await advance(9000);
    assert.equal(pa.restartIceCalls, 0, 'not before the attempt timeout (10 s)');
    await advance(3500);
    assert.equal(pa.restartIceCalls, 1, 'restarted once the attempt timed out');
  });

  it('"disconnected" that lasts 3 s restarts ICE; one that heals does not', async () => {
    const { net, ada, bob } = await connectedPair();
    const pa = pcOf(ada, bob);
    pa.setIce('disconnected');
    await advance(1000);
    pa.setIce('connected');
    await advance(4000);
    assert.equal(pa.restartIceCalls, 0, 'a blip heals itself');
    pa.setIce('disconnected');
    await advance(3200);
    assert.equal(pa.restartIceCalls, 1, 'a lasting disconnection restarts');
    await net.deliverAll();
    assertAgreed(ada, bob);
  });

  it('leaving: bye to every peer, every connection closed; the others drop theirs on bye', async () => {
    const net = new Net();
    const sides = [net.add('ada@alpha', 'aaaa'), net.add('bob@alpha', 'bbbb'), net.add('cyd@alpha', 'cccc')];
    const list = sides.map((s) => ({ user: s.user, session: s.session }));
    for (const s of sides) s.mesh.sync(list);
    await advance(4100);
    await net.deliverAll();
    for (const s of sides) assert.equal(s.mesh.peers.size, 2, `${s.user} connects to the two others`);
    for (const [a, b] of [[0, 1], [0, 2], [1, 2]]) assertAgreed(sides[a], sides[b]);
    for (const pc of FakePC.all) pc.setIce('connected');
    assert.equal(FakePC.all.length, 6, 'one connection per pair and side');
    const [ada, bob, cyd] = sides;
    const mine = [...ada.mesh.peers.values()].map((p) => p.pc);
    // What Call.leave() does: bye to all, then close all.
    ada.mesh.byeAll();
    ada.mesh.closeAll();
    assert.equal(ada.mesh.peers.size, 0);
    assert.deepEqual(mine.map((pc) => [pc.closeCalls, pc.signalingState]), [[1, 'closed'], [1, 'closed']], 'every connection closed once');
    assert.deepEqual(ada.events.filter((e) => e[0] === 'close').map((e) => e[1]).sort(), ['bbbb', 'cccc']);
    assert.deepEqual(net.sent.filter((s) => s.kind === 'bye').map((s) => s.to_session).sort(), ['bbbb', 'cccc']);
    await net.deliverAll();
    for (const s of [bob, cyd]) {
      assert.deepEqual([...s.mesh.peers.keys()], [s === bob ? 'cccc' : 'bbbb'], `${s.user} dropped ada on her bye`);
    }
    assert.equal(FakePC.all.filter((pc) => pc.signalingState === 'closed').length, 4);
    // Nothing closed keeps timers that act on it later.
    const before = FakePC.all.map((pc) => pc.restartIceCalls);
    await advance(40_000);
    assert.deepEqual(FakePC.all.map((pc) => pc.restartIceCalls), before);
  });

  it('a participant no longer listed is dropped; ourselves and our former sessions never get a connection', async () => {
    const net = new Net();
    const ada = net.add('ada@alpha', 'aaaa');
    ada.mesh.isFormer = (s) => s === 'a000';
    ada.mesh.sync([{ user: 'ada@alpha', session: 'aaaa' }, { user: 'ada@alpha', session: 'a000' }, { user: 'bob@alpha', session: 'bbbb' }]);
    assert.deepEqual([...ada.mesh.peers.keys()], ['bbbb']);
    const pc = ada.mesh.peers.get('bbbb').pc;
    ada.mesh.sync([{ user: 'ada@alpha', session: 'aaaa' }]);
    assert.equal(ada.mesh.peers.size, 0);
    assert.equal(pc.signalingState, 'closed');
  });
});

describe('the call wiring of the mesh (callmesh.js)', () => {
  beforeEach(() => {
    FakePC.reset();
    clock = 0;
    mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  });
  afterEach(() => mock.timers.reset());

  /** Just what createMesh reads of a Call. */
  function fakeCall() {
    const call = {
      mySession: 'aaaa',
      formerSessions: new Set(),
      iceServers: [],
      voice: { sendStream: fakeStream() },
      socket: { sent: [], send: (m) => call.socket.sent.push(m), probe: () => (call.probes += 1) },
      probes: 0,
      notices: [],
      notify: (m) => call.notices.push(m),
      unreachableText: (u) => `Can't reach ${u}`,
      peerStates: new Map(),
      paths: new Map(),
      levels: new Map(),
      speakers: { attach() {}, detach() {} },
      keys: { pcConfig: () => ({}), attachSender() {}, attachReceiver() {}, meshFingerprint() {} },
      refreshIce: () => Promise.resolve(),
      changed() {},
    };
    return call;
  }

  it('states and unreachability reach the call; no notice while the same person is connected on another session', async () => {
    const call = fakeCall();
    const mesh = createMesh(call);
    call.mesh = mesh;
    mesh.sync([{ user: 'bob@alpha', session: 'b111' }, { user: 'bob@alpha', session: 'b222' }, { user: 'cyd@alpha', session: 'cccc' }]);
    const [old, fresh, cyd] = ['b111', 'b222', 'cccc'].map((s) => mesh.peers.get(s));
    fresh.pc.setIce('connected');
    assert.equal(call.peerStates.get('b222').state, 'connected');
    assert.equal(reachedElsewhere(mesh, old), true);
    for (const p of [old, cyd]) {
      p.pc.setIce('failed');
      await settle();
      await advance(3100);
      p.pc.setIce('checking');
      p.pc.setIce('failed');
      await settle();
    }
    assert.equal(call.peerStates.get('b111').unreachable, true);
    assert.equal(call.peerStates.get('cccc').unreachable, true);
    assert.deepEqual(call.notices, ["Can't reach cyd@alpha"], "bob's old session failing is no news: his new one is connected");
    assert.ok(call.probes >= 2, 'ICE trouble probes the socket');
    mesh.closeAll();
    assert.equal(call.peerStates.size, 0, 'closing clears the states');
  });
});

/**
 * A node for Call objects: one room's call (`g`/`r`), its list, and the sockets of the
 * pages, which get `hello`, `joined`, the list (through `presenceChanged`, as app.js
 * passes it on) and each other's signals, in order, a task later.
 */
class FakeNode {
  constructor() {
    this.list = [];
    this.sockets = new Map(); // session → socket
    this.calls = [];
  }

  page(user, session) {
    const node = this;
    const socket = {
      user,
      session,
      connected: true,
      listeners: new Map(),
      sent: [],
      on(type, fn) {
        if (!this.listeners.has(type)) this.listeners.set(type, new Set());
        this.listeners.get(type).add(fn);
        return () => this.listeners.get(type).delete(fn);
      },
      emit(msg) {
        for (const fn of this.listeners.get(msg.type) || []) fn(msg);
      },
      send(msg) {
        this.sent.push(msg);
        setImmediate(() => node.receive(socket, msg));
        return true;
      },
      probe() {},
    };
    this.sockets.set(session, socket);
    const call = new Call(socket, () => this.list.map((p) => ({ ...p })), () => {});
    this.calls.push(call);
    socket.emit({ type: 'hello', user, session });
    return { socket, call };
  }

  changed() {
    for (const call of this.calls) call.presenceChanged('g', 'r');
  }

  receive(from, msg) {
    if (msg.type === 'join') {
      this.list.push({ user: from.user, session: from.session, muted: !!msg.muted });
      from.emit({ type: 'joined', group: 'g', room: 'r', session: from.session, mode: 'mesh' });
      this.changed();
    } else if (msg.type === 'leave') {
      this.list = this.list.filter((p) => p.session !== from.session);
      this.changed();
    } else if (msg.type === 'signal') {
      const to = this.sockets.get(msg.to_session);
      if (to) to.emit({ type: 'signal', from: from.user, from_session: from.session, group: 'g', room: 'r', kind: msg.kind, data: msg.data });
    }
  }
}

describe('a Call on a fake node (call.js)', () => {
  beforeEach(() => {
    FakePC.reset();
    clock = 0;
    mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  });
  afterEach(() => mock.timers.reset());

  it('join: one connection per other person; leave: bye to each, leave, every connection closed, microphone released', async () => {
    const node = new FakeNode();
    const pages = [node.page('ada@alpha', 'a'.repeat(32)), node.page('bob@alpha', 'b'.repeat(32)), node.page('cyd@alpha', 'c'.repeat(32))];
    for (const { call } of pages) {
      await call.join('g', 'r');
      await settle();
    }
    await advance(4200); // past the polite side's wait, should an offer have got lost
    const [ada, bob, cyd] = pages;
    for (const { call } of pages) {
      assert.equal(call.status, 'joined');
      assert.equal(call.peerConnections().size, 2, 'a connection to each of the two others');
    }
    assert.equal(FakePC.all.length, 6, 'one per pair and side, none made twice');
    for (const pc of FakePC.all) {
      assert.equal(pc.signalingState, 'stable');
      assert.ok(pc.remoteDescription, 'every connection negotiated');
      pc.setIce('connected');
    }
    const adaPcs = [...ada.call.peerConnections().values()];
    const mic = browser.mics.find((s) => ada.call.localStream === s);
    assert.ok(mic, "ada's call holds a microphone it asked for");
    ada.socket.sent.length = 0;

    ada.call.leave();
    assert.equal(ada.call.status, 'idle');
    assert.deepEqual(
      ada.socket.sent.map((m) => (m.type === 'signal' ? `${m.kind} ${m.to}` : m.type)),
      ['bye bob@alpha', 'bye cyd@alpha', 'leave'],
      'bye to each peer, then leave',
    );
    assert.deepEqual(adaPcs.map((pc) => [pc.closeCalls, pc.signalingState]), [[1, 'closed'], [1, 'closed']], 'every connection closed');
    assert.equal(ada.call.peerConnections().size, 0);
    assert.equal(mic.getAudioTracks()[0].readyState, 'ended', 'the microphone is released');
    await settle();
    for (const other of [bob, cyd]) {
      assert.equal(other.call.status, 'joined');
      assert.deepEqual([...other.call.peerConnections().keys()].map((k) => k.split('/')[0]), [other === bob ? 'cyd@alpha' : 'bob@alpha'], 'the others dropped ada, and kept each other');
    }
    assert.equal(FakePC.all.filter((pc) => pc.signalingState === 'closed').length, 4, "ada's two and the others' ends of them");
  });
});
