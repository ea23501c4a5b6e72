//! Durable issuance through the HTTPS API, beside the same run with durability off and beside
//! cfssl (Debian's golang-cfssl, `cfssl serve` with a SQLite certificate database, signing the
//! same CSRs with the same CA key over HTTPS). Prints figures only for work that was checked:
//! every answer must be a success, and cfssl's certificate database must hold one row per
//! certificate it signed; otherwise it says why and exits non-zero.
//!
//! `cargo bench -p inkan --bench api [-- REQUESTS]` (default 600 issuances per figure).
//!
//! For inkan one issuance is `POST /api/v1/enrollments/{ticket}/csr`: the service checks the
//! ticket, the signer process validates the CSR, records, signs and records, the service records
//! the certificate and supersedes the account's previous one, each step flushed before the
//! answer. Tickets are made before the clock starts (each costs an argon2id password check,
//! which is not issuance). For cfssl one issuance is `POST /api/v1/cfssl/sign`.
//!
//! The durable figures mean something only on a disk: the files go under `INKAN_BENCH_DIR`,
//! or the system's temporary directory, or (when that is tmpfs) the target directory, and the
//! benchmark refuses to run on tmpfs or ramfs. Beside each rate it prints the fsync and
//! fdatasync calls per issuance, counted by `strace -f -c` attached to inkan's signer and web
//! worker (or to cfssl) during a separate, untimed run at the same number of clients.
//!
//! The same service then runs with its stores moved into PostgreSQL (`inkan storage migrate`,
//! a throwaway PostgreSQL 15 cluster), durable, at the same numbers of clients.
//!
//! After inkan's durable runs it prints the floor of a 1-client issuance here: the p50 of an
//! HTTPS round trip refused before any work, and of one fdatasync of an append.
//!
//! At the end it writes `bench/results/issuance.md` (the table) and `issuance.svg` (issued/s
//! against clients, one line per server) for the README.
//!
//! Needs `cfssl` (Debian package golang-cfssl), `sqlite3`, `strace`, `openssl` and
//! `postgresql`.
//!
//! For finding where the time goes: `INKAN_BENCH_PERF=DIR` records `perf record --call-graph dwarf` (Debian
//! package linux-perf) of the signer and the web worker during each timed durable run into
//! `DIR/durable-N.data` (read with `perf report -i`), and `INKAN_BENCH_ONLY=inkan` stops after
//! inkan's own figures (no PostgreSQL, no cfssl, no files written to bench/results).

#![allow(clippy::unwrap_used)]

#[path = "support/plot.rs"]
mod plot;
mod support;
use support::{Server, start_inkan};

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

const ROOT_PASS: &str = "bench root passphrase";
const CA_PASS: &str = "bench issuing passphrase";
const USER_PASS: &str = "bench user password";
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// The syscalls strace counts: the two that make a file durable, and the range write-back sled
/// uses for its buffers (reported apart: it does not flush the disk's cache or metadata).
const SYNC_CALLS: &str = "trace=fsync,fdatasync,sync_file_range";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inkan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_ROOT_PASSPHRASE", ROOT_PASS).env("INKAN_CA_PASSPHRASE", CA_PASS).env("INKAN_USER_PASSWORD", USER_PASS);
    c
}

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

/// Whether `program` runs at all (`args` is a harmless invocation).
fn installed(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A running `inkan serve`: its public port and the processes that sync (signer, web worker).
/// `perf record --call-graph dwarf` attached to processes until stopped.
struct Profiler {
    child: Child,
    out: PathBuf,
}

impl Profiler {
    fn attach(pids: &[u32], out: &Path) -> Result<Self, String> {
        let pids = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = Command::new("perf")
            .args(["record", "-q", "--call-graph", "dwarf", "-F", "499", "-o", s(out), "-p", &pids])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("INKAN_BENCH_PERF needs perf (Debian package linux-perf): {e}"))?;
        // perf needs a moment to open its events on every thread.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self { child, out: out.to_owned() })
    }

    fn stop(mut self) -> Result<PathBuf, String> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let status = self.child.wait().map_err(|e| format!("waiting for perf: {e}"))?;
        if !status.success() && status.signal() != Some(2) {
            return Err(format!("perf record ended with {status}"));
        }
        Ok(self.out.clone())
    }
}

