//! Node processes: `voicechat user add` before start, `voicechat serve` with its own data
//! dir, ports and log file, restart on the same ports, stop (SIGTERM, then SIGKILL), and
//! the topology that decides which `--peer` flags each node gets.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Node names, in order; beyond these, `node21`, `node22`, ….
const NAMES: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu",
    "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
];
/// Password of every demo user.
pub const DEMO_PASSWORD: &str = "testnet-password";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn node_name(i: usize) -> String {
    NAMES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("node{}", i + 1))
}

/// The demo user of a node (`user-alpha`), a member of the testnet group.
pub fn demo_user(node: &str) -> String {
    format!("user-{node}")
}

/// How the nodes are linked with `--peer`, each node dialing nodes started before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Every node dials every earlier node.
    Mesh,
    /// Each node dials the previous one; the last also dials the first.
    Ring,
    /// Every node dials the first.
    Star,
    /// Each node dials up to two earlier nodes picked by a seeded generator.
    Random,
}

impl Topology {
    /// Indices of already-started nodes that node `i` of `n` dials.
    pub fn peers(self, i: usize, n: usize, seed: u64) -> Vec<usize> {
        if i == 0 {
            return Vec::new();
        }
        match self {
            Topology::Mesh => (0..i).collect(),
            Topology::Star => vec![0],
            Topology::Ring if i == n - 1 && n > 2 => vec![i - 1, 0],
            Topology::Ring => vec![i - 1],
            Topology::Random => {
                // xorshift64*, seeded per node: reproducible for a given seed.
                let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = || {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    x.wrapping_mul(0x2545_F491_4F6C_DD1D) as usize
                };
                let a = next() % i;
                let b = next() % i;
                if a == b { vec![a] } else { vec![a.min(b), a.max(b)] }
            }
        }
    }
}

/// Where a node listens; loopback unless it runs in a network namespace.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `ip netns exec NS` around the node, if any.
    pub netns: Option<String>,
    pub http_ip: String,
    pub p2p_ip: String,
}

impl Placement {
    pub fn loopback() -> Placement {
        Placement { netns: None, http_ip: "127.0.0.1".into(), p2p_ip: "127.0.0.1".into() }
    }
}

/// One node process (running or stopped) with its data dir and log.
pub struct NodeProc {
    pub index: usize,
    pub name: String,
    pub data_dir: PathBuf,
    /// stdout and stderr of every run, appended.
    pub log: PathBuf,
    /// `http://…:PORT` (no trailing slash).
    pub url: String,
    /// The multiaddr from `federates at …`, with `/p2p/<PeerId>`.
    pub p2p: String,
    placement: Placement,
    listen: String,
    p2p_listen: String,
    /// `--peer` values: full addresses to dial, and bare `/p2p/<id>` pins.
    pub peers: Vec<String>,
    /// More `serve` arguments.
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// A stopped node in `root/NAME` (created), dialing `peers` when started.
    pub fn new(root: &Path, index: usize, placement: Placement, peers: Vec<String>) -> anyhow::Result<NodeProc> {
        let name = node_name(index);
        let data_dir = root.join(&name);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        Ok(NodeProc {
            index,
            log: root.join(format!("{name}.log")),
            listen: format!("{}:0", placement.http_ip),
            p2p_listen: format!("/ip4/{}/tcp/0", placement.p2p_ip),
            name,
            data_dir,
            url: String::new(),
            p2p: String::new(),
            placement,
            peers,
            extra_args: Vec::new(),
            child: None,
        })
    }

