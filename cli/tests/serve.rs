//! The enrollment service end to end: the real `inkan serve` on port 0, curl as the client
//! (with client certificates and PKCS#12 files for certificate login), openssl judging what
//! the service issues and publishes. Each test runs its own service on its own data
//! directory; a guard kills it if the test fails, and every orderly stop checks that the
//! service exited 0, answered no request with a 5xx and wrote no secret to its log.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ca::ceremony::InitOptions;
use ca::layout::DataDir;
use ca::{CaKeyType, CertificateAuthority, IssueRequest, Passphrase, SledStore};
use common::{CA_PASS, ROOT_PASS, TestCa, genpkey, inkan, inkan_bin, openssl, openssl_serial, p256_csr, req, run, s};
use pki::{Profile, ProfileSettings};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long `serve` may take to print its addresses.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long `serve` may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// Every account password in these tests ends with this, so a log can be searched for all.
const PASSWORD_MARK: &str = "Pw-9f3Kq2";
/// A wrong password (also a secret: it is often a typo of the right one).
const WRONG: &str = "typo.Wrong-7c1Xv";
/// The password of the PKCS#12 files the tests make.
const P12_PASS: &str = "p12 file password";

/// The password of account `login_id`.
fn password(login_id: &str) -> String {
    format!("{login_id}.{PASSWORD_MARK}")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time string"), &Rfc3339).expect("RFC 3339")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formats")
}

// ---- the data directory ---------------------------------------------------------------------

/// Replaces `from` (which must be there) with `to` in DATA/inkan.toml, before `serve` reads it.
fn configure(ca: &TestCa, edits: &[(&str, &str)]) {
    let path = ca.file("inkan.toml");
    let mut text = read(&path);
    for (from, to) in edits {
        assert!(text.contains(from), "inkan.toml has no {from:?}:\n{text}");
        text = text.replace(from, to);
    }
    write(&path, text);
}

/// `inkan init`, with `rate` login and enrollment requests per minute and `edits`.
fn new_ca(rate: u32, edits: &[(&str, &str)]) -> TestCa {
    let ca = TestCa::init(&[]);
    configure(&ca, &[("rate_limit_per_minute = 30", &format!("rate_limit_per_minute = {rate}"))]);
    configure(&ca, edits);
    ca
}

/// A CA whose root and issuing CA were made `days_ago` days ago (by the same ceremony `inkan
/// init` runs), so that it can have issued certificates that have already expired.
fn backdated_ca(days_ago: i64) -> TestCa {
    let tmp = tempfile::tempdir().expect("tempdir");
    let proto = tmp.path().join("proto");
    inkan(["init", "--data-dir", s(&proto)], &TestCa::env()).ok();
    let data = tmp.path().join("data");
    let options = InitOptions {
        key_type: CaKeyType::EcdsaP256,
        organization: "inkan".into(),
        root_days: 7305,
        ca_days: 3652,
        root_crl_url: Some("http://127.0.0.1:8080/crl/root.crl".into()),
        root_cert_url: Some("http://127.0.0.1:8080/root.crt".into()),
        config_toml: read(&proto.join("inkan.toml")),
    };
    let then = OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    ca::ceremony::init(
        &DataDir::new(&data),
        &options,
        &Passphrase::new(ROOT_PASS.into()),
        &Passphrase::new(CA_PASS.into()),
        then,
    )
    .expect("back-dated CA ceremony");
    TestCa { tmp, data }
}

/// `inkan user add` (through the admin socket when a service runs, else on the store).
fn add_user(ca: &TestCa, login_id: &str, role: &str, master: Option<&str>) {
    let mut args = vec!["user", "add", "--login-id", login_id, "--role", role];
    if let Some(master) = master {
        args.extend(["--master", master]);
    }
    let pw = password(login_id);
    let out = ca.inkan_env(args, &[("INKAN_USER_PASSWORD", Some(&pw))]).ok();
    assert!(out.stdout.contains(&format!("{login_id:?}")), "{}", out.text());
}

/// `inkan user list --json`, parsed, by login ID.
fn accounts(ca: &TestCa) -> Value {
    let out = ca.inkan(["user", "list", "--json"]).ok();
    let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("user list --json");
    Value::Object(list.into_iter().map(|a| (a["login_id"].as_str().expect("login_id").to_owned(), a)).collect())
}

/// The status `inkan list --json` gives each of `account`'s certificates, by serial.
fn statuses(ca: &TestCa, account: &str) -> Vec<(String, String)> {
    let mut out: Vec<_> = ca
        .list(&["--account", account])
        .iter()
        .map(|c| (c["serial"].as_str().expect("serial").to_owned(), c["status"].as_str().expect("status").to_owned()))
        .collect();
    out.sort();
    out
}

/// Issues a certificate with the CA library directly (no service may be running), with the
/// CA's clock at `at`; returns the PEM file and the serial.
fn issue_in_process(ca: &TestCa, csr: &Path, account: &str, days: u32, at: OffsetDateTime) -> (PathBuf, String) {
    let dir = DataDir::new(&ca.data);
    let (signer, der) =
        ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &Passphrase::new(CA_PASS.into())).expect("CA key");
    let store = Arc::new(SledStore::open(&dir.db()).expect("registry"));
    let settings = ProfileSettings {
        organization: "inkan".into(),
        crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
        ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
        ocsp_url: None,
        default_days: 365,
        max_days: 825,
    };
    let authority = CertificateAuthority::new(&der, Box::new(signer), store, settings).expect("authority");
    let csr = std::fs::read(csr).expect("CSR");
    let request =
        IssueRequest { csr: &csr, account, profile: Profile::Client, sans: &[], days: Some(days), request_id: None };
    let issued = authority.issue_at(&request, at).expect("issue_at");
    let path = ca.work().join(format!("{account}-{days}d.crt"));
    write(&path, pki::encoding::pem_encode("CERTIFICATE", &issued.der));
    (path, issued.record.serial.to_string())
}

/// `openssl x509 -fingerprint -sha256` of a certificate file, PEM or DER.
fn fingerprint(cert: &Path, inform: &str) -> String {
    let out = openssl(["x509", "-noout", "-fingerprint", "-sha256", "-inform", inform, "-in", s(cert)]).ok();
    out.stdout.trim().split_once('=').expect("name=fingerprint").1.to_owned()
}

