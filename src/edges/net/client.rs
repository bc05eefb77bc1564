//! The client side of a control session, shared by the kiosk and the agent console.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Connection, Endpoint};

use super::control::{ControlError, ControlReader, ControlWriter};
use crate::protocol::{ClientMsg, HubMsg, Role};

/// How long the hub has to welcome a new connection.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("the hub refused this client: {0}")]
    Refused(String),
    /// The connection closed before the welcome for a reason that passes (the hub shutting
    /// down for a restart, the path lost): the client tries again.
    #[error("the hub closed the connection before welcoming it: {0}")]
    ClosedEarly(String),
    #[error("the hub at {0} refused this certificate: {1}")]
    CertificateRefused(SocketAddr, String),
    #[error("the hub did not welcome this client within {WELCOME_TIMEOUT:?}")]
    NoWelcome,
    #[error("unexpected first message from the hub: {0}")]
    Unexpected(&'static str),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("opening the control stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
}

/// A welcomed session with the hub.
pub struct Session {
    pub conn: Connection,
    pub writer: ControlWriter,
    pub reader: ControlReader,
    /// Our id as the hub read it from our certificate.
    pub id: String,
    pub remote: SocketAddr,
}

/// Where the hubs are and how to reach them.
#[derive(Clone)]
pub struct HubTarget {
    /// `host:port` of each hub of the deployment, in the order to try them; a name may stand
    /// for several addresses (each is tried).
    pub addresses: Vec<String>,
    /// The name every hub's certificate carries.
    pub server_name: String,
    pub client: quinn::ClientConfig,
    /// With several hubs, how long a session may stay silent before the next hub is tried
    /// (`[hub] silent_ms`; [`HUB_SILENT`] by default).
    pub silent: Duration,
}

impl HubTarget {
    /// A target of one hub.
    pub fn one(
        address: impl Into<String>,
        server_name: impl Into<String>,
        client: quinn::ClientConfig,
    ) -> Self {
        Self { addresses: vec![address.into()], server_name: server_name.into(), client, silent: HUB_SILENT }
    }

    /// The silence after which a session is given up for another hub: none with one hub
    /// (there is nowhere else to go; QUIC's idle timeout ends a dead session).
    pub fn silence_limit(&self) -> Option<Duration> {
        (self.addresses.len() > 1).then_some(self.silent)
    }

    /// The addresses, for logs.
    pub fn shown(&self) -> String {
        self.addresses.join(", ")
    }
}

/// A client endpoint bound to an ephemeral port of the right address family.
pub fn endpoint(config: quinn::ClientConfig, ipv6: bool) -> std::io::Result<Endpoint> {
    let bind: SocketAddr =
        if ipv6 { "[::]:0" } else { "0.0.0.0:0" }.parse().map_err(std::io::Error::other)?;
    let mut ep = Endpoint::client(bind)?;
    ep.set_default_client_config(config);
    Ok(ep)
}

/// Resolves `address` (host:port), preferring the first answer.
pub async fn resolve(address: &str) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| ClientError::Resolve(address.into(), e.to_string()))?
        .next()
        .ok_or_else(|| ClientError::Resolve(address.into(), "no address".into()))
}

/// Every address of every hub in `addresses`, in order, without repeats. A name that does not
/// resolve is skipped (and logged) as long as another does.
pub async fn resolve_all(addresses: &[String]) -> Result<Vec<SocketAddr>, ClientError> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for a in addresses {
        match tokio::net::lookup_host(a.as_str()).await {
            Ok(found) => {
                let before = all.len();
                for addr in found {
                    if !all.contains(&addr) {
                        all.push(addr);
                    }
                }
                if all.len() == before {
                    errors.push(format!("{a}: no address"));
                }
            }
            Err(e) => errors.push(format!("{a}: {e}")),
        }
    }
    if all.is_empty() {
        return Err(ClientError::Resolve(addresses.join(", "), errors.join("; ")));
    }
    for e in &errors {
        tracing::warn!(error = %e, "a hub's address does not resolve");
    }
    Ok(all)
}

impl ClientError {
    /// The hub turned this client away (its certificate, or the hub's own refusal): trying
    /// again will not help until someone changes something.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::CertificateRefused(..))
    }
}

/// Client endpoints, one per address family, made when first needed.
pub struct Endpoints {
    config: quinn::ClientConfig,
    v4: Option<Endpoint>,
    v6: Option<Endpoint>,
}

impl Endpoints {
    pub fn new(config: quinn::ClientConfig) -> Self {
        Self { config, v4: None, v6: None }
    }

    /// The endpoint to reach `addr` from.
    pub fn for_addr(&mut self, addr: SocketAddr) -> Result<Endpoint, ClientError> {
        let (slot, v6) = if addr.is_ipv6() { (&mut self.v6, true) } else { (&mut self.v4, false) };
        if let Some(ep) = slot {
            return Ok(ep.clone());
        }
        let ep = endpoint(self.config.clone(), v6).map_err(|e| ClientError::Connect(addr, e.to_string()))?;
        *slot = Some(ep.clone());
        Ok(ep)
    }

