//! CRL generation for 100k and 1M revoked certificates: the whole signer path (the request
//! with every entry framed as the service sends it, the signer's checks, building, linting
//! and signing the CRL, the answer) — time, CRL size, and peak memory (the process's VmHWM;
//! each size runs in a fresh child process).
//!
//! A figure is printed only once `openssl crl -verify` has said OK for the CRL made, against
//! the issuing CA certificate the benchmark made, and the CRL lists every entry; otherwise the
//! benchmark says why and exits non-zero. Needs openssl.
//!
//! `cargo bench -p ca --bench crl [-- ENTRIES...]` (default 100000 1000000), each as one CRL and
//! as 16 shards (`crl_shards = 16`: one signer request per shard, as the service makes them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ca::ceremony::{self, InitOptions};
use ca::layout::DataDir;
use ca::remote::{SignerClient, SignerService};
use ca::{CaKeyType, CertificateAuthority, Passphrase};
use pki::crl::Shard;
use pki::{ProfileSettings, RevocationReason, RevokedEntry, Serial};

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

/// Where the benchmark's files go: `INKAN_BENCH_DIR`, else the system's temporary directory
/// unless it is in memory (tmpfs, ramfs), else the target directory's.
fn bench_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("INKAN_BENCH_DIR") {
        return dir.into();
    }
    let tmp = std::env::temp_dir();
    if matches!(fs_type(&tmp).0.as_str(), "tmpfs" | "ramfs") { PathBuf::from(env!("CARGO_TARGET_TMPDIR")) } else { tmp }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn child(entries: usize, shards: u16) -> Result<(), String> {
    let root = bench_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("inkan-bench-crl-")
        .tempdir_in(&root)
        .map_err(|e| format!("a directory in {}: {e}", root.display()))?;
    let data = DataDir::new(dir.path().join("data"));
    let options = InitOptions {
        key_type: CaKeyType::EcdsaP256,
        organization: "bench".into(),
        root_days: 3650,
        ca_days: 1825,
        root_crl_url: None,
        root_cert_url: None,
        ca_ocsp_url: None,
        config_toml: String::new(),
        token: None,
    };
    let ca_pass = Passphrase::new("bench issuing passphrase".into());
    ceremony::init(
        &data,
        &options,
        &Passphrase::new("bench root passphrase".into()),
        &ca_pass,
        time::OffsetDateTime::now_utc(),
    )
    .expect("init");
    let (signer, der) = ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &ca_pass).expect("load");
    // The signer's own ledger, as `inkan signer` opens it.
    let ledger = Arc::new(ca::ledger::LogLedger::open(&dir.path().join("ledger").join("ledger.log")).expect("ledger"));
    let settings = ProfileSettings {
        organization: "bench".into(),
        crl_url: Some("http://bench.example/crl/ca.crl".into()),
        ca_issuers_url: None,
        ocsp_url: None,
        default_days: 365,
        max_days: 825,
        crl_shards: 1,
    };
    let authority = CertificateAuthority::new(&der, signer, ledger, settings).expect("ca");
    let socket = dir.path().join("signer.sock");
    let listener = ca::remote::bind(&socket).expect("bind");
    let service = Arc::new(SignerService {
        authorities: ca::generations::Authorities::single(authority),
        root_der: Vec::new(),
        server_names: Vec::new(),
        ocsp: None,
        audit: None,
        ledger: None,
    });
    std::thread::spawn(move || ca::remote::serve(listener, service, Arc::new(AtomicBool::new(false))));

    let now = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let reasons = [RevocationReason::KeyCompromise, RevocationReason::Superseded, RevocationReason::Unspecified];
    let revoked: Vec<RevokedEntry> = (0..entries)
        .map(|i| {
            let mut bytes = [0u8; 16];
            aws_lc_rs::rand::fill(&mut bytes).expect("random");
            bytes[0] = 0x40 | (bytes[0] & 0x3f);
            RevokedEntry {
                serial: Serial::from_random(bytes).expect("serial"),
                revoked_at: now - time::Duration::seconds(i as i64),
                reason: reasons[i % 3],
            }
        })
        .collect();
    let before = peak_rss_mib();
    let client = SignerClient::new(&socket);
    let started = Instant::now();
    // As the service does it: the whole CRL in one request, or one request per shard.
    let crls: Vec<Vec<u8>> = if shards <= 1 {
        vec![client.sign_crl(1, &revoked, time::Duration::days(7), None).expect("sign")]
    } else {
        let mut parts: Vec<Vec<RevokedEntry>> = vec![Vec::new(); usize::from(shards)];
        for entry in &revoked {
            parts[usize::from(Shard::of(&entry.serial, shards).index)].push(entry.clone());
        }
        Shard::all(shards)
            .zip(&parts)
            .map(|(shard, part)| client.sign_crl(1, part, time::Duration::days(7), Some(shard)).expect("sign"))
            .collect()
    };
    let elapsed = started.elapsed();
    let peak = peak_rss_mib();
    let mut listed = 0;
    let mut verdict = String::new();
    for (i, crl) in crls.iter().enumerate() {
        let out = dir.path().join(format!("ca-{i}.crl"));
        std::fs::write(&out, crl).expect("write");
        verdict = verify(&out, &data.ca_cert())?;
        listed += count_entries(&out)?;
    }
    if listed != entries {
        return Err(format!("the CRL(s) of {entries} entries list {listed} (openssl crl -text)"));
    }
    let bytes: usize = crls.iter().map(Vec::len).sum();
    println!(
        "{entries:>9} entries in {shards:>3} CRL(s)  {:>8.2} s  CRLs {:>6.1} MiB  peak memory {:>7.0} MiB (entries alone: {:.0} MiB)",
        elapsed.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        peak,
        before
    );
    println!("           openssl crl -verify of each: {verdict}");
    Ok(())
}

