//! Shared helpers for the integration tests: a deployment CA, a hub on 127.0.0.1, kiosks and
//! agents driven through their real drivers over real QUIC.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kioskd::call::{CallConfig, KioskState};
use kioskd::edges::devices::buttons::{self, simulated::Panel, simulated::SimulatedButtons};
use kioskd::edges::net::certs::Authority;
use kioskd::edges::net::client::HubTarget;
use kioskd::edges::net::renew::SharedRenewer;
use kioskd::edges::net::tls::{TlsMaterial, client_config};
use kioskd::edges::session::{MediaDevices, MediaOptions};
use kioskd::protocol::Role;
use kioskd::queue::QueueConfig;
use kioskd::roles::agent::{self, AgentCommand, AgentEvent, AgentIo, AutoAnswer};
use kioskd::roles::hub::{self, HubOptions, RunningHub};
use kioskd::roles::kiosk::{self, KioskEvent, KioskIo, KioskOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Long enough for a loaded 2-core machine; tests wait on events, never sleep.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Pki {
    pub ca: Authority,
}

impl Pki {
    pub fn new() -> Self {
        Self { ca: Authority::generate("test CA", 1).expect("CA") }
    }

    pub fn material(&self, role: Role, id: &str) -> TlsMaterial {
        let (dns, ips) = if role == Role::Hub {
            (vec!["localhost".to_string()], vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        } else {
            (vec![], vec![])
        };
        self.ca.issue(role, id, &dns, &ips, 1).expect("issue").material(&self.ca).expect("material")
    }

    pub fn target(&self, hub: SocketAddr, role: Role, id: &str) -> HubTarget {
        Self::target_of(hub, &self.material(role, id))
    }

    /// A target presenting `material` (a certificate whose serial the test knows).
    pub fn target_of(hub: SocketAddr, material: &TlsMaterial) -> HubTarget {
        HubTarget {
            addresses: vec![hub.to_string()],
            server_name: "localhost".into(),
            client: client_config(material).expect("client config"),
            silent: kioskd::edges::net::client::HUB_SILENT,
        }
    }
}

pub struct TestHub {
    pub hub: RunningHub,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn start_hub(pki: &Pki, queue: QueueConfig) -> TestHub {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let hub = start_hub_at(pki, queue, log.clone()).await;
    TestHub { hub, log, _dir: dir }
}

/// A hub writing (or continuing) the event log at `log`.
pub async fn start_hub_at(pki: &Pki, queue: QueueConfig, log: PathBuf) -> RunningHub {
    start_hub_full(pki, queue, log, None).await
}

/// A hub with every option.
pub async fn start_hub_full(
    pki: &Pki,
    queue: QueueConfig,
    log: PathBuf,
    metrics: Option<SocketAddr>,
) -> RunningHub {
    start_hub_revoking(pki, queue, log, metrics, None).await
}

/// A hub following the revocation list at `crl`.
pub async fn start_hub_revoking(
    pki: &Pki,
    queue: QueueConfig,
    log: PathBuf,
    metrics: Option<SocketAddr>,
    crl: Option<PathBuf>,
) -> RunningHub {
    hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: pki.material(Role::Hub, "hub.test"),
        queue,
        event_log: log,
        metrics,
        recording: None,
        crl,
        admission: Default::default(),
        renewal: None,
        database: None,
        console: None,
    })
    .await
    .expect("hub starts")
}

impl TestHub {
    pub fn addr(&self) -> SocketAddr {
        self.hub.local_addr
    }

    /// Waits until the hub's status satisfies `pred`.
    pub async fn wait_status(&self, what: &str, pred: impl Fn(&hub::HubStatus) -> bool) {
        let mut rx = self.hub.watch_status();
        tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s)))
            .await
            .unwrap_or_else(|_| panic!("hub never reached: {what}"))
            .expect("hub status channel");
    }

    /// The event log's lines as JSON values.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .expect("event log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("event line is JSON"))
            .collect()
    }
}

