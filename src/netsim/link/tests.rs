//! Tests of [`Link`] on a fake clock: packets carry their id in their first 8 bytes and are sent
//! at `t0 + id × spacing`; every packet is taken out at its arrival time.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn packet(id: u64, size: usize) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(size.max(8), (id % 251) as u8);
    p
}

fn id_of(p: &[u8]) -> u64 {
    u64::from_be_bytes(p[..8].try_into().expect("test packets have an id"))
}

/// A packet as it came out of the link.
#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    id: u64,
    len: usize,
    /// When it was sent.
    sent: Instant,
    /// When it arrived.
    at: Instant,
}

impl Delivery {
    fn delay(&self) -> Duration {
        self.at - self.sent
    }
}

/// Sends `(time, packet)` in order, taking every packet out at its arrival time (before a send
/// at the same time), then drains the link.
fn run(link: &mut Link, sends: impl IntoIterator<Item = (Instant, Vec<u8>)>) -> Vec<Delivery> {
    let mut sent_at = HashMap::new();
    let mut out = Vec::new();
    for (t, bytes) in sends {
        drain_until(link, Some(t), &sent_at, &mut out);
        sent_at.insert(id_of(&bytes), t);
        link.handle_packet(bytes, t);
    }
    drain_until(link, None, &sent_at, &mut out);
    out
}

fn drain_until(
    link: &mut Link,
    until: Option<Instant>,
    sent_at: &HashMap<u64, Instant>,
    out: &mut Vec<Delivery>,
) {
    while let Some(at) = link.poll_timeout().filter(|&at| until.is_none_or(|u| at <= u)) {
        let bytes = link.poll_transmit(at).expect("a packet is due at poll_timeout");
        let id = id_of(&bytes);
        let sent = *sent_at.get(&id).expect("delivered a packet that was sent");
        out.push(Delivery { id, len: bytes.len(), sent, at });
    }
}

/// `count` packets of `size` bytes, one every `spacing` from `t0`.
fn paced(
    t0: Instant,
    count: u64,
    spacing: Duration,
    size: usize,
) -> impl Iterator<Item = (Instant, Vec<u8>)> {
    (0..count).map(move |id| (t0 + spacing * id as u32, packet(id, size)))
}

fn link(config: LinkConfig, t0: Instant) -> Link {
    Link::new(config, t0).expect("valid config")
}

/// The ids of `0..count` that were not delivered.
fn lost_ids(deliveries: &[Delivery], count: u64) -> Vec<u64> {
    let got: HashSet<u64> = deliveries.iter().map(|d| d.id).collect();
    (0..count).filter(|id| !got.contains(id)).collect()
}

/// Lengths of the runs of consecutive ids in `lost` (sorted).
fn runs(lost: &[u64]) -> Vec<u64> {
    let mut runs: Vec<u64> = Vec::new();
    let mut prev: Option<u64> = None;
    for &id in lost {
        match (prev, runs.last_mut()) {
            (Some(p), Some(run)) if id == p + 1 => *run += 1,
            _ => runs.push(1),
        }
        prev = Some(id);
    }
    runs
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n as f64
}

#[test]
fn independent_loss_matches_its_probability_over_100k_packets() {
    let t0 = Instant::now();
    for (seed, loss) in [(1, 0.10), (2, 0.01), (3, 0.50)] {
        let mut link = link(LinkConfig { loss, seed, ..LinkConfig::default() }, t0);
        let out = run(&mut link, paced(t0, 100_000, MS, 100));
        let s = *link.stats();
        let rate = s.lost_random as f64 / s.sent as f64;
        assert!((rate - loss).abs() < 0.005, "seed {seed}: loss {rate:.4}, set {loss}");
        assert_eq!((s.sent, s.delivered + s.lost_random, s.lost()), (100_000, 100_000, s.lost_random));
        assert_eq!(out.len() as u64, s.delivered);
        // Independent: bursts are short (mean run 1 / (1 − loss)).
        let mean_run = mean(runs(&lost_ids(&out, 100_000)).into_iter().map(|r| r as f64));
        assert!((mean_run - 1.0 / (1.0 - loss)).abs() < 0.05, "seed {seed}: mean run {mean_run}");
    }
}

