//! Reading the two cookies the node sets (`vc_session`, `vc_csrf`) and writing them with
//! the attributes the design asks for.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The login session cookie.
pub const SESSION: &str = "vc_session";
/// The CSRF double-submit cookie.
pub const CSRF: &str = "vc_csrf";
/// Binds an OpenID sign-in under way to the browser that started it. SameSite=Lax: the
/// provider's redirect back is a cross-site navigation.
pub const OIDC: &str = "vc_oidc";
/// Sessions last this long (seconds).
pub const SESSION_TTL: u64 = 30 * 24 * 3600;

/// The value of cookie `name` in the request, if present.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value; `max_age` None makes a browser-session cookie, Some(0) deletes.
pub fn set(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let same_site = if name == OIDC { "Lax" } else { "Strict" };
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; vc_session=abc; vc_csrf=".parse().unwrap());
        assert_eq!(get(&h, SESSION), Some("abc"));
        assert_eq!(get(&h, CSRF), None, "empty value counts as absent");
        assert_eq!(get(&h, "vc"), None);
        assert!(set(SESSION, "x", Some(0), true).ends_with("Max-Age=0; Secure"));
    }
}
