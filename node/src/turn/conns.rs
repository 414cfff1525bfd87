//! The sockets the TURN server is written against (webrtc-util's `Conn`: a datagram socket
//! with `recv_from`/`send_to`), and the policy around them:
//!
//! - [`TcpMux`]: TURN over TCP and TLS (RFC 6062 framing: STUN messages and ChannelData
//!   back to back on the stream) presented as one datagram socket whose source addresses are
//!   the connections' remote addresses;
//! - [`RangeRelays`] and [`FilteredConn`]: relay sockets from the configured port range that
//!   refuse to send to (or take from) a peer the [`PeerFilter`] denies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

pub(super) type DynConn = Arc<dyn Conn + Send + Sync>;
pub(super) type ConnResult<T> = Result<T, webrtc_util::Error>;

pub(super) fn io_err(kind: std::io::ErrorKind, msg: &str) -> webrtc_util::Error {
    webrtc_util::Error::Io(std::io::Error::new(kind, msg.to_owned()).into())
}

/// The largest message the server reads (its receive buffer).
pub(super) const MAX_MESSAGE: usize = 1500;
/// TCP/TLS connections served at once; past it new ones are closed at once.
const MAX_STREAMS: usize = 4096;
/// A TCP/TLS connection with no message for this long is closed (allocations refresh every
/// few minutes, and ICE consent checks flow every few seconds).
const STREAM_IDLE: Duration = Duration::from_secs(600);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one TCP client before newer ones are dropped (as UDP would).
const STREAM_QUEUE: usize = 256;

// ---------------------------------------------------------------------------------------
// Peer policy

