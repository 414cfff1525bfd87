//! STUN and TURN for the node's browsers, so calls connect across NATs with nothing else to
//! install. The protocol is webrtc-rs's `turn` server; this module gives it what a public
//! service needs around it:
//!
//! - `creds`: TURN REST-style credentials (the username carries the expiry, the password is
//!   an HMAC of it under a secret kept in the data dir), minted for a member joining a room;
//! - `gate`: what every client message passes first: the credential check (401), the
//!   per-user allocation quota (486) and bandwidth cap;
//! - `conns`: the sockets the server is written against: UDP, TCP and TLS on the client side
//!   (one port number for UDP and TCP); relay sockets from a port range that refuse peers in
//!   loopback, link-local or the node's own service addresses;
//! - metrics: allocations, relayed bytes, refusals by reason.

mod conns;
pub mod creds;
mod gate;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::UdpSocket;
use turn::auth::AuthHandler;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use voicechat_protocol::ids::UserId;

use crate::config::TurnConfig;

pub use conns::{Cidr, PeerFilter, read_frame};
use conns::{RangeRelays, TcpMux};
use gate::{ClientConn, Gate};
pub use creds::Secret;

/// The TLS configuration of `turns:`, swapped when the certificate is reloaded.
pub type TlsSlot = Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>;

/// How long minted credentials work.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(4 * 3600);

/// How often quotas are reconciled with the server's allocations (and the allocation
/// gauge is set).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A client that authenticated but holds no allocation counts against its user this long.
const UNHELD_GRACE: Duration = Duration::from_secs(60);

/// Counts kept for metrics and tests.
#[derive(Debug, Default)]
struct Quotas {
    /// user → client transport addresses with an allocation (or trying).
    by_user: HashMap<String, HashSet<SocketAddr>>,
    /// client address → (user, when its credentials were last checked), for the meter.
    by_addr: HashMap<SocketAddr, (String, Instant)>,
}

impl Quotas {
    fn forget(&mut self, src: SocketAddr) {
        if let Some((user, _)) = self.by_addr.remove(&src)
            && let Some(set) = self.by_user.get_mut(&user)
        {
            set.remove(&src);
            if set.is_empty() {
                self.by_user.remove(&user);
            }
        }
    }
}

/// The running STUN/TURN service.
pub struct Turn {
    /// The host in `stun:`/`turn:` URLs.
    url_host: String,
    /// The host in `turns:` URLs: the name the certificate is for, when there is one.
    tls_host: String,
    secret: Secret,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    _server: Arc<Server>,
}

/// Hands the server the key of credentials the gate has already checked (it checks the
/// message integrity again with it).
struct Auth(Secret);

impl AuthHandler for Auth {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        let password = self.0.check(username, crate::time::unix_now()).map_err(|e| turn::Error::Other(e.to_string()))?;
        Ok(turn::auth::generate_auth_key(username, realm, &password))
    }
}

/// UDP and TCP sockets on one port number (a free one for port 0, tried a few times since
/// the UDP port's TCP twin may be taken).
async fn bind_pair(at: SocketAddr) -> Result<(UdpSocket, tokio::net::TcpListener), TurnError> {
    let bind = |addr: SocketAddr| move |error| TurnError::Bind { addr, error };
    let mut tries = if at.port() == 0 { 16 } else { 1 };
    loop {
        let udp = UdpSocket::bind(at).await.map_err(bind(at))?;
        let tcp_at = SocketAddr::new(at.ip(), udp.local_addr().map_err(bind(at))?.port());
        match tokio::net::TcpListener::bind(tcp_at).await {
            Ok(tcp) => {
                conns::roomy(&udp, conns::LISTEN_SOCKET_BUFFER);
                return Ok((udp, tcp));
            }
            Err(e) if tries <= 1 => return Err(bind(tcp_at)(e)),
            Err(_) => tries -= 1,
        }
    }
}