#[test]
fn gilbert_elliott_from_mean_gives_the_loss_and_burst_length() {
    let ge = GilbertElliott::from_mean(10.0, 4.0);
    assert_eq!((ge.p_bad_to_good, ge.loss_in_bad, ge.loss_in_good), (0.25, 1.0, 0.0));
    assert!((ge.p_good_to_bad - 0.1 * 0.25 / 0.9).abs() < 1e-12);

    let t0 = Instant::now();
    for seed in [1, 2, 3] {
        let mut link = link(LinkConfig { burst: Some(ge), seed, ..LinkConfig::default() }, t0);
        let out = run(&mut link, paced(t0, 100_000, MS, 100));
        let s = *link.stats();
        let loss = s.lost_burst as f64 / s.sent as f64;
        let bursts = runs(&lost_ids(&out, 100_000));
        let mean_burst = mean(bursts.iter().map(|&r| r as f64));
        assert!((loss - 0.10).abs() < 0.01, "seed {seed}: loss {loss:.4}");
        assert!(
            (mean_burst - 4.0).abs() < 0.3,
            "seed {seed}: mean burst {mean_burst:.2} of {}",
            bursts.len()
        );
        assert_eq!(s.lost(), s.lost_burst);
    }
}

#[test]
fn from_mean_clamps_its_arguments() {
    let never = GilbertElliott::from_mean(0.0, 4.0);
    assert_eq!(never.p_good_to_bad, 0.0);
    let always = GilbertElliott::from_mean(150.0, 0.0);
    assert_eq!((always.p_good_to_bad, always.p_bad_to_good), (1.0, 0.0));
    let nan = GilbertElliott::from_mean(f64::NAN, f64::NAN);
    assert_eq!((nan.p_good_to_bad, nan.p_bad_to_good), (0.0, 1.0));
    for ge in [never, always, nan, GilbertElliott::from_mean(99.9, 1.0)] {
        let config = LinkConfig { burst: Some(ge), ..LinkConfig::default() };
        assert_eq!(config.validate(), Ok(()), "{ge:?}");
    }
}

#[test]
fn delay_and_jitter_stay_within_bounds() {
    let t0 = Instant::now();
    let (delay, jitter) = (50 * MS, 10 * MS);
    let config = LinkConfig { delay, jitter, seed: 9, ..LinkConfig::default() };

    // Spaced wider than the jitter: the delay is uniform in delay ± jitter.
    let mut sparse = link(config.clone(), t0);
    let out = run(&mut sparse, paced(t0, 2000, 100 * MS, 100));
    assert_eq!(out.len(), 2000);
    let delays: Vec<Duration> = out.iter().map(Delivery::delay).collect();
    assert!(delays.iter().all(|d| (40 * MS..=60 * MS).contains(d)), "out of bounds");
    let (min, max) = (delays.iter().min().copied(), delays.iter().max().copied());
    assert!(min < Some(40 * MS + MS / 2) && max > Some(60 * MS - MS / 2), "{min:?}..{max:?}");
    let mean_ms = mean(delays.iter().map(|d| d.as_secs_f64() * 1e3));
    assert!((mean_ms - 50.0).abs() < 0.5, "mean {mean_ms} ms");

    // Spaced closer than the jitter: still within bounds, and never reordered.
    let mut dense = link(config, t0);
    let out = run(&mut dense, paced(t0, 5000, MS, 100));
    assert!(out.iter().all(|d| (40 * MS..=60 * MS).contains(&d.delay())));
    assert!(out.windows(2).all(|w| w[0].id < w[1].id), "jitter reordered packets");
    assert_eq!(dense.stats().reordered, 0);

    // Jitter above the delay: clamped at zero, never negative.
    let config = LinkConfig { delay: 5 * MS, jitter: 20 * MS, seed: 9, ..LinkConfig::default() };
    let mut clamped = link(config, t0);
    let out = run(&mut clamped, paced(t0, 2000, 100 * MS, 100));
    assert!(out.iter().all(|d| d.delay() <= 25 * MS));
    let at_zero = out.iter().filter(|d| d.delay() == Duration::ZERO).count() as f64 / 2000.0;
    assert!((at_zero - 15.0 / 40.0).abs() < 0.05, "{at_zero} clamped to 0, expected 15/40");

    // No jitter: exactly the delay.
    let mut fixed = link(LinkConfig { delay, ..LinkConfig::default() }, t0);
    assert!(run(&mut fixed, paced(t0, 100, MS, 100)).iter().all(|d| d.delay() == delay));
}

