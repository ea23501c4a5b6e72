//! The OCSP responder on the plain-HTTP listener (`/ocsp`, GET and POST; RFC 6960 in the
//! RFC 5019 profile). Responses are signed by a delegated responder key the service holds
//! (its certificate, with id-kp-OCSPSigning and ocsp-nocheck, comes from the CA through the
//! signer), cached per certificate, refreshed before they expire, and dropped at once when the
//! certificate is revoked — so serving a cached status does not sign.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use pki::ocsp::{self, CertId, CertIdHash, CertStatus, ErrorStatus, Responder};
use pki::registry::{Registry, State};
use pki::{IssuerInfo, RevocationReason, Serial};
use time::{Duration, OffsetDateTime};

/// How long a response is valid (its nextUpdate).
pub const VALIDITY: Duration = Duration::hours(24);
/// A cached response is signed again once less than this is left.
pub const REFRESH_WHEN_LEFT: Duration = Duration::hours(12);
/// At most this many responses are cached.
const MAX_CACHED: usize = 200_000;

/// A signed response and when it stops being valid.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The DER `OCSPResponse`.
    pub der: Vec<u8>,
    /// thisUpdate, for Last-Modified (successful responses only).
    pub this_update: Option<OffsetDateTime>,
    /// nextUpdate, for caching headers.
    pub next_update: Option<OffsetDateTime>,
    /// Which status it carries, for metrics: good, revoked, unknown, or an error name.
    pub label: &'static str,
}

/// The responder: the CA it answers for, its certificate and key, the cache.
pub struct OcspResponder {
    issuer: IssuerInfo,
    responder: Responder,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    cache: Mutex<HashMap<(bool, Serial), Answer>>,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// Why the responder could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OCSP responder: {0}")]
pub struct ResponderError(String);

impl OcspResponder {
    /// A responder for the issuing CA `ca_der`, with its certificate and P-256 key (PKCS#8).
    pub fn new(ca_der: &[u8], responder_der: &[u8], key_pkcs8: &[u8]) -> Result<Self, ResponderError> {
        let issuer = IssuerInfo::from_der(ca_der).map_err(|e| ResponderError(e.to_string()))?;
        let responder = Responder::new(responder_der).map_err(|e| ResponderError(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key_pkcs8)
            .map_err(|e| ResponderError(format!("responder key: {e}")))?;
        Ok(Self { issuer, responder, key, rng: SystemRandom::new(), cache: Mutex::new(HashMap::new()) })
    }

    fn sign(&self, id: &CertId, status: CertStatus, now: OffsetDateTime) -> Option<Answer> {
        let prepared = ocsp::prepare_response(&self.responder, id, status, now, now, now + VALIDITY).ok()?;
        let signature = self.key.sign(&self.rng, prepared.tbs_der()).ok()?;
        let label = match status {
            CertStatus::Good => "good",
            CertStatus::Revoked { .. } => "revoked",
            CertStatus::Unknown => "unknown",
        };
        Some(Answer {
            der: prepared.assemble(signature.as_ref()),
            this_update: Some(now),
            next_update: Some(now + VALIDITY),
            label,
        })
    }

    fn error(status: ErrorStatus, label: &'static str) -> Answer {
        Answer { der: ocsp::error_response(status), this_update: None, next_update: None, label }
    }

    /// Answers one DER request from the live registry, from the cache when it is fresh.
    pub fn respond(&self, request: &[u8], registry: &dyn Registry, now: OffsetDateTime) -> Answer {
        let id = match ocsp::parse_request(request) {
            Ok(id) => id,
            Err(_) => return Self::error(ErrorStatus::MalformedRequest, "malformed"),
        };
        if !id.is_issued_by(&self.issuer) {
            return Self::error(ErrorStatus::Unauthorized, "unauthorized");
        }
        // The CertID is echoed in the response, so SHA-1 and SHA-256 requests are cached apart.
        let serial = Serial::from_bytes(&id.serial);
        let key = serial.map(|s| (id.hash == CertIdHash::Sha1, s));
        if let Some(key) = &key {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(answer) = cache.get(key)
                && answer.next_update.is_some_and(|next| next - now > REFRESH_WHEN_LEFT)
            {
                return answer.clone();
            }
        }
        let status = match serial.map(|s| registry.get(&s)) {
            Some(Ok(Some(record))) => match record.state {
                State::Issued => CertStatus::Good,
                State::Revoked { at, reason } => {
                    CertStatus::Revoked { at, reason: (reason != RevocationReason::Unspecified).then_some(reason) }
                }
                State::Pending => CertStatus::Unknown,
            },
            Some(Ok(None)) | None => CertStatus::Unknown,
            Some(Err(e)) => {
                tracing::error!(error = %e, "OCSP: registry");
                return Self::error(ErrorStatus::TryLater, "try_later");
            }
        };
        let Some(answer) = self.sign(&id, status, now) else {
            return Self::error(ErrorStatus::InternalError, "internal");
        };
        if let Some(key) = key {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, a| a.label != "unknown");
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, answer.clone());
        }
        answer
    }

    /// Drops the cached responses of `serials` (they were just revoked).
    pub fn forget(&self, serials: &[Serial]) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for serial in serials {
            cache.remove(&(true, *serial));
            cache.remove(&(false, *serial));
        }
    }

    /// Signs again the cached responses that are past half their life (run periodically), so
    /// requests keep finding fresh ones. Returns how many were refreshed.
    pub fn refresh(&self, registry: &dyn Registry, now: OffsetDateTime) -> usize {
        let stale: Vec<(bool, Serial)> = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .iter()
                .filter(|(_, a)| a.next_update.is_some_and(|next| next - now <= REFRESH_WHEN_LEFT))
                .map(|(k, _)| *k)
                .collect()
        };
        let mut done = 0;
        for (sha1, serial) in stale {
            let name = self.issuer.subject_name_der();
            let key = self.issuer.public_key().key_bits();
            let hash = if sha1 { CertIdHash::Sha1 } else { CertIdHash::Sha256 };
            let request = ocsp::request_for(hash, name, key, &serial);
            self.forget(&[serial]);
            let _ = self.respond(&request, registry, now);
            done += 1;
        }
        done
    }
}
