//! Room lists over the socket, on one node with `--room-list-max 2`: a socket that follows a
//! group gets its snapshot, then one delta per change with consecutive versions; a socket
//! that joins a call gets the whole list; past the threshold a socket outside the call gets
//! counts (at once when the room grows past it, then batched at most once a second) while
//! those in the call keep the list; a lost delta shows as a gap and `resync` repairs the list.

use serde_json::{Value, json};

use crate::harness::*;

fn types(ms: &[Value]) -> Vec<String> {
    ms.iter().filter(|m| is_presence(m)).map(|m| format!("{} {}", m["type"].as_str().unwrap(), m["version"])).collect()
}

#[tokio::test]
async fn a_follower_gets_deltas_and_past_the_threshold_only_counts() {
    let node = Node::start(&["--room-list-max", "2"]);
    let [mut alice, bob, carol, dave, erin] = registered_all(&node, ["alice", "bob", "carol", "dave", "erin"]).await;
    let gid = create_group(&mut alice, "Big").await;
    for u in ["bob", "carol", "dave", "erin"] {
        add_member(&mut alice, &gid, u).await;
    }
    let rid = create_room(&mut alice, &gid, "Hall").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    let mut cws = Ws::connect(&carol).await;
    let mut dws = Ws::connect(&dave).await;
    let snap = aws.subscribe(&gid).await;
    assert_eq!(snap["rooms"], json!([]), "nobody was ever in a call: {snap}");
    aws.clear();

    // bob joins: he gets the list, alice one delta.
    bws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    bws.next_of_type("joined").await;
    let list = bws.next_of_type("participants").await;
    assert_eq!((&list["group"], &list["room"], &list["version"]), (&json!(gid), &json!(rid), &json!(1)), "{list}");
    assert_eq!(without_join_times(&list["participants"]), json!([{"user": "bob@alpha", "session": bws.session, "muted": false}]));
    let d = aws.next_of_type("participant_joined").await;
    assert_eq!((&d["version"], &d["participant"]["user"], &d["participant"]["session"]), (&json!(1), &json!("bob@alpha"), &json!(bws.session)));

    // carol joins: the room has two, still listed for alice.
    cws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    cws.next_of_type("joined").await;
    aws.wait_list("bob and carol", &rid, |l| l.len() == 2).await;
    bws.wait_list("bob and carol", &rid, |l| l.len() == 2).await;

    // dave makes three: alice (outside the call) gets a count instead; bob the delta; dave the list.
    dws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    dws.next_of_type("joined").await;
    let c = aws.next_of_type("participant_count").await;
    assert_eq!((&c["version"], &c["count"]), (&json!(3), &json!(3)), "{c}");
    assert_eq!(aws.list(&rid), None, "a big room is a count for alice");
    bws.wait_list("three", &rid, |l| l.len() == 3).await;
    dws.wait_list("three", &rid, |l| l.len() == 3).await;

    // A mute in the big room: the call hears it, alice nothing (the count is the same).
    dws.send(json!({"type": "mute", "muted": true})).await;
    let dave_muted = |l: &[Value]| l.iter().any(|p| p["user"] == "dave@alpha" && p["muted"] == true);
    bws.wait_list("dave muted", &rid, dave_muted).await;
    cws.wait_list("dave muted", &rid, dave_muted).await;
    assert_eq!(types(&aws.barrier().await), Vec::<String>::new());

    // erin makes four: alice's count follows within the tick (a second).
    let mut bws2 = Ws::connect(&erin).await;
    bws2.send(json!({"type": "join", "group": gid, "room": rid})).await;
    bws2.next_of_type("joined").await;
    let c = aws.next_of_type("participant_counts").await;
    assert_eq!(c["rooms"], json!([{"room": rid, "version": 5, "count": 4}]), "{c}");
    bws.wait_list("four", &rid, |l| l.len() == 4).await;
    assert_eq!(bws.lists.rooms[&rid].version, 5, "bob's list is at the same version");

    // Down to two: alice gets the list again, then deltas.
    bws2.close().await;
    cws.send(json!({"type": "leave"})).await;
    cws.next_of_type("left").await;
    let back = aws.next_of_type("participants").await;
    assert_eq!(back["participants"].as_array().unwrap().len(), 2, "{back}");
    assert!(dave_muted(back["participants"].as_array().unwrap()), "{back}");
    dws.send(json!({"type": "mute", "muted": false})).await;
    let d = aws.next_of_type("participant_changed").await;
    assert_eq!((&d["participant"]["user"], &d["participant"]["muted"]), (&json!("dave@alpha"), &json!(false)), "{d}");
    assert_eq!(d["version"].as_u64(), back["version"].as_u64().map(|v| v + 1), "{d} after {back}");

    // alice joins the call: she gets the whole list, whatever its size.
    aws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.next_of_type("joined").await;
    aws.wait_list("alice, bob and dave", &rid, |l| l.len() == 3).await;
    // Every socket's copy is the node's list at the node's version.
    let r = alice.get(&format!("/api/groups/{gid}")).await;
    let room = &r.body["rooms"][0];
    for ws in [&mut aws, &mut bws, &mut dws] {
        ws.barrier().await;
        let copy = &ws.lists.rooms[&rid];
        assert_eq!((Some(&copy.version), copy.list.as_ref()), (room["version"].as_u64().as_ref(), room["participants"].as_array()), "{}", ws.user);
        assert!(ws.lists.gaps.is_empty(), "{}: {:?}", ws.user, ws.lists.gaps);
    }
}

#[tokio::test]
async fn a_lost_delta_is_caught_by_its_version_and_resync_repairs_the_list() {
    let node = Node::start(&[]);
    let [mut alice, bob] = registered_all(&node, ["alice", "bob"]).await;
    let gid = create_group(&mut alice, "Gap").await;
    add_member(&mut alice, &gid, "bob").await;
    let rid = create_room(&mut alice, &gid, "Room").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    aws.subscribe(&gid).await;
    bws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    aws.wait_list("bob in", &rid, |l| l.len() == 1).await;

    // alice's page loses a delta: it holds bob as he was, one version behind.
    bws.send(json!({"type": "mute", "muted": true})).await;
    let lost = aws.next_of_type("participant_changed").await;
    let copy = aws.lists.rooms.get_mut(&rid).unwrap();
    copy.version -= 1;
    copy.list.as_mut().unwrap()[0]["muted"] = json!(false);
    // The next change skips a version for her: a gap, not applied.
    bws.send(json!({"type": "mute", "muted": false})).await;
    aws.next_matching("the next delta", |m| m["type"] == "participant_changed" && m["version"] != lost["version"]).await;
    assert_eq!(aws.lists.gaps.len(), 1, "{:?}", aws.lists.gaps);
    assert_eq!(aws.lists.rooms[&rid].version + 2, aws.lists.gaps[0]["version"].as_u64().unwrap());
    aws.lists.gaps.clear();
    // She asks for the room again and holds the true list.
    aws.send(json!({"type": "resync", "group": gid, "room": rid})).await;
    let fresh = aws.next_of_type("participants").await;
    assert_eq!(fresh["version"], lost["version"].as_u64().unwrap() + 1, "{fresh}");
    assert_eq!(without_join_times(&fresh["participants"]), json!([{"user": "bob@alpha", "session": bws.session, "muted": false}]));
    assert_eq!(aws.list(&rid), fresh["participants"].as_array().map(Vec::as_slice));
    // From there deltas apply again.
    bws.send(json!({"type": "leave"})).await;
    aws.wait_list("bob gone", &rid, |l| l.is_empty()).await;
}
