//! On-line certificate renewal over real QUIC: a kiosk whose certificate nears its end asks
//! the hub on its authenticated connection, writes the new pair and uses it from its next
//! connection; a hub without a renewal CA refuses and the kiosk tries again and reports it; the
//! hub issues only for the connection's own identity; a renewed certificate can be revoked.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use kioskd::call::KioskState;
use kioskd::edges::net::certs::{self, Authority, RENEWAL_DIR};
use kioskd::edges::net::client;
use kioskd::edges::net::renew::{self, CertFiles, Renewer, SharedRenewer};
use kioskd::edges::net::tls::{TlsMaterial, client_config, identity_from_cert, not_after};
use kioskd::protocol::renewal::RenewalPolicy;
use kioskd::protocol::{ClientMsg, HubMsg, Role};
use kioskd::queue::QueueConfig;
use kioskd::roles::hub::{self, HubOptions, HubStatus, RenewalIssuer, RunningHub};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DAY: i64 = 86_400;
const KIOSK: &str = "branch-1/kiosk-1";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A deployment folder as `kioskd certs init` + `renewal-ca` + `issue` make it: the root, the
/// renewal CA in `renewal/`, an empty revocation list, and a kiosk certificate valid 10 days.
struct Deployment {
    dir: tempfile::TempDir,
    root: Authority,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Authority::generate("test root", 30).expect("root");
        root.write(dir.path()).expect("write root");
        root.issue_renewal_ca("test renewal CA", 30)
            .expect("renewal CA")
            .write(&dir.path().join(RENEWAL_DIR))
            .expect("write renewal CA");
        std::fs::write(dir.path().join("crl.pem"), root.revocation_list(&[], 1).expect("CRL")).expect("crl");
        let issued = root.issue(Role::Kiosk, KIOSK, &[], &[], 10).expect("kiosk cert");
        issued.write(dir.path(), "kiosk").expect("write kiosk");
        certs::record_issued(dir.path(), KIOSK, Role::Kiosk, &issued.cert_pem).expect("register");
        Self { dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> CertFiles {
        CertFiles { cert: self.path("kiosk.pem"), key: self.path("kiosk.key") }
    }

    fn kiosk_material(&self) -> TlsMaterial {
        TlsMaterial::load(&self.path("ca.pem"), &self.path("kiosk.pem"), &self.path("kiosk.key"))
            .expect("kiosk files")
    }

    fn issuer(&self) -> Arc<RenewalIssuer> {
        let sub = self.path(RENEWAL_DIR);
        let ca = Authority::load_files(&sub.join("ca.pem"), &sub.join("ca.key")).expect("renewal CA");
        Arc::new(RenewalIssuer::new(ca, 90, sub))
    }

    async fn hub(&self, listen: SocketAddr, renewal: bool) -> RunningHub {
        let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let tls = self
            .root
            .issue(Role::Hub, "hub.test", &["localhost".into()], &localhost, 30)
            .expect("hub")
            .material(&self.root)
            .expect("hub material");
        hub::start(HubOptions {
            listen,
            tls,
            queue: QueueConfig::default(),
            event_log: self.path("events.jsonl"),
            metrics: None,
            recording: None,
            crl: Some(self.path("crl.pem")),
            admission: Default::default(),
            renewal: renewal.then(|| self.issuer()),
            database: None,
            console: None,
        })
        .await
        .expect("hub starts")
    }

    fn renewer(&self, retry_s: i64) -> SharedRenewer {
        let policy = RenewalPolicy { before_s: 30 * DAY, retry_s, answer_timeout_s: 10 };
        Renewer::new(self.files(), self.kiosk_material(), policy).expect("renewer").shared()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("events.jsonl"))
            .expect("event log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

async fn wait_hub(hub: &RunningHub, what: &str, pred: impl Fn(&HubStatus) -> bool) -> HubStatus {
    let mut rx = hub.watch_status();
    tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s)))
        .await
        .unwrap_or_else(|_| panic!("hub never reached: {what}"))
        .expect("status")
        .clone()
}

