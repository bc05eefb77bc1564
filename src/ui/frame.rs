//! An in-memory XRGB8888 frame and the few drawing operations the kiosk screen needs: filled
//! and rounded rectangles, circles, text coverage masks, pictures (I420, scaled with the aspect
//! ratio kept, optionally mirrored), all clipped to the frame and anti-aliased where it shows.
//! PNG out (screenshots, snapshot tests) and in (the tests' references); I420 out (the Y4M
//! screen).

use crate::media::Picture;

/// A colour, `0x00RRGGBB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u32);

impl Rgb {
    pub const fn new(r: u8, g: u8, b: u8) -> Self {
        Self(((r as u32) << 16) | ((g as u32) << 8) | b as u32)
    }

    pub fn r(self) -> u8 {
        (self.0 >> 16) as u8
    }

    pub fn g(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn b(self) -> u8 {
        self.0 as u8
    }
}

/// A rectangle in pixels; may reach outside the frame (drawing clips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, width: i32, height: i32) -> Self {
        Self { x, y, width, height }
    }

    pub fn right(&self) -> i32 {
        self.x + self.width
    }

    pub fn bottom(&self) -> i32 {
        self.y + self.height
    }
}

/// An XRGB8888 image: one `u32` per pixel (`0x00RRGGBB`, so bytes B, G, R, X in memory on a
/// little-endian machine: DRM's XR24), rows without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

/// `dst` moved towards `src` by `alpha` (0–255), per channel.
#[inline]
pub fn blend(dst: u32, src: u32, alpha: u32) -> u32 {
    if alpha >= 255 {
        return src;
    }
    if alpha == 0 {
        return dst;
    }
    // Red and blue together, then green: two multiplications per pixel.
    let inv = 255 - alpha;
    let rb = ((src & 0xFF00FF) * alpha + (dst & 0xFF00FF) * inv + 0x800080) >> 8 & 0xFF00FF;
    let g = ((src & 0x00FF00) * alpha + (dst & 0x00FF00) * inv + 0x008000) >> 8 & 0x00FF00;
    rb | g
}

/// Fixed-point BT.601 limited-range YUV → RGB lookup tables (as `devices::screen` computes
/// per pixel), built once per blit: 4 KiB, cheaper than multiplying per pixel.
struct YuvTables {
    y: [i32; 256],
    rv: [i32; 256],
    gu: [i32; 256],
    gv: [i32; 256],
    bu: [i32; 256],
}

impl YuvTables {
    fn new() -> Self {
        let mut t = Self { y: [0; 256], rv: [0; 256], gu: [0; 256], gv: [0; 256], bu: [0; 256] };
        for i in 0..256 {
            let c = i as i32;
            t.y[i] = 298 * (c - 16) + 128;
            t.rv[i] = 409 * (c - 128);
            t.gu[i] = -100 * (c - 128);
            t.gv[i] = -208 * (c - 128);
            t.bu[i] = 516 * (c - 128);
        }
        t
    }
}

/// The largest rectangle of aspect `src_w`:`src_h` inside `area`, centred.
pub fn fit(src_w: u32, src_h: u32, area: Rect) -> Rect {
    let (sw, sh) = (i64::from(src_w.max(1)), i64::from(src_h.max(1)));
    let (aw, ah) = (i64::from(area.width.max(1)), i64::from(area.height.max(1)));
    // Narrower than the area (sw/sh <= aw/ah): fill its height, else its width.
    let (w, h) = if sw * ah <= aw * sh { ((sw * ah / sh).max(1), ah) } else { (aw, (sh * aw / sw).max(1)) };
    Rect::new(area.x + ((aw - w) / 2) as i32, area.y + ((ah - h) / 2) as i32, w as i32, h as i32)
}

#[inline]
fn clamp8(x: i32) -> u32 {
    (x >> 8).clamp(0, 255) as u32
}

