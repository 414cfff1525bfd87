//! The call of this tab: microphone, joining/leaving a room over the socket, the mesh of
//! peer connections, mute and push-to-talk, microphone switching, levels for the meters.
//! ICE servers come from the node per call (its TURN credentials expire: they are fetched
//! again past half their lifetime), the path of each connection (direct or relayed) is
//! polled from getStats, and a network change restarts ICE without leaving the room.
//! When the node moves the call to its audio server (mode "sfu"), people of this node are
//! heard through it (sfu.js) and people of other nodes still through the mesh; the switch
//! makes before it breaks (see settleSwitch).
//! Views read its fields and subscribe to changes; they never touch RTCPeerConnections.

import { api, ApiError } from './api.js';
import { Mesh, selectedPath } from './mesh.js';
import { Speakers, LocalMeter, inboundLevel } from './audio.js';
import { SfuConnection, SLOTS } from './sfu.js';

const LEVEL_POLL_MS = 200;
const PATH_POLL_MS = 2000;
/** Never fetch ICE servers again sooner than this (a skewed clock must not make it loop). */
const ICE_REFETCH_MIN_MS = 30_000;
/** Network events come in bursts (offline, online, a connection change): act once. */
const NETWORK_SETTLE_MS = 1000;
/**
 * On the switch to the audio server, a mesh connection to someone of this node closes once
 * our server connection is up and a slot carries them (so they are on it too), or at the
 * latest this long after ours came up (someone silent may never get a slot).
 */
const SWITCH_GRACE_MS = 5000;
const DEVICE_KEY = 'voicechat.microphone';
const PTT_KEY = 'voicechat.pushToTalk';

/** The URLs of an RTCIceServer, always as a list. */
function urlsOf(server) {
  return [].concat((server && server.urls) || []);
}

function micError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone access was denied. Allow it in the site settings of your browser and try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone was found. Plug one in and try again.';
    case 'NotReadableError':
      return 'The microphone is busy or unavailable (another application may be using it).';
    default:
      return `The microphone could not be opened${err && err.message ? `: ${err.message}` : '.'}`;
  }
}

export class Call {
  /**
   * @param {import('./socket.js').Socket} socket
   * @param {(group: string, room: string) => Array} getParticipants current list from app state
   * @param {(message: string) => void} notify shows an error to the user
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
    this.myNode = null; // the node part of our user id (from hello)
    this.mode = 'mesh'; // mesh | sfu: how people of this node reach each other in this call
    this.sfu = null; // SfuConnection while the call is on the node's audio server
    this.switchTimer = null;
    this.formerSessions = new Set(); // this tab's earlier sessions (may linger on the node a while)
    this.localStream = null;
    this.mesh = null;
    this.meter = null;
    this.muted = false;
    this.pushToTalk = localStorage.getItem(PTT_KEY) === 'true';
    this.talkHeld = false;
    this.sentMuted = null;
    this.deviceId = localStorage.getItem(DEVICE_KEY) || '';
    this.peerStates = new Map(); // session → {user, state, unreachable}
    this.paths = new Map(); // session → {path, localCandidateType, remoteCandidateType, protocol}
    this.levels = new Map(); // session or 'local' → 0..1
    this.speakers = new Speakers();
    this.listeners = new Set();
    this.levelTimer = null;
    this.pathTimer = null;
    this.iceServers = [];
    this.iceExpiresAt = null; // unix seconds when the TURN credentials stop working, or null
    this.iceFetchedAt = 0; // Date.now() of the last fetch
    this.iceRefresh = null; // the fetch under way
    this.networkTimer = null;

    this.watchNetwork();
    socket.on('hello', (m) => this.onHello(m));
    socket.on('joined', (m) => this.onJoined(m));
    socket.on('left', (m) => this.onLeft(m));
    socket.on('participants', (m) => {
      if (this.status === 'joined' && this.inRoom(m.group, m.room) && this.mesh) this.syncMesh(m.participants || []);
    });
    socket.on('signal', (m) => {
      if (this.inRoom(m.group, m.room) && this.mesh && this.mySession) {
        // On the audio server nobody of this node gets a new mesh connection (one that is
        // there goes on, and may renegotiate, until the switch closes it).
        if (this.mode === 'sfu' && m.kind !== 'bye' && this.sameNode(m.from) && !this.mesh.peers.has(m.from_session)) return;
        if (this.iceStale()) this.refreshIce(); // applied to the new connection when it lands
        this.mesh.handleSignal(m);
      }
    });
    socket.on('call_mode', (m) => {
      if (this.status === 'joined' && this.inRoom(m.group, m.room)) this.setMode(m.mode);
    });
    socket.on('sfu_answer', (m) => {
      if (this.sfu && this.inRoom(m.group, m.room)) this.sfu.answer(m.sdp);
    });
    socket.on('sfu_slots', (m) => {
      if (this.sfu && this.inRoom(m.group, m.room)) this.sfu.setSlots(m.slots);
    });
    socket.on('sfu_lost', (m) => {
      if (this.sfu && this.inRoom(m.group, m.room)) this.sfu.lost();
    });
    socket.on('error', (m) => {
      if (m.in_reply_to === 'sfu_offer' && this.sfu) this.sfu.refused(m);
      if (m.in_reply_to === 'join' && this.status === 'joining') {
        this.stop();
        this.notify(`Could not join the call: ${m.message || m.code}`);
      }
    });
  }

  /** A network change: a new address, back online. Restart ICE (the socket copes on its own). */
  watchNetwork() {
    const changed = (why) => {
      clearTimeout(this.networkTimer);
      this.networkTimer = setTimeout(() => this.networkChanged(why), NETWORK_SETTLE_MS);
    };
    window.addEventListener('online', () => changed('online'));
    const conn = navigator.connection;
    if (conn && conn.addEventListener) conn.addEventListener('change', () => changed('connection change'));
  }

