//! What video to send for the bitrate the path takes: the adaptation ladder.
//!
//! Rate control ([`crate::edges::session`]) gives a target bitrate from what the path delivers
//! (queueing delay at the sender, the receiver's rate hints). Within a rung the encoder's
//! bitrate follows the target; between rungs the ladder trades, in this order, bitrate, then
//! frame rate, then resolution, and below a floor sends no video at all, so that audio keeps the
//! path:
//!
//! | rung | picture | frames/s | target at least |
//! |---|---|---|---|
//! | 0 | configured | configured | 40 % of the configured bitrate |
//! | 1 | configured | half | 20 % |
//! | 2 | half size | half | 6 % |
//! | 3 | none (audio only) | – | below 6 % |
//!
//! It steps down at once when the target falls under a rung's floor, and up one rung only once
//! the target has stayed 25 % above the next rung's floor for 3 s, so that it does not flap.
//! With no video sent, the path empties and the target climbs back by itself.
//!
//! Sans-IO: [`VideoLadder::update`] with the target and the time.

use super::UnixMicros;

/// Share of the configured bitrate (percent) at or above which each rung holds.
const FLOORS_PCT: [u64; 3] = [40, 20, 6];
/// Time the target must stay above the next rung's floor (+25 %) before stepping up.
const UP_AFTER_US: u64 = 3_000_000;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// 0 is the configured video; 3 is audio only.
    pub index: u8,
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    /// False on the audio-only rung.
    pub video: bool,
}

/// The ladder for one sender.
#[derive(Debug, Clone)]
pub struct VideoLadder {
    width: u32,
    height: u32,
    fps: f32,
    max_bps: u64,
    index: u8,
    /// Since when the target has allowed the rung above.
    up_since: Option<UnixMicros>,
}

impl VideoLadder {
    /// A ladder for the configured picture size, frame rate and bitrate; starts at rung 0.
    pub fn new(width: u32, height: u32, fps: f32, max_bps: u64) -> Self {
        Self { width, height, fps, max_bps: max_bps.max(1), index: 0, up_since: None }
    }

    pub fn rung(&self) -> Rung {
        let half = |v: u32| ((v / 2) & !1).max(2);
        match self.index {
            0 => Rung { index: 0, width: self.width, height: self.height, fps: self.fps, video: true },
            1 => Rung { index: 1, width: self.width, height: self.height, fps: self.fps / 2.0, video: true },
            2 => Rung {
                index: 2,
                width: half(self.width),
                height: half(self.height),
                fps: self.fps / 2.0,
                video: true,
            },
            _ => Rung { index: 3, width: 0, height: 0, fps: 0.0, video: false },
        }
    }

    /// The floor of rung `i` in bit/s (0 for the audio-only rung).
    fn floor(&self, i: u8) -> u64 {
        FLOORS_PCT.get(usize::from(i)).map_or(0, |pct| self.max_bps * pct / 100)
    }

    /// The target bitrate at `now`; returns the rung to send at.
    pub fn update(&mut self, target_bps: u64, now: UnixMicros) -> Rung {
        // Down at once, as far as needed.
        while self.index < 3 && target_bps < self.floor(self.index) {
            self.index += 1;
            self.up_since = None;
        }
        // Up one rung after the target held well above its floor for a while.
        if self.index > 0 && target_bps >= self.floor(self.index - 1) * 5 / 4 {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_sub(since) >= UP_AFTER_US {
                self.index -= 1;
                self.up_since = None;
            }
        } else {
            self.up_since = None;
        }
        self.rung()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn steps_down_through_frame_rate_and_size_to_audio_only() {
        let mut l = VideoLadder::new(640, 480, 30.0, 1_000_000);
        assert_eq!(l.update(900_000, 0), Rung { index: 0, width: 640, height: 480, fps: 30.0, video: true });
        assert_eq!(l.update(300_000, S), Rung { index: 1, width: 640, height: 480, fps: 15.0, video: true });
        assert_eq!(
            l.update(150_000, 2 * S),
            Rung { index: 2, width: 320, height: 240, fps: 15.0, video: true }
        );
        assert!(!l.update(50_000, 3 * S).video, "audio only under the floor");
    }

    #[test]
    fn a_collapse_goes_straight_down() {
        let mut l = VideoLadder::new(640, 480, 30.0, 1_000_000);
        assert_eq!(l.update(30_000, 0).index, 3);
    }

    #[test]
    fn steps_up_one_rung_after_three_seconds_well_above() {
        let mut l = VideoLadder::new(640, 480, 30.0, 1_000_000);
        l.update(30_000, 0);
        // 70 kbit/s is above rung 2's floor (60k) but not by 25 %: stays audio-only.
        assert_eq!(l.update(70_000, S).index, 3);
        assert_eq!(l.update(70_000, 10 * S).index, 3);
        assert_eq!(l.update(80_000, 11 * S).index, 3);
        assert_eq!(l.update(80_000, 13 * S).index, 3);
        assert_eq!(l.update(80_000, 14 * S).index, 2);
        // A dip restarts the wait.
        assert_eq!(l.update(300_000, 15 * S).index, 2);
        assert_eq!(l.update(100_000, 16 * S).index, 2);
        assert_eq!(l.update(300_000, 17 * S).index, 2);
        assert_eq!(l.update(300_000, 20 * S).index, 1);
        assert_eq!(l.update(600_000, 23 * S).index, 1);
        assert_eq!(l.update(600_000, 26 * S).index, 0);
    }

    #[test]
    fn odd_sizes_halve_to_even_ones() {
        let mut l = VideoLadder::new(330, 250, 25.0, 1_000_000);
        let r = l.update(100_000, 0);
        assert_eq!((r.width, r.height), (164, 124));
    }
}
