//! The hub's call recorder (`record::Recorder`): the media packets of both parties as they
//! reached the hub (raw bytes, or a media header around an arbitrary payload: H.264 access
//! units, Opus packets), ticks and output taken at arbitrary times, then `finish`. Op format
//! in `kioskd_fuzz::recorder_ops`.
//!
//! Properties: no panic; what was written before `finish` is a valid file cut off after its
//! last whole Cluster; the finished file (with the patches) is valid Matroska as
//! `kioskd_fuzz::ebml::read` checks it (sizes, declared tracks, times strictly increasing per
//! track, video starting at a keyframe, length-prefixed NAL units, a valid avcC), and it
//! agrees with the recorder's summary (tracks, their sizes, frame counts, duration).
#![no_main]

use kioskd::media::packet::{MediaHeader, MediaKind};
use kioskd::record::{Party, Recorder, RecorderConfig};
use kioskd_fuzz::recorder_ops::*;
use kioskd_fuzz::{Reader, T0, ebml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rec = Recorder::new(RecorderConfig::default(), "call 1".into(), "kiosk-1", "agent-1", T0 / 1000);
    let mut r = Reader::new(data);
    let mut now = T0;
    let mut seqs = [[0u32; 2]; 2];
    let mut file = Vec::new();
    let mut packet = Vec::new();
    while !r.is_empty() {
        match r.u8() % 4 {
            RAW => {
                let party = if r.u8() & 1 != 0 { Party::Agent } else { Party::Kiosk };
                now = now.saturating_add(u64::from(r.u16()) * 10);
                let len = usize::from(r.u16());
                rec.push(party, r.bytes(len), now);
            }
            PACKET => {
                let flags = r.u8();
                let party = if flags & AGENT != 0 { Party::Agent } else { Party::Kiosk };
                let video = flags & VIDEO != 0;
                let seq = &mut seqs[usize::from(flags & AGENT)][usize::from(video)];
                *seq = if flags & RAW_SEQ != 0 { r.u32() } else { seq.wrapping_add(r.i8() as u32) };
                let skew = i64::from(r.i16()) * 1000;
                let captured = if flags & RAW_CAPTURED != 0 { r.u64() } else { now.wrapping_add_signed(skew) };
                now = now.saturating_add(u64::from(r.u16()) * 10);
                let len = usize::from(r.u16());
                let payload = r.bytes(len);
                let header = MediaHeader {
                    kind: if video { MediaKind::Video } else { MediaKind::Audio },
                    keyframe: video && flags & KEYFRAME != 0,
                    seq: *seq,
                    captured_us: captured,
                };
                packet.clear();
                if header.encode(payload, &mut packet).is_ok() {
                    rec.push(party, &packet, now);
                }
            }
            TICK => {
                now = now.saturating_add(u64::from(r.u16()) * 100);
                rec.tick(now);
            }
            _ => file.extend_from_slice(&rec.take_output()),
        }
        while rec.poll_action().is_some() {}
    }
    file.extend_from_slice(&rec.take_output());
    if let Err(e) = ebml::read(&file, false) {
        panic!("the file before finish: {e}");
    }

    let fin = rec.finish();
    file.extend_from_slice(&fin.tail);
    for (at, bytes) in &fin.patches {
        let at = usize::try_from(*at).expect("offset");
        assert!(at + bytes.len() <= file.len(), "a patch past the end of the file");
        file[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let read = match ebml::read(&file, true) {
        Ok(read) => read,
        Err(e) => panic!("the finished file: {e}"),
    };
    assert_eq!(read.tracks.len(), fin.tracks.len(), "tracks in the file and in the summary");
    for (t, s) in read.tracks.iter().zip(&fin.tracks) {
        assert_eq!(t.number, s.number);
        assert_eq!(t.kind, if s.kind == "video" { 1 } else { 2 });
        assert_eq!(t.size, s.width.zip(s.height));
        let blocks = read.blocks.iter().filter(|b| b.track == t.number).count() as u64;
        assert_eq!(blocks, s.frames, "track {}: frames in the file and in the summary", t.number);
    }
    assert_eq!(read.duration_ms, Some(fin.duration_ms as f64));
});
