//! Two or three real nets on 127.0.0.1 (port 0) exchanging requests over TCP and QUIC,
//! with the allow and block lists in force; every wait is a poll with a deadline.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout};

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn seed() -> [u8; 32] {
    let mut s = [0; 32];
    getrandom::fill(&mut s).unwrap();
    s
}

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

async fn start(
    seed: [u8; 32],
    listen: Vec<Multiaddr>,
    peers: Vec<Multiaddr>,
) -> (Net, Receiver<NetEvent>) {
    Net::start(NetConfig::open(seed, listen, peers)).await.unwrap()
}

/// The first listen address of `net` that uses `proto` (`"tcp"` or `"quic-v1"`), with `/p2p/`.
async fn dial_addr(net: &Net, proto: &str) -> Multiaddr {
    let found = net
        .listen_addrs()
        .await
        .into_iter()
        .find(|a| a.iter().any(|p| p.tag() == proto))
        .unwrap_or_else(|| panic!("no {proto} address"));
    found.with(Protocol::P2p(net.local_peer_id()))
}

/// Waits for the first event `f` picks, dropping others (unanswered requests close).
async fn wait_for<T>(rx: &mut Receiver<NetEvent>, mut f: impl FnMut(NetEvent) -> Option<T>) -> T {
    timeout(DEADLINE, async {
        loop {
            if let Some(t) = f(rx.recv().await.expect("event channel open")) {
                return t;
            }
        }
    })
    .await
    .expect("event before the deadline")
}

async fn wait_connected(rx: &mut Receiver<NetEvent>, peer: PeerId) {
    wait_for(rx, |e| {
        matches!(e, NetEvent::Connected { peer: p } if p == peer).then_some(())
    })
    .await;
}

/// A connected pair: B is configured with A's TCP address.
async fn pair() -> (Net, Receiver<NetEvent>, Net, Receiver<NetEvent>) {
    let (a, a_rx) = start(seed(), vec![addr("/ip4/127.0.0.1/tcp/0")], vec![]).await;
    let (b, mut b_rx) = start(
        seed(),
        vec![addr("/ip4/127.0.0.1/tcp/0")],
        vec![dial_addr(&a, "tcp").await],
    )
    .await;
    wait_connected(&mut b_rx, a.local_peer_id()).await;
    (a, a_rx, b, b_rx)
}

/// Answers every request with `<protocol id>:<request>`; drops the reply for `b"drop"`.
fn echo(mut rx: Receiver<NetEvent>) {
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let NetEvent::Request {
                proto, data, reply, ..
            } = event
                && data != b"drop"
            {
                let _ = reply.send([proto.id().as_bytes(), b":", &data].concat());
            }
        }
    });
}

#[tokio::test]
async fn a_pair_connects_over_tcp_and_listens_on_quic_too() {
    let (a, _a_rx, b, _b_rx) = pair().await;
    let tags: Vec<Vec<&str>> = a.listen_addrs().await.iter().map(|m| m.iter().map(|p| p.tag()).collect()).collect();
    assert!(tags.iter().any(|t| t.contains(&"tcp")) && tags.iter().any(|t| t.contains(&"quic-v1")), "{tags:?}");
    assert_eq!(b.connected().await, vec![a.local_peer_id()]);
}

#[tokio::test]
async fn a_closed_node_admits_only_allowed_peers_and_never_blocked_ones() {
    let (stranger_seed, friend_seed) = (seed(), seed());
    let friend_id = peer_of(friend_seed);
    let mut cfg = NetConfig::open(seed(), vec![addr("/ip4/127.0.0.1/tcp/0")], vec![]);
    cfg.allow = Some(vec![friend_id]);
    let (closed, mut closed_rx) = Net::start(cfg).await.unwrap();
    let target = dial_addr(&closed, "tcp").await;
    // A stranger with a valid key dials: the handshake completes, the connection is denied.
    let (stranger, _s_rx) = start(stranger_seed, vec![addr("/ip4/127.0.0.1/tcp/0")], vec![target.clone()]).await;
    let (friend, mut f_rx) = start(friend_seed, vec![addr("/ip4/127.0.0.1/tcp/0")], vec![target]).await;
    wait_connected(&mut f_rx, closed.local_peer_id()).await;
    wait_connected(&mut closed_rx, friend_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(closed.connected().await, vec![friend_id], "only the allowed peer is connected");
    assert!(stranger.connected().await.is_empty());
    // Blocking the friend closes its connection and keeps it out.
    closed.block(friend_id).await;
    wait_for(&mut closed_rx, |e| matches!(e, NetEvent::Disconnected { peer } if peer == friend_id).then_some(())).await;
    let r = friend.request(closed.local_peer_id(), Proto::Push, vec![1]).await;
    assert!(r.is_err(), "a blocked peer gets no answer: {r:?}");
}

fn peer_of(seed: [u8; 32]) -> PeerId {
    let mut s = seed;
    libp2p::identity::Keypair::ed25519_from_bytes(&mut s).unwrap().public().to_peer_id()
}

#[tokio::test]
async fn requests_round_trip_on_every_protocol() {
    let (a, a_rx, b, _b_rx) = pair().await;
    echo(a_rx);
    let a_id = a.local_peer_id();
    for proto in Proto::ALL {
        let response = b.request(a_id, proto, b"hello".to_vec()).await.unwrap();
        assert_eq!(response, [proto.id().as_bytes(), b":hello"].concat());
    }
    // Empty is not a message: refused locally, and by the remote reader when sent anyway.
    assert!(matches!(
        b.request(a_id, Proto::Signal, vec![]).await,
        Err(NetError::Empty)
    ));
    assert!(b.send_request(a_id, Proto::Signal, vec![]).await.is_err());

    // Over the cap: refused locally, and by the remote reader when sent anyway.
    let over = vec![0; Proto::Sync.max_request() + 1];
    assert!(matches!(
        b.request(a_id, Proto::Sync, over.clone()).await,
        Err(NetError::TooLarge { .. })
    ));
    let sent = b.send_request(a_id, Proto::Sync, over).await;
    assert!(sent.is_err(), "{:?}", sent.map(|r| r.len()));
    // The app dropping `reply` closes the stream: an error, not a hang.
    assert!(
        b.request(a_id, Proto::Invite, b"drop".to_vec())
            .await
            .is_err()
    );
    // And the node keeps working.
    assert_eq!(
        b.request(a_id, Proto::Sync, b"again".to_vec())
            .await
            .unwrap(),
        b"/voicechat/sync/1:again"
    );
}

#[tokio::test]
async fn request_to_an_unknown_peer_fails() {
    let (b, _b_rx) = start(seed(), vec![addr("/ip4/127.0.0.1/tcp/0")], vec![]).await;
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let result = timeout(DEADLINE, b.request(stranger, Proto::Sync, vec![1]))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(NetError::Unreachable(_))),
        "{result:?}"
    );
    assert!(matches!(
        b.add_peer(addr("/ip4/127.0.0.1/tcp/1")).await,
        Err(NetError::NoPeerId(_))
    ));
}

