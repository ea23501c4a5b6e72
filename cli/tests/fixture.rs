//! `inkan fixture`: every client state judged by relying parties inkan did not write:
//! `openssl verify` with the set's CRLs, `openssl s_server -Verify` with curl as the client,
//! `openssl ocsp` for the OCSP answers and `openssl pkcs12` for the PKCS#12 files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Service, TestCa, inkan, openssl, read, s, write};
use serde_json::Value;

/// What OpenSSL reports about a refused certificate: its verify error number, and the alert curl
/// sees when `s_server` refuses the handshake.
type Refusal = Option<(u32, &'static str)>;

/// Every state: a client name, the state on the command line, and OpenSSL's refusal (None:
/// accepted).
const STATES: [(&str, &str, Refusal); 6] = [
    ("alice", "valid", None),
    ("mallory", "revoked", Some((23, "certificate revoked"))),
    ("old", "expired", Some((10, "certificate expired"))),
    ("early", "not-yet-valid", Some((9, "bad certificate"))),
    ("web.example", "wrong-eku", Some((26, "unsupported certificate"))),
    ("stranger", "foreign-ca", Some((20, "unknown ca"))),
];

fn make_set(dir: &Path) -> Value {
    let mut args = vec!["fixture".to_owned(), "--ephemeral".into(), "--out".into(), s(dir).into()];
    for (name, state, _) in STATES {
        args.extend(["--client".into(), format!("{name}:{state}")]);
    }
    args.extend(["--server".into(), "localhost,127.0.0.1".into()]);
    let out = inkan(&args, &[]).ok();
    eprintln!("{}", out.stdout);
    assert!(out.stdout.contains("wrote 7 certificates"), "{}", out.stdout);
    serde_json::from_str(&read(&dir.join("manifest.json"))).expect("manifest.json is JSON")
}

/// `openssl verify -crl_check_all -purpose sslclient` of a manifest entry's certificate against
/// the set's root, issuing CA and CRLs.
fn verify_client(dir: &Path, e: &Value) -> common::Out {
    openssl([
        "verify",
        "-CAfile",
        s(&dir.join("root.pem")),
        "-untrusted",
        s(&dir.join("ca.pem")),
        "-CRLfile",
        s(&dir.join("crls.pem")),
        "-crl_check_all",
        "-purpose",
        "sslclient",
        s(&dir.join(e["certificate"].as_str().expect("certificate"))),
    ])
}

fn entry<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the manifest: {manifest}"))
}

#[test]
fn every_state_is_told_apart_by_openssl_verify_and_the_manifest_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("set");
    let manifest = make_set(&dir);
    for (name, state, verdict) in STATES {
        let e = entry(&manifest, name);
        assert_eq!(e["state"], state, "{e}");
        assert_eq!(e["role"], "client");
        let out = verify_client(&dir, e);
        let said = format!("{}{}", out.stdout, out.stderr);
        match verdict {
            None => {
                assert!(out.status.success(), "{name} ({state}) should verify:\n{said}");
                assert_eq!(e["openssl_verify"]["code"], 0);
            }
            Some((code, _)) => {
                assert!(!out.status.success(), "{name} ({state}) verified:\n{said}");
                assert!(said.contains(&format!("error {code} at 0 depth")), "{name} ({state}): {said}");
                assert_eq!(e["openssl_verify"]["code"], code, "{e}");
            }
        }
    }
    // The server certificate: serverAuth for both names, trusted through the chain.
    let server = entry(&manifest, "localhost");
    assert_eq!(server["role"], "server");
    let crt = dir.join(server["certificate"].as_str().expect("certificate"));
    let out = openssl([
        "verify",
        "-CAfile",
        s(&dir.join("root.pem")),
        "-untrusted",
        s(&dir.join("ca.pem")),
        "-purpose",
        "sslserver",
        "-verify_ip",
        "127.0.0.1",
        s(&crt),
    ]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    // Keys are private to their owner; every file the manifest names exists.
    for e in manifest["certificates"].as_array().expect("certificates") {
        for field in ["key", "certificate", "fullchain", "p12", "ocsp_response"] {
            let path = dir.join(e[field].as_str().expect(field));
            assert!(path.is_file(), "{field} of {}: {}", e["name"], path.display());
        }
        for field in ["key", "p12"] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.join(e[field].as_str().expect(field))).expect("metadata").permissions(),
            );
            assert_eq!(mode & 0o077, 0, "{field} of {} is {mode:o}", e["name"]);
        }
    }
}

