//! A user of another node as a member: alice@alpha adds carol@beta to her group; carol's
//! node shows the group live (members, rooms, renames, roles), refuses to change it locally
//! (it is managed on its home node), and forgets it when alpha removes carol.

use serde_json::{Value, json};

use crate::harness::*;

fn sorted_members(g: &Value) -> Vec<Value> {
    let mut m = pick_all(&g["members"], MEMBER).as_array().unwrap().clone();
    m.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    m
}

#[tokio::test]
async fn remote_member_sees_the_group_live_and_the_home_keeps_control() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let mut cws = Ws::connect(&carol).await;
    let mut aws = Ws::connect(&alice).await;
    assert_eq!(cws.user, "carol@beta");

    let gid = create_group(&mut alice, "Across").await;
    let lobby = create_room(&mut alice, &gid, "Lobby").await;
    let g = format!("/api/groups/{gid}");

    // A node alpha has never heard of: 400 naming it; nothing changes.
    let r = alice.post_json(&format!("{g}/members"), json!({"user": "zed@zeta"})).await;
    r.expect_err(400, "bad_request");
    assert!(r.body["message"].as_str().unwrap().contains("zeta"), "the message names the unknown node: {r:?}");
    assert_eq!(member_users(&alice.get(&g).await.body), ["alice@alpha"]);

    // carol@beta is added on alpha.
    let r = alice.post_json(&format!("{g}/members"), json!({"user": "carol@beta"})).await;
    r.expect(201);
    assert_eq!(pick(&r.body, MEMBER), json!({"user": "carol@beta", "role": "member"}), "{r:?}");
    let has_carol = |g: &Value| member_users(g).contains(&"carol@beta".to_owned());
    aws.next_matching("group event listing carol@beta", group_event(&gid, has_carol)).await;

    // carol's node shows an invitation, not the group; she accepts it.
    let inv = cws.next_matching_within("an invitation", FED_WAIT, |m| m["type"] == "invitations").await;
    assert_eq!(pick_all(&inv["invitations"], &["group", "name", "home", "role"]), json!([{"group": gid, "name": "Across", "home": "alpha", "role": "member"}]), "{inv}");
    carol.get("/api/groups").await.expect(200);
    assert_eq!(carol.get("/api/groups").await.body, json!([]), "nothing of it shows before she accepts");
    carol.get(&g).await.expect_err(404, "not_found");
    accept_invitation(&mut carol, &gid).await;

    // carol's socket on beta hears of the group, with its members and rooms.
    let ev = cws.next_matching_within("group event for alice's group", FED_WAIT, group_event(&gid, has_carol)).await;
    let gd = &ev["group"];
    assert_eq!((&gd["name"], &gd["home"], &gd["role"]), (&json!("Across"), &json!("alpha"), &json!("member")), "{ev}");
    assert_eq!(
        sorted_members(gd),
        [json!({"user": "alice@alpha", "role": "owner"}), json!({"user": "carol@beta", "role": "member"})],
        "{ev}"
    );
    assert_eq!(room_ids(gd), std::slice::from_ref(&lobby), "{ev}");

    // beta's API lists and shows it.
    let r = carol.get("/api/groups").await;
    r.expect(200);
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "Across", "home": "alpha", "role": "member"}]),
        "{r:?}"
    );
    let r = carol.get(&g).await;
    r.expect(200);
    assert_eq!((&r.body["id"], &r.body["home"], &r.body["role"]), (&json!(gid), &json!("alpha"), &json!("member")));
    assert_eq!(
        sorted_members(&r.body),
        [json!({"user": "alice@alpha", "role": "owner"}), json!({"user": "carol@beta", "role": "member"})],
        "{r:?}"
    );
    let rooms = r.body["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "{r:?}");
    assert_eq!(
        (&rooms[0]["id"], &rooms[0]["group"], &rooms[0]["name"], &rooms[0]["participants"]),
        (&json!(lobby), &json!(gid), &json!("Lobby"), &json!([])),
        "{r:?}"
    );

    // A room created on alpha shows up live on beta.
    let stage = create_room(&mut alice, &gid, "Stage").await;
    let ev = cws
        .next_matching_within("group event with the new room", FED_WAIT, group_event(&gid, |g| room_ids(g).contains(&stage)))
        .await;
    let room = ev["group"]["rooms"].as_array().unwrap().iter().find(|r| r["id"] == stage.as_str()).unwrap().clone();
    assert_eq!(room["name"], "Stage", "{ev}");
    let mut ids = room_ids(&carol.get(&g).await.body);
    ids.sort();
    let mut want = vec![lobby.clone(), stage.clone()];
    want.sort();
    assert_eq!(ids, want);

    // A rename on alpha reaches beta.
    alice.patch_json(&g, json!({"name": "Across the sea"})).await.expect(200);
    cws.next_matching_within("group event with the new name", FED_WAIT, group_event(&gid, |g| g["name"] == "Across the sea"))
        .await;
    let r = carol.get("/api/groups").await;
    assert_eq!(r.body[0]["name"], "Across the sea", "{r:?}");

    // carol becomes admin on alpha; beta shows her role.
    alice.patch_json(&format!("{g}/members/carol@beta"), json!({"role": "admin"})).await.expect(200);
    cws.next_matching_within("group event with carol as admin", FED_WAIT, group_event(&gid, |g| g["role"] == "admin")).await;
    assert_eq!(carol.get(&g).await.body["role"], "admin");

    // Even as an admin, carol cannot change the group through beta: it is managed on alpha.
    let managed_at_home = |r: &Resp| {
        r.expect_err(400, "bad_request");
        let m = r.body["message"].as_str().unwrap().to_lowercase();
        assert!(m.contains("home") || m.contains("alpha"), "the message should say the group is managed on its home node: {r:?}");
    };
    managed_at_home(&carol.post_json(&format!("{g}/rooms"), json!({"name": "Carol's"})).await);
    managed_at_home(&carol.patch_json(&format!("{g}/rooms/{lobby}"), json!({"name": "Renamed"})).await);
    managed_at_home(&carol.delete(&format!("{g}/rooms/{lobby}")).await);
    let _dave = registered_on(&beta, "dave").await;
    managed_at_home(&carol.post_json(&format!("{g}/members"), json!({"user": "dave@beta"})).await);
    managed_at_home(&carol.patch_json(&g, json!({"name": "Carol's group"})).await);
    managed_at_home(&carol.post_json(&format!("{g}/invites"), json!({})).await);
    let r = alice.get(&g).await;
    assert_eq!(r.body["name"], "Across the sea", "{r:?}");
    let mut ids = room_ids(&r.body);
    ids.sort();
    assert_eq!(ids, want, "beta's refusals changed nothing on alpha: {r:?}");
    assert_eq!(member_users(&r.body).len(), 2, "{r:?}");
    let rooms = r.body["rooms"].as_array().unwrap();
    assert!(rooms.iter().any(|r| r["id"] == lobby.as_str() && r["name"] == "Lobby"), "{r:?}");

    // alpha removes carol: beta drops the group.
    cws.clear();
    alice.delete(&format!("{g}/members/carol@beta")).await.expect(204);
    let ev = cws
        .next_matching_within("group_removed", FED_WAIT, |m| m["type"] == "group_removed" && m["group"] == gid.as_str())
        .await;
    assert_eq!(ev["group"], gid.as_str());
    carol.get(&g).await.expect_err(404, "not_found");
    assert_eq!(carol.get("/api/groups").await.body, json!([]), "beta still lists the group");
    aws.next_matching("group event without carol", group_event(&gid, |g| !has_carol(g))).await;
    assert_eq!(member_users(&alice.get(&g).await.body), ["alice@alpha"]);

    // Invited again, carol accepts, then leaves from her own node: alpha removes her.
    aws.barrier().await;
    aws.clear();
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    aws.next_matching_within("carol is back", FED_WAIT, group_event(&gid, has_carol)).await;
    carol.delete(&format!("{g}/members/carol@beta")).await.expect(204);
    assert_eq!(carol.get("/api/groups").await.body, json!([]), "gone from her list at once");
    aws.next_matching_within("alpha removes carol after she left", FED_WAIT, group_event(&gid, |g| !has_carol(g))).await;
    assert_eq!(member_users(&alice.get(&g).await.body), ["alice@alpha"]);
}
