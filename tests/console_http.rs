//! The browser console's HTTPS and WebSocket edge, spoken to directly over real TLS: sign-in,
//! its rate limit and event log lines, the WebSocket's refusals (no session: 401, foreign
//! origin: 403), bad messages, and a second page taking over.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use kioskd::protocol::Role;
use kioskd::queue::QueueConfig;
use kioskd::roles::hub::console::{Accounts, ConsoleOptions};
use kioskd::roles::hub::{self, HubOptions, RunningHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "a long enough password";

struct Console {
    hub: RunningHub,
    addr: SocketAddr,
    tls: TlsConnector,
    log: std::path::PathBuf,
    pki: Pki,
    accounts: std::path::PathBuf,
    /// The revocation list the hub follows, when it follows one.
    crl: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

async fn start() -> Console {
    start_with(false, Duration::from_secs(3)).await
}

/// A hub with the console; `revocable`: it follows a revocation list (empty at first); a call
/// whose browser sends no media ends after `media_grace`.
async fn start_with(revocable: bool, media_grace: Duration) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let crl = revocable.then(|| {
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, pki.ca.revocation_list(&[], 1).unwrap()).unwrap();
        path
    });
    let accounts = dir.path().join("accounts.toml");
    Accounts::set(&accounts, "alice", PASSWORD, false).unwrap();
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let log = dir.path().join("events.jsonl");
    let material = pki.material(Role::Hub, "hub.test");
    let ca = material.ca.clone();
    let hub = hub::start(HubOptions {
        listen: local,
        tls: material,
        queue: QueueConfig::default(),
        event_log: log.clone(),
        metrics: None,
        recording: None,
        crl: crl.clone(),
        admission: Default::default(),
        renewal: None,
        database: None,
        console: Some(ConsoleOptions {
            listen: local,
            media: local,
            media_public: None,
            accounts: accounts.clone(),
            session_ttl: Duration::from_secs(3600),
            media_grace,
        }),
    })
    .await
    .expect("hub starts");
    let addr = hub.console_addrs.expect("console").https;
    Console { hub, addr, tls: client_tls(&ca, None), log, pki, accounts, crl, _dir: dir }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl Console {
    async fn connect(&self) -> Tls {
        self.connect_with(&self.tls).await
    }

    async fn connect_with(&self, tls: &TlsConnector) -> Tls {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tls.connect(name, tcp).await.expect("TLS 1.3 with the hub's certificate")
    }

    fn origin(&self) -> String {
        format!("https://{}", self.host())
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// One request on a fresh connection: the status, the headers and the body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (u16, String, String) {
        self.request_with(&self.tls, method, path, headers, body).await
    }

    async fn request_with(
        &self,
        tls: &TlsConnector,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (u16, String, String) {
        let mut s = self.connect_with(tls).await;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host(),
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("an answer");
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    async fn sign_in(&self, password: &str) -> (u16, String, String) {
        let body = format!(r#"{{"name":"alice","password":"{password}"}}"#);
        self.request(
            "POST",
            "/api/signin",
            &[("Origin", self.origin()), ("Content-Type", "application/json".into())],
            &body,
        )
        .await
    }

    /// A WebSocket with `cookie` and `origin`; the HTTP status when refused.
    async fn websocket(
        &self,
        cookie: Option<&str>,
        origin: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<Tls>, u16> {
        let mut req = format!("wss://{}/ws", self.host()).into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        if let Some(c) = cookie {
            req.headers_mut().insert("Cookie", format!("kioskd_session={c}").parse().unwrap());
        }
        match tokio_tungstenite::client_async(req, self.connect().await).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("websocket: {e}"),
        }
    }

    fn events(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The event log once it holds every one of `wanted` (the core writes it after the
    /// console's answer has gone out); panics after [`WAIT`] naming what is missing.
    async fn events_with(&self, wanted: &[&str]) -> String {
        let start = std::time::Instant::now();
        loop {
            let events = self.events();
            let missing: Vec<&&str> = wanted.iter().filter(|w| !events.contains(**w)).collect();
            if missing.is_empty() {
                return events;
            }
            assert!(start.elapsed() < WAIT, "{missing:?} missing from the event log:\n{events}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TLS client that presents `m`'s certificate, as a browser holding one does.
fn presenting(m: &kioskd::edges::net::tls::TlsMaterial) -> TlsConnector {
    client_tls(&m.ca, Some(m))
}

/// A TLS 1.3 client trusting `ca`, presenting `cert`'s certificate when given.
fn client_tls(
    ca: &[rustls::pki_types::CertificateDer<'static>],
    cert: Option<&kioskd::edges::net::tls::TlsMaterial>,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    let config = match cert {
        Some(m) => config.with_client_auth_cert(m.chain.clone(), m.key.clone_key()).unwrap(),
        None => config.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// alice signed in on a page, IDLE, and in a call with a new kiosk `kiosk`: the page, its
/// session, the kiosk and the call.
async fn page_in_call(
    c: &Console,
    kiosk: &str,
) -> (tokio_tungstenite::WebSocketStream<Tls>, String, TestKiosk, u64) {
    let (status, head, _) = c.sign_in(PASSWORD).await;
    assert_eq!(status, 200);
    let token = cookie_of(&head);
    let mut ws = c.websocket(Some(&token), &c.origin()).await.expect("websocket");
    next_of(&mut ws, "welcome").await;
    ws.send(Message::Text(r#"{"type":"set_presence","presence":"idle"}"#.into())).await.unwrap();
    loop {
        if next_of(&mut ws, "room").await["state"] == "idle" {
            break;
        }
    }
    let mut k = start_kiosk(&c.pki, c.hub.local_addr, kiosk);
    k.wait_state("idle", |s| *s == kioskd::call::KioskState::Idle).await;
    k.panel.press(kioskd::call::Button::Call);
    let call_id = next_of(&mut ws, "offer").await["call_id"].as_u64().expect("a call id");
    let accept = serde_json::json!({ "type": "accept", "call_id": call_id }).to_string();
    ws.send(Message::Text(accept.into())).await.unwrap();
    k.wait_state("talking to alice", |s| matches!(s, kioskd::call::KioskState::Connected { .. })).await;
    (ws, token, k, call_id)
}

fn cookie_of(head: &str) -> String {
    let line = head.lines().find(|l| l.starts_with("Set-Cookie: kioskd_session=")).expect("a session cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("Secure") && line.contains("SameSite=Strict"),
        "{line}"
    );
    line["Set-Cookie: kioskd_session=".len()..].split(';').next().unwrap().to_string()
}

/// The next JSON text message of a type.
async fn next_of(ws: &mut tokio_tungstenite::WebSocketStream<Tls>, kind: &str) -> serde_json::Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("waiting for {kind}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sessions_and_the_websockets_refusals() {
    let c = start().await;
    // The page and its files, with the security headers.
    let (status, head, body) = c.request("GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Security-Policy: default-src 'self'")
            && head.contains("X-Frame-Options: DENY")
    );
    assert!(body.contains("console.js"));
    assert_eq!(c.request("GET", "/nope", &[], "").await.0, 404);
    assert_eq!(c.request("GET", "/api/me", &[], "").await.0, 401);

    // Not signed in: no WebSocket. Signed in from another site: no sign-in.
    assert_eq!(c.websocket(None, &c.origin()).await.err(), Some(401));
    let (status, ..) = c
        .request(
            "POST",
            "/api/signin",
            &[("Origin", "https://evil.example".into())],
            r#"{"name":"alice","password":"x"}"#,
        )
        .await;
    assert_eq!(status, 403, "a sign-in from a foreign origin");
    assert_eq!(c.sign_in("wrong password").await.0, 401);
    let (status, head, _) = c.sign_in(PASSWORD).await;
    assert_eq!(status, 200);
    let token = cookie_of(&head);
    let me = c.request("GET", "/api/me", &[("Cookie", format!("kioskd_session={token}"))], "").await;
    assert_eq!((me.0, me.2.contains("alice")), (200, true));
    assert_eq!(c.websocket(Some(&token), "https://evil.example").await.err(), Some(403), "a foreign origin");
    assert_eq!(c.websocket(Some("forged"), &c.origin()).await.err(), Some(401), "a forged session");

    // Signed in: the page is the agent alice.
    let mut ws = c.websocket(Some(&token), &c.origin()).await.expect("websocket");
    let welcome = next_of(&mut ws, "welcome").await;
    assert_eq!((welcome["id"].as_str(), welcome["role"].as_str()), (Some("alice"), Some("agent")));
    assert_eq!(next_of(&mut ws, "room").await["state"], "close", "a new agent starts closed");
    ws.send(Message::Text(r#"{"type":"set_presence","presence":"idle"}"#.into())).await.unwrap();
    assert_eq!(next_of(&mut ws, "room").await["state"], "idle");

    // Bad messages are answered, not obeyed, and leave the page connected.
    for bad in [
        "not json",
        r#"{"type":"request_agent"}"#,
        r#"{"type":"hello","role":"kiosk","software":"x"}"#,
        r#"{"type":"sdp_offer","sdp":"garbage"}"#,
        r#"{"type":"accept","call_id":99}"#,
    ] {
        ws.send(Message::Text(bad.into())).await.unwrap();
        let e = next_of(&mut ws, "error").await;
        assert_eq!(e["fatal"], false, "{bad}: {e}");
    }
    // SDP that starts right but is not SDP, and one without a call to belong to.
    for (sdp, says) in [
        ("v=0\r\nthis is not sdp\r\n\u{0}\u{ff}", "SDP offer"),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "no call in progress"),
    ] {
        let msg = serde_json::json!({ "type": "sdp_offer", "sdp": sdp }).to_string();
        ws.send(Message::Text(msg.into())).await.unwrap();
        let e = next_of(&mut ws, "error").await;
        assert!(e["message"].as_str().unwrap_or_default().contains(says), "{sdp:?}: {e}");
    }
    // Datagrams from an address no call knows (STUN-, DTLS- and RTP-looking, and noise) are
    // dropped; the console goes on.
    let media = c.hub.console_addrs.expect("console").media;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xde, 0xad];
    for d in [&stun[..], &dtls[..], &rtp[..], &[0xffu8; 1500][..], &[][..]] {
        junk.send_to(d, media).await.unwrap();
    }
    ws.send(Message::Text(r#"{"type":"set_presence","presence":"close"}"#.into())).await.unwrap();
    assert_eq!(next_of(&mut ws, "room").await["state"], "close", "still served after bad messages");

    // A customer waiting while the advisor is closed shows in the page's queue, with the branch.
    let mut k = start_kiosk(&c.pki, c.hub.local_addr, "branch-7/kiosk-3");
    k.wait_state("idle", |s| *s == kioskd::call::KioskState::Idle).await;
    k.panel.press(kioskd::call::Button::Call);
    let queue = loop {
        let q = next_of(&mut ws, "queue").await;
        if q["total"] == 1 {
            break q;
        }
    };
    assert_eq!(queue["waiting"][0]["kiosk"], "branch-7/kiosk-3", "{queue}");
    assert_eq!(queue["waiting"][0]["branch"], "branch-7", "{queue}");
    k.panel.press(kioskd::call::Button::HangUp);
    loop {
        if next_of(&mut ws, "queue").await["total"] == 0 {
            break;
        }
    }

    // A second page of the same agent takes over; the first is told why.
    let mut second = c.websocket(Some(&token), &c.origin()).await.expect("second websocket");
    next_of(&mut second, "welcome").await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => {}
                other => panic!("first page: {other:?}"),
            }
        }
    })
    .await
    .expect("the first page is closed");
    assert_eq!(closed, 4002);

    // An oversized message closes the page; the hub goes on.
    second.send(Message::Text("x".repeat(70 * 1024).into())).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match second.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an oversized message did not end the page");

    // Sign-out ends the session.
    let out = c
        .request(
            "POST",
            "/api/signout",
            &[("Origin", c.origin()), ("Cookie", format!("kioskd_session={token}"))],
            "",
        )
        .await;
    assert_eq!(out.0, 204);
    assert_eq!(c.websocket(Some(&token), &c.origin()).await.err(), Some(401), "signed out");

    // Failed sign-ins are limited and logged.
    let mut limited = None;
    for _ in 0..8 {
        let (status, head, body) = c.sign_in("still wrong").await;
        if status == 429 {
            assert!(head.contains("Retry-After:") && body.contains("retry_after_s"), "{head}{body}");
            limited = Some(());
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(limited.is_some(), "failed sign-ins were never limited");
    assert_eq!(c.sign_in(PASSWORD).await.0, 429, "the right password waits too while limited");
    let events = c.events();
    for e in [
        r#""event":"sign_in""#,
        r#""event":"sign_in_failed""#,
        r#""event":"sign_out""#,
        r#""event":"console_refused""#,
    ] {
        assert!(events.contains(e), "{e} missing from the event log:\n{events}");
    }
    assert!(!events.contains(PASSWORD), "a password in the event log");
    c.hub.shutdown().await;
}

/// A page that accepts a call and never sends media (here: no WebRTC offer at all) has its
/// call ended after the console's media grace (3 s here), with a line in the event log and a
/// word to the page; the room is not left stuck, and another call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_never_sends_media_has_its_call_ended() {
    let c = start().await;
    // Another call, with a QUIC agent, that must not be disturbed.
    let mut bob = start_agent(&c.pki, c.hub.local_addr, "bob", Some(auto(None)));
    bob.wait_for("bob welcomed", |e| matches!(e, kioskd::roles::agent::AgentEvent::Welcome { .. })).await;
    let mut other = start_kiosk(&c.pki, c.hub.local_addr, "branch-1/kiosk-1");
    other.wait_state("idle", |s| *s == kioskd::call::KioskState::Idle).await;
    other.panel.press(kioskd::call::Button::Call);
    other.wait_state("talking to bob", |s| matches!(s, kioskd::call::KioskState::Connected { .. })).await;

    let (mut ws, _, mut k, call_id) = page_in_call(&c, "branch-2/kiosk-2").await;

    // No offer: the call ends for the kiosk, and the page is told why.
    let told = next_of(&mut ws, "error").await;
    assert!(told["message"].as_str().unwrap_or_default().contains("no WebRTC offer"), "{told}");
    let ended = next_of(&mut ws, "call_ended").await;
    assert_eq!(ended["call_id"].as_u64(), Some(call_id), "{ended}");
    k.wait_state("the call ended", |s| matches!(s, kioskd::call::KioskState::Ended { .. })).await;
    let events = c.events();
    let line = events
        .lines()
        .find(|l| l.contains(r#""event":"browser_media_missing""#))
        .unwrap_or_else(|| panic!("no browser_media_missing line:\n{events}"));
    assert!(line.contains(&format!(r#""call_id":{call_id}"#)) && line.contains("no WebRTC offer"), "{line}");
    assert!(line.contains(r#""agent":"alice""#), "{line}");

    // The room is not stuck: alice is offered the next caller.
    ws.send(Message::Text(r#"{"type":"set_presence","presence":"idle"}"#.into())).await.unwrap();
    k.wait_state("idle again", |s| *s == kioskd::call::KioskState::Idle).await;
    k.panel.press(kioskd::call::Button::Call);
    let again = next_of(&mut ws, "offer").await;
    assert_ne!(again["call_id"].as_u64(), Some(call_id), "a new call is offered: {again}");

    // The other call went on throughout: its kiosk never left the call.
    while let Ok(e) = other.events.try_recv() {
        if let kioskd::roles::kiosk::KioskEvent::State { state, .. } = e {
            assert!(matches!(state, kioskd::call::KioskState::Connected { .. }), "the other call: {state:?}");
        }
    }
    c.hub.shutdown().await;
}

/// An advisor whose browser holds their agent certificate is signed in by it, without a
/// password; when the certificate is revoked, their page is closed and neither the
/// certificate nor the session it made signs them in again. A password session ends when its
/// account is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signs_in_until_it_is_revoked_and_a_removed_account_is_out() {
    let c = start_with(true, Duration::from_secs(3)).await;
    let carol_cert = c.pki.material(Role::Agent, "carol");
    let carol = presenting(&carol_cert);
    let (status, head, body) = c.request_with(&carol, "GET", "/api/me", &[], "").await;
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.contains(r#""agent":"carol""#), "{body}");
    let token = cookie_of(&head);
    let mut page = c.websocket(Some(&token), &c.origin()).await.expect("websocket");
    let welcome = next_of(&mut page, "welcome").await;
    assert_eq!((welcome["id"].as_str(), welcome["role"].as_str()), (Some("carol"), Some("agent")));
    // A certificate of another role signs no one in.
    let kiosk_cert = presenting(&c.pki.material(Role::Kiosk, "branch-1/kiosk-1"));
    assert_eq!(c.request_with(&kiosk_cert, "GET", "/api/me", &[], "").await.0, 401, "a kiosk's certificate");

    // Revoked: the page is closed, and neither the certificate nor its session signs in.
    let serial = kioskd::edges::net::tls::serial_of(&carol_cert.chain[0]).unwrap();
    let crl = c.crl.clone().expect("a revocation list");
    let pem = c.pki.ca.revocation_list(std::slice::from_ref(&serial), 2).unwrap();
    let tmp = crl.with_extension("tmp");
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, &crl).unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match page.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| f.reason.to_string()),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await
    .expect("the revoked advisor's page is closed");
    assert!(closed.as_deref().is_some_and(|r| r.contains("revoked")), "closed with {closed:?}");
    let (status, head, _) = c.request_with(&carol, "GET", "/api/me", &[], "").await;
    assert_eq!(status, 401, "a revoked certificate signed in: {head}");
    assert!(!head.contains("Set-Cookie"), "{head}");
    assert_eq!(
        c.websocket(Some(&token), &c.origin()).await.err(),
        Some(401),
        "the revoked certificate's session"
    );

    // A password session ends when its account is removed.
    let (status, head, _) = c.sign_in(PASSWORD).await;
    assert_eq!(status, 200);
    let alice = cookie_of(&head);
    let mut ws = c.websocket(Some(&alice), &c.origin()).await.expect("alice's websocket");
    next_of(&mut ws, "welcome").await;
    drop(ws);
    Accounts::remove(&c.accounts, "alice").unwrap();
    assert_eq!(c.websocket(Some(&alice), &c.origin()).await.err(), Some(401), "a removed account's session");

    c.events_with(&[
        r#""detail":"certificate (from"#,
        "is revoked",
        r#""event":"revoked""#,
        "the account was removed",
    ])
    .await;
    c.hub.shutdown().await;
}

/// A page that goes silent mid-call (its machine froze or its network went: no close, no
/// answer to pings) is dropped after 6 s, its call ends for the kiosk, the event log says why,
/// and the room is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_goes_silent_mid_call_is_dropped_and_its_call_ends() {
    // A media grace longer than the test: the silence, not the missing media, ends the call.
    let c = start_with(false, Duration::from_secs(60)).await;
    let (ws, token, mut k, call_id) = page_in_call(&c, "branch-3/kiosk-1").await;

    // From here the page reads nothing and so answers no ping; its connection stays open.
    let silent = std::time::Instant::now();
    let ended = k.wait_state("the call's end", |s| matches!(s, kioskd::call::KioskState::Ended { .. })).await;
    let took = silent.elapsed();
    assert!(
        matches!(
            ended,
            kioskd::call::KioskState::Ended { reason: kioskd::protocol::EndReason::AgentDisconnected }
        ),
        "{ended:?}"
    );
    eprintln!("a silent page: the kiosk's call ended {} ms after the page went silent", took.as_millis());
    assert!(took <= Duration::from_secs(12), "the call outlived its silent page by {took:?}");
    let events = c.events();
    let line = events
        .lines()
        .find(|l| l.contains(r#""event":"browser_lost""#))
        .unwrap_or_else(|| panic!("no browser_lost line:\n{events}"));
    assert!(line.contains(&format!(r#""call_id":{call_id}"#)) && line.contains("answered nothing"), "{line}");
    let mut status = c.hub.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.snapshot.calls_connected == 0))
        .await
        .expect("no call left")
        .expect("the hub runs");
    // The advisor comes back on a new page and takes calls again.
    let mut again = c.websocket(Some(&token), &c.origin()).await.expect("a new page");
    next_of(&mut again, "welcome").await;
    drop(ws);
    c.hub.shutdown().await;
}
