//! Backup and restore of a data directory: one tar archive with a manifest (SHA-256 and size of
//! every file, the record count of every store tree) first.
//!
//! What goes in, in this order, so that every store is at least as new as the one before it in
//! the issuance order (ledger → audit line → registry): the sled stores (`db/`, `web/`), exported
//! tree by tree; then the signer's ledger, cut after its last whole record; then the audit trail,
//! cut after its last whole line; then the other files (configuration, CA and service
//! certificates, CRLs). Keys only with `include_keys`, as they are (encrypted PKCS#8 files);
//! a key in a PKCS#11 token stays there, and the file naming it is always kept. Passphrase files
//! (`dev-secrets/`), sockets and locks never.
//!
//! A restore goes into an empty directory through a staging directory: the manifest's own hash,
//! each file's hash and size, the store counts and the audit chain are checked before anything is
//! moved into place, so a damaged or partial archive leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::layout::{self, DataDir};
pub use crate::sled_export::{TreeCounts, export_sled, import_sled};
use crate::{Error, audit};

/// The archive's format name, in its manifest.
pub const FORMAT: &str = "inkan-backup-1";
const MANIFEST: &str = "manifest.json";
const MANIFEST_HASH: &str = "manifest.sha256";

/// One file in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its path in the data directory (`stores/NAME.export` for a store).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Its permission bits (0600 or 0644; nothing wider is restored).
    pub mode: u32,
}

/// What the archive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// The version of inkan that made it.
    pub inkan_version: String,
    /// Whether private keys are in it.
    pub include_keys: bool,
    /// Every file, in archive order.
    pub files: Vec<FileEntry>,
    /// Per store (`db`, `web`): the record count of each tree.
    pub stores: BTreeMap<String, TreeCounts>,
    /// Lines in the audit trail.
    pub audit_lines: u64,
    /// Bytes of the ledger kept (whole records).
    pub ledger_bytes: u64,
}

/// The stores of a running service, exported where the CLI can read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreExport {
    /// The store's name (`db`, `web`).
    pub name: String,
    /// The export file.
    pub path: PathBuf,
    /// Its trees' record counts.
    pub counts: TreeCounts,
}

/// Whether a data-directory file is a secret: kept only with `include_keys` (a key file that
/// names a token key is no secret).
/// Every `.key` file is one: the root's, each issuing-CA generation's, the OCSP responders',
/// the service's TLS and OTP sealing keys.
fn is_key(path: &Path) -> bool {
    if path.extension().is_none_or(|e| e != "key") {
        return false;
    }
    !matches!(crate::pkcs11::TokenKey::read(path), Ok(Some(_)))
}

/// The regular files of the data directory that go into a backup, sorted, relative paths.
fn data_files(dir: &DataDir, include_keys: bool) -> Result<Vec<PathBuf>, Error> {
    let skipped: Vec<PathBuf> =
        [dir.db(), dir.web(), dir.dev_secrets(), dir.snapshot_dir(), dir.ledger(), dir.audit_log()]
            .into_iter()
            .collect();
    let mut out = Vec::new();
    let mut pending = vec![dir.path().to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder).map_err(Error::io("reading", &folder))? {
            let entry = entry.map_err(Error::io("reading", &folder))?;
            let path = entry.path();
            let name = entry.file_name();
            if skipped.contains(&path) || name.to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(Error::io("reading", &path))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path != dir.serve_lock() && (include_keys || !is_key(&path)) {
                out.push(path.strip_prefix(dir.path()).unwrap_or(&path).to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The audit trail's whole lines now: their length in bytes and their count (read in chunks).
fn audit_prefix(path: &Path) -> Result<(u64, u64), Error> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io("reading", path)(e)),
    };
    let len = file.metadata().map_err(Error::io("reading", path))?.len();
    let mut reader = file.take(len);
    let (mut at, mut whole, mut lines) = (0u64, 0u64, 0u64);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut chunk).map_err(Error::io("reading", path))?;
        if n == 0 {
            return Ok((whole, lines));
        }
        for (i, _) in chunk[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            whole = at + i as u64 + 1;
            lines += 1;
        }
        at += n as u64;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    pki::encoding::hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    context: digest::Context,
    read: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self { inner, context: digest::Context::new(&digest::SHA256), read: 0 }
    }

    /// Reads what is left, then gives the size and SHA-256 (hex) of everything read.
    fn finish(mut self) -> std::io::Result<(u64, String)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.read, pki::encoding::hex(self.context.finish().as_ref())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// One member to write: the first `len` bytes of a file (a ledger or trail being appended to
