//! The registry of open sockets: who is connected, and a bounded queue into each socket.
//!
//! Sending never waits. A socket whose queue is full is a client that stopped reading: it
//! is cut off (its queue closed) instead of letting it grow the node's memory.
//!
//! Each socket is tagged with the login session it was opened with, so logging out,
//! changing the password or disabling the account closes the right sockets at once; and a
//! user holds at most a set number of sockets.
//!
//! A socket that drops without saying goodbye (a network blip, a dead connection given up
//! on) is *parked*: its entry and its queue stay, collecting messages, so that the page can
//! resume the same session on a new socket without missing any (see `ws`). Each socket
//! holding an entry has a generation, so the end of a socket that was taken over changes
//! nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use voicechat_protocol::ids::{SessionId, UserId};

/// Messages queued per socket before it counts as stuck.
pub const SOCKET_QUEUE: usize = 256;

/// One encoded message, shared by every socket it goes to.
pub type Outbound = Arc<str>;

/// One open socket: its queue and the login session (its [`crate::store::session_tag`]).
struct Socket {
    tx: mpsc::Sender<Outbound>,
    login: Arc<str>,
    /// Which socket holds the session now (a resume takes it over with a new one).
    generation: u64,
    /// The queue of a socket that dropped, kept for a resume.
    parked: Option<mpsc::Receiver<Outbound>>,
    /// What the session's sockets sent last, for a resume to send again what the dropped
    /// one sent into the void.
    replay: Arc<Mutex<Replay>>,
}

/// Messages kept per session for a resume.
pub const REPLAY: usize = 64;

/// The last [`REPLAY`] messages a session's sockets sent (or tried to), and how many in all.
#[derive(Default)]
pub struct Replay {
    sent: u64,
    recent: std::collections::VecDeque<Outbound>,
}

impl Replay {
    /// One message handed to the socket (whether or not it got through).
    pub fn sent(&mut self, msg: &Outbound) {
        self.sent += 1;
        if self.recent.len() == REPLAY {
            self.recent.pop_front();
        }
        self.recent.push_back(msg.clone());
    }

    /// What a page that received `seen` messages of the session missed; `Err(n)` when `n`
    /// of them are too old to be kept.
    pub fn missed(&self, seen: u64) -> Result<Vec<Outbound>, u64> {
        let missed = self.sent.saturating_sub(seen);
        let kept = self.recent.len() as u64;
        if missed > kept {
            return Err(missed - kept);
        }
        Ok(self.recent.iter().skip((kept - missed) as usize).cloned().collect())
    }
}

/// A socket's hold on its session, from [`Hub::attach`].
pub struct Attached {
    /// Its queue (a resumed session's, with what came meanwhile).
    pub rx: mpsc::Receiver<Outbound>,
    /// Its generation, for [`Hub::park`] and [`Hub::release`].
    pub generation: u64,
    /// Whether the session was still registered (parked, or its old socket not yet seen
    /// dead) and was taken over.
    pub resumed: bool,
    /// What the session's sockets sent, for [`Replay::missed`]; every message sent goes in.
    pub replay: Arc<Mutex<Replay>>,
}

#[derive(Default)]
struct Inner {
    by_user: HashMap<UserId, HashMap<SessionId, Socket>>,
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
    generations: Arc<AtomicU64>,
}

/// Encodes a message once for many sockets.
pub fn encode<T: Serialize>(msg: &T) -> Outbound {
    serde_json::to_string(msg).expect("server messages serialise").into()
}

impl Hub {
    /// Registers a new socket opened with login session `login` and returns its queue;
    /// `None` if the user has `max_per_user` sockets open already.
    pub fn register(&self, user: &UserId, session: SessionId, login: &str, max_per_user: usize) -> Option<mpsc::Receiver<Outbound>> {
        self.attach(user, session, login, max_per_user).map(|a| a.rx)
    }

