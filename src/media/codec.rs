//! The codecs: H.264 through openh264 and Opus through libopus, behind small types that speak
//! [`Picture`] and 20 ms chunks. No clocks or threads; the caller runs them on its own thread.

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, RateControlMode, UsageType};
use openh264::formats::{YUVBuffer, YUVSource};

use super::{FRAME_SAMPLES, Picture, UnixMicros};

/// Largest Opus packet we produce: 20 ms at up to 510 kbit/s is 1275 bytes; we cap lower so
/// that a packet with its header fits in one QUIC datagram at the minimum path MTU.
pub const MAX_OPUS_PACKET: usize = 1000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("H.264: {0}")]
    H264(String),
    #[error("Opus: {0}")]
    Opus(String),
    #[error("picture of {got} bytes does not fit {width}x{height} I420")]
    BadPicture { got: usize, width: u32, height: u32 },
}

/// An encoded video frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// H.264 encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
    /// A keyframe at least this often (frames), so a receiver that lost one recovers.
    pub keyframe_interval: u32,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self { width: 640, height: 480, fps: 30.0, bitrate_bps: 1_000_000, keyframe_interval: 150 }
    }
}

pub struct VideoEncoder {
    enc: Encoder,
    settings: VideoSettings,
    /// openh264 is set up by the first picture (it needs the size) and refuses options before
    /// that: a bitrate set earlier is applied after the first picture. (Making the encoder
    /// afresh at that rate instead caps it there, since openh264 refuses a rate above the one it
    /// was set up with; with its maximum raised, its rate control skipped frames at half the
    /// rate asked for.)
    started: bool,
    pending_bitrate: Option<u32>,
}

impl VideoEncoder {
    pub fn new(settings: VideoSettings) -> Result<Self, CodecError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .intra_frame_period(openh264::encoder::IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            // Rate control needs leave to skip a frame when the budget is spent.
            .skip_frames(true);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::H264(e.to_string()))?;
        Ok(Self { enc, settings, started: false, pending_bitrate: None })
    }

    pub fn settings(&self) -> VideoSettings {
        self.settings
    }

    /// Encodes one picture. `None` when the encoder skipped it (rate control).
    pub fn encode(&mut self, pic: &Picture) -> Result<Option<EncodedFrame>, CodecError> {
        let expected = Picture::i420_len(pic.width, pic.height);
        if pic.data.len() != expected || !pic.width.is_multiple_of(2) || !pic.height.is_multiple_of(2) {
            return Err(CodecError::BadPicture { got: pic.data.len(), width: pic.width, height: pic.height });
        }
        let yuv = YUVBuffer::from_vec(pic.data.clone(), pic.width as usize, pic.height as usize);
        let bs = self.enc.encode(&yuv).map_err(|e| CodecError::H264(e.to_string()))?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let frame = match bs.frame_type() {
            FrameType::Skip | FrameType::Invalid => None,
            _ => Some(bs.to_vec()).filter(|d| !d.is_empty()).map(|data| EncodedFrame { data, keyframe }),
        };
        self.started = true;
        if let Some(bps) = self.pending_bitrate.take() {
            // Refused, the encoder keeps its rate and `settings()` says so: the caller asks
            // again. The picture is encoded either way.
            let _ = self.set_bitrate(bps);
        }
        Ok(frame)
    }

    /// The next frame will be a keyframe (a receiver could not decode).
    pub fn request_keyframe(&mut self) {
        self.enc.force_intra_frame();
    }

    /// Changes the target bitrate for the following frames.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !self.started {
            // `settings()` keeps the rate in force until this one is applied.
            self.pending_bitrate = Some(bps);
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: bps.min(i32::MAX as u32) as i32,
        };
        // SAFETY: ENCODER_OPTION_BITRATE takes a pointer to an SBitrateInfo, which lives for the
        // call; the encoder is initialised (it has been constructed) and only reads it.
        let rc = unsafe {
            self.enc
                .raw_api()
                .set_option(openh264_sys2::ENCODER_OPTION_BITRATE, std::ptr::addr_of_mut!(info).cast())
        };
        if rc != 0 {
            return Err(CodecError::H264(format!("setting the bitrate to {bps} failed ({rc})")));
        }
        self.settings.bitrate_bps = bps;
        Ok(())
    }
}

pub struct VideoDecoder {
    dec: Decoder,
}

