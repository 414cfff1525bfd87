//! The SFU's I/O: one UDP socket for every participant, one str0m `Rtc` per connection
//! (ICE-lite, DTLS-SRTP, RTP mode: Opus is forwarded as it came, never decoded).
//!
//! A datagram goes to its connection by remote address, or, for the first STUN binding
//! from a new address, by the ICE username fragment it names (two map lookups, no scan);
//! str0m checks the STUN credentials before the address is bound. The forwarder decides
//! where each audio packet goes; timers live in a heap, so only due connections are polled.
//! The rest of the node talks to it through a cheap `Sfu` handle over a bounded channel.
//!
//! On cascade links it also says who slots carry (`names`): as the serving end, on the data
//! channel the pulling node opened, and as the pulling end, to its own pages' `sfu_slots`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::ice::StunMessage;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use voicechat_protocol::ids::NodeName;

use super::forward::{AudioIn, Forward, Forwarder, PeerId, SourceId};
use super::link::{self, LinkNews};
use super::names::{self, Names, Table};
use crate::rooms::{RoomKey, SeatKey};

/// Largest datagram read (a full Ethernet frame; audio is far smaller).
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read in one go before commands and timers get a turn.
const READ_BATCH: usize = 256;
/// The socket's receive and send buffers (a burst of hundreds of listeners' packets).
const SOCKET_BUFFER: usize = 4 << 20;

/// What went wrong with a connection request.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    /// The offer is not SDP str0m can answer (no audio, no Opus…).
    #[error("the offer was refused: {0}")]
    BadOffer(String),
    /// At the connection cap.
    #[error("the audio server is full ({0} connections)")]
    Full(usize),
    /// The SFU stopped (the node is shutting down).
    #[error("the audio server is not running")]
    Closed,
    /// A cascade link could not be made here (no socket, no offer) or is not pending.
    #[error("the cascade link failed: {0}")]
    Link(String),
}

/// What the SFU tells the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// `seat`'s slots now carry these people's audio, in slot order.
    Slots {
        /// Whose page to tell.
        seat: SeatKey,
        /// The room of the call.
        room: RoomKey,
        /// Who each slot carries.
        slots: Vec<Option<SeatKey>>,
    },
    /// `seat`'s connection ended by itself (ICE timed out, DTLS failed).
    Lost {
        /// Whose connection.
        seat: SeatKey,
        /// The room of the call.
        room: RoomKey,
    },
    /// The link pulling `node`'s speakers in `room` is up (`true`) or ended by itself.
    Link {
        /// The room.
        room: RoomKey,
        /// The node pulled from.
        node: NodeName,
        /// Up, or down.
        up: bool,
    },
}

/// A cascade link, named by the room and the other node.
pub type LinkKey = (RoomKey, NodeName);

enum Command {
    Connect { seat: SeatKey, room: RoomKey, may_speak: bool, offer: String, reply: oneshot::Sender<Result<String, SfuError>> },
    Disconnect { seat: SeatKey },
    MaySpeak { seat: SeatKey, may: bool },
    Stats { reply: oneshot::Sender<SfuStats> },
    Pull { link: LinkKey, reply: oneshot::Sender<Result<String, SfuError>> },
    Pulled { link: LinkKey, answer: String, reply: oneshot::Sender<Result<(), SfuError>> },
    Unpull { link: LinkKey },
    Serve { link: LinkKey, offer: String, reply: oneshot::Sender<Result<String, SfuError>> },
    Unserve { link: LinkKey },
}

/// Counters, for metrics and the load scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Connections now.
    pub peers: usize,
    /// Audio packets received from publishers.
    pub received: u64,
    /// Packets written to subscribers.
    pub forwarded: u64,
    /// Packets of people who may not speak, dropped.
    pub refused: u64,
    /// Datagrams for nobody (an unknown address without a STUN binding naming one of our
    /// connections, or one str0m refused): dropped without a trace.
    pub unrouted: u64,
    /// Cascade links pulling other nodes' speakers here, up now.
    pub links_in: usize,
    /// Other nodes pulling this node's speakers, connections now.
    pub links_out: usize,
    /// Audio packets received from other nodes (part of `received`).
    pub from_nodes: u64,
    /// Packets written to other nodes (part of `forwarded`).
    pub to_nodes: u64,
    /// Slot tables received on links and taken (see `names`).
    pub tables: u64,
    /// Slot tables received on links and dropped as malformed or forged.
    pub tables_refused: u64,
}

/// Settings of the SFU.
#[derive(Debug, Clone)]
pub struct SfuSettings {
    /// Where the UDP socket binds.
    pub listen: SocketAddr,
    /// The address browsers are told to send to (the listen address unless it is 0.0.0.0,
    /// or the node is behind 1:1 NAT).
    pub announce: Option<std::net::IpAddr>,
    /// How many speakers each listener gets at once (the loudest).
    pub speakers: usize,
    /// At most this many connections.
    pub max_peers: usize,
}

/// A handle on the running SFU; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sfu {
    tx: mpsc::Sender<Command>,
    addr: SocketAddr,
    figures: names::Figures,
}

