//! One bench call: a hub, an agent on the bank's network and a kiosk behind the impairment
//! proxy, in one process; the call placed, the outage (if any) cut into its path, a text sent
//! each way during it, and everything the two sides report collected.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Scenario;
use super::figures::OutageTexts;
use crate::call::{Button, CallConfig, KioskState};
use crate::edges::devices::buttons::{self, simulated::Panel, simulated::SimulatedButtons};
use crate::edges::devices::unix_micros_now;
use crate::edges::net::certs::{Authority, EPHEMERAL_DAYS};
use crate::edges::net::client::HubTarget;
use crate::edges::net::tls::client_config;
use crate::edges::netsim::{Direction, ProxyStats, UdpProxy};
use crate::edges::session::{MediaOptions, MediaStats, synthetic_devices};
use crate::media::codec::VideoSettings;
use crate::protocol::{EndReason, Role, RoomState};
use crate::queue::QueueConfig;
use crate::roles::agent::{self, AgentCommand, AgentError, AgentEvent, AgentIo, AutoAnswer};
use crate::roles::hub::{self, HubOptions, RunningHub};
use crate::roles::kiosk::{self, KioskEvent, KioskIo, KioskOptions};

/// The texts the bench sends during an outage.
const OUTAGE_TEXT_TO_KIOSK: &str = "(sent by the agent during the outage)";
const OUTAGE_TEXT_TO_AGENT: &str = "(sent by the kiosk during the outage)";

/// Beyond the call itself, this long for connecting, reconnecting and the figures.
const SLACK: Duration = Duration::from_secs(40);

/// The hub, the proxy, and the two sides' tasks and hands.
pub(super) struct Rig {
    dir: PathBuf,
    hub: RunningHub,
    proxy: crate::edges::netsim::RunningProxy,
    stop: watch::Sender<bool>,
    agent: JoinHandle<Result<(), AgentError>>,
    kiosk: JoinHandle<anyhow::Result<()>>,
    agent_events: mpsc::UnboundedReceiver<AgentEvent>,
    kiosk_events: mpsc::UnboundedReceiver<KioskEvent>,
    agent_commands: mpsc::Sender<AgentCommand>,
    kiosk_texts: mpsc::Sender<String>,
    panel: Panel,
}

/// What the loop saw of the call.
#[derive(Default)]
pub(super) struct Observed {
    pub agent_stats: Option<MediaStats>,
    /// One per media session of the kiosk (one per stretch of Connected on a live link).
    pub kiosk_stats: Vec<MediaStats>,
    pub ended_reason: Option<EndReason>,
    pub ended_us: Option<u64>,
    /// When the network came back (unix µs, and on the runtime's clock).
    pub outage_end_us: Option<u64>,
    outage_end: Option<Instant>,
    /// Halfway through the outage each side sends a text; when each was shown.
    text_at: Option<Instant>,
    texts: Option<OutageTexts>,
    texts_shown: Vec<Instant>,
    pub errors: Vec<String>,
    agent_idle: bool,
    kiosk_idle: bool,
    pressed: bool,
    kiosk_connected: bool,
    kiosk_sessions: usize,
}

impl Observed {
    /// The call ended and every media session of the kiosk has reported.
    fn over(&self) -> bool {
        self.agent_stats.is_some()
            && self.ended_reason.is_some()
            && !self.kiosk_connected
            && self.kiosk_sessions > 0
            && self.kiosk_stats.len() >= self.kiosk_sessions
    }

    pub(super) fn outage_texts(&self) -> Option<OutageTexts> {
        let texts = self.texts.clone()?;
        Some(match self.outage_end {
            Some(end) => texts.with_shown(&self.texts_shown, end),
            None => texts,
        })
    }
}

