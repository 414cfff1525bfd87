//! The cascade between nodes' forwarding units, as federation sees it (SPEC.md §9.6): the
//! plan of `sfu::cascade` fed from presence (who of which node is in which stage room) and
//! this node's seats, and the `/voicechat/cascade/1` requests that set links up. The SFU
//! work itself (offers, answers, media) is asked of the driver through outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{NodeName, Nonce};
use voicechat_protocol::records::{Cascade, CascadeType, Record};
use voicechat_protocol::rpc::{self, CascadeRequest, CascadeResponse, MAX_CASCADE_MESSAGE, RpcError};

use super::replica::{View, open_trusted};
use super::{Dropped, Failure, InboundId, Machine, Output, Pending, Proto};
use crate::rooms::RoomKey;
use crate::sfu::LinkKey;
use crate::sfu::cascade::Action;

/// How long a cascade message this node signs stays valid, in seconds.
const CASCADE_TTL: u64 = 60;

impl Machine {
    /// The machine's clock as an `Instant` for the plan (which counts in those).
    fn cascade_instant(&self) -> Instant {
        let (ms, at) = self.cascade_epoch;
        at + Duration::from_millis(self.now.saturating_sub(ms))
    }

    fn is_stage(&self, room: &RoomKey) -> bool {
        let Some(held) = self.groups.get(&room.0).and_then(|g| g.rooms.get(&room.1)) else { return false };
        held.live && matches!(open_trusted(&held.envelope), Some(Record::RoomInfo(r)) if r.stage)
    }

    /// Brings the plan's counts and reachability up to date with presence and seats.
    /// Whether the call in `room` cascades: a stage, or a conversation on the SFU here.
    fn cascades(&self, room: &RoomKey) -> bool {
        self.sfu_rooms.contains(room) || self.is_stage(room)
    }

    fn cascade_counts(&mut self) {
        let me = self.cfg.me.clone();
        let now_s = self.now_secs();
        let mut local: HashMap<RoomKey, usize> = HashMap::new();
        let mut occupied: HashSet<RoomKey> = HashSet::new();
        for (room, _) in self.seats.values() {
            occupied.insert(*room);
            if self.cascades(room) {
                *local.entry(*room).or_default() += 1;
            }
        }
        let mut remote: HashMap<RoomKey, BTreeMap<NodeName, usize>> = HashMap::new();
        for (g, group) in &self.groups {
            for ((user, _), p) in &group.presence {
                let room = (*g, p.room);
                if user.node != me && p.expires_at >= now_s {
                    occupied.insert(room);
                    if self.cascades(&room) {
                        *remote.entry(room).or_default().entry(user.node.clone()).or_default() += 1;
                    }
                }
            }
        }
        // A call that empties starts over as a mesh (as the core's rooms do).
        self.sfu_rooms.retain(|r| occupied.contains(r));
        let nodes: Vec<NodeName> = remote.values().flat_map(|m| m.keys().cloned()).collect();
        for n in nodes {
            let up = self.trust.key_of(&n).is_some_and(|k| self.peers.get(&k).is_some_and(|p| p.connected));
            self.cascade.set_reachable(&n, up);
        }
        self.cascade.set_all(local, remote);
    }

    /// Re-plans the links: opens, closes, and drops the ones served to nodes that may no
    /// longer pull. Called on every tick and whenever presence or seats change.
    pub(super) fn refresh_cascade(&mut self) {
        if !self.cfg.cascade {
            return;
        }
        self.cascade_counts();
        let now = self.cascade_instant();
        for action in self.cascade.poll(now) {
            match action {
                Action::Open(link) => {
                    tracing::info!(node = %link.node, "cascade: pulling a node's speakers");
                    self.outputs.push_back(Output::CascadePull { link: (link.room, link.node) });
                }
                Action::Close(link) => {
                    tracing::info!(node = %link.node, "cascade: no longer pulling a node's speakers");
                    let gone = !self.cascade.is_reachable(&link.node);
                    let key = (link.room, link.node);
                    if gone {
                        self.lost(key.clone());
                    }
                    self.outputs.push_back(Output::CascadeUnpull { link: key.clone() });
                    self.send_cascade(key, CascadeType::Close, String::new());
                }
            }
        }
        // Served links end when the node may no longer pull, or is cut off (its side is gone).
        let gone: Vec<LinkKey> = self
            .served
            .iter()
            .filter(|(room, node)| self.cascade.may_pull(room, node).is_err() || !self.cascade.is_reachable(node))
            .cloned()
            .collect();
        for link in gone {
            self.served.remove(&link);
            self.outputs.push_back(Output::CascadeUnserve { link });
        }
        self.tell_cascaded();
    }

