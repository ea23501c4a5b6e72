//! The registry's operator queries over many certificates, sled beside PostgreSQL: N
//! certificates (default 1,000,000) issued through the library's real record path (the
//! signer's ledger, then the registry) into a data directory; then `inkan list --expiring 30d`
//! (whole, and its first 100 with `--limit 100`), `inkan list --account`, `inkan show` and
//! `inkan count` timed on sled, alone and with `inkan serve` running (the signer's and the
//! service's start, and their memory, measured); the stores moved with `inkan storage migrate`
//! (timed) into a throwaway PostgreSQL 15 cluster; the same commands timed there. Every answer
//! is checked (the expiring count is known from how the certificates were made).
//!
//! `cargo bench -p inkan --bench storage [-- N]`. Needs `openssl` and `postgresql`
//! (`INKAN_BENCH_POSTGRES=0` leaves PostgreSQL out: at ten million its migration alone takes
//! most of an hour). The data goes under `INKAN_BENCH_DIR` or the target directory. Each run's
//! figures are kept in `bench/results/storage.json` (one entry per N, replaced by a new run
//! of the same N), from which it writes `storage.md` (the table the README shows) and
//! `storage.svg` (times against N); `-- --report` writes those two again without running.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ca::layout::DataDir;

#[path = "support/plot.rs"]
mod plot;
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
            Ok(object @ serde_json::Value::Object(_)) => vec![object],
            _ => vec![serde_json::Value::String(String::from_utf8_lossy(&out).into_owned())],
        };
    }
    Ok((best, answer))
}

/// Makes the certificates; returns how many a second.
fn generate(work: &Path, dir: &Path, total: usize) -> f64 {
    let took = inkan_tests::issue_many_through_ledger(work, dir, CA_PASS, total, ACCOUNTS, THREADS);
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "generated {total} certificates through the signer's ledger and the registry in {took:.1?} ({rate:.0}/s, {THREADS} threads)"
    );
    rate
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

/// One run's figures, in the order they were measured: (what, value).
type Figures = Vec<(String, f64)>;

/// "305120 kB" (a /proc status field) in MB.
fn megabytes(field: &str) -> f64 {
    field.trim_end_matches(" kB").trim().parse::<f64>().map_or(f64::NAN, |kb| kb / 1024.0)
}

