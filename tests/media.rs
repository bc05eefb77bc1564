//! Two-way audio and video through the hub over real QUIC, with the real codecs and the
//! synthetic camera and microphone (whose pictures carry their frame number).

mod common;

use std::time::Duration;

use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::config::{CameraBackend, CaptureBackend, MediaSections};
use kioskd::edges::devices::audio::dominant_frequency;
use kioskd::edges::devices::camera::CameraSwitch;
use kioskd::edges::session::{
    MediaDevices, MediaOptions, MediaStats, devices_from_config, synthetic_devices, synthetic_devices_with,
};
use kioskd::media::SAMPLE_RATE;
use kioskd::media::codec::VideoSettings;
use kioskd::protocol::{Role, RoomState};
use kioskd::queue::QueueConfig;
use kioskd::roles::agent::AgentEvent;
use kioskd::roles::kiosk::KioskEvent;

/// Small pictures keep the test light on a loaded 2-core machine; the demo runs 640×480.
fn video() -> VideoSettings {
    VideoSettings { width: 320, height: 240, fps: 30.0, bitrate_bps: 400_000, ..VideoSettings::default() }
}

fn opts() -> MediaOptions {
    MediaOptions { video: video(), ..MediaOptions::default() }
}

async fn kiosk_media(k: &mut TestKiosk) -> MediaStats {
    match k.wait_for("media figures", |e| matches!(e, KioskEvent::Media { .. })).await {
        KioskEvent::Media { stats, .. } => *stats,
        _ => unreachable!(),
    }
}

async fn agent_media(a: &mut TestAgent) -> MediaStats {
    match a.wait_for("media figures", |e| matches!(e, AgentEvent::Media { .. })).await {
        AgentEvent::Media { stats, .. } => *stats,
        _ => unreachable!(),
    }
}

/// One call: a hub, an agent answering with `agent_devices` that hangs up after `call_ms`, and
/// a kiosk with `kiosk_devices` (and the device problems found at start) that presses CALL.
/// Returns the media figures of the kiosk and of the agent.
async fn media_call(
    call_ms: u64,
    agent_devices: MediaDevices,
    kiosk_id: &str,
    kiosk_devices: MediaDevices,
    problems: Vec<String>,
) -> (MediaStats, MediaStats, kioskd::roles::hub::HubStatus) {
    let pki = Pki::new();
    let hub = start_hub(&pki, QueueConfig::default()).await;
    let target = pki.target(hub.addr(), Role::Agent, "agent-1");
    let mut a = start_agent_full(target, "agent-1", Some(auto(Some(call_ms))), agent_devices, opts());
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k = start_kiosk_full(&pki, hub.addr(), kiosk_id, kiosk_devices, opts(), problems);
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    let kiosk = kiosk_media(&mut k).await;
    let agent = agent_media(&mut a).await;
    (kiosk, agent, hub.hub.status())
}

/// Every frame the sender encoded arrives decoded, stamped with the same number, in order;
/// only the last few (in flight when the call ended) may be missing. The pictures shown are
/// those decoded, in order, less the few the playout skipped as late (a loaded machine).
fn assert_frames_arrived(direction: &str, sent: &MediaStats, received: &MediaStats) {
    let (s, d) = (&sent.sent_frame_numbers, &received.decoded_frame_numbers);
    assert!(s.len() >= 60, "{direction}: only {} frames sent", s.len());
    assert!(d.len() <= s.len(), "{direction}: {} decoded, {} sent", d.len(), s.len());
    assert_eq!(&s[..d.len()], &d[..], "{direction}: decoded frames differ from those sent");
    assert!(s.len() - d.len() <= 3, "{direction}: {} of {} frames missing", s.len() - d.len(), s.len());
    let shown = &received.verified_frame_numbers;
    let mut rest = d.iter();
    assert!(
        shown.iter().all(|n| rest.any(|m| m == n)),
        "{direction}: the pictures shown are not the decoded ones in order: {shown:?}"
    );
    let skipped = d.len() - shown.len();
    assert!(skipped * 20 <= d.len(), "{direction}: {skipped} of {} decoded pictures not shown", d.len());
}

