//! TLS to PostgreSQL: TLS 1.3 only (rustls), the server's certificate verified against the
//! deployment's database CA and the host named in the connection string.
//!
//! Configured the way libpq is: `sslmode=verify-full` and `sslrootcert=PATH` in the
//! connection string (`postgresql://kioskd@db.bank.example/kioskd?sslmode=verify-full&sslrootcert=/etc/kioskd/db-ca.pem`,
//! or the same keys in the `key=value` form). tokio-postgres does not know `sslrootcert`; it is
//! taken out here, and `sslmode` becomes `require` (TLS or no connection). Without these keys
//! the connection is as before, unencrypted. `sslmode=require` without verification, and
//! `verify-ca` (no host name check), are refused: a hub does not talk to a database it has not
//! authenticated.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// A connection string split into what tokio-postgres reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// For tokio-postgres (`sslmode=require` when TLS is asked for).
    pub url: String,
    /// `sslrootcert`: the CA file that the server's certificate must chain to.
    pub root_cert: Option<String>,
}

type Pairs = Vec<(String, String)>;

/// A connection string's form, to put it back together without its TLS keys.
enum Form {
    /// `postgresql://…?k=v&…`: what comes before the query.
    Url(String),
    /// `key=value …`: the tokens that are not TLS keys, in order.
    KeyValue(Vec<String>),
}

impl Form {
    /// `url` as its form and its parameters (the query's, or the TLS tokens of the key=value
    /// form).
    fn parse(url: &str) -> (Self, Pairs) {
        if url.contains("://") {
            let Some((base, query)) = url.split_once('?') else { return (Form::Url(url.into()), Vec::new()) };
            let pairs = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect();
            return (Form::Url(base.into()), pairs);
        }
        let (mut keep, mut pairs) = (Vec::new(), Vec::new());
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) if k == "sslmode" || k == "sslrootcert" => {
                    pairs.push((k.to_string(), v.trim_matches('\'').to_string()));
                }
                _ => keep.push(token.to_string()),
            }
        }
        (Form::KeyValue(keep), pairs)
    }

    fn rebuild(&self, pairs: &[(String, String)]) -> String {
        let kv = pairs.iter().map(|(k, v)| format!("{k}={v}"));
        match self {
            Form::Url(base) if pairs.is_empty() => base.clone(),
            Form::Url(base) => format!("{base}?{}", kv.collect::<Vec<_>>().join("&")),
            Form::KeyValue(keep) => keep.iter().cloned().chain(kv).collect::<Vec<_>>().join(" "),
        }
    }
}

/// Takes the TLS keys out of `url` (both forms of connection string).
pub fn split(url: &str) -> Result<Split, String> {
    let (form, mut pairs) = Form::parse(url);
    let root_cert = pairs.iter().find(|(k, _)| k == "sslrootcert").map(|(_, v)| v.clone());
    let mode = pairs.iter().find(|(k, _)| k == "sslmode").map(|(_, v)| v.clone());
    pairs.retain(|(k, _)| k != "sslrootcert");
    match (mode.as_deref(), &root_cert) {
        (Some("verify-full"), Some(path)) if !path.is_empty() => {
            for (k, v) in &mut pairs {
                if k == "sslmode" {
                    *v = "require".into();
                }
            }
        }
        (Some("verify-full"), _) => {
            return Err("sslmode=verify-full needs sslrootcert=PATH (the database's CA)".into());
        }
        (Some("verify-ca"), _) => {
            return Err("sslmode=verify-ca does not check the server's name: use sslmode=verify-full".into());
        }
        (Some("require"), _) => {
            return Err(
                "sslmode=require does not authenticate the server: use sslmode=verify-full with sslrootcert=PATH".into(),
            );
        }
        (_, Some(_)) => return Err("sslrootcert needs sslmode=verify-full".into()),
        // disable, prefer (tokio-postgres then goes without TLS: it is given none), or absent.
        _ => {}
    }
    // Unchanged when it had no TLS keys (a query's other parameters, as they were written).
    let url = if root_cert.is_none() && mode.is_none() { url.to_string() } else { form.rebuild(&pairs) };
    Ok(Split { url, root_cert })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client configuration trusting the CA certificates in `path` (PEM), TLS 1.3 only.
pub fn client_config(path: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("sslrootcert {path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
        roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path}: no certificate in it"));
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// tokio-postgres's TLS through rustls.
#[derive(Clone)]
pub struct MakeRustls(pub Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, io::Error> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{domain}`: {e}")))?;
        Ok(Connect { config: self.0.clone(), name })
    }
}

/// One connection's handshake.
pub struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(Stream(tls))
        })
    }
}

/// A TLS stream to the database.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    /// No channel binding: SCRAM-SHA-256 without `-PLUS` (the server is authenticated by its
    /// certificate).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_keys_are_taken_out_of_both_forms_of_connection_string() {
        let s = split("postgresql://kioskd@db.bank.example/kioskd?sslmode=verify-full&sslrootcert=%2Fetc%2Fkioskd%2Fdb-ca.pem")
            .expect("valid");
        assert_eq!(s.url, "postgresql://kioskd@db.bank.example/kioskd?sslmode=require");
        assert_eq!(s.root_cert.as_deref(), Some("/etc/kioskd/db-ca.pem"));
        let s = split(
            "host=db.bank.example user=kioskd sslmode=verify-full sslrootcert=/etc/ca.pem dbname=kioskd",
        )
        .expect("valid");
        assert_eq!(s.url, "host=db.bank.example user=kioskd dbname=kioskd sslmode=require");
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        // Without TLS keys, unchanged.
        for url in [
            "postgresql://kioskd@db/kioskd",
            "postgresql://kioskd@db/kioskd?connect_timeout=5",
            "host=db user=k",
        ] {
            assert_eq!(split(url), Ok(Split { url: url.into(), root_cert: None }), "{url}");
        }
    }

    #[test]
    fn a_database_that_would_not_be_authenticated_is_refused() {
        for (url, says) in [
            ("postgresql://k@db/k?sslmode=require", "verify-full"),
            ("postgresql://k@db/k?sslmode=verify-ca&sslrootcert=/ca.pem", "name"),
            ("postgresql://k@db/k?sslmode=verify-full", "sslrootcert"),
            ("postgresql://k@db/k?sslrootcert=/ca.pem", "verify-full"),
            ("host=db user=k sslmode=require", "verify-full"),
        ] {
            let e = split(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let e = client_config("/nonexistent/ca.pem").expect_err("no file");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = client_config(empty.to_str().expect("utf-8")).expect_err("empty");
        assert!(e.contains("no certificate"), "{e}");
    }
}
