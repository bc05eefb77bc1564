//! The media relay: forwards a call's media from one leg to the other without decoding.
//!
//! Audio datagrams are forwarded as they come (quinn drops the oldest when a leg's send buffer
//! is full). Each video frame arrives on its own unidirectional stream and leaves on a new one;
//! a frame the leg has not acknowledged by a deadline is abandoned (crate::edges::net::frame), and at
//! most [`MAX_INFLIGHT_FRAMES`] are unacknowledged at once, so a slow leg never holds back the
//! other leg or other calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::Connection;
use tokio::sync::{Semaphore, watch};
use tracing::debug;

use crate::edges::net::frame::{FrameSent, send_frame};
use crate::media::packet::{MAX_VIDEO_FRAME, MediaKind, decode as decode_header};
use crate::protocol::CallId;
use crate::roles::hub::recording::Tap;

/// Video frames being forwarded to one leg and not yet acknowledged: a second at 30 fps (a
/// frame is held for the leg's round trip, up to the deadline).
pub const MAX_INFLIGHT_FRAMES: usize = 32;
/// A frame the leg has not acknowledged within this time is abandoned: newer frames matter more.
pub const FRAME_DEADLINE: Duration = Duration::from_millis(500);
/// Header and frame: the most a video stream may carry.
const MAX_STREAM: usize = MAX_VIDEO_FRAME + 64;

/// Where one peer's media goes.
#[derive(Clone)]
pub struct Leg {
    pub call_id: CallId,
    pub to: LegSink,
    pub counters: Arc<LegCounters>,
    /// The call's recording, when it is recorded: every valid packet is handed to it too.
    pub tap: Option<Tap>,
}

/// Where a leg's media is delivered: a QUIC peer's connection, or a browser's WebRTC session
/// (the hub's console, `super::console`), which packs the same frames into RTP.
#[derive(Clone)]
pub enum LegSink {
    Quic(Connection),
    Browser(super::console::BrowserSink),
}

/// Counters of one direction of a call.
#[derive(Debug, Default)]
pub struct LegCounters {
    pub audio_forwarded: AtomicU64,
    pub audio_dropped: AtomicU64,
    /// Video frames sent to the leg whole (acknowledged, or reset unacknowledged at the
    /// deadline: it may still have been shown), and those dropped (not read whole, over the
    /// in-flight limit, or not handed to the leg's connection by the deadline).
    pub video_forwarded: AtomicU64,
    pub video_dropped: AtomicU64,
    pub invalid: AtomicU64,
    pub bytes: AtomicU64,
}

/// A snapshot of counters, added up over legs or calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LegTotals {
    pub audio_forwarded: u64,
    pub audio_dropped: u64,
    pub video_forwarded: u64,
    pub video_dropped: u64,
    pub invalid: u64,
    pub bytes: u64,
}

impl LegTotals {
    pub fn add(&mut self, o: &LegTotals) {
        self.audio_forwarded += o.audio_forwarded;
        self.audio_dropped += o.audio_dropped;
        self.video_forwarded += o.video_forwarded;
        self.video_dropped += o.video_dropped;
        self.invalid += o.invalid;
        self.bytes += o.bytes;
    }
}

impl LegCounters {
    pub fn totals(&self) -> LegTotals {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LegTotals {
            audio_forwarded: l(&self.audio_forwarded),
            audio_dropped: l(&self.audio_dropped),
            video_forwarded: l(&self.video_forwarded),
            video_dropped: l(&self.video_dropped),
            invalid: l(&self.invalid),
            bytes: l(&self.bytes),
        }
    }
}

/// Per-call counters, one set per sending leg.
#[derive(Debug, Default)]
pub struct CallMedia {
    legs: HashMap<u64, Arc<LegCounters>>,
}

impl CallMedia {
    /// The counters of media sent by `peer`.
    pub fn leg(&mut self, peer: u64) -> Arc<LegCounters> {
        self.legs.entry(peer).or_default().clone()
    }