/// keeps growing past them).
struct Member {
    name: String,
    path: PathBuf,
    len: u64,
    mode: u32,
}

impl Member {
    fn open(&self) -> Result<Hashing<std::io::Take<std::io::BufReader<fs::File>>>, Error> {
        let file = fs::File::open(&self.path).map_err(Error::io("reading", &self.path))?;
        Ok(Hashing::new(std::io::BufReader::new(file).take(self.len)))
    }
}

/// Writes the archive of `dir` to `out` (a new file, 0600). `stores` are the exports of the
/// sled stores, made first (by the running service, or by the caller on a stopped one). Every
/// member is read twice, a chunk at a time: once for the manifest, which comes first, once into
/// the archive, where its hash is checked again.
pub fn write_archive(
    dir: &DataDir,
    stores: &[StoreExport],
    include_keys: bool,
    now: time::OffsetDateTime,
    out: &Path,
) -> Result<Manifest, Error> {
    let size = |path: &Path| fs::metadata(path).map(|m| m.len()).map_err(Error::io("reading", path));
    let mut members = Vec::new();
    let mut store_counts = BTreeMap::new();
    for store in stores {
        let name = format!("stores/{}.export", store.name);
        members.push(Member { name, path: store.path.clone(), len: size(&store.path)?, mode: 0o600 });
        store_counts.insert(store.name.clone(), store.counts.clone());
    }
    let ledger_bytes =
        crate::ledger::whole_records(&dir.ledger()).map_err(|e| Error::Backup { detail: e.to_string() })?;
    if ledger_bytes > 0 {
        members.push(Member { name: relative(dir, &dir.ledger()), path: dir.ledger(), len: ledger_bytes, mode: 0o600 });
    }
    let (audit_bytes, audit_lines) = audit_prefix(&dir.audit_log())?;
    if audit_bytes > 0 {
        let name = relative(dir, &dir.audit_log());
        members.push(Member { name, path: dir.audit_log(), len: audit_bytes, mode: 0o600 });
    }
    for path in data_files(dir, include_keys)? {
        let full = dir.path().join(&path);
        let mode = fs::metadata(&full).map_err(Error::io("reading", &full))?.permissions().mode();
        let mode = if mode & 0o044 != 0 { 0o644 } else { 0o600 };
        members.push(Member { name: path.to_string_lossy().into_owned(), len: size(&full)?, path: full, mode });
    }
    let mut files = Vec::with_capacity(members.len());
    for member in &members {
        let (size, sha256) = member.open()?.finish().map_err(Error::io("reading", &member.path))?;
        if size != member.len {
            return Err(Error::Backup { detail: format!("{} changed while it was read", member.path.display()) });
        }
        files.push(FileEntry { path: member.name.clone(), size, sha256, mode: member.mode });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created: pki::encoding::rfc3339(now),
        inkan_version: env!("CARGO_PKG_VERSION").into(),
        include_keys,
        files,
        stores: store_counts,
        audit_lines,
        ledger_bytes,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Backup { detail: format!("encoding the manifest: {e}") })?;
    let staged = out.with_extension("partial");
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_private()
        .open(&staged)
        .map_err(Error::io("creating", &staged))?;
    let written = (|| {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let header = |size: u64| {
            let mut header = tar::Header::new_ustar();
            header.set_size(size);
            header.set_mode(0o600);
            header.set_mtime(u64::try_from(now.unix_timestamp()).unwrap_or(0));
            header.set_cksum();
            header
        };
        let hash_line = format!("{}\n", sha256_hex(&manifest_json));
        for (name, bytes) in [(MANIFEST_HASH, hash_line.as_bytes()), (MANIFEST, manifest_json.as_slice())] {
            tar.append_data(&mut header(bytes.len() as u64), name, bytes).map_err(Error::io("writing", &staged))?;
        }
        for (member, entry) in members.iter().zip(&manifest.files) {
            let mut reader = member.open()?;
            tar.append_data(&mut header(member.len), &member.name, &mut reader)
                .map_err(Error::io("writing", &staged))?;
            if reader.finish().map_err(Error::io("reading", &member.path))? != (entry.size, entry.sha256.clone()) {
                return Err(Error::Backup {
                    detail: format!("{} changed while the backup was written", member.path.display()),
                });
            }
        }
        let writer = tar.into_inner().map_err(Error::io("writing", &staged))?;
        let file = writer.into_inner().map_err(|e| Error::io("writing", &staged)(e.into_error()))?;
        file.sync_all().map_err(Error::io("syncing", &staged))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&staged);
        return Err(e);
    }
    fs::rename(&staged, out).map_err(Error::io("moving into place", out))?;
    Ok(manifest)
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn relative(dir: &DataDir, path: &Path) -> String {
    path.strip_prefix(dir.path()).unwrap_or(path).to_string_lossy().into_owned()
}

/// What a restore put in place.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Lines of the audit trail, checked.
    pub audit_lines: u64,
}