#[test]
fn openssl_s_server_accepts_the_valid_client_and_refuses_every_other_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("set");
    let manifest = make_set(&dir);
    // The relying party trusts the root and holds both CRLs (OpenSSL reads CRLs from -CAfile).
    let trust = tmp.path().join("trust.pem");
    write(&trust, read(&dir.join("root.pem")) + &read(&dir.join("crls.pem")));
    let server = entry(&manifest, "localhost");
    let mut command = Command::new("openssl");
    command.args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-cert",
        s(&dir.join(server["certificate"].as_str().expect("certificate"))),
        "-key",
        s(&dir.join(server["key"].as_str().expect("key"))),
        "-cert_chain",
        s(&dir.join("ca.pem")),
        "-Verify",
        "2",
        "-CAfile",
        s(&trust),
        "-crl_check_all",
        "-verify_return_error",
        "-www",
    ]);
    let mut daemon = Daemon::spawn(command);
    let line = daemon.wait_line(Duration::from_secs(10), |l| l.starts_with("ACCEPT 127.0.0.1:"));
    let port: u16 = line.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    for (name, state, verdict) in STATES {
        let e = entry(&manifest, name);
        let before = daemon.stderr().len();
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"])
            .arg(dir.join("root.pem"))
            .arg("--cert")
            .arg(dir.join(e["fullchain"].as_str().expect("fullchain")))
            .arg("--key")
            .arg(dir.join(e["key"].as_str().expect("key")))
            .arg(format!("https://127.0.0.1:{port}/"))
            .output()
            .expect("curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        let curl_err = String::from_utf8_lossy(&out.stderr).into_owned();
        match verdict {
            None => assert_eq!(code, "200", "{name} ({state}) was not accepted: {curl_err}\n{}", daemon.stderr()),
            Some((number, alert)) => {
                assert_ne!(code, "200", "{name} ({state}) was accepted");
                assert!(curl_err.contains(alert), "{name} ({state}): curl said {curl_err}");
                // s_server says why, with OpenSSL's number for the state.
                let wanted = format!("verify error:num={number}:");
                let deadline = Instant::now() + Duration::from_secs(5);
                while !daemon.stderr()[before..].contains(&wanted) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let said = daemon.stderr()[before..].to_owned();
                assert!(said.contains(&wanted), "{name} ({state}): s_server said {said}");
            }
        }
    }
    daemon.signal("KILL");
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some(), "s_server did not stop");
}

#[test]
fn ocsp_answers_and_pkcs12_files_read_by_openssl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("set");
    let password = tmp.path().join("p12-password");
    write(&password, "fixture pass word\n");
    let out = inkan(
        [
            "fixture",
            "--ephemeral",
            "--out",
            s(&dir),
            "--client",
            "alice",
            "--client",
            "mallory:revoked",
            "--p12-password-file",
            s(&password),
        ],
        &[],
    )
    .ok();
    assert!(out.stdout.contains("wrote 2 certificates"), "{}", out.stdout);
    let manifest: Value = serde_json::from_str(&read(&dir.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["p12_password"], Value::Null, "a password from a file is not written down");
    assert!(manifest["foreign"].is_null());
    for (name, status) in [("alice", "good"), ("mallory", "revoked")] {
        let e = entry(&manifest, name);
        let out = openssl([
            "ocsp",
            "-respin",
            s(&dir.join(e["ocsp_response"].as_str().expect("ocsp"))),
            "-CAfile",
            s(&dir.join("root.pem")),
            "-issuer",
            s(&dir.join("ca.pem")),
            "-cert",
            s(&dir.join(e["certificate"].as_str().expect("certificate"))),
        ]);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains("Response verify OK"), "{name}: {said}");
        assert!(said.contains(&format!(": {status}")), "{name} should be {status}: {said}");
        // The PKCS#12 file: OpenSSL checks its MAC, decrypts the key, and the key is the
        // certificate's.
        let p12 = dir.join(e["p12"].as_str().expect("p12"));
        let pass = format!("file:{}", s(&password));
        let keys = openssl(["pkcs12", "-in", s(&p12), "-passin", &pass, "-nocerts", "-nodes"]).ok();
        let key_file = tmp.path().join(format!("{name}.from-p12.key"));
        write(&key_file, &keys.stdout);
        let from_p12 = openssl(["pkey", "-in", s(&key_file), "-pubout"]).ok().stdout;
        let crt = dir.join(e["certificate"].as_str().expect("certificate"));
        let in_cert = openssl(["x509", "-in", s(&crt), "-noout", "-pubkey"]).ok().stdout;
        assert_eq!(from_p12, in_cert, "{name}: the PKCS#12 key is not the certificate's");
        let certs = openssl(["pkcs12", "-in", s(&p12), "-passin", &pass, "-nokeys"]).ok().stdout;
        assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 3, "leaf, issuing CA, root: {certs}");
        let wrong = openssl(["pkcs12", "-in", s(&p12), "-passin", "pass:inkan", "-nokeys"]);
        assert!(!wrong.status.success(), "{name}: the PKCS#12 file opened with the wrong password");
        assert!(wrong.stderr.contains("Mac verify error"), "{}", wrong.stderr);
    }
}