fn kiosk_expiry(s: &HubStatus) -> Option<i64> {
    s.certificates.iter().find(|c| c.role == Role::Kiosk && c.id == KIOSK).map(|c| c.not_after)
}

fn leaf_of(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("pem").collect::<Result<Vec<_>, _>>().expect("certs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_renews_before_expiry_uses_the_new_certificate_next_and_can_still_be_revoked() {
    let d = Deployment::new();
    let hub1 = d.hub(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), true).await;
    let addr = hub1.local_addr;
    let old_serial =
        certs::hex(&kioskd::edges::net::tls::serial_of(&leaf_of(&d.path("kiosk.pem"))[0]).expect("serial"));
    let renewer = d.renewer(3600);
    let mut k = start_kiosk_renewing(Pki::target_of(addr, &d.kiosk_material()), KIOSK, renewer.clone());
    k.wait_state("idle", |s| *s == KioskState::Idle).await;

    // The connection shows the old certificate's end (10 days); the kiosk asks at once.
    let mut changes = renew::lock(&renewer).subscribe();
    let s = wait_hub(&hub1, "the renewal", |s| s.renewed == 1).await;
    tokio::time::timeout(WAIT, changes.wait_for(|h| h.renewed == 1))
        .await
        .expect("installed")
        .expect("renewer");
    let old_end = kiosk_expiry(&s).expect("the kiosk's certificate in the status");
    assert!((old_end - now() - 10 * DAY).abs() < 2 * 3600, "old certificate: 10 days");
    let chain = leaf_of(&d.path("kiosk.pem"));
    assert_eq!(chain.len(), 2, "the new certificate and the renewal CA's");
    let ident = identity_from_cert(&chain[0]).expect("identity");
    assert_eq!((ident.role, ident.id.as_str()), (Role::Kiosk, KIOSK), "the identity is unchanged");
    let new_end = not_after(&chain[0]).expect("not after");
    assert!((new_end - now() - 90 * DAY).abs() < 2 * 3600, "renewed for the configured 90 days");
    let health = renew::lock(&renewer).health();
    assert_eq!((health.renewed, health.renewal_failures), (1, 0));
    assert!(health.expires_in_days >= 89, "{health:?}");
    assert!(
        d.events().iter().any(|e| e["event"] == "certificate_renewed" && e["kiosk"] == KIOSK),
        "the event log records the renewal"
    );

    // The next connection (to a restarted hub) presents the new certificate; no second renewal.
    hub1.shutdown().await;
    // The old endpoint's socket is released by its driver task just after the shutdown
    // returns (measured: ~50 ms); the operating system tells no event of it, so the bind is
    // retried within the usual budget.
    let free = tokio::time::timeout(WAIT, async {
        while std::net::UdpSocket::bind(addr).is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    free.await.expect("the hub's port is free again");
    let hub2 = d.hub(addr, true).await;
    let s = wait_hub(&hub2, "the kiosk back with its new certificate", |s| kiosk_expiry(s).is_some()).await;
    assert_eq!(kiosk_expiry(&s), Some(new_end));
    assert_eq!(s.renewed, 0);

    // Revoking the identity names both certificates, the renewed one from the renewal CA's
    // register: the kiosk is disconnected and refused.
    let r = certs::revoke(d.dir.path(), Some(KIOSK), None).expect("revoke");
    assert_eq!(r.serials.len(), 2, "the first certificate and the renewed one");
    assert!(r.serials.contains(&old_serial));
    wait_hub(&hub2, "the renewed kiosk disconnected", |s| s.revoked == 1).await;
    wait_hub(&hub2, "the renewed kiosk refused at its next handshake", |s| {
        s.refused >= 1 && kiosk_expiry(s).is_none()
    })
    .await;
    let _ = k.stop.send(true);
    hub2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_is_retried_and_reported_and_the_files_stay() {
    let d = Deployment::new();
    let hub = d.hub(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).await;
    let before = std::fs::read(d.path("kiosk.pem")).expect("cert");
    let renewer = d.renewer(1);
    let mut k =
        start_kiosk_renewing(Pki::target_of(hub.local_addr, &d.kiosk_material()), KIOSK, renewer.clone());
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    // Tried again after the 1 s wait, on the same connection.
    wait_hub(&hub, "two refused renewals", |s| s.renewals_refused >= 2).await;
    let mut changes = renew::lock(&renewer).subscribe();
    let health = tokio::time::timeout(WAIT, changes.wait_for(|h| h.renewal_failures >= 2))
        .await
        .expect("the kiosk counts its failures")
        .expect("renewer")
        .clone();
    assert!(health.renewal_error.as_deref().is_some_and(|e| e.contains("does not renew")), "{health:?}");
    assert_eq!(health.expires_in_days, 9, "{health:?}");
    assert_eq!(std::fs::read(d.path("kiosk.pem")).expect("cert"), before, "the certificate is untouched");
    assert!(d.events().iter().any(|e| e["event"] == "renewal_refused" && e["kiosk"] == KIOSK));
    let _ = k.stop.send(true);
    hub.shutdown().await;
}

/// Sends `msg` and returns the hub's next renewal answer.
async fn ask(s: &mut client::Session, msg: &ClientMsg) -> HubMsg {
    s.writer.send(msg).await.expect("send");
    tokio::time::timeout(WAIT, async {
        loop {
            match s.reader.recv::<HubMsg>().await.expect("hub message") {
                m @ (HubMsg::Renewed { .. } | HubMsg::RenewRefused { .. }) => return m,
                _ => continue,
            }
        }
    })
    .await
    .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_issues_only_for_the_connections_own_identity_and_bounds_requests() {
    let d = Deployment::new();
    let hub = d.hub(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), true).await;
    let agent = d
        .root
        .issue(Role::Agent, "agent-1", &[], &[], 10)
        .expect("agent")
        .material(&d.root)
        .expect("material");
    let ep = client::endpoint(client_config(&agent).expect("config"), false).expect("endpoint");
    let mut s = client::connect(&ep, hub.local_addr, "localhost", Role::Agent).await.expect("session");

    // A request naming a kiosk: the certificate is the agent's, whatever the request says.
    let kiosk_ident = kioskd::edges::net::tls::Identity { role: Role::Kiosk, id: KIOSK.into() };
    let req = renew::request(&kiosk_ident).expect("request");
    let HubMsg::Renewed { chain } = ask(&mut s, &ClientMsg::Renew { csr: req.csr_pem.clone() }).await else {
        panic!("renewed expected");
    };
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes()).next().expect("a certificate").expect("PEM");
    let ident = identity_from_cert(&leaf).expect("identity");
    assert_eq!((ident.role, ident.id.as_str()), (Role::Agent, "agent-1"));

    // A request with a broken signature is refused; the connection goes on.
    let mut broken = req.csr_pem.clone().into_bytes();
    let i = broken.len() / 2;
    broken[i] = if broken[i] == b'Q' { b'R' } else { b'Q' };
    let csr = String::from_utf8(broken).expect("ascii");
    assert!(matches!(ask(&mut s, &ClientMsg::Renew { csr }).await, HubMsg::RenewRefused { .. }));
    assert!(matches!(
        ask(&mut s, &ClientMsg::Renew { csr: req.csr_pem.clone() }).await,
        HubMsg::Renewed { .. }
    ));
    // A fourth request on one connection is refused.
    let HubMsg::RenewRefused { reason } = ask(&mut s, &ClientMsg::Renew { csr: req.csr_pem }).await else {
        panic!("refusal expected");
    };
    assert!(reason.contains("per connection"), "{reason}");
    let st = wait_hub(&hub, "the answers counted", |s| s.renewed == 2 && s.renewals_refused == 2).await;
    assert_eq!(st.connections, 1, "the agent is still connected");
    drop(s);
    hub.shutdown().await;
}
