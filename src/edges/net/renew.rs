//! On-line certificate renewal, the kiosk's and the agent's side, at the edge: a new key and
//! its request, the hub's answer checked, and the certificate and key files replaced so that a
//! crash at any moment leaves a pair that works (the old one or the new one, never a mix).
//! When to renew and when to try again is the sans-IO [`crate::protocol::renewal`] core's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use tracing::{info, warn};

use super::tls::{Identity, TlsMaterial, client_config, identity_from_cert, not_after, verify_client_chain};
use crate::protocol::renewal::{Renewal, RenewalPolicy};
use crate::protocol::{ClientMsg, HubMsg};

/// Why a renewal failed (it is tried again later).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    #[error("making the request: {0}")]
    Request(String),
    #[error("the hub refused: {0}")]
    Refused(String),
    #[error("the hub's certificate is not acceptable: {0}")]
    BadCertificate(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the hub within {0} s")]
    NoAnswer(u64),
}

/// A new key and the request for a certificate on it.
pub struct Request {
    key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Request").field("csr_pem", &self.csr_pem).finish_non_exhaustive()
    }
}

/// A fresh ECDSA P-256 key and a signed request naming `ident` (the hub does not take the
/// name from the request: it issues for the identity of the connection).
pub fn request(ident: &Identity) -> Result<Request, RenewError> {
    let bad = |e: rcgen::Error| RenewError::Request(e.to_string());
    let key = KeyPair::generate().map_err(bad)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "kioskd");
    params.distinguished_name.push(DnType::OrganizationalUnitName, ident.role.as_str());
    params.distinguished_name.push(DnType::CommonName, ident.id.as_str());
    let csr_pem = params.serialize_request(&key).map_err(bad)?.pem().map_err(bad)?;
    Ok(Request { key_pem: key.serialize_pem(), csr_pem })
}

/// Checks the hub's answer to `req` and returns the material to use from the next connection:
/// the same identity as `old`, on the new key, a chain to the deployment's CA, valid at
/// `now_unix`. Anything else is refused, so that renewal can never change who a party is.
pub fn check_renewed(
    chain_pem: &str,
    req: &Request,
    old: &TlsMaterial,
    now_unix: i64,
) -> Result<TlsMaterial, RenewError> {
    let bad = |e: String| RenewError::BadCertificate(e);
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let leaf = chain.first().ok_or_else(|| bad("no certificate".into()))?;
    let new_ident = identity_from_cert(leaf).map_err(|e| bad(e.to_string()))?;
    let old_ident = old.identity().map_err(|e| bad(format!("the current certificate: {e}")))?;
    if new_ident != old_ident {
        return Err(bad(format!(
            "it names {} `{}`, this is {} `{}`",
            new_ident.role, new_ident.id, old_ident.role, old_ident.id
        )));
    }
    let key = KeyPair::from_pem(&req.key_pem).map_err(|e| RenewError::Request(e.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(bad("it is not for the key this kiosk made".into()));
    }
    verify_client_chain(&old.ca, &chain, now_unix).map_err(bad)?;
    let key_der = PrivateKeyDer::from_pem_slice(req.key_pem.as_bytes())
        .map_err(|e| RenewError::Request(e.to_string()))?;
    Ok(TlsMaterial { ca: old.ca.clone(), chain, key: key_der })
}

/// What the health file says of the certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateHealth {
    pub expires_in_days: i64,
    pub renewed: u32,
    pub renewal_failures: u32,
    /// The last renewal failure, until a renewal succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_error: Option<String>,
}

/// A renewer shared by the link (which drives it) and the health report (which reads it);
/// locked briefly, never across an await.
pub type SharedRenewer = std::sync::Arc<std::sync::Mutex<Renewer>>;

