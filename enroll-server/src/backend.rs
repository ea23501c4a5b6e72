//! What the service needs from the CA side, as traits: the web tier never holds a key.
//!
//! [`Issuer`] carries the narrow request of `pki::request`; the registry is
//! `pki::registry::Registry`. In the embedded default the CLI provides both from the `ca`
//! crate.

use pki::request::{IssueOrder, IssuedCertificate};

/// Issues certificates and signs CRLs. Calls block; the service runs them off the async
/// threads.
pub trait Issuer: Send + Sync {
    /// Issues one certificate and records it in the registry.
    fn issue(&self, order: &IssueOrder) -> Result<IssuedCertificate, IssueError>;

    /// Signs and publishes the issuing CA's CRL; returns it (DER).
    fn sign_crl(&self) -> Result<Vec<u8>, IssueError>;

    /// The issuing CA certificate (DER).
    fn ca_certificate(&self) -> &[u8];

    /// The root certificate (DER).
    fn root_certificate(&self) -> &[u8];
}

/// Why an issuance failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueError {
    /// The request was refused (bad CSR, key policy, validity): the sender's fault.
    #[error("{0}")]
    Rejected(String),
    /// The CA is not reachable now; nothing was issued.
    #[error("the CA is unavailable: {0}")]
    Unavailable(String),
    /// The CA failed.
    #[error("CA failure: {0}")]
    Internal(String),
}

/// Where security events go: the audit trail. `record` returns once the event is durable; a
/// failure to write is logged, never shown to the client. Details carry identifiers only,
/// never passwords, tickets or keys.
pub trait Audit: Send + Sync {
    /// Appends one event.
    fn record(&self, event: &str, details: serde_json::Value);
}
