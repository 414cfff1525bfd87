//! A thousand nodes: 60 groups spread over them (each with members on 2 to 50 nodes),
//! links with 10–150 ms of latency and 1 % loss (a lost segment costs a retransmission).
//! Presence changes made anywhere reach every node with members in the group: p99 within
//! one second of simulated time. Prints the messages sent per change and per node.

use std::collections::{BTreeSet, HashMap};

use voicechat_protocol::ids::{GroupId, RoomId, SessionId, UserId};

use super::sim::{Rng, Setup, Sim};
use crate::federation::machine::{Mode, Proto};

const NODES: usize = 1000;
const GROUPS: usize = 60;
const CHANGES: usize = 300;

struct Group {
    g: GroupId,
    r: RoomId,
    members: Vec<UserId>,
    nodes: BTreeSet<usize>,
}

#[test]
fn presence_reaches_every_member_node_of_a_thousand_node_network_within_a_second() {
    let wall = std::time::Instant::now();
    let mut rng = Rng::new(1000);
    // Who is in which group: a home, then 1 to 49 other nodes, one or two users on each.
    let mut plans: Vec<(usize, Vec<(usize, u8)>)> = Vec::new();
    let mut pins = BTreeSet::new();
    for _ in 0..GROUPS {
        let home = rng.below(NODES as u64) as usize;
        let extra = 1 + rng.below(49) as usize;
        let mut nodes = BTreeSet::from([home]);
        while nodes.len() < extra + 1 {
            nodes.insert(rng.below(NODES as u64) as usize);
        }
        let users: Vec<(usize, u8)> = nodes.iter().flat_map(|&n| (0..1 + (n % 2) as u8).map(move |k| (n, k))).collect();
        for &a in &nodes {
            for &b in &nodes {
                if a != b {
                    pins.insert((a, b));
                }
            }
        }
        plans.push((home, users));
    }
    let setup = Setup {
        names: (0..NODES).map(|i| format!("n{i}")).collect(),
        mode: Mode::Closed,
        pins: pins.into_iter().collect(),
        bind: true,
        seed: 1000,
        tweak: |_| {},
    };
    let mut sim = Sim::new(setup);
    sim.latency = (10, 150);
    sim.loss = 0.01;
    let mut groups = Vec::new();
    for (home, users) in plans {
        let members: Vec<UserId> = users.iter().map(|(n, k)| sim.user(*n, &format!("user{k}"))).collect();
        let (g, r) = sim.preload_group(home, &members);
        let nodes = users.iter().map(|(n, _)| *n).chain([home]).collect();
        groups.push(Group { g, r, members, nodes });
    }
    let setup_wall = wall.elapsed();
    // Connections come up, cards are exchanged, homes are checked.
    sim.run_for(10_000);
    let connect_wall = wall.elapsed();
    let before_push = sim.proto_requests(Proto::Push);

    // 300 changes, one every 100 ms: a user joins the group's room, then toggles mute.
    let mut changes: Vec<(u64, usize, UserId, SessionId, bool)> = Vec::new();
    let mut state: HashMap<(usize, usize), bool> = HashMap::new();
    for k in 0..CHANGES {
        let gi = rng.below(GROUPS as u64) as usize;
        let mi = rng.below(groups[gi].members.len() as u64) as usize;
        let user = groups[gi].members[mi].clone();
        let node = sim.idx(user.node.as_str());
        let muted = state.get(&(gi, mi)).is_some_and(|m| !m);
        state.insert((gi, mi), muted);
        let session = SessionId([(gi % 256) as u8, (mi % 256) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        sim.join(node, &user, session, (groups[gi].g, groups[gi].r), muted);
        changes.push((sim.now, gi, user, session, muted));
        let _ = k;
        sim.run_for(100);
    }
    sim.run_for(10_000);
    let pushes = sim.proto_requests(Proto::Push) - before_push;

    // When each member node showed each change.
    let mut delays = Vec::new();
    let mut missing = 0;
    for (t0, gi, user, session, muted) in &changes {
        let origin = sim.idx(user.node.as_str());
        for &n in &groups[*gi].nodes {
            if n == origin {
                continue;
            }
            let seen = sim.nodes[n]
                .presence_log
                .iter()
                .find(|(t, room, u, s, m, joined)| t >= t0 && room.0 == groups[*gi].g && u == user && s == session && m == muted && *joined)
                .map(|(t, ..)| t - t0);
            match seen {
                Some(d) => delays.push(d),
                None => missing += 1,
            }
        }
    }
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).saturating_sub(1).min(delays.len() - 1)];
    let per_node: Vec<u64> = sim.nodes.iter().map(|n| n.sent.values().sum::<u64>() + n.responses).collect();
    let busiest = per_node.iter().max().copied().unwrap_or(0);
    let involved = sim.nodes.iter().filter(|n| n.sent.values().sum::<u64>() > 0).count();
    eprintln!(
        "scale: {NODES} nodes, {GROUPS} groups (members on 2–50 nodes), {CHANGES} presence changes, \
         latency 10–150 ms, 1% loss\n  delivery to member nodes: p50 {} ms, p99 {} ms, max {} ms ({} deliveries, {} missing)\n  \
         member nodes reached per change: {:.1} (one push each); all pushes in the window, \
         heartbeats of every seat every 10 s included: {:.1} per change; each answered once\n  \
         messages per node over the run (sent + answered): busiest {}, mean {:.1} over {} nodes that sent anything\n  \
         wall: setup {:.2} s, connections {:.2} s, total {:.2} s",
        pct(0.50),
        pct(0.99),
        delays.last().copied().unwrap_or(0),
        delays.len(),
        missing,
        (delays.len() + missing) as f64 / CHANGES as f64,
        pushes as f64 / CHANGES as f64,
        busiest,
        per_node.iter().sum::<u64>() as f64 / involved.max(1) as f64,
        involved,
        setup_wall.as_secs_f64(),
        connect_wall.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
    );
    assert_eq!(missing, 0, "every change reached every member node");
    assert!(pct(0.99) <= 1_000, "p99 {} ms", pct(0.99));
}
