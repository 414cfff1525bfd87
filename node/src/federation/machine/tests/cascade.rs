//! The cascade in simulated time (SPEC.md §9.6), with a simulated SFU: three nodes with
//! people in a stage room each pull the other two once, whatever their numbers of people;
//! a node with nobody there pulls nothing and is refused; a node cut off drops out and is
//! pulled again after the heal; the last one out closes its links. Forged, replayed,
//! misdirected and oversized cascade requests, and a node with nobody in the room, are
//! refused with clear errors.

use std::collections::BTreeSet;

use serde_bytes::ByteBuf;
use voicechat_protocol::ids::{Nonce, SessionId};
use voicechat_protocol::records::{Cascade, CascadeType, Record};
use voicechat_protocol::rpc::{self, CascadeRequest, CascadeResponse, RpcError};

use super::sim::{Setup, Sim};
use crate::core::Announce;
use crate::federation::machine::{Input, Proto};
use crate::rooms::RoomKey;
use crate::sfu::LinkKey;

fn setup() -> (Sim, RoomKey) {
    let mut setup = Setup::mesh(3);
    setup.tweak = |c| c.cascade = true;
    let mut sim = Sim::new(setup);
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Lectures");
    let r = sim.create_room_as(0, g, "Hall", true);
    for i in 1..3 {
        for name in ["ann", "bob"] {
            let u = sim.user(i, name);
            sim.add_member(0, g, &u);
        }
    }
    sim.run_for(3_000);
    (sim, (g, r))
}

fn links(sim: &Sim, room: RoomKey, nodes: &[usize]) -> BTreeSet<LinkKey> {
    nodes.iter().map(|n| (room, sim.nodes[*n].name.clone())).collect()
}

#[test]
fn each_node_pulls_each_other_node_once_and_a_cut_off_node_drops_out_until_the_heal() {
    let (mut sim, room) = setup();
    let alice = sim.user(0, "alice");
    let ann1 = sim.user(1, "ann");
    let bob1 = sim.user(1, "bob");
    let ann2 = sim.user(2, "ann");
    sim.join(0, &alice, SessionId([1; 16]), room, false);
    sim.join(1, &ann1, SessionId([2; 16]), room, false);
    sim.run_for(3_000);
    // Node 2 has nobody in the room: nobody pulls from it and it pulls nothing.
    assert_eq!(sim.nodes[0].pulled, links(&sim, room, &[1]));
    assert_eq!(sim.nodes[1].pulled, links(&sim, room, &[0]));
    assert!(sim.nodes[2].pulled.is_empty() && sim.nodes[2].served.is_empty());
    assert_eq!(sim.nodes[0].served, links(&sim, room, &[1]));

    sim.join(2, &ann2, SessionId([3; 16]), room, false);
    sim.run_for(3_000);
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
        assert_eq!(sim.nodes[i].pulled, links(&sim, room, &others), "{} pulls", sim.nodes[i].name);
        assert_eq!(sim.nodes[i].served, links(&sim, room, &others), "{} serves", sim.nodes[i].name);
    }
    // Each node's people are told they reach both others through the cascade.
    for i in 0..3 {
        let others: Vec<_> = (0..3).filter(|j| *j != i).map(|j| sim.nodes[j].name.clone()).collect();
        assert_eq!(sim.nodes[i].cascaded.get(&room), Some(&others), "{} tells its people", sim.nodes[i].name);
    }
    // More people change nothing: one link per (room, node), no new requests.
    let asked = sim.proto_requests(Proto::Cascade);
    assert_eq!(asked, 6, "one offer per ordered pair of nodes");
    sim.join(1, &bob1, SessionId([4; 16]), room, false);
    sim.run_for(60_000);
    assert_eq!(sim.proto_requests(Proto::Cascade), asked, "links are not renegotiated");

    // Node 2 is cut off: the others drop their links with it at once, and it drops its own.
    sim.partition(&[2], &[0, 1]);
    sim.run_for(2_000);
    assert_eq!(sim.nodes[0].pulled, links(&sim, room, &[1]));
    assert_eq!(sim.nodes[0].served, links(&sim, room, &[1]));
    assert_eq!(sim.nodes[1].pulled, links(&sim, room, &[0]));
    assert!(sim.nodes[2].pulled.is_empty(), "{:?}", sim.nodes[2].pulled);
    assert_eq!(sim.nodes[0].cascaded.get(&room), Some(&vec![sim.nodes[1].name.clone()]), "node 2 no longer through the cascade");
    assert_eq!(sim.nodes[2].cascaded.get(&room), Some(&vec![]), "node 2's people reach nobody through it");
    // Their people are told once: node 2 cannot be heard (and node 2's, the other two).
    let n2 = sim.nodes[2].name.clone();
    assert_eq!(sim.nodes[0].reach, vec![(n2.clone(), false)]);
    assert_eq!(sim.nodes[2].reach.len(), 2, "{:?}", sim.nodes[2].reach);
    // The heal: node 2's people are still there, so the links come back.
    sim.heal();
    sim.run_for(10_000);
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
        assert_eq!(sim.nodes[i].pulled, links(&sim, room, &others), "{} pulls after the heal", sim.nodes[i].name);
    }
    assert_eq!(sim.nodes[0].reach, vec![(n2.clone(), false), (n2, true)], "told it is back");

    // Node 0's only person leaves: it stops pulling, and nobody pulls from it any more.
    sim.leave(0, &alice, SessionId([1; 16]), room);
    sim.run_for(3_000);
    assert!(sim.nodes[0].pulled.is_empty() && sim.nodes[0].served.is_empty());
    assert_eq!(sim.nodes[1].pulled, links(&sim, room, &[2]));
    assert_eq!(sim.nodes[2].pulled, links(&sim, room, &[1]));
}

