//! What this node tells the network: the records of groups it is home to, its users'
//! presence (with heartbeats), their signals, and the requests it makes of other nodes
//! (sync, join by invite).
//!
//! Announcements never block the request that caused them: they are signed at once and
//! sent from a spawned task; a record that misses a node is repaired by the next sync.

use std::collections::BTreeSet;
use std::pin::Pin;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{GroupId, NodeName, Nonce, Role, RoomId, SessionId, UserId};
use voicechat_protocol::records::{GroupInfo, Membership, Presence, PresenceState, Record, RoomInfo, Signal, SignalType};
use voicechat_protocol::rpc::{
    self, InviteRequest, InviteResponse, MAX_INVITE_RESPONSE, MAX_SIGNAL_RESPONSE, MAX_SYNC_RESPONSE, PushRequest,
    RpcError, SignalRequest, SignalResponse, SyncRequest, SyncResponse, group_topic,
};

use super::net::Proto;
use super::{Federation, HEARTBEAT, HeldPresence, PRESENCE_TTL, peer_id_of};
use crate::rooms::{Participant, RoomKey};
use crate::state::AppState;
use crate::store::{GroupRecord, RoomRecord, StoreError};
use crate::time::{random_16, unix_now};
use crate::ws::messages::SignalKind;

/// Why a signal to another node's user did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Federation is off or the user's node is unknown or unreachable.
    #[error("{0}'s node cannot be reached")]
    Unreachable(NodeName),
    /// The other node refused it.
    #[error("the other node refused the signal: {0:?}")]
    Refused(RpcError),
}

impl AppState {
    fn peer_of(&self, node: &NodeName) -> Option<PeerId> {
        peer_id_of(&self.store.peer(node).ok()??.node_key()?)
    }

    /// The other nodes with members in a group.
    fn member_nodes(&self, group: &GroupId) -> Result<BTreeSet<NodeName>, StoreError> {
        let me = &self.settings.node_name;
        Ok(self.store.members(group)?.into_iter().map(|m| m.user.node).filter(|n| n != me).collect())
    }

    /// Whether presence in this group concerns other nodes.
    fn is_federated(&self, group: &GroupId) -> bool {
        match self.store.group(group) {
            Ok(Some(g)) if g.home != self.settings.node_name => true,
            Ok(Some(_)) => self.member_nodes(group).is_ok_and(|n| !n.is_empty()),
            _ => false,
        }
    }

    /// Publishes on the group's topic, from a spawned task.
    fn publish(&self, group: GroupId, records: Vec<Vec<u8>>) {
        let Some(fed) = self.fed() else { return };
        let net = fed.net.clone();
        tokio::spawn(async move {
            let topic = group_topic(&group);
            for r in records {
                if let Err(e) = net.publish(&topic, r).await {
                    tracing::debug!(%e, "publish failed");
                }
            }
        });
    }

