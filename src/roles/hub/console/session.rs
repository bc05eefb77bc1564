//! One signed-in page: its WebSocket is an agent peer of the core.
//!
//! The page's messages are checked ([`BrowserMsg`]) and go to the core as a QUIC agent's
//! would; the core's messages go to the page as JSON. A second page or console of the same
//! agent takes over (the core replaces the older peer, which is closed with 4002); a session
//! that expires closes with 4001; a page that answers no ping for [`SILENT`] is gone, and its
//! call ends as for a lost agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tracing::{debug, info, warn};

use super::super::PEER_QUEUE;
use super::super::peer::{CoreCmd, PeerConn, PeerLink, WriterCmd};
use super::rtc::RtcCmd;
use super::{BrowserPeer, Closing, Shared};
use crate::console::web::{BrowserMsg, MAX_WS_MESSAGE, MediaWatch};
use crate::protocol::{ClientMsg, HubMsg, Role};

/// WebSocket close codes the page acts on.
pub const CLOSE_EXPIRED: u16 = 4001;
pub const CLOSE_TAKEN_OVER: u16 = 4002;
/// A ping this often; a page silent for [`SILENT`] is gone.
const PING_EVERY: Duration = Duration::from_secs(2);
pub const SILENT: Duration = Duration::from_secs(6);
/// Bad messages tolerated before the page is disconnected.
const MAX_BAD: u32 = 20;

/// Who the page is: its agent, its session, and the certificate that signed it in, if one did
/// (a page closes when that certificate is revoked, as a QUIC agent's connection does).
pub(super) struct Who {
    pub agent: String,
    pub token: String,
    pub serial: Option<Vec<u8>>,
    pub expires: Instant,
    pub remote: SocketAddr,
}

