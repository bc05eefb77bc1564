//! The agent console's driver: a session with the hub, driven by a person (commands typed on
//! a terminal) or by a script (`--auto-accept`) for demos and load tests.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::edges::net::client::HubTarget;
use crate::edges::net::client::{self, Session};
use crate::edges::net::close_code;
use crate::edges::net::control::ControlError;
use crate::edges::session::{MediaDevices, MediaOptions, MediaSession, MediaStats};
use crate::protocol::text::{TextInbox, TextOutbox};
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg, Presence, Role, RoomState, WithdrawReason};

/// Scripted answering for demos and load tests.
#[derive(Debug, Clone)]
pub struct AutoAnswer {
    /// Time between an offer and the accept (a person reaching for the button).
    pub answer_delay: Duration,
    /// Hang up after this long in a call; `None` leaves hanging up to the customer.
    pub call_duration: Option<Duration>,
    /// A text sent as soon as a call connects.
    pub greeting: Option<String>,
}

/// What a person types at the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    Idle,
    Close,
    Accept,
    Decline,
    Say(String),
    HangUp,
    Status,
    Help,
    Quit,
}

impl AgentCommand {
    /// Parses a console line; `Err` holds a message for the person.
    pub fn parse(line: &str) -> Result<Option<Self>, String> {
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let cmd = match word.to_ascii_lowercase().as_str() {
            "" => return Ok(None),
            "idle" | "i" => Self::Idle,
            "close" | "c" => Self::Close,
            "accept" | "a" => Self::Accept,
            "decline" | "d" => Self::Decline,
            "say" | "s" | "t" => {
                if rest.trim().is_empty() {
                    return Err("say what? `say <text>`".into());
                }
                Self::Say(rest.trim().to_string())
            }
            "hangup" | "h" => Self::HangUp,
            "status" => Self::Status,
            "help" | "?" => Self::Help,
            "quit" | "q" | "exit" => Self::Quit,
            other => return Err(format!("unknown command `{other}`; type `help`")),
        };
        Ok(Some(cmd))
    }
}

pub const HELP: &str = "commands: idle | close | accept | decline | say <text> | hangup | status | quit";

/// What the console reports (demo and tests watch it).
#[derive(Debug, Clone)]
pub enum AgentEvent {
    Welcome {
        id: String,
        at: Instant,
    },
    Room {
        state: RoomState,
        at: Instant,
    },
    Offer {
        call_id: CallId,
        kiosk: String,
        waited_ms: u64,
        at: Instant,
    },
    OfferWithdrawn {
        call_id: CallId,
        reason: WithdrawReason,
        at: Instant,
    },
    AcceptSent {
        call_id: CallId,
        at: Instant,
    },
    Connected {
        call_id: CallId,
        kiosk: String,
        /// The hub records this call.
        recorded: bool,
        at: Instant,
    },
    Ended {
        call_id: CallId,
        reason: EndReason,
        at: Instant,
    },
    TextSent {
        call_id: CallId,
        id: u64,
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
    Error {
        message: String,
        at: Instant,
    },
    /// A call's media stopped; its figures.
    Media {
        call_id: CallId,
        stats: Box<MediaStats>,
        at: Instant,
    },
}

pub struct AgentIo {
    pub commands: mpsc::Receiver<AgentCommand>,
    /// Unbounded on purpose: a few events per call, read by the demo or a test that keeps up.
    pub observer: Option<mpsc::UnboundedSender<AgentEvent>>,
    /// Print a readable line for each event (the interactive console).
    pub print: bool,
    /// The agent's camera, microphone, and where the kiosk's picture and sound go.
    pub media: MediaDevices,
    pub media_options: MediaOptions,
}

struct Call {
    call_id: CallId,
    kiosk: String,
    outbox: TextOutbox,
    inbox: TextInbox,
    kiosk_present: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("connection to the hub lost: {0}")]
    Lost(String),
}

