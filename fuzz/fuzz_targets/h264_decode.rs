//! The H.264 decoder (`media::codec::VideoDecoder`, openh264) on access units from the
//! network: a sequence of them (each `len: u16` then the bytes) into one decoder, as a call's
//! frames are. openh264's C++ is not instrumented, so the fuzzer sees only the Rust side's
//! coverage; the seeds are real frames from the project's encoder.
//!
//! Properties: no panic; a picture has even, non-zero dimensions, exactly the I420 bytes of
//! them, and the capture time it was given.
#![no_main]

use kioskd::media::Picture;
use kioskd::media::codec::VideoDecoder;
use kioskd_fuzz::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = VideoDecoder::new().expect("a decoder");
    let mut r = Reader::new(data);
    let mut n = 0u64;
    while !r.is_empty() {
        let len = usize::from(r.u16());
        let au = r.bytes(len);
        n += 1;
        if let Ok(Some(pic)) = dec.decode(au, n) {
            assert!(pic.width > 0 && pic.height > 0 && pic.width % 2 == 0 && pic.height % 2 == 0);
            assert_eq!(pic.data.len(), Picture::i420_len(pic.width, pic.height));
            assert_eq!(pic.captured_us, n);
        }
    }
});
