//! Configuration files (TOML), validated up front.
//!
//! Every problem is reported as one [`ConfigError`] naming the file, the key and what is wrong;
//! `main` prints it and exits with code 2. Unknown keys are errors (a typo must not silently
//! fall back to a default on a kiosk nobody watches).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::call::CallConfig;
use crate::edges::devices::buttons::gpio_cdev::LineBias;
use crate::edges::net::tls::{TlsError, TlsMaterial};
use crate::protocol::Role;
use crate::queue::QueueConfig;
use crate::ui::{Lang, UiSettings};

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the key (`queue.max_queue`), or `(file)` for the file as a whole.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), key: key.to_string(), message: message.into() }
    }
}

/// Reads and parses `path` into `T`, naming the offending key on error.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
    parse(path, &text)
}

/// Parses TOML `text` read from `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new(path, "(syntax)", e.to_string().trim().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        // The top level is "." (or nothing, for a key named `""` there).
        let key = if key == "." || key.is_empty() { "(top level)".to_string() } else { key };
        // toml's message repeats the source excerpt; keep its first line only.
        let message = e.inner().message().lines().next().unwrap_or_default().to_string();
        ConfigError::new(path, &key, message)
    })
}

/// Where the hub is, for kiosks and agents: one hub (`address`), or the hubs of a deployment
/// (`addresses`, tried in order; the next is taken when one is gone). A name that resolves to
/// several addresses stands for several hubs too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubLink {
    /// `host:port` of the hub.
    #[serde(default)]
    pub address: Option<String>,
    /// `host:port` of each hub, instead of `address`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Name in the hubs' certificates; defaults to the host part of the first address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// With several hubs: how long a session may stay silent before the next hub is tried
    /// (ms; default 2500).
    #[serde(default)]
    pub silent_ms: Option<u64>,
}

impl HubLink {
    /// One hub.
    pub fn one(address: impl Into<String>) -> Self {
        Self { address: Some(address.into()), addresses: Vec::new(), server_name: None, silent_ms: None }
    }

    /// The silence after which a session is given up for the next hub.
    pub fn silent(&self) -> std::time::Duration {
        self.silent_ms.map_or(crate::edges::net::client::HUB_SILENT, std::time::Duration::from_millis)
    }

    /// Every hub's `host:port`, in order.
    pub fn all(&self) -> Vec<String> {
        self.address.iter().chain(&self.addresses).cloned().collect()
    }

    /// The addresses, for messages.
    pub fn shown(&self) -> String {
        self.all().join(", ")
    }

    pub fn server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let first = self.all().into_iter().next().unwrap_or_default();
            let host = first.rsplit_once(':').map_or(first.as_str(), |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        })
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        match (&self.address, self.addresses.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    file,
                    "hub.addresses",
                    "give hub.address or hub.addresses, not both",
                ));
            }
            (None, true) => {
                return Err(ConfigError::new(file, "hub.address", "missing: where the hub is (host:port)"));
            }
            _ => {}
        }
        let range = crate::edges::net::client::SILENT_RANGE_MS;
        if let Some(ms) = self.silent_ms.filter(|ms| !range.contains(ms)) {
            return Err(ConfigError::new(
                file,
                "hub.silent_ms",
                format!(
                    "{ms} is out of range: {} to {} (above two keep-alives, below the 6 s idle timeout)",
                    range.start(),
                    range.end()
                ),
            ));
        }
        let key = if self.address.is_some() { "hub.address" } else { "hub.addresses" };
        let all = self.all();
        for (i, a) in all.iter().enumerate() {
            match a.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => return Err(ConfigError::new(file, key, format!("`{a}` is not host:port"))),
            }
            if all[..i].contains(a) {
                return Err(ConfigError::new(file, key, format!("`{a}` is listed twice")));
            }
        }
        if all.len() > MAX_HUBS {
            return Err(ConfigError::new(file, key, format!("at most {MAX_HUBS} hubs")));
        }
        Ok(())
    }
}

/// Hubs a kiosk or agent may know.
const MAX_HUBS: usize = 16;

/// Certificate files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The deployment CA certificate (PEM).
    pub ca: PathBuf,
    /// This process's certificate (PEM), issued by the CA.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The hub only: a certificate revocation list (PEM) from `kioskd certs revoke`.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Kiosk and agent: renew the certificate on line this many days before it expires (0:
    /// never). The hub must have a `[renewal]` CA.
    #[serde(default = "default_renew_before_days")]
    pub renew_before_days: u32,
    /// Kiosk and agent: after a failed renewal, try again this many seconds later.
    #[serde(default = "default_renew_retry_s")]
    pub renew_retry_s: u32,
}

fn default_renew_before_days() -> u32 {
    30
}

fn default_renew_retry_s() -> u32 {
    3600
}

impl TlsFiles {
    /// The renewal of this party's certificate (kiosk and agent), when not turned off.
    pub fn renewer(
        &self,
        file: &Path,
        material: &TlsMaterial,
    ) -> Result<Option<crate::edges::net::renew::SharedRenewer>, ConfigError> {
        use crate::edges::net::renew::{CertFiles, Renewer};
        if self.renew_before_days == 0 {
            return Ok(None);
        }
        let policy = crate::protocol::renewal::RenewalPolicy {
            before_s: i64::from(self.renew_before_days) * 86_400,
            retry_s: i64::from(self.renew_retry_s),
            ..Default::default()
        };
        let files = CertFiles { cert: self.cert.clone(), key: self.key.clone() };
        Renewer::new(files, material.clone(), policy)
            .map(|r| Some(r.shared()))
            .map_err(|e| ConfigError::new(file, "tls.cert", e.to_string()))
    }

