//! The groups this node holds, as signed records: the ones homed here and the ones of
//! other nodes that added a local user. It answers the validator's questions (home of a
//! group, who is a member), keeps the latest envelope of every subject exactly as signed
//! (tombstones too, so replays of older records stay refused), judges what peers send
//! (wanted only if the group is homed here or has a local member), and decides where local
//! changes go: to the nodes with members in the group, and nowhere else.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::{PresenceState, Record, StagePlace};
use voicechat_protocol::rpc::{self, Digest};
use voicechat_protocol::validate::{self, Authorities};
use voicechat_protocol::{Envelope, ProtocolError};

use super::peers::SubjectKey;
use super::sync::SyncState;
use super::trust::CardOutcome;
use super::{Dropped, Machine};
use crate::core::{Announce, Change};
use crate::rooms::Participant;

/// A record as held: its seq, its envelope exactly as signed, and whether it is live.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) seq: u64,
    pub(crate) envelope: Vec<u8>,
    pub(crate) live: bool,
}

/// A session's presence as last accepted (or signed, for our own users).
#[derive(Debug, Clone)]
pub(crate) struct Pres {
    pub(crate) room: RoomId,
    pub(crate) muted: bool,
    pub(crate) stage: Option<StagePlace>,
    pub(crate) expires_at: u64,
    pub(crate) envelope: Vec<u8>,
}

/// One group's records.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) home: NodeName,
    pub(crate) info: Option<Held>,
    pub(crate) rooms: BTreeMap<RoomId, Held>,
    /// Members with their role (`None`: a removal tombstone).
    pub(crate) members: BTreeMap<UserId, (Option<voicechat_protocol::ids::Role>, Held)>,
    /// Last consent seq per user (home side).
    pub(crate) consents: HashMap<UserId, u64>,
    pub(crate) presence: HashMap<(UserId, SessionId), Pres>,
    pub(crate) sync: SyncState,
    digest: Option<Digest>,
}

impl Group {
    pub(crate) fn new(home: NodeName) -> Self {
        Self {
            home,
            info: None,
            rooms: BTreeMap::new(),
            members: BTreeMap::new(),
            consents: HashMap::new(),
            presence: HashMap::new(),
            sync: SyncState::default(),
            digest: None,
        }
    }

    pub(crate) fn is_member(&self, user: &UserId) -> bool {
        self.members.get(user).is_some_and(|(r, _)| r.is_some())
    }

    /// Nodes with a live member, `me` excluded.
    pub(crate) fn member_nodes(&self, me: &NodeName) -> BTreeSet<NodeName> {
        self.members.iter().filter(|(u, (r, _))| r.is_some() && &u.node != me).map(|(u, _)| u.node.clone()).collect()
    }

    pub(crate) fn has_member_on(&self, node: &NodeName) -> bool {
        self.members.iter().any(|(u, (r, _))| r.is_some() && &u.node == node)
    }

    pub(crate) fn room_live(&self, room: &RoomId) -> bool {
        self.rooms.get(room).is_some_and(|h| h.live)
    }

    /// The highest seq of any record held.
    pub(crate) fn max_seq(&self) -> u64 {
        let info = self.info.iter().map(|h| h.seq);
        let rooms = self.rooms.values().map(|h| h.seq);
        let members = self.members.values().map(|(_, h)| h.seq);
        info.chain(rooms).chain(members).max().unwrap_or(0)
    }

    /// The digest of the live persistent records (SPEC.md §9.1).
    pub(crate) fn digest(&mut self) -> Digest {
        if let Some(d) = self.digest {
            return d;
        }
        let live = self
            .info
            .iter()
            .chain(self.rooms.values())
            .chain(self.members.values().map(|(_, h)| h))
            .filter(|h| h.live)
            .map(|h| h.envelope.as_slice());
        let d = rpc::group_digest(live);
        self.digest = Some(d);
        d
    }

