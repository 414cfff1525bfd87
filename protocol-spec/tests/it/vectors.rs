//! Every file in `vectors/` is checked field by field against the code, and the files are
//! exactly what the generator produces, so SPEC.md's vectors and the crate cannot drift.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use voicechat_protocol::ids::{GroupId, NodeName, UserId};
use voicechat_protocol::{
    Authorities, Envelope, NodeKey, ProtocolError, Record, Validator, signing_input,
};

/// The receiver's knowledge, from a vector's `context`.
struct Context {
    now: u64,
    nodes: HashMap<NodeName, NodeKey>,
    groups: HashMap<GroupId, NodeName>,
    members: HashSet<(GroupId, UserId)>,
    before: Vec<Vec<u8>>,
}

impl Authorities for Context {
    fn node_key(&self, node: &NodeName) -> Option<NodeKey> {
        self.nodes.get(node).copied()
    }
    fn group_home(&self, group: &GroupId) -> Option<NodeName> {
        self.groups.get(group).cloned()
    }
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.members.contains(&(*group, user.clone()))
    }
}

fn parse<T: std::str::FromStr>(v: &Value) -> T
where
    T::Err: std::fmt::Debug,
{
    v.as_str().expect("a string").parse().expect("parses")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn context(v: &Value) -> Context {
    let obj = |k: &str| v[k].as_object().expect("an object").clone();
    Context {
        now: v["now"].as_u64().expect("now"),
        nodes: obj("nodes")
            .iter()
            .map(|(k, v)| (k.parse().expect("name"), parse(v)))
            .collect(),
        groups: obj("groups")
            .iter()
            .map(|(k, v)| (k.parse().expect("group"), parse(v)))
            .collect(),
        members: obj("members")
            .iter()
            .flat_map(|(g, users)| {
                let g: GroupId = g.parse().expect("group");
                users
                    .as_array()
                    .expect("users")
                    .iter()
                    .map(move |u| (g, parse(u)))
            })
            .collect(),
        before: v["accepted_before"]
            .as_array()
            .expect("list")
            .iter()
            .map(unhex)
            .collect(),
    }
}

/// Checks one vector; returns its verdict for the summary.
fn check(name: &str, v: &Value) -> String {
    let verdict = v["verdict"].as_str().expect("verdict").to_owned();
    let signer: NodeKey = parse(&v["signer"]);
    // No seed: the signer is not a valid key (no secret key has it) and the verdict says so.
    let sk = match &v["seed"] {
        Value::Null => {
            assert_eq!(verdict, "bad_key", "{name}: a vector without seed");
            assert!(v["signer_peer_id"].is_null(), "{name}: no peer id");
            None
        }
        seed => {
            let sk = SigningKey::from_bytes(&unhex(seed).try_into().expect("32-byte seed"));
            assert_eq!(
                NodeKey::from_signing_key(&sk),
                signer,
                "{name}: seed and signer disagree"
            );
            assert_eq!(
                v["signer_peer_id"].as_str(),
                Some(signer.peer_id().as_str()),
                "{name}: peer id"
            );
            Some(sk)
        }
    };

    // The readable record encodes to exactly canonical_hex, and decodes back.
    if !v["record"].is_null() {
        let tagged = serde_json::json!({ "kind": v["kind"], "record": v["record"] });
        let record: Record = serde_json::from_value(tagged).expect("record JSON");
        let canonical = unhex(&v["canonical_hex"]);
        assert_eq!(record.encode(), canonical, "{name}: canonical_hex");
        if verdict == "valid" {
            assert_eq!(
                Record::decode(record.kind(), &canonical).as_ref(),
                Ok(&record),
                "{name}"
            );
        }
    }

    // The signing input and signature are those of the payload carried.
    let payload = unhex(&v["payload_hex"]);
    let kind = v["kind"].as_str().expect("kind");
    let input = signing_input(kind, &payload);
    assert_eq!(
        input,
        unhex(&v["signing_input_hex"]),
        "{name}: signing_input_hex"
    );
    let sig = unhex(&v["sig_hex"]);
    match &sk {
        Some(sk) => {
            let honest = sk.sign(&input).to_bytes().to_vec();
            assert_eq!(sig == honest, verdict != "bad_signature", "{name}: sig_hex");
        }
        None => assert_eq!(
            signer.verify_strict(&input, &sig.clone().try_into().expect("64 bytes")),
            Err(ProtocolError::BadKey),
            "{name}: the signer is not a valid key"
        ),
    }

    // When the wire bytes are an envelope, it carries exactly those fields.
    let wire = unhex(&v["envelope_hex"]);
    if let Ok(env) = Envelope::decode(&wire) {
        assert_eq!(
            (env.kind.as_str(), &env.payload, env.signer),
            (kind, &payload, signer),
            "{name}"
        );
        assert_eq!(env.sig.to_vec(), sig, "{name}: envelope sig");
        assert_eq!(env.encode(), wire, "{name}: envelope re-encoding");
    }

    // The verdict.
    let ctx = context(&v["context"]);
    let mut validator = Validator::new();
    for earlier in &ctx.before {
        validator
            .validate(earlier, ctx.now, &ctx)
            .expect("accepted_before entries are valid");
    }
    let got = match validator.validate(&wire, ctx.now, &ctx) {
        Ok(_) => "valid".to_owned(),
        Err(e) => e.code().to_owned(),
    };
    assert_eq!(got, verdict, "{name}: verdict");
    verdict
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(vector_dir())
        .expect("vectors/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_vector_file_holds() {
    let files = files();
    assert!(
        files.len() >= 45,
        "expected the full vector set, found {}",
        files.len()
    );
    let mut verdicts = HashSet::new();
    for (name, text) in &files {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v["name"].as_str(), Some(name.as_str()), "file name matches");
        verdicts.insert(check(name, &v));
    }
    // Every verdict of SPEC.md §12.1 has at least one vector.
    for needed in [
        "valid",
        "too_large",
        "malformed",
        "non_canonical",
        "trailing_bytes",
        "unknown_kind",
        "bad_key",
        "bad_signature",
        "invalid_field",
        "unknown_node",
        "unknown_group",
        "wrong_authority",
        "not_member",
        "expired",
        "expiry_too_far",
        "replayed",
    ] {
        assert!(verdicts.contains(needed), "no vector with verdict {needed}");
    }
}

#[test]
fn vector_files_are_what_the_generator_writes() {
    let on_disk = files();
    let generated: Vec<(String, String)> = {
        let mut g: Vec<_> = super::generator::vectors()
            .into_iter()
            .map(|(n, v)| (n, serde_json::to_string_pretty(&v).expect("json") + "\n"))
            .collect();
        g.sort();
        g
    };
    let names = |l: &[(String, String)]| l.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&on_disk),
        names(&generated),
        "run: cargo run -p voicechat-protocol --example make_vectors"
    );
    for ((name, disk), (_, fresh)) in on_disk.iter().zip(&generated) {
        assert!(
            disk == fresh,
            "vectors/{name}.json differs from the generator"
        );
    }
}

