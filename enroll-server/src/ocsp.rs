//! OCSP answers on the plain-HTTP listener (`/ocsp`, GET and POST; RFC 6960 in the RFC 5019
//! profile). The web tier holds no OCSP key: the signer signs answers (`Issuer::sign_ocsp`),
//! and this cache keeps them per certificate and CertID hash until half their life is gone.
//! A revocation drops the certificate's answers at once and has fresh ones signed ahead of the
//! next request; a periodic refresh signs again, in batches, the answers that are getting old.
//! Serving a cached answer signs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::http::HeaderValue;

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

/// An answer and when it stops being valid. Cheap to clone (a cache hit hands out a copy):
/// the DER is shared, the HTTP dates are formatted once.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The DER `OCSPResponse`.
    pub der: bytes::Bytes,
    /// thisUpdate, for Last-Modified (successful responses only).
    pub this_update: Option<OffsetDateTime>,
    /// nextUpdate, for caching headers.
    pub next_update: Option<OffsetDateTime>,
    /// Which status it carries, for metrics: good, revoked, unknown, or an error name.
    pub label: &'static str,
    /// thisUpdate and nextUpdate as HTTP dates (Last-Modified, Expires).
    pub http_dates: Option<(HeaderValue, HeaderValue)>,
}

impl Answer {
    fn new(
        der: Vec<u8>,
        this_update: Option<OffsetDateTime>,
        next_update: Option<OffsetDateTime>,
        label: &'static str,
    ) -> Self {
        let http_dates = match (this_update, next_update) {
            (Some(this), Some(next)) => http_date(this).zip(http_date(next)),
            _ => None,
        };
        Self { der: der.into(), this_update, next_update, label, http_dates }
    }

    fn error(status: ErrorStatus, label: &'static str) -> Self {
        Self::new(ocsp::error_response(status), None, None, label)
    }

    fn signed(signed: SignedOcsp, status: CertStatus) -> Self {
        let label = match status {
            CertStatus::Good => "good",
            CertStatus::Revoked { .. } => "revoked",
            CertStatus::Unknown => "unknown",
        };
        Self::new(signed.der, Some(signed.this_update), Some(signed.next_update), label)
    }
}

/// An HTTP date: "Sat, 21 Nov 2026 05:01:46 GMT".
pub fn http_date(t: OffsetDateTime) -> Option<HeaderValue> {
    let text = t.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc2822).ok()?;
    HeaderValue::from_str(&text.replace("+0000", "GMT")).ok()
}

/// (issuing-CA generation, SHA-1 CertID, serial as sent): serials of inkan's form and others
/// alike.
type Key = (u16, bool, Vec<u8>);

/// How many answers for certificates the CA does not know (status unknown) may be signed per
/// second, and in a burst: past it such requests get an unsigned "unauthorized", so random
/// serials cannot keep the signer busy.
const UNKNOWN_PER_SEC: f64 = 50.0;
const UNKNOWN_BURST: f64 = 500.0;

/// The cached answers, and what keeps an answer signed from an old status out of them.
#[derive(Default)]
struct Cached {
    answers: HashMap<Key, Answer>,
    /// Bumped by each `forget`.
    generation: u64,
    /// The generation at which each serial was last forgotten.
    forgotten: HashMap<Vec<u8>, u64>,
    /// Answers whose status was read before this generation are not kept (set when
    /// `forgotten` is emptied to bound it).
    floor: u64,
}

impl Cached {
    /// Whether an answer about `serial` whose status was read at generation `read_at` is
    /// still current: no revocation forgot the serial since.
    fn current(&self, serial: &[u8], read_at: u64) -> bool {
        read_at >= self.floor && self.forgotten.get(serial).is_none_or(|&at| at <= read_at)
    }
}

/// A token bucket for signing answers about unknown certificates.
struct Budget {
    state: Mutex<(f64, std::time::Instant)>,
}

