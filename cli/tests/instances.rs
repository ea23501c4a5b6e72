//! Several `inkan serve` instances over one PostgreSQL database and one signer: a throwaway
//! PostgreSQL 15 cluster on 127.0.0.1, a sled data directory moved into it with `inkan storage
//! migrate`, two instances (each with a data directory of its own, both reaching one signer),
//! and then what users and operators do spread over both: enroll on A, log in on B and go on on
//! A, revoke on B and ask A's OCSP, read both instances' CRLs, enroll concurrently on both,
//! kill the instance doing the background duties and watch the other take them over. The
//! signer listens on TCP with mutual TLS and takes only the instances' certificates.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Enrolled, Out, Service, TestCa, ocsp_status, openssl, run, s, user_password};
use inkan_tests::postgres::Cluster;
use serde_json::json;

/// The serials (upper-case hex) `service`'s published CRL lists, read by `openssl crl`.
fn crl_serials(service: &Service, work: &Path, name: &str) -> Vec<String> {
    let reply = service.curl(&service.http_url("/crl/ca.crl"), common::NONE);
    reply.expect(200);
    let file = work.join(format!("{name}.crl"));
    std::fs::write(&file, &reply.body).unwrap();
    let out = openssl(["crl", "-inform", "DER", "-noout", "-text", "-in", s(&file)]).ok();
    out.stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|serial| serial.trim().to_uppercase())
        .collect()
}

/// Waits up to `within` for `check`; how long it took.
#[track_caller]
fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn psql(cluster: &Cluster, sql: &str) -> String {
    let port = cluster.port.to_string();
    let out: Out = run(
        &format!("{}/psql", inkan_tests::postgres::BIN),
        ["-h", "127.0.0.1", "-p", &port, "-U", "inkan", "-d", "inkan", "-At", "-c", sql],
        &[],
        None,
    )
    .ok();
    out.stdout.trim().to_owned()
}

/// A throwaway PostgreSQL, a CA whose sled stores (alice, a master, and `generals` general
/// users gen0, gen1, ...) were moved into it, one signer and a second data directory for
/// instance B.
struct Setup {
    cluster: Cluster,
    ca: TestCa,
    data_b: std::path::PathBuf,
    /// The signer's TCP address (mutual TLS).
    signer_at: String,
    _signer: common::Daemon,
}

/// A key and a certificate of `profile` for `account` from `inkan issue` (offline, with the CA
/// key), with the issuing CA certificate after it: (certificate, key).
fn credential(ca: &TestCa, name: &str, account: &str, profile: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let csr = common::p256_csr(ca.work(), name);
    let cert = ca.work().join(format!("{name}.crt"));
    let mut args = vec!["issue", "--csr", s(&csr), "--account", account, "--profile", profile, "--chain"];
    args.extend(extra);
    args.extend(["--out", s(&cert)]);
    ca.inkan(args).ok();
    (cert, ca.work().join(format!("{name}.key")))
}

impl Setup {
    fn new(generals: usize, edits: &[(&str, &str)]) -> Self {
        let cluster = Cluster::start();
        let url = cluster.database("inkan");
        let ca = TestCa::init(&[]);
        ca.configure(edits);
        ca.add_user("alice", "master", None).ok();
        for n in 0..generals {
            ca.add_user(&format!("gen{n}"), "general", Some("alice")).ok();
        }

        // The sled stores into the database; a URL with a password is refused first.
        let with_password = url.replace("inkan@", "inkan:hunter2@");
        ca.inkan(["storage", "migrate", "--to", &with_password]).refused("command lines are visible");
        let moved = ca.inkan(["storage", "migrate", "--to", &url]).ok();
        assert!(moved.stdout.contains("every store is the same on both sides"), "{}", moved.text());
        let accounts = format!(" {} ", generals + 1);
        assert!(moved.stdout.lines().any(|l| l.starts_with("accounts") && l.contains(&accounts)), "{}", moved.text());
        ca.inkan(["storage", "migrate", "--to", &url]).refused("is not empty");
        ca.configure(&[("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\""))]);
        // Another team can query the registry with SQL.
        assert_eq!(psql(&cluster, "SELECT count(*) FROM certificates WHERE profile = 'server'"), "1");

