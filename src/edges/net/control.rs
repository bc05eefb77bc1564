//! The control stream over QUIC: length-prefixed frames on one bidirectional stream.

use quinn::{RecvStream, SendStream};

use crate::protocol::codec::{DecodeError, EncodeError, FrameDecoder, Message, encode_frame};

/// Why the control stream stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("peer sent an invalid message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("reading the control stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing the control stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the peer closed the control stream")]
    Closed,
}

/// Reads whole messages from the control stream.
pub struct ControlReader {
    recv: RecvStream,
    decoder: FrameDecoder,
}

impl ControlReader {
    pub fn new(recv: RecvStream) -> Self {
        Self { recv, decoder: FrameDecoder::new() }
    }

    /// The next message; `Err(Closed)` at a clean end of stream.
    pub async fn recv<M: Message>(&mut self) -> Result<M, ControlError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(msg) = self.decoder.poll_message::<M>()? {
                return Ok(msg);
            }
            match self.recv.read(&mut chunk).await? {
                Some(n) => self.decoder.handle_bytes(&chunk[..n]),
                None => return Err(ControlError::Closed),
            }
        }
    }
}

/// Writes messages to the control stream.
pub struct ControlWriter {
    send: SendStream,
    buf: Vec<u8>,
}

impl ControlWriter {
    pub fn new(send: SendStream) -> Self {
        Self { send, buf: Vec::with_capacity(512) }
    }

    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), ControlError> {
        self.buf.clear();
        encode_frame(msg, &mut self.buf)?;
        self.send.write_all(&self.buf).await?;
        Ok(())
    }

    /// Ends the stream and waits (bounded) until the peer has read everything, so that a last
    /// message (an error before a close) arrives.
    pub async fn finish(mut self, wait: std::time::Duration) {
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(wait, self.send.stopped()).await;
        }
    }
}
