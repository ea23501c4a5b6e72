//! A chain relying parties can check end to end (issue 11): nginx from Debian as the relying
//! party, with `ssl_verify_client on` and either both CRLs fetched from inkan (`ssl_crl`) or
//! OCSP over the whole chain (`ssl_ocsp on`), which asks inkan about the leaf and, with the
//! root's pre-signed answer, about the issuing CA. A valid client certificate gets 200; after
//! `inkan revoke` it is refused. Right after `inkan init` both the root CRL and the root's
//! answer exist, so nothing here signs them by hand.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Enrolled, Service, TestCa, p256_csr, read, s, write};

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// nginx in the foreground with `checks` in its TLS server block; stopped when dropped.
struct Nginx {
    daemon: Daemon,
    port: u16,
}

impl Nginx {
    fn start(work: &Path, name: &str, server: (&Path, &Path), client_ca: &Path, checks: &str) -> Self {
        let port = free_port();
        let dir = work.join(format!("nginx-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let conf = dir.join("nginx.conf");
        let d = s(&dir);
        write(
            &conf,
            format!(
                "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_verify_client on; ssl_client_certificate {ca}; ssl_verify_depth 2;
    {checks}
    location / {{ return 200 \"hello $ssl_client_s_dn\\n\"; }}
  }}
}}
",
                cert = s(server.0),
                key = s(server.1),
                ca = s(client_ca),
            ),
        );
        let mut command = Command::new("nginx");
        command.args(["-c", s(&conf), "-e", &format!("{d}/error.log")]);
        let daemon = Daemon::spawn(command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen:\n{}", read(&dir.join("error.log")));
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { daemon, port }
    }

    /// curl with the client certificate of `who`: the HTTP status (0 for a failed handshake).
    fn get(&self, root: &Path, who: &Enrolled) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", s(root)])
            .args(["--cert", s(&who.cert), "--key", s(&who.key)])
            .arg(format!("https://localhost:{}/", self.port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.daemon.signal("KILL");
    }
}

/// The server certificate nginx uses, issued by inkan for localhost (through the running
/// service's admin socket).
fn nginx_credential(ca: &TestCa) -> (PathBuf, PathBuf) {
    let csr = p256_csr(ca.work(), "nginx");
    let (cert, _) = ca.issue(&csr, "nginx-web", "nginx", &["--profile", "server", "--san", "localhost", "--chain"]);
    (cert, ca.work().join("nginx.key"))
}

/// Both CRLs, fetched from inkan's plain-HTTP listener, as one PEM file; waits (up to 10 s)
/// until the issuing CA's lists `serial` when one is given.
fn fetch_crls(server: &Service, work: &Path, listing: Option<&str>) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pem = String::new();
        for name in ["ca.crl", "root.crl"] {
            let reply = server.curl(&server.http_url(&format!("/crl/{name}")), common::NONE);
            reply.expect(200);
            let der = work.join(name);
            write(&der, &reply.body);
            pem.push_str(&common::openssl(["crl", "-inform", "DER", "-in", s(&der), "-outform", "PEM"]).ok().stdout);
        }
        let text =
            common::openssl(["crl", "-inform", "DER", "-in", s(&work.join("ca.crl")), "-noout", "-text"]).ok().stdout;
        if listing.is_none_or(|serial| text.contains(serial)) {
            let file = work.join("crls.pem");
            write(&file, pem);
            return file;
        }
        assert!(Instant::now() < deadline, "the CRL does not list {listing:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nginx_checks_the_chain_with_inkans_crls_and_with_ocsp() {
    let ca = TestCa::with_rate_limit(1000);
    for user in ["crl-user", "ocsp-user"] {
        ca.add_user(user, "master", None);
    }
    let server = Service::watched(&ca, &[]);
    let work = ca.work();
    let (cert, key) = nginx_credential(&ca);
    let client_ca = work.join("client-ca.pem");
    write(&client_ca, read(&ca.ca_crt()) + &read(&ca.root_crt()));
    let root = ca.root_crt();

    // CRLs: both fetched from inkan, right after init and the service's start.
    let crl_user = server.acquire("crl-user", "crl-user");
    let crls = fetch_crls(&server, work, None);
    let checks = format!("ssl_crl {};", s(&crls));
    let nginx = Nginx::start(work, "crl", (&cert, &key), &client_ca, &checks);
    assert_eq!(nginx.get(&root, &crl_user), 200, "a valid client certificate under ssl_crl");
    drop(nginx);
    ca.inkan(["revoke", &crl_user.serial, "--reason", "keyCompromise"]).ok();
    fetch_crls(&server, work, Some(&crl_user.serial));
    let nginx = Nginx::start(work, "crl", (&cert, &key), &client_ca, &checks);
    assert_eq!(nginx.get(&root, &crl_user), 400, "a revoked client certificate under ssl_crl");
    drop(nginx);

    // OCSP over the whole chain: the leaf from inkan's responder, the issuing CA from the
    // root's pre-signed answer that inkan serves.
    let ocsp_user = server.acquire("ocsp-user", "ocsp-user");
    // (The certificates name the default base URL; the test's service listens elsewhere.)
    let checks = format!("ssl_ocsp on; ssl_ocsp_responder {};", server.http_url("/ocsp"));
    let nginx = Nginx::start(work, "ocsp", (&cert, &key), &client_ca, &checks);
    let good = |text: &str| {
        let line =
            text.lines().find(|l| l.starts_with("inkan_ocsp_requests_total{response=\"good\"}")).expect("metric");
        line.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()).expect("a number")
    };
    let before = good(&server.metrics());
    let status = nginx.get(&root, &ocsp_user);
    assert_eq!(status, 200, "a valid client certificate under ssl_ocsp:\n{}", read(&work.join("nginx-ocsp/error.log")));
    assert!(good(&server.metrics()) >= before + 2, "nginx asked about the leaf and about the issuing CA");
    // The issuing CA's status as openssl sees it: the root's answer, verified under the root.
    let out = common::openssl([
        "ocsp",
        "-issuer",
        s(&root),
        "-cert",
        s(&ca.ca_crt()),
        "-url",
        &server.http_url("/ocsp"),
        "-CAfile",
        s(&root),
    ]);
    assert!(out.text().contains("Response verify OK") && out.text().contains(": good"), "{}", out.text());
    ca.inkan(["revoke", &ocsp_user.serial, "--reason", "cessationOfOperation"]).ok();
    assert_eq!(nginx.get(&root, &ocsp_user), 400, "a revoked client certificate under ssl_ocsp");
    let log = read(&work.join("nginx-ocsp/error.log"));
    assert!(log.contains("verify error: certificate revoked"), "nginx's reason:\n{log}");
    drop(nginx);
    let metrics = server.metrics();
    assert!(metrics.contains("inkan_ocsp_requests_total{response=\"good\"}"), "{metrics}");
    server.stop();
}

/// `inkan ca status` says how long each publication is valid and warns (exit status 2) 30 days
/// before the root's run out; a new ceremony clears it. The metrics show the same.
#[test]
fn ca_status_warns_before_the_roots_publications_run_out() {
    let ca = TestCa::init(&[]);
    let status = ca.inkan(["ca", "status"]).ok();
    for what in ["root CA certificate", "issuing CA certificate", "root CRL", "root's OCSP answer about the issuing CA"]
    {
        assert!(status.stdout.contains(what), "{what}: {}", status.stdout);
    }
    assert!(status.stdout.contains("364 days left"), "a year after init: {}", status.stdout);
    ca.inkan(["root", "sign-crl", "--days", "10"]).ok();
    let warned = ca.inkan(["ca", "status"]);
    assert_eq!(warned.status.code(), Some(2), "{}", warned.text());
    assert!(
        warned.stderr.contains("warning: the root CRL expires") && warned.stderr.contains("inkan root sign-crl"),
        "{}",
        warned.stderr
    );
    let json = ca.inkan(["ca", "status", "--json"]);
    let items: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let ocsp = items
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["file"].as_str().is_some_and(|f| f.ends_with("ca-ocsp.der")))
        .expect("the root's answer");
    assert!(ocsp["days_left"].as_i64().is_some_and(|d| (9..=10).contains(&d)), "{ocsp}");
    let server = Service::watched(&ca, &[]);
    let metrics = server.metrics();
    let left =
        metrics.lines().find(|l| l.starts_with("inkan_publication_seconds_left{what=\"root_crl\"}")).expect("metric");
    let seconds: u64 = left.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).expect("number");
    assert!((9 * 86_400..=10 * 86_400).contains(&seconds), "{left}");
    server.stop();
    ca.inkan(["root", "sign-crl"]).ok();
    ca.inkan(["ca", "status"]).ok();
}