        // Instance B's data directory: the configuration, certificates and the OTP sealing key,
        // no stores (they are in the database) and no signer (both reach the one signer).
        let data_b = ca.work().join("data-b");
        run("cp", ["-a", s(&ca.data), s(&data_b)], &[], None).ok();
        for gone in ["db", "web", "signer", "serve.lock"] {
            let _ = std::fs::remove_dir_all(data_b.join(gone));
            let _ = std::fs::remove_file(data_b.join(gone));
        }
        // The signer listens on TCP with mutual TLS; each instance has a certificate of the
        // service-instance profile, made offline before the signer starts.
        let (signer_cert, signer_key) = credential(&ca, "signer-tls", "signer", "server", &["--san", "127.0.0.1"]);
        for instance in ["a", "b"] {
            credential(&ca, &format!("instance-{instance}"), &format!("instance-{instance}"), "service-instance", &[]);
        }
        let mut command = std::process::Command::new(common::inkan_bin());
        command
            .args(["signer", "--data-dir", s(&ca.data), "--socket", s(&ca.work().join("signer.sock"))])
            .args(["--listen", "127.0.0.1:0", "--tls-cert", s(&signer_cert), "--tls-key", s(&signer_key)])
            .env_remove("INKAN_DATA_DIR")
            .env("INKAN_CA_PASSPHRASE", common::CA_PASS);
        let mut signer = common::Daemon::spawn(command);
        let line = signer.wait_line(Duration::from_secs(60), |l| l.starts_with("signer listening on "));
        let signer_at = line.split_whitespace().nth(3).unwrap().to_owned();
        signer.wait_line(Duration::from_secs(60), |l| l.starts_with("signer ready on"));
        Self { cluster, ca, data_b, signer_at, _signer: signer }
    }

    /// Instance A (on the CA's data directory) or B, reaching the signer over TCP.
    fn start(&self, b: bool) -> Service {
        let (data, name) = if b { (&self.data_b, "instance-b") } else { (&self.ca.data, "instance-a") };
        let cert = self.ca.work().join(format!("{name}.crt"));
        let key = self.ca.work().join(format!("{name}.key"));
        let args =
            ["--signer-address", &self.signer_at, "--signer-client-cert", s(&cert), "--signer-client-key", s(&key)];
        Service::start_with(data, &self.ca, &args, &[])
    }

    /// What `openssl s_client` makes of the signer with `cert` and `key`: whether the
    /// connection was refused in the handshake.
    fn signer_refuses(&self, cert: &Path, key: &Path) -> bool {
        let out = run(
            "sh",
            [
                "-c",
                &format!(
                    "printf '' | timeout 10 openssl s_client -quiet -connect {} -cert {} -key {} -CAfile {} 2>&1",
                    self.signer_at,
                    s(cert),
                    s(key),
                    s(&self.ca.ca_crt())
                ),
            ],
            &[],
            None,
        );
        let text = out.text();
        assert!(text.contains("verify return:1") || text.contains("alert"), "{text}");
        text.contains("alert")
    }
}

