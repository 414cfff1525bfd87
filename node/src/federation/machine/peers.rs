//! Each peer node: whether it is connected, what is queued for it (one push in flight at a
//! time, so records arrive in order; a newer record of a subject replaces a queued older
//! one; bounded), how fast it may ask (token buckets), and how often it broke the rules.

use std::collections::{BTreeMap, HashMap};

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::NodeName;
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::Kind;
use voicechat_protocol::rpc::{self, PushRequest, PushResponse, RpcError};
use voicechat_protocol::Subject;

use super::replica::Source;
use super::{Failure, InboundId, Limits, Machine, Millis, Output, Pending, Proto};

/// What a queued record is about: a newer record of the same subject replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SubjectKey(pub(crate) Subject, pub(crate) Kind);

/// A token bucket.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Millis,
}

impl Bucket {
    fn new((burst, rate): (f64, f64), now: Millis) -> Self {
        Self { tokens: burst, burst, rate, at: now }
    }

    fn take(&mut self, n: f64, now: Millis) -> bool {
        let dt = now.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Largest push this node sends, in bytes (under the 4 MiB cap with room for framing).
const PUSH_BYTES: usize = rpc::MAX_PUSH_REQUEST - 64 * 1024;
/// First retry delay of a failed push, doubled per failure up to [`MAX_RETRY`].
const MIN_RETRY: Millis = 1_000;
const MAX_RETRY: Millis = 30_000;
/// How long a peer that broke the rules too often is kept out.
const BAN: Millis = 60_000;

/// One peer node.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) connected: bool,
    queue: BTreeMap<u64, (SubjectKey, Vec<u8>)>,
    index: HashMap<SubjectKey, u64>,
    order: u64,
    in_flight: bool,
    retry_at: Millis,
    backoff: Millis,
    requests: Bucket,
    records: Bucket,
    strikes: f64,
    pub(crate) banned_until: Millis,
    cap: usize,
}

impl Peer {
    pub(crate) fn new(limits: &Limits, now: Millis) -> Self {
        Self {
            connected: false,
            queue: BTreeMap::new(),
            index: HashMap::new(),
            order: 1 << 32,
            in_flight: false,
            retry_at: 0,
            backoff: MIN_RETRY,
            requests: Bucket::new(limits.requests, now),
            records: Bucket::new(limits.records, now),
            strikes: 0.0,
            banned_until: 0,
            cap: limits.outbox,
        }
    }

    pub(crate) fn limiter_request(&mut self, now: Millis) -> bool {
        self.requests.take(1.0, now)
    }

    /// Queues a record; returns how many old records were dropped to make room.
    fn push(&mut self, subject: SubjectKey, bytes: Vec<u8>) -> u64 {
        if let Some(pos) = self.index.get(&subject) {
            self.queue.insert(*pos, (subject, bytes));
            return 0;
        }
        self.order += 1;
        self.index.insert(subject.clone(), self.order);
        self.queue.insert(self.order, (subject, bytes));
        let mut dropped = 0;
        while self.queue.len() > self.cap {
            if let Some((_, (s, _))) = self.queue.pop_first() {
                self.index.remove(&s);
                dropped += 1;
            }
        }
        dropped
    }

    /// Puts records of a failed push back in front, unless a newer one of the subject came.
    fn requeue(&mut self, records: Vec<(SubjectKey, Vec<u8>)>) {
        let mut front = self.queue.first_key_value().map_or(self.order, |(k, _)| *k);
        for (s, b) in records.into_iter().rev() {
            if self.index.contains_key(&s) {
                continue;
            }
            front -= 1;
            self.index.insert(s.clone(), front);
            self.queue.insert(front, (s, b));
        }
    }

    fn take_batch(&mut self) -> Vec<(SubjectKey, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < rpc::MAX_PUSH_RECORDS {
            let Some(entry) = self.queue.first_entry() else { break };
            let len = entry.get().1.len() + 8;
            if !out.is_empty() && bytes + len > PUSH_BYTES {
                break;
            }
            let (s, b) = entry.remove();
            self.index.remove(&s);
            bytes += len;
            out.push((s, b));
        }
        out
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }
}

impl Machine {
    /// Queues a record for a peer (sent by [`flush`](Self::flush)).
    pub(crate) fn enqueue(&mut self, peer: NodeKey, subject: SubjectKey, bytes: Vec<u8>) {
        let dropped = self.peer(peer).push(subject, bytes);
        self.stats.outbox_dropped += dropped;
    }

