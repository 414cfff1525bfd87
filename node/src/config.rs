//! How a node is configured: the optional TOML file, merged under the command line
//! (file < `VOICECHAT_*` env < flag), resolved into one checked [`Config`].
//!
//! Everything here is pure, so the precedence rules, TLS mode selection and the
//! public URL derivation are unit-tested without sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::Deserialize;
use voicechat_protocol::ids::NodeName;

use crate::cli::ServeArgs;
use crate::federation::machine::Mode;
use crate::state::Settings;

/// The node name used when none is configured.
pub const DEFAULT_NAME: &str = "localhost";
/// Where the node's data lives when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./voicechat-data";
/// The HTTP listen address when none is configured (and TLS is not `acme`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3001);
/// The listen address with `--tls acme` when none is configured: ACME's TLS-ALPN-01
/// challenge is answered on port 443.
pub const DEFAULT_ACME_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
/// The libp2p listen address reserved for federation when none is configured.
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";
/// Concurrent password hashes when none is configured (argon2id at 19 MiB each).
pub const DEFAULT_MAX_CONCURRENT_HASHES: usize = 4;

/// What is wrong with the configuration; each prints as one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (kept out of the error chain so it prints once).
        error: std::io::Error,
    },
    /// The config file is not valid TOML for this struct.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said (line, column, field).
        message: String,
    },
    /// The node name breaks the naming rules.
    #[error(
        "bad node name {0:?}: use a DNS-style name (letters, digits, '-', dots), e.g. voice.example.org"
    )]
    BadName(String),
    /// `public_url` is not an http(s) origin.
    #[error("bad public URL {0:?}: expected an origin like https://voice.example.org (no path)")]
    BadPublicUrl(String),
    /// `p2p_listen` is not a multiaddr.
    #[error("bad p2p listen address {0:?}: expected a multiaddr like /ip4/0.0.0.0/tcp/4001")]
    BadMultiaddr(String),
    /// An ICE server URL is not stun:/stuns:/turn:/turns:.
    #[error("bad ICE server URL {0:?}: expected stun:, stuns:, turn: or turns:")]
    BadIceServer(String),
    /// A `--federation-resolve` entry is not `NAME=ADDR:PORT`.
    #[error("bad federation resolve entry {0:?}: expected NAME=ADDR:PORT, e.g. beta.example.org=192.0.2.7:443")]
    BadResolve(String),
    /// `--tls files` without both files.
    #[error("--tls files needs both --cert (HTTPS_CERT) and --key (HTTPS_KEY)")]
    MissingCertFiles,
    /// `--tls acme` without a domain.
    #[error("--tls acme needs at least one --domain")]
    MissingDomain,
    /// `acme_directory` is not an http(s) URL.
    #[error("bad ACME directory {0:?}: expected a URL like https://acme-v02.api.letsencrypt.org/directory")]
    BadAcmeDirectory(String),
    /// An `[[oidc]]` provider is misconfigured.
    #[error("{0}")]
    BadOidc(String),
    /// `turn_relay_ports` is not `LOW-HIGH` within 1024..=65535.
    #[error("bad TURN relay ports {0:?}: expected LOW-HIGH, e.g. 49152-65535 (ports 1024 and up)")]
    BadRelayPorts(String),
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// The default STUN/TURN port (UDP and TCP).
pub const DEFAULT_TURN_PORT: u16 = 3478;
/// The SFU's UDP port when none is configured.
pub const DEFAULT_SFU_PORT: u16 = 3479;
/// People in a conversation call at which it moves to the SFU, when not configured: with
/// five, a mesh already has each browser encode and upload four streams, and five
/// Chromiums saturate two cores.
pub const DEFAULT_SFU_THRESHOLD: usize = 5;
/// Speakers forwarded to each listener at once, when not configured.
pub const DEFAULT_SFU_SPEAKERS: usize = 3;
/// The default TURN-over-TLS port.
pub const DEFAULT_TURNS_PORT: u16 = 5349;
/// Relay ports when none are configured (the IANA dynamic range, as coturn).
pub const DEFAULT_RELAY_PORTS: (u16, u16) = (49152, 65535);
/// Allocations one user may hold at once when none is configured: a browser makes one
/// per TURN URL per peer connection, so a mesh of 8 over UDP, TCP and TLS needs 21.
pub const DEFAULT_MAX_ALLOCATIONS_PER_USER: usize = 64;
/// Relayed bytes per second per user, each way, when none is configured: 2 Mbit/s, room
/// for a dozen Opus streams.
pub const DEFAULT_TURN_USER_BYTES_PER_SEC: u64 = 256 * 1024;

/// The four ways to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP (behind a TLS-terminating proxy, or on loopback).
    None,
    /// PEM certificate and key files (`--cert`/`--key`, or `HTTPS_CERT`/`HTTPS_KEY`).
    Files,
    /// A certificate generated once and kept in `<data-dir>/tls/`, for a LAN.
    SelfSigned,
    /// Certificates from Let's Encrypt over ACME (TLS-ALPN-01 on the listen port).
    Acme,
}

/// The optional TOML file. Every field may be left out; flags and env override it.
/// Relative paths in the file are taken relative to the file's own directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The node's public name, part of every user id (`alice@name`). Left out:
    /// `localhost`. Choose it before federating; changing it later renames every user.
    pub name: Option<String>,
    /// `ADDR:PORT` for HTTP(S). Left out: `127.0.0.1:3001` (`0.0.0.0:443` with acme).
    pub listen: Option<SocketAddr>,
    /// Where the store, node key and TLS material live. Left out: `./voicechat-data`.
    pub data_dir: Option<PathBuf>,
    /// The origin browsers use, e.g. `https://voice.example.org` behind a proxy. Left
    /// out: derived from the listen address and TLS mode (`https://<first domain>` with acme).
    pub public_url: Option<String>,
    /// libp2p listen multiaddr for federation (its QUIC twin is bound too). Left out:
    /// `/ip4/0.0.0.0/tcp/4001`.
    pub p2p_listen: Option<String>,
    /// Nodes to federate with: multiaddrs ending in `/p2p/<PeerId>`, kept dialled. Left
    /// out: none besides those stored with `voicechat peer add`.
    pub peers: Option<Vec<String>>,
    /// STUN/TURN servers for browsers: URLs, or tables `{ urls, username, credential }`.
    /// Left out: none (peers on the same LAN or with public addresses still connect).
    pub ice_servers: Option<Vec<IceServerEntry>>,
    /// At most this many password hashes run at once (19 MiB each). Left out: 4.
    pub max_concurrent_hashes: Option<usize>,
    /// Rooms with more sessions than this (or in a group whose calls hold more than four
    /// times this) show only a count to the sockets of those who follow the group but are
    /// not in the call; those in it always get the list. Left out: 50.
    pub room_list_max: Option<usize>,
    /// TLS settings. Left out: no TLS, unless `HTTPS_CERT` and `HTTPS_KEY` are set.
    pub tls: Option<FileTls>,
    /// Federation settings. Left out: closed federation (pinned peers only).
    pub federation: Option<FileFederation>,
    /// The node's own STUN/TURN service. Left out: on, with the defaults below.
    pub turn: Option<FileTurn>,
    /// The audio forwarding unit.
    pub sfu: Option<FileSfu>,
    /// `"on"` or `"off"`: browsers encrypt call audio end to end. Left out: on.
    pub e2ee: Option<Switch>,
    /// Accounts: sign-up mode, password login and per-user limits.
    pub accounts: Option<FileAccounts>,
    /// OpenID Connect providers, each a `[[oidc]]` table with `id`, `name`, `issuer`,
    /// `client_id`, optional `client_secret` and `scopes`; register
    /// `<public_url>/auth/oidc/<id>/callback` as the redirect URI at the provider. Left
    /// out: none (password login only).
    pub oidc: Option<Vec<crate::oidc::ProviderConfig>>,
}

