//! SFrame (RFC 9605) with cipher suite AES_128_GCM_SHA256_128, and VoiceChat's key handling
//! around it: KID layout, ratchet, ECDH P-256 key wrap, safety code. Pure WebCrypto, no DOM:
//! runs in a window, in a worker and in Node 20. Byte strings are Uint8Arrays. See
//! protocol-spec/SPEC.md, "End-to-end encryption of call audio", for the design.

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** RFC 9605 cipher suite 0x0004: AES-128-GCM, HKDF-SHA256, 16-byte tag. */
export const SUITE = 0x0004;
const NK = 16;
const NN = 12;
const NT = 16;
/** How many ratchet steps a receiver tries past the newest key it holds of a sender. */
export const RATCHET_WINDOW = 16;
/** Key indexes per sender tag: KID = tag * 65536 + index. */
export const MAX_INDEX = 0xffff;

// ---- bytes ----

/** Concatenate byte arrays into a fresh one. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `v` (number or bigint, 0 ≤ v < 2^64) as `len` big-endian bytes. */
function be(v, len) {
  let b = BigInt(v);
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--, b >>= 8n) out[i] = Number(b & 0xffn);
  return out;
}

/** A 64-bit unsigned value as bigint; numbers must be safe integers. */
function u64(v, what) {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new RangeError(`${what} is not a safe integer`);
  const b = BigInt(v);
  if (b < 0n || b >= 1n << 64n) throw new RangeError(`${what} out of range`);
  return b;
}

/** base64url without padding. */
export function b64uEncode(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Decode base64url without padding; throws on anything else. */
export function b64uDecode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new TypeError('not base64url');
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

// ---- KIDs ----

/** KID of key `index` (0..65535) of sender `tag` (a random 32-bit value per session). */
export function kidOf(tag, index) {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffffff) throw new RangeError('bad sender tag');
  if (!Number.isInteger(index) || index < 0 || index > MAX_INDEX) throw new RangeError('bad key index');
  return tag * 65536 + index;
}
export const tagOf = (kid) => Math.floor(kid / 65536);
export const indexOf = (kid) => kid % 65536;

/**
 * The index of a sender's next key: a ratchet step takes the next one; a fresh random key
 * skips past the receivers' ratchet window, so no one can ratchet an old key into its KID.
 * Null when the tag is used up (pick a new random tag, index 0).
 */
export function nextIndex(index, { fresh }) {
  const next = index + (fresh ? RATCHET_WINDOW + 1 : 1);
  return next > MAX_INDEX ? null : next;
}

/** A random 32-bit sender tag. */
export const randomTag = () => globalThis.crypto.getRandomValues(new Uint32Array(1))[0];
/** A random 16-byte base key. */
export const randomKey = () => globalThis.crypto.getRandomValues(new Uint8Array(NK));

// ---- header (RFC 9605 §4.3) ----

/** Minimal big-endian length of `v` (≥ 1 byte). */
function byteLen(v) {
  let n = 1;
  while (v >= 1n << BigInt(8 * n)) n++;
  return n;
}

/** The SFrame header of (kid, ctr): config byte X|K|Y|C, then minimal big-endian KID and CTR. */
export function encodeHeader(kid, ctr) {
  const k = u64(kid, 'kid');
  const c = u64(ctr, 'ctr');
  let config = 0;
  const tail = [];
  if (k < 8n) config |= Number(k) << 4;
  else {
    const n = byteLen(k);
    config |= 0x80 | ((n - 1) << 4);
    tail.push(be(k, n));
  }
  if (c < 8n) config |= Number(c);
  else {
    const n = byteLen(c);
    config |= 0x08 | (n - 1);
    tail.push(be(c, n));
  }
  return concat(Uint8Array.of(config), ...tail);
}

/**
 * Parse the header at the start of `bytes` → {kid, ctr, length}. Numbers unless `bigint`;
 * values past 2^53 then throw (no VoiceChat KID or CTR gets there). Throws when truncated.
 */
