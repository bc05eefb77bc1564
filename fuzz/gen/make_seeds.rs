//! Writes the seed corpora of every fuzz target into `fuzz/corpus/<target>/` (not a fuzz
//! target). Run from the repository's root, after `cargo fuzz build`:
//!
//! ```sh
//! fuzz/target/x86_64-unknown-linux-gnu/release/make_seeds fuzz/corpus
//! ```
//!
//! Seeds are made with the project's own encoders (control frames, media packets, H.264 from
//! openh264, Opus from libopus) and copied from its example files (configurations, language
//! files). The encoders are deterministic, so the files come out the same each time.

// Links libFuzzer's coverage hooks, which every crate of this build calls.
use libfuzzer_sys as _;

use std::path::{Path, PathBuf};

use kioskd::media::codec::{AudioEncoder, AudioSettings, VideoEncoder, VideoSettings};
use kioskd::media::packet::{MediaHeader, MediaKind};
use kioskd::media::{FRAME_SAMPLES, Picture};
use kioskd::protocol::*;
use kioskd::queue::{Event, EventRecord, Moved};
use kioskd_fuzz::{T0, Writer, opus_ops, recorder_ops as rec};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let root = out.join("../..");
    control(&out);
    let media = Media::new();
    media_packet(&out, &media);
    audio_jitter(&out);
    video_reorder(&out);
    video_playout(&out);
    recorder(&out, &media);
    h264(&out, &media);
    opus(&out, &media);
    config(&out, &root);
    event_log(&out);
    certificates(&out);
    console_ws(&out);
}

