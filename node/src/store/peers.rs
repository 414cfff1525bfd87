//! What the node keeps about the federation: the nodes it knows (name → key, from their
//! signed node cards), the addresses the operator told it to dial, and the last `seq`
//! accepted per record subject, so a replayed record is refused even after a restart.

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{GroupId, NodeName};
use voicechat_protocol::keys::NodeKey;

use super::{Store, StoreError, dec, enc};

/// A node known from its signed node card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its public name.
    pub name: NodeName,
    /// Its ed25519 key, hex.
    pub key: String,
    /// Its web origin.
    pub url: String,
    /// Its libp2p addresses.
    pub addrs: Vec<String>,
    /// The card's seq.
    pub seq: u64,
    /// The signed card itself (hex), forwarded to other peers so they learn this node.
    #[serde(default)]
    pub card: String,
}

impl PeerRecord {
    /// The node's key, if the stored hex is well formed.
    pub fn node_key(&self) -> Option<NodeKey> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.key, &mut key).ok()?;
        Some(NodeKey::from_bytes(key))
    }
}

impl Store {
    /// A known node by name.
    pub fn peer(&self, name: &NodeName) -> Result<Option<PeerRecord>, StoreError> {
        self.peers.get(name.as_str())?.map(|v| dec("peers", &v)).transpose()
    }

    /// Every known node.
    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.peers.iter().values().map(|v| dec("peers", &v?)).collect()
    }

    /// Records (or updates) a node's card. The caller has checked the name is not bound
    /// to another key.
    pub async fn put_peer(&self, p: &PeerRecord) -> Result<(), StoreError> {
        self.peers.insert(p.name.as_str(), enc(p))?;
        self.flush().await
    }

    /// The last accepted seq of a persistent record subject.
    pub fn seq(&self, subject: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.seqs.get(subject)?.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Every stored seq, to seed the replay check at start.
    pub fn seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.seqs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let k = String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("seqs"))?;
                let v: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("seqs"))?;
                Ok((k, u64::from_be_bytes(v)))
            })
            .collect()
    }

    /// Remembers `seq` for `subject` (written with the next flush).
    pub fn put_seq(&self, subject: &str, seq: u64) -> Result<(), StoreError> {
        self.seqs.insert(subject, &seq.to_be_bytes())?;
        Ok(())
    }

    /// Adds an address to dial at every start.
    pub async fn add_dial(&self, addr: &str) -> Result<(), StoreError> {
        self.dial.insert(addr, &[])?;
        self.flush().await
    }

    /// Forgets a dial address; `NotFound` if it was not there.
    pub async fn remove_dial(&self, addr: &str) -> Result<(), StoreError> {
        self.dial.remove(addr)?.ok_or(StoreError::NotFound)?;
        self.flush().await
    }

    /// The addresses to dial.
    pub fn dials(&self) -> Result<Vec<String>, StoreError> {
        self.dial
            .iter()
            .keys()
            .map(|k| String::from_utf8(k?.to_vec()).map_err(|_| StoreError::Corrupt("dial")))
            .collect()
    }

    /// Every group this node knows (its own and remote ones).
    pub fn all_groups(&self) -> Result<Vec<GroupId>, StoreError> {
        self.groups
            .iter()
            .keys()
            .map(|k| {
                let raw: [u8; 16] = k?.as_ref().try_into().map_err(|_| StoreError::Corrupt("groups"))?;
                Ok(GroupId::from_bytes(raw))
            })
            .collect()
    }

    /// Puts a group learned from its home node, creating or renaming it.
    pub async fn put_group(&self, g: &super::GroupRecord) -> Result<(), StoreError> {
        self.groups.insert(g.id.as_bytes(), enc(g))?;
        self.flush().await
    }
}