    /// New connections use `config` from now on (a renewed certificate).
    pub fn set_client_config(&mut self, config: quinn::ClientConfig) {
        for ep in [&mut self.v4, &mut self.v6].into_iter().flatten() {
            ep.set_default_client_config(config.clone());
        }
        self.config = config;
    }

    /// Waits until every connection of these endpoints has closed.
    pub async fn wait_idle(&self) {
        for ep in [&self.v4, &self.v6].into_iter().flatten() {
            ep.wait_idle().await;
        }
    }
}

/// With several hubs, a handshake to the next one starts if the last has not completed within
/// this (0.8–1.2×): a hub that is gone never answers, and its handshake would otherwise wait
/// out the idle timeout.
pub const FAILOVER_STAGGER: Duration = Duration::from_millis(1000);

/// How handshakes are raced (see [`race_handshakes`]).
#[derive(Debug, Clone, Copy)]
pub struct Race {
    /// A new attempt starts this long after the last one (0.8–1.2×, at random) while the
    /// earlier ones go on.
    pub stagger: Duration,
    /// Attempts in progress at once.
    pub at_once: usize,
    /// Attempts in all; `None`: until one completes or every attempt failed and none is left
    /// to start.
    pub total: Option<usize>,
}

/// Handshakes with the hubs at `addrs`, the first attempt to `addrs[first]`, each later one to
/// the next address round the list (with one address, to it again: a first packet lost on a
/// path that just came back is not waited for). The first handshake to complete is taken,
/// with the index of its address; the others are dropped (closed before any hello, so no hub
/// sees a second session of this client).
pub async fn race_handshakes(
    eps: &mut Endpoints,
    addrs: &[SocketAddr],
    first: usize,
    server_name: &str,
    race: Race,
) -> Result<(Connection, usize), ClientError> {
    let n = addrs.len();
    let Some(&first_addr) = addrs.get(first % n.max(1)) else {
        return Err(ClientError::Resolve(String::new(), "no hub address".into()));
    };
    let mut attempts = tokio::task::JoinSet::new();
    let mut started = 0usize;
    let start = |eps: &mut Endpoints, attempts: &mut tokio::task::JoinSet<_>, started: &mut usize| {
        let i = (first + *started) % n;
        *started += 1;
        let addr = addrs[i];
        let name = server_name.to_string();
        match eps.for_addr(addr) {
            Ok(ep) => {
                attempts.spawn(async move { (i, handshake(&ep, addr, &name).await) });
            }
            Err(e) => {
                attempts.spawn(async move { (i, Err(e)) });
            }
        }
        tokio::time::Instant::now() + race.stagger.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    };
    let mut next = start(eps, &mut attempts, &mut started);
    let more = |started: usize| race.total.is_none_or(|t| started < t);
    let mut last_error = None;
    loop {
        let can_start = attempts.len() < race.at_once && more(started);
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok((i, Ok(conn)))) => return Ok((conn, i)),
                Some(Ok((_, Err(e)))) => {
                    last_error = Some(e);
                    // A refused or failed attempt makes room for the next address at once.
                    if attempts.is_empty() && more(started) {
                        next = start(eps, &mut attempts, &mut started);
                    }
                }
                Some(Err(e)) => last_error = Some(ClientError::Connect(first_addr, e.to_string())),
                None => {
                    return Err(last_error
                        .unwrap_or_else(|| ClientError::Connect(first_addr, "no attempt made".into())));
                }
            },
            () = tokio::time::sleep_until(next), if can_start => {
                next = start(eps, &mut attempts, &mut started);
            }
        }
        if attempts.is_empty() && !more(started) {
            return Err(
                last_error.unwrap_or_else(|| ClientError::Connect(first_addr, "no attempt made".into()))
            );
        }
    }
}

/// Connects, says hello as `role` and waits for the welcome.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
    role: Role,
) -> Result<Session, ClientError> {
    let conn = handshake(endpoint, addr, server_name).await?;
    welcome(conn, addr, role).await
}