    /// Loads the files and checks that the certificate is for `role`.
    pub fn load(&self, file: &Path, role: Role) -> Result<TlsMaterial, ConfigError> {
        if role != Role::Hub {
            if self.renew_before_days > 3650 {
                return Err(ConfigError::new(file, "tls.renew_before_days", "must be 0 to 3650"));
            }
            if self.renew_retry_s == 0 {
                return Err(ConfigError::new(file, "tls.renew_retry_s", "must be > 0"));
            }
            let files =
                crate::edges::net::renew::CertFiles { cert: self.cert.clone(), key: self.key.clone() };
            match files.finish_pending() {
                Ok(Some(what)) => tracing::warn!(cert = %self.cert.display(), "{what}"),
                Ok(None) => {}
                Err(e) => return Err(ConfigError::new(file, "tls.cert", e.to_string())),
            }
        }
        let certs = |key: &str, path: &Path| {
            crate::edges::net::tls::read_certs(path).map_err(|e| ConfigError::new(file, key, e.to_string()))
        };
        let ca = certs("tls.ca", &self.ca)?;
        let chain = certs("tls.cert", &self.cert)?;
        let key = crate::edges::net::tls::read_key(&self.key)
            .map_err(|e| ConfigError::new(file, "tls.key", e.to_string()))?;
        if let Some(crl) = &self.crl {
            if role != Role::Hub {
                return Err(ConfigError::new(file, "tls.crl", "only the hub reads a revocation list"));
            }
            crate::edges::net::tls::Revocations::load(crl)
                .map_err(|e| ConfigError::new(file, "tls.crl", e.to_string()))?;
        }
        let m = TlsMaterial { ca, chain, key };
        let ident = m.identity().map_err(|e: TlsError| ConfigError::new(file, "tls.cert", e.to_string()))?;
        if ident.role != role {
            return Err(ConfigError::new(
                file,
                "tls.cert",
                format!(
                    "certificate is for a {} (`{}`), this needs a {role} certificate",
                    ident.role, ident.id
                ),
            ));
        }
        Ok(m)
    }
}

/// Which button backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ButtonBackend {
    /// The GPIO character device (any Linux board).
    GpioCdev,
    /// Raspberry Pi GPIO through rppal (BCM numbering).
    Rppal,
    /// Keys on stdin or lines on a Unix socket.
    Simulated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonsConfig {
    pub backend: ButtonBackend,
    /// gpio-cdev: the chip device.
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// Line offset (gpio-cdev) or BCM pin (rppal) of CALL.
    #[serde(default = "default_call_line")]
    pub call: u32,
    /// Line offset or BCM pin of HANGUP.
    #[serde(default = "default_hangup_line")]
    pub hangup: u32,
    /// Buttons pull the line low when pressed.
    #[serde(default = "yes")]
    pub active_low: bool,
    #[serde(default = "default_bias")]
    pub bias: LineBias,
    /// Edges closer than this to the previous one are contact bounce.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// simulated: `stdin` or the path of a Unix socket to create.
    #[serde(default = "default_sim_input")]
    pub input: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedsConfig {
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// Lit when pressing CALL would place a call.
    pub call: u32,
    /// Lit while a call is placed or held.
    pub busy: u32,
    #[serde(default)]
    pub active_low: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskCallConfig {
    #[serde(default = "default_ended_screen_s")]
    pub ended_screen_s: u64,
    #[serde(default = "default_busy_screen_s")]
    pub busy_screen_s: u64,
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// The kiosk shows the customer that calls may be recorded (on its screen or a printed
    /// notice beside it): a call request then carries the customer's consent to recording.
    /// Without it the hub never records this kiosk's calls.
    #[serde(default)]
    pub recording_notice: bool,
}

impl Default for KioskCallConfig {
    fn default() -> Self {
        Self {
            ended_screen_s: default_ended_screen_s(),
            busy_screen_s: default_busy_screen_s(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            recording_notice: false,
        }
    }
}

impl KioskCallConfig {
    pub fn call_config(&self) -> CallConfig {
        CallConfig {
            ended_screen: Duration::from_secs(self.ended_screen_s),
            busy_screen: Duration::from_secs(self.busy_screen_s),
            recording_consent: self.recording_notice,
        }
    }
}

/// Which camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CameraBackend {
    /// A V4L2 device (USB or CSI camera).
    V4l2,
    /// A moving test pattern that carries its frame number (demo, tests).
    Synthetic,
    /// No camera: audio only.
    #[default]
    None,
}

pub use crate::edges::devices::camera::PixelFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSection {
    #[serde(default)]
    pub backend: CameraBackend,
    #[serde(default = "default_video_device")]
    pub device: PathBuf,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub format: PixelFormat,
}

impl Default for CameraSection {
    fn default() -> Self {
        Self {
            backend: CameraBackend::None,
            device: default_video_device(),
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            format: PixelFormat::Auto,
        }
    }
}

/// Where sound comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureBackend {
    Alsa,
    /// A tone with a marker blip every second (demo, tests).
    Synthetic,
    #[default]
    None,
}

/// Where sound goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PlaybackBackend {
    Alsa,
    /// A WAV file at `audio.wav_path`.
    Wav,
    #[default]
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSection {
    #[serde(default)]
    pub capture: CaptureBackend,
    #[serde(default = "default_pcm")]
    pub capture_device: String,
    #[serde(default)]
    pub playback: PlaybackBackend,
    #[serde(default = "default_pcm")]
    pub playback_device: String,
    /// ALSA period in milliseconds.
    #[serde(default = "default_period_ms")]
    pub period_ms: u32,
    /// Synthetic capture: the tone's frequency in Hz.
    #[serde(default = "default_tone_hz")]
    pub tone_hz: f64,
    /// playback = "wav": the file to write.
    #[serde(default)]
    pub wav_path: Option<PathBuf>,
    /// Opus bitrate in kbit/s.
    #[serde(default = "default_opus_kbps")]
    pub bitrate_kbps: u32,
    /// Opus in-band forward error correction.
    #[serde(default = "yes")]
    pub fec: bool,
    /// Opus discontinuous transmission (near-silent packets during silence).
    #[serde(default)]
    pub dtx: bool,
    /// `[audio.processing]`: echo cancellation, noise suppression, gain control and the
    /// high-pass filter of the microphone, each on by default.
    #[serde(default)]
    pub processing: crate::media::processing::ProcessingConfig,
}

impl Default for AudioSection {
    fn default() -> Self {
        Self {
            capture: CaptureBackend::None,
            capture_device: default_pcm(),
            playback: PlaybackBackend::None,
            playback_device: default_pcm(),
            period_ms: default_period_ms(),
            tone_hz: default_tone_hz(),
            wav_path: None,
            bitrate_kbps: default_opus_kbps(),
            fec: true,
            dtx: false,
            processing: crate::media::processing::ProcessingConfig::default(),
        }
    }
}

/// Where the other party's video is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScreenBackend {
    /// Linux DRM/KMS dumb buffers with page flipping.
    Drm,
    /// The framebuffer device (boards without DRM).
    Fbdev,
    /// A Y4M file at `screen.path`.
    Y4m,
    #[default]
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenSection {
    #[serde(default)]
    pub backend: ScreenBackend,
    /// drm: /dev/dri/card0; fbdev: /dev/fb0; y4m: the file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The kiosk's screen size where the backend has no mode of its own (y4m, none: only
    /// screenshots); DRM and fbdev use the display's native mode.
    #[serde(default = "default_screen_width")]
    pub width: u32,
    #[serde(default = "default_screen_height")]
    pub height: u32,
}

impl Default for ScreenSection {
    fn default() -> Self {
        Self {
            backend: ScreenBackend::None,
            path: None,
            width: default_screen_width(),
            height: default_screen_height(),
        }
    }
}

/// `[ui]`: what the kiosk's screen says, and in which language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// A built-in language: `en` (English) or `zh` (Simplified Chinese).
    #[serde(default = "default_language")]
    pub language: String,
    /// A language file of one's own (same keys as lang/en.toml); replaces `language`.
    #[serde(default)]
    pub language_file: Option<PathBuf>,
    /// The branch's name, in the screen's header.
    #[serde(default)]
    pub branch: String,
    /// Opening hours as the branch writes them, at the foot of the idle screen.
    #[serde(default)]
    pub opening_hours: String,
}

