//! The VoiceChat node: one community's accounts, groups and rooms, live updates over
//! WebSocket, and signaling between browsers. `main.rs` is only the command line.

pub mod accounts;
pub mod admin;
pub mod backup;
pub mod cli;
pub mod config;
pub mod core;
pub mod doctor;
pub mod federation;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node_key;
pub mod oidc;
pub mod ratelimit;
pub mod rooms;
pub mod serve;
pub mod sfu;
pub mod state;
pub mod store;
pub mod time;
pub mod tls;
pub mod turn;
pub mod ws;

pub use http::app;
pub use state::{AppState, Settings};