/// A cascade request: (signing node, node named as sender, node named as receiver).
fn offer(sim: &Sim, (signer, from, to): (usize, usize, usize), room: RoomKey, kind: CascadeType, sdp: &str, nonce: u8) -> Vec<u8> {
    let (from, to) = (sim.nodes[from].name.clone(), sim.nodes[to].name.clone());
    let expires_at = sim.now / 1000 + 60;
    let envelope = sim.nodes[signer].signer.seal_at(sim.now * 1000, |_| {
        Record::Cascade(Cascade {
            to,
            sdp: sdp.into(),
            from,
            room: room.1,
            cascade_type: kind,
            group: room.0,
            nonce: Nonce([nonce; 16]),
            expires_at,
        })
    });
    rpc::encode(&CascadeRequest { envelope: ByteBuf::from(envelope) })
}

fn answer(sim: &mut Sim, token: u64) -> CascadeResponse {
    sim.run_for(1_000);
    let bytes = sim.answers.remove(&token).expect("an answer");
    rpc::decode(&bytes, rpc::MAX_CASCADE_MESSAGE).expect("a cascade response")
}

#[test]
fn bad_cascade_requests_are_refused_with_clear_errors() {
    let (mut sim, room) = setup();
    let alice = sim.user(0, "alice");
    let ann1 = sim.user(1, "ann");
    sim.join(0, &alice, SessionId([1; 16]), room, false);
    sim.join(1, &ann1, SessionId([2; 16]), room, false);
    sim.run_for(3_000);

    // An honest offer from node 1 gets node 0's signed answer.
    let honest = offer(&sim, (1, 1, 0), room, CascadeType::Offer, "v=0 offer", 0x11);
    let t = sim.ask(1, 0, Proto::Cascade, honest.clone());
    let a = answer(&mut sim, t);
    assert_eq!(a.error, None);
    let env = voicechat_protocol::Envelope::decode(a.envelope.as_deref().expect("an envelope")).unwrap();
    assert_eq!(env.signer, sim.nodes[0].key, "signed by the node asked");
    let Ok(Record::Cascade(c)) = env.open() else { panic!("not a cascade") };
    assert_eq!((c.cascade_type, c.sdp.as_str(), c.from.as_str(), c.to.as_str()), (CascadeType::Answer, "v=0 answer", "n0", "n1"));

    // The same request again: a replay.
    let t = sim.ask(1, 0, Proto::Cascade, honest);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid), "replayed");
    // Signed by node 2 in node 1's name, or signed by node 2 but sent over node 1's
    // connection: forged.
    let forged = offer(&sim, (2, 1, 0), room, CascadeType::Offer, "v=0 offer", 0x12);
    let t = sim.ask(1, 0, Proto::Cascade, forged);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid), "wrong authority");
    let relayed = offer(&sim, (2, 2, 0), room, CascadeType::Offer, "v=0 offer", 0x13);
    let t = sim.ask(1, 0, Proto::Cascade, relayed);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid), "relayed by a third node");
    // Node 2 has nobody in the room: refused, and nothing is served to it.
    let empty = offer(&sim, (2, 2, 0), room, CascadeType::Offer, "v=0 offer", 0x14);
    let t = sim.ask(2, 0, Proto::Cascade, empty);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::NotInRoom));
    assert!(!sim.nodes[0].served.contains(&(room, sim.nodes[2].name.clone())));
    // Meant for another node.
    let elsewhere = offer(&sim, (1, 1, 2), room, CascadeType::Offer, "v=0 offer", 0x15);
    let t = sim.ask(1, 0, Proto::Cascade, elsewhere);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::NotHome));
    // An answer is not a request.
    let backwards = offer(&sim, (1, 1, 0), room, CascadeType::Answer, "v=0 answer", 0x16);
    let t = sim.ask(1, 0, Proto::Cascade, backwards);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid));
    // SDP over 8192 bytes (the request itself under its cap), and a request over its cap.
    let long = offer(&sim, (1, 1, 0), room, CascadeType::Offer, &"a".repeat(9000), 0x17);
    assert!(long.len() < rpc::MAX_CASCADE_MESSAGE);
    let t = sim.ask(1, 0, Proto::Cascade, long);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid), "oversized SDP");
    let t = sim.ask(1, 0, Proto::Cascade, vec![0xa1; rpc::MAX_CASCADE_MESSAGE + 1]);
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid), "over the request cap");
    let t = sim.ask(1, 0, Proto::Cascade, b"not cbor".to_vec());
    assert_eq!(answer(&mut sim, t).error, Some(RpcError::Invalid));
    // Node 1's honest close ends what node 0 serves it.
    let close = offer(&sim, (1, 1, 0), room, CascadeType::Close, "", 0x18);
    let t = sim.ask(1, 0, Proto::Cascade, close);
    assert_eq!(answer(&mut sim, t), CascadeResponse::default());
    assert!(!sim.nodes[0].served.contains(&(room, sim.nodes[1].name.clone())));
}

