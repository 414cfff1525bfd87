//! `testnet`: starts N real `voicechat` processes linked into a federation (`up`/`down`),
//! and runs measuring scenarios against fresh networks (`scenario NAME`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use voicechat_testnet::nodes::{DEMO_PASSWORD, demo_user};
use voicechat_testnet::scenarios::{self, Report};
use voicechat_testnet::{Options, Testnet, Topology, raise_nofile};

/// The state file `up --detach` writes in DIR and `down` reads.
const STATE_FILE: &str = "testnet-state.json";

#[derive(Parser)]
#[command(name = "testnet", version, about = "Run N real VoiceChat nodes on loopback and measure them")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct NetArgs {
    /// How many nodes (1–20).
    #[arg(long, global = true, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// How nodes dial each other with `--peer` (each dials nodes started before it).
    #[arg(long, global = true, value_enum, default_value_t = Topology::Mesh)]
    topology: Topology,
    /// Seed for `--topology random`.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// The `voicechat` binary [default: next to this one, else target/debug/voicechat].
    #[arg(long, global = true, env = "VOICECHAT_BIN")]
    bin: Option<PathBuf>,
    /// Where the nodes' data dirs and logs go [default: a new temporary dir, removed at the end].
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N linked nodes with demo users and a shared group; wait for Ctrl-C.
    Up {
        #[command(flatten)]
        net: NetArgs,
        /// Leave the nodes running and return; `testnet down --dir DIR` stops them.
        #[arg(long, requires = "dir")]
        detach: bool,
    },
    /// Stop the nodes a `up --detach` started in DIR.
    Down {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Synthetic WebRTC participants in a room of a running node, for browser tests: log in
    /// as USER, join the room's call on LISTENERS sockets, connect each to the node's SFU,
    /// listen (the first SPEAKERS of them also send) for SECS, then print one JSON object
    /// of what each heard.
    Crowd {
        /// The node's origin, e.g. http://127.0.0.1:3001.
        #[arg(long)]
        url: String,
        /// An existing account that is a member of the group.
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        room: String,
        #[arg(long, default_value_t = 100)]
        listeners: usize,
        #[arg(long, default_value_t = 0)]
        speakers: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Run a scenario on a fresh network and print its figures.
    Scenario {
        #[command(subcommand)]
        which: Scenario,
        #[command(flatten)]
        net: NetArgs,
        /// One JSON object of figures instead of the table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Scenario {
    /// Presence convergence: one user toggles mute; time until every node saw it.
    Convergence {
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// Signal relay latency and loss, same node and across nodes.
    Relay {
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value_t = 500)]
        messages: usize,
    },
    /// K WebSocket sessions on one node; presence fan-out throughput, latency, memory.
    Load {
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=5000))]
        clients: u32,
        #[arg(long, default_value_t = 50)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// SIGKILL a node during writes and presence; acknowledged data and presence TTL.
    Crash,
    /// Relayed audio through the node's TURN and through coturn: CPU, streams per core,
    /// loss and added latency at rising client counts (each client is two streams).
    Turn {
        /// Client counts, one step each.
        #[arg(long, value_delimiter = ',', default_values_t = [50usize, 100, 200, 400])]
        clients: Vec<usize>,
        /// Measured seconds per step.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// The coturn binary to compare with ("none" to skip).
        #[arg(long, default_value = "turnserver")]
        coturn: String,
    },
    /// A lecture on one node's SFU: synthetic speakers and rising numbers of synthetic
    /// listeners (WebRTC with str0m); forwarded packets/s, node CPU per 1,000 of them, RSS
    /// per listener, listener loss, jitter and delay. With `--nodes` above 1: the cascade,
    /// one speaker and the largest listener count, all on the speaker's node and then
    /// spread over the nodes; what the speaker's node sends, and delays across nodes.
    Lecture {
        /// Listener counts, one step each.
        #[arg(long, value_delimiter = ',', default_values_t = [100usize, 200, 500])]
        listeners: Vec<usize>,
        /// Synthetic speakers.
        #[arg(long, default_value_t = 2)]
        speakers: usize,
        /// Measured seconds per step.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Cut a node off the federation, change both sides, heal; time to converge.
    Partition {
        #[arg(long, default_value_t = 5)]
        changes: usize,
        /// Seconds the node stays cut off (a federation connection whose pings fail is closed
        /// after about 35–60 s).
        #[arg(long, default_value_t = 10)]
        cut_secs: u64,
    },
    /// A stage across 3 nodes (room on alpha, speaker on beta, listeners everywhere);
    /// gamma is isolated from the others (federation and cascade media) and healed: who
    /// keeps hearing, who is told what, and how soon gamma hears again.
    StagePartition {
        /// Listeners on each node.
        #[arg(long, default_value_t = 3)]
        listeners: usize,
        /// Seconds gamma stays cut off, at least (longer until every page was told).
        #[arg(long, default_value_t = 6)]
        cut_secs: u64,
    },
}

