//! Groups and rooms: create, rename, delete. Each change of a group homed here is stored
//! with its signed record in one batch and announced as that record.

use voicechat_protocol::ids::{GroupId, Role, RoomId, UserId};
use voicechat_protocol::records::{GroupInfo, Membership, Record, RoomInfo};

use super::{Core, CoreError, Effects, GroupDetail, Notice, RoomView, clean_name};
use crate::store::{Batch, GroupRecord, MemberRecord, RecordKey, RoomRecord};
use crate::time::{random_16, unix_now};

/// 403 unless `m` has at least `role`.
pub(super) fn require(m: &MemberRecord, role: Role, what: &str) -> Result<(), CoreError> {
    if m.role >= role {
        Ok(())
    } else {
        Err(CoreError::Forbidden(format!("only a group's {role:?}s may {what}").to_lowercase()))
    }
}

impl Core {
    pub(super) fn sign_info(&self, g: &GroupRecord, deleted: bool) -> Vec<u8> {
        self.signer.seal(|seq| {
            Record::GroupInfo(GroupInfo { seq, home: g.home.clone(), name: g.name.clone(), group: g.id, deleted })
        })
    }

    pub(super) fn sign_room(&self, r: &RoomRecord, deleted: bool) -> Vec<u8> {
        self.signer
            .seal(|seq| Record::RoomInfo(RoomInfo { seq, name: r.name.clone(), room: r.id, group: r.group, stage: r.stage, deleted }))
    }

    pub(super) fn sign_member(&self, group: &GroupId, user: &UserId, role: Option<Role>) -> Vec<u8> {
        self.signer.seal(|seq| Record::Membership(Membership { seq, role, user: user.clone(), group: *group }))
    }

    /// Creates a group; `owner` owns it.
    pub async fn create_group(&self, owner: &UserId, name: &str) -> Result<(GroupDetail, Effects), CoreError> {
        let now = unix_now();
        let g = GroupRecord { id: GroupId::from_bytes(random_16()), name: clean_name(name)?, home: self.me.clone(), created_at: now };
        let m = MemberRecord::active(owner.clone(), Role::Owner, now);
        let info = self.sign_info(&g, false);
        let member = self.sign_member(&g.id, owner, Some(Role::Owner));
        let mut records = Batch::new();
        records.put_record(&RecordKey::Info(g.id), &info);
        records.put_record(&RecordKey::Member(g.id, owner.clone()), &member);
        self.store.create_group(&g, &m, records).await?;
        let mut fx = Effects::default();
        fx.notice(Notice::Group(g.id));
        fx.records(g.id, vec![info, member]);
        Ok((self.group_detail(&g.id, owner)?, fx))
    }

    /// Renames a group (admins, on its home).
    pub async fn rename_group(&self, actor: &UserId, group: &GroupId, name: &str) -> Result<(GroupDetail, Effects), CoreError> {
        let (mut g, m) = self.membership(group, actor)?;
        require(&m, Role::Admin, "rename it")?;
        self.require_home(&g)?;
        g.name = clean_name(name)?;
        let info = self.sign_info(&g, false);
        let mut b = Batch::new();
        b.put_group(&g);
        b.put_record(&RecordKey::Info(g.id), &info);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        fx.notice(Notice::Group(g.id));
        fx.records(g.id, vec![info]);
        Ok((self.group_detail(group, actor)?, fx))
    }

    /// Deletes a group (its owner, on its home): everyone leaves its calls, every member is
    /// told, other nodes get its tombstone.
    pub async fn delete_group(&self, actor: &UserId, group: &GroupId) -> Result<Effects, CoreError> {
        let (g, m) = self.membership(group, actor)?;
        require(&m, Role::Owner, "delete it")?;
        self.require_home(&g)?;
        let members = self.store.members(group)?;
        let tombstone = self.sign_info(&g, true);
        let mut b = Batch::new();
        self.store.delete_group_into(&mut b, group)?;
        self.store.commit(b).await?;
        let dropped = self.rooms().end_group(group);
        let mut fx = Effects::default();
        for (room, p) in &dropped {
            fx.notice(Notice::Left { room: *room, user: p.user.clone(), session: p.session });
        }
        let users = members.into_iter().map(|m| m.user).filter(|u| self.is_local(u)).collect();
        fx.notice(Notice::GroupRemoved { group: *group, users });
        fx.records(*group, vec![tombstone]);
        Ok(fx)
    }

