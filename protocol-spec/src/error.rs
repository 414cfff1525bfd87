//! The one error type of the crate: what exactly was wrong with bytes that came off the wire.
//!
//! Every variant means "the sender broke the protocol" (or, for [`ProtocolError::UnknownKind`],
//! "speaks a newer one"); this crate does no I/O, so there are no I/O failures to mix in.
//! [`ProtocolError::code`] is the stable short name used in test vectors and RPC replies.

use crate::cbor::CborError;
use crate::ids::{GroupId, NodeName, UserId};

/// Why a message or record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Over a size cap; checked before anything is decoded.
    #[error("{what} is {len} bytes, more than the cap of {max}")]
    TooLarge {
        /// What was measured: `"envelope"`, a kind name, or an RPC message.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not well-formed CBOR (truncated, invalid UTF-8, reserved bits).
    #[error("malformed CBOR: {0}")]
    Malformed(CborError),
    /// Well-formed CBOR of the wrong shape: missing field, wrong type, bad identifier.
    #[error("wrong shape: {0}")]
    Schema(String),
    /// Well-formed but not the one canonical encoding (SPEC.md §4).
    #[error("not canonical CBOR: {0}")]
    NonCanonical(CborError),
    /// Bytes left over after the top-level value.
    #[error("{0} bytes follow the encoded value")]
    TrailingBytes(usize),
    /// A well-formed envelope of a kind this implementation does not know. Callers ignore it
    /// (do not penalise the sender): it may come from a newer version.
    #[error("unknown record kind {0:?}")]
    UnknownKind(String),
    /// The signer field is not a valid ed25519 public key.
    #[error("signer is not a valid ed25519 public key")]
    BadKey,
    /// The signature does not verify (strictly) over the signing input.
    #[error("signature does not verify")]
    BadSignature,
    /// A record field breaks its stated limit.
    #[error("field {field}: {reason}")]
    InvalidField {
        /// The field name as on the wire.
        field: &'static str,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The record needs the key of a node the caller does not know.
    #[error("no key known for node {0}")]
    UnknownNode(NodeName),
    /// The record needs the home of a group the caller does not know.
    #[error("no home node known for group {0}")]
    UnknownGroup(GroupId),
    /// The signer is not the authority for this kind and subject.
    #[error("signer is not the authority for this {kind}: {reason}")]
    WrongAuthority {
        /// The record kind.
        kind: &'static str,
        /// Which rule failed.
        reason: &'static str,
    },
    /// A user named in the record is not a member of its group.
    #[error("{0} is not a member of the group")]
    NotMember(UserId),
    /// `expires_at` (plus the clock-skew allowance) is in the past.
    #[error("expired at {expires_at}, now {now}")]
    Expired {
        /// The record's `expires_at`.
        expires_at: u64,
        /// The caller's clock.
        now: u64,
    },
    /// `expires_at` is further ahead than the kind allows.
    #[error("expires_at {expires_at} is more than {max_ttl} s (+ skew) after now {now}")]
    ExpiryTooFar {
        /// The record's `expires_at`.
        expires_at: u64,
        /// The caller's clock.
        now: u64,
        /// The kind's longest allowed lifetime.
        max_ttl: u64,
    },
    /// `seq` is not above the last one accepted for (signer, kind, subject), or a signal
    /// nonce was seen before.
    #[error("replayed or reordered: seq {seq}, last accepted {last}")]
    Replayed {
        /// The record's seq (0 for a signal).
        seq: u64,
        /// The last accepted seq for the subject (0 for a signal).
        last: u64,
    },
}

impl ProtocolError {
    /// The stable short name of the error, as used in `vectors/*.json` (`verdict`) and in
    /// RPC error replies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) | Self::Schema(_) => "malformed",
            Self::NonCanonical(_) => "non_canonical",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::UnknownKind(_) => "unknown_kind",
            Self::BadKey => "bad_key",
            Self::BadSignature => "bad_signature",
            Self::InvalidField { .. } => "invalid_field",
            Self::UnknownNode(_) => "unknown_node",
            Self::UnknownGroup(_) => "unknown_group",
            Self::WrongAuthority { .. } => "wrong_authority",
            Self::NotMember(_) => "not_member",
            Self::Expired { .. } => "expired",
            Self::ExpiryTooFar { .. } => "expiry_too_far",
            Self::Replayed { .. } => "replayed",
        }
    }

    /// True when the sender should not be penalised: an unknown kind may be from a newer
    /// version, and unknown nodes/groups, membership changes and stale records happen in honest races
    /// (verdict *ignored*; every other error: *rejected*, counted against the sending peer).
    pub fn is_benign(&self) -> bool {
        matches!(
            self,
            Self::UnknownKind(_)
                | Self::UnknownNode(_)
                | Self::UnknownGroup(_)
                | Self::NotMember(_)
                | Self::Replayed { .. }
                | Self::Expired { .. }
        )
    }
}
