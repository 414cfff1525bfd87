//! A stage across three nodes in network namespaces, and a partition of its cascade: the
//! room is homed on alpha, one synthetic speaker is on beta (an admin of the group, so on
//! stage as they join), synthetic listeners are on every node, each connected only to its
//! own node's audio server. Gamma is then isolated from the other nodes, federation and the
//! media between the audio servers alike, while its own listeners still reach it
//! ([`Netns::isolate`]); after a few seconds the link heals.
//!
//! It asserts what the issue asks: alpha's and beta's listeners go on hearing the speaker
//! (no silence over 1 s around the cut); gamma's pages are told beta is unreachable and
//! alpha's and beta's pages that gamma is; gamma's listeners keep their sockets and audio
//! connections, hear nothing while cut (the cut held), and hear the speaker again after
//! the heal, when the pages are told the node is back. It prints the longest silence on
//! alpha and beta, the time to "unreachable" on each side and from the heal to audio back.
//! Needs root, `ip` and `ebtables`; elsewhere it is skipped with a message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use serde_json::{Value, json};

use super::lecture::connect_from;
use super::{Report, ms};
use crate::client::{Http, Ws};
use crate::netns::{self, Netns};
use crate::nodes::demo_user;
use crate::rtc::Crowd;
use crate::{Options, Testnet};

const SPEAKER_NODE: usize = 1;
/// The most a listener on a node that stays connected may go without the speaker.
const MAX_SILENCE: Duration = Duration::from_secs(1);
/// A synthetic speaker's packet interval.
const FRAME: Duration = Duration::from_millis(20);
/// How long a page may wait to be told a node is unreachable (a link's ICE consent fails
/// after about 5 s).
const REACH_WITHIN: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct Params {
    /// Listeners on each node.
    pub listeners: usize,
    /// How long gamma stays cut off, at least (longer if the pages are told later).
    pub cut_for: Duration,
    /// Bound on audio and `node_reach` coming back after the heal (a link's retries pause
    /// up to 30 s).
    pub heal_within: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params { listeners: 3, cut_for: Duration::from_secs(6), heal_within: Duration::from_secs(45) }
    }
}

/// A listener: its page's socket and its audio connection (a crowd member).
struct Seat {
    ws: Ws,
    member: usize,
    node: usize,
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    if !netns::can_isolate() {
        let why = "stage-partition skipped: needs root, `ip` and `ebtables` for network namespaces";
        return Ok(Report { scenario: "stage-partition", ok: true, failures: vec![], figures: json!({"skipped": why}), table: why.into() });
    }
    let mut opts = opts.clone();
    opts.nodes = 3;
    let per_user = (p.listeners + 8).to_string();
    opts.node_args.extend(["--sockets-per-user".into(), per_user.clone(), "--call-seats-per-user".into(), per_user]);
    crate::raise_nofile(p.listeners as u64 * 3 * 6 + 1024)?;
    let ns = Arc::new(Netns::create(opts.nodes)?);
    let inner = ns.clone();
    let p = p.clone();
    ns.run_inside(move || async move { inside(&opts, &p, inner).await }).await
}

/// Waits on each socket for `node_reach` about `node` (`up` or not) in the room; the
/// arrival of each, or the error of the first that did not come.
async fn told(seats: &mut [&mut Seat], room: &str, node: &str, up: bool, within: Duration) -> Vec<anyhow::Result<Instant>> {
    join_all(seats.iter_mut().map(|s| async move {
        let what = format!("node_reach {node} up:{up}");
        let e = s
            .ws
            .wait_for(&what, within, |m| m["type"] == "node_reach" && m["room"] == room && m["node"] == node && m["up"] == up)
            .await?;
        Ok(e.at)
    }))
    .await
}

/// The longest time after `t0` for every result; failures are pushed to `failures`.
fn slowest(results: Vec<anyhow::Result<Instant>>, t0: Instant, failures: &mut Vec<String>) -> Option<Duration> {
    let mut worst = Some(Duration::ZERO);
    for r in results {
        match r {
            Ok(at) => worst = worst.map(|w| w.max(at.saturating_duration_since(t0))),
            Err(e) => {
                failures.push(format!("{e:#}"));
                worst = None;
            }
        }
    }
    worst
}

