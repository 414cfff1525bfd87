//! What the room machine tells sockets about presence: a snapshot when a socket starts to
//! follow a room, then deltas, each numbered with the room's version, or only the count of a
//! big room for a socket that is not in its call (the counts of a group's rooms batched once
//! a second). [`Delivery`]s are queued in order and sent
//! by the core (see [`super::Rooms::take_deliveries`]).

use serde::Serialize;
use voicechat_protocol::ids::{GroupId, RoomId};

use super::{Participant, SeatKey};

/// One message for some sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sockets (local sessions) it goes to, in no particular order.
    pub to: Vec<SeatKey>,
    /// The message.
    pub event: Event,
}

/// A presence message, as the socket sends it (`{"type": "participant_joined", …}`).
///
/// Every room has a version that grows by one with each change of its list (a join, a
/// leave, a mute). A delta carries the version it leads to, so a client holding version
/// `v` applies exactly `v + 1` and asks for a fresh snapshot (`resync`) on anything higher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Every room of a group this socket subscribed to (rooms nobody ever joined since the
    /// node started are left out: version 0, nobody in them).
    Presence {
        /// The group.
        group: GroupId,
        /// Its rooms.
        rooms: Vec<RoomState>,
    },
    /// One room's whole list: this socket joined its call, asked for it, or the room shrank
    /// back to the size where everyone sees the list.
    Participants {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// The room's version.
        version: u64,
        /// Everyone in the call, ordered by user, then session.
        participants: Vec<Participant>,
    },
    /// How many are in a big room's call, for a socket that is not in it.
    ParticipantCount {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// The room's version.
        version: u64,
        /// Sessions in the call.
        count: usize,
    },
    /// The counts of the big rooms of a group that changed since the last tick, for a socket
    /// that follows the group and is in none of their calls (one message for them all).
    ParticipantCounts {
        /// The group.
        group: GroupId,
        /// The rooms.
        rooms: Vec<RoomCount>,
    },
    /// A session joined the call.
    ParticipantJoined {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// The room's version after the change.
        version: u64,
        /// Who.
        participant: Participant,
    },
    /// A session left the call (its entry as it was).
    ParticipantLeft {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// The room's version after the change.
        version: u64,
        /// Who.
        participant: Participant,
    },
    /// A session in the call changed (muted or unmuted): its new entry.
    ParticipantChanged {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// The room's version after the change.
        version: u64,
        /// Who, as they are now.
        participant: Participant,
    },
}

/// One room in a [`Event::Presence`] snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomState {
    /// The room.
    pub room: RoomId,
    /// Its version.
    pub version: u64,
    /// Sessions in its call.
    pub count: usize,
    /// The list, unless the room is big and this socket is not in its call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<Participant>>,
}

/// One room in a [`Event::ParticipantCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomCount {
    /// The room.
    pub room: RoomId,
    /// Its version.
    pub version: u64,
    /// Sessions in its call.
    pub count: usize,
}

/// What changed in a room's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Joined,
    Left,
    Changed,
}

impl Kind {
    pub(super) fn event(self, (group, room): (GroupId, RoomId), version: u64, participant: Participant) -> Event {
        match self {
            Kind::Joined => Event::ParticipantJoined { group, room, version, participant },
            Kind::Left => Event::ParticipantLeft { group, room, version, participant },
            Kind::Changed => Event::ParticipantChanged { group, room, version, participant },
        }
    }
}