    /// Tells each call here which nodes it reaches through the cascade both ways (we pull
    /// theirs, they pull ours), when that changed.
    fn tell_cascaded(&mut self) {
        let mut rooms: BTreeSet<RoomKey> = self.cascade_told.keys().copied().collect();
        rooms.extend(self.cascade.wanted().into_iter().map(|l| l.room));
        for room in rooms {
            let nodes: Vec<NodeName> = self
                .cascade
                .nodes_in(&room)
                .into_iter()
                .filter(|n| self.served.contains(&(room, n.clone())) && self.cascade.is_up(&crate::sfu::cascade::Link { room, node: n.clone() }))
                .collect();
            let told = self.cascade_told.get(&room).cloned().unwrap_or_default();
            if nodes != told {
                if nodes.is_empty() {
                    self.cascade_told.remove(&room);
                } else {
                    self.cascade_told.insert(room, nodes.clone());
                }
                self.outputs.push_back(Output::CascadeNodes { room, nodes });
            }
        }
    }

    /// The SFU made an offer for a pull (or could not).
    pub(super) fn on_cascade_offer(&mut self, link: LinkKey, result: Result<String, String>) {
        match result {
            Ok(sdp) => self.send_cascade(link, CascadeType::Offer, sdp),
            Err(e) => {
                tracing::warn!(error = %e, "cascade: the SFU could not offer a link");
                self.cascade_failed(&link);
            }
        }
    }

    /// The SFU says a pulled link is up, or ended.
    pub(super) fn on_cascade_link(&mut self, link: LinkKey, up: bool) {
        let l = crate::sfu::cascade::Link { room: link.0, node: link.1.clone() };
        if up {
            self.cascade.opened(&l);
            if self.cascade_lost.remove(&link) {
                self.outputs.push_back(Output::CascadeReach { link, up: true });
            }
        } else {
            tracing::info!(node = %link.1, "cascade: a link ended");
            self.cascade_failed(&link);
            self.lost(link);
        }
        self.tell_cascaded();
    }

    /// This node's people in the room are told once that the node cannot be heard.
    fn lost(&mut self, link: LinkKey) {
        if self.cascade_lost.insert(link.clone()) {
            self.outputs.push_back(Output::CascadeReach { link, up: false });
        }
    }

    fn cascade_failed(&mut self, link: &LinkKey) {
        let l = crate::sfu::cascade::Link { room: link.0, node: link.1.clone() };
        let now = self.cascade_instant();
        self.cascade.failed(&l, now);
        self.outputs.push_back(Output::CascadeUnpull { link: link.clone() });
    }

    fn send_cascade(&mut self, link: LinkKey, kind: CascadeType, sdp: String) {
        let (room, node) = link.clone();
        let Some(key) = self.trust.key_of(&node).filter(|k| self.peers.get(k).is_some_and(|p| p.connected)) else {
            if kind == CascadeType::Offer {
                self.cascade_failed(&link);
            }
            return;
        };
        let nonce = Nonce::from_bytes(self.random16());
        let (me, expires_at) = (self.cfg.me.clone(), self.now_secs() + CASCADE_TTL);
        let envelope = self.signer.seal_at(self.now * 1000, |_| {
            Record::Cascade(Cascade { to: node, sdp, from: me, room: room.1, cascade_type: kind, group: room.0, nonce, expires_at })
        });
        let req = rpc::encode(&CascadeRequest { envelope: ByteBuf::from(envelope) });
        let pending = if kind == CascadeType::Offer { Pending::Cascade { link } } else { Pending::CascadeClose };
        self.request(key, Proto::Cascade, req, pending);
    }

