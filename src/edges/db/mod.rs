//! PostgreSQL: the store that several hubs of one deployment share (the bank already runs
//! PostgreSQL; no home-made cluster). This first part holds the schema and its versioned
//! migrations, and the event log: every hub appends its events, and `kioskd report
//! --database` reads the whole deployment's. Without a database a hub keeps its event log in a
//! file, as before.
//!
//! Migrations are SQL files in `migrations/`, compiled in, applied in order inside one
//! transaction under an advisory lock, so that hubs starting together apply each exactly once.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

use crate::protocol::CallId;
use crate::queue::log::{Event, EventRecord, Moved};
use crate::queue::{MovedCall, Waiting};
use tracing::{info, warn};

pub mod cluster;
pub mod ship;
pub mod tls;

pub use ship::{ShipStatus, Shipper};

/// The schema's versions, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "event log", include_str!("../../../migrations/0001_events.sql")),
    (2, "events by kiosk", include_str!("../../../migrations/0002_kiosk_index.sql")),
    (3, "hub leases, waiting callers, calls and rooms", include_str!("../../../migrations/0003_cluster.sql")),
    (4, "hub addresses", include_str!("../../../migrations/0004_hub_address.sql")),
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
    /// TLS to the database: a bad `sslmode`/`sslrootcert`, or a CA file that cannot be read.
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
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
        let client = open_client(url, None).await?;
        Ok(Self { client })
    }

    /// Connects to `url` and listens on [`CHANNEL`]: the notifications' payloads come out of
    /// the receiver (which ends with the connection). The schema is brought up to date.
    pub async fn connect_listening(url: &str) -> Result<(Self, mpsc::UnboundedReceiver<String>), DbError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = open_client(url, Some(tx)).await?;
        let mut db = Self { client };
        db.migrate().await?;
        db.client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(pg("listening"))?;
        Ok((db, rx))
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
        // One statement for the whole batch (a round trip per line was the shipper's limit);
        // it returns the lines it stored, in order.
        let seqs: Vec<i64> = lines.iter().map(|(seq, _)| *seq).collect();
        let records: Vec<&str> = lines.iter().map(|(_, line)| line.as_str()).collect();
        let rows = tx
            .query(
                "INSERT INTO events (hub, seq, record)
                 SELECT $1, t.seq, t.record::jsonb FROM unnest($2::bigint[], $3::text[]) AS t(seq, record)
                 ORDER BY t.seq
                 ON CONFLICT (hub, seq) DO NOTHING
                 RETURNING seq",
                &[&hub, &seqs, &records],
            )
            .await
            .map_err(pg("appending events"))?;
        let new: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        for (seq, line) in lines {
            // Shipped before (an answer lost): already projected.
            if !new.contains(seq) {
                continue;
            }
            // The shipper sends only lines that parse as records.
            if let Ok(rec) = serde_json::from_str::<EventRecord>(line) {
                project(&tx, hub, &rec).await?;
            }
        }
        tx.commit().await.map_err(pg("committing events"))?;
        Ok(new.len() as u64)
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

    /// How many events of the kind `event` (`offered`, `ended`, …) the deployment's hubs stored.
    pub async fn count_events(&self, event: &str) -> Result<u64, DbError> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM events WHERE record ->> 'event' = $1", &[&event])
            .await
            .map_err(pg("counting events"))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
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

    /// Where `kiosk` waits on another hub than `own_hub`, taken for `own_hub` (the kiosk
    /// resumed here): its row in `waiting` now names this hub, and every hub is told
    /// ([`RELEASED`] on [`CHANNEL`]), so that the one that held it drops its copy. The row is
    /// locked while this is done: a hub taking over a dead hub's callers at the same moment
    /// either sees the kiosk gone or makes this wait. Without a row (events shipped before
    /// the table existed), the place is read from the kiosk's events ([`place_of`]).
    pub async fn claim_place(
        &mut self,
        kiosk: &str,
        call_id: CallId,
        own_hub: &str,
        now_ms: u64,
    ) -> Result<Claimed, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting to claim a place"))?;
        let row = tx
            .query_opt(
                "SELECT hub, call_id, joined_ms FROM waiting WHERE kiosk = $1 AND hub <> $2 FOR UPDATE",
                &[&kiosk, &own_hub],
            )
            .await
            .map_err(pg("looking up a caller's place"))?;
        let Some(row) = row else {
            // Not waiting: perhaps in a call that another hub relayed.
            let call = tx
                .query_opt(
                    "SELECT hub, call_id, agent, since_ms FROM calls WHERE kiosk = $1 AND hub <> $2 FOR UPDATE",
                    &[&kiosk, &own_hub],
                )
                .await
                .map_err(pg("looking up a caller's call"))?;
            if let Some(row) = call {
                let moved = MovedCall {
                    hub: row.get(0),
                    call_id: row.get::<_, i64>(1).max(0) as CallId,
                    kiosk: kiosk.to_string(),
                    agent: row.get(2),
                    since_ms: row.get::<_, i64>(3).max(0) as u64,
                };
                tx.execute("UPDATE calls SET hub = $2 WHERE kiosk = $1", &[&kiosk, &own_hub])
                    .await
                    .map_err(pg("claiming a call"))?;
                tx.commit().await.map_err(pg("committing a claimed call"))?;
                return Ok(Claimed::Call(moved));
            }
            tx.commit().await.map_err(pg("ending a place lookup"))?;
            let place = self.find_place_in_events(kiosk, call_id, own_hub).await?;
            return Ok(place.map_or(Claimed::Nothing, Claimed::Waiting));
        };
        let (hub, from_call, joined): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        tx.execute(
            "UPDATE waiting SET hub = $2, updated_ms = $3 WHERE kiosk = $1",
            &[&kiosk, &own_hub, &(now_ms as i64)],
        )
        .await
        .map_err(pg("claiming a caller's place"))?;
        let note = serde_json::json!({ RELEASED: kiosk, "to": own_hub }).to_string();
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &note]).await.map_err(pg("telling the hubs"))?;
        tx.commit().await.map_err(pg("committing a claimed place"))?;
        Ok(Claimed::Waiting(Moved {
            hub,
            call_id: from_call.max(0) as CallId,
            joined_ms: joined.max(0) as u64,
        }))
    }

    /// The call in progress `call_id` of `agent` that another hub than `own_hub` relayed,
    /// taken for `own_hub` (the agent resumed it here).
    pub async fn claim_call(
        &mut self,
        agent: &str,
        call_id: CallId,
        own_hub: &str,
    ) -> Result<Option<MovedCall>, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting to claim a call"))?;
        let row = tx
            .query_opt(
                "SELECT hub, kiosk, since_ms FROM calls
                 WHERE agent = $1 AND call_id = $2 AND hub <> $3 FOR UPDATE",
                &[&agent, &(call_id as i64), &own_hub],
            )
            .await
            .map_err(pg("looking up a call"))?;
        let Some(row) = row else {
            tx.commit().await.map_err(pg("ending a call lookup"))?;
            return Ok(None);
        };
        let moved = MovedCall {
            hub: row.get(0),
            call_id,
            kiosk: row.get(1),
            agent: agent.to_string(),
            since_ms: row.get::<_, i64>(2).max(0) as u64,
        };
        tx.execute("UPDATE calls SET hub = $2 WHERE kiosk = $1", &[&moved.kiosk, &own_hub])
            .await
            .map_err(pg("claiming a call"))?;
        tx.commit().await.map_err(pg("committing a claimed call"))?;
        Ok(Some(moved))
    }

    /// Where `kiosk` waited in call `call_id` on another hub than `own_hub`, by the events
    /// that hub recorded (see [`place_of`]).
    async fn find_place_in_events(
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

    /// Another live hub with advisors free (IDLE) that kiosks can reach, for callers of
    /// `own_hub` that have nobody free there: its address, and the first of `callers` (longest
    /// waiting first), one per advisor free there. The hub with the most advisors free is
    /// chosen (at random among equals). Each caller chosen is in `waiting` when this returns
    /// (its row is written if this hub has not shipped it yet), so that the other hub finds
    /// its place when its kiosk resumes there. Rooms are as the hubs last shipped them (a
    /// fraction of a second ago): a caller sent keeps its place there and waits if the
    /// advisor was taken meanwhile.
    pub async fn free_hub(
        &mut self,
        own_hub: &str,
        callers: &[Waiting],
        now_ms: u64,
    ) -> Result<Option<(String, Vec<Waiting>)>, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting to look for a hub"))?;
        let row = tx
            .query_opt(
                "SELECT h.address, count(*) FROM hubs h JOIN rooms r ON r.hub = h.hub AND r.state = 'IDLE'
                  WHERE h.hub <> $1 AND h.lease_until > now() AND h.address IS NOT NULL
                  GROUP BY h.hub, h.address
                  ORDER BY count(*) DESC, random()
                  LIMIT 1",
                &[&own_hub],
            )
            .await
            .map_err(pg("looking for a hub with an advisor free"))?;
        let Some(row) = row else {
            tx.commit().await.map_err(pg("ending the look for a hub"))?;
            return Ok(None);
        };
        let (address, free): (String, i64) = (row.get(0), row.get(1));
        let chosen: Vec<Waiting> = callers.iter().take(usize::try_from(free).unwrap_or(0)).cloned().collect();
        for c in &chosen {
            tx.execute(
                "INSERT INTO waiting (kiosk, hub, call_id, joined_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kiosk) DO NOTHING",
                &[&c.kiosk, &own_hub, &(c.call_id as i64), &(c.joined_ms as i64), &(now_ms as i64)],
            )
            .await
            .map_err(pg("recording a caller sent to another hub"))?;
        }
        tx.commit().await.map_err(pg("committing callers sent to another hub"))?;
        Ok(Some((address, chosen)))
    }

    /// Callers waiting on `own_hub` with their kiosks connected there, after it got its lease
    /// back: their rows name it again, and every hub is told ([`RELEASED`]), so that one that
    /// took them over meanwhile drops its copy.
    pub async fn reclaim(&mut self, callers: &[Waiting], own_hub: &str, now_ms: u64) -> Result<(), DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting to reclaim callers"))?;
        for c in callers {
            tx.execute(
                "INSERT INTO waiting (kiosk, hub, call_id, joined_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kiosk) DO UPDATE SET hub = $2, call_id = $3, joined_ms = $4, updated_ms = $5",
                &[&c.kiosk, &own_hub, &(c.call_id as i64), &(c.joined_ms as i64), &(now_ms as i64)],
            )
            .await
            .map_err(pg("reclaiming a caller"))?;
            let note = serde_json::json!({ RELEASED: c.kiosk, "to": own_hub }).to_string();
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &note])
                .await
                .map_err(pg("telling the hubs"))?;
        }
        tx.commit().await.map_err(pg("committing reclaimed callers"))?;
        Ok(())
    }

    /// Takes or renews `hub`'s lease for `lease` from the database's clock. `instance` tells
    /// this process from another with the same hub id: a lease held by another instance
    /// that has not expired is not taken (`Ok(false)`: two hubs share one certificate id),
    /// unless that instance stopped cleanly ([`Database::release_lease`]): then the hub's
    /// next process takes it at once.
    pub async fn renew_lease(
        &self,
        hub: &str,
        instance: &str,
        lease: Duration,
        address: Option<&str>,
    ) -> Result<bool, DbError> {
        let ms = lease.as_millis() as f64;
        let n = self
            .client
            .execute(
                "INSERT INTO hubs (hub, lease_until, renewed_at, instance, address)
                 VALUES ($1, now() + $3::float8 * interval '1 millisecond', now(), $2, $4)
                 ON CONFLICT (hub) DO UPDATE
                   SET lease_until = EXCLUDED.lease_until, renewed_at = now(), instance = $2, address = $4
                   WHERE hubs.instance = $2 OR hubs.instance = $5 OR hubs.lease_until < now()",
                &[&hub, &instance, &ms, &address, &STOPPED],
            )
            .await
            .map_err(pg("renewing the lease"))?;
        Ok(n == 1)
    }

    /// At a clean stop: `instance` no longer holds `hub`'s lease, so that the hub's next
    /// process takes it at once instead of waiting for it to expire. The lease's time is kept:
    /// other hubs take the stopped hub's callers over only once it has expired, as after a
    /// crash, and not if the hub is back before.
    pub async fn release_lease(&self, hub: &str, instance: &str) -> Result<bool, DbError> {
        let n = self
            .client
            .execute(
                "UPDATE hubs SET instance = $3 WHERE hub = $1 AND instance = $2",
                &[&hub, &instance, &STOPPED],
            )
            .await
            .map_err(pg("releasing the lease"))?;
        Ok(n == 1)
    }

    /// Takes over every hub whose lease has expired (others than `own_hub`): its waiting
    /// callers, oldest first, are returned for this hub's queue, its rooms are removed, and
    /// its lease row is deleted so that no other hub takes it too (rows locked by another hub
    /// doing the same are skipped: `FOR UPDATE SKIP LOCKED`).
    pub async fn take_over(&mut self, own_hub: &str) -> Result<Vec<(String, Vec<Waiting>)>, DbError> {
        let tx = self.client.transaction().await.map_err(pg("starting a takeover"))?;
        let dead = tx
            .query(
                "SELECT hub FROM hubs WHERE hub <> $1 AND lease_until < now() FOR UPDATE SKIP LOCKED",
                &[&own_hub],
            )
            .await
            .map_err(pg("looking for expired leases"))?;
        let mut taken = Vec::new();
        for row in dead {
            let hub: String = row.get(0);
            let rows = tx
                .query(
                    "SELECT kiosk, call_id, joined_ms FROM waiting WHERE hub = $1 ORDER BY joined_ms FOR UPDATE",
                    &[&hub],
                )
                .await
                .map_err(pg("reading a dead hub's callers"))?;
            let callers = rows
                .iter()
                .map(|r| Waiting {
                    kiosk: r.get(0),
                    call_id: r.get::<_, i64>(1).max(0) as CallId,
                    joined_ms: r.get::<_, i64>(2).max(0) as u64,
                })
                .collect();
            tx.execute("DELETE FROM rooms WHERE hub = $1", &[&hub])
                .await
                .map_err(pg("clearing a dead hub's rooms"))?;
            tx.execute("DELETE FROM hubs WHERE hub = $1", &[&hub])
                .await
                .map_err(pg("ending a dead hub's lease"))?;
            taken.push((hub, callers));
        }
        tx.commit().await.map_err(pg("committing a takeover"))?;
        Ok(taken)
    }
}

