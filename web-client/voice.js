//! What this tab sends in a call: the microphone (mic.js) on every connection, mute and
//! push-to-talk (a disabled track sends silence, and the node is told), and switching
//! microphones mid-call without renegotiating (replaceTrack). On a stage the microphone
//! is open only while we are on stage: a listener's is never opened (their connection to
//! the audio server has a sendonly m-line without a track), it opens when they accept an
//! invitation to speak and is released when they go back to the audience.

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
    this.opening = null; // the microphone being opened for the stage
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
    if (!this.pushToTalk || this.talkHeld === held || (held && !this.call.stage.mayTalk)) return;
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

  /**
   * On a stage, open the microphone when our seat is on stage and release it when it is
   * not (in a conversation it is opened on join and stays open).
   */
  async follow() {
    const call = this.call;
    if (call.status === 'idle' || !call.stage.active) return;
    const want = call.stage.mayTalk;
    if (!want && this.mic.live) {
      this.send(null);
      call.changed('device');
    }
    if (!want || this.mic.live || this.opening) return;
    const { group, room } = call;
    let stream = null;
    this.opening = this.mic.request();
    try {
      stream = await this.opening;
    } catch (err) {
      if (call.inRoom(group, room)) {
        call.notify(`${micError(err)} You are back in the audience.`);
        call.stage.leaveStage();
      }
    } finally {
      this.opening = null;
    }
    if (!stream) return;
    if (!call.inRoom(group, room) || !call.stage.mayTalk) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    this.send(stream);
    this.apply();
    call.changed('device');
  }

  /** The call is over: release the microphone. */
  stop() {
    this.mic.close();
    this.talkHeld = false;
  }
}
