//! A V4L2 camera through the `v4l` crate: memory-mapped streaming of YUYV or MJPEG,
//! converted to I420 on the camera thread.
//!
//! YUYV (packed 4:2:2) keeps every luma sample and averages the chroma of each row pair.
//! MJPEG is decoded with zune-jpeg (any chroma subsampling: 4:2:2 from most USB cameras,
//! 4:2:0, 4:4:4, greyscale), in strict mode so that a truncated or damaged frame is an error;
//! such a frame is skipped and counted ([`Camera::corrupt_frames`]), never a panic. JPEG is
//! full range (JFIF), so it is scaled to the limited range the rest of the pipeline uses.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, warn};
use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::{Camera, CameraConfig, PixelFormat};
use crate::edges::devices::{HwError, unix_micros_now};
use crate::media::{Picture, UnixMicros};

/// Buffers the driver cycles through: one being filled, one being converted, spares.
const BUFFERS: u32 = 4;
/// A dequeue that waits longer than this is a stall ([`HwError::timeout`]), not an error.
const DEQUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// After this many unusable frames in a row the camera is reported broken (≈ 3 s at 30 fps).
const MAX_CORRUPT_IN_A_ROW: u32 = 100;
/// Largest picture accepted from a JPEG header: bounds the allocation a corrupt header asks.
const MAX_JPEG_SIDE: usize = 4096;

/// Why a captured frame could not be turned into a picture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("corrupt JPEG: {0}")]
    Jpeg(String),
    #[error("unsupported JPEG: {0}")]
    Unsupported(String),
    #[error("frame of {got} bytes is shorter than the {need} bytes of {width}x{height} YUYV")]
    Short { got: usize, need: usize, width: u32, height: u32 },
}

/// The pixel format agreed with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Yuyv,
    Mjpeg,
}

const YUYV: FourCC = FourCC { repr: *b"YUYV" };
const MJPG: FourCC = FourCC { repr: *b"MJPG" };
const JPEG: FourCC = FourCC { repr: *b"JPEG" };

/// An open, streaming V4L2 capture device.
pub struct V4l2Camera {
    /// Dropped before `device` (field order); `None` only inside `drop`.
    stream: Option<Stream<'static>>,
    _device: Device,
    path: PathBuf,
    card: String,
    wire: Wire,
    width: u32,
    height: u32,
    /// Bytes per YUYV line, as the driver reports it (may exceed 2 × width).
    stride: usize,
    /// Frames per second the driver agreed to, if it said.
    fps: Option<f64>,
    corrupt: u64,
    corrupt_in_a_row: u32,
}

fn open_error(path: &Path, step: &str, e: io::Error) -> HwError {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => " (no such device: is the camera plugged in?)",
        io::ErrorKind::ResourceBusy => " (busy: another program is using the camera)",
        io::ErrorKind::PermissionDenied => " (permission denied: is the user in the video group?)",
        _ => "",
    };
    HwError::Open { what: "camera", path: path.to_path_buf(), source: format!("{step}: {e}{hint}").into() }
}

fn io_error(path: &Path, what: &'static str, e: io::Error) -> HwError {
    let kind = e.kind();
    HwError::Io { what, source: Box::new(io::Error::new(kind, format!("{}: {e}", path.display()))) }
}

impl V4l2Camera {
    /// Opens `config.device`, negotiates format, size and rate, and maps the buffers.
    /// Streaming starts with the first `next_picture`.
    pub fn open(config: &CameraConfig) -> Result<Self, HwError> {
        // The v4l crate panics on a few odd driver answers (a card name that is not UTF-8,
        // an unknown colour space): contain them as an open error.
        catch_unwind(AssertUnwindSafe(|| Self::open_unguarded(config))).unwrap_or_else(|_| {
            Err(HwError::Open {
                what: "camera",
                path: config.device.clone(),
                source: "the v4l crate could not make sense of the driver's answers".into(),
            })
        })
    }

