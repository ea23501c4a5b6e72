//! CRL generation for 100k and 1M revoked certificates: the whole signer path (the request
//! with every entry framed as the service sends it, the signer's checks, building, linting
//! and signing the CRL, the answer) — time, CRL size, and peak memory (the process's VmHWM;
//! each size runs in a fresh child process). Prints figures; asserts nothing.
//!
//! `cargo bench -p ca --bench crl`

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ca::ceremony::{self, InitOptions};
use ca::layout::DataDir;
use ca::remote::{SignerClient, SignerService};
use ca::{CaKeyType, CertificateAuthority, Passphrase, SledStore};
use pki::{ProfileSettings, RevocationReason, RevokedEntry, Serial};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn child(entries: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(dir.path().join("data"));
    let options = InitOptions {
        key_type: CaKeyType::EcdsaP256,
        organization: "bench".into(),
        root_days: 3650,
        ca_days: 1825,
        root_crl_url: None,
        root_cert_url: None,
        config_toml: String::new(),
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
    let ledger = Arc::new(SledStore::open(&dir.path().join("ledger")).expect("ledger"));
    let settings = ProfileSettings {
        organization: "bench".into(),
        crl_url: None,
        ca_issuers_url: None,
        ocsp_url: None,
        default_days: 365,
        max_days: 825,
    };
    let authority = CertificateAuthority::new(&der, Box::new(signer), ledger, settings).expect("ca");
    let socket = dir.path().join("signer.sock");
    let listener = ca::remote::bind(&socket).expect("bind");
    let service = Arc::new(SignerService { authority, root_der: Vec::new(), ocsp: None, audit: None });
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
    let crl = client.sign_crl(&revoked, time::Duration::days(7)).expect("sign");
    let elapsed = started.elapsed();
    println!(
        "{entries:>9} entries  {:>8.2} s  CRL {:>6.1} MiB  peak memory {:>7.0} MiB (entries alone: {:.0} MiB)",
        elapsed.as_secs_f64(),
        crl.len() as f64 / (1 << 20) as f64,
        peak_rss_mib(),
        before
    );
    let out = dir.path().join("ca.crl");
    std::fs::write(&out, &crl).expect("write");
    let check = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in", out.to_str().expect("utf8"), "-noout", "-CAfile"])
        .arg(data.ca_cert())
        .arg("-verify")
        .output();
    if let Ok(check) = check {
        println!("           openssl crl -verify: {}", String::from_utf8_lossy(&check.stderr).trim());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args.iter().position(|a| a == "--child").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok())
    {
        child(n);
        return;
    }
    println!("CRL generation through the signer protocol (ECDSA P-256 issuing CA)");
    for entries in [100_000usize, 1_000_000] {
        let status = std::process::Command::new(&args[0]).args(["--child", &entries.to_string()]).status();
        if !status.is_ok_and(|s| s.success()) {
            println!("{entries} entries: failed");
        }
    }
}
