//! Tests of [`AudioJitterBuffer`] on fake times: a sender stamps packets at `T0 + 20 ms × i` (on
//! its own clock, possibly offset), the network delays each one, the speaker asks for a frame
//! every 20 ms.

use proptest::prelude::*;

use super::*;

const T0: UnixMicros = 1_700_000_000_000_000;
const MS: u64 = 1_000;

/// A packet as the network delivers it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u32,
    captured_us: UnixMicros,
    at: UnixMicros,
}

/// `count` packets from seq `first_seq`, captured every 20 ms from `T0 + clock_offset` (the
/// sender's clock), arriving `delay(i)` after their real capture time; `None` is a loss.
fn stream(
    first_seq: u32,
    count: usize,
    clock_offset: u64,
    delay: impl Fn(usize) -> Option<u64>,
) -> Vec<Arrival> {
    let mut out: Vec<Arrival> = (0..count)
        .filter_map(|i| {
            let real = T0 + i as u64 * FRAME_US;
            delay(i).map(|d| Arrival {
                seq: first_seq.wrapping_add(i as u32),
                captured_us: real + clock_offset,
                at: real + d,
            })
        })
        .collect();
    out.sort_by_key(|a| a.at); // stable: equal times keep send order
    out
}

fn payload(seq: u32) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// What the speaker got.
#[derive(Debug, Default)]
struct Run {
    /// (slot time, output) for every slot.
    slots: Vec<(UnixMicros, Playout)>,
    /// For each `Conceal { seq }`: whether `peek(seq + 1)` had the next packet (for FEC).
    fec: Vec<(u32, bool)>,
}

