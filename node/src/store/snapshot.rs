//! A consistent copy of every tree (for `voicechat backup`), and loading one into a
//! fresh store (for `voicechat restore`).

use super::{SCHEMA_VERSION, Store, StoreError};

/// One tree's entries, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree of a store at one moment: `(tree name, entries)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Trees by name, in sled's order.
    pub trees: Vec<(Vec<u8>, Entries)>,
}

impl Snapshot {
    /// The schema version recorded in the copied `meta` tree.
    pub fn schema_version(&self) -> Option<u32> {
        let (_, meta) = self.trees.iter().find(|(name, _)| name == b"meta")?;
        let (_, v) = meta.iter().find(|(k, _)| k == b"schema_version")?;
        Some(u32::from_be_bytes(v.as_slice().try_into().ok()?))
    }

    /// Entries in all trees.
    pub fn len(&self) -> usize {
        self.trees.iter().map(|(_, kv)| kv.len()).sum()
    }

    /// Whether no tree has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// sled's own tree, which holds nothing of ours.
const DEFAULT_TREE: &[u8] = b"__sled__default";

impl Store {
    /// Copies every tree while no batch is being applied, so the copy never holds half
    /// of one. Writers wait for the copy (it is in memory: milliseconds for a community).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let _gate = self.gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            if name.as_ref() == DEFAULT_TREE {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let kv = tree
                .iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<Vec<_>, _>>()?;
            trees.push((name.to_vec(), kv));
        }
        Ok(Snapshot { trees })
    }

    /// Loads a snapshot into this store, which must hold no data yet, then flushes.
    /// Refuses a snapshot of another schema version.
    pub async fn load_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        match snap.schema_version() {
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(StoreError::Schema { found }),
            None => return Err(StoreError::Corrupt("meta")),
        }
        if self.trees.iter().any(|t| !t.is_empty()) {
            return Err(StoreError::Conflict);
        }
        for (name, kv) in &snap.trees {
            let tree = self.db.open_tree(name)?;
            for (k, v) in kv {
                tree.insert(k.as_slice(), v.as_slice())?;
            }
        }
        self.flush().await
    }
}