  networkChanged(why) {
    if (this.status === 'idle') return;
    // The socket may have died with the old address: if it does not answer, it is replaced,
    // and its new session re-joins and rebuilds every connection (see onHello).
    this.socket.probe();
    // While the socket is down nothing can be signalled; the reconnect does it all.
    if (this.status !== 'joined' || !this.mesh || !this.socket.connected) return;
    this.mesh.restartAll(`network: ${why}`);
    // The node is ICE-lite (no ICE restart): a connection that is not up is made anew.
    if (this.sfu && this.sfu.state !== 'connected') this.sfu.retry(`network: ${why}`);
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed(what) {
    for (const fn of this.listeners) fn(what);
  }

  inRoom(group, room) {
    return this.status !== 'idle' && this.group === group && this.room === room;
  }

  get effectiveMuted() {
    return this.pushToTalk ? !this.talkHeld : this.muted;
  }

  /** Open the microphone and join `room` (leaving any other call of this tab). */
  async join(group, room) {
    if (this.inRoom(group, room)) return;
    if (this.status !== 'idle') this.leave();
    this.status = 'joining';
    this.group = group;
    this.room = room;
    this.changed('status');
    let ice = null;
    try {
      const [stream, answer] = await Promise.all([this.openMic(this.deviceId), api.ice(group, room)]);
      this.localStream = stream;
      ice = answer;
    } catch (err) {
      this.stop();
      this.notify(err instanceof ApiError ? `Could not join the call: ${err.message}` : micError(err));
      return;
    }
    if (this.status !== 'joining' || this.room !== room) {
      this.stopMic();
      return;
    }
    this.takeIce(ice);
    this.meter = new LocalMeter(this.localStream);
    this.applyMute();
    this.startMesh();
    this.sendJoin();
    this.startLevels();
    this.changed('status');
  }

  /** Keep an answer of `GET /api/ice` (its `expires_at` may be missing: an older node). */
  takeIce(ice) {
    this.iceServers = (ice && Array.isArray(ice.ice_servers) && ice.ice_servers) || [];
    this.iceExpiresAt = ice && typeof ice.expires_at === 'number' ? ice.expires_at : null;
    this.iceFetchedAt = Date.now();
  }

  /** True when the TURN credentials we hold are past half their lifetime. */
  iceStale(now = Date.now()) {
    if (this.iceExpiresAt === null || this.status === 'idle') return false;
    if (now - this.iceFetchedAt < ICE_REFETCH_MIN_MS) return false;
    const half = this.iceFetchedAt + (this.iceExpiresAt * 1000 - this.iceFetchedAt) / 2;
    return now >= half;
  }

  /** Fetch ICE servers again if they are stale, and give them to every connection. */
  refreshIce() {
    if (!this.iceStale()) return Promise.resolve();
    if (!this.iceRefresh) {
      const { group, room } = this;
      this.iceRefresh = api
        .ice(group, room)
        .then((ice) => {
          if (!this.inRoom(group, room)) return;
          this.takeIce(ice);
          if (this.mesh) this.mesh.setIceServers(this.iceServers);
          if (this.sfu) this.sfu.setIceServers(this.iceServers);
        })
        .catch((err) => console.warn('could not refresh the ICE servers', err))
        .finally(() => {
          this.iceRefresh = null;
        });
    }
    return this.iceRefresh;
  }

  /** Whether the node offered a relay (a turn:/turns: server) for this call. */
  get hasRelay() {
    return this.iceServers.some((s) => urlsOf(s).some((u) => /^turns?:/i.test(String(u))));
  }

  /** Words for a peer ICE could not reach, as the room view and the notice say them. */
  unreachableText(user) {
    return `Can't reach ${this.show(user)}: the network blocks the call${this.hasRelay ? '' : ' (this node offers no relay)'}.`;
  }

  /**
   * Whether another session of the same user is connected: after a network change a user's
   * old session lingers on the node until it times out while the new one works; the old
   * one's failure is no news then.
   */
  reachedElsewhere(peer) {
    if (!this.mesh) return false;
    return [...this.mesh.peers.values()].some((p) => p !== peer && p.user === peer.user && p.state === 'connected');
  }

  /** Whether `session` (of a remote user) is unreachable, and it is no stale twin of a working one. */
  unreachable(session) {
    const peer = this.mesh && this.mesh.peers.get(session);
    return !!(peer && peer.unreachable && !this.reachedElsewhere(peer));
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
    if (this.mode === 'sfu') people = people.filter((p) => !this.sameNode(p.user) || this.mesh.peers.has(p.session));
    this.mesh.sync(people);
  }

  /** Whether `user` (a full id, `name@node`) is of this node: the audio server carries them. */
  sameNode(user) {
    return !!this.myNode && typeof user === 'string' && user.slice(user.lastIndexOf('@') + 1) === this.myNode;
  }

  /** The node says how people of this node reach each other in this call. */
  setMode(mode) {
    const next = mode === 'sfu' ? 'sfu' : 'mesh';
    if (next === this.mode && (next === 'mesh' || this.sfu)) return;
    this.mode = next;
    if (next === 'sfu') this.startSfu();
    else {
      this.stopSfu();
      this.syncMesh(); // a call that starts over as a mesh: everyone again
    }
    this.changed('mode');
  }

  startSfu() {
    if (this.sfu || !this.localStream) return;
    const sfu = new SfuConnection({
      iceServers: this.iceServers,
      localStream: this.localStream,
      hooks: {
        send: (msg) => this.socket.send(msg),
        onTrack: (slot, stream) => {
          const who = this.sfu === sfu ? sfu.slots[slot] : null;
          this.speakers.attach(`sfu-${slot}`, who && who.user, stream);
        },
        onState: (state) => {
          if (this.sfu !== sfu) return;
          if (state === 'connected') this.settleSwitch();
          this.changed('peers');
        },
        onSlots: () => {
          if (this.sfu !== sfu) return;
          sfu.slots.forEach((who, i) => this.speakers.setUser(`sfu-${i}`, who && who.user));
          this.settleSwitch();
          this.changed('peers');
        },
        onGiveUp: (message) => this.notify(message),
        onStuck: () => this.notify("Can't reach this node's audio server: the network may block it. Still trying."),
        beforeConnect: () => this.refreshIce(),
      },
    });
    this.sfu = sfu;
    sfu.connect();
  }

  stopSfu() {
    clearTimeout(this.switchTimer);
    if (!this.sfu) return;
    this.sfu.close();
    this.sfu = null;
    for (let i = 0; i < SLOTS; i++) this.speakers.detach(`sfu-${i}`);
  }

  /**
   * Make before break: a mesh connection to someone of this node closes (with a bye, so they
   * close theirs) once our connection to the audio server is up and one of its slots carries
   * them — they are on it too, so each hears the other through it — or, for someone never
   * given a slot (silent, or not among the loudest), SWITCH_GRACE_MS after ours came up.
   */
  settleSwitch() {
    clearTimeout(this.switchTimer);
    const sfu = this.sfu;
    if (this.mode !== 'sfu' || !this.mesh || !sfu || sfu.state !== 'connected') return;
    const carried = new Set(sfu.slots.filter(Boolean).map((s) => s.session));
    const waited = performance.now() - sfu.connectedAt;
    let waiting = false;
    for (const peer of [...this.mesh.peers.values()]) {
      if (!this.sameNode(peer.user)) continue;
      if (carried.has(peer.session) || waited >= SWITCH_GRACE_MS || !peer.connected) this.mesh.bye(peer.session);
      else waiting = true;
    }
    if (waiting) this.switchTimer = setTimeout(() => this.settleSwitch(), SWITCH_GRACE_MS - waited);
  }

  /** Mesh state of `session`, else (carried by the audio server) that connection's state. */
  peerInfo(session, user) {
    const mesh = this.peerStates.get(session);
    if (mesh || !this.viaSfu(user)) return mesh;
    const { state: s } = this.sfu;
    const state = s === 'connected' ? 'connected' : s === 'failed' || this.sfu.stuck ? 'unreachable' : 'connecting';
    return { user, state, unreachable: false };
  }

  /** The path of `session`'s audio: the mesh's, else "node" when the audio server carries it. */
  pathOf(session, user) {
    if (this.paths.has(session)) return this.paths.get(session);
    return this.viaSfu(user) && this.sfu.state === 'connected' && !this.mesh.peers.has(session) ? { path: 'node' } : null;
  }

  viaSfu(user) {
    return this.mode === 'sfu' && !!this.sfu && !!this.mesh && this.sameNode(user);
  }

  async openMic(deviceId) {
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (deviceId) audio.deviceId = { ideal: deviceId };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const err = new Error('the browser allows the microphone only on https:// pages (or localhost)');
      err.name = 'InsecureContext';
      throw err;
    }
    return navigator.mediaDevices.getUserMedia({ audio, video: false });
  }

