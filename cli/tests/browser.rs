//! The whole acquisition pipeline in headless Chromium (issue 3): `inkan serve` runs, a
//! master user is created with the CLI, tests/browser/acquire.mjs drives Debian's Chromium
//! through the pages and saves the PKCS#12 made in the browser; then openssl opens it and curl
//! logs in with it over the certificate-login port. Screenshots of each page are left in
//! target/screenshots/ for people to look at.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT_PASS: &str = "browser test root passphrase";
const CA_PASS: &str = "browser test issuing passphrase";
const USER_PASS: &str = "alice's login password";
const P12_PASS: &str = "p12 パスワード 2026";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn inkan_with(dir: &Path, args: &[&str]) -> Command {
    let mut c = inkan(dir);
    c.args(args);
    c
}

fn inkan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_DATA_DIR", dir)
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS)
        .env("INKAN_USER_PASSWORD", USER_PASS)
        .env_remove("INKAN_LOG");
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tool(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(name);
    c.args(args);
    c
}

/// `inkan serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    public: String,
    login: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

fn serve(dir: &Path, pass_file: &Path) -> Server {
    let mut child = inkan(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--ca-passphrase-file")
        .arg(pass_file)
        .env_remove("INKAN_CA_PASSPHRASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let url = |line: &str, marker: &str| {
        let start = line.find("https://")?;
        let url = line[start..].split_whitespace().next()?.trim_end_matches(marker).trim_end_matches('/');
        Some(url.to_owned())
    };
    let (mut public, mut login) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while public.is_none() || login.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("inkan serve did not report its URLs within 60 s");
        if line.contains("/cert/acquire") {
            public = url(&line, "/cert/acquire");
        } else if line.contains("certificate login") {
            login = url(&line, "/");
        }
    }
    Server { child, public: public.unwrap(), login: login.unwrap() }
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn acquisition_in_chromium_then_certificate_login_with_the_saved_pkcs12() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = workspace.join("tests/browser/acquire.mjs");
    assert!(
        workspace.join("tests/node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "needs Debian's chromium and playwright-core: run ./tests/run-all.sh, which installs them"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(inkan_with(&dir, &["init", "--org", "Browser Test Bank"]));
    ok(inkan_with(&dir, &["user", "add", "--login-id", "alice", "--role", "master"]));
    let pass_file = tmp.path().join("ca.pass");
    std::fs::write(&pass_file, format!("{CA_PASS}\n")).unwrap();
    let server = serve(&dir, &pass_file);

    // Chromium trusts the test root through an NSS database in its HOME, as a user would
    // after importing it: the test does not switch TLS checks off.
    let home = tmp.path().join("home");
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", s(&nssdb));
    ok(tool("certutil", &["-N", "-d", &db, "--empty-password"]));
    let root = dir.join("root/root.crt");
    ok(tool("certutil", &["-A", "-d", &db, "-n", "inkan test root", "-t", "C,,", "-i", s(&root)]));

    let out = screenshots_dir();
    let node = Command::new("node")
        .arg(&script)
        .env("HOME", &home)
        .env("NODE_EXTRA_CA_CERTS", &root)
        .env("PUBLIC_URL", &server.public)
        .env("LOGIN_URL", &server.login)
        .env("LOGIN_ID", "alice")
        .env("PASSWORD", USER_PASS)
        .env("P12_PASSWORD", P12_PASS)
        .env("OUT_DIR", &out)
        .output()
        .unwrap();
    assert!(node.status.success(), "browser run failed:\n{}", String::from_utf8_lossy(&node.stderr));
    let results: serde_json::Value = serde_json::from_slice(&node.stdout).unwrap();
    let text = |k: &str| results[k].as_str().unwrap_or_default().to_owned();

    assert_eq!(text("wrongPasswordMessage"), "ログインIDまたはログインパスワードが正しくありません。");
    assert_eq!(text("mismatchMessage"), "パスワードが一致しません。");
    assert_eq!(text("subject"), "O=Browser Test Bank, CN=alice");
    assert!(text("loginCertificate").contains(&text("serial")), "{results}");
    assert_eq!(text("homeLoginId"), "alice");
    assert!(text("homeCertificates").contains(&text("serial")), "{results}");
    assert_eq!(results["noCertificateStatus"], 401);
    assert_eq!(results["preprocessingShown"], true, "取得前処理中 is shown while the server checks");

    // The CSR the page sent is a valid PKCS#10 request.
    let csr = tmp.path().join("browser.csr");
    std::fs::write(&csr, text("csrPem")).unwrap();
    let verified = tool("openssl", &["req", "-in", s(&csr), "-noout", "-verify"]).output().unwrap();
    assert!(String::from_utf8_lossy(&verified.stderr).contains("verify OK"), "{verified:?}");

    // openssl opens the browser's PKCS#12: MAC and PBES2/AES-256-CBC with the password.
    let p12 = PathBuf::from(text("p12"));
    let pass = format!("pass:{P12_PASS}");
    let info = tool("openssl", &["pkcs12", "-in", s(&p12), "-passin", &pass, "-info", "-noout"]).output().unwrap();
    let info_text = String::from_utf8_lossy(&info.stderr).into_owned() + &String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{info_text}");
    assert!(info_text.contains("MAC: sha256"), "{info_text}");
    assert!(info_text.contains("AES-256-CBC"), "{info_text}");
    let wrong =
        tool("openssl", &["pkcs12", "-in", s(&p12), "-passin", "pass:wrong", "-info", "-noout"]).output().unwrap();
    assert!(!wrong.status.success(), "a wrong password must not open it");
    let extracted = tmp.path().join("extracted.pem");
    ok(tool("openssl", &["pkcs12", "-in", s(&p12), "-passin", &pass, "-nodes", "-out", s(&extracted)]));
    let key_pub = ok(tool("openssl", &["pkey", "-in", s(&extracted), "-pubout"]));
    let cert_pub = ok(tool("openssl", &["x509", "-in", s(&extracted), "-noout", "-pubkey"]));
    assert_eq!(key_pub, cert_pub, "the key in the PKCS#12 belongs to its certificate");
    let chain = ok(tool("openssl", &["pkcs12", "-in", s(&p12), "-passin", &pass, "-nokeys"]));
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 3, "leaf, issuing CA and root");
    // The certificate verifies with the CA, and the encrypted PEM key opens with the password.
    let verify = ok(tool(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            s(&root),
            "-untrusted",
            s(&dir.join("ca/ca.crt")),
            &text("certPem"),
        ],
    ));
    assert!(verify.trim_end().ends_with("OK"), "{verify}");
    ok(tool("openssl", &["pkey", "-in", &text("keyPem"), "-passin", &pass, "-noout"]));

    // curl logs in with the PKCS#12 over the certificate-login port, plus the password.
    let jar = tmp.path().join("jar");
    let cert_arg = format!("{}:{P12_PASS}", s(&p12));
    let curl = |path: &str, extra: &[&str]| {
        let mut c = tool(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                s(&root),
                "--cert-type",
                "P12",
                "--cert",
                &cert_arg,
                "-b",
                s(&jar),
                "-c",
                s(&jar),
            ],
        );
        c.args(extra).arg(format!("{}{path}", server.login));
        ok(c)
    };
    let login = curl(
        "/api/v1/login",
        &["-H", "content-type: application/json", "--data", &format!("{{\"password\":\"{USER_PASS}\"}}")],
    );
    assert!(login.contains("\"login_id\":\"alice\""), "{login}");
    let me: serde_json::Value = serde_json::from_str(&curl("/api/v1/me", &[])).unwrap();
    assert_eq!(me["certificates"][0]["serial"], text("serial"));
    assert_eq!(me["certificates"][0]["status"], "valid");

    for name in [
        "01-acquire.png",
        "02-acquire-en.png",
        "03-acquire-error.png",
        "04-preprocessing.png",
        "05-start.png",
        "06-issuing.png",
        "07-installed.png",
        "08-login.png",
        "09-home.png",
        "10-login-no-certificate.png",
    ] {
        let png = std::fs::read(out.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name} is not a screenshot");
    }
    drop(server);
}