/// Waits up to [`WAIT`] for the first event of `who` satisfying `pred`, skipping others.
async fn wait_event<E>(
    events: &mut mpsc::UnboundedReceiver<E>,
    who: &str,
    what: &str,
    mut pred: impl FnMut(&E) -> bool,
) -> E {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("{who}: stopped while waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who}: timed out waiting for {what}"))
}

pub struct TestKiosk {
    pub id: String,
    pub panel: Panel,
    pub events: mpsc::UnboundedReceiver<KioskEvent>,
    pub texts: mpsc::Sender<String>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

pub fn start_kiosk(pki: &Pki, hub: SocketAddr, id: &str) -> TestKiosk {
    start_kiosk_with(pki, hub, id, MediaDevices::default(), Vec::new())
}

/// A kiosk with media devices (and the problems found when they were checked).
pub fn start_kiosk_with(
    pki: &Pki,
    hub: SocketAddr,
    id: &str,
    media: MediaDevices,
    device_problems: Vec<String>,
) -> TestKiosk {
    start_kiosk_full(pki, hub, id, media, MediaOptions::default(), device_problems)
}

pub fn start_kiosk_full(
    pki: &Pki,
    hub: SocketAddr,
    id: &str,
    media: MediaDevices,
    media_options: MediaOptions,
    device_problems: Vec<String>,
) -> TestKiosk {
    start_kiosk_target(pki.target(hub, Role::Kiosk, id), id, media, media_options, device_problems)
}

/// A kiosk connecting with `target` (its own certificate).
pub fn start_kiosk_target(
    target: HubTarget,
    id: &str,
    media: MediaDevices,
    media_options: MediaOptions,
    device_problems: Vec<String>,
) -> TestKiosk {
    let call = CallConfig {
        ended_screen: Duration::from_millis(200),
        busy_screen: Duration::from_millis(500),
        ..CallConfig::default()
    };
    start_kiosk_call(target, id, media, media_options, device_problems, call)
}

/// A kiosk with its own call configuration (e.g. the customer's consent to recording).
pub fn start_kiosk_call(
    target: HubTarget,
    id: &str,
    media: MediaDevices,
    media_options: MediaOptions,
    device_problems: Vec<String>,
    call: CallConfig,
) -> TestKiosk {
    let opts = KioskOptions {
        call,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        renewal: None,
    };
    start_kiosk_opts(target, id, media, media_options, device_problems, opts)
}

/// A kiosk without media that renews its certificate with `renewal`.
pub fn start_kiosk_renewing(target: HubTarget, id: &str, renewal: SharedRenewer) -> TestKiosk {
    let opts = KioskOptions {
        call: CallConfig::default(),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        renewal: Some(renewal),
    };
    start_kiosk_opts(target, id, MediaDevices::default(), MediaOptions::default(), Vec::new(), opts)
}

fn start_kiosk_opts(
    target: HubTarget,
    id: &str,
    media: MediaDevices,
    media_options: MediaOptions,
    device_problems: Vec<String>,
    opts: KioskOptions,
) -> TestKiosk {
    let (backend, panel) = SimulatedButtons::new(true);
    let presses = buttons::spawn(Box::new(backend), Duration::from_millis(50)).expect("button thread");
    let (obs_tx, events) = mpsc::unbounded_channel();
    let (texts, text_rx) = mpsc::channel(8);
    let (stop, stop_rx) = watch::channel(false);
    let io =
        KioskIo { device_problems, ..KioskIo::in_process(presses, text_rx, obs_tx, media, media_options) };
    let task = tokio::spawn(kiosk::run(target, opts, io, stop_rx));
    TestKiosk { id: id.into(), panel, events, texts, stop, task }
}

impl TestKiosk {
    /// Waits for the first event satisfying `pred`, skipping others.
    pub async fn wait_for(&mut self, what: &str, pred: impl FnMut(&KioskEvent) -> bool) -> KioskEvent {
        wait_event(&mut self.events, &self.id, what, pred).await
    }

