//! Public keys: which ones inkan certifies (the key policy), and the algorithms it signs with.

use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::Error;

/// The key types inkan certifies, as named in errors.
pub const ACCEPTED_KEYS: &str = "ECDSA P-256, ECDSA P-384, Ed25519, RSA of 2048 to 8192 bits with exponent 65537";

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const OID_RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const OID_RSA_SHA512: &str = "1.2.840.113549.1.1.13";

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// The type of an accepted public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// Ed25519 (RFC 8410).
    Ed25519,
    /// RSA (PKCS#1 v1.5 signatures) with a modulus of `bits` bits.
    Rsa {
        /// Modulus size in bits.
        bits: u16,
    },
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
        }
    }
}

/// A public key that passed the key policy, with its SubjectPublicKeyInfo as received.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey {
    kind: KeyKind,
    spki: Vec<u8>,
    /// The contents of the subjectPublicKey BIT STRING.
    key: Vec<u8>,
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKey").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl SubjectKey {
    /// Parses a DER SubjectPublicKeyInfo and applies the key policy: only the types in
    /// [`ACCEPTED_KEYS`], with named curves, uncompressed points on the curve, and RSA
    /// moduli of 2048 to 8192 bits with exponent 65537.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::MalformedDer { what: "public key", detail: e.to_string() })?;
        crate::encoding::expect_no_trailing(rest, "public key")?;
        Self::from_parsed(&spki)
    }

    pub(crate) fn from_parsed(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, Error> {
        let key = spki.subject_public_key.data.to_vec();
        if spki.subject_public_key.unused_bits != 0 {
            return Err(Error::InvalidPublicKey {
                kind: algorithm_name(&spki.algorithm),
                detail: "the public key bit string has unused bits".into(),
            });
        }
        let kind = match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_EC_PUBLIC_KEY => ec_kind(spki, &key)?,
            OID_ED25519 => {
                if spki.algorithm.parameters.is_some() {
                    return Err(invalid("Ed25519", "algorithm parameters must be absent"));
                }
                check_parses(&signature::ED25519, &key, "Ed25519")?;
                KeyKind::Ed25519
            }
            OID_RSA_ENCRYPTION => rsa_kind(spki)?,
            _ => {
                return Err(Error::UnsupportedKey { found: algorithm_name(&spki.algorithm) });
            }
        };
        // One key, one SPKI: an RSA key sent without its algorithm's NULL parameters is kept
        // in the form with them (the form certificates carry), so its hash, which the registry
        // indexes and blocks keys by, is the same however it was sent.
        let spki_der = match kind {
            KeyKind::Rsa { .. } if spki.algorithm.parameters.is_none() => yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 113549, 1, 1, 1]));
                        w.next().write_null();
                    });
                    w.next().write_bitvec_bytes(&key, key.len() * 8);
                });
            }),
            _ => spki.raw.to_vec(),
        };
        Ok(Self { kind, spki: spki_der, key })
    }

    /// The key type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The DER SubjectPublicKeyInfo, byte for byte as received.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: the registry's key index.
    pub fn sha256(&self) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The key identifier for SKI/AKI: RFC 7093 §2 method 1, the leftmost 160 bits of the
    /// SHA-256 of the subjectPublicKey bit string.
    pub fn key_identifier(&self) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.key).as_ref()[..20].to_vec()
    }

    /// Verifies `signature` over `message` made with the algorithm `signature_algorithm`,
    /// refusing algorithms that are not accepted for this key type.
    pub(crate) fn verify(
        &self,
        signature_algorithm: &AlgorithmIdentifier<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        let algorithm = self.verification_algorithm(signature_algorithm)?;
        signature::UnparsedPublicKey::new(algorithm, &self.key)
            .verify(message, signature)
            .map_err(|_| Error::BadCsrSignature)
    }

    fn verification_algorithm(
        &self,
        alg: &AlgorithmIdentifier<'_>,
    ) -> Result<&'static dyn VerificationAlgorithm, Error> {
        let oid = alg.algorithm.to_id_string();
        let params_ok = match &self.kind {
            // RFC 5758: the ECDSA identifiers have no parameters; RFC 8410 likewise for Ed25519.
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 | KeyKind::Ed25519 => alg.parameters.is_none(),
            // RFC 4055: NULL, and absent is seen in the wild.
            KeyKind::Rsa { .. } => {
                alg.parameters.as_ref().is_none_or(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null)
            }
        };
        let found: Option<&'static dyn VerificationAlgorithm> = match (self.kind, oid.as_str()) {
            _ if !params_ok => None,
            (KeyKind::EcdsaP256, OID_ECDSA_SHA256) => Some(&signature::ECDSA_P256_SHA256_ASN1),
            (KeyKind::EcdsaP256, OID_ECDSA_SHA384) => Some(&signature::ECDSA_P256_SHA384_ASN1),
            (KeyKind::EcdsaP256, OID_ECDSA_SHA512) => Some(&signature::ECDSA_P256_SHA512_ASN1),
            (KeyKind::EcdsaP384, OID_ECDSA_SHA256) => Some(&signature::ECDSA_P384_SHA256_ASN1),
            (KeyKind::EcdsaP384, OID_ECDSA_SHA384) => Some(&signature::ECDSA_P384_SHA384_ASN1),
            (KeyKind::EcdsaP384, OID_ECDSA_SHA512) => Some(&signature::ECDSA_P384_SHA512_ASN1),
            (KeyKind::Ed25519, OID_ED25519) => Some(&signature::ED25519),
            (KeyKind::Rsa { .. }, OID_RSA_SHA256) => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            (KeyKind::Rsa { .. }, OID_RSA_SHA384) => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            (KeyKind::Rsa { .. }, OID_RSA_SHA512) => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        };
        found.ok_or_else(|| Error::UnsupportedSignatureAlgorithm {
            found: signature_algorithm_name(alg),
            key: self.kind.to_string(),
            accepted: match self.kind {
                KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => {
                    "ecdsa-with-SHA256, ecdsa-with-SHA384, ecdsa-with-SHA512"
                }
                KeyKind::Ed25519 => "Ed25519",
                KeyKind::Rsa { .. } => {
                    "sha256WithRSAEncryption, sha384WithRSAEncryption, sha512WithRSAEncryption (PKCS#1 v1.5, NULL parameters)"
                }
            },
        })
    }
}

