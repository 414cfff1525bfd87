//! Groups and rooms over HTTP: each handler asks the core and commits its effects. A
//! non-member gets 404 for everything about a group.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use voicechat_protocol::ids::{GroupId, RoomId};

use super::auth::Auth;
use super::error::{AppError, Body};
use crate::core::{GroupDetail, GroupSummary, RoomView};
use crate::state::AppState;

pub(super) fn parse_group(s: &str) -> Result<GroupId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such group"))
}

pub(super) fn parse_room(s: &str) -> Result<RoomId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such room"))
}

/// A body with just a name.
#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

/// `GET /api/groups`.
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Vec<GroupSummary>>, AppError> {
    Ok(Json(state.core.groups_of(&auth.id)?))
}

/// `POST /api/groups`: the creator is the owner.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Body(b): Body<NameBody>,
) -> Result<(StatusCode, Json<GroupDetail>), AppError> {
    let (detail, fx) = state.core.create_group(&auth.id, &b.name).await?;
    state.commit(fx).await;
    Ok((StatusCode::CREATED, Json(detail)))
}

/// `GET /api/groups/{gid}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<Json<GroupDetail>, AppError> {
    Ok(Json(state.core.group_detail(&parse_group(&gid)?, &auth.id)?))
}

/// `PATCH /api/groups/{gid}`: rename (admins).
pub async fn rename(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<Json<GroupDetail>, AppError> {
    let (detail, fx) = state.core.rename_group(&auth.id, &parse_group(&gid)?, &b.name).await?;
    state.commit(fx).await;
    Ok(Json(detail))
}

/// `DELETE /api/groups/{gid}` (owner): drops everyone from its calls, then tells members.
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<StatusCode, AppError> {
    let fx = state.core.delete_group(&auth.id, &parse_group(&gid)?).await?;
    state.commit(fx).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new room: its name, and whether it is a stage.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    name: String,
    #[serde(default)]
    stage: bool,
}

/// `POST /api/groups/{gid}/rooms` (admins).
pub async fn create_room(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<NewRoom>,
) -> Result<(StatusCode, Json<RoomView>), AppError> {
    let (room, fx) = state.core.create_room(&auth.id, &parse_group(&gid)?, &b.name, b.stage).await?;
    state.commit(fx).await;
    Ok((StatusCode::CREATED, Json(room)))
}

/// `PATCH /api/groups/{gid}/rooms/{rid}` (admins).
pub async fn rename_room(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, rid)): Path<(String, String)>,
    Body(b): Body<NameBody>,
) -> Result<Json<RoomView>, AppError> {
    let (room, fx) = state.core.rename_room(&auth.id, &parse_group(&gid)?, &parse_room(&rid)?, &b.name).await?;
    state.commit(fx).await;
    Ok(Json(room))
}

/// `DELETE /api/groups/{gid}/rooms/{rid}` (admins): whoever is in its call is dropped.
pub async fn delete_room(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, rid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let fx = state.core.delete_room(&auth.id, &parse_group(&gid)?, &parse_room(&rid)?).await?;
    state.commit(fx).await;
    Ok(StatusCode::NO_CONTENT)
}
