//! The HTTP surface: `app(state)` builds every route, the CSRF and security-header layers,
//! body limits, the embedded web client, health and metrics.

mod admin;
mod auth;
mod cookies;
mod error;
mod groups;
mod oidc;
mod members;
pub(crate) mod tokens;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use rust_embed::RustEmbed;
use tower_http::set_header::SetResponseHeaderLayer;

pub use auth::{Auth, close_sockets};
pub use cookies::{SESSION as SESSION_COOKIE, get as get_cookie};
pub use error::AppError;

use crate::state::AppState;

/// Largest request body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The Content-Security-Policy of every answer: only this origin's scripts, styles,
/// sockets and media; no inline script, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// The web client, embedded at compile time.
#[derive(RustEmbed)]
#[folder = "../web-client/"]
#[exclude = "tests/*"]
#[exclude = "node_modules/*"]
#[exclude = "package*.json"]
#[exclude = "*.md"]
struct Assets;

/// Every route of the node.
pub fn app(state: AppState) -> Router {
    // Install the recorder before the first request, so nothing recorded is lost.
    crate::metrics::handle();
    let api = Router::new()
        .route("/session", get(auth::session))
        .route("/register", post(auth::register))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/password", post(auth::change_password))
        .route("/profile", axum::routing::put(auth::set_profile))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{name}", patch(admin::set_user))
        .route("/admin/settings", get(admin::settings).put(admin::set_settings))
        .route("/ice", get(ice))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{gid}", get(groups::get).patch(groups::rename).delete(groups::delete))
        .route("/groups/{gid}/members", post(members::add))
        .route("/groups/{gid}/members/{user}", patch(members::set_role).delete(members::remove))
        .route("/groups/{gid}/invites", get(members::list_invites).post(members::create_invite))
        .route("/groups/{gid}/invites/{code}", axum::routing::delete(members::revoke_invite))
        .route("/groups/{gid}/rooms", post(groups::create_room))
        .route("/groups/{gid}/rooms/{rid}", patch(groups::rename_room).delete(groups::delete_room))
        .route("/invites/remote", post(members::accept_remote))
        .route("/invites/{code}", get(members::preview))
        .route("/invites/{code}/accept", post(members::accept))
        .route("/invitations", get(members::invitations))
        .route("/invitations/{gid}/accept", post(members::accept_invitation))
        .route("/invitations/{gid}/decline", post(members::decline_invitation))
        .route("/blocks", get(members::blocks).post(members::block))
        .route("/blocks/{node}", axum::routing::delete(members::unblock))
        .fallback(|| async { AppError::not_found("no such API endpoint") })
        .layer(middleware::from_fn(auth::require_csrf))
        .layer(middleware::from_fn_with_state(state.clone(), tokens::require_scope));

    let hsts = state
        .settings
        .secure_cookies
        .then(|| HeaderValue::from_static("max-age=31536000"));
    Router::new()
        .nest("/api", api)
        .route("/ws", get(crate::ws::upgrade))
        .route("/auth/oidc/{id}/start", get(oidc::start))
        .route("/auth/oidc/{id}/callback", get(oidc::callback))
        .route("/healthz", get(|| async { "ok" }))
        .route("/.well-known/voicechat/node", get(node_card))
        .route("/metrics", get(metrics_text))
        .fallback(static_file)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts))
        .with_state(state)
}

/// `GET /metrics`: the recorder's series, then the audio server's per-speaker ones (which
/// come and go with the speakers carried, so they are kept apart from the recorder, which
/// never forgets a series).
async fn metrics_text(State(state): State<AppState>) -> String {
    let mut text = crate::metrics::handle().render();
    if let Some(sfu) = &state.sfu {
        let speakers = sfu.speaker_metrics();
        if !speakers.is_empty() && !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&speakers);
    }
    text
}

/// Which room the servers are for.
#[derive(serde::Deserialize)]
struct IceQuery {
    group: Option<String>,
    room: Option<String>,
}

/// `GET /api/ice[?group=G&room=R]`: the STUN/TURN servers a browser should use: the node's
/// own first, then the operator's. TURN credentials (expiring, see `turn::creds`) only for
/// a member of the room's group joining it; without a room, STUN only. 404 for a room the
/// user cannot see.
async fn ice(State(state): State<AppState>, auth: Auth, Query(q): Query<IceQuery>) -> Result<Response, AppError> {
    let mut servers = Vec::new();
    let mut expires_at = None;
    if let (Some(g), Some(r)) = (&q.group, &q.room) {
        let (g, r) = (groups::parse_group(g)?, groups::parse_room(r)?);
        state.core.membership(&g, &auth.id)?;
        if state.store.room(&g, &r)?.is_none() {
            return Err(AppError::not_found("no such room"));
        }
        if let Some(turn) = &state.turn {
            let (server, expiry) = turn.turn_server(&auth.id);
            servers.push(server);
            expires_at = Some(expiry);
        }
    }
    if let Some(turn) = &state.turn {
        servers.push(turn.stun_server());
    }
    servers.extend(state.settings.ice_servers.iter().cloned());
    let body = serde_json::json!({"ice_servers": servers, "expires_at": expires_at, "e2ee": state.settings.e2ee});
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response())
}

/// `GET /.well-known/voicechat/node`: this node's signed card (canonical CBOR), so another
/// node can check that this name belongs to this key under this origin's certificate.
async fn node_card(State(state): State<AppState>) -> Response {
    match state.fed() {
        Some(fed) => ([(header::CONTENT_TYPE, "application/cbor")], fed.card().to_vec()).into_response(),
        None => AppError::not_found("this node does not federate").into_response(),
    }
}

/// Files of the web client; any other path is a client-side route and gets `index.html`.
async fn static_file(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (file, name) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(f) => (f, path),
        None => match Assets::get("index.html") {
            Some(f) => (f, "index.html"),
            None => return (StatusCode::NOT_FOUND, "the web client is not built into this node").into_response(),
        },
    };
    let mime = file.metadata.mimetype().to_owned();
    let cache = if name == "index.html" { "no-cache" } else { "public, max-age=300" };
    (
        [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, cache.to_owned())],
        file.data,
    )
        .into_response()
}
