//! The one task that owns the swarm: it takes commands from [`Net`] handles, turns swarm
//! events into [`NetEvent`]s on a bounded channel, and keeps the configured peers
//! connected. Nothing here awaits anything but the next input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::futures::stream::FuturesUnordered;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::redial::{Redial, jitter};
use super::requests::{Pending, Reply};
use super::{Command, NetConfig, NetError, NetEvent, Proto, quic_twin};

/// Idle connections close after this; configured peers are redialled anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often due redials are checked.
const REDIAL_TICK: Duration = Duration::from_millis(250);
/// How long `start` waits for listeners to bind.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Distinct (peer, reason) pairs remembered for once-only logging.
const LOG_ONCE_CAP: usize = 4096;

/// The swarm and everything the loop keeps; `redial` and `requests` add methods.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    pub(super) redial: HashMap<PeerId, Redial>,
    pub(super) outbound: HashMap<(Proto, OutboundRequestId), Pending>,
    pub(super) replies: FuturesUnordered<Reply>,
    logged: HashSet<(PeerId, &'static str)>,
}

/// Builds the swarm, binds the listeners, dials the peers and spawns the loop.
pub(crate) async fn spawn(
    cfg: &NetConfig,
    peers: Vec<(PeerId, Multiaddr)>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
) -> Result<PeerId, NetError> {
    let mut seed = cfg.seed;
    let key = identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| NetError::Transport(e.to_string()))?;
    let local = key.public().to_peer_id();
    let behaviour = Behaviour::new(&key, cfg);
    let listen = &cfg.listen;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();

    let mut pending = HashSet::new();
    for addr in listen {
        for addr in std::iter::once(addr.clone()).chain(quic_twin(addr)) {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            pending.insert(id);
        }
    }

    let mut event_loop = EventLoop {
        swarm,
        commands,
        events,
        redial: HashMap::new(),
        outbound: HashMap::new(),
        replies: FuturesUnordered::new(),
        logged: HashSet::new(),
    };
    event_loop.wait_listening(pending).await?;
    for (peer, addr) in peers {
        event_loop.add_peer(peer, addr)?;
    }
    event_loop.redial_due();
    tokio::spawn(event_loop.run());
    Ok(local)
}

impl EventLoop {
    /// Drives the swarm until every listener has an address (or fails to bind).
    async fn wait_listening(&mut self, mut pending: HashSet<ListenerId>) -> Result<(), NetError> {
        let deadline = Instant::now() + LISTEN_WAIT;
        while !pending.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NetError::Transport("listeners did not bind in time".into()))?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    pending.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    addresses,
                    reason,
                } if pending.contains(&listener_id) => {
                    return Err(NetError::Listen {
                        addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: format!("{reason:?}"),
                    });
                }
                SwarmEvent::ListenerError { listener_id, error }
                    if pending.contains(&listener_id) =>
                {
                    return Err(NetError::Listen {
                        addr: Multiaddr::empty(),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            }
            // Nothing else can happen before the first dial; other events are dropped.
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(REDIAL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_ack = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(ack)) => break Some(ack),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                Some((proto, channel, reply)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.on_reply(proto, channel, reply);
                }
                _ = tick.tick() => self.redial_due(),
            }
        };
        info!(peer = %self.swarm.local_peer_id(), "network stopped");
        drop(self);
        if let Some(ack) = shutdown_ack {
            let _ = ack.send(());
        }
    }

    pub(super) fn log_once(&mut self, peer: PeerId, reason: &'static str) -> bool {
        if self.logged.len() >= LOG_ONCE_CAP {
            self.logged.clear();
        }
        self.logged.insert((peer, reason))
    }

    pub(super) fn emit(&mut self, event: NetEvent) {
        let Err(err) = self.events.try_send(event) else {
            return;
        };
        match err.into_inner() {
            // Dropping `reply` drops the response channel: the stream closes.
            NetEvent::Request { peer, .. } => {
                if self.log_once(peer, "event queue full") {
                    warn!(%peer, "event queue full, request dropped");
                }
            }
            NetEvent::Connected { peer } | NetEvent::Disconnected { peer } => {
                warn!(%peer, "event queue full, connection event dropped");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Command::Request(peer, proto, data, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rpc(proto)
                    .send_request(&peer, data);
                self.outbound.insert((proto, id), tx);
            }
            Command::AddPeer(peer, addr, tx) => {
                let result = self.add_peer(peer, addr).map(|()| peer);
                self.redial_due();
                let _ = tx.send(result);
            }
            Command::RemovePeer(peer, tx) => {
                self.redial.remove(&peer);
                let _ = tx.send(());
            }
            Command::Connected(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Disconnect(peer, tx) => {
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = tx.send(());
            }
            Command::Block(peer, tx) => {
                self.redial.remove(&peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                let _ = tx.send(());
            }
            Command::Unblock(peer, tx) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let _ = tx.send(());
            }
            Command::Allow(peer, on, tx) => {
                if let Some(allowed) = self.swarm.behaviour_mut().allowed.as_mut() {
                    if on {
                        allowed.allow_peer(peer);
                    } else {
                        allowed.disallow_peer(peer);
                    }
                }
                if !on {
                    self.redial.remove(&peer);
                }
                let _ = tx.send(());
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if let Some(r) = self.redial.get_mut(&peer_id) {
                    r.on_connected(Instant::now());
                }
                if num_established.get() == 1 {
                    debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connected");
                    self.emit(NetEvent::Connected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if num_established > 0 {
                    return;
                }
                debug!(peer = %peer_id, cause = ?cause, "disconnected");
                if let Some(r) = self.redial.get_mut(&peer_id) {
                    r.on_closed(Instant::now(), jitter());
                }
                self.emit(NetEvent::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, %error, "dial failed");
                if let Some(r) = self.redial.get_mut(&peer)
                    && !self.swarm.is_connected(&peer)
                {
                    r.schedule(Instant::now(), jitter());
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(address = %send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "listener closed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(event) => self.on_rpc(Proto::Sync, event),
            BehaviourEvent::Signal(event) => self.on_rpc(Proto::Signal, event),
            BehaviourEvent::Invite(event) => self.on_rpc(Proto::Invite, event),
            BehaviourEvent::Push(event) => self.on_rpc(Proto::Push, event),
            BehaviourEvent::Cascade(event) => self.on_rpc(Proto::Cascade, event),
            // libp2p keeps a connection whose pings fail (since ping 0.44): over a partition
            // it would stay up, stuck in TCP's retransmission backoff (up to 2 min after the
            // heal), and the peer would never count as gone. Closing it lets the machine
            // see the peer go, and the redial makes a fresh connection soon after the heal.
            BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Err(error) }) => {
                debug!(%peer, %error, "ping failed; connection closed");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }
}
