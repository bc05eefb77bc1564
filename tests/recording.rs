//! Call recording, checked by an independent player: ffprobe and ffmpeg (Debian's) open the
//! files the hub writes, find the four tracks, and decode every frame.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{Child, Lines, deployment, kioskd_bin, output_text};

fn ffprobe_json(file: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe runs (scripts/deps.sh installs ffmpeg)");
    assert!(o.status.success(), "ffprobe: {}", output_text(&o));
    assert!(o.stderr.is_empty(), "ffprobe complained: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("ffprobe prints JSON")
}

/// Decodes every frame of every track; returns ffmpeg's complaints (none expected). The
/// frames keep the file's millisecond times on their way to the null output
/// (`-enc_time_base -1`): the cameras' frames are not evenly spaced, and a guessed frame rate
/// would fold two of them into one tick.
fn decode_errors(file: &Path) -> String {
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-map", "0", "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(o.status.success(), "ffmpeg failed: {}", output_text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (codec_type, codec_name, frames decoded) of each stream, in order.
fn streams(file: &Path) -> Vec<(String, String, u64)> {
    // -count_frames decodes every frame; an error would show on stderr and fail ffprobe_json.
    let v = ffprobe_json(
        file,
        &["-count_frames", "-show_entries", "stream=codec_type,codec_name,nb_read_frames"],
    );
    v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
            )
        })
        .collect()
}

fn duration_s(file: &Path) -> f64 {
    let v = ffprobe_json(file, &["-show_entries", "format=duration"]);
    v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// One demo call with media at a time: each takes most of a core of this 2-core machine.
static ONE_CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_recorded_demo_call_opens_in_ffmpeg_with_four_tracks_and_every_frame_decodes() {
    let _one = ONE_CALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("recordings");
    let log = dir.path().join("events.jsonl");
    let o = kioskd_bin(&[
        "demo",
        "--record",
        rec.to_str().expect("utf-8"),
        "--event-log",
        log.to_str().expect("utf-8"),
        "--call-duration-ms",
        "6000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("recorded  1 call(s)"), "{}", output_text(&o));

    let file = rec.join("call-1.mkv");
    let sidecar_path = rec.join("call-1.json");
    assert_eq!(mode(&rec), 0o700);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&sidecar_path), 0o600);

    // The four tracks, every frame decoded without an error.
    let found = streams(&file);
    let kinds: Vec<(&str, &str)> = found.iter().map(|(t, c, _)| (t.as_str(), c.as_str())).collect();
    assert_eq!(kinds, [("video", "h264"), ("audio", "opus"), ("video", "h264"), ("audio", "opus")]);
    let errors = decode_errors(&file);
    assert!(errors.trim().is_empty(), "ffmpeg reported decoding errors:\n{errors}");

    // What the sidecar says agrees with the file and with the player.
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar_path).expect("sidecar")).expect("JSON");
    let (bytes, sha256) = kioskd::roles::hub::recording::hash_file(&file).expect("hash");
    assert_eq!(sidecar["sha256"].as_str(), Some(sha256.as_str()));
    assert_eq!(sidecar["bytes"].as_u64(), Some(bytes));
    assert_eq!(sidecar["call_id"].as_u64(), Some(1));
    assert_eq!(sidecar["kiosk"].as_str(), Some("branch-1/kiosk-1"));
    assert_eq!(sidecar["agent"].as_str(), Some("agent-1"));
    assert!(sidecar["end_unix_ms"].as_u64() > sidecar["start_unix_ms"].as_u64());
    let tracks = sidecar["tracks"].as_array().expect("tracks");
    for ((kind, _, decoded), track) in found.iter().zip(tracks) {
        assert_eq!(track["kind"].as_str(), Some(kind.as_str()));
        assert_eq!(track["frames"].as_u64(), Some(*decoded), "every recorded frame decodes: {track}");
    }
    let video_frames = found[0].2;
    assert!(video_frames >= 120, "about 6 s at 30 fps (fewer on a loaded machine): {video_frames}");

    // The duration is the call's: connected to ended in the hub's event log.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("event log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"] == kind)
            .and_then(|e| e["ts_ms"].as_u64())
            .expect("event in the log")
    };
    let call_s = (at("ended") - at("connected")) as f64 / 1000.0;
    let file_s = duration_s(&file);
    assert!((file_s - call_s).abs() <= 0.05 * call_s, "recording {file_s:.3} s for a call of {call_s:.3} s");
    assert!(events.iter().any(|e| e["event"] == "recording_started"));
    assert!(events.iter().any(|e| e["event"] == "recording_finished"));
}

