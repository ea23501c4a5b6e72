//! The service's own keys and certificates, issued by the CA like any other and recorded: the
//! enrollment service's TLS certificate (made by the web worker through the signer) and the
//! delegated OCSP responder's (made by the signer for itself). Each is a key file, a chain file
//! and a tag file naming what it was made for; it is made again when missing, close to expiry,
//! made for other names, or issued by another CA.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::{Error, layout};

/// The account the service's TLS certificates are recorded under.
pub const SERVER_ACCOUNT: &str = "inkan-server";
/// The account the OCSP responder's certificates are recorded under.
pub const OCSP_ACCOUNT: &str = "inkan-ocsp";

/// Makes a key; returns a CSR for it (DER) and the key as PKCS#8 DER (zeroized on drop).
pub fn key_and_csr() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| Error::Signing)?;
    let pkcs8 = Zeroizing::new(key.to_pkcs8v1().map_err(|_| Error::Signing)?.as_ref().to_vec());
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
    let signing = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::BadKey { path: "(service key)".into(), detail: e.to_string() })?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&signing)
        .map_err(|e| pki::Error::Encoding { what: "service CSR", detail: e.to_string() })?;
    Ok((csr.der().to_vec(), pkcs8))
}

/// Where a credential lives and when it is made again.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// The chain: the certificate, then the issuing CA (PEM).
    pub cert: PathBuf,
    /// The key (PKCS#8 PEM, 0600).
    pub key: PathBuf,
    /// What it is made for; another tag means making it again.
    pub tag: String,
    /// Made again when less than this is left.
    pub renew_within: Duration,
}

/// A certificate chain (DER, leaf first, then the issuing CA) and its key (PKCS#8 DER).
pub struct Credential {
    /// The chain.
    pub chain: Vec<Vec<u8>>,
    /// The key.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("chain", &self.chain.len()).field("key", &"[redacted]").finish()
    }
}

impl Credential {
    /// The leaf certificate (DER).
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }
}

fn read_chain(path: &Path) -> Option<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(std::fs::read(path).ok()?).ok()?;
    Some(blocks.into_iter().map(pem::Pem::into_contents).collect())
}

fn tag_file(files: &CredentialFiles) -> PathBuf {
    files.cert.with_extension("tag")
}

/// The credential in `files` if it is usable at `now`: issued by `ca_der`, for this tag, with
/// more than `renew_within` left.
pub fn current(files: &CredentialFiles, ca_der: &[u8], now: OffsetDateTime) -> Option<Credential> {
    let chain = read_chain(&files.cert)?;
    let fresh = chain
        .first()
        .and_then(|leaf| pki::certificate::Summary::from_der(leaf).ok())
        .is_some_and(|s| s.not_after - now > files.renew_within);
    let same = std::fs::read_to_string(tag_file(files)).is_ok_and(|t| t == files.tag);
    if !(fresh && same && chain.get(1).is_some_and(|c| c.as_slice() == ca_der)) {
        return None;
    }
    let key_pem = Zeroizing::new(std::fs::read(&files.key).ok()?);
    let key = pem::parse(key_pem.as_slice()).ok()?;
    Some(Credential { chain, key: Zeroizing::new(key.into_contents()) })
}

/// The credential in `files`, made again with `issue` (which gets a CSR and returns the signed
/// certificate) when it is not [`current`]. The flag says whether it was made now.
pub fn ensure(
    files: &CredentialFiles,
    ca_der: &[u8],
    now: OffsetDateTime,
    issue: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, Error>,
) -> Result<(Credential, bool), Error> {
    if let Some(credential) = current(files, ca_der, now) {
        return Ok((credential, false));
    }
    let (csr, key) = key_and_csr()?;
    let der = issue(csr)?;
    if let Some(parent) = files.cert.parent() {
        layout::create_private_dir(parent)?;
    }
    let chain = pki::encoding::certificates_pem([der.as_slice(), ca_der]);
    let key_pem = Zeroizing::new(pki::encoding::pem_encode("PRIVATE KEY", &key));
    let _ = std::fs::remove_file(&files.key);
    layout::write_new(&files.key, key_pem.as_bytes(), 0o600)?;
    layout::replace(&files.cert, chain.as_bytes(), 0o644)?;
    layout::replace(&tag_file(files), files.tag.as_bytes(), 0o644)?;
    Ok((Credential { chain: vec![der, ca_der.to_vec()], key }, true))
}
