//! WebRTC signaling between two sockets in the same room: offer and answer arrive intact;
//! signals to someone outside the room, from outside a room, oversized, or to someone
//! who has left are refused and never delivered.

use serde_json::{Value, json};

use crate::harness::*;

fn signal(to: &str, to_session: &str, kind: &str, data: Value) -> Value {
    json!({"type": "signal", "to": to, "to_session": to_session, "kind": kind, "data": data})
}

#[tokio::test]
async fn signals_flow_only_within_a_room() {
    let node = Node::start(&[]);
    let [mut alice, bob, carol] = registered_all(&node, ["alice", "bob", "carol"]).await;
    let gid = create_group(&mut alice, "Call").await;
    add_member(&mut alice, &gid, "bob").await;
    add_member(&mut alice, &gid, "carol").await;
    let rid = create_room(&mut alice, &gid, "Room").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    let mut cws = Ws::connect(&carol).await;
    let (a_sess, b_sess, c_sess) = (aws.session.clone(), bws.session.clone(), cws.session.clone());
    assert!(a_sess != b_sess && b_sess != c_sess, "socket sessions are distinct");

    // A signal while the sender is in no room at all.
    aws.send(signal("bob@alpha", &b_sess, "offer", json!({"sdp": "v=0"}))).await;
    let e = aws.expect_error("not_in_room").await;
    assert_reply_to(&e, "signal");

    for ws in [&mut aws, &mut bws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    let both_in = |l: &[Value]| {
        let mut u: Vec<&str> = l.iter().filter_map(|p| p["user"].as_str()).collect();
        u.sort();
        u == ["alice@alpha", "bob@alpha"]
    };
    aws.wait_list("participants: alice and bob", &rid, both_in).await;
    bws.wait_list("participants: alice and bob", &rid, both_in).await;

    // alice → bob: offer, delivered with everything intact.
    let sdp = json!({"sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "type": "offer", "nested": [1, {"x": null}]});
    aws.send(signal("bob@alpha", &b_sess, "offer", sdp.clone())).await;
    let s = bws.next_of_type("signal").await;
    assert_eq!(s["from"], "alice@alpha", "{s}");
    assert_eq!(s["from_session"], a_sess.as_str(), "{s}");
    assert_eq!(s["group"], gid.as_str(), "{s}");
    assert_eq!(s["room"], rid.as_str(), "{s}");
    assert_eq!(s["kind"], "offer", "{s}");
    assert_eq!(s["data"], sdp, "data must arrive unchanged");

    // bob → alice: answer and a candidate.
    let answer = json!({"sdp": "v=0\r\nanswer\r\n", "type": "answer"});
    bws.send(signal("alice@alpha", &a_sess, "answer", answer.clone())).await;
    let cand = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    bws.send(signal("alice@alpha", &a_sess, "candidate", cand.clone())).await;
    let s = aws.next_of_type("signal").await;
    assert_eq!(
        (&s["from"], &s["from_session"], &s["kind"], &s["data"]),
        (&json!("bob@alpha"), &json!(b_sess), &json!("answer"), &answer)
    );
    let s = aws.next_of_type("signal").await;
    assert_eq!((&s["kind"], &s["data"]), (&json!("candidate"), &cand), "signals keep their order");
    aws.expect_none_of_type("error").await;
    bws.expect_none_of_type("error").await;

    // carol is a member but not in the room: refused, and she gets nothing.
    aws.send(signal("carol@alpha", &c_sess, "offer", json!({"sdp": "v=0"}))).await;
    let e = aws.expect_error("not_in_room").await;
    assert_reply_to(&e, "signal");
    // carol, in no room, signals bob: refused, bob gets nothing.
    cws.send(signal("bob@alpha", &b_sess, "offer", json!({"sdp": "v=0"}))).await;
    cws.expect_error("not_in_room").await;
    cws.expect_none_of_type("signal").await;
    bws.expect_none_of_type("signal").await;

    // bob's user with a session id that is not his socket: not delivered.
    aws.send(signal("bob@alpha", &"f".repeat(32), "offer", json!({"sdp": "v=0"}))).await;
    let e = aws.next_of_type("error").await;
    assert!(matches!(e["code"].as_str(), Some("not_in_room" | "not_found")), "{e}");
    bws.expect_none_of_type("signal").await;

    // Oversized data (> 16 KiB encoded, well under the 64 KiB frame cap).
    let big = json!({"sdp": "a".repeat(17 * 1024)});
    aws.send(signal("bob@alpha", &b_sess, "offer", big)).await;
    let e = aws.expect_error("too_large").await;
    assert_reply_to(&e, "signal");
    bws.expect_none_of_type("signal").await;
    // Just under the cap is fine.
    let ok = json!({"sdp": "b".repeat(15 * 1024)});
    aws.send(signal("bob@alpha", &b_sess, "offer", ok.clone())).await;
    assert_eq!(bws.next_of_type("signal").await["data"], ok);

    // bob leaves: he gets `left`, alice sees him gone, signals to him are refused.
    bws.send(json!({"type": "leave"})).await;
    let l = bws.next_of_type("left").await;
    assert_eq!((&l["group"], &l["room"]), (&json!(gid), &json!(rid)), "{l}");
    aws.wait_list("participants without bob", &rid, |l| l.len() == 1 && l[0]["user"] == "alice@alpha").await;
    aws.send(signal("bob@alpha", &b_sess, "offer", json!({"sdp": "v=0"}))).await;
    aws.expect_error("not_in_room").await;
    bws.expect_none_of_type("signal").await;
    // and bob, out of the room, cannot signal alice.
    bws.send(signal("alice@alpha", &a_sess, "answer", json!({"sdp": "v=0"}))).await;
    bws.expect_error("not_in_room").await;
    aws.expect_none_of_type("signal").await;
}
