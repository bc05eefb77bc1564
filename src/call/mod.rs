//! The kiosk's call state machine: button → queue → ringing → call → hang-up.
//!
//! Sans-IO. The driver (`kiosk.rs`) feeds [`Input`]s with the time they happened (a button's
//! kernel timestamp, a message's arrival) and drains [`Output`]s until [`Output::Wait`]:
//!
//! 1. `handle_input(Input::HubUp, now)` once the hub welcomed the kiosk, `Input::HubDown` when the
//!    connection is lost, `Input::FromHub` for each message, `Input::Button` for each debounced
//!    press, `Input::Tick` when the last `Wait` deadline passes.
//! 2. After every input, `poll_output()` until `Output::Wait(deadline)`: send `ToHub` messages
//!    (only while the hub is up), show `State`, log texts.
//!
//! The machine remembers the call across a lost connection: after `HubUp` it asks the hub to
//! resume it (place in the queue or the call itself) and sends unacknowledged texts again.

pub mod backoff;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::text::{TextInbox, TextOutbox};
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg};

/// A physical button of the kiosk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    Call,
    HangUp,
}

impl Button {
    pub fn as_str(self) -> &'static str {
        match self {
            Button::Call => "CALL",
            Button::HangUp => "HANGUP",
        }
    }
}

/// What the kiosk shows (screen, LEDs, systemd status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KioskState {
    /// The hub cannot be reached. `resuming` when a call or a place in the queue is held.
    Offline { resuming: bool },
    /// Ready: press CALL.
    Idle,
    /// Asked for an agent; the hub has not answered yet.
    Requesting,
    /// In the queue.
    Waiting { position: u32, estimated_wait_s: Option<u32> },
    /// Offered to an agent.
    Ringing,
    /// Talking to `agent`; `recorded` when the hub records the call (the screen says so).
    Connected { agent: String, recorded: bool },
    /// The call is over; back to idle after a few seconds.
    Ended { reason: EndReason },
    /// The queue is full; try later.
    Busy,
}

impl KioskState {
    /// Short name for logs, the systemd status line and LEDs.
    pub fn name(&self) -> &'static str {
        match self {
            KioskState::Offline { .. } => "offline",
            KioskState::Idle => "idle",
            KioskState::Requesting => "requesting",
            KioskState::Waiting { .. } => "waiting",
            KioskState::Ringing => "ringing",
            KioskState::Connected { .. } => "connected",
            KioskState::Ended { .. } => "ended",
            KioskState::Busy => "busy",
        }
    }

    /// A line for a person: the systemd status and the demo's account.
    pub fn describe(&self) -> String {
        match self {
            KioskState::Offline { resuming: true } => "offline, reconnecting to resume the call".into(),
            KioskState::Offline { resuming: false } => "offline: service temporarily unavailable".into(),
            KioskState::Idle => "idle: press CALL to talk to an advisor".into(),
            KioskState::Requesting => "asking for an advisor".into(),
            KioskState::Waiting { position, estimated_wait_s: Some(s) } => {
                format!("waiting: position {position}, about {s} s")
            }
            KioskState::Waiting { position, estimated_wait_s: None } => {
                format!("waiting: position {position}")
            }
            KioskState::Ringing => "connecting you to an advisor".into(),
            KioskState::Connected { agent, recorded: false } => format!("in call with {agent}"),
            KioskState::Connected { agent, recorded: true } => format!("in call with {agent} (recorded)"),
            KioskState::Ended { reason } => format!("call ended: {}", reason.describe()),
            KioskState::Busy => "all advisors busy, please try later".into(),
        }
    }

    /// True while a call is being placed or held (OTA updates wait for false).
    pub fn in_call(&self) -> bool {
        matches!(
            self,
            KioskState::Requesting
                | KioskState::Waiting { .. }
                | KioskState::Ringing
                | KioskState::Connected { .. }
                | KioskState::Offline { resuming: true }
        )
    }
}

/// Timings of the kiosk's screens.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// How long "call ended" stays before idle.
    pub ended_screen: Duration,
    /// How long "busy, try later" stays before idle.
    pub busy_screen: Duration,
    /// The kiosk shows the customer that calls may be recorded before they call: requests
    /// carry the customer's consent, and the hub may record (it never does without).
    pub recording_consent: bool,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            ended_screen: Duration::from_secs(5),
            busy_screen: Duration::from_secs(10),
            recording_consent: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The hub welcomed this kiosk on a new connection.
    HubUp,
    /// The connection to the hub is lost.
    HubDown,
    /// A debounced press of a physical button.
    Button(Button),
    FromHub(HubMsg),
    /// Send a text to the agent (the demo's customer; later the screen's keyboard).
    SendText(String),
    /// A deadline passed.
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to the hub. Dropped by the driver while the hub is down; the machine resends what
    /// matters after `HubUp`.
    ToHub(ClientMsg),
    /// The kiosk's state changed.
    State(KioskState),
    /// A text from the agent, shown once.
    TextReceived { call_id: CallId, id: u64, body: String },
    /// The agent showed our text `id`.
    TextDelivered { call_id: CallId, id: u64 },
    /// Nothing to do until then (or the next input).
    Wait(Option<Instant>),
}

