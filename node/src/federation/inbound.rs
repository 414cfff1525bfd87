//! The loop over what the network delivers: a verdict for every gossip message (before
//! gossipsub forwards it), an answer for every request, a node card for every new peer.

use std::time::Duration;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use serde_json::json;
use tokio::sync::mpsc;
use voicechat_protocol::records::Record;
use voicechat_protocol::rpc::{
    self, InviteRequest, InviteResponse, MAX_INVITE_REQUEST, MAX_PUSH_RECORDS, MAX_PUSH_REQUEST, MAX_SIGNAL_REQUEST,
    MAX_SYNC_RECORDS, MAX_SYNC_REQUEST, PushRequest, PushResponse, RpcError, SignalRequest, SignalResponse,
    SyncRequest, SyncResponse,
};
use voicechat_protocol::ids::Role;

use super::net::{NetEvent, Proto, Verdict};
use super::{Federation, StoreAuth};
use crate::hub::encode;
use crate::state::AppState;
use crate::store::{MemberRecord, StoreError};
use crate::time::unix_now;

/// How long a signal waits for its sender's presence to arrive by gossip.
const PRESENCE_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn run(state: AppState, mut events: mpsc::Receiver<NetEvent>) {
    while let Some(event) = events.recv().await {
        let Some(fed) = state.fed() else { return };
        match event {
            NetEvent::Gossip { id, source, topic: _, data } => {
                let verdict = match state.receive(fed, &data, Some(source)).await {
                    Ok(()) => Verdict::Accept,
                    Err(d) if d.is_reject() => Verdict::Reject,
                    Err(_) => Verdict::Ignore,
                };
                fed.net.report(id, source, verdict);
            }
            // Pushes are applied in the order they arrive, like gossip: two pushes about
            // one group applied at once could show a member half a group.
            NetEvent::Request { peer, proto: Proto::Push, data, reply } => {
                let _ = reply.send(state.answer(peer, Proto::Push, &data).await);
            }
            NetEvent::Request { peer, proto, data, reply } => {
                let state = state.clone();
                tokio::spawn(async move {
                    let answer = state.answer(peer, proto, &data).await;
                    let _ = reply.send(answer);
                });
            }
            NetEvent::Connected { peer } => {
                let net = fed.net.clone();
                let known = fed.name_of(&state, &peer);
                // Our card first, then every card we know, so nodes learn each other
                // through their neighbours whatever the topology.
                let mut cards = vec![ByteBuf::from(fed.card.clone())];
                for p in state.store.peers().unwrap_or_default() {
                    if Some(&p.name) != known.as_ref()
                        && let Ok(bytes) = hex::decode(&p.card)
                        && !bytes.is_empty()
                    {
                        cards.push(ByteBuf::from(bytes));
                    }
                }
                let state = state.clone();
                tokio::spawn(async move {
                    let push = rpc::encode(&PushRequest { records: cards });
                    if let Err(e) = net.request(peer, Proto::Push, push).await {
                        tracing::debug!(%peer, %e, "could not send our node card");
                    }
                    // A peer we knew is back (restart, healed partition): catch up on its
                    // groups. A new peer's sync starts when its card arrives.
                    if let Some(name) = known {
                        state.sync_from(&name).await;
                    }
                });
                metrics::gauge!("voicechat_federation_peers").increment(1.0);
            }
            NetEvent::Disconnected { peer: _ } => {
                metrics::gauge!("voicechat_federation_peers").decrement(1.0);
            }
        }
    }
}

impl AppState {
    /// The response bytes for one request.
    async fn answer(&self, peer: PeerId, proto: Proto, data: &[u8]) -> Vec<u8> {
        let Some(fed) = self.fed() else { return Vec::new() };
        match proto {
            Proto::Push => {
                let resp = match rpc::decode::<PushRequest>(data, MAX_PUSH_REQUEST) {
                    Ok(req) if req.records.len() <= MAX_PUSH_RECORDS => {
                        let records: Vec<Vec<u8>> = req.records.into_iter().map(ByteBuf::into_vec).collect();
                        self.receive_batch(fed, &records, Some(peer)).await;
                        PushResponse::default()
                    }
                    _ => {
                        fed.log_once(peer, "bad_push", "undecodable or oversized push");
                        PushResponse { error: Some(RpcError::Invalid) }
                    }
                };
                rpc::encode(&resp)
            }
            Proto::Sync => {
                let resp = match rpc::decode::<SyncRequest>(data, MAX_SYNC_REQUEST) {
                    Ok(req) => self.answer_sync(fed, peer, &req).unwrap_or_else(|e| SyncResponse {
                        more: false,
                        error: Some(e),
                        records: Vec::new(),
                    }),
                    Err(_) => SyncResponse { more: false, error: Some(RpcError::Invalid), records: Vec::new() },
                };
                rpc::encode(&resp)
            }
            Proto::Signal => {
                let error = match rpc::decode::<SignalRequest>(data, MAX_SIGNAL_REQUEST) {
                    Ok(req) => self.deliver_signal(fed, peer, &req.envelope).await.err(),
                    Err(_) => Some(RpcError::Invalid),
                };
                rpc::encode(&SignalResponse { error })
            }
            Proto::Invite => {
                let resp = match rpc::decode::<InviteRequest>(data, MAX_INVITE_REQUEST) {
                    Ok(req) => self.answer_invite(fed, peer, &req).await.unwrap_or_else(|e| InviteResponse {
                        error: Some(e),
                        records: Vec::new(),
                    }),
                    Err(_) => InviteResponse { error: Some(RpcError::Invalid), records: Vec::new() },
                };
                rpc::encode(&resp)
            }
        }
    }

