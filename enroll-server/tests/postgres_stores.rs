//! The store conformance suite against a real PostgreSQL: Debian's PostgreSQL 15, a throwaway
//! cluster this test starts itself (initdb + pg_ctl, on 127.0.0.1 and a port of its own, as the
//! `postgres` user when run as root) and stops afterwards. Each suite gets a database of its
//! own; "reopening" a store is connecting again.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use enroll_server::stores::conformance;
use enroll_server::stores::postgres::PgStores;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster in a temporary directory, stopped (immediately) when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(program: &str) -> Command {
    let path = format!("{BIN}/{program}");
    if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn ok(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    fn start() -> Self {
        assert!(Path::new(BIN).join("initdb").exists(), "needs Debian's postgresql-15: run ./tests/run-all.sh");
        let base = std::env::temp_dir().join(format!("inkan-pg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("data");
        if nix::unistd::Uid::effective().is_root() {
            ok(Command::new("chown").args(["postgres:postgres", base.to_str().unwrap()]));
        }
        ok(as_postgres("initdb").args(["-D", dir.to_str().unwrap(), "-A", "trust", "-U", "inkan", "--no-sync"]));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = format!("-h 127.0.0.1 -p {port} -k {}", base.display());
        ok(as_postgres("pg_ctl")
            .args(["-D", dir.to_str().unwrap(), "-o", &options, "-l"])
            .arg(base.join("log"))
            .args(["-w", "-t", "30", "start"]));
        Self { dir, port }
    }

    /// A new database; its URL.
    fn database(&self, name: &str) -> String {
        ok(Command::new(format!("{BIN}/createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "inkan",
            name,
        ]));
        format!("postgres://inkan@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            as_postgres("pg_ctl").args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).output();
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
}

#[test]
fn postgres_passes_the_store_conformance_suite() {
    let cluster = Cluster::start();
    let open = |url: &str| Arc::new(PgStores::connect(url, None, 8).unwrap());
    let url = cluster.database("accounts");
    conformance::accounts(&|| open(&url));
    let url = cluster.database("notices");
    conformance::notices(&|| open(&url));
    let url = cluster.database("otp");
    conformance::otp(&|| open(&url));
    let url = cluster.database("outbox");
    conformance::outbox(&|| open(&url));
    let url = cluster.database("oauth");
    conformance::oauth(&|| open(&url));
}

#[test]
fn a_newer_schema_is_refused_and_the_password_never_shows() {
    let cluster = Cluster::start();
    let url = cluster.database("schema");
    let stores = PgStores::connect(&url, Some("not-a-real-password-4711"), 2).unwrap();
    assert!(!format!("{stores:?}").contains("4711"), "Debug shows no password");
    drop(stores);
    ok(Command::new(format!("{BIN}/psql"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "inkan", "-d", "schema", "-c"])
        .arg("UPDATE inkan_schema SET version = 99"));
    let refused = PgStores::connect(&url, None, 2).unwrap_err().to_string();
    assert!(refused.contains("version 99") && refused.contains("upgrade inkan"), "{refused}");
}