/// The `[accounts]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccounts {
    /// `"open"`, `"invite-only"` (a group invite link is the ticket) or `"closed"`, until
    /// the administrator chooses on the admin page (that choice is stored and wins). Left
    /// out: open.
    pub registration: Option<crate::store::RegistrationMode>,
    /// `"on"` or `"off"`: password login and sign-up. Left out: on.
    pub password_login: Option<Switch>,
    /// Open WebSockets one user may hold. Left out: 8.
    pub sockets_per_user: Option<usize>,
    /// Seats in calls one user may hold (a tab joining beyond it takes the oldest over).
    /// Left out: 1.
    pub call_seats_per_user: Option<usize>,
    /// Sign-ups one client address may attempt per hour. Left out: 10.
    pub registrations_per_hour: Option<u32>,
    /// Seconds a page that lost its connection keeps its session for resuming it. Left
    /// out: 20.
    pub resume_grace: Option<u64>,
}

/// The `[turn]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTurn {
    /// `"on"` or `"off"`. Left out: on.
    pub mode: Option<Switch>,
    /// UDP and TCP `ADDR:PORT`. Left out: the listen IP with port 3478 (0 when the listen
    /// port is 0; all interfaces when the listen IP is loopback but the public URL is not).
    pub listen: Option<SocketAddr>,
    /// TURN over TLS `ADDR:PORT`. Left out: with TLS on, the TURN IP with port 5349.
    pub tls_listen: Option<SocketAddr>,
    /// The node's public address behind 1:1 NAT. Left out: the TURN IP or LAN address.
    pub external_ip: Option<IpAddr>,
    /// Relay ports, `"LOW-HIGH"`. Left out: `"49152-65535"`.
    pub relay_ports: Option<String>,
    /// Peer networks relays may reach although refused by default. Left out: none.
    pub allow_peers: Option<Vec<crate::turn::Cidr>>,
    /// Allocations one user may hold at once. Left out: 64.
    pub max_allocations_per_user: Option<usize>,
    /// Relayed bytes per second per user, each way. Left out: 262144 (2 Mbit/s).
    pub user_bytes_per_sec: Option<u64>,
}

/// The `[sfu]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSfu {
    /// `"on"` or `"off"`. Left out: on.
    pub mode: Option<Switch>,
    /// UDP `ADDR:PORT`. Left out: the TURN IP (else the listen IP), port 3479 (0 when the
    /// listen port is 0).
    pub listen: Option<SocketAddr>,
    /// The address browsers send audio to. Left out: TURN's external IP, else the SFU IP,
    /// else the public URL's host.
    pub external_ip: Option<IpAddr>,
    /// People at which a conversation call moves from mesh to the SFU. Left out: 5.
    pub threshold: Option<usize>,
    /// Speakers forwarded to each listener at once (the loudest). Left out: 3.
    pub speakers: Option<usize>,
    /// Connections at once. Left out: 2000.
    pub max_peers: Option<usize>,
}

/// The `[federation]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFederation {
    /// `closed`: only pinned peers (`peers`, `voicechat peer add`); `open`: also nodes
    /// whose DNS name is verified at `https://NAME/.well-known/voicechat/node`, and nodes
    /// with names that are not DNS names, trusted on first use. Left out: `closed`.
    pub mode: Option<Mode>,
    /// PEM files of certificate authorities to trust, besides the web roots, when
    /// verifying other nodes' names. Left out: none.
    pub ca: Option<Vec<PathBuf>>,
    /// Reach these nodes' HTTPS origins at these addresses instead of through DNS
    /// (`{ "beta.example.org" = "192.0.2.7:443" }`). Left out: DNS.
    pub resolve: Option<std::collections::BTreeMap<String, SocketAddr>>,
    /// Seconds between checks of a group homed elsewhere against its home. Left out: 300.
    pub resync_secs: Option<u64>,
    /// Federation connections in all. Left out: 256.
    pub max_connections: Option<u32>,
    /// Federation connections per peer. Left out: 4.
    pub max_connections_per_peer: Option<u32>,
}

/// The `[tls]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// `none`, `files`, `self-signed` or `acme`. Left out: `files` if a cert and key are
    /// given (here or in `HTTPS_CERT`/`HTTPS_KEY`), else `none`.
    pub mode: Option<TlsMode>,
    /// PEM certificate chain for `files`. Left out: `HTTPS_CERT`.
    pub cert: Option<PathBuf>,
    /// PEM private key for `files`. Left out: `HTTPS_KEY`.
    pub key: Option<PathBuf>,
    /// Domains to get certificates for with `acme` (the first is the public URL).
    pub domains: Option<Vec<String>>,
    /// ACME account contacts (`admin@example.org` or `mailto:…`). Left out: none.
    pub acme_contact: Option<Vec<String>>,
    /// Use Let's Encrypt's staging directory (untrusted certs, generous limits). Left out: false.
    pub acme_staging: Option<bool>,
    /// ACME directory URL of another certificate authority (a private one, or a test
    /// server such as Pebble). Left out: Let's Encrypt (production, or staging above).
    pub acme_directory: Option<String>,
    /// PEM file of a CA to trust for the ACME server's own HTTPS, besides the web roots.
    /// Left out: the web roots only.
    pub acme_ca: Option<PathBuf>,
    /// `"tls-alpn-01"` (answered on the listen port, which must be 443 from outside) or
    /// `"http-01"` (answered on `acme_http_listen`, port 80 from outside). Left out: tls-alpn-01.
    pub acme_challenge: Option<AcmeChallenge>,
    /// Plain HTTP `ADDR:PORT` for http-01 challenges (everything else there is redirected
    /// to the public URL). Left out: `0.0.0.0:80` with http-01, none otherwise.
    pub acme_http_listen: Option<SocketAddr>,
}