/// A CA made here with openssl that carries the same name as inkan's issuing CA: everything
/// but the key matches. Returns its certificate and key.
fn foreign_ca(work: &Path) -> (PathBuf, PathBuf) {
    let key = genpkey(work, "foreign-ca", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let cert = work.join("foreign-ca.crt");
    let subject = "/O=inkan/CN=inkan Issuing CA";
    let (bc, ku) = ("basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign");
    let mut args = vec!["req", "-x509", "-new", "-key", s(&key), "-subj", subject, "-days", "30"];
    args.extend(["-addext", bc, "-addext", ku, "-out", s(&cert)]);
    openssl(args).ok();
    (cert, key)
}

/// A TLS client certificate for O=inkan, CN=`cn` with serial `serial_hex`, signed with openssl
/// by `ca_cert` and `ca_key` (decrypted with `passin` if given); its key is WORK/NAME.key.
fn openssl_client_cert(
    work: &Path,
    name: &str,
    (ca_cert, ca_key, passin): (&Path, &Path, Option<&str>),
    cn: &str,
    serial_hex: &str,
) -> (PathBuf, PathBuf) {
    let key = genpkey(work, name, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = work.join(format!("{name}.csr"));
    openssl(["req", "-new", "-key", s(&key), "-subj", &format!("/O=inkan/CN={cn}"), "-out", s(&csr)]).ok();
    let ext = work.join(format!("{name}.ext"));
    write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let cert = work.join(format!("{name}.crt"));
    let serial = format!("0x{serial_hex}");
    let mut args = vec!["x509", "-req", "-in", s(&csr), "-CA", s(ca_cert), "-CAkey", s(ca_key)];
    args.extend(["-set_serial", &serial, "-days", "10", "-extfile", s(&ext), "-out", s(&cert)]);
    let pass = passin.map(|p| format!("pass:{p}"));
    if let Some(pass) = &pass {
        args.extend(["-passin", pass]);
    }
    openssl(args).ok();
    // A proper client certificate, for the CA that signed it.
    openssl(["verify", "-purpose", "sslclient", "-partial_chain", "-CAfile", s(ca_cert), s(&cert)]).ok();
    (cert, key)
}

// ---- curl -----------------------------------------------------------------------------------

/// One answer, as curl saw it.
struct Reply {
    what: String,
    /// The HTTP status; 0 when there was none (the connection failed).
    status: u16,
    curl_ok: bool,
    curl_stderr: String,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text()))
    }

    /// The values of header `name` in the (last) response.
    fn header(&self, name: &str) -> Vec<String> {
        let last = self.headers.rsplit("\r\n\r\n").find(|block| !block.trim().is_empty()).unwrap_or_default();
        last.lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {} (curl: {})\n{}",
            self.what,
            self.status,
            self.curl_stderr.trim(),
            self.text()
        );
        self
    }

    /// Asserts an API error: `status` and `{"error":{"code":CODE,"message":...}}`.
    #[track_caller]
    fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}: {body}", self.what);
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: no message: {body}", self.what);
        self
    }

    fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the TLS handshake was refused: curl failed and got no HTTP answer at all.
    #[track_caller]
    fn expect_handshake_refused(&self) {
        assert!(
            !self.curl_ok && self.status == 0,
            "{}: the handshake should have been refused, got {} (curl: {})\n{}",
            self.what,
            self.status,
            self.curl_stderr.trim(),
            self.text()
        );
    }
}

/// Who talks to the certificate-login listener: a client certificate (or none) and a
/// cookie jar.
struct Client {
    args: Vec<String>,
}