impl Frame {
    /// A black frame.
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, pixels: vec![0; width as usize * height as usize] }
    }

    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| Rgb(self.pixels[(y * self.width + x) as usize]))
    }

    /// The rows of pixels.
    pub fn rows(&self) -> impl Iterator<Item = &[u32]> {
        self.pixels.chunks_exact(self.width.max(1) as usize)
    }

    pub fn fill(&mut self, color: Rgb) {
        self.pixels.fill(color.0);
    }

    /// `r` clipped to the frame, as (x0, y0, x1, y1) with x1, y1 exclusive; None when empty.
    fn clip(&self, r: Rect) -> Option<(usize, usize, usize, usize)> {
        let x0 = r.x.max(0);
        let y0 = r.y.max(0);
        let x1 = r.right().min(self.width as i32);
        let y1 = r.bottom().min(self.height as i32);
        (x0 < x1 && y0 < y1).then_some((x0 as usize, y0 as usize, x1 as usize, y1 as usize))
    }

    /// Fills `r` with `color` at `alpha` (255: opaque).
    pub fn fill_rect(&mut self, r: Rect, color: Rgb, alpha: u8) {
        let Some((x0, y0, x1, y1)) = self.clip(r) else { return };
        let w = self.width as usize;
        for y in y0..y1 {
            let row = &mut self.pixels[y * w + x0..y * w + x1];
            if alpha == 255 {
                row.fill(color.0);
            } else {
                for px in row {
                    *px = blend(*px, color.0, u32::from(alpha));
                }
            }
        }
    }

    /// Fills `r` with rounded corners of `radius` pixels, anti-aliased.
    pub fn fill_rounded(&mut self, r: Rect, radius: i32, color: Rgb, alpha: u8) {
        let radius = radius.clamp(0, r.width.min(r.height) / 2);
        if radius == 0 {
            self.fill_rect(r, color, alpha);
            return;
        }
        // The middle band, then the rows of the corners.
        self.fill_rect(Rect::new(r.x, r.y + radius, r.width, r.height - 2 * radius), color, alpha);
        let rf = radius as f32;
        for dy in 0..radius {
            // Distance from the corner circles' centre line, at the pixel's centre.
            let cy = rf - (dy as f32 + 0.5);
            let half = (rf * rf - cy * cy).max(0.0).sqrt();
            for row in [r.y + dy, r.bottom() - 1 - dy] {
                // Solid part of this row.
                let inset = (rf - half).floor() as i32;
                self.fill_rect(Rect::new(r.x + inset + 1, row, r.width - 2 * inset - 2, 1), color, alpha);
                // The edge pixels, by their coverage.
                for (x, cx) in [
                    (r.x + inset, rf - (inset as f32 + 0.5)),
                    (r.right() - 1 - inset, rf - (inset as f32 + 0.5)),
                ] {
                    let dist = (cx * cx + cy * cy).sqrt();
                    let coverage = (rf - dist + 0.5).clamp(0.0, 1.0);
                    self.blend_pixel(x, row, color, (coverage * f32::from(alpha)) as u32);
                }
            }
        }
    }

    /// A filled circle, anti-aliased.
    pub fn fill_circle(&mut self, cx: f32, cy: f32, radius: f32, color: Rgb, alpha: u8) {
        let x0 = (cx - radius - 1.0).floor() as i32;
        let x1 = (cx + radius + 1.0).ceil() as i32;
        let y0 = (cy - radius - 1.0).floor() as i32;
        let y1 = (cy + radius + 1.0).ceil() as i32;
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let coverage = (radius - (dx * dx + dy * dy).sqrt() + 0.5).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    self.blend_pixel(x, y, color, (coverage * f32::from(alpha)) as u32);
                }
            }
        }
    }

    #[inline]
    fn blend_pixel(&mut self, x: i32, y: i32, color: Rgb, alpha: u32) {
        if x >= 0 && y >= 0 && (x as u32) < self.width && (y as u32) < self.height {
            let i = y as usize * self.width as usize + x as usize;
            self.pixels[i] = blend(self.pixels[i], color.0, alpha);
        }
    }

    /// Draws a coverage mask (`width` × `height`, one byte per pixel: 0 transparent, 255 full)
    /// with its top-left corner at (`x`, `y`) in `color`.
    pub fn draw_mask(&mut self, x: i32, y: i32, width: u32, height: u32, mask: &[u8], color: Rgb) {
        let r = Rect::new(x, y, width as i32, height as i32);
        let Some((x0, y0, x1, y1)) = self.clip(r) else { return };
        let w = self.width as usize;
        for fy in y0..y1 {
            let my = (fy as i32 - y) as usize;
            let mask_row = &mask[my * width as usize..(my + 1) * width as usize];
            let row = &mut self.pixels[fy * w + x0..fy * w + x1];
            let start = (x0 as i32 - x) as usize;
            for (px, &c) in row.iter_mut().zip(&mask_row[start..]) {
                if c != 0 {
                    *px = blend(*px, color.0, u32::from(c));
                }
            }
        }
    }

    /// Draws `pic` (I420) scaled into `area` with its aspect ratio kept and centred; what `area`
    /// leaves uncovered is untouched. Returns where the picture landed. `mirror` flips it left
    /// to right (a self-view looks like a mirror). A malformed picture draws nothing.
    pub fn draw_picture(&mut self, pic: &Picture, area: Rect, mirror: bool) -> Option<Rect> {
        let (sw, sh) = (pic.width as usize, pic.height as usize);
        let well_formed = sw > 0
            && sh > 0
            && sw.is_multiple_of(2)
            && sh.is_multiple_of(2)
            && pic.data.len() >= Picture::i420_len(pic.width, pic.height);
        if !well_formed || area.width <= 0 || area.height <= 0 {
            return None;
        }
        let dest = fit(pic.width, pic.height, area);
        let (x0, y0, x1, y1) = self.clip(dest)?;
        let (y_plane, u_plane, v_plane) = pic.planes();
        let cw = sw / 2;
        let t = YuvTables::new();
        let dw = dest.width as usize;
        let dh = dest.height as usize;
        let w = self.width as usize;
        // Source column of each visible output column, sampling at pixel centres.
        let columns: Vec<usize> = (x0..x1)
            .map(|x| {
                let ox = x - dest.x as usize;
                let ox = if mirror { dw - 1 - ox } else { ox };
                ((2 * ox + 1) * sw / (2 * dw)).min(sw - 1)
            })
            .collect();
        // Enlarging (the advisor full screen): each source row is converted once, two pixels
        // per chroma sample, and spread over the output; output rows from the same source row
        // are copies. Shrinking (the self-view): only the pixels used are converted.
        let enlarging = dw >= sw;
        let mut converted = if enlarging { vec![0u32; sw] } else { Vec::new() };
        let mut previous: Option<(usize, usize)> = None;
        for fy in y0..y1 {
            let oy = fy - dest.y as usize;
            let sy = ((2 * oy + 1) * sh / (2 * dh)).min(sh - 1);
            let start = fy * w + x0;
            if let Some((prev_sy, prev_start)) = previous
                && prev_sy == sy
            {
                self.pixels.copy_within(prev_start..prev_start + (x1 - x0), start);
                previous = Some((sy, start));
                continue;
            }
            previous = Some((sy, start));
            let y_row = &y_plane[sy * sw..(sy + 1) * sw];
            let c_start = (sy / 2) * cw;
            let u_row = &u_plane[c_start..c_start + cw];
            let v_row = &v_plane[c_start..c_start + cw];
            let row = &mut self.pixels[start..start + (x1 - x0)];
            if enlarging {
                for (((pair, ys), &u), &v) in
                    converted.chunks_exact_mut(2).zip(y_row.chunks_exact(2)).zip(u_row).zip(v_row)
                {
                    let (rv, guv, bu) =
                        (t.rv[v as usize], t.gu[u as usize] + t.gv[v as usize], t.bu[u as usize]);
                    for (px, &y) in pair.iter_mut().zip(ys) {
                        let l = t.y[y as usize];
                        *px = (clamp8(l + rv) << 16) | (clamp8(l + guv) << 8) | clamp8(l + bu);
                    }
                }
                for (px, &sx) in row.iter_mut().zip(&columns) {
                    *px = converted[sx];
                }
            } else {
                for (px, &sx) in row.iter_mut().zip(&columns) {
                    let l = t.y[y_row[sx] as usize];
                    let (u, v) = (u_row[sx / 2] as usize, v_row[sx / 2] as usize);
                    let r = clamp8(l + t.rv[v]);
                    let g = clamp8(l + t.gu[u] + t.gv[v]);
                    let b = clamp8(l + t.bu[u]);
                    *px = (r << 16) | (g << 8) | b;
                }
            }
        }
        Some(dest)
    }

    /// The frame as an I420 picture (BT.601 limited range; an odd width or height loses its
    /// last column or row).
    pub fn to_i420(&self, captured_us: u64) -> Picture {
        let (w, h) = (self.width & !1, self.height & !1);
        let mut pic = Picture::black(w, h, captured_us);
        let (w, h, fw) = (w as usize, h as usize, self.width as usize);
        let luma = w * h;
        let (y_plane, chroma) = pic.data.split_at_mut(luma);
        let (u_plane, v_plane) = chroma.split_at_mut(luma / 4);
        let rgb = |p: u32| (((p >> 16) & 0xFF) as i32, ((p >> 8) & 0xFF) as i32, (p & 0xFF) as i32);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = rgb(self.pixels[y * fw + x]);
                y_plane[y * w + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let (mut r, mut g, mut b) = (0, 0, 0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (pr, pg, pb) = rgb(self.pixels[(2 * cy + dy) * fw + 2 * cx + dx]);
                    r += pr;
                    g += pg;
                    b += pb;
                }
                let (r, g, b) = (r / 4, g / 4, b / 4);
                u_plane[cy * (w / 2) + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
                v_plane[cy * (w / 2) + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
            }
        }
        pic
    }

    /// The frame as a PNG file (8-bit RGB), compressed well (for files kept).
    pub fn to_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        self.to_png_with(png::Compression::High)
    }

    /// The frame as a PNG file (8-bit RGB), compressed as asked.
    pub fn to_png_with(&self, compression: png::Compression) -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(compression);
        let mut writer = encoder.write_header()?;
        let mut rgb = Vec::with_capacity(self.pixels.len() * 3);
        for &p in &self.pixels {
            rgb.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
        }
        writer.write_image_data(&rgb)?;
        writer.finish()?;
        Ok(out)
    }

    /// Reads a PNG (8-bit RGB or RGBA; alpha is ignored).
    pub fn from_png(bytes: &[u8]) -> Result<Self, String> {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
        let size = reader.output_buffer_size().ok_or("image too large")?;
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
        let channels = match (info.color_type, info.bit_depth) {
            (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
            (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
            other => return Err(format!("unsupported PNG format {other:?}")),
        };
        let mut frame = Frame::new(info.width, info.height);
        for (y, line) in buf.chunks(info.line_size).take(info.height as usize).enumerate() {
            for x in 0..info.width as usize {
                let p = &line[x * channels..x * channels + 3];
                frame.pixels[y * info.width as usize + x] = Rgb::new(p[0], p[1], p[2]).0;
            }
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blending_goes_from_dst_to_src() {
        assert_eq!(blend(0x000000, 0xFFFFFF, 255), 0xFFFFFF);
        assert_eq!(blend(0x123456, 0xFFFFFF, 0), 0x123456);
        assert_eq!(blend(0x000000, 0xFF8040, 128), 0x804020);
    }

    #[test]
    fn drawing_is_clipped_to_the_frame() {
        let mut f = Frame::new(10, 10);
        f.fill_rect(Rect::new(-5, -5, 8, 8), Rgb(0xFF0000), 255);
        f.fill_rect(Rect::new(8, 8, 100, 100), Rgb(0x00FF00), 255);
        f.fill_rounded(Rect::new(-20, 5, 200, 30), 12, Rgb(0x0000FF), 200);
        f.fill_circle(0.0, 0.0, 30.0, Rgb(0xFFFFFF), 255);
        f.draw_mask(-3, 7, 4, 4, &[255; 16], Rgb(0x00FFFF));
        f.draw_mask(9, 9, 4, 4, &[255; 16], Rgb(0x00FFFF));
        assert_eq!(f.pixel(9, 9), Some(Rgb(0x00FFFF)));
        assert_eq!(f.pixel(10, 0), None);
    }

    #[test]
    fn rounded_rectangle_has_soft_corners_and_solid_middle() {
        let mut f = Frame::new(40, 40);
        f.fill_rounded(Rect::new(0, 0, 40, 40), 10, Rgb(0xFFFFFF), 255);
        assert_eq!(f.pixel(0, 0), Some(Rgb(0)), "corner outside the curve");
        assert_eq!(f.pixel(20, 0), Some(Rgb(0xFFFFFF)));
        assert_eq!(f.pixel(0, 20), Some(Rgb(0xFFFFFF)));
        assert_eq!(f.pixel(20, 20), Some(Rgb(0xFFFFFF)));
        let edge = f.pixel(3, 3).unwrap().r();
        assert!(edge > 0 && edge < 255 || edge == 255, "anti-aliased edge");
    }

    #[test]
    fn pictures_keep_their_aspect_and_can_be_mirrored() {
        // 4x2: left half white, right half black (limited range).
        let mut pic = Picture::black(4, 2, 0);
        for y in 0..2 {
            pic.data[y * 4] = 235;
            pic.data[y * 4 + 1] = 235;
        }
        let mut f = Frame::new(8, 8);
        f.fill(Rgb(0x0000FF));
        let r = f.draw_picture(&pic, Rect::new(0, 0, 8, 8), false).unwrap();
        assert_eq!(r, Rect::new(0, 2, 8, 4));
        assert_eq!(f.pixel(0, 0), Some(Rgb(0x0000FF)), "outside the picture untouched");
        assert_eq!(f.pixel(0, 2), Some(Rgb(0xFFFFFF)));
        assert_eq!(f.pixel(7, 2), Some(Rgb(0)));
        f.draw_picture(&pic, Rect::new(0, 0, 8, 8), true);
        assert_eq!(f.pixel(0, 2), Some(Rgb(0)));
        assert_eq!(f.pixel(7, 2), Some(Rgb(0xFFFFFF)));
        let broken = Picture { width: 4, height: 2, data: vec![0; 3], captured_us: 0 };
        assert_eq!(f.draw_picture(&broken, Rect::new(0, 0, 8, 8), false), None);
        assert_eq!(f.draw_picture(&pic, Rect::new(0, 0, 0, 8), false), None);
    }

    #[test]
    fn png_and_i420_round_trips() {
        let mut f = Frame::new(6, 4);
        f.fill(Rgb::new(200, 30, 40));
        f.fill_rect(Rect::new(0, 0, 3, 4), Rgb::new(10, 220, 90), 255);
        let back = Frame::from_png(&f.to_png().unwrap()).unwrap();
        assert_eq!(back, f);
        let pic = f.to_i420(7);
        assert_eq!((pic.width, pic.height, pic.captured_us), (6, 4, 7));
        let mut again = Frame::new(6, 4);
        again.draw_picture(&pic, Rect::new(0, 0, 6, 4), false);
        let (a, b) = (again.pixel(5, 3).unwrap(), f.pixel(5, 3).unwrap());
        assert!(
            a.r().abs_diff(b.r()) <= 3 && a.g().abs_diff(b.g()) <= 3 && a.b().abs_diff(b.b()) <= 3,
            "{a:?} {b:?}"
        );
        assert!(Frame::from_png(b"not a png").is_err());
    }
}