/// Sync calls counted by strace.
#[derive(Default)]
struct Syncs {
    fsync: u64,
    fdatasync: u64,
    sync_file_range: u64,
}

/// `strace -f -c` attached to some processes, until `finish`.
struct Strace {
    child: Child,
    summary: PathBuf,
}

impl Strace {
    /// Returns once strace says it is attached to every one of `pids`.
    fn attach(pids: &[u32], summary: &Path) -> Result<Self, String> {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-c", "-e", SYNC_CALLS, "-o"]).arg(summary);
        for pid in pids {
            cmd.arg("-p").arg(pid.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting strace: {e}"))?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut waiting: HashSet<u32> = pids.iter().copied().collect();
        let mut said = Vec::new();
        while !waiting.is_empty() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("strace did not attach to processes {pids:?}: {}", said.join("; ")));
            };
            if let Some(pid) = line
                .strip_prefix("strace: Process ")
                .and_then(|rest| rest.strip_suffix(" attached").or_else(|| rest.split(" attached with").next()))
                .and_then(|pid| pid.trim().parse::<u32>().ok())
            {
                waiting.remove(&pid);
            }
            said.push(line);
        }
        // Keep its later messages (threads attached and detached) from filling the pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Ok(Self { child, summary: summary.to_owned() })
    }

    /// Detaches strace (SIGINT) and reads its count.
    fn finish(mut self) -> Result<Syncs, String> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let status = self.child.wait().map_err(|e| format!("waiting for strace: {e}"))?;
        // strace dies of the SIGINT it was sent once it has written its summary.
        if !(status.success() || status.code() == Some(130) || status.signal() == Some(2)) {
            return Err(format!("strace failed ({status})"));
        }
        // strace writes nothing at all when it counted no call.
        let text = std::fs::read_to_string(&self.summary).unwrap_or_default();
        let mut syncs = Syncs::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(calls)) = (fields.last(), fields.get(3).and_then(|c| c.parse().ok())) else {
                continue;
            };
            match *name {
                "fsync" => syncs.fsync = calls,
                "fdatasync" => syncs.fdatasync = calls,
                "sync_file_range" => syncs.sync_file_range = calls,
                _ => {}
            }
        }
        Ok(syncs)
    }
}

struct Client {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(port: u16, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let host = format!("localhost:{port}");
        let send = match tls {
            Some(config) => {
                let name = ServerName::try_from("localhost").unwrap();
                let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                send
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                send
            }
        };
        Self { send, host }
    }

    async fn post(&mut self, path: &str, body: String) -> (u16, Vec<u8>) {
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send.ready().await.unwrap();
        let response = self.send.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }
}

fn tls_config(root: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).unwrap();
    let der = pki::encoding::decode_one(&pem, "certificate", &["CERTIFICATE"]).unwrap();
    roots.add(rustls::pki_types::CertificateDer::from(der)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// `clients` connections, each sending its share of `bodies` to `path_of(i)` one after
/// another; every answer must be `expect`.
async fn load(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    jobs: Vec<(String, String)>,
    expect: u16,
) -> Result<Figures, String> {
    let mut per_client: Vec<Vec<(String, String)>> = vec![Vec::new(); clients];
    for (i, job) in jobs.into_iter().enumerate() {
        per_client[i % clients].push(job);
    }
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Client::connect(port, tls.clone()).await);
    }
    let total: usize = per_client.iter().map(Vec::len).sum();
    let started = Instant::now();
    let tasks: Vec<_> = per_client
        .into_iter()
        .zip(connections)
        .map(|(jobs, mut client)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(jobs.len());
                for (path, body) in jobs {
                    let t = Instant::now();
                    let (status, answer) = client.post(&path, body).await;
                    if status != expect {
                        return Err(format!(
                            "{path} answered {status}, not {expect}: {}",
                            String::from_utf8_lossy(&answer)
                        ));
                    }
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(times)) => latencies.extend(times),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(format!("a client failed: {e}"))),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(Figures { rate: total as f64 / elapsed.as_secs_f64(), p50: at(0.5), p99: at(0.99) })
}

