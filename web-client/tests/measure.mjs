#!/usr/bin/env node
//! Measurements (not a test): prints figures for one two-browser call on the real node.
//!  - join → first audio: from clicking Join (the second person in) to the first inbound
//!    audio packet seen by that browser's getStats();
//!  - mouth-to-ear latency: the fake microphone plays a beep every second; the sender's own
//!    AnalyserNode (on its microphone track) and the receiver's (on the received stream) time
//!    each beep's onset with performance.timeOrigin + performance.now(), which share the
//!    machine's clock across the two processes; latency = receiver onset − sender onset.
//! Run inside the private namespace: tests/run-measure.sh  (BEEPS=20 for more samples).
import path from 'node:path';
import fs from 'node:fs';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, sleep } from './helpers.mjs';

const BEEPS = Number(process.env.BEEPS || 15);
const PERIOD_MS = 1000;
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** In the page: record onsets (epoch ms) of beeps in `stream` into window.__onsets[name]. */
function installDetector(page, name, which) {
  return page.evaluate(
    ({ name: n, which: w }) => {
      const stream = w === 'local' ? window.__voicechat.localStream() : document.querySelector('.speakers audio').srcObject;
      const ctx = new AudioContext();
      const src = ctx.createMediaStreamSource(stream);
      const an = ctx.createAnalyser();
      an.fftSize = 256; // 5.3 ms at 48 kHz
      src.connect(an);
      const buf = new Float32Array(an.fftSize);
      window.__onsets = window.__onsets || {};
      const onsets = (window.__onsets[n] = []);
      let quietSince = performance.now();
      let loud = false;
      setInterval(() => {
        an.getFloatTimeDomainData(buf);
        let peak = 0;
        for (const x of buf) peak = Math.max(peak, Math.abs(x));
        const now = performance.now();
        if (!loud && peak > 0.05 && now - quietSince > 300) {
          loud = true;
          onsets.push(performance.timeOrigin + now);
        } else if (loud && peak < 0.01) {
          loud = false;
          quietSince = now;
        } else if (!loud && peak >= 0.01) {
          quietSince = now;
        }
      }, 1);
      return ctx.state;
    },
    { name, which },
  );
}

async function main() {
  assertPrivateNetns();
  const dir = tempDir('measure');
  const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: PERIOD_MS, beepMs: 120, freqs: [1000] });
  const node = await startNode();
  const A = await launchBrowser(wav);
  const B = await launchBrowser(wav);
  try {
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
    const clickedAt = await B.page.evaluate(() => {
      const t = performance.timeOrigin + performance.now();
      document.querySelector('[data-testid="call-join"]').click();
      return t;
    });
    const firstPacket = await waitFor(() => B.page.evaluate(() => window.__firstPacket), { timeout: 30_000, interval: 50, message: 'first audio packet' });
    const joinToAudio = firstPacket - clickedAt;

    await waitFor(() => B.page.evaluate(() => !!document.querySelector('.speakers audio')?.srcObject), { message: 'remote audio element' });
    await installDetector(A.page, 'sent', 'local');
    await installDetector(B.page, 'heard', 'remote');
    await sleep((BEEPS + 1.5) * PERIOD_MS);
    const sent = await A.page.evaluate(() => window.__onsets.sent);
    const heard = await B.page.evaluate(() => window.__onsets.heard);

    const latencies = [];
    for (const h of heard) {
      const before = sent.filter((s) => s <= h && h - s < PERIOD_MS * 0.8);
      if (before.length) latencies.push(h - before[before.length - 1]);
    }
    latencies.sort((x, y) => x - y);
    console.log(`join → first audio packet: ${joinToAudio.toFixed(0)} ms`);
    console.log(`beeps sent ${sent.length}, heard ${heard.length}, matched ${latencies.length}`);
    console.log(`mouth-to-ear latency: median ${pct(latencies, 50).toFixed(1)} ms, p90 ${pct(latencies, 90).toFixed(1)} ms, min ${latencies[0]?.toFixed(1)} ms, max ${latencies.at(-1)?.toFixed(1)} ms`);
    if (latencies.length < 10) {
      console.log('fewer than 10 matched beeps: the figures are not reliable');
      process.exitCode = 1;
    }
  } finally {
    await A.close();
    await B.close();
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
