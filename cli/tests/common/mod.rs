//! Helpers shared by the end-to-end tests of the `inkan` binary: run inkan and openssl as
//! processes, make keys and CSRs with openssl, and a throwaway CA in a temporary directory.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde_json::Value;

/// The root key's passphrase in every test CA.
pub const ROOT_PASS: &str = "test root passphrase 1f7a";
/// The issuing CA key's passphrase in every test CA (different from the root's).
pub const CA_PASS: &str = "test issuing passphrase 92c4";

/// What a finished process left behind.
#[derive(Debug)]
pub struct Out {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Standard output as bytes (for DER).
    pub raw_stdout: Vec<u8>,
    /// The command line, for failure messages.
    pub what: String,
}

impl Out {
    /// Asserts the process succeeded, and returns it.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the process failed the way inkan reports a refused command (exit status 1,
    /// not a panic's 101, not a signal) with `fragment` in its standard error, and returns it.
    #[track_caller]
    pub fn refused(self, fragment: &str) -> Self {
        assert_eq!(
            self.status.code(),
            Some(1),
            "{} should be refused with exit status 1 ({}):\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.contains(fragment), "{}: stderr should contain {fragment:?}:\n{}", self.what, self.stderr);
        self
    }

    /// Asserts the process failed with any non-zero status, and returns it.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            !self.status.success(),
            "{} should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Standard output and standard error together.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program` with `args`, the environment changes `env` (`None` removes a variable) and
/// optionally `stdin`. Any INKAN_* variable of the test process is removed first, so a
/// developer's shell cannot change what a test sees.
pub fn run<I, S>(program: &str, args: I, env: &[(&str, Option<&str>)], stdin: Option<&[u8]>) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let what = format!("{program} {}", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let mut command = Command::new(program);
    command
        .args(&args)
        .env_remove("INKAN_DATA_DIR")
        .env_remove("INKAN_ROOT_PASSPHRASE")
        .env_remove("INKAN_CA_PASSPHRASE")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("writing stdin");
    }
    let output = child.wait_with_output().expect("waiting for the process");
    Out {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        raw_stdout: output.stdout,
        what,
    }
}

/// The inkan binary under test.
pub fn inkan_bin() -> &'static str {
    env!("CARGO_BIN_EXE_inkan")
}

/// Runs the inkan binary with `args` and `env` (nothing else from the test's environment).
pub fn inkan<I, S>(args: I, env: &[(&str, Option<&str>)]) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(inkan_bin(), args, env, None)
}

/// Runs openssl with `args`.
pub fn openssl<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("openssl", args, &[], None)
}

/// Runs openssl with `args` and `env`.
pub fn openssl_env<I, S>(args: I, env: &[(&str, Option<&str>)]) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("openssl", args, env, None)
}

/// A path as a `&str` (the tempdirs are ASCII).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Makes a private key with `openssl genpkey ARGS` at `dir/NAME.key`.
pub fn genpkey(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    openssl(["genpkey"].iter().chain(args).chain(&["-out", s(&key)])).ok();
    key
}

/// Makes a PEM CSR for `key` at `dir/NAME.csr` with `openssl req -new ... EXTRA`.
pub fn req(dir: &Path, name: &str, key: &Path, extra: &[&str]) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    openssl(["req", "-new", "-key", s(key), "-subj", "/CN=ignored", "-out", s(&csr)].iter().chain(extra)).ok();
    csr
}

