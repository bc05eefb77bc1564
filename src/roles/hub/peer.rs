//! One task per connection: the handshake, the identity from the certificate, the control
//! stream read into the core, a writer task for what the core sends back, and the media relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{Connection, VarInt};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::relay::{self, Leg};
use super::{PEER_QUEUE, STREAM_TIMEOUT};
use crate::edges::net::close_code;
use crate::edges::net::control::{ControlError, ControlReader, ControlWriter};
use crate::edges::net::tls::{Identity, peer_identity, peer_serial};
use crate::protocol::{ClientMsg, HubMsg, KioskHealth, Role};
use crate::queue::PeerId;

/// What the connection tasks tell the core task.
pub(super) enum CoreCmd {
    Health {
        id: String,
        health: KioskHealth,
    },
    Connected {
        peer: PeerId,
        role: Role,
        id: String,
        link: PeerLink,
    },
    Message {
        peer: PeerId,
        msg: ClientMsg,
    },
    Disconnected {
        peer: PeerId,
    },
    Refused,
    /// The revocation list changed: these certificate serials are revoked.
    Revoked(std::collections::HashSet<Vec<u8>>),
}

/// The core's handle on one connected peer.
pub(super) struct PeerLink {
    pub tx: mpsc::Sender<WriterCmd>,
    pub role: Role,
    /// Where this peer's media goes (set by the core's `Route` outputs).
    pub route: watch::Sender<Option<Leg>>,
    pub conn: Connection,
    pub remote: SocketAddr,
    pub id: String,
    /// The serial number of the peer's certificate (what a revocation names).
    pub serial: Option<Vec<u8>>,
}

/// For a peer's writer task.
pub(super) enum WriterCmd {
    Msg(HubMsg),
    Close(u32, String),
}

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, core: mpsc::Sender<CoreCmd>) {
    let next_peer = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let peer = next_peer.fetch_add(1, Ordering::Relaxed);
        let core = core.clone();
        let remote = incoming.remote_address();
        tokio::spawn(
            async move { handle_connection(incoming, peer, core).await }
                .instrument(info_span!("peer", peer, %remote)),
        );
    }
}

async fn handle_connection(incoming: quinn::Incoming, peer: PeerId, core: mpsc::Sender<CoreCmd>) {
    let remote = incoming.remote_address();
    let Some((conn, ident)) = identify(incoming, &core).await else { return };
    let (send, recv) = match tokio::time::timeout(STREAM_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            return debug!(%remote, id = %ident.id, reason = %e, "connection ended before its control stream");
        }
        Err(_) => {
            warn!(%remote, id = %ident.id, "refused: no control stream within {STREAM_TIMEOUT:?}");
            return conn.close(VarInt::from_u32(close_code::PROTOCOL), b"no control stream");
        }
    };
    info!(role = %ident.role, id = %ident.id, "connected");
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let (route, route_rx) = watch::channel(None);
    let serial = peer_serial(&conn);
    let link =
        PeerLink { tx, role: ident.role, route, conn: conn.clone(), remote, id: ident.id.clone(), serial };
    if core.send(CoreCmd::Connected { peer, role: ident.role, id: ident.id.clone(), link }).await.is_err() {
        return; // hub stopping
    }
    tokio::spawn(write_loop(rx, ControlWriter::new(send), conn.clone()).in_current_span());
    let relay = tokio::spawn(relay::forward(conn.clone(), route_rx).in_current_span());
    read_loop(ControlReader::new(recv), &conn, &ident, peer, &core).await;
    relay.abort();
    let _ = core.send(CoreCmd::Disconnected { peer }).await;
}

/// The handshake, and the peer's role and identity from its certificate.
async fn identify(incoming: quinn::Incoming, core: &mpsc::Sender<CoreCmd>) -> Option<(Connection, Identity)> {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            warn!(%remote, reason = %e, "connection refused during TLS handshake");
            let _ = core.send(CoreCmd::Refused).await;
            return None;
        }
    };
    match peer_identity(&conn) {
        Ok(ident) => Some((conn, ident)),
        Err(e) => {
            warn!(%remote, reason = %e, "connection refused: certificate identity");
            conn.close(VarInt::from_u32(close_code::REFUSED), e.to_string().as_bytes());
            let _ = core.send(CoreCmd::Refused).await;
            None
        }
    }
}

/// Reads the peer's messages into the core until the peer goes, errs, or the hub stops.
async fn read_loop(
    mut reader: ControlReader,
    conn: &Connection,
    ident: &Identity,
    peer: PeerId,
    core: &mpsc::Sender<CoreCmd>,
) {
    let remote = conn.remote_address();
    // The first message (hello) must come quickly; a silent peer holds no slot for long.
    let next = match tokio::time::timeout(STREAM_TIMEOUT, reader.recv::<ClientMsg>()).await {
        Ok(r) => r,
        Err(_) => {
            warn!(%remote, id = %ident.id, "refused: no hello within {STREAM_TIMEOUT:?}");
            return conn.close(VarInt::from_u32(close_code::PROTOCOL), b"no hello");
        }
    };
    let mut next = Some(next);
    loop {
        let msg = match next.take() {
            Some(r) => r,
            None => reader.recv::<ClientMsg>().await,
        };
        match msg {
            Ok(msg) => {
                if let ClientMsg::Health(health) = &msg
                    && ident.role == Role::Kiosk
                {
                    let _ = core.send(CoreCmd::Health { id: ident.id.clone(), health: health.clone() }).await;
                }
                if core.send(CoreCmd::Message { peer, msg }).await.is_err() {
                    return;
                }
            }
            Err(ControlError::Decode(e)) => {
                warn!(%remote, id = %ident.id, reason = %e, "disconnecting peer: protocol error");
                return conn.close(VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
            }
            Err(e) => {
                let reason = conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                return info!(id = %ident.id, %reason, "disconnected");
            }
        }
    }
}

async fn write_loop(mut rx: mpsc::Receiver<WriterCmd>, mut writer: ControlWriter, conn: Connection) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Msg(msg) => {
                if let Err(e) = writer.send(&msg).await {
                    debug!(error = %e, "write failed");
                    return;
                }
            }
            WriterCmd::Close(code, reason) => {
                writer.finish(Duration::from_secs(1)).await;
                conn.close(VarInt::from_u32(code), reason.as_bytes());
                return;
            }
        }
    }
    writer.finish(Duration::from_secs(1)).await;
}