    fn open_unguarded(config: &CameraConfig) -> Result<Self, HwError> {
        let path = config.device.as_path();
        let device = Device::with_path(path).map_err(|e| open_error(path, "open", e))?;
        let caps = device.query_caps().map_err(|e| open_error(path, "query capabilities", e))?;
        if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE | CapFlags::STREAMING) {
            return Err(HwError::Misconfigured(format!(
                "{} ({}) is not a streaming video capture device",
                path.display(),
                caps.card
            )));
        }
        let offered: Vec<FourCC> = device
            .enum_formats()
            .map_err(|e| open_error(path, "list formats", e))?
            .into_iter()
            .map(|d| d.fourcc)
            .collect();
        let mjpeg = [MJPG, JPEG].into_iter().find(|f| offered.contains(f));
        let (fourcc, wire) = match (config.format, offered.contains(&YUYV), mjpeg) {
            (PixelFormat::Yuyv | PixelFormat::Auto, true, _) => (YUYV, Wire::Yuyv),
            (PixelFormat::Mjpeg | PixelFormat::Auto, _, Some(f)) => (f, Wire::Mjpeg),
            (wanted, _, _) => {
                let list: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
                return Err(HwError::Misconfigured(format!(
                    "camera {} ({}) offers {} but not {wanted:?}",
                    path.display(),
                    caps.card,
                    list.join(", ")
                )));
            }
        };
        let asked = Format::new(config.width, config.height, fourcc);
        let got = device.set_format(&asked).map_err(|e| open_error(path, "set format", e))?;
        if got.fourcc != fourcc {
            return Err(HwError::Misconfigured(format!(
                "camera {} refused {fourcc} and chose {}",
                path.display(),
                got.fourcc
            )));
        }
        if (got.width, got.height) != (config.width, config.height) {
            warn!(
                camera = %path.display(),
                asked = %format!("{}x{}", config.width, config.height),
                got = %format!("{}x{}", got.width, got.height),
                "camera chose another size"
            );
        }
        // Odd sizes lose their last column or row: I420 needs even sides.
        let (width, height) = (got.width & !1, got.height & !1);
        if width == 0 || height == 0 {
            return Err(HwError::Misconfigured(format!(
                "camera {} chose an unusable size {}x{}",
                path.display(),
                got.width,
                got.height
            )));
        }
        let stride = if got.stride >= got.width * 2 { got.stride as usize } else { got.width as usize * 2 };
        let fps = match device.set_params(&Parameters::with_fps(config.fps.max(1))) {
            Ok(p) if p.interval.numerator > 0 => {
                Some(f64::from(p.interval.denominator) / f64::from(p.interval.numerator))
            }
            Ok(_) => None,
            Err(e) => {
                warn!(camera = %path.display(), error = %e, "camera does not take a frame rate");
                None
            }
        };
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS)
            .map_err(|e| open_error(path, "map buffers", e))?;
        stream.set_timeout(DEQUEUE_TIMEOUT);
        debug!(camera = %path.display(), card = %caps.card, %fourcc, width, height, ?fps, "camera open");
        Ok(Self {
            stream: Some(stream),
            _device: device,
            path: path.to_path_buf(),
            card: caps.card,
            wire,
            width,
            height,
            stride,
            fps,
            corrupt: 0,
            corrupt_in_a_row: 0,
        })
    }
}

