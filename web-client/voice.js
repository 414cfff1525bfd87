//! What this tab sends in a call: the microphone (mic.js) on every connection, mute and
//! push-to-talk (a disabled track sends silence, and the node is told), and switching
//! microphones mid-call without renegotiating (replaceTrack).

import { Microphone, micError } from './mic.js';

const PTT_KEY = 'voicechat.pushToTalk';

export class Voice {
  /** @param {import('./call.js').Call} call */
  constructor(call) {
    this.call = call;
    this.mic = new Microphone();
    this.muted = false;
    this.pushToTalk = localStorage.getItem(PTT_KEY) === 'true';
    this.talkHeld = false;
    this.sentMuted = null; // the muted flag the node has from us
  }

  get effectiveMuted() {
    return this.pushToTalk ? !this.talkHeld : this.muted;
  }

  /** The microphone stream while it is open, for connections; else null. */
  get sendStream() {
    return this.mic.live ? this.mic.stream : null;
  }

  setMuted(muted) {
    this.muted = muted;
    this.apply();
  }

  setPushToTalk(enabled) {
    this.pushToTalk = enabled;
    this.talkHeld = false;
    localStorage.setItem(PTT_KEY, String(enabled));
    this.apply();
  }

  setTalking(held) {
    if (!this.pushToTalk || this.talkHeld === held) return;
    this.talkHeld = held;
    this.apply();
  }

  /** Disabled tracks send silence: the remote ends hear nothing and see no energy. */
  apply() {
    const muted = this.effectiveMuted;
    const call = this.call;
    this.mic.setEnabled(!muted);
    if (call.status !== 'idle' && this.sentMuted !== muted) {
      this.sentMuted = muted;
      call.socket.send({ type: 'mute', muted });
    }
    call.changed('mute');
  }

  /** The level (0..1) to show for our own microphone. */
  level() {
    return this.mic.live && !this.effectiveMuted ? this.mic.level() * 4 : 0;
  }

  microphones() {
    return this.mic.devices();
  }

  get deviceId() {
    return this.mic.deviceId;
  }

  /** Switch microphones mid-call without renegotiating (replaceTrack). */
  async selectMicrophone(deviceId) {
    const call = this.call;
    this.mic.choose(deviceId);
    if (!this.mic.live || call.status === 'idle') return;
    let stream;
    try {
      stream = await this.mic.request(deviceId, true);
    } catch (err) {
      call.notify(micError(err));
      return;
    }
    if (call.status === 'idle') {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    this.send(stream);
    this.apply();
    call.changed('device');
  }

  /** Send `stream` (null: nothing) on every connection from now on; an old stream stops. */
  send(stream) {
    const call = this.call;
    const track = stream ? stream.getAudioTracks()[0] || null : null;
    if (stream) this.mic.take(stream);
    else this.mic.close();
    if (call.mesh) {
      call.mesh.localStream = stream;
      call.mesh.replaceTrack(track);
    }
    if (call.sfu) {
      call.sfu.localStream = stream;
      call.sfu.replaceTrack(track);
    }
  }

  /** The call is over: release the microphone. */
  stop() {
    this.mic.close();
    this.talkHeld = false;
  }
}
