//! Hardening (issue 11), tried as a hostile outsider would: no account enumeration through the
//! lock, CSRF tokens an attacker cannot choose and requests from other sites refused, one
//! issuance in flight per account, the stores' files private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Client, Service, TestCa, WRONG, between, p256_csr, read, user_password};
use serde_json::json;

/// After five wrong passwords, a real (now locked) ID and an unknown ID give the same status
/// and byte-identical bodies to a wrong password, on the API and on the page.
#[test]
fn a_locked_account_and_an_unknown_id_look_the_same_to_a_wrong_password() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("leah", "master", None);
    let server = Service::watched(&ca, &[]);
    for _ in 0..5 {
        server.enroll("leah", WRONG).expect_error(401, "invalid_credentials");
    }
    let locked = server.enroll("leah", WRONG);
    let unknown = server.enroll("nobody-at-all", WRONG);
    assert_eq!(
        (locked.status, &locked.body),
        (unknown.status, &unknown.body),
        "{} / {}",
        locked.text(),
        unknown.text()
    );
    locked.expect_error(401, "invalid_credentials");
    // Only the right password learns of the lock.
    server.enroll("leah", &user_password("leah")).expect_error(403, "account_locked");
    let listed = ca.inkan(["user", "list", "--json"]).ok();
    assert!(listed.stdout.contains("\"locked\": true"), "{}", listed.stdout);

    // The page says the same for both.
    let page = |login_id: &str| {
        let jar = ca.work().join(format!("{login_id}.jar"));
        let jar_args = ["-b", common::s(&jar), "-c", common::s(&jar)];
        let form = server.curl(&server.public_url("/cert/acquire?lang=en"), &jar_args);
        let csrf = between(&form.text(), "name=\"csrf\" value=\"", "\"");
        let fields = format!("csrf={csrf}&mode=acquire&login_id={login_id}&password={WRONG}");
        let reply = server.post(
            &server.public_url("/cert/acquire?lang=en"),
            "application/x-www-form-urlencoded",
            fields.as_bytes(),
            &jar_args,
        );
        (reply.status, between(&reply.text(), "data-testid=\"error\">", "<"))
    };
    assert_eq!(page("leah"), page("nobody-at-all"));
    assert_eq!(page("leah").0, 401);
    server.stop();
}

/// Forms: a token pair the attacker chose is refused, a request another site makes is refused
/// whatever it carries, logout needs the session's token, JSON must say it is JSON.
#[test]
fn csrf_tokens_cannot_be_chosen_and_other_sites_are_refused() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("olaf", "master", None);
    let server = Service::watched(&ca, &[]);
    let acquire = server.public_url("/cert/acquire");
    let form_type = "application/x-www-form-urlencoded";
    let fields = |csrf: &str| format!("csrf={csrf}&mode=acquire&login_id=olaf&password={}", user_password("olaf"));

    // A pair set equal in cookie and field, but not made by the server.
    let chosen = "ab".repeat(32);
    let cookie = format!("inkan_csrf={chosen}");
    server.post(&acquire, form_type, fields(&chosen).as_bytes(), &["--http1.1", "-b", &cookie]).expect(403);

    // A real pair, posted from another site: Origin, or Sec-Fetch-Site.
    let jar = ca.work().join("olaf.jar");
    // HTTP/1.1: curl 7.88 drops an HTTP/2 answer sent before the body is read (the refusal
    // is; see the bad-input test).
    let jar_args = ["--http1.1", "-b", common::s(&jar), "-c", common::s(&jar)];
    let form = server.curl(&acquire, &jar_args);
    let csrf = between(&form.text(), "name=\"csrf\" value=\"", "\"");
    let from = |header: &str| {
        let args = [&jar_args[..], &["-H", header]].concat();
        server.post(&acquire, form_type, fields(&csrf).as_bytes(), &args)
    };
    from("Origin: https://evil.example").expect_error(403, "csrf");
    from("Origin: null").expect_error(403, "csrf");
    from("Sec-Fetch-Site: cross-site").expect_error(403, "csrf");
    from("Sec-Fetch-Site: same-site").expect_error(403, "csrf");
    // The same pair from the page itself works (and the API refused nothing it should not).
    let own = format!("Origin: https://localhost:{}", server.public);
    from(&own).expect(200);

    // JSON sent as text/plain (what a cross-site form can send) is refused, nothing made.
    let body = json!({ "login_id": "olaf", "password": user_password("olaf") }).to_string();
    let plain = server.post(&server.public_url("/api/v1/enrollments"), "text/plain", body.as_bytes(), &["--http1.1"]);
    plain.expect_error(400, "invalid_json");

    // Logout without the session's token leaves the session alone.
    let olaf = server.acquire("olaf", "olaf");
    let client = olaf.client();
    server.login_api(&client, &user_password("olaf")).expect(200);
    let logout = server.post(&server.login_url("/logout"), form_type, b"csrf=", &client.args);
    logout.expect(403);
    server.me(&client).expect(200);
    let cross = [&client.args[..], &["--http1.1".to_owned(), "-H".to_owned(), "Sec-Fetch-Site: cross-site".to_owned()]]
        .concat();
    server.post(&server.login_url("/api/v1/users/olaf/unlock"), form_type, b"", &cross).expect_error(403, "csrf");
    // With it, the session ends.
    let home = server.login_get(&client, "/home");
    let token = between(&home.text(), "action=\"/logout?lang=ja\"><input type=\"hidden\" name=\"csrf\" value=\"", "\"");
    server.post(&server.login_url("/logout"), form_type, format!("csrf={token}").as_bytes(), &client.args).expect(303);
    server.me(&client).expect_error(401, "login_required");
    server.stop();
}

