//! A hub's place among the deployment's hubs: it holds a lease in the database (renewed six
//! times a lease), takes over the waiting callers of a hub whose lease expired, and hears from the
//! other hubs (`LISTEN`/`NOTIFY`) when one of its callers resumed elsewhere.
//!
//! The queue core stays the decision-maker: this task only tells it what the database says
//! ([`ClusterEvent`]), and the core's events, shipped to the database, keep the shared tables
//! current (see `project` in the parent module).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Database, RELEASED, redact};
use crate::queue::Waiting;

/// How long a lease lasts from its last renewal (by the database's clock), by default
/// (`[database] lease_ms`). The rest is in proportion: see [`Timing`].
pub const LEASE: Duration = Duration::from_secs(3);
/// The leases a hub may be configured with, in ms.
pub const LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 1_500..=60_000;

/// A lease and the times that follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    lease: Duration,
    /// How often the lease is renewed and expired leases are looked for (a sixth of it:
    /// 500 ms by default).
    renew_every: Duration,
    /// The hub gives up its lease this long before it would expire by its own clock
    /// (measured from before the renewal was sent, so never later than the database's): by
    /// the time the others see it expired, it has stopped offering (a third: 1 s).
    margin: Duration,
    /// Longest wait for one round of renewal and takeover (a quarter: 750 ms).
    round_timeout: Duration,
}

impl Timing {
    fn of(lease: Duration) -> Self {
        Self { lease, renew_every: lease / 6, margin: lease / 3, round_timeout: lease / 4 }
    }
}

/// What the database says, for the hub's core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The lease is held (`true`) or lost: without it the hub makes no offers.
    Lease { held: bool },
    /// The waiting callers of a dead hub, oldest first, for this hub's queue.
    Adopt { from: String, callers: Vec<Waiting> },
    /// A caller that resumed on another hub.
    Released { kiosk: String },
}

/// The lease and takeover task of one hub.
pub struct Cluster {
    pub url: String,
    /// The hub's id (its certificate's).
    pub hub: String,
    /// Where kiosks reach this hub, stored with its lease (other hubs send callers here
    /// when an advisor here is free); none: it is sent none.
    pub address: Option<String>,
    /// How long its lease lasts ([`LEASE`] by default).
    pub lease: Duration,
}

