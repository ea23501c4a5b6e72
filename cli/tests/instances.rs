//! Several `inkan serve` instances over one PostgreSQL database and one signer: a throwaway
//! PostgreSQL 15 cluster on 127.0.0.1, a sled data directory moved into it with `inkan storage
//! migrate`, two instances (each with a data directory of its own, both reaching one signer),
//! and then what users and operators do spread over both: enroll on A, log in on B and go on on
//! A, revoke on B and ask A's OCSP, read both instances' CRLs, enroll concurrently on both,
//! kill the instance doing the background duties and watch the other take them over.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Enrolled, Out, Service, TestCa, openssl, run, s, start_signer, user_password};
use inkan_tests::postgres::Cluster;
use serde_json::json;

/// What `openssl ocsp` says about `who` at `service` (the response verified first).
fn ocsp_status(ca: &TestCa, service: &Service, who: &Enrolled) -> String {
    let url = service.http_url("/ocsp");
    let out =
        openssl(["ocsp", "-issuer", s(&ca.ca_crt()), "-url", &url, "-CAfile", s(&who.chain), "-cert", s(&who.cert)])
            .ok();
    let text = out.text();
    assert!(text.contains("Response verify OK"), "{text}");
    let prefix = format!("{}: ", s(&who.cert));
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{text}")).trim().to_owned()
}

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

#[test]
fn two_instances_one_database_one_signer() {
    let cluster = Cluster::start();
    let url = cluster.database("inkan");
    let ca = TestCa::init(&[]);
    ca.add_user("alice", "master", None).ok();
    for n in 0..12 {
        ca.add_user(&format!("gen{n}"), "general", Some("alice")).ok();
    }

    // The sled stores into the database; a URL with a password is refused first.
    let with_password = url.replace("inkan@", "inkan:hunter2@");
    ca.inkan(["storage", "migrate", "--to", &with_password]).refused("command lines are visible");
    let moved = ca.inkan(["storage", "migrate", "--to", &url]).ok();
    assert!(moved.stdout.contains("every store is the same on both sides"), "{}", moved.text());
    assert!(moved.stdout.lines().any(|l| l.starts_with("accounts") && l.contains(" 13 ")), "{}", moved.text());
    ca.inkan(["storage", "migrate", "--to", &url]).refused("is not empty");
    ca.configure(&[("backend = \"sled\"", &format!("backend = \"postgres\"\nurl = \"{url}\""))]);
    // Another team can query the registry with SQL.
    assert_eq!(psql(&cluster, "SELECT count(*) FROM certificates WHERE profile = 'server'"), "1");

    // Instance B's data directory: the configuration, certificates and the OTP sealing key,
    // no stores (they are in the database) and no signer (both reach A's).
    let data_b = ca.work().join("data-b");
    run("cp", ["-a", s(&ca.data), s(&data_b)], &[], None).ok();
    for gone in ["db", "web", "signer", "serve.lock"] {
        let _ = std::fs::remove_dir_all(data_b.join(gone));
        let _ = std::fs::remove_file(data_b.join(gone));
    }
    let socket = ca.work().join("signer.sock");
    let _signer = start_signer(&ca.data, &socket);
    let signer_args = ["--signer-socket", s(&socket)];
    let a = Service::start_with(&ca.data, &ca, &signer_args, &[]);
    std::thread::sleep(Duration::from_millis(200));
    let mut b = Service::start_with(&data_b, &ca, &signer_args, &[]);

    // Enroll on A, log in on B, go on on A with B's session.
    let alice = a.acquire("alice", "alice");
    let client = alice.client();
    let login = b.login_api(&client, &user_password("alice"));
    login.expect(200);
    let me = a.me(&client);
    me.expect(200);
    assert_eq!(me.json()["login_id"], "alice", "the session B made serves on A");
    assert_eq!(ocsp_status(&ca, &a, &alice), "good");

    // Revoke on B; A's OCSP answers revoked within a second.
    let url_b = b.login_url(&format!("/api/v1/certificates/{}/revoke", alice.serial));
    let revoked = b.post_json(
        &url_b,
        &json!({ "password": user_password("alice"), "reason": "keyCompromise" }),
        &alice.client_args(),
    );
    revoked.expect(200);
    let took = within("A's OCSP says revoked", Duration::from_secs(1), || ocsp_status(&ca, &a, &alice) == "revoked");
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
    let in_sql = psql(&cluster, "SELECT count(DISTINCT serial) FROM certificates WHERE account LIKE 'gen%'");
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
    assert_eq!(ocsp_status(&ca, &b, g0), "revoked");
    eprintln!("whole fail-over took {:?}", killed.elapsed());
    b.kill_all();
}
