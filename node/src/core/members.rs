//! Members, invite links and invitations: adding by name, roles, leaving and removal,
//! joining through a link (also for users of other nodes), and a local user's answer to a
//! group of another node that added them (accept, decline, block that node).

use serde::Serialize;
use voicechat_protocol::ids::{GroupId, NodeName, Role, UserId};
use voicechat_protocol::records::{Answer, Consent, Record};
use voicechat_protocol::rpc::RpcError;

use super::groups::require;
use super::{Core, CoreError, Effects, GroupDetail, Notice};
use crate::store::{Batch, InviteRecord, MemberRecord, MemberStatus, RecordKey, StoreError};
use crate::time::{random_hex, unix_now};

/// Invites last this long unless the admin says otherwise.
pub const DEFAULT_INVITE_SECS: u64 = 7 * 24 * 3600;
/// And at most this long.
pub const MAX_INVITE_SECS: u64 = 30 * 24 * 3600;
/// Most uses one invite may allow.
pub const MAX_INVITE_USES: u32 = 1000;

/// What an invite link leads to, for the person who opened it.
#[derive(Debug, Serialize)]
pub struct InvitePreview {
    /// The group.
    pub group: GroupPreview,
    /// Unix seconds.
    pub expires_at: u64,
    /// The viewer is in the group already.
    pub already_member: bool,
}

/// The little an invite link shows of its group.
#[derive(Debug, Serialize)]
pub struct GroupPreview {
    /// Group id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// Home node.
    pub home: NodeName,
}

impl Core {
    pub(super) fn sign_consent(&self, group: &GroupId, user: &UserId, answer: Answer) -> Vec<u8> {
        self.signer.seal(|seq| Record::Consent(Consent { seq, user: user.clone(), group: *group, answer }))
    }

    /// Resolves `bob` or `bob@node` to a user who can be added: a local user must exist and
    /// be enabled; a user of another node needs that node to be known (pinned or verified).
    pub fn resolve_user(&self, s: &str) -> Result<UserId, CoreError> {
        let user = UserId::parse_with_default(s.trim(), &self.me).map_err(|e| CoreError::BadRequest(e.to_string()))?;
        if !self.is_local(&user) {
            if self.store.peer(&user.node)?.is_none() {
                return Err(CoreError::BadRequest(format!(
                    "{user} lives on node {}, which this node does not federate with; \
                     ask the operator to add it as a peer",
                    user.node
                )));
            }
            return Ok(user);
        }
        match self.store.user(&user.name)? {
            Some(u) if !u.disabled => Ok(user),
            _ => Err(CoreError::NotFound(format!("there is no user {} on this node", user.name))),
        }
    }

    /// Adds a member (admins; only the owner adds admins). A user of another node is
    /// invited: they appear as `invited` until their node says they accepted.
    pub async fn add_member(
        &self,
        actor: &UserId,
        group: &GroupId,
        user: UserId,
        role: Role,
    ) -> Result<(MemberRecord, Effects), CoreError> {
        let (g, me) = self.membership(group, actor)?;
        require(&me, Role::Admin, "add members")?;
        self.require_home(&g)?;
        match role {
            Role::Owner => {
                return Err(CoreError::BadRequest("a group has one owner; hand it over with a role change".into()));
            }
            Role::Admin => require(&me, Role::Owner, "add admins")?,
            Role::Member => {}
        }
        if self.store.member(group, &user)?.is_some() {
            return Err(CoreError::Conflict(format!("{user} is already a member")));
        }
        let status = if self.is_local(&user) { MemberStatus::Active } else { MemberStatus::Invited };
        let m = MemberRecord { user, role, added_at: unix_now(), status };
        let env = self.sign_member(group, &m.user, Some(role));
        let mut b = Batch::new();
        b.put_member(group, &m);
        b.put_record(&RecordKey::Member(*group, m.user.clone()), &env);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        fx.notice(Notice::Group(*group));
        fx.records(*group, vec![env]);
        Ok((m, fx))
    }

