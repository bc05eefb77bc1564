//! The hub's Prometheus metrics, served over plain HTTP on a configurable address
//! (`GET /metrics`, OpenMetrics text).
//!
//! Gauges come from the hub's status snapshot; counters and the wait and handle-time
//! histograms from the event records the queue core emits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::protocol::CallId;
use crate::queue::{Event, EventRecord};
use crate::roles::hub::HubStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KioskLabel {
    kiosk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartyLabel {
    role: String,
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Most calls tracked between queued and ended (open calls); older entries are forgotten.
const MAX_TRACKED_CALLS: usize = 100_000;

pub struct HubMetrics {
    registry: Registry,
    queue_length: Gauge,
    oldest_wait_seconds: Gauge<f64, AtomicU64>,
    agents: Family<StateLabel, Gauge>,
    calls_connected_now: Gauge,
    connections: Gauge,
    offered: Counter,
    answered: Counter,
    abandoned: Counter,
    moved_in: Counter,
    rejected_busy: Counter,
    offer_timeouts: Counter,
    recordings_finished: Counter,
    recordings_failed: Counter,
    refused: Gauge,
    flood_refused: Family<ReasonLabel, Gauge>,
    address_retries: Gauge,
    pending_handshakes: Gauge,
    wait_seconds: Histogram,
    handle_seconds: Histogram,
    media_packets: Family<KindLabel, Gauge>,
    media_bytes: Gauge,
    kiosk_connected: Family<KioskLabel, Gauge>,
    kiosk_healthy: Family<KioskLabel, Gauge>,
    kiosk_rtt_ms: Family<KioskLabel, Gauge>,
    kiosk_lost_packets: Family<KioskLabel, Gauge>,
    kiosk_sent_packets: Family<KioskLabel, Gauge>,
    certificate_expiry_days: Family<PartyLabel, Gauge<f64, AtomicU64>>,
    renewed: Gauge,
    renewals_refused: Gauge,
    /// The event log's shipping to the database, by kind.
    database: Family<KindLabel, Gauge>,
    /// call id → (queued ms, connected ms)
    open: HashMap<CallId, (Option<u64>, Option<u64>)>,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HubMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kioskd_hub");
        let m = Self {
            queue_length: Gauge::default(),
            oldest_wait_seconds: Gauge::default(),
            agents: Family::default(),
            calls_connected_now: Gauge::default(),
            connections: Gauge::default(),
            offered: Counter::default(),
            answered: Counter::default(),
            abandoned: Counter::default(),
            moved_in: Counter::default(),
            rejected_busy: Counter::default(),
            offer_timeouts: Counter::default(),
            recordings_finished: Counter::default(),
            recordings_failed: Counter::default(),
            refused: Gauge::default(),
            flood_refused: Family::default(),
            address_retries: Gauge::default(),
            pending_handshakes: Gauge::default(),
            wait_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            handle_seconds: Histogram::new(exponential_buckets(15.0, 2.0, 10)),
            media_packets: Family::default(),
            media_bytes: Gauge::default(),
            kiosk_connected: Family::default(),
            kiosk_healthy: Family::default(),
            kiosk_rtt_ms: Family::default(),
            kiosk_lost_packets: Family::default(),
            kiosk_sent_packets: Family::default(),
            certificate_expiry_days: Family::default(),
            renewed: Gauge::default(),
            renewals_refused: Gauge::default(),
            database: Family::default(),
            open: HashMap::new(),
            registry: Registry::default(),
        };
        m.register_calls(&mut registry);
        m.register_media(&mut registry);
        Self { registry, ..m }
    }

    /// The queue's and the calls' metrics.
    fn register_calls(&self, r: &mut Registry) {
        r.register("queue_length", "Callers waiting or being offered", self.queue_length.clone());
        r.register(
            "oldest_wait_seconds",
            "Wait of the caller first in line",
            self.oldest_wait_seconds.clone(),
        );
        r.register("agents", "Connected agents by room state", self.agents.clone());
        r.register("calls_in_progress", "Calls connected now", self.calls_connected_now.clone());
        r.register("connections", "Peers connected", self.connections.clone());
        r.register("calls_offered", "Offers made to agents", self.offered.clone());
        r.register("calls_answered", "Calls connected", self.answered.clone());
        r.register("calls_abandoned", "Calls that ended before an agent answered", self.abandoned.clone());
        r.register(
            "callers_moved_in",
            "Callers that kept their place from another hub of the deployment",
            self.moved_in.clone(),
        );
        r.register("calls_rejected_busy", "Callers turned away by a full queue", self.rejected_busy.clone());
        r.register("offer_timeouts", "Offers not answered in time", self.offer_timeouts.clone());
        r.register("recordings_finished", "Call recordings written whole", self.recordings_finished.clone());
        r.register(
            "recordings_failed",
            "Call recordings stopped by an error (the calls went on)",
            self.recordings_failed.clone(),
        );
        r.register("connections_refused", "Connections refused at the TLS handshake", self.refused.clone());
        r.register(
            "flood_refused",
            "Refused by the flood limits: new connections (handshake_rate, pending_handshakes, per_address), call requests and texts",
            self.flood_refused.clone(),
        );
        r.register(
            "address_retries",
            "New clients asked to prove their address (QUIC Retry) while many handshakes were in progress",
            self.address_retries.clone(),
        );
        r.register("pending_handshakes", "Handshakes in progress", self.pending_handshakes.clone());
        r.register(
            "certificate_expiry_days",
            "Days until the certificate expires: the hub's own and each connected party's",
            self.certificate_expiry_days.clone(),
        );
        r.register(
            "certificates_renewed",
            "Kiosk and agent certificates renewed on line",
            self.renewed.clone(),
        );
        r.register(
            "certificate_renewals_refused",
            "Renewal requests refused (no renewal CA, a bad request, too many)",
            self.renewals_refused.clone(),
        );
        r.register(
            "database_events",
            "Shipping the event log to the database (when configured): connected (0 or 1), shipped (lines), pending_bytes, skipped (lines), errors",
            self.database.clone(),
        );
        r.register(
            "wait_seconds",
            "Time from joining the queue to an agent answering",
            self.wait_seconds.clone(),
        );
        r.register("handle_seconds", "Time from answer to hang-up", self.handle_seconds.clone());
    }

    /// The relay's and the kiosks' metrics.
    fn register_media(&self, r: &mut Registry) {
        r.register("media_forwarded_packets", "Media relayed between call legs", self.media_packets.clone());
        r.register(
            "media_forwarded_bytes",
            "Media bytes relayed between call legs",
            self.media_bytes.clone(),
        );
        r.register(
            "kiosk_connected",
            "Kiosk connected to the hub (1) or not (0)",
            self.kiosk_connected.clone(),
        );
        r.register(
            "kiosk_healthy",
            "Kiosk reports all its devices working (1) or not (0)",
            self.kiosk_healthy.clone(),
        );
        r.register("kiosk_rtt_ms", "Round trip from the kiosk to the hub", self.kiosk_rtt_ms.clone());
        r.register(
            "kiosk_lost_packets",
            "Packets the kiosk's connection lost",
            self.kiosk_lost_packets.clone(),
        );
        r.register(
            "kiosk_sent_packets",
            "Packets the kiosk's connection sent",
            self.kiosk_sent_packets.clone(),
        );
    }

    /// Updates the gauges from a status snapshot.
    pub fn observe_status(&mut self, s: &HubStatus) {
        self.queue_length.set(s.snapshot.waiting as i64);
        self.oldest_wait_seconds.set(s.snapshot.oldest_wait.map_or(0.0, |d| d.as_secs_f64()));
        for state in ["IDLE", "OFFERED", "BUSY", "WRAP-UP", "CLOSE"] {
            let n = s.snapshot.agents.get(state).copied().unwrap_or(0);
            self.agents.get_or_create(&StateLabel { state: state.into() }).set(n as i64);
        }
        self.calls_connected_now.set(s.snapshot.calls_connected as i64);
        self.connections.set(s.connections as i64);
        self.refused.set(s.refused as i64);
        let limited = [("call_requests", s.stats.call_requests_limited), ("texts", s.stats.texts_limited)];
        for (reason, n) in s.flood.refused.iter().map(|(r, n)| (*r, *n)).chain(limited) {
            self.flood_refused.get_or_create(&ReasonLabel { reason: reason.into() }).set(n as i64);
        }
        self.address_retries.set(s.flood.retries as i64);
        self.pending_handshakes.set(i64::from(s.flood.pending_handshakes));
        // Only the parties connected now: the family is rebuilt each time.
        self.certificate_expiry_days.clear();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for c in &s.certificates {
            let l = PartyLabel { role: c.role.as_str().into(), id: c.id.clone() };
            self.certificate_expiry_days.get_or_create(&l).set((c.not_after - now) as f64 / 86_400.0);
        }
        self.renewed.set(s.renewed as i64);
        self.renewals_refused.set(s.renewals_refused as i64);
        if let Some(d) = &s.database {
            for (kind, v) in [
                ("connected", u64::from(d.connected)),
                ("shipped", d.shipped),
                ("pending_bytes", d.pending_bytes),
                ("skipped", d.skipped),
                ("errors", d.errors),
            ] {
                self.database.get_or_create(&KindLabel { kind: kind.into() }).set(v as i64);
            }
        }
        let m = &s.media;
        for (kind, v) in [
            ("audio_forwarded", m.audio_forwarded),
            ("audio_dropped", m.audio_dropped),
            ("video_forwarded", m.video_forwarded),
            ("video_dropped", m.video_dropped),
            ("invalid", m.invalid),
        ] {
            self.media_packets.get_or_create(&KindLabel { kind: kind.into() }).set(v as i64);
        }
        self.media_bytes.set(m.bytes as i64);
        for (id, k) in &s.kiosks {
            let l = KioskLabel { kiosk: id.clone() };
            self.kiosk_connected.get_or_create(&l).set(i64::from(k.connected));
            self.kiosk_healthy.get_or_create(&l).set(i64::from(k.health.problems.is_empty()));
            self.kiosk_rtt_ms.get_or_create(&l).set(i64::from(k.health.rtt_ms));
            self.kiosk_lost_packets.get_or_create(&l).set(k.health.lost_packets as i64);
            self.kiosk_sent_packets.get_or_create(&l).set(k.health.sent_packets as i64);
        }
    }

    /// Counts an event record.
    pub fn observe_event(&mut self, rec: &EventRecord) {
        match rec.event {
            Event::Offered => {
                self.offered.inc();
            }
            Event::RejectedBusy => {
                self.rejected_busy.inc();
            }
            Event::OfferTimeout => {
                self.offer_timeouts.inc();
            }
            Event::RecordingFinished => {
                self.recordings_finished.inc();
            }
            Event::RecordingFailed => {
                self.recordings_failed.inc();
            }
            Event::Queued => {
                if rec.moved.is_some() {
                    self.moved_in.inc();
                }
                // A caller from another hub waits from when it first joined.
                let joined = rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms);
                if let Some(id) = rec.call_id
                    && self.open.len() < MAX_TRACKED_CALLS
                {
                    self.open.insert(id, (Some(joined), None));
                }
            }
            Event::Connected => {
                self.answered.inc();
                if let Some(entry) = rec.call_id.and_then(|id| self.open.get_mut(&id)) {
                    entry.1 = Some(rec.ts_ms);
                    if let Some(q) = entry.0 {
                        self.wait_seconds.observe(rec.ts_ms.saturating_sub(q) as f64 / 1000.0);
                    }
                }
            }
            Event::Ended => {
                if let Some((_, Some(c))) = rec.call_id.and_then(|id| self.open.remove(&id)) {
                    self.handle_seconds.observe(rec.ts_ms.saturating_sub(c) as f64 / 1000.0);
                }
            }
            Event::Abandoned => {
                self.abandoned.inc();
                if let Some(id) = rec.call_id {
                    self.open.remove(&id);
                }
            }
            _ => {}
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until the task is aborted.
pub async fn serve(addr: SocketAddr, metrics: Arc<Mutex<HubMetrics>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "metrics on http://{local}/metrics");
    tokio::spawn(async move {
        while let Ok((mut sock, peer)) = listener.accept().await {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Requests are tiny; read at most 4 KiB of headers.
                let mut buf = [0u8; 4096];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if request.starts_with("GET /metrics ") {
                    let text = metrics.lock().map(|m| m.encode()).unwrap_or_default();
                    ("200 OK", text)
                } else {
                    ("404 Not Found", "see /metrics\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if sock.write_all(head.as_bytes()).await.is_err()
                    || sock.write_all(body.as_bytes()).await.is_err()
                {
                    debug!(%peer, "metrics client went away");
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;
    use crate::roles::hub::CertificateExpiry;

    #[test]
    fn certificate_expiry_shows_the_hub_and_the_parties_connected_now() {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut m = HubMetrics::new();
        let cert = |role, id: &str, days: i64| CertificateExpiry {
            role,
            id: id.into(),
            not_after: now + days * 86_400,
        };
        let mut s = HubStatus {
            certificates: vec![cert(Role::Hub, "hub-1", 400), cert(Role::Kiosk, "branch-1/kiosk-1", 12)],
            renewed: 3,
            ..HubStatus::default()
        };
        m.observe_status(&s);
        let text = m.encode();
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with("kioskd_hub_certificate_expiry_days{") && l.contains(id))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert!(line("hub-1").is_some_and(|d| (d - 400.0).abs() < 0.01), "{text}");
        assert!(line("branch-1/kiosk-1").is_some_and(|d| (d - 12.0).abs() < 0.01), "{text}");
        assert!(text.contains("kioskd_hub_certificates_renewed 3"), "{text}");
        // The kiosk goes: its series goes with it.
        s.certificates.truncate(1);
        m.observe_status(&s);
        assert!(!m.encode().contains("branch-1/kiosk-1"));
    }

    #[test]
    fn the_database_shipping_shows_when_there_is_a_database() {
        let mut m = HubMetrics::new();
        m.observe_status(&HubStatus::default());
        assert!(!m.encode().contains("kioskd_hub_database_events{"), "no database, no series");
        let database = crate::edges::db::ShipStatus {
            connected: true,
            shipped: 120,
            pending_bytes: 300,
            skipped: 1,
            errors: 2,
        };
        m.observe_status(&HubStatus { database: Some(database), ..HubStatus::default() });
        let text = m.encode();
        for line in [
            "kioskd_hub_database_events{kind=\"connected\"} 1",
            "kioskd_hub_database_events{kind=\"shipped\"} 120",
            "kioskd_hub_database_events{kind=\"pending_bytes\"} 300",
            "kioskd_hub_database_events{kind=\"errors\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_caller_from_another_hub_is_counted_and_waits_from_its_first_joining() {
        let mut m = HubMetrics::new();
        let rec = |ts_ms, event, moved| EventRecord {
            ts_ms,
            event,
            call_id: Some(4),
            kiosk: Some("branch-1/kiosk-1".into()),
            agent: None,
            detail: None,
            position: None,
            moved,
        };
        let moved = crate::queue::Moved { hub: "hub-a".into(), call_id: 9, joined_ms: 10_000 };
        m.observe_event(&rec(30_000, Event::Queued, Some(moved)));
        m.observe_event(&rec(40_000, Event::Connected, None));
        let text = m.encode();
        assert!(text.contains("kioskd_hub_callers_moved_in_total 1"), "{text}");
        // 30 s from the first joining on hub-a, not 10 s from joining here.
        assert!(text.contains("kioskd_hub_wait_seconds_sum 30.0"), "{text}");
    }
}
