//! Text: the embedded font (Noto Sans CJK SC Medium, subset: Latin and Simplified Chinese;
//! see assets/fonts/ and scripts/font-subset.sh), rasterised by `ab_glyph` into coverage masks
//! that are cached per glyph and size, laid out on one line or wrapped to a width.
//!
//! Characters the font lacks are drawn as a box; control characters are skipped. Nothing here
//! panics on any input string.

use std::collections::HashMap;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};

use super::frame::{Frame, Rgb};

/// The embedded font.
pub static FONT: &[u8] = include_bytes!("../../assets/fonts/NotoSansCJKsc-Medium-subset.otf");

/// Most glyph masks kept; beyond, the cache starts over (a frame needs a few hundred).
const CACHE_LIMIT: usize = 4096;

/// One rasterised glyph: its coverage mask and where it sits relative to the pen (on the
/// baseline).
#[derive(Debug)]
struct Glyph {
    left: i32,
    top: i32,
    width: u32,
    height: u32,
    mask: Vec<u8>,
}

/// The font, its glyph cache, and layout.
pub struct Text {
    font: Option<FontRef<'static>>,
    /// Masks by glyph and size (in 1/4 px).
    cache: HashMap<(GlyphId, u32), Glyph>,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({} glyphs cached)", self.cache.len())
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl Text {
    /// The embedded font. (Were it unreadable — a broken build — every character shows as a
    /// box rather than the kiosk stopping; a test makes sure it reads.)
    pub fn new() -> Self {
        Self { font: FontRef::try_from_slice(FONT).ok(), cache: HashMap::new() }
    }

    /// True when the embedded font was read.
    pub fn has_font(&self) -> bool {
        self.font.is_some()
    }

    /// Ascent (above the baseline) and descent (below, positive) in pixels at size `px`.
    pub fn metrics(&self, px: f32) -> (f32, f32) {
        match &self.font {
            Some(f) => {
                let s = f.as_scaled(PxScale::from(px));
                (s.ascent(), -s.descent())
            }
            None => (px * 0.88, px * 0.12),
        }
    }

    /// The glyph of `c`, or None for a character the font lacks.
    fn glyph_id(&self, c: char) -> Option<GlyphId> {
        let id = self.font.as_ref()?.glyph_id(c);
        (id.0 != 0).then_some(id)
    }

    /// How far the pen moves for `c` at size `px`.
    fn advance(&self, c: char, px: f32) -> f32 {
        if c.is_control() {
            return 0.0;
        }
        match (self.glyph_id(c), &self.font) {
            (Some(id), Some(f)) => f.as_scaled(PxScale::from(px)).h_advance(id),
            _ => missing_box(px).0 + px * 0.1,
        }
    }

    /// The width of `text` on one line at size `px`.
    pub fn width(&self, text: &str, px: f32) -> f32 {
        text.chars().map(|c| self.advance(c, px)).sum()
    }

    /// Draws `text` on one line, its baseline at `baseline`, starting at `x`; returns the pen's
    /// x after the last character.
    pub fn draw(&mut self, frame: &mut Frame, text: &str, px: f32, x: f32, baseline: f32, color: Rgb) -> f32 {
        let mut pen = x;
        let size_key = (px * 4.0).round().max(1.0) as u32;
        for c in text.chars() {
            if c.is_control() {
                continue;
            }
            let advance = self.advance(c, px);
            if c.is_whitespace() {
                pen += advance;
                continue;
            }
            match self.glyph_id(c) {
                Some(id) => {
                    if !self.cache.contains_key(&(id, size_key)) {
                        if self.cache.len() >= CACHE_LIMIT {
                            self.cache.clear();
                        }
                        let glyph = self.rasterise(id, px);
                        self.cache.insert((id, size_key), glyph);
                    }
                    if let Some(g) = self.cache.get(&(id, size_key)) {
                        let gx = pen.round() as i32 + g.left;
                        let gy = baseline.round() as i32 + g.top;
                        frame.draw_mask(gx, gy, g.width, g.height, &g.mask, color);
                    }
                }
                None => {
                    let (w, h) = missing_box(px);
                    draw_box(frame, pen + px * 0.05, baseline - h, w, h, (px / 14.0).max(1.0), color);
                }
            }
            pen += advance;
        }
        pen
    }

    fn rasterise(&self, id: GlyphId, px: f32) -> Glyph {
        let empty = Glyph { left: 0, top: 0, width: 0, height: 0, mask: Vec::new() };
        let Some(font) = &self.font else { return empty };
        let glyph = id.with_scale_and_position(PxScale::from(px), point(0.0, 0.0));
        let Some(outlined) = font.outline_glyph(glyph) else { return empty };
        let bounds = outlined.px_bounds();
        let (width, height) = (bounds.width().max(0.0) as u32, bounds.height().max(0.0) as u32);
        let mut mask = vec![0u8; width as usize * height as usize];
        outlined.draw(|x, y, c| {
            if x < width && y < height {
                mask[(y * width + x) as usize] = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        });
        Glyph { left: bounds.min.x as i32, top: bounds.min.y as i32, width, height, mask }
    }

    /// Splits `text` into lines no wider than `max_width` at size `px`: at spaces, and between
    /// Chinese characters (not before closing punctuation); a word longer than a line is cut.
    pub fn wrap(&self, text: &str, px: f32, max_width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            let mut width = 0.0;
            for piece in pieces(paragraph) {
                let piece_width = self.width(&piece, px);
                // Trailing spaces may hang past the edge.
                let visible = self.width(piece.trim_end(), px);
                if width + visible <= max_width {
                    line.push_str(&piece);
                    width += piece_width;
                    continue;
                }
                // Start a new line (without the spaces that ended the previous one).
                if !line.trim().is_empty() {
                    lines.push(line.trim_end().to_string());
                }
                line = String::new();
                width = 0.0;
                let piece = piece.trim_start();
                for c in piece.chars() {
                    let w = self.advance(c, px);
                    if width + w > max_width && !line.is_empty() {
                        lines.push(std::mem::take(&mut line));
                        width = 0.0;
                    }
                    line.push(c);
                    width += w;
                }
            }
            if !line.trim().is_empty() || lines.is_empty() {
                lines.push(line.trim_end().to_string());
            }
        }
        lines
    }
}

/// The size of the box drawn for a missing character at size `px`.
fn missing_box(px: f32) -> (f32, f32) {
    (px * 0.5, px * 0.7)
}

/// An outlined box (a character the font lacks).
fn draw_box(frame: &mut Frame, x: f32, y: f32, w: f32, h: f32, line: f32, color: Rgb) {
    use super::frame::Rect;
    let (x, y, w, h, t) =
        (x.round() as i32, y.round() as i32, w.round() as i32, h.round() as i32, line.round() as i32);
    frame.fill_rect(Rect::new(x, y, w, t), color, 255);
    frame.fill_rect(Rect::new(x, y + h - t, w, t), color, 255);
    frame.fill_rect(Rect::new(x, y, t, h), color, 255);
    frame.fill_rect(Rect::new(x + w - t, y, t, h), color, 255);
}

/// True for characters a line may break before and after (CJK ideographs, kana, full-width
/// forms), except the punctuation that must not start a line.
fn breaks_anywhere(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x2FFFF)
}

