//! Who is in which room right now: an in-memory state machine with no I/O.
//!
//! Browsers (through the core) and other nodes (through federation, which also decides when
//! their presence expires) feed it joins, leaves and mutes; every call returns the rooms
//! whose participant lists changed, and the caller tells the people who can see them.
//!
//! A seat is keyed by the user *and* the session: a session id names one browser tab of one
//! user, so another node's records can never move or remove a session of someone else.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};

/// A room, as the pair that names it.
pub type RoomKey = (GroupId, RoomId);

/// One browser tab of one user.
pub type SeatKey = (UserId, SessionId);

/// One session in a room's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// Who.
    pub user: UserId,
    /// Which of their sockets (a user may call from two tabs).
    pub session: SessionId,
    /// Whether they muted themselves.
    pub muted: bool,
    /// In a stage room of this node: their place (none in a conversation, or for people
    /// of other nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageSeat>,
}

/// Where someone is in a stage room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StageSeat {
    /// On stage: heard by everyone. Listeners are not forwarded.
    pub speaker: bool,
    /// A listener's raised hand.
    pub hand: bool,
    /// A moderator asked this listener to speak; they have not answered yet.
    pub invited: bool,
}

impl Participant {
    /// The seat this participant sits in.
    pub fn seat(&self) -> SeatKey {
        (self.user.clone(), self.session)
    }
}

/// The live room state of this node.
#[derive(Debug, Default)]
pub struct Rooms {
    seats: HashMap<SeatKey, RoomKey>,
    rooms: HashMap<RoomKey, BTreeMap<SeatKey, Participant>>,
    /// When calls move to the SFU: at this many participants of this node.
    sfu_rule: Option<(usize, NodeName)>,
    /// Calls whose participants of this node reach each other through the SFU.
    on_sfu: HashSet<RoomKey>,
    /// Calls whose mode changed since the owner last asked.
    mode_changed: Vec<RoomKey>,
}

/// How the participants of this node in a call reach each other. Participants on
/// different nodes always use a mesh connection between their browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallMode {
    /// Browser to browser.
    Mesh,
    /// Through this node's audio forwarding unit.
    Sfu,
}

impl Rooms {
    /// Puts the participant into `room`, taking their seat out of any other room first.
    /// Returns every room whose list changed (the old one, if any, then the new one);
    /// nothing if the participant was already there exactly so.
    pub fn join(&mut self, p: Participant, room: RoomKey) -> Vec<RoomKey> {
        let seat = p.seat();
        let mut changed = Vec::with_capacity(2);
        match self.seats.get(&seat).copied() {
            Some(old) if old == room && self.rooms.get(&room).and_then(|r| r.get(&seat)) == Some(&p) => {
                return changed;
            }
            Some(old) if old == room => {
                // Joining again keeps one's place on the stage.
                let mut p = p;
                p.stage = self.rooms.get(&room).and_then(|r| r.get(&seat)).and_then(|q| q.stage).or(p.stage);
                self.rooms.entry(room).or_default().insert(seat, p);
                changed.push(room);
                return changed;
            }
            Some(old) => {
                self.remove(&seat);
                changed.push(old);
            }
            None => {}
        }
        self.seats.insert(seat.clone(), room);
        self.rooms.entry(room).or_default().insert(seat, p);
        self.settle_mode(room);
        changed.push(room);
        changed
    }

    /// Calls move to the SFU once `threshold` participants of node `me` are in them
    /// (`None`: never, the node has no SFU).
    pub fn set_sfu_rule(&mut self, rule: Option<(usize, NodeName)>) {
        self.sfu_rule = rule;
    }

    /// How this node's participants in `room` reach each other.
    pub fn mode(&self, room: &RoomKey) -> CallMode {
        if self.on_sfu.contains(room) { CallMode::Sfu } else { CallMode::Mesh }
    }

    /// The calls whose mode changed since the last call (their participants must be told).
    pub fn take_mode_changes(&mut self) -> Vec<(RoomKey, CallMode)> {
        let changed = std::mem::take(&mut self.mode_changed);
        changed.into_iter().map(|r| (r, self.mode(&r))).collect()
    }

