//! A screen that records to a YUV4MPEG2 file (`.y4m`, what ffmpeg and mpv read):
//! `YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg` then `FRAME\n` and the I420 bytes of each
//! picture. Every picture is written straight to the file, so a killed process leaves
//! all pictures shown so far.
//!
//! Y4M has one size per file. When the picture size changes mid-stream (the sender changed
//! resolution) a new file is started next to the first, with the new size: `call.y4m`,
//! then `call.1.y4m`, `call.2.y4m`... ([`Y4mScreen::files`]). Pictures are never scaled,
//! so what a test reads back is exactly what was decoded (stamps included).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::Screen;
use crate::edges::devices::HwError;
use crate::media::Picture;

/// A screen writing Y4M files.
pub struct Y4mScreen {
    /// The first file's path; later sizes get numbered siblings.
    path: PathBuf,
    fps: u32,
    /// The file being written and its picture size; `None` until the first picture.
    current: Option<(File, u32, u32)>,
    files: Vec<PathBuf>,
    pictures: u64,
}

impl Y4mScreen {
    /// Records to `path` (created at the first picture), declaring `fps` frames a second.
    pub fn create(path: impl Into<PathBuf>, fps: u32) -> Self {
        Self { path: path.into(), fps: fps.max(1), current: None, files: Vec::new(), pictures: 0 }
    }

    /// The files written so far, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Pictures written so far, over all files.
    pub fn pictures(&self) -> u64 {
        self.pictures
    }

    /// The path of the `n`th file: `call.y4m`, `call.1.y4m`, ...
    fn nth_path(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext =
            self.path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "y4m".into());
        self.path.with_file_name(format!("{stem}.{n}.{ext}"))
    }

    fn start_file(&mut self, width: u32, height: u32) -> Result<(), HwError> {
        let path = self.nth_path(self.files.len());
        let open = |e: io::Error| HwError::Open { what: "Y4M file", path: path.clone(), source: Box::new(e) };
        let mut file = File::create(&path).map_err(open)?;
        let header = format!("YUV4MPEG2 W{width} H{height} F{}:1 Ip A1:1 C420jpeg\n", self.fps);
        file.write_all(header.as_bytes()).map_err(open)?;
        self.files.push(path);
        self.current = Some((file, width, height));
        Ok(())
    }
}

impl Screen for Y4mScreen {
    fn show(&mut self, pic: &Picture) -> Result<(), HwError> {
        let len = Picture::i420_len(pic.width, pic.height);
        if pic.width == 0
            || pic.height == 0
            || !pic.width.is_multiple_of(2)
            || !pic.height.is_multiple_of(2)
            || pic.data.len() < len
        {
            return Err(HwError::Misconfigured(format!(
                "Y4M screen: malformed {}x{} picture with {} bytes",
                pic.width,
                pic.height,
                pic.data.len()
            )));
        }
        if !matches!(self.current, Some((_, w, h)) if (w, h) == (pic.width, pic.height)) {
            self.start_file(pic.width, pic.height)?;
        }
        let Some((file, _, _)) = self.current.as_mut() else {
            return Err(HwError::Closed("Y4M file"));
        };
        let mut frame = Vec::with_capacity(6 + len);
        frame.extend_from_slice(b"FRAME\n");
        frame.extend_from_slice(&pic.data[..len]);
        if let Err(e) = file.write_all(&frame) {
            let path = self
                .files
                .last()
                .map_or_else(|| self.path.display().to_string(), |p| p.display().to_string());
            return Err(HwError::Io { what: "writing the Y4M file", source: format!("{path}: {e}").into() });
        }
        self.pictures += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Y4M file {}", self.path.display())
    }
}

