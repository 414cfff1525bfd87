//! Administration of a node, running or stopped: the operations behind `voicechat user`,
//! `peer`, `backup` and `doctor`, and the local socket (`<data dir>/admin.sock`, mode
//! 0600, so file permissions are the authentication) over which the CLI asks a running
//! node to do them. A stopped node's data dir is opened directly instead.
//!
//! Wire: one JSON request line (at most [`MAX_REQUEST`] bytes) per connection; one JSON
//! reply line, then `bytes` raw bytes when the reply carries data (a backup).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::accounts::{self, AccountError, Hasher};
use crate::store::{Store, StoreError};

/// The socket's file name in the data dir.
pub const SOCKET: &str = "admin.sock";
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Admin connections served at once; more wait.
const MAX_CONNECTIONS: usize = 4;

/// One operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create an account.
    UserAdd { name: String, password: String },
    /// Set a password (ends the user's sessions).
    UserPasswd { name: String, password: String },
    /// List accounts.
    UserList,
    /// Disable an account and end its sessions.
    UserDisable { name: String },
    /// Re-enable an account.
    UserEnable { name: String },
    /// Pin a node.
    PeerAdd { addr: String },
    /// Pins, blocks and known nodes.
    PeerList,
    /// Forget a pin.
    PeerRemove { addr: String },
    /// Block a node by name or PeerId.
    PeerBlock { node: String },
    /// Lift a block.
    PeerUnblock { node: String },
    /// Make an admin API token; the reply shows its secret, once.
    TokenCreate { name: String, scopes: Vec<crate::store::Scope>, user: Option<String> },
    /// The tokens (never their secrets).
    TokenList,
    /// Forget a token.
    TokenRevoke { name: String },
    /// A consistent backup of the data dir (returned as data).
    Backup,
    /// The running node's bound addresses.
    Status,
}

/// What a running node reports about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The public origin.
    pub url: String,
    /// HTTP(S) listen address actually bound.
    pub http: String,
    /// Federation addresses (multiaddrs).
    pub p2p: Vec<String>,
    /// STUN/TURN UDP+TCP address, if on.
    pub turn: Option<String>,
    /// The SFU's UDP address, if on.
    pub sfu: Option<String>,
    /// `none`, `files`, `self-signed` or `acme`.
    pub tls: String,
}

/// A successful operation's result.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Lines for the person at the terminal.
    pub output: String,
    /// Bytes of a backup.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// The running node's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The reply line on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireReply {
    ok: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    output: String,
    #[serde(default)]
    bytes: usize,
    #[serde(default)]
    status: Option<Status>,
}

/// Where the operations run: a store and its data dir.
pub struct Ctx {
    /// The store (the running node's, or opened by the CLI).
    pub store: Store,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// For passwords.
    pub hasher: Hasher,
    /// Present in a running node.
    pub status: Option<Status>,
    /// The running node: pins and blocks apply to its federation at once, and a disabled
    /// user or a changed password signs that user's pages out at once.
    pub app: Option<crate::state::AppState>,
}

impl Ctx {
    fn fed(&self) -> Option<&crate::federation::Federation> {
        self.app.as_ref().and_then(|a| a.fed())
    }

    /// Signs `name`'s open pages out (their sockets close) on a running node.
    async fn sign_out(&self, name: &str, why: &str) {
        if let (Some(app), Ok(name)) = (&self.app, voicechat_protocol::ids::UserName::new(name)) {
            crate::http::close_sockets(app, &app.local_user(&name), None, None, why).await;
        }
    }
}

/// A node named by the operator as a PeerId or a name: its key and name, as far as known.
fn node_of(store: &Store, node: &str) -> Result<(Option<voicechat_protocol::keys::NodeKey>, Option<voicechat_protocol::ids::NodeName>), String> {
    let st = |e: StoreError| format!("storage failed: {e}");
    if let Ok(peer) = node.parse::<libp2p::PeerId>() {
        let key = crate::federation::key_of(&peer).ok_or("not an ed25519 PeerId")?;
        let name = store.peers().map_err(st)?.into_iter().find(|p| p.node_key() == Some(key)).map(|p| p.name);
        Ok((Some(key), name))
    } else {
        let name = voicechat_protocol::ids::NodeName::new(node).map_err(|_| format!("{node} is neither a node name nor a PeerId"))?;
        let key = store.peer(&name).map_err(st)?.and_then(|p| p.node_key());
        Ok((key, Some(name)))
    }
}

