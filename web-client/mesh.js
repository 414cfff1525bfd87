//! The full mesh: one RTCPeerConnection per remote participant session, negotiated with the
//! "perfect negotiation" pattern so that simultaneous offers (glare) never wedge a call.
//!
//! Who is polite is decided the same way on both ends: the side whose session id sorts
//! higher is polite (it rolls back its own offer on a collision). The impolite side makes
//! the first offer; later renegotiations (ICE restarts) may start on either side.

/** Signaling trace in the console when localStorage["voicechat.debug"] is set. */
function debug(...args) {
  try {
    if (localStorage.getItem('voicechat.debug')) console.debug('[mesh]', ...args);
  } catch {
    /* storage unavailable */
  }
}

const DISCONNECTED_GRACE_MS = 3000;
const UNLISTED_GRACE_MS = 10_000;
const POLITE_WAIT_MS = 4000;
const WATCHDOG_MS = 8000;

/** Put Opus first in the codec list of an audio transceiver (Chromium already prefers it). */
function preferOpus(transceiver) {
  if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver?.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities('audio');
  if (!caps) return;
  const opus = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'audio/opus');
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== 'audio/opus');
  if (opus.length) {
    try {
      transceiver.setCodecPreferences([...opus, ...rest]);
    } catch {
      /* not fatal: the default order has Opus first */
    }
  }
}

class Peer {
  constructor(mesh, user, session) {
    this.mesh = mesh;
    this.user = user;
    this.session = session;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.closed = false;
    this.graceTimer = null;
    this.listed = false; // seen in a participants list (a signal may arrive first)
    this.createdAt = performance.now();

    const pc = new RTCPeerConnection({ iceServers: mesh.iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    // To keep the first exchange free of glare, the impolite side offers first; the polite
    // side adds its microphone when that offer arrives (or after a while, if it never does —
    // perfect negotiation then still copes with any collision).
    this.trackAdded = false;
    this.offerTimer = null;
    if (!this.polite) this.addLocalTrack();
    else this.offerTimer = setTimeout(() => this.addLocalTrack(), POLITE_WAIT_MS);
    // Watchdog: a lost signal or a wedged exchange must not leave a silent pair behind.
    this.watchdog = setInterval(() => {
      if (this.closed || this.pc.connectionState === 'connected') return;
      if (!this.polite || this.pc.remoteDescription === null) {
        debug('watchdog restart', this.user, this.pc.connectionState, this.pc.signalingState);
        this.addLocalTrack();
        this.restartIce();
      }
    }, WATCHDOG_MS);

    pc.onnegotiationneeded = async () => {
      if (pc.signalingState !== 'stable') return; // an offer of theirs is being answered
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        this.signal(desc.type, { description: desc.toJSON() });
      } catch (err) {
        console.warn('offer failed', err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.signal('candidate', { candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ track: remote, streams }) => {
      const stream = streams[0] || new MediaStream([remote]);
      mesh.hooks.onTrack(this, stream);
    };
    pc.onconnectionstatechange = () => this.stateChanged();
    pc.oniceconnectionstatechange = () => this.stateChanged();
  }

  addLocalTrack() {
    clearTimeout(this.offerTimer);
    const track = this.mesh.localTrack();
    if (this.trackAdded || this.closed || !track) return;
    this.trackAdded = true;
    const sender = this.pc.addTrack(track, this.mesh.localStream);
    const tr = this.pc.getTransceivers().find((t) => t.sender === sender);
    if (tr) preferOpus(tr);
  }

  /** The side whose session id sorts higher yields on a collision. */
  get polite() {
    return this.mesh.mySession > this.session;
  }

  get state() {
    return this.pc.connectionState;
  }

  signal(kind, data) {
    debug('send', kind, 'to', this.user, this.session);
    this.mesh.hooks.send({ type: 'signal', to: this.user, to_session: this.session, kind, data });
  }

  stateChanged() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    debug('state', this.user, state, this.pc.iceConnectionState);
    clearTimeout(this.graceTimer);
    if (state === 'failed') {
      this.restartIce();
    } else if (state === 'disconnected') {
      this.graceTimer = setTimeout(() => {
        if (!this.closed && this.pc.connectionState === 'disconnected') this.restartIce();
      }, DISCONNECTED_GRACE_MS);
    }
    this.mesh.hooks.onState(this, state);
  }

  restartIce() {
    // Fires negotiationneeded; the resulting offer carries new ICE credentials.
    try {
      this.pc.restartIce();
    } catch (err) {
      console.warn('ICE restart failed', err);
    }
  }

  async handle(kind, data) {
    const pc = this.pc;
    debug('recv', kind, 'from', this.user, 'state', pc.signalingState, 'polite', this.polite);
    if (kind === 'offer' || kind === 'answer') {
      const description = data && data.description;
      if (!description || description.type !== kind) return;
      const readyForOffer =
        !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description); // rolls back our own offer when polite
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        this.addLocalTrack(); // reuses the transceiver the offer created: the answer is sendrecv
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        this.signal(desc.type, { description: desc.toJSON() });
      }
    } else if (kind === 'candidate') {
      try {
        if (data && data.candidate) await pc.addIceCandidate(data.candidate);
      } catch (err) {
        if (!this.ignoreOffer) console.warn('bad ICE candidate', err);
      }
    }
  }

  replaceTrack(track) {
    for (const sender of this.pc.getSenders()) {
      if (sender.track === null || sender.track.kind === 'audio') sender.replaceTrack(track);
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.graceTimer);
    clearTimeout(this.offerTimer);
    clearInterval(this.watchdog);
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.close();
  }
}

export class Mesh {
  /**
   * @param {object} opts
   * @param {string} opts.mySession this socket's session id (from `hello`)
   * @param {RTCIceServer[]} opts.iceServers
   * @param {MediaStream} opts.localStream
   * @param {{send: Function, onTrack: Function, onState: Function, onClose: Function}} opts.hooks
   */
  constructor({ mySession, iceServers, localStream, hooks }) {
    this.mySession = mySession;
    this.iceServers = iceServers;
    this.localStream = localStream;
    this.hooks = hooks;
    this.peers = new Map(); // session → Peer
  }

