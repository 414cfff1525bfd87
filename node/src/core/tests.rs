//! The core's operations against a real store, checked by the effects they return: what is
//! stored is exactly what is announced, a group of another node is an invitation until the
//! user accepts, answers go to the home, and a batch from federation is one flush. Presence
//! is checked by what registered sockets receive (snapshots, deltas, counts).

use std::sync::Arc;

use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, SessionId, UserId};
use voicechat_protocol::records::{Answer, GroupInfo, Membership, Record};
use voicechat_protocol::{Envelope, SigningKey};

use super::*;
use crate::store::{MemberStatus, RecordKey};

struct T {
    core: Arc<Core>,
    _dir: tempfile::TempDir,
}

fn core(name: &str) -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let core = Core::new(store, NodeName::new(name).unwrap(), Signer::new([5; 32]), None);
    T { core: Arc::new(core), _dir: dir }
}

fn uid(s: &str) -> UserId {
    s.parse().unwrap()
}

fn records(fx: &Effects) -> Vec<Record> {
    fx.announce
        .iter()
        .flat_map(|a| match a {
            Announce::Records { records, .. } => records.clone(),
            Announce::Presence { .. } | Announce::OnSfu(_) => vec![],
        })
        .map(|b| Envelope::decode(&b).unwrap().open().unwrap())
        .collect()
}

#[tokio::test]
async fn creating_a_group_stores_and_announces_the_same_signed_records() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let (detail, fx) = t.core.create_group(&alice, "Book club").await.unwrap();
    assert_eq!(detail.role, Role::Owner);
    assert_eq!(fx.notify, vec![Notice::Group(detail.id)]);
    let Announce::Records { group, records: envs } = &fx.announce[0] else { panic!("{fx:?}") };
    assert_eq!(*group, detail.id);
    assert_eq!(envs.len(), 2);
    assert_eq!(t.core.store.record(&RecordKey::Info(detail.id)).unwrap().as_ref(), Some(&envs[0]), "stored exactly as announced");
    assert_eq!(t.core.store.record(&RecordKey::Member(detail.id, alice.clone())).unwrap().as_ref(), Some(&envs[1]));
    for e in envs {
        assert_eq!(Envelope::decode(e).unwrap().signer, t.core.signer().node_key());
    }
    assert!(matches!(&records(&fx)[..], [Record::GroupInfo(_), Record::Membership(m)] if m.role == Some(Role::Owner)));
}

#[tokio::test]
async fn a_user_of_another_node_is_invited_and_a_local_one_added() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let (g, _) = t.core.create_group(&alice, "Club").await.unwrap();
    // Another node must be known before its users can be added.
    let err = t.core.resolve_user("carol@beta").unwrap_err();
    assert!(matches!(err, CoreError::BadRequest(_)), "{err}");
    let (m, fx) = t.core.add_member(&alice, &g.id, uid("carol@beta"), Role::Member).await.unwrap();
    assert_eq!(m.status, MemberStatus::Invited);
    assert!(matches!(&records(&fx)[..], [Record::Membership(x)] if x.user == uid("carol@beta")));
    let d = t.core.group_detail(&g.id, &alice).unwrap();
    assert!(d.members.iter().any(|m| m.user == uid("carol@beta") && m.status == MemberStatus::Invited));
}

/// A group of beta, signed by beta's key, that adds `user`.
fn remote_group(key: &SigningKey, user: &UserId, g: GroupId, seq: u64) -> Vec<Change> {
    let beta = NodeName::new("beta").unwrap();
    let info = Envelope::seal(
        &Record::GroupInfo(GroupInfo { seq, home: beta.clone(), name: "Free Prizes".into(), group: g, deleted: false }),
        key,
    )
    .encode();
    let m = Envelope::seal(&Record::Membership(Membership { seq: seq + 1, role: Some(Role::Member), user: user.clone(), group: g }), key)
        .encode();
    vec![
        Change::Group { group: g, home: beta, name: "Free Prizes".into(), envelope: info },
        Change::Member { group: g, user: user.clone(), role: Some(Role::Member), envelope: m },
    ]
}

