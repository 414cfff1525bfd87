//! The federation as a sans-IO state machine, in the manner of str0m: inputs (what a peer
//! sent, what the core announced, the time) go in through [`Machine::handle_input`] and
//! [`Machine::handle_timeout`]; outputs (requests to send, responses, changes for the core
//! to store, nodes to dial) come out of [`Machine::poll_output`]. No sockets, no clock, no
//! tasks: the driver in `federation/mod.rs` does the I/O, and the tests wire several
//! machines together in memory and run them in simulated time.
//!
//! What it decides: who a node name belongs to ([`trust`]), whether a record is believed
//! and wanted ([`replica`], with the protocol crate's validation), who must receive what
//! and when to retry ([`peers`]), when to sync a group and what to answer ([`sync`]), how
//! long presence lives and when it is refreshed ([`presence`]), and when a relayed signal
//! can be delivered ([`signals`]).

mod cascade;
mod peers;
mod presence;
mod replica;
mod signals;
mod sync;
mod trust;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{NodeCard, Record, SignalType};
use voicechat_protocol::rpc::{self, RpcError};
use voicechat_protocol::{ProtocolError, Validator};

use crate::core::{Announce, Change, Signer};
use crate::sfu::LinkKey;
use crate::store::StoredState;
use peers::Peer;
use replica::Group;
use trust::TrustTable;

pub use crate::federation::proto::Proto;
pub use trust::Mode;

/// Milliseconds since the Unix epoch (simulated in tests).
pub type Millis = u64;

/// Ids the driver gives inbound requests, so their deferred answers find their stream.
pub type InboundId = u64;
/// Ids the machine gives its outbound requests.
pub type OutboundId = u64;
/// Ids of apply batches handed to the core.
pub type BatchId = u64;
/// Ids the driver gives commands, so their results find their caller.
pub type CommandId = u64;

/// Timing and bounds. [`Config::new`] gives the production values.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name.
    pub me: NodeName,
    /// Who may federate.
    pub mode: Mode,
    /// Lifetime of a presence record this node signs, in seconds.
    pub presence_ttl: u64,
    /// How often this node re-signs its users' presence while they are in a call.
    pub heartbeat: Millis,
    /// How often a group homed elsewhere is checked against its home (a digest; records
    /// only if they differ), jittered ±20 %.
    pub resync: Millis,
    /// How long a relayed signal waits for its sender's presence before `no_session`.
    pub signal_wait: Millis,
    /// How often due work is checked.
    pub tick: Millis,
    /// Bounds.
    pub limits: Limits,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// This node's SFU takes part in the cascade (SPEC.md §9.6): it pulls other nodes'
    /// speakers in stage rooms and answers their pulls. Off: cascade requests are refused.
    pub cascade: bool,
}

/// Every bound the machine keeps, so a peer cannot grow its memory.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Node cards (bindings) kept.
    pub max_bindings: usize,
    /// Records queued for one peer; past it the oldest are dropped (the peer resyncs).
    pub outbox: usize,
    /// Signals from one peer waiting for presence.
    pub pending_signals: usize,
    /// Well-known verifications in flight.
    pub verifications: usize,
    /// Batches handed to the core and not yet stored; past it pushes are refused with
    /// `rate_limited`.
    pub apply_in_flight: usize,
    /// Requests per peer: burst and sustained rate per second.
    pub requests: (f64, f64),
    /// Records per peer (in pushes): burst and sustained rate per second.
    pub records: (f64, f64),
    /// Pages of one sync (of at most 1024 records each).
    pub sync_pages: u32,
    /// Rejected records a peer may send before it is cut off for a minute (decays by one
    /// every 10 s).
    pub strikes: f64,
    /// Members (current and removed) and rooms a group of another node may have here;
    /// past it, new ones are not taken (a home cannot grow this node's store without end).
    pub group_members: usize,
    /// Rooms likewise.
    pub group_rooms: usize,
    /// Sessions one user of another node may have in calls of one group at once.
    pub sessions_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bindings: 1024,
            outbox: 4096,
            pending_signals: 64,
            verifications: 16,
            apply_in_flight: 16,
            requests: (200.0, 50.0),
            records: (8192.0, 2048.0),
            sync_pages: 8,
            strikes: 100.0,
            group_members: 5_000,
            group_rooms: 500,
            sessions_per_user: 16,
        }
    }
}

