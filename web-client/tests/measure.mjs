#!/usr/bin/env node
//! Measurements (not a test): prints figures for a two-browser call on the real node, the
//! same two Chromiums first in a mesh (browser to browser), then through the node's audio
//! server (a second node with --sfu-threshold 2), and the difference.
//!  - join → first audio: from clicking Join (the second person in) to the first inbound
//!    audio packet seen by that browser's getStats();
//!  - mouth-to-ear latency: the fake microphone plays a beep every second; the sender's own
//!    AnalyserNode (on its microphone track) and the receiver's (on the received stream: the
//!    mesh peer's, or the audio server's slot carrying the sender) time each beep's onset
//!    with performance.timeOrigin + performance.now(), which share the machine's clock
//!    across the two processes; latency = receiver onset − sender onset.
//!  - end-to-end encryption: the same SFU call on a node with --e2ee off; the difference in
//!    mouth-to-ear, and in the CPU of each browser's renderer processes (Chromium's own
//!    accounting, CDP SystemInfo.getProcessInfo) over the beeps: the sender encrypts one
//!    stream, the listener decrypts one. That difference drowns in the renderer's other work,
//!    so the transform is also measured alone: STREAMS synthetic 100-byte frames at 50/s
//!    each, encrypted and decrypted by the page's frame worker (e2ee/worker.js), against the
//!    same frames passed through it unencrypted, by renderer CPU over 10 s.
//! Run inside the private namespace: tests/run-measure.sh  (BEEPS=20 for more samples).
import path from 'node:path';
import fs from 'node:fs';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchAccountedBrowser, waitFor, sleep, watchOnsets } from './helpers.mjs';

const BEEPS = Number(process.env.BEEPS || 15);
const PERIOD_MS = 1000;
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** In the page: the sender's audio, from its mesh peer's <audio> or the audio server's
 *  slot carrying it (`remote`), or the microphone (`local`). */
function senderStream(which) {
  return which === 'local'
    ? () => [window.__voicechat.localStream()]
    : () => {
        const slot = window.__voicechat.sfu().slots.indexOf('sender@alpha');
        return [document.querySelector(slot >= 0 ? `.speakers audio[data-session="sfu-${slot}"]` : '.speakers audio').srcObject];
      };
}

