//! `kioskd bench --load N`: N calls at once through a running hub, for measuring what the hub
//! spends per call (relaying, recording).
//!
//! Each kiosk and agent is a real client (QUIC, mutual TLS with its own certificate, the
//! control protocol), and sends real media: H.264 and Opus encoded once before the calls
//! start, replayed at the camera's frame rate and 50 audio frames a second, with fresh
//! headers (sequence numbers, capture times). The parties spend no CPU on codecs, so one core
//! drives many calls, and every run offers the hub the same packets at the same pace.
//!
//! The clip is one group of pictures starting with a keyframe, so it loops cleanly; a
//! keyframe request (from the other party or the hub's recorder) restarts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::edges::devices::camera::synthetic::test_pattern;
use crate::edges::devices::unix_micros_now;
use crate::edges::net::certs::file_stem;
use crate::edges::net::client::{self, Session};
use crate::edges::net::tls::{TlsMaterial, client_config};
use crate::media::codec::{AudioEncoder, AudioSettings, VideoEncoder, VideoSettings};
use crate::media::packet::{MAX_VIDEO_FRAME, MediaHeader, MediaKind, decode as decode_header};
use crate::media::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::protocol::{ClientMsg, HubMsg, Presence, Role};

/// How long a call may take to connect (all calls are placed at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// After hanging up, how long a party keeps reading what is still on its way.
const DRAIN: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub hub: SocketAddr,
    pub server_name: String,
    /// Holds `ca.pem` and, for i in 1..=calls, `agent-i` and `branch-1_kiosk-i` (`.pem` and
    /// `.key`), as `kioskd certs issue` writes them.
    pub certs: PathBuf,
    pub calls: usize,
    /// How long each call lasts once all are connected.
    pub duration: Duration,
    pub video: VideoSettings,
}

/// Media counted by the parties, added up over all calls.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub audio_packets: u64,
    pub video_frames: u64,
    pub bytes: u64,
}

/// One JSON line.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub bench: &'static str,
    pub calls: usize,
    pub connected: usize,
    /// Calls the hub said it records.
    pub recorded: usize,
    pub video: String,
    pub duration_s: f64,
    pub sent: Counts,
    pub received: Counts,
    /// Received over sent, in percent (media still in flight at hang-up counts as missing).
    pub audio_delivered_pct: f64,
    pub video_delivered_pct: f64,
    /// Keyframe requests the parties got (from each other or the hub's recorder).
    pub keyframe_requests: u64,
    pub errors: Vec<String>,
}

/// The media every party replays.
struct Clip {
    /// (keyframe, H.264 access unit); the first is a keyframe.
    video: Vec<(bool, Vec<u8>)>,
    /// 20 ms Opus packets.
    audio: Vec<Vec<u8>>,
    fps: f32,
}