/// rcgen writes the subject key from these two values. The algorithm is chosen from the key
/// type found in the SPKI, never from the CSR's signature algorithm (rcgen issue #448).
impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        SignatureAlgorithm::for_key(self.kind).rcgen()
    }
}

fn invalid(kind: &str, detail: &str) -> Error {
    Error::InvalidPublicKey { kind: kind.into(), detail: detail.into() }
}

fn check_parses(alg: &'static dyn VerificationAlgorithm, key: &[u8], kind: &str) -> Result<(), Error> {
    ParsedPublicKey::new(alg, key)
        .map(|_| ())
        .map_err(|e| invalid(kind, &format!("rejected by the crypto library ({e})")))
}

fn ec_kind(spki: &SubjectPublicKeyInfo<'_>, key: &[u8]) -> Result<KeyKind, Error> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        // asn1-rs's as_oid does not check the tag: an OCTET STRING holding OID bytes would pass.
        .filter(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Oid)
        .and_then(|p| p.as_oid().ok());
    let Some(curve) = curve else {
        return Err(Error::UnsupportedKey { found: "ECDSA key with explicit or missing curve parameters".into() });
    };
    let (kind, name, alg, coord): (_, _, &'static dyn VerificationAlgorithm, _) = match curve.to_id_string().as_str() {
        OID_P256 => (KeyKind::EcdsaP256, "ECDSA P-256", &signature::ECDSA_P256_SHA256_ASN1, 32),
        OID_P384 => (KeyKind::EcdsaP384, "ECDSA P-384", &signature::ECDSA_P384_SHA384_ASN1, 48),
        other => {
            return Err(Error::UnsupportedKey { found: format!("ECDSA key on curve {}", curve_name(other)) });
        }
    };
    if key.first() != Some(&0x04) || key.len() != 1 + 2 * coord {
        return Err(invalid(
            name,
            &format!("expected an uncompressed point of {} bytes, found {} bytes", 1 + 2 * coord, key.len()),
        ));
    }
    check_parses(alg, key, name)?;
    Ok(kind)
}

