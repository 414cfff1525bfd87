//! TURN REST-style credentials (draft-uberti-behave-turn-rest, as coturn's
//! `use-auth-secret`): the username is `<expiry unix seconds>:<user id>`, the password is
//! base64(HMAC-SHA1(secret, username)). The node mints them; the TURN server recomputes the
//! password and refuses an expired username. The secret never leaves the data dir.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// The shared secret (32 random bytes in `<data dir>/turn.secret`, mode 0600).
#[derive(Clone)]
pub struct Secret(Arc<hmac::Key>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why credentials were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredError {
    /// Not `<expiry>:<user>`.
    #[error("malformed username")]
    Malformed,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

impl Secret {
    /// A secret from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, bytes)))
    }

    /// Reads `turn.secret` from the data dir, creating it (0600) on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("turn.secret");
        match std::fs::read(&path) {
            Ok(b) if b.len() >= 16 => return Ok(Self::from_bytes(&b)),
            Ok(_) => return Err(std::io::Error::other(format!("{} is too short", path.display()))),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&path)?, &b)?;
        Ok(Self::from_bytes(&b))
    }

    fn password(&self, username: &str) -> String {
        STANDARD.encode(hmac::sign(&self.0, username.as_bytes()).as_ref())
    }

    /// Credentials for `user` valid for `ttl` from `now`: (username, password, expiry).
    pub fn mint(&self, user: &str, now: u64, ttl: Duration) -> (String, String, u64) {
        let expires_at = now + ttl.as_secs();
        let username = format!("{expires_at}:{user}");
        let password = self.password(&username);
        (username, password, expires_at)
    }

    /// The password of a username that has not expired at `now`.
    pub fn check(&self, username: &str, now: u64) -> Result<String, CredError> {
        let (expiry, user) = username.split_once(':').ok_or(CredError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredError::Malformed)?;
        if user.is_empty() {
            return Err(CredError::Malformed);
        }
        if expiry <= now {
            return Err(CredError::Expired);
        }
        Ok(self.password(username))
    }
}

/// The user a REST username names.
pub fn user_of(username: &str) -> Option<&str> {
    username.split_once(':').map(|(_, u)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_check_until_they_expire() {
        let s = Secret::from_bytes(b"0123456789abcdef0123456789abcdef");
        let (u, p, exp) = s.mint("alice@alpha", 1_000, Duration::from_secs(60));
        assert_eq!(u, "1060:alice@alpha");
        assert_eq!(exp, 1060);
        assert_eq!(s.check(&u, 1_059), Ok(p.clone()));
        assert_eq!(s.check(&u, 1_060), Err(CredError::Expired));
        assert_eq!(s.check("alice", 0), Err(CredError::Malformed));
        // Another secret gives another password: a forged one does not match.
        let other = Secret::from_bytes(b"another secret, another password");
        assert_ne!(other.check(&u, 1_000).unwrap(), p);
        // Known answer (coturn computes the same): HMAC-SHA1 of the username, base64.
        let k = Secret::from_bytes(b"secret");
        assert_eq!(k.password("1700000000:bob@beta"), "B3qgWn6q63bMSz9k/EqNGM3wHoI=");
        assert_eq!(user_of(&u), Some("alice@alpha"));
    }

    #[test]
    fn the_secret_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = Secret::load_or_create(dir.path()).unwrap();
        let b = Secret::load_or_create(dir.path()).unwrap();
        assert_eq!(a.password("x"), b.password("x"), "the same secret after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("turn.secret")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
