//! The CA side of the enrollment service: [`CaService`] implements the web tier's port,
//! `pki::request::Issuer`. It sends each order to a signer — the `inkan signer` process on its
//! socket (what `serve` uses) or the CA loaded in this process (offline CLI commands) — then
//! records what comes back in the registry and the audit trail; it signs and publishes CRLs,
//! asks for OCSP answers, and keeps the service's own TLS certificate current.
//!
//! Issuance order (docs/ARCHITECTURE.md): the signer validates, records pending, signs and
//! records the certificate in its ledger, durably; only then does the registry record it (not
//! waiting for its disk) and the answer go back. The ledger follower ([`CaService::catch_up`])
//! makes the registry durable and records whatever a crash kept from it.

use std::sync::{Arc, Mutex, PoisonError};

use pki::crl::Shard;
use pki::registry::{CertRecord, Registry, State, Status};
use pki::request::{IssueError, IssueOrder, IssuedCertificate, Issuer, OcspOrder, SignedOcsp};
use pki::{Profile, ProfileSettings, RevocationReason, RevokedEntry, San, Serial};
use time::{Duration, OffsetDateTime};

use crate::audit::AuditLog;
use crate::credential::{self, Credential, CredentialFiles, OCSP_ACCOUNT, SERVER_ACCOUNT};
use crate::generations::Authorities;
use crate::layout::{self, DataDir};
use crate::ledger::LogLedger;
use crate::remote::{LEDGER_PAGE, RemoteError, SignerClient};
use crate::responder::{OcspSigner, SignError};
use crate::sled_store::Durability;
use crate::{Error, IssueRequest, Passphrase};

/// Where certificates get signed.
pub enum SignerLink {
    /// The CA keys (every generation) loaded here, over their ledger (offline CLI commands).
    Local(Box<Authorities>),
    /// A signer process.
    Remote(SignerClient),
}

/// Loads every generation of the issuing CA of `dir` in this process, over the signer's ledger.
pub fn local_authority(
    dir: &DataDir,
    settings: ProfileSettings,
    passphrase: &Passphrase,
    durability: Durability,
) -> Result<Authorities, Error> {
    local_signer(dir, settings, passphrase, durability).map(|(authorities, _)| authorities)
}

/// [`local_authority`], and the ledger it records in (the signer answers from it).
pub fn local_signer(
    dir: &DataDir,
    settings: ProfileSettings,
    passphrase: &Passphrase,
    durability: Durability,
) -> Result<(Authorities, Arc<LogLedger>), Error> {
    let ledger = Arc::new(LogLedger::open_with(&dir.ledger(), durability == Durability::Flush)?);
    Ok((Authorities::load(dir, &settings, passphrase, ledger.clone())?, ledger))
}

/// Keeps the latest CRL under DATA_DIR/crl/, where the HTTP listener serves it from.
pub fn publish_crl(dir: &DataDir, name: &str, der: &[u8]) -> Result<(), Error> {
    layout::create_private_dir(&dir.crl_dir())?;
    layout::replace(&dir.crl_dir().join(name), der, 0o644)
}

