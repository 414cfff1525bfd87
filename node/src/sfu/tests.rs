//! The forwarder in simulated time: a lecture (two speakers, many listeners, a listener who
//! tries to talk), a crowded conversation (only the loudest few go out), people leaving.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use voicechat_protocol::ids::{GroupId, RoomId};

use super::forward::SELECT_EVERY;
use super::*;
use crate::rooms::RoomKey;

const ROOM: RoomKey = (GroupId([1; 16]), RoomId([1; 16]));
const OTHER_ROOM: RoomKey = (GroupId([1; 16]), RoomId([2; 16]));
const FRAME: Duration = Duration::from_millis(20);

fn src(peer: u64) -> SourceId {
    SourceId { peer: PeerId(peer), track: 1 }
}

/// Drives a forwarder: every sender sends one 20 ms packet per frame; records what each
/// subscriber gets, per slot.
struct Sim {
    fwd: Forwarder,
    now: Instant,
    seq: HashMap<u64, u64>,
    /// (subscriber, slot) → the (out seq, source) pairs received, in order.
    got: BTreeMap<(u64, usize), Vec<(u64, SourceId)>>,
    /// Slot changes seen, per subscriber and slot: the last source.
    shown: BTreeMap<(u64, usize), Option<SourceId>>,
    dropped: Vec<Dropped>,
}

impl Sim {
    fn new(speakers: usize) -> Self {
        Self {
            fwd: Forwarder::new(speakers),
            now: Instant::now(),
            seq: HashMap::new(),
            got: BTreeMap::new(),
            shown: BTreeMap::new(),
            dropped: Vec::new(),
        }
    }

    fn changes(&mut self) {
        for c in self.fwd.take_changes() {
            self.shown.insert((c.peer.0, c.slot), c.source);
        }
    }

    /// `ms` of talk: `senders` as (peer, audio level).
    fn talk(&mut self, senders: &[(u64, u8)], ms: u64) {
        let mut out = Vec::new();
        for _ in 0..ms / 20 {
            self.now += FRAME;
            for &(peer, level) in senders {
                let seq = self.seq.entry(peer).or_insert(1000 * peer);
                *seq += 1;
                let pkt = AudioIn { source: src(peer), seq: *seq, rtp_time: (*seq * 960) as u32, level: Some(level) };
                match self.fwd.on_audio(self.now, pkt, &mut out) {
                    Ok(()) => {
                        for f in &out {
                            self.got.entry((f.to.0, f.slot)).or_default().push((f.out.seq, pkt.source));
                        }
                    }
                    Err(d) => self.dropped.push(d),
                }
            }
            if self.fwd.poll_timeout().is_some_and(|t| t <= self.now) {
                self.fwd.handle_timeout(self.now);
            }
            self.changes();
        }
    }

    /// Packets `peer` received from `from`, over all its slots.
    fn received(&self, peer: u64, from: u64) -> usize {
        self.got.iter().filter(|((p, _), _)| *p == peer).flat_map(|(_, v)| v).filter(|(_, s)| s.peer.0 == from).count()
    }

    fn clear(&mut self) {
        self.got.clear();
        self.dropped.clear();
    }
}

#[test]
fn a_lecture_reaches_every_listener_and_a_listener_is_not_heard_until_invited() {
    let mut sim = Sim::new(3);
    // Peers 1 and 2 are on stage; 10..110 listen; everyone subscribes with 3 slots.
    for p in [1, 2] {
        sim.fwd.add_peer(PeerId(p), ROOM, true, 3);
    }
    for p in 10..110 {
        sim.fwd.add_peer(PeerId(p), ROOM, false, 3);
    }
    // One second of both speakers, while listener 10 tries to talk.
    sim.talk(&[(1, 30), (2, 45), (10, 20)], 1000);
    for p in 11..110 {
        assert_eq!(sim.received(p, 1), 50, "listener {p} from speaker 1");
        assert_eq!(sim.received(p, 2), 50, "listener {p} from speaker 2");
        assert_eq!(sim.received(p, 10), 0, "listener {p} heard a listener");
    }
    assert_eq!(sim.received(1, 2), 50, "speakers hear each other");
    assert_eq!(sim.received(1, 1), 0, "nobody gets their own audio");
    assert_eq!(sim.dropped.iter().filter(|d| **d == Dropped::NotSpeaker).count(), 50);
    // Each slot's numbering runs without holes.
    for ((peer, slot), v) in &sim.got {
        assert!(v.windows(2).all(|w| w[1].0 == w[0].0 + 1), "subscriber {peer} slot {slot}: {v:?}");
    }

    // The moderator invites listener 10 on stage: from its next packet on, everyone hears it.
    sim.clear();
    sim.fwd.set_may_speak(PeerId(10), true);
    assert!(sim.fwd.take_changes().is_empty(), "nothing changes before it is heard");
    sim.talk(&[(1, 30), (2, 45), (10, 20)], 1000);
    for p in 11..110 {
        assert_eq!(sim.received(p, 10), 50, "listener {p} from the invited speaker");
        assert_eq!(sim.received(p, 1), 50);
    }
    assert!(sim.dropped.is_empty(), "{:?}", sim.dropped);
    // Sent back to the audience: silenced at once, and its slot is shown empty.
    sim.clear();
    sim.fwd.set_may_speak(PeerId(10), false);
    let changes = sim.fwd.take_changes();
    assert_eq!(changes.len(), 101, "every subscriber but 10 itself loses the slot: {}", changes.len());
    assert!(changes.iter().all(|c| c.source.is_none()));
    sim.talk(&[(10, 20)], 200);
    assert_eq!((11..110).map(|p| sim.received(p, 10)).sum::<usize>(), 0);
}

