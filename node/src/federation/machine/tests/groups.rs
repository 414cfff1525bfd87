//! Groups cross to the nodes with members in them and nowhere else; a partitioned node
//! catches up after the heal; an outsider learns no group id; a remote user's node answers
//! an invitation and the home acts on it.

use voicechat_protocol::ids::GroupId;
use voicechat_protocol::records::Answer;
use voicechat_protocol::rpc::{self, RpcError, SyncRequest, SyncResponse};

use super::sim::{Setup, Sim};
use crate::federation::machine::Proto;

/// Every node holding `g` shows what its home shows; the others do not hold it.
fn assert_converged(sim: &Sim, home: usize, g: &GroupId, holders: &[usize]) {
    let want = sim.view(home, g).expect("the home holds its group").clone();
    for i in 0..sim.nodes.len() {
        if i == home {
            continue;
        }
        match (holders.contains(&i), sim.view(i, g)) {
            (true, Some(v)) => assert_eq!(v, &want, "{} differs from the home", sim.nodes[i].name),
            (true, None) => panic!("{} does not hold the group", sim.nodes[i].name),
            (false, Some(_)) => panic!("{} holds a group it has no member in", sim.nodes[i].name),
            (false, None) => {}
        }
    }
}

#[test]
fn a_group_reaches_its_member_nodes_and_no_one_else() {
    let mut sim = Sim::new(Setup::mesh(4));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Book club");
    let (bob, carol) = (sim.user(1, "bob"), sim.user(2, "carol"));
    sim.add_member(0, g, &bob);
    sim.add_member(0, g, &carol);
    let r = sim.create_room(0, g, "Lounge");
    sim.rename_group(0, g, "Readers");
    sim.run_for(2_000);
    assert_converged(&sim, 0, &g, &[1, 2]);
    assert_eq!(sim.view(1, &g).unwrap().rooms[&r], "Lounge");
    assert!(sim.nodes[1].invited.contains(&(g, bob.clone())), "bob's node shows an invitation");
    // Node 3 is connected to everyone and heard nothing of the group.
    assert!(sim.connected(0, 3));
    assert_eq!(sim.nodes[3].group_changes, 0, "no record of the group was applied on a node without members");
    // A member removed: their node forgets the group (its last member there).
    sim.remove_member(0, g, &carol);
    sim.run_for(2_000);
    assert_converged(&sim, 0, &g, &[1]);
    // The group deleted: every member node forgets it.
    sim.delete_group(0, g);
    sim.run_for(2_000);
    assert!((0..4).all(|i| sim.view(i, &g).is_none()));
}

#[test]
fn a_partitioned_node_catches_up_after_the_heal() {
    let mut sim = Sim::new(Setup::mesh(3));
    sim.loss = 0.02;
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Hikers");
    let (bob, carol) = (sim.user(1, "bob"), sim.user(2, "carol"));
    sim.add_member(0, g, &bob);
    sim.add_member(0, g, &carol);
    let r1 = sim.create_room(0, g, "Trail");
    sim.run_for(3_000);
    assert_converged(&sim, 0, &g, &[1, 2]);

    sim.partition(&[2], &[0, 1]);
    let r2 = sim.create_room(0, g, "Summit");
    sim.delete_room(0, g, r1);
    sim.rename_group(0, g, "Hill walkers");
    let dave = sim.user(2, "dave");
    sim.add_member(0, g, &dave);
    sim.run_for(10_000);
    assert_eq!(sim.view(1, &g), sim.view(0, &g), "the connected member follows");
    let stale = sim.view(2, &g).unwrap();
    assert!(stale.rooms.contains_key(&r1) && !stale.rooms.contains_key(&r2), "the cut node missed the changes");

    let healed_at = sim.now;
    sim.heal();
    // Converged within a few seconds of simulated time after the heal.
    let mut at = None;
    for _ in 0..300 {
        sim.run_for(100);
        if sim.view(2, &g) == sim.view(0, &g) {
            at = Some(sim.now - healed_at);
            break;
        }
    }
    let took = at.expect("the cut node converged after the heal");
    assert!(took < 10_000, "converged {took} ms after the heal");
    assert_converged(&sim, 0, &g, &[1, 2]);
}

