//! The room machine alone: seats move, mute and leave; sockets that follow a room get a
//! snapshot and then deltas in version order (checked by a follower that applies them the
//! way the web client does), counts past the threshold, and a fresh view after a gap.

use std::collections::HashMap;

use super::*;

fn user(n: &str) -> UserId {
    format!("{n}@alpha").parse().unwrap()
}
fn p(n: &str, s: u8) -> Participant {
    Participant { user: user(n), session: SessionId([s; 16]), muted: false, stage: None, name: None, joined_at: 0 }
}
fn seat(n: &str, s: u8) -> SeatKey {
    (user(n), SessionId([s; 16]))
}
const G: GroupId = GroupId([1; 16]);
const R1: RoomKey = (G, RoomId([1; 16]));
const R2: RoomKey = (G, RoomId([2; 16]));

fn rooms(list_max: usize) -> Rooms {
    Rooms::new(NodeName::new("alpha").unwrap(), list_max)
}

/// The events queued for one socket, in order.
fn events_for(d: &VecDeque<Delivery>, s: &SeatKey) -> Vec<Event> {
    d.iter().filter(|d| d.to.contains(s)).map(|d| d.event.clone()).collect()
}

#[test]
fn join_move_mute_leave() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
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
    // R1: alice joined, bob joined, bob left, alice muted.
    assert_eq!(rooms.version(&R1), 4);
    assert_eq!(rooms.version(&R2), 2, "an empty room keeps its version");
}

#[test]
fn a_session_id_of_one_user_cannot_touch_another_users_seat() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    rooms.join(p("alice", 1), R1);
    // Another node's user arrives with alice's session id: a separate seat.
    let mallory = Participant { user: "mallory@rogue".parse().unwrap(), session: SessionId([1; 16]), muted: true, stage: None, name: None, joined_at: 0 };
    assert_eq!(rooms.join(mallory.clone(), R2), vec![R2]);
    assert_eq!(rooms.participants(&R1), vec![p("alice", 1)], "alice is where she was");
    assert_eq!(rooms.leave(&mallory.seat()), Some(R2));
    assert_eq!(rooms.participants(&R1), vec![p("alice", 1)], "and stays when mallory leaves");
}

#[test]
fn deleting_a_room_or_removing_a_member_drops_sessions() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    rooms.join(p("alice", 1), R1);
    rooms.join(p("bob", 2), R1);
    rooms.join(p("bob", 3), R2);
    let dropped = rooms.drop_from_group(&G, |p| p.user == user("bob"));
    assert_eq!(dropped.len(), 2);
    assert_eq!(rooms.counts(), (1, 1));
    assert_eq!(rooms.clear_room(&R1), vec![p("alice", 1)]);
    assert_eq!(rooms.counts(), (0, 0));
    assert_eq!(rooms.seat(&seat("alice", 1)), None);
    assert_eq!(rooms.version(&R1), 0, "a deleted room is forgotten");
    assert_eq!(rooms.end_group(&G), vec![], "nobody left in R2");
    assert_eq!(rooms.version(&R2), 0);
}

#[test]
fn a_joiner_gets_the_list_and_the_others_one_delta_each_in_version_order() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    rooms.join(p("alice", 1), R1);
    let d = rooms.take_deliveries();
    let alice = seat("alice", 1);
    assert_eq!(
        events_for(&d, &alice),
        vec![Event::Participants { group: G, room: R1.1, version: 1, participants: vec![p("alice", 1)] }]
    );
    rooms.join(p("bob", 2), R1);
    rooms.set_muted(&seat("bob", 2), true);
    rooms.join(p("bob", 2), R2);
    let d = rooms.take_deliveries();
    let muted_bob = Participant { muted: true, ..p("bob", 2) };
    assert_eq!(
        events_for(&d, &alice),
        vec![
            Event::ParticipantJoined { group: G, room: R1.1, version: 2, participant: p("bob", 2) },
            Event::ParticipantChanged { group: G, room: R1.1, version: 3, participant: muted_bob.clone() },
            Event::ParticipantLeft { group: G, room: R1.1, version: 4, participant: muted_bob },
        ],
        "one small message per change, never the whole list again"
    );
    // bob heard his own changes in R1, then got R2's list when he moved there.
    let bob = events_for(&d, &seat("bob", 2));
    assert!(matches!(&bob[0], Event::Participants { version: 2, participants, .. } if participants.len() == 2));
    assert!(matches!(&bob[1], Event::ParticipantChanged { version: 3, .. }));
    assert!(matches!(&bob[2], Event::ParticipantLeft { version: 4, .. }));
    assert!(matches!(&bob[3], Event::Participants { room, version: 1, .. } if *room == R2.1));
    assert_eq!(bob.len(), 4);
    // Nothing goes to another node's users: their node tells them.
    rooms.join(Participant { user: "carol@beta".parse().unwrap(), session: SessionId([3; 16]), muted: false, stage: None, name: None, joined_at: 0 }, R1);
    let d = rooms.take_deliveries();
    assert!(d.iter().all(|d| d.to.iter().all(|s| s.0.node.as_str() == "alpha")), "{d:?}");
}

