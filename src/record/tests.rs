//! The recorder on a fake clock with real H.264 and Opus frames; the file it writes is read
//! back with a small EBML reader.

use super::*;
use crate::media::Picture;
use crate::media::codec::{AudioEncoder, AudioSettings, VideoEncoder, VideoSettings};
use crate::media::packet::MediaHeader;

const T0: UnixMicros = 1_700_000_000_000_000;

/// A party's sender: real encoders, capture clock `skew_us` away from the hub's.
struct Sender {
    video: VideoEncoder,
    audio: AudioEncoder,
    vseq: u32,
    aseq: u32,
    skew_us: i64,
}

impl Sender {
    fn new(width: u32, height: u32, skew_us: i64) -> Self {
        let settings = VideoSettings { width, height, ..VideoSettings::default() };
        Self {
            video: VideoEncoder::new(settings).expect("video encoder"),
            audio: AudioEncoder::new(AudioSettings::default()).expect("audio encoder"),
            vseq: 0,
            aseq: 0,
            skew_us,
        }
    }

    fn captured(&self, hub_us: UnixMicros) -> UnixMicros {
        (hub_us as i64 + self.skew_us) as u64
    }

    /// The next video frame as a packet (None when the encoder skipped it).
    fn video_packet(&mut self, hub_us: UnixMicros) -> Option<(Vec<u8>, bool)> {
        let (w, h) = (self.video.settings().width, self.video.settings().height);
        let mut pic = Picture::black(w, h, self.captured(hub_us));
        // Some movement, so that frames differ.
        let n = self.vseq as usize;
        for (i, px) in pic.data.iter_mut().take((w * h) as usize).enumerate() {
            *px = ((i + n * 7) % 251) as u8;
        }
        let frame = self.video.encode(&pic).expect("encode")?;
        let header = MediaHeader {
            kind: MediaKind::Video,
            keyframe: frame.keyframe,
            seq: self.vseq,
            captured_us: pic.captured_us,
        };
        self.vseq += 1;
        let mut out = Vec::new();
        header.encode(&frame.data, &mut out).expect("header");
        Some((out, frame.keyframe))
    }

    fn audio_packet(&mut self, hub_us: UnixMicros) -> Vec<u8> {
        let samples: Vec<i16> = (0..960).map(|i| ((i as f32 * 0.06).sin() * 8000.0) as i16).collect();
        let opus = self.audio.encode(&samples).expect("opus");
        let header = MediaHeader {
            kind: MediaKind::Audio,
            keyframe: false,
            seq: self.aseq,
            captured_us: self.captured(hub_us),
        };
        self.aseq += 1;
        let mut out = Vec::new();
        header.encode(&opus, &mut out).expect("header");
        out
    }
}