/// An address block, `198.51.100.0/24` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s, None),
        };
        let net: IpAddr = ip.trim().parse().map_err(|_| format!("{s:?} is not an address block (like 10.0.0.0/8)"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Which peer addresses a relay may exchange packets with. Refused unless the operator
/// allows them: loopback, unspecified, link-local, multicast and broadcast addresses, and
/// the node's own addresses except its relay ports (two browsers relayed by the same node
/// talk through two of its relay ports; its HTTP, TURN and other service ports are not
/// peers).
#[derive(Debug, Clone)]
pub struct PeerFilter {
    allow: Arc<Vec<Cidr>>,
    own_ips: Arc<Vec<IpAddr>>,
    relay_ports: (u16, u16),
    /// Other ports of the node's own addresses browsers may reach through a relay: the
    /// SFU's (a browser whose network lets only TCP out reaches it through TURN/TCP).
    open_ports: Arc<Vec<u16>>,
}

impl PeerFilter {
    /// A filter for a node whose own addresses are `own_ips` and relays use `relay_ports`.
    pub fn new(allow: &[Cidr], own_ips: Vec<IpAddr>, relay_ports: (u16, u16)) -> Self {
        let own_ips = own_ips.into_iter().map(canonical).collect();
        PeerFilter { allow: Arc::new(allow.to_vec()), own_ips: Arc::new(own_ips), relay_ports, open_ports: Arc::default() }
    }

    /// Also lets relays reach these ports of the node's own addresses.
    pub fn with_open_ports(mut self, ports: &[u16]) -> Self {
        self.open_ports = Arc::new(ports.to_vec());
        self
    }

    /// Whether a relay may send to or take from `peer`.
    pub fn permits(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if self.allow.iter().any(|c| c.contains(ip)) {
            return true;
        }
        let own = self.own_ips.contains(&ip);
        if own {
            return (self.relay_ports.0..=self.relay_ports.1).contains(&peer.port()) || self.open_ports.contains(&peer.port());
        }
        !match ip {
            IpAddr::V4(v4) => {
                v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local() || v6.is_multicast()
            }
        }
    }
}

/// Receive and send buffers of the client-facing UDP socket, which takes every client's
/// packets (400 clients at 50 packets/s are 20,000/s: the default ~200 KiB holds a few
/// milliseconds of them, and a busy moment on the box drops audio), and of each relay
/// socket. The kernel caps them at `net.core.rmem_max`/`wmem_max`; memory is only used
/// while packets wait.
pub(super) const LISTEN_SOCKET_BUFFER: usize = 4 << 20;
const RELAY_SOCKET_BUFFER: usize = 512 << 10;

/// Ask for `bytes` of receive and send buffer on `sock` (best effort: a smaller cap is fine).
pub(super) fn roomy(sock: &UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(sock);
    if let Err(e) = s.set_recv_buffer_size(bytes).and_then(|()| s.set_send_buffer_size(bytes)) {
        tracing::debug!(error = %e, "could not enlarge a TURN socket's buffers");
    }
}

/// A relay socket that drops what the filter denies: sending to a denied peer is an error
/// (the server answers the client with it), packets from one are not delivered.
struct FilteredConn {
    inner: UdpSocket,
    filter: PeerFilter,
}

#[async_trait]
impl Conn for FilteredConn {
    async fn connect(&self, addr: SocketAddr) -> ConnResult<()> {
        Ok(self.inner.connect(addr).await?)
    }
    async fn recv(&self, buf: &mut [u8]) -> ConnResult<usize> {
        Ok(self.inner.recv(buf).await?)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> ConnResult<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            if self.filter.permits(from) {
                return Ok((n, from));
            }
            metrics::counter!("voicechat_turn_refusals_total", "reason" => "peer").increment(1);
        }
    }
    async fn send(&self, buf: &[u8]) -> ConnResult<usize> {
        Ok(self.inner.send(buf).await?)
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> ConnResult<usize> {
        if !self.filter.permits(target) {
            metrics::counter!("voicechat_turn_refusals_total", "reason" => "peer").increment(1);
            return Err(io_err(std::io::ErrorKind::PermissionDenied, "peer address refused by the relay policy"));
        }
        Ok(self.inner.send_to(buf, target).await?)
    }
    fn local_addr(&self) -> ConnResult<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> ConnResult<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Relay sockets bound on `bind_ip` at a random free port in `ports`, announced at
/// `announce_ip`.
pub struct RangeRelays {
    /// Where relay sockets are bound.
    pub bind_ip: IpAddr,
    /// The address put in the relayed candidate.
    pub announce_ip: IpAddr,
    /// Inclusive port range.
    pub ports: (u16, u16),
    /// Peer policy.
    pub filter: PeerFilter,
}

#[async_trait]
impl RelayAddressGenerator for RangeRelays {
    fn validate(&self) -> Result<(), turn::Error> {
        if self.ports.0 == 0 || self.ports.1 < self.ports.0 {
            return Err(turn::Error::ErrMaxPortLessThanMinPort);
        }
        Ok(())
    }

    async fn allocate_conn(&self, _use_ipv4: bool, requested_port: u16) -> Result<(DynConn, SocketAddr), turn::Error> {
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        // A random start, then every port once: a busy range still finds its free ports.
        let start = if requested_port != 0 && (lo..=hi).contains(&requested_port) {
            u32::from(requested_port - lo)
        } else {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).map_err(|e| turn::Error::Other(e.to_string()))?;
            u32::from_le_bytes(b) % span
        };
        for i in 0..span.min(4096) {
            let port = lo + ((start + i) % span) as u16;
            if let Ok(sock) = UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).await {
                roomy(&sock, RELAY_SOCKET_BUFFER);
                let relay = SocketAddr::new(self.announce_ip, port);
                let conn = FilteredConn { inner: sock, filter: self.filter.clone() };
                return Ok((Arc::new(conn), relay));
            }
        }
        metrics::counter!("voicechat_turn_refusals_total", "reason" => "ports").increment(1);
        Err(turn::Error::ErrMaxRetriesExceeded)
    }
}

// ---------------------------------------------------------------------------------------
// TCP and TLS

/// How long the next message on a stream is, from its first four bytes: a STUN message
/// (first two bits 00) is 20 + its length field; ChannelData (first byte 0x40..=0x7f) is 4 +
/// its length, padded to a multiple of four over streams (RFC 5766 §11.5).
pub(super) fn frame_len(head: [u8; 4]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] {
        0x00..=0x3f => Some(20 + len),
        0x40..=0x7f => Some(4 + len.div_ceil(4) * 4),
        _ => None,
    }
}

