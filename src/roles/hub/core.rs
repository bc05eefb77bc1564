//! The hub's core task: the only owner of the queue core ([`AgentQueue`]). It feeds the core
//! what the connections report and carries out its outputs — messages to peers, the event
//! log, media routes, recordings — and publishes the hub's status.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::metrics::HubMetrics;
use super::peer::{self, CoreCmd, PeerLink, WriterCmd};
use super::recording::{Note, Recording};
use super::relay::{self, Leg};
use super::{HubStatus, KioskStatus, unix_ms};
use crate::edges::net::close_code;
use crate::limits::Refusal;
use crate::protocol::{CallId, HubMsg, Role};
use crate::queue::log::{Event, EventRecord};
use crate::queue::{AgentQueue, Input, Output, PeerId};
use crate::record::{Party, RecordingOptions};

pub(super) struct Core {
    pub(super) queue: AgentQueue,
    pub(super) links: HashMap<PeerId, PeerLink>,
    pub(super) log: BufWriter<File>,
    pub(super) status: watch::Sender<HubStatus>,
    pub(super) log_errors: u64,
    pub(super) refused: u64,
    /// Which call each routed peer's media belongs to.
    pub(super) routes: HashMap<PeerId, CallId>,
    /// Media counters of calls with at least one routed leg.
    pub(super) media: HashMap<CallId, relay::CallMedia>,
    /// Counters of finished calls, added up.
    pub(super) media_totals: relay::LegTotals,
    pub(super) metrics: Option<Arc<std::sync::Mutex<HubMetrics>>>,
    pub(super) heartbeat: u64,
    /// The last health each kiosk reported.
    pub(super) kiosks: BTreeMap<String, KioskStatus>,
    pub(super) recording: Option<RecordingOptions>,
    /// Recordings of calls in progress.
    pub(super) recordings: HashMap<CallId, Recording>,
    /// Where the recordings report.
    pub(super) notes: mpsc::UnboundedSender<Note>,
    /// Recordings to stop and finish (see [`super::stop_recordings`]).
    pub(super) stopper: mpsc::UnboundedSender<(Instant, Recording)>,
    pub(super) recordings_finished: u64,
    pub(super) recordings_failed: u64,
    /// Peers disconnected because their certificate was revoked.
    pub(super) revoked: u64,
    pub(super) revoked_serials: super::RevokedSerials,
    /// The flood limits on new connections, for their counters.
    pub(super) admission: peer::SharedAdmission,
    /// The hub's own certificate's end.
    pub(super) own_certificate: Option<super::CertificateExpiry>,
    pub(super) renewed: u64,
    pub(super) renewals_refused: u64,
    /// The event log's shipping to the database, when there is one.
    pub(super) database: Option<tokio::sync::watch::Receiver<crate::edges::db::ShipStatus>>,
    /// Where place lookups go (see [`super::find_places`]), when there is a database.
    pub(super) places: Option<mpsc::Sender<super::Lookup>>,
}

