//! The forwarding decisions of the SFU, without I/O: which packet goes to whom, on which
//! slot, numbered how. Peers are handles; a peer may publish sources (a browser: its
//! microphone; another node: every speaker it carries) and subscribe with a few slots.
//!
//! The rules it enforces: a source is forwarded only while its peer may speak (a stage
//! room's listener may not) and only if it is among the room's loudest few; nobody gets
//! their own audio back; every subscriber's slots carry distinct sources.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::select::Selector;
use super::slot::{Rewritten, Slot};
use crate::rooms::RoomKey;

/// A connection to the SFU: a browser, or another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// One audio stream a peer publishes (`track`: its SSRC, or an index the peer chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    /// Who sends it.
    pub peer: PeerId,
    /// Which of its streams.
    pub track: u32,
}

/// How often the selection is re-decided.
pub const SELECT_EVERY: Duration = Duration::from_millis(100);

/// One incoming audio packet, as much of it as forwarding needs.
#[derive(Debug, Clone, Copy)]
pub struct AudioIn {
    /// Whose stream.
    pub source: SourceId,
    /// Its sequence number, extended (never wraps).
    pub seq: u64,
    /// Its RTP timestamp.
    pub rtp_time: u32,
    /// Its audio level (-dBov, 0..=127), if it carried the extension.
    pub level: Option<u8>,
}

/// Send a packet to `to` on its slot `slot`, numbered `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The subscriber.
    pub to: PeerId,
    /// Which of its slots.
    pub slot: usize,
    /// The slot's numbering of the packet.
    pub out: Rewritten,
}

/// A subscriber's slot now carries `source` (`None`: it fell silent). The page shows who
/// speaks from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotChange {
    /// The subscriber.
    pub peer: PeerId,
    /// Which of its slots.
    pub slot: usize,
    /// What it carries from now on.
    pub source: Option<SourceId>,
}

/// Why a packet went nowhere (counted for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its peer is not (or no longer) in a room here.
    UnknownPeer,
    /// Its peer may not speak (a stage listener).
    NotSpeaker,
    /// Not among the loudest few (or silent).
    NotSelected,
}

#[derive(Debug)]
struct Peer {
    room: RoomKey,
    may_speak: bool,
    /// Another node's SFU (a cascade link), not a browser.
    node: bool,
    slots: Vec<Slot<SourceId>>,
}

#[derive(Debug)]
struct Room {
    peers: HashSet<PeerId>,
    /// Subscribers (peers with slots), in a fixed order for fan-out.
    subscribers: Vec<PeerId>,
    selector: Selector<SourceId>,
}

/// The SFU's forwarding state for every room on the node.
#[derive(Debug)]
pub struct Forwarder {
    speakers: usize,
    rooms: HashMap<RoomKey, Room>,
    peers: HashMap<PeerId, Peer>,
    next_select: Option<Instant>,
    /// Slot changes not yet taken by the caller.
    changes: Vec<SlotChange>,
}

impl Forwarder {
    /// Forward at most `speakers` sources per room at once (each subscriber gets that many
    /// slots at most).
    pub fn new(speakers: usize) -> Self {
        Self { speakers: speakers.max(1), rooms: HashMap::new(), peers: HashMap::new(), next_select: None, changes: Vec::new() }
    }

    /// A peer joins `room`: it may speak or not, and subscribes with `slots` slots
    /// (0: it only publishes). A peer already present moves.
    pub fn add_peer(&mut self, peer: PeerId, room: RoomKey, may_speak: bool, slots: usize) {
        self.insert(peer, room, may_speak, false, slots);
    }

    /// Another node's SFU joins `room`: with `slots` > 0 it pulls this node's speakers (and
    /// never the speakers of other nodes this node pulls itself: audio crosses one hop, so
    /// each speaker reaches each node once); with none it carries that node's speakers
    /// here, already limited by that node to those who may speak.
    pub fn add_node(&mut self, peer: PeerId, room: RoomKey, slots: usize) {
        self.insert(peer, room, slots == 0, true, slots);
    }

