//! The tokio driver of [`Link`]: a UDP proxy that impairs the traffic between real clients and
//! a real server, in user space.
//!
//! ```text
//! client A ─┐                 ┌─ up Link (A) ── socket A ──┐
//!           ├─ listen socket ─┤                            ├─ upstream (the hub)
//! client B ─┘                 └─ up Link (B) ── socket B ──┘
//!             ◄── down Link (A or B) ◄── socket A or B ◄──
//! ```
//!
//! - The proxy listens on one UDP socket. Each new client source address gets its own socket
//!   towards `upstream` (connected, so only the upstream's replies are taken), so the server
//!   sees one address per client, and its own pair of links: client→server through `up`,
//!   server→client through `down`.
//! - Three kinds of tasks: the listen task feeds the up links; one reader per client feeds that
//!   client's down link; the timer task drains every link when its packets are due (checking
//!   `now >= deadline` before sleeping, STYLE.md (c)) and sends them. The links sit behind one
//!   `std::sync::Mutex`, never held across an await.
//! - Time is `tokio::time::Instant`, so that paused-time tests work.
//! - Seeds: client `k` (0 for the first source seen) uses `seed + k × γ` on its up link and a
//!   mix of it on its down link, so that clients and directions do not lose the same packets
//!   even with equal seeds. Same seeds and the same traffic → same decisions.
//!
//! Bounds: at most [`MAX_CLIENTS`] clients; when full, a new source takes the place of the
//! client idle longest if it has been idle [`CLIENT_IDLE`] (its packets in flight are dropped,
//! counted in `lost_overflow`), or else its datagrams are refused (counted in
//! [`ProxyStats::refused`]). Each link holds what [`Link`] caps; one receive buffer of 64 KiB
//! per task. Worst case about 64 × (2 × 2.4 MiB + 64 KiB) ≈ 310 MiB.
//!
//! Network input never panics the proxy: socket errors are logged at `debug` and the packet is
//! skipped (a client socket gets `ECONNREFUSED` whenever the server's port is closed).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, trace};

use crate::netsim::link::{ConfigError, Link, LinkConfig, LinkStats, SplitMix64};

/// Most clients (source addresses) served at once: 64, a branch's kiosks and agents many times
/// over; bounds memory (module docs).
pub const MAX_CLIENTS: usize = 64;

/// A client silent this long (no packet either way) gives its place to a new one when the
/// table is full: 30 s, five times our endpoints' QUIC idle timeout (6 s, `net::tls`), so its
/// connection is long dead.
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// Receive buffer: the largest UDP payload, so that no datagram is truncated.
const MAX_DATAGRAM: usize = 65_535;

/// Most datagrams the timer task sends per wake before it yields: 64, so that a long burst of
/// due packets cannot starve the receiving tasks (quinn's `IO_LOOP_BOUND` reasoning).
const SEND_BATCH: usize = 64;

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// The proxy's counters: the links of every client summed per direction, clients evicted
/// included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    pub up: LinkStats,
    pub down: LinkStats,
    /// Clients served now.
    pub clients: usize,
    /// Datagrams from new sources refused because [`MAX_CLIENTS`] were busy (or their socket
    /// could not be opened).
    pub refused: u64,
}

/// A copy of the datagrams the proxy received, either way, as they arrived (before their
/// links impaired them), in order of arrival: what a capture of the server's UDP port shows.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub datagrams: Vec<(Direction, Vec<u8>)>,
    /// Their payload bytes in all.
    pub bytes: usize,
    /// Datagrams left out because the capture had reached its size.
    pub left_out: u64,
    /// At most this many payload bytes are kept.
    limit: usize,
}

impl Capture {
    fn keep(&mut self, direction: Direction, packet: &[u8]) {
        if self.bytes + packet.len() > self.limit {
            self.left_out += 1;
        } else {
            self.bytes += packet.len();
            self.datagrams.push((direction, packet.to_vec()));
        }
    }
}

/// Starts [`RunningProxy`]s.
#[derive(Debug)]
pub struct UdpProxy;

