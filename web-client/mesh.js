//! The full mesh: one RTCPeerConnection per remote participant session, negotiated with the
//! "perfect negotiation" pattern so that simultaneous offers (glare) never wedge a call.
//!
//! Who is polite is decided the same way on both ends: the side whose session id sorts
//! higher is polite (it rolls back its own offer on a collision). The impolite side makes
//! the first offer; later renegotiations (ICE restarts) may start on either side.
//!
//! Connection attempts: the first exchange and every ICE restart are attempts. One that
//! fails (ICE "failed") or has not connected within ATTEMPT_TIMEOUT_MS is followed by an
//! ICE restart at once; after FAILURES_BEFORE_UNREACHABLE in a row the peer is
//! "unreachable" (the view says why in words) and is retried every UNREACHABLE_RETRY_MS
//! until it connects. A "disconnected" that lasts, or a network change (call.js), restarts
//! too. Every restart of a peer goes through one rate limit, so nothing can make them loop.

/** Signaling trace in the console when localStorage["voicechat.debug"] is set. */
function debug(...args) {
  try {
    if (localStorage.getItem('voicechat.debug')) console.debug('[mesh]', (performance.now() / 1000).toFixed(2), ...args);
  } catch {
    /* storage unavailable */
  }
}

const DISCONNECTED_GRACE_MS = 3000;
const UNLISTED_GRACE_MS = 10_000;
const POLITE_WAIT_MS = 4000;
const WATCHDOG_MS = 2000;
/** An attempt (the first connection, or an ICE restart) not connected by then has failed. */
const ATTEMPT_TIMEOUT_MS = 10_000;
/** Failed attempts in a row before the peer is reported unreachable. */
const FAILURES_BEFORE_UNREACHABLE = 2;
/** ICE restarts per peer are rate-limited: never two closer than the gap, at most N a window. */
const RESTART_GAP_MS = 3000;
const RESTART_WINDOW_MS = 60_000;
const RESTARTS_PER_WINDOW = 5;
/** An unreachable peer is tried again this often (a network change tries at once). */
const UNREACHABLE_RETRY_MS = 30_000;
/** How long a restart waits for fresh TURN credentials before going ahead with the old ones. */
const ICE_REFRESH_WAIT_MS = 3000;

