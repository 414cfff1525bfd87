//! Every file in `vectors/` is checked field by field against the code, and the files are
//! exactly what the generator produces, so SPEC.md's vectors and the crate cannot drift.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use voicechat_protocol::ids::{GroupId, NodeName, UserId};
use voicechat_protocol::{Authorities, Envelope, NodeKey, Record, Validator, signing_input};

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
    let sk = SigningKey::from_bytes(&unhex(&v["seed"]).try_into().expect("32-byte seed"));
    let signer: NodeKey = parse(&v["signer"]);
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
    let honest = sk.sign(&input).to_bytes().to_vec();
    assert_eq!(sig == honest, verdict != "bad_signature", "{name}: sig_hex");

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
        files.len() >= 25,
        "expected the full vector set, found {}",
        files.len()
    );
    let mut verdicts = HashSet::new();
    for (name, text) in &files {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v["name"].as_str(), Some(name.as_str()), "file name matches");
        verdicts.insert(check(name, &v));
    }
    for needed in [
        "valid",
        "bad_signature",
        "wrong_authority",
        "replayed",
        "expired",
        "too_large",
        "non_canonical",
        "trailing_bytes",
        "unknown_kind",
        "malformed",
        "not_member",
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
