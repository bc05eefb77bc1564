//! The hub's event log as `kioskd report` and a restarting hub read it
//! (`queue::LogSummary::from_lines`, its report, and `AgentQueue::restore`), and as the
//! deployment's database holds it: several hubs' records (`LogSummary::from_hubs`) and a moving
//! caller's place looked up in them (`edges::db::place_of`).
//!
//! Properties: no panic; every non-blank line is either a record or counted bad; the records
//! re-serialized give the same summary; the report's counts and percentiles are consistent
//! and serialize to JSON; the next call id is above every id in the log; a restored queue
//! closes each open call once and says the hub started. One hub's records read as the
//! deployment's give the same report when no caller moved; split over two hubs, the report is
//! still consistent; a place found names a hub of the records and the call asked for.
#![no_main]

use std::time::Instant;

use kioskd::queue::log::Report;
use kioskd::queue::{AgentQueue, Event, EventRecord, LogSummary, Output, QueueConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Both readers take the file as UTF-8 text (see the README: a non-UTF-8 byte fails both).
    let Ok(text) = std::str::from_utf8(data) else { return };
    let summary = LogSummary::from_lines(text.lines());
    let records: Vec<EventRecord> =
        text.lines().filter_map(|l| serde_json::from_str::<EventRecord>(l).ok()).collect();
    let nonblank = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(summary.bad_lines + records.len(), nonblank);

    let again: Vec<String> = records.iter().map(|r| serde_json::to_string(r).expect("serializes")).collect();
    let replayed = LogSummary::from_lines(again.iter().map(String::as_str));
    assert_eq!(replayed.bad_lines, 0, "a record written back reads back");
    assert_eq!(replayed.calls, summary.calls, "re-serialized records give the same calls");

    let report = summary.report();
    check(&report);
    serde_json::to_string_pretty(&report).expect("the report serializes");

    let next = summary.next_call_id();
    assert!(summary.calls.keys().all(|&id| id < next), "next call id {next}");
    assert!(summary.recent_handle_times(50).len() <= 50);

    let one_hub = LogSummary::from_hubs(records.iter().map(|r| ("hub-a", r)));
    if records.iter().all(|r| r.moved.is_none()) {
        let mut alone = report.clone();
        alone.bad_lines = 0;
        assert_eq!(one_hub.report(), alone, "one hub's records as the deployment's");
    }
    // Split over two hubs by each record's time (odd milliseconds on hub-b).
    let hub_of = |r: &EventRecord| if r.ts_ms % 2 == 1 { "hub-b" } else { "hub-a" };
    let two = LogSummary::from_hubs(records.iter().map(|r| (hub_of(r), r)));
    check(&two.report());
    let owned: Vec<(String, EventRecord)> = records.iter().map(|r| (hub_of(r).to_string(), r.clone())).collect();
    for id in records.iter().filter_map(|r| r.call_id).take(64) {
        if let Some(place) = kioskd::edges::db::place_of(&owned, id) {
            assert!(place.call_id == id && (place.hub == "hub-a" || place.hub == "hub-b"), "{place:?}");
        }
    }

    let now = Instant::now();
    let mut queue = AgentQueue::new(QueueConfig::default(), now, 1_700_000_000_000);
    queue.restore(&summary, now);
    let open = summary.open_calls().count();
    let (mut closed, mut started) = (0, 0);
    loop {
        match queue.poll_output() {
            Output::Event(rec) => match rec.event {
                Event::Ended | Event::Abandoned => closed += 1,
                Event::HubStarted => started += 1,
                other => panic!("restore wrote {other:?}"),
            },
            Output::Wait(_) => break,
            _ => {}
        }
    }
    assert_eq!((closed, started), (open, 1));
});

fn check(r: &Report) {
    assert!(r.answered + r.abandoned <= r.calls && r.open <= r.calls, "{r:?}");
    for p in [&r.wait_ms, &r.handle_ms] {
        assert!(p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.max, "{p:?}");
    }
    assert!(r.handle_ms.count <= r.calls && r.wait_ms.count <= r.calls);
}
