//! A deployment's certificate authority and the certificates it issues (`kioskd certs`).
//!
//! Every certificate carries the peer's role in OU (`hub`, `kiosk`, `agent`) and its id in CN
//! (`branch-12/kiosk-3`). Keys are ECDSA P-256, written with mode 0600.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration as TimeDuration, OffsetDateTime};

use super::tls::{Identity, TlsMaterial, not_after, serial_of, validate_id};
use crate::protocol::MAX_CHAIN_BYTES;
use crate::protocol::Role;

/// Validity of the certificates that `kioskd demo` and `kioskd bench` make for one run: they
/// live in memory (or a temporary folder) only and die with the process. Longer than the hub's
/// 30-day expiry warning, so that a demo does not warn about its own throwaway certificates.
pub const EPHEMERAL_DAYS: i64 = 60;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A CA in memory: its certificate (PEM) and key.
pub struct Authority {
    pub cert_pem: String,
    key: KeyPair,
}

/// An issued certificate and key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// As rustls material trusting `ca`.
    pub fn material(&self, ca: &Authority) -> Result<TlsMaterial, CertError> {
        use rustls::pki_types::pem::PemObject;
        let bad = |e: rustls::pki_types::pem::Error| CertError::Invalid(e.to_string());
        Ok(TlsMaterial {
            ca: vec![CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(bad)?],
            chain: vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(bad)?],
            key: PrivateKeyDer::Pkcs8(
                PrivatePkcs8KeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(bad)?,
            ),
        })
    }
}

