//! Lecture across nodes (`--nodes 3 scenario lecture`): the cascade of the nodes' SFUs.
//! One synthetic speaker on the first node (the group's owner, so on stage), N synthetic
//! listeners, in two stage rooms measured one after the other in the same run: first all N
//! on the speaker's node, then N spread evenly over the nodes, each connected only to its
//! own node's SFU. Per layout it prints what the speaker's node sends (packets/s to its own
//! listeners and to other nodes, and an estimate of its upstream bandwidth), what each other
//! node receives from other nodes, and the listeners' one-way delay (speaker to listener,
//! str0m to str0m) on the speaker's node and across the cascade.
//!
//! The point: with listeners spread, what crosses between nodes is one copy of the speaker
//! per other node, whatever the number of listeners there.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::try_join_all;
use serde_json::{Value, json};

use super::Report;
use super::lecture::connect;
use crate::client::{Http, Ws};
use crate::nodes::demo_user;
use crate::rtc::{Crowd, MemberStats};
use crate::stats::{Summary, metric_sum, r3};
use crate::{Options, Testnet};

/// Participants joining at once.
const BATCH: usize = 25;
/// Bytes on the wire per forwarded packet, estimated: the 80-byte payload, RTP header and
/// audio-level extension (20), SRTP tag (10), UDP and IPv4 headers (28).
const WIRE_BYTES: f64 = 138.0;

#[derive(Clone, Debug)]
pub struct Params {
    /// Listeners in each layout.
    pub listeners: usize,
    /// Measured seconds per layout.
    pub secs: u64,
}

struct Seat {
    ws: Ws,
    member: usize,
    node: usize,
}


async fn sit(http: &Http, node: usize, crowd: &Crowd, group: &str, room: &str) -> anyhow::Result<Seat> {
    let mut ws = http.ws().await?;
    ws.join(group, room).await?;
    let member = connect(&mut ws, crowd).await?;
    Ok(Seat { ws, member, node })
}

/// What one layout measured.
struct Layout {
    name: &'static str,
    per_node: Vec<usize>,
    /// Speaker's node: packets/s to its own listeners, to other nodes.
    local_rate: f64,
    to_nodes_rate: f64,
    /// Each node: packets/s received from other nodes.
    from_nodes: Vec<f64>,
    /// One-way delay of listeners on the speaker's node, and on the others.
    delay_home: Summary,
    delay_remote: Summary,
    loss: f64,
    deaf: usize,
}

impl Layout {
    fn upstream_kbit(&self) -> f64 {
        (self.local_rate + self.to_nodes_rate) * WIRE_BYTES * 8.0 / 1000.0
    }
    fn cross_kbit(&self) -> f64 {
        self.to_nodes_rate * WIRE_BYTES * 8.0 / 1000.0
    }
    fn row(&self) -> String {
        let per = self.per_node.iter().map(ToString::to_string).collect::<Vec<_>>().join("/");
        let from = self.from_nodes.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join("/");
        format!(
            "{:<8} {:>10} {:>11.0} {:>12.0} {:>13.0} {:>13.0} {:>14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.2}%\n",
            self.name,
            per,
            self.local_rate,
            self.to_nodes_rate,
            self.upstream_kbit(),
            self.cross_kbit(),
            from,
            self.delay_home.p50,
            self.delay_home.p99,
            self.delay_remote.p50,
            self.delay_remote.p99,
            self.loss * 100.0,
        )
    }
    fn json(&self) -> Value {
        json!({
            "layout": self.name, "listeners_per_node": self.per_node,
            "speaker_node_to_own_listeners_pkts_per_s": self.local_rate.round(),
            "speaker_node_to_other_nodes_pkts_per_s": self.to_nodes_rate.round(),
            "speaker_node_upstream_kbit_s_est": r3(self.upstream_kbit()),
            "speaker_node_cross_node_kbit_s_est": r3(self.cross_kbit()),
            "received_from_other_nodes_pkts_per_s": self.from_nodes.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "one_way_delay_ms_speaker_node": self.delay_home.json(), "one_way_delay_ms_other_nodes": self.delay_remote.json(),
            "loss": r3(self.loss), "listeners_not_hearing": self.deaf,
        })
    }
}

