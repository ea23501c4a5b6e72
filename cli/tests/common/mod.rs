//! Helpers shared by the end-to-end tests of the `inkan` binary: run inkan and openssl as
//! processes, make keys and CSRs with openssl, and a throwaway CA in a temporary directory.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The root key's passphrase in every test CA.
pub const ROOT_PASS: &str = "test root passphrase 1f7a";
/// The issuing CA key's passphrase in every test CA (different from the root's).
pub const CA_PASS: &str = "test issuing passphrase 92c4";
/// Every account password in these tests ends with this, so a log can be searched for all.
pub const PASSWORD_MARK: &str = "Pw-9f3Kq2";
/// A wrong password (also a secret: it is often a typo of the right one).
pub const WRONG: &str = "typo.Wrong-7c1Xv";
/// What no log may contain: both passphrases and every password, right or wrong.
pub const SECRETS: [&str; 4] = [CA_PASS, ROOT_PASS, PASSWORD_MARK, WRONG];
/// No curl arguments.
pub const NONE: &[&str] = &[];
/// How long a service or a signer may take to say it is ready.
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a service or a signer may take to stop after SIGTERM.
pub const STOP_WITHIN: Duration = Duration::from_secs(15);
/// How long any one command a test runs (inkan, openssl, curl, pkilint...) may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(240);

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
    // A command that hangs fails the test instead of the whole run: killed after COMMAND_LIMIT.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(COMMAND_LIMIT).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            return true;
        }
        false
    });
    let output = child.wait_with_output().expect("waiting for the process");
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    assert!(!timed_out, "{what} did not finish within {COMMAND_LIMIT:?} and was killed");
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

/// The text of the file at `path`.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Writes `contents` to the file at `path`.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// An RFC 3339 time from a JSON string.
pub fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time string"), &Rfc3339).expect("RFC 3339")
}

/// Sends `signal` (`TERM`, `KILL`, ...) to `pid` with kill(1).
pub fn kill(signal: &str, pid: u32) {
    run("kill", [format!("-{signal}"), pid.to_string()], &[], None).ok();
}

