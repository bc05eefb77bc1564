//! The hub's rooms and queue: who waits, who is offered what, and when calls start and end.
//!
//! Sans-IO. The driver (`hub.rs`) feeds [`Input`]s with the time they happened and drains
//! [`Output`]s until [`Output::Wait`]:
//!
//! 1. `handle_input(Input::Connected { .. }, now)` when a peer's TLS handshake succeeded
//!    (role and id from its certificate), `Input::Message` for each decoded control message,
//!    `Input::Disconnected` when its connection ends, `Input::Tick` when the deadline of the
//!    last `Wait` passes (early or repeated ticks are harmless).
//! 2. After every input, `poll_output()` until it returns `Output::Wait(deadline)`: send the
//!    messages, close the peers, append the events, then sleep until `deadline` or the next input.
//!
//! Rules: callers wait in one FIFO queue; an IDLE agent is offered the longest-waiting caller,
//! and of several IDLE agents the one idle longest gets the offer. A declined or unanswered
//! offer goes to the next IDLE agent and the caller keeps its place. A kiosk that loses its
//! connection keeps its place (or its call) for `kiosk_grace`.
//! With a database shared by several hubs, a kiosk that resumes a call this hub does not know
//! keeps the place it had on another hub: the driver looks it up ([`Output::FindPlace`],
//! [`Input::PlaceFound`]) and the caller joins by its original time of joining.

pub mod log;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::limits::{Rate, RateRefusal, RateTable};
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg, Presence, Role, RoomState, WithdrawReason};
pub use log::{Event, EventRecord, LogSummary, Moved};

/// A connection, numbered by the driver. Never reused within a hub's life.
pub type PeerId = u64;

/// Queue behaviour, from the hub's `[queue]` configuration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Most callers waiting at once; the next is told "busy, try later".
    pub max_queue: usize,
    /// How long an agent has to answer an offer.
    pub offer_timeout: Duration,
    /// Time after a call before the agent is IDLE again.
    pub wrap_up: Duration,
    /// How long a kiosk that lost its connection keeps its place or its call.
    pub kiosk_grace: Duration,
    /// Handle time assumed for wait estimates until calls have been measured.
    pub default_handle_time: Duration,
    /// What a busy kiosk is told to wait before asking again.
    pub busy_retry_after: Duration,
    /// Record calls whose kiosk asked with the customer's consent.
    pub record_calls: bool,
    /// Fresh call requests per kiosk; past it the kiosk is told busy (with when to retry),
    /// and no call is made: a kiosk asking again and again cannot ring the agents.
    pub call_requests: Rate,
    /// Texts per sender per call; past it a text is refused (not relayed) and the sender told.
    pub texts: Rate,
    /// The hub shares the deployment's database with other hubs: a kiosk that resumes a call
    /// this hub does not know may have waited on another hub, so the core asks the driver to
    /// look up its place ([`Output::FindPlace`]) before saying the call is unknown.
    /// With it, a caller waiting here with no advisor free here is sent to another hub that
    /// has one ([`Output::FindFreeHub`]).
    pub shared_places: bool,
}

/// How often a hub whose callers wait with no advisor free here looks for another hub with
/// one (the rooms in the database are at most a fraction of a second old).
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Most callers sent to other hubs per look.
pub const SEND_AWAY_MAX: usize = 16;

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queue: 50,
            offer_timeout: Duration::from_secs(20),
            wrap_up: Duration::ZERO,
            kiosk_grace: Duration::from_secs(10),
            default_handle_time: Duration::from_secs(180),
            busy_retry_after: Duration::from_secs(60),
            record_calls: false,
            call_requests: Rate::per_minute(10),
            texts: Rate::per_minute(60),
            shared_places: false,
        }
    }
}

/// The detail of the `abandoned` record of a caller that resumed on another hub.
pub const MOVED: &str = "moved";

/// Most kiosks (and call sides) whose rates are tracked at once: far above any hub's kiosks;
/// keys whose bucket has refilled are forgotten first (`limits::RateTable`).
const RATE_KEYS: usize = 20_000;

/// Handle times kept for the wait estimate (a moving window).
const HANDLE_WINDOW: usize = 20;

/// Most outputs buffered between two drains. A drain follows every input, so only a single
/// input can fill it (for example a change that re-estimates every waiting caller: at most
/// `max_queue` messages plus a few). Past it the driver is not draining: a contract error.
const MAX_PENDING_OUTPUTS: usize = 100_000;

/// What the driver tells the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A peer completed mutual TLS. `role` and `id` come from its certificate.
    Connected { peer: PeerId, role: Role, id: String },
    /// A decoded control message from a peer.
    Message { peer: PeerId, msg: ClientMsg },
    /// The peer's connection ended (closed, timed out or refused).
    Disconnected { peer: PeerId },
    /// A deadline passed.
    Tick,
    /// The hub stops: end every call.
    Shutdown,
    /// The answer to [`Output::FindPlace`]: where the kiosk on `peer` waited in `call_id` on
    /// another hub, or `None` (no such place, or the database could not say).
    PlaceFound { peer: PeerId, call_id: CallId, place: Option<Moved> },
    /// The deployment's database says that hub `from` is dead (its lease expired) and this
    /// hub took over its waiting callers, oldest first: each keeps its place here by its
    /// original time of joining, held as away until its kiosk comes back (or `kiosk_grace`).
    Adopt { from: String, callers: Vec<Waiting> },
    /// The answer to [`Output::FindCall`], or to [`Output::FindPlace`] when what the kiosk
    /// resumed is a call in progress: the call as the hub that relayed it left it, or `None`.
    CallFound { peer: PeerId, call_id: CallId, call: Option<MovedCall> },
    /// Another hub took `kiosk` (it resumed there): a waiting call of it here is dropped,
    /// logged as `abandoned` with the detail `moved` (the deployment's report leaves it out).
    Released { kiosk: String },
    /// The answer to [`Output::FindFreeHub`]: where kiosks reach a hub with advisors free,
    /// and the callers to send there (as many as it has advisors free, the first of those
    /// asked about, each now in the database's `waiting` so that the other hub finds its
    /// place), or `None`.
    FreeHub { address: Option<String>, callers: Vec<Waiting> },
    /// Whether this hub holds its lease in the deployment's database. Without it, another hub
    /// may take over its callers: it makes no offers.
    Lease { held: bool },
}

/// A call in progress on another hub (which died, or which its kiosk left), as the
/// deployment's database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedCall {
    /// The hub that relayed it, and the call's number there.
    pub hub: String,
    pub call_id: CallId,
    pub kiosk: String,
    pub agent: String,
    /// When it was answered (Unix ms).
    pub since_ms: u64,
}

/// A caller waiting on a hub that died, as the deployment's database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub kiosk: String,
    /// The call's number on the hub it waited on.
    pub call_id: CallId,
    /// When the caller first joined a queue (Unix ms).
    pub joined_ms: u64,
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send {
        peer: PeerId,
        msg: HubMsg,
    },
    /// Close the peer's connection with this reason (after sending what was queued for it).
    Close {
        peer: PeerId,
        reason: String,
    },
    /// Append to the event log.
    Event(EventRecord),
    /// Media from `peer` goes to `to` (the other party's connection, in call `call_id`), or
    /// nowhere (`None`) — set when a call connects or resumes, cleared when it ends or a party
    /// is away.
    Route {
        peer: PeerId,
        to: Option<(PeerId, CallId)>,
    },
    /// Start recording a call that just connected (comes before the call's `Route`s).
    StartRecording {
        call_id: CallId,
        kiosk: String,
        agent: String,
    },
    /// The recorded call ended: finish its recording once the media in flight has arrived.
    StopRecording {
        call_id: CallId,
    },
    /// Look up in the deployment's database where `kiosk` waited in `call_id` on another hub
    /// (only with [`QueueConfig::shared_places`]); answer with [`Input::PlaceFound`].
    FindPlace {
        peer: PeerId,
        kiosk: String,
        call_id: CallId,
    },
    /// Look up in the deployment's database the call in progress `call_id` of `agent` on
    /// another hub (only with [`QueueConfig::shared_places`]); answer with
    /// [`Input::CallFound`].
    FindCall {
        peer: PeerId,
        agent: String,
        call_id: CallId,
    },
    /// The lease is back after a loss: these callers, waiting here with their kiosks
    /// connected, are this hub's (another hub may have taken them over meanwhile, as away):
    /// say so in the deployment's database, so that the other hub drops its copy.
    Reclaim {
        callers: Vec<Waiting>,
    },
    /// Callers wait here and no advisor here is free: look in the deployment's database for
    /// another hub with one, for these callers (longest waiting first, at most
    /// [`SEND_AWAY_MAX`]; only with [`QueueConfig::shared_places`]); answer with
    /// [`Input::FreeHub`]. Asked at most every [`LOOK_EVERY`] while it lasts.
    FindFreeHub {
        callers: Vec<Waiting>,
    },
    /// Nothing more to do until this time (or the next input).
    Wait(Option<Instant>),
}

