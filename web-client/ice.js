//! The ICE servers of a call, from `GET /api/ice`: the node's STUN and TURN (with
//! credentials for this user that expire at `expires_at`), then the operator's servers.
//! They are fetched again once past half their lifetime (before an ICE restart or a new
//! connection) and handed to every connection; an answer without `expires_at` (an older
//! node) is used as is, for good.

/** Never fetch ICE servers again sooner than this (a skewed clock must not make it loop). */
const REFETCH_MIN_MS = 30_000;

/** The URLs of an RTCIceServer, always as a list. */
export function urlsOf(server) {
  return [].concat((server && server.urls) || []);
}

export class IceServers {
  constructor() {
    /** @type {RTCIceServer[]} */
    this.servers = [];
    this.expiresAt = null; // unix seconds when the TURN credentials stop working, or null
    this.fetchedAt = 0; // Date.now() of the last fetch
    this.refreshing = null; // the fetch under way
  }

  /** Keep an answer of `GET /api/ice` (its `expires_at` may be missing: an older node). */
  take(answer) {
    this.servers = (answer && Array.isArray(answer.ice_servers) && answer.ice_servers) || [];
    this.expiresAt = answer && typeof answer.expires_at === 'number' ? answer.expires_at : null;
    this.fetchedAt = Date.now();
  }

  /** True when the TURN credentials we hold are past half their lifetime. */
  stale(now = Date.now()) {
    if (this.expiresAt === null) return false;
    if (now - this.fetchedAt < REFETCH_MIN_MS) return false;
    const half = this.fetchedAt + (this.expiresAt * 1000 - this.fetchedAt) / 2;
    return now >= half;
  }

  /**
   * Fetch them again (one fetch at a time): `fetch()` gives the answer; it is kept only if
   * `wanted()` still says so, and then `apply(servers)` hands them to the connections.
   */
  refresh(fetch, wanted, apply) {
    if (!this.refreshing) {
      this.refreshing = fetch()
        .then((answer) => {
          if (!wanted()) return;
          this.take(answer);
          apply(this.servers);
        })
        .catch((err) => console.warn('could not refresh the ICE servers', err))
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  /** Whether the node offered a relay (a turn:/turns: server). */
  get hasRelay() {
    return this.servers.some((s) => urlsOf(s).some((u) => /^turns?:/i.test(String(u))));
  }
}