#[test]
fn a_conversation_cascades_once_its_call_is_on_the_sfu_of_both_nodes() {
    let (mut sim, stage) = setup();
    let r = sim.create_room_as(0, stage.0, "Chat", false);
    let room = (stage.0, r);
    sim.run_for(2_000);
    let alice = sim.user(0, "alice");
    let ann1 = sim.user(1, "ann");
    sim.join(0, &alice, SessionId([1; 16]), room, false);
    sim.join(1, &ann1, SessionId([2; 16]), room, false);
    sim.run_for(3_000);
    // A mesh call: no links.
    assert!(sim.nodes[0].pulled.is_empty() && sim.nodes[1].pulled.is_empty());
    // Node 1's call moves to its SFU: it asks, and node 0 (still a mesh) refuses.
    sim.input(1, Input::Local(Announce::OnSfu(room)));
    sim.run_for(3_000);
    assert!(sim.nodes[1].pulled.is_empty() && sim.nodes[0].served.is_empty(), "node 0 serves no mesh call");
    assert!(sim.nodes[1].cascaded.get(&room).is_none_or(Vec::is_empty));
    // Node 0's too: both pull, and both tell their people.
    sim.input(0, Input::Local(Announce::OnSfu(room)));
    sim.run_for(35_000);
    assert_eq!(sim.nodes[0].pulled, links(&sim, room, &[1]));
    assert_eq!(sim.nodes[1].pulled, links(&sim, room, &[0]));
    assert_eq!(sim.nodes[0].cascaded.get(&room), Some(&vec![sim.nodes[1].name.clone()]));
    assert_eq!(sim.nodes[1].cascaded.get(&room), Some(&vec![sim.nodes[0].name.clone()]));
    // The call empties: it is a mesh again next time, with no links.
    sim.leave(0, &alice, SessionId([1; 16]), room);
    sim.leave(1, &ann1, SessionId([2; 16]), room);
    sim.run_for(3_000);
    sim.join(0, &alice, SessionId([1; 16]), room, false);
    sim.join(1, &ann1, SessionId([2; 16]), room, false);
    sim.run_for(3_000);
    assert!(sim.nodes[0].pulled.is_empty() && sim.nodes[1].pulled.is_empty(), "{:?}", sim.nodes[0].pulled);
}