    /// Creates a room (admins, on the group's home).
    pub async fn create_room(&self, actor: &UserId, group: &GroupId, name: &str, stage: bool) -> Result<(RoomView, Effects), CoreError> {
        let (g, m) = self.membership(group, actor)?;
        require(&m, Role::Admin, "create rooms")?;
        self.require_home(&g)?;
        let id = RoomId::from_bytes(random_16());
        let r = RoomRecord { id, group: g.id, name: clean_name(name)?, created_at: unix_now(), stage };
        self.put_room(r).await
    }

    /// Renames a room (admins, on the group's home).
    pub async fn rename_room(
        &self,
        actor: &UserId,
        group: &GroupId,
        room: &RoomId,
        name: &str,
    ) -> Result<(RoomView, Effects), CoreError> {
        let (g, m) = self.membership(group, actor)?;
        let mut r = self.store.room(group, room)?.ok_or_else(|| CoreError::not_found("room"))?;
        require(&m, Role::Admin, "rename rooms")?;
        self.require_home(&g)?;
        r.name = clean_name(name)?;
        self.put_room(r).await
    }

    async fn put_room(&self, r: RoomRecord) -> Result<(RoomView, Effects), CoreError> {
        let env = self.sign_room(&r, false);
        let mut b = Batch::new();
        b.put_room(&r);
        b.put_record(&RecordKey::Room(r.group, r.id), &env);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        fx.notice(Notice::Group(r.group));
        fx.records(r.group, vec![env]);
        Ok((self.room_view(r), fx))
    }

    /// Deletes a room (admins, on the group's home); whoever is in its call is dropped.
    pub async fn delete_room(&self, actor: &UserId, group: &GroupId, room: &RoomId) -> Result<Effects, CoreError> {
        let (g, m) = self.membership(group, actor)?;
        require(&m, Role::Admin, "delete rooms")?;
        self.require_home(&g)?;
        let r = self.store.room(group, room)?.ok_or_else(|| CoreError::not_found("room"))?;
        let tombstone = self.sign_room(&r, true);
        let mut b = Batch::new();
        b.remove_room(group, room);
        b.put_record(&RecordKey::Room(*group, *room), &tombstone);
        self.store.commit(b).await?;
        let key = (*group, *room);
        let dropped: Vec<_> = self.rooms().clear_room(&key).into_iter().map(|p| (key, p)).collect();
        let mut fx = Effects::default();
        fx.dropped(&dropped);
        fx.notice(Notice::Group(*group));
        fx.records(*group, vec![tombstone]);
        Ok(fx)
    }

    /// Signs the records of every group homed here that has none yet (data written before
    /// signed records were kept), so federation can serve them exactly as signed.
    pub async fn sign_missing_records(&self) -> Result<usize, CoreError> {
        let mut b = Batch::new();
        let mut n = 0;
        for g in self.store.all_groups()? {
            if g.home != self.me || self.store.record(&RecordKey::Info(g.id))?.is_some() {
                continue;
            }
            b.put_record(&RecordKey::Info(g.id), &self.sign_info(&g, false));
            for r in self.store.rooms(&g.id)? {
                b.put_record(&RecordKey::Room(g.id, r.id), &self.sign_room(&r, false));
            }
            for m in self.store.members(&g.id)? {
                b.put_record(&RecordKey::Member(g.id, m.user.clone()), &self.sign_member(&g.id, &m.user, Some(m.role)));
            }
            n += 1;
        }
        self.store.commit(b).await?;
        Ok(n)
    }
}
