//! The certificate registry's data and interface: what the CA has issued and revoked, behind the
//! [`Registry`] trait. The storage engines live elsewhere (`ca::SledStore`); this is the
//! contract the CA, the CLI and the enrollment service share.

pub mod conformance;

use crate::{Profile, RevocationReason, RevokedEntry, Serial};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the registry knows about one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// The certificate's serial.
    pub serial: Serial,
    /// The account it was issued to.
    pub account: String,
    /// The profile it was issued under.
    pub profile: Profile,
    /// SHA-256 of its SubjectPublicKeyInfo, hex.
    #[serde(with = "hex32")]
    pub key_sha256: [u8; 32],
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When the issuance was recorded (before signing).
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Where it is in its life.
    pub state: State,
    /// The generation of the issuing CA that signed it: 1 for the CA `inkan init` made, 2, 3...
    /// for those `inkan ca rollover` made.
    #[serde(default = "first_generation")]
    pub issuer: u16,
}

fn first_generation() -> u16 {
    1
}

/// The recorded state of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// Recorded, not (yet) known to be signed: an issuance that was cut off.
    Pending,
    /// Signed and handed out.
    Issued,
    /// Revoked; reason `superseded` when it was replaced by a reissue.
    Revoked {
        /// When the revocation was recorded.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// Why.
        reason: RevocationReason,
    },
}

/// The status shown to operators and users, derived from the state and the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Issuance recorded but not completed.
    Pending,
    /// Issued, not revoked, not expired.
    Valid,
    /// Revoked for a reason other than reissue.
    Revoked,
    /// Replaced by a reissued certificate.
    Superseded,
    /// Past its notAfter, never revoked.
    Expired,
}

impl Status {
    /// The lowercase name used in listings and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Valid => "valid",
            Self::Revoked => "revoked",
            Self::Superseded => "superseded",
            Self::Expired => "expired",
        }
    }
}

impl CertRecord {
    /// The status at `now`.
    pub fn status(&self, now: OffsetDateTime) -> Status {
        match self.state {
            State::Pending => Status::Pending,
            State::Revoked { reason: RevocationReason::Superseded, .. } => Status::Superseded,
            State::Revoked { .. } => Status::Revoked,
            State::Issued if self.not_after < now => Status::Expired,
            State::Issued => Status::Valid,
        }
    }
}

/// How many certificates the registry holds in each [`Status`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Issued, not revoked, not expired.
    pub valid: u64,
    /// Issued, past notAfter, never revoked.
    pub expired: u64,
    /// Revoked for a reason other than reissue.
    pub revoked: u64,
    /// Replaced by a reissued certificate.
    pub superseded: u64,
    /// Issuance recorded, never completed.
    pub pending: u64,
}

impl StatusCounts {
    /// Counts one certificate of `status`.
    pub fn add(&mut self, status: Status) {
        *self.slot(status) += 1;
    }

    /// The count of one status.
    pub fn get(&self, status: Status) -> u64 {
        match status {
            Status::Valid => self.valid,
            Status::Expired => self.expired,
            Status::Revoked => self.revoked,
            Status::Superseded => self.superseded,
            Status::Pending => self.pending,
        }
    }

    fn slot(&mut self, status: Status) -> &mut u64 {
        match status {
            Status::Valid => &mut self.valid,
            Status::Expired => &mut self.expired,
            Status::Revoked => &mut self.revoked,
            Status::Superseded => &mut self.superseded,
            Status::Pending => &mut self.pending,
        }
    }

    /// Every certificate, whatever its status.
    pub fn total(&self) -> u64 {
        self.valid + self.expired + self.revoked + self.superseded + self.pending
    }
}

impl Status {
    /// Every status, in the order listings show them.
    pub const ALL: [Status; 5] = [Status::Valid, Status::Expired, Status::Revoked, Status::Superseded, Status::Pending];
}

/// What a request id was answered with: the issuance record, and the certificate (DER) once
/// signed.
pub type RequestAnswer = (CertRecord, Option<Vec<u8>>);

/// The registry. Every method that changes something returns only once the change is
/// durable (flushed to disk).
pub trait Registry: Send + Sync {
    /// Records an issuance before signing, with the id of the request it answers if any.
    /// Fails with [`RegistryError::SerialTaken`] when the serial is already in the registry,
    /// leaving it unchanged.
    fn record_pending(&self, record: &CertRecord, request_id: Option<&[u8; 16]>) -> Result<(), RegistryError>;

    /// Records the signed certificate of a pending issuance.
    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError>;

    /// The latest issuance recorded for a request id, and its certificate once signed.
    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError>;

