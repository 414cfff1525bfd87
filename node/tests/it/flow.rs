//! A group's life seen by its members and by an outsider: live `group` and presence
//! events reach members only, invites (open, accept, revoked, used up), the permission
//! table for plain members, and removal.

use serde_json::json;

use crate::harness::*;

fn is_group(gid: &str, pred: impl Fn(&serde_json::Value) -> bool) -> impl Fn(&serde_json::Value) -> bool {
    let gid = gid.to_owned();
    move |m| m["type"] == "group" && m["group"]["id"] == gid.as_str() && pred(&m["group"])
}

#[tokio::test]
async fn members_get_live_events_and_outsiders_see_nothing() {
    let node = Node::start(&[]);
    let [mut alice, mut bob, mut eve] = registered_all(&node, ["alice", "bob", "eve"]).await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    let mut ews = Ws::connect(&eve).await;
    assert_eq!(aws.user, "alice@alpha");
    assert_eq!(bws.user, "bob@alpha");

    // alice creates a group: she is its owner, and her socket hears of it.
    let r = alice.post_json("/api/groups", json!({"name": "Friends"})).await;
    r.expect(201);
    let gid = r.body["id"].as_str().unwrap().to_owned();
    assert!(is_hex32(&r.body["id"]), "group id is 32 hex: {r:?}");
    assert_eq!(
        (&r.body["name"], &r.body["home"], &r.body["role"]),
        (&json!("Friends"), &json!("alpha"), &json!("owner"))
    );
    assert_eq!(pick_all(&r.body["members"], MEMBER), json!([{"user": "alice@alpha", "role": "owner"}]), "{r:?}");
    assert_eq!(r.body["rooms"], json!([]));
    let ev = aws.next_matching("group created", is_group(&gid, |_| true)).await;
    assert_eq!(ev["group"]["name"], "Friends");

    // alice adds bob: both sockets get a group event listing bob.
    let r = alice.post_json(&format!("/api/groups/{gid}/members"), json!({"user": "bob"})).await;
    r.expect(201);
    assert_eq!(pick(&r.body, MEMBER), json!({"user": "bob@alpha", "role": "member"}), "{r:?}");
    let has_bob = |g: &serde_json::Value| member_users(g).contains(&"bob@alpha".to_owned());
    let ev = bws.next_matching("group event after being added", is_group(&gid, has_bob)).await;
    assert_eq!(ev["group"]["role"], "member", "bob's view carries his role: {ev}");
    aws.next_matching("group event with bob", is_group(&gid, has_bob)).await;

    // alice creates a room: both hear of it.
    let r = alice.post_json(&format!("/api/groups/{gid}/rooms"), json!({"name": "Lobby"})).await;
    r.expect(201);
    let rid = r.body["id"].as_str().unwrap().to_owned();
    assert!(is_hex32(&r.body["id"]));
    assert_eq!(
        (&r.body["group"], &r.body["name"], &r.body["participants"]),
        (&json!(gid), &json!("Lobby"), &json!([]))
    );
    let has_room = |g: &serde_json::Value| room_ids(g).contains(&rid);
    aws.next_matching("group event with the room", is_group(&gid, has_room)).await;
    bws.next_matching("group event with the room", is_group(&gid, has_room)).await;

    // alice's page shows the group: her socket follows it. bob joins the call: he gets
    // `joined` and the room's list; alice gets the delta.
    aws.subscribe(&gid).await;
    bws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    let j = bws.next_of_type("joined").await;
    assert_eq!((&j["group"], &j["room"], &j["session"]), (&json!(gid), &json!(rid), &json!(bws.session)));
    let b_sess = bws.session.clone();
    let bob_in = |l: &[serde_json::Value]| {
        l.iter().any(|p| p["user"] == "bob@alpha" && p["session"] == b_sess.as_str() && p["muted"] == false)
    };
    aws.wait_list("participants with bob", &rid, bob_in).await;
    bws.wait_list("participants with bob", &rid, bob_in).await;
    let r = bob.get(&format!("/api/groups/{gid}")).await;
    r.expect(200);
    assert_eq!(r.body["rooms"][0]["participants"][0]["user"], "bob@alpha", "GroupDetail shows bob in the room: {r:?}");

    // eve saw none of it, cannot list or open the group, cannot join its room.
    ews.expect_none("anything about alice's group", |m| m.to_string().contains(&gid)).await;
    ews.expect_none("presence", is_presence).await;
    ews.expect_none_of_type("group").await;
    eve.get("/api/groups").await.expect(200);
    assert_eq!(eve.get("/api/groups").await.body, json!([]));
    eve.get(&format!("/api/groups/{gid}")).await.expect_err(404, "not_found");
    ews.send(json!({"type": "join", "group": gid, "room": rid})).await;
    let e = ews.expect_error("not_found").await;
    assert_reply_to(&e, "join");
    aws.expect_none("eve in a call", |m| is_presence(m) && m.to_string().contains("eve@alpha")).await;

    // bob's own list shows the group with his role.
    let r = bob.get("/api/groups").await;
    r.expect(200);
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "Friends", "home": "alpha", "role": "member"}]),
        "{r:?}"
    );
}