/// How the ACME server checks that this node controls its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum AcmeChallenge {
    /// A special certificate on the HTTPS port (443).
    #[serde(rename = "tls-alpn-01")]
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// A token under `/.well-known/acme-challenge/` on plain HTTP (port 80).
    #[serde(rename = "http-01")]
    #[value(name = "http-01")]
    Http01,
}

/// Where an ACME node gets its certificates, beyond the domains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcmeOptions {
    /// Directory URL; `None`: Let's Encrypt.
    pub directory: Option<String>,
    /// Extra CA (PEM) trusted for the ACME server.
    pub ca: Option<PathBuf>,
    /// The challenge answered.
    pub challenge: Option<AcmeChallenge>,
    /// Plain HTTP listener for http-01.
    pub http_listen: Option<SocketAddr>,
}

/// Let's Encrypt's directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The plain HTTP listener for http-01 when none is configured.
pub const DEFAULT_ACME_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);

/// One ICE server in the file: a bare URL or a full `RTCIceServer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IceServerEntry {
    /// `"stun:stun.example.org:3478"`.
    Url(String),
    /// `{ urls = "turn:…", username = "…", credential = "…" }`.
    Full(IceServerTable),
}

/// A full `RTCIceServer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerTable {
    /// One URL or several.
    pub urls: Urls,
    /// TURN user name. Left out: none.
    pub username: Option<String>,
    /// TURN password. Left out: none.
    pub credential: Option<String>,
}

/// One URL or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// How the node serves HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP.
    None,
    /// PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated once, kept in the data dir.
    SelfSigned,
    /// Let's Encrypt.
    Acme {
        /// At least one.
        domains: Vec<String>,
        /// `mailto:` URLs.
        contact: Vec<String>,
        /// Staging directory instead of production.
        staging: bool,
        /// Directory URL (resolved: Let's Encrypt unless configured).
        directory: String,
        /// Extra CA trusted for the ACME server.
        ca: Option<PathBuf>,
        /// The challenge answered.
        challenge: AcmeChallenge,
        /// The plain HTTP listener (http-01 only).
        http_listen: Option<SocketAddr>,
    },
}

impl Tls {
    /// Whether connections are encrypted by this node.
    pub fn is_on(&self) -> bool {
        !matches!(self, Tls::None)
    }

    /// The mode's name as on the command line, for logs.
    pub fn mode_name(&self) -> &'static str {
        match self {
            Tls::None => "none",
            Tls::Files { .. } => "files",
            Tls::SelfSigned => "self-signed",
            Tls::Acme { .. } => "acme",
        }
    }
}

/// The resolved, checked configuration of `voicechat serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public name.
    pub name: NodeName,
    /// HTTP(S) listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// An explicit public origin, without trailing slash.
    pub public_url: Option<String>,
    /// libp2p listen address.
    pub p2p_listen: Multiaddr,
    /// Peers to dial (flags, or else the file).
    pub peers: Vec<Multiaddr>,
    /// `RTCIceServer` objects.
    pub ice_servers: Vec<serde_json::Value>,
    /// TLS mode.
    pub tls: Tls,
    /// Federation.
    pub federation: FederationConfig,
    /// Password hash concurrency.
    pub max_concurrent_hashes: usize,
    /// Rooms past this many sessions show a count to sockets outside their call.
    pub room_list_max: usize,
    /// The node's STUN/TURN service; `None` when turned off.
    pub turn: Option<TurnConfig>,
    /// The audio forwarding unit; `None` when turned off.
    pub sfu: Option<SfuConfig>,
    /// Browsers encrypt call audio end to end.
    pub e2ee: bool,
    /// Sign-up mode until the administrator chooses.
    pub registration: crate::store::RegistrationMode,
    /// Password login and sign-up.
    pub password_login: bool,
    /// Per-user and per-address limits.
    pub limits: crate::state::Limits,
    /// OpenID Connect providers.
    pub oidc: Vec<crate::oidc::ProviderConfig>,
}

/// The SFU, resolved (its address still to be bound).
#[derive(Debug, Clone, PartialEq)]
pub struct SfuConfig {
    /// UDP.
    pub listen: SocketAddr,
    /// What browsers are told to send to, if not the listen IP.
    pub external_ip: Option<IpAddr>,
    /// Conversation calls move to the SFU at this many people.
    pub threshold: usize,
    /// Loudest speakers forwarded to each listener.
    pub speakers: usize,
    /// Connections at once.
    pub max_peers: usize,
}

/// The STUN/TURN service, resolved (addresses still to be bound).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// UDP and TCP.
    pub listen: SocketAddr,
    /// TLS, when the node has a certificate.
    pub tls_listen: Option<SocketAddr>,
    /// Public address behind 1:1 NAT.
    pub external_ip: Option<IpAddr>,
    /// Inclusive relay port range.
    pub relay_ports: (u16, u16),
    /// Peer networks allowed although refused by default.
    pub allow_peers: Vec<crate::turn::Cidr>,
    /// Allocation quota per user.
    pub max_allocations_per_user: usize,
    /// Bandwidth cap per user, each way.
    pub user_bytes_per_sec: u64,
}