impl Clip {
    /// Encodes `seconds` of the synthetic camera and a 440 Hz tone.
    fn encode(video: VideoSettings, seconds: u32) -> anyhow::Result<Self> {
        let frames = (video.fps * seconds as f32).round().max(1.0) as u32;
        // One group of pictures: the clip loops on its only keyframe.
        let mut enc = VideoEncoder::new(VideoSettings { keyframe_interval: frames + 1, ..video })
            .context("making the video encoder")?;
        let mut out = Vec::new();
        for n in 0..frames {
            let pic = test_pattern(video.width, video.height, n, u64::from(n) * 33_333);
            if let Some(f) = enc.encode(&pic).context("encoding the clip")? {
                out.push((f.keyframe, f.data));
            }
        }
        if !out.first().is_some_and(|(k, _)| *k) {
            bail!("the encoder did not start the clip with a keyframe");
        }
        let mut aenc = AudioEncoder::new(AudioSettings::default()).context("making the audio encoder")?;
        let mut audio = Vec::new();
        for n in 0..50 * seconds as usize {
            let samples: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (n * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
                    ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            audio.push(aenc.encode(&samples).context("encoding the clip's audio")?);
        }
        Ok(Self { video: out, audio, fps: video.fps })
    }
}

#[derive(Default)]
struct Counters {
    audio: AtomicU64,
    video: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn add(&self, video: bool, bytes: usize) {
        if video { &self.video } else { &self.audio }.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        Counts {
            audio_packets: self.audio.load(Ordering::Relaxed),
            video_frames: self.video.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Shared by every party of the run.
struct Run {
    clip: Clip,
    sent: Counters,
    received: Counters,
    keyframe_requests: AtomicU64,
    /// Set when the calls are to end.
    hang_up: tokio::sync::watch::Receiver<bool>,
    /// Every party's frames are timed from here (see [`schedule`]).
    epoch: Instant,
}

pub(super) fn load_material(dir: &Path, id: &str) -> anyhow::Result<TlsMaterial> {
    let stem = file_stem(id);
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    TlsMaterial::load(&dir.join("ca.pem"), &cert, &key)
        .with_context(|| format!("loading the certificate of `{id}` from {}", dir.display()))
}

async fn connect(opts: &LoadOptions, id: &str, role: Role) -> anyhow::Result<(quinn::Endpoint, Session)> {
    let material = load_material(&opts.certs, id)?;
    let endpoint = client::endpoint(client_config(&material)?, opts.hub.is_ipv6())
        .context("binding a client endpoint")?;
    let session = client::connect(&endpoint, opts.hub, &opts.server_name, role)
        .await
        .with_context(|| format!("`{id}` connecting to {}", opts.hub))?;
    Ok((endpoint, session))
}

/// Runs the calls and reports.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(opts.calls >= 1, "at least one call");
    let clip = Clip::encode(opts.video, 5)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = Arc::new(Run {
        clip,
        sent: Counters::default(),
        received: Counters::default(),
        keyframe_requests: AtomicU64::new(0),
        hang_up: stop_rx,
        epoch: Instant::now(),
    });
    let parties_ready = connect_all(&opts).await?;
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel::<bool>(2 * opts.calls);
    let mut parties = JoinSet::new();
    let n = 2 * opts.calls;
    for (i, (ep, s, role)) in parties_ready.into_iter().enumerate() {
        let (run, connected) = (run.clone(), connected_tx.clone());
        // Cameras and microphones do not tick together: the parties' frames are spread evenly
        // over a frame interval, as independent devices would be.
        let phase = i as f64 / n as f64;
        parties.spawn(async move {
            let r = party(run, s, role, phase, connected).await;
            ep.close(0u32.into(), b"done");
            ep.wait_idle().await;
            r
        });
    }
    drop(connected_tx);
    let (connected, recorded) = wait_connected(&mut connected_rx, 2 * opts.calls).await;
    let started = Instant::now();
    if connected == 2 * opts.calls {
        tokio::time::sleep(opts.duration).await;
    }
    let duration_s = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut errors = Vec::new();
    if connected < 2 * opts.calls {
        errors.push(format!("{connected} of {} parties connected", 2 * opts.calls));
    }
    while let Some(r) = parties.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("party task: {e}")),
        }
    }
    let (sent, received) = (run.sent.counts(), run.received.counts());
    let pct = |r: u64, s: u64| if s == 0 { 0.0 } else { (1000.0 * r as f64 / s as f64).round() / 10.0 };
    Ok(LoadReport {
        bench: "hub_load",
        calls: opts.calls,
        connected: connected / 2,
        recorded: recorded / 2,
        video: format!("{}x{}@{}", opts.video.width, opts.video.height, opts.video.fps),
        duration_s: (duration_s * 100.0).round() / 100.0,
        sent,
        received,
        audio_delivered_pct: pct(received.audio_packets, sent.audio_packets),
        video_delivered_pct: pct(received.video_frames, sent.video_frames),
        keyframe_requests: run.keyframe_requests.load(Ordering::Relaxed),
        errors,
    })
}

/// Connects the agents (each IDLE before the kiosks call, so that every call finds one),
/// then the kiosks.
async fn connect_all(opts: &LoadOptions) -> anyhow::Result<Vec<(quinn::Endpoint, Session, Role)>> {
    let mut parties = Vec::new();
    for i in 1..=opts.calls {
        let (ep, mut s) = connect(opts, &format!("agent-{i}"), Role::Agent).await?;
        s.writer.send(&ClientMsg::SetPresence { presence: Presence::Idle }).await?;
        parties.push((ep, s, Role::Agent));
    }
    for i in 1..=opts.calls {
        let (ep, s) = connect(opts, &format!("branch-1/kiosk-{i}"), Role::Kiosk).await?;
        parties.push((ep, s, Role::Kiosk));
    }
    Ok(parties)
}

