//! Issuing-CA rollover: `inkan ca rollover --at T` makes generation 2, signed by the root; the
//! service issues from generation 1 until T and from generation 2 after; generation 1 keeps
//! signing the CRL and OCSP answers of its certificates; both chains are published (/ca.crt,
//! /ca-chain.pem, EST cacerts); certificates of both log in. openssl checks every step.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The issuer's common name of a certificate, as openssl prints it.
fn issuer_of(cert: &Path) -> String {
    openssl(["x509", "-in", s(cert), "-noout", "-issuer", "-nameopt", "RFC2253"]).ok().stdout.trim().to_owned()
}

/// A key and CSR for `name`, issued to `account` through the running service; returns the
/// certificate's path, key and serial.
fn issue(ca: &TestCa, account: &str, name: &str) -> (PathBuf, PathBuf, String) {
    let work = ca.work();
    let key = genpkey(work, name, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(work, name, &key, &[]);
    let cert = work.join(format!("{name}.crt"));
    ca.inkan(["issue", "--csr", s(&csr), "--account", account, "--out", s(&cert)]).ok();
    let serial = openssl_serial(&cert);
    (cert, key, serial)
}

/// pkilint (in ./.venv): `TOOL lint -s WARNING FILES` reports nothing.
fn pkilint(tool: &str, files: &[&Path]) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(tool);
    let mut args = vec!["lint", "-s", "WARNING"];
    args.extend(files.iter().map(|f| s(f)));
    let out = run(s(&bin), args, &[], None);
    assert!(out.status.success() && out.text().trim().is_empty(), "{tool} {files:?}:\n{}", out.text());
}

fn pem_file(path: &Path, der: &[u8]) {
    write(path, pki::encoding::pem_encode("CERTIFICATE", der));
}

