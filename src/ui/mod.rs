//! The kiosk screen, sans-IO: what the customer sees, built from the kiosk's state, and drawn
//! into an in-memory frame. No threads, clocks or devices here: the display thread
//! (`crate::edges::display`) feeds it and shows its frames.
//!
//! 1. [`UiState::handle_input`] with each [`UiInput`]: the call machine's state, an advisor's
//!    text, device problems; [`UiState::handle_picture`] when a picture of the advisor arrives.
//! 2. [`UiState::view`]`(now)` gives the [`View`]: everything the screen shows, comparable, so
//!    that the display redraws only when it changes (or when video plays).
//! 3. [`Compositor::compose`] draws a view, the advisor's latest picture and the customer's
//!    own into a [`Frame`] of the display's size, in the configured [`Lang`].
//! 4. [`UiState::poll_timeout`] says when the view changes by itself (video that stopped
//!    coming shows "video paused"), so the driver sleeps until then or the next input.
//!
//! ```no_run
//! use std::time::Instant;
//! use kioskd::call::KioskState;
//! use kioskd::ui::{Compositor, Frame, Lang, UiInput, UiSettings, UiState};
//!
//! let mut ui = UiState::new(UiSettings::default());
//! let mut compositor = Compositor::new(Lang::english());
//! let mut frame = Frame::new(1280, 720);
//! let now = Instant::now();
//! ui.handle_input(UiInput::State(KioskState::Idle));
//! compositor.compose(&ui.view(now), None, None, &mut frame);
//! ```

pub mod compose;
pub mod frame;
pub mod lang;
pub mod text;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use self::compose::Compositor;
pub use self::frame::{Frame, Rect, Rgb};
pub use self::lang::{Key, Lang, LangError};
use crate::call::KioskState;

/// Video that stopped arriving for this long shows as paused (at 30 fps, 60 frames: longer
/// than a keyframe request takes on a good network).
pub const VIDEO_STALL: Duration = Duration::from_secs(2);
/// The advisor's texts shown at once (the latest); older ones scroll away.
pub const TEXTS_SHOWN: usize = 3;
/// Longest text shown, in characters (the protocol allows more; the screen has no scrolling).
pub const TEXT_CHARS: usize = 280;

/// What the branch configured (`[ui]` in the kiosk's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UiSettings {
    /// Shown in the header ("Main Street branch").
    pub branch: String,
    /// Shown at the foot of the idle screen; empty: not shown.
    pub opening_hours: String,
    /// The idle screen tells customers that calls may be recorded (the kiosk then sends
    /// their consent with each call request).
    pub recording_notice: bool,
}

/// Devices that do not work, as the customer needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trouble {
    pub camera: bool,
    pub microphone: bool,
    pub speaker: bool,
}

impl Trouble {
    /// From problem lines as the media code writes them ("camera: ...", "microphone: ...").
    pub fn from_problems(problems: &[String]) -> Self {
        let has = |what: &str| problems.iter().any(|p| p.starts_with(what));
        Self { camera: has("camera"), microphone: has("microphone"), speaker: has("speaker") }
    }

    pub fn any(&self) -> bool {
        self.camera || self.microphone || self.speaker
    }

    fn or(self, other: Self) -> Self {
        Self {
            camera: self.camera || other.camera,
            microphone: self.microphone || other.microphone,
            speaker: self.speaker || other.speaker,
        }
    }
}

/// The advisor's video, during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoState {
    /// No picture yet in this call.
    Waiting,
    /// Pictures arrive.
    Live,
    /// No picture for [`VIDEO_STALL`]: the last one stays, marked as paused.
    Stalled,
}

/// Everything the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub state: KioskState,
    pub settings: UiSettings,
    pub trouble: Trouble,
    /// The advisor's texts in this call, oldest first, at most [`TEXTS_SHOWN`].
    pub texts: Vec<String>,
    pub video: VideoState,
}

