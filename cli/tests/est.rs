//! EST (RFC 7030) judged by clients inkan did not write: curl with openssl as the client and
//! the judge, and strongSwan's `pki --est` / `pki --estca` (enroll with Basic, re-enroll with
//! its certificate, poll while the CA is away).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    NONE, Reply, Service, TestCa, WRONG, between, openssl, openssl_serial, read, s, start_signer, user_password, write,
};

/// The URL of an EST operation (`cacerts`, `LABEL/simpleenroll`, ...).
fn est(server: &Service, op: &str) -> String {
    format!("https://localhost:{}/.well-known/est/{op}", server.est)
}

/// A P-256 key and its CSR from openssl; returns the key file and the CSR as EST sends it:
/// base64 DER, in lines of 64 characters.
fn est_csr(work: &Path, name: &str) -> (PathBuf, String) {
    est_csr_with(work, name, &[])
}

/// [`est_csr`] with more `openssl req` arguments (`-addext subjectAltName=...`).
fn est_csr_with(work: &Path, name: &str, extra: &[&str]) -> (PathBuf, String) {
    let key = work.join(format!("{name}.key"));
    let csr = work.join(format!("{name}.csr.der"));
    let subject = format!("/CN={name}");
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&key),
        "-subj",
        &subject,
        "-outform",
        "DER",
        "-out",
        s(&csr),
    ];
    args.extend_from_slice(extra);
    openssl(args).ok();
    let der = std::fs::read(&csr).expect("the CSR");
    (key, pki::encoding::base64_lines(&der))
}

/// The certificates of a certs-only answer, as openssl reads them: the PEM file written and
/// the DER of each.
#[track_caller]
fn certs_of(work: &Path, name: &str, reply: &Reply) -> (PathBuf, Vec<Vec<u8>>) {
    reply.expect(200);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert_eq!(content_type, "application/pkcs7-mime; smime-type=certs-only", "{}", reply.headers);
    assert!(reply.header("content-transfer-encoding").is_none(), "RFC 8951: no Content-Transfer-Encoding");
    let der = pki::encoding::base64_decode(&reply.text()).expect("a base64 body");
    let p7 = work.join(format!("{name}.p7b"));
    let pem = work.join(format!("{name}.pem"));
    write(&p7, &der);
    openssl(["pkcs7", "-inform", "DER", "-in", s(&p7), "-print_certs", "-out", s(&pem)]).ok();
    let certs = pem::parse_many(read(&pem)).expect("PEM").into_iter().map(pem::Pem::into_contents).collect();
    (pem, certs)
}

/// The DER inside the (single) PEM block of `path`.
fn der_of_pem(path: &Path) -> Vec<u8> {
    pem::parse(read(path)).expect("PEM").into_contents()
}

fn post_csr(server: &Service, op: &str, csr: &str, extra: &[String]) -> Reply {
    server.post(&est(server, op), "application/pkcs10", csr.as_bytes(), extra)
}

fn basic(login_id: &str, password: &str) -> Vec<String> {
    vec!["-u".into(), format!("{login_id}:{password}")]
}

fn with_certificate(cert: &Path, key: &Path) -> Vec<String> {
    vec!["--cert".into(), s(cert).into(), "--key".into(), s(key).into()]
}