/// Inputs that do not fit the current state. The machine is unchanged; the driver logs them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// Text can only be sent in a connected call.
    #[error("not in a call")]
    NotInCall,
    /// Too many texts are waiting for acknowledgement.
    #[error("too many unacknowledged texts")]
    TextBacklog,
    #[error("invalid text: {0}")]
    InvalidText(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    /// CALL pressed, no call id yet. `cancel`: HANGUP pressed meanwhile.
    Requesting {
        cancel: bool,
    },
    Waiting {
        call_id: CallId,
        position: u32,
        estimated_wait_s: Option<u32>,
    },
    Ringing {
        call_id: CallId,
    },
    Connected {
        call_id: CallId,
        agent: String,
        recorded: bool,
    },
    Ended {
        reason: EndReason,
        until: Instant,
    },
    Busy {
        until: Instant,
    },
}

/// The kiosk's sans-IO call core.
#[derive(Debug)]
pub struct CallMachine {
    config: CallConfig,
    hub_up: bool,
    phase: Phase,
    /// Texts of the current call.
    outbox: TextOutbox,
    inbox: TextInbox,
    shown: Option<KioskState>,
    /// A call hung up while the hub was unreachable; the hub is told on reconnect.
    pending_hangup: Option<CallId>,
    /// The waiting call asked back after a reconnect, until the hub answers: a hub the kiosk
    /// moved to (its previous one gone) gives the caller its place under a new call number.
    resuming: Option<CallId>,
    out: VecDeque<Output>,
}

impl CallMachine {
    pub fn new(config: CallConfig) -> Self {
        let mut m = Self {
            config,
            hub_up: false,
            phase: Phase::Idle,
            outbox: TextOutbox::new(),
            inbox: TextInbox::new(),
            shown: None,
            pending_hangup: None,
            resuming: None,
            out: VecDeque::new(),
        };
        m.show();
        m
    }

    /// New screen timings (a configuration reload); they apply from the next screen on.
    pub fn set_config(&mut self, config: CallConfig) {
        self.config = config;
    }

    /// The state as shown to the customer.
    pub fn state(&self) -> KioskState {
        let held = matches!(
            self.phase,
            Phase::Requesting { .. }
                | Phase::Waiting { .. }
                | Phase::Ringing { .. }
                | Phase::Connected { .. }
        );
        if !self.hub_up {
            return KioskState::Offline { resuming: held };
        }
        match &self.phase {
            Phase::Idle => KioskState::Idle,
            Phase::Requesting { .. } => KioskState::Requesting,
            Phase::Waiting { position, estimated_wait_s, .. } => {
                KioskState::Waiting { position: *position, estimated_wait_s: *estimated_wait_s }
            }
            Phase::Ringing { .. } => KioskState::Ringing,
            Phase::Connected { agent, recorded, .. } => {
                KioskState::Connected { agent: agent.clone(), recorded: *recorded }
            }
            Phase::Ended { reason, .. } => KioskState::Ended { reason: *reason },
            Phase::Busy { .. } => KioskState::Busy,
        }
    }

    /// The call this kiosk is in or waiting for.
    pub fn call_id(&self) -> Option<CallId> {
        match self.phase {
            Phase::Waiting { call_id, .. }
            | Phase::Ringing { call_id }
            | Phase::Connected { call_id, .. } => Some(call_id),
            _ => None,
        }
    }

    /// Texts sent in this call and not yet acknowledged.
    pub fn unacked_texts(&self) -> usize {
        self.outbox.unacked_len()
    }

