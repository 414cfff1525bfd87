//! A socket that drops without a goodbye keeps its session for a while: the page resumes
//! it on a new socket (with the token its `hello` gave), keeps its seat and gets what came
//! meanwhile, and the others see no leave. After a restart of the node the token still
//! names the session. Forged or foreign tokens get a new session, and a closed tab leaves
//! at once.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_dropped_socket_resumes_its_session_and_seat_even_after_a_restart() {
    let mut node = Node::start(&[]);
    let [mut alice, mut bob] = registered_all(&node, ["alice", "bob"]).await;
    let gid = create_group(&mut alice, "Call").await;
    add_member(&mut alice, &gid, "bob").await;
    let rid = create_room(&mut alice, &gid, "Room").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    assert!(!aws.resumed);
    for ws in [&mut aws, &mut bws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    bws.wait_list("alice and bob", &rid, |l| l.len() == 2).await;
    let (a_session, a_resume, a_seen) = (aws.session.clone(), aws.resume.clone(), aws.received);

    // alice's connection drops (no close frame); bob signals her meanwhile. Whether the
    // node still sends it into the dead socket or queues it, the resume brings it.
    drop(aws);
    bws.send(json!({"type": "signal", "to": "alice@alpha", "to_session": a_session, "kind": "offer", "data": {"n": 1}})).await;

    // Forged, or another user's: a new session.
    let forged = format!("{a_session}.{}", "ab".repeat(32));
    let x = Ws::resume(&alice, &forged, 0).await;
    assert!(x.session != a_session && !x.resumed, "a forged token got the session");
    let y = Ws::resume(&bob, &a_resume, 0).await;
    assert!(y.session != a_session && !y.resumed, "bob took alice's session over");
    x.close().await;
    y.close().await;

    // The right token: the same session, with bob's offer, and her seat.
    let mut aws = Ws::resume(&alice, &a_resume, a_seen).await;
    assert_eq!((aws.session.as_str(), aws.resumed), (a_session.as_str(), true));
    let s = aws.next_of_type("signal").await;
    assert_eq!(s["data"], json!({"n": 1}), "{s}");
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    bws.send(json!({"type": "ping"})).await;
    bws.next_of_type("pong").await;
    let list = bws.list(&rid).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().any(|p| p["session"] == a_session.as_str()), "{list:?}");

    // The node restarts: both come back under their sessions and are in the call again.
    let (b_resume, b_session, b_seen, a_seen) = (bws.resume.clone(), bws.session.clone(), bws.received, aws.received);
    node.restart();
    alice.set_origin(&node.url);
    bob.set_origin(&node.url);
    let mut aws = Ws::resume(&alice, &a_resume, a_seen).await;
    let mut bws = Ws::resume(&bob, &b_resume, b_seen).await;
    assert_eq!((aws.session.as_str(), aws.resumed), (a_session.as_str(), false), "known by its token only");
    assert_eq!(bws.session, b_session);
    for ws in [&mut aws, &mut bws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    bws.wait_list("alice and bob, after the restart", &rid, |l| {
        l.iter().any(|p| p["session"] == a_session.as_str()) && l.iter().any(|p| p["session"] == b_session.as_str()) && l.len() == 2
    })
    .await;

    // A closed tab (a close frame) leaves at once.
    aws.close().await;
    bws.wait_list("bob alone", &rid, |l| l.len() == 1).await;
}
