//! One task per connection: the handshake, the identity from the certificate, the control
//! stream read into the core, a writer task for what the core sends back, and the media relay.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn::{Connection, VarInt};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::relay::{self, Leg};
use super::renewal::{self, RenewalIssuer};
use super::{PEER_QUEUE, STREAM_TIMEOUT};
use crate::edges::net::close_code;
use crate::edges::net::control::{ControlError, ControlReader, ControlWriter};
use crate::edges::net::tls::{Identity, peer_identity, peer_not_after, peer_serial};
use crate::limits::{Admission, Admit};
use crate::protocol::{ClientMsg, HubMsg, KioskHealth, Role};
use crate::queue::PeerId;

/// What the connection tasks tell the core task.
pub(super) enum CoreCmd {
    /// The database's answer to [`crate::queue::Output::FindCall`] (or to a kiosk's
    /// `FindPlace` that found a call in progress).
    CallFound {
        peer: crate::queue::PeerId,
        call_id: crate::protocol::CallId,
        call: Option<crate::queue::MovedCall>,
    },
    /// What the deployment's database says (lease, takeovers, callers gone elsewhere).
    Cluster(crate::edges::db::cluster::ClusterEvent),
    /// The database's answer to [`crate::queue::Output::FindFreeHub`]: the address of a hub
    /// with advisors free and the callers to send there, or none.
    FreeHub(Option<(String, Vec<crate::queue::Waiting>)>),
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
    /// A certificate was renewed (the new serial) or its renewal refused (why), for the log.
    Renewal {
        role: Role,
        id: String,
        outcome: Result<String, String>,
    },
    /// The browser console signed an advisor in or out, or refused something: for the log.
    Console {
        event: &'static str,
        agent: String,
        call_id: Option<crate::protocol::CallId>,
        detail: String,
    },
    /// The database's answer to [`crate::queue::Output::FindPlace`].
    PlaceFound {
        peer: PeerId,
        call_id: crate::protocol::CallId,
        place: Option<crate::queue::Moved>,
    },
}

/// The core's handle on one connected peer.
pub(super) struct PeerLink {
    pub tx: mpsc::Sender<WriterCmd>,
    pub role: Role,
    /// Where this peer's media goes (set by the core's `Route` outputs).
    pub route: watch::Sender<Option<Leg>>,
    pub conn: PeerConn,
    pub remote: SocketAddr,
    pub id: String,
    /// The serial number of the peer's certificate (what a revocation names).
    pub serial: Option<Vec<u8>>,
    /// The end of the peer's certificate's validity (Unix seconds).
    pub not_after: Option<i64>,
}

/// A peer's connection: QUIC, or a browser console's session (WebSocket and WebRTC).
#[derive(Clone)]
pub(super) enum PeerConn {
    Quic(Connection),
    Browser(super::console::BrowserPeer),
}

impl PeerConn {
    /// Ends the connection with a close code and a reason the peer is told.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            PeerConn::Quic(conn) => conn.close(VarInt::from_u32(code), reason),
            PeerConn::Browser(b) => b.close(code, reason),
        }
    }

    /// Where media for this peer goes.
    pub fn sink(&self) -> relay::LegSink {
        match self {
            PeerConn::Quic(conn) => relay::LegSink::Quic(conn.clone()),
            PeerConn::Browser(b) => relay::LegSink::Browser(b.sink()),
        }
    }
}

/// For a peer's writer task.
pub(super) enum WriterCmd {
    Msg(HubMsg),
    Close(u32, String),
}

/// The admission of new connections, shared by the accept loop, the connections (which say
/// when their handshake and they end) and the core (which reports its counters).
pub(super) type SharedAdmission = Arc<Mutex<Admission<IpAddr>>>;

pub(super) fn lock(admission: &SharedAdmission) -> std::sync::MutexGuard<'_, Admission<IpAddr>> {
    // Every change is one call into the admission core: consistent even after a panic.
    admission.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An accepted connection's place in the admission counts, given back when it is dropped.
struct Admitted {
    admission: SharedAdmission,
    ip: IpAddr,
    handshaking: bool,
}

impl Admitted {
    fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            lock(&self.admission).handshake_done();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.handshake_done();
        lock(&self.admission).closed(&self.ip);
    }
}

/// Logs of refusals at most every [`Throttled::EVERY`], with the number left out: a flood
/// must not become a flood of log lines.
#[derive(Default)]
pub(super) struct Throttled {
    last: Mutex<Option<Instant>>,
    left_out: AtomicU64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(5);

    /// `Some(left out since the last line)` when a line may be logged now.
    pub(super) fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }
}