/// Waits until every party reports it is connected (and whether its call is recorded), or the
/// connect budget runs out; returns how many did.
async fn wait_connected(rx: &mut tokio::sync::mpsc::Receiver<bool>, parties: usize) -> (usize, usize) {
    let (mut connected, mut recorded) = (0, 0);
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while connected < parties {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(rec)) => {
                connected += 1;
                recorded += usize::from(rec);
            }
            Ok(None) | Err(_) => break,
        }
    }
    (connected, recorded)
}

/// One kiosk or agent: gets into a call, sends and counts media until the run hangs up.
async fn party(
    run: Arc<Run>,
    mut s: Session,
    role: Role,
    phase: f64,
    connected: tokio::sync::mpsc::Sender<bool>,
) -> anyhow::Result<()> {
    if role == Role::Kiosk {
        s.writer.send(&ClientMsg::RequestAgent { resume: None, consent: true }).await?;
    }
    let mut hang_up = run.hang_up.clone();
    let call_id = loop {
        let msg = tokio::select! {
            // The run ends before this party's call connected (the run reports it).
            _ = hang_up.wait_for(|h| *h) => return Ok(()),
            msg = s.reader.recv::<HubMsg>() => msg,
        };
        match msg.with_context(|| format!("`{}` waiting for its call", s.id))? {
            HubMsg::Offer { call_id, .. } => s.writer.send(&ClientMsg::Accept { call_id }).await?,
            HubMsg::Connected { call_id, recorded, .. } => {
                let _ = connected.send(recorded).await;
                break call_id;
            }
            HubMsg::Busy { .. } => bail!("`{}`: the hub's queue is full", s.id),
            HubMsg::Error { message, .. } => bail!("`{}`: the hub refused: {message}", s.id),
            _ => {}
        }
    };
    let restart = Arc::new(AtomicBool::new(false));
    let conn = s.conn.clone();
    let sender = tokio::spawn(send_media(run.clone(), conn.clone(), restart.clone(), phase));
    let mut tasks = JoinSet::new();
    tasks.spawn(receive_datagrams(run.clone(), conn.clone()));
    tasks.spawn(receive_streams(run.clone(), conn.clone()));
    let mut reader = s.reader;
    // The control stream until the run ends: keyframe requests restart the clip.
    loop {
        tokio::select! {
            biased;
            _ = hang_up.wait_for(|h| *h) => break,
            msg = reader.recv::<HubMsg>() => match msg {
                Ok(HubMsg::KeyframeRequest { .. }) => {
                    run.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    restart.store(true, Ordering::Relaxed);
                }
                // The run has ended and the kiosk's hang-up arrived before this party looked
                // at the run's end (a loaded machine polls it late): the call ended as planned.
                Ok(HubMsg::CallEnded { .. }) if *run.hang_up.borrow() => break,
                Ok(HubMsg::CallEnded { reason, .. }) => {
                    sender.abort();
                    tasks.abort_all();
                    bail!("`{}`: the hub ended call {call_id} early ({reason:?})", s.id);
                }
                Ok(_) => {}
                Err(e) => {
                    sender.abort();
                    tasks.abort_all();
                    return Err(e).with_context(|| format!("`{}` in call {call_id}", s.id));
                }
            },
        }
    }
    // Both parties stop sending at once; the kiosk hangs up, and what is still on its way is
    // counted for a moment before the connection closes.
    sender.abort();
    if role == Role::Kiosk {
        s.writer.send(&ClientMsg::HangUp { call_id }).await?;
    }
    tokio::time::sleep(DRAIN).await;
    tasks.abort_all();
    Ok(())
}

/// The first of the ticks `epoch + (phase + k) × period` at or after `now`: every run sends
/// on the same schedule, however long each call took to connect.
fn first_tick(epoch: Instant, now: Instant, period: Duration, phase: f64) -> Instant {
    let first = epoch + period.mul_f64(phase);
    let behind = now.saturating_duration_since(first).as_secs_f64() / period.as_secs_f64();
    first + period.mul_f64(behind.ceil())
}

