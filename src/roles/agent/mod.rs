//! The agent console's driver: a session with the hub, driven by a person (commands typed on
//! a terminal) or by a script (`--auto-accept`) for demos and load tests. The console's logic
//! is the sans-IO [`crate::console::Console`]; this module connects, feeds it the hub's
//! messages, the commands and the time, and carries out what it asks: messages to the hub,
//! lines on the terminal, events for an observer, the call's media session.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::call::backoff::Backoff;
pub use crate::console::{AutoAnswer, Command as AgentCommand, HELP};
use crate::console::{Console, Event, Output};
use crate::edges::net::client::{self, HubTarget, Session};
use crate::edges::net::control::{ControlError, ControlReader, ControlWriter};
use crate::edges::net::{close_code, renew};
use crate::edges::session::{MediaDevices, MediaOptions, MediaSession, MediaStats};
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg, Role, RoomState, WithdrawReason};

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

impl AgentEvent {
    /// The console's event as an observer sees it; `None` for what is only shown.
    fn from_console(ev: &Event, at: Instant) -> Option<Self> {
        let ev = match ev.clone() {
            Event::Room { state } => Self::Room { state, at },
            Event::Offer { call_id, kiosk, waited_ms, .. } => Self::Offer { call_id, kiosk, waited_ms, at },
            Event::OfferWithdrawn { call_id, reason } => Self::OfferWithdrawn { call_id, reason, at },
            Event::AcceptSent { call_id } => Self::AcceptSent { call_id, at },
            Event::Connected { call_id, kiosk, recorded } => Self::Connected { call_id, kiosk, recorded, at },
            Event::Ended { call_id, reason } => Self::Ended { call_id, reason, at },
            Event::TextSent { call_id, id } => Self::TextSent { call_id, id, at },
            Event::TextReceived { call_id, id, body, .. } => Self::TextReceived { call_id, id, body, at },
            Event::TextDelivered { call_id, id } => Self::TextDelivered { call_id, id, at },
            Event::Error { message } => Self::Error { message, at },
            Event::PeerPresence { .. } | Event::Notice(_) => return None,
        };
        Some(ev)
    }
}

/// The console's commands (a closed channel is the person leaving), and where its events go.
pub struct AgentIo {
    pub commands: mpsc::Receiver<AgentCommand>,
    /// Unbounded on purpose: a few events per call, read by the demo or a test that keeps up.
    pub observer: Option<mpsc::UnboundedSender<AgentEvent>>,
    /// Print a readable line for each event (the interactive console).
    pub print: bool,
    /// The agent's camera, microphone, and where the kiosk's picture and sound go.
    pub media: MediaDevices,
    pub media_options: MediaOptions,
    /// Renews the agent's certificate on line before it expires.
    pub renewal: Option<renew::SharedRenewer>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("connection to the hub lost: {0}")]
    Lost(String),
}

/// Connects and runs the console until the commands end (the person quit; a scripted console
/// runs without commands) or shutdown. The first connection must succeed (a console started
/// with no hub to reach says so and stops); a connection lost later is made again, to the same
/// hub or the next of the deployment's, with back-off, and the console goes on.
pub async fn run(
    target: HubTarget,
    auto: Option<AutoAnswer>,
    io: AgentIo,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut endpoints = client::Endpoints::new(target.client.clone());
    let mut preferred = 0usize;
    let session = connect(&target, &mut endpoints, &mut preferred).await?;
    info!(id = %session.id, hub = %session.remote, "agent connected");
    let mut agent = Agent::new(session, auto, io, target.silence_limit());
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let result = loop {
        match agent.run(shutdown.clone()).await {
            Err(AgentError::Lost(reason)) => {
                if agent.went_silent() {
                    // The hub said nothing for a while: the next one is tried first.
                    preferred += 1;
                }
                warn!(%reason, "connection to the hub lost: connecting again");
                agent.print(format!("[hub] connection lost ({reason}); connecting again…"));
                agent.detach();
            }
            other => break other,
        }
        // Again until a hub answers or the console is stopped.
        let session = loop {
            if *shutdown.borrow() {
                break None;
            }
            if let Some(config) = agent.io.renewal.as_ref().and_then(|r| renew::lock(r).take_client_config())
            {
                endpoints.set_client_config(config);
            }
            match connect(&target, &mut endpoints, &mut preferred).await {
                Ok(s) => break Some(s),
                Err(e) if e.is_refusal() => {
                    // Revoked, expired, or turned away: a person must act; the console stops.
                    agent.print(format!("[hub] {e}"));
                    endpoints.wait_idle().await;
                    return Err(e.into());
                }
                Err(e) => {
                    preferred += 1;
                    let delay = backoff.next_delay(rand::random::<f64>());
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "no hub reachable");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|s| *s) => break None,
                    }
                }
            }
        };
        let Some(session) = session else { break Ok(()) };
        backoff.reset();
        info!(id = %session.id, hub = %session.remote, "agent connected again");
        agent.attach(session);
    };
    agent.close().await;
    endpoints.wait_idle().await;
    result
}

