//! A flood of 10,000 records: a member node pushing valid records as fast as it can is
//! slowed by the per-peer limits without stalling anyone else, and everything it sent in
//! the end is applied; a peer sending garbage is cut off.

use voicechat_protocol::ids::SessionId;
use voicechat_protocol::records::{Presence, PresenceState, Record};
use voicechat_protocol::rpc::{self, PushRequest, PushResponse, RpcError};

use super::sim::{Setup, Sim};
use crate::federation::machine::Proto;

#[test]
fn a_flood_of_ten_thousand_records_is_slowed_down_not_stalling_others() {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(Setup::mesh(3));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Busy");
    let r = sim.create_room(0, g, "Hall");
    let (flooder, honest) = (sim.user(1, "loud"), sim.user(2, "quiet"));
    sim.add_member(0, g, &flooder);
    sim.add_member(0, g, &honest);
    sim.run_for(3_000);

    // 10,000 valid presence records of one session of node 1's user (mute toggles),
    // pushed in 10 pushes at once.
    let s = SessionId([0x77; 16]);
    let base = sim.now;
    let records: Vec<Vec<u8>> = (0..10_000u64)
        .map(|k| {
            sim.nodes[1].signer.seal_at(base * 1000 + k, |seq| {
                Record::Presence(Presence {
                    seq,
                    room: r,
                    user: flooder.clone(),
                    group: g,
                    muted: k % 2 == 1,
                    state: PresenceState::Joined,
                    session: s,
                    name: None,
                    joined_at: None,
                    stage: None,
                    expires_at: base / 1000 + 30,
                })
            })
        })
        .collect();
    let mut pending: Vec<Vec<Vec<u8>>> = records.chunks(rpc::MAX_PUSH_RECORDS).map(<[_]>::to_vec).collect();
    let mut limited = 0;
    let honest_session = SessionId([0x11; 16]);
    let mut honest_seen = None;
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 200, "the flood never got through");
        let tokens: Vec<(u64, Vec<Vec<u8>>)> = pending
            .drain(..)
            .map(|chunk| (sim.ask(1, 0, Proto::Push, rpc::encode(&PushRequest { records: chunk.iter().cloned().map(Into::into).collect() })), chunk))
            .collect();
        if rounds == 1 {
            // In the middle of the flood, node 2's user joins: it must show on node 0 at once.
            sim.join(2, &honest, honest_session, (g, r), false);
        }
        sim.run_for(250);
        if honest_seen.is_none() && sim.participants(0, &(g, r)).contains_key(&(honest.clone(), honest_session)) {
            honest_seen = Some(sim.now - base);
        }
        for (t, chunk) in tokens {
            let resp: PushResponse = rpc::decode(&sim.answers[&t], rpc::MAX_PUSH_RESPONSE).unwrap();
            match resp.error {
                None => {}
                Some(RpcError::RateLimited) => {
                    limited += 1;
                    pending.push(chunk);
                }
                Some(e) => panic!("unexpected refusal {e:?}"),
            }
        }
        sim.run_for(500);
    }
    assert!(limited > 0, "the flood was slowed down");
    let seen = honest_seen.expect("the honest join showed during the flood");
    assert!(seen <= 1_000, "the honest join took {seen} ms of simulated time");
    sim.run_for(1_000);
    // The last record (an unmute, k = 9999 is odd: muted) is what node 0 shows.
    assert_eq!(sim.participants(0, &(g, r)).get(&(flooder.clone(), s)), Some(&true));
    // Pushed all at once, the pushes overtake each other: a record older than one already
    // accepted is a replay. Every record was judged, none twice into the store.
    let stats = sim.nodes[0].machine.stats();
    let accepted = stats.records.get(&("presence".to_owned(), "accepted")).copied().unwrap_or(0);
    let ignored = stats.records.get(&("presence".to_owned(), "ignored")).copied().unwrap_or(0);
    assert!(accepted + ignored >= 10_000, "every flooded record was judged ({accepted} + {ignored})");
    assert!(accepted <= 10_001, "none was accepted twice ({accepted})");
    eprintln!(
        "flood: 10000 records in {rounds} rounds, {limited} pushes refused rate_limited, \
         honest join seen after {seen} ms simulated; {:.2} s wall",
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn a_peer_sending_garbage_is_cut_off() {
    let mut sim = Sim::new(Setup::mesh(2));
    sim.run_for(2_000);
    assert!(sim.connected(0, 1));
    let garbage: Vec<serde_bytes::ByteBuf> = (0..200u32).map(|i| serde_bytes::ByteBuf::from(vec![0x84, 0x61, b'x', i as u8])).collect();
    sim.ask(1, 0, Proto::Push, rpc::encode(&PushRequest { records: garbage }));
    sim.run_for(1_000);
    assert!(!sim.connected(0, 1), "node 0 closed the connection");
    // And keeps it out for a while: a reconnect is refused at once.
    sim.dial(1, 0);
    assert!(!sim.connected(0, 1), "refused while cut off");
}

#[test]
fn a_slow_store_holds_back_batches_and_refuses_pushes_without_losing_any() {
    let mut sim = Sim::new(Setup::mesh(2));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Slow disk");
    let r = sim.create_room(0, g, "Hall");
    let bob = sim.user(1, "bob");
    sim.add_member(0, g, &bob);
    sim.run_for(2_000);
    // Node 0's core stops reporting stored batches; bob toggles mute 40 times.
    sim.hold_applies = true;
    let s = SessionId([0x42; 16]);
    for k in 0..40 {
        sim.join(1, &bob, s, (g, r), k % 2 == 1);
        sim.run_for(200);
    }
    assert!(sim.max_in_flight <= 16, "at most 16 batches in flight ({})", sim.max_in_flight);
    let limited = sim.nodes[0].machine.stats().rate_limited;
    assert!(limited > 0, "pushes were refused while the store was behind");
    // The store catches up: the pushes are sent again, and the last state arrives.
    sim.release();
    sim.run_for(40_000);
    assert_eq!(sim.participants(0, &(g, r)).get(&(bob.clone(), s)), Some(&true), "bob's last state (muted) shows");
}