    pub async fn wait_state(&mut self, what: &str, pred: impl Fn(&KioskState) -> bool) -> KioskState {
        match self.wait_for(what, |e| matches!(e, KioskEvent::State { state, .. } if pred(state))).await {
            KioskEvent::State { state, .. } => state,
            _ => unreachable!("filtered above"),
        }
    }
}

pub struct TestAgent {
    pub id: String,
    pub commands: mpsc::Sender<AgentCommand>,
    pub events: mpsc::UnboundedReceiver<AgentEvent>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), agent::AgentError>>,
}

pub fn start_agent(pki: &Pki, hub: SocketAddr, id: &str, auto: Option<AutoAnswer>) -> TestAgent {
    start_agent_with(pki.target(hub, Role::Agent, id), id, auto)
}

pub fn start_agent_with(target: HubTarget, id: &str, auto: Option<AutoAnswer>) -> TestAgent {
    start_agent_media(target, id, auto, MediaDevices::default())
}

/// An agent with media devices.
pub fn start_agent_media(
    target: HubTarget,
    id: &str,
    auto: Option<AutoAnswer>,
    media: MediaDevices,
) -> TestAgent {
    start_agent_full(target, id, auto, media, MediaOptions::default())
}

pub fn start_agent_full(
    target: HubTarget,
    id: &str,
    auto: Option<AutoAnswer>,
    media: MediaDevices,
    media_options: MediaOptions,
) -> TestAgent {
    let (commands, cmd_rx) = mpsc::channel(16);
    let (obs_tx, events) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let io = AgentIo {
        commands: cmd_rx,
        observer: Some(obs_tx),
        print: false,
        media,
        media_options,
        renewal: None,
    };
    let task = tokio::spawn(agent::run(target, auto, io, stop_rx));
    TestAgent { id: id.into(), commands, events, stop, task }
}

impl TestAgent {
    pub async fn wait_for(&mut self, what: &str, pred: impl FnMut(&AgentEvent) -> bool) -> AgentEvent {
        wait_event(&mut self.events, &self.id, what, pred).await
    }

    pub async fn command(&self, cmd: AgentCommand) {
        self.commands.send(cmd).await.expect("agent takes commands");
    }
}

pub fn auto(call_duration_ms: Option<u64>) -> AutoAnswer {
    AutoAnswer {
        answer_delay: Duration::from_millis(20),
        call_duration: call_duration_ms.map(Duration::from_millis),
        greeting: Some("hello from the agent".into()),
    }
}

// ----- the binary as separate processes -----

/// Runs the `kioskd` binary to completion.
pub fn kioskd_bin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kioskd")).args(args).output().expect("kioskd runs")
}

/// Its stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A deployment in `dir`: CA, hub (`hub.test`), agent (`agent-1`) and kiosk
/// (`branch-1/kiosk-1`) certificates, as `kioskd certs` writes them.
pub fn deployment(dir: &std::path::Path) {
    let d = dir.to_str().expect("utf-8 path");
    let o = kioskd_bin(&["certs", "init", "--dir", d]);
    assert!(o.status.success(), "{}", output_text(&o));
    for args in [
        vec!["--role", "hub", "--id", "hub.test", "--dns", "localhost", "--ip", "127.0.0.1"],
        vec!["--role", "agent", "--id", "agent-1"],
        vec!["--role", "kiosk", "--id", "branch-1/kiosk-1"],
    ] {
        let mut all = vec!["certs", "issue", "--dir", d];
        all.extend(args);
        let o = kioskd_bin(&all);
        assert!(o.status.success(), "{}", output_text(&o));
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's stderr lines, read on a thread and handed over a channel: a test blocks on the
/// line it waits for, not on a timer.
pub struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    pub fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// Waits up to [`WAIT`] for a line containing `pattern`; returns it.
    pub fn wait_for(&self, pattern: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(pattern) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with `{pattern}` from the child within {WAIT:?}"),
            }
        }
    }
}
pub mod postgres;
