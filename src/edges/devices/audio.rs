//! Sound in and out: 48 kHz mono 16-bit, in chunks of 20 ms (960 samples).
//!
//! Microphones: [`alsa::AlsaMicrophone`] and [`synthetic::SyntheticMicrophone`] (a tone with
//! a marker blip). Speakers: [`alsa::AlsaSpeaker`], [`wav::WavSpeaker`] (a file) and
//! [`NullSpeaker`]. [`spawn_microphone`] and [`spawn_speaker`] run them on named threads
//! behind drop-oldest queues, as the camera does.
//!
//! A real speaker paces its caller: `play` blocks while the device buffer is full. The file
//! and null speakers return at once unless made `paced`, when they sleep like a device would.

pub mod alsa;
pub mod synthetic;
pub mod wav;

use std::time::Duration;

use tracing::{debug, error, info, warn};

pub use self::alsa::{AlsaMicrophone, AlsaSpeaker, PcmConfig, PcmInfo, list_pcm_devices};
pub use self::synthetic::{SyntheticMicrophone, dominant_frequency};
pub use self::wav::WavSpeaker;
use crate::edges::devices::HwError;
use crate::edges::devices::feed::{self, DeviceStats, Pacer, QueueReceiver, QueueSender};
use crate::media::{AudioChunk, FRAME_US};

/// A source of sound. Real: an ALSA capture device. Synthetic: a tone.
pub trait Microphone: Send + 'static {
    /// Blocks for the next 20 ms (960 samples); called only on the microphone's own thread.
    fn next_chunk(&mut self) -> Result<AudioChunk, HwError>;

    /// One line for logs and `kioskd doctor`.
    fn describe(&self) -> String {
        "microphone".into()
    }

    /// Overruns recovered so far (ALSA).
    fn xruns(&self) -> u64 {
        0
    }
}

/// A sink for sound. Real: an ALSA playback device. Others: a WAV file, nothing.
pub trait Speaker: Send + 'static {
    /// Plays one chunk (normally 20 ms), blocking while the device buffer is full.
    fn play(&mut self, samples: &[i16]) -> Result<(), HwError>;

    /// One line for logs and `kioskd doctor`.
    fn describe(&self) -> String {
        "speaker".into()
    }

    /// Underruns recovered so far (ALSA).
    fn xruns(&self) -> u64 {
        0
    }
}

/// A speaker that discards everything. `paced()` makes it take 20 ms of wall time per 20 ms
/// of sound, like a device.
#[derive(Debug, Default)]
pub struct NullSpeaker {
    pacer: Option<Pacer>,
    samples: u64,
}

impl NullSpeaker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn paced(mut self) -> Self {
        self.pacer = Some(Pacer::new(Duration::from_micros(FRAME_US)));
        self
    }

    /// Samples discarded so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

