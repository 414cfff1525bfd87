//! The call of this tab: joining/leaving a room over the socket, re-joining after a
//! reconnect, the mesh of peer connections (callmesh.js) and, when the node moves the call
//! to its audio server (mode "sfu"), the connection to it for people of this node
//! (callsfu.js); people of other nodes are still reached through the mesh, except on a
//! stage, where each node's audio server pulls the others' speakers. Around it: what
//! this tab sends (voice.js: microphone, mute, push-to-talk), the ICE servers per call
//! (ice.js), network changes (network.js), getStats readings (callstats.js) and, in a
//! stage room, this tab's seat (stage.js), which the microphone follows.
//! Views read its fields and subscribe to changes; they never touch RTCPeerConnections.

import { api, ApiError } from './api.js';
import { Speakers } from './audio.js';
import { IceServers } from './ice.js';
import { micError } from './mic.js';
import { Voice } from './voice.js';
import { watchNetwork } from './network.js';
import { createMesh, reachedElsewhere } from './callmesh.js';
import { SfuLeg } from './callsfu.js';
import { Stage } from './stage.js';
import { CallKeys } from './e2ee/keys.js';
import { LEVEL_POLL_MS, PATH_POLL_MS, readLevels, readPaths, describeConnections } from './callstats.js';

/** A call prepared on the room page (ICE configuration, open microphone, keys) is used by
 *  Join within this long; older, it is fetched again. */
const PREPARED_MAX_MS = 10 * 60_000;
/**
 * After our session is resumed on a new socket, people may be missing from the node's list
 * for a moment (after a restart of the node, until they have joined again too): their
 * connections and keys are kept this long, unless they say bye.
 */
const RESYNC_GRACE_MS = 15_000;
/** sessionStorage: the call this tab is in, so a reload or the room's URL rejoins it. */
const IN_CALL_KEY = 'voicechat.call';

