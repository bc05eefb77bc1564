//! The hub's driver: QUIC endpoint, one task per connection, one task for the queue core.
//!
//! ```text
//! connection task (per peer) ── CoreCmd ──► core task (AgentQueue) ── WriterCmd ──► writer task (per peer)
//!                                            │
//!                                            └── event log (JSON lines, append)
//! ```
//! The core task is the only owner of the queue. Per-peer writer channels are bounded: a
//! peer that cannot keep up is disconnected rather than allowed to hold back the others.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use quinn::{Connection, VarInt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::edges::net::close_code;
use crate::edges::net::control::{ControlError, ControlReader, ControlWriter};
use crate::edges::net::tls::{TlsMaterial, peer_identity, server_config};
use crate::protocol::{CallId, ClientMsg, HubMsg, KioskHealth, Role};
use crate::queue::log::{Event, EventRecord};
use crate::queue::{AgentQueue, Input, LogSummary, Output, PeerId, QueueConfig, QueueStats, Snapshot};
use crate::record::Party;
use crate::record::RecordingOptions;
use crate::roles::hub::metrics::HubMetrics;
use recording::{Note, Recording};
use relay::Leg;

pub mod metrics;
pub mod recording;
pub mod relay;

/// Messages queued for one peer before it counts as too slow (256 × ≤16 KiB).
const PEER_QUEUE: usize = 256;
/// Inputs queued for the core from all connections; back-pressure beyond it.
const CORE_QUEUE: usize = 4096;
/// Time a new connection has to open its control stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::edges::net::tls::TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("event log {0}: {1}")]
    EventLog(PathBuf, std::io::Error),
    #[error("cannot serve metrics on {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
    #[error("recordings folder {0}: {1}")]
    Recordings(PathBuf, std::io::Error),
}

/// What the hub needs to run.
pub struct HubOptions {
    pub listen: SocketAddr,
    pub tls: TlsMaterial,
    pub queue: QueueConfig,
    /// JSON-lines event log; continued if it exists.
    pub event_log: PathBuf,
    /// Serve Prometheus metrics here (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// Record the calls whose customer consented; none when recording is off.
    pub recording: Option<RecordingOptions>,
}

/// What the hub reports while it runs.
#[derive(Debug, Clone, Default)]
pub struct HubStatus {
    pub stats: QueueStats,
    pub snapshot: Snapshot,
    pub connections: usize,
    pub refused: u64,
    pub event_log_errors: u64,
    /// Media relayed, over all calls so far.
    pub media: relay::LegTotals,
    /// Advances every second while the core loop runs (systemd's watchdog is fed from it).
    pub heartbeat: u64,
    /// Each kiosk's last reported health, by id.
    pub kiosks: BTreeMap<String, KioskStatus>,
    /// Recordings in progress, finished whole, and stopped by an error.
    pub recordings_active: usize,
    pub recordings_finished: u64,
    pub recordings_failed: u64,
}

/// A kiosk as the hub knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KioskStatus {
    pub connected: bool,
    pub health: KioskHealth,
}

/// A running hub.
pub struct RunningHub {
    pub local_addr: SocketAddr,
    /// Where the metrics are served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    status: watch::Receiver<HubStatus>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl RunningHub {
    pub fn status(&self) -> HubStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (tests wait on it).
    pub fn watch_status(&self) -> watch::Receiver<HubStatus> {
        self.status.clone()
    }

