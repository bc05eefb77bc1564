//! `kioskd demo`: a hub, auto-answering agents and kiosks with simulated buttons in one
//! process on 127.0.0.1, over real QUIC with real mutual TLS. Places calls, exchanges texts
//! and reports what happened.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::call::{Button, CallConfig, KioskState};
use crate::edges::devices::audio;
use crate::edges::devices::buttons::{self, simulated::SimulatedButtons};
use crate::edges::display::{Display, DisplayOptions, DisplayThread};
use crate::edges::net::certs::Authority;
use crate::edges::net::client::HubTarget;
use crate::edges::net::tls::client_config;
use crate::edges::session::{MediaDevices, MediaOptions, MediaStats, synthetic_devices};
use crate::media::codec::VideoSettings;
use crate::media::stats::{LatencyHistogram, Quantiles};
use crate::protocol::{CallId, EndReason, Role, RoomState};
use crate::queue::QueueConfig;
use crate::queue::log::Percentiles;
use crate::roles::agent::{self, AgentCommand, AgentEvent, AgentIo, AutoAnswer};
use crate::roles::hub::{self, HubOptions};
use crate::roles::kiosk::{self, KioskEvent, KioskIo, KioskOptions};
use crate::ui::UiSettings;

/// The kiosk's synthetic microphone plays this tone; the agent's another, so that each side
/// can tell it hears the other.
pub const KIOSK_TONE_HZ: f64 = 440.0;
pub const AGENT_TONE_HZ: f64 = 660.0;

/// Pairs each call's stats from the sending side with the receiving side's.
fn pair(tx: &HashMap<CallId, MediaStats>, rx: &HashMap<CallId, MediaStats>) -> Vec<(MediaStats, MediaStats)> {
    let mut ids: Vec<&CallId> = tx.keys().filter(|id| rx.contains_key(id)).collect();
    ids.sort();
    ids.into_iter().filter_map(|id| Some((tx.get(id)?.clone(), rx.get(id)?.clone()))).collect()
}
use crate::edges::systemd::Notifier;

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
}

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
    pub errors: Vec<String>,
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
    fn read(dir: &std::path::Path, finished: u64, failed: u64) -> Self {
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
}