impl Core {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreCmd>,
        mut notes: mpsc::UnboundedReceiver<Note>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.drain();
            let now = Instant::now();
            if deadline.is_some_and(|d| now.into_std() >= d) {
                self.input(Input::Tick);
                continue;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => break,
                },
                () = sleep => self.input(Input::Tick),
                Some(note) = notes.recv() => self.on_recording_note(note),
                _ = heartbeat.tick() => self.heartbeat += 1,
                _ = shutdown.changed() => {
                    self.shut_down();
                    break;
                }
            }
        }
        self.finish(notes).await;
    }

    fn on_cmd(&mut self, cmd: CoreCmd) {
        match cmd {
            CoreCmd::Connected { peer, role, id, link } => {
                self.links.insert(peer, link);
                self.input(Input::Connected { peer, role, id });
            }
            CoreCmd::Message { peer, msg } => self.input(Input::Message { peer, msg }),
            CoreCmd::Disconnected { peer } => {
                if let Some(link) = self.links.remove(&peer)
                    && let Some(k) = self.kiosks.get_mut(&link.id)
                    && self.links.values().all(|l| l.id != link.id)
                {
                    k.connected = false;
                }
                if let Some(call_id) = self.routes.remove(&peer) {
                    self.finish_media(call_id);
                }
                self.input(Input::Disconnected { peer });
            }
            CoreCmd::Refused => self.refused += 1,
            CoreCmd::Revoked(serials) => self.revoke(&serials),
            CoreCmd::Renewal { role, id, outcome } => self.renewal(role, id, outcome),
            CoreCmd::PlaceFound { peer, call_id, place } => {
                self.input(Input::PlaceFound { peer, call_id, place });
            }
            CoreCmd::CallFound { peer, call_id, call } => {
                self.input(Input::CallFound { peer, call_id, call });
            }
            CoreCmd::Cluster(ev) => {
                use crate::edges::db::cluster::ClusterEvent;
                let input = match ev {
                    ClusterEvent::Lease { held } => Input::Lease { held },
                    ClusterEvent::Adopt { from, callers } => Input::Adopt { from, callers },
                    ClusterEvent::Released { kiosk } => Input::Released { kiosk },
                };
                self.input(input);
            }
            CoreCmd::FreeHub(found) => {
                let (address, callers) = found.map_or((None, Vec::new()), |(a, c)| (Some(a), c));
                self.input(Input::FreeHub { address, callers });
            }
            CoreCmd::Health { id, health } => {
                self.kiosks.insert(id, KioskStatus { connected: true, health });
            }
            CoreCmd::Console { event, agent, call_id, detail } => {
                self.console_event(event, agent, call_id, detail);
            }
        }
    }

    /// Every call ends, every peer is told, every recording is stopped.
    fn shut_down(&mut self) {
        self.input(Input::Shutdown);
        self.drain();
        for (_, link) in self.links.drain() {
            let _ = link.tx.try_send(WriterCmd::Close(close_code::SHUTDOWN, "hub shutting down".into()));
        }
        for (_, recording) in self.recordings.drain() {
            let _ = self.stopper.send((Instant::now(), recording));
        }
    }

    /// Recordings still being finished report until their threads end (each holds a sender;
    /// the core's own are dropped here), within a bound in case a disk hangs.
    async fn finish(mut self, mut notes: mpsc::UnboundedReceiver<Note>) {
        self.notes = mpsc::unbounded_channel().0;
        self.stopper = mpsc::unbounded_channel().0;
        let finishing = async {
            while let Some(note) = notes.recv().await {
                self.on_recording_note(note);
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), finishing).await.is_err() {
            warn!("recordings not finished within 30 s of shutdown");
        }
        self.drain();
        if let Err(e) = self.log.flush() {
            error!(error = %e, "event log flush failed");
        }
        info!("hub stopped");
    }

    fn input(&mut self, input: Input) {
        if let Err(e) = self.queue.handle_input(input, Instant::now().into_std()) {
            error!(error = %e, "queue core refused input");
        }
    }

    /// Carries out the core's outputs; returns its next deadline.
    fn drain(&mut self) -> Option<std::time::Instant> {
        let mut wrote = false;
        let deadline = loop {
            match self.queue.poll_output() {
                Output::Send { peer, msg } => self.send(peer, msg),
                Output::Close { peer, reason } => {
                    if let Some(link) = self.links.remove(&peer) {
                        warn!(peer, remote = %link.remote, id = %link.id, %reason, "refusing peer");
                        if link.tx.try_send(WriterCmd::Close(close_code::REFUSED, reason.clone())).is_err() {
                            link.conn.close(close_code::REFUSED, reason.as_bytes());
                        }
                    }
                }
                Output::Event(rec) => {
                    wrote = true;
                    self.log_event(&rec);
                }
                Output::Route { peer, to } => self.route(peer, to),
                Output::StartRecording { call_id, kiosk, agent } => {
                    self.start_recording(call_id, &kiosk, &agent);
                }
                Output::StopRecording { call_id } => {
                    if let Some(recording) = self.recordings.remove(&call_id) {
                        let at = Instant::now() + crate::media::DRAIN + Duration::from_millis(100);
                        let _ = self.stopper.send((at, recording));
                    }
                }
                Output::Reclaim { callers } => {
                    if let Some(p) = &self.places
                        && p.try_send(super::Lookup::Reclaim(callers)).is_err()
                    {
                        warn!("too many database lookups waiting: callers not reclaimed");
                    }
                }
                Output::FindFreeHub { callers } => {
                    // A lookup that cannot be queued is skipped: the core asks again later.
                    if let Some(p) = &self.places {
                        let _ = p.try_send(super::Lookup::FreeHub(callers));
                    }
                }
                Output::FindCall { peer, agent, call_id } => {
                    let query = super::Lookup::Call { peer, agent, call_id };
                    if self.places.as_ref().is_none_or(|p| p.try_send(query).is_err()) {
                        self.input(Input::CallFound { peer, call_id, call: None });
                    }
                }
                Output::FindPlace { peer, kiosk, call_id } => {
                    let query = super::Lookup::Place { peer, kiosk, call_id };
                    // Without a database, or with too many lookups waiting, there is no place
                    // to find: the kiosk asks afresh.
                    if self.places.as_ref().is_none_or(|p| p.try_send(query).is_err()) {
                        self.input(Input::PlaceFound { peer, call_id, place: None });
                    }
                }
                Output::Wait(deadline) => break deadline,
            }
        };
        if wrote {
            self.flush_log();
        }
        self.publish_status();
        deadline
    }

    /// What the hub reports: to the status watch and the metrics.
    fn publish_status(&mut self) {
        let now = Instant::now().into_std();
        let status = HubStatus {
            stats: self.queue.stats().clone(),
            snapshot: self.queue.snapshot(now),
            connections: self.links.len(),
            refused: self.refused,
            revoked: self.revoked,
            event_log_errors: self.log_errors,
            media: {
                let mut t = self.media_totals.clone();
                for m in self.media.values() {
                    t.add(&m.totals());
                }
                t
            },
            heartbeat: self.heartbeat,
            kiosks: self.kiosks.clone(),
            recordings_active: self.recordings.len(),
            recordings_finished: self.recordings_finished,
            recordings_failed: self.recordings_failed,
            flood: self.flood(),
            certificates: self.certificates(),
            renewed: self.renewed,
            renewals_refused: self.renewals_refused,
            database: self.database.as_ref().map(|d| d.borrow().clone()),
        };
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.observe_status(&status);
        }
        self.status.send_replace(status);
    }

    fn certificates(&self) -> Vec<super::CertificateExpiry> {
        let mut parties: Vec<super::CertificateExpiry> = self
            .links
            .values()
            .filter_map(|l| {
                Some(super::CertificateExpiry { role: l.role, id: l.id.clone(), not_after: l.not_after? })
            })
            .collect();
        parties.sort_by(|a, b| (a.role, &a.id).cmp(&(b.role, &b.id)));
        parties.dedup();
        self.own_certificate.iter().cloned().chain(parties).collect()
    }

    /// Logs a renewal the connection task did (or refused).
    fn renewal(&mut self, role: Role, id: String, outcome: Result<String, String>) {
        let (event, detail) = match outcome {
            Ok(d) => {
                self.renewed += 1;
                (Event::CertificateRenewed, d)
            }
            Err(d) => {
                self.renewals_refused += 1;
                (Event::RenewalRefused, d)
            }
        };
        let parties = if role == Role::Kiosk { (Some(id), None) } else { (None, Some(id)) };
        self.log_now(event, None, parties, detail);
        self.publish_status();
    }

    /// Logs what the browser console did (sign-ins, refusals).
    fn console_event(&mut self, what: &str, agent: String, call_id: Option<CallId>, detail: String) {
        let event = match what {
            "sign_in" => Event::SignIn,
            "sign_out" => Event::SignOut,
            "sign_in_failed" => Event::SignInFailed,
            "sign_in_refused" => Event::SignInFailed,
            "browser_media_missing" => Event::BrowserMediaMissing,
            "browser_lost" => Event::BrowserLost,
            _ => Event::ConsoleRefused,
        };
        self.log_now(event, call_id, (None, (!agent.is_empty()).then_some(agent)), detail);
    }

    fn flood(&self) -> super::FloodStatus {
        let admission = peer::lock(&self.admission);
        super::FloodStatus {
            refused: Refusal::ALL.iter().map(|r| (r.as_str(), admission.refused(*r))).collect(),
            retries: admission.retries(),
            pending_handshakes: admission.pending(),
        }
    }

    /// Points `peer`'s media at its partner's connection, or nowhere.
    fn route(&mut self, peer: PeerId, to: Option<(PeerId, CallId)>) {
        let leg = to.and_then(|(partner, call_id)| {
            let to = self.links.get(&partner)?.conn.sink();
            let counters = self.media.entry(call_id).or_default().leg(peer);
            let party = match self.links.get(&peer)?.role {
                Role::Agent => Party::Agent,
                _ => Party::Kiosk,
            };
            let tap = self.recordings.get(&call_id).map(|r| r.tap(party));
            Some(Leg { call_id, to, counters, tap })
        });
        if let Some(old) = self.routes.remove(&peer) {
            self.finish_media(old);
        }
        if let Some(leg) = &leg {
            self.routes.insert(peer, leg.call_id);
        }
        if let Some(link) = self.links.get(&peer) {
            // Read first: the watch's read guard must be gone before it is written.
            let current = link.route.borrow().as_ref().map(|l| l.call_id);
            match (&leg, current) {
                // A call ended: keep relaying what is already on its way for a moment (the
                // senders stopped capturing), then stop, unless a new call took the route.
                (None, Some(ended)) => {
                    let route = link.route.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(crate::media::DRAIN).await;
                        route.send_if_modified(|r| {
                            let stale = r.as_ref().is_some_and(|l| l.call_id == ended);
                            if stale {
                                *r = None;
                            }
                            stale
                        });
                    });
                }
                _ => {
                    link.route.send_replace(leg);
                }
            }
        }
    }

    /// Logs a call's media counters once neither leg is routed any more.
    fn finish_media(&mut self, call_id: CallId) {
        if self.routes.values().any(|&c| c == call_id) {
            return;
        }
        if let Some(media) = self.media.remove(&call_id) {
            let t = media.totals();
            info!(
                call_id,
                audio_forwarded = t.audio_forwarded,
                audio_dropped = t.audio_dropped,
                video_forwarded = t.video_forwarded,
                video_dropped = t.video_dropped,
                invalid = t.invalid,
                kbytes = t.bytes / 1000,
                "call media relayed"
            );
            self.media_totals.add(&t);
        }
    }

    /// Appends a record to the event log (flushed by the caller) and counts it in the metrics.
    /// Writes one record made now, outside the queue core's outputs, and flushes the log.
    fn log_now(
        &mut self,
        event: Event,
        call_id: Option<CallId>,
        (kiosk, agent): (Option<String>, Option<String>),
        detail: String,
    ) {
        let rec = EventRecord {
            ts_ms: unix_ms(),
            event,
            call_id,
            kiosk,
            agent,
            detail: Some(detail),
            position: None,
            moved: None,
        };
        self.log_event(&rec);
        self.flush_log();
    }

    fn flush_log(&mut self) {
        if let Err(e) = self.log.flush() {
            self.log_errors += 1;
            error!(error = %e, "event log flush failed");
        }
    }

    fn log_event(&mut self, rec: &EventRecord) {
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.observe_event(rec);
        }
        let line = serde_json::to_string(rec).unwrap_or_default();
        if let Err(e) = writeln!(self.log, "{line}") {
            self.log_errors += 1;
            error!(error = %e, "event log write failed");
        }
    }

    /// Disconnects every peer whose certificate `serials` names; their calls end as when a
    /// peer is lost.
    fn revoke(&mut self, serials: &std::collections::HashSet<Vec<u8>>) {
        serials
            .clone_into(&mut self.revoked_serials.write().unwrap_or_else(std::sync::PoisonError::into_inner));
        let revoked: Vec<(PeerId, Role, String, Vec<u8>)> = self
            .links
            .iter()
            .filter_map(|(peer, l)| {
                l.serial
                    .as_ref()
                    .filter(|s| serials.contains(*s))
                    .map(|s| (*peer, l.role, l.id.clone(), s.clone()))
            })
            .collect();
        for (peer, role, id, serial) in revoked {
            warn!(%role, id = %id, "certificate revoked: disconnected");
            let (kiosk, agent) = if role == Role::Kiosk { (Some(id), None) } else { (None, Some(id)) };
            let rec = EventRecord {
                ts_ms: unix_ms(),
                event: Event::Revoked,
                call_id: None,
                kiosk,
                agent,
                detail: Some(crate::edges::net::certs::hex(&serial)),
                position: None,
                moved: None,
            };
            self.log_event(&rec);
            self.revoked += 1;
            if let Some(l) = self.links.get(&peer) {
                l.conn.close(close_code::REVOKED, b"certificate revoked");
            }
        }
        self.flush_log();
        self.publish_status();
    }

    /// Logs a recording's event now, with its call's parties.
    fn log_recording(&mut self, event: Event, call_id: CallId, detail: String) {
        self.log_now(event, Some(call_id), (None, None), detail);
    }

    fn start_recording(&mut self, call_id: CallId, kiosk: &str, agent: &str) {
        let Some(opts) = &self.recording else { return };
        match Recording::start(&opts.dir, call_id, kiosk, agent, self.notes.clone()) {
            Ok(recording) => {
                self.recordings.insert(call_id, recording);
            }
            Err(e) => {
                error!(call_id, error = %e, "recording not started; the call goes on");
                self.recordings_failed += 1;
                self.log_recording(Event::RecordingFailed, call_id, format!("not started: {e}"));
            }
        }
    }

    fn on_recording_note(&mut self, note: Note) {
        match note {
            Note::Started { call_id, path } => {
                self.log_recording(Event::RecordingStarted, call_id, path.display().to_string());
            }
            Note::Finished { call_id, path, .. } => {
                self.recordings_finished += 1;
                self.log_recording(Event::RecordingFinished, call_id, path.display().to_string());
            }
            Note::Failed { call_id, error } => {
                self.recordings_failed += 1;
                self.log_recording(Event::RecordingFailed, call_id, error);
            }
            Note::KeyframeNeeded { call_id, party } => {
                let role = match party {
                    Party::Kiosk => Role::Kiosk,
                    Party::Agent => Role::Agent,
                };
                let peer = self
                    .routes
                    .iter()
                    .find(|(p, c)| **c == call_id && self.links.get(p).is_some_and(|l| l.role == role))
                    .map(|(p, _)| *p);
                if let Some(peer) = peer {
                    self.send(peer, HubMsg::KeyframeRequest { call_id });
                }
            }
        }
    }

    fn send(&mut self, peer: PeerId, msg: HubMsg) {
        let Some(link) = self.links.get(&peer) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = link.tx.try_send(WriterCmd::Msg(msg)) {
            warn!(peer, remote = %link.remote, id = %link.id, "peer cannot keep up with its messages; disconnecting it");
            link.conn.close(close_code::TOO_SLOW, b"too slow");
            self.links.remove(&peer);
        }
    }
}