#[tokio::test]
async fn invites_open_accept_revoke_and_use_up() {
    let node = Node::start(&[]);
    let [mut alice, mut bob, mut eve] = registered_all(&node, ["alice", "bob", "eve"]).await;
    let gid = create_group(&mut alice, "Club").await;
    add_member(&mut alice, &gid, "bob").await;
    let mut ews = Ws::connect(&eve).await;

    // An unknown code is 404.
    eve.get("/api/invites/0123456789abcdef").await.expect_err(404, "not_found");

    // A revoked invite answers 410 to open and to accept, and does not admit eve.
    let r = alice.post_json(&format!("/api/groups/{gid}/invites"), json!({})).await;
    r.expect(201);
    let revoked = r.body["code"].as_str().unwrap().to_owned();
    assert_eq!(r.body["group"], gid.as_str(), "{r:?}");
    assert_eq!(r.body["created_by"], "alice@alpha", "{r:?}");
    assert_eq!(r.body["max_uses"], json!(null), "default is unlimited: {r:?}");
    assert_eq!(r.body["uses"], 0, "{r:?}");
    assert!(r.body["url"].as_str().is_some_and(|u| u.contains(&revoked)), "invite url carries the code: {r:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let exp = r.body["expires_at"].as_i64().expect("expires_at is Unix seconds");
    assert!((exp - (now + 7 * 86400)).abs() < 3600, "default expiry is 7 days: {exp} vs now {now}");
    eve.get(&format!("/api/invites/{revoked}")).await.expect(200);
    alice.delete(&format!("/api/groups/{gid}/invites/{revoked}")).await.expect(204);
    eve.get(&format!("/api/invites/{revoked}")).await.expect_err(410, "gone");
    eve.post_empty(&format!("/api/invites/{revoked}/accept")).await.expect_err(410, "gone");
    assert_eq!(eve.get("/api/groups").await.body, json!([]), "a revoked invite admitted eve");
    eve.get(&format!("/api/groups/{gid}")).await.expect_err(404, "not_found");

    // A one-use invite: eve opens it, accepts it, is a member; then it is used up.
    let r = alice.post_json(&format!("/api/groups/{gid}/invites"), json!({"max_uses": 1})).await;
    r.expect(201);
    assert_eq!(r.body["max_uses"], 1, "{r:?}");
    let once = r.body["code"].as_str().unwrap().to_owned();
    let r = eve.get(&format!("/api/invites/{once}")).await;
    r.expect(200);
    assert_eq!(pick(&r.body["group"], &["id", "name"]), json!({"id": gid, "name": "Club"}), "{r:?}");
    assert_eq!(r.body["already_member"], false, "{r:?}");
    assert!(r.body["expires_at"].is_i64() || r.body["expires_at"].is_u64(), "{r:?}");
    let r = eve.post_empty(&format!("/api/invites/{once}/accept")).await;
    r.expect(200);
    assert_eq!((&r.body["id"], &r.body["role"]), (&json!(gid), &json!("member")), "{r:?}");
    assert!(member_users(&r.body).contains(&"eve@alpha".to_owned()), "{r:?}");
    ews.next_matching("group event after accepting", |m| m["type"] == "group" && m["group"]["id"] == gid.as_str())
        .await;
    let r = eve.get("/api/groups").await;
    assert_eq!(
        pick_all(&r.body, SUMMARY),
        json!([{"id": gid, "name": "Club", "home": "alpha", "role": "member"}]),
        "{r:?}"
    );
    bob.get(&format!("/api/invites/{once}")).await.expect_err(410, "gone");

    // Listing invites is for admins.
    let r = alice.get(&format!("/api/groups/{gid}/invites")).await;
    r.expect(200);
    assert!(r.body.is_array(), "{r:?}");
    bob.get(&format!("/api/groups/{gid}/invites")).await.expect_err(403, "forbidden");
}

#[tokio::test]
async fn plain_members_lack_admin_rights_and_removal_cuts_them_off() {
    let node = Node::start(&[]);
    let [mut alice, mut bob, _eve] = registered_all(&node, ["alice", "bob", "eve"]).await;
    let gid = create_group(&mut alice, "Team").await;
    add_member(&mut alice, &gid, "bob").await;
    let rid = create_room(&mut alice, &gid, "Standup").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;

    // A member may not do admin things; nothing changes.
    let g = format!("/api/groups/{gid}");
    bob.post_json(&format!("{g}/rooms"), json!({"name": "Mine"})).await.expect_err(403, "forbidden");
    bob.patch_json(&format!("{g}/rooms/{rid}"), json!({"name": "Renamed"})).await.expect_err(403, "forbidden");
    bob.delete(&format!("{g}/rooms/{rid}")).await.expect_err(403, "forbidden");
    bob.post_json(&format!("{g}/members"), json!({"user": "eve"})).await.expect_err(403, "forbidden");
    bob.delete(&format!("{g}/members/alice@alpha")).await.expect_err(403, "forbidden");
    bob.post_json(&format!("{g}/invites"), json!({})).await.expect_err(403, "forbidden");
    bob.patch_json(&g, json!({"name": "Bob's"})).await.expect_err(403, "forbidden");
    bob.delete(&g).await.expect_err(403, "forbidden");
    let r = alice.get(&g).await;
    r.expect(200);
    assert_eq!(r.body["name"], "Team");
    assert_eq!(room_ids(&r.body), vec![rid.clone()], "{r:?}");
    let rooms = r.body["rooms"].as_array().unwrap();
    assert_eq!(rooms[0]["name"], "Standup");
    let mut members = member_users(&r.body);
    members.sort();
    assert_eq!(members, ["alice@alpha", "bob@alpha"]);

    // The owner cannot leave her own group (the API gives no code for it: refused either
    // as forbidden or as a conflict), and stays its owner.
    let r = alice.delete(&format!("{g}/members/alice@alpha")).await;
    assert!(matches!((r.status, r.code()), (403, "forbidden") | (409, "conflict")), "owner left her group: {r:?}");
    assert_eq!(alice.get(&g).await.body["role"], "owner");

    // bob is in the call when alice removes him.
    aws.subscribe(&gid).await;
    bws.subscribe(&gid).await;
    bws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    bws.next_of_type("joined").await;
    let has_bob = |l: &[serde_json::Value]| l.iter().any(|p| p["user"] == "bob@alpha");
    aws.wait_list("participants with bob", &rid, has_bob).await;
    alice.delete(&format!("{g}/members/bob@alpha")).await.expect(204);
    let ev = bws.next_of_type("group_removed").await;
    assert_eq!(ev["group"], gid.as_str(), "{ev}");
    let left = bws.next_of_type("left").await;
    assert_eq!((&left["group"], &left["room"]), (&json!(gid), &json!(rid)), "{left}");
    aws.wait_list("participants without bob", &rid, |l| !has_bob(l)).await;
    aws.next_matching(
        "group event without bob",
        is_group(&gid, |g| !member_users(g).contains(&"bob@alpha".to_owned())),
    )
    .await;

    // Afterwards bob cannot see the group at all.
    bws.clear();
    bob.get(&g).await.expect_err(404, "not_found");
    assert_eq!(bob.get("/api/groups").await.body, json!([]));
    bws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    bws.expect_error("not_found").await;
    bws.expect_none("events of the group he left", |m| m["type"] == "group" || is_presence(m)).await;
    // Nor can his socket follow it any more; alice's call changes reach him no longer.
    bws.send(json!({"type": "subscribe", "group": gid})).await;
    assert_reply_to(&bws.expect_error("not_found").await, "subscribe");
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    alice.post_json(&format!("{g}/rooms"), json!({"name": "After"})).await.expect(201);
    bws.expect_none("group events after removal", |m| m.to_string().contains(&gid) && m["type"] != "error").await;
}
