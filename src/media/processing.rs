//! The microphone's sound processed as WebRTC does it, before it is encoded: acoustic echo
//! cancellation (AEC3) of what the speaker played, noise suppression, automatic gain control
//! (AGC2) and a high-pass filter — `sonora`, a pure-Rust port of WebRTC's audio processing,
//! which builds offline and for aarch64 with no C library.
//!
//! Sans-IO: the caller hands over what went to the speaker ([`AudioProcessor::render`]) and
//! each microphone frame ([`AudioProcessor::capture`], processed in place); nothing here reads
//! a clock. The processing runs on 10 ms frames, two for each 20 ms Opus frame. The delay from
//! playout to capture is not configured: AEC3 estimates it from the signals (up to 500 ms) and
//! follows its changes. Processing that fails (the library refusing a frame, or panicking)
//! stops for the rest of the call and the sound goes on unprocessed; [`AudioProcessor::failure`]
//! says why.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};
use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use super::SAMPLE_RATE;

/// Samples of one 10 ms processing frame at 48 kHz.
pub const BLOCK: usize = SAMPLE_RATE as usize / 100;
/// What went to the speaker, kept until the next microphone frame (half a second); older
/// blocks are dropped (the speaker played them while the microphone was not read).
const MAX_RENDER_QUEUE: usize = 50;

/// Which stages run (`[audio.processing]` in a role's configuration); all on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    /// How much of the hall's steady noise is taken out (`noise_suppression_level`).
    pub noise_suppression_level: NoiseLevel,
    pub gain_control: bool,
    pub high_pass_filter: bool,
    /// Fault injection for tests: processing fails after this many 10 ms blocks, as a broken
    /// library would. Not read from configuration files.
    #[serde(skip)]
    pub fail_after_blocks: Option<u64>,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            noise_suppression_level: NoiseLevel::High,
            gain_control: true,
            high_pass_filter: true,
            fail_after_blocks: None,
        }
    }
}

/// Noise suppression's strength: WebRTC's four levels, the noise taken down by about 6, 12,
/// 18 and 21 dB. A branch hall is loud: `high` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseLevel {
    Low,
    Moderate,
    High,
    VeryHigh,
}

impl NoiseLevel {
    fn sonora(self) -> NoiseSuppressionLevel {
        match self {
            Self::Low => NoiseSuppressionLevel::Low,
            Self::Moderate => NoiseSuppressionLevel::Moderate,
            Self::High => NoiseSuppressionLevel::High,
            Self::VeryHigh => NoiseSuppressionLevel::VeryHigh,
        }
    }
}

/// AGC2's adaptive digital gain as a kiosk wants it: it starts at 0 dB (the hall is not
/// amplified before the customer speaks), follows the customer's speech level at most 6 dB a
/// second up to 30 dB, and never lifts the noise above −50 dBFS; the limiter after it keeps
/// peaks below full scale.
fn adaptive_gain() -> GainController2 {
    GainController2 {
        adaptive_digital: Some(AdaptiveDigital {
            initial_gain_db: 0.0,
            max_gain_db: 30.0,
            ..AdaptiveDigital::default()
        }),
        ..GainController2::default()
    }
}

impl ProcessingConfig {
    /// Every stage off: the microphone's sound goes out as captured.
    pub const OFF: Self = Self {
        echo_cancellation: false,
        noise_suppression: false,
        noise_suppression_level: NoiseLevel::High,
        gain_control: false,
        high_pass_filter: false,
        fail_after_blocks: None,
    };

    pub fn any(&self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.gain_control || self.high_pass_filter
    }

    /// The stages, named (for logs and the health file).
    pub fn describe(&self) -> String {
        let on: Vec<&str> = [
            (self.echo_cancellation, "echo cancellation"),
            (self.noise_suppression, "noise suppression"),
            (self.gain_control, "gain control"),
            (self.high_pass_filter, "high-pass filter"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if on.is_empty() { "off".into() } else { on.join(", ") }
    }
}

/// What the processing did, for the session's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessingStats {
    /// 10 ms microphone blocks processed.
    pub blocks: u64,
    /// 10 ms speaker blocks given to the echo canceller, and those dropped (queued too long).
    pub render_blocks: u64,
    pub render_dropped: u64,
    /// The echo canceller's own estimates (its figures, not a measurement of the output).
    pub erle_estimate_db: Option<f64>,
    pub delay_estimate_ms: Option<i32>,
}

/// One microphone's processing, for one call.
pub struct AudioProcessor {
    config: ProcessingConfig,
    apm: Option<AudioProcessing>,
    /// Speaker blocks not yet given to the canceller, and a partial block.
    render: VecDeque<[i16; BLOCK]>,
    render_partial: Vec<i16>,
    failure: Option<String>,
    stats: ProcessingStats,
}

impl AudioProcessor {
    pub fn new(config: ProcessingConfig) -> Self {
        let apm = config.any().then(|| {
            let c = Config {
                echo_canceller: config.echo_cancellation.then(EchoCanceller::default),
                noise_suppression: config.noise_suppression.then(|| NoiseSuppression {
                    level: config.noise_suppression_level.sonora(),
                    ..NoiseSuppression::default()
                }),
                gain_controller2: config.gain_control.then(adaptive_gain),
                high_pass_filter: config.high_pass_filter.then(HighPassFilter::default),
                ..Config::default()
            };
            let mono = StreamConfig::new(SAMPLE_RATE, 1);
            AudioProcessing::builder().config(c).capture_config(mono).render_config(mono).build()
        });
        Self {
            config,
            apm,
            render: VecDeque::new(),
            render_partial: Vec::with_capacity(BLOCK),
            failure: None,
            stats: ProcessingStats::default(),
        }
    }

