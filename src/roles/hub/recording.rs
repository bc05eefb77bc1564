//! The recording's IO: one thread per recorded call owns its file.
//!
//! ```text
//! relay (per leg) ── Tap::offer (copy into the inbox) ──► "record-N" thread: Recorder ─► call-N.mkv
//!                                                                 │                       call-N.json
//!                                                                 └── Note ──► hub core (event log, keyframe requests)
//! ```
//! The relay never waits for the disk: a full inbox drops the packet (counted) and the
//! recorder skips to the next keyframe. A write error (a full disk) ends the recording — the
//! file stays playable up to its last whole Cluster — and is reported as a [`Note::Failed`];
//! the call goes on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::edges::devices::unix_micros_now;
use crate::media::UnixMicros;
use crate::protocol::CallId;
use crate::record::{Action, Party, Recorder, RecorderConfig, Skipped, TrackSummary};

/// Bytes of packets the inbox holds at most: about 16 s of a two-way call at 1 Mbit/s each way,
/// far more than a batch.
const INBOX_BYTES: usize = 4 << 20;
/// Each packet in the inbox is preceded by its party (1 byte), arrival time (8) and length (4).
const ENTRY_HEADER: usize = 13;

/// What a recording tells the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    Started {
        call_id: CallId,
        path: PathBuf,
    },
    /// The party's video is skipped until a keyframe: the hub asks its encoder for one.
    KeyframeNeeded {
        call_id: CallId,
        party: Party,
    },
    /// Writing failed; the recording stopped (the call did not).
    Failed {
        call_id: CallId,
        error: String,
    },
    Finished {
        call_id: CallId,
        path: PathBuf,
        bytes: u64,
        duration_ms: u64,
    },
}

/// The JSON file beside each recording.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    pub call_id: CallId,
    pub kiosk: String,
    pub agent: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub duration_ms: u64,
    /// The recording's file name (in the same folder).
    pub file: String,
    pub bytes: u64,
    /// SHA-256 of the finished file, hex.
    pub sha256: String,
    pub tracks: Vec<TrackSummary>,
    pub skipped: Skipped,
    /// Packets the relay could not hand to the recorder in time.
    pub dropped: u64,
    /// Why the recording stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Packets on their way from the relay to the recording thread, as bytes: for each, its party,
/// arrival time and length, then the packet. The relay appends under the lock — one copy of a
/// packet it has just read, and no allocation once the buffer has grown; the thread swaps the
/// buffer for its own emptied one once per batch. The relay's own buffers are freed where they
/// were made, as when nothing is recorded.
struct Inbox {
    buf: Mutex<Vec<u8>>,
    /// Set when the recording is told to stop: the thread finishes what is in the inbox.
    stop: AtomicBool,
    /// Packets refused because the inbox was full or the recording had stopped.
    dropped: AtomicU64,
}

impl Inbox {
    fn new() -> Self {
        Self { buf: Mutex::new(Vec::new()), stop: AtomicBool::new(false), dropped: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A relay task that panicked mid-append left whole entries behind it or a torn last
        // one, which `entries` ignores.
        self.buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The packets of an inbox buffer: (party, arrival time, packet). Stops at a torn entry.
fn entries(buf: &[u8]) -> impl Iterator<Item = (Party, UnixMicros, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let (head, tail) = rest.split_at_checked(ENTRY_HEADER)?;
        let party = if head[0] == 0 { Party::Kiosk } else { Party::Agent };
        let at = u64::from_le_bytes(head[1..9].try_into().ok()?);
        let len = u32::from_le_bytes(head[9..13].try_into().ok()?) as usize;
        let (packet, tail) = tail.split_at_checked(len)?;
        rest = tail;
        Some((party, at, packet))
    })
}

/// Where a recorded leg's packets go: cheap to clone, never waits for the disk.
#[derive(Clone)]
pub struct Tap {
    inbox: Arc<Inbox>,
    party: Party,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("party", &self.party).finish_non_exhaustive()
    }
}