impl Default for UiSection {
    fn default() -> Self {
        Self {
            language: default_language(),
            language_file: None,
            branch: String::new(),
            opening_hours: String::new(),
        }
    }
}

impl UiSection {
    /// The screen's texts: the language file, else the built-in language (errors name `file`,
    /// the configuration, and the key).
    pub fn lang(&self, file: &Path) -> Result<Lang, ConfigError> {
        match &self.language_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        file,
                        "ui.language_file",
                        format!("{}: cannot read: {e}", path.display()),
                    )
                })?;
                Lang::parse(&text).map_err(|e| {
                    ConfigError::new(file, "ui.language_file", format!("{}: {e}", path.display()))
                })
            }
            None => Lang::built_in(&self.language)
                .map_err(|e| ConfigError::new(file, "ui.language", e.to_string())),
        }
    }

    /// The branch settings of the screen; `recording_notice` from `[call]`.
    pub fn settings(&self, recording_notice: bool) -> UiSettings {
        UiSettings {
            branch: self.branch.clone(),
            opening_hours: self.opening_hours.clone(),
            recording_notice,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSection {
    /// H.264 target bitrate in kbit/s.
    #[serde(default = "default_video_kbps")]
    pub bitrate_kbps: u32,
    /// A keyframe at least every this many frames.
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval: u32,
}

impl Default for VideoSection {
    fn default() -> Self {
        Self { bitrate_kbps: default_video_kbps(), keyframe_interval: default_keyframe_interval() }
    }
}

/// Media devices and codec settings, shared by the kiosk and the agent console (the
/// `[camera]`, `[audio]`, `[screen]` and `[video]` sections).
#[derive(Debug, Clone, Default)]
pub struct MediaSections {
    pub camera: CameraSection,
    pub audio: AudioSection,
    pub screen: ScreenSection,
    pub video: VideoSection,
}

impl MediaSections {
    /// The media sections of a role's configuration, together.
    pub fn of(
        camera: &CameraSection,
        audio: &AudioSection,
        screen: &ScreenSection,
        video: &VideoSection,
    ) -> Self {
        Self { camera: camera.clone(), audio: audio.clone(), screen: screen.clone(), video: video.clone() }
    }

    /// Checks values; devices are tried when the role starts.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let c = &self.camera;
        if !c.width.is_multiple_of(2) || !(160..=1920).contains(&c.width) {
            return Err(ConfigError::new(file, "camera.width", "must be even, 160 to 1920"));
        }
        if !c.height.is_multiple_of(2) || !(120..=1080).contains(&c.height) {
            return Err(ConfigError::new(file, "camera.height", "must be even, 120 to 1080"));
        }
        if !(1..=60).contains(&c.fps) {
            return Err(ConfigError::new(file, "camera.fps", "must be 1 to 60"));
        }
        let a = &self.audio;
        if !(5..=100).contains(&a.period_ms) {
            return Err(ConfigError::new(file, "audio.period_ms", "must be 5 to 100"));
        }
        if !(50.0..=8000.0).contains(&a.tone_hz) {
            return Err(ConfigError::new(file, "audio.tone_hz", "must be 50 to 8000"));
        }
        if a.playback == PlaybackBackend::Wav && a.wav_path.is_none() {
            return Err(ConfigError::new(file, "audio.wav_path", "needed when audio.playback = \"wav\""));
        }
        if !(6..=256).contains(&a.bitrate_kbps) {
            return Err(ConfigError::new(file, "audio.bitrate_kbps", "must be 6 to 256"));
        }
        if self.screen.backend == ScreenBackend::Y4m && self.screen.path.is_none() {
            return Err(ConfigError::new(file, "screen.path", "needed when screen.backend = \"y4m\""));
        }
        if !self.screen.width.is_multiple_of(2) || !(160..=3840).contains(&self.screen.width) {
            return Err(ConfigError::new(file, "screen.width", "must be even, 160 to 3840"));
        }
        if !self.screen.height.is_multiple_of(2) || !(120..=2160).contains(&self.screen.height) {
            return Err(ConfigError::new(file, "screen.height", "must be even, 120 to 2160"));
        }
        let v = &self.video;
        if !(50..=8000).contains(&v.bitrate_kbps) {
            return Err(ConfigError::new(file, "video.bitrate_kbps", "must be 50 to 8000"));
        }
        if !(1..=3000).contains(&v.keyframe_interval) {
            return Err(ConfigError::new(file, "video.keyframe_interval", "must be 1 to 3000"));
        }
        Ok(())
    }
}

/// `kioskd run`: the kiosk daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskConfig {
    /// Where the daemon writes its health for `kioskd health` (and the OTA side).
    #[serde(default = "default_health_file")]
    pub health_file: PathBuf,
    /// QUIC congestion control: "bbr" (default), "cubic" or "newreno".
    #[serde(default)]
    pub congestion: crate::edges::net::tls::Congestion,
    pub hub: HubLink,
    pub tls: TlsFiles,
    pub buttons: ButtonsConfig,
    #[serde(default)]
    pub leds: Option<LedsConfig>,
    #[serde(default)]
    pub call: KioskCallConfig,
    #[serde(default)]
    pub camera: CameraSection,
    #[serde(default)]
    pub audio: AudioSection,
    #[serde(default)]
    pub screen: ScreenSection,
    #[serde(default)]
    pub video: VideoSection,
    #[serde(default)]
    pub ui: UiSection,
}

