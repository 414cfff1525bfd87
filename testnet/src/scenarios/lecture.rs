//! Lecture: one node, a stage room (on its SFU from the first person), a few synthetic
//! speakers (sessions of the group's owner, a moderator, so on stage) and a rising number
//! of synthetic listeners (sessions of a member). Every participant is a real socket
//! session that joined the room, sent its offer over the socket and connects to the SFU
//! with str0m from its own UDP socket; speakers send an 80-byte packet every 20 ms. Per
//! step it prints what the SFU forwarded, the node's CPU per 1,000 forwarded packets/s, its
//! RSS per listener, and the listeners' loss, jitter and one-way delay. The synthetic
//! crowd runs on the same cores as the node (one thread of this process).
//!
//! First, the stage is checked: a listener who was not invited sends and nobody hears it;
//! the moderator invites them, they accept, and everyone does.
//!
//! Anchor: LiveKit's published audio benchmark, about 75,000 forwarded packets/s per vCPU.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use serde_json::{Value, json};

use super::Report;
use crate::client::{Http, Ws};
use crate::rtc::{Crowd, Joining, MemberStats};
use crate::nodes::cpu_secs;
use crate::stats::{Summary, r3};
use crate::{Options, Testnet};

/// Participants joining at once.
const BATCH: usize = 25;
/// Slots each participant listens on (the page's number).
const SLOTS: usize = 3;
/// Loss above this at any step fails the scenario.
const MAX_LOSS: f64 = 0.01;

#[derive(Clone, Debug)]
pub struct Params {
    /// Listener counts, one step each (listeners are added, never removed, between steps).
    pub steps: Vec<usize>,
    /// Synthetic speakers.
    pub speakers: usize,
    /// Measured seconds per step.
    pub secs: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { steps: vec![100, 200, 500], speakers: 2, secs: 5 }
    }
}

/// One session in the room with its SFU connection.
struct Seat {
    _ws: Ws,
    member: usize,
}

async fn sit(http: &Http, crowd: &Crowd, group: &str, room: &str) -> anyhow::Result<Seat> {
    let mut ws = http.ws().await?;
    ws.join(group, room).await?;
    let member = connect(&mut ws, crowd).await?;
    Ok(Seat { _ws: ws, member })
}

