//! Members, invite links, invitations and blocked nodes over HTTP.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{NodeName, Role, UserId};
use voicechat_protocol::rpc::RpcError;

use super::auth::Auth;
use super::error::{AppError, Body};
use super::groups::parse_group;
use crate::core::{GroupDetail, InvitationView};
use crate::state::AppState;
use crate::store::{InviteRecord, MemberRecord};

fn parse_member(s: &str) -> Result<UserId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such member"))
}

fn parse_node(s: &str) -> Result<NodeName, AppError> {
    NodeName::new(s.trim()).map_err(|e| AppError::bad_request(e.to_string()))
}

/// The body of `POST /api/groups/{gid}/members`.
#[derive(Deserialize)]
pub struct AddMember {
    user: String,
    role: Option<Role>,
}

/// `POST /api/groups/{gid}/members`: admins add members; only the owner adds admins. A
/// user of another node is invited (their node must federate with this one; in open
/// federation, a node with a DNS name is verified first).
pub async fn add(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<AddMember>,
) -> Result<(StatusCode, Json<MemberRecord>), AppError> {
    let group = parse_group(&gid)?;
    state.core.membership(&group, &auth.id)?;
    if let Ok(user) = UserId::parse_with_default(b.user.trim(), &state.settings.node_name)
        && user.node != state.settings.node_name
        && state.store.peer(&user.node)?.is_none()
        && let Some(fed) = state.fed()
    {
        fed.discover(&user.node).await.map_err(AppError::bad_request)?;
    }
    let user = state.core.resolve_user(&b.user)?;
    let (m, fx) = state.core.add_member(&auth.id, &group, user, b.role.unwrap_or(Role::Member)).await?;
    state.commit(fx).await;
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
    let (m, fx) = state.core.set_role(&auth.id, &parse_group(&gid)?, &parse_member(&user)?, b.role).await?;
    state.commit(fx).await;
    Ok(Json(m))
}

/// `DELETE /api/groups/{gid}/members/{user}`: leave (also a group of another node), or
/// (admins, on the home) remove someone.
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, user)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let fx = state.core.remove_member(&auth.id, &parse_group(&gid)?, &parse_member(&user)?).await?;
    state.commit(fx).await;
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
    let record = state.core.create_invite(&auth.id, &parse_group(&gid)?, b.expires_in_secs, b.max_uses).await?;
    Ok((StatusCode::CREATED, Json(invite_view(&state, record))))
}

/// `GET /api/groups/{gid}/invites` (admins): the links still usable.
pub async fn list_invites(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<Json<Vec<InviteView>>, AppError> {
    let live = state.core.list_invites(&auth.id, &parse_group(&gid)?)?;
    Ok(Json(live.into_iter().map(|i| invite_view(&state, i)).collect()))
}

/// `DELETE /api/groups/{gid}/invites/{code}` (admins).
pub async fn revoke_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, code)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    state.core.revoke_invite(&auth.id, &parse_group(&gid)?, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/invites/{code}`: what the link leads to.
pub async fn preview(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> Result<Json<crate::core::InvitePreview>, AppError> {
    Ok(Json(state.core.preview_invite(&auth.id, &code)?))
}

/// `POST /api/invites/{code}/accept`: joins the group (a member already just gets it).
pub async fn accept(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> Result<Json<GroupDetail>, AppError> {
    let (detail, fx) = state.core.accept_invite(&auth.id, &code).await?;
    state.commit(fx).await;
    Ok(Json(detail))
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
    let fed = state.fed().ok_or_else(|| AppError::bad_request("this node does not federate"))?;
    let home = state
        .store
        .peers()?
        .into_iter()
        .find(|p| p.url.eq_ignore_ascii_case(origin))
        .ok_or_else(|| AppError::bad_request(format!("{origin} is not a node this node federates with")))?;
    let group = fed.join_remote(&home.name, code, &auth.id).await.map_err(|e| match e {
        RpcError::BadInvite => AppError::gone("this invite has expired, was used up or was revoked"),
        e => AppError::bad_request(format!("{} refused the invite: {e:?}", home.name)),
    })?;
    Ok(Json(state.core.group_detail(&group, &auth.id)?))
}

/// `GET /api/invitations`: groups of other nodes that added you, waiting for your answer.
pub async fn invitations(State(state): State<AppState>, auth: Auth) -> Result<Json<Vec<InvitationView>>, AppError> {
    Ok(Json(state.core.invitations(&auth.id)?))
}

/// `POST /api/invitations/{gid}/accept`: the group shows up in your list.
pub async fn accept_invitation(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<Json<GroupDetail>, AppError> {
    let group = parse_group(&gid)?;
    let fx = state.core.answer_invitation(&auth.id, &group, true).await?;
    state.commit(fx).await;
    Ok(Json(state.core.group_detail(&group, &auth.id)?))
}

/// `POST /api/invitations/{gid}/decline`: the group's home is told; nothing of it shows.
pub async fn decline_invitation(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<StatusCode, AppError> {
    let fx = state.core.answer_invitation(&auth.id, &parse_group(&gid)?, false).await?;
    state.commit(fx).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/blocks`: the nodes whose invitations you refuse.
pub async fn blocks(State(state): State<AppState>, auth: Auth) -> Result<Json<Vec<NodeName>>, AppError> {
    Ok(Json(state.store.user_blocks(&auth.id)?))
}

/// The body of `POST /api/blocks`.
#[derive(Deserialize)]
pub struct BlockNode {
    node: String,
}

/// `POST /api/blocks`: refuse every invitation from a node (pending ones are declined).
pub async fn block(
    State(state): State<AppState>,
    auth: Auth,
    Body(b): Body<BlockNode>,
) -> Result<StatusCode, AppError> {
    let fx = state.core.block_node(&auth.id, &parse_node(&b.node)?).await?;
    state.commit(fx).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/blocks/{node}`.
pub async fn unblock(
    State(state): State<AppState>,
    auth: Auth,
    Path(node): Path<String>,
) -> Result<StatusCode, AppError> {
    state.core.unblock_node(&auth.id, &parse_node(&node)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
