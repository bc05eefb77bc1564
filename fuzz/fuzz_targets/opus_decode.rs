//! The Opus decoder (`media::codec::AudioDecoder`, libopus) on packets from the network, with
//! FEC decoding and concealment in between, as the audio thread runs it (op format in
//! `kioskd_fuzz::opus_ops`). libopus is not instrumented; the seeds are real packets from the
//! project's encoder.
//!
//! Properties: no panic; a decoded packet is a whole number of 2.5 ms frames and at most
//! 120 ms; FEC and concealment give exactly one 20 ms frame.
#![no_main]

use kioskd::media::FRAME_SAMPLES;
use kioskd::media::codec::AudioDecoder;
use kioskd_fuzz::Reader;
use kioskd_fuzz::opus_ops::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = AudioDecoder::new().expect("a decoder");
    let mut r = Reader::new(data);
    while !r.is_empty() {
        match r.u8() % 3 {
            DECODE => {
                let len = usize::from(r.u16() % 1500);
                if let Ok(s) = dec.decode(r.bytes(len)) {
                    assert!(s.len() % 120 == 0 && s.len() <= 6 * FRAME_SAMPLES, "{} samples", s.len());
                }
            }
            FEC => {
                let len = usize::from(r.u16() % 1500);
                if let Ok(s) = dec.decode_fec(r.bytes(len)) {
                    assert_eq!(s.len(), FRAME_SAMPLES);
                }
            }
            _ => {
                if let Ok(s) = dec.conceal() {
                    assert_eq!(s.len(), FRAME_SAMPLES);
                }
            }
        }
    }
    let _ = CONCEAL;
});
