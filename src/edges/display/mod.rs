//! The kiosk's display thread: owns the screen for the daemon's whole life, keeps the screen's
//! state ([`UiState`]), composes frames ([`Compositor`]) and shows them.
//!
//! ```text
//! kiosk core task ──UiInput (state, texts, problems)──┐
//! video-recv thread ──advisor's pictures (newest)─────┼─► display thread ─► compose ─► Screen::show_frame
//! video-send thread ──own pictures, small (newest)────┘                      (DRM page flip, fbdev, Y4M)
//! ```
//!
//! Producers never wait: inputs queue (bounded), pictures replace the one not yet shown. The
//! thread composes when something changed — at most [`FRAME_INTERVAL`] apart while video
//! plays — and otherwise sleeps until the next input or until the view changes by itself.
//! A screen that cannot be opened, or fails, is tried again every [`REOPEN`]; the kiosk goes on
//! meanwhile. With a screenshot folder, a PNG of the screen is written at each change of what
//! it shows, and one a second into a call's video (`kioskd demo --screenshots`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::edges::devices::Opener;
use crate::edges::devices::screen::Screen;
use crate::media::Picture;
use crate::ui::{Compositor, Frame, Lang, UiInput, UiSettings, UiState, VideoState, View};

/// Frames at most this often (30 a second), even when video comes faster.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// How often a screen that failed (or was missing) is opened again.
pub const REOPEN: Duration = Duration::from_secs(5);
/// Inputs waiting for the thread; state changes and texts are a few a second at most, so a
/// full queue means the thread is stuck: the oldest input is dropped.
const INPUT_QUEUE: usize = 256;
/// How often the thread looks up when nothing happens (bounds how late it notices that every
/// handle is gone).
const IDLE_WAKE: Duration = Duration::from_millis(250);
/// The customer's own picture is shrunk to this width at most before it is handed over.
pub const OWN_PICTURE_WIDTH: u32 = 320;

/// How the display starts.
#[derive(Debug, Clone)]
pub struct DisplayOptions {
    pub lang: Lang,
    pub settings: UiSettings,
    /// The frame size for a screen without a mode of its own (a Y4M file, none).
    pub size: (u32, u32),
    /// Write a PNG of the screen into this folder at each change of what it shows.
    pub screenshots: Option<PathBuf>,
}

/// What the display thread did, for tests and the demo.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DisplayStats {
    /// Frames composed.
    pub frames_composed: u64,
    /// Frames the screen took.
    pub frames_shown: u64,
    /// Advisor's pictures handed to the display, and those replaced by a newer one before
    /// they were drawn.
    pub pictures_received: u64,
    pub pictures_replaced: u64,
    /// Screenshots written, in order.
    pub screenshots: Vec<PathBuf>,
    /// The screen's last error, if it failed.
    pub screen_error: Option<String>,
}

/// What producers leave for the thread.
#[derive(Default)]
struct Inbox {
    inputs: VecDeque<UiInput>,
    remote: Option<Picture>,
    own: Option<Picture>,
    lang: Option<Lang>,
    stats: DisplayStats,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding the lock leaves an inbox that is still consistent.
        self.inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle on the display thread: cheap to clone; the thread ends when every handle is gone.
#[derive(Clone)]
pub struct Display {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Display")
    }
}

/// The display thread, to wait for its end (after every [`Display`] handle is dropped).
#[derive(Debug)]
pub struct DisplayThread(JoinHandle<DisplayStats>);

impl DisplayThread {
    /// Waits until the thread has finished (its last screenshot written); its final figures.
    pub fn join(self) -> DisplayStats {
        self.0.join().unwrap_or_else(|_| {
            error!("the display thread panicked");
            DisplayStats::default()
        })
    }
}

impl Display {
    /// Starts the display thread ("display") with the screen `screen` opens (None: compose only
    /// for screenshots, or not at all).
    pub fn spawn(
        screen: Option<Opener<dyn Screen>>,
        options: DisplayOptions,
    ) -> std::io::Result<(Display, DisplayThread)> {
        let shared = Arc::new(Shared { inbox: Mutex::new(Inbox::default()), wake: Condvar::new() });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("display".into())
            .spawn(move || run(&thread_shared, screen, options))?;
        Ok((Display { shared }, DisplayThread(handle)))
    }

