//! The signer ledger's index on disk: where each serial's records are, which serial each request
//! id took, the CRL number and the latest audit checkpoint, as of a ledger offset it covers.
//!
//! A start reads this file's header and fences (about 1/128 of a byte per certificate) and
//! replays only the ledger beyond the covered offset; a lookup reads one block of the file. The
//! ledger stays the record: the index is rebuilt from it when missing, damaged, or not this
//! ledger's (the frame at the covered offset's end is checked against the index's copy of its
//! checksum), and a new index is written beside the old one and renamed over it (a crash leaves
//! one or the other).
//!
//! File: a 96-byte header (magic, version, ledger offset covered, the last covered frame's offset
//! and checksum, entry and request counts, CRL number, audit checkpoint's location, header
//! checksum), the serial table ([`SLOT_LEN`] bytes an entry, sorted by serial), the request table
//! (request id then serial, sorted by request id), then every [`BLOCK`]th key of each table.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use pki::Serial;

const MAGIC: &[u8; 8] = b"inkanidx";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 96;
/// Bytes of one serial-table entry: serial, pending record (offset, length), certificate
/// (offset, length; 0 while pending), flags.
pub(crate) const SLOT_LEN: usize = 16 + 8 + 4 + 8 + 4 + 1;
/// Bytes of one request-table entry: request id, serial.
const REQUEST_LEN: usize = 32;
/// Entries between two fences: a lookup reads one block of this many entries.
const BLOCK: usize = 128;

const SUPERSEDES: u8 = 1;

/// Where one serial's records are in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The pending record's payload (the encoded [`pki::registry::CertRecord`]).
    pub record: (u64, u32),
    /// The certificate's DER, once issued.
    pub der: Option<(u64, u32)>,
    /// Whether it supersedes the account's other certificates.
    pub supersede: bool,
}

impl Slot {
    fn encode(&self, serial: &Serial, out: &mut Vec<u8>) {
        out.extend_from_slice(serial.as_bytes());
        out.extend_from_slice(&self.record.0.to_be_bytes());
        out.extend_from_slice(&self.record.1.to_be_bytes());
        let der = self.der.unwrap_or((0, 0));
        out.extend_from_slice(&der.0.to_be_bytes());
        out.extend_from_slice(&der.1.to_be_bytes());
        out.push(if self.supersede { SUPERSEDES } else { 0 });
    }

    fn decode(bytes: &[u8]) -> Option<(Serial, Slot)> {
        let serial = Serial::from_bytes(bytes.get(..16)?)?;
        let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        let record = (u64_at(16)?, u32_at(24)?);
        let der = (u64_at(28)?, u32_at(36)?);
        let flags = *bytes.get(40)?;
        Some((serial, Slot { record, der: (der.1 > 0).then_some(der), supersede: flags & SUPERSEDES != 0 }))
    }
}

/// What the index holds besides its tables, as of the offset it covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Covered {
    /// The ledger's bytes the index accounts for.
    pub end: u64,
    /// The last frame before `end`: its offset and checksum (whose ledger this is).
    pub last_frame: (u64, [u8; 8]),
    pub crl_number: u64,
    /// The latest audit checkpoint's payload in the ledger.
    pub checkpoint: Option<(u64, u32)>,
}

/// An index file, open for lookups.
pub(crate) struct Base {
    file: File,
    pub covered: Covered,
    entries: u64,
    requests: u64,
    serial_fences: Vec<[u8; 16]>,
    request_fences: Vec<[u8; 16]>,
}

fn fence_count(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64)
}

fn header_checksum(header: &[u8]) -> [u8; 8] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, header);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.as_ref()[..8]);
    out
}