impl Config {
    /// Production timing for node `me`.
    pub fn new(me: NodeName, mode: Mode) -> Self {
        Self {
            me,
            mode,
            presence_ttl: 30,
            heartbeat: 10_000,
            resync: 300_000,
            signal_wait: 2_000,
            tick: 1_000,
            limits: Limits::default(),
            seed: 0x5eed,
            cascade: false,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not connected and could not dial.
    Unreachable,
    /// No answer in time.
    Timeout,
    /// The connection closed, the stream broke, or the answer was over its cap.
    Broken(String),
}

/// Something that happened: fed to [`Machine::handle_input`].
#[derive(Debug)]
pub enum Input {
    /// The first connection to a peer is up.
    Connected(NodeKey),
    /// The last connection to a peer closed.
    Disconnected(NodeKey),
    /// A peer's request (non-empty, under the protocol's cap). Answered by exactly one
    /// [`Output::Respond`] with this id, now or later.
    Request {
        /// Who asks (authenticated by the connection).
        peer: NodeKey,
        /// The driver's id.
        id: InboundId,
        /// Which protocol.
        proto: Proto,
        /// The request bytes.
        data: Vec<u8>,
    },
    /// The answer to an [`Output::Request`].
    Response {
        /// The machine's id.
        id: OutboundId,
        /// The bytes, or why none came.
        result: Result<Vec<u8>, Failure>,
    },
    /// Something the core changed.
    Local(Announce),
    /// Something a local caller wants (answered by [`Output::Done`]).
    Command {
        /// The driver's id.
        id: CommandId,
        /// What.
        command: Command,
    },
    /// The result of an [`Output::Verify`]: the card the name's HTTPS origin served.
    Verified {
        /// The name checked.
        name: NodeName,
        /// The card bytes, or why there were none.
        result: Result<Vec<u8>, String>,
    },
    /// The core stored an [`Output::Apply`] batch.
    Applied(BatchId),
    /// The result of an [`Output::Deliver`]: whether the socket took the signal (a
    /// moderation: whether it was applied or handed on).
    Delivered {
        /// The signal request it answers.
        reply: InboundId,
        /// Why not (`NoSession`: the socket is gone).
        error: Option<RpcError>,
    },
    /// The result of an [`Output::Redeem`]: the group joined, and the records the core
    /// signed for it (applied before the answer is built).
    Redeemed {
        /// The invite request it answers.
        reply: InboundId,
        /// The group, or the refusal.
        result: Result<(GroupId, Vec<Announce>), RpcError>,
    },
    /// The result of an [`Output::CascadePull`]: the SFU's offer, or why there is none.
    CascadeOffer {
        /// The link.
        link: LinkKey,
        /// The SDP offer.
        result: Result<String, String>,
    },
    /// The result of an [`Output::CascadeServe`]: the SFU's answer, or why there is none.
    CascadeServed {
        /// The cascade request to answer.
        reply: InboundId,
        /// The link.
        link: LinkKey,
        /// The SDP answer.
        result: Result<String, String>,
    },
    /// A pulled link came up, or ended by itself (or its answer was refused by the SFU).
    CascadeLink {
        /// The link.
        link: LinkKey,
        /// Up, or down.
        up: bool,
    },
}

/// A browser's signal for a user of another node.
#[derive(Debug, Clone)]
pub struct OutSignal {
    /// The sending user (local).
    pub from: UserId,
    /// Their socket.
    pub from_session: SessionId,
    /// The receiving user (remote).
    pub to: UserId,
    /// Their socket.
    pub to_session: SessionId,
    /// The room of the call.
    pub room: (GroupId, RoomId),
    /// What it is.
    pub kind: SignalType,
    /// SDP or candidate JSON.
    pub data: String,
}

/// Something a local caller asks of the federation.
#[derive(Debug, Clone)]
pub enum Command {
    /// Relay a browser's signal to a user of another node.
    Signal(OutSignal),
    /// Join a group of another node with an invite code, for a local user.
    Join {
        /// The group's home.
        home: NodeName,
        /// The code.
        code: String,
        /// Who joins.
        user: UserId,
    },
    /// Make sure a node name is bound (in open mode, by verifying its HTTPS origin).
    Discover(NodeName),
    /// The operator blocked (`on`) a node, by key or by name, or lifted the block: it is
    /// refused and its connections close at once, not from the next start.
    Block {
        /// The node's key, if given as a PeerId.
        key: Option<NodeKey>,
        /// Its name, if given by name.
        name: Option<NodeName>,
        /// Block, or lift.
        on: bool,
    },
    /// The operator pinned a node (`on`: admitted, dialled at `addrs`) or removed the pin.
    Pin {
        /// The node's key.
        key: NodeKey,
        /// Where to dial it (may be empty: admitted when it connects).
        addrs: Vec<String>,
        /// Pin, or unpin.
        on: bool,
    },
}

/// What a [`Command`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// The signal reached the socket, or why not.
    Signal(Result<(), RelayError>),
    /// The group joined, or why not.
    Joined(Result<GroupId, RpcError>),
    /// The name is bound, or why not (words for a person).
    Discovered(Result<(), String>),
    /// A block or pin was applied; the keys it concerns (for the network's lists).
    Admin(Vec<NodeKey>),
}

/// Why a relayed signal did not arrive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The user's node is unknown or not connected, or did not answer.
    #[error("{0}'s node cannot be reached")]
    Unreachable(NodeName),
    /// The other node refused it.
    #[error("the other node refused the signal: {0:?}")]
    Refused(RpcError),
}

