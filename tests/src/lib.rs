//! Support for inkan's cross-crate tests: run the real peers (openssl, pkilint) and make a
//! throwaway CA in a temporary directory. The tests themselves are under `tests/`.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ca::ceremony::{self, InitOptions};
use ca::layout::DataDir;
use ca::{CaKeyType, CertificateAuthority, IssueRequest, Issued, Passphrase, SledStore};
use pki::{Profile, ProfileSettings, San};

pub const BASE: &str = "http://127.0.0.1:8080";

/// Runs openssl with `args`; panics only if it cannot be started.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().expect("openssl must be installed (see README test command)")
}

/// Runs openssl and returns stdout, failing the test with openssl's stderr if it fails.
pub fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where pkilint's commands are: `$INKAN_PKILINT_BIN`, else the repository's `.venv/bin`.
pub fn pkilint_bin(tool: &str) -> PathBuf {
    let dir = std::env::var_os("INKAN_PKILINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin"));
    let path = dir.join(tool);
    assert!(
        path.exists(),
        "{} not found: pkilint is installed by the README's test command (python3 -m venv .venv && .venv/bin/pip install pkilint)",
        path.display()
    );
    path
}

/// Runs a pkilint linter with severity WARNING and asserts it reports nothing.
#[track_caller]
pub fn assert_lint_clean(tool: &str, args: &[&str]) {
    let out = Command::new(pkilint_bin(tool)).arg("lint").args(["-s", "WARNING"]).args(args).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "{tool} {args:?} reported:\n{report}");
}

/// A key and CSR made by openssl.
pub struct OpensslCsr {
    pub name: &'static str,
    pub key: PathBuf,
    pub csr: PathBuf,
}