pub(super) async fn accept_loop(
    endpoint: quinn::Endpoint,
    core: mpsc::Sender<CoreCmd>,
    admission: SharedAdmission,
    renewal: Option<Arc<RenewalIssuer>>,
) {
    let next_peer = Arc::new(AtomicU64::new(1));
    let refusals = Arc::new(Throttled::default());
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let verdict =
            lock(&admission).admit(&remote.ip(), incoming.remote_address_validated(), Instant::now());
        match verdict {
            Ok(Admit::Accept) => {}
            Ok(Admit::Retry) => {
                // Cannot fail: the address is not validated (checked by the admission).
                let _ = incoming.retry();
                continue;
            }
            Err(reason) => {
                // No answer at all: nothing to amplify, and a real client's next Initial
                // (its retransmission) is admitted once the flood's share is used up.
                incoming.ignore();
                if let Some(left_out) = refusals.allow() {
                    warn!(%remote, reason = reason.as_str(), left_out, "new connection refused: flood limit");
                }
                continue;
            }
        }
        let admitted = Admitted { admission: admission.clone(), ip: remote.ip(), handshaking: true };
        let peer = next_peer.fetch_add(1, Ordering::Relaxed);
        let (core, refusals, renewal) = (core.clone(), refusals.clone(), renewal.clone());
        tokio::spawn(
            async move { handle_connection(incoming, peer, core, admitted, &refusals, renewal).await }
                .instrument(info_span!("peer", peer, %remote)),
        );
    }
}

async fn handle_connection(
    incoming: quinn::Incoming,
    peer: PeerId,
    core: mpsc::Sender<CoreCmd>,
    mut admitted: Admitted,
    refusals: &Throttled,
    renewal: Option<Arc<RenewalIssuer>>,
) {
    let remote = incoming.remote_address();
    let identified = identify(incoming, &core, refusals).await;
    admitted.handshake_done();
    let Some((conn, ident)) = identified else { return };
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
    let not_after = peer_not_after(&conn);
    match not_after.map(super::days_left) {
        Some(days) if days < super::EXPIRY_WARNING_DAYS => {
            warn!(role = %ident.role, id = %ident.id, days, "connected; its certificate expires in {days} days")
        }
        _ => info!(role = %ident.role, id = %ident.id, "connected"),
    }
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let (route, route_rx) = watch::channel(None);
    let serial = peer_serial(&conn);
    let link = PeerLink {
        tx: tx.clone(),
        role: ident.role,
        route,
        conn: PeerConn::Quic(conn.clone()),
        remote,
        id: ident.id.clone(),
        serial,
        not_after,
    };
    if core.send(CoreCmd::Connected { peer, role: ident.role, id: ident.id.clone(), link }).await.is_err() {
        return; // hub stopping
    }
    tokio::spawn(write_loop(rx, ControlWriter::new(send), conn.clone()).in_current_span());
    let relay = tokio::spawn(relay::forward(conn.clone(), route_rx).in_current_span());
    let renewals = Renewals { issuer: renewal, asked: 0, tx };
    read_loop(ControlReader::new(recv), &conn, &ident, peer, &core, renewals).await;
    relay.abort();
    let _ = core.send(CoreCmd::Disconnected { peer }).await;
}

/// The handshake, and the peer's role and identity from its certificate.
async fn identify(
    incoming: quinn::Incoming,
    core: &mpsc::Sender<CoreCmd>,
    refusals: &Throttled,
) -> Option<(Connection, Identity)> {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            match refusals.allow() {
                Some(left_out) => {
                    warn!(%remote, reason = %e, left_out, "connection refused during TLS handshake")
                }
                None => debug!(%remote, reason = %e, "connection refused during TLS handshake"),
            }
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
    mut renewals: Renewals,
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
                if let ClientMsg::Renew { csr } = &msg {
                    renewals.answer(ident, csr, core).await;
                    continue;
                }
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

/// A connection's renewal requests, answered on its own writer.
struct Renewals {
    issuer: Option<Arc<RenewalIssuer>>,
    asked: u32,
    tx: mpsc::Sender<WriterCmd>,
}

impl Renewals {
    async fn answer(&mut self, ident: &Identity, csr: &str, core: &mpsc::Sender<CoreCmd>) {
        self.asked += 1;
        let (reply, outcome) = match &self.issuer {
            _ if self.asked > renewal::MAX_PER_CONNECTION => {
                let reason =
                    format!("at most {} renewal requests per connection", renewal::MAX_PER_CONNECTION);
                (HubMsg::RenewRefused { reason: reason.clone() }, Err(reason))
            }
            None => {
                let reason = "this hub does not renew certificates (no [renewal] CA)".to_string();
                (HubMsg::RenewRefused { reason: reason.clone() }, Err(reason))
            }
            Some(issuer) => {
                // Signing is a few hundred microseconds; the register write is one line.
                let (issuer, ident2, csr) = (issuer.clone(), ident.clone(), csr.to_string());
                match tokio::task::spawn_blocking(move || renewal::answer(&issuer, &ident2, &csr)).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        let reason = format!("renewal failed: {e}");
                        (HubMsg::RenewRefused { reason: reason.clone() }, Err(reason))
                    }
                }
            }
        };
        let _ = self.tx.send(WriterCmd::Msg(reply)).await;
        let _ = core.send(CoreCmd::Renewal { role: ident.role, id: ident.id.clone(), outcome }).await;
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