/// Something to do: taken with [`Machine::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send a request; answer with [`Input::Response`].
    Request {
        /// To whom.
        peer: NodeKey,
        /// The machine's id.
        id: OutboundId,
        /// Which protocol.
        proto: Proto,
        /// The request bytes.
        data: Vec<u8>,
    },
    /// Answer an inbound request.
    Respond {
        /// The driver's id.
        id: InboundId,
        /// The response bytes.
        data: Vec<u8>,
    },
    /// Store and show these changes; report [`Input::Applied`] once stored.
    Apply {
        /// The batch.
        id: BatchId,
        /// In order.
        changes: Vec<Change>,
    },
    /// Keep this node connected (dial now, redial with backoff), at these addresses.
    Dial {
        /// The node.
        peer: NodeKey,
        /// Multiaddrs without `/p2p/`.
        addrs: Vec<String>,
    },
    /// Close every connection to this node.
    Disconnect(NodeKey),
    /// Fetch `https://NAME/.well-known/voicechat/node`; report [`Input::Verified`].
    Verify {
        /// The name.
        name: NodeName,
    },
    /// Hand a relayed signal to a local socket; report [`Input::Delivered`].
    Deliver {
        /// The signal request to answer afterwards.
        reply: InboundId,
        /// The signal, judged.
        signal: voicechat_protocol::Signal,
    },
    /// Spend an invite code for a user of another node; report [`Input::Redeemed`].
    Redeem {
        /// The invite request to answer afterwards.
        reply: InboundId,
        /// The code.
        code: String,
        /// The joining user (of the asking node).
        user: UserId,
    },
    /// Start pulling a node's speakers in a room: make an SFU offer; report
    /// [`Input::CascadeOffer`].
    CascadePull {
        /// The link.
        link: LinkKey,
    },
    /// Complete a pull with the other node's answer; the SFU reports the link as
    /// [`Input::CascadeLink`].
    CascadePulled {
        /// The link.
        link: LinkKey,
        /// The SDP answer.
        answer: String,
    },
    /// Stop pulling.
    CascadeUnpull {
        /// The link.
        link: LinkKey,
    },
    /// Answer another node's pull with the SFU; report [`Input::CascadeServed`].
    CascadeServe {
        /// The cascade request to answer afterwards.
        reply: InboundId,
        /// The link (the room, and the node that pulls).
        link: LinkKey,
        /// Its SDP offer.
        offer: String,
    },
    /// Stop sending to a node that pulled.
    CascadeUnserve {
        /// The link.
        link: LinkKey,
    },
    /// Tell this node's people in the room which nodes' people it reaches through the
    /// cascade both ways (their pages stop connecting to those people directly).
    CascadeNodes {
        /// The room.
        room: crate::rooms::RoomKey,
        /// The nodes.
        nodes: Vec<NodeName>,
    },
    /// Tell this node's people in the room that a node of the room can no longer be heard
    /// (`up`: false; it died or is cut off) or is back.
    CascadeReach {
        /// The room, and the node.
        link: LinkKey,
        /// Reachable again, or not.
        up: bool,
    },
    /// A command's result.
    Done {
        /// The driver's id.
        id: CommandId,
        /// What it came to.
        result: CommandResult,
    },
}

