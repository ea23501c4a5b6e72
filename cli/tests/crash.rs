//! Crash safety (issue 4): under sustained concurrent enrollment through the HTTPS API, the
//! signer is killed with SIGKILL — and, in other trials, the whole service — at random moments.
//! After each restart: every certificate a client received is in the registry with the same
//! bytes and the right status, no serial was handed out twice, the stores open cleanly, and
//! the cut-off enrollments can be done again.
//!
//! `INKAN_CRASH_TRIALS` sets the number of trials (default 6; the full test run uses 50).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca::Registry;
use common::{Service, TestCa, enroll_with_curl as enroll, kill, p256_csr};

const ACCOUNTS: usize = 4;

/// What a client received: account, serial, certificate PEM.
type Received = Vec<(String, String, String)>;

/// A tiny deterministic generator for the kill moments (seeded, printed, reproducible).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_the_signer_or_the_service_under_load_and_lose_nothing() {
    let trials: usize = std::env::var("INKAN_CRASH_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(6);
    let seed = std::env::var("INKAN_CRASH_SEED").ok().and_then(|t| t.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
    });
    eprintln!("crash test: {trials} trials, seed {seed} (INKAN_CRASH_SEED={seed} to repeat)");
    let mut rng = Lcg(seed);

    // Every enrollment is a reissue (the window is longer than the validity): each account
    // keeps one valid certificate and a growing line of superseded ones.
    let ca = TestCa::with_rate_limit(1_000_000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    let dir = ca.data.clone();
    let root = ca.root_crt();
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("user{i}")).collect();
    for account in &accounts {
        ca.add_user(account, "master", None);
    }
    // One key and CSR per account, made once (the CA takes the subject from the account).
    let mut csr_files = HashMap::new();
    for account in &accounts {
        let csr = p256_csr(ca.work(), account);
        let body = serde_json::json!({ "csr_pem": std::fs::read_to_string(&csr).unwrap() });
        let json = ca.work().join(format!("{account}.json"));
        std::fs::write(&json, body.to_string()).unwrap();
        csr_files.insert(account.clone(), json);
    }

    let mut received: Received = Vec::new();
    let mut refused_during_outage = 0usize;
    for trial in 0..trials {
        let service = Service::start(&ca, &[]);
        let signer_pid = service.signer_pid.expect("serve started its own signer");
        let kill_signer_only = trial % 2 == 0;
        let running = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0usize));
        let workers: Vec<_> = accounts
            .iter()
            .map(|account| {
                let (running, got, failures) = (running.clone(), got.clone(), failures.clone());
                let (account, json, root, port) =
                    (account.clone(), csr_files[account].clone(), root.clone(), service.public);
                std::thread::spawn(move || {
                    while running.load(Ordering::SeqCst) {
                        match enroll(port, &root, &account, &json) {
                            Ok((serial, pem)) => got.lock().unwrap().push((account.clone(), serial, pem)),
                            Err(_) => {
                                *failures.lock().unwrap() += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + rng.below(1200)));
        if kill_signer_only {
            kill("KILL", signer_pid);
            // The service answers 503 while its supervisor restarts the signer, then recovers.
            std::thread::sleep(Duration::from_millis(1500 + rng.below(1000)));
        } else {
            service.serve.signal("KILL");
            std::thread::sleep(Duration::from_millis(100));
        }
        running.store(false, Ordering::SeqCst);
        for worker in workers {
            worker.join().unwrap();
        }
        let got = std::mem::take(&mut *got.lock().unwrap());
        refused_during_outage += *failures.lock().unwrap();
        eprintln!(
            "trial {trial}: killed the {} under load; {} certificates received",
            if kill_signer_only { "signer" } else { "whole service" },
            got.len()
        );
        received.extend(got);
        if kill_signer_only {
            service.stop();
        } else {
            drop(service);
        }

        // After the restart: cut-off enrollments can be done again, for every account.
        let service = Service::start(&ca, &[]);
        for account in &accounts {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match enroll(service.public, &root, account, &csr_files[account]) {
                    Ok((serial, pem)) => {
                        received.push((account.clone(), serial, pem));
                        break;
                    }
                    Err(e) => {
                        assert!(Instant::now() < deadline, "trial {trial}: {account} cannot enroll after restart: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        service.stop();
        check(&dir, &received, trial);
    }
    eprintln!(
        "{} certificates received over {trials} trials; {refused_during_outage} requests refused during outages",
        received.len()
    );
    assert!(received.len() >= trials * ACCOUNTS, "the load produced certificates");
}

/// The registry (opened directly: the service is stopped) against what clients received.
fn check(dir: &Path, received: &Received, trial: usize) {
    let registry = ca::SledStore::open(&dir.join("db")).unwrap_or_else(|e| panic!("trial {trial}: registry: {e}"));
    let now = time::OffsetDateTime::now_utc();
    let mut serials = HashSet::new();
    let mut last_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (account, serial, pem) in received {
        assert!(serials.insert(serial.as_str()), "trial {trial}: serial {serial} was handed out twice");
        let parsed: pki::Serial = serial.parse().unwrap();
        let record = registry
            .get(&parsed)
            .unwrap()
            .unwrap_or_else(|| panic!("trial {trial}: {serial}, received by a client, is not in the registry"));
        assert_eq!(&record.account, account, "trial {trial}");
        let der = registry.certificate_der(&parsed).unwrap().unwrap();
        assert_eq!(pki::encoding::pem_encode("CERTIFICATE", &der), *pem, "trial {trial}: {serial} differs");
        last_of.insert(account, serial);
    }
    // Each account: its most recent certificate is valid, every other one superseded.
    let mut by_account: HashMap<String, Vec<ca::CertRecord>> = HashMap::new();
    for record in registry.all().unwrap() {
        if record.account.starts_with("user") {
            by_account.entry(record.account.clone()).or_default().push(record);
        }
    }
    for (account, records) in &by_account {
        let valid: Vec<_> = records.iter().filter(|r| r.status(now) == ca::Status::Valid).collect();
        assert_eq!(valid.len(), 1, "trial {trial}: {account} has {} valid certificates", valid.len());
        assert_eq!(
            valid[0].serial.to_string(),
            last_of[account.as_str()],
            "trial {trial}: {account}'s valid certificate is the last one received"
        );
        for r in records {
            let status = r.status(now);
            assert!(
                matches!(status, ca::Status::Valid | ca::Status::Superseded),
                "trial {trial}: {} of {account} is {status:?}",
                r.serial
            );
        }
    }
}
