//! OCSP (RFC 6960), in the lightweight profile of RFC 5019: one certificate per request, no
//! nonce, responses signed by a delegated responder and valid long enough to be cached.
//!
//! [`parse_request`] reads a request strictly; [`prepare_response`] builds the to-be-signed
//! `ResponseData` for one certificate; [`PreparedResponse::assemble`] wraps it with the
//! responder's signature and certificate into an `OCSPResponse`. [`error_response`] makes the
//! unsigned error answers.

use aws_lc_rs::digest;
use time::OffsetDateTime;
use yasna::models::{GeneralizedTime, ObjectIdentifier};
use yasna::{ASN1Error, ASN1ErrorKind, Tag};

use crate::certificate::IssuerInfo;
use crate::key::{SignatureAlgorithm, SubjectKey};
use crate::{Error, RevocationReason};

/// The largest request accepted.
pub const MAX_REQUEST: usize = 4096;

const OID_SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const OID_BASIC: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 1];

/// The hash a request's CertID uses for the issuer's name and key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertIdHash {
    /// SHA-1, what most clients send (`openssl ocsp` by default).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl CertIdHash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// The certificate a request asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The hash of the issuer fields.
    pub hash: CertIdHash,
    /// Hash of the issuer's name (DER).
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's public key (the BIT STRING's value).
    pub issuer_key_hash: Vec<u8>,
    /// The serial number's content octets, as sent.
    pub serial: Vec<u8>,
    /// The CertID's DER, echoed in the response.
    der: Vec<u8>,
}

impl CertId {
    /// Whether it names `issuer` (name and key hashes both match).
    pub fn is_issued_by(&self, issuer: &IssuerInfo) -> bool {
        self.issuer_name_hash == self.hash.digest(issuer.subject_der())
            && self.issuer_key_hash == self.hash.digest(issuer.public_key().key_bits())
    }
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::MalformedDer { what: "OCSP request", detail: detail.into() }
}

/// Parses a DER `OCSPRequest` for exactly one certificate. Extensions (a nonce) are read and
/// ignored, as RFC 5019 allows; a request signature is ignored.
pub fn parse_request(der: &[u8]) -> Result<CertId, Error> {
    if der.is_empty() {
        return Err(Error::Empty { what: "OCSP request" });
    }
    if der.len() > MAX_REQUEST {
        return Err(Error::TooLarge { what: "OCSP request", size: der.len(), limit: MAX_REQUEST });
    }
    // Every length checked first: yasna 0.6 adds a length to its position unchecked, which
    // overflows (a panic, or a wrong position in a release build) for a length near usize::MAX.
    crate::encoding::check_der_lengths(der, "OCSP request")?;
    let ids = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let ids = r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
                r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
                let mut ids = Vec::new();
                r.next().read_sequence_of(|r| {
                    r.read_sequence(|r| {
                        ids.push(r.next().read_der()?);
                        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                        Ok(())
                    })
                })?;
                r.read_optional(|r| r.read_tagged(Tag::context(2), |r| r.read_der()))?;
                Ok(ids)
            })?;
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
            Ok(ids)
        })
    })
    .map_err(|e| malformed(format!("{e}")))?;
    let [id] = ids.as_slice() else {
        return Err(malformed(format!("{} certificates asked about; one per request is served", ids.len())));
    };
    let (hash, name_hash, key_hash, serial) = yasna::parse_der(id, |r| {
        r.read_sequence(|r| {
            let hash = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_null())?;
                Ok(oid)
            })?;
            let name_hash = r.next().read_bytes()?;
            let key_hash = r.next().read_bytes()?;
            let (serial, positive) = r.next().read_bigint_bytes()?;
            if !positive {
                return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
            }
            Ok((hash, name_hash, key_hash, serial))
        })
    })
    .map_err(|e| malformed(format!("CertID: {e}")))?;
    let hash = if hash == ObjectIdentifier::from_slice(OID_SHA1) {
        CertIdHash::Sha1
    } else if hash == ObjectIdentifier::from_slice(OID_SHA256) {
        CertIdHash::Sha256
    } else {
        return Err(malformed(format!("CertID hash {hash} is not served; use SHA-1 or SHA-256")));
    };
    Ok(CertId { hash, issuer_name_hash: name_hash, issuer_key_hash: key_hash, serial, der: id.clone() })
}

