//! The one owner of the node's sled trees: typed keys and values, atomic multi-tree
//! writes, and a flush before any write is reported as done.
//!
//! Nothing else in the node touches a raw tree. Every `async` method that changes state
//! returns only after sled has flushed it to disk, so a write the user was told about
//! survives `kill -9`.

mod peers;
mod records;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use voicechat_protocol::ids::{GroupId, RoomId, UserId, UserName};

pub use peers::PeerRecord;
pub use records::{GroupRecord, InviteRecord, MemberRecord, RoomRecord, SessionRecord, UserRecord};
use records::keys;

/// The schema this code reads and writes. Opening a store of another version fails
/// until an explicit upgrade exists for it.
pub const SCHEMA_VERSION: u32 = 1;

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
    /// sled failed (disk full, I/O error, lock held by another process).
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

/// The node's storage. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    sessions: sled::Tree,
    groups: sled::Tree,
    members: sled::Tree,
    user_groups: sled::Tree,
    rooms: sled::Tree,
    invites: sled::Tree,
    peers: sled::Tree,
    seqs: sled::Tree,
    dial: sled::Tree,
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
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| StoreError::Corrupt("meta"))?,
                );
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
        }
        Ok(Self {
            users: db.open_tree("users")?,
            sessions: db.open_tree("sessions")?,
            groups: db.open_tree("groups")?,
            members: db.open_tree("members")?,
            user_groups: db.open_tree("user_groups")?,
            rooms: db.open_tree("rooms")?,
            invites: db.open_tree("invites")?,
            peers: db.open_tree("peers")?,
            seqs: db.open_tree("seqs")?,
            dial: db.open_tree("dial")?,
            db,
        })
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    // ---- users ----

    /// Creates an account; `Conflict` if the name is taken.
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users
            .compare_and_swap(user.name.as_str(), None::<&[u8]>, Some(enc(user)))?
            .map_err(|_| StoreError::Conflict)?;
        self.flush().await
    }

    /// Replaces an existing account.
    pub async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        if !self.users.contains_key(user.name.as_str())? {
            return Err(StoreError::NotFound);
        }
        self.users.insert(user.name.as_str(), enc(user))?;
        self.flush().await
    }

    /// One account.
    pub fn user(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(name.as_str())?.map(|v| dec("users", &v)).transpose()
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users.iter().values().map(|v| dec("users", &v?)).collect()
    }

    // ---- sessions ----

    /// Stores a new session under its cookie value.
    pub async fn put_session(&self, id: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(id, enc(s))?;
        self.flush().await
    }

    /// A session, if it exists (expired ones included: the caller checks the time).
    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions.get(id)?.map(|v| dec("sessions", &v)).transpose()
    }

    /// Ends one session.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.sessions.remove(id)?;
        self.flush().await
    }

    /// Ends every session of `user` except `keep`; also drops expired sessions of anyone.
    pub async fn end_sessions(
        &self,
        user: &UserName,
        keep: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let s: SessionRecord = dec("sessions", &v)?;
            let mine = &s.user == user && keep.is_none_or(|keep| keep.as_bytes() != &*k);
            if mine || s.expires_at <= now {
                self.sessions.remove(k)?;
            }
        }
        self.flush().await
    }

    // ---- groups and members ----

    /// Creates a group with its first member (the owner), atomically.
    pub async fn create_group(&self, g: &GroupRecord, owner: &MemberRecord) -> Result<(), StoreError> {
        (&self.groups, &self.members, &self.user_groups).transaction(|(gt, mt, ut)| {
            if gt.get(g.id.as_bytes())?.is_some() {
                return abort(StoreError::Conflict);
            }
            gt.insert(g.id.as_bytes(), enc(g))?;
            put_member_tx(mt, ut, &g.id, owner)?;
            Ok(())
        })?;
        self.flush().await
    }

    /// One group.
    pub fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.groups.get(id.as_bytes())?.map(|v| dec("groups", &v)).transpose()
    }

    /// Renames (or otherwise replaces) an existing group.
    pub async fn update_group(&self, g: &GroupRecord) -> Result<(), StoreError> {
        if !self.groups.contains_key(g.id.as_bytes())? {
            return Err(StoreError::NotFound);
        }
        self.groups.insert(g.id.as_bytes(), enc(g))?;
        self.flush().await
    }

    /// Deletes a group with its members, rooms and invites, atomically.
    pub async fn delete_group(&self, id: &GroupId) -> Result<(), StoreError> {
        let members = self.members(id)?;
        let rooms: Vec<_> = self.rooms.scan_prefix(id.as_bytes()).keys().collect::<Result<_, _>>()?;
        let invites: Vec<_> = self.invites(id)?.into_iter().map(|i| i.code).collect();
        (&self.groups, &self.members, &self.user_groups, &self.rooms, &self.invites).transaction(
            |(gt, mt, ut, rt, it)| {
                gt.remove(id.as_bytes())?;
                for m in &members {
                    mt.remove(keys::member(id, &m.user))?;
                    ut.remove(keys::user_group(&m.user, id))?;
                }
                for r in &rooms {
                    rt.remove(r.clone())?;
                }
                for c in &invites {
                    it.remove(c.as_bytes())?;
                }
                Ok(())
            },
        )?;
        self.flush().await
    }

    /// A user's membership in a group.
    pub fn member(&self, group: &GroupId, user: &UserId) -> Result<Option<MemberRecord>, StoreError> {
        self.members.get(keys::member(group, user))?.map(|v| dec("members", &v)).transpose()
    }

    /// Every member of a group, ordered by user id.
    pub fn members(&self, group: &GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.members.scan_prefix(group.as_bytes()).values().map(|v| dec("members", &v?)).collect()
    }

    /// The groups a user belongs to.
    pub fn groups_of(&self, user: &UserId) -> Result<Vec<GroupId>, StoreError> {
        let prefix = keys::user_prefix(user);
        self.user_groups
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k?;
                let raw: [u8; 16] =
                    k[prefix.len()..].try_into().map_err(|_| StoreError::Corrupt("user_groups"))?;
                Ok(GroupId::from_bytes(raw))
            })
            .collect()
    }

    /// Adds a member or changes their role.
    pub async fn put_member(&self, group: &GroupId, m: &MemberRecord) -> Result<(), StoreError> {
        (&self.groups, &self.members, &self.user_groups).transaction(|(gt, mt, ut)| {
            if gt.get(group.as_bytes())?.is_none() {
                return abort(StoreError::NotFound);
            }
            put_member_tx(mt, ut, group, m)
        })?;
        self.flush().await
    }

    /// Several membership changes at once (e.g. handing over ownership).
    pub async fn put_members(&self, group: &GroupId, ms: &[MemberRecord]) -> Result<(), StoreError> {
        (&self.members, &self.user_groups).transaction(|(mt, ut)| {
            for m in ms {
                put_member_tx(mt, ut, group, m)?;
            }
            Ok(())
        })?;
        self.flush().await
    }

    /// Removes a member; `NotFound` if they were not one.
    pub async fn remove_member(&self, group: &GroupId, user: &UserId) -> Result<(), StoreError> {
        (&self.members, &self.user_groups).transaction(|(mt, ut)| {
            if mt.remove(keys::member(group, user))?.is_none() {
                return abort(StoreError::NotFound);
            }
            ut.remove(keys::user_group(user, group))?;
            Ok(())
        })?;
        self.flush().await
    }

    // ---- rooms ----

    /// Creates or renames a room of an existing group.
    pub async fn put_room(&self, r: &RoomRecord) -> Result<(), StoreError> {
        (&self.groups, &self.rooms).transaction(|(gt, rt)| {
            if gt.get(r.group.as_bytes())?.is_none() {
                return abort(StoreError::NotFound);
            }
            rt.insert(keys::room(&r.group, &r.id), enc(r))?;
            Ok(())
        })?;
        self.flush().await
    }

    /// One room.
    pub fn room(&self, group: &GroupId, room: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        self.rooms.get(keys::room(group, room))?.map(|v| dec("rooms", &v)).transpose()
    }

    /// A group's rooms, oldest first.
    pub fn rooms(&self, group: &GroupId) -> Result<Vec<RoomRecord>, StoreError> {
        let mut rooms: Vec<RoomRecord> = self
            .rooms
            .scan_prefix(group.as_bytes())
            .values()
            .map(|v| dec("rooms", &v?))
            .collect::<Result<_, _>>()?;
        rooms.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(rooms)
    }

    /// Deletes a room; `NotFound` if it did not exist.
    pub async fn delete_room(&self, group: &GroupId, room: &RoomId) -> Result<(), StoreError> {
        if self.rooms.remove(keys::room(group, room))?.is_none() {
            return Err(StoreError::NotFound);
        }
        self.flush().await
    }

    // ---- invites ----

    /// Stores a new or revoked invite.
    pub async fn put_invite(&self, i: &InviteRecord) -> Result<(), StoreError> {
        self.invites.insert(i.code.as_bytes(), enc(i))?;
        self.flush().await
    }

    /// One invite by code.
    pub fn invite(&self, code: &str) -> Result<Option<InviteRecord>, StoreError> {
        self.invites.get(code.as_bytes())?.map(|v| dec("invites", &v)).transpose()
    }

    /// A group's invites, newest first.
    pub fn invites(&self, group: &GroupId) -> Result<Vec<InviteRecord>, StoreError> {
        let mut out = Vec::new();
        for v in self.invites.iter().values() {
            let i: InviteRecord = dec("invites", &v?)?;
            if &i.group == group {
                out.push(i);
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        Ok(out)
    }

    /// Spends one use of an invite and adds `m` to its group, atomically: two users racing
    /// for the last use cannot both get in.
    pub async fn redeem_invite(&self, code: &str, m: &MemberRecord, now: u64) -> Result<GroupId, StoreError> {
        let group = (&self.invites, &self.groups, &self.members, &self.user_groups).transaction(
            |(it, gt, mt, ut)| {
                let Some(raw) = it.get(code.as_bytes())? else {
                    return abort(StoreError::NotFound);
                };
                let mut inv: InviteRecord =
                    dec("invites", &raw).map_err(ConflictableTransactionError::Abort)?;
                if !inv.usable(now) || gt.get(inv.group.as_bytes())?.is_none() {
                    return abort(StoreError::InviteGone);
                }
                if mt.get(keys::member(&inv.group, &m.user))?.is_some() {
                    return abort(StoreError::Conflict);
                }
                inv.uses += 1;
                it.insert(code.as_bytes(), enc(&inv))?;
                put_member_tx(mt, ut, &inv.group, m)?;
                Ok(inv.group)
            },
        )?;
        self.flush().await?;
        Ok(group)
    }
}

fn put_member_tx(
    mt: &TransactionalTree,
    ut: &TransactionalTree,
    group: &GroupId,
    m: &MemberRecord,
) -> TxResult<()> {
    mt.insert(keys::member(group, &m.user), enc(m))?;
    ut.insert(keys::user_group(&m.user, group), &[])?;
    Ok(())
}

#[cfg(test)]
mod tests;
