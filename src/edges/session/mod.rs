//! The media of one call, on one side (kiosk or agent): capture → encode → QUIC, and
//! QUIC → jitter buffer → decode → play. Started when a call connects, stopped when it ends.
//!
//! ```text
//! camera thread ─► PictureQueue ─► video-send thread (H.264) ─┐           ┌─► uni stream per frame
//! mic thread ─────────────────────► (Opus in the mic thread) ─┼─► net task ┤
//!                                                             │           └─► datagram per 20 ms
//! datagrams ─► AudioJitterBuffer ◄── audio-play thread (Opus/PLC ─► speaker, every 20 ms)
//! uni streams ─► video-recv thread (VideoPlayout, H.264 ─► screen, or the kiosk's display, at render time)
//! ```
//! Every queue is bounded and drops old media when a consumer is slow; the threads stop when
//! the session is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use quinn::Connection;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::edges::config::{CameraBackend, CaptureBackend, MediaSections, PlaybackBackend, ScreenBackend};
use crate::edges::devices::audio::alsa::{AlsaMicrophone, AlsaSpeaker, PcmConfig};
use crate::edges::devices::audio::{Microphone, Speaker, SyntheticMicrophone, WavSpeaker};
use crate::edges::devices::camera::{self, Camera, CameraConfig, CameraSwitch, SyntheticCamera, V4l2Camera};
use crate::edges::devices::screen::drm::DrmScreen;
use crate::edges::devices::screen::fbdev::FbdevScreen;
use crate::edges::devices::screen::file::Y4mScreen;
use crate::edges::devices::screen::{self, Screen};
use crate::edges::devices::{Opener, unix_micros_now};
use crate::edges::display::{self, Display};
use crate::edges::net::frame::{FrameSent, send_frame};
use crate::media::audio_jitter::{AudioJitterBuffer, JitterConfig, Playout};
use crate::media::codec::{
    AudioDecoder, AudioEncoder, AudioSettings, VideoDecoder, VideoEncoder, VideoSettings,
};
use crate::media::ladder::VideoLadder;
use crate::media::loss::{LossMeter, LossPolicy};
use crate::media::packet::{self, MediaHeader, MediaKind};
use crate::media::rate::ReceiverRate;
use crate::media::stats::{LatencyHistogram, Quantiles};
use crate::media::video_playout::{FrameAction, VideoPlayout};
use crate::media::video_reorder::{ReorderConfig, VideoReorder};
use crate::media::{DRAIN, FRAME_SAMPLES, FRAME_US, Picture, UnixMicros, stretch};
use crate::protocol::{CallId, ClientMsg};

/// The devices one side of a call uses. `None`: this side has no such device.
#[derive(Clone, Default)]
pub struct MediaDevices {
    pub camera: Option<Opener<dyn Camera>>,
    pub microphone: Option<Opener<dyn Microphone>>,
    pub speaker: Option<Opener<dyn Speaker>>,
    /// A screen opened for each call, showing the other side's pictures (the agent).
    pub screen: Option<Opener<dyn Screen>>,
    /// The kiosk's display thread, which owns the screen for the daemon's whole life: the
    /// other side's pictures and small copies of this side's go there (instead of `screen`).
    pub display: Option<Display>,
}

#[derive(Debug, Clone, Default)]
pub struct MediaOptions {
    pub video: VideoSettings,
    pub audio: AudioSettings,
    pub jitter: JitterConfig,
}

/// Pictures waiting for the encoder; more means the encoder is behind: drop the oldest.
const CAMERA_QUEUE: usize = 2;
/// Encoded frames waiting for the network (a quarter second at 30 fps).
const VIDEO_OUT_QUEUE: usize = 8;
/// Encoded audio frames waiting for the network (one second).
const AUDIO_OUT_QUEUE: usize = 50 * (1 + MAX_AUDIO_COPIES);
/// Most copies of earlier audio frames sent after each new one.
const MAX_AUDIO_COPIES: usize = 2;
/// An audio frame for the send task: header, Opus packet, and whether it is a copy.
type AudioOut = (MediaHeader, Vec<u8>, bool);
/// Received video frames waiting for the decoder.
const VIDEO_IN_QUEUE: usize = 32;
/// A video frame not delivered within this time is abandoned: a newer one matters more.
const VIDEO_SEND_DEADLINE: Duration = Duration::from_millis(500);
/// Most frame numbers kept for verification (an hour at 30 fps would be 108 000).
const MAX_FRAME_LOG: usize = 20_000;
/// Played audio kept for measuring its pitch (2 s).
const PLAYED_AUDIO_KEPT: usize = 96_000;

/// Figures of one side of a call. Sender figures describe what this side sent; receiver
/// figures what it played.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaStats {
    pub audio_frames_sent: u64,
    pub audio_frames_played: u64,
    pub audio_frames_concealed: u64,
    pub audio_frames_recovered_fec: u64,
    /// Of the frames played, those played time-compressed to bring the jitter buffer's delay
    /// down (media::stretch).
    pub audio_frames_accelerated: u64,
    /// Copies of earlier audio frames sent as redundancy (media::loss).
    pub audio_copies_sent: u64,
    /// Steps of the video ladder (media::ladder) taken, and camera frames not sent because
    /// the path was below the video floor (audio only).
    pub video_rung_changes: u64,
    pub video_frames_not_sent_floor: u64,
    pub video_frames_captured: u64,
    pub video_frames_capture_dropped: u64,
    pub video_frames_sent: u64,
    pub video_frames_send_dropped: u64,
    pub video_frames_received: u64,
    pub video_frames_decoded: u64,
    pub video_frames_displayed: u64,
    pub video_frames_verified: u64,
    pub keyframe_requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub audio_latency_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    /// How long the media ran, in seconds.
    pub duration_s: f64,
    /// What this side could not use (camera missing, ...).
    pub problems: Vec<String>,
    #[serde(skip)]
    pub sent_frame_numbers: Vec<u32>,
    /// The frame numbers read from every picture decoded, in the order decoded.
    #[serde(skip)]
    pub decoded_frame_numbers: Vec<u32>,
    /// The frame numbers of the pictures shown (the playout skips a picture that is late).
    #[serde(skip)]
    pub verified_frame_numbers: Vec<u32>,
    /// When each picture was shown (for freezes and recovery times), and its latency from
    /// capture to display in milliseconds (same index).
    #[serde(skip)]
    pub display_times_us: Vec<UnixMicros>,
    #[serde(skip)]
    pub display_latency_ms: Vec<u32>,
    #[serde(skip)]
    pub played_audio: VecDeque<i16>,
    #[serde(skip)]
    pub started_us: UnixMicros,
    #[serde(skip)]
    pub audio_latency: LatencyHistogram,
    #[serde(skip)]
    pub video_latency: LatencyHistogram,
    /// Video latency of the pictures shown after the first 5 s of the call (once rate control
    /// and the ladder have adapted to the path).
    #[serde(skip)]
    pub video_latency_settled: LatencyHistogram,
}

