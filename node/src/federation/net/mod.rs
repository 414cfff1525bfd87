//! The libp2p transport of federation, with no application logic: a swarm (TCP+Noise+Yamux
//! and QUIC; identify, ping, five request-response protocols, connection limits, and an
//! allow list in closed mode and a block list) driven by one task, behind a cheap [`Net`]
//! handle. The node's federation logic sees only bytes: [`NetEvent`]s in, commands out.
//!
//! There is no gossipsub and no Kademlia: gossipsub announces every topic a node
//! subscribes to (so every group id) to every connected peer, and a DHT hands the peer
//! table to anyone who asks. Records go straight to the nodes that need them (`push`).

mod behaviour;
mod codec;
mod event_loop;
mod redial;
mod requests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::multiaddr::Protocol;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::{Multiaddr, PeerId};

pub use crate::federation::proto::Proto;

/// Capacity of the event channel to the application. When it is full, requests are
/// answered by closing the stream.
pub const EVENT_QUEUE: usize = 1024;
/// How long a request waits for its response (and an inbound request for the app's reply).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transport needs to start.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The node's ed25519 secret seed (`node.key`); the libp2p identity.
    pub seed: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0`. Each TCP address is also
    /// listened on as its QUIC twin (`/udp/<port>/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Configured peers, each ending in `/p2p/<PeerId>`: dialled at start and redialled
    /// with exponential backoff (1 s doubling to 30 s, jittered) while not connected.
    pub peers: Vec<Multiaddr>,
    /// `Some`: only these peers may connect (closed federation). `None`: anyone not blocked.
    pub allow: Option<Vec<PeerId>>,
    /// Peers never connected.
    pub block: Vec<PeerId>,
    /// Connection limits.
    pub limits: ConnLimits,
}

/// How many connections the swarm keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Established connections in all.
    pub total: u32,
    /// Established connections per peer (TCP and QUIC may both be up for a while).
    pub per_peer: u32,
    /// Inbound connections still in their handshake.
    pub pending_incoming: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self { total: 256, per_peer: 4, pending_incoming: 64 }
    }
}

impl NetConfig {
    /// Listens on `listen`, dials `peers`, anyone may connect, default limits.
    pub fn open(seed: [u8; 32], listen: Vec<Multiaddr>, peers: Vec<Multiaddr>) -> Self {
        Self { seed, listen, peers, allow: None, block: Vec::new(), limits: ConnLimits::default() }
    }
}

impl Proto {
    fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.id())
    }
}

/// What the network tells the application.
#[derive(Debug)]
pub enum NetEvent {
    /// A request (non-empty, under the protocol's cap). Answer by sending the response
    /// bytes (non-empty, under the cap) on `reply`; dropping it, or an empty or over-cap
    /// response, closes the stream without a response and the requester gets an error.
    Request {
        peer: PeerId,
        proto: Proto,
        data: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The first connection to `peer` is up.
    Connected { peer: PeerId },
    /// The last connection to `peer` closed.
    Disconnected { peer: PeerId },
}

/// Transport failures. `Protocol` is the remote breaking the rules; the rest are local
/// or connectivity failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("listening on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("building the transport: {0}")]
    Transport(String),
    #[error("address {0} does not end in /p2p/<peer id>")]
    NoPeerId(Multiaddr),
    #[error("{0} is this node's own peer id")]
    SelfDial(PeerId),
    #[error("message of {len} bytes is over the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("a message must not be empty")]
    Empty,
    #[error("peer {0} is not connected and could not be dialled")]
    Unreachable(PeerId),
    #[error("request timed out")]
    Timeout,
    #[error("the peer does not support the protocol")]
    Unsupported,
    #[error("the connection closed before the response")]
    ConnectionClosed,
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("stream i/o: {0}")]
    Io(String),
    #[error("the network task has stopped")]
    Stopped,
}

