//! Who a name belongs to: a stranger is refused by a closed node; in an open one it cannot
//! take a name the operator pinned (or a DNS name whose origin serves another key); one
//! name per key; a pinned node learnt through a neighbour is dialled; the card store is
//! bounded.

use voicechat_protocol::ids::NodeName;
use voicechat_protocol::records::{NodeCard, Record};
use voicechat_protocol::rpc::{self, PushRequest};

use super::sim::{Setup, Sim};
use crate::federation::machine::{Command, CommandResult, Mode, Proto};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn card_of(sim: &Sim, signer: usize, name: &str, seq_offset: u64) -> Vec<u8> {
    sim.nodes[signer].signer.seal_at(sim.now * 1000 + seq_offset, |seq| {
        Record::NodeCard(NodeCard {
            key: sim.nodes[signer].key,
            seq,
            url: format!("https://{name}"),
            name: NodeName::new(name).unwrap(),
            addrs: vec![],
        })
    })
}

#[test]
fn a_closed_node_refuses_a_stranger_with_a_valid_key() {
    let setup = Setup { names: names(&["alpha", "beta", "stranger"]), mode: Mode::Closed, pins: vec![(0, 1), (1, 0)], bind: false, seed: 1, tweak: |_| {} };
    let mut sim = Sim::new(setup);
    sim.run_for(2_000);
    assert!(sim.connected(0, 1));
    let pushes_before = sim.nodes[0].sent.get("push").copied();
    // alpha sees the connection first (the order of the two sides is the sim's choice).
    sim.dial(0, 2);
    sim.run_for(1_000);
    assert!(!sim.connected(0, 2), "alpha closed the stranger's connection");
    assert_eq!(sim.nodes[0].sent.get("push").copied(), pushes_before, "alpha sent the stranger nothing, not even its card");
    let alpha = &sim.nodes[0].machine;
    assert!(alpha.trust.key_of(&NodeName::new("stranger").unwrap()).is_none());
    assert_eq!(alpha.trust.key_of(&NodeName::new("beta").unwrap()), Some(sim.nodes[1].key));
}

#[test]
fn in_open_federation_a_pin_beats_a_stranger_who_claimed_the_name_first() {
    // Node 2 is a stranger calling itself "beta" too.
    let setup = Setup { names: names(&["alpha", "beta", "beta"]), mode: Mode::Open, pins: vec![(0, 1)], bind: false, seed: 2, tweak: |_| {} };
    let mut sim = Sim::new(setup);
    sim.dns.clear();
    // The pinned beta is out of reach for now; the stranger connects and is trusted on
    // first use...
    sim.partition(&[1], &[0]);
    sim.dial(2, 0);
    sim.run_for(1_000);
    let beta = NodeName::new("beta").unwrap();
    assert_eq!(sim.nodes[0].machine.trust.key_of(&beta), Some(sim.nodes[2].key));
    // ...until the pinned node arrives: the operator's word wins.
    sim.heal();
    sim.run_for(3_000);
    assert!(sim.connected(0, 1));
    assert_eq!(sim.nodes[0].machine.trust.key_of(&beta), Some(sim.nodes[1].key));
    // The stranger's card is refused from now on.
    let again = card_of(&sim, 2, "beta", 10);
    sim.ask(2, 0, Proto::Push, rpc::encode(&PushRequest { records: vec![again.into()] }));
    sim.run_for(1_000);
    assert_eq!(sim.nodes[0].machine.trust.key_of(&beta), Some(sim.nodes[1].key));
}

#[test]
fn a_dns_name_is_bound_only_to_the_key_its_origin_serves() {
    let setup = Setup {
        names: names(&["alpha.example", "beta.example", "rogue.example"]),
        mode: Mode::Open,
        pins: vec![],
        bind: false,
        seed: 3,
        tweak: |_| {},
    };
    let mut sim = Sim::new(setup);
    // The rogue connects and claims beta.example: alpha asks beta.example's origin, which
    // serves beta's card, not the rogue's key.
    sim.dial(2, 0);
    let claim = card_of(&sim, 2, "beta.example", 5);
    sim.ask(2, 0, Proto::Push, rpc::encode(&PushRequest { records: vec![claim.into()] }));
    sim.run_for(2_000);
    let alpha = &sim.nodes[0].machine;
    let beta = NodeName::new("beta.example").unwrap();
    assert_eq!(alpha.trust.key_of(&beta), None, "the claim was not believed");
    assert_eq!(alpha.trust.key_of(&NodeName::new("rogue.example").unwrap()), Some(sim.nodes[2].key), "its own name verifies");
    // Adding a member on beta.example: alpha verifies beta.example and dials it.
    let id = sim.command(0, Command::Discover(beta.clone()));
    sim.run_for(3_000);
    assert_eq!(sim.nodes[0].done.get(&id), Some(&CommandResult::Discovered(Ok(()))));
    assert_eq!(sim.nodes[0].machine.trust.key_of(&beta), Some(sim.nodes[1].key));
    // A name nobody serves cannot be verified.
    let id = sim.command(0, Command::Discover(NodeName::new("nowhere.example").unwrap()));
    sim.run_for(1_000);
    assert!(matches!(sim.nodes[0].done.get(&id), Some(CommandResult::Discovered(Err(_)))));
}

#[test]
fn one_name_per_key() {
    let mut sim = Sim::new(Setup::mesh(2));
    sim.run_for(2_000);
    let second = card_of(&sim, 1, "another-name", 10);
    sim.ask(1, 0, Proto::Push, rpc::encode(&PushRequest { records: vec![second.into()] }));
    sim.run_for(1_000);
    let m = &sim.nodes[0].machine;
    assert_eq!(m.trust.key_of(&NodeName::new("another-name").unwrap()), None);
    assert_eq!(m.trust.key_of(&NodeName::new("n1").unwrap()), Some(sim.nodes[1].key));
    assert_eq!(m.stats().records.get(&("node_card".to_owned(), "rejected")).copied(), Some(1));
}

#[test]
fn a_pinned_node_learnt_through_a_neighbour_is_dialled() {
    // alpha pins beta (with an address) and gamma (key only); beta and gamma pin each
    // other and alpha. alpha learns gamma's card from beta and connects to it.
    let setup = Setup {
        names: names(&["alpha", "beta", "gamma"]),
        mode: Mode::Closed,
        pins: vec![(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)],
        bind: false,
        seed: 4,
        tweak: |_| {},
    };
    let mut sim = Sim::new(setup);
    sim.run_for(5_000);
    assert!(sim.connected(0, 2));
    assert_eq!(sim.nodes[0].machine.trust.key_of(&NodeName::new("gamma").unwrap()), Some(sim.nodes[2].key));
}

#[test]
fn cards_trusted_on_first_use_are_bounded() {
    let mut setup = Setup { names: (0..12).map(|i| format!("n{i}")).collect(), mode: Mode::Open, pins: vec![], bind: false, seed: 5, tweak: |c| c.limits.max_bindings = 8 };
    setup.pins.clear();
    let mut sim = Sim::new(setup);
    for i in 1..12 {
        sim.dial(i, 0);
    }
    sim.run_for(2_000);
    let bound = (1..12).filter(|i| sim.nodes[0].machine.trust.key_of(&sim.nodes[*i].name).is_some()).count();
    assert_eq!(bound, 8, "at most the configured number of cards is kept");
}
