//! The issuance ledger: what the CA records before and after it signs.
//!
//! [`Ledger`] is the narrow part of a registry the CA needs. Any [`Registry`] is one (the CLI
//! and tests use the sled registry directly); the signer process uses [`LogLedger`], an
//! append-only file built for this one job: each issuance appends two small records (pending,
//! then the certificate) and syncs once, after the certificate (concurrent issuances share one
//! `fdatasync`). Lookups by serial and by request id go through an index: the records since the
//! last index checkpoint in memory, the rest in an index file beside the ledger
//! ([`crate::ledger_index`]), rewritten in the background every so many issuances, so a start
//! replays only the ledger's tail and memory does not grow with the ledger. A torn tail left by a
//! crash is cut off when the file is opened.
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
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pki::Serial;
use pki::registry::{CertRecord, Registry, RegistryError, RequestAnswer, State};

use crate::durable::GroupCommit;
use crate::ledger_index::{Base, Covered, ReadAt, Slot};
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

/// Records in memory before an index checkpoint: at least this many, and at most the larger
/// of this and 1/32 of the index's entries (up to [`MAX_TAIL`]): a start replays at most that
/// many, and the index file is rewritten once per that many issuances.
const MIN_TAIL: usize = 1 << 16;
const MAX_TAIL: usize = 1 << 18;

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

/// Records being written into a new index file: found here until it replaces the old one.
struct Frozen {
    slots: Vec<(Serial, Slot)>,
    requests: Vec<([u8; 16], Serial)>,
}

struct Index {
    file: File,
    /// The end of the last whole record.
    end: u64,
    /// The last whole record: its offset and checksum (what an index checkpoint names).
    last_frame: (u64, [u8; 8]),
    /// The records since the index file's checkpoint (and any being checkpointed now).
    tail: HashMap<Serial, Slot>,
    tail_requests: HashMap<[u8; 16], Serial>,
    frozen: Option<Arc<Frozen>>,
    base: Option<Arc<Base>>,
    crl_number: u64,
    /// The latest signed audit checkpoint (JSON) and where its payload is.
    checkpoint: Option<(Vec<u8>, (u64, u32))>,
}

impl Index {
    /// Where `serial`'s records are: the newest of the tail, the frozen part and the file.
    fn slot(&self, serial: &Serial) -> Result<Option<Slot>, RegistryError> {
        if let Some(slot) = self.tail.get(serial) {
            return Ok(Some(*slot));
        }
        if let Some(frozen) = &self.frozen
            && let Ok(i) = frozen.slots.binary_search_by(|(s, _)| s.cmp(serial))
        {
            return Ok(Some(frozen.slots[i].1));
        }
        match &self.base {
            Some(base) => base.slot(serial).map_err(backend),
            None => Ok(None),
        }
    }

    /// The serial `request` took most recently.
    fn request(&self, request: &[u8; 16]) -> Result<Option<Serial>, RegistryError> {
        if let Some(serial) = self.tail_requests.get(request) {
            return Ok(Some(*serial));
        }
        if let Some(frozen) = &self.frozen
            && let Ok(i) = frozen.requests.binary_search_by(|(r, _)| r.cmp(request))
        {
            return Ok(Some(frozen.requests[i].1));
        }
        match &self.base {
            Some(base) => base.request(request).map_err(backend),
            None => Ok(None),
        }
    }

    /// Records `serial`'s certificate at `der`.
    fn set_issued(&mut self, serial: &Serial, der: (u64, u32)) -> Result<bool, RegistryError> {
        let Some(mut slot) = self.slot(serial)? else { return Ok(false) };
        slot.der = Some(der);
        self.tail.insert(*serial, slot);
        Ok(true)
    }
}

