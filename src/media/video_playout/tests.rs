//! Tests of [`VideoPlayout`] on fake times: 30 fps frames captured at `T0 + 33.333 ms × i`.

use proptest::prelude::*;

use super::*;

const T0: UnixMicros = 1_700_000_000_000_000;
const MS: u64 = 1_000;
/// One frame at 30 fps (µs).
const FRAME: u64 = 33_333;

fn captured(i: u64) -> UnixMicros {
    T0 + i * FRAME
}

/// Feeds frames `seqs` (keyframe when `key(seq)`), each arriving `transit` after capture;
/// returns the actions.
fn feed(
    vp: &mut VideoPlayout,
    seqs: impl IntoIterator<Item = u32>,
    key: impl Fn(u32) -> bool,
) -> Vec<FrameAction> {
    seqs.into_iter()
        .map(|s| {
            let c = captured(u64::from(s));
            vp.handle_frame(s, key(s), c, c + 40 * MS)
        })
        .collect()
}

#[test]
fn in_order_frames_decode() {
    let mut vp = VideoPlayout::new();
    let actions = feed(&mut vp, 0..100, |s| s % 30 == 0);
    assert!(actions.iter().all(|a| *a == FrameAction::Decode), "{actions:?}");
    assert_eq!((vp.stats().keyframe_requests, vp.stats().dropped_gap), (0, 0));
}

#[test]
fn stream_joined_mid_group_waits_for_a_keyframe() {
    let mut vp = VideoPlayout::new();
    let actions = feed(&mut vp, 5..12, |s| s == 10);
    use FrameAction::*;
    assert_eq!(
        actions,
        [
            RequestKeyframe,
            DropUntilKeyframe,
            DropUntilKeyframe,
            DropUntilKeyframe,
            DropUntilKeyframe,
            Decode,
            Decode
        ]
    );
}

#[test]
fn gap_drops_until_keyframe_and_requests_once() {
    use FrameAction::*;
    let mut vp = VideoPlayout::new();
    assert_eq!(feed(&mut vp, 0..5, |s| s == 0), [Decode; 5]);
    // Frame 5 abandoned by the sender.
    assert_eq!(feed(&mut vp, 6..9, |_| false), [RequestKeyframe, DropUntilKeyframe, DropUntilKeyframe]);
    // The late frame 5 cannot repair the picture either: its successors are gone.
    assert_eq!(feed(&mut vp, [5], |_| false), [DropUntilKeyframe]);
    assert_eq!(feed(&mut vp, 9..12, |s| s == 9), [Decode; 3]);
    let stats = vp.stats();
    assert_eq!((stats.keyframe_requests, stats.dropped_gap), (1, 4));
}

#[test]
fn keyframe_requests_are_rate_limited() {
    use FrameAction::*;
    let mut vp = VideoPlayout::new();
    let at = |i: u64| captured(i) + 40 * MS;
    assert_eq!(vp.handle_frame(0, true, captured(0), at(0)), Decode);
    assert_eq!(vp.handle_frame(2, false, captured(2), at(2)), RequestKeyframe);
    assert_eq!(vp.handle_frame(3, true, captured(3), at(3)), Decode);
    // A second gap 100 ms after the first request: no request yet.
    assert_eq!(vp.handle_frame(5, false, captured(5), at(5)), DropUntilKeyframe);
    assert_eq!(vp.handle_frame(6, false, captured(6), at(6)), DropUntilKeyframe);
    // The first frame dropped 300 ms after the first request asks.
    let t_ok = at(2) + 300 * MS;
    assert_eq!(vp.handle_frame(7, false, captured(7), t_ok - 1), DropUntilKeyframe);
    assert_eq!(vp.handle_frame(8, false, captured(8), t_ok), RequestKeyframe);
    assert_eq!(vp.handle_frame(9, false, captured(9), t_ok + 10 * MS), DropUntilKeyframe);
    assert_eq!(vp.stats().keyframe_requests, 2);
}

#[test]
fn request_repeated_while_no_keyframe_comes() {
    let mut vp = VideoPlayout::new();
    let _ = vp.handle_frame(0, true, captured(0), captured(0));
    let actions: Vec<FrameAction> =
        (2..80u64).map(|i| vp.handle_frame(i as u32, false, captured(i), captured(i) + 40 * MS)).collect();
    let requests: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| **a == FrameAction::RequestKeyframe)
        .map(|(i, _)| i)
        .collect();
    // 78 frames = 2.6 s: the first request, then one per second (31 frames at 30 fps).
    assert_eq!(requests, [0, 31, 62]);
}

#[test]
fn stale_frames_are_refused() {
    use FrameAction::*;
    let mut vp = VideoPlayout::new();
    assert_eq!(feed(&mut vp, 0..3, |s| s == 0), [Decode; 3]);
    assert_eq!(feed(&mut vp, [2, 1, 0], |s| s == 0), [Stale; 3]);
    assert_eq!(vp.stats().stale, 3);
    assert_eq!(feed(&mut vp, [3], |_| false), [Decode]);
}

