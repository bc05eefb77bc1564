//! Puts received video frames back in sequence before the decoder.
//!
//! Each frame travels on its own QUIC stream, so a frame that lost a packet completes (after
//! its retransmission) behind the frames that followed it. The decoder needs frames in order:
//! without this stage every overtaken frame looked like a lost one and cost a keyframe. The
//! reorder stage holds frames that arrive ahead of a missing one, for a wait that follows how
//! long missing frames actually took to come (the retransmission should come by then), and at
//! most a wait's worth of frames; then the missing frame is given up and the held ones go on
//! (the playout then asks for a keyframe). A keyframe ends a wait at once: nothing before it
//! is needed any more.
//!
//! The wait: 1.25 × the longest of the last 16 delays with which a missing frame completed
//! (counted from the first frame held behind it, also when it came after it was given up) in
//! the last 30 s, plus 20 ms, within [`ReorderConfig::max_wait_us`] and [`ReorderConfig::wait_cap_us`]. A
//! retransmission takes about one and a half round trips of the sender's leg, which the
//! receiver cannot see (its own leg to the hub may be short): on a 120 ms path with 20 ms of
//! jitter (bench `mobile`), a fixed 150 ms gave up 11 frames in 20 s, each costing a keyframe
//! and a freeze; learning the wait took video shown from 89 % to 97 %.
//!
//! Sans-IO: `push` on each frame, `poll` when [`VideoReorder::poll_timeout`] passes.

use super::UnixMicros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// The wait for a missing frame to start with, and the least it becomes (µs). Default
    /// 150 ms.
    pub max_wait_us: u64,
    /// The most the wait becomes (µs). Default 400 ms: beyond that, a keyframe comes sooner.
    pub wait_cap_us: u64,
    /// Most frames held behind a missing one, at least (a wait's worth at 30 fps, if more).
    /// Default 8 (a quarter second at 30 fps).
    pub max_held: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        Self { max_wait_us: 150_000, wait_cap_us: 400_000, max_held: 8 }
    }
}

/// Completion delays of missing frames remembered for the wait.
const FILLS_KEPT: usize = 16;
/// Given-up frames remembered, in case they still come.
const GIVEN_UP_KEPT: usize = 16;
/// A frame later than this is not a retransmission worth waiting for.
const FILL_MAX_US: u64 = 1_000_000;
/// Completion delays older than this are forgotten (the path may have changed).
const FILL_KEPT_US: u64 = 30_000_000;

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Frames that arrived ahead of a missing one and were held.
    pub held: u64,
    /// Missing frames given up (their successors went on without them).
    pub gaps_given_up: u64,
    /// Frames before a keyframe that were dropped because the keyframe made them useless.
    pub skipped_for_keyframe: u64,
}

struct Held<T> {
    seq: u32,
    arrived_us: UnixMicros,
    frame: T,
}

/// The reorder stage for one video stream; `T` is the frame.
pub struct VideoReorder<T> {
    config: ReorderConfig,
    /// The seq the decoder needs next; unknown until the first frame.
    next: Option<u32>,
    held: Vec<Held<T>>,
    stats: ReorderStats,
    /// The wait now in force (µs), learnt from `fills`.
    wait_us: u64,
    /// (when, delay) of the latest completions of missing frames.
    fills: std::collections::VecDeque<(UnixMicros, u64)>,
    /// Frames given up: (seq, when the first frame held behind it arrived).
    given_up: std::collections::VecDeque<(u32, UnixMicros)>,
}

impl<T> VideoReorder<T> {
    pub fn new(config: ReorderConfig) -> Self {
        Self {
            config,
            next: None,
            held: Vec::new(),
            stats: ReorderStats::default(),
            wait_us: config.max_wait_us,
            fills: Default::default(),
            given_up: Default::default(),
        }
    }

    /// The wait for a missing frame now in force (µs).
    pub fn wait_us(&self) -> u64 {
        self.wait_us
    }

    fn max_held(&self) -> usize {
        self.config.max_held.max((self.wait_us / 33_333) as usize + 2)
    }

    /// A missing frame completed at `now`, `delay` after the first frame held behind it.
    fn learn(&mut self, now: UnixMicros, delay: u64) {
        if delay > FILL_MAX_US {
            return;
        }
        if self.fills.len() == FILLS_KEPT {
            self.fills.pop_front();
        }
        self.fills.push_back((now, delay));
        self.update_wait(now);
    }

