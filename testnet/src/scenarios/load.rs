//! Load: K WebSocket sessions on ONE node (few users, many sessions each), spread over R
//! rooms of the group; then a presence driver toggles mute lock-step and every session
//! must receive each change as a `participants` event. Figures: events/s delivered, p99
//! delivery latency, node RSS per connection, errors (must be 0).
//!
//! Every join is fanned out to every connected session of the group (K²/2 events while
//! joining), so sessions join in batches and the next batch waits until deliveries go
//! quiet: the node cuts off a socket whose 256-message queue fills.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, try_join_all};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Report, ms};
use crate::client::Http;
use crate::net::add_member;
use crate::stats::Summary;
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
    /// `participants` events received by all sessions.
    events: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    /// Current driver round (1-based; 0 = none) and when its change was sent.
    round: AtomicU64,
    t0_ns: AtomicU64,
    /// Sessions that saw the current round's change, summed over rounds.
    hits: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
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
    // The driver: user-alpha in the first room.
    let mut driver = net.clients[0].ws().await?;
    driver.join(&net.group, &rooms[0]).await?;
    let driver_session = driver.session.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = node.rss_kib()?;

    let shared = Arc::new(Shared::default());
    let base = Instant::now();
    let t_setup = Instant::now();
    let mut tasks = Vec::with_capacity(p.clients);
    let mut i = 0;
    while i < p.clients {
        let end = (i + BATCH).min(p.clients);
        let conns = join_all((i..end).map(|j| users[j % users.len()].ws_raw())).await;
        for (j, c) in (i..end).zip(conns) {
            match c {
                Ok(ws) => {
                    let join = json!({"type": "join", "group": net.group, "room": rooms[j % rooms.len()]});
                    tasks.push(tokio::spawn(session(ws, join, driver_session.clone(), shared.clone(), base)));
                }
                Err(e) => shared.error(format!("connect {j}: {e:#}")),
            }
        }
        quiet(&shared.events, Duration::from_millis(150), Duration::from_secs(60)).await;
        i = end;
    }
    let setup = t_setup.elapsed();
    let setup_events = shared.events.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = node.rss_kib()?;
    let g = net.clients[0].expect(reqwest::Method::GET, &format!("/api/groups/{}", net.group), None, 200).await?;
    let seated: usize = g["rooms"].as_array().map(|l| l.iter().map(|r| r["participants"].as_array().map_or(0, Vec::len)).sum()).unwrap_or(0);
    if seated != p.clients + 1 {
        shared.error(format!("the node seats {seated} participants, expected {} sessions + the driver", p.clients));
    }

    // Driver phase: lock-step mute toggles; each must reach all K sessions.
    let k = tasks.len() as u64;
    let t_drive = Instant::now();
    for c in 1..=p.changes as u64 {
        shared.t0_ns.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        shared.round.store(c, Ordering::SeqCst);
        driver.send(&json!({"type": "mute", "muted": c % 2 == 1})).await?;
        let want = k * c;
        let deadline = Instant::now() + ROUND_DEADLINE;
        while shared.hits.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = shared.hits.load(Ordering::SeqCst);
        if got < want {
            shared.error(format!("change {c}: {} of {k} sessions did not get it within {ROUND_DEADLINE:?}", want - got));
            shared.hits.store(want, Ordering::SeqCst);
        }
        driver.clear();
    }
    let drive = t_drive.elapsed();
    let delivered = k * p.changes as u64;
    let lat = Summary::of(&shared.latencies.lock().expect("lock"));
    shared.stop.store(true, Ordering::SeqCst);
    let errors = shared.errors.load(Ordering::Relaxed);
    let first = shared.first_errors.lock().expect("lock").clone();
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / p.clients.max(1) as f64;
    drop(net); // kill the node before closing K sockets (each close would fan out a leave)
    for t in &tasks {
        t.abort();
    }
    let eps = delivered as f64 / drive.as_secs_f64();
    let setup_eps = setup_events as f64 / setup.as_secs_f64();
    let table = format!(
        "load: {} sessions of {} users on one node, {} rooms, {} changes (lock-step)\n  delivered {} events in {:.2} s: {:.0} events/s; delivery latency {}\n  joining: {:.1} s, {} events fanned out ({:.0} events/s)\n  node RSS {} KiB before, {} KiB after: {:.1} KiB per connection\n  errors {}",
        p.clients, users.len(), rooms.len(), p.changes, delivered, drive.as_secs_f64(), eps, lat.line(),
        setup.as_secs_f64(), setup_events, setup_eps, rss_before, rss_after, per_conn, errors
    );
    let failures: Vec<String> = first;
    Ok(Report {
        scenario: "load",
        ok: errors == 0,
        failures,
        figures: json!({
            "clients": p.clients, "users": users.len(), "rooms": rooms.len(), "changes": p.changes,
            "events_delivered": delivered, "events_per_sec": eps.round(), "latency": lat.json(),
            "setup_ms": ms(setup), "setup_events": setup_events, "setup_events_per_sec": setup_eps.round(),
            "rss_before_kib": rss_before, "rss_after_kib": rss_after, "rss_per_connection_kib": crate::stats::r3(per_conn),
            "errors": errors,
        }),
        table,
    })
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

/// One session: join, then read everything, counting events and timing driver changes.
async fn session(ws: crate::client::WsStream, join: Value, driver: String, sh: Arc<Shared>, base: Instant) {
    let (mut sink, mut read) = ws.split();
    if let Err(e) = sink.send(Message::text(join.to_string())).await {
        sh.error(format!("send join: {e}"));
        return;
    }
    let mut seen_round = 0u64;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let m = tokio::select! {
            m = read.next() => m,
            _ = ping.tick() => {
                if sink.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                    sh.error("send ping".into());
                    return;
                }
                continue;
            }
        };
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                sh.error("socket closed by the node".into());
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                sh.error(format!("socket error: {e}"));
                return;
            }
        };
        let at = base.elapsed();
        if t.contains(r#""type":"error""#) {
            sh.error(format!("node refused: {}", t.as_str()));
            continue;
        }
        if !t.contains(r#""type":"participants""#) {
            continue;
        }
        sh.events.fetch_add(1, Ordering::Relaxed);
        let round = sh.round.load(Ordering::SeqCst);
        if round == 0 || round == seen_round || !t.contains(driver.as_str()) {
            continue;
        }
        let muted = round % 2 == 1;
        let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
        let hit = v["participants"].as_array().is_some_and(|l| l.iter().any(|p| p["session"] == driver.as_str() && p["muted"] == muted));
        if hit {
            seen_round = round;
            let t0 = Duration::from_nanos(sh.t0_ns.load(Ordering::SeqCst));
            sh.latencies.lock().expect("lock").push(at.saturating_sub(t0));
            sh.hits.fetch_add(1, Ordering::SeqCst);
        }
    }
}
