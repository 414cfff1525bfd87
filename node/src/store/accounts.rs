//! Accounts, login sessions (keyed by the SHA-256 of the cookie, never the cookie
//! itself), the sweep that drops expired sessions, and node-wide account settings.

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::UserName;

use super::{SessionRecord, Store, StoreError, T, UserRecord, dec, enc};

/// The key a session is stored under: the hex SHA-256 of its cookie value. The cookie is
/// 256 random bits, so a plain hash (no salt, no stretching) cannot be reversed; it also
/// tags the sockets opened with that session.
pub fn session_tag(cookie: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes()))
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationMode {
    /// Anyone who reaches the node.
    #[default]
    Open,
    /// Only someone holding a valid group invite link (it doubles as a sign-up ticket).
    InviteOnly,
    /// Nobody; the administrator adds accounts with `voicechat user add`.
    Closed,
}

const ADMIN_KEY: &str = "admin_claimed";
const REGISTRATION_KEY: &str = "registration";

impl Store {
    /// Creates an account; `Conflict` if the name is taken.
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.tree(T::Users)
            .compare_and_swap(user.name.as_str(), None::<&[u8]>, Some(enc(user)))?
            .map_err(|_| StoreError::Conflict)?;
        self.flush().await
    }

    /// Replaces an existing account.
    pub async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let users = self.tree(T::Users);
        if !users.contains_key(user.name.as_str())? {
            return Err(StoreError::NotFound);
        }
        users.insert(user.name.as_str(), enc(user))?;
        self.flush().await
    }

    /// One account.
    pub fn user(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        self.tree(T::Users).get(name.as_str())?.map(|v| dec("users", &v)).transpose()
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.tree(T::Users).iter().values().map(|v| dec("users", &v?)).collect()
    }

    /// Stores a new session under the hash of its cookie value.
    pub async fn put_session(&self, cookie: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.tree(T::Sessions).insert(session_tag(cookie), enc(s))?;
        self.flush().await
    }

    /// A session by its cookie value, if it exists (expired ones included until swept:
    /// the caller checks the time).
    pub fn session(&self, cookie: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.tree(T::Sessions).get(session_tag(cookie))?.map(|v| dec("sessions", &v)).transpose()
    }

    /// Ends one session, by its cookie value.
    pub async fn delete_session(&self, cookie: &str) -> Result<(), StoreError> {
        self.tree(T::Sessions).remove(session_tag(cookie))?;
        self.flush().await
    }

    /// Ends every session of `user` except the one with cookie `keep`; also drops expired
    /// sessions of anyone.
    pub async fn end_sessions(&self, user: &UserName, keep: Option<&str>, now: u64) -> Result<(), StoreError> {
        let sessions = self.tree(T::Sessions);
        let keep = keep.map(session_tag);
        for item in sessions.iter() {
            let (k, v) = item?;
            let s: SessionRecord = dec("sessions", &v)?;
            let mine = &s.user == user && keep.as_ref().is_none_or(|keep| keep.as_bytes() != &*k);
            if mine || s.expires_at <= now {
                sessions.remove(k)?;
            }
        }
        self.flush().await
    }

    /// Drops every session expired at `now`; returns how many. Flushes only if it dropped any.
    pub async fn purge_sessions(&self, now: u64) -> Result<usize, StoreError> {
        let sessions = self.tree(T::Sessions);
        let mut n = 0;
        for item in sessions.iter() {
            let (k, v) = item?;
            let s: SessionRecord = dec("sessions", &v)?;
            if s.expires_at <= now {
                sessions.remove(k)?;
                n += 1;
            }
        }
        if n > 0 {
            self.flush().await?;
        }
        Ok(n)
    }

    /// Number of stored sessions (live or not yet swept).
    pub fn session_count(&self) -> usize {
        self.tree(T::Sessions).len()
    }

    /// Makes `user` the node's administrator if nobody was yet; true if this call did.
    pub async fn claim_admin(&self, user: &UserName) -> Result<bool, StoreError> {
        let won = self
            .tree(T::Settings)
            .compare_and_swap(ADMIN_KEY, None::<&[u8]>, Some(user.as_str().as_bytes()))?
            .is_ok();
        if won {
            self.flush().await?;
        }
        Ok(won)
    }

    /// Makes the oldest account the administrator if none was claimed (the upgrade from
    /// data written before administrators existed). Not flushed: the caller flushes.
    pub(crate) fn adopt_oldest_admin(&self) -> Result<(), StoreError> {
        let settings = self.tree(T::Settings);
        if settings.contains_key(ADMIN_KEY)? {
            return Ok(());
        }
        let oldest = self.users()?.into_iter().min_by(|a, b| (a.created_at, a.name.as_str()).cmp(&(b.created_at, b.name.as_str())));
        if let Some(mut user) = oldest {
            user.admin = true;
            self.tree(T::Users).insert(user.name.as_str(), enc(&user))?;
            settings.insert(ADMIN_KEY, user.name.as_str().as_bytes())?;
            tracing::info!(user = %user.name, "the oldest account administers this node");
        }
        Ok(())
    }

    /// The registration mode an administrator set, if any.
    pub fn registration_mode(&self) -> Result<Option<RegistrationMode>, StoreError> {
        self.tree(T::Settings).get(REGISTRATION_KEY)?.map(|v| dec("settings", &v)).transpose()
    }

    /// Sets the registration mode (kept across restarts; it beats the config's).
    pub async fn set_registration_mode(&self, mode: RegistrationMode) -> Result<(), StoreError> {
        self.tree(T::Settings).insert(REGISTRATION_KEY, enc(&mode))?;
        self.flush().await
    }

    /// The local account an identity provider's subject signs in as.
    pub fn oidc_link(&self, provider: &str, sub: &str) -> Result<Option<UserName>, StoreError> {
        let Some(v) = self.tree(T::OidcLinks).get(link_key(provider, sub))? else { return Ok(None) };
        let name = std::str::from_utf8(&v).ok().and_then(|s| UserName::new(s).ok()).ok_or(StoreError::Corrupt("oidc_links"))?;
        Ok(Some(name))
    }

    /// Links an identity to a local account; `Conflict` if it is linked already.
    pub async fn put_oidc_link(&self, provider: &str, sub: &str, user: &UserName) -> Result<(), StoreError> {
        self.tree(T::OidcLinks)
            .compare_and_swap(link_key(provider, sub), None::<&[u8]>, Some(user.as_str().as_bytes()))?
            .map_err(|_| StoreError::Conflict)?;
        self.flush().await
    }

    /// The identities linked to `user`, as `(provider, sub)`.
    pub fn oidc_links_of(&self, user: &UserName) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::OidcLinks).iter() {
            let (k, v) = item?;
            if &*v == user.as_str().as_bytes() {
                let k = String::from_utf8_lossy(&k);
                if let Some((p, s)) = k.split_once('\0') {
                    out.push((p.to_owned(), s.to_owned()));
                }
            }
        }
        Ok(out)
    }
}

fn link_key(provider: &str, sub: &str) -> Vec<u8> {
    format!("{provider}\0{sub}").into_bytes()
}
