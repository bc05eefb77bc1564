//! The kiosk's core task: one event at a time (a button, the hub, a timer, a text, a reload)
//! into the call machine, and its outputs carried out — messages to the hub, the screen, the
//! LEDs, systemd's status, the health file and the call's media session.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};
use tracing::{debug, info, warn};

use super::link::LinkEvent;
use super::{KioskEvent, KioskIo, Reload};
use crate::call::{CallConfig, CallMachine, Input, KioskState, Output};
use crate::edges::devices::buttons::ButtonEvent;
use crate::edges::health::Health;
use crate::edges::session::MediaSession;
use crate::protocol::{ClientMsg, HubMsg, KioskHealth, MAX_PROBLEMS};
use crate::ui::UiInput;

/// The health file is refreshed at least this often, so that a stuck daemon shows as stale.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// A device that fails in a call (a camera unplugged) is in the health file within this.
const MEDIA_WATCH_EVERY: Duration = Duration::from_secs(1);

/// What woke the core task.
enum Wake {
    Button(Option<ButtonEvent>),
    Link(Option<LinkEvent>),
    Text(String),
    /// A keyframe request or rate hint from the media session, for the hub.
    ToHub(ClientMsg),
    Timer,
    Watchdog,
    Reload(Reload),
    HealthTick,
    MediaWatch,
    Shutdown,
}

/// What to do after an event.
enum Step {
    Input(Input),
    Next,
    Stop,
}

pub(super) struct Kiosk {
    machine: CallMachine,
    io: KioskIo,
    link: mpsc::Receiver<LinkEvent>,
    resuming: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
    /// The session with the hub, while there is one.
    out: Option<mpsc::Sender<ClientMsg>>,
    conn: Option<quinn::Connection>,
    media: Option<MediaSession>,
    /// Keyframe requests and rate hints from the media session, for the hub.
    to_hub: (mpsc::Sender<ClientMsg>, mpsc::Receiver<ClientMsg>),
    texts: Option<mpsc::Receiver<String>>,
    reload: Option<mpsc::Receiver<Reload>>,
    status_suffix: String,
    health: Health,
    watchdog: Option<Interval>,
    health_tick: Interval,
    media_watch: Interval,
    /// The certificate's renewal (driven by the link), for the health file.
    renewal: Option<crate::edges::net::renew::SharedRenewer>,
}

impl Kiosk {
    pub(super) fn new(
        call: CallConfig,
        mut io: KioskIo,
        link: mpsc::Receiver<LinkEvent>,
        resuming: watch::Sender<bool>,
        shutdown: watch::Receiver<bool>,
        renewal: Option<crate::edges::net::renew::SharedRenewer>,
    ) -> Self {
        let machine = CallMachine::new(call);
        // The screen starts from the machine's state and the devices found missing.
        if let Some(d) = &io.media.display {
            d.update(UiInput::DeviceProblems(io.device_problems.clone()));
            d.update(UiInput::State(machine.state()));
        }
        io.notifier.ready();
        let health = Health {
            pid: std::process::id(),
            started_unix: unix_now(),
            state: machine.state().name().into(),
            problems: io.device_problems.clone(),
            ..Health::default()
        };
        Self {
            status_suffix: status_suffix(&io.device_problems),
            watchdog: io.notifier.watchdog_interval().map(tokio::time::interval),
            texts: io.texts.take(),
            reload: io.reload.take(),
            machine,
            io,
            link,
            resuming,
            shutdown,
            out: None,
            conn: None,
            media: None,
            to_hub: mpsc::channel(8),
            health,
            health_tick: tokio::time::interval(HEALTH_EVERY),
            media_watch: tokio::time::interval(MEDIA_WATCH_EVERY),
            renewal,
        }
    }