/** Register both on `node`, call from A to B, and time it; the call's mode must be `mode`. */
async function measureOn(node, A, B, mode, label = mode) {
  for (const [b, u] of [[A, 'sender'], [B, 'listener']]) {
    await b.page.goto(new URL('/register', node.url).href);
    await byId(b.page, 'register-username').fill(u);
    await byId(b.page, 'register-password').fill('measure-password');
    await byId(b.page, 'register-submit').click();
    await byId(b.page, 'group-list').waitFor();
  }
  await byId(A.page, 'group-create-name').fill('Measure');
  await byId(A.page, 'group-create-submit').click();
  await byId(A.page, 'group-title').waitFor();
  await byId(A.page, 'room-create-name').fill('Lab');
  await byId(A.page, 'room-create-submit').click();
  await byId(A.page, 'room-link-Lab').waitFor();
  await byId(A.page, 'member-add-input').fill('listener');
  await byId(A.page, 'member-add-submit').click();
  await byId(A.page, 'member-listener@alpha').waitFor();
  await byId(A.page, 'room-link-Lab').click();
  await byId(A.page, 'call-join').click();
  await byId(A.page, 'call-leave').waitFor();

  await byId(B.page, 'group-link-Measure').click();
  await byId(B.page, 'room-link-Lab').click();
  await waitFor(async () => (await byId(B.page, 'call-join').textContent()).trim() === 'Join', { message: 'Join button' });
  // Watch getStats from inside the page so the first packet is timed to ~10 ms.
  await B.page.evaluate(() => {
    window.__firstPacket = null;
    const poll = setInterval(async () => {
      for (const pc of window.__voicechat.peers().values()) {
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (!window.__firstPacket && s.type === 'inbound-rtp' && s.kind === 'audio' && s.packetsReceived > 0) {
            window.__firstPacket = performance.timeOrigin + performance.now();
            clearInterval(poll);
          }
        });
      }
    }, 10);
  });
  // A person reads the page for a moment before clicking: the page gets ready meanwhile.
  await sleep(1000);
  const clickedAt = await B.page.evaluate(() => {
    const t = performance.timeOrigin + performance.now();
    document.querySelector('[data-testid="call-join"]').click();
    return t;
  });
  const firstPacket = await waitFor(() => B.page.evaluate(() => window.__firstPacket), { timeout: 30_000, interval: 50, message: 'first audio packet' });
  const joinToAudio = firstPacket - clickedAt;

  if (mode === 'sfu') {
    // Heard through the node: its slot carries the sender, and no mesh connection is left.
    await waitFor(async () => {
      const s = await B.page.evaluate(() => ({ ...window.__voicechat.sfu(), mesh: window.__voicechat.connections().length }));
      return s.mode === 'sfu' && s.state === 'connected' && s.slots.includes('sender@alpha') && s.mesh === 0;
    }, { timeout: 30_000, message: "the listener hearing the sender through the node's audio server" });
  }
  const got = await B.page.evaluate(() => window.__voicechat.sfu().mode);
  if (got !== mode) throw new Error(`the call is in mode ${got}, not ${mode}`);
  await waitFor(() => B.page.evaluate(() => !!document.querySelector('.speakers audio')?.srcObject), { message: 'remote audio element' });
  await watchOnsets(A.page, 'sent', senderStream('local'), { quietMs: 300 });
  await watchOnsets(B.page, 'heard', senderStream('remote'), { quietMs: 300 });
  const cpu0 = await Promise.all([A.cpu(), B.cpu()]);
  const t0 = performance.now();
  await sleep((BEEPS + 1.5) * PERIOD_MS);
  const cpu1 = await Promise.all([A.cpu(), B.cpu()]);
  const secs = (performance.now() - t0) / 1000;
  const cpu = { sender: ((cpu1[0] - cpu0[0]) / secs) * 100, listener: ((cpu1[1] - cpu0[1]) / secs) * 100 };
  const e2ee = await Promise.all([A, B].map((b) => b.page.evaluate(() => window.__voicechat.e2ee())));
  const sent = await A.page.evaluate(() => window.__onsets.sent);
  const heard = await B.page.evaluate(() => window.__onsets.heard);
  // Where the receiver's delay goes: its jitter buffer (the stream that carries the sender).
  const buffer = await B.page.evaluate(async () => {
    let best = null;
    for (const pc of window.__voicechat.peers().values()) {
      (await pc.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== 'audio' || !(s.jitterBufferEmittedCount > 0)) return;
        if (best && best.packetsReceived >= s.packetsReceived) return;
        best = s;
      });
    }
    if (!best) return null;
    const per = (x) => (x / best.jitterBufferEmittedCount) * 1000;
    return { delay: per(best.jitterBufferDelay), target: per(best.jitterBufferTargetDelay || 0), jitter: (best.jitter || 0) * 1000 };
  });
  for (const b of [A, B]) await byId(b.page, 'call-leave').click();

  const latencies = [];
  for (const h of heard) {
    const before = sent.filter((s) => s <= h && h - s < PERIOD_MS * 0.8);
    if (before.length) latencies.push(h - before[before.length - 1]);
  }
  latencies.sort((x, y) => x - y);
  return { mode: label, joinToAudio, sent: sent.length, heard: heard.length, latencies, median: pct(latencies, 50), p90: pct(latencies, 90), buffer, cpu, e2ee };
}

/** Renderer CPU (% of a core) of `b` while its page pushes `streams` send and receive streams
 *  of synthetic frames through the frame worker for `secs`, encrypting or not. */
async function transformLoad(b, url, streams, secs, encrypt) {
  await b.page.goto(url);
  await b.page.evaluate(
    async ({ streams, encrypt }) => {
      const sf = await import('/e2ee/sframe.js');
      const worker = new Worker('/e2ee/worker.js', { type: 'module' });
      const key = sf.randomKey();
      const kid = sf.kidOf(sf.randomTag(), 0);
      worker.postMessage({ op: 'encrypt', on: encrypt });
      worker.postMessage({ op: 'allow_plaintext', on: !encrypt });
      if (encrypt) {
        worker.postMessage({ op: 'send_key', kid, key });
        worker.postMessage({ op: 'recv_key', kid, key });
      }
      const ctx = await sf.deriveKeySalt(key, kid);
      const plain = Array.from({ length: 50 }, () => crypto.getRandomValues(new Uint8Array(100)));
      const sealed = await Promise.all(plain.map((p, i) => sf.encryptFrame(ctx, kid, i, p)));
      window.__frames = 0;
      window.__stop = false;
      const source = (frames) =>
        new ReadableStream({
          async pull(c) {
            if (window.__stop) return c.close();
            await new Promise((r) => setTimeout(r, 20));
            c.enqueue({ data: frames[window.__frames % frames.length].slice().buffer });
          },
        });
      const sink = () => new WritableStream({ write() { window.__frames++; } });
      for (let i = 0; i < streams; i++) {
        for (const [side, frames] of [['send', plain], ['recv', encrypt ? sealed : plain]]) {
          const readable = source(frames);
          const writable = sink();
          worker.postMessage({ op: 'stream', side, id: i, readable, writable }, [readable, writable]);
        }
      }
    },
    { streams, encrypt },
  );
  await sleep(1000);
  const [c0, f0, t0] = [await b.cpu(), await b.page.evaluate(() => window.__frames), performance.now()];
  await sleep(secs * 1000);
  const [c1, f1, t1] = [await b.cpu(), await b.page.evaluate(() => window.__frames), performance.now()];
  await b.page.evaluate(() => (window.__stop = true));
  const s = (t1 - t0) / 1000;
  return { cpu: ((c1 - c0) / s) * 100, fps: (f1 - f0) / s };
}

