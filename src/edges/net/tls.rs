//! rustls and quinn configurations: TLS 1.3 only, the ring provider only, ALPN `kioskd/1`,
//! mutual TLS against the deployment's own CA. A peer's role and id are read from its
//! certificate (OU and CN), never from what it says.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::protocol::{ALPN, MAX_ID_BYTES, Role};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The message carries the cause (not a source too, or `{:#}` would print it twice).
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: rustls::pki_types::pem::Error },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("certificate has no kioskd role (OU must be kiosk, agent or hub)")]
    NoRole,
    #[error("certificate id (CN) is missing or invalid: {0}")]
    BadId(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// Who a peer is, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub id: String,
}

/// The certificates and key of one process, and the CA it trusts.
#[derive(Debug)]
pub struct TlsMaterial {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self { ca: self.ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl TlsMaterial {
    /// Loads PEM files: the CA certificate(s), this process's certificate chain and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self { ca: read_certs(ca)?, chain: read_certs(cert)?, key: read_key(key)? })
    }

    /// The identity written in this process's own certificate.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let leaf = self.chain.first().ok_or_else(|| TlsError::NoCertificate("chain".into()))?;
        identity_from_cert(leaf)
    }
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |error| TlsError::Read { path: path.display().to_string(), error };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| TlsError::Read { path: path.display().to_string(), error })
}

/// Reads role (OU) and id (CN) from a DER certificate.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let role = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .find_map(|ou| ou.parse::<Role>().ok())
        .ok_or(TlsError::NoRole)?;
    let id = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::BadId("no common name".into()))?;
    validate_id(id).map_err(TlsError::BadId)?;
    Ok(Identity { role, id: id.to_string() })
}

/// Ids are printable names such as `branch-12/kiosk-3`: letters, digits and `-_./@`,
/// 1 to 128 bytes.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("`{id}` must be 1 to {MAX_ID_BYTES} bytes"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_./@".contains(*c))) {
        return Err(format!("`{id}` contains `{c}`; use letters, digits and - _ . / @"));
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    Ok(roots)
}

/// QUIC congestion control, chosen per process (`congestion` in each configuration file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Paces at the measured bottleneck rate and keeps the path's queue short. Measured with
    /// `kioskd bench` (80 ms round trip: audio p95 144 ms against 908 ms with Cubic; 500 kbit/s
    /// link: video shown 65 % against 23 %), it is the default.
    #[default]
    Bbr,
    /// quinn's default, loss-based: fills the bottleneck's buffer before it backs off.
    Cubic,
    NewReno,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bbr" => Ok(Self::Bbr),
            "cubic" => Ok(Self::Cubic),
            "newreno" => Ok(Self::NewReno),
            other => Err(format!("unknown congestion control `{other}` (bbr, cubic or newreno)")),
        }
    }
}

static CONGESTION: std::sync::OnceLock<Congestion> = std::sync::OnceLock::new();

/// Sets the congestion control of every connection this process makes or accepts from now
/// on. Only the first call counts (a process runs one role); without one, [`Congestion::Bbr`].
pub fn set_congestion(c: Congestion) {
    let _ = CONGESTION.set(c);
}

/// The hub's QUIC endpoint on `listen`. Its stateless-reset key is derived from the hub's
/// own private key (SHA-256 of a label and the key), so that the same hub started again
/// answers the packets of its previous run's connections with a reset those peers accept
/// (RFC 9000 §10.3): kiosks and agents learn at their next keep-alive that the hub restarted
/// and reconnect at once, instead of waiting for the 6 s idle timeout. The token (an HMAC of
/// the connection id) gives away nothing of the key.
pub fn server_endpoint(
    config: quinn::ServerConfig,
    listen: std::net::SocketAddr,
    key: &PrivateKeyDer<'_>,
) -> std::io::Result<quinn::Endpoint> {
    let derived = |label: &[u8]| {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(label);
        digest.update(key.secret_der());
        digest.finish()
    };
    let reset_key =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived(b"kioskd stateless reset v1").as_ref());
    // The connection ids carry a keyed check that the endpoint validates before it answers
    // with a reset; the same key across restarts recognises the previous run's ids.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&derived(b"kioskd connection ids v1").as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = std::net::UdpSocket::bind(listen)?;
    quinn::Endpoint::new(endpoint, Some(config), socket, Arc::new(quinn::TokioRuntime))
}

/// Transport settings shared by both ends: fast detection of a lost peer (a kiosk must show
/// "offline" within seconds), keep-alives below the idle timeout, the congestion control.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(6_000))));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // Media: each video frame travels on its own unidirectional stream (a few are open at once).
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(64));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    // Audio datagrams waiting to be sent: 4 KiB, about 400 ms of Opus at 32 kbit/s with its
    // headers, less with redundancy copies. When the path is congested or gone, older ones are
    // dropped first, so that sound stays fresh instead of replaying a backlog (16 KiB held
    // seconds of it on a 500 kbit/s link).
    t.datagram_send_buffer_size(4 * 1024);
    match CONGESTION.get().copied().unwrap_or_default() {
        Congestion::Bbr => t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
        Congestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        Congestion::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        }
    };
    t
}