/// The faulty vectors fail for exactly the reason their description states, not merely with
/// the same code: the detailed error of each, as the crate reports it.
#[test]
fn faulty_vectors_break_the_rule_they_name() {
    let expected = [
        ("bad_key_non_canonical", "BadKey"),
        ("bad_key_off_curve", "BadKey"),
        ("bad_key_small_order", "BadKey"),
        ("bad_signature", "BadSignature"),
        ("bad_signature_payload", "BadSignature"),
        (
            "malformed_missing_field",
            "Schema(\"Custom(\\\"missing field `muted`\\\")\")",
        ),
        ("malformed_truncated", "Malformed(Truncated)"),
        ("non_canonical_duplicate_key", "NonCanonical(KeyOrder)"),
        ("non_canonical_envelope", "NonCanonical(NotShortest)"),
        ("non_canonical_float", "NonCanonical(ForbiddenSimple)"),
        ("non_canonical_indefinite_map", "NonCanonical(Indefinite)"),
        ("non_canonical_indefinite_text", "NonCanonical(Indefinite)"),
        ("non_canonical_integer", "NonCanonical(NotShortest)"),
        ("non_canonical_key_order", "NonCanonical(KeyOrder)"),
        ("non_canonical_tag", "NonCanonical(Tag)"),
        ("non_canonical_too_deep", "NonCanonical(TooDeep)"),
        ("non_canonical_unknown_field", "NonCanonical(Reencode)"),
        ("non_canonical_upper_case", "NonCanonical(Reencode)"),
        (
            "oversize_envelope",
            "TooLarge { what: \"envelope\", len: 65537, max: 65536 }",
        ),
        (
            "oversize_presence",
            "TooLarge { what: \"presence\", len: 1126, max: 1024 }",
        ),
        ("trailing_bytes_envelope", "TrailingBytes(1)"),
        ("trailing_bytes_payload", "TrailingBytes(1)"),
        ("unknown_node", "UnknownNode(NodeName(\"gamma\"))"),
        (
            "consent_unknown_group",
            "UnknownGroup(GroupId(62626262626262626262626262626262))",
        ),
        (
            "consent_wrong_authority",
            "WrongAuthority { kind: \"consent\", reason: \"signer is not the user's home node\" }",
        ),
        (
            "consent_not_member",
            "NotMember(UserId { name: UserName(\"carol\"), node: NodeName(\"beta\") })",
        ),
    ];
    let files: HashMap<String, String> = files().into_iter().collect();
    for (name, want) in expected {
        let v: Value = serde_json::from_str(&files[name]).expect("json");
        let ctx = context(&v["context"]);
        let wire = unhex(&v["envelope_hex"]);
        let err = Validator::new()
            .validate(&wire, ctx.now, &ctx)
            .expect_err(name);
        assert_eq!(format!("{err:?}"), want, "{name}");
    }
}