/// What a kiosk that resumed on a hub left elsewhere ([`Database::claim_place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Its place in a queue.
    Waiting(Moved),
    /// Its call in progress.
    Call(MovedCall),
    Nothing,
}

/// The instance of a lease whose process stopped cleanly (instances are 16 hex digits).
const STOPPED: &str = "";

/// The channel on which hubs tell each other of changes (`LISTEN`/`NOTIFY`).
pub const CHANNEL: &str = "kioskd";
/// The key of a notification saying that a kiosk resumed on the hub named by `to`.
pub const RELEASED: &str = "released";

/// Keeps the tables of waiting callers, calls and rooms (migration 3) up to date with one
/// event of `hub`, in the transaction that stores it.
async fn project(tx: &tokio_postgres::Transaction<'_>, hub: &str, rec: &EventRecord) -> Result<(), DbError> {
    let ts = rec.ts_ms as i64;
    let call = rec.call_id.map(|c| c as i64);
    match (rec.event, call, rec.kiosk.as_deref(), rec.agent.as_deref()) {
        (Event::Queued, Some(call), Some(kiosk), _) => {
            let joined = rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms) as i64;
            tx.execute(
                "INSERT INTO waiting (kiosk, hub, call_id, joined_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kiosk) DO UPDATE SET hub = $2, call_id = $3, joined_ms = $4, updated_ms = $5
                 WHERE waiting.updated_ms <= $5",
                &[&kiosk, &hub, &call, &joined, &ts],
            )
            .await
            .map_err(pg("recording a waiting caller"))?;
        }
        (Event::Connected, Some(call), Some(kiosk), Some(agent)) => {
            tx.execute("DELETE FROM waiting WHERE hub = $1 AND call_id = $2", &[&hub, &call])
                .await
                .map_err(pg("removing a caller that was answered"))?;
            tx.execute(
                "INSERT INTO calls (kiosk, hub, call_id, agent, since_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kiosk) DO UPDATE SET hub = $2, call_id = $3, agent = $4, since_ms = $5",
                &[&kiosk, &hub, &call, &agent, &ts],
            )
            .await
            .map_err(pg("recording a call in progress"))?;
        }
        (Event::Resumed, Some(call), Some(kiosk), Some(agent)) => {
            let since = rec.moved.as_ref().map_or(rec.ts_ms, |m| m.joined_ms) as i64;
            tx.execute(
                "INSERT INTO calls (kiosk, hub, call_id, agent, since_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kiosk) DO UPDATE SET hub = $2, call_id = $3, agent = $4, since_ms = $5",
                &[&kiosk, &hub, &call, &agent, &since],
            )
            .await
            .map_err(pg("recording a call that moved"))?;
        }
        (Event::Ended | Event::Abandoned, Some(call), _, _) => {
            tx.execute("DELETE FROM waiting WHERE hub = $1 AND call_id = $2", &[&hub, &call])
                .await
                .map_err(pg("removing a caller that left"))?;
            tx.execute("DELETE FROM calls WHERE hub = $1 AND call_id = $2", &[&hub, &call])
                .await
                .map_err(pg("removing a call that ended"))?;
        }
        (Event::AgentState, _, _, Some(agent)) => {
            let state = rec.detail.as_deref().unwrap_or("CLOSE");
            tx.execute(
                "INSERT INTO rooms (agent, hub, state, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent) DO UPDATE SET hub = $2, state = $3, updated_ms = $4
                 WHERE rooms.updated_ms <= $4",
                &[&agent, &hub, &state, &ts],
            )
            .await
            .map_err(pg("recording a room"))?;
        }
        (Event::AgentOnline, _, _, Some(agent)) => {
            tx.execute(
                "INSERT INTO rooms (agent, hub, state, updated_ms) VALUES ($1, $2, 'CLOSE', $3)
                 ON CONFLICT (agent) DO UPDATE SET hub = $2, state = 'CLOSE', updated_ms = $3
                 WHERE rooms.updated_ms <= $3",
                &[&agent, &hub, &ts],
            )
            .await
            .map_err(pg("recording a room"))?;
        }
        (Event::AgentOffline, _, _, Some(agent)) => {
            tx.execute("DELETE FROM rooms WHERE agent = $1 AND hub = $2", &[&agent, &hub])
                .await
                .map_err(pg("removing a room"))?;
        }
        (Event::HubStarted, _, _, _) => {
            // A hub that starts has no rooms yet (the calls it held are closed by its
            // `hub_restart` records, just before).
            tx.execute("DELETE FROM rooms WHERE hub = $1", &[&hub]).await.map_err(pg("clearing rooms"))?;
        }
        _ => {}
    }
    Ok(())
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
    let split = tls::split(url).map_err(|e| format!("`{}`: {e}", redact(url)))?;
    if let Some(ca) = &split.root_cert {
        tls::client_config(ca)?;
    }
    let config: tokio_postgres::Config =
        split.url.parse().map_err(|e: tokio_postgres::Error| format!("`{}`: {e}", redact(url)))?;
    if config.get_hosts().is_empty() {
        return Err(format!("`{}` names no host", redact(url)));
    }
    Ok(())
}

