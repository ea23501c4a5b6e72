//! Privilege separation of `inkan serve` (issue 9), seen from outside as an operator would with
//! ps and /proc: three processes (supervisor, signer, web worker); only the web worker has TCP
//! sockets, and the CA passphrase is in the memory of none of the processes that do; the web
//! worker's environment holds no secret; a web worker killed under load is replaced within
//! seconds and nothing a client received is lost.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CA_PASS, ROOT_PASS, Service, TestCa, enroll_with_curl, kill, p256_csr, read, user_password};

/// The parent of `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").expect("reading /proc");
    let pids = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    pids.filter(|child| parent_of(*child) == Some(pid)).collect()
}

/// Whether `pid` has a TCP socket open: one of its descriptors is a socket whose inode is in
/// /proc/net/tcp or tcp6.
fn has_tcp_socket(pid: u32) -> bool {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("reading the process's descriptors");
    fds.flatten().any(|fd| {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).is_some_and(|inode| inodes.contains(inode))
    })
}

/// How often each of `needles` occurs in the readable memory of `pid` (/proc/PID/maps and
/// /proc/PID/mem, as root), and how many bytes were read.
fn scan_memory(pid: u32, needles: &[&[u8]]) -> (Vec<usize>, usize) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("reading the memory map");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("opening the memory (tests run as root)");
    let mut found = vec![0; needles.len()];
    let mut total = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
        let mut region = vec![0u8; usize::try_from(end - start).expect("region size")];
        let Ok(n) = mem.read_at(&mut region, start) else { continue };
        region.truncate(n);
        total += n;
        for (needle, count) in needles.iter().zip(found.iter_mut()) {
            let first = needle[0];
            let mut at = 0;
            while let Some(i) = region[at..].iter().position(|b| *b == first) {
                let i = at + i;
                if region[i..].starts_with(needle) {
                    *count += 1;
                }
                at = i + 1;
            }
        }
    }
    (found, total)
}

/// The first certificate of a PEM file, as DER.
fn first_der(path: &Path) -> Vec<u8> {
    pem::parse_many(read(path)).expect("PEM").into_iter().next().expect("a certificate").into_contents()
}

#[test]
fn the_passphrase_never_reaches_the_process_that_faces_the_network() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("pat", "master", None);
    let server = Service::start(&ca, &[("INKAN_TEST_MARKER", "inherited-77aa")]);
    let supervisor = server.serve.pid;
    let signer = server.signer_pid.expect("serve started a signer");
    let worker = server.worker_pid.expect("serve started a web worker");

    // Some work through every listener first: enrollment, login, OCSP, the admin socket.
    let pat = server.acquire("pat", "pat");
    server.login_api(&pat.client(), &user_password("pat")).expect(200);
    server.me(&pat.client()).expect(200);
    ca.add_user("quinn", "general", Some("pat"));
    server.curl(&server.http_url("/crl/ca.crl"), common::NONE);

    assert_eq!(parent_of(signer), Some(supervisor), "the signer is the supervisor's child");
    assert_eq!(parent_of(worker), Some(supervisor), "the web worker is the supervisor's child");
    assert!(!has_tcp_socket(supervisor), "the supervisor has a TCP socket");
    assert!(!has_tcp_socket(signer), "the signer has a TCP socket");
    assert!(has_tcp_socket(worker), "the web worker serves on TCP");

    let passphrases: [&[u8]; 2] = [CA_PASS.as_bytes(), ROOT_PASS.as_bytes()];
    // The scan can see what it looks for: the web worker holds its TLS certificate...
    let tls_leaf = first_der(&ca.file("server/server.crt"));
    let (found, bytes) = scan_memory(worker, &[&tls_leaf]);
    assert!(found[0] > 0, "the web worker's own certificate was not found in {bytes} bytes read");
    // ...and the supervisor holds the CA passphrase (it restarts the signer with it).
    let (found, _) = scan_memory(supervisor, &passphrases);
    assert!(found[0] > 0, "the scan did not find the passphrase in the supervisor, which holds it");
    for pid in [supervisor, signer, worker].into_iter().filter(|pid| has_tcp_socket(*pid)) {
        let (found, bytes) = scan_memory(pid, &passphrases);
        eprintln!("process {pid} (TCP): {bytes} bytes of memory read");
        assert_eq!(found, [0, 0], "a passphrase in the memory of process {pid}, which has a TCP socket");
    }

    let environ = std::fs::read(format!("/proc/{worker}/environ")).expect("the web worker's environment");
    let environ = String::from_utf8_lossy(&environ);
    for unwanted in ["INKAN_CA_PASSPHRASE", CA_PASS, ROOT_PASS, "inherited-77aa"] {
        assert!(!environ.contains(unwanted), "the web worker's environment has {unwanted:?}");
    }
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).expect("the web worker's status");
    assert!(status.contains("NoNewPrivs:\t1"), "the web worker did not restrict itself:\n{status}");
    let stdin = std::fs::read_link(format!("/proc/{worker}/fd/0")).expect("the web worker's stdin");
    assert!(stdin.to_string_lossy().starts_with("pipe:"), "the web worker's stdin is {}", stdin.display());
    server.stop();
}

