//! ALSA capture and playback through the `alsa` crate: 48 kHz, mono, S16 (native endian,
//! S16_LE on every board we build for), interleaved read/write.
//!
//! The device is any ALSA name: `default`, `plughw:1,0`, `hw:Loopback,1,0`. `plug` names
//! convert rate and channels; `hw` names must support 48 kHz mono themselves. Over- and
//! underruns (xruns) are recovered (the stream is prepared again and continues) and counted.
//! So is a stall: when the device delivers no period for about its buffer time, the kernel's
//! wait times out and the read or write fails with EIO; the stream is restarted, and only
//! [`MAX_STALLS_IN_A_ROW`] stalls without a successful transfer in between end the device (a
//! device that is gone fails with ENODEV and ends it at once).

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use ::alsa::pcm::{Access, Format, HwParams, PCM};
use ::alsa::{Direction, ValueOr};
use tracing::{debug, warn};

use super::{Microphone, Speaker};
use crate::edges::devices::{HwError, unix_micros_now};
use crate::media::{AudioChunk, FRAME_SAMPLES, SAMPLE_RATE};

/// Device buffer in periods: 4 × 20 ms = 80 ms of slack against scheduling hiccups.
const BUFFER_PERIODS: i64 = 4;
/// Playback starts once this many periods are queued, so the first write does not underrun.
const START_PERIODS: i64 = 2;
/// Stalls (EIO: no period within the buffer time) in a row, with no successful read or write
/// between them, after which the device is reported broken.
pub const MAX_STALLS_IN_A_ROW: u32 = 3;

/// Which ALSA device and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmConfig {
    /// ALSA device name: `default`, `plughw:1,0`, `hw:Loopback,1,0`...
    pub device: String,
    /// Period (interrupt interval) asked of the device; it may pick a nearby one.
    pub period: Duration,
}

impl Default for PcmConfig {
    fn default() -> Self {
        Self { device: "default".into(), period: Duration::from_millis(20) }
    }
}

fn open_error(device: &str, what: &'static str, e: ::alsa::Error) -> HwError {
    let hint = match e.errno() {
        libc::EBUSY => " (busy: another program is using it)",
        libc::ENOENT | libc::ENODEV => " (no such device: see `aplay -L` / `arecord -L`)",
        libc::EACCES => " (permission denied: is the user in the audio group?)",
        _ => "",
    };
    HwError::Open { what, path: PathBuf::from(device), source: format!("{e}{hint}").into() }
}

fn setup_error(device: &str, step: &str, e: ::alsa::Error) -> HwError {
    HwError::Misconfigured(format!("ALSA device {device}: cannot {step}: {e}"))
}

fn io_error(device: &str, what: &'static str, e: ::alsa::Error) -> HwError {
    HwError::Io { what, source: format!("ALSA device {device}: {e}").into() }
}

/// Opens `config.device` for `dir` at 48 kHz mono S16; returns it with its period in frames.
fn open_pcm(config: &PcmConfig, dir: Direction, what: &'static str) -> Result<(PCM, usize), HwError> {
    let device = config.device.as_str();
    let name = CString::new(device)
        .map_err(|_| HwError::Misconfigured(format!("ALSA device name {device:?} contains a NUL byte")))?;
    let pcm = PCM::open(&name, dir, false).map_err(|e| open_error(device, what, e))?;
    let period = (u128::from(SAMPLE_RATE) * config.period.as_micros() / 1_000_000).clamp(64, 48_000) as i64;
    {
        let hw = HwParams::any(&pcm).map_err(|e| setup_error(device, "read its parameters", e))?;
        hw.set_access(Access::RWInterleaved).map_err(|e| setup_error(device, "use interleaved access", e))?;
        hw.set_format(Format::s16()).map_err(|e| setup_error(device, "use 16-bit samples", e))?;
        hw.set_channels(1).map_err(|e| setup_error(device, "use one channel (try plughw:)", e))?;
        hw.set_rate(SAMPLE_RATE, ValueOr::Nearest)
            .map_err(|e| setup_error(device, "use 48000 Hz (try plughw:)", e))?;
        hw.set_period_size_near(period, ValueOr::Nearest)
            .map_err(|e| setup_error(device, "set the period", e))?;
        hw.set_buffer_size_near(period * BUFFER_PERIODS)
            .map_err(|e| setup_error(device, "set the buffer size", e))?;
        pcm.hw_params(&hw).map_err(|e| setup_error(device, "apply its parameters", e))?;
    }
    let (period, buffer) = {
        let hw = pcm.hw_params_current().map_err(|e| setup_error(device, "read its parameters", e))?;
        let rate = hw.get_rate().map_err(|e| setup_error(device, "read its rate", e))?;
        if rate != SAMPLE_RATE {
            return Err(HwError::Misconfigured(format!(
                "ALSA device {device} runs at {rate} Hz, not {SAMPLE_RATE} (try plughw:)"
            )));
        }
        let period = hw.get_period_size().map_err(|e| setup_error(device, "read its period", e))?;
        let buffer = hw.get_buffer_size().map_err(|e| setup_error(device, "read its buffer size", e))?;
        (period.max(1), buffer)
    };
    if dir == Direction::Playback {
        let sw =
            pcm.sw_params_current().map_err(|e| setup_error(device, "read its software parameters", e))?;
        sw.set_start_threshold((period * START_PERIODS).min(buffer))
            .map_err(|e| setup_error(device, "set the start threshold", e))?;
        pcm.sw_params(&sw).map_err(|e| setup_error(device, "apply its software parameters", e))?;
    }
    debug!(device, ?dir, period, buffer, "ALSA device open");
    Ok((pcm, period as usize))
}

