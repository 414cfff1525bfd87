//! A browser-like client of one node: HTTP with a cookie jar, Origin and CSRF header, and
//! WebSockets whose reader task never stops reading (the node cuts off a socket whose 256
//! message queue fills) and stamps every message with its arrival time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use reqwest::cookie::{CookieStore, Jar};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::presence::{Gap, Lists};

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages a [`Ws`] buffers for the scenario; beyond it they are counted as dropped.
const WS_BUFFER: usize = 16 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// An answer: status and JSON body (`Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A logged-in user on one node.
#[derive(Clone)]
pub struct Http {
    http: reqwest::Client,
    jar: Arc<Jar>,
    pub origin: String,
    pub user: String,
    csrf: String,
}

impl Http {
    fn client(origin: &str) -> anyhow::Result<(reqwest::Client, Arc<Jar>)> {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .with_context(|| format!("http client for {origin}"))?;
        Ok((http, jar))
    }

    async fn enter(origin: &str, path: &str, user: &str, password: &str, want: u16) -> anyhow::Result<Http> {
        let (http, jar) = Self::client(origin)?;
        let mut c = Http { http, jar, origin: origin.to_owned(), user: String::new(), csrf: String::new() };
        let s = c.get("/api/session").await?;
        c.csrf = s.body["csrf"].as_str().with_context(|| format!("no csrf in {s:?}"))?.to_owned();
        let r = c.post(path, json!({"username": user, "password": password})).await?;
        if r.status != want {
            bail!("POST {origin}{path} as {user}: {} {}", r.status, r.body);
        }
        c.csrf = r.body["csrf"].as_str().context("no csrf after login")?.to_owned();
        c.user = r.body["user"]["id"].as_str().context("no user id")?.to_owned();
        Ok(c)
    }

    /// Logs in (`POST /api/login`).
    pub async fn login(origin: &str, user: &str, password: &str) -> anyhow::Result<Http> {
        Self::enter(origin, "/api/login", user, password, 200).await
    }

    /// Registers a new user (`POST /api/register`), logged in.
    pub async fn register(origin: &str, user: &str, password: &str) -> anyhow::Result<Http> {
        Self::enter(origin, "/api/register", user, password, 201).await
    }

    /// Any request; `Err` only when no answer came (connection refused, timeout).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Resp> {
        let writes = method != Method::GET;
        let mut req = self.http.request(method, format!("{}{path}", self.origin));
        if writes {
            req = req.header("Origin", &self.origin).header("X-CSRF-Token", &self.csrf);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok(Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Resp> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A request that must answer `want`; the error carries the whole answer.
    pub async fn expect(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> anyhow::Result<Value> {
        let r = self.call(method.clone(), path, body.clone()).await?;
        if r.status != want {
            bail!("{method} {}{path} {} as {}: want {want}, got {} {}", self.origin, body.unwrap_or_default(), self.user, r.status, r.body);
        }
        Ok(r.body)
    }

    /// The `Cookie` header the jar would send to the node.
    pub fn cookie_header(&self) -> anyhow::Result<String> {
        let url = reqwest::Url::parse(&self.origin)?;
        let h = self.jar.cookies(&url).context("no cookies")?;
        Ok(h.to_str()?.to_owned())
    }

    /// Opens `/ws` with this user's cookies and the node's own Origin.
    pub async fn ws_raw(&self) -> anyhow::Result<WsStream> {
        let mut req = (self.origin.replacen("http", "ws", 1) + "/ws").into_client_request()?;
        req.headers_mut().insert("Cookie", self.cookie_header()?.parse()?);
        req.headers_mut().insert("Origin", self.origin.parse()?);
        let (s, _) = tokio::time::timeout(HTTP_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| anyhow!("WebSocket handshake with {} timed out", self.origin))??;
        Ok(s)
    }

    /// Opens `/ws` and reads `hello`.
    pub async fn ws(&self) -> anyhow::Result<Ws> {
        Ws::start(self.ws_raw().await?).await
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.origin)).send().await?.text().await?)
    }
}

/// One received message with its arrival time.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub msg: Value,
}

/// A browser tab's socket, with its copy of the room lists it follows (kept from every
/// message it reads; a gap is answered with `resync`, as the web client does).
pub struct Ws {
    sink: SplitSink<WsStream, Message>,
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
    pub user: String,
    pub session: String,
    pub lists: Lists,
    /// Gaps seen in room versions (each answered with `resync`).
    pub gaps: u64,
}