impl KioskConfig {
    pub fn media(&self) -> MediaSections {
        MediaSections::of(&self.camera, &self.audio, &self.screen, &self.video)
    }

    /// Loads and checks everything that can be checked without the hub: keys, values,
    /// certificates, and that the configured devices can be opened for reading.
    pub fn load(path: &Path) -> Result<(Self, TlsMaterial), ConfigError> {
        let cfg: Self = load(path)?;
        cfg.hub.validate(path)?;
        let b = &cfg.buttons;
        if !(5..=1000).contains(&b.debounce_ms) {
            return Err(ConfigError::new(path, "buttons.debounce_ms", "must be 5 to 1000"));
        }
        if b.call == b.hangup && b.backend != ButtonBackend::Simulated {
            return Err(ConfigError::new(path, "buttons.hangup", "CALL and HANGUP cannot share a line"));
        }
        match b.backend {
            ButtonBackend::GpioCdev => check_device(path, "buttons.chip", &b.chip)?,
            ButtonBackend::Rppal if b.call > 53 => {
                return Err(ConfigError::new(path, "buttons.call", "BCM pins are 0 to 53"));
            }
            ButtonBackend::Rppal if b.hangup > 53 => {
                return Err(ConfigError::new(path, "buttons.hangup", "BCM pins are 0 to 53"));
            }
            _ => {}
        }
        if let Some(leds) = &cfg.leds {
            check_device(path, "leds.chip", &leds.chip)?;
        }
        let c = &cfg.call;
        if c.reconnect_min_ms == 0 || c.reconnect_min_ms > c.reconnect_max_ms {
            return Err(ConfigError::new(
                path,
                "call.reconnect_min_ms",
                "must be > 0 and at most call.reconnect_max_ms",
            ));
        }
        cfg.media().validate(path)?;
        cfg.ui.lang(path)?;
        let tls = cfg.tls.load(path, Role::Kiosk)?;
        Ok((cfg, tls))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubQueueConfig {
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    #[serde(default = "default_offer_timeout_s")]
    pub offer_timeout_s: u64,
    #[serde(default)]
    pub wrap_up_s: u64,
    #[serde(default = "default_kiosk_grace_s")]
    pub kiosk_grace_s: u64,
    #[serde(default = "default_handle_time_s")]
    pub default_handle_time_s: u64,
    #[serde(default = "default_busy_retry_after_s")]
    pub busy_retry_after_s: u64,
}

impl Default for HubQueueConfig {
    fn default() -> Self {
        Self {
            max_queue: default_max_queue(),
            offer_timeout_s: default_offer_timeout_s(),
            wrap_up_s: 0,
            kiosk_grace_s: default_kiosk_grace_s(),
            default_handle_time_s: default_handle_time_s(),
            busy_retry_after_s: default_busy_retry_after_s(),
        }
    }
}

impl HubQueueConfig {
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            max_queue: self.max_queue,
            offer_timeout: Duration::from_secs(self.offer_timeout_s),
            wrap_up: Duration::from_secs(self.wrap_up_s),
            kiosk_grace: Duration::from_secs(self.kiosk_grace_s),
            default_handle_time: Duration::from_secs(self.default_handle_time_s),
            busy_retry_after: Duration::from_secs(self.busy_retry_after_s),
            ..QueueConfig::default()
        }
    }
}

