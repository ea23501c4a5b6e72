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

/// The file generation `n` of the issuing CA's CRL is published as (`/crl/ca.crl` for 1,
/// `/crl/N/ca.crl` for later ones).
pub fn ca_crl(n: u16) -> String {
    if n <= 1 { CA_CRL.to_owned() } else { format!("ca-{n}.crl") }
}

/// The file the root's pre-signed OCSP answer about generation `n` of the issuing CA is in.
pub fn ca_ocsp(n: u16) -> String {
    if n <= 1 { CA_OCSP.to_owned() } else { format!("ca-ocsp-{n}.der") }
}
