//! The typed values the node keeps in sled (JSON-encoded), one struct per tree.

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId, UserName};
use voicechat_protocol::keys::NodeKey;

/// A local account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    /// Canonical (lowercase) name.
    pub name: UserName,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// A disabled user cannot log in; their sessions were ended when it was set.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// May list, disable and re-enable accounts and set the registration mode. The first
    /// account of a node gets it (absent in data written before: false).
    #[serde(default)]
    pub admin: bool,
    /// An email address an identity provider vouched for (verified); a first sign-in
    /// through another provider with the same verified address links to this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The name shown to others (any script); the user name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A browser's login session, keyed by the SHA-256 of its random cookie value (a copy of
/// the store does not hand out working cookies).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user: UserName,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; past it the session is gone (and purged by the next sweep).
    pub expires_at: u64,
}

/// A group this node knows: its own (home here) or another node's, copied because a local
/// user was added to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupRecord {
    /// Network-wide id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// The node that is the authority for this group.
    pub home: NodeName,
    /// Unix seconds.
    pub created_at: u64,
}

/// Where a membership stands with the person it names.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// A member in full: sees the group, joins its calls.
    #[default]
    Active,
    /// Added by a group of another node (or, on the home, a user of another node who has
    /// not answered yet): an invitation. Nothing of the group shows to the invited user
    /// until they accept.
    Invited,
    /// The local user declined the invitation or left; kept until the home's removal
    /// arrives, so a repeat of the membership is answered again instead of shown.
    Declined,
}

/// One member of a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    /// Local or remote user.
    pub user: UserId,
    /// What they may do.
    pub role: Role,
    /// Unix seconds.
    pub added_at: u64,
    /// Whether they accepted (absent in data written before consent existed: active).
    #[serde(default)]
    pub status: MemberStatus,
}

impl MemberRecord {
    /// An active member added at `now`.
    pub fn active(user: UserId, role: Role, now: u64) -> Self {
        Self { user, role, added_at: now, status: MemberStatus::Active }
    }
}

/// A room inside a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomRecord {
    /// Room id, unique within the network.
    pub id: RoomId,
    /// The group it belongs to.
    pub group: GroupId,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// A stage: speakers and listeners (rooms stored before stages existed are not).
    #[serde(default)]
    pub stage: bool,
}

/// An invite link into a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteRecord {
    /// The random code in the link.
    pub code: String,
    /// Where it leads.
    pub group: GroupId,
    /// The admin who made it.
    pub created_by: UserId,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; past it the link is dead.
    pub expires_at: u64,
    /// `None`: unlimited.
    pub max_uses: Option<u32>,
    /// How many users joined through it.
    pub uses: u32,
    /// Revoked by an admin.
    pub revoked: bool,
}

impl InviteRecord {
    /// Whether the link still lets someone in at `now`.
    pub fn usable(&self, now: u64) -> bool {
        !self.revoked && now < self.expires_at && self.max_uses.is_none_or(|m| self.uses < m)
    }
}

/// Why this node believes a node name belongs to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// The operator pinned the key (`--peer …/p2p/<id>`, `voicechat peer add`).
    Pinned,
    /// The node's HTTPS origin served the same card under a verified certificate.
    Verified,
    /// Trusted on first use (only with `--federation open`, for names that are not DNS names).
    Tofu,
}

/// A node known from its signed node card, and why its name is believed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its public name.
    pub name: NodeName,
    /// Its ed25519 key, hex.
    pub key: String,
    /// Its web origin.
    pub url: String,
    /// Its libp2p addresses.
    pub addrs: Vec<String>,
    /// The card's seq.
    pub seq: u64,
    /// The signed card itself (hex), exactly as received.
    #[serde(default)]
    pub card: String,
    /// How the binding was made (absent in older data: pinned, the only way it was made).
    #[serde(default = "pinned")]
    pub trust: Trust,
}

fn pinned() -> Trust {
    Trust::Pinned
}

impl PeerRecord {
    /// The node's key, if the stored hex is well formed.
    pub fn node_key(&self) -> Option<NodeKey> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.key, &mut key).ok()?;
        Some(NodeKey::from_bytes(key))
    }

    /// The signed card bytes.
    pub fn card_bytes(&self) -> Vec<u8> {
        hex::decode(&self.card).unwrap_or_default()
    }
}
