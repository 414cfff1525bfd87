//! Members and invite links: adding by name, roles, removal, and joining through a link.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{GroupId, Role, UserId};

use super::auth::Auth;
use super::error::{AppError, Body};
use super::groups::{parse_group, require};
use crate::events::GroupDetail;
use crate::state::AppState;
use crate::store::{InviteRecord, MemberRecord, StoreError};
use crate::time::{random_hex, unix_now};

/// Invites last this long unless the admin says otherwise.
const DEFAULT_INVITE_SECS: u64 = 7 * 24 * 3600;
/// And at most this long.
const MAX_INVITE_SECS: u64 = 30 * 24 * 3600;
/// Most uses one invite may allow.
const MAX_INVITE_USES: u32 = 1000;

impl AppState {
    /// Resolves `bob` or `bob@node` to a user this node can add: local users must exist.
    fn resolve_user(&self, s: &str) -> Result<UserId, AppError> {
        let user = UserId::parse_with_default(s.trim(), &self.settings.node_name)
            .map_err(|e| AppError::bad_request(e.to_string()))?;
        if user.node != self.settings.node_name {
            if self.fed().is_none() || self.store.peer(&user.node)?.is_none() {
                return Err(AppError::bad_request(format!(
                    "{user} lives on node {}, which this node does not federate with; \
                     ask the operator to add it as a peer",
                    user.node
                )));
            }
            return Ok(user);
        }
        match self.store.user(&user.name)? {
            Some(u) if !u.disabled => Ok(user),
            _ => Err(AppError::not_found(format!("there is no user {} on this node", user.name))),
        }
    }
}

fn parse_member(s: &str) -> Result<UserId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such member"))
}

/// The body of `POST /api/groups/{gid}/members`.
#[derive(Deserialize)]
pub struct AddMember {
    user: String,
    role: Option<Role>,
}

/// `POST /api/groups/{gid}/members`: admins add members; only the owner adds admins.
pub async fn add(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<AddMember>,
) -> Result<(StatusCode, Json<MemberRecord>), AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&me, Role::Admin, "add members")?;
    state.require_home(&g)?;
    let role = b.role.unwrap_or(Role::Member);
    match role {
        Role::Owner => return Err(AppError::bad_request("a group has one owner; hand it over with a role change")),
        Role::Admin => require(&me, Role::Owner, "add admins")?,
        Role::Member => {}
    }
    let user = state.resolve_user(&b.user)?;
    if state.store.member(&g.id, &user)?.is_some() {
        return Err(AppError::conflict(format!("{user} is already a member")));
    }
    let m = MemberRecord { user, role, added_at: unix_now() };
    state.store.put_member(&g.id, &m).await?;
    state.announce_member(&g, &m.user, Some(m.role), true);
    state.notify_group(&g)?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// The body of `PATCH /api/groups/{gid}/members/{user}`.
#[derive(Deserialize)]
pub struct SetRole {
    role: Role,
}

/// `PATCH /api/groups/{gid}/members/{user}`: the owner changes roles; `owner` hands over
/// ownership and makes the old owner an admin.
pub async fn set_role(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, user)): Path<(String, String)>,
    Body(b): Body<SetRole>,
) -> Result<Json<MemberRecord>, AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    let mut target = state.store.member(&g.id, &parse_member(&user)?)?.ok_or_else(|| AppError::not_found("no such member"))?;
    require(&me, Role::Owner, "change roles")?;
    state.require_home(&g)?;
    if target.user == me.user {
        return Err(AppError::bad_request("hand ownership to someone else instead"));
    }
    target.role = b.role;
    if b.role == Role::Owner {
        let old_owner = MemberRecord { role: Role::Admin, ..me };
        state.store.put_members(&g.id, &[target.clone(), old_owner.clone()]).await?;
        state.announce_member(&g, &old_owner.user, Some(Role::Admin), false);
    } else {
        state.store.put_member(&g.id, &target).await?;
    }
    state.announce_member(&g, &target.user, Some(target.role), true);
    state.notify_group(&g)?;
    Ok(Json(target))
}

/// `DELETE /api/groups/{gid}/members/{user}`: leave, or (admins) remove someone.
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, user)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    let target = state.store.member(&g.id, &parse_member(&user)?)?.ok_or_else(|| AppError::not_found("no such member"))?;
    match target.role {
        Role::Owner => {
            return Err(AppError::forbidden("the owner cannot leave; delete the group or hand it over first"));
        }
        _ if target.user == me.user => {}
        Role::Admin => require(&me, Role::Owner, "remove admins")?,
        Role::Member => require(&me, Role::Admin, "remove members")?,
    }
    state.require_home(&g)?;
    state.store.remove_member(&g.id, &target.user).await?;
    state.announce_member(&g, &target.user, None, true);
    let dropped = state.rooms.lock().expect("rooms lock").drop_from_group(&g.id, |p| p.user == target.user);
    state.notify_dropped(&dropped)?;
    state.notify_removed(&g.id, [&target.user]);
    state.notify_group(&g)?;
    Ok(StatusCode::NO_CONTENT)
}

/// An invite as admins see it.
#[derive(Serialize)]
pub struct InviteView {
    #[serde(flatten)]
    record: InviteRecord,
    url: String,
}

fn invite_view(state: &AppState, record: InviteRecord) -> InviteView {
    let url = format!("{}/invite/{}", state.settings.public_url, record.code);
    InviteView { record, url }
}

