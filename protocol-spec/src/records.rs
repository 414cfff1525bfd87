//! The seven record kinds that cross nodes, their wire form and their field limits.
//!
//! Each record is a CBOR map with text keys. Struct fields are declared in canonical key
//! order (shorter key first, then bytewise), so serde's output is canonical as is.
//! SPEC.md §6 lists every field with its CBOR type and limit; [`Record::check_fields`]
//! enforces the limits.

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::error::ProtocolError;
use crate::ids::{GroupId, NodeName, Nonce, Role, RoomId, SessionId, UserId};
use crate::keys::NodeKey;

/// Most multiaddrs in a [`NodeCard`].
pub const MAX_ADDRS: usize = 16;
/// Longest multiaddr or URL, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest group or room display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;
/// Longest [`Signal::data`], in bytes of UTF-8 (16 KiB).
pub const MAX_SIGNAL_DATA: usize = 16 * 1024;
/// Longest [`Cascade::sdp`], in bytes of UTF-8 (8 KiB).
pub const MAX_CASCADE_SDP: usize = 8 * 1024;

/// A record kind: the `kind` text of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `node_card`
    NodeCard,
    /// `group_info`
    GroupInfo,
    /// `membership`
    Membership,
    /// `room_info`
    RoomInfo,
    /// `presence`
    Presence,
    /// `signal`
    Signal,
    /// `consent`
    Consent,
    /// `cascade`
    Cascade,
}

impl Kind {
    /// Every kind, in spec order.
    pub const ALL: [Kind; 8] = [
        Kind::NodeCard,
        Kind::GroupInfo,
        Kind::Membership,
        Kind::RoomInfo,
        Kind::Presence,
        Kind::Signal,
        Kind::Consent,
        Kind::Cascade,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NodeCard => "node_card",
            Kind::GroupInfo => "group_info",
            Kind::Membership => "membership",
            Kind::RoomInfo => "room_info",
            Kind::Presence => "presence",
            Kind::Signal => "signal",
            Kind::Consent => "consent",
            Kind::Cascade => "cascade",
        }
    }

    /// The kind with wire name `s`, if known.
    pub fn from_wire(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The largest payload (canonical CBOR of the record) accepted for this kind.
    pub fn payload_cap(self) -> usize {
        match self {
            Kind::NodeCard => 8 * 1024,
            Kind::Signal => 20 * 1024,
            Kind::Cascade => 10 * 1024,
            _ => 1024,
        }
    }
}

/// Binds a node name to its key, its libp2p addresses and its public web URL.
/// Signed by the node itself (`key` must equal the envelope's signer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCard {
    /// The node's key; equals the envelope signer.
    pub key: NodeKey,
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// Public base URL of the node's web page, `https://…` (or `http://…` on a testnet).
    pub url: String,
    /// The node's name.
    pub name: NodeName,
    /// libp2p multiaddrs in text form (`/ip4/…/tcp/…`), without `/p2p/`.
    pub addrs: Vec<String>,
}

/// A group's name and its home node. Signed by the home node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// The home node: authority for the group's info, rooms and membership.
    pub home: NodeName,
    /// Display name.
    pub name: String,
    /// The group.
    pub group: GroupId,
    /// True once the owner deleted the group (a tombstone).
    pub deleted: bool,
}

/// One user's membership of a group. Signed by the group's home node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// The role, or `None` (`"removed"` on the wire) once the user left or was removed.
    #[serde(with = "role_or_removed")]
    pub role: Option<Role>,
    /// The member, on any node.
    pub user: UserId,
    /// The group.
    pub group: GroupId,
}

/// A room of a group. Signed by the group's home node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// Display name.
    pub name: String,
    /// The room.
    pub room: RoomId,
    /// The group the room belongs to.
    pub group: GroupId,
    /// A stage (lectures, town halls): speakers and listeners. Absent on the wire when
    /// false, so a conversation room encodes as before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stage: bool,
    /// True once the room was deleted (a tombstone).
    pub deleted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether a session is in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// In the room (refreshed by heartbeats until it leaves).
    Joined,
    /// Left the room.
    Left,
}