fn parse_relay_ports(text: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || ConfigError::BadRelayPorts(text.to_owned());
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if lo < 1024 || hi < lo {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Where TURN listens when not told: beside the web listener, on the standard port (a
/// free one when the web port is picked freely, as in tests); on all interfaces when the
/// web listener is loopback behind a proxy with a public URL, since browsers must reach
/// TURN directly.
fn default_turn_listen(http: SocketAddr, public_url: Option<&str>, port: u16) -> SocketAddr {
    let port = if http.port() == 0 { 0 } else { port };
    let public_host = public_url.and_then(crate::tls::origin_host);
    let public_is_loopback = match public_host {
        None => true,
        Some("localhost") => true,
        Some(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    };
    let ip = if http.ip().is_loopback() && !public_is_loopback {
        match http.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    } else {
        http.ip()
    };
    SocketAddr::new(ip, port)
}

/// Who this node federates with, resolved.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Closed or open.
    pub mode: Mode,
    /// Extra certificate authorities (PEM files).
    pub ca: Vec<PathBuf>,
    /// Name → address overrides for HTTPS origins.
    pub resolve: std::collections::HashMap<NodeName, SocketAddr>,
    /// Anti-entropy interval.
    pub resync: Option<std::time::Duration>,
    /// Connection limits.
    pub limits: crate::federation::net::ConnLimits,
}

fn parse_resolve(entry: &str) -> Result<(NodeName, SocketAddr), ConfigError> {
    let bad = || ConfigError::BadResolve(entry.to_owned());
    let (name, addr) = entry.split_once('=').ok_or_else(bad)?;
    Ok((NodeName::new(name.trim()).map_err(|_| bad())?, addr.trim().parse().map_err(|_| bad())?))
}

/// Reads and parses a TOML config file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_file(&text, path)
}

/// Parses TOML text; relative paths in it are made relative to `path`'s directory.
pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let mut file: FileConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        ConfigError::Parse {
            path: path.to_owned(),
            message: match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_owned(),
            },
        }
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    let rebase = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(d) = file.data_dir.as_mut() {
        rebase(d);
    }
    if let Some(tls) = file.tls.as_mut() {
        tls.cert.as_mut().map(rebase);
        tls.key.as_mut().map(rebase);
        tls.acme_ca.as_mut().map(rebase);
    }
    if let Some(ca) = file.federation.as_mut().and_then(|f| f.ca.as_mut()) {
        ca.iter_mut().for_each(rebase);
    }
    Ok(file)
}

/// Picks the TLS mode: an explicit mode (flag/env, then file) wins; otherwise `files`
/// when both a certificate and a key are known, else `none`.
pub fn select_tls(
    explicit: Option<TlsMode>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    domains: Vec<String>,
    contact: Vec<String>,
    staging: bool,
    acme: AcmeOptions,
) -> Result<Tls, ConfigError> {
    let mode = explicit.unwrap_or(if cert.is_some() && key.is_some() {
        TlsMode::Files
    } else {
        TlsMode::None
    });
    Ok(match mode {
        TlsMode::None => Tls::None,
        TlsMode::SelfSigned => Tls::SelfSigned,
        TlsMode::Files => match (cert, key) {
            (Some(cert), Some(key)) => Tls::Files { cert, key },
            _ => return Err(ConfigError::MissingCertFiles),
        },
        TlsMode::Acme => {
            if domains.is_empty() {
                return Err(ConfigError::MissingDomain);
            }
            let contact = contact
                .into_iter()
                .map(|c| {
                    if c.starts_with("mailto:") {
                        c
                    } else {
                        format!("mailto:{c}")
                    }
                })
                .collect();
            let directory = match acme.directory {
                Some(d) if d.starts_with("https://") || d.starts_with("http://") => d,
                Some(d) => return Err(ConfigError::BadAcmeDirectory(d)),
                None if staging => LETS_ENCRYPT_STAGING.to_owned(),
                None => LETS_ENCRYPT.to_owned(),
            };
            let challenge = acme.challenge.unwrap_or(AcmeChallenge::TlsAlpn01);
            let http_listen = match challenge {
                AcmeChallenge::Http01 => Some(acme.http_listen.unwrap_or(DEFAULT_ACME_HTTP_LISTEN)),
                AcmeChallenge::TlsAlpn01 => acme.http_listen,
            };
            Tls::Acme {
                domains,
                contact,
                staging,
                directory,
                ca: acme.ca,
                challenge,
                http_listen,
            }
        }
    })
}

/// Checks an explicit public URL and returns it as an origin without trailing slash.
pub fn check_public_url(url: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadPublicUrl(url.to_owned());
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(bad());
    }
    Ok(trimmed.to_owned())
}

/// The origin browsers use when none is configured, from the bound address.
/// Loopback becomes `localhost` (a secure context). An unspecified address becomes
/// loopback, except with a self-signed certificate, which is for a LAN: then the LAN
/// address (`lan_ip`) if known. Default ports are left out, as browsers do in `Origin`.
pub fn derive_public_url(tls: &Tls, bound: SocketAddr, lan_ip: Option<IpAddr>) -> String {
    if let Tls::Acme { domains, .. } = tls {
        return format!("https://{}", domains[0]);
    }
    let scheme = if tls.is_on() { "https" } else { "http" };
    let ip = match (tls, lan_ip) {
        (Tls::SelfSigned, Some(lan)) if bound.ip().is_unspecified() => lan,
        _ => bound.ip(),
    };
    let host = match ip {
        IpAddr::V4(ip) if ip.is_loopback() => "localhost".to_owned(),
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) if ip.is_loopback() => "localhost".to_owned(),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let default_port = if tls.is_on() { 443 } else { 80 };
    if bound.port() == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{}", bound.port())
    }
}

fn check_ice_url(url: &str) -> Result<String, ConfigError> {
    let ok = ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| url.starts_with(p))
        && url.len() > 6
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(url.to_owned())
    } else {
        Err(ConfigError::BadIceServer(url.to_owned()))
    }
}

fn ice_entry_json(e: IceServerEntry) -> Result<serde_json::Value, ConfigError> {
    Ok(match e {
        IceServerEntry::Url(u) => serde_json::json!({ "urls": check_ice_url(&u)? }),
        IceServerEntry::Full(t) => {
            let urls = match t.urls {
                Urls::One(u) => serde_json::json!(check_ice_url(&u)?),
                Urls::Many(us) => serde_json::json!(
                    us.iter()
                        .map(|u| check_ice_url(u))
                        .collect::<Result<Vec<_>, _>>()?
                ),
            };
            let mut v = serde_json::json!({ "urls": urls });
            if let Some(u) = t.username {
                v["username"] = u.into();
            }
            if let Some(c) = t.credential {
                v["credential"] = c.into();
            }
            v
        }
    })
}

/// `Some` non-empty list from the command line, else the file's.
fn list_or(cli: &[String], file: Option<Vec<String>>) -> Vec<String> {
    if cli.is_empty() {
        file.unwrap_or_default()
    } else {
        cli.to_vec()
    }
}

