//! The session's QUIC edge: audio out as datagrams and video out as one stream per frame
//! (audio first), and both in — audio into the jitter buffer, video through the reorder
//! buffer to the decoder thread — with the receiver's loss and rate reports for the hub.

use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use quinn::Connection;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::stats::{Shared, lock, with};
use super::{AudioOut, VIDEO_IN_QUEUE, VIDEO_SEND_DEADLINE, VideoOut};
use crate::edges::devices::unix_micros_now;
use crate::edges::net::frame::{FrameSent, send_frame};
use crate::media::audio_jitter::AudioJitterBuffer;
use crate::media::loss::LossMeter;
use crate::media::packet::{self, MediaHeader, MediaKind};
use crate::media::rate::ReceiverRate;
use crate::media::video_reorder::{ReorderConfig, VideoReorder};
use crate::protocol::{CallId, ClientMsg};

/// How long one video frame's stream may take to arrive whole.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The receiving side's reports for the hub (loss, rate hints, keyframe requests).
#[derive(Clone)]
pub(super) struct Feedback {
    pub call_id: CallId,
    pub to_hub: mpsc::Sender<ClientMsg>,
}

impl Feedback {
    /// Sends a report if the channel has room: reports are repeated, one lost does no harm.
    pub(super) fn send(&self, msg: ClientMsg) {
        let _ = self.to_hub.try_send(msg);
    }

    fn rate_hint(&self, hint: Option<u32>) {
        if let Some(bitrate_bps) = hint {
            self.send(ClientMsg::RateHint { call_id: self.call_id, bitrate_bps });
        }
    }
}

/// Sends this side's media: audio before video, since it is small and late audio is worse.
pub(super) async fn send_task(
    conn: Connection,
    mut audio: mpsc::Receiver<AudioOut>,
    mut video: mpsc::Receiver<VideoOut>,
    stats: Shared,
) {
    let mut buf = Vec::with_capacity(1500);
    // A side without a microphone or camera closes that channel at once; the other goes on.
    let (mut audio_open, mut video_open) = (true, true);
    while audio_open || video_open {
        tokio::select! {
            biased;
            a = audio.recv(), if audio_open => match a {
                Some(a) => send_audio(&conn, a, &mut buf, &stats),
                None => audio_open = false,
            },
            v = video.recv(), if video_open => match v {
                Some(v) => send_video(&conn, v, &stats),
                None => video_open = false,
            },
        }
    }
}

fn send_audio(conn: &Connection, (h, payload, copy): AudioOut, buf: &mut Vec<u8>, stats: &Shared) {
    buf.clear();
    let encoded = if copy { h.encode_copy(&payload, buf) } else { h.encode(&payload, buf) };
    if encoded.is_err() {
        return;
    }
    if conn.max_datagram_size().is_none_or(|m| buf.len() > m) {
        debug!(len = buf.len(), "audio frame larger than a datagram; dropped");
        return;
    }
    let len = buf.len() as u64;
    if conn.send_datagram(bytes::Bytes::copy_from_slice(buf)).is_ok() {
        with(stats, |s| s.bytes_sent += len);
    }
}

/// Each frame on its own stream, on its own task, so that a slow one never holds back the next.
fn send_video(conn: &Connection, (h, payload): VideoOut, stats: &Shared) {
    let mut frame = Vec::with_capacity(payload.len() + 16);
    if h.encode(&payload, &mut frame).is_err() {
        with(stats, |s| s.video_frames_send_dropped += 1);
        return;
    }
    let (conn, stats) = (conn.clone(), stats.clone());
    tokio::spawn(async move {
        let len = frame.len() as u64;
        let deadline = tokio::time::Instant::now() + VIDEO_SEND_DEADLINE;
        match send_frame(&conn, &frame, h.keyframe, deadline).await {
            // Late: handed to QUIC whole but not acknowledged in time, then reset (it may still
            // have arrived). Counted as sent, as before the reset on delivery; `sent_kbps` is
            // what the encoder handed to QUIC.
            FrameSent::Delivered | FrameSent::Late => with(&stats, |s| s.bytes_sent += len),
            FrameSent::NotSent => with(&stats, |s| s.video_frames_send_dropped += 1),
        }
    });
}

