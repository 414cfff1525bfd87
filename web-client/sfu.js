//! The connection of this tab to the node's audio forwarding unit (SFU), used by call.js
//! once the call is in "sfu" mode: one RTCPeerConnection with the microphone on a sendonly
//! audio m-line and SLOTS recvonly ones, the "slots" the loudest speakers arrive on
//! (`sfu_slots` says who each carries; the node keeps a slot one continuous stream across
//! a change of speaker, so nothing is renegotiated).
//!
//! The node is ICE-lite: its answer carries its one host candidate and it learns our address
//! from our STUN checks, so nothing is trickled. An ICE-lite node cannot take part in an
//! ICE restart, so a connection that fails, stays "disconnected", never connects, or that the
//! node drops (`sfu_lost`) is replaced by a new one made from a new offer, with backoff.

import { preferOpus } from './mesh.js';

/** Recvonly m-lines offered: how many speakers can be heard through the node at once. */
export const SLOTS = 3;
/** A connection not connected by then is replaced. */
const ATTEMPT_TIMEOUT_MS = 10_000;
/** An offer with no reply by then is taken as lost (its reply, if late, is not used). */
const ANSWER_TIMEOUT_MS = 15_000;
/** A "disconnected" that lasts this long is a lost connection. */
const DISCONNECTED_GRACE_MS = 2500;
/** Waits before each new connection after a failure in a row: the first is at once. */
const BACKOFF_MS = [0, 1000, 2000, 4000, 8000, 15_000];
/** Failed connections in a row before the page says the node's audio server is out of reach. */
export const FAILURES_BEFORE_STUCK = 2;
/** Connected this long: the failures before are forgiven. */
const STABLE_MS = 10_000;
/** How long a new connection waits for fresh TURN credentials before going ahead. */
const ICE_REFRESH_WAIT_MS = 3000;

function debug(...args) {
  try {
    if (localStorage.getItem('voicechat.debug')) console.debug('[sfu]', (performance.now() / 1000).toFixed(2), ...args);
  } catch {
    /* storage unavailable */
  }
}

export class SfuConnection {
  /**
   * @param {object} opts
   * @param {RTCIceServer[]} opts.iceServers the call's (TURN, for a browser that needs it)
   * @param {MediaStream} opts.localStream the microphone
   * @param {{send: (msg: object) => void, onTrack: (slot: number, stream: MediaStream) => void,
   *   onState: (state: string) => void, onSlots: () => void, onGiveUp: (message: string) => void,
   *   onStuck?: () => void, beforeConnect?: () => Promise, pcConfig?: () => object,
   *   attachSender?: (s: RTCRtpSender) => void, attachReceiver?: (r: RTCRtpReceiver) => void}} opts.hooks
   */
  constructor({ iceServers, localStream, hooks }) {
    this.iceServers = iceServers;
    this.localStream = localStream;
    this.hooks = hooks;
    this.pc = null;
    this.sender = null;
    this.receivers = []; // slot i → the RTCRtpTransceiver of the i-th recvonly m-line
    /** slot i → `{user, session}` of whom it carries, or null. */
    this.slots = new Array(SLOTS).fill(null);
    /** new | connecting | connected | disconnected | failed (given up) | closed */
    this.state = 'new';
    this.connectedAt = 0;
    this.connections = 0; // for the diagnostics hook: how many were made
    this.failures = 0;
    this.sent = 0; // offers sent on this socket, and replies had: the latest offer's reply
    this.replied = 0; //   is the one that makes them equal
    this.timers = { retry: null, attempt: null, answer: null, grace: null, stable: null };
  }

  setState(state) {
    if (this.state === state) return;
    debug('state', state);
    this.state = state;
    this.hooks.onState(state);
  }

  clearTimer(name) {
    clearTimeout(this.timers[name]);
    this.timers[name] = null;
  }

