//! `inkan backup` and `inkan restore`: a data directory in one archive, and back.

use anyhow::Context;
use ca::SledStore;
use ca::backup::StoreExport;
use ca::layout::DataDir;
use enroll_server::admin::{AdminReply, AdminRequest, SnapshotStore};
use enroll_server::stores::sled::SledStores;

use crate::args::{BackupArgs, RestoreArgs};

/// Exports the registry and the web stores into a new directory under DATA_DIR/snapshot/ (the
/// web worker answers this while `serve` runs; the CLI itself otherwise).
pub(crate) fn snapshot_stores(
    dir: &DataDir,
    registry: &SledStore,
    web: &SledStores,
) -> Result<Vec<SnapshotStore>, String> {
    remove_stale(&dir.snapshot_dir());
    let folder = dir.snapshot_dir().join(pki::encoding::hex(&rand_bytes()));
    ca::layout::create_private_dir(&folder).map_err(|e| e.to_string())?;
    type Export<'a> = &'a dyn Fn(&mut std::io::BufWriter<std::fs::File>) -> Result<ca::backup::TreeCounts, ca::Error>;
    let write = |name: &str, export: Export<'_>| -> Result<SnapshotStore, String> {
        let path = folder.join(format!("{name}.export"));
        let file = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let counts = export(&mut out).map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(SnapshotStore { name: name.to_owned(), path, counts })
    };
    Ok(vec![write("db", &|out| registry.export(out))?, write("web", &|out| ca::backup::export_sled(web.db(), out))?])
}

/// Exports an hour old or more were left by a backup that died before it removed them.
fn remove_stale(snapshots: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(snapshots) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if old && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn rand_bytes() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
}

pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    super::require_ca(&dir)?;
    if args.out.exists() {
        anyhow::bail!("{} exists; give a new file for the backup", args.out.display());
    }
    if crate::config::Config::load(&dir.config())?.storage.is_postgres() {
        anyhow::bail!(
            "the stores of {} are in PostgreSQL ([storage] backend = \"postgres\"): back them up with PostgreSQL's \
             tools (pg_dump); `inkan backup` archives sled's stores with the ledger and the audit trail",
            dir.path().display()
        );
    }
    eprintln!("Exporting the stores ...");
    let needs = super::Needs { snapshot: true, ..super::Needs::default() };
    let stores = match super::admin(&dir, AdminRequest::Snapshot, needs, None)? {
        AdminReply::Snapshot { stores } => stores,
        other => return Err(super::unexpected(other)),
    };
    let exports: Vec<StoreExport> = stores
        .iter()
        .map(|s| StoreExport { name: s.name.clone(), path: s.path.clone(), counts: s.counts.clone() })
        .collect();
    let result =
        ca::backup::write_archive(&dir, &exports, args.include_keys, time::OffsetDateTime::now_utc(), &args.out);
    for store in &stores {
        if let Some(folder) = store.path.parent() {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
    let manifest = result.with_context(|| format!("writing {}", args.out.display()))?;
    let records = |store: &str| manifest.stores.get(store).map_or(0, |trees| trees.values().sum::<u64>());
    let accounts = manifest.stores.get("web").and_then(|t| t.get("accounts")).copied().unwrap_or(0);
    println!("Backed up {} to {}", dir.path().display(), args.out.display());
    println!("  files       {} (SHA-256 each in manifest.json)", manifest.files.len());
    println!("  stores      registry {} records; web {} records ({accounts} accounts)", records("db"), records("web"));
    println!("  audit       {} lines; ledger {} bytes", manifest.audit_lines, manifest.ledger_bytes);
    if manifest.include_keys {
        println!(
            "  keys        included, as they are (encrypted files; keys in a token stay there): keep the archive safe"
        );
    } else {
        println!("  keys        not included (--include-keys to add the encrypted key files)");
    }
    Ok(())
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let restored = ca::backup::restore(&args.from, &dir).context("inkan restore")?;
    let manifest = &restored.manifest;
    println!("Restored {} into {}", args.from.display(), dir.path().display());
    println!("  made        {} by inkan {}", manifest.created, manifest.inkan_version);
    println!("  files       {} checked against the manifest", manifest.files.len());
    println!("  audit       {} lines, chain intact", restored.audit_lines);
    let missing: Vec<String> = [dir.root_key(), dir.ca_key()]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.strip_prefix(dir.path()).unwrap_or(p).display().to_string())
        .collect();
    if !missing.is_empty() {
        println!("  keys        not in the backup: put {} back before signing", missing.join(" and "));
    }
    if !dir.otp_key().exists() && manifest.stores.get("web").and_then(|t| t.get("otp_tokens")).is_some_and(|n| *n > 0) {
        println!("  OTP         server/otp.key was not in the backup: the OTP tokens cannot be read without it");
    }
    Ok(())
}
