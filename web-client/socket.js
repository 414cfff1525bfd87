//! The one WebSocket of this tab: URL from `location`, reconnect with backoff, dispatch by `type`.
//!
//! Listeners: socket.on('participants', fn) for node messages, plus the pseudo-types
//! 'open' and 'close' for the connection itself. After every (re)connect the node sends
//! `hello` with the session id. A reconnect asks to resume the session it had (with the
//! token its `hello` gave): the node keeps a session whose socket dropped for a while, and
//! after its own restart still knows the token, so the call goes on under the same session
//! and its peer connections are kept (see call.js). Closing on purpose (logout, leaving the
//! page) says goodbye, and the node lets the session go at once.

/** @typedef {import('./protocol.js').SocketEvents} SocketEvents */

const PING_MS = 25_000;
/** A probe (after a network change) not answered this fast means the socket is dead. */
const PROBE_MS = 5000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;

export function socketUrl(loc = location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

export class Socket {
  constructor(url = socketUrl()) {
    this.url = url;
    this.ws = null;
    this.listeners = new Map();
    this.wanted = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.probeTimer = null;
    this.connected = false;
    this.resume = null; // `<session>.<token>` from the last hello
    this.received = 0; // messages of that session received after its hello (the node replays what a resume missed)
    addEventListener('pagehide', () => {
      if (this.ws) this.ws.close(1000, 'page closed');
    });
  }

  /**
   * @template {keyof SocketEvents} K
   * @param {K} type
   * @param {(msg: SocketEvents[K]) => void} fn
   * @returns {() => void} stops listening
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, msg) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(msg);
      } catch (err) {
        console.error(`socket listener for ${type} failed`, err);
      }
    }
  }

  /** Start (and keep) the connection. */
  connect() {
    this.wanted = true;
    if (!this.ws) this.open();
  }

  /**
   * Is the connection still alive? After a network change a TCP connection can be dead
   * without any error (its address is gone) until the OS gives up, minutes later: ping, and
   * if nothing at all comes back within PROBE_MS, drop it and connect again at once.
   */
  probe() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.probeTimer) return;
    const ws = this.ws;
    this.send({ type: 'ping' });
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.ws === ws) this.lost(ws);
    }, PROBE_MS);
  }

  /** Give up on `ws` (dead): the same as its close event, which may come much later. */
  lost(ws) {
    try {
      ws.close(4000, 'no answer');
    } catch {
      /* already closing */
    }
    this.closed(ws, 4000, true);
  }

  /** `ws` is gone (closed, or given up on): tell the listeners, and connect again if wanted. */
  closed(ws, code, promptly) {
    if (this.ws !== ws) return;
    this.ws = null;
    const was = this.connected;
    this.connected = false;
    clearInterval(this.pingTimer);
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.emit('close', { code, wasConnected: was });
    if (!this.wanted) return;
    if (promptly) this.attempt = 0;
    this.scheduleReconnect();
  }

  /** Stop for good (logout). */
  close() {
    this.wanted = false;
    this.resume = null;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
    this.connected = false;
  }

  /**
   * Send one message; returns false (and drops it) while disconnected.
   * @param {import('./protocol.js').ClientMessage} msg
   */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  open() {
    const ws = new WebSocket(this.resume ? `${this.url}?resume=${encodeURIComponent(this.resume)}&seen=${this.received}` : this.url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.attempt = 0;
      this.connected = true;
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: 'ping' }), PING_MS);
      this.emit('open', {});
    });
    ws.addEventListener('message', (ev) => {
      if (this.ws !== ws) return; // given up on (lost)
      clearTimeout(this.probeTimer); // anything at all proves it alive
      this.probeTimer = null;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'hello') {
        const same = this.resume && this.resume.startsWith(`${msg.session}.`);
        if (!same) this.received = 0;
        this.resume = typeof msg.resume === 'string' ? `${msg.session}.${msg.resume}` : null;
      } else this.received += 1;
      this.emit(msg.type, msg);
    });
    ws.addEventListener('close', (ev) => this.closed(ws, ev.code, false));
  }

  scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.wanted && !this.ws) this.open();
    }, delay);
  }
}