/// `load`, with strace attached to `pids` throughout; returns the sync calls per issuance.
async fn traced_load(
    pids: &[u32],
    summary: &Path,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    jobs: Vec<(String, String)>,
    expect: u16,
) -> Result<(f64, f64), String> {
    let n = jobs.len() as f64;
    let strace = Strace::attach(pids, summary)?;
    let loaded = load(port, tls, clients, jobs, expect).await;
    let syncs = strace.finish()?;
    loaded?;
    Ok(((syncs.fsync + syncs.fdatasync) as f64 / n, syncs.sync_file_range as f64 / n))
}

/// What no issuance at 1 client can go below on this machine, measured beside it: an HTTPS
/// round trip the service refuses before any work (an empty CSR, sent to
/// `ticket`'s issuance route), and one fdatasync of an append in the data's file
/// system (the signer's ledger syncs once per issuance).
/// Returns the two p50s: the round trip and the fdatasync.
async fn floor(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    work: &Path,
    n: usize,
    ticket: String,
) -> Result<(Duration, Duration), String> {
    // An empty CSR is refused before its ticket is claimed: the ticket stays open throughout.
    let refused = (0..n).map(|_| (ticket.clone(), r#"{"csr_pem":""}"#.to_owned())).collect();
    let round_trip = load(port, Some(tls.clone()), 1, refused, 422).await.map_err(|e| format!("floor: {e}"))?;
    let probe = work.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&probe)
        .map_err(|e| format!("{}: {e}", probe.display()))?;
    let mut syncs: Vec<Duration> = (0..n)
        .map(|_| {
            use std::io::Write;
            file.write_all(&[b'x'; 1024]).expect("write");
            let t = Instant::now();
            file.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&probe);
    syncs.sort();
    let sync = syncs[syncs.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "floor at 1 client: an HTTPS round trip refused before any work p50 {:.2} ms, + fdatasync of a 1 KiB \
         append here p50 {:.2} ms = {:.2} ms before any issuing work",
        ms(round_trip.p50),
        ms(sync),
        ms(round_trip.p50 + sync)
    );
    Ok((round_trip.p50, sync))
}

fn csr_pem(dir: &Path, name: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    run(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&key),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-key",
        s(&key),
        "-subj",
        &format!("/CN={name}"),
        "-out",
        s(&csr),
    ]));
    std::fs::read_to_string(csr).unwrap()
}

/// One issuance job per ticket, the tickets made now (off the clock) for the clients' accounts.
async fn inkan_jobs(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    accounts: &[String],
    csrs: &[String],
    clients: usize,
    n: usize,
) -> Result<Vec<(String, String)>, String> {
    let mut ticket_client = Client::connect(port, Some(tls.clone())).await;
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let account = &accounts[i % clients];
        let body = format!(r#"{{"login_id":"{account}","password":"{USER_PASS}"}}"#);
        let (status, answer) = ticket_client.post("/api/v1/enrollments", body).await;
        if status != 201 {
            return Err(format!("a ticket for {account} answered {status}: {}", String::from_utf8_lossy(&answer)));
        }
        let ticket: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        jobs.push((
            format!("/api/v1/enrollments/{}/csr", ticket["ticket"].as_str().unwrap()),
            serde_json::json!({ "csr_pem": &csrs[i % clients] }).to_string(),
        ));
    }
    Ok(jobs)
}

fn print(label: &str, clients: usize, f: &Figures, syncs: (f64, f64)) {
    println!(
        "{label:<34} {clients:>3} clients  {:>8.0} issued/s   p50 {:>7.1} ms   p99 {:>7.1} ms   {:>5.2} fsyncs/issuance (+{:.2} sync_file_range)",
        f.rate,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        syncs.0,
        syncs.1,
    );
}