impl Sfu {
    /// Binds the socket and starts the SFU task; `events` is called from it.
    pub async fn start(settings: SfuSettings, events: Arc<dyn Fn(SfuEvent) + Send + Sync>) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(settings.listen).await?;
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER).and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER));
        let bound = socket.local_addr()?;
        let ip = settings.announce.unwrap_or(bound.ip());
        let addr = SocketAddr::new(ip, bound.port());
        str0m::crypto::from_feature_flags().install_process_default();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("no DTLS certificate could be made"))?;
        let (tx, rx) = mpsc::channel(256);
        let (news_tx, news_rx) = mpsc::channel(256);
        let figures = names::Figures::default();
        let driver = Driver::new(socket, addr, cert, settings, events, news_tx, Names::new(figures.clone()));
        tokio::spawn(driver.run(rx, news_rx));
        Ok(Self { tx, addr, figures })
    }

    /// The speakers of other nodes carried here now, with their copies (link slots carrying
    /// them) and packets received.
    pub fn speakers(&self) -> std::collections::BTreeMap<voicechat_protocol::ids::UserId, names::Speaker> {
        self.figures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The per-speaker series of `/metrics` (Prometheus text; empty when nobody is carried).
    pub fn speaker_metrics(&self) -> String {
        names::render(&self.figures)
    }

    /// The address browsers send audio to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `seat`'s SDP offer (one sendonly audio m-line to publish, a few recvonly
    /// ones to listen on); a connection `seat` had before is dropped.
    pub async fn connect(&self, seat: SeatKey, room: RoomKey, may_speak: bool, offer: String) -> Result<String, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Connect { seat, room, may_speak, offer, reply }).await.map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)?
    }

    /// Starts pulling `node`'s speakers in `room`: the SDP offer to send that node (over
    /// the cascade protocol). A link this pair had before is dropped.
    pub async fn pull(&self, room: RoomKey, node: NodeName) -> Result<String, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Pull { link: (room, node), reply }).await.map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)?
    }

    /// Completes a pull with the other node's answer: the link connects on its own and
    /// reports with [`SfuEvent::Link`].
    pub async fn pulled(&self, room: RoomKey, node: NodeName, answer: String) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Pulled { link: (room, node), answer, reply }).await.map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)?
    }

    /// Stops pulling `node`'s speakers in `room`.
    pub fn unpull(&self, room: RoomKey, node: NodeName) {
        self.command(Command::Unpull { link: (room, node) });
    }

    /// Answers `node`'s offer to pull this node's speakers in `room` (the caller has checked
    /// that `node` may); a connection that pair had before is dropped.
    pub async fn serve(&self, room: RoomKey, node: NodeName, offer: String) -> Result<String, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Serve { link: (room, node), offer, reply }).await.map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)?
    }

    /// Stops sending to `node` in `room` (it has nobody left there, or is gone).
    pub fn unserve(&self, room: RoomKey, node: NodeName) {
        self.command(Command::Unserve { link: (room, node) });
    }

    /// Drops `seat`'s connection, if any.
    pub fn disconnect(&self, seat: SeatKey) {
        self.command(Command::Disconnect { seat });
    }

    /// What an operation's effects mean for the audio server: who may be heard now, and
    /// whoever was taken out of a call loses their connection to its audio.
    pub fn apply(&self, fx: &crate::core::Effects) {
        for (seat, may) in &fx.media {
            self.set_may_speak(seat.clone(), *may);
        }
        for n in &fx.notify {
            if let crate::core::Notice::Left { user, session, .. } = n {
                self.disconnect((user.clone(), *session));
            }
        }
    }

    /// Whether `seat` may be heard (a stage: on stage or not).
    pub fn set_may_speak(&self, seat: SeatKey, may: bool) {
        self.command(Command::MaySpeak { seat, may });
    }

    /// The counters now.
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Stats { reply }).await.map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)
    }

    fn command(&self, c: Command) {
        // Commands that change who hears whom must not be lost: wait for room if need be.
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(c)) = tx.try_send(c) {
            tokio::spawn(async move { tx.send(c).await.ok() });
        }
    }
}

/// Who a connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// A browser session of this node.
    Seat(SeatKey),
    /// Another node pulling this node's speakers.
    Node(NodeName),
}

struct Peer {
    rtc: Rtc,
    owner: Owner,
    room: RoomKey,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    /// The m-lines we send on (the subscriber's slots), in order.
    slots: Vec<Mid>,
    pt: Option<Pt>,
    /// The deadline str0m asked for last.
    timeout: Instant,
    /// Another node pulling: the data channel it opened for slot tables, once open.
    channel: Option<ChannelId>,
    /// Another node pulling: who its slots carry, and whether that went on the channel.
    table: Table,
    table_sent: bool,
}

struct Driver {
    socket: UdpSocket,
    addr: SocketAddr,
    cert: DtlsCert,
    settings: SfuSettings,
    events: Arc<dyn Fn(SfuEvent) + Send + Sync>,
    fwd: Forwarder,
    peers: HashMap<PeerId, Peer>,
    by_seat: HashMap<SeatKey, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Connections of other nodes pulling from here.
    by_node: HashMap<LinkKey, PeerId>,
    /// Links pulling from other nodes: offered and waiting for the answer, or running.
    pending: HashMap<LinkKey, (PeerId, link::Pending)>,
    links: HashMap<PeerId, (LinkKey, tokio::task::AbortHandle, bool)>,
    news_tx: mpsc::Sender<LinkNews>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    next_id: u64,
    stats: SfuStats,
    /// Audio packets received while polling, forwarded after: from whom, which of their
    /// tracks (a browser's SSRC, a link's slot), the packet.
    inbox: Vec<(PeerId, u32, RtpPacket)>,
    /// Who the slots of the links pulled from other nodes carry.
    names: Names,
    /// Subscribers to tell their slots again although the forwarder changed nothing (a
    /// link's table changed).
    retell: Vec<PeerId>,
    out: Vec<Forward>,
    tap: super::tap::Tap,
}