fn rsa_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, Error> {
    if spki.algorithm.parameters.as_ref().is_some_and(|p| p.tag() != x509_parser::der_parser::asn1_rs::Tag::Null) {
        return Err(invalid("RSA", "rsaEncryption parameters must be NULL"));
    }
    let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
        return Err(invalid("RSA", "the key is not a DER RSAPublicKey"));
    };
    if rsa.modulus.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(invalid("RSA", "negative modulus"));
    }
    let modulus = strip_zeros(rsa.modulus);
    let bits = match modulus.first() {
        Some(first) => modulus.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(Error::RsaKeySize { bits });
    }
    let exponent = strip_zeros(rsa.exponent);
    if exponent != [0x01, 0x00, 0x01] {
        let exponent = if exponent.len() <= 8 {
            exponent.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)).to_string()
        } else {
            format!("of {} bytes", exponent.len())
        };
        return Err(Error::RsaExponent { exponent });
    }
    check_parses(&signature::RSA_PKCS1_2048_8192_SHA256, &spki.subject_public_key.data, "RSA")?;
    let bits = u16::try_from(bits).map_err(|_| Error::RsaKeySize { bits })?;
    Ok(KeyKind::Rsa { bits })
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.35" => "P-521 (secp521r1)".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".into(),
        "1.2.840.10045.3.1.1" => "P-192 (prime192v1)".into(),
        "1.3.132.0.33" => "P-224 (secp224r1)".into(),
        other => format!("OID {other}"),
    }
}

fn algorithm_name(alg: &AlgorithmIdentifier<'_>) -> String {
    let oid = alg.algorithm.to_id_string();
    match oid.as_str() {
        OID_EC_PUBLIC_KEY => "ECDSA".into(),
        OID_ED25519 => "Ed25519".into(),
        OID_RSA_ENCRYPTION => "RSA".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.3.101.110" => "X25519 (a key-agreement key)".into(),
        "1.3.101.111" => "X448 (a key-agreement key)".into(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS key".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.2.840.10046.2.1" => "Diffie-Hellman (a key-agreement key)".into(),
        _ => format!("key algorithm OID {oid}"),
    }
}

fn signature_algorithm_name(alg: &AlgorithmIdentifier<'_>) -> String {
    let oid = alg.algorithm.to_id_string();
    let name = match oid.as_str() {
        OID_ECDSA_SHA256 => "ecdsa-with-SHA256",
        OID_ECDSA_SHA384 => "ecdsa-with-SHA384",
        OID_ECDSA_SHA512 => "ecdsa-with-SHA512",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        OID_ED25519 => "Ed25519",
        OID_RSA_SHA256 => "sha256WithRSAEncryption",
        OID_RSA_SHA384 => "sha384WithRSAEncryption",
        OID_RSA_SHA512 => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.113" => "Ed448",
        _ => return format!("OID {oid}"),
    };
    if alg.parameters.is_some() && !oid.starts_with("1.2.840.113549.1.1.") {
        format!("{name} (with parameters, which must be absent)")
    } else {
        name.into()
    }
}

/// The algorithms inkan's CAs sign with: one per CA key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ecdsa-with-SHA256, for P-256 keys.
    EcdsaP256Sha256,
    /// ecdsa-with-SHA384, for P-384 keys.
    EcdsaP384Sha384,
    /// Ed25519 (PureEdDSA).
    Ed25519,
    /// sha256WithRSAEncryption (PKCS#1 v1.5), for RSA keys.
    RsaPkcs1Sha256,
}

