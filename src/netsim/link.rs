//! One direction of a network path, sans-IO and seeded: packets in, the same packets out later,
//! or never.
//!
//! # Run loop
//!
//! 1. For every datagram that enters the path, call
//!    [`handle_packet`](Link::handle_packet)`(bytes, now)`, `now` being when it was sent. The
//!    link decides at once whether it is lost and, if not, when it arrives.
//! 2. After every `handle_packet`, and whenever [`poll_timeout`](Link::poll_timeout) passes,
//!    drain [`poll_transmit`](Link::poll_transmit)`(now)` until `None`: it yields the packets
//!    due at or before `now`, in delivery order.
//! 3. Sleep until [`poll_timeout`](Link::poll_timeout) (`None`: nothing in flight, wait for
//!    the next packet). Early or repeated wake-ups are harmless.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use kioskd::netsim::{Link, LinkConfig};
//! let t0 = Instant::now();
//! let config = LinkConfig { loss: 0.05, delay: Duration::from_millis(40), seed: 7, ..LinkConfig::default() };
//! let mut link = Link::new(config, t0).expect("valid config");
//! link.handle_packet(b"hello".to_vec(), t0);
//! while let Some(due) = link.poll_timeout() {
//!     while let Some(packet) = link.poll_transmit(due) { /* deliver `packet` at `due` */ }
//! }
//! ```
//!
//! # The model
//!
//! Each packet goes through these stages in order; the first that drops it is counted in
//! [`LinkStats`]:
//!
//! 1. **Outage** ([`LinkConfig::outages`]): a packet sent while `now − origin` lies in
//!    `[start, start + length)` of a window is lost (`lost_outage`). `origin` is the
//!    `start` given to [`Link::new`], or the `now` of the last [`Link::set_config`]. Packets
//!    already in flight when an outage begins still arrive.
//! 2. **In-flight cap**: a packet that would make more than [`MAX_IN_FLIGHT_PACKETS`] packets
//!    or [`MAX_IN_FLIGHT_BYTES`] bytes wait in the link is dropped (`lost_overflow`): the
//!    memory bound of the simulator, not a network event.
//! 3. **Bottleneck** ([`LinkConfig::rate_bps`]): a FIFO queue in front of a serialiser of
//!    `rate_bps`. A packet of `n` bytes leaves it `8n / rate_bps` seconds after the previous
//!    one left (or after its arrival, if the link was idle). The backlog is the bytes not yet
//!    serialised at `now`, i.e. the time the serialiser is still busy × rate. A packet that
//!    would push the backlog over [`LinkConfig::queue_bytes`] is tail-dropped (`lost_queue`);
//!    an idle link always accepts one packet, so that a queue smaller than a packet does not
//!    black-hole the link. Without a rate the packet leaves at once.
//! 4. **Random loss** ([`LinkConfig::loss`]): independent, with this probability
//!    (`lost_random`). It acts on the wire after the bottleneck: a packet lost here used its
//!    share of the rate.
//! 5. **Burst loss** ([`LinkConfig::burst`]): a [Gilbert–Elliott](GilbertElliott) chain with
//!    a good and a bad state, stepped once per packet sent (also for packets dropped in the
//!    stages above, so that bursts follow the packet clock); a packet is lost with the loss
//!    probability of the current state (`lost_burst`).
//! 6. **Delay**: the packet arrives at `departure + delay + u`, `u` uniform in
//!    `[−jitter, +jitter]`, never before its departure (delay + u is clamped at 0). Jitter
//!    never reorders: a packet never arrives before one sent ahead of it, as through a FIFO
//!    queue; when packets are spaced closer than the jitter, their delays therefore bunch
//!    towards `delay + jitter` (never above it).
//! 7. **Reordering** ([`LinkConfig::reorder`]): with this probability a packet is held back a
//!    further [`REORDER_DELAY`], outside the FIFO order, so that the packets sent in the
//!    next 20 ms overtake it. `reordered` counts the packets that actually arrived after a
//!    packet sent later than them.
//!
//! Randomness comes from [`LinkConfig::seed`] alone: the same seed, configuration and packet
//! sequence (sizes and times) give the same losses, delays and order. Each random decision has
//! its own stream, drawn once per packet whether the stage is enabled or not, so that changing
//! one setting (say, adding jitter) leaves the other decisions as they were, and raising
//! `loss` only adds losses.
//!
//! Memory: at most [`MAX_IN_FLIGHT_PACKETS`] packets and [`MAX_IN_FLIGHT_BYTES`] bytes of
//! payload in flight (plus about 48 bytes per packet of bookkeeping): about 2.4 MiB per link.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::AddAssign;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Most packets in flight in one link: 8192, four seconds of a 2 Mbit/s video call in 1200-byte
/// QUIC packets, or 8 s of 1 ms test pings. Beyond it, new packets are dropped
/// (`lost_overflow`).
pub const MAX_IN_FLIGHT_PACKETS: usize = 8192;

