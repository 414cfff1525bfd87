//! The JSON messages a browser sends on its socket, parsed strictly: a message that is not
//! JSON, has no `type`, or has the wrong fields is `bad_message`; an unknown `type` is
//! `unknown_type`. Either way the socket stays open.

use serde::Deserialize;
use serde_json::Value;
use voicechat_protocol::ids::{GroupId, RoomId, SessionId, UserId};

/// Largest text frame a browser may send.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest `data` of a signal, as encoded JSON.
pub const MAX_SIGNAL_DATA: usize = 16 * 1024;
/// Largest `data` of an `e2ee_hello`, and `common` of an `e2ee_keys`, as encoded JSON.
pub const MAX_E2EE_COMMON: usize = 2 * 1024;
/// Largest `data` of one entry of an `e2ee_keys`, as encoded JSON.
pub const MAX_E2EE_ENTRY: usize = 512;
/// Most entries in one `e2ee_keys` (a page with more recipients sends several).
pub const MAX_E2EE_KEYS: usize = 512;

/// What a signal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// SDP offer.
    Offer,
    /// SDP answer.
    Answer,
    /// An ICE candidate.
    Candidate,
    /// Hang up this peer connection.
    Bye,
}

/// A message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMsg {
    /// Keep-alive and ordering barrier.
    Ping,
    /// Join a room's call.
    Join {
        /// Group of the room.
        group: GroupId,
        /// The room.
        room: RoomId,
        /// Start muted.
        #[serde(default)]
        muted: bool,
    },
    /// Leave the call.
    Leave,
    /// Mute or unmute.
    Mute {
        /// The new state.
        muted: bool,
    },
    /// Follow the presence in a group's rooms (instead of any group followed before).
    Subscribe {
        /// The group the page shows.
        group: GroupId,
    },
    /// Stop following a group.
    Unsubscribe,
    /// A fresh view of one room (the client saw a gap in its versions).
    Resync {
        /// Group of the room.
        group: GroupId,
        /// The room.
        room: RoomId,
    },
    /// WebRTC signaling for one peer.
    Signal {
        /// The user it is for.
        to: UserId,
        /// Their socket.
        to_session: SessionId,
        /// What it is.
        kind: SignalKind,
        /// SDP or candidate; opaque to the node.
        #[serde(default)]
        data: Value,
    },
    /// Connect to the node's audio forwarding unit: an SDP offer with one sendonly audio
    /// m-line (the microphone) and a few recvonly ones (the slots speakers arrive on).
    #[serde(rename = "sfu_offer")]
    SfuOffer {
        /// The offer.
        sdp: String,
    },
    /// On a stage: raise or lower one's hand.
    Hand {
        /// Raised.
        up: bool,
    },
    /// On a stage: answer a moderator's invitation to speak.
    #[serde(rename = "stage_answer")]
    StageAnswer {
        /// Yes: onto the stage.
        accept: bool,
    },
    /// On a stage: step down to the audience.
    #[serde(rename = "stage_leave")]
    StageLeave,
    /// A moderator acts on someone in their call.
    Moderate {
        /// `invite`, `to_audience`, `mute` or `remove`.
        action: ModerateAction,
        /// Whom.
        user: UserId,
        /// Their socket.
        session: SessionId,
    },
    /// End-to-end encryption: this session's public key (opaque to the node), for the call's
    /// senders (those who may speak), or for everyone in it, or for one session.
    #[serde(rename = "e2ee_hello")]
    E2eeHello {
        /// What the page says; the node relays it untouched.
        data: Value,
        /// Only this user's…
        #[serde(default)]
        to: Option<UserId>,
        /// …session.
        #[serde(default)]
        to_session: Option<SessionId>,
        /// Everyone in the call, listeners too (someone who just got onto a stage).
        #[serde(default)]
        everyone: bool,
    },
    /// End-to-end encryption: the sender's media key, wrapped for each recipient alone.
    #[serde(rename = "e2ee_keys")]
    E2eeKeys {
        /// The same for every recipient (the sender's public key…).
        common: Value,
        /// One per recipient.
        keys: Vec<KeyFor>,
    },
}