/// Locks a shared renewer (its state stays whole even if a holder panicked).
pub fn lock(r: &SharedRenewer) -> std::sync::MutexGuard<'_, Renewer> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One party's renewal at the edge: makes the request when the [`Renewal`] core says so,
/// checks and installs the answer, and has the client configuration for the next connection.
pub struct Renewer {
    files: CertFiles,
    material: TlsMaterial,
    core: Renewal,
    pending: Option<Request>,
    next_config: Option<quinn::ClientConfig>,
    /// The health after each renewal or failure (tests and reports wait on it).
    changes: tokio::sync::watch::Sender<CertificateHealth>,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("files", &self.files)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// For the party whose current material is `material`, read from `files`.
    pub fn new(files: CertFiles, material: TlsMaterial, policy: RenewalPolicy) -> Result<Self, RenewError> {
        let leaf =
            material.chain.first().ok_or_else(|| RenewError::BadCertificate("no certificate".into()))?;
        let until = not_after(leaf).map_err(|e| RenewError::BadCertificate(e.to_string()))?;
        let core = Renewal::new(policy, until);
        let (changes, _) = tokio::sync::watch::channel(CertificateHealth::default());
        Ok(Self { files, material, core, pending: None, next_config: None, changes })
    }

    /// A shared renewer.
    pub fn shared(self) -> SharedRenewer {
        std::sync::Arc::new(std::sync::Mutex::new(self))
    }

    /// On a welcomed connection, and then whenever [`Renewer::next_wake`] comes: the request
    /// to send, when one is due.
    pub fn poll(&mut self) -> Option<ClientMsg> {
        self.poll_at(unix_now())
    }

    pub fn poll_at(&mut self, now: i64) -> Option<ClientMsg> {
        if self.core.check_timeout(now) {
            self.pending = None;
            self.report_failure();
        }
        if !self.core.due(now) {
            return None;
        }
        let ident = match self.material.identity() {
            Ok(i) => i,
            Err(e) => {
                self.core.failed(now, e.to_string());
                self.report_failure();
                return None;
            }
        };
        match request(&ident) {
            Ok(req) => {
                let days = self.core.days_left(now);
                info!(days, "asking the hub to renew this certificate");
                let msg = ClientMsg::Renew { csr: req.csr_pem.clone() };
                self.pending = Some(req);
                self.core.asked(now);
                Some(msg)
            }
            Err(e) => {
                self.core.failed(now, e.to_string());
                self.report_failure();
                None
            }
        }
    }

    /// Takes the hub's answers to a renewal request; false for every other message.
    pub fn handle(&mut self, msg: &HubMsg) -> bool {
        self.handle_at(msg, unix_now())
    }

    pub fn handle_at(&mut self, msg: &HubMsg, now: i64) -> bool {
        let outcome = match msg {
            HubMsg::Renewed { chain } => self.install(chain, now),
            HubMsg::RenewRefused { reason } => Err(RenewError::Refused(reason.clone())),
            _ => return false,
        };
        if let Err(e) = outcome {
            self.pending = None;
            self.core.failed(now, e.to_string());
            self.report_failure();
        }
        true
    }

    fn install(&mut self, chain: &str, now: i64) -> Result<(), RenewError> {
        let req = self.pending.take().ok_or_else(|| RenewError::BadCertificate("not asked for".into()))?;
        let new = check_renewed(chain, &req, &self.material, now)?;
        let config = client_config(&new).map_err(|e| RenewError::BadCertificate(e.to_string()))?;
        self.files.install(chain, &req)?;
        let until = new.chain.first().and_then(|c| not_after(c).ok()).unwrap_or(now);
        self.core.renewed(until);
        self.material = new;
        self.next_config = Some(config);
        self.changes.send_replace(self.health());
        info!(
            days = self.core.days_left(now),
            cert = %self.files.cert.display(),
            "certificate renewed; used from the next connection"
        );
        Ok(())
    }

