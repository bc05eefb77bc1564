//! `kioskd bench`: a full two-way call through the network impairment proxy, per scenario,
//! printing one JSON object per scenario.
//!
//! The kiosk reaches the hub through the proxy (both directions of its path impaired); the
//! agent is on the bank's network (direct). Figures are taken at the receiving ends, on one
//! clock (one process).

pub mod load;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::call::{Button, CallConfig, KioskState};
use crate::edges::devices::buttons::{self, simulated::SimulatedButtons};
use crate::edges::devices::unix_micros_now;
use crate::edges::net::certs::Authority;
use crate::edges::net::client::HubTarget;
use crate::edges::net::tls::client_config;
use crate::edges::netsim::{ProxyStats, UdpProxy};
use crate::edges::session::{MediaOptions, MediaStats, synthetic_devices};
use crate::edges::systemd::Notifier;
use crate::media::codec::VideoSettings;
use crate::media::stats::Quantiles;
use crate::netsim::link::{GilbertElliott, LinkConfig};
use crate::protocol::Role;
use crate::queue::QueueConfig;
use crate::roles::agent::{self, AgentCommand, AgentEvent, AgentIo, AutoAnswer};
use crate::roles::hub::{self, HubOptions};
use crate::roles::kiosk::{self, KioskEvent, KioskIo, KioskOptions};

/// A gap between shown pictures longer than this is a freeze (about five frames at 30 fps).
pub const FREEZE_GAP: Duration = Duration::from_millis(170);

/// A picture shown later than this after its capture counts as not yet adapted to the path
/// (the `cap500` target: video p95 ≤ 400 ms once adapted).
pub const ADAPTED_LATENCY_MS: u32 = 400;

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
    /// Outage scenarios: from the network's return to the first fresh picture shown (captured
    /// after the return; the later of the two directions); `null` without an outage.
    pub recovery_ms: Option<f64>,
    /// From the start of the media to the first picture after which every picture was shown
    /// within [`ADAPTED_LATENCY_MS`] of its capture (the later of the two directions); 0 when
    /// none was later, `null` when no picture was shown.
    pub video_adapted_ms: Option<f64>,
    /// Outage scenarios: a text sent each way in the middle of the outage.
    pub outage_texts: Option<OutageTexts>,
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

/// The texts sent during an outage (one each way, halfway through it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutageTexts {
    pub sent: u32,
    pub delivered: u32,
    /// From the network's return to the later of the two texts shown.
    pub delivered_after_outage_ms: Option<f64>,
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
    /// Steps the sender's video ladder took (bitrate, frame rate, size, audio only).
    pub video_rung_changes: u64,
    /// Outage scenarios: from the network's return to the first fresh picture shown.
    pub recovery_ms: Option<f64>,
    /// See [`BenchResult::video_adapted_ms`].
    pub video_adapted_ms: Option<f64>,
    /// The freezes: when each began (seconds from the start of the media) and how long it
    /// lasted (ms); the first 20.
    pub freezes: Vec<(f64, f64)>,
    /// What the sender sent (kbit/s).
    pub sent_kbps: f64,
}

impl DirectionFigures {
    /// `rx` received what `tx` sent; the network came back at `outage_end_us`.
    /// The call ended at `ended_us` (a picture not shown since then is a freeze to the end).
    fn of(tx: &MediaStats, rx: &MediaStats, outage_end_us: Option<u64>, ended_us: u64) -> Self {
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
            video_rung_changes: tx.video_rung_changes,
            recovery_ms: outage_end_us
                .and_then(|end| recovery_after(&rx.display_times_us, &rx.display_latency_ms, end)),
            video_adapted_ms: adapted_after(rx.started_us, &rx.display_times_us, &rx.display_latency_ms),
            freezes: freezes(&rx.display_times_us, ended_us)
                .take(20)
                .map(|(at, gap)| {
                    let secs = at.saturating_sub(rx.started_us) as f64 / 1e6;
                    ((secs * 100.0).round() / 100.0, ms_1dp(gap))
                })
                .collect(),
            sent_kbps: (tx.bytes_sent as f64 * 8.0 / tx.duration_s.max(0.001) / 1000.0).round(),
        }
    }
}

