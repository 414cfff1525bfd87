//! The door of the client-facing sockets: every message a client sends passes here before
//! the TURN server sees it, and every message to a client on its way out.
//!
//! - Credentials are checked here, so the answers are the RFC's: an expired, forged or
//!   malformed credential gets 401 Unauthorized (the server itself would say 400), and an
//!   Allocate past the user's quota gets 486 Allocation Quota Reached.
//! - Relayed bytes are counted and capped per user (a token bucket each way); packets past
//!   the cap are dropped, as a full link would drop them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota};
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, Message, MessageType, Setter};
use stun::textattrs::TextAttribute;
use webrtc_util::Conn;

use super::Quotas;
use super::conns::{ConnResult, DynConn};
use super::creds::{self, Secret};

/// What the gate knows: the secret, the realm, who holds what.
pub struct Gate {
    pub(super) secret: Secret,
    pub(super) realm: String,
    pub(super) quotas: Arc<Mutex<Quotas>>,
    pub(super) max_per_user: usize,
    up: DefaultKeyedRateLimiter<String>,
    down: DefaultKeyedRateLimiter<String>,
}

/// What to do with a message from a client.
#[derive(PartialEq, Eq)]
enum Verdict {
    /// Hand it to the server.
    Pass,
    /// Answer it with this error instead.
    Refuse(ErrorCode, &'static str),
    /// Drop it (over the bandwidth cap).
    Drop,
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => f.write_str("Pass"),
            Verdict::Drop => f.write_str("Drop"),
            Verdict::Refuse(code, why) => write!(f, "Refuse({}, {why})", code.0),
        }
    }
}

impl Gate {
    /// A gate allowing `bytes_per_sec` each way per user (a second's worth of burst).
    pub fn new(secret: Secret, realm: String, quotas: Arc<Mutex<Quotas>>, max_per_user: usize, bytes_per_sec: u64) -> Self {
        let rate = NonZeroU32::new(u32::try_from(bytes_per_sec).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate);
        Gate {
            secret,
            realm,
            quotas,
            max_per_user,
            up: DefaultKeyedRateLimiter::keyed(quota),
            down: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Forgets idle users' buckets.
    pub fn prune(&self) {
        self.up.retain_recent();
        self.down.retain_recent();
    }

    fn inbound(&self, msg: &[u8], from: SocketAddr) -> Verdict {
        // ChannelData (first byte 0x40..=0x7f) and indications carry relayed data; requests
        // with a USERNAME carry credentials. Anything else goes to the server as it is.
        let is_stun = msg.first().is_some_and(|b| *b < 0x40);
        if !is_stun {
            return self.meter(from, msg.len(), true);
        }
        let mut m = Message::new();
        if m.unmarshal_binary(msg).is_err() {
            return Verdict::Pass; // the server answers malformed messages
        }
        if m.typ.class != CLASS_REQUEST || !m.contains(ATTR_USERNAME) {
            return if m.typ.class == CLASS_REQUEST { Verdict::Pass } else { self.meter(from, msg.len(), true) };
        }
        let text = |attr| TextAttribute::get_from_as(&m, attr).map(|t| t.text);
        let (Ok(username), Ok(realm)) = (text(ATTR_USERNAME), text(ATTR_REALM)) else {
            return Verdict::Pass; // the server says 400
        };
        let refuse = |why: &'static str| {
            metrics::counter!("voicechat_turn_refusals_total", "reason" => why).increment(1);
            Verdict::Refuse(CODE_UNAUTHORIZED, "Unauthorized")
        };
        if realm != self.realm || !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return refuse("credentials");
        }
        let password = match self.secret.check(&username, crate::time::unix_now()) {
            Ok(p) => p,
            Err(creds::CredError::Expired) => return refuse("expired"),
            Err(creds::CredError::Malformed) => return refuse("credentials"),
        };
        let key = MessageIntegrity::new_long_term_integrity(username.clone(), realm, password);
        if key.check(&mut m).is_err() {
            return refuse("credentials");
        }
        let user = creds::user_of(&username).unwrap_or(&username).to_owned();
        let mut q = self.quotas.lock().expect("quota lock");
        let held = q.by_user.get(&user).map_or(0, |s: &HashSet<SocketAddr>| s.len() - usize::from(s.contains(&from)));
        if m.typ.method == METHOD_ALLOCATE && held >= self.max_per_user {
            metrics::counter!("voicechat_turn_refusals_total", "reason" => "quota").increment(1);
            return Verdict::Refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached");
        }
        q.by_user.entry(user.clone()).or_default().insert(from);
        q.by_addr.insert(from, (user, Instant::now()));
        Verdict::Pass
    }

