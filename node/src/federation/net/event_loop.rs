//! The one task that owns the swarm: it takes commands and verdicts from [`Net`] handles,
//! turns swarm events into [`NetEvent`]s on a bounded channel, and keeps the configured
//! peers connected. Nothing here awaits anything but the next input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::futures::stream::FuturesUnordered;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity, kad, noise, tcp, yamux};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::behaviour::{self, Behaviour, BehaviourEvent};
use super::redial::{Redial, jitter};
use super::requests::{Pending, Reply};
use super::{Command, NetError, NetEvent, Proto, Report, Verdict, quic_twin};

/// Idle connections close after this; configured peers are redialled anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often due redials are checked.
const REDIAL_TICK: Duration = Duration::from_millis(250);
/// How often kad refreshes its routing table.
const KAD_BOOTSTRAP: Duration = Duration::from_secs(300);
/// How long `start` waits for listeners to bind.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Distinct (peer, reason) pairs remembered for once-only logging.
const LOG_ONCE_CAP: usize = 4096;

/// The swarm and everything the loop keeps; `redial` and `requests` add methods.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    reports: mpsc::Receiver<Report>,
    events: mpsc::Sender<NetEvent>,
    pub(super) redial: HashMap<PeerId, Redial>,
    pub(super) outbound: HashMap<(Proto, OutboundRequestId), Pending>,
    pub(super) replies: FuturesUnordered<Reply>,
    logged: HashSet<(PeerId, &'static str)>,
    bootstrapped: bool,
}

/// Builds the swarm, binds the listeners, dials the peers and spawns the loop.
pub(crate) async fn spawn(
    seed: [u8; 32],
    listen: &[Multiaddr],
    peers: Vec<(PeerId, Multiaddr)>,
    commands: mpsc::Receiver<Command>,
    reports: mpsc::Receiver<Report>,
    events: mpsc::Sender<NetEvent>,
) -> Result<PeerId, NetError> {
    let mut seed = seed;
    let key = identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| NetError::Transport(e.to_string()))?;
    let local = key.public().to_peer_id();
    let behaviour = Behaviour::new(&key)?;
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
        reports,
        events,
        redial: HashMap::new(),
        outbound: HashMap::new(),
        replies: FuturesUnordered::new(),
        logged: HashSet::new(),
        bootstrapped: false,
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
        let mut bootstrap = tokio::time::interval(KAD_BOOTSTRAP);
        let shutdown_ack = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(ack)) => break Some(ack),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                Some(report) = self.reports.recv() => self.on_report(report),
                Some((proto, channel, reply)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.on_reply(proto, channel, reply);
                }
                _ = tick.tick() => self.redial_due(),
                _ = bootstrap.tick() => {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
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
            NetEvent::Gossip { id, source, .. } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
                if self.log_once(source, "event queue full") {
                    warn!(peer = %source, "event queue full, gossip ignored");
                }
            }
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
            Command::Subscribe(topic, tx) => {
                let topic = IdentTopic::new(topic);
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                let result = gossipsub
                    .set_topic_params(topic.clone(), behaviour::topic_params())
                    .map_err(|e| NetError::Subscription(e.to_owned()))
                    .and_then(|()| {
                        gossipsub
                            .subscribe(&topic)
                            .map(|_| ())
                            .map_err(|e| NetError::Subscription(e.to_string()))
                    });
                debug!(%topic, "subscribed");
                let _ = tx.send(result);
            }
            Command::Unsubscribe(topic, tx) => {
                let topic = IdentTopic::new(topic);
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                debug!(%topic, "unsubscribed");
                let _ = tx.send(Ok(()));
            }
            Command::Publish(topic, data, tx) => {
                let topic = IdentTopic::new(topic);
                let result = match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), data)
                {
                    Ok(id) => {
                        debug!(%topic, message = %id, "published");
                        Ok(())
                    }
                    Err(PublishError::NoPeersSubscribedToTopic) => {
                        debug!(%topic, "published to no peer");
                        Ok(())
                    }
                    Err(PublishError::Duplicate) => {
                        debug!(%topic, "already published");
                        Ok(())
                    }
                    Err(e) => Err(NetError::Publish(e.to_string())),
                };
                let _ = tx.send(result);
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
            Command::PeerScore(peer, tx) => {
                let _ = tx.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    fn on_report(&mut self, report: Report) {
        let Report {
            id,
            source,
            verdict,
        } = report;
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => {
                if self.log_once(source, "rejected gossip") {
                    info!(peer = %source, "rejected gossip");
                }
                MessageAcceptance::Reject
            }
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
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
                    if !self.bootstrapped {
                        self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                    }
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
            BehaviourEvent::Gossipsub(event) => self.on_gossip(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&kad::PROTOCOL_NAME) =>
            {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                debug!(peer = %peer_id, %error, "identify failed");
            }
            BehaviourEvent::Sync(event) => self.on_rpc(Proto::Sync, event),
            BehaviourEvent::Signal(event) => self.on_rpc(Proto::Signal, event),
            BehaviourEvent::Invite(event) => self.on_rpc(Proto::Invite, event),
            BehaviourEvent::Push(event) => self.on_rpc(Proto::Push, event),
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                self.emit(NetEvent::Gossip {
                    id: message_id,
                    source: propagation_source,
                    topic: message.topic.into_string(),
                    data: message.data,
                });
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer subscribed");
            }
            gossipsub::Event::GossipsubNotSupported { peer_id }
                if self.log_once(peer_id, "no gossipsub") =>
            {
                info!(peer = %peer_id, "peer does not support gossipsub");
            }
            gossipsub::Event::SlowPeer { peer_id, .. } if self.log_once(peer_id, "slow peer") => {
                info!(peer = %peer_id, "slow gossip peer");
            }
            _ => {}
        }
    }
}