impl Run {
    fn frames(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|(_, p)| match p {
                Playout::Frame { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn concealed(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|(_, p)| match p {
                Playout::Conceal { seq } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// `slot time − real capture time` of each played frame, for a sender `clock_offset` ahead.
    fn delays_ms(&self, clock_offset: u64) -> Vec<f64> {
        self.slots
            .iter()
            .filter_map(|(at, p)| match p {
                Playout::Frame { captured_us, .. } => {
                    Some((*at as f64 - (*captured_us - clock_offset) as f64) / 1000.0)
                }
                _ => None,
            })
            .collect()
    }
}

/// Feeds `arrivals` and polls one slot every 20 ms from `first_slot` to `end`, or until every
/// packet was delivered and the buffer is empty (the stream is over). At equal times packets go
/// first, unless `slots_first`.
fn run_with(
    jb: &mut AudioJitterBuffer,
    arrivals: &[Arrival],
    first_slot: UnixMicros,
    end: UnixMicros,
    slots_first: bool,
) -> Run {
    let mut run = Run::default();
    let mut next = arrivals.iter().peekable();
    let mut slot = first_slot;
    while slot <= end {
        while let Some(a) = next.next_if(|a| a.at < slot || (a.at == slot && !slots_first)) {
            jb.handle_packet(a.seq, a.captured_us, payload(a.seq), a.at);
        }
        if next.peek().is_none() && jb.is_empty() {
            break;
        }
        let out = jb.poll_playout(slot);
        match &out {
            Playout::Frame { seq, payload: p, .. } => assert_eq!(p, &payload(*seq), "payload of {seq}"),
            Playout::Conceal { seq } => run.fec.push((*seq, jb.peek(seq.wrapping_add(1)).is_some())),
            Playout::Wait => {}
        }
        run.slots.push((slot, out));
        slot += FRAME_US;
    }
    run
}

fn run(jb: &mut AudioJitterBuffer, arrivals: &[Arrival], first_slot: UnixMicros, end: UnixMicros) -> Run {
    run_with(jb, arrivals, first_slot, end, false)
}

fn seqs(first: u32, count: usize) -> Vec<u32> {
    (0..count).map(|i| first.wrapping_add(i as u32)).collect()
}

/// A small deterministic generator (xorshift64*), so jitter tests replay exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn waits_until_the_first_packet_plus_target() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    assert_eq!(jb.poll_playout(T0), Playout::Wait);
    jb.handle_packet(0, T0, payload(0), T0 + 30 * MS);
    assert_eq!(jb.poll_playout(T0 + 40 * MS), Playout::Wait, "before arrival + 20 ms");
    assert_eq!(
        jb.poll_playout(T0 + 50 * MS),
        Playout::Frame { seq: 0, captured_us: T0, payload: payload(0), before: None }
    );
    assert_eq!(jb.stats().delay_us, Some(50 * MS));
    assert_eq!(jb.playout_delay_us(), 20 * MS, "relative to the fastest path (30 ms)");
}

#[test]
fn steady_arrival_plays_everything_with_delay_near_min() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let arrivals = stream(0, 500, 0, |_| Some(30 * MS));
    let run = run(&mut jb, &arrivals, T0 + 7 * MS, T0 + 10_200 * MS);
    assert_eq!(run.frames(), seqs(0, 500));
    assert!(run.concealed().is_empty());
    let stats = jb.stats();
    assert_eq!((stats.played, stats.concealed, stats.late, stats.accelerated), (500, 0, 0, 0));
    assert_eq!(stats.target_ms, 20.0);
    for d in run.delays_ms(0) {
        // 30 ms network + 20 ms target + up to one slot of phase.
        assert!((50.0..=70.0).contains(&d), "delay {d} ms");
    }
}

#[test]
fn jittery_arrival_raises_target_and_settles_without_concealment() {
    let mut rng = Rng(0x5eed_cafe);
    let delays: Vec<u64> = (0..3000).map(|_| rng.below(60_001)).collect();
    // The sender's clock runs 5 s ahead: transits are negative, only differences matter.
    let offset = 5_000 * MS;
    let arrivals = stream(0, 3000, offset, |i| Some(10 * MS + delays[i]));
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 3 * MS, T0 + 60_500 * MS);

    let frames = run.frames();
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    let settled: Vec<&Playout> = run
        .slots
        .iter()
        .filter(|(at, p)| *at >= T0 + 10_000 * MS && *p != Playout::Wait)
        .map(|(_, p)| p)
        .collect();
    let played = settled.iter().filter(|p| matches!(p, Playout::Frame { .. })).count();
    assert!(played as f64 >= 0.99 * settled.len() as f64, "{played} of {}", settled.len());

    let stats = jb.stats();
    assert!((45.0..=61.0).contains(&stats.target_ms), "target {} ms", stats.target_ms);
    assert_eq!(stats.delay_us, Some(0), "sender's clock ahead: no shared-clock delay");
    let tail = run.delays_ms(offset);
    let worst = tail[tail.len() - 500..].iter().copied().fold(0.0, f64::max);
    // 10 ms floor + 60 ms jitter + at most a frame and a half of slack + a slot of phase.
    assert!(worst <= 10.0 + 60.0 + 30.0 + 20.0, "settled delay up to {worst} ms");
}

#[test]
fn lost_packet_concealed_exactly_once_whatever_the_order() {
    for (phase, slots_first) in [(0, false), (0, true), (7 * MS, false), (19 * MS, false)] {
        let arrivals = stream(0, 200, 0, |i| (i != 50).then_some(30 * MS));
        let mut jb = AudioJitterBuffer::new(JitterConfig::default());
        let run = run_with(&mut jb, &arrivals, T0 + phase, T0 + 4_200 * MS, slots_first);
        let case = format!("phase {phase} µs, slots first {slots_first}");
        assert_eq!(run.concealed(), [50], "{case}");
        let expected: Vec<u32> = (0..200).filter(|&s| s != 50).collect();
        assert_eq!(run.frames(), expected, "{case}");
        assert_eq!((jb.stats().concealed, jb.stats().late), (1, 0), "{case}");
    }
}

#[test]
fn concealment_can_use_fec_of_the_next_packet() {
    let arrivals = stream(0, 100, 0, |i| (i != 40).then_some(30 * MS));
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 2_200 * MS);
    assert_eq!(run.fec, [(40, true)]);
}

#[test]
fn reordering_within_the_target_is_repaired() {
    // Every 10th packet comes 35 ms late, after its successor; a 40 ms target absorbs it.
    let config = JitterConfig { min_delay_us: 40 * MS, ..JitterConfig::default() };
    let arrivals = stream(0, 300, 0, |i| Some(if i % 10 == 5 { 55 * MS } else { 20 * MS }));
    assert!(arrivals.windows(2).any(|w| w[0].seq > w[1].seq), "the network reorders");
    let mut jb = AudioJitterBuffer::new(config);
    let run = run(&mut jb, &arrivals, T0 + 3 * MS, T0 + 6_200 * MS);
    assert_eq!(run.frames(), seqs(0, 300));
    assert_eq!((jb.stats().concealed, jb.stats().late), (0, 0));
}

#[test]
fn packet_later_than_its_slot_is_concealed_then_counted_late() {
    let arrivals = stream(0, 200, 0, |i| Some(if i == 60 { 200 * MS } else { 30 * MS }));
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 4_200 * MS);
    assert_eq!(run.concealed(), [60]);
    assert!(!run.frames().contains(&60));
    assert_eq!((jb.stats().late, jb.stats().concealed), (1, 1));
}

