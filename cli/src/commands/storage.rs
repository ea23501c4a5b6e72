//! `inkan storage migrate`: a data directory's sled stores into an empty PostgreSQL database.

use std::time::Instant;

use anyhow::{Context, bail};
use ca::SledStore;
use ca::layout::DataDir;
use enroll_server::stores::migrate::{Table, sled_tables};
use enroll_server::stores::postgres::{describe_url, url_has_password};
use enroll_server::stores::sled::SledStores;

use super::in_use;
use crate::args::MigrateArgs;
use crate::config::{Config, StorageSection};
use crate::storage::{PASSWORD_VARIABLE, Stores};

/// Certificates per transaction.
const CHUNK: usize = 1000;

pub fn migrate(args: &MigrateArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let config = Config::load(&dir.config())?;
    if config.storage.is_postgres() {
        bail!(
            "{} already keeps its stores in PostgreSQL ([storage] backend = \"postgres\"): nothing to move",
            dir.path().display()
        );
    }
    if url_has_password(&args.to) {
        bail!(
            "--to carries a password, and command lines are visible to every user of this machine: give the URL \
             without it and the password in {PASSWORD_VARIABLE} or --password-file"
        );
    }
    enroll_server::stores::postgres::check_url(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    // The stores must not change while they are copied: hold the lock `serve` takes.
    let _lock = super::serve::lock_data_dir(&dir).map_err(|_| {
        anyhow::anyhow!(
            "stop `inkan serve` on {} first: the stores must not change while they are copied",
            dir.path().display()
        )
    })?;
    let registry = SledStore::open(&dir.db()).map_err(|e| in_use(e.to_string(), &dir.db()))?;
    let web = SledStores::open(&dir.web()).map_err(|e| in_use(e.to_string(), &dir.web()))?;

    let target = describe_url(&args.to);
    let storage = StorageSection { password_file: args.password_file.clone(), ..StorageSection::default() };
    let password = crate::storage::password(&storage)?;
    let Stores::Postgres { registry: to_registry, web: to_web } =
        crate::storage::connect(&args.to, password.as_ref().map(|p| p.as_str()), 4)
            .with_context(|| format!("connecting to the {target}"))?
    else {
        unreachable!("connect opens PostgreSQL");
    };
    let rows = to_web.row_count()?;
    if !to_registry.is_empty()? || rows > 0 {
        bail!(
            "the {target} is not empty: migrate into a new, empty database (createdb), so nothing is mixed or overwritten"
        );
    }

    let started = Instant::now();
    eprintln!("Reading the registry in {} ...", dir.db().display());
    let contents = registry.contents()?;
    let total = contents.certificates.len();
    eprintln!("Copying {total} certificate(s) to the {target} ...");
    let mut done = 0;
    let mut told = 0;
    for chunk in contents.certificates.chunks(CHUNK) {
        to_registry.import(chunk)?;
        done += chunk.len();
        if done * 10 / total.max(1) > told || done == total {
            told = done * 10 / total.max(1);
            eprintln!("  {done}/{total} certificates ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
    to_registry.import_rest(&contents.blocked, contents.crl_number)?;
    let tables = sled_tables(&web)?;
    for table in &tables {
        to_web.import(table)?;
    }

    eprintln!("Verifying: reading every store back from PostgreSQL ...");
    let moved = to_registry.contents()?;
    let mut report = vec![(
        "registry".to_owned(),
        contents.certificates.len(),
        moved.certificates.len(),
        contents.digest()?,
        moved.digest()?,
    )];
    let back = to_web.tables()?;
    for (from, to) in tables.iter().zip(&back) {
        report.push((from.name.to_owned(), from.rows.len(), to.rows.len(), from.digest(), to.digest()));
    }
    println!("{:<16}  {:>9}  {:>9}  {:<16}  RESULT", "STORE", "SLED", "POSTGRES", "SHA-256");
    let mut failed = Vec::new();
    for (name, from_n, to_n, from_d, to_d) in &report {
        let same = from_n == to_n && from_d == to_d;
        if !same {
            failed.push(name.clone());
        }
        println!(
            "{name:<16}  {from_n:>9}  {to_n:>9}  {:<16}  {}",
            &from_d[..16],
            if same { "same" } else { "DIFFERENT" }
        );
    }
    let (blocked, crl) = (contents.blocked.len(), contents.crl_number);
    println!("(the registry's line covers {blocked} blocked key(s) and CRL number {crl} too)");
    if !failed.is_empty() {
        bail!(
            "verification failed for {}: the copy in the {target} is not trustworthy; drop that database, create it \
             again and run the migration again (the sled stores are unchanged)",
            failed.join(", ")
        );
    }
    let audit = ca::audit::AuditLog::new(dir.path(), "cli");
    audit.append(
        "storage.migrated",
        serde_json::json!({
            "to": target,
            "certificates": total,
            "registry_sha256": report[0].3,
            "stores": report.iter().skip(1).map(|r| serde_json::json!({ "name": r.0, "rows": r.1 })).collect::<Vec<_>>(),
        }),
    )?;
    let rows: usize = tables.iter().map(|t: &Table| t.rows.len()).sum();
    println!(
        "Copied {total} certificate(s) and {rows} other row(s) in {:.1} s; every store is the same on both sides.",
        started.elapsed().as_secs_f64()
    );
    println!("Now point the service at it in {} and start it again:", dir.config().display());
    println!();
    println!("[storage]");
    println!("backend = \"postgres\"");
    println!("url = \"{}\"", args.to);
    println!("# the password: INKAN_DATABASE_PASSWORD, or password_file = \"...\"");
    println!();
    println!("The sled stores in {} stay as they were; remove them once you are satisfied.", dir.path().display());
    Ok(())
}
