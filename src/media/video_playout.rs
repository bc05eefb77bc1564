//! Video playout: which received frames to decode, and which decoded pictures to show when.
//!
//! Sans-IO. The video receive loop runs it like this:
//!
//! 1. For every received frame (one whole H.264 access unit with its [media
//!    header](super::packet)), call [`handle_frame`](VideoPlayout::handle_frame)`(seq, keyframe,
//!    captured_us, now)` and do what it says: [`FrameAction::Decode`] → decode it;
//!    [`FrameAction::RequestKeyframe`] → drop it and ask the sender for a keyframe;
//!    [`FrameAction::DropUntilKeyframe`], [`FrameAction::Stale`] → drop it.
//! 2. When the decoder returns a picture, call [`handle_decoded`](VideoPlayout::handle_decoded)
//!    and keep the picture by its seq; when the decoder fails, call
//!    [`handle_decode_error`](VideoPlayout::handle_decode_error) and ask for a keyframe if it says
//!    so.
//! 3. Before each of these steps, [`set_audio_delay`](VideoPlayout::set_audio_delay) with the
//!    audio buffer's [`playout_delay_us`](super::audio_jitter::AudioJitterBuffer::playout_delay_us).
//! 4. After any of the above, and when [`poll_timeout`](VideoPlayout::poll_timeout) passes, call
//!    [`poll_display`](VideoPlayout::poll_display)`(now)`: show the picture of the seq it returns
//!    and drop the kept pictures older than it.
//!
//! ```no_run
//! use kioskd::media::video_playout::{FrameAction, VideoPlayout};
//! let mut playout = VideoPlayout::new();
//! # let (seq, keyframe, captured_us, now, audio_delay_us) = (0u32, true, 0u64, 0u64, 0u64);
//! playout.set_audio_delay(audio_delay_us);
//! match playout.handle_frame(seq, keyframe, captured_us, now) {
//!     FrameAction::Decode => { /* decode; on a picture: */ playout.handle_decoded(seq, captured_us, now) }
//!     FrameAction::RequestKeyframe => { /* send a keyframe request */ }
//!     FrameAction::DropUntilKeyframe | FrameAction::Stale => {}
//! }
//! if let Some(seq) = playout.poll_display(now) { /* show picture `seq` */ }
//! let _wake_at = playout.poll_timeout();
//! ```
//!
//! # Decode gating
//!
//! Frames must reach the decoder in order, each P-frame after the one it refers to. The sender
//! abandons a frame that is too late, so a gap in seq means the following P-frames cannot decode:
//! they are dropped until a keyframe arrives, and one keyframe request goes out per gap (at most
//! one per [`VideoPlayoutConfig::keyframe_request_interval_us`], repeated every
//! [`VideoPlayoutConfig::keyframe_retry_us`] while none comes). Frames of one group of pictures
//! are assumed to arrive in order (one stream per group, or ordered by the driver).
//!
//! # Display timing and lip sync
//!
//! The clocks of sender and receiver differ by an unknown constant, so delays are relative: each
//! frame's `transit = arrival − capture`, its minimum over the window as the baseline (the fastest
//! path), and the own delay estimate = the [`VideoPlayoutConfig::percentile`] of `transit −
//! baseline`: the wait after which nearly every frame has arrived. The render delay is
//! `max(own, audio)`, where `audio` is the audio buffer's delay above its own fastest path
//! (capped at `own + max_sync_wait_us`), so that picture and sound captured at the same instant
//! play together, provided audio and video take the same route. A picture is due at
//! `captured_us + baseline + render delay`; [`poll_display`](VideoPlayout::poll_display) returns
//! the newest due one, skipping older ones not yet shown: a late frame never holds back a newer
//! one.
//!
//! Memory: a queue of at most [`VideoPlayoutConfig::queue_capacity`] picture ids (the pictures
//! themselves stay with the caller) and a window of `window` delays.

use std::collections::VecDeque;

use serde::Serialize;

use super::UnixMicros;
use super::packet::{RestartRule, SeqAnchor, extend_seq, seq_delta};
use super::stats::TransitWindow;

/// A seq this far (in frames, either way) from the newest one seen is a new stream: 1000 frames
/// = 33 s at 30 fps, beyond any reordering or outage the picture could survive.
pub const RESTART_SEQ_JUMP: i64 = 1000;

