//! The names of the files the CA signs into its CRL directory and the service serves from it:
//! one contract for the signer, the ceremony and the web worker.

/// The root's CRL (signed at the ceremony: `inkan root sign-crl`).
pub const ROOT_CRL: &str = "root.crl";
/// The issuing CA's CRL (signed by the signer).
pub const CA_CRL: &str = "ca.crl";
/// The root's OCSP answer about the issuing CA (signed at the ceremony).
pub const CA_OCSP: &str = "ca-ocsp.der";
/// The latest signed checkpoint of the audit trail (JSON), served at `/audit/checkpoint`.
pub const AUDIT_CHECKPOINT: &str = "audit-checkpoint.json";
