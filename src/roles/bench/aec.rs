//! `kioskd bench --aec`: the microphone's processing (media::processing) against a synthetic
//! kiosk enclosure (media::room), measured on its output.
//!
//! Each case is 23 s of sound, 20 ms at a time as a call runs:
//!
//! ```text
//! 0 ──── 1 s ─────────────── 9 s ───────────── 15 s ─────────── 21 s ──── 23 s
//!  noise  │ far end alone      │ far end alone    │ double talk    │ noise
//!         │ (delay d1)         │ (delay d2: step) │ (far and near) │
//! ```
//!
//! - ERLE: the microphone's level over the output's, far end alone, 3–9 s (after 2 s of
//!   far-end speech), energy over the whole stretch; the hall's noise counts on both sides, so
//!   the output's noise floor bounds it. `erle_echo_db` takes the noise out of both.
//! - Convergence: from the far end's start (and from the step) to the first 0.5 s window (in
//!   20 ms steps) whose ERLE reaches 30 dB; the lowest window after it, until the next change,
//!   is reported beside it.
//! - Double talk: of the 20 ms frames in which the customer speaks (clean near end above
//!   −50 dBFS), the share whose output is more than 3 dB below the clean near end. The output
//!   is compared with the near end it carries: each frame of it is read the processing's own
//!   delay later ([`delay_samples`], 15 ms with every stage on), so that the onsets of syllables
//!   do not count as attenuated for arriving late. `double_talk_no_echo_attenuated_pct` is the
//!   same count with the speaker silent: what the processing does to the customer alone (noise
//!   suppression takes the quietest frames, at the hall's level, down with the noise).
//! - Noise reduction: the noise's level in and out, 21.5–23 s.
//! - CPU: processing time over the sound's duration, on this thread (one core).
//!
//! The figures are of the full pipeline (echo cancellation, noise suppression, gain control,
//! high-pass filter), what a kiosk runs; `aec_only_*` are echo cancellation and the high-pass
//! filter alone. The echo path's gain is −6 dB (a loud speaker next to the microphone); far end
//! at −20 dBFS, customer at −24 dBFS: the echo is about as loud as the customer.

use std::time::Instant;

use serde::Serialize;

use crate::media::processing::{AudioProcessor, ProcessingConfig, delay_samples};
use crate::media::room::{Room, RoomConfig, level_dbfs, voice};
use crate::media::{FRAME_SAMPLES, SAMPLE_RATE};

const SR: usize = SAMPLE_RATE as usize;
const FAR_START: usize = SR;
const STEP: usize = 9 * SR;
const DOUBLE_TALK: usize = 15 * SR;
const NOISE_ONLY: usize = 21 * SR;
const END: usize = 23 * SR;
/// A 0.5 s window whose ERLE reaches this counts as converged.
const CONVERGED_DB: f32 = 30.0;
const WINDOW: usize = SR / 2;

/// One echo path.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AecCase {
    pub delay_ms: f32,
    pub delay_after_step_ms: f32,
    pub t60_s: f32,
}

/// The echo paths measured: the delay's range and a step each way, short and long rooms.
pub const CASES: [AecCase; 3] = [
    AecCase { delay_ms: 20.0, delay_after_step_ms: 150.0, t60_s: 0.15 },
    AecCase { delay_ms: 150.0, delay_after_step_ms: 60.0, t60_s: 0.3 },
    AecCase { delay_ms: 80.0, delay_after_step_ms: 130.0, t60_s: 0.2 },
];

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct AecResult {
    pub bench: &'static str,
    pub case: AecCase,
    pub erle_db: f32,
    /// ERLE of the echo itself: the noise's power (measured on the microphone and on the
    /// output in the noise-only stretch) taken from both sides; a residual echo below a tenth
    /// of the output's noise floor is counted as that tenth (`erle_echo_floor_limited`).
    pub erle_echo_db: f32,
    pub erle_echo_floor_limited: bool,
    pub convergence_ms: Option<u64>,
    pub reconvergence_ms: Option<u64>,
    /// The lowest 0.5 s ERLE once converged (before and after the step).
    pub min_window_erle_db: f32,
    pub double_talk_attenuated_pct: f32,
    pub double_talk_no_echo_attenuated_pct: f32,
    /// The processing's own delay, by which the output is read later than the near end.
    pub processing_delay_ms: f32,
    pub noise_reduction_db: f32,
    pub cpu_core: f64,
    /// Echo cancellation and the high-pass filter alone.
    pub aec_only_erle_db: f32,
    pub aec_only_double_talk_attenuated_pct: f32,
    /// The canceller's own estimates at the end (not measurements).
    pub erle_estimate_db: Option<f64>,
    pub delay_estimate_ms: Option<i32>,
}

