//! The control stream decoder (`protocol::FrameDecoder`) fed the same bytes in arbitrary
//! chunks, and the text de-duplication (`protocol::text::TextInbox`) fed the text ids that
//! come out.
//!
//! Input: one byte (bit 0: hub→client messages, else client→hub; the rest seeds the chunk
//! sizes), then the stream.
//!
//! Properties: however the stream is cut, the decoder yields exactly the messages (and the
//! error) that `decode_frame` finds walking the whole stream; after polling, it holds less
//! than one frame; what it holds at the end is the undecoded tail; a text id is shown at most
//! once.
#![no_main]

use std::collections::HashSet;
use std::fmt::Debug;

use kioskd::protocol::codec::{HEADER_BYTES, Message};
use kioskd::protocol::text::TextInbox;
use kioskd::protocol::{ClientMsg, DecodeError, FrameDecoder, HubMsg, MAX_MESSAGE_BYTES, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, stream)) = data.split_first() else { return };
    if head & 1 == 1 {
        run::<HubMsg>(head >> 1, stream, |m| match m {
            HubMsg::Text { id, .. } => Some(*id),
            _ => None,
        });
    } else {
        run::<ClientMsg>(head >> 1, stream, |m| match m {
            ClientMsg::Text { id, .. } => Some(*id),
            _ => None,
        });
    }
});

fn run<M: Message + PartialEq + Debug>(seed: u8, stream: &[u8], text_id: impl Fn(&M) -> Option<u64>) {
    // Reference: walk the whole stream frame by frame.
    let mut expected = Vec::new();
    let mut at = 0;
    let expected_end: Result<(), DecodeError> = loop {
        match decode_frame::<M>(&stream[at..]) {
            Ok(Some((msg, used))) => {
                expected.push(msg);
                at += used;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };

    // The decoder, fed in chunks of pseudo-random sizes (1..=64 bytes, now and then larger).
    let mut rng = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    let mut end = Ok(());
    let mut inbox = TextInbox::new();
    let mut shown = HashSet::new();
    let mut fed = 0;
    'feed: while fed < stream.len() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = if rng % 16 == 0 { 1 + (rng as usize >> 8) % 20_000 } else { 1 + (rng as usize >> 8) % 64 };
        let chunk = &stream[fed..(fed + n).min(stream.len())];
        fed += chunk.len();
        dec.handle_bytes(chunk);
        loop {
            match dec.poll_message::<M>() {
                Ok(Some(msg)) => {
                    if let Some(id) = text_id(&msg)
                        && inbox.handle_text(id)
                    {
                        assert!(shown.insert(id), "text {id} shown twice");
                    }
                    got.push(msg);
                }
                Ok(None) => break,
                Err(e) => {
                    end = Err(e);
                    break 'feed;
                }
            }
        }
        assert!(dec.buffered() < HEADER_BYTES + MAX_MESSAGE_BYTES, "holds at most one partial frame");
    }
    assert_eq!(got, expected, "the chunking changed the messages");
    assert_eq!(end, expected_end, "the chunking changed the outcome");
    if end.is_ok() {
        assert_eq!(dec.buffered(), stream.len() - at, "holds the undecoded tail");
    }
}
