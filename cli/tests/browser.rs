//! The whole acquisition pipeline in headless Chromium (issue 3): `inkan serve` runs, a
//! master user is created with the CLI, tests/browser/acquire.mjs drives Debian's Chromium
//! through the pages and saves the PKCS#12 made in the browser, imports it into Chromium's NSS
//! database and logs in with it in a fresh Chromium, which presents the certificate in its own
//! TLS handshake (issue 10: not Playwright's Node-side client certificates); then openssl opens
//! the saved files and curl logs in with the PKCS#12 too. Screenshots of each page are left in
//! target/screenshots/ for people to look at.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Service, TestCa, openssl, read, run, s, user_password};

const P12_PASS: &str = "p12 パスワード 2026";

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
    let ca = TestCa::init(&["--org", "Browser Test Bank"]);
    ca.add_user("alice", "master", None);
    // A general user, so that the master's home shows its user list with the OTP status.
    ca.add_user("alice-01", "general", Some("alice"));
    let password = user_password("alice");
    let server = Service::watched(&ca, &[]);
    server.secret(P12_PASS);
    let tmp = ca.work();

    // Chromium trusts the test root through an NSS database in its HOME, as a user would
    // after importing it: the test does not switch TLS checks off.
    let home = tmp.join("home");
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", s(&nssdb));
    run("certutil", ["-N", "-d", &db, "--empty-password"], &[], None).ok();
    let root = ca.root_crt();
    run("certutil", ["-A", "-d", &db, "-n", "inkan test root", "-t", "C,,", "-i", s(&root)], &[], None).ok();

    let out = screenshots_dir();
    let node = Command::new("node")
        .arg(&script)
        // Node is not given the test root: only Chromium talks TLS to the service.
        .env("HOME", &home)
        .env_remove("NODE_EXTRA_CA_CERTS")
        .env("PUBLIC_URL", server.public_url(""))
        .env("LOGIN_URL", server.login_url(""))
        .env("LOGIN_ID", "alice")
        .env("PASSWORD", &password)
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
    assert_eq!(results["serverErrors"], serde_json::json!([]), "no 5xx answer to the browser");
    // One-time passwords in the same browser: token issued, confirmed, asked at the next login.
    assert_eq!(text("otpServiceId"), "INKAN");
    assert_eq!(text("otpUriStart"), "otpauth://totp/INKAN:alice");
    assert!(text("otpHomeState").contains("利用中"), "{results}");
    assert!(text("userOtpState").contains("未設定"), "the master sees its user's OTP state: {results}");
    assert_eq!(text("otpLoginTitle"), "ワンタイムパスワード認証");
    assert_eq!(text("otpLoggedIn"), "alice");
    // The certificate Chromium presented came from its NSS database, picked by the
    // auto-selection setting for the login origin.
    assert!(text("p12Import").contains("PKCS12 IMPORT SUCCESSFUL"), "{results}");
    assert!(text("nssCertificates").contains("u,u,u"), "the key is in NSS: {results}");
    assert_eq!(results["autoSelect"]["pattern"], server.login_url(""), "{results}");
    let issuer_cn =
        openssl(["x509", "-in", s(&ca.ca_crt()), "-noout", "-subject", "-nameopt", "multiline,utf8,-esc_msb"])
            .ok()
            .stdout
            .lines()
            .find_map(|line| {
                line.trim().strip_prefix("commonName").map(|v| v.trim_start_matches([' ', '=']).to_owned())
            })
            .unwrap();
    assert_eq!(results["autoSelect"]["filter"]["ISSUER"]["CN"], issuer_cn.as_str(), "{results}");

    // The CSR the page sent is a valid PKCS#10 request.
    let csr = tmp.join("browser.csr");
    std::fs::write(&csr, text("csrPem")).unwrap();
    let verified = openssl(["req", "-in", s(&csr), "-noout", "-verify"]);
    assert!(verified.stderr.contains("verify OK"), "{verified:?}");

    // openssl opens the browser's PKCS#12: MAC and PBES2/AES-256-CBC with the password.
    let p12 = PathBuf::from(text("p12"));
    let pass = format!("pass:{P12_PASS}");
    let info = openssl(["pkcs12", "-in", s(&p12), "-passin", &pass, "-info", "-noout"]);
    let info_text = info.text();
    assert!(info.status.success(), "{info_text}");
    assert!(info_text.contains("MAC: sha256"), "{info_text}");
    assert!(info_text.contains("AES-256-CBC"), "{info_text}");
    let wrong = openssl(["pkcs12", "-in", s(&p12), "-passin", "pass:wrong", "-info", "-noout"]);
    assert!(!wrong.status.success(), "a wrong password must not open it");
    let extracted = tmp.join("extracted.pem");
    openssl(["pkcs12", "-in", s(&p12), "-passin", &pass, "-nodes", "-out", s(&extracted)]).ok();
    let key_pub = openssl(["pkey", "-in", s(&extracted), "-pubout"]).ok().stdout;
    let cert_pub = openssl(["x509", "-in", s(&extracted), "-noout", "-pubkey"]).ok().stdout;
    assert_eq!(key_pub, cert_pub, "the key in the PKCS#12 belongs to its certificate");
    let chain = openssl(["pkcs12", "-in", s(&p12), "-passin", &pass, "-nokeys"]).ok().stdout;
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 3, "leaf, issuing CA and root");
    // The certificate verifies with the CA.
    let certificate = text("certPem");
    let verify =
        openssl(["verify", "-purpose", "sslclient", "-CAfile", s(&root), "-untrusted", s(&ca.ca_crt()), &certificate])
            .ok()
            .stdout;
    assert!(verify.trim_end().ends_with("OK"), "{verify}");
    // The key PEM is encrypted PKCS#8: the right password opens it (the certificate's key),
    // a wrong one does not (openssl would open an unencrypted key whatever the password).
    let key_pem = PathBuf::from(text("keyPem"));
    assert!(read(&key_pem).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"), "{}", read(&key_pem));
    let opened = openssl(["pkey", "-in", s(&key_pem), "-passin", &pass, "-pubout"]).ok().stdout;
    assert_eq!(opened, cert_pub, "the PEM key belongs to the certificate");
    openssl(["pkey", "-in", s(&key_pem), "-passin", "pass:wrong", "-noout"]).failed();

    // The operator revokes alice's token (a lost phone): the password is enough again. Then
    // curl logs in with the PKCS#12 over the certificate-login port, plus the password.
    ca.inkan(["otp", "revoke", "--login-id", "alice"]).ok();
    let client = Client::p12(&p12, P12_PASS, &tmp.join("jar"));
    let login = server.login_api(&client, &password).text();
    assert!(login.contains("\"login_id\":\"alice\""), "{login}");
    let me = server.me(&client).json();
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
        "11-otp-token.png",
        "12-otp-qr.png",
        "13-home-otp.png",
        "14-login-otp.png",
    ] {
        let png = std::fs::read(out.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name} is not a screenshot");
    }
    // SIGTERM: exit status 0, no secret in the log, no 5xx.
    let log = server.stop();
    // The certificate logins with this certificate: Chromium's first, Chromium's second (the
    // password, then the one-time password), then curl's.
    let logins: Vec<&str> = log.lines().filter(|line| line.contains("certificate login")).collect();
    assert_eq!(logins.len(), 4, "Chromium's and curl's certificate logins:\n{log}");
    assert_eq!(logins.iter().filter(|line| line.contains("certificate login with OTP")).count(), 1, "{logins:?}");
    assert!(logins.iter().all(|line| line.contains(&text("serial"))), "{logins:?}");
}