/// The texts the bench sends during an outage.
const OUTAGE_TEXT_TO_KIOSK: &str = "(sent by the agent during the outage)";
const OUTAGE_TEXT_TO_AGENT: &str = "(sent by the kiosk during the outage)";

/// The gaps between shown pictures longer than [`FREEZE_GAP`], and from the last one to the
/// call's end at `ended_us`: (when the picture before the gap was shown, gap µs).
pub fn freezes(times: &[u64], ended_us: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let tail = times.last().map(|&last| (last, ended_us.saturating_sub(last)));
    times
        .windows(2)
        .map(|w| (w[0], w[1].saturating_sub(w[0])))
        .chain(tail)
        .filter(|&(_, gap)| gap > FREEZE_GAP.as_micros() as u64)
}

/// From `end_us` (the network's return) to the first fresh picture shown, one captured at or
/// after it, in ms (a picture captured before it and shown after it is not a recovery).
/// `times` and `latency_ms` are the shown pictures (same index).
pub fn recovery_after(times: &[u64], latency_ms: &[u32], end_us: u64) -> Option<f64> {
    let first = times
        .iter()
        .zip(latency_ms)
        .find(|&(&shown, &latency)| shown.saturating_sub(u64::from(latency) * 1000) >= end_us)?
        .0;
    Some(ms_1dp(first.saturating_sub(end_us)))
}

/// From `started_us` to the first picture after which every picture shown was within
/// [`ADAPTED_LATENCY_MS`] of its capture: 0 when none was later, `None` when none was shown;
/// when the last picture itself was late, its time (it had not adapted by then).
/// `times` and `latency_ms` are the shown pictures in order (same index).
pub fn adapted_after(started_us: u64, times: &[u64], latency_ms: &[u32]) -> Option<f64> {
    if times.is_empty() {
        return None;
    }
    let Some(last_late) = latency_ms.iter().rposition(|&l| l > ADAPTED_LATENCY_MS) else {
        return Some(0.0);
    };
    // The first picture in time after the last late one (or the end of the log).
    let at = times.get(last_late + 1).or(times.last()).copied().unwrap_or(started_us);
    Some(ms_1dp(at.saturating_sub(started_us)))
}

