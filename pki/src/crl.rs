//! Certificate revocation lists: revocation reasons, and linted to-be-signed CRLs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::certificate::IssuerInfo;
use crate::key::SignatureAlgorithm;
use crate::{Error, Serial, der, lint};

/// The reasons accepted by `inkan revoke`, as named in errors.
pub const ACCEPTED_REASONS: &str = "unspecified, keyCompromise, cACompromise, affiliationChanged, \
     superseded, cessationOfOperation, privilegeWithdrawn";

/// Why a certificate was revoked (RFC 5280 §5.3.1 CRLReason).
///
/// `certificateHold` and `removeFromCRL` are left out: inkan never un-revokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationReason {
    /// No reason given; written without a reasonCode extension, as RFC 5280 advises.
    #[serde(rename = "unspecified")]
    Unspecified,
    /// The subject's private key was, or may have been, compromised.
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    /// The CA's key was compromised.
    #[serde(rename = "cACompromise")]
    CaCompromise,
    /// The subject's name or other information changed.
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    /// Replaced by a new certificate (reissue).
    #[serde(rename = "superseded")]
    Superseded,
    /// No longer needed.
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    /// The subject's privileges were withdrawn.
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason inkan uses.
    pub const ALL: [Self; 7] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::PrivilegeWithdrawn => 9,
        }
    }

    /// The reason with CRLReason `code`, if inkan uses it.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = Error;

    /// The RFC 5280 name in any case, with or without hyphens (`keyCompromise`, `key-compromise`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded: String = s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_ascii_lowercase() == folded)
            .ok_or_else(|| Error::InvalidReason { input: s.chars().take(40).collect() })
    }
}

/// One revoked certificate in a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The revoked certificate's serial.
    pub serial: Serial,
    /// When the CA recorded the revocation.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

pub use crate::shard::{MAX_SHARDS, Shard};

/// What a CRL says, decided by the CA.
#[derive(Clone, Debug)]
pub struct CrlOrder<'a> {
    /// The CRL number: persisted by the caller, strictly increasing.
    pub number: u64,
    /// thisUpdate (the CA's clock).
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub entries: &'a [RevokedEntry],
    /// For a shard: its URL, written as the issuingDistributionPoint (critical, only end-entity
    /// certificates). `None` for the whole CRL.
    pub distribution_point: Option<&'a str>,
}

/// To-be-signed CRL bytes that passed the pre-issuance checks; consumed by signing.
#[derive(Debug)]
#[must_use = "a prepared CRL does nothing until it is signed"]
pub struct PreparedCrl {
    tbs: Vec<u8>,
    algorithm: SignatureAlgorithm,
}

impl PreparedCrl {
    /// The bytes the CA key signs.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs
    }

    /// The algorithm the signature must be made with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// Wraps the TBS bytes and the signature into the DER CRL.
    pub fn assemble(self, signature: &[u8]) -> Vec<u8> {
        let algorithm = self.algorithm.algorithm_identifier();
        // BIT STRING: one byte of unused bits, then the signature.
        let bits = 1 + signature.len();
        let body = self.tbs.len() + algorithm.len() + der::header_len(bits) + bits;
        let mut out = Vec::with_capacity(der::header_len(body) + body);
        der::header(&mut out, 0x30, body);
        out.extend_from_slice(&self.tbs);
        out.extend_from_slice(algorithm);
        der::header(&mut out, 0x03, bits);
        out.push(0);
        out.extend_from_slice(signature);
        out
    }
}

/// The thisUpdate and nextUpdate of a DER CRL: when it must be signed again.
pub fn validity(der: &[u8]) -> Result<(OffsetDateTime, Option<OffsetDateTime>), Error> {
    use x509_parser::prelude::FromDer;
    let (rest, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| Error::MalformedDer { what: "CRL", detail: e.to_string() })?;
    crate::encoding::expect_no_trailing(rest, "CRL")?;
    Ok((crl.last_update().to_datetime(), crl.next_update().map(|t| t.to_datetime())))
}

