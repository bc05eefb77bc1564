//! The files that put kioskd on a fleet of boards: systemd units, board profiles, the Yocto layer.
//!
//! - every unit under systemd/ and yocto/ passes `systemd-analyze verify`;
//! - kioskd.service and kiosk-hub.service rate 2.5 or better in `systemd-analyze security`;
//! - the units, the OTA script and the board profiles use the real CLI and the real config types;
//! - the Yocto crates include is what scripts/yocto-crates.py makes of Cargo.lock, and the
//!   recipe's licence checksum matches Cargo.toml;
//! - oelint-adv finds no error in the layer;
//! - the OTA script falls back, or does not, as yocto/README.md says.
//!
//! A check whose tool is missing (systemd-analyze, python3, oelint-adv, md5sum) says so on stderr
//! and passes: scripts/deps.sh installs them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kioskd::edges::config::{
    ButtonBackend, CameraBackend, CaptureBackend, KioskConfig, PlaybackBackend, parse,
};

/// Paths the units and scripts use for programs this repository installs.
const PROJECT_PROGRAMS: [&str; 2] = ["/usr/bin/kioskd", "/usr/libexec/kioskd/kioskd-ota"];
const MAX_EXPOSURE: f64 = 2.5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn skip(check: &str, why: &str) {
    eprintln!("fleet: {check}: skipped: {why}");
}

/// Runs `program args`; None when the program cannot be started (not installed).
fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Option<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().ok()
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn units() -> Vec<PathBuf> {
    let mut all = files(&root().join("systemd"), &[".service", ".timer"]);
    all.extend(files(&root().join("yocto"), &[".service", ".timer"]));
    assert!(all.len() >= 6, "units found: {all:?}");
    all
}

/// A fresh, empty directory under the system's temporary directory.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("kioskd-fleet-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).expect("temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// "systemd 252 (252.38-1~deb12u1)" → 252.
fn systemd_version() -> Option<u32> {
    let o = run("systemd-analyze", &["--version"], None)?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.split_whitespace().nth(1)?.parse().ok()
}

/// The `Exec*=` command lines of a unit, without their `-@:+!` prefixes.
fn exec_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            key.starts_with("Exec").then(|| value.trim_start_matches(['-', '@', ':', '+', '!']).to_string())
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(version) = systemd_version() else {
        return skip("systemd-analyze verify", "systemd-analyze is not installed");
    };
    // The programs this repository installs are not on the machine running the tests, and verify
    // refuses a unit whose command does not exist: copies of the units run /bin/true in their
    // place. Nothing else in the units is changed.
    let stand_in = ["/usr/bin/true", "/bin/true"].into_iter().find(|p| Path::new(p).exists()).expect("true");
    let tmp = TempDir::new("verify");
    let mut copies = Vec::new();
    for unit in units() {
        let name = unit.file_name().expect("file name").to_owned();
        let dest = tmp.0.join(&name);
        assert!(!dest.exists(), "two units named {}", name.to_string_lossy());
        let mut body = fs::read_to_string(&unit).expect("unit readable");
        for program in PROJECT_PROGRAMS {
            body = body.replace(program, stand_in);
        }
        fs::write(&dest, body).expect("unit copy");
        copies.push(dest.to_string_lossy().into_owned());
    }
    let mut args = vec!["verify", "--man=no"];
    args.extend(copies.iter().map(String::as_str));
    let o = run("systemd-analyze", &args, Some(&tmp.0)).expect("systemd-analyze runs");
    // RestartSteps= and RestartMaxDelaySec= are systemd 254's; the boards run 259. An older
    // systemd-analyze warns about them and nothing else may be said.
    let newer_keys = ["'RestartSteps'", "'RestartMaxDelaySec'"];
    let complaints: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap_or_default()
        .lines()
        .chain(std::str::from_utf8(&o.stderr).unwrap_or_default().lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(version < 254 && l.contains("Unknown key") && newer_keys.iter().any(|k| l.contains(k))))
        .collect();
    assert!(
        o.status.success() && complaints.is_empty(),
        "systemd-analyze verify:\n{}",
        complaints.join("\n")
    );
    eprintln!("fleet: systemd-analyze verify (systemd {version}): {} units clean", copies.len());
}

