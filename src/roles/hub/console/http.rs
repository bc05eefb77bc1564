//! The console's HTTPS edge: TLS 1.3, HTTP/1.1 requests read with bounds and time limits, the
//! page's three files compiled into the binary, sign-in and sign-out, and the WebSocket
//! upgrade (401 without a valid session, 403 for a foreign Origin).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::super::peer::CoreCmd;
use super::Shared;
use crate::console::web::{SignIn, cookie, same_origin};
use crate::edges::net::tls::{identity_from_cert, serial_of};
use crate::protocol::Role;

/// The page, its script and its style, built into the binary.
const INDEX: &str = include_str!("../../../../assets/console/index.html");
const SCRIPT: &str = include_str!("../../../../assets/console/console.js");
const STYLE: &str = include_str!("../../../../assets/console/console.css");

/// The session cookie's name.
pub const COOKIE: &str = "kioskd_session";
/// Largest request head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body (a sign-in).
const MAX_BODY: usize = 4 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 512;
/// Time for the TLS handshake, and for each request's head and body.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Stream = TlsStream<TcpStream>;

pub(super) async fn serve(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "console: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%remote, "console: too many connections; refused");
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(
            async move {
                connection(tcp, remote, acceptor, shared).await;
                drop(slot);
            }
            .instrument(info_span!("console", %remote)),
        );
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn token(&self) -> Option<&str> {
        self.header("cookie").and_then(|c| cookie(c, COOKIE))
    }
}

async fn connection(tcp: TcpStream, remote: SocketAddr, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(error = %e, "console: TLS handshake failed"),
        Err(_) => return debug!("console: TLS handshake timed out"),
    };
    // An agent certificate from the deployment's CA signs its holder in (checked by rustls),
    // unless it is revoked (checked at the sign-in, against the list the hub follows).
    let cert_agent = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| {
        let id = identity_from_cert(c).ok().filter(|i| i.role == Role::Agent)?;
        Some(CertAgent { id: id.id, serial: serial_of(c).ok()? })
    });
    let mut buf = Vec::new();
    loop {
        let req = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream, &mut buf)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "console: bad request");
                let _ = respond(&mut stream, 400, "text/plain", e.as_bytes(), &[]).await;
                return;
            }
            Err(_) => return,
        };
        if req.path == "/ws" && req.method == "GET" {
            if !buf.is_empty() {
                let _ = respond(&mut stream, 400, "text/plain", b"data before the upgrade", &[]).await;
                return;
            }
            return upgrade(stream, req, remote, shared).await;
        }
        let close = req.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if handle(&mut stream, req, remote, &shared, cert_agent.as_ref()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// The agent whose certificate the browser presented.
struct CertAgent {
    id: String,
    serial: Vec<u8>,
}

/// Reads one request (head and body) from `stream`, keeping what follows it in `buf`;
/// `None` when the client closed between requests.
async fn read_request(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Option<Request>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or_default().to_string();
                let path = parsed.path.unwrap_or_default().split('?').next().unwrap_or_default().to_string();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let length = match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
                    Some((_, v)) => v.trim().parse::<usize>().map_err(|_| "bad content-length")?,
                    None => 0,
                };
                if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")) {
                    return Err("transfer-encoding is not accepted".into());
                }
                if length > MAX_BODY {
                    return Err(format!("body of {length} bytes (at most {MAX_BODY})"));
                }
                while buf.len() < head_len + length {
                    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("closed in the body".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[head_len..head_len + length].to_vec();
                buf.drain(..head_len + length);
                return Ok(Some(Request { method, path, headers, body }));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(format!("request head over {MAX_HEAD} bytes"));
                }
            }
            Err(e) => return Err(format!("malformed request: {e}")),
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err("closed in the head".into()) };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Security headers on every response: nothing from elsewhere, no framing, no sniffing.
const SECURITY: &str = "Content-Security-Policy: default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'\r\n\
X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
Strict-Transport-Security: max-age=31536000\r\nCache-Control: no-store\r\n";

async fn respond(
    stream: &mut Stream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[String],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{SECURITY}",
        body.len()
    );
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

