//! `voicechat doctor` on misconfigured nodes names each problem: an expired certificate
//! (on disk and as served), a public URL that does not answer, a port taken by another
//! program, a node key readable by others, a bad config file; and passes a healthy node.

use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair};

use crate::harness::*;

fn doctor(args: &[&str]) -> (bool, String) {
    let mut full = vec!["doctor"];
    full.extend_from_slice(args);
    let (ok, out, err) = run_cli(&full);
    (ok, format!("{out}{err}"))
}

fn expired_cert(dir: &Path) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.to_str().unwrap().to_owned(), k.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn doctor_names_each_problem_of_a_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = expired_cert(tmp.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public = format!("https://localhost:{dead}");
    let tls = ["--tls", "files", "--cert", &cert, "--key", &key, "--public-url", &public];
    let node = Node::start(&tls);
    let dir = node.data_dir().to_str().unwrap().to_owned();
    let mut args = vec!["--data-dir", dir.as_str()];
    args.extend_from_slice(&tls);
    let (ok, out) = doctor(&args);
    assert!(!ok, "problems must fail the command:\n{out}");
    assert!(out.contains("ok       node: running"), "{out}");
    assert!(out.contains("ok       HTTP port"), "{out}");
    assert!(out.contains("ok       TURN port"), "{out}");
    assert!(out.contains("ok       federation port"), "{out}");
    assert!(out.contains(&format!("PROBLEM  certificate file {cert} expired")), "{out}");
    assert!(out.contains("PROBLEM  certificate served on 127.0.0.1:") && out.contains("expired"), "{out}");
    assert!(out.contains(&format!("PROBLEM  public URL {public} does not answer")), "{out}");
    assert!(out.contains("fix: renew it"), "each problem says what to do:\n{out}");
    assert!(out.contains("3 problem(s) found"), "{out}");
}

#[tokio::test]
async fn doctor_names_each_problem_of_a_stopped_node() {
    let mut node = Node::start(&[]);
    let dir = node.data_dir().to_owned();
    assert!(node.terminate().success());
    // Another program holds the node's web port; the node key was made world-readable.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let listen = format!("127.0.0.1:{port}");
    let (ok, out) = doctor(&["--data-dir", dir.to_str().unwrap(), "--listen", &listen, "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]);
    assert!(!ok, "{out}");
    assert!(out.contains("PROBLEM  node: not running"), "{out}");
    assert!(out.contains(&format!("PROBLEM  HTTP port {listen} is in use by another program")), "{out}");
    #[cfg(unix)]
    assert!(out.contains("is readable by others") && out.contains("chmod 600"), "{out}");
    assert!(out.contains(&format!("PROBLEM  public URL http://localhost:{port} does not answer")), "{out}");

    // A config file with a mistake: named, with nothing else checked.
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "name = \"ok\"\nlisten = \"not an address\"\n").unwrap();
    let (ok, out) = doctor(&["--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("PROBLEM  config:") && out.contains("line 2"), "{out}");
    drop(squatter);
}

#[tokio::test]
async fn doctor_passes_a_healthy_node() {
    let node = Node::start(&[]);
    let dir = node.data_dir().to_str().unwrap().to_owned();
    let listen = node.url.rsplit_once(':').map(|(_, p)| format!("127.0.0.1:{p}")).unwrap();
    let (ok, out) = doctor(&["--data-dir", &dir, "--listen", &listen]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("ok       public URL {} answers", node.url)), "{out}");
    assert!(out.contains("no problems found"), "{out}");
}
