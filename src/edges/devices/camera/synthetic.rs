//! The synthetic camera: sliding colour bars and a bouncing square (so the encoder sees
//! motion), paced in real time by the camera thread itself, each picture stamped with its
//! frame number and capture time.
//!
//! # The stamp
//! Three rows of 32 blocks at the top of the luma plane, each block `width / 32` pixels wide
//! and 16 high (the top 48 rows), most significant bit on the left, white (Y = 235) for 1
//! and black (Y = 16) for 0:
//! row 0 the frame number, row 1 the capture time in milliseconds since the Unix epoch
//! (low 32 bits), row 2 the bitwise NOT of the frame number. [`read_stamp`] averages the
//! centre of each block, so it survives H.264 at ordinary bit rates, and returns `None`
//! when row 2 does not check: a receiver counts only verified pictures. The chroma under
//! the stamp is neutral so it shows as black and white.
//!
//! # Stopping
//! A [`CameraSwitch`] stops the camera mid-call: while stopped, `next_picture` waits up to
//! the stall timeout (500 ms by default) for it to be switched on again and otherwise
//! returns [`HwError::timeout`], which the camera thread counts as a stall and retries —
//! exactly what a stalled V4L2 device does, so the pipeline needs no special case and
//! pictures flow again as soon as the switch is turned back on.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Camera, CameraConfig};
use crate::edges::devices::feed::Pacer;
use crate::edges::devices::{HwError, unix_micros_now};
use crate::media::{Picture, UnixMicros};

