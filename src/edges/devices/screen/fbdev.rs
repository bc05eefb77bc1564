//! A Linux framebuffer screen (`/dev/fb0`), the fallback where DRM is not available:
//! geometry from the FBIOGET_VSCREENINFO / FBIOGET_FSCREENINFO ioctls, the visible area
//! memory-mapped, 32 bits per pixel only (XRGB or XBGR).
//!
//! Each picture is converted into a private buffer and then copied to the framebuffer in
//! one pass, which keeps the window for tearing short; fbdev offers no page flip here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::{PixelOrder, Screen, copy_frame_32bpp, i420_to_32bpp_scaled};
use crate::edges::devices::HwError;
use crate::media::Picture;
use crate::ui::Frame;

/// `FBIOGET_VSCREENINFO` from linux/fb.h.
const FBIOGET_VSCREENINFO: libc::Ioctl = 0x4600;
/// `FBIOGET_FSCREENINFO` from linux/fb.h.
const FBIOGET_FSCREENINFO: libc::Ioctl = 0x4602;

/// `struct fb_bitfield` from linux/fb.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FbBitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` from linux/fb.h (160 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FbVarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: FbBitfield,
    green: FbBitfield,
    blue: FbBitfield,
    transp: FbBitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` from linux/fb.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FbFixScreeninfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

/// A shared mapping of the framebuffer memory, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by one `FbdevScreen` and only touched through `&mut self`.
unsafe impl Send for Mapping {}

impl Mapping {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live MAP_SHARED mapping of `len` bytes, readable and writable,
        // until drop; `&mut self` makes this the only slice over it in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned; no slice over it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A 32 bpp framebuffer showing pictures.
pub struct FbdevScreen {
    path: PathBuf,
    map: Mapping,
    width: u32,
    height: u32,
    line_length: usize,
    /// Byte offset of the visible area in the mapping (panning offsets).
    visible_offset: usize,
    order: PixelOrder,
    /// The next picture, drawn here first and then copied in one pass.
    back: Vec<u8>,
    /// Keeps the device open as long as the mapping.
    _file: File,
}

fn open_error(path: &Path, step: &str, e: io::Error) -> HwError {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => " (no framebuffer device)",
        io::ErrorKind::PermissionDenied => " (permission denied: is the user in the video group?)",
        _ => "",
    };
    HwError::Open {
        what: "framebuffer",
        path: path.to_path_buf(),
        source: format!("{step}: {e}{hint}").into(),
    }
}

/// Runs a FBIOGET_* ioctl that fills `out`.
fn get_info<T>(file: &File, request: libc::Ioctl, out: &mut T) -> io::Result<()> {
    // SAFETY: `out` is a valid, exclusively borrowed `repr(C)` struct of the layout the
    // kernel fills for `request`.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), request, std::ptr::from_mut(out)) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

impl FbdevScreen {
    /// Opens `path` (`/dev/fb0`); fails unless it is a 32 bpp XRGB or XBGR framebuffer.
    pub fn open(path: &Path) -> Result<Self, HwError> {
        let file =
            OpenOptions::new().read(true).write(true).open(path).map_err(|e| open_error(path, "open", e))?;
        let mut var = FbVarScreeninfo::default();
        get_info(&file, FBIOGET_VSCREENINFO, &mut var)
            .map_err(|e| open_error(path, "not a framebuffer (FBIOGET_VSCREENINFO)", e))?;
        let mut fix = FbFixScreeninfo::default();
        get_info(&file, FBIOGET_FSCREENINFO, &mut fix)
            .map_err(|e| open_error(path, "not a framebuffer (FBIOGET_FSCREENINFO)", e))?;
        if var.bits_per_pixel != 32 {
            return Err(HwError::Misconfigured(format!(
                "framebuffer {} has {} bits per pixel; only 32 is supported (fbset -depth 32)",
                path.display(),
                var.bits_per_pixel
            )));
        }
        let order = match (var.red.offset, var.green.offset, var.blue.offset) {
            (16, 8, 0) => PixelOrder::Xrgb,
            (0, 8, 16) => PixelOrder::Xbgr,
            (r, g, b) => {
                return Err(HwError::Misconfigured(format!(
                    "framebuffer {}: unsupported pixel layout (red at bit {r}, green {g}, blue {b})",
                    path.display()
                )));
            }
        };
        let line_length = fix.line_length as usize;
        let (width, height) = (var.xres, var.yres);
        let visible_offset = var.yoffset as usize * line_length + var.xoffset as usize * 4;
        let needed = visible_offset + height as usize * line_length;
        let len =
            if fix.smem_len > 0 { fix.smem_len as usize } else { line_length * var.yres_virtual as usize };
        if width == 0 || height == 0 || line_length < width as usize * 4 || needed > len {
            return Err(HwError::Misconfigured(format!(
                "framebuffer {}: inconsistent geometry {width}x{height}, {line_length} bytes a line, {len} bytes",
                path.display()
            )));
        }
        // SAFETY: maps `len` bytes of the device at offset 0, shared, as the kernel offers.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(open_error(path, "map the framebuffer", io::Error::last_os_error()));
        }
        let map = Mapping { ptr: ptr.cast(), len };
        debug!(framebuffer = %path.display(), width, height, line_length, ?order, "framebuffer open");
        Ok(Self {
            path: path.to_path_buf(),
            map,
            width,
            height,
            line_length,
            visible_offset,
            order,
            back: vec![0; line_length * height as usize],
            _file: file,
        })
    }
}

impl FbdevScreen {
    /// Copies the private buffer to the framebuffer in one pass.
    fn flush(&mut self) -> Result<(), HwError> {
        let start = self.visible_offset;
        let end = start + self.back.len();
        let Some(visible) = self.map.bytes().get_mut(start..end) else {
            return Err(HwError::Misconfigured(format!("framebuffer {} shrank", self.path.display())));
        };
        visible.copy_from_slice(&self.back);
        Ok(())
    }
}

impl Screen for FbdevScreen {
    fn show(&mut self, pic: &Picture) -> Result<(), HwError> {
        i420_to_32bpp_scaled(pic, &mut self.back, self.width, self.height, self.line_length, self.order);
        self.flush()
    }

    fn show_frame(&mut self, frame: &Frame) -> Result<(), HwError> {
        copy_frame_32bpp(frame, &mut self.back, self.width, self.height, self.line_length, self.order);
        self.flush()
    }

    fn native_size(&self) -> Option<(u32, u32)> {
        Some((self.width, self.height))
    }

    fn describe(&self) -> String {
        format!("framebuffer {} {}x{}", self.path.display(), self.width, self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_sizes() {
        assert_eq!(std::mem::size_of::<FbVarScreeninfo>(), 160);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), 80);
        #[cfg(target_pointer_width = "32")]
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), 68);
    }

    #[test]
    fn missing_device_names_its_path() {
        let err = FbdevScreen::open(Path::new("/dev/fb-none")).err().unwrap();
        assert!(err.to_string().contains("/dev/fb-none"), "{err}");
    }

    #[test]
    fn a_regular_file_is_not_a_framebuffer() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = FbdevScreen::open(file.path()).err().unwrap();
        assert!(err.to_string().contains("not a framebuffer"), "{err}");
    }
}
