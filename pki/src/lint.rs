//! Pre-issuance checks: the to-be-signed bytes are parsed back with an independent parser
//! (x509-parser, not the rcgen encoder that wrote them) and compared with what the profile
//! asked for. A failure is an inkan bug; it stops issuance before anything is recorded or
//! signed.

use std::collections::HashSet;
use std::net::IpAddr;

use x509_parser::certificate::TbsCertificate;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::{RevokedCertificate, TbsCertList};
use x509_parser::x509::{X509Name, X509Version};

use crate::key::SignatureAlgorithm;
use crate::profile::{Profile, ProfileSettings, San, Validity};
use crate::{Error, Serial};

const OID_SKI: &str = "2.5.29.14";
const OID_KU: &str = "2.5.29.15";
const OID_SAN: &str = "2.5.29.17";
const OID_BC: &str = "2.5.29.19";
const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_REASON: &str = "2.5.29.21";
const OID_CRLDP: &str = "2.5.29.31";
const OID_IDP: &str = "2.5.29.28";
const OID_AKI: &str = "2.5.29.35";
const OID_EKU: &str = "2.5.29.37";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
const OID_OCSP_NOCHECK: &str = "1.3.6.1.5.5.7.48.1.5";
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
const OID_AD_CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";
const OID_CN: &str = "2.5.4.3";
const OID_O: &str = "2.5.4.10";
const OID_OU: &str = "2.5.4.11";

fn fail(check: &'static str, detail: impl Into<String>) -> Error {
    Error::Lint { check, detail: detail.into() }
}

fn ensure(ok: bool, check: &'static str, detail: impl FnOnce() -> String) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(fail(check, detail())) }
}

/// What an end-entity TBS certificate must contain.
pub(crate) struct EndEntity<'a> {
    pub serial: &'a Serial,
    pub algorithm: SignatureAlgorithm,
    pub issuer_subject: &'a [u8],
    pub issuer_key_id: &'a [u8],
    pub issuer_validity: &'a Validity,
    pub validity: &'a Validity,
    pub spki: &'a [u8],
    pub key_id: &'a [u8],
    pub profile: Profile,
    pub common_name: &'a str,
    pub sans: &'a [San],
    pub settings: &'a ProfileSettings,
}

