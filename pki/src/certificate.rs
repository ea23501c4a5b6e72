//! End-entity certificates: from a validated CSR and an order to linted to-be-signed bytes
//! ([`PreparedCertificate`]), and from those bytes and a signature to the certificate.

use std::fmt;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::csr::ValidatedCsr;
use crate::key::{SignatureAlgorithm, SubjectKey};
use crate::profile::{self, Profile, ProfileSettings, San, Validity};
use crate::tbs::{self, TbsCapture};
use crate::{Error, Serial, lint};

/// A CA certificate that issues: its name, key identifier, key, validity and algorithm.
/// Holds no private key.
pub struct IssuerInfo {
    der: Vec<u8>,
    subject: Vec<u8>,
    subject_text: String,
    key_id: Vec<u8>,
    key: SubjectKey,
    algorithm: SignatureAlgorithm,
    validity: Validity,
    rcgen: rcgen::Issuer<'static, TbsCapture>,
}

impl fmt::Debug for IssuerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerInfo")
            .field("subject", &self.subject_text)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl IssuerInfo {
    /// Reads a CA certificate (DER). It must be a CA (basicConstraints cA), allowed to sign
    /// certificates and CRLs, carry a subject key identifier, and have an accepted key type.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let invalid = |detail: &str| Error::InvalidIssuer { detail: detail.into() };
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| Error::InvalidIssuer { detail: e.to_string() })?;
        crate::encoding::expect_no_trailing(rest, "CA certificate")?;
        let mut key_id = None;
        let mut is_ca = false;
        let mut can_sign = false;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => key_id = Some(id.0.to_vec()),
                ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
                ParsedExtension::KeyUsage(ku) => can_sign = ku.key_cert_sign() && ku.crl_sign(),
                _ => {}
            }
        }
        if !is_ca {
            return Err(invalid("it is not a CA certificate (basicConstraints cA is not set)"));
        }
        if !can_sign {
            return Err(invalid("its key usage does not allow keyCertSign and cRLSign"));
        }
        let key_id = key_id.ok_or_else(|| invalid("it has no subject key identifier"))?;
        let key = SubjectKey::from_parsed(cert.public_key())?;
        let algorithm = SignatureAlgorithm::for_key(key.kind());
        let validity = Validity {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        };
        let capture = TbsCapture::new(cert.public_key().subject_public_key.data.to_vec(), algorithm);
        let rcgen = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(der), capture)
            .map_err(|e| Error::InvalidIssuer { detail: e.to_string() })?;
        Ok(Self {
            der: der.to_vec(),
            subject: cert.subject().as_raw().to_vec(),
            subject_text: cert.subject().to_string(),
            key_id,
            key,
            algorithm,
            validity,
            rcgen,
        })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// The CA's public key.
    pub fn public_key(&self) -> &SubjectKey {
        &self.key
    }

    /// The algorithm this CA signs with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The CA certificate's validity.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// The CA's subject, as text (`O=..., CN=...`).
    pub fn subject(&self) -> &str {
        &self.subject_text
    }

    /// The CA's subject key identifier (the AKI of what it issues).
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The CA's subject name, DER (what OCSP CertIDs hash).
    pub fn subject_name_der(&self) -> &[u8] {
        &self.subject
    }

    pub(crate) fn subject_der(&self) -> &[u8] {
        &self.subject
    }

    pub(crate) fn rcgen(&self) -> &rcgen::Issuer<'static, TbsCapture> {
        &self.rcgen
    }
}

/// Everything the CA decided about one end-entity certificate, besides the key.
#[derive(Debug, Clone)]
pub struct CertificateOrder<'a> {
    /// A fresh serial, unique in the registry.
    pub serial: Serial,
    /// The account the certificate is for; its ID becomes the common name.
    pub account: &'a str,
    /// Which profile to apply.
    pub profile: Profile,
    /// Subject alternative names (server profile only).
    pub sans: &'a [San],
    /// Validity in days, or `None` for the configured default.
    pub days: Option<u32>,
    /// The CA's clock, read by the caller.
    pub now: OffsetDateTime,
}

/// To-be-signed certificate bytes that passed the pre-issuance checks. Signing consumes it
/// ([`PreparedCertificate::assemble`]), so one preparation yields at most one certificate.
#[derive(Debug)]
#[must_use = "a prepared certificate does nothing until it is recorded and signed"]
pub struct PreparedCertificate {
    tbs: Vec<u8>,
    algorithm: SignatureAlgorithm,
    serial: Serial,
    validity: Validity,
    key_sha256: [u8; 32],
    profile: Profile,
}

impl PreparedCertificate {
    /// The bytes the CA key signs.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs
    }

    /// The algorithm the signature must be made with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The certificate's serial.
    pub fn serial(&self) -> Serial {
        self.serial
    }

    /// The certificate's validity.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// SHA-256 of the certified SubjectPublicKeyInfo.
    pub fn key_sha256(&self) -> [u8; 32] {
        self.key_sha256
    }

    /// The profile applied.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Wraps the TBS bytes and `signature` (made over [`Self::tbs_der`] with
    /// [`Self::algorithm`]) into the DER certificate.
    pub fn assemble(self, signature: &[u8]) -> Vec<u8> {
        tbs::assemble(&self.tbs, self.algorithm, signature)
    }
}

