//! Synthetic WebRTC participants for load: each has joined a room through the real API and
//! socket (the scenario does that), then connects to the node's SFU with str0m, the node's
//! own WebRTC crate, from a UDP socket of its own. Speakers send an Opus-sized packet every
//! 20 ms with an audio level; everyone counts what arrives, per sender.
//!
//! One thread drives the whole crowd (mio over every socket, str0m timers), so hundreds of
//! listeners cost the machine little next to the node they load. A payload carries its
//! send time and sender, so a listener knows the one-way delay and who it heard.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Bytes of a synthetic audio payload (Opus at ~32 kbit/s is 80 bytes per 20 ms).
const PAYLOAD: usize = 80;
const FRAME: Duration = Duration::from_millis(20);
const WAKER: Token = Token(usize::MAX);
/// Arrival delays kept per listener (enough for percentiles; bounded memory).
const MAX_DELAYS: usize = 4096;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn dtls_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags().install_process_default();
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().expect("a DTLS certificate")
    })
    .clone()
}

/// A participant whose offer is out and whose answer is awaited.
pub struct Joining {
    rtc: Rtc,
    sock: StdUdp,
    local: SocketAddr,
    pending: SdpPendingOffer,
    publish: Option<Mid>,
}

impl Joining {
    /// A participant on `bind` (an IP on loopback or in a namespace) that publishes (one
    /// sendonly m-line first, as the page does) and listens on `slots` recvonly m-lines.
    /// Returns it and its SDP offer.
    pub fn new(bind: std::net::IpAddr, slots: usize) -> anyhow::Result<(Joining, String)> {
        let sock = StdUdp::bind(SocketAddr::new(bind, 0))?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).set_dtls_cert(dtls_cert()).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut api = rtc.sdp_api();
        let publish = Some(api.add_media(MediaKind::Audio, Direction::SendOnly, Some("mic".into()), Some("mic".into()), None));
        for _ in 0..slots {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().context("an offer")?;
        Ok((Joining { rtc, sock, local, pending, publish }, offer.to_sdp_string()))
    }
}

/// What one participant saw.
#[derive(Debug, Clone, Default)]
pub struct MemberStats {
    /// When DTLS came up, after it was added.
    pub connected_after: Option<Duration>,
    /// Packets received, per sending member.
    pub from: HashMap<u32, u64>,
    /// Packets received in all.
    pub received: u64,
    /// Packets the sequence numbers say were sent to it (first to last, per stream).
    pub expected: u64,
    /// RFC 3550 interarrival jitter, the largest of its streams, in ms.
    pub jitter_ms: f64,
    /// One-way delays of packets from synthetic speakers (a sample).
    pub delays: Vec<Duration>,
    /// Packets this member sent.
    pub sent: u64,
    /// Streams (one per slot carrying someone) it received packets on.
    pub streams: usize,
    /// Its ICE state last reported, and the error that ended it if any: why it never connected.
    pub ice: String,
    pub error: Option<String>,
    /// The longest time without a packet from a synthetic speaker since the figures were
    /// zeroed (or it was added), up to the snapshot: how long its audio stopped; and when
    /// that silence ended (`None`: it still lasts).
    pub longest_silence: Duration,
    pub silence_ended: Option<Instant>,
    /// The longest pause between two of its own packets (a speaker): 20 ms, unless this
    /// thread fell behind, which its listeners hear as silence too.
    pub longest_send_gap: Duration,
}

impl MemberStats {
    /// Lost packets as a fraction of those sent to it.
    pub fn loss(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { 1.0 - (self.received as f64 / self.expected as f64).min(1.0) }
    }
}

#[derive(Default)]
struct Stream {
    first: u64,
    last: u64,
    jitter: f64,
    prev: Option<(Instant, u32)>,
}

struct Member {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    publish: Option<Mid>,
    pt: Option<Pt>,
    talking: bool,
    seq: u64,
    added: Instant,
    /// When it last heard a synthetic speaker (or its figures were zeroed).
    heard_at: Instant,
    /// When it last sent.
    sent_at: Option<Instant>,
    timeout: Instant,
    streams: HashMap<u32, Stream>,
    stats: MemberStats,
}

