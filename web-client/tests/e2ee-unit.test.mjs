//! End-to-end encryption of call audio: web-client/e2ee/sframe.js against RFC 9605's vectors and
//! VoiceChat's own (protocol-spec/vectors/e2ee/, checked by a Rust test with other crates too),
//! the failure cases, and one real-Chromium run of e2ee/worker.js between two loopback peer
//! connections, on each encoded-transform API. Run through tests/run.sh (private netns).
//!
//! VOICECHAT_WRITE_E2EE_VECTORS=1 rewrites voicechat.json from the fixed inputs below.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as sf from '../e2ee/sframe.js';
import { REPO, assertPrivateNetns, launchBrowser, tempDir, waitFor, writeBeepWav, sleep } from './helpers.mjs';

const VECTORS = path.join(REPO, 'protocol-spec', 'vectors', 'e2ee');
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (h) => Uint8Array.from(Buffer.from(h, 'hex'));
const readJson = (name) => JSON.parse(fs.readFileSync(path.join(VECTORS, name), 'utf8'));
/** 32 bytes named by `text`: the fixed inputs of the vectors. */
const seed = (text) => new Uint8Array(crypto.createHash('sha256').update(text).digest());

describe('RFC 9605 vectors (cipher suite 0x0004)', () => {
  const rfc = readJson('rfc9605.json');

  it('encodes and parses every header vector', () => {
    assert.ok(rfc.header.length > 200);
    for (const v of rfc.header) {
      const [kid, ctr] = [BigInt(v.kid), BigInt(v.ctr)];
      assert.equal(hex(sf.encodeHeader(kid, ctr)), v.encoded, `kid ${v.kid} ctr ${v.ctr}`);
      const encoded = unhex(v.encoded);
      // parsed from the start of a frame, with more bytes after the header
      assert.deepEqual(sf.parseHeader(concatHex(v.encoded, 'a5a5'), { bigint: true }), { kid, ctr, length: encoded.length });
      for (let n = 0; n < encoded.length; n++) assert.throws(() => sf.parseHeader(encoded.subarray(0, n), { bigint: true }), `cut to ${n}`);
    }
  });

  it('derives key and salt, encrypts and decrypts the frame', async () => {
    for (const v of rfc.sframe) {
      assert.equal(v.cipher_suite, String(sf.SUITE));
      const kid = Number(v.kid);
      const secret = await sf.sframeSecret(unhex(v.base_key), kid);
      assert.equal(hex(secret.key), v.sframe_key);
      assert.equal(hex(secret.salt), v.sframe_salt);
      assert.equal(hex(sf.nonceOf(secret.salt, Number(v.ctr))), v.nonce);
      const ctx = await sf.deriveKeySalt(unhex(v.base_key), kid);
      const ct = await sf.encryptFrame(ctx, kid, Number(v.ctr), unhex(v.pt), unhex(v.metadata));
      assert.equal(hex(ct), v.ct);
      assert.equal(hex(await sf.decryptFrame(ctx, unhex(v.ct), unhex(v.metadata))), v.pt);
      await assert.rejects(sf.decryptFrame(ctx, unhex(v.ct)), 'metadata is authenticated');
    }
  });
});

/** Hex strings → bytes, concatenated. */
function concatHex(...parts) {
  return unhex(parts.join(''));
}

// ---- VoiceChat's vectors ----

/** Node's own ECDH (OpenSSL), to get a public key from a fixed scalar. */
function pubOf(d) {
  const e = crypto.createECDH('prime256v1');
  e.setPrivateKey(Buffer.from(d));
  return new Uint8Array(e.getPublicKey(null, 'uncompressed'));
}

