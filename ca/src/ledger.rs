//! The issuance ledger: what the CA records before and after it signs.
//!
//! [`Ledger`] is the narrow part of a registry the CA needs. Any [`Registry`] is one (the CLI
//! and tests use the sled registry directly); the signer process uses [`LogLedger`], an
//! append-only file built for this one job: each issuance appends two small records (pending,
//! then the certificate) and syncs once, after the certificate (concurrent issuances share one
//! `fdatasync`); an in-memory index answers request-id lookups. A torn tail left by a crash is
//! cut off when the file is opened.
//!
//! The pending record is not synced on its own: a crash before the certificate's sync loses
//! both, and the signature made meanwhile never left the process (nothing is released before
//! the sync), so no certificate exists that the ledger does not know. It is written before
//! signing so that a serial is taken, in this process, before anything is signed under it.
//!
//! The registry catches up from the ledger ([`LogLedger::issued_since`]): the service records
//! what the signer answers without waiting for its own disk, and after a crash it records what
//! the ledger holds beyond its cursor.
//!
//! Record frame: length (u32 BE, of kind + payload), the first 8 bytes of the SHA-256 of
//! kind + payload, kind (1 pending, 2 issued, 3 CRL number), payload. A pending record's
//! payload starts with a flag byte (bit 0: a request id follows; bit 1: the certificate
//! supersedes the account's others), then 16 bytes of request id (zeros without), then the
//! record.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pki::Serial;
use pki::registry::{CertRecord, Registry, RegistryError, RequestAnswer, State};

use crate::durable::GroupCommit;
use crate::sled_store::{decode_record, encode_record};

/// What the CA needs from where it records issuances.
pub trait Ledger: Send + Sync {
    /// Records an issuance before signing; refuses a serial already recorded. `supersede`: the
    /// certificate is to supersede the account's others in the registry. Durable at the latest
    /// with the certificate's record.
    fn record_pending(
        &self,
        record: &CertRecord,
        request_id: Option<&[u8; 16]>,
        supersede: bool,
    ) -> Result<(), RegistryError>;
    /// Records the signed certificate of a pending issuance (durably, with its pending record).
    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError>;
    /// The latest issuance recorded for a request id, and its certificate once signed.
    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError>;
    /// Increments and returns the CRL number (the first is 1), durably.
    fn next_crl_number(&self) -> Result<u64, RegistryError>;
    /// The issuance recorded under `serial`.
    fn lookup(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError>;
    /// Records a signed audit checkpoint (JSON), durably. Only the signer's ledger keeps them.
    fn record_checkpoint(&self, _doc: &[u8]) -> Result<(), RegistryError> {
        Err(backend("this ledger keeps no audit checkpoints; the signer's does"))
    }
    /// The latest signed audit checkpoint (JSON).
    fn latest_checkpoint(&self) -> Option<Vec<u8>> {
        None
    }
}

impl<T: Registry + ?Sized> Ledger for T {
    fn record_pending(&self, record: &CertRecord, request_id: Option<&[u8; 16]>, _: bool) -> Result<(), RegistryError> {
        Registry::record_pending(self, record, request_id)
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        Registry::record_issued(self, serial, der)
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        Registry::find_request(self, request_id)
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        Registry::next_crl_number(self)
    }

    fn lookup(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        Registry::get(self, serial)
    }
}

const PENDING: u8 = 1;
/// Flag bits of a pending record.
const HAS_REQUEST_ID: u8 = 1;
const SUPERSEDES: u8 = 2;
const ISSUED: u8 = 2;
const CRL_NUMBER: u8 = 3;
const AUDIT_CHECKPOINT: u8 = 4;
/// Frames larger than this are not ours (a corrupt length): the tail is cut there.
const MAX_FRAME: u32 = 1 << 20;

struct Entry {
    record: CertRecord,
    /// Where the certificate's DER is in the file, once issued.
    der: Option<(u64, u32)>,
    /// Whether it supersedes the account's other certificates.
    supersede: bool,
}

/// What [`LogLedger::issued_since`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSince {
    /// The certificates recorded, in ledger order.
    pub serials: Vec<Serial>,
    /// Where to ask from next.
    pub next: u64,
    /// The end of the ledger's durable part when asked.
    pub end: u64,
}

