//! OCSP answers on the plain-HTTP listener (`/ocsp`, GET and POST; RFC 6960 in the RFC 5019
//! profile). The web tier holds no OCSP key: the signer signs answers (`Issuer::sign_ocsp`),
//! and this cache keeps them per certificate and CertID hash until half their life is gone.
//! A revocation drops the certificate's answers at once and has fresh ones signed ahead of the
//! next request; a periodic refresh signs again, in batches, the answers that are getting old.
//! Serving a cached answer signs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use pki::ocsp::{self, CertIdHash, CertStatus, ErrorStatus};
use pki::registry::{Registry, RegistryError, State};
use pki::request::{IssueError, Issuer, OcspOrder, SignedOcsp};
use pki::{IssuerInfo, RevocationReason, Serial};
use time::{Duration, OffsetDateTime};

/// A cached answer is signed again once less than this is left of it.
pub const REFRESH_WHEN_LEFT: Duration = Duration::hours(12);
/// At most this many answers are cached.
const MAX_CACHED: usize = 200_000;
/// At most this many answers are asked of the signer at once.
const BATCH: usize = 1_000;

/// An answer and when it stops being valid.
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

impl Answer {
    fn error(status: ErrorStatus, label: &'static str) -> Self {
        Self { der: ocsp::error_response(status), this_update: None, next_update: None, label }
    }

    fn signed(signed: SignedOcsp, status: CertStatus) -> Self {
        let label = match status {
            CertStatus::Good => "good",
            CertStatus::Revoked { .. } => "revoked",
            CertStatus::Unknown => "unknown",
        };
        Self { der: signed.der, this_update: Some(signed.this_update), next_update: Some(signed.next_update), label }
    }
}

/// (SHA-1 CertID, serial).
type Key = (bool, Serial);

/// The cache of signed answers for one issuing CA, and the root's answer about that CA.
pub struct OcspCache {
    issuer: IssuerInfo,
    cache: Mutex<HashMap<Key, Answer>>,
    signed: AtomicU64,
    root: RootAnswer,
}

/// The root's pre-signed answer about the issuing CA (`inkan root sign-crl` writes it): read
/// from its file, again whenever the file changes.
struct RootAnswer {
    root: Option<IssuerInfo>,
    ca_serial: Vec<u8>,
    file: std::path::PathBuf,
    loaded: Mutex<Option<(std::time::SystemTime, Answer)>>,
}

impl RootAnswer {
    fn answer(&self) -> Option<Answer> {
        let modified = std::fs::metadata(&self.file).and_then(|m| m.modified()).ok()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, answer)) = loaded.as_ref()
            && *at == modified
        {
            return Some(answer.clone());
        }
        let der = std::fs::read(&self.file).ok()?;
        let (this, next) = match ocsp::response_validity(&der) {
            Ok(times) => times,
            Err(e) => {
                tracing::error!(error = %e, file = %self.file.display(), "the root's OCSP answer is unreadable");
                return None;
            }
        };
        let answer = Answer { der, this_update: Some(this), next_update: next, label: "good" };
        *loaded = Some((modified, answer.clone()));
        Some(answer)
    }
}

impl std::fmt::Debug for OcspCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspCache").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// What the registry says of `serial`, as an OCSP status.
fn status_of(registry: &dyn Registry, serial: &Serial) -> Result<CertStatus, RegistryError> {
    Ok(match registry.get(serial)? {
        Some(record) => match record.state {
            State::Issued => CertStatus::Good,
            State::Revoked { at, reason } => {
                CertStatus::Revoked { at, reason: (reason != RevocationReason::Unspecified).then_some(reason) }
            }
            State::Pending => CertStatus::Unknown,
        },
        None => CertStatus::Unknown,
    })
}

fn hash_of(sha1: bool) -> CertIdHash {
    if sha1 { CertIdHash::Sha1 } else { CertIdHash::Sha256 }
}

impl OcspCache {
    /// A cache for answers about certificates of the issuing CA `ca_der`, which also serves
    /// the root's (`root_der`) pre-signed answer about that CA from `root_answer`.
    pub fn new(ca_der: &[u8], root_der: &[u8], root_answer: &std::path::Path) -> Result<Self, pki::Error> {
        let ca_serial = pki::certificate::Summary::from_der(ca_der)?.serial;
        let root = RootAnswer {
            root: IssuerInfo::from_der(root_der).ok(),
            ca_serial: pki::encoding::unhex(&ca_serial).unwrap_or_default(),
            file: root_answer.to_owned(),
            loaded: Mutex::new(None),
        };
        Ok(Self {
            issuer: IssuerInfo::from_der(ca_der)?,
            cache: Mutex::new(HashMap::new()),
            signed: AtomicU64::new(0),
            root,
        })
    }