/// Runs one operation. Errors are one line for a person.
pub async fn execute(ctx: &Ctx, req: Request) -> Result<Reply, String> {
    let out = |s: String| Ok(Reply { output: s, ..Reply::default() });
    let store = &ctx.store;
    let acc = |e: AccountError| match e {
        AccountError::Store(e) => format!("storage failed: {e}"),
        e => e.to_string(),
    };
    let st = |e: StoreError| format!("storage failed: {e}");
    match req {
        Request::UserAdd { name, password } => {
            let u = accounts::create_user(store, &ctx.hasher, &name, &password).await.map_err(acc)?;
            out(format!("created user {}", u.name.as_str()))
        }
        Request::UserPasswd { name, password } => {
            accounts::set_password(store, &ctx.hasher, &name, &password, None).await.map_err(acc)?;
            ctx.sign_out(&name, "password changed").await;
            out(format!("password changed for {name}; their sessions were ended"))
        }
        Request::UserList => {
            let users = store.users().map_err(st)?;
            let lines: Vec<String> = users
                .iter()
                .map(|u| format!("{}\t{}\tcreated {}", u.name.as_str(), if u.disabled { "disabled" } else { "active" }, u.created_at))
                .collect();
            out(lines.join("\n"))
        }
        Request::UserDisable { name } => {
            accounts::set_disabled(store, &name, true).await.map_err(acc)?;
            ctx.sign_out(&name, "account disabled").await;
            out(format!("disabled {name}; their sessions were ended"))
        }
        Request::UserEnable { name } => {
            accounts::set_disabled(store, &name, false).await.map_err(acc)?;
            out(format!("enabled {name}"))
        }
        Request::PeerAdd { addr } => {
            let ma: libp2p::Multiaddr = addr.parse().map_err(|_| format!("{addr} is not a multiaddr"))?;
            crate::federation::parse_pin(&ma)
                .map_err(|e| format!("{e}; the node prints its full address at start, and `voicechat id` its PeerId"))?;
            store.add_pin(&ma.to_string()).await.map_err(st)?;
            if let Some(fed) = ctx.fed() {
                fed.pin(&ma, true).await.map_err(|e| e.to_string())?;
            }
            let when = if ctx.fed().is_some() { " (the running node admits it now, and dials it if the address has one)" } else { "" };
            out(format!("pinned {ma}{when}"))
        }
        Request::PeerRemove { addr } => match store.remove_pin(&addr).await {
            Ok(()) => {
                if let (Some(fed), Ok(ma)) = (ctx.fed(), addr.parse::<libp2p::Multiaddr>()) {
                    let _ = fed.pin(&ma, false).await;
                }
                out(format!("removed pin {addr}"))
            }
            Err(StoreError::NotFound) => Err(format!("{addr} is not a pin (see `voicechat peer list`)")),
            Err(e) => Err(st(e)),
        },
        Request::PeerBlock { node } => {
            let node = node.trim().to_owned();
            let (key, name) = node_of(store, &node)?;
            // A name not known yet is blocked as a name; a known one with its key too.
            let bound = if node.parse::<libp2p::PeerId>().is_ok() { name.clone() } else { name.clone().filter(|_| key.is_some()) };
            store.add_block(&node, bound.as_ref()).await.map_err(st)?;
            if let Some(fed) = ctx.fed() {
                fed.block(key, name, true).await;
            }
            out(format!("blocked {node}{}", if ctx.fed().is_some() { " (its connections are closed now)" } else { "" }))
        }
        Request::PeerUnblock { node } => match store.remove_block(node.trim()).await {
            Ok(()) => {
                if let (Some(fed), Ok((key, name))) = (ctx.fed(), node_of(store, node.trim())) {
                    fed.block(key, name, false).await;
                }
                out(format!("unblocked {node}"))
            }
            Err(StoreError::NotFound) => Err(format!("{node} is not blocked (see `voicechat peer list`)")),
            Err(e) => Err(st(e)),
        },
        Request::PeerList => {
            let mut lines: Vec<String> = store.pins().map_err(st)?.into_iter().map(|a| format!("pin\t{a}")).collect();
            lines.extend(store.blocks().map_err(st)?.into_iter().map(|b| format!("block\t{b}")));
            for p in store.peers().map_err(st)? {
                let trust = match p.trust {
                    crate::store::Trust::Pinned => "pinned",
                    crate::store::Trust::Verified => "verified",
                    crate::store::Trust::Tofu => "first-use",
                };
                lines.push(format!("node\t{}\t{}\t{trust}\tkey {}", p.name.as_str(), p.url, p.key));
            }
            out(lines.join("\n"))
        }
        Request::TokenCreate { name, scopes, user } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 64 || name.contains(char::is_whitespace) {
                return Err("a token name is 1 to 64 characters without spaces".into());
            }
            if scopes.is_empty() {
                return Err("give at least one --scope (users, groups, rooms, invites)".into());
            }
            let user = match user {
                None if scopes.iter().any(|s| *s != crate::store::Scope::Users) => {
                    return Err("groups, rooms and invites act as a user: add --user NAME".into());
                }
                None => None,
                Some(u) => {
                    let n = voicechat_protocol::ids::UserName::new(&u).map_err(|e| e.to_string())?;
                    store.user(&n).map_err(st)?.ok_or_else(|| format!("there is no user {u}"))?;
                    Some(n)
                }
            };
            let secret = format!("vct_{}", crate::time::random_hex(32));
            let record = crate::store::TokenRecord { name: name.clone(), scopes, user, created_at: crate::time::unix_now() };
            match store.put_token(&secret, &record).await {
                Ok(()) => out(secret),
                Err(StoreError::Conflict) => Err(format!("a token named {name} exists (see `voicechat token list`)")),
                Err(e) => Err(st(e)),
            }
        }
        Request::TokenList => {
            let lines: Vec<String> = store
                .tokens()
                .map_err(st)?
                .iter()
                .map(|t| {
                    let scopes: Vec<String> = t.scopes.iter().map(|s| format!("{s:?}").to_lowercase()).collect();
                    let user = t.user.as_ref().map_or("-", |u| u.as_str());
                    format!("{}	{}	user {user}	created {}", t.name, scopes.join(","), t.created_at)
                })
                .collect();
            out(lines.join("\n"))
        }
        Request::TokenRevoke { name } => match store.remove_token(&name).await {
            Ok(()) => out(format!("revoked token {name}")),
            Err(StoreError::NotFound) => Err(format!("no token named {name} (see `voicechat token list`)")),
            Err(e) => Err(st(e)),
        },
        Request::Backup => {
            let b = crate::backup::Backup::take(&ctx.data_dir, store).map_err(|e| format!("{e:#}"))?;
            let entries = b.store.len();
            let files = b.files.len();
            Ok(Reply {
                output: format!("backed up {entries} store entries and {files} files"),
                data: b.encode(),
                status: None,
            })
        }
        Request::Status => match &ctx.status {
            Some(s) => Ok(Reply { status: Some(s.clone()), ..Reply::default() }),
            None => Err("the node is not running".into()),
        },
    }
}

