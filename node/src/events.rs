//! What users see of groups and rooms (the JSON views) and who is told when they change.
//!
//! Every change is pushed into the affected members' socket queues before the handler that
//! made it returns, so the events leave in the same turn as the change.

use serde::Serialize;
use serde_json::json;
use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, SessionId, UserId};

use crate::hub::encode;
use crate::rooms::{Participant, RoomKey};
use crate::state::AppState;
use crate::store::{GroupRecord, MemberRecord, RoomRecord, StoreError};

/// A group in a user's list.
#[derive(Debug, Serialize)]
pub struct GroupSummary {
    /// Group id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// Home node.
    pub home: NodeName,
    /// The viewer's role.
    pub role: Role,
}

/// A room with who is in its call.
#[derive(Debug, Serialize)]
pub struct RoomView {
    /// Room id.
    pub id: RoomId,
    /// Its group.
    pub group: GroupId,
    /// Display name.
    pub name: String,
    /// Sessions in the call now.
    pub participants: Vec<Participant>,
}

/// A group as a member sees it.
#[derive(Debug, Serialize)]
pub struct GroupDetail {
    /// Group id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// Home node.
    pub home: NodeName,
    /// The viewer's role.
    pub role: Role,
    /// Everyone in the group.
    pub members: Vec<MemberRecord>,
    /// Its rooms.
    pub rooms: Vec<RoomView>,
}

impl AppState {
    /// A room's view with its live participants.
    pub fn room_view(&self, r: RoomRecord) -> RoomView {
        let participants = self.rooms.lock().expect("rooms lock").participants(&(r.group, r.id));
        RoomView { id: r.id, group: r.group, name: r.name, participants }
    }

    /// The detail of a group for a viewer with `role`.
    pub fn group_detail(&self, g: &GroupRecord, role: Role) -> Result<GroupDetail, StoreError> {
        let members = self.store.members(&g.id)?;
        let rooms = self.store.rooms(&g.id)?.into_iter().map(|r| self.room_view(r)).collect();
        Ok(GroupDetail { id: g.id, name: g.name.clone(), home: g.home.clone(), role, members, rooms })
    }

    /// Whether `user` is one of ours, so has sockets on this node.
    fn is_local(&self, user: &UserId) -> bool {
        user.node == self.settings.node_name
    }

    /// Sends each local member their own view of the group (roles differ per member).
    pub fn notify_group(&self, g: &GroupRecord) -> Result<(), StoreError> {
        let members = self.store.members(&g.id)?;
        let rooms: Vec<RoomView> = self.store.rooms(&g.id)?.into_iter().map(|r| self.room_view(r)).collect();
        for m in members.iter().filter(|m| self.is_local(&m.user)) {
            let view = json!({"type": "group", "group": {
                "id": g.id, "name": g.name, "home": g.home, "role": m.role,
                "members": members, "rooms": rooms,
            }});
            self.hub.send_users([&m.user], &encode(&view));
        }
        Ok(())
    }

    /// Tells `users` they no longer see the group.
    pub fn notify_removed<'a>(&self, group: &GroupId, users: impl IntoIterator<Item = &'a UserId>) {
        self.hub.send_users(users, &encode(&json!({"type": "group_removed", "group": group})));
    }

    /// Sends a room's participant list to every local member of its group.
    pub fn notify_participants(&self, room: &RoomKey) -> Result<(), StoreError> {
        let (participants, (rooms, seats)) = {
            let r = self.rooms.lock().expect("rooms lock");
            (r.participants(room), r.counts())
        };
        metrics::gauge!("voicechat_rooms_active").set(rooms as f64);
        metrics::gauge!("voicechat_participants").set(seats as f64);
        let msg = encode(&json!({
            "type": "participants", "group": room.0, "room": room.1, "participants": participants,
        }));
        let members = self.store.members(&room.0)?;
        self.hub.send_users(members.iter().map(|m| &m.user).filter(|u| self.is_local(u)), &msg);
        Ok(())
    }

    /// Tells sockets they were taken out of a room, then updates the room's list.
    pub fn notify_dropped(&self, dropped: &[(RoomKey, Participant)]) -> Result<(), StoreError> {
        let mut rooms: Vec<RoomKey> = Vec::new();
        for (room, p) in dropped {
            let msg = encode(&json!({"type": "left", "group": room.0, "room": room.1}));
            self.hub.send_session(&p.user, &p.session, &msg);
            if !rooms.contains(room) {
                rooms.push(*room);
            }
        }
        for room in &rooms {
            self.notify_participants(room)?;
        }
        Ok(())
    }

    /// Takes one socket out of whatever room it is in, telling the room.
    pub fn leave_room(&self, session: &SessionId) -> Result<Option<RoomKey>, StoreError> {
        let left = {
            let mut rooms = self.rooms.lock().expect("rooms lock");
            let seat = rooms.find(session);
            rooms.leave(session);
            seat
        };
        let Some((room, p)) = left else { return Ok(None) };
        self.announce_presence(&p, room, false);
        self.notify_participants(&room)?;
        Ok(Some(room))
    }
}
