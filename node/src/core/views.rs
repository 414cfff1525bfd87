//! What users see of groups, rooms and invitations (the JSON views), and how a [`Notice`]
//! becomes socket messages: each local member gets their own view, in the same turn as the
//! change.

use serde::Serialize;
use serde_json::json;
use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId};

use super::{Core, CoreError, Notice};
use crate::hub::encode;
use crate::rooms::Participant;
use crate::store::{GroupRecord, MemberRecord, MemberStatus, RoomRecord};

/// A group in a user's list.
#[derive(Debug, Serialize, PartialEq, Eq)]
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

/// A room, with who is in its call when asked for over HTTP. The socket's `group` event
/// leaves presence out: sockets follow it by subscribing (see [`crate::rooms`]).
#[derive(Debug, Serialize)]
pub struct RoomView {
    /// Room id.
    pub id: RoomId,
    /// Its group.
    pub group: GroupId,
    /// Display name.
    pub name: String,
    /// A stage (speakers and listeners) rather than a conversation.
    pub stage: bool,
    /// Sessions in the call now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<Participant>>,
    /// The room's presence version the list is at (the one deltas continue from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A member as others in the group see them.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Who.
    pub user: UserId,
    /// Their role.
    pub role: Role,
    /// Unix seconds.
    pub added_at: u64,
    /// `active`, or `invited` while a user of another node has not accepted yet.
    pub status: MemberStatus,
    /// Their display name, if known (set by them; for users of other nodes, seen in a call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
    /// Everyone in the group (and who is invited); not those who declined.
    pub members: Vec<MemberView>,
    /// Its rooms.
    pub rooms: Vec<RoomView>,
}

/// A group of another node that added this user, waiting for their answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct InvitationView {
    /// Group id.
    pub group: GroupId,
    /// Its display name.
    pub name: String,
    /// The node it lives on (and who invited).
    pub home: NodeName,
    /// The role offered.
    pub role: Role,
    /// Unix seconds.
    pub invited_at: u64,
}

impl Core {
    /// A room's view with its live participants and their version.
    pub fn room_view(&self, r: RoomRecord) -> RoomView {
        let key = (r.group, r.id);
        let (participants, version) = {
            let rooms = self.rooms();
            (rooms.participants(&key), rooms.version(&key))
        };
        RoomView { id: r.id, group: r.group, name: r.name, stage: r.stage, participants: Some(participants), version: Some(version) }
    }

    fn detail_with(
        &self,
        g: &GroupRecord,
        role: Role,
        members: &[MemberRecord],
        presence: bool,
    ) -> Result<GroupDetail, CoreError> {
        let rooms = self
            .store
            .rooms(&g.id)?
            .into_iter()
            .map(|r| match presence {
                true => self.room_view(r),
                false => RoomView { id: r.id, group: r.group, name: r.name, stage: r.stage, participants: None, version: None },
            })
            .collect();
        let members = members
            .iter()
            .filter(|m| m.status != MemberStatus::Declined)
            .map(|m| MemberView { user: m.user.clone(), role: m.role, added_at: m.added_at, status: m.status, name: self.display_name(&m.user) })
            .collect();
        Ok(GroupDetail { id: g.id, name: g.name.clone(), home: g.home.clone(), role, members, rooms })
    }

    /// The detail of a group for `viewer`; 404 unless they can see it.
    pub fn group_detail(&self, group: &GroupId, viewer: &UserId) -> Result<GroupDetail, CoreError> {
        let (g, m) = self.membership(group, viewer)?;
        self.detail_with(&g, m.role, &self.store.members(group)?, true)
    }

    /// The groups `user` sees, by name.
    pub fn groups_of(&self, user: &UserId) -> Result<Vec<GroupSummary>, CoreError> {
        let mut out = Vec::new();
        for gid in self.store.groups_of(user)? {
            if let Ok((g, m)) = self.membership(&gid, user) {
                out.push(GroupSummary { id: g.id, name: g.name, home: g.home, role: m.role });
            }
        }
        out.sort_by_key(|g| g.name.to_lowercase());
        Ok(out)
    }

    /// Groups of other nodes waiting for `user`'s answer, newest first.
    pub fn invitations(&self, user: &UserId) -> Result<Vec<InvitationView>, CoreError> {
        let mut out = Vec::new();
        for gid in self.store.groups_of(user)? {
            let (Some(g), Some(m)) = (self.store.group(&gid)?, self.store.member(&gid, user)?) else { continue };
            if m.status == MemberStatus::Invited {
                out.push(InvitationView { group: g.id, name: g.name, home: g.home, role: m.role, invited_at: m.added_at });
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.invited_at));
        Ok(out)
    }

    /// Sends every notice to the sockets concerned. Storage failures are logged: the
    /// change itself happened; only the live update is lost (the page reloads it).
    pub fn notify(&self, notices: &[Notice]) {
        for n in notices {
            if let Err(e) = self.notify_one(n) {
                tracing::warn!(%e, "could not notify a change");
            }
        }
    }

    fn notify_one(&self, n: &Notice) -> Result<(), CoreError> {
        match n {
            Notice::Group(gid) => {
                let Some(g) = self.store.group(gid)? else { return Ok(()) };
                let members = self.store.members(gid)?;
                for m in members.iter().filter(|m| self.is_local(&m.user) && m.status == MemberStatus::Active) {
                    let view = self.detail_with(&g, m.role, &members, false)?;
                    self.hub.send_users([&m.user], &encode(&json!({"type": "group", "group": view})));
                }
            }
            Notice::GroupRemoved { group, users } => {
                self.rooms().unwatch_users(group, users);
                let msg = encode(&json!({"type": "group_removed", "group": group}));
                self.hub.send_users(users.iter().filter(|u| self.is_local(u)), &msg);
            }
            Notice::Presence => self.send_presence(),
            Notice::Left { room, user, session } => {
                let msg = encode(&json!({"type": "left", "group": room.0, "room": room.1}));
                self.hub.send_session(user, session, &msg);
            }
            Notice::CallMode(room, mode) => {
                let msg = encode(&json!({"type": "call_mode", "group": room.0, "room": room.1, "mode": mode}));
                let local: Vec<_> = self.rooms().participants(room).into_iter().filter(|p| self.is_local(&p.user)).collect();
                for p in local {
                    self.hub.send_session(&p.user, &p.session, &msg);
                }
            }
            Notice::Invitations(user) => {
                let list = self.invitations(user)?;
                self.hub.send_users([user], &encode(&json!({"type": "invitations", "invitations": list})));
            }
        }
        Ok(())
    }

    /// Sends what the room machine queued, holding its lock throughout: two changes of a
    /// room made by two tasks reach every socket in the order of their versions.
    fn send_presence(&self) {
        let mut rooms = self.rooms();
        let deliveries = rooms.take_deliveries();
        let (active, seats) = rooms.counts();
        metrics::gauge!("voicechat_rooms_active").set(active as f64);
        metrics::gauge!("voicechat_participants").set(seats as f64);
        for d in deliveries {
            let msg = encode(&d.event);
            metrics::counter!("voicechat_presence_messages_total").increment(d.to.len() as u64);
            self.hub.send_sessions(&d.to, &msg);
        }
    }
}
