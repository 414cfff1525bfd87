//! The encoded-transform worker (a module Worker): holds the call's SFrame keys and encrypts
//! every outgoing Opus frame / decrypts every incoming one, so the node forwards ciphertext only.
//! Streams arrive by RTCRtpScriptTransform (`rtctransform` event, options {side, id}) or, on the
//! legacy path, as {op: 'stream', side, id, readable, writable} from transform.js. Key ops from
//! the page: send_key, recv_key, forget, allow_plaintext, encrypt, stats, try_decrypt.

import { RATCHET_WINDOW, decryptFrame, deriveKeySalt, encryptFrame, indexOf, kidOf, parseHeader, ratchet, tagOf } from './sframe.js';

const KEEP_OLD_MS = 2000; // an older key of a sender lives this long once a newer one worked
const KEYS_PER_TAG = 4;
const MAX_TAGS = 1024;
const MAX_SEND_KEYS = 64;
const MAX_BY_KID = 256;

const stats = { encrypted: 0, decrypted: 0, failed: 0, plaintext: 0, dropped_no_key: 0 };
/** kid → {decrypted, failed}, for kids that had a key here. */
const byKid = new Map();
let encryptOn = true;
let allowPlaintext = false;
/** The current send key {kid, ctx, ctr}; null drops outgoing frames while encrypting. */
let send = null;
/** kid → send state, so going back to a key resumes its CTR and never reuses a nonce. */
const sendStates = new Map();
/** tag → {keys: Map<index, {base, ctx, expires}>, newest, candidates: Map<index, {base, ctx}>}, least recently used first. */
const tags = new Map();

function kidStats(kid) {
  let s = byKid.get(kid);
  if (!s) {
    s = { decrypted: 0, failed: 0 };
    byKid.set(kid, s);
    if (byKid.size > MAX_BY_KID) byKid.delete(byKid.keys().next().value);
  }
  return s;
}

function tagState(tag, create) {
  let t = tags.get(tag);
  if (t) {
    tags.delete(tag); // re-insert: most recently used last
    tags.set(tag, t);
  } else if (create) {
    t = { keys: new Map(), newest: -1, candidates: new Map() };
    tags.set(tag, t);
    if (tags.size > MAX_TAGS) tags.delete(tags.keys().next().value);
  }
  return t;
}

/** Hold `ctx` (of base key `base`) for kid (tag, index), within the per-tag bound. */
function addKey(t, index, base, ctx) {
  t.keys.set(index, { base, ctx, expires: Infinity });
  if (index >= t.newest) {
    t.newest = index;
    t.candidates.clear(); // ratchets of a replaced newest key are stale
  }
  while (t.keys.size > KEYS_PER_TAG) t.keys.delete(Math.min(...t.keys.keys()));
}

/** A frame under `index` decrypted: older keys of the tag now expire in KEEP_OLD_MS. */
function worked(t, index) {
  const now = Date.now();
  for (const [i, k] of t.keys) {
    if (i < index && k.expires === Infinity) k.expires = now + KEEP_OLD_MS;
    if (k.expires < now) t.keys.delete(i);
  }
}

/** The key of `index` derived by ratcheting the tag's newest key forward (cached), or null. */
async function candidate(t, tag, index) {
  const steps = index - t.newest;
  if (steps < 1 || steps > RATCHET_WINDOW || !t.keys.has(t.newest)) return null;
  let c = t.candidates.get(index);
  if (!c) {
    let base = t.keys.get(t.newest).base;
    for (let i = 0; i < steps; i++) base = await ratchet(base);
    c = { base, ctx: await deriveKeySalt(base, kidOf(tag, index)) };
    t.candidates.set(index, c);
  }
  return c;
}

/**
 * Decrypt `data` with the keys held (ratcheting forward when the sender did).
 * → {ok: true, kid, plain} | {ok: false, kid, error, known}: `known` false when there was no
 * key to try (malformed or unknown KID), which plaintext mode may pass through.
 */