/// Most payload bytes in flight in one link: 2 MiB, one second of 16 Mbit/s, far above a
/// kiosk's call. Beyond it, new packets are dropped (`lost_overflow`). Bounds the proxy to
/// 64 clients × 2 links × 2 MiB = 256 MiB in the worst case.
pub const MAX_IN_FLIGHT_BYTES: usize = 2 * 1024 * 1024;

/// Extra delay of a packet picked for reordering: 20 ms, so that at media rates (a packet every
/// 1–5 ms) four or more packets overtake it, past QUIC's reordering threshold of three.
pub const REORDER_DELAY: Duration = Duration::from_millis(20);

/// Most `delay + jitter` accepted: 60 s. A path slower than that is an outage.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Largest bottleneck queue accepted: 64 MiB, far beyond any real buffer (and beyond the
/// in-flight cap, which then bounds the queue instead).
pub const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Default bottleneck queue: 64 KiB, about 50 full-size packets; 260 ms at 2 Mbit/s, a
/// typical (bloated) access-link buffer.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// How one direction of the path behaves. The default is a perfect link: no loss, no delay,
/// no rate limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkConfig {
    /// Probability (0..=1) that a packet is lost, independently of the others.
    pub loss: f64,
    /// Correlated (bursty) loss, on top of `loss`.
    pub burst: Option<GilbertElliott>,
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay varies uniformly within `delay ± jitter`, never below zero.
    pub jitter: Duration,
    /// Probability (0..=1) that a packet is held back [`REORDER_DELAY`] more, out of order.
    pub reorder: f64,
    /// Bottleneck rate in bits per second; `None` for an unlimited link.
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before it tail-drops (with `rate_bps` only). Default
    /// [`DEFAULT_QUEUE_BYTES`], at most [`MAX_QUEUE_BYTES`].
    pub queue_bytes: usize,
    /// Windows `(start, length)`, from the link's start or last reconfiguration, during which
    /// every packet sent is lost.
    pub outages: Vec<(Duration, Duration)>,
    /// Seed of every random decision.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            rate_bps: None,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            outages: Vec::new(),
            seed: 1,
        }
    }
}

impl LinkConfig {
    /// Checks the ranges: probabilities in 0..=1, a rate above 0, `delay + jitter` and the
    /// queue within their caps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        probability("loss", self.loss)?;
        probability("reorder", self.reorder)?;
        if let Some(ge) = &self.burst {
            probability("burst.p_good_to_bad", ge.p_good_to_bad)?;
            probability("burst.p_bad_to_good", ge.p_bad_to_good)?;
            probability("burst.loss_in_bad", ge.loss_in_bad)?;
            probability("burst.loss_in_good", ge.loss_in_good)?;
        }
        if self.rate_bps == Some(0) {
            return Err(ConfigError::ZeroRate);
        }
        let total = self.delay.saturating_add(self.jitter);
        if total > MAX_DELAY {
            return Err(ConfigError::DelayTooLong(total));
        }
        if self.queue_bytes > MAX_QUEUE_BYTES {
            return Err(ConfigError::QueueTooLarge(self.queue_bytes));
        }
        Ok(())
    }
}

fn probability(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(ConfigError::Probability { field, value }) }
}

