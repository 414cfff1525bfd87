//! The domain core: the one owner of the store, the live rooms and the socket registry.
//!
//! Every operation (create a room, add a member, join a call, apply what another node
//! sent…) is one method that changes state and returns [`Effects`]: whom to notify
//! ([`Notice`]s, turned into socket messages by [`Core::notify`]) and what to announce to
//! other nodes ([`Announce`]s, signed records and presence, read by federation from a
//! channel). HTTP, WebSocket and federation call the core; the core knows nothing of them.

mod calls;
mod groups;
mod members;
mod remote;
pub mod stage;
pub mod signer;
mod views;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use voicechat_protocol::ids::{GroupId, NodeName, SessionId, UserId};

use crate::hub::Hub;
use crate::rooms::{DEFAULT_LIST_MAX, Participant, RoomKey, Rooms, SeatKey};
use crate::store::{GroupRecord, MemberRecord, MemberStatus, Store, StoreError};

pub use members::{GroupPreview, InvitePreview};
pub use remote::Change;
pub use signer::Signer;
pub use views::{GroupDetail, GroupSummary, InvitationView, MemberView, RoomView};

/// Longest group or room name, in characters.
pub const MAX_NAME: usize = 64;
/// Display names of other nodes' users kept at most (see [`Core::learn_name`]).
const MAX_REMOTE_NAMES: usize = 10_000;

/// Whom to tell about a change. Executed by [`Core::notify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Each local member who can see the group gets their own view of it.
    Group(GroupId),
    /// These local users no longer see the group.
    GroupRemoved {
        /// The group.
        group: GroupId,
        /// Who is told.
        users: Vec<UserId>,
    },
    /// Presence changed: the room machine's queued snapshots, deltas and counts go out (in
    /// the order they were queued, see [`crate::rooms`]).
    Presence,
    /// One socket was taken out of a call.
    Left {
        /// The room it was in.
        room: RoomKey,
        /// The socket's user.
        user: UserId,
        /// The socket.
        session: SessionId,
    },
    /// A local user's invitations changed.
    Invitations(UserId),
    /// A call's mode changed: its participants on this node are told.
    CallMode(RoomKey, crate::rooms::CallMode),
}

/// What other nodes must learn. Read by federation from a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// Signed records of one group (its info, rooms, memberships, or a consent), exactly as
    /// stored. Federation sends them to the nodes that need them.
    Records {
        /// The group.
        group: GroupId,
        /// Encoded envelopes.
        records: Vec<Vec<u8>>,
    },
    /// A local session joined, changed (muted) or left a room.
    Presence {
        /// The room.
        room: RoomKey,
        /// Who.
        participant: Participant,
        /// False: it left.
        joined: bool,
    },
    /// A conversation's call moved to this node's SFU: federation cascades it with the
    /// other nodes' SFUs (as it does every stage).
    OnSfu(RoomKey),
}

/// What an operation changed, for others: to be passed to [`Core::commit`].
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use = "effects are lost unless committed"]
pub struct Effects {
    /// Local sockets to tell.
    pub notify: Vec<Notice>,
    /// Other nodes to tell.
    pub announce: Vec<Announce>,
    /// Who may now be heard through the SFU, or not (stage roles, moderator mutes).
    pub media: Vec<(SeatKey, bool)>,
}

impl Effects {
    /// Calls whose mode changed: their people here are told, and a call now on the SFU
    /// is announced to federation.
    pub fn call_modes(&mut self, modes: Vec<(RoomKey, crate::rooms::CallMode)>) {
        for (room, mode) in modes {
            if mode == crate::rooms::CallMode::Sfu {
                self.announce.push(Announce::OnSfu(room));
            }
            self.notice(Notice::CallMode(room, mode));
        }
    }

    /// Appends another operation's effects.
    pub fn merge(&mut self, other: Effects) {
        self.notify.extend(other.notify);
        self.announce.extend(other.announce);
        self.media.extend(other.media);
    }

    fn notice(&mut self, n: Notice) {
        if !self.notify.contains(&n) {
            self.notify.push(n);
        }
    }

    fn records(&mut self, group: GroupId, records: Vec<Vec<u8>>) {
        if !records.is_empty() {
            self.announce.push(Announce::Records { group, records });
        }
    }

    /// Tells dropped sockets they left, and those following the rooms.
    fn dropped(&mut self, dropped: &[(RoomKey, Participant)]) {
        for (room, p) in dropped {
            self.notice(Notice::Left { room: *room, user: p.user.clone(), session: p.session });
            self.notice(Notice::Presence);
        }
    }
}

