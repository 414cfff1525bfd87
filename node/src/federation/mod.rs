//! Federation: this node's part in the network of nodes.
//!
//! - `machine`: the federation logic as a sans-IO state machine (trust, judging, routing,
//!   sync, presence, signals), tested in simulated time;
//! - `net`: the libp2p transport behind a cheap handle;
//! - `driver`: the one task that feeds the machine what the network, the core and the clock
//!   deliver, and carries out what it asks (requests, answers, stored changes);
//! - `wellknown`: fetching a node's card from its HTTPS origin to verify its name.
//!
//! The core never calls federation: it announces signed records on a channel, and the
//! driver hands the machine's accepted changes back to it.

mod driver;
pub mod machine;
pub mod net;
pub mod proto;
pub(crate) mod wellknown;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use voicechat_protocol::ids::{GroupId, NodeName, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::rpc::RpcError;

use crate::core::{Announce, Core};
use machine::{Command, CommandResult, Mode, OutSignal, RelayError};
use net::{ConnLimits, Net, NetConfig};

/// Capacity of the channel of core announcements.
pub const ANNOUNCE_QUEUE: usize = 1024;
/// Capacity of the channel of commands from local callers.
const COMMAND_QUEUE: usize = 256;

/// What the node needs to join the network.
#[derive(Debug, Clone)]
pub struct FedConfig {
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// The operator's pins: addresses ending in `/p2p/<PeerId>` (dialled and kept
    /// connected), or a bare `/p2p/<PeerId>` (trusted when it connects).
    pub pins: Vec<Multiaddr>,
    /// Node names and PeerIds the operator blocked.
    pub blocks: Vec<String>,
    /// Who may federate.
    pub mode: Mode,
    /// This node's web origin (in its card).
    pub url: String,
    /// Addresses to reach other nodes' HTTPS origins at instead of DNS (name → addr:port).
    pub resolve: HashMap<NodeName, SocketAddr>,
    /// PEM files of extra certificate authorities for other nodes' HTTPS origins.
    pub extra_ca: Vec<Vec<u8>>,
    /// How often groups homed elsewhere are checked against their home (default 5 min).
    pub resync: Option<Duration>,
    /// Connection limits.
    pub limits: ConnLimits,
    /// The address to put in the card for a listener on all interfaces.
    pub lan_ip: Option<std::net::IpAddr>,
}

/// This node's SFU, and what it says about the links it pulls (up or down): with one, the
/// node takes part in the cascade between nodes' SFUs (SPEC.md §9.6).
pub type CascadeSfu = (crate::sfu::Sfu, mpsc::Receiver<(crate::sfu::LinkKey, bool)>);

/// Why the federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// libp2p could not listen or dial.
    #[error("network: {0}")]
    Net(String),
    /// A pin or block is not usable.
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The node key of an ed25519 PeerId (the only kind nodes use).
pub fn key_of(peer: &PeerId) -> Option<NodeKey> {
    let b = peer.to_bytes();
    if b.len() == 38 && b[..6] == [0x00, 0x24, 0x08, 0x01, 0x12, 0x20] {
        Some(NodeKey::from_bytes(b[6..].try_into().ok()?))
    } else {
        None
    }
}

/// The PeerId of a node key.
pub fn peer_of(key: &NodeKey) -> PeerId {
    PeerId::from_bytes(&key.peer_id_bytes()).expect("an identity multihash of an ed25519 key is a PeerId")
}

/// Splits a pin into its key and its address (none for a bare `/p2p/<id>`).
pub fn parse_pin(addr: &Multiaddr) -> Result<(NodeKey, Option<Multiaddr>), FedError> {
    let mut rest = addr.clone();
    let Some(Protocol::P2p(peer)) = rest.pop() else {
        return Err(FedError::Config(format!("{addr} does not end in /p2p/<PeerId>")));
    };
    let key = key_of(&peer).ok_or_else(|| FedError::Config(format!("{peer} is not an ed25519 PeerId")))?;
    Ok((key, (!rest.is_empty()).then_some(rest)))
}

/// A handle on the running federation. Cheap to clone.
#[derive(Clone)]
pub struct Federation {
    commands: mpsc::Sender<(Command, oneshot::Sender<CommandResult>)>,
    card: Arc<Vec<u8>>,
    addrs: Arc<Vec<Multiaddr>>,
    net: Net,
    mode: Mode,
}

impl Federation {
    /// This node's signed card (served at `/.well-known/voicechat/node`).
    pub fn card(&self) -> &[u8] {
        &self.card
    }

