//! The browsers' end-to-end encryption of call audio (SPEC.md, "End-to-end encryption of call
//! audio"), checked by a second implementation: `vectors/e2ee/*.json`, written by the web
//! client's JavaScript (WebCrypto), are recomputed here from their inputs with other code —
//! the `sframe` crate for RFC 9605 frames and headers, RustCrypto's `hkdf`, `p256` and `aes-kw`
//! for key derivation, ratchet and key wrap, `sha2` for the safety code.

use std::path::PathBuf;

use aes_kw::{KeyInit, KwAes128};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use serde_json::Value;
use sframe::CipherSuite;
use sframe::frame::{EncryptedFrame, MediaFrame, SingleUseCounter};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};
use sha2::{Digest, Sha256};

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors/e2ee")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("hex")
}

fn uint(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().expect("a decimal integer"),
        v => v.as_u64().expect("an unsigned integer"),
    }
}

fn hkdf_sha256(ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Hkdf::<Sha256>::new(Some(&[]), ikm)
        .expand(info, &mut out)
        .expect("HKDF length");
    out
}

fn header(kid: u64, ctr: u64) -> Vec<u8> {
    let h = SframeHeader::new(kid, ctr);
    let mut buf = vec![0; h.len()];
    h.serialize(&mut buf).expect("serialize");
    buf
}

/// RFC 9605 §4.4.2 derive_key_salt for suite 0x0004, by hand: (sframe_key, sframe_salt).
fn key_salt(base_key: &[u8], kid: u64) -> (Vec<u8>, Vec<u8>) {
    let label = |text: &str| [text.as_bytes(), &kid.to_be_bytes(), &4u16.to_be_bytes()].concat();
    (
        hkdf_sha256(base_key, &label("SFrame 1.0 Secret key "), 16),
        hkdf_sha256(base_key, &label("SFrame 1.0 Secret salt "), 12),
    )
}

/// header || ciphertext || tag of `pt` under (base_key, kid, ctr), by the `sframe` crate.
fn seal(base_key: &[u8], kid: u64, ctr: u64, pt: &[u8], metadata: &[u8]) -> Vec<u8> {
    let key = EncryptionKey::derive_from(CipherSuite::AesGcm128Sha256, kid, base_key).expect("key");
    let frame = MediaFrame::try_with_meta_data(&mut SingleUseCounter::new(ctr), pt, metadata)
        .expect("frame");
    frame
        .encrypt(&key)
        .expect("encrypts")
        .sframe_cipher_text()
        .to_vec()
}

/// The plaintext of `frame` under (base_key, kid), by the `sframe` crate.
fn open(
    base_key: &[u8],
    kid: u64,
    frame: &[u8],
    metadata: &[u8],
) -> sframe::error::Result<Vec<u8>> {
    let key = DecryptionKey::derive_from(CipherSuite::AesGcm128Sha256, kid, base_key)?;
    let encrypted = EncryptedFrame::try_with_meta_data(frame, metadata)?;
    Ok(encrypted.decrypt(&key)?.payload().to_vec())
}

#[test]
fn rfc9605_headers() {
    let v = load("rfc9605.json");
    let cases = v["header"].as_array().expect("header vectors");
    assert!(cases.len() > 200, "the RFC's full header set");
    for c in cases {
        let (kid, ctr, encoded) = (uint(&c["kid"]), uint(&c["ctr"]), bytes(&c["encoded"]));
        assert_eq!(header(kid, ctr), encoded, "kid {kid} ctr {ctr}");
        let parsed = SframeHeader::deserialize(&encoded).expect("parses");
        assert_eq!(
            (parsed.key_id(), parsed.counter(), parsed.len()),
            (kid, ctr, encoded.len())
        );
    }
}

#[test]
fn rfc9605_aes_128_gcm_sha256_128() {
    let v = load("rfc9605.json");
    let cases = v["sframe"].as_array().expect("sframe vectors");
    assert_eq!(cases.len(), 1);
    for c in cases {
        assert_eq!(uint(&c["cipher_suite"]), 4);
        let (kid, ctr) = (uint(&c["kid"]), uint(&c["ctr"]));
        let base = bytes(&c["base_key"]);
        let secret = Hkdf::<Sha256>::extract(Some(&[]), &base).0;
        assert_eq!(secret.to_vec(), bytes(&c["sframe_secret"]));
        let (key, salt) = key_salt(&base, kid);
        assert_eq!(key, bytes(&c["sframe_key"]));
        assert_eq!(salt, bytes(&c["sframe_salt"]));
        let (pt, metadata, ct) = (bytes(&c["pt"]), bytes(&c["metadata"]), bytes(&c["ct"]));
        assert_eq!(seal(&base, kid, ctr, &pt, &metadata), ct);
        assert_eq!(open(&base, kid, &ct, &metadata).expect("decrypts"), pt);
        assert!(
            open(&base, kid, &ct, &[]).is_err(),
            "metadata is authenticated"
        );
    }
}

