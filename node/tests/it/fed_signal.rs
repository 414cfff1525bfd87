//! Cross-node signaling: alice@alpha and carol@beta in one room exchange `signal`s
//! socket to socket through their nodes (`from`, `from_session`, `kind` and the JSON `data`
//! arrive intact, both ways); a signal to a remote user who is not in the room is refused
//! with `not_in_room` and delivered to nobody.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn signals_cross_nodes_both_ways_and_only_into_the_room() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let mut dave = registered_on(&beta, "dave").await;
    let gid = create_group(&mut alice, "Signals").await;
    let rid = create_room(&mut alice, &gid, "Call").await;
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    let mut dws = Ws::connect(&dave).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    add_member(&mut alice, &gid, "dave@beta").await;
    accept_invitation(&mut carol, &gid).await;
    accept_invitation(&mut dave, &gid).await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| member_users(g).len() == 3)).await;
    dws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| member_users(g).len() == 3)).await;

    let (a, c, d) = (aws.session.clone(), cws.session.clone(), dws.session.clone());
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, false);
    aws.wait_list_within("participants with carol@beta", FED_WAIT, &rid, both).await;
    cws.wait_list_within("participants with alice@alpha", FED_WAIT, &rid, both).await;

    // alpha → beta: an offer with structured data.
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n", "nested": [1, 2.5, null, {"ü": "✓"}]});
    aws.send(json!({"type": "signal", "to": "carol@beta", "to_session": c, "kind": "offer", "data": offer})).await;
    let s = cws.next_matching_within("signal from alice", FED_WAIT, |m| m["type"] == "signal").await;
    assert_eq!(
        pick(&s, &["from", "from_session", "group", "room", "kind", "data"]),
        json!({"from": "alice@alpha", "from_session": a, "group": gid, "room": rid, "kind": "offer", "data": offer}),
        "{s}"
    );

    // beta → alpha: an answer, then a candidate whose data is a plain string, then null.
    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    cws.send(json!({"type": "signal", "to": "alice@alpha", "to_session": a, "kind": "answer", "data": answer})).await;
    let s = aws.next_matching_within("answer from carol", FED_WAIT, |m| m["type"] == "signal").await;
    assert_eq!(
        pick(&s, &["from", "from_session", "group", "room", "kind", "data"]),
        json!({"from": "carol@beta", "from_session": c, "group": gid, "room": rid, "kind": "answer", "data": answer}),
        "{s}"
    );
    for data in [json!("candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"), json!(null), json!(7)] {
        cws.send(json!({"type": "signal", "to": "alice@alpha", "to_session": a, "kind": "candidate", "data": data}))
            .await;
        let s = aws.next_matching_within("candidate from carol", FED_WAIT, |m| m["type"] == "signal").await;
        assert_eq!((&s["kind"], &s["data"], &s["from"]), (&json!("candidate"), &data, &json!("carol@beta")), "{s}");
    }

    // dave@beta is a member but not in the room: refused, and he gets nothing.
    aws.send(json!({"type": "signal", "to": "dave@beta", "to_session": d, "kind": "offer", "data": "x"})).await;
    let e = aws.next_matching_within("not_in_room for dave", FED_WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["code"], "not_in_room", "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert_reply_to(&e, "signal");
    // carol's real user with a session that is not hers: refused too.
    aws.send(json!({"type": "signal", "to": "carol@beta", "to_session": d, "kind": "offer", "data": "x"})).await;
    let e = aws.next_matching_within("not_in_room for a wrong session", FED_WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["code"], "not_in_room", "{e}");

    // Once carol has left, alice's signals to her are refused as well.
    cws.send(json!({"type": "leave"})).await;
    cws.next_of_type("left").await;
    aws.wait_list_within("participants without carol", FED_WAIT, &rid, |l| lacks_session(l, &c))
        .await;
    aws.send(json!({"type": "signal", "to": "carol@beta", "to_session": c, "kind": "bye", "data": null})).await;
    let e = aws.next_matching_within("not_in_room after carol left", FED_WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["code"], "not_in_room", "{e}");

    // None of the refused signals reached beta's sockets: each was refused before carol
    // rejoined, so any stray delivery would sit in her socket ahead of this last offer.
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    aws.wait_list_within("carol back", FED_WAIT, &rid, both).await;
    aws.send(json!({"type": "signal", "to": "carol@beta", "to_session": c, "kind": "offer", "data": "last"})).await;
    let s = cws.next_matching_within("the last offer", FED_WAIT, |m| m["type"] == "signal" && m["data"] == "last").await;
    assert_eq!(s["from"], "alice@alpha");
    cws.expect_none("a refused signal", |m| m["type"] == "signal").await;
    dws.expect_none_of_type("signal").await;
}
