//! End-to-end encryption through the node's audio server (SFU), with the debug build's test
//! hooks: a tap that writes every payload the SFU forwards to a file, and a node that swaps
//! the public keys it relays.
//! (a) ada sends a 740 Hz tone, bob hears it (audioLevel > 0, a 740 Hz peak in what he
//!     plays), while the tapped payloads, decoded with an Opus decoder (WebCodecs), hold no
//!     trace of it; they are SFrames under ada's key id. Both pages show one safety code.
//! (b) bob leaves, ada takes a new key; bob rejoins under a new session: the frames sent
//!     while he was out do not decrypt with the keys he now has, and he hears again.
//! (c) the same call on a node with --e2ee off: the tap finds the tone, and the pages say
//!     the audio is not end to end.
//! (d) a node that swaps keys: the two pages' safety codes differ.
//! Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, sleep, setUpRoom, joinCall, sfuStats } from './helpers.mjs';

const TONE = 740;
const OTHER = 440;
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const e2ee = (page) => page.evaluate(() => window.__voicechat.e2ee());

/** The tap file's records: `{ssrc, payload}` (ssrc u32 BE, length u16 BE, payload). */
function readTap(file, from = 0) {
  const buf = fs.existsSync(file) ? fs.readFileSync(file) : Buffer.alloc(0);
  const out = [];
  let i = from;
  while (i + 6 <= buf.length) {
    const ssrc = buf.readUInt32BE(i);
    const len = buf.readUInt16BE(i + 4);
    if (i + 6 + len > buf.length) break;
    out.push({ ssrc, payload: buf.subarray(i + 6, i + 6 + len) });
    i += 6 + len;
  }
  return { records: out, end: i };
}

/** The SFrame key id of a payload (RFC 9605 header), or null if it does not parse. */
function kidOf(p) {
  if (!p.length) return null;
  const c = p[0];
  if (!(c & 0x80)) return (c >> 4) & 7;
  const n = ((c >> 4) & 7) + 1;
  if (p.length < 1 + n) return null;
  let kid = 0;
  for (let i = 0; i < n; i++) kid = kid * 256 + p[1 + i];
  return kid;
}

/**
 * Decodes Opus payloads in the page (WebCodecs) and measures how much of the decoded
 * energy sits at each frequency: `{decoded, errors, share: {freq: 0..1}}` (a pure tone
 * gives ~1 at its frequency, noise ~0).
 */
function decodeAndMeasure(page, payloads, freqs) {
  return page.evaluate(
    async ({ payloads, freqs }) => {
      const frames = [];
      let errors = 0;
      const make = () => {
        const d = new AudioDecoder({
          output: (data) => {
            const pcm = new Float32Array(data.numberOfFrames);
            data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
            frames.push(pcm);
            data.close();
          },
          error: () => errors++,
        });
        d.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
        return d;
      };
      let dec = make();
      for (const [i, b64] of payloads.entries()) {
        const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        if (dec.state === 'closed') dec = make();
        try {
          dec.decode(new EncodedAudioChunk({ type: 'key', timestamp: i * 20_000, data }));
        } catch {
          errors++;
        }
        if (i % 50 === 49) await dec.flush().catch(() => {});
      }
      await dec.flush().catch(() => {});
      // Goertzel per frame: 2|X(f)|²/(N·Σx²) is 1 for a pure tone at f. The share is the
      // median over the frames with sound: one loud frame of garbage (ciphertext decoded as
      // Opus) cannot pass for a tone, and a stream of the tone has it in every frame.
      const share = {};
      for (const f of freqs) {
        const shares = [];
        for (const x of frames) {
          const w = (2 * Math.PI * f) / 48000;
          let s1 = 0;
          let s2 = 0;
          let e = 0;
          for (const v of x) {
            const s = v + 2 * Math.cos(w) * s1 - s2;
            s2 = s1;
            s1 = s;
            e += v * v;
          }
          const power = s1 * s1 + s2 * s2 - 2 * Math.cos(w) * s1 * s2;
          if (e > 1e-6) shares.push((2 * power) / x.length / e);
        }
        shares.sort((a, b) => a - b);
        share[f] = shares.length ? shares[Math.floor(shares.length / 2)] : 0;
      }
      return { decoded: frames.length, errors, share };
    },
    { payloads: payloads.map((p) => Buffer.from(p).toString('base64')), freqs },
  );
}

