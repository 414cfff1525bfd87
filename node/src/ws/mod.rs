//! One WebSocket per browser tab: the upgrade (session cookie, Origin check), then a loop
//! that relays queued events out and acts on the browser's messages.
//!
//! The loop is generic over `Sink`/`Stream` of text, so tests can drive it with channels.

pub mod messages;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;
use voicechat_protocol::ids::{SessionId, UserId};

use voicechat_protocol::records::SignalType;
use voicechat_protocol::rpc::RpcError;

use crate::core::{Core, CoreError};
use crate::rooms::{CallMode, SeatKey};
use crate::sfu::{SfuError, SfuEvent};
use crate::federation::machine::{OutSignal, RelayError};
use crate::http::{AppError, Auth};
use crate::hub::{Outbound, encode};
use crate::state::AppState;
use crate::store::StoreError;
use crate::time::random_16;
use crate::core::stage::Moderation;
use messages::{ClientMsg, MAX_MESSAGE, ModerateAction, Refusal, SignalKind};

/// Messages a browser may send per second, sustained; bursts up to [`BURST`].
const RATE: u32 = 50;
const BURST: u32 = 200;
/// Initial read buffer of a socket; it grows for a larger frame (up to [`MAX_MESSAGE`]).
const READ_BUFFER: usize = 4 * 1024;
/// A socket that says nothing for this long is closed (browsers ping every 20 s).
const IDLE: Duration = Duration::from_secs(75);

/// The close code of a page that gives up on a socket it thinks dead (web-client/socket.js)
/// and will resume its session on a new one.
const GAVE_UP: u16 = 4000;

/// How a socket was opened: by whom, under which login session (its
/// [`crate::store::session_tag`]), whether it resumes a session (`<session>.<token>`, the
/// `resume` query parameter), and a flag the transport sets when the browser closes the
/// socket on purpose (a close frame, but for [`GAVE_UP`]: a closed tab, a reload, a logout).
pub struct Opening {
    pub user: UserId,
    pub login: String,
    pub resume: Option<String>,
    /// How many messages of the resumed session the page received (`seen`), so that what
    /// it missed is sent again.
    pub seen: Option<u64>,
    pub farewell: Arc<AtomicBool>,
}

/// The token that lets a page resume `session` on a new socket (after a network blip, or
/// a restart of this node): an HMAC of the session id under the login session's tag, which
/// only this node and that browser's cookie give. It needs no state, so it survives a
/// restart; it dies with the login.
pub fn resume_token(login: &str, session: &SessionId) -> String {
    hex::encode(ring::hmac::sign(&resume_key(login), &resume_message(session)).as_ref())
}

fn resume_key(login: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, login.as_bytes())
}

fn resume_message(session: &SessionId) -> Vec<u8> {
    format!("voicechat resume {session}").into_bytes()
}

/// The session a `resume` parameter names, if its token is right for this login.
fn resumable(login: &str, resume: Option<&str>) -> Option<SessionId> {
    let (session, token) = resume?.split_once('.')?;
    let session: SessionId = session.parse().ok()?;
    let token = hex::decode(token).ok()?;
    ring::hmac::verify(&resume_key(login), &resume_message(&session), &token).ok()?;
    Some(session)
}

/// `GET /ws`: upgrades a logged-in browser from this node's own origin.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<UpgradeQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    if !origin_allowed(&state, &headers) {
        return Err(AppError::forbidden("WebSocket connections are only accepted from this node's own pages"));
    }
    if crate::http::tokens::bearer(&headers).is_some() {
        return Err(AppError::forbidden("admin API tokens cannot open sockets"));
    }
    let auth = Auth::from_headers(&state, &headers)?.ok_or_else(|| AppError::unauthenticated("log in first"))?;
    let max = state.settings.limits.sockets_per_user;
    if state.core.hub().user_sockets(&auth.id) >= max {
        return Err(AppError::too_many(format!("at most {max} connections per account; close another tab")));
    }
    let login = crate::store::session_tag(&auth.session);
    let (resume, seen) = (query.resume, query.seen);
    let farewell = Arc::new(AtomicBool::new(false));
    let said_bye = farewell.clone();
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // axum's defaults (a 128 KiB read buffer allocated per socket, writes batched up
        // to 128 KiB) cost ~160 KiB of RSS per connection; frames here are small, and the
        // load scenario needs thousands of sockets on one node.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            let sink = sink.with(|t: String| async move { Ok::<_, axum::Error>(Message::Text(t.into())) });
            let stream = stream.filter_map(move |m| {
                let said_bye = said_bye.clone();
                async move {
                    match m {
                        Ok(Message::Text(t)) => Some(Ok(t.to_string())),
                        Ok(Message::Binary(_)) => Some(Ok(String::from("binary frame"))),
                        // A close frame is a goodbye, but for the one the page sends when
                        // it gives up on a socket it thinks dead: it comes back.
                        Ok(Message::Close(f)) if f.as_ref().is_none_or(|f| f.code != GAVE_UP) => {
                            said_bye.store(true, Ordering::Relaxed);
                            None
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    }
                }
            });
            let opening = Opening { user: auth.id, login, resume, seen, farewell };
            run(state, opening, Box::pin(sink), Box::pin(stream)).await;
        })
        .into_response())
}