/// Reads one framed message (STUN or padded ChannelData, RFC 6062 framing) from a TURN
/// stream into `buf`; `None` at a clean end of stream. Clients over TCP read the same way.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(head).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "neither STUN nor ChannelData"))?;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("message of {len} bytes")));
    }
    buf.clear();
    buf.extend_from_slice(&head);
    buf.resize(len, 0);
    r.read_exact(&mut buf[4..]).await?;
    Ok(Some(()))
}

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// TURN over TCP (or TLS) as one datagram socket.
pub struct TcpMux {
    local: SocketAddr,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Writers,
}

impl TcpMux {
    /// Accepts connections on `listener` (TLS with `tls`) until the process ends.
    pub fn serve(listener: TcpListener, tls: Option<super::TlsSlot>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (in_tx, in_rx) = mpsc::channel(1024);
        let writers: Writers = Arc::default();
        let w = writers.clone();
        tokio::spawn(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%e, "TURN accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if w.lock().expect("writers").len() >= MAX_STREAMS {
                    metrics::counter!("voicechat_turn_refusals_total", "reason" => "connections").increment(1);
                    continue; // dropped: closed
                }
                let _ = stream.set_nodelay(true);
                // The certificate in use now (a reload swaps it for later connections).
                let acceptor = tls.as_ref().map(|slot| tokio_rustls::TlsAcceptor::from(slot.read().expect("tls slot").clone()));
                let (in_tx, w) = (in_tx.clone(), w.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_stream(stream, from, in_tx, w).await,
                        Some(acc) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                            Ok(Ok(tls)) => serve_stream(tls, from, in_tx, w).await,
                            Ok(Err(e)) => tracing::debug!(%from, %e, "TURN TLS handshake"),
                            Err(_) => tracing::debug!(%from, "TURN TLS handshake timed out"),
                        },
                    }
                });
            }
        });
        Ok(TcpMux { local, inbound: tokio::sync::Mutex::new(in_rx), writers })
    }
}

/// One client stream: its messages go to the server with its address; what the server
/// sends to that address is written back in order.
async fn serve_stream<S>(stream: S, from: SocketAddr, inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>, writers: Writers)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    writers.lock().expect("writers").insert(from, out_tx);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if w.write_all(&msg).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = Vec::with_capacity(MAX_MESSAGE);
    loop {
        match tokio::time::timeout(STREAM_IDLE, read_frame(&mut r, &mut buf)).await {
            Ok(Ok(Some(()))) => {
                if inbound.send((buf.clone(), from)).await.is_err() {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!(%from, %e, "TURN stream closed");
                break;
            }
            Err(_) => break, // idle
        }
    }
    writers.lock().expect("writers").remove(&from);
    writer.abort();
}

