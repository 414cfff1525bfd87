//! Who is in which room right now, and which sockets hear of it: an in-memory state machine
//! with no I/O.
//!
//! Browsers (through the core) and other nodes (through federation, which also decides when
//! their presence expires) feed it joins, leaves and mutes; sockets subscribe to the group
//! their page shows. Each change queues [`Delivery`]s (taken in order by the core, which
//! sends them) and returns the rooms whose lists changed.
//!
//! Who hears what about room R of group G (the rule the API documents):
//! - a socket in R's call gets every change of R as a delta, and the whole list when it joins;
//! - a socket subscribed to G but not in R's call gets the deltas too while R has at most
//!   `list_max` sessions; past that only `participant_count`, at most once per
//!   [`COUNT_EVERY`] ([`Rooms::tick`]); when R shrinks back it gets the whole list again;
//! - nobody else hears of R.
//!
//! A seat is keyed by the user *and* the session: a session id names one browser tab of one
//! user, so another node's records can never move or remove a session of someone else.

mod events;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::Serialize;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};

pub use events::{Delivery, Event, RoomState};
use events::Kind;

/// Rooms with more sessions than this show only a count to sockets not in their call,
/// unless configured otherwise. A `participants` snapshot of 50 entries is about 5 KiB and
/// still a readable list on a page; past it, a list costs every watcher one message per
/// join and nobody reads it.
pub const DEFAULT_LIST_MAX: usize = 50;

/// How often the count of a big room goes to its watchers, at most.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

/// A room, as the pair that names it.
pub type RoomKey = (GroupId, RoomId);

/// One browser tab of one user: a seat in a call, and a socket.
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

/// The live room state of this node.
#[derive(Debug)]
pub struct Rooms {
    /// Seats of this node's users are sockets here; others belong to other nodes.
    me: NodeName,
    list_max: usize,
    seats: HashMap<SeatKey, RoomKey>,
    rooms: HashMap<RoomKey, BTreeMap<SeatKey, Participant>>,
    /// Every room that had a call since the node started (kept when it empties, so its
    /// version never goes back), until the room or its group is deleted.
    versions: BTreeMap<RoomKey, u64>,
    /// Sockets subscribed to each group, and the one group of each socket.
    watchers: HashMap<GroupId, HashSet<SeatKey>>,
    watching: HashMap<SeatKey, GroupId>,
    /// Big rooms whose count changed since the last [`Rooms::tick`].
    counts_due: BTreeSet<RoomKey>,
    outbox: VecDeque<Delivery>,
    /// Calls move to the SFU at this many participants of this node (`None`: no SFU).
    sfu_threshold: Option<usize>,
    /// Calls whose participants of this node reach each other through the SFU.
    on_sfu: HashSet<RoomKey>,
    /// Calls whose mode changed since the owner last asked.
    mode_changed: Vec<RoomKey>,
}

impl Rooms {
    /// The rooms of node `me`, where rooms of more than `list_max` sessions show only their
    /// count to sockets outside their call.
    pub fn new(me: NodeName, list_max: usize) -> Self {
        Self {
            me,
            list_max,
            seats: HashMap::new(),
            rooms: HashMap::new(),
            versions: BTreeMap::new(),
            watchers: HashMap::new(),
            watching: HashMap::new(),
            counts_due: BTreeSet::new(),
            outbox: VecDeque::new(),
            sfu_threshold: None,
            on_sfu: HashSet::new(),
            mode_changed: Vec::new(),
        }
    }

    /// Changes the size past which a room shows only its count (applies from the next change).
    pub fn set_list_max(&mut self, list_max: usize) {
        self.list_max = list_max;
    }

