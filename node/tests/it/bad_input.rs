//! Bad input gets a clear JSON error and never hurts the node: malformed, oversized and
//! mistyped HTTP bodies, unknown routes, bad names and passwords, junk on the socket;
//! plus the security headers, `/healthz` and `/metrics`.

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn malformed_and_wrong_typed_json_is_400() {
    let node = Node::start(&[]);
    let mut alice = registered(&node, "alice").await;

    // Every case is tried, then all mismatches are reported together.
    let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(65));
    let cases: [(&str, &str); 7] = [
        ("malformed JSON", r#"{"name": "x""#),
        ("not an object", r#"["name"]"#),
        ("missing field", r#"{}"#),
        ("wrong-typed field", r#"{"name": 42}"#),
        ("blank name", r#"{"name": "   "}"#),
        ("65-character name", &long),
        ("control character in name", r#"{"name": "tab\u0007bell"}"#),
    ];
    let mut wrong = Vec::new();
    for (what, body) in cases {
        let b = Body::Raw { content_type: Some("application/json"), bytes: body.as_bytes().to_vec() };
        let r = alice.send(Method::POST, "/api/groups", b, Csrf::Auto).await;
        let has_message = r.body["message"].as_str().is_some_and(|m| !m.trim().is_empty());
        if (r.status, r.code(), has_message) != (400, "bad_request", true) {
            wrong.push(format!("{what}: {} {}", r.status, r.text));
        }
    }
    let mut c = Client::new(&node);
    let r = c.send(Method::POST, "/api/register", Body::Json(json!({"username": "carol"})), Csrf::Auto).await;
    if (r.status, r.code()) != (400, "bad_request") {
        wrong.push(format!("POST /api/register without password: {} {}", r.status, r.text));
    }
    assert!(wrong.is_empty(), "POST /api/groups must answer 400 bad_request with a message:\n{}", wrong.join("\n"));
    assert_eq!(alice.get("/api/groups").await.body, json!([]), "a refused body created a group");
}

#[tokio::test]
async fn oversized_and_non_json_bodies_are_refused() {
    let node = Node::start(&[]);
    let mut alice = registered(&node, "alice").await;

    // Over the 64 KiB cap.
    let big = json!({"name": "x".repeat(70 * 1024)});
    alice.post_json("/api/groups", big).await.expect_err(413, "too_large");

    // Not sent as JSON.
    let body = Body::Raw { content_type: Some("text/plain"), bytes: br#"{"name":"Plain"}"#.to_vec() };
    let r = alice.send(Method::POST, "/api/groups", body, Csrf::Auto).await;
    r.expect_err(415, "bad_request");
    let form = Body::Raw { content_type: Some("application/x-www-form-urlencoded"), bytes: b"name=Form".to_vec() };
    alice.send(Method::POST, "/api/groups", form, Csrf::Auto).await.expect_err(415, "bad_request");
    assert_eq!(alice.get("/api/groups").await.body, json!([]), "a refused body created a group");
}

#[tokio::test]
async fn unknown_routes_bad_names_and_wrong_passwords() {
    let node = Node::start(&[]);
    let mut alice = registered(&node, "alice").await;

    // Unknown routes answer JSON 404s.
    let r = alice.get("/api/no-such-thing").await;
    r.expect_err(404, "not_found");
    assert!(
        r.headers.get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
        "{r:?}"
    );
    alice.get("/api/groups/00000000000000000000000000000000").await.expect_err(404, "not_found");
    alice.get("/api/groups/not-a-group-id").await.expect_err(404, "not_found");

    // Bad names and passwords at registration.
    let mut c = Client::new(&node);
    for bad in ["ab", "bad name", "-dash", "x".repeat(33).as_str(), "émile", ""] {
        let r = c.register(bad, "a-fine-password").await;
        r.expect_err(400, "bad_request");
    }
    c.register("carol", "short").await.expect_err(400, "bad_request");
    c.register("carol", &"p".repeat(257)).await.expect_err(400, "bad_request");
    // Names are case-insensitive: ALICE is taken.
    c.register("ALICE", "a-fine-password").await.expect_err(409, "conflict");

    // Wrong password, unknown user: the same 401.
    c.login("alice", "not-her-password").await.expect_err(401, "unauthenticated");
    c.login("nobody", "not-her-password").await.expect_err(401, "unauthenticated");
    // Logged-out calls: 401.
    c.get("/api/groups").await.expect_err(401, "unauthenticated");
    c.get("/api/ice").await.expect_err(401, "unauthenticated");
    let r = alice.get("/api/ice").await;
    r.expect(200);
    assert!(r.body["ice_servers"].is_array(), "{r:?}");
}

#[tokio::test]
async fn security_headers_and_health() {
    let node = Node::start(&[]);
    let mut c = Client::new(&node);
    let r = c.get("/").await;
    let h = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let csp = h("content-security-policy").unwrap_or_else(|| panic!("no Content-Security-Policy on /: {r:?}"));
    assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"), "{r:?}");
    assert!(h("referrer-policy").is_some(), "no Referrer-Policy on /: {r:?}");
    assert!(
        h("x-frame-options").is_some() || csp.contains("frame-ancestors"),
        "neither X-Frame-Options nor frame-ancestors: {r:?}"
    );
    // Scripts: no inline or eval (the directive that governs them is script-src, else default-src).
    let directive =
        |name: &str| csp.split(';').map(str::trim).find(|d| d.starts_with(&format!("{name} "))).map(str::to_owned);
    let scripts = directive("script-src").or_else(|| directive("default-src"));
    let scripts = scripts.unwrap_or_else(|| panic!("CSP governs no scripts: {csp}"));
    assert!(
        !scripts.contains("'unsafe-inline'") && !scripts.contains("'unsafe-eval'"),
        "CSP allows inline/eval script: {csp}"
    );

    let r = c.get("/healthz").await;
    r.expect(200);
    assert_eq!(r.text.trim(), "ok");
}

#[tokio::test]
async fn metrics_show_the_nodes_own_series() {
    let node = Node::start(&[]);
    let mut c = Client::new(&node);
    // Make some traffic, then the metrics show the node's own series.
    registered(&node, "alice").await;
    let r = c.get("/metrics").await;
    r.expect(200);
    assert!(r.text.lines().any(|l| l.starts_with("voicechat_")), "no voicechat_ metrics:\n{}", r.text);
}

#[tokio::test]
async fn websocket_survives_junk() {
    let node = Node::start(&[]);
    let alice = registered(&node, "alice").await;
    let mut ws = Ws::connect(&alice).await;

    ws.send(json!({"type": "dance", "style": "tango"})).await;
    let e = ws.expect_error("unknown_type").await;
    assert_reply_to(&e, "dance");
    ws.barrier().await; // the same socket still answers ping

    ws.send_text("this is not json".into()).await;
    ws.expect_error("bad_message").await;
    ws.send(json!({"no_type": true})).await;
    ws.expect_error("bad_message").await;
    ws.send(json!({"type": "join", "group": 5})).await;
    ws.expect_error("bad_message").await;
    ws.send(json!({"type": "mute", "muted": "loud"})).await;
    ws.expect_error("bad_message").await;
    // Following a group: the group is required and must be an id; nobody's group is not found.
    ws.send(json!({"type": "subscribe"})).await;
    let e = ws.expect_error("bad_message").await;
    assert_reply_to(&e, "subscribe");
    assert!(e["message"].as_str().unwrap().contains("group"), "says what is missing: {e}");
    ws.send(json!({"type": "subscribe", "group": "not-an-id"})).await;
    assert_reply_to(&ws.expect_error("bad_message").await, "subscribe");
    ws.send(json!({"type": "subscribe", "group": "ab".repeat(16)})).await;
    assert_reply_to(&ws.expect_error("not_found").await, "subscribe");
    ws.send(json!({"type": "resync", "group": "ab".repeat(16)})).await;
    assert_reply_to(&ws.expect_error("bad_message").await, "resync");
    ws.send(json!({"type": "resync", "group": "ab".repeat(16), "room": "cd".repeat(16)})).await;
    assert_reply_to(&ws.expect_error("not_found").await, "resync");
    // Ending a subscription there is none of is no error.
    ws.send(json!({"type": "unsubscribe"})).await;
    assert!(ws.barrier().await.is_empty());
    ws.barrier().await;

    // A frame over 64 KiB: an error reply or a close, never a pong.
    let padded = json!({"type": "ping", "pad": "z".repeat(70 * 1024)});
    ws.send_text(padded.to_string()).await;
    match ws.recv_any(WAIT).await {
        Ok(m) => {
            assert_eq!(m["type"], "error", "an oversized frame was processed: {m}");
            assert_eq!(m["code"], "too_large", "{m}");
        }
        Err(closed) => eprintln!("oversized frame closed the socket: {closed}"),
    }

    // The node still serves HTTP and new sockets.
    let mut c = Client::new(&node);
    c.get("/healthz").await.expect(200);
    let mut ws2 = Ws::connect(&alice).await;
    ws2.barrier().await;
}