    pub fn config(&self) -> ProcessingConfig {
        self.config
    }

    /// Why processing stopped, when it did (the sound then goes on unprocessed).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Stops processing for the rest of the call, for a reason found outside (e.g. it cannot
    /// keep up with the microphone on this machine).
    pub fn give_up(&mut self, why: &str) {
        self.failure = Some(format!("audio processing failed ({why}); the sound goes on unprocessed"));
        self.apm = None;
    }

    pub fn stats(&self) -> &ProcessingStats {
        &self.stats
    }

    /// What went to the speaker, exactly as played (any length; kept in 10 ms blocks).
    pub fn render(&mut self, played: &[i16]) {
        if self.apm.is_none() || !self.config.echo_cancellation {
            return;
        }
        for &s in played {
            self.render_partial.push(s);
            if self.render_partial.len() == BLOCK {
                let mut block = [0i16; BLOCK];
                block.copy_from_slice(&self.render_partial);
                self.render_partial.clear();
                if self.render.len() == MAX_RENDER_QUEUE {
                    self.render.pop_front();
                    self.stats.render_dropped += 1;
                }
                self.render.push_back(block);
            }
        }
    }

    /// Processes microphone samples in place, in 10 ms blocks (a trailing partial block is
    /// left as it is). Returns `false` once processing has failed.
    pub fn capture(&mut self, samples: &mut [i16]) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let Some(apm) = self.apm.as_mut() else { return true };
        let (render, stats, fail_after) = (&mut self.render, &mut self.stats, self.config.fail_after_blocks);
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let mut scratch = [0i16; BLOCK];
            for block in samples.chunks_exact_mut(BLOCK) {
                if fail_after.is_some_and(|n| stats.blocks >= n) {
                    return Err("injected fault".into());
                }
                while let Some(r) = render.pop_front() {
                    apm.process_render_i16(&r, &mut scratch).map_err(|e| format!("render: {e:?}"))?;
                    stats.render_blocks += 1;
                }
                let input: [i16; BLOCK] = block.try_into().map_err(|_| "block size".to_string())?;
                apm.process_capture_i16(&input, block).map_err(|e| format!("capture: {e:?}"))?;
                stats.blocks += 1;
            }
            let s = apm.statistics();
            stats.erle_estimate_db = s.echo_return_loss_enhancement;
            stats.delay_estimate_ms = s.delay_ms;
            Ok(())
        }));
        let failure = match result {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e,
            Err(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into()),
        };
        self.failure = Some(format!("audio processing failed ({failure}); the sound goes on unprocessed"));
        self.apm = None;
        false
    }
}

/// The processing's own delay with `config`, in samples at 48 kHz: the lag (0–30 ms) at which
/// the output best matches the input for bursts of noise with no far end (no pitch to alias the
/// lag; not stationary, so not taken for noise). Deterministic.
pub fn delay_samples(config: ProcessingConfig) -> usize {
    const SECOND: usize = SAMPLE_RATE as usize;
    let mut p = AudioProcessor::new(config);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let near: Vec<i16> = (0..2 * SECOND)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 2400) % 3 == 0 { ((x >> 50) as i16).wrapping_sub(8192) } else { 0 }
        })
        .collect();
    let mut out = near.clone();
    for f in out.chunks_exact_mut(2 * BLOCK) {
        p.render(&[0; 2 * BLOCK]);
        p.capture(f);
    }
    let (a, b) = (&near[SECOND..], &out[SECOND..]);
    let corr =
        |lag: usize| -> f64 { a.iter().zip(&b[lag..]).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum() };
    (0..3 * BLOCK).max_by(|&x, &y| corr(x).total_cmp(&corr(y))).unwrap_or(0)
}

#[cfg(test)]
mod tests;