/// The status of each of an account's certificates, by serial.
fn statuses(ca: &TestCa, account: &str) -> std::collections::BTreeMap<String, String> {
    ca.list(&["--account", account])
        .iter()
        .map(|c| (c["serial"].as_str().unwrap_or("").to_owned(), c["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// A CA whose service runs watched, with these master users.
fn watched_with_masters(accounts: &[&str]) -> (TestCa, Service) {
    let ca = TestCa::with_rate_limit(1000);
    for account in accounts {
        ca.add_user(account, "master", None);
    }
    let server = Service::watched(&ca, &[]);
    (ca, server)
}

/// cacerts, csrattrs, simpleenroll with Basic, simplereenroll with the certificate, and bad
/// input of every kind (nothing recorded for any), with curl as the client and openssl judging.
#[test]
fn est_with_curl_and_openssl() {
    let (ca, server) = watched_with_masters(&["machine1", "machine2"]);
    let work = ca.work();

    // cacerts: the issuing CA and the root, byte for byte.
    let (_, cacerts) = certs_of(work, "cacerts", &server.curl(&est(&server, "cacerts"), NONE));
    let mut expected = vec![der_of_pem(&ca.ca_crt()), der_of_pem(&ca.root_crt())];
    let mut got = cacerts.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "cacerts holds the issuing CA and the root");

    // csrattrs: a DER CsrAttrs openssl reads: a P-256 key, signed with SHA-256.
    let attrs = server.curl(&est(&server, "csrattrs"), NONE);
    attrs.expect(200);
    assert_eq!(attrs.header("content-type").as_deref(), Some("application/csrattrs"));
    let attrs_der = work.join("csrattrs.der");
    write(&attrs_der, pki::encoding::base64_decode(&attrs.text()).expect("base64"));
    let parsed = openssl(["asn1parse", "-inform", "DER", "-in", s(&attrs_der)]).ok().stdout;
    for name in ["id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256"] {
        assert!(parsed.contains(name), "{parsed}");
    }

    // Bad input: each refused with a 4xx and a reason, nothing recorded.
    let before = ca.list_text();
    let (key1, csr1) = est_csr(work, "machine1");
    let password = user_password("machine1");
    let refusals: Vec<(&str, Reply, u16, &str)> = vec![
        ("no credentials", post_csr(&server, "simpleenroll", &csr1, &[]), 401, "HTTP Basic"),
        ("a wrong password", post_csr(&server, "simpleenroll", &csr1, &basic("machine1", WRONG)), 401, "not correct"),
        ("an unknown ID", post_csr(&server, "simpleenroll", &csr1, &basic("nobody-here", WRONG)), 401, "not correct"),
        (
            "a body that is not base64",
            post_csr(&server, "simpleenroll", "this is *not* base64!", &basic("machine1", &password)),
            400,
            "not base64",
        ),
        (
            "base64 that is no CSR",
            post_csr(&server, "simpleenroll", "AAECAwQFBgcICQ==", &basic("machine1", &password)),
            422,
            "CSR",
        ),
        (
            "a CSR sent as text/plain",
            server.post(&est(&server, "simpleenroll"), "text/plain", csr1.as_bytes(), &basic("machine1", &password)),
            400,
            "application/pkcs10",
        ),
        (
            "a 100 KB body",
            post_csr(&server, "simpleenroll", &"A".repeat(100 * 1024), &basic("machine1", &password)),
            413,
            "",
        ),
        (
            "simplereenroll without a certificate",
            post_csr(&server, "simplereenroll", &csr1, &[]),
            403,
            "current certificate",
        ),
        ("serverkeygen", post_csr(&server, "serverkeygen", &csr1, &basic("machine1", &password)), 501, "never leaves"),
        ("GET simpleenroll", server.curl(&est(&server, "simpleenroll"), NONE), 405, "takes POST"),
        ("an unknown label", server.curl(&est(&server, "nolabel/cacerts"), NONE), 404, "no EST label"),
        ("an unknown operation", server.curl(&est(&server, "fullcmc"), NONE), 404, "no EST operation"),
    ];
    for (what, reply, status, reason) in &refusals {
        assert_eq!(reply.status, *status, "{what}: {}\n{}", reply.what, reply.text());
        assert!(reply.text().contains(reason), "{what}: {:?}", reply.text());
        if *status == 401 {
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Basic realm="), "{what}: {}", reply.headers);
        }
    }
    assert_eq!(ca.list_text(), before, "nothing was recorded by the refused requests");

    // simpleenroll: a client certificate for the account, judged by openssl.
    let reply = post_csr(&server, "simpleenroll", &csr1, &basic("machine1", &password));
    let (cert1, issued) = certs_of(work, "machine1-cert", &reply);
    assert_eq!(issued.len(), 1, "the certificate alone");
    ca.openssl_verify(&cert1, &["-purpose", "sslclient"]).ok();
    let subject = openssl(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", s(&cert1)]).ok().stdout;
    assert!(subject.contains("CN=machine1"), "{subject}");
    let serial1 = openssl_serial(&cert1);
    assert_eq!(statuses(&ca, "machine1"), [(serial1.clone(), "valid".to_owned())].into());

    // A second simpleenroll while it is valid: refused, as on the web.
    let (_, csr_again) = est_csr(work, "machine1-again");
    let again = post_csr(&server, "simpleenroll", &csr_again, &basic("machine1", &password));
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.text().contains("valid certificate"), "{}", again.text());

    // simplereenroll with the certificate in the handshake: a new one, the old superseded.
    let (key2, csr2) = est_csr(work, "machine1-renewed");
    let renewed = post_csr(&server, "simplereenroll", &csr2, &with_certificate(&cert1, &key1));
    let (cert2, _) = certs_of(work, "machine1-renewed-cert", &renewed);
    ca.openssl_verify(&cert2, &["-purpose", "sslclient"]).ok();
    let serial2 = openssl_serial(&cert2);
    let after = statuses(&ca, "machine1");
    assert_eq!(after, [(serial1, "superseded".to_owned()), (serial2, "valid".to_owned())].into());
    // The old certificate re-enrolls no more; the new one does.
    let (_, csr3) = est_csr(work, "machine1-third");
    let stale = post_csr(&server, "simplereenroll", &csr3, &with_certificate(&cert1, &key1));
    assert_eq!(stale.status, 403, "{}", stale.text());
    assert!(stale.text().contains("replaced"), "{}", stale.text());
    assert_eq!(statuses(&ca, "machine1"), after, "nothing recorded for the stale certificate");
    certs_of(
        work,
        "machine1-third-cert",
        &post_csr(&server, "simplereenroll", &csr3, &with_certificate(&cert2, &key2)),
    );

    // The lockout counts: five wrong passwords lock machine2; then the right one is told so.
    let (_, csr_m2) = est_csr(work, "machine2");
    for attempt in 1..=5 {
        let reply = post_csr(&server, "simpleenroll", &csr_m2, &basic("machine2", WRONG));
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.text());
    }
    let locked = post_csr(&server, "simpleenroll", &csr_m2, &basic("machine2", &user_password("machine2")));
    assert_eq!(locked.status, 403, "{}", locked.text());
    assert!(locked.text().contains("locked"), "{}", locked.text());
    assert!(ca.list(&["--account", "machine2"]).is_empty());
    server.stop();
}

/// strongSwan's `pki` against EST: the CA certificates, enrollment with Basic, re-enrollment
/// with its certificate, and an enrollment that polls on 202 while the signer is down and
/// gets its certificate once the signer is back.
#[test]
fn est_with_strongswan_pki() {
    let ca = TestCa::with_rate_limit(1000);
    for account in ["vpn-gw", "vpn-gw2", "vpn-gw3"] {
        ca.add_user(account, "master", None);
    }
    let work = ca.work();
    let socket = work.join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let server = Service::start_with(&ca.data, &ca, &["--signer-socket", s(&socket)], &[]);
    let url = format!("https://localhost:{}", server.est);
    let root = ca.root_crt();

    // pki --estca: the chain, verified by strongSwan up to the root it was given.
    let caout = work.join("estca.pem");
    let estca = strongswan(&["--estca", "--url", &url, "--cacert", s(&root), "--caout", s(&caout), "--outform", "pem"]);
    assert!(estca.contains("written to"), "{estca}");
    let written: Vec<PathBuf> = std::fs::read_dir(work)
        .expect("work dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("estca")))
        .collect();
    let mut got: Vec<Vec<u8>> = written.iter().map(|p| der_of_pem(p)).collect();
    let mut expected = vec![der_of_pem(&ca.ca_crt()), der_of_pem(&root)];
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{written:?}");
    let issuing = ca.ca_crt();
    let trust = ["--cacert", s(&root), "--cacert", s(&issuing)];

    // Enroll with Basic, then re-enroll with the certificate and a new key.
    let key = strongswan_key(work, "gw");
    let request = strongswan_req(work, "gw", &key, "vpn-gw");
    let cert = work.join("gw.crt");
    let userpass = format!("vpn-gw:{}", user_password("vpn-gw"));
    let args = ["--est", "--url", &url, "--in", s(&request), "--userpass", &userpass, "--outform", "pem"];
    let out = strongswan_to(&args.iter().chain(&trust).copied().collect::<Vec<_>>(), &cert);
    assert!(out.contains("Issued certificate is trusted"), "{out}");
    ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    let new_key = strongswan_key(work, "gw-new");
    let renewal = strongswan_req(work, "gw-new", &new_key, "vpn-gw");
    let renewed = work.join("gw-new.crt");
    let args = ["--est", "--url", &url, "--in", s(&renewal), "--cert", s(&cert), "--key", s(&key), "--outform", "pem"];
    let out = strongswan_to(&args.iter().chain(&trust).copied().collect::<Vec<_>>(), &renewed);
    assert!(out.contains("Issued certificate is trusted"), "{out}");
    let statuses: Vec<String> = ca.list(&["--account", "vpn-gw"]).iter().map(|c| c["status"].to_string()).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "\"superseded\"").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "\"valid\"").count(), 1, "{statuses:?}");

    // The signer is down: the service answers 202 with Retry-After, pki polls, and gets its
    // certificate once the signer is back.
    signer.signal("KILL");
    assert!(signer.wait_exit(Duration::from_secs(10)).is_some(), "the signer is dead");
    let key2 = strongswan_key(work, "gw2");
    let request2 = strongswan_req(work, "gw2", &key2, "vpn-gw2");
    let cert2 = work.join("gw2.crt");
    let userpass2 = format!("vpn-gw2:{}", user_password("vpn-gw2"));
    let mut polling = Command::new("pki");
    polling
        .args(["--est", "--url", &url, "--in", s(&request2), "--userpass", &userpass2, "--outform", "pem"])
        .args(trust)
        .args(["--interval", "1", "--maxpolltime", "60"])
        .stdout(std::fs::File::create(&cert2).expect("gw2.crt"))
        .stderr(std::fs::File::create(work.join("gw2.log")).expect("gw2.log"));
    let mut child = polling.spawn().expect("pki --est");
    let deadline = Instant::now() + Duration::from_secs(30);
    // strongSwan says "EST request pending" on a 202.
    while !read(&work.join("gw2.log")).contains("EST request pending") {
        assert!(Instant::now() < deadline, "pki never saw a 202:\n{}", read(&work.join("gw2.log")));
        assert!(child.try_wait().expect("pki").is_none(), "pki ended:\n{}", read(&work.join("gw2.log")));
        std::thread::sleep(Duration::from_millis(100));
    }
    // inkan est, told to wait 2 s: exit 75 (try later), no file written.
    let pass = work.join("gw3.pass");
    write(&pass, user_password("vpn-gw3"));
    let (key3, cert3) = (work.join("gw3.key"), work.join("gw3.pem"));
    let later = est_enroll(&url, &root, "vpn-gw3", ("--password-file", &pass), (&key3, &cert3), &["--wait", "2s"]);
    assert_eq!(later.status.code(), Some(75), "{}\n{}", later.stdout, later.stderr);
    assert!(later.stderr.contains("still unavailable"), "{}", later.stderr);
    assert!(!key3.exists() && !cert3.exists());
    let mut signer = start_signer(&ca.data, &socket);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("pki") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pki still polling:\n{}", read(&work.join("gw2.log")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = read(&work.join("gw2.log"));
    assert!(status.success(), "pki failed:\n{log}");
    assert!(log.contains("Issued certificate is trusted"), "{log}");
    ca.openssl_verify(&cert2, &["-purpose", "sslclient"]).ok();
    assert_eq!(ca.list(&["--account", "vpn-gw2"]).len(), 1, "one certificate for the polled enrollment");
    server.stop();
    signer.stop(common::STOP_WITHIN);
}

