//! The configuration files: the same text read as the kiosk's, the hub's and the agent
//! console's configuration (`edges::config::parse`), with the checks that need no file or
//! device, and as a screen language file (`ui::Lang::parse`, `ui.language_file`).
//!
//! Properties: no panic; an error names a key and says something; what parses goes through
//! the value checks and the conversions the roles make (server name, call, queue, limit and
//! recording settings) without a panic; a language file that parses has every text, and
//! filling its placeholders does not panic.
#![no_main]

use std::path::Path;

use kioskd::edges::config::{AgentConfig, ConfigError, HubConfig, KioskConfig, parse};
use kioskd::ui::Lang;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/kioskd/fuzz.toml");
    match parse::<KioskConfig>(path, text) {
        Ok(k) => {
            let _ = k.hub.server_name();
            let _ = k.media().validate(path);
            let _ = k.call.call_config();
            let _ = k.ui.settings(k.call.recording_notice);
            if k.ui.language_file.is_none() {
                let _ = k.ui.lang(path);
            }
        }
        Err(e) => check_error(&e, path),
    }
    match parse::<HubConfig>(path, text) {
        Ok(h) => {
            let _ = h.queue_config();
            let _ = h.limits.admission();
            let _ = h.recording.options();
        }
        Err(e) => check_error(&e, path),
    }
    match parse::<AgentConfig>(path, text) {
        Ok(a) => {
            let _ = a.hub.server_name();
            let _ = a.media().validate(path);
        }
        Err(e) => check_error(&e, path),
    }
    if let Ok(lang) = Lang::parse(text) {
        for &key in kioskd::ui::lang::Key::ALL {
            let _ = lang.fill(key, &[("position", "3"), ("minutes", "4"), ("hours", "9-17"), ("name", "x")]);
        }
    }
});

fn check_error(e: &ConfigError, path: &Path) {
    assert_eq!(e.file, path);
    assert!(!e.key.is_empty(), "an error names a key: {e}");
    assert!(!e.message.is_empty() || e.key == "(syntax)", "an error says something: {e:?}");
}