fn json(value: serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

async fn handle(
    stream: &mut Stream,
    req: Request,
    remote: SocketAddr,
    shared: &Arc<Shared>,
    cert_agent: Option<&CertAgent>,
) -> std::io::Result<()> {
    let post = req.method == "POST";
    // A form or script on another site must not act with the advisor's cookie.
    if post && !same_origin(req.header("origin"), req.header("host")) {
        return respond(
            stream,
            403,
            "application/json",
            &json(serde_json::json!({"error": "foreign origin"})),
            &[],
        )
        .await;
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => {
            respond(stream, 200, "text/html; charset=utf-8", INDEX.as_bytes(), &[]).await
        }
        ("GET", "/console.js") => {
            respond(stream, 200, "text/javascript; charset=utf-8", SCRIPT.as_bytes(), &[]).await
        }
        ("GET", "/console.css") => {
            respond(stream, 200, "text/css; charset=utf-8", STYLE.as_bytes(), &[]).await
        }
        // The kiosk screen's font (Latin and the Chinese the console shows), for browsers
        // without a CJK font.
        ("GET", "/console-cjk.otf") => respond(stream, 200, "font/otf", crate::ui::text::FONT, &[]).await,
        ("GET", "/api/me") => {
            let now = Instant::now();
            let signed_in = req.token().and_then(|t| shared.sessions().agent(t, now));
            if let Some(agent) = signed_in {
                return respond(
                    stream,
                    200,
                    "application/json",
                    &json(serde_json::json!({ "agent": agent })),
                    &[],
                )
                .await;
            }
            let cert_agent = cert_agent.filter(|c| {
                let revoked = shared.is_revoked(&c.serial);
                if revoked {
                    let serial = crate::edges::net::certs::hex(&c.serial);
                    event(
                        shared,
                        "sign_in_refused",
                        &c.id,
                        remote,
                        Some(format!("certificate {serial} is revoked")),
                    );
                }
                !revoked
            });
            match cert_agent.map(|c| (c, start_session(shared, &c.id, Some(c.serial.clone()), remote))) {
                Some((c, Some(cookie))) => {
                    respond(
                        stream,
                        200,
                        "application/json",
                        &json(serde_json::json!({ "agent": c.id })),
                        &[cookie],
                    )
                    .await
                }
                Some((_, None)) => no_session(stream).await,
                None => {
                    respond(
                        stream,
                        401,
                        "application/json",
                        &json(serde_json::json!({"error": "not signed in"})),
                        &[],
                    )
                    .await
                }
            }
        }
        ("POST", "/api/signin") => sign_in(stream, &req, remote, shared).await,
        ("POST", "/api/signout") => {
            if let Some(t) = req.token() {
                let agent = {
                    let mut sessions = shared.sessions();
                    let agent = sessions.agent(t, Instant::now());
                    sessions.remove(t);
                    agent
                };
                if let Some(agent) = agent {
                    event(shared, "sign_out", &agent, remote, None);
                }
            }
            let expired =
                format!("Set-Cookie: {COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
            respond(stream, 204, "text/plain", b"", &[expired]).await
        }
        (
            _,
            "/" | "/index.html" | "/console.js" | "/console.css" | "/api/me" | "/api/signin" | "/api/signout",
        ) => respond(stream, 405, "text/plain", b"method not allowed", &[]).await,
        _ => respond(stream, 404, "text/plain", b"not found", &[]).await,
    }
}

async fn sign_in(
    stream: &mut Stream,
    req: &Request,
    remote: SocketAddr,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let attempt = match SignIn::parse(&req.body) {
        Ok(a) => a,
        Err(e) => {
            return respond(stream, 400, "application/json", &json(serde_json::json!({ "error": e })), &[])
                .await;
        }
    };
    let now = Instant::now();
    let allowed = shared.guard().allow(&remote.ip(), &attempt.name, now);
    if let Err(refused) = allowed {
        let secs = refused.retry_after.as_secs().max(1);
        event(
            shared,
            "sign_in_refused",
            &attempt.name,
            remote,
            Some(format!("rate limited, retry after {secs} s")),
        );
        let body = json(serde_json::json!({"error": "too many failed sign-ins", "retry_after_s": secs}));
        return respond(stream, 429, "application/json", &body, &[format!("Retry-After: {secs}")]).await;
    }
    let accounts = shared.accounts.clone();
    let (name, password) = (attempt.name.clone(), attempt.password);
    let verified = tokio::task::spawn_blocking(move || accounts.verify(&name, &password)).await;
    match verified {
        Ok(Ok(true)) => {
            let Some(cookie) = start_session(shared, &attempt.name, None, remote) else {
                return no_session(stream).await;
            };
            respond(
                stream,
                200,
                "application/json",
                &json(serde_json::json!({ "agent": attempt.name })),
                &[cookie],
            )
            .await
        }
        Ok(Ok(false)) => {
            shared.guard().failed(&remote.ip(), &attempt.name, Instant::now());
            event(shared, "sign_in_failed", &attempt.name, remote, Some("wrong name or password".into()));
            respond(
                stream,
                401,
                "application/json",
                &json(serde_json::json!({"error": "wrong name or password"})),
                &[],
            )
            .await
        }
        Ok(Err(e)) => {
            warn!(error = %e, "console: accounts unreadable");
            respond(
                stream,
                500,
                "application/json",
                &json(serde_json::json!({"error": "accounts unavailable"})),
                &[],
            )
            .await
        }
        Err(e) => {
            warn!(error = %e, "console: password check failed");
            respond(
                stream,
                500,
                "application/json",
                &json(serde_json::json!({"error": "sign-in failed"})),
                &[],
            )
            .await
        }
    }
}

/// A new session for `agent`, signed in by the certificate `serial` or else by password;
/// returns its `Set-Cookie` header, or `None` when the system's random numbers fail.
fn start_session(
    shared: &Arc<Shared>,
    agent: &str,
    serial: Option<Vec<u8>>,
    remote: SocketAddr,
) -> Option<String> {
    let mut raw = [0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        error!("console: no random numbers for a session token");
        return None;
    }
    let token = crate::edges::net::certs::hex(&raw);
    let how = if serial.is_some() { "certificate" } else { "password" };
    let ttl = {
        let mut sessions = shared.sessions();
        sessions.create(token.clone(), agent, serial, Instant::now());
        sessions.ttl()
    };
    event(shared, "sign_in", agent, remote, Some(how.to_string()));
    Some(format!(
        "Set-Cookie: {COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    ))
}

async fn no_session(stream: &mut Stream) -> std::io::Result<()> {
    let body = json(serde_json::json!({"error": "no session could be made"}));
    respond(stream, 503, "application/json", &body, &[]).await
}

/// A console event for the event log (through the core, which owns it).
fn event(shared: &Arc<Shared>, what: &'static str, agent: &str, remote: SocketAddr, detail: Option<String>) {
    info!(event = what, agent, %remote, "console");
    let detail = match detail {
        Some(d) => format!("{d} (from {})", remote.ip()),
        None => format!("from {}", remote.ip()),
    };
    let _ = shared.core.try_send(CoreCmd::Console {
        event: what,
        agent: agent.to_string(),
        call_id: None,
        detail,
    });
}

async fn upgrade(mut stream: Stream, req: Request, remote: SocketAddr, shared: Arc<Shared>) {
    if !same_origin(req.header("origin"), req.header("host")) {
        event(&shared, "websocket_refused", "", remote, Some(format!("origin {:?}", req.header("origin"))));
        let _ = respond(&mut stream, 403, "text/plain", b"foreign origin", &[]).await;
        return;
    }
    let now = Instant::now();
    let session = req.token().and_then(|t| Some((t.to_string(), shared.sessions().agent(t, now)?)));
    let Some((token, agent)) = session else {
        let _ = respond(&mut stream, 401, "text/plain", b"not signed in", &[]).await;
        return;
    };
    // The session's credential must still hold: a revoked certificate, or an account removed
    // since (`kioskd agents remove`), ends it.
    let serial = shared.sessions().serial(&token).map(<[u8]>::to_vec);
    let gone = match &serial {
        Some(s) if shared.is_revoked(s) => {
            Some(format!("certificate {} is revoked", crate::edges::net::certs::hex(s)))
        }
        Some(_) => None,
        None => match shared.accounts.names() {
            Ok(names) if names.contains(&agent) => None,
            Ok(_) => Some("the account was removed".to_string()),
            Err(e) => Some(format!("the accounts cannot be read: {e}")),
        },
    };
    if let Some(why) = gone {
        shared.sessions().remove(&token);
        event(&shared, "websocket_refused", &agent, remote, Some(why));
        let _ = respond(&mut stream, 401, "text/plain", b"not signed in", &[]).await;
        return;
    }
    let Some(key) = req.header("sec-websocket-key") else {
        let _ = respond(&mut stream, 400, "text/plain", b"not a WebSocket upgrade", &[]).await;
        return;
    };
    let upgrade_ok = req.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        && req.header("sec-websocket-version") == Some("13");
    if !upgrade_ok {
        let _ = respond(&mut stream, 400, "text/plain", b"not a WebSocket upgrade", &[]).await;
        return;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let expires = shared.sessions().expires(&token).unwrap_or(now);
    let who = super::session::Who { agent, token, serial, expires, remote };
    super::session::run(stream, who, shared).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_built_in() {
        assert!(super::INDEX.contains("console.js"));
        assert!(!super::SCRIPT.is_empty() && !super::STYLE.is_empty());
        assert!(!super::INDEX.contains("<script>"), "no inline script: the CSP forbids it");
    }
}
