//! The reorder stage of received video (`media::video_reorder`): each frame travels on its
//! own QUIC stream, so frames complete out of order; this puts them back in sequence. Fed
//! arbitrary seqs, keyframe flags and arrival times (op format in `kioskd_fuzz::reorder_ops`).
//!
//! Properties: no panic; only frames pushed come out, each at most once; within one call's
//! output the seqs increase (wrapping); the learnt wait stays within its bounds; after a poll
//! at the end of time nothing is held, and every frame pushed came out unless a keyframe made
//! it useless or its seq was pushed before (a repeat).
#![no_main]

use std::collections::HashSet;

use kioskd::media::video_reorder::{ReorderConfig, VideoReorder};
use kioskd_fuzz::{Reader, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = ReorderConfig::default();
    let mut reorder: VideoReorder<(u64, u32)> = VideoReorder::new(config);
    let mut r = Reader::new(data);
    let mut now = T0;
    let mut seq = 0u32;
    let mut pushed = 0u64;
    let mut repeats = 0u64;
    let mut seqs_pushed = HashSet::new();
    let mut out_ids = HashSet::new();
    let mut check = |out: Vec<(u64, u32)>, pushed: u64| {
        for w in out.windows(2) {
            let step = w[1].1.wrapping_sub(w[0].1) as i32;
            assert!(step > 0, "out of order within one release: {out:?}");
        }
        for (id, _) in out {
            assert!(id < pushed, "a frame that was never pushed");
            assert!(out_ids.insert(id), "frame {id} released twice");
        }
    };
    while !r.is_empty() {
        let tag = r.u8();
        if tag & 3 == 3 {
            now = now.saturating_add(u64::from(r.u16()) * 100);
            check(reorder.poll(now), pushed);
        } else {
            seq = if tag & 0x80 != 0 { r.u32() } else { seq.wrapping_add(r.i8() as u32) };
            now = now.saturating_add(u64::from(r.u16()) * 10);
            if !seqs_pushed.insert(seq) {
                repeats += 1;
            }
            let id = pushed;
            pushed += 1;
            let out = reorder.push(seq, tag & 0x40 != 0, (id, seq), now);
            check(out, pushed);
        }
        let wait = reorder.wait_us();
        assert!((config.max_wait_us..=config.wait_cap_us.max(config.max_wait_us)).contains(&wait), "wait {wait}");
        if let Some(t) = reorder.poll_timeout() {
            assert!(t >= T0, "a timeout before anything arrived");
        }
    }
    check(reorder.poll(u64::MAX), pushed);
    assert_eq!(reorder.poll_timeout(), None, "everything released at the end");
    let stats = reorder.stats();
    assert!(stats.held <= pushed);
    let lost = pushed - out_ids.len() as u64;
    assert!(lost <= stats.skipped_for_keyframe + repeats, "{lost} frames lost: {stats:?}, {repeats} repeats");
});
