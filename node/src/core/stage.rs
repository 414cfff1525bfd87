//! Stage rooms: speakers and listeners. Listeners raise a hand; moderators (the group's
//! admins and owner, who are also the only ones who create rooms) invite a listener to
//! speak, move a speaker back to the audience, mute anyone or take anyone out of the call.
//! An invited listener says yes or no: nobody's microphone goes live without them.
//!
//! What may be heard is enforced by the SFU: each operation's effects say whose packets
//! may now be forwarded (`Effects::media`). Places are kept by this node for its own
//! participants.

use serde_json::json;
use voicechat_protocol::ids::{SessionId, UserId};
use voicechat_protocol::ids::Role;

use super::{Announce, Core, CoreError, Effects, Notice};
use crate::hub::encode;
use crate::rooms::{Participant, RoomKey, SeatKey};
use crate::store::MemberRecord;

/// Whether this member moderates the group's stages.
pub(super) fn is_moderator(m: &MemberRecord) -> bool {
    m.role >= Role::Admin
}

/// Whether a participant may be heard: on a stage only speakers, and nobody muted.
pub fn may_speak(p: &Participant) -> bool {
    !p.muted && p.stage.is_none_or(|s| s.speaker)
}

/// What a moderator does to someone in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Ask a listener onto the stage.
    Invite,
    /// Send a speaker back to the audience.
    ToAudience,
    /// Mute them (they may unmute themselves once the moderator is done with them).
    Mute,
    /// Take them out of the call.
    Remove,
}

impl Core {
    /// A listener raises or lowers their hand.
    pub fn raise_hand(&self, user: &UserId, session: SessionId, up: bool) -> Result<Effects, CoreError> {
        let seat: SeatKey = (user.clone(), session);
        let changed = self.rooms().set_stage(&seat, |s| s.hand = up && !s.speaker);
        Ok(self.stage_changed(changed, &seat))
    }

    /// An invited listener answers: yes puts them on the stage.
    pub fn answer_stage_invitation(&self, user: &UserId, session: SessionId, accept: bool) -> Result<Effects, CoreError> {
        let seat: SeatKey = (user.clone(), session);
        let changed = self.rooms().set_stage(&seat, |s| {
            if s.invited {
                s.invited = false;
                s.speaker = accept;
                s.hand = false;
            }
        });
        Ok(self.stage_changed(changed, &seat))
    }

    /// A speaker steps down by themselves.
    pub fn leave_stage(&self, user: &UserId, session: SessionId) -> Result<Effects, CoreError> {
        let seat: SeatKey = (user.clone(), session);
        let changed = self.rooms().set_stage(&seat, |s| s.speaker = false);
        Ok(self.stage_changed(changed, &seat))
    }

    /// A moderator acts on `target` in the call the moderator is in. Only the group's home
    /// decides who may speak: elsewhere a moderation goes there (a `moderate` signal,
    /// SPEC.md §6.6), even for someone of this node.
    pub fn moderate(&self, actor: &UserId, actor_session: SessionId, target: &SeatKey, what: Moderation) -> Result<Effects, CoreError> {
        let room = self.moderator_room(actor, actor_session)?;
        if !self.is_home(&room.0) {
            return Err(CoreError::BadRequest("a moderation is decided by the group's home node".into()));
        }
        self.moderate_in(room, actor, target, what)
    }

    /// Whether this node is the home of `group` (and so decides who speaks in its stages).
    pub fn is_home(&self, group: &voicechat_protocol::ids::GroupId) -> bool {
        self.store.group(group).ok().flatten().is_some_and(|g| &g.home == self.me())
    }

    /// The room of a moderator's call: they are in one, and an admin or owner of its group
    /// (by the group home's membership records, as this node holds them).
    pub fn moderator_room(&self, actor: &UserId, actor_session: SessionId) -> Result<RoomKey, CoreError> {
        let room = self.rooms().find(&(actor.clone(), actor_session)).map(|(r, _)| r).ok_or_else(|| CoreError::not_found("call"))?;
        let (_, m) = self.membership(&room.0, actor)?;
        if !is_moderator(&m) {
            return Err(CoreError::Forbidden("only the group's admins moderate a call".into()));
        }
        Ok(room)
    }

    /// At the group's home: judges a moderation sent by another node (SPEC.md §6.6) by this
    /// node's own records: the actor moderates the group and is in the call of `room`.
    pub fn judge_moderation(&self, actor: &UserId, actor_session: SessionId, room: &RoomKey) -> Result<(), CoreError> {
        if !self.is_home(&room.0) {
            return Err(CoreError::Forbidden("only the group's home node judges a moderation".into()));
        }
        match self.moderator_room(actor, actor_session)? {
            r if &r == room => Ok(()),
            _ => Err(CoreError::not_found("call")),
        }
    }

    /// Applies to `target`, a session of this node, a moderation the group's home decided
    /// (judged there, or here when this is the home).
    pub fn moderate_decided(&self, room: RoomKey, actor: &UserId, target: &SeatKey, what: Moderation) -> Result<Effects, CoreError> {
        if &target.0.node != self.me() {
            return Err(CoreError::Forbidden("a moderation for someone of another node".into()));
        }
        self.moderate_in(room, actor, target, what)
    }

    fn moderate_in(&self, room: RoomKey, actor: &UserId, target: &SeatKey, what: Moderation) -> Result<Effects, CoreError> {
        let found = self.rooms().find(target);
        let Some((target_room, p)) = found.filter(|(r, _)| *r == room) else {
            return Err(CoreError::not_found("participant"));
        };
        let mut fx = Effects::default();
        match what {
            Moderation::Invite | Moderation::ToAudience => {
                if p.stage.is_none() {
                    return Err(CoreError::BadRequest("this call has no stage".into()));
                }
                let invite = what == Moderation::Invite;
                let changed = self.rooms().set_stage(target, |s| {
                    if invite {
                        s.invited = !s.speaker;
                    } else {
                        s.speaker = false;
                        s.invited = false;
                    }
                });
                // The invited person's page asks them, naming who asks.
                if invite && changed.as_ref().is_some_and(|(_, p)| p.stage.is_some_and(|s| s.invited)) {
                    self.hub.send_session(&target.0, &target.1, &moderated(&room, "invite", actor));
                }
                fx.merge(self.stage_changed(changed, target));
            }
            Moderation::Mute => {
                fx.merge(self.mute(&target.0, target.1, true));
                self.hub.send_session(&target.0, &target.1, &moderated(&room, "mute", actor));
            }
            Moderation::Remove => {
                let (_, left) = self.leave(&target.0, target.1);
                fx.merge(left);
                fx.notice(Notice::Left { room: target_room, user: target.0.clone(), session: target.1 });
                self.hub.send_session(&target.0, &target.1, &moderated(&room, "remove", actor));
            }
        }
        Ok(fx)
    }

    /// Effects of a changed place: the room's list, and who may be heard.
    fn stage_changed(&self, changed: Option<(RoomKey, Participant)>, seat: &SeatKey) -> Effects {
        let mut fx = Effects::default();
        if let Some((room, p)) = changed {
            fx.media.push((seat.clone(), may_speak(&p)));
            fx.announce.push(Announce::Presence { room, participant: p, joined: true });
            fx.notice(Notice::Presence);
        }
        fx
    }
}

/// The message that tells someone a moderator acted on them.
fn moderated(room: &RoomKey, action: &str, by: &UserId) -> crate::hub::Outbound {
    encode(&json!({"type": "moderated", "group": room.0, "room": room.1, "action": action, "by": by}))
}
