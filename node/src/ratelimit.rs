//! Failed-login limits per account and per client IP, as sliding windows over an injected
//! clock (`now` is a parameter, so the tests move time instead of sleeping).
//!
//! Only *failures* count: a user who logs in correctly five times a minute is never
//! limited. That is why this is not `governor`: a GCRA limiter consumes a cell on every
//! check and has no way to ask "would this be allowed?" without spending it.

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
    /// `Err(retry_after)` if a login for `account` from `ip` must be refused at `now`.
    /// Call before checking the password.
    pub fn check(&mut self, account: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let a = self.accounts.blocked(&account.to_ascii_lowercase(), now);
        let i = self.ips.blocked(&ip, now);
        match a.max(i) {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Counts a wrong password.
    pub fn failed(&mut self, account: &str, ip: IpAddr, now: Instant) {
        self.accounts.record(&account.to_ascii_lowercase(), now);
        self.ips.record(&ip, now);
    }

    /// A correct login clears the account's failures (not the IP's).
    pub fn succeeded(&mut self, account: &str) {
        self.accounts.hits.remove(&account.to_ascii_lowercase());
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
            assert_eq!(l.check("bob", IP, now), Ok(()), "attempt {i}");
            l.failed("bob", IP, now);
        }
        let now = t0 + Duration::from_secs(10);
        let wait = l.check("Bob", IP, now).expect_err("6th attempt is limited");
        // The first failure (t0) leaves the window at t0+60.
        assert_eq!(wait, Duration::from_secs(50));
        // Another account from the same IP is unaffected.
        assert_eq!(l.check("alice", IP, now), Ok(()));
        // Just before the window passes: still refused. At it: allowed again.
        assert!(l.check("bob", IP, t0 + Duration::from_millis(59_999)).is_err());
        assert_eq!(l.check("bob", IP, t0 + WINDOW), Ok(()));
        l.succeeded("bob");
        assert_eq!(l.check("bob", IP, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn one_ip_guessing_many_accounts_is_limited() {
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..IP_FAILURES {
            let acct = format!("user{i}");
            assert_eq!(l.check(&acct, IP, now), Ok(()));
            l.failed(&acct, IP, now);
        }
        assert!(l.check("fresh", IP, now).is_err());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(l.check("fresh", other, now), Ok(()));
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
