//! Time compression of decoded audio ("accelerate" in WebRTC's NetEQ): when the jitter buffer
//! brings its delay down, two 20 ms frames play in one slot instead of one being thrown away.
//!
//! [`compress`] removes whole pitch periods: it finds the lag at which the signal best repeats
//! itself (2–15 ms, the range of voice pitch), cross-fades one period into the next and so
//! drops one period, and repeats until enough is removed. The pitch and the content stay; a
//! vowel is just a few periods shorter. On sound that does not repeat (noise, a consonant) the
//! best lag still gives a smooth splice.
//!
//! Pure: samples in, samples out.

/// Shortest period removed: 2 ms at 48 kHz (a 500 Hz voice).
pub const MIN_LAG: usize = 96;
/// Longest period removed: 15 ms at 48 kHz (a 67 Hz voice).
pub const MAX_LAG: usize = 720;
/// Lags are searched in steps of this many samples, then refined around the best.
const COARSE_STEP: usize = 4;

/// Removes about `remove` samples from `x` (never more, and less by under [`MIN_LAG`] when
/// there is room), one pitch period at a time; returns the shorter signal.
pub fn compress(x: &[i16], remove: usize) -> Vec<i16> {
    let mut x: Vec<f32> = x.iter().map(|&s| f32::from(s)).collect();
    let mut removed = 0;
    let mut pos = 0;
    while remove - removed >= MIN_LAG {
        let most = (remove - removed).min(MAX_LAG).min((x.len() - pos) / 2);
        if most < MIN_LAG {
            break;
        }
        let lag = best_lag(&x[pos..], MIN_LAG, most);
        // Cross-fade x[pos..pos+lag] into x[pos+lag..pos+2·lag]: one period replaces two.
        for i in 0..lag {
            let w = i as f32 / lag as f32;
            x[pos + i] = x[pos + i] * (1.0 - w) + x[pos + lag + i] * w;
        }
        x.drain(pos + lag..pos + 2 * lag);
        removed += lag;
        pos += lag;
    }
    x.iter().map(|&s| s.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16).collect()
}

/// The lag in `min..=max` at which `x` best matches itself shifted (normalised correlation of
/// `x[..lag]` and `x[lag..2·lag]`); the longest of the near-best, so that fewer splices are made.
fn best_lag(x: &[f32], min: usize, max: usize) -> usize {
    let score = |lag: usize| -> f32 {
        let (a, b) = (&x[..lag], &x[lag..2 * lag]);
        let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
        for (p, q) in a.iter().zip(b) {
            ab += p * q;
            aa += p * p;
            bb += q * q;
        }
        if aa <= f32::EPSILON || bb <= f32::EPSILON { 1.0 } else { ab / (aa * bb).sqrt() }
    };
    let scores: Vec<(usize, f32)> = (min..=max).step_by(COARSE_STEP).map(|l| (l, score(l))).collect();
    let best = scores.iter().map(|(_, s)| *s).fold(f32::MIN, f32::max);
    // The longest lag within 5 % of the best, refined to the sample around it.
    let (coarse, _) = scores.iter().rev().find(|(_, s)| *s >= best - 0.05).copied().unwrap_or((min, best));
    let lo = coarse.saturating_sub(COARSE_STEP).max(min);
    let hi = (coarse + COARSE_STEP).min(max);
    (lo..=hi)
        .map(|l| (l, score(l)))
        .fold((coarse, f32::MIN), |acc, (l, s)| if s > acc.1 { (l, s) } else { acc })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 48_000.0).sin()) as i16)
            .collect()
    }

    /// Zero crossings upwards per second.
    fn frequency(x: &[i16]) -> f64 {
        let ups = x.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        ups as f64 * 48_000.0 / x.len() as f64
    }

    #[test]
    fn two_frames_of_a_tone_fit_one_slot_at_the_same_pitch() {
        for hz in [110.0, 220.0, 440.0, 660.0, 1000.0] {
            let x = tone(hz, 1920);
            let y = compress(&x, 960);
            assert!(y.len() >= 960 && y.len() < 960 + MIN_LAG, "{hz} Hz: {} samples", y.len());
            let f = frequency(&y);
            assert!((f - hz).abs() < hz * 0.1 + 60.0, "{hz} Hz came out at {f} Hz");
            // No click: no step larger than the tone's own steepest step (plus a margin).
            let steepest = x.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap_or(0);
            let worst = y.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap_or(0);
            assert!(worst <= steepest + steepest / 4 + 50, "{hz} Hz: step {worst} > {steepest}");
        }
    }

    #[test]
    fn the_ends_are_kept_so_the_slots_join() {
        let x = tone(440.0, 1920);
        let y = compress(&x, 960);
        assert_eq!(y[0], x[0]);
        let (a, b) = (y.last().copied().unwrap_or(0), x.last().copied().unwrap_or(0));
        assert!((i32::from(a) - i32::from(b)).abs() < 200, "{a} vs {b}");
    }

    #[test]
    fn silence_and_noise_are_shortened_too() {
        let y = compress(&[0; 1920], 960);
        assert!(y.len() >= 960 && y.len() < 960 + MIN_LAG, "{}", y.len());
        let mut seed = 12345u32;
        let noise: Vec<i16> = (0..1920)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((seed >> 16) as i16) / 4
            })
            .collect();
        let y = compress(&noise, 960);
        assert!(y.len() >= 960 && y.len() < 960 + MIN_LAG, "{}", y.len());
    }

    #[test]
    fn nothing_is_removed_when_asked_for_less_than_a_period() {
        let x = tone(440.0, 960);
        assert_eq!(compress(&x, 50), x);
        assert_eq!(compress(&x, 0), x);
        assert_eq!(compress(&[], 960), Vec::<i16>::new());
    }
}
