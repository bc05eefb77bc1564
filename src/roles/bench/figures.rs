//! The bench's figures: what each side received from the other, summed over both directions,
//! and the freeze, recovery and adaptation measures they are made of.

use serde::Serialize;

use super::call::Observed;
use super::{ADAPTED_LATENCY_MS, FREEZE_GAP};
use crate::edges::devices::unix_micros_now;
use crate::edges::netsim::ProxyStats;
use crate::edges::session::MediaStats;
use crate::media::stats::Quantiles;
use crate::protocol::EndReason;

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub scenario: String,
    pub duration_s: f64,
    pub audio_frames_played_pct: f64,
    pub audio_concealed_pct: f64,
    pub audio_latency_ms: Quantiles,
    /// Video latency of the frames shown after the first 5 s (once adapted to the path).
    pub video_latency_after_5s_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    pub video_frames_displayed_pct: f64,
    pub video_freezes: u32,
    pub longest_freeze_ms: f64,
    /// Outage scenarios: from the network's return to the first fresh picture shown (captured
    /// after the return; the later of the two directions); `null` without an outage.
    pub recovery_ms: Option<f64>,
    /// From the start of the media to the first picture after which every picture was shown
    /// within [`ADAPTED_LATENCY_MS`] of its capture (the later of the two directions); 0 when
    /// none was later, `null` when no picture was shown.
    pub video_adapted_ms: Option<f64>,
    /// Outage scenarios: a text sent each way in the middle of the outage.
    pub outage_texts: Option<OutageTexts>,
    pub mean_bitrate_kbps: f64,
    /// Video frames received and decoded (both directions), and keyframes asked for.
    pub video_frames_received: u64,
    pub video_frames_decoded: u64,
    pub keyframe_requests: u64,
    pub video_frames_send_dropped: u64,
    /// Copies of earlier audio frames sent as redundancy (both directions), from loss reports.
    pub audio_copies_sent: u64,
    pub call_dropped: bool,
    pub errors: Vec<String>,
    /// The same figures for each direction: what the agent received from the kiosk, and back.
    pub to_agent: DirectionFigures,
    pub to_kiosk: DirectionFigures,
    /// What the impaired path did to the packets (up: kiosk → hub).
    pub path: ProxyStats,
}

/// The texts sent during an outage (one each way, halfway through it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutageTexts {
    pub sent: u32,
    pub delivered: u32,
    /// From the network's return to the later of the two texts shown.
    pub delivered_after_outage_ms: Option<f64>,
}

/// What one side received from the other.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionFigures {
    pub audio_frames_played_pct: f64,
    pub audio_concealed_pct: f64,
    /// Of the frames played, those played time-compressed while the delay came down.
    pub audio_accelerated_pct: f64,
    pub audio_latency_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    pub video_latency_after_5s_ms: Quantiles,
    pub video_frames_displayed_pct: f64,
    pub keyframe_requests: u64,
    /// Steps the sender's video ladder took (bitrate, frame rate, size, audio only).
    pub video_rung_changes: u64,
    /// Outage scenarios: from the network's return to the first fresh picture shown.
    pub recovery_ms: Option<f64>,
    /// See [`BenchResult::video_adapted_ms`].
    pub video_adapted_ms: Option<f64>,
    /// The freezes: when each began (seconds from the start of the media) and how long it
    /// lasted (ms); the first 20.
    pub freezes: Vec<(f64, f64)>,
    /// What the sender sent (kbit/s).
    pub sent_kbps: f64,
}