/// One issued certificate as the ledger holds it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// Where its certificate is in the file: a later issuance is further on.
    pub at: u64,
    /// The issuance record.
    pub record: CertRecord,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Whether it supersedes the account's other certificates.
    pub supersede: bool,
}

struct Index {
    file: File,
    /// The end of the last whole record.
    end: u64,
    entries: HashMap<Serial, Entry>,
    requests: HashMap<[u8; 16], Serial>,
    crl_number: u64,
    /// The latest signed audit checkpoint (JSON).
    checkpoint: Option<Vec<u8>>,
}

/// The append-only ledger file.
pub struct LogLedger {
    path: PathBuf,
    index: Mutex<Index>,
    reader: File,
    /// The appending file, shared for syncing without taking the index lock.
    syncer: File,
    group: GroupCommit,
    synced: bool,
    /// The end of the part of the file known to be on disk.
    synced_end: AtomicU64,
}

impl std::fmt::Debug for LogLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLedger").field("path", &self.path).finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Backend(e.to_string())
}

fn checksum(kind: u8, payload: &[u8]) -> [u8; 8] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&[kind]);
    ctx.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&ctx.finish().as_ref()[..8]);
    out
}

/// The next whole, checked record: its body (kind, then payload) and the bytes it took; `None`
/// at the end, or at a torn or corrupt record (where a crash cut the file).
fn next_frame(reader: &mut impl Read) -> Option<(Vec<u8>, u64)> {
    let mut head = [0u8; 12];
    reader.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).ok()?;
    (checksum(body[0], &body[1..]) == head[4..12]).then_some((body, 12 + u64::from(len)))
}

/// How many leading bytes of the ledger at `path` are whole, checked records now: what a copy
/// of a ledger being appended to keeps. Reads one record at a time.
pub fn whole_records(path: &Path) -> Result<u64, RegistryError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(backend(format!("reading {}: {e}", path.display()))),
    };
    let len = file.metadata().map_err(backend)?.len();
    let mut reader = BufReader::new(file.take(len));
    let mut whole = 0;
    while let Some((_, taken)) = next_frame(&mut reader) {
        whole += taken;
    }
    Ok(whole)
}

/// The latest audit checkpoint in the ledger file at `path` (read only; the signer may be
/// appending).
pub fn read_checkpoint(path: &Path) -> Result<Option<Vec<u8>>, RegistryError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(backend(format!("reading {}: {e}", path.display()))),
    };
    let mut reader = BufReader::new(file);
    let mut latest = None;
    while let Some((body, _)) = next_frame(&mut reader) {
        if body[0] == AUDIT_CHECKPOINT {
            latest = Some(body[1..].to_vec());
        }
    }
    Ok(latest)
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + payload.len());
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.extend_from_slice(&checksum(kind, payload));
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

