//! `kioskd doctor`: what hardware this board has, whether the devices the configuration names
//! work, whether the certificates are good, and whether the hub answers.
//!
//! Prints a readable report and returns the list of failures; `main` exits non-zero when it
//! is not empty. Run it on a kiosk with the daemon stopped (devices in use show as busy).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::UnixTime;

use crate::edges::config::{ButtonBackend, KioskConfig};
use crate::edges::devices::audio::list_pcm_devices;
use crate::edges::devices::buttons::gpio_cdev::GpioButtons;
use crate::edges::devices::camera::list_cameras;
use crate::edges::devices::camera::v4l2::CameraSize;
use crate::edges::net::tls::{TlsMaterial, client_config, identity_from_cert};
use crate::edges::session::devices_from_config;

/// Certificates expiring within this many days are reported.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The doctor's findings.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}", s.as_ref());
    }
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        self.line(format!("  ok    {what}: {}", detail.as_ref()));
    }
    fn fail(&mut self, what: &str, detail: impl AsRef<str>) {
        self.line(format!("  FAIL  {what}: {}", detail.as_ref()));
        self.failures.push(format!("{what}: {}", detail.as_ref()));
    }
    fn warn(&mut self, what: &str, detail: impl AsRef<str>) {
        self.line(format!("  warn  {what}: {}", detail.as_ref()));
        self.warnings.push(format!("{what}: {}", detail.as_ref()));
    }
}

/// Lists the hardware found on this machine.
pub fn inventory(r: &mut Report) {
    r.line("Cameras (V4L2):");
    let cams = list_cameras();
    if cams.is_empty() {
        r.line("  none found");
    }
    for c in cams {
        r.line(format!("  {}  {} ({})", c.path.display(), c.card, c.driver));
        for f in c.formats {
            let sizes: Vec<String> = f
                .sizes
                .iter()
                .take(8)
                .map(|s| match s {
                    CameraSize::Discrete { width, height } => format!("{width}x{height}"),
                    other => format!("{other:?}"),
                })
                .collect();
            r.line(format!("      {} {}: {}", f.fourcc, f.description, sizes.join(" ")));
        }
    }
    r.line("Sound devices (ALSA):");
    let pcms = list_pcm_devices();
    if pcms.is_empty() {
        r.line("  none found");
    }
    for p in pcms {
        let dir = match (p.capture, p.playback) {
            (true, true) => "capture+playback",
            (true, false) => "capture",
            (false, true) => "playback",
            (false, false) => "-",
        };
        r.line(format!("  {:<40} {dir:<17} {}", p.name, p.description));
    }
    r.line("GPIO chips:");
    match gpiocdev::chip::chips() {
        Ok(chips) if chips.is_empty() => r.line("  none found"),
        Ok(chips) => {
            for path in chips {
                match gpiocdev::chip::Chip::from_path(&path).and_then(|c| Ok((c.info()?, c))) {
                    Ok((info, chip)) => {
                        r.line(format!("  {}  {} ({} lines)", path.display(), info.label, info.num_lines));
                        for offset in 0..info.num_lines.min(64) {
                            if let Ok(li) = chip.line_info(offset)
                                && (!li.name.is_empty() || !li.consumer.is_empty())
                            {
                                r.line(format!("      line {offset:>3} {:<20} {}", li.name, li.consumer));
                            }
                        }
                    }
                    Err(e) => r.line(format!("  {}  cannot read: {e}", path.display())),
                }
            }
        }
        Err(e) => r.line(format!("  cannot list: {e}")),
    }
}

