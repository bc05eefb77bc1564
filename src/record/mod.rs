//! Call recording at the hub: the sans-IO core that turns relayed media into a Matroska file.
//!
//! The hub's relay hands every media packet of a recorded call (16-byte media header and
//! payload, as it arrived) to [`Recorder::push`], with the hub's arrival time. The recorder:
//!
//! - places each party's frames on one timeline: a party's capture clock is anchored to the
//!   hub's clock at its first packet, so each party keeps its own lip sync and the parties are
//!   aligned as the hub heard them;
//! - writes four tracks — the kiosk's camera and microphone, the agent's camera and microphone
//!   — as H.264 (`V_MPEG4/ISO/AVC`, NAL units length-prefixed, `avcC` from the first keyframe)
//!   and Opus (`A_OPUS`);
//! - starts each video track at a keyframe, and after a lost frame skips to the next keyframe
//!   (asking the sender for one), so that every frame in the file decodes;
//! - waits for both parties' first keyframes (at most [`RecorderConfig::header_wait_us`]) before
//!   it writes the file's header, since the header holds each camera's parameters; a camera
//!   that sent nothing by then is left out of the file;
//! - emits whole Clusters of about a second, so a file cut off by a crash plays up to its last
//!   second ([`mkv`]).
//!
//! No IO, no clock: bytes come out of [`Recorder::take_output`], time goes in as arguments.
//! The file, the thread and the sidecar are in [`writer`].

pub mod h264;
pub mod mkv;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use std::path::PathBuf;

use crate::media::UnixMicros;
use crate::media::packet::{MediaKind, decode as decode_header};
use mkv::{Block, Layout, TrackCodec, TrackSpec};

/// Where and how long the hub keeps call recordings.
#[derive(Debug, Clone)]
pub struct RecordingOptions {
    /// One `call-<id>.mkv` and `call-<id>.json` per recorded call (created mode 0700).
    pub dir: PathBuf,
    /// Recordings older than this are deleted (checked at start and hourly); kept forever
    /// when absent.
    pub retention: Option<Duration>,
}

/// Who sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Kiosk,
    Agent,
}

impl Party {
    pub(crate) fn index(self) -> usize {
        match self {
            Party::Kiosk => 0,
            Party::Agent => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Kiosk => "kiosk",
            Party::Agent => "agent",
        }
    }
}

const PARTIES: [Party; 2] = [Party::Kiosk, Party::Agent];

/// Video frames held back waiting for a missing earlier one, at most (each frame travels on
/// its own QUIC stream, so frames can overtake each other)…
const REORDER_FRAMES: usize = 8;
/// …and for at most this long; then the missing frame counts as lost.
const REORDER_WAIT_US: u64 = 150_000;

#[derive(Debug, Clone, Copy)]
pub struct RecorderConfig {
    /// Longest wait for both cameras' first keyframes before the header is written.
    pub header_wait_us: u64,
    /// A Cluster is closed once it spans this much media time (or this much wall time passed
    /// since its first frame, when media stops).
    pub cluster_ms: u64,
    /// Keyframe requests to one party at most this often.
    pub keyframe_request_interval_us: u64,
    /// Media buffered before the header, or in one Cluster, at most (bytes): beyond it the
    /// header or the Cluster is written early.
    pub max_buffered_bytes: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            header_wait_us: 3_000_000,
            cluster_ms: 1000,
            keyframe_request_interval_us: 1_000_000,
            max_buffered_bytes: 16 << 20,
        }
    }
}

/// What the recorder asks of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The party's video cannot be recorded until a keyframe: ask its encoder for one.
    RequestKeyframe(Party),
}

/// One track as the sidecar describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackSummary {
    pub number: u8,
    pub party: Party,
    pub kind: &'static str,
    pub codec: &'static str,
    pub name: String,
    pub frames: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// Counts of what was not recorded, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Packets whose media header did not decode.
    pub invalid: u64,
    /// Video frames skipped while waiting for a keyframe (start, or after a lost frame).
    pub video_until_keyframe: u64,
    /// Video frames older than one already recorded (reordered or repeated).
    pub video_stale: u64,
    /// Frames of a camera that had sent nothing when the header was written.
    pub untracked: u64,
    /// Audio frames older than one already recorded (late or repeated).
    pub audio_stale: u64,
}

