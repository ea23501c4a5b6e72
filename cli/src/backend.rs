//! The CA side as the enrollment service sees it, from the `ca` crate, in this process:
//! [`InProcessIssuer`] implements `enroll_server::backend::Issuer`.

use std::sync::Arc;

use anyhow::Context;
use ca::layout::{self, DataDir};
use ca::{CertificateAuthority, IssueRequest, Passphrase, SledStore};
use enroll_server::backend::{IssueError, Issuer};
use pki::request::{IssueOrder, IssuedCertificate};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::config::Config;

/// The issuing CA loaded in this process.
pub struct InProcessIssuer {
    authority: CertificateAuthority,
    root_der: Vec<u8>,
    dir: DataDir,
    crl_validity: time::Duration,
}

impl InProcessIssuer {
    /// Loads the issuing CA key with `passphrase`, over `registry`.
    pub fn open(
        dir: &DataDir,
        config: &Config,
        registry: Arc<SledStore>,
        passphrase: &Passphrase,
    ) -> anyhow::Result<Self> {
        let (signer, der) = ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), passphrase)?;
        let authority = CertificateAuthority::new(&der, Box::new(signer), registry, config.profile_settings())?;
        let root_der = layout::read_certificate(&dir.root_cert())?;
        Ok(Self { authority, root_der, dir: dir.clone(), crl_validity: config.crl_validity() })
    }

    /// The CA itself.
    pub fn authority(&self) -> &CertificateAuthority {
        &self.authority
    }
}

impl Issuer for InProcessIssuer {
    fn issue(&self, order: &IssueOrder) -> Result<IssuedCertificate, IssueError> {
        let request = IssueRequest {
            csr: &order.csr_der,
            account: &order.account,
            profile: order.profile,
            sans: &order.sans,
            days: order.days,
        };
        let issued = self.authority.issue(&request).map_err(|e| match e {
            ca::Error::Pki(pki::Error::Lint { .. } | pki::Error::Encoding { .. }) => {
                IssueError::Internal(e.to_string())
            }
            ca::Error::Pki(e) => IssueError::Rejected(e.to_string()),
            other => IssueError::Internal(other.to_string()),
        })?;
        Ok(IssuedCertificate {
            serial: issued.record.serial,
            der: issued.der,
            not_before: issued.record.not_before,
            not_after: issued.record.not_after,
        })
    }

    fn sign_crl(&self) -> Result<Vec<u8>, IssueError> {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let der = self.authority.sign_crl(now, self.crl_validity).map_err(|e| IssueError::Internal(e.to_string()))?;
        publish_crl(&self.dir, "ca.crl", &der).map_err(|e| IssueError::Internal(format!("{e:#}")))?;
        Ok(der)
    }

    fn ca_certificate(&self) -> &[u8] {
        self.authority.issuer().certificate_der()
    }

    fn root_certificate(&self) -> &[u8] {
        &self.root_der
    }
}

/// Keeps the latest CRL under DATA_DIR/crl/, where the HTTP listener serves it from.
pub fn publish_crl(dir: &DataDir, name: &str, der: &[u8]) -> anyhow::Result<()> {
    layout::create_private_dir(&dir.crl_dir())?;
    layout::replace(&dir.crl_dir().join(name), der, 0o644)?;
    Ok(())
}

/// The service's TLS certificate and key: issued by the CA for the configured names when
/// missing, expiring within 30 days, or made for other names.
pub fn ensure_server_certificate(
    dir: &DataDir,
    config: &Config,
    authority: &CertificateAuthority,
) -> anyhow::Result<enroll_server::tls::TlsMaterial> {
    let names = config.server_names()?;
    let names_file = dir.server_cert().with_file_name("names");
    let wanted_names = config.server.names.join("\n") + "\n";
    let current = std::fs::read(dir.server_cert()).ok().and_then(|pem| {
        let blocks = ::pem::parse_many(&pem).ok()?;
        let leaf = blocks.first()?.contents().to_vec();
        let summary = pki::certificate::Summary::from_der(&leaf).ok()?;
        let fresh = summary.not_after - OffsetDateTime::now_utc() > time::Duration::days(30);
        let same_names = std::fs::read_to_string(&names_file).ok()? == wanted_names;
        (fresh && same_names && dir.server_key().exists()).then_some(blocks)
    });
    if current.is_none() {
        let (issued, key) = ca::server_key::issue_server_certificate(authority, &names, 365)?;
        let server_dir = dir.server_cert().parent().map(ToOwned::to_owned).unwrap_or_default();
        layout::create_private_dir(&server_dir)?;
        let chain = pki::encoding::certificates_pem([issued.der.as_slice(), authority.issuer().certificate_der()]);
        let key_pem = zeroize::Zeroizing::new(pki::encoding::pem_encode("PRIVATE KEY", &key));
        let _ = std::fs::remove_file(dir.server_key());
        layout::write_new(&dir.server_key(), key_pem.as_bytes(), 0o600)?;
        layout::replace(&dir.server_cert(), chain.as_bytes(), 0o644)?;
        layout::replace(&names_file, wanted_names.as_bytes(), 0o644)?;
        tracing::info!(serial = %issued.record.serial, names = ?config.server.names, "issued the service's TLS certificate");
    }
    let chain_pem =
        std::fs::read(dir.server_cert()).with_context(|| format!("reading {}", dir.server_cert().display()))?;
    let chain = ::pem::parse_many(&chain_pem)
        .with_context(|| format!("reading {}", dir.server_cert().display()))?
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(dir.server_key()).with_context(|| format!("reading {}", dir.server_key().display()))?,
    );
    let key = ::pem::parse(key_pem.as_slice()).with_context(|| format!("reading {}", dir.server_key().display()))?;
    Ok(enroll_server::tls::TlsMaterial {
        chain,
        key: PrivatePkcs8KeyDer::from(key.into_contents()),
        client_ca: CertificateDer::from(authority.issuer().certificate_der().to_vec()),
    })
}
