//! The replay state: check does not commit, accept does, capacity is bounded, expiry prunes.

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::validate::{Authorities, CLOCK_SKEW};
use voicechat_protocol::{
    Envelope, MAX_ENVELOPE, NodeCard, NodeKey, Presence, PresenceState, ProtocolError, Record,
    Subject, Validator,
};

use super::generator::{ALPHA, NOW};

/// A network where alpha is known and every user is a member of every group.
pub struct Net(HashMap<NodeName, NodeKey>);

impl Net {
    pub fn new() -> Self {
        let alpha = NodeKey::from_signing_key(&SigningKey::from_bytes(&ALPHA));
        Net(HashMap::from([("alpha".parse().expect("name"), alpha)]))
    }
}

impl Authorities for Net {
    fn node_key(&self, node: &NodeName) -> Option<NodeKey> {
        self.0.get(node).copied()
    }
    fn group_home(&self, _: &GroupId) -> Option<NodeName> {
        "alpha".parse().ok()
    }
    fn is_member(&self, _: &GroupId, _: &UserId) -> bool {
        true
    }
}

fn presence(seq: u64, session: u8, expires_at: u64) -> Vec<u8> {
    let record = Record::Presence(Presence {
        seq,
        room: RoomId([1; 16]),
        user: "alice@alpha".parse().expect("user"),
        group: GroupId([2; 16]),
        muted: true,
        state: PresenceState::Joined,
        session: SessionId([session; 16]),
        expires_at,
    });
    Envelope::seal(&record, &SigningKey::from_bytes(&ALPHA)).encode()
}

#[test]
fn check_does_not_commit_and_accept_does() {
    let (net, mut v) = (Net::new(), Validator::new());
    let first = presence(1, 1, NOW + 60);
    let verified = v.check(&first, NOW, &net).expect("valid");
    assert!(
        v.check(&first, NOW, &net).is_ok(),
        "check leaves the state alone"
    );
    v.accept(&verified, NOW);
    assert!(matches!(
        v.check(&first, NOW, &net),
        Err(ProtocolError::Replayed { seq: 1, last: 1 })
    ));
    assert!(v.validate(&presence(2, 1, NOW + 60), NOW, &net).is_ok());
    let subject = verified.record.subject();
    assert_eq!(v.last_seq(&verified.envelope.signer, &subject), Some(2));
    // Another session is another subject.
    assert!(v.validate(&presence(1, 2, NOW + 60), NOW, &net).is_ok());
}

#[test]
fn remember_preloads_seqs() {
    let (net, mut v) = (Net::new(), Validator::new());
    let verified = v
        .check(&presence(7, 1, NOW + 60), NOW, &net)
        .expect("valid");
    v.remember(verified.envelope.signer, verified.record.subject(), 7);
    assert_eq!(
        v.check(&presence(7, 1, NOW + 60), NOW, &net)
            .map(drop)
            .map_err(|e| e.code()),
        Err("replayed")
    );
}

#[test]
fn capacity_is_bounded_and_expired_entries_go_first() {
    let (net, mut v) = (Net::new(), Validator::with_capacity(16));
    for s in 0..40u8 {
        v.validate(&presence(1, s, NOW + 10), NOW, &net)
            .expect("valid");
        assert!(v.len() <= 16);
    }
    v.prune(NOW + 10 + CLOCK_SKEW + 1);
    assert!(v.is_empty(), "every entry expired");
    let key = NodeKey([9; 32]);
    v.remember(key, Subject::Node("x".parse().expect("name")), 3);
    assert_eq!(v.len(), 1);
}

#[test]
fn node_cards_bind_unknown_names_and_keep_known_ones() {
    let (net, mut v) = (Net::new(), Validator::new());
    let card = |seed: [u8; 32], name: &str| {
        let sk = SigningKey::from_bytes(&seed);
        let record = Record::NodeCard(NodeCard {
            key: NodeKey::from_signing_key(&sk),
            seq: 1,
            url: "http://127.0.0.1:8080".into(),
            name: name.parse().expect("name"),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        });
        Envelope::seal(&record, &sk).encode()
    };
    assert!(
        v.validate(&card([7; 32], "newcomer"), NOW, &net).is_ok(),
        "unknown name: first binding"
    );
    assert!(v.validate(&card(ALPHA, "alpha"), NOW, &net).is_ok());
    let err = v
        .validate(&card([7; 32], "alpha"), NOW, &net)
        .expect_err("alpha is bound");
    assert_eq!(err.code(), "wrong_authority");
}

#[test]
fn oversize_envelopes_are_rejected_before_decoding() {
    let err = Validator::new().validate(&vec![0x84; MAX_ENVELOPE + 1], NOW, &Net::new());
    assert!(matches!(
        err,
        Err(ProtocolError::TooLarge {
            what: "envelope",
            ..
        })
    ));
}
