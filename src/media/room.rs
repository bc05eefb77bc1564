//! A synthetic kiosk enclosure: what the speaker plays comes back into the microphone, late,
//! through a decaying room response and a loudspeaker that clips a little, over the hall's
//! noise. The demo's kiosks and `kioskd bench --aec` use it to give the echo canceller the echo
//! a real kiosk has; and [`voice`] makes a speech-like signal to talk through it.
//!
//! Sans-IO and deterministic (seeded): [`Room::play`] takes what the speaker played,
//! [`Room::capture`] gives what the microphone hears of it for the next samples, in step.

use std::collections::VecDeque;

use super::SAMPLE_RATE;

const SR: f32 = SAMPLE_RATE as f32;
/// Longest delay the room models, and the most played sound kept waiting for the microphone.
const MAX_DELAY_S: f32 = 0.5;
/// Reflections after the direct sound.
const REFLECTIONS: usize = 160;

/// The echo path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomConfig {
    /// From the speaker's sound to the microphone (acoustic path and both devices' buffers).
    pub delay_ms: f32,
    /// Reverberation: the time the room response takes to decay by 60 dB.
    pub t60_s: f32,
    /// Level of the echo relative to what is played (the echo return loss, negative).
    pub gain_db: f32,
    /// Loudspeaker drive into a soft clip (`tanh((1 + clip)·x) / (1 + clip)`): 1.0 is mild
    /// (a full-scale peak comes out 6 dB lower; quiet sound passes at unity gain), 0 is none.
    pub clip: f32,
    /// The hall's noise at the microphone, RMS in dBFS; `None`: silence.
    pub noise_dbfs: Option<f32>,
    pub seed: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self { delay_ms: 60.0, t60_s: 0.2, gain_db: -6.0, clip: 1.0, noise_dbfs: Some(-45.0), seed: 1 }
    }
}

/// xorshift64: deterministic noise and room responses.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A speaker leaking into a microphone.
#[derive(Debug, Clone)]
pub struct Room {
    config: RoomConfig,
    /// (samples after the direct sound, gain) of the direct sound and each reflection.
    taps: Vec<(usize, f32)>,
    /// Played samples not yet reached by the microphone.
    pending: VecDeque<f32>,
    /// What the speaker sent out, newest last (long enough for the delay and the response).
    history: Vec<f32>,
    at: usize,
    delay: usize,
    noise_amp: f32,
    rng: Rng,
}

impl Room {
    pub fn new(config: RoomConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let tail = (config.t60_s.clamp(0.01, 1.0) * SR) as usize;
        let mut taps = vec![(0usize, 1.0f32)];
        for _ in 0..REFLECTIONS {
            let off = 48 + ((rng.next() * 0.5 + 0.5) * tail as f32) as usize;
            let decay = (-6.9 * off as f32 / (config.t60_s.max(0.01) * SR)).exp();
            taps.push((off, rng.next() * 2.0 * decay));
        }
        let energy: f32 = taps.iter().map(|(_, g)| g * g).sum::<f32>().sqrt();
        let gain = 10f32.powf(config.gain_db / 20.0) / energy;
        for t in &mut taps {
            t.1 *= gain;
        }
        let len = (MAX_DELAY_S * SR) as usize + tail + 49;
        let noise_amp = config.noise_dbfs.map_or(0.0, |db| 10f32.powf(db / 20.0) * 3f32.sqrt() * 32768.0);
        let mut room = Self {
            config,
            taps,
            pending: VecDeque::new(),
            history: vec![0.0; len],
            at: 0,
            delay: 0,
            noise_amp,
            rng,
        };
        room.set_delay_ms(config.delay_ms);
        room
    }

    pub fn config(&self) -> RoomConfig {
        self.config
    }

    /// Moves the microphone (a step change of the echo path's delay), 0 to 500 ms.
    pub fn set_delay_ms(&mut self, ms: f32) {
        self.config.delay_ms = ms.clamp(0.0, MAX_DELAY_S * 1000.0);
        self.delay = (self.config.delay_ms / 1000.0 * SR) as usize;
    }

    /// What the speaker played (the loudspeaker's clipping applies here).
    pub fn play(&mut self, samples: &[i16]) {
        let drive = self.config.clip;
        for &s in samples {
            let x = f32::from(s) / 32768.0;
            // Unity gain for quiet sound, softly limited towards full scale.
            let y = if drive > 0.0 { (x * (1.0 + drive)).tanh() / (1.0 + drive) } else { x };
            self.pending.push_back(y * 32768.0);
        }
        let most = (MAX_DELAY_S * SR) as usize;
        while self.pending.len() > most {
            self.pending.pop_front();
        }
    }

    /// What the microphone hears of the room for the next `n` samples (echo and noise), as
    /// 16-bit sample values (not clipped; add the near sound and clip once).
    pub fn capture(&mut self, n: usize) -> Vec<f32> {
        let len = self.history.len();
        (0..n)
            .map(|_| {
                let x = self.pending.pop_front().unwrap_or(0.0);
                self.at = (self.at + 1) % len;
                self.history[self.at] = x;
                let mut y = 0.0;
                for &(off, g) in &self.taps {
                    let back = self.delay + off;
                    if back < len {
                        y += g * self.history[(self.at + len - back) % len];
                    }
                }
                y + self.noise_amp * self.rng.next()
            })
            .collect()
    }

