//! The audit trail: `DATA_DIR/audit/audit.log`, one JSON object per line, each carrying the
//! SHA-256 of the line before it, so altering, removing or reordering a line breaks the chain
//! from there on.
//!
//! Several processes (the service, the signer, the CLI) may append to one log: each append
//! takes an exclusive lock on the file, reads the last line and writes the new one before
//! unlocking; syncs are shared by concurrent appenders. The chain shows a line altered,
//! removed or moved anywhere but at the very end: cutting lines off the end leaves a shorter
//! valid chain, which is why `inkan audit verify` prints the last hash, to be noted elsewhere.
//! No secret goes into an event: callers pass identifiers, never passwords,
//! passphrases, keys or tickets.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::Error;
use crate::durable::GroupCommit;

/// The hash a first line refers to.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// What happened (`login.success`, `certificate.issued`, ...).
    pub event: String,
    /// Who wrote it: `service`, `signer`, `cli`.
    pub source: String,
    /// Identifiers describing the event (login ID, serial, reason, ...).
    pub details: Map<String, Value>,
    /// SHA-256 of the previous line's bytes (without its newline), hex.
    pub prev: String,
}

/// An append-only, hash-chained log file.
pub struct AuditLog {
    path: PathBuf,
    source: &'static str,
    /// The open file; appends in this process take it in turn.
    file: Mutex<Option<File>>,
    /// Concurrent appenders share one `fsync`.
    group: GroupCommit,
    /// False only for benchmarks that measure what durability costs.
    synced: bool,
    /// Lines this process wrote without syncing them since the last sync.
    unsynced: AtomicBool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).field("source", &self.source).finish()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The last line of `file` (without newline), if any, reading at most the tail needed.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut window = 4096u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(pos) = body.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(body[pos + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
        window *= 4;
    }
}

impl AuditLog {
    /// The log of a data directory, written as `source`.
    pub fn new(data_dir: &Path, source: &'static str) -> Self {
        Self {
            path: data_dir.join("audit").join("audit.log"),
            source,
            file: Mutex::new(None),
            group: GroupCommit::default(),
            synced: true,
            unsynced: AtomicBool::new(false),
        }
    }

    /// Danger, for benchmarks only: appends are not synced to disk (a crash loses them).
    pub fn without_sync(mut self) -> Self {
        self.synced = false;
        self
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event durably (written and synced before returning; concurrent appends in
    /// this process share the sync).
    pub fn append(&self, event: &str, details: Value) -> Result<AuditLine, Error> {
        let (line, file) = self.write(event, details)?;
        if self.synced {
            self.group.wait_durable(|| file.sync_data().map_err(Error::io("syncing", &self.path)))?;
        }
        Ok(line)
    }

    /// Appends one event, written (a crash of this process keeps it) but not yet synced: for an
    /// event whose durable record is elsewhere (a certificate in the signer's ledger).
    /// [`AuditLog::sync`] makes it durable.
    pub fn append_deferred(&self, event: &str, details: Value) -> Result<AuditLine, Error> {
        let (line, _) = self.write(event, details)?;
        self.unsynced.store(true, Ordering::SeqCst);
        Ok(line)
    }

    /// Syncs the lines this process wrote with [`AuditLog::append_deferred`], if any.
    pub fn sync(&self) -> Result<(), Error> {
        if !self.unsynced.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.sync_file().inspect_err(|_| self.unsynced.store(true, Ordering::SeqCst))
    }

    /// Syncs the whole file, whoever wrote the lines (other processes share it): before a
    /// checkpoint covers them.
    pub fn sync_file(&self) -> Result<(), Error> {
        let file = match self.file.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(file) => file.try_clone().map_err(Error::io("opening", &self.path))?,
            None if self.path.exists() => File::open(&self.path).map_err(Error::io("opening", &self.path))?,
            None => return Ok(()),
        };
        if self.synced {
            self.group.wait_durable(|| file.sync_data().map_err(Error::io("syncing", &self.path)))?;
        }
        Ok(())
    }

    /// Writes one line (the file locked from reading the last line to writing ours); returns
    /// it and the file, to sync.
    fn write(&self, event: &str, details: Value) -> Result<(AuditLine, File), Error> {
        let (line, file) = {
            let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                if let Some(dir) = self.path.parent() {
                    crate::layout::create_private_dir(dir)?;
                }
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&self.path)
                    .map_err(Error::io("opening", &self.path))?;
                *slot = Some(file);
            }
            let Some(file) = slot.as_mut() else { unreachable!("opened above") };
            // Other processes append to the same file: hold its lock from reading the last
            // line to writing ours.
            file.lock().map_err(Error::io("locking", &self.path))?;
            let result = self.append_locked(file, event, details);
            let _ = file.unlock();
            (result?, file.try_clone().map_err(Error::io("opening", &self.path))?)
        };
        Ok((line, file))
    }

    fn append_locked(&self, file: &mut File, event: &str, details: Value) -> Result<AuditLine, Error> {
        let last = last_line(file).map_err(Error::io("reading", &self.path))?;
        let (seq, prev) = match &last {
            None => (1, GENESIS.to_owned()),
            Some(bytes) => {
                let previous: AuditLine = serde_json::from_slice(bytes).map_err(|e| {
                    Error::Store(format!(
                        "the last line of {} is not an audit line ({e}); run `inkan audit verify`",
                        self.path.display()
                    ))
                })?;
                (previous.seq + 1, sha256_hex(bytes))
            }
        };
        let now = OffsetDateTime::now_utc();
        let line = AuditLine {
            seq,
            time: now.replace_nanosecond(0).unwrap_or(now),
            event: event.to_owned(),
            source: self.source.to_owned(),
            details: match details {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                other => Map::from_iter([("value".to_owned(), other)]),
            },
            prev,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| Error::Store(e.to_string()))?;
        bytes.push(b'\n');
        file.write_all(&bytes).map_err(Error::io("appending to", &self.path))?;
        Ok(line)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every line chains to the one before; `lines` were checked.
    Intact {
        /// How many lines.
        lines: u64,
    },
    /// The first line that does not chain.
    Broken {
        /// 1-based line number in the file.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks the whole chain of the log at `path`.
pub fn verify(path: &Path) -> Result<Verdict, Error> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1u64;
    let mut number = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(Error::io("reading", path))?;
        if read == 0 {
            return Ok(Verdict::Intact { lines: number });
        }
        number += 1;
        let broken = |reason: String| Ok(Verdict::Broken { line: number, reason });
        let Some(bytes) = buf.strip_suffix(b"\n") else {
            return broken("the line is cut off (no newline): a write was interrupted or the file truncated".into());
        };
        let line: AuditLine = match serde_json::from_slice(bytes) {
            Ok(line) => line,
            Err(e) => return broken(format!("not an audit line: {e}")),
        };
        if line.prev != prev {
            return broken(
                "its prev hash does not match the line before: a line was altered, removed or reordered".into(),
            );
        }
        if line.seq != expected_seq {
            return broken(format!("sequence {} where {expected_seq} was expected", line.seq));
        }
        prev = sha256_hex(bytes);
        expected_seq += 1;
    }
}