/// Eight tickets of one account sent at once while the signer is held: exactly one issuance is
/// in flight, the seven others are told so at once; released, the one is issued and the account
/// ends with one valid certificate.
#[test]
fn one_issuance_in_flight_per_account() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    ca.add_user("pete", "master", None);
    let server = Service::watched(&ca, &[]);
    let signer = server.signer_pid.expect("serve printed its signer's pid");
    let csr = read(&p256_csr(ca.work(), "pete"));
    let tickets: Vec<String> = (0..8).map(|_| server.ticket("pete")).collect();
    let body = ca.work().join("pete.json");
    common::write(&body, json!({ "csr_pem": csr }).to_string());
    // Held: whichever request claims its ticket first waits on the signer meanwhile.
    common::kill("STOP", signer);
    let (tx, answers) = std::sync::mpsc::channel::<(u16, String)>();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        for ticket in &tickets {
            let (url, body) = (server.public_url(&format!("/api/v1/enrollments/{ticket}/csr")), body.clone());
            let (root, tx) = (ca.root_crt(), tx.clone());
            s.spawn(move || {
                let out = std::process::Command::new("curl")
                    .args(["-sS", "--max-time", "60", "--cacert", common::s(&root), "-w", "\n%{http_code}"])
                    .args(["-H", "content-type: application/json", "--data-binary"])
                    .arg(format!("@{}", common::s(&body)))
                    .arg(url)
                    .output()
                    .expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
                let _ = tx.send((code.trim().parse().unwrap_or(0), body.to_owned()));
            });
        }
        let wait = std::time::Duration::from_secs(30);
        let mut got: Vec<(u16, String)> = (0..7).filter_map(|_| answers.recv_timeout(wait).ok()).collect();
        common::kill("CONT", signer);
        got.extend(answers.recv_timeout(wait).ok());
        got
    });
    let busy = answers.iter().filter(|(status, body)| *status == 409 && body.contains("issuance_in_progress")).count();
    assert_eq!(busy, 7, "seven answered at once while one waited on the signer: {answers:?}");
    assert_eq!(answers.len(), 8, "{answers:?}");
    assert_eq!(answers[7].0, 201, "the one in flight was issued once released: {answers:?}");
    let valid = ca.list(&["--account", "pete"]).iter().filter(|c| c["status"] == "valid").count();
    server.stop();
    assert_eq!(valid, 1);
}

