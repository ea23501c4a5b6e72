//! In-process issuance throughput beside the raw ECDSA P-256 sign+verify rate of the same
//! crypto library (aws-lc-rs), measured in the same run. Every issuance must succeed, and the
//! durable ledger must hold exactly the issuances made through it; otherwise no figure.
//!
//! `cargo bench -p ca --bench issuance [-- SECONDS]` (default 3 s per measurement).
//! The same sweep runs twice: durable, and with durability off, to show what flushing costs.
//!
//! Issuance here is the whole CA path: parse and verify the CSR, build and lint the TBS
//! certificate, record it pending (durable), sign, record the certificate (durable).
//! "durable" means flushed to disk by sled before the call returns; concurrent issuers
//! share flushes (group commit). Beside each rate: the stores' flushes per issuance, read from
//! their counters (`LogLedger::flush_count`, `SledStore::flush_count`), not counted by strace.
//!
//! The durable figures mean something only on a disk: the files go under `INKAN_BENCH_DIR`,
//! or the system's temporary directory, or (when that is tmpfs) the target directory, and the
//! benchmark refuses to run on tmpfs or ramfs.
//!
//! Last, when SoftHSM2 is installed: the same issuance with the CA key in a PKCS#11 token
//! beside a key file (`--token-only` runs just that).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use ca::ceremony::{self, InitOptions};
use ca::layout::DataDir;
use ca::sled_store::Durability;
use ca::{CaKeyType, CertificateAuthority, IssueRequest, Passphrase, SledStore};
use pki::{Profile, ProfileSettings};

/// A labelled CA and how to read its flush count.
type Sweep<'a> = (&'a str, &'a CertificateAuthority, Box<dyn Fn() -> u64 + 'a>);

/// The file system type of `dir` as `stat -f -c %T` names it, with the mount's own name when
/// findmnt knows a different one (statfs calls ext4 "ext2/ext3").
fn fs_type(dir: &Path) -> (String, String) {
    let stat = Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output();
    let magic = match stat {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    let mount = Command::new("findmnt").args(["-n", "-o", "FSTYPE", "-T"]).arg(dir).output();
    let shown = match mount {
        Ok(out) if out.status.success() => {
            let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if name.is_empty() || name == magic { magic.clone() } else { format!("{magic} (mounted as {name})") }
        }
        _ => magic.clone(),
    };
    (magic, shown)
}

fn in_memory(magic: &str) -> bool {
    matches!(magic, "tmpfs" | "ramfs")
}

/// Where the benchmark's files go: `INKAN_BENCH_DIR`, else the system's temporary directory
/// unless it is in memory, else the target directory's.
fn bench_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("INKAN_BENCH_DIR") {
        return dir.into();
    }
    let tmp = std::env::temp_dir();
    if in_memory(&fs_type(&tmp).0) { PathBuf::from(env!("CARGO_TARGET_TMPDIR")) } else { tmp }
}