/// The CA as the service and the operator commands use it.
pub struct CaService {
    link: SignerLink,
    registry: Arc<dyn Registry>,
    /// Every generation of the issuing CA: number, from when it issues, certificate (DER).
    generations: Vec<crate::generations::GenerationCertificate>,
    /// Each generation's subject, to tell which one signed a certificate.
    subjects: Vec<(u16, String)>,
    root_der: Vec<u8>,
    dir: DataDir,
    crl_validity: Duration,
    audit: Arc<AuditLog>,
    /// Signs OCSP answers when the CA is loaded here (one responder per generation).
    local_ocsp: Vec<OcspSigner>,
    /// The OCSP responder certificate last seen in the registry.
    responder: Mutex<Option<Vec<u8>>>,
    /// How many shards the current generation's CRL is published in (1: the whole CRL only).
    crl_shards: u16,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn remote_error(e: RemoteError) -> IssueError {
    match e {
        RemoteError::Unavailable { .. } => IssueError::Unavailable(e.to_string()),
        RemoteError::Rejected(message) => IssueError::Rejected(message),
        other => IssueError::Internal(other.to_string()),
    }
}

fn ca_error(e: Error) -> IssueError {
    match e {
        Error::Pki(pki::Error::Lint { .. } | pki::Error::Encoding { .. }) => IssueError::Internal(e.to_string()),
        Error::Pki(e) => IssueError::Rejected(e.to_string()),
        e @ Error::RequestIdReused => IssueError::Rejected(e.to_string()),
        other => IssueError::Internal(other.to_string()),
    }
}

/// The record of a certificate signed elsewhere, read from its DER.
fn record_of(
    der: &[u8],
    serial: Serial,
    account: &str,
    profile: Profile,
    issuer: u16,
) -> Result<CertRecord, IssueError> {
    let summary = pki::certificate::Summary::from_der(der).map_err(|e| IssueError::Internal(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    Ok(CertRecord {
        serial,
        account: account.to_owned(),
        profile,
        key_sha256: summary.key_sha256,
        not_before: summary.not_before,
        not_after: summary.not_after,
        recorded_at: now.replace_nanosecond(0).unwrap_or(now),
        state: State::Issued,
        issuer,
    })
}

impl CaService {
    /// A service over `link`, recording into `registry` and `audit`, publishing CRLs valid for
    /// `crl_validity` under `dir`.
    pub fn new(
        link: SignerLink,
        registry: Arc<dyn Registry>,
        dir: &DataDir,
        crl_validity: Duration,
        audit: Arc<AuditLog>,
    ) -> Result<Self, Error> {
        let (generations, root_der) = match &link {
            SignerLink::Local(authorities) => (
                authorities
                    .all()
                    .map(|(from, ca)| (ca.generation(), from, ca.issuer().certificate_der().to_vec()))
                    .collect::<Vec<_>>(),
                layout::read_certificate(&dir.root_cert())?,
            ),
            SignerLink::Remote(client) => {
                client.ca_info().map_err(|e| Error::Signer(format!("asking for the CA certificates: {e}")))?
            }
        };
        let mut subjects = Vec::with_capacity(generations.len());
        for (n, _, der) in &generations {
            subjects.push((*n, pki::certificate::Summary::from_der(der)?.subject));
        }
        let local_ocsp = generations.iter().map(|(n, _, _)| OcspSigner::for_generation(dir, *n)).collect();
        Ok(Self {
            link,
            registry,
            generations,
            subjects,
            root_der,
            dir: dir.clone(),
            crl_validity,
            audit,
            local_ocsp,
            responder: Mutex::new(None),
            crl_shards: 1,
        })
    }

    /// Also publishes the current generation's CRL in `count` shards (`crl_shards`).
    #[must_use]
    pub fn with_crl_shards(mut self, count: u16) -> Self {
        self.crl_shards = count;
        self
    }

    /// The generation whose subject issued a certificate (its issuer name).
    fn generation_of(&self, issuer: &str) -> u16 {
        self.subjects.iter().find(|(_, subject)| subject == issuer).map_or(1, |(n, _)| *n)
    }

    fn sign(&self, order: &IssueOrder) -> Result<(Serial, Vec<u8>, u16), IssueError> {
        let request = IssueRequest {
            csr: &order.csr_der,
            account: &order.account,
            profile: order.profile,
            sans: &order.sans,
            days: order.days,
            request_id: Some(order.request_id),
            supersede: order.supersede,
        };
        match &self.link {
            SignerLink::Local(authorities) => {
                let authority = authorities.current(OffsetDateTime::now_utc());
                let issued = authority.issue(&request).map_err(ca_error)?;
                Ok((issued.record.serial, issued.der, authority.generation()))
            }
            SignerLink::Remote(client) => client.issue(&request).map_err(remote_error),
        }
    }

    /// Records the OCSP responder certificate `der` (signed by the signer for itself) in the
    /// registry the first time it is seen, so listings and the CRL know it.
    fn adopt_responder(&self, der: &[u8]) {
        let mut seen = self.responder.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.as_deref() == Some(der) {
            return;
        }
        let adopt = || -> Result<Option<Serial>, IssueError> {
            let summary = pki::certificate::Summary::from_der(der).map_err(|e| IssueError::Internal(e.to_string()))?;
            let serial: Serial = summary.serial.parse().map_err(|e: pki::Error| IssueError::Internal(e.to_string()))?;
            if self.registry.get(&serial).map_err(|e| IssueError::Internal(e.to_string()))?.is_some() {
                return Ok(None);
            }
            let issuer = self.generation_of(&summary.issuer);
            let record = record_of(der, serial, OCSP_ACCOUNT, Profile::OcspResponder, issuer)?;
            self.registry.record_certificate(&record, der, true).map_err(|e| IssueError::Internal(e.to_string()))?;
            Ok(Some(serial))
        };
        match adopt() {
            Ok(Some(serial)) => {
                let _ = self.audit.append("service.ocsp_certificate_recorded", serde_json::json!({ "serial": serial }));
                *seen = Some(der.to_vec());
            }
            Ok(None) => *seen = Some(der.to_vec()),
            Err(e) => eprintln!("recording the OCSP responder certificate: {e}"),
        }
    }

    /// Has the signer make its OCSP responder certificates (one per generation) if it has none
    /// (or one close to expiry), and records them in the registry: a service announces them
    /// from the start.
    pub fn ensure_ocsp_responder(&self) -> Result<(), IssueError> {
        for (n, _, _) in &self.generations {
            self.sign_ocsp_of(*n, &[])?;
        }
        Ok(())
    }

    /// Answers about generation `issuer`'s certificates, signed by its responder, whose
    /// certificate is recorded the first time it is seen.
    fn sign_ocsp_of(&self, issuer: u16, batch: &[OcspOrder]) -> Result<Vec<SignedOcsp>, IssueError> {
        let (signed, responder) = match &self.link {
            SignerLink::Local(authorities) => {
                let unknown = || IssueError::Rejected(format!("no issuing CA of generation {issuer}"));
                let authority = authorities.get(issuer).ok_or_else(unknown)?;
                let ocsp = self.local_ocsp.iter().find(|o| o.generation() == issuer).ok_or_else(unknown)?;
                let (signed, responder, _) =
                    ocsp.sign(authority, batch, OffsetDateTime::now_utc()).map_err(|e| match e {
                        SignError::Refused(refusal) => IssueError::Rejected(refusal.to_string()),
                        SignError::Failed(e) => IssueError::Internal(e.to_string()),
                    })?;
                (signed, responder)
            }
            SignerLink::Remote(client) => client.sign_ocsp(issuer, batch).map_err(remote_error)?,
        };
        self.adopt_responder(&responder);
        Ok(signed)
    }

    /// The service's TLS certificate chain and key for `names`: issued through the signer and
    /// recorded when missing, expiring within 30 days, or made for other names.
    pub fn server_credential(&self, names: &[String]) -> Result<Credential, Error> {
        let sans = names.iter().map(|n| n.parse::<San>()).collect::<Result<Vec<_>, _>>()?;
        let files = CredentialFiles {
            cert: self.dir.server_cert(),
            key: self.dir.server_key(),
            tag: names.join("\n") + "\n",
            renew_within: Duration::days(30),
        };
        let mut issued_serial = None;
        let (credential, made) =
            credential::ensure(&files, self.ca_certificate(), OffsetDateTime::now_utc(), |csr_der| {
                let mut request_id = [0u8; 16];
                aws_lc_rs::rand::fill(&mut request_id).map_err(|_| Error::NoRandomness)?;
                let order = IssueOrder {
                    csr_der,
                    account: SERVER_ACCOUNT.into(),
                    profile: Profile::Server,
                    sans,
                    days: Some(365),
                    request_id,
                    supersede: true,
                };
                let issued =
                    self.issue(&order).map_err(|e| Error::Signer(format!("issuing the service's certificate: {e}")))?;
                issued_serial = Some((issued.serial, issued.superseded));
                Ok(issued.der)
            })?;
        if let (true, Some((serial, superseded))) = (made, issued_serial) {
            self.audit.append(
                "service.certificate_issued",
                serde_json::json!({ "serial": serial, "account": SERVER_ACCOUNT, "superseded": superseded }),
            )?;
        }
        Ok(credential)
    }
}

/// What one [`CaService::catch_up`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// Certificates revoked as superseded on the way (recovered ones included): a running
    /// service drops their cached OCSP answers.
    pub superseded: Vec<Serial>,
    /// Certificates of the ledger checked against the registry.
    pub checked: usize,
    /// Of those, the ones the registry lacked and now holds.
    pub recovered: usize,
    /// The registry's cursor in the ledger now.
    pub cursor: u64,
    /// The end of the ledger's durable part: the next round's `settled`.
    pub end: u64,
}

impl CaService {
    /// Makes the registry hold every certificate the signer's ledger holds, from the registry's
    /// cursor on, then makes the registry and the audit log durable and moves the cursor. A
    /// certificate the registry lacks (a crash lost its deferred record, or the service never
    /// got the signer's answer) is recorded as the service would have, and audited as
    /// `certificate.issued` with `recovered`. `settled`: stop at this ledger offset (the
    /// previous round's `end`: certificates further on may still be on their way into the
    /// registry); `None` before serving. Nothing to do with the CA loaded here (its ledger is
    /// the registry).
    pub fn catch_up(&self, settled: Option<u64>) -> Result<CatchUp, IssueError> {
        let SignerLink::Remote(client) = &self.link else { return Ok(CatchUp::default()) };
        let internal = |e: pki::registry::RegistryError| IssueError::Internal(e.to_string());
        let start = self.registry.ledger_cursor().map_err(internal)?;
        let mut out = CatchUp { cursor: start, ..CatchUp::default() };
        loop {
            let (serials, next, end) = match client.ledger_since(out.cursor, settled, LEDGER_PAGE as u32) {
                Ok(found) => found,
                // A cursor kept for another ledger (the signer's data directory was replaced):
                // everything is checked again.
                Err(RemoteError::Rejected(why)) if out.cursor != 0 => {
                    eprintln!("ledger follower: {why}; checking the whole ledger");
                    out.cursor = 0;
                    continue;
                }
                Err(e) => return Err(remote_error(e)),
            };
            out.end = end;
            let page_full = serials.len() >= LEDGER_PAGE;
            for serial in &serials {
                out.checked += 1;
                if self.registry.get(serial).map_err(internal)?.is_none() {
                    out.superseded.extend(self.recover(client, serial)?);
                    out.recovered += 1;
                }
            }
            out.cursor = next;
            if !page_full {
                break;
            }
        }
        self.registry.sync().map_err(internal)?;
        self.audit.sync().map_err(|e| IssueError::Internal(e.to_string()))?;
        if out.cursor != start {
            self.registry.set_ledger_cursor(out.cursor).map_err(internal)?;
        }
        Ok(out)
    }

    /// Records the ledger's certificate `serial`, which the registry lacks. A reissue is
    /// recorded as superseded when the account already holds a valid certificate signed after
    /// it (the ledger's order says which is later): a recovered certificate never displaces a
    /// newer one.
    /// Returns the serials it superseded.
    fn recover(&self, client: &SignerClient, serial: &Serial) -> Result<Vec<Serial>, IssueError> {
        let internal = |e: pki::registry::RegistryError| IssueError::Internal(e.to_string());
        let entry = client.ledger_entry(serial).map_err(remote_error)?.ok_or_else(|| {
            IssueError::Internal(format!("the signer listed {serial} but holds no certificate for it"))
        })?;
        let record = record_of(&entry.der.0, *serial, &entry.account, entry.profile, entry.issuer)?;
        let mut superseded_by = None;
        if entry.supersede {
            let now = OffsetDateTime::now_utc();
            for other in self.registry.valid_by_account(&entry.account).map_err(internal)? {
                if other.serial == *serial || other.profile != entry.profile || other.status(now) != Status::Valid {
                    continue;
                }
                if client.ledger_entry(&other.serial).map_err(remote_error)?.is_some_and(|o| o.at > entry.at) {
                    superseded_by = Some(other);
                    break;
                }
            }
        }
        let superseded = match &superseded_by {
            None => {
                self.registry.record_certificate_deferred(&record, &entry.der.0, entry.supersede).map_err(internal)?
            }
            Some(newer) => {
                self.registry.record_certificate_deferred(&record, &entry.der.0, false).map_err(internal)?;
                let at = newer.recorded_at.max(record.not_before);
                self.registry.revoke(serial, at, RevocationReason::Superseded).map_err(internal)?;
                vec![*serial]
            }
        };
        let details = serde_json::json!({
            "serial": serial, "account": entry.account, "profile": entry.profile, "recovered": true,
            "superseded": superseded, "superseded_by": superseded_by.map(|r| r.serial),
        });
        self.audit.append_deferred("certificate.issued", details).map_err(|e| IssueError::Internal(e.to_string()))?;
        eprintln!("ledger follower: {serial} of {} was missing from the registry; recorded", entry.account);
        Ok(superseded)
    }

    /// The generation that issues at `now`.
    fn current_generation(&self, now: OffsetDateTime) -> u16 {
        self.generations.iter().rev().find(|(_, from, _)| *from <= now).map_or(1, |(n, _, _)| *n)
    }

    /// Refuses a key reported compromised, and a key another account holds a valid
    /// certificate for: a key belongs to one account.
    fn check_key(&self, order: &IssueOrder) -> Result<(), IssueError> {
        let key = pki::csr::public_key_sha256(&order.csr_der).map_err(|e| IssueError::Rejected(e.to_string()))?;
        let internal = |e: pki::registry::RegistryError| IssueError::Internal(e.to_string());
        if let Some(blocked) = self.registry.blocked_key(&key).map_err(internal)? {
            return Err(IssueError::Rejected(format!(
                "this public key was reported compromised (certificate {} revoked for keyCompromise); make a new key",
                blocked.serial
            )));
        }
        let now = OffsetDateTime::now_utc();
        let holders = self.registry.by_key_for_others(&key, &order.account).map_err(internal)?;
        if let Some(other) = holders.iter().find(|r| r.status(now) == Status::Valid) {
            return Err(IssueError::Rejected(format!(
                "this public key is certified for another account (certificate {}); make a new key",
                other.serial
            )));
        }
        Ok(())
    }
}

impl CaService {
    fn sign_one_crl(
        &self,
        n: u16,
        entries: &[RevokedEntry],
        now: OffsetDateTime,
        shard: Option<Shard>,
    ) -> Result<Vec<u8>, IssueError> {
        match &self.link {
            SignerLink::Local(authorities) => authorities
                .get(n)
                .ok_or_else(|| IssueError::Internal(format!("no issuing CA of generation {n}")))?
                .sign_crl_for(entries, now, self.crl_validity, shard)
                .map_err(|e| match e {
                    Error::CrlShard(_) => IssueError::Rejected(e.to_string()),
                    other => IssueError::Internal(other.to_string()),
                }),
            SignerLink::Remote(client) => client.sign_crl(n, entries, self.crl_validity, shard).map_err(remote_error),
        }
    }

    /// The shard counts generation `n`'s CRL is published in: the configured `crl_shards` for
    /// the current generation, and every count whose shards were published before (found in
    /// the CRL directory), since certificates issued then name those shards until they expire.
    fn crl_layouts(&self, n: u16, current: bool) -> Vec<u16> {
        let mut counts: Vec<u16> = std::fs::read_dir(self.dir.crl_dir())
            .into_iter()
            .flatten()
            .filter_map(|entry| pki::published::parse_ca_crl_shard(entry.ok()?.file_name().to_str()?))
            .filter(|(generation, _)| *generation == n)
            .map(|(_, shard)| shard.count)
            .collect();
        if current && self.crl_shards > 1 {
            counts.push(self.crl_shards);
        }
        counts.sort_unstable();
        counts.dedup();
        counts
    }
}

impl Issuer for CaService {
    fn issue(&self, order: &IssueOrder) -> Result<IssuedCertificate, IssueError> {
        self.check_key(order)?;
        let (serial, der, issuer) = self.sign(order)?;
        let record = record_of(&der, serial, &order.account, order.profile, issuer)?;
        // A signer process answered only once its ledger held the certificate durably: the
        // registry's record and the audit line are acknowledged before they reach the disk
        // (the ledger follower makes them durable, and records what a crash lost; see
        // `catch_up`). Signed here, the ledger is this registry: both are synced, side by side.
        let deferred = matches!(self.link, SignerLink::Remote(_));
        // The line names the certificates this one supersedes as read just before.
        let supersedes: Vec<String> = if order.supersede {
            let now = OffsetDateTime::now_utc();
            self.registry
                .valid_by_account(&order.account)
                .map_err(|e| IssueError::Internal(e.to_string()))?
                .iter()
                .filter(|r| r.status(now) == Status::Valid)
                .map(|r| r.serial.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let details = serde_json::json!({
            "serial": serial, "account": order.account, "profile": order.profile, "supersedes": supersedes,
        });
        let (superseded, audited) = if deferred {
            let superseded = self.registry.record_certificate_deferred(&record, &der, order.supersede);
            (superseded, self.audit.append_deferred("certificate.issued", details).is_ok())
        } else {
            std::thread::scope(|s| {
                let audited = s.spawn(|| self.audit.append("certificate.issued", details));
                let superseded = self.registry.record_certificate(&record, &der, order.supersede);
                (superseded, matches!(audited.join(), Ok(Ok(_))))
            })
        };
        if !audited {
            eprintln!("audit log: writing certificate.issued for {serial} failed");
        }
        let superseded = superseded.map_err(|e| match e {
            pki::registry::RegistryError::KeyBlocked => IssueError::Rejected(e.to_string()),
            other => IssueError::Internal(other.to_string()),
        })?;
        Ok(IssuedCertificate { serial, der, not_before: record.not_before, not_after: record.not_after, superseded })
    }

    /// Signs and publishes the CRL of every generation (each lists its own certificates), and
    /// its shards (see [`CaService::crl_layouts`]); returns the current generation's whole CRL.
    fn sign_crl(&self) -> Result<Vec<u8>, IssueError> {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let current = self.current_generation(now);
        let mut out = Vec::new();
        for (n, _, ca_der) in &self.generations {
            // A generation whose own certificate has expired has no unexpired certificate left
            // (each was capped at its end): its CRL ends with it.
            let expired = pki::certificate::Summary::from_der(ca_der).is_ok_and(|ca| ca.not_after < now);
            if expired && *n != current {
                continue;
            }
            let entries =
                self.registry.revoked_unexpired_by(now, *n).map_err(|e| IssueError::Internal(e.to_string()))?;
            let der = self.sign_one_crl(*n, &entries, now, None)?;
            publish_crl(&self.dir, &pki::published::ca_crl(*n), &der)
                .map_err(|e| IssueError::Internal(e.to_string()))?;
            let _ = self.audit.append("crl.published", serde_json::json!({ "entries": entries.len(), "issuer": n }));
            if *n == current {
                out = der;
            }
            for count in self.crl_layouts(*n, *n == current) {
                let mut parts: Vec<Vec<RevokedEntry>> = vec![Vec::new(); usize::from(count)];
                for entry in &entries {
                    parts[usize::from(Shard::of(&entry.serial, count).index)].push(entry.clone());
                }
                for (shard, part) in Shard::all(count).zip(&parts) {
                    let der = self.sign_one_crl(*n, part, now, Some(shard))?;
                    publish_crl(&self.dir, &pki::published::ca_crl_shard(*n, shard), &der)
                        .map_err(|e| IssueError::Internal(e.to_string()))?;
                }
                let _ = self.audit.append(
                    "crl.published",
                    serde_json::json!({ "entries": entries.len(), "issuer": n, "shards": count }),
                );
            }
        }
        Ok(out)
    }

    /// Signs answers generation by generation (each generation's responder answers for its
    /// own certificates), returned in the order asked.
    fn sign_ocsp(&self, orders: &[OcspOrder]) -> Result<Vec<SignedOcsp>, IssueError> {
        let mut answers: Vec<Option<SignedOcsp>> = vec![None; orders.len()];
        let mut issuers: Vec<u16> = orders.iter().map(|o| o.issuer).collect();
        issuers.sort_unstable();
        issuers.dedup();
        for issuer in issuers {
            let (at, batch): (Vec<usize>, Vec<OcspOrder>) =
                orders.iter().enumerate().filter(|(_, o)| o.issuer == issuer).map(|(i, o)| (i, o.clone())).unzip();
            let signed = self.sign_ocsp_of(issuer, &batch)?;
            for (i, answer) in at.into_iter().zip(signed) {
                answers[i] = Some(answer);
            }
        }
        answers.into_iter().map(|a| a.ok_or_else(|| IssueError::Internal("an OCSP answer is missing".into()))).collect()
    }

    fn ca_certificate(&self) -> &[u8] {
        let current = self.current_generation(OffsetDateTime::now_utc());
        self.generations.iter().find(|(n, _, _)| *n == current).map(|(_, _, der)| der.as_slice()).unwrap_or_default()
    }

    fn ca_generations(&self) -> Vec<(u16, &[u8])> {
        self.generations.iter().map(|(n, _, der)| (*n, der.as_slice())).collect()
    }

    fn root_certificate(&self) -> &[u8] {
        &self.root_der
    }
}
