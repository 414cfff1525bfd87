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
//! - a socket subscribed to G but not in R's call gets the deltas too while R is *listed*:
//!   it has at most `list_max` sessions and G's calls at most [`GROUP_LISTS`] × `list_max`
//!   in all (a page of many medium rooms is no more readable than one big room, and would
//!   cost every follower every join). Otherwise it gets R's count only: at once when R
//!   stops being listed, then at most once per [`COUNT_EVERY`] ([`Rooms::tick`], the counts
//!   of all of G's unlisted rooms that changed, in one message); when R is listed again it
//!   gets the whole list. When G's total crosses its bound, G's followers get a fresh
//!   `presence` snapshot, since every room's form changes at once;
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

pub use events::{Delivery, Event, RoomCount, RoomState};
use events::Kind;

/// Rooms with more sessions than this show only a count to sockets not in their call,
/// unless configured otherwise. A `participants` snapshot of 50 entries is about 4 KiB and
/// still a readable list on a page; past it, a list costs every watcher one message per
/// join and nobody reads it.
pub const DEFAULT_LIST_MAX: usize = 50;

/// A group's rooms are listed to sockets outside their calls while the group's calls hold
/// at most this many times `list_max` sessions in all (200 by default).
pub const GROUP_LISTS: usize = 4;

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
    /// Their display name (as their home node has it), if they set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix milliseconds when this session joined the call (their home node's clock): the
    /// order everyone lists the call in.
    pub joined_at: u64,
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

impl StageSeat {
    /// The place as presence carries it (SPEC.md §6.5).
    pub fn place(&self) -> voicechat_protocol::StagePlace {
        use voicechat_protocol::StagePlace;
        match *self {
            StageSeat { speaker: true, .. } => StagePlace::Speaker,
            StageSeat { invited: true, .. } => StagePlace::Invited,
            StageSeat { hand: true, .. } => StagePlace::Hand,
            _ => StagePlace::Listener,
        }
    }

    /// The seat a presence's place describes.
    pub fn from_place(place: voicechat_protocol::StagePlace) -> Self {
        use voicechat_protocol::StagePlace;
        let mut s = StageSeat::default();
        match place {
            StagePlace::Speaker => s.speaker = true,
            StagePlace::Invited => s.invited = true,
            StagePlace::Hand => s.hand = true,
            StagePlace::Listener => {}
        }
        s
    }
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
    /// Sessions in all calls of each group.
    group_seats: HashMap<GroupId, usize>,
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
            group_seats: HashMap::new(),
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
                // Joining again keeps one's place on the stage, and in the list. The place
                // of someone of another node is what their node says it is now.
                let mut p = p;
                if seat.0.node == self.me {
                    p.stage = entry.stage.or(p.stage);
                }
                p.joined_at = entry.joined_at;
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
        *self.group_seats.entry(room.0).or_default() += 1;
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
        // A conversation counts everyone in it, of every node: each node's people reach the
        // others through their own node's SFU once the nodes cascade (the same count on every
        // node, so they move together).
        let stage = r.values().any(|p| p.stage.is_some());
        if local > 0 && (r.len() >= threshold || stage) {
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
        self.take_seats(&room.0, dropped.len());
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
        self.group_seats.remove(group);
        dropped
    }

