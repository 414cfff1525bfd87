//! What federation learned from other nodes, as [`Change`]s the core stores (one batch,
//! one flush) and shows. Federation has already judged every record; the core decides
//! only what users see: a group of another node that adds a local user is an invitation
//! until the user accepts it, and a user who blocked that node declines it at once.

use std::collections::HashMap;

use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId};
use voicechat_protocol::records::Answer;

use super::{Announce, Core, CoreError, Effects, Notice};
use crate::rooms::{Participant, RoomKey};
use crate::store::{Batch, GroupRecord, MemberRecord, MemberStatus, PeerRecord, RecordKey, RoomRecord};
use crate::time::unix_now;

/// One accepted fact from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A node's card, bound (or re-bound with new addresses).
    Card(PeerRecord),
    /// A binding dropped (the operator blocked the node).
    ForgetCard(NodeName),
    /// A group of another node, new or renamed.
    Group {
        /// The group.
        group: GroupId,
        /// Its home.
        home: NodeName,
        /// Display name.
        name: String,
        /// The `group_info` envelope.
        envelope: Vec<u8>,
    },
    /// A membership of a group of another node: added, role changed, or removed (`None`).
    Member {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
        /// The role, or `None` once removed.
        role: Option<Role>,
        /// The `membership` envelope.
        envelope: Vec<u8>,
    },
    /// A room of a group of another node: created, renamed or deleted.
    Room {
        /// The group.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// Display name.
        name: String,
        /// A stage room.
        stage: bool,
        /// A tombstone.
        deleted: bool,
        /// The `room_info` envelope.
        envelope: Vec<u8>,
    },
    /// A group of another node this node no longer holds (deleted at home, or no local
    /// member left): everything of it goes; `floor` is the highest seq seen of it.
    Forget {
        /// The group.
        group: GroupId,
        /// Records of it with a seq up to this are replays from now on.
        floor: u64,
    },
    /// A session of another node's user joined, changed or left a room (or its presence
    /// expired).
    Presence {
        /// The room.
        room: RoomKey,
        /// Who.
        participant: Participant,
        /// False: gone.
        joined: bool,
    },
    /// A user of another node answered being added to a group homed here.
    Consent {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
        /// Their answer.
        answer: Answer,
    },
    /// A local user joined a group of another node through its invite link: they consented.
    Joined {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
    },
}