#[async_trait]
impl Conn for TcpMux {
    async fn connect(&self, _addr: SocketAddr) -> ConnResult<()> {
        Err(io_err(std::io::ErrorKind::Unsupported, "a listener does not connect"))
    }
    async fn recv(&self, buf: &mut [u8]) -> ConnResult<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> ConnResult<(usize, SocketAddr)> {
        let (msg, from) = self.inbound.lock().await.recv().await.ok_or_else(|| io_err(std::io::ErrorKind::BrokenPipe, "closed"))?;
        let n = msg.len().min(buf.len());
        buf[..n].copy_from_slice(&msg[..n]);
        Ok((n, from))
    }
    async fn send(&self, _buf: &[u8]) -> ConnResult<usize> {
        Err(io_err(std::io::ErrorKind::Unsupported, "send needs an address"))
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> ConnResult<usize> {
        let tx = self.writers.lock().expect("writers").get(&target).cloned();
        match tx {
            // A full queue drops the message, as a congested UDP path would.
            Some(tx) => {
                let _ = tx.try_send(buf.to_vec());
                Ok(buf.len())
            }
            None => Err(io_err(std::io::ErrorKind::NotConnected, "no connection from that client")),
        }
    }
    fn local_addr(&self) -> ConnResult<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> ConnResult<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_blocks_parse_and_match() {
        let c: Cidr = "198.51.100.0/24".parse().unwrap();
        assert!(c.contains("198.51.100.7".parse().unwrap()));
        assert!(!c.contains("198.51.101.7".parse().unwrap()));
        assert!(c.contains("::ffff:198.51.100.9".parse().unwrap()), "v4-mapped v6 is the v4 address");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn the_relay_refuses_loopback_link_local_and_the_nodes_services() {
        let own: IpAddr = "203.0.113.1".parse().unwrap();
        let f = PeerFilter::new(&[], vec![own], (49152, 65535));
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(f.permits(p("198.51.100.20:5000")), "an ordinary peer");
        assert!(f.permits(p("10.1.0.2:5000")), "a LAN peer (the node's own LAN is the operator's call)");
        assert!(!f.permits(p("127.0.0.1:5000")));
        assert!(!f.permits(p("127.8.9.1:5000")), "all of 127.0.0.0/8");
        assert!(!f.permits(p("[::1]:5000")));
        assert!(!f.permits(p("[::ffff:127.0.0.1]:5000")), "mapped loopback");
        assert!(!f.permits(p("169.254.169.254:80")), "link-local (cloud metadata)");
        assert!(!f.permits(p("[fe80::1]:5000")));
        assert!(!f.permits(p("0.0.0.0:5000")));
        assert!(!f.permits(p("224.0.0.1:5000")));
        assert!(!f.permits(p("203.0.113.1:3478")), "the node's TURN port");
        assert!(!f.permits(p("203.0.113.1:443")), "the node's web port");
        assert!(f.permits(p("203.0.113.1:50000")), "another of its relays: two relayed browsers");
        let sfu = PeerFilter::new(&[], vec![own], (49152, 65535)).with_open_ports(&[3479]);
        assert!(sfu.permits(p("203.0.113.1:3479")), "the node's SFU, for browsers that only get out over TCP");
        assert!(!sfu.permits(p("203.0.113.1:3478")));
        let allowed = PeerFilter::new(&["127.0.0.0/8".parse().unwrap()], vec![own], (49152, 65535));
        assert!(allowed.permits(p("127.0.0.1:5000")), "the operator allowed it");
    }

    #[test]
    fn stream_frames_are_sized_from_their_header() {
        // A Binding request with no attributes: 20 bytes.
        assert_eq!(frame_len([0x00, 0x01, 0x00, 0x00]), Some(20));
        assert_eq!(frame_len([0x01, 0x01, 0x00, 0x08]), Some(28));
        // ChannelData 0x4000 with 5 bytes of data is padded to 8.
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(frame_len([0x7f, 0xff, 0x00, 0x04]), Some(8));
        assert_eq!(frame_len([0x80, 0x00, 0x00, 0x00]), None, "RTP or junk");
        assert_eq!(frame_len([0x16, 0x03, 0x01, 0x02]).map(|n| n > 20), Some(true), "a TLS hello is read as a too-long STUN frame");
    }

    #[tokio::test]
    async fn a_stream_that_sends_junk_or_too_much_is_closed() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&[0x00, 0x01, 0x00, 0x00]).await.unwrap();
        a.write_all(&[0u8; 16]).await.unwrap();
        a.write_all(&[0xff, 0, 0, 0]).await.unwrap();
        let mut buf = Vec::new();
        assert!(read_frame(&mut b, &mut buf).await.unwrap().is_some());
        assert_eq!(buf.len(), 20);
        assert_eq!(read_frame(&mut b, &mut buf).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&[0x40, 0x00, 0xff, 0xff]).await.unwrap();
        assert_eq!(read_frame(&mut b, &mut buf).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData, "oversized");
        drop(a);
        assert!(read_frame(&mut b, &mut buf).await.unwrap().is_none(), "then the end of the stream");
    }
}
