//! Builds the test vectors of `vectors/` deterministically (fixed seeds, fixed `now`).
//!
//! Shared by `examples/make_vectors.rs`, which writes the files, and by the test that
//! checks the files on disk are exactly what this code produces.

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use serde_json::{Value, json};
use voicechat_protocol::ids::{GroupId, Nonce, Role, RoomId, SessionId, UserId};
use voicechat_protocol::{
    Answer, Cascade, CascadeType, Consent, Envelope, GroupInfo, MAX_ENVELOPE, Membership, NodeCard,
    NodeKey, Presence, PresenceState, Record, StagePlace, RoomInfo, Signal, SignalType, cbor, signing_input,
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
        name: None,
        joined_at: None,
        stage: None,
        expires_at,
    })
}

/// bob@beta's presence with his display name and the moment he joined.
fn named_presence(name: &str) -> Record {
    match presence(9, "bob@beta", NOW + 60) {
        Record::Presence(p) => Record::Presence(Presence {
            name: Some(name.into()),
            joined_at: Some(NOW * 1000 - 1500),
            ..p
        }),
        other => other,
    }
}

/// Bob in the audience of a stage room, hand raised.
fn stage_presence() -> Record {
    match presence(9, "bob@beta", NOW + 60) {
        Record::Presence(p) => Record::Presence(Presence { stage: Some(StagePlace::Hand), ..p }),
        other => other,
    }
}