/// One recipient's entry of an `e2ee_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFor {
    /// The user it is for.
    pub to: UserId,
    /// Their socket.
    pub to_session: SessionId,
    /// Opaque to the node.
    pub data: Value,
}

/// What a moderator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Ask a listener onto the stage.
    Invite,
    /// Send a speaker back to the audience.
    ToAudience,
    /// Mute them.
    Mute,
    /// Take them out of the call.
    Remove,
}

impl ClientMsg {
    /// The `type` this message came with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Join { .. } => "join",
            Self::Leave => "leave",
            Self::Mute { .. } => "mute",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Resync { .. } => "resync",
            Self::Signal { .. } => "signal",
            Self::SfuOffer { .. } => "sfu_offer",
            Self::Hand { .. } => "hand",
            Self::StageAnswer { .. } => "stage_answer",
            Self::StageLeave => "stage_leave",
            Self::Moderate { .. } => "moderate",
            Self::E2eeHello { .. } => "e2ee_hello",
            Self::E2eeKeys { .. } => "e2ee_keys",
        }
    }
}

const TYPES: &[&str] = &[
    "ping", "join", "leave", "mute", "subscribe", "unsubscribe", "resync", "signal", "sfu_offer", "hand", "stage_answer", "stage_leave", "moderate", "e2ee_hello", "e2ee_keys",
];

