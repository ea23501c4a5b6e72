//! The issuing CA: issuance in the order of ARCHITECTURE.md, and CRL signing.

use std::sync::Arc;

use pki::certificate::{self, CertificateOrder};
use pki::crl::{self, CrlOrder, Shard};
use pki::{IssuerInfo, Profile, ProfileSettings, RevokedEntry, San, Serial};
use time::{Duration, OffsetDateTime};

use crate::Error;
use crate::signer::Signer;
use pki::registry::{CertRecord, RegistryError, State};

use crate::ledger::Ledger;

/// What to issue. The CA trusts none of it: the CSR is validated again here.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// The CSR, PEM or DER, as received.
    pub csr: &'a [u8],
    /// The account the certificate is for.
    pub account: &'a str,
    /// The profile.
    pub profile: Profile,
    /// Subject alternative names (server profile).
    pub sans: &'a [San],
    /// Validity in days; `None` for the configured default.
    pub days: Option<u32>,
    /// The sender's id for this request: sent again, it gets the same certificate.
    pub request_id: Option<[u8; 16]>,
    /// Whether the certificate is to supersede the account's others (a reissue), as the
    /// registry records it; kept in the ledger for a registry catching up.
    pub supersede: bool,
}

/// A certificate the CA signed and recorded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its registry record.
    pub record: CertRecord,
    /// True when this answers a repeated request id with the certificate signed before
    /// (nothing was signed now).
    pub replayed: bool,
}

/// The issuing CA: its certificate, its key, its ledger and its profile settings.
pub struct CertificateAuthority {
    issuer: IssuerInfo,
    signer: Box<dyn Signer>,
    store: Arc<dyn Ledger>,
    settings: ProfileSettings,
    on_signed: Option<SignedHook>,
    /// Which generation of the issuing CA this is (1: made by `init`).
    generation: u16,
}

/// Called with each certificate just signed, while the ledger records it: the signer writes its
/// audit line there, so the two syncs overlap instead of following each other.
pub type SignedHook = Arc<dyn Fn(&CertRecord) + Send + Sync>;

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// How many times a colliding serial is drawn again before giving up.
const SERIAL_ATTEMPTS: usize = 8;

impl CertificateAuthority {
    /// A CA from its certificate (DER), a signer holding the matching key, the ledger it
    /// records issuances in, and settings. Refuses a key that does not match the certificate.
    pub fn new(
        certificate_der: &[u8],
        signer: Box<dyn Signer>,
        store: Arc<dyn Ledger>,
        settings: ProfileSettings,
    ) -> Result<Self, Error> {
        let issuer = IssuerInfo::from_der(certificate_der)?;
        if issuer.public_key() != signer.public_key() {
            return Err(Error::KeyMismatch { key: "(signer)".into(), certificate: "(issuer)".into() });
        }
        Ok(Self { issuer, signer, store, settings, on_signed: None, generation: 1 })
    }

    /// This CA as generation `generation` of the issuing CA (its records say so).
    pub fn with_generation(mut self, generation: u16) -> Self {
        self.generation = generation;
        self
    }

    /// Which generation of the issuing CA this is.
    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// Runs `hook` for every certificate signed, once the ledger holds it durably and before it
    /// is released (the hook should not wait for a disk of its own: it is on every issuance's
    /// critical path).
    pub fn with_signed_hook(mut self, hook: SignedHook) -> Self {
        self.on_signed = Some(hook);
        self
    }

    /// The CA certificate and its properties.
    pub fn issuer(&self) -> &IssuerInfo {
        &self.issuer
    }

    /// The ledger issuances are recorded in.
    pub fn ledger(&self) -> &dyn Ledger {
        self.store.as_ref()
    }

    /// The CA's key, for what this crate signs besides certificates and CRLs (the OCSP answers
    /// of a fixture set).
    pub(crate) fn signer(&self) -> &dyn Signer {
        self.signer.as_ref()
    }

    /// Signs a checkpoint of the audit trail (`lines` long, its last line hashing to `head`)
    /// with the CA key and records it in the ledger; returns it.
    pub fn checkpoint_audit(
        &self,
        lines: u64,
        head: String,
        now: time::OffsetDateTime,
    ) -> Result<crate::checkpoint::SignedCheckpoint, Error> {
        let signed =
            crate::checkpoint::statement(lines, head, now).sign(self.signer(), self.issuer.certificate_der())?;
        self.store.record_checkpoint(&signed.to_json())?;
        Ok(signed)
    }

    /// The profile settings.
    pub fn settings(&self) -> &ProfileSettings {
        &self.settings
    }

    /// Issues a certificate now.
    pub fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, Error> {
        self.issue_at(request, OffsetDateTime::now_utc())
    }