/// The worst of the cases against the targets.
#[derive(Debug, Clone, Serialize)]
pub struct AecSummary {
    pub bench: &'static str,
    pub cases: usize,
    pub min_erle_db: f32,
    pub min_erle_echo_db: f32,
    pub max_convergence_ms: Option<u64>,
    pub max_reconvergence_ms: Option<u64>,
    pub max_double_talk_attenuated_pct: f32,
    pub max_double_talk_no_echo_attenuated_pct: f32,
    pub processing_delay_ms: f32,
    pub min_window_erle_db: f32,
    pub min_noise_reduction_db: f32,
    pub max_cpu_core: f64,
    pub targets: Targets,
}

#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    /// On the output as it is (the hall's noise included).
    pub erle_35db_after_2s: bool,
    /// Of the echo alone (the noise taken out of both sides).
    pub erle_echo_35db_after_2s: bool,
    pub convergence_2s: bool,
    pub reconvergence_1s: bool,
    pub double_talk_10pct: bool,
    pub cpu_tenth_core: bool,
}

/// The signals of one case, and what the microphone heard of each.
struct Run {
    mic: Vec<f32>,
    near: Vec<f32>,
    out: Vec<f32>,
    cpu_s: f64,
    processor: AudioProcessor,
}

fn run(case: AecCase, config: ProcessingConfig, seed: u64, far_end: bool) -> Run {
    let mut room =
        Room::new(RoomConfig { delay_ms: case.delay_ms, t60_s: case.t60_s, seed, ..RoomConfig::default() });
    let far_voice = voice(END, 120.0, -20.0, seed);
    let near_voice = voice(END, 210.0, -24.0, seed + 100);
    let mut processor = AudioProcessor::new(config);
    let (mut mic_all, mut near_all, mut out_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_s = 0.0;
    for start in (0..END).step_by(FRAME_SAMPLES) {
        let range = start..start + FRAME_SAMPLES;
        if start == STEP {
            room.set_delay_ms(case.delay_after_step_ms);
        }
        let far: Vec<i16> = if far_end && (FAR_START..NOISE_ONLY).contains(&start) {
            far_voice[range.clone()].to_vec()
        } else {
            vec![0; FRAME_SAMPLES]
        };
        let near: Vec<i16> = if (DOUBLE_TALK..NOISE_ONLY).contains(&start) {
            near_voice[range].to_vec()
        } else {
            vec![0; FRAME_SAMPLES]
        };
        room.play(&far);
        let mut mic = room.microphone(&near);
        mic_all.extend(mic.iter().map(|&s| f32::from(s)));
        near_all.extend(near.iter().map(|&s| f32::from(s)));
        let t = Instant::now();
        processor.render(&far);
        processor.capture(&mut mic);
        cpu_s += t.elapsed().as_secs_f64();
        out_all.extend(mic.iter().map(|&s| f32::from(s)));
    }
    Run { mic: mic_all, near: near_all, out: out_all, cpu_s, processor }
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / x.len().max(1) as f64
}

/// ERLE of the echo alone (see [`AecResult::erle_echo_db`]), and whether the floor limited it.
fn erle_echo(r: &Run, from: usize, to: usize, noise_from: usize, noise_to: usize) -> (f32, bool) {
    let echo_in = power(&r.mic[from..to]) - power(&r.mic[noise_from..noise_to]);
    let floor = power(&r.out[noise_from..noise_to]);
    let residual = power(&r.out[from..to]) - floor;
    let limited = residual < 0.1 * floor;
    let db = 10.0 * (echo_in.max(1e-9) / residual.max(0.1 * floor).max(1e-9)).log10();
    ((db * 10.0).round() as f32 / 10.0, limited)
}

fn erle(r: &Run, from: usize, to: usize) -> f32 {
    level_dbfs(&r.mic[from..to]) - level_dbfs(&r.out[from..to])
}

/// The 0.5 s windows from `from` to `to`, in 20 ms steps: (start, ERLE).
fn windows(r: &Run, from: usize, to: usize) -> Vec<(usize, f32)> {
    (from..to - WINDOW).step_by(FRAME_SAMPLES).map(|s| (s, erle(r, s, s + WINDOW))).collect()
}

/// From `from`: the first window that reaches [`CONVERGED_DB`], and the lowest window after it.
fn convergence(r: &Run, from: usize, to: usize) -> (Option<u64>, f32) {
    let w = windows(r, from, to);
    match w.iter().position(|(_, e)| *e >= CONVERGED_DB) {
        Some(i) => {
            let lowest = w[i..].iter().map(|(_, e)| *e).fold(f32::MAX, f32::min);
            (Some(((w[i].0 - from) * 1000 / SR) as u64), lowest)
        }
        None => (None, f32::MIN),
    }
}

/// Percentage of the customer's 20 ms frames that come out more than 3 dB below the clean
/// near end, the output read `lag` samples later.
fn attenuated_pct(r: &Run, lag: usize) -> f32 {
    let (mut talk, mut attenuated) = (0u32, 0u32);
    for s in (DOUBLE_TALK..NOISE_ONLY).step_by(FRAME_SAMPLES) {
        let near = level_dbfs(&r.near[s..s + FRAME_SAMPLES]);
        if near <= -50.0 {
            continue;
        }
        talk += 1;
        if level_dbfs(&r.out[s + lag..s + lag + FRAME_SAMPLES]) < near - 3.0 {
            attenuated += 1;
        }
    }
    if talk == 0 { 0.0 } else { (1000.0 * attenuated as f32 / talk as f32).round() / 10.0 }
}

fn round1(x: f32) -> f32 {
    (x * 10.0).round() / 10.0
}

/// Measures one case.
pub fn measure(case: AecCase, seed: u64) -> AecResult {
    let aec_only =
        ProcessingConfig { noise_suppression: false, gain_control: false, ..ProcessingConfig::default() };
    let f = run(case, ProcessingConfig::default(), seed, true);
    let a = run(case, aec_only, seed, true);
    let alone = run(case, ProcessingConfig::default(), seed, false);
    let (lag, aec_only_lag) = (delay_samples(ProcessingConfig::default()), delay_samples(aec_only));
    let (convergence_ms, low_before) = convergence(&f, FAR_START, STEP);
    let (reconvergence_ms, low_after) = convergence(&f, STEP, DOUBLE_TALK);
    let noise_from = NOISE_ONLY + SR / 2;
    let (erle_echo_db, erle_echo_floor_limited) = erle_echo(&f, FAR_START + 2 * SR, STEP, noise_from, END);
    AecResult {
        bench: "aec",
        case,
        erle_db: round1(erle(&f, FAR_START + 2 * SR, STEP)),
        erle_echo_db,
        erle_echo_floor_limited,
        convergence_ms,
        reconvergence_ms,
        min_window_erle_db: round1(low_before.min(low_after)),
        double_talk_attenuated_pct: attenuated_pct(&f, lag),
        double_talk_no_echo_attenuated_pct: attenuated_pct(&alone, lag),
        processing_delay_ms: round1(lag as f32 * 1000.0 / SR as f32),
        noise_reduction_db: round1(erle(&f, noise_from, END)),
        cpu_core: (f.cpu_s / (END as f64 / SR as f64) * 10_000.0).round() / 10_000.0,
        aec_only_erle_db: round1(erle(&a, FAR_START + 2 * SR, STEP)),
        aec_only_double_talk_attenuated_pct: attenuated_pct(&a, aec_only_lag),
        erle_estimate_db: f.processor.stats().erle_estimate_db.map(|e| (e * 10.0).round() / 10.0),
        delay_estimate_ms: f.processor.stats().delay_estimate_ms,
    }
}

/// The worst figures over `results`.
pub fn summarize(results: &[AecResult]) -> AecSummary {
    let fold = |f: &dyn Fn(&AecResult) -> f32, worst: fn(f32, f32) -> f32, start: f32| {
        results.iter().map(f).fold(start, worst)
    };
    let max_opt = |f: &dyn Fn(&AecResult) -> Option<u64>| -> Option<u64> {
        results.iter().map(f).try_fold(0u64, |m, v| v.map(|v| m.max(v)))
    };
    let min_erle = fold(&|r| r.erle_db, f32::min, f32::MAX);
    let max_conv = max_opt(&|r| r.convergence_ms);
    let max_reconv = max_opt(&|r| r.reconvergence_ms);
    let max_dt = fold(&|r| r.double_talk_attenuated_pct, f32::max, 0.0);
    let max_cpu = results.iter().map(|r| r.cpu_core).fold(0.0, f64::max);
    AecSummary {
        bench: "aec_summary",
        cases: results.len(),
        min_erle_db: min_erle,
        min_erle_echo_db: fold(&|r| r.erle_echo_db, f32::min, f32::MAX),
        max_convergence_ms: max_conv,
        max_reconvergence_ms: max_reconv,
        max_double_talk_attenuated_pct: max_dt,
        max_double_talk_no_echo_attenuated_pct: fold(
            &|r| r.double_talk_no_echo_attenuated_pct,
            f32::max,
            0.0,
        ),
        processing_delay_ms: fold(&|r| r.processing_delay_ms, f32::max, 0.0),
        min_window_erle_db: fold(&|r| r.min_window_erle_db, f32::min, f32::MAX),
        min_noise_reduction_db: fold(&|r| r.noise_reduction_db, f32::min, f32::MAX),
        max_cpu_core: max_cpu,
        targets: Targets {
            erle_35db_after_2s: min_erle >= 35.0,
            erle_echo_35db_after_2s: results.iter().all(|r| r.erle_echo_db >= 35.0),
            convergence_2s: max_conv.is_some_and(|ms| ms <= 2000),
            reconvergence_1s: max_reconv.is_some_and(|ms| ms <= 1000),
            double_talk_10pct: max_dt <= 10.0,
            cpu_tenth_core: max_cpu <= 0.1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_is_the_first_window_at_30_db() {
        // A run whose output is the microphone 40 dB down from 1.5 s on.
        let len = 4 * SR;
        let mic: Vec<f32> = (0..len).map(|i| if i % 2 == 0 { 1000.0 } else { -1000.0 }).collect();
        let out: Vec<f32> =
            mic.iter().enumerate().map(|(i, m)| if i < SR * 3 / 2 { *m } else { m / 100.0 }).collect();
        let r = Run {
            near: vec![0.0; len],
            mic,
            out,
            cpu_s: 0.0,
            processor: AudioProcessor::new(ProcessingConfig::OFF),
        };
        let (ms, lowest) = convergence(&r, 0, len);
        assert_eq!(ms, Some(1500));
        assert!((lowest - 40.0).abs() < 0.1, "{lowest}");
        assert!((erle(&r, 2 * SR, 3 * SR) - 40.0).abs() < 0.1);
    }

    #[test]
    fn double_talk_counts_the_customers_frames_that_lost_3_db() {
        let len = END;
        let near: Vec<f32> =
            (0..len).map(|i| if (i / FRAME_SAMPLES).is_multiple_of(2) { 3000.0 } else { 0.0 }).collect();
        // Every other frame the customer speaks; half of those come out 6 dB down.
        let out: Vec<f32> = near
            .iter()
            .enumerate()
            .map(|(i, n)| if (i / (2 * FRAME_SAMPLES)).is_multiple_of(2) { *n } else { n / 2.0 })
            .collect();
        let r = Run {
            mic: near.clone(),
            near,
            out,
            cpu_s: 0.0,
            processor: AudioProcessor::new(ProcessingConfig::OFF),
        };
        assert_eq!(attenuated_pct(&r, 0), 50.0);
        // Read one frame later, every spoken frame meets a silent one.
        assert_eq!(attenuated_pct(&r, FRAME_SAMPLES), 100.0);
    }
}
