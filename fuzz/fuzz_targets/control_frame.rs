//! Control frames (`protocol::codec::decode_frame`) of both directions, on arbitrary bytes and
//! on the input as a JSON body behind a correct header.
//!
//! Properties: no panic; a decoded frame consumed exactly its header and declared length
//! (never more than it was given, and the bytes after it change nothing); the message passes
//! its own validation; it re-encodes to a frame that decodes to the same message, and that
//! encoding is canonical (encoding again gives the same bytes); "need more bytes" only when
//! the frame really is incomplete; each error names what the bytes say.
#![no_main]

use std::fmt::Debug;

use kioskd::protocol::codec::{HEADER_BYTES, Message};
use kioskd::protocol::{
    ClientMsg, DecodeError, EncodeError, HubMsg, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, decode_frame,
    encode_frame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check::<ClientMsg>(data);
    check::<HubMsg>(data);
    if data.len() <= MAX_MESSAGE_BYTES {
        let mut frame = vec![PROTOCOL_VERSION];
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        check::<ClientMsg>(&frame);
        check::<HubMsg>(&frame);
    }
});

fn check<M: Message + PartialEq + Debug + Clone>(buf: &[u8]) {
    let declared = buf.get(1..HEADER_BYTES).map(|l| u32::from_be_bytes(l.try_into().unwrap()) as usize);
    match decode_frame::<M>(buf) {
        Ok(Some((msg, used))) => {
            assert_eq!(buf[0], PROTOCOL_VERSION);
            let declared = declared.unwrap();
            assert!(declared <= MAX_MESSAGE_BYTES);
            assert_eq!(used, HEADER_BYTES + declared, "consumed the header and the declared body");
            assert!(used <= buf.len());
            assert_eq!(msg.check(), Ok(()), "a decoded message is valid");
            // Decoding never reads past the declared length: the frame alone decodes the same.
            assert_eq!(decode_frame::<M>(&buf[..used]), Ok(Some((msg.clone(), used))));
            assert_eq!(decode_frame::<M>(&buf[..used - 1]), Ok(None), "one byte short");
            let mut out = Vec::new();
            match encode_frame(&msg, &mut out) {
                Ok(()) => {
                    let (back, n) = decode_frame::<M>(&out).expect("re-encoded decodes").expect("whole");
                    assert_eq!(back, msg, "round trip");
                    assert_eq!(n, out.len());
                    let mut again = Vec::new();
                    encode_frame(&back, &mut again).expect("encodes again");
                    assert_eq!(again, out, "the encoding is canonical");
                }
                // Only a body at the limit can grow past it: defaults (`"rtt_ms":0`, …) written
                // out that the peer left implicit.
                Err(EncodeError::TooLong(n)) => {
                    assert!(n > MAX_MESSAGE_BYTES && declared + 256 > MAX_MESSAGE_BYTES, "{n} from {declared}");
                }
                Err(e) => panic!("a decoded message does not encode: {e}"),
            }
        }
        Ok(None) => {
            if let Some(declared) = declared {
                assert!(buf.len() < HEADER_BYTES + declared, "a whole frame left undecoded");
            } else {
                assert!(buf.len() < HEADER_BYTES);
            }
            assert!(buf.first().is_none_or(|&v| v == PROTOCOL_VERSION));
        }
        Err(DecodeError::Version(v)) => assert!(v == buf[0] && v != PROTOCOL_VERSION),
        Err(DecodeError::TooLong(n)) => assert!(Some(n) == declared && n > MAX_MESSAGE_BYTES),
        Err(DecodeError::Malformed(_) | DecodeError::Invalid(_)) => {
            assert!(buf.len() >= HEADER_BYTES + declared.unwrap(), "judged before the body was there");
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}