/// Waits until the CRL at `path` on the plain listener lists `serial`; returns it as PEM.
fn crl_listing(service: &Service, path: &str, serial: &str, out: &Path) -> PathBuf {
    let der = out.with_extension("der");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = service.curl(&service.http_url(path), NONE);
        write(&der, &reply.body);
        let text = openssl(["crl", "-inform", "DER", "-in", s(&der), "-noout", "-text"]);
        if reply.status == 200 && text.stdout.contains(serial) {
            break;
        }
        assert!(Instant::now() < deadline, "{path} never listed {serial}: {}", text.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    openssl(["crl", "-inform", "DER", "-in", s(&der), "-out", s(out)]).ok();
    out.to_owned()
}

#[test]
fn a_new_issuing_ca_takes_over_at_its_moment_and_the_old_one_keeps_answering() {
    let ca = TestCa::init(&[]);
    ca.add_user("ann", "master", None);
    ca.add_user("bea", "master", None);
    let work = ca.work().to_owned();
    let (old_cert, old_key, old_serial) = issue(&ca, "ann", "ann-1");
    assert!(issuer_of(&old_cert).contains("CN=inkan Issuing CA,"), "{}", issuer_of(&old_cert));

    // The ceremony: generation 2 takes over a few seconds from now. Bad input first.
    ca.inkan(["ca", "rollover", "--at", "tomorrow"]).refused("not an RFC 3339 time");
    ca.inkan(["ca", "rollover", "--at", "2001-01-01T00:00:00Z"]).refused("in the past");
    let wrong_root = [("INKAN_ROOT_PASSPHRASE", Some("wrong root passphrase")), ("INKAN_CA_PASSPHRASE", Some(CA_PASS))];
    ca.inkan_env(["ca", "rollover"], &wrong_root).refused("wrong passphrase");
    assert!(!ca.file("ca/gen-2").exists(), "nothing made by the refused ceremonies");
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let at_text = pki::encoding::rfc3339(at.replace_nanosecond(0).expect("ns"));
    let made = ca.inkan(["ca", "rollover", "--at", &at_text]).ok();
    assert!(made.stdout.contains("Issuing CA generation 2") && made.stdout.contains(&at_text), "{}", made.stdout);
    ca.inkan(["ca", "rollover"]).refused("generation 2 already takes over at");
    let ca2 = ca.file("ca/gen-2/ca.crt");
    openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), s(&ca2)]).ok();
    pkilint("lint_pkix_cert", &[&ca2]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[&ca.root_crt(), &ca2]);
    let status = ca.inkan(["ca", "status"]).ok();
    assert!(status.stdout.contains(&format!("issuing CA 2 (from {at_text})")), "{}", status.stdout);

    let service = Service::start(&ca, &[]);
    let (before_cert, _, before_serial) = issue(&ca, "bea", "bea-before");
    assert!(issuer_of(&before_cert).contains("CN=inkan Issuing CA,"), "before {at_text}: {}", issuer_of(&before_cert));
    while time::OffsetDateTime::now_utc() < at + time::Duration::seconds(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (new_cert, new_key, new_serial) = issue(&ca, "bea", "bea-after");
    assert!(issuer_of(&new_cert).contains("CN=inkan Issuing CA 2"), "after {at_text}: {}", issuer_of(&new_cert));
    let text = openssl(["x509", "-in", s(&new_cert), "-noout", "-text"]).ok().stdout;
    assert!(text.contains("/crl/2/ca.crl") && text.contains("/ca/2/ca.crt"), "its own CDP and AIA:\n{text}");
    openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), "-untrusted", s(&ca2), s(&new_cert)]).ok();
    ca.openssl_verify(&old_cert, &[]).ok();

    // Both chains published: /ca.crt is the one issuing now, /ca/2/ca.crt and /ca-chain.pem.
    let current = service.curl(&service.http_url("/ca.crt"), NONE);
    current.expect(200);
    let current_pem = work.join("current.pem");
    pem_file(&current_pem, &current.body);
    assert_eq!(read(&current_pem).trim(), read(&ca2).trim(), "/ca.crt is generation 2 now");
    let chain = service.curl(&service.http_url("/ca-chain.pem"), NONE);
    chain.expect(200);
    let chain_text = chain.text();
    assert_eq!(chain_text.matches("BEGIN CERTIFICATE").count(), 3, "{chain_text}");
    let chain_file = work.join("chain.pem");
    write(&chain_file, &chain_text);
    for cert in [&old_cert, &before_cert, &new_cert] {
        openssl(["verify", "-x509_strict", "-CAfile", s(&ca.root_crt()), "-untrusted", s(&chain_file), s(cert)]).ok();
    }
    assert_eq!(service.curl(&service.http_url("/ca/2/ca.crt"), NONE).body, current.body);
    service.curl(&service.http_url("/ca/9/ca.crt"), NONE).expect(404);
    let est = service.curl(&format!("https://localhost:{}/.well-known/est/cacerts", service.est), NONE);
    est.expect(200);
    let p7 = work.join("cacerts.p7");
    write(&p7, pki::encoding::base64_decode(&est.text()).expect("base64"));
    let listed = openssl(["pkcs7", "-inform", "DER", "-in", s(&p7), "-print_certs", "-noout"]).ok().stdout;
    for cn in [
        "subject=O = inkan, CN = inkan Issuing CA 2\n",
        "subject=O = inkan, CN = inkan Issuing CA\n",
        "subject=O = inkan, CN = inkan Root CA\n",
    ] {
        assert!(listed.contains(cn), "EST cacerts has {cn:?}:\n{listed}");
    }

    // Certificates of both generations log in.
    for (name, cert, key) in [("ann", &old_cert, &old_key), ("bea", &new_cert, &new_key)] {
        let client = Client::pem(cert, key, &work.join(format!("{name}.jar")));
        service.login_api(&client, &user_password(name)).expect(200);
        service.me(&client).expect(200);
    }

    // Revocations: each generation's CRL lists its own certificates, signed by its own key.
    ca.inkan(["revoke", &old_serial, "--reason", "keyCompromise"]).ok();
    ca.inkan(["revoke", &new_serial, "--reason", "keyCompromise"]).ok();
    let crl1 = crl_listing(&service, "/crl/ca.crl", &old_serial, &work.join("crl1.pem"));
    let crl2 = crl_listing(&service, "/crl/2/ca.crl", &new_serial, &work.join("crl2.pem"));
    let crl1_text = openssl(["crl", "-in", s(&crl1), "-noout", "-text"]).ok().stdout;
    assert!(!crl1_text.contains(&new_serial), "generation 1's CRL lists only its own:\n{crl1_text}");
    for (crl, issuer) in [(&crl1, ca.ca_crt()), (&crl2, ca2.clone())] {
        let verified = openssl(["crl", "-in", s(crl), "-CAfile", s(&issuer), "-noout"]);
        assert!(verified.text().contains("verify OK"), "{}", verified.text());
    }
    for (cert, crl) in [(&old_cert, &crl1), (&new_cert, &crl2)] {
        let refused = openssl([
            "verify",
            "-x509_strict",
            "-crl_check",
            "-CAfile",
            s(&ca.root_crt()),
            "-untrusted",
            s(&chain_file),
            "-CRLfile",
            s(crl),
            s(cert),
        ]);
        assert!(refused.text().contains("certificate revoked"), "{}", refused.text());
    }

    // OCSP: each generation answers for its own certificates (openssl checks the signature).
    let all_cas = work.join("all-cas.pem");
    write(&all_cas, format!("{}{}", chain_text, read(&ca.root_crt())));
    for (cert, issuer, expected) in
        [(&old_cert, ca.ca_crt(), "revoked"), (&before_cert, ca.ca_crt(), "good"), (&new_cert, ca2.clone(), "revoked")]
    {
        let answer = openssl([
            "ocsp",
            "-url",
            &service.http_url("/ocsp"),
            "-issuer",
            s(&issuer),
            "-cert",
            s(cert),
            "-CAfile",
            s(&all_cas),
        ])
        .ok();
        assert!(answer.text().contains("Response verify OK"), "{}", answer.text());
        assert!(answer.stdout.contains(&format!(": {expected}")), "{expected}: {}", answer.stdout);
    }
    // A generation-1 serial asked of generation 2 (its name and key in the CertID) is none of
    // its certificates.
    let serial_arg = format!("0x{before_serial}");
    let asked_wrong = openssl([
        "ocsp",
        "-url",
        &service.http_url("/ocsp"),
        "-issuer",
        s(&ca2),
        "-serial",
        &serial_arg,
        "-CAfile",
        s(&all_cas),
    ])
    .ok();
    assert!(asked_wrong.text().contains("Response verify OK"), "{}", asked_wrong.text());
    assert!(asked_wrong.stdout.contains(": unknown"), "{}", asked_wrong.text());
    service.stop();

    // The registry says which generation issued each.
    let records = ca.list(&[]);
    let issuer_of_serial = |serial: &str| -> Value {
        records.iter().find(|r| r["serial"] == serial).map(|r| r["issuer"].clone()).expect("listed")
    };
    assert_eq!(issuer_of_serial(&old_serial), 1);
    assert_eq!(issuer_of_serial(&before_serial), 1);
    assert_eq!(issuer_of_serial(&new_serial), 2);
    let table = ca.inkan(["list"]).ok().stdout;
    assert!(table.lines().next().is_some_and(|header| header.contains(" CA ")), "{table}");
    // Offline, the CLI issues from generation 2 too, and its CRL command signs both.
    let (offline, _, _) = issue(&ca, "ann", "ann-offline");
    assert!(issuer_of(&offline).contains("CN=inkan Issuing CA 2"), "{}", issuer_of(&offline));
    ca.inkan(["audit", "verify"]).ok();

    // A backup without keys leaves out every generation's key and responder key.
    let archive = work.join("after-rollover.tar");
    ca.inkan(["backup", "--out", s(&archive)]).ok();
    let bytes = std::fs::read(&archive).expect("archive");
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"), "no key in the archive");
    let members = run("tar", ["-tf", s(&archive)], &[], None).ok().stdout;
    assert!(members.contains("ca/gen-2/ca.crt") && members.contains("ca/gen-2/active-from"), "{members}");
    assert!(!members.contains(".key"), "{members}");
}