/// How many certificates cfssl's SQLite certificate database holds.
fn cfssl_rows(db: &Path) -> Result<usize, String> {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg("select count(*) from certificates")
        .output()
        .map_err(|e| format!("running sqlite3: {e}"))?;
    if !out.status.success() {
        return Err(format!("sqlite3 on {}: {}", db.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| format!("sqlite3 answered {text:?} for the row count"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api benchmark failed, no further figures: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), String> {
    let requests: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(600);
    if requests == 0 {
        return Err("REQUESTS must be at least 1".into());
    }
    // What the comparison and the checks need, before anything is measured.
    let cfssl_version = match Command::new("cfssl").arg("version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => {
            return Err("cfssl is not installed: install the Debian package golang-cfssl \
                        (apt-get install golang-cfssl); the comparison is part of this benchmark"
                .into());
        }
    };
    for (program, args, package) in [
        ("sqlite3", &["-version"][..], "sqlite3"),
        ("strace", &["-V"][..], "strace"),
        ("openssl", &["version"][..], "openssl"),
    ] {
        if !installed(program, args) {
            return Err(format!("{program} is not installed: install the Debian package {package}"));
        }
    }
    let cfssl_release =
        cfssl_version.lines().find_map(|l| l.strip_prefix("Version:")).map(str::trim).unwrap_or("(unknown version)");
    let cfssl_label = format!("cfssl {cfssl_release} (SQLite certdb)");

    let root_dir = bench_root();
    std::fs::create_dir_all(&root_dir).map_err(|e| format!("creating {}: {e}", root_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("inkan-bench-api-")
        .tempdir_in(&root_dir)
        .map_err(|e| format!("a directory in {}: {e}", root_dir.display()))?;
    let work = tmp.path();
    let (magic, fs) = fs_type(work);
    if in_memory(&magic) {
        return Err(format!(
            "{} is on {magic}: durable figures there would measure memory, not a disk; \
             set INKAN_BENCH_DIR to a directory on a disk file system",
            work.display()
        ));
    }
    let dir = work.join("data");
    run(inkan().args(["init", "--data-dir", s(&dir)]));
    let config = dir.join("inkan.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("renewal_window_days = 30", "renewal_window_days = 400")
            .replace("rate_limit_per_minute = 30", "rate_limit_per_minute = 100000000"),
    )
    .unwrap();
    let pass_file = work.join("ca.pass");
    std::fs::write(&pass_file, format!("{CA_PASS}\n")).unwrap();
    let max_clients = *CONCURRENCY.iter().max().unwrap();
    let accounts: Vec<String> = (0..max_clients).map(|i| format!("bench{i:02}")).collect();
    for account in &accounts {
        run(inkan().args(["user", "add", "--data-dir", s(&dir), "--login-id", account, "--role", "master"]));
    }
    let csrs: Vec<String> = accounts.iter().map(|a| csr_pem(work, a)).collect();
    let root = dir.join("root/root.crt");
    let tls = tls_config(&root);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("HTTPS issuance benchmark: {requests} issuances per figure, {cores} cores, client in the same machine");
    println!("data (inkan's and cfssl's) in {} on {fs}", work.display());
    println!("compared with `cfssl version`: {}", cfssl_version.lines().collect::<Vec<_>>().join(", "));
    // A smaller, untimed run (strace slows every system call of the processes it watches).
    let traced_n = |clients: usize| requests.min(100.max(2 * clients));
    println!(
        "fsyncs/issuance: fsync + fdatasync calls counted by `strace -f -c` attached to inkan's signer and web \
         worker (cfssl: its process), in a separate untimed run of {}/{}/{} issuances at 1/8/64 clients",
        traced_n(1),
        traced_n(8),
        traced_n(64)
    );
    let summary = work.join("strace.txt");
    let perf_dir = std::env::var_os("INKAN_BENCH_PERF").map(PathBuf::from);
    if let Some(dir) = &perf_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let only_inkan = match std::env::var("INKAN_BENCH_ONLY").as_deref() {
        Ok("inkan") => true,
        Ok(other) => return Err(format!("INKAN_BENCH_ONLY={other}: the one value accepted is `inkan`")),
        Err(_) => false,
    };

    let mut results = Vec::new();
    let mut floors = None;
    for durable in [true, false] {
        let label = if durable { "inkan (durable)" } else { "inkan (durability off)" };
        let server = start_inkan(inkan(), &dir, &pass_file, durable);
        let pids = [server.signer, server.worker];
        for clients in CONCURRENCY {
            let jobs = inkan_jobs(server.port, &tls, &accounts, &csrs, clients, requests).await?;
            let profile = match &perf_dir {
                Some(dir) if durable => Some(Profiler::attach(&pids, &dir.join(format!("durable-{clients}.data")))?),
                _ => None,
            };
            let figures =
                load(server.port, Some(tls.clone()), clients, jobs, 201).await.map_err(|e| format!("{label}: {e}"))?;
            if let Some(profile) = profile {
                println!("  profile of the run above: {}", profile.stop()?.display());
            }
            let jobs = inkan_jobs(server.port, &tls, &accounts, &csrs, clients, traced_n(clients)).await?;
            let syncs = traced_load(&pids, &summary, server.port, Some(tls.clone()), clients, jobs, 201)
                .await
                .map_err(|e| format!("{label}, counting syncs: {e}"))?;
            if durable && syncs.0 == 0.0 {
                return Err(format!("{label}: strace counted no fsync or fdatasync in the signer or the web worker"));
            }
            print(label, clients, &figures, syncs);
            results.push((label.to_owned(), clients, figures));
        }
        if durable {
            let ticket = inkan_jobs(server.port, &tls, &accounts, &csrs, 1, 1).await?.remove(0).0;
            floors = Some(floor(server.port, &tls, work, requests, ticket).await?);
        }
        drop(server);
    }

    if only_inkan {
        println!("INKAN_BENCH_ONLY=inkan: no PostgreSQL, no cfssl, nothing written to bench/results");
        return Ok(());
    }

    // The same service with its stores in PostgreSQL: a throwaway cluster of Debian's
    // PostgreSQL 15 (synchronous_commit on, fsync on), the data moved by `inkan storage migrate`.
    let cluster = inkan_tests::postgres::Cluster::start();
    let url = cluster.database("bench");
    run(inkan().args(["storage", "migrate", "--data-dir", s(&dir), "--to", &url]));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\"")))
        .unwrap();
    let pg_label = "inkan (PostgreSQL, durable)";
    let server = start_inkan(inkan(), &dir, &pass_file, true);
    for clients in CONCURRENCY {
        let jobs = inkan_jobs(server.port, &tls, &accounts, &csrs, clients, requests).await?;
        let f =
            load(server.port, Some(tls.clone()), clients, jobs, 201).await.map_err(|e| format!("{pg_label}: {e}"))?;
        println!(
            "{pg_label:<34} {clients:>3} clients  {:>8.0} issued/s   p50 {:>7.1} ms   p99 {:>7.1} ms   (its commits sync in PostgreSQL, not counted)",
            f.rate,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
        );
        results.push((pg_label.to_owned(), clients, f));
    }
    drop(server);
    drop(cluster);

    // cfssl: the same issuing CA key (unencrypted for it), its own SQLite certificate database,
    // the same TLS certificate as inkan's service, the same CSRs.
    let cf = work.join("cfssl");
    std::fs::create_dir_all(&cf).unwrap();
    let ca_key = cf.join("ca-key.pem");
    run(Command::new("openssl")
        .args(["ec", "-in", s(&dir.join("ca/ca.key")), "-passin", "env:INKAN_CA_PASSPHRASE", "-out", s(&ca_key)])
        .env("INKAN_CA_PASSPHRASE", CA_PASS));
    let tls_key = cf.join("tls-key.pem");
    run(Command::new("openssl").args(["ec", "-in", s(&dir.join("server/server.key")), "-out", s(&tls_key)]));
    let db = cf.join("certs.db");
    // The certificate table cfssl's certdb writes to (columns from its documentation).
    run(Command::new("sqlite3").arg(&db).arg(
        "CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, \
         ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL, \
         PRIMARY KEY(serial_number, authority_key_identifier)); \
         CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, \
         body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));",
    ));
    let db_config = cf.join("db.json");
    std::fs::write(&db_config, serde_json::json!({ "driver": "sqlite3", "data_source": db }).to_string()).unwrap();
    let signing = cf.join("config.json");
    std::fs::write(
        &signing,
        r#"{"signing":{"default":{"expiry":"8760h","usages":["digital signature","client auth"]}}}"#,
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("cfssl")
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string(), "-loglevel", "4"])
        .args(["-ca", s(&dir.join("ca/ca.crt")), "-ca-key", s(&ca_key), "-config", s(&signing)])
        .args(["-db-config", s(&db_config), "-tls-cert", s(&dir.join("server/server.crt")), "-tls-key", s(&tls_key)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let cfssl_pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() >= deadline {
            return Err("cfssl serve did not start listening within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cfssl_jobs = |clients: usize, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let body = serde_json::json!({ "certificate_request": csrs[i % clients] }).to_string();
                ("/api/v1/cfssl/sign".to_owned(), body)
            })
            .collect()
    };
    let mut signed = 0;
    for clients in CONCURRENCY {
        let figures = load(port, Some(tls.clone()), clients, cfssl_jobs(clients, requests), 200)
            .await
            .map_err(|e| format!("{cfssl_label}: {e}"))?;
        signed += requests;
        let syncs = traced_load(
            &[cfssl_pid],
            &summary,
            port,
            Some(tls.clone()),
            clients,
            cfssl_jobs(clients, traced_n(clients)),
            200,
        )
        .await
        .map_err(|e| format!("{cfssl_label}, counting syncs: {e}"))?;
        signed += traced_n(clients);
        let rows = cfssl_rows(&db)?;
        if rows != signed {
            return Err(format!(
                "cfssl answered {signed} signing requests with success, but its certificate database {} holds \
                 {rows} certificates",
                db.display()
            ));
        }
        print(&cfssl_label, clients, &figures, syncs);
        results.push((cfssl_label.clone(), clients, figures));
    }
    drop(server);
    let recorded = cfssl_rows(&db)?;
    if recorded != signed {
        return Err(format!("cfssl signed {signed} certificates but its database holds {recorded} after it stopped"));
    }
    println!("cfssl recorded {recorded} certificates in its database (the {signed} it signed, timed and traced runs)");
    println!();
    for clients in CONCURRENCY {
        let rate = |label: &str| results.iter().find(|(l, c, _)| l == label && *c == clients).map(|(_, _, f)| f.rate);
        if let (Some(ours), Some(theirs)) = (rate("inkan (durable)"), rate(&cfssl_label)) {
            println!("{clients:>3} clients: durable inkan / cfssl = {:.2}", ours / theirs);
        }
        if let (Some(pg), Some(sled)) = (rate(pg_label), rate("inkan (durable)")) {
            println!("{clients:>3} clients: inkan on PostgreSQL / inkan on sled = {:.2}", pg / sled);
        }
    }
    report(&results, floors, cores, &cfssl_version)
}

/// Writes bench/results/issuance.md (the table) and issuance.svg (issued/s against clients),
/// which the README shows.
fn report(
    results: &[(String, usize, Figures)],
    floors: Option<(Duration, Duration)>,
    cores: usize,
    cfssl_version: &str,
) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut labels: Vec<&str> = Vec::new();
    for (label, _, _) in results {
        if !labels.contains(&label.as_str()) {
            labels.push(label);
        }
    }
    let series: Vec<plot::Series<'_>> = labels
        .iter()
        .map(|label| plot::Series {
            name: label,
            points: results.iter().filter(|(l, _, _)| l == label).map(|(_, c, f)| (*c as f64, f.rate)).collect(),
        })
        .collect();
    let date = time::OffsetDateTime::now_utc().date();
    let title = format!("HTTPS issuance, {cores} cores, {date}");
    let svg = plot::svg(&title, "concurrent clients", "certificates issued per second", &series);
    let mut table = format!(
        "# HTTPS issuance ({date})\n\nWritten by `cargo bench -p inkan --bench api` on {cores} cores, client on the \
         same machine; cfssl: `{}`.\n\n| server | clients | issued/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n",
        cfssl_version.lines().next().unwrap_or("?")
    );
    for (label, clients, f) in results {
        table.push_str(&format!(
            "| {label} | {clients} | {:.0} | {:.1} | {:.1} |\n",
            f.rate,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        ));
    }
    if let Some((round_trip, sync)) = floors {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        table.push_str(&format!(
            "\nThe floor of one issuance at 1 client here, measured in the same run: an HTTPS round trip the \
             service refuses before any work (an empty CSR) takes {:.2} ms (p50), one fdatasync of a 1 KiB append \
             in the data's file system {:.2} ms (p50): {:.2} ms before any checking, signing or recording.\n",
            ms(round_trip),
            ms(sync),
            ms(round_trip + sync)
        ));
    }
    table.push_str("\n![issued per second against clients](issuance.svg)\n");
    for (name, contents) in [("issuance.svg", svg), ("issuance.md", table)] {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
