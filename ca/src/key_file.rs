//! Opening a CA key from its key file: an encrypted PKCS#8 file, or a file naming a key in a
//! PKCS#11 token.

use std::path::Path;

use pki::IssuerInfo;

use crate::pkcs11::TokenKey;
use crate::signer::{FileSigner, Signer};
use crate::{Error, Passphrase, layout};

/// Loads a CA key and checks it against its certificate. `key` is an encrypted key file
/// (`passphrase` decrypts it) or names a key in a PKCS#11 token (`passphrase` is its PIN).
pub fn load_signer(
    key: &Path,
    certificate: &Path,
    passphrase: &Passphrase,
) -> Result<(Box<dyn Signer>, Vec<u8>), Error> {
    let der = layout::read_certificate(certificate)?;
    let issuer = IssuerInfo::from_der(&der)?;
    let signer: Box<dyn Signer> = match TokenKey::read(key)? {
        Some(token) => Box::new(token.open(passphrase)?),
        None => Box::new(FileSigner::load(key, passphrase)?),
    };
    if signer.public_key() != issuer.public_key() {
        return Err(Error::KeyMismatch { key: key.into(), certificate: certificate.into() });
    }
    Ok((signer, der))
}