async fn inside(opts: &Options, p: &Params, ns: Arc<Netns>) -> anyhow::Result<Report> {
    let net = Testnet::start_in(opts, Some(ns.clone())).await?;
    let names: Vec<String> = net.nodes.iter().map(|n| n.name.clone()).collect();
    let (cut, speaker_node) = (2, SPEAKER_NODE);
    let owner = &net.clients[0];
    // The speaker (beta's demo user) moderates the group, so is on stage as they join.
    let speaker_user = format!("{}@{}", demo_user(&names[speaker_node]), names[speaker_node]);
    let path = format!("/api/groups/{}/members/{speaker_user}", net.group);
    owner.expect(reqwest::Method::PATCH, &path, Some(json!({"role": "admin"})), 200).await?;
    net.wait_converged(&net.group, Duration::from_secs(30)).await?;
    let rooms = format!("/api/groups/{}/rooms", net.group);
    let room = owner.expect(reqwest::Method::POST, &rooms, Some(json!({"name": "Stage", "stage": true})), 201).await?;
    let rid = room["id"].as_str().context("room id")?.to_owned();
    net.wait_converged(&net.group, Duration::from_secs(30)).await?;

    let crowd = Crowd::start()?;
    let bind = ns.hub_ip();
    let mut speaker_ws = net.clients[speaker_node].ws().await?;
    speaker_ws.join(&net.group, &rid).await?;
    let speaker = connect_from(&mut speaker_ws, &crowd, bind).await?;
    let sit = |http: Http, node: usize| {
        let (group, rid, crowd) = (net.group.clone(), rid.clone(), &crowd);
        async move {
            let mut ws = http.ws().await?;
            ws.join(&group, &rid).await?;
            let member = connect_from(&mut ws, crowd, bind).await?;
            anyhow::Ok(Seat { ws, member, node })
        }
    };
    let layout = (0..3).flat_map(|node| (0..p.listeners).map(move |_| node));
    let mut seats: Vec<Seat> = try_join_all(layout.map(|node| sit(net.clients[node].clone(), node))).await?;
    crowd.talk(speaker, true)?;

    // Everyone hears the speaker: the links between the nodes are up.
    let t_setup = Instant::now();
    let heard = |m: &crate::rtc::MemberStats| m.from.get(&(speaker as u32)).copied().unwrap_or(0);
    loop {
        let snap = crowd.snapshot()?;
        let deaf: Vec<&str> = seats.iter().filter(|s| heard(&snap[s.member]) < 25).map(|s| names[s.node].as_str()).collect();
        if deaf.is_empty() {
            break;
        }
        if t_setup.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("listeners on {deaf:?} did not hear the speaker on {} within 30 s before the cut", names[speaker_node]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup = t_setup.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &mut seats {
        s.ws.clear();
    }
    crowd.reset()?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The cut. Each side's pages are told the other cannot be heard; it lasts until they
    // all were (bounded), and at least `cut_for`.
    let mut failures = Vec::new();
    ns.isolate(cut)?;
    let t_cut = Instant::now();
    let (mut on_cut, mut others): (Vec<&mut Seat>, Vec<&mut Seat>) = seats.iter_mut().partition(|s| s.node == cut);
    let (gamma_told, others_told) = tokio::join!(
        told(&mut on_cut, &rid, &names[speaker_node], false, REACH_WITHIN),
        told(&mut others, &rid, &names[cut], false, REACH_WITHIN),
    );
    let split = |r: Vec<anyhow::Result<Instant>>, seats: &[&mut Seat]| {
        let mut by_node: Vec<Vec<anyhow::Result<Instant>>> = (0..3).map(|_| Vec::new()).collect();
        for (r, s) in r.into_iter().zip(seats) {
            by_node[s.node].push(r);
        }
        by_node
    };
    let mut others_by_node = split(others_told, &others);
    let unreachable_gamma = slowest(gamma_told, t_cut, &mut failures);
    let unreachable_alpha = slowest(std::mem::take(&mut others_by_node[0]), t_cut, &mut failures);
    let unreachable_beta = slowest(std::mem::take(&mut others_by_node[1]), t_cut, &mut failures);
    tokio::time::sleep(p.cut_for.saturating_sub(t_cut.elapsed())).await;

    // Just before the heal: gamma's listeners have heard nothing since the cut (it held),
    // and their audio connections are still up.
    let snap = crowd.snapshot()?;
    let cut_secs = t_cut.elapsed();
    for s in on_cut.iter() {
        let m = &snap[s.member];
        if m.longest_silence + Duration::from_millis(500) < cut_secs {
            let (who, silent) = (&names[cut], m.longest_silence);
            failures.push(format!("a listener on {who} went silent only {silent:?} while cut off for {cut_secs:?}: the cut did not hold"));
        }
        if let Some(e) = &m.error {
            failures.push(format!("a listener on {} lost its audio connection while cut off: {e}", names[cut]));
        }
    }
    let heard_before: Vec<(usize, u64)> = on_cut.iter().map(|s| (s.member, heard(&snap[s.member]))).collect();

    ns.rejoin(cut)?;
    let t_heal = Instant::now();
    // Audio back on gamma (each listener hears the speaker anew), and the pages told.
    let audio_back = async {
        let mut back: Vec<Option<Duration>> = vec![None; heard_before.len()];
        while back.iter().any(Option::is_none) && t_heal.elapsed() < p.heal_within {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(snap) = crowd.snapshot() else { break };
            for (b, (member, before)) in back.iter_mut().zip(&heard_before) {
                if b.is_none() && heard(&snap[*member]) > *before {
                    *b = Some(t_heal.elapsed());
                }
            }
        }
        back
    };
    let (back, gamma_up, others_up) = tokio::join!(
        audio_back,
        told(&mut on_cut, &rid, &names[speaker_node], true, p.heal_within),
        told(&mut others, &rid, &names[cut], true, p.heal_within),
    );
    let audio_back = if back.iter().all(Option::is_some) { back.iter().flatten().max().copied() } else { None };
    if audio_back.is_none() {
        failures.push(format!("listeners on {} did not hear the speaker again within {:?} of the heal", names[cut], p.heal_within));
    }
    let reach_gamma = slowest(gamma_up, t_heal, &mut failures);
    let reach_others = slowest(others_up, t_heal, &mut failures);

    // Audio flows on gamma again, and over the whole run alpha's and beta's listeners never
    // went more than a second without the speaker.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = crowd.snapshot()?;
    crowd.talk(speaker, false)?;
    for (member, before) in &heard_before {
        let now = heard(&end[*member]);
        if audio_back.is_some() && now < before + 25 {
            failures.push(format!("a listener on {} got only {} packets of the speaker after the heal", names[cut], now - before));
        }
    }
    // The longest silence on a node, and when it ended (seconds after the cut; negative
    // before it). The speaker shares this process's crowd thread: when a busy machine stalls
    // it, the speaker pauses and every listener hears that; only silence beyond the
    // speaker's own longest pause is the cascade's.
    let silence = |node: usize| {
        let m = others.iter().filter(|s| s.node == node).map(|s| &end[s.member]).max_by_key(|m| m.longest_silence);
        let ended = m.and_then(|m| m.silence_ended).map(|at| at.duration_since(t_cut).as_secs_f64() - t_cut.duration_since(at).as_secs_f64());
        (m.map(|m| m.longest_silence).unwrap_or_default(), ended)
    };
    let ((silence_alpha, alpha_at), (silence_beta, beta_at)) = (silence(0), silence(1));
    let pause = end[speaker].longest_send_gap;
    for (node, sil) in [(0, silence_alpha), (1, silence_beta)] {
        if sil > MAX_SILENCE + pause.saturating_sub(FRAME) {
            failures.push(format!(
                "a listener on {} went {sil:?} without the speaker around the cut (the speaker's longest pause in sending: {pause:?})",
                names[node]
            ));
        }
    }
    drop(on_cut);
    drop(others);

    let at = |t: Option<f64>| t.map_or("at the end".to_string(), |t| format!("{t:+.1} s"));
    let show = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    let table = format!(
        "stage-partition: 3 nodes in network namespaces, a stage room homed on {a}, the speaker on {b}, {l} listeners on each node (set up in {setup:.1} s)\n\
         {g} isolated (federation and media between the nodes) for {cut:.1} s, its listeners still connected to it\n\
         \x20 longest silence of a listener on {a} / {b}, 1 s before the cut to 1 s after {g} heard again: {sa:.0} / {sb:.0} ms \
         (ended {sat} / {sbt} after the cut; the speaker's longest pause in sending {pause:.0} ms)\n\
         \x20 told \"{b} unreachable\" on {g}: {ug};  \"{g} unreachable\" on {a}: {ua}, on {b}: {ub} (after the cut)\n\
         \x20 after the heal: audio back on {g} {ab}; told \"{b} reachable\" on {g} {rg}, \"{g} reachable\" on {a} and {b} {ro}",
        a = names[0],
        b = names[speaker_node],
        g = names[cut],
        l = p.listeners,
        setup = setup.as_secs_f64(),
        cut = cut_secs.as_secs_f64(),
        sa = ms(silence_alpha),
        sb = ms(silence_beta),
        sat = at(alpha_at),
        sbt = at(beta_at),
        pause = ms(pause),
        ug = show(unreachable_gamma),
        ua = show(unreachable_alpha),
        ub = show(unreachable_beta),
        ab = show(audio_back),
        rg = show(reach_gamma),
        ro = show(reach_others),
    );
    let opt_ms = |d: Option<Duration>| d.map_or(Value::Null, |d| ms(d).into());
    let figures = json!({
        "nodes": 3, "listeners_per_node": p.listeners, "cut_ms": ms(cut_secs), "method": "netns: federation veth down, ebtables drops bridged frames",
        "longest_silence_ms": {"alpha": ms(silence_alpha), "beta": ms(silence_beta)}, "speaker_longest_send_gap_ms": ms(pause),
        "unreachable_after_cut_ms": {"on_gamma": opt_ms(unreachable_gamma), "on_alpha": opt_ms(unreachable_alpha), "on_beta": opt_ms(unreachable_beta)},
        "audio_back_after_heal_ms": opt_ms(audio_back),
        "reachable_after_heal_ms": {"on_gamma": opt_ms(reach_gamma), "on_alpha_and_beta": opt_ms(reach_others)},
    });
    drop(seats);
    drop(speaker_ws);
    Ok(Report { scenario: "stage-partition", ok: failures.is_empty(), failures, figures, table })
}