impl Base {
    /// The index at `path`; `None` if there is none, an error if it is not a whole index of
    /// this version (the caller then replays the ledger from its start). Whether it belongs to
    /// the ledger is the caller's check ([`Covered::last_frame`]).
    pub fn open(path: &Path) -> std::io::Result<Option<Base>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut header = [0u8; HEADER_LEN as usize];
        if file.read_exact_at(&mut header, 0).is_err() {
            return Err(invalid("shorter than its header"));
        }
        let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap_or_default());
        if &header[..8] != MAGIC || u32_at(8) != VERSION || header_checksum(&header[..88]) != header[88..96] {
            return Err(invalid("its header is not that of an index of this version, or is damaged"));
        }
        let mut frame_sum = [0u8; 8];
        frame_sum.copy_from_slice(&header[28..36]);
        let checkpoint = (u64_at(60), u32_at(68));
        let covered = Covered {
            end: u64_at(12),
            last_frame: (u64_at(20), frame_sum),
            crl_number: u64_at(52),
            checkpoint: (checkpoint.1 > 0).then_some(checkpoint),
        };
        let (entries, requests) = (u64_at(36), u64_at(44));
        let tables = entries * SLOT_LEN as u64 + requests * REQUEST_LEN as u64;
        let fences = (fence_count(entries) + fence_count(requests)) * 16;
        if file.metadata()?.len() != HEADER_LEN + tables + fences {
            return Err(invalid("its length is not what its header says (cut short or grown)"));
        }
        let mut raw = vec![0u8; fences as usize];
        file.read_exact_at(&mut raw, HEADER_LEN + tables)?;
        let mut keys = raw.chunks_exact(16).map(|k| <[u8; 16]>::try_from(k).unwrap_or_default());
        let serial_fences = keys.by_ref().take(fence_count(entries) as usize).collect();
        let request_fences = keys.collect();
        Ok(Some(Base { file, covered, entries, requests, serial_fences, request_fences }))
    }

    /// Binary search of one table: the block that may hold `key`, read, then searched.
    fn find(
        &self,
        key: &[u8; 16],
        fences: &[[u8; 16]],
        table_at: u64,
        count: u64,
        len: usize,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let block = match fences.partition_point(|fence| fence <= key) {
            0 => return Ok(None),
            n => n - 1,
        };
        let first = (block * BLOCK) as u64;
        let n = (count - first).min(BLOCK as u64) as usize;
        let mut buf = vec![0u8; n * len];
        self.file.read_exact_at(&mut buf, table_at + first * len as u64)?;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let entry = &buf[mid * len..(mid + 1) * len];
            match entry[..16].cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(entry.to_vec())),
            }
        }
        Ok(None)
    }

    /// Where `serial`'s records are, if the index has it.
    pub fn slot(&self, serial: &Serial) -> std::io::Result<Option<Slot>> {
        let found = self.find(serial.as_bytes(), &self.serial_fences, HEADER_LEN, self.entries, SLOT_LEN)?;
        Ok(found.and_then(|bytes| Slot::decode(&bytes)).map(|(_, slot)| slot))
    }

    /// The serial `request` took, if the index has it.
    pub fn request(&self, request: &[u8; 16]) -> std::io::Result<Option<Serial>> {
        let found = self.find(request, &self.request_fences, self.requests_at(), self.requests, REQUEST_LEN)?;
        Ok(found.and_then(|bytes| Serial::from_bytes(&bytes[16..])))
    }

    /// Where the request table starts (after the serial table).
    fn requests_at(&self) -> u64 {
        HEADER_LEN + self.entries * SLOT_LEN as u64
    }

    /// How many serials the index has.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Every entry of the serial table, in order.
    pub fn slots(&self) -> impl Iterator<Item = std::io::Result<(Serial, Slot)>> + '_ {
        table(&self.file, HEADER_LEN, self.entries, SLOT_LEN)
            .map(|bytes| bytes.and_then(|b| Slot::decode(&b).ok_or_else(|| corrupt("a serial-table entry"))))
    }

    fn request_entries(&self) -> impl Iterator<Item = std::io::Result<([u8; 16], Serial)>> + '_ {
        table(&self.file, self.requests_at(), self.requests, REQUEST_LEN).map(|bytes| {
            bytes.and_then(|b| {
                let id: [u8; 16] = b[..16].try_into().unwrap_or_default();
                Serial::from_bytes(&b[16..]).map(|s| (id, s)).ok_or_else(|| corrupt("a request-table entry"))
            })
        })
    }
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a whole index: {why}"))
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("ledger index: {what} is not valid"))
}

/// The `count` entries of `len` bytes from `at`, read in large sequential chunks.
fn table(file: &File, at: u64, count: u64, len: usize) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + '_ {
    let mut reader = BufReader::with_capacity(1 << 20, ReadAt::new(file, at, at + count * len as u64));
    (0..count).map(move |_| {
        let mut entry = vec![0u8; len];
        reader.read_exact(&mut entry).map(|()| entry)
    })
}

