//! The browser console's sign-in, sessions and WebSocket messages — sans-IO: the hub's HTTPS
//! and WebSocket edge (`roles::hub::console`) feeds it requests and the time, and does what it
//! says.
//!
//! - [`Sessions`]: a signed-in advisor holds a random token (the cookie); a session ends at
//!   sign-out, at its expiry, or when the table is full (the oldest goes).
//! - [`SignInGuard`]: failed sign-ins are limited per address and per account (token buckets
//!   from [`crate::limits`]); a successful one costs nothing.
//! - [`BrowserMsg`]: what the page may send on the WebSocket, bounded and validated before it
//!   reaches the queue core as the same [`ClientMsg`] a QUIC agent sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::limits::{Rate, RateTable};
use crate::protocol::{CallId, ClientMsg, Presence};

/// Most sessions held at once; a new one beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 4096;
/// Largest WebSocket message the page may send (an SDP offer is a few KiB).
pub const MAX_WS_MESSAGE: usize = 64 * 1024;
/// Largest SDP offer accepted.
pub const MAX_SDP: usize = 32 * 1024;
/// Longest account name.
pub const MAX_NAME: usize = 64;
/// Longest password (Argon2 has no limit; a bound keeps hashing cheap to refuse).
pub const MAX_PASSWORD: usize = 256;

/// A session's token: 32 random bytes, hex (the cookie's value).
pub type Token = String;

#[derive(Debug, Clone)]
struct Session {
    agent: String,
    /// The serial of the agent certificate that signed in, for a certificate sign-in: the
    /// session ends when that certificate is revoked.
    serial: Option<Vec<u8>>,
    created: Instant,
    expires: Instant,
}

