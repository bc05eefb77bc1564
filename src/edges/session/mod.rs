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
//! the session is dropped. The threads are in [`video_send`], [`audio`] and [`video_recv`],
//! the QUIC tasks in [`net`], the figures in [`stats`], the devices in [`devices`].

mod audio;
mod devices;
mod net;
mod stats;
mod video_recv;
mod video_send;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use quinn::Connection;
use tokio::sync::mpsc;
use tracing::warn;

pub use devices::{devices_from_config, synthetic_devices, synthetic_devices_with};
pub use stats::MediaStats;

use audio::{AudioPlayer, AudioSender};
use net::Feedback;
use stats::{Shared, lock, with};
use video_recv::{Shown, VideoReceiver};
use video_send::{MIN_VIDEO_BPS, RemoteCap, VideoSender, rate_task, start_rate};

use crate::edges::devices::audio::{Microphone, Speaker};
use crate::edges::devices::camera::{self, Camera};
use crate::edges::devices::screen::{self, Screen};
use crate::edges::devices::{Opener, unix_micros_now};
use crate::edges::display::Display;
use crate::media::DRAIN;
use crate::media::audio_jitter::{AudioJitterBuffer, JitterConfig};
use crate::media::codec::{AudioSettings, VideoSettings};
use crate::media::loss::LossPolicy;
use crate::media::packet::MediaHeader;
use crate::media::processing::{AudioProcessor, ProcessingConfig};
use crate::media::rate::ReceiverRate;
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
    /// Echo cancellation, noise suppression, gain control and high-pass filter of the
    /// microphone (media::processing); all on by default.
    pub processing: ProcessingConfig,
}