/// `inkan signer --data-dir DATA --socket SOCKET` with the CA passphrase in its environment;
/// returns once it has printed `signer ready on SOCKET`.
pub fn start_signer(data: &Path, socket: &Path) -> Daemon {
    let mut command = Command::new(inkan_bin());
    command
        .args(["signer", "--data-dir", s(data), "--socket", s(socket)])
        .env_remove("INKAN_DATA_DIR")
        .env_remove("INKAN_ROOT_PASSPHRASE")
        .env("INKAN_CA_PASSPHRASE", CA_PASS);
    let mut signer = Daemon::spawn(command);
    let ready = format!("signer ready on {}", socket.display());
    signer.wait_line(READY_WITHIN, |line| line == ready);
    signer
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
        inkan(self.with_data_dir(args), env)
    }

    /// Runs `inkan ARGS --data-dir DATA` with both passphrases and `input` on standard input.
    pub fn inkan_stdin<I, S>(&self, args: I, input: &[u8]) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(inkan_bin(), self.with_data_dir(args), &Self::env(), Some(input))
    }

    /// `ARGS --data-dir DATA`.
    fn with_data_dir<I, S>(&self, args: I) -> Vec<OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter()
            .map(|a| a.as_ref().to_os_string())
            .chain(["--data-dir".into(), self.data.clone().into_os_string()])
            .collect()
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
    stderr_reader: Option<std::thread::JoinHandle<()>>,
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
        let stderr_reader = std::thread::spawn(move || {
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
        Self { pid, what, lines, printed: Vec::new(), stderr, stderr_reader: Some(stderr_reader), exited, exit: None }
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

    /// All of standard error, once everything that holds it open (the process and any child
    /// that inherited it) has closed it: call this after the process ended.
    pub fn drain_stderr(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr()
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        kill(signal, self.pid);
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

/// The pkilint helpers of the cross-crate tests (`inkan-tests`): pkilint is found through
/// `$INKAN_PKILINT_BIN`, else the repository's `.venv/bin`.
#[allow(unused_imports)] // as with dead_code above: not every test binary lints
pub use inkan_tests::{assert_lint_clean, pkilint_bin};

// ---- accounts and configuration -------------------------------------------------------------

/// The password every test gives account `login_id`.
pub fn user_password(login_id: &str) -> String {
    format!("{login_id}.{PASSWORD_MARK}")
}

/// The text in `haystack` between `start` and the next `end`.
#[track_caller]
pub fn between(haystack: &str, start: &str, end: &str) -> String {
    let rest = haystack.split_once(start).unwrap_or_else(|| panic!("no {start:?} in\n{haystack}")).1;
    rest.split_once(end).unwrap_or_else(|| panic!("no {end:?} after {start:?}")).0.to_owned()
}

impl TestCa {
    /// `inkan init`, allowing `rate` login and enrollment requests per minute.
    pub fn with_rate_limit(rate: u32) -> Self {
        let ca = Self::init(&[]);
        ca.configure(&[("rate_limit_per_minute = 30", &format!("rate_limit_per_minute = {rate}"))]);
        ca
    }

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

    /// `inkan user add` with [`user_password`] (through the admin socket when a service runs);
    /// returns what it printed.
    #[track_caller]
    pub fn add_user(&self, login_id: &str, role: &str, master: Option<&str>) -> Out {
        let mut args = vec!["user", "add", "--login-id", login_id, "--role", role];
        if let Some(master) = master {
            args.extend(["--master", master]);
        }
        let password = user_password(login_id);
        self.inkan_env(args, &[("INKAN_USER_PASSWORD", Some(&password))]).ok()
    }

    /// Issues a client certificate for `account` valid `days` days with the CA library, through
    /// the signer's ledger into the registry DATA/db (no service may be running), from the CSR
    /// `csr`; writes it to WORK/NAME.crt and returns that path and its serial.
    pub fn issue_with_library(&self, csr: &Path, account: &str, days: u32, name: &str) -> (PathBuf, String) {
        self.issue_with_library_at(csr, account, days, name, OffsetDateTime::now_utc())
    }

    /// [`TestCa::issue_with_library`] with the CA's clock at `at` (in the past: a certificate
    /// that has already expired).
    pub fn issue_with_library_at(
        &self,
        csr: &Path,
        account: &str,
        days: u32,
        name: &str,
        at: OffsetDateTime,
    ) -> (PathBuf, String) {
        let dir = ca::layout::DataDir::new(&self.data);
        let (signer, der) =
            ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &ca::Passphrase::new(CA_PASS.into()))
                .expect("loading the CA key");
        // As the signer does: recorded in its ledger before and after signing, then in the
        // registry.
        let ledger = std::sync::Arc::new(ca::ledger::LogLedger::open(&dir.ledger()).expect("opening the ledger"));
        let settings = pki::ProfileSettings {
            organization: "inkan".into(),
            crl_url: Some("http://127.0.0.1:8080/crl/ca.crl".into()),
            ca_issuers_url: Some("http://127.0.0.1:8080/ca.crt".into()),
            ocsp_url: Some("http://127.0.0.1:8080/ocsp".into()),
            default_days: 365,
            max_days: 825,
            crl_shards: 1,
        };
        let authority = ca::CertificateAuthority::new(&der, signer, ledger, settings).expect("the CA library");
        let csr = std::fs::read(csr).expect("reading the CSR");
        let request = ca::IssueRequest {
            csr: &csr,
            account,
            profile: pki::Profile::Client,
            sans: &[],
            days: Some(days),
            request_id: None,
            supersede: false,
        };
        let issued = authority.issue_at(&request, at).expect("issuing with the library");
        drop(authority);
        let store = ca::SledStore::open(&dir.db()).expect("opening the registry");
        ca::Registry::record_certificate(&store, &issued.record, &issued.der, false).expect("recording it");
        drop(store);
        inkan_tests::wait_until_registry_unlocked(&dir.db());
        let path = self.work().join(format!("{name}.crt"));
        std::fs::write(&path, pki::encoding::pem_encode("CERTIFICATE", &issued.der)).expect("writing the certificate");
        (path, issued.record.serial.to_string())
    }
}

// ---- the enrollment service -----------------------------------------------------------------

/// One enrollment through the API with curl, usable from any thread: ticket, then the CSR body
/// in `csr_json`; the serial and certificate PEM, or an error when the service or the signer is
/// down (connection errors, 5xx).
pub fn enroll_with_curl(port: u16, root: &Path, account: &str, csr_json: &Path) -> Result<(String, String), String> {
    let curl = |path: &str, body: &str| -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "15", "--cacert", s(root), "-H", "content-type: application/json"])
            .args(["--data-binary", body, "-w", "\n%{http_code}"])
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        match code {
            "201" => Ok(body.to_owned()),
            _ => Err(format!("{path}: HTTP {code} {body} {}", String::from_utf8_lossy(&out.stderr))),
        }
    };
    let ticket: serde_json::Value = serde_json::from_str(&curl(
        "/api/v1/enrollments",
        &serde_json::json!({ "login_id": account, "password": user_password(account) }).to_string(),
    )?)
    .map_err(|e| e.to_string())?;
    let ticket = ticket["ticket"].as_str().ok_or("no ticket")?.to_owned();
    let issued: serde_json::Value =
        serde_json::from_str(&curl(&format!("/api/v1/enrollments/{ticket}/csr"), &format!("@{}", s(csr_json)))?)
            .map_err(|e| e.to_string())?;
    Ok((
        issued["serial"].as_str().ok_or("no serial")?.to_owned(),
        issued["certificate_pem"].as_str().unwrap_or("").to_owned(),
    ))
}

