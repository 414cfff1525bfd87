//! The keys of one call, on the main thread: this session's ECDH key pair, this sender's
//! SFrame key (a random one when someone who had it leaves, a ratchet step when someone
//! joins), the keys of the others, and the safety code. The node only relays the messages
//! (`e2ee_hello`, `e2ee_keys` → `e2ee_key`); it never holds a key. Wire format, rotation
//! rules and test vectors: protocol-spec/SPEC.md, "End-to-end encryption of call audio".
//! The frames themselves are encrypted in e2ee/worker.js, attached by e2ee/transform.js.

import { b64uDecode, b64uEncode, generateSessionKeys, kidOf, nextIndex, randomKey, randomTag, ratchet, safetyCode, tagOf, unwrapKey, wrapKey } from './sframe.js';
import { Transforms, pcConfigExtras, supported } from './transform.js';

/** Key changes within this window go out as one (a burst of joins or leaves). */
export const DEBOUNCE_MS = 300;
/** A new random key is used this long after it went out, so receivers have it first. */
const SWITCH_DELAY_MS = 250;
/** Recipients per `e2ee_keys` message (the node takes at most 512, in 64 KiB). */
const KEYS_PER_MESSAGE = 200;
/** A peer gone from the list is remembered this long, in case the list only missed it. */
const GONE_KEPT_MS = 60_000;
/** How often the page checks that the RTP packets it sends and gets went through the worker. */
export const AUDIT_MS = 3000;
/** Packets in one check below which it says nothing (silence, a call that just started). */
const AUDIT_MIN_PACKETS = 40;

export class CallKeys {
  /**
   * @param {{send: (msg: import('../protocol.js').ClientMessage) => void, changed: () => void, sends: () => boolean,
   *   isSender?: (session: string) => boolean|undefined,
   *   peerConnections?: () => Iterable<RTCPeerConnection>}} hooks
   *   send: a socket message; changed: the status or the code changed; sends: whether this
   *   session may send audio (everyone in a conversation, the stage in a stage room);
   *   isSender: whether the call's list shows that session as one who may send;
   *   peerConnections: the call's connections, for the check that packets went through
   *   the worker
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.mode = supported();
    this.wanted = true; // the node wants it
    this.enabled = false; // the node wants it and this browser can
    this.transforms = null;
    this.me = null; // {privateKey, publicKey, pub}
    this.myId = null; // this session's id, as the node names it
    this.cert = null; // the DTLS certificate of this session's mesh connections
    this.fp = '';
    this.tag = 0;
    this.index = -1; // index of the send key (-1: none yet)
    this.base = null; // its base key
    this.sentOnce = false; // the current key went to someone (a newcomer then gets a ratchet step)
    this.peers = new Map(); // session → {user, pub, pubText, fp, sdpFp, sends, helloSent, sentKid, keyKid, plaintext}
    this.gone = new Map(); // session → its entry, for GONE_KEPT_MS after it left the list
    this.newcomers = new Set();
    this.lost = false; // someone who had our key left
    this.timer = null;
    this.code = null;
    this.codeSeq = 0;
    this.failedUnwraps = 0;
    this.ready = null;
    this.bypassed = null; // 'send' | 'recv' when packets flow that the worker never saw
    this.audit = null; // the last check's counts
    this.auditTimer = null;
  }

  /**
   * A call starts (or starts over under a new socket session): fresh key pair, fresh tag.
   * `e2ee`: what the node said with the ICE configuration.
   */
  start(e2ee) {
    this.stop();
    this.wanted = !!e2ee;
    this.enabled = this.wanted && !!this.mode;
    if (!this.mode) return (this.ready = Promise.resolve());
    this.transforms = new Transforms(new URL('./worker.js', import.meta.url));
    this.attached = new WeakSet(); // senders and receivers given to this worker
    this.transforms.post({ op: 'encrypt', on: this.enabled });
    this.transforms.post({ op: 'allow_plaintext', on: !this.enabled });
    this.ready = Promise.all([
      generateSessionKeys().then((k) => (this.me = k)),
      RTCPeerConnection.generateCertificate(/** @type {EcKeyGenParams} */ ({ name: 'ECDSA', namedCurve: 'P-256' })).then((c) => {
        this.cert = c;
        const f = c.getFingerprints ? c.getFingerprints()[0] : null;
        this.fp = f ? `${f.algorithm} ${f.value.toUpperCase()}` : '';
      }),
    ]).catch((err) => {
      console.warn('e2ee: no keys', err);
      this.enabled = false;
    });
    return this.ready;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    clearInterval(this.auditTimer);
    this.auditTimer = null;
    this.audit = null;
    this.bypassed = null;
    if (this.transforms) this.transforms.close();
    this.transforms = null;
    this.me = null;
    this.cert = null;
    this.index = -1;
    this.base = null;
    this.sentOnce = false;
    this.peers.clear();
    this.gone.clear();
    this.newcomers.clear();
    this.lost = false;
    this.code = null;
    this.myId = null;
  }

