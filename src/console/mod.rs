//! The agent console's state machine — sans-IO: the agent's side of the protocol, whatever
//! drives it (a terminal, a script, or the hub's browser console).
//!
//! It keeps the room's state, the call offered, the call in progress and its texts (ids,
//! acknowledgements, resending after the kiosk comes back, each text shown once), and the
//! scripted answering of demos and load tests. Inputs are what the hub says
//! ([`Console::handle_hub`]), what the agent does ([`Console::handle_command`]) and the time
//! ([`Console::handle_timeout`]); outputs ([`Console::poll_output`], drained until
//! [`Output::Wait`]) are messages for the hub, events to show, and when to start and stop the
//! call's media.

#[cfg(test)]
mod tests;
pub mod web;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::text::{TextInbox, TextOutbox};
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg, Presence, RoomState, WithdrawReason};

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

/// What the agent does at the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Idle,
    Close,
    Accept,
    Decline,
    Say(String),
    HangUp,
    Status,
    Help,
}

impl Command {
    /// Parses a console line (`quit` is the terminal's, not the console's: `Ok(None)` for an
    /// empty line); `Err` holds a message for the person.
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
            other => return Err(format!("unknown command `{other}`; type `help`")),
        };
        Ok(Some(cmd))
    }
}

pub const HELP: &str = "commands: idle | close | accept | decline | say <text> | hangup | status | quit";

/// What happened, for the person (or the test) watching the console.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Room {
        state: RoomState,
    },
    Offer {
        call_id: CallId,
        kiosk: String,
        waited_ms: u64,
        timeout_ms: u64,
    },
    OfferWithdrawn {
        call_id: CallId,
        reason: WithdrawReason,
    },
    AcceptSent {
        call_id: CallId,
    },
    Connected {
        call_id: CallId,
        kiosk: String,
        recorded: bool,
    },
    /// The kiosk lost its connection (`false`) and came back (`true`); the call is held.
    PeerPresence {
        call_id: CallId,
        present: bool,
    },
    Ended {
        call_id: CallId,
        reason: EndReason,
    },
    TextSent {
        call_id: CallId,
        id: u64,
    },
    TextReceived {
        call_id: CallId,
        id: u64,
        body: String,
        kiosk: String,
    },
    TextDelivered {
        call_id: CallId,
        id: u64,
    },
    /// The hub refused a request.
    Error {
        message: String,
    },
    /// A command that could not be carried out, or `status` and `help`: a line for the person.
    Notice(String),
}

impl Event {
    /// The line a terminal console prints, if any.
    pub fn line(&self) -> Option<String> {
        let line = match self {
            Self::Room { state } => format!("[room] {}", state.as_str()),
            Self::Offer { call_id, kiosk, waited_ms, timeout_ms } => format!(
                "[offer] call {call_id} from {kiosk}, waiting {:.1} s — `accept` or `decline` within {} s",
                *waited_ms as f64 / 1000.0,
                timeout_ms / 1000
            ),
            Self::OfferWithdrawn { call_id, reason } => {
                format!("[offer] call {call_id} withdrawn ({reason:?})")
            }
            Self::AcceptSent { .. } | Self::TextSent { .. } | Self::TextDelivered { .. } => return None,
            Self::Connected { call_id, kiosk, recorded } => {
                let note = if *recorded { " — this call is being RECORDED" } else { "" };
                format!("[call {call_id}] connected with {kiosk}{note}")
            }
            Self::PeerPresence { call_id, present: true } => format!("[call {call_id}] the kiosk is back"),
            Self::PeerPresence { call_id, present: false } => {
                format!("[call {call_id}] the kiosk lost its connection; holding the call")
            }
            Self::Ended { call_id, reason } => format!("[call {call_id}] ended: {}", reason.describe()),
            Self::TextReceived { call_id, body, kiosk, .. } => format!("[call {call_id}] {kiosk}: {body}"),
            Self::Error { message } => format!("[hub] {message}"),
            Self::Notice(line) => line.clone(),
        };
        Some(line)
    }
}