/// Commands from [`Net`] handles to the event loop, each with its reply.
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Request(
        PeerId,
        Proto,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, NetError>>,
    ),
    AddPeer(PeerId, Multiaddr, oneshot::Sender<Result<PeerId, NetError>>),
    RemovePeer(PeerId, oneshot::Sender<()>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    Disconnect(PeerId, oneshot::Sender<()>),
    Block(PeerId, oneshot::Sender<()>),
    Unblock(PeerId, oneshot::Sender<()>),
    /// Admit (true) or stop admitting (false) a peer in closed federation.
    Allow(PeerId, bool, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Capacity of the command channel.
const COMMAND_QUEUE: usize = 256;

/// A cheap, cloneable handle on the network task.
#[derive(Clone)]
pub struct Net {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl Net {
    /// Builds the swarm, starts listening (waiting until the listeners are bound), dials
    /// the configured peers, and spawns the event loop on tokio.
    pub async fn start(cfg: NetConfig) -> Result<(Net, mpsc::Receiver<NetEvent>), NetError> {
        let mut peers = Vec::with_capacity(cfg.peers.len());
        for addr in &cfg.peers {
            peers.push(split_peer_addr(addr)?);
        }
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let peer_id = event_loop::spawn(&cfg, peers, command_rx, event_tx).await?;
        Ok((Net { commands, peer_id }, events))
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound listen addresses (real ports after port 0), TCP and QUIC.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Sends a request and waits for the response (at most [`REQUEST_TIMEOUT`]). Dials
    /// the peer if needed, from the addresses known for it. Requests and responses are
    /// never empty (an empty stream means "no answer"), as with CBOR framing.
    pub async fn request(
        &self,
        peer: PeerId,
        proto: Proto,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        if data.is_empty() {
            return Err(NetError::Empty);
        }
        if data.len() > proto.max_request() {
            return Err(NetError::TooLarge {
                len: data.len(),
                max: proto.max_request(),
            });
        }
        self.send_request(peer, proto, data).await
    }

    /// [`Net::request`] without the local size check (tests prove the remote check).
    async fn send_request(
        &self,
        peer: PeerId,
        proto: Proto,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let call = self.call(|tx| Command::Request(peer, proto, data, tx));
        match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), call).await {
            Ok(result) => result?,
            Err(_) => Err(NetError::Timeout),
        }
    }

    /// Adds an address (ending in `/p2p/<PeerId>`) to the persistent redial set and dials it.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        let (peer, addr) = split_peer_addr(&addr)?;
        self.call(|tx| Command::AddPeer(peer, addr, tx)).await?
    }

    /// Removes a peer from the redial set (an open connection stays until idle).
    pub async fn remove_peer(&self, peer: PeerId) {
        let _ = self.call(|tx| Command::RemovePeer(peer, tx)).await;
    }

    /// Peers with at least one open connection.
    pub async fn connected(&self) -> Vec<PeerId> {
        self.call(Command::Connected).await.unwrap_or_default()
    }

    /// Closes every connection to a peer (it may dial again, unless blocked).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.call(|tx| Command::Disconnect(peer, tx)).await;
    }

    /// Blocks a peer: its connections close and none is accepted or dialled again.
    pub async fn block(&self, peer: PeerId) {
        let _ = self.call(|tx| Command::Block(peer, tx)).await;
    }

    /// Lifts a block.
    pub async fn unblock(&self, peer: PeerId) {
        let _ = self.call(|tx| Command::Unblock(peer, tx)).await;
    }

    /// In closed federation, admits a peer (an operator pinned it) or stops admitting it
    /// (its connections close); without an allow list (open federation) nothing changes.
    pub async fn allow(&self, peer: PeerId, on: bool) {
        let _ = self.call(|tx| Command::Allow(peer, on, tx)).await;
    }

    /// Stops the event loop and waits until the swarm (listeners, connections) is dropped.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }
}

/// Splits `<addr>/p2p/<peer>` into the peer and the address without the suffix.
fn split_peer_addr(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), NetError> {
    let mut rest = addr.clone();
    match rest.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, rest)),
        _ => Err(NetError::NoPeerId(addr.clone())),
    }
}

/// The QUIC twin of a TCP address: `/ip4/a/tcp/p` → `/ip4/a/udp/p/quic-v1`.
fn quic_twin(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut had_tcp = false;
    for p in addr.iter() {
        match p {
            Protocol::Tcp(port) if !had_tcp => {
                had_tcp = true;
                out.push(Protocol::Udp(port));
                out.push(Protocol::QuicV1);
            }
            Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::P2p(_) => out.push(p),
            _ => return None,
        }
    }
    had_tcp.then_some(out)
}