/// A [`LinkConfig`] out of range. The configuration is refused as a whole; the link keeps its
/// previous one (if any). Fix the test or the bench that built it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A probability outside 0..=1 (or NaN).
    #[error("{field} must be a probability in 0..=1, not {value}")]
    Probability { field: &'static str, value: f64 },
    /// `rate_bps: Some(0)`; use an outage to cut the link, `None` for no limit.
    #[error("rate_bps must be above 0 (None for an unlimited link)")]
    ZeroRate,
    /// `delay + jitter` above [`MAX_DELAY`].
    #[error("delay + jitter is {0:?}, at most {MAX_DELAY:?}")]
    DelayTooLong(Duration),
    /// `queue_bytes` above [`MAX_QUEUE_BYTES`].
    #[error("queue_bytes is {0}, at most {MAX_QUEUE_BYTES}")]
    QueueTooLarge(usize),
}

/// A two-state Markov chain of loss. Before each packet the chain is in the good or the bad
/// state; the packet is lost with that state's loss probability; then the chain moves to the
/// other state with the given transition probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GilbertElliott {
    /// Per packet, probability of leaving the good state.
    pub p_good_to_bad: f64,
    /// Per packet, probability of leaving the bad state. The bad state lasts `1 / p_bad_to_good`
    /// packets on average.
    pub p_bad_to_good: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
    /// Loss probability in the good state.
    pub loss_in_good: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model (every packet lost in the bad state, none in the good one) with
    /// an overall loss of `loss_pct` percent (0..=100) in bursts of `mean_burst_len` packets on
    /// average (at least 1).
    ///
    /// The bad state lasts `L = mean_burst_len` packets on average, so `p_bad_to_good = 1 / L`;
    /// the chain spends `p_gb / (p_gb + p_bg)` of the packets in the bad state, which must equal
    /// the loss `l`, so `p_good_to_bad = l · p_bg / (1 − l)`. At 100 % the chain stays bad.
    /// Out-of-range arguments are clamped (NaN counts as 0 % and length 1).
    pub fn from_mean(loss_pct: f64, mean_burst_len: f64) -> Self {
        let loss = if loss_pct.is_nan() { 0.0 } else { (loss_pct / 100.0).clamp(0.0, 1.0) };
        let len = if mean_burst_len.is_nan() { 1.0 } else { mean_burst_len.max(1.0) };
        let (p_good_to_bad, p_bad_to_good) = if loss >= 1.0 {
            (1.0, 0.0)
        } else {
            let p_bg = 1.0 / len;
            ((loss * p_bg / (1.0 - loss)).min(1.0), p_bg)
        };
        Self { p_good_to_bad, p_bad_to_good, loss_in_bad: 1.0, loss_in_good: 0.0 }
    }
}

/// What happened to the packets of one link, cumulative since [`Link::new`]. Every packet sent
/// is delivered, lost in exactly one way, or still in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets handed to `handle_packet`.
    pub sent: u64,
    /// Packets returned by `poll_transmit`.
    pub delivered: u64,
    /// Lost by independent loss.
    pub lost_random: u64,
    /// Lost by Gilbert–Elliott burst loss.
    pub lost_burst: u64,
    /// Tail-dropped by the bottleneck queue.
    pub lost_queue: u64,
    /// Sent during an outage.
    pub lost_outage: u64,
    /// Dropped because the link held [`MAX_IN_FLIGHT_PACKETS`] or [`MAX_IN_FLIGHT_BYTES`].
    pub lost_overflow: u64,
    /// Delivered after a packet that was sent later.
    pub reordered: u64,
}

impl LinkStats {
    /// All losses, whatever the cause.
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_burst + self.lost_queue + self.lost_outage + self.lost_overflow
    }

    /// Packets neither delivered nor lost yet.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.delivered + self.lost())
    }
}

impl AddAssign<&LinkStats> for LinkStats {
    fn add_assign(&mut self, other: &LinkStats) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.lost_random += other.lost_random;
        self.lost_burst += other.lost_burst;
        self.lost_queue += other.lost_queue;
        self.lost_outage += other.lost_outage;
        self.lost_overflow += other.lost_overflow;
        self.reordered += other.reordered;
    }
}

