//! The pulling end of a cascade link: this node's SFU receives another node's speakers in
//! one room over one WebRTC connection (str0m, a full ICE agent in the controlling role
//! towards the other node's ICE-lite SFU port; DTLS-SRTP; RTP mode, so the frames arrive
//! exactly as the speakers' browsers encrypted them).
//!
//! The offer also opens a data channel ([`names::LABEL`]) on which the other node says who
//! each slot carries; the link passes those tables on, at most one per [`TABLE_EVERY`] (the
//! latest wins), and the driver checks them.
//!
//! Each link has a UDP socket of its own (an ephemeral port): the other node's SFU tells
//! its connections apart by address, so two links from here to there (two rooms) must not
//! share one. The link runs as a task and hands what it receives to the SFU driver.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpPacket};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::driver::SfuError;
use super::forward::PeerId;
use super::names;

/// Packets handed to the driver in one message, at most.
const BATCH: usize = 64;
/// The longest wait between STUN checks of a link (also how often a live one is checked).
const LINK_MAX_RTO: Duration = Duration::from_secs(1);
/// STUN tries before a link's other end counts as gone.
const LINK_RETRANSMITS: usize = 5;
/// A link that is not connected this long after it started has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Slot tables are handed to the driver at most this often (a node that sends a flood of
/// them makes this node re-tell its pages no more often than that).
pub(crate) const TABLE_EVERY: Duration = Duration::from_millis(100);

/// What a running link tells the driver.
#[derive(Debug)]
pub(crate) enum LinkNews {
    /// DTLS is up: media can flow.
    Up(PeerId),
    /// Audio packets of the other node's speakers, each with the slot it came on (the index
    /// of its m-line in the offer).
    Audio(PeerId, Vec<(usize, RtpPacket)>),
    /// The other node's latest table of who each slot carries, unchecked.
    Table(PeerId, Vec<u8>),
    /// The connection ended (ICE lost, DTLS failed, or never connected).
    Down(PeerId),
}

/// A link whose offer is out and whose answer is awaited.
pub(crate) struct Pending {
    rtc: Rtc,
    sock: std::net::UdpSocket,
    local: SocketAddr,
    offer: SdpPendingOffer,
    /// The audio m-lines, in slot order.
    mids: Vec<Mid>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("local", &self.local).finish_non_exhaustive()
    }
}

/// A new link on `bind` that will receive `slots` streams: the link and its SDP offer.
pub(crate) fn offer(bind: IpAddr, slots: usize, cert: DtlsCert) -> Result<(Pending, String), SfuError> {
    let io = |e: std::io::Error| SfuError::Link(e.to_string());
    let sock = std::net::UdpSocket::bind(SocketAddr::new(bind, 0)).map_err(io)?;
    sock.set_nonblocking(true).map_err(io)?;
    let local = sock.local_addr().map_err(io)?;
    // Only the header extensions a link uses (the speakers' levels, and the m-line each
    // stream belongs to): each m-line repeats them, and a link of 8 slots plus its data
    // channel must keep its offer under the 8192 bytes of `cascade.sdp`.
    let mut cfg = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        .set_dtls_cert(cert);
    // A node that died or was cut off drops out within about 5 s (str0m's defaults, made
    // for browsers, take about 20 s): consent checks every second, 5 tries.
    cfg.set_max_stun_rto(LINK_MAX_RTO);
    cfg.set_max_stun_retransmits(LINK_RETRANSMITS);
    let mut rtc = cfg.build(Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| SfuError::Link(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let mids = (0..slots).map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None)).collect();
    api.add_channel(names::LABEL.into());
    let (sdp, pending) = api.apply().ok_or_else(|| SfuError::Link("no offer".into()))?;
    Ok((Pending { rtc, sock, local, offer: pending, mids }, sdp.to_sdp_string()))
}

impl Pending {
    /// Completes the link with the other node's answer and runs it until it ends or
    /// `stop` fires; news goes to `news`.
    pub(crate) fn start(
        mut self,
        id: PeerId,
        answer: &str,
        news: mpsc::Sender<LinkNews>,
    ) -> Result<tokio::task::AbortHandle, SfuError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(self.offer, answer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let sock = UdpSocket::from_std(self.sock).map_err(|e| SfuError::Link(e.to_string()))?;
        let task = tokio::spawn(run(id, self.rtc, sock, self.local, self.mids, news));
        Ok(task.abort_handle())
    }
}

async fn run(id: PeerId, mut rtc: Rtc, sock: UdpSocket, local: SocketAddr, mids: Vec<Mid>, news: mpsc::Sender<LinkNews>) {
    let started = Instant::now();
    // The latest table received and not yet handed over, and when the next may go.
    let mut table: Option<Vec<u8>> = None;
    let mut table_at = started;
    let mut up = false;
    let mut buf = vec![0u8; 2048];
    let mut audio = Vec::new();
    let mut timeout = Instant::now();
    loop {
        // Poll until str0m waits.
        let mut dead = false;
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    up = true;
                    let _ = news.send(LinkNews::Up(id)).await;
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    // Which slot: the m-line of the stream it came on.
                    let mid = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid());
                    match mid.and_then(|m| mids.iter().position(|x| *x == m)) {
                        Some(slot) => audio.push((slot, p)),
                        None => metrics::counter!("voicechat_sfu_cascade_dropped_total").increment(1),
                    }
                }
                // Checked by the driver (str0m has already read the whole message).
                Ok(Output::Event(Event::ChannelData(d))) => table = Some(d.data),
                Ok(Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected))) => dead = true,
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    tracing::debug!(?id, error = %e, "cascade link failed");
                    dead = true;
                    break;
                }
            }
            if audio.len() >= BATCH {
                hand_over(&news, id, &mut audio);
            }
        }
        hand_over(&news, id, &mut audio);
        if table.is_some() && Instant::now() >= table_at {
            if let Some(t) = table.take() {
                let _ = news.send(LinkNews::Table(id, t)).await;
            }
            table_at = Instant::now() + TABLE_EVERY;
        }
        if dead || !rtc.is_alive() || (!up && started.elapsed() > CONNECT_TIMEOUT) {
            let _ = news.send(LinkNews::Down(id)).await;
            return;
        }
        let wake = if table.is_some() { timeout.min(table_at) } else { timeout };
        let wait = tokio::time::sleep_until(wake.max(Instant::now()).into());
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = (&buf[..n]).try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                if rtc.handle_input(input).is_err() {
                    rtc.disconnect();
                }
            }
            () = wait => {
                if rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                    rtc.disconnect();
                }
            }
        }
    }
}

/// Audio is dropped rather than queued without bound when the driver is behind.
fn hand_over(news: &mpsc::Sender<LinkNews>, id: PeerId, audio: &mut Vec<(usize, RtpPacket)>) {
    if audio.is_empty() {
        return;
    }
    if news.try_send(LinkNews::Audio(id, std::mem::take(audio))).is_err() {
        metrics::counter!("voicechat_sfu_cascade_dropped_total").increment(1);
    }
}