/// The signed-in advisors.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    by_token: HashMap<Token, Session>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, by_token: HashMap::new() }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `agent` under `token` (random, from the caller); `serial` is the
    /// certificate's when a certificate signed in.
    pub fn create(&mut self, token: Token, agent: &str, serial: Option<Vec<u8>>, now: Instant) {
        self.expire(now);
        if self.by_token.len() >= MAX_SESSIONS
            && let Some(oldest) = self.by_token.iter().min_by_key(|(_, s)| s.created).map(|(t, _)| t.clone())
        {
            self.by_token.remove(&oldest);
        }
        let session = Session { agent: agent.to_string(), serial, created: now, expires: now + self.ttl };
        self.by_token.insert(token, session);
    }

    /// The agent signed in with `token`, when the session is still valid.
    pub fn agent(&mut self, token: &str, now: Instant) -> Option<String> {
        match self.by_token.get(token) {
            Some(s) if s.expires > now => Some(s.agent.clone()),
            Some(_) => {
                self.by_token.remove(token);
                None
            }
            None => None,
        }
    }

    /// The serial of the certificate that signed the session in, for a certificate sign-in.
    pub fn serial(&self, token: &str) -> Option<&[u8]> {
        self.by_token.get(token).and_then(|s| s.serial.as_deref())
    }

    /// When the session ends, if it is valid.
    pub fn expires(&self, token: &str) -> Option<Instant> {
        self.by_token.get(token).map(|s| s.expires)
    }

    /// Ends a session (sign-out).
    pub fn remove(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    /// Ends every session of `agent` (account removed or password changed).
    pub fn remove_agent(&mut self, agent: &str) {
        self.by_token.retain(|_, s| s.agent != agent);
    }

    /// Drops expired sessions.
    pub fn expire(&mut self, now: Instant) {
        self.by_token.retain(|_, s| s.expires > now);
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// Why a sign-in attempt was not even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAttempts {
    /// When the next attempt would be allowed.
    pub retry_after: Duration,
}

/// Failed sign-ins allowed per address: a burst of 5, then one every 12 s.
pub const ADDRESS_RATE: Rate = Rate { count: 5, period: Duration::from_secs(60) };
/// Failed sign-ins allowed per account: a burst of 5, then one every 30 s.
pub const ACCOUNT_RATE: Rate = Rate { count: 5, period: Duration::from_secs(150) };

/// Limits on failed sign-ins, per address (`A`: the driver's address type) and per account.
#[derive(Debug)]
pub struct SignInGuard<A> {
    addresses: RateTable<A>,
    accounts: RateTable<String>,
    address_rate: Rate,
    account_rate: Rate,
}

impl<A: Hash + Eq + Clone> Default for SignInGuard<A> {
    fn default() -> Self {
        Self::new(ADDRESS_RATE, ACCOUNT_RATE)
    }
}

impl<A: Hash + Eq + Clone> SignInGuard<A> {
    pub fn new(address_rate: Rate, account_rate: Rate) -> Self {
        Self {
            addresses: RateTable::new(address_rate, 65_536),
            accounts: RateTable::new(account_rate, 65_536),
            address_rate,
            account_rate,
        }
    }

    /// Whether an attempt from `addr` for `account` may be checked now: refused while either
    /// has used up its failures. Nothing is counted here; see [`Self::failed`].
    pub fn allow(&mut self, addr: &A, account: &str, now: Instant) -> Result<(), TooManyAttempts> {
        let a = self.addresses.wait(addr, now);
        let b = self.accounts.wait(&account.to_string(), now);
        let retry_after = a.max(b);
        if retry_after.is_zero() { Ok(()) } else { Err(TooManyAttempts { retry_after }) }
    }

    /// A failed attempt: it uses one of the address's and the account's allowances.
    pub fn failed(&mut self, addr: &A, account: &str, now: Instant) {
        let _ = self.addresses.check(addr, now);
        let _ = self.accounts.check(&account.to_string(), now);
    }

    /// The rates in force (for the docs and the log).
    pub fn rates(&self) -> (Rate, Rate) {
        (self.address_rate, self.account_rate)
    }
}

/// A sign-in request's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

impl SignIn {
    /// Parses and bounds a sign-in body.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let s: SignIn = serde_json::from_slice(body).map_err(|e| format!("malformed sign-in: {e}"))?;
        if s.name.is_empty() || s.name.len() > MAX_NAME {
            return Err(format!("name must be 1 to {MAX_NAME} bytes"));
        }
        if s.password.len() > MAX_PASSWORD {
            return Err(format!("password longer than {MAX_PASSWORD} bytes"));
        }
        Ok(s)
    }
}

/// What the page sends on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserMsg {
    /// One of the agent's protocol messages, validated as from a QUIC agent.
    Client(ClientMsg),
    /// The page's WebRTC offer for the call in progress.
    SdpOffer(String),
    /// The advisor muted or unmuted their microphone or camera.
    MediaState { mic: bool, camera: bool },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    SetPresence { presence: Presence },
    Accept { call_id: CallId },
    Decline { call_id: CallId },
    HangUp { call_id: CallId },
    Text { call_id: CallId, id: u64, body: String },
    TextAck { call_id: CallId, id: u64 },
    SdpOffer { sdp: String },
    MediaState { mic: bool, camera: bool },
}

impl BrowserMsg {
    /// Parses one WebSocket text message. Only what an agent may do is accepted: the page
    /// cannot send a kiosk's messages, a renewal or a hello.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_WS_MESSAGE {
            return Err(format!("message of {} bytes (at most {MAX_WS_MESSAGE})", text.len()));
        }
        let wire: Wire = serde_json::from_str(text).map_err(|e| format!("malformed message: {e}"))?;
        let msg = match wire {
            Wire::SetPresence { presence } => ClientMsg::SetPresence { presence },
            Wire::Accept { call_id } => ClientMsg::Accept { call_id },
            Wire::Decline { call_id } => ClientMsg::Decline { call_id },
            Wire::HangUp { call_id } => ClientMsg::HangUp { call_id },
            Wire::Text { call_id, id, body } => ClientMsg::Text { call_id, id, body },
            Wire::TextAck { call_id, id } => ClientMsg::TextAck { call_id, id },
            Wire::SdpOffer { sdp } => {
                if sdp.len() > MAX_SDP {
                    return Err(format!("SDP offer of {} bytes (at most {MAX_SDP})", sdp.len()));
                }
                if !sdp.starts_with("v=0") {
                    return Err("SDP offer does not start with v=0".into());
                }
                return Ok(BrowserMsg::SdpOffer(sdp));
            }
            Wire::MediaState { mic, camera } => return Ok(BrowserMsg::MediaState { mic, camera }),
        };
        msg.validate().map_err(|e| format!("invalid message: {e}"))?;
        Ok(BrowserMsg::Client(msg))
    }
}

