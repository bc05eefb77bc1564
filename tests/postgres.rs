//! The hub with a real PostgreSQL (Debian's server, started by the test in a temporary folder):
//! the event log shipped to the database, `kioskd report --database` reading it, and nothing
//! lost or stored twice while the database restarts or the hub runs without it.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::postgres::Postgres;
use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::db::ShipStatus;
use kioskd::protocol::{Role, RoomState};
use kioskd::queue::{LogSummary, QueueConfig};
use kioskd::roles::agent::AgentEvent;
use kioskd::roles::hub::{self, HubOptions, RunningHub};
use tokio::sync::watch;

async fn start_hub_db(pki: &Pki, log: &Path, database: Option<String>) -> RunningHub {
    hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: pki.material(Role::Hub, "hub-a.test"),
        queue: QueueConfig { offer_timeout: Duration::from_secs(10), ..QueueConfig::default() },
        event_log: log.to_path_buf(),
        metrics: None,
        recording: None,
        crl: None,
        admission: Default::default(),
        renewal: None,
        // These tests are about the event log: a lease that outlasts the database's absence
        // keeps the hub offering while it is away (leases are tested in failover.rs).
        database: database.map(|url| hub::DatabaseOptions {
            url,
            advertise: None,
            lease: Duration::from_millis(*kioskd::edges::db::cluster::LEASE_RANGE_MS.end()),
        }),
        console: None,
    })
    .await
    .expect("hub starts")
}

/// One whole call through `hub`: an agent answers, talks 200 ms and hangs up.
async fn one_call(pki: &Pki, hub: &RunningHub, kiosk: &str) {
    let mut a = start_agent(pki, hub.local_addr, "agent-1", Some(auto(Some(200))));
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k = start_kiosk(pki, hub.local_addr, kiosk);
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    let _ = k.stop.send(true);
    let _ = a.stop.send(true);
    let _ = k.task.await;
    let _ = a.task.await;
}

fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log).expect("event log").lines().count()
}

async fn wait_ship(rx: &mut watch::Receiver<ShipStatus>, what: &str, pred: impl Fn(&ShipStatus) -> bool) {
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s))).await.map(|r| r.is_ok());
    if reached != Ok(true) {
        panic!("the event log's shipping never reached: {what} ({:?})", *rx.borrow());
    }
}

