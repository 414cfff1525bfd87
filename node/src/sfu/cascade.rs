//! The cascade between the forwarding units of nodes, without I/O: for each room on the
//! SFU, which other nodes this node pulls audio from, and which nodes may pull from it.
//!
//! A room of a group may have people on several nodes; each person connects only to their
//! own node. A node pulls the speakers of another node over one WebRTC connection per
//! (room, node) — a *link* — and fans them out to its own listeners, so a speaker's audio
//! crosses to each other node once, whatever the number of listeners there. The rules:
//!
//! - a node pulls from another while it has people of its own in the room and the other
//!   node has people in the room too (presence says so), and the other node is reachable;
//! - it stops pulling as soon as its own last person leaves, or the other node's last one;
//! - a link that fails is tried again after a pause that doubles (1 s to 30 s), so a node
//!   that died or was cut off drops out and is pulled again after the heal;
//! - a node answers a pull only from a node that has someone in the room, and only for a
//!   room in which it has someone itself (otherwise there is nothing to send).
//!
//! Who may be heard is not decided here: the sending node forwards only its people who may
//! speak, the receiving one selects the loudest few among everyone it receives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use voicechat_protocol::ids::NodeName;

use crate::rooms::RoomKey;

/// The first pause after a link failed.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between tries of a link.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A link not up this long after it was asked for has failed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One pull: this node's SFU receives `node`'s speakers in `room`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The room.
    pub room: RoomKey,
    /// The node whose speakers are pulled.
    pub node: NodeName,
}

/// What the driver should do about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the node for its speakers in the room (an offer over the cascade protocol).
    Open(Link),
    /// Drop the link's connection (nothing to pull any more, or it failed).
    Close(Link),
}

/// Why a node's request to pull from this one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The asking node has nobody in the room (as far as this node knows).
    #[error("the asking node has no participant in the room")]
    NotInRoom,
    /// This node has nobody in the room, so nothing to send.
    #[error("this node has no participant in the room")]
    NothingHere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Asked for at this time; not up yet.
    Opening(Instant),
    /// Media flows.
    Up,
    /// Failed `n` times in a row; try again at this time.
    Waiting(Instant, u32),
}

#[derive(Debug, Default)]
struct RoomView {
    /// This node's people in the room's call.
    local: usize,
    /// Other nodes' people in the room's call, per node.
    remote: BTreeMap<NodeName, usize>,
}

/// The cascade plan of one node.
#[derive(Debug)]
pub struct Cascade {
    rooms: HashMap<RoomKey, RoomView>,
    links: BTreeMap<Link, (State, u32)>,
    unreachable: BTreeSet<NodeName>,
}

impl Default for Cascade {
    fn default() -> Self {
        Self::new()
    }
}

impl Cascade {
    /// No rooms, no links.
    pub fn new() -> Self {
        Self { rooms: HashMap::new(), links: BTreeMap::new(), unreachable: BTreeSet::new() }
    }

    /// This node has `count` people in `room`'s call on the SFU (0: none, or the call is
    /// not on the SFU).
    pub fn set_local(&mut self, room: RoomKey, count: usize) {
        self.rooms.entry(room).or_default().local = count;
        self.tidy(room);
    }

    /// Every room's counts at once (rooms left out have nobody): this node's people per
    /// room, and other nodes' people per room and node.
    pub fn set_all(&mut self, local: HashMap<RoomKey, usize>, remote: HashMap<RoomKey, BTreeMap<NodeName, usize>>) {
        self.rooms.clear();
        for (room, n) in local {
            self.rooms.entry(room).or_default().local = n;
        }
        for (room, nodes) in remote {
            self.rooms.entry(room).or_default().remote = nodes.into_iter().filter(|(_, n)| *n > 0).collect();
        }
        self.rooms.retain(|_, r| r.local > 0 || !r.remote.is_empty());
    }

    /// `node` has `count` people in `room`'s call.
    pub fn set_remote(&mut self, room: RoomKey, node: NodeName, count: usize) {
        let r = self.rooms.entry(room).or_default();
        if count == 0 {
            r.remote.remove(&node);
        } else {
            r.remote.insert(node, count);
        }
        self.tidy(room);
    }

    /// Whether `node` can be reached (federation is connected to it). An unreachable node
    /// is not pulled from; when it comes back, its links are asked for at once.
    pub fn set_reachable(&mut self, node: &NodeName, up: bool) {
        if up {
            self.unreachable.remove(node);
        } else {
            self.unreachable.insert(node.clone());
        }
    }

    /// Whether `node` is reachable as far as this plan knows.
    pub fn is_reachable(&self, node: &NodeName) -> bool {
        !self.unreachable.contains(node)
    }

    fn tidy(&mut self, room: RoomKey) {
        if self.rooms.get(&room).is_some_and(|r| r.local == 0 && r.remote.is_empty()) {
            self.rooms.remove(&room);
        }
    }

