//! Certificate profiles: what a client, server, root or issuing CA certificate contains.
//!
//! Everything here is decided by the CA from its settings and the account, never by the CSR.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use yasna::Tag;

use crate::Error;

/// How far notBefore is set in the past, so a relying party whose clock is a little behind
/// does not see a certificate that is "not yet valid".
pub const BACKDATE: Duration = Duration::minutes(5);

/// The kind of end-entity certificate to issue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// TLS client authentication (the default): EKU clientAuth, no subject alternative names.
    #[default]
    Client,
    /// TLS server: EKU serverAuth and the DNS names and IP addresses the operator gives.
    Server,
    /// A machine that is both (EST under a label with an allowed-names policy): EKU clientAuth
    /// and serverAuth, the account as the subject's CN, and its names.
    #[serde(rename = "client-server")]
    ClientServer,
    /// A delegated OCSP responder (RFC 6960 §4.2.2.2): EKU OCSPSigning and id-pkix-ocsp-nocheck,
    /// no CRL distribution point or AIA (its status is not checked). Issued to the service's
    /// responder key only; not offered on the command line.
    #[serde(rename = "ocsp-responder")]
    OcspResponder,
    /// A service instance reaching the signer over TCP with mutual TLS: EKU clientAuth and
    /// [`INSTANCE_UNIT`] as the subject's OU, which no other profile sets; the signer accepts
    /// no other client certificate. Issued offline (`inkan issue --profile service-instance`
    /// with the CA key), never through the signer's wire.
    #[serde(rename = "service-instance")]
    Instance,
}

/// The organizational unit (OU) of a service instance's certificate.
pub const INSTANCE_UNIT: &str = "inkan service instance";

impl Profile {
    /// The profile's name as used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::ClientServer => "client-server",
            Self::OcspResponder => "ocsp-responder",
            Self::Instance => "service-instance",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Self::Client),
            "server" => Ok(Self::Server),
            "client-server" => Ok(Self::ClientServer),
            "service-instance" => Ok(Self::Instance),
            _ => Err(Error::UnknownProfile { found: s.chars().take(40).collect() }),
        }
    }
}

/// The CA's settings that go into every certificate it issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSettings {
    /// The organization (O=) of every subject.
    pub organization: String,
    /// The issuing CA's CRL URL, written as the CRL distribution point.
    pub crl_url: Option<String>,
    /// The issuing CA certificate's URL, written as AIA caIssuers.
    pub ca_issuers_url: Option<String>,
    /// The OCSP responder's URL, written as AIA ocsp.
    pub ocsp_url: Option<String>,
    /// Validity used when none is requested, in days.
    pub default_days: u32,
    /// The longest validity that may be requested, in days.
    pub max_days: u32,
    /// How many CRLs the revoked certificates are spread over (`crl_shards`); 1 is one CRL.
    /// With more, each certificate's CRL distribution point names its shard's CRL.
    pub crl_shards: u16,
}

impl ProfileSettings {
    /// The CRL distribution point written into the certificate with `serial`: the CRL URL, or
    /// its shard's (see [`crate::shard::Shard`]) when the CRL is partitioned.
    pub fn crl_url_for(&self, serial: &crate::Serial) -> Option<String> {
        let url = self.crl_url.as_deref()?;
        Some(if self.crl_shards > 1 {
            crate::shard::Shard::of(serial, self.crl_shards).url(url)
        } else {
            url.to_owned()
        })
    }
}

/// A subject alternative name for the server profile.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum San {
    /// A DNS name, lowercase; a leading `*.` label is a wildcard.
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl From<San> for String {
    fn from(san: San) -> Self {
        san.to_string()
    }
}

impl TryFrom<String> for San {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl San {
    /// Whether this name may be certified under the allowed `names`: an equal entry, or, for a
    /// DNS name without a wildcard, an entry `*.D` with the name under D at any depth.
    pub fn allowed_by(&self, names: &[San]) -> bool {
        names.iter().any(|allowed| match (self, allowed) {
            (a, b) if a == b => true,
            (San::Dns(name), San::Dns(pattern)) if !name.starts_with("*.") => {
                pattern.strip_prefix("*.").is_some_and(|domain| name.ends_with(&format!(".{domain}")))
            }
            _ => false,
        })
    }
}

impl FromStr for San {
    type Err = Error;

    /// An IP address, or a DNS name of letters, digits and hyphens in dot-separated labels
    /// (at most 63 bytes each, 253 in all), optionally starting with a `*.` wildcard label.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| Error::InvalidSan { san: s.chars().take(80).collect(), reason };
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let name = s.to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err(invalid("a DNS name has 1 to 253 characters"));
        }
        let body = name.strip_prefix("*.").unwrap_or(&name);
        let labels: Vec<&str> = body.split('.').collect();
        if labels.len() < 2 && name.starts_with("*.") {
            return Err(invalid("a wildcard needs at least two labels after it"));
        }
        for label in labels {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid("each label has 1 to 63 characters"));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(invalid(
                    "use letters, digits and hyphens (IDNs in their xn-- form); '*' only as the whole first label",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label cannot start or end with a hyphen"));
            }
        }
        Ok(Self::Dns(name))
    }
}

