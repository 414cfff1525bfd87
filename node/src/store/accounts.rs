//! Accounts and login sessions, and the sweep that drops expired sessions.

use voicechat_protocol::ids::UserName;

use super::{SessionRecord, Store, StoreError, T, UserRecord, dec, enc};

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

    /// Stores a new session under its cookie value.
    pub async fn put_session(&self, id: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.tree(T::Sessions).insert(id, enc(s))?;
        self.flush().await
    }

    /// A session, if it exists (expired ones included until swept: the caller checks the time).
    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.tree(T::Sessions).get(id)?.map(|v| dec("sessions", &v)).transpose()
    }

    /// Ends one session.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.tree(T::Sessions).remove(id)?;
        self.flush().await
    }

    /// Ends every session of `user` except `keep`; also drops expired sessions of anyone.
    pub async fn end_sessions(&self, user: &UserName, keep: Option<&str>, now: u64) -> Result<(), StoreError> {
        let sessions = self.tree(T::Sessions);
        for item in sessions.iter() {
            let (k, v) = item?;
            let s: SessionRecord = dec("sessions", &v)?;
            let mine = &s.user == user && keep.is_none_or(|keep| keep.as_bytes() != &*k);
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
}