/// The value of cookie `name` in a `Cookie:` header, if present.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Whether a browser's `Origin` header names this console (`https://host[:port]`, host as
/// the request's `Host` header gives it).
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("https://").is_some_and(|o| o.eq_ignore_ascii_case(host))
        }
        _ => false,
    }
}

/// How far a browser's media got, as the WebRTC task tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaProbe {
    /// The page's offer was accepted and its WebRTC session is alive.
    pub offered: bool,
    /// ICE and DTLS completed.
    pub connected: bool,
    /// Frames (audio and video) received from the browser so far.
    pub frames: u64,
}

/// Why a browser advisor's call is ended by [`MediaWatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMissing {
    NoOffer,
    NotConnected,
    NoFrames,
    Stopped,
}

impl std::fmt::Display for MediaMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MediaMissing::NoOffer => "the page sent no WebRTC offer",
            MediaMissing::NotConnected => "the browser's WebRTC did not connect",
            MediaMissing::NoFrames => "the browser sent no audio or video",
            MediaMissing::Stopped => "the browser's audio and video stopped",
        })
    }
}

/// A browser advisor's call must carry the browser's media: from the call's start, and again
/// every `grace`, the frames received must have grown, or the call is ended (the customer
/// would face a blank, silent screen). Sans-IO: the session drives it with the time and the
/// WebRTC task's [`MediaProbe`].
#[derive(Debug)]
pub struct MediaWatch {
    grace: Duration,
    call: Option<(CallId, Instant, u64)>,
}

impl MediaWatch {
    pub fn new(grace: Duration) -> Self {
        MediaWatch { grace, call: None }
    }

    /// The page's call changed: a call to watch from `now`, or none.
    pub fn on_call(&mut self, call: Option<CallId>, now: Instant) {
        self.call = match (call, self.call) {
            (Some(id), Some((watched, ..))) if id == watched => self.call,
            (Some(id), _) => Some((id, now + self.grace, 0)),
            (None, _) => None,
        };
    }

    /// When to check next.
    pub fn deadline(&self) -> Option<Instant> {
        self.call.map(|(_, at, _)| at)
    }