impl Authority {
    /// A new CA named `name`, valid for `days`.
    pub fn generate(name: &str, days: i64) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(name, days, 1).self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key })
    }

    /// Loads a CA written by [`Authority::write`].
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        Ok(Self { cert_pem, key })
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`; refuses to overwrite a CA.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.into(), source })?;
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            return Err(CertError::Invalid(format!(
                "{} exists; a CA is never overwritten (remove it by hand to start a new deployment)",
                key_path.display()
            )));
        }
        write_file(&key_path, &self.key.serialize_pem(), 0o600)?;
        write_file(&dir.join("ca.pem"), &self.cert_pem, 0o644)
    }

    /// Issues a certificate for `role`/`id`. A hub certificate also names `dns` and `ips`
    /// (what kiosks connect to).
    pub fn issue(
        &self,
        role: Role,
        id: &str,
        dns: &[String],
        ips: &[IpAddr],
        days: i64,
    ) -> Result<Issued, CertError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut params = leaf_params(role, id, days)?;
        if role == Role::Hub {
            for name in dns {
                let name = name
                    .clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CertError::Invalid(format!("DNS name `{name}`: {e}")))?;
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
            if params.subject_alt_names.is_empty() {
                return Err(CertError::Invalid(
                    "a hub certificate needs at least one --dns name or --ip".into(),
                ));
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A renewal CA signed by this (root) CA: it may issue kiosk and agent certificates, never
    /// another CA (path length 0). A hub holds it to renew certificates on line, so that the
    /// root's key stays offline.
    pub fn issue_renewal_ca(&self, name: &str, days: i64) -> Result<Authority, CertError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let key = KeyPair::generate()?;
        let mut params = ca_params(name, days, 0);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self { cert_pem: cert.pem(), key })
    }

    #[cfg(test)]
    fn load_pem(other: &Authority) -> Authority {
        Authority {
            cert_pem: other.cert_pem.clone(),
            key: KeyPair::from_pem(&other.key.serialize_pem()).unwrap(),
        }
    }

    /// Loads a CA from its certificate and key files.
    pub fn load_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let cert_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?)?;
        Ok(Self { cert_pem, key })
    }

    /// Signs a renewal request: a new certificate for `role`/`id` — the identity the requester
    /// proved in its TLS handshake, whatever the request's own subject says — for the public key
    /// in `csr_pem` (its signature proves the requester holds that key). Returns the chain
    /// (the new certificate, then this CA's) in PEM.
    pub fn renew(&self, role: Role, id: &str, csr_pem: &str, days: i64) -> Result<String, CertError> {
        if role == Role::Hub {
            return Err(CertError::Invalid("hub certificates are not renewed on line".into()));
        }
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CertError::Invalid(format!("certificate request: {e}")))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CertError::Invalid("certificate request: the key must be ECDSA P-256".into()));
        }
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let request = rcgen::CertificateSigningRequestParams {
            params: leaf_params(role, id, days)?,
            public_key: csr.public_key,
        };
        let cert = request.signed_by(&issuer)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }

    /// A certificate revocation list naming `serials`, signed by this CA; `number` is the
    /// list's sequence number (higher for a newer list).
    pub fn revocation_list(&self, serials: &[Vec<u8>], number: u64) -> Result<String, CertError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - TimeDuration::minutes(5),
            next_update: now + TimeDuration::days(365),
            crl_number: rcgen::SerialNumber::from(number.to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(s),
                    revocation_time: now - TimeDuration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&issuer)?.pem()?)
    }
}

/// Checks that `ca` can serve as a renewal CA for a deployment trusting `roots`: a CA
/// certificate, not self-signed (the root's key must stay offline), signed by one of `roots`,
/// with the key that goes with it.
pub fn check_renewal_ca(ca: &Authority, roots: &[CertificateDer<'static>]) -> Result<(), CertError> {
    use rcgen::PublicKeyData;
    use rustls::pki_types::pem::PemObject;
    let bad = |m: String| CertError::Invalid(m);
    let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    if !cert.is_ca() {
        return Err(bad("not a CA certificate".into()));
    }
    if cert.public_key().raw != ca.key.subject_public_key_info().as_slice() {
        return Err(bad("the key is not this certificate's".into()));
    }
    if cert.subject() == cert.issuer() {
        return Err(bad(
            "this is a root (self-signed) CA; give the hub a renewal CA made with `kioskd certs renewal-ca`, and keep the root's key offline".into(),
        ));
    }
    let signed_by_root = roots.iter().any(|r| {
        x509_parser::parse_x509_certificate(r)
            .is_ok_and(|(_, root)| cert.verify_signature(Some(root.public_key())).is_ok())
    });
    if !signed_by_root {
        return Err(bad("not signed by the deployment's CA (tls.ca)".into()));
    }
    Ok(())
}

/// What a hub needs to renew certificates.
pub struct RenewalIssuer {
    pub ca: Authority,
    /// Validity of a renewed certificate, in days.
    pub days: i64,
    /// The folder of the register of renewed certificates (its `issued.jsonl`; by default the
    /// renewal CA's own folder).
    pub register_dir: PathBuf,
    /// One renewal at a time writes the register.
    lock: Mutex<()>,
}

impl RenewalIssuer {
    pub fn new(ca: Authority, days: i64, register_dir: PathBuf) -> Self {
        Self { ca, days, register_dir, lock: Mutex::new(()) }
    }

    /// Signs a renewal for `ident` (the connection's identity): the chain, and a line for the
    /// event log; or why not.
    pub fn sign(&self, ident: &Identity, csr: &str) -> Result<(String, String), String> {
        if ident.role == Role::Hub {
            return Err("hub certificates are not renewed on line".into());
        }
        let chain = self.ca.renew(ident.role, &ident.id, csr, self.days).map_err(|e| e.to_string())?;
        if chain.len() > MAX_CHAIN_BYTES {
            return Err(format!("the chain is {} bytes, over {MAX_CHAIN_BYTES}", chain.len()));
        }
        let leaf_pem = chain.split_inclusive("-----END CERTIFICATE-----").next().unwrap_or_default();
        {
            let _one = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            record_issued(&self.register_dir, &ident.id, ident.role, leaf_pem)
                .map_err(|e| format!("the register of renewed certificates: {e}"))?;
        }
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(leaf_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        let serial = serial_of(&der).map_err(|e| e.to_string())?;
        let until = not_after(&der).map_err(|e| e.to_string())?;
        let until = time::OffsetDateTime::from_unix_timestamp(until)
            .map(|t| t.date().to_string())
            .unwrap_or_default();
        Ok((chain, format!("serial {} valid until {until}", hex(&serial))))
    }
}

/// The renewal CA's folder inside the root CA's (`kioskd certs renewal-ca`): its `ca.pem`,
/// `ca.key` and the register of what it issued, `issued.jsonl`.
pub const RENEWAL_DIR: &str = "renewal";

/// One line of the CA folder's register of issued certificates (`issued.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IssuedRecord {
    pub id: String,
    pub role: String,
    /// The serial number, hex.
    pub serial: String,
}

