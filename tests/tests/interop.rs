//! What inkan's CA makes, judged by openssl and pkilint (issue 2: CA core).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ca::{CaKeyType, CertificateAuthority, Passphrase, SledStore};
use inkan_tests::{KEY_SPECS, TestCa, assert_lint_clean, openssl, openssl_csr, openssl_ok};
use pki::{Profile, RevocationReason, San};
use time::{Duration, OffsetDateTime};

/// The issuing CA key's passphrase of [`TestCa::new`].
const CA_PASS: &str = "test issuing passphrase";

fn s(p: &std::path::Path) -> &str {
    TestCa::s(p)
}

/// The public key openssl reads from a file (`x509 -pubkey` or `req -pubkey`).
fn public_key_pem(kind: &str, path: &std::path::Path) -> String {
    openssl_ok(&[kind, "-in", s(path), "-noout", "-pubkey"])
}

fn lint_ca_certificates(ca: &TestCa) {
    assert_lint_clean("lint_pkix_cert", &[s(&ca.root_pem)]);
    assert_lint_clean("lint_pkix_cert", &[s(&ca.ca_pem)]);
    assert_lint_clean("lint_pkix_signer_signee_cert_chain", &[s(&ca.root_pem), s(&ca.ca_pem)]);
    let text = openssl_ok(&["x509", "-in", s(&ca.ca_pem), "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "issuing CA must have pathLen 0:\n{text}");
    openssl_ok(&["verify", "-x509_strict", "-CAfile", s(&ca.root_pem), s(&ca.ca_pem)]);
}

fn verify_client(ca: &TestCa, leaf: &std::path::Path) {
    let out = openssl_ok(&[
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&ca.root_pem),
        "-untrusted",
        s(&ca.ca_pem),
        s(leaf),
    ]);
    assert!(out.trim_end().ends_with(": OK"), "{out}");
}

#[test]
fn every_accepted_key_type_is_certified_and_accepted_by_openssl_and_pkilint() {
    let ca = TestCa::new(CaKeyType::EcdsaP256);
    lint_ca_certificates(&ca);
    for spec in KEY_SPECS {
        let csr = openssl_csr(ca.dir.path(), spec);
        let (issued, leaf) = ca.issue_file(&csr.csr, "alice", Profile::Client, &[]);
        verify_client(&ca, &leaf);
        assert_eq!(
            public_key_pem("x509", &leaf),
            public_key_pem("req", &csr.csr),
            "{}: the certificate must carry the CSR's key",
            csr.name
        );
        let serial = openssl_ok(&["x509", "-in", s(&leaf), "-noout", "-serial"]);
        assert_eq!(serial.trim(), format!("serial={}", issued.record.serial), "{}", csr.name);
        let text = openssl_ok(&["x509", "-in", s(&leaf), "-noout", "-subject"]);
        assert_eq!(text.trim(), "subject=O = inkan test, CN = alice", "{}", csr.name);
        assert_lint_clean("lint_pkix_cert", &[s(&leaf)]);
        assert_lint_clean("lint_pkix_signer_signee_cert_chain", &[s(&ca.ca_pem), s(&leaf)]);
    }
}

#[test]
fn every_ca_key_type_makes_lint_clean_chains_and_crls() {
    for key_type in [CaKeyType::EcdsaP384, CaKeyType::Ed25519, CaKeyType::Rsa3072] {
        let ca = TestCa::new(key_type);
        lint_ca_certificates(&ca);
        let csr = openssl_csr(ca.dir.path(), &KEY_SPECS[0]);
        let (_, leaf) = ca.issue_file(&csr.csr, "bob", Profile::Client, &[]);
        verify_client(&ca, &leaf);
        assert_lint_clean("lint_pkix_cert", &[s(&leaf)]);
        assert_lint_clean("lint_pkix_signer_signee_cert_chain", &[s(&ca.ca_pem), s(&leaf)]);
        let crl = ca.path("ca.crl");
        std::fs::write(&crl, ca.crl(OffsetDateTime::now_utc(), Duration::days(7))).unwrap();
        openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-CAfile", s(&ca.ca_pem), "-verify"]);
        assert_lint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX", s(&crl)]);
    }
}

#[test]
fn server_profile_passes_openssl_name_checks_and_pkilint() {
    let ca = TestCa::new(CaKeyType::EcdsaP256);
    let csr = openssl_csr(ca.dir.path(), &KEY_SPECS[0]);
    let sans: Vec<San> = ["www.example.test", "127.0.0.1", "::1"].iter().map(|s| s.parse().unwrap()).collect();
    let (_, leaf) = ca.issue_file(&csr.csr, "web", Profile::Server, &sans);
    for check in [["-verify_hostname", "www.example.test"], ["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"]] {
        openssl_ok(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            check[0],
            check[1],
            "-CAfile",
            s(&ca.root_pem),
            "-untrusted",
            s(&ca.ca_pem),
            s(&leaf),
        ]);
    }
    let wrong = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "other.example.test",
        "-CAfile",
        s(&ca.root_pem),
        "-untrusted",
        s(&ca.ca_pem),
        s(&leaf),
    ]);
    assert!(!wrong.status.success(), "a name not in the SANs must not verify");
    let client = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&ca.root_pem),
        "-untrusted",
        s(&ca.ca_pem),
        s(&leaf),
    ]);
    assert!(!client.status.success(), "a server certificate must not pass as a client certificate");
    assert_lint_clean("lint_pkix_cert", &[s(&leaf)]);
    assert_lint_clean("lint_pkix_signer_signee_cert_chain", &[s(&ca.ca_pem), s(&leaf)]);
}