/// `inkan est ARGS` (no data directory: it is a client).
fn est_client(args: &[&str]) -> common::Out {
    common::inkan(["est"].iter().chain(args), &[])
}

/// `inkan est enroll` for `user` with a secret (`--password-file` or `--token-file`) into
/// (key, certificate).
fn est_enroll(
    url: &str,
    root: &Path,
    user: &str,
    secret: (&str, &Path),
    out: (&Path, &Path),
    extra: &[&str],
) -> common::Out {
    let args = ["enroll", "--server", url, "--ca-file", s(root), "--user", user, secret.0, s(secret.1)];
    let files = ["--key-out", s(out.0), "--cert-out", s(out.1)];
    est_client(&args.iter().chain(&files).chain(extra).copied().collect::<Vec<_>>())
}

/// The SubjectPublicKeyInfo of a certificate's first block and of a key, as openssl prints them.
fn same_key(cert: &Path, key: &Path) -> bool {
    let of_cert = openssl(["x509", "-in", s(cert), "-noout", "-pubkey"]).ok().stdout;
    let of_key = openssl(["pkey", "-in", s(key), "-pubout"]);
    assert!(of_key.status.success(), "{}:\n{}\n{}", key.display(), read(key), of_key.stderr);
    let of_key = of_key.stdout;
    of_cert == of_key
}

