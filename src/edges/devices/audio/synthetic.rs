//! The synthetic microphone: a sine tone at −12 dBFS, paced in real time by the microphone
//! thread, with a marker.
//!
//! # The marker
//! The first 10 ms (480 samples) of every second of the stream — samples `n` with
//! `n % 48000 < 480`, counted from the first chunk — are a 2 kHz tone of the same amplitude
//! instead of the base tone (exactly 20 cycles, so it starts and ends at zero). The base
//! tone's phase runs on underneath, so it continues across chunks and blips alike. The kiosk
//! uses 440 Hz and the agent 660 Hz in the demo, so either side can tell whose sound it
//! hears ([`dominant_frequency`]) and time the blips.

use std::f64::consts::TAU;
use std::time::Duration;

use super::Microphone;
use crate::edges::devices::feed::Pacer;
use crate::edges::devices::{HwError, unix_micros_now};
use crate::media::{AudioChunk, FRAME_SAMPLES, FRAME_US, SAMPLE_RATE};

/// Peak amplitude: −12 dBFS of 32767.
pub const TONE_AMPLITUDE: f64 = 8231.0;
/// Frequency of the once-a-second marker.
pub const BLIP_HZ: f64 = 2000.0;
/// Length of the marker: 10 ms.
pub const BLIP_SAMPLES: u64 = 480;

/// A microphone stand-in playing a tone.
pub struct SyntheticMicrophone {
    frequency: f64,
    /// Phase of the base tone, in radians, kept in [0, 2π).
    phase: f64,
    /// Samples produced so far: places the blips.
    sample_no: u64,
    blip: bool,
    pacer: Option<Pacer>,
}

impl SyntheticMicrophone {
    /// A tone of `frequency` Hz with the marker blip, paced in real time.
    pub fn new(frequency: f64) -> Self {
        Self {
            frequency,
            phase: 0.0,
            sample_no: 0,
            blip: true,
            pacer: Some(Pacer::new(Duration::from_micros(FRAME_US))),
        }
    }

    /// Without the marker blip: a pure tone.
    pub fn without_blip(mut self) -> Self {
        self.blip = false;
        self
    }

    /// Returns chunks as fast as asked (tests); a device stand-in normally stays paced.
    pub fn unpaced(mut self) -> Self {
        self.pacer = None;
        self
    }

    pub fn frequency(&self) -> f64 {
        self.frequency
    }
}

impl Microphone for SyntheticMicrophone {
    fn next_chunk(&mut self) -> Result<AudioChunk, HwError> {
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        // A device hands out a chunk when its last sample is in: the first is 20 ms old.
        let captured_us = unix_micros_now().saturating_sub(FRAME_US);
        let step = TAU * self.frequency / f64::from(SAMPLE_RATE);
        let rate = u64::from(SAMPLE_RATE);
        let samples = (0..FRAME_SAMPLES)
            .map(|_| {
                let in_second = self.sample_no % rate;
                let value = if self.blip && in_second < BLIP_SAMPLES {
                    (TAU * BLIP_HZ * in_second as f64 / f64::from(SAMPLE_RATE)).sin()
                } else {
                    self.phase.sin()
                };
                self.phase = (self.phase + step) % TAU;
                self.sample_no += 1;
                (value * TONE_AMPLITUDE).round() as i16
            })
            .collect();
        Ok(AudioChunk { samples, captured_us })
    }

    fn describe(&self) -> String {
        let blip = if self.blip { " with a 2 kHz blip each second" } else { "" };
        format!("synthetic microphone {} Hz{blip}", self.frequency)
    }
}