export function parseHeader(bytes, { bigint = false } = {}) {
  if (!bytes || bytes.length < 1) throw new RangeError('empty frame');
  const config = bytes[0];
  let at = 1;
  const field = (extended, low) => {
    if (!extended) return BigInt(low);
    const n = low + 1;
    if (bytes.length < at + n) throw new RangeError('truncated SFrame header');
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[at + i]);
    at += n;
    return v;
  };
  const kid = field(config & 0x80, (config >> 4) & 7);
  const ctr = field(config & 0x08, config & 7);
  if (bigint) return { kid, ctr, length: at };
  if (kid > BigInt(Number.MAX_SAFE_INTEGER) || ctr > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('KID or CTR past 2^53');
  return { kid: Number(kid), ctr: Number(ctr), length: at };
}

// ---- keys and frames (RFC 9605 §4.4) ----

async function hkdf(ikm, info, bytes) {
  const key = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: EMPTY, info }, key, bytes * 8));
}

const label = (text, kid) => concat(utf8.encode(text), be(u64(kid, 'kid'), 8), be(SUITE, 2));

/** RFC 9605 §4.4.2 derive_key_salt, as bytes: {key: 16 bytes (sframe_key), salt: 12 bytes}. */
export async function sframeSecret(baseKey, kid) {
  const [key, salt] = await Promise.all([
    hkdf(baseKey, label('SFrame 1.0 Secret key ', kid), NK),
    hkdf(baseKey, label('SFrame 1.0 Secret salt ', kid), NN),
  ]);
  return { key, salt };
}

/** The encryption context of `baseKey` under `kid`: {key: AES-GCM CryptoKey, salt}. */
export async function deriveKeySalt(baseKey, kid) {
  const s = await sframeSecret(baseKey, kid);
  const key = await subtle.importKey('raw', s.key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  s.key.fill(0);
  return { key, salt: s.salt };
}

/** Nonce = salt XOR CTR, the CTR left-padded to Nn bytes. */
export function nonceOf(salt, ctr) {
  const c = be(u64(ctr, 'ctr'), NN);
  return salt.map((b, i) => b ^ c[i]);
}

/** header || AES-GCM(plaintext) || tag, with AAD = header || metadata. */
export async function encryptFrame(ctx, kid, ctr, plaintext, metadata = EMPTY) {
  const header = encodeHeader(kid, ctr);
  const params = { name: 'AES-GCM', iv: nonceOf(ctx.salt, ctr), additionalData: concat(header, metadata), tagLength: NT * 8 };
  return concat(header, new Uint8Array(await subtle.encrypt(params, ctx.key, plaintext)));
}

/** The plaintext of an SFrame `frame` under `ctx`; throws if it is malformed or does not authenticate. */
export async function decryptFrame(ctx, frame, metadata = EMPTY) {
  const h = parseHeader(frame, { bigint: true });
  if (frame.length < h.length + NT) throw new RangeError('SFrame shorter than its tag');
  const header = frame.subarray(0, h.length);
  const params = { name: 'AES-GCM', iv: nonceOf(ctx.salt, h.ctr), additionalData: concat(header, metadata), tagLength: NT * 8 };
  return new Uint8Array(await subtle.decrypt(params, ctx.key, frame.subarray(h.length)));
}

/** The next base key of a sender: HKDF-SHA256(base, salt = "", info = "VoiceChat 1 ratchet", 16). */
export function ratchet(baseKey) {
  return hkdf(baseKey, utf8.encode('VoiceChat 1 ratchet'), NK);
}

// ---- session key pairs and key wrap ----

const ECDH = { name: 'ECDH', namedCurve: 'P-256' };

/** A fresh ECDH P-256 key pair for one call session; `pub` is the 65-byte uncompressed point. */
export async function generateSessionKeys() {
  const { privateKey, publicKey } = await subtle.generateKey(ECDH, false, ['deriveBits']);
  return { privateKey, publicKey, pub: new Uint8Array(await subtle.exportKey('raw', publicKey)) };
}

/** A session key pair from a fixed private scalar `d` (32 bytes) and its `pub`: for test vectors. */
export async function importSessionKeys(d, pub) {
  const jwk = { kty: 'EC', crv: 'P-256', d: b64uEncode(d), x: b64uEncode(pub.subarray(1, 33)), y: b64uEncode(pub.subarray(33, 65)), ext: false };
  const privateKey = await subtle.importKey('jwk', jwk, ECDH, false, ['deriveBits']);
  return { privateKey, publicKey: await importPub(pub), pub: Uint8Array.from(pub) };
}

/** A peer's public key from its 65 raw bytes; throws unless it is a point on P-256. */
export function importPub(raw) {
  if (!raw || raw.length !== 65 || raw[0] !== 4) throw new TypeError('not an uncompressed P-256 point');
  return subtle.importKey('raw', raw, ECDH, true, []);
}

/** KEK = HKDF(ECDH(me, peer), info = "VoiceChat 1 key wrap" || sender pub || recipient pub || KID). */
async function kek(me, peerPub, senderPub, recipientPub, kid) {
  const shared = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: await importPub(peerPub) }, me.privateKey, 256));
  const bytes = await hkdf(shared, concat(utf8.encode('VoiceChat 1 key wrap'), senderPub, recipientPub, be(u64(kid, 'kid'), 8)), 16);
  shared.fill(0);
  const key = await subtle.importKey('raw', bytes, 'AES-KW', false, ['wrapKey', 'unwrapKey']);
  bytes.fill(0);
  return key;
}