/// Offers over `ws` (already in a call on the SFU) and hands the answer to the crowd.
pub(crate) async fn connect(ws: &mut Ws, crowd: &Crowd) -> anyhow::Result<usize> {
    connect_from(ws, crowd, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

/// [`connect`] with the participant's UDP socket on `bind` (the hub's address when the
/// nodes run in network namespaces).
pub(crate) async fn connect_from(ws: &mut Ws, crowd: &Crowd, bind: IpAddr) -> anyhow::Result<usize> {
    let (joining, offer) = Joining::new(bind, SLOTS)?;
    ws.send(&json!({"type": "sfu_offer", "sdp": offer})).await?;
    let e = ws
        .wait_for("sfu_answer", Duration::from_secs(20), |m| {
            m["type"] == "sfu_answer" || (m["type"] == "error" && m["in_reply_to"] == "sfu_offer")
        })
        .await?;
    if e.msg["type"] == "error" {
        bail!("the SFU refused an offer: {}", e.msg);
    }
    let answer = e.msg["sdp"].as_str().context("sfu_answer without sdp")?.to_owned();
    crowd.add(joining, answer)
}

struct Step {
    listeners: usize,
    connect: Summary,
    fwd_rate: f64,
    cpu: f64,
    rss_per_listener_kib: f64,
    loss: f64,
    deaf: usize,
    jitter_p50: f64,
    jitter_max: f64,
    delay: Summary,
    crowd_cpu: f64,
}

impl Step {
    fn per_core(&self) -> f64 {
        if self.cpu <= 0.0 { 0.0 } else { self.fwd_rate / self.cpu }
    }
    fn cpu_per_1k(&self) -> f64 {
        if self.fwd_rate <= 0.0 { 0.0 } else { self.cpu * 100.0 / (self.fwd_rate / 1000.0) }
    }
    fn row(&self) -> String {
        format!(
            "{:>9} {:>10.0} {:>9.3} {:>11.2}% {:>10.0} {:>9.1} {:>7.2}% {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1}\n",
            self.listeners,
            self.fwd_rate,
            self.cpu,
            self.cpu_per_1k(),
            self.per_core(),
            self.rss_per_listener_kib,
            self.loss * 100.0,
            self.jitter_p50,
            self.jitter_max,
            self.delay.p50,
            self.delay.p99,
            self.connect.p50,
        )
    }
    fn json(&self) -> Value {
        json!({
            "listeners": self.listeners, "forwarded_pkts_per_s": self.fwd_rate.round(), "node_cpu_cores": r3(self.cpu),
            "node_cpu_pct_per_1k_pkts": r3(self.cpu_per_1k()), "pkts_per_core": self.per_core().round(),
            "rss_kib_per_listener": r3(self.rss_per_listener_kib), "loss": r3(self.loss), "listeners_missing_a_speaker": self.deaf,
            "jitter_ms_p50": r3(self.jitter_p50), "jitter_ms_max": r3(self.jitter_max), "one_way_delay_ms": self.delay.json(),
            "connect_ms": self.connect.json(), "load_client_cpu_cores": r3(self.crowd_cpu),
        })
    }
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let max = p.steps.iter().copied().max().unwrap_or(0) + p.speakers;
    crate::raise_nofile(max as u64 * 3 + 1024)?;
    let mut opts = opts.clone();
    opts.nodes = 1;
    // Every call of this node is on the SFU as soon as two people are in it.
    opts.node_args.extend(["--sfu-threshold".into(), "2".into()]);
    // The listeners are sessions of one member and the speakers of the owner, all seated:
    // above the node's per-user defaults (8 sockets, 1 call seat), settings for this.
    let per_user = (max + 4).to_string();
    opts.node_args.extend(["--sockets-per-user".into(), per_user.clone(), "--call-seats-per-user".into(), per_user]);
    let net = Testnet::start(&opts).await?;
    let owner = &net.clients[0];
    let path = format!("/api/groups/{}/rooms", net.group);
    let room = owner.expect(reqwest::Method::POST, &path, Some(json!({"name": "Lecture hall", "stage": true})), 201).await?;
    let rid = room["id"].as_str().context("room id")?.to_owned();
    // Listeners are sessions of a plain member: they start in the audience.
    let http = &Http::register(&owner.origin, "listener", "listener-password").await?;
    crate::net::add_member(owner, &net.group, http.user.clone()).await?;
    let pid = net.nodes[0].pid().context("node pid")?;
    let crowd = Crowd::start()?;

    // Speakers: their sockets join first (the call moves to the SFU), then they connect.
    let mut speaker_ws = Vec::new();
    for _ in 0..p.speakers.max(1) {
        let mut ws = owner.ws().await?;
        ws.join(&net.group, &rid).await?;
        speaker_ws.push(ws);
    }
    let mut speakers = Vec::new();
    for ws in speaker_ws.iter_mut().take(p.speakers) {
        speakers.push(connect(ws, &crowd).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = net.nodes[0].rss_kib()? as f64;
    let stage = stage_check(http, &crowd, &net.group, &rid, &mut speaker_ws[0], &speakers).await?;

    let mut seats: Vec<Seat> = Vec::new();
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for &n in &p.steps {
        while seats.len() < n {
            let k = BATCH.min(n - seats.len());
            let batch = try_join_all((0..k).map(|_| sit(http, &crowd, &net.group, &rid))).await?;
            seats.extend(batch);
        }
        // Everyone connected (DTLS up), within a bound.
        let deadline = Instant::now() + Duration::from_secs(60);
        let connected = loop {
            let snap = crowd.snapshot()?;
            let up: Vec<Duration> = seats.iter().filter_map(|s| snap[s.member].connected_after).collect();
            if up.len() == seats.len() || Instant::now() > deadline {
                break up;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if connected.len() < seats.len() {
            failures.push(format!("{} of {} listeners never connected", seats.len() - connected.len(), seats.len()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = net.nodes[0].rss_kib()? as f64;

        crowd.reset()?;
        let fwd0 = forwarded(http).await?;
        let (cpu0, me0) = (cpu_secs(pid)?, cpu_secs(std::process::id())?);
        let t0 = Instant::now();
        for &s in &speakers {
            crowd.talk(s, true)?;
        }
        tokio::time::sleep(Duration::from_secs(p.secs)).await;
        for &s in &speakers {
            crowd.talk(s, false)?;
        }
        let wall = t0.elapsed().as_secs_f64();
        let (cpu1, me1) = (cpu_secs(pid)?, cpu_secs(std::process::id())?);
        tokio::time::sleep(Duration::from_millis(500)).await; // the tail arrives
        let fwd1 = forwarded(http).await?;
        let snap = crowd.snapshot()?;

        let listeners: Vec<&MemberStats> = seats.iter().map(|s| &snap[s.member]).collect();
        let (received, expected) = listeners.iter().fold((0u64, 0u64), |(r, e), l| (r + l.received, e + l.expected));
        let deaf = listeners.iter().filter(|l| speakers.iter().any(|s| l.from.get(&(*s as u32)).copied().unwrap_or(0) == 0)).count();
        let mut jitter: Vec<f64> = listeners.iter().map(|l| l.jitter_ms).collect();
        jitter.sort_by(f64::total_cmp);
        let delays: Vec<Duration> = listeners.iter().flat_map(|l| l.delays.iter().copied()).collect();
        let step = Step {
            listeners: n,
            connect: Summary::of(&connected),
            fwd_rate: (fwd1 - fwd0) / wall,
            cpu: (cpu1 - cpu0) / wall,
            rss_per_listener_kib: (rss - rss0) / n as f64,
            loss: if expected == 0 { 1.0 } else { 1.0 - (received as f64 / expected as f64).min(1.0) },
            deaf,
            jitter_p50: jitter.get(jitter.len() / 2).copied().unwrap_or(0.0),
            jitter_max: jitter.last().copied().unwrap_or(0.0),
            delay: Summary::of(&delays),
            crowd_cpu: (me1 - me0) / wall,
        };
        if step.loss > MAX_LOSS {
            failures.push(format!("{:.2}% loss at {n} listeners", step.loss * 100.0));
        }
        if deaf > 0 {
            failures.push(format!("{deaf} of {n} listeners did not hear every speaker"));
        }
        steps.push(step);
    }

    let mut table = format!(
        "{:>9} {:>10} {:>9} {:>12} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "listeners", "fwd pkt/s", "cpu cores", "cpu/1k pkt/s", "pkt/s/core", "KiB/lis.", "loss", "jit p50", "jit max", "delay p50", "delay p99", "conn p50"
    );
    for s in &steps {
        table.push_str(&s.row());
    }
    table.push_str(&format!(
        "{} speakers at 50 packets/s; times in ms; cpu/1k pkt/s is % of one core; the synthetic crowd shares the \
         machine's cores with the node (it used {:.2} cores in the last step); LiveKit's audio anchor: ~75,000 pkt/s per vCPU\n",
        p.speakers,
        steps.last().map_or(0.0, |s| s.crowd_cpu)
    ));
    table.push_str(&format!(
        "stage: an uninvited listener's {} packets reached nobody ({} refused by the SFU); invited and on stage, {} of its packets reached the others\n",
        stage.sent_before, stage.refused, stage.heard_after
    ));
    if stage.heard_before > 0 {
        failures.push(format!("an uninvited listener was heard {} times", stage.heard_before));
    }
    if stage.heard_after == 0 {
        failures.push("the invited listener was not heard".into());
    }
    let figures = json!({
        "speakers": p.speakers, "secs_per_step": p.secs, "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
        "stage": {"uninvited_sent": stage.sent_before, "uninvited_heard": stage.heard_before, "refused": stage.refused, "invited_heard": stage.heard_after},
    });
    Ok(Report { scenario: "lecture", ok: failures.is_empty(), failures, figures, table })
}

/// Packets of the node's SFU so far, by `what` (its metrics).
async fn sfu_packets(http: &Http, what: &str) -> anyhow::Result<f64> {
    let text = http.metrics().await?;
    Ok(crate::stats::metric_sum(&text, "voicechat_sfu_packets_total", &[("what", &[what])]))
}

async fn forwarded(http: &Http) -> anyhow::Result<f64> {
    sfu_packets(http, "forwarded").await
}

struct StageCheck {
    sent_before: u64,
    heard_before: u64,
    refused: f64,
    heard_after: u64,
}

/// A listener talks uninvited (heard by nobody), then is invited by the moderator's
/// socket `moderator`, accepts, and talks again (heard by the speakers). It stays a
/// listener of the lecture afterwards, back in the audience.
async fn stage_check(http: &Http, crowd: &Crowd, group: &str, room: &str, moderator: &mut Ws, speakers: &[usize]) -> anyhow::Result<StageCheck> {
    let mut ws = http.ws().await?;
    ws.join(group, room).await?;
    let me = connect(&mut ws, crowd).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = |snap: &[MemberStats]| speakers.iter().map(|s| snap[*s].from.get(&(me as u32)).copied().unwrap_or(0)).sum::<u64>();
    crowd.reset()?;
    let refused0 = sfu_packets(http, "refused").await?;
    crowd.talk(me, true)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crowd.talk(me, false)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap = crowd.snapshot()?;
    let (sent_before, heard_before) = (snap[me].sent, heard(&snap));
    let refused = sfu_packets(http, "refused").await? - refused0;

    let session = ws.session.clone();
    // Our entry, from a delta (`participant`) or a whole list (`participants`).
    let mine = |m: &Value, flag: &str| {
        let me = |p: &Value| p["session"] == session.as_str() && p["stage"][flag] == true;
        me(&m["participant"]) || m["participants"].as_array().is_some_and(|l| l.iter().any(me))
    };
    moderator.send(&json!({"type": "moderate", "action": "invite", "user": ws.user, "session": ws.session})).await?;
    ws.wait_for("an invitation", Duration::from_secs(10), |m| mine(m, "invited")).await?;
    ws.send(&json!({"type": "stage_answer", "accept": true})).await?;
    ws.wait_for("being on stage", Duration::from_secs(10), |m| mine(m, "speaker")).await?;
    crowd.reset()?;
    crowd.talk(me, true)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crowd.talk(me, false)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard_after = heard(&crowd.snapshot()?);
    ws.send(&json!({"type": "stage_leave"})).await?;
    Ok(StageCheck { sent_before, heard_before, refused, heard_after })
}
