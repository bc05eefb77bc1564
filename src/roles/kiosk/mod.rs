//! The kiosk daemon's driver: buttons → call machine ↔ hub link, with status for systemd.
//!
//! ```text
//! buttons thread ──ButtonEvent──► core task (CallMachine) ◄──LinkEvent── link task (QUIC, reconnects)
//!                                   │                      ──ClientMsg──►
//!                                   └──► status (systemd, LEDs, observer)
//! ```

pub mod doctor;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::call::backoff::Backoff;
use crate::call::{CallConfig, CallMachine, Input, KioskState, Output};
use crate::edges::devices::buttons::ButtonEvent;
use crate::edges::devices::leds::Leds;
use crate::edges::health::Health;
use crate::edges::net::client::HubTarget;
use crate::edges::net::client::{self, ClientError};
use crate::edges::net::close_code;
use crate::edges::net::control::ControlError;
use crate::edges::session::{MediaDevices, MediaOptions, MediaSession, MediaStats};
use crate::edges::systemd::Notifier;
use crate::protocol::{CallId, ClientMsg, HubMsg, KioskHealth, MAX_PROBLEMS, Role};
use crate::ui::UiInput;

/// Tells the hub how this kiosk is (devices, network figures), for its per-kiosk metrics.
fn report_health(out: &Option<mpsc::Sender<ClientMsg>>, conn: &Option<quinn::Connection>, health: &Health) {
    let (Some(out), Some(conn)) = (out, conn) else { return };
    let stats = conn.stats();
    let report = KioskHealth {
        state: health.state.clone(),
        problems: health.problems.iter().take(MAX_PROBLEMS).map(|p| p.chars().take(500).collect()).collect(),
        rtt_ms: conn.rtt().as_millis().min(u128::from(u32::MAX)) as u32,
        sent_packets: stats.path.sent_packets,
        lost_packets: stats.path.lost_packets,
    };
    let _ = out.try_send(ClientMsg::Health(report));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Messages to the hub waiting for the link (control messages are few and small).
const OUT_QUEUE: usize = 64;

/// What the kiosk reports to whoever watches it (the demo, tests).
#[derive(Debug, Clone)]
pub enum KioskEvent {
    State {
        state: KioskState,
        at: Instant,
    },
    /// The call machine asked the hub for an agent (a press of CALL was accepted).
    Requested {
        at: Instant,
    },
    /// The call's id became known.
    CallId {
        call_id: CallId,
        at: Instant,
    },
    TextReceived {
        call_id: CallId,
        id: u64,
        body: String,
        at: Instant,
    },
    TextDelivered {
        call_id: CallId,
        id: u64,
        at: Instant,
    },
    TextSent {
        call_id: Option<CallId>,
        at: Instant,
    },
    HubUp {
        at: Instant,
    },
    HubDown {
        reason: String,
        at: Instant,
    },
    /// A call's media stopped (the call ended or the link dropped); its figures.
    Media {
        call_id: CallId,
        stats: Box<MediaStats>,
        at: Instant,
    },
}

/// The kiosk's inputs and outputs besides the hub.
pub struct KioskIo {
    pub buttons: mpsc::Receiver<ButtonEvent>,
    /// Texts for the customer to send (the demo).
    pub texts: Option<mpsc::Receiver<String>>,
    /// Unbounded on purpose: one event per state change or text, read by the demo or a test
    /// that keeps up; a kiosk in the field has no observer.
    pub observer: Option<mpsc::UnboundedSender<KioskEvent>>,
    pub leds: Option<Box<dyn Leds>>,
    pub notifier: Notifier,
    /// Camera, microphone, speaker and screen for calls, and codec settings.
    pub media: MediaDevices,
    pub media_options: MediaOptions,
    /// What did not work when the devices were checked at start ("camera: ..."); shown in the
    /// status line so that a kiosk running audio-only says so.
    pub device_problems: Vec<String>,
    /// Where to write the health file (`kioskd health` reads it); none in demos and tests.
    pub health_file: Option<std::path::PathBuf>,
    /// New settings after a configuration reload (SIGHUP).
    pub reload: Option<mpsc::Receiver<Reload>>,
}

/// Settings that change without dropping a call: they apply from the next call or screen on.
pub struct Reload {
    pub call: CallConfig,
    pub media: MediaDevices,
    pub media_options: MediaOptions,
    pub device_problems: Vec<String>,
}

/// Reconnect pacing.
#[derive(Debug, Clone)]
pub struct KioskOptions {
    pub call: CallConfig,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

enum LinkEvent {
    Up { id: String, out: mpsc::Sender<ClientMsg>, conn: quinn::Connection },
    Msg(HubMsg),
    Down(String),
}

/// Runs the kiosk until `shutdown` turns true. On shutdown a call in progress is hung up first.
pub async fn run(
    target: HubTarget,
    opts: KioskOptions,
    mut io: KioskIo,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (link_tx, mut link_rx) = mpsc::channel(64);
    let (link_stop_tx, link_stop_rx) = watch::channel(false);
    // Whether a call (or a place in the queue) waits to be resumed: the link retries faster.
    let (resuming_tx, resuming_rx) = watch::channel(false);
    let link = tokio::spawn(link_task(target, opts.clone(), link_tx, link_stop_rx, resuming_rx));

    let mut machine = CallMachine::new(opts.call.clone());
    let mut out: Option<mpsc::Sender<ClientMsg>> = None;
    let mut conn: Option<quinn::Connection> = None;
    let mut media: Option<MediaSession> = None;
    // Keyframe requests and rate hints from the media session, for the hub.
    let (keyframe_tx, mut keyframe_rx) = mpsc::channel::<ClientMsg>(8);
    let status_suffix = if io.device_problems.is_empty() {
        String::new()
    } else {
        format!(" — degraded: {}", io.device_problems.join("; "))
    };
    let mut texts = io.texts.take();
    let mut reload = io.reload.take();
    let observe = |io: &KioskIo, ev: KioskEvent| {
        if let Some(o) = &io.observer {
            let _ = o.send(ev);
        }
    };
    // The screen starts from the machine's state and the devices found missing.
    if let Some(d) = &io.media.display {
        d.update(UiInput::DeviceProblems(io.device_problems.clone()));
        d.update(UiInput::State(machine.state()));
    }
    io.notifier.ready();
    let mut watchdog = io.notifier.watchdog_interval().map(tokio::time::interval);
    let mut health = Health {
        pid: std::process::id(),
        started_unix: unix_now(),
        state: machine.state().name().into(),
        problems: io.device_problems.clone(),
        ..Health::default()
    };
    // The health file is refreshed at least this often, so that a stuck daemon shows as stale.
    let mut health_tick = tokio::time::interval(Duration::from_secs(10));
    // A device that fails in a call (a camera unplugged) is in the health file within a second.
    let mut media_watch = tokio::time::interval(Duration::from_secs(1));
    let write_health = |io: &KioskIo, health: &mut Health| {
        if let Some(path) = &io.health_file {
            health.updated_unix = unix_now();
            if let Err(e) = health.write(path) {
                debug!(error = %e, path = %path.display(), "health file not written");
            }
        }
    };

    loop {
        // Drain the machine.
        let deadline = loop {
            match machine.poll_output() {
                Output::ToHub(msg) => {
                    if matches!(msg, ClientMsg::RequestAgent { resume: None, .. }) {
                        observe(&io, KioskEvent::Requested { at: Instant::now() });
                    }
                    if let Some(tx) = &out
                        && tx.try_send(msg).is_err()
                    {
                        warn!("hub link is not taking messages; it will resynchronise on reconnect");
                    }
                }
                Output::State(state) => {
                    resuming_tx.send_replace(matches!(state, KioskState::Offline { resuming: true }));
                    health.state = state.name().into();
                    health.in_call = state.in_call();
                    write_health(&io, &mut health);
                    info!(state = state.name(), "{}", state.describe());
                    io.notifier.status(&format!("{}{status_suffix}", state.describe()));
                    // The screen first, so that a call's pictures never reach it before the call.
                    if let Some(d) = &io.media.display {
                        d.update(UiInput::State(state.clone()));
                    }
                    // Media runs exactly while the state is Connected on a live link.
                    let want = match (&state, machine.call_id(), &conn) {
                        (KioskState::Connected { .. }, Some(id), Some(c)) => Some((id, c.clone())),
                        _ => None,
                    };
                    if media.as_ref().is_some_and(|m| want.as_ref().is_none_or(|(id, _)| *id != m.call_id))
                        && let Some(m) = media.take()
                    {
                        let call_id = m.call_id;
                        let observer = io.observer.clone();
                        let display = io.media.display.clone();
                        // Finishing waits for media in flight; the kiosk goes on meanwhile.
                        tokio::spawn(async move {
                            let stats = m.finish().await;
                            // Devices that failed in this call show until the next one.
                            if let Some(d) = display {
                                d.update(UiInput::CallProblems(stats.problems.clone()));
                            }
                            info!(
                                call_id,
                                audio_played = stats.audio_frames_played,
                                video_shown = stats.video_frames_displayed,
                                "call media stopped"
                            );
                            if let Some(o) = observer {
                                let _ = o.send(KioskEvent::Media {
                                    call_id,
                                    stats: Box::new(stats),
                                    at: Instant::now(),
                                });
                            }
                        });
                    }
                    if media.is_none()
                        && let Some((call_id, c)) = want
                    {
                        // Devices are opened afresh for every call: what failed in the last
                        // one counts again only if it fails again.
                        if health.problems != io.device_problems {
                            health.problems = io.device_problems.clone();
                            write_health(&io, &mut health);
                        }
                        media = Some(MediaSession::start(
                            c,
                            call_id,
                            &io.media,
                            io.media_options.clone(),
                            keyframe_tx.clone(),
                        ));
                    }
                    if let Some(leds) = io.leds.as_mut()
                        && let Err(e) = leds.show(&state)
                    {
                        warn!(error = %e, "LEDs");
                    }
                    observe(&io, KioskEvent::State { state, at: Instant::now() });
                }
                Output::TextReceived { call_id, id, body } => {
                    // The text is shown, not logged: it may hold the customer's details.
                    info!(call_id, id, chars = body.chars().count(), "text from the advisor");
                    if let Some(d) = &io.media.display {
                        d.update(UiInput::Text(body.clone()));
                    }
                    observe(&io, KioskEvent::TextReceived { call_id, id, body, at: Instant::now() });
                }
                Output::TextDelivered { call_id, id } => {
                    debug!(call_id, id, "text delivered");
                    observe(&io, KioskEvent::TextDelivered { call_id, id, at: Instant::now() });
                }
                Output::Wait(deadline) => break deadline,
            }
        };
        let now = Instant::now();
        if deadline.is_some_and(|d| now.into_std() >= d) {
            let _ = machine.handle_input(Input::Tick, now.into_std());
            continue;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match watchdog.as_mut() {
                Some(w) => {
                    w.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let text = async {
            match texts.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let reloaded = async {
            match reload.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let before = machine.call_id();
        let (input, at) = tokio::select! {
            press = io.buttons.recv() => match press {
                Some(ev) => {
                    info!(button = ev.button.as_str(), origin = ?ev.origin, "button pressed");
                    (Input::Button(ev.button), Instant::now())
                }
                None => {
                    warn!("buttons are gone; the kiosk cannot place calls");
                    io.notifier.status("out of service: buttons unavailable");
                    // Let the watchdog (if any) restart us: stop feeding it.
                    shutdown.changed().await.ok();
                    break;
                }
            },
            ev = link_rx.recv() => match ev {
                Some(LinkEvent::Up { id, out: tx, conn: c }) => {
                    info!(%id, "connected to the hub");
                    health.hub_reached = true;
                    report_health(&Some(tx.clone()), &Some(c.clone()), &health);
                    out = Some(tx);
                    conn = Some(c);
                    observe(&io, KioskEvent::HubUp { at: Instant::now() });
                    (Input::HubUp, Instant::now())
                }
                Some(LinkEvent::Msg(HubMsg::RateHint { call_id, bitrate_bps })) => {
                    if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                        m.set_rate_hint(bitrate_bps);
                    }
                    continue;
                }
                Some(LinkEvent::Msg(HubMsg::LossReport { call_id, audio_loss_pct })) => {
                    if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                        m.set_remote_loss(audio_loss_pct);
                    }
                    continue;
                }
                Some(LinkEvent::Msg(HubMsg::KeyframeRequest { call_id })) => {
                    if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                        m.request_keyframe();
                    }
                    continue;
                }
                Some(LinkEvent::Msg(msg)) => (Input::FromHub(msg), Instant::now()),
                Some(LinkEvent::Down(reason)) => {
                    out = None;
                    conn = None;
                    observe(&io, KioskEvent::HubDown { reason, at: Instant::now() });
                    (Input::HubDown, Instant::now())
                }
                None => break,
            },
            Some(body) = text => {
                observe(&io, KioskEvent::TextSent { call_id: machine.call_id(), at: Instant::now() });
                (Input::SendText(body), Instant::now())
            }
            Some(msg) = keyframe_rx.recv() => {
                if let Some(tx) = &out {
                    let _ = tx.try_send(msg);
                }
                continue;
            }
            () = sleep => (Input::Tick, Instant::now()),
            () = tick => {
                io.notifier.watchdog();
                write_health(&io, &mut health);
                continue;
            }
            Some(new) = reloaded => {
                machine.set_config(new.call);
                // The display outlives configurations: it keeps the screen, which calls then
                // never open themselves.
                let display = io.media.display.take();
                io.media = new.media;
                if let Some(d) = display {
                    d.update(UiInput::DeviceProblems(new.device_problems.clone()));
                    io.media.screen = None;
                    io.media.display = Some(d);
                }
                io.media_options = new.media_options;
                health.problems = new.device_problems.clone();
                io.device_problems = new.device_problems;
                info!("configuration reloaded: screen timings now, media settings from the next call");
                write_health(&io, &mut health);
                continue;
            }
            _ = health_tick.tick() => {
                write_health(&io, &mut health);
                report_health(&out, &conn, &health);
                continue;
            }
            _ = media_watch.tick() => {
                let failed = media.as_ref().map(MediaSession::problems).unwrap_or_default();
                let mut problems = io.device_problems.clone();
                problems.extend(failed.iter().filter(|p| !io.device_problems.contains(p)).cloned());
                if !failed.is_empty() && problems != health.problems {
                    warn!(problems = ?failed, "a device failed during the call; the call goes on");
                    health.problems = problems;
                    write_health(&io, &mut health);
                    report_health(&out, &conn, &health);
                    if let Some(d) = &io.media.display {
                        d.update(UiInput::CallProblems(failed));
                    }
                }
                continue;
            }
            _ = shutdown.changed() => break,
        };
        if let Err(e) = machine.handle_input(input, at.into_std()) {
            debug!(error = %e, "input ignored");
        }
        if let Some(call_id) = machine.call_id()
            && before != Some(call_id)
        {
            observe(&io, KioskEvent::CallId { call_id, at: Instant::now() });
        }
    }

    // Shutting down: hang up a call in progress so the agent is not left waiting.
    io.notifier.stopping();
    if let Some(m) = media.take() {
        let call_id = m.call_id;
        let stats = m.stop();
        observe(&io, KioskEvent::Media { call_id, stats: Box::new(stats), at: Instant::now() });
    }
    if let (Some(call_id), Some(tx)) = (machine.call_id(), &out) {
        info!(call_id, "hanging up before exit");
        let _ = tx.send(ClientMsg::HangUp { call_id }).await;
    }
    drop(out);
    let _ = link_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), link).await;
    Ok(())
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
async fn link_task(
    target: HubTarget,
    opts: KioskOptions,
    events: mpsc::Sender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
    resuming: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(opts.reconnect_min, opts.reconnect_max);
    let mut endpoint: Option<(bool, quinn::Endpoint)> = None;
    // When the link last went down (or the first attempt began).
    let mut down_since = tokio::time::Instant::now();
    let fast = |resuming: &watch::Receiver<bool>, since: tokio::time::Instant| {
        *resuming.borrow() && since.elapsed() < RESUME_FAST_FOR
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let resume = fast(&resuming, down_since);
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
                let reason = session_loop(session, &events, &mut stop).await;
                down_since = tokio::time::Instant::now();
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
) -> String {
    let client::Session { conn, mut writer, mut reader, id, remote } = session;
    let (out_tx, mut out_rx) = mpsc::channel::<ClientMsg>(OUT_QUEUE);
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
    loop {
        tokio::select! {
            msg = reader.recv::<HubMsg>() => match msg {
                Ok(msg) => {
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
            _ = stop.changed() => {
                // Let the writer flush the last messages (a hang-up) before closing.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
                conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"kiosk stopping");
                return "kiosk stopping".into();
            }
        }
    }
}
