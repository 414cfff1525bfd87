//! Accounts: password rules, argon2id hashing off the async threads with a cap on
//! concurrent hashes, and the account operations shared by the HTTP API and the admin CLI.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;
use voicechat_protocol::ids::{IdError, UserName};

use crate::store::{Store, StoreError, UserRecord};
use crate::time::unix_now;

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD: usize = 8;
/// Passwords longer than this are refused (hashing cost is linear in length).
pub const MAX_PASSWORD: usize = 256;

/// What an account operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The user name breaks the rules.
    #[error(transparent)]
    BadName(#[from] IdError),
    /// The password is too short or too long.
    #[error("passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    BadPassword,
    /// The name is taken (names are case-insensitive).
    #[error("that user name is taken")]
    Taken,
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// Wrong name/password pair, or a disabled account.
    #[error("wrong user name or password")]
    WrongCredentials,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hashing task failed.
    #[error("password hashing failed")]
    Hash,
}

/// argon2id with the OWASP-recommended parameters (19 MiB, 2 passes, 1 lane), run on the
/// blocking pool, at most `max_concurrent` at once so a login storm cannot eat the memory.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Hasher {
    /// A hasher that runs at most `max_concurrent` hashes at once.
    pub fn new(max_concurrent: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent.max(1))) }
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let _permit = self.permits.acquire().await.map_err(|_| AccountError::Hash)?;
        let pw = password.to_owned();
        tokio::task::spawn_blocking(move || argon2().hash_password(pw.as_bytes()).map(|h| h.to_string()))
            .await
            .map_err(|_| AccountError::Hash)?
            .map_err(|_| AccountError::Hash)
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, AccountError> {
        let _permit = self.permits.acquire().await.map_err(|_| AccountError::Hash)?;
        let (hash, pw) = (hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || argon2().verify_password(pw.as_bytes(), hash.as_str()).is_ok())
            .await
            .map_err(|_| AccountError::Hash)
    }
}

fn check_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(AccountError::BadPassword)
    }
}

/// Creates a local account.
pub async fn create_user(
    store: &Store,
    hasher: &Hasher,
    name: &str,
    password: &str,
) -> Result<UserRecord, AccountError> {
    let name = UserName::new(name)?;
    check_password(password)?;
    if store.user(&name)?.is_some() {
        return Err(AccountError::Taken);
    }
    let user = UserRecord {
        name,
        password_hash: hasher.hash(password).await?,
        disabled: false,
        created_at: unix_now(),
    };
    store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict => AccountError::Taken,
        e => e.into(),
    })?;
    Ok(user)
}

/// Checks a name/password pair. Unknown names cost a hash too, so timing does not tell
/// which names exist.
pub async fn authenticate(
    store: &Store,
    hasher: &Hasher,
    name: &str,
    password: &str,
) -> Result<UserRecord, AccountError> {
    let user = UserName::new(name).ok().map(|n| store.user(&n)).transpose()?.flatten();
    let Some(user) = user else {
        // Burn the same time as a real check.
        let _ = hasher.hash(password).await;
        return Err(AccountError::WrongCredentials);
    };
    if password.len() > MAX_PASSWORD * 4 || !hasher.verify(&user.password_hash, password).await? {
        return Err(AccountError::WrongCredentials);
    }
    if user.disabled {
        return Err(AccountError::WrongCredentials);
    }
    Ok(user)
}

/// Sets a new password and ends every session of the user except `keep_session`.
pub async fn set_password(
    store: &Store,
    hasher: &Hasher,
    name: &str,
    password: &str,
    keep_session: Option<&str>,
) -> Result<(), AccountError> {
    let name = UserName::new(name)?;
    check_password(password)?;
    let mut user = store.user(&name)?.ok_or(AccountError::NoSuchUser)?;
    user.password_hash = hasher.hash(password).await?;
    store.update_user(&user).await?;
    store.end_sessions(&name, keep_session, unix_now()).await?;
    Ok(())
}

/// Disables (or re-enables) an account; disabling ends all its sessions.
pub async fn set_disabled(store: &Store, name: &str, disabled: bool) -> Result<(), AccountError> {
    let name = UserName::new(name)?;
    let mut user = store.user(&name)?.ok_or(AccountError::NoSuchUser)?;
    user.disabled = disabled;
    store.update_user(&user).await?;
    if disabled {
        store.end_sessions(&name, None, unix_now()).await?;
    }
    Ok(())
}