/// Where a session sits in a stage room (SPEC.md §6.5). Its home node keeps it; other
/// nodes show it and route moderations to the group's home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagePlace {
    /// On stage: heard by everyone.
    Speaker,
    /// In the audience.
    Listener,
    /// In the audience, hand raised.
    Hand,
    /// In the audience, asked by a moderator to speak; has not answered yet.
    Invited,
}

/// One browser session of a user in a room. Signed by the user's home node; lives until
/// `expires_at` unless refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// The user's display name, as their home node has it. Absent when they have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room.
    pub room: RoomId,
    /// The user, whose home node signs.
    pub user: UserId,
    /// The group of the room.
    pub group: GroupId,
    /// Microphone muted.
    pub muted: bool,
    /// In a stage room: their place. Absent in a conversation, and in records of nodes
    /// that predate stages across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StagePlace>,
    /// Joined or left.
    pub state: PresenceState,
    /// The browser session (one tab).
    pub session: SessionId,
    /// Unix milliseconds when the session joined the call: everyone lists people in the
    /// order they joined. Absent in records of nodes that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<u64>,
    /// Unix seconds after which the record is void.
    pub expires_at: u64,
}

/// What a [`Signal`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalType {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// One ICE candidate (JSON of `RTCIceCandidateInit`), or empty for end-of-candidates.
    Candidate,
    /// The sender hangs up this peer connection.
    Bye,
    /// End-to-end encryption of the call's audio: a session's public key (`hello`) or a
    /// sender's media key wrapped for the receiver alone (`key`), opaque to both nodes.
    E2ee,
    /// A moderator of a stage acts on the receiver (`data`: the JSON
    /// `{"action":"invite"|"to_audience"|"mute"|"remove"}`); the receiver's node applies it
    /// only if the sender is an admin or owner of the group by the home's membership records.
    Moderate,
}

/// A WebRTC signaling message from one browser session to another, relayed node to node.
/// Signed by the sending user's home node; one-shot, made unique by `nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The receiving user.
    pub to: UserId,
    /// The SDP or candidate text, at most [`MAX_SIGNAL_DATA`] bytes.
    pub data: String,
    /// The sending user, whose home node signs.
    pub from: UserId,
    /// The room of the call.
    pub room: RoomId,
    /// What `data` is.
    #[serde(rename = "type")]
    pub signal_type: SignalType,
    /// The group of the room.
    pub group: GroupId,
    /// Random; a (signer, nonce) pair is accepted once.
    pub nonce: Nonce,
    /// Unix seconds after which the signal is void.
    pub expires_at: u64,
    /// The receiving browser session.
    pub to_session: SessionId,
    /// The sending browser session.
    pub from_session: SessionId,
}

/// What a [`Cascade`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CascadeType {
    /// The puller's SDP offer: it receives the other node's speakers in the room.
    Offer,
    /// The answer of the node pulled from.
    Answer,
    /// The puller stops pulling (`sdp` empty).
    Close,
}

/// A message between two nodes' forwarding units about one room: one node pulls the
/// speakers the other carries in that room, over WebRTC between the two (SPEC.md §9.5).
/// Signed by the sending node (`from`); one-shot, made unique by `nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cascade {
    /// The receiving node.
    pub to: NodeName,
    /// The SDP offer or answer, at most [`MAX_CASCADE_SDP`] bytes; empty for a close.
    pub sdp: String,
    /// The sending node, which signs.
    pub from: NodeName,
    /// The room.
    pub room: RoomId,
    /// What `sdp` is.
    #[serde(rename = "type")]
    pub cascade_type: CascadeType,
    /// The group of the room.
    pub group: GroupId,
    /// Random; a (signer, nonce) pair is accepted once.
    pub nonce: Nonce,
    /// Unix seconds after which the message is void.
    pub expires_at: u64,
}

/// A user's answer to being added to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// The user accepted the membership.
    Accepted,
    /// The user refused it; the group's home removes the membership.
    Declined,
    /// The user left the group; the group's home removes the membership.
    Left,
}

