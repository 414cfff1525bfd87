//! The harness: a real `voicechat` process on port 0, a browser-like HTTP client (cookie
//! jar, Origin, CSRF header) and a WebSocket client with ordered, barrier-checked reads.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// Generous bound for things that must happen (not a speed assertion).
pub const WAIT: Duration = Duration::from_secs(10);
/// Bound for things that cross nodes (gossip, sync, reconnect backoff); not a speed assertion.
pub const FED_WAIT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The password every test user gets (8+ characters).
pub fn pw(name: &str) -> String {
    format!("{name}-correct-horse-1")
}

/// A command for the node binary (CLI tests use it directly).
pub fn voicechat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voicechat"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

enum DataDir {
    Owned(tempfile::TempDir),
    Borrowed(PathBuf),
}

/// One running (or stopped) node process with its data directory.
pub struct Node {
    /// The origin, e.g. `http://localhost:41234` (no trailing slash).
    pub url: String,
    child: Option<Child>,
    data: DataDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<String>>,
    /// The node name (`--name`); `alpha` unless started as a federated node.
    pub name: String,
    /// `--listen`; pinned to the first run's port for federated nodes.
    listen: String,
    /// `--p2p-listen`; pinned to the first run's port for federated nodes.
    p2p_listen: String,
    /// Wait for the `federates at` line at start.
    federated: bool,
    /// The multiaddr from `… federates at /ip4/…/p2p/…` (empty unless federated).
    pub p2p: String,
}

impl Node {
    /// `voicechat serve` on a fresh temp dir with these extra arguments.
    pub fn start(extra: &[&str]) -> Node {
        Self::start_with(None, extra, &[])
    }

    /// `voicechat serve` on `data_dir` (or a fresh temp dir) with extra args and env.
    pub fn start_with(data_dir: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_on(data_dir, "127.0.0.1:0", extra, env)
    }

    /// [`Node::start_with`] on a chosen `--listen` address (kept across restarts).
    pub fn start_on(data_dir: Option<&Path>, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let data = match data_dir {
            Some(p) => DataDir::Borrowed(p.to_owned()),
            None => DataDir::Owned(tempfile::tempdir().expect("temp dir")),
        };
        let mut node = Node {
            url: String::new(),
            child: None,
            data,
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            stderr: Arc::default(),
            name: "alpha".into(),
            listen: listen.into(),
            p2p_listen: "/ip4/127.0.0.1/tcp/0".into(),
            federated: false,
            p2p: String::new(),
        };
        node.spawn();
        node
    }

    /// A federated node named `name` on a fresh temp dir, dialing each of `peers` with
    /// `--peer <multiaddr>`. Waits for both the URL and the `federates at` line, then pins
    /// its HTTP and p2p ports so [`Node::restart`] keeps its URL and its multiaddr.
    pub fn start_peered(name: &str, peers: &[&Node]) -> Node {
        Self::start_peered_with(None, name, peers, &[])
    }

    /// [`Node::start_peered`] on `data_dir` (or a fresh temp dir) with extra arguments.
    pub fn start_peered_with(data_dir: Option<&Path>, name: &str, peers: &[&Node], extra: &[&str]) -> Node {
        let data = match data_dir {
            Some(p) => DataDir::Borrowed(p.to_owned()),
            None => DataDir::Owned(tempfile::tempdir().expect("temp dir")),
        };
        Self::start_in(data, name, peers, extra)
    }

    /// A federated node from a [`Planned`] data dir (its key made in advance), dialing
    /// `peers` and pinning (by id) every node in `pins`.
    pub fn start_planned(p: Planned, peers: &[&Node], pins: &[&str], extra: &[&str]) -> Node {
        let mut args: Vec<String> = pins.iter().flat_map(|id| ["--peer".to_owned(), format!("/p2p/{id}")]).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_in(DataDir::Owned(p.dir), &p.name, peers, &args)
    }

    fn start_in(data: DataDir, name: &str, peers: &[&Node], extra: &[&str]) -> Node {
        let mut args = Vec::new();
        for p in peers {
            assert!(!p.p2p.is_empty(), "peer {} has no p2p address (not federated?)", p.name);
            args.push("--peer".to_owned());
            args.push(p.p2p.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // An explicit `--listen ADDR` among the arguments replaces the default port 0.
        let mut listen = "127.0.0.1:0".to_owned();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            listen = args.remove(i + 1);
            args.remove(i);
        }
        let mut node = Node {
            url: String::new(),
            child: None,
            data,
            args,
            env: vec![("RUST_LOG".into(), "warn,voicechat_node::federation=info".into())],
            stderr: Arc::default(),
            name: name.to_owned(),
            listen,
            p2p_listen: "/ip4/127.0.0.1/tcp/0".into(),
            federated: true,
            p2p: String::new(),
        };
        node.spawn();
        node.pin_ports();
        node
    }

    /// Restart (and later restarts) on the ports of the current run.
    pub fn pin_ports(&mut self) {
        let http_port = self.url.rsplit(':').next().expect("url has a port").to_owned();
        self.listen = format!("127.0.0.1:{http_port}");
        if !self.p2p.is_empty() {
            self.p2p_listen = format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port());
        }
    }