/// `GET /ws?resume=<session>.<token>&seen=<n>`: the session to resume, from an earlier
/// `hello`, and how many of its messages (after `hello`) the page received.
#[derive(serde::Deserialize)]
pub struct UpgradeQuery {
    resume: Option<String>,
    seen: Option<u64>,
}

/// Browsers always send `Origin` on WebSocket upgrades; it must be this node's public
/// origin, or the origin the request was addressed to (the `Host` it came in on).
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Non-browser clients (tools, tests) send none; cookies still authenticate them,
        // and a cross-site page cannot open a socket without its Origin.
        return true;
    };
    if origin == state.settings.public_url {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let bare = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, bare), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Runs one socket until the browser goes away or its login session ends.
///
/// A socket that drops without a goodbye (no close frame: the network went away, or the
/// page gave up on a dead connection) is parked for the resume grace: its seat in a call,
/// its connection to the audio server and its queue stay, so that the page, reconnecting
/// with its resume token, carries on in the same session and its peer connections never
/// notice. After a restart of this node the token still names the session: the page
/// joins again under it, and the peers' connections to it go on.
pub async fn run<S, R, E>(state: AppState, opening: Opening, mut sink: S, mut stream: R)
where
    S: Sink<String> + Unpin,
    R: Stream<Item = Result<String, E>> + Unpin,
{
    let Opening { user, login, resume, seen, farewell } = opening;
    let asked = resumable(&login, resume.as_deref());
    let session = asked.unwrap_or_else(|| SessionId::from_bytes(random_16()));
    let max = state.settings.limits.sockets_per_user;
    // Checked at the upgrade too; this closes the race between two upgrades.
    let Some(attached) = state.core.hub().attach(&user, session, &login, max) else {
        let why = refusal("too_many_sockets", format!("at most {max} connections per account; close another tab"), None);
        let _ = sink.send(why.to_string()).await;
        return;
    };
    let generation = attached.generation;
    let mut queue = attached.rx;
    if attached.resumed {
        metrics::counter!("voicechat_ws_resumed_total").increment(1);
    }
    let limiter: DefaultDirectRateLimiter = RateLimiter::direct(
        Quota::per_second(RATE.try_into().expect("non-zero")).allow_burst(BURST.try_into().expect("non-zero")),
    );
    let hello = encode(&json!({
        "type": "hello",
        "user": user,
        "session": session,
        "resume": resume_token(&login, &session),
        // Whether the node still held the session (its seat, its queue) or only knew it
        // by its token (this node restarted, or the grace ran out).
        "resumed": attached.resumed,
    }));
    let mut ok = sink.send(hello.to_string()).await.is_ok();
    let replay = attached.replay;
    // What the page missed (sent into a socket that was already dead), sent again.
    if let (true, Some(seen)) = (attached.resumed, seen) {
        let missed = replay.lock().expect("replay lock").missed(seen);
        match missed {
            Ok(msgs) => {
                for msg in msgs {
                    if ok {
                        ok = sink.send(msg.to_string()).await.is_ok();
                    }
                }
            }
            Err(n) => tracing::debug!(n, "a resumed page missed more than is kept"),
        }
    }
    let shutdown = state.shutting_down();
    tokio::pin!(shutdown);
    // Whether the socket just broke (and the page may come back), rather than ended.
    let mut broke = !ok;
    while ok {
        tokio::select! {
            // The node stops: the session is not given up (nobody is told it left), so that
            // after a restart the page resumes it and its peers' connections go on.
            () = &mut shutdown => return,
            out = queue.recv() => match out {
                Some(msg) => {
                    replay.lock().expect("replay lock").sent(&msg);
                    ok = sink.send(msg.to_string()).await.is_ok();
                    broke |= !ok;
                }
                // The hub cut us off (this client stopped reading, or its login ended), or
                // a resume took the session over.
                None => break,
            },
            incoming = tokio::time::timeout(IDLE, stream.next()) => match incoming {
                Ok(Some(Ok(text))) => {
                    let reply = if limiter.check().is_err() {
                        Some(refusal("rate_limited", "slow down".into(), None))
                    } else {
                        handle(&state, &user, session, &text).await
                    };
                    if let Some(reply) = reply {
                        replay.lock().expect("replay lock").sent(&reply);
                        ok = sink.send(reply.to_string()).await.is_ok();
                        broke |= !ok;
                    }
                }
                // Closed or broken (e.g. an oversized frame). Idle for this long: gone.
                Ok(_) => {
                    broke = true;
                    break;
                }
                Err(_) => break,
            },
        }
    }
    // Without a goodbye, a socket that broke may come back.
    let may_return = broke && !farewell.load(Ordering::Relaxed);
    let hub = state.core.hub();
    let grace = state.settings.limits.resume_grace;
    if may_return && !grace.is_zero() && hub.park(&user, &session, generation, queue) {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if state.core.hub().release(&user, &session, generation) {
                give_up_session(&state, &user, session).await;
            }
        });
        return;
    }
    if hub.release(&user, &session, generation) {
        give_up_session(&state, &user, session).await;
    }
}