/// The hub's QUIC server configuration: a client certificate from the CA is required.
pub fn server_config(m: &TlsMaterial) -> Result<quinn::ServerConfig, TlsError> {
    server_config_revoking(m, &Revocations::default())
}

/// As [`server_config`], refusing the client certificates that `revoked` names.
pub fn server_config_revoking(
    m: &TlsMaterial,
    revoked: &Revocations,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&m.ca)?), provider.clone());
    if !revoked.crls.is_empty() {
        // The list is the root's: webpki checks the certificates the root issued against it; a
        // certificate from the renewal CA has no list of its issuer's, and is checked by its
        // serial below (serials are random, 16 bytes: the same across both).
        builder = builder
            .with_crls(revoked.crls.clone())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier: Arc<dyn ClientCertVerifier> = if revoked.serials.is_empty() {
        builder.build()?
    } else {
        Arc::new(RevokingVerifier { inner: builder.build()?, serials: revoked.serials.clone() })
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0; // no 0-RTT: every connection proves its identity first
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// The hub's browser console over HTTPS: TLS 1.3 with the hub's certificate. A client
/// certificate is not required (advisors sign in with a password), but one the browser
/// presents must come from the deployment's CA; the console then takes its identity from it.
pub fn console_server_config(m: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&m.ca)?), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tls.max_early_data_size = 0;
    Ok(Arc::new(tls))
}

/// A kiosk's or agent's QUIC client configuration: presents its certificate and accepts only a
/// hub certificate from the CA.
pub fn client_config(m: &TlsMaterial) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(&m.ca)?),
        provider.clone(),
    )
    .build()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous() // only to add the role check on top of full WebPKI verification
        .with_custom_certificate_verifier(Arc::new(HubVerifier { inner }))
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// WebPKI verification of the hub's certificate, plus: its role must be `hub`, so that a stolen
/// kiosk certificate cannot impersonate the hub.
#[derive(Debug)]
struct HubVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for HubVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        match identity_from_cert(end_entity) {
            Ok(Identity { role: Role::Hub, .. }) => Ok(verified),
            _ => {
                Err(rustls::Error::General("the server's certificate is not a kioskd hub certificate".into()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a client chain (leaf first) against `ca` the way the hub does, at `now_unix`.
pub fn verify_client_chain(
    ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    now_unix: i64,
) -> Result<(), String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca).map_err(|e| e.to_string())?),
        provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    let now = UnixTime::since_unix_epoch(Duration::from_secs(now_unix.max(0) as u64));
    verifier.verify_client_cert(leaf, rest, now).map(drop).map_err(|e| e.to_string())
}

/// The end of a DER certificate's validity, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Result<i64, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The end of a connection's peer certificate's validity (Unix seconds).
pub fn peer_not_after(conn: &quinn::Connection) -> Option<i64> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    not_after(certs.first()?).ok()
}

/// The CA's verification, then a refusal of every certificate whose serial the revocation list
/// names, whichever CA of the deployment issued it.
#[derive(Debug)]
struct RevokingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    serials: std::collections::HashSet<Vec<u8>>,
}

impl ClientCertVerifier for RevokingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match serial_of(end_entity) {
            Ok(serial) if !self.serials.contains(&serial) => Ok(verified),
            Ok(_) => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)),
            Err(e) => Err(rustls::Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The serial number of a DER certificate (its bytes, as in a revocation list).
pub fn serial_of(der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    Ok(cert.raw_serial().to_vec())
}

/// The serial number of a connection's peer certificate.
pub fn peer_serial(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    serial_of(certs.first()?).ok()
}

/// A certificate revocation list read from a file: as rustls takes it, and the serials it
/// names.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    pub crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
    pub serials: std::collections::HashSet<Vec<u8>>,
}

impl Revocations {
    /// Reads PEM CRLs from `path` (at least one).
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        use rustls::pki_types::CertificateRevocationListDer;
        let read_err = |error| TlsError::Read { path: path.display().to_string(), error };
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(read_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        if crls.is_empty() {
            return Err(TlsError::Parse(format!("{}: no revocation list", path.display())));
        }
        let mut serials = std::collections::HashSet::new();
        for crl in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(crl)
                .map_err(|e| TlsError::Parse(format!("{}: {e}", path.display())))?;
            serials.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
        }
        Ok(Self { crls, serials })
    }
}

/// The identity in a connection's peer certificate.
pub fn peer_identity(conn: &quinn::Connection) -> Result<Identity, TlsError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| TlsError::NoCertificate("the peer".into()))?;
    let leaf = certs.first().ok_or_else(|| TlsError::NoCertificate("the peer".into()))?;
    identity_from_cert(leaf)
}
