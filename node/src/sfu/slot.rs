//! One downstream audio track of a subscriber: a stream of its own (SSRC, sequence numbers,
//! RTP timestamps) onto which the forwarder maps whichever source it carries at the moment.
//!
//! A listener's browser gets a fixed few tracks ("slots") when it connects; the loudest
//! speakers are mapped onto them, so a change of speaker needs no renegotiation. When a slot
//! moves to another source, its numbering continues where it stopped (the next sequence
//! number; the timestamp advanced by the wall-clock time since its last packet), so the
//! receiver's jitter buffer sees one continuous stream with a pause, not a new one.

use std::time::Instant;

/// Opus in WebRTC always counts 48,000 RTP timestamp units per second.
pub const CLOCK_RATE: u64 = 48_000;

/// What a slot writes for one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// The slot's sequence number for it (extended: never wraps).
    pub seq: u64,
    /// The slot's RTP timestamp for it.
    pub rtp_time: u32,
    /// Set on the first packet after the slot changed source (a talkspurt starts).
    pub marker: bool,
}

/// The numbering of one slot, and the source it carries.
#[derive(Debug, Clone)]
pub struct Slot<S> {
    source: Option<Mapping<S>>,
    /// The last sequence number written, and when, with its timestamp.
    last: Option<(u64, u32, Instant)>,
}

#[derive(Debug, Clone)]
struct Mapping<S> {
    source: S,
    /// Out = in + these (wrapping for the timestamp), fixed at the source's first packet.
    offsets: Option<(i64, u32)>,
    /// The source's first sequence number on this slot: older ones are from before the
    /// switch and would collide with numbers already written.
    first_in: u64,
}

impl<S: Copy + Eq> Default for Slot<S> {
    fn default() -> Self {
        Self { source: None, last: None }
    }
}

impl<S: Copy + Eq> Slot<S> {
    /// The source this slot carries, if any.
    pub fn source(&self) -> Option<S> {
        self.source.as_ref().map(|m| m.source)
    }

    /// Carry `source` from now on (its numbering is fixed by its next packet).
    pub fn assign(&mut self, source: S) {
        if self.source() != Some(source) {
            self.source = Some(Mapping { source, offsets: None, first_in: 0 });
        }
    }

    /// Carry nothing: the slot falls silent and keeps its numbering for the next source.
    pub fn clear(&mut self) {
        self.source = None;
    }

    /// Number a packet of `source` (sequence number `seq`, extended; RTP time `rtp_time`)
    /// arriving at `now`: `None` if the slot does not carry that source, or the packet is
    /// older than the switch to it.
    pub fn rewrite(&mut self, source: S, seq: u64, rtp_time: u32, now: Instant) -> Option<Rewritten> {
        let mapping = self.source.as_mut().filter(|m| m.source == source)?;
        let (offsets, marker) = match mapping.offsets {
            Some(o) => {
                if seq < mapping.first_in {
                    return None;
                }
                (o, false)
            }
            None => {
                let (out_seq, out_time) = match self.last {
                    Some((last_seq, last_time, at)) => {
                        // A pause as long as the wall clock says (at least one frame's worth).
                        let gap = (now.saturating_duration_since(at).as_micros() as u64 * CLOCK_RATE / 1_000_000).max(960);
                        (last_seq + 1, last_time.wrapping_add(gap as u32))
                    }
                    // A receiver starts its SRTP rollover count at 0: the first number
                    // must be below 2^16 whatever the source has counted to.
                    None => (seq & 0x7fff, rtp_time),
                };
                let o = (out_seq as i64 - seq as i64, out_time.wrapping_sub(rtp_time));
                mapping.offsets = Some(o);
                mapping.first_in = seq;
                (o, true)
            }
        };
        let out = Rewritten {
            seq: (seq as i64 + offsets.0) as u64,
            rtp_time: rtp_time.wrapping_add(offsets.1),
            marker,
        };
        if self.last.is_none_or(|(s, _, _)| out.seq > s) {
            self.last = Some((out.seq, out.rtp_time, now));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_new_source_continues_the_numbering_after_a_pause() {
        let t0 = Instant::now();
        let mut slot = Slot::default();
        slot.assign('a');
        let first = slot.rewrite('a', 1000, 5000, t0).unwrap();
        assert_eq!(first, Rewritten { seq: 1000, rtp_time: 5000, marker: true });
        let second = slot.rewrite('a', 1001, 5960, t0 + Duration::from_millis(20)).unwrap();
        assert_eq!(second, Rewritten { seq: 1001, rtp_time: 5960, marker: false });
        // 'b' takes over 500 ms later, with numbering of its own.
        slot.assign('b');
        assert_eq!(slot.rewrite('a', 1002, 6920, t0 + Duration::from_millis(40)), None, "the slot left 'a'");
        let b = slot.rewrite('b', 77, 123_456, t0 + Duration::from_millis(520)).unwrap();
        assert_eq!(b.seq, 1002);
        assert_eq!(b.rtp_time, 5960 + 500 * 48);
        assert!(b.marker);
        let b2 = slot.rewrite('b', 78, 123_456 + 960, t0 + Duration::from_millis(540)).unwrap();
        assert_eq!((b2.seq, b2.rtp_time, b2.marker), (1003, 5960 + 500 * 48 + 960, false));
        // A late packet of 'b' from before the switch would reuse a number: dropped.
        assert_eq!(slot.rewrite('b', 76, 123_456 - 960, t0 + Duration::from_millis(541)), None);
        // Reordered packets after the switch keep their order.
        let b4 = slot.rewrite('b', 80, 123_456 + 3 * 960, t0 + Duration::from_millis(560)).unwrap();
        let b3 = slot.rewrite('b', 79, 123_456 + 2 * 960, t0 + Duration::from_millis(561)).unwrap();
        assert_eq!((b3.seq, b4.seq), (1004, 1005));
    }

    #[test]
    fn timestamps_wrap_and_a_cleared_slot_carries_nothing() {
        let t0 = Instant::now();
        let mut slot = Slot::default();
        slot.assign(1u8);
        slot.rewrite(1, 5, u32::MAX - 100, t0).unwrap();
        let w = slot.rewrite(1, 6, (u32::MAX - 100).wrapping_add(960), t0 + Duration::from_millis(20)).unwrap();
        assert_eq!(w.rtp_time, 859);
        slot.clear();
        assert_eq!(slot.rewrite(1, 7, 1819, t0 + Duration::from_millis(40)), None);
        assert_eq!(slot.source(), None);
        // Re-assigned at once: still at least one frame on.
        slot.assign(1);
        let again = slot.rewrite(1, 8, 2779, t0 + Duration::from_millis(40)).unwrap();
        assert_eq!((again.seq, again.rtp_time), (7, 859 + 960));
    }
}
