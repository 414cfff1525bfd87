//! The one owner of the node's sled trees: typed keys and values, writes gathered into a
//! [`Batch`] applied in one transaction with one flush, and a flush before any write is
//! reported as done.
//!
//! Nothing else in the node touches a raw tree. Every `async` method that changes state
//! returns only after sled has flushed it to disk, so a write the user was told about
//! survives `kill -9`. `voicechat_store_flushes_total` counts the flushes.

mod accounts;
mod federation;
mod groups;
pub mod keys;
mod records;
mod snapshot;
mod tokens;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use accounts::{RegistrationMode, session_tag};
pub use federation::StoredState;
pub use snapshot::Snapshot;
pub use tokens::{Scope, TokenRecord};
pub use keys::RecordKey;
pub use records::{
    GroupRecord, InviteRecord, MemberRecord, MemberStatus, PeerRecord, RoomRecord, SessionRecord, Trust, UserRecord,
};

/// The schema this code reads and writes. Versions 1 (before signed records were kept)
/// and 2 (session ids stored in plain text) are upgraded in place when opened; any other
/// version is refused.
pub const SCHEMA_VERSION: u32 = 3;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing to create exists already.
    #[error("already exists")]
    Conflict,
    /// The thing to change does not exist (or no longer does).
    #[error("not found")]
    NotFound,
    /// An invite that can no longer be used.
    #[error("invite is no longer usable")]
    InviteGone,
    /// The data dir was written by another schema version.
    #[error("data dir has schema version {found}, this build reads {SCHEMA_VERSION}")]
    Schema {
        /// What the data dir says.
        found: u32,
    },
    /// Another process (a running node) holds the data dir.
    #[error("the data dir is in use by another process")]
    Locked,
    /// A stored value did not decode: a bug or a damaged disk.
    #[error("corrupt value in tree {0}")]
    Corrupt(&'static str),
    /// sled failed (disk full, I/O error).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own record types always serialise; a failure here is a programming error.
    serde_json::to_vec(v).expect("records serialise")
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt(tree))
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// The trees, in the order of [`Store::all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum T {
    Users,
    Sessions,
    Groups,
    Members,
    UserGroups,
    Rooms,
    Invites,
    Cards,
    Records,
    Floors,
    Pins,
    Blocks,
    UserBlocks,
    Tokens,
    Settings,
    OidcLinks,
}

const TREES: [(T, &str); 16] = [
    (T::Users, "users"),
    (T::Sessions, "sessions"),
    (T::Groups, "groups"),
    (T::Members, "members"),
    (T::UserGroups, "user_groups"),
    (T::Rooms, "rooms"),
    (T::Invites, "invites"),
    // Named `peers` and `dial` since schema 1.
    (T::Cards, "peers"),
    (T::Records, "records"),
    (T::Floors, "floors"),
    (T::Pins, "dial"),
    (T::Blocks, "blocks"),
    (T::UserBlocks, "user_blocks"),
    (T::Tokens, "admin_tokens"),
    // Node-wide settings changed at run time (registration mode, who is admin).
    (T::Settings, "settings"),
    // `<provider>\0<sub>` → local user name: identities that sign in as an account.
    (T::OidcLinks, "oidc_links"),
];

/// Writes to apply together: one transaction over every tree they touch, one flush.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn put(&mut self, t: T, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((t, key.into(), Some(value.into())));
    }

    pub(crate) fn del(&mut self, t: T, key: impl Into<Vec<u8>>) {
        self.ops.push((t, key.into(), None));
    }

    /// Appends another batch's writes after this one's.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

/// The node's storage. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Batches apply under the read side; a snapshot reads every tree under the write
    /// side, so it never sees half a batch.
    gate: std::sync::Arc<std::sync::RwLock<()>>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir.join("db")).open().map_err(|e| match e {
            // sled reports a held lock only as an I/O error with this text.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => StoreError::Locked,
            e => StoreError::Sled(e),
        })?;
        let meta = db.open_tree("meta")?;
        let mut before_admins = false;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt("meta"))?);
                match found {
                    SCHEMA_VERSION => {}
                    // Version 1 kept the last seq of every subject in `seqs`, never pruned;
                    // version 2 keeps the signed records themselves (`records`), whose seqs
                    // replace it. Groups homed here get their records signed at start.
                    // Version 2 keyed sessions by the cookie itself; version 3 by its SHA-256.
                    // Old sessions cannot be rekeyed without keeping them readable, so they
                    // end: everyone logs in once more.
                    1 | 2 => {
                        before_admins = true;
                        if found == 1 {
                            db.drop_tree("seqs")?;
                        }
                        db.drop_tree("sessions")?;
                        tracing::info!(from = found, to = SCHEMA_VERSION, "upgraded the store");
                    }
                    found => return Err(StoreError::Schema { found }),
                }
            }
        }
        let trees = TREES.iter().map(|(_, name)| db.open_tree(name)).collect::<Result<Vec<_>, _>>()?;
        let store = Self { db, trees, flushes: Default::default(), gate: Default::default() };
        if before_admins {
            // Nodes from before administrators existed: the oldest account administers
            // (else the next sign-up would, being the first to claim it).
            store.adopt_oldest_admin()?;
            meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            store.db.flush()?;
        }
        Ok(store)
    }

    pub(crate) fn tree(&self, t: T) -> &sled::Tree {
        &self.trees[t as usize]
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        metrics::counter!("voicechat_store_flushes_total").increment(1);
        self.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes since this store was opened.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a batch atomically and flushes once. An empty batch writes nothing.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        let guard = self.gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        trees.as_slice().transaction(|tx| {
            for (t, k, v) in &batch.ops {
                let tree = &tx[*t as usize];
                match v {
                    Some(v) => tree.insert(k.as_slice(), v.as_slice())?,
                    None => tree.remove(k.as_slice())?,
                };
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        drop(guard);
        self.flush().await
    }
}

#[cfg(test)]
mod tests;