/// Builds and checks the to-be-signed certificate for `csr` under `order`.
///
/// The subject is `O=<organization>, CN=<account>` (server: CN is the first SAN), the
/// extensions are the profile's; nothing is taken from the CSR but its public key.
pub fn prepare(
    issuer: &IssuerInfo,
    settings: &ProfileSettings,
    csr: &ValidatedCsr,
    order: &CertificateOrder<'_>,
) -> Result<PreparedCertificate, Error> {
    let key = csr.key();
    if key.spki_der() == issuer.public_key().spki_der() {
        return Err(Error::CaKeyReused);
    }
    let days = order.days.unwrap_or(settings.default_days);
    if days > settings.max_days {
        return Err(Error::InvalidValidity {
            reason: format!(
                "{days} days requested; at most {} are allowed ([ca] max_days in inkan.toml)",
                settings.max_days
            ),
        });
    }
    let validity = Validity::for_days(order.now, days, Some(&issuer.validity))?;
    let params =
        profile::end_entity_params(settings, order.profile, order.account, order.sans, &order.serial, &validity, key)?;
    let tbs = tbs::capture("certificate", || params.signed_by(key, issuer.rcgen()))?;
    let common_name = match order.profile {
        Profile::Client | Profile::ClientServer | Profile::OcspResponder | Profile::Instance => {
            order.account.to_owned()
        }
        Profile::Server => order.sans.first().map(ToString::to_string).unwrap_or_default(),
    };
    lint::end_entity(
        &tbs,
        &lint::EndEntity {
            serial: &order.serial,
            algorithm: issuer.algorithm,
            issuer_subject: &issuer.subject,
            issuer_key_id: &issuer.key_id,
            issuer_validity: &issuer.validity,
            validity: &validity,
            spki: key.spki_der(),
            key_id: &key.key_identifier(),
            profile: order.profile,
            common_name: &common_name,
            sans: order.sans,
            settings,
        },
    )?;
    Ok(PreparedCertificate {
        tbs,
        algorithm: issuer.algorithm,
        serial: order.serial,
        validity,
        key_sha256: key.sha256(),
        profile: order.profile,
    })
}

/// What a person wants to see of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Subject, as `O=..., CN=...`.
    pub subject: String,
    /// Issuer, likewise.
    pub issuer: String,
    /// Serial, uppercase hex as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, as colon-separated uppercase hex.
    pub sha256_fingerprint: String,
    /// The key type, when it is one inkan accepts.
    pub key: Option<crate::KeyKind>,
    /// SHA-256 of the SubjectPublicKeyInfo (the registry's key index).
    pub key_sha256: [u8; 32],
    /// Its DNS names and IP addresses (subjectAltName), as written.
    pub sans: Vec<String>,
}

impl Summary {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::MalformedDer { what: "certificate", detail: e.to_string() })?;
        crate::encoding::expect_no_trailing(rest, "certificate")?;
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            sha256_fingerprint: fingerprint(der),
            key: SubjectKey::from_parsed(cert.public_key()).ok().map(|k| k.kind()),
            key_sha256: {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
                let mut out = [0; 32];
                out.copy_from_slice(digest.as_ref());
                out
            },
            sans: cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|ext| {
                    ext.value
                        .general_names
                        .iter()
                        .filter_map(|name| match name {
                            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                                    Some(std::net::IpAddr::from(v4).to_string())
                                } else {
                                    <[u8; 16]>::try_from(*bytes).ok().map(|v6| std::net::IpAddr::from(v6).to_string())
                                }
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// SHA-256 of `der` as colon-separated uppercase hex (`openssl x509 -fingerprint -sha256`).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The public key of a DER certificate, under the key policy.
pub fn public_key_of(der: &[u8]) -> Result<SubjectKey, Error> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::MalformedDer { what: "certificate", detail: e.to_string() })?;
    crate::encoding::expect_no_trailing(rest, "certificate")?;
    SubjectKey::from_parsed(cert.public_key())
}

/// The organization (O=) of a certificate's subject: what inkan names its CAs after.
pub fn subject_organization(der: &[u8]) -> Result<String, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::Encoding { what: "certificate", detail: e.to_string() })?;
    cert.subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Encoding { what: "certificate", detail: "its subject has no organization (O=)".into() })
}

/// Whether a certificate is of the service-instance profile: its subject's only OU is
/// [`profile::INSTANCE_UNIT`] (no other profile sets an OU) and its EKU is clientAuth alone.
/// The chain is the caller's to verify.
pub fn is_service_instance(der: &[u8]) -> bool {
    let Ok((rest, cert)) = X509Certificate::from_der(der) else { return false };
    if !rest.is_empty() {
        return false;
    }
    let units: Vec<_> = cert.subject().iter_organizational_unit().map(|u| u.as_str().ok()).collect();
    let client_only = matches!(
        cert.extended_key_usage(),
        Ok(Some(eku)) if eku.value.client_auth && !eku.value.server_auth && !eku.value.ocsp_signing && !eku.value.any
    );
    units == [Some(profile::INSTANCE_UNIT)] && client_only
}