/// Restores the archive at `from` into `dir`, which must be empty or not exist. The archive is
/// read twice, a chunk at a time: first to check every member against the manifest, then into
/// the staging directory, checking each hash again.
pub fn restore(from: &Path, dir: &DataDir) -> Result<Restored, Error> {
    let refuse = |detail: String| Error::Backup { detail };
    if dir.path().exists() {
        let mut entries = fs::read_dir(dir.path()).map_err(Error::io("reading", dir.path()))?;
        if entries.next().is_some() {
            return Err(refuse(format!(
                "{} is not empty: restore only into a new or empty directory",
                dir.path().display()
            )));
        }
    }
    let manifest = check(from)?;
    let by_name: BTreeMap<&str, &FileEntry> = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();

    layout::create_private_dir(dir.path())?;
    let staging = dir.path().join(".restore-staging");
    let result = (|| {
        layout::create_private_dir(&staging)?;
        let staged = DataDir::new(&staging);
        each_member(from, |name, entry| {
            let Some(expected) = by_name.get(name) else { return Ok(()) };
            let mut reader = Hashing::new(entry);
            if let Some(store) = name.strip_prefix("stores/").and_then(|n| n.strip_suffix(".export")) {
                let target = match store {
                    "db" => staged.db(),
                    "web" => staged.web(),
                    other => return Err(refuse(format!("unknown store {other:?} in the archive"))),
                };
                let counts = import_sled(&mut reader, &target)?;
                if manifest.stores.get(store) != Some(&counts) {
                    return Err(refuse(format!(
                        "store {store}: the records read back differ from the manifest's counts"
                    )));
                }
            } else {
                let target = staging.join(name);
                if let Some(parent) = target.parent() {
                    layout::create_private_dir(parent)?;
                }
                let mode = if expected.mode == 0o644 { 0o644 } else { 0o600 };
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_private()
                    .open(&target)
                    .map_err(Error::io("creating", &target))?;
                std::io::copy(&mut reader, &mut file).map_err(Error::io("writing", &target))?;
                file.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io("writing", &target))?;
                file.sync_all().map_err(Error::io("syncing", &target))?;
            }
            let (size, sha256) = reader.finish().map_err(Error::io("reading", from))?;
            if (size, sha256.as_str()) != (expected.size, expected.sha256.as_str()) {
                return Err(refuse(format!("{}: {name} changed since it was checked", from.display())));
            }
            Ok(())
        })?;
        let audit_lines = if staged.audit_log().exists() {
            match audit::verify(&staged.audit_log())? {
                audit::Verdict::Intact { lines } if lines == manifest.audit_lines => lines,
                audit::Verdict::Intact { lines } => {
                    return Err(refuse(format!(
                        "the audit trail has {lines} lines, the manifest says {}",
                        manifest.audit_lines
                    )));
                }
                audit::Verdict::Broken { line, reason } => {
                    return Err(refuse(format!("the audit trail is broken at line {line}: {reason}")));
                }
            }
        } else {
            0
        };
        for entry in fs::read_dir(&staging).map_err(Error::io("reading", &staging))? {
            let entry = entry.map_err(Error::io("reading", &staging))?;
            let to = dir.path().join(entry.file_name());
            fs::rename(entry.path(), &to).map_err(Error::io("moving into place", &to))?;
        }
        fs::remove_dir(&staging).map_err(Error::io("removing", &staging))?;
        layout::sync_dir(dir.path())?;
        Ok(audit_lines)
    })();
    match result {
        Ok(audit_lines) => Ok(Restored { manifest, audit_lines }),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The largest manifest read (a million files' worth).
const MAX_MANIFEST: u64 = 256 << 20;

/// Runs `visit` on every member of the archive with its name, in order; refuses anything but
/// plain files with names that stay inside the data directory, and a name seen twice.
fn each_member(from: &Path, mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), Error>) -> Result<(), Error> {
    let refuse = |detail: String| Error::Backup { detail: format!("{}: {detail}", from.display()) };
    let file = fs::File::open(from).map_err(Error::io("opening", from))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = archive.entries().map_err(|e| refuse(format!("not a tar archive: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(format!("a damaged archive: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse("a member that is not a plain file".into()));
        }
        let path = entry.path().map_err(|e| refuse(format!("a member name: {e}")))?.into_owned();
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(refuse(format!("the member name {} leaves the data directory", path.display())));
        }
        let name = path.to_string_lossy().into_owned();
        if !seen.insert(name.clone()) {
            return Err(refuse(format!("{name} is in the archive twice")));
        }
        visit(&name, &mut entry).map_err(|e| match e {
            Error::Io { path, source, .. } if path == from => refuse(format!("{name} is cut off: {source}")),
            other => other,
        })?;
    }
    Ok(())
}

