//! Five wrong passwords for one account lock that account's logins (429 with `Retry-After`,
//! even for the right password) while another account logs in from the same client.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let node = Node::start(&[]);
    let [_alice, _bob] = registered_all(&node, ["alice", "bob"]).await;

    let mut c = Client::new(&node);
    for i in 1..=5 {
        let r = c.login("bob", &format!("wrong-password-{i}")).await;
        r.expect_err(401, "unauthenticated");
    }
    assert_eq!(c.session().await.body["user"], Value::Null);

    // The 6th attempt is limited even with the right password.
    let r = c.login("bob", &pw("bob")).await;
    r.expect_err(429, "rate_limited");
    let retry = r.headers.get("retry-after").unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
    let secs: u64 = retry
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("Retry-After is not integer seconds: {retry:?}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs} not in 1..=60");
    assert_eq!(c.session().await.body["user"], Value::Null, "a limited login must not log in");

    // Still limited right after (the right password does not reset the count).
    c.login("bob", &pw("bob")).await.expect_err(429, "rate_limited");

    // alice is a different account: her login from the same client works.
    let r = c.login("alice", &pw("alice")).await;
    r.expect(200);
    assert_eq!(r.body["user"]["id"], "alice@alpha");
    assert_eq!(c.session().await.body["user"]["id"], "alice@alpha");
}
