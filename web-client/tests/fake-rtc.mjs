//! A fake RTCPeerConnection for unit tests of the call's state machine under `node --test`
//! (no browser): the JSEP signaling states (offer/answer, implicit rollback of our offer when
//! a polite side takes theirs, `negotiationneeded` only in `stable`), ICE restarts (each
//! offer after `restartIce()` carries new ICE credentials), one candidate per local
//! description, and connection states driven by the test (`setIce`). Descriptions are text
//! naming the connection and its ICE credentials, so a test can see which offer won.

let nextId = 1;

export class FakePC {
  /** Every connection made since the last `reset()`. */
  static all = [];

  static reset() {
    FakePC.all = [];
  }

  constructor(config = {}) {
    this.id = nextId++;
    this.config = config;
    this.signalingState = 'stable';
    this.connectionState = 'new';
    this.iceConnectionState = 'new';
    this.localDescription = null;
    this.remoteDescription = null;
    this.transceivers = [];
    this.candidates = []; // added remote candidates
    this.ufrag = 1; // ICE credentials generation
    this.restartPending = false;
    this.needed = false;
    this.nnQueued = false;
    this.offers = 0;
    this.answers = 0;
    this.rollbacks = 0;
    this.restartIceCalls = 0;
    this.closeCalls = 0;
    this.onnegotiationneeded = null;
    this.onicecandidate = null;
    this.ontrack = null;
    this.onconnectionstatechange = null;
    this.oniceconnectionstatechange = null;
    FakePC.all.push(this);
  }

  addTrack(track) {
    const sender = {
      track,
      replaceTrack(t) {
        this.track = t;
        return Promise.resolve();
      },
    };
    this.transceivers.push({ sender, receiver: { track: { kind: 'audio' } }, mid: String(this.transceivers.length) });
    this.negotiate();
    return sender;
  }

  getTransceivers() {
    return this.transceivers;
  }

  getSenders() {
    return this.transceivers.map((t) => t.sender);
  }

  getConfiguration() {
    return this.config;
  }

  setConfiguration(config) {
    this.config = config;
  }

  restartIce() {
    this.restartIceCalls += 1;
    this.restartPending = true;
    this.negotiate();
  }

  /** Negotiation is needed: `negotiationneeded` fires (as a queued task) once stable. */
  negotiate() {
    this.needed = true;
    this.fireIfNeeded();
  }

  fireIfNeeded() {
    if (this.signalingState !== 'stable' || !this.needed || this.nnQueued) return;
    this.nnQueued = true;
    setImmediate(() => {
      this.nnQueued = false;
      if (this.signalingState !== 'stable' || !this.needed) return;
      if (this.onnegotiationneeded) this.onnegotiationneeded();
    });
  }

  description(type) {
    if (this.restartPending) {
      this.ufrag += 1;
      this.restartPending = false;
    }
    const sdp = `${type} pc${this.id} ice-ufrag:u${this.ufrag} n${this.offers + this.answers}`;
    return { type, sdp, toJSON: () => ({ type, sdp }) };
  }

  async setLocalDescription(desc) {
    await Promise.resolve();
    this.checkOpen();
    if (desc && desc.type === 'rollback') return this.rollback();
    if (this.signalingState === 'stable' || this.signalingState === 'have-local-offer') {
      this.offers += 1;
      this.needed = false;
      this.localDescription = this.description('offer');
      this.signalingState = 'have-local-offer';
    } else if (this.signalingState === 'have-remote-offer') {
      this.answers += 1;
      this.needed = false; // the answer covers our transceivers (and new ICE credentials)
      this.localDescription = this.description('answer');
      this.signalingState = 'stable';
      this.fireIfNeeded();
    } else {
      throw new Error(`InvalidStateError: setLocalDescription in ${this.signalingState}`);
    }
    const ufrag = this.ufrag;
    setImmediate(() => {
      if (this.onicecandidate && this.signalingState !== 'closed') this.onicecandidate({ candidate: { toJSON: () => ({ candidate: `candidate u${ufrag} pc${this.id}`, sdpMid: '0' }) } });
    });
  }

