//! Draws a [`View`] into a [`Frame`] of any size: the waiting screens as a centred column on a
//! calm light background with the branch's name in a header, the call as the advisor's video
//! full screen with the customer's own picture small in a corner and the advisor's name, the
//! recording notice and texts over it.
//!
//! Sizes are given for a 1280×720 display and scaled by the display's shorter side, so a
//! 1920×1080 or 800×480 panel shows the same layout; text wraps to the width.

use super::frame::{Frame, Rect, Rgb, fit};
use super::lang::{Key, Lang};
use super::text::Text;
use super::{VideoState, View};
use crate::call::KioskState;
use crate::media::Picture;
use crate::protocol::EndReason;

/// The palette: dark blue-grey text on a light background, one deep blue, one green for CALL,
/// one red for HANG UP and recording, amber for trouble. Contrast ratios of text on its
/// background are ≥ 7:1 (WCAG AAA) except the secondary text (≥ 4.5:1).
mod colour {
    use super::Rgb;
    pub const BACKGROUND: Rgb = Rgb::new(0xF3, 0xF5, 0xF8);
    pub const HEADER: Rgb = Rgb::new(0x0E, 0x3A, 0x5B);
    pub const ACCENT: Rgb = Rgb::new(0x3F, 0xA7, 0xA0);
    pub const TEXT: Rgb = Rgb::new(0x14, 0x21, 0x2E);
    pub const TEXT_SECONDARY: Rgb = Rgb::new(0x44, 0x53, 0x63);
    pub const WHITE: Rgb = Rgb::new(0xFF, 0xFF, 0xFF);
    pub const BLACK: Rgb = Rgb::new(0, 0, 0);
    pub const CALL: Rgb = Rgb::new(0x1B, 0x7F, 0x4C);
    pub const HANG_UP: Rgb = Rgb::new(0xC6, 0x28, 0x28);
    pub const CHIP: Rgb = Rgb::new(0xE2, 0xE8, 0xEF);
    pub const TROUBLE: Rgb = Rgb::new(0xFF, 0xF1, 0xCC);
    pub const TROUBLE_EDGE: Rgb = Rgb::new(0xE0, 0x9B, 0x00);
    pub const TROUBLE_TEXT: Rgb = Rgb::new(0x4A, 0x36, 0x00);
    pub const OFFLINE: Rgb = Rgb::new(0x8A, 0x96, 0xA3);
    pub const VIDEO_TEXT: Rgb = Rgb::new(0xD5, 0xDE, 0xE6);
    pub const PLACEHOLDER: Rgb = Rgb::new(0x2B, 0x31, 0x38);
}

/// One element of a centred column.
enum Block {
    /// Wrapped text, each line centred.
    Text { text: String, px: f32, color: Rgb },
    /// Empty space.
    Gap(f32),
    /// A circle with a glyph (or nothing) in its middle.
    Badge { radius: f32, color: Rgb, label: String, label_px: f32 },
    /// The CALL button: a green disc in soft rings.
    CallButton { radius: f32 },
    /// Three dots: something is under way.
    Dots { radius: f32, color: Rgb },
    /// A rounded chip with an optional coloured dot before its text.
    Chip { text: String, px: f32, dot: Option<Rgb> },
}

/// Draws views. Keeps the font's glyph cache between frames.
#[derive(Debug)]
pub struct Compositor {
    text: Text,
    lang: Lang,
}

impl Compositor {
    pub fn new(lang: Lang) -> Self {
        Self { text: Text::new(), lang }
    }

    pub fn lang(&self) -> &Lang {
        &self.lang
    }

    pub fn set_lang(&mut self, lang: Lang) {
        self.lang = lang;
    }

    /// Draws `view` into `frame` (all of it). `remote` is the advisor's latest picture and
    /// `own` the customer's (the self-view); both are used only during a call.
    pub fn compose(
        &mut self,
        view: &View,
        remote: Option<&Picture>,
        own: Option<&Picture>,
        frame: &mut Frame,
    ) {
        if frame.width == 0 || frame.height == 0 {
            return;
        }
        match &view.state {
            KioskState::Connected { agent, recorded } => {
                self.call(view, agent, *recorded, remote, own, frame)
            }
            _ => self.waiting_screen(view, frame),
        }
    }

    /// The unit: 1 px on a 1280×720 display.
    fn unit(frame: &Frame) -> f32 {
        (frame.width as f32 / 1280.0).min(frame.height as f32 / 720.0)
    }

