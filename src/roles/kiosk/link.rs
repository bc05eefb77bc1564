//! The kiosk's link to the hub: connects, reconnects with back-off and jitter, races
//! handshakes while a call waits to be resumed, and forwards control messages both ways.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::warn;

use super::KioskOptions;
use crate::call::backoff::Backoff;
use crate::edges::net::client::{self, ClientError, HubTarget};
use crate::edges::net::control::ControlError;
use crate::edges::net::{close_code, renew};
use crate::protocol::{ClientMsg, HubMsg, Role};

/// Messages to the hub waiting for the link (control messages are few and small).
const OUT_QUEUE: usize = 64;

/// What the link tells the kiosk's core task.
pub(super) enum LinkEvent {
    Up { id: String, out: mpsc::Sender<ClientMsg>, conn: quinn::Connection },
    Msg(HubMsg),
    Down(String),
}

/// While a call waits to be resumed, a fresh handshake is started about this often (0.8–1.2×)
/// while earlier ones go on, and the first to complete is taken. A QUIC handshake sent into a
/// dead network repeats its first packet after 1 s, then 2 s, 4 s…: after a long outage, the
/// first packet to reach the hub could come seconds after the network did. Earlier attempts
/// are not given up, so that a slow path (a long round trip, loss) still completes one.
pub const RESUME_ATTEMPT: Duration = Duration::from_millis(1200);
/// Handshakes in progress at once while resuming.
pub const RESUME_RACE: usize = 4;
/// While a call waits to be resumed, attempts follow each other at most this far apart
/// (0.5–1× it, at random).
pub const RESUME_RETRY_MAX: Duration = Duration::from_millis(300);
/// Fast retries last this long after the link went down; then the usual back-off (the hub
/// holds a call for `kiosk_grace_s` after noticing the kiosk gone: 10 + 6 s by default).
pub const RESUME_FAST_FOR: Duration = Duration::from_secs(60);

/// Keeps a session with the hub: connects, reconnects with back-off and jitter, forwards
/// messages both ways. While `resuming`, it retries fast (a call is held at the hub for
/// its grace period, and a customer is waiting).
pub(super) async fn link_task(
    mut target: HubTarget,
    opts: KioskOptions,
    events: mpsc::Sender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
    resuming: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(opts.reconnect_min, opts.reconnect_max);
    let mut endpoint: Option<(bool, quinn::Endpoint)> = None;
    // When the link last went down (or the first attempt began).
    let mut down_since = Instant::now();
    let fast = |resuming: &watch::Receiver<bool>, since: Instant| {
        *resuming.borrow() && since.elapsed() < RESUME_FAST_FOR
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let resume = fast(&resuming, down_since);
        // A renewed certificate is used from the next connection on.
        if let Some(config) = opts.renewal.as_ref().and_then(|r| renew::lock(r).take_client_config()) {
            if let Some((_, ep)) = &mut endpoint {
                ep.set_default_client_config(config.clone());
            }
            target.client = config;
        }
        let attempt = async {
            let addr = client::resolve(&target.address).await?;
            let ipv6 = addr.is_ipv6();
            let ep = match &endpoint {
                Some((v6, ep)) if *v6 == ipv6 => ep.clone(),
                _ => {
                    let ep = client::endpoint(target.client.clone(), ipv6)
                        .map_err(|e| ClientError::Connect(addr, e.to_string()))?;
                    endpoint = Some((ipv6, ep.clone()));
                    ep
                }
            };
            let conn = if resume {
                race_handshakes(&ep, addr, &target.server_name).await?
            } else {
                client::handshake(&ep, addr, &target.server_name).await?
            };
            client::welcome(conn, addr, Role::Kiosk).await
        };
        let reason = match attempt.await {
            Ok(session) => {
                backoff.reset();
                let reason = session_loop(session, &events, &mut stop, opts.renewal.as_ref()).await;
                down_since = Instant::now();
                reason
            }
            Err(e) => e.to_string(),
        };
        if *stop.borrow() {
            return;
        }
        if events.send(LinkEvent::Down(reason.clone())).await.is_err() {
            return;
        }
        let mut delay = backoff.next_delay(rand::random::<f64>());
        if fast(&resuming, down_since) {
            delay = delay.min(RESUME_RETRY_MAX.mul_f64(0.5 + rand::random::<f64>() / 2.0));
        }
        warn!(%reason, retry_in_ms = delay.as_millis() as u64, "hub unreachable");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Handshakes with the hub, starting a fresh attempt every [`RESUME_ATTEMPT`] (with jitter,
/// so that kiosks resuming together spread out) while the earlier ones go on, at most
/// [`RESUME_RACE`] at once. The first to complete is taken; the others are dropped (closed
/// before any hello, so the hub never sees two sessions of this kiosk).
async fn race_handshakes(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection, ClientError> {
    let mut attempts = tokio::task::JoinSet::new();
    let start = |attempts: &mut tokio::task::JoinSet<_>| {
        let (ep, name) = (ep.clone(), server_name.to_string());
        attempts.spawn(async move { client::handshake(&ep, addr, &name).await });
        Instant::now() + RESUME_ATTEMPT.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    };
    let mut next = start(&mut attempts);
    let mut last_error = None;
    loop {
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(conn))) => return Ok(conn),
                Some(Ok(Err(e))) => last_error = Some(e),
                Some(Err(e)) => last_error = Some(ClientError::Connect(addr, e.to_string())),
                None => {
                    return Err(last_error
                        .unwrap_or_else(|| ClientError::Connect(addr, "no attempt made".into())));
                }
            },
            () = tokio::time::sleep_until(next), if attempts.len() < RESUME_RACE => {
                next = start(&mut attempts);
            }
        }
    }
}

