//! inkan's certificate authority: the only crate that opens private keys.
//!
//! - [`signer`]: the [`Signer`] trait and the encrypted-PKCS#8 [`FileSigner`]; [`pkcs11`]: a
//!   key inside a PKCS#11 token ([`pkcs11::TokenSigner`]).
//! - [`authority`]: [`CertificateAuthority`], which issues in the order of ARCHITECTURE.md
//!   (validate → prepare and lint → record pending → sign → record certificate → return) and
//!   signs CRLs with a persisted, monotonic number.
//! - [`ledger`]: where the CA records issuances before and after signing ([`ledger::LogLedger`]
//!   in the signer process).
//! - [`sled_store`]: the registry (`pki::registry::Registry`) on sled, durable before
//!   acknowledging, with indices by
//!   serial, account, key and notAfter.
//! - [`ceremony`]: creating the offline root and the issuing CA; the root's CRL.
//! - [`remote`]: the signer process's protocol (issue, sign a CRL, sign OCSP answers, CA info)
//!   and its client; [`responder`]: the OCSP responder key the signer keeps.
//! - [`service`]: [`service::CaService`], the `pki::request::Issuer` the web tier holds: it
//!   sends orders to the signer and records what comes back; [`credential`]: the service's own
//!   keys and certificates.
//! - [`audit`]: the hash-chained audit trail; [`checkpoint`]: its signed checkpoints;
//!   [`backup`]: backup archives and restore.
//! - [`layout`]: the data directory's files.
//!
//! The design overview (processes, trust boundaries, issuance order) is `docs/ARCHITECTURE.md`
//! in the repository.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod authority;
pub mod backup;
pub mod ceremony;
pub mod checkpoint;
pub mod credential;
mod durable;
mod error;
pub mod fixture;
pub mod generations;
mod key_file;
pub mod layout;
pub mod ledger;
mod ledger_index;
pub mod migrate;
pub mod pg_client;
pub mod pg_registry;
pub mod pkcs11;
pub mod remote;
pub mod responder;
mod secret;
pub mod service;
pub mod signer;
pub mod signer_tls;
pub mod sled_export;
pub mod sled_store;

pub use authority::{CertificateAuthority, IssueRequest, Issued};
pub use error::Error;
pub use pki::registry::{CertRecord, Registry, RegistryError, State, Status};
pub use secret::Passphrase;
pub use signer::{CaKeyType, FileSigner, Signer};
pub use sled_store::SledStore;
