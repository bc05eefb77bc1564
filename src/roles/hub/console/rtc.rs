//! The console's WebRTC task: one UDP socket, one `str0m::Rtc` per browser in a call, the hub
//! as an ICE-lite peer with one host candidate.
//!
//! - The kiosk's frames (our media header, then an Opus frame or an H.264 access unit) are
//!   written to the browser's tracks as they are: str0m packetises (RTP, FU-A), paces, and
//!   resends on NACK.
//! - The browser's frames come out as whole frames and go to the kiosk under our media header,
//!   on the kiosk's connection, as a QUIC agent's would.
//! - A PLI/FIR from the browser becomes a keyframe request to the kiosk; a frame missing from
//!   the browser asks the browser for a keyframe (at most once a second); the browser's
//!   bandwidth estimate for this leg becomes a rate hint to the kiosk, so that the kiosk sends
//!   no more than the narrower leg carries.
//!
//! Packets from addresses no session knows are dropped and counted: only a STUN request with
//! a session's credentials makes an address known (ICE), and DTLS follows from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaKind as RtcKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::super::peer::CoreCmd;
use super::super::relay::{FRAME_DEADLINE, Leg, LegSink};
use crate::console::web::MediaProbe;
use crate::edges::net::frame::{FrameSent, send_frame};
use crate::media::packet::{MediaHeader, MediaKind, decode as decode_header, is_copy};
use crate::media::video_reorder::{ReorderConfig, VideoReorder};
use crate::protocol::ClientMsg;
use crate::queue::PeerId;

/// Commands queued for the WebRTC task (media of every browser call goes through it).
pub const RTC_QUEUE: usize = 4096;
/// Browser calls at once.
const MAX_SESSIONS: usize = 256;
/// A keyframe asked of the browser at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_secs(1);
/// Rate hints to the kiosk at most this often, and only for a change of a tenth or more.
const HINT_EVERY: Duration = Duration::from_secs(1);
/// The browser's bandwidth estimate is for everything on this leg; video gets this share.
const VIDEO_SHARE: f64 = 0.85;

pub enum RtcCmd {
    /// The page's offer for its call; the answer (SDP) or why not.
    Offer {
        peer: PeerId,
        sdp: String,
        route: watch::Receiver<Option<Leg>>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A media packet from the kiosk for this browser.
    Media { peer: PeerId, packet: Bytes, video: bool },
    /// The kiosk needs a keyframe of the browser's video.
    KeyframeRequest { peer: PeerId },
    /// The call or the page ended: drop the session.
    Close { peer: PeerId },
    /// How far the browser's media got (the session's media watchdog asks).
    Probe { peer: PeerId, reply: oneshot::Sender<MediaProbe> },
}

struct Session {
    rtc: Rtc,
    route: watch::Receiver<Option<Leg>>,
    video: Option<Mid>,
    audio: Option<Mid>,
    seq_audio: u32,
    seq_video: u32,
    last_keyframe_ask: Option<Instant>,
    last_hint: Option<(Instant, u32)>,
    started: Instant,
    connected_logged: bool,
    /// The kiosk's frames come on one QUIC stream each and may complete out of order: they go
    /// into RTP in the kiosk's order (a frame given up costs a keyframe from the kiosk).
    reorder: VideoReorder<Bytes>,
    gaps: u64,
    /// Frames received from the browser, and of them timed by its sender reports.
    frames_in: u64,
    frames_timed: u64,
}

/// Counts of what the task dropped, logged at the end of each session.
#[derive(Default)]
struct Dropped {
    unknown_source: u64,
    unparsable: u64,
}

pub(super) async fn run(
    socket: UdpSocket,
    public: SocketAddr,
    mut rx: mpsc::Receiver<RtcCmd>,
    core: mpsc::Sender<CoreCmd>,
) {
    let socket = Arc::new(socket);
    // Datagrams are handed to str0m as sent to the host candidate's address, `public`: behind a
    // 1:1 NAT, or on a socket bound to 0.0.0.0, the socket's own address is not the one
    // browsers were told, and str0m pairs a request with the local candidate it was sent to.
    let local = public;
    let mut sessions: HashMap<PeerId, Session> = HashMap::new();
    let mut dropped = Dropped::default();
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = drive(&mut sessions, &socket, &core);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, source)) => receive(&mut sessions, &buf[..n], source, local, &mut dropped),
                Err(e) => debug!(error = %e, "console media socket"),
            },
            cmd = rx.recv() => match cmd {
                Some(cmd) => command(&mut sessions, cmd, public, &core),
                None => return,
            },
            _ = sleep => {}
        }
        let now = Instant::now();
        for (peer, s) in sessions.iter_mut() {
            s.reorder_due(*peer, &core);
            if s.rtc.is_alive()
                && let Err(e) = s.rtc.handle_input(Input::Timeout(now))
            {
                warn!(error = %e, "browser media session failed");
                s.rtc.disconnect();
            }
        }
        sessions.retain(|peer, s| {
            let alive = s.rtc.is_alive();
            if !alive {
                info!(peer, frames = s.frames_in, timed = s.frames_timed, "browser media session ended");
            }
            alive
        });
    }
}