/// `kioskd report` of the file and of the database, as JSON.
fn reports(log: &Path, pg: &Postgres) -> (serde_json::Value, serde_json::Value) {
    let of = |args: &[&str]| {
        let out = kioskd_bin(args);
        assert!(out.status.success(), "{}", output_text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("a JSON report")
    };
    (of(&["report", log.to_str().expect("path")]), of(&["report", "--database", &pg.url]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_goes_to_postgresql_and_is_reported_from_it() {
    let pg = Postgres::start();
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");

    let hub = start_hub_db(&pki, &log, Some(pg.url.clone())).await;
    let mut ship = hub.database_status().expect("a database");
    wait_ship(&mut ship, "connected", |s| s.connected).await;
    // The hub's status (and so its metrics) carries the shipping's.
    let mut status = hub.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.database.as_ref().is_some_and(|d| d.connected)))
        .await
        .expect("the hub's status shows the database")
        .expect("status");
    one_call(&pki, &hub, "branch-1/kiosk-1").await;
    one_call(&pki, &hub, "branch-1/kiosk-2").await;
    hub.shutdown().await;
    let ship = ship.borrow().clone();
    let n = lines(&log);
    assert_eq!((ship.shipped, ship.pending_bytes, ship.skipped), (n as u64, 0, 0), "{ship:?}");

    let latest = kioskd::edges::db::MIGRATIONS.len().to_string();
    assert_eq!(pg.psql("SELECT max(version) FROM schema_migrations"), latest);
    assert_eq!(pg.psql("SELECT count(*) FROM events WHERE hub = 'hub-a.test'"), n.to_string());
    let (file, db) = reports(&log, &pg);
    assert_eq!(file, db, "the database's report is the file's");
    assert_eq!((db["calls"].as_u64(), db["answered"].as_u64()), (Some(2), Some(2)), "{db}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_stored_twice_while_the_database_is_away() {
    let pg = Postgres::start();
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");

    // A hub without the database first: its events are in the file only.
    let hub = start_hub_db(&pki, &log, None).await;
    one_call(&pki, &hub, "branch-2/kiosk-1").await;
    hub.shutdown().await;

    // With it: the earlier lines are shipped at start.
    let hub = start_hub_db(&pki, &log, Some(pg.url.clone())).await;
    let mut ship = hub.database_status().expect("a database");
    let before = lines(&log) as u64;
    wait_ship(&mut ship, "the earlier lines shipped", |s| s.shipped >= before).await;

    // The database stops mid-run: calls go on, their events wait in the file.
    pg.stop_server();
    one_call(&pki, &hub, "branch-2/kiosk-2").await;
    wait_ship(&mut ship, "the loss of the database seen", |s| !s.connected && s.errors > 0).await;
    let during = lines(&log) as u64;
    assert!(ship.borrow().shipped < during, "the call's events could not have been shipped");

    // Back: the hub catches up.
    pg.start_server();
    wait_ship(&mut ship, "caught up", |s| s.connected && s.shipped >= during).await;
    one_call(&pki, &hub, "branch-2/kiosk-3").await;
    hub.shutdown().await;

    let n = lines(&log);
    assert_eq!(ship.borrow().shipped, n as u64, "{:?}", *ship.borrow());
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events"),
        format!("{n}|{n}|0|{}", n - 1)
    );
    let (file, db) = reports(&log, &pg);
    assert_eq!(file, db, "the database's report is the file's");
    assert_eq!((db["calls"].as_u64(), db["answered"].as_u64()), (Some(3), Some(3)), "{db}");
    let summary = LogSummary::from_lines(std::fs::read_to_string(&log).expect("log").lines());
    assert_eq!(summary.bad_lines, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_configuration_refuse_a_bad_database_clearly() {
    let pg = Postgres::start();
    // A database no hub has used.
    let out = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("no kioskd schema"), "{}", output_text(&out));
    // Nothing listening.
    let out = kioskd_bin(&["report", "--database", "postgresql://kioskd:s3cret@127.0.0.1:1/kioskd"]);
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(text.contains("connecting") && !text.contains("s3cret"), "{text}");
    // A malformed string, password kept out of the message.
    let out = kioskd_bin(&["report", "--database", "postgresql://kioskd:s3cret@db:port/kioskd"]);
    let text = output_text(&out);
    assert!(!out.status.success() && !text.contains("s3cret") && text.contains("--database"), "{text}");
}

/// The database takes only TLS (1.3) connections and presents a certificate from the
/// deployment's CA: the hub ships over TLS (`sslmode=verify-full`, `sslrootcert`), the report
/// reads over it, and a hub or report given another CA is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_tls_and_a_server_not_from_its_ca_is_refused() {
    use std::net::IpAddr;
    let pki = Pki::new();
    let server = pki
        .ca
        .issue(Role::Hub, "db", &["localhost".to_string()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], 1)
        .expect("the database's certificate");
    let pg = Postgres::start_tls(&server.cert_pem, &server.key_pem);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("db-ca.pem");
    std::fs::write(&ca, &pki.ca.cert_pem).expect("the CA file");
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url, ca.display());

    // Without TLS the server refuses the connection (pg_hba: hostnossl reject).
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("no encryption"), "{}", output_text(&o));

    let log = dir.path().join("events.jsonl");
    let hub = start_hub_db(&pki, &log, Some(url.clone())).await;
    let mut ship = hub.database_status().expect("a database");
    wait_ship(&mut ship, "connected", |s| s.connected).await;
    one_call(&pki, &hub, "branch-1/kiosk-1").await;
    hub.shutdown().await;
    let n = lines(&log);
    assert_eq!(pg.psql("SELECT count(*) FROM events"), n.to_string());
    // The server saw TLS 1.3 (its own view of the connections it has now: the report's).
    let o = kioskd_bin(&["report", "--database", &url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!(report["answered"].as_u64(), Some(1), "{report}");
    let versions = pg.psql("SELECT string_agg(DISTINCT version, ',') FROM pg_stat_ssl WHERE ssl");
    assert_eq!(versions, "TLSv1.3", "psql's own connection, over TLS 1.3");

    // Another CA: the server is not authenticated, and nothing is sent to it.
    let other = Pki::new();
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, &other.ca.cert_pem).expect("the other CA file");
    let bad = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url, wrong.display());
    let o = kioskd_bin(&["report", "--database", &bad]);
    assert!(!o.status.success());
    let text = output_text(&o);
    assert!(text.contains("certificate") && !text.contains("password"), "{text}");
    // A setting that would not authenticate the server is refused before connecting.
    let o = kioskd_bin(&["report", "--database", &format!("{}?sslmode=require", pg.url)]);
    assert!(!o.status.success());
    assert!(output_text(&o).contains("verify-full"), "{}", output_text(&o));
}
