//! `testnet`: starts N real `voicechat` processes on loopback, each with its own data dir
//! and ports, prints a table of node URLs and demo logins, and stops exactly the processes
//! it started when interrupted.
//!
//! Linking the nodes into a network and the measuring scenarios arrive with federation.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Node names, in order; beyond these, `node21`, `node22`, ….
const NAMES: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu",
    "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
];
/// Password of every demo user.
const DEMO_PASSWORD: &str = "testnet-password";

#[derive(Parser)]
#[command(name = "testnet", version, about = "Run N real VoiceChat nodes on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N nodes with demo users and wait for Ctrl-C.
    Up {
        /// How many nodes (1–20 on a small machine).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// The `voicechat` binary [default: next to this one, else target/debug/voicechat].
        #[arg(long, env = "VOICECHAT_BIN")]
        bin: Option<PathBuf>,
        /// Where the nodes' data dirs go [default: a new temporary dir].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn default_bin() -> PathBuf {
    let sibling = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("voicechat")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("target/debug/voicechat"),
    }
}

fn node_name(i: usize) -> String {
    NAMES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("node{}", i + 1))
}

/// One running node; killed when dropped.
struct Node {
    name: String,
    url: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_user(bin: &Path, dir: &Path, user: &str) -> anyhow::Result<()> {
    let mut child = Command::new(bin)
        .args(["user", "add", user, "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    writeln!(child.stdin.take().context("stdin")?, "{DEMO_PASSWORD}")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("user add {user}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn start(bin: &Path, dir: &Path, name: &str) -> anyhow::Result<Node> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--name", name, "--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let url = line.split_whitespace().find(|t| t.starts_with("http://") || t.starts_with("https://"));
            if let Some(url) = url {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let mut node = Node { name: name.to_owned(), url: String::new(), child };
    node.url = rx.recv_timeout(Duration::from_secs(30)).with_context(|| format!("{name} did not start"))?;
    Ok(node)
}

fn up(nodes: u16, bin: PathBuf, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let _tmp;
    let root = match dir {
        Some(d) => d,
        None => {
            _tmp = tempdir()?;
            _tmp.0.clone()
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    ctrlc_flag(&stop)?;
    let mut running = Vec::new();
    for i in 0..nodes as usize {
        let name = node_name(i);
        let data = root.join(&name);
        std::fs::create_dir_all(&data)?;
        let user = format!("user-{name}");
        if !data.join("db").exists() {
            add_user(&bin, &data, &user)?;
        }
        running.push((start(&bin, &data, &name)?, user));
    }
    println!("{:<10} {:<32} {:<20} password", "node", "url", "login");
    for (node, user) in &running {
        println!("{:<10} {:<32} {:<20} {DEMO_PASSWORD}", node.name, node.url, user);
    }
    println!("data in {}; Ctrl-C stops every node.", root.display());
    while !stop.load(Ordering::Relaxed) {
        for (node, _) in &mut running {
            if let Some(status) = node.child.try_wait()? {
                bail!("node {} exited: {status}", node.name);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("voicechat-testnet-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

/// Sets `flag` on SIGINT/SIGTERM.
fn ctrlc_flag(flag: &Arc<AtomicBool>) -> anyhow::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Up { nodes, bin, dir } => up(nodes, bin.unwrap_or_else(default_bin), dir),
    }
}
