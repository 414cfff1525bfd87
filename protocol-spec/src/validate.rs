//! The receiver's rules (SPEC.md §7) as pure functions over a small replay state.
//!
//! [`verify`] is stateless: size caps, strict decoding, signature, field limits, authority
//! (through the caller's [`Authorities`]) and expiry. [`Validator`] adds the replay rule:
//! `seq` strictly above the last accepted for (signer, kind, subject), each signal nonce
//! once. [`Validator::check`] does not change state; [`Validator::accept`] records a
//! verified record; [`Validator::validate`] does both. Time is a parameter (unix seconds).

use std::collections::HashMap;

use crate::envelope::Envelope;
use crate::error::ProtocolError;
use crate::ids::{GroupId, NodeName, UserId};
use crate::keys::NodeKey;
use crate::records::{Record, SignalType, Subject};

/// How far a peer's clock may be off ours, in seconds, when judging `expires_at`.
pub const CLOCK_SKEW: u64 = 30;
/// Longest lifetime of a presence record: `expires_at` at most this + skew after now.
pub const PRESENCE_MAX_TTL: u64 = 300;
/// Longest lifetime of a signal (and of a cascade message).
pub const SIGNAL_MAX_TTL: u64 = 120;
/// Default number of (signer, subject) entries a [`Validator`] keeps.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// What the caller knows about the network, so the crate can judge authority without I/O.
pub trait Authorities {
    /// The key bound to node `node`, if one is known.
    fn node_key(&self, node: &NodeName) -> Option<NodeKey>;
    /// The home node of `group`, if known.
    fn group_home(&self, group: &GroupId) -> Option<NodeName>;
    /// Whether `user` is currently a member of `group`.
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool;
}

/// A record that passed every stateless rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The envelope as received.
    pub envelope: Envelope,
    /// Its decoded record.
    pub record: Record,
}

/// All stateless rules, in the order SPEC.md §7 states them.
pub fn verify(bytes: &[u8], now: u64, auth: &impl Authorities) -> Result<Verified, ProtocolError> {
    let envelope = Envelope::decode(bytes)?;
    let record = envelope.open()?;
    check_authority(envelope.signer, &record, auth)?;
    check_time(&record, now)?;
    Ok(Verified { envelope, record })
}

/// Is `signer` the authority for this record's kind and subject?
pub fn check_authority(
    signer: NodeKey,
    record: &Record,
    auth: &impl Authorities,
) -> Result<(), ProtocolError> {
    let kind = record.kind().as_str();
    let wrong = |reason| ProtocolError::WrongAuthority { kind, reason };
    let key_of = |node: &NodeName| {
        auth.node_key(node)
            .ok_or_else(|| ProtocolError::UnknownNode(node.clone()))
    };
    let home_key = |group: &GroupId| {
        let home = auth
            .group_home(group)
            .ok_or(ProtocolError::UnknownGroup(*group))?;
        key_of(&home)
    };
    let member = |group: &GroupId, user: &UserId| match auth.is_member(group, user) {
        true => Ok(()),
        false => Err(ProtocolError::NotMember(user.clone())),
    };
    match record {
        Record::NodeCard(r) => {
            if r.key != signer {
                return Err(wrong("key is not the signer"));
            }
            match auth.node_key(&r.name) {
                Some(bound) if bound != signer => Err(wrong("name is bound to another key")),
                _ => Ok(()),
            }
        }
        Record::GroupInfo(r) => {
            if key_of(&r.home)? != signer {
                return Err(wrong("signer is not the named home node"));
            }
            match auth.group_home(&r.group) {
                Some(home) if home != r.home => Err(wrong("group has another home node")),
                _ => Ok(()),
            }
        }
        Record::Membership(r) if home_key(&r.group)? != signer => {
            Err(wrong("signer is not the group's home node"))
        }
        Record::RoomInfo(r) if home_key(&r.group)? != signer => {
            Err(wrong("signer is not the group's home node"))
        }
        Record::Membership(_) | Record::RoomInfo(_) => Ok(()),
        Record::Presence(r) => {
            if key_of(&r.user.node)? != signer {
                return Err(wrong("signer is not the user's home node"));
            }
            member(&r.group, &r.user)
        }
        Record::Signal(r) => {
            // A moderation is decided by the group's home: the moderator's node sends it
            // there, and the home hands it on to the target's node under its own key
            // (SPEC.md §6.6). Every other signal comes from the sender's home node.
            let by_home = || r.signal_type == SignalType::Moderate && home_key(&r.group).is_ok_and(|k| k == signer);
            if key_of(&r.from.node)? != signer && !by_home() {
                return Err(wrong("signer is not the sender's home node"));
            }
            member(&r.group, &r.from)?;
            member(&r.group, &r.to)
        }
        Record::Cascade(r) => {
            if key_of(&r.from)? != signer {
                return Err(wrong("signer is not the sending node"));
            }
            // The room must be of a group whose home is known; whether the nodes have
            // people in it is the receiving node's judgement (SPEC.md §9.5).
            home_key(&r.group).map(|_| ())
        }
        Record::Consent(r) => {
            if key_of(&r.user.node)? != signer {
                return Err(wrong("signer is not the user's home node"));
            }
            if auth.group_home(&r.group).is_none() {
                return Err(ProtocolError::UnknownGroup(r.group));
            }
            member(&r.group, &r.user)
        }
    }
}

