//! The media header in front of every audio datagram and every video frame on the wire.
//!
//! Layout, 16 bytes, big-endian, then the payload (one Opus packet or one H.264 access unit):
//!
//! ```text
//!  0        1        2        3        4                 8                                16
//! +--------+--------+--------+--------+-----------------+--------------------------------+
//! |version | kind   | flags  |reserved| seq (u32)       | capture_us (u64)               |
//! +--------+--------+--------+--------+-----------------+--------------------------------+
//! version = 1; kind: 1 audio, 2 video; flags: bit0 keyframe, bit1 copy (an audio frame sent
//! again for loss recovery, see [`MediaHeader::encode_copy`]); reserved = 0; seq per sender
//! and kind, wrapping.
//! ```
//!
//! Use:
//!
//! 1. Sender: `MediaHeader { .. }.encode(payload, &mut out)?`, then send `out` as one QUIC
//!    datagram (audio) or write it to a unidirectional stream and finish it (video).
//! 2. Receiver: `decode(&datagram)` or `decode(&stream_bytes)` (read the stream with a limit of
//!    [`HEADER_BYTES`] + [`MAX_VIDEO_FRAME`]), then feed the jitter buffer or the decoder.
//!
//! ```no_run
//! use kioskd::media::packet::{MediaHeader, MediaKind, decode};
//! let header = MediaHeader { kind: MediaKind::Audio, keyframe: false, seq: 7, captured_us: 1 };
//! let mut datagram = Vec::new();
//! header.encode(b"opus bytes", &mut datagram)?;
//! let (back, payload) = decode(&datagram)?;
//! assert_eq!((back, payload), (header, &b"opus bytes"[..]));
//! # Ok::<(), kioskd::media::packet::PacketError>(())
//! ```
//!
//! The decoder reads nothing before checking the length and allocates nothing: the payload is
//! a slice of the input.

use super::UnixMicros;

/// Bytes of the header before the payload.
pub const HEADER_BYTES: usize = 16;

/// Version byte of this layout. Another value is refused: the layout may differ.
pub const MEDIA_VERSION: u8 = 1;

/// Largest audio payload in bytes. An audio packet travels as one QUIC datagram, which must
/// stay under `max_datagram_size()`: about 1162 bytes at QUIC's minimum path MTU (1200) once
/// the short header and the datagram frame are paid; 1000 + 16 leaves room for both. Opus at
/// 20 ms needs about 160 bytes at 64 kbit/s.
pub const MAX_AUDIO_PAYLOAD: usize = 1000;

/// Largest video frame (one H.264 access unit) in bytes: 2 MiB. A 1080p keyframe at high quality
/// is a few hundred KiB; anything larger is a broken or hostile sender, and the receiver must
/// not buffer it.
pub const MAX_VIDEO_FRAME: usize = 2 * 1024 * 1024;

/// Flag bit: the video frame is a keyframe (IDR), decodable on its own.
const FLAG_KEYFRAME: u8 = 0b0000_0001;
/// Flag bit: an audio frame sent again, after frames that followed it, as redundancy against
/// loss. A receiver that ignores the bit sees a duplicate seq (which jitter buffers drop); the
/// sender's loss meter at the receiver counts only first sendings.
const FLAG_COPY: u8 = 0b0000_0010;

/// What the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// One 20 ms Opus packet.
    Audio = 1,
    /// One H.264 access unit (Annex B).
    Video = 2,
}