#[test]
fn bad_orders_are_refused_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("set");
    let cases: [(&[&str], &str); 8] = [
        (&["--client", "alice:stolen"], "unknown state \"stolen\"; the states are valid, revoked"),
        (&["--client", "../escape"], "is not accepted as a name"),
        (&["--client", ".hidden"], "is not accepted as a name"),
        (&["--client", "alice", "--client", "alice:revoked"], "--client alice is given twice"),
        (&["--client", "not a dns name:wrong-eku"], "is not accepted as a name"),
        (&["--server", "bad_name!"], "--server bad_name!"),
        (&["--client", "alice", "--days", "0"], "--days 0: give 1 to"),
        (&[], "nothing to make"),
    ];
    for (extra, wanted) in cases {
        let mut args = vec!["fixture", "--ephemeral", "--out", s(&dir)];
        args.extend_from_slice(extra);
        let out = inkan(&args, &[]);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(out.stderr.contains(wanted), "{extra:?}: {}", out.stderr);
        assert!(!dir.exists(), "{extra:?} left {}", dir.display());
    }
    // A directory that holds something is not written into.
    std::fs::create_dir(&dir).expect("mkdir");
    write(&dir.join("keep"), "mine");
    let out = inkan(["fixture", "--ephemeral", "--out", s(&dir), "--client", "alice"], &[]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, vec!["keep"]);
    // Nothing else appeared beside it (no staging directory left behind).
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(beside, vec!["set"]);
    // An empty directory is fine.
    std::fs::remove_file(dir.join("keep")).expect("rm");
    inkan(["fixture", "--ephemeral", "--out", s(&dir), "--client", "alice"], &[]).ok();
    assert!(dir.join("manifest.json").is_file());
}

/// `inkan fixture` without --ephemeral, while the service runs: the data directory's CA issues
/// through the admin socket, every certificate is in the registry, the revoked one is on the
/// published CRL and the service's OCSP responder says so.
#[test]
fn a_set_from_the_data_directory_is_recorded_revoked_and_answered_by_the_service() {
    let ca = TestCa::init(&[]);
    let before = ca.list_text();
    let out_dir = ca.work().join("set");
    ca.inkan(["fixture", "--out", s(&out_dir), "--client", "alice", "--client", "old:expired"])
        .refused("--client old:expired needs --ephemeral");
    assert_eq!(ca.list_text(), before, "a refused order recorded something");
    assert!(!out_dir.exists());

    let service = Service::start(&ca, &[]);
    let out = ca
        .inkan([
            "fixture",
            "--out",
            s(&out_dir),
            "--client",
            "alice",
            "--client",
            "mallory:revoked",
            "--client",
            "stranger:foreign-ca",
            "--server",
            "localhost",
        ])
        .ok();
    assert!(out.stdout.contains("wrote 4 certificates"), "{}", out.stdout);
    let manifest: Value = serde_json::from_str(&read(&out_dir.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["ephemeral"], false);

    // The registry holds the data directory's three, the revoked one as revoked; the foreign
    // one is not the CA's.
    let listed = ca.list(&[]);
    let state_of = |name: &str| {
        let serial = entry(&manifest, name)["serial"].as_str().expect("serial").to_owned();
        listed
            .iter()
            .find(|c| c["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&serial)))
            .map(|c| c["status"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(state_of("alice").as_deref(), Some("valid"), "{listed:?}");
    assert_eq!(state_of("mallory").as_deref(), Some("revoked"), "{listed:?}");
    assert_eq!(state_of("localhost").as_deref(), Some("valid"), "{listed:?}");
    assert_eq!(state_of("stranger"), None, "{listed:?}");

    // openssl judges the files against the data directory's root and the published CRLs.
    for (name, code) in [("alice", 0), ("mallory", 23), ("stranger", 20)] {
        let e = entry(&manifest, name);
        let out = verify_client(&out_dir, e);
        let said = format!("{}{}", out.stdout, out.stderr);
        match code {
            0 => assert!(out.status.success(), "{name}: {said}"),
            _ => assert!(said.contains(&format!("error {code} at 0 depth")), "{name}: {said}"),
        }
        assert_eq!(e["openssl_verify"]["code"], code);
    }
    assert_eq!(read(&out_dir.join("root.pem")), read(&ca.root_crt()));

    // The service's responder: revoked for mallory, good for alice.
    for (name, status) in [("alice", "good"), ("mallory", "revoked")] {
        let crt = out_dir.join(entry(&manifest, name)["certificate"].as_str().expect("certificate"));
        let url = service.http_url("/ocsp");
        let out =
            openssl(["ocsp", "-issuer", s(&ca.ca_crt()), "-url", &url, "-CAfile", s(&ca.root_crt()), "-cert", s(&crt)]);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains("Response verify OK"), "{name}: {said}");
        assert!(said.contains(&format!(": {status}")), "{name} should be {status}: {said}");
    }
    service.stop();
}