impl Driver {
    fn new(
        socket: UdpSocket,
        addr: SocketAddr,
        cert: DtlsCert,
        settings: SfuSettings,
        events: Arc<dyn Fn(SfuEvent) + Send + Sync>,
        news_tx: mpsc::Sender<LinkNews>,
        names: Names,
    ) -> Self {
        Self {
            socket,
            addr,
            cert,
            fwd: Forwarder::new(settings.speakers),
            settings,
            events,
            peers: HashMap::new(),
            by_seat: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            by_node: HashMap::new(),
            pending: HashMap::new(),
            links: HashMap::new(),
            news_tx,
            timers: BinaryHeap::new(),
            next_id: 1,
            stats: SfuStats::default(),
            inbox: Vec::new(),
            names,
            retell: Vec::new(),
            out: Vec::new(),
            tap: super::tap::Tap::from_env(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut news: mpsc::Receiver<LinkNews>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(n) = news.recv() => self.link_news(n),
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.datagram(&buf[..n], from);
                    }
                    for _ in 0..READ_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.datagram(&buf[..n], from),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    }
                    self.forward_inbox();
                },
                () = sleep_until(wake) => {},
            }
            self.timeouts(Instant::now());
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let peer = self.timers.peek().map(|Reverse((t, _))| *t);
        match (peer, self.fwd.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Connect { seat, room, may_speak, offer, reply } => {
                let _ = reply.send(self.connect(seat, room, may_speak, &offer));
            }
            Command::Disconnect { seat } => {
                if let Some(id) = self.by_seat.get(&seat).copied() {
                    self.remove(id, false);
                }
            }
            Command::MaySpeak { seat, may } => {
                if let Some(id) = self.by_seat.get(&seat).copied() {
                    self.fwd.set_may_speak(id, may);
                    self.tell_slots();
                }
            }
            Command::Stats { reply } => {
                let links_in = self.links.values().filter(|(_, _, up)| *up).count();
                let _ = reply.send(SfuStats { peers: self.peers.len(), links_in, links_out: self.by_node.len(), ..self.stats });
            }
            Command::Pull { link, reply } => {
                let _ = reply.send(self.pull(link));
            }
            Command::Pulled { link, answer, reply } => {
                let _ = reply.send(self.pulled(link, &answer));
            }
            Command::Unpull { link } => self.unpull(&link),
            Command::Serve { link, offer, reply } => {
                let _ = reply.send(self.serve(link, &offer));
            }
            Command::Unserve { link } => {
                if let Some(id) = self.by_node.get(&link).copied() {
                    self.remove(id, false);
                }
            }
        }
    }

    fn pull(&mut self, link: LinkKey) -> Result<String, SfuError> {
        self.unpull(&link);
        // From the address the SFU listens on (the announced one when that is every interface).
        let ip = if self.settings.listen.ip().is_unspecified() { self.addr.ip() } else { self.settings.listen.ip() };
        let (pending, offer) = link::offer(ip, self.settings.speakers, self.cert.clone())?;
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.pending.insert(link, (id, pending));
        Ok(offer)
    }

    fn pulled(&mut self, link: LinkKey, answer: &str) -> Result<(), SfuError> {
        let (id, pending) = self.pending.remove(&link).ok_or_else(|| SfuError::Link("no pull of this room from this node is pending".into()))?;
        let task = pending.start(id, answer, self.news_tx.clone())?;
        // Its speakers come in as sources of one peer; they are forwarded here as local
        // speakers are, and never on to a third node.
        self.fwd.add_node(id, link.0, 0);
        self.links.insert(id, (link, task, false));
        Ok(())
    }

    fn unpull(&mut self, link: &LinkKey) {
        self.pending.remove(link);
        let found = self.links.iter().find(|(_, (l, _, _))| l == link).map(|(id, _)| *id);
        if let Some(id) = found {
            self.drop_link(id, false);
        }
    }

    fn drop_link(&mut self, id: PeerId, tell: bool) {
        let Some((link, task, _)) = self.links.remove(&id) else { return };
        task.abort();
        self.fwd.remove_peer(id);
        self.names.remove(id);
        self.tell_slots();
        metrics::gauge!("voicechat_sfu_cascade_links", "dir" => "in").set(self.links.len() as f64);
        if tell {
            (self.events)(SfuEvent::Link { room: link.0, node: link.1, up: false });
        }
    }

    fn link_news(&mut self, n: LinkNews) {
        match n {
            LinkNews::Up(id) => {
                if let Some((link, _, up)) = self.links.get_mut(&id) {
                    *up = true;
                    let (room, node) = link.clone();
                    metrics::gauge!("voicechat_sfu_cascade_links", "dir" => "in").set(self.links.len() as f64);
                    (self.events)(SfuEvent::Link { room, node, up: true });
                }
            }
            LinkNews::Down(id) => self.drop_link(id, true),
            LinkNews::Audio(id, pkts) => {
                if !self.links.contains_key(&id) {
                    return;
                }
                let n = pkts.len() as u64;
                self.stats.from_nodes += n;
                metrics::counter!("voicechat_sfu_cascade_packets_total", "dir" => "in").increment(n);
                let unnamed = self.names.heard(id, pkts.iter().map(|(slot, _)| *slot));
                metrics::counter!("voicechat_sfu_cascade_unnamed_packets_total").increment(unnamed);
                self.inbox.extend(pkts.into_iter().map(|(slot, p)| (id, slot as u32, p)));
                self.forward_inbox();
            }
            LinkNews::Table(id, bytes) => self.link_table(id, &bytes),
        }
    }

    /// A link's serving node says who its slots carry: checked, then the pages whose slots
    /// carry any of that link's are told again.
    fn link_table(&mut self, id: PeerId, bytes: &[u8]) {
        let Some(((room, node), _, _)) = self.links.get(&id) else { return };
        let (room, node) = (*room, node.clone());
        let table = match names::decode(bytes, &node, self.settings.speakers) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(%node, error = %e, "dropped a slot table");
                self.stats.tables_refused += 1;
                metrics::counter!("voicechat_sfu_cascade_tables_total", "result" => e.reason()).increment(1);
                return;
            }
        };
        self.stats.tables += 1;
        metrics::counter!("voicechat_sfu_cascade_tables_total", "result" => "taken").increment(1);
        if !self.names.set(id, table) {
            return;
        }
        for (pid, p) in &self.peers {
            if p.room == room && matches!(p.owner, Owner::Seat(_)) && self.fwd.slots_of(*pid).iter().flatten().any(|s| s.peer == id) {
                self.retell.push(*pid);
            }
        }
        self.tell_slots();
    }

    fn serve(&mut self, link: LinkKey, offer: &str) -> Result<String, SfuError> {
        if let Some(old) = self.by_node.get(&link).copied() {
            self.remove(old, false);
        }
        let (room, node) = link.clone();
        let (id, answer) = self.accept(Owner::Node(node), room, false, offer)?;
        self.by_node.insert(link, id);
        metrics::gauge!("voicechat_sfu_cascade_links", "dir" => "out").set(self.by_node.len() as f64);
        Ok(answer)
    }

    fn connect(&mut self, seat: SeatKey, room: RoomKey, may_speak: bool, offer: &str) -> Result<String, SfuError> {
        if let Some(old) = self.by_seat.get(&seat).copied() {
            self.remove(old, false);
        }
        let (id, answer) = self.accept(Owner::Seat(seat.clone()), room, may_speak, offer)?;
        self.by_seat.insert(seat, id);
        self.tell_slots();
        Ok(answer)
    }

    /// A new connection answering `offer`: a browser's, or another node's pull.
    fn accept(&mut self, owner: Owner, room: RoomKey, may_speak: bool, offer: &str) -> Result<(PeerId, String), SfuError> {
        if self.peers.len() >= self.settings.max_peers {
            return Err(SfuError::Full(self.settings.max_peers));
        }
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let now = Instant::now();
        let creds = IceCreds::new();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_local_ice_credentials(creds.clone())
            .set_dtls_cert(self.cert.clone())
            .build(now);
        let candidate = Candidate::host(self.addr, "udp").map_err(|e| SfuError::BadOffer(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let mut peer = Peer {
            rtc,
            owner: owner.clone(),
            room,
            ufrag: creds.ufrag.clone(),
            addrs: Vec::new(),
            slots: Vec::new(),
            pt: None,
            timeout: now,
            channel: None,
            table: Vec::new(),
            table_sent: true,
        };
        // str0m reports m-lines as events only once DTLS is up: read them from the answer.
        let answer = answer.to_sdp_string();
        let mut publishes = false;
        for (mid, sends, receives) in audio_lines(&answer) {
            let mid = Mid::from(mid.as_str());
            if peer.rtc.media(mid).is_none() {
                continue;
            }
            if sends {
                peer.slots.push(mid);
            }
            publishes |= receives;
        }
        peer.timeout = match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => t,
            _ => now,
        };
        if peer.slots.is_empty() && !publishes {
            return Err(SfuError::BadOffer("no audio to send or receive".into()));
        }
        peer.pt = peer.rtc.codec_config().find(|c| c.spec().codec == Codec::Opus).map(|c| c.pt());
        if peer.pt.is_none() {
            return Err(SfuError::BadOffer("Opus was not offered".into()));
        }
        match owner {
            Owner::Seat(_) => self.fwd.add_peer(id, room, may_speak, peer.slots.len()),
            Owner::Node(_) => {
                if publishes {
                    // Another node only pulls: anything it sends is ignored.
                    return Err(SfuError::BadOffer("a cascade offer only receives".into()));
                }
                self.fwd.add_node(id, room, peer.slots.len());
            }
        }
        self.timers.push(Reverse((peer.timeout, id)));
        self.by_ufrag.insert(creds.ufrag, id);
        self.peers.insert(id, peer);
        metrics::gauge!("voicechat_sfu_connections").set(self.peers.len() as f64);
        Ok((id, answer))
    }

    fn remove(&mut self, id: PeerId, lost: bool) {
        let Some(p) = self.peers.remove(&id) else { return };
        self.by_ufrag.remove(&p.ufrag);
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        match &p.owner {
            Owner::Seat(seat) => {
                if self.by_seat.get(seat) == Some(&id) {
                    self.by_seat.remove(seat);
                }
            }
            Owner::Node(node) => {
                let key = (p.room, node.clone());
                if self.by_node.get(&key) == Some(&id) {
                    self.by_node.remove(&key);
                }
                metrics::gauge!("voicechat_sfu_cascade_links", "dir" => "out").set(self.by_node.len() as f64);
            }
        }
        self.fwd.remove_peer(id);
        metrics::gauge!("voicechat_sfu_connections").set(self.peers.len() as f64);
        self.tell_slots();
        if let (true, Owner::Seat(seat)) = (lost, p.owner) {
            (self.events)(SfuEvent::Lost { seat, room: p.room });
        }
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            None => {
                let Some(id) = StunMessage::parse(data)
                    .ok()
                    .and_then(|m| m.split_username().and_then(|(ours, _)| self.by_ufrag.get(ours).copied()))
                else {
                    self.stats.unrouted += 1; // not for anyone we know
                    return;
                };
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Ok(contents) = data.try_into() else {
            self.stats.unrouted += 1;
            return;
        };
        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: from, destination: self.addr, contents });
        if !peer.rtc.accepts(&input) {
            self.stats.unrouted += 1;
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_addr.entry(from) {
            e.insert(id);
            peer.addrs.push(from);
        }
        if peer.rtc.handle_input(input).is_err() {
            peer.rtc.disconnect();
        }
        self.drain(id);
    }

    /// Polls `id` until it waits: sends what it transmits, keeps its audio for forwarding,
    /// and writes a pulling node's slot table when it changed (or its channel just opened).
    fn drain(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let mut dead = false;
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if t != peer.timeout {
                        peer.timeout = t;
                        self.timers.push(Reverse((t, id)));
                    }
                    if write_table(peer) {
                        continue; // poll again: it has something to transmit
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::RtpPacket(p) => self.inbox.push((id, *p.header.ssrc, p)),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        peer.rtc.disconnect();
                    }
                    // The one channel a pulling node opens for tables; a browser's channels
                    // and any other are left unused.
                    Event::ChannelOpen(cid, label) if matches!(peer.owner, Owner::Node(_)) && label == names::LABEL && peer.channel.is_none() => {
                        peer.channel = Some(cid);
                        peer.table_sent = false;
                    }
                    Event::ChannelClose(cid) if peer.channel == Some(cid) => peer.channel = None,
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(owner = ?peer.owner, error = %e, "SFU connection failed");
                    dead = true;
                    break;
                }
            }
        }
        if dead || !peer.rtc.is_alive() {
            self.remove(id, true);
        }
    }

    fn forward_inbox(&mut self) {
        let now = Instant::now();
        let inbox = std::mem::take(&mut self.inbox);
        let before = self.stats;
        for (from, track, pkt) in &inbox {
            self.stats.received += 1;
            let source = SourceId { peer: *from, track: *track };
            let level = pkt.header.ext_vals.audio_level.map(|l| l.unsigned_abs().min(127));
            let audio = AudioIn { source, seq: *pkt.seq_no, rtp_time: pkt.header.timestamp, level };
            let mut out = std::mem::take(&mut self.out);
            if let Err(super::Dropped::NotSpeaker) = self.fwd.on_audio(now, audio, &mut out) {
                self.stats.refused += 1;
            }
            if !out.is_empty() {
                self.tap.record(*pkt.header.ssrc, &pkt.payload);
            }
            let ext = ExtensionValues { audio_level: pkt.header.ext_vals.audio_level, voice_activity: pkt.header.ext_vals.voice_activity, ..Default::default() };
            for f in &out {
                let Some(sub) = self.peers.get_mut(&f.to) else { continue };
                let (Some(mid), Some(pt)) = (sub.slots.get(f.slot).copied(), sub.pt) else { continue };
                let mut api = sub.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
                let write = RtpWrite::new(pt, f.out.seq.into(), f.out.rtp_time, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker || f.out.marker)
                    .ext_vals(ext.clone());
                tx.write_rtp(write);
                self.stats.forwarded += 1;
                if matches!(sub.owner, Owner::Node(_)) {
                    self.stats.to_nodes += 1;
                    metrics::counter!("voicechat_sfu_cascade_packets_total", "dir" => "out").increment(1);
                }
                self.drain(f.to);
            }
            self.out = out;
        }
        self.inbox = inbox;
        self.inbox.clear();
        self.tap.flush();
        let after = self.stats;
        metrics::counter!("voicechat_sfu_packets_total", "what" => "received").increment(after.received - before.received);
        metrics::counter!("voicechat_sfu_packets_total", "what" => "forwarded").increment(after.forwarded - before.forwarded);
        metrics::counter!("voicechat_sfu_packets_total", "what" => "refused").increment(after.refused - before.refused);
        self.tell_slots();
    }

    fn timeouts(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&id) else { continue };
            if peer.timeout != t {
                continue; // superseded
            }
            if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                peer.rtc.disconnect();
            }
            self.drain(id);
        }
        if !self.inbox.is_empty() {
            self.forward_inbox();
        }
        self.fwd.handle_timeout(now);
        self.tell_slots();
    }

    /// Tells each subscriber whose slots changed what they carry now: a page with
    /// `sfu_slots`, a node pulling from here with a table on its link's channel.
    fn tell_slots(&mut self) {
        let changes = self.fwd.take_changes();
        if changes.is_empty() && self.retell.is_empty() {
            return;
        }
        let mut told: Vec<PeerId> = changes.iter().map(|c| c.peer).chain(self.retell.drain(..)).collect();
        told.sort();
        told.dedup();
        for id in told {
            let Some(p) = self.peers.get(&id) else { continue };
            let (room, page) = (p.room, match &p.owner {
                Owner::Seat(seat) => Some(seat.clone()),
                Owner::Node(_) => None,
            });
            // A browser of this node, or a slot of a link: its serving node's table says.
            let slots: Table = self
                .fwd
                .slots_of(id)
                .into_iter()
                .map(|s| {
                    let s = s?;
                    match self.peers.get(&s.peer).map(|p| &p.owner) {
                        Some(Owner::Seat(seat)) => Some(seat.clone()),
                        Some(Owner::Node(_)) => None,
                        None => self.names.seat(s.peer, s.track as usize).cloned(),
                    }
                })
                .collect();
            if let Some(seat) = page {
                (self.events)(SfuEvent::Slots { seat, room, slots });
            } else if let Some(p) = self.peers.get_mut(&id)
                && p.table != slots
            {
                p.table = slots;
                p.table_sent = false;
                self.drain(id);
            }
        }
    }
}