impl VideoDecoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self { dec: Decoder::new().map_err(|e| CodecError::H264(e.to_string()))? })
    }

    /// Decodes one frame's NAL units. `Ok(None)` when the decoder has no picture yet.
    pub fn decode(&mut self, data: &[u8], captured_us: UnixMicros) -> Result<Option<Picture>, CodecError> {
        let Some(yuv) = self.dec.decode(data).map_err(|e| CodecError::H264(e.to_string()))? else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (w2, h2) = (w & !1, h & !1);
        if w2 == 0 || h2 == 0 {
            // A stream may crop its picture to a single row or column: nothing to show.
            return Err(CodecError::H264(format!("a picture of {w}×{h} pixels")));
        }
        let mut data = Vec::with_capacity(Picture::i420_len(w2 as u32, h2 as u32));
        let (y, u, v) = (yuv.y(), yuv.u(), yuv.v());
        for row in 0..h2 {
            data.extend_from_slice(y.get(row * ys..row * ys + w2).ok_or_else(short)?);
        }
        for (plane, stride) in [(u, us), (v, vs)] {
            for row in 0..h2 / 2 {
                let row = row.min(ch - 1);
                data.extend_from_slice(
                    plane.get(row * stride..row * stride + (w2 / 2).min(cw)).ok_or_else(short)?,
                );
            }
        }
        Ok(Some(Picture { width: w2 as u32, height: h2 as u32, data, captured_us }))
    }
}

fn short() -> CodecError {
    CodecError::H264("decoded picture shorter than its dimensions".into())
}

/// Opus settings.
#[derive(Debug, Clone, Copy)]
pub struct AudioSettings {
    pub bitrate_bps: i32,
    /// In-band forward error correction: each packet carries a coarse copy of the previous one.
    pub fec: bool,
    /// Discontinuous transmission: near-empty packets during silence.
    pub dtx: bool,
    /// Expected packet loss in percent (tunes FEC).
    pub expected_loss_pct: u8,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self { bitrate_bps: 32_000, fec: true, dtx: false, expected_loss_pct: 5 }
    }
}

pub struct AudioEncoder {
    enc: audiopus::coder::Encoder,
    out: Vec<u8>,
}

impl AudioEncoder {
    pub fn new(s: AudioSettings) -> Result<Self, CodecError> {
        let opus = |e: audiopus::Error| CodecError::Opus(e.to_string());
        let mut enc = audiopus::coder::Encoder::new(
            audiopus::SampleRate::Hz48000,
            audiopus::Channels::Mono,
            audiopus::Application::Voip,
        )
        .map_err(opus)?;
        enc.set_bitrate(audiopus::Bitrate::BitsPerSecond(s.bitrate_bps)).map_err(opus)?;
        enc.set_inband_fec(s.fec).map_err(opus)?;
        enc.set_packet_loss_perc(s.expected_loss_pct.min(100)).map_err(opus)?;
        enc.set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, i32::from(s.dtx)).map_err(opus)?;
        Ok(Self { enc, out: vec![0; MAX_OPUS_PACKET] })
    }

    /// Encodes 20 ms (960 samples).
    pub fn encode(&mut self, samples: &[i16]) -> Result<Vec<u8>, CodecError> {
        if samples.len() != FRAME_SAMPLES {
            return Err(CodecError::Opus(format!("{} samples, expected {FRAME_SAMPLES}", samples.len())));
        }
        let n = self.enc.encode(samples, &mut self.out).map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(self.out[..n].to_vec())
    }

    /// Retunes FEC for the loss the receiver reports.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), CodecError> {
        self.enc.set_packet_loss_perc(pct.min(100)).map_err(|e| CodecError::Opus(e.to_string()))
    }
}

pub struct AudioDecoder {
    dec: audiopus::coder::Decoder,
    out: Vec<i16>,
}

impl AudioDecoder {
    pub fn new() -> Result<Self, CodecError> {
        let dec = audiopus::coder::Decoder::new(audiopus::SampleRate::Hz48000, audiopus::Channels::Mono)
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(Self { dec, out: vec![0; FRAME_SAMPLES * 6] })
    }