#[tokio::test]
async fn a_remote_group_is_an_invitation_until_accepted() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let key = SigningKey::from_bytes(&[9; 32]);
    let g = GroupId([1; 16]);
    let flushes = t.core.store.flush_count();
    let fx = t.core.apply_remote(remote_group(&key, &alice, g, 10)).await.unwrap();
    assert_eq!(t.core.store.flush_count() - flushes, 1, "one batch, one flush");
    assert!(fx.notify.contains(&Notice::Invitations(alice.clone())));
    assert!(t.core.groups_of(&alice).unwrap().is_empty(), "nothing of it shows");
    assert!(t.core.group_detail(&g, &alice).is_err());
    let inv = t.core.invitations(&alice).unwrap();
    assert_eq!((inv.len(), inv[0].name.as_str(), inv[0].home.as_str()), (1, "Free Prizes", "beta"));
    // Joining a call of it is refused too.
    assert!(t.core.join(&alice, SessionId([1; 16]), g, RoomId([2; 16]), false).is_err());

    let fx = t.core.answer_invitation(&alice, &g, true).await.unwrap();
    assert!(matches!(&records(&fx)[..], [Record::Consent(c)] if c.answer == Answer::Accepted && c.user == alice));
    assert_eq!(t.core.groups_of(&alice).unwrap().len(), 1);

    // Leaving: the answer goes to the home, the group disappears from the user's list.
    let fx = t.core.remove_member(&alice, &g, &alice).await.unwrap();
    assert!(matches!(&records(&fx)[..], [Record::Consent(c)] if c.answer == Answer::Left));
    assert!(fx.notify.contains(&Notice::GroupRemoved { group: g, users: vec![alice.clone()] }));
    assert!(t.core.groups_of(&alice).unwrap().is_empty());
    assert_eq!(t.core.store.member(&g, &alice).unwrap().unwrap().status, MemberStatus::Declined);
    // The home repeats the membership (it missed the answer): the answer goes again.
    let again = remote_group(&key, &alice, g, 20).remove(1);
    let fx = t.core.apply_remote(vec![again]).await.unwrap();
    assert!(matches!(&records(&fx)[..], [Record::Consent(c)] if c.answer == Answer::Left));
    assert!(t.core.groups_of(&alice).unwrap().is_empty());
}

#[tokio::test]
async fn a_blocked_node_is_declined_at_once() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let beta = NodeName::new("beta").unwrap();
    let _ = t.core.block_node(&alice, &beta).await.unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let g = GroupId([2; 16]);
    let fx = t.core.apply_remote(remote_group(&key, &alice, g, 10)).await.unwrap();
    assert!(matches!(&records(&fx)[..], [Record::Consent(c)] if c.answer == Answer::Declined));
    assert!(t.core.invitations(&alice).unwrap().is_empty());
    assert!(!fx.notify.contains(&Notice::Invitations(alice.clone())), "nothing to see");
}

#[tokio::test]
async fn a_decline_at_the_home_removes_the_member_with_a_signed_removal() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let carol = uid("carol@beta");
    let (g, _) = t.core.create_group(&alice, "Club").await.unwrap();
    let _ = t.core.add_member(&alice, &g.id, carol.clone(), Role::Member).await.unwrap();
    let fx = t.core.apply_remote(vec![Change::Consent { group: g.id, user: carol.clone(), answer: Answer::Declined }]).await.unwrap();
    assert!(matches!(&records(&fx)[..], [Record::Membership(m)] if m.user == carol && m.role.is_none()));
    assert!(t.core.store.member(&g.id, &carol).unwrap().is_none());
}

#[tokio::test]
async fn calls_announce_presence_and_remote_sessions_get_their_own_seats() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let (g, _) = t.core.create_group(&alice, "Club").await.unwrap();
    let (room, _) = t.core.create_room(&alice, &g.id, "Lounge", false).await.unwrap();
    let key = (g.id, room.id);
    let s = SessionId([7; 16]);
    let fx = t.core.join(&alice, s, g.id, room.id, false).unwrap();
    assert!(fx.notify.contains(&Notice::Presence));
    assert!(matches!(&fx.announce[..], [Announce::Presence { joined: true, .. }]));
    // A remote session with alice's session id: a seat of its own.
    let mallory = crate::rooms::Participant { user: uid("mallory@beta"), session: s, muted: true, stage: None, name: None, joined_at: 0 };
    let _ = t.core.apply_remote(vec![Change::Presence { room: key, participant: mallory.clone(), joined: false }]).await.unwrap();
    assert!(t.core.is_in(&key, &alice, &s), "alice is still in the call");
    let _ = t.core.apply_remote(vec![Change::Presence { room: key, participant: mallory, joined: true }]).await.unwrap();
    let view = t.core.room_view(t.core.store.room(&g.id, &room.id).unwrap().unwrap());
    assert_eq!((view.participants.map(|l| l.len()), view.version), (Some(2), Some(2)));
    let (left, fx) = t.core.leave(&alice, s);
    assert_eq!(left, Some(key));
    assert!(matches!(&fx.announce[..], [Announce::Presence { joined: false, .. }]));
}