impl Camera for V4l2Camera {
    fn next_picture(&mut self) -> Result<Picture, HwError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(HwError::Closed("camera stream"));
        };
        loop {
            let (buf, meta) = match CaptureStream::next(stream) {
                Ok(frame) => frame,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(HwError::timeout("camera delivered no picture"));
                }
                Err(e) => return Err(io_error(&self.path, "capturing from the camera", e)),
            };
            let captured_us = unix_micros_now();
            let used = (meta.bytesused as usize).min(buf.len());
            let converted = if meta.flags.contains(BufferFlags::ERROR) {
                Err(FrameError::Jpeg("the driver flagged the buffer as damaged".into()))
            } else {
                match self.wire {
                    Wire::Yuyv => {
                        yuyv_to_i420(&buf[..used], self.width, self.height, self.stride, captured_us)
                    }
                    Wire::Mjpeg => mjpeg_to_i420(&buf[..used], captured_us),
                }
            };
            match converted {
                Ok(pic) => {
                    self.corrupt_in_a_row = 0;
                    return Ok(pic);
                }
                Err(e) => {
                    self.corrupt += 1;
                    self.corrupt_in_a_row += 1;
                    debug!(camera = %self.path.display(), error = %e, "frame skipped");
                    if self.corrupt_in_a_row >= MAX_CORRUPT_IN_A_ROW {
                        return Err(HwError::Io {
                            what: "camera delivers only unusable frames",
                            source: format!("{}: {e}", self.path.display()).into(),
                        });
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        let wire = match self.wire {
            Wire::Yuyv => "YUYV",
            Wire::Mjpeg => "MJPEG",
        };
        let fps = self.fps.map_or_else(|| "driver's rate".to_string(), |f| format!("{f:.1} fps"));
        format!("V4L2 {} ({}) {wire} {}x{} at {fps}", self.path.display(), self.card, self.width, self.height)
    }

    fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take()
            && let Err(e) = stream.stop()
            && e.raw_os_error() != Some(19)
        {
            // The stream's own drop would stop again and panic on this error: leak the
            // buffers instead (the kernel reclaims them with the process).
            warn!(camera = %self.path.display(), error = %e, "camera did not stop cleanly");
            std::mem::forget(stream);
        }
    }
}

/// Converts packed YUYV (Y0 U Y1 V) of `width`×`height` with lines `stride` bytes apart to
/// I420; `width` and `height` must be even. Chroma of each pair of rows is averaged.
pub fn yuyv_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    captured_us: UnixMicros,
) -> Result<Picture, FrameError> {
    let (w, h) = (width as usize & !1, height as usize & !1);
    let stride = stride.max(w * 2);
    let need = if h == 0 { 0 } else { stride * (h - 1) + w * 2 };
    if src.len() < need || w == 0 {
        return Err(FrameError::Short { got: src.len(), need, width, height });
    }
    let (cw, ch) = (w / 2, h / 2);
    let mut data = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, chroma) = data.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    for row in 0..ch {
        let top = &src[2 * row * stride..2 * row * stride + w * 2];
        let bottom = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + w * 2];
        for (line, pixels) in [(2 * row, top), (2 * row + 1, bottom)] {
            for (dst, pair) in
                y_plane[line * w..(line + 1) * w].chunks_exact_mut(2).zip(pixels.chunks_exact(4))
            {
                dst[0] = pair[0];
                dst[1] = pair[2];
            }
        }
        for (x, (a, b)) in top.chunks_exact(4).zip(bottom.chunks_exact(4)).enumerate() {
            u_plane[row * cw + x] = (u16::from(a[1]) + u16::from(b[1])).div_ceil(2) as u8;
            v_plane[row * cw + x] = (u16::from(a[3]) + u16::from(b[3])).div_ceil(2) as u8;
        }
    }
    Ok(Picture { width: w as u32, height: h as u32, data, captured_us })
}

/// Full-range (JFIF) luma to limited range.
fn luma_limited(y: u8) -> u8 {
    (16 + (u32::from(y) * 219 + 127) / 255) as u8
}

/// Full-range chroma to limited range, around 128.
fn chroma_limited(c: u16) -> u8 {
    // c is a sum of four full-range samples (0..=1020).
    (128 + ((i32::from(c) - 512) * 224 + if c >= 512 { 510 } else { -510 }) / 1020) as u8
}