    fn t(&self, key: Key) -> String {
        self.lang.text(key).to_string()
    }

    fn waiting_screen(&mut self, view: &View, frame: &mut Frame) {
        let u = Self::unit(frame);
        let (w, h) = (frame.width as f32, frame.height as f32);
        frame.fill(colour::BACKGROUND);
        // Header: the branch.
        let header = (84.0 * u).round();
        frame.fill_rect(Rect::new(0, 0, w as i32, header as i32), colour::HEADER, 255);
        frame.fill_rect(Rect::new(0, header as i32, w as i32, (4.0 * u).ceil() as i32), colour::ACCENT, 255);
        let margin = 48.0 * u;
        if !view.settings.branch.is_empty() {
            let px = 32.0 * u;
            let line = self.fit_line(&view.settings.branch, px, w - 2.0 * margin);
            let baseline = self.centre_baseline(header / 2.0, px);
            self.text.draw(frame, &line, px, margin, baseline, colour::WHITE);
        }
        // Footer: opening hours where they help.
        let mut bottom = h - 24.0 * u;
        let hours_shown = matches!(
            view.state,
            KioskState::Idle | KioskState::Busy | KioskState::Offline { resuming: false }
        );
        if hours_shown && !view.settings.opening_hours.is_empty() {
            let px = 26.0 * u;
            let text = self.lang.fill(Key::IdleOpeningHours, &[("hours", &view.settings.opening_hours)]);
            let line = self.fit_line(&text, px, w - 2.0 * margin);
            let width = self.text.width(&line, px);
            self.text.draw(
                frame,
                &line,
                px,
                (w - width) / 2.0,
                bottom - self.text.metrics(px).1,
                colour::TEXT_SECONDARY,
            );
            bottom -= px * 1.6;
        }
        // Trouble: an amber panel above the footer.
        if view.trouble.any() {
            bottom = self.trouble_panel(
                view,
                frame,
                Rect::new(margin as i32, 0, (w - 2.0 * margin) as i32, 0),
                bottom,
                26.0 * u,
            );
            bottom -= 16.0 * u;
        }
        let blocks = self.blocks(view, u);
        let top = header + 4.0 * u;
        self.column(
            frame,
            &blocks,
            Rect::new(margin as i32, top as i32, (w - 2.0 * margin) as i32, (bottom - top) as i32),
        );
    }