/// Why a record was dropped, and so its verdict.
#[derive(Debug, Clone)]
pub(crate) enum Dropped {
    /// The protocol's rules (benign ones are ignored, the rest rejected).
    Protocol(ProtocolError),
    /// Valid but of no use here: a group without local members, a copy of our own record.
    NotWanted(&'static str),
    /// Breaks a rule of this node (a blocked node, a signal by push): rejected.
    Policy(&'static str),
}

impl From<ProtocolError> for Dropped {
    fn from(e: ProtocolError) -> Self {
        Dropped::Protocol(e)
    }
}

impl Dropped {
    /// Rejected records count against the sending peer; ignored ones do not.
    pub(crate) fn is_reject(&self) -> bool {
        match self {
            Dropped::Protocol(e) => !e.is_benign(),
            Dropped::Policy(_) => true,
            Dropped::NotWanted(_) => false,
        }
    }

    /// A short name for logs and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Dropped::Protocol(e) => e.code(),
            Dropped::NotWanted(r) | Dropped::Policy(r) => r,
        }
    }
}

/// Counters the machine keeps (the driver exports them as metrics; tests read them).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Records by (kind, verdict): `accepted`, `ignored`, `rejected`.
    pub records: HashMap<(String, &'static str), u64>,
    /// Requests sent, by protocol.
    pub requests_sent: HashMap<&'static str, u64>,
    /// Records sent in pushes.
    pub records_sent: u64,
    /// Records handed to the core to store.
    pub applied: u64,
    /// Records dropped from full outboxes.
    pub outbox_dropped: u64,
    /// Requests answered `rate_limited`.
    pub rate_limited: u64,
}

/// What a pending outbound request is for.
#[derive(Debug)]
enum Pending {
    Push { peer: NodeKey, records: Vec<(peers::SubjectKey, Vec<u8>)> },
    Sync { group: GroupId, page: u32 },
    Signal { command: CommandId, to: NodeName },
    Invite { command: CommandId, user: UserId, home: NodeKey },
    Cascade { link: LinkKey },
    CascadeClose,
}

/// What a machine starts from.
#[derive(Debug, Default)]
pub struct Start {
    /// This node's web origin (for its card).
    pub url: String,
    /// This node's libp2p addresses, without `/p2p/` (for its card).
    pub addrs: Vec<String>,
    /// The operator's pinned keys, with the addresses to dial them at (maybe none).
    pub pins: Vec<(NodeKey, Vec<String>)>,
    /// Keys the operator blocked.
    pub blocked_keys: Vec<NodeKey>,
    /// Names the operator blocked.
    pub blocked_names: Vec<NodeName>,
    /// What the store holds.
    pub stored: StoredState,
}

