//! Calls: a socket joins a room, mutes, leaves (or closes), and signals another session in
//! its room; a socket follows the presence of one group (subscribe). Presence of local
//! sessions is announced for federation to sign and send.

use serde_json::json;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};

use super::{Announce, Core, CoreError, Effects, Notice};
use crate::hub::{Outbound, encode};
use crate::rooms::{CallMode, Participant, RoomKey, SeatKey, StageSeat};

impl Core {
    /// Puts a socket into a room's call (leaving any other room).
    pub fn join(
        &self,
        user: &UserId,
        session: SessionId,
        group: GroupId,
        room: RoomId,
        muted: bool,
    ) -> Result<Effects, CoreError> {
        let (_, m) = self.membership(&group, user).map_err(|_| CoreError::not_found("room"))?;
        let Some(r) = self.store.room(&group, &room)? else {
            return Err(CoreError::not_found("room"));
        };
        // On a stage, moderators start as speakers and everyone else listens.
        let stage = r.stage.then(|| StageSeat { speaker: super::stage::is_moderator(&m), ..StageSeat::default() });
        let p = Participant { user: user.clone(), session, muted, stage, name: self.display_name(user), joined_at: crate::time::unix_millis() };
        let (changed, modes) = {
            let mut rooms = self.rooms();
            (rooms.join(p.clone(), (group, room)), rooms.take_mode_changes())
        };
        let mut fx = Effects::default();
        if changed.is_empty() {
            return Ok(fx); // in this call already, as it was (a resumed session joins again)
        }
        fx.call_modes(modes);
        if let [old, _] = changed[..] {
            fx.announce.push(Announce::Presence { room: old, participant: p.clone(), joined: false });
        }
        fx.announce.push(Announce::Presence { room: (group, room), participant: p, joined: true });
        fx.notice(Notice::Presence);
        Ok(fx)
    }

    /// Takes a socket out of its call; returns the room it was in.
    pub fn leave(&self, user: &UserId, session: SessionId) -> (Option<RoomKey>, Effects) {
        let seat: SeatKey = (user.clone(), session);
        let left = {
            let mut rooms = self.rooms();
            let found = rooms.find(&seat);
            rooms.leave(&seat);
            found
        };
        let mut fx = Effects::default();
        let Some((room, p)) = left else { return (None, fx) };
        fx.announce.push(Announce::Presence { room, participant: p, joined: false });
        fx.notice(Notice::Presence);
        (Some(room), fx)
    }

    /// Mutes or unmutes a socket in its call.
    pub fn mute(&self, user: &UserId, session: SessionId, muted: bool) -> Effects {
        let seat: SeatKey = (user.clone(), session);
        let changed = {
            let mut rooms = self.rooms();
            rooms.set_muted(&seat, muted).and_then(|_| rooms.find(&seat))
        };
        let mut fx = Effects::default();
        if let Some((room, p)) = changed {
            fx.media.push((seat, super::stage::may_speak(&p)));
            fx.announce.push(Announce::Presence { room, participant: p, joined: true });
            fx.notice(Notice::Presence);
        }
        fx
    }

    /// Whether a seat may be heard now (none: not in a call).
    pub fn may_speak(&self, seat: &SeatKey) -> Option<bool> {
        self.rooms().find(seat).map(|(_, p)| super::stage::may_speak(&p))
    }

    /// The nodes whose people the call in `room` reaches through the SFUs' cascade, both
    /// ways (this node pulls theirs and they pull ours): pages stop connecting to those
    /// people directly.
    pub fn cascaded(&self, room: &RoomKey) -> Vec<NodeName> {
        self.cascaded.lock().expect("cascade lock").get(room).cloned().unwrap_or_default()
    }

    /// Federation says which nodes the call in `room` now reaches through the cascade: the
    /// call's people here are told (`cascade`).
    pub fn set_cascaded(&self, room: RoomKey, nodes: Vec<NodeName>) {
        {
            let mut all = self.cascaded.lock().expect("cascade lock");
            if nodes.is_empty() {
                all.remove(&room);
            } else {
                all.insert(room, nodes.clone());
            }
        }
        let msg = encode(&json!({"type": "cascade", "group": room.0, "room": room.1, "nodes": nodes}));
        self.tell_call(&room, &msg);
    }

    /// How this node's participants of `room` reach each other now.
    pub fn call_mode(&self, room: &RoomKey) -> CallMode {
        self.rooms().mode(room)
    }

    /// Calls move to the SFU at `threshold` participants of every node, one of this node
    /// among them (`None`: no SFU).
    pub fn set_sfu_threshold(&self, threshold: Option<usize>) {
        self.rooms().set_sfu_threshold(threshold);
    }

    /// Makes a socket follow the presence in `group`'s rooms (instead of any group it
    /// followed): a snapshot now, then deltas (or counts of big rooms). Members only.
    pub fn subscribe(&self, user: &UserId, session: SessionId, group: GroupId) -> Result<Effects, CoreError> {
        self.membership(&group, user)?;
        self.rooms().watch((user.clone(), session), group);
        Ok(Effects { notify: vec![Notice::Presence], ..Effects::default() })
    }