    /// Every persistent record (tombstones included), `group_info` first, then the
    /// unexpired presence: what a full sync serves.
    pub(crate) fn all_records(&self, now_s: u64) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.info.iter().map(|h| h.envelope.clone()).collect();
        out.extend(self.rooms.values().map(|h| h.envelope.clone()));
        out.extend(self.members.values().map(|(_, h)| h.envelope.clone()));
        out.extend(self.presence_records(now_s));
        out
    }

    /// The unexpired presence, at most one page of it.
    pub(crate) fn presence_records(&self, now_s: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.presence.values().filter(move |p| p.expires_at >= now_s).map(|p| p.envelope.clone()).take(rpc::MAX_SYNC_RECORDS)
    }

    fn changed(&mut self) {
        self.digest = None;
    }
}

/// The validator's view: keys from the trust table, homes and members from the replica.
pub(crate) struct View<'a> {
    pub(crate) m: &'a Machine,
}

impl Authorities for View<'_> {
    fn node_key(&self, node: &NodeName) -> Option<NodeKey> {
        self.m.trust.key_of(node)
    }
    fn group_home(&self, group: &GroupId) -> Option<NodeName> {
        self.m.groups.get(group).map(|g| g.home.clone())
    }
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.m.groups.get(group).is_some_and(|g| g.is_member(user))
    }
}

/// Where a batch of records came from, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A push (or a card exchange on connect) from this peer.
    Push(NodeKey),
    /// A sync or invite answer from the group's home: every record must be of `group`.
    Home(NodeKey, GroupId),
}

impl Source {
    fn peer(self) -> NodeKey {
        match self {
            Source::Push(p) | Source::Home(p, _) => p,
        }
    }
}

impl Machine {
    /// Loads the records the store holds (already judged before they were stored).
    pub(crate) fn load_records(&mut self, records: &[Vec<u8>]) {
        let mut opened: Vec<(Vec<u8>, Record)> = records.iter().filter_map(|b| Some((b.clone(), open_trusted(b)?))).collect();
        // Group infos first: they carry the home.
        opened.sort_by_key(|(_, r)| !matches!(r, Record::GroupInfo(_)));
        for (bytes, record) in opened {
            self.hold(&record, bytes);
        }
    }

    /// Puts a persistent record into the replica (no rules). Returns false if its group is
    /// unknown and it does not create one.
    fn hold(&mut self, record: &Record, bytes: Vec<u8>) -> bool {
        let seq = record.seq().unwrap_or(0);
        match record {
            Record::GroupInfo(r) => {
                let g = self.groups.entry(r.group).or_insert_with(|| Group::new(r.home.clone()));
                g.info = Some(Held { seq, envelope: bytes, live: !r.deleted });
                g.changed();
            }
            Record::RoomInfo(r) => {
                let Some(g) = self.groups.get_mut(&r.group) else { return false };
                g.rooms.insert(r.room, Held { seq, envelope: bytes, live: !r.deleted });
                g.changed();
            }
            Record::Membership(r) => {
                let Some(g) = self.groups.get_mut(&r.group) else { return false };
                g.members.insert(r.user.clone(), (r.role, Held { seq, envelope: bytes, live: r.role.is_some() }));
                g.changed();
            }
            Record::Consent(r) => {
                let Some(g) = self.groups.get_mut(&r.group) else { return false };
                g.consents.insert(r.user.clone(), seq);
            }
            _ => return false,
        }
        true
    }

    /// The seq held for a persistent record's subject, or the floor of a forgotten group.
    fn held_seq(&self, record: &Record) -> Option<u64> {
        match record {
            Record::GroupInfo(r) => self.groups.get(&r.group).and_then(|g| g.info.as_ref().map(|h| h.seq)),
            Record::RoomInfo(r) => self.groups.get(&r.group).and_then(|g| g.rooms.get(&r.room).map(|h| h.seq)),
            Record::Membership(r) => self.groups.get(&r.group).and_then(|g| g.members.get(&r.user).map(|(_, h)| h.seq)),
            Record::Consent(r) => self.groups.get(&r.group).and_then(|g| g.consents.get(&r.user).copied()),
            _ => None,
        }
    }

