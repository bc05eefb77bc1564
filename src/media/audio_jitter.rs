//! The adaptive audio jitter buffer: 20 ms Opus packets in, one frame per speaker slot out.
//!
//! Sans-IO, in the spirit of WebRTC's NetEQ. The audio driver runs it like this:
//!
//! 1. For every audio datagram, decode the [media header](super::packet) and call
//!    [`handle_packet`](AudioJitterBuffer::handle_packet)`(seq, captured_us, payload, now)`,
//!    `now` being the arrival time.
//! 2. For every 20 ms slot of the speaker, call [`poll_playout`](AudioJitterBuffer::poll_playout)
//!    once, and play what it says: [`Playout::Frame`] → decode the payload;
//!    [`Playout::Conceal`] → decode the in-band FEC of the next packet if
//!    [`peek`](AudioJitterBuffer::peek)`(seq + 1)` has it, else run Opus PLC;
//!    [`Playout::Wait`] → play silence (nothing to play yet).
//! 3. After each slot, hand [`playout_delay_us`](AudioJitterBuffer::playout_delay_us) to the
//!    video playout for lip sync; now and then, read [`stats`](AudioJitterBuffer::stats).
//!
//! ```no_run
//! use kioskd::media::audio_jitter::{AudioJitterBuffer, JitterConfig, Playout};
//! let mut jb = AudioJitterBuffer::new(JitterConfig::default());
//! # let (seq, captured_us, payload, now) = (0u32, 0u64, vec![], 0u64);
//! jb.handle_packet(seq, captured_us, payload, now); // on each datagram
//! match jb.poll_playout(now) {                      // on each 20 ms speaker slot
//!     Playout::Frame { payload, .. } => { /* opus decode */ }
//!     Playout::Conceal { seq } => { let _fec = jb.peek(seq.wrapping_add(1)); /* FEC or PLC */ }
//!     Playout::Wait => { /* silence */ }
//! }
//! ```
//!
//! # How it decides
//!
//! The sender's and the receiver's clocks differ by an unknown constant, so every decision rests
//! on relative delays: `transit = arrival − capture` of each packet, and its minimum over the
//! last [`JitterConfig::window`] packets as the baseline (the fastest path seen). A packet's
//! *relative delay* is its transit minus that baseline.
//!
//! - **Target delay**: the [`JitterConfig::percentile`] of the relative delays in the window,
//!   clamped to `[min_delay_us, max_delay_us]`.
//! - **Schedule**: the speaker's slots are the clock. Playout starts at the first packet's
//!   arrival plus the target delay, with the lowest seq buffered; then each slot plays the next
//!   seq, so seq `n` is due at `base + (n − base_seq) × 20 ms`, `base` moving by one frame at
//!   each adjustment below.
//! - **Adjustments**: when the frame due would play more than one frame (plus 10 ms of
//!   hysteresis) above the target and the next frame is there, the two play in one slot,
//!   time-compressed (the delay shrinks by 20 ms and no sound is thrown away), at most once per
//!   [`JitterConfig::adapt_interval`] slots. When the buffer runs
//!   dry, the slot is concealed without advancing (the delay grows by 20 ms), as long as the
//!   delay stays under `max_delay_us`; beyond it, the missing frame is given up.
//! - **Gaps**: a missing frame with later ones buffered is concealed and given up, unless the next
//!   buffered frame is already due (its relative delay reached the target, as after a loss
//!   during which the buffer ran dry): then the gap is skipped and that frame plays.
//! - **Late** packets (their seq was played or given up) are counted and dropped; duplicates are
//!   ignored, also of frames already played (the last 64 seqs are remembered).
//! - **Sender restart** (seq jumps by more than [`RESTART_SEQ_JUMP`], or seq and capture time
//!   disagree by more than [`RESTART_CAPTURE_SKEW_US`]): everything but the counters
//!   resets and the packet starts a new stream. A paused sender (the buffer dry for
//!   [`REBUFFER_AFTER_DRY`] slots, or a fresh packet arriving behind the schedule) makes the
//!   buffer wait for packets again rather than call them all late.
//!
//! Memory: at most [`JitterConfig::capacity`] frames (default 50 = 1 s) of at most
//! [`MAX_AUDIO_PAYLOAD`] bytes each, plus the window of `window` delays (8 bytes each).