    /// The TCP port of the p2p multiaddr.
    pub fn p2p_port(&self) -> u16 {
        let parts: Vec<&str> = self.p2p.split('/').collect();
        let i = parts.iter().position(|p| *p == "tcp").unwrap_or_else(|| panic!("no /tcp/ in {}", self.p2p));
        parts[i + 1].parse().unwrap_or_else(|_| panic!("bad tcp port in {}", self.p2p))
    }

    /// The PeerId text at the end of the p2p multiaddr.
    pub fn peer_id(&self) -> String {
        self.p2p.rsplit_once("/p2p/").unwrap_or_else(|| panic!("no /p2p/ in {:?}", self.p2p)).1.to_owned()
    }

    /// The node's 32-byte key seed (`<data-dir>/node.key`).
    pub fn key_seed(&self) -> [u8; 32] {
        let b = std::fs::read(self.data_dir().join("node.key")).expect("read node.key");
        b.as_slice().try_into().expect("node.key is 32 bytes")
    }

    /// The process id (the node must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn data_dir(&self) -> &Path {
        match &self.data {
            DataDir::Owned(t) => t.path(),
            DataDir::Borrowed(p) => p,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node is still running");
        let mut cmd = voicechat();
        cmd.arg("serve")
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(self.data_dir())
            .args(["--name", &self.name, "--p2p-listen", &self.p2p_listen]);
        // A restart keeps the web port, and the standard TURN port beside it would be
        // shared by every test's node: TURN on a free port unless a test chooses.
        if !self.args.iter().any(|a| a == "--turn" || a == "--turn-listen") {
            let ip = self.listen.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip);
            cmd.args(["--turn-listen", &format!("{ip}:0")]);
        }
        // The same for the SFU's UDP port.
        if !self.args.iter().any(|a| a == "--sfu" || a == "--sfu-listen") {
            let ip = self.listen.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip);
            cmd.args(["--sfu-listen", &format!("{ip}:0")]);
        }
        // Tests sign up many accounts from 127.0.0.1; the sign-up limit has its own test.
        if !self.args.iter().any(|a| a == "--registrations-per-hour") {
            cmd.args(["--registrations-per-hour", "100000"]);
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn voicechat");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        self.stderr = Arc::default();
        let log = self.stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line); // keep draining after the reader is gone
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = String::new();
        self.url.clear();
        self.p2p.clear();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    let p2p = line.split_whitespace().find(|t| t.starts_with("/ip4/"));
                    if let Some(t) = p2p.filter(|_| line.contains("federates at")) {
                        self.p2p = t.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
                    }
                    let token = line.split_whitespace().find(|t| t.starts_with("http://") || t.starts_with("https://"));
                    if let Some(t) = token {
                        self.url = t.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
                    }
                    if !self.url.is_empty() && (!self.federated || !self.p2p.is_empty()) {
                        return;
                    }
                }
                Err(e) => {
                    std::thread::sleep(Duration::from_millis(300));
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    let err = self.stderr.lock().unwrap().clone();
                    self.kill9();
                    panic!(
                        "node {} did not print its URL{} ({e:?}); exit status {status:?}\n--- stdout ---\n{seen}\n--- stderr ---\n{err}",
                        self.name,
                        if self.federated { " and its `federates at` line" } else { "" },
                    );
                }
            }
        }
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node is running");
        let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node did not exit within 20 s of SIGTERM; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again on the same data dir (stops the old process gracefully if running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let st = self.terminate();
            assert!(st.success(), "graceful stop before restart: {st:?}");
        }
        self.spawn();
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- node stderr ({} {}) ---\n{}", self.name, self.url, self.stderr());
        }
    }
}

/// A response: status, headers, raw text and the JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// The `error` code of an error body ("" if none).
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    /// Assert the status, with the whole response in the message.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status; response: {self:?}");
        self
    }
    /// Assert an error status and code, and that a human message is present.
    #[track_caller]
    pub fn expect_err(&self, status: u16, code: &str) -> &Self {
        assert_eq!((self.status, self.code()), (status, code), "unexpected answer; response: {self:?}");
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "error without a message: {self:?}"
        );
        self
    }
    /// All `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap_or("").to_owned()).collect()
    }
    /// The `Set-Cookie` line for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// What to send as `X-CSRF-Token`.
