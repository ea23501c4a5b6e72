//! The shared state of all listeners, in one `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;

use pki::registry::Registry;

use crate::accounts::Accounts;
use crate::backend::{Audit, Issuer};
use crate::settings::ServerSettings;
use crate::tokens::{RateLimiter, Sessions, Tickets};

/// Everything a handler may need.
pub struct AppState {
    /// Settings.
    pub settings: ServerSettings,
    /// Accounts (sled, `DATA_DIR/web`).
    pub accounts: Accounts,
    /// The certificate registry.
    pub registry: Arc<dyn Registry>,
    /// The CA.
    pub issuer: Arc<dyn Issuer>,
    /// The audit trail.
    pub audit: Arc<dyn Audit>,
    /// Enrollment tickets.
    pub tickets: Tickets,
    /// Login sessions.
    pub sessions: Sessions,
    /// Per-client limits on login and enrollment.
    pub limiter: RateLimiter,
    /// The public listener's base URL, for links (`https://localhost:8443`).
    pub public_url: String,
    /// The certificate-login listener's base URL (`https://localhost:8444`).
    pub login_url: String,
    /// The OCSP responder, when the service has a responder certificate.
    pub ocsp: Option<Arc<crate::ocsp::OcspResponder>>,
    /// Wakes the CRL publisher after revocations.
    pub crl_wake: tokio::sync::Notify,
    /// Counters for `/metrics`.
    pub metrics: crate::publish::Metrics,
}

impl AppState {
    /// Everything that must follow a revocation: cached OCSP answers go, a new CRL is due.
    pub fn revoked(&self, serials: &[pki::Serial]) {
        if serials.is_empty() {
            return;
        }
        if let Some(ocsp) = &self.ocsp {
            ocsp.forget(serials);
        }
        self.metrics.revoked.fetch_add(serials.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.crl_wake.notify_one();
    }
}

impl crate::admin::AdminHooks for AppState {
    fn revoked(&self, serials: &[pki::Serial]) {
        AppState::revoked(self, serials);
    }

    fn issued(&self) {
        self.metrics.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// The state as handlers receive it.
pub type Shared = Arc<AppState>;

/// What the listener knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client certificate (DER) from the TLS handshake, on the login listener.
    pub client_certificate: Option<Arc<Vec<u8>>>,
}