/// What the console asks of its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    ToHub(ClientMsg),
    Event(Event),
    /// Start the call's media (a running one, of another call, is stopped first).
    StartMedia {
        call_id: CallId,
    },
    StopMedia,
    /// Nothing more until the next input or this time.
    Wait(Option<Instant>),
}

/// The call in progress.
#[derive(Debug)]
struct Call {
    call_id: CallId,
    kiosk: String,
    outbox: TextOutbox,
    inbox: TextInbox,
    kiosk_present: bool,
}

/// The agent's side of the protocol. See the module's documentation.
#[derive(Debug)]
pub struct Console {
    auto: Option<AutoAnswer>,
    room: RoomState,
    offer: Option<(CallId, String)>,
    call: Option<Call>,
    /// Scripted accept and hang-up.
    answer_at: Option<(Instant, CallId)>,
    hangup_at: Option<(Instant, CallId)>,
    out: VecDeque<Output>,
    /// After a reconnect in a call: the call asked back (`resume_call`), and whether to go
    /// IDLE if the hub does not know it.
    resuming: Option<(CallId, bool)>,
}

impl Console {
    /// A console whose room is CLOSE; a scripted one asks to go IDLE at once.
    pub fn new(auto: Option<AutoAnswer>) -> Self {
        let mut out = VecDeque::new();
        if auto.is_some() {
            out.push_back(Output::ToHub(ClientMsg::SetPresence { presence: Presence::Idle }));
        }
        Self {
            auto,
            room: RoomState::Close,
            offer: None,
            call: None,
            answer_at: None,
            hangup_at: None,
            out,
            resuming: None,
        }
    }

    pub fn room(&self) -> RoomState {
        self.room
    }

    /// The call in progress.
    pub fn call_id(&self) -> Option<CallId> {
        self.call.as_ref().map(|c| c.call_id)
    }

    /// Whether the console is scripted (it then runs without commands).
    pub fn scripted(&self) -> bool {
        self.auto.is_some()
    }