/// A client on `url`, TLS when it asks for it ([`tls::split`]); its connection driven on a
/// task of its own, which hands notifications to `notes` (when given) and ends with the
/// connection.
async fn open_client(url: &str, notes: Option<mpsc::UnboundedSender<String>>) -> Result<Client, DbError> {
    let shown = redact(url);
    let split = tls::split(url).map_err(DbError::Tls)?;
    match &split.root_cert {
        Some(ca) => {
            let config = tls::MakeRustls(tls::client_config(ca).map_err(DbError::Tls)?);
            let connecting = tokio_postgres::connect(&split.url, config);
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| DbError::Timeout(shown))?
                .map_err(pg("connecting"))?;
            tokio::spawn(drive(connection, notes));
            Ok(client)
        }
        None => {
            let connecting = tokio_postgres::connect(&split.url, NoTls);
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| DbError::Timeout(shown))?
                .map_err(pg("connecting"))?;
            tokio::spawn(drive(connection, notes));
            Ok(client)
        }
    }
}

/// Drives a connection until it ends, handing its notifications' payloads to `notes`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: Option<mpsc::UnboundedSender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if let Some(tx) = &notes
                    && tx.send(n.payload().to_string()).is_err()
                {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "PostgreSQL connection ended");
                break;
            }
        }
    }
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