/// `kioskd hub`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// QUIC congestion control: "bbr" (default), "cubic" or "newreno".
    #[serde(default)]
    pub congestion: crate::edges::net::tls::Congestion,

    /// Append-only JSON-lines event log.
    pub event_log: PathBuf,
    /// Serve Prometheus metrics on this TCP address (`GET /metrics`); off when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub queue: HubQueueConfig,
    #[serde(default)]
    pub recording: RecordingSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// On-line renewal of kiosk and agent certificates; off when absent.
    #[serde(default)]
    pub renewal: Option<RenewalSection>,
    /// The deployment's PostgreSQL; the event log file only when absent.
    #[serde(default)]
    pub database: Option<DatabaseSection>,
    /// The advisors' browser console; off when absent.
    #[serde(default)]
    pub console: Option<ConsoleSection>,
}

/// `[console]` of the hub: the browser console, served over HTTPS with the hub's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// TCP address of the page (HTTPS), e.g. "0.0.0.0:8443".
    pub listen: SocketAddr,
    /// UDP address of the WebRTC media, e.g. "0.0.0.0:8444".
    pub media: SocketAddr,
    /// The address browsers send media to, when `media` is unspecified (0.0.0.0) or behind NAT.
    #[serde(default)]
    pub media_public: Option<SocketAddr>,
    /// The advisors' accounts (`kioskd agents add`).
    pub accounts: PathBuf,
    /// How long a sign-in lasts, in hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u32,
    /// A call whose browser sends no media for this long is ended, in seconds.
    #[serde(default = "default_media_grace_s")]
    pub media_grace_s: u64,
}

fn default_media_grace_s() -> u64 {
    10
}

fn default_session_hours() -> u32 {
    10
}

impl ConsoleSection {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if !(1..=24 * 7).contains(&self.session_hours) {
            return Err(ConfigError::new(path, "console.session_hours", "must be 1 to 168"));
        }
        if !(2..=120).contains(&self.media_grace_s) {
            return Err(ConfigError::new(path, "console.media_grace_s", "must be 2 to 120"));
        }
        let public = self.media_public.unwrap_or(self.media);
        if public.ip().is_unspecified() {
            return Err(ConfigError::new(
                path,
                "console.media_public",
                "needed when console.media is unspecified (0.0.0.0): the address browsers reach",
            ));
        }
        if !self.accounts.is_file() {
            return Err(ConfigError::new(
                path,
                "console.accounts",
                format!("{} does not exist (create it with `kioskd agents add`)", self.accounts.display()),
            ));
        }
        Ok(())
    }
}

/// `[database]` of the hub: the PostgreSQL that the hubs of a deployment share. Give the
/// connection as `url`, or as `url_file` (a file holding it, readable by the hub only) to keep
/// a password out of the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgresql://user[:password]@host[:port]/dbname`, or `host=… user=… dbname=…`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Where kiosks reach this hub (host:port, e.g. "hub-b.bank.example:4433"): a hub with an
    /// advisor free takes callers waiting on other hubs and sends their kiosks here. The
    /// listening address by default, when it is a specific one (not 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<String>,
    /// How long this hub's lease lasts from its last renewal, in ms (3000 by default; 1500 to
    /// 60000). Another hub takes over this hub's callers this long after it fell silent: a
    /// shorter lease moves them sooner, a longer one rides out a slower database.
    #[serde(default)]
    pub lease_ms: Option<u64>,
}

impl DatabaseSection {
    /// The lease, checked ([`crate::edges::db::cluster::LEASE`] by default).
    pub fn lease(&self, path: &Path) -> Result<std::time::Duration, ConfigError> {
        use crate::edges::db::cluster::{LEASE, LEASE_RANGE_MS};
        match self.lease_ms {
            None => Ok(LEASE),
            Some(ms) if LEASE_RANGE_MS.contains(&ms) => Ok(std::time::Duration::from_millis(ms)),
            Some(_) => Err(ConfigError::new(
                path,
                "database.lease_ms",
                format!("must be {} to {}", LEASE_RANGE_MS.start(), LEASE_RANGE_MS.end()),
            )),
        }
    }

