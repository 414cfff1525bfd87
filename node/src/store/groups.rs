//! Groups, members, rooms and invites: typed reads, the writes a [`Batch`] can carry, and
//! the few operations that need a check inside the transaction (creating a group, spending
//! an invite).

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use voicechat_protocol::ids::{GroupId, RoomId, UserId};

use super::keys::{self, RecordKey, id16};
use super::{Batch, GroupRecord, InviteRecord, MemberRecord, RoomRecord, Store, StoreError, T, abort, dec, enc};

impl Batch {
    /// Creates or replaces a group.
    pub fn put_group(&mut self, g: &GroupRecord) {
        self.put(T::Groups, g.id.as_bytes().to_vec(), enc(g));
    }

    /// Adds a member or changes their record, with the reverse index.
    pub fn put_member(&mut self, group: &GroupId, m: &MemberRecord) {
        self.put(T::Members, keys::member(group, &m.user), enc(m));
        self.put(T::UserGroups, keys::user_group(&m.user, group), Vec::new());
    }

    /// Removes a member and the reverse index entry.
    pub fn remove_member(&mut self, group: &GroupId, user: &UserId) {
        self.del(T::Members, keys::member(group, user));
        self.del(T::UserGroups, keys::user_group(user, group));
    }

    /// Creates or renames a room.
    pub fn put_room(&mut self, r: &RoomRecord) {
        self.put(T::Rooms, keys::room(&r.group, &r.id), enc(r));
    }

    /// Deletes a room.
    pub fn remove_room(&mut self, group: &GroupId, room: &RoomId) {
        self.del(T::Rooms, keys::room(group, room));
    }

    /// Keeps a signed record exactly as signed.
    pub fn put_record(&mut self, key: &RecordKey, envelope: &[u8]) {
        self.put(T::Records, key.bytes(), envelope.to_vec());
    }

    /// Stores a new or changed invite.
    pub fn put_invite(&mut self, i: &InviteRecord) {
        self.put(T::Invites, i.code.as_bytes().to_vec(), enc(i));
    }
}

impl Store {
    /// Adds to `batch` the removal of a group with everything of it: members (and their
    /// index), rooms, invites and signed records.
    pub fn delete_group_into(&self, batch: &mut Batch, id: &GroupId) -> Result<(), StoreError> {
        batch.del(T::Groups, id.as_bytes().to_vec());
        for m in self.members(id)? {
            batch.remove_member(id, &m.user);
        }
        for k in self.tree(T::Rooms).scan_prefix(id.as_bytes()).keys() {
            batch.del(T::Rooms, k?.to_vec());
        }
        for i in self.invites(id)? {
            batch.del(T::Invites, i.code.into_bytes());
        }
        for k in self.tree(T::Records).scan_prefix(id.as_bytes()).keys() {
            batch.del(T::Records, k?.to_vec());
        }
        Ok(())
    }

    /// Creates a group with its first member and their signed records, atomically;
    /// `Conflict` if the id is taken.
    pub async fn create_group(&self, g: &GroupRecord, owner: &MemberRecord, records: Batch) -> Result<(), StoreError> {
        let (groups, members, index, recs) =
            (self.tree(T::Groups), self.tree(T::Members), self.tree(T::UserGroups), self.tree(T::Records));
        (groups, members, index, recs).transaction(|(gt, mt, ut, rt)| {
            if gt.get(g.id.as_bytes())?.is_some() {
                return abort(StoreError::Conflict);
            }
            gt.insert(g.id.as_bytes(), enc(g))?;
            mt.insert(keys::member(&g.id, &owner.user), enc(owner))?;
            ut.insert(keys::user_group(&owner.user, &g.id), &[])?;
            for (t, k, v) in &records.ops {
                if let (T::Records, Some(v)) = (t, v) {
                    rt.insert(k.as_slice(), v.as_slice())?;
                }
            }
            Ok(())
        })?;
        self.flush().await
    }