/// A newer seq with a capture time this much older (µs), or an older seq with one this much
/// newer, is a new stream (a restarted sender): 1 s. Capture time grows with seq.
pub const RESTART_CAPTURE_SKEW_US: u64 = 1_000_000;
/// The two restart limits, as the seq unwrapping takes them.
const RESTART: RestartRule =
    RestartRule { seq_jump: RESTART_SEQ_JUMP, capture_skew_us: RESTART_CAPTURE_SKEW_US };

/// Video playout settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlayoutConfig {
    /// Most decoded pictures waiting for their render time (default 24: 800 ms at 30 fps, more
    /// than the longest render delay, `max_own_delay_us + max_sync_wait_us`, so that pictures
    /// always become due before they are pushed out); beyond it the oldest is dropped. The
    /// caller keeps as many pictures (at 640×480 I420, 460 kB each).
    pub queue_capacity: usize,
    /// Ceiling of the own delay estimate (µs; default 250 ms). After an outage, frames that QUIC
    /// delivered seconds late would otherwise raise the estimate to seconds for the whole
    /// window, and every picture would wait that long.
    pub max_own_delay_us: u64,
    /// Frames whose delays set the baseline and the own delay estimate (default 300 = 10 s at
    /// 30 fps).
    pub window: usize,
    /// Share of frames the own delay estimate should catch in time (default 0.95: a picture a
    /// little late is skipped, not frozen on, so video can aim lower than audio).
    pub percentile: f64,
    /// Least time between keyframe requests (µs; default 300 ms): a keyframe costs the sender
    /// a burst of bits, and one request covers every gap until it comes.
    pub keyframe_request_interval_us: u64,
    /// While waiting for a keyframe, ask again after this long (µs; default 1 s), in case the
    /// keyframe itself was abandoned.
    pub keyframe_retry_us: u64,
    /// Most time video waits beyond its own delay to stay in sync with audio (µs; default
    /// 300 ms, the audio buffer's ceiling).
    pub max_sync_wait_us: u64,
}

impl Default for VideoPlayoutConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 24,
            max_own_delay_us: 250_000,
            window: 300,
            percentile: 0.95,
            keyframe_request_interval_us: 300_000,
            keyframe_retry_us: 1_000_000,
            max_sync_wait_us: 300_000,
        }
    }
}

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameAction {
    /// Pass it to the decoder.
    Decode,
    /// Drop it, and send the sender a keyframe request.
    RequestKeyframe,
    /// Drop it: a frame it depends on is missing, a keyframe is on its way.
    DropUntilKeyframe,
    /// Drop it: it is not newer than the last frame decoded (a duplicate or overtaken).
    Stale,
}

/// Counters and gauges, cumulative over resets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VideoPlayoutStats {
    /// Frames handed to `handle_frame`.
    pub received: u64,
    /// Pictures handed to `handle_decoded`.
    pub decoded: u64,
    /// Pictures returned by `poll_display`.
    pub displayed: u64,
    /// Pictures passed over because a newer one was due.
    pub skipped_late: u64,
    /// Frames dropped while waiting for a keyframe.
    pub dropped_gap: u64,
    /// Frames not newer than the last decoded.
    pub stale: u64,
    /// Keyframe requests made (`RequestKeyframe`, or `handle_decode_error` returning true).
    pub keyframe_requests: u64,
    /// Calls of `handle_decode_error`.
    pub decode_errors: u64,
    /// Pictures dropped from a full display queue.
    pub dropped_overflow: u64,
    /// Restarts of the sender's stream.
    pub resets: u64,
    /// Current render delay above the fastest path, in ms.
    pub render_delay_ms: f64,
}

/// A decoded picture waiting for its render time.
#[derive(Debug, Clone, Copy)]
struct Queued {
    ext: i64,
    seq: u32,
    captured_us: UnixMicros,
}

