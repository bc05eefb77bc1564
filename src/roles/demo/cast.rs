//! The demo's cast: a deployment CA, the hub, the agents and the kiosks, started in one
//! process on 127.0.0.1, and stopped again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{AGENT_TONE_HZ, DemoOptions, KIOSK_TONE_HZ};
use crate::call::CallConfig;
use crate::edges::devices::buttons::simulated::{Panel, SimulatedButtons};
use crate::edges::devices::buttons::{self};
use crate::edges::display::{Display, DisplayOptions, DisplayThread};
use crate::edges::net::certs::{Authority, EPHEMERAL_DAYS};
use crate::edges::net::client::HubTarget;
use crate::edges::net::tls::client_config;
use crate::edges::session::{MediaDevices, MediaOptions, synthetic_devices};
use crate::protocol::Role;
use crate::queue::QueueConfig;
use crate::record::RecordingOptions;
use crate::roles::agent::{self, AgentCommand, AgentEvent, AgentIo, AutoAnswer};
use crate::roles::hub::{self, HubOptions, HubStatus, RunningHub};
use crate::roles::kiosk::{self, KioskEvent, KioskIo, KioskOptions};
use crate::ui::UiSettings;

/// What the cast reports, by kiosk or agent index.
pub(super) enum Ev {
    Kiosk(usize, KioskEvent),
    Agent(usize, AgentEvent),
}

/// A kiosk's hands: its simulated buttons and the customer's texts.
pub(super) struct KioskHands {
    pub name: String,
    pub panel: Panel,
    pub texts: mpsc::Sender<String>,
}

/// Where the hub's event log goes: the path asked for, or a temporary folder removed at the end.
struct EventLog {
    path: PathBuf,
    tmp_dir: Option<PathBuf>,
}

/// The hub's threads: it runs on a runtime of its own, so that its CPU can be told apart from
/// the kiosks' and agents' in the same process.
pub(super) const HUB_THREADS: &str = "kioskd-hub";

/// The hub's runtime; shut down without blocking when the cast ends.
struct HubRuntime(Option<tokio::runtime::Runtime>);

impl Drop for HubRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(super) struct Cast {
    pub hub: RunningHub,
    _hub_runtime: HubRuntime,
    /// The hub's certificate (DER): a browser in the demo trusts just it.
    pub hub_cert: Vec<u8>,
    log: EventLog,
    pub events: mpsc::UnboundedReceiver<Ev>,
    pub kiosks: Vec<KioskHands>,
    pub agents: Vec<String>,
    /// The first kiosk's screen, composed for screenshots.
    screen: Option<(Display, DisplayThread)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
}

/// What stopping the cast gave.
pub(super) struct Stopped {
    pub hub: HubStatus,
    pub screenshots: Option<Vec<String>>,
    /// How the report names the event log.
    pub event_log: String,
}