    /// One group.
    pub fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.tree(T::Groups).get(id.as_bytes())?.map(|v| dec("groups", &v)).transpose()
    }

    /// Every group this node knows (its own and remote ones).
    pub fn all_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.tree(T::Groups).iter().values().map(|v| dec("groups", &v?)).collect()
    }

    /// A user's membership in a group.
    pub fn member(&self, group: &GroupId, user: &UserId) -> Result<Option<MemberRecord>, StoreError> {
        self.tree(T::Members).get(keys::member(group, user))?.map(|v| dec("members", &v)).transpose()
    }

    /// Every member of a group, ordered by user id.
    pub fn members(&self, group: &GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.tree(T::Members).scan_prefix(group.as_bytes()).values().map(|v| dec("members", &v?)).collect()
    }

    /// The groups a user has a membership in, whatever its status.
    pub fn groups_of(&self, user: &UserId) -> Result<Vec<GroupId>, StoreError> {
        let prefix = keys::user_prefix(user);
        self.tree(T::UserGroups)
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k?;
                let raw = id16(&k[prefix.len()..]).ok_or(StoreError::Corrupt("user_groups"))?;
                Ok(GroupId::from_bytes(raw))
            })
            .collect()
    }

    /// One room.
    pub fn room(&self, group: &GroupId, room: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        self.tree(T::Rooms).get(keys::room(group, room))?.map(|v| dec("rooms", &v)).transpose()
    }

    /// A group's rooms, oldest first.
    pub fn rooms(&self, group: &GroupId) -> Result<Vec<RoomRecord>, StoreError> {
        let mut rooms: Vec<RoomRecord> = self
            .tree(T::Rooms)
            .scan_prefix(group.as_bytes())
            .values()
            .map(|v| dec("rooms", &v?))
            .collect::<Result<_, _>>()?;
        rooms.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(rooms)
    }

    /// One invite by code.
    pub fn invite(&self, code: &str) -> Result<Option<InviteRecord>, StoreError> {
        self.tree(T::Invites).get(code.as_bytes())?.map(|v| dec("invites", &v)).transpose()
    }

    /// A group's invites, newest first.
    pub fn invites(&self, group: &GroupId) -> Result<Vec<InviteRecord>, StoreError> {
        let mut out = Vec::new();
        for v in self.tree(T::Invites).iter().values() {
            let i: InviteRecord = dec("invites", &v?)?;
            if &i.group == group {
                out.push(i);
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        Ok(out)
    }

    /// Spends one use of an invite and adds `m` to its group with its signed records,
    /// atomically: two users racing for the last use cannot both get in. `Conflict` if
    /// they are a member already.
    pub async fn redeem_invite(&self, code: &str, m: &MemberRecord, now: u64, records: Batch) -> Result<GroupId, StoreError> {
        let trees = (
            self.tree(T::Invites),
            self.tree(T::Groups),
            self.tree(T::Members),
            self.tree(T::UserGroups),
            self.tree(T::Records),
        );
        let group = trees.transaction(|(it, gt, mt, ut, rt)| {
            let Some(raw) = it.get(code.as_bytes())? else {
                return abort(StoreError::NotFound);
            };
            let mut inv: InviteRecord = dec("invites", &raw).map_err(ConflictableTransactionError::Abort)?;
            if !inv.usable(now) || gt.get(inv.group.as_bytes())?.is_none() {
                return abort(StoreError::InviteGone);
            }
            if mt.get(keys::member(&inv.group, &m.user))?.is_some() {
                return abort(StoreError::Conflict);
            }
            inv.uses += 1;
            it.insert(code.as_bytes(), enc(&inv))?;
            mt.insert(keys::member(&inv.group, &m.user), enc(m))?;
            ut.insert(keys::user_group(&m.user, &inv.group), &[])?;
            for (t, k, v) in &records.ops {
                if let (T::Records, Some(v)) = (t, v) {
                    rt.insert(k.as_slice(), v.as_slice())?;
                }
            }
            Ok(inv.group)
        })?;
        self.flush().await?;
        Ok(group)
    }
}
