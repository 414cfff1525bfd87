//! The admin HTTP API: tokens made with `voicechat token create` on the running node
//! manage users (`users` scope) and, acting as their user, groups, rooms and invites; a
//! token reaches nothing outside its scopes, a cookie does not reach the admin endpoints,
//! and a revoked token stops working at once.

use std::process::Stdio;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

fn token(dir: &str, args: &[&str]) -> String {
    let mut full = vec!["token"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--data-dir", dir]);
    let out = voicechat().args(&full).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn call(node: &Node, secret: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", node.url)).bearer_auth(secret);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn scoped_tokens_manage_users_groups_rooms_and_invites() {
    let node = Node::start(&[]);
    let dir = node.data_dir().to_str().unwrap().to_owned();
    let mut alice = registered(&node, "alice").await;

    let ops = token(&dir, &["create", "ops", "--scope", "users"]);
    assert!(ops.starts_with("vct_") && ops.len() > 40, "{ops}");
    // Users: create, list, disable (login refused), enable.
    let (st, body) = call(&node, &ops, Method::POST, "/api/admin/users", Some(json!({"name": "bot", "password": pw("bot")}))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(&node, &ops, Method::POST, "/api/admin/users", Some(json!({"name": "bob", "password": pw("bob")}))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(&node, &ops, Method::GET, "/api/admin/users", None).await;
    assert_eq!(st, 200);
    let mut names: Vec<&str> = body["users"].as_array().unwrap().iter().filter_map(|u| u["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alice", "bob", "bot"]);
    let disable = |on: bool| Some(json!({"disabled": on}));
    assert_eq!(call(&node, &ops, Method::PATCH, "/api/admin/users/bob", disable(true)).await.0, 204);
    Client::new(&node).login("bob", &pw("bob")).await.expect_err(401, "unauthenticated");
    assert_eq!(call(&node, &ops, Method::PATCH, "/api/admin/users/bob", disable(false)).await.0, 204);
    Client::new(&node).login("bob", &pw("bob")).await.expect(200);
    assert_eq!(call(&node, &ops, Method::PATCH, "/api/admin/users/nobody", disable(true)).await.0, 404);
    // Outside its scope.
    let (st, body) = call(&node, &ops, Method::POST, "/api/groups", Some(json!({"name": "Nope"}))).await;
    assert_eq!((st, body["error"].as_str()), (403, Some("forbidden")), "{body}");

    // A bot acting as `bot`: a group, a member, a room, an invite link.
    let bot = token(&dir, &["create", "bot", "--scope", "groups,rooms,invites", "--user", "bot"]);
    let (st, g) = call(&node, &bot, Method::POST, "/api/groups", Some(json!({"name": "Bots"}))).await;
    assert_eq!(st, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let (st, body) = call(&node, &bot, Method::POST, &format!("/api/groups/{gid}/members"), Some(json!({"user": "alice"}))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(&node, &bot, Method::POST, &format!("/api/groups/{gid}/rooms"), Some(json!({"name": "Lobby"}))).await;
    assert_eq!(st, 201, "{body}");
    let (st, inv) = call(&node, &bot, Method::POST, &format!("/api/groups/{gid}/invites"), Some(json!({}))).await;
    assert_eq!(st, 201, "{inv}");
    let seen = alice.get(&format!("/api/groups/{gid}")).await;
    seen.expect(200);
    assert!(seen.body.to_string().contains("Lobby"), "alice sees the bot's room: {}", seen.body);
    // Not for this token: users, the account endpoints, sockets.
    assert_eq!(call(&node, &bot, Method::GET, "/api/admin/users", None).await.0, 403);
    assert_eq!(call(&node, &bot, Method::POST, "/api/password", Some(json!({}))).await.0, 403);
    assert_eq!(call(&node, &bot, Method::GET, "/api/session", None).await.0, 403);
    let ws = reqwest::Client::new()
        .get(format!("{}/ws", node.url))
        .bearer_auth(&bot)
        .header("origin", &node.url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(ws.status(), 403);

    // Without a token, or with a wrong one.
    // alice, the node's first account, is its administrator: her session may too; bob's not.
    assert_eq!(alice.get("/api/admin/users").await.status, 200, "the administrator's session");
    let mut bob = Client::new(&node);
    bob.login("bob", &pw("bob")).await.expect(200);
    assert_eq!(bob.get("/api/admin/users").await.status, 403, "a member's session is no admin");
    assert_eq!(call(&node, "vct_not-a-token", Method::GET, "/api/groups", None).await.0, 401);
    let listed = token(&dir, &["list"]);
    assert!(listed.contains("ops\tusers") && listed.contains("bot\tgroups,rooms,invites\tuser bot"), "{listed}");
    assert!(!listed.contains(&bot), "secrets are never listed");

    // Revoked: refused at once.
    token(&dir, &["revoke", "bot"]);
    assert_eq!(call(&node, &bot, Method::GET, &format!("/api/groups/{gid}"), None).await.0, 401);
    let out = voicechat().args(["token", "create", "x", "--scope", "groups", "--data-dir", &dir]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--user"), "{out:?}");
}
