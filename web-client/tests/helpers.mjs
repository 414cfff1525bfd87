//! Shared by the end-to-end tests and measure.mjs: the network-namespace guard, the WAV
//! generator, starting the real node, launching Chromium, polling with deadlines, getStats.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** Chromium's ICE would use every interface: insist on a namespace with loopback only. */
export function assertPrivateNetns() {
  // /proc/net/dev belongs to this process's namespace (/sys/class/net may show the host's).
  const ifaces = fs
    .readFileSync('/proc/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0].trim())
    .filter((n) => n && n !== 'lo');
  if (ifaces.length) {
    throw new Error(
      `These tests must run in a private network namespace with loopback only (found: ${ifaces.join(', ')}). ` +
        'Run them through web-client/tests/run.sh (unshare -n as root).',
    );
  }
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `voicechat-${prefix}-`));
}

/**
 * Write a 48 kHz mono 16-bit PCM WAV of `seconds`, with a beep of `beepMs` at the start of
 * every `periodMs` (frequency alternating per beep so a codec cannot flatten it into noise).
 */
export function writeBeepWav(file, { seconds = 10, periodMs = 1000, beepMs = 200, freqs = [660, 880], amplitude = 0.5 } = {}) {
  const rate = 48_000;
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(n * 2, 40);
  const period = Math.round((periodMs / 1000) * rate);
  const beep = Math.round((beepMs / 1000) * rate);
  const ramp = Math.round(0.004 * rate); // 4 ms fade in/out, no clicks
  for (let i = 0; i < n; i++) {
    const k = Math.floor(i / period);
    const t = i % period;
    let v = 0;
    if (t < beep) {
      const env = Math.min(1, t / ramp, (beep - t) / ramp);
      v = amplitude * env * Math.sin((2 * Math.PI * freqs[k % freqs.length] * i) / rate);
    }
    buf.writeInt16LE(Math.round(v * 32767), 44 + i * 2);
  }
  fs.writeFileSync(file, buf);
  return file;
}

function nodeBin() {
  const bin = process.env.VOICECHAT_BIN || path.join(REPO, 'target', 'debug', 'voicechat');
  if (!fs.existsSync(bin)) throw new Error(`node binary not found at ${bin}: build it (cargo build -p voicechat-node) or set VOICECHAT_BIN`);
  return bin;
}

/**
 * `voicechat id --data-dir DIR`: creates the node key in `dataDir` if missing and resolves to
 * the node's PeerId (12D3KooW…), so another node can pin it before this one ever starts.
 */
export function nodeId(dataDir) {
  return new Promise((resolve, reject) => {
    execFile(nodeBin(), ['id', '--data-dir', dataDir], { env: { ...process.env, RUST_LOG: 'warn' }, timeout: 20_000 }, (err, stdout, stderr) => {
      const id = String(stdout).trim().split(/\s+/)[0] || '';
      if (err || !/^12D3KooW\w+$/.test(id)) reject(new Error(`voicechat id --data-dir ${dataDir} failed: ${err ? err.message : ''}\n${stdout}\n${stderr}`));
      else resolve(id);
    });
  });
}

/**
 * Start the real node on port 0; resolves once it printed its URL and its federation
 * multiaddr (`p2p`, the first `/ip4/…` token of the "federates at" line, ending in
 * `/p2p/<id>`). `peers`: pins passed as `--peer` (a full multiaddr is dialled, a bare
 * `/p2p/<id>` is admitted when it connects); federation is closed otherwise. `dataDir`: an
 * existing data dir (e.g. one whose id was printed with nodeId()), else a fresh one.
 * `listen`/`p2pListen`: its addresses; `args`: more flags; `netns`: run it in that named
 * network namespace (`ip netns exec`, which execs the node: `proc` is the node itself);
 * `env`: more environment (e.g. the test hooks of a debug build).
 */
