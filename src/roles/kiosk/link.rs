//! The kiosk's link to the hub: connects, reconnects with back-off and jitter, races
//! handshakes while a call waits to be resumed, and forwards control messages both ways.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::KioskOptions;
use crate::call::backoff::Backoff;
use crate::edges::net::client::{self, HubTarget};
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

/// Where the next connection goes after a session ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The hub of the last session first (as before).
    Same,
    /// The hub went silent: the next one first.
    Another,
    /// The hub sent the kiosk to another (`move_to`): that one, at once.
    MoveTo(String),
}

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
    let mut endpoints = client::Endpoints::new(target.client.clone());
    // The hub to try first: the one of the last session (or the first of the list).
    let mut preferred = 0usize;
    // When the link last went down (or the first attempt began).
    let mut down_since = Instant::now();
    // The hub a `move_to` named, for the next attempt.
    let mut move_to: Option<String> = None;
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
            endpoints.set_client_config(config.clone());
            target.client = config;
        }
        let moving = move_to.take();
        let attempt = async {
            let mut addrs = client::resolve_all(&target.addresses).await?;
            if let Some(to) = &moving {
                // The hub named is tried first (it need not be in the list: like every hub, it
                // is authenticated by its certificate).
                match client::resolve(to).await {
                    Ok(addr) => match addrs.iter().position(|a| *a == addr) {
                        Some(i) => preferred = i,
                        None => {
                            addrs.insert(0, addr);
                            preferred = 0;
                        }
                    },
                    Err(e) => warn!(hub = %to, error = %e, "the hub the kiosk was sent to does not resolve"),
                }
            }
            let race = if resume {
                client::Race { stagger: RESUME_ATTEMPT, at_once: RESUME_RACE, total: None }
            } else {
                // Each hub once, the next one started if the last has not answered within
                // FAILOVER_STAGGER (a hub that is gone never answers: its handshake would
                // wait out the idle timeout).
                client::Race {
                    stagger: client::FAILOVER_STAGGER,
                    at_once: addrs.len(),
                    total: Some(addrs.len()),
                }
            };
            let (conn, i) =
                client::race_handshakes(&mut endpoints, &addrs, preferred, &target.server_name, race).await?;
            if i != preferred % addrs.len() {
                info!(hub = %addrs[i], "connected to another hub of the deployment");
            }
            preferred = i;
            client::welcome(conn, addrs[i], Role::Kiosk).await
        };
        let reason = match attempt.await {
            Ok(session) => {
                backoff.reset();
                let several = target.silence_limit();
                let (reason, next) =
                    session_loop(session, &events, &mut stop, opts.renewal.as_ref(), several).await;
                down_since = Instant::now();
                match next {
                    Next::Same => {}
                    // The hub went silent: the next one is tried first.
                    Next::Another => preferred += 1,
                    Next::MoveTo(to) => move_to = Some(to),
                }
                reason
            }
            Err(e) => {
                // The next attempt starts with the next hub.
                preferred += 1;
                e.to_string()
            }
        };
        if *stop.borrow() {
            return;
        }
        if events.send(LinkEvent::Down(reason.clone())).await.is_err() {
            return;
        }
        if move_to.is_some() {
            info!(%reason, "moving to another hub of the deployment");
            continue;
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

/// Runs one welcomed session; returns why it ended, and where to connect next.
async fn session_loop(
    session: client::Session,
    events: &mpsc::Sender<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
    renewal: Option<&renew::SharedRenewer>,
    silence_limit: Option<Duration>,
) -> (String, Next) {
    let reason = session_msgs(session, events, stop, renewal, silence_limit).await;
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
    silence_limit: Option<Duration>,
) -> (String, Next) {
    let client::Session { conn, mut writer, mut reader, id, remote } = session;
    let (out_tx, mut out_rx) = mpsc::channel::<ClientMsg>(OUT_QUEUE);
    // The renewal's requests go through the kiosk's queue too, without keeping it open: the
    // writer closes the connection once the kiosk drops its sender.
    let renew_tx = out_tx.downgrade();
    if events.send(LinkEvent::Up { id, out: out_tx, conn: conn.clone() }).await.is_err() {
        return ("kiosk stopping".into(), Next::Same);
    }
    let _ = remote;
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
    let silent = async {
        if let Some(limit) = silence_limit {
            client::silence(&conn, limit).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(silent);
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
                    if let HubMsg::MoveTo { call_id, address } = msg {
                        info!(call_id, hub = %address, "the hub sends this waiting call to another hub");
                        conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"moving to another hub");
                        return (format!("sent to the hub at {address}"), Next::MoveTo(address));
                    }
                    if events.send(LinkEvent::Msg(msg)).await.is_err() {
                        return ("kiosk stopping".into(), Next::Same);
                    }
                }
                Err(ControlError::Decode(e)) => {
                    conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
                    return (format!("hub sent an invalid message: {e}"), Next::Same);
                }
                Err(e) => {
                    let reason = conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                    return (reason, Next::Same);
                }
            },
            res = &mut writer_task => {
                return (res.unwrap_or_else(|e| e.to_string()), Next::Same);
            }
            () = &mut silent => {
                conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"hub silent");
                let reason = format!("nothing heard from the hub for {:?}", silence_limit.unwrap_or_default());
                return (reason, Next::Another);
            }
            () = tokio::time::sleep(renew_wake()) => {}
            _ = stop.changed() => {
                // Let the writer flush the last messages (a hang-up) before closing.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
                conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"kiosk stopping");
                return ("kiosk stopping".into(), Next::Same);
            }
        }
    }
}
