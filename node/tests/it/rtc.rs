//! A synthetic browser for the node's audio server (str0m, the node's own WebRTC crate, on a
//! UDP socket of its own): it publishes tagged Opus-sized packets every 20 ms when told to
//! talk, and records when each packet it receives arrived, from whom (the tag), and on which
//! of its slots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// What a client heard: (arrival, the sender's tag, the sender's sequence number).
pub type Heard = Arc<Mutex<Vec<(Instant, u8, u64)>>>;

/// The slot (index of its receiving m-line) each tag was last heard on.
type Slots = Arc<Mutex<HashMap<u8, usize>>>;

/// A running synthetic participant.
pub struct RtcClient {
    pub heard: Heard,
    slots: Slots,
    talk: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// A client whose offer is out.
pub struct Offering {
    rtc: Rtc,
    pending: SdpPendingOffer,
    sock: std::net::UdpSocket,
    publish: Option<Mid>,
    /// The receiving m-lines, in slot order.
    recv: Vec<Mid>,
    tag: u8,
}

impl Offering {
    /// A client on loopback that publishes (tag ≠ 0) and listens on `slots` slots: it and
    /// its SDP offer.
    pub fn new(tag: u8, slots: usize) -> (Offering, String) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        let publish = (tag != 0).then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let recv = (0..slots).map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None)).collect();
        let (offer, pending) = api.apply().unwrap();
        (Offering { rtc, pending, sock, publish, recv, tag }, offer.to_sdp_string())
    }

    /// Completes the connection with the node's answer and runs it.
    pub fn start(mut self, answer: &str) -> RtcClient {
        self.rtc.sdp_api().accept_answer(self.pending, SdpAnswer::from_sdp_string(answer).unwrap()).unwrap();
        let heard: Heard = Arc::default();
        let slots: Slots = Arc::default();
        let talk = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (h, t, s) = (heard.clone(), talk.clone(), sent.clone());
        let sock = UdpSocket::from_std(self.sock).unwrap();
        let task = tokio::spawn(run(self.rtc, sock, self.publish, self.recv, self.tag, h, slots.clone(), t, s));
        RtcClient { heard, slots, talk, sent, task }
    }
}

impl RtcClient {
    pub fn talk(&self, on: bool) {
        self.talk.store(on, Ordering::Relaxed);
    }

    /// Packets heard from `tag` so far.
    pub fn heard_from(&self, tag: u8) -> usize {
        self.heard.lock().unwrap().iter().filter(|(_, t, _)| *t == tag).count()
    }

    /// The slot `tag` was last heard on.
    pub fn slot_of(&self, tag: u8) -> Option<usize> {
        self.slots.lock().unwrap().get(&tag).copied()
    }

    /// The longest silence between two packets of `tag` heard after `since`.
    pub fn longest_gap(&self, tag: u8, since: Instant) -> Duration {
        let h = self.heard.lock().unwrap();
        let times: Vec<Instant> = h.iter().filter(|(at, t, _)| *t == tag && *at >= since).map(|(at, _, _)| *at).collect();
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::MAX)
    }
}

impl Drop for RtcClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(mut rtc: Rtc, sock: UdpSocket, publish: Option<Mid>, recv: Vec<Mid>, tag: u8, heard: Heard, slots: Slots, talk: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let local: SocketAddr = sock.local_addr().unwrap();
    let pt = rtc.codec_config().find(|c| c.spec().codec == Codec::Opus).map(|c| c.pt());
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut seq = 1u64;
    loop {
        let mut timeout = Instant::now() + Duration::from_millis(100);
        while let Ok(o) = rtc.poll_output() {
            match o {
                Output::Timeout(t) => {
                    timeout = t;
                    break;
                }
                Output::Transmit(t) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::RtpPacket(p)) if p.payload.len() >= 9 => {
                    let n = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    heard.lock().unwrap().push((Instant::now(), p.payload[8], n));
                    let mid = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid());
                    if let Some(slot) = mid.and_then(|m| recv.iter().position(|r| *r == m)) {
                        slots.lock().unwrap().insert(p.payload[8], slot);
                    }
                }
                Output::Event(_) => {}
            }
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { return };
                let Ok(contents) = (&buf[..n]).try_into() else { continue };
                let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents }));
            }
            () = tokio::time::sleep_until(timeout.max(Instant::now()).into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
            _ = tick.tick() => {
                if let (true, Some(mid), Some(pt)) = (talk.load(Ordering::Relaxed), publish, pt) {
                    // 8 bytes of sequence, the tag, then filler: an Opus-sized frame.
                    let mut payload = vec![tag; 80];
                    payload[..8].copy_from_slice(&seq.to_be_bytes());
                    let ext = ExtensionValues { audio_level: Some(-25), voice_activity: Some(true), ..Default::default() };
                    let w = RtpWrite::new(pt, SeqNo::from(seq), (seq as u32).wrapping_mul(960), Instant::now(), payload).ext_vals(ext);
                    if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                        tx.write_rtp(w);
                        seq += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
