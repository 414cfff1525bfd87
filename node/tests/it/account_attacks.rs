//! The attacks of issue 14, tried against a node on loopback, each now refused; every test
//! prints its figure (`cargo test … -- --nocapture` shows them).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::*;

const CHECKS: &str = "voicechat_password_checks_total";

#[tokio::test]
async fn racing_wrong_logins_get_at_most_five_password_checks() {
    let node = Node::start(&[]);
    let _bob = registered(&node, "bob").await;
    let mut c = Client::new(&node);
    let csrf = c.csrf_token().await;
    let before = metric(&node, CHECKS).await;
    let tries = (0..120).map(|i| c.post_with("/api/login", json!({"username": "bob", "password": format!("wrong-{i}-password")}), &csrf));
    let answers = join_all(tries).await;
    let checks = metric(&node, CHECKS).await - before;
    let wrong = answers.iter().filter(|r| r.status == 401).count();
    let limited = answers.iter().filter(|r| r.status == 429).count();
    println!("figure: 120 simultaneous wrong logins → {checks} password checks ({wrong} × 401, {limited} × 429); was 102");
    assert_eq!(wrong + limited, 120, "every answer is a refusal");
    assert!(checks <= 5.0, "{checks} password checks for 120 racing logins");
    assert_eq!(wrong, checks as usize);
}

#[tokio::test]
async fn a_stolen_session_cannot_guess_the_password_without_limit() {
    let node = Node::start(&[]);
    let mut thief = registered(&node, "alice").await;
    let before = metric(&node, CHECKS).await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let r = thief.post_json("/api/password", json!({"old_password": format!("guess-{i}-guess"), "new_password": "owned-owned-owned"})).await;
        codes.push(r.status);
    }
    let checks = metric(&node, CHECKS).await - before;
    println!("figure: 20 guesses on POST /api/password → {checks} password checks, answers {codes:?}; was 20 checks");
    assert!(checks <= 5.0, "{checks}");
    assert!(codes[..5].iter().all(|c| *c == 403) && codes[5..].iter().all(|c| *c == 429), "{codes:?}");
    // Logins are limited the same for the account (shared counter).
    thief.login("alice", &pw("alice")).await.expect_err(429, "rate_limited");
}

async fn closed(ws: &mut Ws) -> Value {
    let last = ws.next_of_type("signed_out").await;
    let end = ws.recv_any(WAIT).await;
    assert!(end.is_err(), "the socket must end after signed_out, got {end:?}");
    last
}

#[tokio::test]
async fn logout_password_change_and_disable_close_that_users_sockets_at_once() {
    let node = Node::start(&[]);
    // The first account is the administrator.
    let mut admin = registered(&node, "admin").await;
    let mut alice = registered(&node, "alice").await;
    let gid = create_group(&mut admin, "G").await;
    add_member(&mut admin, &gid, "alice").await;
    let mut other = Client::new(&node);
    other.login("alice", &pw("alice")).await.expect(200);

    // Logout: the sockets of that session end; the other session's socket stays.
    let mut ws = Ws::connect(&alice).await;
    let mut ws_other = Ws::connect(&other).await;
    alice.logout().await.expect(204);
    let t = Instant::now();
    let last = closed(&mut ws).await;
    println!("figure: socket closed {} ms after logout (was: open for good)", t.elapsed().as_millis());
    assert_eq!(last["reason"], "logged out");
    ws_other.send(json!({"type": "ping"})).await;
    ws_other.next_of_type("pong").await;

    // Password change: the other sessions' sockets end, the changer's stays.
    alice.login("alice", &pw("alice")).await.expect(200);
    let mut mine = Ws::connect(&alice).await;
    let r = alice.post_json("/api/password", json!({"old_password": pw("alice"), "new_password": "a-new-long-password"})).await;
    r.expect(204);
    assert_eq!(closed(&mut ws_other).await["reason"], "password changed");
    mine.subscribe(&gid).await;
    // Group news no longer reaches a closed session: a new room shows on `mine` only.
    create_room(&mut admin, &gid, "New room").await;
    mine.next_matching("the new room", |m| m.to_string().contains("New room")).await;

    // Disable: every socket of the user ends; re-enable lets them log in again.
    let r = admin.patch_json("/api/admin/users/alice", json!({"disabled": true})).await;
    r.expect(204);
    assert_eq!(closed(&mut mine).await["reason"], "account disabled");
    assert_eq!(alice.session().await.body["user"], Value::Null);
    alice.login("alice", "a-new-long-password").await.expect_err(401, "unauthenticated");
    admin.patch_json("/api/admin/users/alice", json!({"disabled": false})).await.expect(204);
    alice.login("alice", "a-new-long-password").await.expect(200);
}

