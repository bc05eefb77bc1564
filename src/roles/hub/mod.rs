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
use std::io::{BufRead, BufWriter};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::VarInt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use self::core::Core;
use crate::edges::db::{ShipStatus, Shipper};
use crate::edges::net::close_code;
use crate::edges::net::tls::{Revocations, TlsMaterial, server_config_revoking};
use crate::limits::{Admission, AdmissionConfig};
use crate::protocol::KioskHealth;
use crate::queue::{AgentQueue, LogSummary, QueueConfig, QueueStats, Snapshot};
use crate::record::RecordingOptions;
use metrics::HubMetrics;
use recording::Recording;

pub mod console;
mod core;
pub mod metrics;
mod peer;
pub mod recording;
pub mod relay;
mod renewal;
mod revocation;

pub use renewal::RenewalIssuer;

/// Messages queued for one peer before it counts as too slow (256 × ≤16 KiB).
pub(super) const PEER_QUEUE: usize = 256;
/// Inputs queued for the core from all connections; back-pressure beyond it.
const CORE_QUEUE: usize = 4096;
/// At shutdown, the longest wait for the event log's last lines to reach the database.
const SHIP_AT_SHUTDOWN: Duration = Duration::from_secs(8);
/// Time a new connection has to open its control stream.
pub(super) const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("revocation list: {0}")]
    Crl(crate::edges::net::tls::TlsError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
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
    /// A certificate revocation list (PEM, `kioskd certs revoke`): its certificates are refused
    /// at the handshake, and connected peers it names are disconnected. Read again when the
    /// file changes and on [`RunningHub::reload_revocations`] (SIGHUP).
    pub crl: Option<PathBuf>,
    /// The limits on new connections (flood protection); the limits on call requests and
    /// texts are the queue's.
    pub admission: AdmissionConfig,
    /// Renews kiosk and agent certificates on line with this renewal CA; refused when absent.
    pub renewal: Option<Arc<RenewalIssuer>>,
    /// The deployment's PostgreSQL: the event log is shipped to it, line by line, from the
    /// file (which stays the hub's journal), and the hubs share their queue through it. None:
    /// the file only.
    pub database: Option<DatabaseOptions>,
    /// The advisors' browser console; off when absent.
    pub console: Option<console::ConsoleOptions>,
}

/// The hub's part in a deployment of several hubs (`[database]`).
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// `postgresql://…` (a password in it is never logged).
    pub url: String,
    /// Where other hubs' kiosks reach this hub (host:port): hubs whose callers have no advisor
    /// free send them here when one is free here; the listening address when it is a
    /// specific one. None (and an unspecified listening address): this hub is sent none.
    pub advertise: Option<String>,
    /// How long this hub's lease lasts (`[database] lease_ms`).
    pub lease: Duration,
}

impl From<String> for DatabaseOptions {
    fn from(url: String) -> Self {
        Self { url, advertise: None, lease: crate::edges::db::cluster::LEASE }
    }
}

/// Certificates within this many days of their end are warned about (log, doctor).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A certificate's end of validity, the hub's own or a connected party's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiry {
    pub role: crate::protocol::Role,
    pub id: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What the hub reports while it runs.
#[derive(Debug, Clone, Default)]
pub struct HubStatus {
    pub stats: QueueStats,
    pub snapshot: Snapshot,
    pub connections: usize,
    pub refused: u64,
    /// Peers disconnected because their certificate was revoked.
    pub revoked: u64,
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
    /// New connections held back by the flood limits.
    pub flood: FloodStatus,
    /// The hub's own certificate first, then each connected party's.
    pub certificates: Vec<CertificateExpiry>,
    /// Certificates renewed on line, and requests refused.
    pub renewed: u64,
    pub renewals_refused: u64,
    /// The event log's shipping to the database, when there is one.
    pub database: Option<ShipStatus>,
}