    /// Registers a socket for `session`, opened with login session `login`. If that session
    /// is registered already under the same login (its socket parked, or dead and not yet
    /// noticed), the new socket takes it over: with the parked queue, or with a new one
    /// (the old socket's loop then ends, and its [`Hub::release`] says it is no longer
    /// the owner). `None` if the user has `max_per_user` sockets open already, or the
    /// session is another login's.
    pub fn attach(&self, user: &UserId, session: SessionId, login: &str, max_per_user: usize) -> Option<Attached> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.inner.lock().expect("hub lock");
        let mine = inner.by_user.entry(user.clone()).or_default();
        if let Some(s) = mine.get_mut(&session) {
            if &*s.login != login {
                return None;
            }
            s.generation = generation;
            let rx = match s.parked.take() {
                Some(rx) => rx,
                None => {
                    let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
                    s.tx = tx;
                    rx
                }
            };
            return Some(Attached { rx, generation, resumed: true, replay: s.replay.clone() });
        }
        if mine.len() >= max_per_user {
            if mine.is_empty() {
                inner.by_user.remove(user);
            }
            return None;
        }
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let replay = Arc::new(Mutex::new(Replay::default()));
        mine.insert(session, Socket { tx, login: login.into(), generation, parked: None, replay: replay.clone() });
        inner.sockets += 1;
        metrics::gauge!("voicechat_ws_connected").set(inner.sockets as f64);
        Some(Attached { rx, generation, resumed: false, replay })
    }

    /// The socket of `generation` dropped: its queue is kept (and goes on collecting) for
    /// a resume. False if the session was taken over or closed meanwhile.
    pub fn park(&self, user: &UserId, session: &SessionId, generation: u64, rx: mpsc::Receiver<Outbound>) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        match inner.by_user.get_mut(user).and_then(|m| m.get_mut(session)) {
            Some(s) if s.generation == generation => {
                s.parked = Some(rx);
                true
            }
            _ => false,
        }
    }

    /// The socket of `generation` (or its parked queue) is done: forgets it, and says
    /// whether the session's seat must be given up — false when a newer socket took the
    /// session over (it holds the seat now).
    pub fn release(&self, user: &UserId, session: &SessionId, generation: u64) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        let Some(sessions) = inner.by_user.get_mut(user) else { return true };
        match sessions.get(session) {
            None => true,
            Some(s) if s.generation != generation => false,
            Some(_) => {
                sessions.remove(session);
                if sessions.is_empty() {
                    inner.by_user.remove(user);
                }
                inner.sockets -= 1;
                metrics::gauge!("voicechat_ws_connected").set(inner.sockets as f64);
                true
            }
        }
    }

    /// Number of sockets `user` has open.
    pub fn user_sockets(&self, user: &UserId) -> usize {
        self.inner.lock().expect("hub lock").by_user.get(user).map_or(0, HashMap::len)
    }

    /// The sockets `user` has open, other than `except`.
    pub fn other_sessions(&self, user: &UserId, except: &SessionId) -> Vec<SessionId> {
        let inner = self.inner.lock().expect("hub lock");
        inner.by_user.get(user).map_or_else(Vec::new, |m| m.keys().filter(|s| *s != except).copied().collect())
    }

    /// Closes the sockets of `user` opened with login session `login` (or, with `None`,
    /// all of them), except those opened with `keep`; each gets `last` as its final
    /// message. Returns the sessions closed, so their seats can be given up.
    pub fn close(&self, user: &UserId, login: Option<&str>, keep: Option<&str>, last: &Outbound) -> Vec<SessionId> {
        let mut inner = self.inner.lock().expect("hub lock");
        let Some(mine) = inner.by_user.get_mut(user) else { return Vec::new() };
        let doomed: Vec<SessionId> = mine
            .iter()
            .filter(|(_, s)| login.is_none_or(|l| &*s.login == l) && keep.is_none_or(|k| &*s.login != k))
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            if let Some(s) = mine.remove(id) {
                // Dropping the only sender ends the socket's loop after it sent this.
                let _ = s.tx.try_send(last.clone());
            }
        }
        let n = doomed.len();
        inner.cut_off(n);
        doomed
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
            sessions.retain(|_, s| push(&s.tx, msg));
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
            let Some(s) = sessions.get(session) else { continue };
            if !push(&s.tx, msg) {
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
        let Some(s) = sessions.get(session) else { return false };
        if push(&s.tx, msg) {
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
        let slow = hub.attach(&alice, s1, "l1", 8).unwrap();
        let (mut slow, slow_generation) = (slow.rx, slow.generation);
        let mut fast = hub.register(&alice, s2, "l1", 8).unwrap();
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
        assert!(hub.release(&alice, &s1, slow_generation), "its seat is given up");
        assert_eq!(hub.sockets(), 1, "a socket cut off earlier is not counted twice");
    }

    #[test]
    fn replay_gives_what_a_page_missed_or_says_how_much_is_gone() {
        let mut r = Replay::default();
        let msgs: Vec<Outbound> = (0..REPLAY as u64 + 10).map(|i| encode(&serde_json::json!({"n": i}))).collect();
        for m in &msgs[..5] {
            r.sent(m);
        }
        assert_eq!(r.missed(5).unwrap(), Vec::<Outbound>::new());
        assert_eq!(r.missed(3).unwrap(), msgs[3..5].to_vec());
        assert_eq!(r.missed(9).unwrap(), Vec::<Outbound>::new(), "a page that counts more missed nothing");
        for m in &msgs[5..] {
            r.sent(m);
        }
        let total = msgs.len() as u64;
        assert_eq!(r.missed(total - REPLAY as u64).unwrap(), msgs[msgs.len() - REPLAY..].to_vec());
        assert_eq!(r.missed(0), Err(10), "the oldest ten are gone");
    }

    #[test]
    fn sockets_per_user_are_capped_and_closed_by_login_session() {
        let hub = Hub::default();
        let alice: UserId = "alice@alpha".parse().unwrap();
        let bob: UserId = "bob@alpha".parse().unwrap();
        let mut queues = Vec::new();
        for i in 0..3u8 {
            let login = if i == 0 { "phone" } else { "laptop" };
            queues.push(hub.register(&alice, SessionId([i; 16]), login, 3).expect("under the cap"));
        }
        assert!(hub.register(&alice, SessionId([9; 16]), "laptop", 3).is_none(), "the 4th socket is refused");
        let mut b = hub.register(&bob, SessionId([7; 16]), "bob", 3).unwrap();
        let bye = encode(&serde_json::json!({"type": "signed_out"}));
        // Logging the laptop out closes its two sockets; the phone's stays.
        let closed = hub.close(&alice, Some("laptop"), None, &bye);
        assert_eq!(closed.len(), 2);
        for q in &mut queues[1..] {
            assert_eq!(q.try_recv().unwrap(), bye, "told why before the end");
            assert!(matches!(q.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        }
        assert!(matches!(queues[0].try_recv(), Err(mpsc::error::TryRecvError::Empty)), "the phone stays open");
        // Everything of alice but the phone's login: nothing more to close.
        assert!(hub.close(&alice, None, Some("phone"), &bye).is_empty());
        assert_eq!(hub.close(&alice, None, None, &bye), vec![SessionId([0; 16])]);
        assert_eq!(hub.user_sockets(&alice), 0);
        assert!(matches!(b.try_recv(), Err(mpsc::error::TryRecvError::Empty)), "bob is untouched");
        assert_eq!(hub.sockets(), 1);
    }
}