function report(r) {
  const l = r.latencies;
  console.log(`[${r.mode}] join → first audio packet: ${r.joinToAudio.toFixed(0)} ms`);
  console.log(`[${r.mode}] beeps sent ${r.sent}, heard ${r.heard}, matched ${l.length}`);
  console.log(`[${r.mode}] mouth-to-ear latency: median ${r.median.toFixed(1)} ms, p90 ${r.p90.toFixed(1)} ms, min ${l[0]?.toFixed(1)} ms, max ${l.at(-1)?.toFixed(1)} ms (${l.length} beeps)`);
  if (r.buffer) {
    const b = r.buffer;
    console.log(`[${r.mode}] receiver's jitter buffer: delay ${b.delay.toFixed(1)} ms (target ${b.target.toFixed(1)} ms), interarrival jitter ${b.jitter.toFixed(1)} ms`);
  }
  const [a, b] = r.e2ee;
  console.log(`[${r.mode}] end to end: ${a.on && b.on ? 'on' : 'off'} (sender encrypted ${a.stats ? a.stats.encrypted : 0} frames, listener decrypted ${b.stats ? b.stats.decrypted : 0}); renderer CPU: sender ${r.cpu.sender.toFixed(2)} %, listener ${r.cpu.listener.toFixed(2)} % of a core`);
}

async function main() {
  assertPrivateNetns();
  const dir = tempDir('measure');
  const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: PERIOD_MS, beepMs: 120, freqs: [1000] });
  const A = await launchAccountedBrowser(wav);
  const B = await launchAccountedBrowser(wav);
  const results = [];
  try {
    // The same two browsers: first a mesh, then right after through the audio server of a
    // node that puts every call of two people on it.
    const streams = Number(process.env.STREAMS || 20);
    const bench = await startNode();
    try {
      const plain = await transformLoad(A, bench.url, streams, 10, false);
      const sealed = await transformLoad(A, bench.url, streams, 10, true);
      const per = (sealed.cpu - plain.cpu) / streams;
      console.log(`[transform] ${streams} streams each way at 50 frames/s: renderer CPU ${sealed.cpu.toFixed(1)} % encrypting and decrypting (${sealed.fps.toFixed(0)} frames/s), ${plain.cpu.toFixed(1)} % passing through (${plain.fps.toFixed(0)} frames/s)`);
      console.log(`[transform] SFrame per stream (one sent and one received): ${per.toFixed(2)} % of a core`);
    } finally {
      await bench.stop();
    }
    const runs = [
      ['mesh', 'mesh', []],
      ['sfu', 'sfu', ['--sfu-threshold', '2']],
      ['sfu', 'sfu, e2ee off', ['--sfu-threshold', '2', '--e2ee', 'off']],
    ];
    for (const [mode, label, args] of runs) {
      const node = await startNode({ args });
      try {
        results.push(await measureOn(node, A, B, mode, label));
      } finally {
        await node.stop();
      }
      report(results.at(-1));
    }
    const [mesh, sfu, plain] = results;
    const sign = (x) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
    console.log(`SFU − mesh: median ${sign(sfu.median - mesh.median)} ms, p90 ${sign(sfu.p90 - mesh.p90)} ms (mesh ${mesh.latencies.length} beeps, SFU ${sfu.latencies.length} beeps)`);
    console.log(`end to end − not (SFU): median ${sign(sfu.median - plain.median)} ms, p90 ${sign(sfu.p90 - plain.p90)} ms; renderer CPU sender ${sign(sfu.cpu.sender - plain.cpu.sender)} %, listener ${sign(sfu.cpu.listener - plain.cpu.listener)} % of a core (one stream each)`);
    if (results.some((r) => r.latencies.length < 10)) {
      console.log('fewer than 10 matched beeps in a run: the figures are not reliable');
      process.exitCode = 1;
    }
  } finally {
    await A.close();
    await B.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
