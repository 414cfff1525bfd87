//! Builds the test vectors of `vectors/` deterministically (fixed seeds, fixed `now`).
//!
//! Shared by `examples/make_vectors.rs`, which writes the files, and by the test that
//! checks the files on disk are exactly what this code produces.

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use serde_json::{Value, json};
use voicechat_protocol::ids::{GroupId, Nonce, Role, RoomId, SessionId, UserId};
use voicechat_protocol::{
    Envelope, GroupInfo, Membership, NodeCard, NodeKey, Presence, PresenceState, Record, RoomInfo,
    Signal, SignalType, cbor, signing_input,
};

/// The clock of every vector.
pub const NOW: u64 = 1_700_000_000;
/// Seeds of the three nodes: alpha and beta are known, mallory is not.
pub const ALPHA: [u8; 32] = [0xa1; 32];
/// Seed of beta.
pub const BETA: [u8; 32] = [0xb2; 32];
/// Seed of a node nobody bound.
pub const MALLORY: [u8; 32] = [0xee; 32];

const GROUP: GroupId = GroupId([0x61; 16]);
const OTHER_GROUP: GroupId = GroupId([0x62; 16]);
const ROOM: RoomId = RoomId([0x72; 16]);
const S1: SessionId = SessionId([0x51; 16]);
const S2: SessionId = SessionId([0x52; 16]);

fn user(s: &str) -> UserId {
    s.parse().expect("valid user id")
}

fn key(seed: [u8; 32]) -> NodeKey {
    NodeKey::from_signing_key(&SigningKey::from_bytes(&seed))
}