/// Every secret and every store is the operator's alone: private keys and the files of the
/// stores 0600, every folder of the data directory 0700 (certificates, CRLs and the
/// configuration are public).
#[test]
fn the_stores_are_private() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("quin", "master", None);
    let server = Service::watched(&ca, &[]);
    server.acquire("quin", "quin");
    server.stop();
    fn walk(path: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
        let meta = std::fs::symlink_metadata(path).expect("metadata");
        out.push((path.to_owned(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir") {
                walk(&entry.expect("entry").path(), out);
            }
        }
    }
    let mut modes = Vec::new();
    walk(&ca.data, &mut modes);
    let stores = ["db", "web", "signer", "audit"].map(|store| ca.file(store));
    let private = |path: &Path| {
        path.extension().is_some_and(|e| e == "key") || stores.iter().any(|store| path.starts_with(store))
    };
    let open: Vec<_> = modes
        .iter()
        .filter(|(path, mode, dir)| (*dir || private(path)) && mode & 0o077 != 0)
        .map(|(path, mode, _)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
    let keys: Vec<_> = modes.iter().filter(|(path, _, _)| path.extension().is_some_and(|e| e == "key")).collect();
    for folder in ["root", "ca", "server", "ocsp"] {
        assert!(keys.iter().any(|(path, _, _)| path.starts_with(ca.file(folder))), "no key in {folder}/: {keys:?}");
    }
    assert!(modes.iter().filter(|(path, _, _)| stores.iter().any(|s| path.starts_with(s))).count() > 6, "{modes:?}");
}

/// The real pages still work in a browser is the browser test's part; here the page form
/// itself, posted as a browser posts it from the page (same origin), is accepted.
#[test]
fn the_page_form_from_its_own_origin_is_accepted() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("rita", "master", None);
    let server = Service::watched(&ca, &[]);
    let jar = ca.work().join("rita.jar");
    let anonymous = Client::anonymous(&jar);
    let form = server.curl(&server.public_url("/cert/acquire"), &anonymous.args);
    let csrf = between(&form.text(), "name=\"csrf\" value=\"", "\"");
    let fields = format!("csrf={csrf}&mode=acquire&login_id=rita&password={}", user_password("rita"));
    let mut args = anonymous.args.clone();
    args.extend(["-H".into(), "Sec-Fetch-Site: same-origin".into()]);
    let start =
        server.post(&server.public_url("/cert/acquire"), "application/x-www-form-urlencoded", fields.as_bytes(), &args);
    start.expect(200);
    assert!(start.text().contains("data-ticket=\""), "{}", start.text());
    server.stop();
}

/// A compromise reported after the certificate was revoked for another reason still follows
/// the key (on the operator's word): the key is blocked and the other certificates with it are
/// revoked, the first keeps its first revocation; reporting it again changes nothing.
#[test]
fn a_compromise_reported_after_revocation_still_blocks_the_key() {
    let ca = TestCa::with_rate_limit(1000);
    let work = ca.work();
    let shared = p256_csr(work, "shared");
    let (_, serial_a) = ca.issue_with_library(&shared, "acct-a", 90, "acct-a");
    let (_, serial_b) = ca.issue_with_library(&shared, "acct-b", 90, "acct-b");
    let statuses = || -> Vec<String> {
        ["acct-a", "acct-b"]
            .iter()
            .flat_map(|a| ca.list(&["--account", a]))
            .map(|c| format!("{} {} {}", c["account"], c["status"], c["revocation_reason"]))
            .collect()
    };

    ca.inkan(["revoke", &serial_a, "--reason", "cessationOfOperation"]).ok();
    // Revoking it again for a reason other than keyCompromise is refused and changes nothing.
    ca.inkan(["revoke", &serial_a, "--reason", "affiliationChanged"]).refused("cannot be revoked");
    assert_eq!(statuses(), ["\"acct-a\" \"revoked\" \"cessationOfOperation\"", "\"acct-b\" \"valid\" null"]);

    let reported = ca.inkan(["revoke", &serial_a, "--reason", "keyCompromise"]).ok();
    assert!(reported.stdout.contains("was revoked before"), "{}", reported.stdout);
    assert!(reported.stdout.contains(&format!("Revoked {serial_b}")), "{}", reported.stdout);
    assert!(!reported.stdout.contains(&format!("Revoked {serial_a}")), "{}", reported.stdout);
    assert!(reported.stdout.contains("The key is blocked"), "{}", reported.stdout);
    assert_eq!(
        statuses(),
        ["\"acct-a\" \"revoked\" \"cessationOfOperation\"", "\"acct-b\" \"revoked\" \"keyCompromise\""]
    );
    ca.inkan(["issue", "--csr", common::s(&shared), "--account", "acct-c"]).refused("reported compromised");

    let again = ca.inkan(["revoke", &serial_a, "--reason", "keyCompromise"]).ok();
    assert!(again.stdout.contains("already blocked"), "{}", again.stdout);
    assert!(!again.stdout.contains("Revoked "), "{}", again.stdout);
}