  rollback() {
    this.rollbacks += 1;
    this.signalingState = 'stable';
    this.localDescription = this.remoteDescription ? this.localDescription : null;
  }

  async setRemoteDescription(desc) {
    await Promise.resolve();
    this.checkOpen();
    if (desc.type === 'offer') {
      if (this.signalingState === 'have-local-offer') this.rollback(); // implicit rollback
      if (this.signalingState !== 'stable') throw new Error(`InvalidStateError: offer in ${this.signalingState}`);
      this.remoteDescription = { ...desc };
      this.signalingState = 'have-remote-offer';
    } else if (desc.type === 'answer') {
      if (this.signalingState !== 'have-local-offer') throw new Error(`InvalidStateError: answer in ${this.signalingState}`);
      this.remoteDescription = { ...desc };
      this.signalingState = 'stable';
      this.fireIfNeeded();
    } else {
      throw new Error(`unexpected description ${desc.type}`);
    }
  }

  async addIceCandidate(candidate) {
    await Promise.resolve();
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidates.push(candidate);
  }

  /** Drive the connection: `connected`, `disconnected`, `failed`, `checking`… */
  setIce(state) {
    if (this.signalingState === 'closed') return;
    this.iceConnectionState = state;
    this.connectionState = state === 'checking' ? 'connecting' : state === 'completed' ? 'connected' : state;
    if (this.oniceconnectionstatechange) this.oniceconnectionstatechange();
    if (this.onconnectionstatechange) this.onconnectionstatechange();
  }

  async getStats() {
    return new Map();
  }

  close() {
    this.closeCalls += 1;
    this.signalingState = 'closed';
    this.connectionState = 'closed';
    this.iceConnectionState = 'closed';
  }

  checkOpen() {
    if (this.signalingState === 'closed') throw new Error('InvalidStateError: closed');
  }
}

/** A microphone: a stream with one audio track (`stop()` ends it). */
export function fakeStream() {
  const track = {
    kind: 'audio',
    id: 'mic',
    enabled: true,
    readyState: 'live',
    stop() {
      this.readyState = 'ended';
    },
  };
  return { getAudioTracks: () => [track], getTracks: () => [track] };
}

/** An element that takes whatever the modules do to one (the call's audio elements). */
function fakeElement() {
  return {
    style: {},
    dataset: {},
    className: '',
    setAttribute() {},
    append() {},
    remove() {},
    play: () => Promise.resolve(),
  };
}

function fakeStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
}

/**
 * The rest of the browser that call.js and what it imports touch (no AudioContext, no
 * encoded transforms: no level meter, no end-to-end encryption): `window` events, a
 * document to put audio elements in, storage, `getUserMedia` (a fresh fake microphone each
 * time, counted in `mics`), and `fetch` answered by `api(path)`.
 */
export function installBrowserFakes(api) {
  const mics = [];
  globalThis.window = globalThis;
  globalThis.addEventListener = () => {};
  globalThis.removeEventListener = () => {};
  globalThis.document = { createElement: fakeElement, body: fakeElement(), addEventListener() {}, visibilityState: 'visible' };
  globalThis.localStorage = fakeStorage();
  globalThis.sessionStorage = fakeStorage();
  const mediaDevices = {
    getUserMedia: async () => {
      const s = fakeStream();
      mics.push(s);
      return s;
    },
    enumerateDevices: async () => [],
    addEventListener() {},
  };
  Object.defineProperty(globalThis, 'navigator', { value: { mediaDevices }, configurable: true, writable: true });
  globalThis.fetch = async (path) => {
    const body = await api(String(path));
    return { status: 200, ok: true, text: async () => JSON.stringify(body) };
  };
  return { mics };
}

/** Put the fakes where the modules look for them (browser globals), once. */
export function installFakes() {
  globalThis.RTCPeerConnection = FakePC;
  globalThis.MediaStream = class {
    constructor(tracks = []) {
      this.tracks = tracks;
    }
  };
}