/// Why an operation was refused; the HTTP edge turns each into a status.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// 400: the request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: absent, or not yours to know about.
    #[error("{0}")]
    NotFound(String),
    /// 409: exists already.
    #[error("{0}")]
    Conflict(String),
    /// 410: an invite that cannot be used any more.
    #[error("{0}")]
    Gone(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    fn not_found(what: &str) -> Self {
        CoreError::NotFound(format!("no such {what}"))
    }
}

/// The core. Shared behind an `Arc`.
pub struct Core {
    /// Durable state (read freely; written only through the core).
    pub store: Store,
    me: NodeName,
    signer: Signer,
    rooms: Mutex<Rooms>,
    hub: Hub,
    announce: Option<mpsc::Sender<Announce>>,
    /// Display names of other nodes' users, from their signed presence.
    remote_names: Mutex<HashMap<UserId, String>>,
    /// Per call, the nodes whose people it reaches through the SFUs' cascade both ways.
    cascaded: Mutex<HashMap<RoomKey, Vec<NodeName>>>,
}

impl Core {
    /// The core of node `me` over `store`. Announcements go to `announce` (federation), or
    /// nowhere on a node without federation.
    pub fn new(store: Store, me: NodeName, signer: Signer, announce: Option<mpsc::Sender<Announce>>) -> Self {
        let rooms = Mutex::new(Rooms::new(me.clone(), DEFAULT_LIST_MAX));
        Self { store, me, signer, rooms, hub: Hub::default(), announce, remote_names: Mutex::default(), cascaded: Mutex::default() }
    }

    /// Rooms of more than `n` sessions show only their count to sockets outside their call.
    pub fn with_room_list_max(self, n: usize) -> Self {
        self.rooms().set_list_max(n);
        self
    }

    /// `user`'s display name: from the account of a user of this node, else as their home
    /// node last signed it in their presence.
    pub fn display_name(&self, user: &UserId) -> Option<String> {
        if user.node == self.me {
            self.store.user(&user.name).ok().flatten().and_then(|u| u.display_name)
        } else {
            self.remote_names.lock().expect("names lock").get(user).cloned()
        }
    }

    /// Remembers the display name another node signed for one of its users.
    pub(crate) fn learn_name(&self, user: &UserId, name: Option<&str>) {
        if let Some(name) = name {
            let mut names = self.remote_names.lock().expect("names lock");
            if names.get(user).map(String::as_str) != Some(name) {
                // Bounded by the people in calls of groups shared with other nodes; a cap
                // keeps a flood of sessions from growing it without end.
                if names.len() >= MAX_REMOTE_NAMES {
                    names.clear();
                }
                names.insert(user.clone(), name.to_owned());
            }
        }
    }

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// The node's signer (shared with federation).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The socket registry.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Whether `user` lives on this node.
    pub fn is_local(&self, user: &UserId) -> bool {
        user.node == self.me
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().expect("rooms lock")
    }

    /// Number of rooms with a call and of participants, for metrics.
    pub fn call_counts(&self) -> (usize, usize) {
        self.rooms().counts()
    }

    /// Tells local sockets, then hands announcements to federation (waiting for room in its
    /// queue: a slow federation slows writers down instead of losing records).
    pub async fn commit(&self, fx: Effects) {
        self.notify(&fx.notify);
        if let Some(tx) = &self.announce {
            for a in fx.announce {
                if tx.send(a).await.is_err() {
                    tracing::debug!("federation stopped; announcement dropped");
                    break;
                }
            }
        }
    }

    /// The group and the viewer's membership if they can see it (an active member); 404
    /// otherwise, so outsiders cannot tell a group exists.
    pub fn membership(&self, group: &GroupId, user: &UserId) -> Result<(GroupRecord, MemberRecord), CoreError> {
        let g = self.store.group(group)?.ok_or_else(|| CoreError::not_found("group"))?;
        match self.store.member(group, user)? {
            Some(m) if m.status == MemberStatus::Active => Ok((g, m)),
            _ => Err(CoreError::not_found("group")),
        }
    }

    /// Only a group's home node changes it; elsewhere the copy is read-only.
    fn require_home(&self, g: &GroupRecord) -> Result<(), CoreError> {
        if g.home == self.me {
            Ok(())
        } else {
            Err(CoreError::BadRequest(format!(
                "this group is managed on its home node {}; make the change there",
                g.home
            )))
        }
    }
}

/// Trims a group or room name and checks it.
pub fn clean_name(name: &str) -> Result<String, CoreError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME || name.chars().any(char::is_control) {
        return Err(CoreError::BadRequest(format!("names are 1 to {MAX_NAME} characters, without control characters")));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;
