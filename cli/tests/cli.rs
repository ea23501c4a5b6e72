//! End-to-end tests of the `inkan` binary: each test starts the real binary in its own
//! temporary data directory and judges what it wrote with openssl.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{
    CA_PASS, Out, ROOT_PASS, TestCa, inkan, inkan_bin, openssl, openssl_env, openssl_serial, p256_csr, run, s, serials,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CA_FILES: [&str; 5] = ["root/root.crt", "root/root.key", "ca/ca.crt", "ca/ca.key", "inkan.toml"];

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// `openssl x509 -text` of a PEM certificate.
fn x509_text(cert: &Path) -> String {
    openssl(["x509", "-noout", "-text", "-in", s(cert)]).ok().stdout
}

/// The SHA-256 fingerprint line of a PEM certificate.
fn fingerprint(cert: &Path) -> String {
    openssl(["x509", "-noout", "-fingerprint", "-sha256", "-in", s(cert)]).ok().stdout
}

/// The number after "X509v3 CRL Number:" in `openssl crl -text` output of a DER CRL.
fn crl_number(crl: &Path) -> u64 {
    let text = openssl(["crl", "-inform", "DER", "-noout", "-text", "-in", s(crl)]).ok().stdout;
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.contains("X509v3 CRL Number")).expect("a CRL number extension");
    lines.next().expect("the number").trim().parse().expect("decimal")
}

/// A date openssl prints with `-dateopt iso_8601` (`2027-11-21 05:16:42Z`) as an instant.
fn openssl_date(cert: &Path, which: &str) -> OffsetDateTime {
    let out = openssl(["x509", "-noout", which, "-dateopt", "iso_8601", "-in", s(cert)]).ok();
    let (_, date) = out.stdout.trim().split_once('=').expect("name=date");
    OffsetDateTime::parse(&date.replacen(' ', "T", 1), &Rfc3339).expect("ISO 8601 date")
}

fn rfc3339(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a string"), &Rfc3339).expect("RFC 3339")
}

#[test]
fn init_creates_encrypted_keys_and_a_chain_openssl_verifies() {
    let ca = TestCa::init(&[]);
    for rel in CA_FILES {
        assert!(ca.file(rel).is_file(), "{rel} is missing");
    }
    for (rel, var, right, wrong) in [
        ("root/root.key", "INKAN_ROOT_PASSPHRASE", ROOT_PASS, CA_PASS),
        ("ca/ca.key", "INKAN_CA_PASSPHRASE", CA_PASS, ROOT_PASS),
    ] {
        let key = ca.file(rel);
        let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{rel} mode {mode:o}");
        let pem = std::fs::read_to_string(&key).expect("read key");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"), "{rel}: {pem}");
        let passin = format!("env:{var}");
        openssl_env(["pkey", "-noout", "-in", s(&key), "-passin", &passin], &[(var, Some(right))]).ok();
        openssl_env(["pkey", "-noout", "-in", s(&key), "-passin", &passin], &[(var, Some(wrong))]).failed();
    }
    let verified = openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), s(&ca.ca_crt())]).ok();
    assert!(verified.stdout.contains(": OK"), "{}", verified.stdout);
    let text = x509_text(&ca.ca_crt());
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
}

#[test]
fn second_init_refuses_and_changes_nothing() {
    let ca = TestCa::init(&[]);
    let before = snapshot(&ca.data);
    // The five files, root/crl-number, the registry (db/conf, db/db), the signer's ledger
    // (signer/ledger.log), the audit log, the enrollment service's TLS certificate, key and
    // tag (server/*), and the root's first CRL and OCSP answer about the issuing CA (crl/*,
    // issue 11: relying parties can check the chain from the start).
    assert_eq!(before.len(), 15, "{:?}", before.keys());
    ca.inkan(["init"]).refused("already exists");
    ca.inkan(["init", "--key-type", "ed25519", "--org", "Other"]).refused("already exists");
    assert_eq!(snapshot(&ca.data), before, "a refused init changed a file");
}