    /// A call moves to the SFU when enough of this node's people are in it (a stage at
    /// once), and stays there until it empties: moving back and forth would cut the audio
    /// twice.
    fn settle_mode(&mut self, room: RoomKey) {
        let Some((threshold, me)) = &self.sfu_rule else { return };
        if self.on_sfu.contains(&room) {
            return;
        }
        let Some(r) = self.rooms.get(&room) else { return };
        let local = r.keys().filter(|(u, _)| &u.node == me).count();
        // A stage is on the SFU from its first person: only the SFU can keep listeners quiet.
        let stage = r.values().any(|p| p.stage.is_some());
        if local >= *threshold || (stage && local > 0) {
            self.on_sfu.insert(room);
            self.mode_changed.push(room);
        }
    }

    /// Takes a seat out of its room; returns that room.
    pub fn leave(&mut self, seat: &SeatKey) -> Option<RoomKey> {
        self.remove(seat)
    }

    /// Sets the muted flag; returns the room if it changed.
    pub fn set_muted(&mut self, seat: &SeatKey, muted: bool) -> Option<RoomKey> {
        let room = *self.seats.get(seat)?;
        let p = self.rooms.get_mut(&room)?.get_mut(seat)?;
        if p.muted == muted {
            return None;
        }
        p.muted = muted;
        Some(room)
    }

    /// Changes a seat's place on its stage with `f`; returns the room and the new entry
    /// if anything changed (nothing for a seat not on a stage).
    pub fn set_stage(&mut self, seat: &SeatKey, f: impl FnOnce(&mut StageSeat)) -> Option<(RoomKey, Participant)> {
        let room = *self.seats.get(seat)?;
        let p = self.rooms.get_mut(&room)?.get_mut(seat)?;
        let before = p.stage?;
        let mut after = before;
        f(&mut after);
        if after == before {
            return None;
        }
        p.stage = Some(after);
        Some((room, p.clone()))
    }

    /// A seat's room and participant entry.
    pub fn find(&self, seat: &SeatKey) -> Option<(RoomKey, Participant)> {
        let room = *self.seats.get(seat)?;
        let p = self.rooms.get(&room)?.get(seat)?.clone();
        Some((room, p))
    }

    /// The room a seat is in.
    pub fn seat(&self, seat: &SeatKey) -> Option<RoomKey> {
        self.seats.get(seat).copied()
    }

    /// Whether `session` of `user` is in `room`.
    pub fn is_in(&self, room: &RoomKey, user: &UserId, session: &SessionId) -> bool {
        self.seats.get(&(user.clone(), *session)) == Some(room)
    }

    /// A room's participants, ordered by user, then session.
    pub fn participants(&self, room: &RoomKey) -> Vec<Participant> {
        self.rooms.get(room).map(|r| r.values().cloned().collect()).unwrap_or_default()
    }