async function open(data, { commit }) {
  let kid;
  try {
    kid = parseHeader(data).kid;
  } catch (err) {
    return { ok: false, kid: null, known: false, error: `malformed: ${err.message}` };
  }
  const tag = tagOf(kid);
  const index = indexOf(kid);
  const t = tagState(tag, false);
  if (!t) return { ok: false, kid, known: false, error: 'unknown sender tag' };
  const held = t.keys.get(index);
  if (held && held.expires < Date.now()) t.keys.delete(index);
  else if (held) {
    try {
      const plain = await decryptFrame(held.ctx, data);
      if (commit) worked(t, index);
      return { ok: true, kid, plain };
    } catch {
      return { ok: false, kid, known: true, error: 'does not authenticate' };
    }
  }
  const c = await candidate(t, tag, index);
  if (!c) return { ok: false, kid, known: false, error: 'no key for this KID' };
  try {
    const plain = await decryptFrame(c.ctx, data);
    if (commit && tags.get(tag) === t) {
      addKey(t, index, c.base, c.ctx);
      worked(t, index);
    }
    return { ok: true, kid, plain };
  } catch {
    return { ok: false, kid, known: false, error: 'no key for this KID (ratchet did not match)' };
  }
}

async function sendFrame(frame, controller) {
  if (!encryptOn) return controller.enqueue(frame);
  const s = send;
  if (!s) {
    stats.dropped_no_key++;
    return;
  }
  const ctr = s.ctr++;
  frame.data = (await encryptFrame(s.ctx, s.kid, ctr, new Uint8Array(frame.data))).buffer;
  stats.encrypted++;
  controller.enqueue(frame);
}

async function recvFrame(frame, controller) {
  const r = await open(new Uint8Array(frame.data), { commit: true });
  if (r.ok) {
    frame.data = r.plain.buffer;
    stats.decrypted++;
    kidStats(r.kid).decrypted++;
    controller.enqueue(frame);
  } else if (!r.known && allowPlaintext) {
    stats.plaintext++;
    controller.enqueue(frame);
  } else if (r.known) {
    stats.failed++;
    kidStats(r.kid).failed++;
  } else {
    stats.dropped_no_key++;
  }
}

/** Pipe one RTP stream's encoded frames through the transform of its side, in order. */
function attach(side, readable, writable) {
  const work = side === 'send' ? sendFrame : recvFrame;
  const transform = (frame, controller) =>
    work(frame, controller).catch(() => {
      stats.failed++; // never let a frame through unprocessed
    });
  readable
    .pipeThrough(new TransformStream({ transform }))
    .pipeTo(writable)
    .catch(() => {});
}

const ops = {
  async send_key({ kid, key }) {
    let s = sendStates.get(kid);
    if (!s) {
      s = { kid, ctx: await deriveKeySalt(key, kid), ctr: 0 };
      sendStates.set(kid, s);
      if (sendStates.size > MAX_SEND_KEYS) sendStates.delete(sendStates.keys().next().value);
    } else {
      s.ctx = await deriveKeySalt(key, kid); // same KID again: its CTR goes on
    }
    send = s;
  },
  async recv_key({ kid, key }) {
    const ctx = await deriveKeySalt(key, kid);
    addKey(tagState(tagOf(kid), true), indexOf(kid), Uint8Array.from(key), ctx);
  },
  forget({ tag }) {
    tags.delete(tag);
  },
  allow_plaintext({ on }) {
    allowPlaintext = !!on;
  },
  encrypt({ on }) {
    encryptOn = !!on;
  },
  stats() {
    const by_kid = Object.fromEntries([...byKid].map(([k, v]) => [k, { ...v }]));
    return { ...stats, by_kid, send_kid: send ? send.kid : null };
  },
  async try_decrypt({ frame }) {
    const r = await open(new Uint8Array(frame), { commit: false });
    if (!r.ok) {
      stats.failed++;
      if (r.kid !== null) kidStats(r.kid).failed++;
    }
    return { ok: r.ok, kid: r.kid, error: r.ok ? null : r.error };
  },
};

self.onrtctransform = (ev) => {
  const { readable, writable, options } = ev.transformer;
  attach(options && options.side, readable, writable);
};

let queue = Promise.resolve();
self.onmessage = (ev) => {
  const msg = ev.data || {};
  if (msg.op === 'stream') return attach(msg.side, msg.readable, msg.writable);
  const op = ops[msg.op];
  // Ops run one at a time, in the order sent (a send_key never overtakes an earlier one).
  queue = queue.then(async () => {
    try {
      if (!op) throw new Error(`unknown op ${msg.op}`);
      const result = await op(msg);
      if (msg.reply !== undefined) self.postMessage({ op: msg.op, reply: msg.reply, ...result });
    } catch (err) {
      self.postMessage({ op: 'error', of: msg.op, reply: msg.reply, error: String((err && err.message) || err) });
    }
  });
};