impl Direction {
    /// Sender's figures from `sent`, receiver's from `received` (pairs of the same call).
    fn from_pairs(pairs: &[(MediaStats, MediaStats)]) -> Self {
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

enum Ev {
    Kiosk(usize, KioskEvent),
    Agent(usize, AgentEvent),
}

#[derive(Default)]
struct KioskTrack {
    calls_left: usize,
    pressed_at: Option<Instant>,
    call_id: Option<CallId>,
    connected: bool,
    hangs_up_itself: bool,
    idle_seen: bool,
    /// The current call was told a queue position (it did not find an agent free).
    queued: bool,
}

/// Runs the demo and returns its report. Progress goes to stdout (timeline) or stderr.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(opts.kiosks >= 1 && opts.agents >= 1, "need at least one kiosk and one agent");
    let screen_lang = crate::ui::Lang::built_in(&opts.language)?;
    let started = Instant::now();
    let say = |line: String| {
        if opts.timeline {
            println!("{:>8.3} s  {line}", started.elapsed().as_secs_f64());
        }
    };

    // A deployment CA and certificates for everyone, in memory.
    let ca = Authority::generate("kioskd demo CA", 1)?;
    let hub_cert =
        ca.issue(Role::Hub, "hub.demo", &["localhost".into()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], 1)?;
    let (log_path, tmp_dir) = match &opts.event_log {
        Some(p) => (p.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("kioskd-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (dir.join("events.jsonl"), Some(dir))
        }
    };
    let _ = std::fs::remove_file(&log_path);
    let queue = QueueConfig {
        max_queue: opts.kiosks.max(50),
        offer_timeout: Duration::from_secs(10),
        wrap_up: Duration::ZERO,
        kiosk_grace: Duration::from_secs(5),
        ..QueueConfig::default()
    };
    let hub = hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: hub_cert.material(&ca)?,
        queue,
        event_log: log_path.clone(),
        metrics: None,
        recording: opts.record.clone().map(|dir| crate::record::RecordingOptions { dir, retention: None }),
    })
    .await?;
    say(format!("hub listening on {} (QUIC, TLS 1.3, client certificates required)", hub.local_addr));

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Ev>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Agents.
    for a in 0..opts.agents {
        let id = format!("agent-{}", a + 1);
        let cert = ca.issue(Role::Agent, &id, &[], &[], 1)?;
        let target = HubTarget {
            address: hub.local_addr.to_string(),
            server_name: "localhost".into(),
            client: client_config(&cert.material(&ca)?)?,
        };
        let (obs_tx, mut obs_rx) = mpsc::unbounded_channel();
        let fwd = ev_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = obs_rx.recv().await {
                let _ = fwd.send(Ev::Agent(a, ev));
            }
        });
        let (_cmd_tx, cmd_rx) = mpsc::channel::<AgentCommand>(1);
        let auto = AutoAnswer {
            answer_delay: opts.answer_delay,
            call_duration: Some(opts.call_duration),
            greeting: Some(format!("Good morning, this is {id}. How can I help you today?")),
        };
        let media =
            if opts.media { synthetic_devices(AGENT_TONE_HZ, opts.video) } else { MediaDevices::default() };
        let media_options = MediaOptions { video: opts.video, ..MediaOptions::default() };
        let io = AgentIo { commands: cmd_rx, observer: Some(obs_tx), print: false, media, media_options };
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = _cmd_tx;
            agent::run(target, Some(auto), io, stop).await.map_err(|e| format!("agent {id}: {e}"))
        }));
    }

    // Kiosks; the first one's screen is composed for screenshots.
    let mut screen: Option<(Display, DisplayThread)> = match &opts.screenshots {
        Some(dir) => Some(Display::spawn(
            None,
            DisplayOptions {
                lang: screen_lang,
                settings: UiSettings {
                    branch: "kioskd demo branch".into(),
                    opening_hours: "Mon–Fri 9:00–17:00".into(),
                    recording_notice: opts.record.is_some(),
                },
                size: (1280, 720),
                screenshots: Some(dir.clone()),
            },
        )?),
        None => None,
    };
    let mut panels = Vec::new();
    let mut texts = Vec::new();
    for k in 0..opts.kiosks {
        let id = format!("branch-{}/kiosk-{}", k / 10 + 1, k % 10 + 1);
        let cert = ca.issue(Role::Kiosk, &id, &[], &[], 1)?;
        let target = HubTarget {
            address: hub.local_addr.to_string(),
            server_name: "localhost".into(),
            client: client_config(&cert.material(&ca)?)?,
        };
        // Simulated buttons with 30 ms of contact bounce: the debouncer must see one press.
        let (backend, panel) = SimulatedButtons::new(true);
        let presses = buttons::spawn(Box::new(backend), Duration::from_millis(50))?;
        let (text_tx, text_rx) = mpsc::channel(8);
        let (obs_tx, mut obs_rx) = mpsc::unbounded_channel();
        let fwd = ev_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = obs_rx.recv().await {
                let _ = fwd.send(Ev::Kiosk(k, ev));
            }
        });
        let io = KioskIo {
            buttons: presses,
            texts: Some(text_rx),
            observer: Some(obs_tx),
            leds: None,
            notifier: Notifier::disabled(),
            media: MediaDevices {
                display: screen.as_ref().filter(|_| k == 0).map(|(d, _)| d.clone()),
                ..if opts.media {
                    synthetic_devices(KIOSK_TONE_HZ, opts.video)
                } else {
                    MediaDevices::default()
                }
            },
            media_options: MediaOptions { video: opts.video, ..MediaOptions::default() },
            device_problems: Vec::new(),
            health_file: None,
            reload: None,
        };
        let kopts = KioskOptions {
            call: CallConfig {
                ended_screen: Duration::from_millis(300),
                busy_screen: Duration::from_secs(1),
                recording_consent: opts.record.is_some(),
            },
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
        };
        let stop = stop_rx.clone();
        let name = id.clone();
        tasks.push(tokio::spawn(async move {
            kiosk::run(target, kopts, io, stop).await.map_err(|e| format!("kiosk {name}: {e}"))
        }));
        panels.push((id, panel));
        texts.push(text_tx);
    }
    drop(ev_tx);

    // Assign calls round-robin; every third call the customer hangs up before the agent does.
    let mut track: Vec<KioskTrack> = (0..opts.kiosks).map(|_| KioskTrack::default()).collect();
    for c in 0..opts.calls {
        track[c % opts.kiosks].calls_left += 1;
    }
    let agent_ids: Vec<String> = (0..opts.agents).map(|a| format!("agent-{}", a + 1)).collect();

    let mut errors: Vec<String> = Vec::new();
    let mut agents_idle = vec![false; opts.agents];
    let mut started_calls = false;
    let mut requested = 0usize;
    let (mut connected, mut completed, mut abandoned) = (0usize, 0usize, 0usize);
    let mut max_pos = 0u32;
    let (mut texts_sent, mut texts_delivered, mut texts_received) = (0usize, 0usize, 0usize);
    let mut press_at: HashMap<CallId, Instant> = HashMap::new();
    let mut offered_at: HashMap<CallId, Instant> = HashMap::new();
    let mut accept_at: HashMap<CallId, Instant> = HashMap::new();
    let mut connected_at: HashMap<CallId, (Option<Instant>, Option<Instant>)> = HashMap::new();
    let mut hangups: BTreeMap<Instant, usize> = BTreeMap::new();
    let mut unqueued: HashMap<CallId, bool> = HashMap::new();
    let mut done = 0usize;
    let mut kiosk_media: HashMap<CallId, MediaStats> = HashMap::new();
    let mut agent_media: HashMap<CallId, MediaStats> = HashMap::new();
    let mut settle_until: Option<Instant> = None;

    let per_round = opts.call_duration + opts.answer_delay + Duration::from_secs(2);
    let rounds = opts.calls.div_ceil(opts.agents) as u32 + 2;
    let limit = started + Duration::from_secs(20) + per_round * rounds;
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    let mut idle_agent_count = 0usize;

    loop {
        if done == opts.calls && settle_until.is_none() {
            settle_until = Some(Instant::now() + Duration::from_secs(5));
        }
        let media_in = !opts.media || (kiosk_media.len() >= connected && agent_media.len() >= connected);
        if settle_until.is_some() && texts_delivered >= texts_sent && texts_received >= texts_sent && media_in
        {
            break;
        }
        let next_hangup = hangups.keys().next().copied();
        let wake = [Some(limit), settle_until, next_hangup].into_iter().flatten().min().unwrap_or(limit);
        let ev = tokio::select! {
            ev = ev_rx.recv() => match ev { Some(ev) => ev, None => break },
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= limit {
                    errors.push(format!("demo did not finish in {:.0} s ({done} of {} calls done)", (limit - started).as_secs_f64(), opts.calls));
                    break;
                }
                if settle_until.is_some_and(|t| now >= t) {
                    break;
                }
                while let Some((&t, &k)) = hangups.iter().next() {
                    if t > now { break; }
                    hangups.remove(&t);
                    say(format!("{} customer presses HANGUP", panels[k].0));
                    panels[k].1.press(Button::HangUp);
                }
                continue;
            }
            _ = progress.tick(), if !opts.timeline => {
                eprintln!("[{:5.1} s] calls: {done}/{} done, {} connected now, {} agents idle",
                    started.elapsed().as_secs_f64(), opts.calls,
                    track.iter().filter(|t| t.connected).count(), idle_agent_count);
                continue;
            }
        };
        let now = Instant::now();
        match ev {
            Ev::Agent(a, ev) => match ev {
                AgentEvent::Room { state, .. } => {
                    agents_idle[a] = state == RoomState::Idle;
                    idle_agent_count = agents_idle.iter().filter(|x| **x).count();
                    if opts.timeline {
                        say(format!("{} room is {}", agent_ids[a], state.as_str()));
                    }
                }
                AgentEvent::Offer { call_id, kiosk, waited_ms, at } => {
                    say(format!(
                        "hub offers call {call_id} from {kiosk} to {} (waited {waited_ms} ms)",
                        agent_ids[a]
                    ));
                    offered_at.entry(call_id).or_insert(at);
                }
                AgentEvent::AcceptSent { call_id, at } => {
                    say(format!("{} accepts call {call_id}", agent_ids[a]));
                    accept_at.insert(call_id, at);
                }
                AgentEvent::Connected { call_id, at, .. } => {
                    connected_at.entry(call_id).or_default().1 = Some(at);
                }
                AgentEvent::TextSent { .. } => texts_sent += 1,
                AgentEvent::TextDelivered { .. } => texts_delivered += 1,
                AgentEvent::TextReceived { call_id, body, .. } => {
                    texts_received += 1;
                    say(format!("{} reads in call {call_id}: \"{body}\"", agent_ids[a]));
                }
                AgentEvent::Ended { call_id, reason, .. } => {
                    say(format!("{} sees call {call_id} end: {}", agent_ids[a], reason.describe()));
                }
                AgentEvent::Error { message, .. } => {
                    errors.push(format!("{}: hub error: {message}", agent_ids[a]))
                }
                AgentEvent::Media { call_id, stats, .. } => {
                    for p in &stats.problems {
                        errors.push(format!("{} media: {p}", agent_ids[a]));
                    }
                    agent_media.insert(call_id, *stats);
                }
                AgentEvent::Welcome { .. } | AgentEvent::OfferWithdrawn { .. } => {}
            },
            Ev::Kiosk(k, ev) => match ev {
                KioskEvent::Requested { at } => {
                    track[k].pressed_at = Some(at);
                    track[k].queued = false;
                }
                KioskEvent::CallId { call_id, .. } => {
                    track[k].call_id = Some(call_id);
                    if let Some(p) = track[k].pressed_at {
                        press_at.insert(call_id, p);
                    }
                }
                KioskEvent::TextSent { .. } => texts_sent += 1,
                KioskEvent::TextDelivered { .. } => texts_delivered += 1,
                KioskEvent::TextReceived { body, call_id, .. } => {
                    texts_received += 1;
                    say(format!("{} shows in call {call_id}: \"{body}\"", panels[k].0));
                }
                KioskEvent::HubUp { .. } => {}
                KioskEvent::Media { call_id, stats, .. } => {
                    for p in &stats.problems {
                        errors.push(format!("{} media: {p}", panels[k].0));
                    }
                    if opts.timeline {
                        say(format!(
                            "{} call {call_id} media: sent {} video / {} audio frames, showed {} pictures, played {} audio frames",
                            panels[k].0,
                            stats.video_frames_sent,
                            stats.audio_frames_sent,
                            stats.video_frames_displayed,
                            stats.audio_frames_played
                        ));
                    }
                    kiosk_media.insert(call_id, *stats);
                }
                KioskEvent::HubDown { reason, .. } => {
                    if !*stop_rx.borrow() {
                        errors.push(format!("{}: lost the hub: {reason}", panels[k].0));
                    }
                }
                KioskEvent::State { state, at } => {
                    if opts.timeline {
                        say(format!("{} {}", panels[k].0, state.describe()));
                    }
                    match &state {
                        KioskState::Idle => {
                            track[k].idle_seen = true;
                            track[k].connected = false;
                        }
                        KioskState::Waiting { position, .. } => {
                            max_pos = max_pos.max(*position);
                            track[k].queued = true;
                        }
                        KioskState::Ringing => {
                            max_pos = max_pos.max(1);
                            if let Some(id) = track[k].call_id {
                                unqueued.entry(id).or_insert(!track[k].queued);
                            }
                        }
                        KioskState::Connected { .. } => {
                            connected += 1;
                            track[k].connected = true;
                            if let Some(id) = track[k].call_id {
                                connected_at.entry(id).or_default().0 = Some(at);
                            }
                            let text =
                                format!("Hello, I would like to open an account (from {}).", panels[k].0);
                            if texts[k].try_send(text).is_err() {
                                errors.push(format!("{}: could not queue a text", panels[k].0));
                            }
                            if track[k].hangs_up_itself {
                                hangups
                                    .insert(now + opts.call_duration / 2 + Duration::from_nanos(k as u64), k);
                            }
                        }
                        KioskState::Ended { reason } => {
                            done += 1;
                            let ok = matches!(reason, EndReason::AgentHungUp | EndReason::KioskHungUp);
                            if track[k].connected && ok {
                                completed += 1;
                            } else if track[k].connected {
                                errors.push(format!("{}: call ended: {}", panels[k].0, reason.describe()));
                            } else {
                                abandoned += 1;
                                errors.push(format!(
                                    "{}: call abandoned: {}",
                                    panels[k].0,
                                    reason.describe()
                                ));
                            }
                            track[k].connected = false;
                            track[k].call_id = None;
                        }
                        KioskState::Busy => {
                            done += 1;
                            abandoned += 1;
                            errors.push(format!("{}: hub said busy", panels[k].0));
                        }
                        KioskState::Offline { .. } | KioskState::Requesting => {}
                    }
                }
            },
        }
        // Start calls once every agent is IDLE and every kiosk idle; then press CALL on any idle
        // kiosk that has calls left.
        if !started_calls && agents_idle.iter().all(|x| *x) && track.iter().all(|t| t.idle_seen) {
            started_calls = true;
            say(format!(
                "{} agents IDLE, {} kiosks idle: placing {} calls",
                opts.agents, opts.kiosks, opts.calls
            ));
        }
        if started_calls {
            for (k, t) in track.iter_mut().enumerate() {
                if t.calls_left > 0 && t.idle_seen && !t.connected {
                    t.calls_left -= 1;
                    t.idle_seen = false;
                    t.hangs_up_itself = requested % 3 == 2;
                    requested += 1;
                    say(format!("{} customer presses CALL", panels[k].0));
                    panels[k].1.press(Button::Call);
                }
            }
        }
    }

    // Stop everything.
    let _ = stop_tx.send(true);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(e),
            Ok(Err(e)) => errors.push(format!("task failed: {e}")),
            Err(_) => errors.push("a task did not stop within 5 s".into()),
        }
    }
    // The screen's last screenshots are written once every handle on it is gone.
    let screenshots = match screen.take() {
        Some((display, thread)) => {
            drop(display);
            let joined = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::task::spawn_blocking(move || thread.join()),
            );
            let shots = match joined.await {
                Ok(Ok(stats)) => stats.screenshots,
                _ => {
                    errors.push("the kiosk's display did not stop within 5 s".into());
                    Vec::new()
                }
            };
            if shots.is_empty() {
                errors.push("no screenshot of the kiosk's screen was written".into());
            }
            Some(shots.iter().map(|p| p.display().to_string()).collect())
        }
        None => None,
    };
    let hub_status = hub.shutdown().await;
    if hub_status.event_log_errors > 0 {
        errors.push(format!("{} event log write errors", hub_status.event_log_errors));
    }
    let recordings = opts.record.as_ref().map(|dir| {
        let r = Recordings::read(dir, hub_status.recordings_finished, hub_status.recordings_failed);
        if r.failed > 0 || r.finished < completed as u64 {
            errors.push(format!(
                "{} recordings finished and {} failed for {completed} completed calls",
                r.finished, r.failed
            ));
        }
        r
    });

    let mut offer_all = Vec::new();
    let mut offer_unqueued = Vec::new();
    for (call_id, at) in &offered_at {
        if let Some(p) = press_at.get(call_id) {
            let ms = at.saturating_duration_since(*p).as_secs_f64() * 1000.0;
            offer_all.push(ms);
            if unqueued.get(call_id) == Some(&true) {
                offer_unqueued.push(ms);
            }
        }
    }
    let mut connect = Vec::new();
    for (call_id, acc) in &accept_at {
        if let Some((Some(k), Some(a))) = connected_at.get(call_id) {
            connect.push((*k).max(*a).saturating_duration_since(*acc).as_secs_f64() * 1000.0);
        }
    }
    if texts_delivered < texts_sent {
        errors.push(format!("{} of {texts_sent} texts were not delivered", texts_sent - texts_delivered));
    }
    if texts_received != texts_sent {
        errors.push(format!("{texts_received} texts shown for {texts_sent} sent"));
    }
    let event_lines = std::fs::read_to_string(&log_path).map(|s| s.lines().count()).unwrap_or(0);
    let event_log = match &tmp_dir {
        Some(dir) => {
            let _ = std::fs::remove_dir_all(dir);
            format!("{event_lines} events (keep them with --event-log PATH)")
        }
        None => format!("{} ({event_lines} events)", log_path.display()),
    };
    Ok(DemoReport {
        kiosks: opts.kiosks,
        agents: opts.agents,
        calls_requested: requested,
        calls_connected: connected,
        calls_completed: completed,
        calls_abandoned: abandoned,
        max_queue_position: max_pos,
        texts_sent,
        texts_delivered,
        offer_ms: Percentiles::of_f64(offer_all).into(),
        offer_unqueued_ms: Percentiles::of_f64(offer_unqueued).into(),
        connect_ms: Percentiles::of_f64(connect).into(),
        kiosk_to_agent: opts.media.then(|| Direction::from_pairs(&pair(&kiosk_media, &agent_media))),
        agent_to_kiosk: opts.media.then(|| Direction::from_pairs(&pair(&agent_media, &kiosk_media))),
        duration_s: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        event_log,
        recordings,
        screenshots,
        errors,
    })
}

/// The readable account printed at the end.
pub fn print_account(r: &DemoReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "kioskd demo: {} kiosk(s), {} agent(s) on 127.0.0.1 — QUIC, TLS 1.3, mutual certificates",
        r.kiosks, r.agents
    )?;
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
    writeln!(out, "  hub log   {}", r.event_log)?;
    for (name, d) in [("kiosk→agent", &r.kiosk_to_agent), ("agent→kiosk", &r.agent_to_kiosk)] {
        let Some(d) = d else { continue };
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
    }
    if let Some(rec) = &r.recordings {
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
    }
    if let Some(shots) = &r.screenshots {
        let dir =
            shots.first().and_then(|p| std::path::Path::new(p).parent()).map(|d| d.display().to_string());
        writeln!(
            out,
            "  screen    {} screenshots of the first kiosk's screen in {}",
            shots.len(),
            dir.unwrap_or_default()
        )?;
        for s in shots {
            let name = std::path::Path::new(s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            writeln!(out, "            {name}")?;
        }
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