/// Writes `peer`'s slot table on its channel if it is open and the table is not sent yet:
/// whether it was written. A full send buffer leaves it for the next poll; a broken channel
/// gives up until the table changes again.
fn write_table(peer: &mut Peer) -> bool {
    if peer.table_sent {
        return false;
    }
    let Some(cid) = peer.channel else { return false };
    let bytes = names::encode(&peer.table);
    match peer.rtc.channel(cid).map(|mut c| c.write(false, &bytes)) {
        Some(Ok(true)) => {
            peer.table_sent = true;
            true
        }
        Some(Ok(false)) => false,
        Some(Err(e)) => {
            tracing::debug!(owner = ?peer.owner, error = %e, "a slot table could not be written");
            peer.table_sent = true;
            false
        }
        None => {
            peer.channel = None;
            false
        }
    }
}

/// The audio m-lines of an answer of ours, in order: (mid, we send on it, we receive on it).
fn audio_lines(sdp: &str) -> Vec<(String, bool, bool)> {
    let mut lines = Vec::new();
    let mut current: Option<(Option<String>, bool, bool)> = None;
    let mut flush = |c: Option<(Option<String>, bool, bool)>| {
        if let Some((Some(mid), sends, receives)) = c {
            lines.push((mid, sends, receives));
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            flush(current.take());
            current = m.starts_with("audio ").then_some((None, true, true));
        } else if let Some(c) = current.as_mut() {
            match line {
                "a=sendonly" => (c.1, c.2) = (true, false),
                "a=recvonly" => (c.1, c.2) = (false, true),
                "a=inactive" => (c.1, c.2) = (false, false),
                _ => {
                    if let Some(mid) = line.strip_prefix("a=mid:") {
                        c.0 = Some(mid.to_owned());
                    }
                }
            }
        }
    }
    flush(current);
    lines
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::{Direction, MediaKind};
    use voicechat_protocol::ids::{GroupId, RoomId, SessionId};

    fn offer(slots: usize) -> String {
        let mut rtc = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        for _ in 0..slots {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        api.apply().unwrap().0.to_sdp_string()
    }

    #[tokio::test]
    async fn an_offer_gets_an_answer_with_the_node_address_and_garbage_gets_words() {
        let settings = SfuSettings { listen: "127.0.0.1:0".parse().unwrap(), announce: None, speakers: 3, max_peers: 1 };
        let sfu = Sfu::start(settings, Arc::new(|_| {})).await.unwrap();
        let seat: SeatKey = ("alice@alpha".parse().unwrap(), SessionId([1; 16]));
        let room = (GroupId([1; 16]), RoomId([1; 16]));
        let answer = sfu.connect(seat.clone(), room, true, offer(3)).await.unwrap();
        assert!(answer.contains(&format!("{} {}", sfu.addr().ip(), sfu.addr().port())), "{answer}");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert_eq!(sfu.stats().await.unwrap().peers, 1);
        // At the cap, another seat is refused; the same seat again replaces its connection.
        let bob: SeatKey = ("bob@alpha".parse().unwrap(), SessionId([2; 16]));
        assert!(matches!(sfu.connect(bob, room, true, offer(3)).await, Err(SfuError::Full(1))));
        sfu.connect(seat.clone(), room, true, offer(3)).await.unwrap();
        assert_eq!(sfu.stats().await.unwrap().peers, 1);
        sfu.disconnect(seat.clone());
        assert_eq!(sfu.stats().await.unwrap().peers, 0);
        let e = sfu.connect(seat, room, true, "v=0\r\nnonsense".into()).await.unwrap_err();
        assert!(matches!(e, SfuError::BadOffer(_)), "{e}");
    }

    #[tokio::test]
    async fn datagrams_for_nobody_are_dropped_and_bind_nothing() {
        let settings = SfuSettings { listen: "127.0.0.1:0".parse().unwrap(), announce: None, speakers: 3, max_peers: 10 };
        let sfu = Sfu::start(settings, Arc::new(|_| {})).await.unwrap();
        let seat: SeatKey = ("alice@alpha".parse().unwrap(), SessionId([1; 16]));
        let answer = sfu.connect(seat, (GroupId([1; 16]), RoomId([1; 16])), true, offer(3)).await.unwrap();
        let ufrag = answer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap().trim().to_owned();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Noise, a STUN binding for an unknown ufrag, and one naming our ufrag with a
        // made-up integrity: none is anyone's.
        stranger.send_to(b"hello there", sfu.addr()).unwrap();
        for user in [format!("nobody:{ufrag}"), format!("{ufrag}:them")] {
            let mut m = stun_binding(&user);
            stranger.send_to(&m, sfu.addr()).unwrap();
            m.truncate(10);
            stranger.send_to(&m, sfu.addr()).unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let stats = loop {
            let s = sfu.stats().await.unwrap();
            if s.unrouted >= 5 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(stats.unrouted, 5, "{stats:?}");
        assert_eq!((stats.peers, stats.received), (1, 0));
    }

    /// A STUN binding request with USERNAME `user` and a zeroed MESSAGE-INTEGRITY.
    fn stun_binding(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        let u = user.as_bytes();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(u.len() as u16).to_be_bytes());
        attrs.extend_from_slice(u);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
        attrs.extend_from_slice(&0x0008u16.to_be_bytes());
        attrs.extend_from_slice(&20u16.to_be_bytes());
        attrs.extend_from_slice(&[0; 20]);
        let mut m = Vec::new();
        m.extend_from_slice(&0x0001u16.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }
}

#[cfg(test)]
mod cascade_tests {
    //! Two nodes' SFUs on real sockets: alpha pulls beta's speakers over one link and fans
    //! them out to its own listeners; the frames arrive byte for byte as the speaker sent
    //! them (so end-to-end encrypted frames stay decryptable), once per node.

    use std::sync::Mutex;
    use std::time::Duration;

    use str0m::change::{SdpAnswer, SdpPendingOffer};
    use str0m::media::{Direction, MediaKind};
    use str0m::rtp::SeqNo;
    use voicechat_protocol::ids::{GroupId, RoomId, SessionId};

    use super::*;

    const ROOM: RoomKey = (GroupId([7; 16]), RoomId([7; 16]));

    /// A synthetic browser: publishes tagged payloads if asked, records what it receives.
    struct Client {
        got: Arc<Mutex<Vec<Vec<u8>>>>,
        talk: Arc<std::sync::atomic::AtomicBool>,
        sent: Arc<std::sync::atomic::AtomicU64>,
    }

    fn start_client(tag: u8, slots: usize) -> (Rtc, SdpPendingOffer, std::net::UdpSocket, Option<Mid>, String) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        let publish = (tag != 0).then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        for _ in 0..slots {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().unwrap();
        (rtc, pending, sock, publish, offer.to_sdp_string())
    }

    async fn client(sfu: &Sfu, seat: SeatKey, may_speak: bool, tag: u8, slots: usize) -> Client {
        let (mut rtc, pending, sock, publish, offer) = start_client(tag, slots);
        let answer = sfu.connect(seat, ROOM, may_speak, offer).await.unwrap();
        rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        let c = Client { got: Arc::default(), talk: Arc::default(), sent: Arc::default() };
        let (got, talk, sent) = (c.got.clone(), c.talk.clone(), c.sent.clone());
        let pt = rtc.codec_config().find(|c| c.spec().codec == Codec::Opus).map(|c| c.pt());
        let on_event = move |_: &mut u64, _: &mut Rtc, e: Event| {
            if let Event::RtpPacket(p) = e {
                got.lock().unwrap().push(p.payload.to_vec());
            }
        };
        let on_tick = move |seq: &mut u64, rtc: &mut Rtc| {
            if let (true, Some(mid), Some(pt)) = (talk.load(std::sync::atomic::Ordering::Relaxed), publish, pt)
                && write_frame(rtc, mid, pt, *seq, tag)
            {
                *seq += 1;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        run_peer(rtc, sock, 1u64, on_event, on_tick);
        c
    }

    /// Runs a synthetic peer on its socket until the socket fails: sends what `rtc` sends,
    /// hands its events to `on_event` and calls `on_tick` every 20 ms (a frame of audio),
    /// both with `state`.
    fn run_peer<S: Send + 'static>(
        mut rtc: Rtc,
        sock: std::net::UdpSocket,
        mut state: S,
        mut on_event: impl FnMut(&mut S, &mut Rtc, Event) + Send + 'static,
        mut on_tick: impl FnMut(&mut S, &mut Rtc) + Send + 'static,
    ) {
        let sock = UdpSocket::from_std(sock).unwrap();
        let local = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                let mut timeout = Instant::now() + Duration::from_millis(100);
                while let Ok(o) = rtc.poll_output() {
                    match o {
                        Output::Timeout(t) => {
                            timeout = t;
                            break;
                        }
                        Output::Transmit(t) => {
                            let _ = sock.try_send_to(&t.contents, t.destination);
                        }
                        Output::Event(e) => on_event(&mut state, &mut rtc, e),
                    }
                }
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, source)) = r else { return };
                        let contents = (&buf[..n]).try_into().unwrap();
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents }));
                    }
                    () = tokio::time::sleep_until(timeout.max(Instant::now()).into()) => {
                        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
                    }
                    _ = tick.tick() => on_tick(&mut state, &mut rtc),
                }
            }
        });
    }

    /// Sends one 40-byte frame of `tag` bytes (the first 8 its sequence number) on `mid`;
    /// false while that stream does not exist yet.
    fn write_frame(rtc: &mut Rtc, mid: Mid, pt: Pt, seq: u64, tag: u8) -> bool {
        let mut payload = vec![tag; 40];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        let ext = ExtensionValues { audio_level: Some(-30), voice_activity: Some(true), ..Default::default() };
        let w = RtpWrite::new(pt, SeqNo::from(seq), (seq as u32) * 960, Instant::now(), payload).ext_vals(ext);
        match rtc.direct_api().stream_tx_by_mid(mid, None) {
            Some(tx) => {
                tx.write_rtp(w);
                true
            }
            None => false,
        }
    }

    fn seat(name: &str, n: u8) -> SeatKey {
        (name.parse().unwrap(), SessionId([n; 16]))
    }

    async fn sfu(events: Arc<dyn Fn(SfuEvent) + Send + Sync>) -> Sfu {
        let settings = SfuSettings { listen: "127.0.0.1:0".parse().unwrap(), announce: None, speakers: 3, max_peers: 50 };
        Sfu::start(settings, events).await.unwrap()
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn alpha_pulls_betas_speaker_once_and_fans_it_out_unchanged() {
        let alpha_events: Arc<Mutex<Vec<SfuEvent>>> = Arc::default();
        let ev = alpha_events.clone();
        let alpha = sfu(Arc::new(move |e| ev.lock().unwrap().push(e))).await;
        let beta = sfu(Arc::new(|_| {})).await;
        let (alpha_name, beta_name): (NodeName, NodeName) = ("alpha".parse().unwrap(), "beta".parse().unwrap());

        // Beta: a speaker, and a listener who tries to talk. Alpha: three listeners.
        let speaker = client(&beta, seat("sam@beta", 1), true, 0xAA, 0).await;
        let quiet = client(&beta, seat("lou@beta", 2), false, 0xBB, 3).await;
        let mut listeners = Vec::new();
        for i in 0..3 {
            listeners.push(client(&alpha, seat(&format!("listener{i}@alpha"), 10 + i), false, 0, 3).await);
        }

        // A cascade offer that tries to send is refused.
        let (_, _, _, _, sending) = start_client(0xCC, 1);
        let e = beta.serve(ROOM, "gamma".parse().unwrap(), sending).await.unwrap_err();
        assert!(matches!(e, SfuError::BadOffer(_)), "{e}");
        // An answer for a pull nobody asked for is refused.
        let e = alpha.pulled(ROOM, "delta".parse().unwrap(), "v=0".into()).await.unwrap_err();
        assert!(matches!(e, SfuError::Link(_)), "{e}");

        let offer = alpha.pull(ROOM, beta_name.clone()).await.unwrap();
        let answer = beta.serve(ROOM, alpha_name.clone(), offer).await.unwrap();
        alpha.pulled(ROOM, beta_name.clone(), answer).await.unwrap();
        until("the link to come up", || alpha_events.lock().unwrap().iter().any(|e| matches!(e, SfuEvent::Link { up: true, .. }))).await;

        speaker.talk.store(true, std::sync::atomic::Ordering::Relaxed);
        quiet.talk.store(true, std::sync::atomic::Ordering::Relaxed);
        until("every listener on alpha to hear 50 packets", || listeners.iter().all(|l| l.got.lock().unwrap().len() >= 50)).await;
        speaker.talk.store(false, std::sync::atomic::Ordering::Relaxed);
        quiet.talk.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Beta told alpha who its slot carries, and alpha told its listeners' pages: sam of
        // beta, on the slot his audio comes on. One copy of him reached alpha.
        let sam = seat("sam@beta", 1);
        until("every listener's page to name sam@beta", || {
            let events = alpha_events.lock().unwrap();
            (0..3u8).all(|i| {
                let me = seat(&format!("listener{i}@alpha"), 10 + i);
                let last = events.iter().rev().find_map(|e| match e {
                    SfuEvent::Slots { seat, slots, .. } if *seat == me => Some(slots.clone()),
                    _ => None,
                });
                last.is_some_and(|slots| slots.iter().flatten().eq([&sam]))
            })
        })
        .await;
        let speakers = alpha.speakers();
        assert_eq!(speakers.keys().map(|u| u.to_string()).collect::<Vec<_>>(), ["sam@beta"]);
        assert_eq!(speakers[&sam.0].copies, 1);
        assert!(speakers[&sam.0].packets >= 40, "{speakers:?}");
        assert!(alpha.speaker_metrics().contains("voicechat_sfu_cascade_copies{speaker=\"sam@beta\"} 1\n"));
        assert_eq!((alpha.stats().await.unwrap().tables_refused, beta.speakers().len()), (0, 0));

        let sent = speaker.sent.load(std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (alpha.stats().await.unwrap(), beta.stats().await.unwrap());
        // One copy crossed: beta wrote each of its speaker's packets to alpha once (the
        // listener who tried to talk is not sent), whatever alpha's listener count.
        assert!(b.to_nodes <= sent && b.to_nodes + 5 >= sent, "beta sent {} of {sent} packets to alpha", b.to_nodes);
        assert_eq!(a.from_nodes, b.to_nodes, "alpha received what beta sent it, once");
        assert_eq!((a.links_in, b.links_out), (1, 1));
        // Alpha fanned each out to its three listeners.
        assert_eq!(a.forwarded, 3 * a.from_nodes);
        for l in &listeners {
            let got = l.got.lock().unwrap();
            assert!(got.iter().all(|p| p.len() == 40 && p[8..].iter().all(|b| *b == 0xAA)), "only the speaker, unchanged");
            let mut seqs: Vec<u64> = got.iter().map(|p| u64::from_be_bytes(p[..8].try_into().unwrap())).collect();
            let n = seqs.len();
            seqs.dedup();
            assert_eq!(seqs.len(), n, "no packet twice");
        }

        // Alpha stops pulling: beta's speaker no longer reaches it.
        alpha.unpull(ROOM, beta_name.clone());
        beta.unserve(ROOM, alpha_name);
        let (a, b) = (alpha.stats().await.unwrap(), beta.stats().await.unwrap());
        assert_eq!((a.links_in, b.links_out), (0, 0));
        assert!(alpha.speakers().is_empty(), "sam is carried no more");
        assert_eq!(alpha.speaker_metrics(), "", "and his series are gone");
        let before = a.from_nodes;
        speaker.talk.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(alpha.stats().await.unwrap().from_nodes, before);
    }

    /// A node that answers a pull as beta would. Once the slot table channel opens it writes
    /// `say` on it, one message every `every` (at least a link's 100 ms, so each is judged),
    /// and from `audio_from` after the opening on, if given, sends tagged audio on its first
    /// slot every 20 ms.
    async fn fake_server(offer: &str, say: Vec<Vec<u8>>, every: Duration, audio_from: Option<Duration>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_ice_lite(true).set_rtp_mode(true).clear_codecs().enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(offer).unwrap()).unwrap().to_sdp_string();
        let first_slot = Mid::from(audio_lines(&answer).into_iter().find(|(_, sends, _)| *sends).unwrap().0.as_str());
        let pt = rtc.codec_config().find(|c| c.spec().codec == Codec::Opus).map(|c| c.pt()).unwrap();
        let said = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = said.clone();
        // (the data channel, when it opened, when the next table may go, the audio's seq)
        let state = (None::<ChannelId>, Instant::now(), Instant::now(), 1u64);
        let on_event = |st: &mut (Option<ChannelId>, Instant, Instant, u64), _: &mut Rtc, e: Event| {
            if let Event::ChannelOpen(cid, _) = e {
                (st.0, st.1, st.2) = (Some(cid), Instant::now(), Instant::now());
            }
        };
        let mut say = say.into_iter();
        let on_tick = move |st: &mut (Option<ChannelId>, Instant, Instant, u64), rtc: &mut Rtc| {
            let Some(channel) = st.0 else { return };
            if Instant::now() >= st.2
                && let Some(mut ch) = rtc.channel(channel)
                && let Some(msg) = say.next()
            {
                assert!(ch.write(false, &msg).unwrap());
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.2 = Instant::now() + every;
            }
            if audio_from.is_some_and(|d| st.1.elapsed() >= d) && write_frame(rtc, first_slot, pt, st.3, 0xEE) {
                st.3 += 1;
            }
        };
        run_peer(rtc, sock, state, on_event, on_tick);
        (answer, said)
    }

    #[tokio::test]
    async fn a_slot_table_that_is_forged_or_malformed_is_dropped_and_a_good_one_is_taken() {
        let alpha = sfu(Arc::new(|_| {})).await;
        let beta: NodeName = "beta".parse().unwrap();
        let bob = seat("bob@beta", 2);
        let say = vec![
            b"\x00\xffnot json".to_vec(),
            names::encode(&[Some(bob.clone()), Some(seat("mallory@alpha", 3))]),
            names::encode(&[None, None, None, Some(bob.clone())]),
            format!(r#"{{"v":1,"slots":[],"pad":"{}"}}"#, "x".repeat(names::MAX_TABLE_BYTES)).into_bytes(),
            br#"{"v":2,"slots":[]}"#.to_vec(),
            names::encode(&[None, Some(bob.clone())]),
        ];
        let offer = alpha.pull(ROOM, beta.clone()).await.unwrap();
        assert!(offer.contains("m=application"), "the pull offers a data channel: {offer}");
        // At the most slots a node forwards, the offer fits `cascade.sdp` (SPEC.md §6.8).
        let settings = SfuSettings { listen: "127.0.0.1:0".parse().unwrap(), announce: None, speakers: 8, max_peers: 1 };
        let widest = Sfu::start(settings, Arc::new(|_| {})).await.unwrap().pull(ROOM, beta.clone()).await.unwrap();
        assert!(widest.len() <= 8192, "an offer of 8 slots is {} bytes", widest.len());
        let (answer, said) = fake_server(&offer, say, Duration::from_millis(150), None).await;
        alpha.pulled(ROOM, beta.clone(), answer).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let stats = loop {
            let s = alpha.stats().await.unwrap();
            if s.tables + s.tables_refused >= 6 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(said.load(std::sync::atomic::Ordering::Relaxed), 6);
        assert_eq!((stats.tables_refused, stats.tables), (5, 1), "{stats:?}");
        let speakers = alpha.speakers();
        assert_eq!(speakers.len(), 1, "{speakers:?}");
        assert_eq!(speakers[&bob.0].copies, 1);
        // The link ends: nobody is carried.
        alpha.unpull(ROOM, beta);
        alpha.stats().await.unwrap();
        assert!(alpha.speakers().is_empty());
    }

    #[tokio::test]
    async fn a_listener_is_told_the_name_whether_the_table_comes_before_or_after_the_audio() {
        let alpha_events: Arc<Mutex<Vec<SfuEvent>>> = Arc::default();
        let ev = alpha_events.clone();
        let alpha = sfu(Arc::new(move |e| ev.lock().unwrap().push(e))).await;
        let listener = client(&alpha, seat("lin@alpha", 9), false, 0, 3).await;
        let beta: NodeName = "beta".parse().unwrap();
        let (bob, cyd) = (seat("bob@beta", 2), seat("cyd@beta", 3));
        // Beta names bob on slot 0 before any audio; audio starts 300 ms later; at 600 ms
        // beta says cyd has the slot now (after the audio that is already flowing); at 1200
        // ms that nobody has it.
        let say = vec![names::encode(&[Some(bob.clone())]), names::encode(&[Some(cyd.clone())]), names::encode(&[])];
        let offer = alpha.pull(ROOM, beta.clone()).await.unwrap();
        let (answer, _) = fake_server(&offer, say, Duration::from_millis(600), Some(Duration::from_millis(300))).await;
        alpha.pulled(ROOM, beta.clone(), answer).await.unwrap();
        // What the listener's page is told, in order, for the slot carrying the link's audio.
        let shown = || -> Vec<Option<SeatKey>> {
            let mut out: Vec<Option<SeatKey>> = Vec::new();
            for e in alpha_events.lock().unwrap().iter() {
                if let SfuEvent::Slots { slots, .. } = e {
                    let now = slots.iter().flatten().next().cloned();
                    if out.last() != Some(&now) {
                        out.push(now);
                    }
                }
            }
            out
        };
        until("the listener to be told bob, then cyd, then nobody", || {
            let s = shown();
            s.ends_with(&[None]) && s.contains(&Some(cyd.clone()))
        })
        .await;
        let s = shown();
        let bob_at = s.iter().position(|x| x.as_ref() == Some(&bob)).expect("bob was named");
        let cyd_at = s.iter().position(|x| x.as_ref() == Some(&cyd)).unwrap();
        assert!(bob_at < cyd_at, "{s:?}");
        assert!(listener.got.lock().unwrap().len() >= 10, "the audio went on throughout");
        assert!(alpha.speakers().is_empty(), "nobody is carried by the last table");
    }
}