impl Client {
    fn pem(cert: &Path, key: &Path, jar: &Path) -> Self {
        Self { args: ["--cert", s(cert), "--key", s(key), "-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }

    fn p12(p12: &Path, pass: &str, jar: &Path) -> Self {
        let cert = format!("{}:{pass}", s(p12));
        Self { args: ["--cert-type", "P12", "--cert", &cert, "-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }

    fn anonymous(jar: &Path) -> Self {
        Self { args: ["-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }
}

/// A certificate obtained through the enrollment API, saved beside its key.
struct Cert {
    key: PathBuf,
    cert: PathBuf,
    chain: PathBuf,
    serial: String,
    issued: Value,
}

impl Cert {
    /// Saves the certificate and chain of `issued` as WORK/NAME.crt and WORK/NAME.chain.pem
    /// (the key is WORK/NAME.key, from [`p256_csr`]).
    fn save(work: &Path, name: &str, issued: Value) -> Self {
        let cert = work.join(format!("{name}.crt"));
        let chain = work.join(format!("{name}.chain.pem"));
        write(&cert, issued["certificate_pem"].as_str().expect("certificate_pem"));
        write(&chain, issued["chain_pem"].as_str().expect("chain_pem"));
        let serial = issued["serial"].as_str().expect("serial").to_owned();
        Self { key: work.join(format!("{name}.key")), cert, chain, serial, issued }
    }

    /// A client presenting this certificate, with its own cookie jar.
    fn client(&self) -> Client {
        Client::pem(&self.cert, &self.key, &self.cert.with_extension("jar"))
    }
}

// ---- the service ----------------------------------------------------------------------------

/// A running `inkan serve`. Dropping it kills the process; [`Server::stop`] stops it the
/// orderly way and checks how it went.
struct Server {
    pid: u32,
    public: u16,
    login: u16,
    http: u16,
    root: PathBuf,
    work: PathBuf,
    calls: Cell<u32>,
    exited: Receiver<ExitStatus>,
    exit: Cell<Option<ExitStatus>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Text that must never appear in the log.
    secrets: RefCell<Vec<String>>,
    /// Every answer: (request, status).
    seen: RefCell<Vec<(String, u16)>>,
}

/// The CA passphrase in a file (0600) in the test's work directory.
fn ca_pass_file(ca: &TestCa) -> PathBuf {
    let path = ca.work().join("ca.pass");
    if !path.exists() {
        std::fs::write(&path, format!("{CA_PASS}\n")).expect("write passphrase file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    }
    path
}

impl Server {
    fn start(ca: &TestCa) -> Self {
        Self::start_env(ca, &[])
    }

    /// `inkan serve` on port 0 everywhere, with the CA passphrase in a file (serve refuses it
    /// in its environment) and `env`; returns once it has printed the three addresses.
    fn start_env(ca: &TestCa, env: &[(&str, &str)]) -> Self {
        let pass_file = ca_pass_file(ca);
        let mut command = Command::new(inkan_bin());
        command
            .args(["serve", "--data-dir", s(&ca.data), "--ca-passphrase-file", s(&pass_file)])
            .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .env_remove("INKAN_DATA_DIR")
            .env_remove("INKAN_ROOT_PASSPHRASE")
            .env_remove("INKAN_LOG")
            .env_remove("INKAN_CA_PASSPHRASE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting inkan serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep draining after the test stopped listening.
                let _ = line_tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                sink.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        let pid = child.id();
        let (exit_tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut server = Server {
            pid,
            public: 0,
            login: 0,
            http: 0,
            root: ca.root_crt(),
            work: ca.work().to_owned(),
            calls: Cell::new(0),
            exited,
            exit: Cell::new(None),
            stderr,
            stderr_reader: Some(stderr_reader),
            secrets: RefCell::new([CA_PASS, ROOT_PASS, PASSWORD_MARK, WRONG].into_iter().map(String::from).collect()),
            seen: RefCell::new(Vec::new()),
        };
        // From here on, a panic drops `server`, which kills the process.
        let deadline = Instant::now() + READY_WITHIN;
        let mut printed = Vec::new();
        while server.public == 0 || server.login == 0 || server.http == 0 {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some((port, rest)) = port_after(&line, "https://localhost:") {
                        if rest.starts_with("/cert/acquire") {
                            server.public = port;
                        } else if rest.trim() == "/" {
                            server.login = port;
                        }
                    }
                    match port_after(&line, "http://127.0.0.1:") {
                        Some((port, rest)) if rest.starts_with("/root.crt") => server.http = port,
                        _ => {}
                    }
                    printed.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "inkan serve did not print its addresses within {READY_WITHIN:?}: {printed:?}\n{}",
                        server.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(5));
                    panic!("inkan serve ended before it was ready ({status:?}): {printed:?}\n{}", server.log())
                }
            }
        }
        server
    }

    /// The log so far.
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Adds text the log must never contain.
    fn secret(&self, text: &str) {
        self.secrets.borrow_mut().push(text.to_owned());
    }

    fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        if self.exit.get().is_none() {
            self.exit.set(self.exited.recv_timeout(within).ok());
        }
        self.exit.get()
    }

    /// SIGTERM, then checks: exit status 0 within 15 s, no secret in the log, no 5xx answered.
    /// Returns the whole log.
    fn stop(mut self) -> String {
        run("kill", ["-TERM", &self.pid.to_string()], &[], None).ok();
        let started = Instant::now();
        let status = self.wait_exit(STOP_WITHIN);
        let stopped_in = started.elapsed();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        let status = status.unwrap_or_else(|| panic!("inkan serve still runs {STOP_WITHIN:?} after SIGTERM\n{log}"));
        assert_eq!(status.code(), Some(0), "inkan serve ended with {status} after SIGTERM\n{log}");
        eprintln!("inkan serve stopped {stopped_in:?} after SIGTERM");
        for secret in self.secrets.borrow().iter() {
            let leaks: Vec<String> = log
                .lines()
                .filter(|line| line.contains(secret.as_str()))
                .map(|line| line.replace(secret.as_str(), "[SECRET]"))
                .collect();
            assert!(leaks.is_empty(), "serve's log contains a secret:\n{}", leaks.join("\n"));
        }
        let errors: Vec<_> = self.seen.borrow().iter().filter(|(_, status)| *status >= 500).cloned().collect();
        assert!(errors.is_empty(), "server errors: {errors:?}\n{log}");
        log
    }

    fn public_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.public)
    }

    fn login_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.login)
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// curl `url` with `args`, trusting the test CA's root.
    fn curl<S: AsRef<str>>(&self, url: &str, args: &[S]) -> Reply {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        let body = self.work.join(format!("curl-{n}.body"));
        let headers = self.work.join(format!("curl-{n}.headers"));
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let out = run(
            "curl",
            ["-sS", "--max-time", "30", "--cacert", s(&self.root), "-o", s(&body), "-D", s(&headers)]
                .into_iter()
                .chain(["-w", "%{http_code}"])
                .chain(args.iter().copied())
                .chain([url]),
            &[],
            None,
        );
        let shown: Vec<&str> = args.iter().map(|a| if a.starts_with('@') { "@BODY" } else { a }).collect();
        let what = format!("curl {} {url}", shown.join(" "));
        let reply = Reply {
            status: out.stdout.trim().parse().unwrap_or(0),
            curl_ok: out.status.success(),
            curl_stderr: out.stderr,
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
            what,
        };
        self.seen.borrow_mut().push((reply.what.chars().take(300).collect(), reply.status));
        reply
    }

    /// POST `body` as `content_type` to `url`, with `extra` curl arguments.
    fn post<S: AsRef<str>>(&self, url: &str, content_type: &str, body: &[u8], extra: &[S]) -> Reply {
        let file = self.work.join(format!("request-{}.body", self.calls.get() + 1));
        write(&file, body);
        let mut args =
            vec!["-X".to_owned(), "POST".to_owned(), "-H".to_owned(), format!("Content-Type: {content_type}")];
        args.extend(["--data-binary".to_owned(), format!("@{}", s(&file))]);
        args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
        self.curl(url, &args)
    }

    fn post_json(&self, url: &str, body: &Value) -> Reply {
        self.post::<&str>(url, "application/json", body.to_string().as_bytes(), &[])
    }

    /// `POST /api/v1/enrollments` (取得前処理).
    fn enroll(&self, login_id: &str, password: &str) -> Reply {
        self.post_json(&self.public_url("/api/v1/enrollments"), &json!({ "login_id": login_id, "password": password }))
    }

    /// A fresh enrollment ticket for an account that may have one.
    #[track_caller]
    fn ticket(&self, login_id: &str) -> String {
        let reply = self.enroll(login_id, &password(login_id));
        reply.expect(201);
        let body = reply.json();
        let ticket = body["ticket"].as_str().expect("ticket").to_owned();
        assert!(ticket.len() == 64 && ticket.bytes().all(|b| b.is_ascii_hexdigit()), "ticket {ticket:?}");
        let expires = parse_time(&body["expires_at"]);
        assert!(expires > OffsetDateTime::now_utc(), "the ticket expires in the future: {body}");
        self.secret(&ticket);
        ticket
    }

    /// `POST /api/v1/enrollments/{ticket}/csr` (発行).
    fn send_csr(&self, ticket: &str, csr_pem: &str) -> Reply {
        self.post_json(&self.public_url(&format!("/api/v1/enrollments/{ticket}/csr")), &json!({ "csr_pem": csr_pem }))
    }

    /// Sends `csr_pem` on `ticket` from `n` curl processes at once; returns their statuses.
    fn race_csr(&self, ticket: &str, csr_pem: &str, n: usize) -> Vec<u16> {
        let file = self.work.join("race.json");
        write(&file, json!({ "csr_pem": csr_pem }).to_string());
        let url = self.public_url(&format!("/api/v1/enrollments/{ticket}/csr"));
        let data = format!("@{}", s(&file));
        let racers: Vec<_> = (0..n)
            .map(|_| {
                Command::new("curl")
                    .args(["-sS", "--max-time", "30", "--cacert", s(&self.root), "-o", "/dev/null"])
                    .args(["-w", "%{http_code}", "-H", "Content-Type: application/json", "--data-binary", &data, &url])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting curl")
            })
            .collect();
        let statuses: Vec<u16> = racers
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.wait_with_output().expect("curl").stdout).trim().parse().unwrap_or(0))
            .collect();
        self.seen.borrow_mut().extend(statuses.iter().map(|st| (format!("racing CSR on {url}"), *st)));
        statuses
    }

    /// The whole acquisition for `login_id` with a new P-256 key WORK/NAME.key.
    #[track_caller]
    fn acquire(&self, login_id: &str, name: &str) -> Cert {
        let csr = p256_csr(&self.work, name);
        let ticket = self.ticket(login_id);
        let reply = self.send_csr(&ticket, &read(&csr));
        reply.expect(201);
        Cert::save(&self.work, name, reply.json())
    }

    /// GET `path` on the certificate-login listener as `client`.
    fn login_get(&self, client: &Client, path: &str) -> Reply {
        self.curl(&self.login_url(path), &client.args)
    }

    /// POST JSON to `path` on the certificate-login listener as `client`.
    fn login_post(&self, client: &Client, path: &str, body: &Value) -> Reply {
        self.post(&self.login_url(path), "application/json", body.to_string().as_bytes(), &client.args)
    }

    /// POST without a body to `path` on the certificate-login listener as `client` (a body the
    /// handler does not read would race the server's early answer, see the bad-input test).
    fn login_post_empty(&self, client: &Client, path: &str) -> Reply {
        let mut args = vec!["-X".to_owned(), "POST".to_owned()];
        args.extend(client.args.iter().cloned());
        self.curl(&self.login_url(path), &args)
    }

    /// `POST /api/v1/login` as `client`; a session cookie it gets is a secret.
    fn login_api(&self, client: &Client, password: &str) -> Reply {
        let reply = self.login_post(client, "/api/v1/login", &json!({ "password": password }));
        if let Some(id) = session_cookie(&reply) {
            self.secret(&id);
        }
        reply
    }

    /// `GET /api/v1/me` as `client`.
    fn me(&self, client: &Client) -> Reply {
        self.login_get(client, "/api/v1/me")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
            let _ = self.wait_exit(Duration::from_secs(10));
        }
    }
}

/// The port after `prefix` in `line`, and the text after the port.
fn port_after<'a>(line: &'a str, prefix: &str) -> Option<(u16, &'a str)> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// The `inkan_session` value a reply sets, if any.
fn session_cookie(reply: &Reply) -> Option<String> {
    reply.header("set-cookie").iter().find_map(|c| {
        let value = c.strip_prefix("inkan_session=")?;
        Some(value.split(';').next().unwrap_or_default().to_owned()).filter(|v| !v.is_empty())
    })
}

/// The text in `haystack` between `start` and the next `end`.
#[track_caller]
fn between(haystack: &str, start: &str, end: &str) -> String {
    let rest = haystack.split_once(start).unwrap_or_else(|| panic!("no {start:?} in\n{haystack}")).1;
    rest.split_once(end).unwrap_or_else(|| panic!("no {end:?} after {start:?}")).0.to_owned()
}

/// 取得前処理 through the pages: the form (its CSRF cookie in `jar`), then the form posted
/// with `login_id`'s password; returns the ticket of the 取得開始 page.
#[track_caller]
fn acquire_page(server: &Server, jar: &Path, login_id: &str) -> String {
    let jar_args = ["-b", s(jar), "-c", s(jar)];
    let form = server.curl(&server.public_url("/cert/acquire"), &jar_args);
    form.expect(200);
    let csrf = between(&form.text(), "name=\"csrf\" value=\"", "\"");
    let fields = format!("csrf={csrf}&mode=acquire&login_id={login_id}&password={}", password(login_id));
    let url = server.public_url("/cert/acquire");
    let start = server.post(&url, "application/x-www-form-urlencoded", fields.as_bytes(), &jar_args);
    start.expect(200);
    let ticket = between(&start.text(), "data-ticket=\"", "\"");
    server.secret(&ticket);
    ticket
}

// ---- tests ----------------------------------------------------------------------------------

/// 取得: an openssl-made P-256 CSR through the API; openssl verifies the certificate for TLS
/// client use under the root; its PKCS#12 logs in; the ticket is single-use.
#[test]
fn acquire_through_the_api_then_log_in_with_the_pkcs12() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "alice", "master", None);
    let server = Server::start(&ca);
    let work = ca.work();

    let csr = p256_csr(work, "alice");
    let ticket = server.ticket("alice");
    let reply = server.send_csr(&ticket, &read(&csr));
    reply.expect(201);
    let alice = Cert::save(work, "alice", reply.json());

    openssl([
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&ca.root_crt()),
        "-untrusted",
        s(&alice.chain),
        s(&alice.cert),
    ])
    .ok();
    // The chain is the issuing CA then the root, the very certificates in the data directory.
    let chain: Vec<Vec<u8>> =
        pem::parse_many(read(&alice.chain)).expect("chain PEM").into_iter().map(pem::Pem::into_contents).collect();
    let on_disk = |p: &Path| pem::parse(read(p)).expect("PEM").into_contents();
    assert_eq!(chain, vec![on_disk(&ca.ca_crt()), on_disk(&ca.root_crt())]);

