//! Certificates and certificate requests from the network, both ends of on-line renewal: the
//! request a party sends (`certs::Authority::renew`, which the hub's renewal CA signs) and the
//! chain the hub answers with (`renew::check_renewed`, which a kiosk checks before it installs
//! it). The first byte picks the end; the rest is the PEM text as it came, or DER wrapped in
//! PEM (so that the fuzzer works on the ASN.1 rather than on base64).
//!
//! Properties: no panic; whatever the request says, a signed certificate names exactly the
//! identity the hub was given (the connection's), for the request's own key, and chains to the
//! renewal CA; an answer is accepted only if it names the kiosk's own identity on the key the
//! kiosk made and chains to the deployment's CA.
#![no_main]

use std::sync::OnceLock;

use kioskd::edges::net::certs::Authority;
use kioskd::edges::net::renew::{Request, check_renewed, request};
use kioskd::edges::net::tls::{TlsMaterial, identity_from_cert};
use kioskd::edges::net::tls::Identity;
use kioskd::protocol::Role;
use kioskd_fuzz::{Reader, pem};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use rcgen::PublicKeyData;

const ID: &str = "branch-1/kiosk-1";

struct Fixture {
    renewal_ca: Authority,
    kiosk: TlsMaterial,
    request: Request,
    now: i64,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Authority::generate("fuzz CA", 365).expect("a CA");
        let renewal_ca = root.issue_renewal_ca("fuzz renewal CA", 365).expect("a renewal CA");
        let kiosk = root.issue(Role::Kiosk, ID, &[], &[], 30).expect("issued").material(&root).expect("material");
        let ident = Identity { role: Role::Kiosk, id: ID.into() };
        let request = request(&ident).expect("a request");
        let now = time_now();
        Fixture { renewal_ca, kiosk, request, now }
    })
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut r = Reader::new(data);
    let mode = r.u8();
    let text = match mode % 2 {
        0 => match std::str::from_utf8(r.rest()) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        },
        _ => {
            // DER blocks, each `len: u16` then its bytes.
            let label = if mode & 2 == 0 { "CERTIFICATE REQUEST" } else { "CERTIFICATE" };
            let mut text = String::new();
            while !r.is_empty() {
                let len = usize::from(r.u16());
                text.push_str(&pem(label, r.bytes(len)));
            }
            text
        }
    };
    if mode & 2 == 0 {
        renew(f, &text);
    } else {
        answer(f, &text);
    }
});

/// The hub's side: signs for the connection's identity only.
fn renew(f: &Fixture, csr: &str) {
    let Ok(chain) = f.renewal_ca.renew(Role::Kiosk, ID, csr, 90) else { return };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the hub's chain is PEM");
    assert_eq!(certs.len(), 2, "the new certificate, then the renewal CA's");
    let ident = identity_from_cert(&certs[0]).expect("the new certificate names an identity");
    assert_eq!((ident.role, ident.id.as_str()), (Role::Kiosk, ID), "renewal never changes the identity");
    // For the key in the request: the request parses and its key is the certificate's.
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr).expect("it signed a request that parses");
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).expect("the leaf parses");
    assert_eq!(leaf.public_key().raw, parsed.public_key.subject_public_key_info(), "for the request's key");
}

/// The kiosk's side: takes nothing but its own identity on its own new key.
fn answer(f: &Fixture, chain: &str) {
    if let Ok(material) = check_renewed(chain, &f.request, &f.kiosk, f.now) {
        let ident = material.identity().expect("an identity");
        assert_eq!((ident.role, ident.id.as_str()), (Role::Kiosk, ID));
    }
}