    /// Ends every call, tells every peer, and stops.
    pub async fn shutdown(self) -> HubStatus {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.endpoint.close(VarInt::from_u32(close_code::SHUTDOWN), b"hub shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.status.borrow().clone()
    }
}

enum CoreCmd {
    Health { id: String, health: KioskHealth },
    Connected { peer: PeerId, role: Role, id: String, link: PeerLink },
    Message { peer: PeerId, msg: ClientMsg },
    Disconnected { peer: PeerId },
    Refused,
}

struct PeerLink {
    tx: mpsc::Sender<WriterCmd>,
    role: Role,
    /// Where this peer's media goes (set by the core's `Route` outputs).
    route: watch::Sender<Option<Leg>>,
    conn: Connection,
    remote: SocketAddr,
    id: String,
}

enum WriterCmd {
    Msg(HubMsg),
    Close(u32, String),
}

/// Binds the endpoint and starts the hub's tasks.
pub async fn start(opts: HubOptions) -> Result<RunningHub, HubError> {
    let server = server_config(&opts.tls)?;
    let endpoint =
        quinn::Endpoint::server(server, opts.listen).map_err(|e| HubError::Listen(opts.listen, e))?;
    let local_addr = endpoint.local_addr().map_err(|e| HubError::Listen(opts.listen, e))?;

    let summary = read_log(&opts.event_log).map_err(|e| HubError::EventLog(opts.event_log.clone(), e))?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.event_log)
        .map_err(|e| HubError::EventLog(opts.event_log.clone(), e))?;
    if summary.bad_lines > 0 {
        warn!(lines = summary.bad_lines, "event log has unreadable lines (a crash can tear the last one)");
    }

    let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
    let (status_tx, status_rx) = watch::channel(HubStatus::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let metrics = match opts.metrics {
        Some(addr) => {
            let m = Arc::new(std::sync::Mutex::new(HubMetrics::new()));
            let bound = crate::roles::hub::metrics::serve(addr, m.clone())
                .await
                .map_err(|e| HubError::Metrics(addr, e))?;
            Some((m, bound))
        }
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
    let accept = tokio::spawn(accept_loop(endpoint.clone(), core_tx));
    let now = Instant::now().into_std();
    let queue_config = QueueConfig { record_calls: opts.recording.is_some(), ..opts.queue };
    let mut queue = AgentQueue::new(queue_config, now, unix_ms());
    if let Some(rec) = &opts.recording {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&rec.dir)
            .map_err(|e| HubError::Recordings(rec.dir.clone(), e))?;
        if let Some(keep) = rec.retention {
            tokio::spawn(retention_task(rec.dir.clone(), keep));
        }
        info!(dir = %rec.dir.display(), "recording calls whose customers consented");
    }
    let (notes_tx, notes_rx) = mpsc::unbounded_channel();
    let (stopper_tx, stopper_rx) = mpsc::unbounded_channel();
    let stopper = tokio::spawn(stop_recordings(stopper_rx));
    queue.restore(&summary, now);
    let core = Core {
        queue,
        links: HashMap::new(),
        log: BufWriter::new(log_file),
        status: status_tx,
        log_errors: 0,
        refused: 0,
        routes: HashMap::new(),
        media: HashMap::new(),
        media_totals: relay::LegTotals::default(),
        metrics: metrics.map(|(m, _)| m),
        heartbeat: 0,
        kiosks: BTreeMap::new(),
        recording: opts.recording,
        recordings: HashMap::new(),
        notes: notes_tx,
        stopper: stopper_tx,
        recordings_finished: 0,
        recordings_failed: 0,
    };
    let task = tokio::spawn(async move {
        core.run(core_rx, notes_rx, shutdown_rx).await;
        accept.abort();
        // Recordings still being finished complete before the hub says it stopped.
        let _ = stopper.await;
    });
    info!(addr = %local_addr, log = %opts.event_log.display(), "hub listening");
    Ok(RunningHub { local_addr, metrics_addr, status: status_rx, shutdown: shutdown_tx, task, endpoint })
}

/// Deletes expired recordings at start and every hour.
async fn retention_task(dir: PathBuf, keep: Duration) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let (d, k) = (dir.clone(), keep);
        match tokio::task::spawn_blocking(move || recording::sweep(&d, k)).await {
            Ok(Ok(deleted)) if !deleted.is_empty() => {
                info!(count = deleted.len(), dir = %dir.display(), "expired recordings deleted");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, dir = %dir.display(), "expired recordings not deleted"),
            Err(e) => warn!(error = %e, "retention task failed"),
        }
    }
}