impl Speaker for NullSpeaker {
    fn play(&mut self, samples: &[i16]) -> Result<(), HwError> {
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    fn describe(&self) -> String {
        "null speaker".into()
    }
}

/// The consumer's end of the microphone thread.
pub type AudioQueue = QueueReceiver<AudioChunk>;

/// The producer's end of the speaker thread: push chunks as they are due; when the device
/// falls behind, the oldest waiting chunk is dropped (bounded latency).
pub type SpeakerFeed = QueueSender<AudioChunk>;

/// Starts the microphone thread ("microphone"): reads chunks into a queue of at most `queue`
/// chunks (oldest dropped when the consumer is slow). Ends when the queue is dropped or the
/// microphone fails (the error is kept in the stats); timeouts count as stalls.
pub fn spawn_microphone(
    mut mic: Box<dyn Microphone>,
    queue: usize,
) -> std::io::Result<(AudioQueue, DeviceStats)> {
    let stats = DeviceStats::default();
    let (tx, rx) = feed::drop_oldest(queue, stats.clone());
    let thread_stats = stats.clone();
    std::thread::Builder::new().name("microphone".into()).spawn(move || {
        let _ended = thread_stats.end_guard();
        let what = mic.describe();
        info!(microphone = %what, "microphone started");
        while !tx.receiver_gone() {
            let result = mic.next_chunk();
            thread_stats.set_glitches(mic.xruns());
            match result {
                Ok(chunk) => {
                    thread_stats.record_delivered();
                    if tx.push(chunk).is_err() {
                        break;
                    }
                }
                Err(e) if e.is_timeout() => {
                    if thread_stats.record_stall() {
                        warn!(microphone = %what, error = %e, "microphone stalled");
                    }
                }
                Err(e) => {
                    error!(microphone = %what, error = %e, "microphone failed");
                    thread_stats.record_error(e.to_string());
                    return;
                }
            }
        }
        debug!(microphone = %what, "microphone consumer gone; thread ends");
    })?;
    Ok((rx, stats))
}

/// Starts the speaker thread ("speaker"): plays the chunks pushed into the returned feed, at
/// most `queue` waiting (oldest dropped when the device is slower than the producer). Ends
/// when the feed is dropped (after playing what is queued) or the speaker fails.
pub fn spawn_speaker(
    mut speaker: Box<dyn Speaker>,
    queue: usize,
) -> std::io::Result<(SpeakerFeed, DeviceStats)> {
    /// How often the thread looks up from an empty queue; only bounds shutdown latency.
    const IDLE_WAKE: Duration = Duration::from_millis(200);
    let stats = DeviceStats::default();
    let (tx, rx) = feed::drop_oldest::<AudioChunk>(queue, stats.clone());
    let thread_stats = stats.clone();
    std::thread::Builder::new().name("speaker".into()).spawn(move || {
        let _ended = thread_stats.end_guard();
        let what = speaker.describe();
        info!(speaker = %what, "speaker started");
        loop {
            let chunk = match rx.pop_blocking(IDLE_WAKE) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => continue,
                Err(feed::Closed) => break,
            };
            let result = speaker.play(&chunk.samples);
            thread_stats.set_glitches(speaker.xruns());
            match result {
                Ok(()) => thread_stats.record_delivered(),
                Err(e) => {
                    error!(speaker = %what, error = %e, "speaker failed");
                    thread_stats.record_error(e.to_string());
                    return;
                }
            }
        }
        debug!(speaker = %what, "speaker feed closed; thread ends");
    })?;
    Ok((tx, stats))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::media::FRAME_SAMPLES;

    /// Records what it plays.
    struct Recorder(Arc<Mutex<Vec<i16>>>);

    impl Speaker for Recorder {
        fn play(&mut self, samples: &[i16]) -> Result<(), HwError> {
            self.0.lock().unwrap().extend_from_slice(samples);
            Ok(())
        }
    }

    #[test]
    fn speaker_thread_plays_what_is_fed_then_ends() {
        let played = Arc::new(Mutex::new(Vec::new()));
        let (feed, stats) = spawn_speaker(Box::new(Recorder(played.clone())), 100).unwrap();
        for n in 0..5i16 {
            feed.push(AudioChunk { samples: vec![n; FRAME_SAMPLES], captured_us: 0 }).unwrap();
        }
        drop(feed);
        while !stats.has_ended() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let played = played.lock().unwrap();
        assert_eq!(played.len(), 5 * FRAME_SAMPLES);
        assert_eq!(played[4 * FRAME_SAMPLES], 4);
        assert_eq!((stats.delivered(), stats.error()), (5, None));
    }

    #[test]
    fn microphone_thread_delivers_tone_chunks() {
        let mic = SyntheticMicrophone::new(440.0).unpaced();
        let (queue, stats) = spawn_microphone(Box::new(mic), 64).unwrap();
        let chunk = queue.pop_blocking(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(chunk.samples.len(), FRAME_SAMPLES);
        drop(queue);
        while !stats.has_ended() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(stats.delivered() >= 1);
    }

    #[test]
    fn paced_null_speaker_takes_real_time() {
        let mut speaker = NullSpeaker::new().paced();
        let t0 = std::time::Instant::now();
        for _ in 0..4 {
            speaker.play(&[0; FRAME_SAMPLES]).unwrap();
        }
        // The first chunk is immediate, the next three take 20 ms each.
        assert!(t0.elapsed() >= Duration::from_millis(58), "{:?}", t0.elapsed());
        assert_eq!(speaker.samples(), 4 * FRAME_SAMPLES as u64);
    }
}