#[tokio::test]
async fn one_user_gets_eight_sockets_and_one_call_seat() {
    let node = Node::start(&[]);
    let mut alice = registered(&node, "alice").await;
    let gid = create_group(&mut alice, "G").await;
    let rid = create_room(&mut alice, &gid, "Room").await;
    let cookie = alice.cookie_header().unwrap();
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match ws_handshake(&node.url, Some(&cookie), Some(&node.url)).await {
            Ok(mut s) => {
                // An upgrade racing the registration of the one before is refused by the
                // socket's first message instead.
                use futures_util::StreamExt;
                let first = tokio::time::timeout(WAIT, s.next()).await.unwrap().unwrap().unwrap();
                let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
                match first["type"].as_str() {
                    Some("hello") => open.push(s),
                    _ if first["code"] == "too_many_sockets" => refused += 1,
                    _ => panic!("unexpected first message {first}"),
                }
            }
            Err(WsRefused::Status(429)) => refused += 1,
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
    }
    println!("figure: 40 sockets for one account → {} open, {refused} refused with 429; was 1,000 accepted", open.len());
    assert_eq!(open.len(), 8);
    for mut s in open {
        let _ = s.close(None).await; // the tabs close
    }

    // Two tabs join the same call: the second takes the seat, the first is told.
    let mut tab1 = wait_for_socket(&alice).await;
    let mut tab2 = Ws::connect(&alice).await;
    tab1.send(json!({"type": "join", "group": gid, "room": rid})).await;
    tab1.next_of_type("joined").await;
    tab2.send(json!({"type": "join", "group": gid, "room": rid})).await;
    tab2.next_of_type("joined").await;
    let moved = tab1.next_of_type("moved").await;
    assert_eq!((&moved["group"], &moved["room"], &moved["to_session"]), (&json!(gid), &json!(rid), &json!(tab2.session)));
    tab2.wait_list("alice once", &rid, |l| l.len() == 1).await;
    let list = tab2.list(&rid).unwrap();
    assert_eq!((&list[0]["user"], &list[0]["session"]), (&json!("alice@alpha"), &json!(tab2.session)), "{list:?}");
    // The first tab is out of the call (its signals are refused) but still connected.
    tab1.send(json!({"type": "signal", "to": "alice@alpha", "to_session": tab2.session, "kind": "offer", "data": {}})).await;
    tab1.expect_error("not_in_room").await;
}

/// A socket, once the closed ones above are gone from the node (it learns of a close
/// when it reads the end of the stream).
async fn wait_for_socket(c: &Client) -> Ws {
    let cookie = c.cookie_header().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match ws_handshake(&c.origin, Some(&cookie), Some(&c.origin)).await {
            Ok(mut s) => {
                let _ = s.close(None).await;
            }
            Err(WsRefused::Status(429)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("{e:?}"),
        }
        return Ws::connect(c).await;
    }
}

#[tokio::test]
async fn session_ids_are_not_in_the_data_dir() {
    let mut node = Node::start(&[]);
    let alice = registered(&node, "alice").await;
    let cookie = alice.cookie("vc_session").unwrap();
    let st = node.terminate();
    assert!(st.success());
    let mut files = vec![node.data_dir().to_owned()];
    let mut scanned = 0;
    let mut records_seen = false;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            scanned += bytes.len();
            records_seen |= bytes.windows(10).any(|w| w == b"$argon2id$");
            assert!(!bytes.windows(cookie.len()).any(|w| w == cookie.as_bytes()), "the session id is stored in {}", p.display());
        }
    }
    println!("figure: session cookie found in 0 of {scanned} bytes of the data dir (was stored as the key)");
    assert!(records_seen, "the scan sees stored records (the password hash), so it would see the cookie");
}

#[tokio::test]
async fn known_and_unknown_names_cost_the_same_work() {
    let node = Node::start(&[]);
    let _bob = registered(&node, "bob").await;
    let mut c = Client::new(&node);
    let long = "x".repeat(1_100);
    let mut figures = Vec::new();
    for (name, password) in [("bob", long.as_str()), ("nobody", long.as_str()), ("bob", "wrong-but-short"), ("nobody2", "wrong-but-short")] {
        let before = metric(&node, CHECKS).await;
        let t = Instant::now();
        c.login(name, password).await.expect_err(401, "unauthenticated");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let checks = metric(&node, CHECKS).await - before;
        figures.push(format!("{name}/{}B: {checks} check, {ms:.1} ms", password.len()));
        assert_eq!(checks, 1.0, "{name} with a {}-byte password: every attempt is one argon2 check", password.len());
    }
    println!("figure: {} (was 2 ms known vs 34 ms unknown with 1,100 bytes)", figures.join("; "));
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let node = Node::start(&["--registrations-per-hour", "10"]);
    let t = Instant::now();
    let node = &node;
    let answers = join_all((0..60).map(|i| async move {
        let mut c = Client::new(node);
        c.register(&format!("user{i}"), "long-enough-password").await.status
    }))
    .await;
    let created = answers.iter().filter(|s| **s == 201).count();
    let limited = answers.iter().filter(|s| **s == 429).count();
    println!("figure: 60 sign-ups from one address in {:.1} s → {created} accounts, {limited} × 429; was 60", t.elapsed().as_secs_f64());
    assert_eq!((created, limited), (10, 50), "{answers:?}");
}
