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
/// Display names are at most this many characters (and 128 bytes: what a signed presence
/// carries, SPEC.md §6.5).
pub const MAX_DISPLAY_NAME: usize = 64;

/// A display name as typed: trimmed and in Unicode NFC (so "é" typed either way is one
/// name); `None` when empty (the user name is shown).
pub fn display_name(raw: &str) -> Result<Option<String>, AccountError> {
    use unicode_normalization::UnicodeNormalization;
    let name: String = raw.trim().nfc().collect();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_DISPLAY_NAME || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(AccountError::BadDisplayName);
    }
    Ok(Some(name))
}

/// Sets (or, with an empty one, clears) `name`'s display name.
pub async fn set_display_name(store: &Store, name: &UserName, raw: &str) -> Result<Option<String>, AccountError> {
    let display = display_name(raw)?;
    let mut user = store.user(name)?.ok_or(AccountError::NoSuchUser)?;
    user.display_name = display.clone();
    store.update_user(&user).await?;
    Ok(display)
}
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
    /// The display name breaks the rules.
    #[error("display names are 1 to {MAX_DISPLAY_NAME} characters (at most 128 bytes), without control characters")]
    BadDisplayName,
    /// The name is taken (names are case-insensitive).
    #[error("that user name is taken")]
    Taken,
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// Wrong name/password pair, or a disabled account.
    #[error("wrong user name or password")]
    WrongCredentials,
    /// The identity signs in as another account already.
    #[error("that identity is linked to another account")]
    LinkedElsewhere,
    /// Sign-up is not open to this person (registration mode).
    #[error("{0}")]
    SignUpRefused(&'static str),
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
    let user = UserRecord {
        name,
        password_hash: hasher.hash(password).await?,
        disabled: false,
        created_at: unix_now(),
        admin: false,
        email: None,
        display_name: None,
    };
    insert_user(store, user).await
}

/// Stores a new account; the first of the node becomes its administrator.
async fn insert_user(store: &Store, mut user: UserRecord) -> Result<UserRecord, AccountError> {
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

/// How a sign-in through an identity provider found its local account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcMatch {
    /// The identity was linked before.
    Linked,
    /// Linked now: to the logged-in user who asked, or to the account with the same
    /// verified email.
    NewLink,
    /// A new account was created (the caller checked the registration mode).
    Created,
}

