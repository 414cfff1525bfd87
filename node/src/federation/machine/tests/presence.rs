//! Presence crosses to the member nodes, lives while its node refreshes it and vanishes
//! when its node dies; an idle federation sends nothing and applies nothing; a relayed
//! signal waits for its sender's presence, and a node cannot speak for another's users.

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{Nonce, SessionId};
use voicechat_protocol::records::{Presence, PresenceState, Record, Signal, SignalType};
use voicechat_protocol::rpc::{self, PushRequest, RpcError, SignalRequest, SignalResponse};

use super::sim::{Setup, Sim};
use crate::federation::machine::{Command, CommandResult, OutSignal};
use crate::federation::machine::Proto;

fn setup3() -> (Sim, voicechat_protocol::ids::GroupId, (voicechat_protocol::ids::GroupId, voicechat_protocol::ids::RoomId)) {
    let mut sim = Sim::new(Setup::mesh(3));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Choir");
    let r = sim.create_room(0, g, "Rehearsal");
    for i in 1..3 {
        let u = sim.user(i, "singer");
        sim.add_member(0, g, &u);
    }
    sim.run_for(3_000);
    (sim, g, (g, r))
}

#[test]
fn presence_lives_while_refreshed_and_vanishes_when_its_node_dies() {
    let (mut sim, _g, room) = setup3();
    let singer = sim.user(1, "singer");
    let s = SessionId([1; 16]);
    sim.join(1, &singer, s, room, false);
    sim.run_for(1_000);
    for i in [0, 2] {
        assert_eq!(sim.participants(i, &room).get(&(singer.clone(), s)), Some(&false), "{}", sim.nodes[i].name);
    }
    sim.join(1, &singer, s, room, true);
    sim.run_for(1_000);
    assert_eq!(sim.participants(2, &room).get(&(singer.clone(), s)), Some(&true), "mute crossed");
    // Heartbeats keep it alive far past one lifetime.
    sim.run_for(120_000);
    assert!(sim.participants(0, &room).contains_key(&(singer.clone(), s)));
    // Node 1 dies (cut off from everyone): its user is gone from the others within a lifetime.
    let died = sim.now;
    sim.partition(&[1], &[0, 2]);
    sim.run_for(20_000);
    assert!(sim.participants(0, &room).contains_key(&(singer.clone(), s)), "not before it expires");
    sim.run_for(20_000);
    for i in [0, 2] {
        assert!(!sim.participants(i, &room).contains_key(&(singer.clone(), s)), "{} still shows a ghost", sim.nodes[i].name);
    }
    let gone = sim.nodes[0].presence_log.iter().rev().find(|e| !e.5).expect("a departure").0;
    assert!(gone - died <= 45_000, "gone {} ms after the node died", gone - died);
    // A leave is sent as such.
    sim.heal();
    sim.run_for(3_000);
    sim.join(1, &singer, s, room, false);
    sim.run_for(1_000);
    assert!(sim.participants(0, &room).contains_key(&(singer.clone(), s)));
    sim.leave(1, &singer, s, room);
    sim.run_for(1_000);
    assert!(!sim.participants(0, &room).contains_key(&(singer.clone(), s)));
}

#[test]
fn an_idle_federation_sends_and_applies_nothing() {
    let (mut sim, g, _room) = setup3();
    sim.run_for(60_000);
    let pushes = sim.proto_requests(Proto::Push);
    let applied: Vec<u64> = sim.nodes.iter().map(|n| n.applied).collect();
    assert!(applied.iter().all(|a| *a > 0), "the setup applied records everywhere");
    // Twenty minutes with nobody doing anything and nobody in a call.
    sim.run_for(20 * 60_000);
    assert_eq!(sim.proto_requests(Proto::Push), pushes, "no records pushed");
    let now: Vec<u64> = sim.nodes.iter().map(|n| n.applied).collect();
    assert_eq!(now, applied, "no records applied");
    // Anti-entropy still ran: one digest check per member node every ~5 minutes.
    let syncs = sim.proto_requests(Proto::Sync);
    assert!(syncs >= 6, "digest checks ran ({syncs})");
    assert!(sim.view(1, &g).is_some());
}

fn signal_from(sim: &Sim, from: usize, to: usize, room: (voicechat_protocol::ids::GroupId, voicechat_protocol::ids::RoomId), from_s: SessionId, to_s: SessionId) -> Vec<u8> {
    signed_signal(sim, from, (from, to), room, (from_s, to_s), (SignalType::Offer, "v=0"))
}