/// Runs `ms` of a call through a recorder: audio every 20 ms and video every 40 ms from both
/// parties; `drop_video` says which video frames (party, seq) the hub never got.
fn record(ms: u64, drop_video: impl Fn(Party, u32) -> bool) -> (Vec<u8>, Finished, Vec<Action>) {
    let mut rec =
        Recorder::new(RecorderConfig::default(), "call 7".into(), "kiosk-1", "agent-a", 1_700_000_000_000);
    let mut kiosk = Sender::new(320, 240, -1_234_567);
    let mut agent = Sender::new(640, 480, 987_654);
    let mut file = Vec::new();
    let mut actions = Vec::new();
    for t in (0..ms).step_by(20) {
        let now = T0 + t * 1000;
        for (party, s) in [(Party::Kiosk, &mut kiosk), (Party::Agent, &mut agent)] {
            rec.push(party, &s.audio_packet(now), now);
            if t % 40 == 0 {
                let seq = s.vseq;
                if let Some((packet, _)) = s.video_packet(now)
                    && !drop_video(party, seq)
                {
                    rec.push(party, &packet, now + 3000);
                }
            }
        }
        while let Some(a) = rec.poll_action() {
            actions.push(a);
            let s = if a == Action::RequestKeyframe(Party::Kiosk) { &mut kiosk } else { &mut agent };
            s.video.request_keyframe();
        }
        rec.tick(now);
        file.extend_from_slice(&rec.take_output());
    }
    let fin = rec.finish();
    file.extend_from_slice(&fin.tail);
    for (at, bytes) in &fin.patches {
        file[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
    }
    (file, fin, actions)
}

// ----- a small EBML reader -----

fn vint(data: &[u8], keep_marker: bool) -> (u64, usize) {
    let len = data[0].leading_zeros() as usize + 1;
    let mask = (0xFFu16 >> len) as u8;
    let mut v = u64::from(if keep_marker { data[0] } else { data[0] & mask });
    for b in &data[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    (v, len)
}

/// (id, body) of the elements in `data`; an unknown size runs to the end.
fn elements(data: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (id, il) = vint(&data[at..], true);
        let (size, sl) = vint(&data[at + il..], false);
        let start = at + il + sl;
        let end = if size == (1u64 << (7 * sl)) - 1 { data.len() } else { start + size as usize };
        out.push((id, &data[start..end]));
        at = end;
    }
    out
}

fn child(data: &[u8], id: u32) -> Option<&[u8]> {
    elements(data).into_iter().find(|(i, _)| *i == u64::from(id)).map(|(_, b)| b)
}

fn uint(data: &[u8]) -> u64 {
    data.iter().fold(0, |v, b| (v << 8) | u64::from(*b))
}

/// A block as read back: (track, absolute ms, keyframe, data).
type ReadBlock = (u8, u64, bool, Vec<u8>);

/// Every block, in file order, and the track types.
fn blocks(file: &[u8]) -> (Vec<ReadBlock>, Vec<u8>) {
    let top = elements(file);
    assert_eq!(top[0].0, u64::from(mkv::id::EBML));
    assert_eq!(top[1].0, u64::from(mkv::id::SEGMENT));
    let mut out = Vec::new();
    let mut tracks = Vec::new();
    for (id, body) in elements(top[1].1) {
        if id == u64::from(mkv::id::TRACKS) {
            for (_, entry) in elements(body) {
                tracks.push(uint(child(entry, mkv::id::TRACK_TYPE).expect("type")) as u8);
            }
        }
        if id == u64::from(mkv::id::CLUSTER) {
            let base = uint(child(body, mkv::id::TIMESTAMP).expect("cluster timestamp"));
            for (bid, b) in elements(body) {
                if bid == u64::from(mkv::id::SIMPLE_BLOCK) {
                    let (track, tl) = vint(b, false);
                    let rel = i16::from_be_bytes([b[tl], b[tl + 1]]);
                    assert!(rel >= 0);
                    out.push((track as u8, base + rel as u64, b[tl + 2] & 0x80 != 0, b[tl + 3..].to_vec()));
                }
            }
        }
    }
    (out, tracks)
}

#[test]
fn a_call_is_recorded_as_four_tracks_on_one_timeline() {
    let (file, fin, actions) = record(5000, |_, _| false);
    let (blocks, track_types) = blocks(&file);
    assert_eq!(track_types, [1, 2, 1, 2], "kiosk camera, kiosk mic, agent camera, agent mic");
    let names: Vec<&str> = fin.tracks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kiosk camera (kiosk-1)",
            "kiosk microphone (kiosk-1)",
            "agent camera (agent-a)",
            "agent microphone (agent-a)"
        ]
    );
    assert_eq!((fin.tracks[0].width, fin.tracks[0].height), (Some(320), Some(240)));
    assert_eq!((fin.tracks[2].width, fin.tracks[2].height), (Some(640), Some(480)));
    assert!(actions.is_empty(), "no keyframe needed: {actions:?}");
    for track in 1..=4u8 {
        let times: Vec<u64> = blocks.iter().filter(|b| b.0 == track).map(|b| b.1).collect();
        assert_eq!(times.len() as u64, fin.tracks[usize::from(track) - 1].frames, "track {track}");
        // 125 frames at 25 fps (a few skipped by the encoder's rate control); 250 audio frames.
        let expected = if track % 2 == 1 { 110..=125 } else { 250..=250 };
        assert!(expected.contains(&times.len()), "track {track}: {} frames", times.len());
        assert!(times.windows(2).all(|w| w[0] < w[1]), "track {track} strictly in order");
        // Both parties' clocks are skewed by more than a second: the timeline is the hub's.
        assert!(times[0] <= 3, "track {track} starts at {}", times[0]);
        assert!((4960..=4985).contains(times.last().expect("frames")), "track {track} ends at {times:?}");
    }
    let first_video = blocks.iter().find(|b| b.0 == 1).expect("video");
    assert!(first_video.2, "a video track starts at a keyframe");
    // Video blocks are length-prefixed NAL units, not Annex B.
    assert_ne!(&first_video.3[..4], [0, 0, 0, 1]);
    assert!((4980..=5010).contains(&fin.duration_ms), "{}", fin.duration_ms);
    assert_eq!(fin.skipped, Skipped::default());
}

