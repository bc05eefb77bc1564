//! Audio loss: measured where it happens (the receiver), acted on where it can be repaired
//! (the sender).
//!
//! - [`LossMeter`] (receiver): from the sequence numbers of first sendings (copies excluded, see
//!   [`super::packet::is_copy`]), the share of audio frames the network lost over each second,
//!   smoothed; a report when it changes by 2 points, or every 5 s.
//! - [`LossPolicy`] (sender): from the reports, how many copies of earlier frames each audio
//!   packet is followed by (0, 1 or 2) and the loss Opus tunes its in-band FEC for. It raises
//!   protection at once and lowers it only after 10 s of lower loss, so that a bursty path does
//!   not flap.
//!
//! With 20 % random loss, Opus FEC alone (which rebuilds a frame from the next packet) leaves
//! 4 % of frames concealed; one copy of the previous frame, 0.8 %; two copies, 0.16 %.

use super::UnixMicros;

/// How often the meter closes its window.
const WINDOW_US: u64 = 1_000_000;
/// A report at least this often, even when the figure holds.
const REPORT_EVERY_US: u64 = 5_000_000;
/// How long lower loss must last before protection goes down.
const LOWER_AFTER_US: u64 = 10_000_000;

/// The receiver's audio loss meter.
#[derive(Debug, Default)]
pub struct LossMeter {
    /// First and highest seq of the window, and the frames received in it.
    first: Option<u32>,
    highest: u32,
    received: u32,
    window_start: UnixMicros,
    smoothed: Option<f64>,
    last_sent: Option<(u8, UnixMicros)>,
}

impl LossMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first sending of audio frame `seq` arrived at `now`. Returns the loss (percent) to
    /// report to the sender, when a report is due.
    pub fn handle(&mut self, seq: u32, now: UnixMicros) -> Option<u8> {
        let Some(first) = self.first else {
            self.first = Some(seq);
            self.highest = seq;
            self.received = 1;
            self.window_start = now;
            return None;
        };
        if (seq.wrapping_sub(self.highest) as i32) > 0 {
            self.highest = seq;
        }
        self.received += 1;
        if now.saturating_sub(self.window_start) < WINDOW_US {
            return None;
        }
        let expected = self.highest.wrapping_sub(first).wrapping_add(1);
        // A sender that restarted its count (a new call, a reconnect) makes nonsense: skip it.
        let loss = if (1..=10_000).contains(&expected) {
            Some(1.0 - (f64::from(self.received.min(expected)) / f64::from(expected)))
        } else {
            None
        };
        self.first = None;
        let loss = loss?;
        let smoothed = match self.smoothed {
            Some(s) => 0.5 * s + 0.5 * loss,
            None => loss,
        };
        self.smoothed = Some(smoothed);
        let pct = (smoothed * 100.0).round().clamp(0.0, 100.0) as u8;
        let due = match self.last_sent {
            None => true,
            Some((last, at)) => last.abs_diff(pct) >= 2 || now.saturating_sub(at) >= REPORT_EVERY_US,
        };
        if due {
            self.last_sent = Some((pct, now));
            return Some(pct);
        }
        None
    }
}

/// The sender's response to the receiver's loss reports.
#[derive(Debug, Clone)]
pub struct LossPolicy {
    loss_pct: u8,
    copies: u8,
    /// Since when the reports have asked for fewer copies than are sent.
    lower_since: Option<UnixMicros>,
    default_expected_pct: u8,
}

impl LossPolicy {
    /// Before any report: no copies, FEC tuned for `default_expected_pct`.
    pub fn new(default_expected_pct: u8) -> Self {
        Self { loss_pct: 0, copies: 0, lower_since: None, default_expected_pct }
    }

    /// The receiver reports `loss_pct` at `now`.
    pub fn report(&mut self, loss_pct: u8, now: UnixMicros) {
        self.loss_pct = loss_pct.min(100);
        self.default_expected_pct = 0;
        let want = match self.loss_pct {
            0..=1 => 0,
            2..=7 => 1,
            _ => 2,
        };
        if want >= self.copies {
            self.copies = want;
            self.lower_since = None;
        } else {
            let since = *self.lower_since.get_or_insert(now);
            if now.saturating_sub(since) >= LOWER_AFTER_US {
                self.copies = want;
                self.lower_since = None;
            }
        }
    }

    /// Copies of earlier frames to send after each new one: frame n is followed by n−1 (and
    /// n−2).
    pub fn copies(&self) -> u8 {
        self.copies
    }

    /// The packet loss Opus should expect (tunes how much its in-band FEC carries).
    pub fn expected_loss_pct(&self) -> u8 {
        self.loss_pct.max(self.default_expected_pct).min(40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// Feeds `secs` seconds of 20 ms frames, dropping those `lost` says; returns the reports.
    fn meter(secs: u64, lost: impl Fn(u32) -> bool) -> Vec<u8> {
        let mut m = LossMeter::new();
        let mut reports = Vec::new();
        for seq in 0..(secs * 50) as u32 {
            if !lost(seq) {
                reports.extend(m.handle(seq, u64::from(seq) * 20 * MS));
            }
        }
        reports
    }

    #[test]
    fn no_loss_reports_zero_once_then_every_five_seconds() {
        assert_eq!(meter(12, |_| false), [0, 0, 0]);
    }

    #[test]
    fn a_fifth_lost_reads_twenty_percent() {
        let reports = meter(6, |seq| seq % 5 == 2);
        assert!(reports.iter().all(|&r| (19..=21).contains(&r)), "{reports:?}");
    }

    #[test]
    fn loss_that_starts_is_reported_within_three_seconds() {
        let reports = meter(8, |seq| seq >= 250 && seq % 10 < 3);
        // 0 % for five seconds, then rising towards 30 %.
        assert_eq!(reports[0], 0);
        assert!(reports.iter().any(|&r| r >= 20), "{reports:?}");
    }

    #[test]
    fn a_restarted_sender_does_not_make_a_report() {
        let mut m = LossMeter::new();
        assert_eq!(m.handle(4_000_000_000, 0), None);
        assert_eq!(m.handle(3, 1_100 * MS), None);
    }

    #[test]
    fn protection_rises_at_once_and_falls_after_ten_seconds() {
        let mut p = LossPolicy::new(5);
        assert_eq!((p.copies(), p.expected_loss_pct()), (0, 5));
        p.report(20, 0);
        assert_eq!((p.copies(), p.expected_loss_pct()), (2, 20));
        p.report(4, 1_000 * MS);
        assert_eq!(p.copies(), 2, "not yet");
        p.report(4, 10_999 * MS);
        assert_eq!(p.copies(), 2);
        p.report(4, 11_000 * MS);
        assert_eq!((p.copies(), p.expected_loss_pct()), (1, 4));
        p.report(30, 12_000 * MS);
        assert_eq!(p.copies(), 2);
        p.report(0, 13_000 * MS);
        p.report(90, 14_000 * MS);
        assert_eq!((p.copies(), p.expected_loss_pct()), (2, 40), "FEC tuning is capped");
    }
}