    /// The answer to our offer: a signed answer from the node asked, or a refusal.
    pub(super) fn on_cascade_response(&mut self, link: LinkKey, result: Result<Vec<u8>, Failure>) {
        let refused = |m: &mut Self, why: &str| {
            tracing::info!(node = %link.1, why, "cascade: a pull was refused");
            m.cascade_failed(&link);
        };
        let resp = match result.map(|b| rpc::decode::<CascadeResponse>(&b, MAX_CASCADE_MESSAGE)) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return refused(self, "an answer that does not decode"),
            Err(_) => return refused(self, "no answer"),
        };
        let Some(envelope) = resp.envelope.filter(|_| resp.error.is_none()) else {
            return refused(self, resp.error.map_or("an empty answer", |e| if e == RpcError::NotInRoom { "not in the room" } else { "an error" }));
        };
        let now_s = self.now_secs();
        let verified = match self.validator.check(&envelope, now_s, &View { m: self }) {
            Ok(v) => v,
            Err(e) => {
                let key = self.trust.key_of(&link.1);
                self.count("cascade", key, Err(&Dropped::Protocol(e)));
                return refused(self, "an answer that is not valid");
            }
        };
        let ok = matches!(&verified.record, Record::Cascade(c)
            if c.cascade_type == CascadeType::Answer && c.from == link.1 && c.to == self.cfg.me
                && c.group == link.0.0 && c.room == link.0.1)
            && self.trust.key_of(&link.1) == Some(verified.envelope.signer);
        let Record::Cascade(c) = &verified.record else { return refused(self, "not a cascade") };
        if !ok {
            let key = self.trust.key_of(&link.1);
            self.count("cascade", key, Err(&Dropped::Policy("a cascade answer for another link")));
            return refused(self, "an answer for another link");
        }
        let answer = c.sdp.clone();
        self.validator.accept(&verified, now_s);
        self.count("cascade", None, Ok(()));
        self.outputs.push_back(Output::CascadePulled { link, answer });
    }

    /// Another node asks to pull this node's speakers in a room, or stops (§9.6).
    pub(super) fn on_cascade_request(&mut self, peer: voicechat_protocol::keys::NodeKey, id: InboundId, data: &[u8]) {
        let Ok(req) = rpc::decode::<CascadeRequest>(data, MAX_CASCADE_MESSAGE) else {
            self.strike(peer);
            return self.refuse(id, Proto::Cascade, RpcError::Invalid);
        };
        let now_s = self.now_secs();
        let verified = match self.validator.check(&req.envelope, now_s, &View { m: self }) {
            Ok(v) => v,
            Err(e) => {
                self.count("cascade", Some(peer), Err(&Dropped::Protocol(e)));
                return self.refuse(id, Proto::Cascade, RpcError::Invalid);
            }
        };
        let c = match &verified.record {
            Record::Cascade(c) if c.cascade_type != CascadeType::Answer => c.clone(),
            _ => {
                self.count(&verified.envelope.kind, Some(peer), Err(&Dropped::Policy("not a cascade request")));
                return self.refuse(id, Proto::Cascade, RpcError::Invalid);
            }
        };
        if verified.envelope.signer != peer {
            self.count("cascade", Some(peer), Err(&Dropped::Policy("a signal relayed by a third node")));
            return self.refuse(id, Proto::Cascade, RpcError::Invalid);
        }
        if c.to != self.cfg.me {
            return self.refuse(id, Proto::Cascade, RpcError::NotHome);
        }
        let link: LinkKey = ((c.group, c.room), c.from.clone());
        if self.cfg.cascade {
            self.cascade_counts();
        }
        if !self.cfg.cascade || self.cascade.may_pull(&link.0, &link.1).is_err() {
            self.count("cascade", Some(peer), Err(&Dropped::NotWanted("a cascade for a room without people of both nodes")));
            return self.refuse(id, Proto::Cascade, RpcError::NotInRoom);
        }
        self.validator.accept(&verified, now_s);
        self.count("cascade", None, Ok(()));
        match c.cascade_type {
            CascadeType::Close => {
                self.served.remove(&link);
                self.outputs.push_back(Output::CascadeUnserve { link });
                self.outputs.push_back(Output::Respond { id, data: rpc::encode(&CascadeResponse::default()) });
            }
            _ => {
                self.served.insert(link.clone());
                self.outputs.push_back(Output::CascadeServe { reply: id, link, offer: c.sdp });
            }
        }
    }

    /// The SFU answered a pull from another node (or refused the offer).
    pub(super) fn on_cascade_served(&mut self, reply: InboundId, link: LinkKey, result: Result<String, String>) {
        let sdp = match result {
            Ok(sdp) => sdp,
            Err(e) => {
                tracing::info!(node = %link.1, error = %e, "cascade: refused an offer");
                self.served.remove(&link);
                return self.refuse(reply, Proto::Cascade, RpcError::Invalid);
            }
        };
        let ((group, room), node) = link;
        let nonce = Nonce::from_bytes(self.random16());
        let (me, expires_at) = (self.cfg.me.clone(), self.now_secs() + CASCADE_TTL);
        let envelope = self.signer.seal_at(self.now * 1000, |_| {
            Record::Cascade(Cascade { to: node, sdp, from: me, room, cascade_type: CascadeType::Answer, group, nonce, expires_at })
        });
        let data = rpc::encode(&CascadeResponse { error: None, envelope: Some(ByteBuf::from(envelope)) });
        self.outputs.push_back(Output::Respond { id: reply, data });
    }
}