/// A session is over: its seat in a call, its audio server connection, its subscription.
async fn give_up_session(state: &AppState, user: &UserId, session: SessionId) {
    if let Some(sfu) = &state.sfu {
        sfu.disconnect((user.clone(), session));
    }
    state.core.unsubscribe(user, session);
    let (_, fx) = state.core.leave(user, session);
    state.commit(fx).await;
}

fn refusal(code: &str, message: String, in_reply_to: Option<String>) -> Outbound {
    encode(&json!({"type": "error", "code": code, "message": message, "in_reply_to": in_reply_to}))
}

/// Acts on one message; returns the direct reply, if any. Events for others are queued
/// inside.
async fn handle(state: &AppState, user: &UserId, session: SessionId, text: &str) -> Option<Outbound> {
    let msg = match messages::parse(text) {
        Ok(m) => m,
        Err(Refusal { code, message, in_reply_to }) => return Some(refusal(code, message, in_reply_to)),
    };
    let ty = msg.type_name();
    let result = match msg {
        ClientMsg::Ping => return Some(encode(&json!({"type": "pong"}))),
        ClientMsg::Join { group, room, muted } => match (state.core.seat(user, session) == Some((group, room)), state.core.join(user, session, group, room, muted)) {
            (again, Ok(fx)) => {
                // A connection to the SFU belongs to the call this socket was in (joining
                // the same call again, as a resumed session does, keeps it).
                if let (Some(sfu), false) = (&state.sfu, again) {
                    sfu.disconnect((user.clone(), session));
                }
                state.commit(fx).await;
                take_over_seats(state, user, session).await;
                let mode = state.core.call_mode(&(group, room));
                let cascade = state.core.cascaded(&(group, room));
                Ok(Some(encode(&json!({"type": "joined", "group": group, "room": room, "session": session, "mode": mode, "cascade": cascade}))))
            }
            (_, Err(CoreError::Store(e))) => Err(WsError::from(e)),
            (_, Err(_)) => Err(WsError("not_found", "no such room".to_owned())),
        },
        ClientMsg::Leave => {
            if let Some(sfu) = &state.sfu {
                sfu.disconnect((user.clone(), session));
            }
            let (left, fx) = state.core.leave(user, session);
            state.commit(fx).await;
            Ok(left.map(|(g, r)| encode(&json!({"type": "left", "group": g, "room": r}))))
        }
        ClientMsg::Mute { muted } => {
            let fx = state.core.mute(user, session, muted);
            state.commit(fx).await;
            Ok(None)
        }
        ClientMsg::Subscribe { group } => match state.core.subscribe(user, session, group) {
            Ok(fx) => {
                state.commit(fx).await;
                Ok(None)
            }
            Err(CoreError::Store(e)) => Err(WsError::from(e)),
            Err(_) => Err(WsError("not_found", "no such group".to_owned())),
        },
        ClientMsg::Unsubscribe => {
            state.core.unsubscribe(user, session);
            Ok(None)
        }
        ClientMsg::Resync { group, room } => match state.core.resync(user, session, group, room) {
            Ok(fx) => {
                state.commit(fx).await;
                Ok(None)
            }
            Err(CoreError::Store(e)) => Err(WsError::from(e)),
            Err(_) => Err(WsError("not_found", "no such room".to_owned())),
        },
        ClientMsg::Signal { to, to_session, kind, data } => {
            let Some(room) = state.core.seat(user, session) else {
                return Some(refusal("not_in_room", "join a room before signaling".into(), Some(ty.into())));
            };
            let together = state.core.is_in(&room, &to, &to_session);
            if together && to.node != state.settings.node_name {
                let kind = match kind {
                    SignalKind::Offer => SignalType::Offer,
                    SignalKind::Answer => SignalType::Answer,
                    SignalKind::Candidate => SignalType::Candidate,
                    SignalKind::Bye => SignalType::Bye,
                };
                let s = OutSignal { from: user.clone(), from_session: session, to, to_session, room, kind, data: data.to_string() };
                relay(state, s);
                return None;
            }
            let kind_name = match kind {
                SignalKind::Offer => "offer",
                SignalKind::Answer => "answer",
                SignalKind::Candidate => "candidate",
                SignalKind::Bye => "bye",
            };
            let msg = Core::signal_message(user, &session, &room, kind_name, &data);
            if together && state.core.deliver_signal(&to, &to_session, &msg) {
                Ok(None)
            } else {
                Err(WsError("not_in_room", format!("{to} is not in your room")))
            }
        }
        ClientMsg::SfuOffer { sdp } => sfu_offer(state, user, session, sdp).await,
        ClientMsg::Hand { up } => core_op(state, state.core.raise_hand(user, session, up)).await,
        ClientMsg::StageAnswer { accept } => core_op(state, state.core.answer_stage_invitation(user, session, accept)).await,
        ClientMsg::StageLeave => core_op(state, state.core.leave_stage(user, session)).await,
        ClientMsg::Moderate { action, user: target, session: target_session } => {
            let what = match action {
                ModerateAction::Invite => Moderation::Invite,
                ModerateAction::ToAudience => Moderation::ToAudience,
                ModerateAction::Mute => Moderation::Mute,
                ModerateAction::Remove => Moderation::Remove,
            };
            // Who may speak is the group home's to decide: unless that is this node and the
            // target is ours, the moderation goes there (SPEC.md §6.6).
            let home_here = state.core.seat(user, session).is_some_and(|(g, _)| state.core.is_home(&g));
            if &target.node != state.core.me() || !home_here {
                return moderate_remote(state, user, session, (target, target_session), action).await;
            }
            core_op(state, state.core.moderate(user, session, &(target, target_session), what)).await
        }
        ClientMsg::E2eeHello { data, to, to_session, everyone } => {
            let Some(room) = state.core.seat(user, session) else {
                return Some(refusal("not_in_room", "join a call before sending keys".into(), Some(ty.into())));
            };
            let from = (user.clone(), session);
            let to = match to.zip(to_session) {
                Some((u, s)) if state.core.is_in(&room, &u, &s) => vec![(u, s)],
                Some((u, _)) => return Some(refusal("not_in_room", format!("{u} is not in your call"), Some(ty.into()))),
                None => state.core.e2ee_recipients(&room, &from, everyone),
            };
            let body = json!({"kind": "hello", "data": data});
            for seat in to {
                send_e2ee(state, &from, room, seat, &body);
            }
            Ok(None)
        }
        ClientMsg::E2eeKeys { common, keys } => {
            let Some(room) = state.core.seat(user, session) else {
                return Some(refusal("not_in_room", "join a call before sending keys".into(), Some(ty.into())));
            };
            let from = (user.clone(), session);
            let mut absent = 0usize;
            for k in keys {
                if state.core.is_in(&room, &k.to, &k.to_session) {
                    let body = json!({"kind": "key", "common": common, "data": k.data});
                    send_e2ee(state, &from, room, (k.to, k.to_session), &body);
                } else {
                    absent += 1;
                }
            }
            // Someone left meanwhile: the page learns it from the participant list anyway;
            // it is told how many keys went nowhere, so nothing is lost silently.
            Ok((absent > 0).then(|| encode(&json!({"type": "e2ee_absent", "count": absent}))))
        }
    };
    match result {
        Ok(reply) => reply,
        Err(WsError(code, message)) => Some(refusal(code, message, Some(ty.into()))),
    }
}