impl Core {
    /// Stores and shows a batch of changes: one store transaction and one flush for all of
    /// them, then the live room changes. Returns whom to tell and what to announce (a
    /// consent at the home leads to a signed removal; a repeated invitation of a user who
    /// declined leads to their answer again).
    pub async fn apply_remote(&self, changes: Vec<Change>) -> Result<Effects, CoreError> {
        let mut b = Batch::new();
        let mut fx = Effects::default();
        // Members written earlier in this batch, so later changes see them.
        let mut written: HashMap<(GroupId, UserId), Option<MemberRecord>> = HashMap::new();
        let mut groups: HashMap<GroupId, Option<GroupRecord>> = HashMap::new();
        let mut presence = Vec::new();
        let mut home_removals = Vec::new();
        // A local user who joined through an invite link consented: no invitation, no block.
        let joined: std::collections::HashSet<(GroupId, UserId)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Joined { group, user } => Some((*group, user.clone())),
                _ => None,
            })
            .collect();
        for change in changes {
            match change {
                Change::Card(p) => b.put_card(&p),
                Change::ForgetCard(name) => b.remove_card(&name),
                Change::Group { group, home, name, envelope } => {
                    let existing = match groups.get(&group) {
                        Some(g) => g.clone(),
                        None => self.store.group(&group)?,
                    };
                    let created_at = existing.as_ref().map_or_else(unix_now, |g| g.created_at);
                    let g = GroupRecord { id: group, name, home, created_at };
                    b.put_group(&g);
                    b.remove_floor(&group);
                    b.put_record(&RecordKey::Info(group), &envelope);
                    if existing.is_some() {
                        fx.notice(Notice::Group(group));
                    }
                    groups.insert(group, Some(g));
                }
                Change::Member { group, user, role, envelope } => {
                    b.put_record(&RecordKey::Member(group, user.clone()), &envelope);
                    let key = (group, user.clone());
                    let existing = match written.get(&key) {
                        Some(m) => m.clone(),
                        None => self.store.member(&group, &user)?,
                    };
                    let local = self.is_local(&user);
                    match role {
                        Some(role) => {
                            let m = match existing {
                                Some(m) => {
                                    if local && m.status == MemberStatus::Declined {
                                        // The home did not get (or lost) the answer: repeat it.
                                        if let Some(c) = self.store.record(&RecordKey::Consent(group, user.clone()))? {
                                            fx.records(group, vec![c]);
                                        }
                                    }
                                    MemberRecord { role, ..m }
                                }
                                None => {
                                    let home = match groups.get(&group) {
                                        Some(Some(g)) => Some(g.home.clone()),
                                        _ => self.store.group(&group)?.map(|g| g.home),
                                    };
                                    let consented = joined.contains(&(group, user.clone()));
                                    let blocked = match (&home, local && !consented) {
                                        (Some(h), true) => self.store.user_blocks_node(&user, h)?,
                                        _ => false,
                                    };
                                    let status = match (local, blocked) {
                                        (false, _) => MemberStatus::Active,
                                        (true, false) if consented => MemberStatus::Active,
                                        (true, false) => MemberStatus::Invited,
                                        (true, true) => {
                                            let c = self.sign_consent(&group, &user, Answer::Declined);
                                            b.put_record(&RecordKey::Consent(group, user.clone()), &c);
                                            fx.records(group, vec![c]);
                                            MemberStatus::Declined
                                        }
                                    };
                                    if status == MemberStatus::Invited {
                                        fx.notice(Notice::Invitations(user.clone()));
                                    }
                                    MemberRecord { user: user.clone(), role, added_at: unix_now(), status }
                                }
                            };
                            b.put_member(&group, &m);
                            written.insert(key, Some(m));
                        }
                        None => {
                            b.remove_member(&group, &user);
                            written.insert(key, None);
                            let dropped = self.rooms().drop_from_group(&group, |p| p.user == user);
                            fx.dropped(&dropped);
                            match existing.map(|m| m.status) {
                                Some(MemberStatus::Active) if local => {
                                    fx.notice(Notice::GroupRemoved { group, users: vec![user.clone()] });
                                }
                                Some(MemberStatus::Invited) if local => fx.notice(Notice::Invitations(user.clone())),
                                _ => {}
                            }
                        }
                    }
                    fx.notice(Notice::Group(group));
                }
                Change::Room { group, room, name, stage, deleted, envelope } => {
                    b.put_record(&RecordKey::Room(group, room), &envelope);
                    if deleted {
                        b.remove_room(&group, &room);
                        let key = (group, room);
                        let dropped: Vec<_> = self.rooms().clear_room(&key).into_iter().map(|p| (key, p)).collect();
                        fx.dropped(&dropped);
                    } else {
                        let created_at = self.store.room(&group, &room)?.map_or_else(unix_now, |r| r.created_at);
                        b.put_room(&RoomRecord { id: room, group, name, created_at, stage });
                    }
                    fx.notice(Notice::Group(group));
                }
                Change::Forget { group, floor } => {
                    let members = self.store.members(&group)?;
                    self.store.delete_group_into(&mut b, &group)?;
                    b.put_floor(&group, floor);
                    groups.insert(group, None);
                    let dropped = self.rooms().end_group(&group);
                    for (room, p) in &dropped {
                        fx.notice(Notice::Left { room: *room, user: p.user.clone(), session: p.session });
                    }
                    let mut shown = Vec::new();
                    for m in members.into_iter().filter(|m| self.is_local(&m.user)) {
                        match m.status {
                            MemberStatus::Active => shown.push(m.user),
                            MemberStatus::Invited => fx.notice(Notice::Invitations(m.user)),
                            MemberStatus::Declined => {}
                        }
                    }
                    fx.notice(Notice::GroupRemoved { group, users: shown });
                }
                Change::Presence { room, participant, joined } => {
                    self.learn_name(&participant.user, participant.name.as_deref());
                    presence.push((room, participant, joined));
                }
                Change::Consent { group, user, answer } => {
                    let Some(m) = self.store.member(&group, &user)? else { continue };
                    match answer {
                        Answer::Accepted if m.status == MemberStatus::Invited => {
                            b.put_member(&group, &MemberRecord { status: MemberStatus::Active, ..m });
                            fx.notice(Notice::Group(group));
                        }
                        Answer::Accepted => {}
                        Answer::Declined | Answer::Left => home_removals.push((group, m)),
                    }
                }
                Change::Joined { group, user } => {
                    let m = match written.get(&(group, user.clone())) {
                        Some(m) => m.clone(),
                        None => self.store.member(&group, &user)?,
                    };
                    if let Some(m) = m {
                        let m = MemberRecord { status: MemberStatus::Active, ..m };
                        b.put_member(&group, &m);
                        written.insert((group, user.clone()), Some(m));
                        fx.notice(Notice::Invitations(user));
                        fx.notice(Notice::Group(group));
                    }
                }
            }
        }
        self.store.commit(b).await?;
        if !presence.is_empty() {
            let mut rooms = self.rooms();
            for (room, participant, joined) in presence {
                if joined {
                    rooms.join(participant, room);
                } else {
                    rooms.leave(&participant.seat());
                }
            }
            // People of other nodes count towards moving a call to the SFU.
            fx.call_modes(rooms.take_mode_changes());
            fx.notice(Notice::Presence);
        }
        for (group, m) in home_removals {
            fx.merge(self.remove_at_home(&group, &m).await?);
        }
        // A group that disappeared from the store in this batch has no live lists left.
        fx.notify.retain(|n| match n {
            Notice::Group(g) => !matches!(groups.get(g), Some(None)),
            _ => true,
        });
        fx.announce.retain(|a| match a {
            Announce::Records { group, .. } => !matches!(groups.get(group), Some(None)),
            Announce::Presence { .. } | Announce::OnSfu(_) => true,
        });
        Ok(fx)
    }
}
