//! The socket loop driven through channels instead of a network: hello first, replies in
//! order, refusals keep the socket open, a closed peer leaves its room, shutdown ends it;
//! a socket that drops without a goodbye is parked and resumed by its token.

use futures_util::SinkExt;
use futures_channel::mpsc;
use serde_json::Value;
use voicechat_protocol::ids::NodeName;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Opening, run};
use crate::core::{Core, Signer};
use crate::state::{AppState, Settings};
use crate::store::Store;

struct Harness {
    to_node: mpsc::UnboundedSender<Result<String, std::convert::Infallible>>,
    from_node: mpsc::UnboundedReceiver<String>,
    farewell: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn state(dir: &std::path::Path) -> AppState {
    let store = Store::open(dir).unwrap();
    let me = NodeName::new("alpha").unwrap();
    let core = Arc::new(Core::new(store, me.clone(), Signer::new([1; 32]), None));
    AppState::new(core, Settings::new(me, "http://localhost:3001"), None, None, None)
}

fn connect(state: &AppState, user: &str) -> Harness {
    connect_with(state, user, "test-login", None)
}

fn connect_with(state: &AppState, user: &str, login: &str, resume: Option<String>) -> Harness {
    let (to_node, rx) = mpsc::unbounded();
    let (tx, from_node) = mpsc::unbounded::<String>();
    let farewell = Arc::new(AtomicBool::new(false));
    let opening = Opening { user: user.parse().unwrap(), login: login.into(), resume, seen: None, farewell: farewell.clone() };
    let task = tokio::spawn(run(state.clone(), opening, tx, rx));
    Harness { to_node, from_node, farewell, task }
}

impl Harness {
    async fn send(&mut self, text: &str) {
        self.to_node.send(Ok(text.to_owned())).await.unwrap();
    }
    async fn recv(&mut self) -> Value {
        use futures_util::StreamExt;
        let text = tokio::time::timeout(std::time::Duration::from_secs(5), self.from_node.next())
            .await
            .expect("a message in time")
            .expect("socket open");
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test]
async fn hello_then_replies_and_refusals_keep_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let mut ws = connect(&state, "alice@alpha");
    let hello = ws.recv().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user"], "alice@alpha");
    assert_eq!(state.core.hub().sockets(), 1);