pub(super) async fn run(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    who: Who,
    shared: Arc<Shared>,
) {
    let Who { agent, token, serial, expires, remote } = who;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_WS_MESSAGE);
    config.max_frame_size = Some(MAX_WS_MESSAGE);
    let mut ws = WebSocketStream::from_raw_socket(stream, WsRole::Server, Some(config)).await;
    let peer = shared.next_peer.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(PEER_QUEUE);
    let (route, route_rx) = watch::channel(None);
    let closing = Arc::new(Closing::default());
    let link = PeerLink {
        tx,
        role: Role::Agent,
        route,
        conn: PeerConn::Browser(BrowserPeer { peer, closing: closing.clone(), rtc: shared.rtc.clone() }),
        remote,
        id: agent.clone(),
        serial,
        not_after: None,
    };
    if shared
        .core
        .send(CoreCmd::Connected { peer, role: Role::Agent, id: agent.clone(), link })
        .await
        .is_err()
    {
        return;
    }
    info!(peer, agent, %remote, "browser console connected");
    // The page is an agent: it says hello as a QUIC agent does, and the core welcomes it.
    let hello = ClientMsg::Hello { role: Role::Agent, software: "kioskd browser console".into() };
    if shared.core.send(CoreCmd::Message { peer, msg: hello }).await.is_err() {
        return;
    }
    let mut open = true;
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut last_heard = Instant::now();
    let mut bad = 0u32;
    let expiry = tokio::time::sleep_until(tokio::time::Instant::from_std(expires));
    tokio::pin!(expiry);
    let mut close: Option<(u16, String)> = None;
    // How the page went: it closed, went silent, or its connection broke off.
    let (mut goodbye, mut silent) = (false, false);
    let mut status = shared.status.clone();
    let mut shown_queue = None;
    let first = queue_message(&status.borrow_and_update(), &mut shown_queue);
    open = open && send_queue(&mut ws, first).await;
    // The call's media from the browser is watched: a call without it is ended.
    let mut calls = route_rx.clone();
    let mut media = MediaWatch::new(shared.media_grace);
    while open {
        let media_due = media.deadline();
        tokio::select! {
            Ok(()) = calls.changed() => {
                let call = calls.borrow_and_update().as_ref().map(|leg| leg.call_id);
                media.on_call(call, Instant::now());
            }
            () = sleep_until(media_due) => {
                open = watch_media(&mut ws, &shared, peer, &agent, &mut media).await;
            }
            Ok(()) = status.changed() => {
                // Read in place (the hub's status is not copied per page): a message only
                // when the queue changed.
                let changed = queue_message(&status.borrow_and_update(), &mut shown_queue);
                open = send_queue(&mut ws, changed).await;
            }
            incoming = ws.next() => {
                let Some(Ok(frame)) = incoming else { break };
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) => match BrowserMsg::parse(text.as_str()) {
                        Ok(msg) => open = on_message(&mut ws, &shared, peer, msg, &route_rx).await,
                        Err(e) => {
                            bad += 1;
                            warn!(peer, agent, error = %e, "browser console: bad message");
                            if bad > MAX_BAD {
                                close = Some((1008, "too many bad messages".into()));
                                break;
                            }
                            let err = HubMsg::Error { message: e, fatal: false };
                            open = send_json(&mut ws, &err).await;
                        }
                    },
                    Message::Binary(_) => {
                        close = Some((1003, "binary messages are not accepted".into()));
                        break;
                    }
                    Message::Close(_) => {
                        goodbye = true;
                        break;
                    }
                    _ => {}
                }
            }
            cmd = rx.recv() => match cmd {
                Some(WriterCmd::Msg(msg)) => {
                    match &msg {
                        HubMsg::KeyframeRequest { .. } => {
                            let _ = shared.rtc.try_send(RtcCmd::KeyframeRequest { peer });
                        }
                        HubMsg::CallEnded { .. } => {
                            let _ = shared.rtc.send(RtcCmd::Close { peer }).await;
                        }
                        _ => {}
                    }
                    open = send_json(&mut ws, &msg).await;
                }
                Some(WriterCmd::Close(code, reason)) => {
                    close = Some((close_code(code, &reason), reason));
                    break;
                }
                None => break,
            },
            _ = closing.notify.notified() => {
                let reason = closing.reason.lock().ok().and_then(|r| r.clone());
                close = reason.map(|(code, reason)| (close_code(code, &reason), reason));
                break;
            }
            _ = &mut expiry => {
                close = Some((CLOSE_EXPIRED, "session expired".into()));
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENT {
                    warn!(peer, agent, "browser console silent for {SILENT:?}: gone");
                    silent = true;
                    break;
                }
                open = ws.send(Message::Ping(Vec::new().into())).await.is_ok();
            }
        }
    }
    // The hub's own closes (take-over, expiry, revocation) are logged where they are decided.
    let lost = match (close.is_some(), goodbye, silent) {
        (true, ..) => None,
        (false, true, _) => Some("the page was closed".to_string()),
        (false, false, true) => Some(format!("the page answered nothing for {} s", SILENT.as_secs())),
        (false, false, false) => Some("the page's connection broke off".to_string()),
    };
    if let Some((code, reason)) = close {
        debug!(peer, code, %reason, "browser console closed");
        if code == CLOSE_EXPIRED {
            shared.sessions().remove(&token);
        }
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
    }
    let _ = shared.rtc.send(RtcCmd::Close { peer }).await;
    // A page gone in a call: the event log says how before the call's end (the core ends it as
    // for any lost agent).
    let in_call = route_rx.borrow().as_ref().map(|leg| leg.call_id);
    if let (Some(detail), Some(call_id)) = (lost, in_call) {
        let event =
            CoreCmd::Console { event: "browser_lost", agent: agent.clone(), call_id: Some(call_id), detail };
        let _ = shared.core.send(event).await;
    }
    let _ = shared.core.send(CoreCmd::Disconnected { peer }).await;
    info!(peer, agent, "browser console disconnected");
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The call's media watch is due: the WebRTC task says how far the browser's media got, and
/// a call without it is ended, with a line in the event log and a word to the page.
async fn watch_media<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Arc<Shared>,
    peer: crate::queue::PeerId,
    agent: &str,
    media: &mut MediaWatch,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (reply, probe) = oneshot::channel();
    if shared.rtc.send(RtcCmd::Probe { peer, reply }).await.is_err() {
        return false;
    }
    let probe = probe.await.unwrap_or_default();
    let Some((call_id, why)) = media.check(Instant::now(), probe) else { return true };
    let grace = shared.media_grace.as_secs();
    warn!(peer, agent, call_id, frames = probe.frames, "browser console: {why} within {grace} s: call ended");
    let detail = format!("{why} within {grace} s; the call was ended");
    let event = CoreCmd::Console {
        event: "browser_media_missing",
        agent: agent.to_string(),
        call_id: Some(call_id),
        detail,
    };
    let hang_up = CoreCmd::Message { peer, msg: ClientMsg::HangUp { call_id } };
    if shared.core.send(event).await.is_err() || shared.core.send(hang_up).await.is_err() {
        return false;
    }
    let _ = shared.rtc.send(RtcCmd::Close { peer }).await;
    let message = format!("The call was ended: {why} within {grace} s. Check the camera and microphone.");
    send_json(ws, &HubMsg::Error { message, fatal: false }).await
}

