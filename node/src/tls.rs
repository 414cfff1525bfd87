//! TLS material for the HTTP server: PEM files, a self-signed certificate kept in the
//! data dir, or Let's Encrypt through rustls-acme.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process-wide rustls provider (both ring and aws-lc are compiled
/// in, so rustls cannot pick one by itself). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn server_config_builder()
-> anyhow::Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>> {
    Ok(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?,
    )
}

fn with_alpn(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server config from PEM text; `what` names the source in errors.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{what}: certificate file is not valid PEM: {e}"))?;
    if certs.is_empty() {
        bail!("{what}: no CERTIFICATE block in the certificate file");
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| anyhow!("{what}: key file is not valid PEM: {e}"))?
        .ok_or_else(|| anyhow!("{what}: no PRIVATE KEY block in the key file"))?;
    let config = server_config_builder()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow!("{what}: certificate and key do not work together: {e}"))?;
    Ok(with_alpn(config))
}

/// A server config from PEM certificate-chain and key files.
pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read key {}", key.display()))?;
    from_pem(
        &cert_pem,
        &key_pem,
        &format!("{} / {}", cert.display(), key.display()),
    )
}

/// The names a self-signed certificate covers: the node name, localhost, 127.0.0.1, the
/// listen IP (or, when listening on all addresses, the LAN IP), and the public URL's host.
pub fn self_signed_sans(
    name: &str,
    listen: IpAddr,
    lan_ip: Option<IpAddr>,
    public_host: Option<&str>,
) -> Vec<String> {
    let mut sans = vec![
        name.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let ip = if listen.is_unspecified() {
        lan_ip
    } else {
        Some(listen)
    };
    sans.extend(ip.map(|ip| ip.to_string()));
    sans.extend(public_host.map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()));
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// The host part of an `http(s)://host[:port]` origin.
pub fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(rest.rsplit_once(':').map_or(rest, |(h, _)| h))
}

/// The address this machine uses to reach the outside, found without sending anything
/// (connecting a UDP socket only picks a route). `None` without a route.
pub fn lan_ip() -> Option<IpAddr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?; // TEST-NET-1: never answered, only routed.
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Where the self-signed material lives.
pub struct SelfSignedPaths {
    /// Certificate, PEM.
    pub cert: PathBuf,
    /// Private key, PEM, mode 0600.
    pub key: PathBuf,
    /// The SAN list the certificate was made for, one per line.
    pub sans: PathBuf,
}

impl SelfSignedPaths {
    /// The files under `<data_dir>/tls/`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            cert: dir.join("self-signed.crt"),
            key: dir.join("self-signed.key"),
            sans: dir.join("self-signed.sans"),
        }
    }
}

/// Loads the self-signed certificate from the data dir, generating it when absent or
/// when it was made for other names. Returns the config and whether it was (re)generated.
pub fn self_signed(data_dir: &Path, sans: &[String]) -> anyhow::Result<(Arc<ServerConfig>, bool)> {
    let p = SelfSignedPaths::new(data_dir);
    let wanted = sans.join("\n");
    let stored = std::fs::read_to_string(&p.sans).ok();
    if stored.as_deref().map(str::trim) == Some(wanted.as_str())
        && p.cert.exists()
        && p.key.exists()
    {
        return Ok((from_files(&p.cert, &p.key)?, false));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(sans.to_vec())
        .with_context(|| format!("cannot make a certificate for {sans:?}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("VoiceChat node {}", sans[0]),
    );
    let cert = params.self_signed(&key)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());

    let dir = p.cert.parent().expect("under tls/");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_private(&p.key, key_pem.as_bytes())?;
    std::fs::write(&p.cert, &cert_pem)?;
    std::fs::write(&p.sans, &wanted)?;
    Ok((
        from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), "self-signed")?,
        true,
    ))
}

/// Writes a secret file (replacing it) with mode 0600 from the start.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// What an ACME node serves with: the acceptor for the HTTPS port (it answers
/// TLS-ALPN-01 challenges itself), a plain TLS config with the same certificates (for TURN
/// over TLS), and for http-01 the service answering `/.well-known/acme-challenge/`.
pub struct Acme {
    /// For the HTTPS listener.
    pub acceptor: rustls_acme::axum::AxumAcceptor,
    /// The same certificates, for other TLS listeners.
    pub same_certs: Arc<ServerConfig>,
    /// Answers http-01 challenges (present with http-01).
    pub http01: Option<rustls_acme::tower::TowerHttp01ChallengeService>,
}