/// The driver broke the contract (did not drain outputs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueError {
    #[error("outputs not drained: {0} pending")]
    NotDrained(usize),
}

#[derive(Debug)]
struct Peer {
    role: Role,
    id: String,
    greeted: bool,
}

#[derive(Debug)]
struct Room {
    peer: PeerId,
    state: RoomState,
    /// When the agent last became IDLE; the longest idle is offered first.
    idle_since: Instant,
    call: Option<CallId>,
    wrap_until: Option<Instant>,
    /// The agent asked for CLOSE during a call: go CLOSE instead of IDLE afterwards.
    close_after: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Queued,
    Offered { agent: String, deadline: Instant },
    Connected { agent: String, since: Instant },
}

#[derive(Debug)]
struct Call {
    kiosk: String,
    requested_at: Instant,
    phase: Phase,
    /// Agents who declined this call; it is not offered to them again.
    declined_by: BTreeSet<String>,
    /// Set while the kiosk's connection is lost: when the call is given up.
    away_until: Option<Instant>,
    /// Last (position, estimate) told to the kiosk, to send only changes.
    told: Option<(u32, Option<u32>)>,
    /// The customer consented to recording (the kiosk showed the notice).
    consent: bool,
    /// The call is recorded (set when it connects).
    recorded: bool,
    /// The call's number on the hub it came from, when it moved here: the kiosk resumes it
    /// under that number.
    origin: Option<CallId>,
    /// A call in progress that moved here before its agent: when it is given up if the agent
    /// has not resumed it.
    agent_away_until: Option<Instant>,
}

impl Call {
    /// The agent of a call in progress.
    fn phase_agent(&self) -> Option<&str> {
        match &self.phase {
            Phase::Connected { agent, .. } => Some(agent),
            _ => None,
        }
    }
}

/// Counts of what the queue did, for the hub's metrics and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: u64,
    pub rejected_busy: u64,
    pub offered: u64,
    pub declined: u64,
    pub offer_timeouts: u64,
    pub connected: u64,
    pub ended: u64,
    pub abandoned: u64,
    pub texts_relayed: u64,
    pub protocol_errors: u64,
    /// Call requests refused by [`QueueConfig::call_requests`].
    pub call_requests_limited: u64,
    /// Texts refused by [`QueueConfig::texts`].
    pub texts_limited: u64,
    /// Callers that kept their place from another hub ([`Output::FindPlace`]).
    pub moved_in: u64,
    /// Callers taken over from a hub whose lease expired ([`Input::Adopt`]).
    pub adopted: u64,
    /// Waiting callers that resumed on another hub ([`Input::Released`]).
    pub released: u64,
    /// Calls in progress that went on through this hub after another's death.
    pub calls_resumed: u64,
    /// Calls in progress held across a restart of this hub ([`AgentQueue::restore`]).
    pub calls_restored: u64,
    /// Waiting callers sent to another hub with an advisor free ([`Input::FreeHub`]).
    pub sent_away: u64,
}

/// A snapshot for status lines and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub waiting: usize,
    pub oldest_wait: Option<Duration>,
    pub agents: BTreeMap<&'static str, usize>,
    pub calls_connected: usize,
    /// The waiting callers in the order they will be offered: kiosk and time waited (the
    /// advisors' console shows them).
    pub queue: Vec<(String, Duration)>,
}

/// The hub's sans-IO core: agent rooms, the caller queue, offers and calls.
#[derive(Debug)]
pub struct AgentQueue {
    config: QueueConfig,
    /// Maps the core's monotonic time onto wall-clock milliseconds for the event log.
    epoch: (Instant, u64),
    peers: HashMap<PeerId, Peer>,
    /// Agent id -> room. A room exists while its agent is connected.
    rooms: BTreeMap<String, Room>,
    /// Kiosk id -> its current connection.
    kiosks: HashMap<String, PeerId>,
    calls: BTreeMap<CallId, Call>,
    /// Calls waiting or being offered, in arrival order.
    queue: VecDeque<CallId>,
    next_call: CallId,
    handle_times: VecDeque<Duration>,
    out: VecDeque<Output>,
    stats: QueueStats,
    /// Each kiosk's fresh call requests.
    call_requests: RateTable<String>,
    /// Each call's texts, per sending side.
    texts: RateTable<(CallId, Role)>,
    /// Kiosks resuming a call this hub does not know, while their place is looked up: the
    /// call they named and whether the customer consented to recording.
    finding: HashMap<PeerId, (CallId, bool)>,
    /// Agents resuming a call this hub does not know, while it is looked up.
    finding_calls: HashMap<PeerId, CallId>,
    /// This hub holds its lease (always, without a database): it may make offers.
    lease: bool,
    /// When this hub may next look for another with an advisor free ([`Output::FindFreeHub`]).
    next_look: Option<Instant>,
}

impl AgentQueue {
    /// A queue whose `now` maps to `unix_ms` in the event log.
    pub fn new(config: QueueConfig, now: Instant, unix_ms: u64) -> Self {
        Self {
            epoch: (now, unix_ms),
            peers: HashMap::new(),
            rooms: BTreeMap::new(),
            kiosks: HashMap::new(),
            calls: BTreeMap::new(),
            queue: VecDeque::new(),
            next_call: 1,
            handle_times: VecDeque::new(),
            out: VecDeque::new(),
            stats: QueueStats::default(),
            call_requests: RateTable::new(config.call_requests, RATE_KEYS),
            texts: RateTable::new(config.texts, RATE_KEYS),
            finding: HashMap::new(),
            finding_calls: HashMap::new(),
            lease: true,
            next_look: None,
            config,
        }
    }

    /// Continues from an event log written by an earlier run: call ids go on from the last
    /// one, the wait estimate starts from the measured handle times, and calls the earlier run
    /// left open are closed in the log, except with a database shared by several hubs: there
    /// the callers that were waiting keep their places, and the calls in progress are held for
    /// their kiosks and agents to resume (a restart is like a death that the hub survives).
    pub fn restore(&mut self, summary: &LogSummary, now: Instant) {
        self.next_call = self.next_call.max(summary.next_call_id());
        self.handle_times = summary.recent_handle_times(HANDLE_WINDOW).into();
        let unix_now = self.record(now, Event::Queued, None, None, None).ts_ms;
        for (id, call) in summary.open_calls() {
            // With a database shared by several hubs, a restart is like a death: the callers
            // that were waiting keep their places (and their call numbers), held as away
            // until their kiosks come back (within `kiosk_grace`).
            if let (true, None, Some(kiosk), Some(joined)) =
                (self.keeps_places(), call.connected_ms, call.kiosk.as_deref(), call.queued_ms)
            {
                let waited = Duration::from_millis(unix_now.saturating_sub(joined));
                let requested_at = now.checked_sub(waited).unwrap_or(now);
                self.restore_waiting(id, kiosk, requested_at, now);
                continue;
            }
            // And the calls in progress go on under their numbers when their kiosk and agent
            // come back (each within `kiosk_grace`, as after a move between hubs).
            if let (true, Some(answered), Some(kiosk), Some(agent)) =
                (self.keeps_places(), call.connected_ms, call.kiosk.as_deref(), call.agent.as_deref())
            {
                let ago = Duration::from_millis(unix_now.saturating_sub(answered));
                self.restore_call(id, kiosk, agent, now.checked_sub(ago).unwrap_or(now), call.recorded, now);
                continue;
            }
            let event = if call.connected_ms.is_some() { Event::Ended } else { Event::Abandoned };
            let mut rec = self.record(now, event, Some(id), call.kiosk.as_deref(), call.agent.as_deref());
            rec.detail = Some("hub_restart".into());
            self.out.push_back(Output::Event(rec));
        }
        self.emit(now, Event::HubStarted, None, None, None, None);
    }

