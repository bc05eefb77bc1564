//! The kiosk daemon's health file: what `kioskd health` and the OTA side read.
//!
//! The daemon rewrites the file (atomically: write, then rename) whenever its state changes
//! and at every watchdog tick. `kioskd health` exits 0 only when the daemon that wrote it is
//! alive, wrote it recently, has reached the hub since it started and has no device problem;
//! `kioskd health --idle` also needs no call in progress, so that an update never reboots a
//! kiosk in the middle of a conversation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the kiosk daemon writes its health by default (systemd `RuntimeDirectory=kioskd`).
pub const DEFAULT_PATH: &str = "/run/kioskd/health.json";
/// A health file older than this is stale: the daemon is stuck or gone.
pub const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub pid: u32,
    /// Unix seconds when the daemon started and when it last wrote this file.
    pub started_unix: u64,
    pub updated_unix: u64,
    /// The call state (`idle`, `waiting`, `connected`, `offline`, ...).
    pub state: String,
    /// A call is being placed or held: do not reboot.
    pub in_call: bool,
    /// The hub welcomed this kiosk at least once since the daemon started.
    pub hub_reached: bool,
    /// Devices that do not work ("camera: cannot open /dev/video0: ...").
    pub problems: Vec<String>,
    /// The certificate's days left and its renewal (a failing renewal is reported here; it
    /// does not make the kiosk unhealthy until the certificate is no longer valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<crate::edges::net::renew::CertificateHealth>,
}

/// What `kioskd health` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(String),
}

impl Health {
    /// Writes `self` to `path` atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = tmp_path(path);
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e} (is kioskd running?)", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{} is not a health file: {e}", path.display()))
    }

    /// Judges the file at `now_unix`; `alive(pid)` says whether that process exists.
    pub fn verdict(&self, now_unix: u64, alive: impl Fn(u32) -> bool, need_idle: bool) -> Verdict {
        if !alive(self.pid) {
            return Verdict::Unhealthy(format!("kioskd (pid {}) is not running", self.pid));
        }
        let age = now_unix.saturating_sub(self.updated_unix);
        if age > MAX_AGE.as_secs() {
            return Verdict::Unhealthy(format!("kioskd has not reported for {age} s"));
        }
        if !self.hub_reached {
            return Verdict::Unhealthy("the hub has not been reached since kioskd started".into());
        }
        if !self.problems.is_empty() {
            return Verdict::Unhealthy(format!("devices: {}", self.problems.join("; ")));
        }
        if need_idle && self.in_call {
            return Verdict::Unhealthy(format!("a call is in progress ({})", self.state));
        }
        Verdict::Healthy
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Whether a process with this pid exists (Linux).
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            pid: 42,
            started_unix: 1000,
            updated_unix: 1010,
            state: "idle".into(),
            in_call: false,
            hub_reached: true,
            problems: vec![],
            certificate: None,
        }
    }

    #[test]
    fn verdicts() {
        let alive = |_| true;
        assert_eq!(healthy().verdict(1020, alive, false), Verdict::Healthy);
        assert!(
            matches!(healthy().verdict(1020, |_| false, false), Verdict::Unhealthy(m) if m.contains("not running"))
        );
        assert!(
            matches!(healthy().verdict(1200, alive, false), Verdict::Unhealthy(m) if m.contains("not reported"))
        );
        let h = Health { hub_reached: false, ..healthy() };
        assert!(matches!(h.verdict(1020, alive, false), Verdict::Unhealthy(m) if m.contains("hub")));
        let h = Health { problems: vec!["camera: gone".into()], ..healthy() };
        assert!(matches!(h.verdict(1020, alive, false), Verdict::Unhealthy(m) if m.contains("camera")));
        let h = Health { in_call: true, state: "connected".into(), ..healthy() };
        assert_eq!(h.verdict(1020, alive, false), Verdict::Healthy);
        assert!(matches!(h.verdict(1020, alive, true), Verdict::Unhealthy(m) if m.contains("call")));
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.json");
        healthy().write(&path).unwrap();
        assert_eq!(Health::read(&path).unwrap(), healthy());
        assert!(!tmp_path(&path).exists());
        assert!(Health::read(&dir.path().join("none.json")).is_err());
    }
}