    // The subject is the account's, not the CSR's (CN=ignored); the key is the CSR's.
    let subject = openssl(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", s(&alice.cert)]).ok().stdout;
    assert!(subject.contains("CN=alice") && !subject.contains("ignored"), "{subject}");
    assert!(alice.issued["subject"].as_str().expect("subject").contains("CN=alice"), "{}", alice.issued);
    let cert_key = openssl(["x509", "-noout", "-pubkey", "-in", s(&alice.cert)]).ok().stdout;
    let own_key = openssl(["pkey", "-pubout", "-in", s(&alice.key)]).ok().stdout;
    assert_eq!(cert_key, own_key, "the certificate certifies the CSR's key");
    // What the API says about it is what openssl reads from it.
    assert_eq!(openssl_serial(&alice.cert), alice.serial);
    assert_eq!(fingerprint(&alice.cert, "PEM"), alice.issued["sha256_fingerprint"]);
    let not_after = parse_time(&alice.issued["not_after"]);
    let left = not_after - OffsetDateTime::now_utc();
    assert!(left > time::Duration::days(364) && left <= time::Duration::days(365), "validity ends {not_after}");

    server.send_csr(&ticket, &read(&csr)).expect_error(409, "ticket_used");
    assert_eq!(statuses(&ca, "alice"), vec![(alice.serial.clone(), "valid".to_owned())], "one certificate issued");

    // The browser's way: key and chain in a password-protected PKCS#12.
    let p12 = work.join("alice.p12");
    openssl([
        "pkcs12",
        "-export",
        "-inkey",
        s(&alice.key),
        "-in",
        s(&alice.cert),
        "-certfile",
        s(&alice.chain),
        "-passout",
        &format!("pass:{P12_PASS}"),
        "-out",
        s(&p12),
    ])
    .ok();
    let jar = work.join("alice-p12.jar");
    let client = Client::p12(&p12, P12_PASS, &jar);
    server.me(&client).expect_error(401, "login_required");
    let login = server.login_api(&client, &password("alice"));
    login.expect(200);
    assert_eq!(login.json()["login_id"], "alice");
    assert_eq!(login.json()["role"], "master");
    let cookie = login.header("set-cookie").into_iter().find(|c| c.starts_with("inkan_session=")).expect("cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for wanted in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(attributes.contains(&wanted), "{wanted} missing from {cookie}");
    }

    let me = server.me(&client);
    me.expect(200);
    let me = me.json();
    assert_eq!(me["login_id"], "alice");
    assert_eq!(me["role"], "master");
    assert_eq!(me["master"], "alice");
    assert_eq!(me["renewal_window_days"], 30);
    let certificates = me["certificates"].as_array().expect("certificates");
    assert_eq!(certificates.len(), 1, "{me}");
    let listed = &certificates[0];
    assert_eq!(listed["serial"], alice.serial.as_str());
    assert_eq!(listed["status"], "valid");
    assert!(matches!(listed["days_left"].as_i64(), Some(364 | 365)), "{listed}");
    assert_eq!(listed["renewal_due"], false);

    // The cookie alone is not enough: the session belongs to the certificate.
    server.me(&Client::anonymous(&jar)).expect_error(401, "certificate_required");
    server.stop();
}

/// 電子証明書ログイン refuses: no certificate, another CA's (with our CA's name, the user's
/// name and a live serial), an expired one, a wrong password, and a certificate revoked while
/// the service runs — at the very next request, sessions included.
#[test]
fn certificate_login_refuses_missing_foreign_expired_and_revoked_certificates() {
    // A CA made 30 days ago, so that it can have issued a certificate that has expired.
    let ca = backdated_ca(30);
    configure(&ca, &[("rate_limit_per_minute = 30", "rate_limit_per_minute = 1000")]);
    add_user(&ca, "bob", "master", None);
    let work = ca.work();
    let old_csr = p256_csr(work, "bob-old");
    let ten_days_ago = OffsetDateTime::now_utc() - time::Duration::days(10);
    let (expired, _) = issue_in_process(&ca, &old_csr, "bob", 1, ten_days_ago);
    // openssl agrees: ours, and expired.
    ca.openssl_verify(&expired, &["-no_check_time", "-purpose", "sslclient"]).ok();
    let late = ca.openssl_verify(&expired, &[]).failed();
    assert!(late.text().contains("expired"), "{}", late.text());

    let server = Server::start(&ca);
    let bob = server.acquire("bob", "bob");
    let client = bob.client();
    server.login_api(&client, &password("bob")).expect(200);
    server.me(&client).expect(200);

    let nobody = Client::anonymous(&work.join("nobody.jar"));
    server.login_api(&nobody, &password("bob")).expect_error(401, "certificate_required");
    server.me(&nobody).expect_error(401, "certificate_required");

    // Another CA's certificate, though that CA has our CA's name and the certificate bob's
    // name and bob's live serial: refused in the handshake.
    let (foreign_ca_cert, foreign_ca_key) = foreign_ca(work);
    let (foreign, foreign_key) =
        openssl_client_cert(work, "foreign", (&foreign_ca_cert, &foreign_ca_key, None), "bob", &bob.serial);
    ca.openssl_verify(&foreign, &[]).failed();
    let foreign_client = Client::pem(&foreign, &foreign_key, &work.join("foreign.jar"));
    server.login_api(&foreign_client, &password("bob")).expect_handshake_refused();
    server.login_get(&foreign_client, "/").expect_handshake_refused();

    // Signed with our CA's key but never recorded: the registry, not the signature, decides.
    let ours = (ca.ca_crt(), ca.file("ca/ca.key"));
    let (unrecorded, unrecorded_key) =
        openssl_client_cert(work, "unrecorded", (&ours.0, &ours.1, Some(CA_PASS)), "bob", "7E57AB1E");
    ca.openssl_verify(&unrecorded, &["-purpose", "sslclient"]).ok();
    let unrecorded_client = Client::pem(&unrecorded, &unrecorded_key, &work.join("unrecorded.jar"));
    server.login_api(&unrecorded_client, &password("bob")).expect_error(403, "certificate_unknown");
    server.me(&unrecorded_client).expect_error(403, "certificate_unknown");

    // The service's own certificate is ours and recorded, but for servers only.
    let own = Client::pem(&ca.file("server/server.crt"), &ca.file("server/server.key"), &work.join("own.jar"));
    server.login_api(&own, &password("bob")).expect_handshake_refused();

    let expired_client = Client::pem(&expired, &work.join("bob-old.key"), &work.join("expired.jar"));
    server.login_api(&expired_client, &password("bob")).expect_handshake_refused();

    server.login_api(&client, WRONG).expect_error(401, "invalid_credentials");
    // The listener still serves bob, and his session still works.
    server.me(&client).expect(200);

    let revoked = ca.inkan(["revoke", &bob.serial, "--reason", "keyCompromise"]).ok();
    assert!(revoked.stdout.contains("Revoked"), "{}", revoked.text());
    server.me(&client).expect_error(403, "certificate_revoked");
    server.login_api(&client, &password("bob")).expect_error(403, "certificate_revoked");
    server.login_get(&client, "/").expect(403);
    server.stop();
}

/// 再取得: refused while the certificate has more than renewal_window_days left (the message
/// says until when and from when); allowed inside the window, and the old certificate is
/// then superseded — in the registry and at certificate login.
#[test]
fn reissue_only_inside_the_renewal_window_and_it_supersedes_the_old_certificate() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "carol", "master", None);
    add_user(&ca, "dave", "master", None);
    let work = ca.work();
    let old_csr = p256_csr(work, "carol-old");
    let (old_cert, old_serial) = issue_in_process(&ca, &old_csr, "carol", 10, OffsetDateTime::now_utc());
    let server = Server::start(&ca);

    let dave = server.acquire("dave", "dave");
    let refused = server.enroll("dave", &password("dave"));
    refused.expect_error(409, "certificate_valid");
    let not_after = parse_time(&dave.issued["not_after"]);
    let message = refused.message();
    for wanted in [dave.serial.clone(), rfc3339(not_after), rfc3339(not_after - time::Duration::days(30))] {
        assert!(message.contains(&wanted), "{wanted:?} missing from {message:?}");
    }
    assert_eq!(statuses(&ca, "dave"), vec![(dave.serial.clone(), "valid".to_owned())]);

    let old_client = Client::pem(&old_cert, &work.join("carol-old.key"), &work.join("carol-old.jar"));
    server.login_api(&old_client, &password("carol")).expect(200);
    let me = server.me(&old_client);
    me.expect(200);
    let listed = &me.json()["certificates"][0];
    assert_eq!(listed["serial"], old_serial.as_str());
    assert!(matches!(listed["days_left"].as_i64(), Some(9 | 10)), "{listed}");
    assert_eq!(listed["renewal_due"], true, "{listed}");

    let new = server.acquire("carol", "carol-new");
    let mut expected = vec![(old_serial.clone(), "superseded".to_owned()), (new.serial.clone(), "valid".to_owned())];
    expected.sort();
    assert_eq!(statuses(&ca, "carol"), expected);

    server.me(&old_client).expect_error(403, "certificate_superseded");
    server.login_api(&old_client, &password("carol")).expect_error(403, "certificate_superseded");
    let new_client = new.client();
    server.login_api(&new_client, &password("carol")).expect(200);
    let me = server.me(&new_client).json();
    let shown: Vec<(&str, &str)> = me["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| (c["serial"].as_str().unwrap_or_default(), c["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(shown, vec![(new.serial.as_str(), "valid"), (old_serial.as_str(), "superseded")]);

    // With a fresh certificate, carol is outside the window again.
    server.enroll("carol", &password("carol")).expect_error(409, "certificate_valid");
    server.stop();
}