impl View {
    /// A short name of what is shown, for screenshot files: `idle`, `waiting`, `in-call`...
    pub fn name(&self) -> String {
        let base = match &self.state {
            KioskState::Connected { .. } => "in-call",
            KioskState::Offline { resuming: true } => "reconnecting",
            other => other.name(),
        };
        if self.trouble.any() && !matches!(self.state, KioskState::Connected { .. }) {
            format!("{base}-device-trouble")
        } else {
            base.to_string()
        }
    }
}

/// An input to the screen's state.
#[derive(Debug, Clone, PartialEq)]
pub enum UiInput {
    /// The call machine's state changed.
    State(KioskState),
    /// The advisor sent a text (shown until the call ends).
    Text(String),
    /// Devices found missing when the kiosk started or reloaded its configuration.
    DeviceProblems(Vec<String>),
    /// Devices that failed during the last call (replaced after every call).
    CallProblems(Vec<String>),
    /// New branch settings (configuration reloaded).
    Settings(UiSettings),
}

/// The screen's state: the kiosk's state and what the screen keeps of the call.
#[derive(Debug, Clone)]
pub struct UiState {
    settings: UiSettings,
    state: KioskState,
    texts: VecDeque<String>,
    device_trouble: Trouble,
    call_trouble: Trouble,
    /// When the last picture of the advisor arrived in this call.
    last_picture: Option<Instant>,
}

impl UiState {
    /// Starts offline (the kiosk has not reached the hub yet).
    pub fn new(settings: UiSettings) -> Self {
        Self {
            settings,
            state: KioskState::Offline { resuming: false },
            texts: VecDeque::new(),
            device_trouble: Trouble::default(),
            call_trouble: Trouble::default(),
            last_picture: None,
        }
    }

    pub fn handle_input(&mut self, input: UiInput) {
        match input {
            UiInput::State(state) => {
                let in_call = |s: &KioskState| matches!(s, KioskState::Connected { .. });
                // A call held across a reconnection keeps its texts; anything else ends them:
                // the next customer never sees the last one's conversation.
                let keeps_call = in_call(&state) || state == KioskState::Offline { resuming: true };
                let same_call = in_call(&self.state) || self.state == KioskState::Offline { resuming: true };
                if !keeps_call || !same_call {
                    self.texts.clear();
                }
                if !in_call(&state) {
                    self.last_picture = None;
                }
                self.state = state;
            }
            UiInput::Text(body) => {
                if matches!(self.state, KioskState::Connected { .. }) {
                    let body: String =
                        body.chars().filter(|c| !c.is_control() || *c == '\n').take(TEXT_CHARS).collect();
                    self.texts.push_back(body);
                    while self.texts.len() > TEXTS_SHOWN {
                        self.texts.pop_front();
                    }
                }
            }
            UiInput::DeviceProblems(p) => self.device_trouble = Trouble::from_problems(&p),
            UiInput::CallProblems(p) => self.call_trouble = Trouble::from_problems(&p),
            UiInput::Settings(s) => self.settings = s,
        }
    }

    /// A picture of the advisor arrived at `now`. Returns false when no call shows it (the
    /// last pictures of a call that just ended): the display drops it.
    pub fn handle_picture(&mut self, now: Instant) -> bool {
        if matches!(self.state, KioskState::Connected { .. }) {
            self.last_picture = Some(now);
            true
        } else {
            false
        }
    }

    /// True while the advisor's pictures are shown (the display keeps them only then).
    pub fn shows_video(&self) -> bool {
        matches!(self.state, KioskState::Connected { .. })
    }

    /// What the screen shows at `now`.
    #[must_use]
    pub fn view(&self, now: Instant) -> View {
        let video = match self.last_picture {
            None => VideoState::Waiting,
            Some(t) if now.saturating_duration_since(t) >= VIDEO_STALL => VideoState::Stalled,
            Some(_) => VideoState::Live,
        };
        View {
            state: self.state.clone(),
            settings: self.settings.clone(),
            trouble: self.device_trouble.or(self.call_trouble),
            texts: self.texts.iter().cloned().collect(),
            video,
        }
    }

