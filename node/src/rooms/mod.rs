//! Who is in which room right now: an in-memory state machine with no I/O.
//!
//! Browsers (through `ws`) and, later, peers (through federation) feed it joins, leaves and
//! mutes; every call returns the rooms whose participant lists changed, and the caller
//! tells the people who can see them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use voicechat_protocol::ids::{GroupId, RoomId, SessionId, UserId};

/// A room, as the pair that names it.
pub type RoomKey = (GroupId, RoomId);

/// One session in a room's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// Who.
    pub user: UserId,
    /// Which of their sockets (a user may call from two tabs).
    pub session: SessionId,
    /// Whether they muted themselves.
    pub muted: bool,
}

/// The live room state of this node.
#[derive(Debug, Default)]
pub struct Rooms {
    seats: HashMap<SessionId, RoomKey>,
    rooms: HashMap<RoomKey, BTreeMap<SessionId, Participant>>,
    /// Sessions of other nodes' users, known from presence records, and when each expires
    /// unless refreshed (unix seconds).
    remote: HashMap<SessionId, u64>,
}

impl Rooms {
    /// Puts `session` into `room`, taking it out of any other room first. Returns every
    /// room whose list changed (the old one, if any, then the new one).
    pub fn join(&mut self, p: Participant, room: RoomKey) -> Vec<RoomKey> {
        let mut changed = Vec::with_capacity(2);
        if let Some(old) = self.seats.get(&p.session).copied()
            && old != room
        {
            self.remove(&p.session);
            changed.push(old);
        }
        self.seats.insert(p.session, room);
        self.rooms.entry(room).or_default().insert(p.session, p);
        changed.push(room);
        changed
    }

    /// Takes `session` out of its room; returns that room.
    pub fn leave(&mut self, session: &SessionId) -> Option<RoomKey> {
        self.remove(session)
    }

    /// Puts (or refreshes) another node's session in `room` until `expires_at`. Returns
    /// the rooms whose list changed: nothing for a plain heartbeat.
    pub fn join_remote(&mut self, p: Participant, room: RoomKey, expires_at: u64) -> Vec<RoomKey> {
        self.remote.insert(p.session, expires_at);
        let same = self.seats.get(&p.session) == Some(&room)
            && self.rooms.get(&room).and_then(|r| r.get(&p.session)) == Some(&p);
        if same { Vec::new() } else { self.join(p, room) }
    }

    /// Drops other nodes' sessions whose presence ran out at `now`; returns the rooms that
    /// changed.
    pub fn expire(&mut self, now: u64) -> Vec<RoomKey> {
        let dead: Vec<SessionId> = self.remote.iter().filter(|(_, t)| **t < now).map(|(s, _)| *s).collect();
        let mut changed = Vec::new();
        for s in dead {
            if let Some(room) = self.remove(&s)
                && !changed.contains(&room)
            {
                changed.push(room);
            }
        }
        changed
    }

    /// Every session of a room with the user it belongs to; for the heartbeat.
    pub fn seated(&self) -> impl Iterator<Item = (&RoomKey, &Participant)> {
        self.rooms.iter().flat_map(|(k, r)| r.values().map(move |p| (k, p)))
    }

    /// Sets the muted flag; returns the room if it changed.
    pub fn set_muted(&mut self, session: &SessionId, muted: bool) -> Option<RoomKey> {
        let room = *self.seats.get(session)?;
        let p = self.rooms.get_mut(&room)?.get_mut(session)?;
        if p.muted == muted {
            return None;
        }
        p.muted = muted;
        Some(room)
    }

    /// A session's seat and participant entry.
    pub fn find(&self, session: &SessionId) -> Option<(RoomKey, Participant)> {
        let room = *self.seats.get(session)?;
        let p = self.rooms.get(&room)?.get(session)?.clone();
        Some((room, p))
    }

    /// The room a session is in.
    pub fn seat(&self, session: &SessionId) -> Option<RoomKey> {
        self.seats.get(session).copied()
    }

    /// Whether `session` of `user` is in `room`.
    pub fn is_in(&self, room: &RoomKey, user: &UserId, session: &SessionId) -> bool {
        self.rooms.get(room).and_then(|r| r.get(session)).is_some_and(|p| &p.user == user)
    }

    /// A room's participants, ordered by session id.
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
        for p in &dropped {
            self.seats.remove(&p.session);
        }
        dropped
    }

    /// Takes every session matching `pred` out of the group's rooms; returns each dropped
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
            self.remove(&p.session);
        }
        victims
    }

    fn remove(&mut self, session: &SessionId) -> Option<RoomKey> {
        self.remote.remove(session);
        let room = self.seats.remove(session)?;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.remove(session);
            if r.is_empty() {
                self.rooms.remove(&room);
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
        Participant { user: user(n), session: SessionId([s; 16]), muted: false }
    }
    const G: GroupId = GroupId([1; 16]);
    const R1: RoomKey = (G, RoomId([1; 16]));
    const R2: RoomKey = (G, RoomId([2; 16]));

    #[test]
    fn join_move_mute_leave() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.join(p("alice", 1), R1), vec![R1]);
        assert_eq!(rooms.join(p("bob", 2), R1), vec![R1]);
        assert_eq!(rooms.participants(&R1).len(), 2);
        // Moving reports both rooms, old first.
        assert_eq!(rooms.join(p("bob", 2), R2), vec![R1, R2]);
        assert_eq!(rooms.participants(&R1), vec![p("alice", 1)]);
        assert_eq!(rooms.set_muted(&SessionId([1; 16]), true), Some(R1));
        assert_eq!(rooms.set_muted(&SessionId([1; 16]), true), None, "no change, no event");
        assert!(rooms.participants(&R1)[0].muted);
        assert!(rooms.is_in(&R2, &user("bob"), &SessionId([2; 16])));
        assert!(!rooms.is_in(&R2, &user("alice"), &SessionId([2; 16])), "session belongs to bob");
        assert_eq!(rooms.leave(&SessionId([2; 16])), Some(R2));
        assert_eq!(rooms.leave(&SessionId([2; 16])), None);
        assert_eq!(rooms.counts(), (1, 1));
    }

    #[test]
    fn remote_sessions_expire_unless_refreshed() {
        let mut rooms = Rooms::default();
        rooms.join(p("alice", 1), R1);
        let carol = Participant { user: "carol@beta".parse().unwrap(), session: SessionId([7; 16]), muted: false };
        assert_eq!(rooms.join_remote(carol.clone(), R1, 100), vec![R1]);
        assert_eq!(rooms.join_remote(carol.clone(), R1, 130), vec![], "heartbeat changes nothing visible");
        let muted = Participant { muted: true, ..carol.clone() };
        assert_eq!(rooms.join_remote(muted, R1, 130), vec![R1]);
        assert_eq!(rooms.expire(120), vec![], "refreshed to 130");
        assert_eq!(rooms.expire(131), vec![R1]);
        assert_eq!(rooms.participants(&R1), vec![p("alice", 1)], "local sessions never expire");
        assert_eq!(rooms.expire(10_000), vec![]);
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
        assert_eq!(rooms.seat(&SessionId([1; 16])), None);
    }
}
