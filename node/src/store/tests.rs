//! The store against a real sled directory: atomic group writes, invites that cannot be
//! over-used, cascading deletes, and the schema check.

use voicechat_protocol::ids::{GroupId, NodeName, Role, RoomId, UserId, UserName};

use super::*;

fn user(n: &str) -> UserId {
    UserId::new(UserName::new(n).unwrap(), NodeName::new("alpha").unwrap())
}

fn group(id: u8) -> GroupRecord {
    GroupRecord { id: GroupId([id; 16]), name: "g".into(), home: NodeName::new("alpha").unwrap(), created_at: 1 }
}

fn member(n: &str, role: Role) -> MemberRecord {
    MemberRecord { user: user(n), role, added_at: 1 }
}

#[tokio::test]
async fn group_lifecycle_keeps_indexes_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = group(1);
    store.create_group(&g, &member("alice", Role::Owner)).await.unwrap();
    assert!(matches!(store.create_group(&g, &member("alice", Role::Owner)).await, Err(StoreError::Conflict)));
    store.put_member(&g.id, &member("bob", Role::Member)).await.unwrap();
    let room = RoomRecord { id: RoomId([9; 16]), group: g.id, name: "r".into(), created_at: 2 };
    store.put_room(&room).await.unwrap();
    assert_eq!(store.groups_of(&user("bob")).unwrap(), vec![g.id]);
    assert_eq!(store.members(&g.id).unwrap().len(), 2);
    store.remove_member(&g.id, &user("bob")).await.unwrap();
    assert!(store.groups_of(&user("bob")).unwrap().is_empty());
    assert!(matches!(store.remove_member(&g.id, &user("bob")).await, Err(StoreError::NotFound)));
    store.delete_group(&g.id).await.unwrap();
    assert!(store.group(&g.id).unwrap().is_none());
    assert!(store.rooms(&g.id).unwrap().is_empty());
    assert!(store.groups_of(&user("alice")).unwrap().is_empty());
    // A room cannot be put into a group that does not exist.
    assert!(matches!(store.put_room(&room).await, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn invite_with_one_use_admits_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = group(2);
    store.create_group(&g, &member("alice", Role::Owner)).await.unwrap();
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
    store.put_invite(&inv).await.unwrap();
    assert!(matches!(
        store.redeem_invite("c0de", &member("bob", Role::Member), 200).await,
        Err(StoreError::InviteGone)
    ));
    store.redeem_invite("c0de", &member("bob", Role::Member), 50).await.unwrap();
    assert!(matches!(
        store.redeem_invite("c0de", &member("carol", Role::Member), 50).await,
        Err(StoreError::InviteGone)
    ));
    assert_eq!(store.invite("c0de").unwrap().unwrap().uses, 1);
    assert!(store.member(&g.id, &user("carol")).unwrap().is_none());
}

#[tokio::test]
async fn reopening_keeps_data_and_checks_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let u = UserRecord { name: UserName::new("alice").unwrap(), password_hash: "h".into(), disabled: false, created_at: 1 };
        store.create_user(&u).await.unwrap();
        assert!(matches!(store.create_user(&u).await, Err(StoreError::Conflict)));
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.users().unwrap().len(), 1);
    store.db.open_tree("meta").unwrap().insert("schema_version", &99u32.to_be_bytes()).unwrap();
    drop(store);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Schema { found: 99 })));
}
