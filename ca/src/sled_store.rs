//! The embedded default registry: one sled database under `DATA_DIR/db/`.
//!
//! One tree, keys prefixed by kind, so every change is one atomic batch:
//!
//! | key                                  | value                          |
//! |--------------------------------------|--------------------------------|
//! | `c` serial                           | the record (JSON)              |
//! | `d` serial                           | the certificate (DER)          |
//! | `a` account `0x00` serial            | empty (account index)          |
//! | `k` sha256(SPKI) serial              | empty (key index)              |
//! | `e` notAfter (u64 BE seconds) serial | empty (expiry index)           |
//! | `r` serial                           | notAfter, time, reason (CRL)   |
//! | `q` request id                       | serial (idempotent requests)   |
//! | `v` account `0x00` serial            | empty (issued, not revoked)    |
//! | `n` state notAfter hour (u64 BE)     | how many records (u64 BE)      |
//! | `m:v-index`                          | present once `v` is complete   |
//! | `m:n-index`                          | present once `n` is complete   |
//! | `m:crl-number`                       | u64 BE                         |
//! | `m:ledger-cursor`                    | u64 BE (signer's ledger offset)|
//!
//! The `n` counters make a count by status quick at any size: only certificates whose
//! notAfter falls in the current hour are read to split issued ones into valid and expired.
//!
//! Read-modify-write changes hold a writer lock only while they check and apply their batch
//! in memory (sled's own transactions cost several times more); they are acknowledged after
//! a flush, shared among concurrent writers ([`GroupCommit`]).

use std::collections::BTreeMap;
use std::path::Path;

use pki::{RevocationReason, RevokedEntry, Serial};
use std::sync::{Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

use crate::durable::GroupCommit;
use pki::registry::{CertRecord, Registry, RegistryError, RequestAnswer, State, StatusCounts};

const CRL_NUMBER: &[u8] = b"m:crl-number";
const V_INDEX_BUILT: &[u8] = b"m:v-index";
const H_INDEX_BUILT: &[u8] = b"m:h-index";
const N_INDEX_BUILT: &[u8] = b"m:n-index";
const LEDGER_CURSOR: &[u8] = b"m:ledger-cursor";

/// The key of a certificate in the index of issued, unrevoked certificates of its account.
fn valid_key(record: &CertRecord) -> Vec<u8> {
    key(b'v', &[record.account.as_bytes(), &[0], record.serial.as_bytes()])
}

/// Whether changes are flushed before they are acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush (fsync) before acknowledging; concurrent writers share flushes. The default.
    #[default]
    Flush,
    /// Acknowledge once in memory; sled writes back within about half a second. Only for
    /// measuring what durability costs: a crash loses acknowledged issuances.
    Unsafe,
}

/// The sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    group: GroupCommit,
    durability: Durability,
    /// Serialises check-then-write changes; held only while the batch is applied in memory.
    writer: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Backend(e.to_string())
}

/// The key holder index entry: `h` key-hash account NUL serial, so the certificates of a key
/// for other accounts are read without the account's own.
fn holder_key(record: &CertRecord) -> Vec<u8> {
    key(b'h', &[&record.key_sha256, record.account.as_bytes(), &[0], record.serial.as_bytes()])
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    parts.iter().for_each(|p| k.extend_from_slice(p));
    k
}

fn seconds(t: OffsetDateTime) -> [u8; 8] {
    // Certificates are never dated before 1970; clamp rather than wrap if one were.
    u64::try_from(t.unix_timestamp()).unwrap_or(0).to_be_bytes()
}

/// The status counters' state codes, the byte after `n`.
const COUNT_PENDING: u8 = 0;
const COUNT_ISSUED: u8 = 1;
const COUNT_REVOKED: u8 = 2;
const COUNT_SUPERSEDED: u8 = 3;

/// The hour (since 1970) a time falls in.
fn hour(t: OffsetDateTime) -> u64 {
    u64::from_be_bytes(seconds(t)) / 3600
}

/// The start of hour `h` (since 1970).
fn hour_start(h: u64) -> Result<OffsetDateTime, RegistryError> {
    let at = h.checked_mul(3600).and_then(|s| i64::try_from(s).ok()).ok_or_else(|| backend("hour out of range"))?;
    OffsetDateTime::from_unix_timestamp(at).map_err(backend)
}

