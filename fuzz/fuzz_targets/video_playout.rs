//! Video playout (`media::video_playout`): which received frames to decode and when to show
//! the pictures, fed arbitrary seqs, keyframe flags, capture and arrival times, decoder
//! outcomes and audio delays (op format in `kioskd_fuzz::playout_ops`). Time only goes
//! forward here (the receive thread's clock).
//!
//! Properties: no panic; at most `queue_capacity` pictures wait; `poll_display` only names
//! pictures that were decoded; the render delay stays within its ceiling; keyframe requests
//! are never closer than `keyframe_request_interval_us`; the counters match what it said.
#![no_main]

use std::collections::HashSet;

use kioskd::media::video_playout::{FrameAction, VideoPlayout, VideoPlayoutConfig};
use kioskd_fuzz::{Reader, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = VideoPlayoutConfig::default();
    let mut p = VideoPlayout::with_config(config.clone());
    let mut r = Reader::new(data);
    let mut now = T0;
    let mut seq = 0u32;
    let mut decoded = HashSet::new();
    let (mut requests, mut last_request, mut displayed, mut frames) = (0u64, None::<u64>, 0u64, 0u64);
    let mut request = |now: u64, requests: &mut u64| {
        if let Some(last) = last_request {
            assert!(now - last >= config.keyframe_request_interval_us, "keyframe requests {last} and {now}");
        }
        last_request = Some(now);
        *requests += 1;
    };
    while !r.is_empty() {
        let tag = r.u8();
        match tag & 3 {
            0 | 1 => {
                seq = if tag & 0x80 != 0 { r.u32() } else { seq.wrapping_add(r.i8() as u32) };
                let keyframe = tag & 0x40 != 0;
                let captured = if tag & 0x20 != 0 {
                    r.u64()
                } else {
                    (T0 + u64::from(seq) * 33_333).wrapping_add_signed(i64::from(r.i16()) * 100)
                };
                now = now.saturating_add(u64::from(r.u16()) * 10);
                frames += 1;
                match p.handle_frame(seq, keyframe, captured, now) {
                    FrameAction::Decode => match r.u8() % 4 {
                        0 => {
                            if p.handle_decode_error(now) {
                                request(now, &mut requests);
                            }
                        }
                        1 => {}
                        _ => {
                            decoded.insert(seq);
                            p.handle_decoded(seq, captured, now);
                        }
                    },
                    FrameAction::RequestKeyframe => request(now, &mut requests),
                    FrameAction::DropUntilKeyframe | FrameAction::Stale => {}
                }
            }
            2 => {
                now = now.saturating_add(u64::from(r.u16()) * 10);
                if let Some(shown) = p.poll_display(now) {
                    assert!(decoded.contains(&shown), "picture {shown} shown, never decoded");
                    displayed += 1;
                }
                let _ = p.poll_timeout();
            }
            _ => p.set_audio_delay(u64::from(r.u32())),
        }
        assert!(p.queued() <= config.queue_capacity);
        assert!(p.render_delay_us() <= config.max_own_delay_us + config.max_sync_wait_us);
        let s = p.stats();
        assert_eq!((s.keyframe_requests, s.displayed, s.received), (requests, displayed, frames), "{s:?}");
    }
});