    /// The connection string, read and checked (its syntax; not whether the database answers).
    pub fn url(&self, path: &Path) -> Result<String, ConfigError> {
        let url = match (&self.url, &self.url_file) {
            (Some(u), None) => u.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| t.trim().to_string())
                .map_err(|e| ConfigError::new(path, "database.url_file", format!("{}: {e}", f.display())))?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(path, "database", "give url or url_file, not both"));
            }
            (None, None) => return Err(ConfigError::new(path, "database", "needs url or url_file")),
        };
        crate::edges::db::check_url(&url).map_err(|e| ConfigError::new(path, "database.url", e))?;
        if let Some(a) = &self.advertise {
            let port = a.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if a.len() > crate::protocol::MAX_ID_BYTES
                || a.chars().any(char::is_whitespace)
                || port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0)
            {
                return Err(ConfigError::new(path, "database.advertise", "must be host:port"));
            }
        }
        self.lease(path)?;
        Ok(url)
    }
}

/// `[renewal]` of the hub: a renewal CA (`kioskd certs renewal-ca`) below the deployment's
/// root, never the root itself, with which the hub signs the certificates that kiosks and
/// agents ask for before theirs expire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalSection {
    /// The renewal CA's certificate (PEM), signed by `tls.ca`.
    pub ca_cert: PathBuf,
    /// Its key (PEM, kept readable by the hub only).
    pub ca_key: PathBuf,
    /// Validity of a renewed certificate, in days.
    #[serde(default = "default_renewal_days")]
    pub days: i64,
    /// The folder of the register of renewed certificates (`issued.jsonl`, what
    /// `kioskd certs revoke` looks identities up in); the renewal CA's folder by default.
    #[serde(default)]
    pub register_dir: Option<PathBuf>,
}

fn default_renewal_days() -> i64 {
    90
}

impl RenewalSection {
    /// The renewal CA, checked: a CA, not a root, signed by one of `roots`, its key its own.
    pub fn issuer(
        &self,
        file: &Path,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<crate::edges::net::certs::RenewalIssuer, ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::new(file, key, msg);
        if !(1..=3650).contains(&self.days) {
            return Err(bad("renewal.days", "must be 1 to 3650".into()));
        }
        let ca = crate::edges::net::certs::Authority::load_files(&self.ca_cert, &self.ca_key)
            .map_err(|e| bad("renewal.ca_key", e.to_string()))?;
        crate::edges::net::certs::check_renewal_ca(&ca, roots)
            .map_err(|e| bad("renewal.ca_cert", e.to_string()))?;
        let dir = match &self.register_dir {
            Some(d) => d.clone(),
            None => self.ca_cert.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        if !dir.is_dir() {
            return Err(bad("renewal.register_dir", format!("{} is not a directory", dir.display())));
        }
        Ok(crate::edges::net::certs::RenewalIssuer::new(ca, self.days, dir))
    }
}

/// `[limits]` of the hub: flood protection. New connections past a limit get no answer (a
/// real client's retransmission comes in once the flood's share is used up); a kiosk asking
/// for calls too often is told busy; texts past the rate are refused and the sender told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// New handshakes per second, over all clients.
    pub handshakes_per_second: u32,
    /// Handshakes in progress at once; from half of it on, new clients first prove their
    /// address (QUIC Retry).
    pub pending_handshakes: u32,
    /// Connections from one IP address at once (a branch's kiosks behind one NAT share one).
    pub connections_per_address: u32,
    /// Fresh call requests per kiosk per minute.
    pub call_requests_per_minute: u32,
    /// Texts per minute from each side of a call.
    pub texts_per_minute: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let admission = crate::limits::AdmissionConfig::default();
        let queue = QueueConfig::default();
        Self {
            handshakes_per_second: admission.handshakes.count,
            pending_handshakes: admission.pending_handshakes,
            connections_per_address: admission.connections_per_address,
            call_requests_per_minute: queue.call_requests.count,
            texts_per_minute: queue.texts.count,
        }
    }
}