  /** RTCPeerConnection configuration for this call's connections (mesh: its certificate). */
  pcConfig({ mesh = false } = {}) {
    const extra = this.transforms ? pcConfigExtras(this.transforms.mode) : {};
    return mesh && this.cert ? { ...extra, certificates: [this.cert] } : extra;
  }

  attachSender(sender) {
    if (!this.transforms) return;
    if (this.attached.has(sender)) return;
    this.attached.add(sender);
    this.transforms.attachSender(sender);
  }

  attachReceiver(receiver) {
    if (!this.transforms) return;
    if (this.attached.has(receiver)) return;
    this.attached.add(receiver);
    this.transforms.attachReceiver(receiver);
  }

  helloData() {
    return { v: 1, pub: b64uEncode(this.me.pub), fp: this.fp, e2ee: this.enabled, sends: this.hooks.sends() };
  }

  /** We are in the call (the node said `joined`) as session `myId`. */
  async joined(myId) {
    await this.ready;
    if (!this.me) return;
    this.myId = myId;
    this.roleChanged(true);
    clearInterval(this.auditTimer);
    if (this.enabled && this.hooks.peerConnections) this.auditTimer = setInterval(() => this.check(), AUDIT_MS);
  }

  /**
   * Whether every audio packet went through the worker: a transform the browser did not
   * engage would send our audio as it is, or hand ciphertext to the decoder, while the page
   * said "end to end". Compares getStats' packet counts with the worker's frame counts over
   * the last AUDIT_MS; if packets flow that the worker never saw, the page says so.
   */
  async check() {
    if (!this.transforms) return;
    let sent = 0;
    let received = 0;
    for (const pc of this.hooks.peerConnections()) {
      const stats = await pc.getStats().catch(() => null);
      if (stats) {
        stats.forEach((s) => {
          if (s.kind !== 'audio') return;
          if (s.type === 'outbound-rtp') sent += s.packetsSent || 0;
          if (s.type === 'inbound-rtp') received += s.packetsReceived || 0;
        });
      }
    }
    const w = await this.transforms.stats().catch(() => null);
    if (!w || !this.transforms) return;
    const now = { sent, received, out: w.encrypted + w.dropped_no_key, in: w.decrypted + w.failed + w.plaintext + w.dropped_no_key };
    const before = this.audit;
    this.audit = now;
    if (!before || now.sent < before.sent || now.received < before.received) return; // connections were replaced
    const d = (k) => now[k] - before[k];
    let bypassed = null;
    if (d('sent') > AUDIT_MIN_PACKETS && d('out') < d('sent') / 2) bypassed = 'send';
    else if (d('received') > AUDIT_MIN_PACKETS && d('in') < d('received') / 2) bypassed = 'recv';
    if (bypassed !== this.bypassed) {
      this.bypassed = bypassed;
      if (bypassed) console.warn(`e2ee: ${bypassed} packets are not going through the frame worker`);
      this.hooks.changed();
    }
  }

  /**
   * Our role may have changed (`initial`: just joined): a new sender makes a key and asks
   * everyone for their public keys; a conversation's newcomer asks the senders.
   */
  roleChanged(initial = false) {
    if (!this.me || !this.myId) return;
    const sends = this.hooks.sends();
    if (sends && this.index < 0) {
      this.newKey(true);
      this.hooks.send({ type: 'e2ee_hello', data: this.helloData(), everyone: !initial });
    } else if (initial) {
      this.hooks.send({ type: 'e2ee_hello', data: this.helloData() });
    }
    if (!sends && this.index >= 0) {
      // Back in the audience: this key is done with; a next turn on stage gets a new one.
      // (The worker keeps the old key for a microphone that is closed anyway.)
      this.index = -1;
      this.base = null;
    }
    this.recompute();
  }

  /** A fresh random key (or the first). `now`: use it at once (nobody has a key of ours yet). */
  newKey(now) {
    let index = this.index < 0 ? 0 : nextIndex(this.index, { fresh: true });
    if (index === null || this.index < 0) {
      this.tag = randomTag();
      index = 0;
    }
    this.index = index;
    this.base = randomKey();
    this.sentOnce = false;
    const use = { op: 'send_key', kid: kidOf(this.tag, this.index), key: this.base };
    if (now) this.transforms.post(use);
    return use;
  }