/// The DER `CertID` of `serial` from the issuer with `issuer_name` (DER) and `issuer_key`
/// (subjectPublicKey bits), hashed with `hash`.
fn cert_id_der(hash: CertIdHash, issuer_name: &[u8], issuer_key: &[u8], serial: &[u8]) -> Vec<u8> {
    let oid = match hash {
        CertIdHash::Sha1 => OID_SHA1,
        CertIdHash::Sha256 => OID_SHA256,
    };
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                w.next().write_null();
            });
            w.next().write_bytes(&hash.digest(issuer_name));
            w.next().write_bytes(&hash.digest(issuer_key));
            w.next().write_bigint_bytes(serial, true);
        });
    })
}

impl CertId {
    /// The CertID of the serial `serial` (its magnitude, big-endian) issued by `issuer`, hashed
    /// with `hash`: what a responder answers about when it signs apart from the request.
    pub fn for_serial(issuer: &IssuerInfo, hash: CertIdHash, serial: &[u8]) -> Self {
        let (name, key) = (issuer.subject_der(), issuer.public_key().key_bits());
        Self {
            hash,
            issuer_name_hash: hash.digest(name),
            issuer_key_hash: hash.digest(key),
            serial: serial.to_vec(),
            der: cert_id_der(hash, name, key, serial),
        }
    }
}

/// A DER `OCSPRequest` for one certificate: `serial` from the issuer with `issuer_name`
/// (DER) and `issuer_key` (subjectPublicKey bits), hashed with `hash`.
pub fn request_for(hash: CertIdHash, issuer_name: &[u8], issuer_key: &[u8], serial: &crate::Serial) -> Vec<u8> {
    let id = cert_id_der(hash, issuer_name, issuer_key, serial.as_bytes());
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_sequence_of(|w| {
                    w.next().write_sequence(|w| w.next().write_der(&id));
                });
            });
        });
    })
}

/// What the responder says about a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked at this time, for this reason (none for unspecified).
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// Why, if a reason was given.
        reason: Option<RevocationReason>,
    },
    /// Not a certificate this CA knows.
    Unknown,
}

/// The delegated responder: its certificate, its public key, its signing algorithm.
#[derive(Debug, Clone)]
pub struct Responder {
    certificate: Vec<u8>,
    key_hash: Vec<u8>,
    algorithm: SignatureAlgorithm,
}

impl Responder {
    /// A responder from its certificate (DER) and the key type that signs for it.
    pub fn new(certificate_der: &[u8]) -> Result<Self, Error> {
        let summary = crate::certificate::Summary::from_der(certificate_der)?;
        let key =
            summary.key.ok_or(Error::InvalidIssuer { detail: "the responder key type is not supported".into() })?;
        let spki = crate::certificate::public_key_of(certificate_der)?;
        Ok(Self {
            certificate: certificate_der.to_vec(),
            key_hash: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, spki.key_bits()).as_ref().to_vec(),
            algorithm: SignatureAlgorithm::for_key(key),
        })
    }
}

/// A `ResponseData` ready to be signed by the responder; consumed by [`Self::assemble`].
#[derive(Debug)]
#[must_use = "a prepared response does nothing until it is signed"]
pub struct PreparedResponse {
    tbs: Vec<u8>,
    algorithm: SignatureAlgorithm,
    certificate: Vec<u8>,
}

fn generalized(t: OffsetDateTime) -> GeneralizedTime {
    // RFC 5019 §2.2.4: UTC, with seconds, without fractions.
    GeneralizedTime::from_datetime(t.replace_nanosecond(0).unwrap_or(t))
}

