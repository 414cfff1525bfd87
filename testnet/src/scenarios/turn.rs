//! TURN: relayed audio through the node's own TURN server and through coturn, side by side
//! on the same machine in the same run.
//!
//! Each synthetic client allocates a relay (UDP), binds a channel to an echo peer, and sends
//! a 20 ms Opus-sized packet (172 bytes: RTP header and 160 bytes) every 20 ms; the peer
//! echoes it, so every client is two relayed audio streams (one each way). Steps of rising
//! client counts measure, per server: its CPU (user + system time of the process over the
//! step), loss, and the latency the relay adds (round trip through the relay minus the
//! round trip straight to the echo peer, halved: one traversal). Streams per core is the
//! streams relayed divided by the cores the server used.
//!
//! The node's credentials come from `/api/ice` as a browser's do; loopback peers are
//! allowed on both servers (`--turn-allow-peer 127.0.0.1`, coturn's
//! `--allow-loopback-peers`) since the echo peer is on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use turn::proto::channum::ChannelNumber;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;

use super::Report;
use crate::nodes::cpu_secs;
use crate::stats::Summary;
use crate::{Options, Testnet};

/// Bytes of one packet: a 12-byte RTP header and 160 bytes of Opus (64 kbit/s, 20 ms).
const PACKET: usize = 172;
/// One packet per 20 ms.
const INTERVAL: Duration = Duration::from_millis(20);
/// Packets in flight before a step's measurement starts.
const WARMUP: Duration = Duration::from_secs(1);
/// How long a late echo is waited for after a step.
const DRAIN: Duration = Duration::from_millis(500);
const CHANNEL: u16 = 0x4000;

#[derive(Clone, Debug)]
pub struct Params {
    /// Client counts, one step each (each client is two relayed streams).
    pub steps: Vec<usize>,
    /// Measured seconds per step.
    pub secs: u64,
    /// The coturn binary (`turnserver`); left out or missing: the node alone.
    pub coturn: Option<PathBuf>,
}

impl Default for Params {
    fn default() -> Self {
        Params { steps: vec![50, 100, 200, 400], secs: 5, coturn: Some("turnserver".into()) }
    }
}

/// Where a server is and how to log in to it.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    user: String,
    pass: String,
    pid: u32,
}

/// One step's figures.
struct Step {
    clients: usize,
    cpu: f64,
    sent: u64,
    received: u64,
    relayed: Vec<Duration>,
    direct: Vec<Duration>,
}

impl Step {
    fn streams(&self) -> usize {
        self.clients * 2
    }
    fn loss(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { 1.0 - self.received as f64 / self.sent as f64 }
    }
    /// Added latency of one relay traversal: half the extra round trip, per percentile.
    fn added(&self) -> (f64, f64) {
        let (r, d) = (Summary::of(&self.relayed), Summary::of(&self.direct));
        (((r.p50 - d.p50) / 2.0).max(0.0), ((r.p99 - d.p99) / 2.0).max(0.0))
    }
    fn per_core(&self) -> f64 {
        if self.cpu <= 0.0 { 0.0 } else { self.streams() as f64 / self.cpu }
    }
    fn json(&self) -> Value {
        let (a50, a99) = self.added();
        json!({
            "clients": self.clients, "streams": self.streams(), "server_cpu_cores": r3(self.cpu),
            "streams_per_core": self.per_core().round(), "loss": r3(self.loss()),
            "added_latency_p50_ms": r3(a50), "added_latency_p99_ms": r3(a99),
            "relayed_rtt": Summary::of(&self.relayed).json(), "direct_rtt": Summary::of(&self.direct).json(),
        })
    }
    fn row(&self, server: &str) -> String {
        let (a50, a99) = self.added();
        format!(
            "{server:<10} {:>7} {:>7} {:>9.2} {:>9.0} {:>7.2}% {:>10.3} {:>10.3}\n",
            self.clients,
            self.streams(),
            self.cpu,
            self.per_core(),
            self.loss() * 100.0,
            a50,
            a99
        )
    }
}