/// The browser console's WebSocket messages, sign-in bodies, an SDP offer as Chromium sends one.
fn console_ws(out: &Path) {
    let t = "console_ws";
    let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
    write(out, t, "sdp-raw", sdp.as_bytes());
    let offer = format!(r#"{{"type":"sdp_offer","sdp":{}}}"#, serde_json::to_string(sdp).expect("json"));
    write(out, t, "sdp-offer", offer.as_bytes());
    for (name, msg) in [
        ("presence", r#"{"type":"set_presence","presence":"idle"}"#),
        ("accept", r#"{"type":"accept","call_id":7}"#),
        ("text", r#"{"type":"text","call_id":7,"id":1,"body":"Good morning"}"#),
        ("text-ack", r#"{"type":"text_ack","call_id":7,"id":3}"#),
        ("hang-up", r#"{"type":"hang_up","call_id":7}"#),
        ("media-state", r#"{"type":"media_state","mic":false,"camera":true}"#),
        ("kiosk-message", r#"{"type":"request_agent","consent":true}"#),
        ("signin", r#"{"name":"alice","password":"correct horse"}"#),
        ("cookie", "theme=dark; kioskd_session=00ff ; other=1"),
        ("origin", "https://hub.bank.example:8443\nhub.bank.example:8443"),
    ] {
        write(out, t, name, msg.as_bytes());
    }
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("seed folder");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn frame<M: codec::Message>(msg: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out).expect("encodes");
    out
}

const CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIH5MIGgAgEAMD4xETAPBgNVBAoMCGtpb3NrZC0xMRQwEgYDVQQLDAtraW9zaw==\n-----END CERTIFICATE REQUEST-----\n";
const CHAIN: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUQ2VydGlmaWNhdGUgZm9yIGZ1enppbmcwCgYIKoZIzj0E\n-----END CERTIFICATE-----\n";

fn client_msgs() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello { role: Role::Kiosk, software: "kioskd 0.1.0".into() },
        ClientMsg::RequestAgent { resume: Some(7), consent: true },
        ClientMsg::RequestAgent { resume: None, consent: false },
        ClientMsg::HangUp { call_id: 3 },
        ClientMsg::SetPresence { presence: Presence::Idle },
        ClientMsg::Accept { call_id: 1 },
        ClientMsg::Decline { call_id: 1 },
        ClientMsg::Text { call_id: 1, id: 1, body: "Hello, I would like to open an account.\n你好 é\t!".into() },
        ClientMsg::TextAck { call_id: 1, id: 1 },
        ClientMsg::KeyframeRequest { call_id: 2 },
        ClientMsg::RateHint { call_id: 2, bitrate_bps: 420_000 },
        ClientMsg::LossReport { call_id: 2, audio_loss_pct: 18 },
        ClientMsg::Health(KioskHealth {
            state: "connected".into(),
            problems: vec!["camera: /dev/video0: no such device".into()],
            rtt_ms: 23,
            sent_packets: 10_000,
            lost_packets: 12,
        }),
        ClientMsg::Renew { csr: CSR.into() },
    ]
}

fn hub_msgs() -> Vec<HubMsg> {
    vec![
        HubMsg::Welcome { id: "branch-1/kiosk-1".into(), role: Role::Kiosk },
        HubMsg::Queued { call_id: 4, position: 2, estimated_wait_s: Some(90) },
        HubMsg::Queued { call_id: 4, position: 1, estimated_wait_s: None },
        HubMsg::Busy { retry_after_s: 30 },
        HubMsg::Ringing { call_id: 4 },
        HubMsg::Offer { call_id: 4, kiosk: "branch-1/kiosk-1".into(), waited_ms: 1200, timeout_ms: 20_000 },
        HubMsg::OfferWithdrawn { call_id: 4, reason: WithdrawReason::CallerAway },
        HubMsg::Connected { call_id: 4, peer: "agent-1".into(), recorded: true },
        HubMsg::PeerPresence { call_id: 4, present: false },
        HubMsg::CallEnded { call_id: 4, reason: EndReason::AgentHungUp },
        HubMsg::Room { state: RoomState::WrapUp },
        HubMsg::Text { call_id: 4, id: 2, body: "Good morning, this is agent-1.".into() },
        HubMsg::TextAck { call_id: 4, id: 2 },
        HubMsg::KeyframeRequest { call_id: 4 },
        HubMsg::RateHint { call_id: 4, bitrate_bps: 300_000 },
        HubMsg::LossReport { call_id: 4, audio_loss_pct: 5 },
        HubMsg::Error { message: "text too long".into(), fatal: false },
        HubMsg::Renewed { chain: CHAIN.into() },
        HubMsg::RenewRefused { reason: "no renewal CA at this hub".into() },
        HubMsg::MoveTo { call_id: 4, address: "hub-b.bank.example:4433".into() },
    ]
}

fn control(out: &Path) {
    let (clients, hubs) = (client_msgs(), hub_msgs());
    for m in &clients {
        write(out, "control_frame", &format!("client-{}", m.kind()), &frame(m));
    }
    for m in &hubs {
        write(out, "control_frame", &format!("hub-{}", m.kind()), &frame(m));
    }
    // Bare bodies (the target also frames its input) and edge cases.
    write(out, "control_frame", "body-accept", br#"{"type":"accept","call_id":5,"future_field":[1,2]}"#);
    write(out, "control_frame", "body-unknown", br#"{"type":"launch_missiles"}"#);
    write(out, "control_frame", "too-long", &[1, 0xff, 0xff, 0xff, 0xff]);
    write(out, "control_frame", "version-2", &[2, 0, 0, 0, 2, b'{', b'}']);

    // Streams: the head byte (bit 0: hub messages) then frames back to back.
    let stream = |head: u8, frames: Vec<Vec<u8>>| {
        let mut s = vec![head];
        for f in frames {
            s.extend(f);
        }
        s
    };
    let mut texts: Vec<Vec<u8>> = clients.iter().map(frame).collect();
    for id in [2, 3, 2, 5, 4, 1] {
        texts.push(frame(&ClientMsg::Text { call_id: 1, id, body: format!("text {id}") }));
    }
    write(out, "control_stream", "client-all", &stream(0x00, texts.clone()));
    write(out, "control_stream", "client-all-chunks", &stream(0x5a, texts.clone()));
    write(out, "control_stream", "hub-all", &stream(0x01, hubs.iter().map(frame).collect()));
    let mut torn = stream(0x23, texts[..4].to_vec());
    let last = frame(&ClientMsg::Accept { call_id: 9 });
    torn.extend_from_slice(&last[..last.len() - 3]);
    write(out, "control_stream", "client-torn", &torn);
    let mut bad = stream(0x07, hubs[..3].iter().map(frame).collect());
    bad.extend_from_slice(&[3, 0, 0, 0, 0]);
    write(out, "control_stream", "hub-bad-version", &bad);
}

/// Real encoded media from the project's encoders.
struct Media {
    /// (keyframe, access unit) at 96×64, 8 frames with a keyframe at 0 and 6.
    video: Vec<(bool, Vec<u8>)>,
    /// 20 ms Opus packets of a tone, then of silence.
    audio: Vec<Vec<u8>>,
}

impl Media {
    fn new() -> Self {
        let settings = VideoSettings { width: 96, height: 64, bitrate_bps: 200_000, ..VideoSettings::default() };
        let mut enc = VideoEncoder::new(settings).expect("video encoder");
        let mut video = Vec::new();
        for n in 0..8u32 {
            if n == 6 {
                enc.request_keyframe();
            }
            let mut pic = Picture::black(96, 64, 0);
            for (i, px) in pic.data.iter_mut().take(96 * 64).enumerate() {
                *px = ((i as u32 % 96 + n * 5) % 200 + 16) as u8;
            }
            if let Some(f) = enc.encode(&pic).expect("encode") {
                video.push((f.keyframe, f.data));
            }
        }
        let mut aenc = AudioEncoder::new(AudioSettings::default()).expect("audio encoder");
        let mut audio = Vec::new();
        for n in 0..6 {
            let samples: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (n * FRAME_SAMPLES + i) as f64 / 48_000.0;
                    if n < 4 { ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16 } else { 0 }
                })
                .collect();
            audio.push(aenc.encode(&samples).expect("opus"));
        }
        Self { video, audio }
    }
}

fn packet(kind: MediaKind, keyframe: bool, seq: u32, captured_us: u64, payload: &[u8], copy: bool) -> Vec<u8> {
    let h = MediaHeader { kind, keyframe, seq, captured_us };
    let mut out = Vec::new();
    if copy { h.encode_copy(payload, &mut out) } else { h.encode(payload, &mut out) }.expect("header");
    out
}

fn media_packet(out: &Path, m: &Media) {
    let t = "media_packet";
    write(out, t, "audio", &packet(MediaKind::Audio, false, 7, T0, &m.audio[0], false));
    write(out, t, "audio-copy", &packet(MediaKind::Audio, false, u32::MAX, T0, &m.audio[1], true));
    write(out, t, "audio-empty", &packet(MediaKind::Audio, false, 0, 0, &[], false));
    write(out, t, "video-key", &packet(MediaKind::Video, true, 1, T0, &m.video[0].1, false));
    write(out, t, "video-p", &packet(MediaKind::Video, false, 2, T0 + 33_333, &m.video[1].1, false));
    let mut big = vec![1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    big.extend_from_slice(&[0x55; 1001]);
    write(out, t, "audio-too-long", &big);
    write(out, t, "short", &[1, 2, 1, 0, 0, 0]);
}

fn audio_jitter(out: &Path) {
    use kioskd_fuzz::audio_ops::*;
    let t = "audio_jitter";
    // Steady 20 ms packets with a little jitter, a speaker slot after each.
    let mut w = Writer::default();
    for n in 0..60 {
        w.u8(PACKET).u8(0).i8(if n == 0 { 0 } else { 1 }).i16((n % 7) * 10).u16(2000).u8(60);
        w.u8(POLL).u8(0);
    }
    write(out, t, "steady", &w.out);
    // Reordered, lost, duplicated and late packets, and the clock stepping back.
    let mut w = Writer::default();
    for (n, delta) in [0i8, 1, 2, -1, 3, 3, 5, 1, -4, 2, 1, 1, 10, -3, 1].iter().enumerate() {
        w.u8(PACKET).u8(0).i8(*delta).i16(if n % 3 == 0 { 300 } else { 0 }).u16(1500 + n as u16 * 97).u8(80);
        w.u8(POLL).u8(50);
        if n % 4 == 0 {
            w.u8(PEEK | 4).i8(1).u16(500);
        }
    }
    write(out, t, "reorder-loss", &w.out);
    // Seqs wrapping past u32::MAX, then a sender restart and an oversized packet.
    let mut w = Writer::default();
    w.u8(PACKET).u8(0x80).u32(u32::MAX - 3).i16(0).u16(2000).u8(40);
    for _ in 0..8 {
        w.u8(PACKET).u8(0).i8(1).i16(0).u16(2000).u8(40).u8(POLL).u8(50);
    }
    w.u8(PACKET).u8(0xC0).u32(12).u64(T0 + 99_000_000).u16(2000).u8(40);
    w.u8(PACKET).u8(0x20).i8(1).i16(0).u16(2000).u8(10);
    for _ in 0..60 {
        w.u8(POLL).u8(50);
    }
    write(out, t, "wrap-restart-pause", &w.out);
}

fn video_reorder(out: &Path) {
    let t = "video_reorder";
    let mut w = Writer::default();
    w.u8(0x40).i8(0).u16(3333);
    for _ in 0..20 {
        w.u8(0).i8(1).u16(3333);
    }
    write(out, t, "in-order", &w.out);
    let mut w = Writer::default();
    w.u8(0x40).i8(0).u16(3333);
    for d in [2i8, 1, 1, -3, 4, 1, 1, 1, 1, 1, 1, 1, 1, -9, 12] {
        w.u8(0).i8(d).u16(3333);
    }
    w.u8(3).u16(2000).u8(0x40).i8(3).u16(100).u8(3).u16(60_000);
    write(out, t, "overtaken-missing-keyframe", &w.out);
    let mut w = Writer::default();
    w.u8(0xC0).u32(u32::MAX - 1).u16(3333).u8(0).i8(2).u16(3333).u8(0).i8(-1).u16(3333);
    write(out, t, "wrap", &w.out);
}

fn video_playout(out: &Path) {
    use kioskd_fuzz::playout_ops::*;
    let t = "video_playout";
    let mut w = Writer::default();
    w.u8(AUDIO_DELAY).u32(60_000);
    for n in 0..40u8 {
        let key = if n % 30 == 0 { 0x40 } else { 0 };
        w.u8(FRAME | key).i8(if n == 0 { 0 } else { 1 }).i16((n % 5) as i16 * 20).u16(3333).u8(2);
        w.u8(POLL).u16(500);
    }
    write(out, t, "steady", &w.out);
    let mut w = Writer::default();
    w.u8(FRAME | 0x40).i8(0).i16(0).u16(3333).u8(2);
    for (d, outcome) in [(1i8, 2u8), (2, 2), (1, 2), (1, 0), (1, 2), (-2, 2), (1, 1)] {
        w.u8(FRAME).i8(d).i16(0).u16(3333).u8(outcome).u8(POLL).u16(2000);
    }
    w.u8(FRAME | 0x40).i8(1).i16(0).u16(40_000).u8(2).u8(POLL).u16(30_000);
    w.u8(FRAME | 0x80 | 0x20).u32(5).u64(1).u16(100).u8(2);
    write(out, t, "gap-error-restart", &w.out);
}

fn recorder(out: &Path, m: &Media) {
    let t = "recorder";
    // Two parties, 40 ms video and 20 ms audio, clocks skewed; the output taken now and then.
    let call = |lose: Option<usize>| {
        let mut w = Writer::default();
        for step in 0..24usize {
            for (party, skew) in [(0u8, -1500i16), (rec::AGENT, 900)] {
                w.u8(rec::PACKET).u8(party).i8(if step == 0 { 0 } else { 1 }).i16(skew).u16(500);
                let a = &m.audio[step % m.audio.len()];
                w.u16(a.len() as u16).bytes(a);
                if step % 2 == 0 {
                    let n = (step / 2) % m.video.len();
                    let (key, au) = &m.video[n];
                    if lose == Some(step) && party == 0 {
                        continue;
                    }
                    let flags = party | rec::VIDEO | if *key { rec::KEYFRAME } else { 0 };
                    w.u8(rec::PACKET).u8(flags).i8(if step == 0 { 0 } else { 1 }).i16(skew).u16(300);
                    w.u16(au.len() as u16).bytes(au);
                }
            }
            w.u8(rec::TICK).u16(100);
            if step % 5 == 0 {
                w.u8(rec::TAKE);
            }
        }
        w.out
    };
    write(out, t, "call", &call(None));
    write(out, t, "call-lost-frame", &call(Some(6)));
    // Garbage, then one party's audio only past the header wait.
    let mut w = Writer::default();
    w.u8(rec::RAW).u8(0).u16(10).u16(3).bytes(&[1, 2, 3]);
    for step in 0..10 {
        w.u8(rec::PACKET).u8(0).i8(if step == 3 { -1 } else { 1 }).i16(0).u16(2000);
        w.u16(m.audio[0].len() as u16).bytes(&m.audio[0]);
    }
    w.u8(rec::TICK).u16(40_000).u8(rec::TAKE);
    write(out, t, "audio-only", &w.out);
}

fn h264(out: &Path, m: &Media) {
    write(out, "h264_nal", "keyframe", &m.video[0].1);
    write(out, "h264_nal", "p-frame", &m.video[1].1);
    write(out, "h264_nal", "mixed-start-codes", &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 4, 5]);
    let mut w = Writer::default();
    for (_, au) in &m.video {
        w.u16(au.len() as u16).bytes(au);
    }
    write(out, "h264_decode", "gop", &w.out);
    let mut w = Writer::default();
    w.u16(m.video[0].1.len() as u16).bytes(&m.video[0].1);
    write(out, "h264_decode", "keyframe", &w.out);
    let mut w = Writer::default();
    for (_, au) in m.video.iter().skip(1).take(3) {
        w.u16(au.len() as u16).bytes(au);
    }
    write(out, "h264_decode", "no-keyframe", &w.out);
}

fn opus(out: &Path, m: &Media) {
    let mut w = Writer::default();
    for (n, p) in m.audio.iter().enumerate() {
        match n {
            2 => w.u8(opus_ops::CONCEAL),
            3 => w.u8(opus_ops::FEC).u16(p.len() as u16).bytes(p),
            _ => w.u8(opus_ops::DECODE).u16(p.len() as u16).bytes(p),
        };
    }
    write(out, "opus_decode", "tone-loss-silence", &w.out);
    let mut w = Writer::default();
    w.u8(opus_ops::DECODE).u16(m.audio[0].len() as u16).bytes(&m.audio[0]);
    write(out, "opus_decode", "one", &w.out);
}

fn config(out: &Path, root: &Path) {
    let files = [
        "board/kiosk.example.toml",
        "board/kiosk.simulated.toml",
        "board/generic/kiosk.toml",
        "board/rpi4/kiosk.toml",
        "board/rpi5/kiosk.toml",
        "docs/hub.example.toml",
        "docs/agent.example.toml",
        "lang/en.toml",
        "lang/zh.toml",
    ];
    // Without their comments and blank lines: the keys and values are what the checks read, and
    // a seed a quarter of the size is fuzzed four times as fast. One keeps its comments.
    for f in files {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let bare: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        write(out, "config_toml", &f.replace('/', "-"), bare.as_bytes());
    }
    let commented = std::fs::read(root.join("docs/hub.example.toml")).expect("docs/hub.example.toml");
    write(out, "config_toml", "docs-hub.example-commented.toml", &commented);
}

fn event_log(out: &Path) {
    let rec = |ts_ms: u64, event: Event, call_id: Option<u64>, detail: Option<&str>| EventRecord {
        ts_ms,
        event,
        call_id,
        kiosk: call_id.map(|c| format!("branch-1/kiosk-{c}")),
        agent: matches!(event, Event::Offered | Event::Connected | Event::Ended).then(|| "agent-1".into()),
        detail: detail.map(str::to_string),
        position: (event == Event::Queued).then_some(1),
        moved: None,
    };
    let records = [
        rec(1_700_000_000_000, Event::HubStarted, None, None),
        rec(1_700_000_001_000, Event::AgentOnline, None, None),
        rec(1_700_000_001_500, Event::AgentState, None, Some("IDLE")),
        rec(1_700_000_002_000, Event::Queued, Some(1), None),
        rec(1_700_000_002_100, Event::Offered, Some(1), None),
        rec(1_700_000_003_000, Event::Connected, Some(1), None),
        rec(1_700_000_003_100, Event::RecordingStarted, Some(1), Some("/var/lib/kioskd/call-1.mkv")),
        rec(1_700_000_004_000, Event::Queued, Some(2), None),
        rec(1_700_000_005_000, Event::Abandoned, Some(2), Some("kiosk_hung_up")),
        rec(1_700_000_063_000, Event::Ended, Some(1), Some("agent_hung_up")),
        rec(1_700_000_070_000, Event::Queued, Some(3), None),
        rec(1_700_000_071_000, Event::CertificateRenewed, None, Some("serial 1f until 2027-01-01")),
    ];
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).expect("record"));
        text.push('\n');
    }
    write(out, "event_log", "day", text.as_bytes());
    // A caller that moved from another hub (its place kept from there).
    let mut moved = rec(1_700_000_072_000, Event::Queued, Some(4), None);
    moved.moved = Some(Moved { hub: "hub-b".into(), call_id: 9, joined_ms: 1_700_000_060_000 });
    let line = serde_json::to_string(&moved).expect("record");
    write(out, "event_log", "moved-caller", format!("{text}{line}\n").as_bytes());
    text.push_str("{\"ts_ms\":17");
    write(out, "event_log", "torn-last-line", text.as_bytes());
}

/// A real renewal request and a real chain (as text and as DER blocks), a request for another
/// identity and a chain from another CA.
fn certificates(out: &Path) {
    use kioskd::edges::net::certs::Authority;
    use kioskd::edges::net::renew::request;
    use kioskd::edges::net::tls::Identity;
    use kioskd_fuzz::pem;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

    let root = Authority::generate("seed CA", 365).expect("a CA");
    let renewal = root.issue_renewal_ca("seed renewal CA", 365).expect("a renewal CA");
    let id = |id: &str| Identity { role: Role::Kiosk, id: id.into() };
    let der_blocks = |blocks: &[Vec<u8>]| {
        let mut w = Writer::default();
        for b in blocks {
            w.u16(b.len() as u16).bytes(b);
        }
        w.out
    };
    for (name, ident) in [("own", id("branch-1/kiosk-1")), ("other", id("branch-9/kiosk-9"))] {
        let csr = request(&ident).expect("a request").csr_pem;
        let csr_der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).expect("PEM");
        assert_eq!(pem("CERTIFICATE REQUEST", csr_der.as_ref()), csr, "the fuzzer's PEM is rcgen's");
        write(out, "certificates", &format!("csr-{name}-pem"), &[&[0u8][..], csr.as_bytes()].concat());
        write(out, "certificates", &format!("csr-{name}-der"), &[vec![1u8], der_blocks(&[csr_der.to_vec()])].concat());
        let chain = renewal.renew(Role::Kiosk, &ident.id, &csr, 90).expect("renewed");
        let ders: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(|c| c.expect("PEM").to_vec())
            .collect();
        write(out, "certificates", &format!("chain-{name}-pem"), &[&[2u8][..], chain.as_bytes()].concat());
        write(out, "certificates", &format!("chain-{name}-der"), &[vec![3u8], der_blocks(&ders)].concat());
    }
}