/// The host browsers reach TURN at: the external address; else the address TURN listens
/// on; else (all interfaces) the public URL's host unless that is loopback; else the
/// address relays are announced at.
fn url_host(external: Option<IpAddr>, listen: IpAddr, public: Option<&str>, relay_ip: IpAddr) -> String {
    let ip = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    if let Some(e) = external {
        return ip(e);
    }
    if !listen.is_unspecified() {
        return ip(listen);
    }
    match public {
        Some(h) if h != "localhost" && !h.parse::<IpAddr>().is_ok_and(|a| a.is_loopback() || a.is_unspecified()) => {
            if h.contains(':') { format!("[{h}]") } else { h.to_owned() }
        }
        _ => ip(relay_ip),
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The server refused its configuration.
    #[error("TURN: {0}")]
    Server(String),
}

impl Turn {
    /// Binds UDP and TCP (and TLS with `tls`) as `settings` say and starts serving, for
    /// users of the node named `realm` whose public URL's host is `public_url_host`.
    pub async fn start(
        settings: &TurnConfig,
        realm: &str,
        public_url_host: Option<&str>,
        secret: Secret,
        tls: Option<TlsSlot>,
        open_ports: &[u16],
    ) -> Result<Turn, TurnError> {
        let bind = |addr: SocketAddr| move |error| TurnError::Bind { addr, error };
        let (udp, tcp) = bind_pair(settings.listen).await?;
        let udp_addr = udp.local_addr().map_err(bind(settings.listen))?;
        let tcp_addr = tcp.local_addr().map_err(bind(settings.listen))?;
        let tcp_at = tcp_addr;
        let tls_listener = match (&settings.tls_listen, tls) {
            (Some(at), Some(cfg)) => {
                let l = tokio::net::TcpListener::bind(at).await.map_err(bind(*at))?;
                Some((l, cfg))
            }
            _ => None,
        };
        let tls_addr = tls_listener.as_ref().map(|(l, _)| l.local_addr()).transpose().map_err(bind(tcp_at))?;

        let quotas: Arc<Mutex<Quotas>> = Arc::default();
        let gate = Arc::new(Gate::new(
            secret.clone(),
            realm.to_owned(),
            quotas.clone(),
            settings.max_allocations_per_user,
            settings.user_bytes_per_sec,
        ));
        let relay_ip = settings.external_ip.unwrap_or(match settings.listen.ip() {
            ip if ip.is_unspecified() => crate::tls::lan_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ip => ip,
        });
        let mut own = vec![relay_ip, settings.listen.ip()];
        own.extend(crate::tls::lan_ip());
        let filter = PeerFilter::new(&settings.allow_peers, own, settings.relay_ports).with_open_ports(open_ports);
        let relays = |filter: PeerFilter| RangeRelays {
            bind_ip: settings.listen.ip(),
            announce_ip: relay_ip,
            ports: settings.relay_ports,
            filter,
        };
        let mut conn_configs = vec![
            ConnConfig {
                conn: Arc::new(ClientConn::new(Arc::new(udp), gate.clone())),
                relay_addr_generator: Box::new(relays(filter.clone())),
            },
            ConnConfig {
                conn: Arc::new(ClientConn::new(Arc::new(TcpMux::serve(tcp, None).map_err(bind(tcp_addr))?), gate.clone())),
                relay_addr_generator: Box::new(relays(filter.clone())),
            },
        ];
        if let Some((l, cfg)) = tls_listener {
            conn_configs.push(ConnConfig {
                conn: Arc::new(ClientConn::new(Arc::new(TcpMux::serve(l, Some(cfg)).map_err(bind(tcp_addr))?), gate.clone())),
                relay_addr_generator: Box::new(relays(filter.clone())),
            });
        }
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(256);
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: realm.to_owned(),
            auth_handler: Arc::new(Auth(secret.clone())),
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: Some(closed_tx),
        })
        .await
        .map_err(|e| TurnError::Server(e.to_string()))?;
        let server = Arc::new(server);
        // A closed allocation frees its user's quota.
        let q = quotas.clone();
        tokio::spawn(async move {
            while let Some(info) = closed_rx.recv().await {
                q.lock().expect("quota lock").forget(info.five_tuple.src_addr);
            }
        });
        // A client whose credentials passed but who holds no allocation (its Allocate failed,
        // or it only asked) stops counting against its user after a minute; idle users'
        // bandwidth buckets are dropped.
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(server) = weak.upgrade() else { break };
                let Ok(live) = server.get_allocations_info(None).await else { break };
                drop(server);
                metrics::gauge!("voicechat_turn_allocations").set(live.len() as f64);
                let held: HashSet<SocketAddr> = live.keys().map(|t| t.src_addr).collect();
                let mut q = quotas.lock().expect("quota lock");
                let stale: Vec<SocketAddr> = q
                    .by_addr
                    .iter()
                    .filter(|(addr, (_, seen))| !held.contains(addr) && seen.elapsed() > UNHELD_GRACE)
                    .map(|(addr, _)| *addr)
                    .collect();
                for addr in stale {
                    q.forget(addr);
                }
                drop(q);
                gate.prune();
            }
        });
        tracing::info!(udp = %udp_addr, tcp = %tcp_addr, tls = ?tls_addr, relay_ip = %relay_ip, "STUN/TURN listening");
        let url_host = url_host(settings.external_ip, settings.listen.ip(), public_url_host, relay_ip);
        let tls_host = match public_url_host {
            Some(h) if h.parse::<IpAddr>().is_err() && h != "localhost" => h.to_owned(),
            _ => url_host.clone(),
        };
        Ok(Turn { url_host, tls_host, secret, udp_addr, tcp_addr, tls_addr, _server: server })
    }

    /// The UDP (and TCP) address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TURN-over-TLS address, if it listens on one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The node's STUN entry, without credentials (for anyone logged in).
    pub fn stun_server(&self) -> serde_json::Value {
        json!({"urls": [format!("stun:{}:{}", self.url_host, self.udp_addr.port())]})
    }

    /// The node's TURN entry with fresh credentials for `user`; and when they expire.
    pub fn turn_server(&self, user: &UserId) -> (serde_json::Value, u64) {
        let (username, credential, expires_at) = self.secret.mint(&user.to_string(), crate::time::unix_now(), CREDENTIAL_TTL);
        let host = &self.url_host;
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", self.udp_addr.port()),
            format!("turn:{host}:{}?transport=tcp", self.tcp_addr.port()),
        ];
        if let Some(tls) = self.tls_addr {
            urls.push(format!("turns:{}:{}?transport=tcp", self.tls_host, tls.port()));
        }
        (json!({"urls": urls, "username": username, "credential": credential}), expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_name_the_host_browsers_reach() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let any = ip("0.0.0.0");
        let lan = ip("192.168.1.5");
        assert_eq!(url_host(Some(ip("198.51.100.9")), any, Some("voice.example.org"), lan), "198.51.100.9", "1:1 NAT");
        assert_eq!(url_host(None, ip("203.0.113.1"), Some("voice.example.org"), lan), "203.0.113.1");
        assert_eq!(url_host(None, any, Some("voice.example.org"), lan), "voice.example.org");
        assert_eq!(url_host(None, any, Some("localhost"), lan), "192.168.1.5");
        assert_eq!(url_host(None, any, Some("127.0.0.1"), lan), "192.168.1.5");
        assert_eq!(url_host(None, ip("::1"), None, lan), "[::1]");
        assert_eq!(url_host(None, ip("::"), Some("2001:db8::1"), lan), "[2001:db8::1]");
    }
}