#[test]
fn kiosk_and_hub_units_rate_at_most_2_5_in_systemd_analyze_security() {
    let Some(version) = systemd_version() else {
        return skip("systemd-analyze security", "systemd-analyze is not installed");
    };
    if version < 250 {
        return skip("systemd-analyze security", "--offline needs systemd 250 or newer");
    }
    for name in ["kioskd.service", "kiosk-hub.service"] {
        let unit = root().join("systemd").join(name);
        let o = run("systemd-analyze", &["security", "--offline=true", &unit.to_string_lossy()], None)
            .expect("systemd-analyze runs");
        let out = text(&o);
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level for {name}:\n{out}"));
        // "→ Overall exposure level for kioskd.service: 1.5 OK 🙂"
        let figure: f64 = line
            .rsplit_once(": ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the figure in `{line}`"));
        eprintln!("fleet: systemd-analyze security {name}: {figure} (systemd {version})");
        assert!(figure <= MAX_EXPOSURE, "{name} exposure {figure} > {MAX_EXPOSURE}:\n{out}");
    }
}

/// Every `kioskd` command line in the units and the OTA script is one the CLI accepts. Each runs
/// against a configuration file that does not exist: a command the CLI takes then fails on the
/// file (a configuration error), one it does not take fails with a usage error.
#[test]
fn units_call_kioskd_as_its_cli_expects() {
    let missing = std::env::temp_dir().join("kioskd-fleet-no-such-dir/kiosk.toml");
    let missing = missing.to_string_lossy();
    let mut seen = 0;
    for unit in units() {
        let body = fs::read_to_string(&unit).expect("unit readable");
        for line in exec_lines(&body) {
            let mut words = line.split_whitespace();
            if words.next() != Some("/usr/bin/kioskd") {
                continue;
            }
            let args: Vec<String> = words
                .map(|w| if w.starts_with("/etc/kioskd/") { missing.to_string() } else { w.to_string() })
                .collect();
            let o = Command::new(env!("CARGO_BIN_EXE_kioskd")).args(&args).output().expect("kioskd runs");
            let out = text(&o);
            assert!(
                out.contains("configuration error") && out.contains("cannot read"),
                "{}: `kioskd {}` is not a command kioskd takes:\n{out}",
                unit.display(),
                args.join(" ")
            );
            seen += 1;
        }
    }
    assert!(seen >= 4, "expected the run and hub command lines of both units, saw {seen}");

    // kioskd-health.service runs `kioskd health` (through kioskd-ota); updates wait with --idle.
    let script = fs::read_to_string(root().join("yocto/meta-kioskd/recipes-ota/kioskd-ota/files/kioskd-ota"))
        .expect("kioskd-ota");
    assert!(script.contains("\"$KIOSKD\" health"), "kioskd-ota runs `kioskd health`");
    let no_file = std::env::temp_dir().join("kioskd-fleet-no-such-dir/health.json");
    for extra in [&[][..], &["--idle"][..]] {
        let mut args = vec!["health", "--file", no_file.to_str().expect("utf-8")];
        args.extend(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_kioskd")).args(&args).output().expect("kioskd runs");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("unhealthy"), "{}", text(&o));
    }
}

/// `name`, `version`, `source`, `checksum` of each `[[package]]` in Cargo.lock.
fn lock_packages(lock: &str) -> Vec<BTreeMap<String, String>> {
    let mut out: Vec<BTreeMap<String, String>> = Vec::new();
    for line in lock.lines() {
        if line.trim() == "[[package]]" {
            out.push(BTreeMap::new());
        } else if let (Some(pkg), Some((key, value))) = (out.last_mut(), line.split_once(" = "))
            && ["name", "version", "source", "checksum"].contains(&key)
        {
            pkg.insert(key.to_string(), value.trim_matches('"').to_string());
        }
    }
    out
}

#[test]
fn yocto_crates_include_matches_cargo_lock() {
    let include_path = root().join("yocto/meta-kioskd/recipes-kiosk/kioskd/kioskd-crates.inc");
    let include = fs::read_to_string(&include_path).expect("kioskd-crates.inc");
    let lock = fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");

    // Without Python: every crates.io package of Cargo.lock is fetched, with its checksum.
    let crates: Vec<_> = lock_packages(&lock)
        .into_iter()
        .filter(|p| p.get("source").is_some_and(|s| s.contains("crates.io")))
        .collect();
    assert!(crates.len() > 100, "{} crates in Cargo.lock", crates.len());
    for c in &crates {
        let (name, version) = (&c["name"], &c["version"]);
        let url = format!("    crate://crates.io/{name}/{version} \\\n");
        let sum = format!("SRC_URI[{name}-{version}.sha256sum] = \"{}\"\n", c["checksum"]);
        assert!(
            include.contains(&url) && include.contains(&sum),
            "{name} {version} is not in kioskd-crates.inc with its checksum: run scripts/yocto-crates.py"
        );
    }
    assert_eq!(
        include.matches("crate://").count(),
        crates.len(),
        "kioskd-crates.inc has crates Cargo.lock has not"
    );

    // With Python: the include is, byte for byte, what the generator writes.
    let script = root().join("scripts/yocto-crates.py");
    let Some(o) = run("python3", &[&script.to_string_lossy(), "--stdout"], Some(&root())) else {
        return skip("scripts/yocto-crates.py", "python3 is not installed");
    };
    assert!(o.status.success(), "scripts/yocto-crates.py failed:\n{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout) == include,
        "{} is out of date: run scripts/yocto-crates.py",
        include_path.display()
    );
}

#[test]
fn recipe_licence_checksum_matches_cargo_toml() {
    let recipe = fs::read_to_string(root().join("yocto/meta-kioskd/recipes-kiosk/kioskd/kioskd_0.1.0.bb"))
        .expect("recipe");
    let spec = recipe
        .lines()
        .find_map(|l| l.strip_prefix("LIC_FILES_CHKSUM = \"file://Cargo.toml;"))
        .expect("LIC_FILES_CHKSUM on Cargo.toml")
        .trim_end_matches('"');
    let field = |k: &str| {
        spec.split(';')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in `{spec}`"))
            .to_string()
    };
    let (begin, end): (usize, usize) =
        (field("beginline=").parse().expect("beginline"), field("endline=").parse().expect("endline"));
    let cargo_toml = fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut lines = String::new();
    for l in cargo_toml.lines().skip(begin - 1).take(end + 1 - begin) {
        lines.push_str(l);
        lines.push('\n');
    }
    assert!(lines.starts_with("license = "), "the checksummed lines are not the licence: {lines:?}");
    let Ok(mut child) = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() else {
        return skip("licence checksum", "md5sum is not installed");
    };
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("md5sum input");
    }
    let o = child.wait_with_output().expect("md5sum");
    let sum = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(field("md5="), sum, "Cargo.toml lines {begin}-{end} changed: update LIC_FILES_CHKSUM");
}

