//! Sessions, CSRF and the account endpoints: session, register, login, logout, password.
//!
//! Limits: a login or password change reserves its slot in the failed-login limiter before
//! the password is hashed; sign-ups are limited per client address; logout and a password
//! change close the sockets of the sessions they end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use voicechat_protocol::ids::{UserId, UserName};

use super::cookies;
use super::error::{AppError, Body};
use crate::accounts;
use crate::state::AppState;
use crate::store::{RegistrationMode, SessionRecord};
use crate::time::{constant_eq, random_hex, unix_now};

/// A logged-in user, taken from the session cookie.
pub struct Auth {
    /// The local account name.
    pub name: UserName,
    /// `name@node`.
    pub id: UserId,
    /// The session cookie value.
    pub session: String,
}

impl Auth {
    /// Looks up the session cookie in `headers`; `None` if absent, unknown, expired or the
    /// account is disabled.
    pub fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Option<Self>, AppError> {
        // An admin API token, when given, is the only credential looked at.
        if super::tokens::bearer(headers).is_some() {
            return super::tokens::acting_user(state, headers);
        }
        let Some(sid) = cookies::get(headers, cookies::SESSION) else { return Ok(None) };
        let Some(s) = state.store.session(sid)? else { return Ok(None) };
        if s.expires_at <= unix_now() {
            return Ok(None);
        }
        match state.store.user(&s.user)? {
            Some(u) if !u.disabled => {}
            _ => return Ok(None),
        }
        Ok(Some(Self { id: state.local_user(&s.user), name: s.user, session: sid.to_owned() }))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Self::from_headers(state, &parts.headers)?
            .ok_or_else(|| AppError::unauthenticated("log in first"))
    }
}

/// Refuses state-changing requests whose `X-CSRF-Token` header does not match the
/// `vc_csrf` cookie (double-submit; the cookie is SameSite=Strict and HttpOnly). A request
/// with a bearer token uses no cookie, so it cannot be forged cross-site: it is let through.
pub async fn require_csrf(req: Request, next: Next) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && super::tokens::bearer(req.headers()).is_none();
    if unsafe_method {
        let cookie = cookies::get(req.headers(), cookies::CSRF);
        let header = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
        let ok = matches!((cookie, header), (Some(c), Some(h)) if c.len() >= 32 && constant_eq(c, h));
        if !ok {
            return AppError::csrf().into_response();
        }
    }
    next.run(req).await
}

fn user_json(state: &AppState, name: &UserName) -> serde_json::Value {
    let user = state.store.user(name).ok().flatten();
    let admin = user.as_ref().is_some_and(|u| u.admin);
    let display_name = user.and_then(|u| u.display_name);
    json!({
        "id": state.local_user(name).to_string(), "name": name.as_str(), "node": state.settings.node_name.as_str(),
        "admin": admin, "display_name": display_name,
    })
}

/// Who may sign up now: the administrator's choice, else the configured mode.
pub fn registration_mode(state: &AppState) -> Result<RegistrationMode, AppError> {
    Ok(state.store.registration_mode()?.unwrap_or(state.settings.registration))
}

/// The final message of a socket whose login session ended.
pub fn signed_out(why: &str) -> crate::hub::Outbound {
    crate::hub::encode(&json!({"type": "signed_out", "reason": why}))
}

/// Starts a fresh session (new id, new CSRF token) and builds the answer.
async fn start_session(state: &AppState, name: &UserName, status: StatusCode) -> Result<Response, AppError> {
    let csrf = random_hex(32);
    let mut res = (status, axum::Json(json!({"user": user_json(state, name), "csrf": csrf}))).into_response();
    session_cookies(state, name, &csrf, res.headers_mut()).await?;
    Ok(res)
}

/// Stores a fresh session for `name` and adds its cookie and the CSRF cookie to `h`.
pub async fn session_cookies(state: &AppState, name: &UserName, csrf: &str, h: &mut HeaderMap) -> Result<(), AppError> {
    let sid = random_hex(32);
    let now = unix_now();
    let record = SessionRecord { user: name.clone(), created_at: now, expires_at: now + cookies::SESSION_TTL };
    state.store.put_session(&sid, &record).await?;
    let secure = state.settings.secure_cookies;
    h.append(header::SET_COOKIE, set_cookie(cookies::SESSION, &sid, Some(cookies::SESSION_TTL), secure));
    h.append(header::SET_COOKIE, set_cookie(cookies::CSRF, csrf, None, secure));
    Ok(())
}