/// Decode gating and display timing for one received video stream. See the [module docs](self).
#[derive(Debug)]
pub struct VideoPlayout {
    config: VideoPlayoutConfig,
    /// The newest frame seen, as (extended seq, seq, capture time): the reference for unwrapping
    /// seq and for restart detection.
    newest: Option<(i64, u32, UnixMicros)>,
    /// The last frame passed to the decoder (extended seq).
    last_decoded: Option<i64>,
    /// Frames are dropped until a keyframe: set by a gap or a decode error.
    awaiting_keyframe: bool,
    /// A keyframe request went out for the current wait.
    requested: bool,
    /// When the last keyframe request went out.
    last_request_at: Option<UnixMicros>,
    /// Pictures waiting for display, oldest first, seq increasing.
    queue: VecDeque<Queued>,
    /// The last picture shown (extended seq): older ones are not queued.
    last_displayed: Option<i64>,
    /// Transit times of the last `window` frames: the baseline and the own estimate.
    transits: TransitWindow,
    /// The own delay estimate above the baseline (µs).
    own_delay_us: u64,
    /// The audio delay above its baseline (µs), from `set_audio_delay`.
    audio_delay_us: u64,
    stats: VideoPlayoutStats,
}

impl Default for VideoPlayout {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoPlayout {
    /// With the default settings.
    pub fn new() -> Self {
        Self::with_config(VideoPlayoutConfig::default())
    }

    pub fn with_config(config: VideoPlayoutConfig) -> Self {
        Self {
            queue: VecDeque::with_capacity(config.queue_capacity),
            transits: TransitWindow::new(config.window),
            config,
            newest: None,
            last_decoded: None,
            awaiting_keyframe: false,
            requested: false,
            last_request_at: None,
            last_displayed: None,
            own_delay_us: 0,
            audio_delay_us: 0,
            stats: VideoPlayoutStats::default(),
        }
    }

    /// Decides what to do with a received frame; `now` is its arrival time.
    #[must_use]
    pub fn handle_frame(
        &mut self,
        seq: u32,
        keyframe: bool,
        captured_us: UnixMicros,
        now: UnixMicros,
    ) -> FrameAction {
        self.stats.received += 1;
        let ext = self.unwrap_seq(seq, captured_us);
        if self.last_decoded.is_some_and(|last| ext <= last) {
            self.stats.stale += 1;
            return FrameAction::Stale;
        }
        self.record_transit(now, captured_us);
        if keyframe {
            self.last_decoded = Some(ext);
            self.awaiting_keyframe = false;
            self.requested = false;
            return FrameAction::Decode;
        }
        let follows = self.last_decoded.is_some_and(|last| ext == last + 1);
        if follows && !self.awaiting_keyframe {
            self.last_decoded = Some(ext);
            return FrameAction::Decode;
        }
        if !self.awaiting_keyframe {
            // A new gap (or the stream joined mid-group): one request for it.
            self.awaiting_keyframe = true;
            self.requested = false;
        }
        self.stats.dropped_gap += 1;
        if self.try_request(now) { FrameAction::RequestKeyframe } else { FrameAction::DropUntilKeyframe }
    }

    /// The decoder failed on the last frame: drop frames until a keyframe. Returns whether to
    /// send a keyframe request now (if not, a later dropped frame asks once the rate limit
    /// allows).
    #[must_use]
    pub fn handle_decode_error(&mut self, now: UnixMicros) -> bool {
        self.stats.decode_errors += 1;
        if !self.awaiting_keyframe {
            self.awaiting_keyframe = true;
            self.requested = false;
        }
        self.try_request(now)
    }

    /// Queues a decoded picture for display. Pictures not newer than the last queued or shown
    /// are ignored; beyond the queue's capacity, the oldest is dropped.
    pub fn handle_decoded(&mut self, seq: u32, captured_us: UnixMicros, now: UnixMicros) {
        let _ = now; // the render time follows from the capture time; `now` is for symmetry
        self.stats.decoded += 1;
        let ext = match self.newest {
            Some((newest_ext, newest_seq, _)) => newest_ext + i64::from(seq_delta(seq, newest_seq)),
            None => i64::from(seq),
        };
        let newest_held = self.queue.back().map(|q| q.ext).or(self.last_displayed);
        if newest_held.is_some_and(|held| ext <= held) {
            self.stats.skipped_late += 1;
            return;
        }
        self.queue.push_back(Queued { ext, seq, captured_us });
        while self.queue.len() > self.config.queue_capacity.max(1) {
            self.queue.pop_front();
            self.stats.dropped_overflow += 1;
        }
    }

