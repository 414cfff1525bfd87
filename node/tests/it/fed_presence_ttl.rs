//! A node that dies (`kill -9`, no `left` sent) loses its users' sessions on the other
//! nodes once their presence expires: carol@beta vanishes from alice's participants on alpha
//! within the presence TTL (30 s) plus heartbeat and skew slack.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// TTL 30 s after the last heartbeat (every 10 s) plus slack; a bound, not a speed claim.
const TTL_WAIT: Duration = Duration::from_secs(45);

#[tokio::test]
async fn a_dead_nodes_sessions_expire_everywhere() {
    let (alpha, mut beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Fragile").await;
    let rid = create_room(&mut alice, &gid, "Call").await;
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&rid))).await;

    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    let (a, c) = (aws.session.clone(), cws.session.clone());
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, false);
    aws.wait_list_within("participants with carol@beta", FED_WAIT, &rid, both).await;

    // beta dies without a word.
    beta.kill9();

    let only_alice = |l: &[Value]| l.len() == 1 && has_session(l, "alice@alpha", &a, false) && lacks_session(l, &c);
    aws.wait_list_within("participants without carol after beta died", TTL_WAIT, &rid, only_alice)
        .await;
    let r = alice.get(&format!("/api/groups/{gid}")).await;
    let room = r.body["rooms"].as_array().unwrap().iter().find(|r| r["id"] == rid.as_str()).unwrap().clone();
    assert_eq!(participant_users(&room), ["alice@alpha"], "alpha still shows beta's session: {r:?}");

    // alpha's own session was never disturbed, and alpha keeps serving.
    aws.barrier().await;
    create_room(&mut alice, &gid, "Still here").await;
}