/// Bob (a moderator on beta) invites alice onto the stage.
fn moderate_signal() -> Record {
    Record::Signal(Signal {
        to: user("alice@alpha"),
        data: r#"{"action":"invite"}"#.into(),
        from: user("bob@beta"),
        room: ROOM,
        signal_type: SignalType::Moderate,
        group: GROUP,
        nonce: Nonce([0x4d; 16]),
        expires_at: NOW + 60,
        to_session: S1,
        from_session: S2,
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

fn cascade() -> Record {
    Record::Cascade(Cascade {
        to: "alpha".parse().expect("name"),
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:lkB3\r\n".into(),
        from: "beta".parse().expect("name"),
        room: ROOM,
        cascade_type: CascadeType::Offer,
        group: GROUP,
        nonce: Nonce([0x43; 16]),
        expires_at: NOW + 60,
    })
}

fn consent(who: &str, group: GroupId, answer: Answer) -> Record {
    Record::Consent(Consent {
        seq: 1,
        user: user(who),
        group,
        answer,
    })
}

fn card(addrs: Vec<String>) -> Record {
    Record::NodeCard(NodeCard {
        key: key(ALPHA),
        seq: 1,
        url: "https://alpha.example".into(),
        name: "alpha".parse().expect("name"),
        addrs,
    })
}

/// The CBOR of a map from text keys to already-encoded values, in the order given
/// (fewer than 24 entries).
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let n = u8::try_from(entries.len()).expect("a short map");
    assert!(n < 24, "a short map");
    let mut out = vec![0xa0 | n];
    for (k, v) in entries {
        out.extend(cbor::encode(k));
        out.extend(v);
    }
    out
}

/// A presence as (key, encoded value) pairs in canonical key order: `map` of this is the
/// canonical payload, and the non-canonical vectors edit one entry.
fn presence_entries(record: &Record) -> Vec<(&'static str, Vec<u8>)> {
    let Record::Presence(r) = record else {
        panic!("a presence")
    };
    let entries = vec![
        ("seq", cbor::encode(&r.seq)),
        ("room", cbor::encode(&r.room)),
        ("user", cbor::encode(&r.user)),
        ("group", cbor::encode(&r.group)),
        ("muted", cbor::encode(&r.muted)),
        ("state", cbor::encode(&r.state)),
        ("session", cbor::encode(&r.session)),
        ("expires_at", cbor::encode(&r.expires_at)),
    ];
    assert_eq!(
        map(&entries),
        record.encode(),
        "entries are the canonical map"
    );
    entries
}

/// `entries` with the value of `key` replaced.
fn with_value(
    mut entries: Vec<(&'static str, Vec<u8>)>,
    key: &str,
    value: Vec<u8>,
) -> Vec<(&'static str, Vec<u8>)> {
    let entry = entries
        .iter_mut()
        .find(|(k, _)| *k == key)
        .expect("a field of the record");
    entry.1 = value;
    entries
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
    /// The signer's seed; `None` when the signer is not a valid key (`bad_key_*`).
    seed: Option<[u8; 32]>,
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
            seed: Some(seed),
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
            "seed": self.seed.map(hex::encode),
            "signer": self.envelope.signer,
            "signer_peer_id": self.seed.map(|_| self.envelope.signer.peer_id()),
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
        seed: Some(ALPHA),
        record: Some(record.clone()),
        envelope: sign_raw(record.kind().as_str(), payload, ALPHA),
        wire: None,
        before: vec![],
        verdict,
    };
    let p_bytes = p.encode();
    let p_entries = presence_entries(&p);
    // A signer that is not a valid key, with a given signature over p's signing input.
    let bad_key = |name, description, signer: [u8; 32], sig: [u8; 64]| Vector {
        name,
        description,
        seed: None,
        record: Some(p.clone()),
        envelope: Envelope {
            signer: NodeKey(signer),
            sig,
            ..p_env.clone()
        },
        wire: None,
        before: vec![],
        verdict: "bad_key",
    };
    let mut y2 = [0u8; 32];
    y2[0] = 0x02;
    let mut identity = [0u8; 32];
    identity[0] = 0x01;
    let mut lenient_sig = [0u8; 64];
    lenient_sig[0] = 0x01;
    let mut p_plus_3 = [0xff; 32];
    p_plus_3[0] = 0xf0;
    p_plus_3[31] = 0x7f;
    let honest_card = card(vec![]);
    let card_bytes = honest_card.encode();
    assert_eq!(card_bytes.last(), Some(&0x80), "addrs [] ends the card");
    let mut list = vec![
        Vector::honest(
            "node_card_valid",
            "alpha's own node card",
            ALPHA,
            card(vec![
                "/ip4/192.0.2.1/tcp/4001".into(),
                "/ip4/192.0.2.1/udp/4001/quic-v1".into(),
            ]),
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
                stage: false,
                deleted: false,
            }),
        ),
        Vector::honest(
            "room_info_stage_valid",
            "a stage room (speakers and listeners): `stage` is present only when true",
            ALPHA,
            Record::RoomInfo(RoomInfo {
                seq: 5,
                name: "Town hall".into(),
                room: ROOM,
                group: GROUP,
                stage: true,
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
            "presence_named_valid",
            "bob@beta joins with his display name (\"José Zoë\") and the time he joined \
             (unix ms), the optional `name` and `joined_at` keys in their canonical places",
            BETA,
            named_presence("José Zoë"),
        ),
        Vector::honest(
            "presence_stage_valid",
            "bob@beta in the audience of a stage room with his hand raised: the optional \
             `stage` key in its canonical place (before `state`)",
            BETA,
            stage_presence(),
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
        Vector::honest(
            "signal_moderate_by_home_valid",
            "a stage moderator's action of bob@beta on alice@alpha, handed on by alpha, the \
             group's home, under its own key (§6.6): valid",
            ALPHA,
            moderate_signal(),
        ),
        Vector::honest(
            "wrong_authority_signal_by_home",
            "an offer from bob@beta signed by alpha, the group's home: only a `moderate` signal \
             may come from the home instead of the sender's node: §7 step 8: wrong_authority",
            ALPHA,
            signal(),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "cascade_valid",
            "beta's SFU offers to pull alpha's speakers in the group's room, signed by beta",
            BETA,
            cascade(),
        ),
        Vector::honest(
            "wrong_authority_cascade",
            "a cascade offer naming beta as sender, signed by alpha: §7 step 8: wrong_authority",
            ALPHA,
            cascade(),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "invalid_field_cascade",
            "a cascade close that carries SDP: §7 step 7: invalid_field",
            BETA,
            match cascade() {
                Record::Cascade(c) => Record::Cascade(Cascade {
                    cascade_type: CascadeType::Close,
                    ..c
                }),
                other => other,
            },
        )
        .verdict("invalid_field"),
        Vector {
            before: vec![Envelope::seal(&cascade(), &SigningKey::from_bytes(&BETA)).encode()],
            ..Vector::honest(
                "cascade_replayed",
                "the same cascade offer a second time: §7 step 10: replayed",
                BETA,
                cascade(),
            )
        }
        .verdict("replayed"),
        tamper(
            Vector::honest(
                "bad_signature",
                "one bit of the signature flipped: §7 step 5: bad_signature",
                ALPHA,
                p.clone(),
            ),
            &|e| e.sig[10] ^= 0x01,
        )
        .verdict("bad_signature"),
        tamper(
            Vector::honest(
                "bad_signature_payload",
                "one bit of the payload flipped after signing: §7 step 5, before the payload is \
                 decoded: bad_signature",
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
            "alice@alpha's presence signed by beta: §7 step 8 authority: wrong_authority",
            BETA,
            p.clone(),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "wrong_authority_membership",
            "a membership signed by beta, not the group's home: §7 step 8 authority: \
             wrong_authority",
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
            "a card claiming the name alpha, which is bound to alpha's key, signed by another \
             key: §7 step 8 authority: wrong_authority",
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
            "carol@beta's presence, signed by beta, but carol is not a member of the group: \
             §7 step 8 authority: not_member",
            BETA,
            presence(1, "carol@beta", NOW + 60),
        )
        .verdict("not_member"),
        Vector::honest(
            "unknown_group",
            "a room of a group whose home is unknown: §7 step 8 authority: unknown_group",
            ALPHA,
            Record::RoomInfo(RoomInfo {
                seq: 1,
                name: "Lobby".into(),
                room: ROOM,
                group: OTHER_GROUP,
                stage: false,
                deleted: false,
            }),
        )
        .verdict("unknown_group"),
        Vector {
            before: vec![p_env.encode()],
            ..Vector::honest(
                "replayed",
                "the same presence a second time: §7 step 10: replayed",
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
                "seq 5 after seq 6 of the same subject: §7 step 10: replayed",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("replayed"),
        Vector {
            before: vec![Envelope::seal(&signal(), &SigningKey::from_bytes(&BETA)).encode()],
            ..Vector::honest(
                "signal_replayed",
                "the same signal nonce a second time: §7 step 10: replayed",
                BETA,
                signal(),
            )
        }
        .verdict("replayed"),
        Vector::honest(
            "expired_presence",
            "expired 31 s ago, beyond the 30 s skew: §7 step 9: expired",
            ALPHA,
            presence(5, "alice@alpha", NOW - 31),
        )
        .verdict("expired"),
        Vector::honest(
            "presence_expiry_too_far",
            "expires 331 s ahead, more than 300 s TTL + 30 s skew: §7 step 9: expiry_too_far",
            ALPHA,
            presence(5, "alice@alpha", NOW + 331),
        )
        .verdict("expiry_too_far"),
        Vector::honest(
            "invalid_field_presence_name",
            "a presence whose display name holds a control character: §7 step 7: invalid_field",
            BETA,
            named_presence("bob\u{7}"),
        )
        .verdict("invalid_field"),
        Vector::honest(
            "invalid_field_signal",
            "a signal to its own session (to_session = from_session): §7 step 7: invalid_field",
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
            "a signed presence payload of 1126 bytes (the record, then zero bytes): §7 step 4, \
             over the 1024-byte cap before the signature and decoding: too_large",
            "too_large",
            &p,
            [p_bytes.clone(), vec![0; 1126 - p_bytes.len()]].concat(),
        ),
        raw(
            "non_canonical_integer",
            "seq 5 written as a 2-byte integer (19 00 05), signed: §7 step 6: non_canonical",
            "non_canonical",
            &p,
            [&p_bytes[..5], &[0x19, 0x00, 0x05], &p_bytes[6..]].concat(),
        ),
        raw(
            "non_canonical_key_order",
            "the presence map with keys in alphabetical order, signed: §7 step 6: non_canonical",
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
            "user written Alice@alpha (same length: only the text bytes differ), signed: \
             §7 step 6 decodes it, but it re-encodes as alice@alpha: non_canonical",
            "non_canonical",
            &p,
            map(&with_value(
                p_entries.clone(),
                "user",
                cbor::encode(&"Alice@alpha"),
            )),
        ),
        raw(
            "malformed_missing_field",
            "the presence map without its muted key (7 entries, otherwise canonical), signed: \
             §7 step 6 payload decoding: malformed (a required field is missing)",
            "malformed",
            &p,
            map(&p_entries
                .iter()
                .filter(|(k, _)| *k != "muted")
                .cloned()
                .collect::<Vec<_>>()),
        ),
        raw(
            "non_canonical_unknown_field",
            "the presence map with an extra key note: \"hi\" in canonical key order (after seq), \
             signed: §7 step 6 decodes it (the key is skipped) but it does not re-encode to the \
             same bytes: non_canonical",
            "non_canonical",
            &p,
            map(&[
                &p_entries[..1],
                &[("note", cbor::encode(&"hi"))],
                &p_entries[1..],
            ]
            .concat()),
        ),
        raw(
            "non_canonical_duplicate_key",
            "the presence map with seq twice (5, then 6; 9 entries), signed: §7 step 6: \
             non_canonical (map keys must strictly increase)",
            "non_canonical",
            &p,
            map(&[
                &p_entries[..1],
                &[("seq", cbor::encode(&6u64))],
                &p_entries[1..],
            ]
            .concat()),
        ),
        raw(
            "non_canonical_indefinite_map",
            "the presence map with an indefinite-length header (bf, entries, ff), signed: \
             §7 step 6: non_canonical (definite lengths only)",
            "non_canonical",
            &p,
            [&[0xbf][..], &p_bytes[1..], &[0xff]].concat(),
        ),
        raw(
            "non_canonical_indefinite_text",
            "user written as an indefinite-length text of two chunks \
             (7f 65 \"alice\" 66 \"@alpha\" ff), signed: §7 step 6: non_canonical \
             (definite lengths only)",
            "non_canonical",
            &p,
            map(&with_value(
                p_entries.clone(),
                "user",
                [&[0x7f, 0x65][..], b"alice", &[0x66], b"@alpha", &[0xff]].concat(),
            )),
        ),
        raw(
            "non_canonical_tag",
            "expires_at wrapped in tag 1, epoch time (c1 1a 6553f13c), signed: §7 step 6: \
             non_canonical (no tags)",
            "non_canonical",
            &p,
            map(&with_value(
                p_entries.clone(),
                "expires_at",
                [&[0xc1][..], &cbor::encode(&(NOW + 60))].concat(),
            )),
        ),
        raw(
            "non_canonical_float",
            "expires_at written as the double 1700000060.0 (fb 41d954fc4f000000), signed: \
             §7 step 6: non_canonical (no floats)",
            "non_canonical",
            &p,
            map(&with_value(
                p_entries.clone(),
                "expires_at",
                [&[0xfb][..], &((NOW + 60) as f64).to_be_bytes()].concat(),
            )),
        ),
        raw(
            "non_canonical_too_deep",
            "alpha's node card whose addrs is 8 nested arrays (81 81 81 81 81 81 81 80): the \
             innermost, empty, sits at depth 8 (the card map is depth 0), and arrays and maps \
             are allowed at depths 0 to 7 only (8 levels), signed: §7 step 6: non_canonical; \
             without the depth rule it would be malformed (addrs holds text)",
            "non_canonical",
            &honest_card,
            [&card_bytes[..card_bytes.len() - 1], &[0x81; 7][..], &[0x80]].concat(),
        ),
        raw(
            "trailing_bytes_payload",
            "one zero byte after the record, inside the signed payload: §7 step 6: trailing_bytes",
            "trailing_bytes",
            &p,
            [p_bytes.clone(), vec![0]].concat(),
        ),
        Vector {
            wire: Some({
                let mut wire = p_env.encode();
                wire.resize(MAX_ENVELOPE + 1, 0);
                wire
            }),
            ..Vector::honest(
                "oversize_envelope",
                "alice@alpha's valid presence envelope followed by zero bytes up to 65537 bytes: \
                 §7 step 1, over the 65536-byte envelope cap before any decoding: too_large \
                 (decoded, it would be trailing_bytes)",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("too_large"),
        Vector {
            wire: Some([p_env.encode(), vec![0x00]].concat()),
            ..Vector::honest(
                "trailing_bytes_envelope",
                "one zero byte after the envelope: §7 step 2: trailing_bytes",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("trailing_bytes"),
        Vector {
            wire: Some([&[0x98, 0x04][..], &p_env.encode()[1..]].concat()),
            ..Vector::honest(
                "non_canonical_envelope",
                "the envelope array length written as 98 04: §7 step 2: non_canonical",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("non_canonical"),
        Vector {
            wire: Some(p_env.encode()[..40].to_vec()),
            ..Vector::honest(
                "malformed_truncated",
                "the envelope cut after 40 bytes: §7 step 2: malformed",
                ALPHA,
                p.clone(),
            )
        }
        .verdict("malformed"),
        bad_key(
            "bad_key_off_curve",
            "signer 02 00…00: y = 2 is not the y coordinate of a curve point, so the key does \
             not decompress; the signature is alpha's over the same input: §7 step 5: bad_key",
            y2,
            p_env.sig,
        ),
        bad_key(
            "bad_key_small_order",
            "signer 01 00…00 is the identity point (small order); the signature R = identity, \
             S = 0 passes a lenient (non-strict) check for any message: §7 step 5: bad_key, \
             whatever the signature",
            identity,
            lenient_sig,
        ),
        bad_key(
            "bad_key_non_canonical",
            "signer f0 ff…ff 7f encodes y = p + 3, a non-canonical encoding of the curve point \
             with y = 3; the signature is alpha's: §7 step 5: bad_key (a check that reduces y \
             mod p and verifies would give bad_signature)",
            p_plus_3,
            p_env.sig,
        ),
        Vector::honest(
            "unknown_node",
            "dave@gamma's presence signed by a key the receiver has not bound; no key is known \
             for node gamma: §7 step 8 authority: unknown_node",
            MALLORY,
            presence(1, "dave@gamma", NOW + 60),
        )
        .verdict("unknown_node"),
        Vector::honest(
            "consent_valid",
            "bob@beta accepts his membership of alpha's group; signed by beta, his home node",
            BETA,
            consent("bob@beta", GROUP, Answer::Accepted),
        ),
        Vector::honest(
            "consent_wrong_authority",
            "bob@beta's consent signed by alpha, the group's home, not by bob's home node beta: \
             §7 step 8 authority: wrong_authority",
            ALPHA,
            consent("bob@beta", GROUP, Answer::Accepted),
        )
        .verdict("wrong_authority"),
        Vector::honest(
            "consent_not_member",
            "carol@beta declines, signed by beta, but carol is not a member of the group: \
             §7 step 8 authority: not_member",
            BETA,
            consent("carol@beta", GROUP, Answer::Declined),
        )
        .verdict("not_member"),
        Vector::honest(
            "consent_unknown_group",
            "bob@beta leaves a group whose home is unknown (and of which he is not a known \
             member), signed by beta: §7 step 8 authority: unknown_group, the group's home is \
             checked before membership",
            BETA,
            consent("bob@beta", OTHER_GROUP, Answer::Left),
        )
        .verdict("unknown_group"),
        Vector {
            record: None,
            ..raw(
                "unknown_kind",
                "a kind from a future version, signed: §7 step 3: unknown_kind, ignored, not an error \
                 of the peer",
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