/// Bits per stamp row.
const STAMP_BITS: usize = 32;
/// Height of one stamp row in pixels: a whole H.264 macroblock row.
const STAMP_ROW: usize = 16;
/// Rows of luma the stamp covers.
pub const STAMP_HEIGHT: u32 = 3 * STAMP_ROW as u32;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Default time `next_picture` waits while switched off before reporting a stall.
pub const STALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Turns a [`SyntheticCamera`] off and on from another thread (a test's "the camera stops
/// mid-call and comes back"). Cloneable; starts on.
#[derive(Clone)]
pub struct CameraSwitch {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Default for CameraSwitch {
    fn default() -> Self {
        Self { inner: Arc::new((Mutex::new(true), Condvar::new())) }
    }
}

impl CameraSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_running(&self, running: bool) {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner) = running;
        self.inner.1.notify_all();
    }

    pub fn is_running(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` for the switch to be on; true if it is.
    fn wait_running(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut on = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        while !*on {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            on = self
                .inner
                .1
                .wait_timeout(on, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        true
    }
}

/// A camera stand-in: a moving test pattern at the configured size and rate.
pub struct SyntheticCamera {
    width: u32,
    height: u32,
    fps: u32,
    frame_no: u32,
    pacer: Pacer,
    switch: CameraSwitch,
    stall_timeout: Duration,
    /// Set while switched off, so that the schedule restarts on resumption.
    paused: bool,
}

impl SyntheticCamera {
    /// Width and height must be even, at least 64×48 (room for the stamp); fps 1–240.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, HwError> {
        if width < 64
            || height < STAMP_HEIGHT
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
            || width > 8192
            || height > 8192
        {
            return Err(HwError::Misconfigured(format!(
                "synthetic camera: {width}x{height} must be even, at least 64x{STAMP_HEIGHT} and at most 8192x8192"
            )));
        }
        if !(1..=240).contains(&fps) {
            return Err(HwError::Misconfigured(format!("synthetic camera: fps {fps} is not in 1..=240")));
        }
        Ok(Self {
            width,
            height,
            fps,
            frame_no: 0,
            pacer: Pacer::new(Duration::from_secs(1) / fps),
            switch: CameraSwitch::new(),
            stall_timeout: STALL_TIMEOUT,
            paused: false,
        })
    }

    /// Size and rate from the configuration; the device and format are ignored.
    pub fn from_config(config: &CameraConfig) -> Result<Self, HwError> {
        Self::new(config.width, config.height, config.fps)
    }

    /// How long `next_picture` waits while switched off before reporting a stall.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Obeys `switch` (shared with a test or the demo) instead of its own.
    pub fn with_switch(mut self, switch: CameraSwitch) -> Self {
        self.switch = switch;
        self
    }

    /// The switch that stops and restarts this camera.
    pub fn switch(&self) -> CameraSwitch {
        self.switch.clone()
    }
}

impl Camera for SyntheticCamera {
    fn next_picture(&mut self) -> Result<Picture, HwError> {
        if !self.switch.wait_running(self.stall_timeout) {
            self.paused = true;
            return Err(HwError::timeout("synthetic camera switched off"));
        }
        if std::mem::take(&mut self.paused) {
            self.pacer.reset();
        }
        self.pacer.wait();
        let captured_us = unix_micros_now();
        let mut pic = test_pattern(self.width, self.height, self.frame_no, captured_us);
        stamp(&mut pic, self.frame_no, (captured_us / 1000) as u32);
        self.frame_no = self.frame_no.wrapping_add(1);
        Ok(pic)
    }

    fn describe(&self) -> String {
        format!("synthetic camera {}x{} at {} fps", self.width, self.height, self.fps)
    }
}

/// BT.601 limited-range YUV of an 8-bit RGB colour.
fn yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    (y.round() as u8, u.round() as u8, v.round() as u8)
}

/// Frame `frame_no` of the test pattern, without the stamp: 75 % colour bars sliding right
/// by 4 pixels a frame, expanding grey rings over the bottom quarter, and a black square
/// bouncing around below the stamp area.
pub fn test_pattern(width: u32, height: u32, frame_no: u32, captured_us: UnixMicros) -> Picture {
    let mut pic = Picture::black(width, height, captured_us);
    let (w, h) = (width as usize, height as usize);
    if w < 2 || h < 2 {
        return pic;
    }
    const BARS: [(u8, u8, u8); 7] =
        [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)];
    let colours = BARS.map(|(r, g, b)| yuv(r, g, b));
    let shift = (frame_no as usize).wrapping_mul(4) % w;
    let bar = |x: usize| colours[((x + w - shift) % w) * BARS.len() / w];
    let (cw, ch) = (w / 2, h / 2);
    let (y_plane, chroma) = pic.data.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    let y_row: Vec<u8> = (0..w).map(|x| bar(x).0).collect();
    let u_row: Vec<u8> = (0..cw).map(|x| bar(2 * x).1).collect();
    let v_row: Vec<u8> = (0..cw).map(|x| bar(2 * x).2).collect();
    for row in y_plane.chunks_exact_mut(w) {
        row.copy_from_slice(&y_row);
    }
    for (u, v) in u_plane.chunks_exact_mut(cw).zip(v_plane.chunks_exact_mut(cw)) {
        u.copy_from_slice(&u_row);
        v.copy_from_slice(&v_row);
    }
    // The bottom quarter: expanding rings (a zone plate whose phase moves every frame). No
    // motion vector predicts them, so the encoder spends bits as on a real scene.
    let sine: [u8; 256] =
        std::array::from_fn(|i| (126.0 + 90.0 * (std::f64::consts::TAU * i as f64 / 256.0).sin()) as u8);
    let phase = (frame_no as usize).wrapping_mul(6);
    for y in h - h / 4..h {
        let row = &mut y_plane[y * w..(y + 1) * w];
        for (x, p) in row.iter_mut().enumerate() {
            *p = sine[((x * x + y * y) / 48 + phase) & 255];
        }
    }
    for y in (h - h / 4) / 2..ch {
        u_plane[y * cw..(y + 1) * cw].fill(128);
        v_plane[y * cw..(y + 1) * cw].fill(128);
    }
    // The square: a sixth of the height, bouncing at 3 px/frame across and 2 down.
    let side = (h / 6).max(2) & !1;
    let top = (STAMP_HEIGHT as usize).min(h - side);
    let bounce = |t: usize, span: usize| if span == 0 { 0 } else { (t % (2 * span)).abs_diff(span) };
    let n = frame_no as usize;
    let x0 = bounce(n * 3, w - side) & !1;
    let y0 = (top + bounce(n * 2, h - side - top)) & !1;
    for y in y0..y0 + side {
        y_plane[y * w + x0..y * w + x0 + side].fill(BLACK);
    }
    for y in y0 / 2..(y0 + side) / 2 {
        u_plane[y * cw + x0 / 2..y * cw + (x0 + side) / 2].fill(128);
        v_plane[y * cw + x0 / 2..y * cw + (x0 + side) / 2].fill(128);
    }
    pic
}

/// The stamp's block width, or `None` when the picture is too small or malformed.
fn stamp_block_width(pic: &Picture) -> Option<usize> {
    let block = pic.width as usize / STAMP_BITS;
    let ok = block >= 2
        && pic.height >= STAMP_HEIGHT
        && pic.width.is_multiple_of(2)
        && pic.data.len() >= Picture::i420_len(pic.width, pic.height);
    ok.then_some(block)
}

/// Writes the stamp (see the module docs) into the top 48 rows; does nothing to a picture
/// narrower than 64 or lower than 48 pixels.
pub fn stamp(pic: &mut Picture, frame_no: u32, ms: u32) {
    let Some(block) = stamp_block_width(pic) else { return };
    let w = pic.width as usize;
    for (row, value) in [frame_no, ms, !frame_no].into_iter().enumerate() {
        for bit in 0..STAMP_BITS {
            let level = if (value >> (STAMP_BITS - 1 - bit)) & 1 == 1 { WHITE } else { BLACK };
            for y in row * STAMP_ROW..(row + 1) * STAMP_ROW {
                pic.data[y * w + bit * block..y * w + (bit + 1) * block].fill(level);
            }
        }
    }
    let (cw, ch) = (w / 2, pic.height as usize / 2);
    let luma = w * pic.height as usize;
    let span = STAMP_BITS * block / 2;
    for y in 0..STAMP_HEIGHT as usize / 2 {
        pic.data[luma + y * cw..luma + y * cw + span].fill(128);
        pic.data[luma + cw * ch + y * cw..luma + cw * ch + y * cw + span].fill(128);
    }
}

/// Reads a stamp written by [`stamp`]: `(frame_no, ms)`, or `None` when the picture is too
/// small or the check row does not match.
pub fn read_stamp(pic: &Picture) -> Option<(u32, u32)> {
    let block = stamp_block_width(pic)?;
    let w = pic.width as usize;
    // The centre half of each block, away from edges that compression smears.
    let (x_margin, y_margin) = (block / 4, STAMP_ROW / 4);
    let mut rows = [0u32; 3];
    for (row, value) in rows.iter_mut().enumerate() {
        for bit in 0..STAMP_BITS {
            let x0 = bit * block + x_margin;
            let x1 = (bit + 1) * block - x_margin;
            let (y0, y1) = (row * STAMP_ROW + y_margin, (row + 1) * STAMP_ROW - y_margin);
            let sum: u32 =
                (y0..y1).flat_map(|y| &pic.data[y * w + x0..y * w + x1]).map(|&p| u32::from(p)).sum();
            let mean = sum / ((x1 - x0) * (y1 - y0)) as u32;
            *value = (*value << 1) | u32::from(mean > u32::from(BLACK + WHITE) / 2);
        }
    }
    (rows[2] == !rows[0]).then_some((rows[0], rows[1]))
}

#[cfg(test)]
mod tests {
    use openh264::OpenH264API;
    use openh264::decoder::Decoder;
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, RateControlMode};
    use openh264::formats::{YUVBuffer, YUVSource};

    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut pic = test_pattern(640, 480, 17, 0);
        assert_eq!(read_stamp(&pic), None, "an unstamped picture does not verify");
        for (frame_no, ms) in [(0, 0), (1, u32::MAX), (0xDEAD_BEEF, 0x1234_5678), (u32::MAX, 7)] {
            stamp(&mut pic, frame_no, ms);
            assert_eq!(read_stamp(&pic), Some((frame_no, ms)));
        }
        // Odd widths leave a few columns unstamped but still read.
        let mut pic = test_pattern(650, 64, 3, 0);
        stamp(&mut pic, 42, 99);
        assert_eq!(read_stamp(&pic), Some((42, 99)));
    }

    #[test]
    fn damaged_stamp_is_rejected() {
        let mut pic = test_pattern(320, 240, 0, 0);
        stamp(&mut pic, 4, 6);
        // Flip the frame number's least significant block (a 0) to white.
        let block = 320 / 32;
        for y in 0..16 {
            pic.data[y * 320 + 31 * block..y * 320 + 32 * block].fill(WHITE);
        }
        assert_eq!(read_stamp(&pic), None);
        assert_eq!(read_stamp(&Picture::black(32, 16, 0)), None, "too small to carry a stamp");
    }

    #[test]
    fn pattern_moves() {
        let a = test_pattern(320, 240, 10, 0);
        let b = test_pattern(320, 240, 11, 0);
        assert_eq!(a.data.len(), Picture::i420_len(320, 240));
        let changed = a.y().iter().zip(b.y()).filter(|(p, q)| p != q).count();
        assert!(changed > 320 * 4, "only {changed} luma samples changed");
    }

    /// Copies a decoded picture into a tightly packed I420 `Picture`.
    fn to_picture(yuv: &impl YUVSource) -> Picture {
        let (w, h) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        let mut data = Vec::with_capacity(Picture::i420_len(w as u32, h as u32));
        for y in 0..h {
            data.extend_from_slice(&yuv.y()[y * ys..y * ys + w]);
        }
        for y in 0..h / 2 {
            data.extend_from_slice(&yuv.u()[y * us..y * us + w / 2]);
        }
        for y in 0..h / 2 {
            data.extend_from_slice(&yuv.v()[y * vs..y * vs + w / 2]);
        }
        Picture { width: w as u32, height: h as u32, data, captured_us: 0 }
    }

    #[test]
    fn stamp_survives_h264_at_800_kbit() {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(800_000))
            .max_frame_rate(FrameRate::from_hz(30.0))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        let mut decoder = Decoder::new().unwrap();
        let start_ms = 1_700_000_000_123u64 as u32;
        let (mut verified, mut bytes) = (Vec::new(), 0);
        for n in 0..30u32 {
            let ms = start_ms.wrapping_add(n * 33);
            let mut pic = test_pattern(640, 480, n, 0);
            stamp(&mut pic, n, ms);
            let bitstream = encoder.encode(&YUVBuffer::from_vec(pic.data, 640, 480)).unwrap().to_vec();
            bytes += bitstream.len();
            if let Some(decoded) = decoder.decode(&bitstream).unwrap() {
                let got = read_stamp(&to_picture(&decoded));
                assert_eq!(got, Some((n, ms)), "frame {n}");
                verified.push(n);
            }
        }
        assert!(verified.len() >= 28, "only {} of 30 pictures decoded", verified.len());
        // The pattern is busy enough that the encoder really works at the target rate.
        assert!(bytes * 8 > 500_000, "one second of video took only {} kbit", bytes * 8 / 1000);
    }

    #[test]
    fn camera_stamps_increasing_frames_at_its_rate() {
        let mut cam = SyntheticCamera::new(128, 96, 100).unwrap();
        let t0 = Instant::now();
        let pics: Vec<Picture> = (0..5).map(|_| cam.next_picture().unwrap()).collect();
        assert!(t0.elapsed() >= Duration::from_millis(38), "paced at 100 fps: {:?}", t0.elapsed());
        for (n, pic) in pics.iter().enumerate() {
            let (frame_no, ms) = read_stamp(pic).unwrap();
            assert_eq!(frame_no, n as u32);
            assert_eq!(ms, (pic.captured_us / 1000) as u32);
        }
        assert!(cam.describe().contains("128x96"));
    }

    #[test]
    fn switched_off_camera_stalls_and_comes_back() {
        let mut cam =
            SyntheticCamera::new(64, 48, 200).unwrap().with_stall_timeout(Duration::from_millis(20));
        let switch = cam.switch();
        assert_eq!(read_stamp(&cam.next_picture().unwrap()).map(|s| s.0), Some(0));
        switch.set_running(false);
        let err = cam.next_picture().unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let resume = switch.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            resume.set_running(true);
        });
        // Either the wait sees the switch come back, or one more stall first.
        let pic = cam.next_picture().or_else(|_| cam.next_picture()).unwrap();
        assert_eq!(read_stamp(&pic).map(|s| s.0), Some(1));
        t.join().unwrap();
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(SyntheticCamera::new(63, 48, 30).is_err());
        assert!(SyntheticCamera::new(64, 40, 30).is_err());
        assert!(SyntheticCamera::new(640, 480, 0).is_err());
    }
}