/// Reads the pictures of a 4:2:0 Y4M file (as [`Y4mScreen`] writes them; frame parameters
/// and a truncated last frame are ignored). `captured_us` is 0.
pub fn read_y4m(path: &Path) -> io::Result<Vec<Picture>> {
    let invalid =
        |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut reader = BufReader::new(File::open(path)?);
    let mut header = String::new();
    reader.by_ref().take(256).read_line(&mut header)?;
    let mut fields = header.trim_end().split(' ');
    if fields.next() != Some("YUV4MPEG2") {
        return Err(invalid("not a YUV4MPEG2 file".into()));
    }
    let (mut width, mut height) = (0u32, 0u32);
    for field in fields {
        let value = field.get(1..).unwrap_or("");
        match field.as_bytes().first() {
            Some(b'W') => width = value.parse().map_err(|_| invalid(format!("bad width {field}")))?,
            Some(b'H') => height = value.parse().map_err(|_| invalid(format!("bad height {field}")))?,
            Some(b'C') if !value.starts_with("420") => return Err(invalid(format!("colour space {field}"))),
            _ => {}
        }
    }
    if width == 0
        || height == 0
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > 16384
        || height > 16384
    {
        return Err(invalid(format!("unsupported size {width}x{height}")));
    }
    let len = Picture::i420_len(width, height);
    let mut pictures = Vec::new();
    loop {
        let mut line = String::new();
        if reader.by_ref().take(256).read_line(&mut line)? == 0 {
            return Ok(pictures);
        }
        if !line.starts_with("FRAME") {
            return Err(invalid(format!("expected FRAME, found {:?}", line.trim_end())));
        }
        let mut data = vec![0; len];
        match reader.read_exact(&mut data) {
            Ok(()) => pictures.push(Picture { width, height, data, captured_us: 0 }),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(pictures),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::devices::camera::synthetic::test_pattern;
    use crate::edges::devices::camera::{read_stamp, stamp};

    #[test]
    fn pictures_round_trip_with_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.y4m");
        let mut screen = Y4mScreen::create(&path, 30);
        for n in 0..3 {
            let mut pic = test_pattern(160, 120, n, 0);
            stamp(&mut pic, n, 1000 + n);
            screen.show(&pic).unwrap();
        }
        let header = std::fs::read(&path).unwrap();
        assert!(header.starts_with(b"YUV4MPEG2 W160 H120 F30:1 Ip A1:1 C420jpeg\nFRAME\n"));
        let pictures = read_y4m(&path).unwrap();
        let stamps: Vec<_> = pictures.iter().map(|p| read_stamp(p).unwrap()).collect();
        assert_eq!(stamps, [(0, 1000), (1, 1001), (2, 1002)]);
    }

    #[test]
    fn a_new_size_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut screen = Y4mScreen::create(dir.path().join("call.y4m"), 25);
        screen.show(&Picture::black(64, 48, 0)).unwrap();
        screen.show(&Picture::black(128, 96, 0)).unwrap();
        screen.show(&Picture::black(128, 96, 0)).unwrap();
        let names: Vec<_> = screen.files().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["call.y4m", "call.1.y4m"]);
        assert_eq!(read_y4m(&screen.files()[0]).unwrap().len(), 1);
        let second = read_y4m(&screen.files()[1]).unwrap();
        assert_eq!((second.len(), second[0].width), (2, 128));
        assert_eq!(screen.pictures(), 3);
    }

    #[test]
    fn truncated_last_frame_is_ignored_and_garbage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.y4m");
        let mut screen = Y4mScreen::create(&path, 30);
        screen.show(&Picture::black(64, 48, 0)).unwrap();
        drop(screen);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"FRAME\n\x10\x10");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_y4m(&path).unwrap().len(), 1);
        std::fs::write(&path, b"P6\n1 1\n255\n\0\0\0").unwrap();
        assert!(read_y4m(&path).is_err());
    }

    #[test]
    fn malformed_picture_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut screen = Y4mScreen::create(dir.path().join("x.y4m"), 30);
        let broken = Picture { width: 64, height: 48, data: vec![0; 100], captured_us: 0 };
        assert!(screen.show(&broken).is_err());
    }
}