/// The counter a record counts in: `n`, its state's code, the hour of its notAfter.
fn count_key(record: &CertRecord) -> [u8; 10] {
    let state = match record.state {
        State::Pending => COUNT_PENDING,
        State::Issued => COUNT_ISSUED,
        State::Revoked { reason: RevocationReason::Superseded, .. } => COUNT_SUPERSEDED,
        State::Revoked { .. } => COUNT_REVOKED,
    };
    let mut k = [0; 10];
    k[0] = b'n';
    k[1] = state;
    k[2..].copy_from_slice(&hour(record.not_after).to_be_bytes());
    k
}

fn count_value(k: &[u8], v: &[u8]) -> Result<u64, RegistryError> {
    let bytes = <[u8; 8]>::try_from(v)
        .map_err(|_| RegistryError::Corrupt { key: format!("{k:02x?}"), detail: "a counter is not 8 bytes".into() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// What one batch changes in the status counters: records counted in (+1) and out (-1).
#[derive(Default)]
struct Tally(BTreeMap<[u8; 10], i64>);

impl Tally {
    fn add(&mut self, record: &CertRecord, by: i64) {
        *self.0.entry(count_key(record)).or_default() += by;
    }

    /// Puts the counters' new values in `batch`. Called under the writer lock, which every
    /// change of a counter holds from this read to the batch's apply.
    fn write(self, db: &sled::Db, batch: &mut sled::Batch) -> Result<(), RegistryError> {
        for (k, by) in self.0 {
            if by == 0 {
                continue;
            }
            let old = db.get(k).map_err(backend)?.map(|v| count_value(&k, &v)).transpose()?.unwrap_or(0);
            // Counts never go below zero; a counter that would is a registry built by a bug,
            // and an issuance is not refused for it.
            match old.saturating_add_signed(by) {
                0 => batch.remove(&k),
                new => batch.insert(&k, &new.to_be_bytes()),
            }
        }
        Ok(())
    }
}

/// Records are stored in a fixed binary layout (version 1), a quarter of their JSON size:
/// version, serial(16), profile, key sha256(32), notBefore, notAfter, recordedAt (i64 BE
/// seconds each), state, revokedAt, reason code, then the account in UTF-8. Version 2, for a
/// certificate of a later issuing-CA generation, puts the generation (u16 BE) before the
/// account; generation 1 stays version 1, which older inkan reads.
const RECORD_V1: u8 = 1;
const RECORD_V2: u8 = 2;
const FIXED: usize = 1 + 16 + 1 + 32 + 8 * 3 + 1 + 8 + 1;

/// The CRL index value: notAfter, revocation time, reason code.
/// (The issuing-CA generation follows, u16 BE, when it is not 1.)
fn revocation_entry(record: &CertRecord, at: OffsetDateTime, reason: RevocationReason) -> Vec<u8> {
    let mut entry = Vec::with_capacity(19);
    entry.extend_from_slice(&seconds(record.not_after));
    entry.extend_from_slice(&seconds(at));
    entry.push(reason.code());
    if record.issuer != 1 {
        entry.extend_from_slice(&record.issuer.to_be_bytes());
    }
    entry
}

pub(crate) fn encode_record(record: &CertRecord) -> Result<Vec<u8>, RegistryError> {
    let mut v = Vec::with_capacity(FIXED + 2 + record.account.len());
    v.push(if record.issuer == 1 { RECORD_V1 } else { RECORD_V2 });
    v.extend_from_slice(record.serial.as_bytes());
    v.push(match record.profile {
        pki::Profile::Client => 0,
        pki::Profile::Server => 1,
        pki::Profile::OcspResponder => 2,
        pki::Profile::ClientServer => 3,
        pki::Profile::Instance => 4,
    });
    v.extend_from_slice(&record.key_sha256);
    for t in [record.not_before, record.not_after, record.recorded_at] {
        v.extend_from_slice(&t.unix_timestamp().to_be_bytes());
    }
    let (state, at, reason) = match record.state {
        State::Pending => (0, 0, 0),
        State::Issued => (1, 0, 0),
        State::Revoked { at, reason } => (2, at.unix_timestamp(), reason.code()),
    };
    v.push(state);
    v.extend_from_slice(&at.to_be_bytes());
    v.push(reason);
    if record.issuer != 1 {
        v.extend_from_slice(&record.issuer.to_be_bytes());
    }
    v.extend_from_slice(record.account.as_bytes());
    Ok(v)
}

pub(crate) fn decode_record(k: &[u8], v: &[u8]) -> Result<CertRecord, RegistryError> {
    let corrupt = |detail: &str| RegistryError::Corrupt { key: format!("{k:02x?}"), detail: detail.into() };
    let (issuer, account_at) = match v.first() {
        Some(&RECORD_V1) if v.len() >= FIXED => (1, FIXED),
        Some(&RECORD_V2) if v.len() >= FIXED + 2 => (u16::from_be_bytes([v[FIXED], v[FIXED + 1]]), FIXED + 2),
        _ => return Err(corrupt("not a version 1 or 2 record")),
    };
    let time = |at: usize| -> Result<OffsetDateTime, RegistryError> {
        let bytes: [u8; 8] = v[at..at + 8].try_into().map_err(|_| corrupt("short time"))?;
        OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(bytes)).map_err(|_| corrupt("time out of range"))
    };
    let serial = Serial::from_bytes(&v[1..17]).ok_or_else(|| corrupt("bad serial"))?;
    let profile = match v[17] {
        0 => pki::Profile::Client,
        1 => pki::Profile::Server,
        2 => pki::Profile::OcspResponder,
        3 => pki::Profile::ClientServer,
        4 => pki::Profile::Instance,
        _ => return Err(corrupt("bad profile")),
    };
    let key_sha256: [u8; 32] = v[18..50].try_into().map_err(|_| corrupt("short key hash"))?;
    let state = match v[74] {
        0 => State::Pending,
        1 => State::Issued,
        2 => State::Revoked {
            at: time(75)?,
            reason: RevocationReason::from_code(v[83]).ok_or_else(|| corrupt("bad reason"))?,
        },
        _ => return Err(corrupt("bad state")),
    };
    let account = std::str::from_utf8(&v[account_at..]).map_err(|_| corrupt("account is not UTF-8"))?;
    Ok(CertRecord {
        serial,
        account: account.to_owned(),
        profile,
        key_sha256,
        not_before: time(50)?,
        not_after: time(58)?,
        recorded_at: time(66)?,
        state,
        issuer,
    })
}

impl SledStore {
    /// Opens (or creates) the registry in `dir`, durable before acknowledging.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        Self::open_with(dir, Durability::Flush)
    }

    /// Opens (or creates) the registry in `dir` with the given durability.
    pub fn open_with(dir: &Path, durability: Durability) -> Result<Self, RegistryError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(if durability == Durability::Flush { None } else { Some(500) })
            .open()
            .map_err(|e| RegistryError::Backend(format!("opening {}: {e}", dir.display())))?;
        let store = Self { db, group: GroupCommit::default(), durability, writer: Mutex::new(()) };
        store.build_valid_index()?;
        store.build_holder_index()?;
        store.build_counters()?;
        Ok(store)
    }

    /// The CRL index's unexpired entries, of one issuing-CA generation or all.
    fn revoked_entries(&self, now: OffsetDateTime, issuer: Option<u16>) -> Result<Vec<RevokedEntry>, RegistryError> {
        let now = seconds(now);
        let mut out = Vec::new();
        for item in self.db.scan_prefix([b'r']) {
            let (k, v) = item.map_err(backend)?;
            let corrupt = || RegistryError::Corrupt { key: format!("{k:02x?}"), detail: "bad revocation entry".into() };
            let serial = Serial::from_bytes(&k[1..]).ok_or_else(corrupt)?;
            let (not_after, rest) = v.split_first_chunk::<8>().ok_or_else(corrupt)?;
            if *not_after < now {
                continue;
            }
            let (at, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let reason = rest.first().and_then(|c| RevocationReason::from_code(*c)).ok_or_else(corrupt)?;
            let generation = rest.get(1..3).map_or(1, |g| u16::from_be_bytes([g[0], g[1]]));
            if issuer.is_some_and(|wanted| wanted != generation) {
                continue;
            }
            let at = i64::try_from(u64::from_be_bytes(*at)).map_err(|_| corrupt())?;
            let revoked_at = OffsetDateTime::from_unix_timestamp(at).map_err(|_| corrupt())?;
            out.push(RevokedEntry { serial, revoked_at, reason });
        }
        Ok(out)
    }

    /// Writes every tree to `out` for a backup ([`crate::sled_export::export_sled`]), holding the
    /// writer lock so no read-modify-write change lands half in it.
    pub fn export(&self, out: &mut impl std::io::Write) -> Result<crate::sled_export::TreeCounts, crate::Error> {
        let _writer = self.lock();
        crate::sled_export::export_sled(&self.db, out)
    }

    /// Registries made before the `v` index existed get it built once, from the records.
    fn build_valid_index(&self) -> Result<(), RegistryError> {
        if self.db.contains_key(V_INDEX_BUILT).map_err(backend)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for record in self.all()? {
            if record.state == State::Issued {
                batch.insert(valid_key(&record), &[]);
            }
        }
        batch.insert(V_INDEX_BUILT, &[]);
        self.db.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Registries made before the `h` index existed get it built once, from the records.
    fn build_holder_index(&self) -> Result<(), RegistryError> {
        if self.db.contains_key(H_INDEX_BUILT).map_err(backend)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for record in self.all()? {
            batch.insert(holder_key(&record), &[]);
        }
        batch.insert(H_INDEX_BUILT, &[]);
        self.db.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Registries made before the status counters existed get them counted once, from the
    /// records.
    fn build_counters(&self) -> Result<(), RegistryError> {
        if self.db.contains_key(N_INDEX_BUILT).map_err(backend)? {
            return Ok(());
        }
        let mut tally = Tally::default();
        for record in self.all()? {
            tally.add(&record, 1);
        }
        // Counted afresh: whatever counters are there (none, unless an older inkan wrote
        // records after them) are replaced.
        let mut batch = sled::Batch::default();
        let _writer = self.lock();
        for k in self.db.scan_prefix([b'n']).keys() {
            batch.remove(k.map_err(backend)?);
        }
        for (k, n) in tally.0 {
            if n > 0 {
                batch.insert(&k, &n.unsigned_abs().to_be_bytes());
            }
        }
        batch.insert(N_INDEX_BUILT, &[]);
        self.db.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// How many issued (unrevoked) certificates have a notAfter in `[from, to)`: the
    /// counters of the whole hours between, and the records of the hours `from` and `to`
    /// fall in, read one by one.
    fn issued_in(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<u64, RegistryError> {
        if to <= from {
            return Ok(0);
        }
        let (first, last) = (hour(from), hour(to));
        if first == last {
            return self.issued_records(from, to);
        }
        let mut n = self.issued_records(from, hour_start(first + 1)?)?;
        let counters = key(b'n', &[&[COUNT_ISSUED], &(first + 1).to_be_bytes()])
            ..key(b'n', &[&[COUNT_ISSUED], &last.to_be_bytes()]);
        for item in self.db.range(counters) {
            let (k, v) = item.map_err(backend)?;
            n += count_value(&k, &v)?;
        }
        Ok(n + self.issued_records(hour_start(last)?, to)?)
    }

    /// How many issued (unrevoked) records have a notAfter in `[from, to)`, read from the
    /// expiry index: for a stretch within one hour.
    fn issued_records(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<u64, RegistryError> {
        let mut n = 0;
        for record in self.expiring(from, to) {
            let record = record?;
            if record.state == State::Issued && from <= record.not_after && record.not_after < to {
                n += 1;
            }
        }
        Ok(n)
    }

    fn durable(&self) -> Result<(), RegistryError> {
        match self.durability {
            Durability::Flush => self.group.wait_durable(|| self.db.flush().map(drop).map_err(backend)),
            Durability::Unsafe => Ok(()),
        }
    }

    /// Everything the registry holds, for a move to another backend.
    pub fn contents(&self) -> Result<crate::migrate::Contents, RegistryError> {
        let mut requests = std::collections::HashMap::new();
        for item in self.db.scan_prefix([b'q']) {
            let (k, v) = item.map_err(backend)?;
            let id = <[u8; 16]>::try_from(&k[1..])
                .map_err(|_| RegistryError::Corrupt { key: "request index".into(), detail: "bad id".into() })?;
            requests.insert(v.to_vec(), id);
        }
        let mut certificates = Vec::new();
        for record in self.all()? {
            let der = self.certificate_der(&record.serial)?;
            let request_id = requests.get(&record.serial.as_bytes()[..]).copied();
            certificates.push(crate::migrate::Entry { record, der, request_id });
        }
        let mut blocked = Vec::new();
        for item in self.db.scan_prefix([b'b']) {
            let (k, v) = item.map_err(backend)?;
            let hash = <[u8; 32]>::try_from(&k[1..])
                .map_err(|_| RegistryError::Corrupt { key: "blocked key".into(), detail: "bad hash".into() })?;
            blocked.push(decode_blocked(&hash, &v)?);
        }
        let crl_number = self
            .db
            .get(CRL_NUMBER)
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let mut contents = crate::migrate::Contents { certificates, blocked, crl_number };
        contents.sort();
        Ok(contents)
    }

    /// How many flushes this store made (benchmarks report it).
    pub fn flush_count(&self) -> u64 {
        self.group.flush_count()
    }

    /// The records whose notAfter is in `[from, to]`, in notAfter order, read as they are
    /// asked for.
    fn expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Iterator<Item = Result<CertRecord, RegistryError>> + '_ {
        let start = key(b'e', &[&seconds(from)]);
        let end = key(b'e', &[&seconds(to), &[0xff; 17]]);
        self.db.range(start..end).map(|item| {
            let (k, _) = item.map_err(backend)?;
            self.indexed_record(&k, &k[9..])
        })
    }

    fn records_under(&self, prefix: &[u8], serial_at: usize) -> Result<Vec<CertRecord>, RegistryError> {
        self.db
            .scan_prefix(prefix)
            .map(|item| {
                let (k, _) = item.map_err(backend)?;
                self.indexed_record(&k, &k[serial_at..])
            })
            .collect()
    }

    /// The record an index entry `index_key` points at by its serial.
    fn indexed_record(&self, index_key: &[u8], serial: &[u8]) -> Result<CertRecord, RegistryError> {
        let ck = key(b'c', &[serial]);
        let v = self.db.get(&ck).map_err(backend)?.ok_or_else(|| RegistryError::Corrupt {
            key: format!("{index_key:02x?}"),
            detail: "index entry without record".into(),
        })?;
        decode_record(&ck, &v)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_record(&self, serial: &Serial) -> Result<CertRecord, RegistryError> {
        let ck = key(b'c', &[serial.as_bytes()]);
        let v = self.db.get(&ck).map_err(backend)?.ok_or(RegistryError::NotFound(*serial))?;
        decode_record(&ck, &v)
    }
}

/// A blocked key's value: the reporting serial (16), then the time (i64 BE seconds).
fn decode_blocked(key_sha256: &[u8; 32], v: &[u8]) -> Result<pki::registry::BlockedKey, RegistryError> {
    let corrupt = || RegistryError::Corrupt { key: "blocked key".into(), detail: "bad entry".into() };
    let (serial, at) = v.split_first_chunk::<16>().ok_or_else(corrupt)?;
    let at = <[u8; 8]>::try_from(at).map_err(|_| corrupt())?;
    Ok(pki::registry::BlockedKey {
        key_sha256: *key_sha256,
        serial: Serial::from_bytes(serial).ok_or_else(corrupt)?,
        at: OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(at)).map_err(|_| corrupt())?,
    })
}

impl SledStore {
    /// Records a certificate in memory (see [`Registry::record_certificate`]); durable at the
    /// next flush.
    fn apply_certificate(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        let serial = record.serial.as_bytes();
        let ck = key(b'c', &[serial]);
        let dk = key(b'd', &[serial]);
        let mut batch = sled::Batch::default();
        batch.insert(ck.as_slice(), encode_record(record)?);
        batch.insert(dk.as_slice(), der);
        batch.insert(key(b'a', &[record.account.as_bytes(), &[0], serial]), &[]);
        batch.insert(key(b'k', &[&record.key_sha256, serial]), &[]);
        batch.insert(holder_key(record), &[]);
        batch.insert(key(b'e', &[&seconds(record.not_after), serial]), &[]);
        if record.state == State::Issued {
            batch.insert(valid_key(record), &[]);
        }
        let mut superseded = Vec::new();
        let mut tally = Tally::default();
        tally.add(record, 1);
        {
            let _writer = self.lock();
            if let Some(existing) = self.db.get(&dk).map_err(backend)? {
                if existing.as_ref() == der {
                    return Ok(superseded);
                }
                return Err(RegistryError::SerialTaken(record.serial));
            }
            if self.db.contains_key(&ck).map_err(backend)? {
                return Err(RegistryError::SerialTaken(record.serial));
            }
            if self.db.contains_key(key(b'b', &[&record.key_sha256])).map_err(backend)? {
                return Err(RegistryError::KeyBlocked);
            }
            if supersede_others {
                let at = record.recorded_at;
                let prefix = key(b'v', &[record.account.as_bytes(), &[0]]);
                for mut old in self.records_under(&prefix, prefix.len())? {
                    if old.serial == record.serial || old.state != State::Issued || old.not_after <= at {
                        continue;
                    }
                    batch.remove(valid_key(&old));
                    tally.add(&old, -1);
                    old.state = State::Revoked { at, reason: RevocationReason::Superseded };
                    tally.add(&old, 1);
                    batch.insert(key(b'c', &[old.serial.as_bytes()]), encode_record(&old)?);
                    batch.insert(
                        key(b'r', &[old.serial.as_bytes()]),
                        revocation_entry(&old, at, RevocationReason::Superseded),
                    );
                    superseded.push(old.serial);
                }
            }
            tally.write(&self.db, &mut batch)?;
            self.db.apply_batch(batch).map_err(backend)?;
        }
        Ok(superseded)
    }
}

impl Registry for SledStore {
    fn record_pending(&self, record: &CertRecord, request_id: Option<&[u8; 16]>) -> Result<(), RegistryError> {
        let serial = record.serial.as_bytes();
        let ck = key(b'c', &[serial]);
        let mut batch = sled::Batch::default();
        batch.insert(ck.as_slice(), encode_record(record)?);
        if let Some(id) = request_id {
            batch.insert(key(b'q', &[id]), &serial[..]);
        }
        batch.insert(key(b'a', &[record.account.as_bytes(), &[0], serial]), &[]);
        batch.insert(key(b'k', &[&record.key_sha256, serial]), &[]);
        batch.insert(holder_key(record), &[]);
        batch.insert(key(b'e', &[&seconds(record.not_after), serial]), &[]);
        {
            let _writer = self.lock();
            if self.db.contains_key(&ck).map_err(backend)? {
                return Err(RegistryError::SerialTaken(record.serial));
            }
            let mut tally = Tally::default();
            tally.add(record, 1);
            tally.write(&self.db, &mut batch)?;
            self.db.apply_batch(batch).map_err(backend)?;
        }
        self.durable()
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        {
            let _writer = self.lock();
            let mut record = self.read_record(serial)?;
            if record.state != State::Pending {
                let status = record.status(OffsetDateTime::now_utc()).name();
                return Err(RegistryError::WrongState { serial: *serial, status });
            }
            let mut tally = Tally::default();
            tally.add(&record, -1);
            record.state = State::Issued;
            tally.add(&record, 1);
            let mut batch = sled::Batch::default();
            batch.insert(key(b'c', &[serial.as_bytes()]), encode_record(&record)?);
            batch.insert(key(b'd', &[serial.as_bytes()]), der);
            batch.insert(valid_key(&record), &[]);
            tally.write(&self.db, &mut batch)?;
            self.db.apply_batch(batch).map_err(backend)?;
        }
        self.durable()
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        let Some(serial) = self.db.get(key(b'q', &[request_id])).map_err(backend)? else {
            return Ok(None);
        };
        let serial = Serial::from_bytes(&serial)
            .ok_or_else(|| RegistryError::Corrupt { key: "request index".into(), detail: "not a serial".into() })?;
        let record = self.read_record(&serial)?;
        let der = self.certificate_der(&serial)?;
        Ok(Some((record, der)))
    }

    fn record_certificate(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        let superseded = self.apply_certificate(record, der, supersede_others)?;
        self.durable()?;
        Ok(superseded)
    }

    fn record_certificate_deferred(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        self.apply_certificate(record, der, supersede_others)
    }

    fn sync(&self) -> Result<(), RegistryError> {
        self.durable()
    }

    fn ledger_cursor(&self) -> Result<u64, RegistryError> {
        Ok(self
            .db
            .get(LEDGER_CURSOR)
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_ledger_cursor(&self, at: u64) -> Result<(), RegistryError> {
        self.db.insert(LEDGER_CURSOR, &at.to_be_bytes()).map_err(backend)?;
        self.durable()
    }
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        let ck = key(b'c', &[serial.as_bytes()]);
        self.db.get(&ck).map_err(backend)?.map(|v| decode_record(&ck, &v)).transpose()
    }

    fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.db.get(key(b'd', &[serial.as_bytes()])).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn all(&self) -> Result<Vec<CertRecord>, RegistryError> {
        self.db
            .scan_prefix([b'c'])
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                decode_record(&k, &v)
            })
            .collect()
    }

    fn by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        let prefix = key(b'a', &[account.as_bytes(), &[0]]);
        self.records_under(&prefix, prefix.len())
    }

    fn valid_by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        let prefix = key(b'v', &[account.as_bytes(), &[0]]);
        self.records_under(&prefix, prefix.len())
    }

    fn by_key(&self, key_sha256: &[u8; 32]) -> Result<Vec<CertRecord>, RegistryError> {
        let prefix = key(b'k', &[key_sha256]);
        self.records_under(&prefix, prefix.len())
    }

    fn by_key_for_others(&self, key_sha256: &[u8; 32], account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        // `h` key account NUL serial: the account's own entries are the range from
        // "account NUL" up to "account 0x01" (an account name holds no NUL), skipped.
        let prefix = key(b'h', &[key_sha256]);
        let own = key(b'h', &[key_sha256, account.as_bytes(), &[0]]);
        let after_own = key(b'h', &[key_sha256, account.as_bytes(), &[1]]);
        let before = self.db.range(prefix.as_slice()..own.as_slice());
        let after = self
            .db
            .range(after_own.as_slice()..)
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)));
        before
            .chain(after)
            .map(|item| {
                let (k, _) = item.map_err(backend)?;
                let serial = k.len().checked_sub(16).map(|at| &k[at..]).ok_or_else(|| RegistryError::Corrupt {
                    key: format!("{k:02x?}"),
                    detail: "key holder entry without a serial".into(),
                })?;
                self.indexed_record(&k, serial)
            })
            .collect()
    }

    fn expiring_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<CertRecord>, RegistryError> {
        self.expiring(from, to).collect()
    }

    fn expiring_first(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
        keep: &dyn Fn(&CertRecord) -> bool,
    ) -> Result<Vec<CertRecord>, RegistryError> {
        self.expiring(from, to).filter(|r| r.as_ref().map_or(true, keep)).take(limit).collect()
    }

    fn count_by_status(&self, now: OffsetDateTime) -> Result<StatusCounts, RegistryError> {
        let mut counts = StatusCounts::default();
        let (mut issued, mut expired) = (0, 0);
        let this_hour = hour(now);
        for item in self.db.scan_prefix([b'n']) {
            let (k, v) = item.map_err(backend)?;
            let n = count_value(&k, &v)?;
            match k.get(1) {
                Some(&COUNT_PENDING) => counts.pending += n,
                Some(&COUNT_ISSUED) => {
                    issued += n;
                    // Issued certificates of the hours before now's have expired.
                    if k.get(2..10).is_some_and(|h| h < this_hour.to_be_bytes().as_slice()) {
                        expired += n;
                    }
                }
                Some(&COUNT_REVOKED) => counts.revoked += n,
                Some(&COUNT_SUPERSEDED) => counts.superseded += n,
                _ => return Err(RegistryError::Corrupt { key: format!("{k:02x?}"), detail: "unknown counter".into() }),
            }
        }
        // And those of now's hour whose notAfter has passed.
        expired += self.issued_records(hour_start(this_hour)?, now)?;
        counts.expired = expired.min(issued);
        counts.valid = issued - counts.expired;
        Ok(counts)
    }

    fn count_valid_expiring(&self, now: OffsetDateTime, until: OffsetDateTime) -> Result<u64, RegistryError> {
        if until < now {
            return Ok(0);
        }
        // notAfter is whole seconds: before `until` plus a nanosecond is at or before `until`.
        self.issued_in(now, until + time::Duration::nanoseconds(1))
    }

    fn revoke(
        &self,
        serial: &Serial,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<CertRecord, RegistryError> {
        let record = {
            let _writer = self.lock();
            let mut record = self.read_record(serial)?;
            if record.state != State::Issued {
                let status = record.status(at).name();
                return Err(RegistryError::WrongState { serial: *serial, status });
            }
            let mut tally = Tally::default();
            tally.add(&record, -1);
            record.state = State::Revoked { at, reason };
            tally.add(&record, 1);
            let mut batch = sled::Batch::default();
            batch.insert(key(b'c', &[serial.as_bytes()]), encode_record(&record)?);
            batch.insert(key(b'r', &[serial.as_bytes()]), revocation_entry(&record, at, reason));
            batch.remove(valid_key(&record));
            tally.write(&self.db, &mut batch)?;
            self.db.apply_batch(batch).map_err(backend)?;
            record
        };
        self.durable()?;
        Ok(record)
    }

    fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<RevokedEntry>, RegistryError> {
        self.revoked_entries(now, None)
    }

    fn revoked_unexpired_by(&self, now: OffsetDateTime, issuer: u16) -> Result<Vec<RevokedEntry>, RegistryError> {
        self.revoked_entries(now, Some(issuer))
    }

    fn block_key(&self, key_sha256: &[u8; 32], serial: &Serial, at: OffsetDateTime) -> Result<bool, RegistryError> {
        let mut value = serial.as_bytes().to_vec();
        value.extend_from_slice(&at.unix_timestamp().to_be_bytes());
        let added =
            self.db.compare_and_swap(key(b'b', &[key_sha256]), None::<&[u8]>, Some(value)).map_err(backend)?.is_ok();
        if added {
            self.durable()?;
        }
        Ok(added)
    }

    fn blocked_key(&self, key_sha256: &[u8; 32]) -> Result<Option<pki::registry::BlockedKey>, RegistryError> {
        let found = self.db.get(key(b'b', &[key_sha256])).map_err(backend)?;
        found.map(|v| decode_blocked(key_sha256, &v)).transpose()
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        let next = self
            .db
            .update_and_fetch(CRL_NUMBER, |old| {
                let n = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| backend("CRL number missing after update"))?;
        self.durable()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_passes_the_registry_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        // sled's background work may hold the directory's lock a moment after a drop (seen on a
        // loaded CI machine): reopening waits for it, boundedly.
        let open = || -> Box<dyn Registry> {
            for _ in 0..100 {
                match SledStore::open(dir.path()) {
                    Ok(store) => return Box::new(store),
                    Err(e) if e.to_string().contains("lock") => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    Err(e) => panic!("open: {e}"),
                }
            }
            Box::new(SledStore::open(dir.path()).expect("open after 5 s"))
        };
        pki::registry::conformance::registry(&open, OffsetDateTime::now_utc());
    }

    #[test]
    fn a_registry_without_counters_gets_them_counted_afresh_at_its_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        let store = SledStore::open(dir.path()).expect("open");
        for n in 1..=40u8 {
            let record = CertRecord {
                serial: Serial::from_random([n; 16]).expect("serial"),
                account: format!("user{}", n % 7),
                profile: pki::Profile::Client,
                key_sha256: [n; 32],
                not_before: now - time::Duration::days(400),
                // Some expired, some in this hour on either side of now, some later.
                not_after: now + time::Duration::minutes(i64::from(n) * 97 - 2000),
                recorded_at: now,
                state: if n % 5 == 0 { State::Pending } else { State::Issued },
                issuer: 1,
            };
            store.record_certificate(&record, &[n], n % 3 == 0).expect("recorded");
        }
        let all = store.all().expect("all");
        let valid = all.iter().find(|r| r.status(now) == pki::registry::Status::Valid).expect("a valid one");
        store.revoke(&valid.serial, now, RevocationReason::KeyCompromise).expect("revoke");
        let counted = store.count_by_status(now).expect("count");
        let mut tallied = StatusCounts::default();
        for record in store.all().expect("all") {
            tallied.add(record.status(now));
        }
        assert_eq!(counted, tallied);
        assert!(
            counted.valid > 0 && counted.expired > 0 && counted.superseded > 0 && counted.pending > 0,
            "{counted:?}"
        );
        assert_eq!(counted.revoked, 1);
        // As an older inkan left it: no counters, no mark.
        let old: Vec<_> = store.db.scan_prefix([b'n']).keys().collect::<Result<_, _>>().expect("keys");
        assert!(!old.is_empty());
        for (n, k) in old.into_iter().enumerate() {
            if n % 2 == 0 {
                store.db.remove(k).expect("remove");
            } else {
                store.db.insert(k, &7u64.to_be_bytes()).expect("stale");
            }
        }
        store.db.remove(N_INDEX_BUILT).expect("remove mark");
        assert_ne!(store.count_by_status(now).expect("count"), tallied, "counters wrong before the next open");
        drop(store);
        let store = (0..100)
            .find_map(|_| {
                SledStore::open(dir.path()).map_err(|_| std::thread::sleep(std::time::Duration::from_millis(50))).ok()
            })
            .expect("reopen");
        assert_eq!(store.count_by_status(now).expect("count"), tallied, "counted again from the records");
        let hour_later = now + time::Duration::hours(1);
        let valid_then = store
            .all()
            .expect("all")
            .iter()
            .filter(|r| r.status(now) == pki::registry::Status::Valid && r.not_after <= hour_later)
            .count();
        assert_eq!(store.count_valid_expiring(now, hour_later).expect("expiring"), valid_then as u64);
    }
}