impl LimitsSection {
    pub fn admission(&self) -> crate::limits::AdmissionConfig {
        crate::limits::AdmissionConfig {
            handshakes: crate::limits::Rate::per_second(self.handshakes_per_second),
            pending_handshakes: self.pending_handshakes,
            connections_per_address: self.connections_per_address,
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fields = [
            ("handshakes_per_second", self.handshakes_per_second),
            ("pending_handshakes", self.pending_handshakes),
            ("connections_per_address", self.connections_per_address),
            ("call_requests_per_minute", self.call_requests_per_minute),
            ("texts_per_minute", self.texts_per_minute),
        ];
        for (key, value) in fields {
            if !(1..=1_000_000).contains(&value) {
                return Err(ConfigError::new(path, &format!("limits.{key}"), "must be 1 to 1000000"));
            }
        }
        Ok(())
    }
}

/// `[recording]` of the hub: calls are recorded only when `enabled` and the kiosk's request
/// carries the customer's consent (the kiosk's `call.recording_notice`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    #[serde(default)]
    pub enabled: bool,
    /// Where recordings go (created with mode 0700 when missing).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Delete recordings older than this many days; keep them forever when absent.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

impl RecordingSection {
    /// The hub's recording settings, when recording is on.
    pub fn options(&self) -> Option<crate::record::RecordingOptions> {
        let dir = self.dir.clone().filter(|_| self.enabled)?;
        let retention = self.retention_days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        Some(crate::record::RecordingOptions { dir, retention })
    }
}

impl HubConfig {
    /// The queue's settings, with the call request and text limits.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            call_requests: crate::limits::Rate::per_minute(self.limits.call_requests_per_minute),
            texts: crate::limits::Rate::per_minute(self.limits.texts_per_minute),
            ..self.queue.queue_config()
        }
    }

    /// The renewal CA, when `[renewal]` is set (checked against the deployment's CA).
    pub fn renewal_issuer(
        &self,
        path: &Path,
        tls: &TlsMaterial,
    ) -> Result<Option<std::sync::Arc<crate::edges::net::certs::RenewalIssuer>>, ConfigError> {
        self.renewal.as_ref().map(|r| r.issuer(path, &tls.ca).map(std::sync::Arc::new)).transpose()
    }

    /// The database's connection string, when `[database]` is set.
    pub fn database_url(&self, path: &Path) -> Result<Option<String>, ConfigError> {
        self.database.as_ref().map(|d| d.url(path)).transpose()
    }

    pub fn load(path: &Path) -> Result<(Self, TlsMaterial), ConfigError> {
        let cfg: Self = load(path)?;
        cfg.limits.validate(path)?;
        cfg.database_url(path)?;
        if let Some(c) = &cfg.console {
            c.validate(path)?;
        }
        let q = &cfg.queue;
        if !(1..=100_000).contains(&q.max_queue) {
            return Err(ConfigError::new(path, "queue.max_queue", "must be 1 to 100000"));
        }
        if !(1..=600).contains(&q.offer_timeout_s) {
            return Err(ConfigError::new(path, "queue.offer_timeout_s", "must be 1 to 600"));
        }
        if q.default_handle_time_s == 0 {
            return Err(ConfigError::new(path, "queue.default_handle_time_s", "must be > 0"));
        }
        if let Some(dir) = cfg.event_log.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                path,
                "event_log",
                format!("directory {} does not exist", dir.display()),
            ));
        }
        let r = &cfg.recording;
        if r.enabled {
            let Some(dir) = &r.dir else {
                return Err(ConfigError::new(path, "recording.dir", "needed when recording.enabled = true"));
            };
            let parent = dir.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() && !parent.is_dir() {
                return Err(ConfigError::new(
                    path,
                    "recording.dir",
                    format!("neither {} nor its parent folder exists", dir.display()),
                ));
            }
        }
        if r.retention_days == Some(0) {
            return Err(ConfigError::new(
                path,
                "recording.retention_days",
                "must be at least 1 (or absent: keep)",
            ));
        }
        let tls = cfg.tls.load(path, Role::Hub)?;
        cfg.renewal_issuer(path, &tls)?;
        Ok((cfg, tls))
    }
}

/// `kioskd agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// QUIC congestion control: "bbr" (default), "cubic" or "newreno".
    #[serde(default)]
    pub congestion: crate::edges::net::tls::Congestion,
    pub hub: HubLink,
    pub tls: TlsFiles,
    #[serde(default)]
    pub camera: CameraSection,
    #[serde(default)]
    pub audio: AudioSection,
    #[serde(default)]
    pub screen: ScreenSection,
    #[serde(default)]
    pub video: VideoSection,
}

impl AgentConfig {
    pub fn media(&self) -> MediaSections {
        MediaSections::of(&self.camera, &self.audio, &self.screen, &self.video)
    }

    pub fn load(path: &Path) -> Result<(Self, TlsMaterial), ConfigError> {
        let cfg: Self = load(path)?;
        cfg.hub.validate(path)?;
        cfg.media().validate(path)?;
        let tls = cfg.tls.load(path, Role::Agent)?;
        Ok((cfg, tls))
    }
}

fn check_device(file: &Path, key: &str, dev: &Path) -> Result<(), ConfigError> {
    std::fs::OpenOptions::new()
        .read(true)
        .open(dev)
        .map(drop)
        .map_err(|e| ConfigError::new(file, key, format!("cannot open {}: {e}", dev.display())))
}

