//! Certificate revocation lists: revocation reasons, and linted to-be-signed CRLs.

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::certificate::IssuerInfo;
use crate::key::SignatureAlgorithm;
use crate::{Error, Serial, lint, tbs};

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

    fn rcgen(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        match self {
            Self::Unspecified => None,
            Self::KeyCompromise => Some(R::KeyCompromise),
            Self::CaCompromise => Some(R::CaCompromise),
            Self::AffiliationChanged => Some(R::AffiliationChanged),
            Self::Superseded => Some(R::Superseded),
            Self::CessationOfOperation => Some(R::CessationOfOperation),
            Self::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
        }
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
        tbs::assemble(&self.tbs, self.algorithm, signature)
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

/// Builds and checks a v2 CRL with the authority key identifier and CRL number extensions.
pub fn prepare_crl(issuer: &IssuerInfo, order: &CrlOrder<'_>) -> Result<PreparedCrl, Error> {
    let second = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
    let (this_update, next_update) = (second(order.this_update), second(order.next_update));
    if next_update <= this_update {
        return Err(Error::InvalidValidity { reason: "nextUpdate must be after thisUpdate".into() });
    }
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&minimal_be(order.number)),
        issuing_distribution_point: None,
        revoked_certs: order
            .entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(e.serial.as_bytes()),
                revocation_time: second(e.revoked_at),
                reason_code: e.reason.rcgen(),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(issuer.key_id().to_vec()),
    };
    let tbs = tbs::capture("CRL", || params.signed_by(issuer.rcgen()))?;
    drop(params);
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
        },
    )?;
    Ok(PreparedCrl { tbs, algorithm: issuer.algorithm() })
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

    #[test]
    fn minimal_big_endian() {
        assert_eq!(minimal_be(0), [0]);
        assert_eq!(minimal_be(1), [1]);
        assert_eq!(minimal_be(0x1234), [0x12, 0x34]);
    }
}