#[test]
fn init_makes_each_key_type() {
    for (key_type, key_text, cert_text) in [
        ("ecdsa-p256", "Private-Key: (256 bit)", "ASN1 OID: prime256v1"),
        ("ecdsa-p384", "Private-Key: (384 bit)", "ASN1 OID: secp384r1"),
        ("ed25519", "ED25519 Private-Key", "Public Key Algorithm: ED25519"),
        ("rsa-3072", "Private-Key: (3072 bit", "Public-Key: (3072 bit)"),
    ] {
        let ca = TestCa::init(&["--key-type", key_type]);
        for (key, var, cert) in [
            ("ca/ca.key", "INKAN_CA_PASSPHRASE", ca.ca_crt()),
            ("root/root.key", "INKAN_ROOT_PASSPHRASE", ca.root_crt()),
        ] {
            let passin = format!("env:{var}");
            let key =
                openssl_env(["pkey", "-noout", "-text", "-in", s(&ca.file(key)), "-passin", &passin], &TestCa::env())
                    .ok();
            assert!(key.stdout.starts_with(key_text), "{key_type}: {}", key.stdout);
            let text = x509_text(&cert);
            assert!(text.contains(cert_text), "{key_type}: {text}");
        }
        openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), s(&ca.ca_crt())]).ok();
    }
}

#[test]
fn init_refuses_an_unknown_key_type_listing_the_accepted_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let out = inkan(["init", "--key-type", "dsa", "--data-dir", s(&data)], &TestCa::env());
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {out:?}");
    for accepted in ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"] {
        assert!(out.stderr.contains(accepted), "{}", out.stderr);
    }
    assert!(!data.exists());
}

#[test]
fn passphrase_files_replace_the_environment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let root_file = tmp.path().join("root.pass");
    let ca_file = tmp.path().join("ca.pass");
    std::fs::write(&root_file, "root passphrase from a file\n").expect("write");
    std::fs::write(&ca_file, "issuing passphrase from a file\r\nsecond line ignored\n").expect("write");
    let no_env = [("INKAN_ROOT_PASSPHRASE", None), ("INKAN_CA_PASSPHRASE", None)];
    let d = s(&data);
    inkan(
        ["init", "--data-dir", d, "--root-passphrase-file", s(&root_file), "--ca-passphrase-file", s(&ca_file)],
        &no_env,
    )
    .ok();
    for (key, pass) in
        [("root/root.key", "root passphrase from a file"), ("ca/ca.key", "issuing passphrase from a file")]
    {
        openssl_env(["pkey", "-noout", "-in", s(&data.join(key)), "-passin", "env:P"], &[("P", Some(pass))]).ok();
    }
    let csr = p256_csr(tmp.path(), "a");
    inkan(
        ["issue", "--data-dir", d, "--csr", s(&csr), "--account", "alice", "--ca-passphrase-file", s(&ca_file)],
        &no_env,
    )
    .ok();
    let crl = tmp.path().join("root.crl");
    inkan(["root", "sign-crl", "--data-dir", d, "--out", s(&crl), "--root-passphrase-file", s(&root_file)], &no_env)
        .ok();
    // The files are read, not the environment: a wrong file is refused even with the right
    // variable set.
    inkan(
        ["issue", "--data-dir", d, "--csr", s(&csr), "--account", "alice", "--ca-passphrase-file", s(&root_file)],
        &TestCa::env(),
    )
    .refused("wrong passphrase");
}

#[test]
fn init_refuses_short_and_shared_passphrases_and_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    for (root, ca, message) in [
        ("short root", CA_PASS, "at least 12 characters"),
        (ROOT_PASS, "short ca 11", "at least 12 characters"),
        (CA_PASS, CA_PASS, "different passphrases"),
    ] {
        inkan(
            ["init", "--data-dir", s(&data)],
            &[("INKAN_ROOT_PASSPHRASE", Some(root)), ("INKAN_CA_PASSPHRASE", Some(ca))],
        )
        .refused(message);
        assert!(!data.exists(), "a refused init left {}", data.display());
    }
}

