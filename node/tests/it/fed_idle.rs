//! An idle federation is quiet: two nodes, a group of alice@alpha with carol@beta and a
//! room, nobody doing anything and nobody in a call, groups checked against their home
//! every 20 s: over 120 s, beta applies no record and flushes its store not once, while
//! the digest checks do run.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn an_idle_member_node_applies_and_flushes_nothing() {
    let mut nodes = fed_net(&["alpha", "beta"], &["--resync-secs", "20"]).await;
    let beta = nodes.pop().unwrap();
    let alpha = nodes.pop().unwrap();
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Quiet").await;
    let rid = create_room(&mut alice, &gid, "Reading room").await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    poll_get(&mut carol, &format!("/api/groups/{gid}"), "the room on beta", |r| room_ids(&r.body).contains(&rid)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let count = |t: &str, name: &str| metric_sum(t, name, &[]);
    let syncs = |t: &str| metric_sum(t, "voicechat_federation_requests_total", &[("proto", "sync")]);
    let before = metrics_text(&beta).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let after = metrics_text(&beta).await;
    let applied = count(&after, "voicechat_federation_applied_total") - count(&before, "voicechat_federation_applied_total");
    let flushes = count(&after, "voicechat_store_flushes_total") - count(&before, "voicechat_store_flushes_total");
    let checks = syncs(&after) - syncs(&before);
    eprintln!("idle 120 s on beta: {applied} records applied, {flushes} store flushes, {checks} digest checks of the group");
    assert_eq!(applied, 0.0, "records re-applied while idle");
    assert_eq!(flushes, 0.0, "store flushes while idle");
    assert!(checks >= 4.0, "the group was checked against its home ({checks} times)");
}
