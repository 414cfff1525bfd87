//! Encode, decode, sign and verify one Presence record: `cargo bench -p voicechat-protocol`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::{
    Authorities, Envelope, Kind, NodeKey, Presence, PresenceState, Record, Validator,
};

const NOW: u64 = 1_700_000_000;

struct Net(NodeKey);

impl Authorities for Net {
    fn node_key(&self, _: &NodeName) -> Option<NodeKey> {
        Some(self.0)
    }
    fn group_home(&self, _: &GroupId) -> Option<NodeName> {
        None
    }
    fn is_member(&self, _: &GroupId, _: &UserId) -> bool {
        true
    }
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[0xa1; 32]);
    let record = Record::Presence(Presence {
        seq: 42,
        room: RoomId([1; 16]),
        user: "alice@alpha.example".parse().expect("user"),
        group: GroupId([2; 16]),
        muted: false,
        state: PresenceState::Joined,
        session: SessionId([3; 16]),
        name: None,
        joined_at: None,
        stage: None,
        expires_at: NOW + 60,
    });
    let payload = record.encode();
    let envelope = Envelope::seal(&record, &key);
    let wire = envelope.encode();
    let net = Net(NodeKey::from_signing_key(&key));

    let mut g = c.benchmark_group("presence");
    g.bench_function("encode", |b| b.iter(|| black_box(&record).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| Record::decode(Kind::Presence, black_box(&payload)).expect("decodes"))
    });
    g.bench_function("sign", |b| {
        b.iter(|| Envelope::seal(black_box(&record), &key))
    });
    g.bench_function("verify", |b| {
        b.iter(|| black_box(&envelope).verify().expect("verifies"))
    });
    g.bench_function("validate_full", |b| {
        b.iter(|| {
            Validator::new()
                .check(black_box(&wire), NOW, &net)
                .expect("valid")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