/// The other side's audio, into the jitter buffer; its loss and delay measured on the way.
pub(super) async fn recv_datagrams(
    conn: Connection,
    jitter: Arc<Mutex<AudioJitterBuffer>>,
    receiver_rate: Arc<Mutex<ReceiverRate>>,
    stats: Shared,
    feedback: Feedback,
) {
    let mut meter = LossMeter::new();
    while let Ok(d) = conn.read_datagram().await {
        let Ok((h, payload)) = packet::decode(&d) else { continue };
        if h.kind != MediaKind::Audio {
            continue;
        }
        let now = unix_micros_now();
        with(&stats, |s| s.bytes_received += d.len() as u64);
        // The network's loss counts first sendings only: copies repair it.
        if !packet::is_copy(&d) {
            if let Some(audio_loss_pct) = meter.handle(h.seq, now) {
                feedback.send(ClientMsg::LossReport { call_id: feedback.call_id, audio_loss_pct });
            }
            let hint = {
                let mut r = lock(&receiver_rate);
                r.on_audio(now, h.captured_us);
                r.poll(now)
            };
            feedback.rate_hint(hint);
        }
        lock(&jitter).handle_packet(h.seq, h.captured_us, payload.to_vec(), now);
    }
}

/// The other side's video frames, in order (frames that overtook a missing one wait for it,
/// see media::video_reorder), to the decoder thread.
pub(super) async fn recv_streams(
    conn: Connection,
    frames: std_mpsc::SyncSender<(MediaHeader, Vec<u8>)>,
    receiver_rate: Arc<Mutex<ReceiverRate>>,
    stats: Shared,
    feedback: Feedback,
) {
    // Aborted with this task: a reader left behind would take the next call's streams.
    let (reader, mut done) = spawn_frame_reader(conn);
    let _reader = AbortOnDrop(reader);
    let mut reorder = VideoReorder::new(ReorderConfig::default());
    loop {
        let arrived = match reorder.poll_timeout() {
            Some(at) => {
                let wait = Duration::from_micros(at.saturating_sub(unix_micros_now()));
                match tokio::time::timeout(wait, done.recv()).await {
                    Ok(Some(data)) => Some(data),
                    Ok(None) => break,
                    Err(_) => None,
                }
            }
            None => match done.recv().await {
                Some(data) => Some(data),
                None => break,
            },
        };
        let now = unix_micros_now();
        let ready = match arrived {
            Some(data) => {
                let Ok((h, payload)) = packet::decode(&data) else { continue };
                if h.kind != MediaKind::Video {
                    continue;
                }
                with(&stats, |s| s.bytes_received += data.len() as u64);
                let hint = {
                    let mut r = lock(&receiver_rate);
                    r.on_video(now, h.captured_us, data.len() as u64);
                    r.poll(now)
                };
                feedback.rate_hint(hint);
                reorder.push(h.seq, h.keyframe, (h, payload.to_vec()), now)
            }
            None => reorder.poll(now),
        };
        for frame in ready {
            if frames.try_send(frame).is_err() {
                info!("video decoder behind; frame dropped");
            }
        }
    }
}

/// Aborts its task when dropped (also when the task holding it is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads every incoming stream whole, each on its own task: frames come out in the order they
/// complete.
fn spawn_frame_reader(conn: Connection) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Vec<u8>>) {
    let (done_tx, done_rx) = mpsc::channel::<Vec<u8>>(VIDEO_IN_QUEUE);
    let reader = tokio::spawn(async move {
        while let Ok(mut recv) = conn.accept_uni().await {
            let done = done_tx.clone();
            tokio::spawn(async move {
                let read = recv.read_to_end(packet::MAX_VIDEO_FRAME + 16);
                if let Ok(Ok(data)) = tokio::time::timeout(FRAME_READ_TIMEOUT, read).await {
                    let _ = done.send(data).await;
                }
            });
        }
    });
    (reader, done_rx)
}