    /// The socket stops following a group (its page shows none, or it closed).
    pub fn unsubscribe(&self, user: &UserId, session: SessionId) {
        self.rooms().unwatch(&(user.clone(), session));
    }

    /// A fresh view of one room for a socket that saw a gap in its versions.
    pub fn resync(&self, user: &UserId, session: SessionId, group: GroupId, room: RoomId) -> Result<Effects, CoreError> {
        self.membership(&group, user).map_err(|_| CoreError::not_found("room"))?;
        if self.store.room(&group, &room)?.is_none() {
            return Err(CoreError::not_found("room"));
        }
        self.rooms().resync((user.clone(), session), (group, room));
        Ok(Effects { notify: vec![Notice::Presence], ..Effects::default() })
    }

    /// Sends the counts of big rooms that changed since the last call; run every
    /// [`crate::rooms::COUNT_EVERY`].
    pub fn tick_counts(&self) {
        self.rooms().tick();
        self.notify(&[Notice::Presence]);
    }

    /// The room a socket is in.
    pub fn seat(&self, user: &UserId, session: SessionId) -> Option<RoomKey> {
        self.rooms().seat(&(user.clone(), session))
    }

    /// Sends `msg` to this node's sessions in `room`'s call.
    pub fn tell_call(&self, room: &RoomKey, msg: &Outbound) {
        let me = self.me().clone();
        let seats: Vec<SeatKey> = self.rooms().participants(room).into_iter().filter(|p| p.user.node == me).map(|p| p.seat()).collect();
        for (user, session) in seats {
            self.hub.send_session(&user, &session, msg);
        }
    }

    /// Whether `session` of `user` is in `room`.
    pub fn is_in(&self, room: &RoomKey, user: &UserId, session: &SessionId) -> bool {
        self.rooms().is_in(room, user, session)
    }

    /// Hands a signal to a local socket; false if that socket is gone.
    pub fn deliver_signal(&self, to: &UserId, to_session: &SessionId, msg: &Outbound) -> bool {
        self.hub.send_session(to, to_session, msg)
    }

    /// The socket message of a signal.
    pub fn signal_message(
        from: &UserId,
        from_session: &SessionId,
        room: &RoomKey,
        kind: &str,
        data: &serde_json::Value,
    ) -> Outbound {
        encode(&json!({
            "type": "signal", "from": from, "from_session": from_session,
            "group": room.0, "room": room.1, "kind": kind, "data": data,
        }))
    }
}

/// End-to-end encryption of call audio: the node relays the browsers' public keys and
/// wrapped media keys, opaque to it (`protocol-spec/SPEC.md`, end-to-end encryption).
impl Core {
    /// Whom an `e2ee_hello` from `from` goes to: the others in its call who may send audio
    /// (everyone in a conversation, the stage in a stage room), or everyone in it.
    pub fn e2ee_recipients(&self, room: &RoomKey, from: &SeatKey, everyone: bool) -> Vec<SeatKey> {
        self.rooms()
            .participants(room)
            .into_iter()
            .filter(|p| p.seat() != *from && (everyone || p.stage.is_none_or(|s| s.speaker)))
            .map(|p| p.seat())
            .collect()
    }

    /// The socket message for an end-to-end encryption body (`{"kind": "hello", "data"}` or
    /// `{"kind": "key", "common", "data"}`, as it also crosses nodes); `None` if malformed.
    pub fn e2ee_message(from: &UserId, from_session: &SessionId, body: &serde_json::Value) -> Option<Outbound> {
        #[allow(unused_mut)]
        let mut body = body.clone();
        #[cfg(debug_assertions)]
        test_hooks::substitute_key(&mut body);
        let msg = match body["kind"].as_str()? {
            "hello" => json!({"type": "e2ee_hello", "from": from, "from_session": from_session, "data": body["data"]}),
            "key" => json!({
                "type": "e2ee_key", "from": from, "from_session": from_session,
                "common": body["common"], "data": body["data"],
            }),
            _ => return None,
        };
        Some(encode(&msg))
    }
}

/// Hooks that only debug builds have, for tests that play a malicious node.
#[cfg(debug_assertions)]
mod test_hooks {
    /// The P-256 generator point: the public key of private key 1, so a valid key that is
    /// nobody's in the call.
    const SUBSTITUTE: &str = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    /// With `VOICECHAT_TEST_SUBSTITUTE_E2EE_KEYS=1`, the node swaps the public key in every
    /// e2ee message it hands to a browser, as a node listening in would; the pages' safety
    /// codes must then differ.
    pub fn substitute_key(body: &mut serde_json::Value) {
        if std::env::var_os("VOICECHAT_TEST_SUBSTITUTE_E2EE_KEYS").is_none() {
            return;
        }
        for part in ["data", "common"] {
            if let Some(p) = body.get_mut(part).and_then(|d| d.get_mut("pub")) {
                *p = SUBSTITUTE.into();
            }
        }
    }
}