  peer(session, user) {
    let p = this.peers.get(session);
    if (!p) {
      p = { user, pub: null, pubText: '', fp: '', sdpFp: '', sends: false, helloSent: false, sentKid: null, keyKid: null, plaintext: false };
      this.peers.set(session, p);
    }
    return p;
  }

  /** Takes a peer's public key from a hello or a key message; false if it is not one. */
  learn(p, data) {
    if (!data || typeof data.pub !== 'string') return false;
    if (data.pub !== p.pubText) {
      try {
        p.pub = b64uDecode(data.pub);
      } catch {
        return false;
      }
      p.pubText = data.pub;
      p.sentKid = null; // a new key pair: nothing we sent is any use to it
    }
    p.fp = typeof data.fp === 'string' ? data.fp : '';
    return p.pub.length === 65;
  }

  /** `e2ee_hello` from someone in the call. */
  /** @param {import('../protocol.js').ServerMessages['e2ee_hello']} m */
  onHello(m) {
    if (!this.me || !m.data) return;
    const p = this.peer(m.from_session, m.from);
    if (!this.learn(p, m.data)) return;
    p.plaintext = m.data.e2ee === false;
    p.sends = !!m.data.sends;
    if (m.data.again) p.sentKid = null; // it lost our key: it gets it again
    this.transforms.post({ op: 'allow_plaintext', on: !this.enabled || this.anyPlaintext() });
    // A sender needs our public key to give us its key; we reply once.
    if (p.sends && !p.helloSent) {
      p.helloSent = true;
      this.hooks.send({ type: 'e2ee_hello', data: this.helloData(), to: m.from, to_session: m.from_session });
    }
    if (this.index >= 0 && p.sentKid === null) this.queue(m.from_session);
    this.recompute();
  }

  /** `e2ee_key` from a sender: its key, wrapped for us. */
  /** @param {import('../protocol.js').ServerMessages['e2ee_key']} m */
  async onKey(m) {
    if (!this.me || !m.common || !m.data) return;
    const p = this.peer(m.from_session, m.from);
    if (!this.learn(p, m.common)) return;
    p.sends = true;
    p.helloSent = true; // it has our public key, or it could not have wrapped for us
    const kid = m.data.kid;
    try {
      if (!Number.isSafeInteger(kid) || kid < 0) throw new Error('bad key id');
      const key = await unwrapKey(this.me, p.pub, kid, b64uDecode(String(m.data.wrapped)));
      if (!this.transforms) return;
      this.transforms.post({ op: 'recv_key', kid, key });
      p.keyKid = kid;
    } catch (err) {
      this.failedUnwraps += 1;
      console.warn(`e2ee: a key from ${m.from} did not unwrap`, err);
    }
    if (this.index >= 0 && p.sentKid === null) this.queue(m.from_session);
    this.recompute();
  }

  /** The participant list changed: whoever left loses our next key. */
  syncParticipants(list) {
    if (!this.me) return;
    const here = new Set(list.map((x) => x.session));
    const now = Date.now();
    // Someone back in the list (a list rebuilt from a snapshot can miss them for a moment):
    // their entry comes back, we send our key again and ask for theirs.
    for (const x of list) {
      const g = this.gone.get(x.session);
      if (!g) continue;
      this.gone.delete(x.session);
      this.peers.set(x.session, g);
      g.keyKid = null;
      g.sentKid = null;
      this.hooks.send({ type: 'e2ee_hello', data: { ...this.helloData(), again: true }, to: g.user, to_session: x.session });
      if (this.index >= 0) this.queue(x.session);
    }
    for (const [session, g] of this.gone) if (now - g.goneAt > GONE_KEPT_MS) this.gone.delete(session);
    for (const [session, p] of this.peers) {
      if (here.has(session)) continue;
      this.peers.delete(session);
      this.newcomers.delete(session);
      p.goneAt = now;
      this.gone.set(session, p);
      if (p.keyKid !== null) this.transforms.post({ op: 'forget', tag: tagOf(p.keyKid) });
      if (p.sentKid !== null && this.index >= 0) {
        this.lost = true;
        this.schedule();
      }
    }
    this.recompute();
  }

  /** A mesh connection's remote description: the DTLS fingerprint the connection checks. */
  meshFingerprint(session, sdp) {
    const p = this.peers.get(session);
    const m = /^a=fingerprint:(\S+) (\S+)/m.exec(sdp || '');
    if (!p || !m) return;
    const fp = `${m[1].toLowerCase()} ${m[2].toUpperCase()}`;
    if (fp !== p.sdpFp) {
      p.sdpFp = fp;
      this.recompute();
    }
  }

