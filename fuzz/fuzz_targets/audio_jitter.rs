//! The audio jitter buffer (`media::audio_jitter`) fed datagrams with arbitrary sequence
//! numbers, capture times and arrival times, and polled for speaker slots; the op format is in
//! `kioskd_fuzz::audio_ops`.
//!
//! Properties: no panic (also on wrapping seqs, huge jumps, clocks stepping back); it holds
//! at most `capacity` frames; the target delay stays within its bounds; a frame played is one
//! that was received with that seq and capture time, and each received packet plays at most
//! once (also as the `before` frame of a time-compressed pair, which is the one just before);
//! `peek(seq)` gives a packet of that seq; the counters add up (every packet received is
//! played, dropped, counted late, duplicate or oversized, or still held, or lost to a reset).
#![no_main]

use std::collections::HashMap;

use kioskd::media::FRAME_US;
use kioskd::media::audio_jitter::{AudioJitterBuffer, JitterConfig, Playout};
use kioskd::media::packet::MAX_AUDIO_PAYLOAD;
use kioskd_fuzz::{Reader, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = JitterConfig::default();
    let mut jb = AudioJitterBuffer::new(config.clone());
    let mut r = Reader::new(data);
    let mut now = T0;
    let mut seq = 0u32;
    // Packet id → (seq, captured, played).
    let mut sent: HashMap<u64, (u32, u64, bool)> = HashMap::new();
    let mut next_id = 0u64;
    let payload_of = |id: u64, len: usize| {
        let mut p = id.to_be_bytes().to_vec();
        p.resize(8 + len, 0xA5);
        p
    };
    let id_of = |p: &[u8]| u64::from_be_bytes(p[..8].try_into().expect("an id"));
    while !r.is_empty() {
        let tag = r.u8();
        match tag % 4 {
            0 | 1 => {
                let mode = r.u8();
                seq = if mode & 0x80 != 0 { r.u32() } else { seq.wrapping_add(r.i8() as u32) };
                let captured = if mode & 0x40 != 0 {
                    r.u64()
                } else {
                    (T0 + u64::from(seq) * FRAME_US).wrapping_add_signed(i64::from(r.i16()) * 100)
                };
                now = now.saturating_add(u64::from(r.u16()) * 10);
                let len = usize::from(r.u8()) + if mode & 0x20 != 0 { MAX_AUDIO_PAYLOAD } else { 0 };
                let id = next_id;
                next_id += 1;
                sent.insert(id, (seq, captured, false));
                jb.handle_packet(seq, captured, payload_of(id, len), now);
            }
            2 => {
                now = now.saturating_add(u64::from(r.u8()) * 400);
                match jb.poll_playout(now) {
                    Playout::Frame { seq, captured_us, payload, before } => {
                        let id = id_of(&payload);
                        let s = sent.get_mut(&id).expect("a played frame was received");
                        assert_eq!((s.0, s.1), (seq, captured_us), "played under its own seq and time");
                        assert!(!s.2, "packet {id} played twice");
                        s.2 = true;
                        if let Some(before) = before {
                            let id = id_of(&before);
                            let s = sent.get_mut(&id).expect("a played frame was received");
                            assert_eq!(s.0, seq.wrapping_sub(1), "the frame before");
                            assert!(!s.2, "packet {id} played twice");
                            s.2 = true;
                        }
                    }
                    Playout::Conceal { .. } | Playout::Wait => {}
                }
            }
            _ => {
                let asked = seq.wrapping_add(r.i8() as u32);
                if let Some(p) = jb.peek(asked) {
                    assert_eq!(sent[&id_of(p)].0, asked, "peek gives the asked seq");
                }
                if tag & 4 != 0 {
                    now = now.saturating_sub(u64::from(r.u16()) * 10);
                }
            }
        }
        assert!(jb.len() <= config.capacity);
        let target = jb.target_delay_us();
        assert!((config.min_delay_us..=config.max_delay_us).contains(&target), "target {target}");
        let s = jb.stats();
        let accounted = s.played + s.accelerated + s.late + s.duplicates + s.dropped_overflow + s.oversized;
        assert!(accounted + jb.len() as u64 <= s.received, "{s:?} with {} held", jb.len());
    }
});