/// What the flood limits on new connections did (`limits::Admission`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloodStatus {
    /// Refused (ignored, no answer sent), by reason (`limits::Refusal::as_str`).
    pub refused: BTreeMap<&'static str, u64>,
    /// Clients asked to prove their address (QUIC Retry) before their handshake.
    pub retries: u64,
    /// Handshakes in progress now.
    pub pending_handshakes: u32,
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
    /// Where the browser console is served, when enabled.
    pub console_addrs: Option<console::ConsoleAddrs>,
    status: watch::Receiver<HubStatus>,
    shutdown: watch::Sender<bool>,
    reload: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
    endpoint: quinn::Endpoint,
    database: Option<watch::Receiver<ShipStatus>>,
}

impl RunningHub {
    pub fn status(&self) -> HubStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (tests wait on it).
    pub fn watch_status(&self) -> watch::Receiver<HubStatus> {
        self.status.clone()
    }

    /// What the shipping of the event log to the database has done, when there is one.
    pub fn database_status(&self) -> Option<watch::Receiver<ShipStatus>> {
        self.database.clone()
    }

    /// Reads the revocation list again (SIGHUP); also done when the file changes.
    pub fn reload_revocations(&self) {
        self.reload.notify_one();
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

/// Binds the endpoint and starts the hub's tasks.
pub async fn start(opts: HubOptions) -> Result<RunningHub, HubError> {
    let revoked = match &opts.crl {
        Some(path) => Revocations::load(path).map_err(HubError::Crl)?,
        None => Revocations::default(),
    };
    let server = server_config_revoking(&opts.tls, &revoked)?;
    // The serials revoked now, for the checks outside the TLS handshake (the console's
    // certificate sign-ins and sessions); the core keeps them current.
    let revoked_serials: RevokedSerials = Arc::new(std::sync::RwLock::new(revoked.serials.clone()));
    let endpoint = crate::edges::net::tls::server_endpoint(server, opts.listen, &opts.tls.key)
        .map_err(|e| HubError::Listen(opts.listen, e))?;
    let local_addr = endpoint.local_addr().map_err(|e| HubError::Listen(opts.listen, e))?;
    let (summary, log_file) = open_event_log(&opts.event_log)?;
    let metrics = start_metrics(opts.metrics).await?;
    let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
    prepare_recordings(opts.recording.as_ref())?;

    let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
    let (status_tx, status_rx) = watch::channel(HubStatus::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let reload = Arc::new(tokio::sync::Notify::new());
    if let Some(path) = opts.crl.clone() {
        let watch = revocation::Watch {
            path,
            tls: opts.tls.clone(),
            endpoint: endpoint.clone(),
            core: core_tx.clone(),
        };
        tokio::spawn(watch.run(revoked, reload.clone(), shutdown_rx.clone()));
    }
    let admission =
        Arc::new(std::sync::Mutex::new(Admission::new(opts.admission, Instant::now().into_std())));
    let own = own_expiry(&opts.tls);
    if let Some(own) = &own {
        tokio::spawn(warn_own_expiry(own.not_after));
    }
    let hub_id = own.as_ref().map_or_else(|| "hub".to_string(), |c| c.id.clone());
    let advertise = opts.database.as_ref().and_then(|d| {
        d.advertise.clone().or_else(|| (!local_addr.ip().is_unspecified()).then(|| local_addr.to_string()))
    });
    if opts.database.is_some() && advertise.is_none() {
        warn!(
            "no [database] advertise address: other hubs send this hub no callers when its advisors are free"
        );
    }
    let places = opts.database.clone().map(|d| {
        let (tx, rx) = mpsc::channel(PLACE_QUERIES);
        tokio::spawn(find_places(d.url, hub_id.clone(), rx, core_tx.clone()));
        tx
    });
    let mut cluster_task = None;
    if let Some((url, lease)) = opts.database.as_ref().map(|d| (d.url.clone(), d.lease)) {
        let (tx, mut rx) = mpsc::channel(16);
        let cluster = crate::edges::db::cluster::Cluster {
            url,
            hub: hub_id.clone(),
            address: advertise.clone(),
            lease,
        };
        cluster_task = Some(tokio::spawn(cluster.run(tx, shutdown_rx.clone())));
        let core = core_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if core.send(peer::CoreCmd::Cluster(ev)).await.is_err() {
                    break;
                }
            }
        });
    }
    let console_addrs = match opts.console {
        Some(c) => {
            let ctx = console::Context {
                tls: &opts.tls,
                core: core_tx.clone(),
                status: status_rx.clone(),
                revoked: revoked_serials.clone(),
                shutdown: shutdown_rx.clone(),
            };
            Some(console::start(c, ctx).await?)
        }
        None => None,
    };
    let accept =
        tokio::spawn(peer::accept_loop(endpoint.clone(), core_tx, admission.clone(), opts.renewal.clone()));
    let now = Instant::now().into_std();
    let queue_config = QueueConfig {
        record_calls: opts.recording.is_some(),
        shared_places: opts.database.is_some(),
        ..opts.queue
    };
    let mut queue = AgentQueue::new(queue_config, now, unix_ms());
    queue.restore(&summary, now);
    let (notes_tx, notes_rx) = mpsc::unbounded_channel();
    let (stopper_tx, stopper_rx) = mpsc::unbounded_channel();
    let stopper = tokio::spawn(stop_recordings(stopper_rx));
    let (database, shipper) = match opts.database.map(|d| d.url) {
        Some(url) => {
            let (tx, rx) = watch::channel(ShipStatus::default());
            let (stop_tx, stop_rx) = watch::channel(false);
            let shipper = Shipper { url, hub: hub_id, file: opts.event_log.clone() };
            (Some(rx), Some((tokio::spawn(shipper.run(tx, stop_rx)), stop_tx)))
        }
        None => (None, None),
    };
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
        revoked: 0,
        admission,
        own_certificate: own,
        renewed: 0,
        renewals_refused: 0,
        database: database.clone(),
        places,
        revoked_serials,
    };
    let task = tokio::spawn(async move {
        core.run(core_rx, notes_rx, shutdown_rx).await;
        accept.abort();
        // Recordings still being finished complete before the hub says it stopped.
        let _ = stopper.await;
        // The core's last lines are in the file: they go to the database before the hub stops
        // (or at its next start, when the database is away).
        if let Some((task, stop)) = shipper {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(SHIP_AT_SHUTDOWN, task).await;
        }
        // The lease is released for the hub's next start (edges::db::cluster).
        if let Some(task) = cluster_task {
            let _ = tokio::time::timeout(SHIP_AT_SHUTDOWN, task).await;
        }
    });
    info!(addr = %local_addr, log = %opts.event_log.display(), "hub listening");
    Ok(RunningHub {
        local_addr,
        metrics_addr,
        console_addrs,
        status: status_rx,
        shutdown: shutdown_tx,
        reload,
        task,
        endpoint,
        database,
    })
}