/// Checks an account identifier that becomes the subject's common name.
pub fn check_account(account: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidAccount { account: account.chars().take(80).collect(), reason };
    if account.is_empty() {
        return Err(invalid("it is empty"));
    }
    if account.chars().count() > 64 {
        return Err(invalid("at most 64 characters fit in a common name"));
    }
    if account.chars().any(char::is_control) {
        return Err(invalid("control characters are not allowed"));
    }
    if account.trim() != account {
        return Err(invalid("leading or trailing spaces are not allowed"));
    }
    Ok(())
}

/// The subject of an end-entity certificate: CN from the account (or first SAN), O from config.
pub(crate) fn end_entity_subject(settings: &ProfileSettings, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, settings.organization.as_str());
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The parameters of an end-entity certificate of `profile` (everything but key and issuer).
pub(crate) fn end_entity_params(
    settings: &ProfileSettings,
    profile: Profile,
    account: &str,
    sans: &[San],
    serial: &crate::Serial,
    validity: &crate::Validity,
    key: &crate::SubjectKey,
) -> Result<CertificateParams, Error> {
    check_account(account)?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_identifier());
    match profile {
        Profile::Client => {
            if !sans.is_empty() {
                return Err(Error::SanNotAllowed { profile: "client" });
            }
            params.distinguished_name = end_entity_subject(settings, account);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Profile::Server => {
            let first = sans.first().ok_or(Error::MissingSan)?;
            params.distinguished_name = end_entity_subject(settings, &first.to_string());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = sans.iter().map(rcgen_san).collect::<Result<_, _>>()?;
        }
        Profile::ClientServer => {
            if sans.is_empty() {
                return Err(Error::MissingSan);
            }
            params.distinguished_name = end_entity_subject(settings, account);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = sans.iter().map(rcgen_san).collect::<Result<_, _>>()?;
        }
        Profile::Instance => {
            if !sans.is_empty() {
                return Err(Error::SanNotAllowed { profile: "service-instance" });
            }
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, settings.organization.as_str());
            dn.push(DnType::OrganizationalUnitName, INSTANCE_UNIT);
            dn.push(DnType::CommonName, account);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Profile::OcspResponder => {
            if !sans.is_empty() {
                return Err(Error::SanNotAllowed { profile: "ocsp-responder" });
            }
            params.distinguished_name = end_entity_subject(settings, account);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
            params.custom_extensions.push(CustomExtension::from_oid_content(OID_OCSP_NOCHECK, vec![0x05, 0x00]));
            return Ok(params);
        }
    }
    if let Some(url) = settings.crl_url_for(serial) {
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url] }];
    }
    if let Some(aia) = authority_info_access(settings.ocsp_url.as_deref(), settings.ca_issuers_url.as_deref()) {
        params.custom_extensions.push(aia);
    }
    Ok(params)
}

fn rcgen_san(san: &San) -> Result<SanType, Error> {
    Ok(match san {
        San::Ip(ip) => SanType::IpAddress(*ip),
        San::Dns(name) => SanType::DnsName(
            name.as_str()
                .try_into()
                .map_err(|_| Error::InvalidSan { san: name.clone(), reason: "not an IA5 string" })?,
        ),
    })
}

/// The subject of a CA certificate: `CN=<org> <role>, O=<org>`.
fn ca_subject(organization: &str, role: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, format!("{organization} {role}"));
    dn
}

/// The self-signed root: CA:TRUE (critical, no path length), keyCertSign and cRLSign, SKI.
pub fn root_ca_params(
    organization: &str,
    serial: &crate::Serial,
    validity: &crate::Validity,
    key: &crate::SubjectKey,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_subject(organization, "Root CA");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_identifier());
    params
}

/// The issuing CA, signed by the root: CA:TRUE with pathLen 0, keyCertSign and cRLSign, SKI,
/// AKI, and the root's CRL and certificate URLs.
pub fn issuing_ca_params(
    organization: &str,
    serial: &crate::Serial,
    validity: &crate::Validity,
    key: &crate::SubjectKey,
    root_crl_url: Option<&str>,
    root_cert_url: Option<&str>,
    ocsp_url: Option<&str>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_subject(organization, "Issuing CA");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_identifier());
    if let Some(url) = root_crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.to_owned()] }];
    }
    if let Some(aia) = authority_info_access(ocsp_url, root_cert_url) {
        params.custom_extensions.push(aia);
    }
    params
}