    /// Forgets old completions and sets the wait from the rest.
    fn update_wait(&mut self, now: UnixMicros) {
        while self.fills.front().is_some_and(|(at, _)| now.saturating_sub(*at) > FILL_KEPT_US) {
            self.fills.pop_front();
        }
        let longest = self.fills.iter().map(|(_, d)| *d).max().unwrap_or(0);
        let cap = self.config.wait_cap_us.max(self.config.max_wait_us);
        self.wait_us = (longest * 5 / 4 + 20_000).clamp(self.config.max_wait_us, cap);
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// A frame arrived; returns the frames to decode now, in order. A frame behind the next
    /// expected one (late, or a repeat) is passed on at once: the playout counts it stale.
    pub fn push(&mut self, seq: u32, keyframe: bool, frame: T, now: UnixMicros) -> Vec<T> {
        let mut out = Vec::new();
        if self.fills.front().is_some_and(|(at, _)| now.saturating_sub(*at) > FILL_KEPT_US) {
            self.update_wait(now);
        }
        let Some(next) = self.next else {
            self.next = Some(seq.wrapping_add(1));
            out.push(frame);
            return out;
        };
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead < 0 {
            // Late: if it was given up, how late it came teaches the wait.
            if let Some(i) = self.given_up.iter().position(|(s, _)| *s == seq)
                && let Some((_, since)) = self.given_up.remove(i)
            {
                self.learn(now, now.saturating_sub(since));
            }
            out.push(frame);
            return out;
        }
        if ahead == 0 {
            if let Some(since) = self.held.iter().map(|h| h.arrived_us).min() {
                self.learn(now, now.saturating_sub(since));
            }
            self.next = Some(seq.wrapping_add(1));
            out.push(frame);
            self.drain_in_order(&mut out);
            return out;
        }
        if keyframe {
            // Decodable on its own: what is missing before it no longer matters.
            let before = self.held.iter().filter(|h| (h.seq.wrapping_sub(seq) as i32) < 0).count();
            self.stats.skipped_for_keyframe += before as u64;
            self.held.retain(|h| (h.seq.wrapping_sub(seq) as i32) > 0);
            self.stats.gaps_given_up += 1;
            self.next = Some(seq.wrapping_add(1));
            out.push(frame);
            self.drain_in_order(&mut out);
            return out;
        }
        if self.held.iter().any(|h| h.seq == seq) {
            return out; // a repeat of a frame already held
        }
        self.stats.held += 1;
        self.held.push(Held { seq, arrived_us: now, frame });
        if self.held.len() > self.max_held() {
            self.give_up(&mut out);
        }
        out
    }

    /// When the oldest held frame has waited long enough: the frames to decode now.
    pub fn poll(&mut self, now: UnixMicros) -> Vec<T> {
        let mut out = Vec::new();
        while self.poll_timeout().is_some_and(|t| now >= t) {
            self.give_up(&mut out);
        }
        out
    }

    /// When [`poll`](Self::poll) has something to release.
    pub fn poll_timeout(&self) -> Option<UnixMicros> {
        self.held.iter().map(|h| h.arrived_us).min().map(|t| t.saturating_add(self.wait_us))
    }

    /// The missing frame is not coming: go on from the earliest held frame.
    fn give_up(&mut self, out: &mut Vec<T>) {
        let Some(next) = self.next else { return };
        let Some(first) = self.held.iter().map(|h| h.seq).min_by_key(|s| s.wrapping_sub(next)) else {
            return;
        };
        let since = self.held.iter().map(|h| h.arrived_us).min().unwrap_or_default();
        // Remember the first few frames skipped, in case they still come.
        for seq in (0..first.wrapping_sub(next).min(4)).map(|i| next.wrapping_add(i)) {
            if self.given_up.len() == GIVEN_UP_KEPT {
                self.given_up.pop_front();
            }
            self.given_up.push_back((seq, since));
        }
        self.stats.gaps_given_up += 1;
        self.next = Some(first);
        self.drain_in_order(out);
    }

    /// Passes on the held frames that follow `next` without a gap.
    fn drain_in_order(&mut self, out: &mut Vec<T>) {
        while let Some(next) = self.next {
            let Some(i) = self.held.iter().position(|h| h.seq == next) else { return };
            let h = self.held.swap_remove(i);
            self.next = Some(next.wrapping_add(1));
            out.push(h.frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn run(r: &mut VideoReorder<u32>, frames: &[(u32, bool, u64)]) -> Vec<u32> {
        let mut out = Vec::new();
        for &(seq, key, at) in frames {
            out.extend(r.poll(at));
            out.extend(r.push(seq, key, seq, at));
        }
        out
    }

    #[test]
    fn in_order_frames_pass_at_once() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        assert_eq!(run(&mut r, &[(5, true, 0), (6, false, 33 * MS), (7, false, 66 * MS)]), [5, 6, 7]);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn an_overtaken_frame_is_put_back_in_place() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        let out =
            run(&mut r, &[(0, true, 0), (2, false, 60 * MS), (3, false, 90 * MS), (1, false, 100 * MS)]);
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(r.stats().held, 2);
        assert_eq!(r.stats().gaps_given_up, 0);
    }

    #[test]
    fn a_missing_frame_is_given_up_after_the_wait() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        assert_eq!(run(&mut r, &[(0, true, 0), (2, false, 60 * MS), (3, false, 90 * MS)]), [0]);
        assert_eq!(r.poll_timeout(), Some(210 * MS));
        assert!(r.poll(209 * MS).is_empty());
        assert_eq!(r.poll(210 * MS), [2, 3]);
        // The frame that finally comes is late: passed on for the playout to call stale.
        assert_eq!(r.push(1, false, 1, 220 * MS), [1]);
        assert_eq!(r.stats().gaps_given_up, 1);
    }

    #[test]
    fn too_many_held_frames_end_the_wait() {
        // At least `max_held`, and a wait's worth at 30 fps: 150 ms → 6 frames.
        let config = ReorderConfig { max_wait_us: 150 * MS, wait_cap_us: 150 * MS, max_held: 3 };
        let mut r = VideoReorder::new(config);
        let frames: Vec<(u32, bool, u64)> =
            std::iter::once((0, true, 0)).chain((2..=8).map(|s| (s, false, u64::from(s)))).collect();
        assert_eq!(run(&mut r, &frames), [0, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.stats().gaps_given_up, 1);
    }

    #[test]
    fn a_keyframe_ends_the_wait_and_drops_what_it_makes_useless() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        let out = run(&mut r, &[(0, true, 0), (2, false, 10 * MS), (4, false, 20 * MS), (3, true, 30 * MS)]);
        assert_eq!(out, [0, 3, 4]);
        assert_eq!(r.stats().skipped_for_keyframe, 1);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn the_wait_follows_how_late_missing_frames_come() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        let mut out = r.push(0, true, 0, 0);
        // Frame 1 comes 250 ms after frame 2, behind which it was missing: given up at 150 ms.
        out.extend(run(&mut r, &[(2, false, 33 * MS), (3, false, 66 * MS)]));
        out.extend(r.poll(183 * MS));
        assert_eq!(out, [0, 2, 3]);
        assert_eq!(r.push(1, false, 1, 283 * MS), [1]);
        // Learnt: 1.25 × 250 ms + 20 ms.
        assert_eq!(r.wait_us(), 332_500);
        // Now a frame as late waits for its turn, and no keyframe is needed.
        let out = run(&mut r, &[(5, false, 300 * MS), (6, false, 333 * MS), (4, false, 550 * MS)]);
        assert_eq!(out, [4, 5, 6]);
        assert_eq!(r.stats().gaps_given_up, 1);
        // Quick fills bring it back down, never below the configured least.
        for i in 0..FILLS_KEPT as u32 {
            let base = 7 + i * 3;
            let at = (1_000 + u64::from(i) * 100) * MS;
            run(
                &mut r,
                &[(base + 1, false, at), (base, false, at + 10 * MS), (base + 2, false, at + 20 * MS)],
            );
        }
        assert_eq!(r.wait_us(), 150_000);
    }

    /// Frame 1 missing behind frame 2 (held at 33 ms), given up at 183 ms, arriving `at`.
    fn one_frame_given_up_and_late(at: u64) -> VideoReorder<u32> {
        let mut r = VideoReorder::new(ReorderConfig::default());
        run(&mut r, &[(0, true, 0), (2, false, 33 * MS)]);
        assert_eq!(r.poll(183 * MS), [2]);
        assert_eq!(r.push(1, false, 1, at), [1]);
        r
    }

    #[test]
    fn a_learnt_wait_is_forgotten_after_30_s_without_late_frames() {
        let mut r = one_frame_given_up_and_late(333 * MS);
        assert_eq!(r.wait_us(), 395_000);
        // Frames in order for 30 s: nothing to learn from, and the old delay expires.
        let mut seq = 3;
        let mut at = 400 * MS;
        while at < 30_400 * MS {
            assert_eq!(r.push(seq, false, seq, at), [seq]);
            seq += 1;
            at += 33 * MS;
        }
        assert_eq!(r.wait_us(), 150_000);
    }

    #[test]
    fn the_wait_is_capped() {
        let r = one_frame_given_up_and_late(900 * MS);
        assert_eq!(r.wait_us(), 400_000);
        // Later than a second is not a retransmission: not learnt from.
        let r = one_frame_given_up_and_late(2_000 * MS);
        assert_eq!(r.wait_us(), 150_000);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = VideoReorder::new(ReorderConfig::default());
        let out = run(&mut r, &[(u32::MAX - 1, true, 0), (0, false, 10 * MS), (u32::MAX, false, 20 * MS)]);
        assert_eq!(out, [u32::MAX - 1, u32::MAX, 0]);
    }

    proptest::proptest! {
        /// Whatever the arrival order, every frame comes out (or was made useless by a
        /// keyframe), and nothing comes out that did not go in.
        #[test]
        fn every_frame_comes_out(order in proptest::collection::vec(0u32..40, 1..60)) {
            let mut r = VideoReorder::new(ReorderConfig::default());
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, seq) in order.iter().enumerate() {
                let at = i as u64 * 20 * MS;
                out.extend(r.poll(at));
                out.extend(r.push(*seq, *seq % 10 == 0, *seq, at));
                seen.insert(*seq);
            }
            out.extend(r.poll(u64::MAX / 2));
            let unique: std::collections::HashSet<u32> = out.iter().copied().collect();
            proptest::prop_assert!(unique.is_subset(&seen));
            proptest::prop_assert!(seen.len() <= unique.len() + r.stats().skipped_for_keyframe as usize);
            proptest::prop_assert_eq!(r.poll_timeout(), None);
        }
    }
}