#[test]
fn revoked_certificates_fail_openssl_crl_checks_and_both_crls_lint_clean() {
    let ca = TestCa::new(CaKeyType::EcdsaP256);
    let csr = openssl_csr(ca.dir.path(), &KEY_SPECS[0]);
    let (revoked, revoked_pem) = ca.issue_file(&csr.csr, "carol", Profile::Client, &[]);
    let other = openssl_csr(ca.dir.path(), &KEY_SPECS[3]);
    let (_, good_pem) = ca.issue_file(&other.csr, "dave", Profile::Client, &[]);
    let now = OffsetDateTime::now_utc();
    ca::Registry::revoke(ca.registry.as_ref(), &revoked.record.serial, now, RevocationReason::KeyCompromise).unwrap();

    let crl = ca.path("ca.crl");
    std::fs::write(&crl, ca.crl(now, Duration::days(7))).unwrap();
    let root_crl = ca.path("root.crl");
    let published =
        ca::ceremony::sign_root_publications(&ca.data, &inkan_tests::root_passphrase(), now, Duration::days(30))
            .unwrap();
    std::fs::write(&root_crl, &published.crl).unwrap();
    // The root's pre-signed OCSP answer about the issuing CA: good, verified under the root.
    let ca_ocsp = ca.path("ca-ocsp.der");
    std::fs::write(&ca_ocsp, &published.ca_ocsp).unwrap();
    let out = inkan_tests::openssl(&[
        "ocsp",
        "-respin",
        s(&ca_ocsp),
        "-issuer",
        s(&ca.root_pem),
        "-cert",
        s(&ca.ca_pem),
        "-CAfile",
        s(&ca.root_pem),
        "-resp_text",
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("Response verify OK"), "{text}");
    assert!(text.contains(&format!("{}: good", s(&ca.ca_pem))), "{text}");
    assert_lint_clean("lint_ocsp_response", &[s(&ca_ocsp)]);

    let text = openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]);
    assert!(text.contains(&revoked.record.serial.to_string()) && text.contains("Key Compromise"), "{text}");
    openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-CAfile", s(&ca.ca_pem), "-verify"]);
    openssl_ok(&["crl", "-inform", "DER", "-in", s(&root_crl), "-noout", "-CAfile", s(&ca.root_pem), "-verify"]);
    assert_lint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX", s(&crl)]);
    // The root's CRL covers CA certificates only: an authority revocation list.
    assert_lint_clean("lint_crl", &["-t", "ARL", "-p", "PKIX", s(&root_crl)]);

    // One bundle with both CA certificates and both CRLs, as a relying party would assemble.
    let bundle = ca.path("bundle.pem");
    let mut text = std::fs::read_to_string(&ca.root_pem).unwrap() + &std::fs::read_to_string(&ca.ca_pem).unwrap();
    for der in [&crl, &root_crl] {
        text += &openssl_ok(&["crl", "-inform", "DER", "-in", s(der)]);
    }
    std::fs::write(&bundle, text).unwrap();
    let bad = openssl(&["verify", "-crl_check_all", "-CAfile", s(&bundle), s(&revoked_pem)]);
    let report = String::from_utf8_lossy(&bad.stdout).into_owned() + &String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && report.contains("certificate revoked"), "{report}");
    openssl_ok(&["verify", "-crl_check_all", "-purpose", "sslclient", "-CAfile", s(&bundle), s(&good_pem)]);

    // CRL numbers only grow, and survive reopening the registry: the CA and its registry (its
    // ledger here) are closed, then opened again from the files on disk, before the second CRL
    // is signed. A number kept only in memory would start again at 1.
    let second = ca.path("ca2.crl");
    let TestCa { dir, data, ca: authority, registry, ca_pem, .. } = ca;
    drop(authority);
    drop(registry);
    inkan_tests::wait_until_registry_unlocked(&data.db());
    let registry = Arc::new(SledStore::open(&data.db()).unwrap());
    let (signer, der) =
        ca::ceremony::load_signer(&data.ca_key(), &data.ca_cert(), &Passphrase::new(CA_PASS.into())).unwrap();
    let reopened = CertificateAuthority::new(&der, signer, registry.clone(), inkan_tests::settings()).unwrap();
    let entries = ca::Registry::revoked_unexpired(registry.as_ref(), now).unwrap();
    let listed: Vec<String> = entries.iter().map(|e| e.serial.to_string()).collect();
    assert_eq!(listed, [revoked.record.serial.to_string()], "the revocation survives reopening");
    std::fs::write(&second, reopened.sign_crl_for(&entries, now, Duration::days(7), None).unwrap()).unwrap();
    openssl_ok(&["crl", "-inform", "DER", "-in", s(&second), "-noout", "-CAfile", s(&ca_pem), "-verify"]);
    let numbers: Vec<String> = [&crl, &second]
        .iter()
        .map(|p| openssl_ok(&["crl", "-inform", "DER", "-in", s(p), "-noout", "-crlnumber"]).trim().to_owned())
        .collect();
    assert_eq!(numbers, ["crlNumber=0x01", "crlNumber=0x02"]);
    drop(dir);
}