/// Finds (or makes) the local account for an identity the provider vouched for. Never by
/// name: an existing account is only reached by a link made before, by the logged-in user
/// asking to link, or by an email a provider verified for both. `may_create` is asked
/// before a new account is made (registration mode, limits).
pub async fn sign_in_oidc(
    store: &Store,
    id: &crate::oidc::Identity,
    may_create: impl FnOnce() -> Result<(), AccountError>,
) -> Result<(UserRecord, OidcMatch), AccountError> {
    let usable = |u: Option<UserRecord>| u.filter(|u| !u.disabled).ok_or(AccountError::WrongCredentials);
    if let Some(name) = store.oidc_link(&id.provider, &id.sub)? {
        if id.link_to.as_ref().is_some_and(|l| l != name.as_str()) {
            return Err(AccountError::LinkedElsewhere);
        }
        return Ok((usable(store.user(&name)?)?, OidcMatch::Linked));
    }
    let by_request = match &id.link_to {
        Some(n) => Some(usable(store.user(&UserName::new(n)?)?)?),
        None => None,
    };
    let by_email = match (&by_request, &id.verified_email) {
        (None, Some(email)) => store.users()?.into_iter().find(|u| u.email.as_deref() == Some(email.as_str())),
        _ => None,
    };
    if let Some(user) = by_request.or(by_email) {
        let user = usable(Some(user))?;
        store.put_oidc_link(&id.provider, &id.sub, &user.name).await?;
        tracing::info!(user = %user.name, provider = %id.provider, "identity linked");
        return Ok((user, OidcMatch::NewLink));
    }
    may_create()?;
    let base = local_name(id.name_hint.as_deref().unwrap_or("user"));
    for n in 1..=100u32 {
        let candidate = if n == 1 { base.clone() } else { format!("{}{n}", &base[..base.len().min(28)]) };
        let Ok(name) = UserName::new(&candidate) else { continue };
        if store.user(&name)?.is_some() {
            continue;
        }
        let user = UserRecord {
            name,
            // No password: only the provider signs this account in (a password can be set
            // later by the administrator with `voicechat user passwd`).
            password_hash: String::new(),
            disabled: false,
            created_at: unix_now(),
            admin: false,
            email: id.verified_email.clone(),
            // The provider's name for the person, when it fits ("José García").
            display_name: id.name_hint.as_deref().and_then(|n| display_name(n).ok().flatten()),
        };
        match insert_user(store, user).await {
            Ok(user) => {
                store.put_oidc_link(&id.provider, &id.sub, &user.name).await?;
                tracing::info!(user = %user.name, provider = %id.provider, "account created through identity provider");
                return Ok((user, OidcMatch::Created));
            }
            Err(AccountError::Taken) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AccountError::Taken)
}

/// A user name from what a provider calls the person: allowed characters only, 3 to 32.
fn local_name(hint: &str) -> String {
    let mut s: String = hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c.to_ascii_lowercase() } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    while s.len() < 3 {
        s.push('0');
    }
    s
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
    // Unknown names, and accounts that only sign in through a provider (no password),
    // are checked against the decoy.
    let hash = match &user {
        Some(u) if !u.password_hash.is_empty() => u.password_hash.clone(),
        _ => hasher.decoy().await?,
    };
    let right = hasher.verify(&hash, cut).await?
        && cut.len() == password.len()
        && user.as_ref().is_some_and(|u| !u.password_hash.is_empty());
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

    fn who(provider: &str, sub: &str, email: Option<&str>, name: &str) -> crate::oidc::Identity {
        crate::oidc::Identity {
            provider: provider.into(),
            sub: sub.into(),
            verified_email: email.map(str::to_owned),
            name_hint: Some(name.into()),
            link_to: None,
            invite: None,
        }
    }

    #[tokio::test]
    async fn provider_identities_map_by_link_or_verified_email_never_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hasher = Hasher::new(1);
        let ada = create_user(&store, &hasher, "ada", "ada-password-1").await.unwrap();
        assert!(ada.admin);
        let open = || Ok(());
        // Same name as a password account, no verified email: a new account, not ada's.
        let (u, how) = sign_in_oidc(&store, &who("corp", "s-1", None, "Ada"), open).await.unwrap();
        assert_eq!((u.name.as_str(), how, u.admin), ("ada2", OidcMatch::Created, false));
        // The same subject again: the same account.
        let (again, how) = sign_in_oidc(&store, &who("corp", "s-1", None, "someone-else"), open).await.unwrap();
        assert_eq!((again.name, how), (u.name.clone(), OidcMatch::Linked));
        // A verified email: the account gets it; another provider vouching for it links there.
        let (bea, _) = sign_in_oidc(&store, &who("corp", "s-2", Some("bea@example.org"), "bea"), open).await.unwrap();
        let (same, how) = sign_in_oidc(&store, &who("other", "x-9", Some("bea@example.org"), "b"), open).await.unwrap();
        assert_eq!((same.name, how), (bea.name.clone(), OidcMatch::NewLink));
        // A logged-in user links explicitly; an identity linked elsewhere cannot be moved.
        let mut link = who("other", "x-7", None, "whatever");
        link.link_to = Some("ada".into());
        let (linked, how) = sign_in_oidc(&store, &link, open).await.unwrap();
        assert_eq!((linked.name.as_str(), how), ("ada", OidcMatch::NewLink));
        let mut steal = who("corp", "s-2", None, "x");
        steal.link_to = Some("ada".into());
        assert!(matches!(sign_in_oidc(&store, &steal, open).await, Err(AccountError::LinkedElsewhere)));
        // Sign-up refused: nothing is created; a disabled account does not sign in.
        let closed = || Err(AccountError::SignUpRefused("closed"));
        assert!(matches!(sign_in_oidc(&store, &who("corp", "s-3", None, "carl"), closed).await, Err(AccountError::SignUpRefused(_))));
        assert!(store.user(&UserName::new("carl").unwrap()).unwrap().is_none());
        set_disabled(&store, "bea", true).await.unwrap();
        assert!(matches!(sign_in_oidc(&store, &who("other", "x-9", None, "b"), open).await, Err(AccountError::WrongCredentials)));
        // An account made through a provider has no password to log in with.
        assert!(matches!(authenticate(&store, &hasher, "ada2", "").await, Err(AccountError::WrongCredentials)));
    }

    #[test]
    fn local_names_follow_the_rules() {
        assert_eq!(local_name("Ada Lovelace"), "ada-lovelace");
        assert_eq!(local_name("__x"), "x00");
        assert_eq!(local_name("Zoë"), "zo-");
        assert_eq!(local_name(&"é".repeat(40)), "000");
        assert_eq!(local_name(&"a".repeat(40)).len(), 32);
    }

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