/// A user holds at most `call_seats_per_user` seats in calls (one by default): a socket
/// that just joined takes the seat of the user's other sockets beyond that, which are told
/// `moved` (the tab says "moved to another tab") instead of staying in and hearing
/// themselves.
async fn take_over_seats(state: &AppState, user: &UserId, session: SessionId) {
    let seated: Vec<SessionId> = state
        .core
        .hub()
        .other_sessions(user, &session)
        .into_iter()
        .filter(|s| state.core.seat(user, *s).is_some())
        .collect();
    let keep = state.settings.limits.call_seats_per_user.saturating_sub(1);
    for other in seated.into_iter().skip(keep) {
        if let Some(sfu) = &state.sfu {
            sfu.disconnect((user.clone(), other));
        }
        let (left, fx) = state.core.leave(user, other);
        state.commit(fx).await;
        if let Some((g, r)) = left {
            let msg = encode(&json!({"type": "moved", "group": g, "room": r, "to_session": session}));
            state.core.hub().send_session(user, &other, &msg);
        }
    }
}

/// Commits a core operation's effects, or turns its refusal into an `error` reply.
async fn core_op(state: &AppState, r: Result<crate::core::Effects, CoreError>) -> Result<Option<Outbound>, WsError> {
    match r {
        Ok(fx) => {
            state.commit(fx).await;
            Ok(None)
        }
        Err(CoreError::Store(e)) => Err(WsError::from(e)),
        Err(CoreError::Forbidden(m)) => Err(WsError("forbidden", m)),
        Err(CoreError::NotFound(m)) => Err(WsError("not_found", m)),
        Err(e) => Err(WsError("bad_request", e.to_string())),
    }
}