#[tokio::test]
async fn a_restarted_peer_is_redialled() {
    let a_seed = seed();
    let (a, _a_rx) = start(a_seed, vec![addr("/ip4/127.0.0.1/tcp/0")], vec![]).await;
    let a_id = a.local_peer_id();
    let a_tcp = dial_addr(&a, "tcp").await;
    let (b, mut b_rx) = start(
        seed(),
        vec![addr("/ip4/127.0.0.1/tcp/0")],
        vec![a_tcp.clone()],
    )
    .await;
    wait_connected(&mut b_rx, a_id).await;

    a.shutdown().await;
    wait_for(&mut b_rx, |e| {
        matches!(e, NetEvent::Disconnected { peer } if peer == a_id).then_some(())
    })
    .await;

    // A' has the same key and TCP port; the port may take a moment to be free again.
    let listen: Multiaddr = a_tcp
        .iter()
        .take_while(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let (a2, a2_rx) = loop {
        match Net::start(NetConfig::open(a_seed, vec![listen.clone()], vec![])).await
        {
            Ok(started) => break started,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%e, "restart");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("A' did not start: {e}"),
        }
    };
    assert_eq!(a2.local_peer_id(), a_id);
    echo(a2_rx);
    wait_connected(&mut b_rx, a_id).await;
    assert_eq!(
        b.request(a_id, Proto::Push, b"back".to_vec())
            .await
            .unwrap(),
        b"/voicechat/push/1:back"
    );
}

#[tokio::test]
async fn requests_work_over_quic() {
    let (a, a_rx) = start(seed(), vec![addr("/ip4/127.0.0.1/udp/0/quic-v1")], vec![]).await;
    echo(a_rx);
    let addrs = a.listen_addrs().await;
    assert!(
        !addrs.is_empty()
            && addrs
                .iter()
                .all(|m| m.iter().any(|p| p == Protocol::QuicV1)),
        "{addrs:?}"
    );
    let (b, mut b_rx) = start(seed(), vec![addr("/ip4/127.0.0.1/tcp/0")], vec![]).await;
    assert_eq!(
        b.add_peer(dial_addr(&a, "quic-v1").await).await.unwrap(),
        a.local_peer_id()
    );
    wait_connected(&mut b_rx, a.local_peer_id()).await;
    let response = b
        .request(a.local_peer_id(), Proto::Signal, b"offer".to_vec())
        .await
        .unwrap();
    assert_eq!(response, b"/voicechat/signal/1:offer");
}

#[test]
fn addresses_split_and_twin() {
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let full = addr("/ip4/10.0.0.1/tcp/4001").with(Protocol::P2p(peer));
    assert_eq!(
        split_peer_addr(&full).unwrap(),
        (peer, addr("/ip4/10.0.0.1/tcp/4001"))
    );
    assert!(split_peer_addr(&addr("/ip4/10.0.0.1/tcp/4001")).is_err());
    assert_eq!(
        quic_twin(&addr("/ip4/10.0.0.1/tcp/4001")),
        Some(addr("/ip4/10.0.0.1/udp/4001/quic-v1"))
    );
    assert_eq!(
        quic_twin(&addr("/ip6/::1/tcp/0")),
        Some(addr("/ip6/::1/udp/0/quic-v1"))
    );
    assert_eq!(quic_twin(&addr("/ip4/10.0.0.1/udp/1/quic-v1")), None);
    assert_eq!(quic_twin(&addr("/dns4/x.example/tcp/1")), None);
}