fn receive(
    sessions: &mut HashMap<PeerId, Session>,
    data: &[u8],
    source: SocketAddr,
    local: SocketAddr,
    dropped: &mut Dropped,
) {
    let Ok(contents) = data.try_into() else {
        dropped.unparsable += 1;
        return;
    };
    let input = Input::Receive(
        Instant::now(),
        Receive { proto: Protocol::Udp, source, destination: local, contents },
    );
    let Some(s) = sessions.values_mut().find(|s| s.rtc.accepts(&input)) else {
        dropped.unknown_source += 1;
        if dropped.unknown_source.is_power_of_two() {
            debug!(%source, dropped = dropped.unknown_source, "console media from an unknown address dropped");
        }
        return;
    };
    if let Err(e) = s.rtc.handle_input(input) {
        warn!(%source, error = %e, "browser media session failed");
        s.rtc.disconnect();
    }
}

fn command(
    sessions: &mut HashMap<PeerId, Session>,
    cmd: RtcCmd,
    public: SocketAddr,
    core: &mpsc::Sender<CoreCmd>,
) {
    match cmd {
        RtcCmd::Offer { peer, sdp, route, reply } => {
            let answer = accept_offer(sessions, peer, &sdp, route, public);
            let _ = reply.send(answer);
        }
        RtcCmd::Media { peer, packet, video } => {
            if let Some(s) = sessions.get_mut(&peer) {
                if video {
                    s.video_in(peer, packet, core);
                } else {
                    s.write(&packet, false);
                }
            }
        }
        RtcCmd::KeyframeRequest { peer } => {
            if let Some(s) = sessions.get_mut(&peer) {
                s.ask_keyframe(Instant::now(), true);
            }
        }
        RtcCmd::Close { peer } => {
            if let Some(mut s) = sessions.remove(&peer) {
                info!(peer, frames = s.frames_in, timed = s.frames_timed, "browser media session closed");
                s.rtc.disconnect();
            }
        }
        RtcCmd::Probe { peer, reply } => {
            let probe = sessions.get(&peer).map_or_else(MediaProbe::default, |s| MediaProbe {
                offered: true,
                connected: s.connected_logged,
                frames: s.frames_in,
            });
            let _ = reply.send(probe);
        }
    }
}