    /// At the deadline, with what the WebRTC task saw: the call to end, and why, or nothing
    /// (checked again a grace later).
    pub fn check(&mut self, now: Instant, probe: MediaProbe) -> Option<(CallId, MediaMissing)> {
        let (id, at, frames) = self.call?;
        if now < at {
            return None;
        }
        if probe.frames > frames {
            self.call = Some((id, now + self.grace, probe.frames));
            return None;
        }
        let why = match probe {
            _ if frames > 0 => MediaMissing::Stopped,
            MediaProbe { offered: false, .. } => MediaMissing::NoOffer,
            MediaProbe { connected: false, .. } => MediaMissing::NotConnected,
            _ => MediaMissing::NoFrames,
        };
        self.call = None;
        Some((id, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn sessions_expire_and_end_at_sign_out() {
        let now = t0();
        let mut s = Sessions::new(Duration::from_secs(60));
        s.create("a".into(), "alice", None, now);
        assert_eq!(s.agent("a", now + Duration::from_secs(59)).as_deref(), Some("alice"));
        assert_eq!(s.agent("a", now + Duration::from_secs(60)), None, "expired at its ttl");
        assert!(s.is_empty(), "an expired session is dropped when seen");
        s.create("b".into(), "bob", Some(vec![7; 16]), now);
        assert_eq!((s.serial("b"), s.serial("a")), (Some(&[7u8; 16][..]), None), "a certificate's session");
        assert_eq!(s.agent("nope", now), None);
        assert!(s.remove("b"));
        assert_eq!(s.agent("b", now), None, "signed out");
        assert!(!s.remove("b"));
    }

    #[test]
    fn a_full_table_drops_the_oldest_session() {
        let now = t0();
        let mut s = Sessions::new(Duration::from_secs(3600));
        for i in 0..MAX_SESSIONS {
            s.create(format!("t{i}"), "alice", None, now + Duration::from_millis(i as u64));
        }
        s.create("new".into(), "bob", None, now + Duration::from_secs(10));
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.agent("t0", now + Duration::from_secs(10)), None);
        assert!(s.agent("t1", now + Duration::from_secs(10)).is_some());
        assert!(s.agent("new", now + Duration::from_secs(10)).is_some());
        s.remove_agent("alice");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_per_account() {
        let now = t0();
        let mut g = SignInGuard::default();
        let (a, b) = (&"10.0.0.1", &"10.0.0.2");
        for _ in 0..5 {
            assert!(g.allow(a, "alice", now).is_ok());
            g.failed(a, "alice", now);
        }
        let refused = g.allow(a, "bob", now).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(12));
        // Another address on the same account is refused too (the account's allowance).
        let refused = g.allow(b, "alice", now).unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(12), "{refused:?}");
        // Another address on another account is not.
        assert!(g.allow(b, "bob", now).is_ok());
        // Allowances come back with time.
        assert!(g.allow(a, "carol", now + Duration::from_secs(12)).is_ok());
        assert!(g.allow(b, "alice", now + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn sign_in_bodies_are_bounded() {
        assert_eq!(
            SignIn::parse(br#"{"name":"alice","password":"pw"}"#),
            Ok(SignIn { name: "alice".into(), password: "pw".into() })
        );
        assert!(SignIn::parse(br#"{"name":"","password":"pw"}"#).is_err());
        assert!(
            SignIn::parse(format!(r#"{{"name":"{}","password":"pw"}}"#, "n".repeat(65)).as_bytes()).is_err()
        );
        assert!(
            SignIn::parse(format!(r#"{{"name":"a","password":"{}"}}"#, "p".repeat(257)).as_bytes()).is_err()
        );
        assert!(SignIn::parse(b"not json").is_err());
        assert!(SignIn::parse(br#"{"name":"a","password":"p","admin":true}"#).is_err());
    }

    #[test]
    fn the_page_may_send_only_an_agents_messages() {
        assert_eq!(
            BrowserMsg::parse(r#"{"type":"set_presence","presence":"idle"}"#),
            Ok(BrowserMsg::Client(ClientMsg::SetPresence { presence: Presence::Idle }))
        );
        assert_eq!(
            BrowserMsg::parse(r#"{"type":"text","call_id":3,"id":1,"body":"hello"}"#),
            Ok(BrowserMsg::Client(ClientMsg::Text { call_id: 3, id: 1, body: "hello".into() }))
        );
        assert!(matches!(
            BrowserMsg::parse(r#"{"type":"sdp_offer","sdp":"v=0\r\n"}"#),
            Ok(BrowserMsg::SdpOffer(_))
        ));
        for bad in [
            r#"{"type":"request_agent"}"#,
            r#"{"type":"hello","role":"agent","software":"x"}"#,
            r#"{"type":"renew","csr":"x"}"#,
            r#"{"type":"text","call_id":3,"id":0,"body":"id zero"}"#,
            r#"{"type":"text","call_id":3,"id":1,"body":""}"#,
            r#"{"type":"sdp_offer","sdp":"not sdp"}"#,
            r#"{"type":"accept"}"#,
            r#"{"type":"accept","call_id":-1}"#,
            r#"[1,2,3]"#,
            "",
            "\u{0}",
        ] {
            assert!(BrowserMsg::parse(bad).is_err(), "{bad} was accepted");
        }
        let huge = format!(r#"{{"type":"sdp_offer","sdp":"v=0{}"}}"#, "a".repeat(MAX_SDP));
        assert!(BrowserMsg::parse(&huge).is_err());
        let oversized = "x".repeat(MAX_WS_MESSAGE + 1);
        assert!(BrowserMsg::parse(&oversized).unwrap_err().contains("at most"));
    }

    #[test]
    fn cookies_and_origins() {
        assert_eq!(cookie("a=1; kioskd_session=abc ; b=2", "kioskd_session"), Some("abc"));
        assert_eq!(cookie("kioskd_sessionx=1", "kioskd_session"), None);
        assert_eq!(cookie("", "kioskd_session"), None);
        assert!(same_origin(Some("https://hub:8443"), Some("hub:8443")));
        assert!(!same_origin(Some("http://hub:8443"), Some("hub:8443")), "not over TLS");
        assert!(!same_origin(Some("https://evil.example"), Some("hub:8443")));
        assert!(!same_origin(None, Some("hub:8443")));
    }

    #[test]
    fn a_call_without_the_browsers_media_is_ended_and_says_why() {
        let t0 = Instant::now();
        let g = Duration::from_secs(10);
        let probe = |offered, connected, frames| MediaProbe { offered, connected, frames };
        for (p, why) in [
            (probe(false, false, 0), MediaMissing::NoOffer),
            (probe(true, false, 0), MediaMissing::NotConnected),
            (probe(true, true, 0), MediaMissing::NoFrames),
        ] {
            let mut w = MediaWatch::new(g);
            assert_eq!(w.deadline(), None, "no call, nothing to watch");
            w.on_call(Some(7), t0);
            assert_eq!(w.deadline(), Some(t0 + g));
            assert_eq!(w.check(t0 + g - Duration::from_millis(1), p), None, "not before the grace");
            assert_eq!(w.check(t0 + g, p), Some((7, why)));
            assert_eq!(w.deadline(), None, "told once");
            assert_eq!(w.check(t0 + g * 2, p), None);
        }
    }

    #[test]
    fn media_that_flows_keeps_the_call_and_media_that_stops_ends_it() {
        let t0 = Instant::now();
        let g = Duration::from_secs(10);
        let mut w = MediaWatch::new(g);
        w.on_call(Some(1), t0);
        let flowing = |frames| MediaProbe { offered: true, connected: true, frames };
        assert_eq!(w.check(t0 + g, flowing(400)), None);
        assert_eq!(w.deadline(), Some(t0 + g * 2), "checked again a grace later");
        w.on_call(Some(1), t0 + g + Duration::from_secs(1));
        assert_eq!(w.deadline(), Some(t0 + g * 2), "the same call does not restart the watch");
        assert_eq!(w.check(t0 + g * 2, flowing(900)), None);
        assert_eq!(w.check(t0 + g * 3, flowing(900)), Some((1, MediaMissing::Stopped)));
        // A session that ended after media flowed is a stop too, not a missing offer.
        w.on_call(Some(2), t0);
        assert_eq!(w.check(t0 + g, flowing(5)), None);
        assert_eq!(w.check(t0 + g * 2, MediaProbe::default()), Some((2, MediaMissing::Stopped)));
        // The call ended: nothing to watch.
        w.on_call(Some(3), t0);
        w.on_call(None, t0 + Duration::from_secs(1));
        assert_eq!((w.deadline(), w.check(t0 + g, MediaProbe::default())), (None, None));
    }
}