/// Certificate serials revoked, shared by the core (which updates them) and the console.
pub(super) type RevokedSerials = Arc<std::sync::RwLock<std::collections::HashSet<Vec<u8>>>>;

/// Most lookups waiting for the database at once; past it a kiosk asks afresh.
const PLACE_QUERIES: usize = 1024;

/// Longest wait for the database to say where a caller waited.
const PLACE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the core asks of the deployment's database (see [`find_places`]).
pub(super) enum Lookup {
    /// A kiosk resuming a call this hub does not know: where did it wait, or which call was
    /// it in ([`crate::queue::Output::FindPlace`]).
    Place { peer: crate::queue::PeerId, kiosk: String, call_id: crate::protocol::CallId },
    /// An agent resuming a call this hub does not know ([`crate::queue::Output::FindCall`]).
    Call { peer: crate::queue::PeerId, agent: String, call_id: crate::protocol::CallId },
    /// Callers this hub holds again ([`crate::queue::Output::Reclaim`]).
    Reclaim(Vec<crate::queue::Waiting>),
    /// Another hub with an advisor free, for these callers ([`crate::queue::Output::FindFreeHub`]).
    FreeHub(Vec<crate::queue::Waiting>),
}

/// Answers the core's lookups from the deployment's database, one at a time, on a connection
/// of its own (opened when needed, again after a failure). A lookup that fails or takes longer
/// than [`PLACE_TIMEOUT`] finds nothing: the kiosk then asks afresh, as it would without a
/// database. A reclaim that fails is not tried again (the other hub's copy then ends with its
/// grace).
async fn find_places(
    url: String,
    hub: String,
    mut queries: mpsc::Receiver<Lookup>,
    core: mpsc::Sender<peer::CoreCmd>,
) {
    use crate::edges::db::Claimed;
    let mut db: Option<crate::edges::db::Database> = None;
    while let Some(q) = queries.recv().await {
        let (id, what) = match &q {
            Lookup::Place { kiosk, .. } => (kiosk.clone(), "a caller's place"),
            Lookup::Call { agent, .. } => (agent.clone(), "an advisor's call"),
            Lookup::Reclaim(c) => (format!("{} callers", c.len()), "callers to reclaim"),
            Lookup::FreeHub(_) => (hub.clone(), "a hub with an advisor free"),
        };
        if let Lookup::FreeHub(callers) = &q {
            let look = async {
                if db.as_ref().is_none_or(|d| d.is_closed()) {
                    db = Some(crate::edges::db::Database::connect_read(&url).await?);
                }
                match db.as_mut() {
                    Some(d) => d.free_hub(&hub, callers, unix_ms()).await,
                    None => Ok(None),
                }
            };
            let address = match tokio::time::timeout(PLACE_TIMEOUT, look).await {
                Ok(Ok(address)) => address,
                Ok(Err(e)) => {
                    warn!(%id, error = %e, "could not look for {what} in the database");
                    db = None;
                    None
                }
                Err(_) => {
                    warn!(%id, "the database did not answer within {PLACE_TIMEOUT:?} about {what}");
                    db = None;
                    None
                }
            };
            if let Some((to, sent)) = &address
                && !sent.is_empty()
            {
                info!(hub = %to, callers = sent.len(), "no advisor free here: waiting callers go to a hub with one");
            }
            if core.send(peer::CoreCmd::FreeHub(address)).await.is_err() {
                break;
            }
            continue;
        }
        let lookup = async {
            if db.as_ref().is_none_or(|d| d.is_closed()) {
                db = Some(crate::edges::db::Database::connect_read(&url).await?);
            }
            let Some(d) = db.as_mut() else { return Ok(Claimed::Nothing) };
            match &q {
                Lookup::Call { agent, call_id, .. } => d
                    .claim_call(agent, *call_id, &hub)
                    .await
                    .map(|c| c.map_or(Claimed::Nothing, Claimed::Call)),
                Lookup::Place { kiosk, call_id, .. } => d.claim_place(kiosk, *call_id, &hub, unix_ms()).await,
                Lookup::Reclaim(callers) => {
                    d.reclaim(callers, &hub, unix_ms()).await.map(|()| Claimed::Nothing)
                }
                Lookup::FreeHub(_) => Ok(Claimed::Nothing),
            }
        };
        let found = match tokio::time::timeout(PLACE_TIMEOUT, lookup).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                warn!(%id, error = %e, "could not look up {what} in the database");
                db = None;
                Claimed::Nothing
            }
            Err(_) => {
                warn!(%id, "the database did not answer within {PLACE_TIMEOUT:?} about {what}");
                db = None;
                Claimed::Nothing
            }
        };
        let answer = match (q, found) {
            (Lookup::FreeHub(_), _) => continue,
            (Lookup::Reclaim(callers), _) => {
                info!(
                    callers = callers.len(),
                    "the lease is back: this hub's waiting callers are its own again"
                );
                continue;
            }
            (Lookup::Place { peer, call_id, kiosk }, Claimed::Waiting(p)) => {
                info!(%kiosk, from = %p.hub, call_id = p.call_id, "a caller keeps its place from another hub");
                peer::CoreCmd::PlaceFound { peer, call_id, place: Some(p) }
            }
            (Lookup::Place { peer, call_id, .. } | Lookup::Call { peer, call_id, .. }, Claimed::Call(c)) => {
                info!(%id, from = %c.hub, call_id = c.call_id, "a call in progress goes on through this hub");
                peer::CoreCmd::CallFound { peer, call_id, call: Some(c) }
            }
            (Lookup::Call { peer, call_id, .. }, _) => peer::CoreCmd::CallFound { peer, call_id, call: None },
            (Lookup::Place { peer, call_id, .. }, _) => {
                peer::CoreCmd::PlaceFound { peer, call_id, place: None }
            }
        };
        if core.send(answer).await.is_err() {
            break;
        }
    }
}

