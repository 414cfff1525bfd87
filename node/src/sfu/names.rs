//! Who each slot of a cascade link carries, without I/O: the serving node's table as it
//! goes on the link's data channel, the pulling node's checks on it, and the pulling node's
//! per-speaker figures for `/metrics`.
//!
//! The message (protocol-spec/SPEC.md §9.6, "Names on a link") is JSON text,
//! `{"v":1,"slots":[{"user":"bob@beta","session":"<32 hex>"},null,null]}`: entry `i` names
//! the seat on the `i`-th audio m-line of the pulling node's offer (`null`: nobody), and the
//! whole table goes again on every change, so the last one received is the truth. Nothing
//! in it is trusted: it is capped before parsing, and a table naming someone of another
//! node, or a slot the link does not have, is dropped whole.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use voicechat_protocol::ids::{NodeName, SessionId, UserId};

use super::forward::PeerId;
use crate::rooms::SeatKey;

/// The label of the data channel the pulling node adds to its offer.
pub const LABEL: &str = "voicechat-slots";
/// The version of the table this node writes and reads.
pub const VERSION: u32 = 1;
/// The largest table read (8 slots of the longest user ids take about 2.8 KiB).
pub const MAX_TABLE_BYTES: usize = 4096;

/// Who each slot of a link carries, in slot order.
pub type Table = Vec<Option<SeatKey>>;

/// Why a received table was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Over [`MAX_TABLE_BYTES`]; not parsed.
    #[error("the table is {0} bytes, over the cap")]
    TooLarge(usize),
    /// Not JSON, or not of the table's shape.
    #[error("the table does not parse: {0}")]
    Malformed(String),
    /// A version this node does not read.
    #[error("table version {0} is not understood")]
    Version(u64),
    /// More entries than the link has slots.
    #[error("the table names {0} slots; the link has {1}")]
    Slots(usize, usize),
    /// A user id that is not valid, or not in canonical form.
    #[error("a user id is not valid or not canonical")]
    User,
    /// Someone whose home is not the serving node (it may only name its own people).
    #[error("{0} is not of the serving node")]
    Foreign(UserId),
}

impl TableError {
    /// A short reason, for a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            TableError::TooLarge(_) => "too_large",
            TableError::Malformed(_) => "malformed",
            TableError::Version(_) => "version",
            TableError::Slots(..) => "slots",
            TableError::User => "user",
            TableError::Foreign(_) => "foreign",
        }
    }
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    slots: Vec<Option<OutEntry<'a>>>,
}

#[derive(Serialize)]
struct OutEntry<'a> {
    user: &'a UserId,
    session: &'a SessionId,
}

#[derive(Deserialize)]
struct Head {
    v: u64,
}

#[derive(Deserialize)]
struct In {
    slots: Vec<Option<InEntry>>,
}

#[derive(Deserialize)]
struct InEntry {
    user: String,
    session: SessionId,
}

/// The message for `table` (the serving side).
pub fn encode(table: &[Option<SeatKey>]) -> Vec<u8> {
    let slots = table.iter().map(|s| s.as_ref().map(|(user, session)| OutEntry { user, session })).collect();
    // Ids and options of ids always serialise.
    serde_json::to_vec(&Out { v: VERSION, slots }).unwrap_or_default()
}

/// Reads a table received from `serving` on a link of `lines` slots: the table, one entry
/// per slot.
pub fn decode(bytes: &[u8], serving: &NodeName, lines: usize) -> Result<Table, TableError> {
    if bytes.len() > MAX_TABLE_BYTES {
        return Err(TableError::TooLarge(bytes.len()));
    }
    let malformed = |e: serde_json::Error| TableError::Malformed(e.to_string());
    // The version first: a later one may change the rest of the shape.
    let head: Head = serde_json::from_slice(bytes).map_err(malformed)?;
    if head.v != u64::from(VERSION) {
        return Err(TableError::Version(head.v));
    }
    let msg: In = serde_json::from_slice(bytes).map_err(malformed)?;
    if msg.slots.len() > lines {
        return Err(TableError::Slots(msg.slots.len(), lines));
    }
    let mut table = Vec::with_capacity(lines);
    for entry in msg.slots {
        let Some(e) = entry else {
            table.push(None);
            continue;
        };
        let user: UserId = e.user.parse().map_err(|_| TableError::User)?;
        if user.to_string() != e.user {
            return Err(TableError::User);
        }
        if &user.node != serving {
            return Err(TableError::Foreign(user));
        }
        table.push(Some((user, e.session)));
    }
    table.resize(lines, None);
    Ok(table)
}