impl DirectionFigures {
    /// `rx` received what `tx` sent; the network came back at `outage_end_us`.
    /// The call ended at `ended_us` (a picture not shown since then is a freeze to the end).
    fn of(tx: &MediaStats, rx: &MediaStats, outage_end_us: Option<u64>, ended_us: u64) -> Self {
        let played = rx.audio_frames_played + rx.audio_frames_recovered_fec;
        Self {
            audio_frames_played_pct: pct(played, tx.audio_frames_sent),
            audio_concealed_pct: pct(rx.audio_frames_concealed, tx.audio_frames_sent),
            audio_accelerated_pct: pct(rx.audio_frames_accelerated, tx.audio_frames_sent),
            audio_latency_ms: rx.audio_latency.quantiles(),
            video_latency_ms: rx.video_latency.quantiles(),
            video_latency_after_5s_ms: rx.video_latency_settled.quantiles(),
            video_frames_displayed_pct: pct(rx.video_frames_displayed, tx.video_frames_sent),
            keyframe_requests: rx.keyframe_requests,
            video_rung_changes: tx.video_rung_changes,
            recovery_ms: outage_end_us
                .and_then(|end| recovery_after(&rx.display_times_us, &rx.display_latency_ms, end)),
            video_adapted_ms: adapted_after(rx.started_us, &rx.display_times_us, &rx.display_latency_ms),
            freezes: freezes(&rx.display_times_us, ended_us)
                .take(20)
                .map(|(at, gap)| {
                    let secs = at.saturating_sub(rx.started_us) as f64 / 1e6;
                    ((secs * 100.0).round() / 100.0, ms_1dp(gap))
                })
                .collect(),
            sent_kbps: (tx.bytes_sent as f64 * 8.0 / tx.duration_s.max(0.001) / 1000.0).round(),
        }
    }
}

/// The gaps between shown pictures longer than [`FREEZE_GAP`], and from the last one to the
/// call's end at `ended_us`: (when the picture before the gap was shown, gap µs).
pub fn freezes(times: &[u64], ended_us: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let tail = times.last().map(|&last| (last, ended_us.saturating_sub(last)));
    times
        .windows(2)
        .map(|w| (w[0], w[1].saturating_sub(w[0])))
        .chain(tail)
        .filter(|&(_, gap)| gap > FREEZE_GAP.as_micros() as u64)
}

/// From `end_us` (the network's return) to the first fresh picture shown, one captured at or
/// after it, in ms (a picture captured before it and shown after it is not a recovery).
/// `times` and `latency_ms` are the shown pictures (same index).
pub fn recovery_after(times: &[u64], latency_ms: &[u32], end_us: u64) -> Option<f64> {
    let first = times
        .iter()
        .zip(latency_ms)
        .find(|&(&shown, &latency)| shown.saturating_sub(u64::from(latency) * 1000) >= end_us)?
        .0;
    Some(ms_1dp(first.saturating_sub(end_us)))
}

/// From `started_us` to the first picture after which every picture shown was within
/// [`ADAPTED_LATENCY_MS`] of its capture: 0 when none was later, `None` when none was shown;
/// when the last picture itself was late, its time (it had not adapted by then).
/// `times` and `latency_ms` are the shown pictures in order (same index).
pub fn adapted_after(started_us: u64, times: &[u64], latency_ms: &[u32]) -> Option<f64> {
    if times.is_empty() {
        return None;
    }
    let Some(last_late) = latency_ms.iter().rposition(|&l| l > ADAPTED_LATENCY_MS) else {
        return Some(0.0);
    };
    // The first picture in time after the last late one (or the end of the log).
    let at = times.get(last_late + 1).or(times.last()).copied().unwrap_or(started_us);
    Some(ms_1dp(at.saturating_sub(started_us)))
}

/// Microseconds as milliseconds with one decimal.
fn ms_1dp(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { (a as f64 * 1000.0 / b as f64).round() / 10.0 }
}

