//! Sending video: the camera's pictures through the ladder (bitrate, frame rate, size, audio
//! only) into the H.264 encoder, on the "video-send" thread; and the sender's half of rate
//! control, a task that sets the bitrate the encoder aims at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::VideoOut;
use super::stats::{MAX_FRAME_LOG, Shared, with};
use crate::edges::devices::camera::{self, CameraStats, PictureQueue};
use crate::edges::display::{self, Display};
use crate::media::codec::{VideoEncoder, VideoSettings};
use crate::media::ladder::{Rung, VideoLadder};
use crate::media::packet::{MediaHeader, MediaKind};
use crate::media::{Picture, UnixMicros};
use crate::protocol::CallId;

/// Lowest video bitrate the rate control goes down to (bit/s).
pub(super) const MIN_VIDEO_BPS: u64 = 30_000;
/// How often the rate control looks at the path.
const RATE_INTERVAL: Duration = Duration::from_millis(250);
/// A receiver's cap not repeated for this long is eased (the receiver may have stopped
/// getting anything to measure, or the hint was lost with its connection).
const CAP_STALE_AFTER: Duration = Duration::from_secs(3);

/// The encoder's side of the "video-send" thread.
pub(super) struct VideoSender {
    pub call_id: CallId,
    pub settings: VideoSettings,
    /// The bitrate the path takes now (bit/s), from the rate task and the receiver's hints.
    pub rate: Arc<AtomicU64>,
    /// The other side asked for a keyframe.
    pub keyframe: Arc<AtomicBool>,
    pub out: mpsc::Sender<VideoOut>,
    pub stats: Shared,
    /// The kiosk's display shows a small copy of its own picture.
    pub display: Option<Display>,
}

/// What the thread keeps from picture to picture.
struct Encoding {
    enc: VideoEncoder,
    ladder: VideoLadder,
    seq: u32,
    last_sent_us: Option<UnixMicros>,
}

impl VideoSender {
    /// Runs until `stop`, or until the camera ends (the call goes on with audio).
    pub(super) fn run(self, pictures: PictureQueue, cam_stats: CameraStats, stop: Arc<AtomicBool>) {
        let s = self.settings;
        let mut e = match VideoEncoder::new(s) {
            Ok(enc) => Encoding {
                enc,
                ladder: VideoLadder::new(s.width, s.height, s.fps, u64::from(s.bitrate_bps)),
                seq: 0,
                last_sent_us: None,
            },
            Err(e) => return with(&self.stats, |st| st.problems.push(format!("video encoder: {e}"))),
        };
        while !stop.load(Ordering::Relaxed) {
            let pic = match pictures.pop_blocking(Duration::from_millis(100)) {
                Ok(Some(pic)) => pic,
                // Nothing within the timeout: a stalled camera may come back.
                Ok(None) => continue,
                Err(_) => {
                    let e = cam_stats.error().unwrap_or_else(|| "stopped".into());
                    warn!(call_id = self.call_id, error = %e, "camera lost; the call goes on with audio");
                    with(&self.stats, |st| st.problems.push(format!("camera: {e}")));
                    break;
                }
            };
            self.picture(&mut e, pic, &cam_stats);
        }
    }

    /// One picture from the camera: shown small, adapted to the path, encoded and sent.
    fn picture(&self, e: &mut Encoding, pic: Picture, cam_stats: &CameraStats) {
        // The sender's frame number, read from the camera's own picture.
        let stamp = camera::synthetic::read_stamp(&pic).map(|(n, _)| n);
        if let Some(d) = &self.display {
            d.show_own(display::shrink(&pic, display::OWN_PICTURE_WIDTH));
        }
        let want = self.rate.load(Ordering::Relaxed).min(u64::from(u32::MAX)) as u32;
        let rung = self.climb(e, want, pic.captured_us);
        if !rung.video {
            return with(&self.stats, |s| s.video_frames_not_sent_floor += 1);
        }
        // A lower frame rate: skip the camera's frames that come too soon.
        if rung.fps < self.settings.fps {
            let interval_us = (1e6 / f64::from(rung.fps.max(1.0)) * 0.9) as u64;
            if e.last_sent_us.is_some_and(|t| pic.captured_us < t + interval_us) {
                return;
            }
        }
        e.last_sent_us = Some(pic.captured_us);
        let pic = fit(pic, e.enc.settings().width, e.enc.settings().height);
        // The encoder spends its bitrate over the frame rate it was made for; it gets the
        // rung's frame rate, so each frame may take proportionally more (or less).
        let want = (f64::from(want) * f64::from(e.enc.settings().fps) / f64::from(rung.fps.max(1.0))) as u32;
        let have = e.enc.settings().bitrate_bps;
        if want.abs_diff(have) > have / 20
            && let Err(err) = e.enc.set_bitrate(want)
        {
            debug!(error = %err, "bitrate not changed");
        }
        if self.keyframe.swap(false, Ordering::Relaxed) {
            e.enc.request_keyframe();
        }
        self.encode_and_send(e, &pic, stamp, cam_stats);
    }