#[derive(Debug, Default)]
struct VideoTrack {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    size: Option<(u32, u32)>,
    /// The sequence number the next frame should have.
    expect_seq: Option<u32>,
    /// Frames that arrived ahead of a missing one: seq → (keyframe, payload, ts, arrival).
    /// (Sequence numbers wrap after 4·10⁹ frames, four years at 30 fps: not handled.)
    reorder: BTreeMap<u32, (bool, Vec<u8>, u64, UnixMicros)>,
    /// Frames are skipped until a keyframe (at the start and after a lost frame).
    want_keyframe: bool,
    last_request_us: Option<UnixMicros>,
    number: Option<u8>,
    last_ts_ms: Option<u64>,
    frames: u64,
}

#[derive(Debug, Default)]
struct AudioTrack {
    number: Option<u8>,
    /// (seq, ms) of the frame the track's times count from: every frame lasts 20 ms, so a
    /// frame's time is exact from its sequence number, with no capture jitter.
    anchor: Option<(u32, u64)>,
    last_ts_ms: Option<u64>,
    frames: u64,
}

/// Milliseconds of one audio frame.
const AUDIO_FRAME_MS: i64 = 20;
/// The microphone's clock and the capture times may drift apart; beyond this the track is
/// anchored again at the capture time (lip sync within this much).
const AUDIO_DRIFT_MS: i64 = 60;

impl AudioTrack {
    /// The time of frame `seq` captured at `captured_ms`; none for a frame older than one
    /// already recorded.
    fn place(&mut self, seq: u32, captured_ms: u64) -> Option<u64> {
        let (aseq, ams) = *self.anchor.get_or_insert((seq, captured_ms));
        let by_seq = ams as i64 + i64::from(seq.wrapping_sub(aseq) as i32) * AUDIO_FRAME_MS;
        let ts = if (by_seq - captured_ms as i64).abs() > AUDIO_DRIFT_MS {
            self.anchor = Some((seq, captured_ms));
            captured_ms
        } else {
            by_seq.max(0) as u64
        };
        if self.last_ts_ms.is_some_and(|last| ts <= last) {
            return None;
        }
        self.last_ts_ms = Some(ts);
        Some(ts)
    }
}

/// A frame waiting for the header.
#[derive(Debug)]
struct Pending {
    party: Party,
    kind: MediaKind,
    block: Block,
}

/// The recorder of one call. Feed it packets, poll its output bytes, and finish it.
#[derive(Debug)]
pub struct Recorder {
    config: RecorderConfig,
    title: String,
    names: [String; 2],
    start_unix_ms: u64,
    /// The hub's clock at the first packet.
    origin_us: Option<UnixMicros>,
    /// Per party: hub clock minus capture clock, from its first packet.
    offsets: [Option<i128>; 2],
    video: [VideoTrack; 2],
    audio: [AudioTrack; 2],
    pending: Vec<Pending>,
    pending_bytes: usize,
    layout: Option<Layout>,
    cluster: Vec<Block>,
    cluster_bytes: usize,
    cluster_opened_us: UnixMicros,
    out: Vec<u8>,
    /// Bytes handed out so far (the file's length once written).
    emitted: u64,
    max_ts_ms: u64,
    actions: VecDeque<Action>,
    skipped: Skipped,
}

/// What finishing a recording gives: the last bytes to append, then the patches to apply.
#[derive(Debug)]
pub struct Finished {
    pub tail: Vec<u8>,
    pub patches: Vec<(u64, Vec<u8>)>,
    pub duration_ms: u64,
    pub tracks: Vec<TrackSummary>,
    pub skipped: Skipped,
}