/// Builds the `ResponseData` for `id` with `status`, valid from `this_update` to
/// `next_update`, produced at `produced_at`; the responder is named by its key hash.
pub fn prepare_response(
    responder: &Responder,
    id: &CertId,
    status: CertStatus,
    produced_at: OffsetDateTime,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<PreparedResponse, Error> {
    if next_update <= this_update {
        return Err(Error::InvalidValidity { reason: "nextUpdate must be after thisUpdate".into() });
    }
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            // version v1 is the DEFAULT: omitted. responderID byKey [2].
            w.next().write_tagged(Tag::context(2), |w| w.write_bytes(&responder.key_hash));
            w.next().write_generalized_time(&generalized(produced_at));
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_der(&id.der);
                    match status {
                        CertStatus::Good => w.next().write_tagged_implicit(Tag::context(0), |w| w.write_null()),
                        CertStatus::Revoked { at, reason } => {
                            w.next().write_tagged_implicit(Tag::context(1), |w| {
                                w.write_sequence(|w| {
                                    w.next().write_generalized_time(&generalized(at));
                                    if let Some(reason) = reason {
                                        w.next()
                                            .write_tagged(Tag::context(0), |w| w.write_enum(i64::from(reason.code())));
                                    }
                                });
                            });
                        }
                        CertStatus::Unknown => w.next().write_tagged_implicit(Tag::context(2), |w| w.write_null()),
                    }
                    w.next().write_generalized_time(&generalized(this_update));
                    w.next().write_tagged(Tag::context(0), |w| w.write_generalized_time(&generalized(next_update)));
                });
            });
        });
    });
    Ok(PreparedResponse { tbs, algorithm: responder.algorithm, certificate: responder.certificate.clone() })
}

impl PreparedResponse {
    /// The bytes the responder key signs.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs
    }

    /// The algorithm the signature must be made with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The `OCSPResponse` (successful, basic), carrying the responder certificate.
    pub fn assemble(self, signature: &[u8]) -> Vec<u8> {
        let basic = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&self.tbs);
                w.next().write_der(self.algorithm.algorithm_identifier());
                w.next().write_bitvec_bytes(signature, signature.len() * 8);
                w.next().write_tagged(Tag::context(0), |w| w.write_sequence(|w| w.next().write_der(&self.certificate)));
            });
        });
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0);
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(OID_BASIC));
                        w.next().write_bytes(&basic);
                    });
                });
            });
        })
    }
}

/// The thisUpdate and nextUpdate of a successful `OCSPResponse` (of its first answer): when a
/// pre-signed answer, such as the root's about the issuing CA, must be signed again.
pub fn response_validity(der: &[u8]) -> Result<(OffsetDateTime, Option<OffsetDateTime>), Error> {
    let bad = |detail: &str| Error::MalformedDer { what: "OCSP response", detail: detail.into() };
    // As in parse_request: no length reaches yasna unchecked.
    crate::encoding::check_der_lengths(der, "OCSP response")?;
    let basic = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            if r.next().read_enum()? != 0 {
                return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
            }
            r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    if r.next().read_oid()? != ObjectIdentifier::from_slice(OID_BASIC) {
                        return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
                    }
                    r.next().read_bytes()
                })
            })
        })
    })
    .map_err(|e| bad(&format!("not a successful basic response: {e}")))?;
    crate::encoding::check_der_lengths(&basic, "OCSP response")?;
    let mut times = Vec::new();
    yasna::parse_der(&basic, |r| {
        r.read_sequence(|r| {
            r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                r.next().read_der()?; // responderID
                r.next().read_generalized_time()?; // producedAt
                r.next().read_sequence_of(|r| {
                    let time = r.read_sequence(|r| {
                        r.next().read_der()?; // certID
                        r.next().read_der()?; // certStatus
                        let this = r.next().read_generalized_time()?;
                        let next =
                            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_generalized_time()))?;
                        r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
                        Ok((*this.datetime(), next.map(|n| *n.datetime())))
                    })?;
                    times.push(time);
                    Ok(())
                })?;
                r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
                Ok(())
            })?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_der()?; // signature
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
            Ok(())
        })
    })
    .map_err(|e| bad(&format!("not a BasicOCSPResponse: {e}")))?;
    times.first().copied().ok_or_else(|| bad("no answer in it"))
}