#[test]
fn board_profiles_parse_with_the_real_config_types() {
    let profiles = files(&root().join("board"), &[".toml"]);
    assert!(profiles.len() >= 5, "{profiles:?}");
    let mut parsed = BTreeMap::new();
    for path in &profiles {
        let text = fs::read_to_string(path).expect("readable");
        let cfg: KioskConfig = parse(path, &text).unwrap_or_else(|e| panic!("{e}"));
        cfg.media().validate(path).unwrap_or_else(|e| panic!("{e}"));
        let b = &cfg.buttons;
        assert!(
            b.backend == ButtonBackend::Simulated || b.call != b.hangup,
            "{}: CALL = HANGUP",
            path.display()
        );
        assert!((5..=1000).contains(&b.debounce_ms), "{}: buttons.debounce_ms", path.display());
        if let Some(l) = &cfg.leds {
            assert_ne!(l.call, l.busy, "{}: the LEDs share a line", path.display());
        }
        let rel = path.strip_prefix(root().join("board")).expect("under board/");
        parsed.insert(rel.to_string_lossy().into_owned(), cfg);
    }

    let board = |name: &str| parsed.get(name).unwrap_or_else(|| panic!("board/{name} is missing"));
    let rpi4 = board("rpi4/kiosk.toml");
    assert_eq!(
        (rpi4.buttons.backend, rpi4.buttons.call, rpi4.buttons.hangup),
        (ButtonBackend::Rppal, 17, 27)
    );
    let rpi5 = board("rpi5/kiosk.toml");
    assert_eq!(
        (rpi5.buttons.backend, rpi5.buttons.call, rpi5.buttons.hangup),
        (ButtonBackend::GpioCdev, 17, 27)
    );
    assert_eq!(rpi5.buttons.chip, Path::new("/dev/gpiochip4"), "the Pi 5's header is the RP1's chip");
    let generic = board("generic/kiosk.toml");
    assert_eq!(
        (generic.buttons.backend, generic.buttons.chip.as_path()),
        (ButtonBackend::GpioCdev, Path::new("/dev/gpiochip0"))
    );
    for (name, cfg, chip) in [
        ("rpi4", rpi4, "/dev/gpiochip0"),
        ("rpi5", rpi5, "/dev/gpiochip4"),
        ("generic", generic, "/dev/gpiochip0"),
    ] {
        let leds = cfg.leds.as_ref().unwrap_or_else(|| panic!("{name}: [leds]"));
        assert_eq!((leds.chip.as_path(), leds.call, leds.busy), (Path::new(chip), 22, 23), "{name}: [leds]");
        assert_eq!(cfg.camera.backend, CameraBackend::V4l2, "{name}: camera");
        assert_eq!(cfg.camera.device, Path::new("/dev/video0"), "{name}: camera.device");
        assert_eq!(
            (cfg.audio.capture, cfg.audio.playback),
            (CaptureBackend::Alsa, PlaybackBackend::Alsa),
            "{name}"
        );
        assert_eq!(cfg.audio.capture_device, "default", "{name}: board/asound.conf makes the card `default`");
        assert_eq!(
            cfg.tls.key,
            Path::new("/etc/kioskd/kiosk.key"),
            "{name}: the image links /etc/kioskd to /data"
        );
    }

    // The ALSA default the profiles use: one card shared through dmix and dsnoop at 48 kHz.
    let asound = fs::read_to_string(root().join("board/asound.conf")).expect("board/asound.conf");
    for needle in ["pcm.!default", "type asym", "type plug", "type dmix", "type dsnoop", "rate 48000"] {
        assert!(asound.contains(needle), "board/asound.conf lacks `{needle}`");
    }
}