    /// `near` as the microphone hears it in this room: near sound, echo and noise, clipped to
    /// 16 bits.
    pub fn microphone(&mut self, near: &[i16]) -> Vec<i16> {
        let room = self.capture(near.len());
        near.iter()
            .zip(room)
            .map(|(&s, r)| (f32::from(s) + r).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

/// A speech-like signal: a voiced source at about `f0` Hz through two moving formants, in
/// syllables of a few hundred milliseconds with pauses, at `level_dbfs` RMS over the syllables.
pub fn voice(samples: usize, f0: f32, level_dbfs: f32, seed: u64) -> Vec<i16> {
    use std::f32::consts::PI;
    let mut rng = Rng::new(seed);
    let mut res = [[0f32; 2]; 2];
    let mut phase = 0f32;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = i as f32 / SR;
        let cycle = (t * 2.5 + seed as f32 * 0.37).fract();
        let envelope = if cycle < 0.7 { (PI * cycle / 0.7).sin() } else { 0.0 };
        phase += f0 * (1.0 + 0.1 * (t * 1.3).sin()) / SR;
        let mut x = 0.05 * rng.next();
        if phase >= 1.0 {
            phase -= 1.0;
            x += 1.0;
        }
        let formants = [(600.0 + 200.0 * (t * 3.1).sin(), 80.0), (1500.0 + 400.0 * (t * 2.3).cos(), 120.0)];
        for (state, (fc, bw)) in res.iter_mut().zip(formants) {
            let r = (-PI * bw / SR).exp();
            let a1 = 2.0 * r * (2.0 * PI * fc / SR).cos();
            let y = x + a1 * state[0] - r * r * state[1];
            state[1] = state[0];
            state[0] = y;
            x = y;
        }
        out.push(x * envelope);
    }
    let voiced: Vec<f32> = out.iter().copied().filter(|x| x.abs() > 1e-6).collect();
    let rms = (voiced.iter().map(|x| x * x).sum::<f32>() / voiced.len().max(1) as f32).sqrt().max(1e-9);
    let gain = 10f32.powf(level_dbfs / 20.0) * 32768.0 / rms;
    out.iter().map(|x| (x * gain).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// RMS level of `samples` in dBFS (−120 for silence).
pub fn level_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let p = samples.iter().map(|x| (x / 32768.0) * (x / 32768.0)).sum::<f32>() / samples.len() as f32;
    (10.0 * p.max(1e-12).log10()).max(-120.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_arrives_after_the_delay_at_the_configured_level() {
        let mut room =
            Room::new(RoomConfig { delay_ms: 50.0, noise_dbfs: None, clip: 0.0, ..RoomConfig::default() });
        let click = {
            let mut v = vec![0i16; 9600];
            v[0] = 16384;
            v
        };
        room.play(&click);
        let heard = room.capture(9600);
        let first = heard.iter().position(|x| x.abs() > 1.0).expect("an echo");
        assert_eq!(first, 2400, "50 ms at 48 kHz");
        let energy: f32 = heard.iter().map(|x| x * x).sum::<f32>().sqrt();
        let gain_db = 20.0 * (energy / 16384.0).log10();
        assert!((gain_db + 6.0).abs() < 0.5, "echo return loss {gain_db} dB, configured -6 dB");
    }

    #[test]
    fn a_delay_step_moves_the_echo() {
        let mut room =
            Room::new(RoomConfig { delay_ms: 20.0, noise_dbfs: None, clip: 0.0, ..RoomConfig::default() });
        room.set_delay_ms(150.0);
        let mut click = vec![0i16; 12_000];
        click[0] = 16384;
        room.play(&click);
        let heard = room.capture(12_000);
        assert_eq!(heard.iter().position(|x| x.abs() > 1.0), Some(7200));
    }

    #[test]
    fn noise_and_voice_have_their_levels_and_repeat_with_the_seed() {
        let mut room = Room::new(RoomConfig { gain_db: -100.0, ..RoomConfig::default() });
        let noise = room.capture(48_000);
        assert!((level_dbfs(&noise) + 45.0).abs() < 0.5, "{}", level_dbfs(&noise));
        let v = voice(48_000, 120.0, -20.0, 3);
        assert_eq!(v, voice(48_000, 120.0, -20.0, 3));
        let voiced: Vec<f32> = v.iter().map(|&s| f32::from(s)).filter(|s| *s != 0.0).collect();
        assert!((level_dbfs(&voiced) + 20.0).abs() < 1.0, "{}", level_dbfs(&voiced));
    }

    #[test]
    fn the_microphone_clips_instead_of_wrapping() {
        let mut room =
            Room::new(RoomConfig { gain_db: 0.0, clip: 0.0, delay_ms: 0.0, ..RoomConfig::default() });
        room.play(&[32767; 480]);
        let heard = room.microphone(&[32767; 480]);
        assert!(heard.iter().all(|&s| s > 0));
    }
}