/// The federation state of one node.
pub struct Machine {
    cfg: Config,
    signer: Signer,
    card: Vec<u8>,
    now: Millis,
    trust: TrustTable,
    peers: HashMap<NodeKey, Peer>,
    groups: HashMap<GroupId, Group>,
    floors: HashMap<GroupId, u64>,
    /// Replay state of presence and signals (in memory, bounded).
    validator: Validator,
    /// Local sessions in rooms: (user, session) → (room, muted).
    seats: HashMap<(UserId, SessionId), ((GroupId, RoomId), crate::rooms::Participant)>,
    signals: VecDeque<signals::Queued>,
    pending: HashMap<OutboundId, Pending>,
    /// Commands waiting for their apply batch to be stored.
    after_apply: HashMap<BatchId, Vec<(CommandId, CommandResult)>>,
    applying: HashSet<BatchId>,
    /// Batches waiting for room among those in flight (the core stores them in order).
    backlog: VecDeque<(BatchId, Vec<Change>)>,
    outputs: VecDeque<Output>,
    next_id: u64,
    next_tick: Millis,
    next_heartbeat: Millis,
    rng: u64,
    stats: Stats,
    /// (peer, reason) already logged.
    logged: HashSet<(NodeKey, &'static str)>,
    /// The links this node pulls, planned.
    cascade: crate::sfu::cascade::Cascade,
    /// The machine's clock and an `Instant` of the same moment (the plan counts in those).
    cascade_epoch: (Millis, std::time::Instant),
    /// The links other nodes pull from here.
    served: HashSet<LinkKey>,
    /// Links whose node this node's people were told is unreachable.
    cascade_lost: HashSet<LinkKey>,
    /// Conversations whose call here moved to the SFU (cascaded like stages) until they
    /// empty.
    sfu_rooms: HashSet<crate::rooms::RoomKey>,
    /// Per call, the nodes this node's people were last told it reaches through the cascade.
    cascade_told: HashMap<crate::rooms::RoomKey, Vec<NodeName>>,
}

impl Machine {
    /// A machine for a node with `signer`'s key, started at `now` from what the store
    /// holds and what the operator configured.
    pub fn new(cfg: Config, signer: Signer, start: Start, now: Millis) -> Self {
        let Start { url, addrs, pins, blocked_keys, blocked_names, stored } = start;
        let card_record = |seq| {
            Record::NodeCard(NodeCard {
                key: signer.node_key(),
                seq,
                url: url.clone(),
                name: cfg.me.clone(),
                addrs: addrs.iter().take(voicechat_protocol::records::MAX_ADDRS).cloned().collect(),
            })
        };
        let card = signer.seal_at(now * 1000, card_record);
        let trust = TrustTable::new(cfg.mode, cfg.me.clone(), signer.node_key(), cfg.limits.max_bindings);
        let mut m = Self {
            rng: cfg.seed | 1,
            trust,
            signer,
            card,
            now,
            peers: HashMap::new(),
            groups: HashMap::new(),
            floors: stored.floors.iter().copied().collect(),
            validator: Validator::new(),
            seats: HashMap::new(),
            signals: VecDeque::new(),
            pending: HashMap::new(),
            after_apply: HashMap::new(),
            applying: HashSet::new(),
            backlog: VecDeque::new(),
            outputs: VecDeque::new(),
            next_id: 1,
            next_tick: now + cfg.tick,
            next_heartbeat: now + cfg.heartbeat,
            stats: Stats::default(),
            logged: HashSet::new(),
            cascade: crate::sfu::cascade::Cascade::new(),
            cascade_epoch: (now, std::time::Instant::now()),
            served: HashSet::new(),
            cascade_lost: HashSet::new(),
            sfu_rooms: HashSet::new(),
            cascade_told: HashMap::new(),
            cfg,
        };
        for key in blocked_keys {
            m.trust.block_key(key);
        }
        for name in blocked_names {
            m.trust.block_name(name);
        }
        for (key, addrs) in pins {
            m.trust.pin(key, addrs.clone());
            if !addrs.is_empty() {
                m.outputs.push_back(Output::Dial { peer: key, addrs });
            }
        }
        for card in &stored.cards {
            if let Some(dial) = m.trust.load(card) {
                m.outputs.push_back(dial);
            }
        }
        m.load_records(&stored.records);
        // Groups of other nodes stored before signed records were kept: known by their
        // home only, so the first sync brings them whole.
        for (g, home) in stored.unsigned {
            if home != m.cfg.me {
                m.groups.entry(g).or_insert_with(|| replica::Group::new(home));
            }
        }
        m
    }