/// Punctuation that must not start a line (Chinese and Latin closing marks).
fn no_break_before(c: char) -> bool {
    "，。、；：！？）】》」』”’…·,.;:!?)]}%".contains(c)
}

/// The text cut where lines may break: each piece is a word with its following spaces, or
/// one CJK character with the punctuation that follows it.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    for c in text.chars() {
        let boundary = match prev {
            None => false,
            Some(p) => {
                !no_break_before(c)
                    && !"“‘（【《「『([{".contains(p)
                    && ((p.is_whitespace() && !c.is_whitespace())
                        || breaks_anywhere(c)
                        || (breaks_anywhere(p) && !c.is_whitespace()))
            }
        };
        if boundary && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
        prev = Some(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_covers_latin_and_chinese() {
        let text = Text::new();
        assert!(text.has_font());
        for c in "Aaé€你好银行客户经理：。“”…".chars() {
            assert!(text.glyph_id(c).is_some(), "{c} missing from the font");
        }
        for key in crate::ui::lang::Key::ALL {
            for (code, file) in crate::ui::lang::BUILT_IN {
                let lang = crate::ui::lang::Lang::parse(file).unwrap();
                for c in lang.text(*key).chars().filter(|c| !c.is_whitespace() && *c != '{' && *c != '}') {
                    assert!(
                        text.glyph_id(c).is_some(),
                        "{code} {}: {c:?} is missing from the font",
                        key.name()
                    );
                }
            }
        }
    }

    #[test]
    fn missing_and_control_characters_never_panic() {
        let mut text = Text::new();
        let mut frame = Frame::new(200, 50);
        let s = "a\u{0}\u{7}😀\u{10FFFF}\u{E000}b\t\r";
        let end = text.draw(&mut frame, s, 20.0, 0.0, 30.0, Rgb(0xFFFFFF));
        assert!(end > 0.0);
        assert!(frame.pixels.iter().any(|&p| p != 0), "something was drawn");
        text.draw(&mut frame, "far away", 20.0, -10_000.0, 1e9, Rgb(0xFFFFFF));
        text.draw(&mut frame, "tiny", 0.01, 0.0, 10.0, Rgb(0xFFFFFF));
        assert!(!text.wrap(s, 20.0, 1.0).is_empty());
        assert_eq!(text.wrap("", 20.0, 100.0), vec![String::new()]);
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_between_hanzi() {
        let text = Text::new();
        let px = 20.0;
        let lines = text.wrap(
            "Press the CALL button to start a video call",
            px,
            text.width("Press the CALL button", px) + 1.0,
        );
        assert_eq!(lines, ["Press the CALL button", "to start a video call"]);
        let zh = "请按“呼叫”按钮开始视频通话，谢谢。";
        let lines = text.wrap(zh, px, px * 4.5);
        assert!(lines.len() >= 3, "{lines:?}");
        assert_eq!(lines.concat(), zh);
        for line in &lines {
            assert!(text.width(line, px) <= px * 4.5, "{line}");
            assert!(!line.ends_with('“'), "{line}");
            assert!(!line.starts_with('，') && !line.starts_with('。'), "{line}");
        }
        let long = text.wrap("Supercalifragilisticexpialidocious", px, px * 4.0);
        assert!(long.len() > 2 && long.concat() == "Supercalifragilisticexpialidocious");
    }

    #[test]
    fn glyphs_are_cached() {
        let mut text = Text::new();
        let mut frame = Frame::new(300, 40);
        text.draw(&mut frame, "aaaa 你你", 24.0, 0.0, 30.0, Rgb(0xFFFFFF));
        assert_eq!(text.cache.len(), 2);
    }
}
