//! Sound: the microphone into Opus with redundant copies ("audio-send" thread), and the
//! jitter buffer into the decoder and the speaker, one 20 ms slot at a time ("audio-play").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::stats::{PLAYED_AUDIO_KEPT, Shared, lock, with};
use super::{AudioOut, MAX_AUDIO_COPIES};
use crate::edges::devices::audio::{Microphone, Speaker};
use crate::edges::devices::unix_micros_now;
use crate::media::audio_jitter::{AudioJitterBuffer, Playout};
use crate::media::codec::{AudioDecoder, AudioEncoder, AudioSettings};
use crate::media::loss::LossPolicy;
use crate::media::packet::{MediaHeader, MediaKind};
use crate::media::processing::AudioProcessor;
use crate::media::{FRAME_SAMPLES, FRAME_US, stretch};

/// The "audio-send" thread: one Opus frame per 20 ms of microphone, each followed by copies of
/// the frames before it when the other side loses audio (media::loss).
pub(super) struct AudioSender {
    pub mic: Box<dyn Microphone>,
    pub settings: AudioSettings,
    pub policy: Arc<Mutex<LossPolicy>>,
    pub out: mpsc::Sender<AudioOut>,
    pub stats: Shared,
    /// Echo cancellation and the rest (media::processing), fed with what the speaker played.
    pub processor: AudioProcessor,
    pub played: std_mpsc::Receiver<Vec<i16>>,
    /// Processing time of the last frames, for [`SLOW_PROCESSING`].
    pub spent: VecDeque<Duration>,
}

/// Processing that takes more than this share of real time over [`SLOW_WINDOW`] frames is
/// given up: the microphone would overrun and the sound break up.
const SLOW_PROCESSING: f64 = 0.8;
const SLOW_WINDOW: usize = 50;

impl AudioSender {
    /// Runs until `stop`, or until the microphone fails (the call goes on with video).
    pub(super) fn run(mut self, stop: Arc<AtomicBool>) {
        let mut enc = match AudioEncoder::new(self.settings) {
            Ok(e) => e,
            Err(e) => return with(&self.stats, |s| s.problems.push(format!("audio encoder: {e}"))),
        };
        if self.processor.config().any() {
            info!(processing = %self.processor.config().describe(), "microphone processing on");
        }
        let mut seq: u32 = 0;
        // The last frames sent, newest first, for the copies that follow each new frame.
        let mut recent: VecDeque<(MediaHeader, Vec<u8>)> = VecDeque::with_capacity(MAX_AUDIO_COPIES);
        let mut expected_loss = self.settings.expected_loss_pct;
        while !stop.load(Ordering::Relaxed) {
            let (copies, want_loss) = {
                let p = lock(&self.policy);
                (usize::from(p.copies()).min(MAX_AUDIO_COPIES), p.expected_loss_pct())
            };
            if want_loss != expected_loss && enc.set_expected_loss(want_loss).is_ok() {
                expected_loss = want_loss;
            }
            let chunk = match self.mic.next_chunk() {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "microphone lost; the call goes on with video");
                    return with(&self.stats, |s| s.problems.push(format!("microphone: {e}")));
                }
            };
            let mut samples = chunk.samples;
            self.process(&mut samples);
            let Ok(payload) = enc.encode(&samples) else { continue };
            let header =
                MediaHeader { kind: MediaKind::Audio, keyframe: false, seq, captured_us: chunk.captured_us };
            seq = seq.wrapping_add(1);
            if self.out.try_send((header, payload.clone(), false)).is_ok() {
                with(&self.stats, |s| s.audio_frames_sent += 1);
            }
            // Redundancy: the previous frames again, after this one (media::loss).
            for (h, p) in recent.iter().take(copies) {
                if self.out.try_send((*h, p.clone(), true)).is_ok() {
                    with(&self.stats, |s| s.audio_copies_sent += 1);
                }
            }
            recent.push_front((header, payload));
            recent.truncate(MAX_AUDIO_COPIES);
        }
    }
}

impl AudioSender {
    /// The microphone's sound, processed against what the speaker played since the last
    /// frame; a processing failure is reported once and the sound goes on unprocessed.
    fn process(&mut self, samples: &mut [i16]) {
        if !self.processor.config().any() || self.processor.failure().is_some() {
            return;
        }
        while let Ok(played) = self.played.try_recv() {
            self.processor.render(&played);
        }
        let started = std::time::Instant::now();
        let mut ok = self.processor.capture(samples);
        self.spent.push_back(started.elapsed());
        if self.spent.len() > SLOW_WINDOW {
            self.spent.pop_front();
        }
        let total: Duration = self.spent.iter().sum();
        let budget = Duration::from_micros(FRAME_US).mul_f64(SLOW_PROCESSING * SLOW_WINDOW as f64);
        if ok && self.spent.len() == SLOW_WINDOW && total > budget {
            let per_frame = total.as_secs_f64() * 1000.0 / SLOW_WINDOW as f64;
            self.processor.give_up(&format!("too slow on this machine: {per_frame:.1} ms per 20 ms frame"));
            ok = false;
        }
        let stats = self.processor.stats().clone();
        let failure =
            (!ok).then(|| self.processor.failure().unwrap_or("audio processing failed").to_string());
        with(&self.stats, |s| {
            s.audio_processing = Some(stats);
            if let Some(f) = &failure {
                s.problems.push(f.clone());
            }
        });
        if let Some(f) = failure {
            warn!(problem = %f, "audio processing stopped; the call goes on");
        }
    }
}

