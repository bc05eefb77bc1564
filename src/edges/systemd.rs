//! systemd integration: readiness, the status line and the watchdog.
//!
//! Every call is a no-op when the process was not started by systemd (no `NOTIFY_SOCKET`).
//! The watchdog is fed from the kiosk's main loop, so a stuck loop stops the feeding and
//! systemd restarts the daemon.

use std::time::Duration;

use tracing::debug;

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Talks to systemd when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Self {
        Self { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    /// Never talks to systemd (demo, tests).
    pub fn disabled() -> Self {
        Self { enabled: false }
    }

    fn notify(&self, state: &[sd_notify::NotifyState<'_>]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(state)
        {
            debug!(error = %e, "sd_notify");
        }
    }

    pub fn ready(&self) {
        self.notify(&[sd_notify::NotifyState::Ready]);
    }

    pub fn status(&self, line: &str) {
        self.notify(&[sd_notify::NotifyState::Status(line)]);
    }

    pub fn stopping(&self) {
        self.notify(&[sd_notify::NotifyState::Stopping]);
    }

    pub fn watchdog(&self) {
        self.notify(&[sd_notify::NotifyState::Watchdog]);
    }

    /// Half the service's `WatchdogSec`, when it has one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2)
    }
}