pub(super) fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    HeaderValue::from_str(&cookies::set(name, value, max_age, secure)).expect("cookie is ASCII")
}

/// `GET /api/session`: who am I, and the CSRF token for this browser.
pub async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let user = Auth::from_headers(&state, &headers)?.map(|a| user_json(&state, &a.name));
    let (csrf, fresh) = match cookies::get(&headers, cookies::CSRF) {
        Some(c) if c.len() >= 32 => (c.to_owned(), false),
        _ => (random_hex(32), true),
    };
    let body = json!({
        "user": user, "csrf": csrf, "node": state.settings.node_name.as_str(),
        "registration": registration_mode(&state)?, "password_login": state.settings.password_login,
        "providers": state.oidc.list().into_iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
    });
    let mut res = axum::Json(body).into_response();
    if fresh {
        let c = set_cookie(cookies::CSRF, &csrf, None, state.settings.secure_cookies);
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
}

/// Username and password, as both register and login take them.
#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// The body of `POST /api/register`.
#[derive(Deserialize)]
pub struct SignUp {
    username: String,
    password: String,
    /// A group invite code: the ticket to sign up on an invite-only node (and the group is
    /// joined at once).
    invite: Option<String>,
    /// The name shown to others (any script); the user name when absent.
    display_name: Option<String>,
}

/// `POST /api/register`: open to anyone, to invite holders, or to nobody, as the node's
/// registration mode says; at most `registrations_per_hour` per client address.
pub async fn register(
    State(state): State<AppState>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(c): Body<SignUp>,
) -> Result<Response, AppError> {
    require_password_login(&state)?;
    let invite = c.invite.as_deref().map(str::trim).filter(|i| !i.is_empty());
    // Checked first: a bad display name creates no account.
    let display = c.display_name.as_deref().map(accounts::display_name).transpose()?.flatten();
    let ticket = may_sign_up(&state, client_ip(addr), invite)?;
    let user = accounts::create_user(&state.store, &state.hasher, &c.username, &c.password).await?;
    if let Some(d) = &display {
        accounts::set_display_name(&state.store, &user.name, d).await?;
    }
    tracing::info!(user = %user.name, "registered");
    use_ticket(&state, &user.name, ticket).await?;
    start_session(&state, &user.name, StatusCode::CREATED).await
}

/// Whether someone at `ip` holding `invite` may create an account now (registration mode,
/// then the per-address limit, which this spends); the invite to use up if it was the
/// ticket.
pub fn may_sign_up<'a>(state: &AppState, ip: IpAddr, invite: Option<&'a str>) -> Result<Option<&'a str>, AppError> {
    let ticket = match registration_mode(state)? {
        RegistrationMode::Open => None,
        RegistrationMode::Closed => {
            return Err(AppError::forbidden("this node does not take sign-ups; ask its administrator for an account"));
        }
        RegistrationMode::InviteOnly => match invite {
            Some(code) if state.store.invite(code)?.is_some_and(|i| i.usable(unix_now())) => Some(code),
            _ => return Err(AppError::forbidden("this node takes sign-ups only through a valid invite link")),
        },
    };
    if state.signups.len() > 10_000 {
        state.signups.retain_recent();
    }
    if let Err(not_until) = state.signups.check_key(&ip) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        metrics::counter!("voicechat_registrations_total", "result" => "limited").increment(1);
        return Err(AppError::rate_limited_signup(wait.as_secs_f64().ceil() as u64));
    }
    metrics::counter!("voicechat_registrations_total", "result" => "ok").increment(1);
    Ok(ticket)
}

/// Uses up the invite a new account signed up with, joining its group (so a one-use link
/// signs up one person).
pub async fn use_ticket(state: &AppState, user: &UserName, ticket: Option<&str>) -> Result<(), AppError> {
    if let Some(code) = ticket {
        let (_, fx) = state.core.accept_invite(&state.local_user(user), code).await?;
        state.commit(fx).await;
    }
    Ok(())
}

