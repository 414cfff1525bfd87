//! Sign-in through an OpenID Connect provider: `/auth/oidc/{id}/start` sends the browser to
//! the provider, `/auth/oidc/{id}/callback` takes it back, maps the identity to a local
//! account and starts a session. Failures land on the sign-in page with the reason.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Auth, client_ip, may_sign_up, session_cookies, set_cookie, use_ticket};
use super::cookies;
use crate::accounts::{self, AccountError};
use crate::oidc::Callback;
use crate::state::AppState;
use crate::time::random_hex;

/// The query of `/auth/oidc/{id}/start`.
#[derive(Deserialize)]
pub struct Start {
    /// `1`: link this identity to the logged-in account instead of signing in.
    link: Option<String>,
    /// A group invite code: the sign-up ticket on an invite-only node.
    invite: Option<String>,
}

fn redirect(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Back to the sign-in page, saying why.
fn fail(why: &str) -> Response {
    let q: String = why.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    redirect(&format!("/login?signin_error={q}"))
}

/// `GET /auth/oidc/{id}/start[?link=1][&invite=CODE]`.
pub async fn start(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, Query(q): Query<Start>) -> Response {
    let link_to = match (q.link.as_deref(), Auth::from_headers(&state, &headers)) {
        (Some("1"), Ok(Some(auth))) => Some(auth.name.as_str().to_owned()),
        (Some("1"), _) => return fail("log in first to link an identity to your account"),
        _ => None,
    };
    let invite = q.invite.filter(|c| !c.is_empty() && c.len() <= 64);
    let binding = random_hex(32);
    match state.oidc.start(&id, &binding, link_to, invite).await {
        Ok(url) => {
            let mut res = redirect(&url);
            let c = set_cookie(cookies::OIDC, &binding, Some(crate::oidc::FLOW_TTL.as_secs()), state.settings.secure_cookies);
            res.headers_mut().append(header::SET_COOKIE, c);
            res
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// `GET /auth/oidc/{id}/callback?code=…&state=…`: the provider's answer.
pub async fn callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let binding = cookies::get(&headers, cookies::OIDC);
    let mut res = match finish(&state, &id, &q, binding, client_ip(addr)).await {
        Ok(res) => res,
        Err(why) => {
            metrics::counter!("voicechat_oidc_logins_total", "result" => "refused").increment(1);
            tracing::info!(provider = %id, %why, "OpenID sign-in refused");
            fail(&why)
        }
    };
    let gone = set_cookie(cookies::OIDC, "gone", Some(0), state.settings.secure_cookies);
    res.headers_mut().append(header::SET_COOKIE, gone);
    res
}

async fn finish(state: &AppState, id: &str, q: &Callback, binding: Option<&str>, ip: std::net::IpAddr) -> Result<Response, String> {
    let who = state.oidc.finish(id, q, binding).await.map_err(|e| e.to_string())?;
    let invite = who.invite.clone();
    let mut ticket = None;
    let result = accounts::sign_in_oidc(&state.store, &who, || {
        ticket = may_sign_up(state, ip, invite.as_deref()).map_err(|e| AccountError::SignUpRefused(refusal(&e)))?;
        Ok(())
    })
    .await;
    let (user, how) = match result {
        Ok(r) => r,
        Err(AccountError::WrongCredentials) => return Err("this account is disabled".into()),
        Err(AccountError::SignUpRefused(m)) => return Err(m.into()),
        Err(e) => return Err(e.to_string()),
    };
    if how == accounts::OidcMatch::Created {
        use_ticket(state, &user.name, ticket).await.map_err(|_| "the account was made, but its invite could not be used; log in and open the link again".to_owned())?;
    }
    metrics::counter!("voicechat_oidc_logins_total", "result" => "ok").increment(1);
    tracing::info!(user = %user.name, provider = %id, ?how, "signed in through identity provider");
    let mut res = redirect("/");
    session_cookies(state, &user.name, &random_hex(32), res.headers_mut())
        .await
        .map_err(|_| "something went wrong on the node; try again".to_owned())?;
    Ok(res)
}

/// The sentence of a sign-up refusal (the registration mode's words, or the rate limit).
fn refusal(e: &super::AppError) -> &'static str {
    match e.status() {
        StatusCode::TOO_MANY_REQUESTS => "too many sign-ups from this address; try again later",
        StatusCode::FORBIDDEN => "this node takes new accounts only as its administrator allows (closed, or by invite link)",
        _ => "the account could not be created",
    }
}
