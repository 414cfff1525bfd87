//! The node's signing identity: its ed25519 key and one strictly increasing `seq` counter
//! shared by everything that signs (the core for group records and consents, federation
//! for presence, signals and the node card), so no two records ever share a seq.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use voicechat_protocol::keys::NodeKey;
use voicechat_protocol::records::Record;
use voicechat_protocol::{Envelope, SigningKey};

/// Cheap to clone; clones share the counter.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    node_key: NodeKey,
    last: Arc<AtomicU64>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("node_key", &self.node_key).finish_non_exhaustive()
    }
}

/// Microseconds since the epoch by the wall clock.
pub fn wall_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Signer {
    /// A signer for `seed` (the node key's secret).
    pub fn new(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        Self { node_key: NodeKey::from_signing_key(&key), key, last: Arc::new(AtomicU64::new(0)) }
    }

    /// The public key.
    pub fn node_key(&self) -> NodeKey {
        self.node_key
    }

    /// The signing key (for the libp2p identity).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// A fresh seq: at least `now_micros` (so it stays above anything signed before a
    /// restart) and above every seq handed out before.
    pub fn next_seq(&self, now_micros: u64) -> u64 {
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = now_micros.max(prev + 1);
            match self.last.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Builds a record around a fresh seq and signs it; returns the encoded envelope.
    pub fn seal_at(&self, now_micros: u64, build: impl FnOnce(u64) -> Record) -> Vec<u8> {
        let record = build(self.next_seq(now_micros));
        Envelope::seal(&record, &self.key).encode()
    }

    /// [`seal_at`](Self::seal_at) with the wall clock.
    pub fn seal(&self, build: impl FnOnce(u64) -> Record) -> Vec<u8> {
        self.seal_at(wall_micros(), build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_rise_even_when_the_clock_does_not() {
        let s = Signer::new([3; 32]);
        let t = s.clone();
        let a = s.next_seq(1_000);
        let b = t.next_seq(1_000);
        let c = s.next_seq(10);
        assert_eq!((a, b, c), (1_000, 1_001, 1_002));
        assert_eq!(s.next_seq(5_000), 5_000);
    }
}