/// A call whose advisor works in the browser console (a real headless Chromium) is recorded
/// like any other: the kiosk's and the browser's pictures and sound, every frame decodable.
#[test]
fn a_browser_advisors_call_is_recorded_like_any_other() {
    let _one = ONE_CALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("recordings");
    let o = kioskd_bin(&["demo", "--browser", "--record", rec.to_str().expect("utf-8"), "--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("recorded  1 call(s)"), "{}", output_text(&o));
    let file = rec.join("call-1.mkv");
    assert_eq!(mode(&file), 0o600);
    let found = streams(&file);
    let kinds: Vec<(&str, &str)> = found.iter().map(|(t, c, _)| (t.as_str(), c.as_str())).collect();
    assert_eq!(kinds, [("video", "h264"), ("audio", "opus"), ("video", "h264"), ("audio", "opus")]);
    let errors = decode_errors(&file);
    assert!(errors.trim().is_empty(), "ffmpeg reported decoding errors:\n{errors}");
    // The kiosk's tracks and the browser's, about 6 s each (fewer frames on a loaded machine).
    for (i, (kind, _, frames)) in found.iter().enumerate() {
        let least = if kind == "video" { 90 } else { 150 };
        assert!(*frames >= least, "track {i} ({kind}): {frames} frames");
    }
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("call-1.json")).expect("sidecar"))
            .expect("JSON");
    assert_eq!(sidecar["agent"].as_str(), Some("advisor"), "{sidecar}");
    assert_eq!(sidecar["kiosk"].as_str(), Some("branch-1/kiosk-1"), "{sidecar}");
}

/// A hub, a kiosk and an agent as separate processes, sharing `dir`.
struct Deployment {
    hub_config: PathBuf,
    kiosk_config: PathBuf,
    agent_config: PathBuf,
}

fn write_configs(dir: &Path) -> Deployment {
    deployment(dir);
    let d = dir.display();
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let tls = |name: &str| {
        format!("[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/{name}.pem\"\nkey = \"{d}/{name}.key\"\n")
    };
    let hub_link = format!("[hub]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n");
    let media = "[camera]\nbackend = \"synthetic\"\n[audio]\ncapture = \"synthetic\"\n";
    let hub_config = dir.join("hub.toml");
    std::fs::write(
        &hub_config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nevent_log = \"{d}/events.jsonl\"\n{}[recording]\nenabled = true\ndir = \"{d}/recordings\"\nretention_days = 90\n",
            tls("hub.test")
        ),
    )
    .expect("write");
    let kiosk_config = dir.join("kiosk.toml");
    std::fs::write(
        &kiosk_config,
        format!(
            "{hub_link}{}[buttons]\nbackend = \"simulated\"\ninput = \"{d}/buttons.sock\"\n[call]\nrecording_notice = true\n{media}",
            tls("branch-1_kiosk-1")
        ),
    )
    .expect("write");
    let agent_config = dir.join("agent.toml");
    std::fs::write(&agent_config, format!("{hub_link}{}{media}", tls("agent-1"))).expect("write");
    Deployment { hub_config, kiosk_config, agent_config }
}

fn spawn(args: &[&str]) -> Child {
    Child(
        Command::new(env!("CARGO_BIN_EXE_kioskd"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kioskd"),
    )
}

#[test]
fn a_recording_cut_off_by_killing_the_hub_mid_call_still_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dep = write_configs(dir.path());
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let mut hub = spawn(&["hub", "--config", &path(&dep.hub_config)]);
    let hub_lines = Lines::of(&mut hub.0);
    hub_lines.wait_for("hub listening");
    let mut agent = spawn(&["agent", "--config", &path(&dep.agent_config), "--auto-accept"]);
    // Read (and kept) so that the agent's log never fills its pipe.
    let _agent_lines = Lines::of(&mut agent.0);
    let mut kiosk = spawn(&["run", "--config", &path(&dep.kiosk_config)]);
    let kiosk_lines = Lines::of(&mut kiosk.0);
    kiosk_lines.wait_for("state=\"idle\"");

    // The customer presses CALL.
    let mut buttons =
        std::os::unix::net::UnixStream::connect(dir.path().join("buttons.sock")).expect("button socket");
    std::io::Write::write_all(&mut buttons, b"call\n").expect("press");
    kiosk_lines.wait_for("in call with agent-1 (recorded)");
    hub_lines.wait_for("recording started");

    // The scenario: four seconds of conversation, then the hub dies without a word.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let _ = hub.0.kill();
    let _ = hub.0.wait();

    let file = dir.path().join("recordings/call-1.mkv");
    let found = streams(&file);
    let kinds: Vec<(&str, &str)> = found.iter().map(|(t, c, _)| (t.as_str(), c.as_str())).collect();
    assert_eq!(kinds, [("video", "h264"), ("audio", "opus"), ("video", "h264"), ("audio", "opus")]);
    let errors = decode_errors(&file);
    assert!(errors.trim().is_empty(), "ffmpeg reported errors in the cut-off file:\n{errors}");
    // Whole Clusters of a second are written as the call goes: at most the last two seconds
    // are missing.
    let audio_frames = found[1].2;
    assert!(audio_frames >= 100, "at least 2 s of the kiosk's sound survive: {audio_frames} frames");
    assert!(!dir.path().join("recordings/call-1.json").exists(), "no sidecar: the hub never finished it");
}

#[test]
fn a_hub_config_with_recording_but_no_folder_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dep = write_configs(dir.path());
    let text = std::fs::read_to_string(&dep.hub_config).expect("read");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace(&format!("dir = \"{}/recordings\"\n", dir.path().display()), ""))
        .expect("write");
    let o = kioskd_bin(&["hub", "--config", bad.to_str().expect("utf-8"), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("recording.dir"), "{}", output_text(&o));
}