/// The kiosk's media sessions (a reconnect during the call makes another), added up.
fn add_up(sessions: &[MediaStats]) -> MediaStats {
    let mut sum = MediaStats::default();
    for k in sessions {
        if sum.started_us == 0 {
            sum.started_us = k.started_us;
        }
        sum.audio_frames_sent += k.audio_frames_sent;
        sum.audio_frames_played += k.audio_frames_played;
        sum.audio_frames_concealed += k.audio_frames_concealed;
        sum.audio_frames_recovered_fec += k.audio_frames_recovered_fec;
        sum.audio_frames_accelerated += k.audio_frames_accelerated;
        sum.audio_copies_sent += k.audio_copies_sent;
        sum.video_frames_sent += k.video_frames_sent;
        sum.video_frames_displayed += k.video_frames_displayed;
        sum.video_frames_received += k.video_frames_received;
        sum.video_frames_decoded += k.video_frames_decoded;
        sum.keyframe_requests += k.keyframe_requests;
        sum.video_rung_changes += k.video_rung_changes;
        sum.video_frames_send_dropped += k.video_frames_send_dropped;
        sum.bytes_sent += k.bytes_sent;
        sum.duration_s += k.duration_s;
        sum.audio_latency.merge(&k.audio_latency);
        sum.video_latency.merge(&k.video_latency);
        sum.video_latency_settled.merge(&k.video_latency_settled);
        sum.display_times_us.extend(&k.display_times_us);
        sum.display_latency_ms.extend(&k.display_latency_ms);
    }
    sum
}