/// `inkan est enroll` and `inkan est renew` against a running service: the files, their modes,
/// the certificate openssl verifies and the login listener accepts, renewal only within the
/// window, a new key on request, RSA keys, and refusals that leave no file behind.
#[test]
fn inkan_est_enrolls_and_renews() {
    let (ca, server) = watched_with_masters(&["host1", "host2"]);
    let work = ca.work();
    let url = format!("https://localhost:{}", server.est);
    let root = ca.root_crt();
    let (key, cert) = (work.join("host1.key"), work.join("host1.pem"));
    let password = work.join("host1.pass");
    write(&password, format!("{}\n", user_password("host1")));
    let base = ["--server", &url, "--ca-file", s(&root)];

    // A wrong password: refused, exit 1, no file written.
    let wrong = work.join("wrong.pass");
    write(&wrong, format!("{WRONG}\n"));
    let enroll = |user: &str, pass: &Path, key: &Path, cert: &Path, extra: &[&str]| {
        est_enroll(&url, &root, user, ("--password-file", pass), (key, cert), extra)
    };
    enroll("host1", &wrong, &key, &cert, &[]).refused("refused (401)");
    assert!(!key.exists() && !cert.exists(), "nothing written for a refusal");

    let done = enroll("host1", &password, &key, &cert, &[]).ok();
    assert!(done.stdout.contains("Enrolled host1"), "{}", done.stdout);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is the owner's alone");
    ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    assert!(same_key(&cert, &key));
    let blocks = pem::parse_many(read(&cert)).expect("PEM");
    assert_eq!(blocks.len(), 2, "the certificate, then its issuing CA");
    assert_eq!(blocks[1].contents(), der_of_pem(&ca.ca_crt()));
    // The login listener takes it in the TLS handshake: no session yet, but not "no certificate".
    let me = server.curl(&server.login_url("/api/v1/me"), &["--cert", s(&cert), "--key", s(&key)].map(str::to_owned));
    assert_eq!(me.status, 401, "{}", me.text());
    assert!(me.text().contains("login_required"), "{}", me.text());
    enroll("host1", &password, &key, &cert, &[]).refused("exists");

    // Renew outside the window: nothing to do, the files untouched.
    let before = (read(&key), read(&cert));
    let renew = |extra: &[&str]| {
        let args = ["renew", "--cert", s(&cert), "--key", s(&key)];
        est_client(&args.iter().chain(&base).chain(extra).copied().collect::<Vec<_>>())
    };
    let idle = renew(&["--renew-within", "30d"]).ok();
    assert!(idle.stdout.contains("days left") && idle.stdout.contains("Nothing to do"), "{}", idle.stdout);
    assert_eq!((read(&key), read(&cert)), before);

    // Within the window: a new certificate for the same key; the old one superseded.
    let old_serial = openssl_serial(&cert);
    let renewed = renew(&["--renew-within", "400d"]).ok();
    assert!(renewed.stdout.contains("Renewed"), "{}", renewed.stdout);
    let new_serial = openssl_serial(&cert);
    assert_ne!(new_serial, old_serial);
    assert_eq!(read(&key), before.0, "the key is kept");
    ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    assert_eq!(
        statuses(&ca, "host1"),
        [(old_serial, "superseded".to_owned()), (new_serial.clone(), "valid".to_owned())].into()
    );

    // --new-key: an Ed25519 key replaces the P-256 one, and the certificate certifies it.
    renew(&["--renew-within", "400d", "--new-key", "--key-type", "ed25519"]).ok();
    assert_ne!(read(&key), before.0);
    assert!(same_key(&cert, &key), "the new certificate certifies the new key");
    let text = openssl(["x509", "-in", s(&cert), "-noout", "-text"]).ok().stdout;
    assert!(text.contains("ED25519"), "{text}");
    assert_eq!(statuses(&ca, "host1").values().filter(|s| *s == "valid").count(), 1);

    // RSA-3072 keys.
    let (key2, cert2) = (work.join("host2.key"), work.join("host2.pem"));
    let password2 = work.join("host2.pass");
    write(&password2, user_password("host2"));
    enroll("host2", &password2, &key2, &cert2, &["--key-type", "rsa-3072"]).ok();
    let text = openssl(["x509", "-in", s(&cert2), "-noout", "-text"]).ok().stdout;
    assert!(text.contains("Public-Key: (3072 bit)"), "{text}");
    ca.openssl_verify(&cert2, &["-purpose", "sslclient"]).ok();
    server.stop();
}

