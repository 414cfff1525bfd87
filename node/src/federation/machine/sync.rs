//! Sync: a group homed elsewhere is brought up to date from its home when the home
//! connects (or is bound), then checked every few minutes with a digest of its live
//! records, so an idle federation exchanges one small request per group and applies
//! nothing. One sync per group at a time, one page (≤ 1024 records) held at a time, a
//! bounded number of pages. The home answers only nodes with a member in the group; anyone
//! else learns nothing, not even whether the group exists.

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{GroupId, NodeName};
use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::rpc::{self, RpcError, SyncRequest, SyncResponse};

use super::replica::Source;
use super::{Failure, InboundId, Machine, Millis, Output, Pending, Proto};

/// One remote group's sync state.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    in_flight: bool,
    /// When the next sync starts (0: not scheduled).
    due: Millis,
    backoff: Millis,
}

impl Machine {
    /// Every group homed at `home` with a local member is synced now.
    pub(crate) fn schedule_syncs_from(&mut self, home: &NodeName) {
        let now = self.now;
        for g in self.groups.values_mut() {
            if &g.home == home && !g.sync.in_flight {
                g.sync.due = now;
            }
        }
        self.start_due_syncs();
    }

    /// Starts the syncs that are due and whose home is connected (not while the core is
    /// behind: they wait for the next tick).
    pub(super) fn start_due_syncs(&mut self) {
        if self.store_busy() {
            return;
        }
        let now = self.now;
        let me = self.cfg.me.clone();
        let due: Vec<(GroupId, NodeKey)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.home != me && !g.sync.in_flight && g.sync.due != 0 && g.sync.due <= now)
            .filter_map(|(id, g)| {
                let key = self.trust.key_of(&g.home)?;
                self.peers.get(&key).is_some_and(|p| p.connected).then_some((*id, key))
            })
            .collect();
        for (group, key) in due {
            self.request_page(group, key, 0);
        }
        // Groups never scheduled get their first periodic check.
        let period = self.cfg.resync;
        let unscheduled: Vec<GroupId> =
            self.groups.iter().filter(|(_, g)| g.home != me && g.sync.due == 0).map(|(id, _)| *id).collect();
        for id in unscheduled {
            let next = now + (period as f64 * self.jitter()) as Millis;
            if let Some(g) = self.groups.get_mut(&id) {
                g.sync.due = next;
            }
        }
    }

    fn request_page(&mut self, group: GroupId, home: NodeKey, page: u32) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        g.sync.in_flight = true;
        let digest = Some(g.digest());
        let req = SyncRequest { page, group, digest };
        self.request(home, Proto::Sync, rpc::encode(&req), Pending::Sync { group, page });
    }

    fn sync_done(&mut self, group: GroupId, retry: Option<Millis>) {
        let now = self.now;
        let period = self.cfg.resync;
        let jitter = self.jitter();
        let Some(g) = self.groups.get_mut(&group) else { return };
        g.sync.in_flight = false;
        match retry {
            None => {
                g.sync.backoff = 0;
                g.sync.due = now + (period as f64 * jitter) as Millis;
            }
            Some(min) => {
                g.sync.backoff = (g.sync.backoff * 2).clamp(min, 60_000);
                g.sync.due = now + (g.sync.backoff as f64 * jitter) as Millis;
            }
        }
    }

    pub(super) fn on_sync_response(&mut self, group: GroupId, page: u32, result: Result<Vec<u8>, Failure>) {
        let Some(home) = self.groups.get(&group).map(|g| g.home.clone()) else { return };
        let Some(home_key) = self.trust.key_of(&home) else { return self.sync_done(group, Some(5_000)) };
        let resp = match result.map(|b| rpc::decode::<SyncResponse>(&b, rpc::MAX_SYNC_RESPONSE)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(%group, %e, "undecodable sync answer");
                self.strike(home_key);
                return self.sync_done(group, Some(5_000));
            }
            Err(f) => {
                tracing::debug!(%group, failure = ?f, "sync failed; retried");
                return self.sync_done(group, Some(2_000));
            }
        };
        match resp.error {
            None => {}
            Some(RpcError::NotMember | RpcError::UnknownGroup) => {
                // The home says this node has no business with the group any more.
                let change = self.forget(group);
                self.apply(vec![change]);
                return;
            }
            // Our card is still on its way: soon.
            Some(RpcError::UnknownNode) => return self.sync_done(group, Some(1_000)),
            Some(e) => {
                tracing::debug!(%group, error = ?e, "sync refused; retried");
                return self.sync_done(group, Some(2_000));
            }
        }
        if resp.records.len() > rpc::MAX_SYNC_RECORDS {
            self.strike(home_key);
            return self.sync_done(group, Some(5_000));
        }
        let records: Vec<Vec<u8>> = resp.records.into_iter().map(ByteBuf::into_vec).collect();
        let changes = self.receive(Source::Home(home_key, group), records);
        self.apply(changes);
        if !self.groups.contains_key(&group) {
            return;
        }
        if resp.more && !resp.unchanged && page + 1 < self.cfg.limits.sync_pages {
            self.request_page(group, home_key, page + 1);
        } else {
            if resp.more && !resp.unchanged {
                tracing::warn!(%group, pages = page + 1, "a group's sync has more pages than this node takes");
            }
            self.sync_done(group, None);
        }
    }

    /// A member node asks for a group homed here.
    pub(super) fn on_sync_request(&mut self, peer: NodeKey, id: InboundId, data: &[u8]) {
        let Ok(req) = rpc::decode::<SyncRequest>(data, rpc::MAX_SYNC_REQUEST) else {
            self.strike(peer);
            return self.refuse(id, Proto::Sync, RpcError::Invalid);
        };
        let Some(node) = self.trust.name_of(&peer).cloned() else {
            return self.refuse(id, Proto::Sync, RpcError::UnknownNode);
        };
        let me = self.cfg.me.clone();
        let now_s = self.now_secs();
        // Unknown group, not homed here, or no member on the asking node: the same answer,
        // so an outsider cannot tell a group id exists.
        let Some(g) = self.groups.get_mut(&req.group).filter(|g| g.home == me && g.has_member_on(&node)) else {
            return self.refuse(id, Proto::Sync, RpcError::NotMember);
        };
        let resp = if req.digest == Some(g.digest()) {
            SyncResponse { more: false, error: None, records: g.presence_records(now_s).map(ByteBuf::from).collect(), unchanged: true }
        } else {
            let all = g.all_records(now_s);
            let start = req.page as usize * rpc::MAX_SYNC_RECORDS;
            let page: Vec<ByteBuf> = all.iter().skip(start).take(rpc::MAX_SYNC_RECORDS).cloned().map(ByteBuf::from).collect();
            SyncResponse { more: all.len() > start + page.len(), error: None, records: page, unchanged: false }
        };
        self.outputs.push_back(Output::Respond { id, data: rpc::encode(&resp) });
    }
}