#[test]
fn voicechat_kids_ratchet_and_frames() {
    let v = load("voicechat.json");
    assert_eq!(v["cipher_suite"], 4);
    for k in v["kids"].as_array().expect("kids") {
        let (tag, index, kid) = (uint(&k["tag"]), uint(&k["index"]), uint(&k["kid"]));
        assert!(tag <= u64::from(u32::MAX) && index <= 0xffff);
        assert_eq!(kid, tag * 65536 + index);
        assert_eq!(header(kid, 0), bytes(&k["header_ctr0"]));
    }

    let r = &v["ratchet"];
    assert_eq!(r["info"], "VoiceChat 1 ratchet");
    let mut key = bytes(&r["base_key"]);
    let mut chain = vec![key.clone()];
    for next in r["chain"].as_array().expect("chain") {
        key = hkdf_sha256(&key, b"VoiceChat 1 ratchet", 16);
        assert_eq!(key, bytes(next));
        chain.push(key.clone());
    }

    for f in v["frames"].as_array().expect("frames") {
        let (kid, ctr, index) = (uint(&f["kid"]), uint(&f["ctr"]), uint(&f["index"]));
        assert_eq!(kid, uint(&f["tag"]) * 65536 + index);
        let base = bytes(&f["base_key"]);
        assert_eq!(
            base,
            chain[usize::try_from(index).expect("small")],
            "frame keys come from the ratchet chain"
        );
        let (key, salt) = key_salt(&base, kid);
        assert_eq!(key, bytes(&f["sframe_key"]));
        assert_eq!(salt, bytes(&f["sframe_salt"]));
        let mut nonce = salt.clone();
        for (n, c) in nonce[4..].iter_mut().zip(ctr.to_be_bytes()) {
            *n ^= c;
        }
        assert_eq!(nonce, bytes(&f["nonce"]));
        assert_eq!(header(kid, ctr), bytes(&f["header"]));
        let (pt, ct) = (bytes(&f["pt"]), bytes(&f["ct"]));
        assert_eq!(
            seal(&base, kid, ctr, &pt, &[]),
            ct,
            "the whole Opus frame is plaintext, no metadata"
        );
        assert_eq!(open(&base, kid, &ct, &[]).expect("decrypts"), pt);
        let mut tampered = ct.clone();
        *tampered.last_mut().expect("non-empty") ^= 1;
        assert!(open(&base, kid, &tampered, &[]).is_err());
        assert!(open(&base, kid + 1, &ct, &[]).is_err(), "another KID");
    }
}

fn keypair(d: &Value, pub_: &Value) -> (SecretKey, Vec<u8>) {
    let secret = SecretKey::from_slice(&bytes(d)).expect("a valid scalar");
    let public = secret.public_key().to_sec1_point(false).as_bytes().to_vec();
    assert_eq!(public, bytes(pub_), "the public key of the private scalar");
    assert_eq!(public.len(), 65);
    (secret, public)
}

#[test]
fn voicechat_key_wrap() {
    let v = load("voicechat.json");
    for w in v["wraps"].as_array().expect("wraps") {
        let (sender, sender_pub) = keypair(&w["sender_d"], &w["sender_pub"]);
        let (recipient, recipient_pub) = keypair(&w["recipient_d"], &w["recipient_pub"]);
        let kid = uint(&w["kid"]);
        let to = |p: &[u8]| PublicKey::from_sec1_bytes(p).expect("a point");

        let shared = sender.diffie_hellman(&to(&recipient_pub));
        let shared = shared.raw_secret_bytes().to_vec();
        assert_eq!(shared, bytes(&w["shared"]));
        let back = recipient.diffie_hellman(&to(&sender_pub));
        assert_eq!(
            back.raw_secret_bytes().to_vec(),
            shared,
            "ECDH agrees both ways"
        );

        let info = [
            b"VoiceChat 1 key wrap".as_slice(),
            &sender_pub,
            &recipient_pub,
            &kid.to_be_bytes(),
        ]
        .concat();
        assert_eq!(info, bytes(&w["kek_info"]));
        let kek = hkdf_sha256(&shared, &info, 16);
        assert_eq!(kek, bytes(&w["kek"]));

        let base = bytes(&w["base_key"]);
        let kw = KwAes128::new_from_slice(&kek).expect("16-byte KEK");
        let mut buf = [0u8; 24];
        assert_eq!(
            kw.wrap_key(&base, &mut buf).expect("wraps"),
            bytes(&w["wrapped"]).as_slice()
        );
        let mut out = [0u8; 16];
        assert_eq!(
            kw.unwrap_key(&buf, &mut out).expect("unwraps"),
            base.as_slice()
        );

        // The binding: a KEK for any other KID (or other pubs) fails AES-KW's integrity check.
        let other = [
            b"VoiceChat 1 key wrap".as_slice(),
            &sender_pub,
            &recipient_pub,
            &(kid + 1).to_be_bytes(),
        ]
        .concat();
        let wrong = KwAes128::new_from_slice(&hkdf_sha256(&shared, &other, 16)).expect("KEK");
        assert!(wrong.unwrap_key(&buf, &mut out).is_err());
        let swapped = [
            b"VoiceChat 1 key wrap".as_slice(),
            &recipient_pub,
            &sender_pub,
            &kid.to_be_bytes(),
        ]
        .concat();
        let wrong = KwAes128::new_from_slice(&hkdf_sha256(&shared, &swapped, 16)).expect("KEK");
        assert!(wrong.unwrap_key(&buf, &mut out).is_err());
    }
}

