//! The narrow request the web tier sends the CA — issue this CSR under this profile for this
//! account — and what comes back. Serial, validity, subject and extensions are the CA's to
//! decide; the CA validates the CSR again whatever the sender checked. [`Issuer`] is the port
//! the web tier holds: `ca::service::CaService` implements it over the signer process.

use time::OffsetDateTime;

use crate::{Profile, San, Serial};

/// Issue one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueOrder {
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
    /// The account (login ID) the certificate is for.
    pub account: String,
    /// The profile.
    pub profile: Profile,
    /// Subject alternative names (server profile only).
    pub sans: Vec<San>,
    /// Validity in days; `None` for the CA's default.
    pub days: Option<u32>,
    /// Chosen by the sender; the same id sent twice yields the same certificate.
    pub request_id: [u8; 16],
    /// A reissue: the account's other valid certificates become superseded when this one is
    /// recorded.
    pub supersede: bool,
}

/// A certificate the CA signed and recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Its serial.
    pub serial: Serial,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The account's certificates this one superseded.
    pub superseded: Vec<Serial>,
}

/// One OCSP answer to sign: the serial asked about, the hash its CertID was asked with, and
/// the status the registry gives it. The signer builds the CertID from its own issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspOrder {
    /// The serial number's magnitude, big-endian, as asked (it need not be one of inkan's).
    pub serial: Vec<u8>,
    /// The CertID hash the client used (echoed in the answer).
    pub hash: crate::ocsp::CertIdHash,
    /// Good, revoked (when and why) or unknown.
    pub status: crate::ocsp::CertStatus,
    /// The generation of the issuing CA asked about (its CertID's issuer), which signs it.
    pub issuer: u16,
}

/// A signed OCSP answer and its validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedOcsp {
    /// The DER `OCSPResponse`.
    pub der: Vec<u8>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate: the answer is served until shortly before.
    pub next_update: OffsetDateTime,
}

/// The CA as the web tier sees it: the only port through which certificates, CRLs and OCSP
/// answers get signed. Calls block; callers run them off their async threads.
pub trait Issuer: Send + Sync {
    /// Issues one certificate and records it in the registry.
    fn issue(&self, order: &IssueOrder) -> Result<IssuedCertificate, IssueError>;

    /// Signs the issuing CA's CRL over the registry's revoked certificates and publishes it;
    /// returns it (DER).
    fn sign_crl(&self) -> Result<Vec<u8>, IssueError>;

    /// Signs OCSP answers, one per order, in order.
    fn sign_ocsp(&self, orders: &[OcspOrder]) -> Result<Vec<SignedOcsp>, IssueError>;

    /// The issuing CA certificate (DER): the generation that issues now.
    fn ca_certificate(&self) -> &[u8];

    /// Every generation of the issuing CA, oldest first: its number and certificate (DER).
    /// Each answers (CRL, OCSP) for the certificates it issued.
    fn ca_generations(&self) -> Vec<(u16, &[u8])> {
        vec![(1, self.ca_certificate())]
    }

    /// The root certificate (DER).
    fn root_certificate(&self) -> &[u8];
}

/// Why the CA did not do what it was asked.
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