/// Expiry of presence and signals: void once `now > expires_at + CLOCK_SKEW`, and
/// `expires_at` may be at most the kind's max TTL + skew ahead of `now`.
pub fn check_time(record: &Record, now: u64) -> Result<(), ProtocolError> {
    let (expires_at, max_ttl) = match record {
        Record::Presence(r) => (r.expires_at, PRESENCE_MAX_TTL),
        Record::Signal(r) => (r.expires_at, SIGNAL_MAX_TTL),
        Record::Cascade(r) => (r.expires_at, SIGNAL_MAX_TTL),
        _ => return Ok(()),
    };
    if now > expires_at.saturating_add(CLOCK_SKEW) {
        return Err(ProtocolError::Expired { expires_at, now });
    }
    if expires_at > now.saturating_add(max_ttl + CLOCK_SKEW) {
        return Err(ProtocolError::ExpiryTooFar {
            expires_at,
            now,
            max_ttl,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    expires_at: Option<u64>,
    tick: u64,
}

/// The replay state: the last accepted `seq` per (signer, kind, subject) and the signal
/// nonces seen, bounded by a capacity (see [`Validator::accept`] for what happens when full).
#[derive(Debug, Clone)]
pub struct Validator {
    seen: HashMap<(NodeKey, Subject), Entry>,
    capacity: usize,
    tick: u64,
}

impl Default for Validator {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Validator {
    /// An empty state with [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state holding at most `capacity` (at least 8) entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            capacity: capacity.max(8),
            tick: 0,
        }
    }

    /// Every rule, without changing the state.
    pub fn check(
        &self,
        bytes: &[u8],
        now: u64,
        auth: &impl Authorities,
    ) -> Result<Verified, ProtocolError> {
        let verified = verify(bytes, now, auth)?;
        let key = (verified.envelope.signer, verified.record.subject());
        if let Some(last) = self.seen.get(&key) {
            match verified.record.seq() {
                Some(seq) if seq > last.seq => {}
                Some(seq) => {
                    return Err(ProtocolError::Replayed {
                        seq,
                        last: last.seq,
                    });
                }
                None => return Err(ProtocolError::Replayed { seq: 0, last: 0 }),
            }
        }
        Ok(verified)
    }

    /// Records a verified record's seq (never lowering it) or nonce. When a new entry would
    /// exceed the capacity, expired entries are dropped first, then the oldest-inserted
    /// eighth. A dropped non-expiring subject forgets its last seq, so the caller's store
    /// must still replace a stored record only by a higher seq.
    pub fn accept(&mut self, verified: &Verified, now: u64) {
        let key = (verified.envelope.signer, verified.record.subject());
        let seq = verified.record.seq().unwrap_or(0);
        let expires_at = verified.record.expires_at();
        self.tick += 1;
        if let Some(entry) = self.seen.get_mut(&key) {
            entry.seq = entry.seq.max(seq);
            entry.expires_at = entry.expires_at.max(expires_at);
            return;
        }
        if self.seen.len() >= self.capacity {
            self.prune(now);
        }
        if self.seen.len() >= self.capacity {
            self.evict_oldest(self.capacity / 8);
        }
        self.seen.insert(
            key,
            Entry {
                seq,
                expires_at,
                tick: self.tick,
            },
        );
    }

    /// [`check`](Self::check) then [`accept`](Self::accept).
    pub fn validate(
        &mut self,
        bytes: &[u8],
        now: u64,
        auth: &impl Authorities,
    ) -> Result<Verified, ProtocolError> {
        let verified = self.check(bytes, now, auth)?;
        self.accept(&verified, now);
        Ok(verified)
    }

    /// The last accepted seq for (signer, subject); `Some(0)` for a seen signal nonce.
    pub fn last_seq(&self, signer: &NodeKey, subject: &Subject) -> Option<u64> {
        self.seen.get(&(*signer, subject.clone())).map(|e| e.seq)
    }

    /// Preloads a last seq (e.g. from storage after a restart), never lowering one.
    pub fn remember(&mut self, signer: NodeKey, subject: Subject, seq: u64) {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.seen.entry((signer, subject)).or_insert(Entry {
            seq,
            expires_at: None,
            tick,
        });
        entry.seq = entry.seq.max(seq);
    }

    /// Drops entries of records void at `now` (an older record of the same subject is void
    /// too, since signers never lower `expires_at` for a subject).
    pub fn prune(&mut self, now: u64) {
        self.seen.retain(|_, e| {
            e.expires_at
                .is_none_or(|t| now <= t.saturating_add(CLOCK_SKEW))
        });
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn evict_oldest(&mut self, n: usize) {
        let mut ticks: Vec<u64> = self.seen.values().map(|e| e.tick).collect();
        if ticks.is_empty() {
            return;
        }
        let n = n.clamp(1, ticks.len());
        let (_, cut, _) = ticks.select_nth_unstable(n - 1);
        let cut = *cut;
        self.seen.retain(|_, e| e.tick > cut);
    }
}
