//! `voicechat doctor`: reads the configuration the way `serve` would, asks the running
//! node (over its admin socket) where it listens, and checks from outside that each
//! port answers, that the certificate is valid for a while yet, and that the public URL
//! answers; prints every problem with what to do about it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::admin::{self, Request, Status};
use crate::cli::ServeArgs;
use crate::config::{self, Config, FileConfig, Tls};

/// A certificate expiring sooner than this is a problem (ACME renews at a third left).
pub const EXPIRY_WARNING_DAYS: i64 = 14;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked and what was found.
    pub what: String,
    /// `None` when fine; what to do otherwise.
    pub fix: Option<String>,
}

fn ok(what: impl Into<String>) -> Finding {
    Finding { what: what.into(), fix: None }
}

fn problem(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { what: what.into(), fix: Some(fix.into()) }
}

/// Runs every check, prints them, and fails when any found a problem.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let findings = check(&args).await;
    let problems = findings.iter().filter(|f| f.fix.is_some()).count();
    for f in &findings {
        match &f.fix {
            None => println!("ok       {}", f.what),
            Some(fix) => println!("PROBLEM  {}\n         fix: {fix}", f.what),
        }
    }
    if problems > 0 {
        anyhow::bail!("{problems} problem(s) found");
    }
    println!("no problems found");
    Ok(())
}

/// Every check, in order; stops early only when the config cannot be read.
pub async fn check(args: &ServeArgs) -> Vec<Finding> {
    let mut out = Vec::new();
    let file = match &args.config {
        Some(path) => match config::load_file(path) {
            Ok(f) => f,
            Err(e) => return vec![problem(format!("config: {e}"), "correct the file (see node/config.prod.toml)")],
        },
        None => FileConfig::default(),
    };
    let config = match Config::resolve(args, file) {
        Ok(c) => c,
        Err(e) => return vec![problem(format!("config: {e}"), "correct the flag, env variable or file setting it names")],
    };
    out.push(ok(format!("config: node {}, TLS {}", config.name, config.tls.mode_name())));
    out.extend(check_data_dir(&config.data_dir));

    let status = match admin::call(&config.data_dir, &Request::Status).await {
        Ok(Some(Ok(r))) => r.status,
        Ok(Some(Err(e))) => {
            out.push(problem(format!("admin socket: {e}"), "restart the node"));
            None
        }
        Ok(None) => None,
        Err(e) => {
            out.push(problem(format!("admin socket: {e:#}"), "run doctor as the user the node runs as"));
            None
        }
    };
    match &status {
        Some(s) => out.extend(check_running(s)),
        None => {
            out.push(problem(
                format!("node: not running on {} (no admin socket)", config.data_dir.display()),
                "start it (systemctl start voicechat, or voicechat serve …) and run doctor again",
            ));
            out.extend(check_free_ports(&config));
        }
    }
    out.extend(check_certificate(&config, status.as_ref()).await);
    let url = match &status {
        Some(s) => s.url.clone(),
        None => config.public_url(config.listen, None),
    };
    out.extend(check_public_url(&config, &url).await);
    out
}

fn check_data_dir(dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    if !dir.join("db").exists() {
        out.push(problem(
            format!("data dir {}: no store yet", dir.display()),
            "check --data-dir / data_dir (a new node creates it at first start)",
        ));
        return out;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(crate::node_key::FILE_NAME);
        if let Ok(meta) = std::fs::metadata(&key) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(problem(
                    format!("node key {} is readable by others (mode {mode:o})", key.display()),
                    format!("chmod 600 {}", key.display()),
                ));
            } else {
                out.push(ok(format!("node key {} is private", key.display())));
            }
        }
    }
    out
}

