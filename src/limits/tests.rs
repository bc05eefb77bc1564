use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_bucket_allows_its_count_at_once_then_one_per_interval() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(Rate::per_second(10), t0);
    assert!((0..10).all(|_| b.try_take(t0)), "a full bucket holds 10");
    assert!(!b.try_take(t0), "the 11th at once is refused");
    assert_eq!(b.wait(t0), 100 * MS);
    assert!(!b.try_take(t0 + 99 * MS));
    assert!(b.try_take(t0 + 100 * MS), "one token back after 100 ms");
    assert!(!b.try_take(t0 + 100 * MS));
    assert!(!b.is_full(t0 + 999 * MS));
    assert!(b.is_full(t0 + 1100 * MS), "full a second after the last take");
    assert!((0..10).all(|_| b.try_take(t0 + 1100 * MS)));
}

#[test]
fn a_bucket_never_holds_more_than_its_count_after_a_long_rest() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(Rate::per_minute(3), t0);
    let later = t0 + Duration::from_secs(3600);
    assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    assert_eq!(b.wait(later), Duration::from_secs(20));
}

#[test]
fn a_zero_rate_allows_nothing() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(Rate::per_second(0), t0);
    assert!(!b.try_take(t0 + Duration::from_secs(5)));
    assert_eq!(b.wait(t0), Duration::MAX);
}

#[test]
fn a_steady_flood_gets_the_rate_and_the_burst_and_no_more() {
    // A request every 7 ms for 10 s against 50/s: the burst of 50 and 50 a second after it.
    let t0 = Instant::now();
    let mut b = TokenBucket::new(Rate::per_second(50), t0);
    let allowed = (0..10_000 / 7).filter(|i| b.try_take(t0 + 7 * MS * *i)).count();
    assert!((500..=550).contains(&allowed), "{allowed}");
}

#[test]
fn a_table_limits_each_key_on_its_own() {
    let t0 = Instant::now();
    let mut t = RateTable::new(Rate::per_minute(2), 10);
    assert_eq!(t.check(&"a", t0), Ok(()));
    assert_eq!(t.check(&"a", t0), Ok(()));
    assert_eq!(t.check(&"a", t0), Err(RateRefusal::Exceeded { retry_after: Duration::from_secs(30) }));
    assert_eq!(t.check(&"b", t0), Ok(()), "another key has its own bucket");
    t.forget(&"a");
    assert_eq!(t.check(&"a", t0), Ok(()), "a forgotten key starts full");
}

#[test]
fn a_full_table_forgets_refilled_keys_and_refuses_when_none_are() {
    let t0 = Instant::now();
    let mut t = RateTable::new(Rate::per_second(1), 3);
    for k in 0..3 {
        assert_eq!(t.check(&k, t0), Ok(()));
    }
    assert_eq!(t.check(&3, t0), Err(RateRefusal::TableFull), "every key is still busy");
    assert_eq!(t.len(), 3);
    assert_eq!(t.check(&3, t0 + Duration::from_secs(1)), Ok(()), "refilled keys make room");
    assert_eq!(t.len(), 1);
}

#[test]
fn admission_counts_pending_handshakes_and_connections_per_address() {
    let t0 = Instant::now();
    let config = AdmissionConfig {
        handshakes: Rate::per_second(100),
        pending_handshakes: 3,
        connections_per_address: 2,
    };
    let mut a = Admission::new(config, t0);
    // Validated clients (as after a Retry) are never asked again.
    assert_eq!(a.admit(&"10.0.0.1", true, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&"10.0.0.1", true, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&"10.0.0.1", true, t0), Err(Refusal::PerAddress));
    assert_eq!(a.admit(&"10.0.0.2", true, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&"10.0.0.3", true, t0), Err(Refusal::PendingHandshakes), "three in progress");
    assert_eq!(a.pending(), 3);
    a.handshake_done();
    assert_eq!(a.admit(&"10.0.0.3", true, t0), Ok(Admit::Accept));
    // The first address's connections end: it may connect again.
    a.handshake_done();
    a.closed(&"10.0.0.1");
    assert_eq!(a.connections(&"10.0.0.1"), 1);
    assert_eq!(a.admit(&"10.0.0.1", true, t0), Ok(Admit::Accept));
    assert_eq!(a.refused(Refusal::PerAddress), 1);
    assert_eq!(a.refused(Refusal::PendingHandshakes), 1);
    assert_eq!(a.refused(Refusal::HandshakeRate), 0);
}

#[test]
fn from_half_the_pending_handshakes_on_unvalidated_clients_are_asked_to_retry() {
    let t0 = Instant::now();
    let config = AdmissionConfig {
        handshakes: Rate::per_second(100),
        pending_handshakes: 4,
        connections_per_address: 100,
    };
    let mut a = Admission::new(config, t0);
    assert_eq!(a.admit(&1, false, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&2, false, t0), Ok(Admit::Accept));
    // Two of four in progress: the unvalidated must prove their address; nothing is counted.
    for k in 3..10 {
        assert_eq!(a.admit(&k, false, t0), Ok(Admit::Retry));
    }
    assert_eq!((a.pending(), a.retries(), a.connections(&3)), (2, 7, 0));
    // Those who come back with the token go on, up to the limit.
    assert_eq!(a.admit(&3, true, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&4, true, t0), Ok(Admit::Accept));
    assert_eq!(a.admit(&5, true, t0), Err(Refusal::PendingHandshakes));
    // Once handshakes finish, clients are accepted at once again.
    for _ in 0..4 {
        a.handshake_done();
    }
    assert_eq!(a.admit(&6, false, t0), Ok(Admit::Accept));
}

#[test]
fn admission_limits_the_handshake_rate_over_all_addresses() {
    let t0 = Instant::now();
    let config = AdmissionConfig {
        handshakes: Rate::per_second(5),
        pending_handshakes: 1000,
        connections_per_address: 1000,
    };
    let mut a = Admission::new(config, t0);
    let admitted = (0..20u32).filter(|i| a.admit(i, true, t0).is_ok()).count();
    assert_eq!(admitted, 5);
    assert_eq!(a.refused(Refusal::HandshakeRate), 15);
    // Refused clients are not counted against their address.
    assert_eq!(a.connections(&19), 0);
    assert_eq!(a.admit(&19, true, t0 + 200 * MS), Ok(Admit::Accept));
}

#[test]
fn closing_more_than_was_admitted_never_underflows() {
    let t0 = Instant::now();
    let mut a: Admission<u8> = Admission::new(AdmissionConfig::default(), t0);
    a.handshake_done();
    a.closed(&1);
    assert_eq!(a.pending(), 0);
    assert_eq!(a.connections(&1), 0);
}
