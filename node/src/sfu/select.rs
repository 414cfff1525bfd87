//! Who gets forwarded in a room: the loudest few sources, from the audio level each packet
//! carries (RFC 6464: 0 is the loudest, 127 silence), with hysteresis so two people talking
//! at once do not make the slots flap. Jitsi calls this last-N; for audio it means a
//! listener's downlink and decoder cost stay flat however many people are unmuted.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A source that sent nothing for this long is not speaking (Opus DTX still sends a packet
/// every 400 ms in silence).
pub const INACTIVE_AFTER: Duration = Duration::from_secs(1);
/// A selected source keeps its place at least this long.
pub const MIN_HOLD: Duration = Duration::from_millis(600);
/// A challenger must be this much louder (in dB of smoothed level) to take a place.
pub const MARGIN: f32 = 6.0;
/// Weight of each packet's level in the smoothed one (20 ms packets: ~200 ms to follow).
const ALPHA: f32 = 0.1;
/// Level assumed for packets without the audio-level extension: loud enough to be heard.
const UNKNOWN_LEVEL: u8 = 40;

#[derive(Debug, Clone)]
struct Loudness {
    /// Smoothed loudness, 0 (silence) to 127 (0 dBov).
    smooth: f32,
    last_packet: Instant,
}

/// The loudest-few selection of one room.
#[derive(Debug, Clone)]
pub struct Selector<S> {
    n: usize,
    sources: HashMap<S, Loudness>,
    /// The selected sources, with when each was selected.
    selected: Vec<(S, Instant)>,
}

impl<S: Copy + Eq + Hash + Ord> Selector<S> {
    /// Select at most `n` sources.
    pub fn new(n: usize) -> Self {
        Self { n: n.max(1), sources: HashMap::new(), selected: Vec::new() }
    }

    /// A packet of `source` with audio level `level` (-dBov; `None` without the extension).
    pub fn heard(&mut self, source: S, level: Option<u8>, now: Instant) {
        let loud = 127.0 - f32::from(level.unwrap_or(UNKNOWN_LEVEL).min(127));
        let e = self.sources.entry(source).or_insert(Loudness { smooth: loud, last_packet: now });
        e.smooth += ALPHA * (loud - e.smooth);
        e.last_packet = now;
    }

    /// Forget every source `gone` says yes to (a peer left, or may no longer speak).
    pub fn forget(&mut self, gone: impl Fn(&S) -> bool) {
        self.sources.retain(|s, _| !gone(s));
        self.selected.retain(|(s, _)| !gone(s));
    }

    /// Whether `source` is forwarded now.
    pub fn is_selected(&self, source: S) -> bool {
        self.selected.iter().any(|(s, _)| *s == source)
    }

    /// The selected sources, loudest place first in the order they were selected.
    pub fn selected(&self) -> impl Iterator<Item = S> + '_ {
        self.selected.iter().map(|(s, _)| *s)
    }

    /// Re-decide the selection at `now`; returns whether it changed.
    pub fn update(&mut self, now: Instant) -> bool {
        let active = |l: &Loudness| now.saturating_duration_since(l.last_packet) < INACTIVE_AFTER;
        let sources = &self.sources;
        let before: Vec<S> = self.selected().collect();
        self.selected.retain(|(s, _)| sources.get(s).is_some_and(active));
        // Challengers, loudest first (ties by id, so every run decides the same).
        let mut waiting: Vec<(S, f32)> = sources
            .iter()
            .filter(|(s, l)| active(l) && !self.selected.iter().any(|(x, _)| x == *s))
            .map(|(s, l)| (*s, l.smooth))
            .collect();
        waiting.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (challenger, loud) in waiting {
            if self.selected.len() < self.n {
                self.selected.push((challenger, now));
                continue;
            }
            // The quietest place that has been held long enough.
            let weakest = self
                .selected
                .iter()
                .enumerate()
                .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= MIN_HOLD)
                .map(|(i, (s, _))| (i, sources[s].smooth))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            match weakest {
                Some((i, held)) if loud > held + MARGIN => self.selected[i] = (challenger, now),
                _ => break, // the rest are quieter still
            }
        }
        !self.selected().eq(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talk(sel: &mut Selector<u8>, who: &[(u8, u8)], from: Instant, ms: u64) -> Instant {
        let mut t = from;
        for _ in 0..ms / 20 {
            t += Duration::from_millis(20);
            for &(s, level) in who {
                sel.heard(s, Some(level), t);
            }
            sel.update(t);
        }
        t
    }

    #[test]
    fn everyone_is_selected_while_there_are_places() {
        let mut sel = Selector::new(3);
        let t = talk(&mut sel, &[(1, 30), (2, 127)], Instant::now(), 100);
        assert_eq!(sel.selected().collect::<Vec<_>>(), [1, 2]);
        // Silent for a second (no packets at all): no longer selected.
        sel.update(t + INACTIVE_AFTER);
        assert_eq!(sel.selected().count(), 0);
    }

    #[test]
    fn a_clearly_louder_voice_takes_the_quietest_place_after_the_hold() {
        let mut sel = Selector::new(2);
        let t0 = Instant::now();
        // Three people, two places: the two loudest win.
        let t = talk(&mut sel, &[(1, 30), (2, 40), (3, 90)], t0, 1000);
        let mut chosen: Vec<u8> = sel.selected().collect();
        chosen.sort();
        assert_eq!(chosen, [1, 2]);
        // 3 starts talking loudly and 2 goes quiet: 3 takes 2's place.
        let t = talk(&mut sel, &[(1, 30), (2, 100), (3, 25)], t, 1000);
        let mut chosen: Vec<u8> = sel.selected().collect();
        chosen.sort();
        assert_eq!(chosen, [1, 3]);
        // Nearly as loud (within the margin) is not enough to take a place back.
        talk(&mut sel, &[(1, 30), (2, 28), (3, 25)], t, 1000);
        let mut chosen: Vec<u8> = sel.selected().collect();
        chosen.sort();
        assert_eq!(chosen, [1, 3]);
    }

    #[test]
    fn places_do_not_flap_faster_than_the_hold() {
        let mut sel = Selector::new(1);
        let mut t = Instant::now();
        let mut changes = 0;
        // Two people alternating every 100 ms, each very loud then silent.
        for i in 0..100u32 {
            let (a, b) = if (i / 5) % 2 == 0 { (0, 127) } else { (127, 0) };
            t += Duration::from_millis(20);
            sel.heard(1, Some(a), t);
            sel.heard(2, Some(b), t);
            changes += u32::from(sel.update(t));
        }
        // 2 s of alternation: at most one change per hold period.
        assert!(changes <= (2000 / MIN_HOLD.as_millis() as u32) + 1, "{changes} changes");
        assert!(changes >= 1);
    }

    #[test]
    fn a_removed_source_leaves_its_place() {
        let mut sel = Selector::new(2);
        talk(&mut sel, &[(1, 30), (2, 40)], Instant::now(), 100);
        assert!(sel.is_selected(1));
        sel.forget(|s| *s == 1);
        assert!(!sel.is_selected(1));
        sel.update(Instant::now() + Duration::from_millis(120));
        assert_eq!(sel.selected().collect::<Vec<_>>(), [2], "a forgotten source came back");
    }
}
