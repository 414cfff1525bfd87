//! The request-response messages between nodes (SPEC.md §9), and the digest of a group's
//! records that lets a sync answer "unchanged".
//!
//! Each request-response protocol carries one CBOR value per stream direction (libp2p's
//! `request_response::cbor` framing: write, close, read to end under a size cap). The
//! types here are that value; encode them with [`encode`] and decode with [`decode`],
//! which checks the cap before decoding and then the canonical form.

use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};

use crate::cbor;
use crate::envelope::MAX_ENVELOPE;
use crate::error::ProtocolError;
use crate::ids::{GroupId, UserId};

/// Protocol id of group sync.
pub const SYNC_PROTOCOL: &str = "/voicechat/sync/1";
/// Protocol id of the signal relay.
pub const SIGNAL_PROTOCOL: &str = "/voicechat/signal/1";
/// Protocol id of join-by-invite.
pub const INVITE_PROTOCOL: &str = "/voicechat/invite/1";
/// Protocol id of direct record delivery.
pub const PUSH_PROTOCOL: &str = "/voicechat/push/1";
/// Protocol id of the cascade between nodes' forwarding units.
pub const CASCADE_PROTOCOL: &str = "/voicechat/cascade/1";

/// Largest [`SyncRequest`].
pub const MAX_SYNC_REQUEST: usize = 1024;
/// Largest [`SyncResponse`] (4 MiB).
pub const MAX_SYNC_RESPONSE: usize = 4 * 1024 * 1024;
/// Most records in one [`SyncResponse`] page.
pub const MAX_SYNC_RECORDS: usize = 1024;
/// Largest [`SignalRequest`].
pub const MAX_SIGNAL_REQUEST: usize = MAX_ENVELOPE + 16;
/// Largest [`SignalResponse`].
pub const MAX_SIGNAL_RESPONSE: usize = 256;
/// Largest [`InviteRequest`].
pub const MAX_INVITE_REQUEST: usize = 1024;
/// Largest [`InviteResponse`] (1 MiB).
pub const MAX_INVITE_RESPONSE: usize = 1024 * 1024;
/// Largest [`PushRequest`] (4 MiB).
pub const MAX_PUSH_REQUEST: usize = 4 * 1024 * 1024;
/// Most records in one [`PushRequest`].
pub const MAX_PUSH_RECORDS: usize = 1024;
/// Largest [`PushResponse`].
pub const MAX_PUSH_RESPONSE: usize = 256;
/// Largest [`CascadeRequest`] and [`CascadeResponse`]: one `cascade` envelope (its payload
/// at most 10 KiB) and a little framing.
pub const MAX_CASCADE_MESSAGE: usize = 12 * 1024;

/// SHA-256 digest of a group's live persistent records.
///
/// Made by [`group_digest`]; 32 bytes, a CBOR byte string on the wire and 64 lowercase hex
/// digits in JSON and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            let mut out = [0u8; 32];
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(D::Error::custom("digests are 64 lowercase hex digits"));
            }
            hex::decode_to_slice(s.as_bytes(), &mut out).map_err(D::Error::custom)?;
            Ok(Self(out))
        } else {
            crate::ids::fixed_bytes(d).map(Self)
        }
    }
}

/// The digest of a set of envelopes (each exactly as signed): SHA-256 over the concatenation
/// of the SHA-256 of each envelope, those hashes sorted bytewise and deduplicated. Order and
/// repeats do not matter; the empty set gives SHA-256 of nothing.
///
/// The caller passes the group's live persistent records (SPEC.md §9.1): the `group_info`
/// unless deleted, every `room_info` not deleted, every `membership` not `removed`.
pub fn group_digest<'a>(envelopes: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut hashes: Vec<[u8; 32]> = envelopes
        .into_iter()
        .map(|e| Sha256::digest(e).into())
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let mut outer = Sha256::new();
    for h in &hashes {
        outer.update(h);
    }
    Digest(outer.finalize().into())
}

