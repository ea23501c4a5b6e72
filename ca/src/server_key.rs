//! The enrollment service's own TLS certificate: a fresh ECDSA P-256 key and a server-profile
//! certificate for the configured names, issued by the CA like any other (and recorded).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use pki::{Profile, San};
use zeroize::Zeroizing;

use crate::{CertificateAuthority, Error, IssueRequest, Issued};

/// The account name the service's certificates are recorded under.
pub const SERVER_ACCOUNT: &str = "inkan-server";

/// Makes a key and has `authority` issue a server certificate for `names`. Returns the
/// certificate and the key as PKCS#8 DER (zeroized on drop).
pub fn issue_server_certificate(
    authority: &CertificateAuthority,
    names: &[San],
    days: u32,
) -> Result<(Issued, Zeroizing<Vec<u8>>), Error> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| Error::Signing)?;
    let pkcs8 = Zeroizing::new(key.to_pkcs8v1().map_err(|_| Error::Signing)?.as_ref().to_vec());
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
    let signing = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::BadKey { path: "(server key)".into(), detail: e.to_string() })?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&signing)
        .map_err(|e| pki::Error::Encoding { what: "server CSR", detail: e.to_string() })?;
    let issued = authority.issue(&IssueRequest {
        csr: csr.der(),
        account: SERVER_ACCOUNT,
        profile: Profile::Server,
        sans: names,
        days: Some(days),
    })?;
    Ok((issued, pkcs8))
}
