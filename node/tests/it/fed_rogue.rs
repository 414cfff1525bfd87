//! Attacks from outside, by an in-process libp2p node with a valid key of its own (the
//! rogue) against real node processes: it cannot connect to a closed node; in open
//! federation it cannot take a name the operator pinned, learns no group of anyone, cannot
//! put a group into a user's list (it is an invitation the user declines, and blocks), cannot
//! touch a session of another node's user, is held to one name and never dialled, and is
//! cut off when it floods. Users see nothing of it; honest nodes keep working.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use voicechat_node::federation::net::{Multiaddr, Net, NetConfig, NetEvent, PeerId, Proto};
use voicechat_protocol::ids::{GroupId, NodeName, Role, SessionId, UserId};
use voicechat_protocol::records::{Answer, GroupInfo, Membership, Presence, PresenceState, Record};
use voicechat_protocol::rpc::{self, InviteRequest, InviteResponse, PushRequest, PushResponse, RpcError, SyncRequest, SyncResponse};
use voicechat_protocol::{Envelope, NodeCard, NodeKey, SigningKey};

use crate::harness::*;

fn micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b
}

/// How the rogue answers a sync request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    Refuse,
    /// Every page full of junk, and "more" forever.
    Endless,
}

/// An in-process node: a transport, a key, and what it was sent.
struct Rogue {
    net: Net,
    key: SigningKey,
    pushed: Arc<Mutex<Vec<Vec<u8>>>>,
    syncs: Arc<Mutex<u32>>,
    mode: Arc<Mutex<SyncMode>>,
}