#[test]
fn burst_after_a_stall_plays_late_frames_then_shrinks_the_delay() {
    // Packets 100..=111 are held by the network and delivered with packet 112 (a 240 ms stall).
    let arrivals = stream(0, 1500, 0, |i| {
        Some(if (100..112).contains(&i) { (30 + (112 - i) as u64 * 20) * MS } else { 30 * MS })
    });
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 30_400 * MS);
    let stats = jb.stats().clone();
    assert_eq!(stats.late, 0, "within max_delay: nothing given up");
    let frames = run.frames();
    assert!(frames.windows(2).all(|w| w[0] < w[1]));
    let held = (100..=112).filter(|s| frames.contains(s)).count();
    assert!(held >= 10, "the held frames play (a few may be dropped to shrink the delay): {held}");
    assert_eq!(stats.concealed, stats.stretched, "only dry slots were concealed");
    assert!(stats.stretched >= 11, "the stall stretched the delay: {stats:?}");
    assert!(stats.accelerated >= 10, "and drops took it back: {stats:?}");
    assert_eq!(stats.played + stats.accelerated, 1500);
    let delays = run.delays_ms(0);
    assert!(delays.iter().copied().fold(0.0, f64::max) >= 250.0);
    let settled = delays[delays.len() - 100..].iter().copied().fold(0.0, f64::max);
    assert!(settled <= 30.0 + 20.0 + 30.0 + 20.0, "back near the target: {settled} ms");
}

#[test]
fn stall_longer_than_max_delay_gives_up_frames_and_caps_the_delay() {
    // 40 packets (800 ms) held and delivered together.
    let arrivals = stream(0, 600, 0, |i| {
        Some(if (100..140).contains(&i) { (30 + (140 - i) as u64 * 20) * MS } else { 30 * MS })
    });
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 12_400 * MS);
    let stats = jb.stats();
    assert!(stats.late > 0, "{stats:?}");
    assert!(run.frames().contains(&139) && run.frames().contains(&599));
    let worst = run.delays_ms(0).into_iter().fold(0.0, f64::max);
    assert!(worst <= 30.0 + 300.0 + 20.0, "delay capped near max_delay: {worst} ms");
}

#[test]
fn accelerations_are_rate_limited_and_keep_the_skipped_frame() {
    // 30 packets arrive at once (a backlog), then the stream is steady.
    let config = JitterConfig { window: 16, ..JitterConfig::default() };
    let arrivals =
        stream(0, 400, 0, |i| Some(if i < 30 { (30 + (30 - i) as u64 * 20) * MS } else { 30 * MS }));
    let mut jb = AudioJitterBuffer::new(config.clone());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 8_400 * MS);
    // A drop shows as a seq skipped between two consecutive slots.
    let mut drop_slots = Vec::new();
    let mut previous: Option<u32> = None;
    for (i, (_, p)) in run.slots.iter().enumerate() {
        if let Playout::Frame { seq, before, .. } = p {
            if previous.is_some_and(|prev| seq - prev == 2) {
                drop_slots.push(i);
                // The skipped frame is not thrown away: it plays compressed with this one.
                assert_eq!(before.as_deref(), Some(&payload(seq - 1)[..]), "slot {i}");
            } else {
                assert_eq!(before, &None, "slot {i}");
            }
            previous = Some(*seq);
        }
    }
    assert_eq!(drop_slots.len() as u64, jb.stats().accelerated);
    assert!(drop_slots.len() >= 20, "{drop_slots:?}");
    assert!(drop_slots.windows(2).all(|w| w[1] - w[0] > config.adapt_interval as usize), "{drop_slots:?}");
    assert_eq!((jb.stats().concealed, jb.stats().late), (0, 0));
}