/// One answer, as curl saw it.
#[derive(Debug)]
pub struct Reply {
    /// The request, for failure messages (a request body file shown as `@BODY`).
    pub what: String,
    /// The HTTP status; 0 when there was none (the connection failed).
    pub status: u16,
    /// Whether curl exited 0.
    pub curl_ok: bool,
    /// What curl printed on standard error.
    pub curl_stderr: String,
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
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}: {body}", self.what);
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: no message: {body}", self.what);
        self
    }

    /// The message of an API error (empty if there is none).
    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the TLS handshake was refused: curl failed and got no HTTP answer at all.
    #[track_caller]
    pub fn expect_handshake_refused(&self) {
        assert!(
            !self.curl_ok && self.status == 0,
            "{}: the handshake should have been refused, got {} (curl: {})\n{}",
            self.what,
            self.status,
            self.curl_stderr.trim(),
            self.text()
        );
    }

    /// The values of header `name` in the last response.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let last = self.headers.rsplit("\r\n\r\n").find(|block| !block.trim().is_empty()).unwrap_or_default();
        last.lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }

    /// The (first) value of header `name` in the last response, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// The `inkan_session` value the reply sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.header_values("set-cookie").iter().find_map(|c| {
            let value = c.strip_prefix("inkan_session=")?;
            Some(value.split(';').next().unwrap_or_default().to_owned()).filter(|v| !v.is_empty())
        })
    }
}

