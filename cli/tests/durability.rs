//! Durability is real (issue 10): one issuance through the API makes the signer and the web
//! worker call fdatasync/fsync (counted by strace from outside, attached to both processes),
//! and the same issuance with `--danger-no-fsync` makes the signer call none — so the count
//! tells the two apart.

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

/// Stops strace and counts the sync calls it saw.
fn syncs(mut strace: Child, out: &std::path::Path) -> usize {
    common::kill("INT", strace.id());
    let _ = strace.wait();
    read(out).lines().filter(|l| l.contains("fsync(") || l.contains("fdatasync(")).count()
}

/// The syncs of the signer and of the web worker during one issuance (ticket made before).
fn count_one_issuance(ca: &TestCa, extra: &[&str], name: &str) -> (usize, usize) {
    let pass = ca.ca_pass_file();
    let mut args = vec!["--ca-passphrase-file", s(&pass)];
    args.extend(extra);
    let server = Service::start_with(&ca.data, ca, &args, &[]);
    let csr = read(&p256_csr(ca.work(), name));
    let ticket = server.ticket("dana");
    let (signer_out, worker_out) =
        (ca.work().join(format!("{name}-signer.strace")), ca.work().join(format!("{name}-worker.strace")));
    let signer = trace(server.signer_pid.expect("a signer"), &signer_out);
    let worker = trace(server.worker_pid.expect("a web worker"), &worker_out);
    server.send_csr(&ticket, &csr).expect(201);
    let counts = (syncs(signer, &signer_out), syncs(worker, &worker_out));
    server.stop();
    counts
}

#[test]
fn one_durable_issuance_syncs_and_an_unsafe_one_does_not() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    ca.add_user("dana", "master", None);
    let (signer, worker) = count_one_issuance(&ca, &[], "durable");
    eprintln!("one durable issuance: {signer} syncs in the signer, {worker} in the web worker");
    assert!(signer >= 1, "the signer acknowledged an issuance without syncing its ledger");
    assert!(worker >= 1, "the web worker answered without syncing the registry and the audit trail");
    let (signer, worker) = count_one_issuance(&ca, &["--danger-no-fsync"], "unsafe");
    eprintln!("one issuance with --danger-no-fsync: {signer} syncs in the signer, {worker} in the web worker");
    assert_eq!(signer, 0, "--danger-no-fsync still synced in the signer: the count cannot tell them apart");
}