/// A signal of `singer` on node `from` to `alice` on node `to`, signed by node `signer`.
fn signed_signal(
    sim: &Sim,
    signer: usize,
    (from, to): (usize, usize),
    room: (voicechat_protocol::ids::GroupId, voicechat_protocol::ids::RoomId),
    (from_s, to_s): (SessionId, SessionId),
    (kind, data): (SignalType, &str),
) -> Vec<u8> {
    let (from_user, to_user) = (sim.user(from, "singer"), sim.user(to, "alice"));
    let env = sim.nodes[signer].signer.seal_at(sim.now * 1000, |_| {
        Record::Signal(Signal {
            to: to_user,
            data: data.into(),
            from: from_user,
            room: room.1,
            signal_type: kind,
            group: room.0,
            nonce: Nonce::from_bytes([from_s.0[0], to_s.0[0], signer as u8, kind as u8, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, (sim.now % 251) as u8]),
            expires_at: sim.now / 1000 + 60,
            to_session: to_s,
            from_session: from_s,
        })
    });
    rpc::encode(&SignalRequest { envelope: ByteBuf::from(env) })
}

#[test]
fn a_signal_that_outruns_its_senders_presence_waits_for_it() {
    let (mut sim, _g, room) = setup3();
    let alice = sim.user(0, "alice");
    let (a, s) = (SessionId([0xa; 16]), SessionId([0xb; 16]));
    sim.join(0, &alice, a, room, false);
    sim.run_for(1_000);
    // The offer arrives first; the sender's presence a moment later.
    let req = signal_from(&sim, 1, 0, room, s, a);
    let t = sim.ask(1, 0, Proto::Signal, req);
    sim.run_for(300);
    assert!(!sim.answers.contains_key(&t), "waiting for the presence");
    let singer = sim.user(1, "singer");
    sim.join(1, &singer, s, room, false);
    sim.run_for(500);
    let resp: SignalResponse = rpc::decode(&sim.answers[&t], rpc::MAX_SIGNAL_RESPONSE).unwrap();
    assert_eq!(resp.error, None, "delivered once the presence came");
    // A signal from a session that never joins is refused after a moment.
    let req = signal_from(&sim, 1, 0, room, SessionId([0xc; 16]), a);
    let t = sim.ask(1, 0, Proto::Signal, req);
    sim.run_for(4_000);
    let resp: SignalResponse = rpc::decode(&sim.answers[&t], rpc::MAX_SIGNAL_RESPONSE).unwrap();
    assert_eq!(resp.error, Some(RpcError::NoSession));
    // Node 2 relaying node 1's signal is refused: signals travel directly.
    let req = signal_from(&sim, 1, 0, room, s, a);
    let t = sim.ask(2, 0, Proto::Signal, req);
    sim.run_for(1_000);
    let resp: SignalResponse = rpc::decode(&sim.answers[&t], rpc::MAX_SIGNAL_RESPONSE).unwrap();
    assert_eq!(resp.error, Some(RpcError::Invalid));
}

#[test]
fn a_node_cannot_move_or_remove_a_session_of_another_nodes_user() {
    let (mut sim, g, room) = setup3();
    let singer1 = sim.user(1, "singer");
    let s = SessionId([0x51; 16]);
    sim.join(1, &singer1, s, room, false);
    sim.run_for(1_000);
    // Node 2 signs a `left` for node 1's user's session (and a join elsewhere): refused.
    let forged = sim.nodes[2].signer.seal_at(sim.now * 1000, |seq| {
        Record::Presence(Presence {
            seq,
            room: room.1,
            user: singer1.clone(),
            group: g,
            muted: true,
            state: PresenceState::Left,
            session: s,
            name: None,
            joined_at: None,
            stage: None,
            expires_at: sim.now / 1000 + 30,
        })
    });
    // Its own user with the same session id: a separate seat.
    let singer2 = sim.user(2, "singer");
    let own = sim.nodes[2].signer.seal_at(sim.now * 1000 + 1, |seq| {
        Record::Presence(Presence {
            seq,
            room: room.1,
            user: singer2.clone(),
            group: g,
            muted: false,
            state: PresenceState::Joined,
            session: s,
            name: None,
            joined_at: None,
            stage: None,
            expires_at: sim.now / 1000 + 30,
        })
    });
    let t = sim.ask(2, 0, Proto::Push, rpc::encode(&PushRequest { records: vec![forged.into(), own.into()] }));
    sim.run_for(1_000);
    assert!(sim.answers.contains_key(&t));
    let seats = sim.participants(0, &room);
    assert_eq!(seats.get(&(singer1.clone(), s)), Some(&false), "node 1's user is where they were");
    assert_eq!(seats.get(&(singer2, s)), Some(&false), "node 2's user has a seat of their own");
    let rejected = sim.nodes[0].machine.stats().records.get(&("presence".to_owned(), "rejected")).copied();
    assert_eq!(rejected, Some(1), "the forged presence counts against node 2");
}

