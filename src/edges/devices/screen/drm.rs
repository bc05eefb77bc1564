//! A DRM/KMS screen through the `drm` crate: the first connected output at its preferred
//! mode, two XRGB8888 dumb buffers, and a page flip per picture (or a mode set where the
//! driver cannot flip). The next picture is drawn into the buffer not on screen, and only
//! after the previous flip completed, so the display never shows a half-drawn picture.
//!
//! The process must be DRM master: nothing else (a compositor, X) may drive the display.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use ::drm::buffer::{Buffer as _, DrmFourcc};
use ::drm::control::dumbbuffer::{DumbBuffer, DumbMapping};
use ::drm::control::{
    Device as ControlDevice, Event, Mode, ModeTypeFlags, PageFlipFlags, connector, crtc, framebuffer,
};
use tracing::{debug, warn};

use super::{PixelOrder, Screen, copy_frame_32bpp, i420_to_xrgb_scaled};
use crate::edges::devices::HwError;
use crate::media::Picture;
use crate::ui::Frame;

/// How long to wait for a page flip to complete before reporting a stall (a display that
/// refreshes at all does it within 1/24 s).
const FLIP_TIMEOUT_MS: i32 = 1000;

/// The DRM device file: the `drm` crate's traits want a type of ours to hang on.
struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl ::drm::Device for Card {}
impl ControlDevice for Card {}

/// One scan-out buffer: a dumb buffer, its framebuffer and its mapping.
struct ScanoutBuffer {
    framebuffer: framebuffer::Handle,
    /// A copy of the handle (it is `Copy`) for destroying the buffer; the mapping borrows a
    /// leaked one, since a mapping lives as long as this screen (≈ 40 bytes per buffer per
    /// screen opened).
    dumb: DumbBuffer,
    mapping: DumbMapping<'static>,
}

/// A KMS output showing pictures.
pub struct DrmScreen {
    card: Card,
    path: PathBuf,
    crtc: crtc::Handle,
    connector: connector::Handle,
    mode: Mode,
    /// What the CRTC showed before us, restored on drop.
    saved: Option<crtc::Info>,
    buffers: Vec<ScanoutBuffer>,
    /// Index of the buffer on screen (or about to be, while a flip is pending).
    front: usize,
    flip_pending: bool,
    /// False once the driver refused a page flip: fall back to setting the CRTC.
    can_flip: bool,
    name: String,
}

fn open_error(path: &Path, step: &str, e: io::Error) -> HwError {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => " (no DRM device: is the display driver loaded? try the fbdev screen)",
        io::ErrorKind::PermissionDenied => " (permission denied, or another program is DRM master)",
        _ => "",
    };
    HwError::Open {
        what: "DRM display",
        path: path.to_path_buf(),
        source: format!("{step}: {e}{hint}").into(),
    }
}

impl DrmScreen {
    /// Opens `path` (`/dev/dri/card0`), picks the first connected output and its preferred
    /// mode, and shows black.
    pub fn open(path: &Path) -> Result<Self, HwError> {
        let file =
            OpenOptions::new().read(true).write(true).open(path).map_err(|e| open_error(path, "open", e))?;
        let card = Card(file);
        let resources = card.resource_handles().map_err(|e| open_error(path, "not a KMS device", e))?;
        let mut seen = Vec::new();
        let mut chosen = None;
        for &handle in resources.connectors() {
            let Ok(info) = card.get_connector(handle, false) else { continue };
            seen.push(format!("{info} {:?}", info.state()));
            if info.state() == connector::State::Connected && !info.modes().is_empty() {
                chosen = Some(info);
                break;
            }
        }
        let Some(connector) = chosen else {
            return Err(HwError::Misconfigured(format!(
                "{}: no connected display output (outputs: {})",
                path.display(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            )));
        };
        let modes = connector.modes();
        let mode =
            *modes.iter().find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED)).unwrap_or(&modes[0]);
        let encoder = connector.current_encoder().or_else(|| connector.encoders().first().copied());
        let crtc = encoder
            .and_then(|e| card.get_encoder(e).ok())
            .and_then(|e| e.crtc().or_else(|| resources.filter_crtcs(e.possible_crtcs()).first().copied()))
            .or_else(|| resources.crtcs().first().copied())
            .ok_or_else(|| {
                HwError::Misconfigured(format!("{}: no CRTC can drive {connector}", path.display()))
            })?;
        let saved = card.get_crtc(crtc).ok();
        let (w, h) = mode.size();
        let mut buffers = Vec::with_capacity(2);
        for _ in 0..2 {
            buffers.push(
                Self::scanout_buffer(&card, u32::from(w), u32::from(h))
                    .map_err(|e| open_error(path, "create a scan-out buffer", e))?,
            );
        }
        card.set_crtc(crtc, Some(buffers[0].framebuffer), (0, 0), &[connector.handle()], Some(mode))
            .map_err(|e| open_error(path, "set the mode", e))?;
        let name = format!("DRM {} {connector} {}x{}@{}", path.display(), w, h, mode.vrefresh());
        debug!(screen = %name, "display open");
        Ok(Self {
            card,
            path: path.to_path_buf(),
            crtc,
            connector: connector.handle(),
            mode,
            saved,
            buffers,
            front: 0,
            flip_pending: false,
            can_flip: true,
            name,
        })
    }

    fn scanout_buffer(card: &Card, w: u32, h: u32) -> io::Result<ScanoutBuffer> {
        let dumb = card.create_dumb_buffer((w, h), DrmFourcc::Xrgb8888, 32)?;
        let framebuffer = card.add_framebuffer(&dumb, 24, 32)?;
        let leaked: &'static mut DumbBuffer = Box::leak(Box::new(dumb));
        let mut mapping = card.map_dumb_buffer(leaked)?;
        mapping.fill(0);
        Ok(ScanoutBuffer { framebuffer, dumb, mapping })
    }

    /// Waits for the pending page flip's completion event.
    fn wait_for_flip(&mut self) -> Result<(), HwError> {
        while self.flip_pending {
            let mut poll = [libc::pollfd { fd: self.card.0.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: `poll` points to one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(poll.as_mut_ptr(), 1, FLIP_TIMEOUT_MS) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.io_error("waiting for a page flip", e));
            }
            if ready == 0 {
                return Err(HwError::timeout("display page flip did not complete"));
            }
            let events = self.card.receive_events().map_err(|e| self.io_error("reading DRM events", e))?;
            for event in events {
                if let Event::PageFlip(_) = event {
                    self.flip_pending = false;
                }
            }
        }
        Ok(())
    }

    fn io_error(&self, what: &'static str, e: io::Error) -> HwError {
        HwError::Io { what, source: format!("{}: {e}", self.path.display()).into() }
    }
}