fn accept_offer(
    sessions: &mut HashMap<PeerId, Session>,
    peer: PeerId,
    sdp: &str,
    route: watch::Receiver<Option<Leg>>,
    public: SocketAddr,
) -> Result<String, String> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("SDP offer: {e}"))?;
    if route.borrow().is_none() {
        return Err("no call in progress".into());
    }
    if !sessions.contains_key(&peer) && sessions.len() >= MAX_SESSIONS {
        return Err("too many browser calls".into());
    }
    let now = Instant::now();
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .enable_bwe(Some(str0m::bwe::Bitrate::kbps(1500)))
        .build(now);
    let candidate = Candidate::host(public, "udp").map_err(|e| format!("host candidate {public}: {e}"))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| format!("SDP offer refused: {e}"))?;
    let session = Session {
        rtc,
        route,
        video: None,
        audio: None,
        seq_audio: 0,
        seq_video: 0,
        last_keyframe_ask: None,
        last_hint: None,
        started: now,
        connected_logged: false,
        reorder: VideoReorder::new(ReorderConfig::default()),
        gaps: 0,
        frames_in: 0,
        frames_timed: 0,
    };
    if let Some(mut old) = sessions.insert(peer, session) {
        old.rtc.disconnect();
    }
    Ok(answer.to_sdp_string())
}