pub(crate) fn end_entity(tbs_der: &[u8], want: &EndEntity<'_>) -> Result<(), Error> {
    let (rest, tbs) = TbsCertificate::from_der(tbs_der).map_err(|e| fail("parse", e.to_string()))?;
    ensure(rest.is_empty(), "parse", || "trailing bytes after the TBS certificate".into())?;
    ensure(tbs.version == X509Version::V3, "version", || format!("{:?}", tbs.version))?;
    ensure(tbs.raw_serial() == want.serial.as_bytes(), "serial", || tbs.raw_serial_as_string())?;
    ensure(algorithm_matches(&tbs.signature, want.algorithm), "signature-algorithm", || {
        tbs.signature.algorithm.to_id_string()
    })?;
    ensure(tbs.issuer.as_raw() == want.issuer_subject, "issuer-name", || tbs.issuer.to_string())?;
    ensure(tbs.issuer_uid.is_none() && tbs.subject_uid.is_none(), "unique-ids", || "present".into())?;

    let not_before = tbs.validity.not_before.timestamp();
    let not_after = tbs.validity.not_after.timestamp();
    ensure(
        not_before == want.validity.not_before.unix_timestamp()
            && not_after == want.validity.not_after.unix_timestamp(),
        "validity",
        || format!("{} .. {}", tbs.validity.not_before, tbs.validity.not_after),
    )?;
    ensure(not_before < not_after, "validity-order", || "notBefore is not before notAfter".into())?;
    ensure(
        not_before >= want.issuer_validity.not_before.unix_timestamp()
            && not_after <= want.issuer_validity.not_after.unix_timestamp(),
        "validity-nested",
        || "outside the issuer's validity".into(),
    )?;

    let unit = (want.profile == Profile::Instance).then_some(crate::profile::INSTANCE_UNIT);
    check_subject(&tbs.subject, &want.settings.organization, unit, want.common_name)?;
    ensure(tbs.subject_pki.raw == want.spki, "subject-public-key", || {
        "the encoded key differs from the CSR's SubjectPublicKeyInfo".into()
    })?;

    let mut expected: HashSet<&str> = [OID_SKI, OID_KU, OID_BC, OID_AKI, OID_EKU].into();
    if matches!(want.profile, Profile::Server | Profile::ClientServer) {
        expected.insert(OID_SAN);
    }
    if want.profile == Profile::OcspResponder {
        expected.insert(OID_OCSP_NOCHECK);
    } else {
        if want.settings.crl_url.is_some() {
            expected.insert(OID_CRLDP);
        }
        if want.settings.ca_issuers_url.is_some() || want.settings.ocsp_url.is_some() {
            expected.insert(OID_AIA);
        }
    }
    let mut seen = HashSet::new();
    for ext in tbs.extensions() {
        let oid = ext.oid.to_id_string();
        let Some(&name) = expected.get(oid.as_str()) else {
            return Err(fail("extensions", format!("unexpected extension {oid}")));
        };
        ensure(seen.insert(name), "extensions", || format!("duplicate extension {oid}"))?;
        if name == OID_OCSP_NOCHECK {
            // id-pkix-ocsp-nocheck ::= NULL, not critical (RFC 6960 §4.2.2.2.1).
            ensure(ext.value == [0x05, 0x00] && !ext.critical, "ocsp-nocheck", || format!("{:02x?}", ext.value))?;
            continue;
        }
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                ensure(ext.critical, "basic-constraints", || "not critical".into())?;
                ensure(!bc.ca && bc.path_len_constraint.is_none(), "basic-constraints", || format!("{bc:?}"))?;
            }
            ParsedExtension::KeyUsage(ku) => {
                ensure(ext.critical, "key-usage", || "not critical".into())?;
                ensure(ku.flags == 1, "key-usage", || format!("{ku}"))?;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let only_client = eku.client_auth && !eku.server_auth && !eku.ocsp_signing;
                let only_server = eku.server_auth && !eku.client_auth && !eku.ocsp_signing;
                let only_ocsp = eku.ocsp_signing && !eku.client_auth && !eku.server_auth;
                let client_and_server = eku.client_auth && eku.server_auth && !eku.ocsp_signing;
                let right = match want.profile {
                    Profile::Client | Profile::Instance => only_client,
                    Profile::Server => only_server,
                    Profile::ClientServer => client_and_server,
                    Profile::OcspResponder => only_ocsp,
                };
                let others =
                    eku.any || eku.code_signing || eku.email_protection || eku.time_stamping || !eku.other.is_empty();
                ensure(right && !others && !ext.critical, "extended-key-usage", || format!("{eku:?}"))?;
            }
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                ensure(ski.0 == want.key_id && !ext.critical, "subject-key-identifier", || format!("{ski:?}"))?;
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                let id = aki.key_identifier.as_ref().map(|k| k.0);
                ensure(
                    id == Some(want.issuer_key_id)
                        && aki.authority_cert_issuer.is_none()
                        && aki.authority_cert_serial.is_none()
                        && !ext.critical,
                    "authority-key-identifier",
                    || format!("{aki:?}"),
                )?;
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                let uris: Vec<&str> = points
                    .iter()
                    .flat_map(|p| match &p.distribution_point {
                        Some(DistributionPointName::FullName(names)) => uris(names),
                        _ => vec![],
                    })
                    .collect();
                let wanted = want.settings.crl_url_for(want.serial).unwrap_or_default();
                ensure(points.len() == 1 && uris == [wanted.as_str()], "crl-distribution-points", || {
                    format!("{uris:?}")
                })?;
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                let found: Vec<(String, Vec<&str>)> = aia
                    .iter()
                    .map(|d| (d.access_method.to_id_string(), uris(std::slice::from_ref(&d.access_location))))
                    .collect();
                let mut wanted = Vec::new();
                if let Some(url) = &want.settings.ocsp_url {
                    wanted.push((OID_AD_OCSP.to_owned(), vec![url.as_str()]));
                }
                if let Some(url) = &want.settings.ca_issuers_url {
                    wanted.push((OID_AD_CA_ISSUERS.to_owned(), vec![url.as_str()]));
                }
                ensure(found == wanted && !ext.critical, "authority-info-access", || format!("{found:?}"))?;
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                let found: Vec<San> = san
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(d) => Some(San::Dns((*d).to_owned())),
                        GeneralName::IPAddress(b) => ip(b).map(San::Ip),
                        _ => None,
                    })
                    .collect();
                ensure(
                    found == want.sans && found.len() == san.general_names.len() && !ext.critical,
                    "subject-alternative-name",
                    || format!("{:?}", san.general_names),
                )?;
            }
            other => {
                return Err(fail("extensions", format!("{oid} did not parse: {other:?}")));
            }
        }
    }
    ensure(seen.len() == expected.len(), "extensions", || {
        let missing: Vec<_> = expected.difference(&seen).collect();
        format!("missing {missing:?}")
    })
}

