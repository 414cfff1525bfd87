//! Open federation between DNS names, verified the way Matrix discovers servers: alpha.test
//! and beta.test serve HTTPS with certificates of a test CA and pin nobody. Adding
//! carol@beta.test on alpha fetches https://beta.test/.well-known/voicechat/node, binds the
//! name to the key it serves, dials the card's address; beta verifies alpha the same way;
//! carol accepts and sees the group. A stranger claiming a DNS name whose origin serves
//! another key, or whose certificate does not verify for it, is not believed.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use voicechat_node::federation::net::{Multiaddr, Net, NetConfig, PeerId, Proto};
use voicechat_protocol::ids::NodeName;
use voicechat_protocol::rpc::{self, PushRequest};
use voicechat_protocol::{Envelope, NodeCard, NodeKey, Record, SigningKey};

use crate::harness::*;

struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "VoiceChat federation test CA");
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> String {
        self.dir.path().join("ca.pem").to_str().unwrap().to_owned()
    }

    /// A certificate for `name` (and localhost, for the test's own client): (cert, key) paths.
    fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.path().join(format!("{name}.crt")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.to_str().unwrap().to_owned(), k.to_str().unwrap().to_owned())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tls_client(node: &Node, pki: &Pki) -> Client {
    let b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap());
    Client::with_builder(&node.url, b)
}

#[tokio::test]
async fn dns_names_are_bound_by_their_https_origin() {
    let pki = Pki::new();
    let (pa, pb) = (free_port(), free_port());
    let start = |name: &str, port: u16, other: &str, other_port: u16| {
        let (cert, key) = pki.leaf(name);
        let listen = format!("127.0.0.1:{port}");
        let resolve = format!("{other}=127.0.0.1:{other_port}");
        // A third name resolved to this node's port: its certificate does not cover it.
        let wrong = format!("gamma.test=127.0.0.1:{port}");
        let args = [
            "--listen", &listen, "--tls", "files", "--cert", &cert, "--key", &key, "--federation", "open",
            "--federation-ca", &pki.ca_path(), "--federation-resolve", &resolve, "--federation-resolve", &wrong,
        ];
        Node::start_peered_with(None, name, &[], &args)
    };
    let beta = start("beta.test", pb, "alpha.test", pa);
    let alpha = start("alpha.test", pa, "beta.test", pb);
    assert!(alpha.url.starts_with("https://"), "{}", alpha.url);

    // The card is served under the node's own certificate.
    let card = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .resolve("beta.test", format!("127.0.0.1:{pb}").parse().unwrap())
        .build()
        .unwrap()
        .get(format!("https://beta.test:{pb}/.well-known/voicechat/node"))
        .send()
        .await
        .unwrap();
    assert_eq!(card.status().as_u16(), 200);
    let env = Envelope::decode(&card.bytes().await.unwrap()).unwrap();
    assert!(matches!(env.open().unwrap(), Record::NodeCard(c) if c.name.as_str() == "beta.test"));

    let mut alice = tls_client(&alpha, &pki);
    alice.register("alice", &pw("alice")).await.expect(201);
    let mut carol = tls_client(&beta, &pki);
    carol.register("carol", &pw("carol")).await.expect(201);
    let gid = create_group(&mut alice, "Across the web").await;
    // Nobody pinned anybody: alpha verifies beta.test by its origin, then adds carol.
    add_member(&mut alice, &gid, "carol@beta.test").await;
    accept_invitation(&mut carol, &gid).await;
    let r = poll_get(&mut carol, &format!("/api/groups/{gid}"), "carol sees the group", |r| r.status == 200).await;
    assert_eq!(r.body["home"], "alpha.test");
    for n in [&alpha, &beta] {
        // Federation exports its gauges at most once a second: a fast exchange can be over
        // before the first export.
        let deadline = std::time::Instant::now() + FED_WAIT;
        let mut text = metrics_text_tls(n, &pki).await;
        while metric_sum(&text, "voicechat_federation_peers", &[]) != 1.0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            text = metrics_text_tls(n, &pki).await;
        }
        assert_eq!(metric_sum(&text, "voicechat_federation_peers", &[]), 1.0, "{} is connected to the other", n.name);
        let verified = metric_sum(&text, "voicechat_federation_records_total", &[("kind", "node_card"), ("verdict", "accepted")]);
        assert!(verified >= 1.0, "{} bound the other's card", n.name);
    }

    // A stranger claims beta.test (its origin serves beta's key) and gamma.test (whose
    // origin's certificate does not cover it): neither is believed.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let key = SigningKey::from_bytes(&seed);
    let (net, _events) = Net::start(NetConfig::open(seed, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], vec![alpha.p2p.parse::<Multiaddr>().unwrap()]))
        .await
        .unwrap();
    let alpha_peer: PeerId = alpha.peer_id().parse().unwrap();
    let deadline = std::time::Instant::now() + FED_WAIT;
    while !net.connected().await.contains(&alpha_peer) {
        assert!(std::time::Instant::now() < deadline, "the stranger could not connect to an open node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claim = |name: &str, seq: u64| {
        let card = NodeCard { key: NodeKey::from_signing_key(&key), seq, url: format!("https://{name}"), name: NodeName::new(name).unwrap(), addrs: vec![] };
        Envelope::seal(&Record::NodeCard(card), &key).encode()
    };
    let req = rpc::encode(&PushRequest { records: vec![claim("beta.test", 1).into()] });
    net.request(alpha_peer, Proto::Push, req).await.unwrap();
    let req = rpc::encode(&PushRequest { records: vec![claim("gamma.test", 2).into()] });
    net.request(alpha_peer, Proto::Push, req).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stderr = alpha.stderr();
    assert!(stderr.contains("could not verify a node name"), "alpha logged the failed checks:\n{stderr}");
    // beta.test is still beta: carol's group works on.
    let room = create_room(&mut alice, &gid, "Still beta").await;
    poll_get(&mut carol, &format!("/api/groups/{gid}"), "the new room on beta", |r| room_ids(&r.body).contains(&room)).await;
    net.shutdown().await;
}

async fn metrics_text_tls(node: &Node, pki: &Pki) -> String {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    client.get(format!("{}/metrics", node.url)).send().await.unwrap().text().await.unwrap()
}