enum Cmd {
    Add(Box<Joining>, String, Sender<anyhow::Result<usize>>),
    Talk(usize, bool),
    Snapshot(Sender<Vec<MemberStats>>),
    Reset,
    Stop,
}

/// The crowd's thread, behind a handle.
pub struct Crowd {
    cmd: Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Crowd {
    pub fn start() -> anyhow::Result<Crowd> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let _ = epoch();
        let thread = std::thread::Builder::new().name("rtc-crowd".into()).spawn(move || run(poll, rx))?;
        Ok(Crowd { cmd: tx, waker, thread: Some(thread) })
    }

    fn send(&self, c: Cmd) -> anyhow::Result<()> {
        self.cmd.send(c).map_err(|_| anyhow!("the crowd thread stopped"))?;
        self.waker.wake()?;
        Ok(())
    }

    /// Completes `j` with the node's answer; returns its member number.
    pub fn add(&self, j: Joining, answer: String) -> anyhow::Result<usize> {
        let (tx, rx) = channel();
        self.send(Cmd::Add(Box::new(j), answer, tx))?;
        rx.recv().map_err(|_| anyhow!("the crowd thread stopped"))?
    }

    /// Member `who` starts or stops sending.
    pub fn talk(&self, who: usize, on: bool) -> anyhow::Result<()> {
        self.send(Cmd::Talk(who, on))
    }

    /// Everyone's figures now, by member number.
    pub fn snapshot(&self) -> anyhow::Result<Vec<MemberStats>> {
        let (tx, rx) = channel();
        self.send(Cmd::Snapshot(tx))?;
        rx.recv().map_err(|_| anyhow!("the crowd thread stopped"))
    }

    /// Zeroes the figures (a measurement starts).
    pub fn reset(&self) -> anyhow::Result<()> {
        self.send(Cmd::Reset)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let _ = self.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut poll: Poll, rx: Receiver<Cmd>) {
    let mut members: Vec<Member> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 2048];
    let mut next_send = Instant::now() + FRAME;
    loop {
        while let Ok(c) = rx.try_recv() {
            match c {
                Cmd::Add(j, answer, reply) => {
                    let _ = reply.send(add(&mut poll, &mut members, *j, &answer));
                }
                Cmd::Talk(who, on) => {
                    if let Some(m) = members.get_mut(who) {
                        m.talking = on;
                        m.sent_at = None;
                    }
                }
                Cmd::Snapshot(reply) => {
                    let _ = reply.send(members.iter().map(snapshot).collect());
                }
                Cmd::Reset => {
                    for m in &mut members {
                        m.stats = MemberStats {
                            connected_after: m.stats.connected_after,
                            ice: std::mem::take(&mut m.stats.ice),
                            error: m.stats.error.take(),
                            ..Default::default()
                        };
                        m.streams.clear();
                        m.heard_at = Instant::now();
                    }
                }
                Cmd::Stop => return,
            }
        }
        let now = Instant::now();
        if now >= next_send {
            for (i, m) in members.iter_mut().enumerate() {
                if m.talking {
                    speak(m, i as u32, now);
                }
            }
            next_send += FRAME;
            if next_send < now {
                next_send = now + FRAME; // we fell behind: skip, do not burst
            }
        }
        let mut wake = next_send;
        for m in members.iter_mut() {
            if m.timeout <= now {
                let _ = m.rtc.handle_input(Input::Timeout(now));
                drain(m);
            }
            wake = wake.min(m.timeout);
        }
        if poll.poll(&mut events, Some(wake.saturating_duration_since(Instant::now()))).is_err() {
            continue;
        }
        for ev in events.iter() {
            let Some(m) = members.get_mut(ev.token().0) else { continue };
            while let Ok((n, source)) = m.sock.recv_from(&mut buf) {
                let Ok(contents) = (&buf[..n]).try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: m.local, contents });
                let _ = m.rtc.handle_input(input);
                drain(m);
            }
        }
    }
}

