//! Federation on `/metrics`: `voicechat_federation_peers` counts connected nodes (up when
//! beta connects, down when it stops) and `voicechat_federation_records_total{kind,verdict}`
//! counts the records a node judged, by kind, as accepted, ignored or rejected.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn peers_gauge_and_record_counters() {
    let (alpha, mut beta) = fed_pair().await;
    for node in [&alpha, &beta] {
        let t = metrics_text(node).await;
        assert_eq!(metric_sum(&t, "voicechat_federation_peers", &[]), 1.0, "{}: one connected peer", node.name);
        let samples = metric_samples(&t, "voicechat_federation_records_total");
        assert!(!samples.is_empty(), "{}: no voicechat_federation_records_total samples", node.name);
        for (labels, _) in &samples {
            let get = |k: &str| labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v.as_str());
            assert!(get("kind").is_some_and(|k| !k.is_empty()), "{}: sample without kind: {labels:?}", node.name);
            assert!(
                matches!(get("verdict"), Some("accepted" | "ignored" | "rejected")),
                "{}: verdict must be accepted|ignored|rejected: {labels:?}",
                node.name
            );
        }
    }

    // beta accepts the group's records once one of its users is a member.
    let before = metrics_text(&beta).await;
    let accepted = |t: &str, kind: &str| fed_records(t, &[("kind", kind), ("verdict", "accepted")]);
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let gid = create_group(&mut alice, "Counted").await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    cws.next_matching_within("group event", FED_WAIT, group_event(&gid, |_: &Value| true)).await;
    let m0 = accepted(&before, "membership");
    wait_metrics(&beta, "an accepted membership", |t| accepted(t, "membership") > m0).await;
    let mid = metrics_text(&beta).await;
    let r0 = accepted(&mid, "room_info");
    let rid = create_room(&mut alice, &gid, "Counted room").await;
    cws.next_matching_within("group event with the room", FED_WAIT, group_event(&gid, |g: &Value| room_ids(g).contains(&rid)))
        .await;
    wait_metrics(&beta, "an accepted room_info", |t| accepted(t, "room_info") > r0).await;

    // beta stops: alpha's peer count goes back to zero.
    let st = beta.terminate();
    assert!(st.success(), "{st:?}");
    wait_metrics(&alpha, "peers back to 0 after beta stopped", |t| {
        metric_sum(t, "voicechat_federation_peers", &[]) == 0.0
    })
    .await;
}
