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

/// Who administers: the node's administrator, logged in (their name), or a script with an
/// admin API token of the `users` scope (`None`; the scope was checked by
/// [`super::tokens::require_scope`] before the request got here).
pub struct Admin(Option<UserName>);

impl Admin {
    fn who(&self) -> &str {
        self.0.as_ref().map_or("an admin token", UserName::as_str)
    }
}

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, AppError> {
        if super::tokens::bearer(&parts.headers).is_some() {
            return match state.store.token(super::tokens::bearer(&parts.headers).unwrap_or_default())? {
                Some(t) if t.scopes.contains(&crate::store::Scope::Users) => Ok(Admin(None)),
                Some(_) => Err(AppError::forbidden("this token lacks the users scope")),
                None => Err(AppError::unauthenticated("unknown or revoked token")),
            };
        }
        let auth = Auth::from_request_parts(parts, state).await?;
        match state.store.user(&auth.name)? {
            Some(u) if u.admin => Ok(Admin(Some(auth.name))),
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
    me: Admin,
    Path(name): Path<String>,
    Body(c): Body<UserChange>,
) -> Result<StatusCode, AppError> {
    let name = UserName::new(&name).map_err(|_| AppError::not_found("no such user"))?;
    if me.0.as_ref() == Some(&name) && c.disabled {
        return Err(AppError::bad_request("you cannot disable your own account"));
    }
    accounts::set_disabled(&state.store, name.as_str(), c.disabled).await?;
    if c.disabled {
        close_sockets(&state, &state.local_user(&name), None, None, "account disabled").await;
    }
    tracing::info!(user = %name, disabled = c.disabled, by = me.who(), "account changed");
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/admin/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    password: String,
}

/// `POST /api/admin/users`: makes an account (whatever the registration mode).
pub async fn create_user(State(state): State<AppState>, admin: Admin, Body(b): Body<NewUser>) -> Result<(StatusCode, Json<Value>), AppError> {
    let u = accounts::create_user(&state.store, &state.hasher, &b.name, &b.password).await?;
    tracing::info!(user = %u.name, by = admin.who(), "account created");
    let id = state.local_user(&u.name);
    Ok((StatusCode::CREATED, Json(json!({"name": u.name.as_str(), "id": id.to_string(), "admin": u.admin, "disabled": false, "created_at": u.created_at, "sockets": 0}))))
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
    me: Admin,
    Body(c): Body<SettingsChange>,
) -> Result<Json<Value>, AppError> {
    state.store.set_registration_mode(c.registration).await?;
    tracing::info!(mode = ?c.registration, by = me.who(), "registration mode set");
    Ok(Json(json!({"registration": c.registration})))
}