    /// The links this node should have now.
    pub fn wanted(&self) -> BTreeSet<Link> {
        let mut out = BTreeSet::new();
        for (room, r) in &self.rooms {
            if r.local == 0 {
                continue;
            }
            for node in r.remote.keys() {
                if !self.unreachable.contains(node) {
                    out.insert(Link { room: *room, node: node.clone() });
                }
            }
        }
        out
    }

    /// The nodes that have people in `room` (the ones this node's speakers go to, once each).
    pub fn nodes_in(&self, room: &RoomKey) -> Vec<NodeName> {
        self.rooms.get(room).map(|r| r.remote.keys().cloned().collect()).unwrap_or_default()
    }

    /// Whether `node` may pull this node's speakers in `room`.
    pub fn may_pull(&self, room: &RoomKey, node: &NodeName) -> Result<(), Refusal> {
        let r = self.rooms.get(room).ok_or(Refusal::NotInRoom)?;
        if !r.remote.contains_key(node) {
            return Err(Refusal::NotInRoom);
        }
        if r.local == 0 {
            return Err(Refusal::NothingHere);
        }
        Ok(())
    }

    /// The link's connection is up.
    pub fn opened(&mut self, link: &Link) {
        if let Some(entry) = self.links.get_mut(link) {
            *entry = (State::Up, 0);
        }
    }

    /// The link failed (refused, timed out, or its connection died): it is tried again
    /// after a pause, if still wanted then.
    pub fn failed(&mut self, link: &Link, now: Instant) {
        if let Some((state, failures)) = self.links.get_mut(link) {
            // One try fails once: the news of the connection that ended after the plan gave
            // up on it (or a refusal after a timeout) is not a second failure.
            if matches!(state, State::Waiting(..)) {
                return;
            }
            *failures += 1;
            let pause = RETRY_FIRST.saturating_mul(1 << (*failures - 1).min(5)).min(RETRY_MAX);
            *state = State::Waiting(now + pause, *failures);
        }
    }

