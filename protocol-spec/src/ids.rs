//! Identifiers: node names, user names, `name@node` user ids, group/room/session ids.
//!
//! Every identifier is a newtype that checks its rules when it is built, prints as text
//! in JSON and logs, and travels as its most compact form in CBOR (text for names,
//! a 16-byte byte string for the random ids).

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A user name broke the rules of [`UserName`].
    #[error(
        "user names are 3 to 32 characters: letters, digits, '_', '-' or '.', starting with a letter or digit"
    )]
    BadUserName,
    /// A node name broke the rules of [`NodeName`].
    #[error(
        "node names are 1 to 253 characters of DNS labels: lowercase letters, digits and '-', separated by '.'"
    )]
    BadNodeName,
    /// A user id was not of the form `name@node`.
    #[error("user ids are written name@node")]
    BadUserId,
    /// A random id was not 32 lowercase hex digits.
    #[error("ids are 32 lowercase hex digits")]
    BadHexId,
}

/// A user's name on their home node: 3–32 characters of ASCII letters, digits, `_`, `-`
/// and `.`, starting with a letter or digit. Names are case-insensitive: the canonical
/// form, the only one that is stored, compared or sent, is lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    /// Checks `s` and returns its canonical (lowercase) form.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let ok_len = (3..=32).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_first {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(IdError::BadUserName)
        }
    }

    /// The canonical lowercase text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node's public name: a DNS name in production (`beta.example`), a short label in a
/// testnet (`alpha`). Lowercase labels of `a-z`, `0-9` and `-` (not at either end),
/// 1–63 characters each, joined by `.`, 253 characters at most.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Checks `s`; upper-case letters are folded to lowercase.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let s = s.to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if (1..=253).contains(&s.len()) && s.split('.').all(label_ok) {
            Ok(Self(s))
        } else {
            Err(IdError::BadNodeName)
        }
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user anywhere in the network: `name@node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId {
    /// The name on the home node.
    pub name: UserName,
    /// The home node, the only authority for this user.
    pub node: NodeName,
}

impl UserId {
    /// A user id from its parts.
    pub fn new(name: UserName, node: NodeName) -> Self {
        Self { name, node }
    }

    /// Parses `name@node`, or a bare `name` as a user of `default_node`.
    pub fn parse_with_default(s: &str, default_node: &NodeName) -> Result<Self, IdError> {
        if s.contains('@') {
            s.parse()
        } else {
            Ok(Self::new(UserName::new(s)?, default_node.clone()))
        }
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (name, node) = s.split_once('@').ok_or(IdError::BadUserId)?;
        Ok(Self::new(UserName::new(name)?, NodeName::new(node)?))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name.0, self.node.0)
    }
}

macro_rules! text_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}
text_id_impls!(UserName);
text_id_impls!(NodeName);

macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // Not `collect_str`: cbor4ii writes text longer than 255 bytes that way as an
                // indefinite-length string, which is not canonical (`UserId` reaches 286).
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(D::Error::custom)
            }
        }
    };
}
serde_as_text!(UserName);
serde_as_text!(NodeName);
serde_as_text!(UserId);

/// The binary (CBOR) form of a fixed-size id or key: a byte string of exactly `N` bytes.
pub(crate) fn fixed_bytes<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let b = <serde_bytes::ByteBuf>::deserialize(d)?;
    b.as_slice()
        .try_into()
        .map_err(|_| D::Error::invalid_length(b.len(), &format!("{N} bytes").as_str()))
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// 16 random bytes; text form is 32 lowercase hex digits, CBOR form a byte string.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The id from its raw bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(b)
            }
            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(IdError::BadHexId);
                }
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdError::BadHexId)?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(D::Error::custom)
                } else {
                    fixed_bytes(d).map(Self)
                }
            }
        }
    };
}

random_id!(
    /// A group, unique across the network; its home node is named in its records.
    GroupId
);
random_id!(
    /// A room inside a group.
    RoomId
);
random_id!(
    /// One browser session (one tab's WebSocket) of a user in a room.
    SessionId
);
random_id!(
    /// A one-shot value that makes a [`Signal`](crate::records::Signal) unique, so a
    /// replayed signal is recognised until it expires.
    Nonce
);

/// A member's role in a group. Permissions are stated in the spec:
/// owners and admins manage members, invites and rooms; only the owner deletes the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Any member: sees the group and joins its rooms.
    Member,
    /// Manages members, invites and rooms.
    Admin,
    /// Created the group; everything an admin may do, plus deleting it and naming admins.
    Owner,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_fold_case_and_keep_rules() {
        assert_eq!(UserName::new("Bob_1").unwrap().as_str(), "bob_1");
        for bad in ["ab", "_bob", "bo b", "bøb", &"x".repeat(33)] {
            assert_eq!(UserName::new(bad), Err(IdError::BadUserName), "{bad}");
        }
    }

    #[test]
    fn user_ids_parse_and_print() {
        let id: UserId = "Carol@Beta.Example".parse().unwrap();
        assert_eq!(id.to_string(), "carol@beta.example");
        let alpha = NodeName::new("alpha").unwrap();
        assert_eq!(
            UserId::parse_with_default("bob", &alpha)
                .unwrap()
                .to_string(),
            "bob@alpha"
        );
        assert!("bob@".parse::<UserId>().is_err());
        assert!("bob@-x".parse::<UserId>().is_err());
    }

    #[test]
    fn random_ids_are_hex_in_json() {
        let g = GroupId([0xab; 16]);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), g);
        assert!("AB".repeat(16).parse::<GroupId>().is_err());
    }
}
