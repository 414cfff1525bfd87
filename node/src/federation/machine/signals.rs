//! Signals (WebRTC offers, answers, candidates between two browsers on two nodes) and
//! joins by invite code. A signal goes straight from the sender's node to the receiver's;
//! the receiver believes it only if its own peer signed it, both users are members and both
//! sessions are in the room. A signal that outruns its sender's presence waits (bounded,
//! for a moment) and is delivered when the presence arrives: no polling.

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{GroupId, NodeName, Nonce, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{Record, Signal, SignalType};
use voicechat_protocol::rpc::{self, InviteRequest, InviteResponse, RpcError, SignalRequest, SignalResponse};
use voicechat_protocol::validate::Verified;

use super::replica::{Source, View};
use super::{CommandId, CommandResult, Failure, InboundId, Machine, Millis, OutSignal, Output, Pending, Proto, RelayError};
use crate::core::{Announce, Change};

/// A signal waiting for its sender's presence.
#[derive(Debug)]
pub(crate) struct Queued {
    reply: InboundId,
    peer: NodeKey,
    verified: Verified,
    deadline: Millis,
}

/// How long a signal this node signs stays valid, in seconds.
const SIGNAL_TTL: u64 = 60;

impl Machine {
    pub(super) fn on_signal_request(&mut self, peer: NodeKey, id: InboundId, data: &[u8]) {
        let Ok(req) = rpc::decode::<SignalRequest>(data, rpc::MAX_SIGNAL_REQUEST) else {
            self.strike(peer);
            return self.refuse(id, Proto::Signal, RpcError::Invalid);
        };
        let now_s = self.now_secs();
        let verified = match self.validator.check(&req.envelope, now_s, &View { m: self }) {
            Ok(v) => v,
            Err(e) => {
                let d = super::Dropped::Protocol(e);
                self.count("signal", Some(peer), Err(&d));
                let code = match d {
                    super::Dropped::Protocol(voicechat_protocol::ProtocolError::NotMember(_)) => RpcError::NotMember,
                    _ => RpcError::Invalid,
                };
                return self.refuse(id, Proto::Signal, code);
            }
        };
        let Record::Signal(sig) = &verified.record else {
            self.count(&verified.envelope.kind, Some(peer), Err(&super::Dropped::Policy("not a signal")));
            return self.refuse(id, Proto::Signal, RpcError::Invalid);
        };
        // Signals travel directly: the connection's peer is the sender's home.
        if verified.envelope.signer != peer {
            self.count("signal", Some(peer), Err(&super::Dropped::Policy("a signal relayed by a third node")));
            return self.refuse(id, Proto::Signal, RpcError::Invalid);
        }
        if sig.signal_type == SignalType::Moderate {
            // Moderations go through the group's home (SPEC.md §6.6): the home takes them
            // from the moderator's node, for anyone in the call; any other node takes them
            // only from the home, for its own users.
            let home = self.groups.get(&sig.group).map(|g| g.home.clone());
            if home.as_ref() != Some(&self.cfg.me) {
                if home.and_then(|h| self.trust.key_of(&h)) != Some(peer) {
                    let d = super::Dropped::Policy("a moderation that did not come through the group's home");
                    self.count("signal", Some(peer), Err(&d));
                    return self.refuse(id, Proto::Signal, RpcError::Invalid);
                }
                if sig.to.node != self.cfg.me {
                    return self.refuse(id, Proto::Signal, RpcError::NotHome);
                }
            }
        } else if sig.to.node != self.cfg.me {
            return self.refuse(id, Proto::Signal, RpcError::NotHome);
        }
        let waiting = self.signals.iter().filter(|q| q.peer == peer).count();
        if self.ready(sig) {
            self.deliver(id, verified);
        } else if waiting >= self.cfg.limits.pending_signals {
            self.refuse(id, Proto::Signal, RpcError::RateLimited);
        } else {
            let deadline = self.now + self.cfg.signal_wait;
            self.signals.push_back(Queued { reply: id, peer, verified, deadline });
        }
    }

    /// Both sessions are in the room: ours from the core, theirs from their presence (at a
    /// group's home, a moderation's target may be of a third node: by its presence too).
    fn ready(&self, sig: &Signal) -> bool {
        let room = (sig.group, sig.room);
        let in_call = |user: &UserId, session| {
            if user.node == self.cfg.me {
                return self.seats.get(&(user.clone(), session)).is_some_and(|(r, _)| r == &room);
            }
            self.groups
                .get(&sig.group)
                .and_then(|g| g.presence.get(&(user.clone(), session)))
                .is_some_and(|p| p.room == sig.room && p.expires_at >= self.now_secs())
        };
        in_call(&sig.to, sig.to_session) && in_call(&sig.from, sig.from_session)
    }

    fn deliver(&mut self, reply: InboundId, verified: Verified) {
        let Record::Signal(signal) = verified.record.clone() else { return };
        self.validator.accept(&verified, self.now_secs());
        self.count("signal", None, Ok(()));
        self.outputs.push_back(Output::Deliver { reply, signal });
    }

    /// Presence changed: signals that were waiting for it go out.
    pub(crate) fn release_signals(&mut self) {
        let mut i = 0;
        while i < self.signals.len() {
            let Record::Signal(sig) = &self.signals[i].verified.record else {
                self.signals.remove(i);
                continue;
            };
            if self.ready(sig) {
                let q = self.signals.remove(i).expect("index in range");
                self.deliver(q.reply, q.verified);
            } else {
                i += 1;
            }
        }
    }

    /// Signals that waited too long are refused.
    pub(super) fn expire_signals(&mut self) {
        let now = self.now;
        while let Some(pos) = self.signals.iter().position(|q| q.deadline <= now) {
            let q = self.signals.remove(pos).expect("index in range");
            self.count("signal", None, Err(&super::Dropped::NotWanted("no such session in the room")));
            self.refuse(q.reply, Proto::Signal, RpcError::NoSession);
        }
    }

    pub(super) fn on_delivered(&mut self, reply: InboundId, error: Option<RpcError>) {
        self.outputs.push_back(Output::Respond { id: reply, data: rpc::encode(&SignalResponse { error }) });
    }

    pub(super) fn send_signal(&mut self, command: CommandId, s: OutSignal) {
        let OutSignal { from, from_session, to, to_session, room, kind, data } = s;
        // A moderation goes to the group's home first, unless this is the home.
        let home = self.groups.get(&room.0).map(|g| g.home.clone()).filter(|h| h != &self.cfg.me);
        let dest = match (kind, home) {
            (SignalType::Moderate, Some(home)) => home,
            _ => to.node.clone(),
        };
        let unreachable = CommandResult::Signal(Err(RelayError::Unreachable(dest.clone())));
        let Some(key) = self.trust.key_of(&dest).filter(|k| self.peers.get(k).is_some_and(|p| p.connected)) else {
            return self.outputs.push_back(Output::Done { id: command, result: unreachable });
        };
        let nonce = Nonce::from_bytes(self.random16());
        let expires_at = self.now_secs() + SIGNAL_TTL;
        let envelope = self.signer.seal_at(self.now * 1000, |_| {
            Record::Signal(Signal {
                to: to.clone(),
                data,
                from,
                room: room.1,
                signal_type: kind,
                group: room.0,
                nonce,
                expires_at,
                to_session,
                from_session,
            })
        });
        let req = rpc::encode(&SignalRequest { envelope: ByteBuf::from(envelope) });
        self.request(key, Proto::Signal, req, Pending::Signal { command, to: dest });
    }

    pub(super) fn on_signal_response(&mut self, command: CommandId, to: NodeName, result: Result<Vec<u8>, Failure>) {
        let r = match result.map(|b| rpc::decode::<SignalResponse>(&b, rpc::MAX_SIGNAL_RESPONSE)) {
            Ok(Ok(SignalResponse { error: None })) => Ok(()),
            Ok(Ok(SignalResponse { error: Some(e) })) => Err(RelayError::Refused(e)),
            _ => Err(RelayError::Unreachable(to)),
        };
        self.outputs.push_back(Output::Done { id: command, result: CommandResult::Signal(r) });
    }

    pub(super) fn random16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        // The nonce only has to be unique per signer; seq (time-based, strictly rising)
        // plus the generator make it so.
        let seq = self.signer.next_seq(self.now * 1000);
        out[..8].copy_from_slice(&seq.to_be_bytes());
        self.jitter();
        out[8..].copy_from_slice(&self.rng.to_be_bytes());
        out
    }

    // ---- joining by invite ----

    pub(super) fn send_invite(&mut self, command: CommandId, home: NodeName, code: String, user: UserId) {
        let Some(key) = self.trust.key_of(&home) else {
            let result = CommandResult::Joined(Err(RpcError::NotHome));
            return self.outputs.push_back(Output::Done { id: command, result });
        };
        let req = rpc::encode(&InviteRequest { code, user: user.clone() });
        self.request(key, Proto::Invite, req, Pending::Invite { command, user, home: key });
    }

    pub(super) fn on_invite_response(
        &mut self,
        command: CommandId,
        user: UserId,
        home_key: NodeKey,
        result: Result<Vec<u8>, Failure>,
    ) {
        let done = |m: &mut Machine, r| m.outputs.push_back(Output::Done { id: command, result: CommandResult::Joined(r) });
        let resp = match result.map(|b| rpc::decode::<InviteResponse>(&b, rpc::MAX_INVITE_RESPONSE)) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return done(self, Err(RpcError::Invalid)),
            Err(_) => return done(self, Err(RpcError::Internal)),
        };
        if let Some(e) = resp.error {
            return done(self, Err(e));
        }
        let records: Vec<Vec<u8>> = resp.records.into_iter().map(ByteBuf::into_vec).collect();
        // The group is the one the first record (its info) names.
        let group = records
            .first()
            .and_then(|b| voicechat_protocol::Envelope::decode(b).ok()?.open().ok())
            .and_then(|r| match r {
                Record::GroupInfo(g) => Some(g.group),
                _ => None,
            });
        let Some(group) = group else { return done(self, Err(RpcError::Invalid)) };
        let mut changes = self.receive(Source::Home(home_key, group), records);
        if !self.groups.get(&group).is_some_and(|g| g.is_member(&user)) {
            self.apply(changes);
            return done(self, Err(RpcError::Invalid));
        }
        changes.push(Change::Joined { group, user });
        match self.apply(changes) {
            Some(batch) => {
                self.after_apply.entry(batch).or_default().push((command, CommandResult::Joined(Ok(group))));
            }
            None => done(self, Ok(group)),
        }
    }

    /// A user of the asking node joins a group homed here by invite code.
    pub(super) fn on_invite_request(&mut self, peer: NodeKey, id: InboundId, data: &[u8]) {
        let Ok(req) = rpc::decode::<InviteRequest>(data, rpc::MAX_INVITE_REQUEST) else {
            self.strike(peer);
            return self.refuse(id, Proto::Invite, RpcError::Invalid);
        };
        let Some(node) = self.trust.name_of(&peer) else {
            return self.refuse(id, Proto::Invite, RpcError::UnknownNode);
        };
        if &req.user.node != node {
            return self.refuse(id, Proto::Invite, RpcError::NotHome);
        }
        let valid = !req.code.is_empty()
            && req.code.len() <= 64
            && req.code.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if !valid {
            return self.refuse(id, Proto::Invite, RpcError::BadInvite);
        }
        self.outputs.push_back(Output::Redeem { reply: id, code: req.code, user: req.user });
    }

    /// The core spent the code: the group's records (with the new membership) go back.
    pub(super) fn on_redeemed(&mut self, reply: InboundId, result: Result<(GroupId, Vec<Announce>), RpcError>) {
        let group = match result {
            Ok((group, announced)) => {
                for a in announced {
                    self.on_local(a);
                }
                group
            }
            Err(e) => return self.refuse(reply, Proto::Invite, e),
        };
        let records = self.groups.get(&group).map(|g| g.all_records(self.now / 1000)).unwrap_or_default();
        let resp = InviteResponse { error: None, records: records.into_iter().map(ByteBuf::from).collect() };
        self.outputs.push_back(Output::Respond { id: reply, data: rpc::encode(&resp) });
    }
}