fn add(poll: &mut Poll, members: &mut Vec<Member>, j: Joining, answer: &str) -> anyhow::Result<usize> {
    let Joining { mut rtc, sock, local, pending, publish } = j;
    let answer = SdpAnswer::from_sdp_string(answer).context("the node's answer is not SDP")?;
    rtc.sdp_api().accept_answer(pending, answer).context("the node's answer")?;
    let pt = rtc.codec_config().find(|c| c.spec().codec == Codec::Opus).map(|c| c.pt());
    let i = members.len();
    let mut sock = UdpSocket::from_std(sock);
    poll.registry().register(&mut sock, Token(i), Interest::READABLE)?;
    let now = Instant::now();
    let mut m = Member {
        rtc,
        sock,
        local,
        publish,
        pt,
        talking: false,
        seq: 1,
        added: now,
        heard_at: now,
        sent_at: None,
        timeout: now,
        streams: HashMap::new(),
        stats: MemberStats::default(),
    };
    drain(&mut m);
    members.push(m);
    Ok(i)
}

fn speak(m: &mut Member, me: u32, now: Instant) {
    let (Some(mid), Some(pt)) = (m.publish, m.pt) else { return };
    let mut payload = [0x55u8; PAYLOAD];
    payload[..8].copy_from_slice(&(now.duration_since(epoch()).as_nanos() as u64).to_be_bytes());
    payload[8..12].copy_from_slice(&me.to_be_bytes());
    let ext = ExtensionValues { audio_level: Some(-20 - (me % 40) as i8), voice_activity: Some(true), ..Default::default() };
    let write = RtpWrite::new(pt, SeqNo::from(m.seq), (m.seq as u32).wrapping_mul(960), now, payload.to_vec()).ext_vals(ext);
    if let Some(tx) = m.rtc.direct_api().stream_tx_by_mid(mid, None) {
        tx.write_rtp(write);
        m.seq += 1;
        m.stats.sent += 1;
        if let Some(prev) = m.sent_at {
            m.stats.longest_send_gap = m.stats.longest_send_gap.max(now.duration_since(prev));
        }
        m.sent_at = Some(now);
    }
    drain(m);
}

fn drain(m: &mut Member) {
    loop {
        match m.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                m.timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                let _ = m.sock.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::Connected)) => m.stats.connected_after = Some(m.added.elapsed()),
            Ok(Output::Event(Event::IceConnectionStateChange(s))) => m.stats.ice = format!("{s:?}"),
            Ok(Output::Event(Event::RtpPacket(p))) => {
                let now = Instant::now();
                m.stats.received += 1;
                let st = m.streams.entry(*p.header.ssrc).or_insert_with(|| Stream { first: *p.seq_no, ..Default::default() });
                st.last = st.last.max(*p.seq_no);
                st.first = st.first.min(*p.seq_no);
                if let Some((at, ts)) = st.prev {
                    // RFC 3550 6.4.1, in 48 kHz units.
                    let arrival = now.duration_since(at).as_secs_f64() * 48_000.0;
                    let d = (arrival - f64::from(p.header.timestamp.wrapping_sub(ts) as i32)).abs();
                    st.jitter += (d - st.jitter) / 16.0;
                }
                st.prev = Some((now, p.header.timestamp));
                if p.payload.len() == PAYLOAD && p.payload[PAYLOAD - 1] == 0x55 {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap_or_default());
                    let from = u32::from_be_bytes(p.payload[8..12].try_into().unwrap_or_default());
                    *m.stats.from.entry(from).or_default() += 1;
                    let silence = now.duration_since(m.heard_at);
                    if silence > m.stats.longest_silence {
                        m.stats.longest_silence = silence;
                        m.stats.silence_ended = Some(now);
                    }
                    m.heard_at = now;
                    if m.stats.delays.len() < MAX_DELAYS {
                        m.stats.delays.push(now.duration_since(epoch()).saturating_sub(Duration::from_nanos(sent)));
                    }
                } else {
                    // A browser's real Opus: counted under "anyone else".
                    *m.stats.from.entry(u32::MAX).or_default() += 1;
                }
            }
            Ok(Output::Event(_)) => {}
            Err(e) => {
                m.stats.error = Some(e.to_string());
                m.timeout = Instant::now() + Duration::from_secs(3600);
                return;
            }
        }
    }
}

