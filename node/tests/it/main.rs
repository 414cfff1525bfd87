//! The node's integration tests: real `voicechat` processes on port 0, driven over HTTP
//! and WebSocket the way a browser does (one binary; one module per behaviour).

#[allow(dead_code)]
mod harness;

mod account_attacks;
mod accounts;
mod acme;
mod admin_api;
mod admin_backup;
mod bad_input;
mod csrf;
mod doctor;
mod durability;
mod e2ee;
mod fed_admin_live;
mod fed_cascade;
mod fed_figures;
mod fed_idle;
mod fed_invite;
mod fed_metrics;
mod fed_peer_cli;
mod fed_presence;
mod fed_presence_ttl;
mod fed_remote_member;
mod fed_rogue;
mod fed_signal;
mod fed_sync;
mod fed_verify;
mod flow;
mod login_limit;
mod packaging;
mod presence;
mod registration;
mod rtc;
mod signaling;
mod tls;
mod turn;
mod ws_resume;