/// The socket path of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Serves the admin socket of a running node until the process ends. A stale socket
/// file (left by a killed node) is replaced; the store lock already proves no other
/// node runs on this data dir.
#[cfg(unix)]
pub fn serve(ctx: Ctx) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = socket_path(&ctx.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("cannot create {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let ctx = Arc::new(ctx);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    tracing::warn!(%e, "admin socket accept failed");
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(&ctx, conn).await {
                    tracing::debug!(%e, "admin connection ended");
                }
                drop(permit);
            });
        }
    });
    Ok(())
}

#[cfg(unix)]
async fn handle(ctx: &Ctx, conn: tokio::net::UnixStream) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut line = Vec::new();
    let n = BufReader::new(rd.take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line).await?;
    let parsed = if n > MAX_REQUEST {
        Err(format!("request longer than {MAX_REQUEST} bytes"))
    } else {
        serde_json::from_slice::<Request>(&line).map_err(|e| format!("bad request: {e}"))
    };
    let result = match parsed {
        Ok(req) => {
            let op = serde_json::to_value(&req).ok().and_then(|v| v["op"].as_str().map(str::to_owned));
            tracing::info!(op = op.as_deref().unwrap_or("?"), "admin request");
            execute(ctx, req).await
        }
        Err(e) => Err(e),
    };
    let (wire, data) = match result {
        Ok(r) => (WireReply { ok: true, error: String::new(), output: r.output, bytes: r.data.len(), status: r.status }, r.data),
        Err(error) => (WireReply { ok: false, error, output: String::new(), bytes: 0, status: None }, Vec::new()),
    };
    let mut head = serde_json::to_vec(&wire).expect("reply serialises");
    head.push(b'\n');
    wr.write_all(&head).await?;
    wr.write_all(&data).await?;
    wr.shutdown().await
}