/// oelint-adv as installed by scripts/deps.sh: on PATH, in ~/.local/bin, or as a Python module.
fn oelint() -> Option<Vec<String>> {
    let home_bin = std::env::var("HOME").map(|h| format!("{h}/.local/bin/oelint-adv")).unwrap_or_default();
    for candidate in [
        vec!["oelint-adv".to_string()],
        vec![home_bin],
        vec!["python3".into(), "-m".into(), "oelint_adv".into()],
    ] {
        let mut args: Vec<&str> = candidate.iter().skip(1).map(String::as_str).collect();
        args.push("--version");
        if run(&candidate[0], &args, None).is_some_and(|o| o.status.success()) {
            return Some(candidate);
        }
    }
    None
}

#[test]
fn oelint_adv_finds_no_error_in_the_layer() {
    let Some(cmd) = oelint() else {
        return skip("oelint-adv", "oelint-adv is not installed (scripts/deps.sh installs it)");
    };
    let layer = root().join("yocto/meta-kioskd");
    // Run from the layer, whose .oelint.cfg sets the release (wrynose) and the rules switched off.
    let mut targets: Vec<String> = files(&layer, &[".bb", ".bbappend"])
        .iter()
        .map(|p| p.strip_prefix(&layer).expect("in the layer").to_string_lossy().into_owned())
        .collect();
    assert!(targets.len() >= 5, "{targets:?}");
    targets.push("conf/layer.conf".into());
    let mut args: Vec<&str> = cmd.iter().skip(1).map(String::as_str).collect();
    args.extend(["--quiet", "--extra-layer", "rauc", "openembedded-layer", "--"]);
    args.extend(targets.iter().map(String::as_str));
    let o = run(&cmd[0], &args, Some(&layer)).expect("oelint-adv runs");
    let out = text(&o);
    let errors: Vec<&str> = out.lines().filter(|l| l.contains(":error:")).collect();
    if !out.trim().is_empty() {
        eprintln!("fleet: oelint-adv said:\n{out}");
    }
    assert!(errors.is_empty(), "oelint-adv errors:\n{}", errors.join("\n"));
    assert!(!out.contains("Traceback"), "oelint-adv crashed:\n{out}");
    eprintln!("fleet: oelint-adv: {} recipes, no error", targets.len() - 1);
}