    fn keeps_places(&self) -> bool {
        self.config.shared_places && !self.config.kiosk_grace.is_zero()
    }

    /// A caller that waited before the hub restarted, back in its place under its number.
    fn restore_waiting(&mut self, call_id: CallId, kiosk: &str, requested_at: Instant, now: Instant) {
        let away = Some(now + self.config.kiosk_grace);
        self.insert_waiting(call_id, kiosk, requested_at, false, None, away);
        let mut rec = self.record(now, Event::KioskAway, Some(call_id), Some(kiosk), None);
        rec.detail = Some("hub_restart".into());
        self.out.push_back(Output::Event(rec));
    }

    /// A call that was in progress before the hub restarted, held under its number for both
    /// its parties: media flow again once both are back. A call that was recorded is
    /// recorded again from the restart, in a file of its own (the earlier one ends where the
    /// old process stopped), while the hub still records calls. It ends if either party
    /// stays away past `kiosk_grace`.
    fn restore_call(
        &mut self,
        call_id: CallId,
        kiosk: &str,
        agent: &str,
        since: Instant,
        was_recorded: bool,
        now: Instant,
    ) {
        let grace = Some(now + self.config.kiosk_grace);
        let recorded = was_recorded && self.config.record_calls;
        self.calls.insert(
            call_id,
            Call {
                kiosk: kiosk.to_string(),
                requested_at: since,
                phase: Phase::Connected { agent: agent.to_string(), since },
                declined_by: BTreeSet::new(),
                away_until: grace,
                told: None,
                consent: was_recorded,
                recorded,
                origin: None,
                agent_away_until: grace,
            },
        );
        self.stats.calls_restored += 1;
        let mut rec = self.record(now, Event::KioskAway, Some(call_id), Some(kiosk), Some(agent));
        rec.detail = Some("hub_restart".into());
        self.out.push_back(Output::Event(rec));
        if recorded {
            let (kiosk, agent) = (kiosk.to_string(), agent.to_string());
            self.out.push_back(Output::StartRecording { call_id, kiosk, agent });
        }
    }

