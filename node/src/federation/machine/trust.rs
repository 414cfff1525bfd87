//! Who a node name belongs to. A name is bound to a key only by the operator's pin, or,
//! for a DNS name in open mode, by the card its HTTPS origin serves under a verified
//! certificate; in open mode a name that is not a DNS name is trusted on first use, and
//! only from the key's own connection. A pin beats a verified binding, which beats one
//! trusted on first use: the operator's word can never be pre-empted by a stranger who
//! claimed the name first. One name per key; blocked names and keys are never bound.

use std::collections::{HashMap, HashSet};

use voicechat_protocol::ids::NodeName;
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{NodeCard, Record};
use voicechat_protocol::validate::{self, Authorities};
use voicechat_protocol::ProtocolError;

use super::{CommandId, CommandResult, Dropped, Machine, Output};
use crate::core::Change;
use crate::store::{PeerRecord, Trust};

/// Who may federate with this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only nodes the operator pinned.
    Closed,
    /// Also nodes whose DNS name is verified over HTTPS, and (names that are not DNS names)
    /// nodes trusted on first use.
    Open,
}

/// A name's binding.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) key: NodeKey,
    pub(crate) trust: Trust,
    pub(crate) seq: u64,
    pub(crate) card: Vec<u8>,
}

fn rank(t: Trust) -> u8 {
    match t {
        Trust::Tofu => 0,
        Trust::Verified => 1,
        Trust::Pinned => 2,
    }
}

/// A name being checked against its HTTPS origin.
#[derive(Debug, Default)]
struct Verifying {
    /// The key a pushed card claimed for it, if the check started from a card.
    expect: Option<NodeKey>,
    /// Commands waiting for the result.
    waiters: Vec<CommandId>,
}

/// Names, keys, pins and blocks.
#[derive(Debug)]
pub(crate) struct TrustTable {
    mode: Mode,
    me: NodeName,
    my_key: NodeKey,
    pins: HashMap<NodeKey, Vec<String>>,
    blocked_keys: HashSet<NodeKey>,
    blocked_names: HashSet<NodeName>,
    by_name: HashMap<NodeName, Binding>,
    by_key: HashMap<NodeKey, NodeName>,
    verifying: HashMap<NodeName, Verifying>,
    /// The bound cards' bytes, to recognise a card sent again without decoding it.
    known: HashSet<Vec<u8>>,
    max_bindings: usize,
}

/// Whether a name is a DNS name whose HTTPS origin can vouch for it: at least two labels
/// and not `localhost`.
pub(crate) fn is_dns_name(name: &NodeName) -> bool {
    let s = name.as_str();
    s.contains('.') && !s.ends_with(".localhost") && !s.ends_with(".local")
}

impl TrustTable {
    pub(crate) fn new(mode: Mode, me: NodeName, my_key: NodeKey, max_bindings: usize) -> Self {
        Self {
            mode,
            me,
            my_key,
            pins: HashMap::new(),
            blocked_keys: HashSet::new(),
            blocked_names: HashSet::new(),
            by_name: HashMap::new(),
            by_key: HashMap::new(),
            verifying: HashMap::new(),
            known: HashSet::new(),
            max_bindings,
        }
    }

    pub(crate) fn pin(&mut self, key: NodeKey, addrs: Vec<String>) {
        let entry = self.pins.entry(key).or_default();
        for a in addrs {
            if !entry.contains(&a) {
                entry.push(a);
            }
        }
    }

    pub(crate) fn block_key(&mut self, key: NodeKey) {
        self.blocked_keys.insert(key);
        self.unbind_key(&key);
    }

    pub(crate) fn block_name(&mut self, name: NodeName) {
        if let Some(key) = self.by_name.get(&name).map(|b| b.key) {
            self.unbind_key(&key);
        }
        self.blocked_names.insert(name);
    }

    pub(crate) fn unpin(&mut self, key: &NodeKey) {
        self.pins.remove(key);
    }

    pub(crate) fn unblock_key(&mut self, key: &NodeKey) {
        self.blocked_keys.remove(key);
    }