#[derive(Clone, Debug)]
pub enum Csrf {
    /// The token learned from the node.
    Auto,
    /// No header at all.
    Missing,
    /// This exact value.
    Value(String),
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    Raw { content_type: Option<&'static str>, bytes: Vec<u8> },
}

/// A browser-like client: a cookie jar, `Origin` on writes, the CSRF header.
pub struct Client {
    http: reqwest::Client,
    jar: Arc<Jar>,
    pub origin: String,
    csrf: Option<String>,
}

impl Client {
    pub fn new(node: &Node) -> Client {
        Self::with_builder(&node.url, reqwest::Client::builder())
    }

    pub fn with_builder(origin: &str, builder: reqwest::ClientBuilder) -> Client {
        let jar = Arc::new(Jar::default());
        let http = builder
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Client { http, jar, origin: origin.to_owned(), csrf: None }
    }

    /// Point at a restarted node (localhost cookies ignore the port, so the jar carries over).
    pub fn set_origin(&mut self, origin: &str) {
        self.origin = origin.to_owned();
    }

    /// The value of a cookie the jar would send to the node.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let url = Url::parse(&self.origin).unwrap();
        let header = self.jar.cookies(&url)?;
        header.to_str().ok()?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }

    /// The whole `Cookie` header the jar would send.
    pub fn cookie_header(&self) -> Option<String> {
        let url = Url::parse(&self.origin).unwrap();
        self.jar.cookies(&url).map(|h| h.to_str().unwrap().to_owned())
    }

    /// `GET /api/session`, remembering the CSRF token.
    pub async fn session(&mut self) -> Resp {
        let r = self.raw(Method::GET, "/api/session", Body::None, None).await;
        r.expect(200);
        let tok = r.body["csrf"].as_str().unwrap_or_else(|| panic!("no csrf in {r:?}"));
        self.csrf = Some(tok.to_owned());
        r
    }

    pub async fn csrf_token(&mut self) -> String {
        if self.csrf.is_none() {
            self.session().await;
        }
        self.csrf.clone().unwrap()
    }

    pub async fn send(&mut self, method: Method, path: &str, body: Body, csrf: Csrf) -> Resp {
        let token = match csrf {
            Csrf::Auto => Some(self.csrf_token().await),
            Csrf::Missing => None,
            Csrf::Value(v) => Some(v),
        };
        self.raw(method, path, body, token).await
    }

    async fn raw(&self, method: Method, path: &str, body: Body, token: Option<String>) -> Resp {
        let writes = method != Method::GET && method != Method::HEAD;
        let mut req = self.http.request(method, format!("{}{}", self.origin, path));
        if writes {
            req = req.header("Origin", &self.origin);
        }
        if let Some(t) = token {
            req = req.header("X-CSRF-Token", t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.header("Content-Type", "application/json").body(v.to_string()),
            Body::Raw { content_type, bytes } => {
                let req = match content_type {
                    Some(ct) => req.header("Content-Type", ct),
                    None => req,
                };
                req.body(bytes)
            }
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, Body::None, Csrf::Missing).await
    }
    pub async fn post_json(&mut self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Body::Json(body), Csrf::Auto).await
    }
    pub async fn post_empty(&mut self, path: &str) -> Resp {
        self.send(Method::POST, path, Body::None, Csrf::Auto).await
    }
    pub async fn patch_json(&mut self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Body::Json(body), Csrf::Auto).await
    }
    pub async fn put_json(&mut self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Body::Json(body), Csrf::Auto).await
    }
    pub async fn delete(&mut self, path: &str) -> Resp {
        self.send(Method::DELETE, path, Body::None, Csrf::Auto).await
    }

    /// A POST through a shared client with a CSRF token fetched before (for requests sent
    /// all at once).
    pub async fn post_with(&self, path: &str, body: Value, csrf: &str) -> Resp {
        self.raw(Method::POST, path, Body::Json(body), Some(csrf.to_owned())).await
    }

    fn learn_csrf(&mut self, r: &Resp) {
        if let Some(t) = r.body["csrf"].as_str() {
            self.csrf = Some(t.to_owned());
        }
    }

    pub async fn register(&mut self, name: &str, password: &str) -> Resp {
        let r = self.post_json("/api/register", json!({"username": name, "password": password})).await;
        self.learn_csrf(&r);
        r
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Resp {
        let r = self.post_json("/api/login", json!({"username": name, "password": password})).await;
        self.learn_csrf(&r);
        r
    }

    pub async fn logout(&mut self) -> Resp {
        let r = self.post_empty("/api/logout").await;
        self.csrf = None;
        r
    }
}