impl UdpProxy {
    /// Binds `listen` (e.g. `127.0.0.1:0`) and relays every client's datagrams to `upstream`
    /// through `up`, and the answers back through `down`. Must be called within a tokio runtime.
    /// Fails if a configuration is out of range (`InvalidInput`) or `listen` cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        up: LinkConfig,
        down: LinkConfig,
    ) -> io::Result<RunningProxy> {
        up.validate().map_err(invalid_config)?;
        down.validate().map_err(invalid_config)?;
        let socket = UdpSocket::bind(listen).await?;
        let local_addr = socket.local_addr()?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                up,
                down,
                clients: HashMap::new(),
                next_ordinal: 0,
                retired: ProxyStats::default(),
                capture: None,
            }),
            wake: Notify::new(),
            changed,
            listen: socket,
            upstream,
        });
        let tasks = vec![
            tokio::spawn(receive_from_clients(Arc::clone(&shared))),
            tokio::spawn(drive_links(Arc::clone(&shared))),
        ];
        debug!(%local_addr, %upstream, "netsim proxy started");
        Ok(RunningProxy { local_addr, shared, tasks })
    }
}

fn invalid_config(e: ConfigError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// A running proxy. Dropping it stops it too (without waiting).
#[derive(Debug)]
pub struct RunningProxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// The listen and timer tasks; the readers are in `State::clients`.
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Where clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now, per direction.
    pub fn stats(&self) -> ProxyStats {
        self.shared.lock().stats()
    }

    /// Waits until the counters satisfy `pred`, and returns them. Wrap it in a timeout.
    pub async fn wait_stats(&self, pred: impl Fn(&ProxyStats) -> bool) -> ProxyStats {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let stats = self.stats();
            // `changed` cannot close: `self.shared` holds its sender.
            if pred(&stats) || changed.changed().await.is_err() {
                return stats;
            }
        }
    }

    /// Changes the conditions of one direction for every client, from now on, and for the
    /// clients to come: outages count from now (`(Duration::ZERO, d)` cuts the link for `d`
    /// from now), packets in flight keep their arrival times ([`Link::set_config`]). On error
    /// nothing changes.
    pub fn set_config(&self, direction: Direction, config: LinkConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let now = now();
        let mut state = self.shared.lock();
        for client in state.clients.values_mut() {
            let seeded = seeded(&config, client.ordinal, direction);
            client.link(direction).set_config(seeded, now)?;
        }
        match direction {
            Direction::Up => state.up = config,
            Direction::Down => state.down = config,
        }
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// From now on keeps a copy of every datagram either way, up to `max_bytes` of payload
    /// (a capture of the server's traffic, for tests and benchmarks); restarts an empty one.
    pub fn start_capture(&self, max_bytes: usize) {
        self.shared.lock().capture = Some(Capture { limit: max_bytes, ..Capture::default() });
    }

    /// Stops the capture and hands it over (empty if none was started).
    pub fn take_capture(&self) -> Capture {
        self.shared.lock().capture.take().unwrap_or_default()
    }

    /// Stops relaying, drops the packets in flight and closes the sockets.
    pub async fn stop(mut self) {
        self.abort();
        for task in self.tasks.drain(..) {
            // Cancelled, as asked; the tasks themselves never panic.
            let _ = task.await;
        }
    }

    fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let mut state = self.shared.lock();
        for client in state.clients.values() {
            client.reader.abort();
        }
        state.clients.clear();
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.abort();
    }
}