/// Merges two sorted streams by key; on equal keys the newer one's entry wins.
fn merge<K: Ord + Copy, V>(
    older: impl Iterator<Item = std::io::Result<(K, V)>>,
    newer: impl Iterator<Item = (K, V)>,
    mut emit: impl FnMut(K, V) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut older = older.peekable();
    let mut newer = newer.peekable();
    let mut n = 0;
    loop {
        // Which side goes next: Less, the older; Greater, the newer; Equal, the newer (and the
        // older one is dropped).
        let order = match (older.peek(), newer.peek()) {
            (None, None) => return Ok(n),
            (Some(Err(_)), _) => None,
            (Some(Ok((a, _))), Some((b, _))) => Some(a.cmp(b)),
            (None, Some(_)) => Some(std::cmp::Ordering::Greater),
            (Some(Ok(_)), None) => Some(std::cmp::Ordering::Less),
        };
        let (k, v) = match order {
            None | Some(std::cmp::Ordering::Less) => older.next().ok_or_else(|| corrupt("the merge"))??,
            Some(std::cmp::Ordering::Equal) => {
                older.next();
                newer.next().ok_or_else(|| corrupt("the merge"))?
            }
            Some(std::cmp::Ordering::Greater) => newer.next().ok_or_else(|| corrupt("the merge"))?,
        };
        emit(k, v)?;
        n += 1;
    }
}

/// Writes a new index at `path`: `old`'s tables with `slots` and `requests` (sorted, newer than
/// `old`'s) merged in, covering the ledger up to `covered`. Written beside `path`, synced, then
/// renamed over it.
pub(crate) fn write(
    path: &Path,
    old: Option<&Base>,
    slots: &[(Serial, Slot)],
    requests: &[([u8; 16], Serial)],
    covered: Covered,
) -> std::io::Result<()> {
    let tmp = path.with_extension("idx.new");
    let file = std::fs::OpenOptions::new().write(true).read(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    out.write_all(&[0u8; HEADER_LEN as usize])?;
    // Every BLOCKth key of each table, kept as the tables are written.
    let (mut serial_fences, mut request_fences) = (Vec::new(), Vec::new());
    let mut entry = Vec::with_capacity(SLOT_LEN);
    let mut n = 0usize;
    let entries = merge(old.into_iter().flat_map(Base::slots), slots.iter().copied(), |serial, slot| {
        if n.is_multiple_of(BLOCK) {
            serial_fences.extend_from_slice(serial.as_bytes());
        }
        n += 1;
        entry.clear();
        slot.encode(&serial, &mut entry);
        out.write_all(&entry)
    })?;
    let mut n = 0usize;
    let requests = merge(old.into_iter().flat_map(Base::request_entries), requests.iter().copied(), |id, serial| {
        if n.is_multiple_of(BLOCK) {
            request_fences.extend_from_slice(&id);
        }
        n += 1;
        out.write_all(&id)?;
        out.write_all(serial.as_bytes())
    })?;
    out.write_all(&serial_fences)?;
    out.write_all(&request_fences)?;
    out.flush()?;
    drop(out);
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&covered.end.to_be_bytes());
    header.extend_from_slice(&covered.last_frame.0.to_be_bytes());
    header.extend_from_slice(&covered.last_frame.1);
    header.extend_from_slice(&entries.to_be_bytes());
    header.extend_from_slice(&requests.to_be_bytes());
    header.extend_from_slice(&covered.crl_number.to_be_bytes());
    let checkpoint = covered.checkpoint.unwrap_or((0, 0));
    header.extend_from_slice(&checkpoint.0.to_be_bytes());
    header.extend_from_slice(&checkpoint.1.to_be_bytes());
    header.resize(88, 0);
    let sum = header_checksum(&header);
    header.extend_from_slice(&sum);
    file.write_all_at(&header, 0)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a file from `at` up to `end` without moving a shared file position.
pub(crate) struct ReadAt<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl<'a> ReadAt<'a> {
    pub(crate) fn new(file: &'a File, at: u64, end: u64) -> Self {
        Self { file, at, end }
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.end - self.at).unwrap_or(usize::MAX).min(buf.len());
        let n = self.file.read_at(&mut buf[..room], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