/// Polls every session until it waits; returns the earliest deadline.
fn drive(
    sessions: &mut HashMap<PeerId, Session>,
    socket: &UdpSocket,
    core: &mpsc::Sender<CoreCmd>,
) -> Instant {
    let mut deadline = Instant::now() + Duration::from_millis(100);
    for (peer, s) in sessions.iter_mut() {
        loop {
            if !s.rtc.is_alive() {
                break;
            }
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    deadline = deadline.min(t);
                    if let Some(at) = s.reorder.poll_timeout() {
                        let wait = Duration::from_micros(at.saturating_sub(unix_us()));
                        deadline = deadline.min(Instant::now() + wait);
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
                        debug!(error = %e, "console media not sent");
                    }
                }
                Ok(Output::Event(e)) => s.event(*peer, e, core),
                Err(e) => {
                    warn!(peer, error = %e, "browser media session failed");
                    s.rtc.disconnect();
                }
            }
        }
    }
    deadline
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Session {
    fn event(&mut self, peer: PeerId, e: Event, core: &mpsc::Sender<CoreCmd>) {
        match e {
            Event::Connected if !self.connected_logged => {
                self.connected_logged = true;
                info!(peer, setup_ms = self.started.elapsed().as_millis() as u64, "browser media connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                info!(peer, "browser media: ICE disconnected");
            }
            Event::MediaAdded(m) => match m.kind {
                RtcKind::Video => self.video = Some(m.mid),
                RtcKind::Audio => self.audio = Some(m.mid),
            },
            Event::MediaData(data) => {
                self.frames_in += 1;
                let video = Some(data.mid) == self.video;
                if video && !data.contiguous {
                    self.ask_keyframe(Instant::now(), false);
                }
                let now_us = unix_us();
                let captured_us = capture_time(&data, now_us);
                self.frames_timed += u64::from(captured_us != now_us);
                self.forward_to_kiosk(&data.data, video, captured_us);
            }
            Event::KeyframeRequest(_) => {
                if let Some(call_id) = self.call_id() {
                    let _ =
                        core.try_send(CoreCmd::Message { peer, msg: ClientMsg::KeyframeRequest { call_id } });
                }
            }
            Event::EgressBitrateEstimate(
                str0m::bwe::BweKind::Twcc { estimate, .. } | str0m::bwe::BweKind::Remb { estimate, .. },
            ) => {
                let bps = (estimate.as_f64() * VIDEO_SHARE) as u32;
                let now = Instant::now();
                let due = match self.last_hint {
                    None => true,
                    Some((at, last)) => now >= at + HINT_EVERY && bps.abs_diff(last) * 10 >= last,
                };
                if due && let Some(call_id) = self.call_id() {
                    self.last_hint = Some((now, bps));
                    let _ = core.try_send(CoreCmd::Message {
                        peer,
                        msg: ClientMsg::RateHint { call_id, bitrate_bps: bps },
                    });
                }
            }
            _ => {}
        }
    }

    fn call_id(&self) -> Option<crate::protocol::CallId> {
        self.route.borrow().as_ref().map(|l| l.call_id)
    }

    /// Asks the browser for a keyframe (PLI), at most once a second unless `force`d by a
    /// kiosk's request (its own requests are already spaced).
    fn ask_keyframe(&mut self, now: Instant, force: bool) {
        if !force && self.last_keyframe_ask.is_some_and(|t| now < t + KEYFRAME_EVERY) {
            return;
        }
        let Some(mid) = self.video else { return };
        if let Some(mut w) = self.rtc.writer(mid)
            && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
        {
            self.last_keyframe_ask = Some(now);
        }
    }

    /// A kiosk video frame, through the reorder stage.
    fn video_in(&mut self, peer: PeerId, packet: Bytes, core: &mpsc::Sender<CoreCmd>) {
        let Ok((header, _)) = decode_header(&packet) else { return };
        let ready = self.reorder.push(header.seq, header.keyframe, packet, unix_us());
        for frame in ready {
            self.write(&frame, true);
        }
        self.check_gaps(peer, core);
    }

    /// Frames whose wait for a missing one ended.
    fn reorder_due(&mut self, peer: PeerId, core: &mpsc::Sender<CoreCmd>) {
        let now = unix_us();
        if self.reorder.poll_timeout().is_some_and(|at| at <= now) {
            for frame in self.reorder.poll(now) {
                self.write(&frame, true);
            }
            self.check_gaps(peer, core);
        }
    }

    /// A frame given up leaves the browser's decoder without a reference: the kiosk sends a
    /// keyframe.
    fn check_gaps(&mut self, peer: PeerId, core: &mpsc::Sender<CoreCmd>) {
        let gaps = self.reorder.stats().gaps_given_up;
        if gaps > self.gaps {
            self.gaps = gaps;
            if let Some(call_id) = self.call_id() {
                let _ = core.try_send(CoreCmd::Message { peer, msg: ClientMsg::KeyframeRequest { call_id } });
            }
        }
    }

    /// A kiosk packet into the browser's track.
    fn write(&mut self, packet: &[u8], video: bool) {
        // Copies of audio frames are the kiosk's own loss recovery: RTP has NACK and Opus FEC.
        if is_copy(packet) {
            return;
        }
        let Ok((header, payload)) = decode_header(packet) else { return };
        let (mid, codec, clock) = match (header.kind, video) {
            (MediaKind::Video, true) => (self.video, Codec::H264, Frequency::NINETY_KHZ),
            (MediaKind::Audio, false) => (self.audio, Codec::Opus, Frequency::FORTY_EIGHT_KHZ),
            _ => return,
        };
        let Some(mid) = mid else { return };
        let Some(writer) = self.rtc.writer(mid) else { return };
        let Some(pt) = writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt()) else {
            return;
        };
        // Audio: RTP time from the frame's number, 20 ms (960 ticks) apart exactly, as the
        // browser's jitter buffer expects (capture times jitter by a millisecond or two).
        // Video: from the capture time (in u128: Unix microseconds times 90 000 overflow a u64).
        let ticks = match header.kind {
            MediaKind::Audio => u64::from(header.seq) * crate::media::FRAME_SAMPLES as u64,
            _ => (u128::from(header.captured_us) * u128::from(clock.get()) / 1_000_000) as u64,
        };
        let rtp_time = MediaTime::new(ticks, clock);
        if let Err(e) = writer.write(pt, Instant::now(), rtp_time, payload.to_vec()) {
            debug!(error = %e, "kiosk media not written to the browser");
        }
    }

    /// A browser frame to the kiosk, under our media header, as a QUIC agent sends it.
    fn forward_to_kiosk(&mut self, payload: &[u8], video: bool, captured_us: u64) {
        let Some(leg) = self.route.borrow().clone() else { return };
        let LegSink::Quic(conn) = &leg.to else { return };
        let kind = if video { MediaKind::Video } else { MediaKind::Audio };
        if payload.len() > kind.max_payload() {
            leg.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = if video { &mut self.seq_video } else { &mut self.seq_audio };
        *seq = seq.wrapping_add(1);
        let header = MediaHeader { kind, keyframe: video && is_keyframe(payload), seq: *seq, captured_us };
        let mut packet = Vec::with_capacity(payload.len() + 16);
        if header.encode(payload, &mut packet).is_err() {
            leg.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(tap) = &leg.tap {
            tap.offer(&packet);
        }
        let len = packet.len() as u64;
        if !video {
            match conn.send_datagram(packet.into()) {
                Ok(()) => {
                    leg.counters.audio_forwarded.fetch_add(1, Ordering::Relaxed);
                    leg.counters.bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(_) => {
                    leg.counters.audio_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let conn = conn.clone();
        let keyframe = header.keyframe;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + FRAME_DEADLINE;
            match send_frame(&conn, &packet, keyframe, deadline).await {
                FrameSent::Delivered | FrameSent::Late => {
                    leg.counters.video_forwarded.fetch_add(1, Ordering::Relaxed);
                    leg.counters.bytes.fetch_add(len, Ordering::Relaxed);
                }
                FrameSent::NotSent => {
                    leg.counters.video_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// A browser frame's capture time (Unix µs) on the browser's clock, from its RTP time and the
/// stream's last RTCP sender report (which maps RTP time to the sender's wall clock), as the
/// kiosk's playout and latency figures expect of every sender. Before the first report, or when
/// the browser's clock is more than [`CLOCK_TRUST`] from the hub's, its arrival time `now_us`.
fn capture_time(data: &str0m::media::MediaData, now_us: u64) -> u64 {
    let Some(sr) = &data.last_sender_info else { return now_us };
    let Ok(ntp) = sr.ntp_time.duration_since(UNIX_EPOCH) else { return now_us };
    map_rtp_time(data.time.numer(), sr.rtp_time.numer(), data.time.frequency().get(), ntp.as_micros() as u64)
        .filter(|&t| t.abs_diff(now_us) < CLOCK_TRUST.as_micros() as u64)
        .unwrap_or(now_us)
}

/// A browser whose clock is further than this from the hub's is not believed: its frames carry
/// their arrival time.
const CLOCK_TRUST: Duration = Duration::from_secs(5);

/// The wall-clock time of RTP time `rtp`, given that `sr_rtp` was at `sr_us`: the RTP difference
/// is taken modulo 2^32 (RTP time wraps), either way.
fn map_rtp_time(rtp: u64, sr_rtp: u64, clock_hz: u32, sr_us: u64) -> Option<u64> {
    if clock_hz == 0 {
        return None;
    }
    let ticks = i64::from((rtp as u32).wrapping_sub(sr_rtp as u32) as i32);
    let us = ticks * 1_000_000 / i64::from(clock_hz);
    sr_us.checked_add_signed(us)
}

/// Whether an Annex B access unit holds an IDR slice (NAL type 5).
fn is_keyframe(au: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            if au[i + 3] & 0x1f == 5 {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{is_keyframe, map_rtp_time};

    #[test]
    fn rtp_times_map_to_the_senders_wall_clock_across_the_wrap() {
        let sr_us = 1_800_000_000_000_000;
        assert_eq!(map_rtp_time(90_000 + 9_000, 90_000, 90_000, sr_us), Some(sr_us + 100_000));
        assert_eq!(
            map_rtp_time(90_000 - 9_000, 90_000, 90_000, sr_us),
            Some(sr_us - 100_000),
            "before the report"
        );
        // RTP time wrapped between the report and the frame.
        assert_eq!(map_rtp_time(4_800, u64::from(u32::MAX) - 4_799, 48_000, sr_us), Some(sr_us + 200_000));
        assert_eq!(map_rtp_time(1, 0, 0, sr_us), None, "no clock");
        assert_eq!(map_rtp_time(0, 90_000, 90_000, 0), None, "before 1970");
    }

    #[test]
    fn keyframes_are_told_by_their_idr_slice() {
        assert!(is_keyframe(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9]));
        assert!(!is_keyframe(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0, 0, 1]));
        assert!(!is_keyframe(&[0x65, 0x65, 0x65]), "no start code, no NAL");
    }
}
