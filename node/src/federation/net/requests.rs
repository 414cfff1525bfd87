//! Request-response plumbing of the loop: outbound requests waiting for their response,
//! inbound requests waiting for the application's reply (bounded by the protocol's stream
//! limit and [`REQUEST_TIMEOUT`]), and the mapping of failures to [`NetError`].

use std::pin::Pin;

use libp2p::PeerId;
use libp2p::futures::Future;
use libp2p::request_response::{self, InboundRequestId, OutboundFailure, ResponseChannel};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::event_loop::EventLoop;
use super::{NetError, NetEvent, Proto, REQUEST_TIMEOUT};

/// The caller of an outbound request.
pub(super) type Pending = oneshot::Sender<Result<Vec<u8>, NetError>>;
/// An inbound request waiting for the application: yields the reply, or `None` if the
/// application dropped it or took longer than [`REQUEST_TIMEOUT`].
pub(super) type Reply =
    Pin<Box<dyn Future<Output = (Proto, ResponseChannel<Vec<u8>>, Option<Vec<u8>>)> + Send>>;

impl EventLoop {
    pub(super) fn on_rpc(
        &mut self,
        proto: Proto,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let (reply, rx) = oneshot::channel();
                    self.replies.push(Box::pin(async move {
                        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx)
                            .await
                            .ok()
                            .and_then(Result::ok);
                        (proto, channel, reply)
                    }));
                    self.emit(NetEvent::Request {
                        peer,
                        proto,
                        data: request,
                        reply,
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(tx) = self.outbound.remove(&(proto, request_id)) {
                        let _ = tx.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, proto = proto.id(), %error, "request failed");
                let error = match error {
                    OutboundFailure::DialFailure => NetError::Unreachable(peer),
                    OutboundFailure::Timeout => NetError::Timeout,
                    OutboundFailure::ConnectionClosed => NetError::ConnectionClosed,
                    OutboundFailure::UnsupportedProtocols => NetError::Unsupported,
                    OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        NetError::Protocol(e.to_string())
                    }
                    OutboundFailure::Io(e) => NetError::Io(e.to_string()),
                };
                if let Some(tx) = self.outbound.remove(&(proto, request_id)) {
                    let _ = tx.send(Err(error));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                self.on_inbound_failure(peer, proto, request_id, error);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_reply(
        &mut self,
        proto: Proto,
        channel: ResponseChannel<Vec<u8>>,
        reply: Option<Vec<u8>>,
    ) {
        // `None`: the app dropped `reply` or took too long; dropping the channel closes the stream.
        let Some(reply) = reply else { return };
        if reply.is_empty() || reply.len() > proto.max_response() {
            warn!(
                proto = proto.id(),
                len = reply.len(),
                "response empty or over the cap, not sent"
            );
            return;
        }
        if self
            .swarm
            .behaviour_mut()
            .rpc(proto)
            .send_response(channel, reply)
            .is_err()
        {
            debug!(proto = proto.id(), "response channel closed");
        }
    }

    fn on_inbound_failure(
        &mut self,
        peer: PeerId,
        proto: Proto,
        request_id: InboundRequestId,
        error: request_response::InboundFailure,
    ) {
        use request_response::InboundFailure as F;
        match error {
            F::Io(e) => {
                if self.log_once(peer, "bad inbound request") {
                    info!(%peer, proto = proto.id(), error = %e, "bad inbound request");
                }
            }
            F::ResponseOmission => {
                debug!(%peer, proto = proto.id(), %request_id, "request not answered");
            }
            other => debug!(%peer, proto = proto.id(), error = %other, "inbound request failed"),
        }
    }
}