impl Cast {
    pub(super) async fn start(opts: &DemoOptions) -> anyhow::Result<Self> {
        // A deployment CA and certificates for everyone, in memory.
        let ca = Authority::generate("kioskd demo CA", EPHEMERAL_DAYS)?;
        let log = EventLog::new(opts.event_log.clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(HUB_THREADS)
            .enable_all()
            .build()?;
        let (hub_opts, hub_cert) = hub_options(opts, &ca, &log.path)?;
        let hub = runtime.spawn(hub::start(hub_opts)).await??;
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let screen = match &opts.screenshots {
            Some(dir) => Some(Display::spawn(None, screen_options(opts, dir.clone())?)?),
            None => None,
        };
        let mut cast = Self {
            hub,
            _hub_runtime: HubRuntime(Some(runtime)),
            hub_cert,
            log,
            events,
            kiosks: Vec::new(),
            agents: Vec::new(),
            screen,
            stop,
            tasks: Vec::new(),
        };
        for a in 0..opts.agents {
            cast.spawn_agent(a, opts, &ca, &ev_tx)?;
        }
        for k in 0..opts.kiosks {
            cast.spawn_kiosk(k, opts, &ca, &ev_tx)?;
        }
        Ok(cast)
    }

    /// A certificate for `id` and where the hub is.
    fn target(&self, ca: &Authority, role: Role, id: &str) -> anyhow::Result<HubTarget> {
        let cert = ca.issue(role, id, &[], &[], EPHEMERAL_DAYS)?;
        Ok(HubTarget {
            addresses: vec![self.hub.local_addr.to_string()],
            server_name: "localhost".into(),
            client: client_config(&cert.material(ca)?)?,
            silent: crate::edges::net::client::HUB_SILENT,
        })
    }

    fn spawn_agent(
        &mut self,
        a: usize,
        opts: &DemoOptions,
        ca: &Authority,
        ev_tx: &mpsc::UnboundedSender<Ev>,
    ) -> anyhow::Result<()> {
        let id = format!("agent-{}", a + 1);
        let target = self.target(ca, Role::Agent, &id)?;
        let observer = forward(ev_tx.clone(), move |ev| Ev::Agent(a, ev));
        let (cmd_tx, cmd_rx) = mpsc::channel::<AgentCommand>(1);
        let auto = AutoAnswer {
            answer_delay: opts.answer_delay,
            call_duration: Some(opts.call_duration),
            greeting: Some(format!("Good morning, this is {id}. How can I help you today?")),
        };
        let media =
            if opts.media { synthetic_devices(AGENT_TONE_HZ, opts.video) } else { MediaDevices::default() };
        let media_options = MediaOptions { video: opts.video, ..MediaOptions::default() };
        let io = AgentIo {
            commands: cmd_rx,
            observer: Some(observer),
            print: false,
            media,
            media_options,
            renewal: None,
        };
        let stop = self.stop.subscribe();
        let name = id.clone();
        self.tasks.push(tokio::spawn(async move {
            let _keep = cmd_tx;
            agent::run(target, Some(auto), io, stop).await.map_err(|e| format!("agent {name}: {e}"))
        }));
        self.agents.push(id);
        Ok(())
    }

    fn spawn_kiosk(
        &mut self,
        k: usize,
        opts: &DemoOptions,
        ca: &Authority,
        ev_tx: &mpsc::UnboundedSender<Ev>,
    ) -> anyhow::Result<()> {
        let id = format!("branch-{}/kiosk-{}", k / 10 + 1, k % 10 + 1);
        let target = self.target(ca, Role::Kiosk, &id)?;
        // Simulated buttons with 30 ms of contact bounce: the debouncer must see one press.
        let (backend, panel) = SimulatedButtons::new(true);
        let presses = buttons::spawn(Box::new(backend), Duration::from_millis(50))?;
        let (text_tx, text_rx) = mpsc::channel(8);
        let devices = if opts.media { kiosk_devices(k, opts) } else { MediaDevices::default() };
        let display = self.screen.as_ref().filter(|_| k == 0).map(|(d, _)| d.clone());
        let observer = forward(ev_tx.clone(), move |ev| Ev::Kiosk(k, ev));
        let media_options =
            MediaOptions { video: opts.video, processing: opts.processing, ..MediaOptions::default() };
        let io = KioskIo::in_process(
            presses,
            text_rx,
            observer,
            MediaDevices { display, ..devices },
            media_options,
        );
        let kopts = KioskOptions {
            call: CallConfig {
                ended_screen: Duration::from_millis(300),
                busy_screen: Duration::from_secs(1),
                recording_consent: opts.record.is_some(),
            },
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            renewal: None,
        };
        let stop = self.stop.subscribe();
        let name = id.clone();
        self.tasks.push(tokio::spawn(async move {
            kiosk::run(target, kopts, io, stop).await.map_err(|e| format!("kiosk {name}: {e}"))
        }));
        self.kiosks.push(KioskHands { name: id, panel, texts: text_tx });
        Ok(())
    }

    /// CPU time the hub's threads have used so far.
    pub(super) fn hub_cpu(&self) -> Option<Duration> {
        crate::edges::cpu::threads_cpu(HUB_THREADS)
    }

    /// Whether the cast is being stopped (a kiosk losing the hub then is expected).
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops every kiosk and agent, then the screen and the hub; what failed goes to `errors`.
    pub(super) async fn stop(mut self, errors: &mut Vec<String>) -> Stopped {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            match tokio::time::timeout(Duration::from_secs(5), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => errors.push(e),
                Ok(Err(e)) => errors.push(format!("task failed: {e}")),
                Err(_) => errors.push("a task did not stop within 5 s".into()),
            }
        }
        let screenshots = match self.screen.take() {
            Some((display, thread)) => Some(stop_screen(display, thread, errors).await),
            None => None,
        };
        let hub = self.hub.shutdown().await;
        if hub.event_log_errors > 0 {
            errors.push(format!("{} event log write errors", hub.event_log_errors));
        }
        Stopped { hub, screenshots, event_log: self.log.finish() }
    }
}

impl EventLog {
    fn new(asked: Option<PathBuf>) -> anyhow::Result<Self> {
        let log = match asked {
            Some(path) => Self { path, tmp_dir: None },
            None => {
                let dir = std::env::temp_dir().join(format!("kioskd-demo-{}", std::process::id()));
                std::fs::create_dir_all(&dir)?;
                Self { path: dir.join("events.jsonl"), tmp_dir: Some(dir) }
            }
        };
        let _ = std::fs::remove_file(&log.path);
        Ok(log)
    }