/// A compromised key follows the key: a key certified for one account is refused for another;
/// revoking one certificate as keyCompromise revokes every certificate with that key (OCSP and
/// the CRL say so) and blocks the key on every path.
#[test]
fn a_compromised_key_is_revoked_everywhere_and_never_certified_again() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("renewal_window_days = 30", "renewal_window_days = 400")]);
    let work = ca.work();
    let shared = p256_csr(work, "shared");
    // Two accounts with one key, as a registry from before this rule may hold them.
    let (cert_a, serial_a) = ca.issue_with_library(&shared, "acct-a", 90, "acct-a");
    let (cert_b, serial_b) = ca.issue_with_library(&shared, "acct-b", 90, "acct-b");
    for account in ["acct-a", "acct-c"] {
        ca.add_user(account, "master", None);
    }
    let server = Service::watched(&ca, &[]);
    let csr_pem = read(&shared);

    // The key is certified for other accounts: refused for acct-c, on the API and the CLI.
    let ticket = server.ticket("acct-c");
    let refused = server.send_csr(&ticket, &csr_pem);
    refused.expect_error(422, "csr_rejected");
    assert!(refused.message().contains("certified for another account"), "{}", refused.message());
    let cli = ca.inkan(["issue", "--csr", common::s(&shared), "--account", "acct-c"]).refused("another account");
    assert!(!cli.stdout.contains("BEGIN CERTIFICATE"));

    // keyCompromise on acct-a's certificate: acct-b's goes too, for the same reason.
    let revoked = ca.inkan(["revoke", &serial_a, "--reason", "keyCompromise"]).ok();
    assert!(revoked.stdout.contains(&serial_b), "{}", revoked.stdout);
    let statuses: Vec<String> = ["acct-a", "acct-b"]
        .iter()
        .flat_map(|a| ca.list(&["--account", a]))
        .map(|c| format!("{} {} {}", c["account"], c["status"], c["revocation_reason"]))
        .collect();
    assert_eq!(
        statuses,
        ["\"acct-a\" \"revoked\" \"keyCompromise\"", "\"acct-b\" \"revoked\" \"keyCompromise\""],
        "{statuses:?}"
    );
    let chain = work.join("chain.pem");
    common::write(&chain, read(&ca.ca_crt()) + &read(&ca.root_crt()));
    for cert in [&cert_a, &cert_b] {
        let out = common::openssl([
            "ocsp",
            "-issuer",
            common::s(&ca.ca_crt()),
            "-cert",
            common::s(cert),
            "-url",
            &server.http_url("/ocsp"),
            "-CAfile",
            common::s(&chain),
            "-resp_text",
        ])
        .ok();
        assert!(out.stdout.contains(": revoked") && out.stdout.contains("Reason: keyCompromise"), "{}", out.stdout);
    }
    // The CRL lists both (it is signed again within seconds of a revocation).
    let crl = work.join("ca.crl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = server.curl(&server.http_url("/crl/ca.crl"), common::NONE);
        common::write(&crl, &reply.body);
        let text = if reply.status == 200 {
            common::openssl(["crl", "-inform", "DER", "-in", common::s(&crl), "-noout", "-text"]).stdout
        } else {
            String::new()
        };
        if [&serial_a, &serial_b].iter().all(|s| text.contains(s.as_str())) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the CRL does not list both:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Never again, for anyone: acct-a (no valid certificate now) on the API, acct-c on the CLI.
    let ticket = server.ticket("acct-a");
    let refused = server.send_csr(&ticket, &csr_pem);
    refused.expect_error(422, "csr_rejected");
    assert!(refused.message().contains("reported compromised"), "{}", refused.message());
    ca.inkan(["issue", "--csr", common::s(&shared), "--account", "acct-c"]).refused("reported compromised");
    // A new key is fine.
    server.acquire("acct-a", "acct-a-new");
    server.stop();
    let audit = read(&ca.file("audit/audit.log"));
    assert_eq!(audit.matches("\"key.blocked\"").count(), 1, "one key.blocked line");
}
