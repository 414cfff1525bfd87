//! The typed values the node keeps in sled, and how their keys are laid out.

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId, UserName};

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
}

/// A browser's login session, keyed by its random cookie value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user: UserName,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; past it the session is gone.
    pub expires_at: u64,
}

/// A group this node knows. For now every group lives at home here; federation adds
/// groups whose `home` is another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupRecord {
    /// Network-wide id.
    pub id: GroupId,
    /// Display name, 1–64 characters.
    pub name: String,
    /// The node that is the authority for this group.
    pub home: NodeName,
    /// Unix seconds.
    pub created_at: u64,
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
}

/// A room inside a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomRecord {
    /// Room id, unique within the network.
    pub id: RoomId,
    /// The group it belongs to.
    pub group: GroupId,
    /// Display name, 1–64 characters.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
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

/// Key layouts. Fixed-width ids first so prefix scans select one group.
pub(crate) mod keys {
    use super::*;

    pub fn member(group: &GroupId, user: &UserId) -> Vec<u8> {
        let mut k = group.as_bytes().to_vec();
        k.extend_from_slice(user.to_string().as_bytes());
        k
    }

    /// The reverse index: a user's groups.
    pub fn user_group(user: &UserId, group: &GroupId) -> Vec<u8> {
        let mut k = user.to_string().into_bytes();
        k.push(0);
        k.extend_from_slice(group.as_bytes());
        k
    }

    pub fn user_prefix(user: &UserId) -> Vec<u8> {
        let mut k = user.to_string().into_bytes();
        k.push(0);
        k
    }

    pub fn room(group: &GroupId, room: &RoomId) -> Vec<u8> {
        let mut k = group.as_bytes().to_vec();
        k.extend_from_slice(room.as_bytes());
        k
    }
}