/// Builds and checks a v2 CRL with the authority key identifier and CRL number extensions
/// (and the issuingDistributionPoint of a shard).
///
/// The TBS is written straight into one buffer of its exact size, entry by entry (a million
/// entries are about 45 MB), and linted by walking it, one entry at a time: no second copy of
/// the list in another form.
pub fn prepare_crl(issuer: &IssuerInfo, order: &CrlOrder<'_>) -> Result<PreparedCrl, Error> {
    let second = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
    let (this_update, next_update) = (second(order.this_update), second(order.next_update));
    if next_update <= this_update {
        return Err(Error::InvalidValidity { reason: "nextUpdate must be after thisUpdate".into() });
    }
    let tbs = encode_tbs(issuer, order, this_update, next_update)?;
    lint::crl(
        &tbs,
        &lint::Crl {
            algorithm: issuer.algorithm(),
            issuer_subject: issuer.subject_der(),
            issuer_key_id: issuer.key_id(),
            this_update: this_update.unix_timestamp(),
            next_update: next_update.unix_timestamp(),
            number: order.number,
            entries: order.entries.len(),
            distribution_point: order.distribution_point,
        },
    )?;
    Ok(PreparedCrl { tbs, algorithm: issuer.algorithm() })
}

/// The DER of the CRL's TBSCertList (RFC 5280 §5.1.2).
fn encode_tbs(
    issuer: &IssuerInfo,
    order: &CrlOrder<'_>,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, Error> {
    const VERSION_2: [u8; 3] = [0x02, 0x01, 0x01];
    // Extension { extnID reasonCode, extnValue OCTET STRING { ENUMERATED code } } in
    // crlEntryExtensions: the code is the last byte.
    const REASON: [u8; 14] = [0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, 0x00];

    let time_len = |t: OffsetDateTime| der::time_len(t).ok_or_else(|| out_of_range(t));
    let entry_len = |e: &RevokedEntry| -> Result<usize, Error> {
        let reason = if e.reason == RevocationReason::Unspecified { 0 } else { REASON.len() };
        let t = time_len(second(e.revoked_at))?;
        Ok(2 + e.serial.as_bytes().len() + der::header_len(t) + t + reason)
    };
    let mut list_len = 0usize;
    for e in order.entries {
        let len = entry_len(e)?;
        list_len += der::header_len(len) + len;
    }

    let extensions = crl_extensions(issuer.key_id(), order.number, order.distribution_point);
    let (this_len, next_len) = (time_len(this_update)?, time_len(next_update)?);
    let algorithm = issuer.algorithm().algorithm_identifier();
    let mut body = VERSION_2.len()
        + algorithm.len()
        + issuer.subject_der().len()
        + der::header_len(this_len)
        + this_len
        + der::header_len(next_len)
        + next_len
        + der::header_len(extensions.len())
        + extensions.len();
    if !order.entries.is_empty() {
        body += der::header_len(list_len) + list_len;
    }

    let mut out = Vec::new();
    out.try_reserve_exact(der::header_len(body) + body)
        .map_err(|_| Error::Encoding { what: "CRL", detail: format!("no memory for {body} bytes") })?;
    der::header(&mut out, 0x30, body);
    out.extend_from_slice(&VERSION_2);
    out.extend_from_slice(algorithm);
    out.extend_from_slice(issuer.subject_der());
    der::time(&mut out, this_update);
    der::time(&mut out, next_update);
    if !order.entries.is_empty() {
        der::header(&mut out, 0x30, list_len);
        for e in order.entries {
            der::header(&mut out, 0x30, entry_len(e)?);
            der::header(&mut out, 0x02, e.serial.as_bytes().len());
            out.extend_from_slice(e.serial.as_bytes());
            der::time(&mut out, second(e.revoked_at));
            if e.reason != RevocationReason::Unspecified {
                out.extend_from_slice(&REASON[..REASON.len() - 1]);
                out.push(e.reason.code());
            }
        }
    }
    der::header(&mut out, 0xa0, extensions.len());
    out.extend_from_slice(&extensions);
    debug_assert_eq!(out.len(), out.capacity());
    Ok(out)
}

fn second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn out_of_range(t: OffsetDateTime) -> Error {
    Error::InvalidValidity { reason: format!("{t} cannot be written as an X.509 time") }
}

