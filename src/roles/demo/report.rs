//! What the demo found: [`DemoReport`] (the JSON of `--json`) and the readable account.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::edges::devices::audio;
use crate::edges::session::MediaStats;
use crate::media::stats::{LatencyHistogram, Quantiles};
use crate::protocol::CallId;
use crate::queue::log::Percentiles;

/// p50/p95 in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Millis {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<Percentiles> for Millis {
    fn from(p: Percentiles) -> Self {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Self { p50: r(p.p50), p95: r(p.p95), p99: r(p.p99), max: r(p.max) }
    }
}

/// The demo's figures (`--json` prints this as the last line).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub kiosks: usize,
    pub agents: usize,
    pub calls_requested: usize,
    pub calls_connected: usize,
    pub calls_completed: usize,
    pub calls_abandoned: usize,
    pub max_queue_position: u32,
    pub texts_sent: usize,
    pub texts_delivered: usize,
    /// Button press to the agent's offer (includes time waiting in the queue).
    pub offer_ms: Millis,
    /// Button press to the offer, for calls that found an agent IDLE (no queueing).
    pub offer_unqueued_ms: Millis,
    /// Agent's accept to both sides connected.
    pub connect_ms: Millis,
    pub duration_s: f64,
    pub event_log: String,
    /// Media figures, kiosk → agent (present when the demo ran with media).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kiosk_to_agent: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_to_kiosk: Option<Direction>,
    /// The recordings written (with `--record`): one per completed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recordings: Option<Recordings>,
    /// The first kiosk's screen, one PNG per state (with `--screenshots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshots: Option<Vec<String>>,
    /// The hub's CPU while calls were up.
    pub hub_cpu: Option<HubCpu>,
    pub errors: Vec<String>,
}

/// The hub's CPU while calls were up (its threads' user and system time, 10 ms ticks): the
/// CPU seconds per second of call is the share of one core a call costs the hub.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubCpu {
    pub cpu_s: f64,
    pub call_s: f64,
    pub core_per_call: f64,
}

/// Measures [`HubCpu`]: the hub's CPU is read whenever the number of calls up leaves or
/// reaches zero, and the calls' durations are summed.
#[derive(Debug, Default)]
pub struct HubCpuMeter {
    up: HashMap<usize, std::time::Instant>,
    mark: Option<std::time::Duration>,
    cpu: std::time::Duration,
    calls: std::time::Duration,
}

impl HubCpuMeter {
    /// Call `key` is up at `at`; `cpu` is the hub's CPU so far.
    pub fn up(&mut self, key: usize, at: std::time::Instant, cpu: Option<std::time::Duration>) {
        if self.up.is_empty() {
            self.mark = cpu;
        }
        self.up.entry(key).or_insert(at);
    }

    /// Call `key` ended at `at`.
    pub fn down(&mut self, key: usize, at: std::time::Instant, cpu: Option<std::time::Duration>) {
        let Some(since) = self.up.remove(&key) else { return };
        self.calls += at.saturating_duration_since(since);
        if self.up.is_empty()
            && let (Some(mark), Some(now)) = (self.mark.take(), cpu)
        {
            self.cpu += now.saturating_sub(mark);
        }
    }