    /// The ladder: bitrate, then frame rate, then size, then audio only.
    fn climb(&self, e: &mut Encoding, want: u32, captured_us: UnixMicros) -> Rung {
        let before = e.ladder.rung().index;
        let rung = e.ladder.update(u64::from(want), captured_us);
        if rung.index == before {
            return rung;
        }
        info!(
            call_id = self.call_id,
            rung = rung.index,
            width = rung.width,
            height = rung.height,
            fps = rung.fps,
            target_kbps = want / 1000,
            "video adapts to the path"
        );
        with(&self.stats, |s| s.video_rung_changes += 1);
        // Only a new picture size needs a new encoder (and its keyframe, which on a narrow path
        // is itself a burst): a new frame rate is frames skipped.
        let resized = (rung.width, rung.height) != (e.enc.settings().width, e.enc.settings().height);
        if rung.video && resized {
            let s = VideoSettings {
                width: rung.width,
                height: rung.height,
                fps: rung.fps,
                bitrate_bps: want,
                ..self.settings
            };
            match VideoEncoder::new(s) {
                Ok(enc) => e.enc = enc,
                Err(err) => debug!(error = %err, "encoder not changed"),
            }
        }
        rung
    }

    fn encode_and_send(&self, e: &mut Encoding, pic: &Picture, stamp: Option<u32>, cam_stats: &CameraStats) {
        let frame = match e.enc.encode(pic) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(err) => return debug!(error = %err, "encode failed"),
        };
        let header = MediaHeader {
            kind: MediaKind::Video,
            keyframe: frame.keyframe,
            seq: e.seq,
            captured_us: pic.captured_us,
        };
        e.seq = e.seq.wrapping_add(1);
        let sent = self.out.try_send((header, frame.data)).is_ok();
        with(&self.stats, |s| {
            s.video_frames_captured = cam_stats.delivered();
            s.video_frames_capture_dropped = cam_stats.dropped();
            if sent {
                s.video_frames_sent += 1;
                if let Some(n) = stamp
                    && s.sent_frame_numbers.len() < MAX_FRAME_LOG
                {
                    s.sent_frame_numbers.push(n);
                }
            } else {
                s.video_frames_send_dropped += 1;
            }
        });
        if !sent {
            // The receiver will miss this frame; start the next group with a keyframe.
            e.enc.request_keyframe();
        }
    }
}

/// Scales a picture to the encoder's size when the camera delivers another (nearest pixel).
fn fit(pic: Picture, width: u32, height: u32) -> Picture {
    if pic.width == width && pic.height == height {
        return pic;
    }
    let mut out = Picture::black(width, height, pic.captured_us);
    let (sw, sh) = (pic.width as usize, pic.height as usize);
    let (dw, dh) = (width as usize, height as usize);
    let (sy, su, sv) = pic.planes();
    let (dy, rest) = out.data.split_at_mut(dw * dh);
    let (du, dv) = rest.split_at_mut((dw / 2) * (dh / 2));
    for y in 0..dh {
        let srow = y * sh / dh;
        for x in 0..dw {
            dy[y * dw + x] = sy[srow * sw + x * sw / dw];
        }
    }
    for y in 0..dh / 2 {
        let srow = y * (sh / 2) / (dh / 2);
        for x in 0..dw / 2 {
            let sx = x * (sw / 2) / (dw / 2);
            du[y * (dw / 2) + x] = su[srow * (sw / 2) + sx];
            dv[y * (dw / 2) + x] = sv[srow * (sw / 2) + sx];
        }
    }
    out
}

/// The receiver's latest cap on our video (media::rate), and how many hints came so far.
pub(super) struct RemoteCap {
    pub bps: AtomicU64,
    pub hints: AtomicU64,
}

/// The video bitrate a call starts at: 40 % of the configured rate (the ladder's top rung
/// still holds there), reached in 6 % steps (about 4 s). Starting at the full rate on a narrow
/// link filled its queue with a second of video before the first cut took effect.
pub(super) fn start_rate(max_bps: u32) -> u64 {
    (u64::from(max_bps) * 4 / 10).max(MIN_VIDEO_BPS)
}

/// The sender's half of rate control: the video bitrate climbs from [`start_rate`] to the
/// configured rate, and never above the receiver's cap.
/// The receiver measures the queueing delay of this direction alone (see media::rate); the
/// sender's round trip is no signal, since it also grows when the other direction is full.
pub(super) async fn rate_task(max_bps: u32, rate: Arc<AtomicU64>, remote_cap: Arc<RemoteCap>) {
    let max = u64::from(max_bps).max(MIN_VIDEO_BPS);
    let mut target = start_rate(max_bps);
    let mut tick = tokio::time::interval(RATE_INTERVAL);
    // Hints seen so far, and ticks since the last one: a stale cap is eased 10 % a tick.
    let (mut hints_seen, mut stale_ticks) = (0u64, 0u32);
    loop {
        tick.tick().await;
        let hints = remote_cap.hints.load(Ordering::Relaxed);
        if hints == hints_seen {
            stale_ticks = stale_ticks.saturating_add(1);
        } else {
            (hints_seen, stale_ticks) = (hints, 0);
        }
        let mut cap = remote_cap.bps.load(Ordering::Relaxed);
        if cap < u64::MAX && RATE_INTERVAL * stale_ticks >= CAP_STALE_AFTER {
            cap = if cap >= max { u64::MAX } else { cap * 110 / 100 };
            remote_cap.bps.store(cap, Ordering::Relaxed);
        }
        target = (target * 106 / 100).min(max);
        rate.store(target.min(cap).max(MIN_VIDEO_BPS), Ordering::Relaxed);
    }
}
