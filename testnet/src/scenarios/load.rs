//! Load: K WebSocket sessions on ONE node (few users, many sessions each), spread over R
//! rooms of one group. Each session does what a browser tab on a room's page does: it
//! subscribes to the group and joins the room's call. Then a driver in the first room
//! toggles mute lock-step, and every session in that room must show each change.
//!
//! Figures: join time and the presence messages (and bytes) joining fanned out; node RSS per
//! connection with the sockets only connected (idle) and after the joins (busy); latency of
//! a presence change to the sessions that show it; and a check that every session ends with
//! its room's true list, kept from snapshot + deltas. Errors must be 0.
//!
//! A node from before deltas answers `subscribe` with `unknown_type`; its sessions then only
//! join, and each join sends the room's whole list to every session of the group (K²/2 list
//! events while joining). Either way sessions join in batches, and the next batch waits
//! until deliveries go quiet: the node cuts off a socket whose 256-message queue fills.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, try_join_all};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{Report, ms};
use crate::client::{Http, WsStream};
use crate::net::add_member;
use crate::presence::Digest;
use crate::stats::{Summary, metric_sum};
use crate::{Options, Testnet};

const BATCH: usize = 100;
/// A change not delivered to every session within this counts the missing ones as errors.
const ROUND_DEADLINE: Duration = Duration::from_secs(10);
/// Sessions ping this often (the node closes sockets silent for 75 s).
const PING_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Params {
    pub clients: usize,
    pub users: usize,
    pub rooms: usize,
    pub changes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { clients: 2000, users: 50, rooms: 10, changes: 20 }
    }
}

/// State shared by the driver and every session's reader.
#[derive(Default)]
struct Shared {
    /// Presence messages (snapshots, deltas, counts, whole lists) received by all sessions,
    /// and their bytes.
    events: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    /// Current driver round (1-based; 0 = none) and when its change was sent.
    round: AtomicU64,
    t0_ns: AtomicU64,
    /// Sessions in the driver's room that saw the current round's change, summed over rounds.
    hits: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    /// Versions that did not follow on a session's room (a delta lost or out of order).
    gaps: AtomicU64,
    /// Each session's copy of its room, reported at the end.
    digests: Mutex<Vec<Option<Digest>>>,
    stop: AtomicBool,
}