/// The body of `POST /api/groups/{gid}/invites`.
#[derive(Deserialize, Default)]
pub struct NewInvite {
    expires_in_secs: Option<u64>,
    max_uses: Option<u32>,
}

/// `POST /api/groups/{gid}/invites` (admins).
pub async fn create_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<NewInvite>,
) -> Result<(StatusCode, Json<InviteView>), AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&me, Role::Admin, "create invites")?;
    state.require_home(&g)?;
    let secs = b.expires_in_secs.unwrap_or(DEFAULT_INVITE_SECS);
    if secs == 0 || secs > MAX_INVITE_SECS {
        return Err(AppError::bad_request("invites expire after 1 second to 30 days"));
    }
    if b.max_uses.is_some_and(|m| m == 0 || m > MAX_INVITE_USES) {
        return Err(AppError::bad_request(format!("max_uses is 1 to {MAX_INVITE_USES}")));
    }
    let now = unix_now();
    let record = InviteRecord {
        code: random_hex(16),
        group: g.id,
        created_by: auth.id,
        created_at: now,
        expires_at: now + secs,
        max_uses: b.max_uses,
        uses: 0,
        revoked: false,
    };
    state.store.put_invite(&record).await?;
    Ok((StatusCode::CREATED, Json(invite_view(&state, record))))
}

/// `GET /api/groups/{gid}/invites` (admins): the links still usable.
pub async fn list_invites(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<Json<Vec<InviteView>>, AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&me, Role::Admin, "see invites")?;
    let now = unix_now();
    let live = state.store.invites(&g.id)?.into_iter().filter(|i| i.usable(now));
    Ok(Json(live.map(|i| invite_view(&state, i)).collect()))
}

/// `DELETE /api/groups/{gid}/invites/{code}` (admins).
pub async fn revoke_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, code)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let (g, me) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&me, Role::Admin, "revoke invites")?;
    let mut inv = state.store.invite(&code)?.filter(|i| i.group == g.id).ok_or_else(|| AppError::not_found("no such invite"))?;
    inv.revoked = true;
    state.store.put_invite(&inv).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn usable_invite(state: &AppState, code: &str) -> Result<InviteRecord, AppError> {
    let inv = state.store.invite(code)?.ok_or_else(|| AppError::not_found("no such invite"))?;
    if !inv.usable(unix_now()) || state.store.group(&inv.group)?.is_none() {
        return Err(StoreError::InviteGone.into());
    }
    Ok(inv)
}

/// `GET /api/invites/{code}`: what the link leads to.
pub async fn preview(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let inv = usable_invite(&state, &code)?;
    let g = state.store.group(&inv.group)?.ok_or_else(|| AppError::not_found("no such invite"))?;
    let already = state.store.member(&g.id, &auth.id)?.is_some();
    Ok(Json(serde_json::json!({
        "group": {"id": g.id, "name": g.name, "home": g.home},
        "expires_at": inv.expires_at,
        "already_member": already,
    })))
}

/// `POST /api/invites/{code}/accept`: joins the group (a member already just gets it).
pub async fn accept(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> Result<Json<GroupDetail>, AppError> {
    let inv = usable_invite(&state, &code)?;
    let gid: GroupId = inv.group;
    if state.store.member(&gid, &auth.id)?.is_none() {
        let m = MemberRecord { user: auth.id.clone(), role: Role::Member, added_at: unix_now() };
        match state.store.redeem_invite(&code, &m, unix_now()).await {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(g) = state.store.group(&gid)? {
            state.announce_member(&g, &auth.id, Some(Role::Member), false);
        }
    }
    let (g, me) = state.membership(&gid, &auth.id)?;
    state.notify_group(&g)?;
    Ok(Json(state.group_detail(&g, me.role)?))
}

/// The body of `POST /api/invites/remote`.
#[derive(Deserialize)]
pub struct RemoteInvite {
    link: String,
}

/// `POST /api/invites/remote`: joins a group of another node through its invite link,
/// e.g. `https://beta.example/invite/CODE` pasted into this node's page. This node finds
/// the node serving that origin among its peers and asks it.
pub async fn accept_remote(
    State(state): State<AppState>,
    auth: Auth,
    Body(b): Body<RemoteInvite>,
) -> Result<Json<GroupDetail>, AppError> {
    let link = b.link.trim();
    let bad = || AppError::bad_request("that is not an invite link (…/invite/CODE)");
    let (origin, code) = link.rsplit_once("/invite/").ok_or_else(bad)?;
    let code = code.trim_end_matches('/');
    if code.is_empty() || code.len() > 64 || !code.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return Err(bad());
    }
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(&state.settings.public_url) {
        return Err(AppError::bad_request("this link is for this node: open it directly"));
    }
    let home = state
        .store
        .peers()?
        .into_iter()
        .find(|p| p.url.eq_ignore_ascii_case(origin))
        .ok_or_else(|| AppError::bad_request(format!("{origin} is not a node this node federates with")))?;
    let group = state.join_remote(&home.name, code, &auth.id).await.map_err(|e| match e {
        voicechat_protocol::rpc::RpcError::BadInvite => {
            AppError::gone("this invite has expired, was used up or was revoked")
        }
        e => AppError::bad_request(format!("{} refused the invite: {e:?}", home.name)),
    })?;
    let (g, me) = state.membership(&group, &auth.id)?;
    Ok(Json(state.group_detail(&g, me.role)?))
}