fn default_bin() -> PathBuf {
    let sibling = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("voicechat")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("target/debug/voicechat"),
    }
}

impl NetArgs {
    fn options(&self) -> Options {
        let mut o = Options::new(self.nodes as usize, self.bin.clone().unwrap_or_else(default_bin));
        o.topology = self.topology;
        o.seed = self.seed;
        if let Some(d) = &self.dir {
            let _ = std::fs::create_dir_all(d);
            o.dir = Some(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()));
        }
        o
    }
}

async fn up(args: NetArgs, detach: bool) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut opts = args.options();
    if let Some(d) = &args.dir {
        std::fs::create_dir_all(d)?;
        opts.dir = Some(std::fs::canonicalize(d)?);
    }
    if let Some(d) = &opts.dir
        && d.join(STATE_FILE).exists()
    {
        bail!("{} exists: a detached testnet may be running there (`testnet down --dir {}`)", d.join(STATE_FILE).display(), d.display());
    }
    let t0 = Instant::now();
    let mut net = Testnet::start(&opts).await?;
    println!("{:<10} {:<28} {:<62} {:<18} password", "node", "url", "p2p", "login");
    for n in &net.nodes {
        println!("{:<10} {:<28} {:<62} {:<18} {DEMO_PASSWORD}", n.name, n.url, n.p2p, demo_user(&n.name));
    }
    println!(
        "{} nodes ({:?}) up in {:.1} s; group \"testnet\" ({}) on {} has every demo user; data and logs in {}",
        net.nodes.len(), opts.topology, t0.elapsed().as_secs_f64(), net.group, net.nodes[0].name, net.dir().display()
    );
    if detach {
        let nodes: Vec<_> = net
            .nodes
            .iter_mut()
            .map(|n| json!({"name": n.name, "data_dir": n.data_dir, "url": n.url, "pid": n.detach()}))
            .collect();
        let state = json!({"dir": net.dir(), "nodes": nodes});
        std::fs::write(net.dir().join(STATE_FILE), serde_json::to_vec_pretty(&state)?)?;
        println!("detached; stop them with: testnet down --dir {}", net.dir().display());
        return Ok(());
    }
    println!("Ctrl-C stops every node.");
    while !stop.load(Ordering::Relaxed) {
        for n in &mut net.nodes {
            if !n.is_running() {
                bail!("node {} exited; log {}:\n{}", n.name, n.log.display(), n.log_tail(20));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("stopping {} nodes", net.nodes.len());
    net.stop();
    Ok(())
}

/// Whether /proc/PID/cmdline is `… serve … --data-dir DATA …`.
fn is_our_node(pid: i32, data: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let data = data.to_string_lossy();
    args.iter().any(|a| a == "serve") && args.windows(2).any(|w| w[0] == "--data-dir" && w[1] == data)
}

fn down(dir: &Path) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let path = dir.join(STATE_FILE);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("no {}: nothing detached there", path.display()))?)?;
    let mut waiting = Vec::new();
    for n in state["nodes"].as_array().context("nodes")? {
        let (Some(pid), Some(data), name) = (n["pid"].as_i64(), n["data_dir"].as_str(), n["name"].as_str().unwrap_or("?")) else {
            continue;
        };
        if !is_our_node(pid as i32, Path::new(data)) {
            println!("{name}: pid {pid} is not `voicechat serve --data-dir {data}` (already stopped?); left alone");
            continue;
        }
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        waiting.push((name.to_owned(), pid as i32, data.to_owned()));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, pid, data) in waiting {
        while is_our_node(pid, Path::new(&data)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_our_node(pid, Path::new(&data)) {
            println!("{name}: no exit 15 s after SIGTERM; SIGKILL");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        } else {
            println!("{name}: stopped (pid {pid})");
        }
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

async fn scenario(which: Scenario, args: NetArgs) -> anyhow::Result<Report> {
    let opts = args.options();
    match which {
        Scenario::Convergence { changes } => {
            scenarios::convergence::run(&opts, &scenarios::convergence::Params { changes, from: None }).await
        }
        Scenario::Relay { rate, messages } => scenarios::relay::run(&opts, &scenarios::relay::Params { rate, messages }).await,
        Scenario::Load { clients, users, rooms, changes } => {
            let p = scenarios::load::Params { clients: clients as usize, users, rooms, changes };
            scenarios::load::run(&opts, &p).await
        }
        Scenario::Crash => scenarios::crash::run(&opts, &scenarios::crash::Params::default()).await,
        Scenario::Turn { clients, secs, coturn } => {
            let coturn = (coturn != "none").then(|| PathBuf::from(coturn));
            scenarios::turn::run(&opts, &scenarios::turn::Params { steps: clients, secs, coturn }).await
        }
        Scenario::Lecture { listeners, speakers, secs } if opts.nodes > 1 => {
            // Across nodes: the cascade of their SFUs, one speaker, the largest listener count.
            let _ = speakers;
            let listeners = listeners.iter().copied().max().unwrap_or(30);
            scenarios::cascade::run(&opts, &scenarios::cascade::Params { listeners, secs }).await
        }
        Scenario::Lecture { listeners, speakers, secs } => {
            scenarios::lecture::run(&opts, &scenarios::lecture::Params { steps: listeners, speakers, secs }).await
        }
        Scenario::Partition { changes, cut_secs } => {
            let p = scenarios::partition::Params { changes, cut_for: Duration::from_secs(cut_secs), ..Default::default() };
            scenarios::partition::run(&opts, &p).await
        }
        Scenario::StagePartition { listeners, cut_secs } => {
            let p = scenarios::stage_partition::Params { listeners, cut_for: Duration::from_secs(cut_secs), ..Default::default() };
            scenarios::stage_partition::run(&opts, &p).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = raise_nofile(65_536) {
        eprintln!("warning: could not raise the open-file limit: {e}");
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let res = rt.block_on(async move {
        match cli.command {
            Cmd::Up { net, detach } => up(net, detach).await.map(|()| true),
            Cmd::Down { dir } => down(&dir).map(|()| true),
            Cmd::Crowd { url, user, password, group, room, listeners, speakers, secs } => {
                let p = voicechat_testnet::rtc::CrowdRun { url, user, password, group, room, listeners, speakers, secs };
                let out = voicechat_testnet::rtc::crowd_run(&p).await?;
                println!("{out}");
                Ok(true)
            }
            Cmd::Scenario { which, net, json } => {
                let r = scenario(which, net).await?;
                if json {
                    println!("{}", r.json());
                } else {
                    println!("{}", r.table.trim_end());
                    for f in &r.failures {
                        println!("FAIL: {f}");
                    }
                    println!("{}: {}", r.scenario, if r.ok { "ok" } else { "FAILED" });
                }
                Ok(r.ok)
            }
        }
    });
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