#[test]
fn subscribing_sends_a_snapshot_of_the_groups_rooms_then_their_deltas() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    rooms.join(p("alice", 1), R1);
    rooms.join(p("bob", 2), R2);
    rooms.leave(&seat("bob", 2));
    let _ = rooms.take_deliveries();
    let eve = seat("eve", 9);
    rooms.watch(eve.clone(), G);
    let d = rooms.take_deliveries();
    assert_eq!(
        events_for(&d, &eve),
        vec![Event::Presence {
            group: G,
            rooms: vec![
                RoomState { room: R1.1, version: 1, count: 1, participants: Some(vec![p("alice", 1)]) },
                RoomState { room: R2.1, version: 2, count: 0, participants: Some(vec![]) },
            ],
        }]
    );
    rooms.join(p("bob", 2), R1);
    let d = rooms.take_deliveries();
    assert_eq!(
        events_for(&d, &eve),
        vec![Event::ParticipantJoined { group: G, room: R1.1, version: 2, participant: p("bob", 2) }]
    );
    // Subscribing to another group ends the first subscription; unwatching ends all.
    rooms.watch(eve.clone(), GroupId([2; 16]));
    rooms.join(p("carol", 3), R1);
    rooms.unwatch(&eve);
    rooms.watch(seat("eve", 8), GroupId([2; 16]));
    rooms.unwatch_users(&GroupId([2; 16]), &[user("eve")]);
    rooms.join(p("dave", 4), R1);
    let d = rooms.take_deliveries();
    assert!(matches!(&events_for(&d, &eve)[..], [Event::Presence { rooms, .. }] if rooms.is_empty()), "{d:?}");
    assert_eq!(events_for(&d, &seat("eve", 8)).len(), 1, "the snapshot only");
}

#[test]
fn past_the_threshold_watchers_get_counts_and_the_call_keeps_the_list() {
    let mut rooms = rooms(2);
    let eve = seat("eve", 9);
    rooms.watch(eve.clone(), G);
    rooms.join(p("alice", 1), R1);
    rooms.join(p("bob", 2), R1);
    let d = rooms.take_deliveries();
    assert_eq!(events_for(&d, &eve).len(), 3, "snapshot, then two deltas while small");
    // The third makes the room big: eve gets the count at once instead of the delta.
    rooms.join(p("carol", 3), R1);
    let d = rooms.take_deliveries();
    assert_eq!(events_for(&d, &eve), vec![Event::ParticipantCount { group: G, room: R1.1, version: 3, count: 3 }]);
    assert!(matches!(&events_for(&d, &seat("alice", 1))[..], [Event::ParticipantJoined { version: 3, .. }]));
    // More joins and a mute: the call hears each; eve nothing until the tick, then one count.
    rooms.join(p("dave", 4), R1);
    rooms.join(p("erin", 5), R1);
    rooms.set_muted(&seat("alice", 1), true);
    let d = rooms.take_deliveries();
    assert_eq!(events_for(&d, &eve), vec![]);
    assert_eq!(events_for(&d, &seat("bob", 2)).len(), 3);
    rooms.tick();
    rooms.tick();
    let d = rooms.take_deliveries();
    assert_eq!(events_for(&d, &eve), vec![Event::ParticipantCounts { group: G, rooms: vec![RoomCount { room: R1.1, version: 6, count: 5 }] }]);
    assert_eq!(d.len(), 1, "one count per tick, only for watchers outside the call");
    // A watcher who joins the big call gets the whole list; when she leaves, the count.
    rooms.join(p("eve", 9), R1);
    let d = rooms.take_deliveries();
    assert!(matches!(&events_for(&d, &eve)[..], [Event::Participants { version: 7, participants, .. }] if participants.len() == 6));
    rooms.leave(&eve);
    let d = rooms.take_deliveries();
    assert_eq!(events_for(&d, &eve), vec![Event::ParticipantCount { group: G, room: R1.1, version: 8, count: 5 }]);
    // Shrinking back to the threshold: the watcher gets the list again, then deltas.
    rooms.leave(&seat("dave", 4));
    rooms.leave(&seat("erin", 5));
    rooms.leave(&seat("carol", 3));
    rooms.tick();
    let d = rooms.take_deliveries();
    let seen = events_for(&d, &eve);
    assert!(matches!(&seen[..], [Event::Participants { version: 11, participants, .. }] if participants.len() == 2), "{seen:?}");
    rooms.leave(&seat("bob", 2));
    let d = rooms.take_deliveries();
    assert!(matches!(&events_for(&d, &eve)[..], [Event::ParticipantLeft { version: 12, .. }]));
    // A subscription to a big room's group carries its count only.
    rooms.join(p("carol", 3), R1);
    rooms.join(p("dave", 4), R1);
    rooms.join(p("erin", 5), R1);
    rooms.watch(seat("eve", 8), G);
    let d = rooms.take_deliveries();
    assert!(matches!(
        &events_for(&d, &seat("eve", 8))[..],
        [Event::Presence { rooms, .. }] if rooms[0].participants.is_none() && rooms[0].count == 4
    ));
}