    /// The loop: drain the machine, wait for one event, feed it; until shutdown or until the
    /// buttons or the link are gone.
    pub(super) async fn run(&mut self) {
        loop {
            let deadline = self.drain();
            let now = Instant::now();
            if deadline.is_some_and(|d| now.into_std() >= d) {
                let _ = self.machine.handle_input(Input::Tick, now.into_std());
                continue;
            }
            let wake = self.wait(deadline.map(Instant::from_std)).await;
            let before = self.machine.call_id();
            let input = match self.handle(wake).await {
                Step::Input(input) => input,
                Step::Next => continue,
                Step::Stop => break,
            };
            if let Err(e) = self.machine.handle_input(input, Instant::now().into_std()) {
                debug!(error = %e, "input ignored");
            }
            if let Some(call_id) = self.machine.call_id()
                && before != Some(call_id)
            {
                self.observe(KioskEvent::CallId { call_id, at: Instant::now() });
            }
        }
    }

    /// Shutting down: hang up a call in progress so the agent is not left waiting.
    pub(super) async fn shut_down(mut self) {
        self.io.notifier.stopping();
        if let Some(m) = self.media.take() {
            let call_id = m.call_id;
            let stats = m.stop();
            self.observe(KioskEvent::Media { call_id, stats: Box::new(stats), at: Instant::now() });
        }
        if let (Some(call_id), Some(tx)) = (self.machine.call_id(), &self.out) {
            info!(call_id, "hanging up before exit");
            let _ = tx.send(ClientMsg::HangUp { call_id }).await;
        }
    }

    /// Carries out the machine's outputs until it waits; returns its next deadline.
    fn drain(&mut self) -> Option<std::time::Instant> {
        loop {
            match self.machine.poll_output() {
                Output::ToHub(msg) => {
                    if matches!(msg, ClientMsg::RequestAgent { resume: None, .. }) {
                        self.observe(KioskEvent::Requested { at: Instant::now() });
                    }
                    if let Some(tx) = &self.out
                        && tx.try_send(msg).is_err()
                    {
                        warn!("hub link is not taking messages; it will resynchronise on reconnect");
                    }
                }
                Output::State(state) => self.on_state(state),
                Output::TextReceived { call_id, id, body } => {
                    // The text is shown, not logged: it may hold the customer's details.
                    info!(call_id, id, chars = body.chars().count(), "text from the advisor");
                    if let Some(d) = &self.io.media.display {
                        d.update(UiInput::Text(body.clone()));
                    }
                    self.observe(KioskEvent::TextReceived { call_id, id, body, at: Instant::now() });
                }
                Output::TextDelivered { call_id, id } => {
                    debug!(call_id, id, "text delivered");
                    self.observe(KioskEvent::TextDelivered { call_id, id, at: Instant::now() });
                }
                Output::Wait(deadline) => return deadline,
            }
        }
    }

    /// A new state: status, health, screen, media, LEDs, observer.
    fn on_state(&mut self, state: KioskState) {
        self.resuming.send_replace(matches!(state, KioskState::Offline { resuming: true }));
        self.health.state = state.name().into();
        self.health.in_call = state.in_call();
        self.write_health();
        info!(state = state.name(), "{}", state.describe());
        self.io.notifier.status(&format!("{}{}", state.describe(), self.status_suffix));
        // The screen first, so that a call's pictures never reach it before the call.
        if let Some(d) = &self.io.media.display {
            d.update(UiInput::State(state.clone()));
        }
        self.follow_media(&state);
        if let Some(leds) = self.io.leds.as_mut()
            && let Err(e) = leds.show(&state)
        {
            warn!(error = %e, "LEDs");
        }
        self.observe(KioskEvent::State { state, at: Instant::now() });
    }