impl MediaStats {
    /// Fills the quantiles from the histograms.
    pub fn finish(&mut self) {
        self.audio_latency_ms = self.audio_latency.quantiles();
        self.video_latency_ms = self.video_latency.quantiles();
    }
}

type Shared = Arc<Mutex<MediaStats>>;

/// Locks a mutex shared between media tasks and threads; one that panicked holding it left
/// plain data (counters, buffers) that is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn with<R>(stats: &Shared, f: impl FnOnce(&mut MediaStats) -> R) -> R {
    let mut guard = lock(stats);
    f(&mut guard)
}

/// One side of a call's media. Dropping it stops everything.
pub struct MediaSession {
    pub call_id: CallId,
    /// Stops capture and sending (set first when a call ends).
    stop_send: Arc<AtomicBool>,
    /// Stops everything.
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    /// The most the other side can receive (bit/s), from its rate hints.
    remote_cap: Arc<RemoteCap>,
    /// The video bitrate the path can take now (bit/s), set by the rate task and by the
    /// receiver's hints, read by the encoder thread.
    video_rate: Arc<AtomicU64>,
    /// Redundancy and FEC tuning from the other side's loss reports.
    loss_policy: Arc<Mutex<LossPolicy>>,
    stats: Shared,
    threads: Vec<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MediaSession {
    /// Starts sending and receiving on `conn`. `keyframe_requests` receives the call id each
    /// time this side needs a keyframe from the other (the driver sends it to the hub).
    pub fn start(
        conn: Connection,
        call_id: CallId,
        devices: &MediaDevices,
        opts: MediaOptions,
        feedback: mpsc::Sender<ClientMsg>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe = Arc::new(AtomicBool::new(false));
        let stats: Shared =
            Arc::new(Mutex::new(MediaStats { started_us: unix_micros_now(), ..Default::default() }));
        let stop_send = Arc::new(AtomicBool::new(false));
        let remote_cap = Arc::new(RemoteCap { bps: AtomicU64::new(u64::MAX), hints: AtomicU64::new(0) });
        let loss_policy = Arc::new(Mutex::new(LossPolicy::new(opts.audio.expected_loss_pct)));
        let mut s = Self {
            call_id,
            stop_send,
            stop,
            keyframe,
            remote_cap,
            video_rate: Arc::new(AtomicU64::new(start_rate(opts.video.bitrate_bps))),
            loss_policy,
            stats,
            threads: Vec::new(),
            tasks: Vec::new(),
        };
        let (audio_tx, audio_rx) = mpsc::channel::<AudioOut>(AUDIO_OUT_QUEUE);
        let (video_tx, video_rx) = mpsc::channel::<(MediaHeader, Vec<u8>)>(VIDEO_OUT_QUEUE);
        let audio_delay = Arc::new(AtomicU64::new(0));
        let video_rate = s.video_rate.clone();
        let jitter = Arc::new(Mutex::new(AudioJitterBuffer::new(opts.jitter.clone())));

        // Sending.
        match devices.camera.as_ref().map(|open| open()) {
            Some(Ok(cam)) => {
                s.spawn_video_send(cam, opts.video, video_rate.clone(), video_tx, devices.display.clone());
                s.tasks.push(tokio::spawn(rate_task(
                    opts.video.bitrate_bps,
                    video_rate.clone(),
                    s.remote_cap.clone(),
                )));
            }
            Some(Err(e)) => s.problem(format!("camera: {e}")),
            None => {}
        }
        match devices.microphone.as_ref().map(|open| open()) {
            Some(Ok(mic)) => s.spawn_audio_send(mic, opts.audio, audio_tx),
            Some(Err(e)) => s.problem(format!("microphone: {e}")),
            None => {}
        }
        s.tasks.push(tokio::spawn(send_task(conn.clone(), audio_rx, video_rx, s.stats.clone())));

        // Receiving.
        let speaker = match devices.speaker.as_ref().map(|open| open()) {
            Some(Ok(sp)) => Some(sp),
            Some(Err(e)) => {
                s.problem(format!("speaker: {e}"));
                None
            }
            None => None,
        };
        s.spawn_audio_play(speaker, jitter.clone(), audio_delay.clone());
        let screen = match devices.screen.as_ref().map(|open| open()) {
            Some(Ok(sc)) => Some(sc),
            Some(Err(e)) => {
                s.problem(format!("screen: {e}"));
                None
            }
            None => None,
        };
        let (frames_tx, frames_rx) = std_mpsc::sync_channel(VIDEO_IN_QUEUE);
        s.spawn_video_recv(screen, devices.display.clone(), frames_rx, audio_delay, feedback.clone());
        // The rate the path from the other side takes, from its audio and video (media::rate).
        let receiver_rate = Arc::new(Mutex::new(ReceiverRate::new()));
        s.tasks.push(tokio::spawn(recv_datagrams(
            conn.clone(),
            jitter,
            receiver_rate.clone(),
            s.stats.clone(),
            call_id,
            feedback.clone(),
        )));
        s.tasks.push(tokio::spawn(recv_streams(
            conn,
            frames_tx,
            receiver_rate,
            s.stats.clone(),
            call_id,
            feedback,
        )));
        s
    }

    /// The other side receives our video late: send at most `bps`.
    pub fn set_rate_hint(&self, bps: u32) {
        self.remote_cap.bps.store(u64::from(bps), Ordering::Relaxed);
        self.remote_cap.hints.fetch_add(1, Ordering::Relaxed);
        // A cut takes effect at the encoder's next frame, not at the rate task's next tick.
        self.video_rate.fetch_min(u64::from(bps).max(MIN_VIDEO_BPS), Ordering::Relaxed);
    }

    /// The other side loses this share of our audio frames (percent).
    pub fn set_remote_loss(&self, loss_pct: u8) {
        lock(&self.loss_policy).report(loss_pct, unix_micros_now());
    }

    /// The other side asked for a keyframe.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Devices that failed during the call so far ("camera: ..."), cheaper than [`Self::stats`].
    pub fn problems(&self) -> Vec<String> {
        with(&self.stats, |s| s.problems.clone())
    }

    /// A snapshot of the figures so far.
    pub fn stats(&self) -> MediaStats {
        let mut s = with(&self.stats, |s| s.clone());
        s.duration_s = unix_micros_now().saturating_sub(s.started_us) as f64 / 1e6;
        s.finish();
        s
    }

    /// Stops all threads and tasks at once and returns the final figures.
    pub fn stop(mut self) -> MediaStats {
        self.shutdown();
        self.stats()
    }

    /// Ends the call's media gracefully: capture stops now; what is already on its way
    /// (about a tenth of a second of sound and pictures) is still received and played for
    /// [`DRAIN`], then everything stops. Returns the final figures.
    pub async fn finish(mut self) -> MediaStats {
        self.stop_send.store(true, Ordering::Relaxed);
        tokio::time::sleep(DRAIN).await;
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop_send.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn problem(&mut self, what: String) {
        warn!(call_id = self.call_id, "{what}");
        with(&self.stats, |s| s.problems.push(what));
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name.into()).spawn(f) {
            Ok(t) => self.threads.push(t),
            Err(e) => self.problem(format!("cannot start the {name} thread: {e}")),
        }
    }

    fn spawn_video_send(
        &mut self,
        cam: Box<dyn Camera>,
        settings: VideoSettings,
        rate: Arc<AtomicU64>,
        out: mpsc::Sender<(MediaHeader, Vec<u8>)>,
        display: Option<Display>,
    ) {
        let (stop, keyframe, stats) = (self.stop_send.clone(), self.keyframe.clone(), self.stats.clone());
        let call_id = self.call_id;
        let (pictures, cam_stats) = match camera::spawn_camera(cam, CAMERA_QUEUE) {
            Ok(q) => q,
            Err(e) => {
                self.problem(format!("cannot start the camera thread: {e}"));
                return;
            }
        };
        self.spawn("video-send", move || {
            let mut enc = match VideoEncoder::new(settings) {
                Ok(e) => e,
                Err(e) => {
                    with(&stats, |s| s.problems.push(format!("video encoder: {e}")));
                    return;
                }
            };
            let mut seq: u32 = 0;
            let mut ladder = VideoLadder::new(
                settings.width,
                settings.height,
                settings.fps,
                u64::from(settings.bitrate_bps),
            );
            let mut last_sent_us: Option<UnixMicros> = None;
            while !stop.load(Ordering::Relaxed) {
                let pic = match pictures.pop_blocking(Duration::from_millis(100)) {
                    Ok(Some(pic)) => pic,
                    // Nothing within the timeout: a stalled camera may come back.
                    Ok(None) => continue,
                    Err(_) => {
                        // The camera thread ended: the call goes on without video.
                        let e = cam_stats.error().unwrap_or_else(|| "stopped".into());
                        warn!(call_id, error = %e, "camera lost; the call goes on with audio");
                        with(&stats, |s| s.problems.push(format!("camera: {e}")));
                        break;
                    }
                };
                // The sender's frame number, read from the camera's own picture.
                let stamp = camera::synthetic::read_stamp(&pic).map(|(n, _)| n);
                if let Some(d) = &display {
                    d.show_own(display::shrink(&pic, display::OWN_PICTURE_WIDTH));
                }
                let want = rate.load(Ordering::Relaxed).min(u64::from(u32::MAX)) as u32;
                // The ladder: bitrate, then frame rate, then size, then audio only.
                let before = ladder.rung().index;
                let rung = ladder.update(u64::from(want), pic.captured_us);
                if rung.index != before {
                    info!(
                        call_id,
                        rung = rung.index,
                        width = rung.width,
                        height = rung.height,
                        fps = rung.fps,
                        target_kbps = want / 1000,
                        "video adapts to the path"
                    );
                    with(&stats, |s| s.video_rung_changes += 1);
                    // Only a new picture size needs a new encoder (and its keyframe, which on a
                    // narrow path is itself a burst): a new frame rate is frames skipped below.
                    let resized = (rung.width, rung.height) != (enc.settings().width, enc.settings().height);
                    if rung.video && resized {
                        let s = VideoSettings {
                            width: rung.width,
                            height: rung.height,
                            fps: rung.fps,
                            bitrate_bps: want,
                            ..settings
                        };
                        match VideoEncoder::new(s) {
                            Ok(e) => enc = e,
                            Err(e) => debug!(error = %e, "encoder not changed"),
                        }
                    }
                }
                if !rung.video {
                    with(&stats, |s| s.video_frames_not_sent_floor += 1);
                    continue;
                }
                // A lower frame rate: skip the camera's frames that come too soon.
                if rung.fps < settings.fps {
                    let interval_us = (1e6 / f64::from(rung.fps.max(1.0)) * 0.9) as u64;
                    if last_sent_us.is_some_and(|t| pic.captured_us < t + interval_us) {
                        continue;
                    }
                }
                last_sent_us = Some(pic.captured_us);
                let pic = fit(pic, enc.settings().width, enc.settings().height);
                // The encoder spends its bitrate over the frame rate it was made for; it gets
                // the rung's frame rate, so each frame may take proportionally more (or less).
                let want =
                    (f64::from(want) * f64::from(enc.settings().fps) / f64::from(rung.fps.max(1.0))) as u32;
                let have = enc.settings().bitrate_bps;
                if want.abs_diff(have) > have / 20
                    && let Err(e) = enc.set_bitrate(want)
                {
                    debug!(error = %e, "bitrate not changed");
                }
                if keyframe.swap(false, Ordering::Relaxed) {
                    enc.request_keyframe();
                }
                let frame = match enc.encode(&pic) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(e) => {
                        debug!(error = %e, "encode failed");
                        continue;
                    }
                };
                let header = MediaHeader {
                    kind: MediaKind::Video,
                    keyframe: frame.keyframe,
                    seq,
                    captured_us: pic.captured_us,
                };
                seq = seq.wrapping_add(1);
                let sent = out.try_send((header, frame.data)).is_ok();
                with(&stats, |s| {
                    s.video_frames_captured = cam_stats.delivered();
                    s.video_frames_capture_dropped = cam_stats.dropped();
                    if sent {
                        s.video_frames_sent += 1;
                        if let Some(n) = stamp
                            && s.sent_frame_numbers.len() < MAX_FRAME_LOG
                        {
                            s.sent_frame_numbers.push(n);
                        }
                    } else {
                        s.video_frames_send_dropped += 1;
                    }
                });
                if !sent {
                    // The receiver will miss this frame; start the next group with a keyframe.
                    enc.request_keyframe();
                }
            }
        });
    }