/// What `kioskd certs revoke` did.
#[derive(Debug)]
pub struct Revoked {
    /// Serials newly revoked (hex).
    pub serials: Vec<String>,
    /// Serials the list names now, in all.
    pub total: usize,
    pub crl: PathBuf,
}

/// Appends an issued certificate to `dir/issued.jsonl` (what a revocation looks up).
pub fn record_issued(dir: &Path, id: &str, role: Role, cert_pem: &str) -> Result<(), CertError> {
    use rustls::pki_types::pem::PemObject;
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CertError::Invalid(e.to_string()))?;
    let serial = super::tls::serial_of(&der).map_err(|e| CertError::Invalid(e.to_string()))?;
    let rec = IssuedRecord { id: id.into(), role: role.as_str().into(), serial: hex(&serial) };
    let line = serde_json::to_string(&rec).map_err(|e| CertError::Invalid(e.to_string()))? + "\n";
    append(&dir.join("issued.jsonl"), &line)
}

/// Revokes every certificate issued for `id` (from the register) and the certificate in
/// `cert_file` when given, and writes `dir/crl.pem` (atomically: the hub may be reading it).
pub fn revoke(dir: &Path, id: Option<&str>, cert_file: Option<&Path>) -> Result<Revoked, CertError> {
    let ca = Authority::load(dir)?;
    let mut new: Vec<String> = Vec::new();
    if let Some(id) = id {
        // The root's register, and the renewal CA's (what a hub renewed on line).
        for register in [dir.join("issued.jsonl"), dir.join(RENEWAL_DIR).join("issued.jsonl")] {
            let text = fs::read_to_string(&register).unwrap_or_default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let rec: IssuedRecord = serde_json::from_str(line)
                    .map_err(|e| CertError::Invalid(format!("{}: {e}", register.display())))?;
                if rec.id == id {
                    new.push(rec.serial);
                }
            }
        }
        if new.is_empty() && cert_file.is_none() {
            return Err(CertError::Invalid(format!(
                "no certificate for `{id}` in {}/issued.jsonl or {RENEWAL_DIR}/issued.jsonl (give --cert FILE for one issued elsewhere)",
                dir.display()
            )));
        }
    }
    if let Some(file) = cert_file {
        let certs = super::tls::read_certs(file).map_err(|e| CertError::Invalid(e.to_string()))?;
        let der =
            certs.first().ok_or_else(|| CertError::Invalid(format!("{}: no certificate", file.display())))?;
        new.push(hex(&super::tls::serial_of(der).map_err(|e| CertError::Invalid(e.to_string()))?));
    }
    let list_path = dir.join("revoked.jsonl");
    let mut all: Vec<String> =
        fs::read_to_string(&list_path).unwrap_or_default().lines().map(|l| l.trim().to_string()).collect();
    all.retain(|l| !l.is_empty());
    new.retain(|s| !all.contains(s));
    new.dedup();
    for s in &new {
        append(&list_path, &format!("{s}\n"))?;
    }
    all.extend(new.iter().cloned());
    let serials: Vec<Vec<u8>> = all.iter().filter_map(|h| unhex(h)).collect();
    let number = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let pem = ca.revocation_list(&serials, number)?;
    let crl = dir.join("crl.pem");
    let tmp = dir.join(".crl.pem.tmp");
    write_file(&tmp, &pem, 0o644)?;
    fs::rename(&tmp, &crl).map_err(|source| CertError::Io { path: crl.clone(), source })?;
    Ok(Revoked { serials: new, total: serials.len(), crl })
}

fn append(path: &Path, line: &str) -> Result<(), CertError> {
    let io = |source| CertError::Io { path: path.into(), source };
    let mut f = fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Issued {
    /// Writes `<name>.pem` (0644) and `<name>.key` (0600) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.into(), source })?;
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        write_file(&key, &self.key_pem, 0o600)?;
        write_file(&cert, &self.cert_pem, 0o644)?;
        Ok((cert, key))
    }
}