    /// What each waiting screen says, top to bottom.
    fn blocks(&self, view: &View, u: f32) -> Vec<Block> {
        let title = |text: String| Block::Text { text, px: 58.0 * u, color: colour::TEXT };
        let body = |text: String| Block::Text { text, px: 34.0 * u, color: colour::TEXT_SECONDARY };
        let dots = |color: Rgb| Block::Dots { radius: 11.0 * u, color };
        match &view.state {
            KioskState::Idle => {
                let mut b = vec![
                    Block::CallButton { radius: 58.0 * u },
                    Block::Gap(40.0 * u),
                    title(self.t(Key::IdleTitle)),
                    Block::Gap(14.0 * u),
                    body(self.t(Key::IdlePressCall)),
                ];
                if view.settings.recording_notice {
                    b.push(Block::Gap(44.0 * u));
                    b.push(Block::Chip {
                        text: self.t(Key::IdleRecordingNotice),
                        px: 24.0 * u,
                        dot: Some(colour::HANG_UP),
                    });
                }
                b
            }
            KioskState::Requesting => vec![
                dots(colour::HEADER),
                Block::Gap(40.0 * u),
                title(self.t(Key::RequestingTitle)),
                Block::Gap(14.0 * u),
                body(self.t(Key::RequestingBody)),
            ],
            KioskState::Waiting { position, estimated_wait_s } => {
                let position_line = if *position <= 1 {
                    self.t(Key::WaitingPositionNext)
                } else {
                    self.lang.fill(Key::WaitingPosition, &[("position", &position.to_string())])
                };
                let estimate = match estimated_wait_s {
                    None => self.t(Key::WaitingEstimateUnknown),
                    Some(s) if *s < 60 => self.t(Key::WaitingEstimateUnderMinute),
                    Some(s) => self
                        .lang
                        .fill(Key::WaitingEstimateMinutes, &[("minutes", &s.div_ceil(60).to_string())]),
                };
                vec![
                    Block::Text { text: self.t(Key::WaitingTitle), px: 40.0 * u, color: colour::TEXT },
                    Block::Gap(30.0 * u),
                    Block::Badge {
                        radius: 64.0 * u,
                        color: colour::HEADER,
                        label: position.to_string(),
                        label_px: 72.0 * u,
                    },
                    Block::Gap(26.0 * u),
                    Block::Text { text: position_line, px: 40.0 * u, color: colour::TEXT },
                    Block::Gap(10.0 * u),
                    body(estimate),
                    Block::Gap(40.0 * u),
                    Block::Chip {
                        text: self.t(Key::WaitingCancel),
                        px: 26.0 * u,
                        dot: Some(colour::HANG_UP),
                    },
                ]
            }
            KioskState::Ringing => vec![
                dots(colour::CALL),
                Block::Gap(40.0 * u),
                title(self.t(Key::RingingTitle)),
                Block::Gap(14.0 * u),
                body(self.t(Key::RingingBody)),
            ],
            KioskState::Ended { reason } => {
                let reason = match reason {
                    EndReason::KioskHungUp => Key::EndedKioskHungUp,
                    EndReason::AgentHungUp => Key::EndedAgentHungUp,
                    EndReason::AgentDisconnected => Key::EndedAgentLost,
                    EndReason::KioskDisconnected => Key::EndedKioskLost,
                    _ => Key::EndedInterrupted,
                };
                vec![
                    Block::Badge {
                        radius: 46.0 * u,
                        color: colour::ACCENT,
                        label: "✓".into(),
                        label_px: 56.0 * u,
                    },
                    Block::Gap(36.0 * u),
                    title(self.t(Key::EndedTitle)),
                    Block::Gap(14.0 * u),
                    body(self.t(reason)),
                    Block::Gap(6.0 * u),
                    body(self.t(Key::EndedThanks)),
                ]
            }
            KioskState::Busy => {
                vec![title(self.t(Key::BusyTitle)), Block::Gap(18.0 * u), body(self.t(Key::BusyBody))]
            }
            KioskState::Offline { resuming: true } => vec![
                dots(colour::OFFLINE),
                Block::Gap(40.0 * u),
                title(self.t(Key::OfflineReconnectingTitle)),
                Block::Gap(14.0 * u),
                body(self.t(Key::OfflineReconnectingBody)),
            ],
            KioskState::Offline { resuming: false } => vec![
                Block::Badge {
                    radius: 46.0 * u,
                    color: colour::OFFLINE,
                    label: "!".into(),
                    label_px: 60.0 * u,
                },
                Block::Gap(36.0 * u),
                title(self.t(Key::OfflineTitle)),
                Block::Gap(14.0 * u),
                body(self.t(Key::OfflineBody)),
            ],
            // Drawn by `call`.
            KioskState::Connected { .. } => Vec::new(),
        }
    }

    /// The trouble lines in an amber panel `area.width` wide whose bottom is at `bottom`;
    /// returns its top.
    fn trouble_panel(&mut self, view: &View, frame: &mut Frame, area: Rect, bottom: f32, px: f32) -> f32 {
        let mut lines = Vec::new();
        for (bad, key) in [
            (view.trouble.camera, Key::TroubleCamera),
            (view.trouble.microphone, Key::TroubleMicrophone),
            (view.trouble.speaker, Key::TroubleSpeaker),
        ] {
            if bad {
                lines.extend(self.text.wrap(self.lang.text(key), px, area.width as f32 - 3.0 * px));
            }
        }
        lines.extend(self.text.wrap(self.lang.text(Key::TroubleStaff), px, area.width as f32 - 3.0 * px));
        let line_h = px * 1.35;
        let pad = px * 0.7;
        let height = lines.len() as f32 * line_h + 2.0 * pad;
        let top = bottom - height;
        let panel = Rect::new(area.x, top.round() as i32, area.width, height.round() as i32);
        frame.fill_rounded(panel, (px * 0.5) as i32, colour::TROUBLE, 255);
        frame.fill_rect(
            Rect::new(area.x, panel.y, (px * 0.3).ceil() as i32, panel.height),
            colour::TROUBLE_EDGE,
            255,
        );
        let (ascent, _) = self.text.metrics(px);
        for (i, line) in lines.iter().enumerate() {
            let baseline = top + pad + i as f32 * line_h + ascent + (line_h - px) / 2.0;
            self.text.draw(frame, line, px, area.x as f32 + 1.4 * px, baseline, colour::TROUBLE_TEXT);
        }
        top
    }