/// `renewal_due` (and the home page's 再取得 banner, which links to the reacquire form) must
/// mean that 再取得 is allowed now. A certificate with 30 whole days and some hours left is
/// "due" by its rounded-down days_left (30 <= 30) but not by the eligibility check, which
/// compares exact durations (30 days and hours > 30 days).
#[test]
fn renewal_due_agrees_with_what_enrollment_allows() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "eve", "master", None);
    let work = ca.work();
    let csr = p256_csr(work, "eve-old");
    let (cert, _) = issue_in_process(&ca, &csr, "eve", 31, OffsetDateTime::now_utc());
    let server = Server::start(&ca);
    let client = Client::pem(&cert, &work.join("eve-old.key"), &work.join("eve-old.jar"));
    server.login_api(&client, &password("eve")).expect(200);
    let me = server.me(&client).json();
    let listed = &me["certificates"][0];
    let due = listed["renewal_due"].as_bool().expect("renewal_due");
    let home = server.login_get(&client, "/home?lang=en");
    home.expect(200);
    let banner = home.text().contains("renewal-banner");
    let enrollment = server.enroll("eve", &password("eve"));
    let allowed = enrollment.status == 201;
    assert!(
        due == allowed && banner == allowed,
        "days_left {} renewal_due {due}, home page banner {banner}, but the enrollment answers {}: {}",
        listed["days_left"],
        enrollment.status,
        enrollment.text()
    );
    server.stop();
}