    /// Sends the next push to a connected peer if none is in flight and its retry is due.
    pub(crate) fn flush(&mut self, key: NodeKey) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else { return };
        if !p.connected || p.in_flight || p.queue.is_empty() || p.retry_at > now {
            return;
        }
        let batch = p.take_batch();
        p.in_flight = true;
        self.stats.records_sent += batch.len() as u64;
        let req = PushRequest { records: batch.iter().map(|(_, b)| ByteBuf::from(b.clone())).collect() };
        self.request(key, Proto::Push, rpc::encode(&req), Pending::Push { peer: key, records: batch });
    }

    pub(super) fn on_push_response(
        &mut self,
        key: NodeKey,
        records: Vec<(SubjectKey, Vec<u8>)>,
        result: Result<Vec<u8>, Failure>,
    ) {
        let ok = match &result {
            Ok(bytes) => match rpc::decode::<PushResponse>(bytes, rpc::MAX_PUSH_RESPONSE) {
                Ok(PushResponse { error: None }) => true,
                Ok(PushResponse { error: Some(e) }) => {
                    tracing::debug!(peer = %short(&key), error = ?e, "push refused; retried");
                    false
                }
                Err(_) => false,
            },
            Err(f) => {
                tracing::debug!(peer = %short(&key), failure = ?f, "push failed; retried");
                false
            }
        };
        let now = self.now;
        let jitter = self.jitter();
        let p = self.peer(key);
        p.in_flight = false;
        if ok {
            p.backoff = MIN_RETRY;
        } else {
            p.requeue(records);
            p.retry_at = now + (p.backoff as f64 * jitter) as Millis;
            p.backoff = (p.backoff * 2).min(MAX_RETRY);
        }
        self.flush(key);
    }

    pub(super) fn on_connected(&mut self, key: NodeKey) {
        let now = self.now;
        let banned = self.peers.get(&key).is_some_and(|p| p.banned_until > now);
        if banned || !self.trust.may_connect(&key) {
            tracing::debug!(peer = %short(&key), banned, "refused a connection");
            self.outputs.push_back(Output::Disconnect(key));
            return;
        }
        // Our card first (card before anything else).
        let card = self.card.clone();
        let p = self.peer(key);
        p.connected = true;
        p.retry_at = 0;
        p.backoff = MIN_RETRY;
        let cards = vec![(self.cfg.me.clone(), card)];
        // The card goes before anything already queued.
        let queued: Vec<_> = {
            let p = self.peer(key);
            let mut v = Vec::new();
            while let Some((_, e)) = p.queue.pop_first() {
                p.index.remove(&e.0);
                v.push(e);
            }
            v
        };
        for (name, c) in cards {
            self.enqueue(key, SubjectKey(Subject::Node(name), Kind::NodeCard), c);
        }
        for (s, b) in queued {
            self.enqueue(key, s, b);
        }
        if let Some(name) = self.trust.name_of(&key).cloned() {
            self.schedule_syncs_from(&name);
        }
        self.flush(key);
    }

    /// The cards a vouched peer gets from us: those of the other nodes we vouch for
    /// (pinned or verified, never first-use ones), so nodes pinned by key alone learn each
    /// other's addresses through their neighbours whatever the topology.
    fn cards_for(&self, key: &NodeKey) -> Vec<(NodeName, Vec<u8>)> {
        let Some(name) = self.trust.name_of(key) else { return Vec::new() };
        self.trust.vouched().filter(|(n, _)| *n != name).map(|(n, c)| (n.clone(), c.to_vec())).collect()
    }

