//! rustls configurations of the two HTTPS listeners (aws-lc-rs provider, set explicitly so no
//! process-wide default is needed).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The server's certificate chain and key, and the CA that client certificates must chain to.
pub struct TlsMaterial {
    /// The server certificate, then the issuing CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The server key, PKCS#8 DER.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// Every generation of the issuing CA: the trust anchors for client certificates (a
    /// certificate of an earlier generation logs in until it expires).
    pub client_cas: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("chain", &self.chain.len()).field("key", &"[redacted]").finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Public listener: no client certificate requested.
pub fn public_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), PrivateKeyDer::Pkcs8(material.key.clone_key()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Certificate-login listener: asks for a client certificate in the handshake and accepts
/// only chains to our issuing CA (any generation), valid now. No certificate is allowed through, so the page
/// can explain what is missing; revocation is checked per request against the live registry.
pub fn login_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for ca in &material.client_cas {
        roots.add(ca.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), PrivateKeyDer::Pkcs8(material.key.clone_key()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
