//! Shared pieces of the fuzz targets: the byte formats that turn a fuzzer's input into a
//! sequence of operations (and back, for the seed generator), and a strict Matroska reader
//! that checks what the recorder writes.
//!
//! The op formats are deliberately simple: a reader that yields zeros once the input is used
//! up, so every input is valid and the seed generator can write inputs that mean something.

pub mod ebml;

/// Reads little pieces off the front of a fuzzer's input; zeros once it is used up.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn i8(&mut self) -> i8 {
        self.u8() as i8
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn i16(&mut self) -> i16 {
        self.u16() as i16
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// `der` as a PEM block labelled `label` (base64, 64 columns).
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { char::from(B64[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The inverse of [`Reader`], for the seed generator.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.u8(v as u8)
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.u16(v as u16)
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }
}

/// A plausible wall clock to start from (µs since the epoch), as the devices stamp media.
pub const T0: u64 = 1_700_000_000_000_000;

/// Ops of the `audio_jitter` target (each starts with a tag byte; `tag % 4` selects).
pub mod audio_ops {
    /// `tag % 4` 0 or 1: a packet. Then `mode: u8`; bit 7: `seq: u32` raw, else `delta: i8`
    /// from the last seq; bit 6: `captured: u64` raw, else `T0 + seq·20 ms + jitter: i16 ×
    /// 100 µs`; bit 5: the payload is oversized (1001 bytes + `len`); then `arrive: u16`
    /// (× 10 µs, how much later than the previous op), `len: u8` (filler after the 8-byte id).
    pub const PACKET: u8 = 0;
    /// `tag % 4` 2: a speaker slot. Then `advance: u8` (× 400 µs).
    pub const POLL: u8 = 2;
    /// `tag % 4` 3: `peek(last seq + delta: i8)`; bit 2 of the tag: the clock also steps back
    /// by `back: u16` × 10 µs (a wall clock stepped by NTP).
    pub const PEEK: u8 = 3;
}

/// Ops of the `video_reorder` target: `tag & 3` 0–2: push (bit 7: `seq: u32` raw, else
/// `delta: i8`; bit 6: keyframe; then `arrive: u16` × 10 µs); 3: poll (`advance: u16` × 100 µs).
pub mod reorder_ops {
    pub const POLL: u8 = 3;
}

/// Ops of the `video_playout` target: `tag & 3` 0 or 1: a frame (bit 7: `seq: u32` raw, else
/// `delta: i8`; bit 6: keyframe; bit 5: `captured: u64` raw, else `T0 + seq·33 ms +
/// jitter: i16 × 100 µs`; then `arrive: u16` × 10 µs; then `outcome: u8` when it is to be
/// decoded: `% 4` 0 decode error, 1 no picture yet, else a picture); 2: `poll_display`
/// (`advance: u16` × 10 µs); 3: `set_audio_delay(delay: u32 µs)`.
pub mod playout_ops {
    pub const FRAME: u8 = 0;
    pub const POLL: u8 = 2;
    pub const AUDIO_DELAY: u8 = 3;
}

/// Ops of the `recorder` target (`tag % 4`): 0: a raw packet (`party: u8` bit 0,
/// `arrive: u16` × 10 µs, `len: u16`, bytes); 1: a packet built with the media header
/// (`flags: u8`: bit 0 agent, bit 1 video, bit 2 keyframe, bit 3 `seq: u32` raw else
/// `delta: i8`, bit 4 `captured: u64` raw else from the hub's clock plus `skew: i16` ms;
/// then `arrive: u16` × 10 µs, `len: u16`, payload); 2: `tick` (`advance: u16` × 100 µs);
/// 3: `take_output`.
pub mod recorder_ops {
    pub const RAW: u8 = 0;
    pub const PACKET: u8 = 1;
    pub const TICK: u8 = 2;
    pub const TAKE: u8 = 3;
    pub const AGENT: u8 = 1;
    pub const VIDEO: u8 = 2;
    pub const KEYFRAME: u8 = 4;
    pub const RAW_SEQ: u8 = 8;
    pub const RAW_CAPTURED: u8 = 16;
}

/// Ops of the `opus_decode` target (`tag % 3`): 0: decode (`len: u16`, bytes), 1: decode the
/// FEC of the next packet (`len: u16`, bytes), 2: conceal.
pub mod opus_ops {
    pub const DECODE: u8 = 0;
    pub const FEC: u8 = 1;
    pub const CONCEAL: u8 = 2;
}

/// Ops of the `h264_decode` target: access units, each as `len: u16` then the bytes, into one
/// decoder.
pub mod h264_ops {}