#[test]
fn without_passphrase_or_terminal_commands_name_the_variables() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // setsid: a new session has no controlling terminal, so there is nothing to prompt on.
    let no_tty =
        |args: &[&str], env: &[(&str, Option<&str>)]| run("setsid", ["-w", inkan_bin()].iter().chain(args), env, None);
    let init = ["init", "--data-dir", s(&data)];
    no_tty(&init, &[("INKAN_ROOT_PASSPHRASE", None), ("INKAN_CA_PASSPHRASE", None)]).refused("INKAN_ROOT_PASSPHRASE");
    assert!(!data.exists());
    no_tty(&init, &[("INKAN_ROOT_PASSPHRASE", Some(ROOT_PASS)), ("INKAN_CA_PASSPHRASE", None)])
        .refused("INKAN_CA_PASSPHRASE");
    assert!(!data.exists());

    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "a");
    let data = s(&ca.data);
    no_tty(&["issue", "--data-dir", data, "--csr", s(&csr), "--account", "a"], &[("INKAN_CA_PASSPHRASE", None)])
        .refused("INKAN_CA_PASSPHRASE");
    no_tty(&["root", "sign-crl", "--data-dir", data, "--out", "x.crl"], &[("INKAN_ROOT_PASSPHRASE", None)])
        .refused("INKAN_ROOT_PASSPHRASE");
    assert!(ca.list(&[]).is_empty());
}

#[test]
fn passphrases_are_never_printed() {
    let mut outputs: Vec<Out> = Vec::new();
    let ca = TestCa::init(&[]);
    let other = tempfile::tempdir().expect("tempdir");
    let wrong = "wrong passphrase 0b3e5";
    let wrong_file = ca.work().join("wrong.pass");
    std::fs::write(&wrong_file, format!("{wrong}\n")).expect("write");
    let csr = p256_csr(ca.work(), "a");
    let crl = ca.work().join("x.crl");
    outputs.push(ca.inkan(["init"]).refused("already exists"));
    outputs.push(ca.inkan(["issue", "--csr", s(&csr), "--account", "alice"]).ok());
    let serial = serials(&ca.list(&[]))[0].clone();
    outputs.push(ca.inkan(["show", &serial]).ok());
    outputs.push(ca.inkan(["list"]).ok());
    outputs.push(ca.inkan(["revoke", &serial]).ok());
    outputs.push(ca.inkan(["crl"]).ok());
    outputs.push(ca.inkan(["root", "sign-crl", "--out", s(&crl)]).ok());
    outputs.push(
        ca.inkan_env(["issue", "--csr", s(&csr), "--account", "bob"], &[("INKAN_CA_PASSPHRASE", Some(wrong))])
            .refused("wrong passphrase"),
    );
    outputs.push(ca.inkan(["crl", "--ca-passphrase-file", s(&wrong_file)]).refused("wrong passphrase"));
    outputs.push(
        ca.inkan_env(["root", "sign-crl", "--out", s(&crl)], &[("INKAN_ROOT_PASSPHRASE", Some(CA_PASS))])
            .refused("wrong passphrase"),
    );
    let fresh = other.path().join("data");
    outputs.push(
        inkan(
            ["init", "--data-dir", s(&fresh)],
            &[("INKAN_ROOT_PASSPHRASE", Some(wrong)), ("INKAN_CA_PASSPHRASE", Some(wrong))],
        )
        .refused("different passphrases"),
    );
    outputs.push(
        inkan(
            ["init", "--data-dir", s(&fresh)],
            &[("INKAN_ROOT_PASSPHRASE", Some("short 9a")), ("INKAN_CA_PASSPHRASE", Some(CA_PASS))],
        )
        .refused("at least 12 characters"),
    );
    outputs.push(
        inkan(
            ["init", "--data-dir", s(&fresh)],
            &[("INKAN_ROOT_PASSPHRASE", Some(ROOT_PASS)), ("INKAN_CA_PASSPHRASE", Some(CA_PASS))],
        )
        .ok(),
    );
    for out in &outputs {
        for secret in [ROOT_PASS, CA_PASS, wrong, "short 9a"] {
            assert!(!out.text().contains(secret), "{} printed a passphrase:\n{}", out.what, out.text());
        }
    }
}

