//! Framing of control messages: `[version: u8][length: u32 big-endian][JSON body]`.
//!
//! The decoder checks the version and the declared length before it reads or allocates
//! anything, so a hostile length costs nothing. "Need more bytes" is `Ok(None)`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::messages::{ClientMsg, HubMsg};
use super::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

/// Bytes before the body: version and length.
pub const HEADER_BYTES: usize = 5;

/// Why a frame could not be decoded. Every variant closes the peer's connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The declared body length is over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLong(usize),
    /// The body is not valid JSON for any known message, or names an unknown message type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded but breaks a bound (length, characters).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Why a message could not be encoded (only when a local caller built an oversized message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLong(usize),
    #[error("cannot serialize message: {0}")]
    Json(#[from] serde_json::Error),
}

/// A message that can travel in a control frame.
pub trait Message: Serialize + DeserializeOwned {
    /// Checks the bounds that the type system cannot express.
    fn check(&self) -> Result<(), String>;
}

impl Message for ClientMsg {
    fn check(&self) -> Result<(), String> {
        self.validate()
    }
}

impl Message for HubMsg {
    fn check(&self) -> Result<(), String> {
        self.validate()
    }
}

/// Appends one frame holding `msg` to `out`.
pub fn encode_frame<M: Message>(msg: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLong(body.len()));
    }
    out.push(PROTOCOL_VERSION);
    // Cannot truncate: checked against MAX_MESSAGE_BYTES (16 KiB) above.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes the first frame in `buf`: `Ok(Some((msg, consumed)))`, or `Ok(None)` when `buf` holds
/// only part of a frame.
pub fn decode_frame<M: Message>(buf: &[u8]) -> Result<Option<(M, usize)>, DecodeError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let Some(len_bytes) = buf.get(1..HEADER_BYTES) else {
        return Ok(None);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(len_bytes);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLong(len));
    }
    let Some(body) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Ok(None);
    };
    let msg: M = serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    msg.check().map_err(DecodeError::Invalid)?;
    Ok(Some((msg, HEADER_BYTES + len)))
}

/// Accumulates bytes from a stream and yields whole messages.
///
/// Holds at most one partial frame: at most `HEADER_BYTES + MAX_MESSAGE_BYTES` bytes plus the
/// chunk being fed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one is buffered. Call until `Ok(None)` after each
    /// `handle_bytes`. After an error the stream is unusable and must be closed.
    pub fn poll_message<M: Message>(&mut self) -> Result<Option<M>, DecodeError> {
        match decode_frame::<M>(&self.buf)? {
            Some((msg, used)) => {
                self.buf.drain(..used);
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::messages::{Presence, Role};

    fn frame(msg: &ClientMsg) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_every_client_kind() {
        let msgs = [
            ClientMsg::Hello { role: Role::Agent, software: "kioskd 0.1".into() },
            ClientMsg::RequestAgent { resume: Some(7), consent: false },
            ClientMsg::RequestAgent { resume: None, consent: false },
            ClientMsg::HangUp { call_id: 3 },
            ClientMsg::SetPresence { presence: Presence::Close },
            ClientMsg::Accept { call_id: 1 },
            ClientMsg::Decline { call_id: 1 },
            ClientMsg::Text { call_id: 1, id: 1, body: "héllo\nyou 你好".into() },
            ClientMsg::TextAck { call_id: 1, id: 1 },
            ClientMsg::RequestAgent { resume: None, consent: true },
            ClientMsg::KeyframeRequest { call_id: 2 },
            ClientMsg::RateHint { call_id: 2, bitrate_bps: 420_000 },
            ClientMsg::LossReport { call_id: 2, audio_loss_pct: 18 },
        ];
        for msg in msgs {
            let bytes = frame(&msg);
            let (back, used) = decode_frame::<ClientMsg>(&bytes).unwrap().unwrap();
            assert_eq!(back, msg);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn partial_frames_need_more() {
        let bytes = frame(&ClientMsg::Accept { call_id: 42 });
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame::<ClientMsg>(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn stream_decoder_splits_and_joins() {
        let mut all = frame(&ClientMsg::Accept { call_id: 1 });
        all.extend(frame(&ClientMsg::HangUp { call_id: 2 }));
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &all {
            dec.handle_bytes(std::slice::from_ref(b));
            while let Some(m) = dec.poll_message::<ClientMsg>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [ClientMsg::Accept { call_id: 1 }, ClientMsg::HangUp { call_id: 2 }]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversized_length_refused_before_body_arrives() {
        let mut bytes = vec![PROTOCOL_VERSION];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_frame::<ClientMsg>(&bytes), Err(DecodeError::TooLong(u32::MAX as usize)));
    }

    #[test]
    fn wrong_version_refused() {
        assert_eq!(decode_frame::<ClientMsg>(&[9, 0, 0, 0, 2]), Err(DecodeError::Version(9)));
    }

    #[test]
    fn unknown_fields_tolerated_unknown_kinds_refused() {
        let body = br#"{"type":"accept","call_id":5,"future_field":[1,2]}"#;
        let mut bytes = vec![PROTOCOL_VERSION];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        let (msg, _) = decode_frame::<ClientMsg>(&bytes).unwrap().unwrap();
        assert_eq!(msg, ClientMsg::Accept { call_id: 5 });

        let body = br#"{"type":"launch_missiles"}"#;
        let mut bytes = vec![PROTOCOL_VERSION];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        assert!(matches!(decode_frame::<ClientMsg>(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn text_bounds_enforced() {
        let long = "x".repeat(crate::protocol::MAX_TEXT_BYTES + 1);
        let msg = ClientMsg::Text { call_id: 1, id: 1, body: long };
        let bytes = frame(&msg);
        assert!(matches!(decode_frame::<ClientMsg>(&bytes), Err(DecodeError::Invalid(_))));
        let msg = ClientMsg::Text { call_id: 1, id: 1, body: "bell\u{7}".into() };
        assert!(matches!(decode_frame::<ClientMsg>(&frame(&msg)), Err(DecodeError::Invalid(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any bytes: no panic; a decoded frame never claims more than it was given.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((_, used))) = decode_frame::<ClientMsg>(&bytes) {
                prop_assert!(used <= bytes.len());
            }
            let _ = decode_frame::<HubMsg>(&bytes);
        }

        /// A valid header followed by arbitrary JSON-ish text never panics.
        #[test]
        fn decoder_never_panics_on_bodies(body in "[ -~]{0,200}") {
            let mut bytes = vec![PROTOCOL_VERSION];
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(body.as_bytes());
            let _ = decode_frame::<ClientMsg>(&bytes);
            let _ = decode_frame::<HubMsg>(&bytes);
        }

        /// Round trip of text messages with arbitrary valid bodies, split at any point.
        #[test]
        fn text_round_trip(body in "[^\\p{Cc}]{1,300}", id in 1u64.., call_id in any::<u64>(), cut in 0usize..400) {
            let msg = ClientMsg::Text { call_id, id, body };
            let bytes = frame(&msg);
            let cut = cut.min(bytes.len());
            let mut dec = FrameDecoder::new();
            dec.handle_bytes(&bytes[..cut]);
            let first = dec.poll_message::<ClientMsg>().unwrap();
            dec.handle_bytes(&bytes[cut..]);
            let msg_back = match first { Some(m) => m, None => dec.poll_message::<ClientMsg>().unwrap().unwrap() };
            prop_assert_eq!(msg_back, msg);
        }
    }
}
