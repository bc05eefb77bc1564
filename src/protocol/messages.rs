//! Control messages between kiosks, agents and the hub.
//!
//! Messages are JSON objects tagged by `"type"`. Unknown fields are tolerated (a newer peer may add
//! some); an unknown `type` is refused. Every message is validated after decoding
//! ([`ClientMsg::validate`]): lengths, characters and ids.

use serde::{Deserialize, Serialize};

use super::{MAX_CHAIN_BYTES, MAX_CSR_BYTES, MAX_ID_BYTES, MAX_TEXT_BYTES};

/// A call's id, given by the hub. Unique over the hub's event log, also across restarts.
pub type CallId = u64;

/// What a peer is, as written in its certificate (`OU`). Never taken from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Kiosk,
    Agent,
    Hub,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kiosk => "kiosk",
            Role::Agent => "agent",
            Role::Hub => "hub",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kiosk" => Ok(Role::Kiosk),
            "agent" => Ok(Role::Agent),
            "hub" => Ok(Role::Hub),
            other => Err(format!("unknown role `{other}` (expected kiosk, agent or hub)")),
        }
    }
}

/// The state an agent asks for. BUSY, OFFERED and WRAP-UP are set by the hub, never asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Ready to take calls.
    Idle,
    /// Not taking calls (break, end of day). Finishes a running call first.
    Close,
}

/// An agent room's state as the hub sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomState {
    Idle,
    /// A call is being offered to this agent; it lasts at most `offer_timeout`.
    Offered,
    Busy,
    /// After a call, before IDLE again (the hub's `wrap_up`).
    WrapUp,
    Close,
}

impl RoomState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomState::Idle => "IDLE",
            RoomState::Offered => "OFFERED",
            RoomState::Busy => "BUSY",
            RoomState::WrapUp => "WRAP-UP",
            RoomState::Close => "CLOSE",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The customer pressed HANGUP (or cancelled while waiting).
    KioskHungUp,
    /// The agent hung up.
    AgentHungUp,
    /// The agent's connection was lost during the call.
    AgentDisconnected,
    /// The kiosk's connection was lost and did not come back within the hub's grace period.
    KioskDisconnected,
    /// The hub is shutting down.
    HubShutdown,
    /// The kiosk asked to resume a call the hub no longer knows.
    Unknown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::KioskHungUp => "kiosk_hung_up",
            EndReason::AgentHungUp => "agent_hung_up",
            EndReason::AgentDisconnected => "agent_disconnected",
            EndReason::KioskDisconnected => "kiosk_disconnected",
            EndReason::HubShutdown => "hub_shutdown",
            EndReason::Unknown => "unknown_call",
        }
    }

    /// A sentence for a person (console, logs).
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::KioskHungUp => "the customer hung up",
            EndReason::AgentHungUp => "the advisor hung up",
            EndReason::AgentDisconnected => "the advisor's connection was lost",
            EndReason::KioskDisconnected => "the kiosk's connection was lost",
            EndReason::HubShutdown => "the hub is shutting down",
            EndReason::Unknown => "the call is no longer known to the hub",
        }
    }
}

/// Why an offer was taken back from an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// Not answered within `offer_timeout`; the agent is set to CLOSE.
    Timeout,
    /// The customer hung up or left before the agent answered.
    CallerLeft,
    /// The kiosk lost its connection; the call keeps its place in the queue.
    CallerAway,
}

/// Messages from a kiosk or an agent to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message on the control stream. `role` must match the certificate.
    Hello { role: Role, software: String },
    /// Kiosk: the customer wants an agent. `resume` names a call this kiosk was in before a
    /// reconnect; the hub gives it back its place (queue or call) if it still holds it.
    RequestAgent {
        #[serde(default)]
        resume: Option<CallId>,
        /// The kiosk showed the customer the recording notice before this request: the hub may
        /// record the call (when its configuration says so). Without it nothing is recorded.
        #[serde(default)]
        consent: bool,
    },
    /// Kiosk: leave the queue, or end the call.
    HangUp { call_id: CallId },
    /// Agent: go IDLE or CLOSE.
    SetPresence { presence: Presence },
    /// Agent: take the offered call.
    Accept { call_id: CallId },
    /// Agent, after a reconnect (perhaps to another hub of the deployment): go on with the
    /// call in progress `call_id`. The hub answers `connected` (perhaps under another number)
    /// or `call_ended` (`unknown`).
    ResumeCall { call_id: CallId },
    /// Agent: refuse the offered call; it goes to the next IDLE agent.
    Decline { call_id: CallId },
    /// Either party: a text message in a call. `id` counts from 1 per sender and call.
    Text { call_id: CallId, id: u64, body: String },
    /// Either party: the text `id` from the other party was shown.
    TextAck { call_id: CallId, id: u64 },
    /// Either party: the video from the other party cannot be decoded until a keyframe;
    /// the hub relays this to the other party's encoder.
    KeyframeRequest { call_id: CallId },
    /// Either party: the video it receives arrives late (a queue builds on its path): the other
    /// party should send at most this many bits per second. Relayed by the hub.
    RateHint { call_id: CallId, bitrate_bps: u32 },
    /// Either party: the share of the other party's audio frames the network lost over the
    /// last seconds (percent, 0–100). Relayed by the hub; the sender adds redundancy and tunes
    /// its FEC from it.
    LossReport { call_id: CallId, audio_loss_pct: u8 },
    /// Kiosk: its health, sent on connecting and every few seconds; the hub exposes it per
    /// kiosk in its metrics.
    Health(KioskHealth),
    /// Kiosk or agent: a certificate signing request (PEM) for a new key, to renew the
    /// certificate before it expires. The hub issues for the identity of this connection's
    /// certificate, never for what the request names.
    Renew { csr: String },
}

