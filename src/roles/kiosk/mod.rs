//! The kiosk daemon's driver: buttons → call machine ↔ hub link, with status for systemd.
//!
//! ```text
//! buttons thread ──ButtonEvent──► core task (CallMachine) ◄──LinkEvent── link task (QUIC, reconnects)
//!                                   │                      ──ClientMsg──►
//!                                   └──► status (systemd, LEDs, observer)
//! ```
//! [`run`] sets the kiosk up, runs its loop ([`core`]: one event at a time into the call
//! machine, its outputs carried out) and shuts it down; [`link`] keeps the session with the hub.

mod core;
pub mod doctor;
mod link;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::call::{CallConfig, KioskState};
use crate::edges::devices::buttons::ButtonEvent;
use crate::edges::devices::leds::Leds;
use crate::edges::net::client::HubTarget;
use crate::edges::session::{MediaDevices, MediaOptions, MediaStats};
use crate::edges::systemd::Notifier;
use crate::protocol::CallId;

/// What the kiosk reports to whoever watches it (the demo, tests).
#[derive(Debug, Clone)]
pub enum KioskEvent {
    State {
        state: KioskState,
        at: Instant,
    },
    /// The call machine asked the hub for an agent (a press of CALL was accepted).
    Requested {
        at: Instant,
    },
    /// The call's id became known.
    CallId {
        call_id: CallId,
        at: Instant,
    },
    TextReceived {
        call_id: CallId,
        id: u64,
        body: String,
        at: Instant,
    },
    TextDelivered {
        call_id: CallId,
        id: u64,
        at: Instant,
    },
    TextSent {
        call_id: Option<CallId>,
        at: Instant,
    },
    HubUp {
        at: Instant,
    },
    HubDown {
        reason: String,
        at: Instant,
    },
    /// A call's media stopped (the call ended or the link dropped); its figures.
    Media {
        call_id: CallId,
        stats: Box<MediaStats>,
        at: Instant,
    },
}

/// The kiosk's inputs and outputs besides the hub.
pub struct KioskIo {
    pub buttons: mpsc::Receiver<ButtonEvent>,
    /// Texts for the customer to send (the demo).
    pub texts: Option<mpsc::Receiver<String>>,
    /// Unbounded on purpose: one event per state change or text, read by the demo or a test
    /// that keeps up; a kiosk in the field has no observer.
    pub observer: Option<mpsc::UnboundedSender<KioskEvent>>,
    pub leds: Option<Box<dyn Leds>>,
    pub notifier: Notifier,
    /// Camera, microphone, speaker and screen for calls, and codec settings.
    pub media: MediaDevices,
    pub media_options: MediaOptions,
    /// What did not work when the devices were checked at start ("camera: ..."); shown in the
    /// status line so that a kiosk running audio-only says so.
    pub device_problems: Vec<String>,
    /// Where to write the health file (`kioskd health` reads it); none in demos and tests.
    pub health_file: Option<std::path::PathBuf>,
    /// New settings after a configuration reload (SIGHUP).
    pub reload: Option<mpsc::Receiver<Reload>>,
}

impl KioskIo {
    /// A kiosk run inside another program (the demo, the bench, tests): buttons, texts and
    /// an observer from that program; no LEDs, systemd, health file or reloads.
    pub fn in_process(
        buttons: mpsc::Receiver<ButtonEvent>,
        texts: mpsc::Receiver<String>,
        observer: mpsc::UnboundedSender<KioskEvent>,
        media: MediaDevices,
        media_options: MediaOptions,
    ) -> Self {
        Self {
            buttons,
            texts: Some(texts),
            observer: Some(observer),
            leds: None,
            notifier: Notifier::disabled(),
            media,
            media_options,
            device_problems: Vec::new(),
            health_file: None,
            reload: None,
        }
    }
}

/// Settings that change without dropping a call: they apply from the next call or screen on.
pub struct Reload {
    pub call: CallConfig,
    pub media: MediaDevices,
    pub media_options: MediaOptions,
    pub device_problems: Vec<String>,
}

/// Reconnect pacing.
#[derive(Debug, Clone)]
pub struct KioskOptions {
    pub call: CallConfig,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Renews the kiosk's certificate on line before it expires; none in demos and tests
    /// that do not test it.
    pub renewal: Option<crate::edges::net::renew::SharedRenewer>,
}

/// Runs the kiosk until `shutdown` turns true. On shutdown a call in progress is hung up first.
pub async fn run(
    target: HubTarget,
    opts: KioskOptions,
    io: KioskIo,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (link_tx, link_rx) = mpsc::channel(64);
    let (link_stop_tx, link_stop_rx) = watch::channel(false);
    // Whether a call (or a place in the queue) waits to be resumed: the link retries faster.
    let (resuming_tx, resuming_rx) = watch::channel(false);
    let link = tokio::spawn(link::link_task(target, opts.clone(), link_tx, link_stop_rx, resuming_rx));

    let mut kiosk = core::Kiosk::new(opts.call, io, link_rx, resuming_tx, shutdown, opts.renewal.clone());
    kiosk.run().await;
    kiosk.shut_down().await;

    let _ = link_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), link).await;
    Ok(())
}