/** The loudest frequency (200–2000 Hz) in what the page receives from the node, over ~1.5 s. */
function receivedPeak(page) {
  return page.evaluate(async () => {
    const pc = window.__voicechat.peers().get('sfu');
    const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.readyState === 'live');
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    for (const t of tracks) ctx.createMediaStreamSource(new MediaStream([t])).connect(an);
    const bins = new Float32Array(an.frequencyBinCount);
    const sum = new Float32Array(an.frequencyBinCount);
    for (let i = 0; i < 15; i++) {
      await new Promise((r) => setTimeout(r, 100));
      an.getFloatFrequencyData(bins);
      for (let j = 0; j < bins.length; j++) sum[j] += Math.pow(10, bins[j] / 10);
    }
    await ctx.close();
    const hz = ctx.sampleRate / an.fftSize;
    let best = 0;
    for (let j = Math.ceil(200 / hz); j < 2000 / hz; j++) if (sum[j] > sum[best]) best = j;
    return best * hz;
  });
}

let dir;
let toneWav;
let otherWav;
let quietWav;
before(() => {
  assertPrivateNetns();
  dir = tempDir('e2ee');
  toneWav = writeBeepWav(path.join(dir, 'tone.wav'), { seconds: 10, periodMs: 1000, beepMs: 1000, freqs: [TONE], amplitude: 0.4 });
  otherWav = writeBeepWav(path.join(dir, 'other.wav'), { seconds: 10, periodMs: 1000, beepMs: 1000, freqs: [OTHER], amplitude: 0.4 });
  quietWav = writeBeepWav(path.join(dir, 'quiet.wav'), { seconds: 10, periodMs: 1000, beepMs: 0, freqs: [OTHER], amplitude: 0 });
});
after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A node on --sfu-threshold 2 with the tap; ada (tone), bob (another tone), cleo (silent). */
async function callOn({ args = [], env = {}, people = 3 } = {}) {
  const tap = path.join(dir, `tap-${Date.now()}.bin`);
  const node = await startNode({ args: ['--sfu-threshold', '2', ...args], env: { VOICECHAT_TEST_TAP: tap, ...env } });
  const browsers = await Promise.all([toneWav, otherWav, quietWav].slice(0, people).map((w) => launchBrowser(w)));
  const users = ['ada', 'bob', 'cleo'].slice(0, people);
  const { roomUrl } = await setUpRoom(node.url, browsers, users);
  for (const b of browsers) await joinCall(b.page, roomUrl);
  return {
    node,
    tap,
    roomUrl,
    browsers,
    async close() {
      for (const b of browsers) await b.close();
      await node.stop();
    },
  };
}

describe('end to end through the audio server', { timeout: 240_000 }, () => {
  let call;
  after(async () => {
    if (call) await call.close();
  });

  it('(a) bob hears the tone; the node forwards SFrames it cannot decode; one safety code', async () => {
    call = await callOn();
    const [A, B, C] = call.browsers.map((b) => b.page);
    await waitFor(async () => (await sfuStats(B)).audioLevel > 0.001, { interval: 100, message: 'bob to hear audio through the node' });
    await waitFor(async () => Math.abs((await receivedPeak(B)) - TONE) < 15, { timeout: 20_000, interval: 500, message: `a ${TONE} Hz peak in what bob plays` });
    const a = await e2ee(A);
    const b = await e2ee(B);
    assert.ok(a.on && b.on, 'both pages encrypt end to end');
    assert.ok(a.stats.encrypted > 50, `ada encrypted ${a.stats.encrypted} frames`);
    assert.ok(b.stats.decrypted > 50, `bob decrypted ${b.stats.decrypted} frames`);
    assert.equal(b.stats.plaintext, 0, 'no frame went through unencrypted');
    for (const page of [A, B, C]) assert.match(await byId(page, 'call-transport').textContent(), /through this node, encrypted end to end/);
    const codes = await Promise.all([A, B, C].map((p) => byId(p, 'safety-code').getAttribute('data-code')));
    assert.match(codes[0], /^\d{4} \d{4} \d{4} \d{4}$/);
    assert.deepEqual(new Set(codes).size, 1, `one safety code on the three pages: ${codes}`);

    // The tap: every forwarded payload is an SFrame under someone's key; ada's hold no tone.
    await sleep(1000);
    const { records } = readTap(call.tap);
    assert.ok(records.length > 200, `the tap saw ${records.length} payloads`);
    const adaKid = a.stats.send_kid;
    const ada = records.filter((r) => kidOf(r.payload) === adaKid);
    assert.ok(ada.length > 100, `${ada.length} forwarded payloads carry ada's key id ${adaKid}`);
    const heard = await decodeAndMeasure(A, ada.slice(-250).map((r) => r.payload), [TONE]);
    console.log(`tap, encrypted: ${heard.decoded} frames decoded, ${heard.errors} errors, ${TONE} Hz share ${heard.share[TONE].toFixed(4)}`);
    // Ciphertext decoded as Opus is band-limited noise: a 50 Hz bin below 1 kHz holds
    // 0.003-0.06 of a frame (median over frames, measured); her tone holds 1.0 of every frame
    // (the unencrypted case below).
    assert.ok(heard.share[TONE] < 0.25, `the node's copy of ada's audio holds her tone: share ${heard.share[TONE]}`);
  });

  it('(b) bob leaves and rejoins: what was sent while he was out does not decrypt for him', async () => {
    const [A, B] = call.browsers.map((b) => b.page);
    const before = (await e2ee(A)).stats.send_kid;
    await byId(B, 'call-leave').click();
    await waitFor(async () => (await e2ee(A)).stats.send_kid !== before, { message: 'ada to take a new key once bob left' });
    const during = (await e2ee(A)).stats.send_kid;
    await sleep(500);
    const from = readTap(call.tap).end;
    await sleep(2000);
    const out = readTap(call.tap, from).records.filter((r) => kidOf(r.payload) === during).slice(0, 40);
    assert.ok(out.length >= 20, `${out.length} of ada's frames forwarded to cleo while bob was out`);

    await byId(B, 'call-join').click();
    await byId(B, 'call-leave').waitFor();
    await waitFor(async () => ((await e2ee(B)).stats || {}).decrypted > 50, { message: 'bob to decrypt again after rejoining' });
    await waitFor(async () => (await sfuStats(B)).audioLevel > 0.001, { interval: 100, message: 'bob to hear again' });
    const mine = (await e2ee(B)).stats;
    const held = Object.keys(mine.by_kid).map(Number);
    assert.ok(!held.includes(during), `bob holds the key ${during} of the time he was out: ${held}`);
    assert.ok(held.some((k) => k > during), `bob decrypts under a later key (${held}) than ${during}`);
    const failedBefore = mine.failed;
    let ok = 0;
    for (const r of out) if ((await B.evaluate((bytes) => window.__voicechat.tryDecrypt(bytes), [...r.payload])).ok) ok++;
    assert.equal(ok, 0, 'a frame sent while bob was out decrypted with his new keys');
    assert.equal((await e2ee(B)).stats.failed - failedBefore >= out.length, true, 'each try counted as a failed decrypt');
    console.log(`rejoin: ${out.length} frames under key ${during} tried by bob (keys ${held.join(', ')}): 0 decrypted`);
  });
});