/// Runs `op` on `threads` threads for about `seconds`: how many ran, and the seconds it took.
fn run_for<F: Fn() + Sync>(threads: usize, seconds: f64, op: F) -> (u64, f64) {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    op();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    (done.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

/// A P-256 CSR (DER) for the issuances measured.
fn bench_csr() -> Result<Vec<u8>, String> {
    let subject_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::default().serialize_request(&subject_key).map_err(|e| e.to_string())?;
    Ok(csr.der().to_vec())
}

/// The issuance measured: a client certificate from `csr`, no request id.
fn bench_request(csr: &[u8]) -> IssueRequest<'_> {
    IssueRequest {
        csr,
        account: "bench-user",
        profile: Profile::Client,
        sans: &[],
        days: None,
        request_id: None,
        supersede: false,
    }
}

/// Operations per second.
fn rate((done, secs): (u64, f64)) -> f64 {
    done as f64 / secs
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("issuance benchmark failed, no further figures: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let seconds: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3.0);
    if std::env::args().any(|a| a == "--token-only") {
        if std::env::var_os("SOFTHSM2_CONF").is_some() {
            return token::compare(seconds);
        }
        let dir = tempfile::Builder::new()
            .prefix("inkan-bench-softhsm-")
            .tempdir_in(bench_root())
            .map_err(|e| e.to_string())?;
        return token::run_beside(seconds, dir.path());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    // The files first: refused on tmpfs before anything is measured.
    let root = bench_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("inkan-bench-issuance-")
        .tempdir_in(&root)
        .map_err(|e| format!("a directory in {}: {e}", root.display()))?;
    let (magic, fs) = fs_type(dir.path());
    if in_memory(&magic) {
        return Err(format!(
            "{} is on {magic}: durable figures there would measure memory, not a disk; \
             set INKAN_BENCH_DIR to a directory on a disk file system",
            dir.path().display()
        ));
    }

    // Raw crypto: one ECDSA P-256 signature and one verification per operation, over a
    // message the size of a TBS certificate.
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).expect("key");
    let public = key.public_key().as_ref().to_vec();
    let message = vec![0x5a_u8; 450];
    let raw = |threads| {
        rate(run_for(threads, seconds, || {
            let sig = key.sign(&rng, &message).expect("sign");
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public)
                .verify(&message, sig.as_ref())
                .expect("verify");
        }))
    };
    let raw_1 = raw(1);
    let raw_n = raw(cores);

    // The CA, in a fresh data directory, with an ECDSA P-256 key like the default.
    let data = DataDir::new(dir.path().join("data"));
    let options = InitOptions {
        key_type: CaKeyType::EcdsaP256,
        organization: "bench".into(),
        root_days: 3650,
        ca_days: 1825,
        root_crl_url: Some("http://127.0.0.1:8080/crl/root.crl".into()),
        root_cert_url: Some("http://127.0.0.1:8080/root.crt".into()),
        ca_ocsp_url: None,
        config_toml: String::new(),
        token: None,
    };
    let root_pass = Passphrase::new("bench root passphrase".into());
    let ca_pass = Passphrase::new("bench ca passphrase".into());
    ceremony::init(&data, &options, &root_pass, &ca_pass, time::OffsetDateTime::now_utc()).expect("init");
    let settings = ProfileSettings {
        organization: "bench".into(),
        crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
        ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
        ocsp_url: None,
        default_days: 365,
        max_days: 825,
        crl_shards: 1,
    };
    let authority = |db: &str, durability| {
        let (signer, der) = ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).expect("load");
        let store = Arc::new(SledStore::open_with(&dir.path().join(db), durability).expect("store"));
        let ca = CertificateAuthority::new(&der, signer, store.clone(), settings.clone()).expect("ca");
        (ca, store)
    };

    let csr = bench_csr()?;
    let request = bench_request(&csr);

    println!("inkan in-process issuance benchmark ({seconds} s per figure, {cores} cores)");
    println!("raw aws-lc-rs ECDSA P-256 sign+verify: {raw_1:.0} ops/s (1 thread), {raw_n:.0} ops/s ({cores} threads)");
    println!("stores in {} on {fs}", dir.path().display());

    // Where one issuance's time goes, single-threaded: the stages of `issue`, measured apart.
    let (durable_ca, durable_store) = authority("db-durable", Durability::Flush);
    let stage = |what: &str, op: &dyn Fn()| {
        let n = 2000;
        let started = Instant::now();
        (0..n).for_each(|_| op());
        println!("  stage {what:<30} {:>7.1} µs", started.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    };
    let validated = pki::csr::validate(&csr).expect("csr");
    let order = pki::CertificateOrder {
        serial: pki::Serial::from_random([0x11; 16]).expect("serial"),
        account: "bench-user",
        profile: Profile::Client,
        sans: &[],
        days: None,
        now: time::OffsetDateTime::now_utc(),
    };
    let prepare = || pki::certificate::prepare(durable_ca.issuer(), durable_ca.settings(), &validated, &order);
    let prepared = prepare().expect("prepare");
    let (stage_signer, _) = ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).expect("load");
    stage("validate CSR (parse+verify)", &|| drop(pki::csr::validate(&csr).expect("csr")));
    stage("prepare (build+lint TBS)", &|| drop(prepare().expect("prepare")));
    stage("sign", &|| drop(stage_signer.sign(prepared.tbs_der()).expect("sign")));

    let (fast_ca, fast_store) = authority("db-unsafe", Durability::Unsafe);
    let ledger_ca = |path: &str, synced: bool| {
        let (signer, der) = ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).expect("load");
        let ledger = Arc::new(ca::ledger::LogLedger::open_with(&dir.path().join(path), synced).expect("ledger"));
        let ca = CertificateAuthority::new(&der, signer, ledger.clone(), settings.clone()).expect("ca");
        (ca, ledger)
    };
    let (log_ca, log) = ledger_ca("ledger.log", true);
    let (log_fast_ca, log_fast) = ledger_ca("ledger-unsafe.log", false);
    let sweeps: [Sweep<'_>; 4] = [
        (
            "signer ledger (append-only log), durable: synced before returning, group commit",
            &log_ca,
            Box::new(|| log.flush_count()),
        ),
        ("sled registry as the ledger, durable", &durable_ca, Box::new(|| durable_store.flush_count())),
        ("signer ledger, durability off", &log_fast_ca, Box::new(|| log_fast.flush_count())),
        (
            "sled registry, durability off (sled writes back on its own)",
            &fast_ca,
            Box::new(|| fast_store.flush_count()),
        ),
    ];
    println!(
        "flushes: the stores' own counters (LogLedger::flush_count: one fdatasync each; SledStore::flush_count: \
         one sled Db::flush each), not strace"
    );
    let mut through_ledger = 0;
    for (i, (label, ca, flush_count)) in sweeps.into_iter().enumerate() {
        println!("{label}");
        println!(
            "{:>8}  {:>10}  {:>10}  {:>13}  {:>13}  {:>15}",
            "issuers", "issued/s", "flushes/s", "% raw 1 thr", "% raw all", "flushes/issued"
        );
        for threads in [1, 2, 8, 64, 256] {
            let flushes_before = flush_count();
            let (issued, secs) = run_for(threads, seconds, || {
                ca.issue(&request).expect("issue");
            });
            let flushed = flush_count() - flushes_before;
            if i == 0 {
                through_ledger += issued;
            }
            let rate = issued as f64 / secs;
            println!(
                "{threads:>8}  {rate:>10.0}  {:>10.0}  {:>12.0}%  {:>12.0}%  {:>15.3}",
                flushed as f64 / secs,
                100.0 * rate / raw_1,
                100.0 * rate / raw_n,
                flushed as f64 / issued.max(1) as f64
            );
        }
    }
    let records = log.records().map_err(|e| e.to_string())?;
    let issued = records.iter().filter(|r| r.state == ca::State::Issued).count();
    if records.len() as u64 != through_ledger || issued != records.len() {
        return Err(format!(
            "{through_ledger} issuances went through the durable ledger, but it holds {} records, {issued} of them issued",
            records.len()
        ));
    }
    println!("the durable ledger holds {} issuances", records.len());
    token::run_beside(seconds, dir.path())
}

