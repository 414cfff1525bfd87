//! Judging records that peers send and applying the accepted ones to the store, the live
//! rooms and the users' sockets.
//!
//! A record is checked by the protocol crate (signature, authority, time, in-memory
//! replay), then, for the kinds that persist, against the last seq kept in the store, so
//! a replay is refused even after a restart. Records about a group this node has no
//! member in are not kept.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use voicechat_protocol::envelope::Envelope;
use voicechat_protocol::error::ProtocolError;
use voicechat_protocol::ids::GroupId;
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{GroupInfo, Membership, PresenceState, Record, RoomInfo, Subject};
use voicechat_protocol::rpc::group_topic;
use voicechat_protocol::validate::Verified;

use super::{Federation, HeldPresence, StoreAuth, count, peer_id_of};
use crate::rooms::Participant;
use crate::state::AppState;
use crate::store::{GroupRecord, MemberRecord, PeerRecord, RoomRecord, StoreError};
use crate::time::unix_now;

/// Why a record was dropped, and so the gossip verdict.
#[derive(Debug)]
pub enum Dropped {
    /// The sender broke the protocol (or, when benign, is merely out of date).
    Protocol(ProtocolError),
    /// Valid but of no use here: a group without local members, a session of an unknown room.
    NotWanted(&'static str),
    /// Breaks a rule of this node: a card pushed by another peer than its signer.
    Policy(&'static str),
    /// The store failed.
    Store(StoreError),
}

impl Dropped {
    /// Rejected records count against the sending peer; ignored ones do not.
    pub fn is_reject(&self) -> bool {
        match self {
            Dropped::Protocol(e) => !e.is_benign(),
            Dropped::Policy(_) => true,
            Dropped::NotWanted(_) | Dropped::Store(_) => false,
        }
    }

    /// A short name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Dropped::Protocol(e) => e.code(),
            Dropped::NotWanted(r) | Dropped::Policy(r) => r,
            Dropped::Store(_) => "store",
        }
    }
}

impl From<ProtocolError> for Dropped {
    fn from(e: ProtocolError) -> Self {
        Dropped::Protocol(e)
    }
}

impl From<StoreError> for Dropped {
    fn from(e: StoreError) -> Self {
        Dropped::Store(e)
    }
}

/// The store key of a persistent record's seq: signer and subject.
fn seq_key(signer: &NodeKey, subject: &Subject) -> Option<String> {
    let s = hex::encode(signer.as_bytes());
    match subject {
        Subject::Node(n) => Some(format!("{s}/node/{n}")),
        Subject::Group(g) => Some(format!("{s}/group/{g}")),
        Subject::Member(g, u) => Some(format!("{s}/member/{g}/{u}")),
        Subject::Room(g, r) => Some(format!("{s}/room/{g}/{r}")),
        Subject::Presence(..) | Subject::Signal(_) => None,
    }
}

impl AppState {
    /// Checks every rule and, for persistent kinds, the stored seq. Does not apply.
    pub(super) fn judge(&self, fed: &Federation, bytes: &[u8], now: u64) -> Result<Verified, Dropped> {
        let verified = fed.validator.lock().expect("validator lock").check(bytes, now, &StoreAuth(self))?;
        if verified.envelope.signer == fed.node_key {
            // This node is the authority for what it signed and knows the current state
            // better than any copy: sync answers echo our presence, a peer may replay it.
            return Err(Dropped::NotWanted("a copy of this node's own record"));
        }
        let seq = verified.record.seq();
        if let (Some(key), Some(seq)) = (seq_key(&verified.envelope.signer, &verified.record.subject()), seq)
            && let Some(last) = self.store.seq(&key)?
            && seq <= last
        {
            return Err(ProtocolError::Replayed { seq, last }.into());
        }
        Ok(verified)
    }