/// Connects a socket in a call on the SFU to it: the answer, or why not.
async fn sfu_offer(state: &AppState, user: &UserId, session: SessionId, sdp: String) -> Result<Option<Outbound>, WsError> {
    let Some(room) = state.core.seat(user, session) else {
        return Err(WsError("not_in_room", "join a room before connecting to its audio server".into()));
    };
    let Some(sfu) = &state.sfu else {
        return Err(WsError("no_sfu", "this node has no audio server".into()));
    };
    if state.core.call_mode(&room) != CallMode::Sfu {
        return Err(WsError("not_on_sfu", "this call is not on the audio server".into()));
    }
    let seat = (user.clone(), session);
    let may_speak = state.core.may_speak(&seat).unwrap_or(false);
    match sfu.connect(seat, room, may_speak, sdp).await {
        Ok(answer) => Ok(Some(encode(&json!({"type": "sfu_answer", "group": room.0, "room": room.1, "sdp": answer})))),
        Err(SfuError::BadOffer(m)) => Err(WsError("bad_offer", m)),
        Err(e) => Err(WsError("sfu_unavailable", e.to_string())),
    }
}

/// Tells a socket what the SFU says about its connection.
pub fn sfu_event(core: &Core, e: SfuEvent) {
    match e {
        SfuEvent::Slots { seat, room, slots } => {
            let slots: Vec<_> = slots.into_iter().map(|s| s.map(|(user, session)| json!({"user": user, "session": session}))).collect();
            let msg = encode(&json!({"type": "sfu_slots", "group": room.0, "room": room.1, "slots": slots}));
            core.hub().send_session(&seat.0, &seat.1, &msg);
        }
        SfuEvent::Lost { seat, room } => {
            let msg = encode(&json!({"type": "sfu_lost", "group": room.0, "room": room.1}));
            core.hub().send_session(&seat.0, &seat.1, &msg);
        }
        // The cascade (federation) handles its links; pages hear of them as presence.
        SfuEvent::Link { .. } => {}
    }
}