/// The page is told why it is closed: taken over by another page or console, or else.
fn close_code(code: u32, reason: &str) -> u16 {
    if code == crate::edges::net::close_code::REFUSED && reason.contains("replaced") {
        CLOSE_TAKEN_OVER
    } else {
        1008
    }
}

async fn on_message<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Arc<Shared>,
    peer: crate::queue::PeerId,
    msg: BrowserMsg,
    route: &watch::Receiver<Option<super::super::relay::Leg>>,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match msg {
        BrowserMsg::Client(msg) => {
            let ended = matches!(msg, ClientMsg::HangUp { .. });
            if shared.core.send(CoreCmd::Message { peer, msg }).await.is_err() {
                return false;
            }
            if ended {
                let _ = shared.rtc.send(RtcCmd::Close { peer }).await;
            }
            true
        }
        BrowserMsg::SdpOffer(sdp) => {
            let (reply, answer) = oneshot::channel();
            let cmd = RtcCmd::Offer { peer, sdp, route: route.clone(), reply };
            if shared.rtc.send(cmd).await.is_err() {
                return false;
            }
            let out = match answer.await {
                Ok(Ok(sdp)) => serde_json::json!({ "type": "sdp_answer", "sdp": sdp }),
                Ok(Err(e)) => {
                    warn!(peer, error = %e, "browser console: WebRTC offer refused");
                    serde_json::json!({ "type": "error", "message": e, "fatal": false })
                }
                Err(_) => return false,
            };
            ws.send(Message::Text(out.to_string().into())).await.is_ok()
        }
        BrowserMsg::MediaState { mic, camera } => {
            debug!(peer, mic, camera, "browser console: media state");
            true
        }
    }
}

/// Callers listed on the page at most.
const MAX_QUEUE_SHOWN: usize = 100;

/// The waiting queue's message, when the queue changed (who waits, in which order) since
/// `shown`: the page counts the waited time on from what it is sent.
fn queue_message(
    status: &super::super::HubStatus,
    shown: &mut Option<(Vec<String>, usize)>,
) -> Option<serde_json::Value> {
    let queue = &status.snapshot.queue;
    let same = shown.as_ref().is_some_and(|(s, total)| {
        *total == queue.len()
            && s.len() == queue.len().min(MAX_QUEUE_SHOWN)
            && s.iter().zip(queue).all(|(a, (b, _))| a == b)
    });
    if same {
        return None;
    }
    let kiosks: Vec<String> = queue.iter().take(MAX_QUEUE_SHOWN).map(|(k, _)| k.clone()).collect();
    let waiting: Vec<serde_json::Value> = queue
        .iter()
        .take(MAX_QUEUE_SHOWN)
        .map(|(kiosk, waited)| {
            let branch = kiosk.split_once('/').map_or(kiosk.as_str(), |(b, _)| b);
            serde_json::json!({ "kiosk": kiosk, "branch": branch, "waited_ms": waited.as_millis() as u64 })
        })
        .collect();
    *shown = Some((kiosks, queue.len()));
    Some(serde_json::json!({ "type": "queue", "waiting": waiting, "total": queue.len() }))
}

async fn send_queue<S>(ws: &mut WebSocketStream<S>, msg: Option<serde_json::Value>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match msg {
        Some(msg) => send_json(ws, &msg).await,
        None => true,
    }
}

async fn send_json<S, M>(ws: &mut WebSocketStream<S>, msg: &M) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    M: serde::Serialize,
{
    match serde_json::to_string(msg) {
        Ok(text) => ws.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}
