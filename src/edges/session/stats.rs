//! The figures of one side of a call, shared by its threads and tasks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::media::UnixMicros;
use crate::media::stats::{LatencyHistogram, Quantiles};

/// Most frame numbers kept for verification (an hour at 30 fps would be 108 000).
pub(super) const MAX_FRAME_LOG: usize = 20_000;
/// Played audio kept for measuring its pitch (2 s).
pub(super) const PLAYED_AUDIO_KEPT: usize = 96_000;

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
    /// Caps on this side's video the other side (or the hub, for a browser's leg) sent.
    pub rate_hints_received: u64,
    /// Keyframes the other side asked of this side's encoder (a browser's PLI or FIR arrives
    /// as one).
    pub keyframes_asked: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub audio_latency_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    /// How long the media ran, in seconds.
    pub duration_s: f64,
    /// What this side could not use (camera missing, ...).
    pub problems: Vec<String>,
    /// The microphone's processing (echo cancellation and the rest), when it runs.
    pub audio_processing: Option<crate::media::processing::ProcessingStats>,
    #[serde(skip)]
    pub sent_frame_numbers: Vec<u32>,
    /// The frame numbers read from every picture decoded, in the order decoded.
    #[serde(skip)]
    pub decoded_frame_numbers: Vec<u32>,
    /// The frame numbers of the pictures shown (the playout skips a picture that is late).
    #[serde(skip)]
    pub verified_frame_numbers: Vec<u32>,
    /// The frame numbers of every decoded picture whose stamp reads, whatever capture time it
    /// names: a browser's camera plays a stamped file whose times the receiver cannot know.
    #[serde(skip)]
    pub stamped_frame_numbers: Vec<u32>,
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

pub(super) type Shared = Arc<Mutex<MediaStats>>;

/// Locks a mutex shared between media tasks and threads; one that panicked holding it left
/// plain data (counters, buffers) that is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn with<R>(stats: &Shared, f: impl FnOnce(&mut MediaStats) -> R) -> R {
    let mut guard = lock(stats);
    f(&mut guard)
}