#[test]
fn a_lost_video_frame_skips_to_the_next_keyframe_and_asks_for_it() {
    let (file, fin, actions) = record(4000, |party, seq| party == Party::Kiosk && seq == 30);
    assert_eq!(actions.first(), Some(&Action::RequestKeyframe(Party::Kiosk)));
    assert!(actions.iter().all(|a| *a == Action::RequestKeyframe(Party::Kiosk)));
    let (blocks, _) = blocks(&file);
    let kiosk_video: Vec<&ReadBlock> = blocks.iter().filter(|b| b.0 == 1).collect();
    // Frame 30 is at 1200 ms: the frames after it wait for the requested keyframe.
    let after: Vec<_> = kiosk_video.iter().filter(|b| b.1 > 1200).collect();
    assert!(after.first().is_some_and(|b| b.2), "resumes at a keyframe");
    assert!(fin.skipped.video_until_keyframe >= 1);
    assert!(kiosk_video.len() >= 90, "{}", kiosk_video.len());
}

#[test]
fn frames_that_overtake_each_other_are_put_back_in_order() {
    let mut rec = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
    let mut kiosk = Sender::new(320, 240, 0);
    let frames: Vec<Vec<u8>> =
        (0..6).map(|i| kiosk.video_packet(T0 + i * 40_000).expect("frame").0).collect();
    for (n, i) in [0usize, 1, 3, 2, 5, 4].into_iter().enumerate() {
        rec.push(Party::Kiosk, &frames[i], T0 + n as u64 * 40_000);
    }
    assert_eq!(rec.poll_action(), None, "no keyframe needed");
    let fin = rec.finish();
    assert_eq!(fin.tracks[0].frames, 6);
    assert_eq!(fin.skipped, Skipped::default());
}

#[test]
fn a_missing_frame_is_given_up_after_the_reorder_wait() {
    let mut rec = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
    let mut kiosk = Sender::new(320, 240, 0);
    let frames: Vec<Vec<u8>> =
        (0..4).map(|i| kiosk.video_packet(T0 + i * 40_000).expect("frame").0).collect();
    rec.push(Party::Kiosk, &frames[0], T0);
    rec.push(Party::Kiosk, &frames[2], T0 + 80_000);
    rec.tick(T0 + 200_000);
    assert_eq!(rec.poll_action(), None, "still waiting for frame 1");
    rec.tick(T0 + 240_000);
    assert_eq!(rec.poll_action(), Some(Action::RequestKeyframe(Party::Kiosk)));
    rec.push(Party::Kiosk, &frames[1], T0 + 250_000); // too late
    rec.push(Party::Kiosk, &frames[3], T0 + 260_000);
    let fin = rec.finish();
    assert_eq!(fin.tracks[0].frames, 1, "only the keyframe: the rest waits for the next one");
    assert_eq!(fin.skipped.video_stale, 1);
    assert_eq!(fin.skipped.video_until_keyframe, 2);
}

#[test]
fn a_camera_that_sends_nothing_is_left_out_after_the_header_wait() {
    let (file, fin, _) = record(4000, |party, _| party == Party::Agent);
    let (_, track_types) = blocks(&file);
    assert_eq!(track_types, [1, 2, 2], "kiosk camera and both microphones");
    assert_eq!(fin.tracks.iter().filter(|t| t.kind == "audio").count(), 2);
    assert!(fin.tracks.iter().all(|t| t.frames > 0));
}