#[test]
fn a_web_worker_killed_under_load_is_back_within_seconds_and_nothing_is_lost() {
    const CLIENTS: usize = 3;
    let ca = TestCa::with_rate_limit(1_000_000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    let mut bodies = Vec::new();
    for i in 0..CLIENTS {
        let account = format!("load{i}");
        ca.add_user(&account, "master", None);
        let body = ca.work().join(format!("{account}.json"));
        common::write(&body, serde_json::json!({ "csr_pem": read(&p256_csr(ca.work(), &account)) }).to_string());
        bodies.push((account, body));
    }
    let server = Service::watched(&ca, &[]);
    let old_worker = server.worker_pid.expect("a web worker");
    let running = Arc::new(AtomicBool::new(true));
    let received = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = bodies
        .into_iter()
        .map(|(account, body)| {
            let (running, received, root, port) = (running.clone(), received.clone(), ca.root_crt(), server.public);
            std::thread::spawn(move || {
                while running.load(Ordering::SeqCst) {
                    match enroll_with_curl(port, &root, &account, &body) {
                        Ok(issued) => received.lock().expect("lock").push(issued),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();
    let count = || received.lock().expect("lock").len();
    let started = Instant::now();
    while count() < 10 {
        assert!(started.elapsed() < Duration::from_secs(30), "no load: {} certificates in 30 s", count());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = count();
    kill("KILL", old_worker);
    let killed = Instant::now();
    // Back: enrollments succeed again (a certificate asked after the kill), within 10 s.
    std::thread::sleep(Duration::from_millis(100));
    let after_kill = count();
    while count() <= after_kill {
        assert!(killed.elapsed() < Duration::from_secs(10), "no enrollment within 10 s of killing the web worker");
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = killed.elapsed();
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client");
    }
    eprintln!("enrollment worked again {back:?} after SIGKILL of the web worker ({before} certificates before)");
    let children = children_of(server.serve.pid);
    assert!(!children.contains(&old_worker), "the killed web worker is gone: {children:?}");
    assert_eq!(children.len(), 2, "a signer and a new web worker: {children:?}");

    server.stop();
    let received = received.lock().expect("lock").clone();
    let registry = ca::SledStore::open(&ca.file("db")).expect("the registry");
    let mut serials = HashSet::new();
    for (serial, pem) in &received {
        assert!(serials.insert(serial.clone()), "serial {serial} handed out twice");
        let parsed: pki::Serial = serial.parse().expect("serial");
        let der = ca::Registry::certificate_der(&registry, &parsed).expect("registry").expect("recorded");
        assert_eq!(der, pem::parse(pem).expect("PEM").into_contents(), "{serial}: other bytes in the registry");
    }
    eprintln!("{} certificates received, all in the registry with the same bytes", received.len());
}

/// The supervisor killed alone: its signer and web worker see their pipe close and stop, and
/// the data directory is free for the next `serve`.
#[test]
fn killing_the_supervisor_stops_both_children() {
    let ca = TestCa::init(&[]);
    let mut server = Service::start(&ca, &[]);
    let children = [server.signer_pid.expect("a signer"), server.worker_pid.expect("a web worker")];
    server.serve.signal("KILL");
    let killed = Instant::now();
    // Gone, or a zombie waiting for its new parent to reap it.
    let running =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "));
    for pid in children {
        while running(pid) {
            assert!(killed.elapsed() < Duration::from_secs(15), "process {pid} still runs after its supervisor died");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("both children stopped {:?} after SIGKILL of the supervisor", killed.elapsed());
    server.kill_all();
    let again = Service::start(&ca, &[]);
    again.stop();
}

/// `[server] user = "nobody"` with serve started as root: the web worker runs as nobody (it was
/// given its own directories), still reaches the signer (the socket's group), and serves.
#[test]
fn the_web_worker_switches_to_the_configured_user() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("# user = \"inkan\"", "user = \"nobody\"")]);
    ca.add_user("uma", "master", None);
    // The operator's part: the directories above the data directory let the user through.
    std::fs::set_permissions(ca.work(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).expect("chmod");
    let server = Service::watched(&ca, &[]);
    let worker = server.worker_pid.expect("a web worker");
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).expect("status");
    let uid = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid.split_whitespace().skip(1).all(|id| id == "65534"), "the web worker runs as {uid}");
    let signer = server.signer_pid.expect("a signer");
    let signer_status = std::fs::read_to_string(format!("/proc/{signer}/status")).expect("status");
    assert!(signer_status.lines().any(|l| l.starts_with("Uid:\t0\t")), "the signer stays root");
    let uma = server.acquire("uma", "uma");
    server.login_api(&uma.client(), &user_password("uma")).expect(200);
    ca.add_user("vic", "general", Some("uma"));
    server.stop();
}