    /// Issues a certificate with `now` as the CA's clock:
    /// 1. validate the CSR (signature, key policy);
    /// 2. choose a fresh serial, validity and extensions from the profile;
    /// 3. build and lint the to-be-signed certificate;
    /// 4. record the pending issuance (durable with the certificate's record);
    /// 5. sign; 6. record the certificate durably; 7. return it.
    pub fn issue_at(&self, request: &IssueRequest<'_>, now: OffsetDateTime) -> Result<Issued, Error> {
        let csr = pki::csr::validate(request.csr)?;
        if let Some(id) = &request.request_id
            && let Some((record, der)) = self.store.find_request(id)?
        {
            // A request id names one request: the same account, key and profile.
            if record.account != request.account
                || record.key_sha256 != csr.key().sha256()
                || record.profile != request.profile
            {
                return Err(Error::RequestIdReused);
            }
            // A retry: the same certificate if it was signed. One cut off before it was
            // signed stays pending (its signature, if any, never left the crashed process) and
            // a new issuance answers the request.
            if let Some(der) = der {
                return Ok(Issued { der, record, replayed: true });
            }
        }
        for _ in 0..SERIAL_ATTEMPTS {
            let serial = random_serial()?;
            let order = CertificateOrder {
                serial,
                account: request.account,
                profile: request.profile,
                sans: request.sans,
                days: request.days,
                now,
            };
            let prepared = certificate::prepare(&self.issuer, &self.settings, &csr, &order)?;
            let validity = prepared.validity();
            let mut record = CertRecord {
                serial,
                account: request.account.to_owned(),
                profile: request.profile,
                key_sha256: prepared.key_sha256(),
                not_before: validity.not_before,
                not_after: validity.not_after,
                recorded_at: now,
                state: State::Pending,
                issuer: self.generation,
            };
            match self.store.record_pending(&record, request.request_id.as_ref(), request.supersede) {
                Ok(()) => {}
                Err(RegistryError::SerialTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            let signature = self.signer.sign(prepared.tbs_der())?;
            let der = prepared.assemble(&signature);
            record.state = State::Issued;
            self.store.record_issued(&serial, &der)?;
            if let Some(hook) = &self.on_signed {
                hook(&record);
            }
            return Ok(Issued { der, record, replayed: false });
        }
        Err(Error::SerialExhausted)
    }

    /// Signs a CRL listing `entries`, valid for `validity` from `now`: the whole CRL, or with
    /// `shard` one partition of it (every entry must belong to it; the CRL names the shard's
    /// URL, made from this CA's CRL URL). The CRL number is incremented durably before signing,
    /// so numbers never repeat.
    pub fn sign_crl_for(
        &self,
        entries: &[RevokedEntry],
        now: OffsetDateTime,
        validity: Duration,
        shard: Option<Shard>,
    ) -> Result<Vec<u8>, Error> {
        let next_update = now
            .checked_add(validity)
            .ok_or_else(|| pki::Error::InvalidValidity { reason: "the CRL's nextUpdate is out of range".into() })?;
        let url = match shard {
            None => None,
            Some(shard) => {
                if !(2..=crl::MAX_SHARDS).contains(&shard.count) || shard.index >= shard.count {
                    return Err(Error::CrlShard(format!(
                        "shard {} of {} does not exist (2 to {} shards, numbered from 0)",
                        shard.index,
                        shard.count,
                        crl::MAX_SHARDS
                    )));
                }
                let base = self.settings.crl_url.as_deref().ok_or_else(|| {
                    Error::CrlShard("this CA writes no CRL distribution point, so it has no CRL shards".into())
                })?;
                if let Some(stray) = entries.iter().find(|e| Shard::of(&e.serial, shard.count) != shard) {
                    return Err(Error::CrlShard(format!(
                        "{} belongs to shard {} of {}, not {}",
                        stray.serial,
                        Shard::of(&stray.serial, shard.count).index,
                        shard.count,
                        shard.index
                    )));
                }
                Some(shard.url(base))
            }
        };
        let number = self.store.next_crl_number()?;
        let order = CrlOrder { number, this_update: now, next_update, entries, distribution_point: url.as_deref() };
        let prepared = crl::prepare_crl(&self.issuer, &order)?;
        let signature = self.signer.sign(prepared.tbs_der())?;
        Ok(prepared.assemble(&signature))
    }
}

/// 16 bytes from the system's CSPRNG, in inkan's serial form.
pub(crate) fn random_serial() -> Result<Serial, Error> {
    for _ in 0..SERIAL_ATTEMPTS {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::NoRandomness)?;
        if let Some(serial) = Serial::from_random(bytes) {
            return Ok(serial);
        }
    }
    Err(Error::SerialExhausted)
}
