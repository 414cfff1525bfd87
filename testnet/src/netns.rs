//! Linux network namespaces for partitions: one namespace per node plus a hub namespace
//! holding two bridges, one for browser traffic (10.78.0.0/24, the testnet's clients live
//! in the hub) and one for federation (10.77.0.0/24). Cutting a node sets its federation
//! veth down in the hub, so it keeps serving its own users while no libp2p byte passes.
//! The nodes' audio servers listen on the browser network, so the cascade links between
//! them run there too: isolating a node also has the hub's browser bridge stop forwarding
//! between it and the other nodes (ebtables), while the hub itself still reaches it.
//! Every address lives inside these namespaces only; the host's own network is untouched.

use std::process::Command;

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

use crate::nodes::Placement;

const HTTP_NET: &str = "10.78.0";
const P2P_NET: &str = "10.77.0";

/// The namespaces of one testnet; deleted when dropped.
pub struct Netns {
    prefix: String,
    nodes: usize,
}

/// Whether namespaces can be used here: root, and `ip` on the PATH.
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// Whether [`Netns::isolate`] can be used too: `ebtables` (Debian's iptables package has it).
pub fn can_isolate() -> bool {
    available() && Command::new("ebtables").arg("-V").output().is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool).args(args).output().with_context(|| format!("run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Netns {
    /// Builds the hub and `nodes` node namespaces (at most 250).
    pub fn create(nodes: usize) -> anyhow::Result<Netns> {
        if nodes > 250 {
            bail!("at most 250 nodes in namespaces");
        }
        let prefix = format!("vct{}x{}", std::process::id(), unique());
        let ns = Netns { prefix, nodes };
        let hub = ns.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        for br in ["brh", "brp"] {
            ip(&["-n", &hub, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", br, "up"])?;
        }
        ip(&["-n", &hub, "addr", "add", &format!("{HTTP_NET}.254/24"), "dev", "brh"])?;
        for i in 0..nodes {
            let n = ns.node_ns(i);
            ip(&["netns", "add", &n])?;
            ip(&["-n", &n, "link", "set", "lo", "up"])?;
            for (hub_end, br, node_end, net) in
                [(format!("h{i}"), "brh", "eth0", HTTP_NET), (format!("p{i}"), "brp", "eth1", P2P_NET)]
            {
                ip(&["-n", &hub, "link", "add", &hub_end, "type", "veth", "peer", "name", node_end, "netns", &n])?;
                ip(&["-n", &hub, "link", "set", &hub_end, "master", br, "up"])?;
                ip(&["-n", &n, "addr", "add", &format!("{net}.{}/24", i + 1), "dev", node_end])?;
                ip(&["-n", &n, "link", "set", node_end, "up"])?;
            }
        }
        Ok(ns)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Where node `i` runs and listens.
    pub fn placement(&self, i: usize) -> Placement {
        Placement {
            netns: Some(self.node_ns(i)),
            http_ip: format!("{HTTP_NET}.{}", i + 1),
            p2p_ip: format!("{P2P_NET}.{}", i + 1),
        }
    }

    /// Cuts node `i` off the federation network (its browser side stays up).
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        ip(&["-n", &self.hub(), "link", "set", &format!("p{i}"), "down"])
    }

    /// Undoes [`Netns::cut`].
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        ip(&["-n", &self.hub(), "link", "set", &format!("p{i}"), "up"])
    }

    /// Cuts node `i` off every other node: the federation network as [`Netns::cut`] does,
    /// and on the browser network, where the audio servers listen and so where their
    /// cascade links run, the hub's bridge stops forwarding frames to and from it. Frames
    /// between the node and the hub itself are not forwarded but delivered (ebtables'
    /// INPUT and OUTPUT chains), so the testnet's clients keep their sockets and audio.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        self.cut(i)?;
        for dir in ["-i", "-o"] {
            self.ebtables(&["-A", "FORWARD", dir, &format!("h{i}"), "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Undoes [`Netns::isolate`].
    pub fn rejoin(&self, i: usize) -> anyhow::Result<()> {
        for dir in ["-i", "-o"] {
            self.ebtables(&["-D", "FORWARD", dir, &format!("h{i}"), "-j", "DROP"])?;
        }
        self.heal(i)
    }

    fn ebtables(&self, args: &[&str]) -> anyhow::Result<()> {
        let hub = self.hub();
        run("ip", &[&["netns", "exec", hub.as_str(), "ebtables"], args].concat())
    }

    /// The hub's address on the browser network: where the testnet's clients send from.
    pub fn hub_ip(&self) -> std::net::IpAddr {
        std::net::Ipv4Addr::new(10, 78, 0, 254).into() // HTTP_NET.254, as `create` gives it
    }

    /// Runs `f` on a new thread whose network namespace is the hub (so every socket the
    /// future opens is in there), on its own tokio runtime; awaits its result.
    pub async fn run_inside<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let path = format!("/run/netns/{}", self.hub());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let res = (|| {
                let f_ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                setns(f_ns, CloneFlags::CLONE_NEWNET).context("setns into the hub namespace")?;
                // Worker threads are created from this thread and inherit its namespace.
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                rt.block_on(f())
            })();
            let _ = tx.send(res);
        });
        rx.await.context("namespace thread panicked")?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
