//! Presence across three nodes: a member joining, muting and leaving a room of alice's
//! group on any node reaches, as deltas, the sockets of members on every node that follow the
//! group (and shows in `GET /api/groups/{gid}` there), with `user` as `name@node` and the
//! joining socket's session.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn join_mute_and_leave_reach_every_node() {
    let (alpha, beta, gamma) = fed_trio().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    let mut dave = registered_on(&gamma, "dave").await;
    let gid = create_group(&mut alice, "Trio").await;
    let rid = create_room(&mut alice, &gid, "Jam").await;
    let g = format!("/api/groups/{gid}");
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    let mut dws = Ws::connect(&dave).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    add_member(&mut alice, &gid, "dave@gamma").await;
    accept_invitation(&mut carol, &gid).await;
    accept_invitation(&mut dave, &gid).await;
    let all_three = |g: &Value| member_users(g).len() == 3;
    cws.next_matching_within("group with all three members", FED_WAIT, group_event(&gid, all_three)).await;
    dws.next_matching_within("group with all three members", FED_WAIT, group_event(&gid, all_three)).await;
    // alice and dave are on the group's page: their sockets follow it.
    assert_eq!(aws.subscribe(&gid).await["rooms"], json!([]), "nobody was ever in a call of it");
    dws.subscribe(&gid).await;

    // carol joins on beta: alice (alpha) and dave (gamma) see her session.
    let (a, c, d) = (aws.session.clone(), cws.session.clone(), dws.session.clone());
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    let j = cws.next_of_type("joined").await;
    assert_eq!((&j["group"], &j["room"], &j["session"]), (&json!(gid), &json!(rid), &json!(c)));
    let carol_in = |l: &[Value]| has_session(l, "carol@beta", &c, false);
    aws.wait_list_within("participants with carol@beta", FED_WAIT, &rid, carol_in).await;
    dws.wait_list_within("participants with carol@beta", FED_WAIT, &rid, carol_in).await;
    cws.wait_list("participants with herself", &rid, carol_in).await;
    for ws in [&mut aws, &mut dws] {
        let joined = ws.next_matching("the delta of carol's join", |m| m["type"] == "participant_joined").await;
        assert_eq!((&joined["group"], &joined["room"], &joined["version"]), (&json!(gid), &json!(rid), &json!(1)), "{joined}");
        let p = without_join_times(&json!([joined["participant"]]));
        assert_eq!(p, json!([{"user": "carol@beta", "session": c, "muted": false}]), "{joined}");
    }
    for (client, who) in [(&mut alice, "alpha"), (&mut dave, "gamma")] {
        let r = client.get(&g).await;
        let room = r.body["rooms"].as_array().unwrap().iter().find(|r| r["id"] == rid.as_str()).unwrap().clone();
        assert!(carol_in(room["participants"].as_array().unwrap()), "GroupDetail on {who} shows carol in the room: {r:?}");
    }

    // alice joins (muted) on alpha: carol and dave see both.
    aws.send(json!({"type": "join", "group": gid, "room": rid, "muted": true})).await;
    aws.next_of_type("joined").await;
    let both = |l: &[Value]| has_session(l, "alice@alpha", &a, true) && has_session(l, "carol@beta", &c, false);
    cws.wait_list_within("participants with alice and carol", FED_WAIT, &rid, both).await;
    dws.wait_list_within("participants with alice and carol", FED_WAIT, &rid, both).await;
    aws.wait_list("participants with alice and carol", &rid, both).await;

    // dave joins on gamma: everyone sees three.
    dws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    dws.next_of_type("joined").await;
    let three = |l: &[Value]| l.len() == 3 && both(l) && has_session(l, "dave@gamma", &d, false);
    aws.wait_list_within("participants with all three", FED_WAIT, &rid, three).await;
    cws.wait_list_within("participants with all three", FED_WAIT, &rid, three).await;

    // Mutes travel both ways.
    cws.send(json!({"type": "mute", "muted": true})).await;
    let carol_muted = |l: &[Value]| has_session(l, "carol@beta", &c, true) && l.len() == 3;
    aws.wait_list_within("carol muted", FED_WAIT, &rid, carol_muted).await;
    dws.wait_list_within("carol muted", FED_WAIT, &rid, carol_muted).await;
    aws.send(json!({"type": "mute", "muted": false})).await;
    let alice_unmuted = |l: &[Value]| has_session(l, "alice@alpha", &a, false) && has_session(l, "carol@beta", &c, true);
    cws.wait_list_within("alice unmuted", FED_WAIT, &rid, alice_unmuted).await;
    dws.wait_list_within("alice unmuted", FED_WAIT, &rid, alice_unmuted).await;

    // carol leaves: the others see her go, and alpha's GroupDetail agrees.
    cws.send(json!({"type": "leave"})).await;
    let l = cws.next_of_type("left").await;
    assert_eq!((&l["group"], &l["room"]), (&json!(gid), &json!(rid)), "{l}");
    let carol_gone = |l: &[Value]| lacks_session(l, &c) && l.len() == 2;
    aws.wait_list_within("participants without carol", FED_WAIT, &rid, carol_gone).await;
    dws.wait_list_within("participants without carol", FED_WAIT, &rid, carol_gone).await;
    let r = alice.get(&g).await;
    let room = r.body["rooms"].as_array().unwrap().iter().find(|r| r["id"] == rid.as_str()).unwrap().clone();
    let mut users = participant_users(&room);
    users.sort();
    assert_eq!(users, ["alice@alpha", "dave@gamma"], "{r:?}");
    let r = carol.get(&g).await;
    let room = r.body["rooms"].as_array().unwrap().iter().find(|r| r["id"] == rid.as_str()).unwrap().clone();
    let mut users = participant_users(&room);
    users.sort();
    assert_eq!(users, ["alice@alpha", "dave@gamma"], "beta's view after carol left: {r:?}");
}