    pub fn figures(&self) -> Option<HubCpu> {
        let call_s = self.calls.as_secs_f64();
        (call_s > 0.0).then(|| HubCpu {
            cpu_s: round3(self.cpu.as_secs_f64()),
            call_s: round3(call_s),
            core_per_call: round3(self.cpu.as_secs_f64() / call_s),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What `--record` wrote.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Recordings {
    pub dir: String,
    pub finished: u64,
    pub failed: u64,
    /// `call-N.mkv` files with their sidecars' duration and track count.
    pub files: Vec<RecordedFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedFile {
    pub file: String,
    pub duration_ms: u64,
    pub tracks: usize,
    pub bytes: u64,
}

impl Recordings {
    /// Reads the sidecars in `dir`.
    pub(super) fn read(dir: &Path, finished: u64, failed: u64) -> Self {
        let mut files = Vec::new();
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        names.sort();
        for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
            let Ok(text) = std::fs::read_to_string(path) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            files.push(RecordedFile {
                file: v["file"].as_str().unwrap_or_default().to_string(),
                duration_ms: v["duration_ms"].as_u64().unwrap_or(0),
                tracks: v["tracks"].as_array().map_or(0, Vec::len),
                bytes: v["bytes"].as_u64().unwrap_or(0),
            });
        }
        Self { dir: dir.display().to_string(), finished, failed, files }
    }
}

/// Media figures of one direction, summed over the demo's calls.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Direction {
    pub audio_frames_sent: u64,
    pub audio_frames_played: u64,
    pub audio_frames_concealed: u64,
    pub video_frames_sent: u64,
    pub video_frames_displayed: u64,
    pub video_frames_verified: u64,
    pub audio_latency_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    pub bitrate_kbps: f64,
    /// Pitch of the sound played at the receiving end (the sender's tone), in Hz.
    pub tone_hz: f64,
    /// kiosk→agent: the agent's own voice in what the agent hears, relative to how loud it
    /// played at the kiosk (the kiosk's speaker leaks into its microphone; its echo canceller
    /// takes it out), in dB, for the last call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_return_db: Option<f64>,
}

impl Direction {
    /// Sender's figures from `sent`, receiver's from `received` (pairs of the same call).
    pub(super) fn from_pairs(pairs: &[(MediaStats, MediaStats)]) -> Self {
        let mut d = Direction::default();
        let mut audio = LatencyHistogram::default();
        let mut video = LatencyHistogram::default();
        let (mut bits, mut secs) = (0.0, 0.0);
        for (tx, rx) in pairs {
            d.audio_frames_sent += tx.audio_frames_sent;
            d.video_frames_sent += tx.video_frames_sent;
            d.audio_frames_played += rx.audio_frames_played;
            d.audio_frames_concealed += rx.audio_frames_concealed;
            d.video_frames_displayed += rx.video_frames_displayed;
            d.video_frames_verified += rx.video_frames_verified;
            audio.merge(&rx.audio_latency);
            video.merge(&rx.video_latency);
            bits += tx.bytes_sent as f64 * 8.0;
            secs += tx.duration_s;
        }
        d.audio_latency_ms = audio.quantiles();
        d.video_latency_ms = video.quantiles();
        d.bitrate_kbps = if secs > 0.0 { (bits / secs / 1000.0).round() } else { 0.0 };
        if let Some((_, rx)) = pairs.last() {
            let played: Vec<i16> = rx.played_audio.iter().copied().collect();
            if played.len() >= 24_000 {
                d.tone_hz = (audio::synthetic::dominant_frequency(&played, crate::media::SAMPLE_RATE) * 10.0)
                    .round()
                    / 10.0;
            }
        }
        d
    }
}

impl DemoReport {
    pub fn ok(&self) -> bool {
        // With media, each direction must have shown verified pictures and played sound.
        let media_ok = [&self.kiosk_to_agent, &self.agent_to_kiosk]
            .into_iter()
            .flatten()
            .all(|d| d.video_frames_verified > 0 && d.audio_frames_played > 0);
        self.errors.is_empty()
            && media_ok
            && self.calls_completed == self.calls_requested
            && self.texts_delivered == self.texts_sent
    }
}

/// How loud the agent's tone comes back to the agent, against how loud the kiosk played it,
/// in the last call both sides have figures of (their last 2 s of sound).
pub(super) fn echo_return_db(pairs: &[(MediaStats, MediaStats)], agent_tone_hz: f64) -> Option<f64> {
    use crate::edges::devices::audio::synthetic::tone_level_db;
    let (agent, kiosk) = pairs.last()?;
    let (back, played): (Vec<i16>, Vec<i16>) =
        (agent.played_audio.iter().copied().collect(), kiosk.played_audio.iter().copied().collect());
    if back.len() < 24_000 || played.len() < 24_000 {
        return None;
    }
    let rate = crate::media::SAMPLE_RATE;
    let db = tone_level_db(&back, agent_tone_hz, rate) - tone_level_db(&played, agent_tone_hz, rate);
    Some((db * 10.0).round() / 10.0)
}

/// Pairs each call's stats from the sending side with the receiving side's.
pub(super) fn pair(
    tx: &HashMap<CallId, MediaStats>,
    rx: &HashMap<CallId, MediaStats>,
) -> Vec<(MediaStats, MediaStats)> {
    let mut ids: Vec<&CallId> = tx.keys().filter(|id| rx.contains_key(id)).collect();
    ids.sort();
    ids.into_iter().filter_map(|id| Some((tx.get(id)?.clone(), rx.get(id)?.clone()))).collect()
}

/// The readable account printed at the end.
pub fn print_account(r: &DemoReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "kioskd demo: {} kiosk(s), {} agent(s) on 127.0.0.1 — QUIC, TLS 1.3, mutual certificates",
        r.kiosks, r.agents
    )?;
    print_calls(r, out)?;
    for (name, d) in [("kiosk→agent", &r.kiosk_to_agent), ("agent→kiosk", &r.agent_to_kiosk)] {
        if let Some(d) = d {
            print_direction(name, d, out)?;
        }
    }
    if let Some(rec) = &r.recordings {
        print_recordings(rec, out)?;
    }
    if let Some(shots) = &r.screenshots {
        print_screenshots(shots, out)?;
    }
    if let Some(cpu) = &r.hub_cpu {
        print_hub_cpu(cpu, out)?;
    }
    writeln!(out, "  took      {:.2} s", r.duration_s)?;
    if r.ok() {
        writeln!(out, "  result    OK: every call completed, every text delivered")?;
    } else {
        writeln!(out, "  result    FAILED")?;
        for e in &r.errors {
            writeln!(out, "            - {e}")?;
        }
    }
    Ok(())
}

fn print_calls(r: &DemoReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  calls     requested {}, connected {}, completed {}, abandoned {}",
        r.calls_requested, r.calls_connected, r.calls_completed, r.calls_abandoned
    )?;
    writeln!(out, "  queue     longest position {}", r.max_queue_position)?;
    writeln!(out, "  texts     sent {}, delivered {}", r.texts_sent, r.texts_delivered)?;
    writeln!(
        out,
        "  offer     CALL press → agent's offer      p50 {:7.2} ms   p95 {:7.2} ms   (includes waiting in line)",
        r.offer_ms.p50, r.offer_ms.p95
    )?;
    if r.offer_unqueued_ms.max > 0.0 {
        writeln!(
            out,
            "            … when an agent was free         p50 {:7.2} ms   p95 {:7.2} ms",
            r.offer_unqueued_ms.p50, r.offer_unqueued_ms.p95
        )?;
    }
    writeln!(
        out,
        "  connect   agent's accept → both in call  p50 {:7.2} ms   p95 {:7.2} ms",
        r.connect_ms.p50, r.connect_ms.p95
    )?;
    writeln!(out, "  hub log   {}", r.event_log)
}

fn print_direction(name: &str, d: &Direction, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  {name} video {}/{} frames shown, {} verified by their stamp, latency p50 {:.1} ms p95 {:.1} ms",
        d.video_frames_displayed,
        d.video_frames_sent,
        d.video_frames_verified,
        d.video_latency_ms.p50,
        d.video_latency_ms.p95
    )?;
    writeln!(
        out,
        "              audio {}/{} frames played, {} concealed, latency p50 {:.1} ms p95 {:.1} ms, tone {:.0} Hz; {:.0} kbit/s",
        d.audio_frames_played,
        d.audio_frames_sent,
        d.audio_frames_concealed,
        d.audio_latency_ms.p50,
        d.audio_latency_ms.p95,
        d.tone_hz,
        d.bitrate_kbps
    )?;
    if let Some(db) = d.echo_return_db {
        writeln!(
            out,
            "              echo  the agent's own voice comes back at {db:.1} dB of its level at the kiosk's speaker"
        )?;
    }
    Ok(())
}

pub(super) fn print_hub_cpu(cpu: &HubCpu, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  hub CPU   {:.1} % of one core per call ({:.2} s of CPU over {:.1} s of calls)",
        cpu.core_per_call * 100.0,
        cpu.cpu_s,
        cpu.call_s
    )
}

pub(super) fn print_recordings(rec: &Recordings, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "  recorded  {} call(s) into {} ({} failed)", rec.finished, rec.dir, rec.failed)?;
    for f in &rec.files {
        writeln!(
            out,
            "            {}  {:.1} s, {} tracks, {} kB (details in its .json)",
            f.file,
            f.duration_ms as f64 / 1000.0,
            f.tracks,
            f.bytes / 1000
        )?;
    }
    Ok(())
}

fn print_screenshots(shots: &[String], out: &mut impl Write) -> std::io::Result<()> {
    let dir = shots.first().and_then(|p| Path::new(p).parent()).map(|d| d.display().to_string());
    writeln!(
        out,
        "  screen    {} screenshots of the first kiosk's screen in {}",
        shots.len(),
        dir.unwrap_or_default()
    )?;
    for s in shots {
        let name = Path::new(s).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        writeln!(out, "            {name}")?;
    }
    Ok(())
}