impl MediaKind {
    /// The largest payload of this kind, in bytes.
    pub const fn max_payload(self) -> usize {
        match self {
            Self::Audio => MAX_AUDIO_PAYLOAD,
            Self::Video => MAX_VIDEO_FRAME,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Audio),
            2 => Some(Self::Video),
            _ => None,
        }
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaHeader {
    pub kind: MediaKind,
    /// Video only: the frame decodes without earlier frames. Always false for audio.
    pub keyframe: bool,
    /// Per sender and kind, +1 per packet (audio) or frame (video), wrapping at `u32::MAX`.
    pub seq: u32,
    /// When the first sample or the picture was captured, on the sender's clock.
    pub captured_us: UnixMicros,
}

/// Why a packet could not be encoded or decoded. On receive, drop the packet and count it; the
/// connection stays up (a broken media packet does not break the call).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than [`HEADER_BYTES`] bytes: a truncated packet.
    #[error("media packet of {0} bytes is shorter than the {HEADER_BYTES}-byte header")]
    Short(usize),
    /// Another header version; the peer runs an incompatible build.
    #[error("unsupported media header version {0} (this build speaks {MEDIA_VERSION})")]
    Version(u8),
    /// Unknown media kind byte.
    #[error("unknown media kind {0}")]
    Kind(u8),
    /// The reserved byte is not 0: a newer layout or garbage.
    #[error("reserved byte of the media header is {0}, not 0")]
    Reserved(u8),
    /// The payload is over the limit of its kind ([`MAX_AUDIO_PAYLOAD`], [`MAX_VIDEO_FRAME`]).
    /// On encode, the local encoder produced too much: lower its bitrate.
    #[error("{kind:?} payload of {len} bytes is over the {limit}-byte limit")]
    TooLong { kind: MediaKind, len: usize, limit: usize },
}

impl MediaHeader {
    /// Appends the header and `payload` to `out`. Refuses a payload over the limit of its kind,
    /// which the receiver would refuse too.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PacketError> {
        self.encode_flags(payload, out, 0)
    }

    /// Like [`encode`](Self::encode), marked as a copy of a frame sent before (redundancy).
    pub fn encode_copy(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PacketError> {
        self.encode_flags(payload, out, FLAG_COPY)
    }

    fn encode_flags(&self, payload: &[u8], out: &mut Vec<u8>, extra: u8) -> Result<(), PacketError> {
        let limit = self.kind.max_payload();
        if payload.len() > limit {
            return Err(PacketError::TooLong { kind: self.kind, len: payload.len(), limit });
        }
        let flags = extra | if self.keyframe { FLAG_KEYFRAME } else { 0 };
        out.reserve(HEADER_BYTES + payload.len());
        out.extend_from_slice(&[MEDIA_VERSION, self.kind as u8, flags, 0]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.captured_us.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// Decodes one whole packet: the header and the payload (the rest of `buf`).
///
/// Flag bits other than the keyframe bit are ignored, so that a later sender can mark redundant
/// copies without breaking this receiver (a copy then reads as a duplicate seq, which the
/// jitter buffer ignores).
pub fn decode(buf: &[u8]) -> Result<(MediaHeader, &[u8]), PacketError> {
    let Some(&version) = buf.first() else {
        return Err(PacketError::Short(0));
    };
    if version != MEDIA_VERSION {
        return Err(PacketError::Version(version));
    }
    let (Some(head), Some(payload)) = (buf.get(..HEADER_BYTES), buf.get(HEADER_BYTES..)) else {
        return Err(PacketError::Short(buf.len()));
    };
    let kind = MediaKind::from_byte(head[1]).ok_or(PacketError::Kind(head[1]))?;
    let flags = head[2];
    if head[3] != 0 {
        return Err(PacketError::Reserved(head[3]));
    }
    let limit = kind.max_payload();
    if payload.len() > limit {
        return Err(PacketError::TooLong { kind, len: payload.len(), limit });
    }
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&head[4..8]);
    let mut captured = [0u8; 8];
    captured.copy_from_slice(&head[8..16]);
    let header = MediaHeader {
        kind,
        keyframe: kind == MediaKind::Video && flags & FLAG_KEYFRAME != 0,
        seq: u32::from_be_bytes(seq),
        captured_us: u64::from_be_bytes(captured),
    };
    Ok((header, payload))
}

/// Whether an encoded packet is marked as a copy ([`MediaHeader::encode_copy`]).
pub fn is_copy(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|flags| flags & FLAG_COPY != 0)
}

/// `later − earlier` for wrapping sequence numbers: positive when `later` is newer, within
/// ±2³¹. Both jitter buffers unwrap seq with it.
pub fn seq_delta(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// The newest packet a receiver has seen: the reference for extending the next packet's seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqAnchor {
    /// Its extended (never wrapping) seq.
    pub ext: i64,
    pub seq: u32,
    pub captured_us: u64,
}

impl From<(i64, u32, u64)> for SeqAnchor {
    fn from((ext, seq, captured_us): (i64, u32, u64)) -> Self {
        Self { ext, seq, captured_us }
    }
}

/// When a new seq is taken for a restarted sender rather than the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRule {
    /// A seq this far (either way) from the newest one is a new stream.
    pub seq_jump: i64,
    /// A newer seq captured this much earlier than the newest, or an older seq captured this
    /// much later, is a new stream.
    pub capture_skew_us: u64,
}