    /// Draws `blocks` as a column centred in `area`.
    fn column(&mut self, frame: &mut Frame, blocks: &[Block], area: Rect) {
        let max_w = area.width as f32;
        // Measure.
        let mut heights = Vec::with_capacity(blocks.len());
        let mut wrapped: Vec<Vec<String>> = Vec::with_capacity(blocks.len());
        for block in blocks {
            let (height, lines) = match block {
                Block::Text { text, px, .. } => {
                    let lines = self.text.wrap(text, *px, max_w);
                    (lines.len() as f32 * px * 1.3, lines)
                }
                Block::Gap(g) => (*g, Vec::new()),
                Block::Badge { radius, .. } => (2.0 * radius, Vec::new()),
                Block::CallButton { radius } => (2.0 * radius * 1.45, Vec::new()),
                Block::Dots { radius, .. } => (2.0 * radius, Vec::new()),
                Block::Chip { text, px, .. } => {
                    let lines = self.text.wrap(text, *px, max_w - 3.5 * px);
                    (lines.len() as f32 * px * 1.3 + px * 1.0, lines)
                }
            };
            heights.push(height);
            wrapped.push(lines);
        }
        let total: f32 = heights.iter().sum();
        // Centred, a little above the middle (the eye's centre), never above the area.
        let mut y = area.y as f32 + ((area.height as f32 - total) * 0.45).max(0.0);
        let cx = area.x as f32 + max_w / 2.0;
        for ((block, height), lines) in blocks.iter().zip(&heights).zip(&wrapped) {
            match block {
                Block::Text { px, color, .. } => {
                    let (ascent, _) = self.text.metrics(*px);
                    for (i, line) in lines.iter().enumerate() {
                        let width = self.text.width(line, *px);
                        let baseline = y + i as f32 * px * 1.3 + ascent + px * 0.15;
                        self.text.draw(frame, line, *px, cx - width / 2.0, baseline, *color);
                    }
                }
                Block::Gap(_) => {}
                Block::Badge { radius, color, label, label_px } => {
                    let cy = y + radius;
                    frame.fill_circle(cx, cy, *radius, *color, 255);
                    // Shrink a long label (a position in the hundreds) to fit the circle.
                    let mut px = *label_px;
                    while self.text.width(label, px) > radius * 1.5 && px > 8.0 {
                        px *= 0.9;
                    }
                    let width = self.text.width(label, px);
                    // Digits and most signs are about 0.72 of the size tall: centre that.
                    self.text.draw(frame, label, px, cx - width / 2.0, cy + px * 0.36, colour::WHITE);
                }
                Block::CallButton { radius } => {
                    let cy = y + height / 2.0;
                    frame.fill_circle(cx, cy, radius * 1.45, colour::CALL, 40);
                    frame.fill_circle(cx, cy, radius * 1.22, colour::CALL, 70);
                    frame.fill_circle(cx, cy, *radius, colour::CALL, 255);
                    frame.fill_circle(cx, cy, radius * 0.34, colour::WHITE, 235);
                }
                Block::Dots { radius, color } => {
                    let cy = y + radius;
                    for (i, alpha) in [(-1.0, 255u8), (0.0, 170), (1.0, 90)] {
                        frame.fill_circle(cx + i * radius * 3.2, cy, *radius, *color, alpha);
                    }
                }
                Block::Chip { px, dot, .. } => {
                    let line_h = px * 1.3;
                    let widest = lines.iter().map(|l| self.text.width(l, *px)).fold(0.0, f32::max);
                    let dot_space = if dot.is_some() { px * 1.1 } else { 0.0 };
                    let chip_w = widest + dot_space + 2.0 * px;
                    let chip = Rect::new(
                        (cx - chip_w / 2.0).round() as i32,
                        y.round() as i32,
                        chip_w.round() as i32,
                        height.round() as i32,
                    );
                    frame.fill_rounded(chip, (px * 0.9).min(*height / 2.0) as i32, colour::CHIP, 255);
                    let x0 = chip.x as f32 + px;
                    if let Some(dot) = dot {
                        frame.fill_circle(x0 + px * 0.3, y + px * 0.5 + line_h / 2.0, px * 0.3, *dot, 255);
                    }
                    let (ascent, _) = self.text.metrics(*px);
                    for (i, line) in lines.iter().enumerate() {
                        let baseline = y + px * 0.5 + i as f32 * line_h + ascent + px * 0.15;
                        self.text.draw(frame, line, *px, x0 + dot_space, baseline, colour::TEXT);
                    }
                }
            }
            y += height;
        }
    }

