//! Receiver-side rate control: how much video the path from the sender can take, measured
//! where the media arrives, in the spirit of WebRTC's receiver-estimated maximum bitrate.
//!
//! The receiver watches the one-way *queueing delay* of the sender's media: each packet's
//! transit (arrival minus the sender's capture stamp) above the smallest transit seen in the
//! last [`BASE_WINDOW_US`]. A constant clock offset between the two machines cancels out. Audio
//! gives the signal (50 small packets a second, evenly spaced); video frames only when no audio
//! arrives, since a large frame's transit includes its own serialisation.
//!
//! Every [`EVAL_US`] the median queueing delay of the last [`RECENT_US`] decides:
//! - above [`OVERUSE_US`]: a queue builds on the path. The cap becomes a share of the video
//!   rate that gets through (85 %, less the larger the queue, down to 40 %), so that the queue
//!   drains within about a second; at most once per [`CUT_EVERY_US`] (a cut needs a round trip
//!   to take effect), and again only while the queue is larger than at the last cut.
//! - below [`UNDERUSE_US`]: the path keeps up; an existing cap rises by 8 % per
//!   [`RAISE_EVERY_US`], and disappears above [`NO_CAP_BPS`].
//! - in between: the cap holds — except at the bottom ([`LOW_CAP_BPS`] or less), where the
//!   sender sends little or no video and a queue of that size is not one its media can build
//!   (a busy receiver or sender reads and stamps late): the cap rises as in underuse. Holding
//!   there kept a kiosk's video off for the rest of a call after one overloaded second.
//!
//! Nothing for [`GAP_US`] is an outage, not a queue: what the sender held meanwhile arrives
//! in a burst when the path returns, late by the outage's length, and the video rate measured
//! across it is near zero. Cutting on that took the cap to its floor (audio only) and it took
//! 16 s to climb back, so after a gap the windows start afresh and nothing is cut for
//! [`AFTER_GAP_US`].
//!
//! The sender receives the cap as a `rate_hint` and sends at most that. Measured at the
//! receiver, the signal belongs to this direction alone: the sender's own round trip also grows
//! when the *other* direction is congested (its acknowledgements queue there), which cut a
//! kiosk's video to nothing on a link that was full only towards the kiosk.

use std::collections::VecDeque;

use super::UnixMicros;

/// The base transit is the smallest of this window.
pub const BASE_WINDOW_US: u64 = 20_000_000;
/// How often the receiver decides.
pub const EVAL_US: u64 = 250_000;
/// The queueing delay is the median of this recent window.
pub const RECENT_US: u64 = 300_000;
/// Median queueing delay above which the path is overused.
pub const OVERUSE_US: i64 = 40_000;
/// Median queueing delay below which the path keeps up.
pub const UNDERUSE_US: i64 = 15_000;
/// Cuts at most this often.
pub const CUT_EVERY_US: u64 = 500_000;
/// Raises at most this often.
pub const RAISE_EVERY_US: u64 = 500_000;
/// The received video rate is measured over this window.
pub const RATE_WINDOW_US: u64 = 1_000_000;
/// At or below this cap, a standing queue between [`UNDERUSE_US`] and [`OVERUSE_US`] does not
/// hold the cap: it rises as in underuse.
pub const LOW_CAP_BPS: u64 = 150_000;
/// A cap above this is no cap.
pub const NO_CAP_BPS: u64 = 10_000_000;
/// The lowest cap: the sender's ladder goes to audio only below its floor anyway.
pub const MIN_CAP_BPS: u64 = 30_000;
/// An unchanged cap is repeated this often, so that the sender does not ease it.
pub const REPEAT_US: u64 = 1_000_000;
/// No media for this long is an outage (audio alone arrives every 20 ms; with DTX in
/// silence, every 400 ms).
pub const GAP_US: u64 = 1_000_000;
/// After an outage, no cut for this long: the backlog arrives first.
pub const AFTER_GAP_US: u64 = 1_000_000;
/// Audio within this long makes video transits irrelevant.
const AUDIO_FRESH_US: u64 = 1_000_000;
/// Transits kept for the recent window at most (a bound for a flood).
const MAX_RECENT: usize = 512;