    /// Records a certificate signed elsewhere (by a signer process that recorded it in its own
    /// ledger before signing). With `supersede_others`, the account's other issued, unexpired
    /// certificates become revoked with reason superseded in the same durable write; their
    /// serials are returned. Recording the same certificate again changes nothing; another
    /// certificate under a recorded serial is refused, and so is a certificate whose key is
    /// blocked ([`RegistryError::KeyBlocked`], checked in the same write).
    fn record_certificate(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError>;

    /// [`Registry::record_certificate`], acknowledged before it is durable: for a certificate
    /// the signer's ledger already holds durably, which the registry catches up from after a
    /// crash. [`Registry::sync`] makes it durable. By default, the durable write.
    fn record_certificate_deferred(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        self.record_certificate(record, der, supersede_others)
    }

    /// Makes every change acknowledged before it was durable durable.
    fn sync(&self) -> Result<(), RegistryError> {
        Ok(())
    }

    /// How far into the signer's ledger (a byte offset) the registry is known to hold every
    /// certificate: where catching up starts. 0 when never set.
    fn ledger_cursor(&self) -> Result<u64, RegistryError> {
        Ok(0)
    }

    /// Records durably that the registry holds every certificate of the ledger up to `at`.
    fn set_ledger_cursor(&self, _at: u64) -> Result<(), RegistryError> {
        Ok(())
    }

    /// The record of one certificate.
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError>;

    /// The DER certificate, once issued.
    fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError>;

    /// All records, in serial order.
    fn all(&self) -> Result<Vec<CertRecord>, RegistryError>;

    /// The records of one account.
    fn by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError>;

    /// The account's certificates that are issued and not revoked (some may have expired):
    /// what eligibility and reissue look at, without the account's history.
    fn valid_by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError>;

    /// The records certifying one public key (by SHA-256 of its SPKI).
    fn by_key(&self, key_sha256: &[u8; 32]) -> Result<Vec<CertRecord>, RegistryError>;

    /// The records certifying one public key for accounts other than `account`: what stops
    /// `account` from using the key, read without the account's own renewals of it (an EST
    /// client re-enrolling with one key makes many).
    fn by_key_for_others(&self, key_sha256: &[u8; 32], account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        Ok(self.by_key(key_sha256)?.into_iter().filter(|r| r.account != account).collect())
    }

    /// The records whose notAfter is in `[from, to]`, from the notAfter index.
    fn expiring_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<CertRecord>, RegistryError>;

    /// The first `limit` records, in notAfter order, whose notAfter is in `[from, to]` and that
    /// `keep` accepts: a page of [`Registry::expiring_between`] that reads no further than it
    /// needs. By default the whole range, filtered and cut.
    fn expiring_first(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
        keep: &dyn Fn(&CertRecord) -> bool,
    ) -> Result<Vec<CertRecord>, RegistryError> {
        let mut records = self.expiring_between(from, to)?;
        records.retain(|r| keep(r));
        records.sort_by_key(|r| (r.not_after, r.serial));
        records.truncate(limit);
        Ok(records)
    }

    /// How many certificates there are of each status at `now`. By default every record is
    /// read; a registry that keeps counts answers without reading them.
    fn count_by_status(&self, now: OffsetDateTime) -> Result<StatusCounts, RegistryError> {
        let mut counts = StatusCounts::default();
        for record in self.all()? {
            counts.add(record.status(now));
        }
        Ok(counts)
    }

    /// How many certificates are valid at `now` and expire by `until` (notAfter in
    /// `[now, until]`). By default read from [`Registry::expiring_between`].
    fn count_valid_expiring(&self, now: OffsetDateTime, until: OffsetDateTime) -> Result<u64, RegistryError> {
        let records = self.expiring_between(now, until)?;
        Ok(records.iter().filter(|r| r.status(now) == Status::Valid).count() as u64)
    }

    /// Marks an issued certificate revoked and returns the updated record.
    fn revoke(
        &self,
        serial: &Serial,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<CertRecord, RegistryError>;

    /// The revoked certificates that have not expired by `now`: the CRL's entries.
    fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<RevokedEntry>, RegistryError>;

    /// The revoked, unexpired certificates issuing-CA generation `issuer` signed: what its
    /// CRL lists.
    fn revoked_unexpired_by(&self, now: OffsetDateTime, issuer: u16) -> Result<Vec<RevokedEntry>, RegistryError> {
        let mut out = Vec::new();
        for entry in self.revoked_unexpired(now)? {
            if self.get(&entry.serial)?.is_some_and(|record| record.issuer == issuer) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Increments and returns the CRL number (the first is 1), durably.
    fn next_crl_number(&self) -> Result<u64, RegistryError>;

    /// Blocks a public key (by SHA-256 of its SPKI) for any future issuance: it was reported
    /// compromised when `serial` was revoked at `at`. Returns false when it was blocked already
    /// (the first report stays).
    fn block_key(&self, key_sha256: &[u8; 32], serial: &Serial, at: OffsetDateTime) -> Result<bool, RegistryError>;

    /// Whether a public key is blocked, and the report that blocked it.
    fn blocked_key(&self, key_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, RegistryError>;

    /// For a registry several processes write (a shared database): the certificates revoked
    /// since `since` by any of them, as (serial, when the revocation was written), and the
    /// registry's clock now, which the caller passes as the next `since`. `None` (the default):
    /// one process writes this registry, and it learns of its revocations as it makes them.
    fn revoked_since(&self, _since: Option<OffsetDateTime>) -> Result<Option<Revocations>, RegistryError> {
        Ok(None)
    }
}

/// What [`Registry::revoked_since`] found: the registry's clock, and the revocations.
pub type Revocations = (OffsetDateTime, Vec<(Serial, OffsetDateTime)>);

/// A public key no certificate may certify again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedKey {
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub key_sha256: [u8; 32],
    /// The certificate whose keyCompromise revocation blocked it.
    pub serial: Serial,
    /// When.
    pub at: OffsetDateTime,
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The serial is already recorded.
    #[error("serial {0} is already in the registry")]
    SerialTaken(Serial),
    /// No record for this serial.
    #[error("no certificate with serial {0}")]
    NotFound(Serial),
    /// The certificate's key is blocked (reported compromised): it is not recorded.
    #[error("this public key was reported compromised; a certificate for it is not recorded")]
    KeyBlocked,
    /// The record is not in a state that allows the change.
    #[error("certificate {serial} is {status}")]
    WrongState {
        /// The certificate.
        serial: Serial,
        /// Its status.
        status: &'static str,
    },
    /// The storage engine failed (I/O, corruption).
    #[error("storage: {0}")]
    Backend(String),
    /// A stored value that does not decode.
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::encoding::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        crate::encoding::unhex(&text)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}
