//! CA keys in a PKCS#11 token: SoftHSM2 from Debian, a token made in the test's temporary
//! directory. `init` makes both keys there; issuance (by the service's signer process and by the
//! CLI), CRLs and the OCSP responder's certificate are signed by the token and checked by
//! openssl; pkcs11-tool (OpenSC) shows the keys sensitive and never extractable; a wrong PIN,
//! token, key or module is refused with a message that says which.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The token's security-officer PIN (the user PIN is the test CA passphrase, so the service
/// helpers that hand over CA_PASS hand over the PIN).
const SO_PIN: &str = "so-pin-5521";

/// A SoftHSM configuration with its own token directory under `work`, and one token `label`
/// whose user PIN is [`CA_PASS`]. Returns the configuration file (for SOFTHSM2_CONF).
fn softhsm(work: &Path, label: &str) -> PathBuf {
    let tokens = work.join("tokens");
    std::fs::create_dir_all(&tokens).expect("token directory");
    let conf = work.join("softhsm2.conf");
    write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", s(&tokens)));
    run(
        "softhsm2-util",
        ["--init-token", "--free", "--label", label, "--pin", CA_PASS, "--so-pin", SO_PIN],
        &[("SOFTHSM2_CONF", Some(s(&conf)))],
        None,
    )
    .ok();
    conf
}

/// A test CA whose keys `init` makes in a fresh SoftHSM token; `env` is what every later
/// command needs (both passphrase variables hold the PIN, and SOFTHSM2_CONF).
struct TokenCa {
    ca: TestCa,
    conf: PathBuf,
}

impl TokenCa {
    fn init(key_type: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let conf = softhsm(tmp.path(), "inkan-test");
        let ca = TestCa { tmp, data };
        let made = ca.inkan_env(
            ["init", "--pkcs11-module", MODULE, "--token-label", "inkan-test", "--key-type", key_type],
            &[("INKAN_CA_PASSPHRASE", Some(CA_PASS)), ("SOFTHSM2_CONF", Some(s(&conf)))],
        );
        let made = made.ok();
        assert!(made.text().contains("in token \"inkan-test\""), "{}", made.text());
        Self { ca, conf }
    }

    fn env(&self) -> [(&str, Option<&str>); 3] {
        [
            ("INKAN_CA_PASSPHRASE", Some(CA_PASS)),
            ("INKAN_ROOT_PASSPHRASE", Some(CA_PASS)),
            ("SOFTHSM2_CONF", Some(s(&self.conf))),
        ]
    }

    fn inkan(&self, args: &[&str]) -> Out {
        self.ca.inkan_env(args, &self.env())
    }

    /// `pkcs11-tool --list-objects` of one type, logged in.
    fn objects(&self, kind: &str) -> String {
        let listed = run(
            "pkcs11-tool",
            [
                "--module",
                MODULE,
                "--token-label",
                "inkan-test",
                "--login",
                "--pin",
                CA_PASS,
                "--list-objects",
                "--type",
                kind,
            ],
            &[("SOFTHSM2_CONF", Some(s(&self.conf)))],
            None,
        );
        listed.ok().stdout
    }

    /// The key label a key file names.
    fn key_label(&self, key_file: &str) -> String {
        let text = read(&self.ca.file(key_file));
        assert!(!text.contains("PRIVATE KEY"), "{key_file} holds no key: {text}");
        between(&text, "key-label = \"", "\"")
    }
}

/// The private key objects pkcs11-tool lists, as (label, the rest of its lines).
fn private_keys(listing: &str) -> Vec<(String, String)> {
    listing
        .split("Private Key Object")
        .skip(1)
        .map(|block| (between(block, "label:", "\n").trim().to_owned(), block.to_owned()))
        .collect()
}