/// The client address when the server recorded it (absent when a test drives the router
/// directly).
pub fn client_ip(parts: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    parts.map(|Extension(ConnectInfo(a))| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Refuses password sign-up and login on a node that turned them off.
fn require_password_login(state: &AppState) -> Result<(), AppError> {
    if state.settings.password_login {
        Ok(())
    } else {
        Err(AppError::forbidden("this node signs people in through its identity provider only"))
    }
}

/// `POST /api/login`.
pub async fn login(
    State(state): State<AppState>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(c): Body<Credentials>,
) -> Result<Response, AppError> {
    require_password_login(&state)?;
    let ip = client_ip(addr);
    let at = reserve(&state, &c.username, ip)?;
    match accounts::authenticate(&state.store, &state.hasher, &c.username, &c.password).await {
        Ok(user) => {
            state.limiter.lock().expect("limiter lock").succeeded(&c.username, ip, at);
            metrics::counter!("voicechat_logins_total", "result" => "ok").increment(1);
            start_session(&state, &user.name, StatusCode::OK).await
        }
        Err(accounts::AccountError::WrongCredentials) => {
            metrics::counter!("voicechat_logins_total", "result" => "failed").increment(1);
            tracing::info!(%ip, "login failed");
            Err(AppError::unauthenticated("wrong user name or password"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reserves a password check for `account` from `ip` in the failed-login limiter (before
/// any hashing); the instant it was reserved at, to give it back if the password is right.
fn reserve(state: &AppState, account: &str, ip: IpAddr) -> Result<Instant, AppError> {
    let now = Instant::now();
    match state.limiter.lock().expect("limiter lock").reserve(account, ip, now) {
        Ok(()) => Ok(now),
        Err(wait) => {
            metrics::counter!("voicechat_logins_total", "result" => "limited").increment(1);
            Err(AppError::rate_limited(wait.as_secs_f64().ceil() as u64))
        }
    }
}

/// `POST /api/logout`: ends the session and replaces the CSRF token.
pub async fn logout(State(state): State<AppState>, auth: Auth) -> Result<Response, AppError> {
    state.store.delete_session(&auth.session).await?;
    let tag = crate::store::session_tag(&auth.session);
    close_sockets(&state, &auth.id, Some(&tag), None, "logged out").await;
    let secure = state.settings.secure_cookies;
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(cookies::SESSION, "gone", Some(0), secure));
    h.append(header::SET_COOKIE, set_cookie(cookies::CSRF, "gone", Some(0), secure));
    Ok(res)
}

/// The body of `POST /api/password`.
#[derive(Deserialize)]
pub struct PasswordChange {
    old_password: String,
    new_password: String,
}

/// `POST /api/password`: needs the old password, limited like login (a stolen session
/// cannot guess it without limit); ends every other session and closes its sockets.
pub async fn change_password(
    State(state): State<AppState>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    auth: Auth,
    Body(p): Body<PasswordChange>,
) -> Result<StatusCode, AppError> {
    let ip = client_ip(addr);
    let at = reserve(&state, auth.name.as_str(), ip)?;
    let check = accounts::authenticate(&state.store, &state.hasher, auth.name.as_str(), &p.old_password).await;
    match check {
        Ok(_) => state.limiter.lock().expect("limiter lock").succeeded(auth.name.as_str(), ip, at),
        Err(accounts::AccountError::WrongCredentials) => {
            return Err(AppError::forbidden("the current password is wrong"));
        }
        Err(e) => return Err(e.into()),
    }
    accounts::set_password(&state.store, &state.hasher, auth.name.as_str(), &p.new_password, Some(&auth.session))
        .await?;
    let keep = crate::store::session_tag(&auth.session);
    close_sockets(&state, &auth.id, None, Some(&keep), "password changed").await;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `PUT /api/profile`.
#[derive(Deserialize)]
pub struct Profile {
    display_name: String,
}

/// `PUT /api/profile`: sets the signed-in user's display name (empty: none, the user name
/// shows); answers with the user as `GET /api/session` shows it. Calls they join from now
/// on carry it, to other nodes too.
pub async fn set_profile(State(state): State<AppState>, auth: Auth, Body(p): Body<Profile>) -> Result<axum::Json<serde_json::Value>, AppError> {
    accounts::set_display_name(&state.store, &auth.name, &p.display_name).await?;
    Ok(axum::Json(user_json(&state, &auth.name)))
}

/// Closes the sockets of `user` opened with login session `login` (all with `None`),
/// except those of `keep`, and gives up their seats in calls.
pub async fn close_sockets(state: &AppState, user: &UserId, login: Option<&str>, keep: Option<&str>, why: &str) {
    for session in state.core.hub().close(user, login, keep, &signed_out(why)) {
        if let Some(sfu) = &state.sfu {
            sfu.disconnect((user.clone(), session));
        }
        state.core.unsubscribe(user, session);
        let (_, fx) = state.core.leave(user, session);
        state.commit(fx).await;
    }
}
