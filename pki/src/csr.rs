//! PKCS#10 certificate signing requests: strict parsing and proof of possession.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::Error;
use crate::encoding::{check_der_lengths, decode_csr, expect_no_trailing};
use crate::key::SubjectKey;

const WHAT: &str = "CSR";

/// A CSR whose signature verified with its own key, and whose key passed the key policy.
///
/// Only [`validate`] makes one. Nothing else from the CSR is kept: the subject comes from the
/// account and the extensions from the profile, so a CSR cannot ask for CA:TRUE or extra names.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    key: SubjectKey,
}

impl ValidatedCsr {
    /// The public key to certify.
    pub fn key(&self) -> &SubjectKey {
        &self.key
    }
}

/// Parses a CSR given as PEM or DER, applies the key policy and checks proof of possession.
///
/// Refused: empty or oversized input, bad PEM, bytes after the request, DER that is not a
/// PKCS#10 request or not DER (a length not in its shortest form), a version other than v1, keys outside the policy, signature algorithms
/// not accepted for the key, and signatures that do not verify.
pub fn validate(input: &[u8]) -> Result<ValidatedCsr, Error> {
    let der = decode_csr(input)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::MalformedDer { what: WHAT, detail: e.to_string() })?;
    expect_no_trailing(rest, WHAT)?;
    check_der_lengths(&der, WHAT)?;

    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(Error::UnsupportedCsrVersion { version: info.version.0 });
    }
    let key = SubjectKey::from_parsed(&info.subject_pki)?;
    if csr.signature_value.unused_bits != 0 {
        return Err(Error::BadCsrSignature);
    }
    key.verify(&csr.signature_algorithm, info.raw, &csr.signature_value.data)?;
    Ok(ValidatedCsr { key })
}

/// The registry's hash of the public key of a CSR (PEM or DER), under the key policy but
/// without verifying the request's signature: what a caller looks up before it sends the CSR
/// to be validated and signed. The same as the certificate's ([`SubjectKey::sha256`]).
pub fn public_key_sha256(input: &[u8]) -> Result<[u8; 32], Error> {
    let der = decode_csr(input)?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::MalformedDer { what: WHAT, detail: e.to_string() })?;
    Ok(SubjectKey::from_parsed(&csr.certification_request_info.subject_pki)?.sha256())
}

/// The subject alternative names a CSR (PEM or DER) asks for in its extensionRequest: DNS names
/// and IP addresses, in order. Other kinds of name are refused. Call it on a CSR that
/// [`validate`] accepted; the names are the requester's wish, checked against a policy before
/// they are certified.
pub fn requested_sans(input: &[u8]) -> Result<Vec<crate::San>, Error> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = decode_csr(input)?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::MalformedDer { what: WHAT, detail: e.to_string() })?;
    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else { continue };
        for name in &san.general_names {
            let parsed = match name {
                GeneralName::DNSName(dns) => dns.parse::<crate::San>()?,
                GeneralName::IPAddress(bytes) => {
                    let ip = if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        std::net::IpAddr::from(v4)
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        std::net::IpAddr::from(v6)
                    } else {
                        return Err(Error::InvalidSan {
                            san: crate::encoding::hex(bytes),
                            reason: "an IP address has 4 or 16 bytes",
                        });
                    };
                    crate::San::Ip(ip)
                }
                other => {
                    return Err(Error::InvalidSan {
                        san: other.to_string().chars().take(80).collect(),
                        reason: "only DNS names and IP addresses are certified",
                    });
                }
            };
            if !sans.contains(&parsed) {
                sans.push(parsed);
            }
        }
    }
    Ok(sans)
}