/// What the tasks share.
#[derive(Debug)]
struct Shared {
    /// Written by every task and by `RunningProxy`; never held across an await.
    state: Mutex<State>,
    /// Wakes the timer task: a link got a packet or a new configuration.
    wake: Notify,
    /// Bumped after the counters change, for `wait_stats`.
    changed: watch::Sender<u64>,
    /// Clients send here; the timer task answers them from here.
    listen: UdpSocket,
    upstream: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics under the lock; if one did, the links are still consistent (each
        // mutation is a single call into `Link`).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After a packet entered or left a link.
    fn touched(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }
}

#[derive(Debug)]
struct State {
    /// The configurations for clients to come (current ones have theirs, seeded).
    up: LinkConfig,
    down: LinkConfig,
    clients: HashMap<SocketAddr, Client>,
    /// Ordinal of the next client, for its seeds.
    next_ordinal: u64,
    /// Counters of evicted clients.
    retired: ProxyStats,
    /// The datagrams kept since `start_capture`, if one runs.
    capture: Option<Capture>,
}

impl State {
    fn stats(&self) -> ProxyStats {
        let mut stats = self.retired.clone();
        for client in self.clients.values() {
            stats.up += client.up.stats();
            stats.down += client.down.stats();
        }
        stats.clients = self.clients.len();
        stats
    }