/// The unsigned answers an OCSP responder gives when it cannot answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStatus {
    /// The request did not parse.
    MalformedRequest = 1,
    /// The responder failed.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// The certificate is not from a CA this responder answers for.
    Unauthorized = 6,
}

/// An `OCSPResponse` with only a status.
pub fn error_response(status: ErrorStatus) -> Vec<u8> {
    yasna::construct_der(|w| w.write_sequence(|w| w.next().write_enum(status as i64)))
}

impl SubjectKey {
    /// The subjectPublicKey bit string's bytes (what key hashes are computed over).
    pub fn key_bits(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self)
    }
}

#[cfg(test)]
mod tests {

    /// Requests found by the fuzzer (AFL++, tests/fuzz): a length of 8 bytes of 0xff inside made
    /// yasna overflow its position. Refused as malformed now, with no panic.
    #[test]
    fn lengths_near_usize_max_are_refused_not_panicked_on() {
        for hex in [
            concat!(
                "30773075307330713088ffffffffffffffffffaa3063000080004a4a4a4a4a4a4a4a4a4a4a0906052b0e03821a03e804",
                "8840c2fd7fffd379a4e3a5d71afa07bc8331ca73565555555555550580059b59509a606c36b94ca3ecf062020aaaaaaa",
                "aaaaaaaa1468d214b74b30fe60c11c9fcefa199f15b5320240",
            ),
            concat!(
                "30653063a1617f3088ffffffffffffffffff0460cb79a4e3a5b71afa10a88331ca6ba5fb14ca62a2550001000055b7b7",
                "b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7",
                "b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7",
                "b7b7b7b7b7b75505d90980059b59509a606c36b94ca3fcf062021468d28840c2fde6a6d31c9fcefaf29e555555555555",
                "5555058840c2fde6a6d31c9fcefaf29e",
            ),
        ] {
            let der = crate::encoding::unhex(hex).expect("hex");
            assert!(matches!(parse_request(&der), Err(Error::MalformedDer { .. })), "{hex}");
            assert!(response_validity(&der).is_err());
        }
    }

    use super::*;

    #[test]
    fn refusals() {
        assert!(matches!(parse_request(&[]), Err(Error::Empty { .. })));
        assert!(matches!(parse_request(&[0x30; 5000]), Err(Error::TooLarge { .. })));
        assert!(parse_request(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert_eq!(error_response(ErrorStatus::MalformedRequest), [0x30, 0x03, 0x0a, 0x01, 0x01]);
        assert_eq!(error_response(ErrorStatus::Unauthorized), [0x30, 0x03, 0x0a, 0x01, 0x06]);
    }

    #[test]
    fn the_validity_of_a_signed_answer_is_read_back() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1; 20]);
        let ca = params.self_signed(&key).expect("CA");
        let issuer = IssuerInfo::from_der(ca.der()).expect("issuer");
        let responder = Responder::new(ca.der()).expect("responder");
        let id = CertId::for_serial(&issuer, CertIdHash::Sha1, &[0x42]);
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let next = now + time::Duration::days(365);
        let prepared = prepare_response(&responder, &id, CertStatus::Good, now, now, next).expect("prepared");
        let der = prepared.assemble(&[0x30, 0x00]);
        assert_eq!(response_validity(&der).expect("validity"), (now, Some(next)));
        assert!(response_validity(&error_response(ErrorStatus::TryLater)).is_err());
        assert!(response_validity(b"garbage").is_err());
    }

    #[test]
    fn a_cert_id_made_ahead_is_the_one_a_request_carries() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "OCSP test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1; 20]);
        let ca = params.self_signed(&key).expect("CA");
        let issuer = IssuerInfo::from_der(ca.der()).expect("issuer");
        let serial = crate::Serial::from_random([7; 16]).expect("serial");
        for hash in [CertIdHash::Sha1, CertIdHash::Sha256] {
            let made = CertId::for_serial(&issuer, hash, serial.as_bytes());
            let request = request_for(hash, issuer.subject_name_der(), issuer.public_key().key_bits(), &serial);
            let parsed = parse_request(&request).expect("parses");
            assert_eq!(made, parsed);
            assert!(parsed.is_issued_by(&issuer));
        }
    }
}