/// Pictures waiting for the encoder; more means the encoder is behind: drop the oldest.
const CAMERA_QUEUE: usize = 2;
/// Encoded frames waiting for the network (a quarter second at 30 fps).
const VIDEO_OUT_QUEUE: usize = 8;
/// Encoded audio frames waiting for the network (one second).
const AUDIO_OUT_QUEUE: usize = 50 * (1 + MAX_AUDIO_COPIES);
/// 20 ms slots played and not yet seen by the echo canceller (half a second).
const PLAYED_QUEUE: usize = 25;
/// Most copies of earlier audio frames sent after each new one.
const MAX_AUDIO_COPIES: usize = 2;
/// An audio frame for the send task: header, Opus packet, and whether it is a copy.
type AudioOut = (MediaHeader, Vec<u8>, bool);
/// An encoded video frame for the send task.
type VideoOut = (MediaHeader, Vec<u8>);
/// Received video frames waiting for the decoder.
const VIDEO_IN_QUEUE: usize = 32;
/// A video frame not delivered within this time is abandoned: a newer one matters more.
const VIDEO_SEND_DEADLINE: Duration = Duration::from_millis(500);

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
    /// Starts sending and receiving on `conn`. `feedback` receives this side's reports for
    /// the other (keyframe requests, loss, rate hints); the driver sends them to the hub.
    pub fn start(
        conn: Connection,
        call_id: CallId,
        devices: &MediaDevices,
        opts: MediaOptions,
        feedback: mpsc::Sender<ClientMsg>,
    ) -> Self {
        let mut s = Self {
            call_id,
            stop_send: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            keyframe: Arc::new(AtomicBool::new(false)),
            remote_cap: Arc::new(RemoteCap { bps: AtomicU64::new(u64::MAX), hints: AtomicU64::new(0) }),
            video_rate: Arc::new(AtomicU64::new(start_rate(opts.video.bitrate_bps))),
            loss_policy: Arc::new(Mutex::new(LossPolicy::new(opts.audio.expected_loss_pct))),
            stats: Arc::new(Mutex::new(MediaStats { started_us: unix_micros_now(), ..Default::default() })),
            threads: Vec::new(),
            tasks: Vec::new(),
        };
        let feedback = Feedback { call_id, to_hub: feedback };
        // What the speaker plays, to the microphone's echo canceller.
        let (played_tx, played_rx) = std_mpsc::sync_channel(PLAYED_QUEUE);
        s.start_sending(&conn, devices, &opts, played_rx);
        s.start_receiving(conn, devices, &opts, feedback, played_tx);
        s
    }

    /// Camera → encoder and microphone → Opus, into the send task.
    fn start_sending(
        &mut self,
        conn: &Connection,
        devices: &MediaDevices,
        opts: &MediaOptions,
        played: std_mpsc::Receiver<Vec<i16>>,
    ) {
        let (audio_tx, audio_rx) = mpsc::channel::<AudioOut>(AUDIO_OUT_QUEUE);
        let (video_tx, video_rx) = mpsc::channel::<VideoOut>(VIDEO_OUT_QUEUE);
        if let Some(cam) = self.open("camera", devices.camera.as_ref()) {
            self.start_video_send(cam, opts.video, video_tx, devices.display.clone());
        }
        if let Some(mic) = self.open("microphone", devices.microphone.as_ref()) {
            let sender = AudioSender {
                mic,
                settings: opts.audio,
                policy: self.loss_policy.clone(),
                out: audio_tx,
                stats: self.stats.clone(),
                processor: AudioProcessor::new(opts.processing),
                played,
                spent: std::collections::VecDeque::new(),
            };
            let stop = self.stop_send.clone();
            self.spawn("audio-send", move || sender.run(stop));
        }
        self.tasks.push(tokio::spawn(net::send_task(conn.clone(), audio_rx, video_rx, self.stats.clone())));
    }

    fn start_video_send(
        &mut self,
        cam: Box<dyn Camera>,
        settings: VideoSettings,
        out: mpsc::Sender<VideoOut>,
        display: Option<Display>,
    ) {
        let (pictures, cam_stats) = match camera::spawn_camera(cam, CAMERA_QUEUE) {
            Ok(q) => q,
            Err(e) => return self.problem(format!("cannot start the camera thread: {e}")),
        };
        let sender = VideoSender {
            call_id: self.call_id,
            settings,
            rate: self.video_rate.clone(),
            keyframe: self.keyframe.clone(),
            out,
            stats: self.stats.clone(),
            display,
        };
        let stop = self.stop_send.clone();
        self.spawn("video-send", move || sender.run(pictures, cam_stats, stop));
        let rate = rate_task(settings.bitrate_bps, self.video_rate.clone(), self.remote_cap.clone());
        self.tasks.push(tokio::spawn(rate));
    }

    /// Datagrams → jitter buffer → speaker, and streams → decoder → screen or display.
    fn start_receiving(
        &mut self,
        conn: Connection,
        devices: &MediaDevices,
        opts: &MediaOptions,
        feedback: Feedback,
        played: std_mpsc::SyncSender<Vec<i16>>,
    ) {
        let audio_delay = Arc::new(AtomicU64::new(0));
        let jitter = Arc::new(Mutex::new(AudioJitterBuffer::new(opts.jitter.clone())));
        let player = AudioPlayer {
            speaker: self.open("speaker", devices.speaker.as_ref()),
            jitter: jitter.clone(),
            delay: audio_delay.clone(),
            stats: self.stats.clone(),
            played,
        };
        let (stop, draining) = (self.stop.clone(), self.stop_send.clone());
        self.spawn("audio-play", move || player.run(stop, draining));

        let shown = self.shown(devices);
        let receiver =
            VideoReceiver { shown, audio_delay, feedback: feedback.clone(), stats: self.stats.clone() };
        let (frames_tx, frames_rx) = std_mpsc::sync_channel(VIDEO_IN_QUEUE);
        let stop = self.stop.clone();
        self.spawn("video-recv", move || receiver.run(frames_rx, stop));

        // The rate the path from the other side takes, from its audio and video (media::rate).
        let receiver_rate = Arc::new(Mutex::new(ReceiverRate::new()));
        let (stats, rate) = (self.stats.clone(), receiver_rate.clone());
        self.tasks.push(tokio::spawn(net::recv_datagrams(
            conn.clone(),
            jitter,
            rate,
            stats,
            feedback.clone(),
        )));
        let stats = self.stats.clone();
        self.tasks.push(tokio::spawn(net::recv_streams(conn, frames_tx, receiver_rate, stats, feedback)));
    }

    /// Where the other side's pictures go: the kiosk's display, or a screen opened for this
    /// call on a thread of its own (a page flip waits for vertical blank; one picture waits at
    /// most, older ones are dropped).
    fn shown(&mut self, devices: &MediaDevices) -> Shown {
        if let Some(d) = &devices.display {
            return Shown::Display(d.clone());
        }
        let Some(sc) = self.open("screen", devices.screen.as_ref()) else { return Shown::Nowhere };
        match screen::spawn_screen(sc, 1) {
            Ok((feed, st)) => Shown::Screen(feed, st),
            Err(e) => {
                self.problem(format!("cannot start the screen thread: {e}"));
                Shown::Nowhere
            }
        }
    }

    /// Opens a device for this call; one that fails is a problem of the call, which goes on.
    fn open<T: ?Sized>(&mut self, what: &str, opener: Option<&Opener<T>>) -> Option<Box<T>> {
        match opener.map(|open| open()) {
            Some(Ok(dev)) => Some(dev),
            Some(Err(e)) => {
                self.problem(format!("{what}: {e}"));
                None
            }
            None => None,
        }
    }
    /// The other side receives our video late: send at most `bps`.
    pub fn set_rate_hint(&self, bps: u32) {
        self.remote_cap.bps.store(u64::from(bps), Ordering::Relaxed);
        self.remote_cap.hints.fetch_add(1, Ordering::Relaxed);
        with(&self.stats, |s| s.rate_hints_received += 1);
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
        with(&self.stats, |s| s.keyframes_asked += 1);
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
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.shutdown();
    }
}