use std::collections::BTreeMap;

use serde::Serialize;

use super::packet::{MAX_AUDIO_PAYLOAD, RestartRule, SeqAnchor, extend_seq, seq_delta};
use super::stats::TransitWindow;
use super::{FRAME_US, UnixMicros};

/// A seq this far (in frames, either way) from the newest one seen is a new stream: 500 frames
/// = 10 s of audio. Reordering in the network is far smaller; a longer outage is better handled
/// as a fresh start anyway.
pub const RESTART_SEQ_JUMP: i64 = 500;

/// A newer seq whose capture time is this much older (µs) than the newest packet's, or an older
/// seq whose capture time is this much newer, is a new stream (a restarted sender, or a stepped
/// capture clock): 500 ms. Capture time grows with seq; a reordered packet is older in both, a
/// paused sender newer in both.
pub const RESTART_CAPTURE_SKEW_US: u64 = 500_000;
/// The two restart limits, as the seq unwrapping takes them.
const RESTART: RestartRule =
    RestartRule { seq_jump: RESTART_SEQ_JUMP, capture_skew_us: RESTART_CAPTURE_SKEW_US };

/// Slots in a row with nothing buffered after which the buffer stops concealing and waits for
/// packets again: 50 slots = 1 s. The sender has stopped (muted, paused); Opus PLC has long faded
/// to silence, and its seq will no longer match the schedule when it resumes.
pub const REBUFFER_AFTER_DRY: u32 = 50;

/// Hysteresis above `target + 1 frame` before a frame is dropped (µs): 10 ms, half a frame, so
/// that measurement noise does not drop a frame only to conceal one shortly after.
const DROP_HYSTERESIS_US: i64 = 10_000;

/// How many recent seqs below the schedule are remembered as received, to tell a duplicate of a
/// played frame from a late packet: the width of the bitmap.
const HISTORY_BITS: i64 = 64;

/// Jitter buffer settings. Defaults suit a branch network: 20 ms floor, 300 ms ceiling.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// Lowest target delay above the fastest path (µs). Default 20 ms: one frame of slack.
    pub min_delay_us: u64,
    /// Highest target delay above the fastest path (µs). Default 300 ms: beyond it a
    /// conversation breaks down; later packets are given up instead.
    pub max_delay_us: u64,
    /// Most frames held (default 50 = 1 s); beyond it the oldest is dropped. Worst case
    /// `capacity × MAX_AUDIO_PAYLOAD` bytes.
    pub capacity: usize,
    /// At most one deliberate drop per this many slots (default 5 = 100 ms), so that the delay
    /// shrinks smoothly, never faster than 20 %.
    pub adapt_interval: u32,
    /// Packets whose delays set the baseline and the target (default 150 = 3 s): long enough to
    /// remember a burst of jitter, short enough that the delay comes down within seconds after a
    /// disturbance (a queue that drained, an outage) — with 10 s it stayed near its ceiling.
    pub window: usize,
    /// Share of packets the target delay should catch in time (default 0.99).
    pub percentile: f64,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_us: 20_000,
            max_delay_us: 300_000,
            capacity: 50,
            adapt_interval: 5,
            window: 150,
            percentile: 0.99,
        }
    }
}

/// What to play in this 20 ms slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode and play this packet. With `before` (the delay is coming down), decode that
    /// frame first and play both in this slot, time-compressed (see [`super::stretch`]).
    Frame { seq: u32, captured_us: UnixMicros, payload: Vec<u8>, before: Option<Vec<u8>> },
    /// `seq` is missing: conceal it (Opus FEC from [`AudioJitterBuffer::peek`]`(seq + 1)`, or
    /// PLC). The same seq may come several times in a row when the buffer runs dry.
    Conceal { seq: u32 },
    /// Nothing to play: not started, buffering, or the sender stopped. Play silence.
    Wait,
}

