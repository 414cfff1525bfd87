//! Failed-login limits per account and per client IP, as sliding windows over an injected
//! clock (`now` is a parameter, so the tests move time instead of sleeping).
//!
//! Only *failures* count: a user who logs in correctly five times a minute is never
//! limited. That is why this is not `governor`: a GCRA limiter consumes a cell on every
//! check and cannot give a cell back when the password turns out right.
//!
//! An attempt *reserves* its slot before the password is hashed (counted as a failure at
//! once) and gives it back only if the password was right. Counting after the hash let
//! 120 simultaneous wrong logins through to 102 password checks; now at most the limit do.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed per account per window; the next attempt is refused.
pub const ACCOUNT_FAILURES: usize = 5;
/// Failures allowed per client IP per window (many accounts behind one NAT).
pub const IP_FAILURES: usize = 30;
/// The window both limits count over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked at most per limit; beyond it the oldest quiet keys are dropped first.
const MAX_KEYS: usize = 100_000;

struct Window<K> {
    limit: usize,
    hits: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq + Clone> Window<K> {
    fn new(limit: usize) -> Self {
        Self { limit, hits: HashMap::new() }
    }

    fn prune(q: &mut VecDeque<Instant>, now: Instant) {
        while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
    }

    /// `Some(wait)` when `key` is over its limit at `now`.
    fn blocked(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let q = self.hits.get_mut(key)?;
        Self::prune(q, now);
        if q.len() < self.limit {
            return None;
        }
        let oldest = *q.front()?;
        Some(WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
    }

    fn record(&mut self, key: &K, now: Instant) {
        if self.hits.len() >= MAX_KEYS && !self.hits.contains_key(key) {
            self.hits.retain(|_, q| {
                Self::prune(q, now);
                !q.is_empty()
            });
            if self.hits.len() >= MAX_KEYS {
                // Still full of live keys: forget an arbitrary one rather than grow.
                if let Some(k) = self.hits.keys().next().cloned() {
                    self.hits.remove(&k);
                }
            }
        }
        let q = self.hits.entry(key.clone()).or_default();
        Self::prune(q, now);
        q.push_back(now);
        while q.len() > self.limit {
            q.pop_front();
        }
    }
}

/// The node's login limiter.
pub struct LoginLimiter {
    accounts: Window<String>,
    ips: Window<IpAddr>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self { accounts: Window::new(ACCOUNT_FAILURES), ips: Window::new(IP_FAILURES) }
    }
}

impl LoginLimiter {
    /// Reserves a password check for `account` from `ip` at `now`: `Err(retry_after)` if it
    /// must be refused, else the attempt is counted as a failure right away (so attempts
    /// racing each other cannot all pass the check before any is counted). Call before
    /// hashing; call [`LoginLimiter::succeeded`] if the password was right.
    pub fn reserve(&mut self, account: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let account = account.to_ascii_lowercase();
        let a = self.accounts.blocked(&account, now);
        let i = self.ips.blocked(&ip, now);
        if let Some(wait) = a.max(i) {
            return Err(wait.max(Duration::from_secs(1)));
        }
        self.accounts.record(&account, now);
        self.ips.record(&ip, now);
        Ok(())
    }

    /// A correct password: clears the account's failures, and gives back the slot the
    /// attempt reserved at `at` from `ip` (other failures from that IP stay).
    pub fn succeeded(&mut self, account: &str, ip: IpAddr, at: Instant) {
        self.accounts.hits.remove(&account.to_ascii_lowercase());
        if let Some(q) = self.ips.hits.get_mut(&ip)
            && let Some(i) = q.iter().rposition(|t| *t == at)
        {
            q.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn sixth_attempt_in_a_minute_is_refused_until_the_window_passes() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(l.reserve("bob", IP, now), Ok(()), "attempt {i}");
        }
        let now = t0 + Duration::from_secs(10);
        let wait = l.reserve("Bob", IP, now).expect_err("6th attempt is limited");
        // The first failure (t0) leaves the window at t0+60.
        assert_eq!(wait, Duration::from_secs(50));
        // Another account from the same IP is unaffected.
        assert_eq!(l.reserve("alice", IP, now), Ok(()));
        l.succeeded("alice", IP, now);
        // Just before the window passes: still refused. At it: allowed again.
        assert!(l.reserve("bob", IP, t0 + Duration::from_millis(59_999)).is_err());
        assert_eq!(l.reserve("bob", IP, t0 + WINDOW), Ok(()));
        l.succeeded("bob", IP, t0 + WINDOW);
        assert_eq!(l.reserve("bob", IP, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn racing_attempts_reserve_before_any_is_checked() {
        // 120 attempts arrive before any password check finishes: only the limit pass.
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        let passed = (0..120).filter(|_| l.reserve("bob", IP, now).is_ok()).count();
        assert_eq!(passed, ACCOUNT_FAILURES);
    }

    #[test]
    fn a_right_password_gives_its_slot_back() {
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..IP_FAILURES * 2 {
            let acct = format!("user{}", i % 3);
            l.reserve(&acct, IP, now).expect("right passwords are never limited");
            l.succeeded(&acct, IP, now);
        }
    }

    #[test]
    fn one_ip_guessing_many_accounts_is_limited() {
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..IP_FAILURES {
            let acct = format!("user{i}");
            assert_eq!(l.reserve(&acct, IP, now), Ok(()));
        }
        assert!(l.reserve("fresh", IP, now).is_err());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(l.reserve("fresh", other, now), Ok(()));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut w: Window<u32> = Window::new(3);
        let now = Instant::now();
        for k in 0..(MAX_KEYS as u32 + 10) {
            w.record(&k, now);
        }
        assert!(w.hits.len() <= MAX_KEYS);
    }
}