/// The port after `prefix` in `line`, and the text after the port.
pub fn port_after<'a>(line: &'a str, prefix: &str) -> Option<(u16, &'a str)> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// Who talks to the certificate-login listener: curl arguments for a client certificate (or
/// none) and a cookie jar.
pub struct Client {
    /// The curl arguments.
    pub args: Vec<String>,
}

impl Client {
    /// The PEM certificate `cert` with its key `key`, and the cookie jar `jar`.
    pub fn pem(cert: &Path, key: &Path, jar: &Path) -> Self {
        Self { args: ["--cert", s(cert), "--key", s(key), "-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }

    /// The PKCS#12 file `p12` with its password `pass`, and the cookie jar `jar`.
    pub fn p12(p12: &Path, pass: &str, jar: &Path) -> Self {
        let cert = format!("{}:{pass}", s(p12));
        Self { args: ["--cert-type", "P12", "--cert", &cert, "-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }

    /// No certificate, only the cookie jar `jar`.
    pub fn anonymous(jar: &Path) -> Self {
        Self { args: ["-b", s(jar), "-c", s(jar)].map(String::from).to_vec() }
    }
}

/// What `openssl ocsp` says about `who` at `service` (the response verified first).
pub fn ocsp_status(ca: &TestCa, service: &Service, who: &Enrolled) -> String {
    let url = service.http_url("/ocsp");
    let out =
        openssl(["ocsp", "-issuer", s(&ca.ca_crt()), "-url", &url, "-CAfile", s(&who.chain), "-cert", s(&who.cert)])
            .ok();
    let text = out.text();
    assert!(text.contains("Response verify OK"), "{text}");
    let prefix = format!("{}: ", s(&who.cert));
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{text}")).trim().to_owned()
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
    /// A client presenting this certificate, with a cookie jar of its own.
    pub fn client(&self) -> Client {
        Client::pem(&self.cert, &self.key, &self.cert.with_extension("jar"))
    }

    /// curl arguments presenting this certificate, with a cookie jar of its own.
    pub fn client_args(&self) -> Vec<String> {
        self.client().args
    }
}

/// A running `inkan serve` on port 0 everywhere (no INKAN_* variable of the test's). Dropping
/// it kills the process; [`Service::stop`] stops it with SIGTERM and checks it exits 0.
///
/// A service started with [`Service::watched`] is held to more: each ticket it hands out is 64
/// hex digits and expires in the future, and [`Service::stop`] also checks that its log
/// (complete, its child signer's lines included) holds none of [`SECRETS`], tickets and
/// session IDs, and that it answered no request with a 5xx.
pub struct Service {
    /// The process.
    pub serve: Daemon,
    /// The public HTTPS port.
    pub public: u16,
    /// The certificate-login HTTPS port.
    pub login: u16,
    /// The plain-HTTP port.
    pub http: u16,
    /// The EST HTTPS port.
    pub est: u16,
    /// The child signer's pid, when `serve` started one.
    pub signer_pid: Option<u32>,
    /// The web worker's pid.
    pub worker_pid: Option<u32>,
    root: PathBuf,
    work: PathBuf,
    calls: AtomicU32,
    watched: bool,
    /// Text that must never appear in the log (checked when watched).
    secrets: Mutex<Vec<String>>,
    /// Every answer: (request, status).
    seen: Mutex<Vec<(String, u16)>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The value behind `mutex`, even if a panicking thread held it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Service {
    /// Every listener on 127.0.0.1, port 0.
    const PORT_ZERO: [&str; 8] = [
        "--listen",
        "127.0.0.1:0",
        "--login-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--est-listen",
        "127.0.0.1:0",
    ];

    /// `inkan serve` on `ca`'s data directory with its own signer (the CA passphrase in a file:
    /// serve refuses it in its environment) and `env`; returns once the addresses are printed.
    pub fn start(ca: &TestCa, env: &[(&str, &str)]) -> Self {
        let pass_file = ca.ca_pass_file();
        Self::start_with(&ca.data, ca, &["--ca-passphrase-file", s(&pass_file)], env)
    }

    /// `inkan serve` with the arguments [`Service::start`] gives it and the environment changes
    /// `env`, run to its end under `timeout 20`: for a start that must be refused.
    pub fn run_once(ca: &TestCa, env: &[(&str, Option<&str>)]) -> Out {
        let pass_file = ca.ca_pass_file();
        let serve = ["20", inkan_bin(), "serve", "--data-dir", s(&ca.data)];
        let args = serve.into_iter().chain(Self::PORT_ZERO).chain(["--ca-passphrase-file", s(&pass_file)]);
        run("timeout", args, env, None)
    }

    /// [`Service::start`], watched (see [`Service`]).
    pub fn watched(ca: &TestCa, env: &[(&str, &str)]) -> Self {
        let mut service = Self::start(ca, env);
        service.watched = true;
        service
    }

    /// `inkan serve --data-dir DATA EXTRA` with `env`; `ca` gives the root certificate curl
    /// trusts and the work directory. Returns once the addresses are printed, and the child
    /// signer's pid when `EXTRA` has no `--signer-socket`.
    pub fn start_with(data: &Path, ca: &TestCa, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(inkan_bin());
        command
            .args(["serve", "--data-dir", s(data)])
            .args(Self::PORT_ZERO)
            .args(extra)
            .env_remove("INKAN_DATA_DIR")
            .env_remove("INKAN_ROOT_PASSPHRASE")
            .env_remove("INKAN_CA_PASSPHRASE")
            .env_remove("INKAN_LOG")
            .envs(env.iter().copied());
        // A process group of its own: the supervisor, its signer and its web worker can be
        // killed at the same instant, as a crash of the machine would.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut serve = Daemon::spawn(command);
        serve.wait_line(READY_WITHIN, |line| line.contains("CA certificates and CRLs:"));
        let own_signer = !extra.contains(&"--signer-socket") && !extra.contains(&"--signer-address");
        if own_signer {
            serve.wait_line(READY_WITHIN, |line| line.contains("signer: process"));
        }
        serve.wait_line(READY_WITHIN, |line| line.contains("web worker: process"));
        let (mut public, mut login, mut http, mut est, mut signer_pid, mut worker_pid) = (0, 0, 0, 0, None, None);
        for line in serve.printed() {
            if let Some((port, rest)) = port_after(line, "https://localhost:") {
                if rest.starts_with("/cert/acquire") {
                    public = port;
                } else if rest.trim() == "/" {
                    login = port;
                } else if rest.starts_with("/.well-known/est/") {
                    est = port;
                }
            }
            if let Some((port, rest)) = port_after(line, "http://127.0.0.1:")
                && rest.starts_with("/root.crt")
            {
                http = port;
            }
            if let Some((_, rest)) = line.split_once("signer: process ") {
                signer_pid = rest.split_whitespace().next().and_then(|pid| pid.parse().ok());
            }
            if let Some((_, rest)) = line.split_once("web worker: process ") {
                worker_pid = rest.split_whitespace().next().and_then(|pid| pid.parse().ok());
            }
        }
        let printed = serve.printed();
        assert!(public != 0 && login != 0 && http != 0 && est != 0, "ports not printed: {printed:?}");
        assert_eq!(signer_pid.is_some(), own_signer, "signer line: {printed:?}");
        assert!(worker_pid.is_some(), "web worker line: {printed:?}");
        Self {
            serve,
            public,
            login,
            http,
            est,
            signer_pid,
            worker_pid,
            root: ca.root_crt(),
            work: ca.work().to_owned(),
            calls: AtomicU32::new(0),
            watched: false,
            secrets: Mutex::new(SECRETS.map(String::from).to_vec()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// SIGKILL to every process of the service at the same instant (its process group).
    pub fn kill_all(&mut self) {
        // The group outlives its leader while a member lives: send it whether or not `serve`
        // itself still runs.
        let group = format!("-{}", self.serve.pid);
        run("kill", ["-KILL", "--", &group], &[], None);
        let _ = self.serve.wait_exit(Duration::from_secs(10));
        // Until every member is gone (and its sockets with it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while run("kill", ["-0", "--", &group], &[], None).status.success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds text the log must never contain (checked when watched).
    pub fn secret(&self, text: &str) {
        lock(&self.secrets).push(text.to_owned());
    }

    /// SIGTERM; asserts exit status 0 within [`STOP_WITHIN`] (and, when watched, what
    /// [`Service`] says); returns the log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        let started = Instant::now();
        let log = self.serve.stop(STOP_WITHIN);
        if !self.watched {
            return log;
        }
        let stopped_in = started.elapsed();
        let log = self.serve.drain_stderr();
        eprintln!("inkan serve stopped {stopped_in:?} after SIGTERM");
        for secret in lock(&self.secrets).iter() {
            let leaks: Vec<String> = log
                .lines()
                .filter(|line| line.contains(secret.as_str()))
                .map(|line| line.replace(secret.as_str(), "[SECRET]"))
                .collect();
            assert!(leaks.is_empty(), "serve's log contains a secret:\n{}", leaks.join("\n"));
        }
        // 501 is an answer, not a failure: an operation not offered (EST's serverkeygen).
        let errors: Vec<_> =
            lock(&self.seen).iter().filter(|(_, status)| *status >= 500 && *status != 501).cloned().collect();
        assert!(errors.is_empty(), "server errors: {errors:?}\n{log}");
        log
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
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
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
        let reply = Reply {
            what: format!("curl {} {url}", shown.join(" ")),
            status: out.stdout.trim().parse().unwrap_or(0),
            curl_ok: out.status.success(),
            curl_stderr: out.stderr,
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
        };
        lock(&self.seen).push((reply.what.chars().take(300).collect(), reply.status));
        reply
    }

    /// POST `body` as `content_type` to `url`, with `extra` curl arguments.
    pub fn post<S: AsRef<str>>(&self, url: &str, content_type: &str, body: &[u8], extra: &[S]) -> Reply {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let file = self.work.join(format!("request-{n}.body"));
        write(&file, body);
        let mut args = vec!["-H".to_owned(), format!("Content-Type: {content_type}"), "--data-binary".to_owned()];
        args.push(format!("@{}", s(&file)));
        args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
        self.curl(url, &args)
    }

    /// POST JSON to `url`, with `extra` curl arguments.
    pub fn post_json<S: AsRef<str>>(&self, url: &str, body: &Value, extra: &[S]) -> Reply {
        self.post(url, "application/json", body.to_string().as_bytes(), extra)
    }

    /// `POST /api/v1/enrollments` (取得前処理).
    pub fn enroll(&self, login_id: &str, password: &str) -> Reply {
        self.post_json(
            &self.public_url("/api/v1/enrollments"),
            &json!({ "login_id": login_id, "password": password }),
            NONE,
        )
    }

    /// A fresh enrollment ticket for `login_id` (with [`user_password`]), an account that may
    /// have one.
    #[track_caller]
    pub fn ticket(&self, login_id: &str) -> String {
        let reply = self.enroll(login_id, &user_password(login_id));
        reply.expect(201);
        let body = reply.json();
        let ticket = body["ticket"].as_str().expect("ticket").to_owned();
        if self.watched {
            assert!(ticket.len() == 64 && ticket.bytes().all(|b| b.is_ascii_hexdigit()), "ticket {ticket:?}");
            // The service keeps tickets' times in whole seconds (its clock cut down): a ticket
            // lives from TTL - 1 s to TTL, and with the 1 s lifetime one test uses, a check
            // made just after a second begins can find expires_at already reached.
            let expires = parse_time(&body["expires_at"]);
            assert!(
                expires + time::Duration::SECOND > OffsetDateTime::now_utc(),
                "the ticket expires within its lifetime: {body}"
            );
        }
        self.secret(&ticket);
        ticket
    }

    /// `POST /api/v1/enrollments/{ticket}/csr` (発行).
    pub fn send_csr(&self, ticket: &str, csr_pem: &str) -> Reply {
        let url = self.public_url(&format!("/api/v1/enrollments/{ticket}/csr"));
        self.post_json(&url, &json!({ "csr_pem": csr_pem }), NONE)
    }

    /// Sends `csr_pem` on `ticket` from `n` curl processes at once; returns their statuses.
    pub fn race_csr(&self, ticket: &str, csr_pem: &str, n: usize) -> Vec<u16> {
        let url = self.public_url(&format!("/api/v1/enrollments/{ticket}/csr"));
        self.race_json(&url, &json!({ "csr_pem": csr_pem }), NONE, n)
    }

    /// POSTs `body` (JSON) to `url` from `n` curl processes at once, each with `extra`
    /// arguments; returns their statuses.
    pub fn race_json<S: AsRef<str>>(&self, url: &str, body: &Value, extra: &[S], n: usize) -> Vec<u16> {
        let file = self.work.join(format!("race-{}.json", self.calls.fetch_add(1, Ordering::SeqCst)));
        write(&file, body.to_string());
        let data = format!("@{}", s(&file));
        let racers: Vec<_> = (0..n)
            .map(|_| {
                Command::new("curl")
                    .args(["-sS", "--max-time", "30", "--cacert", s(&self.root), "-o", "/dev/null"])
                    .args(["-w", "%{http_code}", "-H", "Content-Type: application/json", "--data-binary", &data])
                    .args(extra.iter().map(AsRef::as_ref))
                    .arg(url)
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
        lock(&self.seen).extend(statuses.iter().map(|st| (format!("racing POST to {url}"), *st)));
        statuses
    }

    /// Saves the certificate and chain of the API's answer `issued` as WORK/NAME.crt and
    /// WORK/NAME.chain.pem (the key is WORK/NAME.key, from [`p256_csr`]).
    pub fn save(&self, name: &str, issued: &Value) -> Enrolled {
        let cert = self.work.join(format!("{name}.crt"));
        let chain = self.work.join(format!("{name}.chain.pem"));
        write(&cert, issued["certificate_pem"].as_str().expect("certificate_pem"));
        write(&chain, issued["chain_pem"].as_str().expect("chain_pem"));
        let serial = issued["serial"].as_str().expect("serial").to_owned();
        Enrolled { key: self.work.join(format!("{name}.key")), cert, chain, serial, issued: issued.clone() }
    }

    /// The whole acquisition for `login_id` through the API, with a new P-256 key
    /// WORK/NAME.key made by openssl.
    #[track_caller]
    pub fn acquire(&self, login_id: &str, name: &str) -> Enrolled {
        let csr = p256_csr(&self.work, name);
        let ticket = self.ticket(login_id);
        let reply = self.send_csr(&ticket, &read(&csr));
        reply.expect(201);
        self.save(name, &reply.json())
    }

    /// GET `path` on the certificate-login listener as `client`.
    pub fn login_get(&self, client: &Client, path: &str) -> Reply {
        self.curl(&self.login_url(path), &client.args)
    }

    /// POST JSON to `path` on the certificate-login listener as `client`.
    pub fn login_post(&self, client: &Client, path: &str, body: &Value) -> Reply {
        self.post_json(&self.login_url(path), body, &client.args)
    }

    /// POST without a body to `path` on the certificate-login listener as `client` (a body the
    /// handler does not read would race the server's early answer, see the bad-input test).
    pub fn login_post_empty(&self, client: &Client, path: &str) -> Reply {
        let mut args = vec!["-X".to_owned(), "POST".to_owned()];
        args.extend(client.args.iter().cloned());
        self.curl(&self.login_url(path), &args)
    }

    /// `POST /api/v1/login` as `client`; a session cookie it gets is a secret.
    pub fn login_api(&self, client: &Client, password: &str) -> Reply {
        let reply = self.login_post(client, "/api/v1/login", &json!({ "password": password }));
        if let Some(id) = reply.session_cookie() {
            self.secret(&id);
        }
        reply
    }

    /// `GET /api/v1/me` as `client`.
    pub fn me(&self, client: &Client) -> Reply {
        self.login_get(client, "/api/v1/me")
    }

    /// `GET /metrics`, as text.
    #[track_caller]
    pub fn metrics(&self) -> String {
        let reply = self.curl(&self.http_url("/metrics"), NONE);
        reply.expect(200);
        reply.text()
    }
}
