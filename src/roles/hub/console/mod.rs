//! The browser console: advisors work in a web page the hub serves over HTTPS, and talk to the
//! customer over WebRTC with the hub as the browser's peer.
//!
//! ```text
//! browser ── HTTPS (page, sign-in) ──► http.rs ── sessions (console::web core)
//!         ── WebSocket (JSON) ───────► session.rs ── CoreCmd ──► core task (AgentQueue)
//!         ◄═ WebRTC (ICE-lite, DTLS-SRTP, one UDP port) ═► rtc.rs ◄── relay (kiosk's frames)
//! ```
//! A signed-in advisor is an agent peer of the core like a QUIC agent: the page speaks the
//! agent's protocol messages as JSON, and its media reaches the kiosk's existing playout. No
//! transcoding: the kiosk's H.264 access units and Opus frames go into RTP as they are, and the
//! browser's come back out of it into the kiosk's media header.

mod accounts;
mod http;
mod rtc;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};
use tracing::info;

pub use accounts::{Accounts, AccountsError, hash_password};

use super::peer::CoreCmd;
use crate::console::web::{Sessions, SignInGuard};
use crate::edges::net::tls::TlsMaterial;
use crate::queue::PeerId;

/// Browser peers are numbered from here, apart from the QUIC connections' numbers.
const FIRST_BROWSER_PEER: PeerId = 1 << 48;

/// What the console needs.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// HTTPS (TCP) address of the page and its WebSocket.
    pub listen: SocketAddr,
    /// UDP address of the WebRTC media (one port for every browser).
    pub media: SocketAddr,
    /// The address browsers are told to send media to (the host candidate); `media` when
    /// absent. Must not be unspecified (0.0.0.0).
    pub media_public: Option<SocketAddr>,
    /// The advisors' accounts (`kioskd agents add`).
    pub accounts: PathBuf,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// A call whose browser sends no media (no offer, no connection, no frames) for this long
    /// is ended, with a line in the event log: the customer would face a blank screen.
    pub media_grace: Duration,
}

/// [`ConsoleOptions::media_grace`] unless configured.
pub const DEFAULT_MEDIA_GRACE: Duration = Duration::from_secs(10);

/// Whether `sdp` parses as a WebRTC offer (the hub parses every page's offer with str0m).
pub fn parse_sdp_offer(sdp: &str) -> Result<(), String> {
    str0m::change::SdpOffer::from_sdp_string(sdp).map(drop).map_err(|e| format!("SDP offer: {e}"))
}

/// Where the console runs, once started.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleAddrs {
    pub https: SocketAddr,
    pub media: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console: cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("console: {0}")]
    Tls(#[from] crate::edges::net::tls::TlsError),
    #[error("console: {0}")]
    Accounts(#[from] AccountsError),
    #[error("console: the media address {0} is unspecified; set media_public to an address browsers reach")]
    Unspecified(SocketAddr),
}

/// State the console's tasks share.
pub(super) struct Shared {
    pub sessions: Mutex<Sessions>,
    pub guard: Mutex<SignInGuard<std::net::IpAddr>>,
    pub accounts: Accounts,
    pub next_peer: AtomicU64,
    pub core: mpsc::Sender<CoreCmd>,
    pub rtc: mpsc::Sender<rtc::RtcCmd>,
    /// The hub's status: the pages show its waiting queue.
    pub status: watch::Receiver<super::HubStatus>,
    /// See [`ConsoleOptions::media_grace`].
    pub media_grace: Duration,
    /// Certificates revoked: they sign no one in, and their sessions end.
    pub revoked: super::RevokedSerials,
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner).contains(serial)
    }
    fn guard(&self) -> std::sync::MutexGuard<'_, SignInGuard<std::net::IpAddr>> {
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the console takes from the hub.
pub(super) struct Context<'a> {
    pub tls: &'a TlsMaterial,
    pub core: mpsc::Sender<CoreCmd>,
    pub status: watch::Receiver<super::HubStatus>,
    pub revoked: super::RevokedSerials,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the console's HTTPS listener and its WebRTC task.
pub(super) async fn start(opts: ConsoleOptions, ctx: Context<'_>) -> Result<ConsoleAddrs, ConsoleError> {
    let Context { tls, core, status, revoked, mut shutdown } = ctx;
    let accounts = Accounts::load(&opts.accounts)?;
    let tls = crate::edges::net::tls::console_server_config(tls)?;
    let listener =
        tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ConsoleError::Listen(opts.listen, e))?;
    let https = listener.local_addr().map_err(|e| ConsoleError::Listen(opts.listen, e))?;
    let socket =
        tokio::net::UdpSocket::bind(opts.media).await.map_err(|e| ConsoleError::Listen(opts.media, e))?;
    let bound = socket.local_addr().map_err(|e| ConsoleError::Listen(opts.media, e))?;
    let public = opts.media_public.unwrap_or(bound);
    if public.ip().is_unspecified() {
        return Err(ConsoleError::Unspecified(public));
    }
    let (rtc_tx, rtc_rx) = mpsc::channel(rtc::RTC_QUEUE);
    let shared = Arc::new(Shared {
        sessions: Mutex::new(Sessions::new(opts.session_ttl)),
        guard: Mutex::new(SignInGuard::default()),
        accounts,
        next_peer: AtomicU64::new(FIRST_BROWSER_PEER),
        core: core.clone(),
        rtc: rtc_tx,
        status,
        media_grace: opts.media_grace,
        revoked,
    });
    let rtc = tokio::spawn(rtc::run(socket, public, rtc_rx, core));
    let http = tokio::spawn(http::serve(listener, tokio_rustls::TlsAcceptor::from(tls), shared));
    // Pages are closed by the core at shutdown (like every peer); the listener and the media
    // task stop with the hub.
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        http.abort();
        rtc.abort();
    });
    info!(%https, media = %public, "browser console listening");
    Ok(ConsoleAddrs { https, media: public })
}

/// The core's handle on a browser peer: close it (the page is told why), reach its media.
#[derive(Clone)]
pub struct BrowserPeer {
    peer: PeerId,
    closing: Arc<Closing>,
    rtc: mpsc::Sender<rtc::RtcCmd>,
}

#[derive(Default)]
struct Closing {
    notify: Notify,
    reason: Mutex<Option<(u32, String)>>,
}

impl BrowserPeer {
    pub fn close(&self, code: u32, reason: &[u8]) {
        let reason = String::from_utf8_lossy(reason).into_owned();
        *self.closing.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some((code, reason));
        self.closing.notify.notify_one();
    }

    pub fn sink(&self) -> BrowserSink {
        BrowserSink { peer: self.peer, rtc: self.rtc.clone() }
    }
}

/// Media for a browser: handed to the WebRTC task, which packs it into RTP.
#[derive(Clone)]
pub struct BrowserSink {
    peer: PeerId,
    rtc: mpsc::Sender<rtc::RtcCmd>,
}

impl BrowserSink {
    /// One media packet (our header and an Opus frame or H.264 access unit); refused when the
    /// WebRTC task is behind (dropped, as a full QUIC send buffer drops).
    pub fn media(&self, packet: Bytes, video: bool) -> Result<(), String> {
        self.rtc
            .try_send(rtc::RtcCmd::Media { peer: self.peer, packet, video })
            .map_err(|e| format!("browser media not queued: {e}"))
    }
}
