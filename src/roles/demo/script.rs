//! The demo's script: once every agent is IDLE and every kiosk idle, it presses CALL on the
//! kiosks (round-robin, as long as calls are left), sends a text from each customer who gets
//! through, has every third customer hang up half-way, and tallies what the cast reports.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::cast::{Cast, Ev};
use super::report::{Direction, echo_return_db, pair};
use super::{AGENT_TONE_HZ, DemoOptions, DemoReport};
use crate::call::{Button, KioskState};
use crate::edges::session::MediaStats;
use crate::protocol::{CallId, EndReason, RoomState};
use crate::queue::log::Percentiles;
use crate::roles::agent::AgentEvent;
use crate::roles::kiosk::KioskEvent;

/// After the last call, this long for texts and media figures to come in.
const SETTLE: Duration = Duration::from_secs(5);

/// One kiosk as the script sees it.
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

/// When each call reached each step.
#[derive(Default)]
struct Times {
    press: HashMap<CallId, Instant>,
    offered: HashMap<CallId, Instant>,
    accept: HashMap<CallId, Instant>,
    /// (kiosk, agent) connected.
    connected: HashMap<CallId, (Option<Instant>, Option<Instant>)>,
    /// Whether the call found an agent free.
    unqueued: HashMap<CallId, bool>,
}

#[derive(Default)]
struct Tally {
    requested: usize,
    connected: usize,
    completed: usize,
    abandoned: usize,
    /// Calls over (completed, abandoned or refused).
    done: usize,
    max_pos: u32,
    texts_sent: usize,
    texts_delivered: usize,
    texts_received: usize,
}

pub(super) struct Script {
    opts: DemoOptions,
    started: Instant,
    limit: Instant,
    track: Vec<KioskTrack>,
    agents_idle: Vec<bool>,
    started_calls: bool,
    tally: Tally,
    times: Times,
    /// Customers who hang up themselves, and when.
    hangups: BTreeMap<Instant, usize>,
    kiosk_media: HashMap<CallId, MediaStats>,
    agent_media: HashMap<CallId, MediaStats>,
    settle_until: Option<Instant>,
    hub_cpu: super::report::HubCpuMeter,
    pub(super) errors: Vec<String>,
}

impl Script {
    pub(super) fn new(opts: &DemoOptions, started: Instant) -> Self {
        let mut track: Vec<KioskTrack> = (0..opts.kiosks).map(|_| KioskTrack::default()).collect();
        for c in 0..opts.calls {
            track[c % opts.kiosks].calls_left += 1;
        }
        // A generous budget: every round of calls, plus start-up.
        let per_round = opts.call_duration + opts.answer_delay + Duration::from_secs(2);
        let rounds = opts.calls.div_ceil(opts.agents) as u32 + 2;
        Self {
            opts: opts.clone(),
            started,
            limit: started + Duration::from_secs(20) + per_round * rounds,
            track,
            agents_idle: vec![false; opts.agents],
            started_calls: false,
            tally: Tally::default(),
            times: Times::default(),
            hangups: BTreeMap::new(),
            kiosk_media: HashMap::new(),
            agent_media: HashMap::new(),
            settle_until: None,
            hub_cpu: Default::default(),
            errors: Vec::new(),
        }
    }