impl Shared {
    fn error(&self, what: String) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_errors.lock().expect("lock");
        if f.len() < 5 {
            f.push(what);
        }
    }
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let limit = crate::raise_nofile((p.clients as u64) * 2 + 1024)?;
    if limit < p.clients as u64 + 256 {
        anyhow::bail!("open-file limit {limit} is too low for {} sessions", p.clients);
    }
    let mut opts = opts.clone();
    opts.nodes = 1;
    // Each of the `users` holds clients/users sockets, all seated in calls: above the
    // node's per-user defaults (8 sockets, 1 call seat), which are settings for this.
    let per_user = (p.clients.div_ceil(p.users.max(1)) + 2).to_string();
    opts.node_args.extend(["--sockets-per-user".into(), per_user.clone(), "--call-seats-per-user".into(), per_user]);
    let net = Testnet::start(&opts).await?;
    let node = &net.nodes[0];
    let rooms = {
        let mut v = Vec::new();
        for r in 0..p.rooms.max(1) {
            v.push(net.create_room(&format!("load-{r}")).await?);
        }
        v
    };
    let mut users = Vec::new();
    for chunk in (0..p.users.max(1)).collect::<Vec<_>>().chunks(8) {
        let got = try_join_all(chunk.iter().map(|i| {
            let url = node.url.clone();
            async move { Http::register(&url, &format!("load-u{i}"), "load-user-password").await }
        }))
        .await?;
        for u in &got {
            add_member(&net.clients[0], &net.group, u.user.clone()).await?;
        }
        users.extend(got);
    }
    // The driver: user-alpha in the first room, on the group's page like everyone.
    let mut driver = net.clients[0].ws().await?;
    let deltas = driver.subscribe(&net.group).await?;
    driver.join(&net.group, &rooms[0]).await?;
    let driver_session = driver.session.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = node.rss_kib()?;

    // Idle: K sockets connected and nothing else; then closed again.
    let mut idle = Vec::with_capacity(p.clients);
    let shared = Arc::new(Shared::default());
    let t_connect = Instant::now();
    for start in (0..p.clients).step_by(BATCH) {
        let end = (start + BATCH).min(p.clients);
        for (j, c) in (start..end).zip(join_all((start..end).map(|j| users[j % users.len()].ws_raw())).await) {
            match c {
                Ok(ws) => idle.push(ws),
                Err(e) => shared.error(format!("connect {j}: {e:#}")),
            }
        }
    }
    let connect = t_connect.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = node.rss_kib()?;
    drop(idle);
    wait_sockets(&net.clients[0], 1.0, Duration::from_secs(30)).await;

    let base = Instant::now();
    let cpu_setup = node.cpu_secs()?;
    let t_setup = Instant::now();
    let (report_tx, report_rx) = watch::channel(false);
    *shared.digests.lock().expect("lock") = vec![None; p.clients];
    let mut tasks = Vec::with_capacity(p.clients);
    let in_driver_room = |j: usize| j.is_multiple_of(rooms.len());
    let mut i = 0;
    while i < p.clients {
        let end = (i + BATCH).min(p.clients);
        let conns = join_all((i..end).map(|j| users[j % users.len()].ws_raw())).await;
        for (j, c) in (i..end).zip(conns) {
            match c {
                Ok(ws) => {
                    let s = Session {
                        index: j,
                        subscribe: deltas.then(|| json!({"type": "subscribe", "group": net.group})),
                        join: json!({"type": "join", "group": net.group, "room": rooms[j % rooms.len()]}),
                        room: rooms[j % rooms.len()].clone(),
                        watch_driver: in_driver_room(j).then(|| driver_session.clone()),
                    };
                    tasks.push(tokio::spawn(session(ws, s, shared.clone(), base, report_rx.clone())));
                }
                Err(e) => shared.error(format!("connect {j}: {e:#}")),
            }
        }
        quiet(&shared.events, Duration::from_millis(150), Duration::from_secs(60)).await;
        i = end;
    }
    let setup = t_setup.elapsed();
    let setup_cpu = node.cpu_secs()? - cpu_setup;
    let setup_events = shared.events.load(Ordering::Relaxed);
    let setup_bytes = shared.bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = node.rss_kib()?;
    let seated = room_lists(&net).await?;
    if seated.values().map(|l| l.len()).sum::<usize>() != p.clients + 1 {
        shared.error(format!("the node seats {seated:?} participants, expected {} sessions + the driver", p.clients));
    }

    // Driver phase: lock-step mute toggles; each must reach every session in its room.
    let k0 = (0..tasks.len()).filter(|j| in_driver_room(*j)).count() as u64;
    let events_before = shared.events.load(Ordering::Relaxed);
    let t_drive = Instant::now();
    for c in 1..=p.changes as u64 {
        shared.t0_ns.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        shared.round.store(c, Ordering::SeqCst);
        driver.send(&json!({"type": "mute", "muted": c % 2 == 1})).await?;
        let want = k0 * c;
        let deadline = Instant::now() + ROUND_DEADLINE;
        while shared.hits.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = shared.hits.load(Ordering::SeqCst);
        if got < want {
            shared.error(format!("change {c}: {} of {k0} sessions did not get it within {ROUND_DEADLINE:?}", want - got));
            shared.hits.store(want, Ordering::SeqCst);
        }
        driver.clear();
    }
    let drive = t_drive.elapsed();
    quiet(&shared.events, Duration::from_millis(300), Duration::from_secs(30)).await;
    let drive_events = shared.events.load(Ordering::Relaxed) - events_before;
    let delivered = k0 * p.changes as u64;
    let lat = Summary::of(&shared.latencies.lock().expect("lock"));

    // Every session's copy of its room against the node's list.
    let views = room_views(&net).await?;
    let versions: std::collections::HashMap<&String, u64> = views.iter().map(|(k, (_, v))| (k, *v)).collect();
    let seated: std::collections::HashMap<String, Vec<Value>> = views.iter().map(|(k, (l, _))| (k.clone(), l.clone())).collect();
    report_tx.send_replace(true);
    // Sessions hand back their sockets still open: one closing now would change the lists
    // of the others before they report.
    let reported = tokio::time::timeout(Duration::from_secs(60), join_all(tasks.iter_mut())).await;
    if reported.is_err() {
        shared.error("sessions did not report their lists within 60 s".into());
    }
    let digests = std::mem::take(&mut *shared.digests.lock().expect("lock"));
    let mut wrong = 0;
    for (j, d) in digests.iter().enumerate() {
        let room = &rooms[j % rooms.len()];
        let truth = Digest::of(seated.get(room).map_or(&[][..], Vec::as_slice));
        if d.map(|d| (d.count, d.sum)) != Some(truth) {
            wrong += 1;
            shared.error(format!("session {j} holds {d:?} for its room, the node lists {} sessions at version {}", truth.0, versions.get(room).copied().unwrap_or_default()));
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let gaps = shared.gaps.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let first = shared.first_errors.lock().expect("lock").clone();
    let per_conn = |rss: u64| (rss.saturating_sub(rss_before)) as f64 / p.clients.max(1) as f64;
    let (idle_kib, busy_kib) = (per_conn(rss_idle), per_conn(rss_after));
    drop(net); // kill the node before closing K sockets (each close would fan out a leave)
    for t in &tasks {
        t.abort();
    }
    drop(reported);
    let eps = delivered as f64 / drive.as_secs_f64();
    let setup_eps = setup_events as f64 / setup.as_secs_f64();
    let mode = if deltas { "snapshot + deltas, counts past the threshold" } else { "whole lists (a node without subscribe)" };
    let table = format!(
        "load: {} sessions of {} users on one node, {} rooms, {} changes (lock-step); presence as {mode}\n  \
         connecting them idle: {:.1} s; joining: {:.1} s (node CPU {:.1} s), {} presence events fanned out ({:.1} MB, {:.0} events/s)\n  \
         node RSS {} KiB at start; per connection {:.1} KiB idle (connected only), {:.1} KiB after the joins\n  \
         presence change to the {k0} sessions in the driver's room: latency {}\n  \
         driving: {} changes shown {} times in {:.2} s ({:.0}/s), {} presence events sent in all\n  \
         lists: {} of {} sessions end with their room's true list; gaps {gaps}\n  errors {}",
        p.clients, users.len(), rooms.len(), p.changes,
        connect.as_secs_f64(), setup.as_secs_f64(), setup_cpu, setup_events, setup_bytes as f64 / 1e6, setup_eps,
        rss_before, idle_kib, busy_kib, lat.line(),
        p.changes, delivered, drive.as_secs_f64(), eps, drive_events,
        p.clients - wrong as usize, p.clients, errors
    );
    Ok(Report {
        scenario: "load",
        ok: errors == 0,
        failures: first,
        figures: json!({
            "clients": p.clients, "users": users.len(), "rooms": rooms.len(), "changes": p.changes, "deltas": deltas,
            "events_delivered": delivered, "events_per_sec": eps.round(), "latency": lat.json(), "drive_events": drive_events,
            "connect_idle_ms": ms(connect), "setup_ms": ms(setup), "setup_node_cpu_s": crate::stats::r3(setup_cpu), "setup_events": setup_events, "setup_bytes": setup_bytes, "setup_events_per_sec": setup_eps.round(),
            "rss_before_kib": rss_before, "rss_idle_kib": rss_idle, "rss_after_kib": rss_after,
            "rss_idle_per_connection_kib": crate::stats::r3(idle_kib), "rss_per_connection_kib": crate::stats::r3(busy_kib),
            "wrong_lists": wrong, "gaps": gaps, "errors": errors,
        }),
        table,
    })
}

/// Each room's participants as the node lists them.
async fn room_lists(net: &Testnet) -> anyhow::Result<std::collections::HashMap<String, Vec<Value>>> {
    Ok(room_views(net).await?.into_iter().map(|(k, (l, _))| (k, l)).collect())
}

/// Each room's participants and version as the node lists them.
async fn room_views(net: &Testnet) -> anyhow::Result<std::collections::HashMap<String, (Vec<Value>, u64)>> {
    let g = net.clients[0].expect(reqwest::Method::GET, &format!("/api/groups/{}", net.group), None, 200).await?;
    Ok(g["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let list = r["participants"].as_array().cloned().unwrap_or_default();
            (r["id"].as_str().unwrap_or_default().to_owned(), (list, r["version"].as_u64().unwrap_or(0)))
        })
        .collect())
}