    /// Whether `n` bytes from or to `client` may pass; counts them when they do. Clients
    /// that have not authenticated (STUN binding, the first Allocate) are not metered.
    fn meter(&self, client: SocketAddr, n: usize, up: bool) -> Verdict {
        let Some((user, _)) = self.quotas.lock().expect("quota lock").by_addr.get(&client).cloned() else {
            return Verdict::Pass;
        };
        let limiter = if up { &self.up } else { &self.down };
        let n32 = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if matches!(limiter.check_key_n(&user, n32), Ok(Ok(()))) {
            let dir = if up { "in" } else { "out" };
            metrics::counter!("voicechat_turn_relayed_bytes_total", "direction" => dir).increment(n as u64);
            Verdict::Pass
        } else {
            metrics::counter!("voicechat_turn_refusals_total", "reason" => "bandwidth").increment(1);
            Verdict::Drop
        }
    }
}

/// An error response to the request in `req`, keeping its nonce so the client can retry.
fn error_response(req: &[u8], code: ErrorCode, reason: &str, realm: &str) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.unmarshal_binary(req).ok()?;
    let mut attrs: Vec<Box<dyn Setter>> = vec![
        Box::new(m.transaction_id),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() }),
        Box::new(TextAttribute::new(ATTR_REALM, realm.to_owned())),
    ];
    if let Ok(nonce) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
        attrs.push(Box::new(nonce));
    }
    let mut out = Message::new();
    out.build(&attrs).ok()?;
    Some(out.raw)
}

/// A client-facing socket behind the gate.
pub struct ClientConn {
    inner: DynConn,
    gate: Arc<Gate>,
}

impl ClientConn {
    /// `inner` behind `gate`.
    pub fn new(inner: DynConn, gate: Arc<Gate>) -> Self {
        ClientConn { inner, gate }
    }
}