/// The network as the receiver of every vector knows it.
pub fn context(accepted_before: &[Vec<u8>]) -> Value {
    json!({
        "now": NOW,
        "nodes": { "alpha": key(ALPHA), "beta": key(BETA) },
        "groups": { GROUP.to_string(): "alpha" },
        "members": { GROUP.to_string(): ["alice@alpha", "bob@beta"] },
        "accepted_before": accepted_before.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

fn presence(seq: u64, who: &str, expires_at: u64) -> Record {
    Record::Presence(Presence {
        seq,
        room: ROOM,
        user: user(who),
        group: GROUP,
        muted: false,
        state: PresenceState::Joined,
        session: S1,
        expires_at,
    })
}

fn signal() -> Record {
    Record::Signal(Signal {
        to: user("alice@alpha"),
        data: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n".into(),
        from: user("bob@beta"),
        room: ROOM,
        signal_type: SignalType::Offer,
        group: GROUP,
        nonce: Nonce([0x4e; 16]),
        expires_at: NOW + 60,
        to_session: S1,
        from_session: S2,
    })
}

/// Signs arbitrary payload bytes (for vectors whose payload is deliberately wrong).
fn sign_raw(kind: &str, payload: Vec<u8>, seed: [u8; 32]) -> Envelope {
    let sk = SigningKey::from_bytes(&seed);
    let sig = sk.sign(&signing_input(kind, &payload)).to_bytes();
    Envelope {
        kind: kind.into(),
        payload,
        signer: NodeKey::from_signing_key(&sk),
        sig,
    }
}

struct Vector {
    name: &'static str,
    description: &'static str,
    seed: [u8; 32],
    record: Option<Record>,
    envelope: Envelope,
    /// Bytes handed to the validator, when they are not `envelope.encode()`.
    wire: Option<Vec<u8>>,
    before: Vec<Vec<u8>>,
    verdict: &'static str,
}

impl Vector {
    fn honest(
        name: &'static str,
        description: &'static str,
        seed: [u8; 32],
        record: Record,
    ) -> Self {
        let envelope = Envelope::seal(&record, &SigningKey::from_bytes(&seed));
        Vector {
            name,
            description,
            seed,
            record: Some(record),
            envelope,
            wire: None,
            before: vec![],
            verdict: "valid",
        }
    }

    fn verdict(mut self, verdict: &'static str) -> Self {
        self.verdict = verdict;
        self
    }

    fn to_json(&self) -> Value {
        let (kind, record, canonical) = match &self.record {
            Some(r) => {
                let tagged = serde_json::to_value(r).expect("records are JSON");
                (
                    Value::from(r.kind().as_str()),
                    tagged["record"].clone(),
                    Value::from(hex::encode(r.encode())),
                )
            }
            None => (
                Value::from(self.envelope.kind.clone()),
                Value::Null,
                Value::Null,
            ),
        };
        let wire = self.wire.clone().unwrap_or_else(|| self.envelope.encode());
        json!({
            "name": self.name,
            "description": self.description,
            "seed": hex::encode(self.seed),
            "signer": self.envelope.signer,
            "signer_peer_id": self.envelope.signer.peer_id(),
            "kind": kind,
            "record": record,
            "canonical_hex": canonical,
            "payload_hex": hex::encode(&self.envelope.payload),
            "signing_input_hex": hex::encode(self.envelope.signing_input()),
            "sig_hex": hex::encode(self.envelope.sig),
            "envelope_hex": hex::encode(wire),
            "context": context(&self.before),
            "verdict": self.verdict,
        })
    }
}

/// The same presence with its map keys in alphabetical (non-canonical) order.
#[derive(Serialize)]
struct PresenceAlphabetical<'a> {
    expires_at: u64,
    group: GroupId,
    muted: bool,
    room: RoomId,
    seq: u64,
    session: SessionId,
    state: PresenceState,
    user: &'a UserId,
}

/// Every vector as (file name without `.json`, content).
pub fn vectors() -> Vec<(String, Value)> {
    let p = presence(5, "alice@alpha", NOW + 60);
    let p_env = Envelope::seal(&p, &SigningKey::from_bytes(&ALPHA));
    let tamper = |mut v: Vector, f: &dyn Fn(&mut Envelope)| {
        f(&mut v.envelope);
        v
    };
    let raw = |name, description, verdict, record: &Record, payload: Vec<u8>| Vector {
        name,
        description,
        seed: ALPHA,
        record: Some(record.clone()),
        envelope: sign_raw(record.kind().as_str(), payload, ALPHA),
        wire: None,
        before: vec![],
        verdict,
    };
    let p_bytes = p.encode();
    let mut list = vec![
        Vector::honest(
            "node_card_valid",
            "alpha's own node card",
            ALPHA,
            Record::NodeCard(NodeCard {
                key: key(ALPHA),
                seq: 1,
                url: "https://alpha.example".into(),
                name: "alpha".parse().expect("name"),
                addrs: vec![
                    "/ip4/192.0.2.1/tcp/4001".into(),
                    "/ip4/192.0.2.1/udp/4001/quic-v1".into(),
                ],
            }),
        ),
        Vector::honest(
            "group_info_valid",
            "a group homed on alpha, signed by alpha",
            ALPHA,
            Record::GroupInfo(GroupInfo {
                seq: 1,
                home: "alpha".parse().expect("name"),
                name: "Friends ✨".into(),
                group: GROUP,
                deleted: false,
            }),
        ),
        Vector::honest(
            "membership_valid",
            "alpha (home) adds bob@beta as member",
            ALPHA,
            Record::Membership(Membership {
                seq: 2,
                role: Some(Role::Member),
                user: user("bob@beta"),
                group: GROUP,
            }),
        ),
        Vector::honest(
            "membership_removed_valid",
            "alpha removes carol@beta",
            ALPHA,
            Record::Membership(Membership {
                seq: 3,
                role: None,
                user: user("carol@beta"),
                group: GROUP,
            }),
        ),
        Vector::honest(
            "room_info_valid",
            "a room of the group, signed by the home node",
            ALPHA,
            Record::RoomInfo(RoomInfo {
                seq: 4,
                name: "Lobby".into(),
                room: ROOM,
                group: GROUP,
                deleted: false,
            }),
        ),
        Vector::honest(
            "presence_valid",
            "alice@alpha joins, signed by her home node",
            ALPHA,
            p.clone(),
        ),
        Vector::honest(
            "presence_remote_valid",
            "bob@beta joins a room of alpha's group, signed by beta",
            BETA,
            presence(9, "bob@beta", NOW + 60),
        ),
        Vector::honest(
            "presence_within_skew_valid",
            "expired 30 s ago: still inside the clock-skew allowance",
            ALPHA,
            presence(5, "alice@alpha", NOW - 30),
        ),
        Vector::honest(
            "signal_valid",
            "an offer from bob@beta to alice@alpha, signed by beta",
            BETA,
            signal(),
        ),
        tamper(
            Vector::honest(
                "bad_signature",
                "one bit of the signature flipped",
                ALPHA,
                p.clone(),
            ),
            &|e| e.sig[10] ^= 0x01,
        )
        .verdict("bad_signature"),
        tamper(
            Vector::honest(
                "bad_signature_payload",
                "one bit of the payload flipped after signing",
                ALPHA,
                p.clone(),
            ),
            &|e| {
                let n = e.payload.len() - 1;
                e.payload[n] ^= 0x01
            },
        )
        .verdict("bad_signature"),
        Vector::honest(
            "wrong_authority_presence",
            "alice@alpha's presence signed by beta",
            BETA,
            p.clone(),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "wrong_authority_membership",
            "a membership signed by beta, not the group's home",
            BETA,
            Record::Membership(Membership {
                seq: 2,
                role: Some(Role::Admin),
                user: user("bob@beta"),
                group: GROUP,
            }),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "wrong_authority_node_card",
            "a card claiming the name alpha, signed by another key",
            MALLORY,
            Record::NodeCard(NodeCard {
                key: key(MALLORY),
                seq: 7,
                url: "https://alpha.example".into(),
                name: "alpha".parse().expect("name"),
                addrs: vec![],
            }),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "not_member",
            "carol@beta is not a member of the group",
            BETA,
            presence(1, "carol@beta", NOW + 60),
        )
        .verdict("not_member"),
        Vector::honest(
            "unknown_group",
            "a room of a group whose home is unknown",
            ALPHA,
            Record::RoomInfo(RoomInfo {
                seq: 1,
                name: "Lobby".into(),
                room: ROOM,
                group: OTHER_GROUP,
                deleted: false,
            }),
        )
        .verdict("unknown_group"),
        Vector {
            before: vec![p_env.encode()],
            ..Vector::honest(
                "replayed",
                "the same presence a second time",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("replayed"),
        Vector {
            before: vec![
                Envelope::seal(
                    &presence(6, "alice@alpha", NOW + 60),
                    &SigningKey::from_bytes(&ALPHA),
                )
                .encode(),
            ],
            ..Vector::honest(
                "replayed_older_seq",
                "seq 5 after seq 6 of the same subject",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("replayed"),
        Vector {
            before: vec![Envelope::seal(&signal(), &SigningKey::from_bytes(&BETA)).encode()],
            ..Vector::honest(
                "signal_replayed",
                "the same signal nonce a second time",
                BETA,
                signal(),
            )
        }
        .verdict("replayed"),
        Vector::honest(
            "expired_presence",
            "expired 31 s ago: beyond the 30 s skew",
            ALPHA,
            presence(5, "alice@alpha", NOW - 31),
        )
        .verdict("expired"),
        Vector::honest(
            "presence_expiry_too_far",
            "expires 331 s ahead: more than 300 s TTL + 30 s skew",
            ALPHA,
            presence(5, "alice@alpha", NOW + 331),
        )
        .verdict("expiry_too_far"),
        Vector::honest(
            "invalid_field_signal",
            "a signal to its own session",
            BETA,
            match signal() {
                Record::Signal(s) => Record::Signal(Signal {
                    to_session: s.from_session,
                    ..s
                }),
                other => other,
            },
        )
        .verdict("invalid_field"),
        raw(
            "oversize_presence",
            "a signed presence payload of 1126 bytes: over the 1024-byte cap, rejected before decoding",
            "too_large",
            &p,
            [p_bytes.clone(), vec![0; 1126 - p_bytes.len()]].concat(),
        ),
        raw(
            "non_canonical_integer",
            "seq 5 written as a 2-byte integer (19 00 05)",
            "non_canonical",
            &p,
            [&p_bytes[..5], &[0x19, 0x00, 0x05], &p_bytes[6..]].concat(),
        ),
        raw(
            "non_canonical_key_order",
            "the presence map with keys in alphabetical order",
            "non_canonical",
            &p,
            match &p {
                Record::Presence(r) => cbor::encode(&PresenceAlphabetical {
                    expires_at: r.expires_at,
                    group: r.group,
                    muted: r.muted,
                    room: r.room,
                    seq: r.seq,
                    session: r.session,
                    state: r.state,
                    user: &r.user,
                }),
                _ => vec![],
            },
        ),
        raw(
            "non_canonical_upper_case",
            "user written Alice@alpha: decodes, but re-encodes as alice@alpha",
            "non_canonical",
            &p,
            String::from_utf8_lossy(&p_bytes)
                .replace("alice@alpha", "Alice@alpha")
                .into_bytes(),
        ),
        raw(
            "trailing_bytes_payload",
            "one zero byte after the record, inside the signed payload",
            "trailing_bytes",
            &p,
            [p_bytes.clone(), vec![0]].concat(),
        ),
        Vector {
            wire: Some([p_env.encode(), vec![0x00]].concat()),
            ..Vector::honest(
                "trailing_bytes_envelope",
                "one zero byte after the envelope",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("trailing_bytes"),
        Vector {
            wire: Some([&[0x98, 0x04][..], &p_env.encode()[1..]].concat()),
            ..Vector::honest(
                "non_canonical_envelope",
                "the envelope array length written as 98 04",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("non_canonical"),
        Vector {
            wire: Some(p_env.encode()[..40].to_vec()),
            ..Vector::honest(
                "malformed_truncated",
                "the envelope cut after 40 bytes",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("malformed"),
        Vector {
            record: None,
            ..raw(
                "unknown_kind",
                "a kind from a future version: ignored, not an error of the peer",
                "unknown_kind",
                &p,
                vec![0xa1, 0x61, 0x78, 0x01],
            )
        },
    ];
    // The unknown kind's envelope carries the future kind name.
    if let Some(v) = list.iter_mut().find(|v| v.name == "unknown_kind") {
        v.envelope = sign_raw("room_poll", vec![0xa1, 0x61, 0x78, 0x01], ALPHA);
    }
    list.iter()
        .map(|v| (v.name.to_string(), v.to_json()))
        .collect()
}
