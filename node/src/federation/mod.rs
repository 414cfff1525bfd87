//! Federation: this node's part in the network of nodes. `net` is the libp2p transport
//! (swarm, gossipsub, request-response) behind a cheap handle; `inbound` judges and answers
//! what peers send; `apply` turns accepted records into local state and events;
//! `outbound` turns local changes into signed records.
//!
//! Who is the authority for what follows SPEC.md: this node signs its node card, the
//! records of the groups it is home to, and presence and signals of its own users.

mod apply;
mod inbound;
pub mod net;
mod outbound;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use voicechat_protocol::envelope::Envelope;
use voicechat_protocol::ids::{GroupId, NodeName, SessionId, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{NodeCard, Record};
use voicechat_protocol::validate::{Authorities, Validator};

use crate::state::AppState;
use crate::store::StoreError;
use net::{Net, NetConfig};

pub use outbound::SignalError;

/// How long a presence record lives unless refreshed.
pub const PRESENCE_TTL: u64 = 30;
/// How often this node refreshes its users' presence.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The node's federation state. Held by [`AppState`] once the network is up.
pub struct Federation {
    /// The transport.
    pub net: Net,
    key: SigningKey,
    node_key: NodeKey,
    /// In-memory replay state for every kind (persistent kinds are also checked against
    /// the store, which survives restarts).
    validator: Mutex<Validator>,
    last_seq: AtomicU64,
    /// Which connected peer is which node, from their node cards.
    names: Mutex<HashMap<PeerId, NodeName>>,
    /// The latest presence envelope per remote or local session, for sync answers.
    presence: Mutex<HashMap<SessionId, HeldPresence>>,
    /// (peer, reason) pairs already logged, so a misbehaving peer is logged once per reason.
    logged: Mutex<HashSet<(PeerId, &'static str)>>,
    card: Vec<u8>,
}

/// A presence envelope held for sync answers until it expires.
struct HeldPresence {
    group: GroupId,
    expires_at: u64,
    envelope: Vec<u8>,
}

/// Microseconds since the epoch, for seqs.
fn micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The libp2p identity of a node key.
pub fn peer_id_of(key: &NodeKey) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&libp2p::identity::PublicKey::from(ed)))
}

impl Federation {
    /// A fresh seq: strictly increasing, and above anything signed before a restart
    /// (it starts from the clock in microseconds).
    fn next_seq(&self) -> u64 {
        let now = micros();
        let mut prev = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_seq.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Signs a record as this node.
    fn seal(&self, record: &Record) -> Vec<u8> {
        Envelope::seal(record, &self.key).encode()
    }

    /// The node name of a peer: from its card this run, else from the cards stored
    /// before (a peer's card may still be on its way when its first request arrives).
    fn name_of(&self, state: &AppState, peer: &PeerId) -> Option<NodeName> {
        if let Some(name) = self.names.lock().expect("names lock").get(peer) {
            return Some(name.clone());
        }
        let stored = state
            .store
            .peers()
            .ok()?
            .into_iter()
            .find(|p| p.node_key().and_then(|k| peer_id_of(&k)) == Some(*peer))?;
        self.names.lock().expect("names lock").insert(*peer, stored.name.clone());
        Some(stored.name)
    }

    /// Logs a peer's misbehaviour once per reason.
    fn log_once(&self, peer: PeerId, reason: &'static str, detail: &str) {
        if self.logged.lock().expect("logged lock").insert((peer, reason)) {
            tracing::warn!(%peer, reason, detail, "dropped a record from a peer");
        }
    }
}

/// The node's view of who may sign what, read from its store.
struct StoreAuth<'a>(&'a AppState);

impl Authorities for StoreAuth<'_> {
    fn node_key(&self, node: &NodeName) -> Option<NodeKey> {
        if node == &self.0.settings.node_name {
            return self.0.fed().map(|f| f.node_key);
        }
        self.0.store.peer(node).ok()??.node_key()
    }

    fn group_home(&self, group: &GroupId) -> Option<NodeName> {
        self.0.store.group(group).ok()?.map(|g| g.home)
    }

    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.0.store.member(group, user).ok().flatten().is_some()
    }
}

/// What the node needs to join the network.
pub struct FedConfig {
    /// The node key's secret seed.
    pub seed: [u8; 32],
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and keep dialling.
    pub peers: Vec<Multiaddr>,
}

/// Starts the network, binds it to `state` and spawns the inbound loop, the heartbeat and
/// the presence sweeper. Returns the addresses it listens on, each ending in `/p2p/<id>`.
pub async fn start(state: &AppState, cfg: FedConfig) -> Result<Vec<Multiaddr>, FedError> {
    let key = SigningKey::from_bytes(&cfg.seed);
    let (net, events) = Net::start(NetConfig { seed: cfg.seed, listen: cfg.listen, peers: cfg.peers })
        .await
        .map_err(|e| FedError::Net(e.to_string()))?;
    let addrs = net.listen_addrs().await;
    let node_key = NodeKey::from_signing_key(&key);
    let mut fed = Federation {
        net: net.clone(),
        key,
        node_key,
        validator: Mutex::new(Validator::new()),
        last_seq: AtomicU64::new(micros()),
        names: Mutex::new(HashMap::new()),
        presence: Mutex::new(HashMap::new()),
        logged: Mutex::new(HashSet::new()),
        card: Vec::new(),
    };
    let card = NodeCard {
        key: node_key,
        seq: fed.next_seq(),
        url: state.settings.public_url.clone(),
        name: state.settings.node_name.clone(),
        addrs: addrs.iter().map(ToString::to_string).take(voicechat_protocol::records::MAX_ADDRS).collect(),
    };
    fed.card = fed.seal(&Record::NodeCard(card));
    state.set_federation(Arc::new(fed));
    for group in state.store.all_groups()? {
        let _ = net.subscribe(&voicechat_protocol::rpc::group_topic(&group)).await;
    }
    tokio::spawn(inbound::run(state.clone(), events));
    tokio::spawn(outbound::heartbeat(state.clone()));
    tokio::spawn(apply::sweep(state.clone()));
    let me = net.local_peer_id();
    Ok(addrs.into_iter().map(|a| a.with_p2p(me).unwrap_or_else(|a| a)).collect())
}

/// Counts a record's fate by kind and verdict.
fn count(kind: &str, verdict: &'static str) {
    metrics::counter!("voicechat_federation_records_total", "kind" => kind.to_owned(), "verdict" => verdict)
        .increment(1);
}

/// Why the federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// libp2p could not listen or dial.
    #[error("network: {0}")]
    Net(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