#[test]
fn an_outsider_learns_no_group_id_name_or_member() {
    let mut sim = Sim::new(Setup::mesh(3));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Secret society");
    let bob = sim.user(1, "bob");
    sim.add_member(0, g, &bob);
    sim.run_for(2_000);
    // Node 2 (connected, pinned, but with no member) asks for the group by its id, and for
    // a made-up one: the same refusal, no records.
    let fake = GroupId([9; 16]);
    let mut answers = Vec::new();
    for group in [g, fake] {
        let t = sim.ask(2, 0, Proto::Sync, rpc::encode(&SyncRequest { page: 0, group, digest: None }));
        sim.run_for(500);
        let resp: SyncResponse = rpc::decode(&sim.answers[&t], rpc::MAX_SYNC_RESPONSE).unwrap();
        answers.push(resp);
    }
    for resp in &answers {
        assert_eq!(resp.error, Some(RpcError::NotMember));
        assert!(resp.records.is_empty());
    }
    assert_eq!(answers[0], answers[1], "an existing group and a made-up one look the same");
    assert!(sim.view(2, &g).is_none());
}

#[test]
fn an_invitation_declined_or_left_ends_at_the_home() {
    let mut sim = Sim::new(Setup::mesh(2));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Spam");
    let bob = sim.user(1, "bob");
    sim.add_member(0, g, &bob);
    sim.run_for(2_000);
    assert!(sim.nodes[1].invited.contains(&(g, bob.clone())));
    sim.consent(1, g, &bob, Answer::Declined);
    sim.run_for(2_000);
    assert!(!sim.view(0, &g).unwrap().members.contains_key(&bob), "the home removed bob");
    assert!(sim.view(1, &g).is_none(), "bob's node forgot the group");

    // Invited again, accepted, then left.
    sim.add_member(0, g, &bob);
    sim.run_for(2_000);
    sim.consent(1, g, &bob, Answer::Accepted);
    sim.run_for(2_000);
    assert!(sim.view(0, &g).unwrap().members.contains_key(&bob));
    sim.consent(1, g, &bob, Answer::Left);
    sim.run_for(2_000);
    assert!(!sim.view(0, &g).unwrap().members.contains_key(&bob));
    assert!(sim.view(1, &g).is_none());
}

#[test]
fn an_old_record_replayed_after_a_group_was_forgotten_changes_nothing() {
    let mut sim = Sim::new(Setup::mesh(3));
    sim.run_for(2_000);
    let g = sim.create_group(0, "alice", "Gone");
    let bob = sim.user(1, "bob");
    sim.add_member(0, g, &bob);
    sim.run_for(2_000);
    let recorded = sim.nodes[0].machine.groups[&g].all_records(sim.now / 1000);
    sim.remove_member(0, g, &bob);
    sim.run_for(2_000);
    assert!(sim.view(1, &g).is_none());
    // Node 2 (pinned by 1) replays the group as it was: below the floor, refused.
    let t = sim.ask(2, 1, Proto::Push, rpc::encode(&rpc::PushRequest { records: recorded.into_iter().map(Into::into).collect() }));
    sim.run_for(1_000);
    let resp: rpc::PushResponse = rpc::decode(&sim.answers[&t], rpc::MAX_PUSH_RESPONSE).unwrap();
    assert_eq!(resp.error, None);
    assert!(sim.view(1, &g).is_none(), "the replayed group did not come back");
    let replayed = sim.nodes[1].machine.stats().records.get(&("group_info".to_owned(), "ignored")).copied();
    assert!(replayed.unwrap_or(0) >= 1);
}

#[test]
fn a_group_stored_without_signed_records_is_synced_whole_from_its_home() {
    // Node 1 upgraded from data written before signed records were kept: it knows the
    // group and its home, nothing signed. The first sync brings everything.
    let mut sim = Sim::new(Setup::mesh(2));
    sim.run_for(2_000);
    let bob = sim.user(1, "bob");
    let g = sim.create_group(0, "alice", "Old");
    sim.add_member(0, g, &bob);
    let r = sim.create_room(0, g, "Old room");
    sim.run_for(2_000);
    // Node 1's replica as an upgrade leaves it: the group and its home, nothing signed.
    let home = sim.nodes[0].name.clone();
    sim.nodes[1].machine.groups.clear();
    sim.nodes[1].machine.groups.insert(g, crate::federation::machine::replica::Group::new(home));
    sim.nodes[1].groups.insert(g, Default::default());
    let syncs = sim.proto_requests(Proto::Sync);
    sim.partition(&[0], &[1]);
    sim.heal();
    sim.run_for(5_000);
    assert!(sim.proto_requests(Proto::Sync) > syncs, "node 1 synced from the home");
    let v = sim.view(1, &g).expect("still held");
    assert_eq!(v.rooms.get(&r).map(String::as_str), Some("Old room"));
    assert!(v.members.contains_key(&bob));
    assert_eq!(sim.nodes[1].machine.groups[&g].members.len(), 2, "the replica holds the signed records again");
}