/** Every value of voicechat.json, recomputed from the fixed inputs. */
async function buildVoicechatVectors() {
  const baseKey = seed('VoiceChat e2ee vector: base key').subarray(0, 16);
  const tag = 0x8f3a6c21;
  const chain = [baseKey];
  for (let i = 0; i < 3; i++) chain.push(await sf.ratchet(chain[i]));

  const frames = [];
  const opus = [seed('VoiceChat e2ee vector: opus frame 0').subarray(0, 23), concatHex(hex(seed('opus 1a')), hex(seed('opus 1b')), '78')];
  for (const [index, ctr, pt] of [
    [0, 0, opus[0]],
    [1, 1234567, opus[1]],
  ]) {
    const kid = sf.kidOf(tag, index);
    const secret = await sf.sframeSecret(chain[index], kid);
    const ctx = await sf.deriveKeySalt(chain[index], kid);
    frames.push({
      base_key: hex(chain[index]),
      tag,
      index,
      kid,
      ctr,
      header: hex(sf.encodeHeader(kid, ctr)),
      sframe_key: hex(secret.key),
      sframe_salt: hex(secret.salt),
      nonce: hex(sf.nonceOf(secret.salt, ctr)),
      pt: hex(pt),
      ct: hex(await sf.encryptFrame(ctx, kid, ctr, pt)),
    });
  }

  const people = {};
  for (const name of ['alice', 'bob', 'carol']) {
    const d = seed(`VoiceChat e2ee vector: ${name} private key`);
    people[name] = { d, pub: pubOf(d), keys: await sf.importSessionKeys(d, pubOf(d)) };
  }
  const wraps = [];
  for (const [from, to, index] of [
    ['alice', 'bob', 0],
    ['bob', 'carol', 2],
  ]) {
    const [s, r] = [people[from], people[to]];
    const kid = sf.kidOf(tag, index);
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from(s.d));
    const shared = new Uint8Array(ecdh.computeSecret(Buffer.from(r.pub)));
    const info = sf.concat(new TextEncoder().encode('VoiceChat 1 key wrap'), s.pub, r.pub, unhex(kid.toString(16).padStart(16, '0')));
    const kek = new Uint8Array(crypto.hkdfSync('sha256', shared, new Uint8Array(0), info, 16));
    const wrapped = await sf.wrapKey(s.keys, r.pub, kid, chain[index]);
    wraps.push({
      sender: from,
      sender_d: hex(s.d),
      sender_pub: hex(s.pub),
      recipient: to,
      recipient_d: hex(r.d),
      recipient_pub: hex(r.pub),
      kid,
      base_key: hex(chain[index]),
      shared: hex(shared),
      kek_info: hex(info),
      kek: hex(kek),
      wrapped: hex(wrapped),
    });
  }

  const fp = (text) => `sha-256 ${hex(seed(text)).toUpperCase().match(/../g).join(':')}`;
  const safetyCases = [
    [
      { id: '3f0c2a9b8e7d6c5b4a3f2e1d0c9b8a79', pub: people.alice.pub, fp: fp('alice dtls') },
      { id: 'c4e1f2a3b4c5d6e7f8091a2b3c4d5e6f', pub: people.bob.pub, fp: fp('bob dtls') },
      { id: '0123456789abcdef0123456789abcdef', pub: people.carol.pub, fp: fp('carol dtls') },
    ],
    [
      { id: '3f0c2a9b8e7d6c5b4a3f2e1d0c9b8a79', pub: people.alice.pub, fp: '' },
      { id: 'sessiön-ü', pub: people.bob.pub, fp: fp('bob dtls') },
    ],
  ];
  const safety = [];
  for (const entries of safetyCases) {
    const input = sf.safetyInput(entries);
    safety.push({
      entries: entries.map((e) => ({ id: e.id, pub: hex(e.pub), fp: e.fp })),
      input: hex(input),
      sha256: crypto.createHash('sha256').update(input).digest('hex'),
      code: await sf.safetyCode(entries),
    });
  }

  const w = wraps[0];
  return {
    description:
      'VoiceChat end-to-end encryption vectors (protocol-spec/SPEC.md, "End-to-end encryption of call audio"): KIDs, the ratchet, SFrame frames under VoiceChat KIDs, the ECDH P-256 key wrap from fixed private scalars, the safety code, and example message bodies. Byte strings are lowercase hex except in messages (base64url without padding, as sent). Written by web-client/tests/e2ee-unit.test.mjs with VOICECHAT_WRITE_E2EE_VECTORS=1; checked by that test and by protocol-spec/tests/it/e2ee_vectors.rs.',
    cipher_suite: sf.SUITE,
    ratchet: { info: 'VoiceChat 1 ratchet', base_key: hex(baseKey), chain: chain.slice(1).map(hex) },
    kids: [
      [tag, 0],
      [tag, 1],
      [0xffffffff, 0xffff],
      [0, 7],
    ].map(([t, i]) => ({ tag: t, index: i, kid: sf.kidOf(t, i), header_ctr0: hex(sf.encodeHeader(sf.kidOf(t, i), 0)) })),
    frames,
    wraps,
    safety,
    messages: {
      hello: { v: 1, pub: sf.b64uEncode(people.alice.pub), fp: safetyCases[0][0].fp, e2ee: true },
      key: { v: 1, pub: sf.b64uEncode(people.alice.pub), fp: safetyCases[0][0].fp, kid: w.kid, wrapped: sf.b64uEncode(unhex(w.wrapped)) },
    },
  };
}

