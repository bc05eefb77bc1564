//! `kioskd bench --offers`: how many offers a deployment of one or more hubs makes per second,
//! with kiosks that call again as soon as their call ends and advisors that answer at once.
//!
//! Every kiosk and advisor is a real client (QUIC, mutual TLS with its own certificate, the
//! control protocol), without media: the figure is the queue's, signalling and event log
//! included, not the relay's (`--load` measures that). Kiosk `i` and advisor `j` are spread
//! over the hubs in turn, so each hub serves its share of both. With more kiosks than
//! advisors a queue stands on every hub for the whole run, and every advisor that hangs up is
//! offered the next caller at once.
//!
//! With `--database`, the run also waits until every offer made is in the deployment's
//! database (the hubs ship their events there): the rate counts only if the database keeps up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::load::load_material;
use crate::edges::db::Database;
use crate::edges::net::client::{self, Session};
use crate::edges::net::tls::client_config;
use crate::protocol::{CallId, ClientMsg, HubMsg, Presence, Role};

/// Longest wait for the database to hold every offer after the run.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct OffersOptions {
    /// The deployment's hubs; parties are spread over them in turn.
    pub hubs: Vec<SocketAddr>,
    pub server_name: String,
    /// Holds `ca.pem` and the certificates of `agent-1..=agents` and
    /// `branch-1/kiosk-1..=kiosks`, as `kioskd certs issue` writes them.
    pub certs: PathBuf,
    pub kiosks: usize,
    pub agents: usize,
    pub duration: Duration,
    /// The deployment's database, to see it keep up.
    pub database: Option<String>,
}

/// One JSON line.
#[derive(Debug, Serialize)]
pub struct OffersReport {
    pub bench: &'static str,
    pub hubs: usize,
    pub kiosks: usize,
    pub agents: usize,
    pub duration_s: f64,
    /// Offers the advisors received during the run.
    pub offers: u64,
    pub offers_per_s: f64,
    /// Offers per hub, in the order the hubs were given.
    pub offers_per_hub: Vec<u64>,
    /// Calls that connected and were hung up during the run.
    pub calls: u64,
    /// From the kiosk's request to its `connected`, over the calls of the run (a queue stands:
    /// this is mostly time spent waiting for an advisor).
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    /// From an advisor's hang-up (the kiosk's) to its next offer.
    pub next_offer_p50_ms: f64,
    pub next_offer_p99_ms: f64,
    /// A call offered twice on one hub while its first offer stood (must be 0).
    pub double_offers: u64,
    /// After the run, until the database held every offer made (with `--database`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_caught_up_ms: Option<u64>,
    /// The offers over the run and the catch-up together: the rate that the hubs and the
    /// database sustain together (with `--database`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained_offers_per_s: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Tally {
    offers_per_hub: Vec<u64>,
    calls: u64,
    connect_ms: Vec<f64>,
    next_offer_ms: Vec<f64>,
    double_offers: u64,
    /// Calls offered and not yet answered or withdrawn, per hub.
    open: Vec<HashMap<CallId, String>>,
}

async fn connect(
    opts: &OffersOptions,
    hub: SocketAddr,
    id: &str,
    role: Role,
) -> anyhow::Result<(quinn::Endpoint, Session)> {
    let material = load_material(&opts.certs, id)?;
    let endpoint =
        client::endpoint(client_config(&material)?, hub.is_ipv6()).context("binding a client endpoint")?;
    let session = client::connect(&endpoint, hub, &opts.server_name, role)
        .await
        .with_context(|| format!("`{id}` connecting to {hub}"))?;
    Ok((endpoint, session))
}

/// Offers of the whole deployment stored in its database.
async fn stored_offers(db: &Database) -> anyhow::Result<u64> {
    db.count_events("offered").await.context("counting the offers in the database")
}