#[tokio::test]
async fn a_join_by_link_is_consent_even_from_a_blocked_node() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let _ = t.core.block_node(&alice, &NodeName::new("beta").unwrap()).await.unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let g = GroupId([3; 16]);
    let mut changes = remote_group(&key, &alice, g, 10);
    changes.push(Change::Joined { group: g, user: alice.clone() });
    let fx = t.core.apply_remote(changes).await.unwrap();
    assert!(records(&fx).is_empty(), "no refusal sent: {fx:?}");
    assert_eq!(t.core.groups_of(&alice).unwrap().len(), 1, "the group she joined shows");
}

#[tokio::test]
async fn ownership_goes_only_to_an_active_local_member() {
    let t = core("alpha");
    let alice = uid("alice@alpha");
    let (g, _) = t.core.create_group(&alice, "Club").await.unwrap();
    let store = &t.core.store;
    let mut b = crate::store::Batch::new();
    b.put_card(&crate::store::PeerRecord {
        name: NodeName::new("beta").unwrap(),
        key: hex::encode([1u8; 32]),
        url: "https://beta".into(),
        addrs: vec![],
        seq: 1,
        card: String::new(),
        trust: crate::store::Trust::Pinned,
    });
    store.commit(b).await.unwrap();
    let _ = t.core.add_member(&alice, &g.id, uid("carol@beta"), Role::Member).await.unwrap();
    let err = t.core.set_role(&alice, &g.id, &uid("carol@beta"), Role::Owner).await.unwrap_err();
    assert!(matches!(err, CoreError::BadRequest(_)), "{err}");
    assert_eq!(t.core.group_detail(&g.id, &alice).unwrap().role, Role::Owner, "alice still owns it");
}

#[tokio::test]
async fn a_stage_hears_only_speakers_and_only_moderators_change_who_speaks() {
    let t = core("alpha");
    let (alice, bob, carol) = (uid("alice@alpha"), uid("bob@alpha"), uid("carol@alpha"));
    let (g, _) = t.core.create_group(&alice, "Lectures").await.unwrap();
    for u in [&bob, &carol] {
        let _ = t.core.add_member(&alice, &g.id, u.clone(), Role::Member).await.unwrap();
    }
    let (room, _) = t.core.create_room(&alice, &g.id, "Hall", true).await.unwrap();
    assert!(room.stage);
    let (sa, sb, sc) = (SessionId([1; 16]), SessionId([2; 16]), SessionId([3; 16]));
    for (u, s) in [(&alice, sa), (&bob, sb), (&carol, sc)] {
        let _ = t.core.join(u, s, g.id, room.id, false).unwrap();
    }
    let bob_seat = (bob.clone(), sb);
    // The owner moderates and starts on stage; members listen.
    assert_eq!(t.core.may_speak(&(alice.clone(), sa)), Some(true));
    assert_eq!(t.core.may_speak(&bob_seat), Some(false));
    // Bob raises his hand; carol (not a moderator) cannot invite him.
    let fx = t.core.raise_hand(&bob, sb, true).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), false)]);
    assert!(fx.notify.contains(&Notice::Presence));
    let e = t.core.moderate(&carol, sc, &bob_seat, stage::Moderation::Invite).unwrap_err();
    assert!(matches!(e, CoreError::Forbidden(_)), "{e}");
    // Alice invites him: nothing is heard until he says yes; his page is told who asks.
    let mut bob_socket = t.core.hub.register(&bob, sb, "bob-login", 8).unwrap();
    let fx = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::Invite).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), false)]);
    let told: serde_json::Value = serde_json::from_str(&bob_socket.try_recv().unwrap()).unwrap();
    assert_eq!((told["type"].as_str(), told["action"].as_str(), told["by"].as_str()), (Some("moderated"), Some("invite"), Some("alice@alpha")));
    let view = t.core.room_view(t.core.store.room(&g.id, &room.id).unwrap().unwrap());
    let b = view.participants.unwrap().into_iter().find(|p| p.user == bob).unwrap().stage.unwrap();
    assert!(b.invited && b.hand && !b.speaker, "{b:?}");
    let fx = t.core.answer_stage_invitation(&bob, sb, true).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), true)]);
    assert_eq!(t.core.may_speak(&bob_seat), Some(true));
    // A stale second answer changes nothing.
    assert!(t.core.answer_stage_invitation(&bob, sb, false).unwrap().media.is_empty());
    // Muted by the moderator: not heard; back to the audience; then out of the call.
    let fx = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::Mute).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), false)]);
    let _ = t.core.mute(&bob, sb, false);
    let fx = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::ToAudience).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), false)]);
    let fx = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::Remove).unwrap();
    assert!(fx.notify.contains(&Notice::Left { room: (g.id, room.id), user: bob.clone(), session: sb }));
    assert_eq!(t.core.may_speak(&bob_seat), None, "bob is out of the call");
    // Someone who is not in the moderator's call is not found.
    let e = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::Mute).unwrap_err();
    assert!(matches!(e, CoreError::NotFound(_)), "{e}");
}