    /// What to do now: links to open (new, or due for another try) and links to close.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let wanted = self.wanted();
        let mut actions = Vec::new();
        // Links no longer wanted close.
        let gone: Vec<Link> = self.links.keys().filter(|l| !wanted.contains(*l)).cloned().collect();
        for link in gone {
            self.links.remove(&link);
            actions.push(Action::Close(link));
        }
        for link in wanted {
            match self.links.get(&link).copied() {
                None => {
                    self.links.insert(link.clone(), (State::Opening(now), 0));
                    actions.push(Action::Open(link));
                }
                Some((State::Opening(since), failures)) if now >= since + OPEN_TIMEOUT => {
                    // Give up on this try; the close drops whatever half-made connection.
                    actions.push(Action::Close(link.clone()));
                    self.links.insert(link.clone(), (State::Opening(since), failures));
                    self.failed(&link, now);
                }
                Some((State::Waiting(at, failures), _)) if now >= at => {
                    self.links.insert(link.clone(), (State::Opening(now), failures));
                    actions.push(Action::Open(link));
                }
                _ => {}
            }
        }
        actions
    }

    /// When `poll` has something to do next without any other input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|(s, _)| match s {
                State::Opening(since) => Some(*since + OPEN_TIMEOUT),
                State::Waiting(at, _) => Some(*at),
                State::Up => None,
            })
            .min()
    }

    /// Whether the link is up now.
    pub fn is_up(&self, link: &Link) -> bool {
        matches!(self.links.get(link), Some((State::Up, _)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voicechat_protocol::ids::{GroupId, RoomId};

    const ROOM: RoomKey = (GroupId([1; 16]), RoomId([1; 16]));
    const OTHER: RoomKey = (GroupId([1; 16]), RoomId([2; 16]));

    fn node(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn link(room: RoomKey, n: &str) -> Link {
        Link { room, node: node(n) }
    }

    #[test]
    fn a_node_pulls_each_other_node_of_the_room_once_while_it_has_listeners() {
        let t0 = Instant::now();
        // Alpha's view: 40 listeners here, a speaker and 30 listeners on beta, 20 on gamma.
        let mut c = Cascade::new();
        c.set_local(ROOM, 40);
        c.set_remote(ROOM, node("beta"), 31);
        c.set_remote(ROOM, node("gamma"), 20);
        let first = c.poll(t0);
        assert_eq!(first, vec![Action::Open(link(ROOM, "beta")), Action::Open(link(ROOM, "gamma"))], "one link per node, not per listener");
        assert!(c.poll(t0).is_empty(), "asked once");
        c.opened(&link(ROOM, "beta"));
        c.opened(&link(ROOM, "gamma"));
        // More listeners anywhere change nothing.
        c.set_local(ROOM, 400);
        c.set_remote(ROOM, node("gamma"), 200);
        assert!(c.poll(t0).is_empty());
        assert_eq!(c.poll_timeout(), None, "nothing pending while links are up");
        // A room with nobody here is not pulled.
        c.set_remote(OTHER, node("beta"), 5);
        assert!(c.poll(t0).is_empty());
        // Gamma's people all leave: its link closes. Alpha's last listener leaves: all close.
        c.set_remote(ROOM, node("gamma"), 0);
        assert_eq!(c.poll(t0), vec![Action::Close(link(ROOM, "gamma"))]);
        c.set_local(ROOM, 0);
        assert_eq!(c.poll(t0), vec![Action::Close(link(ROOM, "beta"))]);
        assert!(c.wanted().is_empty());
    }

    #[test]
    fn a_try_that_fails_counts_once_and_the_pause_doubles_per_try() {
        let t0 = Instant::now();
        let mut c = Cascade::new();
        c.set_local(ROOM, 1);
        c.set_remote(ROOM, node("beta"), 1);
        let beta = link(ROOM, "beta");
        assert_eq!(c.poll(t0), vec![Action::Open(beta.clone())]);
        // The plan gives up on the try; then the connection's own end is reported too.
        let t1 = t0 + OPEN_TIMEOUT;
        assert_eq!(c.poll(t1), vec![Action::Close(beta.clone())]);
        c.failed(&beta, t1);
        assert_eq!(c.poll_timeout(), Some(t1 + RETRY_FIRST), "one failure: the first pause");
        assert_eq!(c.poll(t1 + RETRY_FIRST), vec![Action::Open(beta.clone())]);
        let t2 = t1 + RETRY_FIRST;
        c.failed(&beta, t2);
        c.failed(&beta, t2);
        assert_eq!(c.poll_timeout(), Some(t2 + 2 * RETRY_FIRST), "the second try: twice the pause");
    }

    #[test]
    fn only_a_node_with_people_in_the_room_may_pull_and_only_if_someone_is_here() {
        let mut c = Cascade::new();
        assert_eq!(c.may_pull(&ROOM, &node("beta")), Err(Refusal::NotInRoom), "unknown room");
        c.set_remote(ROOM, node("beta"), 1);
        assert_eq!(c.may_pull(&ROOM, &node("beta")), Err(Refusal::NothingHere));
        c.set_local(ROOM, 1);
        assert_eq!(c.may_pull(&ROOM, &node("beta")), Ok(()));
        assert_eq!(c.may_pull(&ROOM, &node("gamma")), Err(Refusal::NotInRoom), "gamma has nobody in the room");
        assert_eq!(c.may_pull(&OTHER, &node("beta")), Err(Refusal::NotInRoom), "another room");
        assert_eq!(c.nodes_in(&ROOM), vec![node("beta")]);
        c.set_remote(ROOM, node("beta"), 0);
        assert_eq!(c.may_pull(&ROOM, &node("beta")), Err(Refusal::NotInRoom), "beta's last person left");
    }

    #[test]
    fn a_failed_link_is_retried_with_growing_pauses_and_an_unreachable_node_drops_out() {
        let t0 = Instant::now();
        let mut c = Cascade::new();
        c.set_local(ROOM, 3);
        c.set_remote(ROOM, node("beta"), 1);
        c.set_remote(ROOM, node("gamma"), 1);
        assert_eq!(c.poll(t0).len(), 2);
        c.opened(&link(ROOM, "beta"));
        // Gamma never answers: after the open timeout the try is dropped and retried later.
        assert_eq!(c.poll_timeout(), Some(t0 + OPEN_TIMEOUT));
        let t1 = t0 + OPEN_TIMEOUT;
        assert_eq!(c.poll(t1), vec![Action::Close(link(ROOM, "gamma"))]);
        assert_eq!(c.poll_timeout(), Some(t1 + RETRY_FIRST));
        assert!(c.poll(t1 + RETRY_FIRST / 2).is_empty());
        assert_eq!(c.poll(t1 + RETRY_FIRST), vec![Action::Open(link(ROOM, "gamma"))]);
        // Refused again at once: the pause doubles, and keeps doubling up to the cap.
        let mut t = t1 + RETRY_FIRST;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            c.failed(&link(ROOM, "gamma"), t);
            let next = c.poll_timeout().unwrap();
            pauses.push((next - t).as_secs());
            t = next;
            assert_eq!(c.poll(t), vec![Action::Open(link(ROOM, "gamma"))]);
        }
        assert_eq!(pauses, vec![2, 4, 8, 16, 30, 30, 30, 30]);
        c.opened(&link(ROOM, "gamma"));
        assert!(c.is_up(&link(ROOM, "gamma")));

        // Gamma dies: federation loses it. Its link closes; beta's stays.
        c.failed(&link(ROOM, "gamma"), t);
        c.set_reachable(&node("gamma"), false);
        assert_eq!(c.poll(t), vec![Action::Close(link(ROOM, "gamma"))]);
        assert!(c.poll(t + RETRY_MAX * 4).is_empty(), "not retried while unreachable");
        assert!(c.is_up(&link(ROOM, "beta")));
        // The heal: gamma is reachable again and still has people in the room; pulled again.
        c.set_reachable(&node("gamma"), true);
        assert_eq!(c.poll(t + RETRY_MAX * 4), vec![Action::Open(link(ROOM, "gamma"))]);
        // A success resets the pauses.
        c.opened(&link(ROOM, "gamma"));
        c.failed(&link(ROOM, "gamma"), t);
        assert_eq!(c.poll_timeout(), Some(t + RETRY_FIRST));
    }
}
