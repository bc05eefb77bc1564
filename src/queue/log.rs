//! Event log records and what can be computed from them.
//!
//! The hub appends one JSON object per line for every state change. The file is the
//! durable history: waiting time, handle time and abandoned calls are computed from it,
//! and a restarted hub rebuilds its call numbering and handle-time estimate from it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::CallId;

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Why (ended, abandoned, withdrawn) or the new state (agent_state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Queue position when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// On a `queued` event: the caller comes from another hub of the deployment, which had
    /// queued it first (that hub died or the kiosk lost it), and keeps its place from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
}

/// Where a caller that moved between hubs had waited first (see [`EventRecord::moved`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The hub that queued the caller first (its certificate's id).
    pub hub: String,
    /// The call's number on that hub.
    pub call_id: CallId,
    /// When the caller first joined a queue (ms since the Unix epoch): its place.
    pub joined_ms: u64,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    HubStarted,
    HubStopped,
    /// A kiosk asked for an agent and joined the queue.
    Queued,
    /// A kiosk asked for an agent and the queue was full.
    RejectedBusy,
    Offered,
    Declined,
    /// An offer was not answered in time; the agent was set to CLOSE.
    OfferTimeout,
    /// An offer was taken back because the caller left or lost its connection.
    OfferWithdrawn,
    Connected,
    /// A call in progress on another hub goes on through this one (that hub died, or its
    /// kiosk moved): `moved` names the hub, the call's number there, and when it was answered.
    Resumed,
    /// A connected call ended (`detail` = reason).
    Ended,
    /// A call ended before it was connected (`detail` = reason).
    Abandoned,
    KioskAway,
    KioskBack,
    AgentOnline,
    AgentOffline,
    /// An agent room changed state (`detail` = IDLE, OFFERED, BUSY, WRAP-UP, CLOSE).
    AgentState,
    /// The hub started recording a call (`detail` = the file).
    RecordingStarted,
    /// A call's recording is complete (`detail` = the file).
    RecordingFinished,
    /// A call's recording stopped on an error, e.g. a full disk (`detail` = the error); the
    /// call itself went on.
    RecordingFailed,
    /// A connected kiosk or agent was disconnected because its certificate was revoked
    /// (`detail` = the certificate's serial number).
    Revoked,
    /// The hub renewed a kiosk's or agent's certificate on line (`detail` = the new serial
    /// and its end of validity).
    CertificateRenewed,
    /// The hub did not renew a certificate it was asked to (`detail` = why).
    RenewalRefused,
    /// An advisor signed in to the browser console (`detail` = how, and from where).
    SignIn,
    /// A browser console sign-in failed or was refused by its rate limit (`detail` = why, and
    /// from where).
    SignInFailed,
    SignOut,
    /// The console refused a WebSocket (`detail` = why, e.g. a foreign origin).
    ConsoleRefused,
    /// A browser advisor's call was ended because the browser's media did not arrive: no
    /// WebRTC offer, no connection, or no frames for the console's `media_grace_s` (`detail`
    /// = which).
    BrowserMediaMissing,
    /// A browser advisor's page went in a call without hanging up (`detail` = how: the page
    /// was closed, its connection broke off, or it answered no ping); the call ends as for a
    /// lost agent.
    BrowserLost,
}

/// One call as reconstructed from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallHistory {
    pub kiosk: Option<String>,
    pub agent: Option<String>,
    pub queued_ms: Option<u64>,
    pub connected_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub abandoned: bool,
    pub reason: Option<String>,
    /// The call was recorded when it was answered here (`connected` with `recorded`).
    pub recorded: bool,
}

impl CallHistory {
    /// Time from joining the queue to connected (answered calls) or to leaving (abandoned).
    pub fn waiting(&self) -> Option<Duration> {
        let end = self.connected_ms.or(self.finished_ms)?;
        Some(Duration::from_millis(end.checked_sub(self.queued_ms?)?))
    }

    /// Time from connected to ended.
    pub fn handle_time(&self) -> Option<Duration> {
        let ended = self.finished_ms?;
        Some(Duration::from_millis(ended.checked_sub(self.connected_ms?)?))
    }

    pub fn is_open(&self) -> bool {
        self.finished_ms.is_none()
    }
}

/// What a log holds, computed by replaying it.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub calls: BTreeMap<CallId, CallHistory>,
    /// Lines that could not be parsed (a torn last line after a crash, or corruption).
    pub bad_lines: usize,
}