    ws.send("{not json").await;
    assert_eq!(ws.recv().await["code"], "bad_message");
    ws.send(r#"{"type":"teleport"}"#).await;
    let e = ws.recv().await;
    assert_eq!((e["code"].as_str(), e["in_reply_to"].as_str()), (Some("unknown_type"), Some("teleport")));
    ws.send(r#"{"type":"signal","to":"bob@alpha","to_session":"00000000000000000000000000000000","kind":"offer"}"#)
        .await;
    assert_eq!(ws.recv().await["code"], "not_in_room");
    let g = "11".repeat(16);
    ws.send(&format!(r#"{{"type":"join","group":"{g}","room":"{g}"}}"#)).await;
    assert_eq!(ws.recv().await["code"], "not_found", "no such group: same answer as not a member");
    ws.send(r#"{"type":"ping"}"#).await;
    assert_eq!(ws.recv().await["type"], "pong");

    // The browser goes away (the tab closes, with a goodbye): the task ends and the hub
    // forgets the socket.
    ws.farewell.store(true, Ordering::Relaxed);
    drop(ws.to_node);
    ws.task.await.unwrap();
    assert_eq!(state.core.hub().sockets(), 0);
}

#[tokio::test]
async fn shutdown_closes_open_sockets_and_keeps_their_seats() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let (key, join) = call_of_two(&state).await;
    let mut ws = connect(&state, "alice@alpha");
    let session: voicechat_protocol::ids::SessionId = ws.recv().await["session"].as_str().unwrap().parse().unwrap();
    ws.send(&join).await;
    assert_eq!(ws.recv().await["type"], "joined");
    state.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(5), ws.task).await.expect("ends").unwrap();
    // Nobody is told alice left: after a restart her page resumes the session.
    assert!(state.core.is_in(&key, &"alice@alpha".parse().unwrap(), &session));
}

/// `alice` in a call of a fresh group, with `bob` a member; the room's key.
async fn call_of_two(state: &AppState) -> (crate::rooms::RoomKey, String) {
    let alice = "alice@alpha".parse().unwrap();
    let (g, _) = state.core.create_group(&alice, "Club").await.unwrap();
    let _ = state.core.add_member(&alice, &g.id, "bob@alpha".parse().unwrap(), voicechat_protocol::ids::Role::Member).await.unwrap();
    let (room, _) = state.core.create_room(&alice, &g.id, "Lounge", false).await.unwrap();
    let join = format!(r#"{{"type":"join","group":"{}","room":"{}"}}"#, g.id, room.id);
    ((g.id, room.id), join)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_dropped_socket_is_resumed_with_its_seat_and_what_came_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let (key, join) = call_of_two(&state).await;
    let alice: voicechat_protocol::ids::UserId = "alice@alpha".parse().unwrap();
    let mut a = connect(&state, "alice@alpha");
    let hello = a.recv().await;
    let session = hello["session"].as_str().unwrap().to_owned();
    let token = hello["resume"].as_str().unwrap().to_owned();
    assert_eq!(hello["resumed"], false);
    a.send(&join).await;
    assert_eq!(a.recv().await["type"], "joined");
    let mut b = connect_with(&state, "bob@alpha", "bob-login", None);
    let b_session = b.recv().await["session"].as_str().unwrap().to_owned();
    b.send(&join).await;
    assert_eq!(b.recv().await["type"], "joined");
    b.send(r#"{"type":"ping"}"#).await;
    while b.recv().await["type"] != "pong" {} // what bob's join brought

    // alice's network goes away: no goodbye. Her seat stays, and what bob sends her waits.
    drop(a.to_node);
    a.task.await.unwrap();
    let s: voicechat_protocol::ids::SessionId = session.parse().unwrap();
    assert!(state.core.is_in(&key, &alice, &s), "the seat is kept for the resume");
    let offer = format!(r#"{{"type":"signal","to":"alice@alpha","to_session":"{session}","kind":"offer","data":{{"n":1}}}}"#);
    b.send(&offer).await;

    // A wrong token, or another login's, gets a new session (and alice's stays parked).
    let mut x = connect_with(&state, "alice@alpha", "test-login", Some(format!("{session}.{}", "0".repeat(64))));
    let h = x.recv().await;
    assert_ne!(h["session"].as_str(), Some(session.as_str()));
    assert_eq!(h["resumed"], false);
    let mut y = connect_with(&state, "alice@alpha", "other-login", Some(format!("{session}.{token}")));
    assert_ne!(y.recv().await["session"].as_str(), Some(session.as_str()), "the token is bound to the login");
    let _ = (&mut x, &mut y);

    // The right token: the same session, the seat, and bob's offer.
    let mut a2 = connect_with(&state, "alice@alpha", "test-login", Some(format!("{session}.{token}")));
    let h = a2.recv().await;
    assert_eq!((h["session"].as_str(), h["resumed"].as_bool()), (Some(session.as_str()), Some(true)));
    let signal = a2.recv().await;
    assert_eq!((signal["type"].as_str(), signal["from_session"].as_str()), (Some("signal"), Some(b_session.as_str())));
    // Joining again changes nothing for the others: bob hears of no leave or join.
    a2.send(&join).await;
    assert_eq!(a2.recv().await["type"], "joined");
    a2.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a2.recv().await["type"], "pong");
    b.send(r#"{"type":"ping"}"#).await;
    let next = b.recv().await;
    assert_eq!(next["type"], "pong", "bob got {next}");
    assert!(state.core.is_in(&key, &alice, &s));
}

#[tokio::test]
async fn a_parked_session_that_is_not_resumed_leaves_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state(dir.path());
    let mut settings = state.settings.clone();
    settings.limits.resume_grace = Duration::from_millis(300);
    state = AppState::new(state.core.clone(), settings, None, None, None);
    let (key, join) = call_of_two(&state).await;
    let alice: voicechat_protocol::ids::UserId = "alice@alpha".parse().unwrap();
    let mut a = connect(&state, "alice@alpha");
    let session: voicechat_protocol::ids::SessionId = a.recv().await["session"].as_str().unwrap().parse().unwrap();
    a.send(&join).await;
    assert_eq!(a.recv().await["type"], "joined");
    drop(a.to_node);
    a.task.await.unwrap();
    assert!(state.core.is_in(&key, &alice, &session), "parked");
    assert_eq!(state.core.hub().sockets(), 1);
    until("the grace to run out", || !state.core.is_in(&key, &alice, &session)).await;
    assert_eq!(state.core.hub().sockets(), 0);

    // A socket that closes with a goodbye leaves at once.
    let mut a = connect(&state, "alice@alpha");
    let session: voicechat_protocol::ids::SessionId = a.recv().await["session"].as_str().unwrap().parse().unwrap();
    a.send(&join).await;
    assert_eq!(a.recv().await["type"], "joined");
    a.farewell.store(true, Ordering::Relaxed);
    drop(a.to_node);
    a.task.await.unwrap();
    assert!(!state.core.is_in(&key, &alice, &session), "left at once");
    assert_eq!(state.core.hub().sockets(), 0);
}

#[tokio::test]
async fn after_a_restart_the_token_still_names_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (session, token) = {
        let state = state(dir.path());
        let mut a = connect(&state, "alice@alpha");
        let h = a.recv().await;
        state.shutdown();
        a.task.await.unwrap();
        (h["session"].as_str().unwrap().to_owned(), h["resume"].as_str().unwrap().to_owned())
    };
    let state = state(dir.path());
    let mut a = connect_with(&state, "alice@alpha", "test-login", Some(format!("{session}.{token}")));
    let h = a.recv().await;
    assert_eq!(h["session"].as_str(), Some(session.as_str()));
    assert_eq!(h["resumed"], false, "this node did not hold it: the page joins again");
}