  queue(session) {
    this.newcomers.add(session);
    this.schedule();
  }

  schedule() {
    if (!this.timer) this.timer = setTimeout(() => this.flush(), DEBOUNCE_MS);
  }

  /** Sends the key changes collected in the last DEBOUNCE_MS. */
  async flush() {
    this.timer = null;
    if (!this.me || this.index < 0) return;
    const oldKid = kidOf(this.tag, this.index);
    let use = null;
    if (this.lost) {
      use = this.newKey(false); // they can't hear what follows
    } else if (this.newcomers.size && this.sentOnce) {
      // They can't hear what came before: a ratchet step, which the others take themselves.
      const next = nextIndex(this.index, { fresh: false });
      if (next === null) use = this.newKey(false);
      else {
        this.index = next;
        this.base = await ratchet(this.base);
        use = { op: 'send_key', kid: kidOf(this.tag, this.index), key: this.base };
        this.transforms.post(use);
      }
    }
    const ratcheted = use && !this.lost;
    this.lost = false;
    const kid = kidOf(this.tag, this.index);
    const base = this.base;
    const to = [];
    for (const [session, p] of this.peers) {
      if (!p.pub || p.sentKid === kid) continue;
      // After a ratchet step whoever had the previous key derives this one.
      if (ratcheted && p.sentKid === oldKid && !this.newcomers.has(session)) {
        p.sentKid = kid;
        continue;
      }
      to.push([session, p]);
    }
    this.newcomers.clear();
    const keys = [];
    for (const [session, p] of to) {
      try {
        const wrapped = await wrapKey(this.me, p.pub, kid, base);
        keys.push({ to: p.user, to_session: session, data: { kid, wrapped: b64uEncode(wrapped) } });
        p.sentKid = kid;
      } catch (err) {
        console.warn(`e2ee: cannot wrap for ${p.user}`, err);
      }
    }
    if (kid !== kidOf(this.tag, this.index)) return; // a newer change overtook this one
    const common = { v: 1, pub: b64uEncode(this.me.pub), fp: this.fp };
    for (let i = 0; i < keys.length; i += KEYS_PER_MESSAGE) {
      this.hooks.send({ type: 'e2ee_keys', common, keys: keys.slice(i, i + KEYS_PER_MESSAGE) });
    }
    if (keys.length) this.sentOnce = true;
    if (use && use.kid === kid && !ratcheted) {
      setTimeout(() => {
        if (this.transforms && kidOf(this.tag, this.index) === kid) this.transforms.post(use);
      }, SWITCH_DELAY_MS);
    }
    this.recompute();
  }

  anyPlaintext() {
    for (const p of this.peers.values()) if (p.plaintext) return true;
    return false;
  }

  /** Senders whose keys we hold, and we if we send: the people the safety code is about. */
  codeEntries() {
    const out = [];
    if (this.index >= 0) out.push({ id: this.myId, pub: this.me.pub, fp: this.fp });
    for (const [session, p] of this.peers) {
      const listed = this.hooks.isSender ? this.hooks.isSender(session) : undefined;
      if ((listed === undefined ? p.sends : listed) && p.pub) out.push({ id: session, pub: p.pub, fp: p.sdpFp || p.fp });
    }
    return out;
  }

  async recompute() {
    const seq = ++this.codeSeq;
    const entries = this.me ? this.codeEntries() : [];
    const code = entries.length >= 2 ? await safetyCode(entries) : null;
    if (seq !== this.codeSeq) return;
    if (code !== this.code) this.code = code;
    this.hooks.changed();
  }

  /** What the page says: {on, code, why}. */
  status() {
    if (!this.mode) return { on: false, code: null, why: 'this browser cannot encrypt calls end to end' };
    if (!this.enabled) return { on: false, code: null, why: 'this node turned end-to-end encryption off' };
    const plain = [...this.peers.values()].find((p) => p.plaintext);
    if (plain) return { on: false, code: null, why: `${plain.user} sends audio that is not encrypted end to end` };
    if (this.bypassed === 'send') return { on: false, code: null, why: 'this browser sends audio its encryption never saw' };
    if (this.bypassed === 'recv') return { on: false, code: null, why: 'this browser gets audio its decryption never saw' };
    return { on: true, code: this.code, why: '' };
  }

  /** Figures for the test hook. */
  async stats() {
    if (!this.transforms) return null;
    const s = await this.transforms.stats();
    return { ...s, failed_unwraps: this.failedUnwraps, bypassed: this.bypassed, send_kid: this.index >= 0 ? kidOf(this.tag, this.index) : null, code: this.code };
  }
}
