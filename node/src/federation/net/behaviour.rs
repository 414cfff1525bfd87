//! The composed `NetworkBehaviour` and every protocol's configuration: identify, ping,
//! connection limits, an allow list (closed federation) and a block list, and one
//! request-response behaviour per [`Proto`].

use libp2p::allow_block_list::{self, AllowedPeers, BlockedPeers};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{PeerId, identify, ping};

use super::codec::RawCodec;

/// How often each federation connection is pinged, and how long an answer may take. A
/// connection whose pings fail is closed (`event_loop`), so a cut-off node counts as gone
/// within about 15 s (libp2p's defaults, 15 s and 20 s, took 35-60 s), and the redial after
/// the heal makes a fresh one.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use super::{ConnLimits, NetConfig, Proto, REQUEST_TIMEOUT};

/// The identify `protocol_version` string (the identify protocol id stays `/ipfs/id/1.0.0`).
pub(crate) const IDENTIFY_VERSION: &str = "/voicechat/id/1";
/// Concurrent inbound + outbound streams per connection and protocol.
pub(crate) const MAX_CONCURRENT_STREAMS: usize = 32;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) blocked: allow_block_list::Behaviour<BlockedPeers>,
    pub(crate) allowed: Toggle<allow_block_list::Behaviour<AllowedPeers>>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) sync: request_response::Behaviour<RawCodec>,
    pub(crate) signal: request_response::Behaviour<RawCodec>,
    pub(crate) invite: request_response::Behaviour<RawCodec>,
    pub(crate) push: request_response::Behaviour<RawCodec>,
    pub(crate) cascade: request_response::Behaviour<RawCodec>,
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, cfg: &NetConfig) -> Self {
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public()).with_push_listen_addr_updates(true),
        );
        let mut blocked = allow_block_list::Behaviour::<BlockedPeers>::default();
        for p in &cfg.block {
            blocked.block_peer(*p);
        }
        let allowed = cfg.allow.as_ref().map(|peers| {
            let mut a = allow_block_list::Behaviour::<AllowedPeers>::default();
            for p in peers {
                a.allow_peer(*p);
            }
            a
        });
        Self {
            limits: connection_limits::Behaviour::new(limits(cfg.limits)),
            blocked,
            allowed: Toggle::from(allowed),
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_EVERY).with_timeout(PING_TIMEOUT)),
            sync: rpc_behaviour(Proto::Sync),
            signal: rpc_behaviour(Proto::Signal),
            invite: rpc_behaviour(Proto::Invite),
            push: rpc_behaviour(Proto::Push),
            cascade: rpc_behaviour(Proto::Cascade),
        }
    }

    pub(crate) fn rpc(&mut self, proto: Proto) -> &mut request_response::Behaviour<RawCodec> {
        match proto {
            Proto::Sync => &mut self.sync,
            Proto::Signal => &mut self.signal,
            Proto::Invite => &mut self.invite,
            Proto::Push => &mut self.push,
            Proto::Cascade => &mut self.cascade,
        }
    }

    /// Whether a connection to `peer` would be accepted.
    pub(crate) fn admits(&self, peer: &PeerId) -> bool {
        !self.blocked.blocked_peers().contains(peer)
            && self.allowed.as_ref().is_none_or(|a| a.allowed_peers().contains(peer))
    }
}

fn limits(l: ConnLimits) -> ConnectionLimits {
    ConnectionLimits::default()
        .with_max_established(Some(l.total))
        .with_max_established_per_peer(Some(l.per_peer))
        .with_max_pending_incoming(Some(l.pending_incoming))
}

fn rpc_behaviour(proto: Proto) -> request_response::Behaviour<RawCodec> {
    request_response::Behaviour::with_codec(
        RawCodec::new(proto.max_request(), proto.max_response()),
        [(proto.stream_protocol(), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_block_lists_decide_admission() {
        let key = Keypair::generate_ed25519();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut cfg = NetConfig::open([1; 32], vec![], vec![]);
        cfg.block = vec![c];
        let open = Behaviour::new(&key, &cfg);
        assert!(open.admits(&a) && open.admits(&b) && !open.admits(&c));
        cfg.allow = Some(vec![a, c]);
        let closed = Behaviour::new(&key, &cfg);
        assert!(closed.admits(&a), "allowed");
        assert!(!closed.admits(&b), "not on the allow list");
        assert!(!closed.admits(&c), "a block beats an allowance");
    }
}