#[test]
fn decode_error_requests_a_keyframe_and_drops_until_it() {
    use FrameAction::*;
    let mut vp = VideoPlayout::new();
    assert_eq!(feed(&mut vp, 0..3, |s| s == 0), [Decode; 3]);
    assert!(vp.handle_decode_error(captured(2) + 45 * MS));
    assert_eq!(feed(&mut vp, 3..5, |_| false), [DropUntilKeyframe; 2]);
    // Another error right after (rate-limited): no second request.
    assert!(!vp.handle_decode_error(captured(4) + 45 * MS));
    assert_eq!(feed(&mut vp, 5..7, |s| s == 5), [Decode; 2]);
    assert_eq!((vp.stats().keyframe_requests, vp.stats().decode_errors), (1, 2));
}

#[test]
fn seq_wraps_at_u32_max() {
    let mut vp = VideoPlayout::new();
    let first = u32::MAX - 10;
    let seqs: Vec<u32> = (0..30u32).map(|i| first.wrapping_add(i)).collect();
    let actions: Vec<FrameAction> = seqs
        .iter()
        .enumerate()
        .map(|(i, &s)| vp.handle_frame(s, i == 0, captured(i as u64), captured(i as u64) + 40 * MS))
        .collect();
    assert!(actions.iter().all(|a| *a == FrameAction::Decode), "{actions:?}");
    assert_eq!(vp.handle_frame(u32::MAX, false, captured(10), captured(40)), FrameAction::Stale);
    assert_eq!(vp.stats().resets, 0);
}

#[test]
fn sender_restart_starts_over() {
    use FrameAction::*;
    let mut vp = VideoPlayout::new();
    assert_eq!(feed(&mut vp, 5000..5010, |s| s == 5000), [Decode; 10]);
    // The sender restarts at seq 0 with a keyframe, captured later.
    let c = captured(6000);
    assert_eq!(vp.handle_frame(0, true, c, c + 40 * MS), Decode);
    assert_eq!(vp.handle_frame(1, false, c + FRAME, c + FRAME + 40 * MS), Decode);
    // Close seq, but capture time gone back 100 s: a restart too.
    assert_eq!(vp.handle_frame(2, true, T0, c + 2 * FRAME), Decode);
    assert_eq!(vp.stats().resets, 2);
}

/// Frames 0.. each decoded on arrival at `captured + transit(i)`.
fn decode_all(vp: &mut VideoPlayout, count: u64, transit: impl Fn(u64) -> u64) {
    for i in 0..count {
        let (c, at) = (captured(i), captured(i) + transit(i));
        assert_eq!(vp.handle_frame(i as u32, i == 0, c, at), FrameAction::Decode);
        vp.handle_decoded(i as u32, c, at);
    }
}

#[test]
fn picture_shown_at_its_render_time() {
    let mut vp = VideoPlayout::new();
    decode_all(&mut vp, 1, |_| 40 * MS);
    // Steady 40 ms transit: own delay 0 above the baseline, shown on arrival.
    assert_eq!(vp.poll_timeout(), Some(captured(0) + 40 * MS));
    assert_eq!(vp.poll_display(captured(0) + 40 * MS - 1), None);
    assert_eq!(vp.poll_display(captured(0) + 40 * MS), Some(0));
    assert_eq!(vp.poll_display(captured(0) + 50 * MS), None, "shown once");
    assert_eq!(vp.poll_timeout(), None);
}

#[test]
fn late_picture_never_holds_back_a_newer_one() {
    let mut vp = VideoPlayout::new();
    decode_all(&mut vp, 3, |_| 40 * MS);
    // Nobody polled for a while: all three are due, the newest wins.
    assert_eq!(vp.poll_display(captured(2) + 100 * MS), Some(2));
    assert_eq!(vp.stats().skipped_late, 2);
    assert_eq!(vp.stats().displayed, 1);
    // A picture older than the one shown is not queued.
    vp.handle_decoded(1, captured(1), captured(2) + 110 * MS);
    assert_eq!(vp.queued(), 0);
}

#[test]
fn own_delay_follows_the_jitter() {
    let mut vp = VideoPlayout::new();
    // Transit 20 ms, and every 4th frame 80 ms: 25 % of frames 60 ms above the baseline.
    decode_all(&mut vp, 300, |i| if i % 4 == 3 { 80 * MS } else { 20 * MS });
    assert_eq!(vp.render_delay_us(), 60 * MS);
    assert_eq!(vp.stats().render_delay_ms, 60.0);
    let mut vp = VideoPlayout::new();
    // 2 % of frames late: below the 95th percentile, ignored (they will be skipped).
    decode_all(&mut vp, 300, |i| if i % 50 == 7 { 80 * MS } else { 20 * MS });
    assert_eq!(vp.render_delay_us(), 0);
}