    /// Media runs exactly while the state is Connected on a live link.
    fn follow_media(&mut self, state: &KioskState) {
        let want = match (state, self.machine.call_id(), &self.conn) {
            (KioskState::Connected { .. }, Some(id), Some(c)) => Some((id, c.clone())),
            _ => None,
        };
        if self.media.as_ref().is_some_and(|m| want.as_ref().is_none_or(|(id, _)| *id != m.call_id))
            && let Some(m) = self.media.take()
        {
            self.finish_media(m);
        }
        if self.media.is_none()
            && let Some((call_id, c)) = want
        {
            // Devices are opened afresh for every call: what failed in the last one counts
            // again only if it fails again.
            if self.health.problems != self.io.device_problems {
                self.health.problems = self.io.device_problems.clone();
                self.write_health();
            }
            self.media = Some(MediaSession::start(
                c,
                call_id,
                &self.io.media,
                self.io.media_options.clone(),
                self.to_hub.0.clone(),
            ));
        }
    }

    /// Finishing waits for media in flight; the kiosk goes on meanwhile.
    fn finish_media(&self, m: MediaSession) {
        let call_id = m.call_id;
        let observer = self.io.observer.clone();
        let display = self.io.media.display.clone();
        tokio::spawn(async move {
            let stats = m.finish().await;
            // Devices that failed in this call show until the next one.
            if let Some(d) = display {
                d.update(UiInput::CallProblems(stats.problems.clone()));
            }
            info!(
                call_id,
                audio_played = stats.audio_frames_played,
                video_shown = stats.video_frames_displayed,
                "call media stopped"
            );
            if let Some(o) = observer {
                let _ = o.send(KioskEvent::Media { call_id, stats: Box::new(stats), at: Instant::now() });
            }
        });
    }