/// The receiver's estimate for one sender.
#[derive(Debug, Default)]
pub struct ReceiverRate {
    /// Per-second minima of transit: (second, min transit µs).
    base: VecDeque<(u64, i64)>,
    /// Recent transits: (arrival, transit).
    recent: VecDeque<(UnixMicros, i64)>,
    /// Video bytes received: (arrival, bytes).
    video: VecDeque<(UnixMicros, u64)>,
    last_audio: Option<UnixMicros>,
    first_video: Option<UnixMicros>,
    /// The latest arrival of anything, and until when no cut is made after a gap.
    last_arrival: Option<UnixMicros>,
    hold_until: UnixMicros,
    last_eval: UnixMicros,
    last_cut: Option<UnixMicros>,
    /// The queueing delay at the last cut, until the path keeps up again.
    q_at_cut: Option<i64>,
    last_raise: UnixMicros,
    last_sent: Option<(u64, UnixMicros)>,
    cap: Option<u64>,
}

/// What the last evaluation found (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Over,
    Normal,
    Under,
}

impl ReceiverRate {
    pub fn new() -> Self {
        Self::default()
    }

    /// A first sending of an audio frame captured at `captured_us` arrived at `now` (copies
    /// of earlier frames are sent late on purpose and must not be fed).
    pub fn on_audio(&mut self, now: UnixMicros, captured_us: UnixMicros) {
        self.arrived(now);
        self.last_audio = Some(now);
        self.transit(now, captured_us);
    }

    /// A whole video frame of `len` bytes captured at `captured_us` arrived at `now`.
    pub fn on_video(&mut self, now: UnixMicros, captured_us: UnixMicros, len: u64) {
        self.arrived(now);
        self.first_video.get_or_insert(now);
        self.video.push_back((now, len));
        while self.video.front().is_some_and(|(t, _)| now.saturating_sub(*t) > RATE_WINDOW_US) {
            self.video.pop_front();
        }
        if self.last_audio.is_none_or(|t| now.saturating_sub(t) > AUDIO_FRESH_US) {
            self.transit(now, captured_us);
        }
    }

    /// Something arrived at `now`: after a gap, the recent windows start afresh.
    fn arrived(&mut self, now: UnixMicros) {
        if self.last_arrival.is_some_and(|t| now.saturating_sub(t) >= GAP_US) {
            self.recent.clear();
            self.video.clear();
            self.first_video = None;
            self.q_at_cut = None;
            self.hold_until = now + AFTER_GAP_US;
        }
        self.last_arrival = Some(self.last_arrival.map_or(now, |t| t.max(now)));
    }

    fn transit(&mut self, now: UnixMicros, captured_us: UnixMicros) {
        let transit = now as i64 - captured_us as i64;
        let second = now / 1_000_000;
        match self.base.back_mut() {
            Some((s, m)) if *s == second => *m = (*m).min(transit),
            _ => self.base.push_back((second, transit)),
        }
        while self.base.front().is_some_and(|(s, _)| (second - *s) * 1_000_000 > BASE_WINDOW_US) {
            self.base.pop_front();
        }
        self.recent.push_back((now, transit));
        while self.recent.len() > MAX_RECENT
            || self.recent.front().is_some_and(|(t, _)| now.saturating_sub(*t) > RECENT_US)
        {
            self.recent.pop_front();
        }
    }

    /// The median queueing delay of the recent window (µs), if there are enough samples.
    pub fn queueing_us(&self, now: UnixMicros) -> Option<i64> {
        let base = self.base.iter().map(|(_, m)| *m).min()?;
        let mut q: Vec<i64> = self
            .recent
            .iter()
            .filter(|(t, _)| now.saturating_sub(*t) <= RECENT_US)
            .map(|(_, d)| d - base)
            .collect();
        if q.len() < 3 {
            return None;
        }
        q.sort_unstable();
        Some(q[q.len() / 2])
    }

