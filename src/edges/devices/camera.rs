//! The camera: pictures in I420, stamped with the wall-clock time of capture.
//!
//! Backends: [`v4l2::V4l2Camera`] (a V4L2 device, YUYV or MJPEG) and
//! [`synthetic::SyntheticCamera`] (a moving test pattern with a machine-readable stamp),
//! chosen at run time. [`spawn_camera`] runs either on a named thread that feeds a
//! [`PictureQueue`]; when the consumer is slow the oldest picture is dropped and counted.
//!
//! A camera that delivers nothing for a while returns [`HwError::timeout`] from
//! `next_picture`: the thread counts a stall and keeps waiting, so a camera that comes back
//! needs no restart. Any other error ends the thread and is kept in [`CameraStats`] for the
//! daemon to report ("camera missing").

pub mod synthetic;
pub mod v4l2;

use std::path::PathBuf;

use tracing::{debug, error, info, warn};

pub use self::synthetic::{CameraSwitch, SyntheticCamera, read_stamp, stamp};
pub use self::v4l2::{CameraInfo, V4l2Camera, list_cameras};
use crate::edges::devices::HwError;
use crate::edges::devices::feed::{self, DeviceStats, QueueReceiver};
use crate::media::Picture;

/// Pixel format asked of a V4L2 camera. The synthetic camera ignores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PixelFormat {
    /// Packed 4:2:2 YUV, converted to I420 by dropping every other chroma row.
    Yuyv,
    /// Motion JPEG, decoded in software (USB cameras offer large sizes only in MJPEG).
    Mjpeg,
    /// YUYV if the device offers it, else MJPEG.
    #[default]
    Auto,
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraConfig {
    /// V4L2 device node (`/dev/video0`).
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Pictures per second asked of the device.
    pub fps: u32,
    pub format: PixelFormat,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self { device: "/dev/video0".into(), width: 640, height: 480, fps: 30, format: PixelFormat::Auto }
    }
}

/// A source of pictures. Real: a V4L2 device. Synthetic: a moving, stamped test pattern.
pub trait Camera: Send + 'static {
    /// Blocks for the next picture; called only on the camera's own thread.
    /// [`HwError::timeout`] means nothing came within the backend's timeout (not fatal).
    fn next_picture(&mut self) -> Result<Picture, HwError>;

    /// One line for logs and `kioskd doctor`: backend, device, format, size, rate.
    fn describe(&self) -> String;

    /// Frames the device delivered but that could not be used (corrupt JPEG...), so far.
    fn corrupt_frames(&self) -> u64 {
        0
    }
}

/// Counters of the camera thread: `delivered` pictures, `dropped` (consumer too slow),
/// `stalls`, `glitches` (= corrupt frames skipped) and the error that ended it.
pub type CameraStats = DeviceStats;

/// The consumer's end of the camera thread: the newest pictures, oldest dropped when full.
pub type PictureQueue = QueueReceiver<Picture>;

/// Starts the camera thread ("camera"): reads pictures from `cam` into a queue of at most
/// `queue` pictures (at least 1; 2–4 is plenty), dropping the oldest when the consumer is
/// slow. The thread ends when the returned queue is dropped (checked after every picture or
/// stall) or when the camera fails; the error is then in the stats and the queue reports
/// [`feed::Closed`] once drained.
pub fn spawn_camera(mut cam: Box<dyn Camera>, queue: usize) -> std::io::Result<(PictureQueue, CameraStats)> {
    let stats = DeviceStats::default();
    let (tx, rx) = feed::drop_oldest(queue, stats.clone());
    let thread_stats = stats.clone();
    std::thread::Builder::new().name("camera".into()).spawn(move || {
        let _ended = thread_stats.end_guard();
        let what = cam.describe();
        info!(camera = %what, "camera started");
        while !tx.receiver_gone() {
            let result = cam.next_picture();
            thread_stats.set_glitches(cam.corrupt_frames());
            match result {
                Ok(pic) => {
                    thread_stats.record_delivered();
                    if tx.push(pic).is_err() {
                        break;
                    }
                }
                Err(e) if e.is_timeout() => {
                    if thread_stats.record_stall() {
                        warn!(camera = %what, error = %e, "camera stalled");
                    }
                }
                Err(e) => {
                    error!(camera = %what, error = %e, "camera failed");
                    thread_stats.record_error(e.to_string());
                    return;
                }
            }
        }
        debug!(camera = %what, "camera consumer gone; camera thread ends");
    })?;
    Ok((rx, stats))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::edges::devices::feed::Closed;

    /// Delivers `good` tiny pictures, then one stall, then fails.
    struct Scripted {
        good: u32,
        stalled: bool,
    }

    impl Camera for Scripted {
        fn next_picture(&mut self) -> Result<Picture, HwError> {
            if self.good > 0 {
                self.good -= 1;
                return Ok(Picture::black(2, 2, u64::from(self.good)));
            }
            if !self.stalled {
                self.stalled = true;
                return Err(HwError::timeout("scripted camera"));
            }
            Err(HwError::Open {
                what: "camera",
                path: "/dev/video9".into(),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
            })
        }

        fn describe(&self) -> String {
            "scripted".into()
        }

        fn corrupt_frames(&self) -> u64 {
            2
        }
    }

    #[test]
    fn thread_delivers_then_records_the_error_and_closes() {
        let cam = Scripted { good: 3, stalled: false };
        let (queue, stats) = spawn_camera(Box::new(cam), 8).unwrap();
        let mut got = 0;
        loop {
            match queue.pop_blocking(Duration::from_secs(5)) {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("camera thread neither delivered nor ended"),
                Err(Closed) => break,
            }
        }
        assert_eq!(got, 3);
        let s = stats.snapshot();
        assert_eq!((s.delivered, s.stalls, s.glitches, s.ended), (3, 1, 2, true));
        assert!(s.error.is_some_and(|e| e.contains("/dev/video9")), "{stats:?}");
    }

    #[test]
    fn slow_consumer_loses_the_oldest_pictures() {
        let cam = Scripted { good: 10, stalled: false };
        let (queue, stats) = spawn_camera(Box::new(cam), 2).unwrap();
        while !stats.has_ended() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Pictures were stamped 9, 8, ... 0 in capture order: the newest two remain.
        let a = queue.try_pop().unwrap().unwrap();
        let b = queue.try_pop().unwrap().unwrap();
        assert_eq!((a.captured_us, b.captured_us), (1, 0));
        assert_eq!(stats.dropped(), 8);
        assert_eq!(queue.try_pop(), Err(Closed));
    }

    #[test]
    fn thread_stops_when_the_queue_is_dropped() {
        let cam = SyntheticCamera::new(64, 48, 200).unwrap();
        let (queue, stats) = spawn_camera(Box::new(cam), 2).unwrap();
        assert!(queue.pop_blocking(Duration::from_secs(5)).unwrap().is_some());
        drop(queue);
        for _ in 0..500 {
            if stats.has_ended() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(stats.has_ended());
        assert_eq!(stats.error(), None);
    }
}