    pub fn totals(&self) -> LegTotals {
        let mut t = LegTotals::default();
        for l in self.legs.values() {
            t.add(&l.totals());
        }
        t
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Forwards everything `conn` sends to wherever `route` points, until the connection ends.
pub async fn forward(conn: Connection, route: watch::Receiver<Option<Leg>>) {
    let datagrams = forward_datagrams(conn.clone(), route.clone());
    let streams = forward_streams(conn, route);
    tokio::join!(datagrams, streams);
}

async fn forward_datagrams(conn: Connection, route: watch::Receiver<Option<Leg>>) {
    while let Ok(datagram) = conn.read_datagram().await {
        let leg = route.borrow().clone();
        let Some(leg) = leg else { continue };
        match decode_header(&datagram) {
            Ok((h, _)) if h.kind == MediaKind::Audio => {}
            _ => {
                bump(&leg.counters.invalid);
                continue;
            }
        }
        let len = datagram.len() as u64;
        if let Some(tap) = &leg.tap {
            tap.offer(&datagram);
        }
        let sent = match &leg.to {
            LegSink::Quic(conn) => conn.send_datagram(datagram).map_err(|e| e.to_string()),
            LegSink::Browser(browser) => browser.media(datagram, false),
        };
        match sent {
            Ok(()) => {
                bump(&leg.counters.audio_forwarded);
                leg.counters.bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(error = %e, "audio datagram not forwarded");
                bump(&leg.counters.audio_dropped);
            }
        }
    }
}

async fn forward_streams(conn: Connection, route: watch::Receiver<Option<Leg>>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_FRAMES));
    while let Ok(mut recv) = conn.accept_uni().await {
        let route = route.clone();
        let inflight = inflight.clone();
        tokio::spawn(async move {
            let frame = match tokio::time::timeout(FRAME_DEADLINE, recv.read_to_end(MAX_STREAM)).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => {
                    debug!(error = %e, "video stream not read");
                    if let Some(leg) = route.borrow().as_ref() {
                        bump(&leg.counters.video_dropped);
                    }
                    return;
                }
                Err(_) => {
                    let _ = recv.stop(quinn::VarInt::from_u32(0));
                    if let Some(leg) = route.borrow().as_ref() {
                        bump(&leg.counters.video_dropped);
                    }
                    return;
                }
            };
            let leg = route.borrow().clone();
            let Some(leg) = leg else { return };
            let keyframe = match decode_header(&frame) {
                Ok((h, _)) if h.kind == MediaKind::Video => h.keyframe,
                _ => {
                    bump(&leg.counters.invalid);
                    return;
                }
            };
            if let Some(tap) = &leg.tap {
                tap.offer(&frame);
            }
            let Ok(_permit) = inflight.try_acquire() else {
                bump(&leg.counters.video_dropped);
                return;
            };
            let len = frame.len() as u64;
            let conn = match &leg.to {
                LegSink::Quic(conn) => conn,
                LegSink::Browser(browser) => {
                    // Packed into RTP by the console's WebRTC task, which paces it out.
                    match browser.media(frame.into(), true) {
                        Ok(()) => {
                            bump(&leg.counters.video_forwarded);
                            leg.counters.bytes.fetch_add(len, Ordering::Relaxed);
                        }
                        Err(_) => bump(&leg.counters.video_dropped),
                    }
                    return;
                }
            };
            // Delivered by the deadline or reset (see net::frame); the permit is held until
            // then, so a leg has at most MAX_INFLIGHT_FRAMES frames not yet acknowledged.
            let deadline = tokio::time::Instant::now() + FRAME_DEADLINE;
            match send_frame(conn, &frame, keyframe, deadline).await {
                FrameSent::Delivered | FrameSent::Late => {
                    bump(&leg.counters.video_forwarded);
                    leg.counters.bytes.fetch_add(len, Ordering::Relaxed);
                }
                FrameSent::NotSent => bump(&leg.counters.video_dropped),
            }
        });
    }
}
