//! The replay state: check does not commit, accept does, capacity is bounded, expiry prunes.

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use voicechat_protocol::ids::{GroupId, NodeName, RoomId, SessionId, UserId};
use voicechat_protocol::validate::{Authorities, CLOCK_SKEW};
use voicechat_protocol::{
    Answer, Consent, Envelope, MAX_ENVELOPE, NodeCard, NodeKey, Presence, PresenceState,
    ProtocolError, Record, Subject, Validator,
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
        name: None,
        joined_at: None,
        stage: None,
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

/// A receiver that knows some nodes, one group's home and that group's members.
struct Known {
    nodes: HashMap<NodeName, NodeKey>,
    home: Option<(GroupId, NodeName)>,
    members: Vec<(GroupId, UserId)>,
}

impl Authorities for Known {
    fn node_key(&self, node: &NodeName) -> Option<NodeKey> {
        self.nodes.get(node).copied()
    }
    fn group_home(&self, group: &GroupId) -> Option<NodeName> {
        self.home
            .as_ref()
            .filter(|(g, _)| g == group)
            .map(|(_, h)| h.clone())
    }
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.members.contains(&(*group, user.clone()))
    }
}

#[test]
fn consent_authority_checks_key_then_home_then_membership() {
    let beta_seed = [0xb2; 32];
    let key_of = |seed| NodeKey::from_signing_key(&SigningKey::from_bytes(&seed));
    let group = GroupId([6; 16]);
    let bob: UserId = "bob@beta".parse().expect("user");
    let consent = |seq, answer| {
        Record::Consent(Consent {
            seq,
            user: bob.clone(),
            group,
            answer,
        })
    };
    let seal =
        |record: &Record, seed| Envelope::seal(record, &SigningKey::from_bytes(&seed)).encode();
    let code = |known: &Known, bytes: &[u8]| {
        Validator::new()
            .validate(bytes, NOW, known)
            .map(drop)
            .map_err(|e| e.code())
    };
    let all = Known {
        nodes: HashMap::from([
            ("alpha".parse().expect("name"), key_of(ALPHA)),
            ("beta".parse().expect("name"), key_of(beta_seed)),
        ]),
        home: Some((group, "alpha".parse().expect("name"))),
        members: vec![(group, bob.clone())],
    };
    let accepted = seal(&consent(1, Answer::Accepted), beta_seed);
    assert_eq!(code(&all, &accepted), Ok(()));
    // Signed by the group's home instead of the user's: the key comes first, even when the
    // group is unknown and the user is no member.
    let none = Known {
        nodes: all.nodes.clone(),
        home: None,
        members: vec![],
    };
    assert_eq!(
        code(&none, &seal(&consent(1, Answer::Accepted), ALPHA)),
        Err("wrong_authority")
    );
    // beta unknown: unknown_node, before the group and membership.
    let no_beta = Known {
        nodes: HashMap::from([("alpha".parse().expect("name"), key_of(ALPHA))]),
        home: None,
        members: vec![],
    };
    assert_eq!(code(&no_beta, &accepted), Err("unknown_node"));
    // The group's home unknown: unknown_group, before membership.
    assert_eq!(code(&none, &accepted), Err("unknown_group"));
    // Home known, bob not (or no longer) a member: not_member.
    let removed = Known {
        nodes: all.nodes.clone(),
        home: all.home.clone(),
        members: vec![],
    };
    assert_eq!(
        code(&removed, &seal(&consent(2, Answer::Left), beta_seed)),
        Err("not_member")
    );
    // One subject per (group, user): a later answer needs a higher seq.
    let mut v = Validator::new();
    v.validate(&accepted, NOW, &all).expect("valid");
    let again = seal(&consent(1, Answer::Declined), beta_seed);
    assert_eq!(
        v.validate(&again, NOW, &all)
            .map(drop)
            .map_err(|e| e.code()),
        Err("replayed")
    );
    assert!(
        v.validate(&seal(&consent(2, Answer::Left), beta_seed), NOW, &all)
            .is_ok()
    );
    assert_eq!(
        v.last_seq(&key_of(beta_seed), &Subject::Consent(group, bob.clone())),
        Some(2)
    );
}