    /// Puts the participant into `room`, taking their seat out of any other room first.
    /// Returns every room whose list changed (the old one, if any, then the new one);
    /// nothing if the participant was already there exactly so.
    pub fn join(&mut self, p: Participant, room: RoomKey) -> Vec<RoomKey> {
        let seat = p.seat();
        let mut changed = Vec::with_capacity(2);
        match self.seats.get(&seat).copied() {
            Some(old) if old == room => {
                let Some(entry) = self.rooms.get_mut(&room).and_then(|r| r.get_mut(&seat)) else { return changed };
                // Joining again keeps one's place on the stage.
                let mut p = p;
                p.stage = entry.stage.or(p.stage);
                if *entry == p {
                    return changed;
                }
                *entry = p.clone();
                self.fan_out(room, Kind::Changed, p);
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
        self.rooms.entry(room).or_default().insert(seat, p.clone());
        self.fan_out(room, Kind::Joined, p);
        self.settle_mode(room);
        changed.push(room);
        changed
    }

    /// Calls move to the SFU once `threshold` participants of this node are in them
    /// (`None`: never, the node has no SFU).
    pub fn set_sfu_threshold(&mut self, threshold: Option<usize>) {
        self.sfu_threshold = threshold;
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
        let Some(threshold) = self.sfu_threshold else { return };
        let me = &self.me;
        if self.on_sfu.contains(&room) {
            return;
        }
        let Some(r) = self.rooms.get(&room) else { return };
        let local = r.keys().filter(|(u, _)| &u.node == me).count();
        // A stage is on the SFU from its first person: only the SFU can keep listeners quiet.
        let stage = r.values().any(|p| p.stage.is_some());
        if local >= threshold || (stage && local > 0) {
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
        let p = p.clone();
        self.fan_out(room, Kind::Changed, p);
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
        let p = p.clone();
        self.fan_out(room, Kind::Changed, p.clone());
        Some((room, p))
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

    /// A room's version: how many changes its list went through since the node started.
    pub fn version(&self, room: &RoomKey) -> u64 {
        self.versions.get(room).copied().unwrap_or(0)
    }

    /// Number of rooms with someone in them, and of participants in all rooms.
    pub fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.seats.len())
    }

    /// Empties a room (it was deleted); returns who was dropped. Nobody is told here: the
    /// room is gone from the group, and the dropped sockets learn that they left.
    pub fn clear_room(&mut self, room: &RoomKey) -> Vec<Participant> {
        let dropped: Vec<_> = self.rooms.remove(room).map(|r| r.into_values().collect()).unwrap_or_default();
        self.on_sfu.remove(room);
        for p in &dropped {
            self.seats.remove(&p.seat());
        }
        self.versions.remove(room);
        self.counts_due.remove(room);
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

    /// Forgets a group (deleted, or no longer held): its calls, versions and subscribers.
    /// Returns who was dropped from its calls; nobody is told here.
    pub fn end_group(&mut self, group: &GroupId) -> Vec<(RoomKey, Participant)> {
        let keys: Vec<RoomKey> = self.versions.range(group_range(group)).map(|(k, _)| *k).collect();
        let mut dropped = Vec::new();
        for k in keys {
            dropped.extend(self.clear_room(&k).into_iter().map(|p| (k, p)));
        }
        for seat in self.watchers.remove(group).unwrap_or_default() {
            self.watching.remove(&seat);
        }
        dropped
    }

    /// Subscribes a socket to a group (instead of any group it followed before) and queues
    /// the group's snapshot for it.
    pub fn watch(&mut self, seat: SeatKey, group: GroupId) {
        self.unwatch(&seat);
        self.watchers.entry(group).or_default().insert(seat.clone());
        self.watching.insert(seat.clone(), group);
        let rooms = self
            .versions
            .range(group_range(&group))
            .map(|(k, _)| self.room_state(k, &seat))
            .collect();
        self.outbox.push_back(Delivery { to: vec![seat], event: Event::Presence { group, rooms } });
    }

    /// Ends a socket's subscription (it closed, or its page shows no group).
    pub fn unwatch(&mut self, seat: &SeatKey) {
        let Some(g) = self.watching.remove(seat) else { return };
        if let Some(set) = self.watchers.get_mut(&g) {
            set.remove(seat);
            if set.is_empty() {
                self.watchers.remove(&g);
            }
        }
    }

    /// Ends the subscriptions to `group` of sockets of these users (they lost the group).
    pub fn unwatch_users(&mut self, group: &GroupId, users: &[UserId]) {
        let seats: Vec<SeatKey> = match self.watchers.get(group) {
            Some(set) => set.iter().filter(|s| users.contains(&s.0)).cloned().collect(),
            None => return,
        };
        for s in seats {
            self.unwatch(&s);
        }
    }

    /// Queues a fresh view of one room for a socket that lost track of it: the list, or
    /// only the count of a big room whose call the socket is not in.
    pub fn resync(&mut self, seat: SeatKey, room: RoomKey) {
        let state = self.room_state(&room, &seat);
        let (group, room) = room;
        let event = match state.participants {
            Some(participants) => Event::Participants { group, room, version: state.version, participants },
            None => Event::ParticipantCount { group, room, version: state.version, count: state.count },
        };
        self.outbox.push_back(Delivery { to: vec![seat], event });
    }

    /// Queues the counts of big rooms that changed since the last tick for their watchers.
    /// The core calls it every [`COUNT_EVERY`].
    pub fn tick(&mut self) {
        for room in std::mem::take(&mut self.counts_due) {
            let count = self.len(&room);
            if count <= self.list_max {
                continue; // it shrank back; its watchers got the list then
            }
            let to: Vec<SeatKey> = match self.watchers.get(&room.0) {
                Some(set) => set.iter().filter(|s| self.seats.get(*s) != Some(&room)).cloned().collect(),
                None => continue,
            };
            if !to.is_empty() {
                let event = Event::ParticipantCount { group: room.0, room: room.1, version: self.version(&room), count };
                self.outbox.push_back(Delivery { to, event });
            }
        }
    }

    /// The messages queued since the last call, oldest first. Sending them in this order
    /// (and under the same lock as the changes) keeps every room's versions in order.
    pub fn take_deliveries(&mut self) -> VecDeque<Delivery> {
        std::mem::take(&mut self.outbox)
    }

    fn len(&self, room: &RoomKey) -> usize {
        self.rooms.get(room).map_or(0, BTreeMap::len)
    }

    /// What `seat` may see of `room` now.
    fn room_state(&self, room: &RoomKey, seat: &SeatKey) -> RoomState {
        let count = self.len(room);
        let in_call = self.seats.get(seat) == Some(room);
        let participants = (in_call || count <= self.list_max).then(|| self.participants(room));
        RoomState { room: room.1, version: self.version(room), count, participants }
    }

    fn remove(&mut self, seat: &SeatKey) -> Option<RoomKey> {
        let room = self.seats.remove(seat)?;
        let mut gone = None;
        if let Some(r) = self.rooms.get_mut(&room) {
            gone = r.remove(seat);
            if r.is_empty() {
                self.rooms.remove(&room);
                self.on_sfu.remove(&room);
            }
        }
        if let Some(p) = gone {
            self.fan_out(room, Kind::Left, p);
        }
        Some(room)
    }

    /// Numbers one change of `room`'s list (already applied; `p` is its subject) and queues
    /// what each socket that follows the room must hear of it (the rule in the module doc).
    fn fan_out(&mut self, room: RoomKey, kind: Kind, p: Participant) {
        let after = self.len(&room);
        let before = match kind {
            Kind::Joined => after - 1,
            Kind::Left => after + 1,
            Kind::Changed => after,
        };
        let version = {
            let v = self.versions.entry(room).or_insert(0);
            *v += 1;
            *v
        };
        let (big_before, big_after) = (before > self.list_max, after > self.list_max);
        let subject = p.seat();
        let local = |s: &SeatKey| s.0.node == self.me;
        let (mut deltas, mut counts, mut lists) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(r) = self.rooms.get(&room) {
            deltas.extend(r.keys().filter(|s| **s != subject && local(s)).cloned());
        }
        if let Some(set) = self.watchers.get(&room.0) {
            for w in set.iter().filter(|w| **w != subject && self.seats.get(*w) != Some(&room)) {
                match (big_before, big_after) {
                    (false, false) => deltas.push(w.clone()),
                    (false, true) => counts.push(w.clone()),
                    (true, false) => lists.push(w.clone()),
                    (true, true) => {}
                }
            }
            if big_before && big_after && before != after && !set.is_empty() {
                self.counts_due.insert(room);
            }
        }
        if local(&subject) {
            let watches = self.watching.get(&subject) == Some(&room.0);
            match kind {
                Kind::Joined => lists.push(subject),
                Kind::Left if watches && big_after => counts.push(subject),
                Kind::Left | Kind::Changed => deltas.push(subject),
            }
        }
        if !deltas.is_empty() {
            self.outbox.push_back(Delivery { to: deltas, event: kind.event(room, version, p) });
        }
        if !counts.is_empty() {
            let event = Event::ParticipantCount { group: room.0, room: room.1, version, count: after };
            self.outbox.push_back(Delivery { to: counts, event });
        }
        if !lists.is_empty() {
            let event = Event::Participants { group: room.0, room: room.1, version, participants: self.participants(&room) };
            self.outbox.push_back(Delivery { to: lists, event });
        }
    }
}

/// The keys of a group's rooms in an ordered map.
fn group_range(group: &GroupId) -> std::ops::RangeInclusive<RoomKey> {
    (*group, RoomId([0; 16]))..=(*group, RoomId([0xff; 16]))
}
