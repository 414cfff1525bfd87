//! The store against a real sled directory: batches applied atomically, cascading deletes
//! that take a group's signed records with it, invites that cannot be over-used, expired
//! sessions purged, and the schema check and upgrade.

use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId, UserName};

use super::*;

fn user(n: &str) -> UserId {
    UserId::new(UserName::new(n).unwrap(), NodeName::new("alpha").unwrap())
}

fn group(id: u8) -> GroupRecord {
    GroupRecord { id: GroupId([id; 16]), name: "g".into(), home: NodeName::new("alpha").unwrap(), created_at: 1 }
}

fn member(n: &str, role: Role) -> MemberRecord {
    MemberRecord::active(user(n), role, 1)
}

#[tokio::test]
async fn a_batch_keeps_indexes_and_records_together_and_a_delete_takes_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = group(1);
    let mut recs = Batch::new();
    recs.put_record(&RecordKey::Info(g.id), b"info-envelope");
    store.create_group(&g, &member("alice", Role::Owner), recs).await.unwrap();
    assert!(matches!(store.create_group(&g, &member("alice", Role::Owner), Batch::new()).await, Err(StoreError::Conflict)));

    let mut b = Batch::new();
    b.put_member(&g.id, &member("bob", Role::Member));
    b.put_record(&RecordKey::Member(g.id, user("bob")), b"bob-envelope");
    let room = RoomRecord { id: RoomId([9; 16]), group: g.id, name: "r".into(), created_at: 2, stage: false };
    b.put_room(&room);
    b.put_record(&RecordKey::Room(g.id, room.id), b"room-envelope");
    store.commit(b).await.unwrap();
    assert_eq!(store.groups_of(&user("bob")).unwrap(), vec![g.id]);
    assert_eq!(store.members(&g.id).unwrap().len(), 2);
    assert_eq!(store.group_records(&g.id).unwrap().len(), 3);
    assert_eq!(store.record(&RecordKey::Member(g.id, user("bob"))).unwrap().as_deref(), Some(&b"bob-envelope"[..]));

    let mut b = Batch::new();
    b.remove_member(&g.id, &user("bob"));
    store.commit(b).await.unwrap();
    assert!(store.groups_of(&user("bob")).unwrap().is_empty());

    // Another group's records are untouched by this one's deletion.
    let other = group(2);
    let mut recs = Batch::new();
    recs.put_record(&RecordKey::Info(other.id), b"other");
    store.create_group(&other, &member("carol", Role::Owner), recs).await.unwrap();
    let mut b = Batch::new();
    store.delete_group_into(&mut b, &g.id).unwrap();
    b.put_floor(&g.id, 42);
    store.commit(b).await.unwrap();
    assert!(store.group(&g.id).unwrap().is_none());
    assert!(store.rooms(&g.id).unwrap().is_empty());
    assert!(store.groups_of(&user("alice")).unwrap().is_empty());
    assert!(store.group_records(&g.id).unwrap().is_empty(), "no seq or record of the group is left");
    assert_eq!(store.group_records(&other.id).unwrap().len(), 1);
    assert_eq!(store.stored_state().unwrap().floors, vec![(g.id, 42)]);
}

#[tokio::test]
async fn a_batch_is_one_flush_and_an_empty_one_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = Batch::new();
    for i in 0..50u8 {
        b.put_group(&group(i));
    }
    let before = store.flush_count();
    store.commit(b).await.unwrap();
    store.commit(Batch::new()).await.unwrap();
    assert_eq!(store.flush_count() - before, 1);
    assert_eq!(store.all_groups().unwrap().len(), 50);
}

#[tokio::test]
async fn invite_with_one_use_admits_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = group(2);
    store.create_group(&g, &member("alice", Role::Owner), Batch::new()).await.unwrap();
    let inv = InviteRecord {
        code: "c0de".into(),
        group: g.id,
        created_by: user("alice"),
        created_at: 10,
        expires_at: 100,
        max_uses: Some(1),
        uses: 0,
        revoked: false,
    };
    let mut b = Batch::new();
    b.put_invite(&inv);
    store.commit(b).await.unwrap();
    assert!(matches!(
        store.redeem_invite("c0de", &member("bob", Role::Member), 200, Batch::new()).await,
        Err(StoreError::InviteGone)
    ));
    let mut recs = Batch::new();
    recs.put_record(&RecordKey::Member(g.id, user("bob")), b"signed");
    store.redeem_invite("c0de", &member("bob", Role::Member), 50, recs).await.unwrap();
    assert!(matches!(
        store.redeem_invite("c0de", &member("carol", Role::Member), 50, Batch::new()).await,
        Err(StoreError::InviteGone)
    ));
    assert_eq!(store.invite("c0de").unwrap().unwrap().uses, 1);
    assert!(store.member(&g.id, &user("carol")).unwrap().is_none());
    assert!(store.record(&RecordKey::Member(g.id, user("bob"))).unwrap().is_some(), "the signed record came with it");
}