impl Recorder {
    /// A recording that starts now (`start_unix_ms`, the call's connection). `kiosk` and
    /// `agent` name the parties in the track names.
    pub fn new(config: RecorderConfig, title: String, kiosk: &str, agent: &str, start_unix_ms: u64) -> Self {
        let mut video: [VideoTrack; 2] = Default::default();
        for v in &mut video {
            v.want_keyframe = true;
        }
        Self {
            config,
            title,
            names: [kiosk.to_string(), agent.to_string()],
            start_unix_ms,
            origin_us: None,
            offsets: [None; 2],
            video,
            audio: Default::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            layout: None,
            cluster: Vec::new(),
            cluster_bytes: 0,
            cluster_opened_us: 0,
            out: Vec::new(),
            emitted: 0,
            max_ts_ms: 0,
            actions: VecDeque::new(),
            skipped: Skipped::default(),
        }
    }

    /// One packet (media header + payload) from `party`, as it reached the hub at `now`.
    pub fn push(&mut self, party: Party, packet: &[u8], now: UnixMicros) {
        let Ok((h, payload)) = decode_header(packet) else {
            self.skipped.invalid += 1;
            return;
        };
        let origin = *self.origin_us.get_or_insert(now);
        let ts_ms = self.timestamp_ms(party, h.captured_us, now, origin);
        let p = party.index();
        match h.kind {
            MediaKind::Audio => {
                let Some(ts_ms) = self.audio[p].place(h.seq, ts_ms) else {
                    self.skipped.audio_stale += 1;
                    return;
                };
                let block = Block { track: 0, ts_ms, keyframe: true, data: payload.to_vec() };
                self.accept(party, MediaKind::Audio, block, now);
            }
            MediaKind::Video => {
                let v = &mut self.video[p];
                if v.expect_seq.is_some_and(|e| h.seq < e) || v.reorder.contains_key(&h.seq) {
                    self.skipped.video_stale += 1;
                    return;
                }
                v.reorder.insert(h.seq, (h.keyframe, payload.to_vec(), ts_ms, now));
                self.release_video(party, now);
            }
        }
    }

    /// Passes on the video frames that are next in sequence, or that waited long enough for
    /// a missing one (the gap then costs a keyframe).
    fn release_video(&mut self, party: Party, now: UnixMicros) {
        loop {
            let v = &mut self.video[party.index()];
            let Some((&seq, &(_, _, _, arrived))) = v.reorder.first_key_value() else { return };
            let oldest = v.reorder.values().map(|f| f.3).min().unwrap_or(arrived);
            let in_order = v.expect_seq.is_none_or(|e| e == seq);
            let given_up = v.reorder.len() > REORDER_FRAMES || now.saturating_sub(oldest) > REORDER_WAIT_US;
            if !in_order && !given_up {
                return;
            }
            let Some((keyframe, payload, ts_ms, _)) = v.reorder.remove(&seq) else { return };
            if !in_order {
                v.want_keyframe = true; // a frame was lost: the next ones do not decode
            }
            v.expect_seq = Some(seq.wrapping_add(1));
            if let Some(block) = self.video_frame(party, keyframe, payload, ts_ms, now) {
                self.accept(party, MediaKind::Video, block, now);
            }
        }
    }

    /// A frame ready for the file: held until the header is written, then added.
    fn accept(&mut self, party: Party, kind: MediaKind, block: Block, now: UnixMicros) {
        let origin = self.origin_us.unwrap_or(now);
        if self.layout.is_none() {
            self.pending_bytes += block.data.len();
            self.pending.push(Pending { party, kind, block });
            let cameras_ready = self.video.iter().all(|v| v.sps.is_some() && v.pps.is_some());
            if cameras_ready
                || now.saturating_sub(origin) >= self.config.header_wait_us
                || self.pending_bytes > self.config.max_buffered_bytes
            {
                self.write_header();
            }
        } else {
            self.add(party, kind, block, now);
        }
    }

    /// Time passes without packets: writes the header or a Cluster when due.
    pub fn tick(&mut self, now: UnixMicros) {
        for party in PARTIES {
            self.release_video(party, now);
        }
        if self.layout.is_none() {
            if self.origin_us.is_some_and(|o| now.saturating_sub(o) >= self.config.header_wait_us) {
                self.write_header();
            }
        } else if !self.cluster.is_empty()
            && now.saturating_sub(self.cluster_opened_us) >= self.config.cluster_ms * 1500
        {
            self.flush_cluster();
        }
    }