    /// Sees the health after every renewal and failure.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<CertificateHealth> {
        self.changes.subscribe()
    }

    fn report_failure(&self) {
        self.changes.send_replace(self.health());
        let s = self.core.status();
        warn!(
            error = s.last_error.as_deref().unwrap_or(""),
            failures = s.failures,
            retry_at_unix = self.core.next_wake(),
            "certificate renewal failed; it is tried again"
        );
    }

    /// The connection that carried a request is gone.
    pub fn connection_lost(&mut self) {
        if self.pending.take().is_some() {
            self.core.connection_lost(unix_now());
            self.report_failure();
        }
    }

    /// The client configuration with the renewed certificate, once, for the next connection.
    pub fn take_client_config(&mut self) -> Option<quinn::ClientConfig> {
        self.next_config.take()
    }

    /// When to call [`Renewer::poll`] next (Unix seconds).
    pub fn next_wake(&self) -> i64 {
        self.core.next_wake()
    }

    /// Seconds from now until [`Renewer::next_wake`] (0 when due), at most a day.
    pub fn wake_in(&self) -> std::time::Duration {
        let secs = (self.next_wake().saturating_sub(unix_now())).clamp(0, 86_400);
        std::time::Duration::from_secs(secs as u64)
    }

    pub fn health(&self) -> CertificateHealth {
        let s = self.core.status();
        CertificateHealth {
            expires_in_days: self.core.days_left(unix_now()),
            renewed: s.renewed,
            renewal_failures: s.failures,
            renewal_error: s.last_error.clone(),
        }
    }
}

/// A party's certificate and key files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn next(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".next");
        path.with_file_name(name)
    }

    /// Replaces the pair with the renewed one. The new key and certificate are first written
    /// whole beside the old ones (`*.next`), then moved over them, key first; a crash between
    /// the two moves is finished by [`CertFiles::finish_pending`] at the next start.
    pub fn install(&self, chain_pem: &str, req: &Request) -> Result<(), RenewError> {
        let (key_next, cert_next) = (Self::next(&self.key), Self::next(&self.cert));
        write_durably(&key_next, &req.key_pem, 0o600)?;
        write_durably(&cert_next, chain_pem, 0o644)?;
        rename(&key_next, &self.key)?;
        rename(&cert_next, &self.cert)?;
        sync_dir(&self.cert)
    }

    /// Finishes or undoes a replacement that a crash interrupted; says what it did.
    pub fn finish_pending(&self) -> Result<Option<&'static str>, RenewError> {
        let (key_next, cert_next) = (Self::next(&self.key), Self::next(&self.cert));
        let done = match (key_next.exists(), cert_next.exists()) {
            (_, true) => {
                if key_next.exists() {
                    rename(&key_next, &self.key)?;
                }
                rename(&cert_next, &self.cert)?;
                Some("a renewal interrupted before its end was finished")
            }
            (true, false) => {
                // The certificate had not been written: the old pair is still whole.
                fs::remove_file(&key_next).map_err(|source| RenewError::Io { path: key_next, source })?;
                Some("an unfinished renewal was discarded (the current certificate stays)")
            }
            (false, false) => None,
        };
        if done.is_some() {
            sync_dir(&self.cert)?;
        }
        Ok(done)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), RenewError> {
    fs::rename(from, to).map_err(|source| RenewError::Io { path: to.into(), source })
}

/// Writes `path` through a temporary file, synced before it is renamed into place.
fn write_durably(path: &Path, contents: &str, mode: u32) -> Result<(), RenewError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let io = |source| RenewError::Io { path: tmp.clone(), source };
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    rename(&tmp, path)
}

