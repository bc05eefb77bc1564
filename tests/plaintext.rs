//! No plaintext on the wire: every UDP datagram to and from the hub during a recorded call
//! with two-way media and texts is captured (the kiosk and the agent reach the hub through the
//! user-space proxy, which keeps a copy of each), and none of it holds a text, an identity, a
//! certificate or a piece of a media frame in clear. The media frames looked for are the ones
//! the hub recorded from that same call: the bytes that crossed the wire inside QUIC.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use common::*;
use kioskd::call::{Button, CallConfig, KioskState};
use kioskd::edges::netsim::{Capture, Direction, UdpProxy};
use kioskd::edges::session::{MediaOptions, synthetic_devices};
use kioskd::media::codec::VideoSettings;
use kioskd::netsim::link::LinkConfig;
use kioskd::protocol::{Role, RoomState};
use kioskd::queue::QueueConfig;
use kioskd::record::RecordingOptions;
use kioskd::roles::agent::{AgentCommand, AgentEvent};
use kioskd::roles::hub::{self, HubOptions};
use kioskd::roles::kiosk::KioskEvent;

const KIOSK: &str = "branch-plain/kiosk-7";
const AGENT: &str = "agent-plaintext";
const TO_AGENT: &str = "My account number is 4929 1234 5678 9012";
const TO_KIOSK: &str = "请出示您的身份证 — please show your identity card";
/// Needles cut from media frames and certificates: long enough that random ciphertext never
/// holds one by chance (2^-128 per position).
const NEEDLE: usize = 16;

fn video() -> VideoSettings {
    VideoSettings { width: 320, height: 240, fps: 30.0, bitrate_bps: 400_000, ..VideoSettings::default() }
}

/// The packets of each stream of a recording, as ffprobe reads them (`-show_data`).
fn recorded_packets(file: &Path) -> Vec<(String, Vec<u8>)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_packets", "-show_data"])
        .arg(file)
        .output()
        .expect("ffprobe runs (the README's test command installs ffmpeg)");
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut packets = Vec::new();
    let (mut kind, mut data, mut in_data) = (String::new(), Vec::new(), false);
    for line in text.lines() {
        if line == "[PACKET]" {
            (kind, in_data) = (String::new(), false);
            data.clear();
        } else if line == "[/PACKET]" {
            packets.push((kind.clone(), std::mem::take(&mut data)));
            in_data = false;
        } else if let Some(k) = line.strip_prefix("codec_type=") {
            kind = k.to_string();
        } else if line == "data=" {
            in_data = true;
        } else if in_data {
            // "00000010: 0102 0304 ... 0f10  ascii": the hex columns are 10..49.
            let hex: String = line.get(10..49).unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
            data.extend(
                (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()),
            );
        }
    }
    packets
}

/// 16-byte pieces from inside each frame of at least 48 bytes (away from its headers).
fn media_needles(packets: &[(String, Vec<u8>)], kind: &str) -> Vec<Vec<u8>> {
    packets
        .iter()
        .filter(|(k, p)| k == kind && p.len() >= 48)
        .flat_map(|(_, p)| {
            let step = (p.len() / 4).max(NEEDLE);
            (NEEDLE..p.len() - 2 * NEEDLE).step_by(step).map(move |at| p[at..at + NEEDLE].to_vec())
        })
        .collect()
}

/// Every 16-byte window of the datagrams, for looking needles up.
fn windows<'a>(datagrams: impl Iterator<Item = &'a [u8]>) -> HashSet<[u8; NEEDLE]> {
    let mut set = HashSet::new();
    for d in datagrams {
        for w in d.windows(NEEDLE) {
            set.insert(<[u8; NEEDLE]>::try_from(w).expect("window of NEEDLE bytes"));
        }
    }
    set
}

fn found_in(set: &HashSet<[u8; NEEDLE]>, needles: &[Vec<u8>]) -> usize {
    needles.iter().filter(|n| <[u8; NEEDLE]>::try_from(n.as_slice()).is_ok_and(|n| set.contains(&n))).count()
}