#[test]
fn seq_wraps_at_u32_max() {
    let first = u32::MAX - 100;
    // Lose seq 0 and swap u32::MAX − 1 with u32::MAX.
    let arrivals = stream(first, 300, 0, |i| match i {
        101 => None,
        99 => Some(45 * MS),
        _ => Some(30 * MS),
    });
    let config = JitterConfig { min_delay_us: 40 * MS, ..JitterConfig::default() };
    let mut jb = AudioJitterBuffer::new(config);
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 6_400 * MS);
    assert_eq!(run.concealed(), [0]);
    let expected: Vec<u32> = seqs(first, 300).into_iter().filter(|&s| s != 0).collect();
    assert_eq!(run.frames(), expected);
    assert_eq!((jb.stats().resets, jb.stats().late), (0, 0));
}

#[test]
fn duplicates_ignored_before_and_after_playout() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    jb.handle_packet(5, T0, payload(5), T0 + 30 * MS);
    jb.handle_packet(5, T0, payload(5), T0 + 31 * MS);
    jb.handle_packet(6, T0 + 20 * MS, payload(6), T0 + 50 * MS);
    assert_eq!(jb.len(), 2);
    assert!(matches!(jb.poll_playout(T0 + 55 * MS), Playout::Frame { seq: 5, .. }));
    jb.handle_packet(5, T0, payload(5), T0 + 60 * MS);
    assert!(matches!(jb.poll_playout(T0 + 75 * MS), Playout::Frame { seq: 6, .. }));
    jb.handle_packet(6, T0 + 20 * MS, payload(6), T0 + 80 * MS);
    let stats = jb.stats();
    assert_eq!((stats.duplicates, stats.late, stats.played), (3, 0, 2));
}

#[test]
fn sender_restart_resets_cleanly() {
    // Stream A: seq 1000.., 2 s. Then the sender restarts: seq from 0, capture time goes on.
    let mut arrivals = stream(1000, 100, 0, |_| Some(30 * MS));
    let b: Vec<Arrival> = stream(0, 100, 0, |_| Some(30 * MS))
        .into_iter()
        .map(|a| Arrival { captured_us: a.captured_us + 2_100 * MS, at: a.at + 2_100 * MS, ..a })
        .collect();
    arrivals.extend(b);
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + 4_400 * MS);
    let mut expected = seqs(1000, 100);
    expected.extend(seqs(0, 100));
    assert_eq!(run.frames(), expected);
    let stats = jb.stats();
    assert_eq!((stats.resets, stats.late), (1, 0), "{stats:?}");
}

#[test]
fn restart_detected_from_capture_time_alone() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    jb.handle_packet(10, T0 + 10_000 * MS, payload(10), T0 + 10_030 * MS);
    // Next seq, but captured 10 s earlier: a new stream.
    jb.handle_packet(11, T0, payload(11), T0 + 10_040 * MS);
    assert_eq!(jb.stats().resets, 1);
    assert_eq!(jb.len(), 1);
    // An older seq captured much later: a new stream too.
    jb.handle_packet(3, T0 + 5_000 * MS, payload(3), T0 + 10_050 * MS);
    assert_eq!(jb.stats().resets, 2);
    assert_eq!(jb.peek(3), Some(&payload(3)[..]));
    assert_eq!(jb.peek(11), None);
}

#[test]
fn paused_sender_is_waited_for_not_called_late() {
    for pause_ms in [500, 3_000] {
        // The sender stops for `pause_ms` then resumes with the next seq.
        let mut arrivals = stream(0, 100, 0, |_| Some(30 * MS));
        let b: Vec<Arrival> = stream(100, 100, 0, |_| Some(30 * MS))
            .into_iter()
            .map(|a| Arrival {
                captured_us: a.captured_us + (2_000 + pause_ms) * MS,
                at: a.at + (2_000 + pause_ms) * MS,
                ..a
            })
            .collect();
        arrivals.extend(b);
        let mut jb = AudioJitterBuffer::new(JitterConfig::default());
        let run = run(&mut jb, &arrivals, T0 + 5 * MS, T0 + (4_400 + pause_ms) * MS);
        assert_eq!(run.frames(), seqs(0, 200), "pause {pause_ms} ms");
        let stats = jb.stats();
        assert_eq!((stats.late, stats.resets, stats.rebuffers), (0, 0, 1), "pause {pause_ms} ms: {stats:?}");
        let resumed = run.delays_ms(0)[100..].iter().copied().fold(0.0, f64::max);
        assert!(resumed <= 30.0 + 20.0 + 20.0, "pause {pause_ms} ms: delay after resume {resumed} ms");
    }
}