#[test]
fn rate_limit_delivers_at_the_link_rate() {
    let t0 = Instant::now();
    // 1 Mbit/s, 1250-byte packets: 10 ms each on the wire.
    let config = LinkConfig { rate_bps: Some(1_000_000), delay: 20 * MS, ..LinkConfig::default() };

    // Offered at half the rate: nothing queues, each packet takes its serialisation time.
    let mut light = link(config.clone(), t0);
    let out = run(&mut light, paced(t0, 500, 20 * MS, 1250));
    assert_eq!(out.len(), 500);
    assert!(out.iter().all(|d| d.delay() == 30 * MS));

    // Offered at twice the rate for 10 s: the link delivers 125 000 bytes/s, the queue drops
    // the rest, and the queueing delay stays within the queue's size.
    let mut heavy = link(config.clone(), t0);
    let out = run(&mut heavy, paced(t0, 2000, 5 * MS, 1250));
    let s = *heavy.stats();
    let (first, last) = (&out[0], &out[out.len() - 1]);
    let bytes: usize = out[1..].iter().map(|d| d.len).sum();
    let throughput = bytes as f64 / (last.at - first.at).as_secs_f64();
    assert!((throughput - 125_000.0).abs() < 125.0, "throughput {throughput} B/s");
    assert_eq!(s.delivered + s.lost_queue, 2000);
    assert!((1000..=1070).contains(&s.delivered), "delivered {}", s.delivered);
    let worst = Duration::from_secs_f64((DEFAULT_QUEUE_BYTES + 1250) as f64 * 8.0 / 1e6) + 20 * MS;
    let max_delay = out.iter().map(Delivery::delay).max().expect("some delivered");
    assert!(max_delay <= worst && max_delay > worst - 30 * MS, "max delay {max_delay:?}, bound {worst:?}");
}

