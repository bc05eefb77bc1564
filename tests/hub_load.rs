//! `kioskd bench --load`, the many-calls load used to measure the hub: against a real hub
//! that records, over real QUIC, it connects every call, its media arrives, and each call's
//! recording holds all four tracks.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use kioskd::edges::net::certs::file_stem;
use kioskd::media::codec::VideoSettings;
use kioskd::protocol::Role;
use kioskd::queue::QueueConfig;
use kioskd::record::RecordingOptions;
use kioskd::roles::bench::load::{LoadOptions, run};
use kioskd::roles::hub::{self, HubOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loaded_calls_connect_deliver_their_media_and_are_recorded() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    pki.ca.write(&certs).expect("CA written");
    for (role, id) in [
        (Role::Agent, "agent-1"),
        (Role::Agent, "agent-2"),
        (Role::Kiosk, "branch-1/kiosk-1"),
        (Role::Kiosk, "branch-1/kiosk-2"),
    ] {
        let issued = pki.ca.issue(role, id, &[], &[], 1).expect("issued");
        issued.write(&certs, &file_stem(id)).expect("certificate written");
    }
    let recordings = dir.path().join("recordings");
    let hub = hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: pki.material(Role::Hub, "hub.test"),
        queue: QueueConfig::default(),
        event_log: dir.path().join("events.jsonl"),
        metrics: None,
        recording: Some(RecordingOptions { dir: recordings.clone(), retention: None }),
        crl: None,
        admission: Default::default(),
        renewal: None,
        database: None,
        console: None,
    })
    .await
    .expect("hub starts");

    let opts = LoadOptions {
        hub: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), hub.local_addr.port()),
        server_name: "localhost".into(),
        certs,
        calls: 2,
        duration: Duration::from_secs(3),
        video: VideoSettings { width: 320, height: 240, bitrate_bps: 250_000, ..VideoSettings::default() },
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(opts))
        .await
        .expect("the load ends")
        .expect("the load runs");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.connected, report.recorded), (2, 2), "{report:?}");
    // 3 s of 4 parties: 50 audio packets and 30 frames a second each, nearly all delivered
    // (what was in flight at the hang-up may be missing).
    assert!(report.sent.audio_packets >= 4 * 140 && report.sent.video_frames >= 4 * 85, "{report:?}");
    assert!(report.audio_delivered_pct >= 95.0 && report.video_delivered_pct >= 95.0, "{report:?}");

    let status = hub.shutdown().await;
    assert_eq!(status.recordings_finished, 2, "{status:?}");
    for call in 1..=2 {
        let path = recordings.join(format!("call-{call}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let sidecar: serde_json::Value = serde_json::from_str(&text).expect("a JSON sidecar");
        let tracks = sidecar["tracks"].as_array().expect("tracks");
        assert_eq!(tracks.len(), 4, "{sidecar}");
        for t in tracks {
            let least = if t["kind"] == "video" { 60 } else { 100 };
            assert!(t["frames"].as_u64().is_some_and(|f| f >= least), "{t}");
        }
        assert_eq!(sidecar["skipped"]["video_until_keyframe"], 0, "the clip starts on a keyframe: {sidecar}");
    }
}