    /// The call: video full screen, overlays on translucent dark pills.
    fn call(
        &mut self,
        view: &View,
        agent: &str,
        recorded: bool,
        remote: Option<&Picture>,
        own: Option<&Picture>,
        frame: &mut Frame,
    ) {
        let u = Self::unit(frame);
        let (w, h) = (frame.width as f32, frame.height as f32);
        let full = Rect::new(0, 0, frame.width as i32, frame.height as i32);
        let shown = match (view.video, remote) {
            (VideoState::Waiting, _) | (_, None) => None,
            (_, Some(pic)) => frame.draw_picture(pic, full, false),
        };
        match shown {
            // Black bars beside or above and below the picture.
            Some(p) => {
                frame.fill_rect(Rect::new(0, 0, p.x, full.height), colour::BLACK, 255);
                frame.fill_rect(
                    Rect::new(p.right(), 0, full.width - p.right(), full.height),
                    colour::BLACK,
                    255,
                );
                frame.fill_rect(Rect::new(p.x, 0, p.width, p.y), colour::BLACK, 255);
                frame.fill_rect(
                    Rect::new(p.x, p.bottom(), p.width, full.height - p.bottom()),
                    colour::BLACK,
                    255,
                );
            }
            None => frame.fill(colour::BLACK),
        }
        let margin = 28.0 * u;
        if shown.is_none() {
            let px = 34.0 * u;
            let text = self.t(Key::CallWaitingVideo);
            self.centred_lines(frame, &text, px, w / 2.0, h / 2.0, w * 0.7, colour::VIDEO_TEXT);
        } else if view.video == VideoState::Stalled {
            frame.fill_rect(full, colour::BLACK, 110);
            let text = self.t(Key::CallVideoPaused);
            self.pill_centred(frame, &text, 30.0 * u, w / 2.0, h / 2.0);
        }

        // Top left: who the advisor is, and how to hang up.
        let name_px = 30.0 * u;
        let hint_px = 22.0 * u;
        let name = self.lang.fill(Key::CallAdvisor, &[("name", agent)]);
        let name = self.fit_line(&name, name_px, w * 0.5);
        let hint = self.fit_line(&self.t(Key::CallHangUp), hint_px, w * 0.5);
        let pad = 16.0 * u;
        let box_w = self.text.width(&name, name_px).max(self.text.width(&hint, hint_px)) + 2.0 * pad;
        let box_h = name_px * 1.3 + hint_px * 1.3 + 2.0 * pad - 4.0 * u;
        let r = Rect::new(margin as i32, margin as i32, box_w.round() as i32, box_h.round() as i32);
        frame.fill_rounded(r, (14.0 * u) as i32, colour::BLACK, 150);
        let (name_ascent, _) = self.text.metrics(name_px);
        let (hint_ascent, _) = self.text.metrics(hint_px);
        let mut baseline = margin + pad + name_ascent - 2.0 * u;
        self.text.draw(frame, &name, name_px, margin + pad, baseline, colour::WHITE);
        baseline += name_px * 0.3 + hint_ascent + 4.0 * u;
        self.text.draw(frame, &hint, hint_px, margin + pad, baseline, colour::VIDEO_TEXT);
        let mut left_bottom = margin + box_h;

        // Top right: recording.
        if recorded {
            let px = 24.0 * u;
            let text = self.fit_line(&self.t(Key::CallRecorded), px, w * 0.4);
            let text_w = self.text.width(&text, px);
            let pill_w = text_w + px * 2.6;
            let pill_h = px * 2.0;
            let x = w - margin - pill_w;
            let pill =
                Rect::new(x.round() as i32, margin as i32, pill_w.round() as i32, pill_h.round() as i32);
            frame.fill_rounded(pill, (pill_h / 2.0) as i32, colour::BLACK, 150);
            frame.fill_circle(x + px * 0.95, margin + pill_h / 2.0, px * 0.32, colour::HANG_UP, 255);
            let baseline = self.centre_baseline(margin + pill_h / 2.0, px);
            self.text.draw(frame, &text, px, x + px * 1.6, baseline, colour::WHITE);
        }

        // Device trouble, under the advisor's name.
        if view.trouble.any() {
            let area = Rect::new(margin as i32, 0, (w * 0.42) as i32, 0);
            let px = 22.0 * u;
            // Measure by drawing into the right place: the panel grows upwards from `bottom`.
            let lines = self.trouble_line_count(view, px, area.width as f32 - 3.0 * px);
            let height = lines as f32 * px * 1.35 + 1.4 * px;
            let bottom = left_bottom + 14.0 * u + height;
            self.trouble_panel(view, frame, area, bottom, px);
            left_bottom = bottom;
        }

        // Bottom right: the customer's own picture, mirrored.
        let own_w = (w * 0.22).round();
        let own_area_h = (own_w * 3.0 / 4.0).round();
        let mut own_left = w;
        if view.trouble.camera || own.is_some() {
            let (pw, ph) = own.map_or((4, 3), |p| (p.width.max(1), p.height.max(1)));
            let area = Rect::new(
                (w - margin - own_w) as i32,
                (h - margin - own_area_h) as i32,
                own_w as i32,
                own_area_h as i32,
            );
            let place = fit(pw, ph, area);
            let border = (3.0 * u).ceil() as i32;
            frame.fill_rect(
                Rect::new(
                    place.x - border,
                    place.y - border,
                    place.width + 2 * border,
                    place.height + 2 * border,
                ),
                colour::WHITE,
                230,
            );
            match own.filter(|_| !view.trouble.camera) {
                Some(pic) => {
                    if frame.draw_picture(pic, place, true).is_none() {
                        frame.fill_rect(place, colour::PLACEHOLDER, 255);
                    }
                }
                None => {
                    frame.fill_rect(place, colour::PLACEHOLDER, 255);
                    let px = 22.0 * u;
                    let text = self.t(Key::CallCameraOff);
                    self.centred_lines(
                        frame,
                        &text,
                        px,
                        (place.x + place.width / 2) as f32,
                        (place.y + place.height / 2) as f32,
                        place.width as f32 * 0.9,
                        colour::VIDEO_TEXT,
                    );
                }
            }
            own_left = place.x as f32 - border as f32;
        }

        // Bottom left: the advisor's texts, the latest lowest.
        let px = 28.0 * u;
        let max_w = (own_left - 2.0 * margin).min(w * 0.6);
        let pad = 14.0 * u;
        let mut bottom = h - margin;
        let ceiling = left_bottom + 20.0 * u;
        for text in view.texts.iter().rev() {
            let lines = self.text.wrap(text, px, max_w - 2.0 * pad);
            let line_h = px * 1.3;
            let bubble_h = lines.len() as f32 * line_h + 2.0 * pad;
            if bottom - bubble_h < ceiling {
                break;
            }
            let widest = lines.iter().map(|l| self.text.width(l, px)).fold(0.0, f32::max);
            let bubble = Rect::new(
                margin as i32,
                (bottom - bubble_h).round() as i32,
                (widest + 2.0 * pad).round() as i32,
                bubble_h.round() as i32,
            );
            frame.fill_rounded(bubble, (16.0 * u) as i32, colour::WHITE, 238);
            let (ascent, _) = self.text.metrics(px);
            for (i, line) in lines.iter().enumerate() {
                let baseline = bubble.y as f32 + pad + i as f32 * line_h + ascent + px * 0.15 - 2.0 * u;
                self.text.draw(frame, line, px, margin + pad, baseline, colour::TEXT);
            }
            bottom -= bubble_h + 12.0 * u;
        }
    }