/// What to do after a failed read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Over- or underrun (or suspend) recovered: count it and go on.
    Xrun,
    /// No period came within the buffer time (EIO from the kernel's wait): the stream was
    /// restarted; count it and go on unless it keeps happening.
    Stall,
    /// Interrupted: just try again.
    Retry,
}

/// How a failed read or write with this errno is handled; `None`: the device is broken.
fn classify(errno: i32) -> Option<Failure> {
    match errno {
        libc::EINTR | libc::EAGAIN => Some(Failure::Retry),
        libc::EPIPE | libc::ESTRPIPE => Some(Failure::Xrun),
        libc::EIO => Some(Failure::Stall),
        _ => None,
    }
}

/// Recovers from an xrun, a suspend or a stall; anything else is an I/O error naming the
/// device. `stalls` counts stalls in a row (the caller resets it after a good transfer).
fn recover(
    pcm: &PCM,
    device: &str,
    what: &'static str,
    e: ::alsa::Error,
    stalls: &mut u32,
) -> Result<Failure, HwError> {
    let failure = classify(e.errno()).ok_or_else(|| io_error(device, what, e))?;
    match failure {
        Failure::Retry => {}
        Failure::Xrun => pcm.try_recover(e, true).map_err(|e| io_error(device, what, e))?,
        Failure::Stall => {
            *stalls += 1;
            if *stalls >= MAX_STALLS_IN_A_ROW {
                return Err(io_error(device, what, e));
            }
            pcm.drop().and_then(|()| pcm.prepare()).map_err(|e| io_error(device, what, e))?;
        }
    }
    Ok(failure)
}

/// An ALSA capture device delivering 20 ms chunks, whatever its period.
pub struct AlsaMicrophone {
    pcm: PCM,
    device: String,
    /// One period of samples, read at a time.
    read_buf: Vec<i16>,
    /// Samples read but not yet handed out.
    pending: Vec<i16>,
    xruns: u64,
    stalls_in_a_row: u32,
}

impl AlsaMicrophone {
    pub fn open(config: &PcmConfig) -> Result<Self, HwError> {
        let (pcm, period) = open_pcm(config, Direction::Capture, "ALSA capture device")?;
        Ok(Self {
            pcm,
            device: config.device.clone(),
            read_buf: vec![0; period],
            pending: Vec::with_capacity(period + FRAME_SAMPLES),
            xruns: 0,
            stalls_in_a_row: 0,
        })
    }
}

impl Microphone for AlsaMicrophone {
    fn next_chunk(&mut self) -> Result<AudioChunk, HwError> {
        const WHAT: &str = "reading the ALSA capture device";
        while self.pending.len() < FRAME_SAMPLES {
            let io = self.pcm.io_i16().map_err(|e| io_error(&self.device, WHAT, e))?;
            match io.readi(&mut self.read_buf) {
                Ok(n) => {
                    self.stalls_in_a_row = 0;
                    self.pending.extend_from_slice(&self.read_buf[..n.min(self.read_buf.len())]);
                }
                Err(e) => {
                    drop(io);
                    match recover(&self.pcm, &self.device, WHAT, e, &mut self.stalls_in_a_row)? {
                        Failure::Xrun => {
                            self.xruns += 1;
                            warn!(device = %self.device, xruns = self.xruns, "capture overrun");
                        }
                        Failure::Stall => {
                            self.xruns += 1;
                            warn!(device = %self.device, xruns = self.xruns, "capture stalled; restarted");
                        }
                        Failure::Retry => {}
                    }
                }
            }
        }
        // The newest pending sample was captured just now; the chunk's first one earlier.
        let age_us = self.pending.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE);
        let captured_us = unix_micros_now().saturating_sub(age_us);
        let samples = self.pending.drain(..FRAME_SAMPLES).collect();
        Ok(AudioChunk { samples, captured_us })
    }

    fn describe(&self) -> String {
        format!("ALSA capture {} ({} frames a period)", self.device, self.read_buf.len())
    }

    fn xruns(&self) -> u64 {
        self.xruns
    }
}

