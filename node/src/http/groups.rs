//! Groups, members and rooms: the endpoints, the permission table, and the events each
//! change sends. A non-member gets 404 for everything about a group.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use voicechat_protocol::ids::{GroupId, Role, RoomId, UserId};

use super::auth::Auth;
use super::error::{AppError, Body};
use crate::events::{GroupDetail, GroupSummary, RoomView};
use crate::state::AppState;
use crate::store::{GroupRecord, MemberRecord, RoomRecord, StoreError};
use crate::time::{random_16, unix_now};

/// Longest group or room name, in characters.
pub const MAX_NAME: usize = 64;

/// Trims a group or room name and checks it.
pub fn clean_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "names are 1 to {MAX_NAME} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

pub(super) fn parse_group(s: &str) -> Result<GroupId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such group"))
}

pub(super) fn parse_room(s: &str) -> Result<RoomId, AppError> {
    s.parse().map_err(|_| AppError::not_found("no such room"))
}

impl AppState {
    /// The group and the viewer's membership; 404 when either is missing, so non-members
    /// cannot tell a group exists.
    pub fn membership(&self, group: &GroupId, user: &UserId) -> Result<(GroupRecord, MemberRecord), AppError> {
        let not_found = || AppError::not_found("no such group");
        let g = self.store.group(group)?.ok_or_else(not_found)?;
        let m = self.store.member(group, user)?.ok_or_else(not_found)?;
        Ok((g, m))
    }
}

impl AppState {
    /// Only a group's home node changes it; elsewhere the copy is read-only.
    pub fn require_home(&self, g: &GroupRecord) -> Result<(), AppError> {
        if g.home == self.settings.node_name {
            Ok(())
        } else {
            Err(AppError::bad_request(format!(
                "this group is managed on its home node {}; make the change there",
                g.home
            )))
        }
    }
}

/// 403 unless `m` has at least `role`.
pub(super) fn require(m: &MemberRecord, role: Role, what: &str) -> Result<(), AppError> {
    if m.role >= role {
        Ok(())
    } else {
        Err(AppError::forbidden(format!("only a group's {role:?}s may {what}").to_lowercase()))
    }
}

/// A body with just a name.
#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

/// `GET /api/groups`.
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Vec<GroupSummary>>, AppError> {
    let mut out = Vec::new();
    for gid in state.store.groups_of(&auth.id)? {
        if let (Some(g), Some(m)) = (state.store.group(&gid)?, state.store.member(&gid, &auth.id)?) {
            out.push(GroupSummary { id: g.id, name: g.name, home: g.home, role: m.role });
        }
    }
    out.sort_by_key(|g| g.name.to_lowercase());
    Ok(Json(out))
}

/// `POST /api/groups`: the creator is the owner.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Body(b): Body<NameBody>,
) -> Result<(StatusCode, Json<GroupDetail>), AppError> {
    let now = unix_now();
    let g = GroupRecord {
        id: GroupId::from_bytes(random_16()),
        name: clean_name(&b.name)?,
        home: state.settings.node_name.clone(),
        created_at: now,
    };
    let owner = MemberRecord { user: auth.id.clone(), role: Role::Owner, added_at: now };
    state.store.create_group(&g, &owner).await?;
    state.announce_group(&g, false, Default::default());
    state.announce_member(&g, &owner.user, Some(Role::Owner), false);
    state.notify_group(&g)?;
    Ok((StatusCode::CREATED, Json(state.group_detail(&g, Role::Owner)?)))
}

/// `GET /api/groups/{gid}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<Json<GroupDetail>, AppError> {
    let (g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    Ok(Json(state.group_detail(&g, m.role)?))
}

/// `PATCH /api/groups/{gid}`: rename (admins).
pub async fn rename(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<Json<GroupDetail>, AppError> {
    let (mut g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&m, Role::Admin, "rename it")?;
    state.require_home(&g)?;
    g.name = clean_name(&b.name)?;
    state.store.update_group(&g).await?;
    state.announce_group(&g, false, Default::default());
    state.notify_group(&g)?;
    Ok(Json(state.group_detail(&g, m.role)?))
}

/// `DELETE /api/groups/{gid}` (owner): drops everyone from its calls, then tells members.
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
) -> Result<StatusCode, AppError> {
    let (g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&m, Role::Owner, "delete it")?;
    state.require_home(&g)?;
    let members = state.store.members(&g.id)?;
    state.store.delete_group(&g.id).await?;
    let me = &state.settings.node_name;
    let nodes = members.iter().map(|m| m.user.node.clone()).filter(|n| n != me).collect();
    state.announce_group(&g, true, nodes);
    let dropped = state.rooms.lock().expect("rooms lock").drop_from_group(&g.id, |_| true);
    // The group is gone from the store, so this tells each session it left and nobody
    // gets a participants list of a deleted group.
    state.notify_dropped(&dropped)?;
    state.notify_removed(&g.id, members.iter().map(|m| &m.user));
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/groups/{gid}/rooms` and its rename.
pub async fn create_room(
    State(state): State<AppState>,
    auth: Auth,
    Path(gid): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<(StatusCode, Json<RoomView>), AppError> {
    let (g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    require(&m, Role::Admin, "create rooms")?;
    state.require_home(&g)?;
    let r = RoomRecord {
        id: RoomId::from_bytes(random_16()),
        group: g.id,
        name: clean_name(&b.name)?,
        created_at: unix_now(),
    };
    state.store.put_room(&r).await?;
    state.announce_room(&g, &r, false);
    state.notify_group(&g)?;
    Ok((StatusCode::CREATED, Json(state.room_view(r))))
}

/// `PATCH /api/groups/{gid}/rooms/{rid}`.
pub async fn rename_room(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, rid)): Path<(String, String)>,
    Body(b): Body<NameBody>,
) -> Result<Json<RoomView>, AppError> {
    let (g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    let mut r = state.store.room(&g.id, &parse_room(&rid)?)?.ok_or_else(|| AppError::not_found("no such room"))?;
    require(&m, Role::Admin, "rename rooms")?;
    state.require_home(&g)?;
    r.name = clean_name(&b.name)?;
    state.store.put_room(&r).await?;
    state.announce_room(&g, &r, false);
    state.notify_group(&g)?;
    Ok(Json(state.room_view(r)))
}

/// `DELETE /api/groups/{gid}/rooms/{rid}`: whoever is in its call is dropped.
pub async fn delete_room(
    State(state): State<AppState>,
    auth: Auth,
    Path((gid, rid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let (g, m) = state.membership(&parse_group(&gid)?, &auth.id)?;
    let rid = parse_room(&rid)?;
    require(&m, Role::Admin, "delete rooms")?;
    state.require_home(&g)?;
    let room = state.store.room(&g.id, &rid)?.ok_or_else(|| AppError::not_found("no such room"))?;
    state.store.delete_room(&g.id, &rid).await.map_err(|e| match e {
        StoreError::NotFound => AppError::not_found("no such room"),
        e => e.into(),
    })?;
    let dropped = state.rooms.lock().expect("rooms lock").clear_room(&(g.id, rid));
    let dropped: Vec<_> = dropped.into_iter().map(|p| ((g.id, rid), p)).collect();
    state.notify_dropped(&dropped)?;
    state.announce_room(&g, &room, true);
    state.notify_group(&g)?;
    Ok(StatusCode::NO_CONTENT)
}