/// The running node's addresses, probed from outside.
fn check_running(s: &Status) -> Vec<Finding> {
    let mut out = vec![ok(format!("node: running, serving {}", s.url))];
    let probe = |what: &str, addr: &str, fix: &str| match tcp_probe(addr) {
        Ok(()) => ok(format!("{what} port {addr} answers")),
        Err(e) => problem(format!("{what} port {addr} does not answer: {e}"), fix.to_owned()),
    };
    out.push(probe("HTTP", &s.http, "check --listen and firewalls; see the node's log"));
    for ma in s.p2p.iter().filter(|m| m.contains("/tcp/")) {
        match tcp_of_multiaddr(ma) {
            Some(addr) => out.push(probe("federation", &addr.to_string(), "check --p2p-listen and firewalls (TCP)")),
            None => out.push(ok(format!("federation listening on {ma}"))),
        }
    }
    match &s.turn {
        Some(t) => out.push(probe("TURN", t, "check --turn-listen; open UDP and TCP to it in the firewall")),
        None => out.push(ok("TURN: off")),
    }
    out
}

/// A stopped node's configured ports: someone else holding one would stop it starting.
fn check_free_ports(c: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut bind = |what: &str, addr: SocketAddr, flag: &str| {
        if addr.port() == 0 {
            return;
        }
        match TcpListener::bind(addr) {
            Ok(_) => out.push(ok(format!("{what} port {addr} is free for the node"))),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => out.push(problem(
                format!("{what} port {addr} is in use by another program"),
                format!("stop that program (ss -ltnp 'sport = :{}') or choose another with {flag}", addr.port()),
            )),
            Err(e) => out.push(problem(
                format!("{what} port {addr} cannot be bound: {e}"),
                "ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)".to_owned(),
            )),
        }
    };
    bind("HTTP", c.listen, "--listen");
    if let Some(addr) = tcp_of_multiaddr(&c.p2p_listen.to_string()) {
        bind("federation", addr, "--p2p-listen");
    }
    if let Some(t) = &c.turn {
        bind("TURN", t.listen, "--turn-listen");
    }
    out
}

async fn check_certificate(c: &Config, status: Option<&Status>) -> Vec<Finding> {
    let mut out = Vec::new();
    let now = crate::time::unix_now() as i64;
    let judge = |source: String, der: &[u8]| match crate::tls::cert_facts(der) {
        Ok((_, not_after)) => {
            let days = (not_after - now).div_euclid(86_400);
            if not_after <= now {
                problem(format!("certificate {source} expired {} days ago", -days), renew_fix(&c.tls))
            } else if days < EXPIRY_WARNING_DAYS {
                problem(format!("certificate {source} expires in {days} days"), renew_fix(&c.tls))
            } else {
                ok(format!("certificate {source} valid for {days} more days"))
            }
        }
        Err(e) => problem(format!("certificate {source}: {e}"), renew_fix(&c.tls)),
    };
    match &c.tls {
        Tls::None => {}
        Tls::Files { cert, .. } => match std::fs::read(cert).map_err(|e| e.to_string()).and_then(|pem| first_der(&pem)) {
            Ok(der) => out.push(judge(format!("file {}", cert.display()), &der)),
            Err(e) => out.push(problem(format!("certificate file {}: {e}", cert.display()), renew_fix(&c.tls))),
        },
        Tls::SelfSigned => {}
        Tls::Acme { domains, .. } => {
            let cache = c.data_dir.join("tls").join("acme");
            let cached = std::fs::read_dir(&cache).ok().into_iter().flatten().flatten().find(|e| {
                e.file_name().to_string_lossy().starts_with("cached_cert_")
            });
            match cached.and_then(|e| std::fs::read(e.path()).ok()) {
                Some(pem) => match first_der(&pem) {
                    Ok(der) => out.push(judge("from ACME (cached)".into(), &der)),
                    Err(e) => out.push(problem(format!("cached ACME certificate: {e}"), renew_fix(&c.tls))),
                },
                None => out.push(problem(
                    format!("no certificate from ACME yet for {}", domains.join(", ")),
                    renew_fix(&c.tls),
                )),
            }
        }
    }
    if let (true, Some(s)) = (c.tls.is_on(), status) {
        match served_cert(&s.http).await {
            Ok(der) => out.push(judge(format!("served on {}", s.http), &der)),
            Err(e) => out.push(problem(format!("no certificate served on {}: {e}", s.http), renew_fix(&c.tls))),
        }
    }
    out
}