/// Power of `samples` (already windowed) at `frequency` Hz, by the Goertzel recurrence.
fn goertzel_power(samples: &[f64], frequency: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (TAU * frequency / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Applies a Hann window: keeps the tone's peak narrow and its side lobes low.
fn hann(samples: &[i16]) -> Vec<f64> {
    let n = samples.len();
    let denominator = (n.max(2) - 1) as f64;
    samples
        .iter()
        .enumerate()
        .map(|(i, &s)| f64::from(s) * (0.5 - 0.5 * (TAU * i as f64 / denominator).cos()))
        .collect()
}

/// The frequency (Hz) with the most energy in `samples` at `rate` Hz, between 20 Hz and
/// the Nyquist frequency; 0 for silence or fewer than 64 samples. For a clean tone over
/// 0.5 s it is accurate well within 1 %.
///
/// Two Goertzel scans: a coarse one averaged over 100 ms segments (10 Hz steps), then a fine
/// one over the whole signal around the coarse peak, refined by a parabola through the
/// three best points.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f64 {
    let rate_hz = f64::from(rate);
    if samples.len() < 64 || rate == 0 || samples.iter().all(|&s| s == 0) {
        return 0.0;
    }
    let segment_len = (rate as usize / 10).clamp(64, samples.len());
    // At most 8 segments, spread over the signal, bound the cost of long inputs.
    let count = samples.len() / segment_len;
    let segments: Vec<Vec<f64>> =
        samples.chunks_exact(segment_len).step_by(count.div_ceil(8).max(1)).map(hann).collect();
    let coarse_step = rate_hz / segment_len as f64;
    let top = rate_hz / 2.0 - coarse_step;
    let mut best = (0.0, f64::MIN);
    let mut f = 20.0;
    while f <= top {
        let power: f64 = segments.iter().map(|s| goertzel_power(s, f, rate_hz)).sum();
        if power > best.1 {
            best = (f, power);
        }
        f += coarse_step;
    }
    let whole = hann(samples);
    let fine_step = (rate_hz / samples.len() as f64 / 4.0).max(coarse_step / 40.0);
    let steps = (2.0 * coarse_step / fine_step).ceil() as i64;
    let powers: Vec<(f64, f64)> = (-steps..=steps)
        .map(|k| best.0 + k as f64 * fine_step)
        .filter(|&f| f > 0.0 && f < rate_hz / 2.0)
        .map(|f| (f, goertzel_power(&whole, f, rate_hz)))
        .collect();
    let Some(peak) = (0..powers.len()).max_by(|&a, &b| powers[a].1.total_cmp(&powers[b].1)) else {
        return best.0;
    };
    if peak == 0 || peak + 1 == powers.len() {
        return powers[peak].0;
    }
    // Parabola through log-powers of the neighbours (exact for a Gaussian-like peak).
    let (a, b, c) = (powers[peak - 1].1.ln(), powers[peak].1.ln(), powers[peak + 1].1.ln());
    let denominator = a - 2.0 * b + c;
    let offset = if denominator.abs() > f64::EPSILON { 0.5 * (a - c) / denominator } else { 0.0 };
    powers[peak].0 + offset.clamp(-1.0, 1.0) * fine_step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(mic: &mut SyntheticMicrophone, chunks: usize) -> Vec<i16> {
        (0..chunks).flat_map(|_| mic.next_chunk().unwrap().samples).collect()
    }

    #[test]
    fn tones_are_measured_within_one_percent() {
        for f in [440.0, 660.0, 1000.0, 2000.0, 97.3] {
            let samples = collect(&mut SyntheticMicrophone::new(f).unpaced().without_blip(), 25);
            let got = dominant_frequency(&samples, SAMPLE_RATE);
            assert!((got - f).abs() <= f * 0.01, "{f} Hz measured as {got}");
            assert!((got - f).abs() <= 0.5, "{f} Hz measured as {got}: should be much closer");
        }
    }

    #[test]
    fn blips_do_not_hide_the_tone_and_are_where_documented() {
        let mut mic = SyntheticMicrophone::new(440.0).unpaced();
        let samples = collect(&mut mic, 100); // two seconds
        let got = dominant_frequency(&samples, SAMPLE_RATE);
        assert!((got - 440.0).abs() < 4.4, "measured {got}");
        for second in 0..2 {
            let start = second * SAMPLE_RATE as usize;
            let blip = &samples[start..start + BLIP_SAMPLES as usize];
            assert!((dominant_frequency(blip, SAMPLE_RATE) - BLIP_HZ).abs() < 20.0);
        }
    }

    #[test]
    fn tone_is_continuous_and_at_minus_12_dbfs() {
        let samples = collect(&mut SyntheticMicrophone::new(660.0).unpaced().without_blip(), 10);
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8200..=8231).contains(&peak), "peak {peak}");
        // No jump at chunk boundaries larger than the tone's own slope allows.
        let max_step = (TAU * 660.0 / 48_000.0 * TONE_AMPLITUDE).ceil() as i32 + 1;
        for pair in samples.windows(2) {
            assert!((i32::from(pair[1]) - i32::from(pair[0])).abs() <= max_step);
        }
    }

    #[test]
    fn silence_and_scraps_measure_zero() {
        assert_eq!(dominant_frequency(&[0; 4800], SAMPLE_RATE), 0.0);
        assert_eq!(dominant_frequency(&[100; 10], SAMPLE_RATE), 0.0);
    }

    #[test]
    fn paced_microphone_takes_real_time() {
        let mut mic = SyntheticMicrophone::new(440.0);
        let t0 = std::time::Instant::now();
        collect(&mut mic, 4);
        assert!(t0.elapsed() >= Duration::from_millis(58), "{:?}", t0.elapsed());
    }
}