#[test]
fn a_tick_sends_each_watcher_one_message_with_the_counts_of_its_groups_big_rooms() {
    let mut rooms = rooms(1);
    let (eve, zoe) = (seat("eve", 9), seat("zoe", 8));
    rooms.watch(eve.clone(), G);
    rooms.watch(zoe.clone(), G);
    for (i, room) in [(1, R1), (2, R1), (3, R2), (4, R2)] {
        rooms.join(p(&format!("user{i}"), i), room);
    }
    rooms.join(p("eve", 9), R1);
    let _ = rooms.take_deliveries();
    rooms.join(p("user5", 5), R1);
    rooms.join(p("user6", 6), R2);
    rooms.tick();
    let d = rooms.take_deliveries();
    let (r1, r2) = (RoomCount { room: R1.1, version: 4, count: 4 }, RoomCount { room: R2.1, version: 3, count: 3 });
    assert_eq!(events_for(&d, &zoe).last(), Some(&Event::ParticipantCounts { group: G, rooms: vec![r1, r2] }));
    // eve is in R1's call: she has its list (and its deltas), so only R2's count.
    assert_eq!(events_for(&d, &eve).last(), Some(&Event::ParticipantCounts { group: G, rooms: vec![r2] }));
    assert!(matches!(events_for(&d, &eve)[0], Event::ParticipantJoined { version: 4, .. }));
}

#[test]
fn a_group_past_its_bound_shows_counts_for_every_room_and_lists_again_below_it() {
    // Rooms listed up to 2, the group up to 8: five rooms of two make ten.
    let mut rooms = rooms(2);
    let eve = seat("eve", 99);
    rooms.watch(eve.clone(), G);
    rooms.watch(seat("user0", 0), G);
    let room = |i: u8| (G, RoomId([i; 16]));
    for i in 0..8u8 {
        rooms.join(p(&format!("user{i}"), i), room(i / 2));
    }
    let d = rooms.take_deliveries();
    assert!(events_for(&d, &eve).iter().all(|e| matches!(e, Event::Presence { .. } | Event::ParticipantJoined { .. })));
    // The ninth: the group is past 8; eve gets one fresh snapshot, every room as a count.
    rooms.join(p("user8", 8), room(4));
    let d = rooms.take_deliveries();
    let seen = events_for(&d, &eve);
    assert!(matches!(&seen[..], [Event::Presence { rooms, .. }] if rooms.len() == 5 && rooms.iter().all(|r| r.participants.is_none())), "{seen:?}");
    // Those in a call keep their own room's list: user0's snapshot lists room 0 only.
    let mine = events_for(&d, &seat("user0", 0));
    assert!(
        matches!(&mine[..], [Event::Presence { rooms, .. }] if rooms.iter().filter(|r| r.participants.is_some()).map(|r| r.room).collect::<Vec<_>>() == [room(0).1]),
        "{mine:?}"
    );
    // More joins: counts, batched by the tick.
    rooms.join(p("user9", 9), room(4));
    rooms.tick();
    let d = rooms.take_deliveries();
    assert_eq!(
        events_for(&d, &eve),
        vec![Event::ParticipantCounts { group: G, rooms: vec![RoomCount { room: room(4).1, version: 2, count: 2 }] }]
    );
    // Back to 8: a fresh snapshot with the lists.
    rooms.leave(&seat("user9", 9));
    rooms.leave(&seat("user8", 8));
    let d = rooms.take_deliveries();
    let seen = events_for(&d, &eve);
    assert!(matches!(seen.last(), Some(Event::Presence { rooms, .. }) if rooms.iter().all(|r| r.participants.is_some())), "{seen:?}");
}