/** Wrap sender base key `baseKey` of `kid` for the holder of `peerPub`: AES-KW, 24 bytes. */
export async function wrapKey(me, peerPub, kid, baseKey) {
  const wrapping = await kek(me, peerPub, me.pub, peerPub, kid);
  const key = await subtle.importKey('raw', baseKey, 'AES-GCM', true, ['encrypt']);
  return new Uint8Array(await subtle.wrapKey('raw', key, wrapping, 'AES-KW'));
}

/** Unwrap a base key that `senderPub` wrapped for me under `kid`; throws on any mismatch. */
export async function unwrapKey(me, senderPub, kid, wrapped) {
  if (!wrapped || wrapped.length !== NK + 8) throw new TypeError('wrapped key must be 24 bytes');
  const wrapping = await kek(me, senderPub, senderPub, me.pub, kid);
  const key = await subtle.unwrapKey('raw', wrapped, wrapping, 'AES-KW', 'AES-GCM', true, ['encrypt']);
  return new Uint8Array(await subtle.exportKey('raw', key));
}

// ---- safety code ----

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function lengthPrefixed(text) {
  const bytes = utf8.encode(text);
  if (bytes.length > 0xffff) throw new RangeError('safety code field too long');
  return concat(be(bytes.length, 2), bytes);
}

/** The bytes hashed by safetyCode (exported for the test vectors). */
export function safetyInput(entries) {
  const sorted = [...entries].sort((a, b) => compareBytes(a.pub, b.pub));
  return concat(utf8.encode('VoiceChat 1 safety code'), ...sorted.flatMap((e) => [lengthPrefixed(e.id), e.pub, lengthPrefixed(e.fp || '')]));
}

/**
 * The call's safety code over entries {id: session id, pub: 65 bytes, fp: "sha-256 AB:…" or ""}:
 * SHA-256 of safetyInput, first 8 bytes as a big-endian integer mod 10^16, as "0123 4567 8901 2345".
 */
export async function safetyCode(entries) {
  const h = new Uint8Array(await subtle.digest('SHA-256', safetyInput(entries)));
  let n = 0n;
  for (let i = 0; i < 8; i++) n = (n << 8n) | BigInt(h[i]);
  const digits = (n % 10n ** 16n).toString().padStart(16, '0');
  return digits.match(/.{4}/g).join(' ');
}