impl Config {
    /// Merges the file under the command line (whose values already include env) and
    /// checks the result.
    pub fn resolve(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        let ftls = file.tls.unwrap_or_default();
        let tls = select_tls(
            args.tls.or(ftls.mode),
            args.cert.clone().or(ftls.cert),
            args.key.clone().or(ftls.key),
            list_or(&args.domain, ftls.domains),
            list_or(&args.acme_contact, ftls.acme_contact),
            args.acme_staging.or(ftls.acme_staging).unwrap_or(false),
            AcmeOptions {
                directory: args.acme_directory.clone().or(ftls.acme_directory),
                ca: args.acme_ca.clone().or(ftls.acme_ca),
                challenge: args.acme_challenge.or(ftls.acme_challenge),
                http_listen: args.acme_http_listen.or(ftls.acme_http_listen),
            },
        )?;

        let name_text = args
            .name
            .clone()
            .or(file.name)
            .unwrap_or_else(|| DEFAULT_NAME.into());
        let name = NodeName::new(&name_text).map_err(|_| ConfigError::BadName(name_text))?;

        let default_listen = if matches!(tls, Tls::Acme { .. }) {
            DEFAULT_ACME_LISTEN
        } else {
            DEFAULT_LISTEN
        };
        let listen = args.listen.or(file.listen).unwrap_or(default_listen);

        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .map(|u| check_public_url(&u))
            .transpose()?;

        let p2p_listen = match (&args.p2p_listen, file.p2p_listen) {
            (Some(m), _) => m.clone(),
            (None, text) => {
                let text = text.unwrap_or_else(|| DEFAULT_P2P_LISTEN.into());
                text.parse().map_err(|_| ConfigError::BadMultiaddr(text))?
            }
        };

        let peers = if args.peer.is_empty() {
            file.peers
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.parse().map_err(|_| ConfigError::BadMultiaddr(t)))
                .collect::<Result<Vec<Multiaddr>, _>>()?
        } else {
            args.peer.clone()
        };

        let ice_servers = if args.ice_server.is_empty() {
            file.ice_servers.unwrap_or_default()
        } else {
            args.ice_server
                .iter()
                .cloned()
                .map(IceServerEntry::Url)
                .collect()
        };
        let ice_servers = ice_servers
            .into_iter()
            .map(ice_entry_json)
            .collect::<Result<Vec<_>, _>>()?;

        let ffed = file.federation.unwrap_or_default();
        let mut resolve = std::collections::HashMap::new();
        for (name, addr) in ffed.resolve.unwrap_or_default() {
            let name = NodeName::new(&name).map_err(|_| ConfigError::BadResolve(format!("{name}={addr}")))?;
            resolve.insert(name, addr);
        }
        for entry in &args.federation_resolve {
            let (name, addr) = parse_resolve(entry)?;
            resolve.insert(name, addr);
        }
        let defaults = crate::federation::net::ConnLimits::default();
        let federation = FederationConfig {
            mode: args.federation.or(ffed.mode).unwrap_or(Mode::Closed),
            ca: if args.federation_ca.is_empty() { ffed.ca.unwrap_or_default() } else { args.federation_ca.clone() },
            resolve,
            resync: args.resync_secs.or(ffed.resync_secs).map(|s| std::time::Duration::from_secs(s.max(1))),
            limits: crate::federation::net::ConnLimits {
                total: ffed.max_connections.unwrap_or(defaults.total).max(1),
                per_peer: ffed.max_connections_per_peer.unwrap_or(defaults.per_peer).max(1),
                pending_incoming: defaults.pending_incoming,
            },
        };

        let fturn = file.turn.unwrap_or_default();
        let turn = match args.turn.or(fturn.mode).unwrap_or(Switch::On) {
            Switch::Off => None,
            Switch::On => {
                let listen_turn = args
                    .turn_listen
                    .or(fturn.listen)
                    .unwrap_or_else(|| default_turn_listen(listen, public_url.as_deref(), DEFAULT_TURN_PORT));
                let tls_listen = args.turn_tls_listen.or(fturn.tls_listen).or_else(|| {
                    tls.is_on().then(|| {
                        let port = if listen_turn.port() == 0 { 0 } else { DEFAULT_TURNS_PORT };
                        SocketAddr::new(listen_turn.ip(), port)
                    })
                });
                let relay_ports = match args.turn_relay_ports.clone().or(fturn.relay_ports) {
                    Some(t) => parse_relay_ports(&t)?,
                    None => DEFAULT_RELAY_PORTS,
                };
                Some(TurnConfig {
                    listen: listen_turn,
                    tls_listen: tls_listen.filter(|_| tls.is_on()),
                    external_ip: args.turn_external_ip.or(fturn.external_ip),
                    relay_ports,
                    allow_peers: if args.turn_allow_peer.is_empty() {
                        fturn.allow_peers.unwrap_or_default()
                    } else {
                        args.turn_allow_peer.clone()
                    },
                    max_allocations_per_user: fturn.max_allocations_per_user.unwrap_or(DEFAULT_MAX_ALLOCATIONS_PER_USER).max(1),
                    user_bytes_per_sec: fturn.user_bytes_per_sec.unwrap_or(DEFAULT_TURN_USER_BYTES_PER_SEC).max(1500),
                })
            }
        };

        let fsfu = file.sfu.unwrap_or_default();
        let sfu = match args.sfu.or(fsfu.mode).unwrap_or(Switch::On) {
            Switch::Off => None,
            Switch::On => {
                let listen = args.sfu_listen.or(fsfu.listen).unwrap_or_else(|| {
                    let near = turn.as_ref().map_or_else(|| default_turn_listen(listen, public_url.as_deref(), 0), |t| t.listen);
                    SocketAddr::new(near.ip(), if listen.port() == 0 { 0 } else { DEFAULT_SFU_PORT })
                });
                Some(SfuConfig {
                    listen,
                    external_ip: args
                        .sfu_external_ip
                        .or(fsfu.external_ip)
                        .or_else(|| turn.as_ref().and_then(|t| t.external_ip)),
                    threshold: args.sfu_threshold.or(fsfu.threshold).unwrap_or(DEFAULT_SFU_THRESHOLD).max(2),
                    speakers: fsfu.speakers.unwrap_or(DEFAULT_SFU_SPEAKERS).clamp(1, 8),
                    max_peers: fsfu.max_peers.unwrap_or(2000).max(1),
                })
            }
        };