    pub(super) fn on_disconnected(&mut self, key: NodeKey) {
        let now = self.now;
        let known = self.trust.name_of(&key).is_some() || self.trust.is_pinned(&key);
        if let Some(p) = self.peers.get_mut(&key) {
            p.connected = false;
            // A stranger that leaves nothing behind (no queue, no ban) is forgotten, so
            // keys that come and go do not grow this map.
            if !known && p.queue.is_empty() && p.banned_until <= now && p.strikes == 0.0 {
                self.peers.remove(&key);
            }
        }
    }

    /// A peer's card was bound: its groups can be synced, its queue sent. A vouched node
    /// bound for the first time is introduced to the nodes we vouch for (their cards), so
    /// nodes pinned by key alone learn each other's addresses through a neighbour.
    pub(crate) fn on_bound(&mut self, key: NodeKey, name: &NodeName, first: bool) {
        if !self.peers.get(&key).is_some_and(|p| p.connected) {
            return;
        }
        if first && self.trust.is_vouched(&key) {
            for (n, c) in self.cards_for(&key) {
                self.enqueue(key, SubjectKey(Subject::Node(n), Kind::NodeCard), c);
            }
        }
        self.schedule_syncs_from(name);
        self.flush(key);
    }

    /// An inbound push: records judged one by one, changes handed to the core in one batch.
    pub(super) fn on_push(&mut self, peer: NodeKey, id: InboundId, data: &[u8]) {
        let req = match rpc::decode::<PushRequest>(data, rpc::MAX_PUSH_REQUEST) {
            Ok(r) if r.records.len() <= rpc::MAX_PUSH_RECORDS => r,
            _ => {
                self.strike(peer);
                return self.refuse(id, Proto::Push, RpcError::Invalid);
            }
        };
        if self.store_busy() {
            self.stats.rate_limited += 1;
            return self.refuse(id, Proto::Push, RpcError::RateLimited);
        }
        let now = self.now;
        if !self.peer(peer).records.take(req.records.len() as f64, now) {
            self.stats.rate_limited += 1;
            return self.refuse(id, Proto::Push, RpcError::RateLimited);
        }
        let records: Vec<Vec<u8>> = req.records.into_iter().map(ByteBuf::into_vec).collect();
        let others = records.iter().any(|b| !self.trust.is_known_card(b) && !is_card(b));
        let changes = self.receive(Source::Push(peer), records);
        self.apply(changes);
        // Card before anything else: until this node knows who the peer is (its card bound,
        // which may wait for a check of its HTTPS origin), the peer's other records could
        // not be judged; it is told so and sends them again.
        let error = (others && self.trust.name_of(&peer).is_none()).then_some(RpcError::UnknownNode);
        self.outputs.push_back(Output::Respond { id, data: rpc::encode(&PushResponse { error }) });
    }

    /// A peer broke a rule: past the limit it is cut off for a while.
    pub(crate) fn strike(&mut self, key: NodeKey) {
        let limit = self.cfg.limits.strikes;
        let now = self.now;
        let p = self.peer(key);
        p.strikes += 1.0;
        if p.strikes > limit && p.banned_until <= now {
            p.banned_until = now + BAN;
            p.strikes = 0.0;
            tracing::warn!(peer = %short(&key), "a peer broke the rules too often; cut off for a minute");
            self.outputs.push_back(Output::Disconnect(key));
        }
    }

    pub(super) fn decay_strikes(&mut self) {
        let per_tick = self.cfg.tick as f64 / 10_000.0;
        for p in self.peers.values_mut() {
            p.strikes = (p.strikes - per_tick).max(0.0);
        }
    }

    /// Peers connected now (and not refused), for metrics.
    pub fn connected_peers(&self) -> usize {
        self.peers.values().filter(|p| p.connected).count()
    }

    /// Records waiting for each peer, for metrics.
    pub fn queued(&self) -> usize {
        self.peers.values().map(Peer::queued).sum()
    }
}

/// Whether an envelope is a node card (by its kind, without judging it).
fn is_card(bytes: &[u8]) -> bool {
    voicechat_protocol::Envelope::decode(bytes).is_ok_and(|e| e.kind == "node_card")
}

/// A key's first bytes in hex, for logs.
pub(crate) fn short(key: &NodeKey) -> String {
    hex::encode(&key.as_bytes()[..6])
}
