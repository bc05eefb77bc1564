//! On-line renewal, the hub's side: a kiosk or agent sends a certificate request on its
//! authenticated connection; a hub given a renewal CA (`[renewal]`, a CA below the root, never
//! the root itself) signs a certificate for the identity and role of that connection's own
//! certificate — never the request's — and records it in the renewal CA's register, which
//! `kioskd certs revoke` reads.

use tracing::{info, warn};

pub use crate::edges::net::certs::RenewalIssuer;
use crate::edges::net::tls::Identity;
use crate::protocol::HubMsg;

/// Renewal requests one connection may make; more are refused (a party needs one).
pub(super) const MAX_PER_CONNECTION: u32 = 3;

/// Answers one request; the event log's record (event, detail) goes to the core.
pub(super) fn answer(
    issuer: &RenewalIssuer,
    ident: &Identity,
    csr: &str,
) -> (HubMsg, Result<String, String>) {
    match issuer.sign(ident, csr) {
        Ok((chain, detail)) => {
            info!(role = %ident.role, id = %ident.id, %detail, "certificate renewed");
            (HubMsg::Renewed { chain }, Ok(detail))
        }
        Err(reason) => {
            warn!(role = %ident.role, id = %ident.id, %reason, "certificate renewal refused");
            (HubMsg::RenewRefused { reason: reason.clone() }, Err(reason))
        }
    }
}