#[test]
fn certs_only_pkcs7_is_read_by_openssl() {
    let ca = TestCa::new(CaKeyType::EcdsaP256);
    let root =
        pki::encoding::decode_one(&std::fs::read(&ca.root_pem).unwrap(), "certificate", &["CERTIFICATE"]).unwrap();
    let p7 = ca.path("chain.p7b");
    std::fs::write(&p7, pki::encoding::pkcs7_certs_only([ca.ca.issuer().certificate_der(), root.as_slice()])).unwrap();
    let out = openssl_ok(&["pkcs7", "-inform", "DER", "-in", s(&p7), "-print_certs", "-noout"]);
    assert!(out.contains("CN = inkan test Issuing CA") && out.contains("CN = inkan test Root CA"), "{out}");
}

/// The signer's side of CRL shards: a shard lists only its own part; an entry of another
/// part, a shard that does not exist, or a CA without a CRL URL is refused with a reason, and
/// nothing is signed (the CRL number does not move).
#[test]
fn a_crl_shard_refuses_what_is_not_its_part() {
    let ca = TestCa::new(CaKeyType::EcdsaP256);
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let entries: Vec<pki::RevokedEntry> = (1u8..=40)
        .map(|i| pki::RevokedEntry {
            serial: pki::Serial::from_random([i; 16]).unwrap(),
            revoked_at: now,
            reason: pki::RevocationReason::KeyCompromise,
        })
        .collect();
    let shard = |index| pki::crl::Shard { count: 4, index };
    let part: Vec<_> = entries.iter().filter(|e| pki::crl::Shard::of(&e.serial, 4) == shard(2)).cloned().collect();
    assert!(!part.is_empty() && part.len() < entries.len());
    let crl = ca.path("part.crl");
    std::fs::write(&crl, ca.ca.sign_crl_for(&part, now, Duration::days(1), Some(shard(2))).unwrap()).unwrap();
    let text = openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]);
    assert!(text.contains("URI:http://127.0.0.1:8080/crl/ca-4-2.crl"), "{text}");
    assert_eq!(text.matches("Serial Number:").count(), part.len());
    let number = openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-crlnumber"]);

    let refused = |entries: &[pki::RevokedEntry], which| {
        let error = ca.ca.sign_crl_for(entries, now, Duration::days(1), Some(which)).expect_err("refused").to_string();
        assert!(error.starts_with("CRL shard refused"), "{error}");
        error
    };
    assert!(refused(&entries, shard(2)).contains("belongs to shard"));
    assert!(refused(&part, shard(4)).contains("does not exist"));
    assert!(refused(&part, pki::crl::Shard { count: 1, index: 0 }).contains("does not exist"));
    assert!(refused(&part, pki::crl::Shard { count: 2000, index: 0 }).contains("does not exist"));
    // Nothing was signed: the next CRL has the next number.
    std::fs::write(&crl, ca.ca.sign_crl_for(&[], now, Duration::days(1), None).unwrap()).unwrap();
    let next = openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-crlnumber"]);
    let parse = |line: &str| u64::from_str_radix(line.trim().trim_start_matches("crlNumber=0x"), 16).unwrap();
    assert_eq!(parse(&next), parse(&number) + 1);
}