#[test]
fn resync_gives_a_socket_the_view_it_should_have() {
    let mut rooms = rooms(1);
    rooms.join(p("alice", 1), R1);
    rooms.join(p("bob", 2), R1);
    let _ = rooms.take_deliveries();
    rooms.resync(seat("alice", 1), R1);
    rooms.resync(seat("eve", 9), R1);
    let d = rooms.take_deliveries();
    assert!(matches!(&events_for(&d, &seat("alice", 1))[..], [Event::Participants { version: 2, participants, .. }] if participants.len() == 2));
    assert_eq!(events_for(&d, &seat("eve", 9)), vec![Event::ParticipantCount { group: G, room: R1.1, version: 2, count: 2 }]);
}

/// A socket's copy of the rooms it follows, kept by the rules the web client follows:
/// snapshots replace, a delta applies only on top of the version before it.
#[derive(Default, Debug)]
struct Follower {
    rooms: HashMap<RoomKey, (u64, Option<Vec<Participant>>, usize)>,
    gaps: Vec<RoomKey>,
}

impl Follower {
    fn apply(&mut self, e: &Event) {
        match e {
            Event::Presence { group, rooms } => {
                self.rooms.retain(|k, _| k.0 != *group);
                for r in rooms {
                    self.rooms.insert((*group, r.room), (r.version, r.participants.clone(), r.count));
                }
            }
            Event::Participants { group, room, version, participants } => {
                self.rooms.insert((*group, *room), (*version, Some(participants.clone()), participants.len()));
            }
            Event::ParticipantCount { group, room, version, count } => {
                self.rooms.insert((*group, *room), (*version, None, *count));
            }
            Event::ParticipantCounts { group, rooms } => {
                for r in rooms {
                    self.rooms.insert((*group, r.room), (r.version, None, r.count));
                }
            }
            Event::ParticipantJoined { group, room, version, participant }
            | Event::ParticipantLeft { group, room, version, participant }
            | Event::ParticipantChanged { group, room, version, participant } => {
                let key = (*group, *room);
                let (held, list, count) = self.rooms.entry(key).or_insert((0, Some(vec![]), 0));
                let Some(list) = list else { return self.gaps.push(key) };
                if *version <= *held {
                    return;
                }
                if *version != *held + 1 {
                    return self.gaps.push(key);
                }
                list.retain(|x| x.seat() != participant.seat());
                if !matches!(e, Event::ParticipantLeft { .. }) {
                    list.push(participant.clone());
                    list.sort_by_key(Participant::seat);
                }
                *held = *version;
                *count = list.len();
            }
        }
    }
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn a_missed_delta_is_caught_by_its_version_and_resync_repairs_the_list() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    let alice = seat("alice", 1);
    let mut f = Follower::default();
    rooms.join(p("alice", 1), R1);
    rooms.join(p("bob", 2), R1);
    let mut lost = 0;
    for d in rooms.take_deliveries() {
        if d.to.contains(&alice) {
            // The delta of bob's join goes missing on the way.
            if matches!(d.event, Event::ParticipantJoined { .. }) {
                lost += 1;
                continue;
            }
            f.apply(&d.event);
        }
    }
    assert_eq!(lost, 1);
    rooms.set_muted(&seat("bob", 2), true);
    for d in rooms.take_deliveries() {
        if d.to.contains(&alice) {
            f.apply(&d.event);
        }
    }
    assert_eq!(f.gaps, vec![R1], "version 3 on top of 1: a gap, not applied");
    assert_eq!(f.rooms[&R1].0, 1);
    for room in std::mem::take(&mut f.gaps) {
        rooms.resync(alice.clone(), room);
    }
    for d in rooms.take_deliveries() {
        f.apply(&d.event);
    }
    assert_eq!(f.rooms[&R1], (3, Some(rooms.participants(&R1)), 2));
    assert!(f.rooms[&R1].1.as_ref().unwrap()[1].muted);
    // Older deltas arriving after a snapshot are ignored, not taken for gaps.
    f.apply(&Event::ParticipantLeft { group: G, room: R1.1, version: 2, participant: p("bob", 2) });
    assert_eq!((f.rooms[&R1].2, f.gaps.len()), (2, 0));
}

