//! ACME for real: a node gets its certificate from Pebble (Let's Encrypt's test server,
//! started here on loopback, validating challenges against the node itself), serves it,
//! renews it before expiry without a restart, and rides out Pebble being down at start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::harness::*;

/// Lifetime of Pebble's certificates here: the node renews at two thirds of it.
const VALIDITY_SECS: u64 = 12;
/// Bound for an issuance or a renewal (backoff after a refused connection, Pebble's
/// polling); not a speed assertion.
const ISSUE_WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Pebble process with its own HTTPS certificate (from a CA made here).
struct Pebble {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The directory URL.
    directory: String,
    listen: u16,
    mgmt: u16,
}

impl Pebble {
    /// `None` (with a message) where the `pebble` binary is missing; CI installs it.
    fn available() -> bool {
        let found = Command::new("pebble").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            eprintln!("SKIPPED: no `pebble` on PATH (Debian: apt-get install pebble); .ci/run installs it");
        }
        found
    }

    /// Configured (not started): challenges are checked on `tls_port` / `http_port` of
    /// the domain's address, where the node under test listens.
    fn new(tls_port: u16, http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Pebble HTTPS test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "pebble");
        let cert = leaf.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let (listen, mgmt) = (free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": VALIDITY_SECS,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        Pebble {
            child: None,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            dir,
            listen,
            mgmt,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts Pebble and waits until it accepts connections.
    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            // Validate at once instead of after a random sleep; real validation all the same.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn pebble");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.listen)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root Pebble signs with this run (a new one per start).
    async fn root(&self) -> reqwest::Certificate {
        let pem = std::fs::read(self.ca()).unwrap();
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/roots/0", self.mgmt);
        let text = client.get(&url).send().await.unwrap().error_for_status().unwrap().text().await.unwrap();
        reqwest::Certificate::from_pem(text.as_bytes()).unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}", self.log());
        }
    }
}

/// The leaf certificate served at `url`: its serial, with the chain checked against
/// `root` when given (else read without checking, e.g. an expired cached one).
async fn served(url: &str, root: Option<&reqwest::Certificate>) -> Result<String, String> {
    let mut b = reqwest::Client::builder().tls_info(true).tls_built_in_root_certs(false).resolve(
        "localhost",
        "127.0.0.1:0".parse().unwrap(), // the port comes from the URL
    );
    b = match root {
        Some(r) => b.add_root_certificate(r.clone()),
        None => b.danger_accept_invalid_certs(true),
    };
    let res = b.build().unwrap().get(format!("{url}/healthz")).send().await.map_err(|e| format!("{e:?}"))?;
    let info = res.extensions().get::<reqwest::tls::TlsInfo>().ok_or("no TLS info")?;
    let der = info.peer_certificate().ok_or("no peer certificate")?;
    let (serial, _) = voicechat_node::tls::cert_facts(der).map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    Ok(serial)
}

/// Waits until `url` serves a certificate that chains to `root` and whose serial is not
/// `not`; returns the serial.
async fn wait_for_cert(url: &str, root: &reqwest::Certificate, not: Option<&str>, node: &Node) -> String {
    let deadline = Instant::now() + ISSUE_WAIT;
    loop {
        let last = match served(url, Some(root)).await {
            Ok(serial) if Some(serial.as_str()) != not => return serial,
            Ok(serial) => format!("still serial {serial}"),
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "no (new) Pebble certificate at {url}: {last}\n{}", node.stderr());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The serial of the certificate in the node's ACME cache.
fn cached_serial(data: &Path) -> Option<String> {
    let dir = data.join("tls").join("acme");
    let file = std::fs::read_dir(dir).ok()?.flatten().find(|e| e.file_name().to_string_lossy().starts_with("cached_cert_"))?;
    let pem = std::fs::read(file.path()).ok()?;
    let der = rustls_pemfile::certs(&mut &pem[..]).next()?.ok()?;
    voicechat_node::tls::cert_facts(&der).ok().map(|(serial, _)| serial)
}

fn acme_args(p: &Pebble, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--tls",
        "acme",
        "--domain",
        "localhost",
        "--acme-directory",
        &p.directory,
        "--acme-ca",
        p.ca().to_str().unwrap(),
        "--public-url",
        &format!("https://localhost:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start_node(data: &Path, port: u16, args: &[String]) -> Node {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_on(Some(data), &format!("127.0.0.1:{port}"), &args, &[("RUST_LOG", "warn,voicechat_node::tls=info")])
}

#[tokio::test]
async fn tls_alpn_certificate_renews_and_survives_pebble_down_at_start() {
    if !Pebble::available() {
        return;
    }
    let port = free_port();
    let mut pebble = Pebble::new(port, free_port());
    let data = tempfile::tempdir().unwrap();
    let args = acme_args(&pebble, port, &[]);
    let url = format!("https://localhost:{port}");

    // Pebble is down when the node starts: it serves (no certificate yet) and retries.
    let mut node = start_node(data.path(), port, &args);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(node.is_running(), "{}", node.stderr());
    assert!(served(&url, None).await.is_err(), "a certificate from nowhere");
    pebble.start();
    let root = pebble.root().await;
    let first = wait_for_cert(&url, &root, None, &node).await;
    assert!(node.stderr().contains("acme failed"), "the first order should have failed: {}", node.stderr());

    // Renewal before expiry, served by the same process.
    let pid = node.pid();
    let second = wait_for_cert(&url, &root, Some(&first), &node).await;
    assert_ne!(first, second);
    assert_eq!(node.pid(), pid);
    assert!(node.is_running());

    // The renewed certificate reaches the cache (written just after it is deployed).
    let deadline = Instant::now() + WAIT;
    while cached_serial(data.path()).as_deref() == Some(first.as_str()) || cached_serial(data.path()).is_none() {
        assert!(Instant::now() < deadline, "the renewal was not cached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Restarted while Pebble is down: the last good certificate is served from the cache.
    pebble.stop();
    let st = node.terminate();
    assert!(st.success(), "{st:?}");
    let last_good = cached_serial(data.path()).expect("a cached certificate");
    let node = start_node(data.path(), port, &args);
    let deadline = Instant::now() + WAIT;
    let served_now = loop {
        match served(&url, None).await {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "nothing served after restart: {e}\n{}", node.stderr()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(served_now, last_good, "the last good certificate, from the cache");
    assert_ne!(served_now, first);
}

#[tokio::test]
async fn http01_certificate_and_redirect_on_the_plain_port() {
    if !Pebble::available() {
        return;
    }
    let (port, http_port) = (free_port(), free_port());
    let mut pebble = Pebble::new(port, http_port);
    pebble.start();
    let root = pebble.root().await;
    let data = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{http_port}");
    let args = acme_args(&pebble, port, &["--acme-challenge", "http-01", "--acme-http-listen", &http]);
    let node = start_node(data.path(), port, &args);
    let url = format!("https://localhost:{port}");
    wait_for_cert(&url, &root, None, &node).await;

    // The plain port sends people to HTTPS, path kept.
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = plain.get(format!("http://{http}/g/abc?x=1")).send().await.unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], format!("{url}/g/abc?x=1"));
    let res = plain.get(format!("http://{http}/.well-known/acme-challenge/unknown")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no key authorization for an unknown token");
}
