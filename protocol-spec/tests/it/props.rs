//! Property tests: round trips are canonical, any flipped bit is caught, no input panics.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use voicechat_protocol::ids::{
    GroupId, NodeName, Nonce, Role, RoomId, SessionId, UserId, UserName,
};
use voicechat_protocol::{
    Answer, Cascade, CascadeType, Consent, Envelope, GroupInfo, Kind, Membership, NodeCard,
    NodeKey, Presence, PresenceState, Record, RoomInfo, StagePlace, Signal, SignalType, Validator, cbor, rpc,
};

use super::generator;

fn node_name() -> impl Strategy<Value = NodeName> {
    // Up to 4 labels of up to 63 letters: exercises names near the 253-byte limit.
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..5)
        .prop_filter_map("too long", |labels| NodeName::new(&labels.join(".")).ok())
}

fn user() -> impl Strategy<Value = UserId> {
    ("[a-zA-Z0-9][a-zA-Z0-9_.-]{2,31}", node_name())
        .prop_map(|(n, node)| UserId::new(UserName::new(&n).expect("valid by regex"), node))
}

fn id16() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}

fn display_name() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,30}".prop_filter("≤128 bytes", |s| s.len() <= 128)
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            node_name(),
            prop::collection::vec("/[a-z0-9/.]{1,60}", 0..4)
        )
            .prop_map(|(k, seq, name, addrs)| Record::NodeCard(NodeCard {
                key: NodeKey(k),
                seq,
                url: "https://x.example/".into(),
                name,
                addrs
            })),
        (
            any::<u64>(),
            node_name(),
            display_name(),
            id16(),
            any::<bool>()
        )
            .prop_map(
                |(seq, home, name, g, deleted)| Record::GroupInfo(GroupInfo {
                    seq,
                    home,
                    name,
                    group: GroupId(g),
                    deleted
                })
            ),
        (
            any::<u64>(),
            prop::option::of(prop_oneof![
                Just(Role::Owner),
                Just(Role::Admin),
                Just(Role::Member)
            ]),
            user(),
            id16()
        )
            .prop_map(|(seq, role, user, g)| Record::Membership(Membership {
                seq,
                role,
                user,
                group: GroupId(g)
            })),
        (
            any::<u64>(),
            display_name(),
            id16(),
            id16(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(seq, name, r, g, stage, deleted)| Record::RoomInfo(RoomInfo {
                    seq,
                    name,
                    room: RoomId(r),
                    group: GroupId(g),
                    stage,
                    deleted
                })
            ),
        (
            any::<u64>(),
            id16(),
            user(),
            id16(),
            any::<bool>(),
            any::<bool>(),
            id16(),
            1..u64::MAX,
            proptest::option::of("[^\\p{Cc}]{1,40}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(proptest::sample::select(vec![
                StagePlace::Speaker,
                StagePlace::Listener,
                StagePlace::Hand,
                StagePlace::Invited
            ]))
        )
            .prop_map(
                |(seq, r, user, g, muted, joined, s, expires_at, name, joined_at, stage)| Record::Presence(Presence {
                    seq,
                    room: RoomId(r),
                    user,
                    group: GroupId(g),
                    muted,
                    state: if joined {
                        PresenceState::Joined
                    } else {
                        PresenceState::Left
                    },
                    session: SessionId(s),
                    name,
                    joined_at,
                    stage,
                    expires_at
                })
            ),
        (
            user(),
            ".{0,300}",
            user(),
            id16(),
            0..6u8,
            id16(),
            id16(),
            any::<u64>(),
            id16()
        )
            .prop_map(
                |(to, data, from, r, t, g, n, expires_at, s)| Record::Signal(Signal {
                    to,
                    data,
                    from,
                    room: RoomId(r),
                    signal_type: [
                        SignalType::Offer,
                        SignalType::Answer,
                        SignalType::Candidate,
                        SignalType::Bye,
                        SignalType::E2ee,
                        SignalType::Moderate
                    ][usize::from(t)],
                    group: GroupId(g),
                    nonce: Nonce(n),
                    expires_at,
                    to_session: SessionId(s),
                    from_session: SessionId(s.map(|b| !b))
                })
            ),
        (
            any::<u64>(),
            user(),
            id16(),
            prop_oneof![
                Just(Answer::Accepted),
                Just(Answer::Declined),
                Just(Answer::Left)
            ]
        )
            .prop_map(|(seq, user, g, answer)| Record::Consent(Consent {
                seq,
                user,
                group: GroupId(g),
                answer
            })),
        (".{1,300}", id16(), 0..2u8, id16(), id16(), any::<u64>()).prop_map(
            |(sdp, r, t, g, n, expires_at)| Record::Cascade(Cascade {
                to: "alpha".parse().expect("name"),
                sdp,
                from: "beta".parse().expect("name"),
                room: RoomId(r),
                cascade_type: [CascadeType::Offer, CascadeType::Answer][usize::from(t)],
                group: GroupId(g),
                nonce: Nonce(n),
                expires_at,
            })
        ),
    ]
}