    /// Changes a role (the owner); `owner` hands ownership over and makes the old owner an admin.
    pub async fn set_role(
        &self,
        actor: &UserId,
        group: &GroupId,
        target: &UserId,
        role: Role,
    ) -> Result<(MemberRecord, Effects), CoreError> {
        let (g, me) = self.membership(group, actor)?;
        let mut t = self.store.member(group, target)?.ok_or_else(|| CoreError::not_found("member"))?;
        require(&me, Role::Owner, "change roles")?;
        self.require_home(&g)?;
        if t.user == me.user {
            return Err(CoreError::BadRequest("hand ownership to someone else instead".into()));
        }
        if role == Role::Owner && (!self.is_local(&t.user) || t.status != MemberStatus::Active) {
            return Err(CoreError::BadRequest(format!(
                "ownership can only go to an active member of this node, where the group is managed; {} is not one",
                t.user
            )));
        }
        t.role = role;
        let mut b = Batch::new();
        let mut envs = Vec::new();
        if role == Role::Owner {
            let old = MemberRecord { role: Role::Admin, ..me };
            let env = self.sign_member(group, &old.user, Some(Role::Admin));
            b.put_member(group, &old);
            b.put_record(&RecordKey::Member(*group, old.user.clone()), &env);
            envs.push(env);
        }
        let env = self.sign_member(group, &t.user, Some(role));
        b.put_member(group, &t);
        b.put_record(&RecordKey::Member(*group, t.user.clone()), &env);
        envs.push(env);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        fx.notice(Notice::Group(*group));
        fx.records(*group, envs);
        Ok((t, fx))
    }

    /// Leaving, or (admins) removing someone. In a group of another node, a user may only
    /// leave: their node tells the home, which removes them.
    pub async fn remove_member(&self, actor: &UserId, group: &GroupId, target: &UserId) -> Result<Effects, CoreError> {
        let (g, me) = self.membership(group, actor)?;
        let t = self.store.member(group, target)?.ok_or_else(|| CoreError::not_found("member"))?;
        if g.home != self.me && t.user == me.user {
            return self.answer(&t, group, Answer::Left).await;
        }
        match t.role {
            Role::Owner => {
                return Err(CoreError::Forbidden("the owner cannot leave; delete the group or hand it over first".into()));
            }
            _ if t.user == me.user => {}
            Role::Admin => require(&me, Role::Owner, "remove admins")?,
            Role::Member => require(&me, Role::Admin, "remove members")?,
        }
        self.require_home(&g)?;
        self.remove_at_home(group, &t).await
    }

    /// Removes a member of a group homed here and signs the removal.
    pub(super) async fn remove_at_home(&self, group: &GroupId, t: &MemberRecord) -> Result<Effects, CoreError> {
        let env = self.sign_member(group, &t.user, None);
        let mut b = Batch::new();
        b.remove_member(group, &t.user);
        b.put_record(&RecordKey::Member(*group, t.user.clone()), &env);
        self.store.commit(b).await?;
        let dropped = self.rooms().drop_from_group(group, |p| p.user == t.user);
        let mut fx = Effects::default();
        fx.dropped(&dropped);
        if self.is_local(&t.user) {
            fx.notice(Notice::GroupRemoved { group: *group, users: vec![t.user.clone()] });
        }
        fx.notice(Notice::Group(*group));
        fx.records(*group, vec![env]);
        Ok(fx)
    }

    /// A local user's answer about a group of another node: store it, drop what they no
    /// longer see, and send the signed answer to the home.
    async fn answer(&self, m: &MemberRecord, group: &GroupId, answer: Answer) -> Result<Effects, CoreError> {
        let env = self.sign_consent(group, &m.user, answer);
        let status = if answer == Answer::Accepted { MemberStatus::Active } else { MemberStatus::Declined };
        let was = m.status;
        let mut b = Batch::new();
        b.put_member(group, &MemberRecord { status, ..m.clone() });
        b.put_record(&RecordKey::Consent(*group, m.user.clone()), &env);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        if was == MemberStatus::Active && status != MemberStatus::Active {
            let dropped = self.rooms().drop_from_group(group, |p| p.user == m.user);
            fx.dropped(&dropped);
            fx.notice(Notice::GroupRemoved { group: *group, users: vec![m.user.clone()] });
        }
        if was == MemberStatus::Invited {
            fx.notice(Notice::Invitations(m.user.clone()));
        }
        fx.notice(Notice::Group(*group));
        fx.records(*group, vec![env]);
        Ok(fx)
    }

