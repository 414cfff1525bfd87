//! The core's operations against a real store, checked by the effects they return: what is
//! stored is exactly what is announced, a group of another node is an invitation until the
//! user accepts, answers go to the home, and a batch from federation is one flush.

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
            Announce::Presence { .. } => vec![],
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
    assert!(fx.notify.contains(&Notice::Participants(key)));
    assert!(matches!(&fx.announce[..], [Announce::Presence { joined: true, .. }]));
    // A remote session with alice's session id: a seat of its own.
    let mallory = crate::rooms::Participant { user: uid("mallory@beta"), session: s, muted: true, stage: None };
    let _ = t.core.apply_remote(vec![Change::Presence { room: key, participant: mallory.clone(), joined: false }]).await.unwrap();
    assert!(t.core.is_in(&key, &alice, &s), "alice is still in the call");
    let _ = t.core.apply_remote(vec![Change::Presence { room: key, participant: mallory, joined: true }]).await.unwrap();
    assert_eq!(t.core.room_view(t.core.store.room(&g.id, &room.id).unwrap().unwrap()).participants.len(), 2);
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
    assert!(fx.notify.contains(&Notice::Participants((g.id, room.id))));
    let e = t.core.moderate(&carol, sc, &bob_seat, stage::Moderation::Invite).unwrap_err();
    assert!(matches!(e, CoreError::Forbidden(_)), "{e}");
    // Alice invites him: nothing is heard until he says yes; his page is told who asks.
    let mut bob_socket = t.core.hub.register(&bob, sb);
    let fx = t.core.moderate(&alice, sa, &bob_seat, stage::Moderation::Invite).unwrap();
    assert_eq!(fx.media, vec![(bob_seat.clone(), false)]);
    let told: serde_json::Value = serde_json::from_str(&bob_socket.try_recv().unwrap()).unwrap();
    assert_eq!((told["type"].as_str(), told["action"].as_str(), told["by"].as_str()), (Some("moderated"), Some("invite"), Some("alice@alpha")));
    let view = t.core.room_view(t.core.store.room(&g.id, &room.id).unwrap().unwrap());
    let b = view.participants.iter().find(|p| p.user == bob).unwrap().stage.unwrap();
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
