//! Crash safety (issue 4): under sustained concurrent enrollment through the HTTPS API, the
//! signer is killed with SIGKILL — and, in other trials, the whole service — at random moments.
//! After each restart: every certificate a client received is in the registry with the same
//! bytes and the right status, no serial was handed out twice, the stores open cleanly, and
//! the cut-off enrollments can be done again.
//!
//! `INKAN_CRASH_TRIALS` sets the number of trials (default 6; the full test run uses 50).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca::Registry;

const ROOT_PASS: &str = "crash test root passphrase";
const CA_PASS: &str = "crash test issuing passphrase";
const USER_PASS: &str = "crash test user password";
const ACCOUNTS: usize = 4;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn inkan(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(args)
        .env("INKAN_DATA_DIR", dir)
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS)
        .env("INKAN_USER_PASSWORD", USER_PASS)
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `inkan serve` (with its child signer).
struct Service {
    child: Child,
    public: u16,
    signer_pid: u32,
}

impl Service {
    fn start(dir: &Path, pass_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inkan"))
            .args(["serve", "--data-dir", s(dir), "--ca-passphrase-file", s(pass_file)])
            .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .env_remove("INKAN_CA_PASSPHRASE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut public, mut signer_pid) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while public.is_none() || signer_pid.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("serve did not come up within 60 s: the stores must open cleanly after a crash");
            if let Some(rest) = line.split("https://localhost:").nth(1)
                && line.contains("/cert/acquire")
            {
                public = rest.split('/').next().and_then(|p| p.parse().ok());
            }
            if let Some(rest) = line.trim().strip_prefix("signer: process ") {
                signer_pid = rest.split_whitespace().next().and_then(|p| p.parse().ok());
            }
        }
        Self { child, public: public.unwrap(), signer_pid: signer_pid.unwrap() }
    }

    fn kill(pid: u32, signal: &str) {
        let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
    }

    /// SIGTERM and wait (bounded).
    fn stop(mut self) {
        Self::kill(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not stop within 20 s");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a client received: account, serial, certificate PEM.
type Received = Vec<(String, String, String)>;

/// One enrollment through the API with curl: ticket, then CSR. `None` when the service or
/// the signer is down (connection errors, 5xx).
fn enroll(port: u16, root: &Path, account: &str, csr_json: &Path) -> Result<(String, String), String> {
    let curl = |path: &str, body: &str| -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "15", "--cacert", s(root), "-H", "content-type: application/json"])
            .args(["--data-binary", body, "-w", "\n%{http_code}"])
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        match code {
            "201" => Ok(body.to_owned()),
            _ => Err(format!("{path}: HTTP {code} {body} {}", String::from_utf8_lossy(&out.stderr))),
        }
    };
    let ticket: serde_json::Value = serde_json::from_str(&curl(
        "/api/v1/enrollments",
        &format!(r#"{{"login_id":"{account}","password":"{USER_PASS}"}}"#),
    )?)
    .map_err(|e| e.to_string())?;
    let ticket = ticket["ticket"].as_str().ok_or("no ticket")?.to_owned();
    let issued: serde_json::Value =
        serde_json::from_str(&curl(&format!("/api/v1/enrollments/{ticket}/csr"), &format!("@{}", s(csr_json)))?)
            .map_err(|e| e.to_string())?;
    Ok((
        issued["serial"].as_str().ok_or("no serial")?.to_owned(),
        issued["certificate_pem"].as_str().unwrap_or("").to_owned(),
    ))
}

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

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(inkan(&dir, &["init"]));
    let config = dir.join("inkan.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // Every enrollment is a reissue (the window is longer than the validity): each account
    // keeps one valid certificate and a growing line of superseded ones.
    let text = text
        .replace("renewal_window_days = 30", "renewal_window_days = 400")
        .replace("rate_limit_per_minute = 30", "rate_limit_per_minute = 1000000");
    std::fs::write(&config, text).unwrap();
    let pass_file = tmp.path().join("ca.pass");
    std::fs::write(&pass_file, format!("{CA_PASS}\n")).unwrap();
    let root = dir.join("root/root.crt");
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("user{i}")).collect();
    for account in &accounts {
        ok(inkan(&dir, &["user", "add", "--login-id", account, "--role", "master"]));
    }
    // One key and CSR per account, made once (the CA takes the subject from the account).
    let mut csr_files = HashMap::new();
    for account in &accounts {
        let key = tmp.path().join(format!("{account}.key"));
        let csr = tmp.path().join(format!("{account}.csr"));
        let run = |args: &[&str]| assert!(Command::new("openssl").args(args).status().unwrap().success());
        run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", s(&key)]);
        run(&["req", "-new", "-key", s(&key), "-subj", "/CN=x", "-out", s(&csr)]);
        let body = serde_json::json!({ "csr_pem": std::fs::read_to_string(&csr).unwrap() });
        let json = tmp.path().join(format!("{account}.json"));
        std::fs::write(&json, body.to_string()).unwrap();
        csr_files.insert(account.clone(), json);
    }

    let mut received: Received = Vec::new();
    let mut refused_during_outage = 0usize;
    for trial in 0..trials {
        let service = Service::start(&dir, &pass_file);
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
            Service::kill(service.signer_pid, "-KILL");
            // The service answers 503 while its supervisor restarts the signer, then recovers.
            std::thread::sleep(Duration::from_millis(1500 + rng.below(1000)));
        } else {
            Service::kill(service.child.id(), "-KILL");
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
        let service = Service::start(&dir, &pass_file);
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