/// Why a message was refused before it was acted on.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `bad_message`, `unknown_type` or `too_large`.
    pub code: &'static str,
    /// Words for a person.
    pub message: String,
    /// The `type` the client sent, if any.
    pub in_reply_to: Option<String>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientMsg, Refusal> {
    if text.len() > MAX_MESSAGE {
        return Err(Refusal { code: "too_large", message: format!("messages are at most {MAX_MESSAGE} bytes"), in_reply_to: None });
    }
    let bad = |message: String, ty: Option<String>| Refusal { code: "bad_message", message, in_reply_to: ty };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}"), None))?;
    let ty = match value.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(bad("a message is a JSON object with a string \"type\"".into(), None)),
    };
    if !TYPES.contains(&ty.as_str()) {
        return Err(Refusal { code: "unknown_type", message: format!("unknown message type {ty:?}"), in_reply_to: Some(ty) });
    }
    let msg: ClientMsg = serde_json::from_value(value).map_err(|e| bad(format!("bad {ty} message: {e}"), Some(ty.clone())))?;
    let size = |v: &Value| serde_json::to_string(v).map(|s| s.len()).unwrap_or(usize::MAX);
    let too_large = |message: String| Refusal { code: "too_large", message, in_reply_to: Some(ty.clone()) };
    match &msg {
        ClientMsg::Signal { data, .. } if size(data) > MAX_SIGNAL_DATA => {
            return Err(too_large(format!("signal data is at most {MAX_SIGNAL_DATA} bytes")));
        }
        ClientMsg::E2eeHello { data, .. } if size(data) > MAX_E2EE_COMMON => {
            return Err(too_large(format!("e2ee_hello data is at most {MAX_E2EE_COMMON} bytes")));
        }
        ClientMsg::E2eeHello { to, to_session, .. } if to.is_some() != to_session.is_some() => {
            return Err(bad("an e2ee_hello names both to and to_session, or neither".into(), Some(ty)));
        }
        ClientMsg::E2eeKeys { common, keys } => {
            if size(common) > MAX_E2EE_COMMON {
                return Err(too_large(format!("e2ee_keys common is at most {MAX_E2EE_COMMON} bytes")));
            }
            if keys.len() > MAX_E2EE_KEYS {
                return Err(too_large(format!("at most {MAX_E2EE_KEYS} keys in one e2ee_keys message")));
            }
            if keys.iter().any(|k| size(&k.data) > MAX_E2EE_ENTRY) {
                return Err(too_large(format!("each key's data is at most {MAX_E2EE_ENTRY} bytes")));
            }
        }
        _ => {}
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_out_bad_unknown_and_good() {
        assert_eq!(parse("nope").unwrap_err().code, "bad_message");
        assert_eq!(parse("[1]").unwrap_err().code, "bad_message");
        assert_eq!(parse(r#"{"type":"dance"}"#).unwrap_err().code, "unknown_type");
        let e = parse(r#"{"type":"join","group":"xyz"}"#).unwrap_err();
        assert_eq!((e.code, e.in_reply_to.as_deref()), ("bad_message", Some("join")));
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientMsg::Ping)));
        let g = "ab".repeat(16);
        assert!(matches!(
            parse(&format!(r#"{{"type":"join","group":"{g}","room":"{g}"}}"#)),
            Ok(ClientMsg::Join { muted: false, .. })
        ));
        assert!(matches!(parse(&format!(r#"{{"type":"subscribe","group":"{g}"}}"#)), Ok(ClientMsg::Subscribe { .. })));
        let e = parse(r#"{"type":"subscribe"}"#).unwrap_err();
        assert_eq!((e.code, e.in_reply_to.as_deref()), ("bad_message", Some("subscribe")));
        assert!(e.message.contains("group"), "says what is missing: {}", e.message);
        let e = parse(&format!(r#"{{"type":"resync","group":"{g}","room":"nope"}}"#)).unwrap_err();
        assert_eq!((e.code, e.in_reply_to.as_deref()), ("bad_message", Some("resync")));
        assert!(matches!(parse(r#"{"type":"unsubscribe"}"#), Ok(ClientMsg::Unsubscribe)));
        let big = "x".repeat(MAX_SIGNAL_DATA + 1);
        let sig = format!(r#"{{"type":"signal","to":"bob@alpha","to_session":"{g}","kind":"offer","data":"{big}"}}"#);
        assert_eq!(parse(&sig).unwrap_err().code, "too_large");
    }

    #[test]
    fn e2ee_messages_are_bounded() {
        let s = "ab".repeat(16);
        let hello = parse(r#"{"type":"e2ee_hello","data":{"v":1,"pub":"AAAA"}}"#).unwrap();
        assert!(matches!(hello, ClientMsg::E2eeHello { to: None, everyone: false, .. }));
        let e = parse(r#"{"type":"e2ee_hello","data":{},"to":"bob@alpha"}"#).unwrap_err();
        assert_eq!(e.code, "bad_message", "a user without a session");
        let big = "x".repeat(MAX_E2EE_COMMON);
        assert_eq!(parse(&format!(r#"{{"type":"e2ee_hello","data":"{big}"}}"#)).unwrap_err().code, "too_large");
        let entry = format!(r#"{{"to":"bob@alpha","to_session":"{s}","data":{{"kid":1,"wrapped":"AAAA"}}}}"#);
        let keys = |n: usize| format!(r#"{{"type":"e2ee_keys","common":{{"pub":"AAAA"}},"keys":[{}]}}"#, vec![entry.as_str(); n].join(","));
        assert!(matches!(parse(&keys(2)), Ok(ClientMsg::E2eeKeys { keys, .. }) if keys.len() == 2));
        assert_eq!(parse(&keys(MAX_E2EE_KEYS + 1)).unwrap_err().code, "too_large");
        let fat = format!(r#"{{"type":"e2ee_keys","common":{{}},"keys":[{{"to":"bob@alpha","to_session":"{s}","data":"{}"}}]}}"#, "y".repeat(MAX_E2EE_ENTRY));
        assert_eq!(parse(&fat).unwrap_err().code, "too_large");
        let stray = format!(r#"{{"type":"e2ee_keys","common":{{}},"keys":[{{"to":"bob@alpha","to_session":"{s}","data":1,"x":2}}]}}"#);
        assert_eq!(parse(&stray).unwrap_err().code, "bad_message", "unknown fields in an entry");
    }
}
