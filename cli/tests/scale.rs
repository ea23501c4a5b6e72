//! Scale: serial uniqueness over 100k issuances, and `inkan list --expiring` over a registry
//! of 100k certificates (issue 2). Prints how long the listing took; asserts only results.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use ca::layout::DataDir;
use ca::{CertificateAuthority, IssueRequest, Passphrase, SledStore};
use pki::{Profile, ProfileSettings};

const TOTAL: usize = 100_000;
const THREADS: usize = 16;
const ROOT_PASS: &str = "scale test root passphrase";
const CA_PASS: &str = "scale test issuing passphrase";

fn inkan(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS)
        .output()
        .unwrap();
    assert!(out.status.success(), "inkan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn serials_stay_unique_and_expiry_listing_scans_a_range_over_100k_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    inkan(&dir, &["init"]);

    let key = tmp.path().join("k.pem");
    let csr = tmp.path().join("r.csr");
    let ok = |args: &[&str]| assert!(Command::new("openssl").args(args).status().unwrap().success(), "{args:?}");
    ok(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key.to_str().unwrap()]);
    ok(&["req", "-new", "-key", key.to_str().unwrap(), "-subj", "/CN=x", "-out", csr.to_str().unwrap()]);
    let csr = std::fs::read(&csr).unwrap();

    // The issuing side through the library (an `inkan issue` process per certificate would
    // measure process start-up 100k times); the registry is the one `inkan list` reads.
    let data = DataDir::new(&dir);
    {
        let (signer, der) =
            ca::ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &Passphrase::new(CA_PASS.into())).unwrap();
        let store = Arc::new(SledStore::open(&data.db()).unwrap());
        let settings = ProfileSettings {
            organization: "inkan".into(),
            crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
            ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
            ocsp_url: None,
            default_days: 365,
            max_days: 825,
        };
        let authority = CertificateAuthority::new(&der, signer, store, settings).unwrap();
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (authority, csr) = (&authority, &csr);
                s.spawn(move || {
                    for i in (t..TOTAL).step_by(THREADS) {
                        // Validity from 1 to 400 days, spread evenly.
                        let days = Some(1 + (i % 400) as u32);
                        let account = format!("user-{}", i % 1000);
                        let request = IssueRequest {
                            csr,
                            account: &account,
                            profile: Profile::Client,
                            sans: &[],
                            days,
                            request_id: None,
                        };
                        authority.issue(&request).unwrap();
                    }
                });
            }
        });
        eprintln!("issued {TOTAL} certificates in {:.1?} with {THREADS} threads", started.elapsed());
    }
    inkan_tests::wait_until_registry_unlocked(&data.db());

    let all: serde_json::Value = serde_json::from_slice(&inkan(&dir, &["list", "--json"]).stdout).unwrap();
    // Everything issued here, plus the enrollment service's own certificate from `init`.
    let all: Vec<_> = all.as_array().unwrap().iter().filter(|c| c["account"] != "inkan-server").collect();
    assert_eq!(all.len(), TOTAL);
    let serials: HashSet<&str> = all.iter().map(|c| c["serial"].as_str().unwrap()).collect();
    assert_eq!(serials.len(), TOTAL, "every serial is distinct");
    assert!(serials.iter().all(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())));

    let started = Instant::now();
    let expiring = inkan(&dir, &["list", "--expiring", "30d", "--json"]);
    eprintln!("inkan list --expiring 30d over {TOTAL} certificates: {:.1?}", started.elapsed());
    let expiring: serde_json::Value = serde_json::from_slice(&expiring.stdout).unwrap();
    let expiring = expiring.as_array().unwrap();
    // Days 1..=30 of every 400: 30 / 400 of the certificates.
    assert_eq!(expiring.len(), TOTAL * 30 / 400);
    assert!(expiring.iter().all(|c| c["status"] == "valid"));
    let mut last = String::new();
    for c in expiring {
        let not_after = c["not_after"].as_str().unwrap().to_owned();
        assert!(not_after >= last, "sorted by expiry");
        last = not_after;
    }

    let started = Instant::now();
    let one_account = inkan(&dir, &["list", "--account", "user-7", "--json"]);
    eprintln!("inkan list --account over {TOTAL} certificates: {:.1?}", started.elapsed());
    let one_account: serde_json::Value = serde_json::from_slice(&one_account.stdout).unwrap();
    assert_eq!(one_account.as_array().unwrap().len(), TOTAL / 1000);
}
