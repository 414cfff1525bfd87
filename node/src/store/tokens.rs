//! Admin API tokens: kept by the SHA-256 of the secret (the secret itself is shown once,
//! when made), with a name for people, scopes, and the user a token acts as.

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::UserName;

use super::{Store, StoreError, T, dec, enc};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `/api/admin/users`: list, create, disable and enable accounts.
    Users,
    /// Groups and their members, as the token's user.
    Groups,
    /// Rooms of groups, as the token's user.
    Rooms,
    /// Invite links of groups, as the token's user.
    Invites,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "users" => Ok(Scope::Users),
            "groups" => Ok(Scope::Groups),
            "rooms" => Ok(Scope::Rooms),
            "invites" => Ok(Scope::Invites),
            other => Err(format!("unknown scope {other:?}: use users, groups, rooms or invites")),
        }
    }
}

/// One token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique name, for `voicechat token list/revoke`.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The local user it acts as for groups, rooms and invites.
    pub user: Option<UserName>,
    /// Unix seconds.
    pub created_at: u64,
}

/// The key a secret is kept under.
pub fn token_key(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

impl Store {
    /// Keeps a token; `Conflict` if its name is taken.
    pub async fn put_token(&self, secret: &str, t: &TokenRecord) -> Result<(), StoreError> {
        if self.tokens()?.iter().any(|x| x.name == t.name) {
            return Err(StoreError::Conflict);
        }
        self.tree(T::Tokens).insert(token_key(secret), enc(t))?;
        self.flush().await
    }

    /// The token with this secret.
    pub fn token(&self, secret: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tree(T::Tokens).get(token_key(secret))?.map(|v| dec("admin_tokens", &v)).transpose()
    }

    /// Every token.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tree(T::Tokens).iter().values().map(|v| dec("admin_tokens", &v?)).collect()
    }

    /// Forgets a token by name; `NotFound` if none has it.
    pub async fn remove_token(&self, name: &str) -> Result<(), StoreError> {
        let tree = self.tree(T::Tokens);
        for kv in tree.iter() {
            let (k, v) = kv?;
            if dec::<TokenRecord>("admin_tokens", &v)?.name == name {
                tree.remove(k)?;
                return self.flush().await;
            }
        }
        Err(StoreError::NotFound)
    }
}