    /// Tells the screen about the kiosk (state, a text, device problems). Never waits.
    pub fn update(&self, input: UiInput) {
        let mut inbox = self.shared.lock();
        if inbox.inputs.len() >= INPUT_QUEUE {
            inbox.inputs.pop_front();
            warn!("display thread behind; an input was dropped");
        }
        inbox.inputs.push_back(input);
        drop(inbox);
        self.shared.wake.notify_one();
    }

    /// The advisor's newest picture (replaces one not yet drawn). Never waits.
    pub fn show_remote(&self, pic: Picture) {
        let mut inbox = self.shared.lock();
        inbox.stats.pictures_received += 1;
        if inbox.remote.replace(pic).is_some() {
            inbox.stats.pictures_replaced += 1;
        }
        drop(inbox);
        self.shared.wake.notify_one();
    }

    /// The customer's own newest picture, for the self-view (shrink it first: see
    /// [`shrink`]). Never waits.
    pub fn show_own(&self, pic: Picture) {
        self.shared.lock().own = Some(pic);
        self.shared.wake.notify_one();
    }

    /// Shows the screen's texts in another language from the next frame on.
    pub fn set_lang(&self, lang: Lang) {
        self.shared.lock().lang = Some(lang);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> DisplayStats {
        self.shared.lock().stats.clone()
    }
}

/// Everything the thread took from the inbox in one go.
struct Taken {
    inputs: VecDeque<UiInput>,
    remote: Option<Picture>,
    own: Option<Picture>,
    lang: Option<Lang>,
}

fn run(shared: &Arc<Shared>, opener: Option<Opener<dyn Screen>>, options: DisplayOptions) -> DisplayStats {
    let mut ui = UiState::new(options.settings.clone());
    let mut compositor = Compositor::new(options.lang.clone());
    let mut screen: Option<Box<dyn Screen>> = None;
    let mut next_open = opener.as_ref().map(|_| Instant::now());
    let mut frame = Frame::new(0, 0);
    let (mut remote, mut own): (Option<Picture>, Option<Picture>) = (None, None);
    let mut last_view: Option<View> = None;
    let mut last_compose: Option<Instant> = None;
    let mut dirty = true;
    let mut shots = Screenshots::new(options.screenshots.clone());
    info!(screen = opener.is_some(), "display started");
    loop {
        let now = Instant::now();
        let mut deadline = now + IDLE_WAKE;
        for t in [ui.poll_timeout(now), next_open, last_compose.filter(|_| dirty).map(|t| t + FRAME_INTERVAL)]
            .into_iter()
            .flatten()
        {
            deadline = deadline.min(t);
        }
        let Some(taken) = wait(shared, deadline) else { break };
        let now = Instant::now();
        if let (Some(open), Some(at)) = (&opener, next_open)
            && now >= at
        {
            match open() {
                Ok(s) => {
                    info!(screen = %s.describe(), "screen open");
                    screen = Some(s);
                    next_open = None;
                    dirty = true;
                }
                Err(e) => {
                    warn!(error = %e, retry_s = REOPEN.as_secs(), "screen unavailable");
                    shared.lock().stats.screen_error = Some(e.to_string());
                    next_open = Some(now + REOPEN);
                }
            }
        }
        for input in taken.inputs {
            let state_changed = matches!(input, UiInput::State(_));
            ui.handle_input(input);
            // States that came and went before a frame was due still get their screenshot.
            if state_changed && shots.enabled() {
                let view = ui.view(now);
                if let Some(name) = shots.take_due(&view, now) {
                    let (w, h) = screen.as_ref().and_then(|s| s.native_size()).unwrap_or(options.size);
                    let mut shot = Frame::new(w, h);
                    let in_call = ui.shows_video();
                    let pictures = (remote.as_ref().filter(|_| in_call), own.as_ref().filter(|_| in_call));
                    compositor.compose(&view, pictures.0, pictures.1, &mut shot);
                    let written = shots.write(&name, &shot);
                    shared.lock().stats.screenshots.extend(written);
                }
            }
        }
        if !ui.shows_video() {
            // The call is over: nothing of it stays on screen or in memory.
            remote = None;
            own = None;
        }
        if let Some(pic) = taken.remote
            && ui.handle_picture(now)
        {
            remote = Some(pic);
            dirty = true;
        }
        if let Some(pic) = taken.own.filter(|_| ui.shows_video()) {
            own = Some(pic);
            dirty = true;
        }
        if let Some(lang) = taken.lang {
            compositor.set_lang(lang);
            dirty = true;
        }
        let view = ui.view(now);
        shots.note(&view, now);
        if last_view.as_ref() != Some(&view) {
            dirty = true;
        }
        let (w, h) = screen.as_ref().and_then(|s| s.native_size()).unwrap_or(options.size);
        if (frame.width, frame.height) != (w, h) {
            frame = Frame::new(w, h);
        }
        if screen.is_none() {
            // Nobody looks: draw only what a screenshot needs.
            if let Some(name) = shots.take_due(&view, now) {
                compositor.compose(&view, remote.as_ref(), own.as_ref(), &mut frame);
                let written = shots.write(&name, &frame);
                let mut inbox = shared.lock();
                inbox.stats.frames_composed += 1;
                inbox.stats.screenshots.extend(written);
            }
            dirty = false;
            last_view = Some(view);
            continue;
        }
        let due = last_compose.is_none_or(|t| now >= t + FRAME_INTERVAL);
        if !dirty || !due {
            continue;
        }
        dirty = false;
        compositor.compose(&view, remote.as_ref(), own.as_ref(), &mut frame);
        last_compose = Some(now);
        let shown = match screen.as_mut().map(|s| s.show_frame(&frame)) {
            None => false,
            Some(Ok(())) => true,
            Some(Err(e)) if e.is_timeout() => {
                debug!(error = %e, "display stalled");
                false
            }
            Some(Err(e)) => {
                error!(error = %e, retry_s = REOPEN.as_secs(), "screen failed");
                screen = None;
                next_open = Some(now + REOPEN);
                shared.lock().stats.screen_error = Some(e.to_string());
                false
            }
        };
        let written = shots.take_due(&view, now).and_then(|name| shots.write(&name, &frame));
        let mut inbox = shared.lock();
        inbox.stats.frames_composed += 1;
        inbox.stats.frames_shown += u64::from(shown);
        inbox.stats.screenshots.extend(written);
        drop(inbox);
        last_view = Some(view);
    }
    debug!("every display handle dropped; display thread ends");
    shared.lock().stats.clone()
}

/// Waits until something arrives or `deadline`; None when every handle is gone.
fn wait(shared: &Arc<Shared>, deadline: Instant) -> Option<Taken> {
    let mut inbox = shared.lock();
    loop {
        let pending =
            !inbox.inputs.is_empty() || inbox.remote.is_some() || inbox.own.is_some() || inbox.lang.is_some();
        // Only this thread's own reference left: nobody can send anything any more.
        if !pending && Arc::strong_count(shared) == 1 {
            return None;
        }
        let now = Instant::now();
        if pending || now >= deadline {
            return Some(Taken {
                inputs: std::mem::take(&mut inbox.inputs),
                remote: inbox.remote.take(),
                own: inbox.own.take(),
                lang: inbox.lang.take(),
            });
        }
        inbox = shared.wake.wait_timeout(inbox, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// PNGs of the screen at each change of what it shows.
struct Screenshots {
    dir: Option<PathBuf>,
    count: u32,
    last_name: Option<String>,
    /// When the advisor's video started in this call, and whether it was photographed.
    video_since: Option<Instant>,
    video_taken: bool,
}

impl Screenshots {
    /// How long the advisor's video plays before its screenshot (the greeting text is in by
    /// then).
    const VIDEO_AFTER: Duration = Duration::from_secs(1);

    fn new(dir: Option<PathBuf>) -> Self {
        if let Some(d) = &dir
            && let Err(e) = std::fs::create_dir_all(d)
        {
            warn!(dir = %d.display(), error = %e, "cannot create the screenshot folder");
        }
        Self { dir, count: 0, last_name: None, video_since: None, video_taken: false }
    }

    fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// Follows the call's video (its screenshot waits until it has played a while).
    fn note(&mut self, view: &View, now: Instant) {
        if !matches!(view.state, crate::call::KioskState::Connected { .. }) {
            self.video_since = None;
            self.video_taken = false;
        } else if view.video == VideoState::Live {
            self.video_since.get_or_insert(now);
        }
    }

    /// The screenshot due for `view` at `now`, if any (taken: asked once).
    fn take_due(&mut self, view: &View, now: Instant) -> Option<String> {
        self.dir.as_ref()?;
        let name = view.name();
        if self.last_name.as_ref() != Some(&name) {
            self.last_name = Some(name.clone());
            return Some(name);
        }
        let video_due =
            self.video_since.is_some_and(|t| now.saturating_duration_since(t) >= Self::VIDEO_AFTER);
        if view.video == VideoState::Live && video_due && !self.video_taken {
            self.video_taken = true;
            return Some("in-call-video".into());
        }
        None
    }

    fn write(&mut self, name: &str, frame: &Frame) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let path = dir.join(format!("{:03}-{name}.png", self.count));
        self.count += 1;
        let result = frame
            .to_png_with(png::Compression::Fast)
            .map_err(|e| e.to_string())
            .and_then(|png| std::fs::write(&path, png).map_err(|e| e.to_string()));
        match result {
            Ok(()) => Some(path),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "screenshot not written");
                None
            }
        }
    }
}

/// `pic` shrunk (nearest pixel) to at most `max_width` wide, aspect kept, even sizes: the
/// self-view needs a small picture and copying a small one is cheap.
pub fn shrink(pic: &Picture, max_width: u32) -> Picture {
    if pic.width <= max_width || pic.width == 0 || pic.height == 0 {
        return pic.clone();
    }
    let w = max_width & !1;
    let h = ((u64::from(pic.height) * u64::from(w) / u64::from(pic.width)) as u32 & !1).max(2);
    let mut out = Picture::black(w, h, pic.captured_us);
    let well_formed = pic.data.len() >= Picture::i420_len(pic.width, pic.height)
        && pic.width.is_multiple_of(2)
        && pic.height.is_multiple_of(2);
    if !well_formed {
        return out;
    }
    let (sw, sh, dw, dh) = (pic.width as usize, pic.height as usize, w as usize, h as usize);
    let (sy, su, sv) = pic.planes();
    let (dy, rest) = out.data.split_at_mut(dw * dh);
    let (du, dv) = rest.split_at_mut((dw / 2) * (dh / 2));
    for y in 0..dh {
        let row = &sy[(y * sh / dh) * sw..];
        for x in 0..dw {
            dy[y * dw + x] = row[x * sw / dw];
        }
    }
    let (scw, dcw) = (sw / 2, dw / 2);
    for y in 0..dh / 2 {
        let src = (y * (sh / 2) / (dh / 2)) * scw;
        for x in 0..dcw {
            let sx = x * scw / dcw;
            du[y * dcw + x] = su[src + sx];
            dv[y * dcw + x] = sv[src + sx];
        }
    }
    out
}

/// Figures of `kioskd bench --compose`: milliseconds to compose one frame, as CPU time of
/// the composing thread (what it costs a core, whatever else the machine runs) and as wall
/// time.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeBench {
    pub width: u32,
    pub height: u32,
    pub video_width: u32,
    pub video_height: u32,
    pub frames: usize,
    pub cpu_p50_ms: f64,
    pub cpu_p95_ms: f64,
    pub cpu_max_ms: f64,
    pub cpu_mean_ms: f64,
    pub wall_p50_ms: f64,
    pub wall_p95_ms: f64,
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok { Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32) } else { Duration::ZERO }
}

