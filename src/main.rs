//! The `kioskd` command: kiosk daemon, hub, agent console, demo and certificate tool.

use std::io::{BufRead, IsTerminal};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use kioskd::edges::config::{AgentConfig, ButtonBackend, ConfigError, HubConfig, KioskConfig};
use kioskd::edges::devices::buttons::{
    self, Buttons, gpio_cdev::GpioButtons, rpi::RpiButtons, simulated::SimulatedButtons,
};
use kioskd::edges::devices::leds::{GpioLeds, Leds};
use kioskd::edges::display::{Display, DisplayOptions};
use kioskd::edges::net::certs::{Authority, file_stem};
use kioskd::edges::net::client::HubTarget;
use kioskd::edges::net::tls::client_config;
use kioskd::edges::session::devices_from_config;
use kioskd::edges::systemd::Notifier;
use kioskd::protocol::Role;
use kioskd::queue::LogSummary;
use kioskd::roles::agent::{self, AgentCommand, AgentIo, AutoAnswer};
use kioskd::roles::kiosk::{self, KioskIo, KioskOptions};
use kioskd::roles::{demo, hub};

/// Video-call kiosks for bank branches: a customer presses CALL, the first free advisor answers.
#[derive(Parser)]
#[command(name = "kioskd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the kiosk daemon on the board (buttons, call state, link to the hub).
    Run(RunArgs),
    /// Run the hub: agent rooms, the caller queue, signalling and text relay.
    Hub(HubArgs),
    /// The agent console: go IDLE or CLOSE, answer, type, hang up.
    Agent(AgentArgs),
    /// Run a hub, agents and kiosks in one process on 127.0.0.1 and place calls.
    Demo(DemoArgs),
    /// Create a deployment CA and issue hub, kiosk and agent certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// The advisors' accounts of the hub's browser console (name and password, Argon2id).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Waiting time, handle time and abandoned calls from a hub's event log.
    Report(ReportArgs),
    /// List cameras, sound devices and GPIO lines; check the configured devices, the
    /// certificates and the hub. Exits non-zero naming what fails.
    Doctor(DoctorArgs),
    /// Exit 0 only when the kiosk daemon runs, its devices work and it reached the hub
    /// (for boot-complete.target and OTA updates).
    Health(HealthArgs),
    /// A two-way call through a network impairment proxy per scenario; one JSON line each.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// clean, rtt80, loss5, loss20, burst, cap500, outage3s, mobile (repeatable; all when none
    /// and no parameter below is given).
    #[arg(long)]
    scenario: Vec<String>,
    /// Custom scenario: random loss in percent (each direction).
    #[arg(long)]
    loss: Option<f64>,
    /// Custom scenario: round-trip time in milliseconds.
    #[arg(long)]
    rtt: Option<u64>,
    /// Custom scenario: jitter in milliseconds (each direction).
    #[arg(long)]
    jitter: Option<u64>,
    /// Custom scenario: rate limit in kbit/s (each direction).
    #[arg(long)]
    rate: Option<u64>,
    /// Custom scenario: an outage of this many seconds, 8 s into the call.
    #[arg(long)]
    outage: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// QUIC congestion control of every party in the bench: bbr (default), cubic or newreno.
    #[arg(long, default_value = "bbr")]
    congestion: kioskd::edges::net::tls::Congestion,
    /// Seconds per call.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Print JSON lines only (the default also prints them; kept for scripts).
    #[arg(long)]
    json: bool,
    /// Instead of calls: time composing the kiosk's screen during a call (1280×720 with the
    /// advisor's 640×480 video, a self-view and texts) on one core; one JSON line.
    #[arg(long)]
    compose: bool,
    /// Instead of calls: the microphone's echo cancellation, noise suppression and gain control
    /// against a synthetic kiosk enclosure (echo delay 20–150 ms with a step, T60 0.15–0.3 s,
    /// clipping, −45 dBFS noise); one JSON line per echo path and a summary.
    #[arg(long)]
    aec: bool,
    /// With --compose: frames to compose.
    #[arg(long, default_value_t = 600)]
    frames: usize,
    /// Instead of the scenarios: place this many calls at once through the hub at --hub, every
    /// party replaying H.264 and Opus encoded beforehand (no codec work), for --duration
    /// seconds; one JSON line. For measuring what the hub spends per call.
    #[arg(long, requires_all = ["hub", "certs"])]
    load: Option<usize>,
    /// Instead of the scenarios: kiosks that call again as soon as their call ends and
    /// advisors that answer at once, spread over the hubs at --hub (repeat it for each hub of
    /// a deployment), for --duration seconds; one JSON line with the offers per second.
    #[arg(long, requires_all = ["hub", "certs"], conflicts_with = "load")]
    offers: bool,
    /// With --offers: kiosks (branch-1/kiosk-1..N in --certs).
    #[arg(long, default_value_t = 24)]
    kiosks: usize,
    /// With --offers: advisors (agent-1..N in --certs).
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// With --offers: the deployment's database, to wait until it holds every offer made.
    #[arg(long)]
    database: Option<String>,
    /// With --load (once) or --offers (once per hub): a hub's address (host:port).
    #[arg(long)]
    hub: Vec<String>,
    /// With --load: the name the hub's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// With --load: the folder holding ca.pem and the certificates of agent-1..N and
    /// branch-1/kiosk-1..N (as `kioskd certs issue` writes them).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// With --load: the replayed video's size (30 fps, 1 Mbit/s at 640×480, scaled by area).
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
}