    pub(crate) fn unblock_name(&mut self, name: &NodeName) {
        self.blocked_names.remove(name);
    }

    /// The key `name` is bound to, if any.
    pub(crate) fn key_of_name(&self, name: &NodeName) -> Option<NodeKey> {
        self.by_name.get(name).map(|b| b.key)
    }

    pub(crate) fn is_pinned(&self, key: &NodeKey) -> bool {
        self.pins.contains_key(key)
    }

    pub(crate) fn is_blocked(&self, key: &NodeKey) -> bool {
        self.blocked_keys.contains(key)
    }

    /// Whether this node may talk to `key` at all.
    pub(crate) fn may_connect(&self, key: &NodeKey) -> bool {
        !self.is_blocked(key) && (self.mode == Mode::Open || self.is_pinned(key))
    }

    /// The name bound to a key.
    pub(crate) fn name_of(&self, key: &NodeKey) -> Option<&NodeName> {
        self.by_key.get(key)
    }

    /// The key bound to a name (this node's own included).
    pub(crate) fn key_of(&self, name: &NodeName) -> Option<NodeKey> {
        if name == &self.me {
            return Some(self.my_key);
        }
        self.by_name.get(name).map(|b| b.key)
    }

    /// Whether a bound node is vouched for by more than first use (its cards are
    /// forwarded, its addresses dialled).
    pub(crate) fn is_vouched(&self, key: &NodeKey) -> bool {
        self.by_key
            .get(key)
            .and_then(|n| self.by_name.get(n))
            .is_some_and(|b| b.trust != Trust::Tofu)
            || self.is_pinned(key)
    }

    /// The names and cards of the nodes vouched for (pinned or verified).
    pub(crate) fn vouched(&self) -> impl Iterator<Item = (&NodeName, &[u8])> {
        self.by_name.iter().filter(|(_, b)| b.trust != Trust::Tofu).map(|(n, b)| (n, b.card.as_slice()))
    }

    /// Whether these are the exact bytes of a card already bound.
    pub(crate) fn is_known_card(&self, bytes: &[u8]) -> bool {
        self.known.contains(bytes)
    }

    /// Loads a stored binding at start; returns the dial it calls for.
    pub(crate) fn load(&mut self, p: &PeerRecord) -> Option<Output> {
        let key = p.node_key()?;
        if self.blocked_keys.contains(&key) || self.blocked_names.contains(&p.name) {
            return None;
        }
        // A pin removed since: the binding no longer stands (the card comes again on
        // connect and is judged afresh).
        if p.trust == Trust::Pinned && !self.is_pinned(&key) {
            return None;
        }
        if p.trust == Trust::Tofu && self.mode == Mode::Closed {
            return None;
        }
        let b = Binding { key, trust: p.trust, seq: p.seq, card: p.card_bytes() };
        self.bind(p.name.clone(), b);
        (p.trust != Trust::Tofu).then(|| Output::Dial { peer: key, addrs: p.addrs.clone() })
    }

    fn bind(&mut self, name: NodeName, b: Binding) {
        if let Some(old) = self.by_name.get(&name) {
            self.known.remove(&old.card);
            if old.key != b.key {
                self.by_key.remove(&old.key);
            }
        }
        self.known.insert(b.card.clone());
        self.by_key.insert(b.key, name.clone());
        self.by_name.insert(name, b);
    }

    fn unbind_key(&mut self, key: &NodeKey) {
        if let Some(name) = self.by_key.remove(key)
            && let Some(b) = self.by_name.remove(&name)
        {
            self.known.remove(&b.card);
        }
    }
}

/// Node keys only for signers of other kinds; cards are judged by [`Machine::judge_card`].
struct NoNames;

impl Authorities for NoNames {
    fn node_key(&self, _: &NodeName) -> Option<NodeKey> {
        None
    }
    fn group_home(&self, _: &voicechat_protocol::ids::GroupId) -> Option<NodeName> {
        None
    }
    fn is_member(&self, _: &voicechat_protocol::ids::GroupId, _: &voicechat_protocol::ids::UserId) -> bool {
        false
    }
}

