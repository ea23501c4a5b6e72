//! The CA side as the enrollment service sees it: [`CaService`] implements
//! `enroll_server::backend::Issuer` over a signer — the `inkan signer` process on its socket
//! (what `serve` uses), or the CA loaded in this process for offline CLI commands — and records
//! what the signer returns in the registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ca::audit::AuditLog;
use ca::layout::{self, DataDir};
use ca::ledger::LogLedger;
use ca::remote::{RemoteError, SignerClient};
use ca::sled_store::Durability;
use ca::{CertRecord, CertificateAuthority, IssueRequest, Passphrase, Registry, SledStore, State};
use enroll_server::backend::{IssueError, Issuer};
use pki::request::{IssueOrder, IssuedCertificate};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::config::Config;

/// Where certificates get signed.
pub enum Signer {
    /// The CA key loaded here, over its ledger (offline CLI commands).
    Local(Box<CertificateAuthority>),
    /// A signer process.
    Remote(SignerClient),
}

/// The signer's ledger file in a data directory.
pub fn ledger_path(dir: &DataDir) -> std::path::PathBuf {
    dir.path().join("signer").join("ledger.log")
}

/// The signer's default socket in a data directory.
pub fn signer_socket(dir: &DataDir) -> std::path::PathBuf {
    dir.path().join("signer.sock")
}

/// Loads the issuing CA in this process, over its ledger.
pub fn local_authority(
    dir: &DataDir,
    config: &Config,
    passphrase: &Passphrase,
    durability: Durability,
) -> anyhow::Result<CertificateAuthority> {
    let (signer, der) = ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), passphrase)?;
    let path = ledger_path(dir);
    let ledger = LogLedger::open_with(&path, durability == Durability::Flush)
        .map_err(|e| super::commands::in_use(e.to_string(), &path))?;
    Ok(CertificateAuthority::new(&der, Box::new(signer), Arc::new(ledger), config.profile_settings())?)
}

/// The CA as the service and the operator commands use it.
pub struct CaService {
    signer: Signer,
    registry: Arc<SledStore>,
    ca_der: Vec<u8>,
    root_der: Vec<u8>,
    dir: DataDir,
    crl_validity: time::Duration,
    audit: Arc<AuditLog>,
}

impl CaService {
    /// A service over `signer`, recording into `registry`.
    pub fn new(
        signer: Signer,
        registry: Arc<SledStore>,
        dir: &DataDir,
        config: &Config,
        audit: Arc<AuditLog>,
    ) -> anyhow::Result<Self> {
        let (ca_der, root_der) = match &signer {
            Signer::Local(authority) => {
                (authority.issuer().certificate_der().to_vec(), layout::read_certificate(&dir.root_cert())?)
            }
            Signer::Remote(client) => client.ca_info().context("asking the signer for the CA certificates")?,
        };
        Ok(Self { signer, registry, ca_der, root_der, dir: dir.clone(), crl_validity: config.crl_validity(), audit })
    }

    fn sign(&self, order: &IssueOrder) -> Result<(pki::Serial, Vec<u8>), IssueError> {
        match &self.signer {
            Signer::Local(authority) => {
                let request = IssueRequest {
                    csr: &order.csr_der,
                    account: &order.account,
                    profile: order.profile,
                    sans: &order.sans,
                    days: order.days,
                    request_id: Some(order.request_id),
                };
                let issued = authority.issue(&request).map_err(|e| match e {
                    ca::Error::Pki(pki::Error::Lint { .. } | pki::Error::Encoding { .. }) => {
                        IssueError::Internal(e.to_string())
                    }
                    ca::Error::Pki(e) => IssueError::Rejected(e.to_string()),
                    e @ ca::Error::RequestIdReused => IssueError::Rejected(e.to_string()),
                    other => IssueError::Internal(other.to_string()),
                })?;
                Ok((issued.record.serial, issued.der))
            }
            Signer::Remote(client) => client
                .issue(order.request_id, &order.csr_der, &order.account, order.profile, &order.sans, order.days)
                .map_err(|e| match e {
                    RemoteError::Unavailable { .. } => IssueError::Unavailable(e.to_string()),
                    RemoteError::Rejected(message) => IssueError::Rejected(message),
                    other => IssueError::Internal(other.to_string()),
                }),
        }
    }
}

