//! The node's integration tests: real `voicechat` processes on port 0, driven over HTTP
//! and WebSocket the way a browser does (one binary; one module per behaviour).

#[allow(dead_code)]
mod harness;

mod accounts;
mod bad_input;
mod csrf;
mod durability;
mod flow;
mod login_limit;
mod signaling;
mod tls;
