//! The microphone of a call: opening it (the device chosen last time, remembered in
//! localStorage), its level meter, switching devices, and failures in words.

import { LocalMeter } from './audio.js';

const DEVICE_KEY = 'voicechat.microphone';
const CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** Why the microphone could not be opened, for a person. */
export function micError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone access was denied. Allow it in the site settings of your browser and try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone was found. Plug one in and try again.';
    case 'NotReadableError':
      return 'The microphone is busy or unavailable (another application may be using it).';
    default:
      return `The microphone could not be opened${err && err.message ? `: ${err.message}` : '.'}`;
  }
}

function getUserMedia(audio) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const err = new Error('the browser allows the microphone only on https:// pages (or localhost)');
    err.name = 'InsecureContext';
    return Promise.reject(err);
  }
  return navigator.mediaDevices.getUserMedia({ audio, video: false });
}

export class Microphone {
  constructor() {
    /** The stream of the current (or last) opening; its tracks are ended once closed. */
    this.stream = null;
    this.meter = null;
    this.deviceId = localStorage.getItem(DEVICE_KEY) || '';
  }

  /** Whether it is open now. */
  get live() {
    return !!this.stream && this.stream.getAudioTracks().some((t) => t.readyState === 'live');
  }

  get track() {
    return this.stream ? this.stream.getAudioTracks()[0] || null : null;
  }

  /** A stream of the chosen device (`exact`: that one or none), not yet taken. */
  request(deviceId = this.deviceId, exact = false) {
    /** @type {MediaTrackConstraints} */
    const audio = { ...CONSTRAINTS };
    if (deviceId) audio.deviceId = exact ? { exact: deviceId } : { ideal: deviceId };
    return getUserMedia(audio);
  }

  /** Use `stream` from now on (the one before is stopped); the meter follows it. */
  take(stream) {
    const old = this.stream;
    this.stream = stream;
    if (this.meter) this.meter.close();
    this.meter = new LocalMeter(stream);
    if (old && old !== stream) for (const t of old.getTracks()) t.stop();
  }

  /** Remember `deviceId` as the microphone to use. */
  choose(deviceId) {
    this.deviceId = deviceId;
    localStorage.setItem(DEVICE_KEY, deviceId);
  }

  /** Silence it (a disabled track sends silence) or let it through. */
  setEnabled(on) {
    if (this.stream) for (const t of this.stream.getAudioTracks()) t.enabled = on;
  }

  /** The level 0..1 at the microphone now. */
  level() {
    return this.meter ? this.meter.level() : 0;
  }

  /** Release the device; `stream` stays, with its tracks ended. */
  close() {
    if (this.meter) this.meter.close();
    this.meter = null;
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
  }

  /** The audio inputs the browser lists. */
  async devices() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      return all.filter((d) => d.kind === 'audioinput');
    } catch {
      return [];
    }
  }
}