    fn say(&self, line: String) {
        if self.opts.timeline {
            println!("{:>8.3} s  {line}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Every call over, every text in, and every call's media figures from both sides.
    fn finished(&self) -> bool {
        let t = &self.tally;
        let media_in = !self.opts.media
            || (self.kiosk_media.len() >= t.connected && self.agent_media.len() >= t.connected);
        self.settle_until.is_some()
            && t.texts_delivered >= t.texts_sent
            && t.texts_received >= t.texts_sent
            && media_in
    }

    /// Runs the script until it is finished, the settle time is over, or the time limit.
    pub(super) async fn run(&mut self, cast: &mut Cast) {
        let mut progress = tokio::time::interval(Duration::from_secs(2));
        loop {
            if self.tally.done == self.opts.calls && self.settle_until.is_none() {
                self.settle_until = Some(Instant::now() + SETTLE);
            }
            if self.finished() {
                return;
            }
            let next_hangup = self.hangups.keys().next().copied();
            let wake = [Some(self.limit), self.settle_until, next_hangup].into_iter().flatten().min();
            let wake = wake.unwrap_or(self.limit);
            tokio::select! {
                ev = cast.events.recv() => match ev {
                    Some(Ev::Agent(a, ev)) => self.on_agent(a, ev, cast),
                    Some(Ev::Kiosk(k, ev)) => self.on_kiosk(k, ev, cast),
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => {
                    if !self.on_timer(cast) {
                        return;
                    }
                    continue;
                }
                _ = progress.tick(), if !self.opts.timeline => {
                    self.print_progress();
                    continue;
                }
            }
            self.place_calls(cast);
        }
    }

    /// Customers hanging up; `false` when the time is up.
    fn on_timer(&mut self, cast: &Cast) -> bool {
        let now = Instant::now();
        if now >= self.limit {
            self.errors.push(format!(
                "demo did not finish in {:.0} s ({} of {} calls done)",
                (self.limit - self.started).as_secs_f64(),
                self.tally.done,
                self.opts.calls
            ));
            return false;
        }
        if self.settle_until.is_some_and(|t| now >= t) {
            return false;
        }
        while let Some((&t, &k)) = self.hangups.iter().next() {
            if t > now {
                break;
            }
            self.hangups.remove(&t);
            self.say(format!("{} customer presses HANGUP", cast.kiosks[k].name));
            cast.kiosks[k].panel.press(Button::HangUp);
        }
        true
    }

    fn print_progress(&self) {
        eprintln!(
            "[{:5.1} s] calls: {}/{} done, {} connected now, {} agents idle",
            self.started.elapsed().as_secs_f64(),
            self.tally.done,
            self.opts.calls,
            self.track.iter().filter(|t| t.connected).count(),
            self.agents_idle.iter().filter(|x| **x).count()
        );
    }

    fn on_agent(&mut self, a: usize, ev: AgentEvent, cast: &Cast) {
        let name = &cast.agents[a];
        match ev {
            AgentEvent::Room { state, .. } => {
                self.agents_idle[a] = state == RoomState::Idle;
                self.say(format!("{name} room is {}", state.as_str()));
            }
            AgentEvent::Offer { call_id, kiosk, waited_ms, at } => {
                self.say(format!("hub offers call {call_id} from {kiosk} to {name} (waited {waited_ms} ms)"));
                self.times.offered.entry(call_id).or_insert(at);
            }
            AgentEvent::AcceptSent { call_id, at } => {
                self.say(format!("{name} accepts call {call_id}"));
                self.times.accept.insert(call_id, at);
            }
            AgentEvent::Connected { call_id, at, .. } => {
                self.times.connected.entry(call_id).or_default().1 = Some(at);
            }
            AgentEvent::TextSent { .. } => self.tally.texts_sent += 1,
            AgentEvent::TextDelivered { .. } => self.tally.texts_delivered += 1,
            AgentEvent::TextReceived { call_id, body, .. } => {
                self.tally.texts_received += 1;
                self.say(format!("{name} reads in call {call_id}: \"{body}\""));
            }
            AgentEvent::Ended { call_id, reason, .. } => {
                self.say(format!("{name} sees call {call_id} end: {}", reason.describe()));
            }
            AgentEvent::Error { message, .. } => self.errors.push(format!("{name}: hub error: {message}")),
            AgentEvent::Media { call_id, stats, .. } => {
                self.errors.extend(stats.problems.iter().map(|p| format!("{name} media: {p}")));
                self.agent_media.insert(call_id, *stats);
            }
            AgentEvent::Welcome { .. } | AgentEvent::OfferWithdrawn { .. } => {}
        }
    }

    fn on_kiosk(&mut self, k: usize, ev: KioskEvent, cast: &Cast) {
        let name = &cast.kiosks[k].name;
        match ev {
            KioskEvent::Requested { at } => {
                self.track[k].pressed_at = Some(at);
                self.track[k].queued = false;
            }
            KioskEvent::CallId { call_id, .. } => {
                self.track[k].call_id = Some(call_id);
                if let Some(p) = self.track[k].pressed_at {
                    self.times.press.insert(call_id, p);
                }
            }
            KioskEvent::TextSent { .. } => self.tally.texts_sent += 1,
            KioskEvent::TextDelivered { .. } => self.tally.texts_delivered += 1,
            KioskEvent::TextReceived { body, call_id, .. } => {
                self.tally.texts_received += 1;
                self.say(format!("{name} shows in call {call_id}: \"{body}\""));
            }
            KioskEvent::HubUp { .. } => {}
            KioskEvent::Media { call_id, stats, .. } => {
                self.errors.extend(stats.problems.iter().map(|p| format!("{name} media: {p}")));
                self.say(format!(
                    "{name} call {call_id} media: sent {} video / {} audio frames, showed {} pictures, played {} audio frames",
                    stats.video_frames_sent, stats.audio_frames_sent, stats.video_frames_displayed, stats.audio_frames_played
                ));
                self.kiosk_media.insert(call_id, *stats);
            }
            KioskEvent::HubDown { reason, .. } => {
                if !cast.stopping() {
                    self.errors.push(format!("{name}: lost the hub: {reason}"));
                }
            }
            KioskEvent::State { state, at } => {
                self.say(format!("{name} {}", state.describe()));
                self.on_kiosk_state(k, state, at, cast);
            }
        }
    }

    fn on_kiosk_state(&mut self, k: usize, state: KioskState, at: Instant, cast: &Cast) {
        let hands = &cast.kiosks[k];
        let track = &mut self.track[k];
        match state {
            KioskState::Idle => {
                track.idle_seen = true;
                track.connected = false;
            }
            KioskState::Waiting { position, .. } => {
                self.tally.max_pos = self.tally.max_pos.max(position);
                track.queued = true;
            }
            KioskState::Ringing => {
                self.tally.max_pos = self.tally.max_pos.max(1);
                if let Some(id) = track.call_id {
                    self.times.unqueued.entry(id).or_insert(!track.queued);
                }
            }
            KioskState::Connected { .. } => {
                self.tally.connected += 1;
                track.connected = true;
                self.hub_cpu.up(k, at.into_std(), cast.hub_cpu());
                if let Some(id) = track.call_id {
                    self.times.connected.entry(id).or_default().0 = Some(at);
                }
                let text = format!("Hello, I would like to open an account (from {}).", hands.name);
                if hands.texts.try_send(text).is_err() {
                    self.errors.push(format!("{}: could not queue a text", hands.name));
                }
                if track.hangs_up_itself {
                    let when = Instant::now() + self.opts.call_duration / 2 + Duration::from_nanos(k as u64);
                    self.hangups.insert(when, k);
                }
            }
            KioskState::Ended { reason } => {
                self.tally.done += 1;
                self.hub_cpu.down(k, at.into_std(), cast.hub_cpu());
                let ok = matches!(reason, EndReason::AgentHungUp | EndReason::KioskHungUp);
                if track.connected && ok {
                    self.tally.completed += 1;
                } else if track.connected {
                    self.errors.push(format!("{}: call ended: {}", hands.name, reason.describe()));
                } else {
                    self.tally.abandoned += 1;
                    self.errors.push(format!("{}: call abandoned: {}", hands.name, reason.describe()));
                }
                track.connected = false;
                track.call_id = None;
            }
            KioskState::Busy => {
                self.tally.done += 1;
                self.tally.abandoned += 1;
                self.errors.push(format!("{}: hub said busy", hands.name));
            }
            KioskState::Offline { .. } | KioskState::Requesting => {}
        }
    }

    /// Starts calls once every agent is IDLE and every kiosk idle; then presses CALL on any
    /// idle kiosk that has calls left.
    fn place_calls(&mut self, cast: &Cast) {
        if !self.started_calls
            && self.agents_idle.iter().all(|x| *x)
            && self.track.iter().all(|t| t.idle_seen)
        {
            self.started_calls = true;
            self.say(format!(
                "{} agents IDLE, {} kiosks idle: placing {} calls",
                self.opts.agents, self.opts.kiosks, self.opts.calls
            ));
        }
        if !self.started_calls {
            return;
        }
        for k in 0..self.track.len() {
            let t = &mut self.track[k];
            if t.calls_left > 0 && t.idle_seen && !t.connected {
                t.calls_left -= 1;
                t.idle_seen = false;
                t.hangs_up_itself = self.tally.requested % 3 == 2;
                self.tally.requested += 1;
                self.say(format!("{} customer presses CALL", cast.kiosks[k].name));
                cast.kiosks[k].panel.press(Button::Call);
            }
        }
    }

    /// The report, from the tally and what stopping the cast gave.
    pub(super) fn report(
        mut self,
        event_log: String,
        recordings: Option<super::report::Recordings>,
        screenshots: Option<Vec<String>>,
    ) -> DemoReport {
        let t = &self.tally;
        if t.texts_delivered < t.texts_sent {
            self.errors.push(format!(
                "{} of {} texts were not delivered",
                t.texts_sent - t.texts_delivered,
                t.texts_sent
            ));
        }
        if t.texts_received != t.texts_sent {
            self.errors.push(format!("{} texts shown for {} sent", t.texts_received, t.texts_sent));
        }
        let (offer_all, offer_unqueued) = self.offer_times();
        let media = self.opts.media;
        DemoReport {
            kiosks: self.opts.kiosks,
            agents: self.opts.agents,
            calls_requested: t.requested,
            calls_connected: t.connected,
            calls_completed: t.completed,
            calls_abandoned: t.abandoned,
            max_queue_position: t.max_pos,
            texts_sent: t.texts_sent,
            texts_delivered: t.texts_delivered,
            offer_ms: Percentiles::of_f64(offer_all).into(),
            offer_unqueued_ms: Percentiles::of_f64(offer_unqueued).into(),
            connect_ms: Percentiles::of_f64(self.connect_times()).into(),
            kiosk_to_agent: media.then(|| Direction {
                echo_return_db: echo_return_db(&pair(&self.agent_media, &self.kiosk_media), AGENT_TONE_HZ),
                ..Direction::from_pairs(&pair(&self.kiosk_media, &self.agent_media))
            }),
            agent_to_kiosk: media.then(|| Direction::from_pairs(&pair(&self.agent_media, &self.kiosk_media))),
            duration_s: (self.started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            event_log,
            recordings,
            screenshots,
            hub_cpu: self.hub_cpu.figures(),
            errors: self.errors,
        }
    }

    /// Completed calls, for checking the recordings.
    pub(super) fn completed(&self) -> usize {
        self.tally.completed
    }

    /// CALL press → offer, in ms: all calls, and those that found an agent free.
    fn offer_times(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut all, mut unqueued) = (Vec::new(), Vec::new());
        for (call_id, at) in &self.times.offered {
            if let Some(p) = self.times.press.get(call_id) {
                let ms = at.saturating_duration_since(*p).as_secs_f64() * 1000.0;
                all.push(ms);
                if self.times.unqueued.get(call_id) == Some(&true) {
                    unqueued.push(ms);
                }
            }
        }
        (all, unqueued)
    }

    /// Agent's accept → both sides connected, in ms.
    fn connect_times(&self) -> Vec<f64> {
        let mut connect = Vec::new();
        for (call_id, acc) in &self.times.accept {
            if let Some((Some(k), Some(a))) = self.times.connected.get(call_id) {
                connect.push((*k).max(*a).saturating_duration_since(*acc).as_secs_f64() * 1000.0);
            }
        }
        connect
    }
}