    /// Judges and applies one envelope. `from` is the peer that sent it directly (push,
    /// gossip source), if any.
    pub(super) async fn receive(&self, fed: &Federation, bytes: &[u8], from: Option<PeerId>) -> Result<(), Dropped> {
        let now = unix_now();
        let kind_hint = Envelope::decode(bytes).map(|e| e.kind).unwrap_or_else(|_| "?".into());
        let result: Result<(), Dropped> = async {
            let verified = self.judge(fed, bytes, now)?;
            self.apply(fed, &verified.record, bytes).await?;
            fed.validator.lock().expect("validator lock").accept(&verified, now);
            if let (Some(key), Some(seq)) =
                (seq_key(&verified.envelope.signer, &verified.record.subject()), verified.record.seq())
            {
                self.store.put_seq(&key, seq)?;
                self.store.flush().await?;
            }
            if let Record::Presence(p) = &verified.record {
                let mut cache = fed.presence.lock().expect("presence lock");
                match p.state {
                    PresenceState::Joined => cache.insert(
                        p.session,
                        HeldPresence { group: p.group, expires_at: p.expires_at, envelope: bytes.to_vec() },
                    ),
                    PresenceState::Left => cache.remove(&p.session),
                };
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => count(&kind_hint, "accepted"),
            Err(Dropped::Store(e)) => {
                count(&kind_hint, "ignored");
                tracing::error!(%e, "storage failed while applying a record");
            }
            Err(d) => {
                count(&kind_hint, if d.is_reject() { "rejected" } else { "ignored" });
                if let Some(peer) = from
                    && d.is_reject()
                {
                    fed.log_once(peer, d.reason(), &format!("{d:?}"));
                } else {
                    tracing::debug!(reason = d.reason(), "ignored a record");
                }
            }
        }
        result
    }

    /// Applies a batch from a push, a sync page or an invite answer, in order (group info
    /// first, so the memberships after it can be judged). A group that no local user ends
    /// up a member of is dropped by the sweeper (`drop_orphans`).
    pub(super) async fn receive_batch(&self, fed: &Federation, records: &[Vec<u8>], from: Option<PeerId>) {
        for bytes in records {
            let _ = self.receive(fed, bytes, from).await;
        }
    }

    async fn apply(&self, fed: &Federation, record: &Record, bytes: &[u8]) -> Result<(), Dropped> {
        match record {
            Record::NodeCard(card) => {
                // Cards are self-signed (checked by the validator), so a card forwarded by
                // a neighbour is as good as one from its node.
                let peer = PeerRecord {
                    name: card.name.clone(),
                    key: hex::encode(card.key.as_bytes()),
                    url: card.url.trim_end_matches('/').to_owned(),
                    addrs: card.addrs.clone(),
                    seq: card.seq,
                    card: hex::encode(bytes),
                };
                self.store.put_peer(&peer).await?;
                if let Some(id) = peer_id_of(&card.key) {
                    fed.names.lock().expect("names lock").insert(id, card.name.clone());
                    // Keep a direct connection to every node we know (found through a
                    // neighbour or kad, not only configured): pushes and signals go
                    // straight to a member's node, whatever the topology.
                    let addrs: Vec<Multiaddr> = card
                        .addrs
                        .iter()
                        .filter(|a| a.contains("/tcp/"))
                        .filter_map(|a| a.parse::<Multiaddr>().ok())
                        .filter_map(|a| a.with_p2p(id).ok())
                        .collect();
                    let (state, name, net) = (self.clone(), card.name.clone(), fed.net.clone());
                    tokio::spawn(async move {
                        if let Some(addr) = addrs.into_iter().next()
                            && let Err(e) = net.add_peer(addr).await
                        {
                            tracing::debug!(node = %name, %e, "could not keep a connection to a known node");
                        }
                        state.sync_from(&name).await;
                    });
                }
                tracing::info!(node = %card.name, "peer node card");
                Ok(())
            }
            Record::GroupInfo(info) => self.apply_group(fed, info).await,
            Record::Membership(m) => self.apply_membership(fed, m).await,
            Record::RoomInfo(r) => self.apply_room(r).await,
            Record::Presence(p) => {
                if self.store.room(&p.group, &p.room)?.is_none() {
                    return Err(Dropped::NotWanted("presence in a room this node does not know"));
                }
                let key = (p.group, p.room);
                let participant = Participant { user: p.user.clone(), session: p.session, muted: p.muted };
                let changed = {
                    let mut rooms = self.rooms.lock().expect("rooms lock");
                    match p.state {
                        PresenceState::Joined => rooms.join_remote(participant, key, p.expires_at),
                        PresenceState::Left => rooms.leave(&p.session).into_iter().collect(),
                    }
                };
                for room in &changed {
                    self.notify_participants(room)?;
                }
                Ok(())
            }
            Record::Signal(_) => Err(Dropped::Policy("signals travel by the relay protocol only")),
        }
    }

    async fn apply_group(&self, fed: &Federation, info: &GroupInfo) -> Result<(), Dropped> {
        let existing = self.store.group(&info.group)?;
        if info.deleted {
            if existing.is_some() {
                self.forget_group(fed, &info.group).await?;
            }
            return Ok(());
        }
        let g = GroupRecord {
            id: info.group,
            name: info.name.clone(),
            home: info.home.clone(),
            created_at: existing.as_ref().map_or_else(unix_now, |g| g.created_at),
        };
        if existing.is_none() {
            // Only a group with a member here is worth keeping; the caller's batch adds
            // the membership next. Keep it provisionally; `apply_membership` keeps it.
            self.store.put_group(&g).await?;
            return Ok(());
        }
        self.store.put_group(&g).await?;
        self.notify_group(&g)?;
        Ok(())
    }

    async fn apply_membership(&self, fed: &Federation, m: &Membership) -> Result<(), Dropped> {
        let Some(g) = self.store.group(&m.group)? else {
            return Err(Dropped::NotWanted("membership of an unknown group"));
        };
        match m.role {
            Some(role) => {
                let existing = self.store.member(&m.group, &m.user)?;
                let rec = MemberRecord {
                    user: m.user.clone(),
                    role,
                    added_at: existing.as_ref().map_or_else(unix_now, |e| e.added_at),
                };
                self.store.put_member(&m.group, &rec).await?;
                if m.user.node == self.settings.node_name {
                    let _ = fed.net.subscribe(&group_topic(&m.group)).await;
                }
            }
            None => {
                match self.store.remove_member(&m.group, &m.user).await {
                    Ok(()) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                let dropped = self.rooms.lock().expect("rooms lock").drop_from_group(&m.group, |p| p.user == m.user);
                self.notify_dropped(&dropped)?;
                self.notify_removed(&m.group, [&m.user]);
                let local_left =
                    self.store.members(&m.group)?.iter().any(|x| x.user.node == self.settings.node_name);
                if !local_left && g.home != self.settings.node_name {
                    self.forget_group(fed, &m.group).await?;
                    return Ok(());
                }
            }
        }
        self.notify_group(&g)?;
        Ok(())
    }

    async fn apply_room(&self, r: &RoomInfo) -> Result<(), Dropped> {
        let Some(g) = self.store.group(&r.group)? else {
            return Err(Dropped::NotWanted("room of an unknown group"));
        };
        if r.deleted {
            match self.store.delete_room(&r.group, &r.room).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            let dropped = self.rooms.lock().expect("rooms lock").clear_room(&(r.group, r.room));
            let dropped: Vec<_> = dropped.into_iter().map(|p| ((r.group, r.room), p)).collect();
            self.notify_dropped(&dropped)?;
        } else {
            let existing = self.store.room(&r.group, &r.room)?;
            let rec = RoomRecord {
                id: r.room,
                group: r.group,
                name: r.name.clone(),
                created_at: existing.map_or_else(unix_now, |x| x.created_at),
            };
            self.store.put_room(&rec).await?;
        }
        self.notify_group(&g)?;
        Ok(())
    }

    /// Drops a remote group this node no longer has a reason to keep (deleted at home, or
    /// its last local member left): tells the local members and leaves the topic.
    pub(super) async fn forget_group(&self, fed: &Federation, group: &GroupId) -> Result<(), StoreError> {
        let members = self.store.members(group)?;
        self.store.delete_group(group).await?;
        let dropped = self.rooms.lock().expect("rooms lock").drop_from_group(group, |_| true);
        self.notify_dropped(&dropped)?;
        let local: Vec<_> = members.iter().map(|m| &m.user).filter(|u| u.node == self.settings.node_name).collect();
        self.notify_removed(group, local);
        let _ = fed.net.unsubscribe(&group_topic(group)).await;
        Ok(())
    }

    /// Syncs every group homed on another node from its home.
    async fn resync_all(&self) {
        let Ok(groups) = self.store.all_groups() else { return };
        let mut homes = std::collections::BTreeSet::new();
        for gid in groups {
            if let Ok(Some(g)) = self.store.group(&gid)
                && g.home != self.settings.node_name
            {
                homes.insert(g.home);
            }
        }
        for home in homes {
            self.sync_from(&home).await;
        }
    }

    /// Groups created provisionally by a group info whose membership never came: removed
    /// so a peer cannot fill the store with groups nobody here belongs to.
    async fn drop_orphans(&self) -> Result<(), StoreError> {
        for gid in self.store.all_groups()? {
            let Some(g) = self.store.group(&gid)? else { continue };
            if g.home != self.settings.node_name && self.store.members(&gid)?.is_empty() {
                self.store.delete_group(&gid).await?;
            }
        }
        Ok(())
    }
}

/// Every second: sessions of other nodes whose presence ran out leave their rooms. Every
/// [`RESYNC_EVERY`] seconds: each group homed elsewhere is synced from its home (anti-
/// entropy: a sync missed at a reconnect is repaired without waiting for another one).
/// Every minute: old replay entries and orphan groups are dropped.
/// Seconds between anti-entropy syncs of groups homed elsewhere.
pub const RESYNC_EVERY: u64 = 30;

pub(super) async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let now = unix_now();
        let changed = state.rooms.lock().expect("rooms lock").expire(now);
        for room in &changed {
            if let Err(e) = state.notify_participants(room) {
                tracing::warn!(%e, "could not announce expired presence");
            }
        }
        if let Some(fed) = state.fed() {
            fed.presence.lock().expect("presence lock").retain(|_, p| p.expires_at >= now);
            if n.is_multiple_of(RESYNC_EVERY) {
                let state = state.clone();
                tokio::spawn(async move { state.resync_all().await });
            }
            if n.is_multiple_of(60) {
                fed.validator.lock().expect("validator lock").prune(now);
                if let Err(e) = state.drop_orphans().await {
                    tracing::warn!(%e, "could not drop orphan groups");
                }
            }
        }
    }
}