/// Stops each recording once its call's media in flight has arrived (the relay drains for
/// [`crate::media::DRAIN`]), and waits for its file to be finished. Ends when the core is
/// gone and every recording is finished.
async fn stop_recordings(mut rx: mpsc::UnboundedReceiver<(Instant, Recording)>) {
    let mut finishing = tokio::task::JoinSet::new();
    while let Some((at, recording)) = rx.recv().await {
        finishing.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(thread) = recording.stop() {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        });
    }
    while finishing.join_next().await.is_some() {}
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn read_log(path: &PathBuf) -> std::io::Result<LogSummary> {
    match File::open(path) {
        Ok(f) => {
            let lines: Vec<String> = std::io::BufReader::new(f).lines().collect::<Result<_, _>>()?;
            Ok(LogSummary::from_lines(lines.iter().map(String::as_str)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LogSummary::default()),
        Err(e) => Err(e),
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, core: mpsc::Sender<CoreCmd>) {
    let next_peer = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let peer = next_peer.fetch_add(1, Ordering::Relaxed);
        let core = core.clone();
        let remote = incoming.remote_address();
        tokio::spawn(
            async move { handle_connection(incoming, peer, core).await }
                .instrument(info_span!("peer", peer, %remote)),
        );
    }
}

async fn handle_connection(incoming: quinn::Incoming, peer: PeerId, core: mpsc::Sender<CoreCmd>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            warn!(%remote, reason = %e, "connection refused during TLS handshake");
            let _ = core.send(CoreCmd::Refused).await;
            return;
        }
    };
    let ident = match peer_identity(&conn) {
        Ok(ident) => ident,
        Err(e) => {
            warn!(%remote, reason = %e, "connection refused: certificate identity");
            conn.close(VarInt::from_u32(close_code::REFUSED), e.to_string().as_bytes());
            let _ = core.send(CoreCmd::Refused).await;
            return;
        }
    };
    let (send, recv) = match tokio::time::timeout(STREAM_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            debug!(%remote, id = %ident.id, reason = %e, "connection ended before its control stream");
            return;
        }
        Err(_) => {
            warn!(%remote, id = %ident.id, "refused: no control stream within {STREAM_TIMEOUT:?}");
            conn.close(VarInt::from_u32(close_code::PROTOCOL), b"no control stream");
            return;
        }
    };
    info!(role = %ident.role, id = %ident.id, "connected");
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let (route, route_rx) = watch::channel(None);
    let link = PeerLink { tx, role: ident.role, route, conn: conn.clone(), remote, id: ident.id.clone() };
    if core.send(CoreCmd::Connected { peer, role: ident.role, id: ident.id.clone(), link }).await.is_err() {
        return; // hub stopping
    }
    tokio::spawn(write_loop(rx, ControlWriter::new(send), conn.clone()).in_current_span());
    let relay = tokio::spawn(relay::forward(conn.clone(), route_rx).in_current_span());
    let mut reader = ControlReader::new(recv);
    let mut first = true;
    loop {
        // The first message (hello) must come quickly; a silent peer holds no slot for long.
        let next = if first {
            first = false;
            match tokio::time::timeout(STREAM_TIMEOUT, reader.recv::<ClientMsg>()).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(%remote, id = %ident.id, "refused: no hello within {STREAM_TIMEOUT:?}");
                    conn.close(VarInt::from_u32(close_code::PROTOCOL), b"no hello");
                    break;
                }
            }
        } else {
            reader.recv::<ClientMsg>().await
        };
        match next {
            Ok(msg) => {
                if let ClientMsg::Health(health) = &msg
                    && ident.role == Role::Kiosk
                {
                    let _ = core.send(CoreCmd::Health { id: ident.id.clone(), health: health.clone() }).await;
                }
                if core.send(CoreCmd::Message { peer, msg }).await.is_err() {
                    break;
                }
            }
            Err(ControlError::Decode(e)) => {
                warn!(%remote, id = %ident.id, reason = %e, "disconnecting peer: protocol error");
                conn.close(VarInt::from_u32(close_code::PROTOCOL), e.to_string().as_bytes());
                break;
            }
            Err(e) => {
                let reason = conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
                info!(id = %ident.id, %reason, "disconnected");
                break;
            }
        }
    }
    relay.abort();
    let _ = core.send(CoreCmd::Disconnected { peer }).await;
}

