//! The screen: shows pictures (I420), scaled to the display with the aspect ratio kept, or
//! frames composed at the display's native size (the kiosk's screen, `crate::edges::display`).
//!
//! Backends: [`drm::DrmScreen`] (KMS, double-buffered with page flips: no tearing),
//! [`fbdev::FbdevScreen`] (a 32 bpp framebuffer, the fallback), [`file::Y4mScreen`] (a Y4M
//! file, for tests and the demo) and [`NullScreen`]. [`spawn_screen`] runs one on a named
//! thread behind a drop-oldest queue: when the display is slow, the newest picture wins.

pub mod drm;
pub mod fbdev;
pub mod file;

use std::time::Duration;

use tracing::{debug, error, info, warn};

pub use self::drm::DrmScreen;
pub use self::fbdev::FbdevScreen;
pub use self::file::{Y4mScreen, read_y4m};
use crate::edges::devices::feed::{self, DeviceStats, QueueSender};
use crate::edges::devices::{HwError, unix_micros_now};
use crate::media::Picture;
use crate::ui::Frame;

/// Something that shows pictures. Real: DRM/KMS or fbdev. Others: a Y4M file, nothing.
pub trait Screen: Send + 'static {
    /// Shows `pic` (scaled to fit, letterboxed); blocks at most until the display can take
    /// the next one. Called only on the screen's own thread.
    fn show(&mut self, pic: &Picture) -> Result<(), HwError>;

    /// Shows a composed frame, meant to be of [`Screen::native_size`] (a frame of another size
    /// is shown from its top-left corner, cut or on black). Blocks at most until the display
    /// can take the next one. Screens without a native size (a file) take any size; by
    /// default the frame is converted to I420 and shown as a picture.
    fn show_frame(&mut self, frame: &Frame) -> Result<(), HwError> {
        self.show(&frame.to_i420(unix_micros_now()))
    }

    /// The display's mode in pixels (width, height); None when any size will do.
    fn native_size(&self) -> Option<(u32, u32)> {
        None
    }

    /// One line for logs and `kioskd doctor`.
    fn describe(&self) -> String;
}

/// A screen that shows nothing.
#[derive(Debug, Default)]
pub struct NullScreen {
    shown: u64,
}

impl NullScreen {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pictures "shown" so far.
    pub fn shown(&self) -> u64 {
        self.shown
    }
}

impl Screen for NullScreen {
    fn show(&mut self, _pic: &Picture) -> Result<(), HwError> {
        self.shown += 1;
        Ok(())
    }

    fn show_frame(&mut self, _frame: &Frame) -> Result<(), HwError> {
        self.shown += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        "no screen".into()
    }
}

/// The producer's end of the screen thread.
pub type ScreenFeed = QueueSender<Picture>;

/// Starts the screen thread ("screen"): shows the pictures pushed into the returned feed, at
/// most `queue` waiting (oldest dropped when the display is slow; 1 or 2 is right). Ends
/// when the feed is dropped or the screen fails (the error is kept in the stats); timeouts
/// (a page flip that never completed) count as stalls.
pub fn spawn_screen(mut screen: Box<dyn Screen>, queue: usize) -> std::io::Result<(ScreenFeed, DeviceStats)> {
    /// How often the thread looks up from an empty queue; only bounds shutdown latency.
    const IDLE_WAKE: Duration = Duration::from_millis(200);
    let stats = DeviceStats::default();
    let (tx, rx) = feed::drop_oldest::<Picture>(queue, stats.clone());
    let thread_stats = stats.clone();
    std::thread::Builder::new().name("screen".into()).spawn(move || {
        let _ended = thread_stats.end_guard();
        let what = screen.describe();
        info!(screen = %what, "screen started");
        loop {
            let pic = match rx.pop_blocking(IDLE_WAKE) {
                Ok(Some(pic)) => pic,
                Ok(None) => continue,
                Err(feed::Closed) => break,
            };
            match screen.show(&pic) {
                Ok(()) => thread_stats.record_delivered(),
                Err(e) if e.is_timeout() => {
                    if thread_stats.record_stall() {
                        warn!(screen = %what, error = %e, "screen stalled");
                    }
                }
                Err(e) => {
                    error!(screen = %what, error = %e, "screen failed");
                    thread_stats.record_error(e.to_string());
                    return;
                }
            }
        }
        debug!(screen = %what, "screen feed closed; thread ends");
    })?;
    Ok((tx, stats))
}