/// Where an ACME node gets its certificates.
pub struct AcmeSetup<'a> {
    /// Names on the certificate (the first is the public URL's host).
    pub domains: &'a [String],
    /// `mailto:` contacts of the account.
    pub contact: &'a [String],
    /// The directory URL.
    pub directory: &'a str,
    /// A CA (PEM) trusted for the ACME server besides the web roots.
    pub ca: Option<&'a Path>,
    /// The challenge answered.
    pub challenge: crate::config::AcmeChallenge,
    /// Account and certificates, kept across restarts (the last good certificate is
    /// served at start, before the ACME server is reached).
    pub cache_dir: PathBuf,
}

/// Starts getting and renewing certificates over ACME. Spawns the task that drives it:
/// it orders a certificate when the cache has none, renews when two thirds of its
/// lifetime have passed, and retries failures with exponential backoff (rustls-acme),
/// logging every event.
pub fn acme(setup: AcmeSetup<'_>) -> anyhow::Result<Acme> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = setup.ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read ACME CA file {}", ca.display()))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| anyhow!("ACME CA file {}: not valid PEM: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| anyhow!("ACME CA file {}: {e}", ca.display()))?;
            found += 1;
        }
        if found == 0 {
            bail!("ACME CA file {}: no CERTIFICATE block", ca.display());
        }
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let challenge = match setup.challenge {
        crate::config::AcmeChallenge::TlsAlpn01 => rustls_acme::UseChallenge::TlsAlpn01,
        crate::config::AcmeChallenge::Http01 => rustls_acme::UseChallenge::Http01,
    };
    let mut state = rustls_acme::AcmeConfig::new_with_client_config(setup.domains, Arc::new(client))
        .contact(setup.contact)
        .directory(setup.directory)
        .challenge_type(challenge)
        .cache(rustls_acme::caches::DirCache::new(setup.cache_dir))
        .state();
    let config = server_config_builder()?.with_no_client_auth().with_cert_resolver(state.resolver());
    let same_certs = Arc::new(server_config_builder()?.with_no_client_auth().with_cert_resolver(state.resolver()));
    let acceptor = state.axum_acceptor(with_alpn(config));
    let http01 = (setup.challenge == crate::config::AcmeChallenge::Http01).then(|| state.http01_challenge_tower_service());
    let directory = setup.directory.to_owned();
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => {
                    metrics::counter!("voicechat_acme_events_total", "event" => format!("{ok:?}")).increment(1);
                    tracing::info!(event = ?ok, %directory, "acme");
                }
                Err(err) => {
                    metrics::counter!("voicechat_acme_errors_total").increment(1);
                    tracing::warn!(error = %err, %directory, "acme failed; retrying with backoff");
                }
            }
        }
    });
    Ok(Acme { acceptor, same_certs, http01 })
}

/// The serial number (hex) and expiry (unix seconds) of a DER certificate.
pub fn cert_facts(der: &[u8]) -> anyhow::Result<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    Ok((hex::encode(cert.raw_serial()), cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_name_loopback_and_listen_ip() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            self_signed_sans("alpha", ip("192.168.1.5"), Some(ip("10.0.0.2")), None),
            ["alpha", "localhost", "127.0.0.1", "192.168.1.5"]
        );
        assert_eq!(
            self_signed_sans(
                "alpha",
                ip("0.0.0.0"),
                Some(ip("10.0.0.2")),
                Some("voice.lan")
            ),
            ["alpha", "localhost", "127.0.0.1", "10.0.0.2", "voice.lan"]
        );
        assert_eq!(
            self_signed_sans("localhost", ip("127.0.0.1"), None, Some("localhost")),
            ["localhost", "127.0.0.1"]
        );
    }

    #[test]
    fn origin_hosts() {
        assert_eq!(origin_host("https://voice.lan:8443"), Some("voice.lan"));
        assert_eq!(origin_host("http://localhost"), Some("localhost"));
        assert_eq!(origin_host("http://[fe80::1]:3001"), Some("fe80::1"));
    }

    #[test]
    fn self_signed_is_kept_and_regenerated_for_new_names() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let sans = vec![
            "alpha".to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let (_, fresh) = self_signed(dir.path(), &sans).unwrap();
        assert!(fresh);
        let p = SelfSignedPaths::new(dir.path());
        let first = std::fs::read(&p.cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (_, fresh) = self_signed(dir.path(), &sans).unwrap();
        assert!(!fresh, "kept, so a browser exception stays valid");
        assert_eq!(std::fs::read(&p.cert).unwrap(), first);
        let (_, fresh) = self_signed(dir.path(), &["beta".to_owned()]).unwrap();
        assert!(fresh);
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        install_crypto_provider();
        let err = from_pem(b"nope", b"nope", "x").unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let ck = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let err = from_pem(
            ck.cert.pem().as_bytes(),
            other.serialize_pem().as_bytes(),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("do not work together"), "{err}");
        assert!(
            from_pem(
                ck.cert.pem().as_bytes(),
                ck.signing_key.serialize_pem().as_bytes(),
                "x"
            )
            .is_ok()
        );
    }
}
