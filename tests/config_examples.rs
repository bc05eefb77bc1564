//! The example configurations shipped in `docs/` and `board/` parse, document the real
//! defaults, and a misspelt key is refused by name.

use std::path::{Path, PathBuf};

use kioskd::config::{
    AgentConfig, ButtonBackend, HubConfig, HubQueueConfig, KioskCallConfig, KioskConfig, parse,
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
}

#[test]
fn agent_example_parses_with_and_without_optional_keys() {
    let (path, text) = example("docs/agent.example.toml");
    let cfg: AgentConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.hub.server_name(), "hub.bank.example");
    let full: AgentConfig = parse(&path, &uncomment_optional(&text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(full.hub.server_name.as_deref(), Some("hub.bank.example"));
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

    // With the optional [leds] section and server_name switched on.
    let full: KioskConfig = parse(&path, &uncomment_optional(&text)).unwrap_or_else(|e| panic!("{e}"));
    let leds = full.leds.expect("[leds] uncommented");
    assert_eq!((leds.call, leds.busy, leds.active_low), (22, 23, false));
    assert_eq!(leds.chip, Path::new("/dev/gpiochip0"));
    assert_eq!(full.hub.server_name.as_deref(), Some("hub.bank.example"));
}

#[test]
fn simulated_kiosk_parses() {
    let (path, text) = example("board/kiosk.simulated.toml");
    let cfg: KioskConfig = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.buttons.backend, ButtonBackend::Simulated);
    assert_eq!(cfg.buttons.input, "stdin");
    assert_eq!(cfg.hub.server_name(), "localhost");
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