/// Why a node refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcError {
    /// The carried envelope failed validation.
    Invalid,
    /// The requester may not see this group, or a user named is not a member.
    NotMember,
    /// The target session is not connected to this node.
    NoSession,
    /// The joining user is not a user of the asking node (invite), or the signal's target
    /// is not a user of this node (signal).
    NotHome,
    /// This node does not know the group.
    UnknownGroup,
    /// This node has not accepted the requester's node card, so it does not know who asks.
    UnknownNode,
    /// The invite code is unknown, used up or expired.
    BadInvite,
    /// Too many requests from this peer; retry later.
    RateLimited,
    /// The node failed internally; retry later.
    Internal,
    /// Cascade: the asking node has nobody in the room, or this node has nobody there.
    NotInRoom,
}

/// Asks a group's home node for the group's current records, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Page number, from 0.
    pub page: u32,
    /// The group.
    pub group: GroupId,
    /// The [`group_digest`] of the group's live persistent records the requester holds;
    /// when it equals the home's, the home answers [`SyncResponse::unchanged`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// One page of a group's current records: GroupInfo first (page 0), then RoomInfo,
/// Membership and unexpired Presence envelopes, each exactly as signed. When `unchanged`,
/// only the unexpired Presence envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// True when page + 1 has more records.
    pub more: bool,
    /// Refusal; `records` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// Encoded envelopes, at most [`MAX_SYNC_RECORDS`].
    pub records: Vec<ByteBuf>,
    /// The request's digest equals the home's: the requester's persistent records are
    /// current and `records` holds only presence. Never written as `false` (left out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// Relays one signed [`Signal`](crate::records::Signal) envelope to the receiver's home node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// The encoded envelope.
    pub envelope: ByteBuf,
}

/// The relay's answer: an empty map when delivered to the target session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalResponse {
    /// Refusal; absent when delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// Redeems an invite code at the group's home node for `user` (a user of the requester).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The code from the invite link, 1..=64 bytes of `[A-Za-z0-9_-]`.
    pub code: String,
    /// The user joining; must live on the requesting node.
    pub user: UserId,
}

/// The home node's answer: the GroupInfo, the new Membership, then the RoomInfo envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteResponse {
    /// Refusal; `records` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// Encoded envelopes.
    pub records: Vec<ByteBuf>,
}

/// Hands records straight to a node that needs them: a node card on connect, a group's
/// records to the nodes with members in it, presence to them, a consent to a group's home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Encoded envelopes, at most [`MAX_PUSH_RECORDS`].
    pub records: Vec<ByteBuf>,
}

/// The answer to a push: `{}`, or an error when the request as a whole was refused.
/// Records are judged one by one; an invalid record does not fail the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Refusal of the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// Carries one signed [`Cascade`](crate::records::Cascade) envelope (an offer or a close)
/// from the pulling node to the node it pulls from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadeRequest {
    /// The encoded envelope.
    pub envelope: ByteBuf,
}

/// The answer to a cascade request: for an offer, the signed `cascade` answer envelope;
/// `{}` for a close; or an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadeResponse {
    /// Refusal; `envelope` is then absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// The encoded answer envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<ByteBuf>,
}

/// The canonical CBOR of an RPC message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    cbor::encode(message)
}

