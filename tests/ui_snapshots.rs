//! Snapshot tests of the kiosk screen: every state drawn with fixed inputs, compared with the
//! reference images in tests/snapshots/ (640×360, and two at 1280×720).
//!
//! A pixel differs when one of its channels is off by more than `CHANNEL_TOLERANCE`; a
//! snapshot fails when more than `MAX_DIFFERING` of its pixels differ (font rasterisation
//! and rounding may move a few edge pixels between versions of the rasteriser, never a
//! layout). On failure the image drawn is written to target/snapshots/NAME.png for a look.
//!
//! `KIOSKD_UPDATE_SNAPSHOTS=1 cargo test --test ui_snapshots` rewrites the references (look at
//! every changed image before committing it).

use std::path::{Path, PathBuf};

use kioskd::call::KioskState;
use kioskd::media::Picture;
use kioskd::protocol::EndReason;
use kioskd::ui::{Compositor, Frame, Lang, Rect, Rgb, Trouble, UiSettings, VideoState, View};

const CHANNEL_TOLERANCE: u8 = 24;
const MAX_DIFFERING: f64 = 0.005;

fn settings(lang: &str) -> UiSettings {
    match lang {
        "zh" => UiSettings {
            branch: "中山路支行".into(),
            opening_hours: "周一至周五 9:00–17:00，周六 9:00–12:00".into(),
            recording_notice: true,
        },
        _ => UiSettings {
            branch: "Main Street branch".into(),
            opening_hours: "Mon–Fri 9:00–17:00, Sat 9:00–12:00".into(),
            recording_notice: true,
        },
    }
}

fn view(lang: &str, state: KioskState) -> View {
    View {
        state,
        settings: settings(lang),
        trouble: Trouble::default(),
        texts: Vec::new(),
        video: VideoState::Live,
    }
}

fn call_view(lang: &str, recorded: bool) -> View {
    let agent = if lang == "zh" { "王丽" } else { "Anna Schmidt" };
    let mut v = view(lang, KioskState::Connected { agent: agent.into(), recorded });
    v.texts = if lang == "zh" {
        vec!["您好，我是王丽。请问今天有什么可以帮您？".into(), "请把身份证放在摄像头前。".into()]
    } else {
        vec![
            "Good morning, this is Anna. How can I help you today?".into(),
            "Please hold your ID card up to the camera.".into(),
        ]
    };
    v
}

/// A stand-in for a person on camera, drawn with the frame's own shapes: a head and
/// shoulders in front of a wall (deterministic, unlike a camera).
fn person(width: u32, height: u32, jacket: Rgb) -> Picture {
    let mut f = Frame::new(width, height);
    let (w, h) = (width as f32, height as f32);
    f.fill(Rgb::new(0xB8, 0xC4, 0xCC));
    f.fill_rect(Rect::new(0, (h * 0.7) as i32, width as i32, height as i32), Rgb::new(0x9A, 0xA8, 0xB2), 255);
    f.fill_rounded(
        Rect::new((w * 0.22) as i32, (h * 0.62) as i32, (w * 0.56) as i32, (h * 0.6) as i32),
        (w * 0.12) as i32,
        jacket,
        255,
    );
    f.fill_rect(
        Rect::new((w * 0.455) as i32, (h * 0.5) as i32, (w * 0.09) as i32, (h * 0.16) as i32),
        Rgb::new(0xD9, 0xA5, 0x86),
        255,
    );
    f.fill_circle(w * 0.5, h * 0.4, h * 0.17, Rgb::new(0xE3, 0xB0, 0x90), 255);
    f.fill_rounded(
        Rect::new((w * 0.5 - h * 0.18) as i32, (h * 0.2) as i32, (h * 0.36) as i32, (h * 0.12) as i32),
        (h * 0.06) as i32,
        Rgb::new(0x3B, 0x2A, 0x20),
        255,
    );
    f.to_i420(0)
}

fn advisor() -> Picture {
    person(640, 480, Rgb::new(0x1F, 0x3B, 0x5C))
}