    pub fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), CallError> {
        let result = self.apply(input, now);
        self.show();
        result
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or_else(|| Output::Wait(self.poll_timeout()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Ended { until, .. } | Phase::Busy { until } => Some(until),
            _ => None,
        }
    }

    fn apply(&mut self, input: Input, now: Instant) -> Result<(), CallError> {
        match input {
            Input::HubUp => {
                self.hub_up = true;
                if let Some(call_id) = self.pending_hangup.take() {
                    self.send_hub(ClientMsg::HangUp { call_id });
                }
                match self.phase {
                    Phase::Requesting { cancel: false } => self.send_hub(ClientMsg::RequestAgent {
                        resume: None,
                        consent: self.config.recording_consent,
                    }),
                    Phase::Requesting { cancel: true } => self.phase = Phase::Idle,
                    _ => {
                        if let Some(call_id) = self.call_id() {
                            self.resuming = Some(call_id);
                            self.send_hub(ClientMsg::RequestAgent {
                                resume: Some(call_id),
                                consent: self.config.recording_consent,
                            });
                        }
                    }
                }
            }
            Input::HubDown => self.hub_up = false,
            Input::Button(Button::Call) => self.on_call_button(now),
            Input::Button(Button::HangUp) => self.on_hangup_button(now),
            Input::FromHub(msg) => self.on_hub(msg, now),
            Input::SendText(body) => {
                // Expire first: a refused text must not keep a screen whose deadline passed.
                self.expire(now);
                return self.send_text(body);
            }
            Input::Tick => {}
        }
        self.expire(now);
        Ok(())
    }

    fn on_call_button(&mut self, _now: Instant) {
        if !self.hub_up {
            return; // the screen says the service is unavailable
        }
        if matches!(self.phase, Phase::Idle | Phase::Ended { .. } | Phase::Busy { .. }) {
            self.phase = Phase::Requesting { cancel: false };
            self.send_hub(ClientMsg::RequestAgent { resume: None, consent: self.config.recording_consent });
        }
    }

    fn on_hangup_button(&mut self, now: Instant) {
        match self.phase {
            Phase::Requesting { .. } => self.phase = Phase::Requesting { cancel: true },
            Phase::Waiting { call_id, .. }
            | Phase::Ringing { call_id }
            | Phase::Connected { call_id, .. } => {
                if self.hub_up {
                    self.send_hub(ClientMsg::HangUp { call_id });
                } else {
                    // Told as soon as the hub is back, so the agent is not left holding the call
                    // for the whole grace period.
                    self.pending_hangup = Some(call_id);
                }
                self.end(EndReason::KioskHungUp, now);
            }
            Phase::Idle | Phase::Ended { .. } | Phase::Busy { .. } => {}
        }
    }

    fn on_hub(&mut self, msg: HubMsg, now: Instant) {
        match msg {
            HubMsg::Queued { call_id, position, estimated_wait_s } => match self.phase {
                Phase::Requesting { cancel: true } => {
                    self.send_hub(ClientMsg::HangUp { call_id });
                    self.end(EndReason::KioskHungUp, now);
                }
                Phase::Requesting { cancel: false } => {
                    self.new_call();
                    self.phase = Phase::Waiting { call_id, position, estimated_wait_s };
                }
                Phase::Waiting { call_id: c, .. } | Phase::Ringing { call_id: c } if c == call_id => {
                    self.resuming = None;
                    self.phase = Phase::Waiting { call_id, position, estimated_wait_s };
                }
                // The hub we moved to kept our place, under its own number for the call.
                Phase::Waiting { call_id: c, .. } | Phase::Ringing { call_id: c } if self.resuming == Some(c) => {
                    self.resuming = None;
                    self.phase = Phase::Waiting { call_id, position, estimated_wait_s };
                }
                // A call we no longer want (hung up while the hub was unreachable).
                _ if self.call_id() != Some(call_id) => self.send_hub(ClientMsg::HangUp { call_id }),
                _ => {}
            },
            HubMsg::Busy { .. } => {
                if matches!(self.phase, Phase::Requesting { .. }) {
                    self.phase = Phase::Busy { until: now + self.config.busy_screen };
                }
            }
            HubMsg::Ringing { call_id } => match self.phase {
                Phase::Requesting { cancel: false } => {
                    self.new_call();
                    self.phase = Phase::Ringing { call_id };
                }
                Phase::Waiting { call_id: c, .. } if c == call_id => self.phase = Phase::Ringing { call_id },
                // The hub we moved to kept our place and offers the call at once, under its
                // own number (before it told us our place).
                Phase::Waiting { call_id: c, .. } | Phase::Ringing { call_id: c } if self.resuming == Some(c) => {
                    self.resuming = None;
                    self.phase = Phase::Ringing { call_id };
                }
                Phase::Requesting { cancel: true } => {
                    self.send_hub(ClientMsg::HangUp { call_id });
                    self.end(EndReason::KioskHungUp, now);
                }
                _ => {}
            },
            HubMsg::Connected { call_id, peer, recorded } => match &self.phase {
                Phase::Requesting { cancel: false } => {
                    self.new_call();
                    self.phase = Phase::Connected { call_id, agent: peer, recorded };
                }
                Phase::Waiting { call_id: c, .. } | Phase::Ringing { call_id: c } if *c == call_id => {
                    self.phase = Phase::Connected { call_id, agent: peer, recorded };
                }
                // The hub we moved to kept our place and an advisor answered at once.
                Phase::Waiting { call_id: c, .. } | Phase::Ringing { call_id: c } if self.resuming == Some(*c) => {
                    self.resuming = None;
                    self.phase = Phase::Connected { call_id, agent: peer, recorded };
                }
                Phase::Requesting { cancel: true } => {
                    self.send_hub(ClientMsg::HangUp { call_id });
                    self.end(EndReason::KioskHungUp, now);
                }
                Phase::Connected { call_id: c, agent, .. }
                    if *c == call_id || (self.resuming == Some(*c) && *agent == peer) =>
                {
                    // Resumed after a reconnect, perhaps under a new number (another hub of
                    // the deployment relays it now): what the agent never acknowledged goes
                    // again.
                    self.resuming = None;
                    if *c != call_id {
                        self.phase = Phase::Connected { call_id, agent: peer, recorded };
                    }
                    let resend: Vec<(u64, String)> =
                        self.outbox.unacked().map(|(id, b)| (id, b.to_string())).collect();
                    for (id, body) in resend {
                        self.send_hub(ClientMsg::Text { call_id, id, body });
                    }
                }
                _ => self.send_hub(ClientMsg::HangUp { call_id }),
            },
            HubMsg::CallEnded { call_id, reason } => {
                if self.call_id() != Some(call_id) {
                    return;
                }
                self.resuming = None;
                if reason == EndReason::Unknown
                    && matches!(self.phase, Phase::Waiting { .. } | Phase::Ringing { .. })
                {
                    // The hub lost our place (it restarted): ask again.
                    self.phase = Phase::Requesting { cancel: false };
                    self.send_hub(ClientMsg::RequestAgent { resume: None, consent: self.config.recording_consent });
                } else {
                    self.end(reason, now);
                }
            }
            HubMsg::Text { call_id, id, body } => {
                if let Phase::Connected { call_id: c, .. } = self.phase
                    && c == call_id
                {
                    // Acknowledge every copy: the first ack may have been lost.
                    self.send_hub(ClientMsg::TextAck { call_id, id });
                    if self.inbox.handle_text(id) {
                        self.out.push_back(Output::TextReceived { call_id, id, body });
                    }
                }
            }
            HubMsg::TextAck { call_id, id } => {
                if self.call_id() == Some(call_id) && self.outbox.handle_ack(id) {
                    self.out.push_back(Output::TextDelivered { call_id, id });
                }
            }
            HubMsg::Welcome { .. }
            | HubMsg::Offer { .. }
            | HubMsg::OfferWithdrawn { .. }
            | HubMsg::PeerPresence { .. }
            | HubMsg::Room { .. }
            | HubMsg::Error { .. }
            // Handled by the media driver, which owns the encoder.
            | HubMsg::KeyframeRequest { .. }
            | HubMsg::RateHint { .. }
            | HubMsg::LossReport { .. }
            // Handled by the link, which owns the certificate files.
            | HubMsg::Renewed { .. }
            | HubMsg::RenewRefused { .. }
            // Handled by the link, which reconnects to the hub named (the call is resumed there).
            | HubMsg::MoveTo { .. } => {}
        }
    }

    fn send_text(&mut self, body: String) -> Result<(), CallError> {
        let Phase::Connected { call_id, .. } = self.phase else {
            return Err(CallError::NotInCall);
        };
        crate::protocol::check_text(&body).map_err(CallError::InvalidText)?;
        let id = self.outbox.push(body.clone()).ok_or(CallError::TextBacklog)?;
        self.send_hub(ClientMsg::Text { call_id, id, body });
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        if let Phase::Ended { until, .. } | Phase::Busy { until } = self.phase
            && now >= until
        {
            self.phase = Phase::Idle;
        }
    }

    fn new_call(&mut self) {
        self.outbox = TextOutbox::new();
        self.inbox = TextInbox::new();
    }

    fn end(&mut self, reason: EndReason, now: Instant) {
        self.phase = Phase::Ended { reason, until: now + self.config.ended_screen };
    }

    fn send_hub(&mut self, msg: ClientMsg) {
        if self.hub_up {
            self.out.push_back(Output::ToHub(msg));
        }
    }

    fn show(&mut self) {
        let state = self.state();
        if self.shown.as_ref() != Some(&state) {
            self.shown = Some(state.clone());
            self.out.push_back(Output::State(state));
        }
    }
}

#[cfg(test)]
mod tests;
