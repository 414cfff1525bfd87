//! Convergence: a user on every node sits in the group's room; one node's user toggles
//! mute `changes` times, lock-step (the next change goes out only after every node's
//! socket saw the previous one, at most 40 changes/s to stay under the node's socket rate
//! limit). Per change: time until the socket on EVERY node showed the new muted state.
//! Cost: presence records accepted+ignored across nodes per change, from /metrics (each
//! change goes straight from its node to every other node with members, so N−1 is ideal).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use serde_json::json;

use super::{Report, ms};
use crate::client::has_session;
use crate::stats::Summary;
use crate::{Options, Testnet};

/// A change not seen everywhere within this fails the scenario.
const DEADLINE: Duration = Duration::from_secs(10);
/// Minimum spacing of changes: the node allows 50 socket messages/s sustained.
const PACE: Duration = Duration::from_millis(25);

#[derive(Clone, Debug)]
pub struct Params {
    pub changes: usize,
    /// Index of the node whose user toggles [default: the last node].
    pub from: Option<usize>,
}

impl Default for Params {
    fn default() -> Self {
        Params { changes: 200, from: None }
    }
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let net = Testnet::start(opts).await?;
    let n = net.nodes.len();
    let from = p.from.unwrap_or(n - 1).min(n - 1);
    let rid = net.create_room("convergence").await?;
    let mut socks = try_join_all(net.clients.iter().map(|c| c.ws())).await?;
    for ws in &mut socks {
        ws.join(&net.group, &rid).await?;
    }
    let sessions: Vec<String> = socks.iter().map(|w| w.session.clone()).collect();
    // Everyone sees everyone before measuring.
    let all_in = |l: &[serde_json::Value]| sessions.iter().all(|s| has_session(l, s, false));
    try_join_all(socks.iter_mut().map(|w| w.wait_list("all joined", Duration::from_secs(30), &rid, all_in)))
        .await
        .context("joins did not converge")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    socks.iter_mut().for_each(|w| w.clear());

    let labels: &[(&str, &[&str])] = &[("kind", &["presence"]), ("verdict", &["accepted", "ignored"])];
    let before = net.metric_sum("voicechat_federation_records_total", labels).await?;
    let target = sessions[from].clone();
    let mut samples = Vec::with_capacity(p.changes);
    let mut failures = Vec::new();
    let t_all = Instant::now();
    for i in 0..p.changes {
        let muted = i % 2 == 0;
        let t0 = Instant::now();
        socks[from].send(&json!({"type": "mute", "muted": muted})).await?;
        let seen = join_all(socks.iter_mut().map(|w| {
            let target = target.clone();
            let rid = rid.clone();
            async move {
                w.wait_list("mute change", DEADLINE, &rid, move |l| has_session(l, &target, muted)).await
            }
        }))
        .await;
        let mut last = t0;
        for (node, s) in net.nodes.iter().zip(seen) {
            match s {
                Ok(at) => last = last.max(at),
                Err(e) => failures.push(format!("change {i} not seen on {} within {DEADLINE:?}: {e}", node.name)),
            }
        }
        if !failures.is_empty() {
            break;
        }
        samples.push(last - t0);
        let spent = t0.elapsed();
        if spent < PACE {
            tokio::time::sleep(PACE - spent).await;
        }
    }
    let elapsed = t_all.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the last records land
    let after = net.metric_sum("voicechat_federation_records_total", labels).await?;
    let per_change = if samples.is_empty() { 0.0 } else { (after - before) / samples.len() as f64 };
    let s = Summary::of(&samples);
    let dropped: u64 = socks.iter().map(|w| w.dropped()).sum();
    if dropped > 0 {
        failures.push(format!("{dropped} socket messages were not taken by the testnet in time"));
    }
    let table = format!(
        "convergence: {n} nodes ({:?}), {} changes by {} (lock-step)\n  seen on every node: {}\n  records: {:.2} presence records handled per change (accepted+ignored, all nodes)\n  wall time {:.1} s",
        opts.topology,
        samples.len(),
        net.nodes[from].name,
        s.line(),
        per_change,
        elapsed.as_secs_f64()
    );
    Ok(Report {
        scenario: "convergence",
        ok: failures.is_empty() && samples.len() == p.changes,
        failures,
        figures: json!({
            "nodes": n, "topology": format!("{:?}", opts.topology).to_lowercase(), "changes": samples.len(),
            "latency": s.json(), "records_per_change": crate::stats::r3(per_change),
            "wall_ms": ms(elapsed),
        }),
        table,
    })
}