/// A refusal of a browser's message: an `error` reply with this code.
struct WsError(&'static str, String);

impl From<StoreError> for WsError {
    fn from(e: StoreError) -> Self {
        tracing::error!(%e, "storage failed while handling a socket message");
        WsError("internal", "something went wrong on the node".into())
    }
}

/// Sends a signal to a user of another node from a task of its own; a refusal comes back
/// to the sender's socket as an `error`.
/// Hands one end-to-end encryption body to a session in the same call: directly on this
/// node, else as a signed `e2ee` signal to its home node.
fn send_e2ee(state: &AppState, from: &crate::rooms::SeatKey, room: crate::rooms::RoomKey, to: crate::rooms::SeatKey, body: &serde_json::Value) {
    let (to, to_session) = to;
    if to.node != state.settings.node_name {
        let s = OutSignal { from: from.0.clone(), from_session: from.1, to, to_session, room, kind: SignalType::E2ee, data: body.to_string() };
        relay(state, s);
    } else if let Some(msg) = Core::e2ee_message(&from.0, &from.1, body) {
        state.core.deliver_signal(&to, &to_session, &msg);
    }
}

/// A moderation this node does not decide: checked here (a moderator, in the call, the
/// target in it too), then sent as a signed `moderate` signal to the group's home, which
/// judges it and applies it or hands it on to the target's node (or, from the home, straight
/// to the target's node); a refusal comes back to the socket as an `error`.
async fn moderate_remote(
    state: &AppState,
    user: &UserId,
    session: SessionId,
    target: SeatKey,
    action: ModerateAction,
) -> Option<Outbound> {
    let room = match state.core.moderator_room(user, session) {
        Ok(room) => room,
        Err(CoreError::Forbidden(m)) => return Some(refusal("forbidden", m, Some("moderate".into()))),
        Err(e) => return Some(refusal("not_found", e.to_string(), Some("moderate".into()))),
    };
    if !state.core.is_in(&room, &target.0, &target.1) {
        return Some(refusal("not_found", "participant not found".into(), Some("moderate".into())));
    }
    let action = match action {
        ModerateAction::Invite => "invite",
        ModerateAction::ToAudience => "to_audience",
        ModerateAction::Mute => "mute",
        ModerateAction::Remove => "remove",
    };
    let data = json!({ "action": action }).to_string();
    let s = OutSignal { from: user.clone(), from_session: session, to: target.0, to_session: target.1, room, kind: SignalType::Moderate, data };
    let state = state.clone();
    tokio::spawn(async move {
        let (from, from_session) = (s.from.clone(), s.from_session);
        let result = match state.fed() {
            Some(fed) => fed.relay_signal(s).await,
            None => Err(RelayError::Unreachable(room_home(&state, &room))),
        };
        let msg = match result {
            Ok(()) => return,
            Err(RelayError::Refused(RpcError::NotMember)) => {
                refusal("forbidden", "the group's home node refused: only the group's admins moderate a call".into(), Some("moderate".into()))
            }
            Err(RelayError::Refused(RpcError::NoSession)) => {
                refusal("not_found", "that person is no longer in the call".into(), Some("moderate".into()))
            }
            Err(e) => refusal("unavailable", format!("the moderation did not get through: {e}"), Some("moderate".into())),
        };
        state.core.hub().send_session(&from, &from_session, &msg);
    });
    None
}

/// The home node of a room's group, as this node knows it.
fn room_home(state: &AppState, room: &crate::rooms::RoomKey) -> voicechat_protocol::ids::NodeName {
    state.core.store.group(&room.0).ok().flatten().map(|g| g.home).unwrap_or_else(|| state.core.me().clone())
}

fn relay(state: &AppState, s: OutSignal) {
    let state = state.clone();
    tokio::spawn(async move {
        let (from, from_session, to) = (s.from.clone(), s.from_session, s.to.clone());
        let result = match state.fed() {
            Some(fed) => fed.relay_signal(s).await,
            None => Err(RelayError::Unreachable(to.node.clone())),
        };
        if let Err(e) = result {
            tracing::debug!(%e, "signal relay failed");
            let msg = refusal("not_in_room", format!("{to} could not be reached: {e}"), Some("signal".into()));
            state.core.hub().send_session(&from, &from_session, &msg);
        }
    });
}

#[cfg(test)]
mod tests;
