//! The enrollment service's own TLS key: a fresh ECDSA P-256 key and a CSR for it. The
//! certificate is issued by the CA like any other (and recorded).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use zeroize::Zeroizing;

use crate::Error;

/// The account name the service's certificates are recorded under.
pub const SERVER_ACCOUNT: &str = "inkan-server";

/// Makes a key; returns a CSR for it (DER) and the key as PKCS#8 DER (zeroized on drop).
pub fn server_key_and_csr() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| Error::Signing)?;
    let pkcs8 = Zeroizing::new(key.to_pkcs8v1().map_err(|_| Error::Signing)?.as_ref().to_vec());
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
    let signing = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::BadKey { path: "(server key)".into(), detail: e.to_string() })?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&signing)
        .map_err(|e| pki::Error::Encoding { what: "server CSR", detail: e.to_string() })?;
    Ok((csr.der().to_vec(), pkcs8))
}