    /// The addresses the node listens on, each ending in `/p2p/<id>`.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Who may federate.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Blocks a node now (by PeerId, or by name: also the key bound to it), or lifts the
    /// block: its connections close and it is refused from then on. The store keeps it
    /// for the next start (the caller's part).
    pub async fn block(&self, key: Option<NodeKey>, name: Option<NodeName>, on: bool) {
        if let Some(CommandResult::Admin(keys)) = self.call(Command::Block { key, name, on }).await {
            for k in keys {
                let peer = peer_of(&k);
                if on {
                    self.net.block(peer).await;
                } else {
                    self.net.unblock(peer).await;
                }
            }
        }
    }

    /// Pins a node now (admitted in closed federation, dialled at the address if it has one)
    /// or removes the pin (in closed federation its connections close).
    pub async fn pin(&self, addr: &Multiaddr, on: bool) -> Result<(), FedError> {
        let (key, dial) = parse_pin(addr)?;
        let peer = peer_of(&key);
        if on {
            self.net.allow(peer, true).await;
        }
        let addrs: Vec<String> = dial.iter().map(ToString::to_string).collect();
        self.call(Command::Pin { key, addrs, on }).await;
        if !on {
            self.net.remove_peer(peer).await;
            self.net.allow(peer, false).await;
        }
        Ok(())
    }

    /// Stops the network.
    pub async fn shutdown(&self) {
        self.net.shutdown().await;
    }

