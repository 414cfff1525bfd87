//! The admin HTTP API's side of authentication: `Authorization: Bearer <token>` (made
//! with `voicechat token create`) instead of a session cookie, limited to its scopes:
//! `users` (the `/api/admin/…` endpoints, as the administrator has them), `groups`, `rooms` and `invites` (the
//! ordinary group endpoints, acting as the token's user). A request with a token never
//! uses a cookie, so it needs no CSRF header: browsers never add this header by themselves.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::Auth;
use super::error::AppError;
use crate::state::AppState;
use crate::store::{Scope, TokenRecord};

/// The secret of an `Authorization: Bearer` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (kind, secret) = v.split_once(' ')?;
    kind.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

fn token(state: &AppState, headers: &HeaderMap) -> Result<Option<TokenRecord>, AppError> {
    match bearer(headers) {
        None => Ok(None),
        Some(secret) => match state.store.token(secret)? {
            Some(t) => Ok(Some(t)),
            None => Err(AppError::unauthenticated("unknown or revoked token")),
        },
    }
}

/// The user a request's token acts as (`None` without a token; an error for a token
/// without a user, or whose user is disabled).
pub fn acting_user(state: &AppState, headers: &HeaderMap) -> Result<Option<Auth>, AppError> {
    let Some(t) = token(state, headers)? else { return Ok(None) };
    let name = t.user.ok_or_else(|| AppError::forbidden("this token acts as no user (voicechat token create --user)"))?;
    match state.store.user(&name)? {
        Some(u) if !u.disabled => {}
        _ => return Err(AppError::forbidden("the token's user is disabled or gone")),
    }
    Ok(Some(Auth { id: state.local_user(&name), name, session: String::new() }))
}

/// The scope an API path needs from a token (`None`: not open to tokens). `path` is
/// relative to `/api`. Reading groups is open to any group-related scope, so a bot with
/// only `rooms` can find the group ids it works on.
pub fn scope_for(method: &Method, path: &str) -> Option<&'static [Scope]> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    const ANY_GROUP: &[Scope] = &[Scope::Groups, Scope::Rooms, Scope::Invites];
    match parts.as_slice() {
        ["admin", ..] => Some(&[Scope::Users]),
        ["groups"] | ["groups", _] if method == Method::GET => Some(ANY_GROUP),
        ["groups"] | ["groups", _] | ["groups", _, "members", ..] => Some(&[Scope::Groups]),
        ["groups", _, "rooms", ..] => Some(&[Scope::Rooms]),
        ["groups", _, "invites", ..] => Some(&[Scope::Invites]),
        _ => None,
    }
}

/// Lets a token through only to the endpoints its scopes cover.
pub async fn require_scope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let t = match token(&state, req.headers()) {
        Ok(None) => return next.run(req).await,
        Ok(Some(t)) => t,
        Err(e) => return e.into_response(),
    };
    match scope_for(req.method(), req.uri().path()) {
        None => AppError::forbidden("tokens cannot use this endpoint").into_response(),
        Some(need) if !need.iter().any(|s| t.scopes.contains(s)) => {
            AppError::forbidden(format!("this token lacks the {:?} scope", need[0]).to_lowercase()).into_response()
        }
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        let s = |m: Method, p: &str| scope_for(&m, p).map(|s| s.to_vec());
        assert_eq!(s(Method::GET, "/admin/users"), Some(vec![Scope::Users]));
        assert_eq!(s(Method::PATCH, "/admin/users/bob"), Some(vec![Scope::Users]));
        assert_eq!(s(Method::PUT, "/admin/settings"), Some(vec![Scope::Users]));
        assert_eq!(s(Method::POST, "/groups"), Some(vec![Scope::Groups]));
        assert_eq!(s(Method::GET, "/groups/g1").map(|v| v.len()), Some(3));
        assert_eq!(s(Method::DELETE, "/groups/g1"), Some(vec![Scope::Groups]));
        assert_eq!(s(Method::POST, "/groups/g1/members"), Some(vec![Scope::Groups]));
        assert_eq!(s(Method::POST, "/groups/g1/rooms"), Some(vec![Scope::Rooms]));
        assert_eq!(s(Method::DELETE, "/groups/g1/invites/abc"), Some(vec![Scope::Invites]));
        for closed in ["/session", "/password", "/logout", "/invites/x/accept", "/blocks", "/ice"] {
            assert_eq!(s(Method::POST, closed), None, "{closed}");
        }
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer vct_abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("vct_abc"));
        h.insert(header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