impl Ws {
    async fn start(stream: WsStream) -> anyhow::Result<Ws> {
        let (sink, mut read) = stream.split();
        let (tx, rx) = mpsc::channel(WS_BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = read.next().await {
                let at = Instant::now();
                if let Message::Text(t) = m {
                    let msg = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if tx.try_send(Event { at, msg }).is_err() {
                        if tx.is_closed() {
                            break;
                        }
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let mut ws = Ws { sink, rx, dropped, user: String::new(), session: String::new(), lists: Lists::default(), gaps: 0 };
        let hello = ws.recv(Duration::from_secs(10)).await?.msg;
        if hello["type"] != "hello" {
            bail!("first message is not hello: {hello}");
        }
        ws.user = hello["user"].as_str().context("hello.user")?.to_owned();
        ws.session = hello["session"].as_str().context("hello.session")?.to_owned();
        Ok(ws)
    }

    pub async fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        self.sink.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    /// Says goodbye (a close frame): the node ends the session at once. A socket merely
    /// dropped is kept resumable for a while (`--resume-grace`) and still counts against
    /// the user's sockets.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.sink.send(Message::Close(None)).await?;
        Ok(())
    }

    /// The next message (applied to [`Ws::lists`]); `Err` on timeout or when the socket closed.
    pub async fn recv(&mut self, t: Duration) -> anyhow::Result<Event> {
        let e = match tokio::time::timeout(t, self.rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => bail!("socket of {} closed", self.user),
            Err(_) => bail!("nothing on the socket of {} within {t:?}", self.user),
        };
        if let Err(Gap { group, room }) = self.lists.apply(&e.msg) {
            self.gaps += 1;
            self.send(&json!({"type": "resync", "group": group, "room": room})).await?;
        }
        Ok(e)
    }

    /// Follows the presence in a group's rooms and waits for its snapshot. False when the
    /// node predates subscriptions (it answers `unknown_type` and sends every list anyway).
    pub async fn subscribe(&mut self, group: &str) -> anyhow::Result<bool> {
        self.send(&json!({"type": "subscribe", "group": group})).await?;
        let e = self
            .wait_for("presence", Duration::from_secs(10), |m| m["type"] == "presence" || m["type"] == "error")
            .await?;
        match e.msg["code"].as_str() {
            None => Ok(true),
            Some("unknown_type") => Ok(false),
            Some(_) => bail!("subscribe refused for {}: {}", self.user, e.msg),
        }
    }

    /// Reads until this socket's list of `room` satisfies `pred`; returns the arrival time of
    /// the message that made it so.
    pub async fn wait_list(&mut self, what: &str, t: Duration, room: &str, pred: impl Fn(&[Value]) -> bool) -> anyhow::Result<Instant> {
        if self.lists.list(room).is_some_and(&pred) {
            return Ok(Instant::now());
        }
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(e) if self.lists.list(room).is_some_and(&pred) => return Ok(e.at),
                Ok(_) => {}
                Err(e) => bail!("{} waiting for {what}: {e}; its list: {:?}", self.user, self.lists.rooms.get(room)),
            }
        }
    }

    /// The first message matching `pred` within `t` (others are discarded).
    pub async fn wait_for(&mut self, what: &str, t: Duration, mut pred: impl FnMut(&Value) -> bool) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(e) if pred(&e.msg) => return Ok(e),
                Ok(_) => {}
                Err(e) => bail!("{} waiting for {what}: {e}", self.user),
            }
        }
    }

    /// Joins a room and waits for `joined`.
    pub async fn join(&mut self, group: &str, room: &str) -> anyhow::Result<()> {
        self.send(&json!({"type": "join", "group": group, "room": room})).await?;
        let e = self
            .wait_for("joined", Duration::from_secs(10), |m| m["type"] == "joined" || m["type"] == "error")
            .await?;
        if e.msg["type"] == "error" {
            bail!("join refused for {}: {}", self.user, e.msg);
        }
        Ok(())
    }

    /// Discards everything received so far.
    pub fn clear(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Messages the scenario did not take in time (the buffer was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Whether the list has `session` with this muted flag.
pub fn has_session(list: &[Value], session: &str, muted: bool) -> bool {
    list.iter().any(|p| p["session"] == session && p["muted"] == muted)
}