    /// Number of rooms with someone in them, and of participants in all rooms.
    pub fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.seats.len())
    }

    /// Empties a room (it was deleted); returns who was dropped.
    pub fn clear_room(&mut self, room: &RoomKey) -> Vec<Participant> {
        let dropped: Vec<_> = self.rooms.remove(room).map(|r| r.into_values().collect()).unwrap_or_default();
        self.on_sfu.remove(room);
        for p in &dropped {
            self.seats.remove(&p.seat());
        }
        dropped
    }

    /// Takes every seat matching `pred` out of the group's rooms; returns each dropped
    /// participant with the room it was in.
    pub fn drop_from_group(
        &mut self,
        group: &GroupId,
        pred: impl Fn(&Participant) -> bool,
    ) -> Vec<(RoomKey, Participant)> {
        let victims: Vec<(RoomKey, Participant)> = self
            .rooms
            .iter()
            .filter(|(k, _)| &k.0 == group)
            .flat_map(|(k, r)| r.values().filter(|p| pred(p)).map(|p| (*k, p.clone())))
            .collect();
        for (_, p) in &victims {
            self.remove(&p.seat());
        }
        victims
    }

    fn remove(&mut self, seat: &SeatKey) -> Option<RoomKey> {
        let room = self.seats.remove(seat)?;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.remove(seat);
            if r.is_empty() {
                self.rooms.remove(&room);
                self.on_sfu.remove(&room);
            }
        }
        Some(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: &str) -> UserId {
        format!("{n}@alpha").parse().unwrap()
    }
    fn p(n: &str, s: u8) -> Participant {
        Participant { user: user(n), session: SessionId([s; 16]), muted: false, stage: None }
    }
    fn seat(n: &str, s: u8) -> SeatKey {
        (user(n), SessionId([s; 16]))
    }
    const G: GroupId = GroupId([1; 16]);
    const R1: RoomKey = (G, RoomId([1; 16]));
    const R2: RoomKey = (G, RoomId([2; 16]));

    #[test]
    fn a_call_moves_to_the_sfu_at_the_threshold_of_local_people_and_stays_until_empty() {
        let mut rooms = Rooms::default();
        rooms.set_sfu_rule(Some((3, "alpha".parse().unwrap())));
        let remote = |n: &str, s: u8| Participant { user: format!("{n}@beta").parse().unwrap(), session: SessionId([s; 16]), muted: false, stage: None };
        rooms.join(p("alice", 1), R1);
        rooms.join(p("bob", 2), R1);
        rooms.join(remote("rita", 3), R1);
        rooms.join(remote("ron", 4), R1);
        assert_eq!(rooms.mode(&R1), CallMode::Mesh, "people of other nodes do not count");
        assert!(rooms.take_mode_changes().is_empty());
        rooms.join(p("carol", 5), R1);
        assert_eq!(rooms.mode(&R1), CallMode::Sfu);
        assert_eq!(rooms.take_mode_changes(), vec![(R1, CallMode::Sfu)]);
        rooms.leave(&seat("carol", 5));
        rooms.leave(&seat("bob", 2));
        assert_eq!(rooms.mode(&R1), CallMode::Sfu, "no flapping back to mesh");
        for s in [seat("alice", 1), (remote("rita", 3).user, SessionId([3; 16])), (remote("ron", 4).user, SessionId([4; 16]))] {
            rooms.leave(&s);
        }
        assert_eq!(rooms.mode(&R1), CallMode::Mesh, "an empty call starts over as a mesh");
        assert!(rooms.take_mode_changes().is_empty(), "nobody to tell");
        // Without an SFU, never.
        rooms.set_sfu_rule(None);
        for i in 0..10 {
            rooms.join(p("xavier", 10 + i), R2);
        }
        assert_eq!(rooms.mode(&R2), CallMode::Mesh);
    }

    #[test]
    fn join_move_mute_leave() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.join(p("alice", 1), R1), vec![R1]);
        assert_eq!(rooms.join(p("bob", 2), R1), vec![R1]);
        assert_eq!(rooms.join(p("bob", 2), R1), vec![], "the same join again changes nothing");
        assert_eq!(rooms.participants(&R1).len(), 2);
        // Moving reports both rooms, old first.
        assert_eq!(rooms.join(p("bob", 2), R2), vec![R1, R2]);
        assert_eq!(rooms.participants(&R1), vec![p("alice", 1)]);
        assert_eq!(rooms.set_muted(&seat("alice", 1), true), Some(R1));
        assert_eq!(rooms.set_muted(&seat("alice", 1), true), None, "no change, no event");
        assert!(rooms.participants(&R1)[0].muted);
        assert!(rooms.is_in(&R2, &user("bob"), &SessionId([2; 16])));
        assert!(!rooms.is_in(&R2, &user("alice"), &SessionId([2; 16])), "session belongs to bob");
        assert_eq!(rooms.leave(&seat("bob", 2)), Some(R2));
        assert_eq!(rooms.leave(&seat("bob", 2)), None);
        assert_eq!(rooms.counts(), (1, 1));
    }

    #[test]
    fn a_session_id_of_one_user_cannot_touch_another_users_seat() {
        let mut rooms = Rooms::default();
        rooms.join(p("alice", 1), R1);
        // Another node's user arrives with alice's session id: a separate seat.
        let mallory = Participant { user: "mallory@rogue".parse().unwrap(), session: SessionId([1; 16]), muted: true, stage: None };
        assert_eq!(rooms.join(mallory.clone(), R2), vec![R2]);
        assert_eq!(rooms.participants(&R1), vec![p("alice", 1)], "alice is where she was");
        assert_eq!(rooms.leave(&mallory.seat()), Some(R2));
        assert_eq!(rooms.participants(&R1), vec![p("alice", 1)], "and stays when mallory leaves");
    }

    #[test]
    fn deleting_a_room_or_removing_a_member_drops_sessions() {
        let mut rooms = Rooms::default();
        rooms.join(p("alice", 1), R1);
        rooms.join(p("bob", 2), R1);
        rooms.join(p("bob", 3), R2);
        let dropped = rooms.drop_from_group(&G, |p| p.user == user("bob"));
        assert_eq!(dropped.len(), 2);
        assert_eq!(rooms.counts(), (1, 1));
        assert_eq!(rooms.clear_room(&R1), vec![p("alice", 1)]);
        assert_eq!(rooms.counts(), (0, 0));
        assert_eq!(rooms.seat(&seat("alice", 1)), None);
    }
}