/// A user's answer to being added to a group homed on another node. Signed by the user's
/// home node, delivered to the group's home node, which applies it to the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Strictly increasing per (signer, kind, subject).
    pub seq: u64,
    /// The member answering, whose home node signs.
    pub user: UserId,
    /// The group.
    pub group: GroupId,
    /// Accepted, declined or left.
    pub answer: Answer,
}

/// What a record is about: with the signer and kind, the key of the `seq` rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A [`NodeCard`]: the node name.
    Node(NodeName),
    /// A [`GroupInfo`]: the group.
    Group(GroupId),
    /// A [`Membership`]: (group, user).
    Member(GroupId, UserId),
    /// A [`RoomInfo`]: (group, room).
    Room(GroupId, RoomId),
    /// A [`Presence`]: (group, user, session).
    Presence(GroupId, UserId, SessionId),
    /// A [`Signal`]: its nonce (seen at most once).
    Signal(Nonce),
    /// A [`Consent`]: (group, user).
    Consent(GroupId, UserId),
    /// A [`Cascade`]: its nonce (seen at most once).
    Cascade(Nonce),
}

/// Any record, tagged with its kind. In JSON: `{"kind": "...", "record": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Record {
    NodeCard(NodeCard),
    GroupInfo(GroupInfo),
    Membership(Membership),
    RoomInfo(RoomInfo),
    Presence(Presence),
    Signal(Signal),
    Consent(Consent),
    Cascade(Cascade),
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::NodeCard(_) => Kind::NodeCard,
            Record::GroupInfo(_) => Kind::GroupInfo,
            Record::Membership(_) => Kind::Membership,
            Record::RoomInfo(_) => Kind::RoomInfo,
            Record::Presence(_) => Kind::Presence,
            Record::Signal(_) => Kind::Signal,
            Record::Consent(_) => Kind::Consent,
            Record::Cascade(_) => Kind::Cascade,
        }
    }

    /// The canonical CBOR of the record: the envelope payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::NodeCard(r) => cbor::encode(r),
            Record::GroupInfo(r) => cbor::encode(r),
            Record::Membership(r) => cbor::encode(r),
            Record::RoomInfo(r) => cbor::encode(r),
            Record::Presence(r) => cbor::encode(r),
            Record::Signal(r) => cbor::encode(r),
            Record::Consent(r) => cbor::encode(r),
            Record::Cascade(r) => cbor::encode(r),
        }
    }

    /// Strictly decodes a payload of `kind` (canonical, nothing trailing) and checks the
    /// field limits. Does not check the size cap: [`Envelope::open`](crate::Envelope::open)
    /// does that before verifying.
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Record, ProtocolError> {
        let record = match kind {
            Kind::NodeCard => Record::NodeCard(cbor::decode(payload)?),
            Kind::GroupInfo => Record::GroupInfo(cbor::decode(payload)?),
            Kind::Membership => Record::Membership(cbor::decode(payload)?),
            Kind::RoomInfo => Record::RoomInfo(cbor::decode(payload)?),
            Kind::Presence => Record::Presence(cbor::decode(payload)?),
            Kind::Signal => Record::Signal(cbor::decode(payload)?),
            Kind::Consent => Record::Consent(cbor::decode(payload)?),
            Kind::Cascade => Record::Cascade(cbor::decode(payload)?),
        };
        record.check_fields()?;
        Ok(record)
    }

    /// Checks the field limits of SPEC.md §6.
    pub fn check_fields(&self) -> Result<(), ProtocolError> {
        match self {
            Record::NodeCard(r) => {
                if r.addrs.len() > MAX_ADDRS {
                    return Err(bad("addrs", "more than 16 addresses"));
                }
                for a in &r.addrs {
                    if !a.starts_with('/') || !plain_ascii(a, 2) {
                        return Err(bad("addrs", "not a text multiaddr of 2..=256 bytes"));
                    }
                }
                let scheme = r.url.starts_with("https://") || r.url.starts_with("http://");
                if !scheme || !plain_ascii(&r.url, 8) {
                    return Err(bad("url", "not an http(s) URL of 8..=256 bytes"));
                }
                Ok(())
            }
            Record::GroupInfo(r) => display_name(&r.name),
            Record::RoomInfo(r) => display_name(&r.name),
            Record::Membership(_) | Record::Consent(_) => Ok(()),
            Record::Presence(r) => {
                if let Some(name) = &r.name {
                    display_name(name)?;
                }
                match r.expires_at {
                    0 => Err(bad("expires_at", "must not be 0")),
                    _ => Ok(()),
                }
            }
            Record::Signal(r) => {
                if r.data.len() > MAX_SIGNAL_DATA {
                    return Err(bad("data", "more than 16384 bytes"));
                }
                if r.from_session == r.to_session {
                    return Err(bad("to_session", "equals from_session"));
                }
                Ok(())
            }
            Record::Cascade(r) => {
                if r.sdp.len() > MAX_CASCADE_SDP {
                    return Err(bad("sdp", "more than 8192 bytes"));
                }
                if r.from == r.to {
                    return Err(bad("to", "equals from"));
                }
                match (r.cascade_type, r.sdp.is_empty()) {
                    (CascadeType::Close, false) => Err(bad("sdp", "not empty in a close")),
                    (CascadeType::Offer | CascadeType::Answer, true) => {
                        Err(bad("sdp", "empty in an offer or answer"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The subject of the `seq` (or nonce) rule.
    pub fn subject(&self) -> Subject {
        match self {
            Record::NodeCard(r) => Subject::Node(r.name.clone()),
            Record::GroupInfo(r) => Subject::Group(r.group),
            Record::Membership(r) => Subject::Member(r.group, r.user.clone()),
            Record::RoomInfo(r) => Subject::Room(r.group, r.room),
            Record::Presence(r) => Subject::Presence(r.group, r.user.clone(), r.session),
            Record::Signal(r) => Subject::Signal(r.nonce),
            Record::Consent(r) => Subject::Consent(r.group, r.user.clone()),
            Record::Cascade(r) => Subject::Cascade(r.nonce),
        }
    }

    /// The record's `seq`; `None` for a [`Signal`], which has a nonce instead.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Record::NodeCard(r) => Some(r.seq),
            Record::GroupInfo(r) => Some(r.seq),
            Record::Membership(r) => Some(r.seq),
            Record::RoomInfo(r) => Some(r.seq),
            Record::Presence(r) => Some(r.seq),
            Record::Consent(r) => Some(r.seq),
            Record::Signal(_) | Record::Cascade(_) => None,
        }
    }

    /// The record's `expires_at`, for the kinds that expire (presence, signal).
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Record::Presence(r) => Some(r.expires_at),
            Record::Signal(r) => Some(r.expires_at),
            Record::Cascade(r) => Some(r.expires_at),
            _ => None,
        }
    }
}

fn bad(field: &'static str, reason: &'static str) -> ProtocolError {
    ProtocolError::InvalidField { field, reason }
}

/// Printable ASCII without spaces, `min..=MAX_ADDR_LEN` bytes.
fn plain_ascii(s: &str, min: usize) -> bool {
    (min..=MAX_ADDR_LEN).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn display_name(name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad("name", "not 1..=128 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("name", "contains a control character"));
    }
    Ok(())
}

/// `Option<Role>` as one text: `owner`, `admin`, `member`, or `removed` for `None`.
mod role_or_removed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ids::Role;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Wire {
        Owner,
        Admin,
        Member,
        Removed,
    }

    pub fn serialize<S: Serializer>(role: &Option<Role>, s: S) -> Result<S::Ok, S::Error> {
        match role {
            Some(Role::Owner) => Wire::Owner,
            Some(Role::Admin) => Wire::Admin,
            Some(Role::Member) => Wire::Member,
            None => Wire::Removed,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Role>, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Owner => Some(Role::Owner),
            Wire::Admin => Some(Role::Admin),
            Wire::Member => Some(Role::Member),
            Wire::Removed => None,
        })
    }
}