// ---------- presence as sockets receive it ----------

/// A socket of `user` registered with the core's hub.
struct Sock {
    user: UserId,
    session: SessionId,
    rx: tokio::sync::mpsc::Receiver<crate::hub::Outbound>,
}

fn sock(t: &T, user: &str, n: u8) -> Sock {
    let user = uid(user);
    let session = SessionId([n; 16]);
    let rx = t.core.hub().register(&user, session, "test-login", 8).unwrap();
    Sock { user, session, rx }
}

impl Sock {
    /// Everything queued for this socket so far.
    fn drain(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(serde_json::from_str(&m).unwrap());
        }
        out
    }
}

/// A group of alice@alpha with bob@alpha as a member and one room.
async fn club(t: &T) -> (GroupId, RoomId) {
    let alice = uid("alice@alpha");
    let (g, _) = t.core.create_group(&alice, "Club").await.unwrap();
    let _ = t.core.add_member(&alice, &g.id, uid("bob@alpha"), Role::Member).await.unwrap();
    let (r, _) = t.core.create_room(&alice, &g.id, "Lounge", false).await.unwrap();
    (g.id, r.id)
}

#[tokio::test]
async fn a_subscription_needs_membership_and_starts_with_a_snapshot() {
    let t = core("alpha");
    let (g, r) = club(&t).await;
    let mut eve = sock(&t, "eve@alpha", 9);
    assert!(matches!(t.core.subscribe(&eve.user, eve.session, g), Err(CoreError::NotFound(_))));
    assert!(matches!(t.core.resync(&eve.user, eve.session, g, r), Err(CoreError::NotFound(_))));
    let mut alice = sock(&t, "alice@alpha", 1);
    t.core.commit(t.core.join(&alice.user, alice.session, g, r, true).unwrap()).await;
    let mut bob = sock(&t, "bob@alpha", 2);
    t.core.commit(t.core.subscribe(&bob.user, bob.session, g).unwrap()).await;
    let snap = bob.drain();
    assert_eq!(snap.len(), 1, "{snap:?}");
    assert_eq!(snap[0]["type"], "presence");
    assert_eq!(snap[0]["group"], g.to_string());
    assert_eq!(snap[0]["rooms"][0]["version"], 1);
    assert_eq!(snap[0]["rooms"][0]["participants"][0]["user"], "alice@alpha");
    assert_eq!(snap[0]["rooms"][0]["participants"][0]["muted"], true);
    assert_eq!(alice.drain()[0]["type"], "participants", "the joiner gets the list of the room");
    // Nobody else hears anything: eve is no member, and nobody followed the group before.
    assert!(eve.drain().is_empty());
    // bob is removed from the group: his subscription ends with it.
    t.core.commit(t.core.remove_member(&uid("alice@alpha"), &g, &bob.user).await.unwrap()).await;
    assert!(bob.drain().iter().any(|m| m["type"] == "group_removed"));
    t.core.commit(t.core.mute(&alice.user, alice.session, false)).await;
    assert!(alice.drain().iter().any(|m| m["type"] == "participant_changed" && m["participant"]["muted"] == false));
    assert!(bob.drain().is_empty(), "nothing of the group after his removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_from_many_tasks_reach_a_follower_as_deltas_in_version_order() {
    let t = core("alpha");
    let (g, r) = club(&t).await;
    let mut bob = sock(&t, "bob@alpha", 200);
    t.core.commit(t.core.subscribe(&bob.user, bob.session, g).unwrap()).await;
    // 48 sessions: the room stays small enough for bob to get every delta.
    let tasks: Vec<_> = (0..6u8)
        .map(|k| {
            let core = t.core.clone();
            tokio::spawn(async move {
                let alice = uid("alice@alpha");
                for i in 0..8u8 {
                    let s = SessionId([k * 16 + i; 16]);
                    core.commit(core.join(&alice, s, g, r, false).unwrap()).await;
                    if i % 3 == 0 {
                        core.commit(core.mute(&alice, s, true)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let got = bob.drain();
    assert_eq!(got[0]["type"], "presence");
    let kinds: Vec<&str> = got[1..].iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|k| ["participant_joined", "participant_changed"].contains(k)), "{kinds:?}");
    let versions: Vec<u64> = got[1..].iter().map(|m| m["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=(6 * 8 + 6 * 3)).collect::<Vec<u64>>(), "one delta per change, in order");
    assert!(got[1]["participant"]["session"].is_string(), "a delta carries the entry: {}", got[1]);
}

#[tokio::test]
async fn past_the_threshold_a_follower_outside_the_call_gets_counts() {
    let mut t = core("alpha");
    t.core = Arc::new(Arc::into_inner(t.core).unwrap().with_room_list_max(2));
    let (g, r) = club(&t).await;
    let mut bob = sock(&t, "bob@alpha", 200);
    t.core.commit(t.core.subscribe(&bob.user, bob.session, g).unwrap()).await;
    let alice = uid("alice@alpha");
    let mut first = sock(&t, "alice@alpha", 1);
    for i in 1..=5u8 {
        t.core.commit(t.core.join(&alice, SessionId([i; 16]), g, r, false).unwrap()).await;
    }
    let types: Vec<String> = bob.drain().iter().map(|m| format!("{} {}", m["type"].as_str().unwrap(), m["version"])).collect();
    assert_eq!(types, ["presence null", "participant_joined 1", "participant_joined 2", "participant_count 3"]);
    t.core.tick_counts();
    let counts = bob.drain();
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[0]["type"], "participant_counts");
    assert_eq!(counts[0]["rooms"], serde_json::json!([{"room": r.to_string(), "version": 5, "count": 5}]));
    t.core.tick_counts();
    assert!(bob.drain().is_empty(), "no change, no count");
    // Those in the call keep the whole list: one snapshot, then every join.
    let seen = first.drain();
    assert_eq!(seen[0]["type"], "participants");
    assert_eq!(seen.iter().skip(1).filter(|m| m["type"] == "participant_joined").count(), 4);
}

#[tokio::test]
async fn presence_from_another_node_reaches_followers_as_deltas_and_a_gap_is_repaired() {
    let t = core("alpha");
    let (g, r) = club(&t).await;
    let mut bob = sock(&t, "bob@alpha", 2);
    t.core.commit(t.core.subscribe(&bob.user, bob.session, g).unwrap()).await;
    let carol = crate::rooms::Participant { user: uid("carol@beta"), session: SessionId([3; 16]), muted: false, stage: None, name: None, joined_at: 0 };
    let change = |joined, muted| Change::Presence { room: (g, r), participant: crate::rooms::Participant { muted, ..carol.clone() }, joined };
    t.core.commit(t.core.apply_remote(vec![change(true, false)]).await.unwrap()).await;
    t.core.commit(t.core.apply_remote(vec![change(true, true), change(false, true)]).await.unwrap()).await;
    let got = bob.drain();
    let seen: Vec<(&str, u64)> = got[1..].iter().map(|m| (m["type"].as_str().unwrap(), m["version"].as_u64().unwrap())).collect();
    assert_eq!(seen, [("participant_joined", 1), ("participant_changed", 2), ("participant_left", 3)]);
    assert_eq!(got[1]["participant"]["user"], "carol@beta");
    assert_eq!(got[2]["participant"]["muted"], true);
    // bob's page missed version 4 (carol back): version 5 shows the gap; resync repairs it.
    t.core.commit(t.core.apply_remote(vec![change(true, false)]).await.unwrap()).await;
    let _lost = bob.drain();
    t.core.commit(t.core.apply_remote(vec![change(true, true)]).await.unwrap()).await;
    let next = bob.drain();
    assert_eq!(next[0]["version"], 5, "held 3, got 5: a gap");
    t.core.commit(t.core.resync(&bob.user, bob.session, g, r).unwrap()).await;
    let fresh = bob.drain();
    assert_eq!((&fresh[0]["type"], &fresh[0]["version"]), (&"participants".into(), &5.into()));
    assert_eq!(fresh[0]["participants"][0]["user"], "carol@beta");
    assert_eq!(fresh[0]["participants"][0]["muted"], true);
    assert!(matches!(t.core.resync(&bob.user, bob.session, g, RoomId([9; 16])), Err(CoreError::NotFound(_))));
}