/// `Extensions` of the CRL: authorityKeyIdentifier, cRLNumber and, for a shard,
/// issuingDistributionPoint (critical).
fn crl_extensions(key_id: &[u8], number: u64, distribution_point: Option<&str>) -> Vec<u8> {
    let extension = |out: &mut Vec<u8>, oid: &[u8], critical: bool, value: &[u8]| {
        let critical_len = if critical { 3 } else { 0 };
        let body = oid.len() + critical_len + der::header_len(value.len()) + value.len();
        der::header(out, 0x30, body);
        out.extend_from_slice(oid);
        if critical {
            out.extend_from_slice(&[0x01, 0x01, 0xff]);
        }
        der::header(out, 0x04, value.len());
        out.extend_from_slice(value);
    };
    let mut list = Vec::new();
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    let mut aki = Vec::new();
    der::header(&mut aki, 0x30, der::header_len(key_id.len()) + key_id.len());
    der::header(&mut aki, 0x80, key_id.len());
    aki.extend_from_slice(key_id);
    extension(&mut list, &[0x06, 0x03, 0x55, 0x1d, 0x23], false, &aki);
    // CRLNumber ::= INTEGER (0..MAX), positive: a leading zero when the top bit is set.
    let mut digits = minimal_be(number);
    if digits[0] & 0x80 != 0 {
        digits.insert(0, 0);
    }
    let mut crl_number = Vec::new();
    der::header(&mut crl_number, 0x02, digits.len());
    crl_number.extend_from_slice(&digits);
    extension(&mut list, &[0x06, 0x03, 0x55, 0x1d, 0x14], false, &crl_number);
    if let Some(url) = distribution_point {
        // IssuingDistributionPoint ::= SEQUENCE { distributionPoint [0] { fullName [0]
        // GeneralNames { uniformResourceIdentifier [6] } }, onlyContainsUserCerts [1] TRUE }
        let uri = der::header_len(url.len()) + url.len();
        let full_name = der::header_len(uri) + uri;
        let body = der::header_len(full_name) + full_name + 3;
        let mut idp = Vec::new();
        der::header(&mut idp, 0x30, body);
        der::header(&mut idp, 0xa0, full_name);
        der::header(&mut idp, 0xa0, uri);
        der::header(&mut idp, 0x86, url.len());
        idp.extend_from_slice(url.as_bytes());
        idp.extend_from_slice(&[0x81, 0x01, 0xff]);
        extension(&mut list, &[0x06, 0x03, 0x55, 0x1d, 0x1c], true, &idp);
    }
    let mut out = Vec::with_capacity(der::header_len(list.len()) + list.len());
    der::header(&mut out, 0x30, list.len());
    out.extend_from_slice(&list);
    out
}