    /// The node's PeerId, from `voicechat id` (which creates the key if there is none yet),
    /// so other nodes can pin it before it starts.
    pub fn peer_id(&self, bin: &Path) -> anyhow::Result<String> {
        let out = Command::new(bin)
            .args(["id", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            bail!("id of {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `voicechat user add USER` (the node must be stopped; sled locks the data dir).
    pub fn add_user(&self, bin: &Path, user: &str, password: &str) -> anyhow::Result<()> {
        let mut child = Command::new(bin)
            .args(["user", "add", user, "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        writeln!(child.stdin.take().context("stdin")?, "{password}")?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("user add {user} on {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Whether `user add` has run here before (a reused `--dir`).
    pub fn has_db(&self) -> bool {
        self.data_dir.join("db").exists()
    }

    /// Starts `voicechat serve` and waits for its URL and `federates at` lines; later
    /// starts reuse the first run's ports.
    pub async fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.name);
        }
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let offset = log.metadata()?.len();
        writeln!(log, "--- testnet: starting {} ---", self.name)?;
        let mut cmd = match &self.placement.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // TURN and the SFU on free ports: a restart reuses the web port, and the standard
        // ports would be taken by the first node on this address.
        let turn_listen = format!("{}:0", self.placement.http_ip);
        cmd.args(["serve", "--listen", &self.listen, "--name", &self.name, "--p2p-listen", &self.p2p_listen])
            .args(["--turn-listen", &turn_listen, "--sfu-listen", &turn_listen])
            .arg("--data-dir")
            .arg(&self.data_dir);
        for p in &self.peers {
            cmd.args(["--peer", p]);
        }
        // A testnet signs up all its users from one address (the node allows 10 an hour).
        cmd.args(["--registrations-per-hour", "100000"]);
        cmd.args(&self.extra_args);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C reaches only the testnet, which
            // then stops its nodes on purpose (and detached nodes survive the shell).
            .process_group(0);
        self.child = Some(cmd.spawn().with_context(|| format!("cannot run {}", bin.display()))?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
            let (url, p2p) = parse_start_lines(&text);
            if let (Some(url), Some(p2p)) = (url, p2p) {
                self.url = url;
                self.p2p = p2p;
                break;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("node {} exited at start ({st}); log {}:\n{}", self.name, self.log.display(), tail(&text, 20));
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("node {} did not print its URL and p2p address within 30 s; log:\n{}", self.name, tail(&text, 20));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // Pin the ports so a restart keeps the URL and the multiaddr peers dial.
        let http_port = self.url.rsplit(':').next().context("url without port")?;
        self.listen = format!("{}:{http_port}", self.placement.http_ip);
        self.p2p_listen = format!("/ip4/{}/tcp/{}", self.placement.p2p_ip, self.p2p_port()?);
        Ok(())
    }

    pub fn p2p_port(&self) -> anyhow::Result<u16> {
        let parts: Vec<&str> = self.p2p.split('/').collect();
        let i = parts.iter().position(|p| *p == "tcp").with_context(|| format!("no /tcp/ in {}", self.p2p))?;
        Ok(parts.get(i + 1).context("no port")?.parse()?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL and reap: no graceful shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to 15 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Leaves the process running when this value is dropped (`up --detach`).
    pub fn detach(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    /// Resident memory of the node process in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("node not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }

    /// CPU seconds (user + system) the node process used so far.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        cpu_secs(self.pid().context("node not running")?)
    }

    /// The last lines of this node's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()), lines)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The URL and p2p multiaddr from `serve`'s start lines, once both are there.
fn parse_start_lines(text: &str) -> (Option<String>, Option<String>) {
    let clean = |t: &str| t.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
    let mut url = None;
    let mut p2p = None;
    for line in text.lines() {
        if line.contains("is listening on") {
            url = line.split_whitespace().find(|t| t.starts_with("http://") || t.starts_with("https://")).map(clean);
        }
        if line.contains("federates at") {
            p2p = line.split_whitespace().find(|t| t.starts_with("/ip4/") || t.starts_with("/ip6/")).map(clean);
        }
    }
    (url, p2p)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU seconds (user + system) the process has used.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ is 100 on Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_dial_only_earlier_nodes() {
        for t in [Topology::Mesh, Topology::Ring, Topology::Star, Topology::Random] {
            for n in 1..=20 {
                for i in 0..n {
                    let p = t.peers(i, n, 7);
                    assert!(p.iter().all(|&j| j < i), "{t:?} {i}/{n}: {p:?}");
                    assert_eq!(p.is_empty(), i == 0, "{t:?} {i}/{n}: every later node dials someone");
                }
            }
        }
        assert_eq!(Topology::Ring.peers(3, 4, 0), vec![2, 0]);
        assert_eq!(Topology::Mesh.peers(2, 4, 0), vec![0, 1]);
    }

    #[test]
    fn start_lines_are_parsed() {
        let t = "VoiceChat node \"alpha\" is listening on http://localhost:4100/\n\
                 VoiceChat node \"alpha\" federates at /ip4/127.0.0.1/tcp/4101/p2p/12D3KooWabc\n";
        let (u, p) = parse_start_lines(t);
        assert_eq!(u.as_deref(), Some("http://localhost:4100"));
        assert_eq!(p.as_deref(), Some("/ip4/127.0.0.1/tcp/4101/p2p/12D3KooWabc"));
    }
}
