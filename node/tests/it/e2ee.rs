//! End-to-end encryption's relay: the node hands a session's public key (`e2ee_hello`) to
//! the senders of its call (the stage in a stage room) or to everyone, and each wrapped
//! media key (`e2ee_keys`) to its one recipient, untouched; it refuses keys from outside a
//! call and oversized ones, tells the sender how many recipients had gone, and carries both
//! across nodes as signed `e2ee` signals.

use serde_json::{Value, json};

use crate::harness::*;

async fn join(ws: &mut Ws, gid: &str, rid: &str) {
    ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    ws.next_of_type("joined").await;
}

#[tokio::test]
async fn keys_reach_only_their_recipients_in_the_call() {
    let node = Node::start(&[]);
    let [mut alice, bob, carol, dave] = registered_all(&node, ["alice", "bob", "carol", "dave"]).await;
    let gid = create_group(&mut alice, "Keys").await;
    for u in ["bob", "carol", "dave"] {
        add_member(&mut alice, &gid, u).await;
    }
    let rid = create_room(&mut alice, &gid, "Talk").await;
    let (mut aws, mut bws, mut cws, mut dws) = (Ws::connect(&alice).await, Ws::connect(&bob).await, Ws::connect(&carol).await, Ws::connect(&dave).await);
    let (a, b, c) = (aws.session.clone(), bws.session.clone(), cws.session.clone());

    // Before joining: refused.
    aws.send(json!({"type": "e2ee_hello", "data": {"v": 1}})).await;
    assert_reply_to(&aws.expect_error("not_in_room").await, "e2ee_hello");
    for ws in [&mut aws, &mut bws, &mut cws] {
        join(ws, &gid, &rid).await;
    }
    let three = |l: &[Value]| l.len() == 3;
    aws.wait_list("three in the call", &rid, three).await;

    // A hello goes to everyone else in a conversation, untouched; not to dave outside it.
    let hello = json!({"v": 1, "pub": "BAAA", "fp": "sha-256 AB:CD", "e2ee": true, "ü": [1, null]});
    aws.send(json!({"type": "e2ee_hello", "data": hello})).await;
    for ws in [&mut bws, &mut cws] {
        let m = ws.next_of_type("e2ee_hello").await;
        assert_eq!(pick(&m, &["from", "from_session", "data"]), json!({"from": "alice@alpha", "from_session": a, "data": hello}), "{m}");
    }
    dws.expect_none_of_type("e2ee_hello").await;
    aws.expect_none_of_type("e2ee_hello").await;

    // A reply to one session only.
    bws.send(json!({"type": "e2ee_hello", "data": {"v": 1, "pub": "BBBB"}, "to": "alice@alpha", "to_session": a})).await;
    assert_eq!(aws.next_of_type("e2ee_hello").await["from_session"], b.as_str());
    cws.expect_none_of_type("e2ee_hello").await;

    // Keys: each entry to its recipient alone, with the common part; dave's entry goes
    // nowhere (he is not in the call) and alice is told one key had no recipient.
    let common = json!({"v": 1, "pub": "BAAA", "fp": ""});
    let keys = json!([
        {"to": "bob@alpha", "to_session": b, "data": {"kid": 65536, "wrapped": "for-bob"}},
        {"to": "carol@alpha", "to_session": c, "data": {"kid": 65536, "wrapped": "for-carol"}},
        {"to": "dave@alpha", "to_session": dws.session, "data": {"kid": 65536, "wrapped": "for-dave"}},
    ]);
    aws.send(json!({"type": "e2ee_keys", "common": common, "keys": keys})).await;
    let k = bws.next_of_type("e2ee_key").await;
    assert_eq!(
        pick(&k, &["from", "from_session", "common", "data"]),
        json!({"from": "alice@alpha", "from_session": a, "common": common, "data": {"kid": 65536, "wrapped": "for-bob"}})
    );
    assert_eq!(cws.next_of_type("e2ee_key").await["data"]["wrapped"], "for-carol");
    assert_eq!(aws.next_of_type("e2ee_absent").await["count"], 1);
    dws.expect_none_of_type("e2ee_key").await;
    bws.expect_none_of_type("e2ee_key").await;

    // Bad input: a clear error, the socket stays usable.
    aws.send(json!({"type": "e2ee_hello", "data": "x".repeat(3000)})).await;
    assert_reply_to(&aws.expect_error("too_large").await, "e2ee_hello");
    aws.send(json!({"type": "e2ee_keys", "common": {}, "keys": [{"to": "bob@alpha", "data": {}}]})).await;
    assert_reply_to(&aws.expect_error("bad_message").await, "e2ee_keys");
    aws.send(json!({"type": "e2ee_hello", "data": {}, "to": "dave@alpha", "to_session": dws.session})).await;
    assert_reply_to(&aws.expect_error("not_in_room").await, "e2ee_hello");
    aws.send(json!({"type": "e2ee_hello", "data": {"v": 1}, "to": "bob@alpha", "to_session": b})).await;
    bws.next_of_type("e2ee_hello").await;
}