/// One-time enrollment tokens: made by the operator while the service runs, printed once,
/// good for one simpleenroll of their own account, kept through a refused CSR, refused once
/// used or expired; never in the log or the audit trail.
#[test]
fn enrollment_tokens_work_once() {
    let (ca, server) = watched_with_masters(&["host3", "host4"]);
    let work = ca.work();
    let made = ca.inkan(["token", "create", "--account", "host3", "--ttl", "1h"]).ok();
    assert!(made.stderr.contains("shown once"), "{}", made.stderr);
    let token = made.stdout.trim().to_owned();
    assert!(token.starts_with("inkan-est-") && token.len() == "inkan-est-".len() + 64, "{token}");
    server.secret(&token);
    ca.inkan(["token", "create", "--account", "nobody-here"]).refused("no account");
    ca.inkan(["token", "create", "--account", "host3", "--ttl", "31d"]).refused("30 days");
    let before = ca.list_text();

    let (_, csr) = est_csr(work, "host3");
    // Another account's login ID with it: refused, and the token is kept for its own.
    let other = post_csr(&server, "simpleenroll", &csr, &basic("host4", &token));
    assert_eq!(other.status, 401, "{}", other.text());
    // A CSR the CA refuses: nothing issued, the token is kept.
    let refused = post_csr(&server, "simpleenroll", "AAECAwQFBgcICQ==", &basic("host3", &token));
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(ca.list_text(), before, "nothing recorded");

    // inkan est enroll with the token: enrolled; the token is spent.
    let token_file = work.join("host3.token");
    write(&token_file, format!("{token}\n"));
    let url = format!("https://localhost:{}", server.est);
    let (key, cert, root) = (work.join("host3-est.key"), work.join("host3-est.pem"), ca.root_crt());
    est_enroll(&url, &root, "host3", ("--token-file", &token_file), (&key, &cert), &[]).ok();
    ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    let (_, csr4) = est_csr(work, "host4");
    let again = post_csr(&server, "simpleenroll", &csr4, &basic("host3", &token));
    assert_eq!(again.status, 401, "a used token: {}", again.text());

    // An expired token.
    let short = ca.inkan(["token", "create", "--account", "host4", "--ttl", "1s"]).ok().stdout.trim().to_owned();
    server.secret(&short);
    std::thread::sleep(Duration::from_millis(1500));
    let expired = post_csr(&server, "simpleenroll", &csr4, &basic("host4", &short));
    assert_eq!(expired.status, 401, "an expired token: {}", expired.text());
    assert!(ca.list(&["--account", "host4"]).is_empty());

    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("est.token_created") && audit.contains("\"with\":\"token\""), "{audit}");
    assert!(!audit.contains(&token) && !audit.contains(&short), "a token in the audit trail");
    server.stop();
}

