//! When a kiosk or an agent renews its certificate (sans-IO: time is passed in, in Unix
//! seconds). The edge makes the key and the request, sends it on its authenticated connection
//! and writes the files; this core says when to ask, when an answer is overdue, and when to try
//! again after a failure, and keeps what the health report shows.

/// When to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Ask this long before the certificate expires (seconds; 30 days by default).
    pub before_s: i64,
    /// After a failure, try again this much later (seconds).
    pub retry_s: i64,
    /// An answer not received this long after asking counts as a failure (seconds).
    pub answer_timeout_s: i64,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self { before_s: 30 * 86_400, retry_s: 3_600, answer_timeout_s: 30 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing asked; not before this time (a retry's wait).
    Waiting { not_before: i64 },
    /// A request is out since this time.
    Asked { since: i64 },
}

/// What the health report says about renewal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalStatus {
    /// The current certificate's end (Unix seconds).
    pub not_after: i64,
    pub renewed: u32,
    pub failures: u32,
    /// The last failure, until a renewal succeeds.
    pub last_error: Option<String>,
}

/// The schedule of one party's renewals.
#[derive(Debug, Clone)]
pub struct Renewal {
    policy: RenewalPolicy,
    state: State,
    status: RenewalStatus,
}

impl Renewal {
    /// For a certificate valid until `not_after` (Unix seconds).
    pub fn new(policy: RenewalPolicy, not_after: i64) -> Self {
        Self {
            policy,
            state: State::Waiting { not_before: i64::MIN },
            status: RenewalStatus { not_after, ..RenewalStatus::default() },
        }
    }

    /// Whether to send a request now (on a connection that is up).
    pub fn due(&self, now: i64) -> bool {
        match self.state {
            State::Waiting { not_before } => {
                now >= not_before && now >= self.status.not_after.saturating_sub(self.policy.before_s)
            }
            State::Asked { .. } => false,
        }
    }

    /// A request went out at `now`.
    pub fn asked(&mut self, now: i64) {
        self.state = State::Asked { since: now };
    }

    /// Whether a request is waiting for its answer.
    pub fn waiting_for_answer(&self) -> bool {
        matches!(self.state, State::Asked { .. })
    }

    /// The renewed certificate, valid until `not_after`, is installed.
    pub fn renewed(&mut self, not_after: i64) {
        self.status.not_after = not_after;
        self.status.renewed += 1;
        self.status.last_error = None;
        self.state = State::Waiting { not_before: i64::MIN };
    }

    /// The renewal failed at `now` (refused, a bad answer, the files, the connection lost):
    /// tried again after the policy's wait.
    pub fn failed(&mut self, now: i64, reason: impl Into<String>) {
        self.status.failures += 1;
        self.status.last_error = Some(reason.into());
        self.state = State::Waiting { not_before: now.saturating_add(self.policy.retry_s) };
    }

    /// Counts an overdue answer as a failure; true when it did.
    pub fn check_timeout(&mut self, now: i64) -> bool {
        match self.state {
            State::Asked { since } if now >= since.saturating_add(self.policy.answer_timeout_s) => {
                let waited = self.policy.answer_timeout_s;
                self.failed(now, format!("no answer from the hub within {waited} s"));
                true
            }
            _ => false,
        }
    }

    /// A connection that carried a request is gone: its answer will not come.
    pub fn connection_lost(&mut self, now: i64) {
        if self.waiting_for_answer() {
            self.failed(now, "the connection to the hub was lost before its answer");
        }
    }

    /// When something is next to do (a request due, an answer overdue), for the edge's timer.
    pub fn next_wake(&self) -> i64 {
        match self.state {
            State::Waiting { not_before } => {
                not_before.max(self.status.not_after.saturating_sub(self.policy.before_s))
            }
            State::Asked { since } => since.saturating_add(self.policy.answer_timeout_s),
        }
    }

    pub fn status(&self) -> &RenewalStatus {
        &self.status
    }

    /// Whole days until the certificate expires (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.status.not_after - now).div_euclid(86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn policy() -> RenewalPolicy {
        RenewalPolicy { before_s: 30 * DAY, retry_s: 3_600, answer_timeout_s: 30 }
    }

    #[test]
    fn asks_from_the_window_on_and_only_once_at_a_time() {
        let expires = 100 * DAY;
        let mut r = Renewal::new(policy(), expires);
        assert!(!r.due(70 * DAY - 1));
        assert_eq!(r.next_wake(), 70 * DAY);
        assert!(r.due(70 * DAY));
        r.asked(70 * DAY);
        assert!(!r.due(70 * DAY + 1), "one request at a time");
        assert_eq!(r.next_wake(), 70 * DAY + 30);
        r.renewed(190 * DAY);
        assert!(!r.due(70 * DAY + 2), "the new certificate is far from its end");
        assert_eq!(r.next_wake(), 160 * DAY);
        assert_eq!(r.status().renewed, 1);
    }

    #[test]
    fn failures_are_reported_and_retried_after_the_wait() {
        let mut r = Renewal::new(policy(), 10 * DAY);
        let t = DAY;
        assert!(r.due(t));
        r.asked(t);
        assert!(!r.check_timeout(t + 29));
        assert!(r.check_timeout(t + 30));
        assert_eq!(r.status().failures, 1);
        assert!(r.status().last_error.as_deref().is_some_and(|e| e.contains("no answer")));
        assert!(!r.due(t + 30 + 3_599));
        assert!(r.due(t + 30 + 3_600));
        r.asked(t + 4_000);
        r.connection_lost(t + 4_001);
        assert_eq!(r.status().failures, 2);
        r.failed(t + 4_002, "refused"); // a late refusal after a loss: counted, no panic
        assert!(r.due(t + 4_002 + 3_600));
        r.asked(t + 8_000);
        r.renewed(100 * DAY);
        assert_eq!(r.status().last_error, None, "a success clears the report");
        r.connection_lost(t + 8_001);
        assert_eq!(r.status().failures, 3, "nothing outstanding: a loss is no failure");
    }

    #[test]
    fn an_expired_certificate_is_due_at_once() {
        let r = Renewal::new(policy(), 5);
        assert!(r.due(10));
        assert_eq!(r.days_left(5 + DAY), -1);
        assert_eq!(Renewal::new(policy(), 10 * DAY + 5).days_left(0), 10);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut r = Renewal::new(
            RenewalPolicy { before_s: i64::MAX, retry_s: i64::MAX, answer_timeout_s: i64::MAX },
            i64::MIN,
        );
        assert!(r.due(0));
        r.asked(i64::MAX);
        assert!(!r.check_timeout(i64::MAX - 1));
        r.failed(i64::MAX, "x");
        assert!(!r.due(i64::MAX - 1));
        let _ = r.next_wake();
    }
}