/// Runs the kiosks and advisors and reports.
pub async fn run(opts: OffersOptions) -> anyhow::Result<OffersReport> {
    anyhow::ensure!(!opts.hubs.is_empty(), "at least one hub");
    anyhow::ensure!(opts.kiosks >= 1 && opts.agents >= 1, "at least one kiosk and one advisor");
    let db = match &opts.database {
        Some(url) => Some(Database::connect_read(url).await.context("connecting to the database")?),
        None => None,
    };
    let stored_before = match &db {
        Some(db) => stored_offers(db).await?,
        None => 0,
    };
    let n = opts.hubs.len();
    let tally = Arc::new(Mutex::new(Tally {
        offers_per_hub: vec![0; n],
        open: vec![HashMap::new(); n],
        ..Tally::default()
    }));
    // Advisors first, each IDLE, then the kiosks.
    let mut agents = Vec::new();
    for j in 0..opts.agents {
        let hub = j % n;
        let (ep, mut s) = connect(&opts, opts.hubs[hub], &format!("agent-{}", j + 1), Role::Agent).await?;
        s.writer.send(&ClientMsg::SetPresence { presence: Presence::Idle }).await?;
        agents.push((hub, ep, s));
    }
    let mut kiosks = Vec::new();
    for i in 0..opts.kiosks {
        let hub = i % n;
        let (ep, s) =
            connect(&opts, opts.hubs[hub], &format!("branch-1/kiosk-{}", i + 1), Role::Kiosk).await?;
        kiosks.push((hub, ep, s));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut parties = JoinSet::new();
    let started = Instant::now();
    for (hub, ep, s) in agents {
        let (tally, stop) = (tally.clone(), stop_rx.clone());
        parties.spawn(async move {
            let r = advisor(hub, s, tally, stop).await;
            ep.close(0u32.into(), b"done");
            r
        });
    }
    for (_, ep, s) in kiosks {
        let (tally, stop) = (tally.clone(), stop_rx.clone());
        parties.spawn(async move {
            let r = kiosk(s, tally, stop).await;
            ep.close(0u32.into(), b"done");
            r
        });
    }
    tokio::time::sleep(opts.duration).await;
    let _ = stop_tx.send(true);
    let duration_s = started.elapsed().as_secs_f64();
    let mut errors = Vec::new();
    while let Some(r) = parties.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("party task: {e}")),
        }
    }
    let mut t = tally.lock().await;
    let offers: u64 = t.offers_per_hub.iter().sum();
    let database_caught_up_ms = match &db {
        Some(db) => {
            let ended = Instant::now();
            loop {
                let stored = stored_offers(db).await?.saturating_sub(stored_before);
                if stored >= offers {
                    break Some(ended.elapsed().as_millis() as u64);
                }
                if ended.elapsed() > CATCH_UP_TIMEOUT {
                    errors.push(format!(
                        "the database held {stored} of the {offers} offers {CATCH_UP_TIMEOUT:?} after the run"
                    ));
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        None => None,
    };
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        (v[i.min(v.len() - 1)] * 10.0).round() / 10.0
    };
    let mut connect_ms = std::mem::take(&mut t.connect_ms);
    let mut next_offer_ms = std::mem::take(&mut t.next_offer_ms);
    Ok(OffersReport {
        bench: "cluster_offers",
        hubs: n,
        kiosks: opts.kiosks,
        agents: opts.agents,
        duration_s: (duration_s * 100.0).round() / 100.0,
        offers,
        offers_per_s: (offers as f64 / duration_s * 10.0).round() / 10.0,
        offers_per_hub: t.offers_per_hub.clone(),
        calls: t.calls,
        connect_p50_ms: pct(&mut connect_ms, 0.5),
        connect_p99_ms: pct(&mut connect_ms, 0.99),
        next_offer_p50_ms: pct(&mut next_offer_ms, 0.5),
        next_offer_p99_ms: pct(&mut next_offer_ms, 0.99),
        double_offers: t.double_offers,
        sustained_offers_per_s: database_caught_up_ms
            .map(|ms| (offers as f64 / (duration_s + ms as f64 / 1000.0) * 10.0).round() / 10.0),
        database_caught_up_ms,
        errors,
    })
}

/// An advisor: accepts every offer at once; the kiosk hangs up.
async fn advisor(
    hub: usize,
    mut s: Session,
    tally: Arc<Mutex<Tally>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut free_since: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            msg = s.reader.recv::<HubMsg>() => msg.with_context(|| format!("`{}` reading", s.id))?,
        };
        match msg {
            HubMsg::Offer { call_id, kiosk, .. } => {
                let mut t = tally.lock().await;
                t.offers_per_hub[hub] += 1;
                if let Some(ms) = free_since.take().map(|f| f.elapsed().as_secs_f64() * 1000.0) {
                    t.next_offer_ms.push(ms);
                }
                if t.open[hub].insert(call_id, s.id.clone()).is_some() {
                    t.double_offers += 1;
                }
                drop(t);
                let _ = kiosk;
                s.writer.send(&ClientMsg::Accept { call_id }).await?;
            }
            HubMsg::OfferWithdrawn { call_id, .. } => {
                tally.lock().await.open[hub].remove(&call_id);
            }
            HubMsg::Connected { call_id, .. } => {
                tally.lock().await.open[hub].remove(&call_id);
            }
            HubMsg::CallEnded { .. } => free_since = Some(Instant::now()),
            HubMsg::Error { message, fatal: true } => bail!("`{}`: the hub refused: {message}", s.id),
            _ => {}
        }
    }
}

/// A kiosk: asks for an advisor, hangs up as soon as connected, and asks again.
async fn kiosk(
    mut s: Session,
    tally: Arc<Mutex<Tally>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let asked = Instant::now();
        s.writer.send(&ClientMsg::RequestAgent { resume: None, consent: true }).await?;
        let call_id = loop {
            let msg = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                msg = s.reader.recv::<HubMsg>() => msg.with_context(|| format!("`{}` waiting", s.id))?,
            };
            match msg {
                HubMsg::Connected { call_id, .. } => break call_id,
                HubMsg::Busy { .. } => bail!("`{}`: the hub's queue is full", s.id),
                HubMsg::CallEnded { call_id, reason } => {
                    bail!("`{}`: call {call_id} ended before it connected ({reason:?})", s.id)
                }
                HubMsg::Error { message, .. } => bail!("`{}`: the hub refused: {message}", s.id),
                _ => {}
            }
        };
        let connect_ms = asked.elapsed().as_secs_f64() * 1000.0;
        s.writer.send(&ClientMsg::HangUp { call_id }).await?;
        // The hub confirms the end; then the kiosk is free to call again.
        loop {
            let msg = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                msg = s.reader.recv::<HubMsg>() => msg.with_context(|| format!("`{}` hanging up", s.id))?,
            };
            if matches!(msg, HubMsg::CallEnded { call_id: c, .. } if c == call_id) {
                break;
            }
        }
        let mut t = tally.lock().await;
        t.calls += 1;
        t.connect_ms.push(connect_ms);
    }
}