/// Hostile and broken requests get a 4xx that says what is wrong, never a 5xx; a refused
/// CSR leaves the ticket usable; tickets expire and do not survive a restart.
#[test]
fn bad_input_gets_a_4xx_and_never_a_5xx() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "erin", "master", None);
    let work = ca.work();
    let good = read(&p256_csr(work, "erin"));
    let rsa_key = genpkey(work, "rsa1024", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]);
    let weak = read(&req(work, "rsa1024", &rsa_key, &[]));
    let tampered = {
        let mut der = pem::parse(&good).expect("CSR PEM").into_contents();
        let last = der.len() - 1;
        der[last] ^= 0x01; // the last byte of the signature
        pki::encoding::pem_encode("CERTIFICATE REQUEST", &der)
    };
    let server = Server::start(&ca);
    let enrollments = server.public_url("/api/v1/enrollments");
    let credentials = json!({ "login_id": "erin", "password": password("erin") }).to_string();

    let none: &[&str] = &[];
    let cases: [(&str, &str, &[u8]); 8] = [
        ("malformed JSON", "application/json", br#"{"login_id": "erin","#),
        ("empty body", "application/json", b""),
        ("wrong content type", "text/plain", credentials.as_bytes()),
        ("form instead of JSON", "application/x-www-form-urlencoded", b"login_id=erin&password=x"),
        ("missing password", "application/json", br#"{"login_id":"erin"}"#),
        ("wrong types", "application/json", br#"{"login_id":7,"password":["x"]}"#),
        ("not UTF-8", "application/json", b"{\"login_id\":\"\xff\xfe\",\"password\":\"x\"}"),
        ("an array", "application/json", b"[]"),
    ];
    for (what, content_type, body) in cases {
        // A wrong content type is refused before the body is read. Over HTTP/2 the server then
        // ends the stream with RST_STREAM(NO_ERROR) (RFC 9113 section 8.1), which curl 7.88
        // often reports as error 92 instead of the response: these go over HTTP/1.1.
        let extra: &[&str] = if content_type == "application/json" { none } else { &["--http1.1"] };
        let reply = server.post(&enrollments, content_type, body, extra);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        reply.expect_error(400, "invalid_json");
    }
    let huge = json!({ "login_id": "erin", "password": "x".repeat(70 * 1024) });
    server.post_json(&enrollments, &huge).expect_error(413, "body_too_large");
    let long_id = json!({ "login_id": "x".repeat(60 * 1024), "password": password("erin") });
    server.post_json(&enrollments, &long_id).expect_error(401, "invalid_credentials");

    server.send_csr(&"0".repeat(64), &good).expect_error(404, "ticket_unknown");
    server.send_csr("not-a-ticket", &good).expect_error(404, "ticket_unknown");
    let ticket = server.ticket("erin");
    let csr_url = server.public_url(&format!("/api/v1/enrollments/{ticket}/csr"));
    let root_pem = read(&ca.root_crt());
    for (what, csr) in [
        ("garbage", "hello, CA".to_owned()),
        ("empty", String::new()),
        ("PEM with trailing junk", format!("{good}junk after the END line\n")),
        ("two CSRs", format!("{good}{good}")),
        ("a certificate, not a CSR", root_pem),
        ("RSA-1024", weak),
        ("a broken signature", tampered),
    ] {
        let reply = server.send_csr(&ticket, &csr);
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        reply.expect_error(422, "csr_rejected");
    }
    server.send_csr(&ticket, &"A".repeat(70 * 1024)).expect_error(413, "body_too_large");
    server.post(&csr_url, "application/json", br#"{"csr_pem":"#, none).expect_error(400, "invalid_json");
    server.post(&csr_url, "application/json", br#"{"csr":"x"}"#, none).expect_error(400, "invalid_json");
    assert!(statuses(&ca, "erin").is_empty(), "nothing issued yet");

    // All that left the ticket usable, once.
    let issued = server.send_csr(&ticket, &good);
    issued.expect(201);
    server.send_csr(&ticket, &good).expect_error(409, "ticket_used");
    assert_eq!(
        statuses(&ca, "erin"),
        vec![(issued.json()["serial"].as_str().expect("serial").to_owned(), "valid".into())]
    );
    let installed = server.public_url(&format!("/api/v1/enrollments/{ticket}/installed"));
    server.curl(&installed, &["-X", "POST"]).expect(204);
    let unknown_installed = server.public_url(&format!("/api/v1/enrollments/{}/installed", "0".repeat(64)));
    server.curl(&unknown_installed, &["-X", "POST"]).expect_error(404, "ticket_unknown");

    // Pages.
    let root = server.curl(&server.public_url("/"), none);
    root.expect(303);
    assert_eq!(root.header("location"), vec!["/cert/acquire"]);
    let jar = work.join("pages.jar");
    let jar_args = ["-b", s(&jar), "-c", s(&jar)];
    let form = server.curl(&server.public_url("/cert/acquire"), &jar_args);
    form.expect(200);
    assert!(form.header("content-type").iter().any(|t| t.starts_with("text/html")), "{:?}", form.headers);
    assert!(form.header("set-cookie").iter().any(|c| c.starts_with("inkan_csrf=")), "{:?}", form.headers);
    let csrf = between(&form.text(), "name=\"csrf\" value=\"", "\"");
    let acquire = server.public_url("/cert/acquire");
    let forged = format!("csrf={}&mode=acquire&login_id=fay&password={}", "f".repeat(64), password("fay"));
    server.post(&acquire, "application/x-www-form-urlencoded", forged.as_bytes(), &jar_args).expect(403);
    let no_cookie = format!("csrf={csrf}&mode=acquire&login_id=fay&password={}", password("fay"));
    server.post(&acquire, "application/x-www-form-urlencoded", no_cookie.as_bytes(), none).expect(403);
    server.post(&acquire, "application/x-www-form-urlencoded", b"csrf=", &jar_args).expect(400);
    // With the CSRF cookie and field (refused forms rotate the token: read it again), the page
    // does what the API does; fay is added while serving, through the admin socket.
    add_user(&ca, "fay", "master", None);
    let page_ticket = acquire_page(&server, &jar, "fay");
    // Eight clients race to use it: exactly one certificate.
    let mut raced = server.race_csr(&page_ticket, &read(&p256_csr(work, "fay")), 8);
    raced.sort();
    assert_eq!(raced, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(statuses(&ca, "fay").len(), 1);

    // The login API and the page form cap bodies too (answering 400 where the enrollment API
    // answers 413).
    let anonymous = Client::anonymous(&work.join("big.jar"));
    let big_login = server.login_post(&anonymous, "/api/v1/login", &json!({ "password": "x".repeat(70 * 1024) }));
    assert!(matches!(big_login.status, 400 | 413), "{}", big_login.text());
    let big_form = format!("csrf=x&mode=acquire&login_id=fay&password={}", "x".repeat(70 * 1024));
    let big_form = server.post(&acquire, "application/x-www-form-urlencoded", big_form.as_bytes(), &jar_args);
    assert!(matches!(big_form.status, 400 | 413), "{}", big_form.text());

    server.curl(&server.public_url("/no/such/page"), none).expect_error(404, "not_found");
    server.curl(&server.public_url("/api/v1/../../../etc/passwd"), &["--path-as-is"]).expect(404);
    server.curl(&server.public_url("/api/v1/enrollments"), none).expect(405);
    server.login_get(&Client::anonymous(&work.join("x.jar")), "/no/such/page").expect_error(404, "not_found");
    server.curl(&server.http_url("/no/such/file"), none).expect(404);

    // Tickets live in memory: a restart forgets them. And with a 1 s lifetime they expire.
    add_user(&ca, "gus", "master", None);
    let forgotten = server.ticket("gus");
    server.stop();
    configure(&ca, &[("ticket_ttl_secs = 600", "ticket_ttl_secs = 1")]);
    let server = Server::start(&ca);
    server.secret(&forgotten);
    let gus_csr = read(&p256_csr(work, "gus"));
    server.send_csr(&forgotten, &gus_csr).expect_error(404, "ticket_unknown");
    let ticket = server.ticket("gus");
    std::thread::sleep(Duration::from_millis(1500)); // the ticket's lifetime, not synchronisation
    server.send_csr(&ticket, &gus_csr).expect_error(410, "ticket_expired");
    assert!(statuses(&ca, "gus").is_empty(), "nothing issued on an expired ticket");
    server.stop();
}

/// Lockout after 5 wrong passwords in a row, even for the right password afterwards; the
/// master unlocks a general user over the API, the operator unlocks a master with the CLI;
/// a master adds a general user over the API, who can then enroll.
#[test]
fn lockout_and_unlock_by_master_and_operator() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "boss", "master", None);
    add_user(&ca, "clerk", "general", Some("boss"));
    let server = Server::start(&ca);
    let boss = server.acquire("boss", "boss");
    let boss_client = boss.client();
    server.login_api(&boss_client, &password("boss")).expect(200);

    // Unknown ID and wrong password: the same answer.
    let unknown = server.enroll("nobody-here", WRONG);
    let wrong = server.enroll("clerk", WRONG);
    unknown.expect_error(401, "invalid_credentials");
    wrong.expect_error(401, "invalid_credentials");
    assert_eq!(unknown.body, wrong.body);
    for attempt in 2..=4 {
        let reply = server.enroll("clerk", WRONG);
        assert_eq!(reply.status, 401, "wrong password {attempt}: {}", reply.text());
    }
    server.enroll("clerk", WRONG).expect_error(403, "account_locked");
    let locked = server.enroll("clerk", &password("clerk"));
    locked.expect_error(403, "account_locked");
    assert!(locked.message().contains("master"), "tells a general user whom to ask: {}", locked.message());
    assert_eq!(accounts(&ca)["clerk"]["locked"], true);

    // Only with a session: the certificate alone does not unlock.
    let cert_only = Client::pem(&boss.cert, &boss.key, &ca.work().join("boss-no-session.jar"));
    server.login_post_empty(&cert_only, "/api/v1/users/clerk/unlock").expect_error(401, "login_required");
    server.login_post_empty(&boss_client, "/api/v1/users/nobody-here/unlock").expect_error(404, "not_found");
    let unlocked = server.login_post_empty(&boss_client, "/api/v1/users/clerk/unlock");
    unlocked.expect(200);
    assert_eq!(unlocked.json(), json!({ "login_id": "clerk", "locked": false }));
    assert_eq!(accounts(&ca)["clerk"]["locked"], false);
    let clerk = server.acquire("clerk", "clerk");
    assert!(clerk.issued["subject"].as_str().expect("subject").contains("CN=clerk"));
    // A session belongs to the certificate it was made with: boss's cookie with clerk's
    // certificate is no session.
    let borrowed = Client::pem(&clerk.cert, &clerk.key, &boss.cert.with_extension("jar"));
    server.me(&borrowed).expect_error(401, "login_required");
    // A general user cannot unlock or add anyone.
    let clerk_client = clerk.client();
    server.login_api(&clerk_client, &password("clerk")).expect(200);
    server.login_post_empty(&clerk_client, "/api/v1/users/clerk/unlock").expect_error(403, "master_only");
    let by_clerk = json!({ "login_id": "temp2", "password": password("temp2") });
    server.login_post(&clerk_client, "/api/v1/users", &by_clerk).expect_error(403, "master_only");

    let new_user = json!({ "login_id": "temp1", "password": password("temp1") });
    let added = server.login_post(&boss_client, "/api/v1/users", &new_user);
    added.expect(201);
    assert_eq!(added.json(), json!({ "login_id": "temp1", "master": "boss" }));
    server.login_post(&boss_client, "/api/v1/users", &new_user).expect_error(409, "exists");
    let temp1 = server.acquire("temp1", "temp1");
    assert!(temp1.issued["subject"].as_str().expect("subject").contains("CN=temp1"));
    assert_eq!(accounts(&ca)["temp1"]["role"], "general");

    // A master unlocks only its own contract's general users.
    add_user(&ca, "boss2", "master", None);
    add_user(&ca, "clerk2", "general", Some("boss2"));
    for _ in 1..=5 {
        server.enroll("clerk2", WRONG);
    }
    assert_eq!(accounts(&ca)["clerk2"]["locked"], true);
    server.login_post_empty(&boss_client, "/api/v1/users/clerk2/unlock").expect_error(404, "not_found");
    server.login_post_empty(&boss_client, "/api/v1/users/boss2/unlock").expect_error(404, "not_found");
    assert_eq!(accounts(&ca)["clerk2"]["locked"], true, "still locked");

    // A master locks itself out; its session stops working; the operator unlocks it.
    for _ in 1..=4 {
        server.enroll("boss", WRONG).expect_error(401, "invalid_credentials");
    }
    server.enroll("boss", WRONG).expect_error(403, "account_locked");
    let locked = server.enroll("boss", &password("boss"));
    locked.expect_error(403, "account_locked");
    assert!(locked.message().contains("operator"), "tells a master whom to ask: {}", locked.message());
    server.me(&boss_client).expect_error(403, "account_locked");
    let out = ca.inkan(["user", "unlock", "--login-id", "boss"]).ok();
    assert!(out.stdout.contains("Unlocked"), "{}", out.text());
    // Authenticated again: refused only because boss already has a valid certificate.
    server.enroll("boss", &password("boss")).expect_error(409, "certificate_valid");
    server.login_api(&boss_client, &password("boss")).expect(200);
    server.me(&boss_client).expect(200);
    server.stop();
}

/// rate_limit_per_minute = 5: the 6th login or enrollment request from one address within a
/// minute gets 429 with Retry-After, whatever the listener; pages and the CA files do not count.
#[test]
fn rate_limit_answers_429_with_retry_after() {
    let ca = new_ca(5, &[]);
    add_user(&ca, "frank", "master", None);
    let server = Server::start(&ca);
    for attempt in 1..=5 {
        let reply = server.enroll("nobody-here", WRONG);
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.text());
    }
    let limited = server.enroll("frank", &password("frank"));
    limited.expect_error(429, "rate_limited");
    let retry: Vec<u64> = limited.header("retry-after").iter().filter_map(|v| v.parse().ok()).collect();
    assert!(matches!(retry.as_slice(), [1..=60]), "Retry-After: {:?}", limited.header("retry-after"));
    server.send_csr(&"0".repeat(64), "x").expect_error(429, "rate_limited");
    let anonymous = Client::anonymous(&ca.work().join("a.jar"));
    server.login_api(&anonymous, &password("frank")).expect_error(429, "rate_limited");

    let none: &[&str] = &[];
    server.curl(&server.public_url("/cert/acquire"), none).expect(200);
    server.curl(&server.http_url("/ca.crt"), none).expect(200);
    let frank = &accounts(&ca)["frank"];
    assert_eq!((frank["locked"].clone(), frank["failed_attempts"].clone()), (json!(false), json!(0)));
    server.stop();
}

/// Plain HTTP: the root and issuing CA certificates as DER, byte for byte the ones in the
/// data directory; the CRL `inkan crl` signs while the service runs, verified by openssl.
#[test]
fn plain_http_serves_the_ca_certificates_and_the_crl() {
    let ca = new_ca(1000, &[]);
    let server = Server::start(&ca);
    let none: &[&str] = &[];
    let work = ca.work();
    for (path, pem) in [("/root.crt", ca.root_crt()), ("/ca.crt", ca.ca_crt())] {
        let reply = server.curl(&server.http_url(path), none);
        reply.expect(200);
        assert_eq!(reply.header("content-type"), vec!["application/pkix-cert"]);
        let der = work.join(path.trim_start_matches('/'));
        write(&der, &reply.body);
        assert_eq!(fingerprint(&der, "DER"), fingerprint(&pem, "PEM"), "{path}");
    }
    // The service signs and publishes a CRL when it starts (no `inkan crl` needed).
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.curl(&server.http_url("/crl/ca.crl"), none).status != 200 {
        assert!(Instant::now() < deadline, "no CRL published within 15 s of starting");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A certificate issued and revoked while serving, through the admin socket.
    let csr = p256_csr(work, "gina");
    let (_, serial) = ca.issue(&csr, "gina", "gina", &[]);
    ca.inkan(["revoke", &serial, "--reason", "keyCompromise"]).ok();
    ca.inkan(["crl"]).ok();

    let reply = server.curl(&server.http_url("/crl/ca.crl"), none);
    reply.expect(200);
    assert_eq!(reply.header("content-type"), vec!["application/pkix-crl"]);
    let crl = work.join("ca.crl");
    write(&crl, &reply.body);
    let checked =
        openssl(["crl", "-inform", "DER", "-in", s(&crl), "-CAfile", s(&ca.ca_crt()), "-verify", "-noout"]).ok();
    assert!(checked.text().contains("verify OK"), "{}", checked.text());
    let text = openssl(["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]).ok().stdout;
    assert!(text.contains(&format!("Serial Number: {serial}")), "{serial} not in\n{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    // The signature check means something: under the root, the CRL does not verify.
    openssl(["crl", "-inform", "DER", "-in", s(&crl), "-CAfile", s(&ca.root_crt()), "-verify", "-noout"]).failed();
    server.stop();
}

/// SIGTERM: exit status 0, "inkan stopped", the admin socket removed, and the stores free for
/// the CLI, with what the service wrote in them.
#[test]
fn sigterm_stops_the_service_gracefully() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "hana", "master", None);
    let server = Server::start(&ca);
    let socket = ca.file("admin.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).expect("admin socket").permissions());
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");
    let hana = server.acquire("hana", "hana");
    add_user(&ca, "ivo", "general", Some("hana"));

    // A second service on the same data directory is refused, and leaves the first alone.
    let pass_file = ca_pass_file(&ca);
    let second = run(
        "timeout",
        ["20", inkan_bin(), "serve", "--data-dir", s(&ca.data), "--listen", "127.0.0.1:0"].into_iter().chain([
            "--login-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--ca-passphrase-file",
            s(&pass_file),
        ]),
        &[("INKAN_CA_PASSPHRASE", None)],
        None,
    );
    second.refused("in use by another inkan process");
    assert!(socket.exists(), "the running service's admin socket is still there");
    server.enroll("hana", &password("hana")).expect_error(409, "certificate_valid");

    let log = server.stop();
    assert!(log.contains("inkan stopped"), "{log}");
    assert!(!socket.exists(), "the admin socket is removed");
    assert_eq!(statuses(&ca, "hana"), vec![(hana.serial.clone(), "valid".to_owned())]);
    let users = accounts(&ca);
    assert_eq!(users["ivo"]["master"], "hana");
    assert_eq!(users["hana"]["role"], "master");

    // After a crash (SIGKILL) the socket is left behind: the CLI still works on the stores,
    // and the next service replaces the socket.
    let server = Server::start(&ca);
    add_user(&ca, "joe", "master", None);
    drop(server);
    assert!(socket.exists(), "SIGKILL leaves the socket");
    assert_eq!(accounts(&ca)["joe"]["role"], "master");
    assert_eq!(statuses(&ca, "hana"), vec![(hana.serial.clone(), "valid".to_owned())]);
    let server = Server::start(&ca);
    let joe = server.acquire("joe", "joe");
    assert_eq!(statuses(&ca, "joe"), vec![(joe.serial.clone(), "valid".to_owned())]);
    server.stop();
    assert!(!socket.exists());
}

/// With the most verbose logging, a whole session's worth of requests leaves no password,
/// passphrase, ticket or session ID in the log.
#[test]
fn no_secrets_in_the_log_even_at_trace_level() {
    let ca = new_ca(1000, &[]);
    add_user(&ca, "jun", "master", None);
    let server = Server::start_env(&ca, &[("INKAN_LOG", "trace")]);
    let work = ca.work();
    server.enroll("jun", WRONG).expect_error(401, "invalid_credentials");
    let jun = server.acquire("jun", "jun");
    let client = jun.client();
    server.login_api(&client, WRONG).expect_error(401, "invalid_credentials");
    server.login_api(&client, &password("jun")).expect(200);
    server.me(&client).expect(200);
    let kim = json!({ "login_id": "kim", "password": password("kim") });
    server.login_post(&client, "/api/v1/users", &kim).expect(201);
    for _ in 1..=4 {
        server.enroll("kim", WRONG).expect_error(401, "invalid_credentials");
    }
    server.enroll("kim", WRONG).expect_error(403, "account_locked");
    server.login_post_empty(&client, "/api/v1/users/kim/unlock").expect(200);
    // The page form carries the password too.
    let ticket = acquire_page(&server, &work.join("page.jar"), "kim");
    server.send_csr(&ticket, &read(&p256_csr(work, "kim"))).expect(201);

    let log = server.stop();
    // The log was written, and at trace level.
    for wanted in ["enrollment ticket created", "certificate login", "TRACE"] {
        assert!(log.contains(wanted), "{wanted:?} not in the log");
    }
}
