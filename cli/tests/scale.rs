//! Scale: serial uniqueness over 100k issuances, and `inkan list --expiring` over a registry
//! of 100k certificates (issue 2). Prints how long the listing took; asserts only results.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::Instant;

use ca::SledStore;
use ca::layout::DataDir;

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

/// A new data directory (in the temporary directory returned) whose registry holds `TOTAL`
/// certificates issued through the library (an `inkan issue` process per certificate would
/// measure process start-up 100k times), to 1000 accounts user-N, valid 1 to 400 days.
///
/// Both tests need the same registry: the first to get here makes it once into the target
/// directory (under a file lock, named after the binaries that made it, so a rebuild makes a
/// new one) and each test works on its own copy.
fn registry_of_100k() -> (tempfile::TempDir, std::path::PathBuf, DataDir) {
    let made = made_once();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_tree(&made, &dir);
    let data = DataDir::new(&dir);
    (tmp, dir, data)
}

/// The directory holding the data directory both tests copy, made if missing.
fn made_once() -> std::path::PathBuf {
    let stamp = |path: &std::path::Path| {
        let meta = std::fs::metadata(path).unwrap();
        let modified = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
        format!("{}-{}", meta.len(), modified.as_nanos())
    };
    let key = format!(
        "{}-{}",
        stamp(std::path::Path::new(env!("CARGO_BIN_EXE_inkan"))),
        stamp(&std::env::current_exe().unwrap())
    );
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scale-100k");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    lock.lock().unwrap();
    let made = root.join(&key);
    if !made.join("complete").exists() {
        // Older registries (other binaries) and a half-made one are removed first.
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        let dir = made.join("data");
        inkan(&dir, &["init"]);
        let took = inkan_tests::issue_many(&made, &dir, CA_PASS, TOTAL, 1000, THREADS);
        eprintln!("issued {TOTAL} certificates in {took:.1?} with {THREADS} threads");
        inkan_tests::wait_until_registry_unlocked(&DataDir::new(&dir).db());
        std::fs::write(made.join("complete"), b"").unwrap();
    }
    made.join("data")
}

/// Copies the directory tree `from` to `to` (files and directories only).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let permissions = entry.metadata().unwrap().permissions();
            std::fs::set_permissions(&target, permissions).unwrap();
        }
    }
}

#[test]
fn serials_stay_unique_and_expiry_listing_scans_a_range_over_100k_certificates() {
    let (_tmp, dir, _data) = registry_of_100k();

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

    // A page: the same first hundred, read without going through the whole registry.
    let started = Instant::now();
    let page = inkan(&dir, &["list", "--expiring", "30d", "--limit", "100", "--json"]);
    eprintln!("inkan list --expiring 30d --limit 100 over {TOTAL} certificates: {:.1?}", started.elapsed());
    let page: serde_json::Value = serde_json::from_slice(&page.stdout).unwrap();
    let serials = |list: &[serde_json::Value]| list.iter().map(|c| c["serial"].clone()).collect::<Vec<_>>();
    assert_eq!(serials(page.as_array().unwrap()), serials(&expiring[..100]));
    let table = inkan(&dir, &["list", "--expiring", "30d", "--limit", "100"]);
    assert!(String::from_utf8_lossy(&table.stderr).contains("100 certificate(s) shown; more match"));

    // The counts by status, from the registry's counters, are what the listing says.
    let started = Instant::now();
    let counted = inkan(&dir, &["count", "--expiring", "30d", "--json"]);
    eprintln!("inkan count --expiring 30d over {TOTAL} certificates: {:.1?}", started.elapsed());
    let counted: serde_json::Value = serde_json::from_slice(&counted.stdout).unwrap();
    assert_eq!(counted["valid"], TOTAL + 1, "{counted}");
    assert_eq!(counted["total"], TOTAL + 1, "{counted}");
    assert_eq!(counted["valid_expiring"], expiring.len(), "{counted}");
    for status in ["expired", "revoked", "superseded", "pending"] {
        assert_eq!(counted[status], 0, "{counted}");
    }

    let started = Instant::now();
    let one_account = inkan(&dir, &["list", "--account", "user-7", "--json"]);
    eprintln!("inkan list --account over {TOTAL} certificates: {:.1?}", started.elapsed());
    let one_account: serde_json::Value = serde_json::from_slice(&one_account.stdout).unwrap();
    assert_eq!(one_account.as_array().unwrap().len(), TOTAL / 1000);
}

/// The answers of `inkan ARGS --json` on `dir`, sorted by serial (or login ID).
fn answers(dir: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out: serde_json::Value = serde_json::from_slice(&inkan(dir, args).stdout).unwrap();
    let mut list = out.as_array().unwrap().clone();
    list.sort_by_key(|v| v.get("serial").or_else(|| v.get("login_id")).map(ToString::to_string));
    list
}