/// Counters and gauges, cumulative over resets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AudioJitterStats {
    /// Packets handed to `handle_packet`.
    pub received: u64,
    /// Frames played.
    pub played: u64,
    /// Slots concealed (lost frames and dry slots).
    pub concealed: u64,
    /// Of `concealed`, slots inserted because the buffer ran dry (each grew the delay 20 ms).
    pub stretched: u64,
    /// Packets that came after their seq was played or given up.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames dropped because more than `capacity` were buffered.
    pub dropped_overflow: u64,
    /// Frames played time-compressed together with the next one, to bring the delay down to
    /// the target (not in `played`).
    pub accelerated: u64,
    /// Packets over [`MAX_AUDIO_PAYLOAD`], refused.
    pub oversized: u64,
    /// Restarts of the sender's stream.
    pub resets: u64,
    /// Times the schedule waited for a paused sender.
    pub rebuffers: u64,
    /// Current target delay above the fastest path, in ms.
    pub target_ms: f64,
    /// `now − captured_us` of the last played frame (µs), 0 if negative; meaningful when both
    /// ends share a clock (one process, or NTP-synced hosts).
    pub delay_us: Option<u64>,
}

#[derive(Debug)]
struct Buffered {
    captured_us: UnixMicros,
    payload: Vec<u8>,
}

/// Where playout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No packet since the start, a reset or a rebuffer.
    Idle,
    /// Packets are arriving; playout starts at `start_at`.
    Buffering { start_at: UnixMicros },
    /// One frame per slot.
    Playing,
}

/// The adaptive audio jitter buffer. See the [module docs](self) for the run loop.
#[derive(Debug)]
pub struct AudioJitterBuffer {
    config: JitterConfig,
    /// Frames waiting, by extended (unwrapped) seq. Never holds a seq below `cursor`.
    frames: BTreeMap<i64, Buffered>,
    /// The newest packet seen, as (extended seq, seq, capture time): the reference for unwrapping
    /// seq and for restart detection.
    newest: Option<(i64, u32, UnixMicros)>,
    phase: Phase,
    /// The next extended seq to play; anything below is late. `None` before the first start.
    cursor: Option<i64>,
    /// Bit `i` set: seq `cursor − 1 − i` was received (played or dropped). Tells duplicates from
    /// late packets.
    history: u64,
    /// The last frame played, as (extended seq, capture time): estimates when a missing frame was
    /// captured.
    last_played: Option<(i64, UnixMicros)>,
    /// Slots since the last deliberate adjustment (drop or stretch).
    since_adjust: u32,
    /// Slots in a row with an empty buffer.
    dry_slots: u32,
    /// Transit times of the last `window` packets: the baseline and the jitter.
    transits: TransitWindow,
    target_us: u64,
    /// How long the last played frame waited beyond the fastest path (µs).
    playout_delay_us: u64,
    stats: AudioJitterStats,
}