/// What judging a card came to.
pub(crate) enum CardOutcome {
    /// Bound (or re-bound): store it.
    Bound(Change),
    /// Its name is being verified; nothing to store yet.
    Verifying,
}

impl Machine {
    /// Judges a node card pushed by `from`: signature and fields, then the trust rules.
    pub(crate) fn judge_card(&mut self, from: NodeKey, bytes: &[u8]) -> Result<CardOutcome, Dropped> {
        // The card already bound, byte for byte (every reconnect sends it again): judged
        // before, nothing new; spare the signature check.
        if self.trust.is_known_card(bytes) {
            return Err(Dropped::NotWanted("a card already bound"));
        }
        let v = validate::verify(bytes, self.now_secs(), &NoNames)?;
        let Record::NodeCard(card) = v.record else { return Err(Dropped::Policy("not a node card")) };
        self.bind_card(Some(from), card, bytes.to_vec(), None)
    }

    /// The trust rules for a card whose signature and fields are valid. `from` is the peer
    /// that delivered it (None: fetched from its verified HTTPS origin, `verified`).
    fn bind_card(
        &mut self,
        from: Option<NodeKey>,
        card: NodeCard,
        bytes: Vec<u8>,
        verified: Option<()>,
    ) -> Result<CardOutcome, Dropped> {
        let t = &mut self.trust;
        let (key, name) = (card.key, card.name.clone());
        if name == t.me || key == t.my_key {
            return Err(ProtocolError::WrongAuthority { kind: "node_card", reason: "this node's own name or key" }.into());
        }
        if t.blocked_keys.contains(&key) || t.blocked_names.contains(&name) {
            return Err(Dropped::Policy("blocked node"));
        }
        if let Some(other) = t.by_key.get(&key)
            && other != &name
        {
            return Err(Dropped::Policy("one name per key"));
        }
        let level = if t.is_pinned(&key) {
            Some(Trust::Pinned)
        } else if verified.is_some() {
            Some(Trust::Verified)
        } else {
            match t.by_name.get(&name) {
                Some(b) if b.key == key => Some(b.trust),
                _ => None,
            }
        };
        let existing = t.by_name.get(&name).cloned();
        let level = match level {
            Some(l) => l,
            None if t.mode == Mode::Closed => return Err(Dropped::NotWanted("not a pinned node")),
            None if is_dns_name(&name) => {
                if existing.as_ref().is_some_and(|b| b.key != key && b.trust != Trust::Tofu) {
                    return Err(ProtocolError::WrongAuthority { kind: "node_card", reason: "name is bound to another key" }.into());
                }
                if !t.verifying.contains_key(&name) {
                    if t.verifying.len() >= self.cfg.limits.verifications {
                        return Err(Dropped::NotWanted("too many verifications in flight"));
                    }
                    t.verifying.insert(name.clone(), Verifying { expect: Some(key), waiters: Vec::new() });
                    self.outputs.push_back(Output::Verify { name });
                }
                return Ok(CardOutcome::Verifying);
            }
            None if from == Some(key) => Trust::Tofu,
            None => return Err(Dropped::NotWanted("a card forwarded for a node not trusted here")),
        };
        if let Some(b) = &existing {
            if b.key == key {
                if card.seq <= b.seq {
                    return Err(ProtocolError::Replayed { seq: card.seq, last: b.seq }.into());
                }
            } else if rank(b.trust) >= rank(level) {
                return Err(ProtocolError::WrongAuthority { kind: "node_card", reason: "name is bound to another key" }.into());
            } else {
                tracing::warn!(node = %name, old = ?b.trust, new = ?level, "a stronger binding replaces a name's key");
            }
        } else if t.by_name.len() >= t.max_bindings {
            return Err(Dropped::NotWanted("card store full"));
        }
        let first = existing.as_ref().is_none_or(|b| b.key != key);
        let b = Binding { key, trust: level, seq: card.seq, card: bytes };
        let record = PeerRecord {
            name: name.clone(),
            key: hex::encode(key.as_bytes()),
            url: card.url.trim_end_matches('/').to_owned(),
            addrs: card.addrs.clone(),
            seq: card.seq,
            card: hex::encode(&b.card),
            trust: level,
        };
        t.bind(name.clone(), b);
        if level != Trust::Tofu {
            let mut addrs = card.addrs.clone();
            if let Some(pinned) = t.pins.get(&key) {
                addrs.extend(pinned.iter().cloned());
            }
            self.outputs.push_back(Output::Dial { peer: key, addrs });
        }
        tracing::info!(node = %name, trust = ?level, "bound a node name");
        self.on_bound(key, &name, first);
        Ok(CardOutcome::Bound(Change::Card(record)))
    }

