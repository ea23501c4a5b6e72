//! OCSP responses per second on the cached path: `inkan serve` (release build) answers
//! `GET /ocsp/{request}` for one certificate while wrk (Debian's) drives it from the same
//! machine. `cargo bench -p inkan --bench ocsp [-- SECONDS]`
//!
//! Prints a figure only for work that was checked: the answer, verified by `openssl ocsp`
//! against the CA the benchmark made, must say the certificate is good (before and after the
//! runs), and wrk must report no non-2xx answers and no socket errors. Otherwise it says why
//! and exits non-zero. Needs wrk, curl and openssl (Debian packages of the same names).
//!
//! After the runs it prints the CPU each answer cost the service (all its processes) and wrk,
//! and the rate wrk alone would allow on these cores: the ceiling of this measurement.

mod support;
use support::Server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const ROOT_PASS: &str = "bench root passphrase";
const CA_PASS: &str = "bench issuing passphrase";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Where the benchmark's files go: `INKAN_BENCH_DIR`, else the system's temporary directory
/// unless it is in memory (tmpfs, ramfs), else the target directory's.
fn bench_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("INKAN_BENCH_DIR") {
        return dir.into();
    }
    let tmp = std::env::temp_dir();
    if matches!(fs_type(&tmp).0.as_str(), "tmpfs" | "ramfs") { PathBuf::from(env!("CARGO_TARGET_TMPDIR")) } else { tmp }
}

/// Where to ask, and how to check the answer.
struct Probe {
    url: String,
    response: PathBuf,
    issuer: PathBuf,
    leaf: PathBuf,
    root: PathBuf,
}

impl Probe {
    /// Fetches the answer once and checks it with openssl: signed by a responder the CA
    /// certified, about this certificate, and `good`. Returns the "Cert Status" line.
    fn check_good(&self) -> Result<String, String> {
        let fetched = Command::new("curl")
            .args(["-sS", "-o", s(&self.response), "-w", "%{http_code}", &self.url])
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        if fetched.stdout != b"200" {
            return Err(format!(
                "GET /ocsp answered {} {}",
                String::from_utf8_lossy(&fetched.stdout),
                String::from_utf8_lossy(&fetched.stderr).trim()
            ));
        }
        let out = Command::new("openssl")
            .args(["ocsp", "-respin", s(&self.response), "-resp_text"])
            .args(["-issuer", s(&self.issuer), "-cert", s(&self.leaf)])
            .args(["-CAfile", s(&self.root), "-verify_other", s(&self.issuer)])
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let verified = stderr.lines().any(|l| l.trim() == "Response verify OK");
        let leaf_line = format!("{}: ", s(&self.leaf));
        let status = stdout.lines().find_map(|l| l.strip_prefix(&leaf_line)).map(str::trim);
        if !out.status.success() || !verified || status != Some("good") {
            return Err(format!(
                "the OCSP answer for the benchmark's certificate is not a verified `good` \
                 (openssl ocsp -respin: status {:?}, {}): {}",
                status.unwrap_or("none"),
                if verified { "signature verified" } else { "signature NOT verified" },
                stderr.trim()
            ));
        }
        Ok(stdout.lines().find(|l| l.contains("Cert Status")).unwrap_or("Cert Status: good").trim().to_owned())
    }
}

/// CPU time (user + system, in clock ticks) of `root` and every process below it, from
/// /proc/PID/stat. A process that ended meanwhile is not counted: the service's processes run
/// throughout.
fn tree_cpu_ticks(root: u32) -> u64 {
    let mut parents = std::collections::HashMap::new();
    let mut ticks = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // After the command's name (in parentheses, which may hold spaces): state, ppid, ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(ppid), Some(utime), Some(stime)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
        let (Ok(ppid), Ok(utime), Ok(stime)) = (ppid.parse::<u32>(), utime.parse::<u64>(), stime.parse::<u64>()) else {
            continue;
        };
        parents.insert(pid, ppid);
        ticks.insert(pid, utime + stime);
    }
    let below = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parents.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    ticks.iter().filter(|(pid, _)| below(**pid)).map(|(_, t)| t).sum()
}

/// The CPU time of the children this process has waited for, in seconds (getrusage).
fn children_cpu_secs() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// What wrk reported, once checked.
struct WrkRun {
    requests: u64,
    rate: String,
    p50: String,
    p99: String,
}

