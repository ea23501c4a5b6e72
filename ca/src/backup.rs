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
fn is_key(dir: &DataDir, path: &Path) -> bool {
    let keys = [dir.root_key(), dir.ca_key(), dir.server_key(), dir.otp_key(), dir.ocsp_key()];
    if !keys.iter().any(|k| k == path) {
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
            } else if kind.is_file() && path != dir.serve_lock() && (include_keys || !is_key(dir, &path)) {
                out.push(path.strip_prefix(dir.path()).unwrap_or(&path).to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The ledger's whole records (a record being appended is left out).
fn ledger_prefix(path: &Path) -> Result<Vec<u8>, Error> {
    match fs::read(path) {
        Ok(bytes) => {
            let keep = crate::ledger::whole_records(&bytes);
            Ok(bytes[..keep].to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// The audit trail's whole lines.
fn audit_prefix(path: &Path) -> Result<(Vec<u8>, u64), Error> {
    match fs::read(path) {
        Ok(mut bytes) => {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(keep);
            let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            Ok((bytes, lines))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), 0)),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    pki::encoding::hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Writes the archive of `dir` to `out` (a new file, 0600). `stores` are the exports of the
/// sled stores, made first (by the running service, or by the caller on a stopped one).
pub fn write_archive(
    dir: &DataDir,
    stores: &[StoreExport],
    include_keys: bool,
    now: time::OffsetDateTime,
    out: &Path,
) -> Result<Manifest, Error> {
    let mut contents: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let mut store_counts = BTreeMap::new();
    for store in stores {
        let bytes = fs::read(&store.path).map_err(Error::io("reading", &store.path))?;
        contents.push((format!("stores/{}.export", store.name), bytes, 0o600));
        store_counts.insert(store.name.clone(), store.counts.clone());
    }
    let ledger = ledger_prefix(&dir.ledger())?;
    let ledger_bytes = ledger.len() as u64;
    contents.push((relative(dir, &dir.ledger()), ledger, 0o600));
    let (audit, audit_lines) = audit_prefix(&dir.audit_log())?;
    contents.push((relative(dir, &dir.audit_log()), audit, 0o600));
    for path in data_files(dir, include_keys)? {
        let full = dir.path().join(&path);
        let bytes = fs::read(&full).map_err(Error::io("reading", &full))?;
        let mode = fs::metadata(&full).map_err(Error::io("reading", &full))?.permissions().mode();
        let mode = if mode & 0o044 != 0 { 0o644 } else { 0o600 };
        contents.push((path.to_string_lossy().into_owned(), bytes, mode));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created: pki::encoding::rfc3339(now),
        inkan_version: env!("CARGO_PKG_VERSION").into(),
        include_keys,
        files: contents
            .iter()
            .map(|(path, bytes, mode)| FileEntry {
                path: path.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
                mode: *mode,
            })
            .collect(),
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
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut append = |name: &str, bytes: &[u8]| -> Result<(), Error> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(u64::try_from(now.unix_timestamp()).unwrap_or(0));
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).map_err(Error::io("writing", &staged))
    };
    append(MANIFEST_HASH, format!("{}\n", sha256_hex(&manifest_json)).as_bytes())?;
    append(MANIFEST, &manifest_json)?;
    for (path, bytes, _) in &contents {
        append(path, bytes)?;
    }
    let writer = tar.into_inner().map_err(Error::io("writing", &staged))?;
    let file = writer.into_inner().map_err(|e| Error::io("writing", &staged)(e.into_error()))?;
    file.sync_all().map_err(Error::io("syncing", &staged))?;
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

/// Restores the archive at `from` into `dir`, which must be empty or not exist.
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
    let files = read_archive(from)?;
    let manifest = check(&files, from)?;

    layout::create_private_dir(dir.path())?;
    let staging = dir.path().join(".restore-staging");
    let result = (|| {
        layout::create_private_dir(&staging)?;
        let staged = DataDir::new(&staging);
        for entry in &manifest.files {
            let bytes = &files[&entry.path];
            if let Some(name) = entry.path.strip_prefix("stores/").and_then(|n| n.strip_suffix(".export")) {
                let target = match name {
                    "db" => staged.db(),
                    "web" => staged.web(),
                    other => return Err(refuse(format!("unknown store {other:?} in the archive"))),
                };
                let counts = import_sled(bytes, &target)?;
                if manifest.stores.get(name) != Some(&counts) {
                    return Err(refuse(format!(
                        "store {name}: the records read back differ from the manifest's counts"
                    )));
                }
                continue;
            }
            let target = staging.join(&entry.path);
            if let Some(parent) = target.parent() {
                layout::create_private_dir(parent)?;
            }
            layout::write_new(&target, bytes, if entry.mode == 0o644 { 0o644 } else { 0o600 })?;
        }
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

/// Every member of the archive, by name; refuses anything but plain files with safe names.
fn read_archive(from: &Path) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let refuse = |detail: String| Error::Backup { detail: format!("{}: {detail}", from.display()) };
    let file = fs::File::open(from).map_err(Error::io("opening", from))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = BTreeMap::new();
    let entries = archive.entries().map_err(|e| refuse(format!("not a tar archive: {e}")))?;
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
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| refuse(format!("{name} is cut off: {e}")))?;
        if files.insert(name.clone(), bytes).is_some() {
            return Err(refuse(format!("{name} is in the archive twice")));
        }
    }
    Ok(files)
}

/// Checks the manifest's hash, then every file against it; returns the manifest.
fn check(files: &BTreeMap<String, Vec<u8>>, from: &Path) -> Result<Manifest, Error> {
    let refuse = |detail: String| Error::Backup { detail: format!("{}: {detail}", from.display()) };
    let (Some(hash), Some(json)) = (files.get(MANIFEST_HASH), files.get(MANIFEST)) else {
        return Err(refuse("no manifest: not an inkan backup, or cut off".into()));
    };
    if String::from_utf8_lossy(hash).trim() != sha256_hex(json) {
        return Err(refuse("the manifest does not match its SHA-256: the archive was changed".into()));
    }
    let manifest: Manifest =
        serde_json::from_slice(json).map_err(|e| refuse(format!("the manifest is not readable: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!("format {:?}; this inkan reads {FORMAT:?}", manifest.format)));
    }
    for entry in &manifest.files {
        let Some(bytes) = files.get(&entry.path) else {
            return Err(refuse(format!("{} is missing: the archive is partial", entry.path)));
        };
        if bytes.len() as u64 != entry.size || sha256_hex(bytes) != entry.sha256 {
            return Err(refuse(format!(
                "{} does not match its SHA-256 in the manifest: the archive is damaged",
                entry.path
            )));
        }
    }
    let listed = manifest.files.len() + 2;
    if files.len() != listed {
        return Err(refuse(format!("{} members where the manifest lists {listed}", files.len())));
    }
    Ok(manifest)
}
