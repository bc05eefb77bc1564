//! Receiving video: the "video-recv" thread decodes the other side's frames as the playout
//! allows (media::video_playout) and shows each picture at its render time, on the kiosk's
//! display or on a screen of its own; it asks for a keyframe when the stream cannot go on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use tracing::warn;

use super::net::Feedback;
use super::stats::{MAX_FRAME_LOG, Shared, with};
use crate::edges::devices::camera;
use crate::edges::devices::feed::DeviceStats;
use crate::edges::devices::screen::ScreenFeed;
use crate::edges::devices::unix_micros_now;
use crate::edges::display::Display;
use crate::media::codec::VideoDecoder;
use crate::media::packet::MediaHeader;
use crate::media::video_playout::{FrameAction, VideoPlayout};
use crate::media::{Picture, UnixMicros};
use crate::protocol::ClientMsg;

/// Time after the start of a call from which video latency counts as settled (µs).
const SETTLED_AFTER_US: u64 = 5_000_000;
/// Decoded pictures waiting for their render time: as many as the playout queues
/// (`VideoPlayoutConfig::queue_capacity`).
const DECODED_KEPT: usize = 24;
/// The thread wakes at least this often to show pictures on time.
const WAKE: Duration = Duration::from_millis(5);

/// Where pictures are shown: the kiosk's display, or a screen thread of this call's own.
pub(super) enum Shown {
    Display(Display),
    Screen(ScreenFeed, DeviceStats),
    Nowhere,
}

pub(super) struct VideoReceiver {
    pub shown: Shown,
    /// The audio's playout delay, which pictures wait for (lip sync).
    pub audio_delay: Arc<AtomicU64>,
    pub feedback: Feedback,
    pub stats: Shared,
}

/// A decoded picture waiting for its turn: its sequence number and stamp (frame number).
type Decoded = (u32, Picture, Option<u32>);

impl VideoReceiver {
    /// Runs until `stop`, or until the frames stop coming (the session ends).
    pub(super) fn run(mut self, frames: std_mpsc::Receiver<(MediaHeader, Vec<u8>)>, stop: Arc<AtomicBool>) {
        let mut dec = match VideoDecoder::new() {
            Ok(d) => d,
            Err(e) => return with(&self.stats, |s| s.problems.push(format!("video decoder: {e}"))),
        };
        let mut playout = VideoPlayout::new();
        let mut pending: VecDeque<Decoded> = VecDeque::new();
        let mut last_verified: Option<u32> = None;
        while !stop.load(Ordering::Relaxed) {
            match frames.recv_timeout(WAKE) {
                Ok((h, data)) => self.frame(&mut dec, &mut playout, &mut pending, h, &data),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let now = unix_micros_now();
            let Some(seq) = playout.poll_display(now) else { continue };
            // Older pictures were skipped by the playout: drop them.
            while pending.front().is_some_and(|(s, _, _)| *s != seq) {
                pending.pop_front();
            }
            if let Some((_, pic, stamp)) = pending.pop_front() {
                self.count_shown(&pic, stamp, now, &mut last_verified);
                self.show(pic);
            }
        }
    }

    fn ask_keyframe(&self) {
        with(&self.stats, |s| s.keyframe_requests += 1);
        self.feedback.send(ClientMsg::KeyframeRequest { call_id: self.feedback.call_id });
    }

    /// A frame from the network: decoded when the playout says so, its picture kept for its
    /// render time.
    fn frame(
        &self,
        dec: &mut VideoDecoder,
        playout: &mut VideoPlayout,
        pending: &mut VecDeque<Decoded>,
        h: MediaHeader,
        data: &[u8],
    ) {
        let now = unix_micros_now();
        with(&self.stats, |s| s.video_frames_received += 1);
        playout.set_audio_delay(self.audio_delay.load(Ordering::Relaxed));
        match playout.handle_frame(h.seq, h.keyframe, h.captured_us, now) {
            FrameAction::Decode => match dec.decode(data, h.captured_us) {
                Ok(Some(pic)) => {
                    // A synthetic camera's frame number, checked against the capture time the
                    // header carries.
                    let read = camera::synthetic::read_stamp(&pic);
                    let stamp = read.filter(|&(_, ms)| ms == (h.captured_us / 1000) as u32).map(|(n, _)| n);
                    with(&self.stats, |s| {
                        s.video_frames_decoded += 1;
                        if let Some((n, _)) = read
                            && s.stamped_frame_numbers.len() < MAX_FRAME_LOG
                        {
                            s.stamped_frame_numbers.push(n);
                        }
                        if let Some(n) = stamp
                            && s.decoded_frame_numbers.len() < MAX_FRAME_LOG
                        {
                            s.decoded_frame_numbers.push(n);
                        }
                    });
                    playout.handle_decoded(h.seq, h.captured_us, now);
                    pending.push_back((h.seq, pic, stamp));
                    while pending.len() > DECODED_KEPT {
                        pending.pop_front();
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    if playout.handle_decode_error(now) {
                        self.ask_keyframe();
                    }
                }
            },
            FrameAction::RequestKeyframe => self.ask_keyframe(),
            FrameAction::DropUntilKeyframe | FrameAction::Stale => {}
        }
    }

    /// Latency, freezes and the stamps of the pictures shown (in increasing order: verified).
    fn count_shown(
        &self,
        pic: &Picture,
        stamp: Option<u32>,
        now: UnixMicros,
        last_verified: &mut Option<u32>,
    ) {
        with(&self.stats, |s| {
            s.video_frames_displayed += 1;
            let latency = now.saturating_sub(pic.captured_us);
            if s.display_times_us.len() < MAX_FRAME_LOG {
                s.display_times_us.push(now);
                s.display_latency_ms.push(u32::try_from(latency / 1000).unwrap_or(u32::MAX));
            }
            s.video_latency.record(latency);
            if now.saturating_sub(s.started_us) > SETTLED_AFTER_US {
                s.video_latency_settled.record(latency);
            }
            if let Some(n) = stamp
                && last_verified.is_none_or(|l| n > l)
            {
                *last_verified = Some(n);
                s.video_frames_verified += 1;
                if s.verified_frame_numbers.len() < MAX_FRAME_LOG {
                    s.verified_frame_numbers.push(n);
                }
            }
        });
    }

    /// To the display or the screen; a screen that fails is dropped, the call goes on.
    fn show(&mut self, pic: Picture) {
        match &self.shown {
            Shown::Display(d) => d.show_remote(pic),
            Shown::Screen(feed, st) => {
                if feed.push(pic).is_err() {
                    let e = st.error().unwrap_or_else(|| "stopped".into());
                    warn!(error = %e, "screen failed; video is no longer shown");
                    with(&self.stats, |s| s.problems.push(format!("screen: {e}")));
                    self.shown = Shown::Nowhere;
                }
            }
            Shown::Nowhere => {}
        }
    }
}