describe("VoiceChat's vectors (voicechat.json)", () => {
  it('are what sframe.js computes from the fixed inputs', async () => {
    const built = await buildVoicechatVectors();
    const file = path.join(VECTORS, 'voicechat.json');
    if (process.env.VOICECHAT_WRITE_E2EE_VECTORS) fs.writeFileSync(file, JSON.stringify(built, null, 2) + '\n');
    assert.deepEqual(readJson('voicechat.json'), built, 'run with VOICECHAT_WRITE_E2EE_VECTORS=1 to rewrite');
  });

  it('decrypt, ratchet, unwrap and give the codes from the file alone', async () => {
    const v = readJson('voicechat.json');
    let k = unhex(v.ratchet.base_key);
    for (const next of v.ratchet.chain) assert.equal(hex((k = await sf.ratchet(k))), next);
    for (const f of v.frames) {
      assert.equal(f.kid, f.tag * 65536 + f.index);
      assert.deepEqual(sf.parseHeader(unhex(f.ct)), { kid: f.kid, ctr: f.ctr, length: f.header.length / 2 });
      const ctx = await sf.deriveKeySalt(unhex(f.base_key), f.kid);
      assert.equal(hex(await sf.decryptFrame(ctx, unhex(f.ct))), f.pt);
    }
    for (const w of v.wraps) {
      const recipient = await sf.importSessionKeys(unhex(w.recipient_d), unhex(w.recipient_pub));
      assert.equal(hex(await sf.unwrapKey(recipient, unhex(w.sender_pub), w.kid, unhex(w.wrapped))), w.base_key);
    }
    for (const s of v.safety) {
      assert.equal(await sf.safetyCode(s.entries.map((e) => ({ ...e, pub: unhex(e.pub) }))), s.code);
      assert.match(s.code, /^\d{4} \d{4} \d{4} \d{4}$/);
    }
    assert.deepEqual(sf.b64uDecode(v.messages.key.wrapped), unhex(v.wraps[0].wrapped));
  });
});