    /// A page of a group homed here, for a node with members in it.
    fn answer_sync(&self, fed: &Federation, peer: PeerId, req: &SyncRequest) -> Result<SyncResponse, RpcError> {
        let g = self.store.group(&req.group).map_err(internal)?.ok_or(RpcError::UnknownGroup)?;
        if g.home != self.settings.node_name {
            return Err(RpcError::NotHome);
        }
        // Unknown yet (its card is on the way): ask it to retry rather than say "not a
        // member", which would make it drop the group.
        let node = fed.name_of(self, &peer).ok_or(RpcError::Internal)?;
        let members = self.store.members(&g.id).map_err(internal)?;
        if !members.iter().any(|m| m.user.node == node) {
            return Err(RpcError::NotMember);
        }
        let all = self.group_records(fed, &g.id).map_err(internal)?;
        let start = req.page as usize * MAX_SYNC_RECORDS;
        let page: Vec<ByteBuf> = all.iter().skip(start).take(MAX_SYNC_RECORDS).cloned().map(ByteBuf::from).collect();
        Ok(SyncResponse { more: all.len() > start + page.len(), error: None, records: page })
    }

    /// Hands a relayed signal to the target browser, after checking that the signing node
    /// is the sender's home (validation), the sender's session is in the room (presence)
    /// and the target's session is ours and in the same room.
    async fn deliver_signal(&self, fed: &Federation, peer: PeerId, envelope: &[u8]) -> Result<(), RpcError> {
        let now = unix_now();
        let verified = fed
            .validator
            .lock()
            .expect("validator lock")
            .check(envelope, now, &StoreAuth(self))
            .map_err(|e| {
                fed.log_once(peer, e.code(), &e.to_string());
                RpcError::Invalid
            })?;
        let Record::Signal(sig) = &verified.record else { return Err(RpcError::Invalid) };
        if sig.to.node != self.settings.node_name {
            return Err(RpcError::NotHome);
        }
        let room = (sig.group, sig.room);
        let deadline = tokio::time::Instant::now() + PRESENCE_WAIT;
        loop {
            let ready = {
                let rooms = self.rooms.lock().expect("rooms lock");
                rooms.is_in(&room, &sig.from, &sig.from_session) && rooms.is_in(&room, &sig.to, &sig.to_session)
            };
            if ready {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RpcError::NoSession);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let data: serde_json::Value = serde_json::from_str(&sig.data).unwrap_or(serde_json::Value::String(sig.data.clone()));
        let msg = encode(&json!({
            "type": "signal", "from": sig.from, "from_session": sig.from_session,
            "group": sig.group, "room": sig.room, "kind": sig.signal_type, "data": data,
        }));
        if !self.hub.send_session(&sig.to, &sig.to_session, &msg) {
            return Err(RpcError::NoSession);
        }
        fed.validator.lock().expect("validator lock").accept(&verified, now);
        Ok(())
    }

    /// Redeems an invite of a group homed here for a user of the asking node.
    async fn answer_invite(&self, fed: &Federation, peer: PeerId, req: &InviteRequest) -> Result<InviteResponse, RpcError> {
        let node = fed.name_of(self, &peer).ok_or(RpcError::NotHome)?;
        if req.user.node != node {
            return Err(RpcError::NotHome);
        }
        let inv = self.store.invite(&req.code).map_err(internal)?.ok_or(RpcError::BadInvite)?;
        let g = self.store.group(&inv.group).map_err(internal)?.ok_or(RpcError::UnknownGroup)?;
        if g.home != self.settings.node_name {
            return Err(RpcError::NotHome);
        }
        if self.store.member(&g.id, &req.user).map_err(internal)?.is_none() {
            let m = MemberRecord { user: req.user.clone(), role: Role::Member, added_at: unix_now() };
            match self.store.redeem_invite(&req.code, &m, unix_now()).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(StoreError::InviteGone | StoreError::NotFound) => return Err(RpcError::BadInvite),
                Err(e) => return Err(internal(e)),
            }
            self.announce_member(&g, &req.user, Some(Role::Member), false);
            self.notify_group(&g).map_err(internal)?;
        }
        let records = self.group_records(fed, &g.id).map_err(internal)?;
        Ok(InviteResponse { error: None, records: records.into_iter().map(ByteBuf::from).collect() })
    }
}

fn internal(e: StoreError) -> RpcError {
    tracing::error!(%e, "storage failed while answering a peer");
    RpcError::Internal
}