impl SignatureAlgorithm {
    /// The algorithm a CA with a key of this type signs with.
    pub fn for_key(kind: KeyKind) -> Self {
        match kind {
            KeyKind::EcdsaP256 => Self::EcdsaP256Sha256,
            KeyKind::EcdsaP384 => Self::EcdsaP384Sha384,
            KeyKind::Ed25519 => Self::Ed25519,
            KeyKind::Rsa { .. } => Self::RsaPkcs1Sha256,
        }
    }

    /// rcgen's description of the same algorithm.
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// The algorithm's OID in dotted form.
    pub fn oid(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => OID_ECDSA_SHA256,
            Self::EcdsaP384Sha384 => OID_ECDSA_SHA384,
            Self::Ed25519 => OID_ED25519,
            Self::RsaPkcs1Sha256 => OID_RSA_SHA256,
        }
    }

    /// The DER AlgorithmIdentifier written in certificates and CRLs.
    pub fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            Self::EcdsaP256Sha256 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
            Self::EcdsaP384Sha384 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
            Self::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
            Self::RsaPkcs1Sha256 => {
                &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00]
            }
        }
    }

    /// The aws-lc-rs algorithm that verifies signatures made with this one.
    pub fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::Ed25519 => &signature::ED25519,
            Self::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

impl SubjectKey {
    /// Verifies a signature made by this key with `algorithm` (used on the CA's own output).
    pub fn verify_with(&self, algorithm: SignatureAlgorithm, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(algorithm.verification(), &self.key).verify(message, sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA-2048 public key as openssl writes it: with the NULL parameters.
    const RSA_SPKI: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAz3UoWquuw6jIcDNJ15QL3eKJ8CLMSXZ3LM2cGZanb9LV+XirgXXuHNDnfWpfMdUjZgIoZt8Q/2gDhpnxPQheWUhXwYRpqATro2u+DD4TKhL0pT7T5pHTshhKvFyIUF3fzuwg89tBnfzKQgCkcouJX6KIZ76HDcFpLDbFtzRV/GAjJK8KpBzrx2AgVPaTGCxmEOErrYW5HcJAk3nUhmbPvDpVSYcFoqgVTz+r1K+3EfJRu0bDbNCP6wmxC/VYXUhXldUZ/QSXlxaKoH6rkEF/yJE+ELajC4ryZVZBOqFAj3oWxwGxiiETOORCIN8lKAU8cxIGmneJpIGkqJH0PBRyPQIDAQAB";

    #[test]
    fn an_rsa_key_hashes_alike_with_or_without_null_parameters() {
        let with_null = crate::encoding::base64_decode(RSA_SPKI).expect("base64");
        // The same key with the AlgorithmIdentifier's NULL left out: the outer and the
        // algorithm sequences each lose two bytes.
        assert_eq!(&with_null[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(&with_null[4..6], &[0x30, 0x0d]);
        assert_eq!(&with_null[17..19], &[0x05, 0x00]);
        let mut without = vec![0x30, 0x82, 0x01, 0x20, 0x30, 0x0b];
        without.extend_from_slice(&with_null[6..17]);
        without.extend_from_slice(&with_null[19..]);

        let a = SubjectKey::from_spki_der(&with_null).expect("with NULL");
        let b = SubjectKey::from_spki_der(&without).expect("without NULL");
        assert_eq!(a.spki_der(), &with_null[..], "the usual form is kept as sent");
        assert_eq!(b.spki_der(), &with_null[..], "the other form is kept in the usual one");
        assert_eq!(a.sha256(), b.sha256());
    }
}