#[test]
fn two_instances_one_database_one_signer() {
    let setup = Setup::new(12, &[]);
    let (cluster, ca) = (&setup.cluster, &setup.ca);
    let a = setup.start(false);
    std::thread::sleep(Duration::from_millis(200));
    let mut b = setup.start(true);

    // Enroll on A, log in on B, go on on A with B's session.
    let alice = a.acquire("alice", "alice");
    // The signer takes instances' certificates only: alice's, of the same CA, is refused in
    // the handshake; instance B's gets through.
    assert!(setup.signer_refuses(&alice.cert, &alice.key), "a user's certificate reaches the signer");
    let (b_cert, b_key) = (ca.work().join("instance-b.crt"), ca.work().join("instance-b.key"));
    assert!(!setup.signer_refuses(&b_cert, &b_key), "an instance's certificate is refused");
    // An instance certificate is made offline only: while the signer runs, its key is in use.
    let csr = common::p256_csr(ca.work(), "sneaky");
    let sneaky = ca.inkan(["issue", "--csr", s(&csr), "--account", "sneaky", "--profile", "service-instance"]);
    assert!(!sneaky.status.success() && sneaky.text().contains("in use"), "{}", sneaky.text());
    let client = alice.client();
    let login = b.login_api(&client, &user_password("alice"));
    login.expect(200);
    let me = a.me(&client);
    me.expect(200);
    assert_eq!(me.json()["login_id"], "alice", "the session B made serves on A");
    assert_eq!(ocsp_status(ca, &a, &alice), "good");

    // Revoke on B; A's OCSP answers revoked within a second.
    let url_b = b.login_url(&format!("/api/v1/certificates/{}/revoke", alice.serial));
    let revoked = b.post_json(
        &url_b,
        &json!({ "password": user_password("alice"), "reason": "keyCompromise" }),
        &alice.client_args(),
    );
    revoked.expect(200);
    let took = within("A's OCSP says revoked", Duration::from_secs(1), || ocsp_status(ca, &a, &alice) == "revoked");
    eprintln!("revoked on B, revoked in A's OCSP after {took:?}");
    // Both instances' CRLs list it: one signs, the other serves what it signed.
    let work = ca.work();
    let took = within("both CRLs list it", Duration::from_secs(10), || {
        crl_serials(&a, work, "a").contains(&alice.serial) && crl_serials(&b, work, "b").contains(&alice.serial)
    });
    eprintln!("in both instances' CRLs after {took:?}");

    // Enrollment spread over both instances at once: no serial twice, every certificate a
    // client got is in the registry with the same bytes.
    // (Tickets first, one by one; then the 12 CSRs at once, half to each instance, from 12
    // curl processes.)
    let orders: Vec<(usize, String, std::path::PathBuf)> = (0..12)
        .map(|n| {
            let server = if n % 2 == 0 { &a } else { &b };
            let csr = common::p256_csr(ca.work(), &format!("gen{n}"));
            (n, server.ticket(&format!("gen{n}")), csr)
        })
        .collect();
    let racers: Vec<_> = orders
        .iter()
        .map(|(n, ticket, csr)| {
            let server = if n % 2 == 0 { &a } else { &b };
            let body = ca.work().join(format!("g{n}.json"));
            std::fs::write(&body, json!({ "csr_pem": common::read(csr) }).to_string()).unwrap();
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "30",
                    "--cacert",
                    s(&ca.root_crt()),
                    "-H",
                    "Content-Type: application/json",
                ])
                .args(["--data-binary", &format!("@{}", s(&body)), "-w", "\n%{http_code}"])
                .arg(server.public_url(&format!("/api/v1/enrollments/{ticket}/csr")))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let got: Vec<Enrolled> = racers
        .into_iter()
        .zip(&orders)
        .map(|(racer, (n, _, _))| {
            let out = String::from_utf8(racer.wait_with_output().unwrap().stdout).unwrap();
            let (body, status) = out.rsplit_once('\n').unwrap();
            assert_eq!(status, "201", "gen{n}: {body}");
            a.save(&format!("gen{n}"), &serde_json::from_str(body).unwrap())
        })
        .collect();
    let mut serials: Vec<&str> = got.iter().map(|e| e.serial.as_str()).collect();
    serials.sort_unstable();
    serials.dedup();
    assert_eq!(serials.len(), 12, "no serial twice");
    for enrolled in &got {
        let shown = ca.inkan(["show", &enrolled.serial, "--pem"]).ok();
        assert_eq!(shown.stdout.trim(), common::read(&enrolled.cert).trim(), "the registry holds what the client got");
    }
    let in_sql = psql(cluster, "SELECT count(DISTINCT serial) FROM certificates WHERE account LIKE 'gen%'");
    assert_eq!(in_sql, "12");

    // The background duties: the first instance holds them; kill it, B takes over within 15 s
    // and signs the next CRL itself.
    assert!(a.serve.stderr().contains("this instance does the background duties"), "A started first");
    let mut a = a;
    let killed = Instant::now();
    a.kill_all();
    let took = within("B takes the duties over", Duration::from_secs(15), || {
        b.serve.stderr().contains("this instance now does the background duties")
    });
    eprintln!("B took the duties over {took:?} after A was killed (lease {}s)", 10);
    let g0 = &got[0];
    ca.inkan(["revoke", &g0.serial, "--reason", "superseded"]).ok();
    within("B's own CRL lists a revocation made after A died", Duration::from_secs(10), || {
        crl_serials(&b, work, "b2").contains(&g0.serial)
    });
    assert_eq!(ocsp_status(ca, &b, g0), "revoked");
    eprintln!("whole fail-over took {:?}", killed.elapsed());
    b.kill_all();
}