/// Back-off between attempts to reach a hub after the connection was lost.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Connects to the first hub of `target` that answers, `preferred` first (and remembered).
async fn connect(
    target: &HubTarget,
    endpoints: &mut client::Endpoints,
    preferred: &mut usize,
) -> Result<Session, client::ClientError> {
    let addrs = client::resolve_all(&target.addresses).await?;
    let race =
        client::Race { stagger: client::FAILOVER_STAGGER, at_once: addrs.len(), total: Some(addrs.len()) };
    let (conn, i) = client::race_handshakes(endpoints, &addrs, *preferred, &target.server_name, race).await?;
    *preferred = i;
    client::welcome(conn, addrs[i], Role::Agent).await
}

/// What woke the driver.
enum Wake {
    Hub(Result<HubMsg, ControlError>),
    Command(Option<AgentCommand>),
    Timer,
    /// A keyframe request or rate hint from the media session, for the hub.
    ToHub(ClientMsg),
    Shutdown,
}

struct Agent {
    console: Console,
    conn: quinn::Connection,
    writer: ControlWriter,
    reader: ControlReader,
    io: AgentIo,
    media: Option<MediaSession>,
    to_hub: (mpsc::Sender<ClientMsg>, mpsc::Receiver<ClientMsg>),
    /// A scripted console whose commands ended: it goes on until shutdown.
    commands_open: bool,
    /// With several hubs: set when the session was closed for silence
    /// ([`client::close_when_silent`]), and the silence that closes it.
    silent: Option<(std::sync::Arc<std::sync::atomic::AtomicBool>, Duration)>,
}

impl Agent {
    fn new(session: Session, auto: Option<AutoAnswer>, io: AgentIo, silence_limit: Option<Duration>) -> Self {
        let Session { conn, writer, reader, id, .. } = session;
        let silent = silence_limit.map(|limit| (client::close_when_silent(&conn, limit), limit));
        let agent = Self {
            silent,
            console: Console::new(auto),
            conn,
            writer,
            reader,
            io,
            media: None,
            to_hub: mpsc::channel(8),
            commands_open: true,
        };
        agent.print(format!("connected to the hub as {id}; your room is CLOSE. {HELP}"));
        agent.observe(AgentEvent::Welcome { id, at: Instant::now() });
        agent
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
        let result = self.run_session(&mut shutdown).await;
        if let Some(r) = &self.io.renewal {
            renew::lock(r).connection_lost();
        }
        result
    }

    async fn run_session(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), AgentError> {
        loop {
            let renewal = self.io.renewal.clone();
            if let Some(req) = renewal.as_ref().and_then(|r| renew::lock(r).poll()) {
                self.send(req).await;
            }
            let mut deadline = self.carry_out().await;
            if let Some(r) = &renewal {
                let wake = Instant::now() + renew::lock(r).wake_in();
                deadline = Some(deadline.map_or(wake, |d| d.min(wake)));
            }
            match self.wait(deadline, shutdown).await {
                Wake::Hub(Ok(msg)) if renewal.as_ref().is_some_and(|r| renew::lock(r).handle(&msg)) => {}
                Wake::Hub(Ok(msg)) => self.on_hub(msg),
                Wake::Hub(Err(ControlError::Decode(e))) => {
                    self.conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
                    return Err(AgentError::Lost(format!("hub sent an invalid message: {e}")));
                }
                Wake::Hub(Err(e)) => {
                    let reason = self.conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                    return Err(AgentError::Lost(reason));
                }
                Wake::Command(Some(cmd)) => self.console.handle_command(cmd),
                Wake::Command(None) if self.console.scripted() => self.commands_open = false,
                Wake::Command(None) | Wake::Shutdown => return Ok(()),
                Wake::Timer => self.console.handle_timeout(Instant::now().into_std()),
                Wake::ToHub(msg) => self.send(msg).await,
            }
        }
    }