#[test]
fn ca_keys_made_in_softhsm_sign_what_the_service_issues_and_openssl_verifies_it() {
    let token = TokenCa::init("ecdsa-p384");
    let ca = &token.ca;
    let work = ca.work();
    openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), s(&ca.ca_crt())]).ok();

    // The keys are in the token: sensitive, never extractable, for signing only.
    let (root_label, ca_label) = (token.key_label("root/root.key"), token.key_label("ca/ca.key"));
    assert_ne!(root_label, ca_label);
    let keys = private_keys(&token.objects("privkey"));
    let mut labels: Vec<&str> = keys.iter().map(|(label, _)| label.as_str()).collect();
    labels.sort_unstable();
    let mut expected = [ca_label.as_str(), root_label.as_str()];
    expected.sort_unstable();
    assert_eq!(labels, expected, "{keys:?}");
    for (label, block) in &keys {
        let access = between(block, "Access:", "\n");
        for wanted in ["sensitive", "always sensitive", "never extractable"] {
            assert!(access.contains(wanted), "{label}: {access}");
        }
        assert_eq!(between(block, "Usage:", "\n").trim(), "sign", "{label}");
    }
    // The service's signer process signs with the token: a certificate, the CRL after a
    // revocation, and the OCSP responder's certificate under which answers are signed.
    let conf = s(&token.conf).to_owned();
    let service = Service::start(ca, &[("SOFTHSM2_CONF", conf.as_str())]);
    let key = genpkey(work, "alice", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(work, "alice", &key, &[]);
    let cert = work.join("alice.crt");
    ca.inkan(["issue", "--csr", s(&csr), "--account", "alice", "--out", s(&cert)]).ok();
    ca.openssl_verify(&cert, &[]).ok();
    let signature = openssl(["x509", "-in", s(&cert), "-noout", "-text"]).ok().stdout;
    assert!(signature.contains("ecdsa-with-SHA384"), "signed by the P-384 key in the token:\n{signature}");
    let serial = openssl_serial(&cert);
    ca.inkan(["revoke", &serial, "--reason", "keyCompromise"]).ok();

    let crl = work.join("ca.crl");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = service.curl(&service.http_url("/crl/ca.crl"), NONE);
        write(&crl, &reply.body);
        let text = openssl(["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]);
        if reply.status == 200 && text.stdout.contains(&serial) {
            break;
        }
        assert!(Instant::now() < deadline, "the CRL never listed {serial}: {}", text.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let crl_pem = work.join("ca-crl.pem");
    openssl(["crl", "-inform", "DER", "-in", s(&crl), "-out", s(&crl_pem)]).ok();
    let refused = ca.openssl_verify(&cert, &["-crl_check", "-CRLfile", s(&crl_pem)]);
    assert!(refused.text().contains("certificate revoked"), "{}", refused.text());

    let chain = work.join("chain.pem");
    write(&chain, format!("{}{}", read(&ca.ca_crt()), read(&ca.root_crt())));
    let ocsp = openssl([
        "ocsp",
        "-url",
        &service.http_url("/ocsp"),
        "-issuer",
        s(&ca.ca_crt()),
        "-cert",
        s(&cert),
        "-CAfile",
        s(&chain),
    ])
    .ok();
    assert!(ocsp.text().contains("Response verify OK"), "{}", ocsp.text());
    assert!(ocsp.stdout.contains(": revoked"), "{}", ocsp.stdout);

    // A signer killed is started again by serve, and opens the token again.
    kill("KILL", service.signer_pid.expect("serve's signer"));
    let fresh = genpkey(work, "fresh", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(work, "fresh", &fresh, &[]);
    let again = work.join("again.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tried = ca.inkan(["issue", "--csr", s(&csr), "--account", "alice", "--out", s(&again)]);
        if tried.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "no issuance 30 s after the signer was killed: {}", tried.text());
        std::thread::sleep(Duration::from_millis(250));
    }
    ca.openssl_verify(&again, &[]).ok();
    service.stop();

    // The root ceremony signs its CRL with the root key in the token (the PIN where the root
    // passphrase would be).
    let root_crl = work.join("root.crl");
    token.inkan(&["root", "sign-crl", "--out", s(&root_crl)]).ok();
    let verified = openssl(["crl", "-inform", "DER", "-in", s(&root_crl), "-CAfile", s(&ca.root_crt()), "-noout"]);
    assert!(verified.text().contains("verify OK"), "{}", verified.text());

    // A backup keeps the files that name the token keys (no key leaves the token); restored
    // elsewhere, the directory signs with the same token.
    let archive = work.join("token.tar");
    token.inkan(&["backup", "--out", s(&archive), "--include-keys"]).ok();
    let text = String::from_utf8_lossy(&std::fs::read(&archive).expect("archive")).into_owned();
    assert!(!text.contains("ENCRYPTED PRIVATE KEY") && text.contains("key-label"), "no CA key file, only references");
    let elsewhere = work.join("elsewhere");
    run(inkan_bin(), ["restore", "--from", s(&archive), "--data-dir", s(&elsewhere)], &token.env(), None).ok();
    assert_eq!(read(&elsewhere.join("ca/ca.key")), read(&ca.file("ca/ca.key")));
    let moved = work.join("moved.crt");
    let args = ["issue", "--csr", s(&csr), "--account", "alice", "--out", s(&moved), "--data-dir", s(&elsewhere)];
    run(inkan_bin(), args, &token.env(), None).ok();
    ca.openssl_verify(&moved, &[]).ok();
}

#[test]
fn rsa_and_p256_keys_in_a_token_issue_locally_and_sign_crls() {
    for (key_type, algorithm) in [("rsa-3072", "sha256WithRSAEncryption"), ("ecdsa-p256", "ecdsa-with-SHA256")] {
        let token = TokenCa::init(key_type);
        let ca = &token.ca;
        let work = ca.work();
        let key = genpkey(work, "bob", &["-algorithm", "ED25519"]);
        let csr = req(work, "bob", &key, &[]);
        let cert = work.join("bob.crt");
        token.inkan(&["issue", "--csr", s(&csr), "--account", "bob", "--out", s(&cert)]).ok();
        ca.openssl_verify(&cert, &[]).ok();
        let text = openssl(["x509", "-in", s(&cert), "-noout", "-text"]).ok().stdout;
        assert!(text.contains(algorithm), "{key_type}: {text}");
        let crl = work.join("ca.crl");
        token.inkan(&["crl", "--out", s(&crl)]).ok();
        let crl_pem = work.join("ca-crl.pem");
        openssl(["crl", "-inform", "DER", "-in", s(&crl), "-out", s(&crl_pem)]).ok();
        ca.openssl_verify(&cert, &["-crl_check", "-CRLfile", s(&crl_pem)]).ok();
        if key_type != "ecdsa-p256" {
            continue;
        }
        // A rollover makes the next issuing key in the same token, and it signs from then on.
        token.inkan(&["ca", "rollover"]).ok();
        let label = token.key_label("ca/gen-2/ca.key");
        let keys = private_keys(&token.objects("privkey"));
        let (_, block) = keys.iter().find(|(l, _)| *l == label).expect("the new key is in the token");
        assert!(between(block, "Access:", "\n").contains("never extractable"), "{block}");
        let next = work.join("next.crt");
        let key = genpkey(work, "next", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let csr = req(work, "next", &key, &[]);
        token.inkan(&["issue", "--csr", s(&csr), "--account", "bob", "--out", s(&next)]).ok();
        let gen2 = ca.file("ca/gen-2/ca.crt");
        openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), "-untrusted", s(&gen2), s(&next)]).ok();
        let issuer = openssl(["x509", "-in", s(&next), "-noout", "-issuer"]).ok().stdout;
        assert!(issuer.contains("Issuing CA 2"), "{issuer}");
    }
}

#[test]
fn a_wrong_pin_token_key_or_module_is_refused_and_says_which() {
    let token = TokenCa::init("ecdsa-p256");
    let ca = &token.ca;
    let conf = s(&token.conf).to_owned();
    let with = |pin: &'static str| {
        [
            ("INKAN_CA_PASSPHRASE", Some(pin)),
            ("INKAN_ROOT_PASSPHRASE", Some(pin)),
            ("SOFTHSM2_CONF", Some(conf.as_str())),
        ]
    };
    let key = genpkey(ca.work(), "carol", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(ca.work(), "carol", &key, &[]);
    let issue = ["issue", "--csr", s(&csr), "--account", "carol"];
    let before = ca.inkan_env(["list", "--json"], &with(CA_PASS)).ok().stdout;

    ca.inkan_env(issue, &with("not-the-pin")).refused("wrong PIN for token \"inkan-test\"");
    ca.inkan_env(["root", "sign-crl"], &with("not-the-pin")).refused("wrong PIN for token");

    let key_file = ca.file("ca/ca.key");
    let original = read(&key_file);
    let label = token.key_label("ca/ca.key");
    write(&key_file, original.replace("token-label = \"inkan-test\"", "token-label = \"nope\""));
    ca.inkan_env(issue, &with(CA_PASS)).refused("no token labelled \"nope\"");
    let listed = ca.inkan_env(issue, &with(CA_PASS)).text();
    assert!(listed.contains("tokens found: \"inkan-test\""), "{listed}");
    write(&key_file, original.replace(&label, "inkan-ca-gone"));
    ca.inkan_env(issue, &with(CA_PASS)).refused("key \"inkan-ca-gone\" in token \"inkan-test\"");
    write(&key_file, original.replace(MODULE, "/nonexistent/libpkcs11.so"));
    ca.inkan_env(issue, &with(CA_PASS)).refused("PKCS#11 module /nonexistent/libpkcs11.so");
    write(&key_file, &original);
    assert_eq!(ca.inkan_env(["list", "--json"], &with(CA_PASS)).ok().stdout, before, "nothing was issued");

    // The service refuses to start with a wrong PIN, before anything listens.
    let wrong = ca.work().join("wrong.pin");
    write(&wrong, "not-the-pin\n");
    let serve = run(
        "timeout",
        ["20", inkan_bin(), "serve", "--data-dir", s(&ca.data), "--ca-passphrase-file", s(&wrong)],
        &[("SOFTHSM2_CONF", Some(conf.as_str()))],
        None,
    );
    assert!(!serve.status.success() && serve.text().contains("wrong PIN for token \"inkan-test\""), "{}", serve.text());

    // init: no ed25519 in a token; a wrong PIN or label leaves no CA behind.
    let fresh = ca.work().join("fresh");
    let init = |extra: &[&str], pin: &'static str| {
        let mut args = vec!["init", "--data-dir", s(&fresh), "--pkcs11-module", MODULE, "--token-label"];
        args.extend_from_slice(extra);
        run(inkan_bin(), args, &with(pin), None)
    };
    init(&["inkan-test", "--key-type", "ed25519"], CA_PASS).refused("not made in a token");
    init(&["inkan-test"], "not-the-pin").refused("wrong PIN");
    init(&["other"], CA_PASS).refused("no token labelled \"other\"");
    assert!(!fresh.join("ca/ca.key").exists() && !fresh.join("root/root.key").exists(), "no CA was left behind");
    let token_only = run(inkan_bin(), ["init", "--data-dir", s(&fresh), "--token-label", "x"], &[], None);
    assert_eq!(token_only.status.code(), Some(2), "--token-label needs --pkcs11-module: {}", token_only.text());
}
