//! Invite links across nodes: carol on beta redeems alice's alpha invite link through
//! beta's `POST /api/invites/remote` and becomes a member (alice sees her live); a
//! revoked or unknown code answers 410, a link to a node nobody knows answers 400.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn a_remote_user_joins_by_invite_link() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let [mut carol, mut dave] = [registered_on(&beta, "carol").await, registered_on(&beta, "dave").await];
    let gid = create_group(&mut alice, "Open door").await;
    let rid = create_room(&mut alice, &gid, "Hall").await;
    let g = format!("/api/groups/{gid}");
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;

    let r = alice.post_json(&format!("{g}/invites"), json!({})).await;
    r.expect(201);
    let code = r.body["code"].as_str().unwrap().to_owned();
    let link = r.body["url"].as_str().unwrap().to_owned();
    assert_eq!(link, format!("{}/invite/{code}", alpha.url), "the link is alpha's: {r:?}");

    // A revoked code and an unknown code: 410, and dave is not let in.
    let r = alice.post_json(&format!("{g}/invites"), json!({})).await;
    let revoked = r.body["url"].as_str().unwrap().to_owned();
    let revoked_code = r.body["code"].as_str().unwrap().to_owned();
    alice.delete(&format!("{g}/invites/{revoked_code}")).await.expect(204);
    dave.post_json("/api/invites/remote", json!({"link": revoked})).await.expect_err(410, "gone");
    let unknown = format!("{}/invite/0123456789abcdefXYZ", alpha.url);
    dave.post_json("/api/invites/remote", json!({"link": unknown})).await.expect_err(410, "gone");
    // A link to an origin that is no known node: 400.
    dave.post_json("/api/invites/remote", json!({"link": format!("http://127.0.0.1:9/invite/{code}")}))
        .await
        .expect_err(400, "bad_request");
    dave.post_json("/api/invites/remote", json!({"link": "not a link"})).await.expect_err(400, "bad_request");
    assert_eq!(dave.get("/api/groups").await.body, json!([]), "a refused invite admitted dave");
    dave.get(&g).await.expect_err(404, "not_found");
    assert_eq!(member_users(&alice.get(&g).await.body), ["alice@alpha"]);

    // carol redeems the good link on her own node.
    let r = carol.post_json("/api/invites/remote", json!({"link": link})).await;
    r.expect(200);
    assert_eq!(
        (&r.body["id"], &r.body["name"], &r.body["home"], &r.body["role"]),
        (&json!(gid), &json!("Open door"), &json!("alpha"), &json!("member")),
        "{r:?}"
    );
    let mut members = member_users(&r.body);
    members.sort();
    assert_eq!(members, ["alice@alpha", "carol@beta"], "{r:?}");
    assert_eq!(room_ids(&r.body), std::slice::from_ref(&rid), "{r:?}");

    // alice sees carol@beta join live; alpha's list has her.
    let has_carol = |g: &Value| member_users(g).contains(&"carol@beta".to_owned());
    aws.next_matching_within("group event listing carol@beta", FED_WAIT, group_event(&gid, has_carol)).await;
    let r = alice.get(&g).await;
    assert!(
        pick_all(&r.body["members"], MEMBER).as_array().unwrap().contains(&json!({"user": "carol@beta", "role": "member"})),
        "{r:?}"
    );
    let r = alice.get(&format!("{g}/invites")).await;
    let inv = r.body.as_array().unwrap().iter().find(|i| i["code"] == code.as_str()).cloned();
    assert_eq!(inv.unwrap_or_else(|| panic!("invite gone: {r:?}"))["uses"], 1, "{r:?}");

    // carol's node now lists and shows the group; her socket heard of it.
    cws.next_matching_within("group event for the joined group", FED_WAIT, group_event(&gid, has_carol)).await;
    let r = carol.get("/api/groups").await;
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "Open door", "home": "alpha", "role": "member"}]),
        "{r:?}"
    );
    carol.get(&g).await.expect(200);

    // Rooms created afterwards reach her too.
    let later = create_room(&mut alice, &gid, "Later").await;
    cws.next_matching_within("group event with the later room", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&later)))
        .await;
}