/// An ALSA playback device.
pub struct AlsaSpeaker {
    pcm: PCM,
    device: String,
    period: usize,
    xruns: u64,
    stalls_in_a_row: u32,
}

impl AlsaSpeaker {
    pub fn open(config: &PcmConfig) -> Result<Self, HwError> {
        let (pcm, period) = open_pcm(config, Direction::Playback, "ALSA playback device")?;
        Ok(Self { pcm, device: config.device.clone(), period, xruns: 0, stalls_in_a_row: 0 })
    }
}

impl Speaker for AlsaSpeaker {
    fn play(&mut self, samples: &[i16]) -> Result<(), HwError> {
        const WHAT: &str = "writing the ALSA playback device";
        let mut rest = samples;
        while !rest.is_empty() {
            let io = self.pcm.io_i16().map_err(|e| io_error(&self.device, WHAT, e))?;
            match io.writei(rest) {
                Ok(n) => {
                    self.stalls_in_a_row = 0;
                    rest = &rest[n.min(rest.len())..];
                }
                Err(e) => {
                    drop(io);
                    match recover(&self.pcm, &self.device, WHAT, e, &mut self.stalls_in_a_row)? {
                        Failure::Xrun => {
                            self.xruns += 1;
                            warn!(device = %self.device, xruns = self.xruns, "playback underrun");
                        }
                        Failure::Stall => {
                            self.xruns += 1;
                            warn!(device = %self.device, xruns = self.xruns, "playback stalled; restarted");
                        }
                        Failure::Retry => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("ALSA playback {} ({} frames a period)", self.device, self.period)
    }

    fn xruns(&self) -> u64 {
        self.xruns
    }
}

impl Drop for AlsaSpeaker {
    fn drop(&mut self) {
        // Let the last few periods play out (at most the 80 ms buffer).
        if let Err(e) = self.pcm.drain() {
            debug!(device = %self.device, error = %e, "ALSA drain on close");
        }
    }
}

/// An ALSA device as `kioskd doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PcmInfo {
    /// The name to put in the configuration (`hw:CARD=Loopback,DEV=1`, `default`...).
    pub name: String,
    /// ALSA's description, on one line.
    pub description: String,
    pub capture: bool,
    pub playback: bool,
}

/// PCM devices from ALSA's name hints (what `aplay -L` lists). Empty if ALSA has none.
pub fn list_pcm_devices() -> Vec<PcmInfo> {
    let Ok(hints) = ::alsa::device_name::HintIter::new_str(None, "pcm") else { return Vec::new() };
    hints
        .filter_map(|hint| {
            let name = hint.name?;
            Some(PcmInfo {
                name,
                description: hint.desc.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" "),
                capture: hint.direction != Some(Direction::Playback),
                playback: hint.direction != Some(Direction::Capture),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_an_open_error_naming_it() {
        let config = PcmConfig { device: "hw:NoSuchCard,0".into(), ..PcmConfig::default() };
        let err = AlsaMicrophone::open(&config).err().unwrap();
        assert!(matches!(err, HwError::Open { .. }), "{err}");
        assert!(err.to_string().contains("hw:NoSuchCard,0"), "{err}");
        let err = AlsaSpeaker::open(&config).err().unwrap();
        assert!(err.to_string().contains("hw:NoSuchCard,0"), "{err}");
    }

    #[test]
    fn nul_in_device_name_is_refused() {
        let config = PcmConfig { device: "hw:0\0".into(), ..PcmConfig::default() };
        assert!(matches!(AlsaSpeaker::open(&config), Err(HwError::Misconfigured(_))));
    }

    #[test]
    fn stalls_and_xruns_are_recovered_lost_devices_are_not() {
        assert_eq!(classify(libc::EPIPE), Some(Failure::Xrun));
        assert_eq!(classify(libc::ESTRPIPE), Some(Failure::Xrun));
        assert_eq!(classify(libc::EIO), Some(Failure::Stall));
        assert_eq!(classify(libc::EINTR), Some(Failure::Retry));
        assert_eq!(classify(libc::ENODEV), None, "an unplugged card ends the device");
        assert_eq!(classify(libc::EBADFD), None);
    }

    #[test]
    fn listing_devices_does_not_fail() {
        // Whatever this machine has; it must not panic without sound cards.
        let _ = list_pcm_devices();
    }
}
