//! VoiceChat federation protocol: identifiers, signed records, canonical CBOR, validation.
//!
//! Sans-IO: bytes and the current time go in, values and verdicts come out. SPEC.md next
//! to this crate is the normative text; `vectors/` pins it down byte for byte.
//!
//! Sending: build a [`Record`], [`Envelope::seal`] it with the node's key, send
//! [`Envelope::encode`]. Receiving: [`Validator::validate`] (or `check` then `accept`)
//! with the caller's [`Authorities`] and clock; ignore [`ProtocolError::UnknownKind`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cbor;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod keys;
pub mod records;
pub mod rpc;
pub mod validate;

pub use ed25519_dalek::SigningKey;
pub use envelope::{Envelope, MAX_ENVELOPE, SIGNING_PREFIX, signing_input};
pub use error::ProtocolError;
pub use keys::NodeKey;
pub use records::{
    Answer, Cascade, CascadeType, Consent, GroupInfo, Kind, Membership, NodeCard, Presence,
    PresenceState, Record, StagePlace, RoomInfo, Signal, SignalType, Subject,
};
pub use validate::{Authorities, Validator, Verified, verify};