impl LogSummary {
    /// Replays lines of JSON; unparseable lines are counted, not fatal.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut summary = LogSummary::default();
        for line in lines {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<EventRecord>(line) {
                Ok(rec) => summary.apply(&rec),
                Err(_) => summary.bad_lines += 1,
            }
        }
        summary
    }

    /// Replays the records of several hubs (hub id and record, in time order), as the
    /// deployment's database holds them. Each hub numbers its calls from 1, so a call is known
    /// by its hub and number, renumbered here in order of appearance; a caller that moved to
    /// another hub (a `queued` event with [`EventRecord::moved`]) is one call, and what the
    /// hub it left writes about it afterwards (a restart closing it) is left out.
    pub fn from_hubs<'a>(records: impl IntoIterator<Item = (&'a str, &'a EventRecord)>) -> Self {
        let mut summary = LogSummary::default();
        let mut ids: BTreeMap<(&'a str, CallId), CallId> = BTreeMap::new();
        let mut left: std::collections::BTreeSet<(&'a str, CallId)> = Default::default();
        for (hub, rec) in records {
            let Some(call) = rec.call_id else { continue };
            // What a hub writes about a caller after it moved on is left out (a restart or
            // a grace closing its copy), unless the caller was answered there after all (a
            // hub cut off from the database that got its lease and its caller back).
            let answered_there = match rec.event {
                Event::Connected => true,
                Event::Ended => rec.detail.as_deref() != Some("hub_restart"),
                _ => false,
            };
            if left.contains(&(hub, call)) && !answered_there {
                continue;
            }
            // A hub that handed its caller to another (which says so in its `queued`) ends
            // nothing: the call goes on there.
            if rec.event == Event::Abandoned && rec.detail.as_deref() == Some(super::MOVED) {
                continue;
            }
            let next = ids.len() as CallId + 1;
            let id = match (&rec.moved, rec.event) {
                (Some(m), Event::Queued | Event::Resumed)
                    if ids.contains_key(&(m.hub.as_str(), m.call_id)) =>
                {
                    let id = ids[&(m.hub.as_str(), m.call_id)];
                    left.insert((m.hub.as_str(), m.call_id));
                    *ids.entry((hub, call)).or_insert(id)
                }
                _ => *ids.entry((hub, call)).or_insert(next),
            };
            let mut rec = rec.clone();
            rec.call_id = Some(id);
            summary.apply(&rec);
        }
        summary
    }

    pub fn apply(&mut self, rec: &EventRecord) {
        let Some(id) = rec.call_id else { return };
        let call = self.calls.entry(id).or_default();
        if rec.kiosk.is_some() {
            call.kiosk.clone_from(&rec.kiosk);
        }
        match rec.event {
            // A caller that moved from another hub waits from when it first joined.
            Event::Queued => call.queued_ms = Some(rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms)),
            Event::Connected => {
                call.connected_ms = Some(rec.ts_ms);
                call.agent.clone_from(&rec.agent);
                call.recorded = rec.detail.as_deref() == Some("recorded");
            }
            // The call goes on through another hub: answered when it was first answered.
            Event::Resumed => {
                if call.connected_ms.is_none() {
                    let answered = rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms);
                    call.connected_ms = Some(answered);
                    call.queued_ms.get_or_insert(answered);
                }
                call.agent.clone_from(&rec.agent);
            }
            Event::Ended | Event::Abandoned => {
                call.finished_ms = Some(rec.ts_ms);
                call.abandoned = rec.event == Event::Abandoned;
                call.reason.clone_from(&rec.detail);
            }
            _ => {}
        }
    }

    /// The first call id not used in the log.
    pub fn next_call_id(&self) -> CallId {
        self.calls.keys().next_back().map_or(1, |id| id + 1)
    }

    /// Handle times of the most recent `n` answered calls, oldest first.
    pub fn recent_handle_times(&self, n: usize) -> Vec<Duration> {
        let mut answered: Vec<_> =
            self.calls.values().filter_map(|c| Some((c.finished_ms?, c.handle_time()?))).collect();
        answered.sort();
        answered.iter().rev().take(n).rev().map(|(_, d)| *d).collect()
    }

    /// Calls that were queued or in progress when the log ends (the hub stopped without
    /// closing them).
    pub fn open_calls(&self) -> impl Iterator<Item = (CallId, &CallHistory)> {
        self.calls.iter().filter(|(_, c)| c.is_open()).map(|(id, c)| (*id, c))
    }

    pub fn report(&self) -> Report {
        let mut waits: Vec<u64> = Vec::new();
        let mut handles: Vec<u64> = Vec::new();
        let (mut answered, mut abandoned, mut open) = (0, 0, 0);
        for c in self.calls.values() {
            if c.queued_ms.is_none() {
                continue;
            }
            if c.abandoned {
                abandoned += 1;
            } else if c.connected_ms.is_some() {
                answered += 1;
            }
            if c.is_open() {
                open += 1;
            }
            if c.connected_ms.is_some()
                && let Some(w) = c.waiting()
            {
                waits.push(w.as_millis() as u64);
            }
            if let Some(h) = c.handle_time() {
                handles.push(h.as_millis() as u64);
            }
        }
        Report {
            calls: self.calls.values().filter(|c| c.queued_ms.is_some()).count(),
            answered,
            abandoned,
            open,
            wait_ms: Percentiles::of(&mut waits),
            handle_ms: Percentiles::of(&mut handles),
            bad_lines: self.bad_lines,
        }
    }
}