#[test]
fn a_listener_who_arrives_mid_lecture_hears_the_speakers_at_once() {
    let mut sim = Sim::new(3);
    for p in [1, 2] {
        sim.fwd.add_peer(PeerId(p), ROOM, true, 3);
    }
    sim.talk(&[(1, 30), (2, 45)], 1000);
    sim.clear();
    // A listener never speaks, so it never changes the selection: it is given it on arrival.
    sim.fwd.add_peer(PeerId(10), ROOM, false, 3);
    let mut got: Vec<_> = sim.fwd.take_changes().into_iter().filter(|c| c.peer == PeerId(10)).filter_map(|c| c.source).collect();
    got.sort();
    assert_eq!(got, vec![src(1), src(2)]);
    sim.talk(&[(1, 30), (2, 45)], 200);
    assert_eq!((sim.received(10, 1), sim.received(10, 2)), (10, 10));
    // Someone who only publishes gets no slots and no changes.
    sim.fwd.add_peer(PeerId(50), ROOM, true, 0);
    assert!(sim.fwd.take_changes().is_empty());
}

#[test]
fn in_a_crowded_room_each_listener_gets_only_the_loudest_few() {
    let mut sim = Sim::new(3);
    for p in 1..=10 {
        sim.fwd.add_peer(PeerId(p), ROOM, true, 3);
    }
    // 3 loud, 7 murmuring.
    let mut senders: Vec<(u64, u8)> = (1..=10).map(|p| (p, if p <= 3 { 25 } else { 90 })).collect();
    sim.talk(&senders, 2000);
    sim.clear();
    sim.talk(&senders, 1000);
    // Peer 10 hears 1, 2 and 3 only, each in full.
    for from in 1..=3 {
        assert_eq!(sim.received(10, from), 50, "from {from}");
    }
    for from in 4..=9 {
        assert_eq!(sim.received(10, from), 0, "from {from}");
    }
    // Peer 1 is among the loudest: it gets the other two, never itself, on distinct slots.
    assert_eq!(sim.received(1, 1), 0);
    assert_eq!(sim.received(1, 2) + sim.received(1, 3), 100);
    let sources: Vec<_> = (0..3).filter_map(|slot| sim.shown.get(&(10, slot)).copied().flatten()).collect();
    assert_eq!(sources.len(), 3, "peer 10 is shown three speakers: {:?}", sim.shown);

    // Peer 7 starts shouting and peer 3 goes quiet: within a second 7 replaces 3.
    senders[2].1 = 110;
    senders[6].1 = 10;
    sim.talk(&senders, 1000);
    sim.clear();
    sim.talk(&senders, 400);
    assert_eq!(sim.received(10, 7), 20);
    assert_eq!(sim.received(10, 3), 0);
    assert_eq!(sim.fwd.slots_of(PeerId(10)).iter().flatten().filter(|s| s.peer == PeerId(7)).count(), 1);
}

#[test]
fn a_peer_that_leaves_stops_at_once_and_rooms_are_apart() {
    let mut sim = Sim::new(3);
    sim.fwd.add_peer(PeerId(1), ROOM, true, 3);
    sim.fwd.add_peer(PeerId(2), ROOM, true, 3);
    sim.fwd.add_peer(PeerId(3), OTHER_ROOM, true, 3);
    sim.talk(&[(1, 30), (3, 30)], 200);
    assert_eq!(sim.received(2, 1), 10);
    assert_eq!(sim.received(2, 3), 0, "another room's audio");
    assert_eq!(sim.received(3, 1), 0, "another room's audio");
    sim.fwd.remove_peer(PeerId(1));
    assert_eq!(sim.fwd.take_changes(), vec![SlotChange { peer: PeerId(2), slot: 0, source: None }]);
    sim.clear();
    sim.talk(&[(1, 30)], 100);
    assert_eq!(sim.received(2, 1), 0);
    assert_eq!(sim.dropped, vec![Dropped::UnknownPeer; 5]);
    // The last one out closes the room; the timer goes quiet.
    sim.fwd.remove_peer(PeerId(2));
    sim.fwd.remove_peer(PeerId(3));
    sim.now += SELECT_EVERY;
    sim.fwd.handle_timeout(sim.now);
    assert!(sim.fwd.take_changes().is_empty());
    assert_eq!(sim.fwd.poll_timeout(), None);
}