    /// Accepts or declines an invitation of another node's group.
    pub async fn answer_invitation(&self, user: &UserId, group: &GroupId, accept: bool) -> Result<Effects, CoreError> {
        let m = self.store.member(group, user)?.filter(|m| m.status == MemberStatus::Invited);
        let m = m.ok_or_else(|| CoreError::not_found("invitation"))?;
        self.answer(&m, group, if accept { Answer::Accepted } else { Answer::Declined }).await
    }

    /// `user` blocks invitations from `node`: pending ones are declined, later ones are
    /// declined as they arrive.
    pub async fn block_node(&self, user: &UserId, node: &NodeName) -> Result<Effects, CoreError> {
        if node == &self.me {
            return Err(CoreError::BadRequest("this is your own node".into()));
        }
        let mut b = Batch::new();
        b.put_user_block(user, node);
        self.store.commit(b).await?;
        let mut fx = Effects::default();
        for gid in self.store.groups_of(user)? {
            let (Some(g), Some(m)) = (self.store.group(&gid)?, self.store.member(&gid, user)?) else { continue };
            if &g.home == node && m.status == MemberStatus::Invited {
                fx.merge(self.answer(&m, &gid, Answer::Declined).await?);
            }
        }
        Ok(fx)
    }

    /// Lifts a block.
    pub async fn unblock_node(&self, user: &UserId, node: &NodeName) -> Result<(), CoreError> {
        if !self.store.user_blocks_node(user, node)? {
            return Err(CoreError::not_found("block"));
        }
        let mut b = Batch::new();
        b.remove_user_block(user, node);
        Ok(self.store.commit(b).await?)
    }

    // ---- invite links ----

    /// Creates an invite link (admins, on the group's home).
    pub async fn create_invite(
        &self,
        actor: &UserId,
        group: &GroupId,
        expires_in_secs: Option<u64>,
        max_uses: Option<u32>,
    ) -> Result<InviteRecord, CoreError> {
        let (g, me) = self.membership(group, actor)?;
        require(&me, Role::Admin, "create invites")?;
        self.require_home(&g)?;
        let secs = expires_in_secs.unwrap_or(DEFAULT_INVITE_SECS);
        if secs == 0 || secs > MAX_INVITE_SECS {
            return Err(CoreError::BadRequest("invites expire after 1 second to 30 days".into()));
        }
        if max_uses.is_some_and(|m| m == 0 || m > MAX_INVITE_USES) {
            return Err(CoreError::BadRequest(format!("max_uses is 1 to {MAX_INVITE_USES}")));
        }
        let now = unix_now();
        let record = InviteRecord {
            code: random_hex(16),
            group: g.id,
            created_by: actor.clone(),
            created_at: now,
            expires_at: now + secs,
            max_uses,
            uses: 0,
            revoked: false,
        };
        let mut b = Batch::new();
        b.put_invite(&record);
        self.store.commit(b).await?;
        Ok(record)
    }

    /// The links still usable (admins).
    pub fn list_invites(&self, actor: &UserId, group: &GroupId) -> Result<Vec<InviteRecord>, CoreError> {
        let (_, me) = self.membership(group, actor)?;
        require(&me, Role::Admin, "see invites")?;
        let now = unix_now();
        Ok(self.store.invites(group)?.into_iter().filter(|i| i.usable(now)).collect())
    }