#[tokio::test]
async fn on_a_stage_hellos_go_to_the_speakers() {
    let node = Node::start(&[]);
    let [mut alice, bob, carol] = registered_all(&node, ["alice", "bob", "carol"]).await;
    let gid = create_group(&mut alice, "Lecture").await;
    add_member(&mut alice, &gid, "bob").await;
    add_member(&mut alice, &gid, "carol").await;
    let r = alice.post_json(&format!("/api/groups/{gid}/rooms"), json!({"name": "Hall", "stage": true})).await;
    r.expect(201);
    let rid = r.body["id"].as_str().unwrap().to_owned();
    let (mut aws, mut bws, mut cws) = (Ws::connect(&alice).await, Ws::connect(&bob).await, Ws::connect(&carol).await);
    for ws in [&mut aws, &mut bws, &mut cws] {
        join(ws, &gid, &rid).await;
    }
    aws.wait_list("three on the stage's call", &rid, |l| l.len() == 3).await;
    // bob listens: his hello reaches alice (the owner, a moderator, on stage), not carol.
    bws.send(json!({"type": "e2ee_hello", "data": {"v": 1, "pub": "BOB"}})).await;
    assert_eq!(aws.next_of_type("e2ee_hello").await["data"]["pub"], "BOB");
    cws.expect_none_of_type("e2ee_hello").await;
    // Someone just put on stage asks everyone: the listeners get it too.
    aws.send(json!({"type": "e2ee_hello", "data": {"v": 1, "pub": "ALICE"}, "everyone": true})).await;
    for ws in [&mut bws, &mut cws] {
        assert_eq!(ws.next_of_type("e2ee_hello").await["data"]["pub"], "ALICE");
    }
}

#[tokio::test]
async fn hellos_and_keys_cross_nodes_as_signed_signals() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Across").await;
    let rid = create_room(&mut alice, &gid, "Call").await;
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| member_users(g).len() == 2)).await;
    let (a, c) = (aws.session.clone(), cws.session.clone());
    join(&mut aws, &gid, &rid).await;
    join(&mut cws, &gid, &rid).await;
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, false);
    aws.wait_list_within("carol@beta in the call", FED_WAIT, &rid, both).await;
    cws.wait_list_within("alice@alpha in the call", FED_WAIT, &rid, both).await;

    let hello = json!({"v": 1, "pub": "QUxJQ0U", "fp": "sha-256 01:02", "e2ee": true});
    aws.send(json!({"type": "e2ee_hello", "data": hello})).await;
    let m = cws.next_matching_within("alice's hello", FED_WAIT, |m| m["type"] == "e2ee_hello").await;
    assert_eq!(pick(&m, &["from", "from_session", "data"]), json!({"from": "alice@alpha", "from_session": a, "data": hello}));

    let common = json!({"v": 1, "pub": "Q0FST0w", "fp": "sha-256 03:04"});
    let data = json!({"kid": 4_294_967_295_u64 * 65536 + 7, "wrapped": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"});
    cws.send(json!({"type": "e2ee_keys", "common": common, "keys": [{"to": "alice@alpha", "to_session": a, "data": data}]})).await;
    let k = aws.next_matching_within("carol's key", FED_WAIT, |m| m["type"] == "e2ee_key").await;
    assert_eq!(
        pick(&k, &["from", "from_session", "common", "data"]),
        json!({"from": "carol@beta", "from_session": c, "common": common, "data": data}),
        "a 48-bit key id and the wrapped key arrive exactly"
    );
    cws.expect_none_of_type("error").await;
}