/// openssl `genpkey` options and `req` digest for each key type inkan accepts.
pub const KEY_SPECS: &[(&str, &[&str], Option<&str>)] = &[
    ("p256-sha256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], Some("-sha256")),
    // rcgen issue #448: a P-384 key signed with SHA-256 must still be certified correctly.
    ("p384-sha256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], Some("-sha256")),
    ("p384-sha384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], Some("-sha384")),
    ("ed25519", &["-algorithm", "ED25519"], None),
    ("rsa2048-sha256", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], Some("-sha256")),
    ("rsa3072-sha384", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"], Some("-sha384")),
    ("rsa4096-sha512", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"], Some("-sha512")),
];

/// Makes a key and a CSR with openssl for one of [`KEY_SPECS`].
pub fn openssl_csr(dir: &Path, spec: &(&'static str, &[&str], Option<&str>)) -> OpensslCsr {
    let (name, genpkey, digest) = spec;
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", key.to_str().unwrap()]);
    openssl_ok(&args);
    let mut args =
        vec!["req", "-new", "-key", key.to_str().unwrap(), "-subj", "/CN=ignored", "-out", csr.to_str().unwrap()];
    args.extend(digest.iter());
    openssl_ok(&args);
    OpensslCsr { name, key, csr }
}

/// A CA made by the real `init` ceremony in a temporary directory, with its registry open.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub data: DataDir,
    pub ca: CertificateAuthority,
    /// The registry the CA records in (the sled registry serves as its ledger here).
    pub registry: Arc<SledStore>,
    /// PEM files for openssl.
    pub root_pem: PathBuf,
    pub ca_pem: PathBuf,
}

/// Waits until no handle in this process holds the sled registry under `db` any more.
///
/// Dropping the last `SledStore` does not release sled's file lock at once: its background
/// threads let go of the file a moment later. A test that opens the registry in-process and
/// then starts an `inkan` process on the same data dir calls this in between, or the process
/// may find the registry "in use by another inkan process".
pub fn wait_until_registry_unlocked(db: &Path) {
    let file = std::fs::File::open(db.join("db")).unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // sled takes a flock; a second open file description conflicts with it even in-process.
    while file.try_lock().is_err() {
        assert!(std::time::Instant::now() < deadline, "{} still locked after 10 s", db.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    file.unlock().expect("releasing the probe lock");
}

pub fn settings() -> ProfileSettings {
    ProfileSettings {
        organization: "inkan test".into(),
        crl_url: Some(format!("{BASE}/crl/ca.crl")),
        ca_issuers_url: Some(format!("{BASE}/ca.crt")),
        ocsp_url: None,
        default_days: 365,
        max_days: 825,
        crl_shards: 1,
    }
}

pub fn root_passphrase() -> Passphrase {
    Passphrase::new("test root passphrase".into())
}

impl TestCa {
    pub fn new(key_type: CaKeyType) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        let options = InitOptions {
            key_type,
            organization: "inkan test".into(),
            root_days: 3650,
            ca_days: 1825,
            root_crl_url: Some(format!("{BASE}/crl/root.crl")),
            root_cert_url: Some(format!("{BASE}/root.crt")),
            ca_ocsp_url: None,
            config_toml: "# test\n".into(),
            token: None,
        };
        let ca_pass = Passphrase::new("test issuing passphrase".into());
        ceremony::init(&data, &options, &root_passphrase(), &ca_pass, time::OffsetDateTime::now_utc()).unwrap();
        let (signer, der) = ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).unwrap();
        let registry = Arc::new(SledStore::open(&data.db()).unwrap());
        let ca = CertificateAuthority::new(&der, signer, registry.clone(), settings()).unwrap();
        Self { root_pem: data.root_cert(), ca_pem: data.ca_cert(), dir, data, ca, registry }
    }

    /// Issues from a CSR file and writes the certificate as PEM next to it.
    pub fn issue_file(&self, csr: &Path, account: &str, profile: Profile, sans: &[San]) -> (Issued, PathBuf) {
        let bytes = std::fs::read(csr).unwrap();
        let issued = self
            .ca
            .issue(&IssueRequest {
                csr: &bytes,
                account,
                profile,
                sans,
                days: None,
                request_id: None,
                supersede: false,
            })
            .unwrap_or_else(|e| panic!("issuing from {}: {e}", csr.display()));
        let out = csr.with_extension(format!("{}.crt", profile.name()));
        std::fs::write(&out, pki::encoding::pem_encode("CERTIFICATE", &issued.der)).unwrap();
        (issued, out)
    }

    /// Signs a CRL of the registry's revoked certificates.
    pub fn crl(&self, now: time::OffsetDateTime, validity: time::Duration) -> Vec<u8> {
        let entries = ca::Registry::revoked_unexpired(self.registry.as_ref(), now).unwrap();
        self.ca.sign_crl_for(&entries, now, validity, None).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn s(path: &Path) -> &str {
        path.to_str().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_probe_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = SledStore::open(&db).unwrap();
        let started = std::time::Instant::now();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(store);
        });
        wait_until_registry_unlocked(&db);
        assert!(started.elapsed() >= std::time::Duration::from_millis(300), "returned while the store was open");
        holder.join().unwrap();
        // Once free, the registry opens again.
        SledStore::open(&db).unwrap();
    }
}

/// Issues `total` certificates (one P-256 key made by openssl in `work`) through the library's
/// real record path into the sled registry of the data directory `dir` (made by `inkan init`,
/// its issuing key under `ca_pass`), from `threads` threads: to accounts user-0 ..
/// user-(`accounts` - 1) in turn, valid 1 to 400 days, spread evenly. Reports progress every
/// 100k; returns how long the issuing took.
pub fn issue_many(
    work: &Path,
    dir: &Path,
    ca_pass: &str,
    total: usize,
    accounts: usize,
    threads: usize,
) -> std::time::Duration {
    let store = Arc::new(SledStore::open(&DataDir::new(dir).db()).unwrap());
    let spread = Spread { total, accounts, threads, progress_every: 100_000 };
    issue_spread(work, dir, ca_pass, store, None, &spread, |_| ())
}

/// Issues `total` client certificates as `inkan serve` does, without its HTTPS front: the CA
/// over the signer's own ledger (DATA/signer/ledger.log; written without fsync, to be quick),
/// each certificate then recorded in the registry the way the web worker records it, and the
/// registry's ledger cursor moved to the ledger's end at the close, as the worker's follower
/// leaves it. So a service started afterwards finds the ledger and the registry in step, and
/// its signer's start reads a ledger of `total` certificates. No service may be running.
pub fn issue_many_through_ledger(
    work: &Path,
    dir: &Path,
    ca_pass: &str,
    total: usize,
    accounts: usize,
    threads: usize,
) -> std::time::Duration {
    use pki::registry::Registry;
    let data = DataDir::new(dir);
    let ledger = Arc::new(ca::ledger::LogLedger::open_with(&data.ledger(), false).unwrap());
    let registry = SledStore::open(&data.db()).unwrap();
    let spread = Spread { total, accounts, threads, progress_every: 1_000_000 };
    let took = issue_spread(work, dir, ca_pass, ledger, Some("http://127.0.0.1:8080/ocsp"), &spread, |issued| {
        registry.record_certificate_deferred(&issued.record, &issued.der, false).unwrap();
    });
    // Moving the cursor also makes everything recorded before it durable.
    registry.set_ledger_cursor(ca::ledger::whole_records(&data.ledger()).unwrap()).unwrap();
    took
}

/// How [`issue_spread`] spreads its certificates.
#[derive(Clone, Copy)]
struct Spread {
    total: usize,
    accounts: usize,
    threads: usize,
    progress_every: usize,
}

/// The issuing both generators share: the CA of `dir` over `store`, `spread.total` client
/// certificates from one openssl-made P-256 key, each handed to `then`; the time it took.
fn issue_spread(
    work: &Path,
    dir: &Path,
    ca_pass: &str,
    store: Arc<dyn ca::ledger::Ledger>,
    ocsp_url: Option<&str>,
    spread: &Spread,
    then: impl Fn(&Issued) + Sync,
) -> std::time::Duration {
    let key = work.join("k.pem");
    let csr = work.join("r.csr");
    openssl_ok(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key.to_str().unwrap()]);
    openssl_ok(&["req", "-new", "-key", key.to_str().unwrap(), "-subj", "/CN=x", "-out", csr.to_str().unwrap()]);
    let csr = std::fs::read(&csr).unwrap();
    let data = DataDir::new(dir);
    let (signer, der) =
        ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &Passphrase::new(ca_pass.into())).unwrap();
    let settings = ProfileSettings {
        organization: "inkan".into(),
        crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
        ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
        ocsp_url: ocsp_url.map(str::to_owned),
        default_days: 365,
        max_days: 825,
        crl_shards: 1,
    };
    let authority = CertificateAuthority::new(&der, signer, store, settings).unwrap();
    let Spread { total, accounts, threads, progress_every } = *spread;
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (authority, csr, done, then) = (&authority, &csr, &done, &then);
            s.spawn(move || {
                for i in (t..total).step_by(threads) {
                    let account = format!("user-{}", i % accounts);
                    let request = IssueRequest {
                        csr,
                        account: &account,
                        profile: Profile::Client,
                        sans: &[],
                        days: Some(1 + (i % 400) as u32),
                        request_id: None,
                        supersede: false,
                    };
                    then(&authority.issue(&request).unwrap());
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % progress_every == 0 {
                        eprintln!("  {n} issued ({:.0?})", started.elapsed());
                    }
                }
            });
        }
    });
    started.elapsed()
}