    /// Revokes a link (admins).
    pub async fn revoke_invite(&self, actor: &UserId, group: &GroupId, code: &str) -> Result<(), CoreError> {
        let (_, me) = self.membership(group, actor)?;
        require(&me, Role::Admin, "revoke invites")?;
        let mut inv = self.store.invite(code)?.filter(|i| &i.group == group).ok_or_else(|| CoreError::not_found("invite"))?;
        inv.revoked = true;
        let mut b = Batch::new();
        b.put_invite(&inv);
        Ok(self.store.commit(b).await?)
    }

    fn usable_invite(&self, code: &str) -> Result<InviteRecord, CoreError> {
        let inv = self.store.invite(code)?.ok_or_else(|| CoreError::not_found("invite"))?;
        if !inv.usable(unix_now()) || self.store.group(&inv.group)?.is_none() {
            return Err(CoreError::Gone("this invite has expired, was used up or was revoked".into()));
        }
        Ok(inv)
    }

    /// What a link leads to.
    pub fn preview_invite(&self, viewer: &UserId, code: &str) -> Result<InvitePreview, CoreError> {
        let inv = self.usable_invite(code)?;
        let g = self.store.group(&inv.group)?.ok_or_else(|| CoreError::not_found("invite"))?;
        let already = self.membership(&g.id, viewer).is_ok();
        Ok(InvitePreview {
            group: GroupPreview { id: g.id, name: g.name, home: g.home },
            expires_at: inv.expires_at,
            already_member: already,
        })
    }

    /// A local user joins through a link of this node (a member already just gets the group).
    pub async fn accept_invite(&self, user: &UserId, code: &str) -> Result<(GroupDetail, Effects), CoreError> {
        let inv = self.usable_invite(code)?;
        let fx = self.redeem(&inv, user).await?;
        Ok((self.group_detail(&inv.group, user)?, fx))
    }

    /// A user of another node joins through a link of this node, asked by their node.
    pub async fn redeem_for_remote(&self, code: &str, user: &UserId) -> Result<(GroupId, Effects), RpcError> {
        let internal = |e: CoreError| {
            tracing::error!(%e, "storage failed while redeeming an invite for a peer");
            RpcError::Internal
        };
        let inv = match self.usable_invite(code) {
            Ok(i) => i,
            Err(CoreError::Store(e)) => return Err(internal(e.into())),
            Err(_) => return Err(RpcError::BadInvite),
        };
        match self.store.group(&inv.group) {
            Ok(Some(g)) if g.home == self.me => {}
            Ok(_) => return Err(RpcError::BadInvite),
            Err(e) => return Err(internal(e.into())),
        }
        let fx = self.redeem(&inv, user).await.map_err(|e| match e {
            CoreError::Gone(_) | CoreError::NotFound(_) => RpcError::BadInvite,
            e => internal(e),
        })?;
        Ok((inv.group, fx))
    }

    /// Spends one use of `inv` for `user` (who consents by using it: active at once). A
    /// member already, or an invited one, just becomes active.
    async fn redeem(&self, inv: &InviteRecord, user: &UserId) -> Result<Effects, CoreError> {
        let mut fx = Effects::default();
        let existing = self.store.member(&inv.group, user)?;
        match existing {
            Some(m) if m.status == MemberStatus::Active => {}
            Some(m) => {
                let mut b = Batch::new();
                b.put_member(&inv.group, &MemberRecord { status: MemberStatus::Active, ..m });
                self.store.commit(b).await?;
            }
            None => {
                let m = MemberRecord::active(user.clone(), Role::Member, unix_now());
                let env = self.sign_member(&inv.group, user, Some(Role::Member));
                let mut records = Batch::new();
                records.put_record(&RecordKey::Member(inv.group, user.clone()), &env);
                match self.store.redeem_invite(&inv.code, &m, unix_now(), records).await {
                    Ok(_) => fx.records(inv.group, vec![env]),
                    Err(StoreError::Conflict) => {}
                    Err(StoreError::InviteGone | StoreError::NotFound) => {
                        return Err(CoreError::Gone("this invite has expired, was used up or was revoked".into()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        fx.notice(Notice::Group(inv.group));
        Ok(fx)
    }
}