/// One speaker's figures on the pulling node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Speaker {
    /// Link slots (over every link of this node) carrying them now.
    pub copies: usize,
    /// Packets of theirs received over links while they were carried.
    pub packets: u64,
}

/// The per-speaker figures, shared with whoever renders `/metrics`: only speakers carried
/// now have an entry, so the label values stay as few as the links' slots.
pub type Figures = Arc<Mutex<BTreeMap<UserId, Speaker>>>;

/// The pulling node's tables, one per link it runs.
#[derive(Debug, Default)]
pub struct Names {
    tables: HashMap<PeerId, Table>,
    figures: Figures,
}

impl Names {
    /// No links; `figures` is kept up to date.
    pub fn new(figures: Figures) -> Self {
        Self { tables: HashMap::new(), figures }
    }

    /// `link`'s table is `table` now: whether it changed.
    pub fn set(&mut self, link: PeerId, table: Table) -> bool {
        if self.tables.get(&link) == Some(&table) {
            return false;
        }
        self.tables.insert(link, table);
        self.count();
        true
    }

    /// `link` ended: its slots carry nobody.
    pub fn remove(&mut self, link: PeerId) {
        if self.tables.remove(&link).is_some() {
            self.count();
        }
    }

    /// Who slot `slot` of `link` carries, as its serving node says.
    pub fn seat(&self, link: PeerId, slot: usize) -> Option<&SeatKey> {
        self.tables.get(&link)?.get(slot)?.as_ref()
    }

    /// Packets arrived on these slots of `link`: counted for whoever each carries. Returns
    /// how many were on a slot the table names nobody on.
    pub fn heard(&self, link: PeerId, slots: impl IntoIterator<Item = usize>) -> u64 {
        let mut unnamed = 0;
        let mut figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots {
            match self.seat(link, slot).and_then(|(user, _)| figures.get_mut(user)) {
                Some(s) => s.packets += 1,
                None => unnamed += 1,
            }
        }
        unnamed
    }

    /// Copies per speaker from every table; a speaker no longer carried loses their entry.
    fn count(&self) {
        let mut copies: BTreeMap<&UserId, usize> = BTreeMap::new();
        for (user, _) in self.tables.values().flatten().flatten() {
            *copies.entry(user).or_default() += 1;
        }
        let mut figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        figures.retain(|user, _| copies.contains_key(user));
        for (user, n) in copies {
            figures.entry(user.clone()).or_default().copies = n;
        }
    }
}