fn own_expiry(tls: &TlsMaterial) -> Option<CertificateExpiry> {
    let leaf = tls.chain.first()?;
    let ident = crate::edges::net::tls::identity_from_cert(leaf).ok()?;
    let not_after = crate::edges::net::tls::not_after(leaf).ok()?;
    Some(CertificateExpiry { role: ident.role, id: ident.id, not_after })
}

/// Whole days from now to `not_after` (Unix seconds), negative once past.
pub fn days_left(not_after: i64) -> i64 {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    (not_after - now).div_euclid(86_400)
}

/// Warns about the hub's own certificate from [`EXPIRY_WARNING_DAYS`] before its end, at start
/// and every 12 hours.
async fn warn_own_expiry(not_after: i64) {
    let mut every = tokio::time::interval(Duration::from_secs(12 * 3600));
    loop {
        every.tick().await;
        let days = days_left(not_after);
        if days < EXPIRY_WARNING_DAYS {
            warn!(
                days,
                "the hub's certificate expires in {days} days: issue a new one (`kioskd certs issue --role hub`)"
            );
        }
    }
}

/// Reads what the event log holds so far (to restore the queue) and opens it to append.
fn open_event_log(path: &PathBuf) -> Result<(LogSummary, File), HubError> {
    let summary = read_log(path).map_err(|e| HubError::EventLog(path.clone(), e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HubError::EventLog(path.clone(), e))?;
    if summary.bad_lines > 0 {
        warn!(lines = summary.bad_lines, "event log has unreadable lines (a crash can tear the last one)");
    }
    Ok((summary, file))
}

type SharedMetrics = Arc<std::sync::Mutex<HubMetrics>>;

/// Serves the metrics when an address is configured.
async fn start_metrics(addr: Option<SocketAddr>) -> Result<Option<(SharedMetrics, SocketAddr)>, HubError> {
    let Some(addr) = addr else { return Ok(None) };
    let m = Arc::new(std::sync::Mutex::new(HubMetrics::new()));
    let bound = metrics::serve(addr, m.clone()).await.map_err(|e| HubError::Metrics(addr, e))?;
    Ok(Some((m, bound)))
}

/// Makes the recordings folder (owner only) and starts deleting expired recordings.
fn prepare_recordings(rec: Option<&RecordingOptions>) -> Result<(), HubError> {
    let Some(rec) = rec else { return Ok(()) };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&rec.dir)
        .map_err(|e| HubError::Recordings(rec.dir.clone(), e))?;
    if let Some(keep) = rec.retention {
        tokio::spawn(retention_task(rec.dir.clone(), keep));
    }
    info!(dir = %rec.dir.display(), "recording calls whose customers consented");
    Ok(())
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
pub(super) async fn stop_recordings(mut rx: mpsc::UnboundedReceiver<(Instant, Recording)>) {
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

pub(super) fn unix_ms() -> u64 {
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
