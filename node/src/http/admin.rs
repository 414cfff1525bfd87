//! The administrator's endpoints: list accounts, disable and re-enable them (closing their
//! sockets at once), and choose who may sign up.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use voicechat_protocol::ids::UserName;

use super::auth::{Auth, close_sockets, registration_mode};
use super::error::{AppError, Body};
use crate::accounts;
use crate::state::AppState;
use crate::store::RegistrationMode;

/// A logged-in administrator.
pub struct Admin(Auth);

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, AppError> {
        let auth = Auth::from_request_parts(parts, state).await?;
        match state.store.user(&auth.name)? {
            Some(u) if u.admin => Ok(Admin(auth)),
            _ => Err(AppError::forbidden("only the node's administrator may do that")),
        }
    }
}

/// `GET /api/admin/users`: every account, oldest first, with its open sockets.
pub async fn users(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, AppError> {
    let mut users = state.store.users()?;
    users.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.as_str().cmp(b.name.as_str())));
    let list: Vec<Value> = users
        .iter()
        .map(|u| {
            let id = state.local_user(&u.name);
            json!({"name": u.name.as_str(), "id": id.to_string(), "admin": u.admin, "disabled": u.disabled,
                   "created_at": u.created_at, "sockets": state.core.hub().user_sockets(&id)})
        })
        .collect();
    Ok(Json(json!({"users": list})))
}

/// The body of `PATCH /api/admin/users/{name}`.
#[derive(Deserialize)]
pub struct UserChange {
    disabled: bool,
}

/// `PATCH /api/admin/users/{name}`: disables (ending every session and closing every
/// socket at once) or re-enables an account. An administrator cannot disable themself.
pub async fn set_user(
    State(state): State<AppState>,
    Admin(me): Admin,
    Path(name): Path<String>,
    Body(c): Body<UserChange>,
) -> Result<StatusCode, AppError> {
    let name = UserName::new(&name).map_err(|_| AppError::not_found("no such user"))?;
    if name == me.name && c.disabled {
        return Err(AppError::bad_request("you cannot disable your own account"));
    }
    accounts::set_disabled(&state.store, name.as_str(), c.disabled).await?;
    if c.disabled {
        close_sockets(&state, &state.local_user(&name), None, None, "account disabled").await;
    }
    tracing::info!(user = %name, disabled = c.disabled, by = %me.name, "account changed");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/admin/settings`.
pub async fn settings(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({"registration": registration_mode(&state)?})))
}

/// The body of `PUT /api/admin/settings`.
#[derive(Deserialize)]
pub struct SettingsChange {
    registration: RegistrationMode,
}

/// `PUT /api/admin/settings`: sets who may sign up (kept across restarts).
pub async fn set_settings(
    State(state): State<AppState>,
    Admin(me): Admin,
    Body(c): Body<SettingsChange>,
) -> Result<Json<Value>, AppError> {
    state.store.set_registration_mode(c.registration).await?;
    tracing::info!(mode = ?c.registration, by = %me.name, "registration mode set");
    Ok(Json(json!({"registration": c.registration})))
}