/// Ticks on the schedule; a late tick is skipped rather than moving the schedule.
fn schedule(epoch: Instant, period: Duration, phase: f64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(first_tick(epoch, Instant::now(), period, phase), period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tick
}

async fn send_media(run: Arc<Run>, conn: quinn::Connection, restart: Arc<AtomicBool>, phase: f64) {
    let clip = &run.clip;
    let mut audio_tick = schedule(run.epoch, Duration::from_millis(20), phase);
    let mut video_tick =
        schedule(run.epoch, Duration::from_secs_f64(1.0 / f64::from(clip.fps.max(1.0))), phase);
    let (mut aseq, mut vseq, mut vi) = (0u32, 0u32, 0usize);
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            _ = audio_tick.tick() => {
                let payload = &clip.audio[aseq as usize % clip.audio.len()];
                let h = MediaHeader { kind: MediaKind::Audio, keyframe: false, seq: aseq, captured_us: unix_micros_now() };
                aseq = aseq.wrapping_add(1);
                buf.clear();
                if h.encode(payload, &mut buf).is_ok()
                    && conn.send_datagram(bytes::Bytes::copy_from_slice(&buf)).is_ok()
                {
                    run.sent.add(false, buf.len());
                }
            }
            _ = video_tick.tick() => {
                if restart.swap(false, Ordering::Relaxed) {
                    vi = 0;
                }
                let (keyframe, payload) = &clip.video[vi % clip.video.len()];
                vi = (vi + 1) % clip.video.len();
                let h = MediaHeader { kind: MediaKind::Video, keyframe: *keyframe, seq: vseq, captured_us: unix_micros_now() };
                vseq = vseq.wrapping_add(1);
                let mut frame = Vec::with_capacity(payload.len() + 16);
                if h.encode(payload, &mut frame).is_err() {
                    continue;
                }
                let (conn, run) = (conn.clone(), run.clone());
                tokio::spawn(async move {
                    let Ok(mut out) = conn.open_uni().await else { return };
                    if out.write_all(&frame).await.is_ok() && out.finish().is_ok() {
                        run.sent.add(true, frame.len());
                    }
                });
            }
        }
    }
}

async fn receive_datagrams(run: Arc<Run>, conn: quinn::Connection) {
    while let Ok(d) = conn.read_datagram().await {
        if decode_header(&d).is_ok_and(|(h, _)| h.kind == MediaKind::Audio) {
            run.received.add(false, d.len());
        }
    }
}

async fn receive_streams(run: Arc<Run>, conn: quinn::Connection) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let run = run.clone();
        tokio::spawn(async move {
            if let Ok(frame) = recv.read_to_end(MAX_VIDEO_FRAME + 64).await
                && decode_header(&frame).is_ok_and(|(h, _)| h.kind == MediaKind::Video)
            {
                run.received.add(true, frame.len());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clip_starts_with_its_only_keyframe_and_has_a_second_of_audio_per_second() {
        let v =
            VideoSettings { width: 160, height: 120, fps: 10.0, bitrate_bps: 200_000, keyframe_interval: 5 };
        let clip = Clip::encode(v, 2).expect("a clip");
        assert_eq!(clip.video.len(), 20);
        assert!(clip.video[0].0);
        assert!(clip.video[1..].iter().all(|(k, _)| !k), "the clip loops on one keyframe");
        assert_eq!(clip.audio.len(), 100);
        assert!(clip.audio.iter().all(|p| !p.is_empty() && p.len() < 1000));
    }

    #[test]
    fn every_party_ticks_on_the_shared_schedule_at_its_phase() {
        let (epoch, ms) = (Instant::now(), Duration::from_millis);
        // Period 20 ms, phase 0.25: ticks at 5, 25, 45, 65, 85, ... ms.
        let at = |now_ms| first_tick(epoch, epoch + ms(now_ms), ms(20), 0.25) - epoch;
        assert_eq!(at(0), ms(5));
        assert_eq!(at(5), ms(5));
        assert_eq!(at(6), ms(25));
        assert_eq!(at(75), ms(85));
        // Another party, half a period later.
        assert_eq!(first_tick(epoch, epoch + ms(75), ms(20), 0.75) - epoch, ms(75));
    }

    #[test]
    fn a_missing_certificate_names_the_party_and_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load_material(dir.path(), "branch-1/kiosk-7").expect_err("no certificate there");
        let msg = format!("{e:#}");
        assert!(msg.contains("branch-1/kiosk-7") && msg.contains(&dir.path().display().to_string()), "{msg}");
    }
}