fn r3(x: f64) -> f64 {
    crate::stats::r3(x)
}

pub async fn run(opts: &Options, p: &Params) -> anyhow::Result<Report> {
    let max_clients = p.steps.iter().copied().max().unwrap_or(0);
    crate::raise_nofile((max_clients as u64) * 2 + 1024)?;
    let mut opts = opts.clone();
    opts.nodes = 1;
    let conf = std::env::temp_dir().join(format!("voicechat-turn-bench-{}.toml", std::process::id()));
    // One user's credentials for every synthetic client: the quota and cap are per user.
    std::fs::write(&conf, "[turn]\nmax_allocations_per_user = 100000\nuser_bytes_per_sec = 1000000000\n")?;
    opts.node_args = vec!["--turn-allow-peer".into(), "127.0.0.1/32".into(), "--config".into(), conf.display().to_string()];
    let net = Testnet::start(&opts).await?;
    let _ = std::fs::remove_file(&conf);
    let rid = net.create_room("turn").await?;
    let ice = net.clients[0].expect(reqwest::Method::GET, &format!("/api/ice?group={}&room={rid}", net.group), None, 200).await?;
    let entry = ice["ice_servers"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["username"].is_string()))
        .context("no TURN credentials in /api/ice (is TURN on?)")?;
    let url = entry["urls"][0].as_str().context("turn url")?;
    let addr: SocketAddr = url.trim_start_matches("turn:").split('?').next().unwrap_or("").parse().context("turn url")?;
    let node = Server {
        name: "voicechat",
        addr,
        user: entry["username"].as_str().unwrap_or("").into(),
        pass: entry["credential"].as_str().unwrap_or("").into(),
        pid: net.nodes[0].pid().context("node pid")?,
    };

    let mut failures = Vec::new();
    let mut table = format!(
        "{:<10} {:>7} {:>7} {:>9} {:>9} {:>8} {:>10} {:>10}\n",
        "server", "clients", "streams", "cpu cores", "str/core", "loss", "add p50 ms", "add p99 ms"
    );
    let mut figures = json!({"packet_bytes": PACKET, "interval_ms": 20, "secs_per_step": p.secs});
    let mut results = Vec::new();
    results.push((node.name, bench(&node, p).await?));
    let coturn = match &p.coturn {
        Some(bin) if which(bin) => Some(Coturn::start(bin, &net.root)?),
        Some(bin) => {
            table.push_str(&format!("(coturn not run: {} not found; apt-get install coturn)\n", bin.display()));
            None
        }
        None => None,
    };
    if let Some(c) = &coturn {
        let server = Server { name: "coturn", addr: c.addr, user: "bench".into(), pass: "bench-password".into(), pid: c.child.id() };
        results.push((server.name, bench(&server, p).await?));
    }
    drop(coturn);
    for (name, steps) in &results {
        for s in steps {
            table.push_str(&s.row(name));
            // The node's relay must not lose audio at these loads; coturn is the yardstick.
            if *name == node.name && s.loss() > 0.01 {
                failures.push(format!("{name}: {:.2}% loss at {} clients", s.loss() * 100.0, s.clients));
            }
        }
        figures[*name] = steps.iter().map(Step::json).collect::<Vec<_>>().into();
    }
    table.push_str(
        "a client is two relayed streams (it sends, the peer echoes); added latency is per traversal; \
         the synthetic clients share the machine's cores with the server\n",
    );
    Ok(Report { scenario: "turn", ok: failures.is_empty(), failures, figures, table })
}

fn which(bin: &Path) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {}", bin.display())).output().is_ok_and(|o| o.status.success())
}

/// coturn on loopback with one static user, stopped on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
}

