//! The node's own STUN/TURN, against a real node process with a TURN client (webrtc-rs's):
//! members joining a room get expiring credentials and nobody else does; the TURN server
//! answers expired and forged credentials with 401; relays refuse loopback peers unless the
//! operator allows them but relay between two of the node's own relays; TURN works over
//! UDP, TCP and TLS with the node's certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use turn::client::{Client as TurnClient, ClientConfig};
use voicechat_node::turn::Secret;
use webrtc_util::Conn;

use crate::harness::*;

/// alice's room and her `/api/ice` answer for it.
async fn member_ice(node: &Node) -> (Client, String, String, Value) {
    let mut alice = registered(node, "alice").await;
    let gid = create_group(&mut alice, "Hall").await;
    let rid = create_room(&mut alice, &gid, "Main").await;
    let r = alice.get(&format!("/api/ice?group={gid}&room={rid}")).await;
    r.expect(200);
    let body = r.body.clone();
    (alice, gid, rid, body)
}

/// The node's TURN entry: (UDP/TCP address, username, credential).
fn turn_entry(ice: &Value) -> (SocketAddr, String, String) {
    let e = ice["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["username"].is_string())
        .unwrap_or_else(|| panic!("no TURN entry with credentials: {ice}"));
    let url = e["urls"][0].as_str().unwrap();
    let hostport = url.strip_prefix("turn:").unwrap().split('?').next().unwrap();
    (hostport.parse().unwrap(), e["username"].as_str().unwrap().into(), e["credential"].as_str().unwrap().into())
}

async fn turn_client(conn: Arc<dyn Conn + Send + Sync>, server: SocketAddr, user: &str, pass: &str) -> TurnClient {
    let c = TurnClient::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: user.into(),
        password: pass.into(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

async fn udp_client(server: SocketAddr, user: &str, pass: &str) -> TurnClient {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    turn_client(Arc::new(sock), server, user, pass).await
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn members_joining_a_room_get_expiring_credentials_and_nobody_else_does() {
    let node = Node::start(&["--ice-server", "stun:stun.example.org:3478"]);
    let (mut alice, gid, rid, ice) = member_ice(&node).await;
    let servers = ice["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "the node's TURN and STUN, then the operator's: {ice}");
    let (addr, user, cred) = turn_entry(&ice);
    let urls: Vec<&str> = servers[0]["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(urls, [format!("turn:{addr}?transport=udp"), format!("turn:{addr}?transport=tcp")], "{ice}");
    assert_eq!(servers[1]["urls"][0], format!("stun:{addr}"));
    assert_eq!(servers[2]["urls"], "stun:stun.example.org:3478", "the operator's come after the node's own");
    let expiry: u64 = user.split_once(':').unwrap().0.parse().unwrap();
    assert_eq!(user, format!("{expiry}:alice@alpha"));
    assert_eq!(ice["expires_at"].as_u64(), Some(expiry));
    let left = expiry - now();
    assert!((3600..=4 * 3600).contains(&left), "credentials last a few hours at most: {left} s");
    assert!(!cred.is_empty());
    let r = alice.get(&format!("/api/ice?group={gid}&room={rid}")).await;
    assert_eq!(r.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));

    // Without a room: STUN only, no secret of any kind.
    let r = alice.get("/api/ice").await;
    r.expect(200);
    assert!(r.body["ice_servers"].as_array().unwrap().iter().all(|e| e.get("credential").is_none()), "{:?}", r.body);
    assert!(r.body["expires_at"].is_null());
    // A room that does not exist, and a stranger to the group: nothing.
    alice.get(&format!("/api/ice?group={gid}&room=00000000000000000000000000000000")).await.expect(404);
    let mut bob = registered(&node, "bob").await;
    let r = bob.get(&format!("/api/ice?group={gid}&room={rid}")).await;
    r.expect(404);
    assert!(!r.text.contains("credential"), "{r:?}");
    // Logged out: nothing at all.
    Client::new(&node).get(&format!("/api/ice?group={gid}&room={rid}")).await.expect(401);

    // The credentials work: an allocation on the node's relay, in its port range.
    let c = udp_client(addr, &user, &cred).await;
    let relay = c.allocate().await.expect("allocation with minted credentials");
    let relayed = relay.local_addr().unwrap();
    assert!(relayed.port() >= 49152, "{relayed}");
    // No static secret reaches a page: the secret file's bytes appear nowhere in the answer.
    let secret = std::fs::read(node.data_dir().join("turn.secret")).unwrap();
    assert!(!ice.to_string().contains(&hex::encode(&secret)));
}

#[tokio::test]
async fn turned_off_the_node_hands_out_only_the_operators_servers() {
    let node = Node::start(&["--turn", "off", "--ice-server", "stun:stun.example.org"]);
    let (_alice, _, _, ice) = member_ice(&node).await;
    assert_eq!(ice["ice_servers"], serde_json::json!([{"urls": "stun:stun.example.org"}]));
    assert!(!node.data_dir().join("turn.secret").exists(), "no secret made for a service that is off");
}

#[tokio::test]
async fn expired_and_forged_credentials_get_401_from_the_turn_server() {
    let node = Node::start(&[]);
    let (_alice, _, _, ice) = member_ice(&node).await;
    let (addr, user, cred) = turn_entry(&ice);

    let forged = udp_client(addr, &user, "bm90IHRoZSBwYXNzd29yZA==").await;
    let err = forged.allocate().await.err().expect("a forged password is refused").to_string();
    assert!(err.contains("401"), "{err}");

    // Credentials the node itself minted, with the node's own secret, that expired.
    let secret = Secret::from_bytes(&std::fs::read(node.data_dir().join("turn.secret")).unwrap());
    let (old_user, old_pass, _) = secret.mint("alice@alpha", now() - 5 * 3600, Duration::from_secs(3600));
    let expired = udp_client(addr, &old_user, &old_pass).await;
    let err = expired.allocate().await.err().expect("expired credentials are refused").to_string();
    assert!(err.contains("401"), "{err}");

    // A username whose expiry was pushed later keeps its old password: refused too.
    let (exp, who) = user.split_once(':').unwrap();
    let stretched = format!("{}:{who}", exp.parse::<u64>().unwrap() + 86_400);
    let err = udp_client(addr, &stretched, &cred).await.allocate().await.err().expect("refused").to_string();
    assert!(err.contains("401"), "{err}");

    // Control: the real ones work, and the refusals were counted.
    udp_client(addr, &user, &cred).await.allocate().await.expect("valid credentials");
    let t = metrics_text(&node).await;
    assert!(metric_sum(&t, "voicechat_turn_refusals_total", &[("reason", "credentials")]) >= 2.0, "{t}");
    assert!(metric_sum(&t, "voicechat_turn_refusals_total", &[("reason", "expired")]) >= 1.0, "{t}");
}

/// Receives one datagram within `t`, or `None`.
async fn recv_within(conn: &(dyn Conn + Send + Sync), t: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 1500];
    match tokio::time::timeout(t, conn.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// A UDP socket on 127.0.0.1 whose port is outside `range` (not one of the node's relays).
async fn loopback_victim(range: (u16, u16)) -> UdpSocket {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let p = s.local_addr().unwrap().port();
        if !(range.0..=range.1).contains(&p) {
            return s;
        }
    }
}

/// Sends through `relay` to `peer` a few times (the first creates the permission).
async fn send_some(relay: &(dyn Conn + Send + Sync), peer: SocketAddr, what: &[u8]) {
    for _ in 0..3 {
        let _ = relay.send_to(what, peer).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_relay_refuses_loopback_peers_unless_allowed_and_relays_between_its_own_relays() {
    const RANGE: (u16, u16) = (45000, 45999);
    let ports = format!("{}-{}", RANGE.0, RANGE.1);
    let node = Node::start(&["--turn-relay-ports", &ports]);
    let (_alice, _, _, ice) = member_ice(&node).await;
    let (addr, user, cred) = turn_entry(&ice);

    let victim = loopback_victim(RANGE).await;
    let victim_addr = victim.local_addr().unwrap();
    let other_loopback = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let other_addr = other_loopback.local_addr().unwrap();
    let c1 = udp_client(addr, &user, &cred).await;
    let r1 = c1.allocate().await.unwrap();
    send_some(&r1, victim_addr, b"into the operator's network").await;
    send_some(&r1, other_addr, b"anywhere in 127.0.0.0/8").await;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(1), victim.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the relay sent to a loopback service: {got:?}");
    let got = tokio::time::timeout(Duration::from_millis(300), other_loopback.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the relay sent into 127.0.0.0/8: {got:?}");
    let t = metrics_text(&node).await;
    assert!(metric_sum(&t, "voicechat_turn_refusals_total", &[("reason", "peer")]) >= 2.0, "{t}");

    // Two browsers relayed by the same node talk through two of its relay ports.
    let c2 = udp_client(addr, &user, &cred).await;
    let r2 = c2.allocate().await.unwrap();
    let (a1, a2) = (r1.local_addr().unwrap(), r2.local_addr().unwrap());
    assert!((RANGE.0..=RANGE.1).contains(&a1.port()) && (RANGE.0..=RANGE.1).contains(&a2.port()), "{a1} {a2}");
    send_some(&r2, a1, b"pong").await; // r2 permits r1; r1 already permits 127.0.0.1
    let (data, from) = recv_within(&r1, Duration::from_secs(3)).await.expect("relay to relay");
    assert_eq!((data.as_slice(), from), (&b"pong"[..], a2));
    send_some(&r1, a2, b"ping").await;
    let (data, _) = recv_within(&r2, Duration::from_secs(3)).await.expect("and back");
    assert_eq!(data, b"ping");

    // An operator who allows loopback peers gets them relayed: the refusal above is policy.
    let open = Node::start(&["--turn-relay-ports", &ports, "--turn-allow-peer", "127.0.0.0/8"]);
    let (_a, _, _, ice) = member_ice(&open).await;
    let (addr, user, cred) = turn_entry(&ice);
    let c = udp_client(addr, &user, &cred).await;
    let r = c.allocate().await.unwrap();
    send_some(&r, victim_addr, b"allowed").await;
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), victim.recv_from(&mut buf))
        .await
        .expect("relayed to an allowed loopback peer")
        .unwrap();
    assert_eq!(&buf[..n], b"allowed");
}

/// TURN over a stream (TCP or TLS) as the TURN client's datagram socket: RFC 6062 framing.
struct StreamConn<S> {
    server: SocketAddr,
    local: SocketAddr,
    writer: Mutex<WriteHalf<S>>,
    inbound: Mutex<mpsc::Receiver<Vec<u8>>>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static> StreamConn<S> {
    fn new(stream: S, server: SocketAddr, local: SocketAddr) -> Self {
        let (mut r, w): (ReadHalf<S>, WriteHalf<S>) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(Some(())) = voicechat_node::turn::read_frame(&mut r, &mut buf).await {
                if tx.send(buf.clone()).await.is_err() {
                    break;
                }
            }
        });
        StreamConn { server, local, writer: Mutex::new(w), inbound: Mutex::new(rx) }
    }
}

#[async_trait]
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static> Conn for StreamConn<S> {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let msg = self.inbound.lock().await.recv().await.ok_or(webrtc_util::Error::ErrClosedListener)?;
        buf[..msg.len()].copy_from_slice(&msg);
        Ok((msg.len(), self.server))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.writer.lock().await.write_all(buf).await?;
        Ok(buf.len())
    }
    async fn send_to(&self, buf: &[u8], _: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Allocates through `client`, and checks data flows both ways between the relay and a
/// plain UDP peer.
async fn relays_both_ways(client: &TurnClient) {
    let relay = client.allocate().await.expect("allocation");
    let peer = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    send_some(&relay, peer_addr, b"over the stream").await;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), peer.recv_from(&mut buf)).await.expect("peer hears").unwrap();
    assert_eq!(&buf[..n], b"over the stream");
    assert_eq!(from, relay.local_addr().unwrap());
    peer.send_to(b"and back", from).await.unwrap();
    let (data, _) = recv_within(&relay, Duration::from_secs(3)).await.expect("client hears");
    assert_eq!(data, b"and back");
}

#[tokio::test]
async fn turn_over_tcp_and_over_tls_with_the_nodes_certificate() {
    // 127.0.0.3 is a loopback peer: allowed here so a plain socket can play the far browser.
    let node = Node::start(&["--tls", "self-signed", "--turn-allow-peer", "127.0.0.3"]);
    let builder = reqwest::Client::builder().danger_accept_invalid_certs(true);
    let mut alice = Client::with_builder(&node.url, builder);
    alice.register("alice", &pw("alice")).await.expect(201);
    let gid = create_group(&mut alice, "Hall").await;
    let rid = create_room(&mut alice, &gid, "Main").await;
    let r = alice.get(&format!("/api/ice?group={gid}&room={rid}")).await;
    r.expect(200);
    let (addr, user, cred) = turn_entry(&r.body);
    let urls = r.body["ice_servers"][0]["urls"].as_array().unwrap().clone();
    let turns = urls.iter().filter_map(|u| u.as_str()).find(|u| u.starts_with("turns:")).expect("a turns: URL");
    let tls_port: u16 = turns.rsplit_once(':').unwrap().1.split('?').next().unwrap().parse().unwrap();

    // TCP, on the same port number as UDP.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("TURN listens on TCP too");
    let local = tcp.local_addr().unwrap();
    let c = turn_client(Arc::new(StreamConn::new(tcp, addr, local)), addr, &user, &cred).await;
    let mapped = c.send_binding_request().await.expect("STUN over TCP");
    assert_eq!(mapped, local, "the server sees the client's address");
    relays_both_ways(&c).await;

    // TLS, trusting only the node's self-signed certificate.
    let pem = std::fs::read(node.data_dir().join("tls/self-signed.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls_addr = SocketAddr::new(addr.ip(), tls_port);
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.expect("turns: listener");
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("the node's certificate");
    let c = turn_client(Arc::new(StreamConn::new(tls, tls_addr, local)), tls_addr, &user, &cred).await;
    relays_both_ways(&c).await;
    let t = alice.get("/metrics").await.text;
    assert!(metric_sum(&t, "voicechat_turn_relayed_bytes_total", &[("direction", "in")]) > 0.0, "{t}");
    assert!(metric_sum(&t, "voicechat_turn_relayed_bytes_total", &[("direction", "out")]) > 0.0, "{t}");
    // The gauge is sampled from the server every few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let t = alice.get("/metrics").await.text;
        if metric_sum(&t, "voicechat_turn_allocations", &[]) == 2.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the allocation gauge never showed the two allocations:\n{t}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
