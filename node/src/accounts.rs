//! Accounts: password rules, argon2id hashing off the async threads with a cap on
//! concurrent hashes, and the account operations shared by the HTTP API and the admin CLI.

use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
///
/// Each running hash borrows one of at most `max_concurrent` 19 MiB work buffers, kept for
/// the next hash. Letting argon2 allocate its own made glibc keep one such block per
/// blocking-pool thread: 48 logins left the node at 640 MB instead of ~100.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    /// A hash of a random password, checked against for names that do not exist.
    decoy: Arc<tokio::sync::OnceCell<String>>,
}

fn owasp() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid")
}

/// A work buffer of at least `blocks` blocks.
fn fit(buf: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if buf.len() < blocks {
        buf.resize(blocks, Block::default());
    }
    &mut buf[..blocks]
}

/// Hashes `password` with a fresh salt into a PHC string, using `buf` as argon2's memory.
fn hash_into(buf: &mut Vec<Block>, password: &[u8]) -> Option<String> {
    let params = owasp();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = argon2::password_hash::generate_salt();
    let mut out = [0u8; 32];
    argon.hash_password_into_with_memory(password, &salt, &mut out, fit(buf, params.block_count())).ok()?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(Salt::new(&salt).ok()?),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(phc.to_string())
}

/// Whether `password` matches the PHC string `hash` (any argon2 variant and parameters
/// it names), using `buf` as argon2's memory; the comparison is constant-time.
fn verify_with(buf: &mut Vec<Block>, hash: &str, password: &[u8]) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else { return false };
    let (Ok(params), Ok(algorithm)) = (Params::try_from(&phc), Algorithm::try_from(phc.algorithm.as_str())) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    argon.hash_password_into_with_memory(password, salt.as_ref(), &mut out, fit(buf, blocks)).is_ok()
        && Output::new(&out).is_ok_and(|o| &o == expected)
}

impl Hasher {
    /// A hasher that runs at most `max_concurrent` hashes at once.
    pub fn new(max_concurrent: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent.max(1))), buffers: Arc::default(), decoy: Arc::default() }
    }

    /// Runs `f` on the blocking pool with a permit and a work buffer.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Result<T, AccountError> {
        let _permit = self.permits.acquire().await.map_err(|_| AccountError::Hash)?;
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = buffers.lock().expect("buffers lock").pop().unwrap_or_default();
            let out = f(&mut buf);
            buffers.lock().expect("buffers lock").push(buf);
            out
        })
        .await
        .map_err(|_| AccountError::Hash)
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let pw = password.to_owned();
        self.run(move |buf| hash_into(buf, pw.as_bytes())).await?.ok_or(AccountError::Hash)
    }

    /// Whether `password` matches the PHC string `hash`. Counted in
    /// `voicechat_password_checks_total`.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, AccountError> {
        let (hash, pw) = (hash.to_owned(), password.to_owned());
        metrics::counter!("voicechat_password_checks_total").increment(1);
        self.run(move |buf| verify_with(buf, &hash, pw.as_bytes())).await
    }

    /// The hash a password is checked against when the name does not exist: same
    /// algorithm and parameters as a real one, so both take the same work.
    async fn decoy(&self) -> Result<String, AccountError> {
        let decoy = self.decoy.get_or_try_init(|| async { self.hash(&crate::time::random_hex(16)).await }).await?;
        Ok(decoy.clone())
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

/// Creates a local account. The first account created on a node becomes its
/// administrator (claimed atomically, so two racing first sign-ups get one admin).
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
    let mut user = UserRecord {
        name,
        password_hash: hasher.hash(password).await?,
        disabled: false,
        created_at: unix_now(),
        admin: false,
    };
    store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict => AccountError::Taken,
        e => e.into(),
    })?;
    if store.claim_admin(&user.name).await? {
        user.admin = true;
        store.update_user(&user).await?;
        tracing::info!(user = %user.name, "first account: administrator");
    }
    Ok(user)
}

/// Checks a name/password pair. Every attempt costs exactly one argon2 check, whether the
/// name exists or not and whatever the password's length, so timing does not tell which
/// names exist.
pub async fn authenticate(
    store: &Store,
    hasher: &Hasher,
    name: &str,
    password: &str,
) -> Result<UserRecord, AccountError> {
    let user = UserName::new(name).ok().map(|n| store.user(&n)).transpose()?.flatten();
    // Over-long passwords are hashed only up to the longest allowed, for every name alike
    // (refusing them early only for existing names was what gave names away).
    let cut = password.char_indices().nth(MAX_PASSWORD).map_or(password, |(i, _)| &password[..i]);
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => hasher.decoy().await?,
    };
    let right = hasher.verify(&hash, cut).await? && cut.len() == password.len();
    match user {
        Some(u) if right && !u.disabled => Ok(u),
        _ => Err(AccountError::WrongCredentials),
    }
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

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn our_hashes_are_standard_phc_strings_and_reuse_one_buffer() {
        let mut buf = Vec::new();
        let ours = hash_into(&mut buf, b"correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        // The reference implementation accepts our hash, and we accept its.
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp());
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        let theirs = reference.hash_password(b"battery staple").unwrap().to_string();
        assert!(verify_with(&mut buf, &theirs, b"battery staple"));
        assert!(!verify_with(&mut buf, &theirs, b"battery stable"));
        assert!(!verify_with(&mut buf, &ours, b"correct horse "));
        assert!(!verify_with(&mut buf, "not a phc string", b"x"));
        assert_eq!(buf.len(), owasp().block_count(), "one 19 MiB buffer, reused");
    }
}