    /// A waiting call in the queue, before every call requested after `requested_at`; returns
    /// its index in the queue.
    fn insert_waiting(
        &mut self,
        call_id: CallId,
        kiosk: &str,
        requested_at: Instant,
        consent: bool,
        origin: Option<CallId>,
        away_until: Option<Instant>,
    ) -> usize {
        self.calls.insert(
            call_id,
            Call {
                kiosk: kiosk.to_string(),
                requested_at,
                phase: Phase::Queued,
                declined_by: BTreeSet::new(),
                away_until,
                told: None,
                consent,
                recorded: false,
                origin,
                agent_away_until: None,
            },
        );
        let at = self
            .queue
            .iter()
            .position(|id| self.calls.get(id).is_some_and(|c| c.requested_at > requested_at))
            .unwrap_or(self.queue.len());
        self.queue.insert(at, call_id);
        at
    }

    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut agents = BTreeMap::new();
        for room in self.rooms.values() {
            *agents.entry(room.state.as_str()).or_insert(0) += 1;
        }
        let waiting = self.queue.len();
        let oldest_wait = self
            .queue
            .front()
            .and_then(|id| self.calls.get(id))
            .map(|c| now.saturating_duration_since(c.requested_at));
        let calls_connected =
            self.calls.values().filter(|c| matches!(c.phase, Phase::Connected { .. })).count();
        let queue = self
            .queue
            .iter()
            .filter_map(|id| self.calls.get(id))
            .map(|c| (c.kiosk.clone(), now.saturating_duration_since(c.requested_at)))
            .collect();
        Snapshot { waiting, oldest_wait, agents, calls_connected, queue }
    }

    /// Feeds one input. Drain [`AgentQueue::poll_output`] to `Wait` afterwards.
    pub fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), QueueError> {
        if self.out.len() > MAX_PENDING_OUTPUTS {
            return Err(QueueError::NotDrained(self.out.len()));
        }
        match input {
            Input::Connected { peer, role, id } => self.on_connected(peer, role, id, now),
            Input::Message { peer, msg } => self.on_message(peer, msg, now),
            Input::Disconnected { peer } => self.on_disconnected(peer, now),
            Input::Tick => {}
            Input::Shutdown => self.on_shutdown(now),
            Input::PlaceFound { peer, call_id, place } => self.on_place_found(peer, call_id, place, now),
            Input::Adopt { from, callers } => self.on_adopt(&from, callers, now),
            Input::Released { kiosk } => self.on_released(&kiosk, now),
            Input::FreeHub { address, callers } => self.on_free_hub(address, callers),
            Input::CallFound { peer, call_id, call } => self.on_call_found(peer, call_id, call, now),
            Input::Lease { held } => self.on_lease(held, now),
        }
        self.expire(now);
        self.dispatch(now);
        self.tell_positions();
        Ok(())
    }

    /// The next thing to do; `Output::Wait` when there is nothing until the deadline.
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or_else(|| Output::Wait(self.poll_timeout()))
    }

    /// The earliest deadline: an offer, a wrap-up or a kiosk's grace period.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let offers = self.calls.values().filter_map(|c| match c.phase {
            Phase::Offered { deadline, .. } => Some(deadline),
            _ => None,
        });
        let away = self.calls.values().flat_map(|c| [c.away_until, c.agent_away_until]).flatten();
        let wraps = self.rooms.values().filter_map(|r| r.wrap_until);
        // The next look for another hub with an advisor free, while callers wait here.
        let look = self.next_look.filter(|_| self.should_look());
        offers.chain(away).chain(wraps).chain(look).min()
    }

    // ----- inputs -----

    fn on_connected(&mut self, peer: PeerId, role: Role, id: String, now: Instant) {
        if role == Role::Hub {
            self.close(peer, "a hub certificate cannot be used by a client".into());
            return;
        }
        // A second connection with the same identity replaces the first (a kiosk that
        // reconnects before the hub noticed the old connection was gone).
        let old = self.peers.iter().find(|(_, p)| p.id == id && p.role == role).map(|(&old, _)| old);
        if let Some(old) = old {
            self.close(old, "replaced by a new connection with the same certificate".into());
            self.on_disconnected(old, now);
        }
        self.peers.insert(peer, Peer { role, id, greeted: false });
    }

    fn on_message(&mut self, peer: PeerId, msg: ClientMsg, now: Instant) {
        let Some(p) = self.peers.get(&peer) else {
            return; // already disconnected or closed: late message
        };
        let (role, id, greeted) = (p.role, p.id.clone(), p.greeted);
        if !greeted {
            match msg {
                ClientMsg::Hello { role: claimed, .. } if claimed == role => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.greeted = true;
                    }
                    self.send(peer, HubMsg::Welcome { id: id.clone(), role });
                    match role {
                        Role::Kiosk => {
                            self.kiosks.insert(id, peer);
                        }
                        Role::Agent => self.agent_online(peer, id, now),
                        Role::Hub => {}
                    }
                }
                ClientMsg::Hello { role: claimed, .. } => {
                    self.refuse(now, peer, format!("certificate is for a {role}; it cannot act as {claimed}"))
                }
                other => self.refuse(now, peer, format!("expected hello, got {}", other.kind())),
            }
            return;
        }
        match (role, msg) {
            (_, ClientMsg::Hello { .. }) => self.refuse(now, peer, "hello sent twice".into()),
            (Role::Kiosk, ClientMsg::RequestAgent { resume, consent }) => {
                self.on_request(peer, id, resume, consent, now)
            }
            (Role::Kiosk, ClientMsg::HangUp { call_id }) => self.on_kiosk_hangup(peer, &id, call_id, now),
            (Role::Agent, ClientMsg::SetPresence { presence }) => self.on_presence(&id, presence, now),
            (Role::Agent, ClientMsg::Accept { call_id }) => self.on_accept(peer, &id, call_id, now),
            (Role::Agent, ClientMsg::ResumeCall { call_id }) => self.on_agent_resume(peer, &id, call_id, now),
            (Role::Agent, ClientMsg::Decline { call_id }) => self.on_decline(peer, &id, call_id, now),
            (Role::Agent, ClientMsg::HangUp { call_id }) => self.on_agent_hangup(peer, &id, call_id, now),
            (_, ClientMsg::Text { call_id, id: text_id, body }) => {
                if let Err(refusal) = self.texts.check(&(call_id, role), now) {
                    self.stats.texts_limited += 1;
                    let message = format!("text {text_id} not delivered: {}", rate_message(refusal, "texts"));
                    return self.send(peer, HubMsg::Error { message, fatal: false });
                }
                self.relay(peer, role, &id, call_id, HubMsg::Text { call_id, id: text_id, body })
            }
            (_, ClientMsg::TextAck { call_id, id: text_id }) => {
                self.relay(peer, role, &id, call_id, HubMsg::TextAck { call_id, id: text_id })
            }
            (_, ClientMsg::KeyframeRequest { call_id }) => {
                self.relay(peer, role, &id, call_id, HubMsg::KeyframeRequest { call_id })
            }
            (_, ClientMsg::LossReport { call_id, audio_loss_pct }) => {
                let audio_loss_pct = audio_loss_pct.min(100);
                self.relay(peer, role, &id, call_id, HubMsg::LossReport { call_id, audio_loss_pct })
            }
            (_, ClientMsg::RateHint { call_id, bitrate_bps }) => {
                self.relay(peer, role, &id, call_id, HubMsg::RateHint { call_id, bitrate_bps })
            }
            // The driver turns a kiosk's health into metrics; the queue has nothing to do.
            (Role::Kiosk, ClientMsg::Health(_)) => {}
            // The driver renews certificates (it holds the renewal CA); nothing for the queue.
            (Role::Kiosk | Role::Agent, ClientMsg::Renew { .. }) => {}
            (role, msg) => self.refuse(now, peer, format!("a {role} may not send {}", msg.kind())),
        }
    }

    fn on_disconnected(&mut self, peer: PeerId, now: Instant) {
        self.finding.remove(&peer);
        self.finding_calls.remove(&peer);
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if !p.greeted {
            return;
        }
        match p.role {
            Role::Kiosk => {
                if self.kiosks.get(&p.id) == Some(&peer) {
                    self.kiosks.remove(&p.id);
                }
                self.kiosk_away(&p.id, now);
            }
            Role::Agent => self.agent_offline(&p.id, now),
            Role::Hub => {}
        }
    }

    fn on_shutdown(&mut self, now: Instant) {
        if self.keeps_places() {
            // With a database shared by several hubs, a stop is a restart or a hand-over, like
            // a death: nothing is ended. The callers keep their places and the calls stay in
            // progress in the database, for their kiosks and agents to resume here once it is
            // back (see `restore`) or on another hub.
            let held = self.calls.len().to_string();
            return self.emit(now, Event::HubStopped, None, None, None, Some(&format!("calls_held={held}")));
        }
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.end_call(id, EndReason::HubShutdown, now);
        }
        self.emit(now, Event::HubStopped, None, None, None, None);
    }

    // ----- kiosk -----

    fn on_request(
        &mut self,
        peer: PeerId,
        kiosk: String,
        resume: Option<CallId>,
        consent: bool,
        now: Instant,
    ) {
        if let Some(mut call_id) = resume {
            // A call that moved here is resumed under its number on the hub it came from.
            if let Some((&id, _)) =
                self.calls.iter().find(|(_, c)| c.kiosk == kiosk && c.origin == Some(call_id))
            {
                call_id = id;
            }
            let owned = self.calls.get(&call_id).is_some_and(|c| c.kiosk == kiosk);
            let here = self.calls.values().any(|c| c.kiosk == kiosk);
            if !owned && !here && self.config.shared_places {
                // Perhaps from a hub that died: its place is looked up (once per connection).
                if self.finding.insert(peer, (call_id, consent)).is_none() {
                    self.out.push_back(Output::FindPlace { peer, kiosk, call_id });
                }
                return;
            }
            if !owned {
                self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
                return;
            }
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.consent = consent;
            }
            self.kiosk_back(peer, &kiosk, call_id, now);
            return;
        }
        // Asking again while already waiting: the same request (its answer was lost), so it
        // keeps its place. But a kiosk that asks afresh while the hub still holds a connected
        // call for it no longer knows that call (it hung up while offline, or restarted): the
        // next customer must never land in the previous customer's conversation.
        if let Some((&call_id, call)) = self.calls.iter().find(|(_, c)| c.kiosk == kiosk) {
            if matches!(call.phase, Phase::Connected { .. }) {
                self.end_call(call_id, EndReason::KioskHungUp, now);
            } else {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.consent = consent;
                }
                self.kiosk_back(peer, &kiosk, call_id, now);
                return;
            }
        }
        // Counted after the repeats above: only a request that would make a new call is.
        if let Err(refusal) = self.call_requests.check(&kiosk, now) {
            self.stats.call_requests_limited += 1;
            let retry_after_s = match refusal {
                RateRefusal::Exceeded { retry_after } => {
                    retry_after.as_secs().clamp(1, u32::MAX.into()) as u32
                }
                RateRefusal::TableFull => self.config.busy_retry_after.as_secs().min(u32::MAX.into()) as u32,
            };
            return self.send(peer, HubMsg::Busy { retry_after_s });
        }
        if self.queue.len() >= self.config.max_queue {
            self.stats.rejected_busy += 1;
            let retry_after_s = self.config.busy_retry_after.as_secs().min(u32::MAX as u64) as u32;
            self.send(peer, HubMsg::Busy { retry_after_s });
            self.emit(now, Event::RejectedBusy, None, Some(&kiosk), None, None);
            return;
        }
        self.enqueue(&kiosk, now, consent, None, now);
    }

    /// Where a kiosk that resumed an unknown call waited before: it joins this hub's queue at
    /// the place its original time of joining gives it (before everyone who joined later),
    /// under a new call number; without a place the call is unknown and the kiosk asks afresh.
    fn on_place_found(&mut self, peer: PeerId, call_id: CallId, place: Option<Moved>, now: Instant) {
        // A stale answer (the kiosk left, hung up or asked again meanwhile) is dropped.
        if self.finding.get(&peer).map(|f| f.0) != Some(call_id) {
            return;
        }
        let Some((_, consent)) = self.finding.remove(&peer) else { return };
        let Some(kiosk) =
            self.peers.get(&peer).filter(|p| p.greeted && p.role == Role::Kiosk).map(|p| p.id.clone())
        else {
            return;
        };
        let here = self.calls.values().any(|c| c.kiosk == kiosk);
        let Some(place) = place.filter(|_| !here && self.queue.len() < self.config.max_queue) else {
            if !here {
                self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
            }
            return;
        };
        // The place in this hub's time: as long ago as the caller joined (never in the future).
        let unix_now = self.record(now, Event::Queued, None, None, None).ts_ms;
        let waited = Duration::from_millis(unix_now.saturating_sub(place.joined_ms));
        let requested_at = now.checked_sub(waited).unwrap_or(now);
        self.stats.moved_in += 1;
        self.enqueue(&kiosk, requested_at, consent, Some(place), now);
    }

    /// A new call of `kiosk` in the queue, before every call requested after `requested_at`
    /// (a fresh request: `now`, the back of the queue), logged as `queued`.
    fn enqueue(
        &mut self,
        kiosk: &str,
        requested_at: Instant,
        consent: bool,
        moved: Option<Moved>,
        now: Instant,
    ) -> CallId {
        let call_id = self.next_call;
        self.next_call += 1;
        let origin = moved.as_ref().map(|m| m.call_id);
        let at = self.insert_waiting(call_id, kiosk, requested_at, consent, origin, None);
        self.stats.queued += 1;
        let mut rec = self.record(now, Event::Queued, Some(call_id), Some(kiosk), None);
        rec.position = Some(at as u32 + 1);
        rec.moved = moved;
        self.out.push_back(Output::Event(rec));
        call_id
    }

    /// Takes over the waiting callers of a hub that died: each joins this hub's queue at the
    /// place its original time of joining gives it, away until its kiosk comes back here. A
    /// kiosk that already has a call here (it came back before the takeover) keeps that one.
    fn on_adopt(&mut self, from: &str, callers: Vec<Waiting>, now: Instant) {
        let unix_now = self.record(now, Event::Queued, None, None, None).ts_ms;
        for c in callers {
            if self.calls.values().any(|call| call.kiosk == c.kiosk) {
                continue;
            }
            let waited = Duration::from_millis(unix_now.saturating_sub(c.joined_ms));
            let requested_at = now.checked_sub(waited).unwrap_or(now);
            let moved = Moved { hub: from.to_string(), call_id: c.call_id, joined_ms: c.joined_ms };
            let id = self.enqueue(&c.kiosk, requested_at, false, Some(moved), now);
            self.stats.adopted += 1;
            let connected = self.kiosks.get(&c.kiosk).copied();
            match connected {
                // Connected here already (asking afresh is its own call): it is back.
                Some(peer) => self.kiosk_back(peer, &c.kiosk, id, now),
                None => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.away_until = Some(now + self.config.kiosk_grace);
                    }
                }
            }
        }
    }

    /// The kiosk resumed on another hub: its waiting call here is stale. A call in progress
    /// is left alone (its media may still flow here).
    fn on_released(&mut self, kiosk: &str, now: Instant) {
        let Some((&call_id, call)) = self.calls.iter().find(|(_, c)| c.kiosk == kiosk) else { return };
        let phase = call.phase.clone();
        match phase {
            Phase::Connected { .. } => {}
            Phase::Queued | Phase::Offered { .. } => {
                if let Phase::Offered { agent, .. } = &phase {
                    self.withdraw(call_id, agent, WithdrawReason::CallerLeft, now);
                }
                self.calls.remove(&call_id);
                self.queue.retain(|&id| id != call_id);
                self.texts.forget(&(call_id, Role::Kiosk));
                self.stats.released += 1;
                self.emit(now, Event::Abandoned, Some(call_id), Some(kiosk), None, Some(MOVED));
            }
        }
    }

    /// The connection of `agent`, when its room holds `call_id` (a call that moved here may
    /// be waiting for its agent, connected but not resumed yet).
    fn agent_peer(&self, call_id: CallId, agent: &str) -> Option<PeerId> {
        self.rooms.get(agent).filter(|r| r.call == Some(call_id)).map(|r| r.peer)
    }

    /// An agent back after a reconnect names the call it was in.
    fn on_agent_resume(&mut self, peer: PeerId, agent: &str, call_id: CallId, now: Instant) {
        if self.rooms.get(agent).is_some_and(|r| r.call.is_some()) {
            return self.send(peer, HubMsg::Error { message: "already in a call".into(), fatal: false });
        }
        if let Some(id) = self.moved_call(call_id, |c| c.phase_agent() == Some(agent)) {
            return self.attach_agent(id, agent, now);
        }
        if self.config.shared_places {
            if self.finding_calls.insert(peer, call_id).is_none() {
                self.out.push_back(Output::FindCall { peer, agent: agent.to_string(), call_id });
            }
            return;
        }
        self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
    }

    /// The call here known as `call_id` (its number here, or on the hub it came from) that
    /// `pred` accepts, in progress.
    fn moved_call(&self, call_id: CallId, pred: impl Fn(&Call) -> bool) -> Option<CallId> {
        self.calls
            .iter()
            .find(|(id, c)| {
                (**id == call_id || c.origin == Some(call_id))
                    && matches!(c.phase, Phase::Connected { .. })
                    && pred(c)
            })
            .map(|(&id, _)| id)
    }

    /// What the database holds of a call in progress that a kiosk or an agent resumed here.
    /// Whichever of the two comes first makes the call here, under a new number, waiting for
    /// the other (`kiosk_grace`); the second finds it.
    fn on_call_found(&mut self, peer: PeerId, call_id: CallId, found: Option<MovedCall>, now: Instant) {
        let Some(p) = self.peers.get(&peer).filter(|p| p.greeted) else { return };
        let (role, id) = (p.role, p.id.clone());
        let asked = match role {
            Role::Kiosk => self.finding.get(&peer).map(|f| f.0) == Some(call_id),
            Role::Agent => self.finding_calls.get(&peer) == Some(&call_id),
            Role::Hub => false,
        };
        if !asked {
            return; // stale: the peer left or asked again meanwhile
        }
        self.finding.remove(&peer);
        self.finding_calls.remove(&peer);
        let mine = |c: &Call| match role {
            Role::Kiosk => c.kiosk == id,
            _ => c.phase_agent() == Some(id.as_str()),
        };
        // Made meanwhile by the other side's lookup.
        if let Some(here) = self.moved_call(call_id, mine) {
            return match role {
                Role::Kiosk => self.kiosk_back(peer, &id, here, now),
                _ => self.attach_agent(here, &id, now),
            };
        }
        let found = found.filter(|f| match role {
            Role::Kiosk => f.kiosk == id,
            _ => f.agent == id,
        });
        let busy = self.calls.values().any(|c| match role {
            Role::Kiosk => c.kiosk == id,
            _ => c.phase_agent() == Some(id.as_str()),
        });
        let Some(f) = found.filter(|_| !busy) else {
            return self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
        };
        let unix_now = self.record(now, Event::Resumed, None, None, None).ts_ms;
        let since =
            now.checked_sub(Duration::from_millis(unix_now.saturating_sub(f.since_ms))).unwrap_or(now);
        let new_id = self.next_call;
        self.next_call += 1;
        let grace = now + self.config.kiosk_grace;
        self.calls.insert(
            new_id,
            Call {
                kiosk: f.kiosk.clone(),
                requested_at: since,
                phase: Phase::Connected { agent: f.agent.clone(), since },
                declined_by: BTreeSet::new(),
                away_until: (role != Role::Kiosk).then_some(grace),
                told: None,
                consent: false,
                recorded: false,
                origin: Some(f.call_id),
                agent_away_until: (role == Role::Kiosk).then_some(grace),
            },
        );
        self.stats.calls_resumed += 1;
        let mut rec = self.record(now, Event::Resumed, Some(new_id), Some(&f.kiosk), Some(&f.agent));
        rec.moved = Some(Moved { hub: f.hub.clone(), call_id: f.call_id, joined_ms: f.since_ms });
        self.out.push_back(Output::Event(rec));
        match role {
            Role::Kiosk => {
                self.send(
                    peer,
                    HubMsg::Connected { call_id: new_id, peer: f.agent.clone(), recorded: false },
                );
                // The agent may be here already, between its reconnect and its resume.
            }
            _ => self.attach_agent(new_id, &id, now),
        }
    }

    /// The call's agent is back: its room holds the call again, and the media flow once the
    /// kiosk is here too.
    fn attach_agent(&mut self, call_id: CallId, agent: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(agent) else { return };
        room.call = Some(call_id);
        room.wrap_until = None;
        let peer = room.peer;
        let Some(call) = self.calls.get_mut(&call_id) else { return };
        call.agent_away_until = None;
        let (kiosk, recorded, kiosk_here) = (call.kiosk.clone(), call.recorded, call.away_until.is_none());
        self.set_room(agent, RoomState::Busy, now);
        self.send(peer, HubMsg::Connected { call_id, peer: kiosk.clone(), recorded });
        if !kiosk_here {
            self.send(peer, HubMsg::PeerPresence { call_id, present: false });
        }
        self.route(call_id);
    }

    /// The lease was lost (or is held again). Without it the hub makes no offers: another hub
    /// may have taken over its callers. Its callers keep their places here, and calls in
    /// progress go on; offers start again when the lease is back.
    fn on_lease(&mut self, held: bool, now: Instant) {
        let regained = held && !self.lease;
        self.lease = held;
        if !regained {
            return;
        }
        let unix_now = self.record(now, Event::Queued, None, None, None).ts_ms;
        let callers: Vec<Waiting> = self
            .queue
            .iter()
            .filter_map(|id| self.calls.get(id).map(|c| (*id, c)))
            .filter(|(_, c)| c.away_until.is_none() && self.kiosks.contains_key(&c.kiosk))
            .map(|(id, c)| Waiting {
                kiosk: c.kiosk.clone(),
                call_id: id,
                joined_ms: unix_now
                    .saturating_sub(now.saturating_duration_since(c.requested_at).as_millis() as u64),
            })
            .collect();
        if !callers.is_empty() {
            self.out.push_back(Output::Reclaim { callers });
        }
    }

    /// The kiosk is (again) connected for `call_id`: tell it where the call stands.
    fn kiosk_back(&mut self, peer: PeerId, kiosk: &str, call_id: CallId, now: Instant) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let was_away = call.away_until.take().is_some();
        call.told = None; // make tell_positions send the position again
        let phase = call.phase.clone();
        if was_away {
            self.emit(now, Event::KioskBack, Some(call_id), Some(kiosk), None, None);
        }
        match phase {
            Phase::Queued => {} // tell_positions sends it
            Phase::Offered { .. } => self.send(peer, HubMsg::Ringing { call_id }),
            Phase::Connected { agent, .. } => {
                let recorded = self.calls.get(&call_id).is_some_and(|c| c.recorded);
                self.send(peer, HubMsg::Connected { call_id, peer: agent.clone(), recorded });
                if was_away && let Some(agent_peer) = self.agent_peer(call_id, &agent) {
                    self.send(agent_peer, HubMsg::PeerPresence { call_id, present: true });
                }
                self.route(call_id);
            }
        }
    }

    fn kiosk_away(&mut self, kiosk: &str, now: Instant) {
        let ids: Vec<CallId> =
            self.calls.iter().filter(|(_, c)| c.kiosk == kiosk).map(|(&id, _)| id).collect();
        for call_id in ids {
            if self.config.kiosk_grace.is_zero() {
                self.end_call(call_id, EndReason::KioskDisconnected, now);
                continue;
            }
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            call.away_until = Some(now + self.config.kiosk_grace);
            call.told = None;
            let phase = call.phase.clone();
            self.emit(now, Event::KioskAway, Some(call_id), Some(kiosk), None, None);
            match phase {
                Phase::Queued => {}
                Phase::Offered { agent, .. } => {
                    self.withdraw(call_id, &agent, WithdrawReason::CallerAway, now)
                }
                Phase::Connected { agent, .. } => {
                    if let Some(p) = self.agent_peer(call_id, &agent) {
                        self.send(p, HubMsg::PeerPresence { call_id, present: false });
                        self.out.push_back(Output::Route { peer: p, to: None });
                    }
                }
            }
        }
    }

    fn on_kiosk_hangup(&mut self, peer: PeerId, kiosk: &str, call_id: CallId, now: Instant) {
        // Hung up while its place was being looked up: the answer is dropped.
        if self.finding.get(&peer).is_some_and(|f| f.0 == call_id) {
            self.finding.remove(&peer);
        }
        if self.calls.get(&call_id).is_some_and(|c| c.kiosk == kiosk) {
            self.end_call(call_id, EndReason::KioskHungUp, now);
        } else {
            // Already over (the agent hung up at the same moment): confirm, so the kiosk settles.
            self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
        }
    }

    // ----- agent -----

    fn agent_online(&mut self, peer: PeerId, id: String, now: Instant) {
        self.rooms.insert(
            id.clone(),
            Room {
                peer,
                state: RoomState::Close,
                idle_since: now,
                call: None,
                wrap_until: None,
                close_after: false,
            },
        );
        self.send(peer, HubMsg::Room { state: RoomState::Close });
        self.emit(now, Event::AgentOnline, None, None, Some(&id), None);
    }

    fn agent_offline(&mut self, agent: &str, now: Instant) {
        let Some(room) = self.rooms.get(agent) else {
            return;
        };
        let (state, call) = (room.state, room.call);
        if let Some(call_id) = call {
            match state {
                RoomState::Offered => {
                    // Not the caller's fault: back in the queue, same place, no decline.
                    if let Some(call) = self.calls.get_mut(&call_id) {
                        call.phase = Phase::Queued;
                        call.told = None;
                    }
                    self.emit(
                        now,
                        Event::OfferWithdrawn,
                        Some(call_id),
                        None,
                        Some(agent),
                        Some("agent_disconnected"),
                    );
                }
                _ => self.end_call(call_id, EndReason::AgentDisconnected, now),
            }
        }
        self.rooms.remove(agent);
        self.emit(now, Event::AgentOffline, None, None, Some(agent), None);
    }

    fn on_presence(&mut self, agent: &str, presence: Presence, now: Instant) {
        let Some(room) = self.rooms.get(agent) else {
            return;
        };
        let (state, peer, call) = (room.state, room.peer, room.call);
        match (state, presence) {
            (RoomState::Close | RoomState::WrapUp, Presence::Idle) => {
                self.clear_wrap_up(agent);
                self.set_room(agent, RoomState::Idle, now);
            }
            (RoomState::Idle | RoomState::WrapUp, Presence::Close) => {
                self.clear_wrap_up(agent);
                self.set_room(agent, RoomState::Close, now);
            }
            (RoomState::Offered, Presence::Close) => {
                if let Some(call_id) = call {
                    self.decline(call_id, agent, now);
                }
                self.set_room(agent, RoomState::Close, now);
            }
            (RoomState::Busy | RoomState::Offered, p) => {
                if let Some(room) = self.rooms.get_mut(agent) {
                    room.close_after = p == Presence::Close;
                }
            }
            (RoomState::Idle, Presence::Idle) | (RoomState::Close, Presence::Close) => {
                self.send(peer, HubMsg::Room { state });
            }
        }
    }

    fn clear_wrap_up(&mut self, agent: &str) {
        if let Some(room) = self.rooms.get_mut(agent) {
            room.wrap_until = None;
            room.close_after = false;
        }
    }

    /// Whether `call_id` is offered to `agent`; tells the agent when it is not.
    fn offered_to(&mut self, peer: PeerId, agent: &str, call_id: CallId) -> bool {
        let offered = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(&c.phase, Phase::Offered { agent: a, .. } if a == agent));
        if !offered {
            self.send(
                peer,
                HubMsg::Error { message: format!("call {call_id} is not offered to you"), fatal: false },
            );
        }
        offered
    }

    fn on_accept(&mut self, peer: PeerId, agent: &str, call_id: CallId, now: Instant) {
        if !self.offered_to(peer, agent, call_id) {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.phase = Phase::Connected { agent: agent.to_string(), since: now };
        call.recorded = self.config.record_calls && call.consent;
        let (kiosk, recorded) = (call.kiosk.clone(), call.recorded);
        self.queue.retain(|&id| id != call_id);
        self.stats.connected += 1;
        self.set_room(agent, RoomState::Busy, now);
        self.send(peer, HubMsg::Connected { call_id, peer: kiosk.clone(), recorded });
        if let Some(&kp) = self.kiosks.get(&kiosk) {
            self.send(kp, HubMsg::Connected { call_id, peer: agent.to_string(), recorded });
        }
        let detail = recorded.then_some("recorded");
        self.emit(now, Event::Connected, Some(call_id), Some(&kiosk), Some(agent), detail);
        if recorded {
            let (kiosk, agent) = (kiosk.clone(), agent.to_string());
            self.out.push_back(Output::StartRecording { call_id, kiosk, agent });
        }
        self.route(call_id);
    }

    fn on_decline(&mut self, peer: PeerId, agent: &str, call_id: CallId, now: Instant) {
        if !self.offered_to(peer, agent, call_id) {
            return;
        }
        self.decline(call_id, agent, now);
        self.set_room(agent, RoomState::Idle, now);
    }

    /// The call goes back to its place in the queue, never to be offered to `agent` again.
    fn decline(&mut self, call_id: CallId, agent: &str, now: Instant) {
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.phase = Phase::Queued;
            call.declined_by.insert(agent.to_string());
            call.told = None;
        }
        if let Some(room) = self.rooms.get_mut(agent) {
            room.call = None;
        }
        self.stats.declined += 1;
        let kiosk = self.calls.get(&call_id).map(|c| c.kiosk.clone());
        self.emit(now, Event::Declined, Some(call_id), kiosk.as_deref(), Some(agent), None);
    }

    fn on_agent_hangup(&mut self, peer: PeerId, agent: &str, call_id: CallId, now: Instant) {
        let ours = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(&c.phase, Phase::Connected { agent: a, .. } if a == agent));
        let offered = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(&c.phase, Phase::Offered { agent: a, .. } if a == agent));
        if ours {
            self.end_call(call_id, EndReason::AgentHungUp, now);
        } else if offered {
            // Hanging up on an offer is declining it.
            self.decline(call_id, agent, now);
            self.set_room(agent, RoomState::Idle, now);
        } else {
            self.send(peer, HubMsg::CallEnded { call_id, reason: EndReason::Unknown });
        }
    }

    // ----- text -----

    fn relay(&mut self, peer: PeerId, role: Role, from: &str, call_id: CallId, msg: HubMsg) {
        // Acknowledgements and keyframe requests that cross a hang-up are moot: no error.
        let moot = matches!(
            msg,
            HubMsg::TextAck { .. }
                | HubMsg::KeyframeRequest { .. }
                | HubMsg::RateHint { .. }
                | HubMsg::LossReport { .. }
        );
        if moot && !self.calls.get(&call_id).is_some_and(|c| matches!(c.phase, Phase::Connected { .. })) {
            return;
        }
        let Some(call) = self.calls.get(&call_id) else {
            self.send(peer, HubMsg::Error { message: format!("call {call_id} is over"), fatal: false });
            return;
        };
        let Phase::Connected { agent, .. } = &call.phase else {
            self.send(
                peer,
                HubMsg::Error { message: format!("call {call_id} is not connected"), fatal: false },
            );
            return;
        };
        let to = match role {
            Role::Kiosk if call.kiosk == from => self.agent_peer(call_id, agent),
            // While the kiosk is away the text is not delivered; the agent sends it again
            // when told the kiosk is back (PeerPresence), as it was never acknowledged.
            Role::Agent if agent == from && call.away_until.is_none() => {
                self.kiosks.get(&call.kiosk).copied()
            }
            Role::Agent if agent == from => None,
            _ => {
                self.send(
                    peer,
                    HubMsg::Error { message: format!("you are not in call {call_id}"), fatal: false },
                );
                return;
            }
        };
        if let Some(to) = to {
            if matches!(msg, HubMsg::Text { .. }) {
                self.stats.texts_relayed += 1;
            }
            self.send(to, msg);
        }
    }

    // ----- the engine -----

    /// Deadlines that have passed: offers, grace periods, wrap-ups.
    fn expire(&mut self, now: Instant) {
        let timed_out: Vec<(CallId, String)> = self
            .calls
            .iter()
            .filter_map(|(&id, c)| match &c.phase {
                Phase::Offered { agent, deadline } if *deadline <= now => Some((id, agent.clone())),
                _ => None,
            })
            .collect();
        for (call_id, agent) in timed_out {
            self.stats.offer_timeouts += 1;
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.phase = Phase::Queued;
                call.declined_by.insert(agent.clone());
                call.told = None;
            }
            let kiosk = self.calls.get(&call_id).map(|c| c.kiosk.clone());
            self.emit(now, Event::OfferTimeout, Some(call_id), kiosk.as_deref(), Some(&agent), None);
            if let Some(room) = self.rooms.get_mut(&agent) {
                room.call = None;
                let peer = room.peer;
                self.send(peer, HubMsg::OfferWithdrawn { call_id, reason: WithdrawReason::Timeout });
                // An agent who does not answer is presumed away from the desk.
                self.set_room(&agent, RoomState::Close, now);
            }
        }
        let gone: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.away_until.is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for call_id in gone {
            self.end_call(call_id, EndReason::KioskDisconnected, now);
        }
        let no_agent: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.agent_away_until.is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for call_id in no_agent {
            self.end_call(call_id, EndReason::AgentDisconnected, now);
        }
        let wrapped: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.wrap_until.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for agent in wrapped {
            if let Some(room) = self.rooms.get_mut(&agent) {
                room.wrap_until = None;
                let next = if room.close_after { RoomState::Close } else { RoomState::Idle };
                room.close_after = false;
                self.set_room(&agent, next, now);
            }
        }
    }

    /// Offers waiting callers to IDLE agents: the longest-waiting caller first, to the agent
    /// idle longest who has not declined it.
    fn dispatch(&mut self, now: Instant) {
        if !self.lease {
            return;
        }
        self.offer_waiting(now);
        self.look_elsewhere(now);
    }

    /// Offers the longest-waiting callers to the longest-idle advisors.
    fn offer_waiting(&mut self, now: Instant) {
        let mut idle: Vec<(Instant, String)> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.state == RoomState::Idle)
            .map(|(id, r)| (r.idle_since, id.clone()))
            .collect();
        if idle.is_empty() {
            return;
        }
        idle.sort();
        let waiting: Vec<CallId> = self.queue.iter().copied().collect();
        for call_id in waiting {
            if idle.is_empty() {
                break;
            }
            let Some(call) = self.calls.get(&call_id) else {
                continue;
            };
            if call.phase != Phase::Queued || call.away_until.is_some() {
                continue;
            }
            let Some(pick) = idle.iter().position(|(_, a)| !call.declined_by.contains(a)) else {
                continue;
            };
            let (_, agent) = idle.remove(pick);
            self.offer(call_id, &agent, now);
        }
    }

    /// The callers here that could be sent to another hub: waiting (not offered), their
    /// kiosks connected here, in queue order.
    fn sendable(&self) -> impl Iterator<Item = (CallId, PeerId)> + '_ {
        self.queue.iter().filter_map(|id| {
            let c = self.calls.get(id)?;
            let peer = self.kiosks.get(&c.kiosk)?;
            (c.phase == Phase::Queued && c.away_until.is_none()).then_some((*id, *peer))
        })
    }

    /// Whether to look for another hub with an advisor free: this hub shares the deployment's
    /// database and holds its lease, callers wait here, and no advisor here is free.
    fn should_look(&self) -> bool {
        self.config.shared_places
            && self.lease
            && !self.rooms.values().any(|r| r.state == RoomState::Idle)
            && self.sendable().next().is_some()
    }

    /// After offers: callers still waiting with nobody free here look elsewhere, at most
    /// every [`LOOK_EVERY`].
    fn look_elsewhere(&mut self, now: Instant) {
        if self.should_look() && self.next_look.is_none_or(|t| now >= t) {
            self.next_look = Some(now + LOOK_EVERY);
            let unix_now = self.record(now, Event::Queued, None, None, None).ts_ms;
            let callers = self
                .sendable()
                .take(SEND_AWAY_MAX)
                .filter_map(|(id, _)| {
                    let c = self.calls.get(&id)?;
                    let waited = now.saturating_duration_since(c.requested_at).as_millis() as u64;
                    Some(Waiting {
                        kiosk: c.kiosk.clone(),
                        call_id: id,
                        joined_ms: unix_now.saturating_sub(waited),
                    })
                })
                .collect();
            self.out.push_back(Output::FindFreeHub { callers });
        }
    }

    /// Another hub has advisors free: `callers` are sent there (`move_to`), those still
    /// waiting here with nobody free here. Each resumes its call there, where it keeps its
    /// place (the other hub claims it in the database, and this hub then lets it go); a kiosk
    /// that cannot reach it comes back here, where it kept its place.
    fn on_free_hub(&mut self, address: Option<String>, callers: Vec<Waiting>) {
        let Some(address) = address else { return };
        if self.rooms.values().any(|r| r.state == RoomState::Idle) {
            return; // an advisor here became free meanwhile
        }
        let sendable: HashMap<CallId, PeerId> = self.sendable().collect();
        for c in callers {
            let here = self.calls.get(&c.call_id).is_some_and(|call| call.kiosk == c.kiosk);
            if let Some(&peer) = sendable.get(&c.call_id).filter(|_| here) {
                self.stats.sent_away += 1;
                self.send(peer, HubMsg::MoveTo { call_id: c.call_id, address: address.clone() });
            }
        }
    }

    fn offer(&mut self, call_id: CallId, agent: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let deadline = now + self.config.offer_timeout;
        call.phase = Phase::Offered { agent: agent.to_string(), deadline };
        let kiosk = call.kiosk.clone();
        let waited_ms = now.saturating_duration_since(call.requested_at).as_millis() as u64;
        if let Some(room) = self.rooms.get_mut(agent) {
            room.call = Some(call_id);
            let peer = room.peer;
            self.send(
                peer,
                HubMsg::Offer {
                    call_id,
                    kiosk: kiosk.clone(),
                    waited_ms,
                    timeout_ms: self.config.offer_timeout.as_millis() as u64,
                },
            );
        }
        self.set_room(agent, RoomState::Offered, now);
        if let Some(&kp) = self.kiosks.get(&kiosk) {
            self.send(kp, HubMsg::Ringing { call_id });
        }
        self.stats.offered += 1;
        self.emit(now, Event::Offered, Some(call_id), Some(&kiosk), Some(agent), None);
    }

    /// Takes an offer back from an agent who did nothing wrong; the agent keeps its idle rank.
    fn withdraw(&mut self, call_id: CallId, agent: &str, reason: WithdrawReason, now: Instant) {
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.phase = Phase::Queued;
        }
        if let Some(room) = self.rooms.get_mut(agent) {
            room.call = None;
            let (peer, since) = (room.peer, room.idle_since);
            let next = if room.close_after { RoomState::Close } else { RoomState::Idle };
            room.close_after = false;
            self.send(peer, HubMsg::OfferWithdrawn { call_id, reason });
            self.set_room(agent, next, now);
            if let Some(room) = self.rooms.get_mut(agent) {
                room.idle_since = since;
            }
        }
        let detail = match reason {
            WithdrawReason::Timeout => "timeout",
            WithdrawReason::CallerLeft => "caller_left",
            WithdrawReason::CallerAway => "caller_away",
        };
        self.emit(now, Event::OfferWithdrawn, Some(call_id), None, Some(agent), Some(detail));
    }

    /// Ends a call in any phase, telling both sides and logging it.
    fn end_call(&mut self, call_id: CallId, reason: EndReason, now: Instant) {
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let (kiosk, phase, recorded) = (call.kiosk.clone(), call.phase.clone(), call.recorded);
        self.texts.forget(&(call_id, Role::Kiosk));
        self.texts.forget(&(call_id, Role::Agent));
        if let Phase::Offered { agent, .. } = &phase {
            self.withdraw(call_id, agent, WithdrawReason::CallerLeft, now);
        }
        if let Phase::Connected { agent, .. } = &phase {
            let legs = [self.kiosks.get(&kiosk).copied(), self.agent_peer(call_id, agent)];
            for peer in legs.into_iter().flatten() {
                self.out.push_back(Output::Route { peer, to: None });
            }
        }
        if recorded {
            self.out.push_back(Output::StopRecording { call_id });
        }
        self.calls.remove(&call_id);
        self.queue.retain(|&id| id != call_id);
        if let Some(&kp) = self.kiosks.get(&kiosk) {
            self.send(kp, HubMsg::CallEnded { call_id, reason });
        }
        match phase {
            Phase::Connected { agent, since } => {
                self.stats.ended += 1;
                let handle = now.saturating_duration_since(since);
                if self.handle_times.len() == HANDLE_WINDOW {
                    self.handle_times.pop_front();
                }
                self.handle_times.push_back(handle);
                if let Some(room) = self.rooms.get_mut(&agent).filter(|r| r.call == Some(call_id)) {
                    room.call = None;
                    let peer = room.peer;
                    let next = if !self.config.wrap_up.is_zero() {
                        room.wrap_until = Some(now + self.config.wrap_up);
                        RoomState::WrapUp
                    } else if std::mem::take(&mut room.close_after) {
                        RoomState::Close
                    } else {
                        RoomState::Idle
                    };
                    self.send(peer, HubMsg::CallEnded { call_id, reason });
                    self.set_room(&agent, next, now);
                }
                self.emit(
                    now,
                    Event::Ended,
                    Some(call_id),
                    Some(&kiosk),
                    Some(&agent),
                    Some(reason.as_str()),
                );
            }
            Phase::Queued | Phase::Offered { .. } => {
                self.stats.abandoned += 1;
                self.emit(now, Event::Abandoned, Some(call_id), Some(&kiosk), None, Some(reason.as_str()));
            }
        }
    }

    /// Sends each waiting kiosk its position and estimate when either changed.
    fn tell_positions(&mut self) {
        let agents = self.rooms.values().filter(|r| r.state != RoomState::Close).count() as u32;
        let handle = if self.handle_times.is_empty() {
            self.config.default_handle_time
        } else {
            self.handle_times.iter().sum::<Duration>() / self.handle_times.len() as u32
        };
        let queue: Vec<CallId> = self.queue.iter().copied().collect();
        for (idx, call_id) in queue.into_iter().enumerate() {
            let position = idx as u32 + 1;
            let estimate = (agents > 0).then(|| {
                let secs = handle.as_secs_f64() * f64::from(position) / f64::from(agents);
                secs.ceil().min(f64::from(u32::MAX)) as u32
            });
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            if call.phase != Phase::Queued || call.away_until.is_some() {
                continue;
            }
            if call.told == Some((position, estimate)) {
                continue;
            }
            call.told = Some((position, estimate));
            let kiosk = call.kiosk.clone();
            if let Some(&kp) = self.kiosks.get(&kiosk) {
                self.send(kp, HubMsg::Queued { call_id, position, estimated_wait_s: estimate });
            }
        }
    }

    fn set_room(&mut self, agent: &str, state: RoomState, now: Instant) {
        let Some(room) = self.rooms.get_mut(agent) else {
            return;
        };
        if room.state == state {
            return;
        }
        if state == RoomState::Idle {
            room.idle_since = now;
        }
        room.state = state;
        let peer = room.peer;
        self.send(peer, HubMsg::Room { state });
        self.emit(now, Event::AgentState, None, None, Some(agent), Some(state.as_str()));
    }

    /// Connects the media of a call's two legs, when both are present.
    fn route(&mut self, call_id: CallId) {
        let Some(call) = self.calls.get(&call_id) else { return };
        let Phase::Connected { agent, .. } = &call.phase else { return };
        if call.away_until.is_some() {
            return;
        }
        let kiosk = self.kiosks.get(&call.kiosk).copied();
        let agent = self.agent_peer(call_id, agent);
        if let (Some(k), Some(a)) = (kiosk, agent) {
            self.out.push_back(Output::Route { peer: k, to: Some((a, call_id)) });
            self.out.push_back(Output::Route { peer: a, to: Some((k, call_id)) });
        }
    }

    fn refuse(&mut self, now: Instant, peer: PeerId, reason: String) {
        self.stats.protocol_errors += 1;
        self.send(peer, HubMsg::Error { message: reason.clone(), fatal: true });
        self.close(peer, reason);
        // From now on the peer is gone: later messages from it are ignored, and what it held
        // (a place in the queue, a call) is handled as for a lost connection.
        self.on_disconnected(peer, now);
    }

    fn close(&mut self, peer: PeerId, reason: String) {
        self.out.push_back(Output::Close { peer, reason });
    }

    fn send(&mut self, peer: PeerId, msg: HubMsg) {
        self.out.push_back(Output::Send { peer, msg });
    }

    fn record(
        &self,
        now: Instant,
        event: Event,
        call_id: Option<CallId>,
        kiosk: Option<&str>,
        agent: Option<&str>,
    ) -> EventRecord {
        let ts_ms = self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        EventRecord {
            ts_ms,
            event,
            call_id,
            kiosk: kiosk.map(str::to_string),
            agent: agent.map(str::to_string),
            detail: None,
            position: None,
            moved: None,
        }
    }

    fn emit(
        &mut self,
        now: Instant,
        event: Event,
        call_id: Option<CallId>,
        kiosk: Option<&str>,
        agent: Option<&str>,
        detail: Option<&str>,
    ) {
        let mut rec = self.record(now, event, call_id, kiosk, agent);
        rec.detail = detail.map(str::to_string);
        self.out.push_back(Output::Event(rec));
    }
}

#[cfg(test)]
mod tests;

/// Why a rate limit said no, for the peer.
fn rate_message(refusal: RateRefusal, what: &str) -> String {
    match refusal {
        RateRefusal::Exceeded { retry_after } => {
            format!("too many {what}; the next is taken in {:.1} s", retry_after.as_secs_f64())
        }
        RateRefusal::TableFull => format!("too many {what} on the hub; try again later"),
    }
}