impl Cluster {
    /// Runs until `shutdown` or until the core is gone.
    pub async fn run(self, core: mpsc::Sender<ClusterEvent>, mut shutdown: watch::Receiver<bool>) {
        let t = Timing::of(self.lease);
        let instance = format!("{:016x}", rand::random::<u64>());
        let shown = redact(&self.url);
        let mut held_until: Option<Instant> = None;
        // Since when the lease has been held without a break: a hub takes others' callers
        // over only after holding its own for a whole lease, so that after the database
        // itself was away (every lease expired at once) the other hubs have had the time to
        // renew theirs, and no live hub's callers are taken.
        let mut held_since: Option<Instant> = None;
        let mut told: Option<bool> = None;
        let mut db: Option<(Database, mpsc::UnboundedReceiver<String>)> = None;
        let mut duplicate_warned = false;
        let mut tick = tokio::time::interval(t.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The lease is held while its time, less the margin, has not passed.
            let held = held_until.is_some_and(|until| Instant::now() + t.margin < until);
            if !held {
                held_since = None;
            }
            if told != Some(held) {
                if held {
                    info!(hub = %self.hub, "holding this hub's lease in the deployment's database");
                } else if told.is_some() {
                    warn!(hub = %self.hub, "lease lost: this hub makes no offers until it reaches the database again");
                }
                told = Some(held);
                if core.send(ClusterEvent::Lease { held }).await.is_err() {
                    return;
                }
            }
            let notes = async {
                match db.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                _ = tick.tick() => None,
                note = notes => Some(note),
                _ = shutdown.changed() => {
                    // A clean stop hands the lease to the hub's next process (a restart).
                    if let Some((d, _)) = db.as_ref().filter(|_| held_until.is_some()) {
                        match tokio::time::timeout(t.round_timeout, d.release_lease(&self.hub, &instance)).await {
                            Ok(Ok(true)) => info!(hub = %self.hub, "lease released for the hub's next start"),
                            Ok(Ok(false)) => {}
                            Ok(Err(e)) => warn!(database = %shown, error = %e, "lease not released"),
                            Err(_) => warn!(database = %shown, "lease not released within {:?}", t.round_timeout),
                        }
                    }
                    return;
                }
            };
            match woke {
                None => {}
                Some(Some(payload)) => {
                    if let Some(kiosk) = released_elsewhere(&payload, &self.hub)
                        && core.send(ClusterEvent::Released { kiosk }).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                // The listening connection ended: connect again.
                Some(None) => {
                    db = None;
                    continue;
                }
            }
            let started = Instant::now();
            let may_take_over = held_since.is_some_and(|since| started.duration_since(since) >= t.lease);
            let round = async {
                if db.as_ref().is_none_or(|(d, _)| d.is_closed()) {
                    db = Some(Database::connect_listening(&self.url).await?);
                }
                let Some((d, _)) = db.as_mut() else { return Ok((false, Vec::new())) };
                let ours = d.renew_lease(&self.hub, &instance, t.lease, self.address.as_deref()).await?;
                // Only a hub that has held its own lease for a whole lease takes over others'.
                let taken = if ours && may_take_over { d.take_over(&self.hub).await? } else { Vec::new() };
                Ok::<_, super::DbError>((ours, taken))
            };
            match tokio::time::timeout(t.round_timeout, round).await {
                Ok(Ok((true, taken))) => {
                    held_until = Some(started + t.lease);
                    held_since.get_or_insert(started);
                    duplicate_warned = false;
                    for (from, callers) in taken {
                        info!(hub = %from, callers = callers.len(), "a hub's lease expired: taking over its waiting callers");
                        if core.send(ClusterEvent::Adopt { from, callers }).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Ok((false, _))) => {
                    held_until = None;
                    held_since = None;
                    if !duplicate_warned {
                        error!(hub = %self.hub, "another hub holds this hub's id in the database: each hub needs a certificate of its own; this one makes no offers");
                        duplicate_warned = true;
                    }
                }
                Ok(Err(e)) => {
                    warn!(database = %shown, error = %e, "lease not renewed");
                    db = None;
                }
                Err(_) => {
                    warn!(database = %shown, "lease not renewed within {:?}", t.round_timeout);
                    db = None;
                }
            }
        }
    }
}

/// The kiosk of a [`RELEASED`] notification, when it names another hub than `own`.
fn released_elsewhere(payload: &str, own: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let kiosk = v.get(RELEASED)?.as_str()?;
    let to = v.get("to")?.as_str()?;
    (to != own).then(|| kiosk.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lease_keeps_its_measured_timing_and_others_are_in_proportion() {
        let t = Timing::of(LEASE);
        assert_eq!(
            (t.renew_every, t.margin, t.round_timeout),
            (Duration::from_millis(500), Duration::from_secs(1), Duration::from_millis(750))
        );
        let t = Timing::of(Duration::from_millis(*LEASE_RANGE_MS.start()));
        assert!(t.round_timeout < t.margin && t.renew_every < t.margin, "{t:?}");
    }

    #[test]
    fn a_release_to_another_hub_drops_the_caller_here_and_one_to_this_hub_does_not() {
        let note = r#"{"released":"branch-1/kiosk-1","to":"hub-b"}"#;
        assert_eq!(released_elsewhere(note, "hub-a").as_deref(), Some("branch-1/kiosk-1"));
        assert_eq!(released_elsewhere(note, "hub-b"), None);
        for bad in ["", "{}", "[1]", r#"{"released":1,"to":"hub-b"}"#, r#"{"released":"k"}"#] {
            assert_eq!(released_elsewhere(bad, "hub-a"), None, "{bad}");
        }
    }
}