#[test]
fn a_recording_cut_off_keeps_whole_clusters() {
    let mut rec = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
    let mut kiosk = Sender::new(320, 240, 0);
    let mut file = Vec::new();
    for t in (0..4500u64).step_by(20) {
        let now = T0 + t * 1000;
        rec.push(Party::Kiosk, &kiosk.audio_packet(now), now);
        file.extend_from_slice(&rec.take_output());
    }
    // No finish (a crash): what was written parses, with its Segment of unknown size.
    let (blocks, tracks) = blocks(&file);
    assert_eq!(tracks, [2, 2], "no camera sent a keyframe: microphones only");
    // The header after 3 s, Clusters of a second: all but the open one are in the file.
    assert!((150..=225).contains(&blocks.len()), "about 3.5 s of 20 ms frames: {}", blocks.len());
}

#[test]
fn garbage_and_stale_frames_are_counted_not_recorded() {
    let mut rec = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
    rec.push(Party::Kiosk, &[1, 2, 3], T0);
    rec.push(Party::Kiosk, &[0xFF; 40], T0);
    let mut kiosk = Sender::new(320, 240, 0);
    let (first, key) = kiosk.video_packet(T0).expect("frame");
    assert!(key);
    rec.push(Party::Kiosk, &first, T0);
    rec.push(Party::Kiosk, &first, T0 + 1000); // the same sequence number again
    let fin = rec.finish();
    assert_eq!(fin.skipped.invalid, 2);
    assert_eq!(fin.skipped.video_stale, 1);
}

#[test]
fn only_old_recording_files_expire() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
    let day = Duration::from_secs(86_400);
    let files = vec![
        ("call-1.mkv".to_string(), now - 40 * day),
        ("call-1.json".to_string(), now - 40 * day),
        ("call-2.mkv".to_string(), now - 10 * day),
        ("call-3-2.mkv".to_string(), now - 31 * day),
        ("notes.txt".to_string(), now - 90 * day),
        ("call-.mkv".to_string(), now - 90 * day),
        ("call-4.mkv.part".to_string(), now - 90 * day),
    ];
    assert_eq!(expired(&files, now, 30 * day), ["call-1.mkv", "call-1.json", "call-3-2.mkv"]);
}

proptest::proptest! {
    #[test]
    fn arbitrary_packets_never_panic(
        packets in proptest::collection::vec(
            (proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0u64..10_000_000),
            0..60,
        )
    ) {
        let mut rec = Recorder::new(RecorderConfig::default(), "t".into(), "k", "a", 0);
        for (agent, mut data, at) in packets {
            // Half of them with a valid header around arbitrary payloads.
            if data.len() > 20 && data[0] % 2 == 0 {
                let head = [1, 1 + data[1] % 2, data[2] % 2, 0];
                data[..4].copy_from_slice(&head);
            }
            let party = if agent { Party::Agent } else { Party::Kiosk };
            rec.push(party, &data, T0 + at);
            rec.tick(T0 + at);
            let _ = rec.take_output();
        }
        let _ = rec.finish();
    }
}

#[test]
fn audio_times_come_from_sequence_numbers_and_follow_a_drifting_clock() {
    let mut a = AudioTrack::default();
    // Capture times jitter by a few ms: the track's times do not.
    assert_eq!(a.place(10, 1000), Some(1000));
    assert_eq!(a.place(11, 1023), Some(1020));
    assert_eq!(a.place(13, 1058), Some(1060), "a lost frame leaves its 20 ms");
    assert_eq!(a.place(12, 1041), None, "a frame behind one recorded is dropped");
    assert_eq!(a.place(13, 1058), None, "and so is a repeat");
    // The microphone runs slow: once 60 ms apart, the capture time wins.
    assert_eq!(a.place(20, 1300), Some(1300));
    assert_eq!(a.place(21, 1320), Some(1320));
}