/// The append-only ledger file.
pub struct LogLedger {
    path: PathBuf,
    /// The index file beside it.
    index_path: PathBuf,
    index: Mutex<Index>,
    /// A new index file written in the background, once it is ready (or why it is not).
    merged: Arc<Mutex<Option<Result<Base, String>>>>,
    merging: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Records in memory before a checkpoint (0: the default rule, [`MIN_TAIL`]..[`MAX_TAIL`]).
    tail_limit: AtomicUsize,
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
        let index_path = path.with_extension("idx");
        let mut index = Index {
            file,
            end: 0,
            last_frame: (0, [0; 8]),
            tail: HashMap::new(),
            tail_requests: HashMap::new(),
            frozen: None,
            base: None,
            crl_number: 0,
            checkpoint: None,
        };
        let indexed = Self::replay(path, &index_path, &mut index)?;
        let reader = File::open(path).map_err(backend)?;
        let syncer = index.file.try_clone().map_err(backend)?;
        let group = GroupCommit::default();
        let synced_end = AtomicU64::new(index.end);
        let ledger = Self {
            path: path.to_owned(),
            index_path,
            index: Mutex::new(index),
            merged: Arc::default(),
            merging: Mutex::new(None),
            tail_limit: AtomicUsize::new(0),
            reader,
            syncer,
            group,
            synced,
            synced_end,
        };
        // A ledger replayed from its start (no index yet, or one that was not this ledger's)
        // is checkpointed now, so the next start is quick.
        ledger.maybe_checkpoint(&mut ledger.lock_index(), !indexed);
        Ok(ledger)
    }

    /// The index file at `index_path` if it belongs to this ledger (the frame it names ends
    /// where it says, with the checksum it has); else `None`, with the reason on stderr.
    fn base_of(path: &Path, index_path: &Path, file: &File, len: u64) -> Option<Base> {
        let base = match Base::open(index_path) {
            Ok(Some(base)) => base,
            Ok(None) => return None,
            Err(e) => {
                eprintln!(
                    "ledger {}: index {} set aside ({e}); replaying the whole ledger",
                    path.display(),
                    index_path.display()
                );
                return None;
            }
        };
        let Covered { end, last_frame: (at, sum), .. } = base.covered;
        let mut head = [0u8; 12];
        let ours = end == 0
            || (end <= len
                && file.read_exact_at(&mut head, at).is_ok()
                && head[4..12] == sum
                && at + 12 + u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]])) == end);
        if !ours {
            eprintln!(
                "ledger {}: index {} is not this ledger's (it covers {end} bytes); replaying the whole ledger",
                path.display(),
                index_path.display()
            );
        }
        ours.then_some(base)
    }

    /// Replays the ledger beyond what its index file covers (all of it without a good index);
    /// returns whether an index file was used.
    fn replay(path: &Path, index_path: &Path, index: &mut Index) -> Result<bool, RegistryError> {
        let len = index.file.metadata().map_err(backend)?.len();
        let mut offset = 0u64;
        if let Some(base) = Self::base_of(path, index_path, &index.file, len) {
            offset = base.covered.end;
            index.last_frame = base.covered.last_frame;
            index.crl_number = base.covered.crl_number;
            if let Some((at, n)) = base.covered.checkpoint {
                let mut doc = vec![0u8; n as usize];
                index.file.read_exact_at(&mut doc, at).map_err(backend)?;
                index.checkpoint = Some((doc, (at, n)));
            }
            index.base = Some(Arc::new(base));
        }
        let source = index.file.try_clone().map_err(backend)?;
        let mut reader = BufReader::with_capacity(1 << 20, ReadAt::new(&source, offset, len));
        while let Some((body, taken)) = next_frame(&mut reader) {
            let (kind, payload) = (body[0], &body[1..]);
            let payload_at = offset + 13;
            match kind {
                PENDING => {
                    let (id, record) =
                        payload.split_first_chunk::<17>().ok_or_else(|| backend("short pending record"))?;
                    let serial =
                        record.get(1..17).and_then(Serial::from_bytes).ok_or_else(|| backend("bad pending record"))?;
                    if id[0] & HAS_REQUEST_ID != 0 {
                        let mut request = [0u8; 16];
                        request.copy_from_slice(&id[1..]);
                        index.tail_requests.insert(request, serial);
                    }
                    let supersede = id[0] & SUPERSEDES != 0;
                    let slot = Slot { record: (payload_at + 17, record.len() as u32), der: None, supersede };
                    index.tail.insert(serial, slot);
                }
                ISSUED => {
                    let serial = payload.get(..16).and_then(Serial::from_bytes).ok_or_else(|| backend("bad serial"))?;
                    index.set_issued(&serial, (payload_at + 16, (payload.len() - 16) as u32))?;
                }
                CRL_NUMBER => {
                    let n = payload.try_into().map(u64::from_be_bytes).map_err(|_| backend("bad CRL number"))?;
                    index.crl_number = index.crl_number.max(n);
                }
                AUDIT_CHECKPOINT => index.checkpoint = Some((payload.to_vec(), (payload_at, payload.len() as u32))),
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
            let mut sum = [0u8; 8];
            sum.copy_from_slice(&checksum(kind, payload));
            index.last_frame = (offset, sum);
            offset += taken;
        }
        if len != offset {
            // A record cut off by a crash was never acknowledged: drop it.
            tracing_free_warning(path, len - offset);
            index.file.set_len(offset).map_err(backend)?;
            index.file.sync_all().map_err(backend)?;
        }
        index.end = offset;
        Ok(index.base.is_some())
    }

    /// The index, with a new index file put in place if one was finished meanwhile.
    fn lock(&self) -> MutexGuard<'_, Index> {
        let mut index = self.lock_index();
        let finished = self.merged.lock().unwrap_or_else(PoisonError::into_inner).take();
        match finished {
            None => {}
            Some(Ok(base)) => {
                index.base = Some(Arc::new(base));
                index.frozen = None;
            }
            Some(Err(e)) => {
                // The records stay in memory (tail entries are newer where both have one); the
                // next checkpoint tries again.
                eprintln!("ledger {}: writing the index failed: {e}", self.path.display());
                if let Some(frozen) = index.frozen.take() {
                    for (serial, slot) in &frozen.slots {
                        index.tail.entry(*serial).or_insert(*slot);
                    }
                    for (request, serial) in &frozen.requests {
                        index.tail_requests.entry(*request).or_insert(*serial);
                    }
                }
            }
        }
        index
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records kept in memory before the next index checkpoint.
    fn tail_limit(&self, index: &Index) -> usize {
        match self.tail_limit.load(Ordering::Relaxed) {
            0 => {
                let base = index.base.as_ref().map_or(0, |b| b.entries());
                usize::try_from(base / 32).unwrap_or(MAX_TAIL).clamp(MIN_TAIL, MAX_TAIL)
            }
            n => n,
        }
    }

    /// For tests and benchmarks: checkpoint the index every `n` records instead.
    pub fn set_checkpoint_every(&self, n: usize) {
        self.tail_limit.store(n.max(1), Ordering::Relaxed);
    }

    /// Waits for an index checkpoint being written (tests and benchmarks).
    pub fn wait_checkpoint(&self) {
        let running = self.merging.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = running {
            let _ = handle.join();
        }
        drop(self.lock());
    }

    /// Starts writing a new index file in the background when the tail is long enough (or
    /// `now`, with any tail) and no checkpoint is running: the tail moves to the frozen part,
    /// the thread merges it with the old file (once the ledger is on disk up to the covered
    /// offset), and [`Self::lock`] puts the new file in place.
    fn maybe_checkpoint(&self, index: &mut Index, now: bool) {
        let due = index.tail.len() >= self.tail_limit(index) || (now && !index.tail.is_empty());
        if index.frozen.is_some() || !due {
            return;
        }
        let mut slots: Vec<(Serial, Slot)> = index.tail.drain().collect();
        slots.sort_unstable_by_key(|s| s.0);
        let mut requests: Vec<([u8; 16], Serial)> = index.tail_requests.drain().collect();
        requests.sort_unstable_by_key(|r| r.0);
        let frozen = Arc::new(Frozen { slots, requests });
        index.frozen = Some(frozen.clone());
        let covered = Covered {
            end: index.end,
            last_frame: index.last_frame,
            crl_number: index.crl_number,
            checkpoint: index.checkpoint.as_ref().map(|(_, at)| *at),
        };
        let (base, merged, index_path) = (index.base.clone(), self.merged.clone(), self.index_path.clone());
        let ledger = self.syncer.try_clone();
        let synced = self.synced;
        let handle = std::thread::Builder::new().name("ledger-index".into()).spawn(move || {
            let written = ledger
                .and_then(|ledger| if synced { ledger.sync_data() } else { Ok(()) })
                .and_then(|()| {
                    crate::ledger_index::write(&index_path, base.as_deref(), &frozen.slots, &frozen.requests, covered)
                })
                .and_then(|()| {
                    Base::open(&index_path)?.ok_or_else(|| std::io::Error::other("the new index reads back wrong"))
                });
            *merged.lock().unwrap_or_else(PoisonError::into_inner) = Some(written.map_err(|e| e.to_string()));
        });
        match handle {
            Ok(handle) => {
                let previous = self.merging.lock().unwrap_or_else(PoisonError::into_inner).replace(handle);
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(e) => *self.merged.lock().unwrap_or_else(PoisonError::into_inner) = Some(Err(e.to_string())),
        }
    }

    /// Appends a frame under the lock; returns the offset of its payload.
    fn append(index: &mut Index, kind: u8, payload: &[u8]) -> Result<u64, RegistryError> {
        let bytes = frame(kind, payload);
        index.file.write_all(&bytes).map_err(backend)?;
        let payload_at = index.end + 13;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[4..12]);
        index.last_frame = (index.end, sum);
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

    fn read_at(&self, at: (u64, u32)) -> Result<Vec<u8>, RegistryError> {
        let mut buf = vec![0u8; at.1 as usize];
        self.reader.read_exact_at(&mut buf, at.0).map_err(backend)?;
        Ok(buf)
    }

    /// The issuance record `slot` points at, with its state.
    fn record_at(&self, slot: &Slot) -> Result<CertRecord, RegistryError> {
        let mut record = decode_record(b"ledger", &self.read_at(slot.record)?)?;
        record.state = if slot.der.is_some() { State::Issued } else { State::Pending };
        Ok(record)
    }

    /// Records held in memory: those since the last index checkpoint (benchmarks and tests).
    pub fn in_memory(&self) -> usize {
        let index = self.lock();
        index.tail.len() + index.frozen.as_ref().map_or(0, |f| f.slots.len())
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
        let mut reader = BufReader::with_capacity(64 << 10, ReadAt::new(&self.reader, after, end));
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
        let slot = self.lock().slot(serial)?;
        let Some(slot) = slot else { return Ok(None) };
        let Some(der) = slot.der else { return Ok(None) };
        Ok(Some(LedgerEntry {
            at: der.0,
            record: self.record_at(&slot)?,
            der: self.read_at(der)?,
            supersede: slot.supersede,
        }))
    }

    /// Every issuance recorded, in no particular order (for checks and tests: it reads them
    /// all).
    pub fn records(&self) -> Result<Vec<CertRecord>, RegistryError> {
        let (tail, frozen, base) = {
            let index = self.lock();
            (index.tail.clone(), index.frozen.clone(), index.base.clone())
        };
        let mut all: HashMap<Serial, Slot> = HashMap::new();
        if let Some(base) = &base {
            for entry in base.slots() {
                let (serial, slot) = entry.map_err(backend)?;
                all.insert(serial, slot);
            }
        }
        all.extend(frozen.iter().flat_map(|f| f.slots.iter().copied()));
        all.extend(tail);
        all.values().map(|slot| self.record_at(slot)).collect()
    }

    /// The certificate recorded for `serial`, once issued.
    pub fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
        let slot = self.lock().slot(serial)?;
        slot.and_then(|s| s.der).map(|at| self.read_at(at)).transpose()
    }
}