/// Waits until the node counts at most `n` open sockets (closed ones are gone), at most `max`.
async fn wait_sockets(c: &Http, n: f64, max: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        match c.metrics().await {
            Ok(m) if metric_sum(&m, "voicechat_ws_connected", &[]) <= n => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until `counter` stayed the same for `still`, at most `max`.
async fn quiet(counter: &AtomicU64, still: Duration, max: Duration) {
    let t0 = Instant::now();
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while t0.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return;
        }
    }
}

/// What one session does.
struct Session {
    index: usize,
    subscribe: Option<Value>,
    join: Value,
    room: String,
    /// The driver's session, for sessions in its room (they time its changes).
    watch_driver: Option<String>,
}

/// A session's socket, handed back open when it reported.
type Open = (SplitSink<WsStream, Message>, SplitStream<WsStream>);

/// One session: subscribe and join, then read everything, counting presence events, keeping
/// its room's digest and timing the driver's changes; report the digest when asked.
async fn session(ws: WsStream, s: Session, sh: Arc<Shared>, base: Instant, mut report: watch::Receiver<bool>) -> Option<Open> {
    let (mut sink, mut read) = ws.split();
    for m in s.subscribe.iter().chain([&s.join]) {
        if let Err(e) = sink.send(Message::text(m.to_string())).await {
            sh.error(format!("send {}: {e}", m["type"]));
            return None;
        }
    }
    let mut digest = Digest::default();
    // From a node without deltas: the last whole list of this room, read only at the end.
    let mut last_list = None;
    let room_field = format!(r#""room":"{}""#, s.room);
    let mut seen_round = 0u64;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let m = tokio::select! {
            m = read.next() => m,
            _ = report.changed() => break,
            _ = ping.tick() => {
                if sink.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                    sh.error("send ping".into());
                    return None;
                }
                continue;
            }
        };
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                sh.error("socket closed by the node".into());
                return None;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                sh.error(format!("socket error: {e}"));
                return None;
            }
        };
        let at = base.elapsed();
        if t.contains(r#""type":"error""#) {
            sh.error(format!("node refused: {}", t.as_str()));
            continue;
        }
        if !(t.contains(r#""type":"participant"#) || t.starts_with(r#"{"type":"presence""#)) {
            continue;
        }
        sh.events.fetch_add(1, Ordering::Relaxed);
        sh.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
        if !t.contains(&room_field) {
            continue;
        }
        // Timing the driver's change (sessions in its room, while a round is open).
        let round = sh.round.load(Ordering::SeqCst);
        let timing = s.watch_driver.as_ref().filter(|d| round != 0 && round != seen_round && t.contains(d.as_str()));
        let legacy_list = t.starts_with(r#"{"type":"participants""#) && !t.contains(r#""version":"#);
        if legacy_list {
            // Whole lists are parsed only when they may show a change being timed.
            last_list = Some(t.clone());
            if timing.is_none() {
                continue;
            }
        }
        let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
        if !legacy_list
            && let Err(skip) = digest.apply(&s.room, &v)
        {
            sh.gaps.fetch_add(1, Ordering::Relaxed);
            sh.error(format!("session {}: version {:?} does not follow {:?}", s.index, skip.got, skip.held));
        }
        let Some(driver) = timing else { continue };
        let muted = round % 2 == 1;
        let shows = |p: &Value| p["session"] == driver.as_str() && p["muted"] == muted;
        let hit = match v["type"].as_str() {
            Some("participant_changed") => shows(&v["participant"]),
            Some("participants") => v["participants"].as_array().is_some_and(|l| l.iter().any(shows)),
            _ => false,
        };
        if hit {
            seen_round = round;
            let t0 = Duration::from_nanos(sh.t0_ns.load(Ordering::SeqCst));
            sh.latencies.lock().expect("lock").push(at.saturating_sub(t0));
            sh.hits.fetch_add(1, Ordering::SeqCst);
        }
    }
    if let Some(v) = last_list.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        let _ = digest.apply(&s.room, &v);
    }
    sh.digests.lock().expect("lock")[s.index] = Some(digest);
    Some((sink, read))
}
