//! `kioskd demo`: a hub, auto-answering agents and kiosks with simulated buttons in one
//! process on 127.0.0.1, over real QUIC with real mutual TLS. Places calls, exchanges texts
//! and reports what happened.
//!
//! [`run`] starts the cast ([`cast`]: CA, hub, agents, kiosks), plays the script ([`script`]:
//! presses CALL, sends texts, hangs up, tallies) and stops the cast; [`report`] holds the
//! figures and the readable account.

pub mod browser;
mod cast;
pub mod console;
mod report;
mod script;

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::media::codec::VideoSettings;
pub use report::{DemoReport, Direction, Millis, RecordedFile, Recordings, print_account};

/// The kiosk's synthetic microphone plays this tone; the agent's another, so that each side
/// can tell it hears the other.
pub const KIOSK_TONE_HZ: f64 = 440.0;
pub const AGENT_TONE_HZ: f64 = 660.0;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub kiosks: usize,
    pub agents: usize,
    pub calls: usize,
    /// How long an agent stays in a call before hanging up.
    pub call_duration: Duration,
    pub answer_delay: Duration,
    /// Print each step as it happens (default for small demos).
    pub timeline: bool,
    /// Keep the event log here instead of a temporary folder.
    pub event_log: Option<PathBuf>,
    /// Two-way audio and video in every call (synthetic camera and microphone).
    pub media: bool,
    pub video: VideoSettings,
    /// Record every call into this folder (the kiosks show the recording notice).
    pub record: Option<PathBuf>,
    /// Write a PNG of the first kiosk's screen into this folder at each change of state.
    pub screenshots: Option<PathBuf>,
    /// The kiosks' screen language (`en`, `zh`).
    pub language: String,
    /// The kiosks' sound processing (media::processing).
    pub processing: crate::media::processing::ProcessingConfig,
    /// The hub's browser console (`kioskd demo --console`).
    pub console: Option<crate::roles::hub::console::ConsoleOptions>,
}

/// Runs the demo and returns its report. Progress goes to stdout (timeline) or stderr.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(opts.kiosks >= 1 && opts.agents >= 1, "need at least one kiosk and one agent");
    let started = Instant::now();
    let mut cast = cast::Cast::start(&opts).await?;
    let mut script = script::Script::new(&opts, started);
    if opts.timeline {
        println!(
            "{:>8.3} s  hub listening on {} (QUIC, TLS 1.3, client certificates required)",
            started.elapsed().as_secs_f64(),
            cast.hub.local_addr
        );
    }
    script.run(&mut cast).await;

    let stopped = cast.stop(&mut script.errors).await;
    let recordings = opts.record.as_ref().map(|dir| {
        let r = Recordings::read(dir, stopped.hub.recordings_finished, stopped.hub.recordings_failed);
        if r.failed > 0 || r.finished < script.completed() as u64 {
            script.errors.push(format!(
                "{} recordings finished and {} failed for {} completed calls",
                r.finished,
                r.failed,
                script.completed()
            ));
        }
        r
    });
    Ok(script.report(stopped.event_log, recordings, stopped.screenshots))
}
