//! A simulated network for federation machines: nodes are [`Machine`]s, links have
//! latency and loss (a lost segment costs a retransmission, as on TCP), partitions cut
//! links both ways, and time is a counter. Each node has a small model of what its core
//! would store (from the machine's `Apply` outputs), and signs what its core would sign
//! (groups, rooms, members, consents), so tests drive whole scenarios and compare nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, SessionId, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{Answer, Consent, GroupInfo, Membership, Record, RoomInfo};

use super::super::{Command, CommandId, CommandResult, Config, Input, Machine, Millis, Mode, Output, Proto, Start};
use crate::core::{Announce, Change, Signer};
use crate::rooms::Participant;
use crate::store::{PeerRecord, StoredState, Trust};

/// Simulated time starts here (2023-11-14, like the protocol's vectors).
pub const T0: Millis = 1_700_000_000_000;

/// A deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn id16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes());
        b
    }
}

/// What a node's core would show.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub home: String,
    pub name: String,
    pub members: BTreeMap<UserId, Role>,
    pub rooms: BTreeMap<RoomId, String>,
}

/// A presence change as a node's core applied it: (time, room, user, session, muted, joined).
pub type PresenceSeen = (Millis, (GroupId, RoomId), UserId, SessionId, bool, bool);

/// One simulated node.
pub struct SimNode {
    pub name: NodeName,
    pub key: NodeKey,
    pub signer: Signer,
    pub machine: Machine,
    pub groups: BTreeMap<GroupId, GroupView>,
    /// room → (user, session) → muted.
    pub seats: BTreeMap<(GroupId, RoomId), BTreeMap<(UserId, SessionId), bool>>,
    /// Local users' invitations not yet answered.
    pub invited: BTreeSet<(GroupId, UserId)>,
    /// Command results.
    pub done: HashMap<CommandId, CommandResult>,
    /// Every presence change applied: (time, room, user, session, muted, joined).
    pub presence_log: Vec<PresenceSeen>,
    /// Records handed to the core.
    pub applied: u64,
    /// Of which about groups (not node cards).
    pub group_changes: u64,
    /// Consents this node must answer at home (group, user), processed by the sim.
    consents: Vec<(GroupId, UserId, Answer)>,
    /// Requests this node sent, by protocol; responses it sent.
    pub sent: HashMap<&'static str, u64>,
    pub responses: u64,
    /// The simulated SFU's links: pulled from other nodes (up), and served to them.
    pub pulled: BTreeSet<crate::sfu::LinkKey>,
    pub served: BTreeSet<crate::sfu::LinkKey>,
    /// What the simulated core told its people about other nodes: (node, reachable).
    pub reach: Vec<(NodeName, bool)>,
    /// Per call, the nodes the core was last told it reaches through the cascade both ways.
    pub cascaded: BTreeMap<(GroupId, RoomId), Vec<NodeName>>,
}

#[derive(Debug)]
enum Event {
    Input(usize, Input),
    Tick(usize),
    Connect(usize, usize),
}

/// The network.
pub struct Sim {
    pub now: Millis,
    pub nodes: Vec<SimNode>,
    events: BinaryHeap<Reverse<(Millis, u64)>>,
    payload: HashMap<u64, Event>,
    seq: u64,
    by_key: HashMap<NodeKey, usize>,
    conns: HashSet<(usize, usize)>,
    /// Pairs whose link is cut.
    cut: HashSet<(usize, usize)>,
    /// Pairs one of which asked to be kept connected.
    wants: HashSet<(usize, usize)>,
    inflight: HashMap<u64, (usize, usize, u64)>,
    ticks: Vec<Millis>,
    pub rng: Rng,
    /// One-way latency range in ms, and the chance a message needs a retransmission.
    pub latency: (u64, u64),
    pub loss: f64,
    /// Name → node, for HTTPS-origin checks.
    pub dns: HashMap<NodeName, usize>,
    next_cmd: CommandId,
    /// Answers to requests a test sent by hand ([`Sim::ask`]).
    pub answers: HashMap<u64, Vec<u8>>,
    /// When set, nodes' cores do not report batches stored until [`Sim::release`].
    pub hold_applies: bool,
    held: Vec<(usize, super::super::BatchId)>,
    /// The most batches one node had handed to its core and not yet seen stored.
    pub max_in_flight: usize,
}