    /// Makes a place for the new client `from`, or says why not.
    fn admit(&mut self, shared: &Arc<Shared>, from: SocketAddr, now: Instant) -> Result<(), AdmitError> {
        if self.clients.len() >= MAX_CLIENTS {
            let idlest =
                self.clients.iter().min_by_key(|(_, c)| c.last_active).map(|(a, c)| (*a, c.last_active));
            match idlest {
                Some((addr, last)) if now.saturating_duration_since(last) >= CLIENT_IDLE => {
                    if let Some(gone) = self.clients.remove(&addr) {
                        gone.reader.abort();
                        for (link, stats) in
                            [(&gone.up, &mut self.retired.up), (&gone.down, &mut self.retired.down)]
                        {
                            *stats += link.stats();
                            stats.lost_overflow += link.len() as u64;
                        }
                        debug!(client = %addr, "netsim proxy: idle client evicted");
                    }
                }
                _ => return Err(AdmitError::Full),
            }
        }
        let socket = Arc::new(bind_towards(shared.upstream).map_err(AdmitError::Socket)?);
        let ordinal = self.next_ordinal;
        let up = Link::new(seeded(&self.up, ordinal, Direction::Up), now)?;
        let down = Link::new(seeded(&self.down, ordinal, Direction::Down), now)?;
        self.next_ordinal += 1;
        let reader = tokio::spawn(receive_from_upstream(Arc::clone(shared), from, Arc::clone(&socket)));
        let client = Client { ordinal, socket, up, down, last_active: now, reader: reader.abort_handle() };
        self.clients.insert(from, client);
        debug!(client = %from, ordinal, "netsim proxy: new client");
        Ok(())
    }
}

/// Why a new source was refused.
#[derive(Debug, thiserror::Error)]
enum AdmitError {
    #[error("{MAX_CLIENTS} clients already, none idle for {CLIENT_IDLE:?}")]
    Full,
    #[error("cannot open a socket towards the upstream: {0}")]
    Socket(io::Error),
    #[error("bad link configuration: {0}")]
    Config(#[from] ConfigError),
}

/// One client source address and its path to the upstream.
#[derive(Debug)]
struct Client {
    ordinal: u64,
    /// Connected to the upstream; written by the timer task, read by `reader`.
    socket: Arc<UdpSocket>,
    up: Link,
    down: Link,
    /// Last packet either way, for eviction.
    last_active: Instant,
    /// The task reading `socket`.
    reader: AbortHandle,
}

impl Client {
    fn link(&mut self, direction: Direction) -> &mut Link {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }
}

/// A due packet, taken out of its link under the lock and sent after it.
enum Outgoing {
    Up { socket: Arc<UdpSocket>, bytes: Vec<u8> },
    Down { client: SocketAddr, bytes: Vec<u8> },
}

/// The configuration of client `ordinal`'s link in `direction`, with its own seed.
fn seeded(config: &LinkConfig, ordinal: u64, direction: Direction) -> LinkConfig {
    let base = config.seed.wrapping_add(ordinal.wrapping_mul(SplitMix64::GAMMA));
    let seed = match direction {
        Direction::Up => base,
        Direction::Down => SplitMix64(base).next_u64(),
    };
    LinkConfig { seed, ..config.clone() }
}

/// A socket on an ephemeral port, connected to `upstream`.
fn bind_towards(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.set_nonblocking(true)?;
    socket.connect(upstream)?;
    UdpSocket::from_std(socket)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The listen task: client datagrams into their up links.
async fn receive_from_clients(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = match shared.listen.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                debug!(error = %e, "netsim proxy: receive from clients failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = now();
        let packet = buf.get(..len).unwrap_or_default().to_vec();
        let refused = {
            let mut state = shared.lock();
            let admitted =
                if state.clients.contains_key(&from) { Ok(()) } else { state.admit(&shared, from, now) };
            match admitted {
                Ok(()) => {
                    if let Some(capture) = state.capture.as_mut() {
                        capture.keep(Direction::Up, &packet);
                    }
                    if let Some(client) = state.clients.get_mut(&from) {
                        client.last_active = now;
                        client.up.handle_packet(packet, now);
                    }
                    None
                }
                Err(e) => {
                    state.retired.refused += 1;
                    Some(e)
                }
            }
        };
        match refused {
            None => trace!(client = %from, len, "netsim proxy: up"),
            Some(e) => debug!(client = %from, error = %e, "netsim proxy: client refused"),
        }
        shared.touched();
    }
}

/// A client's reader: upstream datagrams into its down link.
async fn receive_from_upstream(shared: Arc<Shared>, client: SocketAddr, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = match socket.recv(&mut buf).await {
            Ok(len) => len,
            Err(e) => {
                // ECONNREFUSED when the server's port is closed; the next datagram may pass.
                debug!(client = %client, error = %e, "netsim proxy: receive from upstream failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = now();
        let packet = buf.get(..len).unwrap_or_default().to_vec();
        {
            let mut state = shared.lock();
            if let Some(capture) = state.capture.as_mut() {
                capture.keep(Direction::Down, &packet);
            }
            let Some(entry) = state.clients.get_mut(&client) else { return };
            entry.last_active = now;
            entry.down.handle_packet(packet, now);
        }
        trace!(client = %client, len, "netsim proxy: down");
        shared.touched();
    }
}

/// The timer task: sends every packet when its link says it is due.
async fn drive_links(shared: Arc<Shared>) {
    let mut out = Vec::with_capacity(SEND_BATCH);
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = {
            let mut state = shared.lock();
            drain_due(&mut state, now(), &mut out)
        };
        let full = out.len() >= SEND_BATCH;
        if !out.is_empty() {
            shared.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        for packet in out.drain(..) {
            let sent = match &packet {
                Outgoing::Up { socket, bytes } => socket.send(bytes).await,
                Outgoing::Down { client, bytes } => shared.listen.send_to(bytes, *client).await,
            };
            if let Err(e) = sent {
                debug!(error = %e, "netsim proxy: send failed");
            }
        }
        if full {
            tokio::task::yield_now().await;
            continue;
        }
        match deadline {
            // Due already: tokio's coop budget could hold back an elapsed `Sleep` (STYLE.md (c)).
            Some(deadline) if now() >= deadline => {}
            Some(deadline) => {
                if armed != Some(deadline) {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
                    armed = Some(deadline);
                }
                tokio::select! {
                    () = &mut sleep => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Takes up to [`SEND_BATCH`] due packets out of the links; returns the next deadline.
fn drain_due(state: &mut State, now: Instant, out: &mut Vec<Outgoing>) -> Option<Instant> {
    for (addr, client) in &mut state.clients {
        while out.len() < SEND_BATCH {
            let Some(bytes) = client.up.poll_transmit(now) else { break };
            out.push(Outgoing::Up { socket: Arc::clone(&client.socket), bytes });
        }
        while out.len() < SEND_BATCH {
            let Some(bytes) = client.down.poll_transmit(now) else { break };
            out.push(Outgoing::Down { client: *addr, bytes });
        }
    }
    state.clients.values().flat_map(|c| [c.up.poll_timeout(), c.down.poll_timeout()]).flatten().min()
}