#[test]
fn a_publisher_only_peer_carries_several_sources() {
    // Another node, relaying two remote speakers into this room (no slots of its own).
    let mut sim = Sim::new(3);
    sim.fwd.add_peer(PeerId(50), ROOM, true, 0);
    sim.fwd.add_peer(PeerId(2), ROOM, false, 3);
    let mut out = Vec::new();
    for i in 0..10u64 {
        sim.now += FRAME;
        for track in [7u32, 8] {
            let pkt = AudioIn { source: SourceId { peer: PeerId(50), track }, seq: i, rtp_time: (i * 960) as u32, level: Some(30) };
            sim.fwd.on_audio(sim.now, pkt, &mut out).unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].to, PeerId(2));
        }
    }
    let slots = sim.fwd.slots_of(PeerId(2));
    assert_eq!(slots.iter().flatten().count(), 2, "{slots:?}");
}

#[test]
fn a_cascade_sends_each_local_speaker_to_each_node_once_and_relays_nothing_further() {
    // Alpha's forwarder in a lecture: speaker 1 and listeners 10..20 here; beta's link (peer
    // 100) carries beta's speaker on its track 7; gamma and delta pull alpha's speakers
    // (peers 200 and 300, three slots each).
    let mut sim = Sim::new(3);
    sim.fwd.add_peer(PeerId(1), ROOM, true, 3);
    for p in 10..20 {
        sim.fwd.add_peer(PeerId(p), ROOM, false, 3);
    }
    sim.fwd.add_node(PeerId(100), ROOM, 0);
    sim.fwd.add_node(PeerId(200), ROOM, 3);
    sim.fwd.add_node(PeerId(300), ROOM, 3);
    let mut out = Vec::new();
    let mut to_nodes: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut to_listeners: BTreeMap<u64, usize> = BTreeMap::new();
    for i in 0..50u64 {
        sim.now += FRAME;
        // Speaker 1, beta's speaker, and listener 10 who tries to talk.
        let pkts = [(PeerId(1), 1, 40), (PeerId(100), 7, 35), (PeerId(10), 1, 20)];
        for (peer, track, level) in pkts {
            let pkt = AudioIn { source: SourceId { peer, track }, seq: 100 + i, rtp_time: (i * 960) as u32, level: Some(level) };
            if sim.fwd.on_audio(sim.now, pkt, &mut out).is_err() {
                continue;
            }
            for f in &out {
                if f.to.0 >= 200 {
                    *to_nodes.entry((f.to.0, peer.0)).or_default() += 1;
                } else if f.to.0 >= 10 && f.to.0 < 20 {
                    *to_listeners.entry(peer.0).or_default() += 1;
                }
            }
        }
        if sim.fwd.poll_timeout().is_some_and(|t| t <= sim.now) {
            sim.fwd.handle_timeout(sim.now);
        }
    }
    // Each node gets alpha's speaker once per packet, whatever alpha's listener count; beta's
    // speaker, which reached alpha from beta, is not relayed to gamma or delta (they pull
    // beta themselves); the listener who tried to talk goes nowhere.
    assert_eq!(to_nodes, BTreeMap::from([((200, 1), 50), ((300, 1), 50)]));
    // Alpha's own listeners hear both speakers.
    assert_eq!(to_listeners, BTreeMap::from([(1, 500), (100, 500)]));
    assert_eq!(sim.fwd.slots_of(PeerId(200)).iter().flatten().count(), 1, "only alpha's speaker on gamma's slots");
    // Gamma drops out: the others go on.
    sim.fwd.remove_peer(PeerId(200));
    sim.now += FRAME;
    let pkt = AudioIn { source: SourceId { peer: PeerId(1), track: 1 }, seq: 200, rtp_time: 50 * 960, level: Some(40) };
    sim.fwd.on_audio(sim.now, pkt, &mut out).unwrap();
    let mut got: Vec<u64> = out.iter().map(|f| f.to.0).collect();
    got.sort();
    assert_eq!(got, (10..20).chain([300]).collect::<Vec<_>>());
}