/// The extended seq of a packet `seq` captured at `captured_us`, after `newest`; `None` when
/// the packet is from a restarted sender (the receiver resets and starts from `seq`).
pub fn extend_seq(newest: Option<SeqAnchor>, seq: u32, captured_us: u64, rule: RestartRule) -> Option<i64> {
    let Some(n) = newest else { return Some(i64::from(seq)) };
    let delta = i64::from(seq_delta(seq, n.seq));
    let back = n.captured_us.saturating_sub(captured_us) > rule.capture_skew_us;
    let forward = captured_us.saturating_sub(n.captured_us) > rule.capture_skew_us;
    if delta.abs() > rule.seq_jump || (delta >= 0 && back) || (delta <= 0 && forward) {
        None
    } else {
        Some(n.ext + delta)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn packet(header: MediaHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header.encode(payload, &mut out).unwrap();
        out
    }

    fn audio(seq: u32) -> MediaHeader {
        MediaHeader { kind: MediaKind::Audio, keyframe: false, seq, captured_us: 1_700_000_000_000_000 }
    }

    #[test]
    fn layout_is_big_endian_16_bytes() {
        let header = MediaHeader {
            kind: MediaKind::Video,
            keyframe: true,
            seq: 0x0102_0304,
            captured_us: 0x1112_1314_1516_1718,
        };
        let bytes = packet(header, b"xy");
        assert_eq!(
            bytes,
            [1, 2, 1, 0, 1, 2, 3, 4, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, b'x', b'y']
        );
        assert_eq!(decode(&bytes), Ok((header, &b"xy"[..])));
    }

    #[test]
    fn empty_payload_round_trips() {
        let bytes = packet(audio(u32::MAX), b"");
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert_eq!(decode(&bytes), Ok((audio(u32::MAX), &b""[..])));
    }

    #[test]
    fn short_packets_refused() {
        let bytes = packet(audio(1), b"abc");
        assert_eq!(decode(&[]), Err(PacketError::Short(0)));
        for cut in 1..HEADER_BYTES {
            assert_eq!(decode(&bytes[..cut]), Err(PacketError::Short(cut)), "cut at {cut}");
        }
    }

    #[test]
    fn bad_version_kind_reserved_refused() {
        let mut bytes = packet(audio(1), b"abc");
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(PacketError::Version(2)));
        bytes[0] = 1;
        bytes[1] = 3;
        assert_eq!(decode(&bytes), Err(PacketError::Kind(3)));
        bytes[1] = 0;
        assert_eq!(decode(&bytes), Err(PacketError::Kind(0)));
        bytes[1] = 1;
        bytes[3] = 9;
        assert_eq!(decode(&bytes), Err(PacketError::Reserved(9)));
    }

    #[test]
    fn unknown_flags_ignored_and_audio_never_keyframe() {
        let mut bytes = packet(audio(5), b"a");
        bytes[2] = 0xff;
        let (header, _) = decode(&bytes).unwrap();
        assert_eq!(header, audio(5));
    }

    #[test]
    fn payload_limits_per_kind() {
        let big = vec![0u8; MAX_AUDIO_PAYLOAD + 1];
        let mut out = Vec::new();
        assert_eq!(
            audio(1).encode(&big, &mut out),
            Err(PacketError::TooLong { kind: MediaKind::Audio, len: 1001, limit: MAX_AUDIO_PAYLOAD })
        );
        assert!(out.is_empty(), "nothing written on error");
        audio(1).encode(&big[..MAX_AUDIO_PAYLOAD], &mut out).unwrap();
        assert_eq!(decode(&out).unwrap().1.len(), MAX_AUDIO_PAYLOAD);

        // A hand-made oversized audio datagram is refused; the same size is fine as video.
        let mut bytes = vec![1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        bytes.extend_from_slice(&big);
        assert!(matches!(decode(&bytes), Err(PacketError::TooLong { kind: MediaKind::Audio, .. })));
        bytes[1] = 2;
        assert!(decode(&bytes).is_ok());

        let video = MediaHeader { kind: MediaKind::Video, keyframe: false, seq: 0, captured_us: 0 };
        let huge = vec![0u8; MAX_VIDEO_FRAME + 1];
        assert!(matches!(video.encode(&huge, &mut out), Err(PacketError::TooLong { .. })));
    }

    #[test]
    fn copies_are_marked_and_decode_as_the_same_frame() {
        let (mut first, mut copy) = (Vec::new(), Vec::new());
        audio(9).encode(b"opus", &mut first).unwrap();
        audio(9).encode_copy(b"opus", &mut copy).unwrap();
        assert!(!is_copy(&first) && is_copy(&copy));
        assert_eq!(decode(&first).unwrap(), decode(&copy).unwrap());
        assert!(!is_copy(&[]));
    }

    #[test]
    fn extend_seq_follows_the_stream_and_sees_restarts() {
        let rule = RestartRule { seq_jump: 500, capture_skew_us: 500_000 };
        let n = Some(SeqAnchor { ext: (1 << 32) + 5, seq: 5, captured_us: 10_000_000 });
        assert_eq!(extend_seq(None, 7, 0, rule), Some(7));
        assert_eq!(extend_seq(n, 7, 10_040_000, rule), Some((1 << 32) + 7));
        assert_eq!(extend_seq(n, u32::MAX, 9_980_000, rule), Some((1 << 32) - 1), "wraps back");
        assert_eq!(extend_seq(n, 506, 20_000_000, rule), None, "a jump of 501");
        assert_eq!(extend_seq(n, 6, 9_000_000, rule), None, "newer seq, much older capture");
        assert_eq!(extend_seq(n, 4, 11_000_000, rule), None, "older seq, much newer capture");
    }

    #[test]
    fn seq_delta_wraps() {
        assert_eq!(seq_delta(0, u32::MAX), 1);
        assert_eq!(seq_delta(u32::MAX, 0), -1);
        assert_eq!(seq_delta(5, 3), 2);
        assert_eq!(seq_delta(3, 5), -2);
    }

    fn any_header() -> impl Strategy<Value = MediaHeader> {
        (any::<bool>(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
            |(video, keyframe, seq, captured_us)| MediaHeader {
                kind: if video { MediaKind::Video } else { MediaKind::Audio },
                keyframe: video && keyframe,
                seq,
                captured_us,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any bytes: no panic; a decoded payload is the tail of the input, within its limit.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((header, payload)) = decode(&bytes) {
                prop_assert_eq!(HEADER_BYTES + payload.len(), bytes.len());
                prop_assert!(payload.len() <= header.kind.max_payload());
            }
        }

        /// A plausible header (right version, any other bytes) with any payload never panics.
        #[test]
        fn decoder_never_panics_after_version(
            rest in proptest::collection::vec(any::<u8>(), 0..1100),
        ) {
            let mut bytes = vec![MEDIA_VERSION];
            bytes.extend_from_slice(&rest);
            let _ = decode(&bytes);
        }

        /// encode then decode gives back the header and the payload, consuming everything.
        #[test]
        fn round_trip(header in any_header(), payload in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let bytes = packet(header, &payload);
            prop_assert_eq!(bytes.len(), HEADER_BYTES + payload.len());
            let (back, rest) = decode(&bytes).unwrap();
            prop_assert_eq!(back, header);
            prop_assert_eq!(rest, &payload[..]);
        }
    }
}
