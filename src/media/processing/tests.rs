use super::*;
use crate::media::FRAME_SAMPLES;
use crate::media::room::{Room, RoomConfig, level_dbfs, voice};

/// Runs `far` (played) and `near` (spoken at the kiosk) through `room` and `p`, 20 ms at a
/// time as the session does; returns what the microphone heard and what went out.
fn run(p: &mut AudioProcessor, room: &mut Room, far: &[i16], near: &[i16]) -> (Vec<f32>, Vec<f32>) {
    let (mut mic_all, mut out_all) = (Vec::new(), Vec::new());
    for (f, n) in far.chunks_exact(FRAME_SAMPLES).zip(near.chunks_exact(FRAME_SAMPLES)) {
        room.play(f);
        p.render(f);
        let mut mic = room.microphone(n);
        mic_all.extend(mic.iter().map(|&s| f32::from(s)));
        p.capture(&mut mic);
        out_all.extend(mic.iter().map(|&s| f32::from(s)));
    }
    (mic_all, out_all)
}

const SECOND: usize = 48_000;

#[test]
fn the_speakers_echo_is_cancelled() {
    let mut p = AudioProcessor::new(ProcessingConfig { gain_control: false, ..ProcessingConfig::default() });
    let mut room = Room::new(RoomConfig { delay_ms: 80.0, ..RoomConfig::default() });
    let far = voice(6 * SECOND, 120.0, -20.0, 1);
    let (mic, out) = run(&mut p, &mut room, &far, &vec![0; 6 * SECOND]);
    let erle = level_dbfs(&mic[3 * SECOND..]) - level_dbfs(&out[3 * SECOND..]);
    assert!(erle >= 25.0, "echo reduced by {erle:.1} dB after 3 s");
    assert!(p.failure().is_none());
    assert_eq!(p.stats().blocks, 600);
    assert_eq!(p.stats().render_blocks, 600);
}

#[test]
fn the_customers_voice_goes_through() {
    let mut p = AudioProcessor::new(ProcessingConfig { gain_control: false, ..ProcessingConfig::default() });
    let mut room = Room::new(RoomConfig::default());
    let near = voice(4 * SECOND, 210.0, -25.0, 7);
    let (mic, out) = run(&mut p, &mut room, &vec![0; 4 * SECOND], &near);
    let kept = level_dbfs(&out[SECOND..]) - level_dbfs(&mic[SECOND..]);
    assert!(kept > -3.0, "near-end speech changed by {kept:.1} dB with no echo");
}

#[test]
fn a_quiet_customer_is_brought_up_and_a_loud_one_is_left_alone() {
    let gain = |level: f32| {
        let mut p =
            AudioProcessor::new(ProcessingConfig { noise_suppression: false, ..ProcessingConfig::default() });
        let mut room = Room::new(RoomConfig { noise_dbfs: Some(-70.0), ..RoomConfig::default() });
        let near = voice(10 * SECOND, 210.0, level, 7);
        let (mic, out) = run(&mut p, &mut room, &vec![0; 10 * SECOND], &near);
        level_dbfs(&out[8 * SECOND..]) - level_dbfs(&mic[8 * SECOND..])
    };
    let (quiet, loud) = (gain(-45.0), gain(-18.0));
    println!("gain after 8 s: quiet customer {quiet:.1} dB, loud customer {loud:.1} dB");
    assert!(quiet >= 6.0, "a customer at -45 dBFS raised by {quiet:.1} dB after 8 s");
    assert!(loud.abs() < 3.0, "a customer at -18 dBFS changed by {loud:.1} dB");
}

#[test]
fn switched_off_the_sound_is_untouched() {
    let mut p = AudioProcessor::new(ProcessingConfig::OFF);
    let near = voice(SECOND, 210.0, -25.0, 7);
    let mut s = near.clone();
    p.render(&near);
    assert!(p.capture(&mut s));
    assert_eq!(s, near);
    assert_eq!(ProcessingConfig::OFF.describe(), "off");
    assert_eq!(
        ProcessingConfig::default().describe(),
        "echo cancellation, noise suppression, gain control, high-pass filter"
    );
}

#[test]
fn a_failure_leaves_the_sound_unprocessed_and_says_so() {
    let mut p =
        AudioProcessor::new(ProcessingConfig { fail_after_blocks: Some(4), ..ProcessingConfig::default() });
    let near = voice(SECOND / 5, 210.0, -25.0, 7);
    let mut first = near[..FRAME_SAMPLES].to_vec();
    assert!(p.capture(&mut first));
    let mut s = near[..3 * FRAME_SAMPLES].to_vec();
    assert!(!p.capture(&mut s), "fails at the fifth block");
    let mut later = near[..FRAME_SAMPLES].to_vec();
    assert!(!p.capture(&mut later));
    assert_eq!(later, near[..FRAME_SAMPLES], "after the failure the sound goes out as captured");
    assert!(p.failure().is_some_and(|f| f.contains("injected fault") && f.contains("unprocessed")));
}

#[test]
fn what_the_speaker_played_long_ago_is_dropped() {
    let mut p = AudioProcessor::new(ProcessingConfig::default());
    p.render(&vec![100; 60 * BLOCK + 7]);
    assert_eq!((p.render.len(), p.render_partial.len()), (MAX_RENDER_QUEUE, 7));
    assert_eq!(p.stats().render_dropped, 10);
}

#[test]
fn configuration_reads_its_keys_and_refuses_others() {
    let c: ProcessingConfig = toml::from_str("noise_suppression = false").expect("parses");
    assert_eq!(c, ProcessingConfig { noise_suppression: false, ..ProcessingConfig::default() });
    let c: ProcessingConfig = toml::from_str("noise_suppression_level = \"very_high\"").expect("parses");
    assert_eq!(c.noise_suppression_level, NoiseLevel::VeryHigh);
    assert_eq!(ProcessingConfig::default().noise_suppression_level, NoiseLevel::High);
    assert!(toml::from_str::<ProcessingConfig>("noise_suppression_level = \"loud\"").is_err());
    assert!(toml::from_str::<ProcessingConfig>("echo = true").is_err());
    assert!(toml::from_str::<ProcessingConfig>("fail_after_blocks = 3").is_err());
}

/// The processing's own delay, stage by stage (see [`delay_samples`]).
#[test]
fn the_processing_adds_almost_no_delay() {
    for (name, c) in [
        ("hpf", ProcessingConfig { high_pass_filter: true, ..ProcessingConfig::OFF }),
        ("aec", ProcessingConfig { echo_cancellation: true, ..ProcessingConfig::OFF }),
        ("ns", ProcessingConfig { noise_suppression: true, ..ProcessingConfig::OFF }),
        ("agc", ProcessingConfig { gain_control: true, ..ProcessingConfig::OFF }),
        ("all", ProcessingConfig::default()),
    ] {
        let samples = delay_samples(c);
        println!("{name}: {samples} samples ({:.1} ms)", samples as f64 / 48.0);
        // docs/media.md states the figures; 20 ms is far above them.
        assert!(samples <= 960, "{name}: the output lags the input by {samples} samples");
    }
}