#[test]
fn queue_tail_drops_beyond_its_size() {
    let t0 = Instant::now();
    // 1 Mbit/s, 1000-byte packets (8 ms each), a 10 000-byte queue; 30 packets at once.
    let config = LinkConfig { rate_bps: Some(1_000_000), queue_bytes: 10_000, ..LinkConfig::default() };
    let mut link = link(config, t0);
    let out = run(&mut link, (0..30).map(|id| (t0, packet(id, 1000))));
    assert_eq!(out.iter().map(|d| d.id).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert!(out.iter().enumerate().all(|(k, d)| d.delay() == 8 * MS * (k as u32 + 1)));
    assert_eq!((link.stats().lost_queue, link.stats().delivered), (20, 10));

    // A queue smaller than a packet still passes one packet at a time.
    let config = LinkConfig { rate_bps: Some(1_000_000), queue_bytes: 0, ..LinkConfig::default() };
    let mut tiny = Link::new(config, t0).expect("valid");
    let out = run(&mut tiny, paced(t0, 100, 4 * MS, 1000));
    assert_eq!(out.len(), 50, "every other packet finds the link busy");
}

#[test]
fn outage_window_drops_exactly_the_packets_sent_in_it() {
    let t0 = Instant::now();
    let config = LinkConfig {
        delay: 30 * MS,
        outages: vec![(100 * MS, 50 * MS), (300 * MS, 10 * MS)],
        ..LinkConfig::default()
    };
    let mut link = link(config, t0);
    let out = run(&mut link, paced(t0, 500, MS, 100));
    let expected: Vec<u64> = (100..150).chain(300..310).collect();
    assert_eq!(lost_ids(&out, 500), expected);
    assert_eq!((link.stats().lost_outage, link.stats().lost(), link.stats().delivered), (60, 60, 440));
    // Packets in flight when the outage began (sent at 70..100 ms) arrived during it.
    assert!(out.iter().any(|d| d.id == 99 && d.at == t0 + 129 * MS));
}

#[test]
fn outages_count_from_the_last_reconfiguration() {
    let t0 = Instant::now();
    let delay = 50 * MS;
    let mut link = link(LinkConfig { delay, ..LinkConfig::default() }, t0);
    let change = t0 + Duration::from_secs(1);
    link.handle_packet(packet(0, 100), change - 10 * MS);
    let cut = LinkConfig { delay, outages: vec![(Duration::ZERO, 100 * MS)], ..LinkConfig::default() };
    link.set_config(cut, change).expect("valid");
    for ms in 0..110 {
        link.handle_packet(packet(ms + 1, 100), change + MS * ms as u32);
    }
    // The packet in flight arrives during the outage; the first 100 ms after the change are cut.
    assert_eq!(link.poll_timeout(), Some(change + 40 * MS));
    assert_eq!(link.poll_transmit(change + 40 * MS).as_deref().map(id_of), Some(0));
    let mut rest = Vec::new();
    while let Some(at) = link.poll_timeout() {
        assert!(at >= change + 150 * MS);
        rest.extend(link.poll_transmit(at).as_deref().map(id_of));
    }
    assert_eq!(rest, (101..=110).collect::<Vec<_>>());
    assert_eq!((link.stats().lost_outage, link.stats().delivered), (100, 11));
}

#[test]
fn reordering_happens_at_about_the_set_probability() {
    let t0 = Instant::now();
    let config = LinkConfig { delay: 10 * MS, reorder: 0.05, seed: 4, ..LinkConfig::default() };
    let mut link = link(config, t0);
    let out = run(&mut link, paced(t0, 20_000, MS, 100));
    let s = *link.stats();
    assert_eq!(s.delivered, 20_000);
    let rate = s.reordered as f64 / s.delivered as f64;
    assert!((rate - 0.05).abs() < 0.005, "reordered {rate:.4}");

    // The count is what a receiver sees: packets arriving after a later one.
    let mut highest = None;
    let late = out
        .iter()
        .filter(|d| {
            let behind = highest.is_some_and(|h| d.id < h);
            highest = highest.max(Some(d.id));
            behind
        })
        .count();
    assert_eq!(late as u64, s.reordered);
    // Held back by REORDER_DELAY exactly; the others keep the plain delay.
    let held: Vec<&Delivery> = out.iter().filter(|d| d.delay() > 10 * MS).collect();
    assert!(held.iter().all(|d| d.delay() == 10 * MS + REORDER_DELAY));
    assert_eq!(held.len() as u64, s.reordered);

    let mut none = self::link(LinkConfig { delay: 10 * MS, ..LinkConfig::default() }, t0);
    let _ = run(&mut none, paced(t0, 1000, MS, 100));
    assert_eq!(none.stats().reordered, 0);
}

fn everything(seed: u64) -> LinkConfig {
    LinkConfig {
        loss: 0.05,
        burst: Some(GilbertElliott::from_mean(5.0, 3.0)),
        delay: 30 * MS,
        jitter: 10 * MS,
        reorder: 0.02,
        rate_bps: Some(2_000_000),
        queue_bytes: 20_000,
        outages: vec![(Duration::from_secs(1), 200 * MS)],
        seed,
    }
}

#[test]
fn same_seed_same_outcome() {
    let t0 = Instant::now();
    // 1200 bytes every 4 ms = 2.4 Mbit/s into 2 Mbit/s: every stage drops something.
    let once = |seed| {
        let mut link = link(everything(seed), t0);
        let out = run(&mut link, paced(t0, 3000, 4 * MS, 1200));
        (out, *link.stats())
    };
    let (a, b, c) = (once(7), once(7), once(8));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    let s = a.1;
    assert!(
        s.lost_random > 0 && s.lost_burst > 0 && s.lost_queue > 0 && s.lost_outage > 0 && s.reordered > 0
    );
    assert_eq!(s.sent, s.delivered + s.lost());
}

#[test]
fn delay_settings_do_not_change_which_packets_are_lost() {
    let t0 = Instant::now();
    let lost = |config: LinkConfig| {
        let mut link = link(config, t0);
        lost_ids(&run(&mut link, paced(t0, 10_000, MS, 100)), 10_000)
    };
    let base = LinkConfig {
        loss: 0.1,
        burst: Some(GilbertElliott::from_mean(2.0, 2.0)),
        seed: 5,
        ..LinkConfig::default()
    };
    let plain = lost(base.clone());
    let delayed = lost(LinkConfig { delay: 40 * MS, jitter: 15 * MS, reorder: 0.1, ..base.clone() });
    assert_eq!(plain, delayed);
    // Raising the loss only adds losses.
    let worse: HashSet<u64> = lost(LinkConfig { loss: 0.2, ..base }).into_iter().collect();
    assert!(plain.iter().all(|id| worse.contains(id)));
    assert!(worse.len() > plain.len());
}

#[test]
fn in_flight_is_capped_in_packets_and_bytes() {
    let t0 = Instant::now();
    let slow = LinkConfig { delay: Duration::from_secs(10), ..LinkConfig::default() };
    let mut many = link(slow.clone(), t0);
    for id in 0..MAX_IN_FLIGHT_PACKETS as u64 + 5 {
        many.handle_packet(packet(id, 8), t0);
    }
    assert_eq!((many.len(), many.stats().lost_overflow), (MAX_IN_FLIGHT_PACKETS, 5));

    let mut big = link(slow, t0);
    let size = 64 * 1024;
    for id in 0..(MAX_IN_FLIGHT_BYTES / size) as u64 + 3 {
        big.handle_packet(packet(id, size), t0);
    }
    assert_eq!((big.len(), big.stats().lost_overflow), (MAX_IN_FLIGHT_BYTES / size, 3));
    // Room again once they are delivered.
    while big.poll_transmit(t0 + Duration::from_secs(10)).is_some() {}
    big.handle_packet(packet(99, size), t0 + Duration::from_secs(10));
    assert_eq!((big.len(), big.stats().lost_overflow), (1, 3));
    assert_eq!(big.stats().in_flight(), 1);
}

#[test]
fn configuration_out_of_range_is_refused() {
    let t0 = Instant::now();
    let bad = [
        LinkConfig { loss: 1.5, ..LinkConfig::default() },
        LinkConfig { reorder: f64::NAN, ..LinkConfig::default() },
        LinkConfig {
            burst: Some(GilbertElliott { p_good_to_bad: -0.1, ..GilbertElliott::from_mean(1.0, 2.0) }),
            ..LinkConfig::default()
        },
        LinkConfig { rate_bps: Some(0), ..LinkConfig::default() },
        LinkConfig {
            delay: Duration::from_secs(50),
            jitter: Duration::from_secs(11),
            ..LinkConfig::default()
        },
        LinkConfig { queue_bytes: MAX_QUEUE_BYTES + 1, ..LinkConfig::default() },
    ];
    for config in bad {
        assert!(Link::new(config.clone(), t0).is_err(), "{config:?} accepted");
        let mut link = link(LinkConfig::default(), t0);
        assert!(link.set_config(config, t0).is_err());
        assert_eq!(link.config(), &LinkConfig::default(), "a refused config changed nothing");
    }
    let err = Link::new(LinkConfig { loss: 2.0, ..LinkConfig::default() }, t0).expect_err("out of range");
    assert_eq!(err.to_string(), "loss must be a probability in 0..=1, not 2");
}

/// A link configuration with every stage possibly on.
fn any_config() -> impl Strategy<Value = LinkConfig> {
    let burst =
        proptest::option::of((0.0..=1.0, 0.0..=1.0, 0.0..=1.0, 0.0..=1.0).prop_map(|(a, b, c, d)| {
            GilbertElliott { p_good_to_bad: a, p_bad_to_good: b, loss_in_bad: c, loss_in_good: d }
        }));
    let outages = proptest::collection::vec((0u64..2000, 0u64..500), 0..3);
    (
        (0.0..=1.0, burst, 0u64..200, 0u64..200, 0.0..=1.0),
        (proptest::option::of(1_000u64..10_000_000), 0usize..200_000, outages, any::<u64>()),
    )
        .prop_map(|((loss, burst, delay, jitter, reorder), (rate_bps, queue_bytes, outages, seed))| {
            LinkConfig {
                loss,
                burst,
                delay: MS * delay as u32,
                jitter: MS * jitter as u32,
                reorder,
                rate_bps,
                queue_bytes,
                outages: outages.into_iter().map(|(s, l)| (MS * s as u32, MS * l as u32)).collect(),
                seed,
            }
        })
}

/// What the driver does next: send a packet of `len` bytes or poll, after moving the clock by
/// `step` µs (sometimes backwards).
#[derive(Debug, Clone)]
enum Step {
    Send { step: i32, len: usize },
    Poll { step: i32 },
    Reconfigure { step: i32, config: LinkConfig },
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (-2_000i32..20_000, 8usize..3000).prop_map(|(step, len)| Step::Send { step, len }),
        4 => (-2_000i32..50_000).prop_map(|step| Step::Poll { step }),
        1 => (0i32..10_000, any_config()).prop_map(|(step, config)| Step::Reconfigure { step, config }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever the configuration and the driver's timing: no panic, every packet delivered
    /// at most once and intact, nothing invented, every packet accounted for.
    #[test]
    fn never_panics_duplicates_or_invents(config in any_config(), steps in proptest::collection::vec(any_step(), 0..400)) {
        let t0 = Instant::now() + Duration::from_secs(10); // room to step back
        let mut link = link(config, t0);
        let mut now = t0;
        let mut sent: Vec<usize> = Vec::new(); // length by id
        let mut seen = HashSet::new();
        let mut check = |bytes: Vec<u8>, sent: &[usize]| -> Result<(), TestCaseError> {
            let id = id_of(&bytes) as usize;
            prop_assert!(id < sent.len(), "invented packet {id}");
            prop_assert_eq!(&bytes, &packet(id as u64, sent[id]), "packet {} altered", id);
            prop_assert!(seen.insert(id), "packet {} delivered twice", id);
            Ok(())
        };
        for step in steps {
            let (Step::Send { step: us, .. } | Step::Poll { step: us } | Step::Reconfigure { step: us, .. }) = step;
            let d = Duration::from_micros(u64::from(us.unsigned_abs()));
            now = if us >= 0 { now + d } else { now.checked_sub(d).unwrap_or(now) };
            match step {
                Step::Send { len, .. } => {
                    link.handle_packet(packet(sent.len() as u64, len), now);
                    sent.push(len.max(8));
                }
                Step::Poll { .. } => {
                    while let Some(bytes) = link.poll_transmit(now) {
                        check(bytes, &sent)?;
                    }
                    prop_assert!(link.poll_timeout().is_none_or(|at| at > now));
                }
                Step::Reconfigure { config, .. } => link.set_config(config, now).expect("valid"),
            }
            let s = *link.stats();
            prop_assert_eq!(s.sent, s.delivered + s.lost() + link.len() as u64);
        }
        while let Some(at) = link.poll_timeout() {
            let bytes = link.poll_transmit(at);
            prop_assert!(bytes.is_some(), "nothing due at poll_timeout");
            check(bytes.unwrap_or_default(), &sent)?;
        }
        let s = *link.stats();
        prop_assert_eq!((s.sent, s.delivered, s.in_flight()), (sent.len() as u64, seen.len() as u64, 0));
        prop_assert_eq!(s.sent, s.delivered + s.lost());
    }
}
