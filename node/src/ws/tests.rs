//! The socket loop driven through channels instead of a network: hello first, replies in
//! order, refusals keep the socket open, a closed peer leaves its room, shutdown ends it.

use futures_util::SinkExt;
use futures_channel::mpsc;
use serde_json::Value;
use voicechat_protocol::ids::NodeName;

use std::sync::Arc;

use super::run;
use crate::core::{Core, Signer};
use crate::state::{AppState, Settings};
use crate::store::Store;

struct Harness {
    to_node: mpsc::UnboundedSender<Result<String, std::convert::Infallible>>,
    from_node: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

fn state(dir: &std::path::Path) -> AppState {
    let store = Store::open(dir).unwrap();
    let me = NodeName::new("alpha").unwrap();
    let core = Arc::new(Core::new(store, me.clone(), Signer::new([1; 32]), None));
    AppState::new(core, Settings::new(me, "http://localhost:3001"), None, None, None)
}

fn connect(state: &AppState, user: &str) -> Harness {
    let (to_node, rx) = mpsc::unbounded();
    let (tx, from_node) = mpsc::unbounded::<String>();
    let user = user.parse().unwrap();
    let task = tokio::spawn(run(state.clone(), user, "test-login".into(), tx, rx));
    Harness { to_node, from_node, task }
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

    // The browser goes away: the task ends and the hub forgets the socket.
    drop(ws.to_node);
    ws.task.await.unwrap();
    assert_eq!(state.core.hub().sockets(), 0);
}

#[tokio::test]
async fn shutdown_closes_open_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let mut ws = connect(&state, "alice@alpha");
    assert_eq!(ws.recv().await["type"], "hello");
    state.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(5), ws.task).await.expect("ends").unwrap();
    assert_eq!(state.core.hub().sockets(), 0);
}