/// The QUIC and TLS handshake alone.
pub async fn handshake(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, ClientError> {
    let connecting =
        endpoint.connect(addr, server_name).map_err(|e| ClientError::Connect(addr, e.to_string()))?;
    connecting.await.map_err(|e| match &e {
        // A TLS alert from the hub: it refuses this certificate (revoked, expired, unknown).
        quinn::ConnectionError::ConnectionClosed(c) if (0x100..0x200).contains(&u64::from(c.error_code)) => {
            ClientError::CertificateRefused(addr, e.to_string())
        }
        _ => ClientError::Connect(addr, e.to_string()),
    })
}

/// On a connection just made: says hello as `role` and waits for the welcome.
pub async fn welcome(conn: Connection, addr: SocketAddr, role: Role) -> Result<Session, ClientError> {
    let (send, recv) = conn.open_bi().await?;
    let mut writer = ControlWriter::new(send);
    let mut reader = ControlReader::new(recv);
    let software = format!("kioskd {}", env!("CARGO_PKG_VERSION"));
    writer.send(&ClientMsg::Hello { role, software }).await?;
    let first = tokio::time::timeout(WELCOME_TIMEOUT, reader.recv::<HubMsg>())
        .await
        .map_err(|_| ClientError::NoWelcome)?;
    match first {
        Ok(HubMsg::Welcome { id, .. }) => Ok(Session { conn, writer, reader, id, remote: addr }),
        Ok(HubMsg::Error { message, .. }) => Err(ClientError::Refused(message)),
        Ok(other) => Err(ClientError::Unexpected(other.kind())),
        Err(ControlError::Read(_) | ControlError::Closed) => Err(closed_before_welcome(conn.close_reason())),
        Err(e) => Err(e.into()),
    }
}

/// What a connection closed before the welcome means: a refusal (a person must act) only when
/// the hub closed it as one: its role, a revoked certificate, a protocol it does not speak, or
/// TLS refusing the certificate (a TLS alert, which in TLS 1.3 comes after the client's side of
/// the handshake). A hub shutting down (a restart) or a lost path is tried again.
fn closed_before_welcome(reason: Option<quinn::ConnectionError>) -> ClientError {
    use super::close_code::{PROTOCOL, REFUSED, REVOKED};
    let Some(reason) = reason else { return ClientError::ClosedEarly("connection closed".into()) };
    let text = reason.to_string();
    match reason {
        quinn::ConnectionError::ApplicationClosed(c)
            if [REFUSED, REVOKED, PROTOCOL].map(quinn::VarInt::from_u32).contains(&c.error_code) =>
        {
            ClientError::Refused(text)
        }
        // TLS alerts are the transport's crypto errors, 0x100 to 0x1ff (RFC 9001 §4.8).
        quinn::ConnectionError::ConnectionClosed(c) if (0x100..=0x1ff).contains(&u64::from(c.error_code)) => {
            ClientError::Refused(text)
        }
        _ => ClientError::ClosedEarly(text),
    }
}

/// With several hubs, a session from which nothing at all has arrived for this long is
/// given up for the next hub. Both ends send keep-alives every second, so a live hub is heard
/// at least that often; a hub that died (SIGKILL, a power cut) says nothing, and QUIC's idle
/// timeout (6 s) would notice it only later. With one hub there is nowhere else to go: the
/// session waits for the idle timeout, and a network outage shorter than that is ridden out.
/// The default of `[hub] silent_ms`.
pub const HUB_SILENT: Duration = Duration::from_millis(2500);

/// The silences a deployment may set, in ms: above two keep-alives, below QUIC's idle timeout.
pub const SILENT_RANGE_MS: std::ops::RangeInclusive<u64> = 1500..=5500;

/// Resolves once nothing has arrived on `conn` for `limit` (checked every 250 ms).
pub async fn silence(conn: &Connection, limit: Duration) {
    let step = Duration::from_millis(250);
    let mut heard = conn.stats().udp_rx.datagrams;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = conn.stats().udp_rx.datagrams;
        if now != heard {
            heard = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

/// Watches `conn` for `limit` of silence (when there are other hubs to go to): then closes it,
/// and the returned flag says so (the client tries the next hub first).
pub fn close_when_silent(
    conn: &Connection,
    limit: Duration,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (conn, set) = (conn.clone(), flag.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = silence(&conn, limit) => {
                set.store(true, std::sync::atomic::Ordering::Relaxed);
                conn.close(quinn::VarInt::from_u32(super::close_code::NORMAL), b"hub silent");
            }
            _ = conn.closed() => {}
        }
    });
    flag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::net::close_code;

    fn closed(code: u32, reason: &'static str) -> Option<quinn::ConnectionError> {
        Some(quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: reason.as_bytes().to_vec().into(),
        }))
    }

    #[test]
    fn a_hub_shutting_down_before_the_welcome_is_tried_again_and_a_refusal_is_not() {
        for transient in
            [closed(close_code::SHUTDOWN, "hub shutting down"), closed(close_code::NORMAL, ""), None]
        {
            let e = closed_before_welcome(transient.clone());
            assert!(!e.is_refusal(), "{transient:?}: {e}");
        }
        assert!(!closed_before_welcome(Some(quinn::ConnectionError::TimedOut)).is_refusal());
        for refusal in [close_code::REFUSED, close_code::REVOKED, close_code::PROTOCOL] {
            let e = closed_before_welcome(closed(refusal, "no"));
            assert!(e.is_refusal(), "code {refusal}: {e}");
        }
        // TLS refusing the certificate (alert 44, certificate_revoked) is a refusal.
        let alert = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(44),
            frame_type: None,
            reason: b"certificate revoked".to_vec().into(),
        });
        assert!(closed_before_welcome(Some(alert)).is_refusal());
    }
}