    /// Subscribes a socket to a group (instead of any group it followed before) and queues
    /// the group's snapshot for it.
    pub fn watch(&mut self, seat: SeatKey, group: GroupId) {
        self.unwatch(&seat);
        self.watchers.entry(group).or_default().insert(seat.clone());
        self.watching.insert(seat.clone(), group);
        self.snapshot(group, vec![seat]);
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

    /// Queues the counts of big rooms that changed since the last tick for their watchers:
    /// one message per socket with every such room of its group whose call it is not in.
    /// The core calls it every [`COUNT_EVERY`].
    pub fn tick(&mut self) {
        let mut by_group: BTreeMap<GroupId, Vec<RoomCount>> = BTreeMap::new();
        for room in std::mem::take(&mut self.counts_due) {
            let count = self.len(&room);
            // A room listed again is skipped: its watchers got the list then.
            if !self.listed(&room) {
                by_group.entry(room.0).or_default().push(RoomCount { room: room.1, version: self.version(&room), count });
            }
        }
        for (group, counts) in by_group {
            let Some(set) = self.watchers.get(&group) else { continue };
            // Sockets in the call of one of these rooms get the others only.
            let mut by_call: BTreeMap<Option<RoomId>, Vec<SeatKey>> = BTreeMap::new();
            for w in set {
                let call = self.seats.get(w).filter(|r| r.0 == group && counts.iter().any(|c| c.room == r.1)).map(|r| r.1);
                by_call.entry(call).or_default().push(w.clone());
            }
            for (call, to) in by_call {
                let rooms: Vec<RoomCount> = counts.iter().filter(|c| Some(c.room) != call).copied().collect();
                if !rooms.is_empty() {
                    self.outbox.push_back(Delivery { to, event: Event::ParticipantCounts { group, rooms } });
                }
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

    fn group_total(&self, group: &GroupId) -> usize {
        self.group_seats.get(group).copied().unwrap_or(0)
    }

    fn group_max(&self) -> usize {
        self.list_max.saturating_mul(GROUP_LISTS)
    }

    /// Whether sockets outside `room`'s call get its list (else its count).
    fn listed(&self, room: &RoomKey) -> bool {
        self.len(room) <= self.list_max && self.group_total(&room.0) <= self.group_max()
    }

    fn take_seats(&mut self, group: &GroupId, n: usize) {
        if let Some(total) = self.group_seats.get_mut(group) {
            *total = total.saturating_sub(n);
            if *total == 0 {
                self.group_seats.remove(group);
            }
        }
    }

    /// What `seat` may see of `room` now.
    fn room_state(&self, room: &RoomKey, seat: &SeatKey) -> RoomState {
        let count = self.len(room);
        let in_call = self.seats.get(seat) == Some(room);
        let participants = (in_call || self.listed(room)).then(|| self.participants(room));
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
            self.take_seats(&room.0, 1);
            self.fan_out(room, Kind::Left, p);
        }
        Some(room)
    }

    /// Numbers one change of `room`'s list (already applied; `p` is its subject) and queues
    /// what each socket that follows the room must hear of it (the rule in the module doc).
    fn fan_out(&mut self, room: RoomKey, kind: Kind, p: Participant) {
        let (after, total_after) = (self.len(&room), self.group_total(&room.0));
        let step = |n: usize| match kind {
            Kind::Joined => n - 1,
            Kind::Left => n + 1,
            Kind::Changed => n,
        };
        let (before, total_before) = (step(after), step(total_after));
        let version = {
            let v = self.versions.entry(room).or_insert(0);
            *v += 1;
            *v
        };
        let (max, group_max) = (self.list_max, self.group_max());
        let listed_before = before <= max && total_before <= group_max;
        let listed_after = after <= max && total_after <= group_max;
        // The group crossed its bound: every room changes form for its followers.
        let regroup = (total_before <= group_max) != (total_after <= group_max);
        let subject = p.seat();
        let local = |s: &SeatKey| s.0.node == self.me;
        let watches = |s: &SeatKey| self.watching.get(s) == Some(&room.0);
        let (mut deltas, mut counts, mut lists, mut fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in self.rooms.get(&room).into_iter().flat_map(|r| r.keys()).filter(|s| **s != subject && local(s)) {
            if regroup && watches(s) { fresh.push(s.clone()) } else { deltas.push(s.clone()) }
        }
        for w in self.watchers.get(&room.0).into_iter().flatten().filter(|w| **w != subject && self.seats.get(*w) != Some(&room)) {
            match (regroup, listed_before, listed_after) {
                (true, _, _) => fresh.push(w.clone()),
                (false, true, true) => deltas.push(w.clone()),
                (false, true, false) => counts.push(w.clone()),
                (false, false, true) => lists.push(w.clone()),
                (false, false, false) => {}
            }
        }
        if local(&subject) {
            match kind {
                _ if regroup && watches(&subject) => fresh.push(subject),
                Kind::Joined => lists.push(subject),
                Kind::Left if watches(&subject) && !listed_after => counts.push(subject),
                Kind::Left | Kind::Changed => deltas.push(subject),
            }
        }
        if !regroup && !listed_before && !listed_after && before != after && self.watchers.contains_key(&room.0) {
            self.counts_due.insert(room);
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
        self.snapshot(room.0, fresh);
    }

    /// Queues the group's `presence` snapshot for these sockets (each sees the room of its
    /// own call listed, so those in the same call share one message).
    fn snapshot(&mut self, group: GroupId, to: Vec<SeatKey>) {
        let mut by_call: BTreeMap<Option<RoomKey>, Vec<SeatKey>> = BTreeMap::new();
        for s in to {
            by_call.entry(self.seats.get(&s).copied().filter(|r| r.0 == group)).or_default().push(s);
        }
        for (_, to) in by_call {
            let rooms = self.versions.range(group_range(&group)).map(|(k, _)| self.room_state(k, &to[0])).collect();
            self.outbox.push_back(Delivery { to, event: Event::Presence { group, rooms } });
        }
    }
}

/// The keys of a group's rooms in an ordered map.
fn group_range(group: &GroupId) -> std::ops::RangeInclusive<RoomKey> {
    (*group, RoomId([0; 16]))..=(*group, RoomId([0xff; 16]))
}