export async function startNode({
  name = 'alpha',
  peers = [],
  dataDir = tempDir('node'),
  listen = '127.0.0.1:0',
  p2pListen = '/ip4/127.0.0.1/tcp/0',
  args: extra = [],
  netns = null,
  env = {},
} = {}) {
  const bin = nodeBin();
  const args = ['serve', '--listen', listen, '--data-dir', dataDir, '--name', name, '--p2p-listen', p2pListen, ...extra];
  // Tests sign up many accounts from one address; the node's default is 10 an hour.
  if (!extra.includes('--registrations-per-hour')) args.push('--registrations-per-hour', '1000');
  for (const peer of peers) args.push('--peer', peer);
  const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, bin, ...args]] : [bin, args];
  const proc = spawn(file, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
  });
  let log = '';
  proc.stderr.on('data', (d) => {
    log += d;
    if (process.env.VOICECHAT_NODE_LOG) process.stderr.write(`[${name}] ${d}`);
  });
  const { url, p2p } = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`node ${name} printed no URL and federation address in 20 s; stdout: ${out}\nstderr: ${log}`)), 20_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/https?:\/\/[^\s"']+/);
      const f = out.match(/federates at .*?(\/ip4\/\S+)/);
      if (m && f) {
        clearTimeout(timer);
        resolve({ url: m[0].replace(/\/?$/, '/'), p2p: f[1] });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node ${name} exited with ${code} before listening:\n${out}\n${log}`));
    });
  });
  return {
    name,
    url,
    p2p,
    id: (p2p.match(/\/p2p\/(\w+)/) || [])[1] || null,
    proc,
    dataDir,
    log: () => log,
    /** Stop the node; its data dir goes too unless `keepData` (to start it again on it). */
    async stop({ keepData = false } = {}) {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => {
          const t = setTimeout(() => {
            proc.kill('SIGKILL');
            r();
          }, 5000);
          proc.once('exit', () => {
            clearTimeout(t);
            r();
          });
        });
      }
      if (!keepData) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Two nodes that pin each other (federation is closed by default): `second`'s key is made
 * first so `first` starts with `--peer /p2p/<second's id>`; `second` then starts with
 * `--peer <first's full multiaddr>` and dials it. `args`: more flags for both.
 */
export async function startPeeredPair(first = 'alpha', second = 'beta', { args = [] } = {}) {
  const secondDir = tempDir('node');
  const secondId = await nodeId(secondDir);
  const a = await startNode({ name: first, peers: [`/p2p/${secondId}`], args });
  try {
    const b = await startNode({ name: second, dataDir: secondDir, peers: [a.p2p], args });
    if (b.id && b.id !== secondId) throw new Error(`${second} runs as ${b.id}, not the ${secondId} its data dir printed`);
    return [a, b];
  } catch (err) {
    await a.stop();
    fs.rmSync(secondDir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * One Chromium process (own user-data-dir) whose fake microphone plays `wav`.
 * `executablePath`: another program to start (e.g. a wrapper that runs Chromium in a network
 * namespace); `args`: more flags; `loopback: false` leaves out --allow-loopback-in-peer-connection;
 * `device`: more context options (a phone: `{isMobile: true, hasTouch: true}`).
 */
function chromiumArgs(wav, loopback, args) {
  return [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    ...(loopback ? ['--allow-loopback-in-peer-connection'] : []),
    '--autoplay-policy=no-user-gesture-required',
    ...args,
  ];
}

export async function launchBrowser(wav, { viewport = { width: 1280, height: 800 }, executablePath = CHROMIUM, args = [], loopback = true, device = {} } = {}) {
  const userDataDir = tempDir('chromium');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport,
    ...device, // e.g. {isMobile: true, hasTouch: true} for a phone
    args: chromiumArgs(wav, loopback, args),
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  if (process.env.VOICECHAT_DEBUG) {
    await context.addInitScript(() => localStorage.setItem('voicechat.debug', '1'));
  }
  return {
    context,
    page,
    consoleLines,
    async close() {
      if (process.env.VOICECHAT_DEBUG) console.log(consoleLines.join('\n'));
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Like launchBrowser, but launched so that Chromium's own process accounting can be read:
 * `cpu()` resolves to the CPU seconds of its renderer processes (where the page, its
 * workers, and WebRTC's audio coding run), from CDP SystemInfo.getProcessInfo.
 */
export async function launchAccountedBrowser(wav, { viewport = { width: 1280, height: 800 }, args = [] } = {}) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumArgs(wav, true, args) });
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const cdp = await browser.newBrowserCDPSession();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  return {
    context,
    page,
    consoleLines,
    async cpu() {
      const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
      return processInfo.filter((p) => p.type === 'renderer').reduce((sum, p) => sum + p.cpuTime, 0);
    },
    async close() {
      await browser.close().catch(() => {});
    },
  };
}

/**
 * One Chromium process with `n` pages, each in its own context (its own cookies: another
 * user), to have several browser participants for the CPU of one. Resolves to
 * `{pages: [{context, page, consoleLines}], close()}`.
 */
export async function launchSharedBrowser(wav, n, { viewport = { width: 1280, height: 800 }, args = [] } = {}) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumArgs(wav, true, args) });
  const pages = [];
  for (let i = 0; i < n; i++) {
    const context = await browser.newContext({ viewport });
    if (process.env.VOICECHAT_DEBUG) await context.addInitScript(() => localStorage.setItem('voicechat.debug', '1'));
    const page = await context.newPage();
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
    pages.push({ context, page, consoleLines });
  }
  return {
    pages,
    async close() {
      if (process.env.VOICECHAT_DEBUG) for (const p of pages) console.log(p.consoleLines.join('\n'));
      await browser.close().catch(() => {});
    },
  };
}

/** Call `fn` until it returns a truthy value; throw `message` (with the last value) at the deadline. */
export async function waitFor(fn, { timeout = 20_000, interval = 250, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}; last value: ${JSON.stringify(last)}${lastErr ? `; last error: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Summed inbound audio + transport figures over every peer connection of the page. */
export function audioStats(page) {
  return page.evaluate(async () => {
    const out = { peers: 0, packetsReceived: 0, totalAudioEnergy: 0, audioLevel: 0, bytesSent: 0, dtlsStates: [], srtpCiphers: [], connectionStates: [] };
    for (const pc of window.__voicechat.peers().values()) {
      out.peers += 1;
      out.connectionStates.push(pc.connectionState);
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.packetsReceived += s.packetsReceived || 0;
          out.totalAudioEnergy += s.totalAudioEnergy || 0;
          out.audioLevel = Math.max(out.audioLevel, s.audioLevel || 0);
        } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
          out.bytesSent += s.bytesSent || 0;
        } else if (s.type === 'transport') {
          out.dtlsStates.push(s.dtlsState);
          if (s.srtpCipher) out.srtpCiphers.push(s.srtpCipher);
        }
      });
    }
    return out;
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Registers `username` on the node at `url` through its page; returns once My groups shows. */
export async function registerOn(page, url, username, password) {
  const byId = (id) => page.locator(`[data-testid="${id}"]`);
  await page.goto(new URL('/register', url).href);
  await byId('register-username').fill(username);
  await byId('register-password').fill(password);
  await byId('register-submit').click();
  await byId('group-list').waitFor();
}

/**
 * Per slot of the page's connection to the node's audio server: whom it carries (the
 * page's `sfu_slots`) and its inbound audio (`packetsReceived`, `totalAudioEnergy`,
 * `audioLevel`). Slot i is the (i+1)-th transceiver: the first is the microphone's.
 */
export function sfuSlots(page) {
  return page.evaluate(async () => {
    const pc = window.__voicechat.peers().get('sfu');
    const users = window.__voicechat.sfu().slots;
    if (!pc) return [];
    const stats = await pc.getStats();
    return pc
      .getTransceivers()
      .slice(1)
      .map((t, i) => {
        const out = { user: users[i] || null, packetsReceived: 0, totalAudioEnergy: 0, audioLevel: 0 };
        stats.forEach((s) => {
          if (s.type !== 'inbound-rtp' || s.kind !== 'audio' || (s.mid !== t.mid && s.trackIdentifier !== t.receiver.track.id)) return;
          out.packetsReceived = s.packetsReceived || 0;
          out.totalAudioEnergy = s.totalAudioEnergy || 0;
          out.audioLevel = s.audioLevel || 0;
        });
        return out;
      });
  });
}

/** Inbound audio of the slot of the page's audio-server connection that carries `user` (null while none does). */
export async function slotOf(page, user) {
  return (await sfuSlots(page)).find((s) => s.user === user) || null;
}

/** Make every getUserMedia call of the pages of `context` counted in `window.__gum` (from the next navigation). */
export function countGetUserMedia(context) {
  return context.addInitScript(() => {
    window.__gum = 0;
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) return;
    const real = md.getUserMedia.bind(md);
    md.getUserMedia = (constraints) => {
      window.__gum += 1;
      return real(constraints);
    };
  });
}

/**
 * Registers `username` over HTTP (no browser), like a page would: the CSRF cookie and
 * header, the node's own Origin. Resolves to the user id.
 */
export async function registerOverHttp(url, username, password) {
  const origin = new URL(url).origin;
  const session = await fetch(new URL('/api/session', url));
  const cookies = session.headers.getSetCookie().map((c) => c.split(';')[0]);
  const csrf = (cookies.find((c) => c.startsWith('vc_csrf=')) || '').slice('vc_csrf='.length);
  const res = await fetch(new URL('/api/register', url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Cookie: cookies.join('; '), Origin: origin, 'X-CSRF-Token': csrf },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => ({}));
  if (res.status !== 201) throw new Error(`registering ${username}: ${res.status} ${JSON.stringify(body)}`);
  return body.user.id;
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Register `users` in their browsers, a group and a room made by the first, the others added; resolves to the room's ids. */
export async function setUpRoom(url, browsers, users, extraMembers = [], password = 'correct horse battery') {
  for (const [i, b] of browsers.entries()) await registerOn(b.page, url, users[i], password);
  const owner = browsers[0].page;
  await byTestId(owner, 'group-create-name').fill('Big Room Group');
  await byTestId(owner, 'group-create-submit').click();
  await byTestId(owner, 'group-title').waitFor();
  await byTestId(owner, 'room-create-name').fill('Hall');
  await byTestId(owner, 'room-create-submit').click();
  await byTestId(owner, 'room-link-Hall').waitFor();
  for (const u of [...users.slice(1), ...extraMembers]) {
    await byTestId(owner, 'member-add-input').fill(u);
    await byTestId(owner, 'member-add-submit').click();
    await byTestId(owner, `member-${u}@alpha`).waitFor();
  }
  await byTestId(owner, 'room-link-Hall').click();
  await byTestId(owner, 'call-join').waitFor();
  const [, , gid, , rid] = new URL(owner.url()).pathname.split('/');
  return { gid, rid, roomUrl: owner.url() };
}

/** On the page's My groups, creates group `name` and an invite link to it; resolves to the link. */
export async function createGroupWithInvite(page, name) {
  await byTestId(page, 'group-create-name').fill(name);
  await byTestId(page, 'group-create-submit').click();
  await byTestId(page, 'group-title').waitFor();
  await byTestId(page, 'invite-create').click();
  const shown = page.locator('[data-testid^="invite-url-"]').first();
  await shown.waitFor();
  return (await shown.textContent()).trim();
}

export async function joinCall(page, roomUrl) {
  if (page.url() !== roomUrl) await page.goto(roomUrl);
  await byTestId(page, 'call-join').click();
  await byTestId(page, 'call-leave').waitFor();
}

/** Inbound audio of the page's connection to the node only. */
export function sfuStats(page) {
  return page.evaluate(async () => {
    const out = { packetsReceived: 0, totalAudioEnergy: 0, audioLevel: 0 };
    const pc = window.__voicechat.peers().get('sfu');
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.packetsReceived += s.packetsReceived || 0;
        out.totalAudioEnergy += s.totalAudioEnergy || 0;
        out.audioLevel = Math.max(out.audioLevel, s.audioLevel || 0);
      }
    });
    return out;
  });
}


/**
 * The usual fixture of a browser test, set up before its tests and torn down after them
 * (whatever failed): a temporary dir, a beep WAV (`wav`: writeBeepWav's options), a node
 * (`node`: startNode's options) and one Chromium per entry of `browsers` (launchBrowser's
 * options). Returns an object whose `dir`, `wav`, `node` and `browsers` are filled in by then.
 */
export function nodeAndBrowsers(name, { wav = {}, node = {}, browsers = [{}, {}] } = {}) {
  const t = { dir: null, wav: null, node: null, browsers: [] };
  before(async () => {
    assertPrivateNetns();
    t.dir = tempDir(name);
    t.wav = writeBeepWav(path.join(t.dir, 'beeps.wav'), wav);
    t.node = await startNode(node);
    t.browsers = await Promise.all(browsers.map((o) => launchBrowser(t.wav, o)));
  });
  after(async () => {
    for (const b of t.browsers) if (b) await b.close();
    if (t.node) await t.node.stop();
    if (t.dir) fs.rmSync(t.dir, { recursive: true, force: true });
  });
  return t;
}

/** A user of a node driven over HTTP like a page (cookies, CSRF header, the node's Origin). */
export class Http {
  constructor(url) {
    this.url = url;
    this.origin = new URL(url).origin;
    this.cookies = new Map();
  }

  async call(method, p, body) {
    if (this.cookies.size === 0) await this.take(await fetch(new URL('/api/session', this.url)));
    const headers = { Cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '), Origin: this.origin, 'X-CSRF-Token': this.cookies.get('vc_csrf') || '' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(new URL(p, this.url), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    await this.take(res);
    return { status: res.status, body: await res.json().catch(() => ({})) };
  }

  async take(res) {
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const i = kv.indexOf('=');
      this.cookies.set(kv.slice(0, i), kv.slice(i + 1));
    }
  }
}

/** How many streams from the page's audio server carry sound: their energy grows over 1.5 s. */
export async function soundingTracks(page) {
  const energies = () => page.evaluate(async () => {
    const out = {};
    const pc = window.__voicechat.peers().get('sfu');
    if (pc) (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') out[s.id] = s.totalAudioEnergy || 0; });
    return out;
  });
  const a = await energies();
  await sleep(1500);
  const b = await energies();
  return Object.keys(b).filter((id) => b[id] > (a[id] || 0)).length;
}

/** The same calls from inside a logged-in page (its cookies). */
export function pageApi(page, method, p, body) {
  return page.evaluate(
    async ({ method, p, body }) => {
      const csrf = (await (await fetch('/api/session')).json()).csrf || '';
      const res = await fetch(p, { method, headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, body: await res.json().catch(() => ({})) };
    },
    { method, p, body },
  );
}

/** The testnet binary, next to the node's in the cargo target dir. */
export function testnetBin() {
  const node = process.env.VOICECHAT_BIN || path.join(REPO, 'target', 'debug', 'voicechat');
  const bin = path.join(path.dirname(node), 'testnet');
  if (!fs.existsSync(bin)) {
    throw new Error(`this test needs the synthetic listeners of 'testnet crowd', and ${bin} is missing: build it with 'cargo build -p voicechat-testnet' (the same profile as the node)`);
  }
  return bin;
}

/** Runs `testnet crowd`; resolves to its JSON figures. */
export function crowd(bin, args, timeout) {
  return new Promise((resolve, reject) => {
    execFile(bin, ['crowd', ...args], { timeout, maxBuffer: 64 << 20, env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } }, (err, stdout, stderr) => {
      const line = String(stdout).trim().split('\n').pop() || '';
      try {
        if (err) throw err;
        resolve(JSON.parse(line));
      } catch (e) {
        reject(new Error(`testnet crowd failed: ${e.message}\nstdout: ${String(stdout).slice(-2000)}\nstderr: ${String(stderr).slice(-4000)}`));
      }
    });
  });
}

/**
 * In the page: records the onsets (epoch ms) of beeps in the MediaStreams that `pick` (a
 * function run in the page) returns into `window.__onsets[name]`: a sound rising past 0.05
 * after at least `quietMs` under 0.01. Resolves to the number of streams watched.
 */
export async function watchOnsets(page, name, pick, { quietMs = 150 } = {}) {
  const streams = await page.evaluateHandle(pick);
  return page.evaluate(
    ({ streams: list, name: n, quietMs: quiet }) => {
      const ctx = new AudioContext();
      window.__onsets = window.__onsets || {};
      const onsets = (window.__onsets[n] = []);
      for (const stream of list) {
        const an = ctx.createAnalyser();
        an.fftSize = 256; // 5.3 ms at 48 kHz
        ctx.createMediaStreamSource(stream).connect(an);
        const buf = new Float32Array(an.fftSize);
        let quietSince = performance.now();
        let loud = false;
        setInterval(() => {
          an.getFloatTimeDomainData(buf);
          let peak = 0;
          for (const x of buf) peak = Math.max(peak, Math.abs(x));
          const now = performance.now();
          if (!loud && peak > 0.05 && now - quietSince > quiet) {
            loud = true;
            onsets.push(performance.timeOrigin + now);
          } else if (loud && peak < 0.01) {
            loud = false;
            quietSince = now;
          } else if (!loud && peak >= 0.01) {
            quietSince = now;
          }
        }, 1);
      }
      return list.length;
    },
    { streams, name, quietMs },
  );
}