/// SPEC.md §9.1's digest example: the group of the vectors, whose live persistent records
/// are `group_info_valid`, `room_info_valid` and `membership_valid` (the removed membership
/// of carol is a tombstone and left out). Computed independently with Python's hashlib.
#[test]
fn group_digest_of_the_vector_group() {
    let files: HashMap<String, String> = files().into_iter().collect();
    let envelope = |name: &str| {
        let v: Value = serde_json::from_str(&files[name]).expect("json");
        unhex(&v["envelope_hex"])
    };
    let live = ["group_info_valid", "room_info_valid", "membership_valid"].map(envelope);
    let digest = voicechat_protocol::rpc::group_digest(live.iter().map(Vec::as_slice));
    assert_eq!(
        digest.to_string(),
        "c4eab8dbd740471df6ec56643195d3875305f5d8277ef201c640fd34ddc44d5a"
    );
    let reordered = [&live[2], &live[0], &live[1], &live[0]];
    assert_eq!(
        voicechat_protocol::rpc::group_digest(reordered.map(Vec::as_slice)),
        digest
    );
}

/// SPEC.md §11 lists every vector file in the row of its verdict.
#[test]
fn spec_lists_every_vector_under_its_verdict() {
    let spec = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("SPEC.md"))
        .expect("SPEC.md");
    let start = spec.find("## 11. Test vectors").expect("§11");
    let end = spec[start..].find("## 12.").expect("§12") + start;
    let rows: HashMap<&str, &str> = spec[start..end]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let verdict = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((verdict, *cells.get(2)?))
        })
        .collect();
    for (name, text) in files() {
        let v: Value = serde_json::from_str(&text).expect("json");
        let verdict = v["verdict"].as_str().expect("verdict");
        let row = rows
            .get(verdict)
            .unwrap_or_else(|| panic!("SPEC.md §11 has no row for {verdict}"));
        assert!(
            row.contains(&format!("`{name}`")),
            "SPEC.md §11 does not list {name} under {verdict}"
        );
    }
}