/// Decodes an RPC message: `max` (one of the `MAX_*` caps) first, then strict CBOR.
pub fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<T, ProtocolError> {
    if bytes.len() > max {
        return Err(ProtocolError::TooLarge {
            what: "rpc message",
            len: bytes.len(),
            max,
        });
    }
    cbor::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> Vec<u8> {
        Sha256::digest(b).to_vec()
    }

    #[test]
    fn group_digest_is_fixed_and_ignores_order_and_repeats() {
        // SHA-256 of the empty string.
        assert_eq!(
            group_digest([]).to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // SHA-256(SHA-256("a") ‖ SHA-256("b")): SHA-256("b") = 3e23…, SHA-256("a") = ca97…,
        // so sorted it is SHA-256("b") first. Computed independently (Python hashlib).
        let expected = "18d79cb747ea174c59f3a3b41768672526d56fecc58360a99d283d0f9b0a3cc0";
        let [a, b]: [&[u8]; 2] = [b"a", b"b"];
        let digest = group_digest([a, b]);
        assert_eq!(
            digest.0.to_vec(),
            sha256(&[sha256(b), sha256(a)].concat()),
            "definition"
        );
        assert_eq!(digest.to_string(), expected);
        assert_eq!(group_digest([b, a, b, a]), digest);
        assert_ne!(group_digest([a]), digest);
    }

    #[test]
    fn digests_are_32_byte_strings() {
        let d = Digest([0xab; 32]);
        let bytes = cbor::encode(&d);
        assert_eq!(&bytes[..2], &[0x58, 0x20]);
        assert_eq!(cbor::decode::<Digest>(&bytes).unwrap(), d);
        let short = [&[0x58, 0x1f][..], &[0xab; 31]].concat();
        assert_eq!(
            cbor::decode::<Digest>(&short).unwrap_err().code(),
            "malformed"
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn messages_round_trip_canonically() {
        let ok = SignalResponse::default();
        assert_eq!(encode(&ok), [0xa0]);
        let no = SignalResponse {
            error: Some(RpcError::NoSession),
        };
        assert_eq!(
            decode::<SignalResponse>(&encode(&no), MAX_SIGNAL_RESPONSE).unwrap(),
            no
        );
        let inv = InviteRequest {
            code: "abc".into(),
            user: "bob@beta".parse().unwrap(),
        };
        assert_eq!(
            decode::<InviteRequest>(&encode(&inv), MAX_INVITE_REQUEST).unwrap(),
            inv
        );
        let ir = InviteResponse {
            error: Some(RpcError::BadInvite),
            records: vec![],
        };
        assert_eq!(
            decode::<InviteResponse>(&encode(&ir), MAX_INVITE_RESPONSE).unwrap(),
            ir
        );
        let push = PushRequest {
            records: vec![ByteBuf::from(vec![7])],
        };
        assert_eq!(
            decode::<PushRequest>(&encode(&push), MAX_PUSH_REQUEST).unwrap(),
            push
        );
        let unknown = PushResponse {
            error: Some(RpcError::UnknownNode),
        };
        assert_eq!(
            hex::encode(encode(&unknown)),
            format!("a1656572726f726c{}", hex::encode("unknown_node"))
        );
        assert_eq!(
            decode::<PushResponse>(&encode(&unknown), MAX_PUSH_RESPONSE).unwrap(),
            unknown
        );
        assert!(decode::<SyncRequest>(&[0; 2000], MAX_SYNC_REQUEST).is_err());
    }

    #[test]
    fn sync_request_digest_is_optional_and_never_null() {
        let group = GroupId([1; 16]);
        let plain = SyncRequest {
            page: 2,
            group,
            digest: None,
        };
        let bytes = encode(&plain);
        // {"page": 2, "group": h'01…'}
        assert_eq!(
            hex::encode(&bytes),
            format!("a26470616765026567726f757050{}", "01".repeat(16))
        );
        assert_eq!(
            decode::<SyncRequest>(&bytes, MAX_SYNC_REQUEST).unwrap(),
            plain
        );

        let with = SyncRequest {
            page: 0,
            group,
            digest: Some(Digest([0xdd; 32])),
        };
        let bytes = encode(&with);
        let expected = format!(
            "a36470616765006567726f757050{}666469676573745820{}",
            "01".repeat(16),
            "dd".repeat(32)
        );
        assert_eq!(hex::encode(&bytes), expected);
        assert_eq!(
            decode::<SyncRequest>(&bytes, MAX_SYNC_REQUEST).unwrap(),
            with
        );

        // "digest": null decodes as absent but does not re-encode to the same bytes.
        let null = hex::decode(format!(
            "a36470616765006567726f757050{}66646967657374f6",
            "01".repeat(16)
        ))
        .unwrap();
        let err = decode::<SyncRequest>(&null, MAX_SYNC_REQUEST).unwrap_err();
        assert_eq!(err.code(), "non_canonical", "{err}");
        // A digest of the wrong length is a decoding error.
        let short = hex::decode(format!(
            "a36470616765006567726f757050{}6664696765737450{}",
            "01".repeat(16),
            "dd".repeat(16)
        ))
        .unwrap();
        let err = decode::<SyncRequest>(&short, MAX_SYNC_REQUEST).unwrap_err();
        assert_eq!(err.code(), "malformed", "{err}");
    }

    #[test]
    fn sync_response_unchanged_is_true_or_absent() {
        let full = SyncResponse {
            more: false,
            error: None,
            records: vec![ByteBuf::from(vec![1, 2])],
            unchanged: false,
        };
        let bytes = encode(&full);
        // {"more": false, "records": [h'0102']}
        assert_eq!(
            hex::encode(&bytes),
            "a2646d6f7265f4677265636f72647381420102"
        );
        assert_eq!(
            decode::<SyncResponse>(&bytes, MAX_SYNC_RESPONSE).unwrap(),
            full
        );

        let same = SyncResponse {
            unchanged: true,
            ..full.clone()
        };
        let bytes = encode(&same);
        assert_eq!(
            hex::encode(&bytes),
            "a3646d6f7265f4677265636f7264738142010269756e6368616e676564f5"
        );
        assert_eq!(
            decode::<SyncResponse>(&bytes, MAX_SYNC_RESPONSE).unwrap(),
            same
        );

        // "unchanged": false is never written: decoding it is non-canonical.
        let mut explicit_false = bytes.clone();
        *explicit_false.last_mut().unwrap() = 0xf4;
        let err = decode::<SyncResponse>(&explicit_false, MAX_SYNC_RESPONSE).unwrap_err();
        assert_eq!(err.code(), "non_canonical", "{err}");

        // An error answer keeps the key order more, error, records.
        let refused = SyncResponse {
            more: false,
            error: Some(RpcError::UnknownNode),
            records: vec![],
            unchanged: false,
        };
        assert_eq!(
            decode::<SyncResponse>(&encode(&refused), MAX_SYNC_RESPONSE).unwrap(),
            refused
        );
    }

    #[test]
    fn cascade_messages_leave_absent_fields_out_and_are_capped() {
        let req = CascadeRequest {
            envelope: ByteBuf::from(vec![0x84, 1]),
        };
        // {"envelope": h'8401'}
        assert_eq!(
            hex::encode(encode(&req)),
            format!("a168{}428401", hex::encode("envelope"))
        );
        let refused = CascadeResponse {
            error: Some(RpcError::NotInRoom),
            envelope: None,
        };
        assert_eq!(
            hex::encode(encode(&refused)),
            format!(
                "a165{}6b{}",
                hex::encode("error"),
                hex::encode("not_in_room")
            )
        );
        let answered = CascadeResponse {
            error: None,
            envelope: Some(ByteBuf::from(vec![7; 3])),
        };
        assert_eq!(
            decode::<CascadeResponse>(&encode(&answered), MAX_CASCADE_MESSAGE).unwrap(),
            answered
        );
        // An explicit null is not canonical; an oversized request never reaches the decoder.
        let null = format!("a165{}f6", hex::encode("error"));
        assert!(
            decode::<CascadeResponse>(&hex::decode(null).unwrap(), MAX_CASCADE_MESSAGE).is_err()
        );
        let over = vec![0u8; MAX_CASCADE_MESSAGE + 1];
        assert!(matches!(
            decode::<CascadeRequest>(&over, MAX_CASCADE_MESSAGE),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