    fn went_silent(&self) -> bool {
        self.silent.as_ref().is_some_and(|(s, _)| s.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The connection is gone: media stopped, the console told (its call went with the hub).
    fn detach(&mut self) {
        self.stop_media();
        self.conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"connection lost");
    }

    /// A new session, maybe with another hub: the console starts its room again.
    fn attach(&mut self, session: Session) {
        let Session { conn, writer, reader, id, remote } = session;
        if let Some((_, limit)) = self.silent {
            self.silent = Some((client::close_when_silent(&conn, limit), limit));
        }
        self.conn = conn;
        self.writer = writer;
        self.reader = reader;
        self.console.reconnected();
        self.print(format!("connected again to the hub at {remote} as {id}"));
        self.observe(AgentEvent::Welcome { id, at: Instant::now() });
    }

    /// Leaving: a call in progress is hung up, media stopped, the connection closed politely.
    async fn close(mut self) {
        self.console.close();
        self.carry_out().await;
        self.writer.finish(Duration::from_secs(1)).await;
        self.conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"agent leaving");
    }

    /// Carries out the console's outputs until it waits; returns its next deadline.
    async fn carry_out(&mut self) -> Option<Instant> {
        loop {
            match self.console.poll_output() {
                Output::ToHub(msg) => self.send(msg).await,
                Output::Event(ev) => {
                    if let Some(line) = ev.line() {
                        self.print(line);
                    }
                    if let Event::Error { message } = &ev {
                        warn!(%message, "hub refused a request");
                    }
                    if let Some(ev) = AgentEvent::from_console(&ev, Instant::now()) {
                        self.observe(ev);
                    }
                }
                Output::StartMedia { call_id } => {
                    self.stop_media();
                    self.media = Some(MediaSession::start(
                        self.conn.clone(),
                        call_id,
                        &self.io.media,
                        self.io.media_options.clone(),
                        self.to_hub.0.clone(),
                    ));
                }
                Output::StopMedia => self.stop_media(),
                Output::Wait(deadline) => return deadline.map(Instant::from_std),
            }
        }
    }

    async fn wait(&mut self, deadline: Option<Instant>, shutdown: &mut watch::Receiver<bool>) -> Wake {
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let commands = async {
            if self.commands_open { self.io.commands.recv().await } else { std::future::pending().await }
        };
        tokio::select! {
            msg = self.reader.recv::<HubMsg>() => Wake::Hub(msg),
            cmd = commands => Wake::Command(cmd),
            () = timer => Wake::Timer,
            Some(msg) = self.to_hub.1.recv() => Wake::ToHub(msg),
            _ = shutdown.changed() => Wake::Shutdown,
        }
    }

    /// Media hints go to the media session; the rest to the console.
    fn on_hub(&mut self, msg: HubMsg) {
        let media = |call_id| self.media.as_ref().filter(|m| m.call_id == call_id);
        match msg {
            HubMsg::RateHint { call_id, bitrate_bps } => {
                if let Some(m) = media(call_id) {
                    m.set_rate_hint(bitrate_bps);
                }
            }
            HubMsg::LossReport { call_id, audio_loss_pct } => {
                if let Some(m) = media(call_id) {
                    m.set_remote_loss(audio_loss_pct);
                }
            }
            HubMsg::KeyframeRequest { call_id } => {
                if let Some(m) = media(call_id) {
                    m.request_keyframe();
                }
            }
            msg => self.console.handle_hub(msg, Instant::now().into_std()),
        }
    }

    async fn send(&mut self, msg: ClientMsg) {
        if let Err(e) = self.writer.send(&msg).await {
            // The reader sees the connection end and reports why.
            debug!(error = %e, "write to the hub failed");
        }
    }

    /// Finishing waits for media in flight (on its own task); the console goes on meanwhile.
    fn stop_media(&mut self) {
        let Some(m) = self.media.take() else { return };
        let call_id = m.call_id;
        let observer = self.io.observer.clone();
        tokio::spawn(async move {
            let stats = m.finish().await;
            if let Some(o) = observer {
                let _ = o.send(AgentEvent::Media { call_id, stats: Box::new(stats), at: Instant::now() });
            }
        });
    }

    fn observe(&self, ev: AgentEvent) {
        if let Some(o) = &self.io.observer {
            let _ = o.send(ev);
        }
    }

    fn print(&self, line: String) {
        if self.io.print {
            println!("{line}");
        }
    }
}