    /// How the report names the log; a temporary one is removed.
    fn finish(&self) -> String {
        let lines = std::fs::read_to_string(&self.path).map(|s| s.lines().count()).unwrap_or(0);
        match &self.tmp_dir {
            Some(dir) => {
                let _ = std::fs::remove_dir_all(dir);
                format!("{lines} events (keep them with --event-log PATH)")
            }
            None => format!("{} ({lines} events)", self.path.display()),
        }
    }
}

fn hub_options(
    opts: &DemoOptions,
    ca: &Authority,
    log: &std::path::Path,
) -> anyhow::Result<(HubOptions, Vec<u8>)> {
    let hub_cert = ca.issue(
        Role::Hub,
        "hub.demo",
        &["localhost".into()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        EPHEMERAL_DAYS,
    )?;
    let queue = QueueConfig {
        max_queue: opts.kiosks.max(50),
        offer_timeout: Duration::from_secs(10),
        wrap_up: Duration::ZERO,
        kiosk_grace: Duration::from_secs(5),
        // The demo's kiosks place their calls back to back, faster than customers would.
        call_requests: crate::limits::Rate::per_minute(1000),
        ..QueueConfig::default()
    };
    let tls = hub_cert.material(ca)?;
    let der = tls.chain.first().map(|c| c.to_vec()).unwrap_or_default();
    let hub = HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls,
        queue,
        event_log: log.to_path_buf(),
        metrics: None,
        recording: opts.record.clone().map(|dir| RecordingOptions { dir, retention: None }),
        crl: None,
        admission: Default::default(),
        renewal: None,
        database: None,
        console: opts.console.clone(),
    };
    Ok((hub, der))
}

fn screen_options(opts: &DemoOptions, dir: PathBuf) -> anyhow::Result<DisplayOptions> {
    Ok(DisplayOptions {
        lang: crate::ui::Lang::built_in(&opts.language)?,
        settings: UiSettings {
            branch: "kioskd demo branch".into(),
            opening_hours: "Mon–Fri 9:00–17:00".into(),
            recording_notice: opts.record.is_some(),
        },
        size: (1280, 720),
        screenshots: Some(dir),
    })
}

/// The screen's last screenshots are written once every handle on it is gone.
async fn stop_screen(display: Display, thread: DisplayThread, errors: &mut Vec<String>) -> Vec<String> {
    drop(display);
    let joined =
        tokio::time::timeout(Duration::from_secs(5), tokio::task::spawn_blocking(move || thread.join()))
            .await;
    let shots = match joined {
        Ok(Ok(stats)) => stats.screenshots,
        _ => {
            errors.push("the kiosk's display did not stop within 5 s".into());
            Vec::new()
        }
    };
    if shots.is_empty() {
        errors.push("no screenshot of the kiosk's screen was written".into());
    }
    shots.iter().map(|p| p.display().to_string()).collect()
}

/// An observer whose events reach `to`, wrapped by `wrap`.
fn forward<E: Send + 'static>(
    to: mpsc::UnboundedSender<Ev>,
    wrap: impl Fn(E) -> Ev + Send + 'static,
) -> mpsc::UnboundedSender<E> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let _ = to.send(wrap(ev));
        }
    });
    tx
}

/// A kiosk's synthetic camera, and a speaker and microphone in one enclosure: what the kiosk
/// plays comes back into its microphone (60 ms and more, a 0.2 s room, clipping, hall noise),
/// for the echo canceller to remove.
fn kiosk_devices(k: usize, opts: &DemoOptions) -> MediaDevices {
    use crate::edges::devices::audio::synthetic::{
        RoomMicrophone, RoomSpeaker, SharedRoom, SyntheticMicrophone,
    };
    use crate::media::room::{Room, RoomConfig};
    let config =
        RoomConfig { delay_ms: 60.0 + 10.0 * (k % 5) as f32, seed: k as u64 + 1, ..RoomConfig::default() };
    let room: SharedRoom = std::sync::Arc::new(std::sync::Mutex::new(Room::new(config)));
    let speaker_room = room.clone();
    MediaDevices {
        microphone: Some(std::sync::Arc::new(move || {
            Ok(Box::new(RoomMicrophone { tone: SyntheticMicrophone::new(KIOSK_TONE_HZ), room: room.clone() })
                as Box<dyn crate::edges::devices::audio::Microphone>)
        })),
        speaker: Some(std::sync::Arc::new(move || {
            Ok(Box::new(RoomSpeaker(speaker_room.clone())) as Box<dyn crate::edges::devices::audio::Speaker>)
        })),
        ..synthetic_devices(KIOSK_TONE_HZ, opts.video)
    }
}