/// The same issuance with the CA key in a PKCS#11 token (SoftHSM2) beside a key file, in one
/// run. SoftHSM reads its configuration from SOFTHSM2_CONF, which this process cannot set for
/// itself: the comparison runs in a child of this benchmark (`--token-only`) with it set.
mod token {
    use super::*;

    /// SoftHSM2 as Debian installs it, or INKAN_BENCH_PKCS11_MODULE.
    fn module() -> PathBuf {
        std::env::var_os("INKAN_BENCH_PKCS11_MODULE")
            .map_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"), PathBuf::from)
    }

    const PIN: &str = "bench-pin-1234";

    /// Makes a token under `dir` and runs [`compare`] in a child with SOFTHSM2_CONF set.
    pub fn run_beside(seconds: f64, dir: &Path) -> Result<(), String> {
        if !module().exists() {
            println!("PKCS#11: skipped, no module at {} (install softhsm2)", module().display());
            return Ok(());
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()))
            .map_err(|e| e.to_string())?;
        let made = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "bench-so-5678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .map_err(|e| format!("softhsm2-util: {e}"))?;
        if !made.status.success() {
            return Err(format!("softhsm2-util: {}", String::from_utf8_lossy(&made.stderr)));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let status = Command::new(exe)
            .args(["--token-only", &seconds.to_string()])
            .env("SOFTHSM2_CONF", &conf)
            .env("INKAN_BENCH_DIR", dir)
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("the PKCS#11 comparison failed ({status})")) }
    }

    /// Issuance/s through the durable signer ledger with a P-256 key file and with a P-256 key
    /// in the token, and the raw signatures/s of each key, at 1 and 8 issuers.
    pub fn compare(seconds: f64) -> Result<(), String> {
        let root = bench_root();
        let dir = tempfile::Builder::new().prefix("inkan-bench-token-").tempdir_in(&root).map_err(|e| e.to_string())?;
        let pass = Passphrase::new("bench ca passphrase".into());
        let pin = Passphrase::new(PIN.into());
        let settings = ProfileSettings {
            organization: "bench".into(),
            crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
            ca_issuers_url: None,
            ocsp_url: None,
            default_days: 365,
            max_days: 825,
            crl_shards: 1,
        };
        let csr = bench_csr()?;
        let request = bench_request(&csr);
        println!(
            "CA key in a PKCS#11 token (SoftHSM2, {}) beside a key file, P-256, durable signer ledger",
            module().display()
        );
        println!("{:>28}  {:>8}  {:>10}  {:>10}", "key", "issuers", "issued/s", "signs/s");
        for (label, token) in [("encrypted PKCS#8 file", None), ("SoftHSM2 token", Some(module()))] {
            let data = DataDir::new(dir.path().join(if token.is_some() { "token" } else { "file" }));
            let options = InitOptions {
                key_type: CaKeyType::EcdsaP256,
                organization: "bench".into(),
                root_days: 3650,
                ca_days: 1825,
                root_crl_url: None,
                root_cert_url: None,
                ca_ocsp_url: None,
                config_toml: String::new(),
                token: token.map(|module| ceremony::TokenOptions { module, token_label: "bench".into() }),
            };
            let (root_pass, ca_pass) = if options.token.is_some() {
                (pin.clone(), pin.clone())
            } else {
                (Passphrase::new("bench root passphrase".into()), pass.clone())
            };
            ceremony::init(&data, &options, &root_pass, &ca_pass, time::OffsetDateTime::now_utc())
                .map_err(|e| e.to_string())?;
            let (signer, der) =
                ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).map_err(|e| e.to_string())?;
            let (raw_signer, _) =
                ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).map_err(|e| e.to_string())?;
            let ledger = Arc::new(ca::ledger::LogLedger::open_with(&data.ledger(), true).map_err(|e| e.to_string())?);
            let ca = CertificateAuthority::new(&der, signer, ledger, settings.clone()).map_err(|e| e.to_string())?;
            let message = vec![0x5a_u8; 450];
            for threads in [1, 8] {
                let signs = rate(run_for(threads, seconds / 2.0, || {
                    raw_signer.sign(&message).expect("sign");
                }));
                let issued = rate(run_for(threads, seconds, || {
                    ca.issue(&request).expect("issue");
                }));
                println!("{label:>28}  {threads:>8}  {issued:>10.0}  {signs:>10.0}");
            }
        }
        Ok(())
    }
}
