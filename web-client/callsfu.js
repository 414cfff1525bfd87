//! The part of a call that goes through the node's audio server (mode "sfu"): the one
//! SfuConnection (sfu.js) of this tab, the slots played through their own <audio>, the
//! switch from the mesh that makes before it breaks, and how someone it carries is shown
//! (their state is that connection's, their path "node").

import { SfuConnection, SLOTS } from './sfu.js';

/**
 * On the switch to the audio server, a mesh connection to someone of this node closes once
 * our server connection is up and a slot carries them (so they are on it too), or at the
 * latest this long after ours came up (someone silent may never get a slot).
 */
const SWITCH_GRACE_MS = 5000;

export class SfuLeg {
  /** @param {import('./call.js').Call} call */
  constructor(call) {
    this.call = call;
    /** @type {SfuConnection|null} */
    this.conn = null;
    this.switchTimer = null;
  }

  /** Connect to the audio server (once), sending the call's microphone if it is open. */
  start() {
    const call = this.call;
    if (this.conn) return;
    const sfu = new SfuConnection({
      iceServers: call.iceServers,
      localStream: call.voice.sendStream,
      hooks: {
        send: (msg) => call.socket.send(msg),
        onTrack: (slot, stream) => {
          const who = this.conn === sfu ? sfu.slots[slot] : null;
          call.speakers.attach(`sfu-${slot}`, who && who.user, stream);
        },
        onState: (state) => {
          if (this.conn !== sfu) return;
          if (state === 'connected') this.settle();
          call.changed('peers');
        },
        onSlots: () => {
          if (this.conn !== sfu) return;
          sfu.slots.forEach((who, i) => call.speakers.setUser(`sfu-${i}`, who && who.user));
          this.settle();
          call.changed('peers');
        },
        onGiveUp: (message) => call.notify(message),
        onStuck: () => call.notify("Can't reach this node's audio server: the network may block it. Still trying."),
        beforeConnect: () => call.refreshIce(),
        // End to end: frames are encrypted before the node sees them, decrypted after.
        pcConfig: () => call.keys.pcConfig(),
        attachSender: (sender) => call.keys.attachSender(sender),
        attachReceiver: (receiver) => call.keys.attachReceiver(receiver),
      },
    });
    this.conn = sfu;
    sfu.connect();
  }

  stop() {
    clearTimeout(this.switchTimer);
    if (!this.conn) return;
    this.conn.close();
    this.conn = null;
    for (let i = 0; i < SLOTS; i++) this.call.speakers.detach(`sfu-${i}`);
  }

  /**
   * Make before break: a mesh connection to someone of this node closes (with a bye, so they
   * close theirs) once our connection to the audio server is up and one of its slots carries
   * them — they are on it too, so each hears the other through it — or, for someone never
   * given a slot (silent, or not among the loudest), SWITCH_GRACE_MS after ours came up.
   */
  settle() {
    clearTimeout(this.switchTimer);
    const { call, conn: sfu } = this;
    const mesh = call.mesh;
    if (call.mode !== 'sfu' || !mesh || !sfu || sfu.state !== 'connected') return;
    const carried = new Set(sfu.slots.filter(Boolean).map((s) => s.session));
    const waited = performance.now() - sfu.connectedAt;
    let waiting = false;
    for (const peer of [...mesh.peers.values()]) {
      if (!call.viaNode(peer.user)) continue;
      if (carried.has(peer.session) || waited >= SWITCH_GRACE_MS || !peer.connected) mesh.bye(peer.session);
      else waiting = true;
    }
    if (waiting) this.switchTimer = setTimeout(() => this.settle(), SWITCH_GRACE_MS - waited);
  }

  /** Whether `user`'s audio comes through the audio server in this call. */
  carries(user) {
    const call = this.call;
    return call.mode === 'sfu' && !!this.conn && !!call.mesh && call.viaNode(user);
  }

  /** The state shown for `user` when the audio server carries them (else undefined). */
  peerInfo(user) {
    if (!this.carries(user)) return undefined;
    const { state: s, stuck } = this.conn;
    const state = s === 'connected' ? 'connected' : s === 'failed' || stuck ? 'unreachable' : 'connecting';
    return { user, state, unreachable: false };
  }

  /** `{path: "node"}` for `session` of `user` when the audio server carries them, else null. */
  pathOf(session, user) {
    return this.carries(user) && this.conn.state === 'connected' && !this.call.mesh.peers.has(session) ? { path: 'node' } : null;
  }
}