impl DrmScreen {
    /// Draws into the buffer not on screen (`draw(bytes, width, height, pitch)`), then flips
    /// to it.
    fn present(&mut self, draw: impl FnOnce(&mut [u8], u32, u32, usize)) -> Result<(), HwError> {
        // The buffer to draw into is on screen until the pending flip completes.
        self.wait_for_flip()?;
        let back = 1 - self.front;
        let (w, h) = self.mode.size();
        let buffer = &mut self.buffers[back];
        let pitch = buffer.dumb.pitch() as usize;
        draw(&mut buffer.mapping, u32::from(w), u32::from(h), pitch);
        let framebuffer = buffer.framebuffer;
        if self.can_flip {
            match self.card.page_flip(self.crtc, framebuffer, PageFlipFlags::EVENT, None) {
                Ok(()) => {
                    self.flip_pending = true;
                    self.front = back;
                    return Ok(());
                }
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) =>
                {
                    warn!(screen = %self.name, error = %e, "page flip unsupported; setting the CRTC instead");
                    self.can_flip = false;
                }
                Err(e) => return Err(self.io_error("page flip", e)),
            }
        }
        self.card
            .set_crtc(self.crtc, Some(framebuffer), (0, 0), &[self.connector], Some(self.mode))
            .map_err(|e| self.io_error("setting the CRTC", e))?;
        self.front = back;
        Ok(())
    }
}

impl Screen for DrmScreen {
    fn show(&mut self, pic: &Picture) -> Result<(), HwError> {
        self.present(|buf, w, h, pitch| i420_to_xrgb_scaled(pic, buf, w, h, pitch))
    }

    fn show_frame(&mut self, frame: &Frame) -> Result<(), HwError> {
        self.present(|buf, w, h, pitch| copy_frame_32bpp(frame, buf, w, h, pitch, PixelOrder::Xrgb))
    }

    fn native_size(&self) -> Option<(u32, u32)> {
        let (w, h) = self.mode.size();
        Some((u32::from(w), u32::from(h)))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for DrmScreen {
    fn drop(&mut self) {
        if self.flip_pending {
            let _ = self.wait_for_flip();
        }
        if let Some(saved) = &self.saved {
            let restored = self.card.set_crtc(
                self.crtc,
                saved.framebuffer(),
                saved.position(),
                &[self.connector],
                saved.mode(),
            );
            if let Err(e) = restored {
                debug!(screen = %self.name, error = %e, "could not restore the previous display contents");
            }
        }
        for buffer in self.buffers.drain(..) {
            let ScanoutBuffer { framebuffer, dumb, mapping } = buffer;
            drop(mapping);
            let _ = self.card.destroy_framebuffer(framebuffer);
            let _ = self.card.destroy_dumb_buffer(dumb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_names_its_path() {
        let err = DrmScreen::open(Path::new("/dev/dri/card-none")).err().unwrap();
        assert!(matches!(err, HwError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/dev/dri/card-none"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_drm_device_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = DrmScreen::open(file.path()).err().unwrap();
        assert!(err.to_string().contains("not a KMS device"), "{err}");
    }
}
