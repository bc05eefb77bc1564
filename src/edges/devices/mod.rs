//! Hardware edges. Each device kind is a trait in domain terms with a real backend and a
//! synthetic one, chosen at run time from the configuration.

pub mod audio;
pub mod buttons;
pub mod camera;
pub mod feed;
pub mod leds;
pub mod screen;

use std::path::PathBuf;
use std::sync::Arc;

use crate::media::UnixMicros;

/// The wall clock in microseconds. Only edges read it; cores take times as arguments.
/// Opens a device for a call. Called at the start of every call, so that a device that was
/// missing comes back by itself, and so that the camera runs only during calls.
pub type Opener<T> = Arc<dyn Fn() -> Result<Box<T>, HwError> + Send + Sync>;

pub fn unix_micros_now() -> UnixMicros {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A device failed. Wraps the OS error and says which device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HwError {
    /// The device could not be opened: missing, busy, or no permission.
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or writing an open device failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The device works but does not fit the configuration (a line offset out of range...).
    #[error("{0}")]
    Misconfigured(String),
    /// The source has no more events (the simulated input was closed).
    #[error("{0} closed")]
    Closed(&'static str),
}

impl HwError {
    /// The device delivered nothing within its timeout. Not fatal by itself: a camera that
    /// stalls may come back, so the media threads count it and keep waiting.
    pub fn timeout(what: &'static str) -> Self {
        HwError::Io {
            what,
            source: Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "nothing within the timeout")),
        }
    }

    /// True for [`HwError::timeout`] and any I/O error of kind `TimedOut`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HwError::Io { source, .. }
            if source.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut))
    }
}