function rememberCall(value) {
  try {
    if (value) sessionStorage.setItem(IN_CALL_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(IN_CALL_KEY);
  } catch {
    /* storage unavailable: no rejoin after a reload */
  }
}

export class Call {
  /**
   * @param {import('./socket.js').Socket} socket
   * @param {(group: string, room: string) => Array} getParticipants current list from app state
   * @param {(message: string, kind?: string) => void} notify shows an error (or, with kind
   *   "info", news) to the user
   * @param {(userId: string) => string} show a user id as the app shows users
   */
  constructor(socket, getParticipants, notify, show = (u) => u) {
    this.socket = socket;
    this.getParticipants = getParticipants;
    this.notify = notify;
    this.show = show;
    this.status = 'idle'; // idle | joining | joined
    this.group = null;
    this.room = null;
    this.mySession = null;
    this.myUser = null; // our user id, `name@node` (from hello)
    this.myNode = null; // its node part
    this.mode = 'mesh'; // mesh | sfu: how people of this node reach each other in this call
    this.droppedNodes = new Set(); // nodes of this stage whose audio servers dropped out
    this.cascadedNodes = new Set(); // nodes whose people reach us through the audio servers (the cascade)
    this.formerSessions = new Set(); // this tab's earlier sessions (may linger on the node a while)
    this.resyncUntil = 0; // see RESYNC_GRACE_MS
    this.resyncTimer = null;
    this.restartOnResume = null; // a network change seen while the socket was down
    this.prepared = null; // {group, room, stream, ice, keys, at}: made ready on the room page
    this.voice = new Voice(this);
    this.ice = new IceServers();
    this.mesh = null;
    this.sfuLeg = new SfuLeg(this); // the node's audio server, while the call is on it
    this.stage = new Stage(this);
    // End-to-end encryption of the audio (e2ee/): keys, the safety code, the frame worker.
    this.keys = new CallKeys({
      send: (msg) => this.socket.send(msg),
      changed: () => this.changed('e2ee'),
      sends: () => this.stage.mayTalk,
      isSender: (session) => this.isSender(session),
      peerConnections: () => this.peerConnections().values(),
    });
    this.peerStates = new Map(); // session → {user, state, unreachable}
    this.paths = new Map(); // session → {path, localCandidateType, remoteCandidateType, protocol}
    this.levels = new Map(); // session or 'local' → 0..1
    this.speakers = new Speakers();
    this.listeners = new Set();
    this.levelTimer = null;
    this.pathTimer = null;

    watchNetwork((why) => this.networkChanged(why));
    socket.on('hello', (m) => this.onHello(m));
    socket.on('joined', (m) => this.onJoined(m));
    socket.on('left', (m) => this.onLeft(m));
    socket.on('signal', (m) => {
      if (this.inRoom(m.group, m.room) && this.mesh && this.mySession) {
        // On the audio server nobody of this node gets a new mesh connection (one that is
        // there goes on, and may renegotiate, until the switch closes it).
        if (this.mode === 'sfu' && m.kind !== 'bye' && this.viaNode(m.from) && !this.mesh.peers.has(m.from_session)) return;
        if (this.iceStale()) this.refreshIce(); // applied to the new connection when it lands
        this.mesh.handleSignal(m);
      }
    });
    socket.on('e2ee_hello', (m) => {
      if (this.status !== 'idle') this.keys.onHello(m);
    });
    socket.on('e2ee_key', (m) => {
      if (this.status !== 'idle') this.keys.onKey(m);
    });
    // On a stage across nodes: a node whose audio server cannot be reached (it died, or the
    // network between the nodes broke) drops out; its people are not heard until it is back.
    socket.on('node_reach', (m) => {
      if (this.status !== 'joined' || !this.inRoom(m.group, m.room)) return;
      if (m.up) {
        this.droppedNodes.delete(m.node);
        this.notify(`${m.node} is reachable again.`, 'info');
      } else {
        this.droppedNodes.add(m.node);
        this.notify(`${m.node} unreachable: its people can't be heard for now.`);
      }
      this.changed('peers');
    });
    // A conversation on the audio server: the nodes whose people it now carries both ways
    // (each node's audio server pulls the other's). Their direct connections close; a node
    // that drops out of the cascade is connected to directly again.
    socket.on('cascade', (m) => {
      if (this.status !== 'joined' || !this.inRoom(m.group, m.room)) return;
      this.cascadedNodes = new Set(m.nodes);
      this.syncMesh();
      this.sfuLeg.settle();
      this.changed('cascade');
    });
    socket.on('call_mode', (m) => {
      if (this.status === 'joined' && this.inRoom(m.group, m.room)) this.setMode(m.mode);
    });
    const toSfu = (fn) => (m) => {
      if (this.sfu && this.inRoom(m.group, m.room)) fn(this.sfu, m);
    };
    socket.on('sfu_answer', toSfu((sfu, m) => sfu.answer(m.sdp)));
    socket.on('sfu_slots', toSfu((sfu, m) => sfu.setSlots(m.slots)));
    socket.on('sfu_lost', toSfu((sfu) => sfu.lost()));
    socket.on('error', (m) => {
      if (m.in_reply_to === 'sfu_offer' && this.sfu) this.sfu.refused(m);
      if (m.in_reply_to === 'join' && this.status === 'joining') {
        this.stop();
        this.notify(`Could not join the call: ${m.message || m.code}`);
      }
    });
  }

  /** The app's list of a room changed (a snapshot or a delta from the node): connect to
   *  whoever is in the call now, and read our own place on a stage from it. */
  presenceChanged(group, room) {
    if (this.status === 'joined' && this.inRoom(group, room) && this.mesh) this.syncMesh();
    if (this.inRoom(group, room)) {
      this.stage.refresh();
      this.keys.syncParticipants(this.withKept(this.getParticipants(group, room) || []));
      this.keys.roleChanged();
    }
  }

  /** Whether `session` may send audio in this call, as the list says (a conversation: all;
   *  a stage: its speakers; people of other nodes are listed without a seat); undefined if
   *  it is not listed. */
  isSender(session) {
    const p = (this.getParticipants(this.group, this.room) || []).find((x) => x.session === session);
    if (!p) return undefined;
    return !p.stage || !!p.stage.speaker;
  }

  /** The microphone stream of the current (or last) call (its tracks end when it is released). */
  get localStream() {
    return this.voice.mic.stream;
  }

  // Mute and push-to-talk, as the header strip and the keyboard handler use them.
  get muted() {
    return this.voice.muted;
  }
  get pushToTalk() {
    return this.voice.pushToTalk;
  }
  get effectiveMuted() {
    return this.voice.effectiveMuted;
  }
  setMuted(muted) {
    this.voice.setMuted(muted);
  }
  setTalking(held) {
    this.voice.setTalking(held);
  }

  // The call's ICE servers, as the test hook reads them.
  get iceServers() {
    return this.ice.servers;
  }
  get iceExpiresAt() {
    return this.ice.expiresAt;
  }
  get iceFetchedAt() {
    return this.ice.fetchedAt;
  }

  /** The audio server connection while the call is on it, else null. */
  get sfu() {
    return this.sfuLeg.conn;
  }

  /** A network change (a new address, back online): restart ICE (the socket copes on its own). */
  networkChanged(why) {
    if (this.status === 'idle') return;
    // The socket may have died with the old address: if it does not answer, it is replaced,
    // and its new session re-joins and rebuilds every connection (see onHello).
    this.socket.probe();
    // While the socket is down nothing can be signalled: the restart waits for it (a
    // resumed session keeps its connections, see onHello).
    if (this.status !== 'joined' || !this.mesh) return;
    if (!this.socket.connected) {
      this.restartOnResume = why;
      return;
    }
    this.mesh.restartAll(`network: ${why}`);
    // The node is ICE-lite (no ICE restart): a connection that is not up is made anew.
    if (this.sfu && this.sfu.state !== 'connected') this.sfu.retry(`network: ${why}`);
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed(what) {
    // A view or helper that fails must not break the call (a join half done).
    for (const fn of this.listeners) {
      try {
        fn(what);
      } catch (err) {
        console.error('a call listener failed', err);
      }
    }
  }

  inRoom(group, room) {
    return this.status !== 'idle' && this.group === group && this.room === room;
  }

  /** Whether this tab was in `room`'s call before the page was reloaded (or left by URL). */
  wasIn(group, room) {
    try {
      const c = JSON.parse(sessionStorage.getItem(IN_CALL_KEY) || 'null');
      return !!c && c.group === group && c.room === room;
    } catch {
      return false;
    }
  }

  /**
   * The room page is open: fetch the call's ICE configuration, open the microphone (not on
   * a stage, where it opens only on stage) and make the call's keys now, so that Join only
   * signals. The page shows that the microphone is open (nothing is sent before Join).
   */
  async prepare(group, room, { stage = false } = {}) {
    if (this.status !== 'idle' || (this.prepared && this.prepared.group === group && this.prepared.room === room)) return;
    this.unprepare();
    const p = { group, room, stream: null, ice: null, keys: false, at: Date.now(), pending: null };
    this.prepared = p;
    /** @type {(value?: any) => void} */
    let done;
    p.pending = new Promise((r) => (done = r));
    try {
      await this.prepareInto(p, stage);
    } finally {
      p.pending = null;
      done();
    }
  }

  async prepareInto(p, stage) {
    const { group, room } = p;
    const [stream, ice] = await Promise.all([
      stage ? null : this.voice.mic.request().catch(() => null), // Join asks again, and says why
      api.ice(group, room).catch(() => null),
    ]);
    if (this.prepared !== p || this.status !== 'idle') {
      if (stream) for (const t of stream.getTracks()) t.stop();
      return;
    }
    p.stream = stream;
    p.ice = ice;
    if (ice) {
      await this.keys.start(ice.e2ee !== false);
      p.keys = this.prepared === p && this.status === 'idle';
    }
    this.changed('prepared');
  }

  /** The room page closes without joining: the microphone is released. */
  unprepare(group = null, room = null) {
    const p = this.prepared;
    if (!p || (group && (p.group !== group || p.room !== room))) return;
    this.prepared = null;
    if (p.stream) for (const t of p.stream.getTracks()) t.stop();
    if (this.status === 'idle') this.keys.stop();
    this.changed('prepared');
  }

  /** Whether the room page's microphone is open, waiting for Join. */
  micReady(group, room) {
    const p = this.prepared;
    return !!(p && p.group === group && p.room === room && p.stream && p.stream.getAudioTracks().some((t) => t.readyState === 'live'));
  }

  /**
   * Join `room` (leaving any other call of this tab), with the microphone open; on a stage
   * (`stage`: the room is one) it opens only once we are on stage.
   */
  async join(group, room, { stage = false } = {}) {
    if (this.inRoom(group, room)) return;
    if (this.status !== 'idle') this.leave();
    let p = this.prepared && this.prepared.group === group && this.prepared.room === room && Date.now() - this.prepared.at < PREPARED_MAX_MS ? this.prepared : null;
    // Joined while the page was still getting ready: wait for it (briefly) rather than
    // opening the microphone and fetching everything a second time.
    if (p && p.pending) {
      if (this.awaitingPrepared) return; // a second click while we wait
      this.awaitingPrepared = true;
      try {
        await Promise.race([p.pending, new Promise((r) => setTimeout(r, 3000))]);
      } finally {
        this.awaitingPrepared = false;
      }
      if (this.inRoom(group, room)) return;
    }
    if (this.prepared !== p) p = null;
    if (p) this.prepared = null;
    else this.unprepare();
    this.status = 'joining';
    this.group = group;
    this.room = room;
    this.stage.begin(stage);
    this.changed('status');
    let ice = null;
    let stream = null;
    const live = (s) => s && s.getAudioTracks().some((t) => t.readyState === 'live');
    try {
      [stream, ice] = await Promise.all([
        stage ? null : live(p && p.stream) ? p.stream : this.voice.mic.request(),
        p && p.ice ? p.ice : api.ice(group, room),
      ]);
    } catch (err) {
      this.stop();
      this.notify(err instanceof ApiError ? `Could not join the call: ${err.message}` : micError(err));
      return;
    }
    if (this.status !== 'joining' || this.room !== room) {
      if (stream) for (const t of stream.getTracks()) t.stop();
      return;
    }
    if (stream) this.voice.mic.take(stream);
    this.ice.take(ice);
    if (!(p && p.keys && this.keys.wanted === (ice.e2ee !== false) && this.keys.me)) await this.keys.start(ice.e2ee !== false);
    if (this.status !== 'joining' || this.room !== room) return;
    this.voice.apply();
    this.mesh = createMesh(this);
    this.sendJoin();
    this.startLevels();
    this.changed('status');
  }

  /** True when the TURN credentials of this call are past half their lifetime. */
  iceStale(now = Date.now()) {
    return this.status !== 'idle' && this.ice.stale(now);
  }

  /** Fetch ICE servers again if they are stale, and give them to every connection. */
  refreshIce() {
    if (!this.iceStale()) return Promise.resolve();
    const { group, room } = this;
    return this.ice.refresh(
      () => api.ice(group, room),
      () => this.inRoom(group, room),
      (servers) => {
        if (this.mesh) this.mesh.setIceServers(servers);
        if (this.sfu) this.sfu.setIceServers(servers);
      },
    );
  }

  /** Words for a peer ICE could not reach, as the room view and the notice say them. */
  unreachableText(user) {
    return `Can't reach ${this.show(user)}: the network blocks the call${this.ice.hasRelay ? '' : ' (this node offers no relay)'}.`;
  }

  /** Whether `session` (of a remote user) is unreachable, and it is no stale twin of a working one. */
  unreachable(session) {
    const peer = this.mesh && this.mesh.peers.get(session);
    return !!(peer && peer.unreachable && !reachedElsewhere(this.mesh, peer));
  }

  /**
   * Connect to whoever is in the room (`list`, else the app's list), with fresh ICE servers
   * for new connections. (This runs before the app stores a new list: after waiting for
   * the ICE servers, the app's list is the newest one.)
   */
  async syncMesh(list = null) {
    let current = list;
    if (this.iceStale()) {
      await this.refreshIce();
      current = null;
    }
    if (this.status !== 'joined' || !this.mesh) return;
    let people = current || this.getParticipants(this.group, this.room) || [];
    if (this.mode === 'sfu') people = people.filter((p) => !this.viaNode(p.user) || this.mesh.peers.has(p.session));
    this.mesh.sync(this.withKept(people));
  }

  /** `list`, plus (for a while after our session was resumed) whoever we are connected to
   *  that the node does not list yet: see RESYNC_GRACE_MS. */
  withKept(list) {
    if (!this.mesh || performance.now() > this.resyncUntil) return list;
    const listed = new Set(list.map((p) => p.session));
    const kept = [...this.mesh.peers.values()].filter((p) => !listed.has(p.session)).map((p) => ({ user: p.user, session: p.session }));
    return kept.length ? [...list, ...kept] : list;
  }

  /**
   * Whether `user`'s audio reaches us through this node's audio server rather than the mesh:
   * people of this node when the call is on it and, on a stage, people of other nodes too
   * (each node's audio server pulls the others' speakers: the cascade); in a conversation,
   * people of the nodes the node says it cascades with both ways.
   */
  viaNode(user) {
    if (this.sameNode(user)) return true;
    if (this.mode !== 'sfu') return false;
    return this.stage.active || (typeof user === 'string' && this.cascadedNodes.has(user.slice(user.lastIndexOf('@') + 1)));
  }

  /** Whether `user` (a full id, `name@node`) is of this node. */
  sameNode(user) {
    return !!this.myNode && typeof user === 'string' && user.slice(user.lastIndexOf('@') + 1) === this.myNode;
  }

  /** The node says how people of this node reach each other in this call. */
  setMode(mode) {
    const next = mode === 'sfu' ? 'sfu' : 'mesh';
    if (next === this.mode && (next === 'mesh' || this.sfu)) return;
    this.mode = next;
    if (next === 'sfu') this.sfuLeg.start();
    else {
      this.sfuLeg.stop();
      this.syncMesh(); // a call that starts over as a mesh: everyone again
    }
    this.changed('mode');
  }

  /** Mesh state of `session`, else (carried by the audio server) that connection's state. */
  peerInfo(session, user) {
    return this.peerStates.get(session) || this.sfuLeg.peerInfo(user);
  }

  /** The path of `session`'s audio: the mesh's, else "node" when the audio server carries it. */
  pathOf(session, user) {
    return this.paths.get(session) || this.sfuLeg.pathOf(session, user);
  }

  sendJoin() {
    this.voice.sentMuted = this.voice.effectiveMuted;
    this.socket.send({ type: 'join', group: this.group, room: this.room, muted: this.voice.effectiveMuted });
  }

  /** @param {import('./protocol.js').ServerMessages['hello']} msg */
  onHello(msg) {
    const resumed = !!this.mySession && this.mySession === msg.session;
    if (this.mySession && !resumed) this.formerSessions.add(this.mySession);
    this.mySession = msg.session;
    if (typeof msg.user === 'string') {
      this.myUser = msg.user;
      this.myNode = msg.user.slice(msg.user.lastIndexOf('@') + 1);
    }
    if (resumed && this.status !== 'idle' && this.mesh) {
      // The same session on a new socket: every connection goes on. Join again — nothing
      // changes if the node held our seat; after its restart it seats us again — and keep
      // whoever the node does not list yet until they are back too.
      this.resyncUntil = performance.now() + RESYNC_GRACE_MS;
      clearTimeout(this.resyncTimer);
      const { group, room } = this;
      this.resyncTimer = setTimeout(() => this.presenceChanged(group, room), RESYNC_GRACE_MS + 100);
      this.sendJoin();
      // The network changed while the socket was down: new candidates for every connection;
      // else, resend what may have been dropped meanwhile.
      const why = this.restartOnResume;
      this.restartOnResume = null;
      if (why) this.networkChanged(why);
      else this.mesh.resumeSignaling();
      return;
    }
    if (this.status !== 'idle' && this.mesh) {
      // A new socket is a new session: rebuild the mesh (and the audio server connection,
      // once `joined` says the call is there) under it and join again.
      this.status = 'joining';
      this.sfuLeg.stop();
      this.mesh.closeAll();
      this.peerStates.clear();
      this.mesh = null;
      // New keys too: a new session gets a new key pair and a new sender key.
      const { group, room } = this;
      this.keys.start(this.keys.wanted).then(() => {
        if (!this.inRoom(group, room) || this.status !== 'joining') return;
        this.mesh = createMesh(this);
        this.sendJoin();
        this.changed('status');
      });
    }
  }

  /** @param {import('./protocol.js').ServerMessages['joined']} msg */
  onJoined(msg) {
    if (!this.inRoom(msg.group, msg.room)) return;
    this.status = 'joined';
    rememberCall({ group: msg.group, room: msg.room });
    if (msg.session) this.mySession = msg.session;
    this.mode = msg.mode === 'sfu' ? 'sfu' : 'mesh';
    this.cascadedNodes = new Set(msg.cascade || []);
    if (this.mode === 'sfu') this.sfuLeg.start();
    else this.sfuLeg.stop();
    if (this.mesh) {
      this.mesh.mySession = this.mySession;
      this.syncMesh();
    }
    this.stage.refresh();
    if (this.keys.myId !== this.mySession) this.keys.joined(this.mySession); // (not again on a resume)
    this.changed('status');
  }

  /** @param {import('./protocol.js').ServerMessages['left']} msg */
  onLeft(msg) {
    if (!this.inRoom(msg.group, msg.room) || this.status === 'joining') return;
    this.stop();
    this.notify('You were dropped from the call (the room was deleted or you were removed).');
  }

  /** Say bye to every peer, leave the room, close every connection, release the microphone. */
  leave() {
    if (this.status === 'idle') return;
    if (this.mesh) this.mesh.byeAll();
    this.socket.send({ type: 'leave' });
    this.stop();
  }

  stop() {
    rememberCall(null); // left, dropped or failed: a reload does not bring it back
    clearTimeout(this.resyncTimer);
    this.resyncUntil = 0;
    this.sfuLeg.stop();
    this.keys.stop();
    this.mode = 'mesh';
    this.droppedNodes.clear();
    this.cascadedNodes.clear();
    if (this.mesh) this.mesh.closeAll();
    this.mesh = null;
    this.voice.stop();
    this.stage.seat = null;
    this.speakers.clear();
    clearInterval(this.levelTimer);
    this.levelTimer = null;
    clearInterval(this.pathTimer);
    this.pathTimer = null;
    this.levels.clear();
    this.peerStates.clear();
    this.paths.clear();
    this.status = 'idle';
    this.group = null;
    this.room = null;
    this.changed('status');
  }

  startLevels() {
    clearInterval(this.levelTimer);
    this.levelTimer = setInterval(async () => {
      if (!this.mesh) return;
      const levels = await readLevels(this.mesh, this.sfu, this.voice.level());
      if (!this.mesh) return;
      this.levels = levels;
      this.changed('levels');
    }, LEVEL_POLL_MS);
    clearInterval(this.pathTimer);
    this.pathTimer = setInterval(() => this.pollPaths(), PATH_POLL_MS);
  }

  /** Which path each connected peer's audio takes (direct or relayed), from getStats. */
  async pollPaths() {
    if (this.mesh && (await readPaths(this.mesh, this.paths))) this.changed('paths');
  }

  /** Per remote session: who, its state, whether it is unreachable, and its path. */
  connections() {
    return describeConnections(this.mesh, this.paths);
  }

  /** user/session → RTCPeerConnection (and "sfu" → the audio server's), for the test hook. */
  peerConnections() {
    const map = new Map();
    if (this.mesh) for (const p of this.mesh.peers.values()) map.set(`${p.user}/${p.session}`, p.pc);
    if (this.sfu && this.sfu.pc) map.set('sfu', this.sfu.pc);
    return map;
  }

  /** The audio server connection, for the test hook: `{state, slots: [user|null], mode, unreachable: [node], cascade: [node]}`. */
  sfuInfo() {
    return {
      state: this.sfu ? this.sfu.state : null,
      slots: this.sfu ? this.sfu.slots.map((s) => (s ? s.user : null)) : [],
      mode: this.status === 'idle' ? null : this.mode,
      unreachable: [...this.droppedNodes],
      cascade: [...this.cascadedNodes],
    };
  }
}