impl Rogue {
    async fn start(seed: [u8; 32], peers: &[&Node]) -> Rogue {
        let cfg = NetConfig::open(
            seed,
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers.iter().map(|n| n.p2p.parse::<Multiaddr>().unwrap()).collect(),
        );
        let (net, mut events) = Net::start(cfg).await.expect("rogue transport starts");
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let syncs = Arc::new(Mutex::new(0));
        let mode = Arc::new(Mutex::new(SyncMode::Refuse));
        let key = SigningKey::from_bytes(&seed);
        let (p, s, m, k) = (pushed.clone(), syncs.clone(), mode.clone(), key.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let NetEvent::Request { proto, data, reply, .. } = ev else { continue };
                match proto {
                    Proto::Push => {
                        if let Ok(req) = rpc::decode::<PushRequest>(&data, rpc::MAX_PUSH_REQUEST) {
                            p.lock().unwrap().extend(req.records.into_iter().map(|b| b.into_vec()));
                        }
                        let _ = reply.send(rpc::encode(&PushResponse::default()));
                    }
                    Proto::Sync => {
                        *s.lock().unwrap() += 1;
                        let req: SyncRequest = rpc::decode(&data, rpc::MAX_SYNC_REQUEST).unwrap();
                        let resp = match *m.lock().unwrap() {
                            SyncMode::Refuse => SyncResponse { more: false, error: Some(RpcError::NotMember), records: vec![], unchanged: false },
                            SyncMode::Endless => {
                                let junk: Vec<_> = (0..rpc::MAX_SYNC_RECORDS)
                                    .map(|_| {
                                        let user: UserId = format!("x{}@rogue", hex::encode(&random16()[..6])).parse().unwrap();
                                        let rec = Record::Membership(Membership { seq: micros(), role: Some(Role::Member), user, group: req.group });
                                        Envelope::seal(&rec, &k).encode().into()
                                    })
                                    .collect();
                                SyncResponse { more: true, error: None, records: junk, unchanged: false }
                            }
                        };
                        let _ = reply.send(rpc::encode(&resp));
                    }
                    _ => {} // dropping `reply` closes the stream
                }
            }
        });
        Rogue { net, key, pushed, syncs, mode }
    }

    async fn new(peers: &[&Node]) -> Rogue {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        Rogue::start(seed, peers).await
    }

    fn node_key(&self) -> NodeKey {
        NodeKey::from_signing_key(&self.key)
    }

    fn seal(&self, r: Record) -> Vec<u8> {
        Envelope::seal(&r, &self.key).encode()
    }

    fn card(&self, name: &str, addrs: Vec<String>) -> Vec<u8> {
        self.seal(Record::NodeCard(NodeCard {
            key: self.node_key(),
            seq: micros(),
            url: "http://127.0.0.1:9".into(),
            name: NodeName::new(name).unwrap(),
            addrs,
        }))
    }

    async fn wait_connected(&self, node: &Node) {
        let peer: PeerId = node.peer_id().parse().unwrap();
        let deadline = Instant::now() + FED_WAIT;
        while !self.net.connected().await.contains(&peer) {
            assert!(Instant::now() < deadline, "the rogue could not connect to {}", node.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn push(&self, to: &Node, records: Vec<Vec<u8>>) -> Result<PushResponse, String> {
        let peer: PeerId = to.peer_id().parse().unwrap();
        let req = rpc::encode(&PushRequest { records: records.into_iter().map(Into::into).collect() });
        let resp = self.net.request(peer, Proto::Push, req).await.map_err(|e| e.to_string())?;
        rpc::decode(&resp, rpc::MAX_PUSH_RESPONSE).map_err(|e| e.to_string())
    }

    async fn ask<T: serde::Serialize + serde::de::DeserializeOwned>(&self, to: &Node, proto: Proto, req: Vec<u8>, max: usize) -> T {
        let peer: PeerId = to.peer_id().parse().unwrap();
        let resp = self.net.request(peer, proto, req).await.unwrap_or_else(|e| panic!("{:?} to {}: {e}", proto, to.name));
        rpc::decode(&resp, max).unwrap()
    }

    /// Every record pushed to the rogue so far, opened.
    fn heard(&self) -> Vec<Record> {
        self.pushed.lock().unwrap().iter().filter_map(|b| Envelope::decode(b).ok()?.open().ok()).collect()
    }
}

/// The records the rogue heard that are not node cards.
fn group_facts(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| !matches!(r, Record::NodeCard(_))).collect()
}

/// Every message on the socket since the last look is none of these types.
async fn saw_none_of(ws: &mut Ws, types: &[&str]) {
    for m in ws.barrier().await {
        let ty = m["type"].as_str().unwrap_or("");
        assert!(!types.contains(&ty), "{}: the rogue's doing reached the page: {m}", ws.user);
    }
    ws.clear();
}

#[tokio::test]
async fn a_closed_node_admits_no_stranger() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut aws = Ws::connect(&alice).await;
    let rogue = Rogue::new(&[&alpha, &beta]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rogue.net.connected().await.is_empty(), "neither node kept the stranger's connection");
    let r = rogue.push(&alpha, vec![rogue.card("gamma", vec![])]).await;
    assert!(r.is_err(), "a push from a stranger gets no answer: {r:?}");
    let t = metrics_text(&alpha).await;
    assert_eq!(fed_records(&t, &[("kind", "node_card"), ("verdict", "accepted")]), 1.0, "only beta's card");
    saw_none_of(&mut aws, &["group", "invitations", "presence", "participants", "participant_joined", "group_removed"]).await;
    // The honest pair keeps working.
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Still here").await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    rogue.net.shutdown().await;
}

#[tokio::test]
async fn in_open_federation_a_stranger_cannot_take_a_pinned_name() {
    // alpha is open and pins beta by id; beta is not up yet.
    let beta_plan = plan("beta");
    let beta_id = beta_plan.peer_id.clone();
    let alpha = Node::start_peered_with(None, "alpha", &[], &["--federation", "open", "--peer", &format!("/p2p/{beta_id}")]);
    let rogue = Rogue::new(&[&alpha]).await;
    rogue.wait_connected(&alpha).await;
    // The rogue calls itself beta first: trusted on first use (nothing better is known)...
    rogue.push(&alpha, vec![rogue.card("beta", vec![])]).await.unwrap();
    wait_metrics(&alpha, "the rogue's card", |t| fed_records(t, &[("kind", "node_card"), ("verdict", "accepted")]) >= 1.0).await;
    // ...until the pinned beta arrives: the operator's pin wins the name.
    let beta = Node::start_planned(beta_plan, &[&alpha], &[], &[]);
    wait_federated(&[&alpha, &beta]).await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Pinned").await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    poll_get(&mut carol, &format!("/api/groups/{gid}"), "carol sees the group", |r| r.status == 200).await;
    // The rogue's claim again: refused now.
    let before = fed_records(&metrics_text(&alpha).await, &[("kind", "node_card"), ("verdict", "rejected")]);
    rogue.push(&alpha, vec![rogue.card("beta", vec![])]).await.unwrap();
    wait_metrics(&alpha, "the claim refused", |t| fed_records(t, &[("kind", "node_card"), ("verdict", "rejected")]) > before).await;
    assert!(group_facts(&rogue.heard()).is_empty(), "the rogue heard nothing of the group: {:?}", rogue.heard());
    rogue.net.shutdown().await;
}

