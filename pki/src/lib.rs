//! inkan's X.509 domain, with no I/O and no clock: callers pass the time and the randomness.
//!
//! The path of one certificate through this crate:
//!
//! 1. [`csr::validate`] parses a PKCS#10 request strictly, applies the key policy
//!    ([`key::SubjectKey`]) and verifies the request's signature (proof of possession). Only
//!    it makes a [`ValidatedCsr`].
//! 2. [`certificate::prepare`] builds the to-be-signed certificate from the CA's settings
//!    ([`ProfileSettings`]), the account and the [`Profile`] — never from the CSR's subject or
//!    extensions — and lints the exact bytes with an independent parser.
//! 3. The caller records the issuance, has the CA key sign [`PreparedCertificate::tbs_der`],
//!    and [`PreparedCertificate::assemble`] consumes the prepared value into the certificate.
//!
//! CRLs and OCSP answers follow the same prepare → sign → assemble path ([`crl::prepare_crl`],
//! [`ocsp::prepare_response`]). [`request`] is the port through which the web tier asks the CA
//! for all three. The design overview is `docs/ARCHITECTURE.md` in the repository.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod certificate;
pub mod crl;
pub mod csr;
mod der;
pub mod encoding;
mod error;
pub mod key;
mod lint;
pub mod names;
pub mod ocsp;
pub mod pkcs12;
pub mod profile;
pub mod published;
pub mod registry;
pub mod request;
pub mod serial;
pub mod shard;
mod tbs;

pub use certificate::{CertificateOrder, IssuerInfo, PreparedCertificate};
pub use crl::{CrlOrder, PreparedCrl, RevocationReason, RevokedEntry};
pub use csr::ValidatedCsr;
pub use error::Error;
pub use key::{KeyKind, SignatureAlgorithm, SubjectKey};
pub use profile::{Profile, ProfileSettings, San, Validity};
pub use serial::Serial;
