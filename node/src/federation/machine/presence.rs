//! Presence: this node signs its users' sessions in rooms of federated groups (on join,
//! mute, leave, and again every heartbeat while they stay, with a short lifetime) and sends
//! them straight to the nodes with members in the group; sessions of other nodes' users
//! vanish when their presence runs out, so a dead node leaves no ghosts. Nothing is signed
//! or sent for a group without members elsewhere, or while nobody is in a call.

use voicechat_protocol::ids::{GroupId, RoomId};
use voicechat_protocol::records::{Presence, PresenceState, Record};

use super::Machine;
use super::peers::SubjectKey;
use super::replica::Pres;
use crate::core::Change;
use crate::rooms::Participant;

impl Machine {
    pub(crate) fn on_local_presence(&mut self, room: (GroupId, RoomId), p: Participant, joined: bool) {
        let seat = (p.user.clone(), p.session);
        if joined {
            self.seats.insert(seat, (room, p.clone()));
        } else if self.seats.get(&seat).is_some_and(|(r, _)| r == &room) {
            self.seats.remove(&seat);
        }
        self.announce_seat(room, &p, joined);
        self.release_signals();
    }

    /// Signs one of our sessions' presence and sends it to the group's member nodes.
    fn announce_seat(&mut self, room: (GroupId, RoomId), p: &Participant, joined: bool) {
        let me = self.cfg.me.clone();
        let Some(g) = self.groups.get(&room.0) else { return };
        let nodes = g.member_nodes(&me);
        if nodes.is_empty() {
            return;
        }
        let expires_at = self.now_secs() + self.cfg.presence_ttl;
        let state = if joined { PresenceState::Joined } else { PresenceState::Left };
        let record = |seq| {
            Record::Presence(Presence {
                seq,
                name: p.name.clone(),
                room: room.1,
                user: p.user.clone(),
                group: room.0,
                muted: p.muted,
                stage: p.stage.map(|s| s.place()),
                state,
                session: p.session,
                joined_at: Some(p.joined_at),
                expires_at,
            })
        };
        let bytes = self.signer.seal_at(self.now * 1000, record);
        let subject = SubjectKey(
            voicechat_protocol::Subject::Presence(room.0, p.user.clone(), p.session),
            voicechat_protocol::Kind::Presence,
        );
        if let Some(g) = self.groups.get_mut(&room.0) {
            let key = (p.user.clone(), p.session);
            if joined {
                g.presence.insert(key, Pres { room: room.1, muted: p.muted, stage: p.stage.map(|s| s.place()), expires_at, envelope: bytes.clone() });
            } else {
                g.presence.remove(&key);
            }
        }
        for node in nodes {
            if let Some(key) = self.trust.key_of(&node) {
                self.enqueue(key, subject.clone(), bytes.clone());
                self.flush(key);
            }
        }
    }

    /// Signs presence for our sessions already in a group's calls (it just became federated).
    pub(crate) fn sign_group_presence(&mut self, group: GroupId) {
        let seats: Vec<_> = self
            .seats
            .iter()
            .filter(|(_, (room, _))| room.0 == group)
            .map(|(_, (room, p))| (*room, p.clone()))
            .collect();
        let Some(g) = self.groups.get_mut(&group) else { return };
        let expires_at = self.now / 1000 + self.cfg.presence_ttl;
        for (room, p) in seats {
            let bytes = self.signer.seal_at(self.now * 1000, |seq| {
                Record::Presence(Presence {
                    seq,
                    name: p.name.clone(),
                    room: room.1,
                    user: p.user.clone(),
                    group,
                    muted: p.muted,
                    stage: p.stage.map(|s| s.place()),
                    state: PresenceState::Joined,
                    session: p.session,
                    joined_at: Some(p.joined_at),
                    expires_at,
                })
            });
            g.presence.insert((p.user, p.session), Pres { room: room.1, muted: p.muted, stage: p.stage.map(|s| s.place()), expires_at, envelope: bytes });
        }
    }

    /// Every heartbeat: our sessions in federated rooms are signed again before they expire.
    pub(super) fn heartbeat(&mut self) {
        let seats: Vec<_> = self
            .seats
            .iter()
            .map(|(_, (room, p))| (*room, p.clone()))
            .collect();
        for (room, p) in seats {
            self.announce_seat(room, &p, true);
        }
    }

    /// Sessions of other nodes' users whose presence ran out leave their rooms.
    pub(super) fn expire_presence(&mut self) {
        let now_s = self.now_secs();
        let me = self.cfg.me.clone();
        let mut changes = Vec::new();
        for (gid, g) in &mut self.groups {
            g.presence.retain(|(user, session), p| {
                if user.node == me || p.expires_at >= now_s {
                    return true;
                }
                let participant = Participant { user: user.clone(), session: *session, muted: p.muted, stage: None, name: None, joined_at: 0 };
                changes.push(Change::Presence { room: (*gid, p.room), participant, joined: false });
                false
            });
        }
        if !changes.is_empty() {
            tracing::debug!(n = changes.len(), "presence expired");
            self.apply(changes);
        }
        self.validator.prune(now_s);
    }
}