fn assert_tone(direction: &str, received: &MediaStats, hz: f64) {
    let played: Vec<i16> = received.played_audio.iter().copied().collect();
    assert!(played.len() >= SAMPLE_RATE as usize, "{direction}: only {} samples played", played.len());
    let f = dominant_frequency(&played, SAMPLE_RATE);
    assert!((f - hz).abs() < hz * 0.01, "{direction}: heard {f:.1} Hz, sent {hz} Hz");
    assert!(
        received.audio_frames_played >= 100,
        "{direction}: {} audio frames",
        received.audio_frames_played
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_parties_see_every_frame_in_order_and_hear_each_others_tone() {
    let (kiosk, agent, status) = media_call(
        4000,
        synthetic_devices(660.0, video()),
        "branch-1/kiosk-1",
        synthetic_devices(440.0, video()),
        vec![],
    )
    .await;
    assert!(
        kiosk.problems.is_empty() && agent.problems.is_empty(),
        "{:?} {:?}",
        kiosk.problems,
        agent.problems
    );
    assert_frames_arrived("kiosk → agent", &kiosk, &agent);
    assert_frames_arrived("agent → kiosk", &agent, &kiosk);
    assert_tone("kiosk → agent", &agent, 440.0);
    assert_tone("agent → kiosk", &kiosk, 660.0);
    let relayed = status.media;
    assert!(relayed.video_forwarded >= 200 && relayed.audio_forwarded >= 300, "{relayed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_stops_mid_call_leaves_audio_running_and_comes_back() {
    let pki = Pki::new();
    let hub = start_hub(&pki, QueueConfig::default()).await;
    let target = pki.target(hub.addr(), Role::Agent, "agent-1");
    let mut a =
        start_agent_full(target, "agent-1", Some(auto(None)), synthetic_devices(660.0, video()), opts());
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let switch = CameraSwitch::new();
    let devices = synthetic_devices_with(440.0, video(), Some(switch.clone()));
    let mut k = start_kiosk_full(&pki, hub.addr(), "branch-1/kiosk-2", devices, opts(), vec![]);
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    // The scenario's timing: one second of video, 1.5 s without a camera, 1.5 s with it again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    switch.set_running(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    switch.set_running(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    k.panel.press(Button::HangUp);
    let kiosk = kiosk_media(&mut k).await;
    let agent = agent_media(&mut a).await;
    // Audio ran the whole 4 s (200 frames) without a gap.
    assert!(agent.audio_frames_played >= 180, "audio played {}", agent.audio_frames_played);
    // A little concealment is tolerated: the test machine may be loaded.
    assert!(agent.audio_frames_concealed <= 20, "audio concealed {}", agent.audio_frames_concealed);
    // Video stopped for 1.5 s and came back: frames from both sides of the gap arrived.
    let got = &agent.verified_frame_numbers;
    assert!(got.len() >= 50 && got.len() <= 90, "{} frames verified", got.len());
    let before = got.iter().filter(|&&n| n < 25).count();
    let after = got.iter().filter(|&&n| n > 40).count();
    assert!(before >= 20 && after >= 20, "before the gap {before}, after it {after}: {got:?}");
    assert_frames_arrived("kiosk → agent", &kiosk, &agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_camera_is_reported_and_the_call_goes_on_audio_only() {
    let mut sections = MediaSections::default();
    sections.camera.backend = CameraBackend::V4l2;
    sections.camera.device = "/dev/video-missing".into();
    sections.audio.capture = CaptureBackend::Synthetic;
    let (devices, _, problems) = devices_from_config(&sections);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("camera:") && problems[0].contains("/dev/video-missing"), "{problems:?}");

    let (kiosk, agent, _) =
        media_call(3000, MediaDevices::default(), "branch-1/kiosk-3", devices, problems).await;
    assert!(kiosk.problems.iter().any(|p| p.contains("/dev/video-missing")), "{:?}", kiosk.problems);
    assert_eq!(kiosk.video_frames_sent, 0);
    assert!(agent.audio_frames_played >= 130, "audio-only call played {}", agent.audio_frames_played);
    assert_tone("kiosk → agent", &agent, 440.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_microphone_is_reported_and_the_call_goes_on_video_only() {
    let mut sections = MediaSections::default();
    sections.camera.backend = CameraBackend::Synthetic;
    sections.camera.width = 320;
    sections.camera.height = 240;
    sections.audio.capture = CaptureBackend::Alsa;
    sections.audio.capture_device = "hw:NoSuchCard".into();
    let (devices, _, problems) = devices_from_config(&sections);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("microphone:") && problems[0].contains("NoSuchCard"), "{problems:?}");

    let (kiosk, agent, _) =
        media_call(3000, MediaDevices::default(), "branch-1/kiosk-4", devices, problems).await;
    assert!(kiosk.problems.iter().any(|p| p.contains("NoSuchCard")), "{:?}", kiosk.problems);
    assert_eq!(kiosk.audio_frames_sent, 0);
    assert_frames_arrived("kiosk → agent", &kiosk, &agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_saves_the_kiosks_video_and_sound_to_files() {
    use kioskd::edges::devices::audio::wav::read_wav;
    use kioskd::edges::devices::screen::file::read_y4m;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sections = MediaSections::default();
    sections.screen.backend = kioskd::edges::config::ScreenBackend::Y4m;
    sections.screen.path = Some(dir.path().join("kiosk.y4m"));
    sections.audio.playback = kioskd::edges::config::PlaybackBackend::Wav;
    sections.audio.wav_path = Some(dir.path().join("kiosk.wav"));
    let (sinks, _, problems) = devices_from_config(&sections);
    assert!(problems.is_empty(), "{problems:?}");

    let (kiosk, agent, _) =
        media_call(3000, sinks, "branch-1/kiosk-5", synthetic_devices(440.0, video()), vec![]).await;
    let pictures = read_y4m(&dir.path().join("kiosk.y4m")).expect("a Y4M file");
    let stamps: Vec<u32> = pictures
        .iter()
        .filter_map(|p| kioskd::edges::devices::camera::read_stamp(p).map(|(n, _)| n))
        .collect();
    assert_eq!(stamps, agent.verified_frame_numbers, "the file holds exactly the pictures shown");
    assert!(stamps.len() >= 60, "{} pictures saved", stamps.len());
    assert_frames_arrived("kiosk → agent", &kiosk, &agent);
    let (rate, samples) = read_wav(&dir.path().join("kiosk.wav")).expect("a WAV file");
    assert_eq!(rate, SAMPLE_RATE);
    assert!(samples.len() as u64 >= agent.audio_frames_played * 960 - 960, "{} samples", samples.len());
    let f = dominant_frequency(&samples, SAMPLE_RATE);
    assert!((f - 440.0).abs() < 4.4, "the saved sound is at {f:.1} Hz");
}

/// A second call between the same kiosk and agent gets its pictures like the first (the agent
/// opens its screen and its decoder afresh for each call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_call_shows_the_pictures_like_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sections = MediaSections::default();
    sections.screen.backend = kioskd::edges::config::ScreenBackend::Y4m;
    sections.screen.path = Some(dir.path().join("seen.y4m"));
    let (sinks, _, problems) = devices_from_config(&sections);
    assert!(problems.is_empty(), "{problems:?}");
    let agent_devices = MediaDevices { microphone: synthetic_devices(660.0, video()).microphone, ..sinks };

    let pki = Pki::new();
    let hub = start_hub(&pki, QueueConfig::default()).await;
    let target = pki.target(hub.addr(), Role::Agent, "agent-1");
    let mut a = start_agent_full(target, "agent-1", Some(auto(Some(2500))), agent_devices, opts());
    let mut k = start_kiosk_full(
        &pki,
        hub.addr(),
        "branch-1/kiosk-2",
        synthetic_devices(440.0, video()),
        opts(),
        vec![],
    );
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    for call in 1..=2 {
        k.panel.press(Button::Call);
        // The call's figures and the kiosk's return to idle come in either order.
        let (mut kiosk, mut idle) = (None, false);
        while kiosk.is_none() || !idle {
            match k
                .wait_for("media figures and idle", |e| {
                    matches!(e, KioskEvent::Media { .. } | KioskEvent::State { state: KioskState::Idle, .. })
                })
                .await
            {
                KioskEvent::Media { stats, .. } => kiosk = Some(*stats),
                _ => idle = true,
            }
        }
        let kiosk = kiosk.expect("figures");
        let agent = agent_media(&mut a).await;
        assert!(agent.video_frames_displayed >= 40, "call {call}: {agent:#?}");
        assert_frames_arrived(&format!("call {call}: kiosk → agent"), &kiosk, &agent);
    }
}

/// Processing that fails mid-call (here by an injected fault) leaves the sound going,
/// unprocessed, and says so in the call's problems (which the health file takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_failure_leaves_the_sound_going_unprocessed() {
    use kioskd::media::processing::ProcessingConfig;
    let pki = Pki::new();
    let hub = start_hub(&pki, QueueConfig::default()).await;
    let target = pki.target(hub.addr(), Role::Agent, "agent-1");
    let mut a = start_agent_full(
        target,
        "agent-1",
        Some(auto(Some(2500))),
        synthetic_devices(660.0, video()),
        opts(),
    );
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let failing = MediaOptions {
        processing: ProcessingConfig { fail_after_blocks: Some(50), ..ProcessingConfig::default() },
        ..opts()
    };
    let mut k = start_kiosk_full(
        &pki,
        hub.addr(),
        "branch-1/kiosk-3",
        synthetic_devices(440.0, video()),
        failing,
        vec![],
    );
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    let kiosk = kiosk_media(&mut k).await;
    let agent = agent_media(&mut a).await;
    assert!(
        kiosk.problems.iter().any(|p| p.starts_with("audio processing failed") && p.contains("unprocessed")),
        "{:?}",
        kiosk.problems
    );
    assert!(kiosk.audio_processing.as_ref().is_some_and(|p| p.blocks == 50), "{:?}", kiosk.audio_processing);
    assert!(agent.audio_frames_played + 5 >= kiosk.audio_frames_sent, "{agent:?}");
    assert_tone("kiosk → agent after the failure", &agent, 440.0);
}
