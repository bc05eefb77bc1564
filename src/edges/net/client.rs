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

/// A client endpoint bound to an ephemeral port of the right address family.
/// Where the hub is and how to reach it.
#[derive(Clone)]
pub struct HubTarget {
    pub address: String,
    pub server_name: String,
    pub client: quinn::ClientConfig,
}

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
    connecting.await.map_err(|e| ClientError::Connect(addr, e.to_string()))
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
        Err(ControlError::Read(_) | ControlError::Closed) => {
            let reason =
                conn.close_reason().map_or_else(|| "connection closed".to_string(), |r| r.to_string());
            Err(ClientError::Refused(reason))
        }
        Err(e) => Err(e.into()),
    }
}