impl Rig {
    pub(super) async fn start(
        scenario: &Scenario,
        duration: Duration,
        video: VideoSettings,
    ) -> anyhow::Result<Self> {
        let ca = Authority::generate("kioskd bench CA", EPHEMERAL_DAYS)?;
        let dir = std::env::temp_dir().join(format!("kioskd-bench-{}-{}", std::process::id(), scenario.name));
        std::fs::create_dir_all(&dir)?;
        let hub_cert = ca.issue(
            Role::Hub,
            "hub.bench",
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            EPHEMERAL_DAYS,
        )?;
        let hub = hub::start(HubOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: hub_cert.material(&ca)?,
            queue: QueueConfig { kiosk_grace: Duration::from_secs(15), ..QueueConfig::default() },
            event_log: dir.join("events.jsonl"),
            metrics: None,
            recording: None,
            crl: None,
            admission: Default::default(),
            renewal: None,
            database: None,
            console: None,
        })
        .await?;
        let mut down = scenario.link.clone();
        down.seed = scenario.link.seed.wrapping_add(1);
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let proxy = UdpProxy::start(loopback, hub.local_addr, scenario.link.clone(), down).await?;
        let opts = MediaOptions { video, ..MediaOptions::default() };
        let (stop, stop_rx) = watch::channel(false);
        let target = |role: Role, id: &str, addr: SocketAddr| -> anyhow::Result<HubTarget> {
            Ok(HubTarget {
                addresses: vec![addr.to_string()],
                server_name: "localhost".into(),
                client: client_config(&ca.issue(role, id, &[], &[], EPHEMERAL_DAYS)?.material(&ca)?)?,
                silent: crate::edges::net::client::HUB_SILENT,
            })
        };
        let agent_target = target(Role::Agent, "agent-1", hub.local_addr)?;
        let (agent, agent_events, agent_commands) =
            spawn_agent(agent_target, duration, &opts, stop_rx.clone());
        let kiosk_target = target(Role::Kiosk, "branch-1/kiosk-1", proxy.local_addr())?;
        let (kiosk, kiosk_events, kiosk_texts, panel) = spawn_kiosk(kiosk_target, opts, stop_rx)?;
        Ok(Self {
            dir,
            hub,
            proxy,
            stop,
            agent,
            kiosk,
            agent_events,
            kiosk_events,
            agent_commands,
            kiosk_texts,
            panel,
        })
    }

    /// Places the call once both sides are ready and follows it until it is over (or the time
    /// limit).
    pub(super) async fn follow(
        &mut self,
        scenario: &Scenario,
        duration: Duration,
    ) -> anyhow::Result<Observed> {
        let mut seen =
            Observed { texts: scenario.outage.map(|_| OutageTexts::default()), ..Observed::default() };
        let limit = Instant::now() + duration + SLACK;
        loop {
            let text_at = seen.text_at;
            let text_due = async {
                match text_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.agent_events.recv() => match ev {
                    Some(ev) => on_agent(&mut seen, ev),
                    None => break,
                },
                () = text_due => self.send_outage_texts(&mut seen),
                ev = self.kiosk_events.recv() => match ev {
                    Some(ev) => self.on_kiosk(&mut seen, ev, scenario)?,
                    None => break,
                },
                () = tokio::time::sleep_until(limit) => {
                    seen.errors.push("the call did not finish in time".into());
                    break;
                }
            }
            if seen.agent_idle && seen.kiosk_idle && !seen.pressed {
                seen.pressed = true;
                self.panel.press(Button::Call);
            }
            if seen.over() {
                break;
            }
        }
        Ok(seen)
    }

    fn send_outage_texts(&self, seen: &mut Observed) {
        seen.text_at = None;
        let sent = self.agent_commands.try_send(AgentCommand::Say(OUTAGE_TEXT_TO_KIOSK.into())).is_ok()
            as u32
            + self.kiosk_texts.try_send(OUTAGE_TEXT_TO_AGENT.into()).is_ok() as u32;
        if let Some(t) = seen.texts.as_mut() {
            t.sent = sent;
        }
    }

    fn on_kiosk(&self, seen: &mut Observed, ev: KioskEvent, scenario: &Scenario) -> anyhow::Result<()> {
        match ev {
            KioskEvent::State { state, .. } => {
                let now_connected = matches!(state, KioskState::Connected { .. });
                if now_connected && !seen.kiosk_connected {
                    seen.kiosk_sessions += 1;
                }
                seen.kiosk_connected = now_connected;
                match state {
                    KioskState::Idle => seen.kiosk_idle = true,
                    KioskState::Connected { .. } if seen.outage_end.is_none() && seen.kiosk_sessions == 1 => {
                        if let Some((after, length)) = scenario.outage {
                            self.cut(seen, scenario, after, length)?;
                        }
                    }
                    _ => {}
                }
            }
            KioskEvent::Media { stats, .. } => seen.kiosk_stats.push(*stats),
            KioskEvent::TextReceived { body, at, .. } if body == OUTAGE_TEXT_TO_KIOSK => {
                seen.texts_shown.push(at)
            }
            _ => {}
        }
        Ok(())
    }

    /// The outage windows count from the call's start, on both directions.
    fn cut(
        &self,
        seen: &mut Observed,
        scenario: &Scenario,
        after: Duration,
        length: Duration,
    ) -> anyhow::Result<()> {
        let mut cut = scenario.link.clone();
        cut.outages = vec![(after, length)];
        let mut cut_down = cut.clone();
        cut_down.seed = cut.seed.wrapping_add(1);
        self.proxy.set_config(Direction::Up, cut)?;
        self.proxy.set_config(Direction::Down, cut_down)?;
        seen.outage_end_us = Some(unix_micros_now() + (after + length).as_micros() as u64);
        let now = Instant::now();
        seen.outage_end = Some(now + after + length);
        seen.text_at = Some(now + after + length / 2);
        Ok(())
    }

    /// Stops both sides, the hub and the proxy; what the path did.
    pub(super) async fn stop(self) -> ProxyStats {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.agent).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.kiosk).await;
        self.hub.shutdown().await;
        let path = self.proxy.stats();
        self.proxy.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        path
    }
}

