//! A running testnet: N nodes linked per topology, a demo user per node, one group homed
//! on the first node with every demo user as a member, and a logged-in client per node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use serde_json::json;

use crate::client::Http;
use crate::netns::Netns;
use crate::nodes::{DEMO_PASSWORD, NodeProc, Placement, Topology, demo_user};

/// How long a remote member add may keep answering "not federated yet".
const FEDERATE_WAIT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub topology: Topology,
    pub bin: PathBuf,
    /// Data dirs and logs go here [default: a new temporary dir, removed at the end].
    pub dir: Option<PathBuf>,
    /// Seed of the random topology.
    pub seed: u64,
    /// More `voicechat serve` arguments for every node.
    pub node_args: Vec<String>,
}

impl Options {
    pub fn new(nodes: usize, bin: PathBuf) -> Options {
        Options { nodes, topology: Topology::Mesh, bin, dir: None, seed: 1, node_args: Vec::new() }
    }
}

/// The started network. Dropping it kills every node it started.
pub struct Testnet {
    pub nodes: Vec<NodeProc>,
    /// The demo user of each node, logged in on its node.
    pub clients: Vec<Http>,
    /// The group homed on the first node.
    pub group: String,
    pub root: PathBuf,
    pub bin: PathBuf,
    /// Namespaces, when the nodes run in them (dropped after the nodes).
    pub netns: Option<std::sync::Arc<Netns>>,
    tmp: Option<PathBuf>,
}

impl Testnet {
    /// Starts the nodes in order, each dialing earlier ones per topology, then builds the group.
    pub async fn start(opts: &Options) -> anyhow::Result<Testnet> {
        Self::start_in(opts, None).await
    }

    /// [`Testnet::start`] with each node in its namespace of `netns`; the caller runs
    /// inside the hub namespace ([`Netns::run_inside`]) so its clients reach the nodes.
    pub async fn start_in(opts: &Options, netns: Option<std::sync::Arc<Netns>>) -> anyhow::Result<Testnet> {
        if !opts.bin.exists() {
            bail!("node binary {} not found; build it with `cargo build -p voicechat-node` or pass --bin", opts.bin.display());
        }
        let (root, tmp) = match &opts.dir {
            Some(d) => (d.clone(), None),
            None => {
                let p = std::env::temp_dir().join(format!("voicechat-testnet-{}-{}", std::process::id(), unique()));
                (p.clone(), Some(p))
            }
        };
        std::fs::create_dir_all(&root)?;
        let mut net = Testnet { nodes: Vec::new(), clients: Vec::new(), group: String::new(), root, bin: opts.bin.clone(), netns, tmp };
        // Federation is closed: every node pins every other one by its id (as operators
        // exchange `voicechat id`), and is given the addresses of the nodes its topology
        // dials; the others' addresses it learns through its neighbours.
        for i in 0..opts.nodes {
            let placement = match &net.netns {
                Some(ns) => ns.placement(i),
                None => Placement::loopback(),
            };
            net.nodes.push(NodeProc::new(&net.root, i, placement, Vec::new())?);
        }
        let ids = net.nodes.iter().map(|n| n.peer_id(&net.bin)).collect::<anyhow::Result<Vec<_>>>()?;
        for i in 0..opts.nodes {
            let dials = opts.topology.peers(i, opts.nodes, opts.seed);
            let mut peers: Vec<String> = dials.iter().map(|&j| net.nodes[j].p2p.clone()).collect();
            peers.extend((0..opts.nodes).filter(|j| *j != i && !dials.contains(j)).map(|j| format!("/p2p/{}", ids[j])));
            let bin = net.bin.clone();
            let node = &mut net.nodes[i];
            node.peers = peers;
            node.extra_args = opts.node_args.clone();
            if !node.has_db() {
                node.add_user(&bin, &demo_user(&node.name), DEMO_PASSWORD)?;
            }
            node.start(&bin).await?;
        }
        net.clients = try_join_all(net.nodes.iter().map(|n| {
            let (url, user) = (n.url.clone(), demo_user(&n.name));
            async move { Http::login(&url, &user, DEMO_PASSWORD).await }
        }))
        .await?;
        net.group = net.build_group().await?;
        Ok(net)
    }

