//! The one task that runs the federation machine: it feeds it what the network, the core,
//! local callers and the clock deliver, and carries out its outputs: requests (each in a
//! task of its own, its result fed back), answers, dials, checks of HTTPS origins, and
//! changes for the core, which a writer task stores in order, several batches per flush.
//! The task itself never waits on anything but its next input.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use voicechat_protocol::records::SignalType;
use voicechat_protocol::rpc::RpcError;

use super::machine::{BatchId, Command, CommandId, CommandResult, Failure, InboundId, Input, Machine, Output};
use super::net::{Net, NetError, NetEvent};
use super::wellknown::Verifier;
use super::{key_of, peer_of};
use crate::core::{Announce, Change, Core};

/// Capacity of the channel of completions fed back to the machine.
const INTERNAL_QUEUE: usize = 4096;
/// Apply batches the writer takes into one store transaction.
const GROUP_COMMIT: usize = 16;

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Driver {
    machine: Machine,
    net: Net,
    core: Arc<Core>,
    replies: HashMap<InboundId, oneshot::Sender<Vec<u8>>>,
    callers: HashMap<CommandId, oneshot::Sender<CommandResult>>,
    internal: mpsc::Sender<Input>,
    writer: mpsc::Sender<(BatchId, Vec<Change>)>,
    verifier: Verifier,
    /// Inputs produced while executing outputs (fed before the next external input).
    local: VecDeque<Input>,
    /// This node's SFU, for the cascade.
    sfu: Option<crate::sfu::Sfu>,
    next_id: u64,
}

// Each argument is one input stream or handle of the task; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    machine: Machine,
    net: Net,
    events: mpsc::Receiver<NetEvent>,
    core: Arc<Core>,
    announce: mpsc::Receiver<Announce>,
    commands: mpsc::Receiver<(Command, oneshot::Sender<CommandResult>)>,
    verifier: Verifier,
    sfu: Option<crate::sfu::Sfu>,
    links: mpsc::Receiver<(crate::sfu::LinkKey, bool)>,
) {
    let (internal, internal_rx) = mpsc::channel(INTERNAL_QUEUE);
    let (writer, writer_rx) = mpsc::channel(machine_apply_cap());
    tokio::spawn(write(core.clone(), writer_rx, internal.clone()));
    let d = Driver {
        machine,
        net,
        core,
        replies: HashMap::new(),
        callers: HashMap::new(),
        internal,
        writer,
        verifier,
        local: VecDeque::new(),
        sfu,
        next_id: 0,
    };
    tokio::spawn(d.run(events, announce, commands, internal_rx, links));
}

fn machine_apply_cap() -> usize {
    super::machine::Limits::default().apply_in_flight + 1
}

