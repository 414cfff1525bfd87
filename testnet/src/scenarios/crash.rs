//! Crash: while one node takes writes (rooms and members of a group homed on it, each 2xx
//! counted as acknowledged) and its user toggles mute in a shared room, it is killed with
//! SIGKILL, then restarted on the same data dir and ports. Everything acknowledged must be
//! there; the other nodes must drop its user's presence within the TTL (≤ 45 s after the
//! kill) and show it again when the user rejoins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use serde_json::{Value, json};

use super::{Report, ms};
use crate::client::Http;
use crate::nodes::{DEMO_PASSWORD, demo_user};
use crate::{Options, Testnet};

/// Presence TTL (30 s) plus slack for heartbeats and expiry sweeps.
const GONE_WITHIN: Duration = Duration::from_secs(45);
/// Writes and presence run this long before the kill.
const BEFORE_KILL: Duration = Duration::from_millis(1500);
const LOCAL_MEMBERS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Params {}

pub async fn run(opts: &Options, _p: &Params) -> anyhow::Result<Report> {
    let mut opts = opts.clone();
    opts.nodes = opts.nodes.max(2);
    let mut net = Testnet::start(&opts).await?;
    let v = 1; // the victim: not the main group's home, so the survivors keep that group
    let victim_user = format!("{}@{}", demo_user(&net.nodes[v].name), net.nodes[v].name);
    let rid = net.create_room("crash").await?;
    let vc = net.clients[v].clone();
    let vg = vc.expect(reqwest::Method::POST, "/api/groups", Some(json!({"name": "crash-writes"})), 201).await?;
    let vgid = vg["id"].as_str().context("group id")?.to_owned();
    let locals = try_join_all((0..LOCAL_MEMBERS).map(|i| {
        let url = net.nodes[v].url.clone();
        async move { Http::register(&url, &format!("crash-m{i}"), "crash-member-password").await }
    }))
    .await?;
    let mut candidates: Vec<String> = locals.iter().map(|c| c.user.clone()).collect();
    candidates.extend(net.nodes.iter().filter(|n| n.index != v).map(|n| format!("{}@{}", demo_user(&n.name), n.name)));

    // Observers on the other nodes, and the victim's user in the room.
    let mut observers = Vec::new();
    for (i, c) in net.clients.iter().enumerate().filter(|(i, _)| *i != v) {
        let mut w = c.ws().await?;
        w.join(&net.group, &rid).await?;
        observers.push((i, w));
    }
    let mut vws = vc.ws().await?;
    vws.join(&net.group, &rid).await?;
    let vsession = vws.session.clone();
    for (_, w) in &mut observers {
        let (rid, s) = (rid.clone(), vsession.clone());
        w.wait_list("victim present", Duration::from_secs(30), &rid, move |l| l.iter().any(|p| p["session"] == s.as_str())).await?;
    }

    // Writes and presence traffic until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_rooms = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_members = Arc::new(Mutex::new(Vec::<String>::new()));
    let rooms_task = {
        let (vc, vgid, stop, acked) = (vc.clone(), vgid.clone(), stop.clone(), acked_rooms.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match vc.post(&format!("/api/groups/{vgid}/rooms"), json!({"name": format!("r{i}")})).await {
                    Ok(r) if r.ok() => acked.lock().expect("lock").push(r.body["id"].as_str().unwrap_or("").to_owned()),
                    _ => break,
                }
                i += 1;
            }
        })
    };
    let members_task = {
        let (vc, vgid, stop, acked, cands) = (vc.clone(), vgid.clone(), stop.clone(), acked_members.clone(), candidates.clone());
        tokio::spawn(async move {
            for user in cands {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match vc.post(&format!("/api/groups/{vgid}/members"), json!({"user": user})).await {
                    Ok(r) if r.ok() => acked.lock().expect("lock").push(user),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let presence_task = tokio::spawn(async move {
        let mut muted = false;
        loop {
            muted = !muted;
            if vws.send(&json!({"type": "mute", "muted": muted})).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(BEFORE_KILL).await;
    net.nodes[v].kill9();
    let t_kill = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let _ = join_all([rooms_task, members_task, presence_task]).await;

    // Restart on the same data dir and ports; check what was acknowledged.
    let bin = net.bin.clone();
    net.nodes[v].start(&bin).await?;
    let restart = t_kill.elapsed();
    let rooms = acked_rooms.lock().expect("lock").clone();
    let members = acked_members.lock().expect("lock").clone();
    let vc = match vc.get(&format!("/api/groups/{vgid}")).await {
        Ok(r) if r.status == 200 => vc,
        _ => Http::login(&net.nodes[v].url, &demo_user(&net.nodes[v].name), DEMO_PASSWORD).await?,
    };
    let detail = vc.expect(reqwest::Method::GET, &format!("/api/groups/{vgid}"), None, 200).await?;
    let ids = |key: &str, field: &str| -> Vec<String> {
        detail[key].as_array().map(|l| l.iter().filter_map(|x| x[field].as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let (have_rooms, have_members) = (ids("rooms", "id"), ids("members", "user"));
    let mut failures = Vec::new();
    let missing_rooms: Vec<&String> = rooms.iter().filter(|r| !have_rooms.contains(r)).collect();
    let missing_members: Vec<&String> = members.iter().filter(|m| !have_members.contains(m)).collect();
    if !missing_rooms.is_empty() || !missing_members.is_empty() {
        failures.push(format!("acknowledged but lost: rooms {missing_rooms:?}, members {missing_members:?}"));
    }

    // The survivors drop the victim's presence within the TTL.
    let gone = join_all(observers.iter_mut().map(|(i, w)| {
        let (rid, vu) = (rid.clone(), victim_user.clone());
        let left = (t_kill + GONE_WITHIN).saturating_duration_since(Instant::now());
        let name = net.nodes[*i].name.clone();
        async move {
            let no_victim = move |l: &[Value]| !l.iter().any(|p| p["user"] == vu.as_str());
            w.wait_list("victim's presence gone", left, &rid, no_victim)
                .await
                .map(|at| at.saturating_duration_since(t_kill))
                .map_err(|e| format!("{name}: {e}"))
        }
    }))
    .await;
    let mut gone_after = Duration::ZERO;
    for g in gone {
        match g {
            Ok(d) => gone_after = gone_after.max(d),
            Err(e) => failures.push(format!("presence not gone within {GONE_WITHIN:?} of the kill: {e}")),
        }
    }
    if !failures.is_empty() {
        // What the survivors' HTTP API says, for the report.
        for (i, c) in net.clients.iter().enumerate() {
            let c = if i == v { &vc } else { c };
            let g = c.get(&format!("/api/groups/{}", net.group)).await?;
            let room = g.body["rooms"].as_array().and_then(|l| l.iter().find(|r| r["id"] == rid.as_str()).cloned());
            failures.push(format!("{} GET group: room participants {}", net.nodes[i].name, room.map(|r| r["participants"].to_string()).unwrap_or_default()));
        }
    }

    // The user rejoins; every survivor sees the new session.
    let mut back = Duration::ZERO;
    if failures.is_empty() {
        let mut vws = vc.ws().await?;
        let t0 = Instant::now();
        vws.join(&net.group, &rid).await?;
        let s = vws.session.clone();
        for (i, w) in &mut observers {
            let (rid, s) = (rid.clone(), s.clone());
            match w.wait_list("victim back", Duration::from_secs(30), &rid, move |l| l.iter().any(|p| p["session"] == s.as_str())).await {
                Ok(at) => back = back.max(at.saturating_duration_since(t0)),
                Err(e) => failures.push(format!("rejoin not seen on {}: {e}", net.nodes[*i].name)),
            }
        }
    }
    let table = format!(
        "crash: {} nodes, victim {}\n  acknowledged before SIGKILL: {} rooms, {} members; lost after restart: {} rooms, {} members\n  restarted {:.2} s after the kill\n  presence gone on every survivor {:.2} s after the kill (bound {} s)\n  rejoin seen everywhere in {:.1} ms",
        net.nodes.len(), net.nodes[v].name, rooms.len(), members.len(), missing_rooms.len(), missing_members.len(),
        restart.as_secs_f64(), gone_after.as_secs_f64(), GONE_WITHIN.as_secs(), ms(back)
    );
    let figures = json!({
        "nodes": net.nodes.len(), "acked_rooms": rooms.len(), "acked_members": members.len(),
        "lost_rooms": missing_rooms.len(), "lost_members": missing_members.len(),
        "restart_ms": ms(restart), "presence_gone_ms": ms(gone_after), "rejoin_seen_ms": ms(back),
    });
    if rooms.is_empty() {
        failures.push("no write was acknowledged before the kill".into());
    }
    Ok(Report { scenario: "crash", ok: failures.is_empty(), failures, figures, table })
}