/// An issuing CA with less validity left than `[ca] max_days` plus 30 days: `inkan ca status`,
/// the metrics and the service's log say it must be rolled over, and by when.
#[test]
fn the_issuing_ca_rollover_is_announced_before_certificates_would_be_cut_short() {
    let ca = TestCa::init(&["--ca-days", "845"]);
    let status = ca.inkan(["ca", "status"]);
    assert_eq!(status.status.code(), Some(2), "{}", status.text());
    assert!(status.stdout.contains("issuing CA rollover due"), "{}", status.stdout);
    assert!(
        status.stderr.contains("must be rolled over before") && status.stderr.contains("[ca] max_days (825 days)"),
        "{}",
        status.stderr
    );
    let json = ca.inkan(["ca", "status", "--json"]);
    let items: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let rollover = items
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["what"] == "issuing CA rollover due")
        .expect("the rollover item");
    assert!(rollover["days_left"].as_i64().is_some_and(|d| (19..=20).contains(&d)), "{rollover}");
    let server = Service::start(&ca, &[]);
    let metrics = server.metrics();
    let line = metrics.lines().find(|l| l.starts_with("inkan_issuing_ca_rollover_seconds_left ")).expect("metric");
    let seconds: u64 = line.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).expect("number");
    assert!((19 * 86_400..=20 * 86_400).contains(&seconds), "{line}");
    let log = server.stop();
    assert!(log.contains("must be rolled over before"), "the service's log says so:\n{log}");

    // A CA with room to spare: no warning.
    let roomy = TestCa::init(&[]);
    let fine = roomy.inkan(["ca", "status"]).ok();
    assert!(!fine.stderr.contains("rolled over"), "{}", fine.stderr);
}