fn sync_dir(file: &Path) -> Result<(), RenewError> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| RenewError::Io { path: dir.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::net::certs::Authority;
    use crate::protocol::Role;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn setup() -> (Authority, Authority, TlsMaterial) {
        let root = Authority::generate("root", 30).unwrap();
        let sub = root.issue_renewal_ca("renewal", 30).unwrap();
        let old = root.issue(Role::Kiosk, "branch-1/kiosk-1", &[], &[], 10).unwrap().material(&root).unwrap();
        (root, sub, old)
    }

    #[test]
    fn a_renewed_certificate_keeps_the_identity_and_chains_to_the_root() {
        let (_root, sub, old) = setup();
        let ident = old.identity().unwrap();
        let req = request(&ident).unwrap();
        let chain = sub.renew(ident.role, &ident.id, &req.csr_pem, 90).unwrap();
        let new = check_renewed(&chain, &req, &old, now()).unwrap();
        assert_eq!(new.identity().unwrap(), ident);
        assert_eq!(new.chain.len(), 2, "the new certificate and the renewal CA's");
    }

    #[test]
    fn renewal_cannot_change_the_identity() {
        let (_root, sub, old) = setup();
        // Whatever the request names, the hub signs for the identity it was given...
        let other = Identity { role: Role::Agent, id: "agent-9".into() };
        let req = request(&other).unwrap();
        let chain = sub.renew(Role::Kiosk, "branch-1/kiosk-1", &req.csr_pem, 90).unwrap();
        assert_eq!(
            check_renewed(&chain, &req, &old, now()).unwrap().identity().unwrap().id,
            "branch-1/kiosk-1"
        );
        // ...and a party refuses a certificate for anyone else.
        let req = request(&old.identity().unwrap()).unwrap();
        let chain = sub.renew(Role::Agent, "agent-9", &req.csr_pem, 90).unwrap();
        assert!(matches!(check_renewed(&chain, &req, &old, now()), Err(RenewError::BadCertificate(_))));
        assert!(sub.renew(Role::Hub, "hub", &req.csr_pem, 90).is_err(), "no hub certificates");
    }

    #[test]
    fn foreign_keys_and_foreign_authorities_are_refused() {
        let (_root, sub, old) = setup();
        let ident = old.identity().unwrap();
        let (mine, theirs) = (request(&ident).unwrap(), request(&ident).unwrap());
        let chain = sub.renew(ident.role, &ident.id, &theirs.csr_pem, 90).unwrap();
        assert!(check_renewed(&chain, &mine, &old, now()).is_err(), "another key");
        let stranger = Authority::generate("stranger", 30).unwrap().issue_renewal_ca("x", 30).unwrap();
        let chain = stranger.renew(ident.role, &ident.id, &mine.csr_pem, 90).unwrap();
        assert!(check_renewed(&chain, &mine, &old, now()).is_err(), "another CA");
        assert!(sub.renew(ident.role, &ident.id, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", 90).is_err());
        let mut tampered = mine.csr_pem.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(sub.renew(ident.role, &ident.id, &String::from_utf8(tampered).unwrap(), 90).is_err());
    }

    #[test]
    fn an_interrupted_install_leaves_a_working_pair() {
        let (root, sub, old) = setup();
        let dir = tempfile::tempdir().unwrap();
        let issued = root.issue(Role::Kiosk, "branch-1/kiosk-1", &[], &[], 10).unwrap();
        let (cert, key) = issued.write(dir.path(), "kiosk").unwrap();
        let files = CertFiles { cert: cert.clone(), key: key.clone() };
        let req = request(&old.identity().unwrap()).unwrap();
        let chain = sub.renew(Role::Kiosk, "branch-1/kiosk-1", &req.csr_pem, 90).unwrap();
        let (key_next, cert_next) = (CertFiles::next(&key), CertFiles::next(&cert));
        let pair = || (fs::read_to_string(&cert).unwrap(), fs::read_to_string(&key).unwrap());
        let old_pair = pair();
        // Crash 1: only the new key written. The old pair stays.
        fs::write(&key_next, &req.key_pem).unwrap();
        assert!(files.finish_pending().unwrap().is_some());
        assert_eq!(pair(), old_pair);
        assert!(!key_next.exists());
        // Crash 2: both written, neither moved. Crash 3: the key moved, not the certificate.
        for moved_key in [false, true] {
            fs::write(&key_next, &req.key_pem).unwrap();
            fs::write(&cert_next, &chain).unwrap();
            if moved_key {
                fs::rename(&key_next, &key).unwrap();
            }
            assert!(files.finish_pending().unwrap().is_some());
            assert_eq!(pair(), (chain.clone(), req.key_pem.clone()));
            fs::write(&cert, &old_pair.0).unwrap();
            fs::write(&key, &old_pair.1).unwrap();
        }
        assert_eq!(files.finish_pending().unwrap(), None);
        files.install(&chain, &req).unwrap();
        assert_eq!(pair(), (chain, req.key_pem.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(dir.path().join("ca.pem"), &root.cert_pem).unwrap();
        let loaded = TlsMaterial::load(&dir.path().join("ca.pem"), &cert, &key).unwrap();
        verify_client_chain(&loaded.ca, &loaded.chain, now()).unwrap();
    }
}