    /// Drain after every input, until [`Output::Wait`].
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or_else(|| Output::Wait(self.deadline()))
    }

    fn deadline(&self) -> Option<Instant> {
        [self.answer_at.map(|(t, _)| t), self.hangup_at.map(|(t, _)| t)].into_iter().flatten().min()
    }

    fn emit(&mut self, ev: Event) {
        self.out.push_back(Output::Event(ev));
    }

    fn send(&mut self, msg: ClientMsg) {
        if let ClientMsg::Accept { call_id } = &msg {
            self.out.push_back(Output::Event(Event::AcceptSent { call_id: *call_id }));
        }
        self.out.push_back(Output::ToHub(msg));
    }

    fn call_mut(&mut self, call_id: CallId) -> Option<&mut Call> {
        self.call.as_mut().filter(|c| c.call_id == call_id)
    }

    /// What the hub said. Media hints (rates, loss, keyframe requests) are the driver's and
    /// are ignored here.
    pub fn handle_hub(&mut self, msg: HubMsg, now: Instant) {
        match msg {
            HubMsg::Room { state } => {
                self.room = state;
                self.emit(Event::Room { state });
            }
            HubMsg::Offer { call_id, kiosk, waited_ms, timeout_ms } => {
                self.emit(Event::Offer { call_id, kiosk: kiosk.clone(), waited_ms, timeout_ms });
                self.offer = Some((call_id, kiosk));
                if let Some(a) = &self.auto {
                    self.answer_at = Some((now + a.answer_delay, call_id));
                }
            }
            HubMsg::OfferWithdrawn { call_id, reason } => {
                self.emit(Event::OfferWithdrawn { call_id, reason });
                if self.offer.as_ref().is_some_and(|(c, _)| *c == call_id) {
                    self.offer = None;
                }
                self.answer_at = self.answer_at.filter(|(_, c)| *c != call_id);
            }
            HubMsg::Connected { call_id, peer, recorded } => {
                if self.resuming.is_some() && self.call.as_ref().is_some_and(|c| c.kiosk == peer) {
                    self.on_resumed(call_id, recorded);
                } else {
                    self.on_connected(call_id, peer, recorded, now);
                }
            }
            HubMsg::PeerPresence { call_id, present } => self.on_presence(call_id, present),
            HubMsg::CallEnded { call_id, reason } => {
                if self.call_id() == Some(call_id) {
                    self.call = None;
                    self.hangup_at = None;
                    self.out.push_back(Output::StopMedia);
                    self.emit(Event::Ended { call_id, reason });
                    // The hub did not know the call we asked back: take calls again.
                    if let Some((_, true)) = self.resuming.take() {
                        self.send(ClientMsg::SetPresence { presence: Presence::Idle });
                    }
                }
            }
            HubMsg::Text { call_id, id, body } => {
                let Some(c) = self.call_mut(call_id) else { return };
                let (fresh, kiosk) = (c.inbox.handle_text(id), c.kiosk.clone());
                self.send(ClientMsg::TextAck { call_id, id });
                if fresh {
                    self.emit(Event::TextReceived { call_id, id, body, kiosk });
                }
            }
            HubMsg::TextAck { call_id, id } => {
                if self.call_mut(call_id).is_some_and(|c| c.outbox.handle_ack(id)) {
                    self.emit(Event::TextDelivered { call_id, id });
                }
            }
            HubMsg::Error { message, .. } => self.emit(Event::Error { message }),
            HubMsg::RateHint { .. }
            | HubMsg::LossReport { .. }
            | HubMsg::KeyframeRequest { .. }
            | HubMsg::Welcome { .. }
            | HubMsg::Queued { .. }
            | HubMsg::Busy { .. }
            | HubMsg::Ringing { .. }
            // The session's renewal handles these.
            | HubMsg::Renewed { .. }
            | HubMsg::RenewRefused { .. }
            // For kiosks only.
            | HubMsg::MoveTo { .. } => {}
        }
    }

    fn on_connected(&mut self, call_id: CallId, kiosk: String, recorded: bool, now: Instant) {
        self.offer = None;
        self.emit(Event::Connected { call_id, kiosk: kiosk.clone(), recorded });
        self.out.push_back(Output::StartMedia { call_id });
        self.call = Some(Call {
            call_id,
            kiosk,
            outbox: TextOutbox::new(),
            inbox: TextInbox::new(),
            kiosk_present: true,
        });
        let Some(a) = self.auto.clone() else { return };
        if let Some(d) = a.call_duration {
            self.hangup_at = Some((now + d, call_id));
        }
        if let Some(g) = a.greeting {
            self.say(g);
        }
    }

    /// The call asked back after a reconnect goes on, perhaps under a new number (another hub
    /// relays it): media start again, and texts the kiosk never acknowledged go again (the
    /// kiosk shows each once).
    fn on_resumed(&mut self, call_id: CallId, recorded: bool) {
        self.resuming = None;
        let Some(c) = self.call.as_mut() else { return };
        let old = c.call_id;
        c.call_id = call_id;
        c.kiosk_present = true;
        let kiosk = c.kiosk.clone();
        let resend: Vec<ClientMsg> = c
            .outbox
            .unacked()
            .map(|(id, body)| ClientMsg::Text { call_id, id, body: body.to_string() })
            .collect();
        if let Some((_, id)) = self.hangup_at.as_mut().filter(|(_, id)| *id == old) {
            *id = call_id;
        }
        self.emit(Event::Connected { call_id, kiosk, recorded });
        self.out.push_back(Output::StartMedia { call_id });
        resend.into_iter().for_each(|m| self.send(m));
    }

    fn on_presence(&mut self, call_id: CallId, present: bool) {
        let Some(c) = self.call_mut(call_id) else { return };
        c.kiosk_present = present;
        // Texts sent while the kiosk was away were not delivered: send them again.
        let resend: Vec<ClientMsg> = if present {
            c.outbox
                .unacked()
                .map(|(id, body)| ClientMsg::Text { call_id, id, body: body.to_string() })
                .collect()
        } else {
            Vec::new()
        };
        self.emit(Event::PeerPresence { call_id, present });
        resend.into_iter().for_each(|m| self.send(m));
    }

    /// Sends a text in the call in progress.
    fn say(&mut self, body: String) {
        let Some(c) = self.call.as_mut() else { return self.emit(Event::Notice("not in a call".into())) };
        if let Err(e) = crate::protocol::check_text(&body) {
            return self.emit(Event::Notice(format!("not sent: {e}")));
        }
        let (call_id, present) = (c.call_id, c.kiosk_present);
        let Some(id) = c.outbox.push(body.clone()) else {
            return self.emit(Event::Notice("not sent: too many texts waiting for the kiosk".into()));
        };
        self.emit(Event::TextSent { call_id, id });
        if present {
            self.send(ClientMsg::Text { call_id, id, body });
        }
    }

    /// What the agent did.
    pub fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Idle => self.send(ClientMsg::SetPresence { presence: Presence::Idle }),
            Command::Close => self.send(ClientMsg::SetPresence { presence: Presence::Close }),
            Command::Accept => match &self.offer {
                Some((call_id, _)) => self.send(ClientMsg::Accept { call_id: *call_id }),
                None => self.emit(Event::Notice("no call is offered".into())),
            },
            Command::Decline => match self.offer.take() {
                Some((call_id, _)) => self.send(ClientMsg::Decline { call_id }),
                None => self.emit(Event::Notice("no call is offered".into())),
            },
            Command::Say(body) => self.say(body),
            Command::HangUp => match self.call_id() {
                Some(call_id) => self.send(ClientMsg::HangUp { call_id }),
                None => self.emit(Event::Notice("not in a call".into())),
            },
            Command::Status => {
                let room = self.room.as_str();
                let line = match (&self.call, &self.offer) {
                    (Some(c), _) => format!("room {room} — in call {} with {}", c.call_id, c.kiosk),
                    (None, Some((id, k))) => format!("room {room} — call {id} from {k} offered"),
                    _ => format!("room {room}"),
                };
                self.emit(Event::Notice(line));
            }
            Command::Help => self.emit(Event::Notice(HELP.into())),
        }
    }

    /// The time is `now`: scripted accepts and hang-ups that are due. Early or repeated calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((t, call_id)) = self.answer_at
            && t <= now
        {
            self.answer_at = None;
            if self.offer.as_ref().is_some_and(|(c, _)| *c == call_id) {
                self.send(ClientMsg::Accept { call_id });
            }
        }
        if let Some((t, call_id)) = self.hangup_at
            && t <= now
        {
            self.hangup_at = None;
            if self.call_id() == Some(call_id) {
                self.send(ClientMsg::HangUp { call_id });
            }
        }
    }

    /// The connection to the hub was lost and a new one is up (to the same hub or another of
    /// the deployment). A call in progress is asked back (`resume_call`): a hub of the
    /// deployment that took over the call goes on with it; texts typed meanwhile wait for it.
    /// An offer went with the old connection, and the new session's room starts CLOSE. An
    /// advisor who was taking calls (IDLE, offered, in a call or wrapping up) is made IDLE
    /// again once no call is to be resumed, so that a failover does not quietly stop their
    /// calls; one who had closed stays CLOSE.
    pub fn reconnected(&mut self) {
        let was_open = self.room != RoomState::Close;
        self.offer = None;
        self.answer_at = None;
        if self.room != RoomState::Close {
            self.room = RoomState::Close;
            self.emit(Event::Room { state: RoomState::Close });
        }
        let take_calls = was_open || self.auto.is_some();
        if let Some(call) = self.call.as_mut() {
            call.kiosk_present = false;
            let call_id = call.call_id;
            self.resuming = Some((call_id, take_calls));
            self.out.push_back(Output::StopMedia);
            self.emit(Event::Notice(format!(
                "[call {call_id}] connection lost; asking the hub for the call"
            )));
            self.send(ClientMsg::ResumeCall { call_id });
            return;
        }
        self.hangup_at = None;
        if take_calls {
            self.send(ClientMsg::SetPresence { presence: Presence::Idle });
        }
    }

    /// The console is closing: a call in progress is hung up rather than leaving the customer
    /// alone.
    pub fn close(&mut self) {
        if let Some(call_id) = self.call_id() {
            self.send(ClientMsg::HangUp { call_id });
        }
        self.out.push_back(Output::StopMedia);
    }
}
