//! Keeping configured peers connected: each has a backoff that starts at 1 s, doubles per
//! failed dial or lost connection up to 30 s (jittered ±20 %), and resets after a
//! connection that lasted. The state machine is plain data; the loop feeds it time.

use std::time::Duration;

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;
use tracing::debug;

use super::NetError;
use super::event_loop::EventLoop;

/// First redial delay.
pub(super) const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest redial delay.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff when it closes.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// A configured peer and its redial state.
#[derive(Debug)]
pub(super) struct Redial {
    pub(super) addrs: Vec<Multiaddr>,
    backoff: Duration,
    next: Option<Instant>,
    pub(super) dialing: bool,
    connected_at: Option<Instant>,
}

/// A random factor in [0.8, 1.2].
pub(super) fn jitter() -> f64 {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    0.8 + 0.4 * f64::from(r) / f64::from(u32::MAX)
}

impl Redial {
    pub(super) fn new(addr: Multiaddr) -> Self {
        Self {
            addrs: vec![addr],
            backoff: MIN_BACKOFF,
            next: None,
            dialing: false,
            connected_at: None,
        }
    }

    /// Whether a dial should start now (the caller also checks it is not connected).
    pub(super) fn is_due(&self, now: Instant) -> bool {
        !self.dialing && self.next.is_none_or(|t| t <= now)
    }

    /// Dial now, whatever the backoff (a new address was added).
    pub(super) fn dial_now(&mut self) {
        self.next = None;
    }

    /// Schedules the next dial after the current backoff times `jitter`, and doubles it.
    pub(super) fn schedule(&mut self, now: Instant, jitter: f64) {
        self.next = Some(now + self.backoff.mul_f64(jitter));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.dialing = false;
    }

    pub(super) fn on_connected(&mut self, now: Instant) {
        self.dialing = false;
        self.next = None;
        self.connected_at.get_or_insert(now);
    }

    /// The last connection closed: redial after the backoff, reset first if it was stable.
    pub(super) fn on_closed(&mut self, now: Instant, jitter: f64) {
        if self
            .connected_at
            .take()
            .is_some_and(|t| now - t >= STABLE_CONNECTION)
        {
            self.backoff = MIN_BACKOFF;
        }
        self.schedule(now, jitter);
    }
}

impl EventLoop {
    pub(super) fn add_peer(&mut self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        if peer == *self.swarm.local_peer_id() {
            return Err(NetError::SelfDial(peer));
        }
        if !self.swarm.behaviour().admits(&peer) {
            debug!(%peer, "not dialling a peer this node does not admit");
            return Ok(());
        }
        self.swarm.add_peer_address(peer, addr.clone());
        let entry = self
            .redial
            .entry(peer)
            .or_insert_with(|| Redial::new(addr.clone()));
        if !entry.addrs.contains(&addr) {
            entry.addrs.push(addr);
        }
        entry.dial_now();
        debug!(%peer, "peer added");
        Ok(())
    }

    /// Dials every configured peer that is not connected, not being dialled, and due.
    pub(super) fn redial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(peer, r)| r.is_due(now) && !self.swarm.is_connected(peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let Some(r) = self.redial.get_mut(&peer) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(r.addrs.clone())
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    debug!(%peer, "dialling");
                    r.dialing = true;
                }
                Err(error) => {
                    debug!(%peer, %error, "dial not started");
                    r.schedule(now, jitter());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_connection() {
        let t0 = Instant::now();
        let mut r = Redial::new("/ip4/127.0.0.1/tcp/1".parse().unwrap());
        assert!(r.is_due(t0));
        r.dialing = true;
        assert!(!r.is_due(t0));
        let mut now = t0;
        let mut delays = vec![];
        for _ in 0..7 {
            r.schedule(now, 1.0);
            let next = r.next.unwrap();
            assert!(!r.is_due(next - Duration::from_millis(1)) && r.is_due(next));
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);

        // A short-lived connection keeps the backoff; a stable one resets it.
        r.on_connected(now);
        r.on_closed(now + secs(5), 1.0);
        assert_eq!(r.next, Some(now + secs(5) + MAX_BACKOFF));
        r.on_connected(now);
        r.on_closed(now + secs(60), 1.0);
        assert_eq!(r.next, Some(now + secs(60) + MIN_BACKOFF));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.8..=1.2).contains(&j), "{j}");
        }
    }
}