fn renew_fix(tls: &Tls) -> String {
    match tls {
        Tls::Files { cert, .. } => format!(
            "renew it (certbot renew, or your CA), write it to {}, then `systemctl reload voicechat` (SIGHUP)",
            cert.display()
        ),
        Tls::Acme { domains, challenge, .. } => format!(
            "the node renews by itself: check the log for `acme failed`, that DNS for {} points here, and that port {} reaches the node",
            domains.join(", "),
            match challenge {
                config::AcmeChallenge::TlsAlpn01 => "443",
                config::AcmeChallenge::Http01 => "80",
            }
        ),
        _ => "delete the data dir's tls/ folder and restart to regenerate it".into(),
    }
}

async fn check_public_url(c: &Config, url: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let host = crate::tls::origin_host(url).unwrap_or("");
    let local = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("http://") && !local {
        out.push(problem(
            format!("public URL {url} is plain HTTP: browsers allow the microphone only on HTTPS (or localhost)"),
            "turn on TLS (--tls acme / files), or put the node behind a TLS proxy and set --public-url https://…",
        ));
    }
    let health = format!("{url}/healthz");
    let client = |verify: bool| {
        reqwest::Client::builder().timeout(PROBE_TIMEOUT).danger_accept_invalid_certs(!verify).build().expect("client")
    };
    match client(true).get(&health).send().await {
        Ok(r) if r.status().is_success() => out.push(ok(format!("public URL {url} answers"))),
        Ok(r) => out.push(problem(
            format!("public URL {url} answers {} at /healthz", r.status()),
            "a proxy in front may point elsewhere: check its upstream (node/packaging/nginx.conf)",
        )),
        Err(e) => {
            let untrusted = client(false).get(&health).send().await.is_ok_and(|r| r.status().is_success());
            if untrusted && matches!(c.tls, Tls::SelfSigned) {
                out.push(ok(format!("public URL {url} answers (self-signed: browsers ask for an exception)")));
            } else if untrusted {
                out.push(problem(
                    format!("public URL {url} answers, but its certificate is not trusted"),
                    "serve the full chain from a public CA (--tls acme, or the fullchain file)",
                ));
            } else {
                out.push(problem(
                    format!("public URL {url} does not answer: {}", crate::federation::wellknown::chain(&e)),
                    "check --public-url, DNS, firewalls and the proxy in front of the node",
                ));
            }
        }
    }
    out
}

fn tcp_probe(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|_| format!("{addr} is not an address"))?;
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() },
            addr.port(),
        )
    } else {
        addr
    };
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map(drop).map_err(|e| e.to_string())
}

fn tcp_of_multiaddr(ma: &str) -> Option<SocketAddr> {
    let parts: Vec<&str> = ma.split('/').collect();
    let ip = match parts.get(1..3)? {
        ["ip4", ip] | ["ip6", ip] => ip.parse().ok()?,
        _ => return None,
    };
    match parts.get(3..5)? {
        ["tcp", port] => Some(SocketAddr::new(ip, port.parse().ok()?)),
        _ => None,
    }
}

fn first_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or_else(|| "no CERTIFICATE block".to_owned())?
        .map(|c| c.to_vec())
        .map_err(|e| format!("not valid PEM: {e}"))
}

/// The leaf certificate the node serves (read without checking it).
async fn served_cert(addr: &str) -> Result<Vec<u8>, String> {
    let a: SocketAddr = addr.parse().map_err(|_| format!("{addr} is not an address"))?;
    let ip = if a.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { a.ip() };
    let url = format!("https://{}/healthz", SocketAddr::new(ip, a.port()));
    let res = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .map_err(|e| e.to_string())?
        .get(&url)
        .send()
        .await
        .map_err(|e| crate::federation::wellknown::chain(&e))?;
    let info = res.extensions().get::<reqwest::tls::TlsInfo>().ok_or("no TLS")?;
    info.peer_certificate().map(<[u8]>::to_vec).ok_or_else(|| "no certificate".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddr_tcp_ports() {
        assert_eq!(tcp_of_multiaddr("/ip4/127.0.0.1/tcp/4001/p2p/x"), Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(tcp_of_multiaddr("/ip4/127.0.0.1/udp/4001/quic-v1"), None);
        assert_eq!(tcp_of_multiaddr("/dns4/x/tcp/1"), None);
    }
}