fn bench() -> Result<(), String> {
    if std::env::args().any(|a| a == "--report") {
        // Only the table and the plot again, from the figures kept.
        return report(None);
    }
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    if total < 400 {
        return Err("N must be at least 400 (one certificate per validity from 1 to 400 days)".into());
    }
    let postgres = std::env::var("INKAN_BENCH_POSTGRES").map_or(true, |v| v != "0");
    let mut figures: Figures = Vec::new();
    let root = bench_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let tmp = tempfile::Builder::new().prefix("inkan-bench-storage-").tempdir_in(&root).map_err(|e| e.to_string())?;
    let work = tmp.path();
    let dir = work.join("data");
    inkan(&dir, &["init"])?;
    figures
        .push(("generated through the ledger and the registry (certificates/s)".into(), generate(work, &dir, total)));
    let data = DataDir::new(&dir);
    let per_certificate = |bytes: u64| bytes as f64 / total as f64;
    let sled_bytes = per_certificate(dir_bytes(&data.db()));
    println!("sled registry on disk: {sled_bytes:.0} bytes per certificate");
    let ledger_bytes = per_certificate(std::fs::metadata(data.ledger()).map(|m| m.len()).unwrap_or(0));
    println!("signer's ledger on disk: {ledger_bytes:.0} bytes per certificate");
    let index_bytes =
        per_certificate(std::fs::metadata(data.ledger().with_extension("idx")).map(|m| m.len()).unwrap_or(0));
    println!("signer's ledger index on disk: {index_bytes:.0} bytes per certificate");
    figures.push(("sled registry on disk (bytes/certificate)".into(), sled_bytes));
    figures.push(("signer's ledger on disk (bytes/certificate)".into(), ledger_bytes));
    figures.push(("signer's ledger index on disk (bytes/certificate)".into(), index_bytes));

    // 30 of every 400 validities end within 30 days, plus whatever `init` made that does.
    let expiring_at_least = total / 400 * 30;
    let questions: [(&str, &[&str]); 5] = [
        ("list --expiring 30d", &["list", "--expiring", "30d", "--json"]),
        ("list --expiring 30d --limit 100", &["list", "--expiring", "30d", "--limit", "100", "--json"]),
        ("list --account user-7", &["list", "--account", "user-7", "--json"]),
        ("show SERIAL --pem", &["show", "SERIAL", "--pem"]),
        ("count --expiring 30d", &["count", "--expiring", "30d", "--json"]),
    ];
    let (_, some) = timed(&dir, &["list", "--account", "user-7", "--json"])?;
    let serial = some.first().and_then(|c| c["serial"].as_str()).ok_or("user-7 has no certificate")?.to_owned();
    let run_all = |label: &str, figures: &mut Figures| -> Result<Vec<Vec<serde_json::Value>>, String> {
        let mut answers = Vec::new();
        for (name, args) in &questions {
            let args: Vec<&str> = args.iter().map(|a| if *a == "SERIAL" { serial.as_str() } else { a }).collect();
            let (took, answer) = timed(&dir, &args)?;
            let ms = took.as_secs_f64() * 1e3;
            println!(
                "{label:<12} inkan {name:<32} {ms:>9.1} ms  ({} answers, best of 3, process start included)",
                answer.len()
            );
            figures.push((format!("{label}: `inkan {name}` (ms)"), ms));
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
        let counted = answers[4].first().ok_or("count gave no answer")?;
        let expiring = answers[0].len() as u64;
        if counted["valid_expiring"].as_u64() != Some(expiring) || counted["valid"].as_u64() < Some(total as u64) {
            return Err(format!("{label}: count says {counted}, but {expiring} expire within 30 days of {total}"));
        }
        Ok(answers)
    };
    let on_sled = run_all("sled", &mut figures)?;

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
    let signer_rss = rss(signer.id());
    println!(
        "inkan signer on a ledger of {total} certificates: answering after {:.0} ms, resident memory {signer_rss}",
        answering.as_secs_f64() * 1e3,
    );
    figures.push(("`inkan signer`: start to first answer (ms)".into(), answering.as_secs_f64() * 1e3));
    figures.push(("`inkan signer`: resident then (MB)".into(), megabytes(&signer_rss)));
    drop(stdin);
    let _ = signer.wait();

    let started = Instant::now();
    let service = support::start_inkan(Command::new(env!("CARGO_BIN_EXE_inkan")), &dir, &pass_file, true);
    let ready = started.elapsed().as_secs_f64() * 1e3;
    println!("inkan serve on {total} certificates: ready in {ready:.0} ms");
    let (worker_ready, signer_ready) = (rss(service.worker), rss(service.signer));
    println!("resident memory when ready: web worker {worker_ready}, signer {signer_ready}");
    figures.push(("`inkan serve`: start to ready (ms)".into(), ready));
    figures.push(("web worker resident when ready (MB)".into(), megabytes(&worker_ready)));
    let through_service = run_all("sled+serve", &mut figures)?;
    let (worker_now, worker_peak) = (rss(service.worker), status_field(service.worker, "VmHWM"));
    println!(
        "resident memory after the questions: web worker {worker_now} (peak {worker_peak}), signer {} (peak {})",
        rss(service.signer),
        status_field(service.signer, "VmHWM")
    );
    figures.push(("web worker resident after the questions (MB)".into(), megabytes(&worker_now)));
    figures.push(("web worker peak (MB)".into(), megabytes(&worker_peak)));
    drop(service);
    let same = |a: &[Vec<serde_json::Value>], b: &[Vec<serde_json::Value>], what: &str| -> Result<(), String> {
        // Lists sorted by serial first: the backends may order ties apart.
        let sorted = |mut v: Vec<serde_json::Value>| {
            v.sort_by_key(|c| c["serial"].as_str().map(str::to_owned));
            v
        };
        for ((name, _), (a, b)) in questions.iter().zip(a.iter().zip(b)) {
            if name.starts_with("count") && what.contains("without") {
                // The service's first start issues its OCSP responder's certificate: one more
                // valid certificate, none expiring within 30 days.
                if a[0]["valid_expiring"] != b[0]["valid_expiring"] {
                    return Err(format!("inkan {name}: {} against {}", a[0], b[0]));
                }
                continue;
            }
            if sorted(a.clone()) != sorted(b.clone()) {
                let first = |v: &[serde_json::Value]| v.first().map(ToString::to_string).unwrap_or_default();
                return Err(format!("inkan {name}: the answers {what} differ ({} against {})", first(a), first(b)));
            }
        }
        Ok(())
    };
    same(&on_sled, &through_service, "with the service running and without")?;

    if postgres {
        let cluster = inkan_tests::postgres::Cluster::start();
        let url = cluster.database("bench");
        let (_, took) = inkan(&dir, &["storage", "migrate", "--to", &url])?;
        println!(
            "inkan storage migrate of {total} certificates: {:.1?} ({:.0}/s)",
            took,
            total as f64 / took.as_secs_f64()
        );
        figures.push(("`inkan storage migrate` to PostgreSQL (s)".into(), took.as_secs_f64()));
        let config = data.config();
        let text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
        std::fs::write(
            &config,
            text.replace("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\"")),
        )
        .map_err(|e| e.to_string())?;
        let on_pg = run_all("PostgreSQL", &mut figures)?;
        same(&through_service, &on_pg, "on sled and on PostgreSQL")?;
    } else {
        println!("INKAN_BENCH_POSTGRES=0: PostgreSQL left out");
    }
    report(Some((total, figures)))
}