    fn spawn_audio_send(
        &mut self,
        mut mic: Box<dyn Microphone>,
        settings: AudioSettings,
        out: mpsc::Sender<AudioOut>,
    ) {
        let (stop, stats) = (self.stop_send.clone(), self.stats.clone());
        let policy = self.loss_policy.clone();
        self.spawn("audio-send", move || {
            let mut enc = match AudioEncoder::new(settings) {
                Ok(e) => e,
                Err(e) => {
                    with(&stats, |s| s.problems.push(format!("audio encoder: {e}")));
                    return;
                }
            };
            let mut seq: u32 = 0;
            // The last frames sent, newest first, for the copies that follow each new frame.
            let mut recent: VecDeque<(MediaHeader, Vec<u8>)> = VecDeque::with_capacity(MAX_AUDIO_COPIES);
            let mut expected_loss = settings.expected_loss_pct;
            while !stop.load(Ordering::Relaxed) {
                let (copies, want_loss) = {
                    let p = lock(&policy);
                    (usize::from(p.copies()).min(MAX_AUDIO_COPIES), p.expected_loss_pct())
                };
                if want_loss != expected_loss && enc.set_expected_loss(want_loss).is_ok() {
                    expected_loss = want_loss;
                }
                let chunk = match mic.next_chunk() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "microphone lost; the call goes on with video");
                        with(&stats, |s| s.problems.push(format!("microphone: {e}")));
                        return;
                    }
                };
                let Ok(payload) = enc.encode(&chunk.samples) else { continue };
                let header = MediaHeader {
                    kind: MediaKind::Audio,
                    keyframe: false,
                    seq,
                    captured_us: chunk.captured_us,
                };
                seq = seq.wrapping_add(1);
                if out.try_send((header, payload.clone(), false)).is_ok() {
                    with(&stats, |s| s.audio_frames_sent += 1);
                }
                // Redundancy: the previous frames again, after this one (media::loss).
                for (h, p) in recent.iter().take(copies) {
                    if out.try_send((*h, p.clone(), true)).is_ok() {
                        with(&stats, |s| s.audio_copies_sent += 1);
                    }
                }
                recent.push_front((header, payload));
                recent.truncate(MAX_AUDIO_COPIES);
            }
        });
    }

    fn spawn_audio_play(
        &mut self,
        mut speaker: Option<Box<dyn Speaker>>,
        jitter: Arc<Mutex<AudioJitterBuffer>>,
        delay: Arc<AtomicU64>,
    ) {
        let (stop, stats, draining) = (self.stop.clone(), self.stats.clone(), self.stop_send.clone());
        self.spawn("audio-play", move || {
            let mut dec = match AudioDecoder::new() {
                Ok(d) => d,
                Err(e) => {
                    with(&stats, |s| s.problems.push(format!("audio decoder: {e}")));
                    return;
                }
            };
            let start = std::time::Instant::now();
            let mut tick: u64 = 0;
            // Samples decoded but not played yet (less than a frame, after a compression).
            let mut carry: Vec<i16> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Pace by the clock; a real speaker's blocking write paces too, and the two agree
                // because both run at 48 kHz.
                let due = start + Duration::from_micros(tick * FRAME_US);
                if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait);
                }
                tick += 1;
                let now = unix_micros_now();
                let (playout, next, target) = {
                    let mut j = lock(&jitter);
                    // The call ended and everything that arrived was played: nothing is missing,
                    // the sound just stopped.
                    if draining.load(Ordering::Relaxed) && j.is_empty() {
                        break;
                    }
                    let p = j.poll_playout(now);
                    let next = match &p {
                        Playout::Conceal { seq } => j.peek(seq.wrapping_add(1)).map(<[u8]>::to_vec),
                        _ => None,
                    };
                    (p, next, j.playout_delay_us())
                };
                delay.store(target, Ordering::Relaxed);
                let samples = match playout {
                    Playout::Wait => continue,
                    Playout::Frame { captured_us, payload, before, .. } => {
                        // The delay comes down: the frame before plays too, both in this slot,
                        // a few pitch periods shorter (media::stretch). Decoded in order, so
                        // that the decoder's state follows the stream.
                        let first = before.map(|b| dec.decode(&b));
                        match dec.decode(&payload) {
                            Err(_) => {
                                with(&stats, |st| st.audio_frames_concealed += 1);
                                dec.conceal().unwrap_or_default()
                            }
                            Ok(s) => {
                                with(&stats, |st| {
                                    st.audio_frames_played += 1;
                                    st.audio_latency.record(now.saturating_sub(captured_us));
                                });
                                match first {
                                    None => s,
                                    Some(Err(_)) => {
                                        with(&stats, |st| st.audio_frames_concealed += 1);
                                        s
                                    }
                                    Some(Ok(mut b)) => {
                                        with(&stats, |st| {
                                            st.audio_frames_played += 1;
                                            st.audio_frames_accelerated += 1;
                                        });
                                        b.extend_from_slice(&s);
                                        stretch::compress(&b, FRAME_SAMPLES + carry.len())
                                    }
                                }
                            }
                        }
                    }
                    Playout::Conceal { .. } => {
                        let fec = next.as_deref().and_then(|n| dec.decode_fec(n).ok());
                        with(&stats, |st| {
                            if fec.is_some() {
                                st.audio_frames_recovered_fec += 1;
                            } else {
                                st.audio_frames_concealed += 1;
                            }
                        });
                        match fec {
                            Some(s) => s,
                            None => dec.conceal().unwrap_or_default(),
                        }
                    }
                };
                // A slot is one frame long; what a compression left over starts the next.
                let samples = if carry.is_empty() && samples.len() == FRAME_SAMPLES {
                    samples
                } else {
                    carry.extend_from_slice(&samples);
                    let rest = carry.split_off(FRAME_SAMPLES.min(carry.len()));
                    std::mem::replace(&mut carry, rest)
                };
                with(&stats, |st| {
                    st.played_audio.extend(samples.iter().copied());
                    while st.played_audio.len() > PLAYED_AUDIO_KEPT {
                        st.played_audio.pop_front();
                    }
                });
                if let Some(sp) = speaker.as_mut()
                    && let Err(e) = sp.play(&samples)
                {
                    warn!(error = %e, "speaker failed; audio is no longer played");
                    with(&stats, |st| st.problems.push(format!("speaker: {e}")));
                    speaker = None;
                }
            }
        });
    }

    fn spawn_video_recv(
        &mut self,
        screen: Option<Box<dyn Screen>>,
        display: Option<Display>,
        frames: std_mpsc::Receiver<(MediaHeader, Vec<u8>)>,
        audio_delay: Arc<AtomicU64>,
        feedback: mpsc::Sender<ClientMsg>,
    ) {
        let (stop, stats, call_id) = (self.stop.clone(), self.stats.clone(), self.call_id);
        // The display runs on its own thread (a page flip waits for vertical blank); one picture
        // waits at most, older ones are dropped.
        let mut screen = match screen.map(|sc| screen::spawn_screen(sc, 1)) {
            Some(Ok((feed, st))) => Some((feed, st)),
            Some(Err(e)) => {
                self.problem(format!("cannot start the screen thread: {e}"));
                None
            }
            None => None,
        };
        self.spawn("video-recv", move || {
            let mut dec = match VideoDecoder::new() {
                Ok(d) => d,
                Err(e) => {
                    with(&stats, |s| s.problems.push(format!("video decoder: {e}")));
                    return;
                }
            };
            let mut playout = VideoPlayout::new();
            let mut pending: VecDeque<(u32, Picture, Option<u32>)> = VecDeque::new();
            let mut last_verified: Option<u32> = None;
            let ask = |stats: &Shared| {
                with(stats, |s| s.keyframe_requests += 1);
                let _ = feedback.try_send(ClientMsg::KeyframeRequest { call_id });
            };
            while !stop.load(Ordering::Relaxed) {
                // Wake at least every 5 ms to show pictures on time.
                match frames.recv_timeout(Duration::from_millis(5)) {
                    Ok((h, data)) => {
                        let now = unix_micros_now();
                        with(&stats, |s| s.video_frames_received += 1);
                        playout.set_audio_delay(audio_delay.load(Ordering::Relaxed));
                        match playout.handle_frame(h.seq, h.keyframe, h.captured_us, now) {
                            FrameAction::Decode => match dec.decode(&data, h.captured_us) {
                                Ok(Some(pic)) => {
                                    // A synthetic camera's frame number, checked against the
                                    // capture time the header carries.
                                    let stamp = camera::synthetic::read_stamp(&pic)
                                        .filter(|&(_, ms)| ms == (h.captured_us / 1000) as u32)
                                        .map(|(n, _)| n);
                                    with(&stats, |s| {
                                        s.video_frames_decoded += 1;
                                        if let Some(n) = stamp
                                            && s.decoded_frame_numbers.len() < MAX_FRAME_LOG
                                        {
                                            s.decoded_frame_numbers.push(n);
                                        }
                                    });
                                    playout.handle_decoded(h.seq, h.captured_us, now);
                                    pending.push_back((h.seq, pic, stamp));
                                    // As many as the playout queues (VideoPlayoutConfig::queue_capacity).
                                    while pending.len() > 24 {
                                        pending.pop_front();
                                    }
                                }
                                Ok(None) => {}
                                Err(_) => {
                                    if playout.handle_decode_error(now) {
                                        ask(&stats);
                                    }
                                }
                            },
                            FrameAction::RequestKeyframe => ask(&stats),
                            FrameAction::DropUntilKeyframe | FrameAction::Stale => {}
                        }
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
                let now = unix_micros_now();
                if let Some(seq) = playout.poll_display(now) {
                    // Older pictures were skipped by the playout: drop them.
                    while pending.front().is_some_and(|(s, _, _)| *s != seq) {
                        pending.pop_front();
                    }
                    let Some((_, pic, stamp)) = pending.pop_front() else { continue };
                    with(&stats, |s| {
                        s.video_frames_displayed += 1;
                        let latency = now.saturating_sub(pic.captured_us);
                        if s.display_times_us.len() < MAX_FRAME_LOG {
                            s.display_times_us.push(now);
                            s.display_latency_ms.push(u32::try_from(latency / 1000).unwrap_or(u32::MAX));
                        }
                        s.video_latency.record(latency);
                        if now.saturating_sub(s.started_us) > SETTLED_AFTER_US {
                            s.video_latency_settled.record(latency);
                        }
                        if let Some(n) = stamp
                            && last_verified.is_none_or(|l| n > l)
                        {
                            last_verified = Some(n);
                            s.video_frames_verified += 1;
                            if s.verified_frame_numbers.len() < MAX_FRAME_LOG {
                                s.verified_frame_numbers.push(n);
                            }
                        }
                    });
                    if let Some(d) = &display {
                        d.show_remote(pic);
                    } else if let Some((feed, st)) = screen.as_ref()
                        && feed.push(pic).is_err()
                    {
                        let e = st.error().unwrap_or_else(|| "stopped".into());
                        warn!(error = %e, "screen failed; video is no longer shown");
                        with(&stats, |s| s.problems.push(format!("screen: {e}")));
                        screen = None;
                    }
                }
            }
        });
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Scales a picture to the encoder's size when the camera delivers another (nearest pixel).
fn fit(pic: Picture, width: u32, height: u32) -> Picture {
    if pic.width == width && pic.height == height {
        return pic;
    }
    let mut out = Picture::black(width, height, pic.captured_us);
    let (sw, sh) = (pic.width as usize, pic.height as usize);
    let (dw, dh) = (width as usize, height as usize);
    let (sy, su, sv) = pic.planes();
    let (dy, rest) = out.data.split_at_mut(dw * dh);
    let (du, dv) = rest.split_at_mut((dw / 2) * (dh / 2));
    for y in 0..dh {
        let srow = y * sh / dh;
        for x in 0..dw {
            dy[y * dw + x] = sy[srow * sw + x * sw / dw];
        }
    }
    for y in 0..dh / 2 {
        let srow = y * (sh / 2) / (dh / 2);
        for x in 0..dw / 2 {
            let sx = x * (sw / 2) / (dw / 2);
            du[y * (dw / 2) + x] = su[srow * (sw / 2) + sx];
            dv[y * (dw / 2) + x] = sv[srow * (sw / 2) + sx];
        }
    }
    out
}

/// Time after the start of a call from which video latency counts as settled (µs).
const SETTLED_AFTER_US: u64 = 5_000_000;

/// Lowest video bitrate the rate control goes down to (bit/s).
const MIN_VIDEO_BPS: u64 = 30_000;
/// How often the rate control looks at the path.
const RATE_INTERVAL: Duration = Duration::from_millis(250);
/// A receiver's cap not repeated for this long is eased (the receiver may have stopped
/// getting anything to measure, or the hint was lost with its connection).
const CAP_STALE_AFTER: Duration = Duration::from_secs(3);

/// The receiver's latest cap on our video (media::rate), and how many hints came so far.
struct RemoteCap {
    bps: AtomicU64,
    hints: AtomicU64,
}

/// The video bitrate a call starts at: 40 % of the configured rate (the ladder's top rung
/// still holds there), reached in 6 % steps (about 4 s). Starting at the full rate on a narrow
/// link filled its queue with a second of video before the first cut took effect.
fn start_rate(max_bps: u32) -> u64 {
    (u64::from(max_bps) * 4 / 10).max(MIN_VIDEO_BPS)
}

/// The sender's half of rate control: the video bitrate climbs from [`start_rate`] to the
/// configured rate, and never above the receiver's cap.
/// The receiver measures the queueing delay of this direction alone (see media::rate); the
/// sender's round trip is no signal, since it also grows when the other direction is full.
async fn rate_task(max_bps: u32, rate: Arc<AtomicU64>, remote_cap: Arc<RemoteCap>) {
    let max = u64::from(max_bps).max(MIN_VIDEO_BPS);
    let mut target = start_rate(max_bps);
    let mut tick = tokio::time::interval(RATE_INTERVAL);
    // Hints seen so far, and ticks since the last one: a stale cap is eased 10 % a tick.
    let (mut hints_seen, mut stale_ticks) = (0u64, 0u32);
    loop {
        tick.tick().await;
        let hints = remote_cap.hints.load(Ordering::Relaxed);
        if hints == hints_seen {
            stale_ticks = stale_ticks.saturating_add(1);
        } else {
            (hints_seen, stale_ticks) = (hints, 0);
        }
        let mut cap = remote_cap.bps.load(Ordering::Relaxed);
        if cap < u64::MAX && RATE_INTERVAL * stale_ticks >= CAP_STALE_AFTER {
            cap = if cap >= max { u64::MAX } else { cap * 110 / 100 };
            remote_cap.bps.store(cap, Ordering::Relaxed);
        }
        target = (target * 106 / 100).min(max);
        rate.store(target.min(cap).max(MIN_VIDEO_BPS), Ordering::Relaxed);
    }
}

async fn send_task(
    conn: Connection,
    mut audio: mpsc::Receiver<AudioOut>,
    mut video: mpsc::Receiver<(MediaHeader, Vec<u8>)>,
    stats: Shared,
) {
    let mut buf = Vec::with_capacity(1500);
    // A side without a microphone or camera closes that channel at once; the other goes on.
    let (mut audio_open, mut video_open) = (true, true);
    while audio_open || video_open {
        tokio::select! {
            biased; // audio first: it is small and late audio is worse than late video
            a = audio.recv(), if audio_open => {
                let Some((h, payload, copy)) = a else {
                    audio_open = false;
                    continue;
                };
                buf.clear();
                let encoded = if copy { h.encode_copy(&payload, &mut buf) } else { h.encode(&payload, &mut buf) };
                if encoded.is_err() {
                    continue;
                }
                let fits = conn.max_datagram_size().is_some_and(|m| buf.len() <= m);
                if !fits {
                    debug!(len = buf.len(), "audio frame larger than a datagram; dropped");
                    continue;
                }
                let len = buf.len() as u64;
                if conn.send_datagram(bytes::Bytes::copy_from_slice(&buf)).is_ok() {
                    with(&stats, |s| s.bytes_sent += len);
                }
            }
            v = video.recv(), if video_open => {
                let Some((h, payload)) = v else {
                    video_open = false;
                    continue;
                };
                let mut frame = Vec::with_capacity(payload.len() + 16);
                if h.encode(&payload, &mut frame).is_err() {
                    with(&stats, |s| s.video_frames_send_dropped += 1);
                    continue;
                }
                let conn = conn.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let len = frame.len() as u64;
                    let deadline = tokio::time::Instant::now() + VIDEO_SEND_DEADLINE;
                    match send_frame(&conn, &frame, h.keyframe, deadline).await {
                        // Late: handed to QUIC whole but not acknowledged in time, then reset
                        // (it may still have arrived). Counted as sent, as before the reset
                        // on delivery; `sent_kbps` is what the encoder handed to QUIC.
                        FrameSent::Delivered | FrameSent::Late => with(&stats, |s| s.bytes_sent += len),
                        FrameSent::NotSent => with(&stats, |s| s.video_frames_send_dropped += 1),
                    }
                });
            }
        }
    }
}

async fn recv_datagrams(
    conn: Connection,
    jitter: Arc<Mutex<AudioJitterBuffer>>,
    receiver_rate: Arc<Mutex<ReceiverRate>>,
    stats: Shared,
    call_id: CallId,
    feedback: mpsc::Sender<ClientMsg>,
) {
    let mut meter = LossMeter::new();
    while let Ok(d) = conn.read_datagram().await {
        let Ok((h, payload)) = packet::decode(&d) else { continue };
        if h.kind != MediaKind::Audio {
            continue;
        }
        let now = unix_micros_now();
        with(&stats, |s| s.bytes_received += d.len() as u64);
        // The network's loss counts first sendings only: copies repair it.
        if !packet::is_copy(&d) {
            if let Some(audio_loss_pct) = meter.handle(h.seq, now) {
                let _ = feedback.try_send(ClientMsg::LossReport { call_id, audio_loss_pct });
            }
            let hint = {
                let mut r = lock(&receiver_rate);
                r.on_audio(now, h.captured_us);
                r.poll(now)
            };
            if let Some(bitrate_bps) = hint {
                let _ = feedback.try_send(ClientMsg::RateHint { call_id, bitrate_bps });
            }
        }
        lock(&jitter).handle_packet(h.seq, h.captured_us, payload.to_vec(), now);
    }
}

async fn recv_streams(
    conn: Connection,
    frames: std_mpsc::SyncSender<(MediaHeader, Vec<u8>)>,
    receiver_rate: Arc<Mutex<ReceiverRate>>,
    stats: Shared,
    call_id: CallId,
    feedback: mpsc::Sender<ClientMsg>,
) {
    // Frames arrive in order of completion; each is read on its own task so a slow one does
    // not hold back the next.
    let (done_tx, mut done_rx) = mpsc::channel::<Vec<u8>>(VIDEO_IN_QUEUE);
    let reader = {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok(mut recv) = conn.accept_uni().await {
                let done = done_tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(data)) = tokio::time::timeout(
                        Duration::from_secs(2),
                        recv.read_to_end(packet::MAX_VIDEO_FRAME + 16),
                    )
                    .await
                    {
                        let _ = done.send(data).await;
                    }
                });
            }
        })
    };
    // Frames that overtook a missing one wait for it here (see media::video_reorder).
    let mut reorder = VideoReorder::new(ReorderConfig::default());
    loop {
        let arrived = match reorder.poll_timeout() {
            Some(at) => {
                let wait = Duration::from_micros(at.saturating_sub(unix_micros_now()));
                match tokio::time::timeout(wait, done_rx.recv()).await {
                    Ok(Some(data)) => Some(data),
                    Ok(None) => break,
                    Err(_) => None,
                }
            }
            None => match done_rx.recv().await {
                Some(data) => Some(data),
                None => break,
            },
        };
        let now = unix_micros_now();
        let ready = match arrived {
            Some(data) => {
                let Ok((h, payload)) = packet::decode(&data) else { continue };
                if h.kind != MediaKind::Video {
                    continue;
                }
                with(&stats, |s| s.bytes_received += data.len() as u64);
                let hint = {
                    let mut r = lock(&receiver_rate);
                    r.on_video(now, h.captured_us, data.len() as u64);
                    r.poll(now)
                };
                if let Some(bitrate_bps) = hint {
                    let _ = feedback.try_send(ClientMsg::RateHint { call_id, bitrate_bps });
                }
                reorder.push(h.seq, h.keyframe, (h, payload.to_vec()), now)
            }
            None => reorder.poll(now),
        };
        for frame in ready {
            if frames.try_send(frame).is_err() {
                info!("video decoder behind; frame dropped");
            }
        }
    }
    reader.abort();
}