/// Reads the archive once: the manifest, checked against its hash, and every member's size
/// and hash against it; returns the manifest.
fn check(from: &Path) -> Result<Manifest, Error> {
    let refuse = |detail: String| Error::Backup { detail: format!("{}: {detail}", from.display()) };
    let (mut hash, mut json) = (None, None);
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    each_member(from, |name, entry| {
        let io = |e: std::io::Error| Error::io("reading", from)(e);
        if name == MANIFEST_HASH || name == MANIFEST {
            let mut bytes = Vec::new();
            entry.take(MAX_MANIFEST).read_to_end(&mut bytes).map_err(io)?;
            if name == MANIFEST { json = Some(bytes) } else { hash = Some(bytes) }
        } else {
            found.insert(name.to_owned(), Hashing::new(entry).finish().map_err(io)?);
        }
        Ok(())
    })?;
    let (Some(hash), Some(json)) = (hash, json) else {
        return Err(refuse("no manifest: not an inkan backup, or cut off".into()));
    };
    if String::from_utf8_lossy(&hash).trim() != sha256_hex(&json) {
        return Err(refuse("the manifest does not match its SHA-256: the archive was changed".into()));
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| refuse(format!("the manifest is not readable: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!("format {:?}; this inkan reads {FORMAT:?}", manifest.format)));
    }
    for entry in &manifest.files {
        match found.get(&entry.path) {
            None => return Err(refuse(format!("{} is missing: the archive is partial", entry.path))),
            Some((size, sha256)) if *size != entry.size || *sha256 != entry.sha256 => {
                return Err(refuse(format!(
                    "{} does not match its SHA-256 in the manifest: the archive is damaged",
                    entry.path
                )));
            }
            Some(_) => {}
        }
    }
    if found.len() != manifest.files.len() {
        return Err(refuse(format!(
            "{} members where the manifest lists {}",
            found.len() + 2,
            manifest.files.len() + 2
        )));
    }
    Ok(manifest)
}