/// A new P-256 key and its CSR, `dir/NAME.key` and `dir/NAME.csr`.
pub fn p256_csr(dir: &Path, name: &str) -> PathBuf {
    let key = genpkey(dir, name, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    req(dir, name, &key, &[])
}

/// The serial of a PEM certificate as `openssl x509 -serial` prints it, without `serial=`.
pub fn openssl_serial(cert: &Path) -> String {
    let out = openssl(["x509", "-noout", "-serial", "-in", s(cert)]).ok();
    out.stdout.trim().strip_prefix("serial=").expect("openssl prints serial=").to_owned()
}

/// A CA made by `inkan init` in its own temporary directory.
pub struct TestCa {
    /// Holds the temporary directory until the test ends.
    pub tmp: tempfile::TempDir,
    /// The data directory (`TMP/data`).
    pub data: PathBuf,
}

impl TestCa {
    /// `inkan init` with the test passphrases and `extra` arguments.
    pub fn init(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let ca = Self { tmp, data };
        ca.inkan(["init"].iter().chain(extra)).ok();
        ca
    }

    /// The temporary directory, for the test's own files.
    pub fn work(&self) -> &Path {
        self.tmp.path()
    }

    /// A file under the data directory.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.data.join(rel)
    }

    /// The root certificate file.
    pub fn root_crt(&self) -> PathBuf {
        self.file("root/root.crt")
    }

    /// The issuing CA certificate file.
    pub fn ca_crt(&self) -> PathBuf {
        self.file("ca/ca.crt")
    }

    /// The environment every command gets: both passphrases.
    pub fn env() -> [(&'static str, Option<&'static str>); 2] {
        [("INKAN_ROOT_PASSPHRASE", Some(ROOT_PASS)), ("INKAN_CA_PASSPHRASE", Some(CA_PASS))]
    }

    /// Runs `inkan ARGS --data-dir DATA` with both passphrases in the environment.
    pub fn inkan<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inkan_env(args, &Self::env())
    }

    /// Runs `inkan ARGS --data-dir DATA` with exactly the environment `env`.
    pub fn inkan_env<I, S>(&self, args: I, env: &[(&str, Option<&str>)]) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .chain(["--data-dir".into(), self.data.clone().into_os_string()])
            .collect();
        inkan(args, env)
    }

    /// Runs `inkan ARGS --data-dir DATA` with both passphrases and `input` on standard input.
    pub fn inkan_stdin<I, S>(&self, args: I, input: &[u8]) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .chain(["--data-dir".into(), self.data.clone().into_os_string()])
            .collect();
        run(inkan_bin(), args, &Self::env(), Some(input))
    }

    /// Issues a certificate for `account` from `csr` into `WORK/NAME.crt`; returns that path
    /// and the serial openssl reads from it.
    pub fn issue(&self, csr: &Path, account: &str, name: &str, extra: &[&str]) -> (PathBuf, String) {
        let out = self.work().join(format!("{name}.crt"));
        self.inkan(["issue", "--csr", s(csr), "--account", account, "--out", s(&out)].iter().chain(extra)).ok();
        let serial = openssl_serial(&out);
        (out, serial)
    }

    /// `inkan list --json EXTRA`, parsed.
    /// `inkan list --json`, without the enrollment service's own TLS certificate, which
    /// `init` issues (account `inkan-server`).
    pub fn list(&self, extra: &[&str]) -> Vec<Value> {
        let out = self.inkan(["list", "--json"].iter().chain(extra)).ok();
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(items)) => items.into_iter().filter(|c| c["account"] != "inkan-server").collect(),
            other => panic!("list --json is not an array: {other:?}\n{}", out.stdout),
        }
    }

    /// `inkan list --json` as printed: what a test compares to prove nothing changed.
    pub fn list_text(&self) -> String {
        self.inkan(["list", "--json"]).ok().stdout
    }

    /// `openssl verify -x509_strict -CAfile root -untrusted ca EXTRA cert`.
    pub fn openssl_verify(&self, cert: &Path, extra: &[&str]) -> Out {
        openssl(
            ["verify", "-x509_strict", "-CAfile", s(&self.root_crt()), "-untrusted", s(&self.ca_crt())]
                .iter()
                .chain(extra)
                .chain(&[s(cert)]),
        )
    }
}

/// The serials of a `list --json` result, in order.
pub fn serials(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["serial"].as_str().expect("serial is a string").to_owned()).collect()
}