    pub(super) fn on_verified(&mut self, name: NodeName, result: Result<Vec<u8>, String>) {
        let Some(v) = self.trust.verifying.remove(&name) else { return };
        let outcome = match result {
            Err(e) => Err(e),
            Ok(bytes) => match validate::verify(&bytes, self.now_secs(), &NoNames) {
                Ok(ok) => match ok.record {
                    Record::NodeCard(card) if card.name != name => Err(format!("{name} served the card of {}", card.name)),
                    Record::NodeCard(card) if v.expect.is_some_and(|k| k != card.key) => {
                        Err(format!("{name} serves another key than the one that claimed it"))
                    }
                    Record::NodeCard(card) => match self.bind_card(None, card, bytes, Some(())) {
                        Ok(CardOutcome::Bound(change)) => {
                            self.count("node_card", None, Ok(()));
                            // Callers hear once the binding is stored (they read it next).
                            if let Some(batch) = self.apply(vec![change]) {
                                for id in v.waiters {
                                    let r = (id, CommandResult::Discovered(Ok(())));
                                    self.after_apply.entry(batch).or_default().push(r);
                                }
                            }
                            return;
                        }
                        Ok(CardOutcome::Verifying) => Err("verification loop".into()),
                        Err(Dropped::Protocol(ProtocolError::Replayed { .. })) => Ok(()),
                        Err(d) => Err(d.reason().to_owned()),
                    },
                    _ => Err(format!("{name} served something that is not a node card")),
                },
                Err(e) => Err(format!("{name} served an invalid card: {e}")),
            },
        };
        if let Err(e) = &outcome {
            tracing::warn!(node = %name, error = %e, "could not verify a node name");
        }
        for id in v.waiters {
            let result = CommandResult::Discovered(outcome.clone().map_err(|e| format!("cannot verify {name}: {e}")));
            self.outputs.push_back(Output::Done { id, result });
        }
    }

    pub(super) fn discover(&mut self, id: CommandId, name: NodeName) {
        let done = |r| Output::Done { id, result: CommandResult::Discovered(r) };
        if self.trust.key_of(&name).is_some() {
            return self.outputs.push_back(done(Ok(())));
        }
        if self.trust.mode == Mode::Closed {
            let msg = format!("{name} is not a node this node federates with; ask the operator to add it as a peer");
            return self.outputs.push_back(done(Err(msg)));
        }
        if !is_dns_name(&name) {
            let msg = format!("{name} is not a DNS name, so it cannot be verified; ask the operator to add it as a peer");
            return self.outputs.push_back(done(Err(msg)));
        }
        if self.trust.blocked_names.contains(&name) {
            return self.outputs.push_back(done(Err(format!("{name} is blocked on this node"))));
        }
        let full = self.trust.verifying.len() >= self.cfg.limits.verifications;
        match self.trust.verifying.get_mut(&name) {
            Some(v) => v.waiters.push(id),
            None if full => {
                self.outputs.push_back(done(Err("too many verifications in flight; try again".into())));
            }
            None => {
                self.trust.verifying.insert(name.clone(), Verifying { expect: None, waiters: vec![id] });
                self.outputs.push_back(Output::Verify { name });
            }
        }
    }

}
