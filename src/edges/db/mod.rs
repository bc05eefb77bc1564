//! PostgreSQL: the store that several hubs of one deployment share (the bank already runs
//! PostgreSQL; no home-made cluster). This first part holds the schema and its versioned
//! migrations, and the event log: every hub appends its events, and `kioskd report
//! --database` reads the whole deployment's. Without a database a hub keeps its event log in a
//! file, as before.
//!
//! Migrations are SQL files in `migrations/`, compiled in, applied in order inside one
//! transaction under an advisory lock, so that hubs starting together apply each exactly once.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::protocol::CallId;
use crate::queue::log::{Event, EventRecord, Moved};
use tracing::{info, warn};

pub mod ship;

pub use ship::{ShipStatus, Shipper};

/// The schema's versions, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "event log", include_str!("../../../migrations/0001_events.sql")),
    (2, "events by kiosk", include_str!("../../../migrations/0002_kiosk_index.sql")),
];

/// The advisory lock key under which migrations run ("kioskd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b696f736b64;

/// Longest wait for the database to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The message names what was being done; the driver's error follows.
    #[error("PostgreSQL, {what}: {source}")]
    Postgres {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL: no answer from {0} within {CONNECT_TIMEOUT:?}")]
    Timeout(String),
    #[error("the database's schema is version {found}, newer than this kioskd's {known}: upgrade kioskd")]
    TooNew { found: i32, known: i32 },
    #[error("PostgreSQL: the connection ended")]
    Closed,
    #[error("the database has no kioskd schema: no hub has used it yet")]
    NoSchema,
    #[error("event {0} in the database is not an event record: {1}")]
    BadEvent(i64, String),
}

fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |source| DbError::Postgres { what, source }
}

/// A connection to the deployment's database.
pub struct Database {
    client: Client,
}

impl Database {
    /// Connects to `url` (`postgresql://user@host:port/dbname`; a password in it is never
    /// logged) and brings the schema up to date (what a hub does).
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let mut db = Self::open(url).await?;
        let applied = db.migrate().await?;
        info!(database = %redact(url), schema = MIGRATIONS.len(), applied, "database ready");
        Ok(db)
    }

    /// Connects to `url` to read (what `kioskd report` does): the schema is not changed, and
    /// must be one this kioskd knows.
    pub async fn connect_read(url: &str) -> Result<Self, DbError> {
        let db = Self::open(url).await?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        match db.schema_version().await {
            Ok(0) => Err(DbError::NoSchema),
            Ok(found) if found > known => Err(DbError::TooNew { found, known }),
            Ok(_) => Ok(db),
            // No schema_migrations table: no hub has used this database.
            Err(DbError::Postgres { source, .. })
                if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                Err(DbError::NoSchema)
            }
            Err(e) => Err(e),
        }
    }

    async fn open(url: &str) -> Result<Self, DbError> {
        let shown = redact(url);
        let connecting = tokio_postgres::connect(url, NoTls);
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| DbError::Timeout(shown))?
            .map_err(pg("connecting"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Self { client })
    }

    /// Applies the migrations not applied yet; returns how many it applied.
    pub async fn migrate(&mut self) -> Result<usize, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting the migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("locking the migration"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg("creating schema_migrations"))?;
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await
            .map_err(pg("reading the schema version"))?;
        let current: i32 = row.get(0);
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(DbError::TooNew { found: current, known });
        }
        let mut applied = 0;
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).await.map_err(pg("applying a migration"))?;
            tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
                .await
                .map_err(pg("recording a migration"))?;
            applied += 1;
        }
        tx.commit().await.map_err(pg("committing the migration"))?;
        Ok(applied)
    }

    /// The schema version now.
    pub async fn schema_version(&self) -> Result<i32, DbError> {
        let row = self
            .client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await
            .map_err(pg("reading the schema version"))?;
        Ok(row.get(0))
    }

    /// Stores event records of `hub` (each its line number in the hub's event log file and the
    /// JSON line), in one transaction: all or none. A line stored before is left as it is.
    pub async fn append_events(&mut self, hub: &str, lines: &[(i64, String)]) -> Result<u64, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting to append events"))?;
        let insert = tx
            .prepare(
                "INSERT INTO events (hub, seq, record) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (hub, seq) DO NOTHING",
            )
            .await
            .map_err(pg("preparing the event insert"))?;
        let mut stored = 0;
        for (seq, line) in lines {
            stored += tx.execute(&insert, &[&hub, seq, line]).await.map_err(pg("appending an event"))?;
        }
        tx.commit().await.map_err(pg("committing events"))?;
        Ok(stored)
    }

    /// How many lines of `hub`'s event log file the database holds: the next line to ship.
    pub async fn shipped(&self, hub: &str) -> Result<i64, DbError> {
        let row = self
            .client
            .query_one("SELECT coalesce(max(seq) + 1, 0) FROM events WHERE hub = $1", &[&hub])
            .await
            .map_err(pg("reading what was shipped"))?;
        Ok(row.get(0))
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Every event of the deployment in time order (one hub's in the order it wrote them), with
    /// the hub that recorded it (what [`crate::queue::LogSummary::from_hubs`] reads).
    pub async fn events(&self) -> Result<Vec<(String, EventRecord)>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT id, hub, record::text FROM events ORDER BY (record ->> 'ts_ms')::bigint, hub, seq",
                &[],
            )
            .await
            .map_err(pg("reading the event log"))?;
        rows.iter().map(record_of).collect()
    }

    /// Where `kiosk` waited in call `call_id` on another hub than `own_hub` (the hub it left),
    /// if that call is still waiting there by what that hub recorded: the hub and its original
    /// time of joining, for the kiosk to keep its place (see [`place_of`]).
    pub async fn find_place(
        &self,
        kiosk: &str,
        call_id: CallId,
        own_hub: &str,
    ) -> Result<Option<Moved>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT id, hub, record::text FROM events
                 WHERE record ->> 'kiosk' = $1 AND hub <> $2
                 ORDER BY (record ->> 'ts_ms')::bigint, hub, seq",
                &[&kiosk, &own_hub],
            )
            .await
            .map_err(pg("looking up a caller's place"))?;
        let records = rows.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;
        Ok(place_of(&records, call_id))
    }
}

