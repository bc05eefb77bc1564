//! Plumbing shared by the media device threads: a bounded queue that drops the oldest item,
//! the thread's counters, and a real-time pacer for device stand-ins.
//!
//! Media goes stale. When the consumer falls behind, [`QueueSender::push`] drops the OLDEST
//! item and counts it, so a queue never holds more than its capacity (worst case for the
//! camera: capacity × one picture, 460 KB at 640×480) and the consumer always gets the newest
//! media. Neither side blocks the other for long: `push` never waits, `pop_blocking` waits up
//! to its timeout. Each side sees when the other is gone: the device thread stops once the
//! receiver is dropped, and the receiver gets [`Closed`] once the thread has ended and the
//! queue is drained.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The other end of a media queue is gone: the device thread ended (seen by the receiver,
/// after the queue is drained) or the receiver was dropped (seen by the thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the other end of the media queue is gone")]
pub struct Closed;

struct QueueState<T> {
    items: VecDeque<T>,
    capacity: usize,
    sender_alive: bool,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<QueueState<T>>,
    /// Signalled on every push and when either side goes away.
    ready: Condvar,
    stats: DeviceStats,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue of at most `capacity` items (at least 1) that drops the oldest when full; the
/// drops are counted in `stats.dropped`.
pub fn drop_oldest<T>(capacity: usize, stats: DeviceStats) -> (QueueSender<T>, QueueReceiver<T>) {
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(QueueState {
            items: VecDeque::with_capacity(capacity),
            capacity,
            sender_alive: true,
            receiver_alive: true,
        }),
        ready: Condvar::new(),
        stats,
    });
    (QueueSender { shared: shared.clone() }, QueueReceiver { shared })
}

/// The device thread's end of a [`drop_oldest`] queue.
pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Appends `item`, dropping the oldest item first when the queue is full. Never blocks
    /// for longer than a short lock. `Err(Closed)` when the receiver is gone.
    pub fn push(&self, item: T) -> Result<(), Closed> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(Closed);
        }
        while state.items.len() >= state.capacity {
            state.items.pop_front();
            self.shared.stats.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.items.push_back(item);
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// True once the receiver has been dropped: the thread should stop.
    pub fn receiver_gone(&self) -> bool {
        !self.shared.lock().receiver_alive
    }

    pub fn stats(&self) -> &DeviceStats {
        &self.shared.stats
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender_alive = false;
        self.shared.ready.notify_all();
    }
}

