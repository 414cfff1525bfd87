//! Gossipsub topic names and the request-response messages between nodes (SPEC.md §8–9).
//!
//! Each request-response protocol carries one CBOR value per stream direction (libp2p's
//! `request_response::cbor` framing: write, close, read to end under a size cap). The
//! types here are that value; encode them with [`encode`] and decode with [`decode`],
//! which checks the cap before decoding and then the canonical form.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::cbor;
use crate::envelope::MAX_ENVELOPE;
use crate::error::ProtocolError;
use crate::ids::{GroupId, UserId};

/// Gossipsub topic prefix; the full topic is this + the group id in lowercase hex.
pub const TOPIC_PREFIX: &str = "voicechat/1/group/";
/// Protocol id of group sync.
pub const SYNC_PROTOCOL: &str = "/voicechat/sync/1";
/// Protocol id of the signal relay.
pub const SIGNAL_PROTOCOL: &str = "/voicechat/signal/1";
/// Protocol id of join-by-invite.
pub const INVITE_PROTOCOL: &str = "/voicechat/invite/1";
/// Protocol id of direct record delivery.
pub const PUSH_PROTOCOL: &str = "/voicechat/push/1";

/// Largest gossipsub message: one envelope.
pub const MAX_GOSSIP_MESSAGE: usize = MAX_ENVELOPE;
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

/// The gossipsub topic of a group, sent plain (not hashed).
pub fn group_topic(group: &GroupId) -> String {
    format!("{TOPIC_PREFIX}{group}")
}

/// The group of a topic name, if it is one of ours.
pub fn parse_group_topic(topic: &str) -> Option<GroupId> {
    topic.strip_prefix(TOPIC_PREFIX)?.parse().ok()
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
    /// This node is not the home of the group (sync, invite) or of the target user (signal).
    NotHome,
    /// This node does not know the group.
    UnknownGroup,
    /// The invite code is unknown, used up or expired.
    BadInvite,
    /// Too many requests from this peer; retry later.
    RateLimited,
    /// The node failed internally; retry later.
    Internal,
}

/// Asks a group's home node for the group's current records, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Page number, from 0.
    pub page: u32,
    /// The group.
    pub group: GroupId,
}

/// One page of a group's current records: GroupInfo first (page 0), then RoomInfo,
/// Membership and unexpired Presence envelopes, each exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// True when page + 1 has more records.
    pub more: bool,
    /// Refusal; `records` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// Encoded envelopes, at most [`MAX_SYNC_RECORDS`].
    pub records: Vec<ByteBuf>,
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

/// Hands records straight to a node that needs them but may not be subscribed to the
/// group's topic yet: a node card on connect, a membership of one of its users, a group's
/// deletion.
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

    #[test]
    fn topics_are_plain_hex() {
        let g = GroupId([0x0f; 16]);
        assert_eq!(
            group_topic(&g),
            format!("voicechat/1/group/{}", "0f".repeat(16))
        );
        assert_eq!(parse_group_topic(&group_topic(&g)), Some(g));
        assert_eq!(parse_group_topic("voicechat/1/group/xyz"), None);
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
        let req = SyncRequest {
            page: 2,
            group: GroupId([1; 16]),
        };
        assert_eq!(
            decode::<SyncRequest>(&encode(&req), MAX_SYNC_REQUEST).unwrap(),
            req
        );
        let resp = SyncResponse {
            more: false,
            error: None,
            records: vec![ByteBuf::from(vec![1, 2])],
        };
        assert_eq!(
            decode::<SyncResponse>(&encode(&resp), MAX_SYNC_RESPONSE).unwrap(),
            resp
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
        let push = PushRequest { records: vec![ByteBuf::from(vec![7])] };
        assert_eq!(decode::<PushRequest>(&encode(&push), MAX_PUSH_REQUEST).unwrap(), push);
        assert!(decode::<SyncRequest>(&[0; 2000], MAX_SYNC_REQUEST).is_err());
    }
}