    /// When the view changes without an input (video turning paused); None: only on input.
    #[must_use]
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.last_picture.map(|t| t + VIDEO_STALL).filter(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EndReason;

    fn connected() -> KioskState {
        KioskState::Connected { agent: "agent-1".into(), recorded: false }
    }

    #[test]
    fn texts_belong_to_one_call() {
        let t0 = Instant::now();
        let mut ui = UiState::new(UiSettings::default());
        ui.handle_input(UiInput::Text("before any call".into()));
        assert!(ui.view(t0).texts.is_empty(), "no call, no text");
        ui.handle_input(UiInput::State(connected()));
        for n in 0..5 {
            ui.handle_input(UiInput::Text(format!("text {n}")));
        }
        assert_eq!(ui.view(t0).texts, ["text 2", "text 3", "text 4"]);
        ui.handle_input(UiInput::State(KioskState::Offline { resuming: true }));
        ui.handle_input(UiInput::State(connected()));
        assert_eq!(ui.view(t0).texts.len(), 3, "a resumed call keeps its texts");
        ui.handle_input(UiInput::State(KioskState::Ended { reason: EndReason::AgentHungUp }));
        assert!(ui.view(t0).texts.is_empty(), "the next customer sees nothing of this call");
        ui.handle_input(UiInput::State(connected()));
        assert!(ui.view(t0).texts.is_empty());
    }

    #[test]
    fn long_or_odd_texts_are_cut_and_cleaned() {
        let t0 = Instant::now();
        let mut ui = UiState::new(UiSettings::default());
        ui.handle_input(UiInput::State(connected()));
        ui.handle_input(UiInput::Text(format!("a\u{7}b\n{}", "x".repeat(1000))));
        let text = &ui.view(t0).texts[0];
        assert!(text.starts_with("ab\nx"));
        assert_eq!(text.chars().count(), TEXT_CHARS);
    }

    #[test]
    fn video_goes_from_waiting_to_live_to_paused() {
        let t0 = Instant::now();
        let mut ui = UiState::new(UiSettings::default());
        assert!(!ui.handle_picture(t0), "no call: the picture is dropped");
        ui.handle_input(UiInput::State(connected()));
        assert_eq!(ui.view(t0).video, VideoState::Waiting);
        assert_eq!(ui.poll_timeout(t0), None);
        assert!(ui.handle_picture(t0));
        assert_eq!(ui.view(t0).video, VideoState::Live);
        assert_eq!(ui.poll_timeout(t0), Some(t0 + VIDEO_STALL));
        assert_eq!(ui.view(t0 + VIDEO_STALL).video, VideoState::Stalled);
        assert_eq!(ui.poll_timeout(t0 + VIDEO_STALL), None);
        ui.handle_picture(t0 + VIDEO_STALL);
        assert_eq!(ui.view(t0 + VIDEO_STALL).video, VideoState::Live);
        ui.handle_input(UiInput::State(KioskState::Idle));
        assert_eq!(ui.view(t0 + VIDEO_STALL).video, VideoState::Waiting);
    }

    #[test]
    fn device_trouble_comes_from_start_and_from_the_last_call() {
        let t0 = Instant::now();
        let mut ui = UiState::new(UiSettings::default());
        ui.handle_input(UiInput::DeviceProblems(vec!["camera: /dev/video0: not found".into()]));
        ui.handle_input(UiInput::State(KioskState::Idle));
        let view = ui.view(t0);
        assert_eq!(view.trouble, Trouble { camera: true, ..Trouble::default() });
        assert_eq!(view.name(), "idle-device-trouble");
        ui.handle_input(UiInput::CallProblems(vec!["microphone: hw:1: gone".into()]));
        assert_eq!(ui.view(t0).trouble, Trouble { camera: true, microphone: true, speaker: false });
        ui.handle_input(UiInput::DeviceProblems(vec![]));
        ui.handle_input(UiInput::CallProblems(vec![]));
        assert_eq!(ui.view(t0).name(), "idle");
    }
}