/// Checks a certificate file and its chain against the CA.
pub fn check_certificates(r: &mut Report, tls: &TlsMaterial, now_unix: i64) {
    for (what, cert) in [("CA certificate", tls.ca.first()), ("certificate", tls.chain.first())] {
        let Some(cert) = cert else {
            r.fail(what, "missing");
            continue;
        };
        match x509_parser::parse_x509_certificate(cert) {
            Ok((_, c)) => {
                let (from, until) = (c.validity().not_before.timestamp(), c.validity().not_after.timestamp());
                let days = (until - now_unix) / 86_400;
                if now_unix < from {
                    r.fail(what, "not valid yet (is the clock right?)");
                } else if now_unix > until {
                    r.fail(what, "expired");
                } else if days < EXPIRY_WARNING_DAYS {
                    r.warn(what, format!("expires in {days} days"));
                } else {
                    r.ok(what, format!("valid for {days} more days"));
                }
            }
            Err(e) => r.fail(what, format!("cannot be parsed: {e}")),
        }
    }
    match tls.identity() {
        Ok(id) => r.ok("identity", format!("{} `{}`", id.role, id.id)),
        Err(e) => r.fail("identity", e.to_string()),
    }
    // The chain: verified the way the hub will verify it.
    let mut roots = rustls::RootCertStore::empty();
    for c in &tls.ca {
        let _ = roots.add(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verdict = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())
        .and_then(|v| match tls.chain.split_first() {
            Some((leaf, rest)) => v
                .verify_client_cert(
                    leaf,
                    rest,
                    UnixTime::since_unix_epoch(Duration::from_secs(now_unix.max(0) as u64)),
                )
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Err("no certificate".into()),
        });
    match verdict {
        Ok(()) => r.ok("chain", "signed by the configured CA"),
        Err(e) => r.fail("chain", e),
    }
    if let Some(leaf) = tls.chain.first()
        && identity_from_cert(leaf).is_err()
    {
        r.fail("certificate", "no kioskd role or id");
    }
}

/// Checks the devices a kiosk configuration names.
pub fn check_devices(r: &mut Report, cfg: &KioskConfig) {
    let b = &cfg.buttons;
    match b.backend {
        ButtonBackend::GpioCdev => {
            match GpioButtons::open(b.chip.clone(), b.call, b.hangup, b.active_low, b.bias) {
                Ok(_) => r.ok("buttons", format!("{} lines {} and {}", b.chip.display(), b.call, b.hangup)),
                Err(e) => r.fail("buttons", e.to_string()),
            }
        }
        ButtonBackend::Rppal => {
            r.line("  skip  buttons: Raspberry Pi GPIO is checked when the daemon starts")
        }
        ButtonBackend::Simulated => r.ok("buttons", format!("simulated ({})", b.input)),
    }
    let (_, _, problems) = devices_from_config(&cfg.media());
    let media = cfg.media();
    if problems.is_empty() {
        r.ok(
            "media devices",
            format!(
                "camera {:?}, capture {:?}, playback {:?}",
                media.camera.backend, media.audio.capture, media.audio.playback
            ),
        );
    }
    for p in problems {
        let (what, detail) = p.split_once(": ").unwrap_or(("device", p.as_str()));
        r.fail(what, detail);
    }
}

/// Runs the microphone's processing as configured (`[audio.processing]`) on one second of
/// speech through a synthetic enclosure; and reports a processing failure the running daemon
/// wrote to its health file.
pub fn check_processing(r: &mut Report, cfg: &KioskConfig) {
    use crate::media::processing::AudioProcessor;
    use crate::media::room::{Room, RoomConfig, level_dbfs, voice};
    let what = "audio processing";
    let config = cfg.audio.processing;
    if !config.any() {
        r.warn(what, "off: the advisor hears the kiosk's speaker back and the hall's noise");
    } else {
        let mut p = AudioProcessor::new(config);
        let mut room = Room::new(RoomConfig::default());
        let far = voice(2 * 48_000, 120.0, -20.0, 1);
        let (mut mic_level, mut out_level) = (Vec::new(), Vec::new());
        for f in far.chunks_exact(crate::media::FRAME_SAMPLES) {
            room.play(f);
            p.render(f);
            let mut mic = room.microphone(&[0; crate::media::FRAME_SAMPLES]);
            mic_level.extend(mic.iter().map(|&s| f32::from(s)));
            p.capture(&mut mic);
            out_level.extend(mic.iter().map(|&s| f32::from(s)));
        }
        match p.failure() {
            Some(f) => r.fail(what, f),
            None => {
                let half = mic_level.len() / 2;
                let reduced = level_dbfs(&mic_level[half..]) - level_dbfs(&out_level[half..]);
                r.ok(what, format!("{} (a test echo reduced by {reduced:.0} dB)", config.describe()));
            }
        }
    }
    if let Ok(h) = crate::edges::health::Health::read(&cfg.health_file) {
        for p in h.problems.iter().filter(|p| p.starts_with("audio processing")) {
            r.fail(what, format!("the daemon reports: {p}"));
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// What the running daemon wrote of its certificate's renewal.
pub fn check_renewal(r: &mut Report, cfg: &KioskConfig) {
    let what = "certificate renewal";
    if cfg.tls.renew_before_days == 0 {
        return r.warn(what, "off (tls.renew_before_days = 0): the certificate must be replaced by hand");
    }
    let Ok(h) = crate::edges::health::Health::read(&cfg.health_file) else {
        return r.line(format!("  skip  {what}: the daemon is not running (no health file)"));
    };
    match h.certificate {
        Some(c) if c.renewal_error.is_some() => r.warn(
            what,
            format!(
                "failed {} time(s), retried every {} s: {}",
                c.renewal_failures,
                cfg.tls.renew_retry_s,
                c.renewal_error.unwrap_or_default()
            ),
        ),
        Some(c) => r.ok(
            what,
            format!(
                "{} days before expiry ({} renewed since the daemon started)",
                cfg.tls.renew_before_days, c.renewed
            ),
        ),
        None => r.ok(what, format!("{} days before expiry", cfg.tls.renew_before_days)),
    }
}

/// Connects to each hub with the kiosk's certificate, TLS handshake only: proves the hubs
/// answer and accept this certificate, without disturbing a running daemon's session. With
/// several hubs, one that does not answer is a warning while another does (the kiosk fails
/// over), a failure when none does.
pub async fn check_hub(r: &mut Report, cfg: &KioskConfig, tls: &TlsMaterial) {
    let what = "hub";
    let client = match client_config(tls) {
        Ok(c) => c,
        Err(e) => return r.fail(what, e.to_string()),
    };
    let addrs = match crate::edges::net::client::resolve_all(&cfg.hub.all()).await {
        Ok(a) => a,
        Err(e) => return r.fail(what, e.to_string()),
    };
    let mut eps = crate::edges::net::client::Endpoints::new(client);
    let mut failed = Vec::new();
    let several = addrs.len() > 1;
    for addr in &addrs {
        let name = if several { format!("hub {addr}") } else { what.to_string() };
        let ep = match eps.for_addr(*addr) {
            Ok(ep) => ep,
            Err(e) => {
                failed.push((name, e.to_string()));
                continue;
            }
        };
        let attempt = async {
            ep.connect(*addr, &cfg.hub.server_name())
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(conn)) => {
                let rtt = conn.rtt();
                if let Some(until) = crate::edges::net::tls::peer_not_after(&conn) {
                    let days = (until - now_unix()).div_euclid(86_400);
                    let cert = format!("{name} certificate");
                    if days < EXPIRY_WARNING_DAYS {
                        r.warn(&cert, format!("expires in {days} days"));
                    } else {
                        r.ok(&cert, format!("valid for {days} more days"));
                    }
                }
                conn.close(quinn::VarInt::from_u32(crate::edges::net::close_code::NORMAL), b"doctor");
                r.ok(
                    &name,
                    format!("{addr} answered (TLS 1.3, round trip {:.1} ms)", rtt.as_secs_f64() * 1000.0),
                );
            }
            Ok(Err(e)) => failed.push((name, format!("{addr}: {e}"))),
            Err(_) => failed.push((name, format!("{addr}: no answer within 5 s"))),
        }
    }
    let all_failed = failed.len() == addrs.len();
    for (name, msg) in failed {
        if all_failed {
            r.fail(&name, msg);
        } else {
            r.warn(&name, format!("{msg} (the kiosk uses the other hubs)"));
        }
    }
    eps.wait_idle().await;
}

/// The whole check for a kiosk configuration file.
pub async fn run(config: &Path) -> Report {
    let mut r = Report::default();
    r.line(format!("kioskd doctor — {}", env!("CARGO_PKG_VERSION")));
    inventory(&mut r);
    r.line(format!("Configuration {}:", config.display()));
    let cfg: KioskConfig = match crate::edges::config::load(config) {
        Ok(c) => c,
        Err(e) => {
            r.fail("configuration", e.to_string());
            return r;
        }
    };
    match KioskConfig::load(config) {
        Ok((_, tls)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            check_certificates(&mut r, &tls, now);
            check_devices(&mut r, &cfg);
            check_processing(&mut r, &cfg);
            check_renewal(&mut r, &cfg);
            check_hub(&mut r, &cfg, &tls).await;
        }
        Err(e) => {
            r.fail("configuration", e.to_string());
            check_devices(&mut r, &cfg);
            check_processing(&mut r, &cfg);
        }
    }
    r
}
