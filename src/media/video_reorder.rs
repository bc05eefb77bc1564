//! Puts received video frames back in sequence before the decoder.
//!
//! Each frame travels on its own QUIC stream, so a frame that lost a packet completes (after
//! its retransmission) behind the frames that followed it. The decoder needs frames in order:
//! without this stage every overtaken frame looked like a lost one and cost a keyframe. The
//! reorder stage holds frames that arrive ahead of a missing one, for at most
//! [`ReorderConfig::max_wait_us`] (the retransmission should come by then) and at most
//! [`ReorderConfig::max_held`] frames; then the missing frame is given up and the held ones go
//! on (the playout then asks for a keyframe). A keyframe ends a wait at once: nothing before it
//! is needed any more.
//!
//! Sans-IO: `push` on each frame, `poll` when [`VideoReorder::poll_timeout`] passes.

use super::UnixMicros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Longest wait for a missing frame (µs). Default 150 ms.
    pub max_wait_us: u64,
    /// Most frames held behind a missing one. Default 8 (a quarter second at 30 fps).
    pub max_held: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        Self { max_wait_us: 150_000, max_held: 8 }
    }
}

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
}

impl<T> VideoReorder<T> {
    pub fn new(config: ReorderConfig) -> Self {
        Self { config, next: None, held: Vec::new(), stats: ReorderStats::default() }
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// A frame arrived; returns the frames to decode now, in order. A frame behind the next
    /// expected one (late, or a repeat) is passed on at once: the playout counts it stale.
    pub fn push(&mut self, seq: u32, keyframe: bool, frame: T, now: UnixMicros) -> Vec<T> {
        let mut out = Vec::new();
        let Some(next) = self.next else {
            self.next = Some(seq.wrapping_add(1));
            out.push(frame);
            return out;
        };
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead < 0 {
            out.push(frame);
            return out;
        }
        if ahead == 0 {
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
        if self.held.len() > self.config.max_held {
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
        self.held.iter().map(|h| h.arrived_us).min().map(|t| t.saturating_add(self.config.max_wait_us))
    }

    /// The missing frame is not coming: go on from the earliest held frame.
    fn give_up(&mut self, out: &mut Vec<T>) {
        let Some(next) = self.next else { return };
        let Some(first) = self.held.iter().map(|h| h.seq).min_by_key(|s| s.wrapping_sub(next)) else {
            return;
        };
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
        let mut r = VideoReorder::new(ReorderConfig { max_wait_us: 10_000 * MS, max_held: 3 });
        let out = run(&mut r, &[(0, true, 0), (2, false, 1), (3, false, 2), (4, false, 3), (5, false, 4)]);
        assert_eq!(out, [0, 2, 3, 4, 5]);
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
