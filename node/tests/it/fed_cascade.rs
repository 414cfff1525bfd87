//! A lecture across three nodes, each person connected only to their own node's audio
//! server: the stage room is homed on alpha, the speaker bob is on beta, listeners are on
//! all three nodes (synthetic WebRTC clients). Every listener hears bob; each other node
//! receives one copy of his stream whatever its number of listeners (the cascade metrics,
//! per speaker too), and its listeners' pages name bob on the slot his audio comes on;
//! a listener who tries to talk is heard nowhere; a moderator on gamma invites dan, a
//! listener on alpha, who accepts and is heard on every node, then lou, a listener on beta
//! (through alpha, the group's home, which decides); when gamma dies, alpha's
//! listeners go on hearing bob without a gap over a second.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::rtc::{Offering, RtcClient};

const BOB: u8 = 0xB0;
const LOU: u8 = 0x10;
const DAN: u8 = 0xD0;

/// `name{labels}` on the node's `/metrics` (0 if absent).
async fn metric_line(node: &Node, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", node.url)).await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

const IN: &str = "voicechat_sfu_cascade_packets_total{dir=\"in\"}";
const OUT: &str = "voicechat_sfu_cascade_packets_total{dir=\"out\"}";

/// Joins the room and connects to the node's audio server: a client that publishes with
/// `tag` (0: listens only).
async fn on_sfu(ws: &mut Ws, gid: &str, rid: &str, tag: u8) -> RtcClient {
    ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
    ws.next_of_type("joined").await;
    let (offering, sdp) = Offering::new(tag, 3);
    ws.send(json!({"type": "sfu_offer", "sdp": sdp})).await;
    let a = ws.next_matching_within("sfu_answer", FED_WAIT, |m| m["type"] == "sfu_answer" || m["type"] == "error").await;
    assert_eq!(a["type"], "sfu_answer", "{a}");
    offering.start(a["sdp"].as_str().unwrap())
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + FED_WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within {FED_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_speaker_on_beta_reaches_listeners_on_three_nodes_once_per_node() {
    let (alpha, beta, mut gamma) = fed_trio().await;
    let mut alice = registered_on(&alpha, "alice").await;
    let dan = registered_on(&alpha, "dan").await;
    let eve = registered_on(&alpha, "eve").await;
    let mut bob = registered_on(&beta, "bob").await;
    let mut lou = registered_on(&beta, "lou").await;
    let mut cat = registered_on(&gamma, "cat").await;
    let mut cyd = registered_on(&gamma, "cyd").await;
    // Sockets first: each hears the group's changes as they come.
    let mut sockets = Vec::new();
    for c in [&dan, &eve, &bob, &lou, &cat, &cyd] {
        sockets.push(Ws::connect(c).await);
    }
    let gid = create_group(&mut alice, "Lecture").await;
    let r = alice.post_json(&format!("/api/groups/{gid}/rooms"), json!({"name": "Hall", "stage": true})).await;
    r.expect(201);
    let rid = r.body["id"].as_str().unwrap().to_owned();
    for u in ["dan", "eve", "bob@beta", "lou@beta", "cat@gamma", "cyd@gamma"] {
        add_member(&mut alice, &gid, u).await;
    }
    for c in [&mut bob, &mut lou, &mut cat, &mut cyd] {
        accept_invitation(c, &gid).await;
    }
    // Bob moderates, so he is on stage as he joins (on his own node); cyd moderates on gamma.
    for admin in ["bob@beta", "cyd@gamma"] {
        alice.patch_json(&format!("/api/groups/{gid}/members/{admin}"), json!({"role": "admin"})).await.expect(200);
    }
    let admin_bob = |g: &Value| {
        let admin = |u: &str| g["members"].as_array().is_some_and(|m| m.iter().any(|m| m["user"] == u && m["role"] == "admin"));
        member_users(g).len() == 7 && admin("bob@beta") && admin("cyd@gamma")
    };
    for ws in &mut sockets {
        ws.next_matching_within("the whole group", FED_WAIT, group_event(&gid, admin_bob)).await;
    }
    let [dws, ews, bws, lws, cws, yws] = &mut sockets[..] else { unreachable!() };
    let speaker = on_sfu(bws, &gid, &rid, BOB).await;
    let trier = on_sfu(lws, &gid, &rid, LOU).await;
    // dan publishes from the start: as a listener he is heard nowhere until invited.
    let dan = on_sfu(dws, &gid, &rid, DAN).await;
    dan.talk(true);
    let listeners = [
        ("dan@alpha", dan),
        ("eve@alpha", on_sfu(ews, &gid, &rid, 0).await),
        ("cat@gamma", on_sfu(cws, &gid, &rid, 0).await),
        ("cyd@gamma", on_sfu(yws, &gid, &rid, 0).await),
    ];
    speaker.talk(true);
    trier.talk(true);
    for (who, l) in &listeners {
        until(&format!("{who} hearing bob@beta"), || l.heard_from(BOB) >= 50).await;
    }
    assert!(trier.heard_from(BOB) >= 1, "lou@beta hears bob too (on beta's own SFU)");

    // One copy per node: over a few seconds, alpha and gamma each receive about as many
    // packets from other nodes as bob sends (not one per listener), and beta sends two
    // copies (one per other node).
    let s0 = speaker.sent.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let (a0, g0, b0) = (metric_line(&alpha, IN).await, metric_line(&gamma, IN).await, metric_line(&beta, OUT).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s1 = speaker.sent.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let (a1, g1, b1) = (metric_line(&alpha, IN).await, metric_line(&gamma, IN).await, metric_line(&beta, OUT).await);
    let sent = s1 - s0;
    assert!(sent >= 100.0, "bob sent {sent} packets in 3 s");
    for (node, got) in [("alpha", a1 - a0), ("gamma", g1 - g0)] {
        assert!((got - sent).abs() <= sent * 0.15, "{node} received {got} packets from other nodes while bob sent {sent}");
    }
    assert!(((b1 - b0) - 2.0 * sent).abs() <= sent * 0.3, "beta sent {} packets to other nodes while bob sent {sent}", b1 - b0);

    // Exactly one copy of bob's stream on each other node, and the listeners there are told
    // it is bob (beta names its link slots), on the slot that carries his audio.
    let copies = "voicechat_sfu_cascade_copies{speaker=\"bob@beta\"}";
    for node in [&alpha, &gamma] {
        assert_eq!(metric_line(node, copies).await, 1.0, "copies of bob's stream on {}", node.name);
        let packets = metric_line(node, "voicechat_sfu_cascade_speaker_packets_total{speaker=\"bob@beta\"}").await;
        assert!(packets >= sent * 0.85, "{} counted {packets} packets of bob while he sent {sent}", node.name);
    }
    assert_eq!(metric_line(&beta, copies).await, 0.0, "beta pulls no copy of its own speaker");
    let bob_session = bws.session.clone();
    for ((who, l), ws) in listeners.iter().zip([&mut *dws, &mut *ews, &mut *cws, &mut *yws]) {
        let names_bob = |m: &Value| m["type"] == "sfu_slots" && m["slots"].as_array().is_some_and(|s| s.iter().any(|s| s["user"] == "bob@beta"));
        let told = ws.next_matching_within("sfu_slots naming bob@beta", FED_WAIT, names_bob).await;
        let slots = told["slots"].as_array().unwrap();
        let named = slots.iter().position(|s| s["user"] == "bob@beta").unwrap();
        assert_eq!(slots[named]["session"], json!(bob_session), "{who}: {told}");
        assert_eq!(Some(named), l.slot_of(BOB), "{who} is told bob is on slot {named}: {told}");
    }

    // The listeners who tried to talk were never forwarded anywhere.
    for (who, l) in &listeners {
        assert_eq!(l.heard_from(LOU), 0, "{who} heard lou@beta, a listener");
        assert_eq!(l.heard_from(DAN), 0, "{who} heard dan@alpha before he was invited");
    }
    assert_eq!(speaker.heard_from(DAN), 0, "bob heard dan@alpha before he was invited");

    // cyd, a moderator on gamma, invites dan (on alpha): dan's page is asked, he accepts, and
    // from then on every node hears him.
    let dan_session = dws.session.clone();
    yws.send(json!({"type": "moderate", "action": "invite", "user": "dan@alpha", "session": dan_session})).await;
    let asked = dws.next_matching_within("the invitation to speak", FED_WAIT, |m| m["type"] == "moderated").await;
    assert_eq!((&asked["action"], &asked["by"]), (&json!("invite"), &json!("cyd@gamma")), "{asked}");
    dws.send(json!({"type": "stage_answer", "accept": true})).await;
    until("bob@beta hearing dan@alpha", || speaker.heard_from(DAN) >= 25).await;
    for (who, l) in &listeners[1..] {
        until(&format!("{who} hearing dan@alpha"), || l.heard_from(DAN) >= 25).await;
    }
    // A member who does not moderate cannot do the same from another node.
    cws.send(json!({"type": "moderate", "action": "to_audience", "user": "dan@alpha", "session": dan_session})).await;
    let e = cws.next_matching_within("a refusal", FED_WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["code"], "forbidden", "{e}");

    // cyd invites lou, a listener on beta: the moderation goes from gamma to alpha, the
    // group's home, which judges it and hands it on to beta under its own key. Every node
    // shows lou's place as beta signs it in his presence: invited, then on stage.
    let lou_session = lws.session.clone();
    let place_of_lou = |want: &'static str| {
        move |m: &Value| {
            m["type"] == "participant_changed" && m["participant"]["user"] == "lou@beta" && m["participant"]["stage"][want] == true
        }
    };
    yws.send(json!({"type": "moderate", "action": "invite", "user": "lou@beta", "session": lou_session})).await;
    let asked = lws.next_matching_within("lou's invitation", FED_WAIT, |m| m["type"] == "moderated").await;
    assert_eq!((&asked["action"], &asked["by"]), (&json!("invite"), &json!("cyd@gamma")), "{asked}");
    ews.next_matching_within("lou invited, on alpha", FED_WAIT, place_of_lou("invited")).await;
    cws.next_matching_within("lou invited, on gamma", FED_WAIT, place_of_lou("invited")).await;
    lws.send(json!({"type": "stage_answer", "accept": true})).await;
    ews.next_matching_within("lou on stage, on alpha", FED_WAIT, place_of_lou("speaker")).await;
    for (who, l) in &listeners {
        until(&format!("{who} hearing lou@beta"), || l.heard_from(LOU) >= 25).await;
    }

    // Alpha pulls from both other nodes (the presence of gamma's people has reached it).
    let deadline = Instant::now() + FED_WAIT;
    while metric_line(&alpha, "voicechat_sfu_cascade_links{dir=\"in\"}").await != 2.0 {
        assert!(Instant::now() < deadline, "alpha is not pulling from beta and gamma");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Gamma dies mid-lecture: alpha's listeners keep hearing bob without a gap over 1 s.
    let killed = Instant::now();
    gamma.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (who, l) in &listeners[..2] {
        let gap = l.longest_gap(BOB, killed - Duration::from_millis(500));
        assert!(gap <= Duration::from_secs(1), "{who}: a gap of {gap:?} after gamma died");
    }
    // Their pages are told gamma cannot be heard.
    let told = ews.next_matching_within("gamma unreachable", FED_WAIT, |m| m["type"] == "node_reach").await;
    assert_eq!((&told["node"], &told["up"]), (&json!("gamma"), &json!(false)), "{told}");
    speaker.talk(false);
    trier.talk(false);
}
