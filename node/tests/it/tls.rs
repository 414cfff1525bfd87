//! TLS: `--tls self-signed` serves HTTPS with `Secure` session cookies, and `--tls files`
//! serves exactly the certificate the operator gave it (checked with only that CA trusted).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::harness::*;

#[tokio::test]
async fn self_signed_serves_https_with_secure_cookies() {
    let node = Node::start(&["--tls", "self-signed"]);
    assert!(node.url.starts_with("https://"), "TLS node must advertise https: {}", node.url);
    let builder = reqwest::Client::builder().danger_accept_invalid_certs(true);
    let mut c = Client::with_builder(&node.url, builder);

    let r = c.get("/healthz").await;
    r.expect(200);
    assert_eq!(r.text.trim(), "ok");

    let r = c.register("alice", &pw("alice")).await;
    r.expect(201);
    let cookie = r.set_cookie("vc_session").unwrap_or_else(|| panic!("no vc_session cookie: {r:?}"));
    let attrs: Vec<String> = cookie.split(';').map(|a| a.trim().to_ascii_lowercase()).collect();
    assert!(attrs.iter().any(|a| a == "secure"), "vc_session must be Secure under TLS: {cookie}");
    assert!(attrs.iter().any(|a| a == "httponly"), "{cookie}");
    assert_eq!(c.session().await.body["user"]["id"], "alice@alpha");

    // Plain HTTP on the same port is not served as the API.
    let plain = node.url.replacen("https://", "http://", 1);
    let res = reqwest::Client::new().get(format!("{plain}/healthz")).send().await;
    assert!(!matches!(&res, Ok(r) if r.status().is_success()), "plain HTTP answered 2xx on the TLS port: {res:?}");
}

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki(cn: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, cn);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: leaf_key.serialize_pem() }
}

#[tokio::test]
async fn files_mode_serves_the_given_certificate() {
    let pki = make_pki("VoiceChat test CA");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let node = Node::start_with(
        None,
        &["--tls", "files"],
        &[("HTTPS_CERT", cert.to_str().unwrap()), ("HTTPS_KEY", key.to_str().unwrap())],
    );
    assert!(node.url.starts_with("https://"), "TLS node must advertise https: {}", node.url);

    // Only our CA is trusted: success proves the node serves our certificate.
    let trusting = || {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
    };
    let mut c = Client::with_builder(&node.url, trusting());
    let r = c.get("/healthz").await;
    r.expect(200);
    assert_eq!(r.text.trim(), "ok");
    let r = c.register("alice", &pw("alice")).await;
    r.expect(201);
    assert!(r.set_cookie("vc_session").is_some_and(|c| c.to_ascii_lowercase().contains("secure")), "{r:?}");

    // Control: a client trusting a different CA refuses the connection.
    let other = make_pki("Some other CA");
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(other.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = stranger.get(format!("{}/healthz", node.url)).send().await;
    assert!(res.is_err(), "a client trusting another CA must fail the handshake: {res:?}");
}