/// `GET /api/v1/me` with `who`'s certificate and session cookie from a curl process, every
/// 20 ms to each port `ports` holds (changed when an instance restarts), until `stop`:
/// (instance, status, when) for every answer; status 0 when curl got none within 10 s.
///
/// The cookie is read from a copy of `who`'s jar that only this loop reads: curl 7.88 opens
/// the jar it will save to (`-c`) with truncation while it runs and renames the new one into
/// place at its end, so a second curl reading the same jar meanwhile finds it empty and sends
/// no cookie (a 401 that is the test's, not the service's).
fn load(
    who: &Enrolled,
    root: &Path,
    ports: &std::sync::Mutex<[u16; 2]>,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(usize, u16, Instant)> {
    let jar = who.cert.with_extension("load.jar");
    std::fs::copy(who.cert.with_extension("jar"), &jar).unwrap();
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let now = *ports.lock().unwrap();
        for (instance, port) in now.into_iter().enumerate() {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", s(root)])
                .args(["--cert", s(&who.cert), "--key", s(&who.key), "-b", s(&jar)])
                .arg(format!("https://localhost:{port}/api/v1/me"))
                .output()
                .unwrap();
            let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
            seen.push((instance, status, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

/// The statuses instance `instance` answered between `from` and `to`.
fn statuses(seen: &[(usize, u16, Instant)], instance: usize, from: Instant, to: Instant) -> Vec<u16> {
    seen.iter().filter(|(i, _, at)| *i == instance && *at >= from && *at <= to).map(|(_, st, _)| *st).collect()
}

#[test]
fn an_instance_killed_and_the_database_stopped_under_load() {
    let setup = Setup::new(2, &[("rate_limit_per_minute = 30", "rate_limit_per_minute = 100000")]);
    let ca = &setup.ca;
    let mut a = setup.start(false);
    let b = setup.start(true);
    let alice = a.acquire("alice", "alice");
    b.login_api(&alice.client(), &user_password("alice")).expect(200);
    let ports = std::sync::Mutex::new([a.login, b.login]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let root = ca.root_crt();

    let (seen, marks, acquired) = std::thread::scope(|scope| {
        let loader = scope.spawn(|| load(&alice, &root, &ports, &stop));
        std::thread::sleep(Duration::from_secs(1));

        // SIGKILL instance A (its supervisor, worker and all): B goes on.
        let killed = Instant::now();
        a.kill_all();
        std::thread::sleep(Duration::from_secs(2));
        // A restarts and rejoins (on new ports) and serves the same session.
        let restarted = Instant::now();
        let a2 = setup.start(false);
        *ports.lock().unwrap() = [a2.login, b.login];
        let rejoined = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        // Acknowledged just before the database stops: it must survive.
        let gen0 = a2.acquire("gen0", "gen0");

        // The database goes away the hard way, then comes back.
        let stopping = Instant::now();
        setup.cluster.stop_immediately();
        let down = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let refused_enrollment = b.enroll("gen1", &user_password("gen1"));
        let up = Instant::now();
        setup.cluster.start_again();
        let took = within("both instances answer again", Duration::from_secs(20), || {
            let me_a = a2.me(&alice.client()).status;
            let me_b = b.me(&alice.client()).status;
            me_a == 200 && me_b == 200
        });
        eprintln!("both instances serve again {took:?} after `pg_ctl start` began");
        let after = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let gen1 = b.acquire("gen1", "gen1");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = loader.join().unwrap();
        let marks = (killed, restarted, rejoined, stopping, down, up, after, refused_enrollment.status);
        drop(a2);
        (seen, marks, vec![gen0, gen1])
    });
    let (killed, restarted, rejoined, stopping, down, up, after, refused_enrollment) = marks;
    let end = Instant::now();

    let before_kill = statuses(&seen, 1, seen[0].2, killed);
    assert!(!before_kill.is_empty() && before_kill.iter().all(|st| *st == 200), "B before: {before_kill:?}");
    let b_while_a_dead = statuses(&seen, 1, killed, stopping);
    assert!(b_while_a_dead.len() > 10 && b_while_a_dead.iter().all(|st| *st == 200), "B went on: {b_while_a_dead:?}");
    let a_dead = statuses(&seen, 0, killed + Duration::from_millis(200), restarted);
    assert!(a_dead.iter().all(|st| *st == 0), "A was dead: {a_dead:?}");
    let a_back = statuses(&seen, 0, rejoined + Duration::from_millis(100), stopping);
    assert!(!a_back.is_empty() && a_back.iter().all(|st| *st == 200), "A rejoined: {a_back:?}");

    // While the database is down: 503 (never a 500, never a hang), from both.
    for instance in 0..2 {
        let outage = statuses(&seen, instance, down + Duration::from_millis(300), up);
        assert!(!outage.is_empty() && outage.iter().all(|st| *st == 503), "instance {instance} while down: {outage:?}");
        let recovered = statuses(&seen, instance, after, end);
        assert!(!recovered.is_empty() && recovered.iter().all(|st| *st == 200), "recovered: {recovered:?}");
    }
    assert_eq!(refused_enrollment, 503, "enrollment while the database is down");
    let total = seen.len();
    // Each unexpected answer with the instance and when it came, after which step.
    let steps = [
        ("start", seen[0].2),
        ("A killed", killed),
        ("A restarting", restarted),
        ("A rejoined", rejoined),
        ("database stopping", stopping),
        ("database down", down),
        ("database starting", up),
        ("both answer again", after),
    ];
    let unexpected: Vec<String> = seen
        .iter()
        .filter(|(_, st, _)| ![0, 200, 503].contains(st))
        .map(|(instance, st, at)| {
            let (step, since) = steps.iter().rev().find(|(_, t)| t <= at).unwrap_or(&steps[0]);
            format!("{st} from instance {instance}, {:?} after '{step}'", at.saturating_duration_since(*since))
        })
        .collect();
    assert!(unexpected.is_empty(), "only 200, 503 or no answer (dead instance) in {total}: {unexpected:?}");
    eprintln!("{total} requests under load; statuses as expected in every phase");

    // Nothing acknowledged was lost: what clients got is in the registry, byte for byte.
    for enrolled in acquired.iter().chain([&alice]) {
        let shown = ca.inkan(["show", &enrolled.serial, "--pem"]).ok();
        assert_eq!(shown.stdout.trim(), common::read(&enrolled.cert).trim());
    }
}