#[test]
fn a_user_of_another_node_has_a_bounded_number_of_seats() {
    let (mut sim, g, room) = setup3();
    let singer = sim.user(1, "singer");
    for k in 0..40u8 {
        sim.join(1, &singer, SessionId([k; 16]), room, false);
    }
    sim.run_for(2_000);
    let seats = sim.participants(0, &room).keys().filter(|(u, _)| u == &singer).count();
    assert_eq!(seats, 16, "node 0 keeps at most 16 of the user's sessions");
    let _ = g;
}

/// A stage invitation of `singer` on node `from` for `alice` on node `to`, signed by node
/// `signer`.
fn moderation(sim: &Sim, signer: usize, from: usize, to: usize, room: (voicechat_protocol::ids::GroupId, voicechat_protocol::ids::RoomId), from_s: SessionId, to_s: SessionId) -> Vec<u8> {
    signed_signal(sim, signer, (from, to), room, (from_s, to_s), (SignalType::Moderate, r#"{"action":"invite"}"#))
}

#[test]
fn moderations_go_through_the_groups_home() {
    let (mut sim, g, _) = setup3();
    // Node 0 is the group's home; a stage moderator sings on node 2, the target on node 1.
    let alice1 = sim.user(1, "alice");
    sim.add_member(0, g, &alice1);
    let r = sim.create_room_as(0, g, "Hall", true);
    let room = (g, r);
    sim.run_for(3_000);
    let (moderator, target) = (SessionId([0x2d; 16]), SessionId([0x1a; 16]));
    let singer2 = sim.user(2, "singer");
    sim.join(2, &singer2, moderator, room, false);
    sim.join(1, &alice1, target, room, false);
    sim.run_for(1_000);
    let answer = |sim: &Sim, t| rpc::decode::<SignalResponse>(&sim.answers[&t], rpc::MAX_SIGNAL_RESPONSE).unwrap().error;

    // Straight from the moderator's node to the target's: refused, whoever signed it.
    let t = sim.ask(2, 1, Proto::Signal, moderation(&sim, 2, 2, 1, room, moderator, target));
    sim.run_for(1_000);
    assert_eq!(answer(&sim, t), Some(RpcError::Invalid), "a moderation around the home");
    // Handed on by the home, under its key: the target's node takes it.
    let t = sim.ask(0, 1, Proto::Signal, moderation(&sim, 0, 2, 1, room, moderator, target));
    sim.run_for(1_000);
    assert_eq!(answer(&sim, t), None, "from the home");
    // A third node cannot pass itself off as the home (its own signature, sent by itself).
    let t = sim.ask(2, 1, Proto::Signal, moderation(&sim, 2, 2, 1, room, moderator, target));
    sim.run_for(1_000);
    assert_eq!(answer(&sim, t), Some(RpcError::Invalid));
    // At the home, a moderation for a session of another node is handed to the core to
    // judge once both sessions are in the call (by their presence).
    let t = sim.ask(2, 0, Proto::Signal, moderation(&sim, 2, 2, 1, room, moderator, target));
    sim.run_for(1_000);
    assert_eq!(answer(&sim, t), None, "judged by the home's core");
    let t = sim.ask(2, 0, Proto::Signal, moderation(&sim, 2, 2, 1, room, moderator, SessionId([0x77; 16])));
    sim.run_for(4_000);
    assert_eq!(answer(&sim, t), Some(RpcError::NoSession), "no such target in the call");

    // The moderator's node sends a moderation to the home, not to the target's node.
    let before = (sim.nodes[0].machine.stats().records.clone(), sim.nodes[1].machine.stats().records.clone());
    let id = sim.command(2, Command::Signal(OutSignal {
        from: singer2.clone(),
        from_session: moderator,
        to: alice1.clone(),
        to_session: target,
        room,
        kind: SignalType::Moderate,
        data: r#"{"action":"mute"}"#.into(),
    }));
    sim.run_for(1_000);
    let signals = |s: &std::collections::HashMap<(String, &'static str), u64>| s.iter().filter(|((k, _), _)| k == "signal").map(|(_, n)| n).sum::<u64>();
    assert!(signals(&sim.nodes[0].machine.stats().records) > signals(&before.0), "the home judged it");
    assert_eq!(signals(&sim.nodes[1].machine.stats().records), signals(&before.1), "the target's node was not asked");
    assert!(matches!(sim.nodes[2].done.get(&id), Some(CommandResult::Signal(Ok(())))), "{:?}", sim.nodes[2].done.get(&id));
}
