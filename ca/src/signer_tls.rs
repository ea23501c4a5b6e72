//! Mutual TLS between the signer listening on TCP (`inkan signer --listen`) and the service
//! instances: the signer presents a server certificate of this CA; an instance presents a
//! certificate of the service-instance profile of this CA, checked in the handshake (a user's
//! client certificate of the same CA is refused there). Both sides trust the issuing CA's
//! generations only, never a public root store.

use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(what: &str) -> impl Fn(rustls::Error) -> Error + '_ {
    move |e| Error::Store(format!("{what}: {e}"))
}

/// The certificates (PEM) of `path`, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = std::fs::read(path).map_err(Error::io("reading", path))?;
    let blocks = pem::parse_many(&text).map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
    let chain: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if chain.is_empty() {
        return Err(Error::Store(format!("{} holds no certificate (PEM)", path.display())));
    }
    Ok(chain)
}

/// The private key (PEM: PKCS#8, SEC1 or PKCS#1) of `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let text = zeroize::Zeroizing::new(std::fs::read(path).map_err(Error::io("reading", path))?);
    let block = pem::parse(&*text).map_err(|_| Error::Store(format!("{} is not a PEM private key", path.display())))?;
    let contents = block.contents().to_vec();
    match block.tag() {
        "PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs8(contents.into())),
        "EC PRIVATE KEY" => Ok(PrivateKeyDer::Sec1(contents.into())),
        "RSA PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs1(contents.into())),
        other => Err(Error::Store(format!("{}: a {other:?} block is not an unencrypted private key", path.display()))),
    }
}

fn roots(ca_certificates: &[Vec<u8>]) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for der in ca_certificates {
        roots.add(CertificateDer::from(der.clone())).map_err(tls_error("an issuing CA certificate"))?;
    }
    Ok(Arc::new(roots))
}

/// Accepts only this CA's service-instance certificates.
#[derive(Debug)]
struct InstanceVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for InstanceVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if !pki::certificate::is_service_instance(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The signer's side: its certificate chain and key (PEM files), and the issuing CA's
/// generations (DER) its clients' certificates must chain to.
pub fn server_config(
    chain: &Path,
    key: &Path,
    ca_certificates: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_certificates)?, provider())
        .build()
        .map_err(|e| Error::Store(format!("the client verifier: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("TLS versions"))?
        .with_client_cert_verifier(Arc::new(InstanceVerifier(inner)))
        .with_single_cert(read_chain(chain)?, read_key(key)?)
        .map_err(tls_error("the signer's TLS certificate and key"))?;
    Ok(Arc::new(config))
}

/// An instance's side: its service-instance certificate and key (PEM files), and the issuing
/// CA's generations (DER) the signer's certificate must chain to.
pub struct ClientSide(Arc<rustls::ClientConfig>);

impl ClientSide {
    /// Reads the instance's certificate and key.
    pub fn new(chain: &Path, key: &Path, ca_certificates: &[Vec<u8>]) -> Result<Self, Error> {
        let certs = read_chain(chain)?;
        if !pki::certificate::is_service_instance(&certs[0]) {
            return Err(Error::Store(format!(
                "{} is not a service-instance certificate (`inkan issue --profile service-instance`)",
                chain.display()
            )));
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error("TLS versions"))?
            .with_root_certificates(roots(ca_certificates)?)
            .with_client_auth_cert(certs, read_key(key)?)
            .map_err(tls_error("the instance's certificate and key"))?;
        Ok(Self(Arc::new(config)))
    }

    /// The configuration connections use.
    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        self.0.clone()
    }
}