    /// Decodes one packet into 20 ms.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, CodecError> {
        self.run(Some(packet), false)
    }

    /// Rebuilds the frame before `next` from the FEC data inside `next`.
    pub fn decode_fec(&mut self, next: &[u8]) -> Result<Vec<i16>, CodecError> {
        self.run(Some(next), true)
    }

    /// Packet loss concealment for one missing frame.
    pub fn conceal(&mut self) -> Result<Vec<i16>, CodecError> {
        self.run(None, false)
    }

    fn run(&mut self, packet: Option<&[u8]>, fec: bool) -> Result<Vec<i16>, CodecError> {
        // FEC and concealment must ask for exactly one frame; a normal packet may hold up to
        // 120 ms.
        let len = if packet.is_some() && !fec { self.out.len() } else { FRAME_SAMPLES };
        let n = self
            .dec
            .decode(packet, &mut self.out[..len], fec)
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(self.out[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/h264_decode.rs, input kept in fuzz/regressions/): a
    /// stream whose picture is cropped to one pixel's width gave a picture of width 0.
    #[test]
    fn a_picture_cropped_to_one_pixel_is_refused_not_shown_empty() {
        let input = include_bytes!("../../fuzz/regressions/h264_decode/one-pixel-wide-picture");
        let mut dec = VideoDecoder::new().unwrap();
        let (mut rest, mut n, mut refused) = (&input[..], 0u64, 0);
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let au = &rest[2..(2 + len).min(rest.len())];
            rest = &rest[(2 + len).min(rest.len())..];
            n += 1;
            match dec.decode(au, n) {
                Ok(Some(pic)) => {
                    assert!(pic.width > 0 && pic.height > 0 && pic.width % 2 == 0 && pic.height % 2 == 0);
                    assert_eq!(pic.data.len(), Picture::i420_len(pic.width, pic.height));
                }
                Ok(None) => {}
                Err(e) => refused += usize::from(e.to_string().contains("pixels")),
            }
        }
        assert!(refused > 0, "the one-pixel picture is refused");
    }

    fn pattern(w: u32, h: u32, t: u32) -> Picture {
        let mut p = Picture::black(w, h, 0);
        for y in 0..h {
            for x in 0..w {
                p.data[(y * w + x) as usize] = ((x + y + t * 4) % 200 + 16) as u8;
            }
        }
        p
    }

    #[test]
    fn h264_round_trip_keeps_size_and_content() {
        let mut enc =
            VideoEncoder::new(VideoSettings { width: 320, height: 240, ..VideoSettings::default() }).unwrap();
        let mut dec = VideoDecoder::new().unwrap();
        let mut decoded = 0;
        for t in 0..10 {
            let src = pattern(320, 240, t);
            let Some(frame) = enc.encode(&src).unwrap() else { continue };
            if t == 0 {
                assert!(frame.keyframe, "first frame is a keyframe");
            }
            if let Some(pic) = dec.decode(&frame.data, 7).unwrap() {
                assert_eq!((pic.width, pic.height, pic.captured_us), (320, 240, 7));
                let diff: u64 = pic.y().iter().zip(src.y()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
                assert!(diff / u64::from(320 * 240u32) < 6, "mean luma error {}", diff / (320 * 240));
                decoded += 1;
            }
        }
        assert!(decoded >= 9);
        enc.set_bitrate(300_000).unwrap();
        enc.request_keyframe();
        let frame = enc.encode(&pattern(320, 240, 11)).unwrap().unwrap();
        assert!(frame.keyframe);
    }

    #[test]
    fn a_bitrate_set_before_the_first_picture_counts_from_the_second() {
        let settings = VideoSettings { width: 320, height: 240, ..VideoSettings::default() };
        let mut full = VideoEncoder::new(settings).unwrap();
        let mut low = VideoEncoder::new(settings).unwrap();
        low.set_bitrate(100_000).unwrap();
        assert_eq!(low.settings().bitrate_bps, 1_000_000, "not yet applied");
        // Noise that moves: costly enough that the bitrate decides the size.
        let noisy = |t: u32| {
            let mut p = Picture::black(320, 240, 0);
            for (i, v) in p.data.iter_mut().enumerate() {
                *v = 96 + ((i as u32 + t * 3).wrapping_mul(2_654_435_761) >> 27) as u8;
            }
            p
        };
        let (mut full_bytes, mut low_bytes) = (0, 0);
        for t in 0..60 {
            full_bytes += full.encode(&noisy(t)).unwrap().map_or(0, |f| f.data.len());
            low_bytes += low.encode(&noisy(t)).unwrap().map_or(0, |f| f.data.len());
        }
        assert_eq!(low.settings().bitrate_bps, 100_000, "applied after the first picture");
        assert!(low_bytes * 3 < full_bytes, "{low_bytes} bytes at 100 kbit/s, {full_bytes} at 1 Mbit/s");
        // Back up to the rate it was made for.
        low.set_bitrate(1_000_000).unwrap();
        let mut raised = 0;
        for t in 60..120 {
            raised += low.encode(&noisy(t)).unwrap().map_or(0, |f| f.data.len());
        }
        assert!(raised > low_bytes * 3, "{raised} bytes at 1 Mbit/s after {low_bytes} at 100 kbit/s");
    }

    #[test]
    fn garbage_does_not_crash_the_decoder() {
        let mut dec = VideoDecoder::new().unwrap();
        for seed in 0..50u32 {
            let junk: Vec<u8> =
                (0..500).map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as u8).collect();
            let _ = dec.decode(&junk, 0);
        }
    }

    #[test]
    fn opus_round_trip_fec_and_plc() {
        let mut enc = AudioEncoder::new(AudioSettings::default()).unwrap();
        let mut dec = AudioDecoder::new().unwrap();
        let tone: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 48000.0).sin() * 8000.0) as i16)
            .collect();
        let a = enc.encode(&tone).unwrap();
        let b = enc.encode(&tone).unwrap();
        assert!(!a.is_empty() && a.len() <= MAX_OPUS_PACKET);
        assert_eq!(dec.decode(&a).unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.conceal().unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.decode_fec(&b).unwrap().len(), FRAME_SAMPLES);
        assert!(dec.decode(&[0xff; 3]).is_err() || dec.decode(&[0xff; 3]).is_ok(), "no panic on junk");
        assert!(enc.encode(&tone[..100]).is_err());
    }
}