    /// Sets the audio delay above its fastest path (µs), as given by
    /// [`AudioJitterBuffer::playout_delay_us`](super::audio_jitter::AudioJitterBuffer::playout_delay_us);
    /// 0 when there is no audio. Video then waits at least as long, for lip sync.
    pub fn set_audio_delay(&mut self, delay_us: u64) {
        self.audio_delay_us = delay_us;
        self.stats.render_delay_ms = self.render_delay_us() as f64 / 1000.0;
    }

    /// The picture to show now: the newest whose render time has come. Older queued pictures
    /// are passed over (counted in `skipped_late`); the caller drops them. Poll after every
    /// `handle_*` and when [`poll_timeout`](Self::poll_timeout) passes.
    #[must_use]
    pub fn poll_display(&mut self, now: UnixMicros) -> Option<u32> {
        let wait = self.render_delay_us() as i64;
        let due = self.queue.iter().rposition(|q| self.relative_delay(now, q.captured_us) >= wait)?;
        let shown = self.queue.drain(..=due).next_back()?;
        self.stats.skipped_late += due as u64;
        self.stats.displayed += 1;
        self.last_displayed = Some(shown.ext);
        Some(shown.seq)
    }

    /// When the next queued picture is due (receiver's clock), or `None` with nothing queued.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixMicros> {
        let offset = self.transits.baseline().saturating_add(self.render_delay_us() as i64);
        self.queue.iter().map(|q| q.captured_us.wrapping_add(offset as u64)).min()
    }

    /// The render delay above the fastest path (µs): `max(own estimate, audio delay)`, the audio
    /// part capped at `own + max_sync_wait_us`.
    pub fn render_delay_us(&self) -> u64 {
        let audio = self.audio_delay_us.min(self.own_delay_us.saturating_add(self.config.max_sync_wait_us));
        // At most i64::MAX, so that it adds to signed transits.
        self.own_delay_us.max(audio).min(i64::MAX as u64)
    }

    /// Pictures waiting for display.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn stats(&self) -> &VideoPlayoutStats {
        &self.stats
    }

    /// Sends a keyframe request now if this wait has none yet (or its retry time passed) and the
    /// rate limit allows.
    fn try_request(&mut self, now: UnixMicros) -> bool {
        let since = self.last_request_at.map(|at| now.saturating_sub(at));
        let allowed = since.is_none_or(|s| s >= self.config.keyframe_request_interval_us);
        let wanted = !self.requested || since.is_none_or(|s| s >= self.config.keyframe_retry_us);
        if allowed && wanted {
            self.requested = true;
            self.last_request_at = Some(now);
            self.stats.keyframe_requests += 1;
            true
        } else {
            false
        }
    }

    /// The extended seq of a received frame; resets the decode state on a sender restart.
    fn unwrap_seq(&mut self, seq: u32, captured_us: UnixMicros) -> i64 {
        let ext =
            extend_seq(self.newest.map(SeqAnchor::from), seq, captured_us, RESTART).unwrap_or_else(|| {
                self.reset();
                i64::from(seq)
            });
        if self.newest.is_none_or(|(newest_ext, ..)| ext > newest_ext) {
            self.newest = Some((ext, seq, captured_us));
        }
        ext
    }

    /// Forgets the stream (a restarted sender); the rate limit and counters stay.
    fn reset(&mut self) {
        self.newest = None;
        self.last_decoded = None;
        self.awaiting_keyframe = false;
        self.requested = false;
        self.queue.clear();
        self.last_displayed = None;
        self.transits.clear();
        self.own_delay_us = 0;
        self.stats.resets += 1;
    }

    fn relative_delay(&self, now: UnixMicros, captured_us: UnixMicros) -> i64 {
        self.transits.relative_delay(now, captured_us)
    }

    /// Adds a frame's transit to the window and recomputes the baseline and the own estimate.
    fn record_transit(&mut self, now: UnixMicros, captured_us: UnixMicros) {
        let jitter = self.transits.record(now, captured_us, self.config.percentile);
        self.own_delay_us = jitter.min(self.config.max_own_delay_us);
        self.stats.render_delay_ms = self.render_delay_us() as f64 / 1000.0;
    }
}

#[cfg(test)]
mod tests;
