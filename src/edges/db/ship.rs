//! Ships a hub's event log file to the database: the file stays the hub's own journal (written
//! first, flushed by the core), and this task copies each complete line into `events` under the
//! hub's id and the line's number. It starts from what the database already holds for this
//! hub, so nothing is lost while the database is away (a restart, a broken connection, a hub
//! that was killed) and nothing is stored twice.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Database, redact};
use crate::queue::log::EventRecord;

/// How often the file is looked at for new lines.
const POLL: Duration = Duration::from_millis(200);
/// Lines per transaction.
const BATCH: usize = 500;
/// The wait before connecting again grows to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At shutdown, how long the last lines may take to go out.
const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// A line longer than this is not an event record (the core writes records of a few hundred
/// bytes); it is skipped rather than read into memory whole.
const MAX_LINE: usize = 64 * 1024;

/// What the shipper has done, for the hub's status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipStatus {
    /// Connected to the database now.
    pub connected: bool,
    /// Lines of the file the database holds (the next line to ship).
    pub shipped: u64,
    /// Bytes of the file not shipped yet.
    pub pending_bytes: u64,
    /// Lines skipped because they are not event records (a torn line after a crash).
    pub skipped: u64,
    /// Failed connections and transactions.
    pub errors: u64,
}

/// Copies one hub's event log file into the database.
pub struct Shipper {
    pub url: String,
    /// The hub's id (its certificate's).
    pub hub: String,
    pub file: PathBuf,
}

/// The file as read so far: the byte offset after the last complete line, and that line's
/// number.
struct Cursor {
    offset: u64,
    line: i64,
}

impl Shipper {
    /// Runs until `shutdown`, then ships what is left (for at most [`FINAL_FLUSH`]).
    pub async fn run(self, status: watch::Sender<ShipStatus>, mut shutdown: watch::Receiver<bool>) {
        let shown = redact(&self.url);
        let mut backoff = Duration::from_millis(200);
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let db = tokio::select! {
                db = Database::connect(&self.url) => db,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let mut db = match db {
                Ok(db) => db,
                Err(e) => {
                    if first {
                        warn!(database = %shown, error = %e, "database unreachable: events are kept in the file and shipped when it is back");
                        first = false;
                    }
                    status.send_modify(|s| {
                        s.connected = false;
                        s.errors += 1;
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            first = true;
            backoff = Duration::from_millis(200);
            match self.ship(&mut db, &status, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(database = %shown, error = %e, "shipping events failed: connecting again");
                    status.send_modify(|s| {
                        s.connected = false;
                        s.errors += 1;
                    });
                }
            }
        }
    }

    /// Ships from what the database holds, then follows the file; returns at shutdown.
    async fn ship(
        &self,
        db: &mut Database,
        status: &watch::Sender<ShipStatus>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), super::DbError> {
        let shipped = db.shipped(&self.hub).await?;
        info!(hub = %self.hub, from_line = shipped, "shipping the event log to the database");
        status.send_modify(|s| {
            s.connected = true;
            s.shipped = shipped as u64;
        });
        let mut cur = Cursor { offset: 0, line: 0 };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = None;
        loop {
            let (batch, skipped) = match self.read_batch(&mut cur, shipped) {
                Ok(b) => b,
                Err(e) => {
                    // The file is the hub's to keep; a read that fails is tried again.
                    warn!(file = %self.file.display(), error = %e, "reading the event log to ship it");
                    (Vec::new(), 0)
                }
            };
            let full = batch.len() >= BATCH;
            if let Some((last, _)) = batch.last() {
                let next = last + 1;
                db.append_events(&self.hub, &batch).await?;
                status.send_modify(|s| s.shipped = next as u64);
            }
            let len = std::fs::metadata(&self.file).map_or(cur.offset, |m| m.len());
            status.send_modify(|s| {
                s.skipped += skipped;
                s.pending_bytes = len.saturating_sub(cur.offset);
            });
            if full && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
                continue;
            }
            if deadline.is_some() {
                return Ok(());
            }
            if db.is_closed() {
                return Err(super::DbError::Closed);
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => {
                    // One more pass for what the core wrote last.
                    deadline = Some(tokio::time::Instant::now() + FINAL_FLUSH);
                }
            }
        }
    }

    /// Reads complete lines after the cursor: up to [`BATCH`] records numbered from `from`
    /// on, and the number of lines skipped as not being records. A line still being written
    /// (no newline yet) is left for the next call.
    fn read_batch(&self, cur: &mut Cursor, from: i64) -> std::io::Result<(Vec<(i64, String)>, u64)> {
        let mut batch = Vec::new();
        let mut skipped = 0;
        let mut f = std::fs::File::open(&self.file)?;
        let len = f.metadata()?.len();
        if len < cur.offset {
            // The file was replaced (restored from a backup, truncated): read it again.
            warn!(file = %self.file.display(), "event log file shrank: reading it again from its start");
            *cur = Cursor { offset: 0, line: 0 };
        }
        f.seek(SeekFrom::Start(cur.offset))?;
        let mut r = BufReader::new(f.take(len - cur.offset));
        let mut line = Vec::new();
        while batch.len() < BATCH {
            line.clear();
            let n = (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            let mut used = n as u64;
            let whole = line.last() == Some(&b'\n');
            if !whole && n <= MAX_LINE {
                break; // still being written
            }
            let overlong = !whole;
            if overlong {
                // Skip to its end, if it has one yet.
                let mut rest = Vec::new();
                let mut ended = false;
                loop {
                    rest.clear();
                    let m = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut rest)?;
                    used += m as u64;
                    if m == 0 {
                        break;
                    }
                    if rest.last() == Some(&b'\n') {
                        ended = true;
                        break;
                    }
                }
                if !ended {
                    break;
                }
            }
            let line_no = cur.line;
            cur.line += 1;
            cur.offset += used;
            if line_no < from {
                continue;
            }
            let text = std::str::from_utf8(&line).map(str::trim_end);
            match text {
                Ok(t) if !overlong && serde_json::from_str::<EventRecord>(t).is_ok() => {
                    batch.push((line_no, t.to_owned()))
                }
                Ok("") => {}
                _ => skipped += 1,
            }
        }
        Ok((batch, skipped))
    }
}