#[test]
fn video_waits_for_audio_for_lip_sync() {
    let mut vp = VideoPlayout::new();
    vp.set_audio_delay(120 * MS);
    decode_all(&mut vp, 1, |_| 40 * MS);
    assert_eq!(vp.render_delay_us(), 120 * MS);
    // Render at capture + baseline transit 40 ms + 120 ms.
    assert_eq!(vp.poll_display(captured(0) + 159 * MS), None);
    assert_eq!(vp.poll_display(captured(0) + 160 * MS), Some(0));
    // Audio faster than the video's own need: video's own delay wins.
    let mut vp = VideoPlayout::new();
    decode_all(&mut vp, 100, |i| if i % 2 == 0 { 90 * MS } else { 20 * MS });
    vp.set_audio_delay(30 * MS);
    assert_eq!(vp.render_delay_us(), 70 * MS);
    // An absurd audio delay is capped at own + max_sync_wait.
    vp.set_audio_delay(10_000 * MS);
    assert_eq!(vp.render_delay_us(), 370 * MS);
}

#[test]
fn sender_clock_offset_does_not_matter() {
    // The sender's clock is 5 s ahead: transits are negative.
    let mut vp = VideoPlayout::new();
    let ahead = 5_000 * MS;
    vp.set_audio_delay(50 * MS);
    let c = captured(0) + ahead;
    assert_eq!(vp.handle_frame(0, true, c, captured(0) + 30 * MS), FrameAction::Decode);
    vp.handle_decoded(0, c, captured(0) + 30 * MS);
    assert_eq!(vp.poll_timeout(), Some(captured(0) + 80 * MS));
    assert_eq!(vp.poll_display(captured(0) + 80 * MS), Some(0));
}

#[test]
fn display_queue_is_bounded() {
    let mut vp = VideoPlayout::new();
    vp.set_audio_delay(300 * MS); // everything waits
    let cap = VideoPlayoutConfig::default().queue_capacity as u64;
    decode_all(&mut vp, cap + 12, |_| 40 * MS);
    assert_eq!(vp.queued(), cap as usize);
    assert_eq!(vp.stats().dropped_overflow, 12);
    assert_eq!(vp.poll_display(captured(12) + 340 * MS), Some(12));
}

#[test]
fn own_delay_is_capped_after_an_outage() {
    // Frames that arrive seconds late (held back by an outage) must not make every later
    // picture wait seconds: the estimate stops at max_own_delay_us.
    let mut vp = VideoPlayout::new();
    decode_all(&mut vp, 200, |i| if (100..160).contains(&i) { 2_000 * MS } else { 30 * MS });
    assert!(
        vp.render_delay_us() <= VideoPlayoutConfig::default().max_own_delay_us,
        "{}",
        vp.render_delay_us()
    );
}

#[derive(Debug, Clone)]
enum Op {
    Frame(u32, bool, u64, u16),
    Decoded(u32, u64),
    Error,
    Audio(u64),
    Display(u16),
}

/// Capture times a broken or hostile sender might send.
fn extreme_time() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), Just(i64::MAX as u64), Just(T0), any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..40, any::<bool>(), 0u64..40, any::<u16>()).prop_map(|(s, k, c, d)| Op::Frame(s, k, c, d)),
        (any::<u32>(), any::<bool>(), extreme_time(), any::<u16>())
            .prop_map(|(s, k, c, d)| Op::Frame(s, k, c, d)),
        (any::<u32>(), extreme_time()).prop_map(|(s, c)| Op::Decoded(s, c)),
        Just(Op::Error),
        prop_oneof![Just(0), Just(u64::MAX), any::<u64>()].prop_map(Op::Audio),
        any::<u16>().prop_map(Op::Display),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any frames at any times: no panic, the queue stays bounded, displayed seqs were decoded.
    #[test]
    fn never_panics_and_stays_bounded(ops in proptest::collection::vec(op(), 0..300)) {
        let mut vp = VideoPlayout::new();
        let mut now = T0;
        let mut decoded = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Frame(seq, key, c, dt) => {
                    now += u64::from(dt);
                    let c = if c < 40 { captured(c) } else { c };
                    if vp.handle_frame(seq, key, c, now) == FrameAction::Decode {
                        vp.handle_decoded(seq, c, now);
                        decoded.insert(seq);
                    }
                }
                Op::Decoded(seq, c) => {
                    vp.handle_decoded(seq, c, now);
                    decoded.insert(seq);
                }
                Op::Error => { let _ = vp.handle_decode_error(now); }
                Op::Audio(d) => vp.set_audio_delay(d),
                Op::Display(dt) => {
                    now += u64::from(dt) * 10;
                    let _ = vp.poll_timeout();
                    if let Some(seq) = vp.poll_display(now) {
                        prop_assert!(decoded.contains(&seq));
                    }
                }
            }
            prop_assert!(vp.queued() <= 8);
        }
    }
}