impl Tap {
    /// Hands over one packet (media header + payload) as it reached the hub.
    pub fn offer(&self, packet: &[u8]) {
        let at = unix_micros_now();
        let refused = self.inbox.stop.load(Ordering::Relaxed) || {
            let mut buf = self.inbox.lock();
            let fits = buf.len() + ENTRY_HEADER + packet.len() <= INBOX_BYTES;
            if fits {
                buf.push(self.party.index() as u8);
                buf.extend_from_slice(&at.to_le_bytes());
                buf.extend_from_slice(&(packet.len() as u32).to_le_bytes());
                buf.extend_from_slice(packet);
            }
            !fits
        };
        if refused {
            self.inbox.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A recording in progress.
pub struct Recording {
    pub call_id: CallId,
    pub path: PathBuf,
    inbox: Arc<Inbox>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recording {
    /// Creates `call-<id>.mkv` (mode 0600; `call-<id>-2.mkv` and so on if it exists) in `dir`
    /// (created with mode 0700 if missing) and starts the recording thread.
    pub fn start(
        dir: &Path,
        call_id: CallId,
        kiosk: &str,
        agent: &str,
        notes: UnboundedSender<Note>,
    ) -> io::Result<Self> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let (file, path) = create_file(dir, call_id)?;
        let start_unix_ms = unix_micros_now() / 1000;
        let title = format!("call {call_id}: {kiosk} with {agent}");
        let recorder = Recorder::new(RecorderConfig::default(), title, kiosk, agent, start_unix_ms);
        let inbox = Arc::new(Inbox::new());
        let job = Job {
            call_id,
            kiosk: kiosk.to_string(),
            agent: agent.to_string(),
            path: path.clone(),
            start_unix_ms,
            inbox: inbox.clone(),
            notes,
        };
        let thread = std::thread::Builder::new()
            .name(format!("record-{call_id}"))
            .spawn(move || job.run(recorder, file))?;
        Ok(Self { call_id, path, inbox, thread: Some(thread) })
    }

    /// A tap for the packets `party` sends.
    pub fn tap(&self, party: Party) -> Tap {
        Tap { inbox: self.inbox.clone(), party }
    }

    /// Ends the recording; the thread finishes the file, writes the sidecar and reports.
    /// Returns the thread, for a caller that must wait (the hub's shutdown).
    pub fn stop(mut self) -> Option<std::thread::JoinHandle<()>> {
        self.inbox.stop.store(true, Ordering::Release);
        self.thread.take()
    }
}

impl Drop for Recording {
    /// A recording dropped without [`Recording::stop`] (the hub's core ended) still finishes
    /// its file.
    fn drop(&mut self) {
        self.inbox.stop.store(true, Ordering::Release);
    }
}

fn create_file(dir: &Path, call_id: CallId) -> io::Result<(File, PathBuf)> {
    for n in 1..100 {
        let name = if n == 1 { format!("call-{call_id}.mkv") } else { format!("call-{call_id}-{n}.mkv") };
        let path = dir.join(name);
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("too many recordings of call {call_id}")))
}

/// Where the recorder's bytes go: a file, or in tests one that fails.
pub trait Sink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Overwrites bytes already written at `at`.
    fn patch(&mut self, at: u64, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn patch(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.seek(SeekFrom::Start(at))?;
        self.write_all(bytes)?;
        self.seek(SeekFrom::End(0)).map(|_| ())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

struct Job {
    call_id: CallId,
    kiosk: String,
    agent: String,
    path: PathBuf,
    start_unix_ms: u64,
    inbox: Arc<Inbox>,
    notes: UnboundedSender<Note>,
}

impl Job {
    fn run<S: Sink>(self, recorder: Recorder, sink: S) {
        let call_id = self.call_id;
        let _ = self.notes.send(Note::Started { call_id, path: self.path.clone() });
        info!(call_id, path = %self.path.display(), "recording started");
        let (fin, error) = record(call_id, recorder, sink, &self.inbox, &self.notes);
        let end_unix_ms = unix_micros_now() / 1000;
        let (bytes, sha256) = match hash_file(&self.path) {
            Ok(v) => v,
            Err(e) => {
                warn!(call_id, error = %e, "recording not read back for its checksum");
                (0, String::new())
            }
        };
        let sidecar = Sidecar {
            call_id,
            kiosk: self.kiosk,
            agent: self.agent,
            start_unix_ms: self.start_unix_ms,
            end_unix_ms,
            duration_ms: fin.duration_ms,
            file: self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            bytes,
            sha256,
            tracks: fin.tracks,
            skipped: fin.skipped,
            dropped: self.inbox.dropped.load(Ordering::Relaxed),
            error: error.clone(),
        };
        let sidecar_path = self.path.with_extension("json");
        let error = match (error, write_sidecar(&sidecar_path, &sidecar)) {
            (Some(e), _) => Some(e),
            (None, Err(e)) => Some(format!("sidecar {}: {e}", sidecar_path.display())),
            (None, Ok(())) => None,
        };
        match error {
            Some(error) => {
                warn!(call_id, %error, "recording stopped by an error; the call was not affected");
                let _ = self.notes.send(Note::Failed { call_id, error });
            }
            None => {
                info!(call_id, path = %self.path.display(), bytes, duration_ms = fin.duration_ms, "recording finished");
                let _ = self.notes.send(Note::Finished {
                    call_id,
                    path: self.path,
                    bytes,
                    duration_ms: fin.duration_ms,
                });
            }
        }
    }
}

/// Feeds the recorder until Stop (or every sender is gone) and writes what it emits; stops at
/// the first write error. Returns the finished recording and the error, if any.
fn record<S: Sink>(
    call_id: CallId,
    mut recorder: Recorder,
    mut sink: S,
    inbox: &Inbox,
    notes: &UnboundedSender<Note>,
) -> (crate::record::Finished, Option<String>) {
    /// The thread takes what the relay handed over in batches, this often: one wake-up per
    /// batch instead of one per packet, and since the thread never waits on the inbox, the
    /// relay never has to wake it. Packets carry their arrival time, so a batch's
    /// length changes no timestamp; 250 ms of a call is ~60 kB, well within [`INBOX_BYTES`]
    /// (100 ms batches cost 2.5 times the wake-ups for nothing).
    const BATCH: Duration = Duration::from_millis(250);
    let write = |sink: &mut S, bytes: &[u8]| -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        sink.append(bytes).map_err(|e| format!("writing the recording: {e}"))
    };
    let mut spare = Vec::new();
    let mut stop = false;
    while !stop {
        if !inbox.stop.load(Ordering::Acquire) {
            std::thread::sleep(BATCH);
        }
        // Read before the swap: whatever the relay handed over before the stop is taken now.
        stop = inbox.stop.load(Ordering::Acquire);
        std::mem::swap(&mut *inbox.lock(), &mut spare);
        for (party, at, packet) in entries(&spare) {
            recorder.push(party, packet, at);
        }
        spare.clear();
        recorder.tick(unix_micros_now());
        while let Some(Action::RequestKeyframe(party)) = recorder.poll_action() {
            let _ = notes.send(Note::KeyframeNeeded { call_id, party });
        }
        if let Err(e) = write(&mut sink, &recorder.take_output()) {
            return (recorder.finish(), Some(e));
        }
    }
    let fin = recorder.finish();
    let mut finish = || -> Result<(), String> {
        write(&mut sink, &fin.tail)?;
        for (at, bytes) in &fin.patches {
            sink.patch(*at, bytes).map_err(|e| format!("finishing the recording: {e}"))?;
        }
        sink.sync().map_err(|e| format!("syncing the recording: {e}"))
    };
    let error = finish().err();
    (fin, error)
}

/// Size and SHA-256 (hex) of a file.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        ctx.update(&buf[..n]);
    }
    let hex = ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok((len, hex))
}

fn write_sidecar(path: &Path, sidecar: &Sidecar) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(sidecar).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.part");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&json)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Deletes the recordings (and sidecars) in `dir` older than `keep`; returns what it deleted.
pub fn sweep(dir: &Path, keep: Duration) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let modified = entry.metadata()?.modified()?;
        if let Some(name) = entry.file_name().to_str() {
            files.push((name.to_string(), modified));
        }
    }
    let mut deleted = Vec::new();
    for name in crate::record::expired(&files, SystemTime::now(), keep) {
        let path = dir.join(name);
        fs::remove_file(&path)?;
        deleted.push(path);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::packet::{MediaHeader, MediaKind};

    /// A sink that fails once `room` bytes were written, like a full disk.
    struct FullDisk {
        written: Vec<u8>,
        room: usize,
    }

    impl Sink for FullDisk {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            if self.written.len() + bytes.len() > self.room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written.extend_from_slice(bytes);
            Ok(())
        }
        fn patch(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn audio(seq: u32, at: UnixMicros) -> Vec<u8> {
        let mut out = Vec::new();
        let h = MediaHeader { kind: MediaKind::Audio, keyframe: false, seq, captured_us: at };
        h.encode(&[0xF8; 60], &mut out).expect("header");
        out
    }

    #[test]
    fn a_full_disk_stops_the_recording_with_a_note_and_takes_nothing_else_down() {
        let inbox = Arc::new(Inbox::new());
        let tap = Tap { inbox: inbox.clone(), party: Party::Kiosk };
        let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
        let t0 = unix_micros_now();
        // Six seconds of audio; the disk takes about one.
        for seq in 0..300 {
            tap.offer(&audio(seq, t0 + u64::from(seq) * 20_000));
        }
        inbox.stop.store(true, Ordering::Release);
        let recorder = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
        let sink = FullDisk { written: Vec::new(), room: 8_000 };
        let (_, error) = record(5, recorder, sink, &inbox, &notes_tx);
        let error = error.expect("the write error is reported");
        assert!(error.contains("No space left on device"), "{error}");
        assert!(notes.try_recv().is_err(), "no keyframe requests for audio");
        // The recording ended: the relay's further offers are dropped, never blocking.
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 0);
        tap.offer(&audio(1, t0));
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_inbox_hands_over_every_packet_in_order_and_refuses_beyond_its_size() {
        let inbox = Arc::new(Inbox::new());
        let (kiosk, agent) = (
            Tap { inbox: inbox.clone(), party: Party::Kiosk },
            Tap { inbox: inbox.clone(), party: Party::Agent },
        );
        kiosk.offer(&[1, 2, 3]);
        agent.offer(&[]);
        kiosk.offer(&[9; 1000]);
        let buf = std::mem::take(&mut *inbox.lock());
        let got: Vec<(Party, Vec<u8>)> = entries(&buf).map(|(p, _, d)| (p, d.to_vec())).collect();
        assert_eq!(
            got,
            [(Party::Kiosk, vec![1, 2, 3]), (Party::Agent, vec![]), (Party::Kiosk, vec![9; 1000])]
        );
        // A torn last entry (a panic mid-append) is ignored, the whole ones kept.
        assert_eq!(entries(&buf[..buf.len() - 1]).count(), 2);
        // Full: refused and counted, nothing partial written.
        let big = vec![0; 1 << 20];
        for _ in 0..3 {
            kiosk.offer(&big);
        }
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 0);
        kiosk.offer(&big);
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(entries(&inbox.lock()).count(), 3);
    }

    #[test]
    fn files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, first) = create_file(dir.path(), 7).expect("first");
        let (_, second) = create_file(dir.path(), 7).expect("second");
        assert_eq!(first.file_name().and_then(|n| n.to_str()), Some("call-7.mkv"));
        assert_eq!(second.file_name().and_then(|n| n.to_str()), Some("call-7-2.mkv"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&first).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn sweeping_deletes_only_old_recordings() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["call-1.mkv", "call-1.json", "keep.txt"] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        let old = SystemTime::now() - Duration::from_secs(3 * 86_400);
        for name in ["call-1.mkv", "keep.txt"] {
            File::options()
                .write(true)
                .open(dir.path().join(name))
                .and_then(|f| f.set_modified(old))
                .expect("set mtime");
        }
        let deleted = sweep(dir.path(), Duration::from_secs(2 * 86_400)).expect("sweep");
        assert_eq!(deleted, [dir.path().join("call-1.mkv")]);
        assert!(dir.path().join("call-1.json").exists() && dir.path().join("keep.txt").exists());
    }
}
