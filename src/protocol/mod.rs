//! The kioskd wire protocol: control messages and their framing.
//!
//! Pure and bounded: nothing here touches a socket or a clock, so the decoder can be
//! property-tested and fuzzed on arbitrary bytes. See `docs/protocol.md`.

pub mod codec;
pub mod messages;
pub mod renewal;
pub mod text;

pub use codec::{DecodeError, EncodeError, FrameDecoder, decode_frame, encode_frame};
pub use messages::*;

/// ALPN of protocol version 1. A peer offering anything else fails the TLS handshake.
pub const ALPN: &[u8] = b"kioskd/1";

/// Version byte at the start of every control frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest control message body in bytes (16 KiB). Control messages are small; the largest is a
/// text message of [`MAX_TEXT_BYTES`] plus its envelope. A frame declaring more is refused before
/// any allocation.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Largest text message body in bytes of UTF-8 (4 KiB, about a screenful).
pub const MAX_TEXT_BYTES: usize = 4 * 1024;

/// Largest certificate request (PEM) a party may send for renewal; a P-256 request is about
/// 500 bytes.
pub const MAX_CSR_BYTES: usize = 4 * 1024;

/// Largest renewed chain (PEM: the new certificate and the renewal CA's) the hub sends back.
pub const MAX_CHAIN_BYTES: usize = 8 * 1024;

/// Largest identity string (certificate common name) in bytes.
pub const MAX_ID_BYTES: usize = 128;