    /// What the hub should do for the recording.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to append to the file, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out);
        self.emitted += out.len() as u64;
        out
    }

    /// Ends the recording: the last bytes and the patches that make the file whole.
    pub fn finish(mut self) -> Finished {
        for party in PARTIES {
            self.release_video(party, UnixMicros::MAX);
        }
        if self.layout.is_none() {
            self.write_header();
        }
        self.flush_cluster();
        let tail = std::mem::take(&mut self.out);
        let file_len = self.emitted + tail.len() as u64;
        // The last frame lasts about 20 ms (an audio frame, or most of a video frame's time).
        let duration_ms = if self.origin_us.is_some() { self.max_ts_ms + 20 } else { 0 };
        let patches = self.layout.map(|l| l.finish(file_len, duration_ms as f64)).unwrap_or_default();
        let tracks = self.summary();
        Finished { tail, patches, duration_ms, tracks, skipped: self.skipped }
    }

    /// The tracks in the file so far.
    pub fn summary(&self) -> Vec<TrackSummary> {
        let mut tracks = Vec::new();
        for party in PARTIES {
            let p = party.index();
            let v = &self.video[p];
            if let (Some(number), Some((w, h))) = (v.number, v.size) {
                tracks.push(TrackSummary {
                    number,
                    party,
                    kind: "video",
                    codec: "h264",
                    name: self.track_name(party, MediaKind::Video),
                    frames: v.frames,
                    width: Some(w),
                    height: Some(h),
                });
            }
            let a = &self.audio[p];
            if let Some(number) = a.number {
                tracks.push(TrackSummary {
                    number,
                    party,
                    kind: "audio",
                    codec: "opus",
                    name: self.track_name(party, MediaKind::Audio),
                    frames: a.frames,
                    width: None,
                    height: None,
                });
            }
        }
        tracks.sort_by_key(|t| t.number);
        tracks
    }

    fn track_name(&self, party: Party, kind: MediaKind) -> String {
        let what = if kind == MediaKind::Video { "camera" } else { "microphone" };
        format!("{} {what} ({})", party.as_str(), self.names[party.index()])
    }

    fn timestamp_ms(
        &mut self,
        party: Party,
        captured_us: UnixMicros,
        now: UnixMicros,
        origin: UnixMicros,
    ) -> u64 {
        /// A sender clock that drifts this far from the hub's is anchored again.
        const REANCHOR_US: i128 = 5_000_000;
        // Wide arithmetic: a sender's capture time is whatever it wrote.
        let (arrival, captured) = (i128::from(now), i128::from(captured_us));
        let offset = self.offsets[party.index()].get_or_insert(arrival - captured);
        let mut at = captured + *offset;
        if (at - arrival).abs() > REANCHOR_US {
            *offset = arrival - captured;
            at = arrival;
        }
        ((at - i128::from(origin)).max(0) / 1000).min(i128::from(u64::MAX / 2)) as u64
    }

    /// A video frame in sequence: the block to record, or none while waiting for a keyframe.
    fn video_frame(
        &mut self,
        party: Party,
        keyframe: bool,
        payload: Vec<u8>,
        ts_ms: u64,
        now: UnixMicros,
    ) -> Option<Block> {
        let interval = self.config.keyframe_request_interval_us;
        let header_written = self.layout.is_some();
        let v = &mut self.video[party.index()];
        if header_written && v.number.is_none() {
            self.skipped.untracked += 1;
            return None;
        }
        if keyframe {
            let units = h264::nal_units(&payload);
            let sps = units.iter().find(|u| h264::nal_type(u) == Some(h264::NAL_SPS));
            let pps = units.iter().find(|u| h264::nal_type(u) == Some(h264::NAL_PPS));
            if !header_written
                && let (Some(sps), Some(pps)) = (sps, pps)
                && let Some(size) = h264::sps_picture_size(sps)
            {
                v.sps = Some(sps.to_vec());
                v.pps = Some(pps.to_vec());
                v.size = Some(size);
            }
            if v.sps.is_some() {
                v.want_keyframe = false;
            }
        }
        if v.want_keyframe {
            self.skipped.video_until_keyframe += 1;
            if v.last_request_us.is_none_or(|t| now.saturating_sub(t) >= interval) {
                v.last_request_us = Some(now);
                self.actions.push_back(Action::RequestKeyframe(party));
            }
            return None;
        }
        // Strictly increasing: players refuse two frames of a track at the same time.
        let ts_ms = match v.last_ts_ms {
            Some(last) => ts_ms.max(last + 1),
            None => ts_ms,
        };
        v.last_ts_ms = Some(ts_ms);
        Some(Block { track: 0, ts_ms, keyframe, data: h264::into_length_prefixed(payload) })
    }

    fn write_header(&mut self) {
        let mut specs = Vec::new();
        let mut number = 0u8;
        for party in PARTIES {
            let p = party.index();
            let v = &mut self.video[p];
            if let (Some(sps), Some(pps), Some((width, height))) = (&v.sps, &v.pps, v.size)
                && let Some(avcc) = h264::avcc(sps, pps)
            {
                number += 1;
                v.number = Some(number);
                specs.push(TrackSpec {
                    number,
                    name: self.track_name(party, MediaKind::Video),
                    codec: TrackCodec::H264 { avcc, width, height },
                });
            }
            number += 1;
            self.audio[p].number = Some(number);
            specs.push(TrackSpec {
                number,
                name: self.track_name(party, MediaKind::Audio),
                codec: TrackCodec::Opus { channels: 1, pre_skip: 312 },
            });
        }
        let (header, layout) = mkv::header(&self.title, self.start_unix_ms, &specs);
        self.out.extend_from_slice(&header);
        self.layout = Some(layout);
        let now = self.origin_us.unwrap_or(0);
        for pending in std::mem::take(&mut self.pending) {
            self.add(pending.party, pending.kind, pending.block, now);
        }
        self.pending_bytes = 0;
    }

    /// Adds a frame to the open Cluster, closing it first when it is long enough.
    fn add(&mut self, party: Party, kind: MediaKind, mut block: Block, now: UnixMicros) {
        let p = party.index();
        let number = match kind {
            MediaKind::Video => self.video[p].number,
            _ => self.audio[p].number,
        };
        let Some(number) = number else {
            self.skipped.untracked += 1;
            return;
        };
        if let Some(first) = self.cluster.first() {
            let span = block.ts_ms.abs_diff(first.ts_ms);
            if span >= self.config.cluster_ms || self.cluster_bytes > self.config.max_buffered_bytes {
                self.flush_cluster();
            }
        }
        if self.cluster.is_empty() {
            self.cluster_opened_us = now;
        }
        match kind {
            MediaKind::Video => self.video[p].frames += 1,
            _ => self.audio[p].frames += 1,
        }
        block.track = number;
        self.max_ts_ms = self.max_ts_ms.max(block.ts_ms);
        self.cluster_bytes += block.data.len();
        self.cluster.push(block);
    }

    fn flush_cluster(&mut self) {
        if self.cluster.is_empty() {
            return;
        }
        mkv::cluster_into(&mut self.cluster, &mut self.out);
        self.cluster.clear();
        self.cluster_bytes = 0;
    }
}

/// Recording files in a folder that are older than `keep`: the names to delete. Only the
/// recorder's own files (`call-*.mkv` and `call-*.json`) are ever chosen.
pub fn expired(files: &[(String, SystemTime)], now: SystemTime, keep: Duration) -> Vec<String> {
    files
        .iter()
        .filter(|(name, _)| is_recording_file(name))
        .filter(|(_, modified)| now.duration_since(*modified).is_ok_and(|age| age > keep))
        .map(|(name, _)| name.clone())
        .collect()
}

/// `call-<digits>[-<digits>].mkv` or `.json`.
pub fn is_recording_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".mkv").or_else(|| name.strip_suffix(".json")) else {
        return false;
    };
    let Some(rest) = stem.strip_prefix("call-") else {
        return false;
    };
    !rest.is_empty()
        && rest.split('-').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