    fn trouble_line_count(&self, view: &View, px: f32, width: f32) -> usize {
        let mut n = self.text.wrap(self.lang.text(Key::TroubleStaff), px, width).len();
        for (bad, key) in [
            (view.trouble.camera, Key::TroubleCamera),
            (view.trouble.microphone, Key::TroubleMicrophone),
            (view.trouble.speaker, Key::TroubleSpeaker),
        ] {
            if bad {
                n += self.text.wrap(self.lang.text(key), px, width).len();
            }
        }
        n
    }

    /// Text centred on (`cx`, `cy`), wrapped to `max_w`.
    #[allow(clippy::too_many_arguments)]
    fn centred_lines(
        &mut self,
        frame: &mut Frame,
        text: &str,
        px: f32,
        cx: f32,
        cy: f32,
        max_w: f32,
        color: Rgb,
    ) {
        let lines = self.text.wrap(text, px, max_w);
        let line_h = px * 1.3;
        let top = cy - lines.len() as f32 * line_h / 2.0;
        let (ascent, _) = self.text.metrics(px);
        for (i, line) in lines.iter().enumerate() {
            let width = self.text.width(line, px);
            self.text.draw(
                frame,
                line,
                px,
                cx - width / 2.0,
                top + i as f32 * line_h + ascent + px * 0.15,
                color,
            );
        }
    }