    /// Video received over the last second (bit/s); over the time since the first frame when
    /// that is shorter (at least half a second: the first frame is a large keyframe).
    pub fn received_bps(&self, now: UnixMicros) -> u64 {
        let bytes: u64 =
            self.video.iter().filter(|(t, _)| now.saturating_sub(*t) <= RATE_WINDOW_US).map(|(_, b)| b).sum();
        let span =
            self.first_video.map_or(RATE_WINDOW_US, |f| now.saturating_sub(f).clamp(500_000, RATE_WINDOW_US));
        bytes * 8 * 1_000_000 / span
    }

    /// The cap now in force, if any.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Decides, at most every [`EVAL_US`]; returns a cap to send to the sender.
    pub fn poll(&mut self, now: UnixMicros) -> Option<u32> {
        if now.saturating_sub(self.last_eval) < EVAL_US {
            return None;
        }
        self.last_eval = now;
        let q = self.queueing_us(now)?;
        let usage = if q > OVERUSE_US {
            Usage::Over
        } else if q < UNDERUSE_US {
            Usage::Under
        } else {
            Usage::Normal
        };
        match usage {
            // Cut again only while the queue still grows: a queue that stands without growing
            // is draining, or is not the network's (a receiver short of CPU reads late too, and
            // cutting on it took a kiosk's video down to nothing on the emulated board).
            Usage::Over
                if now >= self.hold_until
                    && self.last_cut.is_none_or(|t| now.saturating_sub(t) >= CUT_EVERY_US)
                    && self.q_at_cut.is_none_or(|at_cut| q > at_cut) =>
            {
                // 85 % of what gets through, minus 1 point per 8 ms of queue (at least 40 %):
                // the larger the queue, the faster it must drain.
                let share = (85 - q / 8_000).clamp(40, 85) as u64;
                let got = self.received_bps(now);
                let cut = (got * share / 100).max(MIN_CAP_BPS);
                // What gets through lags a cut: never raise the cap by cutting.
                self.cap = Some(self.cap.map_or(cut, |c| c.min(cut)));
                self.last_cut = Some(now);
                self.q_at_cut = Some(q);
                self.last_raise = now;
            }
            Usage::Under | Usage::Normal
                if now.saturating_sub(self.last_raise) >= RAISE_EVERY_US
                    && (usage == Usage::Under || self.cap.is_some_and(|c| c <= LOW_CAP_BPS)) =>
            {
                self.last_raise = now;
                self.q_at_cut = None;
                if let Some(c) = self.cap {
                    let raised = c * 108 / 100;
                    self.cap = (raised < NO_CAP_BPS).then_some(raised);
                }
            }
            _ => {}
        }
        let cap = self.cap.unwrap_or(NO_CAP_BPS);
        let changed = self.last_sent.is_none_or(|(c, _)| c != cap);
        let due = self.last_sent.is_some_and(|(_, t)| now.saturating_sub(t) >= REPEAT_US);
        if (changed && (self.cap.is_some() || self.last_sent.is_some())) || (due && self.cap.is_some()) {
            self.last_sent = Some((cap, now));
            return Some(cap.min(u64::from(u32::MAX)) as u32);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// A sender of 50 audio frames and 30 video frames a second through a bottleneck of
    /// `capacity_bps` with a FIFO queue: returns the receiver's hints over `secs`, the sender
    /// obeying them (video at min(start, cap)), and the largest queue delay after the first
    /// `settle_s` seconds.
    fn simulate(capacity_bps: u64, start_bps: u64, secs: u64, settle_s: u64) -> (Vec<(u64, u32)>, u64) {
        let mut rx = ReceiverRate::new();
        let mut rate = start_bps;
        let mut hints = Vec::new();
        let t0: u64 = 1_700_000_000_000_000;
        // When the bottleneck is free again.
        let mut busy_until = t0;
        let mut worst_after = 0;
        let audio_bits = 100 * 8;
        // Pending hints: (when the sender gets it, cap).
        let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
        let mut now = t0;
        let step = MS;
        let mut next_audio = t0;
        let mut next_video = t0;
        while now < t0 + secs * 1_000_000 {
            while pending.front().is_some_and(|(at, _)| *at <= now) {
                let (_, cap) = pending.pop_front().unwrap_or_default();
                rate = start_bps.min(cap);
            }
            let send = |bits: u64, busy_until: &mut u64| -> u64 {
                let start = (*busy_until).max(now);
                *busy_until = start + bits * 1_000_000 / capacity_bps;
                *busy_until + 5 * MS
            };
            if now >= next_audio {
                let arrive = send(audio_bits, &mut busy_until);
                rx.on_audio(arrive, now);
                if now > t0 + settle_s * 1_000_000 {
                    worst_after = worst_after.max(arrive - now - 5 * MS);
                }
                next_audio += 20 * MS;
            }
            if now >= next_video {
                let bits = rate / 30;
                let arrive = send(bits, &mut busy_until);
                rx.on_video(arrive, now, bits / 8);
                next_video += 33_333;
            }
            if let Some(cap) = rx.poll(now) {
                hints.push((now - t0, cap));
                pending.push_back((now + 20 * MS, u64::from(cap)));
            }
            now += step;
        }
        (hints, worst_after / MS)
    }

    /// One overloaded moment takes the cap to its floor; a standing queue of 25 ms afterwards
    /// (a busy machine, not the path) does not keep it there.
    #[test]
    fn a_cap_at_the_floor_rises_through_a_standing_queue() {
        let mut rx = ReceiverRate::new();
        let t0: u64 = 1_700_000_000_000_000;
        let mut caps = Vec::new();
        for i in 0..(25 * 50u64) {
            let sent = t0 + i * 20 * MS;
            let extra = match i {
                0..50 => 0,
                50..150 => (i - 50) * 3 * MS,
                _ => 25 * MS,
            };
            rx.on_audio(sent + 5 * MS + extra, sent);
            if let Some(cap) = rx.poll(sent + 5 * MS + extra) {
                caps.push((i / 50, cap));
            }
        }
        let lowest = caps.iter().map(|(_, c)| *c).min().expect("a cap");
        assert_eq!(u64::from(lowest), MIN_CAP_BPS, "{caps:?}");
        let last = caps.last().expect("hints").1;
        assert!(u64::from(last) > LOW_CAP_BPS, "the cap stayed at {last} bit/s: {caps:?}");
    }

    #[test]
    fn a_clear_path_gets_no_cap() {
        let (hints, worst) = simulate(5_000_000, 1_000_000, 10, 0);
        assert!(hints.is_empty(), "{hints:?}");
        assert!(worst < 10, "{worst} ms");
    }

    #[test]
    fn a_narrow_path_is_found_and_its_queue_kept_short() {
        let (hints, worst) = simulate(500_000, 1_000_000, 20, 5);
        let first = hints.first().copied();
        assert!(first.is_some_and(|(t, cap)| t < 1_500_000 && cap < 500_000), "{hints:?}");
        assert!(worst < 250, "queue after adapting: {worst} ms; {hints:?}");
        // It keeps probing near the capacity, not far below it.
        let late: Vec<u32> = hints.iter().filter(|(t, _)| *t > 10_000_000).map(|(_, c)| *c).collect();
        assert!(late.iter().all(|&c| c > 200_000), "{late:?}");
    }

    #[test]
    fn the_cap_lifts_when_the_path_recovers() {
        let mut rx = ReceiverRate::new();
        let t0 = 1_700_000_000_000_000u64;
        // A second of audio on time, then half a second 200 ms late, then on time again for
        // 30 s (8 % every half second takes the cap from its cut to none in about 20 s).
        let mut hints = Vec::new();
        for i in 0..1_600u64 {
            let now = t0 + i * 20 * MS;
            let late = if (50..75).contains(&i) { 200 * MS } else { 0 };
            rx.on_audio(now + late, now);
            rx.on_video(now + late, now, 2_000);
            if let Some(c) = rx.poll(now + late) {
                hints.push(c);
            }
        }
        assert!(hints.first().is_some_and(|&c| c < 800_000), "{hints:?}");
        assert_eq!(hints.last().copied(), Some(NO_CAP_BPS as u32), "{hints:?}");
    }

    #[test]
    fn a_standing_delay_that_does_not_grow_is_cut_for_once_not_to_the_floor() {
        // A receiver short of CPU: after a second on time, every packet reads 70–90 ms late,
        // not more and more; the sender (300 kbit/s) obeys each cap at once.
        let mut rx = ReceiverRate::new();
        let t0 = 1_700_000_000_000_000u64;
        let mut hints = Vec::new();
        let mut rate = 300_000u64;
        for i in 0..400u64 {
            let now = t0 + i * 20 * MS;
            let late = if i < 50 { 0 } else { (70 + (i * 7) % 21) * MS };
            rx.on_audio(now + late, now);
            rx.on_video(now + late, now, rate / 8 / 50);
            if let Some(c) = rx.poll(now + late) {
                hints.push(c);
                rate = rate.min(u64::from(c));
            }
        }
        let lowest = hints.iter().copied().min().unwrap_or(u32::MAX);
        assert!(lowest > 150_000, "cut to {lowest}: {hints:?}");
    }

    #[test]
    fn an_outage_is_not_a_queue() {
        // 500 kbit/s of video on time for 5 s, then 3 s of nothing; when the path returns, the
        // 400 ms of audio the sender held arrive at once, then everything is on time again.
        let mut rx = ReceiverRate::new();
        let t0 = 1_700_000_000_000_000u64;
        let back = t0 + 8_000_000;
        let mut hints = Vec::new();
        for i in 0..750u64 {
            let sent = t0 + i * 20 * MS;
            let arrive = if sent < t0 + 5_000_000 {
                sent + 5 * MS
            } else if sent < back - 400 * MS {
                continue; // lost in the outage
            } else {
                sent.max(back) + 5 * MS
            };
            rx.on_audio(arrive, sent);
            if sent >= back || sent < t0 + 5_000_000 {
                rx.on_video(arrive, sent, 500_000 / 8 / 50);
            }
            if let Some(c) = rx.poll(arrive) {
                hints.push((arrive - t0, c));
            }
        }
        assert!(hints.is_empty(), "{hints:?}");
        // A queue that builds after the gap is still found once the backlog is through.
        for i in 0..100u64 {
            let sent = t0 + 15_000_000 + i * 20 * MS;
            let arrive = sent + 5 * MS + i * 3 * MS;
            rx.on_audio(arrive, sent);
            rx.on_video(arrive, sent, 500_000 / 8 / 50);
            if let Some(c) = rx.poll(arrive) {
                hints.push((arrive - t0, c));
            }
        }
        assert!(hints.first().is_some_and(|&(_, c)| c < 500_000 && c > 200_000), "{hints:?}");
    }

    #[test]
    fn a_clock_offset_between_the_machines_does_not_matter() {
        let mut a = ReceiverRate::new();
        let mut b = ReceiverRate::new();
        let t0 = 1_700_000_000_000_000u64;
        for i in 0..300u64 {
            let now = t0 + i * 20 * MS;
            let q = (i % 7) * 3 * MS;
            a.on_audio(now + q, now);
            // The sender's clock is 3 s ahead of the receiver's.
            b.on_audio(now + q, now + 3_000_000);
            assert_eq!(a.queueing_us(now + q), b.queueing_us(now + q));
        }
    }

    #[test]
    fn copies_and_video_do_not_count_while_audio_flows() {
        let mut rx = ReceiverRate::new();
        let t0 = 1_700_000_000_000_000u64;
        for i in 0..100u64 {
            let now = t0 + i * 20 * MS;
            rx.on_audio(now + 5 * MS, now);
            // A big frame takes 300 ms to arrive: its own serialisation, not a queue.
            rx.on_video(now + 300 * MS, now, 20_000);
        }
        assert_eq!(rx.queueing_us(t0 + 100 * 20 * MS), Some(0));
    }

    #[test]
    fn without_samples_there_is_no_decision() {
        let mut rx = ReceiverRate::new();
        assert_eq!(rx.poll(1_000_000_000), None);
        rx.on_audio(1_000_000_000, 999_990_000);
        assert_eq!(rx.poll(1_000_300_000), None);
        assert_eq!(rx.cap(), None);
    }
}
