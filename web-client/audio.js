//! Audio around the call: one unmuted <audio> element per remote session, or per slot of the
//! node's audio server (its volume is the per-person volume of whoever it carries now,
//! remembered per user id in localStorage), and levels for the speaking
//! indicators — remote ones from getStats() inbound-rtp audioLevel, the local one from an
//! AnalyserNode on the microphone.

const VOLUME_KEY = 'voicechat.volume.';
export const SPEAKING_LEVEL = 0.03;

export function loadVolume(user) {
  try {
    const v = Number(localStorage.getItem(VOLUME_KEY + user));
    return localStorage.getItem(VOLUME_KEY + user) !== null && v >= 0 && v <= 1 ? v : 1;
  } catch {
    return 1;
  }
}

export function saveVolume(user, volume) {
  try {
    localStorage.setItem(VOLUME_KEY + user, String(volume));
  } catch {
    /* private mode: the volume just is not remembered */
  }
}

/** The <audio> elements that play remote participants, kept out of view. */
export class Speakers {
  constructor() {
    this.box = document.createElement('div');
    this.box.className = 'speakers';
    this.box.setAttribute('aria-hidden', 'true');
    document.body.append(this.box);
    this.elements = new Map(); // session → { user, el }
    this.blocked = false;
    this.silenced = new Set(); // users muted for this listener only (per-person mute)
  }

  /** Play `stream` as `user` (null: nobody yet) under `session` (or a slot's key). */
  attach(session, user, stream) {
    let entry = this.elements.get(session);
    if (!entry) {
      const el = document.createElement('audio');
      el.autoplay = true;
      el.dataset.session = session;
      this.box.append(el);
      entry = { user, el };
      this.elements.set(session, entry);
    }
    entry.user = user;
    entry.el.volume = user ? loadVolume(user) : 1;
    entry.el.muted = !!user && this.silenced.has(user);
    if (entry.el.srcObject !== stream) entry.el.srcObject = stream;
    entry.el.play().catch(() => {
      this.blocked = true; // autoplay refused; resumeAll() on the next click
    });
  }

  /** A slot of the node's audio server now carries `user` (null: nobody): their volume. */
  setUser(session, user) {
    const entry = this.elements.get(session);
    if (!entry || entry.user === user) return;
    entry.user = user;
    entry.el.volume = user ? loadVolume(user) : 1;
    entry.el.muted = !!user && this.silenced.has(user);
  }

  /** Mute `user` for this listener only (nobody else is affected), or unmute. */
  silence(user, on) {
    if (on) this.silenced.add(user);
    else this.silenced.delete(user);
    for (const entry of this.elements.values()) if (entry.user === user) entry.el.muted = on;
  }

  isSilenced(user) {
    return this.silenced.has(user);
  }

  detach(session) {
    const entry = this.elements.get(session);
    if (!entry) return;
    entry.el.srcObject = null;
    entry.el.remove();
    this.elements.delete(session);
  }

  setVolume(user, volume) {
    saveVolume(user, volume);
    for (const entry of this.elements.values()) if (entry.user === user) entry.el.volume = volume;
  }

  resumeAll() {
    this.blocked = false;
    for (const { el } of this.elements.values()) el.play().catch(() => {});
  }

  clear() {
    for (const session of [...this.elements.keys()]) this.detach(session);
  }
}

/** RMS level 0..1 of a local stream, through an AnalyserNode. */
export class LocalMeter {
  constructor(stream) {
    this.ctx = null;
    try {
      this.ctx = new AudioContext();
      this.source = this.ctx.createMediaStreamSource(stream);
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 512;
      this.buf = new Float32Array(this.analyser.fftSize);
      this.source.connect(this.analyser);
    } catch {
      this.ctx = null;
    }
  }

  level() {
    if (!this.ctx) return 0;
    if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const x of this.buf) sum += x * x;
    return Math.sqrt(sum / this.buf.length);
  }

  close() {
    if (this.ctx) this.ctx.close().catch(() => {});
    this.ctx = null;
  }
}

/** The audioLevel (0..1) of the inbound audio of one connection, or 0. */
export async function inboundLevel(pc) {
  try {
    const stats = await pc.getStats();
    let level = 0;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio' && typeof s.audioLevel === 'number') {
        level = Math.max(level, s.audioLevel);
      }
    });
    return level;
  } catch {
    return 0;
  }
}
