//! One media frame, one unidirectional stream, delivered by a deadline or abandoned.
//!
//! QUIC retransmits what is lost for as long as a stream lives, which for live video is
//! worse than useless: after a 3 s outage, the frames of the outage still waited to be
//! retransmitted ahead of fresh ones on a congestion window the outage had shrunk, and the
//! picture came back seconds after the network. So a frame's stream lives until the peer
//! acknowledges all of it or its deadline passes; then it is reset, which also stops every
//! retransmission of it. A frame is never finished early and left to be retransmitted late.

use quinn::{Connection, VarInt};
use tokio::time::{Instant, timeout_at};

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSent {
    /// The peer acknowledged all of it in time.
    Delivered,
    /// Handed to QUIC whole but not acknowledged in time (or the peer stopped reading it): reset.
    Late,
    /// Not even handed to QUIC in time (no stream, or flow control): reset.
    NotSent,
}

/// Sends `frame` on a new unidirectional stream of `conn`; a keyframe goes ahead of other
/// frames waiting to be sent.
pub async fn send_frame(conn: &Connection, frame: &[u8], keyframe: bool, deadline: Instant) -> FrameSent {
    let Ok(Ok(mut s)) = timeout_at(deadline, conn.open_uni()).await else {
        return FrameSent::NotSent;
    };
    let _ = s.set_priority(if keyframe { 1 } else { 0 });
    if !matches!(timeout_at(deadline, s.write_all(frame)).await, Ok(Ok(()))) {
        // Reset, never finish: a finished stream would hand the receiver a truncated frame.
        let _ = s.reset(VarInt::from_u32(0));
        return FrameSent::NotSent;
    }
    if s.finish().is_err() {
        return FrameSent::NotSent;
    }
    match timeout_at(deadline, s.stopped()).await {
        Ok(Ok(None)) => FrameSent::Delivered,
        // Stopped by the peer, the connection gone, or too late: no more retransmissions.
        _ => {
            let _ = s.reset(VarInt::from_u32(0));
            FrameSent::Late
        }
    }
}
