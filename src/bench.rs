//! `kioskd bench`: a full two-way call through the network impairment proxy, per scenario,
//! printing one JSON object per scenario.
//!
//! The kiosk reaches the hub through the proxy (both directions of its path impaired); the
//! agent is on the bank's network (direct). Figures are taken at the receiving ends, on one
//! clock (one process).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::agent::{self, AgentCommand, AgentEvent, AgentIo, AutoAnswer};
use crate::call::{Button, CallConfig, KioskState};
use crate::call_media::{MediaOptions, MediaStats, synthetic_devices};
use crate::devices::buttons::{self, simulated::SimulatedButtons};
use crate::devices::unix_micros_now;
use crate::hub::{self, HubOptions};
use crate::kiosk::{self, HubTarget, KioskEvent, KioskIo, KioskOptions};
use crate::media::codec::VideoSettings;
use crate::media::stats::Quantiles;
use crate::net::certs::Authority;
use crate::net::tls::client_config;
use crate::netsim::link::{GilbertElliott, LinkConfig};
use crate::netsim::proxy::{ProxyStats, UdpProxy};
use crate::protocol::Role;
use crate::queue::QueueConfig;
use crate::systemd::Notifier;

/// A gap between shown pictures longer than this is a freeze (about five frames at 30 fps).
pub const FREEZE_GAP: Duration = Duration::from_millis(170);

/// One network condition, for both directions of the kiosk's path.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub link: LinkConfig,
    /// When the outage starts after the call connects, and how long it lasts.
    pub outage: Option<(Duration, Duration)>,
}

/// The named scenarios.
pub fn named(name: &str, seed: u64) -> Option<Scenario> {
    let ms = Duration::from_millis;
    let base = LinkConfig { seed, ..LinkConfig::default() };
    let link = match name {
        "clean" => base,
        "rtt80" => LinkConfig { delay: ms(40), jitter: ms(10), ..base },
        "loss5" => LinkConfig { loss: 0.05, ..base },
        "loss20" => LinkConfig { loss: 0.20, ..base },
        "burst" => LinkConfig { burst: Some(GilbertElliott::from_mean(10.0, 4.0)), ..base },
        "cap500" => LinkConfig { rate_bps: Some(500_000), queue_bytes: 64 * 1024, ..base },
        "outage3s" => base,
        "mobile" => LinkConfig {
            delay: ms(60),
            jitter: ms(20),
            loss: 0.03,
            rate_bps: Some(1_500_000),
            queue_bytes: 128 * 1024,
            ..base
        },
        _ => return None,
    };
    let outage = (name == "outage3s").then_some((Duration::from_secs(8), Duration::from_secs(3)));
    Some(Scenario { name: name.into(), link, outage })
}

pub const SCENARIOS: [&str; 8] =
    ["clean", "rtt80", "loss5", "loss20", "burst", "cap500", "outage3s", "mobile"];

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub scenario: String,
    pub duration_s: f64,
    pub audio_frames_played_pct: f64,
    pub audio_concealed_pct: f64,
    pub audio_latency_ms: Quantiles,
    /// Video latency of the frames shown after the first 5 s (once adapted to the path).
    pub video_latency_after_5s_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    pub video_frames_displayed_pct: f64,
    pub video_freezes: u32,
    pub longest_freeze_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<f64>,
    pub mean_bitrate_kbps: f64,
    /// Video frames received and decoded (both directions), and keyframes asked for.
    pub video_frames_received: u64,
    pub video_frames_decoded: u64,
    pub keyframe_requests: u64,
    pub video_frames_send_dropped: u64,
    /// Copies of earlier audio frames sent as redundancy (both directions), from loss reports.
    pub audio_copies_sent: u64,
    pub call_dropped: bool,
    pub errors: Vec<String>,
    /// The same figures for each direction: what the agent received from the kiosk, and back.
    pub to_agent: DirectionFigures,
    pub to_kiosk: DirectionFigures,
    /// What the impaired path did to the packets (up: kiosk → hub).
    pub path: ProxyStats,
}