    /// How many answers the signer signed for this cache.
    pub fn signed_count(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Answer>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: Key, answer: Answer) {
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, a| a.label != "unknown");
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, answer);
    }

    /// Has the signer sign `keys` with their current registry status, in batches, and caches
    /// the answers; returns how many were signed.
    fn sign_keys(&self, keys: &[Key], registry: &dyn Registry, issuer: &dyn Issuer) -> Result<usize, IssueError> {
        let mut done = 0;
        for chunk in keys.chunks(BATCH) {
            let mut orders = Vec::with_capacity(chunk.len());
            let mut asked = Vec::with_capacity(chunk.len());
            for key @ (sha1, serial) in chunk {
                match status_of(registry, serial) {
                    Ok(status) => {
                        orders.push(OcspOrder { serial: serial.as_bytes().to_vec(), hash: hash_of(*sha1), status });
                        asked.push(*key);
                    }
                    Err(e) => tracing::error!(error = %e, "OCSP: registry"),
                }
            }
            if orders.is_empty() {
                continue;
            }
            let signed = issuer.sign_ocsp(&orders)?;
            self.signed.fetch_add(signed.len() as u64, Ordering::Relaxed);
            for ((key, order), answer) in asked.into_iter().zip(&orders).zip(signed) {
                self.insert(key, Answer::signed(answer, order.status));
                done += 1;
            }
        }
        Ok(done)
    }

    /// Answers one DER request: from the cache when fresh, else signed by the signer now from
    /// the live registry status.
    pub fn respond(&self, request: &[u8], registry: &dyn Registry, issuer: &dyn Issuer, now: OffsetDateTime) -> Answer {
        let id = match ocsp::parse_request(request) {
            Ok(id) => id,
            Err(_) => return Answer::error(ErrorStatus::MalformedRequest, "malformed"),
        };
        if !id.is_issued_by(&self.issuer) {
            // The issuing CA itself, asked of the root (with SHA-1, as the answer was signed).
            let about_ca = self.root.root.as_ref().is_some_and(|root| id.is_issued_by(root))
                && id.serial == self.root.ca_serial
                && id.hash == CertIdHash::Sha1;
            return match about_ca.then(|| self.root.answer()).flatten() {
                Some(answer) => answer,
                None => Answer::error(ErrorStatus::Unauthorized, "unauthorized"),
            };
        }
        let Some(serial) = Serial::from_bytes(&id.serial) else {
            // Not a serial of inkan's form: no certificate of this CA. Signed, not cached.
            let order = OcspOrder { serial: id.serial.clone(), hash: id.hash, status: CertStatus::Unknown };
            return match issuer.sign_ocsp(std::slice::from_ref(&order)) {
                Ok(mut signed) if signed.len() == 1 => {
                    self.signed.fetch_add(1, Ordering::Relaxed);
                    signed.pop().map_or_else(
                        || Answer::error(ErrorStatus::TryLater, "error"),
                        |a| Answer::signed(a, CertStatus::Unknown),
                    )
                }
                Ok(_) | Err(_) => Answer::error(ErrorStatus::TryLater, "error"),
            };
        };
        let key = (id.hash == CertIdHash::Sha1, serial);
        if let Some(answer) = self.lock().get(&key)
            && answer.next_update.is_some_and(|next| next - now > REFRESH_WHEN_LEFT)
        {
            return answer.clone();
        }
        match self.sign_keys(&[key], registry, issuer) {
            Ok(1) => match self.lock().get(&key) {
                Some(answer) => answer.clone(),
                None => Answer::error(ErrorStatus::TryLater, "error"),
            },
            Ok(_) => Answer::error(ErrorStatus::TryLater, "error"),
            Err(e) => {
                tracing::warn!(error = %e, %serial, "OCSP: the signer did not sign");
                Answer::error(ErrorStatus::TryLater, "error")
            }
        }
    }

    /// Drops the cached answers of `serials` (just revoked): the next request gets a fresh one.
    pub fn forget(&self, serials: &[Serial]) {
        let mut cache = self.lock();
        for serial in serials {
            cache.remove(&(true, *serial));
            cache.remove(&(false, *serial));
        }
    }

    /// Signs fresh answers for `serials` ahead of requests (after a revocation), for SHA-1
    /// CertIDs (what most clients send). Returns how many.
    pub fn presign(
        &self,
        serials: &[Serial],
        registry: &dyn Registry,
        issuer: &dyn Issuer,
    ) -> Result<usize, IssueError> {
        let keys: Vec<Key> = serials.iter().map(|s| (true, *s)).collect();
        self.sign_keys(&keys, registry, issuer)
    }

    /// Signs again the cached answers that are past half their life (run periodically), so
    /// requests keep finding fresh ones. Returns how many were refreshed.
    pub fn refresh(
        &self,
        registry: &dyn Registry,
        issuer: &dyn Issuer,
        now: OffsetDateTime,
    ) -> Result<usize, IssueError> {
        let stale: Vec<Key> = self
            .lock()
            .iter()
            .filter(|(_, a)| a.next_update.is_some_and(|next| next - now <= REFRESH_WHEN_LEFT))
            .map(|(k, _)| *k)
            .collect();
        self.sign_keys(&stale, registry, issuer)
    }
}