fn contains(capture: &Capture, needle: &[u8]) -> bool {
    capture.datagrams.iter().any(|(_, d)| memchr::memmem::find(d, needle).is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_with_texts_shows_nothing_in_clear_on_the_hubs_udp_port() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub_tls = pki.material(Role::Hub, "hub.plaintext");
    let hub = hub::start(HubOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: hub_tls.clone(),
        queue: QueueConfig::default(),
        event_log: dir.path().join("events.jsonl"),
        metrics: None,
        recording: Some(RecordingOptions { dir: dir.path().join("rec"), retention: None }),
        crl: None,
        admission: Default::default(),
        renewal: None,
        database: None,
        console: None,
    })
    .await
    .expect("hub starts");
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let proxy = UdpProxy::start(loopback, hub.local_addr, LinkConfig::default(), LinkConfig::default())
        .await
        .expect("proxy starts");
    proxy.start_capture(256 << 20);

    // Agent and kiosk both reach the hub through the proxy: all of the hub's traffic is seen.
    let opts = MediaOptions { video: video(), ..MediaOptions::default() };
    let agent_tls = pki.material(Role::Agent, AGENT);
    let mut a = start_agent_full(
        Pki::target_of(proxy.local_addr(), &agent_tls),
        AGENT,
        Some(auto(None)),
        synthetic_devices(660.0, video()),
        opts.clone(),
    );
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let kiosk_tls = pki.material(Role::Kiosk, KIOSK);
    let call = CallConfig { recording_consent: true, ..CallConfig::default() };
    let mut k = start_kiosk_call(
        Pki::target_of(proxy.local_addr(), &kiosk_tls),
        KIOSK,
        synthetic_devices(440.0, video()),
        opts,
        Vec::new(),
        call,
    );
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    let recorded = match a.wait_for("connected", |e| matches!(e, AgentEvent::Connected { .. })).await {
        AgentEvent::Connected { recorded, .. } => recorded,
        _ => unreachable!("filtered above"),
    };
    assert!(recorded, "the hub records the call (the customer consented)");

    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    // Texts both ways, each shown on the other side.
    k.texts.send(TO_AGENT.into()).await.expect("kiosk takes texts");
    a.command(AgentCommand::Say(TO_KIOSK.into())).await;
    a.wait_for(
        "the kiosk's text",
        |e| matches!(e, AgentEvent::TextReceived { body, .. } if body == TO_AGENT),
    )
    .await;
    k.wait_for(
        "the agent's text",
        |e| matches!(e, KioskEvent::TextReceived { body, .. } if body == TO_KIOSK),
    )
    .await;
    // Media both ways for a while: 1500 datagrams each way (about 5 s of video and sound).
    tokio::time::timeout(4 * WAIT, proxy.wait_stats(|s| s.up.delivered >= 1500 && s.down.delivered >= 1500))
        .await
        .expect("media flows through the proxy");
    k.panel.press(Button::HangUp);
    k.wait_for("media figures", |e| matches!(e, KioskEvent::Media { .. })).await;
    let mut status = hub.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.recordings_finished >= 1))
        .await
        .expect("the recording is finished")
        .expect("hub status");
    let capture = proxy.take_capture();
    proxy.stop().await;

    // What was captured: QUIC (version 1 long headers at the handshake), both ways.
    let ups = capture.datagrams.iter().filter(|(d, _)| *d == Direction::Up).count();
    assert!(
        ups >= 1500 && capture.datagrams.len() - ups >= 1500,
        "captured {ups} up of {}",
        capture.datagrams.len()
    );
    assert_eq!(capture.left_out, 0, "the capture kept every datagram");
    let long_v1 =
        capture.datagrams.iter().filter(|(_, d)| d.len() > 5 && d[0] & 0x80 != 0 && d[1..5] == [0, 0, 0, 1]);
    assert!(long_v1.count() >= 2, "QUIC v1 handshakes are in the capture");

    // No text, in either direction, in any encoding the product uses (UTF-8), whole or in part.
    for text in [TO_AGENT, TO_KIOSK] {
        for piece in [text, &text[..12], "4929 1234", "identity card"] {
            assert!(!contains(&capture, piece.as_bytes()), "text in clear on the wire: {piece:?}");
        }
    }
    assert!(!contains(&capture, "请出示".as_bytes()), "Chinese text in clear on the wire");
    // No identity: names, and the certificates (TLS 1.3 encrypts them, the client's too).
    for name in [KIOSK, "kiosk-7", "branch-plain", AGENT, "hub.plaintext"] {
        assert!(!contains(&capture, name.as_bytes()), "identity in clear on the wire: {name}");
    }
    let set = windows(capture.datagrams.iter().map(|(_, d)| d.as_slice()));
    for (who, tls) in [("kiosk", &kiosk_tls), ("agent", &agent_tls), ("hub", &hub_tls)] {
        let der = tls.chain[0].as_ref();
        let needles: Vec<Vec<u8>> = der.chunks_exact(NEEDLE).map(<[u8]>::to_vec).collect();
        assert_eq!(found_in(&set, &needles), 0, "the {who}'s certificate in clear on the wire");
    }

    // No media: pieces of every recorded frame of at least 48 bytes, both cameras and both
    // microphones.
    let file = std::fs::read_dir(dir.path().join("rec"))
        .expect("recordings folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mkv"))
        .expect("a recording");
    let packets = recorded_packets(&file);
    let recorded_bytes: usize = packets.iter().map(|(_, p)| p.len()).sum();
    assert!(capture.bytes > recorded_bytes, "the media went through the capture");
    // The search itself, checked: a capture holding the frames in clear (one datagram each)
    // shows every piece.
    let clear_set = windows(packets.iter().map(|(_, p)| p.as_slice()));
    for kind in ["video", "audio"] {
        let needles = media_needles(&packets, kind);
        assert_eq!(
            found_in(&clear_set, &needles),
            needles.len(),
            "{kind}: the search misses frames in clear"
        );
        assert!(needles.len() >= 200, "{kind}: only {} pieces of recorded frames", needles.len());
        let found = found_in(&set, &needles);
        assert_eq!(found, 0, "{kind}: {found} of {} pieces of recorded frames in clear", needles.len());
        eprintln!("{kind}: 0 of {} pieces of recorded frames found in the capture", needles.len());
    }
    eprintln!(
        "plaintext: {} datagrams ({} bytes) captured, {recorded_bytes} bytes of media recorded",
        capture.datagrams.len(),
        capture.bytes
    );
    let _ = k.stop.send(true);
    let _ = a.stop.send(true);
    hub.shutdown().await;
}