/// The later of two times, or whichever there is.
fn later(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Freezes over both directions: how many, and the longest (µs).
fn all_freezes(agent: &MediaStats, kiosk: &MediaStats, ended_us: u64) -> (u32, u64) {
    let (mut n, mut longest) = (0u32, 0u64);
    for times in [&agent.display_times_us, &kiosk.display_times_us] {
        for (_, gap) in freezes(times, ended_us) {
            n += 1;
            longest = longest.max(gap);
        }
    }
    (n, longest)
}

impl BenchResult {
    /// The figures of a call: what the loop saw, each side's media figures, the path's.
    pub(super) fn of(scenario: &str, mut seen: Observed, path: ProxyStats) -> Self {
        let agent = seen.agent_stats.take().unwrap_or_default();
        let kiosk = add_up(&seen.kiosk_stats);
        // The call's end (or now, when it did not end): a picture missing since is a freeze too.
        let ended_us = seen.ended_us.unwrap_or_else(unix_micros_now);
        let to_agent = DirectionFigures::of(&kiosk, &agent, seen.outage_end_us, ended_us);
        let to_kiosk = DirectionFigures::of(&agent, &kiosk, seen.outage_end_us, ended_us);
        for (way, d) in [("to the agent", &to_agent), ("to the kiosk", &to_kiosk)] {
            if seen.outage_end_us.is_some() && d.recovery_ms.is_none() {
                seen.errors.push(format!("no picture {way} after the outage"));
            }
        }
        let call_dropped = !matches!(seen.ended_reason, Some(EndReason::AgentHungUp));
        if call_dropped {
            seen.errors.push(format!("call ended by {:?}", seen.ended_reason));
        }
        let outage_texts = seen.outage_texts();
        let both = |f: fn(&MediaStats) -> u64| f(&agent) + f(&kiosk);
        let audio_sent = both(|s| s.audio_frames_sent);
        // Played: decoded, or rebuilt from the next packet's in-band FEC; not concealed.
        let audio_played = both(|s| s.audio_frames_played + s.audio_frames_recovered_fec);
        let video_sent = both(|s| s.video_frames_sent);
        let mut audio_lat = agent.audio_latency.clone();
        audio_lat.merge(&kiosk.audio_latency);
        let mut video_lat = agent.video_latency.clone();
        video_lat.merge(&kiosk.video_latency);
        let mut video_settled = agent.video_latency_settled.clone();
        video_settled.merge(&kiosk.video_latency_settled);
        let (video_freezes, longest) = all_freezes(&agent, &kiosk, ended_us);
        let secs = (agent.duration_s + kiosk.duration_s).max(0.001);
        Self {
            scenario: scenario.to_string(),
            duration_s: (agent.duration_s * 10.0).round() / 10.0,
            audio_frames_played_pct: pct(audio_played, audio_sent),
            audio_concealed_pct: pct(both(|s| s.audio_frames_concealed), audio_sent),
            audio_latency_ms: audio_lat.quantiles(),
            video_latency_ms: video_lat.quantiles(),
            video_latency_after_5s_ms: video_settled.quantiles(),
            video_frames_displayed_pct: pct(both(|s| s.video_frames_displayed), video_sent),
            video_freezes,
            longest_freeze_ms: longest as f64 / 1000.0,
            recovery_ms: later(to_agent.recovery_ms, to_kiosk.recovery_ms),
            video_adapted_ms: later(to_agent.video_adapted_ms, to_kiosk.video_adapted_ms),
            outage_texts,
            mean_bitrate_kbps: (both(|s| s.bytes_sent) as f64 * 8.0 / secs / 1000.0).round(),
            video_frames_received: both(|s| s.video_frames_received),
            video_frames_decoded: both(|s| s.video_frames_decoded),
            keyframe_requests: both(|s| s.keyframe_requests),
            audio_copies_sent: both(|s| s.audio_copies_sent),
            video_frames_send_dropped: both(|s| s.video_frames_send_dropped),
            call_dropped,
            errors: seen.errors,
            to_agent,
            to_kiosk,
            path,
        }
    }
}

impl OutageTexts {
    /// `shown`: when each text was shown; the network came back at `outage_end`.
    pub(super) fn with_shown(
        mut self,
        shown: &[tokio::time::Instant],
        outage_end: tokio::time::Instant,
    ) -> Self {
        self.delivered = shown.len() as u32;
        self.delivered_after_outage_ms = shown
            .iter()
            .map(|&at| at.saturating_duration_since(outage_end).as_secs_f64() * 1000.0)
            .reduce(f64::max)
            .map(|ms| (ms * 10.0).round() / 10.0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    #[test]
    fn adapted_is_the_first_picture_after_the_last_late_one() {
        // Pictures every 100 ms from 1 s; the third and fifth were late.
        let times: Vec<u64> = (0..8).map(|i| T0 + 1_000_000 + i * 100_000).collect();
        let latency = [100, 200, 900, 300, 401, 120, 110, 100];
        assert_eq!(adapted_after(T0, &times, &latency), Some(1500.0));
        // None late: adapted from the start.
        assert_eq!(adapted_after(T0, &times, &[100; 8]), Some(0.0));
        // Exactly at the limit is in time.
        assert_eq!(adapted_after(T0, &times, &[ADAPTED_LATENCY_MS; 8]), Some(0.0));
        // The last picture late: not adapted before the end of the log.
        let mut late_end = [100; 8];
        late_end[7] = 1000;
        assert_eq!(adapted_after(T0, &times, &late_end), Some(1700.0));
        assert_eq!(adapted_after(T0, &[], &[]), None);
    }

    #[test]
    fn recovery_is_the_first_picture_captured_after_the_return() {
        let end = T0 + 1_000_000;
        // Shown after the return, but captured before it (80 ms old at 40 ms after): not yet.
        let times = [end - 500_000, end + 40_000, end + 120_000, end + 153_000];
        let latency = [60, 80, 70, 70];
        assert_eq!(recovery_after(&times, &latency, end), Some(120.0));
        assert_eq!(recovery_after(&times[..2], &latency[..2], end), None);
    }

    #[test]
    fn a_picture_missing_until_the_end_is_a_freeze() {
        let times: Vec<u64> = (0..10).map(|i| T0 + i * 33_000).collect();
        let last = T0 + 9 * 33_000;
        assert_eq!(freezes(&times, last + 20_000).count(), 0);
        assert_eq!(freezes(&times, last + 2_000_000).collect::<Vec<_>>(), vec![(last, 2_000_000)]);
        let mut gap = times.clone();
        gap.push(last + 500_000);
        assert_eq!(freezes(&gap, last + 500_000).collect::<Vec<_>>(), vec![(last, 500_000)]);
        assert_eq!(freezes(&[], T0).count(), 0);
    }
}
