//! The libp2p transport of federation, with no application logic: a swarm (TCP+Noise+Yamux
//! and QUIC; identify, ping, kad, gossipsub, four request-response protocols) driven by one
//! task, behind a cheap [`Net`] handle. The node's federation logic sees only bytes:
//! [`NetEvent`]s in, commands out, and a [`Verdict`] for every gossip message.

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

pub use libp2p::gossipsub::MessageId;
pub use libp2p::{Multiaddr, PeerId};

use voicechat_protocol::rpc;

/// Capacity of the event channel to the application. When it is full, gossip is
/// answered `Ignore` and requests by closing the stream.
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
}

/// The request-response protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `/voicechat/sync/1`
    Sync,
    /// `/voicechat/signal/1`
    Signal,
    /// `/voicechat/invite/1`
    Invite,
    /// `/voicechat/push/1`
    Push,
}

impl Proto {
    /// Every protocol, in a fixed order.
    pub const ALL: [Proto; 4] = [Proto::Sync, Proto::Signal, Proto::Invite, Proto::Push];

    /// The protocol id on the wire.
    pub fn id(self) -> &'static str {
        match self {
            Proto::Sync => rpc::SYNC_PROTOCOL,
            Proto::Signal => rpc::SIGNAL_PROTOCOL,
            Proto::Invite => rpc::INVITE_PROTOCOL,
            Proto::Push => rpc::PUSH_PROTOCOL,
        }
    }

    /// The largest request, in bytes.
    pub fn max_request(self) -> usize {
        match self {
            Proto::Sync => rpc::MAX_SYNC_REQUEST,
            Proto::Signal => rpc::MAX_SIGNAL_REQUEST,
            Proto::Invite => rpc::MAX_INVITE_REQUEST,
            Proto::Push => rpc::MAX_PUSH_REQUEST,
        }
    }

    /// The largest response, in bytes.
    pub fn max_response(self) -> usize {
        match self {
            Proto::Sync => rpc::MAX_SYNC_RESPONSE,
            Proto::Signal => rpc::MAX_SIGNAL_RESPONSE,
            Proto::Invite => rpc::MAX_INVITE_RESPONSE,
            Proto::Push => rpc::MAX_PUSH_RESPONSE,
        }
    }

    fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.id())
    }
}

/// What the network tells the application.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message; every one needs a verdict via [`Net::report`] with `id` and
    /// `source` (the peer that forwarded it, not necessarily its author).
    Gossip {
        id: MessageId,
        source: PeerId,
        topic: String,
        data: Vec<u8>,
    },
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

/// The application's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, and count against the forwarding peer's score.
    Reject,
    /// Drop without penalty (e.g. stale or not ours).
    Ignore,
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
    #[error("subscription: {0}")]
    Subscription(String),
    #[error("publish: {0}")]
    Publish(String),
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
    Subscribe(String, oneshot::Sender<Result<(), NetError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), NetError>>),
    Publish(String, Vec<u8>, oneshot::Sender<Result<(), NetError>>),
    Request(
        PeerId,
        Proto,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, NetError>>,
    ),
    AddPeer(PeerId, Multiaddr, oneshot::Sender<Result<PeerId, NetError>>),
    RemovePeer(PeerId, oneshot::Sender<()>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    PeerScore(PeerId, oneshot::Sender<Option<f64>>),
    Shutdown(oneshot::Sender<()>),
}

/// A verdict on its way to gossipsub.
pub(crate) struct Report {
    id: MessageId,
    source: PeerId,
    verdict: Verdict,
}

/// Capacity of the command channel.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the verdict channel: at most one verdict per gossip event, so twice the
/// event queue keeps `report` from losing verdicts in practice.
const REPORT_QUEUE: usize = 2 * EVENT_QUEUE;

/// A cheap, cloneable handle on the network task.
#[derive(Clone)]
pub struct Net {
    commands: mpsc::Sender<Command>,
    reports: mpsc::Sender<Report>,
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
        let (reports, report_rx) = mpsc::channel(REPORT_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let peer_id = event_loop::spawn(
            cfg.seed,
            &cfg.listen,
            peers,
            command_rx,
            report_rx,
            event_tx,
        )
        .await?;
        Ok((
            Net {
                commands,
                reports,
                peer_id,
            },
            events,
        ))
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound listen addresses (real ports after port 0), TCP and QUIC.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Subscribes to a topic (sent plain) and sets its peer-score parameters.
    pub async fn subscribe(&self, topic: &str) -> Result<(), NetError> {
        let topic = topic.to_owned();
        self.call(|tx| Command::Subscribe(topic, tx)).await?
    }

    /// Leaves a topic.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), NetError> {
        let topic = topic.to_owned();
        self.call(|tx| Command::Unsubscribe(topic, tx)).await?
    }

    /// Publishes one message. Having no subscribed peer yet, or having published the same
    /// bytes recently (ids are content hashes), is not an error.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > rpc::MAX_GOSSIP_MESSAGE {
            return Err(NetError::TooLarge {
                len: data.len(),
                max: rpc::MAX_GOSSIP_MESSAGE,
            });
        }
        let topic = topic.to_owned();
        self.call(|tx| Command::Publish(topic, data, tx)).await?
    }

    /// The verdict on a [`NetEvent::Gossip`]. Never blocks; if the queue is full the
    /// verdict is dropped and the message expires from the cache unforwarded.
    pub fn report(&self, id: MessageId, source: PeerId, verdict: Verdict) {
        if self
            .reports
            .try_send(Report {
                id,
                source,
                verdict,
            })
            .is_err()
        {
            tracing::debug!(%source, "verdict dropped");
        }
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

    /// The gossipsub score of a peer, if scoring knows it.
    pub async fn peer_score(&self, peer: PeerId) -> Option<f64> {
        self.call(|tx| Command::PeerScore(peer, tx))
            .await
            .ok()
            .flatten()
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
