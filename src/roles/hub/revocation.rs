//! The revocation list, followed: read again when its file changes (checked every second) or
//! on a reload (SIGHUP). A new list applies to the next handshakes at once (the endpoint's
//! server configuration is replaced; connections keep theirs), and the core disconnects the
//! connected peers it names. A list that cannot be read keeps the last good one in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use super::peer::CoreCmd;
use crate::edges::net::tls::{Revocations, TlsMaterial, server_config_revoking};

/// How often the file's size and modification time are compared.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Watch {
    pub path: PathBuf,
    pub tls: TlsMaterial,
    pub endpoint: quinn::Endpoint,
    pub core: mpsc::Sender<CoreCmd>,
}

impl Watch {
    pub(super) async fn run(
        self,
        mut current: Revocations,
        reload: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut seen = self.stamp();
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = every.tick() => false,
                () = reload.notified() => true,
                // The hub stops: let go of its endpoint (its port is free again).
                _ = stop.changed() => return,
            };
            let stamp = self.stamp();
            if !asked && stamp == seen {
                continue;
            }
            seen = stamp;
            match Revocations::load(&self.path) {
                Ok(new) => {
                    if let Err(e) = self.apply(&new).await {
                        warn!(error = %e, path = %self.path.display(), "revocation list not applied");
                        continue;
                    }
                    let added = new.serials.difference(&current.serials).count();
                    info!(path = %self.path.display(), revoked = new.serials.len(), added, "revocation list loaded");
                    current = new;
                }
                Err(e) => {
                    warn!(error = %e, path = %self.path.display(), "revocation list unreadable; the last one stays in force")
                }
            }
        }
    }

    async fn apply(&self, new: &Revocations) -> Result<(), String> {
        let config = server_config_revoking(&self.tls, new).map_err(|e| e.to_string())?;
        self.endpoint.set_server_config(Some(config));
        self.core
            .send(CoreCmd::Revoked(new.serials.clone()))
            .await
            .map_err(|_| "the hub is stopping".to_string())
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}
