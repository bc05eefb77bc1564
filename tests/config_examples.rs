//! The example configurations shipped in `docs/` and `board/` parse, document the real
//! defaults, and a misspelt key is refused by name.

use std::path::{Path, PathBuf};

use kioskd::edges::config::{
    AgentConfig, AudioSection, ButtonBackend, CameraBackend, CameraSection, CaptureBackend, HubConfig,
    HubQueueConfig, KioskCallConfig, KioskConfig, LimitsSection, MediaSections, PlaybackBackend,
    ScreenBackend, VideoSection, parse,
};

fn example(rel: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

/// Turns optional keys and sections that are commented out (`#key = …`, `#[section]`: a `#`
/// directly followed by a letter or `[`) into live ones. Prose comments start with `# `.
fn uncomment_optional(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The media keys an example writes, all but the device backends, are the code's defaults.
fn assert_media_defaults(file: &str, m: &MediaSections) {
    let (c, d) = (&m.camera, CameraSection::default());
    assert_eq!(c.device, d.device, "{file}: camera.device");
    assert_eq!((c.width, c.height), (d.width, d.height), "{file}: camera.width/height");
    assert_eq!(c.fps, d.fps, "{file}: camera.fps");
    assert_eq!(c.format, d.format, "{file}: camera.format");
    let (a, d) = (&m.audio, AudioSection::default());
    assert_eq!(a.capture_device, d.capture_device, "{file}: audio.capture_device");
    assert_eq!(a.playback_device, d.playback_device, "{file}: audio.playback_device");
    assert_eq!(a.period_ms, d.period_ms, "{file}: audio.period_ms");
    assert_eq!(a.tone_hz, d.tone_hz, "{file}: audio.tone_hz");
    assert_eq!(a.wav_path, d.wav_path, "{file}: audio.wav_path");
    assert_eq!(a.bitrate_kbps, d.bitrate_kbps, "{file}: audio.bitrate_kbps");
    assert_eq!(a.fec, d.fec, "{file}: audio.fec");
    assert_eq!(a.dtx, d.dtx, "{file}: audio.dtx");
    assert_eq!(a.processing, d.processing, "{file}: audio.processing");
    assert_eq!(m.screen.path, None, "{file}: screen.path");
    let d = kioskd::edges::config::ScreenSection::default();
    assert_eq!((m.screen.width, m.screen.height), (d.width, d.height), "{file}: screen.width/height");
    let (v, d) = (&m.video, VideoSection::default());
    assert_eq!(v.bitrate_kbps, d.bitrate_kbps, "{file}: video.bitrate_kbps");
    assert_eq!(v.keyframe_interval, d.keyframe_interval, "{file}: video.keyframe_interval");
}

#[test]
fn media_defaults_of_a_minimal_file_are_the_documented_ones() {
    // Without the sections: no devices, and every other key at the default the examples show.
    let minimal = "[hub]\naddress = \"hub.bank.example:4433\"\n\
                   [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
    let agent: AgentConfig = parse(Path::new("minimal.toml"), minimal).unwrap();
    let m = agent.media();
    assert_media_defaults("minimal.toml", &m);
    assert_eq!(m.camera.backend, CameraBackend::None);
    assert_eq!(m.audio.capture, CaptureBackend::None);
    assert_eq!(m.audio.playback, PlaybackBackend::None);
    assert_eq!(m.screen.backend, ScreenBackend::None);
    m.validate(Path::new("minimal.toml")).unwrap_or_else(|e| panic!("{e}"));

    // Empty sections give the same defaults as absent ones.
    let empty = format!("{minimal}[camera]\n[audio]\n[screen]\n[video]\n");
    let agent: AgentConfig = parse(Path::new("empty.toml"), &empty).unwrap();
    assert_media_defaults("empty.toml", &agent.media());
    assert_eq!(agent.camera.backend, CameraBackend::None);
}

#[test]
fn hub_example_parses_with_the_documented_defaults() {
    let (path, text) = example("docs/hub.example.toml");
    let cfg: HubConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen.port(), 4433);
    assert_eq!(cfg.event_log, Path::new("/var/lib/kioskd/events.jsonl"));
    assert_eq!(cfg.tls.ca, Path::new("/etc/kioskd/ca.pem"));
    let (q, d) = (&cfg.queue, HubQueueConfig::default());
    assert_eq!(q.max_queue, d.max_queue, "max_queue");
    assert_eq!(q.offer_timeout_s, d.offer_timeout_s, "offer_timeout_s");
    assert_eq!(q.wrap_up_s, d.wrap_up_s, "wrap_up_s");
    assert_eq!(q.kiosk_grace_s, d.kiosk_grace_s, "kiosk_grace_s");
    assert_eq!(q.default_handle_time_s, d.default_handle_time_s, "default_handle_time_s");
    assert_eq!(q.busy_retry_after_s, d.busy_retry_after_s, "busy_retry_after_s");
    assert_eq!(cfg.metrics_listen, None, "metrics are off unless metrics_listen is set");
    let (l, d) = (&cfg.limits, LimitsSection::default());
    assert_eq!(l.handshakes_per_second, d.handshakes_per_second, "limits.handshakes_per_second");
    assert_eq!(l.pending_handshakes, d.pending_handshakes, "limits.pending_handshakes");
    assert_eq!(l.connections_per_address, d.connections_per_address, "limits.connections_per_address");
    assert_eq!(l.call_requests_per_minute, d.call_requests_per_minute, "limits.call_requests_per_minute");
    assert_eq!(l.texts_per_minute, d.texts_per_minute, "limits.texts_per_minute");

    assert!(!cfg.recording.enabled && cfg.recording.options().is_none(), "recording is off by default");

    let full: HubConfig = parse(&path, &uncomment_optional(&text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(full.metrics_listen, Some("127.0.0.1:9464".parse::<std::net::SocketAddr>().unwrap()));
    assert_eq!(full.recording.dir.as_deref(), Some(Path::new("/var/lib/kioskd/recordings")));
    assert_eq!(full.recording.retention_days, Some(90));
}

#[test]
fn agent_example_parses_with_and_without_optional_keys() {
    let (path, text) = example("docs/agent.example.toml");
    let cfg: AgentConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.hub.server_name(), "hub.bank.example");
    // A desk with a V4L2 camera and ALSA sound, no screen; every other media key at its default.
    let m = cfg.media();
    assert_eq!(m.camera.backend, CameraBackend::V4l2);
    assert_eq!(m.audio.capture, CaptureBackend::Alsa);
    assert_eq!(m.audio.playback, PlaybackBackend::Alsa);
    assert_eq!(m.screen.backend, ScreenBackend::None);
    assert_media_defaults("agent.example.toml", &m);
    m.validate(&path).unwrap_or_else(|e| panic!("{e}"));

    let full_text = uncomment_optional(&text);
    let full: AgentConfig = parse(&path, &full_text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(full.hub.server_name.as_deref(), Some("hub.bank.example"));
    assert_eq!(full.audio.wav_path.as_deref(), Some(Path::new("/var/tmp/kioskd-kiosk.wav")));
    assert_eq!(full.screen.path.as_deref(), Some(Path::new("/var/tmp/kioskd-kiosk.y4m")));
    full.media().validate(&path).unwrap_or_else(|e| panic!("{e}"));

    // Recording the kiosk's picture and sound to files, as the example's comment says.
    let rec = full_text.replacen("backend = \"none\"", "backend = \"y4m\"", 1);
    let rec = rec.replacen("playback = \"alsa\"", "playback = \"wav\"", 1);
    let rec: AgentConfig = parse(&path, &rec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.screen.backend, ScreenBackend::Y4m);
    assert_eq!(rec.audio.playback, PlaybackBackend::Wav);
    rec.media().validate(&path).unwrap_or_else(|e| panic!("{e}"));

    // The files are required by those backends.
    let no_file = text.replacen("playback = \"alsa\"", "playback = \"wav\"", 1);
    let no_file: AgentConfig = parse(&path, &no_file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(no_file.media().validate(&path).unwrap_err().key, "audio.wav_path");
    let no_file = text.replacen("backend = \"none\"", "backend = \"y4m\"", 1);
    let no_file: AgentConfig = parse(&path, &no_file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(no_file.media().validate(&path).unwrap_err().key, "screen.path");
}

#[test]
fn kiosk_example_parses_with_the_documented_defaults() {
    let (path, text) = example("board/kiosk.example.toml");
    let cfg: KioskConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.buttons.backend, ButtonBackend::GpioCdev);
    assert!(cfg.leds.is_none());

    // The values written in the example are the defaults of a minimal file.
    let minimal = "[hub]\naddress = \"hub.bank.example:4433\"\n\
                   [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
                   [buttons]\nbackend = \"gpio-cdev\"\n";
    let min: KioskConfig = parse(Path::new("minimal.toml"), minimal).unwrap();
    let (b, m) = (&cfg.buttons, &min.buttons);
    assert_eq!(b.chip, m.chip, "buttons.chip");
    assert_eq!((b.call, b.hangup), (m.call, m.hangup), "buttons.call/hangup");
    assert_eq!(b.active_low, m.active_low, "buttons.active_low");
    assert_eq!(b.bias, m.bias, "buttons.bias");
    assert_eq!(b.debounce_ms, m.debounce_ms, "buttons.debounce_ms");
    assert_eq!(b.input, m.input, "buttons.input");
    let (c, d) = (&cfg.call, KioskCallConfig::default());
    assert_eq!(c.ended_screen_s, d.ended_screen_s, "call.ended_screen_s");
    assert_eq!(c.busy_screen_s, d.busy_screen_s, "call.busy_screen_s");
    assert_eq!(c.reconnect_min_ms, d.reconnect_min_ms, "call.reconnect_min_ms");
    assert_eq!(c.reconnect_max_ms, d.reconnect_max_ms, "call.reconnect_max_ms");
    assert_eq!(c.recording_notice, d.recording_notice, "call.recording_notice");
    let (u, d) = (&cfg.ui, kioskd::edges::config::UiSection::default());
    assert_eq!(u.language, d.language, "ui.language");
    assert_eq!((&u.branch, &u.opening_hours), (&d.branch, &d.opening_hours), "ui.branch/opening_hours");
    assert_eq!(min.ui.language, d.language, "ui.language of a minimal file");

    // A board: V4L2 camera, ALSA sound, DRM screen; every other media key at its default.
    let m = cfg.media();
    assert_eq!(m.camera.backend, CameraBackend::V4l2);
    assert_eq!(m.audio.capture, CaptureBackend::Alsa);
    assert_eq!(m.audio.playback, PlaybackBackend::Alsa);
    assert_eq!(m.screen.backend, ScreenBackend::Drm);
    assert_media_defaults("kiosk.example.toml", &m);
    m.validate(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_media_defaults("minimal.toml", &min.media());

    // With the optional [leds] section, server_name, wav_path and screen.path switched on.
    let full: KioskConfig = parse(&path, &uncomment_optional(&text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(full.hub.server_name.as_deref(), Some("hub.bank.example"));
    assert!(full.audio.wav_path.is_some(), "audio.wav_path uncommented");
    assert_eq!(full.screen.path.as_deref(), Some(Path::new("/dev/dri/card0")));
    let language_file = full.ui.language_file.as_deref();
    assert_eq!(language_file, Some(Path::new("/etc/kioskd/lang/fr.toml")), "ui.language_file uncommented");
    full.media().validate(&path).unwrap_or_else(|e| panic!("{e}"));
    let leds = full.leds.expect("[leds] uncommented");
    assert_eq!((leds.call, leds.busy, leds.active_low), (22, 23, false));
    assert_eq!(leds.chip, Path::new("/dev/gpiochip0"));
}

#[test]
fn simulated_kiosk_parses() {
    let (path, text) = example("board/kiosk.simulated.toml");
    let cfg: KioskConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.buttons.backend, ButtonBackend::Simulated);
    assert_eq!(cfg.buttons.input, "stdin");
    assert_eq!(cfg.hub.server_name(), "localhost");

    // Synthetic camera and microphone; what the kiosk receives is written under /tmp.
    let m = cfg.media();
    assert_eq!(m.camera.backend, CameraBackend::Synthetic);
    assert_eq!(m.audio.capture, CaptureBackend::Synthetic);
    assert_eq!(m.audio.playback, PlaybackBackend::Wav);
    assert!(m.audio.wav_path.as_ref().is_some_and(|p| p.starts_with("/tmp")), "{:?}", m.audio.wav_path);
    assert_eq!(m.screen.backend, ScreenBackend::Y4m);
    assert!(m.screen.path.as_ref().is_some_and(|p| p.starts_with("/tmp")), "{:?}", m.screen.path);
    m.validate(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kiosk_load_names_a_misspelt_key() {
    let (_, text) = example("board/kiosk.example.toml");
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("kiosk.toml");
    let bad = text.replacen("debounce_ms = 50", "debounce_msec = 50", 1);
    assert_ne!(bad, text, "the example sets debounce_ms");
    std::fs::write(&file, bad).unwrap();
    let e = KioskConfig::load(&file).expect_err("a misspelt key must be refused");
    let shown = e.to_string();
    assert!(shown.contains("debounce_msec"), "{shown}");
    assert!(shown.contains("buttons"), "{shown}");
    assert!(shown.starts_with(&file.display().to_string()), "{shown}");

    let file = dir.path().join("kiosk-media.toml");
    let bad = text.replacen("keyframe_interval = 150", "keyframe_every = 150", 1);
    assert_ne!(bad, text, "the example sets video.keyframe_interval");
    std::fs::write(&file, bad).unwrap();
    let e = KioskConfig::load(&file).expect_err("a misspelt media key must be refused");
    assert!(e.to_string().contains("keyframe_every") && e.key.starts_with("video"), "{e}");

    let file = dir.path().join("kiosk-top.toml");
    std::fs::write(&file, format!("bogus_key = 1\n{text}")).unwrap();
    let e = KioskConfig::load(&file).expect_err("an unknown key must be refused");
    assert!(e.to_string().contains("bogus_key"), "{e}");
}

#[test]
fn hub_and_agent_load_name_a_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hub) = example("docs/hub.example.toml");
    let file = dir.path().join("hub.toml");
    std::fs::write(&file, hub.replacen("wrap_up_s = ", "wrapup_s = ", 1)).unwrap();
    let e = HubConfig::load(&file).expect_err("a misspelt key must be refused");
    assert!(e.to_string().contains("wrapup_s"), "{e}");

    let (_, agent) = example("docs/agent.example.toml");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, agent.replacen("address = ", "adress = ", 1)).unwrap();
    let e = AgentConfig::load(&file).expect_err("a misspelt key must be refused");
    assert!(e.to_string().contains("adress"), "{e}");
}

#[test]
fn a_hub_limit_of_zero_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hub) = example("docs/hub.example.toml");
    let file = dir.path().join("hub.toml");
    std::fs::write(&file, hub.replacen("texts_per_minute = 60", "texts_per_minute = 0", 1)).unwrap();
    let e = HubConfig::load(&file).expect_err("a zero limit must be refused");
    assert!(e.to_string().contains("limits.texts_per_minute"), "{e}");
}
