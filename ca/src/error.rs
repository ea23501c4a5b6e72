//! The one error type of the `ca` crate.

use std::path::PathBuf;

use pki::Serial;

/// Everything that can go wrong in the CA. Messages never contain key material or passphrases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request or a certificate was refused by the X.509 domain rules.
    #[error(transparent)]
    Pki(#[from] pki::Error),
    /// A CRL shard that cannot be signed as asked.
    #[error("CRL shard refused: {0}")]
    CrlShard(String),
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "creating").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A private key file that does not decrypt with the passphrase given.
    #[error("cannot decrypt {path}: wrong passphrase, or not an encrypted PKCS#8 key")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// A private key file whose content inkan cannot use.
    #[error("unusable private key {path}: {detail}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A passphrase refused when creating a key.
    #[error("passphrase refused: {reason}")]
    WeakPassphrase {
        /// Why.
        reason: &'static str,
    },
    /// The private key does not match the certificate it is loaded for.
    #[error("the key in {key} does not match the certificate {certificate}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
    },
    /// `init` on a data directory that already has a CA.
    #[error("{path} already exists; refusing to overwrite an existing CA")]
    AlreadyInitialised {
        /// The file found.
        path: PathBuf,
    },
    /// A key in a PKCS#11 token that cannot be made, found or used (no such token or key,
    /// a wrong PIN, a module that does not load).
    #[error("PKCS#11: {detail}")]
    Token {
        /// What was wrong (never the PIN).
        detail: String,
    },
    /// A rollover of the issuing CA that cannot be made now.
    #[error("rollover: {detail}")]
    Rollover {
        /// Why.
        detail: String,
    },
    /// A backup that cannot be made, or an archive that cannot be restored.
    #[error("backup: {detail}")]
    Backup {
        /// What was wrong.
        detail: String,
    },
    /// The signing operation failed in the crypto library.
    #[error("signing failed in the crypto library")]
    Signing,
    /// No certificate with this serial in the registry.
    #[error("no certificate with serial {serial}")]
    NotFound {
        /// The serial looked up.
        serial: Serial,
    },
    /// A revocation of a certificate that is already revoked (or was never issued).
    #[error("certificate {serial} cannot be revoked: it is {status}")]
    NotRevocable {
        /// The certificate.
        serial: Serial,
        /// Its current status.
        status: &'static str,
    },
    /// The registry failed.
    #[error("registry: {0}")]
    Store(String),
    /// A request id sent again with another account, key or profile.
    #[error("this request id was used for another request (another account, key or profile); use a new id")]
    RequestIdReused,
    /// The signer process could not be reached or answered with a failure.
    #[error("signer: {0}")]
    Signer(String),
    /// Could not draw a fresh serial after several attempts (a broken random source).
    #[error("could not draw an unused serial number")]
    SerialExhausted,
    /// The system's random source failed.
    #[error("the system's random source failed")]
    NoRandomness,
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}

impl From<pki::registry::RegistryError> for Error {
    fn from(e: pki::registry::RegistryError) -> Self {
        use pki::registry::RegistryError;
        match e {
            RegistryError::NotFound(serial) => Error::NotFound { serial },
            RegistryError::WrongState { serial, status } => Error::NotRevocable { serial, status },
            other => Error::Store(other.to_string()),
        }
    }
}