impl Drop for LogLedger {
    fn drop(&mut self) {
        // An index being written holds the ledger's lock (a clone of its file): finished
        // before the ledger is let go, so it can be opened again at once.
        let running = self.merging.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = running {
            let _ = handle.join();
        }
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
            let at = Self::append(&mut index, AUDIT_CHECKPOINT, doc)?;
            index.checkpoint = Some((doc.to_vec(), (at, doc.len() as u32)));
        }
        self.durable()
    }

    fn latest_checkpoint(&self) -> Option<Vec<u8>> {
        self.lock().checkpoint.as_ref().map(|(doc, _)| doc.clone())
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
        let encoded = encode_record(record)?;
        payload.extend_from_slice(&encoded);
        {
            let mut index = self.lock();
            if index.slot(&record.serial)?.is_some() {
                return Err(RegistryError::SerialTaken(record.serial));
            }
            let at = Self::append(&mut index, PENDING, &payload)?;
            let slot = Slot { record: (at + 17, encoded.len() as u32), der: None, supersede };
            index.tail.insert(record.serial, slot);
            if let Some(id) = request_id {
                index.tail_requests.insert(*id, record.serial);
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
            match index.slot(serial)? {
                None => return Err(RegistryError::NotFound(*serial)),
                Some(slot) if slot.der.is_some() => {
                    return Err(RegistryError::WrongState { serial: *serial, status: "issued" });
                }
                Some(_) => {}
            }
            let at = Self::append(&mut index, ISSUED, &payload)?;
            index.set_issued(serial, (at + 16, der.len() as u32))?;
            self.maybe_checkpoint(&mut index, false);
        }
        self.durable()
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        let slot = {
            let index = self.lock();
            match index.request(request_id)? {
                Some(serial) => index.slot(&serial)?,
                None => None,
            }
        };
        match slot {
            None => Ok(None),
            Some(slot) => Ok(Some((self.record_at(&slot)?, slot.der.map(|at| self.read_at(at)).transpose()?))),
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
        let slot = self.lock().slot(serial)?;
        slot.map(|slot| self.record_at(&slot)).transpose()
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
        assert_eq!(ledger.records().expect("records").len(), 2);
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

    fn numbered(n: u32) -> CertRecord {
        let mut r = record(1);
        let mut bytes = [0x11u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[0] = 0x40 | (bytes[0] & 0x3f);
        r.serial = Serial::from_random(bytes).expect("serial");
        r.account = format!("user{n}");
        r
    }

    fn request(n: u32) -> [u8; 16] {
        let mut id = [7u8; 16];
        id[12..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// Every lookup `ledger` answers for issuances 0..n: even ones issued (certificate "cert N"),
    /// odd ones pending; every third has a request id; those of 3 supersede.
    fn check_all(ledger: &LogLedger, n: u32) {
        for i in 0..n {
            let r = numbered(i);
            let found = ledger.lookup(&r.serial).expect("lookup").unwrap_or_else(|| panic!("{i} is recorded"));
            assert_eq!((found.serial, found.account.as_str()), (r.serial, r.account.as_str()), "{i}");
            let der = ledger.certificate_der(&r.serial).expect("der");
            if i % 2 == 0 {
                assert_eq!(found.state, State::Issued, "{i}");
                assert_eq!(der, Some(format!("cert {i}").into_bytes()), "{i}");
                let entry = ledger.entry(&r.serial).expect("entry").expect("issued");
                assert_eq!(entry.supersede, i % 3 == 0, "{i}");
            } else {
                assert_eq!((found.state, der), (State::Pending, None), "{i}");
            }
            if i % 3 == 0 {
                let (by_request, _) = ledger.find_request(&request(i)).expect("find").expect("by its request id");
                assert_eq!(by_request.serial, r.serial, "{i}");
            }
            assert!(matches!(ledger.record_pending(&r, None, false), Err(RegistryError::SerialTaken(_))), "{i}");
        }
        assert!(ledger.lookup(&numbered(n + 1).serial).expect("lookup").is_none());
        assert!(ledger.find_request(&request(n + 1)).expect("find").is_none());
    }

    fn issue(ledger: &LogLedger, from: u32, to: u32) {
        for i in from..to {
            let id = request(i);
            ledger.record_pending(&numbered(i), (i % 3 == 0).then_some(&id), i % 3 == 0).expect("pending");
            if i % 2 == 0 {
                ledger.record_issued(&numbered(i).serial, format!("cert {i}").as_bytes()).expect("issued");
            }
        }
    }

    #[test]
    fn the_index_file_answers_what_memory_did_and_a_start_replays_only_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.log");
        let index_file = dir.path().join("ledger.idx");
        {
            let ledger = LogLedger::open_with(&path, false).expect("open");
            ledger.set_checkpoint_every(100);
            issue(&ledger, 0, 1000);
            // A pending issuance whose certificate comes after a checkpoint has frozen it.
            ledger.record_pending(&numbered(5000), None, false).expect("pending before");
            issue(&ledger, 1000, 1300);
            ledger.record_issued(&numbered(5000).serial, b"late").expect("issued after the checkpoint");
            ledger.next_crl_number().expect("crl");
            ledger.record_checkpoint(b"{\"audit\":1}").expect("audit");
            ledger.wait_checkpoint();
            // Checkpoints every 100 records; while one is written the tail grows on, so the
            // tail is some hundreds, not the 1301 records of an in-memory index.
            assert!(ledger.in_memory() < 650, "checkpointed: {} in memory", ledger.in_memory());
            check_all(&ledger, 1300);
        }
        assert!(index_file.exists());
        let ledger = LogLedger::open_with(&path, false).expect("reopen");
        assert!(ledger.in_memory() < 650, "a start replays the tail only: {}", ledger.in_memory());
        check_all(&ledger, 1300);
        assert_eq!(ledger.certificate_der(&numbered(5000).serial).expect("der").as_deref(), Some(&b"late"[..]));
        assert_eq!(ledger.next_crl_number().expect("crl"), 2, "the CRL number came back");
        assert_eq!(ledger.latest_checkpoint().as_deref(), Some(&b"{\"audit\":1}"[..]));
        assert_eq!(ledger.records().expect("records").len(), 1301);
        let since = ledger.issued_since(0, None, 10_000).expect("since");
        assert_eq!(since.serials.len(), 651, "650 even of 1300, and the late one");
        drop(ledger);

        // An index that is not this ledger's (another ledger's, a damaged one, or one ahead of
        // a ledger restored from an older copy) is set aside: the whole ledger is replayed.
        let good_index = std::fs::read(&index_file).expect("index");
        let other = dir.path().join("other.log");
        {
            let ledger = LogLedger::open_with(&other, false).expect("other");
            ledger.set_checkpoint_every(10);
            issue(&ledger, 2000, 2050);
            ledger.wait_checkpoint();
        }
        std::fs::copy(dir.path().join("other.idx"), &index_file).expect("swap in another index");
        let ledger = LogLedger::open_with(&path, false).expect("with another ledger's index");
        check_all(&ledger, 1300);
        drop(ledger);
        // ... and replaced by this ledger's own at that start.
        assert!(LogLedger::open_with(&path, false).expect("reopen").in_memory() < 650);
        let mut damaged = good_index.clone();
        damaged[20] ^= 1;
        std::fs::write(&index_file, &damaged).expect("damage");
        check_all(&LogLedger::open_with(&path, false).expect("with a damaged index"), 1300);
        std::fs::write(&index_file, &good_index[..good_index.len() - 3]).expect("short");
        check_all(&LogLedger::open_with(&path, false).expect("with a short index"), 1300);
        let ledger_bytes = std::fs::read(&path).expect("ledger");
        std::fs::write(&index_file, &good_index).expect("put back");
        let cut = good_index[12..20].try_into().map(u64::from_be_bytes).expect("covered") as usize - 40;
        std::fs::write(&path, &ledger_bytes[..cut]).expect("an older ledger");
        let older = LogLedger::open_with(&path, false).expect("an index ahead of the ledger");
        assert!(older.records().expect("records").len() < 1301);
        assert!(older.lookup(&numbered(0).serial).expect("lookup").is_some());
    }

    #[test]
    fn a_record_of_an_unknown_kind_is_refused_not_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.log");
        LogLedger::open_with(&path, false).expect("open").record_pending(&record(1), None, false).expect("pending");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&frame(99, b"from a newer inkan")).expect("write");
        drop(file);
        let before = std::fs::read(&path).expect("read");
        let refused = LogLedger::open_with(&path, false).expect_err("refused");
        assert!(refused.to_string().contains("kind 99") && refused.to_string().contains("newer inkan"), "{refused}");
        assert_eq!(std::fs::read(&path).expect("read"), before, "nothing was cut");
    }
}
