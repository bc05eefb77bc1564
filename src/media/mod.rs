//! Media: pictures and sound, their packets, jitter buffers and codecs.
//!
//! Sans-IO except `codec` (which wraps the C codecs, still without clocks or threads):
//! `packet` frames media for the wire, `audio_jitter` and `video_playout` decide what to play
//! when, given the time as an argument.

pub mod audio_jitter;
pub mod codec;
pub mod ladder;
pub mod loss;
pub mod packet;
pub mod processing;
pub mod rate;
pub mod room;
pub mod stats;
pub mod stretch;
pub mod video_playout;
pub mod video_reorder;

/// Audio sample rate: Opus at 48 kHz, mono, 16-bit.
pub const SAMPLE_RATE: u32 = 48_000;
/// One audio frame: 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one audio frame in microseconds.
pub const FRAME_US: u64 = 20_000;

/// Microseconds since the Unix epoch: capture and playout times. Devices stamp media with it,
/// so that in one process (the demo, tests) end-to-end latency is a subtraction.
pub type UnixMicros = u64;

/// How long a finished call still receives what was already sent (capture to playout is
/// about 100 ms on a good network; the hub keeps relaying for as long).
pub const DRAIN: std::time::Duration = std::time::Duration::from_millis(300);

/// A picture in I420: a Y plane of `width × height`, then U and V planes of
/// `width/2 × height/2`, tightly packed. Width and height are even.
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    /// When the camera captured it.
    pub captured_us: UnixMicros,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("captured_us", &self.captured_us)
            .finish_non_exhaustive()
    }
}

impl Picture {
    /// Bytes of an I420 picture of this size.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// A black picture.
    pub fn black(width: u32, height: u32, captured_us: UnixMicros) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![16u8; w * h];
        data.resize(Self::i420_len(width, height), 128);
        Self { width, height, data, captured_us }
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..(self.width * self.height) as usize]
    }

    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let ylen = (self.width * self.height) as usize;
        let clen = ylen / 4;
        let (y, rest) = self.data.split_at(ylen);
        let (u, v) = rest.split_at(clen);
        (y, u, &v[..clen])
    }
}

/// 20 ms of mono 48 kHz audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    pub samples: Vec<i16>,
    /// When the first sample was captured.
    pub captured_us: UnixMicros,
}
