//! Durability is real (issue 10) and costs one write on the critical path (issue 16): one
//! issuance through the API makes the signer call fdatasync/fsync before the answer, the web
//! worker's request threads call none (the registry catches up from the signer's ledger), and
//! the worker's ledger follower makes the registry durable within a round (counted by strace
//! from outside, attached to both processes, per thread). The same issuance with
//! `--danger-no-fsync` makes the signer call none, so the count tells the two apart.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Service, TestCa, p256_csr, read, s};

/// strace attached to every thread of `pid`, counting fsync and fdatasync into `out`.
fn trace(pid: u32, out: &std::path::Path) -> Child {
    let child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", s(out), "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (Debian package strace)");
    // Attached once the process shows a tracer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let traced = status.lines().any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0");
        if traced {
            break;
        }
        assert!(Instant::now() < deadline, "strace did not attach to {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // strace attaches to the threads one by one after the first: give it the rest.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Stops strace and counts the sync calls it saw, apart from those of the threads `except`.
fn syncs(mut strace: Child, out: &std::path::Path, except: &[u32]) -> usize {
    common::kill("INT", strace.id());
    let _ = strace.wait();
    sync_lines(out).filter(|l| thread_of(l).is_none_or(|tid| !except.contains(&tid))).count()
}

/// The sync calls in a trace.
fn sync_lines(out: &std::path::Path) -> impl Iterator<Item = String> {
    read(out)
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// The syncs of the thread `tid` in a trace.
fn syncs_of(out: &std::path::Path, tid: u32) -> usize {
    sync_lines(out).filter(|l| thread_of(l) == Some(tid)).count()
}

/// The thread id strace -f puts in front of a line ("1234 fdatasync(7) = 0").
fn thread_of(line: &str) -> Option<u32> {
    line.split_whitespace().next()?.parse().ok()
}

/// The threads of `pid` named `name`, from /proc.
fn threads_named(pid: u32, name: &str) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads in /proc");
    tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

/// What one issuance (ticket made before) made each side sync.
struct Counts {
    /// The signer, before the answer.
    signer: usize,
    /// The web worker's threads other than the ledger follower and sled's periodic flushers,
    /// until one round of the follower after the answer.
    worker: usize,
    /// The ledger follower, from before the request until one round after the answer.
    follower: usize,
}

fn count_one_issuance(ca: &TestCa, extra: &[&str], name: &str) -> Counts {
    let pass = ca.ca_pass_file();
    let mut args = vec!["--ca-passphrase-file", s(&pass)];
    args.extend(extra);
    let server = Service::start_with(&ca.data, ca, &args, &[]);
    let csr = read(&p256_csr(ca.work(), name));
    let ticket = server.ticket("dana");
    let (signer_out, worker_out) =
        (ca.work().join(format!("{name}-signer.strace")), ca.work().join(format!("{name}-worker.strace")));
    let worker_pid = server.worker_pid.expect("a web worker");
    let follower =
        *threads_named(worker_pid, "ledger-follower").first().expect("the web worker runs a ledger follower");
    // sled's own timer (flush_every_ms), off the critical path like the follower.
    let mut background = threads_named(worker_pid, "log flusher");
    background.push(follower);
    let signer = trace(server.signer_pid.expect("a signer"), &signer_out);
    let worker = trace(worker_pid, &worker_out);
    server.send_csr(&ticket, &csr).expect(201);
    let signer = syncs(signer, &signer_out, &[]);
    // The follower's round (every 2 s) makes what the answer left undurable durable.
    let durable = !extra.contains(&"--danger-no-fsync");
    let deadline = Instant::now() + Duration::from_secs(5);
    while durable && syncs_of(&worker_out, follower) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts = Counts { signer, worker: 0, follower: syncs_of(&worker_out, follower) };
    let counts = Counts { worker: syncs(worker, &worker_out, &background), ..counts };
    server.stop();
    counts
}

#[test]
fn one_durable_issuance_syncs_and_an_unsafe_one_does_not() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    ca.add_user("dana", "master", None);
    let Counts { signer, worker, follower } = count_one_issuance(&ca, &[], "durable");
    eprintln!(
        "one durable issuance: {signer} syncs in the signer, {worker} in the web worker's request threads, \
         {follower} in its ledger follower"
    );
    assert!(signer >= 1, "the signer released a certificate without syncing its ledger");
    assert_eq!(worker, 0, "the web worker's answer waited for its own disk: a second durable write in series");
    assert!(follower >= 1, "the ledger follower never made the registry and the audit trail durable");
    let Counts { signer, .. } = count_one_issuance(&ca, &["--danger-no-fsync"], "unsafe");
    eprintln!("one issuance with --danger-no-fsync: {signer} syncs in the signer");
    assert_eq!(signer, 0, "--danger-no-fsync still synced in the signer: the count cannot tell them apart");
}