/// Synthetic devices for the demo and tests: a stamped test pattern, a tone at `tone_hz`,
/// sound and pictures measured but not played.
pub fn synthetic_devices(tone_hz: f64, video: VideoSettings) -> MediaDevices {
    synthetic_devices_with(tone_hz, video, None)
}

/// As [`synthetic_devices`], with a switch that stops and restarts the camera mid-call.
pub fn synthetic_devices_with(
    tone_hz: f64,
    video: VideoSettings,
    switch: Option<CameraSwitch>,
) -> MediaDevices {
    let (w, h, fps) = (video.width, video.height, video.fps.round() as u32);
    MediaDevices {
        camera: Some(Arc::new(move || {
            let cam = SyntheticCamera::new(w, h, fps)?;
            if let Some(sw) = &switch {
                sw.set_running(true);
            }
            let cam = match &switch {
                Some(sw) => cam.with_switch(sw.clone()),
                None => cam,
            };
            Ok(Box::new(cam) as Box<dyn Camera>)
        })),
        microphone: Some(Arc::new(move || {
            Ok(Box::new(SyntheticMicrophone::new(tone_hz)) as Box<dyn Microphone>)
        })),
        speaker: None,
        screen: None,
        display: None,
    }
}

/// The devices named by a configuration. Each is tried once now: what fails is reported (the
/// role runs on without it — audio-only or video-only) and tried again at every call.
pub fn devices_from_config(media: &MediaSections) -> (MediaDevices, MediaOptions, Vec<String>) {
    let mut problems = Vec::new();
    let c = media.camera.clone();
    let camera: Option<Opener<dyn Camera>> = match c.backend {
        CameraBackend::None => None,
        CameraBackend::Synthetic => {
            let (w, h, fps) = (c.width, c.height, c.fps);
            Some(Arc::new(move || Ok(Box::new(SyntheticCamera::new(w, h, fps)?) as Box<dyn Camera>)))
        }
        CameraBackend::V4l2 => {
            let cfg = CameraConfig {
                device: c.device.clone(),
                width: c.width,
                height: c.height,
                fps: c.fps,
                format: c.format,
            };
            Some(Arc::new(move || Ok(Box::new(V4l2Camera::open(&cfg)?) as Box<dyn Camera>)))
        }
    };
    let a = media.audio.clone();
    let period = Duration::from_millis(u64::from(a.period_ms));
    let microphone: Option<Opener<dyn Microphone>> = match a.capture {
        CaptureBackend::None => None,
        CaptureBackend::Synthetic => {
            let hz = a.tone_hz;
            Some(Arc::new(move || Ok(Box::new(SyntheticMicrophone::new(hz)) as Box<dyn Microphone>)))
        }
        CaptureBackend::Alsa => {
            let cfg = PcmConfig { device: a.capture_device.clone(), period };
            Some(Arc::new(move || Ok(Box::new(AlsaMicrophone::open(&cfg)?) as Box<dyn Microphone>)))
        }
    };
    let speaker: Option<Opener<dyn Speaker>> = match a.playback {
        PlaybackBackend::None => None,
        PlaybackBackend::Wav => {
            let path = a.wav_path.clone().unwrap_or_default();
            Some(Arc::new(move || Ok(Box::new(WavSpeaker::create(path.clone())?) as Box<dyn Speaker>)))
        }
        PlaybackBackend::Alsa => {
            let cfg = PcmConfig { device: a.playback_device.clone(), period };
            Some(Arc::new(move || Ok(Box::new(AlsaSpeaker::open(&cfg)?) as Box<dyn Speaker>)))
        }
    };
    let sc = media.screen.clone();
    let fps = c.fps;
    let screen: Option<Opener<dyn Screen>> = match sc.backend {
        ScreenBackend::None => None,
        ScreenBackend::Y4m => {
            let path = sc.path.clone().unwrap_or_default();
            Some(Arc::new(move || Ok(Box::new(Y4mScreen::create(path.clone(), fps)) as Box<dyn Screen>)))
        }
        ScreenBackend::Drm => {
            let path = sc.path.clone().unwrap_or_else(|| "/dev/dri/card0".into());
            Some(Arc::new(move || Ok(Box::new(DrmScreen::open(&path)?) as Box<dyn Screen>)))
        }
        ScreenBackend::Fbdev => {
            let path = sc.path.clone().unwrap_or_else(|| "/dev/fb0".into());
            Some(Arc::new(move || Ok(Box::new(FbdevScreen::open(&path)?) as Box<dyn Screen>)))
        }
    };
    // Try the capture devices once, so that a missing or busy one is reported at start.
    if let Some(open) = &camera
        && let Err(e) = open()
    {
        problems.push(format!("camera: {e}"));
    }
    if let Some(open) = &microphone
        && let Err(e) = open()
    {
        problems.push(format!("microphone: {e}"));
    }
    if let Some(open) = &speaker
        && media.audio.playback == PlaybackBackend::Alsa
        && let Err(e) = open()
    {
        problems.push(format!("speaker: {e}"));
    }
    let video = VideoSettings {
        width: c.width,
        height: c.height,
        fps: c.fps as f32,
        bitrate_bps: media.video.bitrate_kbps * 1000,
        keyframe_interval: media.video.keyframe_interval,
    };
    let audio = AudioSettings {
        bitrate_bps: (a.bitrate_kbps * 1000) as i32,
        fec: a.fec,
        dtx: a.dtx,
        ..AudioSettings::default()
    };
    let options = MediaOptions { video, audio, ..MediaOptions::default() };
    (MediaDevices { camera, microphone, speaker, screen, display: None }, options, problems)
}