/// Where a picture lands inside the display: the largest rectangle with the picture's
/// aspect ratio, centred (black bars on the other sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letterbox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Letterbox {
    pub fn fit(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Option<Self> {
        let (sw, sh, dw, dh) = (u64::from(src_w), u64::from(src_h), u64::from(dst_w), u64::from(dst_h));
        if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
            return None;
        }
        // A picture narrower than the display (sw/sh <= dw/dh) fills its height, else its width.
        let (width, height) =
            if sw * dh <= dw * sh { ((sw * dh / sh).max(1), dh) } else { (dw, (sh * dw / sw).max(1)) };
        Some(Self {
            x: ((dw - width) / 2) as usize,
            y: ((dh - height) / 2) as usize,
            width: width as usize,
            height: height as usize,
        })
    }
}

/// Byte order of a 32-bit pixel in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PixelOrder {
    /// XRGB8888 little-endian: bytes B, G, R, X (DRM's XR24, most framebuffers).
    Xrgb,
    /// XBGR8888 little-endian: bytes R, G, B, X.
    Xbgr,
}

/// The bytes of one 32 bpp row `dst_w` wide and the distance between rows (at least a row);
/// `None` for an image of no width.
fn row_layout(dst_w: u32, stride: usize) -> Option<(usize, usize)> {
    let row_bytes = dst_w as usize * 4;
    (row_bytes > 0).then_some((row_bytes, stride.max(row_bytes)))
}

/// Copies `frame` into a 32 bpp image `dst` of `dst_w`×`dst_h` whose lines are `stride`
/// bytes apart, in `order`. A frame of another size is copied from the top-left corner; what
/// it does not cover is made black. Never panics.
pub(crate) fn copy_frame_32bpp(
    frame: &Frame,
    dst: &mut [u8],
    dst_w: u32,
    dst_h: u32,
    stride: usize,
    order: PixelOrder,
) {
    let Some((row_bytes, stride)) = row_layout(dst_w, stride) else { return };
    let same_size = (frame.width, frame.height) == (dst_w, dst_h);
    let cols = (frame.width.min(dst_w)) as usize;
    let mut src_rows = frame.rows();
    for row in dst.chunks_mut(stride).take(dst_h as usize) {
        let Some(out) = row.get_mut(..row_bytes) else { break };
        if !same_size {
            out.fill(0);
        }
        let Some(src) = src_rows.next() else { continue };
        for (px, &p) in out.chunks_exact_mut(4).zip(&src[..cols]) {
            let bytes = match order {
                PixelOrder::Xrgb => p.to_le_bytes(),
                PixelOrder::Xbgr => [(p >> 16) as u8, (p >> 8) as u8, p as u8, 0],
            };
            px.copy_from_slice(&bytes);
        }
    }
}

/// BT.601 limited-range YUV to 8-bit RGB (integer approximation of the standard matrix).
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let c = 298 * (i32::from(y) - 16);
    let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    (clamp(c + 409 * e), clamp(c - 100 * d - 208 * e), clamp(c + 516 * d))
}

/// Converts `pic` (I420, BT.601 limited range) to XRGB8888 (bytes B, G, R, 0) in `dst`, a
/// `dst_w`×`dst_h` image whose lines are `stride` bytes apart, scaled with the aspect ratio
/// kept (nearest neighbour) and centred on black. Rows that do not fit in `dst` are left
/// out; a malformed picture (odd size, short data) shows as black. Never panics.
pub fn i420_to_xrgb_scaled(pic: &Picture, dst: &mut [u8], dst_w: u32, dst_h: u32, stride: usize) {
    i420_to_32bpp_scaled(pic, dst, dst_w, dst_h, stride, PixelOrder::Xrgb);
}