    async fn call(&self, command: Command) -> Option<CommandResult> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((command, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sends a browser's signal to a user of another node; answers when that node
    /// delivered it or refused.
    pub async fn relay_signal(&self, s: OutSignal) -> Result<(), RelayError> {
        let node = s.to.node.clone();
        match self.call(Command::Signal(s)).await {
            Some(CommandResult::Signal(r)) => r,
            _ => Err(RelayError::Unreachable(node)),
        }
    }

    /// Joins a local user to a group of another node through an invite code.
    pub async fn join_remote(&self, home: &NodeName, code: &str, user: &UserId) -> Result<GroupId, RpcError> {
        let command = Command::Join { home: home.clone(), code: code.to_owned(), user: user.clone() };
        match self.call(command).await {
            Some(CommandResult::Joined(r)) => r,
            _ => Err(RpcError::Internal),
        }
    }

    /// Makes sure `name` is bound to a key (in open mode, by verifying its HTTPS origin).
    pub async fn discover(&self, name: &NodeName) -> Result<(), String> {
        match self.call(Command::Discover(name.clone())).await {
            Some(CommandResult::Discovered(r)) => r,
            _ => Err("federation is not running".into()),
        }
    }
}

/// Starts the network and the driver. Returns the handle; its addresses end in `/p2p/<id>`.
pub async fn start(core: Arc<Core>, announce: mpsc::Receiver<Announce>, cfg: FedConfig, sfu: Option<CascadeSfu>) -> Result<Federation, FedError> {
    let signer = core.signer().clone();
    let stored = core.store.stored_state()?;
    let mut pins = Vec::new();
    for text in stored.pins.iter() {
        match text.parse::<Multiaddr>() {
            Ok(a) => pins.push(a),
            Err(_) => tracing::warn!(pin = %text, "ignoring a stored pin that is not a multiaddr"),
        }
    }
    pins.extend(cfg.pins.iter().cloned());
    let mut pinned: Vec<(NodeKey, Vec<String>)> = Vec::new();
    for a in &pins {
        let (key, addr) = parse_pin(a)?;
        let addr = addr.map(|a| a.to_string());
        match pinned.iter_mut().find(|(k, _)| *k == key) {
            Some((_, addrs)) => addrs.extend(addr),
            None => pinned.push((key, addr.into_iter().collect())),
        }
    }
    let mut blocked_keys = Vec::new();
    let mut blocked_names = Vec::new();
    for b in stored.blocks.iter().chain(cfg.blocks.iter()) {
        if let Ok(peer) = b.parse::<PeerId>()
            && let Some(k) = key_of(&peer)
        {
            blocked_keys.push(k);
        } else if let Ok(name) = NodeName::new(b) {
            blocked_names.push(name);
        } else {
            tracing::warn!(block = %b, "ignoring a block that is neither a PeerId nor a node name");
        }
    }
    let net_cfg = NetConfig {
        seed: signer.seed(),
        listen: cfg.listen.clone(),
        // The driver dials what the machine asks for (pins with addresses, vouched cards).
        peers: Vec::new(),
        allow: (cfg.mode == Mode::Closed).then(|| pinned.iter().map(|(k, _)| peer_of(k)).collect()),
        block: blocked_keys.iter().map(peer_of).collect(),
        limits: cfg.limits,
    };
    let (net, events) = Net::start(net_cfg).await.map_err(|e| FedError::Net(e.to_string()))?;
    let listening = net.listen_addrs().await;
    let card_addrs: Vec<String> = listening.iter().filter_map(|a| public_addr(a, cfg.lan_ip)).map(|a| a.to_string()).collect();
    let mut mcfg = machine::Config::new(core.me().clone(), cfg.mode);
    mcfg.cascade = sfu.is_some();
    if let Some(r) = cfg.resync {
        mcfg.resync = r.as_millis() as u64;
    }
    mcfg.seed = u64::from_le_bytes(crate::time::random_16()[..8].try_into().expect("8 bytes"));
    let start = machine::Start { url: cfg.url.clone(), addrs: card_addrs, pins: pinned, blocked_keys, blocked_names, stored };
    let m = machine::Machine::new(mcfg, signer, start, driver::now_ms());
    let card = Arc::new(m.card().to_vec());
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let verifier = wellknown::Verifier::new(&cfg.resolve, &cfg.extra_ca).map_err(FedError::Config)?;
    let (sfu, links) = match sfu {
        Some((sfu, links)) => (Some(sfu), links),
        None => (None, mpsc::channel(1).1),
    };
    driver::spawn(m, net.clone(), events, core, announce, cmd_rx, verifier, sfu, links);
    let me = net.local_peer_id();
    let addrs = listening.into_iter().map(|a| a.with_p2p(me).unwrap_or_else(|a| a)).collect();
    Ok(Federation { commands: cmd_tx, card, addrs: Arc::new(addrs), net, mode: cfg.mode })
}

/// The address to publish for a listen address: a listener on all interfaces is published
/// with the LAN address, if known, else not at all.
fn public_addr(a: &Multiaddr, lan: Option<std::net::IpAddr>) -> Option<Multiaddr> {
    let unspecified = a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    if !unspecified {
        return Some(a.clone());
    }
    let lan = lan?;
    Some(
        a.iter()
            .map(|p| match (p, lan) {
                (Protocol::Ip4(_), std::net::IpAddr::V4(v4)) => Protocol::Ip4(v4),
                (Protocol::Ip6(_), std::net::IpAddr::V6(v6)) => Protocol::Ip6(v6),
                (p, _) => p,
            })
            .collect(),
    )
    .filter(|m: &Multiaddr| !m.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_peer_ids_convert_both_ways() {
        let key = NodeKey::from_bytes(crate::core::Signer::new([7; 32]).node_key().0);
        let peer = peer_of(&key);
        assert_eq!(peer.to_string(), key.peer_id());
        assert_eq!(key_of(&peer), Some(key));
        let pin: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}").parse().unwrap();
        assert_eq!(parse_pin(&pin).unwrap(), (key, Some("/ip4/127.0.0.1/tcp/4001".parse().unwrap())));
        let bare: Multiaddr = format!("/p2p/{peer}").parse().unwrap();
        assert_eq!(parse_pin(&bare).unwrap(), (key, None));
        assert!(parse_pin(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).is_err());
    }
}