/// Names the issuing CA of generation `generation` ("Issuing CA" for 1; each rollover's
/// successor is "Issuing CA 2", "3"...), so a certificate's issuer tells which one signed it.
pub fn name_issuing_ca_generation(params: &mut CertificateParams, organization: &str, generation: u16) {
    let name = if generation <= 1 { "Issuing CA".to_owned() } else { format!("Issuing CA {generation}") };
    params.distinguished_name = ca_subject(organization, &name);
}

const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
const OID_AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_AD_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];

/// The Authority Information Access extension (RFC 5280 §4.2.2.1), which rcgen has no
/// builder for: a SEQUENCE of (method, URI) pairs, OCSP first.
fn authority_info_access(ocsp: Option<&str>, ca_issuers: Option<&str>) -> Option<CustomExtension> {
    let entries: Vec<(&[u64], &str)> = [(OID_AD_OCSP, ocsp), (OID_AD_CA_ISSUERS, ca_issuers)]
        .into_iter()
        .filter_map(|(oid, url)| url.map(|u| (oid, u)))
        .collect();
    if entries.is_empty() {
        return None;
    }
    let content = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for (method, url) in &entries {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(method));
                    // accessLocation GeneralName: uniformResourceIdentifier [6] IMPLICIT IA5String
                    w.next().write_tagged_implicit(Tag::context(6), |w| w.write_ia5_string(url));
                });
            }
        });
    });
    Some(CustomExtension::from_oid_content(OID_AIA, content))
}

/// The longest validity inkan writes into any certificate: 100 years.
pub const MAX_DAYS: u32 = 36_525;

/// A certificate's validity period, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity (inclusive, RFC 5280).
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Validity of `days` days from `now`, backdated by [`BACKDATE`], inside the issuer's own
    /// validity when one is given (a self-signed root has none).
    pub fn for_days(now: OffsetDateTime, days: u32, issuer: Option<&Validity>) -> Result<Self, Error> {
        if days == 0 {
            return Err(Error::InvalidValidity { reason: "the validity must be at least 1 day".into() });
        }
        if days > MAX_DAYS {
            return Err(Error::InvalidValidity {
                reason: format!("{days} days; at most {MAX_DAYS} days are accepted"),
            });
        }
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut validity = Self { not_before: now - BACKDATE, not_after: now + Duration::days(i64::from(days)) };
        if let Some(issuer) = issuer {
            if issuer.not_after <= now {
                return Err(Error::InvalidValidity {
                    reason: format!("the issuing certificate expired at {}", issuer.not_after),
                });
            }
            if issuer.not_before > now {
                return Err(Error::InvalidValidity {
                    reason: format!("the issuing certificate is not valid before {}", issuer.not_before),
                });
            }
            validity.not_before = validity.not_before.max(issuer.not_before);
            validity.not_after = validity.not_after.min(issuer.not_after);
        }
        Ok(validity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_parse_and_normalise() {
        assert_eq!("Example.COM".parse(), Ok(San::Dns("example.com".into())));
        assert_eq!("*.example.com".parse(), Ok(San::Dns("*.example.com".into())));
        assert_eq!("127.0.0.1".parse(), Ok(San::Ip([127, 0, 0, 1].into())));
        assert!(matches!("::1".parse::<San>(), Ok(San::Ip(_))));
        for bad in ["", "a..b", "-a.com", "a-.com", "*.com", "a.*.com", "ex ample.com", "a_b.com", &"a".repeat(64)] {
            assert!(bad.parse::<San>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn accounts() {
        assert!(check_account("user-01").is_ok());
        assert!(check_account("山田太郎").is_ok());
        assert!(check_account("").is_err());
        assert!(check_account(" x").is_err());
        assert!(check_account("a\nb").is_err());
        assert!(check_account(&"x".repeat(65)).is_err());
    }

    #[test]
    fn validity_is_backdated_and_capped() {
        let now = time::macros::datetime!(2026-01-01 00:00:00.5 UTC);
        let issuer = Validity {
            not_before: time::macros::datetime!(2025-01-01 00:00 UTC),
            not_after: time::macros::datetime!(2026-06-01 00:00 UTC),
        };
        let v = Validity::for_days(now, 30, Some(&issuer)).expect("valid");
        assert_eq!(v.not_before, time::macros::datetime!(2025-12-31 23:55 UTC));
        assert_eq!(v.not_after, time::macros::datetime!(2026-01-31 00:00 UTC));
        let capped = Validity::for_days(now, 3650, Some(&issuer)).expect("capped");
        assert_eq!(capped.not_after, issuer.not_after);
        let young = Validity { not_before: now - Duration::minutes(1), ..issuer };
        let nested = Validity::for_days(now, 1, Some(&young)).expect("nested");
        assert_eq!(nested.not_before, young.not_before, "never starts before the issuer");
        assert!(Validity::for_days(now, 0, Some(&issuer)).is_err());
        let expired = Validity { not_after: now - Duration::days(1), ..issuer };
        assert!(Validity::for_days(now, 1, Some(&expired)).is_err(), "issuer already expired");
    }
}