async fn write_loop(mut rx: mpsc::Receiver<WriterCmd>, mut writer: ControlWriter, conn: Connection) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Msg(msg) => {
                if let Err(e) = writer.send(&msg).await {
                    debug!(error = %e, "write failed");
                    return;
                }
            }
            WriterCmd::Close(code, reason) => {
                writer.finish(Duration::from_secs(1)).await;
                conn.close(VarInt::from_u32(code), reason.as_bytes());
                return;
            }
        }
    }
    writer.finish(Duration::from_secs(1)).await;
}

struct Core {
    queue: AgentQueue,
    links: HashMap<PeerId, PeerLink>,
    log: BufWriter<File>,
    status: watch::Sender<HubStatus>,
    log_errors: u64,
    refused: u64,
    /// Which call each routed peer's media belongs to.
    routes: HashMap<PeerId, CallId>,
    /// Media counters of calls with at least one routed leg.
    media: HashMap<CallId, relay::CallMedia>,
    /// Counters of finished calls, added up.
    media_totals: relay::LegTotals,
    metrics: Option<Arc<std::sync::Mutex<HubMetrics>>>,
    heartbeat: u64,
    /// The last health each kiosk reported.
    kiosks: BTreeMap<String, KioskStatus>,
    recording: Option<RecordingOptions>,
    /// Recordings of calls in progress.
    recordings: HashMap<CallId, Recording>,
    /// Where the recordings report.
    notes: mpsc::UnboundedSender<Note>,
    /// Recordings to stop and finish (see [`stop_recordings`]).
    stopper: mpsc::UnboundedSender<(Instant, Recording)>,
    recordings_finished: u64,
    recordings_failed: u64,
}