/// One direction of a network path. See the [module docs](self) for the run loop and the model.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    /// Where the outage windows count from: `start`, or the last `set_config`.
    origin: Instant,
    rng: Streams,
    /// Gilbert–Elliott state: `true` in the bad state. Reset to good by `set_config`.
    bad: bool,
    /// When the serialiser finishes the last packet queued (rate-limited links only).
    busy_until: Option<Instant>,
    /// Arrival time of the last packet that kept FIFO order: no later in-order packet arrives
    /// before it.
    fifo_floor: Option<Instant>,
    /// Packets waiting for their arrival time, earliest first (ties: send order).
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// Sum of the payload lengths in `in_flight`.
    in_flight_bytes: usize,
    /// Send index of the next packet.
    next_seq: u64,
    /// Highest send index delivered so far: a lower one delivered later was reordered.
    max_delivered: Option<u64>,
    stats: LinkStats,
}

/// A packet on its way.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Link {
    /// A link whose outage windows count from `start`. Fails if the configuration is out of
    /// range ([`LinkConfig::validate`]).
    pub fn new(config: LinkConfig, start: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            rng: Streams::new(config.seed),
            config,
            origin: start,
            bad: false,
            busy_until: None,
            fifo_floor: None,
            in_flight: BinaryHeap::new(),
            in_flight_bytes: 0,
            next_seq: 0,
            max_delivered: None,
            stats: LinkStats::default(),
        })
    }

    /// Changes the conditions from `now` on: the outage windows count from `now`, the random
    /// streams restart from the new seed, the burst chain restarts in the good state. Packets in
    /// flight keep their arrival times, the bottleneck its backlog, the stats their counts. On
    /// error nothing changes.
    pub fn set_config(&mut self, config: LinkConfig, now: Instant) -> Result<(), ConfigError> {
        config.validate()?;
        self.rng = Streams::new(config.seed);
        self.config = config;
        self.origin = now;
        self.bad = false;
        Ok(())
    }

    /// Takes one packet sent at `now`: drops it (counted in [`stats`](Self::stats)) or schedules
    /// its arrival. Drain [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_packet(&mut self, bytes: Vec<u8>, now: Instant) {
        self.stats.sent += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        // Every stream is drawn once per packet, whatever happens to it (module docs).
        let loss_draw = self.rng.loss.next_f64();
        let burst_lost = self.step_burst();
        let jitter_draw = self.rng.jitter.next_f64();
        let reorder_draw = self.rng.reorder.next_f64();

        if self.in_outage(now) {
            self.stats.lost_outage += 1;
            return;
        }
        let len = bytes.len();
        if self.in_flight.len() >= MAX_IN_FLIGHT_PACKETS
            || self.in_flight_bytes.saturating_add(len) > MAX_IN_FLIGHT_BYTES
        {
            self.stats.lost_overflow += 1;
            return;
        }
        let Some(departure) = self.serialise(len, now) else {
            self.stats.lost_queue += 1;
            return;
        };
        if loss_draw < self.config.loss {
            self.stats.lost_random += 1;
            return;
        }
        if burst_lost {
            self.stats.lost_burst += 1;
            return;
        }

        let at = departure.checked_add(self.one_way_delay(jitter_draw));
        let at = if reorder_draw < self.config.reorder {
            at.and_then(|at| at.checked_add(REORDER_DELAY))
        } else {
            let at = at.map(|at| self.fifo_floor.map_or(at, |floor| at.max(floor)));
            self.fifo_floor = at.or(self.fifo_floor);
            at
        };
        // `None` only past the end of the platform's time, with a far-future `now`.
        let Some(at) = at else {
            self.stats.lost_overflow += 1;
            return;
        };
        self.in_flight_bytes += len;
        self.in_flight.push(Reverse(InFlight { at, seq, bytes }));
    }

    /// The next packet due at or before `now`, in arrival order (ties: send order); `None` when
    /// none is due. Drain it after every [`handle_packet`](Self::handle_packet) and whenever
    /// [`poll_timeout`](Self::poll_timeout) passes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.in_flight.peek().is_none_or(|Reverse(p)| p.at > now) {
            return None;
        }
        let Reverse(packet) = self.in_flight.pop()?;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(packet.bytes.len());
        self.stats.delivered += 1;
        match self.max_delivered {
            Some(max) if packet.seq < max => self.stats.reordered += 1,
            _ => self.max_delivered = Some(packet.seq),
        }
        Some(packet.bytes)
    }

    /// When the next packet is due; `None` when nothing is in flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(p)| p.at)
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Packets in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn in_outage(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.origin);
        self.config
            .outages
            .iter()
            .any(|&(start, length)| elapsed >= start && elapsed < start.saturating_add(length))
    }

    /// Steps the Gilbert–Elliott chain for one packet; `true` if the packet is lost.
    fn step_burst(&mut self) -> bool {
        let (loss_draw, move_draw) = (self.rng.burst.next_f64(), self.rng.burst.next_f64());
        let Some(ge) = self.config.burst else { return false };
        let lost = loss_draw < if self.bad { ge.loss_in_bad } else { ge.loss_in_good };
        let leave = if self.bad { ge.p_bad_to_good } else { ge.p_good_to_bad };
        if move_draw < leave {
            self.bad = !self.bad;
        }
        lost
    }

    /// When a packet of `len` bytes arriving at `now` leaves the bottleneck; `None` if the
    /// queue tail-drops it (or its departure is past the end of time).
    fn serialise(&mut self, len: usize, now: Instant) -> Option<Instant> {
        let Some(rate) = self.config.rate_bps else { return Some(now) };
        let busy = self.busy_until.map_or(Duration::ZERO, |b| b.saturating_duration_since(now));
        let backlog = busy.as_nanos().saturating_mul(u128::from(rate)) / 8 / NANOS_PER_SEC;
        let backlog = usize::try_from(backlog).unwrap_or(usize::MAX);
        if backlog > 0 && backlog.saturating_add(len) > self.config.queue_bytes {
            return None;
        }
        // Ceiling, so that the serialiser never runs faster than the rate.
        let bits = (len as u128) * 8 * NANOS_PER_SEC;
        let nanos = bits.div_ceil(u128::from(rate));
        let serialisation = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let departure = start.checked_add(serialisation)?;
        self.busy_until = Some(departure);
        Some(departure)
    }

    /// `delay + u`, `u` uniform in `[−jitter, +jitter]` from `draw` in `[0, 1)`, at least 0.
    fn one_way_delay(&self, draw: f64) -> Duration {
        let (delay, jitter) = (self.config.delay.as_secs_f64(), self.config.jitter.as_secs_f64());
        let d = delay + (2.0 * draw - 1.0) * jitter;
        // Validated: delay + jitter ≤ MAX_DELAY, so this is finite and in range.
        Duration::try_from_secs_f64(d.max(0.0)).unwrap_or(MAX_DELAY)
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The independent random streams of a link, one per decision.
#[derive(Debug, Clone)]
struct Streams {
    loss: XorShift64Star,
    burst: XorShift64Star,
    jitter: XorShift64Star,
    reorder: XorShift64Star,
}

impl Streams {
    fn new(seed: u64) -> Self {
        let mut seeder = SplitMix64(seed);
        Self {
            loss: XorShift64Star::new(seeder.next_u64()),
            burst: XorShift64Star::new(seeder.next_u64()),
            jitter: XorShift64Star::new(seeder.next_u64()),
            reorder: XorShift64Star::new(seeder.next_u64()),
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): turns any seed, 0 included, into well-mixed states.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// Its increment, the golden ratio in 64 bits.
    pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xorshift64* (Vigna 2016): small, fast, good enough for simulation (not for secrets).
#[derive(Debug, Clone)]
struct XorShift64Star(u64);

impl XorShift64Star {
    fn new(state: u64) -> Self {
        // The all-zero state is a fixed point.
        Self(if state == 0 { SplitMix64::GAMMA } else { state })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests;