/// Decodes one MJPEG frame to I420 (limited range). Odd sides lose their last column or
/// row. Never panics on bad input: every failure is a [`FrameError`].
pub fn mjpeg_to_i420(jpeg: &[u8], captured_us: UnixMicros) -> Result<Picture, FrameError> {
    // The decoder is fuzzed upstream, but a panic inside it must not take the camera down.
    catch_unwind(AssertUnwindSafe(|| decode_mjpeg(jpeg, captured_us)))
        .unwrap_or_else(|_| Err(FrameError::Jpeg("the decoder panicked".into())))
}

fn decode_mjpeg(jpeg: &[u8], captured_us: UnixMicros) -> Result<Picture, FrameError> {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_JPEG_SIDE)
        .set_max_height(MAX_JPEG_SIDE);
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    probe.decode_headers().map_err(|e| FrameError::Jpeg(e.to_string()))?;
    let out = match probe.input_colorspace() {
        Some(ColorSpace::YCbCr) => ColorSpace::YCbCr,
        Some(ColorSpace::Luma) => ColorSpace::Luma,
        other => return Err(FrameError::Unsupported(format!("colour space {other:?}"))),
    };
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options.jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(|e| FrameError::Jpeg(e.to_string()))?;
    let info = decoder.info().ok_or_else(|| FrameError::Jpeg("no image information".into()))?;
    let (full_w, full_h) = (usize::from(info.width), usize::from(info.height));
    let (w, h) = (full_w & !1, full_h & !1);
    let channels = out.num_components();
    if w == 0 || h == 0 || pixels.len() < full_w * full_h * channels {
        return Err(FrameError::Jpeg(format!(
            "{full_w}x{full_h} image with {} bytes of pixels",
            pixels.len()
        )));
    }
    let (cw, ch) = (w / 2, h / 2);
    let mut data = vec![128u8; w * h + 2 * cw * ch];
    let (y_plane, chroma) = data.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    let row_len = full_w * channels;
    for y in 0..h {
        let src = &pixels[y * row_len..y * row_len + w * channels];
        for (dst, px) in y_plane[y * w..(y + 1) * w].iter_mut().zip(src.chunks_exact(channels)) {
            *dst = luma_limited(px[0]);
        }
    }
    if channels == 3 {
        for row in 0..ch {
            let top = &pixels[2 * row * row_len..2 * row * row_len + w * 3];
            let bottom = &pixels[(2 * row + 1) * row_len..(2 * row + 1) * row_len + w * 3];
            for (x, (a, b)) in top.chunks_exact(6).zip(bottom.chunks_exact(6)).enumerate() {
                let sum =
                    |i: usize| u16::from(a[i]) + u16::from(a[i + 3]) + u16::from(b[i]) + u16::from(b[i + 3]);
                u_plane[row * cw + x] = chroma_limited(sum(1));
                v_plane[row * cw + x] = chroma_limited(sum(2));
            }
        }
    }
    Ok(Picture { width: w as u32, height: h as u32, data, captured_us })
}

/// A capture device as `kioskd doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CameraInfo {
    pub path: PathBuf,
    /// The card name the driver reports ("vivid", "HD Pro Webcam C920").
    pub card: String,
    pub driver: String,
    pub formats: Vec<CameraFormat>,
}

/// One pixel format a camera offers, with its frame sizes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CameraFormat {
    /// Four-character code: "YUYV", "MJPG"...
    pub fourcc: String,
    pub description: String,
    pub sizes: Vec<CameraSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraSize {
    Discrete {
        width: u32,
        height: u32,
    },
    /// Any size in the range (in steps the driver sets).
    Range {
        min_width: u32,
        min_height: u32,
        max_width: u32,
        max_height: u32,
    },
}

/// The video capture devices in /dev (`videoN`), with their formats and sizes. Devices that
/// cannot be opened or are not capture devices (metadata nodes, encoders) are left out.
pub fn list_cameras() -> Vec<CameraInfo> {
    let Ok(entries) = std::fs::read_dir("/dev") else { return Vec::new() };
    let mut paths: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let index = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    paths.sort();
    paths.into_iter().filter_map(|(_, path)| catch_unwind(|| describe_device(&path)).ok().flatten()).collect()
}