/// Reads the log's lines (all, or the last `n`).
pub fn read(path: &Path, last: Option<usize>) -> Result<Vec<String>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", path)(e)),
    };
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let skip = last.map_or(0, |n| lines.len().saturating_sub(n));
    Ok(lines.into_iter().skip(skip).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_detects_alteration_removal_and_reordering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path(), "test");
        for i in 0..5 {
            log.append("login.success", json!({ "login_id": format!("user{i}") })).expect("append");
        }
        assert_eq!(verify(log.path()).expect("verify"), Verdict::Intact { lines: 5 });
        let original = std::fs::read_to_string(log.path()).expect("read");
        let lines: Vec<&str> = original.lines().collect();

        let write = |lines: &[String]| std::fs::write(log.path(), lines.join("\n") + "\n").expect("write");
        let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();

        let mut altered = owned.clone();
        altered[2] = altered[2].replace("user2", "user9");
        write(&altered);
        assert!(
            matches!(verify(log.path()).expect("verify"), Verdict::Broken { line: 4, .. }),
            "the next line no longer chains"
        );

        let mut removed = owned.clone();
        removed.remove(1);
        write(&removed);
        assert!(matches!(verify(log.path()).expect("verify"), Verdict::Broken { line: 2, .. }));

        let mut swapped = owned.clone();
        swapped.swap(3, 4);
        write(&swapped);
        assert!(matches!(verify(log.path()).expect("verify"), Verdict::Broken { line: 4, .. }));

        let mut last_removed = owned.clone();
        last_removed.pop();
        write(&last_removed);
        assert_eq!(verify(log.path()).expect("verify"), Verdict::Intact { lines: 4 }, "a shorter but whole chain");

        write(&owned);
        log.append("logout", json!({})).expect("append after restore");
        assert_eq!(verify(log.path()).expect("verify"), Verdict::Intact { lines: 6 });
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::thread::scope(|s| {
            for t in 0..4 {
                let dir = dir.path();
                s.spawn(move || {
                    let log = AuditLog::new(dir, "test");
                    for i in 0..25 {
                        log.append("event", json!({ "thread": t, "i": i })).expect("append");
                    }
                });
            }
        });
        assert_eq!(verify(&dir.path().join("audit/audit.log")).expect("verify"), Verdict::Intact { lines: 100 });
    }
}