fn sync_request() -> impl Strategy<Value = rpc::SyncRequest> {
    (any::<u32>(), id16(), prop::option::of(any::<[u8; 32]>())).prop_map(|(page, g, d)| {
        rpc::SyncRequest {
            page,
            group: GroupId(g),
            digest: d.map(rpc::Digest),
        }
    })
}

fn sync_response() -> impl Strategy<Value = rpc::SyncResponse> {
    (
        any::<bool>(),
        prop::option::of(Just(rpc::RpcError::UnknownNode)),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
        any::<bool>(),
    )
        .prop_map(|(more, error, records, unchanged)| rpc::SyncResponse {
            more,
            error,
            records: records
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect(),
            unchanged,
        })
}

/// The record strategy reaches every kind (keeps `record()` in step with `Kind::ALL`).
#[test]
fn every_kind_is_generated() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let kinds: std::collections::BTreeSet<Kind> = (0..1000)
        .map(|_| {
            record()
                .new_tree(&mut runner)
                .expect("a value")
                .current()
                .kind()
        })
        .collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), Kind::ALL.to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn records_round_trip_canonically(record in record()) {
        let bytes = record.encode();
        prop_assert_eq!(cbor::check_canonical(&bytes), Ok(()));
        let back = Record::decode(record.kind(), &bytes).expect("decodes");
        prop_assert_eq!(back.encode(), bytes);
        prop_assert_eq!(back, record);
    }

    #[test]
    fn envelopes_round_trip_and_open(record in record(), seed in any::<[u8; 32]>()) {
        let env = Envelope::seal(&record, &SigningKey::from_bytes(&seed));
        let bytes = env.encode();
        prop_assert_eq!(cbor::check_canonical(&bytes), Ok(()));
        let back = Envelope::decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.open().expect("opens"), record);
    }

    #[test]
    fn any_flipped_bit_is_rejected(record in record(), bit in any::<prop::sample::Index>()) {
        let env = Envelope::seal(&record, &SigningKey::from_bytes(&[3; 32]));
        let mut bytes = env.encode();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        prop_assert!(Envelope::decode(&bytes).and_then(|e| e.open()).is_err(), "bit {} accepted", i);
    }

    #[test]
    fn flipped_payload_or_signature_bit_fails_verification(record in record(), bit in any::<prop::sample::Index>(), in_sig in any::<bool>()) {
        let mut env = Envelope::seal(&record, &SigningKey::from_bytes(&[4; 32]));
        let field: &mut [u8] = if in_sig { &mut env.sig } else { &mut env.payload };
        let i = bit.index(field.len() * 8);
        field[i / 8] ^= 1 << (i % 8);
        prop_assert!(env.verify().is_err());
        prop_assert!(env.open().is_err());
    }

    #[test]
    fn sync_messages_round_trip_canonically(req in sync_request(), resp in sync_response()) {
        let bytes = rpc::encode(&req);
        prop_assert_eq!(cbor::check_canonical(&bytes), Ok(()));
        prop_assert_eq!(rpc::decode::<rpc::SyncRequest>(&bytes, rpc::MAX_SYNC_REQUEST).expect("decodes"), req);
        let bytes = rpc::encode(&resp);
        prop_assert_eq!(cbor::check_canonical(&bytes), Ok(()));
        prop_assert_eq!(rpc::decode::<rpc::SyncResponse>(&bytes, rpc::MAX_SYNC_RESPONSE).expect("decodes"), resp);
    }

    #[test]
    fn group_digest_ignores_order_and_repeats(
        envelopes in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        order in any::<prop::sample::Index>(),
    ) {
        let digest = rpc::group_digest(envelopes.iter().map(Vec::as_slice));
        let mut shuffled: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
        if !shuffled.is_empty() {
            let i = order.index(shuffled.len());
            shuffled.rotate_left(i);
            shuffled.push(shuffled[0]);
        }
        prop_assert_eq!(rpc::group_digest(shuffled), digest);
        let mut more = envelopes.clone();
        more.push(b"one more envelope, unlike any generated (longer than 64 bytes) ..............".to_vec());
        prop_assert_ne!(rpc::group_digest(more.iter().map(Vec::as_slice)), digest);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = cbor::check_canonical(&bytes);
        let _ = Envelope::decode(&bytes);
        for kind in Kind::ALL {
            let _ = Record::decode(kind, &bytes);
        }
        let _ = rpc::decode::<rpc::SyncResponse>(&bytes, rpc::MAX_SYNC_RESPONSE);
        let _ = rpc::decode::<rpc::SyncRequest>(&bytes, rpc::MAX_SYNC_REQUEST);
        let ctx = super::validator::Net::new();
        let _ = Validator::new().validate(&bytes, generator::NOW, &ctx);
    }

    #[test]
    fn mutated_valid_envelopes_never_panic(record in record(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = Envelope::seal(&record, &SigningKey::from_bytes(&[5; 32])).encode();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let ctx = super::validator::Net::new();
        let _ = Validator::new().validate(&bytes, generator::NOW, &ctx);
        let _ = Envelope::decode(&bytes[..i]);
    }
}