/// Composes `frames` frames of a call (the advisor's video full screen, a self-view, the
/// advisor's name, the recording notice and two texts) at `width`×`height` on this thread,
/// each with a new picture, and measures each.
pub fn bench_compose(width: u32, height: u32, video: (u32, u32), frames: usize) -> ComposeBench {
    use crate::call::KioskState;
    use crate::edges::devices::camera::synthetic::test_pattern;
    let mut compositor = Compositor::new(Lang::english());
    let mut frame = Frame::new(width, height);
    let view = View {
        state: KioskState::Connected { agent: "Anna Schmidt".into(), recorded: true },
        settings: UiSettings {
            branch: "Main Street".into(),
            opening_hours: String::new(),
            recording_notice: true,
        },
        trouble: Default::default(),
        texts: vec![
            "Good morning, this is Anna. How can I help you today?".into(),
            "Please hold your ID card up to the camera.".into(),
        ],
        video: VideoState::Live,
    };
    // Pictures made beforehand: the camera's work is not the compositor's.
    let remote: Vec<Picture> = (0..30).map(|n| test_pattern(video.0, video.1, n, 0)).collect();
    let own: Vec<Picture> =
        (0..30).map(|n| shrink(&test_pattern(640, 480, n, 0), OWN_PICTURE_WIDTH)).collect();
    // Warm the glyph cache as a running kiosk has it.
    compositor.compose(&view, remote.first(), own.first(), &mut frame);
    let (mut cpu, mut wall): (Vec<f64>, Vec<f64>) = (0..frames.max(1))
        .map(|i| {
            let (start, start_cpu) = (Instant::now(), thread_cpu_time());
            compositor.compose(&view, Some(&remote[i % remote.len()]), Some(&own[i % own.len()]), &mut frame);
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            (ms(thread_cpu_time().saturating_sub(start_cpu)), ms(start.elapsed()))
        })
        .unzip();
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    ComposeBench {
        width,
        height,
        video_width: video.0,
        video_height: video.1,
        frames: cpu.len(),
        cpu_p50_ms: r(at(&cpu, 0.50)),
        cpu_p95_ms: r(at(&cpu, 0.95)),
        cpu_max_ms: r(cpu[cpu.len() - 1]),
        cpu_mean_ms: r(cpu.iter().sum::<f64>() / cpu.len() as f64),
        wall_p50_ms: r(at(&wall, 0.50)),
        wall_p95_ms: r(at(&wall, 0.95)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::KioskState;
    use crate::edges::devices::HwError;

    /// A screen that keeps every frame it is shown.
    struct Recorder(Arc<Mutex<Vec<Frame>>>, (u32, u32));

    impl Screen for Recorder {
        fn show(&mut self, _pic: &Picture) -> Result<(), HwError> {
            Ok(())
        }
        fn show_frame(&mut self, frame: &Frame) -> Result<(), HwError> {
            self.0.lock().unwrap().push(frame.clone());
            Ok(())
        }
        fn native_size(&self) -> Option<(u32, u32)> {
            Some(self.1)
        }
        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    fn options(screenshots: Option<PathBuf>) -> DisplayOptions {
        DisplayOptions {
            lang: Lang::english(),
            settings: UiSettings::default(),
            size: (320, 180),
            screenshots,
        }
    }

    #[test]
    fn shrink_keeps_aspect_and_even_sizes() {
        let pic = shrink(&Picture::black(640, 480, 5), 320);
        assert_eq!((pic.width, pic.height, pic.captured_us), (320, 240, 5));
        let pic = shrink(&Picture::black(1280, 720, 0), 321);
        assert_eq!((pic.width, pic.height), (320, 180));
        assert_eq!(shrink(&Picture::black(160, 120, 0), 320).width, 160);
        let broken = Picture { width: 640, height: 480, data: vec![1; 10], captured_us: 0 };
        assert_eq!(shrink(&broken, 320).width, 320);
    }

    #[test]
    fn the_thread_shows_states_at_native_size_and_writes_screenshots() {
        let dir = tempfile::tempdir().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let recorder = frames.clone();
        let opener: Opener<dyn Screen> =
            Arc::new(move || Ok(Box::new(Recorder(recorder.clone(), (64, 36))) as Box<dyn Screen>));
        let (display, thread) =
            Display::spawn(Some(opener), options(Some(dir.path().to_path_buf()))).unwrap();
        display.update(UiInput::State(KioskState::Idle));
        // Pictures outside a call are dropped.
        display.show_remote(Picture::black(64, 48, 0));
        display.update(UiInput::State(KioskState::Ringing));
        drop(display);
        thread.join();
        let frames = frames.lock().unwrap();
        assert!(!frames.is_empty());
        assert!(frames.iter().all(|f| (f.width, f.height) == (64, 36)), "native size");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.ends_with("-ringing.png")), "{names:?}");
        for n in &names {
            let f = Frame::from_png(&std::fs::read(dir.path().join(n)).unwrap()).unwrap();
            assert_eq!((f.width, f.height), (64, 36));
        }
    }

    #[test]
    fn a_missing_screen_does_not_stop_the_display() {
        let opener: Opener<dyn Screen> =
            Arc::new(|| Err(HwError::Misconfigured("no display connected".into())));
        let (display, thread) = Display::spawn(Some(opener), options(None)).unwrap();
        display.update(UiInput::State(KioskState::Idle));
        display.update(UiInput::State(KioskState::Busy));
        let stats = loop {
            let s = display.stats();
            if s.screen_error.is_some() {
                break s;
            }
            std::thread::yield_now();
        };
        assert!(stats.screen_error.unwrap().contains("no display connected"));
        assert_eq!(stats.frames_shown, 0);
        drop(display);
        thread.join();
    }

    #[test]
    fn compose_bench_reports_figures() {
        let b = bench_compose(320, 180, (160, 120), 3);
        assert_eq!(b.frames, 3);
        assert!(b.cpu_p50_ms > 0.0 && b.cpu_p50_ms <= b.cpu_p95_ms && b.cpu_p95_ms <= b.cpu_max_ms);
        assert!(b.wall_p50_ms > 0.0 && b.wall_p50_ms <= b.wall_p95_ms);
    }
}
