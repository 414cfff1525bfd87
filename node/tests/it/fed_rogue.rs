//! A rogue peer cannot change anything: an in-process node built from the protocol crate
//! and the node's transport introduces itself (valid NodeCard "rogue"), then sends alpha and
//! beta, by gossip on the group's topic and by push, a forged signature, a room signed by a
//! non-home node, a replayed and a reordered presence, an expired presence, an oversized
//! envelope, garbage, an unknown kind and a NodeCard claiming "beta". Every one is dropped:
//! users on both nodes see no change, `/metrics` counts the rejects and ignores, and both
//! nodes go on federating (rooms propagate, signals relay).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::Signer;
use serde_json::{Value, json};
use voicechat_node::federation::net::{Multiaddr, Net, NetConfig, NetEvent, PeerId, Proto, Verdict};
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::rpc::{self, PushRequest, PushResponse};
use voicechat_protocol::{Envelope, NodeCard, NodeKey, Presence, PresenceState, Record, RoomInfo, SigningKey, signing_input};

use crate::harness::*;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b
}

/// A GroupDetail reduced to what users see, in a stable order.
fn normalize(g: &Value) -> Value {
    let mut members = pick_all(&g["members"], MEMBER).as_array().unwrap().clone();
    members.sort_by_key(|m| m["user"].as_str().unwrap_or("").to_owned());
    let mut rooms: Vec<Value> = g["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("no rooms in {g}"))
        .iter()
        .map(|r| json!({"id": r["id"], "name": r["name"], "participants": normalize_participants(&r["participants"])}))
        .collect();
    rooms.sort_by_key(|r| r["id"].as_str().unwrap_or("").to_owned());
    json!({"id": g["id"], "name": g["name"], "home": g["home"], "role": g["role"], "members": members, "rooms": rooms})
}

fn normalize_participants(p: &Value) -> Value {
    let mut ps = pick_all(p, &["user", "session", "muted"]).as_array().unwrap().clone();
    ps.sort_by_key(|p| p["session"].as_str().unwrap_or("").to_owned());
    Value::Array(ps)
}

/// Every group/participants event on the socket since the last check matches `baseline`.
async fn assert_unchanged(ws: &mut Ws, gid: &str, baseline: &Value) {
    let seen = ws.barrier().await;
    for m in seen {
        match m["type"].as_str() {
            Some("group") if m["group"]["id"] == gid => {
                assert_eq!(normalize(&m["group"]), *baseline, "{}: a group event changed the group: {m}", ws.user)
            }
            Some("participants") if m["group"] == gid => {
                let room = baseline["rooms"].as_array().unwrap().iter().find(|r| r["id"] == m["room"]);
                let room = room.unwrap_or_else(|| panic!("{}: participants of an unknown room: {m}", ws.user));
                assert_eq!(
                    normalize_participants(&m["participants"]),
                    room["participants"],
                    "{}: participants changed: {m}",
                    ws.user
                );
            }
            _ => panic!("{}: unexpected message while the rogue was at work: {m}", ws.user),
        }
    }
    ws.clear();
}

/// The rogue: a transport, its key, and what it heard on the group's topic.
struct Rogue {
    net: Net,
    key: SigningKey,
    heard: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Rogue {
    async fn start(peers: &[&Node], topic: String) -> Rogue {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let cfg = NetConfig {
            seed,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers: peers.iter().map(|n| n.p2p.parse::<Multiaddr>().unwrap()).collect(),
        };
        let (net, mut events) = Net::start(cfg).await.expect("rogue transport starts");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (h, n) = (heard.clone(), net.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    NetEvent::Gossip { id, source, topic: t, data } => {
                        if t == topic {
                            h.lock().unwrap().push(data);
                        }
                        n.report(id, source, Verdict::Ignore);
                    }
                    NetEvent::Request { proto: Proto::Push, reply, .. } => {
                        let _ = reply.send(rpc::encode(&PushResponse::default()));
                    }
                    _ => {} // other requests: dropping `reply` closes the stream
                }
            }
        });
        Rogue { net, key: SigningKey::from_bytes(&seed), heard }
    }

    fn node_key(&self) -> NodeKey {
        NodeKey::from_signing_key(&self.key)
    }

    /// Heard envelopes that open (valid signature) with their records.
    fn heard_records(&self) -> Vec<(Vec<u8>, Envelope, Record)> {
        let heard = self.heard.lock().unwrap().clone();
        heard
            .into_iter()
            .filter_map(|b| {
                let env = Envelope::decode(&b).ok()?;
                let rec = env.open().ok()?;
                Some((b, env, rec))
            })
            .collect()
    }

    async fn push(&self, to: &Node, records: Vec<Vec<u8>>) {
        let peer: PeerId = to.peer_id().parse().unwrap();
        let req = rpc::encode(&PushRequest { records: records.into_iter().map(Into::into).collect() });
        let resp = self.net.request(peer, Proto::Push, req).await.unwrap_or_else(|e| panic!("push to {}: {e}", to.name));
        let resp: PushResponse = rpc::decode(&resp, rpc::MAX_PUSH_RESPONSE)
            .unwrap_or_else(|e| panic!("{}: undecodable push response {resp:?}: {e}", to.name));
        assert_eq!(resp.error, None, "{}: a push with invalid records must not fail as a whole", to.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_changes_nothing() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Guarded").await;
    let rid = create_room(&mut alice, &gid, "Vault").await;
    let g = format!("/api/groups/{gid}");
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&rid))).await;
    let (a, c) = (aws.session.clone(), cws.session.clone());
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, false);
    aws.next_matching_within("participants with carol@beta", FED_WAIT, participants_event(&rid, both)).await;

    // The rogue connects to both and introduces itself with a valid card.
    let group: GroupId = gid.parse().unwrap();
    let topic = rpc::group_topic(&group);
    let mut cards_before = [0.0; 2];
    for (i, n) in [&alpha, &beta].into_iter().enumerate() {
        cards_before[i] = fed_records(&metrics_text(n).await, &[("kind", "node_card"), ("verdict", "accepted")]);
    }
    let rogue = Rogue::start(&[&alpha, &beta], topic.clone()).await;
    let deadline = Instant::now() + FED_WAIT;
    let want: Vec<PeerId> = [&alpha, &beta].iter().map(|n| n.peer_id().parse().unwrap()).collect();
    loop {
        let connected = rogue.net.connected().await;
        if want.iter().all(|p| connected.contains(p)) {
            break;
        }
        assert!(Instant::now() < deadline, "the rogue could not connect to alpha and beta: {connected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let own_addrs: Vec<String> = rogue
        .net
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .filter(|a| a.contains("/tcp/") && !a.contains("/p2p/"))
        .collect();
    let card = Record::NodeCard(NodeCard {
        key: rogue.node_key(),
        seq: 1,
        url: "http://127.0.0.1:9".into(),
        name: NodeName::new("rogue").unwrap(),
        addrs: own_addrs,
    });
    let card = Envelope::seal(&card, &rogue.key).encode();
    for (i, n) in [&alpha, &beta].into_iter().enumerate() {
        rogue.push(n, vec![card.clone()]).await;
        let before = cards_before[i];
        wait_metrics(n, "accepting the rogue's own valid NodeCard", |t| {
            fed_records(t, &[("kind", "node_card"), ("verdict", "accepted")]) > before
        })
        .await;
    }

    // It listens on the group's topic and collects genuine records: beta's presence of
    // carol (muted, then unmuted) and a room_info signed by alpha.
    rogue.net.subscribe(&topic).await.expect("subscribe");
    let beta_key = NodeKey::from_signing_key(&SigningKey::from_bytes(&beta.key_seed()));
    let alpha_key = NodeKey::from_signing_key(&SigningKey::from_bytes(&alpha.key_seed()));
    let carol_id: UserId = "carol@beta".parse().unwrap();
    let carol_session: SessionId = c.parse().unwrap();
    let carols = |rogue: &Rogue| -> Vec<(Vec<u8>, Presence)> {
        let mut v: Vec<_> = rogue
            .heard_records()
            .into_iter()
            .filter_map(|(b, env, rec)| match rec {
                Record::Presence(p) if env.signer == beta_key && p.user == carol_id && p.session == carol_session => {
                    Some((b, p))
                }
                _ => None,
            })
            .collect();
        v.sort_by_key(|(_, p)| p.seq);
        v
    };
    let deadline = Instant::now() + FED_WAIT;
    let mut i = 0u32;
    let (stale, alpha_room_info) = loop {
        i += 1;
        cws.send(json!({"type": "mute", "muted": i % 2 == 1})).await;
        let heard = carols(&rogue);
        let muted = heard.iter().find(|(_, p)| p.muted && p.state == PresenceState::Joined).cloned();
        let later_unmuted = muted.as_ref().is_some_and(|(_, m)| heard.iter().any(|(_, p)| p.seq > m.seq && !p.muted));
        let room_info = rogue.heard_records().into_iter().find_map(|(b, env, rec)| {
            (matches!(rec, Record::RoomInfo(ref r) if r.group == group) && env.signer == alpha_key).then_some(b)
        });
        if let (Some(m), true, Some(ri)) = (&muted, later_unmuted, &room_info) {
            break (m.clone(), ri.clone());
        }
        if room_info.is_none() {
            alice.patch_json(&format!("{g}/rooms/{rid}"), json!({"name": format!("Vault {i}")})).await.expect(200);
        }
        assert!(
            Instant::now() < deadline,
            "the rogue heard no usable records on {topic}: carol's presences {:?}, room_info {}",
            heard.iter().map(|(_, p)| (p.seq, p.muted)).collect::<Vec<_>>(),
            room_info.is_some()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    };
    // Settle: carol mutes, alpha shows it, carol unmutes, alpha shows that. Once alpha
    // has accepted the mute, every older toggle still in flight is a replay, so the
    // unmuted state alpha shows next is final: that is the baseline.
    let carol_muted = |want: bool| {
        let (rid, a, c) = (rid.clone(), a.clone(), c.clone());
        move |r: &Resp| {
            r.body["rooms"].as_array().is_some_and(|rooms| {
                rooms.iter().any(|room| {
                    room["id"] == rid.as_str()
                        && room["participants"].as_array().is_some_and(|l| {
                            l.len() == 2
                                && has_session(l, "alice@alpha", &a, false)
                                && has_session(l, "carol@beta", &c, want)
                        })
                })
            })
        }
    };
    cws.send(json!({"type": "mute", "muted": true})).await;
    poll_get(&mut alice, &g, "alpha shows carol muted", carol_muted(true)).await;
    cws.send(json!({"type": "mute", "muted": false})).await;
    let base_a = normalize(&poll_get(&mut alice, &g, "alpha shows carol unmuted", carol_muted(false)).await.body);
    let base_c = normalize(&poll_get(&mut carol, &g, "beta shows carol unmuted", carol_muted(false)).await.body);
    let latest = carols(&rogue).last().cloned().expect("a presence of carol");
    aws.barrier().await;
    cws.barrier().await;
    aws.clear();
    cws.clear();
    let metrics_before = [metrics_text(&alpha).await, metrics_text(&beta).await];

    // The bad records.
    let mut forged = Envelope::decode(&alpha_room_info).unwrap();
    forged.sig[10] ^= 0x01;
    let forged = forged.encode();
    let not_home = Envelope::seal(
        &Record::RoomInfo(RoomInfo {
            seq: micros(),
            name: "Rogue room".into(),
            room: RoomId(random16()),
            group,
            deleted: false,
        }),
        &rogue.key,
    )
    .encode();
    let replayed = latest.0.clone();
    let reordered = stale.0.clone();
    // Expired, but otherwise beyond reproach: signed with beta's own key (read from its
    // data dir) so that only the time rule can refuse it.
    let expired = Envelope::seal(
        &Record::Presence(Presence {
            seq: micros() + 1_000_000,
            room: rid.parse().unwrap(),
            user: carol_id.clone(),
            group,
            muted: true,
            state: PresenceState::Joined,
            session: carol_session,
            expires_at: now_secs() - 120,
        }),
        &SigningKey::from_bytes(&beta.key_seed()),
    )
    .encode();
    let oversized = {
        let payload = vec![0x40u8; 70_000];
        let sig = rogue.key.sign(&signing_input("room_info", &payload)).to_bytes();
        Envelope { kind: "room_info".into(), payload, signer: rogue.node_key(), sig }.encode()
    };
    assert!(oversized.len() > 65536);
    let garbage = b"\xff\xfe this is not CBOR \x00\x01\x02".to_vec();
    let unknown_kind = {
        let payload = vec![0xa0]; // an empty CBOR map
        let sig = rogue.key.sign(&signing_input("zzz", &payload)).to_bytes();
        Envelope { kind: "zzz".into(), payload, signer: rogue.node_key(), sig }.encode()
    };
    let fake_beta = Envelope::seal(
        &Record::NodeCard(NodeCard {
            key: rogue.node_key(),
            seq: micros(),
            url: "http://127.0.0.1:9".into(),
            name: NodeName::new("beta").unwrap(),
            addrs: vec![],
        }),
        &rogue.key,
    )
    .encode();
    let all = vec![
        forged,
        not_home,
        replayed,
        reordered,
        expired,
        oversized.clone(),
        garbage,
        unknown_kind,
        fake_beta,
    ];

    // By gossip (the transport itself refuses to publish the oversized one) …
    for (i, rec) in all.iter().enumerate() {
        let r = rogue.net.publish(&topic, rec.clone()).await;
        if rec.len() <= 65536 {
            r.unwrap_or_else(|e| panic!("rogue publish #{i}: {e}"));
        }
    }
    // … and by push, to both nodes.
    rogue.push(&alpha, all.clone()).await;
    rogue.push(&beta, all.clone()).await;

    // Both nodes counted them: 5 rejected (forged, not home, oversized, garbage, fake
    // beta) and 4 ignored (replayed, reordered, expired, unknown kind) at least, by push alone.
    for (i, n) in [&alpha, &beta].into_iter().enumerate() {
        let b = &metrics_before[i];
        let rej0 = fed_records(b, &[("verdict", "rejected")]);
        let ign0 = fed_records(b, &[("verdict", "ignored")]);
        let room_rej0 = fed_records(b, &[("kind", "room_info"), ("verdict", "rejected")]);
        let card_rej0 = fed_records(b, &[("kind", "node_card"), ("verdict", "rejected")]);
        let pres_ign0 = fed_records(b, &[("kind", "presence"), ("verdict", "ignored")]);
        let t = wait_metrics(n, "counting the rogue's records as rejected/ignored", |t| {
            fed_records(t, &[("verdict", "rejected")]) >= rej0 + 5.0 && fed_records(t, &[("verdict", "ignored")]) >= ign0 + 4.0
        })
        .await;
        assert!(
            fed_records(&t, &[("kind", "room_info"), ("verdict", "rejected")]) >= room_rej0 + 2.0,
            "{}: the forged and the not-home room_info are rejected",
            n.name
        );
        assert!(
            fed_records(&t, &[("kind", "node_card"), ("verdict", "rejected")]) >= card_rej0 + 1.0,
            "{}: the card claiming beta is rejected",
            n.name
        );
        assert!(
            fed_records(&t, &[("kind", "presence"), ("verdict", "ignored")]) >= pres_ign0 + 3.0,
            "{}: the replayed, reordered and expired presence are ignored",
            n.name
        );
    }

    // Nobody saw a change.
    assert_unchanged(&mut aws, &gid, &base_a).await;
    assert_unchanged(&mut cws, &gid, &base_c).await;
    assert_eq!(normalize(&alice.get(&g).await.body), base_a, "alpha's view changed");
    assert_eq!(normalize(&carol.get(&g).await.body), base_c, "beta's view changed");
    for c in [&mut alice, &mut carol] {
        let r = c.get("/api/groups").await;
        assert_eq!(r.body.as_array().map(|a| a.len()), Some(1), "{r:?}");
    }

    // Both nodes still federate: a new room reaches beta, signals relay both ways.
    let after = create_room(&mut alice, &gid, "After the storm").await;
    cws.next_matching_within("the new room on beta", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&after))).await;
    aws.send(json!({"type": "signal", "to": "carol@beta", "to_session": c, "kind": "offer", "data": {"sdp": "ok"}}))
        .await;
    let s = cws.next_matching_within("alice's offer", FED_WAIT, |m| m["type"] == "signal").await;
    assert_eq!((&s["from"], &s["data"]), (&json!("alice@alpha"), &json!({"sdp": "ok"})), "{s}");
    cws.send(json!({"type": "signal", "to": "alice@alpha", "to_session": a, "kind": "answer", "data": "fine"})).await;
    let s = aws.next_matching_within("carol's answer", FED_WAIT, |m| m["type"] == "signal").await;
    assert_eq!((&s["from"], &s["data"]), (&json!("carol@beta"), &json!("fine")), "{s}");
    rogue.net.shutdown().await;
}