/// A file name for an id: `branch-12/kiosk-3` → `branch-12_kiosk-3`.
pub fn file_stem(id: &str) -> String {
    id.replace(['/', '@'], "_")
}

/// The fields of a hub, kiosk or agent certificate (without a hub's names).
fn leaf_params(role: Role, id: &str, days: i64) -> Result<CertificateParams, CertError> {
    validate_id(id).map_err(CertError::Invalid)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "kioskd");
    params.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name.push(DnType::CommonName, id);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::hours(1);
    params.not_after = now + TimeDuration::days(days);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![match role {
        Role::Hub => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Kiosk | Role::Agent => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    // A random positive serial: what a revocation names.
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// A CA's fields. The root allows one CA below it (`path_len` 1: the renewal CA), which
/// allows none (0).
fn ca_params(name: &str, days: i64, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "kioskd");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::hours(1);
    params.not_after = now + TimeDuration::days(days);
    params
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io { path: path.into(), source })
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io { path: path.into(), source };
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    // `mode` applies only when the file is created: enforce it for an existing file too.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::net::tls::identity_from_cert;

    #[test]
    fn issued_certificates_carry_role_and_id() {
        let ca = Authority::generate("test CA", 30).unwrap();
        let kiosk = ca.issue(Role::Kiosk, "branch-12/kiosk-3", &[], &[], 30).unwrap();
        let m = kiosk.material(&ca).unwrap();
        let ident = identity_from_cert(&m.chain[0]).unwrap();
        assert_eq!((ident.role, ident.id.as_str()), (Role::Kiosk, "branch-12/kiosk-3"));
        assert!(ca.issue(Role::Hub, "hub", &[], &[], 30).is_err(), "hub needs a name");
        assert!(ca.issue(Role::Agent, "bad id!", &[], &[], 30).is_err());
    }

    #[test]
    fn only_a_renewal_ca_below_the_root_may_renew() {
        use rustls::pki_types::pem::PemObject;
        let root = Authority::generate("root", 30).unwrap();
        let roots = vec![CertificateDer::from_pem_slice(root.cert_pem.as_bytes()).unwrap()];
        let sub = root.issue_renewal_ca("renewal", 30).unwrap();
        check_renewal_ca(&sub, &roots).unwrap();
        let err = check_renewal_ca(&Authority::load_pem(&root), &roots).unwrap_err().to_string();
        assert!(err.contains("root"), "{err}");
        let foreign = Authority::generate("other", 30).unwrap().issue_renewal_ca("x", 30).unwrap();
        assert!(check_renewal_ca(&foreign, &roots).is_err(), "signed by another root");
        let mismatched = Authority { cert_pem: sub.cert_pem.clone(), key: KeyPair::generate().unwrap() };
        assert!(check_renewal_ca(&mismatched, &roots).is_err(), "the key is not the certificate's");
        // The renewal CA cannot make another CA below it: webpki refuses a chain through one.
        let below = sub.issue_renewal_ca("below", 30).unwrap();
        let leaf = below.issue(Role::Kiosk, "k", &[], &[], 30).unwrap();
        let chain = vec![
            CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap(),
            CertificateDer::from_pem_slice(below.cert_pem.as_bytes()).unwrap(),
            CertificateDer::from_pem_slice(sub.cert_pem.as_bytes()).unwrap(),
        ];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(super::super::tls::verify_client_chain(&roots, &chain, now).is_err(), "path length");
        assert!(super::super::tls::verify_client_chain(&roots, &chain[..1], now).is_err());
    }

    #[test]
    fn keys_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", 30).unwrap();
        ca.write(dir.path()).unwrap();
        assert!(ca.write(dir.path()).is_err(), "never overwrites a CA");
        let mode = fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Authority::load(dir.path()).unwrap();
        let agent = back.issue(Role::Agent, "agent-1", &[], &[], 30).unwrap();
        let (_, key) = agent.write(dir.path(), "agent-1").unwrap();
        assert_eq!(fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
