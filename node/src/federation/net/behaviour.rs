//! The composed `NetworkBehaviour` and every protocol's configuration: identify, ping,
//! kad, gossipsub (strict signing, application validation, content-addressed ids, peer
//! scoring) and one request-response behaviour per [`Proto`].

use std::time::Duration;

use libp2p::gossipsub::{self, MessageId, PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, ping};

use voicechat_protocol::rpc;

use super::codec::RawCodec;
use super::{NetError, Proto, REQUEST_TIMEOUT};

/// The identify `protocol_version` string (the identify protocol id stays `/ipfs/id/1.0.0`).
pub(crate) const IDENTIFY_VERSION: &str = "/voicechat/id/1";
/// Room for gossipsub's framing (signature, key, source, seqno, topic) around one
/// envelope of [`rpc::MAX_GOSSIP_MESSAGE`] bytes; `max_transmit_size` caps the whole frame.
pub(crate) const GOSSIP_FRAME_OVERHEAD: usize = 1024;
/// Concurrent inbound + outbound streams per connection and protocol.
const MAX_CONCURRENT_STREAMS: usize = 32;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<RawCodec>,
    pub(crate) signal: request_response::Behaviour<RawCodec>,
    pub(crate) invite: request_response::Behaviour<RawCodec>,
    pub(crate) push: request_response::Behaviour<RawCodec>,
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
                .with_push_listen_addr_updates(true),
        );
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            MemoryStore::new(peer_id),
            kad::Config::new(kad::PROTOCOL_NAME),
        );
        kad.set_mode(Some(kad::Mode::Server));

        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config()?,
        )
        .map_err(|e| NetError::Transport(e.to_owned()))?;
        gossipsub
            .with_peer_score(score_params(), score_thresholds())
            .map_err(NetError::Transport)?;

        Ok(Self {
            identify,
            ping: ping::Behaviour::default(),
            kad,
            gossipsub,
            sync: rpc_behaviour(Proto::Sync),
            signal: rpc_behaviour(Proto::Signal),
            invite: rpc_behaviour(Proto::Invite),
            push: rpc_behaviour(Proto::Push),
        })
    }

    pub(crate) fn rpc(&mut self, proto: Proto) -> &mut request_response::Behaviour<RawCodec> {
        match proto {
            Proto::Sync => &mut self.sync,
            Proto::Signal => &mut self.signal,
            Proto::Invite => &mut self.invite,
            Proto::Push => &mut self.push,
        }
    }
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

/// The gossipsub message id: SHA-256 of the data, so the same record republished (by any
/// node) is one message. Computed with kad's key hash, which is plain SHA-256.
pub(crate) fn message_id(data: &[u8]) -> MessageId {
    MessageId::new(kad::KBucketKey::new(data).hashed_bytes())
}

fn gossip_config() -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| message_id(&m.data))
        .max_transmit_size(rpc::MAX_GOSSIP_MESSAGE + GOSSIP_FRAME_OVERHEAD)
        .heartbeat_interval(Duration::from_secs(1))
        // 2–20 nodes: a mesh of 4, kept between 2 and 8; one peer is enough to start.
        .mesh_n(4)
        .mesh_n_low(2)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .gossip_lazy(4)
        .build()
        .map_err(|e| NetError::Transport(format!("gossipsub config: {e}")))
}

/// Peer-score parameters. No IP colocation penalty: a federation of named nodes (and a
/// testnet on loopback) legitimately shares addresses.
fn score_params() -> PeerScoreParams {
    PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        topic_score_cap: 100.0,
        ..PeerScoreParams::default()
    }
}

/// Lenient thresholds: one rejected message costs 10, graylisting takes ~14 unforgiven
/// rejects in a row.
fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -500.0,
        publish_threshold: -1000.0,
        graylist_threshold: -2000.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Per-topic score parameters, set on subscribe. Only two counters matter: first
/// deliveries of accepted messages (a small bonus) and invalid deliveries (`Reject`ed
/// messages, squared, weight −10, decaying ×0.9 a second). Mesh delivery-rate penalties
/// are off: groups are quiet for long stretches, and quiet is not misbehaviour.
pub(crate) fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_sha256_of_the_data() {
        // FIPS 180-2 test vector: SHA-256("abc").
        let id = message_id(b"abc");
        assert_eq!(
            hex::encode(&id.0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn configs_validate() {
        let key = Keypair::generate_ed25519();
        Behaviour::new(&key).unwrap();
        topic_params().validate().unwrap();
    }
}
