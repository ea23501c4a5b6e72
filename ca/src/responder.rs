//! The delegated OCSP responder, inside the signer: its key never leaves the signer process.
//! The web tier asks for answers in batches (the `sign-ocsp` request of [`crate::remote`]) and
//! keeps the signed answers in a cache; this module signs them, after checking what it is told
//! against the ledger: "good" only for a certificate this CA signed.
//!
//! The responder's certificate (id-kp-OCSPSigning, ocsp-nocheck, 90 days) is issued by the CA
//! through its ledger like any other, when the first answer is asked for (a signer that never
//! answers OCSP issues nothing), and made again when less than 30 days are left.

use std::sync::{Mutex, PoisonError};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use pki::ocsp::{self, CertId, CertStatus, Responder};
use pki::registry::State;
use pki::request::{OcspOrder, SignedOcsp};
use pki::{Profile, Serial};
use time::{Duration, OffsetDateTime};

use crate::credential::{self, Credential, CredentialFiles, OCSP_ACCOUNT};
use crate::layout::DataDir;
use crate::{CertificateAuthority, Error, IssueRequest};

/// How long an answer is valid (its nextUpdate).
pub const VALIDITY: Duration = Duration::hours(24);
/// The most answers one request may ask for.
pub const MAX_BATCH: usize = 10_000;
/// The responder certificate's validity, in days.
const CERT_DAYS: u32 = 90;
/// Its certificate is made again when less than this is left.
const RENEW_WITHIN: Duration = Duration::days(30);

struct Key {
    responder: Responder,
    certificate: Vec<u8>,
    not_after: OffsetDateTime,
    key: EcdsaKeyPair,
}

impl Key {
    fn from_credential(credential: &Credential) -> Result<Self, Error> {
        let certificate = credential.leaf().to_vec();
        let bad = |detail: String| Error::BadKey { path: "(OCSP responder key)".into(), detail };
        let responder = Responder::new(&certificate)?;
        let summary = pki::certificate::Summary::from_der(&certificate)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &credential.key)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { responder, certificate, not_after: summary.not_after, key })
    }
}

/// The responder: its key and certificate, made when first needed and again before they run
/// out.
pub struct OcspSigner {
    dir: DataDir,
    generation: u16,
    key: Mutex<Option<Key>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for OcspSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspSigner").field("key", &"[redacted]").finish()
    }
}

/// What the signer was told that it will not sign.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// More answers than [`MAX_BATCH`].
    #[error("at most {MAX_BATCH} OCSP answers per request")]
    TooMany,
    /// "good" for a certificate the ledger does not have as issued.
    #[error("serial {0} is not a certificate this CA signed: not signing a good answer")]
    NotGood(String),
    /// A revocation time in the future.
    #[error("serial {0} is revoked in the future")]
    FutureRevocation(String),
}

/// Generation 1's responder lives in `ocsp/`, generation N's in `ocsp/gen-N/`.
fn files(dir: &DataDir, generation: u16) -> CredentialFiles {
    let place = |path: std::path::PathBuf| match (generation, path.parent(), path.file_name()) {
        (2.., Some(parent), Some(name)) => parent.join(format!("gen-{generation}")).join(name),
        _ => path,
    };
    CredentialFiles {
        cert: place(dir.ocsp_cert()),
        key: place(dir.ocsp_key()),
        tag: "ocsp-responder\n".into(),
        renew_within: RENEW_WITHIN,
    }
}

fn issue_for(authority: &CertificateAuthority, csr: Vec<u8>) -> Result<Vec<u8>, Error> {
    let mut request_id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut request_id).map_err(|_| Error::NoRandomness)?;
    let request = IssueRequest {
        csr: &csr,
        account: OCSP_ACCOUNT,
        profile: Profile::OcspResponder,
        sans: &[],
        days: Some(CERT_DAYS),
        request_id: Some(request_id),
        supersede: true,
    };
    Ok(authority.issue(&request)?.der)
}

impl OcspSigner {
    /// The responder of the data directory `dir` (its files are read when first needed).
    pub fn new(dir: &DataDir) -> Self {
        Self::for_generation(dir, 1)
    }

    /// The responder for the certificates of issuing-CA generation `generation`.
    pub fn for_generation(dir: &DataDir, generation: u16) -> Self {
        Self { dir: dir.clone(), generation, key: Mutex::new(None), rng: SystemRandom::new() }
    }

    /// Which generation's certificates it answers for.
    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// Signs one answer per order, after checking each against the CA's ledger. Returns the
    /// answers, the responder certificate they carry, and whether that certificate was made now.
    pub fn sign(
        &self,
        authority: &CertificateAuthority,
        orders: &[OcspOrder],
        now: OffsetDateTime,
    ) -> Result<(Vec<SignedOcsp>, Vec<u8>, bool), SignError> {
        if orders.len() > MAX_BATCH {
            return Err(SignError::Refused(Refusal::TooMany));
        }
        for order in orders {
            match order.status {
                CertStatus::Good => {
                    let issued = match Serial::from_bytes(&order.serial) {
                        Some(serial) => authority.ledger().lookup(&serial).map_err(Error::from)?,
                        None => None,
                    };
                    if !issued.is_some_and(|r| r.state == State::Issued && r.issuer == authority.generation()) {
                        return Err(SignError::Refused(Refusal::NotGood(pki::encoding::hex(&order.serial))));
                    }
                }
                CertStatus::Revoked { at, .. } if at > now + Duration::minutes(5) => {
                    return Err(SignError::Refused(Refusal::FutureRevocation(pki::encoding::hex(&order.serial))));
                }
                _ => {}
            }
        }
        let mut slot = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        let mut made = false;
        if slot.as_ref().is_none_or(|key| key.not_after - now <= RENEW_WITHIN) {
            let ca = authority.issuer().certificate_der();
            let (credential, fresh) =
                credential::ensure(&files(&self.dir, self.generation), ca, now, |csr| issue_for(authority, csr))?;
            *slot = Some(Key::from_credential(&credential)?);
            made = fresh;
        }
        let Some(key) = slot.as_ref() else { return Err(SignError::Failed(Error::Signing)) };
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut answers = Vec::with_capacity(orders.len());
        for order in orders {
            let id = CertId::for_serial(authority.issuer(), order.hash, &order.serial);
            let prepared = ocsp::prepare_response(&key.responder, &id, order.status, now, now, now + VALIDITY)
                .map_err(Error::from)?;
            let signature = key.key.sign(&self.rng, prepared.tbs_der()).map_err(|_| Error::Signing)?;
            answers.push(SignedOcsp {
                der: prepared.assemble(signature.as_ref()),
                this_update: now,
                next_update: now + VALIDITY,
            });
        }
        Ok((answers, key.certificate.clone(), made))
    }
}

/// Why answers were not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request was refused.
    #[error(transparent)]
    Refused(Refusal),
    /// The signer failed.
    #[error(transparent)]
    Failed(#[from] Error),
}