impl LogLedger {
    /// Opens (or creates) the ledger at `path`, replaying it; a torn last record is cut off.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Self::open_with(path, true)
    }

    /// Danger, for benchmarks only: with `synced` false, appends are acknowledged before they
    /// are on disk.
    pub fn open_with(path: &Path, synced: bool) -> Result<Self, RegistryError> {
        if let Some(dir) = path.parent() {
            crate::layout::create_private_dir(dir).map_err(backend)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
        file.try_lock()
            .map_err(|_| backend(format!("{} is in use by another inkan process (lock)", path.display())))?;
        let mut index =
            Index { file, end: 0, entries: HashMap::new(), requests: HashMap::new(), crl_number: 0, checkpoint: None };
        Self::replay(path, &mut index)?;
        let reader = File::open(path).map_err(backend)?;
        let syncer = index.file.try_clone().map_err(backend)?;
        let group = GroupCommit::default();
        let synced_end = AtomicU64::new(index.end);
        Ok(Self { path: path.to_owned(), index: Mutex::new(index), reader, syncer, group, synced, synced_end })
    }

    fn replay(path: &Path, index: &mut Index) -> Result<(), RegistryError> {
        let mut reader = BufReader::new(File::open(path).map_err(backend)?);
        let mut offset = 0u64;
        while let Some((body, taken)) = next_frame(&mut reader) {
            let (kind, payload) = (body[0], &body[1..]);
            let payload_at = offset + 13;
            match kind {
                PENDING => {
                    let (id, record) =
                        payload.split_first_chunk::<17>().ok_or_else(|| backend("short pending record"))?;
                    let record = decode_record(b"ledger", record)?;
                    if id[0] & HAS_REQUEST_ID != 0 {
                        let mut request = [0u8; 16];
                        request.copy_from_slice(&id[1..]);
                        index.requests.insert(request, record.serial);
                    }
                    let supersede = id[0] & SUPERSEDES != 0;
                    index.entries.insert(record.serial, Entry { record, der: None, supersede });
                }
                ISSUED => {
                    let serial = payload.get(..16).and_then(Serial::from_bytes).ok_or_else(|| backend("bad serial"))?;
                    if let Some(entry) = index.entries.get_mut(&serial) {
                        entry.record.state = State::Issued;
                        entry.der = Some((payload_at + 16, (payload.len() - 16) as u32));
                    }
                }
                CRL_NUMBER => {
                    let n = payload.try_into().map(u64::from_be_bytes).map_err(|_| backend("bad CRL number"))?;
                    index.crl_number = index.crl_number.max(n);
                }
                AUDIT_CHECKPOINT => index.checkpoint = Some(payload.to_vec()),
                // A whole, checked record of a kind this inkan does not know was written by a
                // newer one: cutting it off like a torn tail would lose it.
                other => {
                    return Err(backend(format!(
                        "{}: a record of kind {other} at byte {offset}, written by a newer inkan; refusing to open \
                         the ledger (nothing was changed)",
                        path.display()
                    )));
                }
            }
            offset += taken;
        }
        let actual = index.file.metadata().map_err(backend)?.len();
        if actual != offset {
            // A record cut off by a crash was never acknowledged: drop it.
            tracing_free_warning(path, actual - offset);
            index.file.set_len(offset).map_err(backend)?;
            index.file.sync_all().map_err(backend)?;
        }
        index.end = offset;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a frame under the lock; returns the offset of its payload.
    fn append(index: &mut Index, kind: u8, payload: &[u8]) -> Result<u64, RegistryError> {
        let bytes = frame(kind, payload);
        index.file.write_all(&bytes).map_err(backend)?;
        let payload_at = index.end + 13;
        index.end += bytes.len() as u64;
        Ok(payload_at)
    }

    fn durable(&self) -> Result<(), RegistryError> {
        if !self.synced {
            self.synced_end.fetch_max(self.lock().end, Ordering::SeqCst);
            return Ok(());
        }
        self.group.wait_durable(|| {
            let end = self.lock().end;
            self.syncer.sync_data().map_err(backend)?;
            self.synced_end.fetch_max(end, Ordering::SeqCst);
            Ok(())
        })
    }

    fn read_der(&self, at: (u64, u32)) -> Result<Vec<u8>, RegistryError> {
        let mut buf = vec![0u8; at.1 as usize];
        self.reader.read_exact_at(&mut buf, at.0).map_err(backend)?;
        Ok(buf)
    }

    /// How many syncs were made (benchmarks report it).
    pub fn flush_count(&self) -> u64 {
        self.group.flush_count()
    }

    /// The certificates recorded in the durable part of the ledger from byte `after` (0, or a
    /// `next` this returned) up to byte `until` (an `end` this returned), at most `limit` of
    /// them. An offset that is not where a record starts (a cursor kept for another ledger) is
    /// refused.
    pub fn issued_since(&self, after: u64, until: Option<u64>, limit: usize) -> Result<IssuedSince, RegistryError> {
        let durable = self.synced_end.load(Ordering::SeqCst);
        let end = until.map_or(durable, |until| until.min(durable));
        let not_ours = || backend(format!("byte {after} is not where a record of {} starts", self.path.display()));
        if after > durable {
            return Err(not_ours());
        }
        let mut reader = BufReader::with_capacity(64 << 10, ReadAt { file: &self.reader, at: after, end });
        let (mut serials, mut next) = (Vec::new(), after);
        while next < end && serials.len() < limit {
            let (body, taken) = next_frame(&mut reader).ok_or_else(not_ours)?;
            if body[0] == ISSUED {
                serials.push(body.get(1..17).and_then(Serial::from_bytes).ok_or_else(|| backend("bad serial"))?);
            }
            next += taken;
        }
        Ok(IssuedSince { serials, next, end: durable })
    }

    /// The certificate issued under `serial`, its record and whether it supersedes others.
    pub fn entry(&self, serial: &Serial) -> Result<Option<LedgerEntry>, RegistryError> {
        let found = self.lock().entries.get(serial).and_then(|e| Some((e.record.clone(), e.der?, e.supersede)));
        found
            .map(|(record, at, supersede)| Ok(LedgerEntry { at: at.0, record, der: self.read_der(at)?, supersede }))
            .transpose()
    }

    /// Every issuance recorded, in no particular order (for checks and tests).
    pub fn records(&self) -> Vec<CertRecord> {
        self.lock().entries.values().map(|e| e.record.clone()).collect()
    }

    /// The certificate recorded for `serial`, once issued.
    pub fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
        let at = self.lock().entries.get(serial).and_then(|e| e.der);
        at.map(|at| self.read_der(at)).transpose()
    }
}