    /// Finds or creates the group `testnet` on the first node and adds every demo user.
    async fn build_group(&self) -> anyhow::Result<String> {
        let home = &self.clients[0];
        let groups = home.expect(reqwest::Method::GET, "/api/groups", None, 200).await?;
        let existing = groups.as_array().and_then(|l| l.iter().find(|g| g["name"] == "testnet" && g["role"] == "owner"));
        let gid = match existing {
            Some(g) => g["id"].as_str().context("group id")?.to_owned(),
            None => {
                let g = home.expect(reqwest::Method::POST, "/api/groups", Some(json!({"name": "testnet"})), 201).await?;
                g["id"].as_str().context("group id")?.to_owned()
            }
        };
        // Each add is retried while the home does not know the member's node yet (its card
        // travels through the topology); the member accepts the invitation on its node, which
        // then shows the group.
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            add_member(home, &gid, format!("{}@{}", demo_user(&n.name), n.name)).await?;
            let c = &self.clients[i];
            let t0 = Instant::now();
            let accept = format!("/api/invitations/{gid}/accept");
            while c.get(&format!("/api/groups/{gid}")).await?.status != 200 {
                if t0.elapsed() > FEDERATE_WAIT {
                    bail!("{} never learned group {gid} after its user was added", n.name);
                }
                let _ = c.post(&accept, json!({})).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.wait_converged(&gid, Duration::from_secs(30)).await?;
        Ok(gid)
    }

    /// Waits until every node's view of the group (name, members, rooms) equals the home's.
    pub async fn wait_converged(&self, gid: &str, t: Duration) -> anyhow::Result<Duration> {
        let path = format!("/api/groups/{gid}");
        self.wait_all("group detail equal on every node", t, |_, c| {
            let (path, home) = (path.clone(), self.clients[0].clone());
            async move {
                let (Ok(a), Ok(b)) = (home.get(&path).await, c.get(&path).await) else { return false };
                a.status == 200 && b.status == 200 && group_view(&a.body) == group_view(&b.body)
            }
        })
        .await
    }

    /// Waits until `check` holds on the client of every node (polled), or fails after `t`.
    pub async fn wait_all<F, Fut>(&self, what: &str, t: Duration, check: F) -> anyhow::Result<Duration>
    where
        F: Fn(usize, Http) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let t0 = Instant::now();
        loop {
            let oks = futures_util::future::join_all(self.clients.iter().enumerate().map(|(i, c)| check(i, c.clone()))).await;
            if oks.iter().all(|ok| *ok) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > t {
                let bad: Vec<&str> = oks.iter().zip(&self.nodes).filter(|(ok, _)| !**ok).map(|(_, n)| n.name.as_str()).collect();
                bail!("{what}: not true on {bad:?} after {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a room of the group on the home node and waits until every node lists it.
    pub async fn create_room(&self, name: &str) -> anyhow::Result<String> {
        let path = format!("/api/groups/{}/rooms", self.group);
        let r = self.clients[0].expect(reqwest::Method::POST, &path, Some(json!({"name": name})), 201).await?;
        let rid = r["id"].as_str().context("room id")?.to_owned();
        let gpath = format!("/api/groups/{}", self.group);
        self.wait_all("room known everywhere", Duration::from_secs(30), |_, c| {
            let (gpath, rid) = (gpath.clone(), rid.clone());
            async move {
                let Ok(r) = c.get(&gpath).await else { return false };
                r.body["rooms"].as_array().is_some_and(|l| l.iter().any(|x| x["id"] == rid.as_str()))
            }
        })
        .await?;
        Ok(rid)
    }

    /// Sum of a metric over every running node.
    pub async fn metric_sum(&self, metric: &str, labels: &[(&str, &[&str])]) -> anyhow::Result<f64> {
        let texts = try_join_all(self.clients.iter().map(|c| c.metrics())).await?;
        Ok(texts.iter().map(|t| crate::stats::metric_sum(t, metric, labels)).sum())
    }

    /// Stops every node (SIGTERM, then SIGKILL after 15 s).
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        // A failed run keeps its logs for a look.
        if let Some(t) = &self.tmp
            && !std::thread::panicking()
        {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Adds `user` to the group, retrying while its node is not federated with the home yet.
pub async fn add_member(home: &Http, gid: &str, user: String) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let path = format!("/api/groups/{gid}/members");
    loop {
        let r = home.post(&path, json!({"user": user})).await?;
        match r.status {
            201 => return Ok(()),
            409 => return Ok(()), // already a member (a reused --dir)
            400 if r.body["message"].as_str().is_some_and(|m| m.contains("federate")) && t0.elapsed() < FEDERATE_WAIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => bail!("POST {}{path} {{\"user\":\"{user}\"}}: {} {}", home.origin, r.status, r.body),
        }
    }
}

/// What must agree across nodes: name, members with roles, rooms with participants
/// (sorted; `role` is the viewer's own and differs by design).
pub fn group_view(g: &serde_json::Value) -> serde_json::Value {
    let sorted = |key: &str, f: &dyn Fn(&serde_json::Value) -> serde_json::Value| {
        let mut v: Vec<serde_json::Value> = g[key].as_array().map(|l| l.iter().map(f).collect()).unwrap_or_default();
        v.sort_by_key(|x| x.to_string());
        serde_json::Value::from(v)
    };
    json!({
        "name": g["name"],
        "members": sorted("members", &|m| json!([m["user"], m["role"]])),
        "rooms": sorted("rooms", &|r| {
            let mut p: Vec<String> = r["participants"].as_array().map(|l| l.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
            p.sort();
            json!([r["id"], r["name"], p])
        }),
    })
}