/** Put Opus first in the codec list of an audio transceiver (Chromium already prefers it). */
export function preferOpus(transceiver) {
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
  /**
   * @param {Mesh} mesh
   * @param {string} user
   * @param {string} session
   */
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
    // Connection attempts: the first one, then each ICE restart (ours or the other side's
    // offer). Failed ones in a row are counted; past FAILURES_BEFORE_UNREACHABLE the peer is
    // "unreachable" (said in words by the view) and is retried only slowly.
    this.attempt = 1;
    this.attemptAt = this.createdAt;
    this.failedAttempt = 0; // the attempt already counted as failed
    this.staleFailure = false; // the states still show the last attempt's failure
    this.failures = 0;
    this.unreachable = false;
    this.restarts = []; // times of recent restarts, for the rate limit
    this.restartTimer = null;
    this.restartDue = Infinity;
    this.restartCount = 0; // for the diagnostics hook

    const extra = mesh.hooks.pcConfig ? mesh.hooks.pcConfig() : {};
    const pc = new RTCPeerConnection({ ...extra, iceServers: mesh.iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    // To keep the first exchange free of glare, the impolite side offers first; the polite
    // side holds its offer until that offer arrives (or for a while, if it never does —
    // perfect negotiation then still copes with any collision). Both add their microphone
    // at once, so the transceiver the first offer is matched to exists, with its
    // encryption transforms, before any description is set: Chromium passes frames by a
    // transform attached to a receiver only after a description made it.
    this.trackAdded = false;
    this.holdOffer = this.polite;
    this.offerTimer = null;
    this.addLocalTrack();
    if (this.polite) {
      this.offerTimer = setTimeout(() => {
        this.holdOffer = false;
        if (pc.signalingState === 'stable' && !pc.remoteDescription) pc.onnegotiationneeded(new Event('negotiationneeded'));
      }, POLITE_WAIT_MS);
    }
    // Watchdog: a lost signal, a wedged exchange or checks that never end must not leave a
    // silent pair behind: an attempt that has not connected in time counts as failed.
    this.watchdog = setInterval(() => {
      if (this.closed) return;
      const now = performance.now();
      if (this.connected) this.attemptAt = now; // a drop is timed from the last moment it worked
      else if (now - this.attemptAt > ATTEMPT_TIMEOUT_MS) this.attemptFailed('timeout');
    }, WATCHDOG_MS);

    pc.onnegotiationneeded = async () => {
      if (pc.signalingState !== 'stable') return; // an offer of theirs is being answered
      if (this.holdOffer) return; // theirs comes first
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
    pc.ontrack = ({ track: remote, streams, receiver }) => {
      // Normally attached with our microphone already; this is for a transceiver their
      // offer made (we had no microphone then), whose frames the worker may never see.
      if (mesh.hooks.attachReceiver) mesh.hooks.attachReceiver(receiver);
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
    if (this.mesh.hooks.attachSender) this.mesh.hooks.attachSender(sender);
    if (tr && this.mesh.hooks.attachReceiver) this.mesh.hooks.attachReceiver(tr.receiver);
    if (tr) preferOpus(tr);
  }

  /** The side whose session id sorts higher yields on a collision. */
  get polite() {
    return this.mesh.mySession > this.session;
  }

  get state() {
    return this.pc.connectionState;
  }

  get connected() {
    const ice = this.pc.iceConnectionState;
    return this.pc.connectionState === 'connected' || ((ice === 'connected' || ice === 'completed') && this.pc.connectionState !== 'failed');
  }

  signal(kind, data) {
    debug('send', kind, 'to', this.user, this.session);
    this.mesh.hooks.send({ type: 'signal', to: this.user, to_session: this.session, kind, data });
  }

  stateChanged() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    const ice = this.pc.iceConnectionState;
    debug('state', this.user, state, ice);
    clearTimeout(this.graceTimer);
    if (ice === 'new' || ice === 'checking' || state === 'connected') this.staleFailure = false;
    if (state === 'connected') {
      this.failures = 0;
      this.unreachable = false;
    } else if (this.staleFailure) {
      // The last attempt's "failed", read again (the ICE and connection states change one
      // after the other) after a new attempt began: not a failure of the new one.
    } else if (ice === 'failed' || (state === 'failed' && ice !== 'new' && ice !== 'checking')) {
      // (connectionState stays "failed" a moment into the next attempt's checks: not a new failure)
      if (this.mesh.hooks.onTrouble) this.mesh.hooks.onTrouble(this);
      this.attemptFailed('failed');
    } else if (state === 'disconnected' || ice === 'disconnected') {
      if (this.mesh.hooks.onTrouble) this.mesh.hooks.onTrouble(this);
      // A blip heals itself; a path that went away (a new address) needs new candidates.
      this.graceTimer = setTimeout(() => {
        const now = this.pc.connectionState;
        if (!this.closed && (now === 'disconnected' || this.pc.iceConnectionState === 'disconnected')) this.requestRestart('disconnected');
      }, DISCONNECTED_GRACE_MS);
    }
    this.mesh.hooks.onState(this, state);
  }

  /** Count the current attempt as failed (once); past the limit the peer is unreachable. */
  countFailure(reason) {
    if (this.closed || this.failedAttempt === this.attempt) return false;
    this.failedAttempt = this.attempt;
    this.failures += 1;
    debug('attempt failed', this.user, reason, this.failures);
    if (this.failures >= FAILURES_BEFORE_UNREACHABLE && !this.unreachable) {
      this.unreachable = true;
      this.mesh.hooks.onState(this, this.state);
      if (this.mesh.hooks.onUnreachable) this.mesh.hooks.onUnreachable(this);
    }
    return true;
  }

  /** The current attempt failed: try again, at once, or slowly once unreachable. */
  attemptFailed(reason) {
    if (this.countFailure(reason)) this.requestRestart(reason, this.unreachable ? UNREACHABLE_RETRY_MS : 0);
  }

  /** A new attempt begins (our restart, or an offer of theirs). */
  newAttempt() {
    this.attempt += 1;
    this.attemptAt = performance.now();
    // Until ICE checks again, the states still say how the last attempt ended.
    this.staleFailure = this.pc.iceConnectionState === 'failed' || this.pc.connectionState === 'failed';
  }

  /**
   * Ask for an ICE restart, no sooner than `delay` ms from now and within the rate limit
   * (so that nothing — failures, network events, the watchdog — can make restarts loop).
   * A later request never pushes back an earlier one already scheduled.
   */
  requestRestart(reason, delay = 0) {
    if (this.closed) return;
    const now = performance.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    let wait = delay;
    if (this.restarts.length) wait = Math.max(wait, this.restarts[this.restarts.length - 1] + RESTART_GAP_MS - now);
    if (this.restarts.length >= RESTARTS_PER_WINDOW) wait = Math.max(wait, this.restarts[0] + RESTART_WINDOW_MS - now);
    if (wait > 0) {
      if (now + wait >= this.restartDue) return;
      clearTimeout(this.restartTimer);
      this.restartDue = now + wait;
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        this.restartDue = Infinity;
        this.requestRestart(reason);
      }, wait);
      return;
    }
    clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.restartDue = Infinity;
    this.restarts.push(now);
    this.restartCount += 1;
    this.restartIce(reason);
  }

  async restartIce(reason) {
    this.newAttempt();
    debug('ICE restart', this.user, reason, this.pc.connectionState, this.pc.signalingState);
    // Fresh TURN credentials first, when the ones we hold are past half their lifetime.
    if (this.mesh.hooks.beforeRestart) {
      await Promise.race([this.mesh.hooks.beforeRestart().catch(() => {}), new Promise((r) => setTimeout(r, ICE_REFRESH_WAIT_MS))]);
    }
    if (this.closed) return;
    this.holdOffer = false;
    this.addLocalTrack();
    // Fires negotiationneeded; the resulting offer carries new ICE credentials.
    try {
      this.pc.restartIce();
    } catch (err) {
      console.warn('ICE restart failed', err);
    }
  }

  setIceServers(iceServers) {
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn('could not apply new ICE servers', err);
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
      const negotiated = pc.remoteDescription !== null;
      if (description.type === 'offer') this.holdOffer = false;
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description); // rolls back our own offer when polite
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (this.mesh.hooks.onRemoteDescription) this.mesh.hooks.onRemoteDescription(this, description.sdp);
      if (description.type === 'offer') {
        if (!this.connected) {
          // They restart while we are still trying: they gave up on this attempt, so it
          // failed here too; theirs is a fresh attempt on both ends.
          if (negotiated) this.countFailure('their restart');
          this.newAttempt();
        }
        this.addLocalTrack(); // (added already, unless we had no microphone): the answer is sendrecv
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
    clearTimeout(this.restartTimer);
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
   * @param {(session: string) => boolean} [opts.isFormer] an earlier session of this tab: after
   *   a reconnect the node lists it until it times out; never connect to ourselves
   * @param {RTCIceServer[]} opts.iceServers
   * @param {MediaStream} opts.localStream
   * @param {{send: (msg: import('./protocol.js').ClientMessage) => void, onTrack: Function, onState: Function, onClose: Function,
   *   onUnreachable?: Function, onTrouble?: Function, beforeRestart?: () => Promise<any>,
   *   pcConfig?: () => object, attachSender?: Function, attachReceiver?: Function,
   *   onRemoteDescription?: Function}} opts.hooks
   */
  constructor({ mySession, isFormer = () => false, iceServers, localStream, hooks }) {
    this.mySession = mySession;
    this.isFormer = isFormer;
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
      if (p.session === this.mySession || this.isFormer(p.session)) continue;
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
    if (msg.from_session === this.mySession || this.isFormer(msg.from_session)) return;
    const peer = this.ensure(msg.from, msg.from_session);
    try {
      await peer.handle(msg.kind, msg.data);
    } catch (err) {
      console.warn(`signal ${msg.kind} from ${msg.from} failed`, err);
    }
  }

  /** Tell one peer we are going (its audio now comes another way), then close it. */
  bye(session) {
    const peer = this.peers.get(session);
    if (!peer) return;
    peer.signal('bye', {});
    this.drop(session);
  }

  drop(session) {
    const peer = this.peers.get(session);
    if (!peer) return;
    this.peers.delete(session);
    peer.close();
    this.hooks.onClose(peer);
  }

  /** Send `track` from now on; a connection that had none to send (a stage listener's) gets it added. */
  replaceTrack(track) {
    for (const peer of this.peers.values()) {
      if (peer.trackAdded) peer.replaceTrack(track);
      else if (track && peer.pc.remoteDescription) peer.addLocalTrack();
    }
  }

  /** New ICE servers (fresh TURN credentials): for new connections and every later gathering. */
  setIceServers(iceServers) {
    this.iceServers = iceServers;
    for (const peer of this.peers.values()) peer.setIceServers(iceServers);
  }

  /** The network changed (a new address, back online): new candidates for every peer. */
  restartAll(reason) {
    for (const peer of this.peers.values()) {
      // A connection still in its first exchange gathers on the new network anyway.
      if (peer.pc.remoteDescription) peer.requestRestart(reason);
    }
  }

  /**
   * The socket was down and is back with the same session: what we signalled meanwhile was
   * dropped. An offer still waiting for its answer is sent again; a connection that is not
   * up restarts ICE (its offer may be among what was dropped).
   */
  resumeSignaling() {
    for (const peer of this.peers.values()) {
      const pc = peer.pc;
      if (pc.signalingState === 'have-local-offer' && pc.localDescription) peer.signal('offer', { description: pc.localDescription.toJSON() });
      else if (!peer.connected && pc.remoteDescription) peer.requestRestart('resumed');
    }
  }

  /** Tell every peer we are going, then close every connection. */
  byeAll() {
    for (const peer of this.peers.values()) peer.signal('bye', {});
  }

  closeAll() {
    for (const session of [...this.peers.keys()]) this.drop(session);
  }
}

/**
 * Which path the media of one connection takes, from getStats(): the transport's selected
 * candidate pair (or, without one, a nominated/selected pair that succeeded). Resolves to
 * null while there is none, else `{path: "direct"|"relayed", localCandidateType,
 * remoteCandidateType, protocol}`: relayed when either end is a `relay` candidate (TURN);
 * `protocol` is how we reach our TURN server (the local candidate's `relayProtocol`: udp,
 * tcp or tls) when our end is relayed, else the pair's transport protocol.
 */
export async function selectedPath(pc) {
  let stats;
  try {
    stats = await pc.getStats();
  } catch {
    return null;
  }
  /** @type {any} */
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId && stats.get(s.selectedCandidatePairId)) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.selected || s.nominated) && (!pair || s.selected)) pair = s;
    });
  }
  if (!pair || pair.state !== 'succeeded') return null;
  const local = stats.get(pair.localCandidateId) || {};
  const remote = stats.get(pair.remoteCandidateId) || {};
  const relayed = local.candidateType === 'relay' || remote.candidateType === 'relay';
  return {
    path: relayed ? 'relayed' : 'direct',
    localCandidateType: local.candidateType || null,
    remoteCandidateType: remote.candidateType || null,
    protocol: (local.candidateType === 'relay' && local.relayProtocol) || local.protocol || null,
  };
}
