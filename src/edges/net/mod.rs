//! The network edge: certificates, TLS configurations, QUIC endpoints and the control stream.

pub mod certs;
pub mod client;
pub mod control;
pub mod frame;
pub mod renew;
pub mod tls;

/// QUIC application close codes. The reason text goes with them.
pub mod close_code {
    /// Normal end (shutdown, hang-up of the session).
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (garbage, wrong order, oversized message).
    pub const PROTOCOL: u32 = 1;
    /// The peer's certificate does not allow what it tried (role).
    pub const REFUSED: u32 = 2;
    /// A newer connection with the same certificate took over.
    pub const REPLACED: u32 = 3;
    /// The peer could not keep up with its messages.
    pub const TOO_SLOW: u32 = 4;
    /// The process is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// The peer's certificate was revoked (`kioskd certs revoke`).
    pub const REVOKED: u32 = 6;
}
