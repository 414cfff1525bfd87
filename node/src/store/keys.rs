//! How keys are laid out in each tree. Fixed-width ids come first, so a prefix scan selects
//! one group (members, rooms, signed records) or one user (their groups, their blocks).

use voicechat_protocol::ids::{GroupId, NodeName, RoomId, UserId};
use voicechat_protocol::records::Record;

/// `members`: group ‖ user id text.
pub(crate) fn member(group: &GroupId, user: &UserId) -> Vec<u8> {
    let mut k = group.as_bytes().to_vec();
    k.extend_from_slice(user.to_string().as_bytes());
    k
}

/// `user_groups` (the reverse index of `members`): user id text ‖ 0 ‖ group.
pub(crate) fn user_group(user: &UserId, group: &GroupId) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(group.as_bytes());
    k
}

/// The prefix of one user's keys in `user_groups` and `user_blocks`.
pub(crate) fn user_prefix(user: &UserId) -> Vec<u8> {
    let mut k = user.to_string().into_bytes();
    k.push(0);
    k
}

/// `user_blocks`: user id text ‖ 0 ‖ node name.
pub(crate) fn user_block(user: &UserId, node: &NodeName) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(node.as_str().as_bytes());
    k
}

/// `rooms`: group ‖ room.
pub(crate) fn room(group: &GroupId, room: &RoomId) -> Vec<u8> {
    let mut k = group.as_bytes().to_vec();
    k.extend_from_slice(room.as_bytes());
    k
}

/// Where a signed record of a group is kept in `records`: one entry per subject, holding
/// the latest envelope exactly as signed (tombstones included, so a replay of an older
/// record of a deleted room or a removed member is still refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// The group's `group_info`.
    Info(GroupId),
    /// A `room_info`.
    Room(GroupId, RoomId),
    /// A `membership`.
    Member(GroupId, UserId),
    /// A `consent` this node signed for one of its users (kept to answer again).
    Consent(GroupId, UserId),
}

impl RecordKey {
    /// The key of a persistent group record; `None` for node cards, presence and signals.
    pub fn of(record: &Record) -> Option<RecordKey> {
        Some(match record {
            Record::GroupInfo(r) => RecordKey::Info(r.group),
            Record::RoomInfo(r) => RecordKey::Room(r.group, r.room),
            Record::Membership(r) => RecordKey::Member(r.group, r.user.clone()),
            Record::Consent(r) => RecordKey::Consent(r.group, r.user.clone()),
            _ => return None,
        })
    }

    /// The group the record belongs to.
    pub fn group(&self) -> &GroupId {
        match self {
            RecordKey::Info(g) | RecordKey::Room(g, _) | RecordKey::Member(g, _) | RecordKey::Consent(g, _) => g,
        }
    }

    /// group ‖ tag ‖ subject.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut k = self.group().as_bytes().to_vec();
        match self {
            RecordKey::Info(_) => k.push(0),
            RecordKey::Room(_, r) => {
                k.push(1);
                k.extend_from_slice(r.as_bytes());
            }
            RecordKey::Member(_, u) => {
                k.push(2);
                k.extend_from_slice(u.to_string().as_bytes());
            }
            RecordKey::Consent(_, u) => {
                k.push(3);
                k.extend_from_slice(u.to_string().as_bytes());
            }
        }
        k
    }
}

/// Parses the 16-byte id that starts a key (or is the whole key).
pub(crate) fn id16(bytes: &[u8]) -> Option<[u8; 16]> {
    bytes.get(..16)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_of_one_group_share_its_prefix() {
        let g = GroupId([7; 16]);
        let u: UserId = "carol@beta".parse().unwrap();
        let keys = [
            RecordKey::Info(g),
            RecordKey::Room(g, RoomId([1; 16])),
            RecordKey::Member(g, u.clone()),
            RecordKey::Consent(g, u),
        ];
        let bytes: Vec<Vec<u8>> = keys.iter().map(RecordKey::bytes).collect();
        assert!(bytes.iter().all(|b| b.starts_with(g.as_bytes())));
        // Distinct tags: no two subjects collide.
        let mut sorted = bytes.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_eq!(id16(&bytes[0]), Some([7; 16]));
    }
}