/// Connects and runs the console until `quit`, the end of commands (interactive), shutdown, or
/// the loss of the hub.
pub async fn run(
    target: HubTarget,
    auto: Option<AutoAnswer>,
    mut io: AgentIo,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let addr = client::resolve(&target.address).await?;
    let endpoint = client::endpoint(target.client.clone(), addr.is_ipv6())
        .map_err(|e| client::ClientError::Connect(addr, e.to_string()))?;
    let Session { conn, mut writer, mut reader, id, .. } =
        client::connect(&endpoint, addr, &target.server_name, Role::Agent).await?;

    let observe = |io: &AgentIo, ev: AgentEvent| {
        if let Some(o) = &io.observer {
            let _ = o.send(ev);
        }
    };
    let say = |io: &AgentIo, line: String| {
        if io.print {
            println!("{line}");
        }
    };
    info!(%id, "agent connected");
    say(&io, format!("connected to the hub as {id}; your room is CLOSE. {HELP}"));
    observe(&io, AgentEvent::Welcome { id: id.clone(), at: Instant::now() });

    let mut pending: Vec<ClientMsg> = Vec::new();
    // A scripted agent whose command channel closed waits on this one, whose sender is kept
    // here so that it never closes (a closed channel would be ready at once, forever).
    let mut _parked: Option<mpsc::Sender<AgentCommand>> = None;
    if auto.is_some() {
        pending.push(ClientMsg::SetPresence { presence: Presence::Idle });
    }
    let mut room = RoomState::Close;
    let mut offer: Option<(CallId, String)> = None;
    let mut call: Option<Call> = None;
    let mut answer_at: Option<(Instant, CallId)> = None;
    let mut media: Option<MediaSession> = None;
    // Keyframe requests and rate hints from the media session, for the hub.
    let (keyframe_tx, mut keyframe_rx) = mpsc::channel::<ClientMsg>(8);
    // Finishing waits for media in flight (on its own task); the console goes on meanwhile.
    let stop_media = |media: &mut Option<MediaSession>, io: &AgentIo| {
        if let Some(m) = media.take() {
            let call_id = m.call_id;
            let observer = io.observer.clone();
            tokio::spawn(async move {
                let stats = m.finish().await;
                if let Some(o) = observer {
                    let _ = o.send(AgentEvent::Media { call_id, stats: Box::new(stats), at: Instant::now() });
                }
            });
        }
    };
    let mut hangup_at: Option<(Instant, CallId)> = None;

    let result = loop {
        for msg in pending.drain(..) {
            if let ClientMsg::Accept { call_id } = &msg {
                observe(&io, AgentEvent::AcceptSent { call_id: *call_id, at: Instant::now() });
            }
            if let Err(e) = writer.send(&msg).await {
                // The reader sees the connection end and reports why.
                debug!(error = %e, "write to the hub failed");
                break;
            }
        }
        let next_timer = [answer_at.map(|(t, _)| t), hangup_at.map(|(t, _)| t)].into_iter().flatten().min();
        let timer = async {
            match next_timer {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = reader.recv::<HubMsg>() => {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(ControlError::Decode(e)) => {
                        conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
                        break Err(AgentError::Lost(format!("hub sent an invalid message: {e}")));
                    }
                    Err(e) => {
                        let reason = conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                        break Err(AgentError::Lost(reason));
                    }
                };
                let now = Instant::now();
                match msg {
                    HubMsg::Room { state } => {
                        room = state;
                        say(&io, format!("[room] {}", state.as_str()));
                        observe(&io, AgentEvent::Room { state, at: now });
                    }
                    HubMsg::Offer { call_id, kiosk, waited_ms, timeout_ms } => {
                        say(&io, format!(
                            "[offer] call {call_id} from {kiosk}, waiting {:.1} s — `accept` or `decline` within {} s",
                            waited_ms as f64 / 1000.0, timeout_ms / 1000));
                        observe(&io, AgentEvent::Offer { call_id, kiosk: kiosk.clone(), waited_ms, at: now });
                        offer = Some((call_id, kiosk));
                        if let Some(a) = &auto {
                            answer_at = Some((now + a.answer_delay, call_id));
                        }
                    }
                    HubMsg::OfferWithdrawn { call_id, reason } => {
                        say(&io, format!("[offer] call {call_id} withdrawn ({reason:?})"));
                        observe(&io, AgentEvent::OfferWithdrawn { call_id, reason, at: now });
                        if offer.as_ref().is_some_and(|(c, _)| *c == call_id) {
                            offer = None;
                        }
                        answer_at = answer_at.filter(|(_, c)| *c != call_id);
                    }
                    HubMsg::Connected { call_id, peer, recorded } => {
                        offer = None;
                        let note = if recorded { " — this call is being RECORDED" } else { "" };
                        say(&io, format!("[call {call_id}] connected with {peer}{note}"));
                        observe(&io, AgentEvent::Connected { call_id, kiosk: peer.clone(), recorded, at: now });
                        stop_media(&mut media, &io);
                        media = Some(MediaSession::start(conn.clone(), call_id, &io.media, io.media_options.clone(), keyframe_tx.clone()));
                        let mut c = Call { call_id, kiosk: peer, outbox: TextOutbox::new(), inbox: TextInbox::new(), kiosk_present: true };
                        if let Some(a) = &auto {
                            if let Some(d) = a.call_duration {
                                hangup_at = Some((now + d, call_id));
                            }
                            if let Some(g) = &a.greeting
                                && let Some(id) = c.outbox.push(g.clone())
                            {
                                pending.push(ClientMsg::Text { call_id, id, body: g.clone() });
                                observe(&io, AgentEvent::TextSent { call_id, id, at: now });
                            }
                        }
                        call = Some(c);
                    }
                    HubMsg::PeerPresence { call_id, present } => {
                        if let Some(c) = call.as_mut().filter(|c| c.call_id == call_id) {
                            c.kiosk_present = present;
                            if present {
                                say(&io, format!("[call {call_id}] the kiosk is back"));
                                // Texts sent while it was away were not delivered: send again.
                                pending.extend(c.outbox.unacked().map(|(id, body)| ClientMsg::Text { call_id, id, body: body.to_string() }));
                            } else {
                                say(&io, format!("[call {call_id}] the kiosk lost its connection; holding the call"));
                            }
                        }
                    }
                    HubMsg::CallEnded { call_id, reason } => {
                        if call.as_ref().is_some_and(|c| c.call_id == call_id) {
                            call = None;
                            hangup_at = None;
                            stop_media(&mut media, &io);
                            say(&io, format!("[call {call_id}] ended: {}", reason.describe()));
                            observe(&io, AgentEvent::Ended { call_id, reason, at: now });
                        }
                    }
                    HubMsg::Text { call_id, id, body } => {
                        if let Some(c) = call.as_mut().filter(|c| c.call_id == call_id) {
                            pending.push(ClientMsg::TextAck { call_id, id });
                            if c.inbox.handle_text(id) {
                                say(&io, format!("[call {call_id}] {}: {body}", c.kiosk));
                                observe(&io, AgentEvent::TextReceived { call_id, id, body, at: now });
                            }
                        }
                    }
                    HubMsg::TextAck { call_id, id } => {
                        if let Some(c) = call.as_mut().filter(|c| c.call_id == call_id)
                            && c.outbox.handle_ack(id)
                        {
                            debug!(call_id, id, "text delivered");
                            observe(&io, AgentEvent::TextDelivered { call_id, id, at: now });
                        }
                    }
                    HubMsg::Error { message, fatal } => {
                        warn!(%message, fatal, "hub refused a request");
                        say(&io, format!("[hub] {message}"));
                        observe(&io, AgentEvent::Error { message, at: now });
                    }
                    HubMsg::RateHint { call_id, bitrate_bps } => {
                        if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                            m.set_rate_hint(bitrate_bps);
                        }
                    }
                    HubMsg::LossReport { call_id, audio_loss_pct } => {
                        if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                            m.set_remote_loss(audio_loss_pct);
                        }
                    }
                    HubMsg::KeyframeRequest { call_id } => {
                        if let Some(m) = media.as_ref().filter(|m| m.call_id == call_id) {
                            m.request_keyframe();
                        }
                    }
                    HubMsg::Welcome { .. } | HubMsg::Queued { .. } | HubMsg::Busy { .. } | HubMsg::Ringing { .. } => {}
                }
            }
            cmd = io.commands.recv() => {
                let Some(cmd) = cmd else {
                    if auto.is_some() {
                        // Scripted agents run without a terminal: keep going until shutdown.
                        let (keep, never) = mpsc::channel(1);
                        io.commands = never;
                        _parked = Some(keep);
                        continue;
                    }
                    break Ok(());
                };
                match cmd {
                    AgentCommand::Idle => pending.push(ClientMsg::SetPresence { presence: Presence::Idle }),
                    AgentCommand::Close => pending.push(ClientMsg::SetPresence { presence: Presence::Close }),
                    AgentCommand::Accept => match &offer {
                        Some((call_id, _)) => pending.push(ClientMsg::Accept { call_id: *call_id }),
                        None => say(&io, "no call is offered".into()),
                    },
                    AgentCommand::Decline => match offer.take() {
                        Some((call_id, _)) => pending.push(ClientMsg::Decline { call_id }),
                        None => say(&io, "no call is offered".into()),
                    },
                    AgentCommand::Say(body) => match call.as_mut() {
                        Some(c) => match crate::protocol::check_text(&body) {
                            Err(e) => say(&io, format!("not sent: {e}")),
                            Ok(()) => match c.outbox.push(body.clone()) {
                                Some(id) => {
                                    observe(&io, AgentEvent::TextSent { call_id: c.call_id, id, at: Instant::now() });
                                    if c.kiosk_present {
                                        pending.push(ClientMsg::Text { call_id: c.call_id, id, body });
                                    }
                                }
                                None => say(&io, "not sent: too many texts waiting for the kiosk".into()),
                            },
                        },
                        None => say(&io, "not in a call".into()),
                    },
                    AgentCommand::HangUp => match &call {
                        Some(c) => pending.push(ClientMsg::HangUp { call_id: c.call_id }),
                        None => say(&io, "not in a call".into()),
                    },
                    AgentCommand::Status => {
                        let line = match (&call, &offer) {
                            (Some(c), _) => format!("room {} — in call {} with {}", room.as_str(), c.call_id, c.kiosk),
                            (None, Some((id, k))) => format!("room {} — call {id} from {k} offered", room.as_str()),
                            _ => format!("room {}", room.as_str()),
                        };
                        say(&io, line);
                    }
                    AgentCommand::Help => say(&io, HELP.into()),
                    AgentCommand::Quit => break Ok(()),
                }
            }
            () = timer => {
                let now = Instant::now();
                if let Some((t, call_id)) = answer_at
                    && t <= now
                {
                    answer_at = None;
                    if offer.as_ref().is_some_and(|(c, _)| *c == call_id) {
                        pending.push(ClientMsg::Accept { call_id });
                    }
                }
                if let Some((t, call_id)) = hangup_at
                    && t <= now
                {
                    hangup_at = None;
                    if call.as_ref().is_some_and(|c| c.call_id == call_id) {
                        pending.push(ClientMsg::HangUp { call_id });
                    }
                }
            }
            Some(msg) = keyframe_rx.recv() => {
                pending.push(msg);
            }
            _ = shutdown.changed() => break Ok(()),
        }
    };
    stop_media(&mut media, &io);
    // A person leaving the console mid-call hangs up rather than leaving the customer alone.
    if let Some(c) = &call {
        let _ = writer.send(&ClientMsg::HangUp { call_id: c.call_id }).await;
    }
    writer.finish(Duration::from_secs(1)).await;
    conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"agent leaving");
    endpoint.wait_idle().await;
    result
}