#[test]
fn storage_migrate_moves_100k_certificates_and_300_accounts_with_the_same_answers() {
    let (_tmp, dir, data) = registry_of_100k();

    // History: every 100th certificate revoked (a third of them superseded by a reissue), a
    // few keys blocked, CRL numbers handed out; 300 accounts in the account store.
    {
        use pki::registry::Registry;
        let store = SledStore::open(&data.db()).unwrap();
        let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        for (n, record) in store.all().unwrap().iter().filter(|r| r.account != "inkan-server").enumerate() {
            if n % 100 == 0 {
                let reason = if n % 300 == 0 {
                    pki::RevocationReason::Superseded
                } else {
                    pki::RevocationReason::CessationOfOperation
                };
                store.revoke(&record.serial, now, reason).unwrap();
            }
            if n % 20_000 == 0 {
                store.block_key(&[(n / 20_000) as u8; 32], &record.serial, now).unwrap();
            }
        }
        for _ in 0..7 {
            store.next_crl_number().unwrap();
        }
        let web = enroll_server::stores::sled::SledStores::open(&data.web()).unwrap();
        let accounts = web.accounts();
        for n in 0..300 {
            let role =
                if n % 10 == 0 { enroll_server::stores::Role::Master } else { enroll_server::stores::Role::General };
            let master = format!("acct-{:03}", n - n % 10);
            accounts
                .insert(&enroll_server::stores::Account {
                    login_id: format!("acct-{n:03}"),
                    role,
                    master,
                    // The hash of no password: these accounts are only listed.
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
                    failed_attempts: (n % 3) as u32,
                    locked: n % 50 == 0,
                    active: n % 70 != 0,
                    created_at: now,
                    allowed_names: Vec::new(),
                    confirmation_hash: None,
                    card_sealed: None,
                    personal: false,
                    otp_required: false,
                    otp_step_secs: None,
                })
                .unwrap();
        }
    }

    let questions: [&[&str]; 5] = [
        &["list", "--json"],
        &["list", "--expiring", "30d", "--json"],
        &["list", "--account", "user-7", "--json"],
        &["list", "--revoked", "--json"],
        &["user", "list", "--json"],
    ];
    let before: Vec<_> = questions.iter().map(|q| answers(&dir, q)).collect();
    let samples: Vec<String> =
        before[0].iter().step_by(9_973).map(|c| c["serial"].as_str().unwrap().to_owned()).collect();
    let shown_before: Vec<_> = samples.iter().map(|s| inkan(&dir, &["show", s, "--pem"]).stdout).collect();
    let count = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&inkan(dir, &["count", "--expiring", "30d", "--json"]).stdout).unwrap()
    };
    let counted_before = count(&dir);
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for c in &before[0] {
        *by_status.entry(c["status"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for (status, n) in &by_status {
        assert_eq!(counted_before[status], *n, "{status}: {counted_before}");
    }
    assert_eq!((&counted_before["revoked"], &counted_before["superseded"]), (&666.into(), &334.into()));
    assert_eq!(counted_before["valid_expiring"], before[1].len(), "{counted_before}");

    let cluster = inkan_tests::postgres::Cluster::start();
    let url = cluster.database("moved");
    let started = Instant::now();
    let moved = inkan(&dir, &["storage", "migrate", "--to", &url]);
    eprintln!("storage migrate of {TOTAL} certificates and 300 accounts: {:.1?}", started.elapsed());
    let report = String::from_utf8_lossy(&moved.stdout);
    assert!(report.contains("every store is the same on both sides"), "{report}");
    assert!(report.lines().any(|l| l.starts_with("registry") && l.contains(&format!(" {} ", TOTAL + 1))), "{report}");
    assert!(report.contains("5 blocked key(s) and CRL number 7"), "{report}");

    let config = data.config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\"")))
        .unwrap();
    for (question, was) in questions.iter().zip(&before) {
        let started = Instant::now();
        let now = answers(&dir, question);
        eprintln!("inkan {} on PostgreSQL: {} answers in {:.1?}", question.join(" "), now.len(), started.elapsed());
        assert!(!now.is_empty());
        assert_eq!(&now, was, "inkan {question:?} answers the same from both");
    }
    assert_eq!(count(&dir), counted_before, "inkan count answers the same from both");
    for (serial, was) in samples.iter().zip(&shown_before) {
        assert_eq!(&inkan(&dir, &["show", serial, "--pem"]).stdout, was, "show {serial}");
    }
}
