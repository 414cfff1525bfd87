//! Everything a user was told succeeded survives `kill -9` right after the last 2xx, sessions
//! included; and SIGTERM shuts the node down cleanly (exit 0, even with a socket open)
//! with its data intact.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut node = Node::start(&[]);
    let [mut alice, mut bob] = registered_all(&node, ["alice", "bob"]).await;
    let alice_cookie = alice.cookie("vc_session").expect("alice has a session cookie");
    let gid = create_group(&mut alice, "Durable").await;
    add_member(&mut alice, &gid, "bob").await;
    let r1 = create_room(&mut alice, &gid, "One").await;
    let r2 = create_room(&mut alice, &gid, "Two").await;
    alice.patch_json(&format!("/api/groups/{gid}/members/bob@alpha"), json!({"role": "admin"})).await.expect(200);
    let r = alice.post_json(&format!("/api/groups/{gid}/invites"), json!({"max_uses": 5})).await;
    r.expect(201);
    let code = r.body["code"].as_str().unwrap().to_owned();
    node.kill9(); // no graceful shutdown, immediately after the last 2xx

    node.restart();
    alice.set_origin(&node.url);
    bob.set_origin(&node.url);

    // The old session cookies still work.
    assert_eq!(alice.cookie("vc_session").as_deref(), Some(alice_cookie.as_str()), "jar carries the cookie over");
    let s = alice.session().await;
    assert_eq!(s.body["user"]["id"], "alice@alpha", "session lost across kill -9: {s:?}");
    assert_eq!(bob.session().await.body["user"]["id"], "bob@alpha");
    // Sent by hand, too (what a browser holding only the cookie would do).
    let mut bare = Client::new(&node);
    let r = bare.send(reqwest::Method::GET, "/api/groups", Body::None, Csrf::Missing).await;
    r.expect_err(401, "unauthenticated");
    let raw = reqwest::Client::new()
        .get(format!("{}/api/session", node.url))
        .header("Cookie", format!("vc_session={alice_cookie}"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["user"]["id"], "alice@alpha", "raw cookie after restart: {body}");

    // Groups, members, roles, rooms, invite.
    let r = alice.get("/api/groups").await;
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "Durable", "home": "alpha", "role": "owner"}]),
        "{r:?}"
    );
    let r = alice.get(&format!("/api/groups/{gid}")).await;
    r.expect(200);
    let mut members: Vec<_> = pick_all(&r.body["members"], MEMBER).as_array().unwrap().clone();
    members.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    assert_eq!(
        members,
        [json!({"user": "alice@alpha", "role": "owner"}), json!({"user": "bob@alpha", "role": "admin"})]
    );
    let mut rooms: Vec<_> = r.body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r["name"].as_str().unwrap().to_owned()))
        .collect();
    rooms.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(rooms, [(r1, "One".to_owned()), (r2, "Two".to_owned())]);
    let r = alice.get(&format!("/api/groups/{gid}/invites")).await;
    r.expect(200);
    let inv = r.body.as_array().unwrap().iter().find(|i| i["code"] == code.as_str());
    let inv = inv.unwrap_or_else(|| panic!("invite {code} lost: {r:?}"));
    assert_eq!((&inv["max_uses"], &inv["uses"]), (&json!(5), &json!(0)), "{inv}");
    let r = bob.get(&format!("/api/invites/{code}")).await;
    r.expect(200);
    assert_eq!(r.body["already_member"], true, "{r:?}");

    // Passwords survived too, and the node takes new writes.
    let mut again = Client::new(&node);
    again.login("bob", &pw("bob")).await.expect(200);
    create_room(&mut bob, &gid, "Three").await;
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_keeps_data() {
    let mut node = Node::start(&[]);
    let mut alice = registered(&node, "alice").await;
    let gid = create_group(&mut alice, "Kept").await;
    // An open socket must not hold the shutdown up.
    let mut ws = Ws::connect(&alice).await;
    ws.barrier().await;
    let status = node.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}; stderr:\n{}", node.stderr());

    node.restart();
    alice.set_origin(&node.url);
    let r = alice.get(&format!("/api/groups/{gid}")).await;
    r.expect(200);
    assert_eq!(r.body["name"], "Kept");
    let mut c = Client::new(&node);
    c.login("alice", &pw("alice")).await.expect(200);
}