impl Core {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreCmd>,
        mut notes: mpsc::UnboundedReceiver<Note>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.drain();
            let now = Instant::now();
            if deadline.is_some_and(|d| now.into_std() >= d) {
                self.input(Input::Tick);
                continue;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(CoreCmd::Connected { peer, role, id, link }) => {
                        self.links.insert(peer, link);
                        self.input(Input::Connected { peer, role, id });
                    }
                    Some(CoreCmd::Message { peer, msg }) => self.input(Input::Message { peer, msg }),
                    Some(CoreCmd::Disconnected { peer }) => {
                        if let Some(link) = self.links.remove(&peer)
                            && let Some(k) = self.kiosks.get_mut(&link.id)
                            && self.links.values().all(|l| l.id != link.id)
                        {
                            k.connected = false;
                        }
                        if let Some(call_id) = self.routes.remove(&peer) {
                            self.finish_media(call_id);
                        }
                        self.input(Input::Disconnected { peer });
                    }
                    Some(CoreCmd::Refused) => self.refused += 1,
                    Some(CoreCmd::Health { id, health }) => {
                        self.kiosks.insert(id, KioskStatus { connected: true, health });
                    }
                    None => break,
                },
                () = sleep => self.input(Input::Tick),
                Some(note) = notes.recv() => self.on_recording_note(note),
                _ = heartbeat.tick() => self.heartbeat += 1,
                _ = shutdown.changed() => {
                    self.input(Input::Shutdown);
                    self.drain();
                    for (_, link) in self.links.drain() {
                        let _ = link.tx.try_send(WriterCmd::Close(close_code::SHUTDOWN, "hub shutting down".into()));
                    }
                    for (_, recording) in self.recordings.drain() {
                        let _ = self.stopper.send((Instant::now(), recording));
                    }
                    break;
                }
            }
        }
        // Recordings still being finished report until their threads end (each holds a sender;
        // the core's own are dropped here), within a bound in case a disk hangs.
        self.notes = mpsc::unbounded_channel().0;
        self.stopper = mpsc::unbounded_channel().0;
        let finishing = async {
            while let Some(note) = notes.recv().await {
                self.on_recording_note(note);
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), finishing).await.is_err() {
            warn!("recordings not finished within 30 s of shutdown");
        }
        self.drain();
        if let Err(e) = self.log.flush() {
            error!(error = %e, "event log flush failed");
        }
        info!("hub stopped");
    }

    fn input(&mut self, input: Input) {
        if let Err(e) = self.queue.handle_input(input, Instant::now().into_std()) {
            error!(error = %e, "queue core refused input");
        }
    }

    /// Carries out the core's outputs; returns its next deadline.
    fn drain(&mut self) -> Option<std::time::Instant> {
        let mut wrote = false;
        let deadline = loop {
            match self.queue.poll_output() {
                Output::Send { peer, msg } => self.send(peer, msg),
                Output::Close { peer, reason } => {
                    if let Some(link) = self.links.remove(&peer) {
                        warn!(peer, remote = %link.remote, id = %link.id, %reason, "refusing peer");
                        if link.tx.try_send(WriterCmd::Close(close_code::REFUSED, reason.clone())).is_err() {
                            link.conn.close(VarInt::from_u32(close_code::REFUSED), reason.as_bytes());
                        }
                    }
                }
                Output::Event(rec) => {
                    wrote = true;
                    self.log_event(&rec);
                }
                Output::Route { peer, to } => self.route(peer, to),
                Output::StartRecording { call_id, kiosk, agent } => {
                    self.start_recording(call_id, &kiosk, &agent);
                }
                Output::StopRecording { call_id } => {
                    if let Some(recording) = self.recordings.remove(&call_id) {
                        let at = Instant::now() + crate::media::DRAIN + Duration::from_millis(100);
                        let _ = self.stopper.send((at, recording));
                    }
                }
                Output::Wait(deadline) => break deadline,
            }
        };
        if wrote && let Err(e) = self.log.flush() {
            self.log_errors += 1;
            error!(error = %e, "event log flush failed");
        }
        let now = Instant::now().into_std();
        let status = HubStatus {
            stats: self.queue.stats().clone(),
            snapshot: self.queue.snapshot(now),
            connections: self.links.len(),
            refused: self.refused,
            event_log_errors: self.log_errors,
            media: {
                let mut t = self.media_totals.clone();
                for m in self.media.values() {
                    t.add(&m.totals());
                }
                t
            },
            heartbeat: self.heartbeat,
            kiosks: self.kiosks.clone(),
            recordings_active: self.recordings.len(),
            recordings_finished: self.recordings_finished,
            recordings_failed: self.recordings_failed,
        };
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.observe_status(&status);
        }
        self.status.send_replace(status);
        deadline
    }

    /// Points `peer`'s media at its partner's connection, or nowhere.
    fn route(&mut self, peer: PeerId, to: Option<(PeerId, CallId)>) {
        let leg = to.and_then(|(partner, call_id)| {
            let conn = self.links.get(&partner)?.conn.clone();
            let counters = self.media.entry(call_id).or_default().leg(peer);
            let party = match self.links.get(&peer)?.role {
                Role::Agent => Party::Agent,
                _ => Party::Kiosk,
            };
            let tap = self.recordings.get(&call_id).map(|r| r.tap(party));
            Some(Leg { call_id, conn, counters, tap })
        });
        if let Some(old) = self.routes.remove(&peer) {
            self.finish_media(old);
        }
        if let Some(leg) = &leg {
            self.routes.insert(peer, leg.call_id);
        }
        if let Some(link) = self.links.get(&peer) {
            // Read first: the watch's read guard must be gone before it is written.
            let current = link.route.borrow().as_ref().map(|l| l.call_id);
            match (&leg, current) {
                // A call ended: keep relaying what is already on its way for a moment (the
                // senders stopped capturing), then stop, unless a new call took the route.
                (None, Some(ended)) => {
                    let route = link.route.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(crate::media::DRAIN).await;
                        route.send_if_modified(|r| {
                            let stale = r.as_ref().is_some_and(|l| l.call_id == ended);
                            if stale {
                                *r = None;
                            }
                            stale
                        });
                    });
                }
                _ => {
                    link.route.send_replace(leg);
                }
            }
        }
    }

    /// Logs a call's media counters once neither leg is routed any more.
    fn finish_media(&mut self, call_id: CallId) {
        if self.routes.values().any(|&c| c == call_id) {
            return;
        }
        if let Some(media) = self.media.remove(&call_id) {
            let t = media.totals();
            info!(
                call_id,
                audio_forwarded = t.audio_forwarded,
                audio_dropped = t.audio_dropped,
                video_forwarded = t.video_forwarded,
                video_dropped = t.video_dropped,
                invalid = t.invalid,
                kbytes = t.bytes / 1000,
                "call media relayed"
            );
            self.media_totals.add(&t);
        }
    }

    /// Appends a record to the event log (flushed by the caller) and counts it in the metrics.
    fn log_event(&mut self, rec: &EventRecord) {
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.observe_event(rec);
        }
        let line = serde_json::to_string(rec).unwrap_or_default();
        if let Err(e) = writeln!(self.log, "{line}") {
            self.log_errors += 1;
            error!(error = %e, "event log write failed");
        }
    }

    /// Logs a recording's event now, with its call's parties.
    fn log_recording(&mut self, event: Event, call_id: CallId, detail: String) {
        let rec = EventRecord {
            ts_ms: unix_ms(),
            event,
            call_id: Some(call_id),
            kiosk: None,
            agent: None,
            detail: Some(detail),
            position: None,
        };
        self.log_event(&rec);
        if let Err(e) = self.log.flush() {
            self.log_errors += 1;
            error!(error = %e, "event log flush failed");
        }
    }

    fn start_recording(&mut self, call_id: CallId, kiosk: &str, agent: &str) {
        let Some(opts) = &self.recording else { return };
        match Recording::start(&opts.dir, call_id, kiosk, agent, self.notes.clone()) {
            Ok(recording) => {
                self.recordings.insert(call_id, recording);
            }
            Err(e) => {
                error!(call_id, error = %e, "recording not started; the call goes on");
                self.recordings_failed += 1;
                self.log_recording(Event::RecordingFailed, call_id, format!("not started: {e}"));
            }
        }
    }

    fn on_recording_note(&mut self, note: Note) {
        match note {
            Note::Started { call_id, path } => {
                self.log_recording(Event::RecordingStarted, call_id, path.display().to_string());
            }
            Note::Finished { call_id, path, .. } => {
                self.recordings_finished += 1;
                self.log_recording(Event::RecordingFinished, call_id, path.display().to_string());
            }
            Note::Failed { call_id, error } => {
                self.recordings_failed += 1;
                self.log_recording(Event::RecordingFailed, call_id, error);
            }
            Note::KeyframeNeeded { call_id, party } => {
                let role = match party {
                    Party::Kiosk => Role::Kiosk,
                    Party::Agent => Role::Agent,
                };
                let peer = self
                    .routes
                    .iter()
                    .find(|(p, c)| **c == call_id && self.links.get(p).is_some_and(|l| l.role == role))
                    .map(|(p, _)| *p);
                if let Some(peer) = peer {
                    self.send(peer, HubMsg::KeyframeRequest { call_id });
                }
            }
        }
    }

    fn send(&mut self, peer: PeerId, msg: HubMsg) {
        let Some(link) = self.links.get(&peer) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = link.tx.try_send(WriterCmd::Msg(msg)) {
            warn!(peer, remote = %link.remote, id = %link.id, "peer cannot keep up with its messages; disconnecting it");
            link.conn.close(VarInt::from_u32(close_code::TOO_SLOW), b"too slow");
            self.links.remove(&peer);
        }
    }
}