/// Microseconds as milliseconds with one decimal.
fn ms_1dp(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
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
    let (cmd_tx, cmd_rx) = mpsc::channel::<AgentCommand>(4);
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
    let (kiosk_text_tx, kiosk_text_rx) = mpsc::channel::<String>(4);
    let io = KioskIo {
        buttons: presses,
        texts: Some(kiosk_text_rx),
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
    let mut outage_end: Option<tokio::time::Instant> = None;
    // Halfway through the outage, each side sends a text; when each was shown.
    let mut text_at: Option<tokio::time::Instant> = None;
    let mut texts = scenario.outage.map(|_| OutageTexts::default());
    let mut texts_shown: Vec<tokio::time::Instant> = Vec::new();
    let mut ended_reason = None;
    let mut ended_us: Option<u64> = None;
    // The kiosk's media sessions (one per stretch of Connected on a live link; a reconnect
    // during the call makes another) and the reports of those that ended.
    let (mut kiosk_connected, mut kiosk_sessions) = (false, 0usize);
    let mut pressed = false;
    loop {
        let text_due = async {
            match text_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = agent_rx.recv() => match ev {
                Some(AgentEvent::Room { state, .. }) => agent_idle = state == crate::protocol::RoomState::Idle,
                Some(AgentEvent::Media { stats, .. }) => agent_stats = Some(*stats),
                Some(AgentEvent::Ended { reason, .. }) => {
                    ended_reason = Some(reason);
                    ended_us.get_or_insert_with(unix_micros_now);
                }
                Some(AgentEvent::TextReceived { body, at, .. }) if body == OUTAGE_TEXT_TO_AGENT => {
                    texts_shown.push(at);
                }
                Some(_) => {}
                None => break,
            },
            () = text_due => {
                text_at = None;
                let sent = cmd_tx.try_send(AgentCommand::Say(OUTAGE_TEXT_TO_KIOSK.into())).is_ok() as u32
                    + kiosk_text_tx.try_send(OUTAGE_TEXT_TO_AGENT.into()).is_ok() as u32;
                if let Some(t) = texts.as_mut() {
                    t.sent = sent;
                }
            }
            ev = kiosk_rx.recv() => match ev {
                Some(KioskEvent::State { state, .. }) => {
                let now_connected = matches!(state, KioskState::Connected { .. });
                if now_connected && !kiosk_connected {
                    kiosk_sessions += 1;
                }
                kiosk_connected = now_connected;
                match state {
                    KioskState::Idle => kiosk_idle = true,
                    KioskState::Connected { .. } if connected_at.is_none() => {
                        connected_at = Some(unix_micros_now());
                        if let Some((after, length)) = scenario.outage {
                            // The outage windows count from now on both directions.
                            let mut cut = scenario.link.clone();
                            cut.outages = vec![(after, length)];
                            let mut cut_down = cut.clone();
                            cut_down.seed = cut.seed.wrapping_add(1);
                            proxy.set_config(crate::edges::netsim::Direction::Up, cut)?;
                            proxy.set_config(crate::edges::netsim::Direction::Down, cut_down)?;
                            outage_end_us = Some(unix_micros_now() + (after + length).as_micros() as u64);
                            let now = tokio::time::Instant::now();
                            outage_end = Some(now + after + length);
                            text_at = Some(now + after + length / 2);
                        }
                    }
                    _ => {}
                }
                }
                Some(KioskEvent::Media { stats, .. }) => kiosk_stats.push(*stats),
                Some(KioskEvent::TextReceived { body, at, .. }) if body == OUTAGE_TEXT_TO_KIOSK => {
                    texts_shown.push(at);
                }
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
        // Over when the call ended and every media session of the kiosk has reported.
        if agent_stats.is_some()
            && ended_reason.is_some()
            && !kiosk_connected
            && kiosk_sessions > 0
            && kiosk_stats.len() >= kiosk_sessions
        {
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
        if kiosk.started_us == 0 {
            kiosk.started_us = k.started_us;
        }
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
        kiosk.video_rung_changes += k.video_rung_changes;
        kiosk.video_frames_send_dropped += k.video_frames_send_dropped;
        kiosk.bytes_sent += k.bytes_sent;
        kiosk.duration_s += k.duration_s;
        kiosk.audio_latency.merge(&k.audio_latency);
        kiosk.video_latency.merge(&k.video_latency);
        kiosk.video_latency_settled.merge(&k.video_latency_settled);
        kiosk.display_times_us.extend(&k.display_times_us);
        kiosk.display_latency_ms.extend(&k.display_latency_ms);
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
    // The call's end (or now, when it did not end): a picture missing since is a freeze too.
    let ended_us = ended_us.unwrap_or_else(unix_micros_now);
    let mut freezes_n = 0u32;
    let mut longest = 0u64;
    for times in [&agent.display_times_us, &kiosk.display_times_us] {
        for (_, gap) in freezes(times, ended_us) {
            freezes_n += 1;
            longest = longest.max(gap);
        }
    }
    let to_agent = DirectionFigures::of(&kiosk, &agent, outage_end_us, ended_us);
    let to_kiosk = DirectionFigures::of(&agent, &kiosk, outage_end_us, ended_us);
    for (way, d) in [("to the agent", &to_agent), ("to the kiosk", &to_kiosk)] {
        if outage_end_us.is_some() && d.recovery_ms.is_none() {
            errors.push(format!("no picture {way} after the outage"));
        }
    }
    let later = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let recovery = later(to_agent.recovery_ms, to_kiosk.recovery_ms);
    let video_adapted_ms = later(to_agent.video_adapted_ms, to_kiosk.video_adapted_ms);
    if let (Some(t), Some(end)) = (texts.as_mut(), outage_end) {
        t.delivered = texts_shown.len() as u32;
        t.delivered_after_outage_ms = texts_shown
            .iter()
            .map(|&at| at.saturating_duration_since(end).as_secs_f64() * 1000.0)
            .reduce(f64::max)
            .map(|ms| (ms * 10.0).round() / 10.0);
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
        video_freezes: freezes_n,
        longest_freeze_ms: longest as f64 / 1000.0,
        recovery_ms: recovery,
        video_adapted_ms,
        outage_texts: texts,
        mean_bitrate_kbps: ((kiosk.bytes_sent + agent.bytes_sent) as f64 * 8.0 / secs / 1000.0).round(),
        video_frames_received: kiosk.video_frames_received + agent.video_frames_received,
        video_frames_decoded: kiosk.video_frames_decoded + agent.video_frames_decoded,
        keyframe_requests: kiosk.keyframe_requests + agent.keyframe_requests,
        audio_copies_sent: kiosk.audio_copies_sent + agent.audio_copies_sent,
        video_frames_send_dropped: kiosk.video_frames_send_dropped + agent.video_frames_send_dropped,
        call_dropped,
        errors,
        to_agent,
        to_kiosk,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    #[test]
    fn adapted_is_the_first_picture_after_the_last_late_one() {
        // Pictures every 100 ms from 1 s; the third and fifth were late.
        let times: Vec<u64> = (0..8).map(|i| T0 + 1_000_000 + i * 100_000).collect();
        let latency = [100, 200, 900, 300, 401, 120, 110, 100];
        assert_eq!(adapted_after(T0, &times, &latency), Some(1500.0));
        // None late: adapted from the start.
        assert_eq!(adapted_after(T0, &times, &[100; 8]), Some(0.0));
        // Exactly at the limit is in time.
        assert_eq!(adapted_after(T0, &times, &[ADAPTED_LATENCY_MS; 8]), Some(0.0));
        // The last picture late: not adapted before the end of the log.
        let mut late_end = [100; 8];
        late_end[7] = 1000;
        assert_eq!(adapted_after(T0, &times, &late_end), Some(1700.0));
        assert_eq!(adapted_after(T0, &[], &[]), None);
    }

    #[test]
    fn recovery_is_the_first_picture_captured_after_the_return() {
        let end = T0 + 1_000_000;
        // Shown after the return, but captured before it (80 ms old at 40 ms after): not yet.
        let times = [end - 500_000, end + 40_000, end + 120_000, end + 153_000];
        let latency = [60, 80, 70, 70];
        assert_eq!(recovery_after(&times, &latency, end), Some(120.0));
        assert_eq!(recovery_after(&times[..2], &latency[..2], end), None);
    }

    #[test]
    fn a_picture_missing_until_the_end_is_a_freeze() {
        let times: Vec<u64> = (0..10).map(|i| T0 + i * 33_000).collect();
        let last = T0 + 9 * 33_000;
        assert_eq!(freezes(&times, last + 20_000).count(), 0);
        assert_eq!(freezes(&times, last + 2_000_000).collect::<Vec<_>>(), vec![(last, 2_000_000)]);
        let mut gap = times.clone();
        gap.push(last + 500_000);
        assert_eq!(freezes(&gap, last + 500_000).collect::<Vec<_>>(), vec![(last, 500_000)]);
        assert_eq!(freezes(&[], T0).count(), 0);
    }

    #[test]
    fn every_named_scenario_exists_and_only_outage3s_has_an_outage() {
        for name in SCENARIOS {
            let s = named(name, 1).expect(name);
            assert_eq!(s.outage.is_some(), name == "outage3s", "{name}");
        }
        assert!(named("nonsense", 1).is_none());
    }
}
