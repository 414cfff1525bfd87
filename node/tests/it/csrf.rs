//! Every state-changing endpoint refuses a request without the CSRF token or with a wrong
//! one (403 `csrf`) and changes nothing, then works with the token; the WebSocket upgrade
//! refuses a foreign Origin (403) and a missing session (401).

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// Send without the header and with a wrong one: both 403 `csrf`.
async fn refused(c: &mut Client, method: Method, path: &str, body: Option<Value>) {
    for csrf in [Csrf::Missing, Csrf::Value("0000000000000000wrong-token0000000".into())] {
        let b = match &body {
            Some(v) => Body::Json(v.clone()),
            None => Body::None,
        };
        let r = c.send(method.clone(), path, b, csrf.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "csrf"),
            "{method} {path} with {csrf:?} must be refused as csrf; response: {r:?}"
        );
    }
}

#[tokio::test]
async fn every_state_changing_endpoint_needs_the_token() {
    let node = Node::start(&[]);

    // register
    let mut alice = Client::new(&node);
    alice.session().await; // a browser has loaded the page: the vc_csrf cookie is set
    assert!(alice.cookie("vc_csrf").is_some(), "GET /api/session sets vc_csrf");
    let creds = json!({"username": "alice", "password": pw("alice")});
    refused(&mut alice, Method::POST, "/api/register", Some(creds.clone())).await;
    assert_eq!(alice.session().await.body["user"], Value::Null, "refused register logged in");
    alice.register("alice", &pw("alice")).await.expect(201); // 201, not 409: nothing was created
    let mut bob = registered(&node, "bob").await;

    // login
    let mut other = Client::new(&node);
    other.session().await;
    refused(&mut other, Method::POST, "/api/login", Some(creds.clone())).await;
    assert_eq!(other.session().await.body["user"], Value::Null, "refused login logged in");
    other.login("alice", &pw("alice")).await.expect(200);

    // create a group
    refused(&mut alice, Method::POST, "/api/groups", Some(json!({"name": "Original"}))).await;
    assert_eq!(alice.get("/api/groups").await.body, json!([]), "refused create made a group");
    let gid = create_group(&mut alice, "Original").await;
    let g = format!("/api/groups/{gid}");

    // rename the group
    refused(&mut alice, Method::PATCH, &g, Some(json!({"name": "Renamed"}))).await;
    assert_eq!(alice.get(&g).await.body["name"], "Original");
    alice.patch_json(&g, json!({"name": "Renamed"})).await.expect(200);
    assert_eq!(alice.get(&g).await.body["name"], "Renamed");

    // add a member
    refused(&mut alice, Method::POST, &format!("{g}/members"), Some(json!({"user": "bob"}))).await;
    assert_eq!(member_users(&alice.get(&g).await.body), ["alice@alpha"], "refused add changed members");
    bob.get(&g).await.expect_err(404, "not_found");

    // create an invite
    refused(&mut alice, Method::POST, &format!("{g}/invites"), Some(json!({}))).await;
    assert_eq!(alice.get(&format!("{g}/invites")).await.body, json!([]), "refused invite was created");
    let r = alice.post_json(&format!("{g}/invites"), json!({})).await;
    r.expect(201);
    let code = r.body["code"].as_str().unwrap().to_owned();

    // accept it
    refused(&mut bob, Method::POST, &format!("/api/invites/{code}/accept"), None).await;
    bob.get(&g).await.expect_err(404, "not_found");
    bob.post_empty(&format!("/api/invites/{code}/accept")).await.expect(200);
    bob.get(&g).await.expect(200);

    // revoke it
    refused(&mut alice, Method::DELETE, &format!("{g}/invites/{code}"), None).await;
    alice.get(&format!("/api/invites/{code}")).await.expect(200);
    alice.delete(&format!("{g}/invites/{code}")).await.expect(204);
    alice.get(&format!("/api/invites/{code}")).await.expect_err(410, "gone");

    // change a member's role
    let m = format!("{g}/members/bob@alpha");
    refused(&mut alice, Method::PATCH, &m, Some(json!({"role": "admin"}))).await;
    assert_eq!(bob.get(&g).await.body["role"], "member");
    let r = alice.patch_json(&m, json!({"role": "admin"})).await;
    r.expect(200);
    assert_eq!(pick(&r.body, MEMBER), json!({"user": "bob@alpha", "role": "admin"}), "{r:?}");

    // remove a member
    refused(&mut alice, Method::DELETE, &m, None).await;
    assert_eq!(bob.get(&g).await.body["role"], "admin");
    alice.delete(&m).await.expect(204);
    bob.get(&g).await.expect_err(404, "not_found");

    // add a member (now with the token)
    refused(&mut alice, Method::POST, &format!("{g}/members"), Some(json!({"user": "bob"}))).await;
    bob.get(&g).await.expect_err(404, "not_found");
    add_member(&mut alice, &gid, "bob").await;
    bob.get(&g).await.expect(200);

    // rooms: create, rename, delete
    refused(&mut alice, Method::POST, &format!("{g}/rooms"), Some(json!({"name": "Lobby"}))).await;
    assert_eq!(alice.get(&g).await.body["rooms"], json!([]), "refused create made a room");
    let rid = create_room(&mut alice, &gid, "Lobby").await;
    let room = format!("{g}/rooms/{rid}");
    refused(&mut alice, Method::PATCH, &room, Some(json!({"name": "Hall"}))).await;
    assert_eq!(alice.get(&g).await.body["rooms"][0]["name"], "Lobby");
    let r = alice.patch_json(&room, json!({"name": "Hall"})).await;
    r.expect(200);
    assert_eq!(r.body["name"], "Hall");
    refused(&mut alice, Method::DELETE, &room, None).await;
    assert_eq!(room_ids(&alice.get(&g).await.body), [rid.as_str()], "refused delete removed the room");
    alice.delete(&room).await.expect(204);
    assert_eq!(alice.get(&g).await.body["rooms"], json!([]));

    // delete the group
    refused(&mut alice, Method::DELETE, &g, None).await;
    alice.get(&g).await.expect(200);
    alice.delete(&g).await.expect(204);
    alice.get(&g).await.expect_err(404, "not_found");

    // change password: the refused one left the old password in force
    let change = json!({"old_password": pw("alice"), "new_password": "a-brand-new-pass"});
    refused(&mut alice, Method::POST, "/api/password", Some(change.clone())).await;
    alice.post_json("/api/password", change).await.expect(204);

    // logout
    refused(&mut alice, Method::POST, "/api/logout", None).await;
    assert_eq!(alice.session().await.body["user"]["id"], "alice@alpha", "refused logout ended the session");
    alice.logout().await.expect(204);
    assert_eq!(alice.session().await.body["user"], Value::Null);
}

#[tokio::test]
async fn websocket_upgrade_checks_origin_and_session() {
    let node = Node::start(&[]);
    let alice = registered(&node, "alice").await;
    let cookie = alice.cookie_header().unwrap();

    match ws_handshake(&node.url, Some(&cookie), Some("http://evil.example")).await {
        Err(WsRefused::Status(403)) => {}
        other => panic!("foreign Origin must get 403 at the upgrade, got {:?}", other.map(|_| "an open socket")),
    }
    match ws_handshake(&node.url, None, Some(&node.url)).await {
        Err(WsRefused::Status(401)) => {}
        other => panic!("no session must get 401 at the upgrade, got {:?}", other.map(|_| "an open socket")),
    }
    match ws_handshake(&node.url, Some("vc_session=00000000000000000000000000000000"), Some(&node.url)).await {
        Err(WsRefused::Status(401)) => {}
        other => panic!("a made-up session must get 401 at the upgrade, got {:?}", other.map(|_| "an open socket")),
    }
    // The same cookie from the node's own origin is accepted.
    let mut ws = Ws::connect(&alice).await;
    assert_eq!(ws.user, "alice@alpha");
    ws.barrier().await;
}