/// Big-endian bytes without leading zeros (one zero byte for 0).
fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_in_rfc_and_cli_forms() {
        assert_eq!("keyCompromise".parse(), Ok(RevocationReason::KeyCompromise));
        assert_eq!("key-compromise".parse(), Ok(RevocationReason::KeyCompromise));
        assert_eq!("CESSATIONOFOPERATION".parse(), Ok(RevocationReason::CessationOfOperation));
        assert!("certificateHold".parse::<RevocationReason>().is_err());
        assert!("lost".parse::<RevocationReason>().is_err());
    }

    fn test_issuer() -> IssuerInfo {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "CRL test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![9; 20]);
        IssuerInfo::from_der(params.self_signed(&key).expect("CA").der()).expect("issuer")
    }

    fn entries(n: usize, now: OffsetDateTime) -> Vec<RevokedEntry> {
        (0..n)
            .map(|i| {
                let mut bytes = [0u8; 16];
                for (j, b) in bytes.iter_mut().enumerate() {
                    *b = (i.wrapping_mul(2_654_435_761).wrapping_add(j * 97) >> (j % 5)) as u8;
                }
                bytes[0] = 0x40;
                RevokedEntry {
                    serial: Serial::from_random(bytes).expect("serial"),
                    revoked_at: now - time::Duration::seconds(i as i64 * 37),
                    reason: RevocationReason::ALL[i % RevocationReason::ALL.len()],
                }
            })
            .collect()
    }

    /// What rcgen (another encoder) makes of the same order, TBS bytes.
    fn rcgen_tbs(issuer: &IssuerInfo, order: &CrlOrder<'_>) -> Vec<u8> {
        let reason = |r: RevocationReason| {
            use rcgen::RevocationReason as R;
            match r {
                RevocationReason::Unspecified => None,
                RevocationReason::KeyCompromise => Some(R::KeyCompromise),
                RevocationReason::CaCompromise => Some(R::CaCompromise),
                RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
                RevocationReason::Superseded => Some(R::Superseded),
                RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
                RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
            }
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: order.this_update,
            next_update: order.next_update,
            crl_number: rcgen::SerialNumber::from_slice(&minimal_be(order.number)),
            issuing_distribution_point: order.distribution_point.map(|url| rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint { uris: vec![url.to_owned()] },
                scope: Some(rcgen::CrlScope::UserCertsOnly),
            }),
            revoked_certs: order
                .entries
                .iter()
                .map(|e| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(e.serial.as_bytes()),
                    revocation_time: e.revoked_at,
                    reason_code: reason(e.reason),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::PreSpecified(issuer.key_id().to_vec()),
        };
        crate::tbs::capture("CRL", || params.signed_by(issuer.rcgen())).expect("rcgen")
    }

    #[test]
    fn the_crl_encoder_writes_what_rcgen_writes() {
        let issuer = test_issuer();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let listed = entries(300, now);
        let url = "http://ca.example:8080/crl/ca-16-3.crl";
        for (entries, number, distribution_point) in [
            (&listed[..], 7, None),
            (&listed[..], 200, Some(url)),
            (&[][..], 1, None),
            (&listed[..1], 0x1234_5678, Some(url)),
        ] {
            let order = CrlOrder {
                number,
                this_update: now,
                next_update: now + time::Duration::days(7),
                entries,
                distribution_point,
            };
            let ours = prepare_crl(&issuer, &order).expect("prepared");
            assert_eq!(
                ours.tbs_der(),
                rcgen_tbs(&issuer, &order),
                "{} entries, IDP {distribution_point:?}",
                entries.len()
            );
        }
        // After 2049 the times are GeneralizedTime (RFC 5280 §5.1.2.4).
        let late = OffsetDateTime::from_unix_timestamp(2_600_000_000).expect("time");
        let order = CrlOrder {
            number: 3,
            this_update: late,
            next_update: late + time::Duration::days(7),
            entries: &entries(3, late),
            distribution_point: None,
        };
        let ours = prepare_crl(&issuer, &order).expect("prepared");
        assert_eq!(ours.tbs_der(), rcgen_tbs(&issuer, &order));
        let signed = ours.assemble(&[0x30, 0x00]);
        assert_eq!(validity(&signed).expect("parses"), (late, Some(late + time::Duration::days(7))));
    }

    #[test]
    fn the_lint_refuses_a_crl_that_is_not_what_was_ordered() {
        let issuer = test_issuer();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let listed = entries(5, now);
        let url = "http://ca.example:8080/crl/ca-2-1.crl";
        let order = CrlOrder {
            number: 1,
            this_update: now,
            next_update: now + time::Duration::days(1),
            entries: &listed,
            distribution_point: Some(url),
        };
        let tbs = encode_tbs(&issuer, &order, order.this_update, order.next_update).expect("tbs");
        let want = |entries: usize, distribution_point: Option<&'static str>, number: u64| lint::Crl {
            algorithm: issuer.algorithm(),
            issuer_subject: issuer.subject_der(),
            issuer_key_id: issuer.key_id(),
            this_update: now.unix_timestamp(),
            next_update: (now + time::Duration::days(1)).unix_timestamp(),
            number,
            entries,
            distribution_point,
        };
        let check = |w: lint::Crl<'_>| match lint::crl(&tbs, &w) {
            Err(Error::Lint { check, .. }) => Some(check),
            Ok(()) => None,
            Err(other) => panic!("{other}"),
        };
        assert_eq!(check(want(5, Some(url), 1)), None);
        assert_eq!(check(want(4, Some(url), 1)), Some("entries"));
        assert_eq!(check(want(5, None, 1)), Some("crl-extensions"));
        assert_eq!(
            check(want(5, Some("http://ca.example:8080/crl/ca-2-0.crl"), 1)),
            Some("issuing-distribution-point")
        );
        assert_eq!(check(want(5, Some(url), 2)), Some("crl-number"));
        let mut cut = tbs.clone();
        cut.truncate(tbs.len() - 1);
        assert!(lint::crl(&cut, &want(5, Some(url), 1)).is_err());
    }

    #[test]
    fn shards_spread_serials_and_name_their_urls() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let mut counts = [0usize; 16];
        for e in entries(16_000, now) {
            let shard = Shard::of(&e.serial, 16);
            assert_eq!(shard.count, 16);
            counts[usize::from(shard.index)] += 1;
        }
        assert!(counts.iter().all(|n| (700..1300).contains(n)), "{counts:?}");
        let shard = Shard { count: 16, index: 3 };
        assert_eq!(shard.url("http://h:8080/crl/ca.crl"), "http://h:8080/crl/ca-16-3.crl");
        assert_eq!(shard.url("http://h:8080/crl/2/ca.crl"), "http://h:8080/crl/2/ca-16-3.crl");
        assert_eq!(Shard::all(3).collect::<Vec<_>>().len(), 3);
    }

    #[test]
    fn minimal_big_endian() {
        assert_eq!(minimal_be(0), [0]);
        assert_eq!(minimal_be(1), [1]);
        assert_eq!(minimal_be(0x1234), [0x12, 0x34]);
    }
}
