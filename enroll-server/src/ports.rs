//! What the service needs from outside itself, as traits: the audit trail ([`Audit`]) and what
//! must follow a revocation or an issuance in a running service ([`Events`]), and what exports
//! the stores for a backup ([`Snapshotter`]). The CA is
//! `pki::request::Issuer` and the registry `pki::registry::Registry`; the web tier never holds
//! a CA key.

use pki::Serial;
use serde::{Deserialize, Serialize};

/// Where security events go: the audit trail. `record` returns once the event is durable; a
/// failure to write is logged, never shown to the client. Details carry identifiers only,
/// never passwords, tickets or keys.
pub trait Audit: Send + Sync {
    /// Appends one event.
    fn record(&self, event: &str, details: serde_json::Value);
}

/// What a running service does after a change made through any path (web, API, admin socket):
/// fresh OCSP answers, a new CRL, counters. Without a service (CLI commands on the stores) there
/// is nothing to do: [`NoEvents`].
pub trait Events: Send + Sync {
    /// Certificates were revoked (or superseded).
    fn revoked(&self, serials: &[Serial]);
    /// A certificate was issued: its OCSP answer is signed ahead of the first request.
    fn issued(&self, serial: &Serial);
}

/// No service to tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl Events for NoEvents {
    fn revoked(&self, _: &[Serial]) {}
    fn issued(&self, _: &Serial) {}
}

/// One store exported for a backup: its name (`db`, `web`), the file, each tree's count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotStore {
    /// The store.
    pub name: String,
    /// The export file (under DATA_DIR/snapshot/).
    pub path: std::path::PathBuf,
    /// Records per tree.
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// Exports the running service's stores (set by the process that opened them).
pub type Snapshotter = dyn Fn() -> Result<Vec<SnapshotStore>, String> + Send + Sync;
