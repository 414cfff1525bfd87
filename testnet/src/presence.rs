//! A socket's copy of room lists, kept from what the node sends the way the web client keeps
//! it: a snapshot (`presence`, `participants`, `participant_count(s)`) replaces, a delta
//! (`participant_joined` / `_left` / `_changed`) applies only on top of the version before
//! it; anything else is a gap, for which the client asks `resync`. Nodes from before deltas
//! send only whole `participants` lists without versions, which replace too.

use std::collections::HashMap;

use serde_json::Value;

/// What one socket knows of one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomCopy {
    pub group: String,
    /// `None` from a node without versions.
    pub version: Option<u64>,
    /// `None` when the node sends only the count (a big room whose call this socket is not in).
    pub list: Option<Vec<Value>>,
    pub count: usize,
}

/// A delta that does not follow the version held: the room to ask for again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub group: String,
    pub room: String,
}

/// Whether a message is about presence (counted as a presence event by the scenarios).
pub fn is_presence(m: &Value) -> bool {
    matches!(
        m["type"].as_str(),
        Some(
            "presence"
                | "participants"
                | "participant_count"
                | "participant_counts"
                | "participant_joined"
                | "participant_left"
                | "participant_changed"
        )
    )
}

/// Room lists by room id.
#[derive(Debug, Default)]
pub struct Lists {
    pub rooms: HashMap<String, RoomCopy>,
}

impl Lists {
    /// The list of `room`, if this socket holds one.
    pub fn list(&self, room: &str) -> Option<&[Value]> {
        self.rooms.get(room).and_then(|r| r.list.as_deref())
    }