async fn counters(clients: &[Http]) -> anyhow::Result<Vec<(f64, f64, f64)>> {
    let mut out = Vec::new();
    for c in clients {
        let text = c.metrics().await?;
        out.push((
            metric_sum(&text, "voicechat_sfu_packets_total", &[("what", &["forwarded"])]),
            metric_sum(&text, "voicechat_sfu_cascade_packets_total", &[("dir", &["out"])]),
            metric_sum(&text, "voicechat_sfu_cascade_packets_total", &[("dir", &["in"])]),
        ));
    }
    Ok(out)
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let n_nodes = opts.nodes;
    crate::raise_nofile(p.listeners as u64 * 6 + 1024)?;
    let mut opts = opts.clone();
    let per_user = (p.listeners + 8).to_string();
    opts.node_args.extend(["--sockets-per-user".into(), per_user.clone(), "--call-seats-per-user".into(), per_user]);
    let net = Testnet::start(&opts).await?;
    let owner = &net.clients[0];
    // Listeners: a plain member on the speaker's node, the demo users (plain members) elsewhere.
    let home_listener = Http::register(&owner.origin, "listener", "listener-password").await?;
    crate::net::add_member(owner, &net.group, home_listener.user.clone()).await?;
    let mut listeners_of: Vec<&Http> = vec![&home_listener];
    listeners_of.extend(net.clients.iter().skip(1));
    let crowd = Crowd::start()?;
    let mut speaker_ws = owner.ws().await?;
    let mut layouts = Vec::new();
    let mut failures = Vec::new();

    let even = |n: usize| (0..n_nodes).map(|i| n / n_nodes + usize::from(i < n % n_nodes)).collect::<Vec<_>>();
    let mut one = vec![0; n_nodes];
    one[0] = p.listeners;
    for (name, per_node) in [("one", one), ("spread", even(p.listeners))] {
        let path = format!("/api/groups/{}/rooms", net.group);
        let room = owner.expect(reqwest::Method::POST, &path, Some(json!({"name": format!("Hall {name}"), "stage": true})), 201).await?;
        let rid = room["id"].as_str().context("room id")?.to_owned();
        speaker_ws.join(&net.group, &rid).await?;
        let speaker = connect(&mut speaker_ws, &crowd).await?;
        let mut seats: Vec<Seat> = Vec::new();
        for (node, &k) in per_node.iter().enumerate() {
            let mut left = k;
            while left > 0 {
                let b = BATCH.min(left);
                let http = listeners_of[node];
                seats.extend(try_join_all((0..b).map(|_| sit(http, node, &crowd, &net.group, &rid))).await?);
                left -= b;
            }
        }
        // Everyone connected, and the links between the nodes up (their first packets seen).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let snap = crowd.snapshot()?;
            if seats.iter().all(|s| snap[s.member].connected_after.is_some()) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        crowd.talk(speaker, true)?;
        tokio::time::sleep(Duration::from_secs(3)).await; // links come up within a tick or two
        crowd.reset()?;
        let c0 = counters(&net.clients).await?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(p.secs)).await;
        let wall = t0.elapsed().as_secs_f64();
        let c1 = counters(&net.clients).await?;
        crowd.talk(speaker, false)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snap = crowd.snapshot()?;
        let of = |s: &Seat| -> &MemberStats { &snap[s.member] };
        let delays = |home: bool| {
            let d: Vec<Duration> = seats.iter().filter(|s| (s.node == 0) == home).flat_map(|s| of(s).delays.iter().copied()).collect();
            Summary::of(&d)
        };
        let (received, expected) = seats.iter().fold((0u64, 0u64), |(r, e), s| (r + of(s).received, e + of(s).expected));
        let deaf = seats.iter().filter(|s| of(s).from.get(&(speaker as u32)).copied().unwrap_or(0) == 0).count();
        let to_nodes_rate = (c1[0].1 - c0[0].1) / wall;
        let layout = Layout {
            name,
            per_node: per_node.clone(),
            local_rate: ((c1[0].0 - c0[0].0) / wall - to_nodes_rate).max(0.0),
            to_nodes_rate,
            from_nodes: (0..n_nodes).map(|i| (c1[i].2 - c0[i].2) / wall).collect(),
            delay_home: delays(true),
            delay_remote: delays(false),
            loss: if expected == 0 { 1.0 } else { 1.0 - (received as f64 / expected as f64).min(1.0) },
            deaf,
        };
        if deaf > 0 {
            failures.push(format!("{name}: {deaf} of {} listeners did not hear the speaker", seats.len()));
        }
        // One copy per other node with listeners: the speaker's own rate (about 50 packets/s,
        // less when the crowd's thread falls behind), no more.
        let sent_rate = snap[speaker].sent as f64 / (wall + 0.5);
        let with_listeners = per_node.iter().skip(1).filter(|k| **k > 0).count() as f64;
        if (layout.to_nodes_rate - sent_rate * with_listeners).abs() > 0.15 * sent_rate * with_listeners.max(1.0) {
            failures.push(format!(
                "{name}: the speaker's node sent {:.0} packets/s to other nodes while the speaker sent {sent_rate:.0}: not one copy per node",
                layout.to_nodes_rate
            ));
        }
        layouts.push(layout);
        // The listeners leave this room (with a goodbye: their sockets do not linger).
        try_join_all(seats.into_iter().map(|s| s.ws.close())).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut table = format!(
        "{:<8} {:>10} {:>11} {:>12} {:>13} {:>13} {:>14} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
        "layout", "per node", "to own pkt/s", "to nodes pkt/s", "up kbit/s est", "cross kbit/s", "in pkt/s by node", "home p50", "home p99", "remote p50", "remote p99", "loss"
    );
    for l in &layouts {
        table.push_str(&l.row());
    }
    table.push_str(&format!(
        "{} listeners, {} nodes, one speaker on {} at 50 packets/s; kbit/s estimated at {WIRE_BYTES} bytes per packet on the wire; delays \
         in ms, str0m speaker to str0m listener on one machine (not Chromium mouth-to-ear)\n",
        p.listeners,
        n_nodes,
        demo_user(&net.nodes[0].name)
    ));
    let figures = json!({"listeners": p.listeners, "nodes": n_nodes, "secs": p.secs, "layouts": layouts.iter().map(Layout::json).collect::<Vec<_>>()});
    Ok(Report { scenario: "lecture-cascade", ok: failures.is_empty(), failures, figures, table })
}