impl Driver {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<NetEvent>,
        mut announce: mpsc::Receiver<Announce>,
        mut commands: mpsc::Receiver<(Command, oneshot::Sender<CommandResult>)>,
        mut internal: mpsc::Receiver<Input>,
        mut links: mpsc::Receiver<(crate::sfu::LinkKey, bool)>,
    ) {
        self.execute();
        let mut metrics_at = tokio::time::Instant::now();
        loop {
            let wake = Duration::from_millis(self.machine.poll_timeout().saturating_sub(now_ms()));
            let input = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.net_input(ev),
                    None => break,
                },
                Some(a) = announce.recv() => Some(Input::Local(a)),
                Some((command, tx)) = commands.recv() => {
                    self.next_id += 1;
                    self.callers.insert(self.next_id, tx);
                    Some(Input::Command { id: self.next_id, command })
                }
                Some(i) = internal.recv() => Some(i),
                Some((link, up)) = links.recv() => Some(Input::CascadeLink { link, up }),
                () = tokio::time::sleep(wake) => {
                    self.machine.handle_timeout(now_ms());
                    None
                }
            };
            if let Some(i) = input {
                self.machine.handle_input(now_ms(), i);
            }
            self.execute();
            if metrics_at.elapsed() >= Duration::from_secs(1) {
                metrics_at = tokio::time::Instant::now();
                self.export_metrics();
            }
        }
        tracing::info!("federation stopped");
    }

    fn net_input(&mut self, ev: NetEvent) -> Option<Input> {
        match ev {
            NetEvent::Connected { peer } => match key_of(&peer) {
                Some(k) => Some(Input::Connected(k)),
                None => {
                    tracing::debug!(%peer, "a peer without an ed25519 key; closing");
                    let net = self.net.clone();
                    tokio::spawn(async move { net.disconnect(peer).await });
                    None
                }
            },
            NetEvent::Disconnected { peer } => Some(Input::Disconnected(key_of(&peer)?)),
            NetEvent::Request { peer, proto, data, reply } => {
                let k = key_of(&peer)?;
                self.next_id += 1;
                self.replies.insert(self.next_id, reply);
                Some(Input::Request { peer: k, id: self.next_id, proto, data })
            }
        }
    }

    /// Carries out every pending output, feeding back what is known at once.
    fn execute(&mut self) {
        loop {
            while let Some(out) = self.machine.poll_output() {
                self.output(out);
            }
            match self.local.pop_front() {
                Some(i) => self.machine.handle_input(now_ms(), i),
                None => break,
            }
        }
    }

    fn output(&mut self, out: Output) {
        match out {
            Output::Request { peer, id, proto, data } => {
                let (net, tx) = (self.net.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let result = net.request(peer_of(&peer), proto, data).await.map_err(|e| match e {
                        NetError::Unreachable(_) => Failure::Unreachable,
                        NetError::Timeout => Failure::Timeout,
                        e => Failure::Broken(e.to_string()),
                    });
                    metrics::counter!("voicechat_federation_requests_total", "proto" => proto.name(),
                        "result" => if result.is_ok() { "ok" } else { "failed" })
                    .increment(1);
                    let _ = tx.send(Input::Response { id, result }).await;
                });
            }
            Output::Respond { id, data } => {
                if let Some(tx) = self.replies.remove(&id) {
                    let _ = tx.send(data);
                }
            }
            Output::Apply { id, changes } => {
                if let Err(e) = self.writer.try_send((id, changes)) {
                    // The machine bounds batches in flight below the queue; this is a bug.
                    tracing::error!(%e, "the store writer is behind; a batch was not stored");
                    self.local.push_back(Input::Applied(id));
                }
            }
            Output::Dial { peer, addrs } => {
                let net = self.net.clone();
                let p = peer_of(&peer);
                let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()).collect();
                tokio::spawn(async move {
                    for a in addrs {
                        if let Ok(a) = a.with_p2p(p)
                            && let Err(e) = net.add_peer(a).await
                        {
                            tracing::debug!(%e, "could not add a dial address");
                        }
                    }
                });
            }
            Output::Disconnect(peer) => {
                let net = self.net.clone();
                tokio::spawn(async move { net.disconnect(peer_of(&peer)).await });
            }
            Output::Verify { name } => {
                let (verifier, tx) = (self.verifier.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let result = verifier.fetch(&name).await;
                    let _ = tx.send(Input::Verified { name, result }).await;
                });
            }
            Output::Deliver { reply, signal } => {
                let data: serde_json::Value =
                    serde_json::from_str(&signal.data).unwrap_or(serde_json::Value::String(signal.data.clone()));
                let kind = match signal.signal_type {
                    SignalType::Offer => Some("offer"),
                    SignalType::Answer => Some("answer"),
                    SignalType::Candidate => Some("candidate"),
                    SignalType::Bye => Some("bye"),
                    SignalType::E2ee | SignalType::Moderate => None,
                };
                if signal.signal_type == SignalType::Moderate {
                    return self.moderate(reply, signal);
                }
                let room = (signal.group, signal.room);
                let msg = match kind {
                    Some(kind) => Some(Core::signal_message(&signal.from, &signal.from_session, &room, kind, &data)),
                    None => Core::e2ee_message(&signal.from, &signal.from_session, &data),
                };
                // A malformed e2ee body is dropped here, as the browser would drop it.
                let ok = msg.is_some_and(|msg| self.core.deliver_signal(&signal.to, &signal.to_session, &msg));
                self.local.push_back(Input::Delivered { reply, error: (!ok).then_some(RpcError::NoSession) });
            }
            Output::Redeem { reply, code, user } => {
                let (core, tx) = (self.core.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let result = match core.redeem_for_remote(&code, &user).await {
                        Ok((group, fx)) => {
                            core.notify(&fx.notify);
                            Ok((group, fx.announce))
                        }
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(Input::Redeemed { reply, result }).await;
                });
            }
            Output::Done { id, result } => {
                if let Some(tx) = self.callers.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Output::CascadePull { link } => {
                let (sfu, tx) = (self.sfu.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let result = match sfu {
                        Some(sfu) => sfu.pull(link.0, link.1.clone()).await.map_err(|e| e.to_string()),
                        None => Err("this node has no SFU".into()),
                    };
                    let _ = tx.send(Input::CascadeOffer { link, result }).await;
                });
            }
            Output::CascadePulled { link, answer } => {
                let (sfu, tx) = (self.sfu.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let ok = match sfu {
                        Some(sfu) => sfu.pulled(link.0, link.1.clone(), answer).await.map_err(|e| tracing::info!(error = %e, "cascade: the answer was not usable")).is_ok(),
                        None => false,
                    };
                    if !ok {
                        let _ = tx.send(Input::CascadeLink { link, up: false }).await;
                    }
                });
            }
            Output::CascadeUnpull { link } => {
                if let Some(sfu) = &self.sfu {
                    sfu.unpull(link.0, link.1);
                }
            }
            Output::CascadeServe { reply, link, offer } => {
                let (sfu, tx) = (self.sfu.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let result = match sfu {
                        Some(sfu) => sfu.serve(link.0, link.1.clone(), offer).await.map_err(|e| e.to_string()),
                        None => Err("this node has no SFU".into()),
                    };
                    let _ = tx.send(Input::CascadeServed { reply, link, result }).await;
                });
            }
            Output::CascadeUnserve { link } => {
                if let Some(sfu) = &self.sfu {
                    sfu.unserve(link.0, link.1);
                }
            }
            Output::CascadeNodes { room, nodes } => self.core.set_cascaded(room, nodes),
            Output::CascadeReach { link: (room, node), up } => {
                let msg = crate::hub::encode(&serde_json::json!({"type": "node_reach", "group": room.0, "room": room.1, "node": node, "up": up}));
                self.core.tell_call(&room, &msg);
            }
        }
    }

    /// A `moderate` signal the machine let through (SPEC.md §6.6). At the group's home it
    /// comes from a moderator's node: judged by our records, then applied to our session or
    /// handed on, under our key, to the target's node (whose answer is ours). Elsewhere the
    /// home signed it: the home decided, we apply it to our session.
    fn moderate(&mut self, reply: InboundId, signal: voicechat_protocol::Signal) {
        use crate::core::stage::Moderation;
        let action = serde_json::from_str::<serde_json::Value>(&signal.data).ok();
        let what = match action.as_ref().and_then(|v| v["action"].as_str()) {
            Some("invite") => Moderation::Invite,
            Some("to_audience") => Moderation::ToAudience,
            Some("mute") => Moderation::Mute,
            Some("remove") => Moderation::Remove,
            _ => return self.local.push_back(Input::Delivered { reply, error: Some(RpcError::Invalid) }),
        };
        let room = (signal.group, signal.room);
        let target = (signal.to.clone(), signal.to_session);
        if self.core.is_home(&room.0) {
            if let Err(e) = self.core.judge_moderation(&signal.from, signal.from_session, &room) {
                tracing::info!(error = %e, from = %signal.from, "refused a moderation from another node");
                return self.local.push_back(Input::Delivered { reply, error: Some(RpcError::NotMember) });
            }
            if &target.0.node != self.core.me() {
                return self.hand_on(reply, signal);
            }
        }
        let error = match self.core.moderate_decided(room, &signal.from, &target, what) {
            Ok(fx) => {
                // As the socket path commits: who may be heard goes to the SFU, whoever was
                // taken out of the call loses their audio connection.
                if let Some(sfu) = &self.sfu {
                    sfu.apply(&fx);
                }
                let core = self.core.clone();
                tokio::spawn(async move { core.commit(fx).await });
                None
            }
            Err(e) => {
                tracing::info!(error = %e, "could not apply a moderation");
                Some(RpcError::NoSession)
            }
        };
        self.local.push_back(Input::Delivered { reply, error });
    }

    /// The home hands a moderation it approved on to the target's node, signed by itself;
    /// the request that brought it is answered with that node's answer.
    fn hand_on(&mut self, reply: InboundId, signal: voicechat_protocol::Signal) {
        let s = super::OutSignal {
            from: signal.from,
            from_session: signal.from_session,
            to: signal.to,
            to_session: signal.to_session,
            room: (signal.group, signal.room),
            kind: SignalType::Moderate,
            data: signal.data,
        };
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        self.callers.insert(self.next_id, tx);
        self.local.push_back(Input::Command { id: self.next_id, command: Command::Signal(s) });
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let error = match rx.await {
                Ok(CommandResult::Signal(Ok(()))) => None,
                Ok(CommandResult::Signal(Err(super::RelayError::Refused(e)))) => Some(e),
                _ => Some(RpcError::NoSession),
            };
            let _ = internal.send(Input::Delivered { reply, error }).await;
        });
    }

    fn export_metrics(&self) {
        let s = self.machine.stats();
        for ((kind, verdict), n) in &s.records {
            metrics::counter!("voicechat_federation_records_total", "kind" => kind.clone(), "verdict" => *verdict)
                .absolute(*n);
        }
        metrics::counter!("voicechat_federation_applied_total").absolute(s.applied);
        metrics::counter!("voicechat_federation_records_sent_total").absolute(s.records_sent);
        metrics::counter!("voicechat_federation_outbox_dropped_total").absolute(s.outbox_dropped);
        metrics::counter!("voicechat_federation_rate_limited_total").absolute(s.rate_limited);
        metrics::gauge!("voicechat_federation_outbox").set(self.machine.queued() as f64);
        metrics::gauge!("voicechat_federation_peers").set(self.machine.connected_peers() as f64);
    }
}

/// Stores the machine's batches in order: whatever is queued goes into one transaction
/// with one flush, then each batch is reported applied.
async fn write(core: Arc<Core>, mut rx: mpsc::Receiver<(BatchId, Vec<Change>)>, done: mpsc::Sender<Input>) {
    while let Some((first, changes)) = rx.recv().await {
        let mut ids = vec![first];
        let mut all = changes;
        while ids.len() < GROUP_COMMIT {
            match rx.try_recv() {
                Ok((id, c)) => {
                    ids.push(id);
                    all.extend(c);
                }
                Err(_) => break,
            }
        }
        match core.apply_remote(all).await {
            Ok(fx) => core.commit(fx).await,
            Err(e) => tracing::error!(%e, "could not store what federation accepted; the next sync repairs it"),
        }
        for id in ids {
            if done.send(Input::Applied(id)).await.is_err() {
                return;
            }
        }
    }
}