/// The "audio-play" thread: every 20 ms, what the jitter buffer says to play — a frame, a
/// frame and the one before it compressed into one slot, or a concealment (from the next
/// frame's in-band FEC when it is there) — decoded and handed to the speaker.
pub(super) struct AudioPlayer {
    pub speaker: Option<Box<dyn Speaker>>,
    pub jitter: Arc<Mutex<AudioJitterBuffer>>,
    /// The jitter buffer's delay, for lip sync (video_playout).
    pub delay: Arc<AtomicU64>,
    pub stats: Shared,
    /// What was played, for the echo canceller on this side's microphone.
    pub played: std_mpsc::SyncSender<Vec<i16>>,
}

impl AudioPlayer {
    /// Runs until `stop`, or, once `draining` (the call ended), until everything that arrived
    /// was played.
    pub(super) fn run(mut self, stop: Arc<AtomicBool>, draining: Arc<AtomicBool>) {
        let mut dec = match AudioDecoder::new() {
            Ok(d) => d,
            Err(e) => return with(&self.stats, |s| s.problems.push(format!("audio decoder: {e}"))),
        };
        let start = std::time::Instant::now();
        let mut tick: u64 = 0;
        // Samples decoded but not played yet (less than a frame, after a compression).
        let mut carry: Vec<i16> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            // Pace by the clock; a real speaker's blocking write paces too, and the two agree
            // because both run at 48 kHz.
            let due = start + Duration::from_micros(tick * FRAME_US);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            tick += 1;
            let now = unix_micros_now();
            let Some((playout, next)) = self.poll(now, &draining) else { break };
            let samples = match playout {
                Playout::Wait => continue,
                Playout::Frame { captured_us, payload, before, .. } => self.decode(
                    &mut dec,
                    now.saturating_sub(captured_us),
                    &payload,
                    before.as_deref(),
                    carry.len(),
                ),
                Playout::Conceal { .. } => self.conceal(&mut dec, next.as_deref()),
            };
            let slot = fill_slot(&mut carry, samples);
            self.play(&slot);
        }
    }

    /// The jitter buffer's answer for this slot, and the next frame when this one is missing
    /// (for its FEC); `None` when the call ended and everything that arrived was played.
    fn poll(&self, now: u64, draining: &AtomicBool) -> Option<(Playout, Option<Vec<u8>>)> {
        let mut j = lock(&self.jitter);
        // The call ended and everything that arrived was played: nothing is missing, the
        // sound just stopped.
        if draining.load(Ordering::Relaxed) && j.is_empty() {
            return None;
        }
        let p = j.poll_playout(now);
        let next = match &p {
            Playout::Conceal { seq } => j.peek(seq.wrapping_add(1)).map(<[u8]>::to_vec),
            _ => None,
        };
        self.delay.store(j.playout_delay_us(), Ordering::Relaxed);
        Some((p, next))
    }

    /// A frame (`latency_us` after its capture); with `before`, the delay comes down: the frame
    /// before plays too, both in this slot, a few pitch periods shorter (media::stretch).
    /// Decoded in order, so that the decoder's state follows the stream.
    fn decode(
        &self,
        dec: &mut AudioDecoder,
        latency_us: u64,
        payload: &[u8],
        before: Option<&[u8]>,
        carried: usize,
    ) -> Vec<i16> {
        let first = before.map(|b| dec.decode(b));
        let Ok(s) = dec.decode(payload) else {
            with(&self.stats, |st| st.audio_frames_concealed += 1);
            return dec.conceal().unwrap_or_default();
        };
        with(&self.stats, |st| {
            st.audio_frames_played += 1;
            st.audio_latency.record(latency_us);
        });
        match first {
            None => s,
            Some(Err(_)) => {
                with(&self.stats, |st| st.audio_frames_concealed += 1);
                s
            }
            Some(Ok(mut b)) => {
                with(&self.stats, |st| {
                    st.audio_frames_played += 1;
                    st.audio_frames_accelerated += 1;
                });
                b.extend_from_slice(&s);
                stretch::compress(&b, FRAME_SAMPLES + carried)
            }
        }
    }

    /// A missing frame: rebuilt from the next frame's FEC, or concealed.
    fn conceal(&self, dec: &mut AudioDecoder, next: Option<&[u8]>) -> Vec<i16> {
        let fec = next.and_then(|n| dec.decode_fec(n).ok());
        with(&self.stats, |st| {
            if fec.is_some() {
                st.audio_frames_recovered_fec += 1;
            } else {
                st.audio_frames_concealed += 1;
            }
        });
        fec.unwrap_or_else(|| dec.conceal().unwrap_or_default())
    }

    /// Kept for measuring (the last 2 s), and to the speaker; a speaker that fails is dropped.
    fn play(&mut self, samples: &[i16]) {
        // Exactly what goes to the speaker is the echo canceller's reference.
        let _ = self.played.try_send(samples.to_vec());
        with(&self.stats, |st| {
            st.played_audio.extend(samples.iter().copied());
            while st.played_audio.len() > PLAYED_AUDIO_KEPT {
                st.played_audio.pop_front();
            }
        });
        if let Some(sp) = self.speaker.as_mut()
            && let Err(e) = sp.play(samples)
        {
            warn!(error = %e, "speaker failed; audio is no longer played");
            with(&self.stats, |st| st.problems.push(format!("speaker: {e}")));
            self.speaker = None;
        }
    }
}

/// A slot is one frame long; what a compression left over starts the next.
fn fill_slot(carry: &mut Vec<i16>, samples: Vec<i16>) -> Vec<i16> {
    if carry.is_empty() && samples.len() == FRAME_SAMPLES {
        return samples;
    }
    carry.extend_from_slice(&samples);
    let rest = carry.split_off(FRAME_SAMPLES.min(carry.len()));
    std::mem::replace(carry, rest)
}