/// `openssl crl -verify` against the issuing CA's certificate: its verdict, which must be OK.
fn verify(crl: &Path, ca_cert: &Path) -> Result<String, String> {
    let check = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-verify", "-in"])
        .arg(crl)
        .arg("-CAfile")
        .arg(ca_cert)
        .output()
        .map_err(|e| format!("running openssl (Debian package openssl): {e}"))?;
    let verdict = String::from_utf8_lossy(&check.stderr).trim().to_owned();
    if !check.status.success() || verdict != "verify OK" {
        return Err(format!(
            "openssl crl -verify against {} did not say OK ({}): {verdict}",
            ca_cert.display(),
            check.status
        ));
    }
    Ok(verdict)
}

/// How many revoked certificates openssl reads in the CRL.
fn count_entries(crl: &Path) -> Result<usize, String> {
    let mut text = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(crl)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running openssl: {e}"))?;
    let stdout = text.stdout.take().ok_or("openssl's output")?;
    let listed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.trim_start().starts_with("Serial Number:"))
        .count();
    let status = text.wait().map_err(|e| format!("openssl: {e}"))?;
    if !status.success() {
        return Err(format!("openssl crl -text failed ({status})"));
    }
    Ok(listed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    if let Some(n) = value("--child").and_then(|n| n.parse().ok()) {
        let shards = value("--shards").and_then(|n| n.parse().ok()).unwrap_or(1);
        return match child(n, shards) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{n} entries: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut sizes: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![100_000, 1_000_000];
    }
    let root = bench_root();
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("creating {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    println!("CRL generation through the signer protocol (ECDSA P-256 issuing CA), whole and in 16 shards");
    println!("files in {} on {}", root.display(), fs_type(&root).1);
    for entries in sizes {
        for shards in [1u16, 16] {
            let status = Command::new(&args[0])
                .args(["--child", &entries.to_string(), "--shards", &shards.to_string()])
                .status();
            let failed = match status {
                Ok(status) if status.success() => None,
                Ok(status) => Some(status.to_string()),
                Err(e) => Some(format!("starting it: {e}")),
            };
            if let Some(why) = failed {
                eprintln!("{entries} entries: failed ({why}); no figure, and none for the sizes after it");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
