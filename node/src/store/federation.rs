//! What the node keeps about the federation: the nodes it knows (name → key, from their
//! signed cards, with why the name is believed), the operator's pins and blocks, the signed
//! records of every group it holds (exactly as signed), the replay floors of groups it
//! forgot, and each user's blocked nodes.

use voicechat_protocol::ids::{GroupId, NodeName, UserId};

use super::keys::{self, RecordKey, id16};
use super::{Batch, PeerRecord, Store, StoreError, T, dec, enc};

impl Batch {
    /// Records (or updates) a node's card and binding.
    pub fn put_card(&mut self, p: &PeerRecord) {
        self.put(T::Cards, p.name.as_str().as_bytes().to_vec(), enc(p));
    }

    /// Forgets a node's card and binding.
    pub fn remove_card(&mut self, name: &NodeName) {
        self.del(T::Cards, name.as_str().as_bytes().to_vec());
    }

    /// Remembers the highest seq seen of a group this node forgot, so an old record of it
    /// replayed later is refused.
    pub fn put_floor(&mut self, group: &GroupId, seq: u64) {
        self.put(T::Floors, group.as_bytes().to_vec(), seq.to_be_bytes().to_vec());
    }

    /// Drops a group's replay floor (it is known again).
    pub fn remove_floor(&mut self, group: &GroupId) {
        self.del(T::Floors, group.as_bytes().to_vec());
    }
}

/// Everything federation needs at start, read in one go.
#[derive(Debug, Default)]
pub struct StoredState {
    /// Known nodes.
    pub cards: Vec<PeerRecord>,
    /// Every signed group record, exactly as signed.
    pub records: Vec<Vec<u8>>,
    /// Replay floors of forgotten groups.
    pub floors: Vec<(GroupId, u64)>,
    /// Operator pins (multiaddrs ending in `/p2p/<id>`, or just `/p2p/<id>`).
    pub pins: Vec<String>,
    /// Operator blocks (node names or PeerIds, as typed).
    pub blocks: Vec<String>,
    /// Groups stored without their signed `group_info` (written before signed records
    /// were kept), with their home: federation syncs them from it.
    pub unsigned: Vec<(GroupId, NodeName)>,
}

impl Store {
    /// A known node by name.
    pub fn peer(&self, name: &NodeName) -> Result<Option<PeerRecord>, StoreError> {
        self.tree(T::Cards).get(name.as_str())?.map(|v| dec("peers", &v)).transpose()
    }

    /// Every known node.
    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.tree(T::Cards).iter().values().map(|v| dec("peers", &v?)).collect()
    }

    /// The stored envelope of one record subject.
    pub fn record(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(T::Records).get(key.bytes())?.map(|v| v.to_vec()))
    }

    /// Every signed record of a group.
    pub fn group_records(&self, group: &GroupId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree(T::Records).scan_prefix(group.as_bytes()).values().map(|v| Ok(v?.to_vec())).collect()
    }

    /// Number of stored signed records (all groups).
    pub fn record_count(&self) -> usize {
        self.tree(T::Records).len()
    }

    /// Everything federation loads at start.
    pub fn stored_state(&self) -> Result<StoredState, StoreError> {
        let records = self.tree(T::Records).iter().values().map(|v| Ok(v?.to_vec())).collect::<Result<_, StoreError>>()?;
        let floors = self
            .tree(T::Floors)
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let g = id16(&k).ok_or(StoreError::Corrupt("floors"))?;
                let seq: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("floors"))?;
                Ok((GroupId::from_bytes(g), u64::from_be_bytes(seq)))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut unsigned = Vec::new();
        for g in self.all_groups()? {
            if self.record(&RecordKey::Info(g.id))?.is_none() {
                unsigned.push((g.id, g.home));
            }
        }
        Ok(StoredState { cards: self.peers()?, records, floors, pins: self.pins()?, blocks: self.blocks()?, unsigned })
    }

    /// Adds an operator pin (an address with `/p2p/<id>`, or `/p2p/<id>` alone).
    pub async fn add_pin(&self, addr: &str) -> Result<(), StoreError> {
        self.tree(T::Pins).insert(addr, &[])?;
        self.flush().await
    }

    /// Removes a pin; `NotFound` if it was not there.
    pub async fn remove_pin(&self, addr: &str) -> Result<(), StoreError> {
        self.tree(T::Pins).remove(addr)?.ok_or(StoreError::NotFound)?;
        self.flush().await
    }

    /// The operator's pins.
    pub fn pins(&self) -> Result<Vec<String>, StoreError> {
        text_keys(self.tree(T::Pins), "dial")
    }

    /// Blocks a node name or PeerId; also forgets a card bound to it.
    pub async fn add_block(&self, what: &str, card: Option<&NodeName>) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.put(T::Blocks, what.as_bytes().to_vec(), Vec::new());
        if let Some(name) = card {
            b.remove_card(name);
        }
        self.commit(b).await
    }

    /// Lifts a block; `NotFound` if there was none.
    pub async fn remove_block(&self, what: &str) -> Result<(), StoreError> {
        self.tree(T::Blocks).remove(what)?.ok_or(StoreError::NotFound)?;
        self.flush().await
    }

    /// The operator's blocks.
    pub fn blocks(&self) -> Result<Vec<String>, StoreError> {
        text_keys(self.tree(T::Blocks), "blocks")
    }

    /// Whether `user` blocked invitations from `node`.
    pub fn user_blocks_node(&self, user: &UserId, node: &NodeName) -> Result<bool, StoreError> {
        Ok(self.tree(T::UserBlocks).contains_key(keys::user_block(user, node))?)
    }

    /// The nodes `user` blocked.
    pub fn user_blocks(&self, user: &UserId) -> Result<Vec<NodeName>, StoreError> {
        let prefix = keys::user_prefix(user);
        self.tree(T::UserBlocks)
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k?;
                let name = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| StoreError::Corrupt("user_blocks"))?;
                NodeName::new(name).map_err(|_| StoreError::Corrupt("user_blocks"))
            })
            .collect()
    }
}

impl Batch {
    /// `user` blocks invitations from `node`.
    pub fn put_user_block(&mut self, user: &UserId, node: &NodeName) {
        self.put(T::UserBlocks, keys::user_block(user, node), Vec::new());
    }

    /// `user` lifts a block.
    pub fn remove_user_block(&mut self, user: &UserId, node: &NodeName) {
        self.del(T::UserBlocks, keys::user_block(user, node));
    }
}

fn text_keys(tree: &sled::Tree, name: &'static str) -> Result<Vec<String>, StoreError> {
    tree.iter().keys().map(|k| String::from_utf8(k?.to_vec()).map_err(|_| StoreError::Corrupt(name))).collect()
}