/// Reads wrk's report; an error for any non-2xx/3xx answer or socket error, or no request at all.
fn parse_wrk(out: &str) -> Result<WrkRun, String> {
    let line = |start: &str| out.lines().map(str::trim).find(|l| l.starts_with(start)).map(str::to_owned);
    let requests: u64 = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no request count in wrk's report:\n{out}"))?;
    if requests == 0 {
        return Err(format!("wrk completed no request:\n{out}"));
    }
    if let Some(non_2xx) = line("Non-2xx or 3xx responses:") {
        let n: u64 = non_2xx.rsplit(':').next().and_then(|n| n.trim().parse().ok()).unwrap_or(u64::MAX);
        if n != 0 {
            return Err(format!("wrk: {non_2xx} (of {requests} requests)"));
        }
    }
    if let Some(socket) = line("Socket errors:") {
        // "Socket errors: connect 0, read 0, write 0, timeout 0"
        let counts = socket.trim_start_matches("Socket errors:").split(',');
        let total: u64 =
            counts.map(|c| c.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)).sum();
        if total != 0 {
            return Err(format!("wrk: {socket} (of {requests} requests)"));
        }
    }
    let rate = line("Requests/sec").ok_or_else(|| format!("no Requests/sec in wrk's report:\n{out}"))?;
    Ok(WrkRun { requests, rate, p50: line("50%").unwrap_or_default(), p99: line("99%").unwrap_or_default() })
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocsp benchmark failed, no further figures: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    for (program, arg) in [("wrk", "--version"), ("curl", "--version"), ("openssl", "version")] {
        let found = Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            return Err(format!("{program} is not installed: install the Debian package {program}"));
        }
    }
    let root_dir = bench_root();
    std::fs::create_dir_all(&root_dir).map_err(|e| format!("creating {}: {e}", root_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("inkan-bench-ocsp-")
        .tempdir_in(&root_dir)
        .map_err(|e| format!("a directory in {}: {e}", root_dir.display()))?;
    let dir = tmp.path().join("data");
    run(Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["init", "--data-dir", s(&dir)])
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS));
    let pass = tmp.path().join("ca.pass");
    std::fs::write(&pass, format!("{CA_PASS}\n")).expect("write");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["serve", "--data-dir", s(&dir), "--ca-passphrase-file", s(&pass)])
        .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--est-listen", "127.0.0.1:0"])
        .env("INKAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = serve.stdout.take().expect("stdout");
    let serve_pid = serve.id();
    let _serve = Server(serve);
    let mut http = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("http://").nth(1)
            && line.contains("root.crt")
        {
            http = rest.split('/').next().map(str::to_owned);
            break;
        }
    }
    let http = http.ok_or("inkan serve stopped before printing its HTTP address")?;

    // The service's own TLS certificate is in the registry: ask about it.
    let chain = std::fs::read_to_string(dir.join("server/server.crt")).expect("server.crt");
    let leaf = tmp.path().join("leaf.pem");
    let end = chain.find("-----END CERTIFICATE-----").expect("pem") + "-----END CERTIFICATE-----\n".len();
    std::fs::write(&leaf, &chain[..end]).expect("write");
    let request = tmp.path().join("req.der");
    run(Command::new("openssl").args([
        "ocsp",
        "-issuer",
        s(&dir.join("ca/ca.crt")),
        "-cert",
        s(&leaf),
        "-no_nonce",
        "-reqout",
        s(&request),
    ]));
    let b64 = run(Command::new("openssl").args(["base64", "-A", "-in", s(&request)]));
    let encoded = b64.trim().replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let probe = Probe {
        url: format!("http://{http}/ocsp/{encoded}"),
        response: tmp.path().join("resp.der"),
        issuer: dir.join("ca/ca.crt"),
        leaf,
        root: dir.join("root/root.crt"),
    };

    // Warm the cache and check the answer with openssl.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match probe.check_good() {
            Ok(status) => break status,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    println!("OCSP on the cached path: GET /ocsp/{{request}} for one certificate ({status}), {seconds} s per run");
    println!("data directory {} on {}", dir.display(), fs_type(&dir).1);
    let ticks_per_sec: f64 = run(Command::new("getconf").arg("CLK_TCK")).trim().parse().unwrap_or(100.0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut splits = Vec::new();
    for connections in [1, 16, 64] {
        let threads = connections.min(2);
        let (service_before, wrk_before) = (tree_cpu_ticks(serve_pid), children_cpu_secs());
        let wrk = Command::new("wrk")
            .args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{seconds}s")])
            .args(["--latency", &probe.url])
            .output()
            .map_err(|e| format!("running wrk: {e}"))?;
        let out = String::from_utf8_lossy(&wrk.stdout);
        if !wrk.status.success() {
            let said = String::from_utf8_lossy(&wrk.stderr);
            return Err(format!("{connections} connections: wrk failed ({}): {out}{said}", wrk.status));
        }
        // A process of the service that ended meanwhile takes its ticks with it: never below 0.
        let service_secs = tree_cpu_ticks(serve_pid).saturating_sub(service_before) as f64 / ticks_per_sec;
        let wrk_secs = children_cpu_secs() - wrk_before;
        let figures = parse_wrk(&out).map_err(|e| format!("{connections} connections: {e}"))?;
        let (rate, p50, p99) = (figures.rate, figures.p50, figures.p99);
        println!("{connections:>3} connections: {rate:<24} latency p50 {p50:<12} p99 {p99:<12} no errors");
        splits.push((connections, service_secs, wrk_secs, figures.requests));
    }
    // Where the CPU went: what the service and wrk each spent per answer. With wrk on the same
    // cores, the rate can never pass cores / (wrk's CPU per answer), however little the service
    // spends; the kernel's work for a socket counts to the process it ran in.
    println!(
        "CPU per answer (user + system; the service's processes from /proc, wrk's from getrusage), {cores} cores:"
    );
    for (connections, service_secs, wrk_secs, requests) in splits {
        let per = |secs: f64| secs * 1e6 / requests.max(1) as f64;
        let (service_us, wrk_us) = (per(service_secs), per(wrk_secs));
        println!(
            "{connections:>3} connections: service {service_us:>5.1} us, wrk {wrk_us:>5.1} us; \
             ceiling with wrk on these cores and a service using no CPU: {:>7.0}/s",
            cores as f64 * 1e6 / wrk_us.max(0.001)
        );
    }
    // Still the same answer after the load.
    probe.check_good().map_err(|e| format!("after the runs: {e}"))?;
    let metrics = run(Command::new("curl").args(["-sS", &format!("http://{http}/metrics")]));
    for line in metrics.lines().filter(|l| l.starts_with("inkan_ocsp_requests_total")) {
        println!("  {line}");
    }
    Ok(())
}