fn default_video_device() -> PathBuf {
    "/dev/video0".into()
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> u32 {
    30
}
fn default_pcm() -> String {
    "default".into()
}
fn default_period_ms() -> u32 {
    20
}
fn default_tone_hz() -> f64 {
    440.0
}
fn default_opus_kbps() -> u32 {
    32
}
fn default_video_kbps() -> u32 {
    1000
}
fn default_keyframe_interval() -> u32 {
    150
}
fn default_screen_width() -> u32 {
    1280
}
fn default_screen_height() -> u32 {
    720
}
fn default_language() -> String {
    "en".into()
}
fn default_health_file() -> PathBuf {
    crate::edges::health::DEFAULT_PATH.into()
}
fn yes() -> bool {
    true
}
fn default_chip() -> PathBuf {
    "/dev/gpiochip0".into()
}
fn default_call_line() -> u32 {
    17
}
fn default_hangup_line() -> u32 {
    27
}
fn default_bias() -> LineBias {
    LineBias::PullUp
}
fn default_debounce_ms() -> u64 {
    50
}
fn default_sim_input() -> String {
    "stdin".into()
}
fn default_ended_screen_s() -> u64 {
    5
}
fn default_busy_screen_s() -> u64 {
    10
}
fn default_reconnect_min_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    15_000
}
fn default_max_queue() -> usize {
    50
}
fn default_offer_timeout_s() -> u64 {
    20
}
fn default_kiosk_grace_s() -> u64 {
    10
}
fn default_handle_time_s() -> u64 {
    180
}
fn default_busy_retry_after_s() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let e = parse::<HubConfig>(Path::new("hub.toml"), "listen = \"0.0.0.0:4433\"\nevent_log = \"x\"\nlisten_port = 3\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n").unwrap_err();
        assert!(e.to_string().starts_with("hub.toml: "), "{e}");
        assert!(e.message.contains("listen_port"), "{e}");
    }

    #[test]
    fn a_database_lease_out_of_range_is_refused_and_one_in_range_is_taken() {
        let section = |extra: &str| {
            let text = format!(
                "listen = \"0.0.0.0:4433\"\nevent_log = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[database]\nurl = \"postgresql://kioskd@db/kioskd\"\n{extra}"
            );
            parse::<HubConfig>(Path::new("hub.toml"), &text).unwrap().database.unwrap()
        };
        let path = Path::new("hub.toml");
        assert_eq!(section("").lease(path).unwrap(), crate::edges::db::cluster::LEASE);
        assert_eq!(section("lease_ms = 10000").lease(path).unwrap(), std::time::Duration::from_secs(10));
        for bad in ["lease_ms = 100", "lease_ms = 600000"] {
            let e = section(bad).url(path).unwrap_err();
            assert_eq!(e.key, "database.lease_ms", "{e}");
            assert!(e.message.contains("1500 to 60000"), "{e}");
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = "listen = \"0.0.0.0:4433\"\nevent_log = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[queue]\nmax_queue = \"many\"\n";
        let e = parse::<HubConfig>(Path::new("hub.toml"), text).unwrap_err();
        assert_eq!(e.key, "queue.max_queue", "{e}");
    }

    #[test]
    fn missing_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:0\"\nevent_log = \"{}/e.jsonl\"\n[tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"b\"\nkey = \"c\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let e = HubConfig::load(&file).unwrap_err();
        assert_eq!(e.key, "tls.ca", "{e}");
    }

    #[test]
    fn screen_language_is_checked() {
        let file = Path::new("kiosk.toml");
        let ui = |text: &str| parse::<UiSection>(file, text).unwrap();
        assert_eq!(ui("").lang(file).unwrap(), Lang::english());
        assert_eq!(ui("language = \"zh\"").lang(file).unwrap(), Lang::built_in("zh").unwrap());
        let e = ui("language = \"fr\"").lang(file).unwrap_err();
        assert_eq!(e.key, "ui.language");
        assert!(e.message.contains("unknown language `fr`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let lang = dir.path().join("fr.toml");
        std::fs::write(&lang, crate::ui::lang::EN.replace("title = \"The call has ended\"", "")).unwrap();
        let e = ui(&format!("language_file = \"{}\"", lang.display())).lang(file).unwrap_err();
        assert_eq!(e.key, "ui.language_file");
        assert!(e.message.ends_with("fr.toml: missing keys: ended.title"), "{e}");
        let e = ui("language_file = \"/nonexistent/fr.toml\"").lang(file).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn an_error_at_the_top_level_names_it() {
        // Found by fuzzing (fuzz/fuzz_targets/config_toml.rs): a key named "" left the error's
        // key empty.
        let file = Path::new("/etc/kioskd/kiosk.toml");
        for text in ["\"\" = 1\n", "congestion = \"bbr\"\n\"\"  = \"x\"\n"] {
            let e = parse::<KioskConfig>(file, text).unwrap_err();
            assert_eq!(e.key, "(top level)", "{e}");
            assert!(e.message.contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn server_name_defaults_to_host() {
        let h = HubLink::one("hub.example:4433");
        assert_eq!(h.server_name(), "hub.example");
        let h = HubLink::one("[::1]:4433");
        assert_eq!(h.server_name(), "::1");
    }

    #[test]
    fn several_hubs_are_listed_once_each() {
        let file = Path::new("/etc/kioskd/kiosk.toml");
        let two = |list: &str| HubLink {
            address: None,
            addresses: toml::from_str::<Addrs>(list).unwrap().a,
            server_name: None,
            silent_ms: None,
        };
        #[derive(Deserialize)]
        struct Addrs {
            a: Vec<String>,
        }
        let h = two(r#"a = ["hub-a.bank:4433", "hub-b.bank:4433"]"#);
        assert!(h.validate(file).is_ok());
        assert_eq!(h.all(), ["hub-a.bank:4433", "hub-b.bank:4433"]);
        assert_eq!(h.server_name(), "hub-a.bank");
        let e = two(r#"a = ["hub-a.bank:4433", "hub-a.bank:4433"]"#).validate(file).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("hub.addresses", "`hub-a.bank:4433` is listed twice")
        );
        let e = two(r#"a = ["hub-a.bank:4433", "hub-b"]"#).validate(file).unwrap_err();
        assert!(e.message.contains("`hub-b` is not host:port"), "{e}");
        let mut both = HubLink::one("hub-a.bank:4433");
        both.addresses.push("hub-b.bank:4433".into());
        assert!(both.validate(file).unwrap_err().message.contains("not both"));
        let none = HubLink { address: None, addresses: Vec::new(), server_name: None, silent_ms: None };
        assert_eq!(none.validate(file).unwrap_err().key, "hub.address");
        // The silence that moves a session to the next hub: 2.5 s unless set, within range.
        assert_eq!(h.silent(), std::time::Duration::from_millis(2500));
        let quick = HubLink { silent_ms: Some(1500), ..h.clone() };
        assert!(quick.validate(file).is_ok());
        assert_eq!(quick.silent(), std::time::Duration::from_millis(1500));
        for bad in [0, 1000, 6000] {
            let e = HubLink { silent_ms: Some(bad), ..h.clone() }.validate(file).unwrap_err();
            assert_eq!(e.key, "hub.silent_ms", "{bad}");
            assert!(e.message.contains("out of range: 1500 to 5500"), "{e}");
        }
    }
}