/// The value of a counter (summed over its labels) on the node's `/metrics`.
pub async fn metric(node: &Node, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", node.url)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fresh client registered as `name` (password [`pw`]).
pub async fn registered(node: &Node, name: &str) -> Client {
    let mut c = Client::new(node);
    let r = c.register(name, &pw(name)).await;
    r.expect(201);
    assert_eq!(r.body["user"]["id"], format!("{name}@alpha"), "register answer: {r:?}");
    c
}

/// Several registered users at once (hashing runs in parallel on the node).
pub async fn registered_all<const N: usize>(node: &Node, names: [&str; N]) -> [Client; N] {
    let futs = names.map(|n| registered(node, n));
    let v = futures_util::future::join_all(futs).await;
    v.try_into().ok().expect("N clients")
}

/// A `POST /api/groups` that must succeed; returns the group id.
pub async fn create_group(c: &mut Client, name: &str) -> String {
    let r = c.post_json("/api/groups", json!({"name": name})).await;
    r.expect(201);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Add `user` to the group (must succeed).
pub async fn add_member(c: &mut Client, gid: &str, user: &str) {
    c.post_json(&format!("/api/groups/{gid}/members"), json!({"user": user})).await.expect(201);
}

/// Create a room (must succeed); returns the room id.
pub async fn create_room(c: &mut Client, gid: &str, name: &str) -> String {
    let r = c.post_json(&format!("/api/groups/{gid}/rooms"), json!({"name": name})).await;
    r.expect(201);
    r.body["id"].as_str().unwrap().to_owned()
}

pub fn is_hex32(s: &Value) -> bool {
    s.as_str().is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a WebSocket upgrade failed.
#[derive(Debug)]
pub enum WsRefused {
    Status(u16),
    Other(String),
}

/// Open `/ws` with exactly these `Cookie` and `Origin` headers.
pub async fn ws_handshake(node_url: &str, cookie: Option<&str>, origin: Option<&str>) -> Result<WsStream, WsRefused> {
    ws_handshake_at(node_url, "/ws", cookie, origin).await
}

/// Open `path` (`/ws?…`) with exactly these `Cookie` and `Origin` headers.
pub async fn ws_handshake_at(node_url: &str, path: &str, cookie: Option<&str>, origin: Option<&str>) -> Result<WsStream, WsRefused> {
    let url = node_url.replacen("http", "ws", 1) + path;
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("Cookie", c.parse().unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => Err(WsRefused::Other("handshake timed out".into())),
        Ok(Ok((s, _))) => Ok(s),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(WsRefused::Status(resp.status().as_u16())),
        Ok(Err(e)) => Err(WsRefused::Other(e.to_string())),
    }
}

/// What a socket holds of one room's call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomCopy {
    pub group: String,
    pub version: u64,
    /// `None` when the node sends only the count (a big room whose call this socket is not in).
    pub list: Option<Vec<Value>>,
    pub count: u64,
}

/// A socket's copy of the rooms it follows, kept from every message it reads by the rules the
/// web client follows: a snapshot replaces, a delta applies on top of the version before it;
/// one that skips a version is a gap (kept, for the test to judge).
#[derive(Debug, Default)]
pub struct Lists {
    pub rooms: HashMap<String, RoomCopy>,
    pub gaps: Vec<Value>,
}

impl Lists {
    fn apply(&mut self, m: &Value) {
        let room = m["room"].as_str().unwrap_or_default().to_owned();
        let group = m["group"].as_str().unwrap_or_default().to_owned();
        let version = m["version"].as_u64().unwrap_or(0);
        match m["type"].as_str() {
            Some("presence") => {
                // Rooms left out of a group's snapshot are empty at version 0.
                self.rooms.retain(|_, r| r.group != group);
                for r in m["rooms"].as_array().expect("presence.rooms") {
                    assert!(r["version"].is_u64() && r["count"].is_u64(), "room state in a snapshot of {group}: {r}");
                    let copy = RoomCopy {
                        group: group.clone(),
                        version: r["version"].as_u64().unwrap(),
                        list: r["participants"].as_array().cloned(),
                        count: r["count"].as_u64().unwrap(),
                    };
                    self.rooms.insert(r["room"].as_str().unwrap().to_owned(), copy);
                }
            }
            Some("participants") => {
                assert!(m["version"].is_u64(), "a list carries its version: {m}");
                let list = m["participants"].as_array().expect("participants list").clone();
                self.rooms.insert(room, RoomCopy { group, version, count: list.len() as u64, list: Some(list) });
            }
            Some("participant_count") => {
                self.rooms.insert(room, RoomCopy { group, version, list: None, count: m["count"].as_u64().expect("count") });
            }
            Some("participant_counts") => {
                for r in m["rooms"].as_array().expect("participant_counts.rooms") {
                    let copy = RoomCopy { group: group.clone(), version: r["version"].as_u64().unwrap(), list: None, count: r["count"].as_u64().unwrap() };
                    self.rooms.insert(r["room"].as_str().unwrap().to_owned(), copy);
                }
            }
            Some(kind @ ("participant_joined" | "participant_left" | "participant_changed")) => {
                let copy = self.rooms.entry(room).or_insert_with(|| RoomCopy { group, list: Some(vec![]), ..RoomCopy::default() });
                if version <= copy.version {
                    return;
                }
                let Some(list) = copy.list.as_mut().filter(|_| version == copy.version + 1) else {
                    self.gaps.push(m.clone());
                    return;
                };
                let p = &m["participant"];
                list.retain(|x| x["session"] != p["session"] || x["user"] != p["user"]);
                if kind != "participant_left" {
                    list.push(p.clone());
                    list.sort_by_key(node_order);
                }
                copy.count = list.len() as u64;
                copy.version = version;
            }
            _ => {}
        }
    }
}

/// The node's order of a list: by user name, then node, then session.
fn node_order(p: &Value) -> (String, String, String) {
    let (name, node) = p["user"].as_str().unwrap_or_default().split_once('@').unwrap_or_default();
    (name.to_owned(), node.to_owned(), p["session"].as_str().unwrap_or_default().to_owned())
}

/// A participant list with each entry's `joined_at` (unix ms, checked to be there) taken out.
pub fn without_join_times(list: &Value) -> Value {
    let mut list = list.clone();
    for p in list.as_array_mut().expect("a list").iter_mut() {
        let at = p.as_object_mut().expect("an entry").remove("joined_at");
        assert!(at.as_ref().and_then(Value::as_u64).is_some_and(|t| t > 1_600_000_000_000), "joined_at in unix ms: {at:?}");
    }
    list
}

/// Whether a message is one of the node's presence messages.
pub fn is_presence(m: &Value) -> bool {
    m["type"] == "presence" || m["type"].as_str().is_some_and(|t| t.starts_with("participant"))
}

/// A browser tab's socket: reads are ordered; messages skipped while waiting for
/// something else are kept, so nothing is lost between assertions. Presence messages also
/// keep [`Ws::lists`].
pub struct Ws {
    inner: WsStream,
    buf: VecDeque<Value>,
    pings: u64,
    pongs: u64,
    /// Text messages read off the wire after `hello` (what a resume says it has seen).
    pub received: u64,
    pub lists: Lists,
    /// From `hello`.
    pub user: String,
    /// From `hello`: this socket's id in rooms.
    pub session: String,
    /// From `hello`: `<session>.<token>`, to resume this session on a new socket.
    pub resume: String,
    /// From `hello`: whether the node still held the session this socket asked for.
    pub resumed: bool,
}

impl Ws {
    /// Connect as the client's user (its cookies, the node's own Origin) and read `hello`.
    pub async fn connect(c: &Client) -> Ws {
        Self::connect_at(c, "/ws").await
    }

    /// [`Ws::connect`], resuming the session `resume` (another socket's [`Ws::resume`]),
    /// of which `seen` messages were received.
    pub async fn resume(c: &Client, resume: &str, seen: u64) -> Ws {
        Self::connect_at(c, &format!("/ws?resume={resume}&seen={seen}")).await
    }

    async fn connect_at(c: &Client, path: &str) -> Ws {
        let cookie = c.cookie_header().expect("client has cookies");
        let inner = match ws_handshake_at(&c.origin, path, Some(&cookie), Some(&c.origin)).await {
            Ok(s) => s,
            Err(e) => panic!("WebSocket upgrade refused: {e:?}"),
        };
        let mut ws = Ws {
            inner,
            buf: VecDeque::new(),
            pings: 0,
            pongs: 0,
            received: 0,
            lists: Lists::default(),
            user: String::new(),
            session: String::new(),
            resume: String::new(),
            resumed: false,
        };
        let hello = ws.recv_any(WAIT).await.expect("hello");
        assert_eq!(hello["type"], "hello", "first message must be hello: {hello}");
        ws.user = hello["user"].as_str().expect("hello.user").to_owned();
        assert!(is_hex32(&hello["session"]), "hello.session is 32 hex: {hello}");
        ws.session = hello["session"].as_str().unwrap().to_owned();
        ws.resume = format!("{}.{}", ws.session, hello["resume"].as_str().expect("hello.resume"));
        ws.resumed = hello["resumed"].as_bool().expect("hello.resumed");
        ws.received = 0;
        ws
    }

    /// The tab closes: a close frame, so the node lets the session go at once (a socket
    /// that just drops keeps its session for a resume, see `ws_resume.rs`).
    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }

    pub async fn send(&mut self, v: Value) {
        if v["type"] == "ping" {
            self.pings += 1;
        }
        self.inner.send(Message::text(v.to_string())).await.expect("ws send");
    }

    pub async fn send_text(&mut self, t: String) {
        self.inner.send(Message::text(t)).await.expect("ws send");
    }

    /// The next message off the wire (pongs included and counted); Err on close/timeout.
    pub async fn recv_any(&mut self, t: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let next = tokio::time::timeout_at(deadline, self.inner.next()).await;
            let msg = match next {
                Err(_) => return Err("timed out".into()),
                Ok(None) => return Err("stream ended".into()),
                Ok(Some(Err(e))) => return Err(format!("socket error: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    self.received += 1;
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("node sent non-JSON text {t:?}: {e}"));
                    if v["type"] == "pong" {
                        self.pongs += 1;
                    }
                    self.lists.apply(&v);
                    return Ok(v);
                }
                Message::Close(f) => return Err(format!("closed: {f:?}")),
                Message::Binary(b) => panic!("node sent a binary frame ({} bytes)", b.len()),
                _ => continue,
            }
        }
    }

    /// The first message (buffered or new) for which `pred` holds; others are kept.
    #[track_caller]
    pub fn next_matching<'a>(
        &'a mut self,
        what: &'a str,
        pred: impl Fn(&Value) -> bool + 'a,
    ) -> impl std::future::Future<Output = Value> + 'a {
        self.next_matching_within(what, WAIT, pred)
    }

    /// [`Ws::next_matching`] with its own deadline (e.g. [`FED_WAIT`] across nodes).
    #[track_caller]
    pub fn next_matching_within<'a>(
        &'a mut self,
        what: &'a str,
        within: Duration,
        pred: impl Fn(&Value) -> bool + 'a,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            if let Some(i) = self.buf.iter().position(&pred) {
                return self.buf.remove(i).unwrap();
            }
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.recv_any(left).await {
                    Ok(m) if pred(&m) => return m,
                    Ok(m) => {
                        if m["type"] != "pong" {
                            self.buf.push_back(m)
                        }
                    }
                    Err(e) => {
                        panic!(
                            "{caller}: {} waiting {within:?} for {what} ({e}); other messages: {:?}",
                            self.user, self.buf
                        )
                    }
                }
            }
        }
    }

    /// Follows the presence in a group's rooms; returns its snapshot (`presence`).
    pub async fn subscribe(&mut self, gid: &str) -> Value {
        self.send(json!({"type": "subscribe", "group": gid})).await;
        let gid = gid.to_owned();
        self.next_matching("presence snapshot", move |m| m["type"] == "presence" && m["group"] == gid.as_str()).await
    }

    /// This socket's list of a room, if it holds one.
    pub fn list(&self, room: &str) -> Option<&[Value]> {
        self.lists.rooms.get(room).and_then(|r| r.list.as_deref())
    }

    /// Reads until this socket's list of `room` satisfies `pred` (other messages are kept).
    /// A gap in the room versions fails the test: the node sends every change in order.
    #[track_caller]
    pub fn wait_list<'a>(
        &'a mut self,
        what: &'a str,
        room: &'a str,
        pred: impl Fn(&[Value]) -> bool + 'a,
    ) -> impl std::future::Future<Output = ()> + 'a {
        self.wait_list_within(what, WAIT, room, pred)
    }

    /// [`Ws::wait_list`] with its own deadline (e.g. [`FED_WAIT`] across nodes).
    #[track_caller]
    pub fn wait_list_within<'a>(
        &'a mut self,
        what: &'a str,
        within: Duration,
        room: &'a str,
        pred: impl Fn(&[Value]) -> bool + 'a,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                assert!(self.lists.gaps.is_empty(), "{caller}: {} saw a gap in room versions: {:?}", self.user, self.lists.gaps);
                if self.list(room).is_some_and(&pred) {
                    return;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.recv_any(left).await {
                    Ok(m) if m["type"] == "pong" => {}
                    Ok(m) => self.buf.push_back(m),
                    Err(e) => panic!(
                        "{caller}: {} waiting {within:?} for {what} ({e}); its copy of the room: {:?}",
                        self.user,
                        self.lists.rooms.get(room)
                    ),
                }
            }
        }
    }

    /// The next message of this type.
    #[track_caller]
    pub fn next_of_type<'a>(&'a mut self, ty: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        self.next_matching(ty, move |m| m["type"] == ty)
    }

    /// The next `error`; asserts its code.
    #[track_caller]
    pub fn expect_error<'a>(&'a mut self, code: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let e = self.next_of_type("error").await;
            assert_eq!(e["code"], code, "{caller}: wrong error code: {e}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{caller}: error without message: {e}");
            e
        }
    }

    /// Barrier: send `ping` and read until every ping so far is answered. Returns what
    /// arrived before the pong (also kept in the buffer).
    pub async fn barrier(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping"})).await;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.pongs < self.pings {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_any(left).await {
                Ok(m) if m["type"] == "pong" => {}
                Ok(m) => {
                    seen.push(m.clone());
                    self.buf.push_back(m);
                }
                Err(e) => panic!("{}: no pong for ping ({e}); buffered: {:?}", self.user, self.buf),
            }
        }
        seen
    }

    /// Nothing matching `pred` has arrived or arrives before a ping round trip.
    #[track_caller]
    pub fn expect_none<'a>(
        &'a mut self,
        what: &'a str,
        pred: impl Fn(&Value) -> bool + 'a,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            self.barrier().await;
            if let Some(m) = self.buf.iter().find(|m| pred(m)) {
                panic!("{caller}: {} must not receive {what}, got {m}", self.user);
            }
        }
    }

    /// No message of this type arrives (ping barrier).
    #[track_caller]
    pub fn expect_none_of_type<'a>(&'a mut self, ty: &'a str) -> impl std::future::Future<Output = ()> + 'a {
        self.expect_none(ty, move |m| m["type"] == ty)
    }

    /// Forget buffered messages (after a phase whose events were checked).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Users in a participants list.