impl AudioJitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        let target_us = config.min_delay_us;
        let stats = AudioJitterStats { target_ms: target_us as f64 / 1000.0, ..Default::default() };
        Self {
            transits: TransitWindow::new(config.window),
            config,
            frames: BTreeMap::new(),
            newest: None,
            phase: Phase::Idle,
            cursor: None,
            history: 0,
            last_played: None,
            since_adjust: 0,
            dry_slots: 0,
            target_us,
            playout_delay_us: target_us,
            stats,
        }
    }

    /// Feeds one received packet; `now` is its arrival time. Late, duplicate and oversized
    /// packets are counted and dropped.
    pub fn handle_packet(&mut self, seq: u32, captured_us: UnixMicros, payload: Vec<u8>, now: UnixMicros) {
        self.stats.received += 1;
        if payload.len() > MAX_AUDIO_PAYLOAD {
            self.stats.oversized += 1;
            return;
        }
        let ext =
            extend_seq(self.newest.map(SeqAnchor::from), seq, captured_us, RESTART).unwrap_or_else(|| {
                self.reset();
                i64::from(seq)
            });
        if self.frames.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        let is_newest = self.newest.is_none_or(|(newest_ext, ..)| ext > newest_ext);
        if let Some(cursor) = self.cursor
            && ext < cursor
        {
            let back = cursor - 1 - ext;
            if back < HISTORY_BITS && self.history >> back & 1 == 1 {
                self.stats.duplicates += 1;
                return;
            }
            self.record_transit(now, captured_us);
            let fresh = self.relative_delay(now, captured_us) <= self.target_signed();
            if is_newest && fresh && self.phase == Phase::Playing {
                // A new packet, in time for its capture, yet behind the schedule: the sender
                // paused while the slots ran on. Follow the sender.
                self.shift_cursor(ext);
                self.stats.rebuffers += 1;
            } else {
                self.stats.late += 1;
                return;
            }
        } else {
            self.record_transit(now, captured_us);
        }
        if is_newest {
            self.newest = Some((ext, seq, captured_us));
        }
        self.frames.insert(ext, Buffered { captured_us, payload });
        if self.phase == Phase::Idle {
            self.phase = Phase::Buffering { start_at: now.saturating_add(self.target_us) };
        }
        while self.frames.len() > self.config.capacity.max(1) {
            let Some((oldest, _)) = self.frames.pop_first() else { break };
            self.stats.dropped_overflow += 1;
            if let Some(cursor) = self.cursor
                && oldest >= cursor
            {
                self.skip_to(oldest);
                self.advance(true);
            }
        }
    }

    /// What to play in the speaker slot starting at `now`. Call exactly once per 20 ms slot:
    /// every call after the start consumes one slot.
    #[must_use]
    pub fn poll_playout(&mut self, now: UnixMicros) -> Playout {
        match self.phase {
            Phase::Idle => return Playout::Wait,
            Phase::Buffering { start_at } => {
                if now < start_at {
                    return Playout::Wait;
                }
                let Some((&first, _)) = self.frames.first_key_value() else {
                    self.phase = Phase::Idle;
                    return Playout::Wait;
                };
                match self.cursor {
                    Some(_) => self.skip_to(first),
                    None => self.cursor = Some(first),
                }
                self.phase = Phase::Playing;
                self.since_adjust = 0;
                self.dry_slots = 0;
            }
            Phase::Playing => {}
        }
        let Some(cursor) = self.cursor else {
            // Playing always has a cursor (set just above); recover by waiting for packets.
            self.phase = Phase::Idle;
            return Playout::Wait;
        };
        self.since_adjust = self.since_adjust.saturating_add(1);

        if let Some(frame) = self.frames.get(&cursor) {
            self.dry_slots = 0;
            let delay = self.relative_delay(now, frame.captured_us);
            let threshold = self.target_signed().saturating_add(FRAME_US as i64 + DROP_HYSTERESIS_US);
            let too_long = delay >= threshold;
            if too_long
                && self.since_adjust > self.config.adapt_interval
                && self.frames.contains_key(&(cursor + 1))
            {
                let before = self.frames.remove(&cursor).map(|f| f.payload);
                self.advance(true);
                self.stats.accelerated += 1;
                self.since_adjust = 0;
                return match self.play_cursor(now) {
                    Playout::Frame { seq, captured_us, payload, .. } => {
                        Playout::Frame { seq, captured_us, payload, before }
                    }
                    other => other,
                };
            }
            return self.play_cursor(now);
        }

        if let Some((&next, frame)) = self.frames.range(cursor + 1..).next() {
            self.dry_slots = 0;
            if self.relative_delay(now, frame.captured_us) >= self.target_signed() {
                // The next frame is due already: conceal no more, skip the gap.
                self.skip_to(next);
                return self.play_cursor(now);
            }
            self.advance(false);
            self.stats.concealed += 1;
            return Playout::Conceal { seq: cursor as u32 };
        }

        // Dry.
        self.dry_slots += 1;
        if self.dry_slots > REBUFFER_AFTER_DRY {
            // The sender stopped: wait for its next packet, which may carry any later seq.
            let floor = self.newest.map_or(cursor, |(newest, ..)| newest + 1);
            self.shift_cursor(floor);
            self.phase = Phase::Idle;
            self.stats.rebuffers += 1;
            return Playout::Wait;
        }
        self.stats.concealed += 1;
        let estimate = self.last_played.map(|(ext, captured)| {
            let frames = (cursor - ext) as u64;
            let captured = captured.wrapping_add(frames.wrapping_mul(FRAME_US));
            self.relative_delay(now, captured)
        });
        let ceiling = i64::try_from(self.config.max_delay_us).unwrap_or(i64::MAX);
        if estimate.is_some_and(|delay| delay.saturating_add(FRAME_US as i64) <= ceiling) {
            // Probably late rather than lost: wait one more slot for it.
            self.stats.stretched += 1;
            self.since_adjust = 0;
        } else {
            self.advance(false);
        }
        Playout::Conceal { seq: cursor as u32 }
    }

    /// The payload of `seq` if it is buffered: for Opus in-band FEC of `seq − 1`.
    pub fn peek(&self, seq: u32) -> Option<&[u8]> {
        let (newest_ext, newest_seq, _) = self.newest?;
        let ext = newest_ext + i64::from(seq_delta(seq, newest_seq));
        self.frames.get(&ext).map(|f| f.payload.as_slice())
    }

    /// The current target delay above the fastest path (µs).
    pub fn target_delay_us(&self) -> u64 {
        self.target_us
    }

    /// How long the last played frame waited beyond the fastest path (µs): its relative delay
    /// at playout, the target delay before the first frame. Free of the clocks' offset, it is
    /// the audio delay for lip sync:
    /// [`VideoPlayout::set_audio_delay`](super::video_playout::VideoPlayout::set_audio_delay).
    pub fn playout_delay_us(&self) -> u64 {
        self.playout_delay_us
    }

    /// Frames buffered.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn stats(&self) -> &AudioJitterStats {
        &self.stats
    }

    /// Plays the frame at the cursor, which must be buffered.
    fn play_cursor(&mut self, now: UnixMicros) -> Playout {
        let Some(cursor) = self.cursor else { return Playout::Wait };
        let Some(frame) = self.frames.remove(&cursor) else {
            // Callers check that the frame is there; conceal if it is not.
            self.advance(false);
            self.stats.concealed += 1;
            return Playout::Conceal { seq: cursor as u32 };
        };
        self.advance(true);
        let delay = now.wrapping_sub(frame.captured_us) as i64;
        self.stats.delay_us = Some(delay.max(0) as u64);
        self.playout_delay_us = self.relative_delay(now, frame.captured_us).max(0) as u64;
        self.stats.played += 1;
        self.last_played = Some((cursor, frame.captured_us));
        Playout::Frame {
            seq: cursor as u32,
            captured_us: frame.captured_us,
            payload: frame.payload,
            before: None,
        }
    }

    /// Moves the cursor past its seq, noting whether that seq was received.
    fn advance(&mut self, received: bool) {
        if let Some(cursor) = self.cursor.as_mut() {
            *cursor += 1;
            self.history = self.history << 1 | u64::from(received);
        }
    }

    /// Moves the cursor forward to `to`, the seqs in between missing.
    fn skip_to(&mut self, to: i64) {
        if let Some(cursor) = self.cursor
            && to > cursor
        {
            let n = to - cursor;
            self.history = if n < HISTORY_BITS { self.history << n } else { 0 };
            self.cursor = Some(to);
        }
    }

    /// Moves the cursor to `to`, forward or back (after a paused sender).
    fn shift_cursor(&mut self, to: i64) {
        match self.cursor {
            Some(cursor) if to < cursor => {
                let n = cursor - to;
                self.history = if n < HISTORY_BITS { self.history >> n } else { 0 };
                self.cursor = Some(to);
            }
            Some(_) => self.skip_to(to),
            None => self.cursor = Some(to),
        }
    }

    /// The target delay as a signed delay, to compare with relative delays.
    fn target_signed(&self) -> i64 {
        i64::try_from(self.target_us).unwrap_or(i64::MAX)
    }

    /// A packet's delay above the fastest path in the window (µs).
    fn relative_delay(&self, now: UnixMicros, captured_us: UnixMicros) -> i64 {
        self.transits.relative_delay(now, captured_us)
    }

    /// Adds a packet's transit to the window and recomputes the baseline and the target.
    fn record_transit(&mut self, now: UnixMicros, captured_us: UnixMicros) {
        let jitter = self.transits.record(now, captured_us, self.config.percentile);
        let (low, high) = (self.config.min_delay_us, self.config.max_delay_us.max(self.config.min_delay_us));
        self.target_us = jitter.clamp(low, high);
        self.stats.target_ms = self.target_us as f64 / 1000.0;
    }

    /// Forgets the stream (a restarted sender); counters stay.
    fn reset(&mut self) {
        self.frames.clear();
        self.newest = None;
        self.phase = Phase::Idle;
        self.cursor = None;
        self.history = 0;
        self.last_played = None;
        self.since_adjust = 0;
        self.dry_slots = 0;
        self.transits.clear();
        self.target_us = self.config.min_delay_us;
        self.stats.target_ms = self.target_us as f64 / 1000.0;
        self.stats.resets += 1;
    }
}

#[cfg(test)]
mod tests;