    /// Applies one message (others are ignored).
    pub fn apply(&mut self, m: &Value) -> Result<(), Gap> {
        let room = m["room"].as_str().unwrap_or_default().to_owned();
        let group = m["group"].as_str().unwrap_or_default().to_owned();
        let version = m["version"].as_u64();
        let empty = |group: &str| RoomCopy { group: group.to_owned(), version: Some(0), list: Some(vec![]), count: 0 };
        match m["type"].as_str() {
            Some("presence") => {
                // The snapshot covers every room of the group; the rest are empty at version 0.
                for r in self.rooms.values_mut().filter(|r| r.group == group) {
                    *r = empty(&group);
                }
                for r in m["rooms"].as_array().into_iter().flatten() {
                    let list = r["participants"].as_array().cloned();
                    let count = r["count"].as_u64().unwrap_or(0) as usize;
                    let id = r["room"].as_str().unwrap_or_default().to_owned();
                    self.rooms.insert(id, RoomCopy { group: group.clone(), version: r["version"].as_u64(), list, count });
                }
            }
            Some("participants") => {
                let list = m["participants"].as_array().cloned().unwrap_or_default();
                self.rooms.insert(room, RoomCopy { group, version, count: list.len(), list: Some(list) });
            }
            Some("participant_count") => {
                let count = m["count"].as_u64().unwrap_or(0) as usize;
                self.rooms.insert(room, RoomCopy { group, version, list: None, count });
            }
            Some("participant_counts") => {
                for r in m["rooms"].as_array().into_iter().flatten() {
                    let count = r["count"].as_u64().unwrap_or(0) as usize;
                    let id = r["room"].as_str().unwrap_or_default().to_owned();
                    self.rooms.insert(id, RoomCopy { group: group.clone(), version: r["version"].as_u64(), list: None, count });
                }
            }
            Some(kind @ ("participant_joined" | "participant_left" | "participant_changed")) => {
                let gap = || Gap { group: group.clone(), room: room.clone() };
                let copy = self.rooms.entry(room.clone()).or_insert_with(|| empty(&group));
                let (Some(held), Some(v), Some(list)) = (copy.version, version, copy.list.as_mut()) else { return Err(gap()) };
                if v <= held {
                    return Ok(()); // older than the snapshot held
                }
                if v != held + 1 {
                    return Err(gap());
                }
                let p = &m["participant"];
                list.retain(|x| x["session"] != p["session"] || x["user"] != p["user"]);
                if kind != "participant_left" {
                    list.push(p.clone());
                }
                copy.count = list.len();
                copy.version = Some(v);
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a load session keeps of its own room: version, count and an order-free digest of the
/// sessions in it, to compare with the node's list at the end without holding the lists.
/// Deltas before the first list (the room's changes while the session only watched it) are
/// left to that list, which the node sends on joining.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub listed: bool,
    pub version: Option<u64>,
    pub count: u64,
    pub sum: u64,
}

impl Digest {
    /// The digest of a whole list.
    pub fn of(list: &[Value]) -> (u64, u64) {
        (list.len() as u64, list.iter().map(|p| hash(p["session"].as_str().unwrap_or_default())).fold(0, u64::wrapping_add))
    }

    /// Applies a message about `room` (others are ignored); `Err` on a gap.
    pub fn apply(&mut self, room: &str, m: &Value) -> Result<(), Skipped> {
        if m["room"] != room && m["type"] != "presence" {
            return Ok(());
        }
        if m["type"] == "presence" {
            // A group's snapshot: this room's entry, if it comes as a list.
            let mine = m["rooms"].as_array().into_iter().flatten().find(|r| r["room"] == room);
            if let Some(list) = mine.and_then(|r| r["participants"].as_array()) {
                let (count, sum) = Self::of(list);
                *self = Digest { listed: true, version: mine.and_then(|r| r["version"].as_u64()), count, sum };
            }
            return Ok(());
        }
        let version = m["version"].as_u64();
        match m["type"].as_str() {
            Some("participants") => {
                let (count, sum) = Self::of(m["participants"].as_array().map_or(&[][..], Vec::as_slice));
                *self = Digest { listed: true, version, count, sum };
            }
            Some(_) if !self.listed => {}
            Some(kind @ ("participant_joined" | "participant_left" | "participant_changed")) => {
                let skipped = Skipped { held: self.version, got: version };
                let (Some(held), Some(v)) = (self.version, version) else { return Err(skipped) };
                if v <= held {
                    return Ok(());
                }
                if v != held + 1 {
                    return Err(skipped);
                }
                let h = hash(m["participant"]["session"].as_str().unwrap_or_default());
                match kind {
                    "participant_joined" => (self.count, self.sum) = (self.count + 1, self.sum.wrapping_add(h)),
                    "participant_left" => (self.count, self.sum) = (self.count.saturating_sub(1), self.sum.wrapping_sub(h)),
                    _ => {}
                }
                self.version = Some(v);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A delta that does not follow the version a [`Digest`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub held: Option<u64>,
    pub got: Option<u64>,
}

/// FNV-1a, 64 bits.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> Value {
        json!({"user": "a@alpha", "session": s, "muted": false})
    }

    #[test]
    fn snapshot_then_deltas_and_a_gap() {
        let mut l = Lists::default();
        l.apply(&json!({"type": "participants", "group": "g", "room": "r", "version": 4, "participants": [p("1")]})).unwrap();
        l.apply(&json!({"type": "participant_joined", "group": "g", "room": "r", "version": 5, "participant": p("2")})).unwrap();
        l.apply(&json!({"type": "participant_joined", "group": "g", "room": "r", "version": 4, "participant": p("9")})).unwrap();
        assert_eq!(l.list("r").unwrap().len(), 2, "an old delta is ignored");
        let gap = l.apply(&json!({"type": "participant_left", "group": "g", "room": "r", "version": 7, "participant": p("1")}));
        assert_eq!(gap, Err(Gap { group: "g".into(), room: "r".into() }));
        l.apply(&json!({"type": "participant_left", "group": "g", "room": "r", "version": 6, "participant": p("1")})).unwrap();
        assert_eq!(l.list("r").unwrap(), [p("2")]);
        l.apply(&json!({"type": "participant_count", "group": "g", "room": "r", "version": 9, "count": 60})).unwrap();
        assert_eq!((l.list("r"), l.rooms["r"].count), (None, 60));

        let mut d = Digest::default();
        d.apply("r", &json!({"type": "participant_joined", "room": "r", "version": 7, "participant": p("5")})).unwrap();
        assert!(!d.listed, "a delta before the first list is left to it");
        d.apply("r", &json!({"type": "participants", "room": "r", "version": 1, "participants": [p("1"), p("2")]})).unwrap();
        d.apply("r", &json!({"type": "participant_left", "room": "r", "version": 2, "participant": p("1")})).unwrap();
        assert_eq!((d.count, d.sum), Digest::of(&[p("2")]));
        assert!(d.apply("r", &json!({"type": "participant_joined", "room": "r", "version": 4, "participant": p("3")})).is_err());
        // A group's snapshot carries the room's list (when listed) at its version.
        let snap = json!({"type": "presence", "rooms": [{"room": "q", "version": 3, "count": 0}, {"room": "r", "version": 4, "count": 1, "participants": [p("1")]}]});
        d.apply("r", &snap).unwrap();
        assert_eq!((d.version, d.count, d.sum), (Some(4), 1, Digest::of(&[p("1")]).1));
        // A node without versions sends whole lists only.
        d.apply("r", &json!({"type": "participants", "room": "r", "participants": [p("3")]})).unwrap();
        assert_eq!((d.version, d.count), (None, 1));
    }
}