impl Coturn {
    fn start(bin: &Path, dir: &Path) -> anyhow::Result<Coturn> {
        let port = free_udp_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let d = dir.join("coturn");
        std::fs::create_dir_all(&d)?;
        let conf = d.join("turnserver.conf");
        std::fs::write(&conf, "")?;
        let log = std::fs::File::create(d.join("coturn.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .args(["-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", &port.to_string()])
            .args(["--min-port", "40000", "--max-port", "44999", "--realm", "bench", "--lt-cred-mech"])
            .args(["--user", "bench:bench-password", "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli"])
            .args(["--total-quota", "0", "--user-quota", "0", "--simple-log", "--log-file", "stdout"])
            .arg("--userdb")
            .arg(d.join("turndb"))
            .arg("--pidfile")
            .arg(d.join("turnserver.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let c = Coturn { child, addr };
        std::thread::sleep(Duration::from_millis(1500));
        Ok(c)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Runs every step against one server.
async fn bench(server: &Server, p: &Params) -> anyhow::Result<Vec<Step>> {
    let echo = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let echo_addr = echo.local_addr()?;
    let echo_task = tokio::spawn({
        let echo = echo.clone();
        async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        }
    });
    let mut clients: Vec<Relayed> = Vec::new();
    let mut steps = Vec::new();
    for &n in &p.steps {
        while clients.len() < n {
            let c = Relayed::open(server, echo_addr).await.with_context(|| format!("{}: allocation {}", server.name, clients.len() + 1))?;
            clients.push(c);
        }
        steps.push(step(server, &clients[..n], echo_addr, Duration::from_secs(p.secs)).await?);
    }
    echo_task.abort();
    Ok(steps)
}

/// One client's relay: its socket, with a channel bound to the echo peer.
struct Relayed {
    sock: Arc<UdpSocket>,
    server: SocketAddr,
}

impl Relayed {
    /// Allocate (answering the 401 challenge), then bind a channel to `peer`.
    async fn open(s: &Server, peer: SocketAddr) -> anyhow::Result<Relayed> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let first = request(&sock, s.addr, METHOD_ALLOCATE, vec![Box::new(RequestedTransport { protocol: turn::proto::PROTO_UDP })]).await?;
        let nonce = TextAttribute::get_from_as(&first, ATTR_NONCE).context("no nonce in the challenge")?;
        let realm = TextAttribute::get_from_as(&first, ATTR_REALM).context("no realm in the challenge")?;
        let key = MessageIntegrity::new_long_term_integrity(s.user.clone(), realm.text.clone(), s.pass.clone());
        let auth = |mut attrs: Vec<Box<dyn Setter>>| {
            attrs.push(Box::new(TextAttribute::new(ATTR_USERNAME, s.user.clone())));
            attrs.push(Box::new(realm.clone()));
            attrs.push(Box::new(nonce.clone()));
            attrs.push(Box::new(key.clone()));
            attrs
        };
        let res = request(&sock, s.addr, METHOD_ALLOCATE, auth(vec![Box::new(RequestedTransport { protocol: turn::proto::PROTO_UDP })])).await?;
        expect_success(&res, "Allocate")?;
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&res)?;
        let bind = auth(vec![
            Box::new(ChannelNumber(CHANNEL)),
            Box::new(PeerAddress { ip: peer.ip(), port: peer.port() }),
        ]);
        let res = request(&sock, s.addr, METHOD_CHANNEL_BIND, bind).await?;
        expect_success(&res, "ChannelBind")?;
        Ok(Relayed { sock: Arc::new(sock), server: s.addr })
    }
}

fn expect_success(m: &Message, what: &str) -> anyhow::Result<()> {
    if m.typ.class == CLASS_SUCCESS_RESPONSE {
        return Ok(());
    }
    let mut code = ErrorCodeAttribute::default();
    let _ = code.get_from(m);
    bail!("{what} refused: {} {}", code.code.0, String::from_utf8_lossy(&code.reason))
}

/// Sends a request and waits for its answer (retrying twice).
async fn request(sock: &UdpSocket, to: SocketAddr, method: stun::message::Method, attrs: Vec<Box<dyn Setter>>) -> anyhow::Result<Message> {
    let mut all: Vec<Box<dyn Setter>> = vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
    all.extend(attrs);
    let mut m = Message::new();
    m.build(&all)?;
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&m.raw, to).await?;
        let Ok(r) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await else { continue };
        let (n, _) = r?;
        let mut res = Message::new();
        res.unmarshal_binary(&buf[..n])?;
        if res.transaction_id == m.transaction_id {
            return Ok(res);
        }
    }
    bail!("no answer from {to}")
}

/// A packet: a step tag, the send time (ns since `base`), filler to [`PACKET`].
fn packet(step: u32, base: Instant) -> Vec<u8> {
    let mut v = vec![0u8; PACKET];
    v[..4].copy_from_slice(&step.to_be_bytes());
    v[4..12].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    v
}

fn sent_at(p: &[u8], step: u32, base: Instant) -> Option<Duration> {
    if p.len() < 12 || p[..4] != step.to_be_bytes() {
        return None;
    }
    let ns = u64::from_be_bytes(p[4..12].try_into().ok()?);
    base.elapsed().checked_sub(Duration::from_nanos(ns))
}

static STEP: AtomicU64 = AtomicU64::new(1);

/// Every client sends for `secs` (after a warm-up); a tenth of them also ping the echo
/// peer directly, for the baseline.
async fn step(server: &Server, clients: &[Relayed], echo: SocketAddr, secs: Duration) -> anyhow::Result<Step> {
    let tag = STEP.fetch_add(1, Ordering::Relaxed) as u32;
    let base = Instant::now();
    let start_at = base + WARMUP;
    let stop_at = start_at + secs;
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (sock, to) = (c.sock.clone(), c.server);
        let direct = i % 10 == 0;
        tasks.push(tokio::spawn(async move {
            // Spread the clients over the 20 ms so the server sees a steady flow.
            let offset = INTERVAL * (i as u32 % 20) / 20;
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut buf = [0u8; 1500];
            let (mut sent, mut received, mut relayed, mut straight) = (0u64, 0u64, Vec::new(), Vec::new());
            let direct_sock = if direct { UdpSocket::bind("127.0.0.1:0").await.ok() } else { None };
            let mut dbuf = [0u8; 1500];
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = Instant::now();
                        if now >= stop_at + DRAIN { break; }
                        if now >= stop_at { continue; }
                        let mut frame = vec![(CHANNEL >> 8) as u8, CHANNEL as u8, (PACKET >> 8) as u8, PACKET as u8];
                        frame.extend_from_slice(&packet(tag, base));
                        let measured = now >= start_at;
                        if sock.send_to(&frame, to).await.is_ok() && measured { sent += 1; }
                        if let Some(d) = &direct_sock && measured {
                            let _ = d.send_to(&packet(tag, base), echo).await;
                        }
                    }
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, _)) = r else { break };
                        // ChannelData: 4 bytes of header, then the echoed packet.
                        if n >= 4 && buf[0] & 0xc0 == 0x40 && let Some(rtt) = sent_at(&buf[4..n], tag, base) {
                            let sent_ns = base.elapsed().saturating_sub(rtt);
                            if sent_ns >= start_at - base && sent_ns < stop_at - base {
                                received += 1;
                                relayed.push(rtt);
                            }
                        }
                    }
                    r = async { match &direct_sock { Some(d) => d.recv_from(&mut dbuf).await, None => std::future::pending().await } } => {
                        if let Ok((n, _)) = r && let Some(rtt) = sent_at(&dbuf[..n], tag, base) {
                            straight.push(rtt);
                        }
                    }
                }
            }
            (sent, received, relayed, straight)
        }));
    }
    // Server CPU over the measured window only.
    tokio::time::sleep_until(start_at.into()).await;
    let cpu0 = cpu_secs(server.pid)?;
    tokio::time::sleep_until(stop_at.into()).await;
    let cpu = (cpu_secs(server.pid)? - cpu0) / secs.as_secs_f64();
    let mut s = Step { clients: clients.len(), cpu, sent: 0, received: 0, relayed: Vec::new(), direct: Vec::new() };
    for t in tasks {
        let (sent, received, relayed, direct) = t.await?;
        s.sent += sent;
        s.received += received;
        s.relayed.extend(relayed);
        s.direct.extend(direct);
    }
    Ok(s)
}