#[test]
fn issue_then_list_and_show_agree_with_openssl() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "alice");
    let (cert, serial) = ca.issue(&csr, "alice", "a", &[]);
    let verified = ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    assert!(verified.stdout.contains(": OK"), "{}", verified.stdout);

    let list = ca.list(&[]);
    assert_eq!(list.len(), 1, "{list:?}");
    let item = &list[0];
    assert_eq!(item["serial"], serial.as_str());
    assert_eq!(item["account"], "alice");
    assert_eq!(item["profile"], "client");
    assert_eq!(item["status"], "valid");
    assert_eq!(rfc3339(&item["not_after"]), openssl_date(&cert, "-enddate"));
    assert_eq!(rfc3339(&item["not_before"]), openssl_date(&cert, "-startdate"));
    assert!(item["not_after"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{item}");

    let pem = ca.inkan(["show", &serial, "--pem"]).ok();
    assert_eq!(pem.stdout, std::fs::read_to_string(&cert).expect("read cert"));
    let shown = ca.inkan(["show", &serial.to_lowercase()]).ok();
    let field = |name: &str| {
        shown
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no {name} line in\n{}", shown.stdout))
            .to_owned()
    };
    assert_eq!(field("serial "), serial);
    assert_eq!(field("account "), "alice");
    assert_eq!(field("status "), "valid");
    ca.inkan(["show", "7F000000000000000000000000000001"]).refused("no certificate with serial");
}

#[test]
fn issue_reads_standard_input_and_appends_the_chain() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "bob");
    let out = ca
        .inkan_stdin(["issue", "--csr", "-", "--account", "bob", "--chain"], &std::fs::read(&csr).expect("read csr"))
        .ok();
    let blocks: Vec<&str> = out.stdout.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert_eq!(blocks.len(), 2, "{}", out.stdout);
    let leaf = ca.work().join("leaf.pem");
    let second = ca.work().join("second.pem");
    std::fs::write(&leaf, blocks[0]).expect("write");
    std::fs::write(&second, blocks[1]).expect("write");
    assert_eq!(fingerprint(&second), fingerprint(&ca.ca_crt()));
    ca.openssl_verify(&leaf, &["-purpose", "sslclient"]).ok();
    // The whole output is a usable chain file: the intermediate comes from it.
    openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), "-untrusted", s(&second), s(&leaf)]).ok();
    let list = ca.list(&[]);
    assert_eq!(serials(&list), [openssl_serial(&leaf)]);
    assert_eq!(list[0]["account"], "bob");
}

#[test]
fn server_profile_certifies_the_names_asked_for() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "srv");
    let (cert, _) =
        ca.issue(&csr, "web1", "srv", &["--profile", "server", "--san", "example.test", "--san", "127.0.0.1"]);
    let server = ["-purpose", "sslserver"];
    ca.openssl_verify(&cert, &[&server[..], &["-verify_hostname", "example.test"]].concat()).ok();
    ca.openssl_verify(&cert, &[&server[..], &["-verify_ip", "127.0.0.1"]].concat()).ok();
    ca.openssl_verify(&cert, &[&server[..], &["-verify_hostname", "other.test"]].concat()).failed();
    ca.openssl_verify(&cert, &[&server[..], &["-verify_ip", "127.0.0.2"]].concat()).failed();
    let text = x509_text(&cert);
    assert!(text.contains("DNS:example.test, IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert_eq!(ca.list(&[])[0]["profile"], "server");
}

#[test]
fn issue_refuses_bad_requests_and_records_nothing() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "c");
    let c = s(&csr);
    for (args, message) in [
        (&["--account", "carol", "--san", "carol.test"][..], "does not carry subject alternative names"),
        (&["--account", "carol", "--profile", "server"][..], "needs at least one subject alternative name"),
        (&["--account", "carol", "--profile", "server", "--san", "bad name!"][..], "invalid subject alternative name"),
        (&["--account", "carol", "--days", "0"][..], "at least 1 day"),
        (&["--account", "carol", "--days", "100000"][..], "at most 825"),
        (&["--account", "carol", "--days", "826"][..], "at most 825"),
        (&["--account", ""][..], "invalid account ID"),
        (&["--account", " carol"][..], "invalid account ID"),
    ] {
        ca.inkan(["issue", "--csr", c].iter().chain(args)).refused(message);
    }
    assert!(ca.list(&[]).is_empty(), "a refused issue left a record");
    // The limit itself is allowed.
    let (cert, _) = ca.issue(&csr, "carol", "carol", &["--days", "825"]);
    let days = openssl_date(&cert, "-enddate") - OffsetDateTime::now_utc();
    assert!(days.whole_days() == 824 || days.whole_days() == 825, "{days}");
}