/// Keeps this run's figures in bench/results/storage.json (replacing an earlier run of the
/// same N) and writes storage.md (a column per N) and storage.svg (the query times with the
/// service running, against N).
fn report(run: Option<(usize, Figures)>) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let kept = dir.join("storage.json");
    let mut runs: Vec<serde_json::Value> = match std::fs::read(&kept) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", kept.display()))?,
        Err(_) => Vec::new(),
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    if let Some((total, figures)) = run {
        runs.retain(|run| run["certificates"].as_u64() != Some(total as u64));
        let date = time::OffsetDateTime::now_utc().date().to_string();
        runs.push(serde_json::json!({ "certificates": total, "date": date, "cores": cores, "figures": figures }));
    }
    runs.sort_by_key(|run| run["certificates"].as_u64());
    let parsed: Vec<(u64, String, Figures)> = runs
        .iter()
        .map(|run| {
            let figures = serde_json::from_value(run["figures"].clone()).unwrap_or_default();
            (run["certificates"].as_u64().unwrap_or(0), run["date"].as_str().unwrap_or("?").to_owned(), figures)
        })
        .collect();
    let mut rows: Vec<&str> = Vec::new();
    for (_, _, figures) in &parsed {
        for (what, _) in figures {
            if !rows.contains(&what.as_str()) {
                rows.push(what);
            }
        }
    }
    let mut table = String::from(
        "# The registry at scale\n\nWritten by `cargo bench -p inkan --bench storage -- N` (one column per N; a run \
         replaces its N's column). Command times are the best of three and include the `inkan` process's start; \
         \"sled+serve\" asks the running service over its admin socket.\n\n| |",
    );
    for (n, date, _) in &parsed {
        table.push_str(&format!(" {n} certificates ({date}) |"));
    }
    table.push_str(&format!("\n|---|{}\n", "---|".repeat(parsed.len())));
    for row in &rows {
        table.push_str(&format!("| {row} |"));
        for (_, _, figures) in &parsed {
            match figures.iter().find(|(what, _)| what == row) {
                Some((_, v)) if v.is_finite() && *v >= 100.0 => table.push_str(&format!(" {v:.0} |")),
                Some((_, v)) if v.is_finite() => table.push_str(&format!(" {v:.1} |")),
                _ => table.push_str(" – |"),
            }
        }
        table.push('\n');
    }
    table.push_str("\n![query times against the number of certificates](storage.svg)\n");
    let plotted = [
        "sled+serve: `inkan list --expiring 30d --limit 100` (ms)",
        "sled+serve: `inkan count --expiring 30d` (ms)",
        "sled+serve: `inkan show SERIAL --pem` (ms)",
        "sled+serve: `inkan list --account user-7` (ms)",
    ];
    let series: Vec<plot::Series<'_>> = plotted
        .iter()
        .map(|name| plot::Series {
            name: name.trim_start_matches("sled+serve: `inkan ").trim_end_matches("` (ms)"),
            points: parsed
                .iter()
                .filter_map(|(n, _, figures)| figures.iter().find(|(w, _)| w == name).map(|(_, v)| (*n as f64, *v)))
                .collect(),
        })
        .collect();
    let svg = plot::svg(
        &format!("Operator commands, inkan serve running, {cores} cores"),
        "certificates in the registry",
        "milliseconds (process start included)",
        &series,
    );
    let json = serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())?;
    for (name, contents) in [("storage.json", json), ("storage.svg", svg), ("storage.md", table)] {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
