//! The media header (`media::packet::decode`) in front of every audio datagram and every
//! video frame's stream (read whole, at most `HEADER_BYTES + MAX_VIDEO_FRAME` bytes).
//!
//! Properties: no panic; the payload is exactly the input after the 16-byte header (never a
//! byte past it, no copy) and within its kind's limit; an audio packet is never a keyframe;
//! re-encoding the header (as a copy when the input was marked one) gives back the input with
//! only the flags it does not know cleared, and that decodes to the same; each error says
//! what the bytes hold.
#![no_main]

use kioskd::media::packet::{
    HEADER_BYTES, MAX_AUDIO_PAYLOAD, MAX_VIDEO_FRAME, MEDIA_VERSION, MediaKind, PacketError, decode, is_copy,
};
use libfuzzer_sys::fuzz_target;

/// Flag bits as `media/packet.rs` lays them out.
const FLAG_KEYFRAME: u8 = 1;
const FLAG_COPY: u8 = 2;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok((h, payload)) => {
            assert_eq!(payload.len() + HEADER_BYTES, data.len());
            assert_eq!(payload.as_ptr(), data[HEADER_BYTES..].as_ptr(), "the payload is the input's tail");
            assert!(payload.len() <= h.kind.max_payload());
            assert!(h.kind.max_payload() == MAX_AUDIO_PAYLOAD || h.kind.max_payload() == MAX_VIDEO_FRAME);
            assert!(!h.keyframe || h.kind == MediaKind::Video, "audio is never a keyframe");
            let mut out = Vec::new();
            if is_copy(data) { h.encode_copy(payload, &mut out) } else { h.encode(payload, &mut out) }
                .expect("a decoded packet re-encodes");
            let mut expected = data.to_vec();
            let known = FLAG_COPY | if h.kind == MediaKind::Video { FLAG_KEYFRAME } else { 0 };
            expected[2] &= known;
            assert_eq!(out, expected, "re-encoding keeps everything but unknown flags");
            assert_eq!(decode(&out), Ok((h, payload)));
        }
        Err(PacketError::Short(n)) => {
            assert!(n == data.len() && n < HEADER_BYTES);
            assert!(n == 0 || data[0] == MEDIA_VERSION);
        }
        Err(PacketError::Version(v)) => assert!(v == data[0] && v != MEDIA_VERSION),
        Err(PacketError::Kind(k)) => assert!(data.len() >= HEADER_BYTES && k == data[1] && !(1..=2).contains(&k)),
        Err(PacketError::Reserved(r)) => assert!(data.len() >= HEADER_BYTES && r == data[3] && r != 0),
        Err(PacketError::TooLong { kind, len, limit }) => {
            assert!(len == data.len() - HEADER_BYTES && len > limit && limit == kind.max_payload());
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
});