    /// One line in a dark pill centred on (`cx`, `cy`).
    fn pill_centred(&mut self, frame: &mut Frame, text: &str, px: f32, cx: f32, cy: f32) {
        let text = self.fit_line(text, px, frame.width as f32 * 0.8);
        let width = self.text.width(&text, px);
        let (pw, ph) = (width + 2.0 * px, px * 2.0);
        let pill = Rect::new(
            (cx - pw / 2.0).round() as i32,
            (cy - ph / 2.0).round() as i32,
            pw.round() as i32,
            ph.round() as i32,
        );
        frame.fill_rounded(pill, (ph / 2.0) as i32, colour::BLACK, 170);
        let baseline = self.centre_baseline(cy, px);
        self.text.draw(frame, &text, px, cx - width / 2.0, baseline, colour::WHITE);
    }

    /// The baseline that centres a line of size `px` vertically on `cy`.
    fn centre_baseline(&self, cy: f32, px: f32) -> f32 {
        let (ascent, descent) = self.text.metrics(px);
        cy + (ascent - descent) / 2.0 - px * 0.08
    }

    /// `text` cut with an ellipsis to fit `max_w` on one line.
    fn fit_line(&self, text: &str, px: f32, max_w: f32) -> String {
        let text: String = text.chars().filter(|c| !c.is_control()).collect();
        if self.text.width(&text, px) <= max_w {
            return text;
        }
        let mut out = String::new();
        let budget = max_w - self.text.width("…", px);
        for c in text.chars() {
            out.push(c);
            if self.text.width(&out, px) > budget {
                out.pop();
                break;
            }
        }
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::{Trouble, UiSettings};

    fn view(state: KioskState) -> View {
        View {
            state,
            settings: UiSettings {
                branch: "Branch".into(),
                opening_hours: "9–5".into(),
                recording_notice: true,
            },
            trouble: Trouble::default(),
            texts: vec!["hello".into()],
            video: VideoState::Live,
        }
    }

    #[test]
    fn every_state_draws_at_any_size_without_panicking() {
        let states = [
            KioskState::Offline { resuming: false },
            KioskState::Offline { resuming: true },
            KioskState::Idle,
            KioskState::Requesting,
            KioskState::Waiting { position: 12345, estimated_wait_s: Some(100_000) },
            KioskState::Ringing,
            KioskState::Connected { agent: "x".repeat(500), recorded: true },
            KioskState::Ended { reason: EndReason::Unknown },
            KioskState::Busy,
        ];
        let pic = Picture::black(64, 48, 0);
        let mut c = Compositor::new(Lang::english());
        for (w, h) in [(1, 1), (2, 2), (64, 36), (320, 240), (480, 800), (1280, 720)] {
            let mut frame = Frame::new(w, h);
            for s in &states {
                let mut v = view(s.clone());
                v.trouble = Trouble { camera: true, microphone: true, speaker: true };
                v.texts = vec!["y".repeat(280); 3];
                c.compose(&v, Some(&pic), Some(&pic), &mut frame);
                c.compose(&view(s.clone()), None, None, &mut frame);
            }
        }
        c.compose(&view(KioskState::Idle), None, None, &mut Frame::new(0, 0));
    }

    #[test]
    fn the_call_shows_the_advisors_picture_full_screen() {
        let mut pic = Picture::black(64, 36, 0);
        pic.data[..64 * 36].fill(235); // white
        let mut c = Compositor::new(Lang::english());
        let mut frame = Frame::new(640, 360);
        let mut v = view(KioskState::Connected { agent: "a".into(), recorded: false });
        v.texts.clear();
        c.compose(&v, Some(&pic), None, &mut frame);
        assert_eq!(frame.pixel(320, 200), Some(Rgb(0xFFFFFF)));
        v.video = VideoState::Waiting;
        c.compose(&v, Some(&pic), None, &mut frame);
        assert_eq!(frame.pixel(5, 350), Some(Rgb(0)), "no picture before the first one is due");
    }
}