/// Runs one welcomed session; returns why it ended.
async fn session_loop(
    session: client::Session,
    events: &mpsc::Sender<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
    renewal: Option<&renew::SharedRenewer>,
) -> String {
    let reason = session_msgs(session, events, stop, renewal).await;
    if let Some(r) = renewal {
        renew::lock(r).connection_lost();
    }
    reason
}

async fn session_msgs(
    session: client::Session,
    events: &mpsc::Sender<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
    renewal: Option<&renew::SharedRenewer>,
) -> String {
    let client::Session { conn, mut writer, mut reader, id, remote } = session;
    let (out_tx, mut out_rx) = mpsc::channel::<ClientMsg>(OUT_QUEUE);
    // The renewal's requests go through the kiosk's queue too, without keeping it open: the
    // writer closes the connection once the kiosk drops its sender.
    let renew_tx = out_tx.downgrade();
    if events.send(LinkEvent::Up { id, out: out_tx, conn: conn.clone() }).await.is_err() {
        return "kiosk stopping".into();
    }
    let _: SocketAddr = remote;
    let writer_conn = conn.clone();
    let mut writer_task = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if let Err(e) = writer.send(&msg).await {
                return e.to_string();
            }
        }
        // The kiosk dropped its sender: flush and close politely.
        writer.finish(Duration::from_secs(1)).await;
        writer_conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"kiosk stopping");
        "kiosk stopping".to_string()
    });
    let renew_wake = || renewal.map_or(Duration::from_secs(86_400), |r| renew::lock(r).wake_in());
    loop {
        if let Some(tx) = renew_tx.upgrade()
            && let Some(req) = renewal.and_then(|r| renew::lock(r).poll())
        {
            let _ = tx.try_send(req);
        }
        tokio::select! {
            msg = reader.recv::<HubMsg>() => match msg {
                Ok(msg) => {
                    if renewal.is_some_and(|r| renew::lock(r).handle(&msg)) {
                        continue;
                    }
                    if let HubMsg::Error { message, fatal } = &msg {
                        warn!(%message, fatal, "hub reports an error");
                    }
                    if events.send(LinkEvent::Msg(msg)).await.is_err() {
                        return "kiosk stopping".into();
                    }
                }
                Err(ControlError::Decode(e)) => {
                    conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
                    return format!("hub sent an invalid message: {e}");
                }
                Err(e) => {
                    return conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                }
            },
            res = &mut writer_task => {
                return res.unwrap_or_else(|e| e.to_string());
            }
            () = tokio::time::sleep(renew_wake()) => {}
            _ = stop.changed() => {
                // Let the writer flush the last messages (a hang-up) before closing.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
                conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"kiosk stopping");
                return "kiosk stopping".into();
            }
        }
    }
}