fn snapshot(m: &Member) -> MemberStats {
    let mut s = m.stats.clone();
    s.expected = m.streams.values().map(|st| st.last - st.first + 1).sum();
    s.jitter_ms = m.streams.values().map(|st| st.jitter / 48.0).fold(0.0, f64::max);
    s.streams = m.streams.len();
    if m.heard_at.elapsed() > s.longest_silence {
        s.longest_silence = m.heard_at.elapsed();
        s.silence_ended = None;
    }
    s
}

/// What `testnet crowd` does.
pub struct CrowdRun {
    pub url: String,
    pub user: String,
    pub password: String,
    pub group: String,
    pub room: String,
    pub listeners: usize,
    pub speakers: usize,
    pub secs: u64,
}

/// Joins `listeners` sessions to the room and its SFU, listens (the first `speakers` also
/// send) for `secs`, and returns what each heard as JSON: per listener the packets,
/// streams, loss and jitter, and the totals.
pub async fn crowd_run(p: &CrowdRun) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    crate::raise_nofile(p.listeners as u64 * 3 + 256)?;
    let http = crate::client::Http::login(&p.url, &p.user, &p.password).await?;
    let crowd = Crowd::start()?;
    // Our sockets on the address we reach the node at (loopback in tests).
    let host = reqwest::Url::parse(&p.url)?.host_str().unwrap_or("127.0.0.1").trim_matches(['[', ']']).to_owned();
    let bind: std::net::IpAddr = host.parse().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let mut seats = Vec::new();
    for chunk in (0..p.listeners).collect::<Vec<_>>().chunks(20) {
        let joined = futures_util::future::try_join_all(chunk.iter().map(|_| async {
            let mut ws = http.ws().await?;
            ws.join(&p.group, &p.room).await?;
            let (joining, offer) = Joining::new(bind, 3)?;
            ws.send(&json!({"type": "sfu_offer", "sdp": offer})).await?;
            let e = ws
                .wait_for("sfu_answer", Duration::from_secs(20), |m| m["type"] == "sfu_answer" || (m["type"] == "error" && m["in_reply_to"] == "sfu_offer"))
                .await?;
            let answer = e.msg["sdp"].as_str().with_context(|| format!("no answer: {}", e.msg))?.to_owned();
            anyhow::Ok((ws, answer, joining))
        }))
        .await?;
        for (ws, answer, joining) in joined {
            seats.push((ws, crowd.add(joining, answer)?));
        }
    }
    crowd.reset()?;
    for (_, m) in seats.iter().take(p.speakers) {
        crowd.talk(*m, true)?;
    }
    tokio::time::sleep(Duration::from_secs(p.secs)).await;
    for (_, m) in seats.iter().take(p.speakers) {
        crowd.talk(*m, false)?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap = crowd.snapshot()?;
    let each: Vec<serde_json::Value> = seats
        .iter()
        .map(|(_, m)| {
            let s = &snap[*m];
            json!({"connected": s.connected_after.is_some(), "ice": s.ice, "error": s.error, "received": s.received, "expected": s.expected,
                   "streams": s.streams, "loss": s.loss(), "jitter_ms": s.jitter_ms, "sent": s.sent})
        })
        .collect();
    let (received, expected) = seats.iter().fold((0, 0), |(r, e), (_, m)| (r + snap[*m].received, e + snap[*m].expected));
    // Leave with a goodbye: dropped sockets would stay in the call for the resume grace.
    let listeners = seats.len();
    futures_util::future::join_all(seats.into_iter().map(|(ws, _)| ws.close())).await;
    Ok(json!({
        "listeners": listeners,
        "connected": each.iter().filter(|e| e["connected"] == true).count(),
        "received": received, "expected": expected,
        "loss": if expected == 0 { 1.0 } else { 1.0 - received as f64 / expected as f64 },
        "min_streams": snap.iter().map(|s| s.streams).min().unwrap_or(0),
        "each": each,
    }))
}
