//! Relay: two pairs of sockets in one room, one pair on the same node (alpha ↔ alpha) and
//! one across nodes (alpha ↔ beta), exchange `signal` messages both ways at a fixed rate.
//! Each payload carries a sequence number and its send time; the receiver computes the
//! latency. Every message must arrive exactly once and none may be refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::try_join_all;
use serde_json::json;

use super::Report;
use crate::client::{Http, Ws};
use crate::net::add_member;
use crate::stats::Summary;
use crate::{Options, Testnet};

/// How long to wait for stragglers after the last send.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Params {
    /// Messages per second sent by each socket.
    pub rate: u32,
    /// Messages sent by each socket.
    pub messages: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { rate: 50, messages: 500 }
    }
}

/// What one direction saw.
struct Direction {
    sent: usize,
    latencies: Vec<Duration>,
    duplicates: usize,
    refusals: Vec<String>,
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let mut opts = opts.clone();
    opts.nodes = opts.nodes.max(2);
    let net = Testnet::start(&opts).await?;
    let rid = net.create_room("relay").await?;
    // A second user on alpha for the same-node pair, and a third for the cross pair (a
    // user holds one seat in calls: two sockets of one user cannot both be in the room).
    let bob = Http::register(&net.nodes[0].url, "relay-bob", "relay-bob-password").await?;
    add_member(&net.clients[0], &net.group, "relay-bob".into()).await?;
    let ann = Http::register(&net.nodes[0].url, "relay-ann", "relay-ann-password").await?;
    add_member(&net.clients[0], &net.group, "relay-ann".into()).await?;
    let mut a1 = net.clients[0].ws().await?; // alpha: same-node pair with bob
    let mut b1 = bob.ws().await?;
    let mut a2 = ann.ws().await?; // alpha: cross pair with beta
    let mut c2 = net.clients[1].ws().await?;
    for ws in [&mut a1, &mut b1, &mut a2, &mut c2] {
        ws.join(&net.group, &rid).await?;
    }
    // Signals need both sockets in the room on the receiver's node: wait for the joins.
    let (sa1, sb1, sa2, sc2) = (a1.session.clone(), b1.session.clone(), a2.session.clone(), c2.session.clone());
    for (ws, who) in [(&mut b1, sa1), (&mut c2, sa2), (&mut a1, sb1), (&mut a2, sc2)] {
        let rid = rid.clone();
        ws.wait_list("partner in the room", Duration::from_secs(30), &rid, move |l| l.iter().any(|x| x["session"] == who.as_str()))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = Arc::new(Instant::now());
    let (a1, b1) = pair(a1, b1, p, base.clone());
    let (a2, c2) = pair(a2, c2, p, base.clone());
    let results = try_join_all([a1, b1, a2, c2].into_iter().map(|h| async move { h.await.context("relay task") })).await?;
    // Sockets stay open until every task is done: a socket leaving early would make its
    // partner's last signals `not_in_room`.
    let (mut dirs, _socks): (Vec<Direction>, Vec<Ws>) = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().unzip();
    let same: Vec<Direction> = dirs.drain(..2).collect();
    let across = dirs;
    let mut failures = Vec::new();
    let mut figures = json!({"rate": p.rate, "messages_per_socket": p.messages});
    let mut table = format!(
        "relay: {} messages each way per pair at {}/s per socket\n",
        p.messages, p.rate
    );
    for (name, pair) in [("same_node", &same), ("across_nodes", &across)] {
        let sent: usize = pair.iter().map(|d| d.sent).sum();
        let got: Vec<Duration> = pair.iter().flat_map(|d| d.latencies.iter().copied()).collect();
        let dups: usize = pair.iter().map(|d| d.duplicates).sum();
        let lost = sent.saturating_sub(got.len());
        let refusals: Vec<String> = pair.iter().flat_map(|d| d.refusals.iter().cloned()).collect();
        let s = Summary::of(&got);
        if lost > 0 {
            failures.push(format!("{name}: {lost} of {sent} messages lost"));
        }
        if dups > 0 {
            failures.push(format!("{name}: {dups} duplicates"));
        }
        if let Some(r) = refusals.first() {
            failures.push(format!("{name}: {} refusals, first: {r}", refusals.len()));
        }
        table.push_str(&format!("  {name:<13} sent {sent:<5} lost {lost:<3} {}\n", s.line()));
        figures[name] = json!({"sent": sent, "received": got.len(), "lost": lost, "duplicates": dups,
            "refused": refusals.len(), "latency": s.json()});
    }
    Ok(Report { scenario: "relay", ok: failures.is_empty(), failures, figures, table })
}

type Task = tokio::task::JoinHandle<anyhow::Result<(Direction, Ws)>>;

/// Two tasks: each socket sends to the other at the rate and records what it receives.
fn pair(x: Ws, y: Ws, p: &Params, base: Arc<Instant>) -> (Task, Task) {
    let (xs, ys) = ((x.user.clone(), x.session.clone()), (y.user.clone(), y.session.clone()));
    (
        tokio::spawn(exchange(x, ys, p.clone(), base.clone())),
        tokio::spawn(exchange(y, xs, p.clone(), base)),
    )
}

/// Sends `messages` signals to `to` at `rate` while receiving the partner's; then drains.
async fn exchange(mut ws: Ws, to: (String, String), p: Params, base: Arc<Instant>) -> anyhow::Result<(Direction, Ws)> {
    let period = Duration::from_secs_f64(1.0 / f64::from(p.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut d = Direction { sent: 0, latencies: Vec::new(), duplicates: 0, refusals: Vec::new() };
    let mut seen = HashSet::new();
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if seen.len() >= p.messages && d.sent >= p.messages {
            // Both directions done on this side: our messages' fate is the partner's count.
            break;
        }
        let sending = d.sent < p.messages;
        if !sending && drain_until.is_none() {
            drain_until = Some(tokio::time::Instant::now() + DRAIN);
        }
        tokio::select! {
            _ = tick.tick(), if sending => {
                let t = base.elapsed().as_micros() as u64;
                ws.send(&json!({"type": "signal", "to": to.0, "to_session": to.1, "kind": "candidate",
                    "data": {"seq": d.sent, "t_us": t}})).await?;
                d.sent += 1;
            }
            e = ws.recv(Duration::from_secs(3600)) => {
                let e = e?;
                match e.msg["type"].as_str() {
                    Some("signal") => {
                        let seq = e.msg["data"]["seq"].as_u64().unwrap_or(u64::MAX);
                        let t = e.msg["data"]["t_us"].as_u64().unwrap_or(0);
                        let now = e.at.duration_since(*base).as_micros() as u64;
                        if seen.insert(seq) {
                            d.latencies.push(Duration::from_micros(now.saturating_sub(t)));
                        } else {
                            d.duplicates += 1;
                        }
                    }
                    Some("error") => d.refusals.push(e.msg.to_string()),
                    _ => {}
                }
            }
            () = sleep_until(drain_until) => break,
        }
    }
    // What this socket received is the partner's direction; report it as such.
    d.sent = p.messages;
    Ok((d, ws))
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