#[async_trait]
impl Conn for ClientConn {
    async fn connect(&self, addr: SocketAddr) -> ConnResult<()> {
        self.inner.connect(addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> ConnResult<usize> {
        self.inner.recv(buf).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> ConnResult<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.gate.inbound(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => {}
                Verdict::Refuse(code, reason) => {
                    if let Some(resp) = error_response(&buf[..n], code, reason, &self.gate.realm) {
                        let _ = self.inner.send_to(&resp, from).await;
                    }
                }
            }
        }
    }
    async fn send(&self, buf: &[u8]) -> ConnResult<usize> {
        self.inner.send(buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> ConnResult<usize> {
        if self.gate.meter(target, buf.len(), false) == Verdict::Drop {
            return Ok(buf.len());
        }
        self.inner.send_to(buf, target).await
    }
    fn local_addr(&self) -> ConnResult<SocketAddr> {
        self.inner.local_addr()
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }
    async fn close(&self) -> ConnResult<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stun::agent::TransactionId;
    use stun::message::{BINDING_REQUEST, Getter, METHOD_REFRESH};

    use super::*;

    const REALM: &str = "alpha";

    fn gate(max: usize, rate: u64) -> Gate {
        Gate::new(Secret::from_bytes(b"0123456789abcdef"), REALM.into(), Arc::default(), max, rate)
    }

    fn request(method: stun::message::Method, username: &str, password: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
            Box::new(TextAttribute::new(ATTR_REALM, REALM.into())),
            Box::new(TextAttribute::new(ATTR_NONCE, "n0nce".into())),
            Box::new(MessageIntegrity::new_long_term_integrity(username.into(), REALM.into(), password.into())),
        ])
        .unwrap();
        m.raw
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], port))
    }

    #[test]
    fn good_credentials_pass_and_bad_ones_get_401() {
        let g = gate(4, 1 << 20);
        let now = crate::time::unix_now();
        let (user, pass, _) = g.secret.mint("alice@alpha", now, Duration::from_secs(60));
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, &user, &pass), addr(1)), Verdict::Pass);
        let unauthorized = Verdict::Refuse(CODE_UNAUTHORIZED, "Unauthorized");
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, &user, "forged"), addr(2)), unauthorized);
        let (old, old_pass, _) = g.secret.mint("alice@alpha", now - 120, Duration::from_secs(60));
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, &old, &old_pass), addr(3)), unauthorized, "expired");
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, "alice", "x"), addr(4)), unauthorized, "no expiry");
        // A later expiry in a copied username breaks the HMAC.
        let stretched = user.replacen(&user[..user.find(':').unwrap()], &(now + 999_999).to_string(), 1);
        assert_eq!(g.inbound(&request(METHOD_REFRESH, &stretched, &pass), addr(1)), unauthorized);
        // The answer is a 401 for the same transaction, with the realm and nonce to retry.
        let req = request(METHOD_ALLOCATE, &user, "forged");
        let resp = error_response(&req, CODE_UNAUTHORIZED, "Unauthorized", REALM).unwrap();
        let mut m = Message::new();
        m.unmarshal_binary(&resp).unwrap();
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).unwrap();
        assert_eq!(code.code.0, 401);
        assert_eq!(m.typ, MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE));
        let mut sent = Message::new();
        sent.unmarshal_binary(&req).unwrap();
        assert_eq!(m.transaction_id, sent.transaction_id);
        assert_eq!(TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text, "n0nce");
    }

    #[test]
    fn allocations_past_the_quota_get_486_and_closing_frees_one() {
        let g = gate(2, 1 << 20);
        let (user, pass, _) = g.secret.mint("bob@alpha", crate::time::unix_now(), Duration::from_secs(60));
        let alloc = |port| g.inbound(&request(METHOD_ALLOCATE, &user, &pass), addr(port));
        assert_eq!(alloc(1), Verdict::Pass);
        assert_eq!(alloc(2), Verdict::Pass);
        assert_eq!(alloc(3), Verdict::Refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached"));
        assert_eq!(alloc(1), Verdict::Pass, "a retry from a client already counted");
        assert_eq!(g.inbound(&request(METHOD_REFRESH, &user, &pass), addr(2)), Verdict::Pass);
        g.quotas.lock().unwrap().forget(addr(1));
        assert_eq!(alloc(3), Verdict::Pass);
        // Another user has their own quota.
        let (carol, cpass, _) = g.secret.mint("carol@alpha", crate::time::unix_now(), Duration::from_secs(60));
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, &carol, &cpass), addr(9)), Verdict::Pass);
    }

    #[test]
    fn relayed_bytes_past_the_cap_are_dropped_per_user() {
        let g = gate(4, 1000);
        let (user, pass, _) = g.secret.mint("dave@alpha", crate::time::unix_now(), Duration::from_secs(60));
        // Before authenticating, nothing is metered (a STUN binding, say).
        let mut bind = Message::new();
        bind.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)]).unwrap();
        assert_eq!(g.inbound(&bind.raw, addr(1)), Verdict::Pass);
        assert_eq!(g.inbound(&request(METHOD_ALLOCATE, &user, &pass), addr(1)), Verdict::Pass);
        let chan = |len: usize| {
            let mut v = vec![0x40, 0x00, (len >> 8) as u8, len as u8];
            v.resize(4 + len, 0);
            v
        };
        assert_eq!(g.inbound(&chan(600), addr(1)), Verdict::Pass);
        assert_eq!(g.inbound(&chan(600), addr(1)), Verdict::Drop, "1204 bytes in a second is over 1000");
        assert_eq!(g.meter(addr(1), 900, false), Verdict::Pass, "the other way has its own bucket");
        assert_eq!(g.inbound(&chan(600), addr(2)), Verdict::Pass, "an unknown client is not dave");
    }
}