/// The consumer's end of a [`drop_oldest`] queue.
pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    /// Waits up to `timeout` for the oldest queued item. `Ok(None)` on timeout;
    /// `Err(Closed)` once the device thread has ended and nothing is left.
    pub fn pop_blocking(&self, timeout: Duration) -> Result<Option<T>, Closed> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(Some(item));
            }
            if !state.sender_alive {
                return Err(Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            state = self
                .shared
                .ready
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// The oldest queued item if there is one; `Err(Closed)` once the device thread has
    /// ended and nothing is left.
    pub fn try_pop(&self) -> Result<Option<T>, Closed> {
        let mut state = self.shared.lock();
        match state.items.pop_front() {
            Some(item) => Ok(Some(item)),
            None if !state.sender_alive => Err(Closed),
            None => Ok(None),
        }
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> &DeviceStats {
        &self.shared.stats
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.items.clear();
    }
}

/// Counters of one media device thread, shared with whoever reports them (the daemon's
/// status line, the demo's JSON). Written by the device thread and its queue; read anywhere.
#[derive(Clone, Default)]
pub struct DeviceStats {
    inner: Arc<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    delivered: AtomicU64,
    dropped: AtomicU64,
    stalls: AtomicU64,
    glitches: AtomicU64,
    stalled: AtomicBool,
    ended: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A snapshot of [`DeviceStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    /// Pictures or chunks the device produced (capture) or played (playback).
    pub delivered: u64,
    /// Oldest items dropped because the consumer (or, for playback, the device) was slow.
    pub dropped: u64,
    /// Times the device delivered nothing within its timeout (it may come back).
    pub stalls: u64,
    /// Glitches the backend survived: corrupt frames skipped (camera), xruns recovered (ALSA).
    pub glitches: u64,
    /// True from a stall until the next delivery.
    pub stalled: bool,
    /// True once the device thread has ended (see `error`).
    pub ended: bool,
    /// The error that ended the thread, if one did.
    pub error: Option<String>,
}

impl DeviceStats {
    pub fn delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    pub fn stalls(&self) -> u64 {
        self.inner.stalls.load(Ordering::Relaxed)
    }

    pub fn glitches(&self) -> u64 {
        self.inner.glitches.load(Ordering::Relaxed)
    }

    /// True from a stall (no media within the device's timeout) until the next delivery.
    pub fn is_stalled(&self) -> bool {
        self.inner.stalled.load(Ordering::Relaxed)
    }

    /// True once the device thread has ended, normally or not.
    pub fn has_ended(&self) -> bool {
        self.inner.ended.load(Ordering::Acquire)
    }

    /// The error that ended the device thread ("camera missing"...), if one did.
    pub fn error(&self) -> Option<String> {
        self.inner.error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn snapshot(&self) -> DeviceCounters {
        DeviceCounters {
            delivered: self.delivered(),
            dropped: self.dropped(),
            stalls: self.stalls(),
            glitches: self.glitches(),
            stalled: self.is_stalled(),
            ended: self.has_ended(),
            error: self.error(),
        }
    }

    pub(crate) fn record_delivered(&self) {
        self.inner.delivered.fetch_add(1, Ordering::Relaxed);
        self.inner.stalled.store(false, Ordering::Relaxed);
    }

    /// Counts a stall; true when it starts one (the previous call was not a stall).
    pub(crate) fn record_stall(&self) -> bool {
        self.inner.stalls.fetch_add(1, Ordering::Relaxed);
        !self.inner.stalled.swap(true, Ordering::Relaxed)
    }

    /// The backend's own running count of glitches.
    pub(crate) fn set_glitches(&self, total: u64) {
        self.inner.glitches.store(total, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, error: String) {
        *self.inner.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Marks the thread ended when the guard drops, however the thread ends (even a panic).
    pub(crate) fn end_guard(&self) -> EndGuard {
        EndGuard(self.clone())
    }
}

impl std::fmt::Debug for DeviceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// See [`DeviceStats::end_guard`].
pub(crate) struct EndGuard(DeviceStats);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.inner.ended.store(true, Ordering::Release);
    }
}

/// Paces a device stand-in in real time: [`Pacer::wait`] sleeps until the next tick, one
/// `period` after the previous one. A caller that falls more than a period behind (or
/// resumes after a pause) restarts from now instead of catching up in a burst.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// The first tick is immediate.
    pub fn new(period: Duration) -> Self {
        Self { period, next: None }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Sleeps until the next tick and returns the tick's scheduled time.
    pub fn wait(&mut self) -> Instant {
        let now = Instant::now();
        let due = *self.next.get_or_insert(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        let late = now.saturating_duration_since(due);
        let tick = if late > self.period { now } else { due };
        self.next = Some(tick + self.period);
        tick
    }

    /// Makes the next tick immediate and the schedule restart from it (after a pause).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let (tx, rx) = drop_oldest::<u32>(2, DeviceStats::default());
        for i in 0..5 {
            tx.push(i).unwrap();
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.try_pop(), Ok(Some(3)));
        assert_eq!(rx.try_pop(), Ok(Some(4)));
        assert_eq!(rx.try_pop(), Ok(None));
        assert_eq!(rx.stats().dropped(), 3);
    }

    #[test]
    fn receiver_sees_closed_after_draining() {
        let (tx, rx) = drop_oldest::<u32>(4, DeviceStats::default());
        tx.push(7).unwrap();
        drop(tx);
        assert_eq!(rx.pop_blocking(Duration::from_millis(10)), Ok(Some(7)));
        assert_eq!(rx.pop_blocking(Duration::from_millis(10)), Err(Closed));
    }

    #[test]
    fn sender_sees_receiver_gone() {
        let (tx, rx) = drop_oldest::<u32>(4, DeviceStats::default());
        assert!(!tx.receiver_gone());
        drop(rx);
        assert!(tx.receiver_gone());
        assert_eq!(tx.push(1), Err(Closed));
    }

    #[test]
    fn pop_blocking_times_out_empty_and_wakes_on_push() {
        let (tx, rx) = drop_oldest::<u32>(4, DeviceStats::default());
        assert_eq!(rx.pop_blocking(Duration::from_millis(5)), Ok(None));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.push(9).unwrap();
            tx
        });
        assert_eq!(rx.pop_blocking(Duration::from_secs(5)), Ok(Some(9)));
        drop(t.join().unwrap());
    }

    #[test]
    fn stats_track_stalls_and_end() {
        let stats = DeviceStats::default();
        assert!(stats.record_stall());
        assert!(!stats.record_stall());
        assert!(stats.is_stalled());
        stats.record_delivered();
        assert!(!stats.is_stalled());
        {
            let _guard = stats.end_guard();
            stats.record_error("camera missing".into());
        }
        let s = stats.snapshot();
        assert_eq!((s.delivered, s.stalls, s.ended), (1, 2, true));
        assert_eq!(s.error.as_deref(), Some("camera missing"));
    }
}
