//! Registration modes and the administrator: the first account administers the node; it
//! lists accounts and sets the mode; closed refuses sign-ups, invite-only takes a valid
//! group invite as the ticket (and uses it up), open takes anyone; others get 403.

use serde_json::{Value, json};

use crate::harness::*;

async fn sign_up(node: &Node, name: &str, invite: Option<&str>) -> (Client, Resp) {
    let mut c = Client::new(node);
    let r = c.post_json("/api/register", json!({"username": name, "password": pw(name), "invite": invite})).await;
    (c, r)
}

#[tokio::test]
async fn the_first_account_administers_and_sets_who_may_sign_up() {
    let node = Node::start(&[]);
    let mut ada = registered(&node, "ada").await;
    let mut bob = registered(&node, "bob").await;
    assert_eq!(ada.session().await.body["user"]["admin"], true);
    assert_eq!(bob.session().await.body["user"]["admin"], false);
    assert_eq!(bob.session().await.body["registration"], "open");

    // Only the administrator sees and changes accounts and the mode.
    bob.get("/api/admin/users").await.expect_err(403, "forbidden");
    bob.send(reqwest::Method::PUT, "/api/admin/settings", Body::Json(json!({"registration": "open"})), Csrf::Auto)
        .await
        .expect_err(403, "forbidden");
    bob.patch_json("/api/admin/users/ada", json!({"disabled": true})).await.expect_err(403, "forbidden");
    let users = ada.get("/api/admin/users").await;
    users.expect(200);
    let names: Vec<(&Value, &Value, &Value)> =
        users.body["users"].as_array().unwrap().iter().map(|u| (&u["name"], &u["admin"], &u["disabled"])).collect();
    assert_eq!(names, [(&json!("ada"), &json!(true), &json!(false)), (&json!("bob"), &json!(false), &json!(false))]);
    ada.patch_json("/api/admin/users/ada", json!({"disabled": true})).await.expect_err(400, "bad_request");
    ada.patch_json("/api/admin/users/nobody", json!({"disabled": true})).await.expect_err(404, "not_found");

    // Closed: nobody signs up, and the reason says whom to ask.
    let r = ada.send(reqwest::Method::PUT, "/api/admin/settings", Body::Json(json!({"registration": "closed"})), Csrf::Auto).await;
    r.expect(200);
    let (_, r) = sign_up(&node, "carol", None).await;
    r.expect_err(403, "forbidden");
    assert!(r.body["message"].as_str().unwrap().contains("administrator"), "{r:?}");
    ada.send(reqwest::Method::PUT, "/api/admin/settings", Body::Json(json!({"registration": "sideways"})), Csrf::Auto)
        .await
        .expect_err(400, "bad_request");

    // Invite-only: a valid group invite is the ticket; a one-use link signs up one person.
    ada.send(reqwest::Method::PUT, "/api/admin/settings", Body::Json(json!({"registration": "invite-only"})), Csrf::Auto)
        .await
        .expect(200);
    let gid = create_group(&mut ada, "Choir").await;
    let inv = ada.post_json(&format!("/api/groups/{gid}/invites"), json!({"max_uses": 1})).await;
    inv.expect(201);
    let code = inv.body["code"].as_str().unwrap().to_owned();
    sign_up(&node, "carol", None).await.1.expect_err(403, "forbidden");
    sign_up(&node, "carol", Some("not-a-code")).await.1.expect_err(403, "forbidden");
    let (mut carol, r) = sign_up(&node, "carol", Some(&code)).await;
    r.expect(201);
    let groups = carol.get("/api/groups").await;
    assert!(groups.text.contains(&gid), "carol joined the group with her ticket: {groups:?}");
    sign_up(&node, "dave", Some(&code)).await.1.expect_err(403, "forbidden");

    // The mode survives a restart; open lets anyone in again.
    let mut node = node;
    node.restart();
    ada.set_origin(&node.url);
    assert_eq!(ada.session().await.body["registration"], "invite-only");
    ada.send(reqwest::Method::PUT, "/api/admin/settings", Body::Json(json!({"registration": "open"})), Csrf::Auto)
        .await
        .expect(200);
    sign_up(&node, "dave", None).await.1.expect(201);
}

#[tokio::test]
async fn password_login_can_be_turned_off() {
    let node = Node::start(&["--password-login", "off"]);
    let (_, r) = sign_up(&node, "ada", None).await;
    r.expect_err(403, "forbidden");
    let mut c = Client::new(&node);
    c.login("ada", &pw("ada")).await.expect_err(403, "forbidden");
    assert_eq!(c.session().await.body["password_login"], false);
}