/// A kiosk's health as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KioskHealth {
    /// The call state (`idle`, `connected`, ...).
    pub state: String,
    /// Devices that do not work; at most [`MAX_PROBLEMS`] lines.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Round-trip time to the hub in milliseconds, as QUIC measures it.
    #[serde(default)]
    pub rtt_ms: u32,
    /// Packets sent and declared lost on this connection.
    #[serde(default)]
    pub sent_packets: u64,
    #[serde(default)]
    pub lost_packets: u64,
}

/// Most device problems a kiosk reports at once.
pub const MAX_PROBLEMS: usize = 8;

impl ClientMsg {
    /// The message kind as written on the wire, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::RequestAgent { .. } => "request_agent",
            ClientMsg::HangUp { .. } => "hang_up",
            ClientMsg::SetPresence { .. } => "set_presence",
            ClientMsg::Accept { .. } => "accept",
            ClientMsg::ResumeCall { .. } => "resume_call",
            ClientMsg::Decline { .. } => "decline",
            ClientMsg::Text { .. } => "text",
            ClientMsg::TextAck { .. } => "text_ack",
            ClientMsg::KeyframeRequest { .. } => "keyframe_request",
            ClientMsg::Health(_) => "health",
            ClientMsg::RateHint { .. } => "rate_hint",
            ClientMsg::LossReport { .. } => "loss_report",
            ClientMsg::Renew { .. } => "renew",
        }
    }

    /// Checks the bounds that JSON cannot express.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ClientMsg::Hello { software, .. } => check_len("software", software, MAX_ID_BYTES),
            ClientMsg::Health(h) => {
                check_len("state", &h.state, 32)?;
                if h.problems.len() > MAX_PROBLEMS {
                    return Err(format!("{} problems, at most {MAX_PROBLEMS}", h.problems.len()));
                }
                h.problems.iter().try_for_each(|p| check_len("problem", p, 512))
            }
            ClientMsg::Text { body, id, .. } => {
                check_text(body)?;
                if *id == 0 {
                    return Err("text id 0 is reserved".into());
                }
                Ok(())
            }
            ClientMsg::Renew { csr } => check_pem("csr", csr, "CERTIFICATE REQUEST", MAX_CSR_BYTES),
            _ => Ok(()),
        }
    }
}