/// PostgreSQL for the store tests: a throwaway cluster of Debian's PostgreSQL 15 in a temporary
/// directory, on 127.0.0.1 and a port of its own, stopped (immediately) and removed when
/// dropped. Tests never assume a server is running.
pub mod postgres {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn is_root() -> bool {
        Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    /// Debian's PostgreSQL 15 programs.
    pub const BIN: &str = "/usr/lib/postgresql/15/bin";

    /// A PostgreSQL cluster in a temporary directory, stopped (immediately) when dropped.
    pub struct Cluster {
        dir: PathBuf,
        /// Its port on 127.0.0.1.
        pub port: u16,
    }

    fn as_postgres(program: &str) -> Command {
        let path = format!("{BIN}/{program}");
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            Command::new(path)
        }
    }

    /// Runs `command`; it must succeed. Returns its stdout.
    pub fn ok(command: &mut Command) -> String {
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
        /// Starts a new cluster (initdb, pg_ctl start), as the `postgres` user when run as root.
        pub fn start() -> Self {
            assert!(Path::new(BIN).join("initdb").exists(), "needs Debian's postgresql-15: run ./tests/run-all.sh");
            let base = std::env::temp_dir().join(format!("inkan-pg-{}-{}", std::process::id(), rand_suffix()));
            std::fs::create_dir_all(&base).unwrap();
            let dir = base.join("data");
            if is_root() {
                ok(Command::new("chown").args(["postgres:postgres", base.to_str().unwrap()]));
            }
            ok(as_postgres("initdb").args(["-D", dir.to_str().unwrap(), "-A", "trust", "-U", "inkan", "--no-sync"]));
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let cluster = Self { dir, port };
            cluster.start_again();
            cluster
        }

        /// Starts the stopped cluster again, on the same port.
        pub fn start_again(&self) {
            let base = self.dir.parent().unwrap();
            let options = format!("-h 127.0.0.1 -p {} -k {}", self.port, base.display());
            ok(as_postgres("pg_ctl")
                .args(["-D", self.dir.to_str().unwrap(), "-o", &options, "-l"])
                .arg(base.join("log"))
                .args(["-w", "-t", "30", "start"]));
        }

        /// Stops the cluster the hard way (`pg_ctl stop -m immediate`: no checkpoint, as a
        /// crash would; what was committed is recovered from the WAL at the next start).
        pub fn stop_immediately(&self) {
            ok(as_postgres("pg_ctl").args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "-w", "stop"]));
        }

        /// A new database; its URL.
        pub fn database(&self, name: &str) -> String {
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
            let _ = as_postgres("pg_ctl")
                .args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
                .output();
            if let Some(base) = self.dir.parent() {
                let _ = std::fs::remove_dir_all(base);
            }
        }
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
    }
}