#[derive(Args)]
struct DoctorArgs {
    /// Kiosk configuration file.
    #[arg(short, long, default_value = "/etc/kioskd/kiosk.toml")]
    config: PathBuf,
}

#[derive(Args)]
struct HealthArgs {
    /// The daemon's health file.
    #[arg(long, default_value = kioskd::edges::health::DEFAULT_PATH)]
    file: PathBuf,
    /// Also require that no call is in progress (an update waits for this).
    #[arg(long)]
    idle: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Kiosk configuration file (see board/kiosk.example.toml).
    #[arg(short, long, default_value = "/etc/kioskd/kiosk.toml")]
    config: PathBuf,
    /// Validate the configuration, certificates and devices, then exit.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct HubArgs {
    /// Hub configuration file (see docs/hub.example.toml).
    #[arg(short, long, default_value = "/etc/kioskd/hub.toml")]
    config: PathBuf,
    /// Validate the configuration and certificates, then exit.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct AgentArgs {
    /// Agent configuration file (see docs/agent.example.toml).
    #[arg(short, long, default_value = "agent.toml")]
    config: PathBuf,
    /// Answer every offer automatically (demos and load tests).
    #[arg(long)]
    auto_accept: bool,
    /// With --auto-accept: milliseconds between an offer and the accept.
    #[arg(long, default_value_t = 500)]
    answer_delay_ms: u64,
    /// With --auto-accept: hang up after this many seconds (0: wait for the customer).
    #[arg(long, default_value_t = 60)]
    call_duration_s: u64,
    /// With --auto-accept: text sent when a call connects.
    #[arg(long)]
    greeting: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of kiosks.
    #[arg(long, default_value_t = 1)]
    kiosks: usize,
    /// Number of auto-answering agents.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Calls to place in all (spread over the kiosks).
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// How long each call lasts, in milliseconds [default: 6000 with media, 2000 without].
    #[arg(long)]
    call_duration_ms: Option<u64>,
    /// Two-way audio and video in every call: on, off, or auto (on with at most 2 agents,
    /// as every call encodes and decodes video twice).
    #[arg(long, default_value = "auto")]
    media: MediaMode,
    /// Video size and rate of the synthetic cameras.
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// How long agents take to answer, in milliseconds.
    #[arg(long, default_value_t = 300)]
    answer_delay_ms: u64,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Serve the advisors' browser console and let the synthetic kiosks call until Ctrl-C:
    /// you take the calls in your own browser (the URL and a one-time password are printed).
    #[arg(long)]
    console: bool,
    /// One call whose advisor is a headless Chromium on the hub's browser console (Debian's
    /// `chromium`), measured from both ends.
    #[arg(long)]
    browser: bool,
    /// The console's HTTPS port on 127.0.0.1 with --console (0: any free port).
    #[arg(long, default_value_t = 8443)]
    console_port: u16,
    /// Print every step (default when placing 3 calls or fewer).
    #[arg(long)]
    timeline: bool,
    /// Keep the hub's event log at this path.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// Record every call into DIR (Matroska: both cameras and both microphones, with a JSON
    /// sidecar each); the kiosks show the recording notice.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Write a PNG of the first kiosk's screen into DIR at each change of state (and one
    /// during the call's video): NNN-STATE.png.
    #[arg(long, value_name = "DIR")]
    screenshots: Option<PathBuf>,
    /// The screen's language in the screenshots: en or zh.
    #[arg(long, default_value = "en")]
    language: String,
    /// Switch off the kiosks' sound processing (echo cancellation, noise suppression, gain
    /// control): the agent then hears its own voice back through the kiosk's enclosure.
    #[arg(long)]
    no_processing: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MediaMode {
    Auto,
    On,
    Off,
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Add an account; the password is read from standard input (asked twice on a terminal).
    Add {
        /// The accounts file (`[console] accounts` of the hub); created when missing.
        #[arg(long)]
        file: PathBuf,
        /// The agent's name: the same identity as its agent certificate's.
        name: String,
    },
    /// Set a new password for an account (standard input, as for add).
    Passwd {
        #[arg(long)]
        file: PathBuf,
        name: String,
    },
    /// Remove an account; it cannot sign in from then on.
    Remove {
        #[arg(long)]
        file: PathBuf,
        name: String,
    },
    /// List the accounts.
    List {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a new deployment CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "kioskd deployment CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate signed by the CA in DIR; writes <id>.pem and <id>.key (0600).
    Issue {
        /// Folder holding ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// hub, kiosk or agent.
        #[arg(long)]
        role: Role,
        /// Identity, for example branch-12/kiosk-3 (letters, digits, - _ . / @).
        #[arg(long)]
        id: String,
        /// hub: DNS name that kiosks connect to (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// hub: IP address that kiosks connect to (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Write the files here instead of DIR.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create the renewal CA (DIR/renewal/ca.pem, ca.key), signed by the root CA in DIR: a hub
    /// given it (`[renewal]`) renews kiosk and agent certificates on line, while the root's
    /// key stays offline.
    RenewalCa {
        /// Folder holding the root's ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "kioskd renewal CA")]
        name: String,
        #[arg(long, default_value_t = 1825)]
        days: i64,
    },
    /// Revoke every certificate issued for ID (and/or the one in --cert): writes DIR/crl.pem,
    /// signed by the CA, which a hub with `[tls] crl` follows (refused at the next handshake;
    /// connected peers disconnected within seconds).
    Revoke {
        /// Folder holding ca.pem, ca.key and the register of issued certificates.
        #[arg(long)]
        dir: PathBuf,
        /// The identity to lock out, for example branch-12/kiosk-3.
        #[arg(required_unless_present = "cert")]
        id: Option<String>,
        /// A certificate file (PEM) to revoke, e.g. one issued before the register existed.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ReportArgs {
    /// The hub's event log (JSON lines).
    #[arg(required_unless_present_any = ["database", "hub_config"])]
    events: Option<PathBuf>,
    /// The deployment's PostgreSQL (`postgresql://user@host/db`): every hub's events.
    #[arg(long, conflicts_with_all = ["events", "hub_config"])]
    database: Option<String>,
    /// A hub's configuration: its `[database]` (every hub's events), else its event log.
    #[arg(long, conflicts_with = "events")]
    hub_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_default = matches!(
        cli.command,
        Command::Demo(_)
            | Command::Agent(_)
            | Command::Certs(_)
            | Command::Agents(_)
            | Command::Report(_)
            | Command::Doctor(_)
            | Command::Health(_)
            | Command::Bench(_)
    );
    init_logging(if quiet_default { "warn" } else { "info" });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kioskd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("kioskd: configuration error: {c}");
                return ExitCode::from(2);
            }
            eprintln!("kioskd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to journald when running under systemd with a journal, to stderr otherwise.
fn init_logging(default: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let journald =
        std::env::var_os("JOURNAL_STREAM").is_some().then(|| tracing_journald::layer().ok()).flatten();
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init(),
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run(args) => run_kiosk(args).await,
        Command::Hub(args) => run_hub(args).await,
        Command::Agent(args) => run_agent(args).await,
        Command::Demo(args) => run_demo(args).await,
        Command::Certs(cmd) => certs(cmd),
        Command::Agents(cmd) => agents(cmd),
        Command::Report(args) => report(args).await,
        Command::Doctor(args) => {
            let r = kioskd::roles::kiosk::doctor::run(&args.config).await;
            print!("{}", r.text);
            if r.failures.is_empty() {
                println!("doctor: all checks passed ({} warnings)", r.warnings.len());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("doctor: {} failed: {}", r.failures.len(), r.failures.join("; "));
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Bench(args) => bench(args).await,
        Command::Health(args) => {
            use kioskd::edges::health::{Health, Verdict, pid_alive};
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let verdict = match Health::read(&args.file) {
                Ok(h) => h.verdict(now, pid_alive, args.idle),
                Err(e) => Verdict::Unhealthy(e),
            };
            match verdict {
                Verdict::Healthy => {
                    println!("healthy");
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Unhealthy(why) => {
                    println!("unhealthy: {why}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// A channel that turns true on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

fn open_buttons(cfg: &KioskConfig, file: &Path) -> Result<Box<dyn Buttons>, ConfigError> {
    let b = &cfg.buttons;
    let source: Box<dyn Buttons> = match b.backend {
        ButtonBackend::GpioCdev => Box::new(
            GpioButtons::open(b.chip.clone(), b.call, b.hangup, b.active_low, b.bias)
                .map_err(|e| ConfigError::new(file, "buttons.chip", e.to_string()))?,
        ),
        ButtonBackend::Rppal => {
            let pin = |n: u32, key: &str| {
                u8::try_from(n).map_err(|_| ConfigError::new(file, key, "BCM pins are 0 to 53"))
            };
            Box::new(
                RpiButtons::open(
                    pin(b.call, "buttons.call")?,
                    pin(b.hangup, "buttons.hangup")?,
                    b.active_low,
                    b.bias,
                )
                .map_err(|e| ConfigError::new(file, "buttons.backend", e.to_string()))?,
            )
        }
        ButtonBackend::Simulated => {
            if b.input == "stdin" {
                Box::new(
                    SimulatedButtons::stdin()
                        .map_err(|e| ConfigError::new(file, "buttons.input", e.to_string()))?,
                )
            } else {
                Box::new(
                    SimulatedButtons::unix_socket(Path::new(&b.input))
                        .map_err(|e| ConfigError::new(file, "buttons.input", e.to_string()))?,
                )
            }
        }
    };
    Ok(source)
}

async fn run_kiosk(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (cfg, tls) = KioskConfig::load(&args.config)?;
    kioskd::edges::net::tls::set_congestion(cfg.congestion);
    let ident = tls.identity()?;
    let buttons = open_buttons(&cfg, &args.config)?;
    let leds: Option<Box<dyn Leds>> = match &cfg.leds {
        Some(l) => Some(Box::new(
            GpioLeds::open(l.chip.clone(), l.call, l.busy, l.active_low)
                .map_err(|e| ConfigError::new(&args.config, "leds.chip", e.to_string()))?,
        )),
        None => None,
    };
    if args.check {
        println!(
            "{}: OK (kiosk {}, hub {}, buttons {:?})",
            args.config.display(),
            ident.id,
            cfg.hub.shown(),
            cfg.buttons.backend
        );
        return Ok(ExitCode::SUCCESS);
    }
    info!(id = %ident.id, hub = %cfg.hub.shown(), "kiosk starting");
    let presses = buttons::spawn(buttons, Duration::from_millis(cfg.buttons.debounce_ms))
        .context("starting the button thread")?;
    let target = HubTarget {
        addresses: cfg.hub.all(),
        server_name: cfg.hub.server_name(),
        client: client_config(&tls)?,
        silent: cfg.hub.silent(),
    };
    let opts = KioskOptions {
        call: cfg.call.call_config(),
        reconnect_min: Duration::from_millis(cfg.call.reconnect_min_ms),
        reconnect_max: Duration::from_millis(cfg.call.reconnect_max_ms),
        renewal: cfg.tls.renewer(&args.config, &tls)?,
    };
    let (mut media, media_options, device_problems) = devices_from_config(&cfg.media());
    for p in &device_problems {
        tracing::warn!("{p}; the kiosk runs on without it");
    }
    // The display thread owns the screen for the daemon's life; calls hand it their pictures.
    let (display, _display_thread) = Display::spawn(
        media.screen.take(),
        DisplayOptions {
            lang: cfg.ui.lang(&args.config)?,
            settings: cfg.ui.settings(cfg.call.recording_notice),
            size: (cfg.screen.width, cfg.screen.height),
            screenshots: None,
        },
    )
    .context("starting the display thread")?;
    media.display = Some(display.clone());
    let io = KioskIo {
        buttons: presses,
        texts: None,
        observer: None,
        leds,
        notifier: Notifier::from_env(),
        media,
        media_options,
        device_problems,
        health_file: Some(cfg.health_file.clone()),
        reload: Some(reload_on_sighup(args.config.clone(), cfg.clone(), display)?),
    };
    kiosk::run(target, opts, io, shutdown_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the kiosk configuration on SIGHUP. A bad file is reported and ignored (the kiosk
/// keeps running with what it had); settings that need a restart are named in the log.
fn reload_on_sighup(
    path: PathBuf,
    mut current: KioskConfig,
    display: Display,
) -> anyhow::Result<mpsc::Receiver<kiosk::Reload>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match KioskConfig::load(&path) {
                Ok((cfg, _)) => {
                    if cfg.hub.all() != current.hub.all() || cfg.tls.cert != current.tls.cert {
                        tracing::warn!("hub addresses and certificates change at the next restart");
                    }
                    if cfg.buttons.backend != current.buttons.backend
                        || cfg.buttons.call != current.buttons.call
                    {
                        tracing::warn!("button settings change at the next restart");
                    }
                    if cfg.screen.backend != current.screen.backend || cfg.screen.path != current.screen.path
                    {
                        tracing::warn!("screen settings change at the next restart");
                    }
                    // The language and the branch's texts change at once (checked by `load`).
                    if let Ok(lang) = cfg.ui.lang(&path) {
                        display.set_lang(lang);
                    }
                    display.update(kioskd::ui::UiInput::Settings(cfg.ui.settings(cfg.call.recording_notice)));
                    let (media, media_options, device_problems) = devices_from_config(&cfg.media());
                    let reload =
                        kiosk::Reload { call: cfg.call.call_config(), media, media_options, device_problems };
                    current = cfg;
                    if tx.send(reload).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("configuration not reloaded: {e}"),
            }
        }
    });
    Ok(rx)
}

async fn run_hub(args: HubArgs) -> anyhow::Result<ExitCode> {
    let (cfg, tls) = HubConfig::load(&args.config)?;
    kioskd::edges::net::tls::set_congestion(cfg.congestion);
    if args.check {
        println!(
            "{}: OK (listen {}, event log {})",
            args.config.display(),
            cfg.listen,
            cfg.event_log.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let renewal = cfg.renewal_issuer(&args.config, &tls)?;
    let lease = match &cfg.database {
        Some(d) => d.lease(&args.config)?,
        None => kioskd::edges::db::cluster::LEASE,
    };
    let database = cfg.database_url(&args.config)?.map(|url| hub::DatabaseOptions {
        url,
        advertise: cfg.database.as_ref().and_then(|d| d.advertise.clone()),
        lease,
    });
    let mut shutdown = shutdown_signal()?;
    let hub = hub::start(hub::HubOptions {
        listen: cfg.listen,
        tls,
        queue: cfg.queue_config(),
        event_log: cfg.event_log.clone(),
        metrics: cfg.metrics_listen,
        recording: cfg.recording.options(),
        crl: cfg.tls.crl.clone(),
        admission: cfg.limits.admission(),
        renewal,
        database,
        console: cfg.console.as_ref().map(|c| hub::console::ConsoleOptions {
            listen: c.listen,
            media: c.media,
            media_public: c.media_public,
            accounts: c.accounts.clone(),
            session_ttl: Duration::from_secs(u64::from(c.session_hours) * 3600),
            media_grace: Duration::from_secs(c.media_grace_s),
        }),
    })
    .await
    .context("starting the hub")?;
    // SIGHUP reads the revocation list again (it is also followed when its file changes).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let notifier = Notifier::from_env();
    notifier.ready();
    let mut status = hub.watch_status();
    // The watchdog is fed only while the hub's core loop shows progress (its heartbeat).
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    let mut fed_at = 0u64;
    loop {
        let tick = async {
            match watchdog.as_mut() {
                Some(w) => {
                    w.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = hangup.recv() => {
                info!("SIGHUP: reading the revocation list again");
                hub.reload_revocations();
            }
            () = tick => {
                let beat = status.borrow().heartbeat;
                if beat != fed_at {
                    fed_at = beat;
                    notifier.watchdog();
                }
            }
            changed = status.changed() => {
                if changed.is_err() { break; }
                let s = status.borrow().clone();
                notifier.status(&format!(
                    "{} waiting, {} in call, {} connections",
                    s.snapshot.waiting, s.snapshot.calls_connected, s.connections
                ));
            }
        }
    }
    notifier.stopping();
    let s = hub.shutdown().await;
    info!(calls = s.stats.connected, "hub stopped");
    Ok(ExitCode::SUCCESS)
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let (cfg, tls) = AgentConfig::load(&args.config)?;
    kioskd::edges::net::tls::set_congestion(cfg.congestion);
    let target = HubTarget {
        addresses: cfg.hub.all(),
        server_name: cfg.hub.server_name(),
        client: client_config(&tls)?,
        silent: cfg.hub.silent(),
    };
    let auto = args.auto_accept.then(|| AutoAnswer {
        answer_delay: Duration::from_millis(args.answer_delay_ms),
        call_duration: (args.call_duration_s > 0).then(|| Duration::from_secs(args.call_duration_s)),
        greeting: args.greeting.clone(),
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    if auto.is_none() {
        if std::io::stdin().is_terminal() {
            println!("kioskd agent console — {}", agent::HELP);
        }
        std::thread::Builder::new().name("console".into()).spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                // Leaving closes the channel: the console hangs up a call in progress and ends.
                if matches!(line.trim().to_ascii_lowercase().as_str(), "quit" | "q" | "exit") {
                    break;
                }
                match AgentCommand::parse(&line) {
                    Ok(Some(cmd)) => {
                        if cmd_tx.blocking_send(cmd).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(msg) => println!("{msg}"),
                }
            }
        })?;
    } else {
        drop(cmd_tx);
    }
    let (media, media_options, problems) = devices_from_config(&cfg.media());
    for p in &problems {
        println!("{p}; calls go on without it");
    }
    let renewal = cfg.tls.renewer(&args.config, &tls)?;
    let io = AgentIo { commands: cmd_rx, observer: None, print: true, media, media_options, renewal };
    match agent::run(target, auto, io, shutdown_signal()?).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            error!(error = %e, "agent console stopped");
            Err(e.into())
        }
    }
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let timeline = args.timeline || (args.calls <= 3 && !args.json);
    let media = match args.media {
        MediaMode::On => true,
        MediaMode::Off => false,
        MediaMode::Auto => args.agents <= 2,
    };
    check_video_size(args.width, args.height)?;
    anyhow::ensure!((1..=60).contains(&args.fps), "--fps must be 1 to 60");
    let call_ms = args.call_duration_ms.unwrap_or(if media { 6000 } else { 2000 });
    let opts = demo::DemoOptions {
        kiosks: args.kiosks,
        agents: args.agents,
        calls: args.calls,
        call_duration: Duration::from_millis(call_ms),
        media,
        video: kioskd::media::codec::VideoSettings {
            width: args.width,
            height: args.height,
            fps: args.fps as f32,
            ..Default::default()
        },
        answer_delay: Duration::from_millis(args.answer_delay_ms),
        timeline,
        event_log: args.event_log,
        record: args.record,
        screenshots: args.screenshots,
        language: args.language,
        processing: if args.no_processing {
            kioskd::media::processing::ProcessingConfig::OFF
        } else {
            kioskd::media::processing::ProcessingConfig::default()
        },
        console: None,
    };
    if args.browser {
        let report = demo::browser::run(opts).await?;
        let mut out = std::io::stdout().lock();
        demo::browser::print_account(&report, &mut out)?;
        if args.json {
            use std::io::Write;
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
        }
        return Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if args.console {
        demo::console::run(kioskd::roles::demo::DemoOptions { media: true, ..opts }, args.console_port)
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if !timeline {
        eprintln!(
            "kioskd demo: {} kiosks, {} agents, {} calls of {:.1} s on 127.0.0.1 …",
            opts.kiosks,
            opts.agents,
            opts.calls,
            opts.call_duration.as_secs_f64()
        );
    }
    let report = demo::run(opts).await?;
    let mut out = std::io::stdout().lock();
    demo::print_account(&report, &mut out)?;
    if args.json {
        use std::io::Write;
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The synthetic camera's and the replayed video's size, as `--width` and `--height` give it.
fn check_video_size(width: u32, height: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        width.is_multiple_of(2)
            && height.is_multiple_of(2)
            && (160..=1920).contains(&width)
            && (120..=1080).contains(&height),
        "--width 160..1920 and --height 120..1080, both even"
    );
    Ok(())
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use kioskd::roles::bench::{SCENARIOS, Scenario, named};
    if args.compose {
        for (w, h) in [(1280, 720), (1920, 1080)] {
            let r = kioskd::edges::display::bench_compose(w, h, (640, 480), args.frames.max(1));
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.aec {
        use kioskd::roles::bench::aec;
        let mut results = Vec::new();
        for case in aec::CASES {
            let r = aec::measure(case, args.seed);
            println!("{}", serde_json::to_string(&r)?);
            results.push(r);
        }
        let summary = aec::summarize(&results);
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    use kioskd::netsim::link::LinkConfig;
    kioskd::edges::net::tls::set_congestion(args.congestion);
    anyhow::ensure!(args.load.is_none() || args.hub.len() == 1, "--load takes one --hub");
    if let (true, Some(certs)) = (args.offers, &args.certs) {
        let mut hubs = Vec::new();
        for h in &args.hub {
            hubs.push(kioskd::edges::net::client::resolve(h).await?);
        }
        let opts = kioskd::roles::bench::offers::OffersOptions {
            hubs,
            server_name: args.server_name.clone(),
            certs: certs.clone(),
            kiosks: args.kiosks,
            agents: args.agents,
            duration: Duration::from_secs(args.duration),
            database: args.database.clone(),
        };
        eprintln!(
            "bench: {} kiosks and {} advisors on {} hub(s) for {} s …",
            args.kiosks,
            args.agents,
            args.hub.len(),
            args.duration
        );
        let r = kioskd::roles::bench::offers::run(opts).await?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(if r.errors.is_empty() && r.double_offers == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if let (Some(calls), [hub], Some(certs)) = (args.load, args.hub.as_slice(), &args.certs) {
        check_video_size(args.width, args.height)?;
        let area = f64::from(args.width * args.height) / (640.0 * 480.0);
        let video = kioskd::media::codec::VideoSettings {
            width: args.width,
            height: args.height,
            bitrate_bps: (1_000_000.0 * area) as u32,
            ..Default::default()
        };
        let opts = kioskd::roles::bench::load::LoadOptions {
            hub: kioskd::edges::net::client::resolve(hub).await?,
            server_name: args.server_name.clone(),
            certs: certs.clone(),
            calls,
            duration: Duration::from_secs(args.duration),
            video,
        };
        eprintln!("bench: {calls} calls through {hub} for {} s …", args.duration);
        let r = kioskd::roles::bench::load::run(opts).await?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(if r.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let custom = args.loss.is_some()
        || args.rtt.is_some()
        || args.jitter.is_some()
        || args.rate.is_some()
        || args.outage.is_some();
    let mut scenarios: Vec<Scenario> = Vec::new();
    for name in &args.scenario {
        scenarios.push(
            named(name, args.seed).ok_or_else(|| {
                anyhow::anyhow!("unknown scenario `{name}` (one of {})", SCENARIOS.join(", "))
            })?,
        );
    }
    if custom {
        let link = LinkConfig {
            loss: args.loss.unwrap_or(0.0) / 100.0,
            delay: Duration::from_millis(args.rtt.unwrap_or(0) / 2),
            jitter: Duration::from_millis(args.jitter.unwrap_or(0)),
            rate_bps: args.rate.map(|k| k * 1000),
            queue_bytes: 64 * 1024,
            seed: args.seed,
            ..LinkConfig::default()
        };
        let outage = args.outage.map(|s| (Duration::from_secs(8), Duration::from_secs_f64(s)));
        scenarios.push(Scenario { name: "custom".into(), link, outage });
    }
    if scenarios.is_empty() {
        scenarios = SCENARIOS.iter().filter_map(|n| named(n, args.seed)).collect();
    }
    anyhow::ensure!(
        args.duration >= 12 || scenarios.iter().all(|s| s.outage.is_none()),
        "--duration must be at least 12 s with an outage"
    );
    let video = kioskd::media::codec::VideoSettings::default();
    let mut ok = true;
    for sc in &scenarios {
        eprintln!("bench: {} ({} s call) …", sc.name, args.duration);
        let r = kioskd::roles::bench::run(sc, Duration::from_secs(args.duration), video).await?;
        ok &= r.errors.is_empty();
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn agents(cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    use hub::console::Accounts;
    match cmd {
        AgentsCommand::Add { file, name } => {
            let password = read_password(&name)?;
            Accounts::set(&file, &name, &password, false)?;
            println!("added `{name}` to {}", file.display());
        }
        AgentsCommand::Passwd { file, name } => {
            let password = read_password(&name)?;
            Accounts::set(&file, &name, &password, true)?;
            println!(
                "new password for `{name}` in {} (signed-in pages stay until they sign out or expire)",
                file.display()
            );
        }
        AgentsCommand::Remove { file, name } => {
            Accounts::remove(&file, &name)?;
            println!("removed `{name}` from {}", file.display());
        }
        AgentsCommand::List { file } => {
            for name in Accounts::load(&file)?.names()? {
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A password from standard input: asked twice without echo on a terminal, one line otherwise.
fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let read_line = |prompt: &str| -> anyhow::Result<String> {
        if terminal {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let echo = terminal.then(|| set_echo(false));
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        if let Some(Some(saved)) = echo {
            restore_echo(&saved);
            eprintln!();
        }
        read.context("reading the password")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let password = read_line(&format!("password for {name}: "))?;
    if terminal && read_line("again: ")? != password {
        anyhow::bail!("the two passwords differ");
    }
    Ok(password)
}

/// Turns the terminal's echo off; the settings to restore, when standard input is a terminal.
fn set_echo(on: bool) -> Option<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails, and it is used only if filled.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let saved = t;
        if on {
            t.c_lflag |= libc::ECHO;
        } else {
            t.c_lflag &= !libc::ECHO;
        }
        (libc::tcsetattr(0, libc::TCSANOW, &t) == 0).then_some(saved)
    }
}

fn restore_echo(saved: &libc::termios) {
    // SAFETY: restores settings tcgetattr returned for the same descriptor.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, saved);
    }
}

fn certs(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Init { dir, name, days } => {
            let ca = Authority::generate(&name, days)?;
            ca.write(&dir)?;
            println!("created CA `{name}`: {0}/ca.pem and {0}/ca.key (keep ca.key offline)", dir.display());
        }
        CertsCommand::Issue { dir, role, id, dns, ip, days, out } => {
            let ca =
                Authority::load(&dir).with_context(|| format!("loading the CA from {}", dir.display()))?;
            let issued = ca.issue(role, &id, &dns, &ip, days)?;
            let (cert, key) = issued.write(out.as_deref().unwrap_or(&dir), &file_stem(&id))?;
            kioskd::edges::net::certs::record_issued(&dir, &id, role, &issued.cert_pem)
                .context("recording the certificate in the CA's register")?;
            println!("issued {role} certificate for `{id}`: {} and {} (0600)", cert.display(), key.display());
        }
        CertsCommand::RenewalCa { dir, name, days } => {
            let root =
                Authority::load(&dir).with_context(|| format!("loading the CA from {}", dir.display()))?;
            let sub_dir = dir.join(kioskd::edges::net::certs::RENEWAL_DIR);
            root.issue_renewal_ca(&name, days)?.write(&sub_dir)?;
            println!(
                "created renewal CA `{name}`: {0}/ca.pem and {0}/ca.key; give them to the hub as [renewal] ca_cert and ca_key",
                sub_dir.display()
            );
        }
        CertsCommand::Revoke { dir, id, cert } => {
            let r = kioskd::edges::net::certs::revoke(&dir, id.as_deref(), cert.as_deref())?;
            let who = id.as_deref().map_or_else(|| "the certificate".to_string(), |i| format!("`{i}`"));
            if r.serials.is_empty() {
                println!(
                    "{who} was already revoked; {} written ({} revoked in all)",
                    r.crl.display(),
                    r.total
                );
            } else {
                println!(
                    "revoked {who} ({} certificate(s): {}); {} written ({} revoked in all)",
                    r.serials.len(),
                    r.serials.join(", "),
                    r.crl.display(),
                    r.total
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (mut file, mut database) = (args.events, args.database);
    if let Some(path) = &args.hub_config {
        let cfg: HubConfig = kioskd::edges::config::load(path)?;
        match cfg.database_url(path)? {
            Some(url) => database = Some(url),
            None => file = Some(cfg.event_log),
        }
    }
    let summary = match (file, database) {
        (_, Some(url)) => {
            kioskd::edges::db::check_url(&url).map_err(|e| anyhow::anyhow!("--database: {e}"))?;
            let db = kioskd::edges::db::Database::connect_read(&url).await?;
            let events = db.events().await?;
            LogSummary::from_hubs(events.iter().map(|(hub, rec)| (hub.as_str(), rec)))
        }
        (Some(path), None) => {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            LogSummary::from_lines(text.lines())
        }
        (None, None) => anyhow::bail!("give the event log file, --database or --hub-config"),
    };
    println!("{}", serde_json::to_string_pretty(&summary.report())?);
    Ok(ExitCode::SUCCESS)
}