#[test]
fn revoke_and_crl_are_what_openssl_checks() {
    let ca = TestCa::init(&[]);
    let w = ca.work();
    let (revoked, rserial) = ca.issue(&p256_csr(w, "a"), "alice", "a", &[]);
    let (kept, kserial) = ca.issue(&p256_csr(w, "b"), "bob", "b", &[]);

    ca.inkan(["revoke", &rserial, "--reason", "keyCompromise"]).ok();
    let status = |serial: &str| {
        ca.list(&[]).iter().find(|i| i["serial"] == serial).map(|i| i["status"].clone()).expect("listed")
    };
    assert_eq!(status(&rserial), "revoked");
    assert_eq!(status(&kserial), "valid");

    let crl = w.join("ca.crl");
    ca.inkan(["crl", "--out", s(&crl)]).ok();
    let text = openssl(["crl", "-inform", "DER", "-noout", "-text", "-in", s(&crl)]).ok().stdout;
    assert!(text.contains(&format!("Serial Number: {rserial}")), "{text}");
    assert!(!text.contains(&kserial), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert_eq!(crl_number(&crl), 1);
    assert_eq!(std::fs::read(&crl).expect("read"), std::fs::read(ca.file("crl/ca.crl")).expect("published copy"));

    let chain = w.join("chain.pem");
    let root_pem = std::fs::read_to_string(ca.root_crt()).expect("read");
    let ca_pem = std::fs::read_to_string(ca.ca_crt()).expect("read");
    std::fs::write(&chain, format!("{root_pem}{ca_pem}")).expect("write");
    let verified = openssl(["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-CAfile", s(&chain), "-verify"]).ok();
    assert!(verified.text().contains("verify OK"), "{}", verified.text());

    let crl_pem = |der: &Path| openssl(["crl", "-inform", "DER", "-in", s(der)]).ok().stdout;
    let bundle = w.join("bundle.pem");
    std::fs::write(&bundle, format!("{root_pem}{ca_pem}{}", crl_pem(&crl))).expect("write");
    let check = |cert: &Path, flag: &str, bundle: &Path| {
        openssl(["verify", "-x509_strict", flag, "-CAfile", s(bundle), s(cert)])
    };
    let out = check(&revoked, "-crl_check", &bundle).failed();
    assert!(out.text().contains("certificate revoked"), "{}", out.text());
    check(&kept, "-crl_check", &bundle).ok();

    ca.inkan(["revoke", &rserial]).refused("revoked");
    ca.inkan(["revoke", "7F00000000000000000000000000000A"]).refused("no certificate with serial");
    ca.inkan(["revoke", "12345"]).refused("expected 32 hexadecimal digits");
    ca.inkan(["revoke", &kserial, "--reason", "stolen"]).refused(
        "accepted: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, \
         cessationOfOperation, privilegeWithdrawn",
    );
    assert_eq!(status(&kserial), "valid");

    let crl2 = w.join("ca2.crl");
    ca.inkan(["crl", "--out", s(&crl2)]).ok();
    assert_eq!(crl_number(&crl2), 2);

    // init signed the root's first CRL (number 1): the ceremonies continue from there.
    let root_crl = w.join("root.crl");
    assert_eq!(crl_number(&ca.file("crl/root.crl")), 1);
    ca.inkan(["root", "sign-crl", "--out", s(&root_crl)]).ok();
    assert_eq!(crl_number(&root_crl), 2);
    ca.inkan(["root", "sign-crl", "--out", s(&root_crl)]).ok();
    assert_eq!(crl_number(&root_crl), 3);
    assert_eq!(
        std::fs::read(&root_crl).expect("read"),
        std::fs::read(ca.file("crl/root.crl")).expect("published copy")
    );
    let root_text = openssl(["crl", "-inform", "DER", "-noout", "-text", "-in", s(&root_crl)]).ok().stdout;
    assert!(root_text.contains("Issuer: O = inkan, CN = inkan Root CA"), "{root_text}");
    assert!(root_text.contains("No Revoked Certificates"), "{root_text}");

    let full = w.join("full.pem");
    std::fs::write(&full, format!("{root_pem}{ca_pem}{}{}", crl_pem(&crl2), crl_pem(&root_crl))).expect("write");
    check(&kept, "-crl_check_all", &full).ok();
    let out = check(&revoked, "-crl_check_all", &full).failed();
    assert!(out.text().contains("certificate revoked"), "{}", out.text());
    // Without the root's CRL, -crl_check_all cannot check the issuing CA: the root CRL is
    // what makes the full check pass.
    check(&kept, "-crl_check_all", &bundle).failed();
}

#[test]
fn list_filters_by_expiry_account_and_revocation() {
    let ca = TestCa::init(&[]);
    let w = ca.work();
    let (_, ten) = ca.issue(&p256_csr(w, "a"), "alice", "a", &["--days", "10"]);
    let (_, hundred) = ca.issue(&p256_csr(w, "b1"), "bob", "b1", &["--days", "100"]);
    let (_, four_hundred) = ca.issue(&p256_csr(w, "c"), "carol", "c", &["--days", "400"]);
    let (_, revoked) = ca.issue(&p256_csr(w, "b2"), "bob", "b2", &["--days", "50"]);
    ca.inkan(["revoke", &revoked]).ok();

    let (ten, hundred, four_hundred, revoked) =
        (ten.as_str(), hundred.as_str(), four_hundred.as_str(), revoked.as_str());
    assert_eq!(serials(&ca.list(&[])).len(), 4);
    assert_eq!(serials(&ca.list(&["--expiring", "30d"])), [ten]);
    // Soonest first; the revoked 50-day certificate is not "expiring".
    assert_eq!(serials(&ca.list(&["--expiring", "200d"])), [ten, hundred]);
    assert_eq!(serials(&ca.list(&["--expiring", "500"])), [ten, hundred, four_hundred]);
    let mut bob = serials(&ca.list(&["--account", "bob"]));
    bob.sort();
    let mut expected = [hundred, revoked];
    expected.sort();
    assert_eq!(bob, expected);
    assert!(ca.list(&["--account", "nobody"]).is_empty());
    assert_eq!(serials(&ca.list(&["--revoked"])), [revoked]);
    assert_eq!(serials(&ca.list(&["--account", "bob", "--expiring", "200d"])), [hundred]);
    ca.inkan(["list", "--expiring", "soon"]).refused("is not a period like 30d, 12h or 2w");
    ca.inkan(["list", "--expiring", "3y"]).refused("unknown unit");
    // A page: the soonest first, and the table says when more match.
    // (The service's own certificate, which `list` leaves out, expires after 365 days.)
    assert_eq!(serials(&ca.list(&["--expiring", "200d", "--limit", "1"])), [ten]);
    assert_eq!(serials(&ca.list(&["--expiring", "200d", "--limit", "2"])), [ten, hundred]);
    assert_eq!(serials(&ca.list(&["--account", "bob", "--limit", "1"])).len(), 1);
    let page = ca.inkan(["list", "--expiring", "200d", "--limit", "1"]).ok();
    assert!(page.stderr.contains("1 certificate(s) shown; more match"), "{}", page.stderr);
    let whole = ca.inkan(["list", "--expiring", "200d", "--limit", "2"]).ok();
    assert!(whole.stderr.contains("2 certificate(s)") && !whole.stderr.contains("more match"), "{}", whole.stderr);
    for (bad, says) in [("0", "0 is not in 1.."), ("many", "invalid value 'many'")] {
        let out = ca.inkan(["list", "--limit", bad]);
        assert_eq!(out.status.code(), Some(2), "clap's usage error: {}", out.stderr);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }

    // The table lists the same certificates.
    let table = ca.inkan(["list", "--revoked"]).ok();
    assert!(table.stdout.contains(revoked), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);
}

#[test]
fn wrong_ca_passphrase_issues_nothing() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "a");
    ca.issue(&csr, "alice", "a", &[]);
    let before = ca.list_text();
    ca.inkan_env(
        ["issue", "--csr", s(&csr), "--account", "mallory"],
        &[("INKAN_CA_PASSPHRASE", Some("not the passphrase"))],
    )
    .refused("wrong passphrase");
    // The root's passphrase does not open the issuing CA's key either.
    ca.inkan_env(["issue", "--csr", s(&csr), "--account", "mallory"], &[("INKAN_CA_PASSPHRASE", Some(ROOT_PASS))])
        .refused("wrong passphrase");
    ca.inkan_env(["crl"], &[("INKAN_CA_PASSPHRASE", Some(ROOT_PASS))]).refused("wrong passphrase");
    assert!(!ca.file("crl/ca.crl").exists());
    assert_eq!(ca.list_text(), before);
}