  startMesh() {
    if (this.mesh) this.mesh.closeAll();
    this.peerStates.clear();
    this.mesh = new Mesh({
      mySession: this.mySession,
      isFormer: (session) => this.formerSessions.has(session),
      iceServers: this.iceServers,
      localStream: this.localStream,
      hooks: {
        send: (msg) => this.socket.send(msg),
        onTrack: (peer, stream) => this.speakers.attach(peer.session, peer.user, stream),
        onState: (peer, state) => {
          this.peerStates.set(peer.session, { user: peer.user, state, unreachable: peer.unreachable });
          if (state !== 'connected') this.paths.delete(peer.session);
          this.changed('peers');
        },
        onUnreachable: (peer) => {
          if (!this.reachedElsewhere(peer)) this.notify(this.unreachableText(peer.user));
        },
        // ICE lost its path: is the socket still fine? (a dead one is replaced, see networkChanged)
        onTrouble: () => this.socket.probe(),
        beforeRestart: () => this.refreshIce(),
        onClose: (peer) => {
          this.speakers.detach(peer.session);
          this.peerStates.delete(peer.session);
          this.paths.delete(peer.session);
          this.levels.delete(peer.session);
          this.changed('peers');
        },
      },
    });
  }

  sendJoin() {
    this.sentMuted = this.effectiveMuted;
    this.socket.send({ type: 'join', group: this.group, room: this.room, muted: this.effectiveMuted });
  }