/// Messages from the hub to a kiosk or an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    /// Answer to `hello`: who the hub takes this peer to be (from its certificate).
    Welcome { id: String, role: Role },
    /// Kiosk: waiting in the queue. Sent again whenever the position or the estimate changes.
    /// `estimated_wait_s` is absent when no agent is available to estimate from.
    Queued {
        call_id: CallId,
        position: u32,
        #[serde(default)]
        estimated_wait_s: Option<u32>,
    },
    /// Kiosk: the queue is full; try again later.
    Busy { retry_after_s: u32 },
    /// Kiosk: an agent is being offered this call.
    Ringing { call_id: CallId },
    /// Agent: a call is offered. Answer with `accept` or `decline` within `timeout_ms`.
    Offer { call_id: CallId, kiosk: String, waited_ms: u64, timeout_ms: u64 },
    /// Agent: the offer is no longer valid.
    OfferWithdrawn { call_id: CallId, reason: WithdrawReason },
    /// Both: the call is connected. `peer` is the other party's id; `recorded` says that the
    /// hub records the call (both parties show it).
    Connected {
        call_id: CallId,
        peer: String,
        #[serde(default)]
        recorded: bool,
    },
    /// Agent: the kiosk's connection is lost (`present: false`) or back (`true`).
    PeerPresence { call_id: CallId, present: bool },
    /// Both: the call is over.
    CallEnded { call_id: CallId, reason: EndReason },
    /// Agent: the room's state changed.
    Room { state: RoomState },
    /// Both: a text from the other party.
    Text { call_id: CallId, id: u64, body: String },
    /// Both: the other party showed the text `id`.
    TextAck { call_id: CallId, id: u64 },
    /// Both: the other party needs a keyframe: encode the next frame as one.
    KeyframeRequest { call_id: CallId },
    /// Both: send video at most at this rate (the other party receives it late).
    RateHint { call_id: CallId, bitrate_bps: u32 },
    /// Both: the other party loses this share of our audio frames (percent).
    LossReport { call_id: CallId, audio_loss_pct: u8 },
    /// The hub refuses what the peer did; `fatal` means the connection is closed next.
    Error { message: String, fatal: bool },
    /// Kiosk or agent: the renewed certificate chain (PEM: the new certificate first), for the
    /// key of the request. Used from the next connection.
    Renewed { chain: String },
    /// Kiosk or agent: the renewal was not done (no renewal CA at this hub, a bad request);
    /// the party tries again later.
    RenewRefused { reason: String },
    /// Kiosk: another hub of the deployment, with an advisor free, took this waiting call
    /// over; connect to it at `address` (host:port, authenticated like any hub) and resume the
    /// call there (it keeps its place). This hub has let the call go.
    MoveTo { call_id: CallId, address: String },
}

impl HubMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            HubMsg::Welcome { .. } => "welcome",
            HubMsg::Queued { .. } => "queued",
            HubMsg::Busy { .. } => "busy",
            HubMsg::Ringing { .. } => "ringing",
            HubMsg::Offer { .. } => "offer",
            HubMsg::OfferWithdrawn { .. } => "offer_withdrawn",
            HubMsg::Connected { .. } => "connected",
            HubMsg::PeerPresence { .. } => "peer_presence",
            HubMsg::CallEnded { .. } => "call_ended",
            HubMsg::Room { .. } => "room",
            HubMsg::Text { .. } => "text",
            HubMsg::TextAck { .. } => "text_ack",
            HubMsg::KeyframeRequest { .. } => "keyframe_request",
            HubMsg::RateHint { .. } => "rate_hint",
            HubMsg::LossReport { .. } => "loss_report",
            HubMsg::Error { .. } => "error",
            HubMsg::Renewed { .. } => "renewed",
            HubMsg::RenewRefused { .. } => "renew_refused",
            HubMsg::MoveTo { .. } => "move_to",
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            HubMsg::Welcome { id, .. } => check_len("id", id, MAX_ID_BYTES),
            HubMsg::Offer { kiosk, .. } => check_len("kiosk", kiosk, MAX_ID_BYTES),
            HubMsg::Connected { peer, .. } => check_len("peer", peer, MAX_ID_BYTES),
            HubMsg::Text { body, .. } => check_text(body),
            HubMsg::Error { message, .. } => check_len("message", message, MAX_TEXT_BYTES),
            HubMsg::Renewed { chain } => check_pem("chain", chain, "CERTIFICATE", MAX_CHAIN_BYTES),
            HubMsg::RenewRefused { reason } => check_len("reason", reason, MAX_TEXT_BYTES),
            HubMsg::MoveTo { address, .. } => check_len("address", address, MAX_ID_BYTES),
            _ => Ok(()),
        }
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is {} bytes, more than {max}", value.len()));
    }
    Ok(())
}

/// A PEM text of at most `max` bytes that begins with a `label` block, in printable ASCII.
fn check_pem(field: &str, value: &str, label: &str, max: usize) -> Result<(), String> {
    check_len(field, value, max)?;
    if !value.trim_start().starts_with(&format!("-----BEGIN {label}-----")) {
        return Err(format!("{field} is not a PEM {label}"));
    }
    if value.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ' || b == b'\n' || b == b'\r')) {
        return Err(format!("{field} holds bytes that PEM does not"));
    }
    Ok(())
}

/// A text body: 1..=MAX_TEXT_BYTES bytes, no control characters other than newline and tab.
pub fn check_text(body: &str) -> Result<(), String> {
    if body.is_empty() {
        return Err("empty text".into());
    }
    check_len("text", body, MAX_TEXT_BYTES)?;
    if let Some(c) = body.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(format!("text contains control character U+{:04X}", c as u32));
    }
    Ok(())
}
