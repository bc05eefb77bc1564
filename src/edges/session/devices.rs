//! The devices a call's media uses: synthetic ones (demo, tests, bench) or those a
//! configuration names, each opened afresh at every call.

use std::sync::Arc;
use std::time::Duration;

use super::{MediaDevices, MediaOptions};
use crate::edges::config::{
    AudioSection, CameraBackend, CameraSection, CaptureBackend, MediaSections, PlaybackBackend,
    ScreenBackend, ScreenSection,
};
use crate::edges::devices::Opener;
use crate::edges::devices::audio::alsa::{AlsaMicrophone, AlsaSpeaker, PcmConfig};
use crate::edges::devices::audio::{Microphone, Speaker, SyntheticMicrophone, WavSpeaker};
use crate::edges::devices::camera::{Camera, CameraConfig, CameraSwitch, SyntheticCamera, V4l2Camera};
use crate::edges::devices::screen::Screen;
use crate::edges::devices::screen::drm::DrmScreen;
use crate::edges::devices::screen::fbdev::FbdevScreen;
use crate::edges::devices::screen::file::Y4mScreen;
use crate::media::codec::{AudioSettings, VideoSettings};

/// Synthetic devices for the demo and tests: a stamped test pattern, a tone at `tone_hz`,
/// sound and pictures measured but not played.
pub fn synthetic_devices(tone_hz: f64, video: VideoSettings) -> MediaDevices {
    synthetic_devices_with(tone_hz, video, None)
}

/// As [`synthetic_devices`], with a switch that stops and restarts the camera mid-call.
pub fn synthetic_devices_with(
    tone_hz: f64,
    video: VideoSettings,
    switch: Option<CameraSwitch>,
) -> MediaDevices {
    let (w, h, fps) = (video.width, video.height, video.fps.round() as u32);
    MediaDevices {
        camera: Some(Arc::new(move || {
            let cam = SyntheticCamera::new(w, h, fps)?;
            if let Some(sw) = &switch {
                sw.set_running(true);
            }
            let cam = match &switch {
                Some(sw) => cam.with_switch(sw.clone()),
                None => cam,
            };
            Ok(Box::new(cam) as Box<dyn Camera>)
        })),
        microphone: Some(Arc::new(move || {
            Ok(Box::new(SyntheticMicrophone::new(tone_hz)) as Box<dyn Microphone>)
        })),
        speaker: None,
        screen: None,
        display: None,
    }
}

/// The devices named by a configuration. Each is tried once now: what fails is reported (the
/// role runs on without it — audio-only or video-only) and tried again at every call.
pub fn devices_from_config(media: &MediaSections) -> (MediaDevices, MediaOptions, Vec<String>) {
    let (c, a) = (&media.camera, &media.audio);
    let camera = camera_opener(c);
    let period = Duration::from_millis(u64::from(a.period_ms));
    let microphone = microphone_opener(a, period);
    let speaker = speaker_opener(a, period);
    let screen = screen_opener(&media.screen, c.fps);
    // Try the capture devices (and a real speaker) once, so that a missing or busy one is
    // reported at start.
    let mut problems = Vec::new();
    try_open("camera", camera.as_ref(), &mut problems);
    try_open("microphone", microphone.as_ref(), &mut problems);
    if a.playback == PlaybackBackend::Alsa {
        try_open("speaker", speaker.as_ref(), &mut problems);
    }
    let video = VideoSettings {
        width: c.width,
        height: c.height,
        fps: c.fps as f32,
        bitrate_bps: media.video.bitrate_kbps * 1000,
        keyframe_interval: media.video.keyframe_interval,
    };
    let audio = AudioSettings {
        bitrate_bps: (a.bitrate_kbps * 1000) as i32,
        fec: a.fec,
        dtx: a.dtx,
        ..AudioSettings::default()
    };
    let options = MediaOptions { video, audio, processing: a.processing, ..MediaOptions::default() };
    (MediaDevices { camera, microphone, speaker, screen, display: None }, options, problems)
}

fn try_open<T: ?Sized>(what: &str, open: Option<&Opener<T>>, problems: &mut Vec<String>) {
    if let Some(open) = open
        && let Err(e) = open()
    {
        problems.push(format!("{what}: {e}"));
    }
}

fn camera_opener(c: &CameraSection) -> Option<Opener<dyn Camera>> {
    match c.backend {
        CameraBackend::None => None,
        CameraBackend::Synthetic => {
            let (w, h, fps) = (c.width, c.height, c.fps);
            Some(Arc::new(move || Ok(Box::new(SyntheticCamera::new(w, h, fps)?) as Box<dyn Camera>)))
        }
        CameraBackend::V4l2 => {
            let cfg = CameraConfig {
                device: c.device.clone(),
                width: c.width,
                height: c.height,
                fps: c.fps,
                format: c.format,
            };
            Some(Arc::new(move || Ok(Box::new(V4l2Camera::open(&cfg)?) as Box<dyn Camera>)))
        }
    }
}

fn microphone_opener(a: &AudioSection, period: Duration) -> Option<Opener<dyn Microphone>> {
    match a.capture {
        CaptureBackend::None => None,
        CaptureBackend::Synthetic => {
            let hz = a.tone_hz;
            Some(Arc::new(move || Ok(Box::new(SyntheticMicrophone::new(hz)) as Box<dyn Microphone>)))
        }
        CaptureBackend::Alsa => {
            let cfg = PcmConfig { device: a.capture_device.clone(), period };
            Some(Arc::new(move || Ok(Box::new(AlsaMicrophone::open(&cfg)?) as Box<dyn Microphone>)))
        }
    }
}

fn speaker_opener(a: &AudioSection, period: Duration) -> Option<Opener<dyn Speaker>> {
    match a.playback {
        PlaybackBackend::None => None,
        PlaybackBackend::Wav => {
            let path = a.wav_path.clone().unwrap_or_default();
            Some(Arc::new(move || Ok(Box::new(WavSpeaker::create(path.clone())?) as Box<dyn Speaker>)))
        }
        PlaybackBackend::Alsa => {
            let cfg = PcmConfig { device: a.playback_device.clone(), period };
            Some(Arc::new(move || Ok(Box::new(AlsaSpeaker::open(&cfg)?) as Box<dyn Speaker>)))
        }
    }
}

fn screen_opener(sc: &ScreenSection, fps: u32) -> Option<Opener<dyn Screen>> {
    match sc.backend {
        ScreenBackend::None => None,
        ScreenBackend::Y4m => {
            let path = sc.path.clone().unwrap_or_default();
            Some(Arc::new(move || Ok(Box::new(Y4mScreen::create(path.clone(), fps)) as Box<dyn Screen>)))
        }
        ScreenBackend::Drm => {
            let path = sc.path.clone().unwrap_or_else(|| "/dev/dri/card0".into());
            Some(Arc::new(move || Ok(Box::new(DrmScreen::open(&path)?) as Box<dyn Screen>)))
        }
        ScreenBackend::Fbdev => {
            let path = sc.path.clone().unwrap_or_else(|| "/dev/fb0".into());
            Some(Arc::new(move || Ok(Box::new(FbdevScreen::open(&path)?) as Box<dyn Screen>)))
        }
    }
}