/// What one side received from the other.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionFigures {
    pub audio_frames_played_pct: f64,
    pub audio_concealed_pct: f64,
    /// Of the frames played, those played time-compressed while the delay came down.
    pub audio_accelerated_pct: f64,
    pub audio_latency_ms: Quantiles,
    pub video_latency_ms: Quantiles,
    pub video_latency_after_5s_ms: Quantiles,
    pub video_frames_displayed_pct: f64,
    pub keyframe_requests: u64,
    /// What the sender sent (kbit/s).
    pub sent_kbps: f64,
}

impl DirectionFigures {
    /// `rx` received what `tx` sent.
    fn of(tx: &MediaStats, rx: &MediaStats) -> Self {
        let played = rx.audio_frames_played + rx.audio_frames_recovered_fec;
        Self {
            audio_frames_played_pct: pct(played, tx.audio_frames_sent),
            audio_concealed_pct: pct(rx.audio_frames_concealed, tx.audio_frames_sent),
            audio_accelerated_pct: pct(rx.audio_frames_accelerated, tx.audio_frames_sent),
            audio_latency_ms: rx.audio_latency.quantiles(),
            video_latency_ms: rx.video_latency.quantiles(),
            video_latency_after_5s_ms: rx.video_latency_settled.quantiles(),
            video_frames_displayed_pct: pct(rx.video_frames_displayed, tx.video_frames_sent),
            keyframe_requests: rx.keyframe_requests,
            sent_kbps: (tx.bytes_sent as f64 * 8.0 / tx.duration_s.max(0.001) / 1000.0).round(),
        }
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { (a as f64 * 1000.0 / b as f64).round() / 10.0 }
}

/// Runs one call of `duration` under `scenario`.
pub async fn run(
    scenario: &Scenario,
    duration: Duration,
    video: VideoSettings,
) -> anyhow::Result<BenchResult> {
    let ca = Authority::generate("kioskd bench CA", 1)?;
    let dir = std::env::temp_dir().join(format!("kioskd-bench-{}-{}", std::process::id(), scenario.name));
    std::fs::create_dir_all(&dir)?;
    let hub_cert =
        ca.issue(Role::Hub, "hub.bench", &["localhost".into()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], 1)?;
    let hub = hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: hub_cert.material(&ca)?,
        queue: QueueConfig { kiosk_grace: Duration::from_secs(15), ..QueueConfig::default() },
        event_log: dir.join("events.jsonl"),
        metrics: None,
        recording: None,
    })
    .await?;
    let mut down = scenario.link.clone();
    down.seed = scenario.link.seed.wrapping_add(1);
    let proxy = UdpProxy::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        hub.local_addr,
        scenario.link.clone(),
        down,
    )
    .await?;
    let opts = MediaOptions { video, ..MediaOptions::default() };
    let (stop_tx, stop_rx) = watch::channel(false);

    let target = |role: Role, id: &str, addr: SocketAddr| -> anyhow::Result<HubTarget> {
        Ok(HubTarget {
            address: addr.to_string(),
            server_name: "localhost".into(),
            client: client_config(&ca.issue(role, id, &[], &[], 1)?.material(&ca)?)?,
        })
    };
    let (agent_tx, mut agent_rx) = mpsc::unbounded_channel();
    let (_cmd_tx, cmd_rx) = mpsc::channel::<AgentCommand>(1);
    let auto =
        AutoAnswer { answer_delay: Duration::from_millis(50), call_duration: Some(duration), greeting: None };
    let io = AgentIo {
        commands: cmd_rx,
        observer: Some(agent_tx),
        print: false,
        media: synthetic_devices(660.0, video),
        media_options: opts.clone(),
    };
    let agent = tokio::spawn(agent::run(
        target(Role::Agent, "agent-1", hub.local_addr)?,
        Some(auto),
        io,
        stop_rx.clone(),
    ));

    let (backend, panel) = SimulatedButtons::new(false);
    let presses = buttons::spawn(Box::new(backend), Duration::from_millis(50))?;
    let (kiosk_tx, mut kiosk_rx) = mpsc::unbounded_channel();
    let io = KioskIo {
        buttons: presses,
        texts: None,
        observer: Some(kiosk_tx),
        leds: None,
        notifier: Notifier::disabled(),
        media: synthetic_devices(440.0, video),
        media_options: opts,
        device_problems: vec![],
        health_file: None,
        reload: None,
    };
    let kopts = KioskOptions {
        call: CallConfig {
            ended_screen: Duration::from_millis(300),
            busy_screen: Duration::from_secs(1),
            ..CallConfig::default()
        },
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(1000),
    };
    let kiosk = tokio::spawn(kiosk::run(
        target(Role::Kiosk, "branch-1/kiosk-1", proxy.local_addr())?,
        kopts,
        io,
        stop_rx,
    ));

    let mut errors = Vec::new();
    let limit = tokio::time::Instant::now() + duration + Duration::from_secs(40);
    // Wait for the agent to be IDLE and the kiosk idle, then call.
    let mut agent_idle = false;
    let mut kiosk_idle = false;
    let mut kiosk_stats: Vec<MediaStats> = Vec::new();
    let mut agent_stats: Option<MediaStats> = None;
    let mut connected_at: Option<u64> = None;
    let mut outage_end_us: Option<u64> = None;
    let mut ended_reason = None;
    let mut pressed = false;
    loop {
        tokio::select! {
            ev = agent_rx.recv() => match ev {
                Some(AgentEvent::Room { state, .. }) => agent_idle = state == crate::protocol::RoomState::Idle,
                Some(AgentEvent::Media { stats, .. }) => agent_stats = Some(*stats),
                Some(AgentEvent::Ended { reason, .. }) => ended_reason = Some(reason),
                Some(_) => {}
                None => break,
            },
            ev = kiosk_rx.recv() => match ev {
                Some(KioskEvent::State { state, .. }) => match state {
                    KioskState::Idle => kiosk_idle = true,
                    KioskState::Connected { .. } if connected_at.is_none() => {
                        connected_at = Some(unix_micros_now());
                        if let Some((after, length)) = scenario.outage {
                            // The outage windows count from now on both directions.
                            let mut cut = scenario.link.clone();
                            cut.outages = vec![(after, length)];
                            let mut cut_down = cut.clone();
                            cut_down.seed = cut.seed.wrapping_add(1);
                            proxy.set_config(crate::netsim::proxy::Direction::Up, cut)?;
                            proxy.set_config(crate::netsim::proxy::Direction::Down, cut_down)?;
                            outage_end_us = Some(unix_micros_now() + (after + length).as_micros() as u64);
                        }
                    }
                    _ => {}
                },
                Some(KioskEvent::Media { stats, .. }) => kiosk_stats.push(*stats),
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(limit) => {
                errors.push("the call did not finish in time".into());
                break;
            }
        }
        if agent_idle && kiosk_idle && !pressed {
            pressed = true;
            panel.press(Button::Call);
        }
        if agent_stats.is_some() && !kiosk_stats.is_empty() && ended_reason.is_some() {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), kiosk).await;
    hub.shutdown().await;
    let path = proxy.stats();
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    // The kiosk side may have had several media sessions (a reconnect); add them up.
    let agent = agent_stats.unwrap_or_default();
    let mut kiosk = MediaStats::default();
    for k in &kiosk_stats {
        kiosk.audio_frames_sent += k.audio_frames_sent;
        kiosk.audio_frames_played += k.audio_frames_played;
        kiosk.audio_frames_concealed += k.audio_frames_concealed;
        kiosk.audio_frames_recovered_fec += k.audio_frames_recovered_fec;
        kiosk.audio_frames_accelerated += k.audio_frames_accelerated;
        kiosk.audio_copies_sent += k.audio_copies_sent;
        kiosk.video_frames_sent += k.video_frames_sent;
        kiosk.video_frames_displayed += k.video_frames_displayed;
        kiosk.video_frames_received += k.video_frames_received;
        kiosk.video_frames_decoded += k.video_frames_decoded;
        kiosk.keyframe_requests += k.keyframe_requests;
        kiosk.video_frames_send_dropped += k.video_frames_send_dropped;
        kiosk.bytes_sent += k.bytes_sent;
        kiosk.duration_s += k.duration_s;
        kiosk.audio_latency.merge(&k.audio_latency);
        kiosk.video_latency.merge(&k.video_latency);
        kiosk.video_latency_settled.merge(&k.video_latency_settled);
        kiosk.display_times_us.extend(&k.display_times_us);
    }
    // Figures over both directions: kiosk → agent (received by the agent) and back.
    let audio_sent = kiosk.audio_frames_sent + agent.audio_frames_sent;
    // Played: decoded, or rebuilt from the next packet's in-band FEC; not concealed.
    let audio_played = agent.audio_frames_played
        + kiosk.audio_frames_played
        + agent.audio_frames_recovered_fec
        + kiosk.audio_frames_recovered_fec;
    let concealed = agent.audio_frames_concealed + kiosk.audio_frames_concealed;
    let video_sent = kiosk.video_frames_sent + agent.video_frames_sent;
    let video_shown = agent.video_frames_displayed + kiosk.video_frames_displayed;
    let mut audio_lat = agent.audio_latency.clone();
    audio_lat.merge(&kiosk.audio_latency);
    let mut video_lat = agent.video_latency.clone();
    video_lat.merge(&kiosk.video_latency);
    let mut video_settled = agent.video_latency_settled.clone();
    video_settled.merge(&kiosk.video_latency_settled);
    let mut freezes = 0u32;
    let mut longest = 0u64;
    let mut recovery = None;
    for times in [&agent.display_times_us, &kiosk.display_times_us] {
        for w in times.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            if gap > FREEZE_GAP.as_micros() as u64 {
                freezes += 1;
                longest = longest.max(gap);
            }
        }
        if let Some(end) = outage_end_us
            && let Some(first) = times.iter().find(|&&t| t >= end)
        {
            let r = first.saturating_sub(end) as f64 / 1000.0;
            recovery = Some(recovery.map_or(r, |x: f64| x.max(r)));
        }
    }
    let secs = (agent.duration_s + kiosk.duration_s).max(0.001);
    let call_dropped = !matches!(ended_reason, Some(crate::protocol::EndReason::AgentHungUp));
    if call_dropped {
        errors.push(format!("call ended by {:?}", ended_reason));
    }
    Ok(BenchResult {
        scenario: scenario.name.clone(),
        duration_s: (agent.duration_s * 10.0).round() / 10.0,
        audio_frames_played_pct: pct(audio_played, audio_sent),
        audio_concealed_pct: pct(concealed, audio_sent),
        audio_latency_ms: audio_lat.quantiles(),
        video_latency_ms: video_lat.quantiles(),
        video_latency_after_5s_ms: video_settled.quantiles(),
        video_frames_displayed_pct: pct(video_shown, video_sent),
        video_freezes: freezes,
        longest_freeze_ms: longest as f64 / 1000.0,
        recovery_ms: recovery,
        mean_bitrate_kbps: ((kiosk.bytes_sent + agent.bytes_sent) as f64 * 8.0 / secs / 1000.0).round(),
        video_frames_received: kiosk.video_frames_received + agent.video_frames_received,
        video_frames_decoded: kiosk.video_frames_decoded + agent.video_frames_decoded,
        keyframe_requests: kiosk.keyframe_requests + agent.keyframe_requests,
        audio_copies_sent: kiosk.audio_copies_sent + agent.audio_copies_sent,
        video_frames_send_dropped: kiosk.video_frames_send_dropped + agent.video_frames_send_dropped,
        call_dropped,
        errors,
        to_agent: DirectionFigures::of(&kiosk, &agent),
        to_kiosk: DirectionFigures::of(&agent, &kiosk),
        path,
    })
}