    /// Waits for the next event (the machine's deadline is `deadline`).
    async fn wait(&mut self, deadline: Option<Instant>) -> Wake {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let watchdog = async {
            match self.watchdog.as_mut() {
                Some(w) => {
                    w.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let text = async {
            match self.texts.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let reloaded = async {
            match self.reload.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            press = self.io.buttons.recv() => Wake::Button(press),
            ev = self.link.recv() => Wake::Link(ev),
            Some(body) = text => Wake::Text(body),
            Some(msg) = self.to_hub.1.recv() => Wake::ToHub(msg),
            () = sleep => Wake::Timer,
            () = watchdog => Wake::Watchdog,
            Some(new) = reloaded => Wake::Reload(new),
            _ = self.health_tick.tick() => Wake::HealthTick,
            _ = self.media_watch.tick() => Wake::MediaWatch,
            _ = self.shutdown.changed() => Wake::Shutdown,
        }
    }

    async fn handle(&mut self, wake: Wake) -> Step {
        match wake {
            Wake::Button(Some(ev)) => {
                info!(button = ev.button.as_str(), origin = ?ev.origin, "button pressed");
                Step::Input(Input::Button(ev.button))
            }
            Wake::Button(None) => {
                warn!("buttons are gone; the kiosk cannot place calls");
                self.io.notifier.status("out of service: buttons unavailable");
                // Let the watchdog (if any) restart us: stop feeding it.
                self.shutdown.changed().await.ok();
                Step::Stop
            }
            Wake::Link(Some(ev)) => self.on_link(ev),
            Wake::Link(None) | Wake::Shutdown => Step::Stop,
            Wake::Text(body) => {
                self.observe(KioskEvent::TextSent { call_id: self.machine.call_id(), at: Instant::now() });
                Step::Input(Input::SendText(body))
            }
            Wake::ToHub(msg) => {
                if let Some(tx) = &self.out {
                    let _ = tx.try_send(msg);
                }
                Step::Next
            }
            Wake::Timer => Step::Input(Input::Tick),
            Wake::Watchdog => {
                self.io.notifier.watchdog();
                self.write_health();
                Step::Next
            }
            Wake::Reload(new) => {
                self.on_reload(new);
                Step::Next
            }
            Wake::HealthTick => {
                self.write_health();
                self.report_health();
                Step::Next
            }
            Wake::MediaWatch => {
                self.watch_media();
                Step::Next
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) -> Step {
        let media = |call_id| self.media.as_ref().filter(|m| m.call_id == call_id);
        match ev {
            LinkEvent::Up { id, out, conn } => {
                info!(%id, "connected to the hub");
                self.health.hub_reached = true;
                self.out = Some(out);
                self.conn = Some(conn);
                self.report_health();
                self.observe(KioskEvent::HubUp { at: Instant::now() });
                Step::Input(Input::HubUp)
            }
            LinkEvent::Msg(HubMsg::RateHint { call_id, bitrate_bps }) => {
                if let Some(m) = media(call_id) {
                    m.set_rate_hint(bitrate_bps);
                }
                Step::Next
            }
            LinkEvent::Msg(HubMsg::LossReport { call_id, audio_loss_pct }) => {
                if let Some(m) = media(call_id) {
                    m.set_remote_loss(audio_loss_pct);
                }
                Step::Next
            }
            LinkEvent::Msg(HubMsg::KeyframeRequest { call_id }) => {
                if let Some(m) = media(call_id) {
                    m.request_keyframe();
                }
                Step::Next
            }
            LinkEvent::Msg(msg) => Step::Input(Input::FromHub(msg)),
            LinkEvent::Down(reason) => {
                self.out = None;
                self.conn = None;
                self.observe(KioskEvent::HubDown { reason, at: Instant::now() });
                Step::Input(Input::HubDown)
            }
        }
    }

    fn on_reload(&mut self, new: Reload) {
        self.machine.set_config(new.call);
        // The display outlives configurations: it keeps the screen, which calls then never
        // open themselves.
        let display = self.io.media.display.take();
        self.io.media = new.media;
        if let Some(d) = display {
            d.update(UiInput::DeviceProblems(new.device_problems.clone()));
            self.io.media.screen = None;
            self.io.media.display = Some(d);
        }
        self.io.media_options = new.media_options;
        self.health.problems = new.device_problems.clone();
        self.io.device_problems = new.device_problems;
        info!("configuration reloaded: screen timings now, media settings from the next call");
        self.write_health();
    }

    /// A device that failed in the call goes into the health file and onto the screen.
    fn watch_media(&mut self) {
        let failed = self.media.as_ref().map(MediaSession::problems).unwrap_or_default();
        let mut problems = self.io.device_problems.clone();
        problems.extend(failed.iter().filter(|p| !self.io.device_problems.contains(p)).cloned());
        if !failed.is_empty() && problems != self.health.problems {
            warn!(problems = ?failed, "a device failed during the call; the call goes on");
            self.health.problems = problems;
            self.write_health();
            self.report_health();
            if let Some(d) = &self.io.media.display {
                d.update(UiInput::CallProblems(failed));
            }
        }
    }

    fn observe(&self, ev: KioskEvent) {
        if let Some(o) = &self.io.observer {
            let _ = o.send(ev);
        }
    }

    fn write_health(&mut self) {
        if let Some(path) = &self.io.health_file {
            self.health.updated_unix = unix_now();
            self.health.certificate =
                self.renewal.as_ref().map(|r| crate::edges::net::renew::lock(r).health());
            if let Err(e) = self.health.write(path) {
                debug!(error = %e, path = %path.display(), "health file not written");
            }
        }
    }

    /// Tells the hub how this kiosk is (devices, network figures), for its per-kiosk metrics.
    fn report_health(&self) {
        let (Some(out), Some(conn)) = (&self.out, &self.conn) else { return };
        let stats = conn.stats();
        let report = KioskHealth {
            state: self.health.state.clone(),
            problems: self
                .health
                .problems
                .iter()
                .take(MAX_PROBLEMS)
                .map(|p| p.chars().take(500).collect())
                .collect(),
            rtt_ms: conn.rtt().as_millis().min(u128::from(u32::MAX)) as u32,
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
        };
        let _ = out.try_send(ClientMsg::Health(report));
    }
}

fn status_suffix(device_problems: &[String]) -> String {
    if device_problems.is_empty() {
        String::new()
    } else {
        format!(" — degraded: {}", device_problems.join("; "))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