#[test]
fn voicechat_safety_code() {
    let v = load("voicechat.json");
    for s in v["safety"].as_array().expect("safety") {
        let mut entries: Vec<(String, Vec<u8>, String)> = s["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().expect("id").to_owned(),
                    bytes(&e["pub"]),
                    e["fp"].as_str().expect("fp").to_owned(),
                )
            })
            .collect();
        entries.sort_by(|a, b| a.1.cmp(&b.1));
        let mut input = b"VoiceChat 1 safety code".to_vec();
        for (id, public, fp) in &entries {
            for (i, field) in [id.as_bytes(), public, fp.as_bytes()]
                .into_iter()
                .enumerate()
            {
                if i != 1 {
                    input.extend_from_slice(
                        &u16::try_from(field.len()).expect("short").to_be_bytes(),
                    );
                }
                input.extend_from_slice(field);
            }
        }
        assert_eq!(input, bytes(&s["input"]));
        let h = Sha256::digest(&input);
        assert_eq!(h.to_vec(), bytes(&s["sha256"]));
        let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % 10u64.pow(16);
        let digits = format!("{n:016}");
        let code = [
            &digits[0..4],
            &digits[4..8],
            &digits[8..12],
            &digits[12..16],
        ]
        .join(" ");
        assert_eq!(code, s["code"].as_str().expect("code"));
    }
}

#[test]
fn voicechat_message_examples() {
    let v = load("voicechat.json");
    let (hello, key, w) = (
        &v["messages"]["hello"],
        &v["messages"]["key"],
        &v["wraps"][0],
    );
    let b64u = |x: &Value| base64url(x.as_str().expect("text"));
    assert_eq!(hello["v"], 1);
    assert_eq!(hello["e2ee"], true);
    assert_eq!(b64u(&hello["pub"]), bytes(&w["sender_pub"]));
    assert_eq!(key["v"], 1);
    assert_eq!(b64u(&key["pub"]), bytes(&w["sender_pub"]));
    assert_eq!(uint(&key["kid"]), uint(&w["kid"]));
    assert_eq!(b64u(&key["wrapped"]), bytes(&w["wrapped"]));
    assert!(key["fp"].as_str().expect("fp").starts_with("sha-256 "));
}

/// base64url without padding (RFC 4648 §5), strictly.
fn base64url(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(text.len() % 4, 1, "not base64url");
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let d = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64url alphabet, no padding");
        bits = (bits << 6) | u32::try_from(d).expect("< 64");
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).expect("a byte"));
        }
    }
    out
}

/// SPEC.md Appendix A's examples are the vectors' values.
#[test]
fn spec_examples_are_the_vectors() {
    let spec = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("SPEC.md"))
        .expect("SPEC.md");
    let start = spec
        .find("## Appendix A. End-to-end encryption of call audio")
        .expect("Appendix A");
    let appendix = &spec[start..];
    let v = load("voicechat.json");
    let (hello, key) = (&v["messages"]["hello"], &v["messages"]["key"]);
    for needle in [
        format!("\"pub\":{}", hello["pub"]),
        format!("\"fp\":{}", hello["fp"]),
        format!("\"kid\":{}", key["kid"]),
        format!("\"wrapped\":{}", key["wrapped"]),
        format!("`{}`", v["safety"][0]["code"].as_str().expect("code")),
        format!("`0x{:x}`", uint(&v["kids"][0]["tag"])),
        format!(
            "`{}`",
            v["kids"][0]["header_ctr0"].as_str().expect("header")
        ),
    ] {
        assert!(
            appendix.contains(&needle),
            "SPEC.md Appendix A lacks {needle}"
        );
    }
}
