//! The call of this tab: microphone, joining/leaving a room over the socket, the mesh of
//! peer connections, mute and push-to-talk, microphone switching, levels for the meters.
//! Views read its fields and subscribe to changes; they never touch RTCPeerConnections.

import { api, ApiError } from './api.js';
import { Mesh } from './mesh.js';
import { Speakers, LocalMeter, inboundLevel } from './audio.js';

const LEVEL_POLL_MS = 200;
const DEVICE_KEY = 'voicechat.microphone';
const PTT_KEY = 'voicechat.pushToTalk';

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
   */
  constructor(socket, getParticipants, notify) {
    this.socket = socket;
    this.getParticipants = getParticipants;
    this.notify = notify;
    this.status = 'idle'; // idle | joining | joined
    this.group = null;
    this.room = null;
    this.mySession = null;
    this.localStream = null;
    this.mesh = null;
    this.meter = null;
    this.muted = false;
    this.pushToTalk = localStorage.getItem(PTT_KEY) === 'true';
    this.talkHeld = false;
    this.sentMuted = null;
    this.deviceId = localStorage.getItem(DEVICE_KEY) || '';
    this.peerStates = new Map(); // session → {user, state}
    this.levels = new Map(); // session or 'local' → 0..1
    this.speakers = new Speakers();
    this.listeners = new Set();
    this.levelTimer = null;

    socket.on('hello', (m) => this.onHello(m));
    socket.on('joined', (m) => this.onJoined(m));
    socket.on('left', (m) => this.onLeft(m));
    socket.on('participants', (m) => {
      if (this.status === 'joined' && this.inRoom(m.group, m.room) && this.mesh) {
        this.mesh.sync(m.participants);
      }
    });
    socket.on('signal', (m) => {
      if (this.inRoom(m.group, m.room) && this.mesh && this.mySession) this.mesh.handleSignal(m);
    });
    socket.on('error', (m) => {
      if (m.in_reply_to === 'join' && this.status === 'joining') {
        this.stop();
        this.notify(`Could not join the call: ${m.message || m.code}`);
      }
    });
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
    let iceServers = [];
    try {
      const [stream, ice] = await Promise.all([this.openMic(this.deviceId), api.ice()]);
      this.localStream = stream;
      iceServers = (ice && ice.ice_servers) || [];
    } catch (err) {
      this.stop();
      this.notify(err instanceof ApiError ? `Could not join the call: ${err.message}` : micError(err));
      return;
    }
    if (this.status !== 'joining' || this.room !== room) {
      this.stopMic();
      return;
    }
    this.iceServers = iceServers;
    this.meter = new LocalMeter(this.localStream);
    this.applyMute();
    this.startMesh();
    this.sendJoin();
    this.startLevels();
    this.changed('status');
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
      iceServers: this.iceServers,
      localStream: this.localStream,
      hooks: {
        send: (msg) => this.socket.send(msg),
        onTrack: (peer, stream) => this.speakers.attach(peer.session, peer.user, stream),
        onState: (peer, state) => {
          this.peerStates.set(peer.session, { user: peer.user, state });
          this.changed('peers');
        },
        onClose: (peer) => {
          this.speakers.detach(peer.session);
          this.peerStates.delete(peer.session);
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
      this.mesh.sync(this.getParticipants(msg.group, msg.room) || []);
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
    this.levels.clear();
    this.peerStates.clear();
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
  }

  /** user/session → RTCPeerConnection, for the test/diagnostics hook. */
  peerConnections() {
    const map = new Map();
    if (this.mesh) for (const p of this.mesh.peers.values()) map.set(`${p.user}/${p.session}`, p.pc);
    return map;
  }
}
