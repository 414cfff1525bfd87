//! The signed envelope every record travels in: `[kind, payload, signer, sig]`.
//!
//! `sig = ed25519(signer, "voicechat/1/" ‖ kind ‖ 0x00 ‖ payload)`, over exactly the payload
//! bytes carried. [`Envelope::seal`] builds one; [`Envelope::decode`] parses received bytes
//! strictly; [`Envelope::open`] verifies the signature and only then decodes the payload.
//! Authority, expiry and replay are the [`validate`](crate::validate) module's job.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::error::ProtocolError;
use crate::keys::NodeKey;
use crate::records::{Kind, Record};

/// The domain-separation prefix of every signing input.
pub const SIGNING_PREFIX: &[u8] = b"voicechat/1/";
/// The largest encoded envelope accepted, anywhere (64 KiB).
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// The longest `kind` text.
pub const MAX_KIND_LEN: usize = 32;

/// A signed record as it crosses the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The record kind's wire name (`[a-z0-9_]{1,32}`), possibly one this version does not know.
    pub kind: String,
    /// The canonical CBOR of the record, exactly as signed.
    pub payload: Vec<u8>,
    /// The signing node's key.
    pub signer: NodeKey,
    /// The ed25519 signature over [`signing_input`].
    pub sig: [u8; 64],
}

/// The bytes a signature covers: `"voicechat/1/" ‖ kind ‖ 0x00 ‖ payload`.
pub fn signing_input(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_PREFIX.len() + kind.len() + 1 + payload.len());
    out.extend_from_slice(SIGNING_PREFIX);
    out.extend_from_slice(kind.as_bytes());
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// The CBOR shape: a 4-element array.
#[derive(Serialize, Deserialize)]
struct Wire(
    String,
    #[serde(with = "serde_bytes")] Vec<u8>,
    NodeKey,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

impl Envelope {
    /// Encodes `record` canonically and signs it with `key`.
    pub fn seal(record: &Record, key: &SigningKey) -> Envelope {
        let kind = record.kind().as_str();
        let payload = record.encode();
        let sig = key.sign(&signing_input(kind, &payload)).to_bytes();
        Envelope {
            kind: kind.to_owned(),
            payload,
            signer: NodeKey::from_signing_key(key),
            sig,
        }
    }

    /// The canonical CBOR of the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire(
            self.kind.clone(),
            self.payload.clone(),
            self.signer,
            self.sig.to_vec(),
        );
        cbor::encode(&wire)
    }

    /// Strictly decodes received bytes: size cap first, then canonical form, no trailing
    /// bytes, a well-formed kind name, a 64-byte signature. Checks no signature.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, ProtocolError> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(ProtocolError::TooLarge {
                what: "envelope",
                len: bytes.len(),
                max: MAX_ENVELOPE,
            });
        }
        let Wire(kind, payload, signer, sig) = cbor::decode(bytes)?;
        let kind_ok = (1..=MAX_KIND_LEN).contains(&kind.len())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !kind_ok {
            return Err(ProtocolError::InvalidField {
                field: "kind",
                reason: "not [a-z0-9_]{1,32}",
            });
        }
        let sig: [u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::InvalidField {
                field: "sig",
                reason: "not 64 bytes",
            })?;
        Ok(Envelope {
            kind,
            payload,
            signer,
            sig,
        })
    }

    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(&self.kind, &self.payload)
    }

    /// Checks the signature strictly over the payload bytes as received.
    pub fn verify(&self) -> Result<(), ProtocolError> {
        self.signer.verify_strict(&self.signing_input(), &self.sig)
    }

    /// Known kind → payload size cap → signature → strict payload decode and field limits.
    /// An unknown kind gives [`ProtocolError::UnknownKind`] before anything else is checked.
    pub fn open(&self) -> Result<Record, ProtocolError> {
        let kind = Kind::from_wire(&self.kind)
            .ok_or_else(|| ProtocolError::UnknownKind(self.kind.clone()))?;
        if self.payload.len() > kind.payload_cap() {
            return Err(ProtocolError::TooLarge {
                what: kind.as_str(),
                len: self.payload.len(),
                max: kind.payload_cap(),
            });
        }
        self.verify()?;
        Record::decode(kind, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GroupId;
    use crate::records::GroupInfo;

    fn sample() -> (Envelope, Record) {
        let record = Record::GroupInfo(GroupInfo {
            seq: 1,
            home: "alpha".parse().unwrap(),
            name: "Friends".into(),
            group: GroupId([7; 16]),
            deleted: false,
        });
        (
            Envelope::seal(&record, &SigningKey::from_bytes(&[1; 32])),
            record,
        )
    }

    #[test]
    fn seal_encode_decode_open() {
        let (env, record) = sample();
        let bytes = env.encode();
        assert_eq!(bytes[0], 0x84, "a 4-element array");
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.open().unwrap(), record);
    }

    #[test]
    fn unknown_kind_is_distinct() {
        let (mut env, _) = sample();
        env.kind = "future_kind".into();
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(
            back.open(),
            Err(ProtocolError::UnknownKind("future_kind".into()))
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let (env, _) = sample();
        let mut bytes = env.encode();
        bytes.push(0);
        assert_eq!(
            Envelope::decode(&bytes),
            Err(ProtocolError::TrailingBytes(1))
        );
    }
}