    fn insert(&mut self, peer: PeerId, room: RoomKey, may_speak: bool, node: bool, slots: usize) {
        self.remove_peer(peer);
        let slots = slots.min(self.speakers);
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            peers: HashSet::new(),
            subscribers: Vec::new(),
            selector: Selector::new(self.speakers),
        });
        r.peers.insert(peer);
        if slots > 0 {
            r.subscribers.push(peer);
        }
        self.peers.insert(peer, Peer { room, may_speak, node, slots: vec![Slot::default(); slots] });
        // Whoever is already selected goes onto the newcomer's slots now: a listener (who
        // never speaks, so never changes the selection) would otherwise wait for the next
        // change of speaker to hear anything.
        if slots > 0 {
            self.assign(&room);
        }
    }

    /// A peer leaves; its sources stop at once.
    pub fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else { return };
        self.changes.retain(|c| c.peer != peer);
        let Some(r) = self.rooms.get_mut(&p.room) else { return };
        r.peers.remove(&peer);
        r.subscribers.retain(|s| *s != peer);
        if r.peers.is_empty() {
            self.rooms.remove(&p.room);
            return;
        }
        Self::forget_sources(r, peer);
        self.assign(&p.room);
    }

    /// Whether `peer` may speak from now on. Taking it away stops its sources at once.
    pub fn set_may_speak(&mut self, peer: PeerId, may: bool) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.may_speak == may {
            return;
        }
        p.may_speak = may;
        let room = p.room;
        if may {
            return; // selected once it is heard
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            Self::forget_sources(r, peer);
        }
        self.assign(&room);
    }

    fn forget_sources(r: &mut Room, peer: PeerId) {
        r.selector.forget(|s| s.peer == peer);
    }

    /// Where an incoming packet goes: pushes onto `out` (cleared first).
    pub fn on_audio(&mut self, now: Instant, pkt: AudioIn, out: &mut Vec<Forward>) -> Result<(), Dropped> {
        out.clear();
        let p = self.peers.get(&pkt.source.peer).ok_or(Dropped::UnknownPeer)?;
        if !p.may_speak {
            return Err(Dropped::NotSpeaker);
        }
        let room = p.room;
        let r = self.rooms.get_mut(&room).ok_or(Dropped::UnknownPeer)?;
        r.selector.heard(pkt.source, pkt.level, now);
        if !r.selector.is_selected(pkt.source) {
            // A newcomer to a room with free places need not wait for the next round.
            if r.selector.selected().count() >= self.speakers || !r.selector.update(now) {
                self.next_select.get_or_insert(now + SELECT_EVERY);
                return Err(Dropped::NotSelected);
            }
            self.assign(&room);
        }
        let r = &self.rooms[&room];
        for to in &r.subscribers {
            if *to == pkt.source.peer {
                continue;
            }
            let Some(sub) = self.peers.get_mut(to) else { continue };
            if let Some((i, slot)) = sub.slots.iter_mut().enumerate().find(|(_, s)| s.source() == Some(pkt.source))
                && let Some(rw) = slot.rewrite(pkt.source, pkt.seq, pkt.rtp_time, now)
            {
                out.push(Forward { to: *to, slot: i, out: rw });
            }
        }
        self.next_select.get_or_insert(now + SELECT_EVERY);
        Ok(())
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_select
    }

    /// Re-decide every room's selection.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_select.is_none_or(|t| now < t) {
            return;
        }
        self.next_select = None;
        let mut changed = Vec::new();
        let mut busy = false;
        for (key, r) in &mut self.rooms {
            if r.selector.update(now) {
                changed.push(*key);
            }
            busy |= r.selector.selected().next().is_some();
        }
        if busy {
            self.next_select = Some(now + SELECT_EVERY);
        }
        for key in changed {
            self.assign(&key);
        }
    }

    /// The slot changes since the last call, in order (tell each subscriber's page).
    pub fn take_changes(&mut self) -> Vec<SlotChange> {
        std::mem::take(&mut self.changes)
    }

    /// The sources `peer`'s slots carry now (for a page that has just connected).
    pub fn slots_of(&self, peer: PeerId) -> Vec<Option<SourceId>> {
        self.peers.get(&peer).map(|p| p.slots.iter().map(Slot::source).collect()).unwrap_or_default()
    }

    /// Put the room's selection onto every subscriber's slots: a source keeps its slot
    /// while selected, a newly selected one takes a free slot, nobody gets their own.
    fn assign(&mut self, room: &RoomKey) {
        let Some(r) = self.rooms.get(room) else { return };
        // Each selected source, and whether it came from another node.
        let selected: Vec<(SourceId, bool)> =
            r.selector.selected().map(|s| (s, self.peers.get(&s.peer).is_some_and(|p| p.node))).collect();
        let changes = &mut self.changes;
        for to in &r.subscribers {
            let Some(sub) = self.peers.get_mut(to) else { continue };
            let wanted: Vec<SourceId> = selected
                .iter()
                .filter(|(s, remote)| s.peer != *to && !(sub.node && *remote))
                .map(|(s, _)| *s)
                .take(sub.slots.len())
                .collect();
            for (i, slot) in sub.slots.iter_mut().enumerate() {
                if slot.source().is_some_and(|s| !wanted.contains(&s)) {
                    slot.clear();
                    changes.push(SlotChange { peer: *to, slot: i, source: None });
                }
            }
            for s in wanted {
                if sub.slots.iter().any(|slot| slot.source() == Some(s)) {
                    continue;
                }
                if let Some((i, slot)) = sub.slots.iter_mut().enumerate().find(|(_, slot)| slot.source().is_none()) {
                    slot.assign(s);
                    // A clear then an assign of one slot in one round is one change.
                    changes.retain(|c| !(c.peer == *to && c.slot == i));
                    changes.push(SlotChange { peer: *to, slot: i, source: Some(s) });
                }
            }
        }
    }
}