pub(crate) fn i420_to_32bpp_scaled(
    pic: &Picture,
    dst: &mut [u8],
    dst_w: u32,
    dst_h: u32,
    stride: usize,
    order: PixelOrder,
) {
    let Some((row_bytes, stride)) = row_layout(dst_w, stride) else { return };
    // Only whole rows that fit.
    let fits = dst.len() / stride + usize::from(dst.len() % stride >= row_bytes);
    let dst_h = (dst_h as usize).min(fits);
    for row in dst.chunks_mut(stride).take(dst_h) {
        row[..row_bytes].fill(0);
    }
    let (sw, sh) = (pic.width as usize, pic.height as usize);
    let well_formed = sw.is_multiple_of(2)
        && sh.is_multiple_of(2)
        && pic.data.len() >= Picture::i420_len(pic.width, pic.height);
    let Some(rect) = Letterbox::fit(pic.width, pic.height, dst_w, dst_h as u32).filter(|_| well_formed)
    else {
        return;
    };
    let (y_plane, u_plane, v_plane) = pic.planes();
    let cw = sw / 2;
    // Nearest source column of each output column (sampling at pixel centres).
    let columns: Vec<usize> =
        (0..rect.width).map(|x| ((2 * x + 1) * sw / (2 * rect.width)).min(sw - 1)).collect();
    for oy in 0..rect.height {
        let sy = ((2 * oy + 1) * sh / (2 * rect.height)).min(sh - 1);
        let (y_row, c_row) = (&y_plane[sy * sw..(sy + 1) * sw], sy / 2 * cw);
        let start = (rect.y + oy) * stride + rect.x * 4;
        let Some(out) = dst.get_mut(start..start + rect.width * 4) else { break };
        for (px, &sx) in out.chunks_exact_mut(4).zip(&columns) {
            let (r, g, b) = yuv_to_rgb(y_row[sx], u_plane[c_row + sx / 2], v_plane[c_row + sx / 2]);
            let bytes = match order {
                PixelOrder::Xrgb => [b, g, r, 0],
                PixelOrder::Xbgr => [r, g, b, 0],
            };
            px.copy_from_slice(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture of one flat colour.
    fn flat(w: u32, h: u32, y: u8, u: u8, v: u8) -> Picture {
        let mut pic = Picture::black(w, h, 0);
        let luma = (w * h) as usize;
        pic.data[..luma].fill(y);
        pic.data[luma..luma + luma / 4].fill(u);
        pic.data[luma + luma / 4..].fill(v);
        pic
    }

    fn pixel(dst: &[u8], stride: usize, x: usize, y: usize) -> [u8; 4] {
        dst[y * stride + x * 4..y * stride + x * 4 + 4].try_into().unwrap()
    }

    #[test]
    fn bt601_limited_range_colours() {
        assert_eq!(yuv_to_rgb(16, 128, 128), (0, 0, 0));
        assert_eq!(yuv_to_rgb(235, 128, 128), (255, 255, 255));
        // 75 % bars as the synthetic camera makes them (BT.601 limited).
        let close = |(r, g, b): (u8, u8, u8), want: (u8, u8, u8)| {
            r.abs_diff(want.0) <= 2 && g.abs_diff(want.1) <= 2 && b.abs_diff(want.2) <= 2
        };
        assert!(close(yuv_to_rgb(65, 100, 212), (191, 0, 0)), "{:?}", yuv_to_rgb(65, 100, 212));
        assert!(close(yuv_to_rgb(112, 72, 58), (0, 191, 0)), "{:?}", yuv_to_rgb(112, 72, 58));
        assert!(close(yuv_to_rgb(35, 212, 114), (0, 0, 191)), "{:?}", yuv_to_rgb(35, 212, 114));
    }

    #[test]
    fn letterbox_keeps_aspect() {
        assert_eq!(
            Letterbox::fit(640, 480, 1920, 1080),
            Some(Letterbox { x: 240, y: 0, width: 1440, height: 1080 })
        );
        assert_eq!(
            Letterbox::fit(1920, 1080, 640, 480),
            Some(Letterbox { x: 0, y: 60, width: 640, height: 360 })
        );
        assert_eq!(
            Letterbox::fit(640, 480, 320, 240),
            Some(Letterbox { x: 0, y: 0, width: 320, height: 240 })
        );
        assert_eq!(Letterbox::fit(0, 480, 320, 240), None);
    }

    #[test]
    fn scaled_up_picture_is_pillarboxed_on_black() {
        // 4x2 source, left half white, right half limited-range red, onto 16x4 (stride 80).
        let mut pic = flat(4, 2, 235, 128, 128);
        pic.data[2] = 65;
        pic.data[3] = 65;
        pic.data[6] = 65;
        pic.data[7] = 65;
        pic.data[8 + 1] = 100; // U of the right chroma column
        pic.data[10 + 1] = 212; // V
        let stride = 80;
        let mut dst = vec![0xAA; stride * 4];
        i420_to_xrgb_scaled(&pic, &mut dst, 16, 4, stride);
        // 4x2 into 16x4 keeps 2:1: 8x4 centred at x = 4.
        for y in 0..4 {
            for x in 0..16 {
                let want = match x {
                    4..=7 => [255, 255, 255, 0],
                    8..=11 => {
                        let (r, g, b) = yuv_to_rgb(65, 100, 212);
                        [b, g, r, 0]
                    }
                    _ => [0, 0, 0, 0],
                };
                assert_eq!(pixel(&dst, stride, x, y), want, "at {x},{y}");
            }
            assert!(dst[y * stride + 64..(y + 1) * stride].iter().all(|&b| b == 0xAA), "padding untouched");
        }
    }

    #[test]
    fn scaled_down_picture_is_letterboxed() {
        let pic = flat(64, 16, 235, 128, 128);
        let mut dst = vec![0x55; 32 * 4 * 32];
        i420_to_xrgb_scaled(&pic, &mut dst, 32, 32, 32 * 4);
        // 64x16 into 32x32: 32x8 centred at y = 12.
        assert_eq!(pixel(&dst, 128, 0, 11), [0, 0, 0, 0]);
        assert_eq!(pixel(&dst, 128, 0, 12), [255, 255, 255, 0]);
        assert_eq!(pixel(&dst, 128, 31, 19), [255, 255, 255, 0]);
        assert_eq!(pixel(&dst, 128, 31, 20), [0, 0, 0, 0]);
    }

    #[test]
    fn xbgr_order_swaps_red_and_blue() {
        let pic = flat(2, 2, 65, 100, 212);
        let mut dst = vec![0; 16];
        i420_to_32bpp_scaled(&pic, &mut dst, 2, 2, 8, PixelOrder::Xbgr);
        let (r, g, b) = yuv_to_rgb(65, 100, 212);
        assert_eq!(pixel(&dst, 8, 1, 1), [r, g, b, 0]);
    }

    #[test]
    fn bad_inputs_never_panic() {
        let mut dst = vec![0x11; 100];
        i420_to_xrgb_scaled(&Picture::black(640, 480, 0), &mut dst, 1920, 1080, 7680);
        assert!(dst.iter().all(|&b| b == 0x11), "no whole row fits");
        let broken = Picture { width: 640, height: 480, data: vec![0; 10], captured_us: 0 };
        let mut dst = vec![0x11; 64];
        i420_to_xrgb_scaled(&broken, &mut dst, 4, 4, 16);
        assert!(dst.iter().all(|&b| b == 0), "malformed picture shows black");
        i420_to_xrgb_scaled(&Picture::black(2, 2, 0), &mut [], 0, 0, 0);
    }

    #[test]
    fn frames_are_copied_in_the_display_byte_order() {
        let mut frame = Frame::new(3, 2);
        frame.pixels.copy_from_slice(&[0x112233, 0x445566, 0x778899, 0xAABBCC, 0xDDEEFF, 0x010203]);
        let mut dst = vec![0x99; 16 * 2];
        copy_frame_32bpp(&frame, &mut dst, 3, 2, 16, PixelOrder::Xrgb);
        assert_eq!(pixel(&dst, 16, 0, 0), [0x33, 0x22, 0x11, 0]);
        assert_eq!(pixel(&dst, 16, 2, 1), [0x03, 0x02, 0x01, 0]);
        assert_eq!(dst[12..16], [0x99; 4], "padding untouched");
        copy_frame_32bpp(&frame, &mut dst, 3, 2, 16, PixelOrder::Xbgr);
        assert_eq!(pixel(&dst, 16, 0, 0), [0x11, 0x22, 0x33, 0]);
        // A smaller display shows the top-left corner; a larger one black around.
        let mut small = vec![0x99; 4];
        copy_frame_32bpp(&frame, &mut small, 1, 1, 4, PixelOrder::Xrgb);
        assert_eq!(small, [0x33, 0x22, 0x11, 0]);
        let mut large = vec![0x99; 4 * 4 * 4];
        copy_frame_32bpp(&frame, &mut large, 4, 4, 16, PixelOrder::Xrgb);
        assert_eq!(pixel(&large, 16, 3, 0), [0, 0, 0, 0]);
        assert_eq!(pixel(&large, 16, 0, 3), [0, 0, 0, 0]);
        copy_frame_32bpp(&frame, &mut [], 0, 0, 0, PixelOrder::Xrgb);
        copy_frame_32bpp(&frame, &mut [0; 7], 3, 2, 16, PixelOrder::Xrgb);
    }

    #[test]
    fn screen_thread_shows_until_the_feed_closes() {
        let (feed, stats) = spawn_screen(Box::new(NullScreen::new()), 4).unwrap();
        for _ in 0..3 {
            feed.push(Picture::black(2, 2, 0)).unwrap();
        }
        drop(feed);
        while !stats.has_ended() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(stats.delivered() + stats.dropped(), 3);
    }
}
