//! Main-thread side of call encryption: attaches RTP senders and receivers to the SFrame worker
//! (e2ee/worker.js) by RTCRtpScriptTransform, or by Chromium's older createEncodedStreams, and
//! talks to the worker (keys, stats).

/**
 * Which encoded-transform API this browser has: 'script' (RTCRtpScriptTransform), 'legacy'
 * (Chromium's createEncodedStreams) or null (no end-to-end encryption possible).
 */
export function supported() {
  if (typeof globalThis.RTCRtpScriptTransform === 'function') return 'script';
  if (typeof globalThis.RTCRtpSender === 'function' && 'createEncodedStreams' in RTCRtpSender.prototype) return 'legacy';
  return null;
}

/**
 * Extra RTCPeerConnection configuration the transforms need: {encodedInsertableStreams: true}
 * on the legacy path only. Such a connection holds back the media of every sender and receiver
 * until it is attached, so attach all of them (attachSender/attachReceiver) on that path.
 */
export function pcConfigExtras(mode = supported()) {
  return mode === 'legacy' ? { encodedInsertableStreams: true } : {};
}

/** One worker holding a call's keys, and the RTP senders and receivers attached to it. */
export class Transforms {
  /**
   * @param {string|URL} workerUrl the URL of e2ee/worker.js (a module worker)
   * @param {{mode?: 'script'|'legacy'}} [options] force an API (tests); default: supported()
   */
  constructor(workerUrl = new URL('./worker.js', import.meta.url), { mode = supported() } = {}) {
    if (!mode) throw new Error('this browser has no encoded transforms');
    this.mode = mode;
    this.worker = new Worker(workerUrl, { type: 'module', name: 'voicechat-e2ee' });
    this.nextId = 1;
    this.pending = new Map(); // reply id → {resolve, reject}
    this.worker.onmessage = (ev) => {
      const msg = ev.data || {};
      const p = this.pending.get(msg.reply);
      if (!p) return;
      this.pending.delete(msg.reply);
      const { op, reply, ...answer } = msg;
      if (op === 'error') p.reject(new Error(`e2ee worker: ${msg.of}: ${msg.error}`));
      else p.resolve(answer);
    };
    this.worker.onerror = (ev) => {
      const err = new Error(`e2ee worker failed: ${ev.message || 'error'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  /** Encrypt what `sender` (an RTCRtpSender) sends. */
  attachSender(sender) {
    this.attach(sender, 'send');
  }

  /** Decrypt what `receiver` (an RTCRtpReceiver) receives; on the legacy path, call it in `ontrack`. */
  attachReceiver(receiver) {
    this.attach(receiver, 'recv');
  }

  attach(target, side) {
    const id = this.nextId++;
    if (this.mode === 'script') {
      target.transform = new RTCRtpScriptTransform(this.worker, { side, id });
    } else {
      const { readable, writable } = target.createEncodedStreams();
      this.worker.postMessage({ op: 'stream', side, id, readable, writable }, [readable, writable]);
    }
  }

  /**
   * Send an op to the worker: {op: 'send_key', kid, key}, {op: 'recv_key', kid, key},
   * {op: 'forget', tag}, {op: 'allow_plaintext', on}, {op: 'encrypt', on}.
   */
  post(op) {
    this.worker.postMessage(op);
  }

  /** An op with an answer. */
  request(op) {
    const reply = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(reply, { resolve, reject });
      this.worker.postMessage({ ...op, reply });
    });
  }

  /** → {encrypted, decrypted, failed, plaintext, dropped_no_key, by_kid: {kid: {decrypted, failed}}, send_kid}. */
  stats() {
    return this.request({ op: 'stats' });
  }

  /** Try the worker's receive keys on an SFrame captured elsewhere → {ok, kid, error}; a failure counts in stats. */
  tryDecrypt(bytes) {
    return this.request({ op: 'try_decrypt', frame: bytes });
  }

  /** Stop the worker; attached streams stop flowing. */
  close() {
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(new Error('e2ee worker closed'));
    this.pending.clear();
  }
}