#[test]
fn help_is_available_for_every_command() {
    for args in
        [&[][..], &["init"], &["issue"], &["revoke"], &["list"], &["show"], &["crl"], &["root"], &["root", "sign-crl"]]
    {
        let out = inkan(args.iter().chain(&["--help"]), &[]).ok();
        assert!(out.stdout.contains("Usage"), "{args:?}: {}", out.stdout);
    }
    let out = inkan(["init", "--help"], &[]).ok();
    assert!(out.stdout.contains("--key-type"), "{}", out.stdout);
}

#[test]
fn data_dir_comes_from_the_flag_or_the_environment() {
    let ca = TestCa::init(&[]);
    let csr = p256_csr(ca.work(), "a");
    ca.issue(&csr, "alice", "a", &[]);
    let out = inkan(["list", "--json"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--data-dir"), "{}", out.stderr);
    let out = inkan(["list", "--json"], &[("INKAN_DATA_DIR", Some(s(&ca.data)))]).ok();
    assert_eq!(out.stdout, ca.list_text());
}

#[test]
fn commands_without_a_ca_say_to_run_init() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let csr = p256_csr(tmp.path(), "a");
    let out = tmp.path().join("out.crl");
    let serial = "7F00000000000000000000000000000A";
    let mut problems = Vec::new();
    for args in [
        &["issue", "--csr", s(&csr), "--account", "a"][..],
        &["revoke", serial],
        &["list"],
        &["show", serial],
        &["crl"],
        &["root", "sign-crl", "--out", s(&out)],
    ] {
        let run = inkan(args.iter().chain(&["--data-dir", s(&empty)]), &TestCa::env());
        if run.status.code() != Some(1) || !run.stderr.contains("inkan init") {
            problems.push(format!("{}: {} {}", run.what, run.status, run.stderr));
        }
    }
    assert_eq!(
        std::fs::read_dir(&empty).expect("read_dir").count(),
        0,
        "a command wrote into a directory without a CA"
    );
    assert!(problems.is_empty(), "commands that do not point at `inkan init`:\n{}", problems.join("\n"));
}

/// No unwrap on input from outside (STYLE.md): periods too large for a date are refused with
/// a message, not a panic (exit status 101 and a backtrace).
#[test]
fn huge_periods_are_refused_without_a_panic() {
    let ca = TestCa::init(&[]);
    let out = ca.work().join("x.crl");
    let other = ca.work().join("other");
    let mut problems = Vec::new();
    for (args, data) in [
        (&["list", "--expiring", "999999999999999999d"][..], &ca.data),
        (&["list", "--expiring", "99999999999d"], &ca.data),
        (&["root", "sign-crl", "--days", "4000000000", "--out", s(&out)], &ca.data),
        (&["init", "--root-days", "4000000000"], &other),
        (&["init", "--ca-days", "4000000000"], &other),
    ] {
        let run = inkan(args.iter().chain(&["--data-dir", s(data)]), &TestCa::env());
        if run.status.code() != Some(1) || run.stderr.contains("panicked") {
            problems.push(format!(
                "{}: {}\n{}",
                run.what,
                run.status,
                run.stderr.lines().take(3).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "not refused cleanly:\n{}", problems.join("\n"));
}