fn customer() -> Picture {
    person(320, 240, Rgb::new(0x8C, 0x3B, 0x2E))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn draw(lang: &str, (w, h): (u32, u32), v: &View, remote: Option<&Picture>, own: Option<&Picture>) -> Frame {
    let mut compositor = Compositor::new(Lang::built_in(lang).expect("built-in language"));
    let mut frame = Frame::new(w, h);
    compositor.compose(v, remote, own, &mut frame);
    frame
}

/// Compares `frame` with tests/snapshots/`name`.png (or rewrites it).
fn check(name: &str, frame: &Frame) {
    let reference = root().join("tests/snapshots").join(format!("{name}.png"));
    let png = frame.to_png().expect("PNG encoding");
    if std::env::var_os("KIOSKD_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&reference, &png).expect("writing the reference");
        return;
    }
    let actual_path = root().join("target/snapshots").join(format!("{name}.png"));
    let fail = |why: String| -> ! {
        let _ = std::fs::create_dir_all(actual_path.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(&actual_path, &png);
        panic!(
            "snapshot {name}: {why}\n  reference: {}\n  drawn:     {}\n  (KIOSKD_UPDATE_SNAPSHOTS=1 rewrites the references)",
            reference.display(),
            actual_path.display()
        );
    };
    let bytes = match std::fs::read(&reference) {
        Ok(b) => b,
        Err(e) => fail(format!("no reference ({e})")),
    };
    let want = match Frame::from_png(&bytes) {
        Ok(f) => f,
        Err(e) => fail(format!("unreadable reference: {e}")),
    };
    if (want.width, want.height) != (frame.width, frame.height) {
        fail(format!("size {}x{}, reference {}x{}", frame.width, frame.height, want.width, want.height));
    }
    let differing = frame
        .pixels
        .iter()
        .zip(&want.pixels)
        .filter(|(a, b)| {
            let (a, b) = (Rgb(**a), Rgb(**b));
            a.r().abs_diff(b.r()) > CHANNEL_TOLERANCE
                || a.g().abs_diff(b.g()) > CHANNEL_TOLERANCE
                || a.b().abs_diff(b.b()) > CHANNEL_TOLERANCE
        })
        .count();
    let share = differing as f64 / frame.pixels.len() as f64;
    if share > MAX_DIFFERING {
        fail(format!(
            "{differing} pixels ({:.2} %) differ, at most {:.2} % may",
            share * 100.0,
            MAX_DIFFERING * 100.0
        ));
    }
}

const SMALL: (u32, u32) = (640, 360);
const LARGE: (u32, u32) = (1280, 720);

#[test]
fn idle() {
    check("en-idle", &draw("en", SMALL, &view("en", KioskState::Idle), None, None));
    check("zh-idle", &draw("zh", SMALL, &view("zh", KioskState::Idle), None, None));
    check("zh-idle-1280", &draw("zh", LARGE, &view("zh", KioskState::Idle), None, None));
}

#[test]
fn idle_with_device_trouble() {
    let mut v = view("en", KioskState::Idle);
    v.trouble = Trouble { camera: true, microphone: false, speaker: false };
    check("en-idle-camera-trouble", &draw("en", SMALL, &v, None, None));
    let mut v = view("zh", KioskState::Idle);
    v.trouble = Trouble { camera: false, microphone: true, speaker: false };
    check("zh-idle-microphone-trouble", &draw("zh", SMALL, &v, None, None));
}

#[test]
fn requesting_and_ringing() {
    check("en-requesting", &draw("en", SMALL, &view("en", KioskState::Requesting), None, None));
    check("en-ringing", &draw("en", SMALL, &view("en", KioskState::Ringing), None, None));
    check("zh-ringing", &draw("zh", SMALL, &view("zh", KioskState::Ringing), None, None));
}

#[test]
fn waiting() {
    let waiting = |position, estimated_wait_s| KioskState::Waiting { position, estimated_wait_s };
    check("en-waiting", &draw("en", SMALL, &view("en", waiting(3, Some(250))), None, None));
    check("en-waiting-next", &draw("en", SMALL, &view("en", waiting(1, Some(40))), None, None));
    check("en-waiting-no-estimate", &draw("en", SMALL, &view("en", waiting(12, None)), None, None));
    check("zh-waiting", &draw("zh", SMALL, &view("zh", waiting(3, Some(250))), None, None));
}

#[test]
fn in_call() {
    let (remote, own) = (advisor(), customer());
    check("en-in-call", &draw("en", SMALL, &call_view("en", true), Some(&remote), Some(&own)));
    check("en-in-call-1280", &draw("en", LARGE, &call_view("en", true), Some(&remote), Some(&own)));
    check("zh-in-call", &draw("zh", SMALL, &call_view("zh", true), Some(&remote), Some(&own)));
    let mut waiting = call_view("en", false);
    waiting.texts.clear();
    waiting.video = VideoState::Waiting;
    check("en-in-call-waiting-for-video", &draw("en", SMALL, &waiting, None, Some(&own)));
    let mut paused = call_view("en", false);
    paused.video = VideoState::Stalled;
    paused.trouble = Trouble { camera: true, microphone: false, speaker: false };
    check("en-in-call-paused-camera-trouble", &draw("en", SMALL, &paused, Some(&remote), None));
}

#[test]
fn ended_busy_offline() {
    let ended = KioskState::Ended { reason: EndReason::AgentHungUp };
    check("en-ended", &draw("en", SMALL, &view("en", ended.clone()), None, None));
    check("zh-ended", &draw("zh", SMALL, &view("zh", ended), None, None));
    check("en-busy", &draw("en", SMALL, &view("en", KioskState::Busy), None, None));
    check("en-offline", &draw("en", SMALL, &view("en", KioskState::Offline { resuming: false }), None, None));
    check("zh-offline", &draw("zh", SMALL, &view("zh", KioskState::Offline { resuming: false }), None, None));
    check(
        "en-reconnecting",
        &draw("en", SMALL, &view("en", KioskState::Offline { resuming: true }), None, None),
    );
}