describe('the same call with --e2ee off', { timeout: 120_000 }, () => {
  let call;
  after(async () => {
    if (call) await call.close();
  });

  it('(c) the tap finds the tone, and the pages say the node could hear', async () => {
    call = await callOn({ args: ['--e2ee', 'off'], people: 2 });
    const [A, B] = call.browsers.map((b) => b.page);
    await waitFor(async () => (await sfuStats(B)).audioLevel > 0.001, { interval: 100, message: 'bob to hear audio through the node' });
    for (const page of [A, B]) {
      const words = await byId(page, 'call-transport').textContent();
      assert.match(words, /not end to end/);
      assert.equal(await byId(page, 'safety-code').count(), 0, 'no safety code without end-to-end encryption');
    }
    await sleep(2000);
    const { records } = readTap(call.tap);
    const bySsrc = new Map();
    for (const r of records) bySsrc.set(r.ssrc, [...(bySsrc.get(r.ssrc) || []), r.payload]);
    const shares = [];
    for (const payloads of bySsrc.values()) shares.push((await decodeAndMeasure(A, payloads.slice(-250), [TONE])).share[TONE]);
    console.log(`tap, not encrypted: ${TONE} Hz share per stream ${shares.map((s) => s.toFixed(3)).join(', ')}`);
    assert.ok(Math.max(...shares) > 0.9, `the tap decodes ada's tone when audio is not end to end: ${shares}`);
  });
});

describe('a node that swaps keys', { timeout: 120_000 }, () => {
  let call;
  after(async () => {
    if (call) await call.close();
  });

  it('(d) the two pages show different safety codes', async () => {
    call = await callOn({ env: { VOICECHAT_TEST_SUBSTITUTE_E2EE_KEYS: '1' }, people: 2 });
    const [A, B] = call.browsers.map((b) => b.page);
    const codes = await waitFor(async () => {
      const c = await Promise.all([A, B].map(async (p) => ((await byId(p, 'safety-code').count()) ? byId(p, 'safety-code').getAttribute('data-code') : null)));
      return c.every(Boolean) && c;
    }, { message: 'both pages to show a safety code' });
    console.log(`safety codes with swapped keys: ${codes.join(' vs ')}`);
    assert.notEqual(codes[0], codes[1], 'the swap shows: the codes differ');
    // And what was wrapped for the node's key never opens for the real recipient.
    await waitFor(async () => (await e2ee(B)).stats.failed_unwraps > 0, { message: "bob's page to fail to unwrap ada's key" });
    assert.equal((await e2ee(B)).stats.decrypted, 0, 'bob decrypted audio under a swapped key');
  });
});