describe('sframe.js', () => {
  it('round-trips frames and rejects tampering, wrong keys, wrong KIDs, truncation', async () => {
    const base = sf.randomKey();
    const kid = sf.kidOf(sf.randomTag(), 3);
    const ctx = await sf.deriveKeySalt(base, kid);
    const pt = crypto.getRandomValues(new Uint8Array(80));
    const frame = await sf.encryptFrame(ctx, kid, 42, pt);
    assert.equal(frame.length, sf.encodeHeader(kid, 42).length + pt.length + 16);
    assert.deepEqual(await sf.decryptFrame(ctx, frame), pt);
    for (let i = 0; i < frame.length; i++) {
      const bad = Uint8Array.from(frame);
      bad[i] ^= 0x01;
      await assert.rejects(sf.decryptFrame(ctx, bad), `bit flipped at byte ${i}`);
    }
    await assert.rejects(sf.decryptFrame(await sf.deriveKeySalt(sf.randomKey(), kid), frame), 'another key');
    await assert.rejects(sf.decryptFrame(await sf.deriveKeySalt(base, kid + 1), frame), 'the same base key under another KID');
    const relabelled = await sf.encryptFrame(ctx, kid + 1, 42, pt); // a header claiming another KID
    await assert.rejects(sf.decryptFrame(await sf.deriveKeySalt(base, kid + 1), relabelled));
    for (const n of [0, 1, 3, 8, frame.length - 1]) await assert.rejects(sf.decryptFrame(ctx, frame.subarray(0, n)), `cut to ${n} bytes`);
    assert.throws(() => sf.parseHeader(Uint8Array.of(0x90)), /truncated/);
    assert.throws(() => sf.parseHeader(Uint8Array.of(0x0f, 1, 2)), /truncated/);
    assert.throws(() => sf.parseHeader(new Uint8Array(0)));
    assert.throws(() => sf.parseHeader(unhex('f7ffffffffffffffff00')), /2\^53/);
    assert.throws(() => sf.encodeHeader(2 ** 53, 0));
    assert.throws(() => sf.encodeHeader(-1, 0));
  });

  it('KID helpers, next index, base64url', () => {
    assert.equal(sf.kidOf(0xffffffff, 0xffff), 2 ** 48 - 1);
    assert.equal(sf.tagOf(sf.kidOf(123456789, 4321)), 123456789);
    assert.equal(sf.indexOf(sf.kidOf(123456789, 4321)), 4321);
    assert.throws(() => sf.kidOf(2 ** 32, 0));
    assert.throws(() => sf.kidOf(1, 65536));
    assert.equal(sf.nextIndex(5, { fresh: false }), 6);
    assert.equal(sf.nextIndex(5, { fresh: true }), 5 + sf.RATCHET_WINDOW + 1);
    assert.equal(sf.nextIndex(0xffff, { fresh: false }), null);
    for (let n = 0; n < 70; n++) {
      const b = crypto.getRandomValues(new Uint8Array(n));
      const t = sf.b64uEncode(b);
      assert.match(t, /^[A-Za-z0-9_-]*$/);
      assert.equal(t, Buffer.from(b).toString('base64url'));
      assert.deepEqual(sf.b64uDecode(t), b);
    }
    for (const bad of ['a', 'ab=', 'a+b/', 'ab cd']) assert.throws(() => sf.b64uDecode(bad), bad);
  });

  it('ratchets one way to distinct keys', async () => {
    const k0 = sf.randomKey();
    const k1 = await sf.ratchet(k0);
    const k2 = await sf.ratchet(k1);
    assert.equal(new Set([k0, k1, k2].map(hex)).size, 3);
    assert.equal(hex(await sf.ratchet(k0)), hex(k1));
  });

  it('unwraps only for the right recipient, sender, KID and bytes', async () => {
    const [a, b, c] = await Promise.all([sf.generateSessionKeys(), sf.generateSessionKeys(), sf.generateSessionKeys()]);
    assert.equal(a.pub.length, 65);
    const key = sf.randomKey();
    const kid = sf.kidOf(77, 9);
    const wrapped = await sf.wrapKey(a, b.pub, kid, key);
    assert.equal(wrapped.length, 24);
    assert.deepEqual(await sf.unwrapKey(b, a.pub, kid, wrapped), key);
    await assert.rejects(sf.unwrapKey(c, a.pub, kid, wrapped), 'another recipient');
    await assert.rejects(sf.unwrapKey(b, c.pub, kid, wrapped), 'another claimed sender');
    await assert.rejects(sf.unwrapKey(b, a.pub, kid + 1, wrapped), 'another KID');
    await assert.rejects(sf.unwrapKey(a, b.pub, kid, wrapped), 'the sender itself, roles swapped');
    const flipped = Uint8Array.from(wrapped);
    flipped[5] ^= 0x80;
    await assert.rejects(sf.unwrapKey(b, a.pub, kid, flipped), 'a flipped bit');
    await assert.rejects(sf.unwrapKey(b, a.pub, kid, wrapped.subarray(0, 16)), 'truncated');
    const offCurve = Uint8Array.from(a.pub);
    offCurve[64] ^= 1;
    await assert.rejects(sf.wrapKey(a, offCurve, kid, key), 'a point not on the curve');
    await assert.rejects(sf.wrapKey(a, a.pub.subarray(0, 33), kid, key), 'a compressed point');
  });

  it('safety code: order-independent, and changes when any pub, id or fingerprint does', async () => {
    const keys = await Promise.all([0, 1, 2].map(() => sf.generateSessionKeys()));
    const entries = keys.map((k, i) => ({ id: `session-${i}`, pub: k.pub, fp: `sha-256 0${i}:AA` }));
    const code = await sf.safetyCode(entries);
    assert.match(code, /^\d{4} \d{4} \d{4} \d{4}$/);
    assert.equal(await sf.safetyCode([...entries].reverse()), code);
    const other = await sf.generateSessionKeys();
    for (let i = 0; i < entries.length; i++) {
      const variants = [{ pub: other.pub }, { id: `${entries[i].id}x` }, { fp: '' }];
      for (const change of variants) {
        const changed = entries.map((e, j) => (j === i ? { ...e, ...change } : e));
        assert.notEqual(await sf.safetyCode(changed), code, `entry ${i}: ${Object.keys(change)}`);
      }
    }
    assert.notEqual(await sf.safetyCode(entries.slice(0, 2)), code, 'a sender fewer');
  });
});