  /** Make a new connection now (dropping the one there is). */
  async connect() {
    if (this.state === 'closed' || this.state === 'failed') return;
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    this.dropPc();
    this.setState('connecting');
    const myTurn = ++this.connections;
    if (this.hooks.beforeConnect) {
      await Promise.race([this.hooks.beforeConnect().catch(() => {}), new Promise((r) => setTimeout(r, ICE_REFRESH_WAIT_MS))]);
    }
    if (this.state !== 'connecting' || this.connections !== myTurn) return;
    const extra = this.hooks.pcConfig ? this.hooks.pcConfig() : {};
    const pc = new RTCPeerConnection({ ...extra, iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    const track = this.localStream ? this.localStream.getAudioTracks()[0] || null : null;
    const mic = pc.addTransceiver(track || 'audio', { direction: 'sendonly', streams: this.localStream ? [this.localStream] : [] });
    preferOpus(mic);
    this.sender = mic.sender;
    if (this.hooks.attachSender) this.hooks.attachSender(mic.sender);
    this.receivers = [];
    for (let i = 0; i < SLOTS; i++) {
      const t = pc.addTransceiver('audio', { direction: 'recvonly' });
      preferOpus(t);
      if (this.hooks.attachReceiver) this.hooks.attachReceiver(t.receiver);
      this.receivers.push(t);
    }
    pc.ontrack = ({ transceiver, track: remote }) => {
      const slot = this.receivers.indexOf(transceiver);
      if (slot >= 0) this.hooks.onTrack(slot, new MediaStream([remote]));
    };
    pc.onconnectionstatechange = () => this.stateChanged(pc);
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (err) {
      console.warn('SFU offer failed', err);
      if (pc === this.pc) this.retry('offer failed');
      return;
    }
    if (pc !== this.pc) return;
    // The slots of the old connection mean nothing now; the node tells the new ones.
    this.slots = new Array(SLOTS).fill(null);
    this.hooks.onSlots();
    this.sent += 1;
    this.timers.answer = setTimeout(() => {
      this.replied = this.sent; // a reply that never came must not hold up the next ones
      this.retry('no answer');
    }, ANSWER_TIMEOUT_MS);
    debug('offer', this.sent);
    this.hooks.send({ type: 'sfu_offer', sdp: pc.localDescription.sdp });
  }

  /** Whether connections keep failing (the network may block the node's audio port). */
  get stuck() {
    return this.state !== 'connected' && this.failures >= FAILURES_BEFORE_STUCK;
  }

  /** A reply to an offer: true when it is the one to the latest offer. */
  takeReply() {
    this.replied = Math.min(this.sent, this.replied + 1);
    return this.replied === this.sent && !!this.pc && this.pc.signalingState === 'have-local-offer';
  }

  /** `sfu_answer`: the node's answer SDP. */
  /** @param {string} sdp */
  async answer(sdp) {
    if (!this.takeReply()) return;
    this.clearTimer('answer');
    const pc = this.pc;
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (err) {
      console.warn('SFU answer refused', err);
      if (pc === this.pc) this.retry('bad answer');
      return;
    }
    this.timers.attempt = setTimeout(() => this.retry('not connected in time'), ATTEMPT_TIMEOUT_MS);
  }

  /** An `error` in reply to `sfu_offer`. */
  /** @param {import('./protocol.js').ServerMessages['error']} msg */
  refused(msg) {
    if (!this.takeReply()) return;
    this.clearTimer('answer');
    debug('refused', msg.code, msg.message);
    if (msg.code === 'no_sfu' || msg.code === 'bad_offer') {
      this.dropPc();
      this.setState('failed');
      this.hooks.onGiveUp(`The node's audio server refused this call: ${msg.message || msg.code}`);
      return;
    }
    // not_in_room / not_on_sfu (a re-join or a mode change under way), sfu_unavailable (full)
    this.retry(msg.code);
  }

  /** `sfu_lost`: the node dropped our connection (its ICE timed out). */
  lost() {
    if (this.replied !== this.sent) return; // a newer offer is on its way: that is the reconnect
    this.retry('lost by the node');
  }

  stateChanged(pc) {
    if (pc !== this.pc) return;
    const s = pc.connectionState;
    this.clearTimer('grace');
    if (s === 'connected') {
      this.clearTimer('attempt');
      this.connectedAt = performance.now();
      this.clearTimer('stable');
      this.timers.stable = setTimeout(() => {
        this.failures = 0;
      }, STABLE_MS);
      this.setState('connected');
    } else if (s === 'failed') {
      this.retry('failed');
    } else if (s === 'disconnected') {
      this.setState('disconnected');
      this.timers.grace = setTimeout(() => {
        if (pc === this.pc && pc.connectionState === 'disconnected') this.retry('disconnected');
      }, DISCONNECTED_GRACE_MS);
    }
  }

  /** This connection is done for: a new one, after the backoff of the failures in a row. */
  retry(reason) {
    if (this.state === 'closed' || this.state === 'failed' || this.timers.retry) return;
    const wait = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    if (this.failures === FAILURES_BEFORE_STUCK && this.hooks.onStuck) this.hooks.onStuck();
    debug('retry', reason, 'in', wait);
    for (const name of ['attempt', 'answer', 'grace', 'stable']) this.clearTimer(name);
    this.dropPc();
    this.setState('connecting');
    this.timers.retry = setTimeout(() => {
      this.timers.retry = null;
      this.connect();
    }, wait);
  }

  /** `sfu_slots`: who each slot carries now. */
  /** @param {import('./protocol.js').ServerMessages['sfu_slots']['slots']} list */
  setSlots(list) {
    const slots = new Array(SLOTS).fill(null);
    (Array.isArray(list) ? list : []).slice(0, SLOTS).forEach((s, i) => {
      if (s && typeof s.user === 'string' && typeof s.session === 'string') slots[i] = { user: s.user, session: s.session };
    });
    this.slots = slots;
    this.hooks.onSlots();
  }

  /** Per slot, the audioLevel (0..1) of its inbound-rtp now (0 while there is none). */
  async slotLevels() {
    const levels = new Array(SLOTS).fill(0);
    const pc = this.pc;
    if (!pc) return levels;
    let stats;
    try {
      stats = await pc.getStats();
    } catch {
      return levels;
    }
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'audio' || typeof s.audioLevel !== 'number') return;
      const slot = this.receivers.findIndex((t) => (s.mid != null && t.mid === s.mid) || (t.receiver.track && t.receiver.track.id === s.trackIdentifier));
      if (slot >= 0) levels[slot] = s.audioLevel;
    });
    return levels;
  }

  replaceTrack(track) {
    if (this.sender) this.sender.replaceTrack(track).catch((err) => console.warn('SFU replaceTrack failed', err));
  }

  setIceServers(iceServers) {
    this.iceServers = iceServers;
    if (!this.pc) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn('could not apply new ICE servers to the SFU connection', err);
    }
  }

  dropPc() {
    if (!this.pc) return;
    const pc = this.pc;
    this.pc = null;
    this.sender = null;
    this.receivers = [];
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    pc.close();
  }

  close() {
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    this.dropPc();
    this.slots = new Array(SLOTS).fill(null);
    this.setState('closed');
  }
}
