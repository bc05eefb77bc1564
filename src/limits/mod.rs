//! The hub's flood limits, sans-IO: token buckets for rates, and the admission of new
//! connections (handshakes per second, handshakes in progress, connections per address).
//!
//! Time is passed in. Keys are whatever the driver uses (an IP address, a kiosk's identity, a
//! call and a side): the core never names a socket. Every table is bounded — a flood of new
//! keys cannot grow memory without limit: a [`RateTable`] forgets the keys whose bucket has
//! refilled (they are as good as new) and refuses new keys past its size.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// At most `count` events in any `period`, refilled continuously (a token bucket holding
/// `count` tokens, one added every `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn per_second(count: u32) -> Self {
        Self { count, period: Duration::from_secs(1) }
    }

    pub const fn per_minute(count: u32) -> Self {
        Self { count, period: Duration::from_secs(60) }
    }

    /// The time one token takes to come back; `None` for a rate of zero (nothing allowed).
    fn interval(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.period / self.count)
    }
}

/// One token bucket. Tokens are kept in nanoseconds of "credit" so that no float rounds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    /// When the bucket would be full again; `<= now` means full.
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self { rate, full_at: now }
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let Some(interval) = self.rate.interval() else { return false };
        let capacity = interval * self.rate.count;
        // The credit missing now: how far `full_at` lies ahead of `now`.
        let missing = self.full_at.saturating_duration_since(now);
        if missing + interval > capacity {
            return false;
        }
        self.full_at = now.max(self.full_at) + interval;
        true
    }

    /// How long until the next token (zero when one is there).
    pub fn wait(&self, now: Instant) -> Duration {
        let Some(interval) = self.rate.interval() else { return Duration::MAX };
        let capacity = interval * self.rate.count;
        let missing = self.full_at.saturating_duration_since(now);
        (missing + interval).saturating_sub(capacity)
    }

    /// Full again: as if it had never been used.
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

/// One bucket per key, at most `max_keys` of them.
#[derive(Debug)]
pub struct RateTable<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
}

/// Why a [`RateTable`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefusal {
    /// This key used its rate up; a token comes back after this long.
    Exceeded { retry_after: Duration },
    /// So many keys are busy that a new one cannot be tracked.
    TableFull,
}

impl<K: Hash + Eq + Clone> RateTable<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self { rate, max_keys, buckets: HashMap::new() }
    }

    /// One event of `key` now: allowed, or why not.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), RateRefusal> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_keys {
                return Err(RateRefusal::TableFull);
            }
        }
        let bucket = self.buckets.entry(key.clone()).or_insert_with(|| TokenBucket::new(self.rate, now));
        if bucket.try_take(now) {
            Ok(())
        } else {
            Err(RateRefusal::Exceeded { retry_after: bucket.wait(now) })
        }
    }

    /// How long until `key` may have an event (zero when it may now), taking nothing.
    pub fn wait(&self, key: &K, now: Instant) -> Duration {
        self.buckets.get(key).map_or(Duration::ZERO, |b| b.wait(now))
    }

    /// Forgets `key` (its call ended).
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The limits on new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// New handshakes started, over all addresses.
    pub handshakes: Rate,
    /// Handshakes started and not finished (half-open connections) at once.
    pub pending_handshakes: u32,
    /// Connections (in handshake or established) from one address at once. A branch's kiosks
    /// behind one NAT share an address: keep it above the largest branch.
    pub connections_per_address: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self { handshakes: Rate::per_second(50), pending_handshakes: 256, connections_per_address: 64 }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    HandshakeRate,
    PendingHandshakes,
    PerAddress,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::HandshakeRate, Refusal::PendingHandshakes, Refusal::PerAddress];

    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HandshakeRate => "handshake_rate",
            Refusal::PendingHandshakes => "pending_handshakes",
            Refusal::PerAddress => "per_address",
        }
    }
}

/// What to do with a client's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start the handshake (counted until [`Admission::handshake_done`]).
    Accept,
    /// Ask the client to prove its address first (a QUIC Retry: stateless, nothing kept). Half
    /// the handshakes allowed are in progress: a client that cannot receive at its address (a
    /// spoofed flood) or does not follow up (a replayed packet) then holds no state at all.
    Retry,
}

/// The admission of new connections. The driver calls [`Admission::admit`] when a client's
/// first packet arrives, [`Admission::handshake_done`] when an accepted handshake ends either
/// way, and [`Admission::closed`] when an accepted connection ends (its handshake failed too).
#[derive(Debug)]
pub struct Admission<K> {
    config: AdmissionConfig,
    handshakes: TokenBucket,
    pending: u32,
    per_address: HashMap<K, u32>,
    refused: HashMap<Refusal, u64>,
    retries: u64,
}

impl<K: Hash + Eq + Clone> Admission<K> {
    pub fn new(config: AdmissionConfig, now: Instant) -> Self {
        Self {
            config,
            handshakes: TokenBucket::new(config.handshakes, now),
            pending: 0,
            per_address: HashMap::new(),
            refused: HashMap::new(),
            retries: 0,
        }
    }

    /// A client at `address` (`validated`: it proved it receives there, by a Retry token)
    /// starts a handshake: accepted (counted as pending and against its address), asked to
    /// validate its address, or refused.
    pub fn admit(&mut self, address: &K, validated: bool, now: Instant) -> Result<Admit, Refusal> {
        let refusal = if self.connections(address) >= self.config.connections_per_address {
            Some(Refusal::PerAddress)
        } else if !validated && self.pending >= self.config.pending_handshakes.div_ceil(2) {
            self.retries += 1;
            return Ok(Admit::Retry);
        } else if self.pending >= self.config.pending_handshakes {
            Some(Refusal::PendingHandshakes)
        } else if !self.handshakes.try_take(now) {
            Some(Refusal::HandshakeRate)
        } else {
            None
        };
        if let Some(r) = refusal {
            *self.refused.entry(r).or_default() += 1;
            return Err(r);
        }
        self.pending += 1;
        *self.per_address.entry(address.clone()).or_default() += 1;
        Ok(Admit::Accept)
    }

    /// An accepted handshake ended (established or failed).
    pub fn handshake_done(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// An accepted connection ended.
    pub fn closed(&mut self, address: &K) {
        if let Some(n) = self.per_address.get_mut(address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(address);
            }
        }
    }

    /// Handshakes in progress.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Connections counted against `address`.
    pub fn connections(&self, address: &K) -> u32 {
        self.per_address.get(address).copied().unwrap_or(0)
    }

    /// Refused so far, by reason.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get(&reason).copied().unwrap_or(0)
    }

    /// Clients asked to validate their address so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }
}