pub fn participant_users(m: &Value) -> Vec<String> {
    m["participants"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["user"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Users in a GroupDetail's member list.
pub fn member_users(g: &Value) -> Vec<String> {
    g["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["user"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Room ids in a GroupDetail.
pub fn room_ids(g: &Value) -> Vec<String> {
    g["rooms"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Only the documented `keys` of an object (the node may add fields; the contract is these).
pub fn pick(v: &Value, keys: &[&str]) -> Value {
    let obj = v.as_object().unwrap_or_else(|| panic!("expected an object, got {v}"));
    Value::Object(keys.iter().map(|k| (k.to_string(), obj.get(*k).cloned().unwrap_or(Value::Null))).collect())
}

/// [`pick`] over every element of an array.
pub fn pick_all(v: &Value, keys: &[&str]) -> Value {
    let arr = v.as_array().unwrap_or_else(|| panic!("expected an array, got {v}"));
    Value::Array(arr.iter().map(|e| pick(e, keys)).collect())
}

pub const MEMBER: &[&str] = &["user", "role"];
pub const SUMMARY: &[&str] = &["id", "name", "home", "role"];

/// `in_reply_to` is optional in the contract; when the node sends it, it must name what we sent.
#[track_caller]
pub fn assert_reply_to(e: &Value, ty: &str) {
    if !e["in_reply_to"].is_null() {
        assert_eq!(e["in_reply_to"], ty, "in_reply_to names another message type: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Federation helpers.

/// A fresh client on `node` registered as `name`; its id is `name@<node name>`.
pub async fn registered_on(node: &Node, name: &str) -> Client {
    let mut c = Client::new(node);
    let r = c.register(name, &pw(name)).await;
    r.expect(201);
    assert_eq!(r.body["user"]["id"], format!("{name}@{}", node.name), "register answer: {r:?}");
    c
}

/// A data dir with a node key made in advance, so other nodes can pin the node's PeerId
/// before it starts (as operators exchange `voicechat id` output).
pub struct Planned {
    dir: tempfile::TempDir,
    name: String,
    /// The PeerId the node will have.
    pub peer_id: String,
}

impl Planned {
    /// The data dir, as a string for command lines.
    pub fn dir_path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp dir")
    }
}

/// Plans a node called `name`: a temp data dir holding a fresh node key.
pub fn plan(name: &str) -> Planned {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("random");
    write_key(dir.path(), &seed);
    let peer_id = voicechat_node::core::Signer::new(seed).node_key().peer_id();
    Planned { dir, name: name.to_owned(), peer_id }
}

/// Writes a node key file (0600) as `voicechat` does.
pub fn write_key(dir: &Path, seed: &[u8; 32]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join("node.key")).expect("node.key");
    std::io::Write::write_all(&mut f, seed).expect("write node.key");
}

/// Nodes that pin each other (closed federation, the default): each dials the ones started
/// before it and pins the ones after it by id. Returns once every node has every other as
/// a connected peer and has bound its card.
pub async fn fed_net(names: &[&str], extra: &[&str]) -> Vec<Node> {
    let mut plans: Vec<Planned> = names.iter().map(|n| plan(n)).collect();
    let ids: Vec<String> = plans.iter().map(|p| p.peer_id.clone()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, p) in plans.drain(..).enumerate() {
        let later: Vec<&str> = ids[i + 1..].iter().map(String::as_str).collect();
        let earlier: Vec<&Node> = nodes.iter().collect();
        let node = Node::start_planned(p, &earlier, &later, extra);
        nodes.push(node);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_federated(&refs).await;
    nodes
}

/// Two federated nodes that pinned each other: `alpha`, then `beta --peer alpha`.
pub async fn fed_pair() -> (Node, Node) {
    let mut v = fed_net(&["alpha", "beta"], &[]).await;
    let beta = v.pop().unwrap();
    (v.pop().unwrap(), beta)
}

/// `alpha`, `beta`, `gamma`, all pinned to each other and connected.
pub async fn fed_trio() -> (Node, Node, Node) {
    let mut v = fed_net(&["alpha", "beta", "gamma"], &[]).await;
    let gamma = v.pop().unwrap();
    let beta = v.pop().unwrap();
    (v.pop().unwrap(), beta, gamma)
}

/// `GET /metrics` (plain text).
pub async fn metrics_text(node: &Node) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", node.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics on {}: {e}", node.name));
    assert_eq!(r.status().as_u16(), 200, "/metrics on {}", node.name);
    r.text().await.unwrap()
}

/// Every sample of metric `name` (exact name, labels parsed) in Prometheus text.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else { continue };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer metric name
        };
        let Ok(v) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else { continue };
        let labels = labels
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        out.push((labels, v));
    }
    out
}

/// Sum of the samples of `name` whose labels include all of `want`.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    metric_samples(text, name)
        .into_iter()
        .filter(|(labels, _)| want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|(_, v)| v)
        .sum()
}

/// `voicechat_federation_records_total` summed over the matching labels.
pub fn fed_records(text: &str, want: &[(&str, &str)]) -> f64 {
    metric_sum(text, "voicechat_federation_records_total", want)
}

/// Polls `check` on `/metrics` of `node` until it holds (deadline [`FED_WAIT`]).
pub async fn wait_metrics(node: &Node, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + FED_WAIT;
    loop {
        let text = metrics_text(node).await;
        if check(&text) {
            return text;
        }
        if Instant::now() > deadline {
            let fed: Vec<&str> = text.lines().filter(|l| l.contains("federation")).collect();
            panic!("{}: {what} did not happen within {FED_WAIT:?}; federation metrics:\n{}", node.name, fed.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every node has all the others as connected peers and has accepted a NodeCard from each.
pub async fn wait_federated(nodes: &[&Node]) {
    let n = (nodes.len() - 1) as f64;
    for node in nodes {
        wait_metrics(node, "connecting to every other node and accepting its NodeCard", |t| {
            metric_sum(t, "voicechat_federation_peers", &[]) >= n
                && fed_records(t, &[("kind", "node_card"), ("verdict", "accepted")]) >= n
        })
        .await;
    }
}

/// Waits until `c`'s user has an invitation to `gid` and accepts it; the group then shows.
pub async fn accept_invitation(c: &mut Client, gid: &str) -> Resp {
    poll_get(c, "/api/invitations", "the invitation", |r| {
        r.body.as_array().is_some_and(|a| a.iter().any(|i| i["group"] == gid))
    })
    .await;
    let r = c.post_empty(&format!("/api/invitations/{gid}/accept")).await;
    r.expect(200);
    r
}

/// Polls `GET path` with `c` until `check` holds on the answer (deadline [`FED_WAIT`]).
pub async fn poll_get(c: &mut Client, path: &str, what: &str, check: impl Fn(&Resp) -> bool) -> Resp {
    let deadline = Instant::now() + FED_WAIT;
    loop {
        let r = c.get(path).await;
        if check(&r) {
            return r;
        }
        if Instant::now() > deadline {
            panic!("GET {}{path}: {what} did not happen within {FED_WAIT:?}; last answer: {r:?}", c.origin);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `group` event for `gid` whose GroupDetail satisfies `pred`.
pub fn group_event(gid: &str, pred: impl Fn(&Value) -> bool) -> impl Fn(&Value) -> bool {
    let gid = gid.to_owned();
    move |m| m["type"] == "group" && m["group"]["id"] == gid.as_str() && pred(&m["group"])
}

/// Whether a participants list has exactly one entry for `session`, as `user` with `muted`.
pub fn has_session(list: &[Value], user: &str, session: &str, muted: bool) -> bool {
    list.iter().filter(|p| p["session"] == session).count() == 1
        && list.iter().any(|p| p["user"] == user && p["session"] == session && p["muted"] == muted)
}

/// Whether no entry of the list has this session.
pub fn lacks_session(list: &[Value], session: &str) -> bool {
    !list.iter().any(|p| p["session"] == session)
}

/// Runs `voicechat ARGS` to completion; returns (success, stdout, stderr).
/// Runs `voicechat <args>` with `stdin` written to it, bounded by a timeout.
pub fn run_cli_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = voicechat()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voicechat");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("voicechat output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("`voicechat {}` did not finish within 60 s", args.join(" "));
        }
    }
}

pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = voicechat().args(args).stdin(Stdio::null()).output().expect("run voicechat");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