/// kioskd-ota with stand-ins for rauc, systemctl and kioskd: it rolls back a new slot that never
/// became good, and leaves alone a slot that was good before (a network outage).
#[test]
fn ota_script_rolls_back_only_a_slot_that_never_became_good() {
    if run("sh", &["-c", "true"], None).is_none() {
        return skip("kioskd-ota", "no sh");
    }
    let tmp = TempDir::new("ota");
    let bin = tmp.0.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    let log = tmp.0.join("log");
    let stub = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >>'{}'\n{body}\n", log.display()))
            .expect("stub");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    stub(
        "rauc",
        "case \"$*\" in \"status --output-format=shell\") echo \"RAUC_SYSTEM_BOOTED_BOOTNAME='$SLOT'\";; esac",
    );
    stub("systemctl", "case \"$*\" in *is-active*) exit \"$ACTIVE\";; esac");
    stub("kioskd", "exit \"$HEALTH\"");
    stub("sleep", "exit 0");
    let health = tmp.0.join("health.json");
    fs::write(&health, "{\n  \"in_call\": false\n}\n").expect("health file");
    let script = root().join("yocto/meta-kioskd/recipes-ota/kioskd-ota/files/kioskd-ota");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let ota = |args: &[&str], slot: &str, active: &str, healthy: bool| -> (bool, String) {
        let _ = fs::remove_file(&log);
        let o = Command::new("sh")
            .arg(&script)
            .args(args)
            .env("PATH", &path)
            .env("KIOSKD_OTA_STATE", tmp.0.join("state"))
            .env("KIOSKD_BIN", bin.join("kioskd"))
            .env("KIOSKD_HEALTH_FILE", &health)
            .env("SLOT", slot)
            .env("ACTIVE", active)
            .env("HEALTH", if healthy { "0" } else { "1" })
            .output()
            .expect("sh runs");
        (o.status.success(), fs::read_to_string(&log).unwrap_or_default())
    };
    let not_active = "3";

    // A kiosk that has never been healthy has no good slot to go back to.
    let (ok, calls) = ota(&["fallback"], "A", not_active, false);
    assert!(ok && !calls.contains("mark-bad") && !calls.contains("reboot"), "{calls}");
    // Slot A becomes good.
    let (ok, calls) = ota(&["mark-good"], "A", "0", true);
    assert!(ok && calls.contains("rauc status mark-good"), "{calls}");
    assert_eq!(fs::read_to_string(tmp.0.join("state/last-good-slot")).expect("recorded"), "A\n");
    // Back on A, unhealthy (the hub is down): A was good before, so it stays.
    let (ok, calls) = ota(&["fallback"], "A", not_active, false);
    assert!(ok && !calls.contains("mark-bad") && !calls.contains("reboot"), "{calls}");
    // An update to B that never becomes healthy: B is marked bad and the kiosk reboots.
    let (ok, calls) = ota(&["fallback"], "B", not_active, false);
    assert!(ok && calls.contains("rauc status mark-bad") && calls.contains("systemctl reboot"), "{calls}");
    // An update to B that reached boot-complete.target is left alone.
    let (ok, calls) = ota(&["fallback"], "B", "0", true);
    assert!(ok && !calls.contains("mark-bad"), "{calls}");
    // The health gate gives up after its time limit, and passes once kioskd is healthy.
    assert!(!ota(&["wait-healthy", "20"], "B", not_active, false).0);
    assert!(ota(&["wait-healthy", "20"], "B", not_active, true).0);
    // An update reboots between calls, not during one.
    fs::write(&health, "{\n  \"in_call\": true\n}\n").expect("health file");
    let (ok, calls) = ota(&["reboot-when-idle", "30"], "B", "0", true);
    assert!(ok && calls.contains("systemctl reboot"), "reboots after the longest wait: {calls}");
}