/// The figures in Prometheus text form: `voicechat_sfu_cascade_copies{speaker}` and
/// `voicechat_sfu_cascade_speaker_packets_total{speaker}`. A speaker's counter starts again
/// from 0 if they are carried again after a pause (a counter reset to Prometheus).
pub fn render(figures: &Figures) -> String {
    let figures = figures.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    if figures.is_empty() {
        return out;
    }
    // User ids are `[a-z0-9_.-]+@[a-z0-9.-]+`: nothing in them needs escaping in a label.
    out.push_str("# HELP voicechat_sfu_cascade_copies Cascade link slots carrying the speaker now.\n");
    out.push_str("# TYPE voicechat_sfu_cascade_copies gauge\n");
    for (user, s) in figures.iter() {
        let _ = writeln!(out, "voicechat_sfu_cascade_copies{{speaker=\"{user}\"}} {}", s.copies);
    }
    out.push_str("# HELP voicechat_sfu_cascade_speaker_packets_total Packets received over cascade links, per speaker carried.\n");
    out.push_str("# TYPE voicechat_sfu_cascade_speaker_packets_total counter\n");
    for (user, s) in figures.iter() {
        let _ = writeln!(out, "voicechat_sfu_cascade_speaker_packets_total{{speaker=\"{user}\"}} {}", s.packets);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(user: &str, n: u8) -> SeatKey {
        (user.parse().unwrap(), SessionId([n; 16]))
    }

    fn beta() -> NodeName {
        "beta".parse().unwrap()
    }

    #[test]
    fn a_table_round_trips_and_is_padded_to_the_link_slots() {
        let table = vec![None, Some(seat("bob@beta", 1))];
        let bytes = encode(&table);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text, format!(r#"{{"v":1,"slots":[null,{{"user":"bob@beta","session":"{}"}}]}}"#, "01".repeat(16)));
        assert_eq!(decode(&bytes, &beta(), 3).unwrap(), vec![None, Some(seat("bob@beta", 1)), None]);
        // Unknown keys are for later versions to add: ignored.
        let more = br#"{"v":1,"slots":[],"later":{"x":1}}"#;
        assert_eq!(decode(more, &beta(), 2).unwrap(), vec![None, None]);
    }

    #[test]
    fn a_forged_or_malformed_table_is_dropped_whole() {
        let lines = 3;
        let bob = || Some(seat("bob@beta", 1));
        // Someone of another node, even beside someone of the serving one.
        let forged = encode(&[bob(), Some(seat("mallory@alpha", 2))]);
        assert_eq!(decode(&forged, &beta(), lines), Err(TableError::Foreign("mallory@alpha".parse().unwrap())));
        // More slots than the link has.
        let wide = encode(&[None, None, None, bob()]);
        assert_eq!(decode(&wide, &beta(), lines), Err(TableError::Slots(4, 3)));
        // Over the cap: refused before parsing.
        let big = format!(r#"{{"v":1,"slots":[],"pad":"{}"}}"#, "x".repeat(MAX_TABLE_BYTES));
        assert_eq!(decode(big.as_bytes(), &beta(), lines), Err(TableError::TooLarge(big.len())));
        // Another version.
        assert_eq!(decode(br#"{"v":2,"slots":[]}"#, &beta(), lines), Err(TableError::Version(2)));
        // Not canonical, or not a user id at all.
        let upper = format!(r#"{{"v":1,"slots":[{{"user":"Bob@beta","session":"{}"}}]}}"#, "01".repeat(16));
        assert_eq!(decode(upper.as_bytes(), &beta(), lines), Err(TableError::User));
        let bare = format!(r#"{{"v":1,"slots":[{{"user":"bob","session":"{}"}}]}}"#, "01".repeat(16));
        assert_eq!(decode(bare.as_bytes(), &beta(), lines), Err(TableError::User));
        // Garbage of every kind.
        for junk in [
            &b"\xff\xfe\x00garbage"[..],
            b"",
            b"null",
            b"[1,2,3]",
            br#"{"slots":[]}"#,
            br#"{"v":1}"#,
            br#"{"v":1,"slots":{"0":null}}"#,
            br#"{"v":1,"slots":[{"user":"bob@beta","session":"xyz"}]}"#,
            br#"{"v":1,"slots":[{"user":"bob@beta"}]}"#,
            br#"{"v":1,"slots":[]} trailing"#,
            br#"{"v":-1,"slots":[]}"#,
        ] {
            let e = decode(junk, &beta(), lines).unwrap_err();
            assert!(matches!(e, TableError::Malformed(_)), "{junk:?}: {e}");
        }
    }

    #[test]
    fn copies_count_each_speaker_over_every_link_and_drop_those_no_longer_carried() {
        let figures = Figures::default();
        let mut names = Names::new(figures.clone());
        let (l1, l2) = (PeerId(1), PeerId(2));
        assert!(names.set(l1, vec![Some(seat("bob@beta", 1)), None, None]));
        assert!(!names.set(l1, vec![Some(seat("bob@beta", 1)), None, None]), "the same table changes nothing");
        assert_eq!(names.seat(l1, 0), Some(&seat("bob@beta", 1)));
        assert_eq!(names.seat(l1, 1), None);
        assert_eq!(names.seat(l2, 0), None);
        // A second copy of bob (a bug, or a node that sends him twice) shows as 2.
        names.set(l2, vec![Some(seat("cat@gamma", 3)), Some(seat("bob@beta", 1)), None]);
        assert_eq!(names.heard(l1, [0, 0, 1]), 1, "slot 1 carries nobody");
        assert_eq!(names.heard(l2, [0, 1, 7]), 1, "no slot 7");
        let snapshot = |f: &Figures| f.lock().unwrap().iter().map(|(u, s)| (u.to_string(), *s)).collect::<Vec<_>>();
        assert_eq!(
            snapshot(&figures),
            vec![("bob@beta".into(), Speaker { copies: 2, packets: 3 }), ("cat@gamma".into(), Speaker { copies: 1, packets: 1 })]
        );
        let text = render(&figures);
        assert!(text.contains("voicechat_sfu_cascade_copies{speaker=\"bob@beta\"} 2\n"), "{text}");
        assert!(text.contains("voicechat_sfu_cascade_speaker_packets_total{speaker=\"cat@gamma\"} 1\n"), "{text}");
        // The second link ends, then bob falls silent on the first: his series go.
        names.remove(l2);
        assert_eq!(snapshot(&figures), vec![("bob@beta".into(), Speaker { copies: 1, packets: 3 })]);
        names.set(l1, vec![None, None, None]);
        assert!(figures.lock().unwrap().is_empty());
        assert_eq!(render(&figures), "", "no series of anyone not carried");
    }
}