/// Asks the node running on `data_dir`. `Ok(None)` when none is (no socket, or nobody
/// listening on it): then the caller opens the data dir itself.
#[cfg(unix)]
pub async fn call(data_dir: &Path, req: &Request) -> anyhow::Result<Option<Result<Reply, String>>> {
    use anyhow::Context;
    use std::io::ErrorKind;
    let path = socket_path(data_dir);
    let conn = match tokio::net::UnixStream::connect(&path).await {
        Ok(c) => c,
        // No socket, nobody on it, or a path too long for a socket name: no node to ask.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::InvalidInput) => {
            return Ok(None);
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            anyhow::bail!("cannot use {}: permission denied (run as the user the node runs as)", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    };
    let (rd, mut wr) = conn.into_split();
    let mut line = serde_json::to_vec(req).expect("request serialises");
    line.push(b'\n');
    wr.write_all(&line).await.context("the node closed the admin socket")?;
    let mut rd = BufReader::new(rd);
    let mut head = Vec::new();
    rd.read_until(b'\n', &mut head).await.context("no reply on the admin socket")?;
    let wire: WireReply = serde_json::from_slice(&head).context("the node sent a bad reply on the admin socket")?;
    if !wire.ok {
        return Ok(Some(Err(wire.error)));
    }
    let mut data = vec![0; wire.bytes];
    rd.read_exact(&mut data).await.context("the node's reply was cut short")?;
    Ok(Some(Ok(Reply { output: wire.output, data, status: wire.status })))
}

/// Without Unix sockets the CLI always opens the data dir.
#[cfg(not(unix))]
pub async fn call(_: &Path, _: &Request) -> anyhow::Result<Option<Result<Reply, String>>> {
    Ok(None)
}

/// Without Unix sockets a running node offers no admin socket.
#[cfg(not(unix))]
pub fn serve(_: Ctx) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r = Request::UserAdd { name: "bob".into(), password: "pw".into() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"op":"user_add","name":"bob","password":"pw"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"op":"backup"}"#).unwrap(), Request::Backup);
        assert!(serde_json::from_str::<Request>(r#"{"op":"user_add","name":"x"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"rm_rf"}"#).is_err());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn garbage_gets_an_error_and_the_socket_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let status = Status { url: "http://localhost:1".into(), ..Status::default() };
        serve(Ctx { store, data_dir: dir.path().into(), hasher: Hasher::new(1), status: Some(status), app: None }).unwrap();
        let path = socket_path(dir.path());
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        for garbage in [&b"\x00\xffnot json\n"[..], &vec![b'x'; MAX_REQUEST + 10][..]] {
            let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
            c.write_all(garbage).await.unwrap();
            let mut reply = String::new();
            BufReader::new(c).read_line(&mut reply).await.unwrap();
            let wire: WireReply = serde_json::from_str(&reply).unwrap();
            assert!(!wire.ok && (wire.error.contains("bad request") || wire.error.contains("longer")), "{reply}");
        }
        let r = call(dir.path(), &Request::UserList).await.unwrap().unwrap().unwrap();
        assert_eq!(r.output, "");
        let r = call(dir.path(), &Request::UserAdd { name: "bob".into(), password: "short".into() }).await.unwrap().unwrap();
        assert!(r.unwrap_err().contains("characters"));
        let r = call(dir.path(), &Request::Status).await.unwrap().unwrap().unwrap();
        assert_eq!(r.status.unwrap().url, "http://localhost:1");
        let gone = tempfile::tempdir().unwrap();
        assert!(call(gone.path(), &Request::UserList).await.unwrap().is_none(), "no node: fall back");
    }
}
