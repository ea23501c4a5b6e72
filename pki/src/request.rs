//! The narrow request the web tier sends the CA — issue this CSR under this profile for this
//! account — and what comes back. Serial, validity, subject and extensions are the CA's to
//! decide; the CA validates the CSR again whatever the sender checked.

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