#[tokio::test]
async fn expired_sessions_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let s = |exp| SessionRecord { user: UserName::new("alice").unwrap(), created_at: 1, expires_at: exp };
    store.put_session("old", &s(100)).await.unwrap();
    store.put_session("live", &s(10_000)).await.unwrap();
    assert_eq!(store.purge_sessions(500).await.unwrap(), 1);
    assert!(store.session("old").unwrap().is_none());
    assert!(store.session("live").unwrap().is_some());
    assert_eq!(store.purge_sessions(500).await.unwrap(), 0);
    assert_eq!(store.session_count(), 1);
}

#[tokio::test]
async fn reopening_keeps_data_checks_the_schema_and_upgrades_version_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let u = UserRecord { name: UserName::new("alice").unwrap(), password_hash: "h".into(), disabled: false, created_at: 1, admin: false, email: None, display_name: None };
        store.create_user(&u).await.unwrap();
        assert!(matches!(store.create_user(&u).await, Err(StoreError::Conflict)));
        // Make it look like a version 1 data dir, with its unpruned seq tree.
        store.db.open_tree("seqs").unwrap().insert("some/subject", &7u64.to_be_bytes()).unwrap();
        store.db.open_tree("meta").unwrap().insert("schema_version", &1u32.to_be_bytes()).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.users().unwrap().len(), 1);
    assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"seqs"), "the old seq tree is gone");
    store.db.open_tree("meta").unwrap().insert("schema_version", &99u32.to_be_bytes()).unwrap();
    drop(store);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Schema { found: 99 })));
}

#[tokio::test]
async fn sessions_are_stored_under_a_hash_and_version_two_sessions_end_at_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = "a3f1c2d4e5b6a7980112233445566778899aabbccddeeff00112233445566778";
    {
        let store = Store::open(dir.path()).unwrap();
        let s = SessionRecord { user: UserName::new("alice").unwrap(), created_at: 1, expires_at: u64::MAX };
        store.put_session(cookie, &s).await.unwrap();
        assert_eq!(store.session(cookie).unwrap(), Some(s));
        // Nothing in the tree holds the cookie: a copy of the data dir logs nobody in.
        for item in store.tree(T::Sessions).iter() {
            let (k, v) = item.unwrap();
            assert_ne!(&*k, cookie.as_bytes());
            assert!(!String::from_utf8_lossy(&v).contains(cookie));
            assert_eq!(&*k, session_tag(cookie).as_bytes());
        }
        // A version 2 data dir kept the cookie itself as the key, and had no administrator.
        store.tree(T::Sessions).insert(cookie, b"{}".to_vec()).unwrap();
        for (name, at) in [("zed", 5), ("amy", 9)] {
            let u = UserRecord { name: UserName::new(name).unwrap(), password_hash: "h".into(), disabled: false, created_at: at, admin: false, email: None, display_name: None };
            store.create_user(&u).await.unwrap();
        }
        store.db.open_tree("meta").unwrap().insert("schema_version", &2u32.to_be_bytes()).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.session_count(), 0, "plain-text sessions ended at the upgrade");
    assert!(store.session(cookie).unwrap().is_none());
    // The oldest account administers; the next sign-up does not get it.
    assert!(store.user(&UserName::new("zed").unwrap()).unwrap().unwrap().admin);
    assert!(!store.user(&UserName::new("amy").unwrap()).unwrap().unwrap().admin);
    assert!(!store.claim_admin(&UserName::new("newcomer").unwrap()).await.unwrap());
}

#[tokio::test]
async fn only_the_first_claim_makes_an_admin_and_the_mode_persists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.claim_admin(&UserName::new("ada").unwrap()).await.unwrap());
    assert!(!store.claim_admin(&UserName::new("bob").unwrap()).await.unwrap());
    assert_eq!(store.registration_mode().unwrap(), None);
    store.set_registration_mode(RegistrationMode::InviteOnly).await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.registration_mode().unwrap(), Some(RegistrationMode::InviteOnly));
}