impl TestCa {
    /// The CA passphrase in WORK/ca.pass (0600), for `--ca-passphrase-file`.
    pub fn ca_pass_file(&self) -> PathBuf {
        let path = self.work().join("ca.pass");
        if !path.exists() {
            std::fs::write(&path, format!("{CA_PASS}\n")).expect("write passphrase file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        }
        path
    }
}

/// A long-running process (`inkan signer`, `inkan serve`, `inkan audit tail -f`): its
/// standard output read line by line as it comes, its standard error kept. Dropping it kills
/// the process (SIGKILL) if it still runs.
pub struct Daemon {
    /// Its process id.
    pub pid: u32,
    /// The command line, for failure messages.
    pub what: String,
    lines: std::sync::mpsc::Receiver<String>,
    printed: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    exited: std::sync::mpsc::Receiver<ExitStatus>,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `command` with its standard output and error piped and no standard input.
    pub fn spawn(mut command: Command) -> Self {
        use std::io::{BufRead, Read};
        let what = format!(
            "{} {}",
            command.get_program().to_string_lossy(),
            command.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (line_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        let pid = child.id();
        let (exit_tx, exited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Self { pid, what, lines, printed: Vec::new(), stderr, exited, exit: None }
    }

    /// Waits up to `within` for a line of standard output that `wanted` accepts, and returns
    /// it; panics (with what the process printed) if none comes or the process ends first.
    #[track_caller]
    pub fn wait_line(&mut self, within: std::time::Duration, wanted: impl Fn(&str) -> bool) -> String {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) => {
                    self.printed.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no expected line within {within:?}; printed {:?}\n{}",
                        self.what,
                        self.printed,
                        self.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(std::time::Duration::from_secs(5));
                    panic!("{} ended ({status:?}); printed {:?}\n{}", self.what, self.printed, self.stderr())
                }
            }
        }
    }

    /// The lines of standard output read so far by [`Daemon::wait_line`].
    pub fn printed(&self) -> &[String] {
        &self.printed
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        run("kill", [format!("-{signal}"), self.pid.to_string()], &[], None).ok();
    }

    /// How the process ended, waiting up to `within` for it.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.exited.recv_timeout(within).ok();
        }
        self.exit
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.wait_exit(std::time::Duration::ZERO).is_none()
    }

    /// SIGTERM, then asserts the process exits 0 within `within`; returns its standard error.
    #[track_caller]
    pub fn stop(&mut self, within: std::time::Duration) -> String {
        self.signal("TERM");
        let status = self.wait_exit(within);
        let stderr = self.stderr();
        let status = status.unwrap_or_else(|| panic!("{} still runs {within:?} after SIGTERM\n{stderr}", self.what));
        assert_eq!(status.code(), Some(0), "{} ended with {status} after SIGTERM\n{stderr}", self.what);
        stderr
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
            let _ = self.wait_exit(std::time::Duration::from_secs(10));
        }
    }
}

// ---- pkilint --------------------------------------------------------------------------------

/// Where pkilint's commands are: `$INKAN_PKILINT_BIN`, else the repository's `.venv/bin` (the
/// same lookup as `pkilint_bin` in `tests/src/lib.rs`, which this package cannot depend on).
pub fn pkilint_bin(tool: &str) -> PathBuf {
    let dir = std::env::var_os("INKAN_PKILINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin"));
    let path = dir.join(tool);
    assert!(
        path.exists(),
        "{} not found: pkilint is installed by the README's test command (python3 -m venv .venv && .venv/bin/pip install pkilint)",
        path.display()
    );
    path
}

/// Runs `TOOL lint -s WARNING ARGS` and asserts pkilint succeeded and reported nothing.
#[track_caller]
pub fn assert_lint_clean(tool: &str, args: &[&str]) {
    let bin = pkilint_bin(tool);
    let out = run(s(&bin), ["lint", "-s", "WARNING"].iter().chain(args), &[], None);
    assert!(out.status.success() && out.text().trim().is_empty(), "{tool} {args:?} reported:\n{}", out.text());
}

// ---- accounts and configuration -------------------------------------------------------------

/// The password every test gives account `login_id`.
pub fn user_password(login_id: &str) -> String {
    format!("{login_id}.Pw-9f3Kq2")
}

/// The text in `haystack` between `start` and the next `end`.
#[track_caller]
pub fn between(haystack: &str, start: &str, end: &str) -> String {
    let rest = haystack.split_once(start).unwrap_or_else(|| panic!("no {start:?} in\n{haystack}")).1;
    rest.split_once(end).unwrap_or_else(|| panic!("no {end:?} after {start:?}")).0.to_owned()
}

impl TestCa {
    /// Replaces `from` (which must be there) with `to` in DATA/inkan.toml, before `serve`
    /// reads it.
    #[track_caller]
    pub fn configure(&self, edits: &[(&str, &str)]) {
        let path = self.file("inkan.toml");
        let mut text = std::fs::read_to_string(&path).expect("reading inkan.toml");
        for (from, to) in edits {
            assert!(text.contains(from), "inkan.toml has no {from:?}:\n{text}");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).expect("writing inkan.toml");
    }

    /// `inkan user add` with [`user_password`] (through the admin socket when a service runs).
    #[track_caller]
    pub fn add_user(&self, login_id: &str, role: &str, master: Option<&str>) {
        let mut args = vec!["user", "add", "--login-id", login_id, "--role", role];
        if let Some(master) = master {
            args.extend(["--master", master]);
        }
        let password = user_password(login_id);
        self.inkan_env(args, &[("INKAN_USER_PASSWORD", Some(&password))]).ok();
    }

