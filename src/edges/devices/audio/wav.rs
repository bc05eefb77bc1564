//! A speaker that writes a WAV file: 48 kHz mono 16-bit PCM, in a 44-byte RIFF header
//! written by hand. The header's sizes are brought up to date after every chunk, so a
//! process killed at any moment leaves a file that plays (at most the last chunk missing
//! from the declared size).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Speaker;
use crate::edges::devices::HwError;
use crate::edges::devices::feed::Pacer;
use crate::media::{FRAME_US, SAMPLE_RATE};

/// Bytes of the canonical RIFF/WAVE header before the samples.
pub const HEADER_LEN: usize = 44;

/// The header of a 48 kHz mono 16-bit PCM file holding `data_bytes` of samples.
pub fn wav_header(data_bytes: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&(36u32.saturating_add(data_bytes)).to_le_bytes());
    put(b"WAVEfmt ");
    put(&16u32.to_le_bytes()); // fmt chunk size
    put(&1u16.to_le_bytes()); // PCM
    put(&1u16.to_le_bytes()); // channels
    put(&SAMPLE_RATE.to_le_bytes());
    put(&(SAMPLE_RATE * 2).to_le_bytes()); // bytes per second
    put(&2u16.to_le_bytes()); // bytes per frame
    put(&16u16.to_le_bytes()); // bits per sample
    put(b"data");
    put(&data_bytes.to_le_bytes());
    h
}

/// A speaker that records to a WAV file.
pub struct WavSpeaker {
    file: File,
    path: PathBuf,
    data_bytes: u32,
    pacer: Option<Pacer>,
}

impl WavSpeaker {
    /// Creates (or truncates) `path` and writes an empty file's header.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, HwError> {
        let path = path.into();
        let mut file = File::create(&path).map_err(|e| HwError::Open {
            what: "WAV file",
            path: path.clone(),
            source: Box::new(e),
        })?;
        file.write_all(&wav_header(0)).map_err(|e| HwError::Open {
            what: "WAV file",
            path: path.clone(),
            source: Box::new(e),
        })?;
        Ok(Self { file, path, data_bytes: 0, pacer: None })
    }

    /// Takes 20 ms of wall time per 20 ms chunk, like a device.
    pub fn paced(mut self) -> Self {
        self.pacer = Some(Pacer::new(Duration::from_micros(FRAME_US)));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        u64::from(self.data_bytes / 2)
    }

    /// Brings the header's sizes up to date (done after every chunk anyway).
    pub fn flush(&mut self) -> Result<(), HwError> {
        self.file.write_all_at(&wav_header(self.data_bytes), 0).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: io::Error) -> HwError {
        HwError::Io { what: "writing the WAV file", source: format!("{}: {e}", self.path.display()).into() }
    }
}

impl Speaker for WavSpeaker {
    fn play(&mut self, samples: &[i16]) -> Result<(), HwError> {
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let Some(total) = u32::try_from(bytes.len())
            .ok()
            .and_then(|n| self.data_bytes.checked_add(n))
            .filter(|&t| t <= u32::MAX - 36)
        else {
            return Err(self.io_error(io::Error::new(io::ErrorKind::StorageFull, "WAV file reached 4 GiB")));
        };
        // The file's cursor stays at the end: the header is written with positioned writes.
        self.file.write_all(&bytes).map_err(|e| self.io_error(e))?;
        self.data_bytes = total;
        self.flush()
    }

    fn describe(&self) -> String {
        format!("WAV file {}", self.path.display())
    }
}

impl Drop for WavSpeaker {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Reads a mono 16-bit PCM WAV file: `(sample rate, samples)`. Trusts the data chunk's
/// declared size only as far as the file goes.
pub fn read_wav(path: &Path) -> io::Result<(u32, Vec<i16>)> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(invalid("not a RIFF/WAVE file"));
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut at = 12;
    let mut rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(at + 4) as usize;
        let body = at + 8;
        let end = body.saturating_add(size).min(bytes.len());
        match id {
            b"fmt " if end - body >= 16 => {
                let (format, channels, bits) = (u16_at(body), u16_at(body + 2), u16_at(body + 14));
                if (format, channels, bits) != (1, 1, 16) {
                    return Err(invalid("only mono 16-bit PCM is read"));
                }
                rate = Some(u32_at(body + 4));
            }
            b"data" => {
                let rate = rate.ok_or_else(|| invalid("data before fmt"))?;
                let samples = bytes[body..end]
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                    .collect();
                return Ok((rate, samples));
            }
            _ => {}
        }
        at = end + (size & 1); // chunks are padded to even sizes
    }
    Err(invalid("no data chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::devices::audio::{Microphone, SyntheticMicrophone, dominant_frequency};

    #[test]
    fn header_has_the_canonical_layout() {
        let h = wav_header(1920);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 36 + 1920);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 48_000);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 96_000);
        assert_eq!(&h[36..40], b"data");
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 1920);
    }

    #[test]
    fn written_file_reads_back_after_every_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let mut speaker = WavSpeaker::create(&path).unwrap();
        let mut mic = SyntheticMicrophone::new(660.0).unpaced();
        let mut all = Vec::new();
        for _ in 0..25 {
            let chunk = mic.next_chunk().unwrap();
            speaker.play(&chunk.samples).unwrap();
            all.extend(chunk.samples);
            // As if the process were killed here: the file is complete so far.
            let (rate, samples) = read_wav(&path).unwrap();
            assert_eq!((rate, samples.len()), (48_000, all.len()));
        }
        assert_eq!(speaker.samples_written(), all.len() as u64);
        drop(speaker);
        let (_, samples) = read_wav(&path).unwrap();
        assert_eq!(samples, all);
        assert!((dominant_frequency(&samples, 48_000) - 660.0).abs() < 6.6);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 2 * all.len() as u64);
    }

    #[test]
    fn unwritable_path_is_an_open_error() {
        let err = WavSpeaker::create("/nonexistent-dir/x.wav").err().unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/x.wav"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        std::fs::write(&path, b"RIFF\0\0\0\0WAVEdata\xff\xff\xff\xff").unwrap();
        assert!(read_wav(&path).is_err());
    }
}
