//! Reconnect delays: exponential with jitter, so that a hundred kiosks that lost the hub at
//! the same moment do not all come back in the same millisecond. Sans-IO: the caller brings
//! the randomness.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), attempt: 0 }
    }

    /// The delay before the next attempt. `random` in `[0, 1)` picks a point in the upper
    /// half of the current step ("equal jitter"): the delay still grows, but spreads out.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let step = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let random = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.5 };
        step / 2 + step.mul_f64(random / 2.0)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let lows: Vec<_> = (0..8).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(lows[0], Duration::from_millis(50));
        assert_eq!(lows[1], Duration::from_millis(100));
        assert_eq!(lows[7], Duration::from_secs(1));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(2));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(f64::NAN), Duration::from_millis(150));
    }

    #[test]
    fn jitter_spreads_within_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..30 {
            let d = b.next_delay(0.37);
            assert!(d <= Duration::from_secs(30));
        }
    }
}
