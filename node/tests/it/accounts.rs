//! Accounts: the session cookie's flags, session rotation at login, logout ending the
//! session, a password change ending the other sessions, and the offline admin CLI
//! (`user add` from stdin, `user list`, `user disable`).

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::harness::*;

/// GET `path` with only this session cookie, like a browser that kept an old cookie.
async fn with_cookie(node: &Node, path: &str, session: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", node.url))
        .header("Cookie", format!("vc_session={session}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

#[tokio::test]
async fn sessions_rotate_end_at_logout_and_at_password_change() {
    let node = Node::start(&[]);
    let mut alice = Client::new(&node);
    let r = alice.register("Alice", &pw("alice")).await;
    r.expect(201);
    assert_eq!(
        r.body["user"],
        json!({"id": "alice@alpha", "name": "alice", "node": "alpha", "admin": true, "display_name": null}),
        "names are stored lowercase; the first account is the node's administrator"
    );
    assert!(r.body["csrf"].as_str().is_some_and(|t| !t.is_empty()), "{r:?}");
    let set = r.set_cookie("vc_session").unwrap_or_else(|| panic!("register sets no vc_session: {r:?}"));
    let attrs: Vec<String> = set.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "vc_session must be HttpOnly: {set}");
    assert!(attrs.iter().any(|a| a == "samesite=strict"), "vc_session must be SameSite=Strict: {set}");
    assert!(attrs.iter().any(|a| a == "path=/"), "vc_session must have Path=/: {set}");
    let first = cookie_value(&set);
    assert!(first.len() >= 22, "session id too short to be unguessable: {first}");
    let s = alice.session().await;
    assert_eq!(s.body["user"]["id"], "alice@alpha");
    assert_eq!(s.body["node"], "alpha");
    let csrf_before = alice.csrf_token().await;

    // Login replaces the session id (and the CSRF token).
    let r = alice.login("alice", &pw("alice")).await;
    r.expect(200);
    assert_eq!(r.body["user"]["id"], "alice@alpha");
    let second = cookie_value(&r.set_cookie("vc_session").unwrap_or_else(|| panic!("login sets no vc_session: {r:?}")));
    assert_ne!(first, second, "login must rotate the session id");
    assert_eq!(alice.cookie("vc_session").as_deref(), Some(second.as_str()));
    assert_ne!(r.body["csrf"].as_str(), Some(csrf_before.as_str()), "login must replace the CSRF token: {r:?}");
    alice.get("/api/groups").await.expect(200);

    // Logout ends the session: the old cookie is worthless afterwards.
    alice.logout().await.expect(204);
    let (status, body) = with_cookie(&node, "/api/groups", &second).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthenticated")), "{body}");
    alice.get("/api/groups").await.expect_err(401, "unauthenticated");
    assert_eq!(alice.session().await.body["user"], Value::Null);

    // Password change: the current session stays, every other one ends.
    let mut here = Client::new(&node);
    here.login("alice", &pw("alice")).await.expect(200);
    let mut there = Client::new(&node);
    there.login("alice", &pw("alice")).await.expect(200);
    there.get("/api/groups").await.expect(200);
    let change = json!({"old_password": pw("alice"), "new_password": "a-second-password"});
    here.post_json("/api/password", change).await.expect(204);
    here.get("/api/groups").await.expect(200);
    there.get("/api/groups").await.expect_err(401, "unauthenticated");
    let mut fresh = Client::new(&node);
    fresh.login("alice", &pw("alice")).await.expect_err(401, "unauthenticated");
    fresh.login("alice", "a-second-password").await.expect(200);
}

/// Run `voicechat <args> --data-dir DIR` with `stdin`, bounded by a timeout.
fn cli(args: &[&str], data_dir: &Path, stdin: &str) -> Output {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data_dir.to_str().unwrap()]);
    run_cli_stdin(&all, stdin)
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn admin_cli_adds_lists_and_disables_users_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["user", "add", "dave"], dir.path(), "dave-offline-pass\n");
    assert!(out.status.success(), "user add failed: {}", show(&out));
    let out = cli(&["user", "list"], dir.path(), "");
    assert!(out.status.success(), "user list failed: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dave"), "user list lacks dave: {}", show(&out));

    let mut node = Node::start_with(Some(dir.path()), &[], &[]);
    let mut c = Client::new(&node);
    let r = c.login("dave", "dave-offline-pass").await;
    r.expect(200);
    assert_eq!(r.body["user"]["id"], "dave@alpha");
    c.login("dave", "dave-offline-pass\n").await.expect_err(401, "unauthenticated");
    let st = node.terminate();
    assert!(st.success(), "SIGTERM: {st:?}");

    let out = cli(&["user", "disable", "dave"], dir.path(), "");
    assert!(out.status.success(), "user disable failed: {}", show(&out));
    node.restart();
    let mut c = Client::new(&node);
    c.login("dave", "dave-offline-pass").await.expect_err(401, "unauthenticated");
}
