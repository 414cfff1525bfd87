//! The call of this tab: microphone, joining/leaving a room over the socket, the mesh of
//! peer connections, mute and push-to-talk, microphone switching, levels for the meters.
//! ICE servers come from the node per call (its TURN credentials expire: they are fetched
//! again past half their lifetime), the path of each connection (direct or relayed) is
//! polled from getStats, and a network change restarts ICE without leaving the room.
//! Views read its fields and subscribe to changes; they never touch RTCPeerConnections.

import { api, ApiError } from './api.js';
import { Mesh, selectedPath } from './mesh.js';
import { Speakers, LocalMeter, inboundLevel } from './audio.js';

const LEVEL_POLL_MS = 200;
const PATH_POLL_MS = 2000;
/** Never fetch ICE servers again sooner than this (a skewed clock must not make it loop). */
const ICE_REFETCH_MIN_MS = 30_000;
/** Network events come in bursts (offline, online, a connection change): act once. */
const NETWORK_SETTLE_MS = 1000;
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
    socket.on('signal', (m) => {
      if (this.inRoom(m.group, m.room) && this.mesh && this.mySession) {
        if (this.iceStale()) this.refreshIce(); // applied to the new connection when it lands
        this.mesh.handleSignal(m);
      }
    });
    socket.on('error', (m) => {
      if (m.in_reply_to === 'join' && this.status === 'joining') {
        this.stop();
        this.notify(`Could not join the call: ${m.message || m.code}`);
      }
    });
  }

  /** The app's list of a room changed (a snapshot or a delta from the node). */
  presenceChanged(group, room) {
    if (this.status === 'joined' && this.inRoom(group, room) && this.mesh) this.syncMesh();
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
    if (this.status === 'joined' && this.mesh) this.mesh.sync(current || this.getParticipants(this.group, this.room) || []);
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
    if (this.status !== 'idle' && this.localStream) {
      // A new socket is a new session: rebuild the mesh under it and join again.
      this.status = 'joining';
      this.startMesh();
      this.sendJoin();
      this.changed('status');
    }
  }

  onJoined(msg) {
    if (!this.inRoom(msg.group, msg.room)) return;
    this.status = 'joined';
    if (msg.session) this.mySession = msg.session;
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
      this.levels.set('local', this.meter && !this.effectiveMuted ? this.meter.level() * 4 : 0);
      await Promise.all(
        [...this.mesh.peers.values()].map(async (peer) => {
          this.levels.set(peer.session, await inboundLevel(peer.pc));
        }),
      );
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

  /** user/session → RTCPeerConnection, for the test/diagnostics hook. */
  peerConnections() {
    const map = new Map();
    if (this.mesh) for (const p of this.mesh.peers.values()) map.set(`${p.user}/${p.session}`, p.pc);
    return map;
  }
}