fn check_subject(
    subject: &X509Name<'_>,
    organization: &str,
    unit: Option<&str>,
    common_name: &str,
) -> Result<(), Error> {
    let attributes: Vec<(String, Option<&str>)> = subject
        .iter_rdn()
        .flat_map(|rdn| rdn.iter())
        .map(|attr| (attr.attr_type().to_id_string(), attr.as_str().ok()))
        .collect();
    let mut want = vec![(OID_O.to_owned(), Some(organization))];
    if let Some(unit) = unit {
        want.push((OID_OU.to_owned(), Some(unit)));
    }
    want.push((OID_CN.to_owned(), Some(common_name)));
    ensure(attributes == want, "subject", || subject.to_string())
}

fn uris<'a>(names: &[GeneralName<'a>]) -> Vec<&'a str> {
    names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn algorithm_matches(alg: &x509_parser::x509::AlgorithmIdentifier<'_>, want: SignatureAlgorithm) -> bool {
    let params_ok = match (want, &alg.parameters) {
        (SignatureAlgorithm::RsaPkcs1Sha256, Some(p)) => p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null,
        (SignatureAlgorithm::RsaPkcs1Sha256, None) => false,
        (_, params) => params.is_none(),
    };
    params_ok && alg.algorithm.to_id_string() == want.oid()
}

/// What a TBS CRL must contain.
pub(crate) struct Crl<'a> {
    pub algorithm: SignatureAlgorithm,
    pub issuer_subject: &'a [u8],
    pub issuer_key_id: &'a [u8],
    pub this_update: i64,
    pub next_update: i64,
    pub number: u64,
    pub entries: usize,
    /// A shard's URL: the issuingDistributionPoint it must carry.
    pub distribution_point: Option<&'a str>,
}