/// Root rollover: a new hierarchy (`inkan init` elsewhere) cross-certified by the old root. A
/// client that trusts only the old root verifies the new hierarchy's leaves through the
/// cross-certificate, and not without it; one that trusts the new root verifies them directly.
#[test]
fn a_client_trusting_only_the_old_root_verifies_new_leaves_through_the_cross_certificate() {
    let old = TestCa::init(&[]);
    let new = TestCa::init(&["--org", "inkan 2027"]);
    let work = old.work().to_owned();
    let key = genpkey(&work, "leaf", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(&work, "leaf", &key, &[]);
    let (leaf, _) = new.issue(&csr, "dan", "leaf", &[]);

    let cross = work.join("cross.pem");
    let made = old.inkan(["root", "cross-sign", "--new-root", s(&new.root_crt()), "--out", s(&cross)]).ok();
    assert!(made.stdout.contains("O=inkan 2027, CN=inkan 2027 Root CA"), "{}", made.stdout);
    let text = openssl(["x509", "-in", s(&cross), "-noout", "-text"]).ok().stdout;
    assert!(text.contains("Issuer: O = inkan, CN = inkan Root CA"), "{text}");
    assert!(text.contains("Subject: O = inkan 2027, CN = inkan 2027 Root CA"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    pkilint("lint_pkix_cert", &[&cross]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[&old.root_crt(), &cross]);

    let with_cross = work.join("untrusted.pem");
    write(&with_cross, format!("{}{}", read(&new.ca_crt()), read(&cross)));
    let verify = |anchor: &Path, untrusted: &Path| {
        openssl_env(["verify", "-x509_strict", "-CAfile", s(anchor), "-untrusted", s(untrusted), s(&leaf)], &[])
    };
    verify(&old.root_crt(), &with_cross).ok();
    let without = verify(&old.root_crt(), &new.ca_crt());
    assert!(!without.status.success(), "without the cross-certificate the old root cannot reach the leaf");
    verify(&new.root_crt(), &new.ca_crt()).ok();

    // Refused: a root cross-signing itself, a file that is no certificate, a wrong passphrase.
    let again = work.join("again.pem");
    old.inkan(["root", "cross-sign", "--new-root", s(&old.root_crt()), "--out", s(&again)])
        .refused("the old root's key");
    write(&work.join("junk.crt"), "junk");
    old.inkan(["root", "cross-sign", "--new-root", s(&work.join("junk.crt")), "--out", s(&again)]).failed();
    let wrong = [("INKAN_ROOT_PASSPHRASE", Some("not the root passphrase")), ("INKAN_CA_PASSPHRASE", Some(CA_PASS))];
    old.inkan_env(["root", "cross-sign", "--new-root", s(&new.root_crt()), "--out", s(&again)], &wrong)
        .refused("wrong passphrase");
    assert!(!again.exists(), "nothing written by a refused ceremony");
}