#[test]
fn overflow_drops_the_oldest() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    for seq in 0..80u32 {
        jb.handle_packet(seq, T0 + u64::from(seq) * FRAME_US, payload(seq), T0 + 2_000 * MS);
    }
    assert_eq!(jb.len(), 50);
    assert_eq!(jb.stats().dropped_overflow, 30);
    assert!(matches!(jb.poll_playout(T0 + 2_020 * MS), Playout::Frame { seq: 30, .. }));
    // While playing too: the cursor moves past what overflow dropped.
    for seq in 80..90u32 {
        jb.handle_packet(seq, T0 + u64::from(seq) * FRAME_US, payload(seq), T0 + 2_030 * MS);
    }
    assert_eq!(jb.len(), 50);
    assert!(matches!(jb.poll_playout(T0 + 2_040 * MS), Playout::Frame { seq: 40, .. }));
    jb.handle_packet(35, T0 + 35 * FRAME_US, payload(35), T0 + 2_050 * MS);
    assert_eq!(jb.stats().duplicates, 1, "received before, dropped by overflow");
}

#[test]
fn oversized_payload_refused() {
    let mut jb = AudioJitterBuffer::new(JitterConfig::default());
    jb.handle_packet(0, T0, vec![0; MAX_AUDIO_PAYLOAD + 1], T0);
    assert_eq!((jb.len(), jb.stats().oversized), (0, 1));
    assert_eq!(jb.poll_playout(T0 + 100 * MS), Playout::Wait);
}

#[derive(Debug, Clone)]
enum Op {
    /// A packet near the stream's position: seq offset, capture jitter (ms).
    Near(i16, i16),
    /// Any seq and capture time.
    Raw(u32, u64, usize),
    /// Time passes (ms), then a slot.
    Slot(u8),
}

/// Capture times a broken or hostile sender might send.
fn extreme_time() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), Just(i64::MAX as u64), Just(T0), any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-80i16..80, -100i16..300).prop_map(|(s, j)| Op::Near(s, j)),
        1 => (any::<u32>(), extreme_time(), 0usize..1100).prop_map(|(s, c, l)| Op::Raw(s, c, l)),
        4 => any::<u8>().prop_map(Op::Slot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any packets at any times: no panic, the cap holds, a played frame carries its own payload.
    #[test]
    fn never_panics_and_stays_bounded(ops in proptest::collection::vec(op(), 0..400)) {
        let config = JitterConfig { capacity: 20, window: 50, ..JitterConfig::default() };
        let mut jb = AudioJitterBuffer::new(config);
        let mut now = T0;
        let mut position: u32 = 0;
        for op in ops {
            match op {
                Op::Near(offset, jitter_ms) => {
                    let seq = position.wrapping_add(offset as u32);
                    let captured = (T0 + u64::from(position) * FRAME_US).wrapping_add((i64::from(jitter_ms) * 1000) as u64);
                    jb.handle_packet(seq, captured, payload(seq), now);
                }
                Op::Raw(seq, captured, len) => jb.handle_packet(seq, captured, vec![0; len], now),
                Op::Slot(ms) => {
                    now += u64::from(ms) * MS;
                    position = position.wrapping_add(1);
                    if let Playout::Frame { seq, payload: p, .. } = jb.poll_playout(now) {
                        prop_assert!(p == payload(seq) || p.iter().all(|&b| b == 0));
                    }
                }
            }
            prop_assert!(jb.len() <= 20);
            let s = jb.stats();
            prop_assert!(s.target_ms >= 20.0 && s.target_ms <= 300.0);
        }
    }
}