  onHello(msg) {
    if (this.mySession && this.mySession !== msg.session) this.formerSessions.add(this.mySession);
    this.mySession = msg.session;
    if (typeof msg.user === 'string') this.myNode = msg.user.slice(msg.user.lastIndexOf('@') + 1);
    if (this.status !== 'idle' && this.localStream) {
      // A new socket is a new session: rebuild the mesh (and the audio server connection,
      // once `joined` says the call is there) under it and join again.
      this.status = 'joining';
      this.stopSfu();
      this.startMesh();
      this.sendJoin();
      this.changed('status');
    }
  }

  onJoined(msg) {
    if (!this.inRoom(msg.group, msg.room)) return;
    this.status = 'joined';
    if (msg.session) this.mySession = msg.session;
    this.mode = msg.mode === 'sfu' ? 'sfu' : 'mesh';
    if (this.mode === 'sfu') this.startSfu();
    else this.stopSfu();
    if (this.mesh) {
      this.mesh.mySession = this.mySession;
      this.syncMesh();
    }
    this.changed('status');
  }

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
    this.stopSfu();
    this.mode = 'mesh';
    if (this.mesh) this.mesh.closeAll();
    this.mesh = null;
    this.stopMic();
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
    this.talkHeld = false;
    this.changed('status');
  }

  stopMic() {
    if (this.meter) this.meter.close();
    this.meter = null;
    if (this.localStream) for (const t of this.localStream.getTracks()) t.stop();
  }

  setMuted(muted) {
    this.muted = muted;
    this.applyMute();
  }

  setPushToTalk(enabled) {
    this.pushToTalk = enabled;
    this.talkHeld = false;
    localStorage.setItem(PTT_KEY, String(enabled));
    this.applyMute();
  }

  setTalking(held) {
    if (!this.pushToTalk || this.talkHeld === held) return;
    this.talkHeld = held;
    this.applyMute();
  }

  /** Disabled tracks send silence: the remote ends hear nothing and see no energy. */
  applyMute() {
    const muted = this.effectiveMuted;
    if (this.localStream) for (const t of this.localStream.getAudioTracks()) t.enabled = !muted;
    if (this.status !== 'idle' && this.sentMuted !== muted) {
      this.sentMuted = muted;
      this.socket.send({ type: 'mute', muted });
    }
    this.changed('mute');
  }

  async microphones() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      return all.filter((d) => d.kind === 'audioinput');
    } catch {
      return [];
    }
  }

  /** Switch microphones mid-call without renegotiating (replaceTrack). */
  async selectMicrophone(deviceId) {
    this.deviceId = deviceId;
    localStorage.setItem(DEVICE_KEY, deviceId);
    if (!this.localStream || this.status === 'idle') return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          deviceId: { exact: deviceId },
          echoCancellation: true,
          noiseSuppression: true,
          autoGainControl: true,
        },
      });
    } catch (err) {
      this.notify(micError(err));
      return;
    }
    if (this.status === 'idle') {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    const track = stream.getAudioTracks()[0];
    const old = this.localStream;
    this.localStream = stream;
    if (this.mesh) {
      this.mesh.localStream = stream;
      this.mesh.replaceTrack(track);
    }
    if (this.sfu) {
      this.sfu.localStream = stream;
      this.sfu.replaceTrack(track);
    }
    if (this.meter) this.meter.close();
    this.meter = new LocalMeter(stream);
    for (const t of old.getTracks()) t.stop();
    this.applyMute();
    this.changed('device');
  }

  startLevels() {
    clearInterval(this.levelTimer);
    this.levelTimer = setInterval(async () => {
      if (!this.mesh) return;
      const levels = new Map([['local', this.meter && !this.effectiveMuted ? this.meter.level() * 4 : 0]]);
      const sfu = this.sfu;
      await Promise.all([
        ...[...this.mesh.peers.values()].map(async (peer) => {
          levels.set(peer.session, await inboundLevel(peer.pc));
        }),
        // Through the audio server a person's level is that of the slot carrying them.
        (async () => {
          if (!sfu) return;
          const slotLevels = await sfu.slotLevels();
          sfu.slots.forEach((who, i) => {
            if (who) levels.set(who.session, Math.max(levels.get(who.session) || 0, slotLevels[i]));
          });
        })(),
      ]);
      if (!this.mesh) return;
      this.levels = levels;
      this.changed('levels');
    }, LEVEL_POLL_MS);
    clearInterval(this.pathTimer);
    this.pathTimer = setInterval(() => this.pollPaths(), PATH_POLL_MS);
  }

  /** Which path each connected peer's audio takes (direct or relayed), from getStats. */
  async pollPaths() {
    if (!this.mesh) return;
    const peers = [...this.mesh.peers.values()];
    const found = await Promise.all(peers.map((p) => (p.state === 'connected' ? selectedPath(p.pc) : null)));
    let changed = false;
    peers.forEach((peer, i) => {
      const info = found[i];
      const old = this.paths.get(peer.session);
      if (JSON.stringify(old || null) === JSON.stringify(info)) return;
      changed = true;
      if (info) this.paths.set(peer.session, info);
      else this.paths.delete(peer.session);
    });
    if (changed) this.changed('paths');
  }

  /** Per remote session: who, its state, whether it is unreachable, and its path. */
  connections() {
    const out = [];
    if (!this.mesh) return out;
    for (const p of this.mesh.peers.values()) {
      const path = this.paths.get(p.session) || {};
      out.push({
        user: p.user,
        session: p.session,
        state: p.state,
        iceState: p.pc.iceConnectionState,
        unreachable: p.unreachable,
        restarts: p.restartCount,
        path: path.path || null,
        localCandidateType: path.localCandidateType || null,
        remoteCandidateType: path.remoteCandidateType || null,
        protocol: path.protocol || null,
      });
    }
    return out;
  }

  /** user/session → RTCPeerConnection (and "sfu" → the audio server's), for the test hook. */
  peerConnections() {
    const map = new Map();
    if (this.mesh) for (const p of this.mesh.peers.values()) map.set(`${p.user}/${p.session}`, p.pc);
    if (this.sfu && this.sfu.pc) map.set('sfu', this.sfu.pc);
    return map;
  }

  /** The audio server connection, for the test hook: `{state, slots: [user|null], mode}`. */
  sfuInfo() {
    return {
      state: this.sfu ? this.sfu.state : null,
      slots: this.sfu ? this.sfu.slots.map((s) => (s ? s.user : null)) : [],
      mode: this.status === 'idle' ? null : this.mode,
    };
  }
}
