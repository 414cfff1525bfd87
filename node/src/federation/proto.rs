//! The request-response protocols between nodes (SPEC.md §9): their ids and size caps.

use voicechat_protocol::rpc;

/// One request-response protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `/voicechat/sync/1`: a group's records from its home.
    Sync,
    /// `/voicechat/signal/1`: a browser's signal to a user of the receiving node.
    Signal,
    /// `/voicechat/invite/1`: join a group of the receiving node by invite code.
    Invite,
    /// `/voicechat/push/1`: records for the receiving node.
    Push,
    /// `/voicechat/cascade/1`: the SFU of the requester pulls the receiver's speakers.
    Cascade,
}

impl Proto {
    /// Every protocol, in a fixed order.
    pub const ALL: [Proto; 5] = [Proto::Sync, Proto::Signal, Proto::Invite, Proto::Push, Proto::Cascade];

    /// The protocol id on the wire.
    pub fn id(self) -> &'static str {
        match self {
            Proto::Sync => rpc::SYNC_PROTOCOL,
            Proto::Signal => rpc::SIGNAL_PROTOCOL,
            Proto::Invite => rpc::INVITE_PROTOCOL,
            Proto::Push => rpc::PUSH_PROTOCOL,
            Proto::Cascade => rpc::CASCADE_PROTOCOL,
        }
    }

    /// A short name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Sync => "sync",
            Proto::Signal => "signal",
            Proto::Invite => "invite",
            Proto::Push => "push",
            Proto::Cascade => "cascade",
        }
    }

    /// The largest request, in bytes.
    pub fn max_request(self) -> usize {
        match self {
            Proto::Sync => rpc::MAX_SYNC_REQUEST,
            Proto::Signal => rpc::MAX_SIGNAL_REQUEST,
            Proto::Invite => rpc::MAX_INVITE_REQUEST,
            Proto::Push => rpc::MAX_PUSH_REQUEST,
            Proto::Cascade => rpc::MAX_CASCADE_MESSAGE,
        }
    }

    /// The largest response, in bytes.
    pub fn max_response(self) -> usize {
        match self {
            Proto::Sync => rpc::MAX_SYNC_RESPONSE,
            Proto::Signal => rpc::MAX_SIGNAL_RESPONSE,
            Proto::Invite => rpc::MAX_INVITE_RESPONSE,
            Proto::Push => rpc::MAX_PUSH_RESPONSE,
            Proto::Cascade => rpc::MAX_CASCADE_MESSAGE,
        }
    }
}