/// A display name in any script travels with presence (signed by the user's home node):
/// the other node's call list and member list show it, and everyone lists the call in the
/// order of the join times the home nodes signed. A bad name is refused and creates nothing.
#[tokio::test]
async fn display_names_and_join_times_cross_nodes() {
    let (alpha, beta) = fed_pair().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let mut carol = registered_on(&beta, "carol").await;
    for bad in ["a\u{7}b", &"é".repeat(65)] {
        let r = alice.put_json("/api/profile", json!({"display_name": bad})).await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    let r = alice.put_json("/api/profile", json!({"display_name": "  Zoë Ålice "})).await;
    r.expect(200);
    assert_eq!(r.body["display_name"], "Zoë Ålice");
    let gid = create_group(&mut alice, "Names").await;
    let rid = create_room(&mut alice, &gid, "Hall").await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    let mut aws = Ws::connect(&alice).await;
    let mut cws = Ws::connect(&carol).await;
    cws.subscribe(&gid).await;
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    let alice_named = |l: &[Value]| l.iter().any(|p| p["user"] == "alice@alpha" && p["name"] == "Zoë Ålice");
    cws.wait_list_within("alice, by her name", FED_WAIT, &rid, alice_named).await;
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    let both = |l: &[Value]| l.len() == 2 && alice_named(l);
    cws.wait_list_within("both", FED_WAIT, &rid, both).await;
    aws.wait_list_within("both", FED_WAIT, &rid, |l| l.len() == 2).await;
    for ws in [&aws, &cws] {
        let l = ws.list(&rid).unwrap();
        let at = |u: &str| l.iter().find(|p| p["user"] == u).and_then(|p| p["joined_at"].as_u64()).unwrap();
        assert!(at("alice@alpha") <= at("carol@beta"), "alice joined first: {l:?}");
    }
    // beta's member list shows the name it learned.
    let g = carol.get(&format!("/api/groups/{gid}")).await;
    let m = g.body["members"].as_array().unwrap().iter().find(|m| m["user"] == "alice@alpha").unwrap().clone();
    assert_eq!(m["name"], "Zoë Ålice", "{m}");
}