/// Outbound ids of hand-made requests (kept apart from the machines' own).
const ASKED: u64 = 1 << 62;

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// How a network is set up.
pub struct Setup {
    pub names: Vec<String>,
    pub mode: Mode,
    /// Who pins whom (by index); with `bind`, also a stored card for them (no exchange needed
    /// to know names).
    pub pins: Vec<(usize, usize)>,
    pub bind: bool,
    pub seed: u64,
    pub tweak: fn(&mut Config),
}

impl Setup {
    /// `n` nodes, every pair pinned both ways, closed mode.
    pub fn mesh(n: usize) -> Setup {
        let pins = (0..n).flat_map(|a| (0..n).filter(move |b| *b != a).map(move |b| (a, b))).collect();
        Setup { names: (0..n).map(|i| format!("n{i}")).collect(), mode: Mode::Closed, pins, bind: false, seed: 7, tweak: |_| {} }
    }
}

impl Sim {
    pub fn new(setup: Setup) -> Sim {
        let signers: Vec<Signer> = (0..setup.names.len())
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                seed[8..16].copy_from_slice(&setup.seed.to_be_bytes());
                Signer::new(seed)
            })
            .collect();
        let names: Vec<NodeName> = setup.names.iter().map(|n| NodeName::new(n).unwrap()).collect();
        let mut pins: Vec<Vec<(NodeKey, Vec<String>)>> = vec![Vec::new(); names.len()];
        for &(a, b) in &setup.pins {
            pins[a].push((signers[b].node_key(), vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + b)]));
        }
        // Each node's card exactly as its machine will sign it (a fresh signer of the same
        // seed hands out the same first seq), given as stored where asked.
        let cards: Vec<Vec<u8>> = (0..names.len())
            .map(|i| {
                Signer::new(signers[i].seed()).seal_at(T0 * 1000, |seq| {
                    Record::NodeCard(voicechat_protocol::NodeCard {
                        key: signers[i].node_key(),
                        seq,
                        url: format!("https://{}", names[i]),
                        name: names[i].clone(),
                        addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)],
                    })
                })
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, signer) in signers.iter().enumerate() {
            let mut cfg = Config::new(names[i].clone(), setup.mode);
            cfg.seed = setup.seed ^ (i as u64 + 1);
            (setup.tweak)(&mut cfg);
            let mut stored = StoredState::default();
            if setup.bind {
                for (k, _) in &pins[i] {
                    let j = signers.iter().position(|s| &s.node_key() == k).unwrap();
                    stored.cards.push(PeerRecord {
                        name: names[j].clone(),
                        key: hex::encode(k.as_bytes()),
                        url: format!("https://{}", names[j]),
                        addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + j)],
                        seq: T0 * 1000,
                        card: hex::encode(&cards[j]),
                        trust: Trust::Pinned,
                    });
                }
            }
            let start = Start {
                url: format!("https://{}", names[i]),
                addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)],
                pins: pins[i].clone(),
                blocked_keys: Vec::new(),
                blocked_names: Vec::new(),
                stored,
            };
            let machine = Machine::new(cfg, signer.clone(), start, T0);
            nodes.push(SimNode {
                name: names[i].clone(),
                key: signer.node_key(),
                signer: signer.clone(),
                machine,
                groups: BTreeMap::new(),
                seats: BTreeMap::new(),
                invited: BTreeSet::new(),
                done: HashMap::new(),
                presence_log: Vec::new(),
                applied: 0,
                group_changes: 0,
                consents: Vec::new(),
                sent: HashMap::new(),
                responses: 0,
                pulled: BTreeSet::new(),
                served: BTreeSet::new(),
                reach: Vec::new(),
                cascaded: BTreeMap::new(),
            });
        }
        let by_key = nodes.iter().enumerate().map(|(i, n)| (n.key, i)).collect();
        let dns = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let n = nodes.len();
        let mut sim = Sim {
            now: T0,
            nodes,
            events: BinaryHeap::new(),
            payload: HashMap::new(),
            seq: 0,
            by_key,
            conns: HashSet::new(),
            cut: HashSet::new(),
            wants: HashSet::new(),
            inflight: HashMap::new(),
            ticks: vec![0; n],
            rng: Rng::new(setup.seed),
            latency: (5, 50),
            loss: 0.0,
            dns,
            next_cmd: 0,
            answers: HashMap::new(),
            hold_applies: false,
            held: Vec::new(),
            max_in_flight: 0,
        };
        for i in 0..n {
            sim.drain(i);
        }
        sim
    }

    pub fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name.as_str() == name).unwrap()
    }

    fn schedule(&mut self, at: Millis, e: Event) {
        self.seq += 1;
        self.payload.insert(self.seq, e);
        self.events.push(Reverse((at, self.seq)));
    }

    fn delay(&mut self, a: usize, b: usize) -> Millis {
        let (lo, hi) = self.latency;
        // A fixed base per link, plus jitter, plus retransmissions of lost segments.
        let base = lo + ((a * 7919 + b * 104_729) as u64 % (hi - lo + 1));
        let mut d = base + self.rng.below(5);
        while self.loss > 0.0 && self.rng.chance(self.loss) {
            d += 200 + self.rng.below(200);
        }
        d
    }

    pub fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&pair(a, b))
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.conns.contains(&pair(a, b))
    }

    /// Feeds an input to a node now.
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.nodes[i].machine.handle_input(now, input);
        self.drain(i);
    }

    /// Carries out a node's outputs.
    fn drain(&mut self, i: usize) {
        let mut local: Vec<Input> = Vec::new();
        loop {
            while let Some(out) = self.nodes[i].machine.poll_output() {
                self.output(i, out, &mut local);
            }
            if local.is_empty() {
                break;
            }
            for inp in std::mem::take(&mut local) {
                let now = self.now;
                self.nodes[i].machine.handle_input(now, inp);
            }
        }
        // Consents at the home are acted on like the core would: the member is removed.
        for (g, u, answer) in std::mem::take(&mut self.nodes[i].consents) {
            if matches!(answer, Answer::Declined | Answer::Left) && self.nodes[i].groups.get(&g).is_some_and(|v| v.members.contains_key(&u)) {
                self.remove_member(i, g, &u);
            }
        }
        let t = self.nodes[i].machine.poll_timeout();
        if self.ticks[i] == 0 || self.ticks[i] > t || self.ticks[i] < self.now {
            self.ticks[i] = t;
            self.schedule(t, Event::Tick(i));
        }
    }

    fn output(&mut self, i: usize, out: Output, local: &mut Vec<Input>) {
        match out {
            Output::Request { peer, id, proto, data } => {
                *self.nodes[i].sent.entry(proto.name()).or_default() += 1;
                let Some(&j) = self.by_key.get(&peer) else {
                    return local.push(Input::Response { id, result: Err(super::super::Failure::Unreachable) });
                };
                if !self.connected(i, j) {
                    let at = self.now + 1;
                    return self.schedule(at, Event::Input(i, Input::Response { id, result: Err(super::super::Failure::Unreachable) }));
                }
                self.seq += 1;
                let gid = self.seq;
                self.inflight.insert(gid, (i, j, id));
                let at = self.now + self.delay(i, j);
                let key = self.nodes[i].key;
                self.schedule(at, Event::Input(j, Input::Request { peer: key, id: gid, proto, data }));
            }
            Output::Respond { id, data } => {
                self.nodes[i].responses += 1;
                let Some((origin, _, oid)) = self.inflight.remove(&id) else { return };
                if oid >= ASKED {
                    self.answers.insert(oid, data);
                    return;
                }
                let at = self.now + self.delay(i, origin);
                self.schedule(at, Event::Input(origin, Input::Response { id: oid, result: Ok(data) }));
            }
            Output::Apply { id, changes } => {
                self.apply(i, changes);
                if self.hold_applies {
                    self.held.push((i, id));
                    let n = self.held.iter().filter(|(j, _)| *j == i).count();
                    self.max_in_flight = self.max_in_flight.max(n);
                } else {
                    local.push(Input::Applied(id));
                }
            }
            Output::Dial { peer, .. } => {
                if let Some(&j) = self.by_key.get(&peer) {
                    self.wants.insert(pair(i, j));
                    if !self.connected(i, j) && self.linked(i, j) {
                        let at = self.now + self.delay(i, j);
                        self.schedule(at, Event::Connect(i, j));
                    }
                }
            }
            Output::Disconnect(peer) => {
                if let Some(&j) = self.by_key.get(&peer) {
                    self.disconnect(i, j);
                }
            }
            Output::Verify { name } => {
                let result = match self.dns.get(&name) {
                    Some(&j) => Ok(self.nodes[j].machine.card().to_vec()),
                    None => Err("no such host".to_owned()),
                };
                let at = self.now + 50;
                self.schedule(at, Event::Input(i, Input::Verified { name, result }));
            }
            Output::Deliver { reply, signal } => {
                let room = (signal.group, signal.room);
                let ok = self.nodes[i].seats.get(&room).is_some_and(|s| s.contains_key(&(signal.to.clone(), signal.to_session)));
                local.push(Input::Delivered { reply, error: (!ok).then_some(voicechat_protocol::rpc::RpcError::NoSession) });
            }
            Output::Redeem { reply, .. } => {
                local.push(Input::Redeemed { reply, result: Err(voicechat_protocol::rpc::RpcError::BadInvite) });
            }
            Output::Done { id, result } => {
                self.nodes[i].done.insert(id, result);
            }
            // A simulated SFU: offers and answers at once; a pulled link is up at once.
            Output::CascadePull { link } => {
                local.push(Input::CascadeOffer { link, result: Ok("v=0 offer".into()) });
            }
            Output::CascadePulled { link, answer } => {
                assert_eq!(answer, "v=0 answer");
                self.nodes[i].pulled.insert(link.clone());
                local.push(Input::CascadeLink { link, up: true });
            }
            Output::CascadeUnpull { link } => {
                self.nodes[i].pulled.remove(&link);
            }
            Output::CascadeServe { reply, link, offer } => {
                assert_eq!(offer, "v=0 offer");
                self.nodes[i].served.insert(link.clone());
                local.push(Input::CascadeServed { reply, link, result: Ok("v=0 answer".into()) });
            }
            Output::CascadeUnserve { link } => {
                self.nodes[i].served.remove(&link);
            }
            Output::CascadeReach { link, up } => {
                self.nodes[i].reach.push((link.1, up));
            }
            Output::CascadeNodes { room, nodes } => {
                self.nodes[i].cascaded.insert(room, nodes);
            }
        }
    }

    /// What the node's core would do with changes.
    fn apply(&mut self, i: usize, changes: Vec<Change>) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.applied += changes.len() as u64;
        node.group_changes += changes.iter().filter(|c| !matches!(c, Change::Card(_) | Change::ForgetCard(_))).count() as u64;
        for c in changes {
            match c {
                Change::Card(_) | Change::ForgetCard(_) => {}
                Change::Group { group, home, name, .. } => {
                    let g = node.groups.entry(group).or_default();
                    g.home = home.to_string();
                    g.name = name;
                }
                Change::Member { group, user, role, .. } => {
                    let Some(g) = node.groups.get_mut(&group) else { continue };
                    match role {
                        Some(r) => {
                            if user.node == node.name && !g.members.contains_key(&user) {
                                node.invited.insert((group, user.clone()));
                            }
                            g.members.insert(user, r);
                        }
                        None => {
                            g.members.remove(&user);
                            node.invited.remove(&(group, user.clone()));
                            for seats in node.seats.range_mut((group, RoomId([0; 16]))..=(group, RoomId([0xff; 16]))) {
                                seats.1.retain(|(u, _), _| u != &user);
                            }
                        }
                    }
                }
                Change::Room { group, room, name, deleted, .. } => {
                    let Some(g) = node.groups.get_mut(&group) else { continue };
                    if deleted {
                        g.rooms.remove(&room);
                        node.seats.remove(&(group, room));
                    } else {
                        g.rooms.insert(room, name);
                    }
                }
                Change::Forget { group, .. } => {
                    node.groups.remove(&group);
                    node.seats.retain(|(g, _), _| g != &group);
                    node.invited.retain(|(g, _)| g != &group);
                }
                Change::Presence { room, participant, joined } => {
                    let seat = (participant.user.clone(), participant.session);
                    for (r, s) in node.seats.iter_mut() {
                        if r != &room {
                            s.remove(&seat);
                        }
                    }
                    if joined {
                        node.seats.entry(room).or_default().insert(seat, participant.muted);
                    } else if let Some(s) = node.seats.get_mut(&room) {
                        s.remove(&seat);
                    }
                    node.presence_log.push((now, room, participant.user, participant.session, participant.muted, joined));
                }
                Change::Consent { group, user, answer } => node.consents.push((group, user, answer)),
                Change::Joined { group, user } => {
                    node.invited.remove(&(group, user));
                }
            }
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        if self.connected(a, b) || !self.linked(a, b) {
            return;
        }
        self.conns.insert(pair(a, b));
        let (ka, kb) = (self.nodes[a].key, self.nodes[b].key);
        self.input(a, Input::Connected(kb));
        if self.connected(a, b) {
            self.input(b, Input::Connected(ka));
        }
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.conns.remove(&pair(a, b)) {
            let (ka, kb) = (self.nodes[a].key, self.nodes[b].key);
            self.input(a, Input::Disconnected(kb));
            self.input(b, Input::Disconnected(ka));
            // In-flight requests across the closed connection fail.
            let lost: Vec<u64> = self
                .inflight
                .iter()
                .filter(|(_, (o, t, _))| pair(*o, *t) == pair(a, b))
                .map(|(k, _)| *k)
                .collect();
            for k in lost {
                if let Some((origin, _, oid)) = self.inflight.remove(&k) {
                    let at = self.now + 1;
                    let result = Err(super::super::Failure::Broken("connection closed".into()));
                    self.schedule(at, Event::Input(origin, Input::Response { id: oid, result }));
                }
            }
        }
    }

    /// Cuts every link between the two sets.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert(pair(x, y));
                self.disconnect(x, y);
            }
        }
    }

    /// Heals every link; nodes that want to be connected redial (after a second).
    pub fn heal(&mut self) {
        self.cut.clear();
        let wants: Vec<_> = self.wants.iter().copied().collect();
        for (a, b) in wants {
            let at = self.now + 1_000;
            self.schedule(at, Event::Connect(a, b));
        }
    }

    /// Runs every event up to `until`.
    pub fn run_until(&mut self, until: Millis) {
        while let Some(Reverse((at, seq))) = self.events.peek().copied() {
            if at > until {
                break;
            }
            self.events.pop();
            self.now = self.now.max(at);
            let Some(e) = self.payload.remove(&seq) else { continue };
            match e {
                Event::Input(i, Input::Request { peer, id, proto, data }) => {
                    let j = self.by_key[&peer];
                    if !self.connected(i, j) {
                        // The connection went away while the request travelled.
                        if let Some((origin, _, oid)) = self.inflight.remove(&id) {
                            let result = Err(super::super::Failure::Broken("connection closed".into()));
                            self.schedule(self.now + 1, Event::Input(origin, Input::Response { id: oid, result }));
                        }
                        continue;
                    }
                    self.input(i, Input::Request { peer, id, proto, data });
                }
                Event::Input(i, input) => self.input(i, input),
                Event::Tick(i) => {
                    if self.ticks[i] == at {
                        self.ticks[i] = 0;
                    }
                    let now = self.now;
                    self.nodes[i].machine.handle_timeout(now);
                    self.drain(i);
                }
                Event::Connect(a, b) => self.connect(a, b),
            }
        }
        self.now = self.now.max(until);
    }

    /// Reports every held batch stored.
    pub fn release(&mut self) {
        self.hold_applies = false;
        for (i, id) in std::mem::take(&mut self.held) {
            self.input(i, Input::Applied(id));
        }
    }

    /// Runs for `ms` more.
    pub fn run_for(&mut self, ms: Millis) {
        let until = self.now + ms;
        self.run_until(until);
    }

    // ---- what a node's core would do ----

    fn sign(&self, i: usize, build: impl FnOnce(u64) -> Record) -> Vec<u8> {
        self.nodes[i].signer.seal_at(self.now * 1000, build)
    }

    fn announce(&mut self, i: usize, group: GroupId, records: Vec<Vec<u8>>) {
        self.input(i, Input::Local(Announce::Records { group, records }));
    }

    pub fn user(&self, i: usize, name: &str) -> UserId {
        format!("{name}@{}", self.nodes[i].name).parse().unwrap()
    }

    /// A group homed on node `i`, owned by `owner` (a local user name).
    pub fn create_group(&mut self, i: usize, owner: &str, name: &str) -> GroupId {
        let g = GroupId(self.rng.id16());
        let home = self.nodes[i].name.clone();
        let owner = self.user(i, owner);
        let info = self.sign(i, |seq| Record::GroupInfo(GroupInfo { seq, home: home.clone(), name: name.into(), group: g, deleted: false }));
        let m = self.sign(i, |seq| Record::Membership(Membership { seq, role: Some(Role::Owner), user: owner.clone(), group: g }));
        let view = GroupView { home: home.to_string(), name: name.into(), members: BTreeMap::from([(owner, Role::Owner)]), rooms: BTreeMap::new() };
        self.nodes[i].groups.insert(g, view);
        self.announce(i, g, vec![info, m]);
        g
    }

    pub fn add_member(&mut self, i: usize, g: GroupId, user: &UserId) {
        let rec = self.sign(i, |seq| Record::Membership(Membership { seq, role: Some(Role::Member), user: user.clone(), group: g }));
        self.nodes[i].groups.get_mut(&g).unwrap().members.insert(user.clone(), Role::Member);
        self.announce(i, g, vec![rec]);
    }

    pub fn remove_member(&mut self, i: usize, g: GroupId, user: &UserId) {
        let rec = self.sign(i, |seq| Record::Membership(Membership { seq, role: None, user: user.clone(), group: g }));
        if let Some(v) = self.nodes[i].groups.get_mut(&g) {
            v.members.remove(user);
        }
        self.announce(i, g, vec![rec]);
    }

    pub fn create_room(&mut self, i: usize, g: GroupId, name: &str) -> RoomId {
        self.create_room_as(i, g, name, false)
    }

    /// A room that is a stage (`stage`) or a conversation.
    pub fn create_room_as(&mut self, i: usize, g: GroupId, name: &str, stage: bool) -> RoomId {
        let r = RoomId(self.rng.id16());
        let rec = self.sign(i, |seq| Record::RoomInfo(RoomInfo { seq, name: name.into(), room: r, group: g, stage, deleted: false }));
        self.nodes[i].groups.get_mut(&g).unwrap().rooms.insert(r, name.into());
        self.announce(i, g, vec![rec]);
        r
    }

    pub fn delete_room(&mut self, i: usize, g: GroupId, r: RoomId) {
        let name = self.nodes[i].groups[&g].rooms[&r].clone();
        let rec = self.sign(i, |seq| Record::RoomInfo(RoomInfo { seq, name, room: r, group: g, stage: false, deleted: true }));
        self.nodes[i].groups.get_mut(&g).unwrap().rooms.remove(&r);
        self.nodes[i].seats.remove(&(g, r));
        self.announce(i, g, vec![rec]);
    }

    pub fn rename_group(&mut self, i: usize, g: GroupId, name: &str) {
        let home = self.nodes[i].name.clone();
        let rec = self.sign(i, |seq| Record::GroupInfo(GroupInfo { seq, home, name: name.into(), group: g, deleted: false }));
        self.nodes[i].groups.get_mut(&g).unwrap().name = name.into();
        self.announce(i, g, vec![rec]);
    }

    pub fn delete_group(&mut self, i: usize, g: GroupId) {
        let home = self.nodes[i].name.clone();
        let name = self.nodes[i].groups[&g].name.clone();
        let rec = self.sign(i, |seq| Record::GroupInfo(GroupInfo { seq, home, name, group: g, deleted: true }));
        self.nodes[i].groups.remove(&g);
        self.nodes[i].seats.retain(|(gg, _), _| gg != &g);
        self.announce(i, g, vec![rec]);
    }

    /// A local user answers an invitation (or leaves).
    pub fn consent(&mut self, i: usize, g: GroupId, user: &UserId, answer: Answer) {
        let rec = self.sign(i, |seq| Record::Consent(Consent { seq, user: user.clone(), group: g, answer }));
        self.nodes[i].invited.remove(&(g, user.clone()));
        self.announce(i, g, vec![rec]);
    }

    /// A local session joins a room (or changes mute).
    pub fn join(&mut self, i: usize, user: &UserId, session: SessionId, room: (GroupId, RoomId), muted: bool) {
        let seat = (user.clone(), session);
        for (r, s) in self.nodes[i].seats.iter_mut() {
            if r != &room {
                s.remove(&seat);
            }
        }
        self.nodes[i].seats.entry(room).or_default().insert(seat, muted);
        let participant = Participant { user: user.clone(), session, muted, stage: None, name: None, joined_at: 0 };
        self.input(i, Input::Local(Announce::Presence { room, participant, joined: true }));
    }

    pub fn leave(&mut self, i: usize, user: &UserId, session: SessionId, room: (GroupId, RoomId)) {
        if let Some(s) = self.nodes[i].seats.get_mut(&room) {
            s.remove(&(user.clone(), session));
        }
        let participant = Participant { user: user.clone(), session, muted: false, stage: None, name: None, joined_at: 0 };
        self.input(i, Input::Local(Announce::Presence { room, participant, joined: false }));
    }

    /// Runs a command on node `i`; returns its id (the result lands in `done`).
    pub fn command(&mut self, i: usize, command: Command) -> CommandId {
        self.next_cmd += 1;
        let id = self.next_cmd;
        self.input(i, Input::Command { id, command });
        id
    }

    /// Sends a hand-made request from `from` to `to` (as if `from`'s machine had); its
    /// answer lands in `answers` under the returned token.
    pub fn ask(&mut self, from: usize, to: usize, proto: Proto, data: Vec<u8>) -> u64 {
        self.seq += 1;
        let (gid, token) = (self.seq, ASKED + self.seq);
        self.inflight.insert(gid, (from, to, token));
        let key = self.nodes[from].key;
        let at = self.now + self.delay(from, to);
        self.schedule(at, Event::Input(to, Input::Request { peer: key, id: gid, proto, data }));
        token
    }

    /// Connects two nodes now (as a dial would).
    pub fn dial(&mut self, a: usize, b: usize) {
        self.connect(a, b);
    }

    /// A group as if it had been created long ago: homed on `home`, with `members` and one
    /// room, loaded into every member node's machine and model without any traffic.
    pub fn preload_group(&mut self, home: usize, members: &[UserId]) -> (GroupId, RoomId) {
        let g = GroupId(self.rng.id16());
        let r = RoomId(self.rng.id16());
        let home_name = self.nodes[home].name.clone();
        let mut recs = vec![self.sign(home, |seq| {
            Record::GroupInfo(GroupInfo { seq, home: home_name.clone(), name: "g".into(), group: g, deleted: false })
        })];
        recs.push(self.sign(home, |seq| Record::RoomInfo(RoomInfo { seq, name: "r".into(), room: r, group: g, stage: false, deleted: false })));
        for u in members {
            recs.push(self.sign(home, |seq| Record::Membership(Membership { seq, role: Some(Role::Member), user: u.clone(), group: g })));
        }
        let view = GroupView {
            home: home_name.to_string(),
            name: "g".into(),
            members: members.iter().map(|u| (u.clone(), Role::Member)).collect(),
            rooms: BTreeMap::from([(r, "r".to_owned())]),
        };
        let mut holders: BTreeSet<usize> = members.iter().map(|u| self.idx(u.node.as_str())).collect();
        holders.insert(home);
        for i in holders {
            self.nodes[i].machine.load_records(&recs);
            self.nodes[i].groups.insert(g, view.clone());
        }
        (g, r)
    }

    /// A node's view of a group, if it holds it.
    pub fn view(&self, i: usize, g: &GroupId) -> Option<&GroupView> {
        self.nodes[i].groups.get(g)
    }

    /// Who a node shows in a room.
    pub fn participants(&self, i: usize, room: &(GroupId, RoomId)) -> BTreeMap<(UserId, SessionId), bool> {
        self.nodes[i].seats.get(room).cloned().unwrap_or_default()
    }

    /// Requests sent by all nodes, by protocol.
    pub fn requests(&self) -> HashMap<&'static str, u64> {
        let mut out = HashMap::new();
        for n in &self.nodes {
            for (k, v) in &n.sent {
                *out.entry(*k).or_default() += v;
            }
        }
        out
    }

    pub fn proto_requests(&self, p: Proto) -> u64 {
        self.requests().get(p.name()).copied().unwrap_or(0)
    }
}