#[tokio::test]
async fn an_outsider_learns_no_group_and_cannot_put_one_in_a_users_list() {
    let alpha = Node::start_peered_with(None, "alpha", &[], &["--federation", "open"]);
    let mut alice = registered_on(&alpha, "alice").await;
    let _bob = registered_on(&alpha, "bob").await;
    let mut aws = Ws::connect(&alice).await;
    let gid = create_group(&mut alice, "Private").await;
    let rid = create_room(&mut alice, &gid, "Den").await;
    add_member(&mut alice, &gid, "bob").await;

    let rogue = Rogue::new(&[&alpha]).await;
    rogue.wait_connected(&alpha).await;
    rogue.push(&alpha, vec![rogue.card("rogue", vec![])]).await.unwrap();
    wait_metrics(&alpha, "the rogue's card", |t| fed_records(t, &[("kind", "node_card"), ("verdict", "accepted")]) >= 1.0).await;
    // Activity in the group: a new room, a call.
    create_room(&mut alice, &gid, "Annex").await;
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(group_facts(&rogue.heard()).is_empty(), "the rogue heard of the group: {:?}", rogue.heard());
    // Asking for the group by id, or a made-up one, or with a made-up invite: nothing.
    let g: GroupId = gid.parse().unwrap();
    for group in [g, GroupId(random16())] {
        let r: SyncResponse = rogue.ask(&alpha, Proto::Sync, rpc::encode(&SyncRequest { page: 0, group, digest: None }), rpc::MAX_SYNC_RESPONSE).await;
        assert_eq!((r.error, r.records.len()), (Some(RpcError::NotMember), 0));
    }
    let req = InviteRequest { code: "0123456789abcdef".into(), user: "eve@rogue".parse().unwrap() };
    let r: InviteResponse = rogue.ask(&alpha, Proto::Invite, rpc::encode(&req), rpc::MAX_INVITE_RESPONSE).await;
    assert_eq!((r.error, r.records.len()), (Some(RpcError::BadInvite), 0));
    aws.clear();

    // A group homed on the rogue that "adds" alice: an invitation, nothing more.
    let forced = |rogue: &Rogue, name: &str| {
        let g = GroupId(random16());
        let home = NodeName::new("rogue").unwrap();
        let info = rogue.seal(Record::GroupInfo(GroupInfo { seq: micros(), home, name: name.into(), group: g, deleted: false }));
        let m = rogue.seal(Record::Membership(Membership { seq: micros(), role: Some(Role::Member), user: "alice@alpha".parse().unwrap(), group: g }));
        (g, vec![info, m])
    };
    let (fg, recs) = forced(&rogue, "Free Prizes");
    rogue.push(&alpha, recs).await.unwrap();
    let inv = aws.next_matching_within("the invitation", FED_WAIT, |m| m["type"] == "invitations").await;
    assert_eq!(inv["invitations"][0]["name"], "Free Prizes", "{inv}");
    assert_eq!(inv["invitations"][0]["home"], "rogue", "{inv}");
    let groups = alice.get("/api/groups").await.body;
    assert_eq!(groups.as_array().map(|a| a.len()), Some(1), "only her own group is listed: {groups}");
    alice.get(&format!("/api/groups/{fg}")).await.expect_err(404, "not_found");
    saw_none_of(&mut aws, &["group"]).await;
    // She declines: the rogue hears alpha's signed answer; nothing of it is left.
    alice.post_empty(&format!("/api/invitations/{fg}/decline")).await.expect(204);
    let deadline = Instant::now() + FED_WAIT;
    while !rogue.heard().iter().any(|r| matches!(r, Record::Consent(c) if c.group == fg && c.answer == Answer::Declined)) {
        assert!(Instant::now() < deadline, "no answer reached the group's home");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alice.get("/api/invitations").await.body, json!([]));
    // She blocks the node: its next "invitation" is declined without showing.
    alice.post_json("/api/blocks", json!({"node": "rogue"})).await.expect(204);
    assert_eq!(alice.get("/api/blocks").await.body, json!(["rogue"]));
    aws.barrier().await;
    aws.clear();
    let (fg2, recs) = forced(&rogue, "Free Prizes 2");
    rogue.push(&alpha, recs).await.unwrap();
    let deadline = Instant::now() + FED_WAIT;
    while !rogue.heard().iter().any(|r| matches!(r, Record::Consent(c) if c.group == fg2 && c.answer == Answer::Declined)) {
        assert!(Instant::now() < deadline, "the blocked node's invitation was not declined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alice.get("/api/invitations").await.body, json!([]));
    saw_none_of(&mut aws, &["group", "invitations"]).await;
    rogue.net.shutdown().await;
}

#[tokio::test]
async fn a_node_cannot_touch_a_session_of_another_nodes_user() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Calls").await;
    let rid = create_room(&mut alice, &gid, "Call").await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    for ws in [&mut aws, &mut cws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    let (a, c) = (aws.session.clone(), cws.session.clone());
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, false);
    aws.wait_list_within("both in the call", FED_WAIT, &rid, both).await;
    aws.clear();

    // beta's key, stolen (read from its data dir): alpha takes it for beta.
    let evil = Rogue::start(beta.key_seed(), &[&alpha]).await;
    evil.wait_connected(&alpha).await;
    let (g, r): (GroupId, _) = (gid.parse().unwrap(), rid.parse().unwrap());
    let a_session: SessionId = a.parse().unwrap();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 30;
    let pres = |user: &str, state| {
        evil.seal(Record::Presence(Presence { seq: micros(), room: r, user: user.parse().unwrap(), group: g, muted: true, stage: None, state, session: a_session, name: None, joined_at: None, expires_at: exp }))
    };
    let before = fed_records(&metrics_text(&alpha).await, &[("kind", "presence"), ("verdict", "rejected")]);
    // alice's session, said to have left (and muted), signed by beta: not beta's user.
    evil.push(&alpha, vec![pres("alice@alpha", PresenceState::Left), pres("alice@alpha", PresenceState::Joined)]).await.unwrap();
    // carol's record with alice's session id: a seat of carol's, alice untouched.
    evil.push(&alpha, vec![pres("carol@beta", PresenceState::Left)]).await.unwrap();
    wait_metrics(&alpha, "the forged presence refused", |t| fed_records(t, &[("kind", "presence"), ("verdict", "rejected")]) >= before + 2.0).await;
    let view = alice.get(&format!("/api/groups/{gid}")).await.body;
    let room = view["rooms"].as_array().unwrap().iter().find(|x| x["id"] == rid.as_str()).unwrap().clone();
    let list = room["participants"].as_array().unwrap().clone();
    assert!(has_session(&list, "alice@alpha", &a, false), "alice is where she was: {list:?}");
    for m in aws.barrier().await {
        if is_presence(&m) {
            assert_ne!(m["participant"]["session"], a.as_str(), "alice's seat changed: {m}");
        }
        assert_ne!(m["type"], "left", "alice was taken out of her call: {m}");
    }
    assert!(has_session(aws.list(&rid).unwrap(), "alice@alpha", &a, false), "alice's seat changed: {:?}", aws.lists);
    evil.net.shutdown().await;
}

#[tokio::test]
async fn a_stranger_gets_one_name_is_never_dialled_and_is_cut_off_when_it_floods() {
    let alpha = Node::start_peered_with(None, "alpha", &[], &["--federation", "open"]);
    let mut alice = registered_on(&alpha, "alice").await;
    let rogue = Rogue::new(&[&alpha]).await;
    rogue.wait_connected(&alpha).await;
    // A listener of the test's own, named as the rogue's address: alpha must never dial it.
    let lure = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    lure.set_nonblocking(true).unwrap();
    let lure_addr = format!("/ip4/127.0.0.1/tcp/{}", lure.local_addr().unwrap().port());
    let mut cards = vec![rogue.card("rogue", vec![lure_addr])];
    for i in 0..49 {
        cards.push(rogue.card(&format!("rogue{i}"), vec![]));
    }
    rogue.push(&alpha, cards).await.unwrap();
    let t = wait_metrics(&alpha, "50 cards judged", |t| {
        fed_records(t, &[("kind", "node_card"), ("verdict", "accepted")]) + fed_records(t, &[("kind", "node_card"), ("verdict", "rejected")])
            >= 50.0
    })
    .await;
    assert_eq!(fed_records(&t, &[("kind", "node_card"), ("verdict", "accepted")]), 1.0, "one name per key");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lure.accept().is_err(), "alpha dialled an address a stranger's card named");

    // A flood: twenty pushes of 1,024 garbage records at once.
    let garbage: Vec<Vec<u8>> = (0..1024u32).map(|i| [&[0x84u8, 0x61, b'x'][..], &i.to_be_bytes()].concat()).collect();
    let floods: Vec<_> = (0..20).map(|_| rogue.push(&alpha, garbage.clone())).collect();
    let results = futures_util::future::join_all(floods).await;
    assert!(results.iter().any(|r| r.is_err() || r.as_ref().is_ok_and(|p| p.error.is_some())), "some were refused or cut");
    let deadline = Instant::now() + FED_WAIT;
    while !rogue.net.connected().await.is_empty() {
        assert!(Instant::now() < deadline, "the flooding peer was not cut off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // alpha serves its users as ever.
    let gid = create_group(&mut alice, "Unbothered").await;
    alice.get(&format!("/api/groups/{gid}")).await.expect(200);
    // And keeps the rogue out for a while.
    rogue.net.add_peer(alpha.p2p.parse().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = rogue.push(&alpha, vec![rogue.card("rogue", vec![])]).await;
    assert!(again.as_ref().is_err() || again.as_ref().is_ok_and(|r| r.error.is_some()), "refused while cut off: {again:?}");
    rogue.net.shutdown().await;
}

#[tokio::test]
async fn an_endless_sync_is_cut_at_a_few_pages() {
    // alice accepted a group homed on the rogue; its home answers every sync page with
    // 1,024 records and "more".
    let alpha = Node::start_peered_with(None, "alpha", &[], &["--federation", "open", "--resync-secs", "2"]);
    let mut alice = registered_on(&alpha, "alice").await;
    let rogue = Rogue::new(&[&alpha]).await;
    rogue.wait_connected(&alpha).await;
    rogue.push(&alpha, vec![rogue.card("rogue", vec![])]).await.unwrap();
    let g = GroupId(random16());
    let info = rogue.seal(Record::GroupInfo(GroupInfo { seq: micros(), home: NodeName::new("rogue").unwrap(), name: "Bottomless".into(), group: g, deleted: false }));
    let m = rogue.seal(Record::Membership(Membership { seq: micros(), role: Some(Role::Member), user: "alice@alpha".parse().unwrap(), group: g }));
    rogue.push(&alpha, vec![info, m]).await.unwrap();
    accept_invitation(&mut alice, &g.to_string()).await;
    *rogue.mode.lock().unwrap() = SyncMode::Endless;
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    let pid = alpha.pid();
    let before = rss(pid);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let syncs = *rogue.syncs.lock().unwrap();
    assert!(syncs >= 8, "alpha synced the group ({syncs} pages asked)");
    // Rounds every ~2 s, each at most 8 pages: never one endless round.
    assert!(syncs <= 8 * 6, "{syncs} pages in 8 s");
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 200 * 1024, "alpha's memory grew by {grown} KiB");
    alice.get("/api/groups").await.expect(200);
    rogue.net.shutdown().await;
}
