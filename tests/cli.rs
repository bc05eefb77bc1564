//! The `kioskd` binary as a person uses it: certificates, configuration checks, the demo.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{Child, Lines, deployment};

fn kioskd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kioskd")).args(args).output().expect("kioskd runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn hub_toml(dir: &Path, extra: &str) -> std::path::PathBuf {
    let d = dir.display();
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nevent_log = \"{d}/events.jsonl\"\n{extra}\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/hub.test.pem\"\nkey = \"{d}/hub.test.key\"\n"
        ),
    )
    .expect("write");
    path
}

#[test]
fn certs_are_issued_with_private_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    for key in ["ca.key", "hub.test.key", "agent-1.key", "branch-1_kiosk-1.key"] {
        let mode = std::fs::metadata(dir.path().join(key)).expect(key).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = kioskd(&["certs", "init", "--dir", dir.path().to_str().expect("utf-8")]);
    assert!(!again.status.success(), "a CA is never overwritten");
}

#[test]
fn good_configs_check_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let hub = hub_toml(dir.path(), "");
    let o = kioskd(&["hub", "--config", hub.to_str().expect("utf-8"), "--check"]);
    assert!(o.status.success(), "{}", text(&o));

    let d = dir.path().display();
    let kiosk = dir.path().join("kiosk.toml");
    std::fs::write(
        &kiosk,
        format!(
            "[hub]\naddress = \"127.0.0.1:4433\"\nserver_name = \"localhost\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/branch-1_kiosk-1.pem\"\nkey = \"{d}/branch-1_kiosk-1.key\"\n[buttons]\nbackend = \"simulated\"\ninput = \"{d}/buttons.sock\"\n"
        ),
    )
    .expect("write");
    let o = kioskd(&["run", "--config", kiosk.to_str().expect("utf-8"), "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("branch-1/kiosk-1"), "{}", text(&o));
}

#[test]
fn bad_configs_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let cases = [
        ("[queue]\nmax_queue = \"lots\"", "queue.max_queue"),
        ("[queue]\noffer_timeout_s = 0", "queue.offer_timeout_s"),
        ("colour = \"blue\"", "colour"),
    ];
    for (extra, key) in cases {
        let path = hub_toml(dir.path(), extra);
        let o = kioskd(&["hub", "--config", path.to_str().expect("utf-8"), "--check"]);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", text(&o));
        let msg = text(&o);
        assert!(msg.contains("hub.toml") && msg.contains(key), "{extra}: {msg}");
    }
    // A missing certificate names tls.cert.
    let path = hub_toml(dir.path(), "");
    let body = std::fs::read_to_string(&path).expect("read").replace("hub.test.pem", "missing.pem");
    std::fs::write(&path, body).expect("write");
    let o = kioskd(&["hub", "--config", path.to_str().expect("utf-8"), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("tls.cert"), "{}", text(&o));
    // A kiosk certificate in the hub's place is refused up front.
    let body = std::fs::read_to_string(&path)
        .expect("read")
        .replace("missing.pem", "branch-1_kiosk-1.pem")
        .replace("hub.test.key", "branch-1_kiosk-1.key");
    std::fs::write(&path, body).expect("write");
    let o = kioskd(&["hub", "--config", path.to_str().expect("utf-8"), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("needs a hub certificate"), "{}", text(&o));
    // An unreadable GPIO chip names buttons.chip.
    let d = dir.path().display();
    let kiosk = dir.path().join("kiosk.toml");
    std::fs::write(
        &kiosk,
        format!(
            "[hub]\naddress = \"127.0.0.1:4433\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/branch-1_kiosk-1.pem\"\nkey = \"{d}/branch-1_kiosk-1.key\"\n[buttons]\nbackend = \"gpio-cdev\"\nchip = \"/dev/gpiochip-none\"\n"
        ),
    )
    .expect("write");
    let o = kioskd(&["run", "--config", kiosk.to_str().expect("utf-8"), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("buttons.chip"), "{}", text(&o));
    // A file that does not exist.
    let o = kioskd(&["run", "--config", "/nonexistent/kiosk.toml", "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn demo_places_queued_calls_and_reports_json() {
    let o = kioskd(&[
        "demo",
        "--kiosks",
        "5",
        "--agents",
        "2",
        "--calls",
        "7",
        "--call-duration-ms",
        "400",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    let last = out.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(v["calls_requested"], 7);
    assert_eq!(v["calls_connected"], 7);
    assert_eq!(v["calls_completed"], 7);
    assert_eq!(v["calls_abandoned"], 0);
    assert_eq!(v["texts_sent"], 14);
    assert_eq!(v["texts_delivered"], 14);
    assert!(v["max_queue_position"].as_u64().expect("number") >= 2, "callers waited: {last}");
    for k in ["offer_ms", "connect_ms"] {
        assert!(v[k]["p50"].as_f64().is_some() && v[k]["p95"].as_f64().is_some(), "{k}: {last}");
    }
    // The hub's CPU over the calls: 7 calls of about 0.4 s each, as the kiosks saw them.
    let cpu = &v["hub_cpu"];
    assert!(
        cpu["call_s"].as_f64().is_some_and(|s| s >= 1.4) && cpu["core_per_call"].as_f64().is_some(),
        "{last}"
    );
    assert_eq!(v["errors"], serde_json::json!([]));
}

#[test]
fn report_computes_from_the_event_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let o = kioskd(&[
        "demo",
        "--kiosks",
        "2",
        "--agents",
        "1",
        "--calls",
        "2",
        "--call-duration-ms",
        "300",
        "--json",
        "--event-log",
        log.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kioskd(&["report", log.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    assert_eq!(
        (v["calls"].as_u64(), v["answered"].as_u64(), v["abandoned"].as_u64()),
        (Some(2), Some(2), Some(0))
    );
    assert!(v["handle_ms"]["p50"].as_f64().expect("number") >= 150.0, "{v}");
}

#[test]
fn health_and_doctor_report_on_a_running_kiosk() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let d = dir.path().display();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let hub = dir.path().join("hub.toml");
    std::fs::write(
        &hub,
        format!(
            "listen = \"127.0.0.1:{port}\"\nevent_log = \"{d}/events.jsonl\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/hub.test.pem\"\nkey = \"{d}/hub.test.key\"\n"
        ),
    )
    .expect("write");
    let kiosk = dir.path().join("kiosk.toml");
    let kiosk_text = |camera: &str| {
        format!(
            "health_file = \"{d}/health.json\"\n[hub]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/branch-1_kiosk-1.pem\"\nkey = \"{d}/branch-1_kiosk-1.key\"\n[buttons]\nbackend = \"simulated\"\ninput = \"{d}/buttons.sock\"\n[camera]\n{camera}\n[audio]\ncapture = \"synthetic\"\n"
        )
    };
    std::fs::write(&kiosk, kiosk_text("backend = \"synthetic\"")).expect("write");
    let health = dir.path().join("health.json");
    let health_arg = health.to_str().expect("utf-8");

    let o = kioskd(&["health", "--file", health_arg]);
    assert_eq!(o.status.code(), Some(1), "no daemon, not healthy: {}", text(&o));

    let spawn = |args: &[&str]| {
        Child(
            Command::new(env!("CARGO_BIN_EXE_kioskd"))
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let _hub = spawn(&["hub", "--config", hub.to_str().expect("utf-8")]);
    let mut daemon = Child(
        Command::new(env!("CARGO_BIN_EXE_kioskd"))
            .args(["run", "--config", kiosk.to_str().expect("utf-8")])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    // The daemon logs the idle state after writing the health file that records the hub.
    Lines::of(&mut daemon.0).wait_for("state=\"idle\"");
    assert!(std::fs::read_to_string(&health).expect("health file").contains("\"hub_reached\": true"));
    let o = kioskd(&["health", "--file", health_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kioskd(&["health", "--file", health_arg, "--idle"]);
    assert!(o.status.success(), "idle kiosk: {}", text(&o));

    let o = kioskd(&["doctor", "--config", kiosk.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("hub: 127.0.0.1") && text(&o).contains("chain: signed by the configured CA"),
        "{}",
        text(&o)
    );

    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    let o = kioskd(&["health", "--file", health_arg]);
    assert_eq!(o.status.code(), Some(1), "daemon gone: {}", text(&o));
    assert!(text(&o).contains("not running"), "{}", text(&o));

    // A camera that is not there: the doctor names it and fails.
    std::fs::write(&kiosk, kiosk_text("backend = \"v4l2\"\ndevice = \"/dev/video-none\"")).expect("write");
    let o = kioskd(&["doctor", "--config", kiosk.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL  camera") && text(&o).contains("/dev/video-none"), "{}", text(&o));
}

/// The demo's kiosk has a speaker that leaks into its microphone: with the kiosk's sound
/// processing the agent does not hear itself back; without it, it does.
#[test]
fn the_demo_kiosks_echo_is_cancelled() {
    let echo = |extra: &[&str]| {
        let mut args = vec!["demo", "--calls", "1", "--call-duration-ms", "4000", "--json"];
        args.extend_from_slice(extra);
        let o = kioskd(&args);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(out.lines().last().expect("output")).expect("JSON");
        v["kiosk_to_agent"]["echo_return_db"].as_f64().expect("echo_return_db")
    };
    let processed = echo(&[]);
    let unprocessed = echo(&["--no-processing"]);
    assert!(unprocessed > -15.0, "without processing the echo comes back at {unprocessed} dB");
    assert!(processed < -40.0, "with processing the echo comes back at {processed} dB");
}

/// `kioskd certs revoke` finds an identity's certificates in the CA's register and writes a
/// signed list the hub's configuration takes (`[tls] crl`); an unknown identity is an error.
#[test]
fn certs_revoke_writes_a_list_the_hub_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let d = dir.path().to_str().expect("utf-8");
    let o = kioskd(&["certs", "revoke", "--dir", d, "branch-1/kiosk-1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("revoked `branch-1/kiosk-1` (1 certificate(s)"), "{}", text(&o));
    let crl = dir.path().join("crl.pem");
    let list = kioskd::edges::net::tls::Revocations::load(&crl).expect("a revocation list");
    let kiosk = kioskd::edges::net::tls::read_certs(&dir.path().join("branch-1_kiosk-1.pem")).expect("cert");
    let serial = kioskd::edges::net::tls::serial_of(&kiosk[0]).expect("serial");
    assert_eq!(list.serials.len(), 1);
    assert!(list.serials.contains(&serial));
    // Again: nothing new; by file: the agent too.
    let o = kioskd(&["certs", "revoke", "--dir", d, "branch-1/kiosk-1"]);
    assert!(text(&o).contains("already revoked"), "{}", text(&o));
    let agent = dir.path().join("agent-1.pem");
    let o = kioskd(&["certs", "revoke", "--dir", d, "--cert", agent.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(kioskd::edges::net::tls::Revocations::load(&crl).expect("list").serials.len(), 2);
    let o = kioskd(&["certs", "revoke", "--dir", d, "nobody"]);
    assert!(!o.status.success() && text(&o).contains("no certificate for `nobody`"), "{}", text(&o));

    // The hub's configuration takes the list; a missing one is a configuration error.
    let hub = hub_toml(dir.path(), "");
    let with_crl = std::fs::read_to_string(&hub).expect("read") + &format!("crl = \"{d}/crl.pem\"\n");
    std::fs::write(&hub, &with_crl).expect("write");
    let o = kioskd(&["hub", "--config", hub.to_str().expect("utf-8"), "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&hub, with_crl.replace("crl.pem", "missing.pem")).expect("write");
    let o = kioskd(&["hub", "--config", hub.to_str().expect("utf-8"), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("tls.crl"), "{}", text(&o));
}

/// `kioskd certs renewal-ca` makes the CA a hub renews with; the hub's `[renewal]` takes it and
/// refuses the root itself (whose key must stay offline) and a bad validity.
#[test]
fn certs_renewal_ca_makes_what_the_hub_renews_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let d = dir.path().to_str().expect("utf-8");
    let o = kioskd(&["certs", "renewal-ca", "--dir", d]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::fs::metadata(dir.path().join("renewal/ca.key")).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let renewal = |cert: &str, key: &str, days: u32| {
        format!("[renewal]\nca_cert = \"{d}/{cert}\"\nca_key = \"{d}/{key}\"\ndays = {days}\n")
    };
    let hub = dir.path().join("hub.toml");
    let base = std::fs::read_to_string(hub_toml(dir.path(), "")).expect("read");
    std::fs::write(&hub, format!("{base}{}", renewal("renewal/ca.pem", "renewal/ca.key", 90)))
        .expect("write");
    let o = kioskd(&["hub", "--config", hub.to_str().expect("utf-8"), "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    for (section, expect) in [
        (renewal("ca.pem", "ca.key", 90), "root"),
        (renewal("renewal/ca.pem", "ca.key", 90), "key"),
        (renewal("renewal/ca.pem", "renewal/ca.key", 0), "renewal.days"),
    ] {
        std::fs::write(&hub, format!("{base}{section}")).expect("write");
        let o = kioskd(&["hub", "--config", hub.to_str().expect("utf-8"), "--check"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("renewal") && text(&o).contains(expect), "{expect}: {}", text(&o));
    }
}