/// Checks a TBS CRL with x509-parser without collecting its entries: the TBS is split into its
/// elements; everything but the revoked list is parsed as a CRL of its own (a copy of a few
/// hundred bytes), and the list is read one entry at a time.
pub(crate) fn crl(tbs_der: &[u8], want: &Crl<'_>) -> Result<(), Error> {
    crate::encoding::check_der_lengths(tbs_der, "CRL").map_err(|e| fail("der", e.to_string()))?;
    let (tag, body, rest) = tlv(tbs_der).ok_or_else(|| fail("parse", "not a DER value"))?;
    ensure(tag == 0x30 && rest.is_empty(), "parse", || "not one SEQUENCE".into())?;
    // version, signature, issuer, thisUpdate, nextUpdate, then the revoked list (a SEQUENCE)
    // if any, then the extensions ([0]).
    let mut elements = Vec::new();
    let mut input = body;
    while !input.is_empty() {
        let (tag, _, rest) = tlv(input).ok_or_else(|| fail("parse", "a truncated element"))?;
        elements.push((tag, &input[..input.len() - rest.len()]));
        input = rest;
    }
    let list = match elements.get(5) {
        Some((0x30, list)) => Some(*list),
        _ => None,
    };
    let header: Vec<&[u8]> =
        elements.iter().enumerate().filter(|(i, _)| list.is_none() || *i != 5).map(|(_, (_, e))| *e).collect();
    let header_len: usize = header.iter().map(|e| e.len()).sum();
    let mut skeleton = Vec::with_capacity(header_len + 6);
    crate::der::header(&mut skeleton, 0x30, header_len);
    header.iter().for_each(|e| skeleton.extend_from_slice(e));

    let (rest, tbs) = TbsCertList::from_der(&skeleton).map_err(|e| fail("parse", e.to_string()))?;
    ensure(rest.is_empty(), "parse", || "trailing bytes after the TBS CRL".into())?;
    ensure(tbs.revoked_certificates.is_empty(), "parse", || "the revoked list is not where it belongs".into())?;
    ensure(tbs.version == Some(X509Version::V2), "version", || format!("{:?}", tbs.version))?;
    ensure(algorithm_matches(&tbs.signature, want.algorithm), "signature-algorithm", || {
        tbs.signature.algorithm.to_id_string()
    })?;
    ensure(tbs.issuer.as_raw() == want.issuer_subject, "issuer-name", || tbs.issuer.to_string())?;
    ensure(tbs.this_update.timestamp() == want.this_update, "this-update", || tbs.this_update.to_string())?;
    ensure(tbs.next_update.map(|t| t.timestamp()) == Some(want.next_update), "next-update", || {
        format!("{:?}", tbs.next_update)
    })?;

    let mut count = 0usize;
    if let Some(list) = list {
        let (_, mut entries, _) = tlv(list).ok_or_else(|| fail("entries", "a truncated list"))?;
        ensure(!entries.is_empty(), "entries", || "an empty revoked list must be left out".into())?;
        while !entries.is_empty() {
            let (rest, entry) = RevokedCertificate::from_der(entries).map_err(|e| fail("entries", e.to_string()))?;
            for ext in entry.extensions() {
                ensure(ext.oid.to_id_string() == OID_REASON && !ext.critical, "entry-extensions", || {
                    format!("unexpected entry extension {}", ext.oid)
                })?;
            }
            count += 1;
            entries = rest;
        }
    }
    ensure(count == want.entries, "entries", || format!("{count} entries, {} wanted", want.entries))?;

    let mut aki = false;
    let mut number = false;
    let mut idp = false;
    for ext in tbs.extensions() {
        match (ext.oid.to_id_string().as_str(), ext.parsed_extension()) {
            (OID_AKI, ParsedExtension::AuthorityKeyIdentifier(a)) if !aki => {
                aki = a.key_identifier.as_ref().map(|k| k.0) == Some(want.issuer_key_id);
            }
            (OID_CRL_NUMBER, ParsedExtension::CRLNumber(n)) if !number => {
                number = *n == want.number.into() && !ext.critical;
            }
            (OID_IDP, ParsedExtension::IssuingDistributionPoint(p)) if !idp && want.distribution_point.is_some() => {
                let names = match &p.distribution_point {
                    Some(DistributionPointName::FullName(names)) => uris(names),
                    _ => vec![],
                };
                idp = ext.critical
                    && names == [want.distribution_point.unwrap_or_default()]
                    && p.only_contains_user_certs
                    && !p.only_contains_ca_certs
                    && !p.indirect_crl
                    && !p.only_contains_attribute_certs
                    && p.only_some_reasons.is_none();
            }
            (oid, _) => {
                return Err(fail("crl-extensions", format!("unexpected or repeated extension {oid}")));
            }
        }
    }
    ensure(aki, "authority-key-identifier", || "missing or wrong".into())?;
    ensure(idp == want.distribution_point.is_some(), "issuing-distribution-point", || "missing or wrong".into())?;
    ensure(number, "crl-number", || "missing or wrong".into())
}

/// The tag, the content and what follows of the DER value at the start of `input` (lengths
/// were checked to be DER already).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)), rest)
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}
