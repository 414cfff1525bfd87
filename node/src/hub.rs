//! The registry of open sockets: who is connected, and a bounded queue into each socket.
//!
//! Sending never waits. A socket whose queue is full is a client that stopped reading: it
//! is cut off (its queue closed) instead of letting it grow the node's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use voicechat_protocol::ids::{SessionId, UserId};

/// Messages queued per socket before it counts as stuck.
pub const SOCKET_QUEUE: usize = 256;

/// One encoded message, shared by every socket it goes to.
pub type Outbound = Arc<str>;

#[derive(Default)]
struct Inner {
    by_user: HashMap<UserId, HashMap<SessionId, mpsc::Sender<Outbound>>>,
    sockets: usize,
}

impl Inner {
    /// Accounts for sockets dropped from the map because they were stuck or closed; their
    /// tasks' later `unregister` then finds nothing and changes nothing.
    fn cut_off(&mut self, n: usize) {
        if n > 0 {
            self.by_user.retain(|_, s| !s.is_empty());
            self.sockets -= n;
            metrics::gauge!("voicechat_ws_connected").set(self.sockets as f64);
        }
    }
}

/// Open sockets by user. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
}

/// Encodes a message once for many sockets.
pub fn encode<T: Serialize>(msg: &T) -> Outbound {
    serde_json::to_string(msg).expect("server messages serialise").into()
}

impl Hub {
    /// Registers a new socket and returns its queue.
    pub fn register(&self, user: &UserId, session: SessionId) -> mpsc::Receiver<Outbound> {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let mut inner = self.inner.lock().expect("hub lock");
        inner.by_user.entry(user.clone()).or_default().insert(session, tx);
        inner.sockets += 1;
        metrics::gauge!("voicechat_ws_connected").set(inner.sockets as f64);
        rx
    }

    /// Forgets a socket (it closed).
    pub fn unregister(&self, user: &UserId, session: &SessionId) {
        let mut inner = self.inner.lock().expect("hub lock");
        let Some(sessions) = inner.by_user.get_mut(user) else { return };
        if sessions.remove(session).is_some() {
            if sessions.is_empty() {
                inner.by_user.remove(user);
            }
            inner.sockets -= 1;
            metrics::gauge!("voicechat_ws_connected").set(inner.sockets as f64);
        }
    }

    /// Number of open sockets.
    pub fn sockets(&self) -> usize {
        self.inner.lock().expect("hub lock").sockets
    }

    /// Queues `msg` on every socket of every user in `users`.
    pub fn send_users<'a>(&self, users: impl IntoIterator<Item = &'a UserId>, msg: &Outbound) {
        let mut inner = self.inner.lock().expect("hub lock");
        let mut cut = 0;
        for user in users {
            let Some(sessions) = inner.by_user.get_mut(user) else { continue };
            let before = sessions.len();
            sessions.retain(|_, tx| push(tx, msg));
            cut += before - sessions.len();
        }
        inner.cut_off(cut);
    }

    /// Queues `msg` on each of these sockets that is open.
    pub fn send_sessions(&self, sockets: &[(UserId, SessionId)], msg: &Outbound) {
        let mut inner = self.inner.lock().expect("hub lock");
        let mut cut = 0;
        for (user, session) in sockets {
            let Some(sessions) = inner.by_user.get_mut(user) else { continue };
            let Some(tx) = sessions.get(session) else { continue };
            if !push(tx, msg) {
                sessions.remove(session);
                cut += 1;
            }
        }
        inner.cut_off(cut);
    }

    /// Queues `msg` on one socket; false if that socket is not open (or was cut off).
    pub fn send_session(&self, user: &UserId, session: &SessionId, msg: &Outbound) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        let Some(sessions) = inner.by_user.get_mut(user) else { return false };
        let Some(tx) = sessions.get(session) else { return false };
        if push(tx, msg) {
            true
        } else {
            sessions.remove(session);
            inner.cut_off(1);
            false
        }
    }
}

/// True if the socket took the message; false if it is gone or stuck (and is dropped).
fn push(tx: &mpsc::Sender<Outbound>, msg: &Outbound) -> bool {
    match tx.try_send(msg.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("voicechat_ws_slow_consumers_total").increment(1);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_socket_is_cut_off_and_others_keep_receiving() {
        let hub = Hub::default();
        let alice: UserId = "alice@alpha".parse().unwrap();
        let (s1, s2) = (SessionId([1; 16]), SessionId([2; 16]));
        let mut slow = hub.register(&alice, s1);
        let mut fast = hub.register(&alice, s2);
        let msg = encode(&serde_json::json!({"type": "pong"}));
        for _ in 0..SOCKET_QUEUE {
            hub.send_users([&alice], &msg);
            fast.try_recv().unwrap();
        }
        // One more: the slow socket's queue is full, so it is cut off.
        hub.send_users([&alice], &msg);
        assert!(!hub.send_session(&alice, &s1, &msg));
        assert!(hub.send_session(&alice, &s2, &msg));
        // The slow receiver drains what it had, then sees the end.
        let mut n = 0;
        while slow.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, SOCKET_QUEUE);
        assert!(matches!(slow.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(hub.sockets(), 1);
        hub.unregister(&alice, &s1);
        assert_eq!(hub.sockets(), 1, "a socket cut off earlier is not counted twice");
    }
}
