//! Figures, printed not asserted (`#[ignore]`; run with `--ignored --nocapture`): how long a
//! presence change on beta takes to reach a socket on alpha, and signal relay latency socket
//! to socket on one node versus across two nodes (p50/p99 over 200+ samples each).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const SAMPLES: usize = 200;
/// Keeps each socket under the node's 50 messages/s budget.
const PACE: Duration = Duration::from_millis(25);

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
}

#[tokio::test]
#[ignore = "prints figures; run with --ignored --nocapture"]
async fn federation_latency_figures() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let bob = registered_on(&alpha, "bob").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Figures").await;
    let rid = create_room(&mut alice, &gid, "Bench").await;
    add_member(&mut alice, &gid, "bob").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&rid))).await;
    let (a, b, c) = (aws.session.clone(), bws.session.clone(), cws.session.clone());
    for ws in [&mut aws, &mut bws, &mut cws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    let all = |l: &[Value]| {
        l.len() == 3
            && has_session(l, "alice@alpha", &a, false)
            && has_session(l, "bob@alpha", &b, false)
            && has_session(l, "carol@beta", &c, false)
    };
    aws.wait_list_within("all three in the room", FED_WAIT, &rid, all).await;
    for ws in [&mut aws, &mut bws, &mut cws] {
        ws.barrier().await;
        ws.clear();
    }

    // Presence: carol (beta) toggles mute; time until alice's socket (alpha) shows it.
    let mut presence = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let muted = i % 2 == 0;
        let t0 = Instant::now();
        cws.send(json!({"type": "mute", "muted": muted})).await;
        aws.wait_list_within("carol's mute state", FED_WAIT, &rid, |l| has_session(l, "carol@beta", &c, muted))
            .await;
        presence.push(t0.elapsed());
        aws.clear();
        cws.clear();
        tokio::time::sleep(PACE).await;
    }

    // Signals: alice → bob (same node) and alice → carol (across), alternating.
    let mut same = Vec::with_capacity(SAMPLES);
    let mut across = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        for (to, session, ws, out) in
            [("bob@alpha", &b, &mut bws, &mut same), ("carol@beta", &c, &mut cws, &mut across)]
        {
            let tag = format!("s{i}");
            let t0 = Instant::now();
            aws.send(json!({"type": "signal", "to": to, "to_session": session, "kind": "candidate", "data": tag})).await;
            ws.next_matching_within("the signal", FED_WAIT, |m| m["type"] == "signal" && m["data"] == tag.as_str()).await;
            out.push(t0.elapsed());
            ws.clear();
            tokio::time::sleep(PACE).await;
        }
    }

    println!("--- federation figures (2 nodes on loopback, debug build unless --release) ---");
    report("presence beta→alpha socket", presence);
    report("signal same node (alpha→alpha)", same);
    report("signal across nodes (alpha→beta)", across);
}