    /// Pushes records straight to `nodes`, from a spawned task. Group records go this way
    /// as well as by gossip: a node that just got its first member of a group is not in
    /// the topic's mesh yet and would miss the next change.
    fn push(&self, nodes: BTreeSet<NodeName>, records: Vec<Vec<u8>>) {
        let Some(fed) = self.fed() else { return };
        let net = fed.net.clone();
        let peers: Vec<PeerId> = nodes.iter().filter_map(|n| self.peer_of(n)).collect();
        if peers.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let push = rpc::encode(&PushRequest { records: records.into_iter().map(ByteBuf::from).collect() });
            for peer in peers {
                if let Err(e) = net.request(peer, Proto::Push, push.clone()).await {
                    tracing::debug!(%peer, %e, "push failed; the next sync repairs it");
                }
            }
        });
    }

    /// Publishes a group record and pushes it to every node with members, plus `extra`,
    /// minus `skip` (a node that is sent the whole group instead).
    fn announce(&self, group: GroupId, record: Vec<u8>, extra: Option<&NodeName>, skip: Option<&NodeName>) {
        let mut nodes = self.member_nodes(&group).unwrap_or_default();
        nodes.extend(extra.cloned());
        if let Some(skip) = skip {
            nodes.remove(skip);
        }
        self.publish(group, vec![record.clone()]);
        self.push(nodes, vec![record]);
    }

    /// The current records of a group homed here, freshly signed: its info, rooms,
    /// memberships, then the unexpired presence this node holds. What sync answers.
    pub(super) fn group_records(&self, fed: &Federation, group: &GroupId) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some(g) = self.store.group(group)? else { return Ok(Vec::new()) };
        let mut out = vec![fed.seal(&group_info(fed, &g, false))];
        for r in self.store.rooms(group)? {
            out.push(fed.seal(&room_info(fed, &r, false)));
        }
        for m in self.store.members(group)? {
            out.push(fed.seal(&Record::Membership(Membership { seq: fed.next_seq(), role: Some(m.role), user: m.user, group: *group })));
        }
        let now = unix_now();
        let cache = fed.presence.lock().expect("presence lock");
        out.extend(cache.values().filter(|p| &p.group == group && p.expires_at >= now).map(|p| p.envelope.clone()));
        Ok(out)
    }

    /// Announces a group's info (or its deletion, to `members_before` too).
    pub fn announce_group(&self, g: &GroupRecord, deleted: bool, nodes: BTreeSet<NodeName>) {
        let Some(fed) = self.fed() else { return };
        if g.home != self.settings.node_name {
            return;
        }
        let rec = fed.seal(&group_info(fed, g, deleted));
        // A deleted group has no members left in the store: `nodes` are those it had.
        self.publish(g.id, vec![rec.clone()]);
        let mut nodes = nodes;
        nodes.extend(self.member_nodes(&g.id).unwrap_or_default());
        self.push(nodes, vec![rec]);
        if !deleted {
            let net = fed.net.clone();
            let topic = group_topic(&g.id);
            tokio::spawn(async move { net.subscribe(&topic).await });
        }
    }

    /// Announces a membership change to every node with members. With `push`, a member
    /// of another node who was just added gets the whole group sent to their node, which
    /// knows nothing of it yet; a removed one's node is told too.
    pub fn announce_member(&self, g: &GroupRecord, user: &UserId, role: Option<Role>, push: bool) {
        let Some(fed) = self.fed() else { return };
        if g.home != self.settings.node_name {
            return;
        }
        let rec = fed.seal(&Record::Membership(Membership { seq: fed.next_seq(), role, user: user.clone(), group: g.id }));
        let remote = user.node != self.settings.node_name;
        let whole_group = push && remote && role.is_some();
        if whole_group {
            match self.group_records(fed, &g.id) {
                Ok(all) => self.push(BTreeSet::from([user.node.clone()]), all),
                Err(e) => tracing::warn!(%e, "could not gather the group for a new member's node"),
            }
        }
        let extra = (remote && role.is_none()).then_some(&user.node);
        self.announce(g.id, rec, extra, whole_group.then_some(&user.node));
    }

    /// Announces a room's creation, rename or deletion.
    pub fn announce_room(&self, g: &GroupRecord, r: &RoomRecord, deleted: bool) {
        let Some(fed) = self.fed() else { return };
        if g.home != self.settings.node_name {
            return;
        }
        let rec = fed.seal(&room_info(fed, r, deleted));
        self.announce(g.id, rec, None, None);
    }

    /// Announces a local session joining, updating or leaving a room of a federated group.
    pub fn announce_presence(&self, p: &Participant, room: RoomKey, joined: bool) {
        let Some(fed) = self.fed() else { return };
        if p.user.node != self.settings.node_name || !self.is_federated(&room.0) {
            return;
        }
        let record = Presence {
            seq: fed.next_seq(),
            room: room.1,
            user: p.user.clone(),
            group: room.0,
            muted: p.muted,
            state: if joined { PresenceState::Joined } else { PresenceState::Left },
            session: p.session,
            expires_at: unix_now() + PRESENCE_TTL,
        };
        let bytes = fed.seal(&Record::Presence(record));
        {
            let mut cache = fed.presence.lock().expect("presence lock");
            if joined {
                let held = HeldPresence { group: room.0, expires_at: unix_now() + PRESENCE_TTL, envelope: bytes.clone() };
                cache.insert(p.session, held);
            } else {
                cache.remove(&p.session);
            }
        }
        self.publish(room.0, vec![bytes]);
    }

    /// Sends a browser's signal to a user of another node; answers when that node
    /// delivered it or refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn relay_signal(
        &self,
        from: &UserId,
        from_session: SessionId,
        to: &UserId,
        to_session: SessionId,
        room: RoomKey,
        kind: SignalKind,
        data: String,
    ) -> Result<(), SignalError> {
        let unreachable = || SignalError::Unreachable(to.node.clone());
        let fed = self.fed().ok_or_else(unreachable)?;
        let peer = self.peer_of(&to.node).ok_or_else(unreachable)?;
        let record = Signal {
            to: to.clone(),
            data,
            from: from.clone(),
            room: room.1,
            signal_type: match kind {
                SignalKind::Offer => SignalType::Offer,
                SignalKind::Answer => SignalType::Answer,
                SignalKind::Candidate => SignalType::Candidate,
                SignalKind::Bye => SignalType::Bye,
            },
            group: room.0,
            nonce: Nonce::from_bytes(random_16()),
            expires_at: unix_now() + 60,
            to_session,
            from_session,
        };
        let req = rpc::encode(&SignalRequest { envelope: ByteBuf::from(fed.seal(&Record::Signal(record))) });
        let resp = fed.net.request(peer, Proto::Signal, req).await.map_err(|_| unreachable())?;
        let resp: SignalResponse = rpc::decode(&resp, MAX_SIGNAL_RESPONSE).map_err(|_| unreachable())?;
        match resp.error {
            None => Ok(()),
            Some(e) => Err(SignalError::Refused(e)),
        }
    }

    /// Brings every group homed at `node` that has members here up to date: the full
    /// current state, then anything this node has that the home no longer lists is dropped.
    /// (Boxed: applying a node card starts a sync, and a sync applies records.)
    pub fn sync_from(&self, node: &NodeName) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let node = node.clone();
        Box::pin(async move {
            let Some(fed) = self.fed() else { return };
            let Some(peer) = self.peer_of(&node) else { return };
            let groups = match self.store.all_groups() {
                Ok(g) => g,
                Err(e) => return tracing::warn!(%e, "sync: cannot list groups"),
            };
            for gid in groups {
                match self.store.group(&gid) {
                    Ok(Some(g)) if g.home == node => {}
                    _ => continue,
                }
                match self.sync_group(fed, peer, gid).await {
                    Ok(()) => tracing::debug!(%node, group = %gid, "synced"),
                    Err(e) => tracing::warn!(%node, group = %gid, %e, "sync failed; retried later"),
                }
            }
        })
    }

    async fn sync_group(&self, fed: &Federation, peer: PeerId, group: GroupId) -> anyhow::Result<()> {
        let mut records = Vec::new();
        for page in 0u32.. {
            let req = rpc::encode(&SyncRequest { page, group });
            let resp = fed.net.request(peer, Proto::Sync, req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let resp: SyncResponse = rpc::decode(&resp, MAX_SYNC_RESPONSE)?;
            match resp.error {
                Some(RpcError::NotMember | RpcError::UnknownGroup) => {
                    // The home says we have no business here any more.
                    return Ok(self.forget_group(fed, &group).await?);
                }
                Some(e) => anyhow::bail!("home refused: {e:?}"),
                None => {}
            }
            records.extend(resp.records.into_iter().map(ByteBuf::into_vec));
            if !resp.more || page > 64 {
                break;
            }
        }
        self.receive_batch(fed, &records, Some(peer)).await;
        self.reconcile(fed, group, &records).await?;
        Ok(())
    }

    /// After a full sync: rooms and members the home no longer lists were deleted while
    /// this node was away.
    async fn reconcile(&self, fed: &Federation, group: GroupId, records: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut rooms: BTreeSet<RoomId> = BTreeSet::new();
        let mut members: BTreeSet<UserId> = BTreeSet::new();
        for bytes in records {
            let Ok(env) = voicechat_protocol::envelope::Envelope::decode(bytes) else { continue };
            match env.open() {
                Ok(Record::RoomInfo(r)) if !r.deleted => {
                    rooms.insert(r.room);
                }
                Ok(Record::Membership(m)) if m.role.is_some() => {
                    members.insert(m.user);
                }
                _ => {}
            }
        }
        let Some(g) = self.store.group(&group)? else { return Ok(()) };
        let mut changed = false;
        for r in self.store.rooms(&group)? {
            if !rooms.contains(&r.id) {
                self.store.delete_room(&group, &r.id).await?;
                let dropped = self.rooms.lock().expect("rooms lock").clear_room(&(group, r.id));
                let dropped: Vec<_> = dropped.into_iter().map(|p| ((group, r.id), p)).collect();
                self.notify_dropped(&dropped)?;
                changed = true;
            }
        }
        for m in self.store.members(&group)? {
            if !members.contains(&m.user) {
                self.store.remove_member(&group, &m.user).await?;
                self.notify_removed(&group, [&m.user]);
                changed = true;
            }
        }
        if !self.store.members(&group)?.iter().any(|m| m.user.node == self.settings.node_name) {
            return self.forget_group(fed, &group).await;
        }
        if changed {
            self.notify_group(&g)?;
        }
        Ok(())
    }

    /// Joins `user` (of this node) to a group of another node through an invite code.
    pub async fn join_remote(&self, home: &NodeName, code: &str, user: &UserId) -> Result<GroupId, RpcError> {
        let fed = self.fed().ok_or(RpcError::NotHome)?;
        let peer = self.peer_of(home).ok_or(RpcError::NotHome)?;
        let req = rpc::encode(&InviteRequest { code: code.to_owned(), user: user.clone() });
        let resp = fed.net.request(peer, Proto::Invite, req).await.map_err(|_| RpcError::Internal)?;
        let resp: InviteResponse = rpc::decode(&resp, MAX_INVITE_RESPONSE).map_err(|_| RpcError::Invalid)?;
        if let Some(e) = resp.error {
            return Err(e);
        }
        let records: Vec<Vec<u8>> = resp.records.into_iter().map(ByteBuf::into_vec).collect();
        let group = records
            .first()
            .and_then(|b| voicechat_protocol::envelope::Envelope::decode(b).ok())
            .and_then(|e| e.open().ok())
            .and_then(|r| match r {
                Record::GroupInfo(g) => Some(g.group),
                _ => None,
            })
            .ok_or(RpcError::Invalid)?;
        self.receive_batch(fed, &records, Some(peer)).await;
        match self.store.member(&group, user) {
            Ok(Some(_)) => Ok(group),
            _ => Err(RpcError::Invalid),
        }
    }
}

fn group_info(fed: &Federation, g: &GroupRecord, deleted: bool) -> Record {
    Record::GroupInfo(GroupInfo { seq: fed.next_seq(), home: g.home.clone(), name: g.name.clone(), group: g.id, deleted })
}

fn room_info(fed: &Federation, r: &RoomRecord, deleted: bool) -> Record {
    Record::RoomInfo(RoomInfo { seq: fed.next_seq(), name: r.name.clone(), room: r.id, group: r.group, deleted })
}

/// Refreshes the presence of this node's users in federated rooms before it expires.
pub(super) async fn heartbeat(state: AppState) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let seated: Vec<(RoomKey, Participant)> = {
            let rooms = state.rooms.lock().expect("rooms lock");
            rooms
                .seated()
                .filter(|(_, p)| p.user.node == state.settings.node_name)
                .map(|(k, p)| (*k, p.clone()))
                .collect()
        };
        for (room, p) in seated {
            state.announce_presence(&p, room, true);
        }
    }
}