    /// Whether a group has a live local member whose membership is above the group's
    /// replay floor (if this node forgot the group before).
    fn has_new_local_member(&self, group: &GroupId) -> bool {
        let floor = self.floors.get(group).copied().unwrap_or(0);
        self.groups.get(group).is_some_and(|g| {
            g.members.iter().any(|(u, (r, h))| r.is_some() && u.node == self.cfg.me && h.seq > floor)
        })
    }

    /// Judges a batch of envelopes from one source, in order, and returns the changes for
    /// the core. A group new to this node is kept only if the batch makes a local user a
    /// member of it; a group of another node whose last local member is removed is forgotten.
    pub(crate) fn receive(&mut self, source: Source, envelopes: Vec<Vec<u8>>) -> Vec<Change> {
        let mut changes: Vec<Change> = Vec::new();
        let mut verdicts: Vec<(String, Option<GroupId>, Result<(), Dropped>)> = Vec::new();
        let mut new_groups: HashSet<GroupId> = HashSet::new();
        let mut touched: BTreeSet<GroupId> = BTreeSet::new();
        for bytes in envelopes {
            // A card sent again, byte for byte: nothing new (every connection sends it).
            if self.trust.is_known_card(&bytes) {
                verdicts.push(("node_card".into(), None, Err(Dropped::NotWanted("a card already bound"))));
                continue;
            }
            let env = match Envelope::decode(&bytes) {
                Ok(env) => env,
                Err(e) => {
                    verdicts.push(("unknown".into(), None, Err(e.into())));
                    continue;
                }
            };
            let kind = voicechat_protocol::Kind::from_wire(&env.kind).map_or("unknown", |k| k.as_str()).to_owned();
            match self.judge(source, env, bytes, &mut new_groups) {
                Ok((group, cs)) => {
                    if let Some(g) = group {
                        touched.insert(g);
                    }
                    changes.extend(cs);
                    verdicts.push((kind, group, Ok(())));
                }
                Err(d) => verdicts.push((kind, None, Err(d))),
            }
        }
        // New groups without a local member (with a membership newer than what this node
        // forgot of the group, so an old one replayed does not bring it back): not ours.
        let unwanted: HashSet<GroupId> = new_groups.into_iter().filter(|g| !self.has_new_local_member(g)).collect();
        for g in &unwanted {
            self.groups.remove(g);
        }
        for g in &touched {
            if !unwanted.contains(g) && self.groups.contains_key(g) {
                self.floors.remove(g);
            }
        }
        changes.retain(|c| change_group(c).is_none_or(|g| !unwanted.contains(g)));
        for (kind, group, verdict) in verdicts {
            let verdict = match group {
                Some(g) if unwanted.contains(&g) => Err(Dropped::NotWanted("a group with no member here")),
                _ => verdict,
            };
            self.count(&kind, Some(source.peer()), verdict.as_ref().map(|_| ()));
        }
        // Groups of other nodes with no local member left are forgotten.
        for g in touched {
            let orphan = self.groups.get(&g).is_some_and(|grp| grp.home != self.cfg.me && !grp.has_member_on(&self.cfg.me));
            if orphan && !unwanted.contains(&g) {
                changes.push(self.forget(g));
            }
        }
        changes
    }

    /// Drops a group of another node from the replica; the change tells the core.
    pub(crate) fn forget(&mut self, group: GroupId) -> Change {
        let floor = self.groups.remove(&group).map_or(0, |g| g.max_seq());
        let floor = floor.max(self.floors.get(&group).copied().unwrap_or(0));
        self.floors.insert(group, floor);
        tracing::debug!(%group, "forgot a group of another node");
        Change::Forget { group, floor }
    }