impl Budget {
    fn new() -> Self {
        Self { state: Mutex::new((UNKNOWN_BURST, std::time::Instant::now())) }
    }

    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, at) = &mut *state;
        let now = std::time::Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * UNKNOWN_PER_SEC).min(UNKNOWN_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a request needs: its answer, or a signature for the cache key.
enum Lookup {
    Answered(Answer),
    Sign(Key),
}

/// The cache of signed answers for every generation of the issuing CA, and the root's
/// answers about each of them.
pub struct OcspCache {
    issuers: Vec<(u16, IssuerInfo, RootAnswer)>,
    cache: Mutex<Cached>,
    signed: AtomicU64,
    unknown_budget: Budget,
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
        let answer = Answer::new(der, Some(this), next, "good");
        *loaded = Some((modified, answer.clone()));
        Some(answer)
    }
}

impl std::fmt::Debug for OcspCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspCache").field("issuers", &self.issuers.len()).finish_non_exhaustive()
    }
}

/// What the registry says of `serial`, as an OCSP status from generation `issuer`: a serial
/// not of inkan's form, or of another generation, is no certificate of this CA.
fn status_of(registry: &dyn Registry, serial: &[u8], issuer: u16) -> Result<CertStatus, RegistryError> {
    let Some(serial) = Serial::from_bytes(serial) else { return Ok(CertStatus::Unknown) };
    Ok(match registry.get(&serial)? {
        Some(record) if record.issuer != issuer => CertStatus::Unknown,
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
        Self::for_generations(&[(1, ca_der, root_answer.to_owned())], root_der)
    }

    /// A cache for every generation of the issuing CA: number, certificate, and the file of the
    /// root's pre-signed answer about it.
    pub fn for_generations(
        generations: &[(u16, &[u8], std::path::PathBuf)],
        root_der: &[u8],
    ) -> Result<Self, pki::Error> {
        let mut issuers = Vec::with_capacity(generations.len());
        for (n, ca_der, root_answer) in generations {
            let ca_serial = pki::certificate::Summary::from_der(ca_der)?.serial;
            let root = RootAnswer {
                root: IssuerInfo::from_der(root_der).ok(),
                ca_serial: pki::encoding::unhex(&ca_serial).unwrap_or_default(),
                file: root_answer.clone(),
                loaded: Mutex::new(None),
            };
            issuers.push((*n, IssuerInfo::from_der(ca_der)?, root));
        }
        Ok(Self {
            issuers,
            cache: Mutex::new(Cached::default()),
            signed: AtomicU64::new(0),
            unknown_budget: Budget::new(),
        })
    }

    /// How many answers the signer signed for this cache.
    pub fn signed_count(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches `answer` unless a revocation forgot its serial after its status was read.
    fn insert(&self, key: Key, answer: Answer, read_at: u64) {
        let mut cache = self.lock();
        if !cache.current(&key.2, read_at) {
            return;
        }
        if cache.answers.len() >= MAX_CACHED {
            cache.answers.retain(|_, a| a.label != "unknown");
            if cache.answers.len() >= MAX_CACHED {
                cache.answers.clear();
            }
        }
        cache.answers.insert(key, answer);
    }

    /// Has the signer sign `keys` with their current registry status, in batches, and caches
    /// the answers; returns them. Answers about unknown certificates are signed while the
    /// budget for them lasts and skipped after. When the signer refuses a batch (one of its
    /// serials is not as the registry says), its answers are asked for one by one, so the
    /// others are still signed.
    fn sign_keys(
        &self,
        keys: &[Key],
        registry: &dyn Registry,
        issuer: &dyn Issuer,
    ) -> Result<Vec<(Key, Answer)>, IssueError> {
        let mut done = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            // The generation is read before the statuses: a revocation that changes one after
            // this point also forgets it after this point, and the answer is not kept.
            let read_at = self.lock().generation;
            let mut orders = Vec::with_capacity(chunk.len());
            let mut asked = Vec::with_capacity(chunk.len());
            for key @ (issuer, sha1, serial) in chunk {
                match status_of(registry, serial, *issuer) {
                    Ok(CertStatus::Unknown) if !self.unknown_budget.take() => {}
                    Ok(status) => {
                        orders.push(OcspOrder {
                            serial: serial.clone(),
                            hash: hash_of(*sha1),
                            status,
                            issuer: *issuer,
                        });
                        asked.push(key.clone());
                    }
                    Err(e) => tracing::error!(error = %e, "OCSP: registry"),
                }
            }
            if orders.is_empty() {
                continue;
            }
            let signed = match issuer.sign_ocsp(&orders) {
                Ok(signed) => signed.into_iter().map(Some).collect(),
                Err(IssueError::Rejected(why)) if orders.len() > 1 => {
                    tracing::warn!(%why, "OCSP: the signer refused a batch; asking for its answers one by one");
                    orders
                        .iter()
                        .map(|order| match issuer.sign_ocsp(std::slice::from_ref(order)) {
                            Ok(mut one) if one.len() == 1 => one.pop(),
                            Ok(_) => None,
                            Err(e) => {
                                tracing::warn!(error = %e, serial = %pki::encoding::hex(&order.serial), "OCSP: not signed");
                                None
                            }
                        })
                        .collect::<Vec<_>>()
                }
                Err(e) => return Err(e),
            };
            for ((key, order), answer) in asked.into_iter().zip(&orders).zip(signed) {
                let Some(answer) = answer else { continue };
                self.signed.fetch_add(1, Ordering::Relaxed);
                let answer = Answer::signed(answer, order.status);
                self.insert(key.clone(), answer.clone(), read_at);
                done.push((key, answer));
            }
        }
        Ok(done)
    }

    /// Answers one DER request: from the cache when fresh, else signed by the signer now from
    /// the live registry status.
    pub fn respond(&self, request: &[u8], registry: &dyn Registry, issuer: &dyn Issuer, now: OffsetDateTime) -> Answer {
        let key = match self.lookup(request, now) {
            Lookup::Answered(answer) => return answer,
            Lookup::Sign(key) => key,
        };
        match self.sign_keys(std::slice::from_ref(&key), registry, issuer) {
            Ok(mut signed) => match signed.pop() {
                Some((_, answer)) => answer,
                // Not signed: an unknown certificate past the budget, or refused.
                None => Answer::error(ErrorStatus::Unauthorized, "unauthorized"),
            },
            Err(e) => {
                tracing::warn!(error = %e, serial = %pki::encoding::hex(&key.2), "OCSP: the signer did not sign");
                Answer::error(ErrorStatus::TryLater, "error")
            }
        }
    }

    /// The answer to one DER request when it needs neither the registry nor the signer (a
    /// fresh cached answer, a malformed or foreign request, an issuing CA asked of the root):
    /// what a request thread can answer without blocking. `None`: ask [`OcspCache::respond`].
    pub fn cached(&self, request: &[u8], now: OffsetDateTime) -> Option<Answer> {
        match self.lookup(request, now) {
            Lookup::Answered(answer) => Some(answer),
            Lookup::Sign(_) => None,
        }
    }

    fn lookup(&self, request: &[u8], now: OffsetDateTime) -> Lookup {
        let id = match ocsp::parse_request(request) {
            Ok(id) => id,
            Err(_) => return Lookup::Answered(Answer::error(ErrorStatus::MalformedRequest, "malformed")),
        };
        let Some(generation) = self.issuers.iter().find(|(_, issuer, _)| id.is_issued_by(issuer)).map(|(n, _, _)| *n)
        else {
            // An issuing CA itself, asked of the root (with SHA-1, as the answer was signed).
            let about = self.issuers.iter().map(|(_, _, root)| root).find(|root| {
                root.root.as_ref().is_some_and(|r| id.is_issued_by(r))
                    && id.serial == root.ca_serial
                    && id.hash == CertIdHash::Sha1
            });
            return Lookup::Answered(match about.and_then(RootAnswer::answer) {
                Some(answer) => answer,
                None => Answer::error(ErrorStatus::Unauthorized, "unauthorized"),
            });
        };
        let key = (generation, id.hash == CertIdHash::Sha1, id.serial);
        if let Some(answer) = self.lock().answers.get(&key)
            && answer.next_update.is_some_and(|next| next - now > REFRESH_WHEN_LEFT)
        {
            return Lookup::Answered(answer.clone());
        }
        Lookup::Sign(key)
    }

    /// Drops the cached answers of `serials` (just revoked): the next request gets a fresh one,
    /// and an answer being signed from the old status is not kept.
    pub fn forget(&self, serials: &[Serial]) {
        let mut cache = self.lock();
        cache.generation += 1;
        let generation = cache.generation;
        if cache.forgotten.len() + serials.len() > MAX_CACHED {
            cache.forgotten.clear();
            cache.floor = generation;
        }
        for serial in serials {
            let bytes = serial.as_bytes().to_vec();
            for (issuer, _, _) in &self.issuers {
                cache.answers.remove(&(*issuer, true, bytes.clone()));
                cache.answers.remove(&(*issuer, false, bytes.clone()));
            }
            cache.forgotten.insert(bytes, generation);
        }
    }

    /// Signs fresh answers for `serials` ahead of requests (after a revocation), for both
    /// CertID hashes. Returns how many.
    pub fn presign(
        &self,
        serials: &[Serial],
        registry: &dyn Registry,
        issuer: &dyn Issuer,
    ) -> Result<usize, IssueError> {
        let mut keys: Vec<Key> = Vec::with_capacity(serials.len() * 2);
        for serial in serials {
            // Asked of the generation that issued it.
            let issuer = registry.get(serial).ok().flatten().map_or(1, |record| record.issuer);
            keys.extend([(issuer, true, serial.as_bytes().to_vec()), (issuer, false, serial.as_bytes().to_vec())]);
        }
        Ok(self.sign_keys(&keys, registry, issuer)?.len())
    }

    /// Signs again the cached answers that are past half their life (run periodically), so
    /// requests keep finding fresh ones; answers about unknown certificates are dropped
    /// instead. Returns how many were refreshed.
    pub fn refresh(
        &self,
        registry: &dyn Registry,
        issuer: &dyn Issuer,
        now: OffsetDateTime,
    ) -> Result<usize, IssueError> {
        let stale: Vec<Key> = {
            let mut cache = self.lock();
            let old = |a: &Answer| a.next_update.is_some_and(|next| next - now <= REFRESH_WHEN_LEFT);
            cache.answers.retain(|_, a| !(a.label == "unknown" && old(a)));
            cache.answers.iter().filter(|(_, a)| old(a)).map(|(k, _)| k.clone()).collect()
        };
        Ok(self.sign_keys(&stale, registry, issuer)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pki::registry::{BlockedKey, CertRecord, RequestAnswer};
    use pki::request::{IssueOrder, IssuedCertificate};
    use std::sync::mpsc;

    /// A registry of records in memory: the cache only reads records.
    #[derive(Default)]
    struct Records(Mutex<HashMap<Serial, CertRecord>>);

    impl Records {
        fn set(&self, record: CertRecord) {
            self.0.lock().expect("lock").insert(record.serial, record);
        }
    }

    impl Registry for Records {
        fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
            Ok(self.0.lock().expect("lock").get(serial).cloned())
        }
        fn record_pending(&self, _: &CertRecord, _: Option<&[u8; 16]>) -> Result<(), RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn record_issued(&self, _: &Serial, _: &[u8]) -> Result<(), RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn find_request(&self, _: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
            unreachable!("the OCSP cache only reads records")
        }
        fn record_certificate(&self, _: &CertRecord, _: &[u8], _: bool) -> Result<Vec<Serial>, RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn certificate_der(&self, _: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
            unreachable!("the OCSP cache only reads records")
        }
        fn all(&self) -> Result<Vec<CertRecord>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn by_account(&self, _: &str) -> Result<Vec<CertRecord>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn valid_by_account(&self, _: &str) -> Result<Vec<CertRecord>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn by_key(&self, _: &[u8; 32]) -> Result<Vec<CertRecord>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn expiring_between(&self, _: OffsetDateTime, _: OffsetDateTime) -> Result<Vec<CertRecord>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn revoke(&self, _: &Serial, _: OffsetDateTime, _: pki::RevocationReason) -> Result<CertRecord, RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn revoked_unexpired(&self, _: OffsetDateTime) -> Result<Vec<pki::RevokedEntry>, RegistryError> {
            unreachable!("the OCSP cache reads one record at a time")
        }
        fn next_crl_number(&self) -> Result<u64, RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn block_key(&self, _: &[u8; 32], _: &Serial, _: OffsetDateTime) -> Result<bool, RegistryError> {
            unreachable!("the OCSP cache only reads")
        }
        fn blocked_key(&self, _: &[u8; 32]) -> Result<Option<BlockedKey>, RegistryError> {
            unreachable!("the OCSP cache only reads records")
        }
    }

    /// A signer whose answers carry the status they were asked for in place of a signature;
    /// it can be held inside a call, refuses serials in `refuse` as the real signer refuses
    /// a "good" it does not know, and counts the orders it was given.
    struct Signer {
        ca: Vec<u8>,
        hold: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
        refuse: Vec<Vec<u8>>,
        orders: AtomicU64,
    }

    impl Issuer for Signer {
        fn issue(&self, _: &IssueOrder) -> Result<IssuedCertificate, IssueError> {
            unreachable!("the OCSP cache only signs answers")
        }
        fn sign_crl(&self) -> Result<Vec<u8>, IssueError> {
            unreachable!("the OCSP cache only signs answers")
        }
        fn sign_ocsp(&self, orders: &[OcspOrder]) -> Result<Vec<SignedOcsp>, IssueError> {
            let hold = self.hold.lock().expect("lock").take();
            if let Some((entered, release)) = hold {
                entered.send(()).expect("entered");
                release.recv().expect("released");
            }
            if let Some(order) = orders.iter().find(|o| self.refuse.contains(&o.serial)) {
                return Err(IssueError::Rejected(format!("{} is not good", pki::encoding::hex(&order.serial))));
            }
            self.orders.fetch_add(orders.len() as u64, Ordering::Relaxed);
            let now = OffsetDateTime::now_utc();
            Ok(orders
                .iter()
                .map(|o| SignedOcsp {
                    der: format!("{:?}", o.status).into_bytes(),
                    this_update: now,
                    next_update: now + Duration::days(4),
                })
                .collect())
        }
        fn ca_certificate(&self) -> &[u8] {
            &self.ca
        }
        fn root_certificate(&self) -> &[u8] {
            &self.ca
        }
    }

    fn ca() -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "OCSP cache test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![2; 20]);
        params.self_signed(&key).expect("CA").der().to_vec()
    }

    fn record(serial: Serial, state: State) -> CertRecord {
        let now = OffsetDateTime::now_utc();
        CertRecord {
            serial,
            account: "alice".into(),
            profile: pki::Profile::Client,
            key_sha256: [9; 32],
            not_before: now,
            not_after: now + Duration::days(30),
            recorded_at: now,
            state,
            issuer: 1,
        }
    }

    struct Fixture {
        cache: OcspCache,
        records: Records,
        signer: Signer,
        issuer: IssuerInfo,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(refuse: Vec<Vec<u8>>) -> Self {
            let ca = ca();
            let dir = tempfile::tempdir().expect("tempdir");
            let cache = OcspCache::new(&ca, &ca, &dir.path().join("ca-ocsp.der")).expect("cache");
            let signer = Signer { ca: ca.clone(), hold: Mutex::new(None), refuse, orders: AtomicU64::new(0) };
            Self {
                cache,
                records: Records::default(),
                signer,
                issuer: IssuerInfo::from_der(&ca).expect("issuer"),
                _dir: dir,
            }
        }

        fn ask(&self, serial: &Serial) -> Answer {
            let request = ocsp::request_for(
                CertIdHash::Sha1,
                self.issuer.subject_name_der(),
                self.issuer.public_key().key_bits(),
                serial,
            );
            self.cache.respond(&request, &self.records, &self.signer, OffsetDateTime::now_utc())
        }
    }

    /// A request that read "good" while the certificate was being revoked must not leave its
    /// answer in the cache over the revoked one.
    #[test]
    fn an_answer_signed_from_the_old_status_is_not_kept_after_a_revocation() {
        let f = Fixture::new(Vec::new());
        let serial = Serial::from_random([5; 16]).expect("serial");
        f.records.set(record(serial, State::Issued));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        *f.signer.hold.lock().expect("lock") = Some((entered_tx, release_rx));

        std::thread::scope(|scope| {
            let asking = scope.spawn(|| f.ask(&serial));
            // The request has read "good" and is at the signer; the revocation lands now.
            entered.recv().expect("the request reached the signer");
            let at = OffsetDateTime::now_utc();
            f.records.set(record(serial, State::Revoked { at, reason: pki::RevocationReason::KeyCompromise }));
            f.cache.forget(&[serial]);
            assert_eq!(f.cache.presign(&[serial], &f.records, &f.signer).expect("presign"), 2, "both CertID hashes");
            release.send(()).expect("release");
            assert_eq!(asking.join().expect("join").label, "good", "the request in flight is answered as it read");
        });
        assert_eq!(f.ask(&serial).label, "revoked", "the cache keeps the revoked answer, not the late good one");

        // The control: without a revocation in between, the answer is kept and served again.
        let other = Serial::from_random([6; 16]).expect("serial");
        f.records.set(record(other, State::Issued));
        assert_eq!(f.ask(&other).label, "good");
        let before = f.signer.orders.load(Ordering::Relaxed);
        assert_eq!(f.ask(&other).label, "good");
        assert_eq!(f.signer.orders.load(Ordering::Relaxed), before, "served from the cache");
    }

    /// One serial the signer refuses does not keep the rest of a batch from being signed.
    #[test]
    fn a_refused_serial_does_not_fail_its_batch() {
        let bad = Serial::from_random([7; 16]).expect("serial");
        let f = Fixture::new(vec![bad.as_bytes().to_vec()]);
        let serials: Vec<Serial> = (1..=20u8).map(|i| Serial::from_random([0x40 + i; 16]).expect("serial")).collect();
        for s in &serials {
            f.records.set(record(*s, State::Issued));
        }
        f.records.set(record(bad, State::Issued));
        let mut all = serials.clone();
        all.push(bad);
        assert_eq!(f.cache.presign(&all, &f.records, &f.signer).expect("presign"), 40, "all but the refused one");
        assert_eq!(f.ask(&bad).label, "error", "the refused serial gets tryLater");
    }

    /// Answers about unknown serials are signed within a budget; past it they are refused
    /// unsigned, and known certificates are still answered.
    #[test]
    fn unknown_serials_are_signed_within_a_budget() {
        let f = Fixture::new(Vec::new());
        let mut labels = HashMap::<&str, usize>::new();
        for i in 0..(UNKNOWN_BURST as usize + 200) {
            let mut bytes = [0x11u8; 16];
            bytes[8..].copy_from_slice(&(i as u64).to_be_bytes());
            let serial = Serial::from_random(bytes).expect("serial");
            *labels.entry(f.ask(&serial).label).or_default() += 1;
        }
        let unknown = labels.get("unknown").copied().unwrap_or(0);
        assert!(unknown >= UNKNOWN_BURST as usize && unknown < UNKNOWN_BURST as usize + 100, "{labels:?}");
        assert!(labels.get("unauthorized").copied().unwrap_or(0) > 100, "{labels:?}");
        let known = Serial::from_random([3; 16]).expect("serial");
        f.records.set(record(known, State::Issued));
        assert_eq!(f.ask(&known).label, "good");
    }
}
