//! Catching up after a crash: gamma is `kill -9`ed while alice changes her group on alpha
//! (a room created, members added, a rename); restarted on the same key and ports, gamma
//! syncs the group from its home and its API shows every change, then follows live again.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn a_restarted_node_syncs_what_it_missed() {
    let mut nodes = fed_net(&["alpha", "gamma"], &[]).await;
    let mut gamma = nodes.pop().unwrap();
    let alpha = nodes.pop().unwrap();
    let peer_id = gamma.peer_id();
    let mut alice = registered_on(&alpha, "alice").await;
    let _bob = registered_on(&alpha, "bob").await;
    let mut dave = registered_on(&gamma, "dave").await;
    let mut erin = registered_on(&gamma, "erin").await;
    let gid = create_group(&mut alice, "Before").await;
    let first = create_room(&mut alice, &gid, "First").await;
    add_member(&mut alice, &gid, "dave@gamma").await;
    accept_invitation(&mut dave, &gid).await;
    let g = format!("/api/groups/{gid}");
    poll_get(&mut dave, &g, "dave sees the group", |r| r.status == 200 && room_ids(&r.body) == [first.clone()]).await;

    gamma.kill9();

    // Changes while gamma is down.
    let missed = create_room(&mut alice, &gid, "Missed").await;
    add_member(&mut alice, &gid, "bob").await;
    add_member(&mut alice, &gid, "erin@gamma").await;
    alice.patch_json(&g, json!({"name": "After"})).await.expect(200);

    gamma.restart();
    assert_eq!(gamma.peer_id(), peer_id, "same key, same PeerId after restart");
    dave.set_origin(&gamma.url);
    erin.set_origin(&gamma.url);

    let mut want_rooms = vec![first.clone(), missed.clone()];
    want_rooms.sort();
    let caught_up = |r: &Resp| {
        let mut rooms = room_ids(&r.body);
        rooms.sort();
        let members = member_users(&r.body);
        r.status == 200
            && r.body["name"] == "After"
            && rooms == want_rooms
            && ["alice@alpha", "bob@alpha", "dave@gamma", "erin@gamma"].iter().all(|u| members.contains(&u.to_string()))
    };
    let r = poll_get(&mut dave, &g, "gamma shows the changes made while it was down", caught_up).await;
    assert_eq!(r.body["home"], "alpha");
    assert_eq!(member_users(&r.body).len(), 4, "{r:?}");
    let room = r.body["rooms"].as_array().unwrap().iter().find(|r| r["id"] == missed.as_str()).unwrap().clone();
    assert_eq!(room["name"], "Missed", "{r:?}");

    // erin, added while her node was down, has an invitation; once accepted, the group.
    accept_invitation(&mut erin, &gid).await;
    let r = poll_get(&mut erin, "/api/groups", "erin's list has the group", |r| {
        r.body.as_array().is_some_and(|a| a.iter().any(|g| g["id"] == gid.as_str()))
    })
    .await;
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "After", "home": "alpha", "role": "member"}]),
        "{r:?}"
    );

    // And gamma follows live again.
    let mut dws = Ws::connect(&dave).await;
    let live = create_room(&mut alice, &gid, "Live again").await;
    dws.next_matching_within("group event with the new room", FED_WAIT, group_event(&gid, |g: &Value| room_ids(g).contains(&live)))
        .await;
}