    /// One envelope: every rule, then the replica. Returns the group it concerned and the
    /// changes it makes.
    fn judge(
        &mut self,
        source: Source,
        env: Envelope,
        bytes: Vec<u8>,
        new_groups: &mut HashSet<GroupId>,
    ) -> Result<(Option<GroupId>, Vec<Change>), Dropped> {
        // Cards are judged by the trust rules, and only in pushes.
        if env.kind == "node_card" {
            if let Source::Home(..) = source {
                return Err(Dropped::Policy("a node card in a group's records"));
            }
            return match self.judge_card(source.peer(), &bytes)? {
                CardOutcome::Bound(c) => Ok((None, vec![c])),
                CardOutcome::Verifying => Err(Dropped::NotWanted("name being verified")),
            };
        }
        // SPEC.md §7 after decoding: kind, payload size, signature, fields (`open`), then
        // authority and time.
        let now_s = self.now_secs();
        let record = env.open()?;
        validate::check_authority(env.signer, &record, &View { m: self })?;
        validate::check_time(&record, now_s)?;
        let signer = env.signer;
        let verified = voicechat_protocol::Verified { envelope: env, record };
        let record = verified.record.clone();
        let group = record_group(&record).ok_or(Dropped::Policy("signals travel by the relay protocol only"))?;
        if let Source::Home(_, expected) = source
            && group != expected
        {
            return Err(Dropped::Policy("a record of another group than the one asked for"));
        }
        if signer == self.signer.node_key() {
            return Err(Dropped::NotWanted("a copy of this node's own record"));
        }
        match &record {
            Record::Presence(p) => {
                let v = voicechat_protocol::Verified { envelope: verified.envelope, record: record.clone() };
                return self.judge_presence(v, p, bytes).map(|c| (Some(group), c));
            }
            Record::Consent(c) => {
                if self.groups.get(&group).is_none_or(|g| g.home != self.cfg.me) {
                    return Err(Dropped::NotWanted("a consent for a group not homed here"));
                }
                if let Some(last) = self.held_seq(&record)
                    && c.seq <= last
                {
                    return Err(ProtocolError::Replayed { seq: c.seq, last }.into());
                }
                self.hold(&record, bytes);
                return Ok((Some(group), vec![Change::Consent { group, user: c.user.clone(), answer: c.answer }]));
            }
            _ => {}
        }
        // Persistent group records from a home.
        let seq = record.seq().unwrap_or(0);
        if let Some(last) = self.held_seq(&record)
            && seq <= last
        {
            return Err(ProtocolError::Replayed { seq, last }.into());
        }
        if !self.groups.contains_key(&group) {
            match &record {
                Record::GroupInfo(info) if !info.deleted => {
                    new_groups.insert(group);
                }
                Record::GroupInfo(_) => return Err(Dropped::NotWanted("the deletion of a group not held here")),
                _ => return Err(ProtocolError::UnknownGroup(group).into()),
            }
        }
        if let Some(g) = self.groups.get(&group) {
            let full = match &record {
                Record::Membership(m) => !g.members.contains_key(&m.user) && g.members.len() >= self.cfg.limits.group_members,
                Record::RoomInfo(r) => !g.rooms.contains_key(&r.room) && g.rooms.len() >= self.cfg.limits.group_rooms,
                _ => false,
            };
            if full {
                return Err(Dropped::NotWanted("a group of another node past its size limit"));
            }
        }
        let change = match &record {
            Record::GroupInfo(info) if info.deleted => return Ok((Some(group), vec![self.forget(group)])),
            Record::GroupInfo(info) => Change::Group { group, home: info.home.clone(), name: info.name.clone(), envelope: bytes.clone() },
            Record::RoomInfo(r) => {
                let mut cs = Vec::new();
                if r.deleted {
                    // Its calls end: remote sessions in it are dropped with the room.
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.presence.retain(|_, p| p.room != r.room);
                    }
                    self.seats.retain(|_, (room, _)| room != &(group, r.room));
                }
                cs.push(Change::Room {
                    group,
                    room: r.room,
                    name: r.name.clone(),
                    stage: r.stage,
                    deleted: r.deleted,
                    envelope: bytes.clone(),
                });
                self.hold(&record, bytes);
                return Ok((Some(group), cs));
            }
            Record::Membership(m) => {
                if m.role.is_none()
                    && let Some(g) = self.groups.get_mut(&group)
                {
                    g.presence.retain(|(u, _), _| u != &m.user);
                }
                Change::Member { group, user: m.user.clone(), role: m.role, envelope: bytes.clone() }
            }
            _ => return Err(Dropped::Policy("unexpected record kind")),
        };
        self.hold(&record, bytes);
        Ok((Some(group), vec![change]))
    }

    /// A presence record: the session of a user of another node in one of our rooms.
    fn judge_presence(
        &mut self,
        verified: voicechat_protocol::Verified,
        p: &voicechat_protocol::Presence,
        bytes: Vec<u8>,
    ) -> Result<Vec<Change>, Dropped> {
        let now_s = self.now_secs();
        self.check_replay(&verified)?;
        let g = self.groups.get_mut(&p.group).ok_or(ProtocolError::UnknownGroup(p.group))?;
        if !g.room_live(&p.room) {
            return Err(Dropped::NotWanted("presence in a room this node does not know"));
        }
        let key = (p.user.clone(), p.session);
        let before = g.presence.get(&key).map(|x| (x.room, x.muted, x.stage));
        if before.is_none()
            && p.state == PresenceState::Joined
            && g.presence.keys().filter(|(u, _)| u == &p.user).count() >= self.cfg.limits.sessions_per_user
        {
            return Err(Dropped::NotWanted("a user with too many sessions in the group's calls"));
        }
        // A node that predates `joined_at`: the moment this node first saw the session.
        let joined_at = p.joined_at.unwrap_or(self.now);
        let stage = p.stage.map(crate::rooms::StageSeat::from_place);
        let participant = Participant { user: p.user.clone(), session: p.session, muted: p.muted, stage, name: p.name.clone(), joined_at };
        let change = match p.state {
            PresenceState::Joined => {
                g.presence.insert(key, Pres { room: p.room, muted: p.muted, stage: p.stage, expires_at: p.expires_at, envelope: bytes });
                (before != Some((p.room, p.muted, p.stage))).then_some(Change::Presence { room: (p.group, p.room), participant, joined: true })
            }
            PresenceState::Left => {
                g.presence.remove(&key);
                before.map(|(room, _, _)| Change::Presence { room: (p.group, room), participant, joined: false })
            }
        };
        self.validator.accept(&verified, now_s);
        self.release_signals();
        Ok(change.into_iter().collect())
    }

    /// The replay rule for kinds kept in memory (presence, signals), on a record already
    /// verified: a seq above the last accepted for its subject, a nonce not seen.
    pub(crate) fn check_replay(&self, v: &voicechat_protocol::Verified) -> Result<(), ProtocolError> {
        match self.validator.last_seq(&v.envelope.signer, &v.record.subject()) {
            None => Ok(()),
            Some(last) => match v.record.seq() {
                Some(seq) if seq > last => Ok(()),
                Some(seq) => Err(ProtocolError::Replayed { seq, last }),
                None => Err(ProtocolError::Replayed { seq: 0, last: 0 }),
            },
        }
    }

    /// Records this node signed (the core announced them): held, and sent to the nodes that
    /// need them. A node new to the group gets the whole group instead.
    pub(crate) fn on_local_records(&mut self, group: GroupId, records: Vec<Vec<u8>>) {
        let me = self.cfg.me.clone();
        let before = self.groups.get(&group).map(|g| g.member_nodes(&me)).unwrap_or_default();
        let mut consent_to: Option<NodeName> = None;
        let mut deleted = false;
        let mut sendable = Vec::new();
        for bytes in records {
            let Some(record) = open_trusted(&bytes) else { continue };
            match &record {
                Record::Consent(c) => {
                    consent_to = self.groups.get(&c.group).map(|g| g.home.clone());
                    sendable.push((SubjectKey::of(&record), bytes));
                    continue;
                }
                Record::GroupInfo(i) if i.deleted => deleted = true,
                _ => {}
            }
            if !self.hold(&record, bytes.clone()) {
                continue;
            }
            sendable.push((SubjectKey::of(&record), bytes));
        }
        if let Some(home) = consent_to {
            if let Some(key) = self.trust.key_of(&home) {
                for (s, b) in sendable {
                    self.enqueue(key, s, b);
                }
                self.flush(key);
            }
            return;
        }
        if deleted {
            self.groups.remove(&group);
        }
        let after = self.groups.get(&group).map(|g| g.member_nodes(&me)).unwrap_or_default();
        let newcomers: Vec<NodeName> = after.difference(&before).cloned().collect();
        if !newcomers.is_empty() && before.is_empty() {
            // The group just became federated: our users already in its calls get signed
            // presence, so the newcomers see them.
            self.sign_group_presence(group);
        }
        for node in before.union(&after) {
            let Some(key) = self.trust.key_of(node) else { continue };
            if newcomers.contains(node) {
                let all = self.groups.get(&group).map(|g| g.all_records(self.now_secs())).unwrap_or_default();
                for b in all {
                    let s = open_trusted(&b).map(|r| SubjectKey::of(&r));
                    if let Some(s) = s {
                        self.enqueue(key, s, b);
                    }
                }
            } else {
                for (s, b) in &sendable {
                    self.enqueue(key, s.clone(), b.clone());
                }
            }
        }
        for node in after {
            if let Some(key) = self.trust.key_of(&node) {
                self.flush(key);
            }
        }
        for node in before {
            if let Some(key) = self.trust.key_of(&node) {
                self.flush(key);
            }
        }
    }

    /// What the core announced.
    pub(crate) fn on_local(&mut self, a: Announce) {
        match a {
            Announce::Records { group, records } => self.on_local_records(group, records),
            Announce::Presence { room, participant, joined } => self.on_local_presence(room, participant, joined),
            Announce::OnSfu(room) => {
                self.sfu_rooms.insert(room);
                self.refresh_cascade();
            }
        }
    }
}