#[test]
fn snapshot_then_deltas_always_ends_with_the_true_list() {
    // Rooms are listed up to 3, groups up to 12: both bounds are crossed both ways.
    const LIST_MAX: usize = 3;
    let rooms_of_g = [R1, R2];
    let other = (GroupId([2; 16]), RoomId([3; 16]));
    let all = [R1, R2, other];
    let socket = |i: u64| seat(&format!("user{}", i % 5), i as u8);
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let mut big_groups = 0;
    for seed in 0..20 {
        let mut rng = Lcg(seed);
        let mut rooms = rooms(LIST_MAX);
        let mut followers: HashMap<SeatKey, Follower> = HashMap::new();
        for step in 0..400 {
            let s = socket(rng.below(12));
            match rng.below(10) {
                0..=3 => {
                    rooms.join(Participant { user: s.0.clone(), session: s.1, muted: false, stage: None, name: None, joined_at: 0 }, all[rng.below(3) as usize]);
                }
                4 => {
                    rooms.leave(&s);
                }
                5 => {
                    rooms.set_muted(&s, rng.below(2) == 1);
                }
                6 => rooms.watch(s, if rng.below(4) == 0 { other.0 } else { G }),
                7 => rooms.unwatch(&s),
                8 => rooms.tick(),
                _ => {
                    let remote = Participant { user: "remote@beta".parse().unwrap(), session: SessionId([rng.below(4) as u8; 16]), muted: false, stage: None, name: None, joined_at: 0 };
                    if rng.below(2) == 0 {
                        rooms.join(remote, rooms_of_g[rng.below(2) as usize]);
                    } else {
                        rooms.leave(&remote.seat());
                    }
                }
            }
            for d in rooms.take_deliveries() {
                *seen.entry(kind_name(&d.event)).or_default() += 1;
                for to in &d.to {
                    followers.entry(to.clone()).or_default().apply(&d.event);
                }
            }
            rooms.tick();
            for d in rooms.take_deliveries() {
                *seen.entry(kind_name(&d.event)).or_default() += 1;
                for to in &d.to {
                    followers.entry(to.clone()).or_default().apply(&d.event);
                }
            }
            assert!(followers.values().all(|f| f.gaps.is_empty()), "seed {seed} step {step}: a gap");
            big_groups += usize::from(rooms.group_total(&G) > GROUP_LISTS * LIST_MAX);
            // Every socket's copy of every room it follows is the truth.
            for i in 0..12 {
                let s = socket(i);
                let in_call = rooms.seat(&s);
                let watched = rooms.watching.get(&s).copied();
                for room in all {
                    if in_call != Some(room) && watched != Some(room.0) {
                        continue;
                    }
                    let f = followers.get(&s).and_then(|f| f.rooms.get(&room));
                    let truth = rooms.participants(&room);
                    let (version, list, count) = f.cloned().unwrap_or((0, Some(vec![]), 0));
                    assert_eq!(count, truth.len(), "seed {seed} step {step}: {s:?} counts {room:?}");
                    let group_total: usize = all.iter().filter(|r| r.0 == room.0).map(|r| rooms.participants(r).len()).sum();
                    if in_call == Some(room) || (truth.len() <= LIST_MAX && group_total <= GROUP_LISTS * LIST_MAX) {
                        assert_eq!(list.as_ref(), Some(&truth), "seed {seed} step {step}: {s:?} lists {room:?}");
                        assert_eq!(version, rooms.version(&room), "seed {seed} step {step}: {s:?} in {room:?}");
                    } else {
                        assert_eq!(list, None, "seed {seed} step {step}: {s:?} shows only the count of {room:?}");
                    }
                }
            }
        }
    }
    assert!(big_groups > 100, "the group bound was crossed too rarely: {big_groups} steps");
    // The walk went through every kind of message, counts of big rooms included.
    for kind in ["presence", "participants", "participant_count", "participant_counts", "participant_joined", "participant_left", "participant_changed"] {
        assert!(seen.get(kind).copied().unwrap_or(0) > 10, "{kind} seen too rarely: {seen:?}");
    }
}