type AgentParts =
    (JoinHandle<Result<(), AgentError>>, mpsc::UnboundedReceiver<AgentEvent>, mpsc::Sender<AgentCommand>);

/// The agent: answers after 50 ms, hangs up after `duration`.
fn spawn_agent(
    target: HubTarget,
    duration: Duration,
    opts: &MediaOptions,
    stop: watch::Receiver<bool>,
) -> AgentParts {
    let (agent_tx, agent_events) = mpsc::unbounded_channel();
    let (agent_commands, cmd_rx) = mpsc::channel::<AgentCommand>(4);
    let auto =
        AutoAnswer { answer_delay: Duration::from_millis(50), call_duration: Some(duration), greeting: None };
    let io = AgentIo {
        commands: cmd_rx,
        observer: Some(agent_tx),
        print: false,
        media: synthetic_devices(660.0, opts.video),
        media_options: opts.clone(),
        renewal: None,
    };
    (tokio::spawn(agent::run(target, Some(auto), io, stop)), agent_events, agent_commands)
}

type KioskParts =
    (JoinHandle<anyhow::Result<()>>, mpsc::UnboundedReceiver<KioskEvent>, mpsc::Sender<String>, Panel);

/// The kiosk, with simulated buttons (no bounce) and texts from the bench.
fn spawn_kiosk(
    target: HubTarget,
    opts: MediaOptions,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<KioskParts> {
    let (backend, panel) = SimulatedButtons::new(false);
    let presses = buttons::spawn(Box::new(backend), Duration::from_millis(50))?;
    let (kiosk_tx, kiosk_events) = mpsc::unbounded_channel();
    let (kiosk_texts, kiosk_text_rx) = mpsc::channel::<String>(4);
    let io =
        KioskIo::in_process(presses, kiosk_text_rx, kiosk_tx, synthetic_devices(440.0, opts.video), opts);
    let kopts = KioskOptions {
        call: CallConfig {
            ended_screen: Duration::from_millis(300),
            busy_screen: Duration::from_secs(1),
            ..CallConfig::default()
        },
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(1000),
        renewal: None,
    };
    Ok((tokio::spawn(kiosk::run(target, kopts, io, stop)), kiosk_events, kiosk_texts, panel))
}

fn on_agent(seen: &mut Observed, ev: AgentEvent) {
    match ev {
        AgentEvent::Room { state, .. } => seen.agent_idle = state == RoomState::Idle,
        AgentEvent::Media { stats, .. } => seen.agent_stats = Some(*stats),
        AgentEvent::Ended { reason, .. } => {
            seen.ended_reason = Some(reason);
            seen.ended_us.get_or_insert_with(unix_micros_now);
        }
        AgentEvent::TextReceived { body, at, .. } if body == OUTAGE_TEXT_TO_AGENT => {
            seen.texts_shown.push(at)
        }
        _ => {}
    }
}