/// The figures a supervisor asks for.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub calls: usize,
    pub answered: usize,
    pub abandoned: usize,
    pub open: usize,
    pub wait_ms: Percentiles,
    pub handle_ms: Percentiles,
    pub bad_lines: usize,
}

/// Nearest-rank percentiles of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(sample: &mut [u64]) -> Self {
        let v: Vec<f64> = sample.iter().map(|&x| x as f64).collect();
        Self::of_f64(v)
    }

    pub fn of_f64(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[idx.clamp(1, v.len()) - 1]
        };
        Percentiles { count: v.len(), p50: rank(50.0), p95: rank(95.0), p99: rank(99.0), max: v[v.len() - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts_ms: u64, event: Event, call: CallId) -> String {
        serde_json::to_string(&EventRecord {
            ts_ms,
            event,
            call_id: Some(call),
            kiosk: Some(format!("k{call}")),
            agent: Some("a".into()),
            detail: None,
            position: None,
            moved: None,
        })
        .unwrap()
    }

    #[test]
    fn report_from_lines() {
        let lines = [
            rec(1000, Event::Queued, 1),
            rec(1500, Event::Queued, 2),
            rec(3000, Event::Connected, 1),
            rec(4000, Event::Abandoned, 2),
            rec(63000, Event::Ended, 1),
            rec(70000, Event::Queued, 3),
            "{\"ts_ms\":7".to_string(), // torn last line
        ];
        let s = LogSummary::from_lines(lines.iter().map(String::as_str));
        let r = s.report();
        assert_eq!((r.calls, r.answered, r.abandoned, r.open, r.bad_lines), (3, 1, 1, 1, 1));
        assert_eq!(r.wait_ms.p50, 2000.0);
        assert_eq!(r.handle_ms.p50, 60000.0);
        assert_eq!(s.next_call_id(), 4);
        assert_eq!(s.recent_handle_times(5), [Duration::from_secs(60)]);
        assert_eq!(s.open_calls().map(|(id, _)| id).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn several_hubs_number_their_calls_alike_and_a_moved_caller_is_one_call() {
        let parse = |line: String| serde_json::from_str::<EventRecord>(&line).unwrap();
        let on = |hub: &'static str, ts, event, call| (hub, parse(rec(ts, event, call)));
        let mut moved = parse(rec(9000, Event::Queued, 2));
        moved.moved = Some(Moved { hub: "hub-a".into(), call_id: 2, joined_ms: 1500 });
        let records = [
            on("hub-a", 1000, Event::Queued, 1),
            on("hub-b", 1200, Event::Queued, 1), // hub-b's call 1: another call
            on("hub-a", 1500, Event::Queued, 2),
            on("hub-a", 3000, Event::Connected, 1),
            on("hub-b", 3500, Event::Abandoned, 1),
            // hub-a died; the caller of its call 2 waits on as hub-b's call 2.
            ("hub-b", moved),
            on("hub-b", 12000, Event::Connected, 2),
            on("hub-b", 42000, Event::Ended, 2),
            // hub-a restarts and closes the call it had left open: not counted again.
            on("hub-a", 50000, Event::Abandoned, 2),
            on("hub-a", 63000, Event::Ended, 1),
        ];
        let s = LogSummary::from_hubs(records.iter().map(|(h, r)| (*h, r)));
        let r = s.report();
        assert_eq!((r.calls, r.answered, r.abandoned, r.open), (3, 2, 1, 0));
        // The moved caller waited from 1500 (on hub-a) to 12000 (answered on hub-b).
        let mut waits: Vec<_> = s.calls.values().filter_map(|c| c.connected_ms.and(c.waiting())).collect();
        waits.sort();
        assert_eq!(waits, [Duration::from_millis(2000), Duration::from_millis(10_500)]);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