fn kind_name(e: &Event) -> &'static str {
    match e {
        Event::Presence { .. } => "presence",
        Event::Participants { .. } => "participants",
        Event::ParticipantCount { .. } => "participant_count",
        Event::ParticipantCounts { .. } => "participant_counts",
        Event::ParticipantJoined { .. } => "participant_joined",
        Event::ParticipantLeft { .. } => "participant_left",
        Event::ParticipantChanged { .. } => "participant_changed",
    }
}

#[test]
fn a_call_moves_to_the_sfu_at_the_threshold_of_people_of_all_nodes_and_stays_until_empty() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    rooms.set_sfu_threshold(Some(3));
    let remote = |n: &str, s: u8| Participant { user: format!("{n}@beta").parse().unwrap(), session: SessionId([s; 16]), muted: false, stage: None, name: None, joined_at: 0 };
    // People of other nodes alone: nobody here to move.
    for (n, s) in [("rita", 3), ("ron", 4), ("rex", 6)] {
        rooms.join(remote(n, s), R2);
    }
    assert_eq!(rooms.mode(&R2), CallMode::Mesh, "nobody of this node in the call");
    rooms.join(p("alice", 1), R1);
    rooms.join(remote("rita", 3), R1);
    assert_eq!(rooms.mode(&R1), CallMode::Mesh);
    assert!(rooms.take_mode_changes().is_empty());
    rooms.join(remote("ron", 4), R1);
    assert_eq!(rooms.mode(&R1), CallMode::Sfu, "people of other nodes count");
    assert_eq!(rooms.take_mode_changes(), vec![(R1, CallMode::Sfu)]);
    rooms.join(p("bob", 2), R1);
    rooms.join(p("carol", 5), R1);
    assert!(rooms.take_mode_changes().is_empty(), "once");
    rooms.leave(&seat("carol", 5));
    rooms.leave(&seat("bob", 2));
    assert_eq!(rooms.mode(&R1), CallMode::Sfu, "no flapping back to mesh");
    for s in [seat("alice", 1), (remote("rita", 3).user, SessionId([3; 16])), (remote("ron", 4).user, SessionId([4; 16]))] {
        rooms.leave(&s);
    }
    assert_eq!(rooms.mode(&R1), CallMode::Mesh, "an empty call starts over as a mesh");
    assert!(rooms.take_mode_changes().is_empty(), "nobody to tell");
    // Without an SFU, never.
    rooms.set_sfu_threshold(None);
    for i in 0..10 {
        rooms.join(p("xavier", 10 + i), R2);
    }
    assert_eq!(rooms.mode(&R2), CallMode::Mesh);
}

#[test]
fn a_place_on_stage_changes_as_a_delta_and_survives_joining_again() {
    let mut rooms = rooms(DEFAULT_LIST_MAX);
    let listener = Participant { stage: Some(StageSeat::default()), ..p("bob", 2) };
    rooms.join(listener.clone(), R1);
    rooms.watch(seat("alice", 1), G);
    let _ = rooms.take_deliveries();
    let (room, now) = rooms.set_stage(&seat("bob", 2), |s| s.hand = true).unwrap();
    assert_eq!(room, R1);
    assert!(now.stage.unwrap().hand);
    let got = events_for(&rooms.take_deliveries(), &seat("alice", 1));
    assert!(matches!(&got[..], [Event::ParticipantChanged { participant, .. }] if participant.stage.unwrap().hand), "{got:?}");
    assert!(rooms.set_stage(&seat("bob", 2), |s| s.hand = true).is_none(), "no change, no delta");
    // Joining again (a reconnecting page) keeps the raised hand.
    rooms.join(listener, R1);
    assert!(rooms.find(&seat("bob", 2)).unwrap().1.stage.unwrap().hand);
}