        let oidc = file.oidc.unwrap_or_default();
        for (i, p) in oidc.iter().enumerate() {
            p.check().map_err(ConfigError::BadOidc)?;
            if oidc[..i].iter().any(|q| q.id == p.id) {
                return Err(ConfigError::BadOidc(format!("oidc provider id {:?} is used twice", p.id)));
            }
        }
        let fa = file.accounts.unwrap_or_default();
        let d = crate::state::Limits::default();
        let limits = crate::state::Limits {
            sockets_per_user: args.sockets_per_user.or(fa.sockets_per_user).unwrap_or(d.sockets_per_user).max(1),
            call_seats_per_user: args.call_seats_per_user.or(fa.call_seats_per_user).unwrap_or(d.call_seats_per_user).max(1),
            registrations_per_hour: args.registrations_per_hour.or(fa.registrations_per_hour).unwrap_or(d.registrations_per_hour).max(1),
            resume_grace: args.resume_grace.or(fa.resume_grace).map_or(d.resume_grace, std::time::Duration::from_secs),
        };
        Ok(Config {
            turn,
            sfu,
            registration: args.registration.or(fa.registration).unwrap_or_default(),
            password_login: args.password_login.or(fa.password_login).unwrap_or(Switch::On) == Switch::On,
            limits,
            oidc,
            e2ee: args.e2ee.or(file.e2ee).unwrap_or(Switch::On) == Switch::On,
            federation,
            name,
            listen,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            public_url,
            p2p_listen,
            peers,
            ice_servers,
            tls,
            max_concurrent_hashes: file
                .max_concurrent_hashes
                .unwrap_or(DEFAULT_MAX_CONCURRENT_HASHES)
                .max(1),
            room_list_max: args.room_list_max.or(file.room_list_max).unwrap_or(crate::rooms::DEFAULT_LIST_MAX),
        })
    }

    /// The public origin, given the address actually bound (and the LAN address, used
    /// only for a self-signed node listening on all addresses).
    pub fn public_url(&self, bound: SocketAddr, lan_ip: Option<IpAddr>) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| derive_public_url(&self.tls, bound, lan_ip))
    }

    /// What the HTTP layer needs, given the address actually bound.
    pub fn settings(&self, bound: SocketAddr, lan_ip: Option<IpAddr>) -> Settings {
        let url = self.public_url(bound, lan_ip);
        let mut s = Settings::new(self.name.clone(), url);
        s.secure_cookies = self.tls.is_on() || s.public_url.starts_with("https://");
        s.ice_servers = self.ice_servers.clone();
        s.max_concurrent_hashes = self.max_concurrent_hashes;
        s.e2ee = self.e2ee;
        s.limits = self.limits;
        s.registration = self.registration;
        s.password_login = self.password_login;
        s.oidc = self.oidc.clone();
        s
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    /// Parses a `serve` command line.
    fn args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["voicechat", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").command {
            Some(crate::cli::Command::Serve(a)) => a,
            _ => unreachable!(),
        }
    }

    fn file(text: &str) -> FileConfig {
        parse_file(text, Path::new("/etc/voicechat/node.toml")).expect("valid toml")
    }

    #[test]
    fn defaults_with_nothing_given() {
        let c = Config::resolve(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!(c.name.as_str(), "localhost");
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from("./voicechat-data"));
        assert_eq!(c.p2p_listen.to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(c.tls, Tls::None);
        assert!(c.ice_servers.is_empty());
        let s = c.settings("127.0.0.1:3001".parse().unwrap(), None);
        assert_eq!(s.public_url, "http://localhost:3001");
        assert!(!s.secure_cookies);
    }

    #[test]
    fn room_list_size_from_flag_or_file() {
        let c = Config::resolve(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!(c.room_list_max, crate::rooms::DEFAULT_LIST_MAX);
        let c = Config::resolve(&args(&[]), file("room_list_max = 20\n")).unwrap();
        assert_eq!(c.room_list_max, 20);
        let c = Config::resolve(&args(&["--room-list-max", "5"]), file("room_list_max = 20\n")).unwrap();
        assert_eq!(c.room_list_max, 5, "the flag beats the file");
        assert!(Config::resolve(&args(&[]), file("")).unwrap().e2ee, "end to end by default");
        assert!(!Config::resolve(&args(&[]), file("e2ee = \"off\"\n")).unwrap().e2ee);
        assert!(Config::resolve(&args(&["--e2ee", "on"]), file("e2ee = \"off\"\n")).unwrap().e2ee);
    }

    #[test]
    fn account_limits_default_as_documented_and_flags_beat_the_file() {
        let c = Config::resolve(&args(&[]), file("")).unwrap();
        assert_eq!(c.limits, crate::state::Limits { sockets_per_user: 8, call_seats_per_user: 1, registrations_per_hour: 10, resume_grace: std::time::Duration::from_secs(20) });
        assert_eq!(c.registration, crate::store::RegistrationMode::Open);
        assert!(c.password_login);
        let f = "[accounts]\nregistration = \"invite-only\"\nsockets_per_user = 3\npassword_login = \"off\"\n";
        let c = Config::resolve(&args(&["--sockets-per-user", "500", "--registrations-per-hour", "1000"]), file(f)).unwrap();
        assert_eq!(c.limits.sockets_per_user, 500, "the flag beats the file");
        assert_eq!(c.limits.registrations_per_hour, 1000);
        assert_eq!(c.registration, crate::store::RegistrationMode::InviteOnly);
        assert!(!c.password_login);
        let f = "[[oidc]]\nid = \"corp\"\nname = \"Corp\"\nissuer = \"https://id.example.org\"\nclient_id = \"vc\"\n";
        let c = Config::resolve(&args(&[]), file(f)).unwrap();
        assert_eq!((c.oidc.len(), c.oidc[0].id.as_str(), c.oidc[0].client_secret.is_none()), (1, "corp", true));
        let twice = format!("{f}{f}");
        assert!(Config::resolve(&args(&[]), file(&twice)).unwrap_err().to_string().contains("used twice"));
        let bad = f.replace("https://id.example.org", "id.example.org");
        assert!(Config::resolve(&args(&[]), file(&bad)).unwrap_err().to_string().contains("not an http(s) URL"));
    }

    #[test]
    fn federation_settings_from_flags_and_file() {
        let c = Config::resolve(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!(c.federation.mode, Mode::Closed, "closed unless the operator opens it");
        assert!(c.federation.resolve.is_empty() && c.federation.resync.is_none());
        let f = "[federation]\nmode = \"open\"\nca = [\"ca.pem\"]\nresolve = { \"beta.example\" = \"192.0.2.7:443\" }\n\
                 resync_secs = 60\nmax_connections = 10\n";
        let c = Config::resolve(&args(&[]), file(f)).unwrap();
        assert_eq!(c.federation.mode, Mode::Open);
        assert_eq!(c.federation.ca, vec![PathBuf::from("/etc/voicechat/ca.pem")], "relative to the file");
        assert_eq!(c.federation.resolve[&NodeName::new("beta.example").unwrap()], "192.0.2.7:443".parse().unwrap());
        assert_eq!(c.federation.resync, Some(std::time::Duration::from_secs(60)));
        assert_eq!(c.federation.limits.total, 10);
        let c = Config::resolve(
            &args(&["--federation", "closed", "--federation-resolve", "gamma.example=198.51.100.1:8443", "--resync-secs", "5"]),
            file(f),
        )
        .unwrap();
        assert_eq!(c.federation.mode, Mode::Closed, "the flag beats the file");
        assert_eq!(c.federation.resolve.len(), 2);
        assert_eq!(c.federation.resync, Some(std::time::Duration::from_secs(5)));
        let e = Config::resolve(&args(&["--federation-resolve", "no-port-here"]), FileConfig::default()).unwrap_err();
        assert!(matches!(e, ConfigError::BadResolve(_)), "{e}");
    }

    #[test]
    fn turn_is_on_beside_the_web_listener_unless_turned_off() {
        let c = Config::resolve(&args(&[]), FileConfig::default()).unwrap();
        let t = c.turn.expect("on by default");
        assert_eq!(t.listen, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(t.tls_listen, None, "no turns: without a certificate");
        assert_eq!(t.relay_ports, DEFAULT_RELAY_PORTS);
        let c = Config::resolve(&args(&["--listen", "127.0.0.1:0"]), FileConfig::default()).unwrap();
        assert_eq!(c.turn.unwrap().listen, "127.0.0.1:0".parse().unwrap(), "a free port beside a free port");
        let c = Config::resolve(&args(&["--listen", "0.0.0.0:3001", "--tls", "self-signed"]), FileConfig::default()).unwrap();
        let t = c.turn.unwrap();
        assert_eq!((t.listen, t.tls_listen), ("0.0.0.0:3478".parse().unwrap(), Some("0.0.0.0:5349".parse().unwrap())));
        // Behind a proxy: the web listener is loopback, browsers reach TURN directly.
        let c = Config::resolve(&args(&["--public-url", "https://voice.example.org"]), FileConfig::default()).unwrap();
        assert_eq!(c.turn.unwrap().listen, "0.0.0.0:3478".parse().unwrap());
        let c = Config::resolve(&args(&["--turn", "off"]), FileConfig::default()).unwrap();
        assert!(c.turn.is_none());
        let f = "[turn]\nmode = \"off\"\n";
        assert!(Config::resolve(&args(&[]), file(f)).unwrap().turn.is_none());
        assert!(Config::resolve(&args(&["--turn", "on"]), file(f)).unwrap().turn.is_some(), "the flag beats the file");
        let f = "[turn]\nlisten = \"203.0.113.1:3478\"\nexternal_ip = \"198.51.100.9\"\nrelay_ports = \"50000-50100\"\n\
                 allow_peers = [\"10.0.0.0/8\"]\nmax_allocations_per_user = 5\nuser_bytes_per_sec = 100000\n";
        let t = Config::resolve(&args(&[]), file(f)).unwrap().turn.unwrap();
        assert_eq!(t.listen, "203.0.113.1:3478".parse().unwrap());
        assert_eq!(t.external_ip, Some("198.51.100.9".parse().unwrap()));
        assert_eq!(t.relay_ports, (50000, 50100));
        assert_eq!(t.allow_peers, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!((t.max_allocations_per_user, t.user_bytes_per_sec), (5, 100000));
        let t = Config::resolve(&args(&["--turn-relay-ports", "40000-40009", "--turn-allow-peer", "127.0.0.1"]), file(f))
            .unwrap()
            .turn
            .unwrap();
        assert_eq!(t.relay_ports, (40000, 40009));
        assert_eq!(t.allow_peers, vec!["127.0.0.1/32".parse().unwrap()]);
        for bad in ["49152", "500-600", "60000-50000", "a-b"] {
            let e = Config::resolve(&args(&["--turn-relay-ports", bad]), FileConfig::default()).unwrap_err();
            assert!(matches!(e, ConfigError::BadRelayPorts(_)), "{bad}: {e}");
        }
        assert!(Cli::try_parse_from(["voicechat", "--turn-allow-peer", "10.0.0.0/40"]).is_err());
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let f = "name = \"fromfile\"\nlisten = \"0.0.0.0:8080\"\ndata_dir = \"data\"\n\
                 ice_servers = [\"stun:stun.example.org\"]\n";
        let c = Config::resolve(&args(&["--name", "fromflag"]), file(f)).unwrap();
        assert_eq!(c.name.as_str(), "fromflag");
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            c.data_dir,
            PathBuf::from("/etc/voicechat/data"),
            "relative to the file"
        );
        assert_eq!(
            c.ice_servers,
            vec![serde_json::json!({"urls": "stun:stun.example.org"})]
        );
        let c = Config::resolve(&args(&["--ice-server", "turn:t.example.org"]), file(f)).unwrap();
        assert_eq!(
            c.ice_servers,
            vec![serde_json::json!({"urls": "turn:t.example.org"})]
        );
    }

    /// Env twins are filled in by clap before `resolve` sees them, so an env value
    /// takes the same path as a flag value (beating the file) and clap prefers a flag
    /// over its env twin. Setting env vars needs `unsafe` in Rust 2024, which the
    /// workspace forbids, so this checks the wiring rather than mutating the env.
    #[test]
    fn env_beats_file_through_the_flag_path() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id() == "public_url")
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("VOICECHAT_PUBLIC_URL")
        );
        let f = file("public_url = \"https://file.example.org\"");
        let c = Config::resolve(&args(&["--public-url", "https://env.example.org/"]), f).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://env.example.org"));
    }

    #[test]
    fn every_serve_flag_has_an_env_twin() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        for a in serve.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = a
                .get_env()
                .and_then(|e| e.to_str())
                .unwrap_or_else(|| panic!("{id}"));
            assert!(
                env.starts_with("VOICECHAT_") || env.starts_with("HTTPS_"),
                "{id}: {env}"
            );
        }
    }

    #[test]
    fn tls_mode_selection() {
        let p = |s: &str| Some(PathBuf::from(s));
        let sel = |m, c, k| select_tls(m, c, k, vec![], vec![], false, AcmeOptions::default());
        assert_eq!(sel(None, None, None).unwrap(), Tls::None);
        assert_eq!(sel(None, p("c"), None).unwrap(), Tls::None, "needs both");
        assert_eq!(
            sel(None, p("c"), p("k")).unwrap(),
            Tls::Files {
                cert: "c".into(),
                key: "k".into()
            },
            "HTTPS_CERT + HTTPS_KEY alone select files"
        );
        assert_eq!(sel(Some(TlsMode::None), p("c"), p("k")).unwrap(), Tls::None);
        assert_eq!(
            sel(Some(TlsMode::SelfSigned), p("c"), p("k")).unwrap(),
            Tls::SelfSigned
        );
        assert!(matches!(
            sel(Some(TlsMode::Files), p("c"), None),
            Err(ConfigError::MissingCertFiles)
        ));
        assert!(matches!(
            sel(Some(TlsMode::Acme), None, None),
            Err(ConfigError::MissingDomain)
        ));
        let acme = select_tls(
            Some(TlsMode::Acme),
            None,
            None,
            vec!["v.example.org".into()],
            vec!["a@example.org".into(), "mailto:b@example.org".into()],
            true,
            AcmeOptions::default(),
        )
        .unwrap();
        assert_eq!(
            acme,
            Tls::Acme {
                domains: vec!["v.example.org".into()],
                contact: vec!["mailto:a@example.org".into(), "mailto:b@example.org".into()],
                staging: true,
                directory: LETS_ENCRYPT_STAGING.into(),
                ca: None,
                challenge: AcmeChallenge::TlsAlpn01,
                http_listen: None,
            }
        );
        let opts = AcmeOptions {
            directory: Some("https://127.0.0.1:14000/dir".into()),
            challenge: Some(AcmeChallenge::Http01),
            ..AcmeOptions::default()
        };
        let acme = select_tls(Some(TlsMode::Acme), None, None, vec!["v.example.org".into()], vec![], true, opts).unwrap();
        let Tls::Acme { directory, challenge, http_listen, .. } = acme else { panic!("not acme") };
        assert_eq!(directory, "https://127.0.0.1:14000/dir", "an explicit directory beats staging");
        assert_eq!((challenge, http_listen), (AcmeChallenge::Http01, Some(DEFAULT_ACME_HTTP_LISTEN)));
        let bad = AcmeOptions { directory: Some("pebble:14000".into()), ..AcmeOptions::default() };
        let e = select_tls(Some(TlsMode::Acme), None, None, vec!["v.example.org".into()], vec![], false, bad).unwrap_err();
        assert!(matches!(e, ConfigError::BadAcmeDirectory(_)), "{e}");
    }

    #[test]
    fn tls_from_file_and_acme_defaults() {
        let f = file("[tls]\nmode = \"acme\"\ndomains = [\"voice.example.org\"]\n");
        let c = Config::resolve(&args(&[]), f).unwrap();
        assert_eq!(c.listen, DEFAULT_ACME_LISTEN);
        let s = c.settings("0.0.0.0:443".parse().unwrap(), None);
        assert_eq!(s.public_url, "https://voice.example.org");
        assert!(s.secure_cookies);
        // A flag overrides the file's mode.
        let f = file("[tls]\nmode = \"acme\"\ndomains = [\"voice.example.org\"]\n");
        let c = Config::resolve(&args(&["--tls", "self-signed"]), f).unwrap();
        assert_eq!(c.tls, Tls::SelfSigned);
    }

    #[test]
    fn public_url_derivation() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            derive_public_url(&Tls::None, a("127.0.0.1:3001"), None),
            "http://localhost:3001"
        );
        assert_eq!(
            derive_public_url(&Tls::None, a("0.0.0.0:3001"), None),
            "http://127.0.0.1:3001"
        );
        assert_eq!(
            derive_public_url(&Tls::None, a("192.168.1.5:80"), None),
            "http://192.168.1.5"
        );
        assert_eq!(
            derive_public_url(&Tls::SelfSigned, a("192.168.1.5:443"), None),
            "https://192.168.1.5"
        );
        assert_eq!(
            derive_public_url(&Tls::SelfSigned, a("[::1]:8443"), None),
            "https://localhost:8443"
        );
        assert_eq!(
            derive_public_url(&Tls::None, a("[fe80::1]:3001"), None),
            "http://[fe80::1]:3001"
        );
        assert_eq!(
            derive_public_url(&Tls::None, a("[::]:3001"), None),
            "http://[::1]:3001"
        );
        let lan = Some("192.168.1.5".parse().unwrap());
        assert_eq!(
            derive_public_url(&Tls::SelfSigned, a("0.0.0.0:8443"), lan),
            "https://192.168.1.5:8443",
            "a LAN node is reached by its LAN address"
        );
        assert_eq!(
            derive_public_url(&Tls::None, a("0.0.0.0:3001"), lan),
            "http://127.0.0.1:3001"
        );
    }

    #[test]
    fn explicit_public_url_checked_and_secure_cookies_behind_proxy() {
        assert_eq!(
            check_public_url("https://v.example.org/").unwrap(),
            "https://v.example.org"
        );
        assert!(check_public_url("v.example.org").is_err());
        assert!(check_public_url("https://v.example.org/app").is_err());
        assert!(check_public_url("ftp://v.example.org").is_err());
        let c = Config::resolve(
            &args(&["--public-url", "https://v.example.org"]),
            FileConfig::default(),
        )
        .unwrap();
        let s = c.settings("127.0.0.1:3001".parse().unwrap(), None);
        assert_eq!(s.public_url, "https://v.example.org");
        assert!(s.secure_cookies, "https behind a proxy");
    }

    #[test]
    fn bad_values_are_one_clear_error() {
        assert!(matches!(
            Config::resolve(&args(&["--name", "no spaces!"]), FileConfig::default()),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            Config::resolve(&args(&[]), file("p2p_listen = \"tcp:4001\"")),
            Err(ConfigError::BadMultiaddr(_))
        ));
        assert!(Cli::try_parse_from(["voicechat", "--p2p-listen", "nonsense"]).is_err());
        assert!(matches!(
            Config::resolve(&args(&["--ice-server", "http://x"]), FileConfig::default()),
            Err(ConfigError::BadIceServer(_))
        ));
        let err = parse_file("nmae = \"x\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }

    #[test]
    fn ice_server_tables() {
        let f = file(
            "ice_servers = [\"stun:s.example.org\", \
             { urls = [\"turn:t.example.org:3478\", \"turns:t.example.org:5349\"], \
               username = \"u\", credential = \"p\" }]",
        );
        let c = Config::resolve(&args(&[]), f).unwrap();
        assert_eq!(c.ice_servers[1]["username"], "u");
        assert_eq!(c.ice_servers[1]["urls"][1], "turns:t.example.org:5349");
    }

    #[test]
    fn sample_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["config.dev.toml", "config.prod.toml"] {
            let f = load_file(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            Config::resolve(&args(&[]), f).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
