//! The registry's operator queries over many certificates, sled beside PostgreSQL: N
//! certificates (default 1,000,000) issued through the library's real record path into a data
//! directory's sled registry, then `inkan list --expiring 30d` (whole, and its first 100 with
//! `--limit 100`), `inkan list --account`, and `inkan show` timed on sled; the stores moved with `inkan storage migrate` (timed) into a
//! throwaway PostgreSQL 15 cluster; the same commands timed there. Every answer is checked
//! (the expiring count is known from how the certificates were made).
//!
//! `cargo bench -p inkan --bench storage [-- N]`. Needs `openssl` and `postgresql`. The files
//! go under `INKAN_BENCH_DIR` or the target directory.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ca::layout::DataDir;

mod support;

const ROOT_PASS: &str = "storage bench root passphrase";
const CA_PASS: &str = "storage bench issuing passphrase";
const THREADS: usize = 16;
const ACCOUNTS: usize = 1000;

fn inkan(dir: &Path, args: &[&str]) -> Result<(Vec<u8>, Duration), String> {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS)
        .output()
        .map_err(|e| format!("running inkan: {e}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("inkan {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok((out.stdout, took))
}

/// The best of three runs of `inkan ARGS --json`, and its answers.
fn timed(dir: &Path, args: &[&str]) -> Result<(Duration, Vec<serde_json::Value>), String> {
    let mut best = Duration::MAX;
    let mut answer = Vec::new();
    for _ in 0..3 {
        let (out, took) = inkan(dir, args)?;
        best = best.min(took);
        answer = match serde_json::from_slice::<serde_json::Value>(&out) {
            Ok(serde_json::Value::Array(list)) => list,
            _ => vec![serde_json::Value::String(String::from_utf8_lossy(&out).into_owned())],
        };
    }
    Ok((best, answer))
}

fn generate(work: &Path, dir: &Path, total: usize) {
    let took = inkan_tests::issue_many_through_ledger(work, dir, CA_PASS, total, ACCOUNTS, THREADS);
    println!(
        "generated {total} certificates through the signer's ledger and the registry in {took:.1?} ({:.0}/s, {THREADS} threads)",
        total as f64 / took.as_secs_f64()
    );
}

fn rss(pid: u32) -> String {
    status_field(pid, "VmRSS")
}

/// A field of /proc/PID/status (VmRSS: resident now, VmHWM: its peak).
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{field}:");
    status.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or("?".into(), |v| v.trim().to_owned())
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn bench_root() -> PathBuf {
    std::env::var_os("INKAN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-storage"))
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage benchmark failed, no further figures: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    if total < 400 {
        return Err("N must be at least 400 (one certificate per validity from 1 to 400 days)".into());
    }
    let root = bench_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let tmp = tempfile::Builder::new().prefix("inkan-bench-storage-").tempdir_in(&root).map_err(|e| e.to_string())?;
    let work = tmp.path();
    let dir = work.join("data");
    inkan(&dir, &["init"])?;
    generate(work, &dir, total);
    let data = DataDir::new(&dir);
    println!("sled registry on disk: {:.0} bytes per certificate", dir_bytes(&data.db()) as f64 / total as f64);
    let ledger_bytes = std::fs::metadata(data.ledger()).map(|m| m.len()).unwrap_or(0);
    println!("signer's ledger on disk: {:.0} bytes per certificate", ledger_bytes as f64 / total as f64);
    let index_bytes = std::fs::metadata(data.ledger().with_extension("idx")).map(|m| m.len()).unwrap_or(0);
    println!("signer's ledger index on disk: {:.0} bytes per certificate", index_bytes as f64 / total as f64);

    // 30 of every 400 validities end within 30 days, plus whatever `init` made that does.
    let expiring_at_least = total / 400 * 30;
    let questions: [(&str, &[&str]); 4] = [
        ("list --expiring 30d", &["list", "--expiring", "30d", "--json"]),
        ("list --expiring --limit 100", &["list", "--expiring", "30d", "--limit", "100", "--json"]),
        ("list --account user-7", &["list", "--account", "user-7", "--json"]),
        ("show SERIAL --pem", &["show", "SERIAL", "--pem"]),
    ];
    let (_, some) = timed(&dir, &["list", "--account", "user-7", "--json"])?;
    let serial = some.first().and_then(|c| c["serial"].as_str()).ok_or("user-7 has no certificate")?.to_owned();
    let run_all = |label: &str| -> Result<Vec<Vec<serde_json::Value>>, String> {
        let mut answers = Vec::new();
        for (name, args) in &questions {
            let args: Vec<&str> = args.iter().map(|a| if *a == "SERIAL" { serial.as_str() } else { a }).collect();
            let (took, answer) = timed(&dir, &args)?;
            println!(
                "{label:<12} inkan {name:<28} {:>9.1} ms  ({} answers, best of 3, process start included)",
                took.as_secs_f64() * 1e3,
                answer.len()
            );
            answers.push(answer);
        }
        if answers[0].len() < expiring_at_least {
            return Err(format!("{label}: {} expiring, expected at least {expiring_at_least}", answers[0].len()));
        }
        if answers[1].len() != 100.min(answers[0].len()) {
            return Err(format!("{label}: --limit 100 gave {} certificates", answers[1].len()));
        }
        let first: Vec<_> = answers[0].iter().take(100).map(|c| &c["serial"]).collect();
        if answers[1].iter().map(|c| &c["serial"]).collect::<Vec<_>>() != first {
            return Err(format!("{label}: --limit 100 is not the first 100 of the whole list"));
        }
        if answers[2].len() != total / ACCOUNTS {
            return Err(format!(
                "{label}: user-7 has {} certificates, expected {}",
                answers[2].len(),
                total / ACCOUNTS
            ));
        }
        Ok(answers)
    };
    let on_sled = run_all("sled")?;

    // The same questions with the service running: the CLI asks it over the admin socket
    // instead of opening sled itself.
    let pass_file = work.join("ca.pass");
    std::fs::write(&pass_file, format!("{CA_PASS}\n")).map_err(|e| e.to_string())?;
    // The signer alone: from its start to its first answer, and its memory then (it reads its
    // ledger index and replays the ledger beyond it).
    let socket = work.join("bench-signer.sock");
    let started = Instant::now();
    let mut signer = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["signer", "--passphrase-stdin", "--data-dir", s(&dir), "--socket", s(&socket)])
        .env("INKAN_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting inkan signer: {e}"))?;
    let mut stdin = signer.stdin.take().ok_or("the signer's stdin")?;
    std::io::Write::write_all(&mut stdin, format!("{CA_PASS}\n").as_bytes()).map_err(|e| e.to_string())?;
    let client = ca::remote::SignerClient::new(&socket);
    while client.ca_info().is_err() {
        if started.elapsed() > Duration::from_secs(600) {
            let _ = signer.kill();
            return Err("inkan signer did not answer within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let answering = started.elapsed();
    println!(
        "inkan signer on a ledger of {total} certificates: answering after {:.0} ms, resident memory {}",
        answering.as_secs_f64() * 1e3,
        rss(signer.id())
    );
    drop(stdin);
    let _ = signer.wait();

    let started = Instant::now();
    let service = support::start_inkan(Command::new(env!("CARGO_BIN_EXE_inkan")), &dir, &pass_file, true);
    println!("inkan serve on {total} certificates: ready in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    println!("resident memory when ready: web worker {}, signer {}", rss(service.worker), rss(service.signer));
    let through_service = run_all("sled+serve")?;
    println!(
        "resident memory after the questions: web worker {} (peak {}), signer {} (peak {})",
        rss(service.worker),
        status_field(service.worker, "VmHWM"),
        rss(service.signer),
        status_field(service.signer, "VmHWM")
    );
    drop(service);

    let cluster = inkan_tests::postgres::Cluster::start();
    let url = cluster.database("bench");
    let (_, took) = inkan(&dir, &["storage", "migrate", "--to", &url])?;
    println!(
        "inkan storage migrate of {total} certificates: {:.1?} ({:.0}/s)",
        took,
        total as f64 / took.as_secs_f64()
    );
    let config = data.config();
    let text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    std::fs::write(&config, text.replace("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\"")))
        .map_err(|e| e.to_string())?;
    let on_pg = run_all("PostgreSQL")?;
    // The same answers (lists sorted by serial first: the backends may order ties apart).
    let sorted = |mut v: Vec<serde_json::Value>| {
        v.sort_by_key(|c| c["serial"].as_str().map(str::to_owned));
        v
    };
    let sort_all = |answers: Vec<Vec<serde_json::Value>>| -> Vec<_> { answers.into_iter().map(sorted).collect() };
    let (on_sled, through_service, on_pg) = (sort_all(on_sled), sort_all(through_service), sort_all(on_pg));
    for ((name, _), ((a, b), c)) in questions.iter().zip(on_sled.iter().zip(&on_pg).zip(&through_service)) {
        if a != b {
            return Err(format!("inkan {name}: the answers on sled and on PostgreSQL differ"));
        }
        if a != c {
            return Err(format!("inkan {name}: the answers with the service running and without differ"));
        }
    }
    Ok(())
}