// ---- the worker in real Chromium ----

/** Serve web-client/ (module workers need http) plus an empty page, on 127.0.0.1:0. */
function serveWebClient() {
  const root = path.join(REPO, 'web-client');
  const types = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html' };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<!doctype html><title>e2ee</title><link rel="icon" href="data:,">');
    }
    const file = path.join(root, path.normalize(decodeURIComponent(url.pathname)));
    if (!file.startsWith(root + path.sep) || !url.pathname.startsWith('/e2ee/') || !fs.existsSync(file)) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('e2ee/worker.js in Chromium', { timeout: 180_000 }, () => {
  let server;
  let browser;
  let dir;
  let origin;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('e2ee');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 300 });
    server = await serveWebClient();
    origin = `http://127.0.0.1:${server.address().port}`;
    browser = await launchBrowser(wav);
  });

  after(async () => {
    if (browser) {
      const errors = browser.consoleLines.filter((l) => /error/i.test(l));
      if (errors.length) console.log(errors.join('\n'));
      await browser.close();
    }
    if (server) await new Promise((r) => server.close(r));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const mode of ['script', 'legacy']) {
    it(`${mode} transform: decrypts sent audio, follows a ratchet, stops on a wrong key`, async () => {
      const { page } = browser;
      await page.goto(`${origin}/`);
      // Two loopback peer connections; A's audio sender encrypts, B's receiver decrypts.
      await page.evaluate(async (mode) => {
        const { Transforms, pcConfigExtras } = await import('/e2ee/transform.js');
        const sf = await import('/e2ee/sframe.js');
        const tx = new Transforms('/e2ee/worker.js', { mode });
        const rx = new Transforms('/e2ee/worker.js', { mode });
        const a = new RTCPeerConnection(pcConfigExtras(mode));
        const b = new RTCPeerConnection(pcConfigExtras(mode));
        a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
        b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
        b.ontrack = (e) => {
          rx.attachReceiver(e.receiver);
          const audio = new Audio();
          audio.srcObject = e.streams[0];
          audio.play().catch(() => {});
        };
        const tag = sf.randomTag();
        const base = sf.randomKey();
        const kid = sf.kidOf(tag, 0);
        tx.post({ op: 'send_key', kid, key: base });
        rx.post({ op: 'recv_key', kid, key: base });
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        tx.attachSender(a.addTrack(stream.getAudioTracks()[0], stream));
        await a.setLocalDescription();
        await b.setRemoteDescription(a.localDescription);
        await b.setLocalDescription();
        await a.setRemoteDescription(b.localDescription);
        window.t = { tx, rx, a, b, sf, tag, base };
      }, mode);

      const inbound = () =>
        page.evaluate(async () => {
          let out = null;
          (await window.t.b.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'audio') out = { packets: s.packetsReceived, energy: s.totalAudioEnergy || 0, level: s.audioLevel || 0 };
          });
          return out;
        });
      const rxStats = () => page.evaluate(() => window.t.rx.stats());

      await waitFor(async () => (await rxStats()).decrypted > 50, { message: 'B to decrypt 50 frames' });
      await waitFor(async () => (await inbound()).energy > 0, { message: 'audio energy at B' });
      let s = await rxStats();
      assert.equal(s.failed, 0);
      assert.equal(s.plaintext, 0);
      const sent = await page.evaluate(() => window.t.tx.stats());
      assert.ok(sent.encrypted > 50, `A encrypted ${sent.encrypted}`);
      assert.equal(sent.send_kid, await page.evaluate(() => window.t.sf.kidOf(window.t.tag, 0)));

      // A ratchets (as when someone joins); B follows without being told.
      const kid1 = await page.evaluate(async () => {
        const { t } = window;
        const kid = t.sf.kidOf(t.tag, 1);
        t.next = await t.sf.ratchet(t.base);
        t.tx.post({ op: 'send_key', kid, key: t.next });
        return kid;
      });
      await waitFor(async () => ((await rxStats()).by_kid[kid1] || {}).decrypted > 25, { message: 'B to decrypt under the ratcheted KID' });
      s = await rxStats();
      assert.equal(s.failed, 0);
      const energy = (await inbound()).energy;
      await waitFor(async () => (await inbound()).energy > energy, { message: 'audio energy to grow after the ratchet' });

      // try_decrypt: a frame under the current KID opens; a frame of an old KID after its
      // 2 s grace, and one of an unknown sender, do not, and count as failures.
      await sleep(2500);
      const tries = await page.evaluate(async () => {
        const { t } = window;
        const seal = async (base, kid) => t.sf.encryptFrame(await t.sf.deriveKeySalt(base, kid), kid, 99999, new Uint8Array(40));
        const before = (await t.rx.stats()).failed;
        const good = await t.rx.tryDecrypt(await seal(t.next, t.sf.kidOf(t.tag, 1)));
        const old = await t.rx.tryDecrypt(await seal(t.base, t.sf.kidOf(t.tag, 0)));
        const stranger = await t.rx.tryDecrypt(await seal(t.base, t.sf.kidOf((t.tag ^ 1) >>> 0, 0)));
        return { good, old, stranger, failedMore: (await t.rx.stats()).failed - before };
      });
      assert.equal(tries.good.ok, true, JSON.stringify(tries.good));
      assert.equal(tries.old.ok, false);
      assert.equal(tries.stranger.ok, false);
      assert.equal(tries.failedMore, 2);

      // B is given a wrong key for A's KID: nothing decrypts any more, failures grow.
      await page.evaluate(() => window.t.rx.post({ op: 'recv_key', kid: window.t.sf.kidOf(window.t.tag, 1), key: window.t.sf.randomKey() }));
      const wrong = await rxStats();
      await waitFor(async () => (await rxStats()).failed > wrong.failed + 50, { message: 'failures to grow under a wrong key' });
      const after = await rxStats();
      assert.ok(after.decrypted <= wrong.decrypted + 1, `decrypted went on: ${wrong.decrypted} → ${after.decrypted}`);
      assert.equal(after.plaintext, 0);

      await page.evaluate(() => {
        const { t } = window;
        t.a.close();
        t.b.close();
        t.tx.close();
        t.rx.close();
      });
    });
  }
});
