//! Node keys: the 32-byte ed25519 public key that signs records and is also the libp2p PeerId.
//!
//! A [`NodeKey`] prints as 64 lowercase hex digits in JSON and logs and travels as a
//! 32-byte CBOR byte string. [`NodeKey::peer_id`] derives the libp2p `PeerId` text
//! without depending on libp2p (see SPEC.md §3.4).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ProtocolError;
use crate::ids::IdError;

/// A node's ed25519 public key (RFC 8032 encoding): the record signer and libp2p identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeKey(pub [u8; 32]);

impl NodeKey {
    /// The key from its 32 raw bytes (not checked to be a valid curve point).
    pub const fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public half of an ed25519 signing key.
    pub fn from_signing_key(key: &ed25519_dalek::SigningKey) -> Self {
        Self(key.verifying_key().to_bytes())
    }

    /// Checks `sig` over `msg` with `verify_strict`. The key must be the canonical encoding
    /// of a curve point that is not of small order ([`ProtocolError::BadKey`] otherwise,
    /// whatever the signature); `R` must be canonical and not of small order and `S` < ℓ
    /// ([`ProtocolError::BadSignature`] otherwise, like any signature that does not verify).
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), ProtocolError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| ProtocolError::BadKey)?;
        // `from_bytes` reduces y mod p, so a non-canonical encoding of a point decodes too;
        // `verify_strict` would turn a small-order key into a mere bad signature.
        if key.is_weak() || key.to_edwards().compress().to_bytes() != self.0 {
            return Err(ProtocolError::BadKey);
        }
        key.verify_strict(msg, &Signature::from_bytes(sig))
            .map_err(|_| ProtocolError::BadSignature)
    }

    /// The binary libp2p `PeerId`: the identity multihash (`0x00`, length `0x24`) of the
    /// protobuf `PublicKey { Type = Ed25519 (1), Data = key }` = `08 01 12 20 <key>`.
    pub fn peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// The libp2p `PeerId` text: base58btc of [`peer_id_bytes`](Self::peer_id_bytes),
    /// always starting `12D3KooW`.
    pub fn peer_id(&self) -> String {
        base58btc(&self.peer_id_bytes())
    }
}

/// Bitcoin-alphabet base58 (what libp2p prints PeerIds with).
fn base58btc(input: &[u8]) -> String {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    // Little-endian base-58 digits of the big-endian input number.
    let mut digits: Vec<u8> = Vec::with_capacity(input.len() * 138 / 100 + 1);
    for &byte in input {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = input.iter().take_while(|&&b| b == 0).count();
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| char::from(ALPHABET[usize::from(d)])),
    );
    out
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({self})")
    }
}

impl FromStr for NodeKey {
    type Err = IdError;
    /// 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(IdError::BadHexId);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::BadHexId)?;
        Ok(Self(out))
    }
}

impl Serialize for NodeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            crate::ids::fixed_bytes(d).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_has_the_libp2p_shape() {
        let key = NodeKey::from_signing_key(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let id = key.peer_id();
        assert!(id.starts_with("12D3KooW"), "{id}");
        assert_eq!(id.len(), 52);
        // Cross-checked with an independent base58 implementation; also in SPEC.md §3.4.
        let alpha = NodeKey::from_signing_key(&ed25519_dalek::SigningKey::from_bytes(&[0xa1; 32]));
        assert_eq!(
            alpha.peer_id(),
            "12D3KooWNW98jY6oC8EEaFFbYCc24HPRaNAJaEY7eiAvspiAgFak"
        );
        assert_eq!(base58btc(&[0, 0, 1]), "112");
        assert_eq!(base58btc(b"hello world"), "StV1DL6CwTryKyV");
    }

    #[test]
    fn invalid_keys_are_bad_keys_whatever_the_signature() {
        let msg = b"anything";
        // y = 2 is not the y coordinate of a curve point.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        // The identity (y = 1): with R = identity and S = 0 a lenient check accepts any message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut lenient_sig = [0u8; 64];
        lenient_sig[0] = 1;
        let lenient = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(
            ed25519_dalek::Verifier::verify(&lenient, msg, &Signature::from_bytes(&lenient_sig))
                .is_ok()
        );
        // y = p + 3 (y = 3 is on the curve): a non-canonical encoding of a valid point.
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xf0;
        non_canonical[31] = 0x7f;
        assert!(VerifyingKey::from_bytes(&non_canonical).is_ok());
        for bad in [off_curve, identity, non_canonical, [0; 32]] {
            assert_eq!(
                NodeKey(bad).verify_strict(msg, &lenient_sig),
                Err(ProtocolError::BadKey),
                "{}",
                hex::encode(bad)
            );
        }
        let sk = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let good = NodeKey::from_signing_key(&sk);
        let sig = ed25519_dalek::Signer::sign(&sk, msg).to_bytes();
        assert_eq!(good.verify_strict(msg, &sig), Ok(()));
        assert_eq!(
            good.verify_strict(msg, &lenient_sig),
            Err(ProtocolError::BadSignature)
        );
    }

    #[test]
    fn hex_round_trip() {
        let k = NodeKey([0xab; 32]);
        assert_eq!(k.to_string().parse::<NodeKey>().unwrap(), k);
        assert!("AB".repeat(32).parse::<NodeKey>().is_err());
    }
}