/// `pki ARGS` (strongSwan); its standard error (where it reports) on success.
#[track_caller]
fn strongswan(args: &[&str]) -> String {
    let out = common::run("pki", args, &[], None);
    assert!(out.status.success(), "pki {args:?}:\n{}\n{}", out.stdout, out.stderr);
    out.stderr
}

/// `pki ARGS > out`; its standard error.
#[track_caller]
fn strongswan_to(args: &[&str], out: &Path) -> String {
    let output = Command::new("pki").args(args).output().expect("pki");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "pki {args:?}:\n{log}");
    write(out, &output.stdout);
    log
}

/// A P-256 key made by strongSwan.
fn strongswan_key(work: &Path, name: &str) -> PathBuf {
    let key = work.join(format!("{name}.key"));
    strongswan_to(&["--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"], &key);
    key
}

/// A CSR made by strongSwan for `key`.
fn strongswan_req(work: &Path, name: &str, key: &Path, cn: &str) -> PathBuf {
    let request = work.join(format!("{name}.req"));
    let dn = format!("CN={cn}");
    strongswan_to(&["--req", "--in", s(key), "--type", "priv", "--dn", &dn, "--outform", "der"], &request);
    request
}

/// Allowed-names policies: under a client-server label, a machine of an account with a policy
/// gets the names its CSR asks for when each is inside the policy (and inside `[ca]
/// server_names`, which the signer checks); a name outside is refused naming it and nothing is
/// recorded; an account without a policy is refused on that label; re-enrolling checks the
/// names again against the policy of the moment.
#[test]
fn allowed_names_decide_what_machines_get_certified() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[
        ("# hosts = \"client-server\"", "hosts = \"client-server\"\nweb = \"server\""),
        (
            "# server_names = [\"localhost\", \"127.0.0.1\", \"*.example.com\"]",
            "server_names = [\"localhost\", \"127.0.0.1\", \"*.example.com\", \"10.0.0.0/8\"]",
        ),
    ]);
    let work = ca.work();
    ca.add_user("fleet", "master", None);
    ca.add_user("plain", "master", None);
    // The operator's policy, checked entry by entry (nothing is set when one is wrong).
    ca.inkan(["user", "names", "--login-id", "fleet", "--allow", "a.example.com", "--allow", "10.0.0.1/8"])
        .refused("--allow 10.0.0.1/8");
    ca.inkan(["user", "names", "--login-id", "nobody-here", "--allow", "a.example.com"]).refused("nobody-here");
    let listed = ca.inkan(["user", "list", "--json"]).ok().stdout;
    assert!(!listed.contains("a.example.com"), "{listed}");
    ca.inkan([
        "user",
        "names",
        "--login-id",
        "fleet",
        "--allow",
        "*.lab.example.com",
        "--allow",
        "10.1.0.0/16",
        "--allow",
        "*.corp.test",
    ])
    .ok();
    let server = Service::watched(&ca, &[]);
    let fleet = basic("fleet", &user_password("fleet"));
    let before = ca.list_text();

    let refusals = [
        (
            "outside",
            "subjectAltName=DNS:a.lab.example.com,DNS:b.other.example.com",
            "fleet",
            403,
            "b.other.example.com is outside",
        ),
        ("network", "subjectAltName=IP:10.2.0.1", "fleet", 403, "10.2.0.1 is outside"),
        ("signer", "subjectAltName=DNS:x.corp.test", "fleet", 422, "x.corp.test is not a name this CA certifies"),
        ("nopolicy", "subjectAltName=DNS:a.lab.example.com", "plain", 403, "needs an allowed-names policy"),
        ("email", "subjectAltName=email:ops@lab.example.com", "fleet", 422, "only DNS names and IP addresses"),
    ];
    for (name, san, account, status, said) in refusals {
        let (_, csr) = est_csr_with(work, name, &["-addext", san]);
        let reply = post_csr(&server, "hosts/simpleenroll", &csr, &basic(account, &user_password(account)));
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        assert!(reply.text().contains(said), "{name}: {}", reply.text());
    }
    let (_, no_names) = est_csr(work, "nonames");
    let reply = post_csr(&server, "hosts/simpleenroll", &no_names, &fleet);
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("asks for no names"), "{}", reply.text());
    assert_eq!(ca.list_text(), before, "a refused name recorded something");

    // Inside the policy: certified as asked, for both purposes, and openssl agrees.
    let (key, csr) = est_csr_with(work, "host1", &["-addext", "subjectAltName=DNS:a.lab.example.com,IP:10.1.2.3"]);
    let (pem, certs) = certs_of(work, "host1", &post_csr(&server, "hosts/simpleenroll", &csr, &fleet));
    assert_eq!(certs.len(), 1);
    let text =
        openssl(["x509", "-in", s(&pem), "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage"]).ok().stdout;
    assert!(text.contains("CN = fleet"), "{text}");
    assert!(text.contains("DNS:a.lab.example.com, IP Address:10.1.2.3"), "{text}");
    assert!(text.contains("TLS Web Client Authentication, TLS Web Server Authentication"), "{text}");
    ca.openssl_verify(&pem, &["-purpose", "sslserver", "-verify_hostname", "a.lab.example.com"]).ok();
    ca.openssl_verify(&pem, &["-purpose", "sslserver", "-verify_ip", "10.1.2.3"]).ok();
    ca.openssl_verify(&pem, &["-purpose", "sslclient"]).ok();
    let listed = ca.list(&["--account", "fleet"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["profile"], "client-server", "{listed:?}");

    // The operator narrows the policy while the service runs (through the admin socket): a
    // re-enrollment is checked against the new one.
    ca.inkan(["user", "names", "--login-id", "fleet", "--allow", "10.1.0.0/16"]).ok();
    let (_, csr2) = est_csr_with(work, "host1b", &["-addext", "subjectAltName=DNS:a.lab.example.com"]);
    let reply = post_csr(&server, "hosts/simplereenroll", &csr2, &with_certificate(&pem, &key));
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("a.lab.example.com is outside"), "{}", reply.text());
    let (_, csr3) = est_csr_with(work, "host1c", &["-addext", "subjectAltName=IP:10.1.9.9"]);
    let (pem3, _) =
        certs_of(work, "host1c", &post_csr(&server, "hosts/simplereenroll", &csr3, &with_certificate(&pem, &key)));
    let text = openssl(["x509", "-in", s(&pem3), "-noout", "-ext", "subjectAltName"]).ok().stdout;
    assert!(text.contains("IP Address:10.1.9.9") && !text.contains("DNS:"), "{text}");
    let fleet_statuses = statuses(&ca, "fleet");
    assert_eq!(fleet_statuses.values().filter(|s| *s == "superseded").count(), 1, "{fleet_statuses:?}");
    // inkan est asks for names with --san under the label, and renew asks for the same again.
    ca.add_user("fleet2", "master", None);
    ca.inkan(["user", "names", "--login-id", "fleet2", "--allow", "*.lab.example.com"]).ok();
    let pass = work.join("fleet2.pass");
    write(&pass, user_password("fleet2"));
    let url = format!("https://localhost:{}/.well-known/est/hosts", server.est);
    let (key2, cert2) = (work.join("fleet2.key"), work.join("fleet2.pem"));
    let outside = est_enroll(
        &url,
        &ca.root_crt(),
        "fleet2",
        ("--password-file", &pass),
        (&key2, &cert2),
        &["--san", "b.lab.example.com", "--san", "b.elsewhere.example.com"],
    );
    assert_eq!(outside.status.code(), Some(1), "{}", outside.stderr);
    assert!(outside.stderr.contains("b.elsewhere.example.com is outside"), "{}", outside.stderr);
    assert!(!key2.exists() && !cert2.exists());
    est_enroll(
        &url,
        &ca.root_crt(),
        "fleet2",
        ("--password-file", &pass),
        (&key2, &cert2),
        &["--san", "b.lab.example.com"],
    )
    .ok();
    ca.openssl_verify(&cert2, &["-purpose", "sslserver", "-verify_hostname", "b.lab.example.com"]).ok();
    est_client(&[
        "renew",
        "--server",
        &url,
        "--ca-file",
        s(&ca.root_crt()),
        "--cert",
        s(&cert2),
        "--key",
        s(&key2),
        "--renew-within",
        "400d",
    ])
    .ok();
    let text = openssl(["x509", "-in", s(&cert2), "-noout", "-ext", "subjectAltName"]).ok().stdout;
    assert!(text.contains("DNS:b.lab.example.com"), "the renewed certificate keeps its name: {text}");
    assert_eq!(statuses(&ca, "fleet2").values().filter(|s| *s == "superseded").count(), 1);
    ca.inkan(["user", "names", "--login-id", "fleet", "--clear"]).ok();
    let listed = ca.inkan(["user", "list"]).ok().stdout;
    assert!(listed.contains("ALLOWED NAMES"), "{listed}");
    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("user.allowed_names_set"), "{audit}");
    server.stop();
}