    /// Issues a client certificate for `account` valid `days` days with the CA library, straight
    /// into the registry DATA/db (no service may be running), from the CSR `csr`; writes it to
    /// WORK/NAME.crt and returns that path and its serial.
    pub fn issue_with_library(&self, csr: &Path, account: &str, days: u32, name: &str) -> (PathBuf, String) {
        let dir = ca::layout::DataDir::new(&self.data);
        let (signer, der) =
            ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &ca::Passphrase::new(CA_PASS.into()))
                .expect("loading the CA key");
        let store = std::sync::Arc::new(ca::SledStore::open(&dir.db()).expect("opening the registry"));
        let settings = pki::ProfileSettings {
            organization: "inkan".into(),
            crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
            ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
            ocsp_url: Some("http://127.0.0.1:8080/ocsp".into()),
            default_days: 365,
            max_days: 825,
        };
        let authority = ca::CertificateAuthority::new(&der, Box::new(signer), store, settings).expect("the CA library");
        let csr = std::fs::read(csr).expect("reading the CSR");
        let request = ca::IssueRequest {
            csr: &csr,
            account,
            profile: pki::Profile::Client,
            sans: &[],
            days: Some(days),
            request_id: None,
        };
        let issued = authority.issue(&request).expect("issuing with the library");
        let path = self.work().join(format!("{name}.crt"));
        std::fs::write(&path, pki::encoding::pem_encode("CERTIFICATE", &issued.der)).expect("writing the certificate");
        (path, issued.record.serial.to_string())
    }
}

// ---- the enrollment service -----------------------------------------------------------------

/// One answer, as curl saw it.
#[derive(Debug)]
pub struct Reply {
    /// The request, for failure messages.
    pub what: String,
    /// The HTTP status; 0 when there was none.
    pub status: u16,
    /// The response headers as received (every response, for redirects).
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text()))
    }

    /// Asserts the status, and returns the reply.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}: expected {status}, got {}\n{}", self.what, self.status, self.text());
        self
    }

    /// Asserts `{"error":{"code":CODE,"message":...}}` with `status`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}: {body}", self.what);
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: no message: {body}", self.what);
        self
    }

    /// The value of header `name` in the last response, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self.headers.rsplit("\r\n\r\n").find(|block| !block.trim().is_empty()).unwrap_or_default();
        last.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    }
}