/// The level of the tone at `frequency` Hz in `samples`, in dB relative to the synthetic
/// microphone's tone ([`TONE_AMPLITUDE`]); −120 for none. Measures how much of one side's
/// tone comes back to it (the demo's echo figure).
pub fn tone_level_db(samples: &[i16], frequency: f64, rate: u32) -> f64 {
    if samples.len() < 64 {
        return -120.0;
    }
    let windowed = hann(samples);
    // A Hann window halves a sinusoid's coherent sum: amplitude = 2·|X| / (N/2).
    let amplitude =
        4.0 * goertzel_power(&windowed, frequency, f64::from(rate)).max(0.0).sqrt() / samples.len() as f64;
    (20.0 * (amplitude / TONE_AMPLITUDE).log10()).max(-120.0)
}

/// A synthetic enclosure shared by a speaker and a microphone (media::room): what the
/// speaker plays leaks into what the microphone hears.
pub type SharedRoom = std::sync::Arc<std::sync::Mutex<crate::media::room::Room>>;

/// A speaker that plays into the room.
pub struct RoomSpeaker(pub SharedRoom);

impl super::Speaker for RoomSpeaker {
    fn play(&mut self, samples: &[i16]) -> Result<(), HwError> {
        if let Ok(mut room) = self.0.lock() {
            room.play(samples);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "synthetic speaker (into the enclosure)".into()
    }
}

/// A microphone that hears its tone and the room (the speaker's echo and the hall's noise).
pub struct RoomMicrophone {
    pub tone: SyntheticMicrophone,
    pub room: SharedRoom,
}

impl Microphone for RoomMicrophone {
    fn next_chunk(&mut self) -> Result<crate::media::AudioChunk, HwError> {
        let mut chunk = self.tone.next_chunk()?;
        if let Ok(mut room) = self.room.lock() {
            chunk.samples = room.microphone(&chunk.samples);
        }
        Ok(chunk)
    }

    fn describe(&self) -> String {
        format!("{} in a synthetic enclosure (its speaker's echo)", self.tone.describe())
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;
    use crate::edges::devices::audio::Speaker;
    use crate::media::room::{Room, RoomConfig};

    #[test]
    fn tone_level_reads_the_tone_and_not_the_other() {
        let mut mic = SyntheticMicrophone::new(660.0).unpaced();
        let mut s = Vec::new();
        for _ in 0..50 {
            s.extend(mic.next_chunk().expect("chunk").samples);
        }
        let half: Vec<i16> = s.iter().map(|x| x / 2).collect();
        assert!(tone_level_db(&s, 660.0, SAMPLE_RATE).abs() < 0.5);
        assert!((tone_level_db(&half, 660.0, SAMPLE_RATE) + 6.0).abs() < 0.5);
        assert!(tone_level_db(&s, 440.0, SAMPLE_RATE) < -30.0);
    }

    #[test]
    fn the_room_microphone_hears_the_room_speaker() {
        let room: SharedRoom = std::sync::Arc::new(std::sync::Mutex::new(Room::new(RoomConfig {
            delay_ms: 0.0,
            noise_dbfs: None,
            clip: 0.0,
            ..RoomConfig::default()
        })));
        let mut speaker = RoomSpeaker(room.clone());
        let mut mic = RoomMicrophone { tone: SyntheticMicrophone::new(440.0).unpaced(), room };
        let mut tone = SyntheticMicrophone::new(660.0).unpaced();
        let mut heard = Vec::new();
        for _ in 0..50 {
            speaker.play(&tone.next_chunk().expect("chunk").samples).expect("plays");
            heard.extend(mic.next_chunk().expect("chunk").samples);
        }
        // A single tone meets the room's response at one frequency: within the random
        // reflections' spread around the room's −6 dB average gain.
        let echo = tone_level_db(&heard[48_000 / 2..], 660.0, SAMPLE_RATE);
        assert!((-20.0..6.0).contains(&echo), "the echo at {echo:.1} dB");
        let own = tone_level_db(&heard[48_000 / 2..], 440.0, SAMPLE_RATE);
        assert!(own.abs() < 0.5, "its own tone at {own:.1} dB");
    }
}