/// Reads a file from `at` up to `end` without moving a shared file position.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.end - self.at).unwrap_or(usize::MAX).min(buf.len());
        let n = self.file.read_at(&mut buf[..room], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Said on stderr: the ledger has no logger of its own and a cut tail is worth knowing.
fn tracing_free_warning(path: &Path, bytes: u64) {
    eprintln!("ledger {}: cut off {bytes} bytes of an unfinished record (a crash while writing)", path.display());
}

impl Ledger for LogLedger {
    fn record_checkpoint(&self, doc: &[u8]) -> Result<(), RegistryError> {
        {
            let mut index = self.lock();
            Self::append(&mut index, AUDIT_CHECKPOINT, doc)?;
            index.checkpoint = Some(doc.to_vec());
        }
        self.durable()
    }

    fn latest_checkpoint(&self) -> Option<Vec<u8>> {
        self.lock().checkpoint.clone()
    }

    fn record_pending(
        &self,
        record: &CertRecord,
        request_id: Option<&[u8; 16]>,
        supersede: bool,
    ) -> Result<(), RegistryError> {
        let mut payload = Vec::with_capacity(17 + 128);
        let flags = if supersede { SUPERSEDES } else { 0 };
        match request_id {
            Some(id) => {
                payload.push(flags | HAS_REQUEST_ID);
                payload.extend_from_slice(id);
            }
            None => {
                payload.push(flags);
                payload.extend_from_slice(&[0; 16]);
            }
        }
        payload.extend_from_slice(&encode_record(record)?);
        {
            let mut index = self.lock();
            if index.entries.contains_key(&record.serial) {
                return Err(RegistryError::SerialTaken(record.serial));
            }
            Self::append(&mut index, PENDING, &payload)?;
            index.entries.insert(record.serial, Entry { record: record.clone(), der: None, supersede });
            if let Some(id) = request_id {
                index.requests.insert(*id, record.serial);
            }
        }
        // Synced with the certificate's record (see the module's documentation).
        Ok(())
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        let mut payload = Vec::with_capacity(16 + der.len());
        payload.extend_from_slice(serial.as_bytes());
        payload.extend_from_slice(der);
        {
            let mut index = self.lock();
            match index.entries.get(serial) {
                None => return Err(RegistryError::NotFound(*serial)),
                Some(entry) if entry.record.state != State::Pending => {
                    return Err(RegistryError::WrongState { serial: *serial, status: "issued" });
                }
                Some(_) => {}
            }
            let at = Self::append(&mut index, ISSUED, &payload)?;
            if let Some(entry) = index.entries.get_mut(serial) {
                entry.record.state = State::Issued;
                entry.der = Some((at + 16, der.len() as u32));
            }
        }
        self.durable()
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        let found = {
            let index = self.lock();
            index
                .requests
                .get(request_id)
                .and_then(|serial| index.entries.get(serial))
                .map(|e| (e.record.clone(), e.der))
        };
        match found {
            None => Ok(None),
            Some((record, der)) => Ok(Some((record, der.map(|at| self.read_der(at)).transpose()?))),
        }
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        let number = {
            let mut index = self.lock();
            let number = index.crl_number + 1;
            Self::append(&mut index, CRL_NUMBER, &number.to_be_bytes())?;
            index.crl_number = number;
            number
        };
        self.durable()?;
        Ok(number)
    }

    fn lookup(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        Ok(self.lock().entries.get(serial).map(|e| e.record.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Duration, OffsetDateTime};

    fn record(n: u8) -> CertRecord {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        CertRecord {
            serial: Serial::from_random([n; 16]).expect("serial"),
            account: format!("user{n}"),
            profile: pki::Profile::Client,
            key_sha256: [n; 32],
            not_before: now,
            not_after: now + Duration::days(30),
            recorded_at: now,
            state: State::Pending,
            issuer: 1,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.log");
        {
            let ledger = LogLedger::open(&path).expect("open");
            let a = record(1);
            ledger.record_pending(&a, Some(&[9; 16]), false).expect("pending");
            assert!(matches!(ledger.record_pending(&a, None, false), Err(RegistryError::SerialTaken(_))));
            assert_eq!(
                ledger.find_request(&[9; 16]).expect("find").map(|(r, d)| (r.state, d)),
                Some((State::Pending, None))
            );
            ledger.record_issued(&a.serial, b"certificate a").expect("issued");
            assert!(ledger.record_issued(&a.serial, b"again").is_err());
            ledger.record_pending(&record(2), None, true).expect("b");
            assert_eq!(ledger.next_crl_number().expect("1"), 1);
            assert_eq!(ledger.next_crl_number().expect("2"), 2);
            assert!(LogLedger::open(&path).is_err(), "one process at a time");
        }
        // A crash in the middle of a write leaves part of a frame at the end.
        let whole = std::fs::metadata(&path).expect("meta").len();
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&frame(ISSUED, b"partial")[..9]).expect("torn");
        drop(file);

        let ledger = LogLedger::open(&path).expect("reopen");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole, "the torn tail is cut off");
        let (found, der) = ledger.find_request(&[9; 16]).expect("find").expect("recorded");
        assert_eq!((found.state, der.as_deref()), (State::Issued, Some(&b"certificate a"[..])));
        assert_eq!(ledger.records().len(), 2);
        assert_eq!(ledger.next_crl_number().expect("3"), 3, "CRL numbers survive reopening");
        // A flipped byte inside the last record: the checksum cuts it too.
        drop(ledger);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let ledger = LogLedger::open(&path).expect("reopen after corruption");
        assert_eq!(ledger.next_crl_number().expect("3 again"), 3, "the corrupt CRL-number record was dropped");
        ledger.record_checkpoint(br#"{"checkpoint":1}"#).expect("checkpoint");
        drop(ledger);
        assert_eq!(read_checkpoint(&path).expect("read").as_deref(), Some(&br#"{"checkpoint":1}"#[..]));
        assert_eq!(
            LogLedger::open(&path).expect("reopen").latest_checkpoint().as_deref(),
            Some(&br#"{"checkpoint":1}"#[..])
        );
    }

    #[test]
    fn a_registry_catches_up_from_the_ledger_by_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.log");
        let (a, b, c) = (record(1), record(2), record(3));
        let pages = {
            let ledger = LogLedger::open(&path).expect("open");
            ledger.record_pending(&a, None, true).expect("a");
            ledger.record_issued(&a.serial, b"certificate a").expect("a issued");
            ledger.next_crl_number().expect("a CRL number between");
            ledger.record_pending(&b, Some(&[2; 16]), false).expect("b");
            ledger.record_issued(&b.serial, b"certificate b").expect("b issued");
            ledger.record_pending(&c, None, true).expect("c, never signed");
            let all = ledger.issued_since(0, None, 10).expect("all");
            assert_eq!(all.serials, vec![a.serial, b.serial]);
            // c's pending record was written but not synced: the durable part ends before it.
            assert_eq!(all.next, all.end);
            assert!(all.end < std::fs::metadata(&path).expect("meta").len());
            let first = ledger.issued_since(0, None, 1).expect("one");
            assert_eq!(first.serials, vec![a.serial]);
            let rest = ledger.issued_since(first.next, None, 10).expect("rest");
            assert_eq!((rest.serials, rest.next), (vec![b.serial], all.next));
            assert_eq!(ledger.issued_since(0, Some(first.next), 10).expect("until").serials, vec![a.serial]);
            assert!(ledger.issued_since(all.next, None, 10).expect("nothing new").serials.is_empty());
            let refused = ledger.issued_since(5, None, 10).expect_err("not a record boundary");
            assert!(refused.to_string().contains("byte 5 is not where a record"), "{refused}");
            assert!(ledger.issued_since(all.end + 13, None, 10).is_err(), "beyond the end");
            let (ea, eb) = (ledger.entry(&a.serial).expect("a"), ledger.entry(&b.serial).expect("b"));
            let (ea, eb) = (ea.expect("a is issued"), eb.expect("b is issued"));
            assert_eq!((ea.der.as_slice(), ea.supersede), (&b"certificate a"[..], true));
            assert_eq!((eb.der.as_slice(), eb.supersede), (&b"certificate b"[..], false));
            assert!(ea.at < eb.at, "ledger order");
            assert!(ledger.entry(&c.serial).expect("c").is_none(), "pending only");
            (all, ea.at)
        };
        // Reopened (c's pending record is on disk now: the file was closed, not cut), the
        // flags, offsets and request ids come back from the file.
        let ledger = LogLedger::open(&path).expect("reopen");
        let again = ledger.issued_since(0, None, 10).expect("again");
        assert_eq!((again.serials, again.next <= again.end), (pages.0.serials, true));
        let ea = ledger.entry(&a.serial).expect("a").expect("issued");
        assert_eq!((ea.supersede, ea.at), (true, pages.1));
        assert!(!ledger.entry(&b.serial).expect("b").expect("issued").supersede);
        assert_eq!(ledger.find_request(&[2; 16]).expect("find").map(|(r, _)| r.serial), Some(b.serial));
    }

    #[test]
    fn a_record_of_an_unknown_kind_is_refused_not_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.log");
        LogLedger::open(&path).expect("open").record_pending(&record(1), None, false).expect("pending");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&frame(99, b"from a newer inkan")).expect("write");
        drop(file);
        let before = std::fs::read(&path).expect("read");
        let refused = LogLedger::open(&path).expect_err("refused");
        assert!(refused.to_string().contains("kind 99") && refused.to_string().contains("newer inkan"), "{refused}");
        assert_eq!(std::fs::read(&path).expect("read"), before, "nothing was cut");
    }
}