/// A row of `events` (id, hub, record as text), checked as an event record.
fn record_of(row: &tokio_postgres::Row) -> Result<(String, EventRecord), DbError> {
    let (id, hub, text): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    // Stored as jsonb: valid JSON by construction; checked again as a record.
    let rec = serde_json::from_str::<EventRecord>(&text).map_err(|e| DbError::BadEvent(id, e.to_string()))?;
    Ok((hub, rec))
}

/// Of one kiosk's events on other hubs, in time order: where it waits in call `call_id`. The
/// last hub that queued that call number for it holds the place, unless that hub recorded the
/// call's end or its connection since (then there is no place to keep). The original time of
/// joining goes with the caller from hub to hub.
pub fn place_of(records: &[(String, EventRecord)], call_id: CallId) -> Option<Moved> {
    let queued = records.iter().rposition(|(_, r)| r.event == Event::Queued && r.call_id == Some(call_id))?;
    let (hub, rec) = &records[queued];
    let over = records[queued + 1..].iter().any(|(h, r)| {
        h == hub
            && r.call_id == Some(call_id)
            && matches!(r.event, Event::Connected | Event::Ended | Event::Abandoned | Event::RejectedBusy)
    });
    (!over).then(|| Moved {
        hub: hub.clone(),
        call_id,
        joined_ms: rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms),
    })
}

/// Checks a connection string's syntax (`postgresql://…` or `key=value …`), saying what is
/// wrong without repeating a password.
pub fn check_url(url: &str) -> Result<(), String> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| format!("`{}`: {e}", redact(url)))?;
    if config.get_hosts().is_empty() {
        return Err(format!("`{}` names no host", redact(url)));
    }
    Ok(())
}

/// `url` with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgresql://kioskd:s3cret@db:5432/kioskd"), "postgresql://kioskd@db:5432/kioskd");
        assert_eq!(redact("postgresql://db/kioskd"), "postgresql://db/kioskd");
        assert_eq!(redact("host=db user=k password=s3cret dbname=x"), "host=db user=k dbname=x");
    }

    #[test]
    fn connection_strings_are_checked() {
        assert_eq!(check_url("postgresql://kioskd@127.0.0.1:5432/kioskd"), Ok(()));
        assert_eq!(check_url("host=/run/postgresql user=kioskd dbname=kioskd"), Ok(()));
        let e = check_url("postgresql://kioskd:s3cret@db:notaport/kioskd").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("kioskd@db"), "{e}");
        assert!(check_url("user=kioskd").unwrap_err().contains("no host"));
    }

    fn rec(ts_ms: u64, event: Event, call_id: CallId, moved: Option<Moved>) -> EventRecord {
        EventRecord {
            ts_ms,
            event,
            call_id: Some(call_id),
            kiosk: Some("branch-1/kiosk-1".into()),
            agent: None,
            detail: None,
            position: None,
            moved,
        }
    }

    #[test]
    fn a_place_is_the_last_queueing_of_the_call_on_a_hub_that_did_not_end_it() {
        let a = |r| ("hub-a".to_string(), r);
        let b = |r| ("hub-b".to_string(), r);
        // Waiting on A since 1000 (offered meanwhile): the place is A's, from 1000.
        let waiting = [a(rec(1000, Event::Queued, 5, None)), a(rec(2000, Event::Offered, 5, None))];
        let place = place_of(&waiting, 5).expect("a place");
        assert_eq!(place, Moved { hub: "hub-a".into(), call_id: 5, joined_ms: 1000 });
        // Another call number, or a call that A connected or ended: no place.
        assert_eq!(place_of(&waiting, 6), None);
        for end in [Event::Connected, Event::Ended, Event::Abandoned] {
            let over = [a(rec(1000, Event::Queued, 5, None)), a(rec(3000, end, 5, None))];
            assert_eq!(place_of(&over, 5), None, "{end:?}");
        }
        // Another hub's call with the same number ending does not end A's.
        let mixed = [a(rec(1000, Event::Queued, 5, None)), b(rec(3000, Event::Ended, 5, None))];
        assert!(place_of(&mixed, 5).is_some());
        // Moved from C to B, then B died: the place is B's, with C's time of joining.
        let moved = Moved { hub: "hub-c".into(), call_id: 2, joined_ms: 400 };
        let twice = [b(rec(1500, Event::Queued, 5, Some(moved)))];
        assert_eq!(place_of(&twice, 5), Some(Moved { hub: "hub-b".into(), call_id: 5, joined_ms: 400 }));
        // The same number queued again later on A (a new customer): the later one counts.
        let again = [
            a(rec(1000, Event::Queued, 5, None)),
            a(rec(1500, Event::Ended, 5, None)),
            a(rec(9000, Event::Queued, 5, None)),
        ];
        assert_eq!(place_of(&again, 5).map(|p| p.joined_ms), Some(9000));
    }

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1, "{name}");
            assert!(!sql.trim().is_empty(), "{name}");
        }
    }
}