/// Decodes a record this node already trusts (it signed it, or stored it after judging it)
/// without checking the signature again.
pub(crate) fn open_trusted(bytes: &[u8]) -> Option<Record> {
    let env = Envelope::decode(bytes).ok()?;
    Record::decode(voicechat_protocol::Kind::from_wire(&env.kind)?, &env.payload).ok()
}

/// The group a record is about; `None` for signals and node cards.
pub(crate) fn record_group(r: &Record) -> Option<GroupId> {
    match r {
        Record::GroupInfo(x) => Some(x.group),
        Record::RoomInfo(x) => Some(x.group),
        Record::Membership(x) => Some(x.group),
        Record::Presence(x) => Some(x.group),
        Record::Consent(x) => Some(x.group),
        Record::NodeCard(_) | Record::Signal(_) | Record::Cascade(_) => None,
    }
}

/// The group a change concerns.
pub(crate) fn change_group(c: &Change) -> Option<&GroupId> {
    match c {
        Change::Group { group, .. }
        | Change::Member { group, .. }
        | Change::Room { group, .. }
        | Change::Forget { group, .. }
        | Change::Consent { group, .. }
        | Change::Joined { group, .. } => Some(group),
        Change::Presence { room, .. } => Some(&room.0),
        Change::Card(_) | Change::ForgetCard(_) => None,
    }
}

impl SubjectKey {
    /// The outbox key of a record: its subject.
    pub(crate) fn of(r: &Record) -> SubjectKey {
        SubjectKey(r.subject(), r.kind())
    }
}