impl Issuer for CaService {
    fn issue(&self, order: &IssueOrder) -> Result<IssuedCertificate, IssueError> {
        let (serial, der) = self.sign(order)?;
        let summary = pki::certificate::Summary::from_der(&der).map_err(|e| IssueError::Internal(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let record = CertRecord {
            serial,
            account: order.account.clone(),
            profile: order.profile,
            key_sha256: summary.key_sha256,
            not_before: summary.not_before,
            not_after: summary.not_after,
            recorded_at: now.replace_nanosecond(0).unwrap_or(now),
            state: State::Issued,
        };
        // The audit line and the registry's record are synced side by side. The line names the
        // certificates this one supersedes as read just before.
        let supersedes: Vec<String> = if order.supersede {
            let now = OffsetDateTime::now_utc();
            self.registry
                .valid_by_account(&order.account)
                .map_err(|e| IssueError::Internal(e.to_string()))?
                .iter()
                .filter(|r| r.status(now) == ca::Status::Valid)
                .map(|r| r.serial.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let details = serde_json::json!({
            "serial": serial, "account": order.account, "profile": order.profile, "supersedes": supersedes,
        });
        let (superseded, audited) = std::thread::scope(|s| {
            let audited = s.spawn(|| self.audit.append("certificate.issued", details));
            let superseded = self.registry.record_certificate(&record, &der, order.supersede);
            (superseded, audited.join())
        });
        if !matches!(audited, Ok(Ok(_))) {
            tracing::error!(%serial, "audit log: writing certificate.issued failed");
        }
        let superseded = superseded.map_err(|e| IssueError::Internal(e.to_string()))?;
        Ok(IssuedCertificate { serial, der, not_before: summary.not_before, not_after: summary.not_after, superseded })
    }

    fn sign_crl(&self) -> Result<Vec<u8>, IssueError> {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let entries = self.registry.revoked_unexpired(now).map_err(|e| IssueError::Internal(e.to_string()))?;
        let der = match &self.signer {
            Signer::Local(authority) => authority
                .sign_crl_for(&entries, now, self.crl_validity)
                .map_err(|e| IssueError::Internal(e.to_string()))?,
            Signer::Remote(client) => client.sign_crl(&entries, self.crl_validity).map_err(|e| match e {
                RemoteError::Unavailable { .. } => IssueError::Unavailable(e.to_string()),
                other => IssueError::Internal(other.to_string()),
            })?,
        };
        publish_crl(&self.dir, "ca.crl", &der).map_err(|e| IssueError::Internal(format!("{e:#}")))?;
        let _ = self.audit.append("crl.published", serde_json::json!({ "entries": entries.len() }));
        Ok(der)
    }

    fn ca_certificate(&self) -> &[u8] {
        &self.ca_der
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
/// A key of the service's own (TLS, OCSP responder) and its certificate from the CA, kept in
/// two files beside a tag file naming what it was made for.
struct Credential<'a> {
    cert: PathBuf,
    key: PathBuf,
    tag: String,
    account: &'a str,
    profile: pki::Profile,
    sans: Vec<pki::San>,
    days: u32,
    /// Made again when less than this is left.
    renew_within: time::Duration,
    event: &'static str,
}

/// A certificate chain (DER, leaf first) and its key (PKCS#8 DER).
type ChainAndKey = (Vec<Vec<u8>>, zeroize::Zeroizing<Vec<u8>>);

/// The credential's chain (leaf first, then the issuing CA) and key (PKCS#8 DER), made again
/// when missing, expiring soon, or made for another tag.
fn ensure_credential(ca: &CaService, spec: &Credential<'_>) -> anyhow::Result<ChainAndKey> {
    let tag_file = spec.cert.with_extension("tag");
    let read_chain = |path: &Path| -> Option<Vec<Vec<u8>>> {
        let blocks = ::pem::parse_many(std::fs::read(path).ok()?).ok()?;
        Some(blocks.into_iter().map(::pem::Pem::into_contents).collect())
    };
    let current = read_chain(&spec.cert).filter(|chain| {
        let fresh = chain
            .first()
            .and_then(|leaf| pki::certificate::Summary::from_der(leaf).ok())
            .is_some_and(|s| s.not_after - OffsetDateTime::now_utc() > spec.renew_within);
        let same = std::fs::read_to_string(&tag_file).is_ok_and(|t| t == spec.tag);
        fresh && same && spec.key.exists() && chain.get(1).is_some_and(|c| c.as_slice() == ca.ca_certificate())
    });
    if current.is_none() {
        let (csr, key) = ca::server_key::server_key_and_csr()?;
        let mut request_id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut request_id).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let order = IssueOrder {
            csr_der: csr,
            account: spec.account.into(),
            profile: spec.profile,
            sans: spec.sans.clone(),
            days: Some(spec.days),
            request_id,
            supersede: true,
        };
        let issued = ca.issue(&order).map_err(|e| anyhow::anyhow!("issuing the {} certificate: {e}", spec.account))?;
        if let Some(parent) = spec.cert.parent() {
            layout::create_private_dir(parent)?;
        }
        let chain = pki::encoding::certificates_pem([issued.der.as_slice(), ca.ca_certificate()]);
        let key_pem = zeroize::Zeroizing::new(pki::encoding::pem_encode("PRIVATE KEY", &key));
        let _ = std::fs::remove_file(&spec.key);
        layout::write_new(&spec.key, key_pem.as_bytes(), 0o600)?;
        layout::replace(&spec.cert, chain.as_bytes(), 0o644)?;
        layout::replace(&tag_file, spec.tag.as_bytes(), 0o644)?;
        tracing::info!(serial = %issued.serial, account = spec.account, "issued a certificate for the service");
        ca.audit.append(
            spec.event,
            serde_json::json!({ "serial": issued.serial, "account": spec.account, "superseded": issued.superseded }),
        )?;
    }
    let chain = read_chain(&spec.cert).with_context(|| format!("reading {}", spec.cert.display()))?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(&spec.key).with_context(|| format!("reading {}", spec.key.display()))?);
    let key = ::pem::parse(key_pem.as_slice()).with_context(|| format!("reading {}", spec.key.display()))?;
    Ok((chain, zeroize::Zeroizing::new(key.into_contents())))
}

/// The service's TLS certificate and key: issued by the CA for the configured names when
/// missing, expiring within 30 days, or made for other names.
pub fn ensure_server_certificate(
    dir: &DataDir,
    config: &Config,
    ca: &CaService,
) -> anyhow::Result<enroll_server::tls::TlsMaterial> {
    let spec = Credential {
        cert: dir.server_cert(),
        key: dir.server_key(),
        tag: config.server.names.join("\n") + "\n",
        account: ca::server_key::SERVER_ACCOUNT,
        profile: pki::Profile::Server,
        sans: config.server_names()?,
        days: 365,
        renew_within: time::Duration::days(30),
        event: "service.certificate_issued",
    };
    let (chain, key) = ensure_credential(ca, &spec)?;
    Ok(enroll_server::tls::TlsMaterial {
        chain: chain.into_iter().map(CertificateDer::from).collect(),
        key: PrivatePkcs8KeyDer::from(key.to_vec()),
        client_ca: CertificateDer::from(ca.ca_certificate().to_vec()),
    })
}

/// The OCSP responder's certificate (id-kp-OCSPSigning, ocsp-nocheck) and key, renewed when
/// less than 30 of its 90 days are left.
pub fn ensure_ocsp_responder(dir: &DataDir, ca: &CaService) -> anyhow::Result<enroll_server::ocsp::OcspResponder> {
    let spec = Credential {
        cert: dir.path().join("ocsp").join("responder.crt"),
        key: dir.path().join("ocsp").join("responder.key"),
        tag: "ocsp-responder\n".into(),
        account: "inkan-ocsp",
        profile: pki::Profile::OcspResponder,
        sans: Vec::new(),
        days: 90,
        renew_within: time::Duration::days(30),
        event: "service.ocsp_certificate_issued",
    };
    let (chain, key) = ensure_credential(ca, &spec)?;
    let leaf = chain.first().context("the responder certificate file is empty")?;
    Ok(enroll_server::ocsp::OcspResponder::new(ca.ca_certificate(), leaf, &key)?)
}