/// A master makes one-time enrollment tokens on the web, for itself and its general users
/// only, after its password (the API and the home page's form, which shows the token once);
/// a general user cannot; each token enrolls its own account once over EST.
#[test]
fn masters_make_enrollment_tokens_on_the_web() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    ca.add_user("clerk", "general", Some("boss"));
    ca.add_user("rival", "master", None);
    ca.add_user("rivals-clerk", "general", Some("rival"));
    let server = Service::watched(&ca, &[]);
    let work = ca.work();
    let boss = server.acquire("boss", "boss").client();
    let boss_pw = user_password("boss");
    server.login_api(&boss, &boss_pw).expect(200);
    let before = ca.list_text();

    let api = |client: &common::Client, who: &str, body: serde_json::Value| {
        server.login_post(client, &format!("/api/v1/users/{who}/tokens"), &body)
    };
    api(&boss, "clerk", serde_json::json!({ "password": WRONG })).expect_error(401, "invalid_credentials");
    api(&boss, "rivals-clerk", serde_json::json!({ "password": boss_pw })).expect_error(404, "not_found");
    api(&boss, "rival", serde_json::json!({ "password": boss_pw })).expect_error(404, "not_found");
    api(&boss, "clerk", serde_json::json!({ "password": boss_pw, "ttl_secs": 31 * 86_400 }))
        .expect_error(400, "invalid_request");
    assert_eq!(ca.list_text(), before);

    // The API: a token for clerk, answered once.
    let made = api(&boss, "clerk", serde_json::json!({ "password": boss_pw, "ttl_secs": 3600 }));
    made.expect(201);
    let token = made.json()["token"].as_str().expect("token").to_owned();
    server.secret(&token);
    assert!(token.starts_with("inkan-est-"), "{token}");
    assert_eq!(made.json()["login_id"], "clerk");

    // It enrolls clerk over EST, once.
    let (clerk_key, csr) = est_csr(work, "clerk");
    let (clerk_pem, _) = certs_of(work, "clerk", &post_csr(&server, "simpleenroll", &csr, &basic("clerk", &token)));
    let again = post_csr(&server, "simpleenroll", &csr, &basic("clerk", &token));
    assert_eq!(again.status, 401, "{}", again.text());

    // A general user, even with a session, makes none.
    let clerk = common::Client::pem(&clerk_pem, &clerk_key, &work.join("clerk.jar"));
    server.login_api(&clerk, &user_password("clerk")).expect(200);
    api(&clerk, "clerk", serde_json::json!({ "password": user_password("clerk") })).expect_error(403, "master_only");

    // The home page's form: the token is shown once on a page of its own, not cached.
    let home = server.login_get(&boss, "/home?lang=en");
    home.expect(200);
    assert!(home.text().contains("data-testid=\"token-form\""), "{}", home.text());
    let home_ja = server.login_get(&boss, "/home?lang=ja");
    assert!(home_ja.text().contains("機器登録用ワンタイムトークン"), "{}", home_ja.text());
    let csrf = between(&home.text(), "name=\"csrf\" value=\"", "\"");
    let fields = format!("csrf={csrf}&login_id=boss&ttl=3600&password={boss_pw}");
    let page = server.post(
        &server.login_url("/tokens?lang=en"),
        "application/x-www-form-urlencoded",
        fields.as_bytes(),
        &boss.args,
    );
    page.expect(200);
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"), "{}", page.headers);
    let shown = between(&page.text(), "data-testid=\"token\">", "<");
    server.secret(&shown);
    assert!(shown.starts_with("inkan-est-") && shown != token, "{shown}");
    assert!(page.text().contains("shown once"), "{}", page.text());
    // A wrong password on the form: the error page, no token.
    let fields = format!("csrf={csrf}&login_id=boss&ttl=3600&password={WRONG}");
    let refused = server.post(
        &server.login_url("/tokens?lang=en"),
        "application/x-www-form-urlencoded",
        fields.as_bytes(),
        &boss.args,
    );
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(!refused.text().contains("inkan-est-"), "{}", refused.text());

    let (_, boss_csr) = est_csr(work, "boss-machine");
    // boss already has a valid certificate outside its renewal window: the CA says so, and the
    // token is kept for when it may be used.
    let early = post_csr(&server, "simpleenroll", &boss_csr, &basic("boss", &shown));
    assert_eq!(early.status, 409, "{}", early.text());
    let serial = ca.list(&["--account", "boss"])[0]["serial"].as_str().expect("serial").to_owned();
    ca.inkan(["revoke", &serial, "--reason", "superseded"]).ok();
    certs_of(work, "boss-machine", &post_csr(&server, "simpleenroll", &boss_csr, &basic("boss", &shown)));
    let audit = read(&ca.file("audit/audit.log"));
    assert_eq!(audit.matches("est.token_created").count(), 2, "{audit}");
    assert!(audit.contains("\"by\":\"boss\""), "{audit}");
    assert!(!audit.contains(&token) && !audit.contains(&shown), "a token in the audit trail");
    server.stop();
}
