//! Partition: one node is cut off the federation network (its own users still reach it),
//! both sides change state (rooms and members created on the home node, presence changes
//! on the cut node), then the link heals; every node must converge to the same group
//! detail (members, rooms, participants). Needs root and `ip` for network namespaces
//! (see `netns.rs`); elsewhere it is skipped with a message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use serde_json::json;

use super::{Report, ms};
use crate::client::Http;
use crate::net::add_member;
use crate::netns::{self, Netns};
use crate::{Options, Testnet};

#[derive(Clone, Debug)]
pub struct Params {
    /// Rooms and members created on the home side while cut.
    pub changes: usize,
    /// How long the node stays cut off.
    pub cut_for: Duration,
    /// Bound on convergence after the heal.
    pub converge_within: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params { changes: 5, cut_for: Duration::from_secs(5), converge_within: Duration::from_secs(90) }
    }
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    if !netns::available() {
        let why = "partition skipped: needs root and the `ip` tool for network namespaces";
        return Ok(Report { scenario: "partition", ok: true, failures: vec![], figures: json!({"skipped": why}), table: why.into() });
    }
    let mut opts = opts.clone();
    opts.nodes = opts.nodes.max(2);
    let ns = Arc::new(Netns::create(opts.nodes)?);
    let inner = ns.clone();
    let p = p.clone();
    ns.run_inside(move || async move { inside(&opts, &p, inner).await }).await
}

async fn inside(opts: &Options, p: &Params, ns: Arc<Netns>) -> anyhow::Result<Report> {
    let net = Testnet::start_in(opts, Some(ns.clone())).await?;
    let n = net.nodes.len();
    let cut = n - 1;
    let rid = net.create_room("partition").await?;
    let mut socks = try_join_all(net.clients.iter().map(|c| c.ws())).await?;
    for w in &mut socks {
        w.join(&net.group, &rid).await?;
    }
    let all: Vec<String> = socks.iter().map(|w| w.session.clone()).collect();
    for w in &mut socks {
        let all = all.clone();
        w.wait_list("everyone in the room", Duration::from_secs(30), &rid, move |l| {
            all.iter().all(|s| l.iter().any(|x| x["session"] == s.as_str()))
        })
        .await?;
    }
    let locals = try_join_all((0..p.changes).map(|i| {
        let url = net.nodes[0].url.clone();
        async move { Http::register(&url, &format!("part-u{i}"), "partition-password").await }
    }))
    .await?;

    ns.cut(cut)?;
    let t_cut = Instant::now();
    // Home side: rooms and members; the cut side: presence (mute, a second session).
    let mut new_rooms = Vec::new();
    for (i, local) in locals.iter().enumerate() {
        let r = net.clients[0]
            .expect(reqwest::Method::POST, &format!("/api/groups/{}/rooms", net.group), Some(json!({"name": format!("while-cut-{i}")})), 201)
            .await?;
        new_rooms.push(r["id"].as_str().unwrap_or_default().to_owned());
        add_member(&net.clients[0], &net.group, local.user.clone()).await?;
    }
    socks[cut].send(&json!({"type": "mute", "muted": true})).await?;
    socks[0].send(&json!({"type": "mute", "muted": true})).await?;
    let mut second = net.clients[cut].ws().await?;
    second.join(&net.group, &rid).await?;
    let left = p.cut_for.saturating_sub(t_cut.elapsed());
    tokio::time::sleep(left).await;
    // The cut must have held: the cut node has not learned the home side's new rooms.
    let g = net.clients[cut].expect(reqwest::Method::GET, &format!("/api/groups/{}", net.group), None, 200).await?;
    let leaked = new_rooms.iter().filter(|r| g["rooms"].as_array().is_some_and(|l| l.iter().any(|x| x["id"] == r.as_str()))).count();

    ns.heal(cut)?;
    let cut_secs = t_cut.elapsed();
    let mut failures = Vec::new();
    if leaked > 0 {
        failures.push(format!("{leaked} rooms created while cut reached the cut node: the cut did not hold"));
    }
    let converged = match net.wait_converged(&net.group, p.converge_within).await {
        Ok(d) => Some(d),
        Err(e) => {
            failures.push(format!("{e:#}"));
            for (i, c) in net.clients.iter().enumerate() {
                let g = c.get(&format!("/api/groups/{}", net.group)).await?;
                failures.push(format!("{}: {}", net.nodes[i].name, crate::net::group_view(&g.body)));
            }
            None
        }
    };
    let table = format!(
        "partition: {n} nodes in network namespaces; {} cut off for {:.1} s while the home made {} rooms + {} members and the cut node 2 presence changes\n  converged (group detail equal on every node) {} after the heal",
        net.nodes[cut].name,
        cut_secs.as_secs_f64(),
        p.changes,
        p.changes,
        converged.map_or("NOT".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
    );
    drop(second);
    Ok(Report {
        scenario: "partition",
        ok: failures.is_empty(),
        failures,
        figures: json!({"nodes": n, "cut_ms": ms(cut_secs), "changes": p.changes,
            "converged_ms": converged.map(ms), "method": "netns veth link down"}),
        table,
    })
}