fn describe_device(path: &Path) -> Option<CameraInfo> {
    let device = Device::with_path(path).ok()?;
    let caps = device.query_caps().ok()?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        return None;
    }
    let formats = device
        .enum_formats()
        .ok()?
        .into_iter()
        .map(|d| {
            let sizes = device
                .enum_framesizes(d.fourcc)
                .unwrap_or_default()
                .into_iter()
                .map(|s| match s.size {
                    FrameSizeEnum::Discrete(d) => CameraSize::Discrete { width: d.width, height: d.height },
                    FrameSizeEnum::Stepwise(s) => CameraSize::Range {
                        min_width: s.min_width,
                        min_height: s.min_height,
                        max_width: s.max_width,
                        max_height: s.max_height,
                    },
                })
                .collect();
            CameraFormat { fourcc: d.fourcc.to_string(), description: d.description, sizes }
        })
        .collect();
    Some(CameraInfo { path: path.to_path_buf(), card: caps.card, driver: caps.driver, formats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_with_padded_lines() {
        // 4x2 pixels, lines padded to 12 bytes.
        let src = [
            10, 100, 20, 200, 30, 110, 40, 210, 0, 0, 0, 0, //
            50, 102, 60, 202, 70, 112, 80, 212, 0, 0, 0, 0,
        ];
        let pic = yuyv_to_i420(&src, 4, 2, 12, 5).unwrap();
        assert_eq!((pic.width, pic.height, pic.captured_us), (4, 2, 5));
        let (y, u, v) = pic.planes();
        assert_eq!(y, [10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(u, [101, 111]);
        assert_eq!(v, [201, 211]);
    }

    #[test]
    fn short_yuyv_frame_is_an_error() {
        assert!(matches!(yuyv_to_i420(&[0; 15], 4, 2, 8, 0), Err(FrameError::Short { need: 16, .. })));
        assert!(yuyv_to_i420(&[0; 16], 4, 2, 0, 0).is_ok(), "a zero stride means tightly packed");
    }

    #[test]
    fn range_conversion_hits_the_ends() {
        assert_eq!((luma_limited(0), luma_limited(255)), (16, 235));
        assert_eq!((chroma_limited(0), chroma_limited(512), chroma_limited(1020)), (16, 128, 240));
    }

    /// A minimal baseline JPEG encoder for tests: every 8×8 block is flat (DC only), with
    /// quantisation 1, a 4-bit DC code per size category and a 2-bit end-of-block code.
    /// `luma(bx, by)` gives each luma block's level; chroma is flat `cb`, `cr`.
    fn flat_jpeg(
        w: u16,
        h: u16,
        h_samp: u8,
        v_samp: u8,
        luma: impl Fn(usize, usize) -> u8,
        cb: u8,
        cr: u8,
    ) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        let mut segment = |marker: u8, body: &[u8]| {
            out.extend([0xFF, marker]);
            out.extend(((body.len() + 2) as u16).to_be_bytes());
            out.extend(body);
        };
        segment(0xDB, &[[0u8].as_slice(), &[1u8; 64]].concat());
        let [wh, wl] = w.to_be_bytes();
        let [hh, hl] = h.to_be_bytes();
        segment(0xC0, &[8, hh, hl, wh, wl, 3, 1, (h_samp << 4) | v_samp, 0, 2, 0x11, 0, 3, 0x11, 0]);
        let mut dc = vec![0x00];
        dc.extend([0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        dc.extend(0..12u8);
        segment(0xC4, &dc);
        let mut ac = vec![0x10, 0, 1];
        ac.extend([0u8; 14]);
        ac.push(0x00);
        segment(0xC4, &ac);
        segment(0xDA, &[3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]);

        let mut bits: Vec<bool> = Vec::new();
        fn put(value: u32, n: u32, bits: &mut Vec<bool>) {
            for i in (0..n).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        }
        let mut prev = [0i32; 3];
        let mut block = |comp: usize, level: u8, bits: &mut Vec<bool>| {
            let dc = 8 * (i32::from(level) - 128);
            let diff = dc - prev[comp];
            prev[comp] = dc;
            let size = 32 - diff.unsigned_abs().leading_zeros();
            put(size, 4, bits);
            let extra = if diff >= 0 { diff } else { diff - 1 + (1 << size) };
            put(extra as u32, size, bits);
            put(0, 2, bits); // end of block
        };
        let (mcu_w, mcu_h) = (8 * usize::from(h_samp), 8 * usize::from(v_samp));
        for my in 0..usize::from(h).div_ceil(mcu_h) {
            for mx in 0..usize::from(w).div_ceil(mcu_w) {
                for by in 0..usize::from(v_samp) {
                    for bx in 0..usize::from(h_samp) {
                        let level = luma(mx * usize::from(h_samp) + bx, my * usize::from(v_samp) + by);
                        block(0, level, &mut bits);
                    }
                }
                block(1, cb, &mut bits);
                block(2, cr, &mut bits);
            }
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(true);
        }
        for byte in bits.chunks(8) {
            let b = byte.iter().fold(0u8, |acc, &bit| (acc << 1) | u8::from(bit));
            out.push(b);
            if b == 0xFF {
                out.push(0x00);
            }
        }
        out.extend([0xFF, 0xD9]);
        out
    }

    fn check_flat_decode(h_samp: u8, v_samp: u8) {
        let level = |bx: usize, by: usize| (40 + 20 * (bx + 4 * by)) as u8;
        let jpeg = flat_jpeg(32, 16, h_samp, v_samp, level, 100, 160);
        let pic = mjpeg_to_i420(&jpeg, 9).unwrap();
        assert_eq!((pic.width, pic.height, pic.captured_us), (32, 16, 9));
        let (y, u, v) = pic.planes();
        for (i, &got) in y.iter().enumerate() {
            let want = luma_limited(level(i % 32 / 8, i / 32 / 8));
            assert!(got.abs_diff(want) <= 1, "4:{h_samp}{v_samp} luma at {i}: {got} != {want}");
        }
        let (want_u, want_v) = (chroma_limited(400), chroma_limited(640));
        assert!(u.iter().all(|&c| c.abs_diff(want_u) <= 1), "Cb {u:?} != {want_u}");
        assert!(v.iter().all(|&c| c.abs_diff(want_v) <= 1), "Cr {v:?} != {want_v}");
    }

    #[test]
    fn mjpeg_422_decodes() {
        check_flat_decode(2, 1);
    }

    #[test]
    fn mjpeg_420_decodes() {
        check_flat_decode(2, 2);
    }

    #[test]
    fn corrupt_mjpeg_is_an_error_not_a_panic() {
        let jpeg = flat_jpeg(64, 32, 2, 1, |x, y| (x * 30 + y * 7) as u8, 90, 170);
        assert!(mjpeg_to_i420(&jpeg, 0).is_ok());
        assert!(mjpeg_to_i420(&[], 0).is_err());
        assert!(mjpeg_to_i420(b"not a jpeg at all", 0).is_err());
        assert!(mjpeg_to_i420(&jpeg[..jpeg.len() / 2], 0).is_err(), "truncated frame");
        // Flipped bytes anywhere: an error or a picture, never a panic.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..300 {
            let mut bad = jpeg.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % bad.len() as u64) as usize;
                bad[at] ^= (seed >> 32) as u8 | 1;
            }
            let _ = mjpeg_to_i420(&bad, 0);
        }
    }

    #[test]
    fn missing_device_names_its_path() {
        let config = CameraConfig { device: "/dev/video-none-here".into(), ..CameraConfig::default() };
        let err = V4l2Camera::open(&config).err().unwrap();
        assert!(matches!(err, HwError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/dev/video-none-here"), "{err}");
    }
}