    /// This node's signed card.
    pub fn card(&self) -> &[u8] {
        &self.card
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current time as the machine knows it.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Millis {
        self.next_tick
    }

    /// Advances the clock without doing due work (the driver calls this before inputs).
    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    /// Does whatever is due at `now`: expire presence, refresh our own, retry pushes, start
    /// syncs, give up on signals that waited too long.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.advance(now);
        if self.now < self.next_tick {
            return;
        }
        self.next_tick = self.now + self.cfg.tick;
        self.expire_presence();
        if self.now >= self.next_heartbeat {
            self.next_heartbeat = self.now + self.cfg.heartbeat;
            self.heartbeat();
        }
        self.expire_signals();
        self.refresh_cascade();
        self.start_due_syncs();
        self.decay_strikes();
        let keys: Vec<NodeKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.flush(k);
        }
    }

    /// Feeds one input at `now`.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        self.advance(now);
        match input {
            Input::Connected(peer) => self.on_connected(peer),
            Input::Disconnected(peer) => self.on_disconnected(peer),
            Input::Request { peer, id, proto, data } => self.on_request(peer, id, proto, data),
            Input::Response { id, result } => self.on_response(id, result),
            Input::Local(a) => self.on_local(a),
            Input::Command { id, command } => self.on_command(id, command),
            Input::Verified { name, result } => self.on_verified(name, result),
            Input::Applied(batch) => {
                self.applying.remove(&batch);
                self.drain_backlog();
                for (id, result) in self.after_apply.remove(&batch).unwrap_or_default() {
                    self.outputs.push_back(Output::Done { id, result });
                }
            }
            Input::Delivered { reply, error } => self.on_delivered(reply, error),
            Input::Redeemed { reply, result } => self.on_redeemed(reply, result),
            Input::CascadeOffer { link, result } => self.on_cascade_offer(link, result),
            Input::CascadeServed { reply, link, result } => self.on_cascade_served(reply, link, result),
            Input::CascadeLink { link, up } => self.on_cascade_link(link, up),
        }
    }

    fn on_request(&mut self, peer: NodeKey, id: InboundId, proto: Proto, data: Vec<u8>) {
        let now = self.now;
        let banned = self.peers.get(&peer).is_some_and(|p| p.banned_until > now);
        if banned || !self.trust.may_connect(&peer) {
            return self.refuse(id, proto, RpcError::RateLimited);
        }
        if !self.peer(peer).limiter_request(now) {
            self.stats.rate_limited += 1;
            return self.refuse(id, proto, RpcError::RateLimited);
        }
        match proto {
            Proto::Push => self.on_push(peer, id, &data),
            Proto::Sync => self.on_sync_request(peer, id, &data),
            Proto::Signal => self.on_signal_request(peer, id, &data),
            Proto::Invite => self.on_invite_request(peer, id, &data),
            Proto::Cascade => self.on_cascade_request(peer, id, &data),
        }
    }

    /// Answers a request with a refusal in its protocol's response shape.
    fn refuse(&mut self, id: InboundId, proto: Proto, e: RpcError) {
        let data = match proto {
            Proto::Push => rpc::encode(&rpc::PushResponse { error: Some(e) }),
            Proto::Sync => rpc::encode(&rpc::SyncResponse { more: false, error: Some(e), records: Vec::new(), unchanged: false }),
            Proto::Signal => rpc::encode(&rpc::SignalResponse { error: Some(e) }),
            Proto::Invite => rpc::encode(&rpc::InviteResponse { error: Some(e), records: Vec::new() }),
            Proto::Cascade => rpc::encode(&rpc::CascadeResponse { error: Some(e), envelope: None }),
        };
        self.outputs.push_back(Output::Respond { id, data });
    }

    fn on_response(&mut self, id: OutboundId, result: Result<Vec<u8>, Failure>) {
        let Some(p) = self.pending.remove(&id) else { return };
        match p {
            Pending::Push { peer, records } => self.on_push_response(peer, records, result),
            Pending::Sync { group, page } => self.on_sync_response(group, page, result),
            Pending::Signal { command, to } => self.on_signal_response(command, to, result),
            Pending::Invite { command, user, home } => self.on_invite_response(command, user, home, result),
            Pending::Cascade { link } => self.on_cascade_response(link, result),
            Pending::CascadeClose => {}
        }
    }

    fn on_command(&mut self, id: CommandId, command: Command) {
        match command {
            Command::Signal(s) => self.send_signal(id, s),
            Command::Join { home, code, user } => self.send_invite(id, home, code, user),
            Command::Discover(name) => self.discover(id, name),
            Command::Block { key, name, on } => {
                let keys: Vec<NodeKey> = key.into_iter().chain(name.as_ref().and_then(|n| self.trust.key_of_name(n))).collect();
                if on {
                    if let Some(n) = name {
                        self.trust.block_name(n);
                    }
                    for k in &keys {
                        self.trust.block_key(*k);
                        self.outputs.push_back(Output::Disconnect(*k));
                    }
                } else {
                    if let Some(n) = &name {
                        self.trust.unblock_name(n);
                    }
                    for k in &keys {
                        self.trust.unblock_key(k);
                    }
                }
                self.outputs.push_back(Output::Done { id, result: CommandResult::Admin(keys) });
            }
            Command::Pin { key, addrs, on } => {
                if on {
                    self.trust.pin(key, addrs.clone());
                    if !addrs.is_empty() && !self.trust.is_blocked(&key) {
                        self.outputs.push_back(Output::Dial { peer: key, addrs });
                    }
                } else {
                    self.trust.unpin(&key);
                    if !self.trust.may_connect(&key) {
                        self.outputs.push_back(Output::Disconnect(key));
                    }
                }
                self.outputs.push_back(Output::Done { id, result: CommandResult::Admin(vec![key]) });
            }
        }
    }

    fn request(&mut self, peer: NodeKey, proto: Proto, data: Vec<u8>, pending: Pending) -> OutboundId {
        let id = self.next_id();
        *self.stats.requests_sent.entry(proto.name()).or_default() += 1;
        self.pending.insert(id, pending);
        self.outputs.push_back(Output::Request { peer, id, proto, data });
        id
    }

    /// Hands changes to the core, in order: at most `apply_in_flight` batches at a time,
    /// the rest wait here (pushes are refused while any wait, and no new sync starts).
    fn apply(&mut self, changes: Vec<Change>) -> Option<BatchId> {
        if changes.is_empty() {
            return None;
        }
        let id = self.next_id();
        self.stats.applied += changes.len() as u64;
        self.backlog.push_back((id, changes));
        self.drain_backlog();
        Some(id)
    }

    fn drain_backlog(&mut self) {
        while self.applying.len() < self.cfg.limits.apply_in_flight {
            let Some((id, changes)) = self.backlog.pop_front() else { break };
            self.applying.insert(id);
            self.outputs.push_back(Output::Apply { id, changes });
        }
    }

    /// Whether the core is behind: batches wait to be handed over.
    fn store_busy(&self) -> bool {
        !self.backlog.is_empty() || self.applying.len() >= self.cfg.limits.apply_in_flight
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A random factor in [0.8, 1.2] (xorshift; seeded, so tests are reproducible).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        0.8 + 0.4 * ((self.rng >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn peer(&mut self, key: NodeKey) -> &mut Peer {
        let limits = self.cfg.limits.clone();
        let now = self.now;
        self.peers.entry(key).or_insert_with(|| Peer::new(&limits, now))
    }

    fn now_secs(&self) -> u64 {
        self.now / 1000
    }

    /// Counts a record's verdict; logs a peer's first rejection of each reason.
    fn count(&mut self, kind: &str, peer: Option<NodeKey>, verdict: Result<(), &Dropped>) {
        let v = match verdict {
            Ok(()) => "accepted",
            Err(d) if d.is_reject() => "rejected",
            Err(_) => "ignored",
        };
        *self.stats.records.entry((kind.to_owned(), v)).or_default() += 1;
        if let (Err(d), Some(peer)) = (verdict, peer) {
            if d.is_reject() {
                if self.logged.len() > 4096 {
                    self.logged.clear();
                }
                if self.logged.insert((peer, d.reason())) {
                    tracing::warn!(peer = %hex::encode(&peer.as_bytes()[..8]), reason = d.reason(), "dropped a record from a peer");
                }
                self.strike(peer);
            } else {
                tracing::debug!(reason = d.reason(), "ignored a record");
            }
        }
    }
}