/// The port after `prefix` in `line`, and the text after the port.
pub fn port_after<'a>(line: &'a str, prefix: &str) -> Option<(u16, &'a str)> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// A certificate obtained through the enrollment API: WORK/NAME.key, .crt, .chain.pem.
#[derive(Debug)]
pub struct Enrolled {
    /// The private key (PEM).
    pub key: PathBuf,
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The issuing CA and root certificates (PEM).
    pub chain: PathBuf,
    /// Its serial, uppercase hex.
    pub serial: String,
    /// The API's answer.
    pub issued: Value,
}

impl Enrolled {
    /// curl arguments presenting this certificate, with a cookie jar of its own.
    pub fn client_args(&self) -> Vec<String> {
        let jar = self.cert.with_extension("jar");
        ["--cert", s(&self.cert), "--key", s(&self.key), "-b", s(&jar), "-c", s(&jar)].map(String::from).to_vec()
    }
}

/// A running `inkan serve` on port 0 everywhere (the CA passphrase in a file, no INKAN_*
/// variable of the test's). Dropping it kills the process; [`Service::stop`] stops it with
/// SIGTERM and checks it exits 0.
pub struct Service {
    /// The process.
    pub serve: Daemon,
    /// The public HTTPS port.
    pub public: u16,
    /// The certificate-login HTTPS port.
    pub login: u16,
    /// The plain-HTTP port.
    pub http: u16,
    root: PathBuf,
    work: PathBuf,
    calls: std::sync::atomic::AtomicU32,
}

impl Service {
    /// How long `serve` may take to print its addresses.
    pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

    /// Starts `inkan serve` on `ca`'s data directory with `env`; returns once the addresses
    /// are printed.
    pub fn start(ca: &TestCa, env: &[(&str, &str)]) -> Self {
        let pass_file = ca.ca_pass_file();
        let mut command = Command::new(inkan_bin());
        command
            .args(["serve", "--data-dir", s(&ca.data), "--ca-passphrase-file", s(&pass_file)])
            .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .env_remove("INKAN_DATA_DIR")
            .env_remove("INKAN_ROOT_PASSPHRASE")
            .env_remove("INKAN_CA_PASSPHRASE")
            .env_remove("INKAN_LOG")
            .envs(env.iter().copied());
        let mut serve = Daemon::spawn(command);
        serve.wait_line(Self::READY_WITHIN, |line| line.contains("CA certificates and CRLs:"));
        let (mut public, mut login, mut http) = (0, 0, 0);
        for line in serve.printed() {
            if let Some((port, rest)) = port_after(line, "https://localhost:") {
                if rest.starts_with("/cert/acquire") {
                    public = port;
                } else if rest.trim() == "/" {
                    login = port;
                }
            }
            if let Some((port, rest)) = port_after(line, "http://127.0.0.1:")
                && rest.starts_with("/root.crt")
            {
                http = port;
            }
        }
        assert!(public != 0 && login != 0 && http != 0, "ports not printed: {:?}", serve.printed());
        Self {
            serve,
            public,
            login,
            http,
            root: ca.root_crt(),
            work: ca.work().to_owned(),
            calls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// SIGTERM; asserts exit status 0 within 15 s; returns the log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        self.serve.stop(std::time::Duration::from_secs(15))
    }

    /// A URL on the public listener.
    pub fn public_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.public)
    }

    /// A URL on the certificate-login listener.
    pub fn login_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.login)
    }

    /// A URL on the plain-HTTP listener.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// curl `url` with `args`, trusting the test CA's root.
    pub fn curl<S: AsRef<str>>(&self, url: &str, args: &[S]) -> Reply {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
        Reply {
            what: format!("curl {} {url}", args.join(" ")),
            status: out.stdout.trim().parse().unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
        }
    }

    /// POST `body` as `content_type` to `url`, with `extra` curl arguments.
    pub fn post<S: AsRef<str>>(&self, url: &str, content_type: &str, body: &[u8], extra: &[S]) -> Reply {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file = self.work.join(format!("request-{n}.body"));
        std::fs::write(&file, body).expect("writing the request body");
        let mut args = vec!["-H".to_owned(), format!("Content-Type: {content_type}"), "--data-binary".to_owned()];
        args.push(format!("@{}", s(&file)));
        args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
        self.curl(url, &args)
    }

    /// POST JSON to `url`, with `extra` curl arguments.
    pub fn post_json<S: AsRef<str>>(&self, url: &str, body: &Value, extra: &[S]) -> Reply {
        self.post(url, "application/json", body.to_string().as_bytes(), extra)
    }

    /// `POST /api/v1/enrollments` (取得前処理) with `login_id`'s password.
    pub fn enroll(&self, login_id: &str) -> Reply {
        let credentials = serde_json::json!({ "login_id": login_id, "password": user_password(login_id) });
        self.post_json::<&str>(&self.public_url("/api/v1/enrollments"), &credentials, &[])
    }

    /// The whole acquisition for `login_id` through the API, with a new P-256 key
    /// WORK/NAME.key made by openssl.
    #[track_caller]
    pub fn acquire(&self, login_id: &str, name: &str) -> Enrolled {
        let csr = p256_csr(&self.work, name);
        let reply = self.enroll(login_id);
        reply.expect(201);
        let ticket = reply.json()["ticket"].as_str().expect("ticket").to_owned();
        let url = self.public_url(&format!("/api/v1/enrollments/{ticket}/csr"));
        let csr_pem = std::fs::read_to_string(&csr).expect("reading the CSR");
        let reply = self.post_json::<&str>(&url, &serde_json::json!({ "csr_pem": csr_pem }), &[]);
        reply.expect(201);
        let issued = reply.json();
        let cert = self.work.join(format!("{name}.crt"));
        let chain = self.work.join(format!("{name}.chain.pem"));
        std::fs::write(&cert, issued["certificate_pem"].as_str().expect("certificate_pem")).expect("writing");
        std::fs::write(&chain, issued["chain_pem"].as_str().expect("chain_pem")).expect("writing");
        let serial = issued["serial"].as_str().expect("serial").to_owned();
        Enrolled { key: self.work.join(format!("{name}.key")), cert, chain, serial, issued }
    }

    /// `GET /metrics`, as text.
    #[track_caller]
    pub fn metrics(&self) -> String {
        let none: &[&str] = &[];
        let reply = self.curl(&self.http_url("/metrics"), none);
        reply.expect(200);
        reply.text()
    }
}