  localTrack() {
    return this.localStream ? this.localStream.getAudioTracks()[0] || null : null;
  }

  ensure(user, session) {
    let peer = this.peers.get(session);
    if (!peer) {
      peer = new Peer(this, user, session);
      this.peers.set(session, peer);
      this.hooks.onState(peer, peer.state);
    }
    return peer;
  }

  /** Connect to everyone listed (but ourselves), drop whoever is no longer listed. */
  sync(participants) {
    const wanted = new Set();
    for (const p of participants) {
      if (p.session === this.mySession) continue;
      wanted.add(p.session);
      this.ensure(p.user, p.session).listed = true;
    }
    const now = performance.now();
    for (const [session, peer] of [...this.peers]) {
      if (wanted.has(session)) continue;
      // A peer known only from its signals may be ahead of the list; give it time.
      if (peer.listed || now - peer.createdAt > UNLISTED_GRACE_MS) this.drop(session);
    }
  }

  async handleSignal(msg) {
    if (msg.kind === 'bye') {
      this.drop(msg.from_session);
      return;
    }
    const peer = this.ensure(msg.from, msg.from_session);
    try {
      await peer.handle(msg.kind, msg.data);
    } catch (err) {
      console.warn(`signal ${msg.kind} from ${msg.from} failed`, err);
    }
  }

  drop(session) {
    const peer = this.peers.get(session);
    if (!peer) return;
    this.peers.delete(session);
    peer.close();
    this.hooks.onClose(peer);
  }

  replaceTrack(track) {
    for (const peer of this.peers.values()) peer.replaceTrack(track);
  }

  /** Tell every peer we are going, then close every connection. */
  byeAll() {
    for (const peer of this.peers.values()) peer.signal('bye', {});
  }

  closeAll() {
    for (const session of [...this.peers.keys()]) this.drop(session);
  }
}
