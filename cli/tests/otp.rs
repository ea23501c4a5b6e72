//! One-time passwords with codes computed by oathtool (as an authenticator app computes them
//! from the otpauth URI), the QR code read back by zbarimg, and the rules of the manuals: a code
//! works once (also under 8 concurrent submissions), a stop after wrong codes lifted by the
//! master with its confirmation password or by the operator, revocation and its waiting time,
//! the app's provisioning with its activation password, and a contract that requires OTP.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, NONE, Service, TestCa, WRONG, read, s, user_password, write};
use serde_json::{Value, json};

/// The secret parameter of an otpauth URI.
fn secret_of(uri: &str) -> String {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
        .unwrap_or_else(|| panic!("no secret in {uri}"))
        .to_owned()
}

/// `oathtool --totp -b SECRET` at `offset` seconds from now (30-second steps, 6 digits).
fn oathtool(secret: &str, offset: i64) -> String {
    let when = format!("now {} {} sec", if offset < 0 { "-" } else { "+" }, offset.abs());
    let out = common::run("oathtool", ["--totp", "-b", secret, "-N", &when], &[], None);
    assert!(out.status.success(), "oathtool: {}", out.stderr);
    let code = out.stdout.trim().to_owned();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    code
}

/// Waits until the current 30-second step has at least 4 seconds left, so that a code computed
/// now is still current when the service checks it.
fn away_from_step_end() {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    if secs % 30 >= 26 {
        std::thread::sleep(Duration::from_secs(30 - secs % 30) + Duration::from_millis(200));
    }
}

/// Issues a token for a logged-in `client` and returns the answer (checked) and its secret.
fn issue(server: &Service, client: &Client, mail: &str) -> (Value, String) {
    let reply =
        server.login_post(client, "/api/v1/otp/tokens", &json!({ "mail": mail, "activation_password": "4321" }));
    reply.expect(201);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let body = reply.json();
    let uri = body["otpauth_uri"].as_str().expect("otpauth_uri").to_owned();
    let secret = secret_of(&uri);
    server.secret(&secret);
    (body, secret)
}

/// A logged-in session of `login_id` (its certificate obtained first): the client, and whether
/// the login asked for a code.
fn logged_in(server: &Service, login_id: &str) -> (Client, Value) {
    let client = server.acquire(login_id, login_id).client();
    let reply = server.login_api(&client, &user_password(login_id));
    reply.expect(200);
    (client, reply.json())
}

/// Logs `client` in again with its password (a new session).
fn relogin(server: &Service, client: &Client, login_id: &str) -> Value {
    let reply = server.login_api(client, &user_password(login_id));
    reply.expect(200);
    reply.json()
}

#[test]
fn totp_tokens_are_issued_verified_and_asked_at_login_with_codes_from_oathtool() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("max_failures = 5", "max_failures = 10")]);
    ca.add_user("boss", "master", None);
    ca.add_user("clerk", "general", Some("boss"));
    let server = Service::watched(&ca, &[]);
    let work = ca.work();

    let (boss, login) = logged_in(&server, "boss");
    assert_eq!(login["otp_required"], false, "no token yet: {login}");
    let (issued, secret) = issue(&server, &boss, "boss@example.jp");
    assert_eq!(issued["service_id"], "INKAN");
    assert!(issued["user_id"].as_str().is_some_and(|id| id.len() == 10), "{issued}");
    let uri = issued["otpauth_uri"].as_str().expect("uri").to_owned();
    assert!(uri.starts_with("otpauth://totp/INKAN:boss?secret="), "{uri}");
    assert!(secret.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "base32: {secret}");
    assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");

    // The QR code, rendered and read back by zbarimg, gives the same URI.
    let svg = work.join("qr.svg");
    let png = work.join("qr.png");
    write(&svg, issued["qr_svg"].as_str().expect("svg"));
    let rendered = common::run("rsvg-convert", ["-w", "400", "-b", "white", "-o", s(&png), s(&svg)], &[], None);
    assert!(rendered.status.success(), "rsvg-convert: {}", rendered.stderr);
    let scanned = common::run("zbarimg", ["--raw", "-q", s(&png)], &[], None);
    assert_eq!(scanned.stdout.trim(), uri, "zbarimg: {}", scanned.stderr);

    // Malformed codes are refused without counting; a wrong one counts.
    for bad in ["12a456", "12345", "1234567", ""] {
        server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": bad })).expect_error(401, "invalid_otp");
    }
    away_from_step_end();
    let current = oathtool(&secret, 0);
    let wrong = if current == "000000" { "111111" } else { "000000" };
    let refused = server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": wrong }));
    refused.expect_error(401, "invalid_otp");
    assert!(refused.message().contains("9 more wrong"), "{}", refused.message());
    // The first verification with the code of the step before (one step of skew is allowed).
    let first = oathtool(&secret, -30);
    server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": first })).expect(200);
    assert_eq!(server.me(&boss).json()["otp"]["state"], "active");
    // One token per login ID.
    server
        .login_post(&boss, "/api/v1/otp/tokens", &json!({ "mail": "b@example.jp", "activation_password": "1234" }))
        .expect_error(409, "exists");

    // Login now asks for a code; nothing else works until it is given.
    let login = relogin(&server, &boss, "boss");
    assert_eq!(login["otp_required"], true, "{login}");
    server.me(&boss).expect_error(401, "otp_required");
    server.login_get(&boss, "/home").expect(303);
    // A code from three steps ago is refused.
    server
        .login_post(&boss, "/api/v1/login/otp", &json!({ "code": oathtool(&secret, -90) }))
        .expect_error(401, "invalid_otp");
    // A body over the limit (64 KiB) is refused for its size.
    let huge = format!("{{\"code\":\"{}\"}}", "1".repeat(100 * 1024));
    let reply = server.post(&server.login_url("/api/v1/login/otp"), "application/json", huge.as_bytes(), &boss.args);
    assert_eq!(reply.status, 413, "{}", reply.text());
    // The code already used (that step is spent) is refused; the current one works.
    server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": first })).expect_error(401, "invalid_otp");
    away_from_step_end();
    let code = oathtool(&secret, 0);
    server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": code })).expect(200);
    server.me(&boss).expect(200);
    // The same code again, in a new login: refused (a code works once).
    relogin(&server, &boss, "boss");
    server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": code })).expect_error(401, "invalid_otp");

    // Eight concurrent submissions of one fresh code: exactly one succeeds (the others find
    // the step spent, or the login already finished).
    let (clerk, _) = logged_in(&server, "clerk");
    let (_, clerk_secret) = issue(&server, &clerk, "clerk@example.jp");
    away_from_step_end();
    server
        .login_post(&clerk, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&clerk_secret, -30) }))
        .expect(200);
    assert_eq!(relogin(&server, &clerk, "clerk")["otp_required"], true);
    away_from_step_end();
    let code = oathtool(&clerk_secret, 0);
    // Eight curl processes at once, in the one session (reading its cookie jar, not writing it).
    let mut session_args = clerk.args.clone();
    if let Some(at) = session_args.iter().position(|a| a == "-c") {
        session_args.drain(at..at + 2);
    }
    let statuses = server.race_json(&server.login_url("/api/v1/login/otp"), &json!({ "code": code }), &session_args, 8);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|&s| [200, 400, 401].contains(&s)), "{statuses:?}");
    server.me(&clerk).expect(200);

    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("otp.issued") && audit.contains("otp.accepted") && audit.contains("otp.wrong"));
    for secret in [&secret, &clerk_secret] {
        assert!(!audit.contains(secret.as_str()), "an OTP secret in the audit trail");
    }
    server.stop();
}

#[test]
fn wrong_codes_stop_otp_until_the_master_or_the_operator_lifts_it() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    ca.add_user("clerk", "general", Some("boss"));
    ca.add_user("rival", "master", None);
    ca.add_user("rivals-clerk", "general", Some("rival"));
    let server = Service::watched(&ca, &[]);

    // Both boss and clerk get tokens in use.
    let (boss, _) = logged_in(&server, "boss");
    let (_, boss_secret) = issue(&server, &boss, "boss@example.jp");
    away_from_step_end();
    server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&boss_secret, -30) })).expect(200);
    let (clerk, _) = logged_in(&server, "clerk");
    let (_, clerk_secret) = issue(&server, &clerk, "clerk@example.jp");
    server
        .login_post(&clerk, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&clerk_secret, -30) }))
        .expect(200);

    // Five wrong codes: OTP use stops, the half-finished login is dropped, and logging in
    // again is refused with the reason.
    relogin(&server, &clerk, "clerk");
    let right = oathtool(&clerk_secret, 0);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    for attempt in 1..=4 {
        let reply = server.login_post(&clerk, "/api/v1/login/otp", &json!({ "code": wrong }));
        reply.expect_error(401, "invalid_otp");
        assert!(reply.message().contains(&format!("{} more wrong", 5 - attempt)), "{}", reply.message());
    }
    let stopped = server.login_post(&clerk, "/api/v1/login/otp", &json!({ "code": wrong }));
    stopped.expect_error(403, "otp_stopped");
    assert!(stopped.message().contains("master user"), "{}", stopped.message());
    server.me(&clerk).expect_error(401, "login_required");
    let again = server.login_api(&clerk, &user_password("clerk"));
    again.expect_error(403, "otp_stopped");

    // boss logs in with its code and unlocks clerk with its confirmation password, which the
    // operator sets first (none set: refused).
    relogin(&server, &boss, "boss");
    away_from_step_end();
    server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": oathtool(&boss_secret, 0) })).expect(200);
    let unlock = |who: &str, confirmation: &str| {
        server.login_post(
            &boss,
            &format!("/api/v1/users/{who}/otp/unlock"),
            &json!({ "confirmation": { "password": confirmation } }),
        )
    };
    let none = unlock("clerk", "whatever-1");
    none.expect_error(403, "master_only");
    assert!(none.message().contains("confirmation password"), "{}", none.message());
    let confirmation = "kakunin-Pass.42";
    server.secret(confirmation);
    ca.inkan_env(
        ["user", "confirmation-password", "--login-id", "boss"],
        &[("INKAN_CONFIRMATION_PASSWORD", Some(confirmation))],
    )
    .ok();
    unlock("clerk", WRONG).expect_error(401, "invalid_credentials");
    unlock("rivals-clerk", confirmation).expect_error(404, "not_found");
    unlock("boss", confirmation).expect_error(404, "not_found");
    let lifted = unlock("clerk", confirmation);
    lifted.expect(200);
    assert_eq!(lifted.json()["stopped"], false);
    assert_eq!(relogin(&server, &clerk, "clerk")["otp_required"], true);
    // A general user cannot unlock anyone.
    away_from_step_end();
    server.login_post(&clerk, "/api/v1/login/otp", &json!({ "code": oathtool(&clerk_secret, 0) })).expect(200);
    server
        .login_post(&clerk, "/api/v1/users/clerk/otp/unlock", &json!({ "confirmation": { "password": confirmation } }))
        .expect_error(403, "master_only");

    // A master's own stop: only the operator lifts it (its login is refused meanwhile).
    relogin(&server, &boss, "boss");
    for _ in 0..5 {
        server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": "000001" }));
    }
    let refused = server.login_api(&boss, &user_password("boss"));
    refused.expect_error(403, "otp_stopped");
    assert!(refused.message().contains("operator"), "{}", refused.message());
    ca.inkan(["user", "unlock-otp", "--login-id", "boss"]).ok();
    assert_eq!(relogin(&server, &boss, "boss")["otp_required"], true);
    let listed = ca.inkan(["otp", "list", "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert!(listed.as_array().expect("list").iter().all(|t| t["stopped"] == false && t["state"] == "active"));

    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("otp.stopped") && audit.contains("otp.unlocked") && audit.contains("user.confirmation_set"));
    assert!(!audit.contains(confirmation), "the confirmation password in the audit trail");
    server.stop();
}

#[test]
fn revocation_waits_and_the_app_provisions_with_its_activation_password() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    ca.add_user("clerk", "general", Some("boss"));
    let server = Service::watched(&ca, &[]);
    let (clerk, _) = logged_in(&server, "clerk");
    let (issued, secret) = issue(&server, &clerk, "clerk@example.jp");
    let user_id = issued["user_id"].as_str().expect("user_id").to_owned();

    // The app's flow: wrong activation passwords (and wrong IDs) are refused alike; the right
    // one gives the secret once.
    let provision = |service_id: &str, user_id: &str, password: &str| {
        server.post_json(
            &server.public_url("/api/v1/otp/provision"),
            &json!({ "service_id": service_id, "user_id": user_id, "activation_password": password }),
            NONE,
        )
    };
    provision("INKAN", &user_id, "9999").expect_error(401, "invalid_credentials");
    provision("OTHER", &user_id, "4321").expect_error(401, "invalid_credentials");
    provision("INKAN", "0000000000", "4321").expect_error(401, "invalid_credentials");
    let taken = provision("INKAN", &user_id, "4321");
    taken.expect(200);
    assert_eq!(taken.json()["secret"].as_str(), Some(secret.as_str()), "the same secret as the QR code");
    assert_eq!(taken.json()["period"], 30);
    provision("INKAN", &user_id, "4321").expect_error(401, "invalid_credentials");

    // A second pending token: five wrong activation passwords lock its provisioning.
    let (again, _) = issue(&server, &clerk, "clerk2@example.jp");
    let second = again["user_id"].as_str().expect("user_id").to_owned();
    for _ in 0..5 {
        provision("INKAN", &second, "0000").expect_error(401, "invalid_credentials");
    }
    provision("INKAN", &second, "4321").expect_error(401, "invalid_credentials");

    // Revoked by the operator: a new token is refused until the waiting time is over, and the
    // answer says from when.
    let revoked = ca.inkan(["otp", "revoke", "--login-id", "clerk"]).ok();
    assert!(revoked.stdout.contains("a new one can be issued from"), "{}", revoked.stdout);
    let wait = server.login_post(
        &clerk,
        "/api/v1/otp/tokens",
        &json!({ "mail": "c@example.jp", "activation_password": "1234" }),
    );
    wait.expect_error(409, "otp_reissue_wait");
    assert!(wait.message().contains("can be issued from"), "{}", wait.message());
    let me = server.me(&clerk).json();
    assert_eq!(me["otp"]["state"], "revoked", "{me}");
    assert!(me["otp"]["reissue_from"].is_string(), "{me}");
    // The page says so too.
    let page = server.login_get(&clerk, "/otp/token?lang=en");
    assert!(page.text().contains("a new one can be issued from"), "{}", page.text());
    ca.inkan(["otp", "revoke", "--login-id", "nobody-here"]).refused("no OTP token");
    server.stop();
}

#[test]
fn a_contract_that_requires_otp_lets_a_user_without_a_token_only_set_one_up() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("required = false", "required = true")]);
    ca.add_user("boss", "master", None);
    let server = Service::watched(&ca, &[]);
    let (boss, login) = logged_in(&server, "boss");
    assert_eq!(login["otp_setup_required"], true, "{login}");
    server.me(&boss).expect_error(403, "otp_setup_required");
    server.login_get(&boss, "/home").expect(303);
    let page = server.login_get(&boss, "/otp/token?lang=ja");
    page.expect(200);
    assert!(page.text().contains("トークンの発行のみ行えます"), "{}", page.text());
    let (_, secret) = issue(&server, &boss, "boss@example.jp");
    away_from_step_end();
    server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&secret, 0) })).expect(200);
    server.me(&boss).expect(200);
    server.stop();
}

/// The pages: login with certificate + password, then the code page, then home; a wrong code
/// shows the form again with the reason.
#[test]
fn the_pages_ask_for_the_code_after_the_password() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    let server = Service::watched(&ca, &[]);
    let (boss, _) = logged_in(&server, "boss");
    let (_, secret) = issue(&server, &boss, "boss@example.jp");
    away_from_step_end();
    server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&secret, -30) })).expect(200);
    relogin(&server, &boss, "boss");
    let form = server.login_get(&boss, "/otp?lang=en");
    form.expect(200);
    let csrf = common::between(&form.text(), "name=\"csrf\" value=\"", "\"");
    let post = |code: &str| {
        server.post(
            &server.login_url("/otp?lang=en"),
            "application/x-www-form-urlencoded",
            format!("csrf={csrf}&code={code}").as_bytes(),
            &boss.args,
        )
    };
    let wrong = post("000000");
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(wrong.text().contains("data-testid=\"otp-form\""), "the form again: {}", wrong.text());
    away_from_step_end();
    let right = post(&oathtool(&secret, 0));
    assert_eq!(right.status, 303, "{}", right.text());
    assert_eq!(right.header("location").as_deref(), Some("/home?lang=en"));
    let home = server.login_get(&boss, "/home?lang=ja");
    home.expect(200);
    assert!(home.text().contains("ワンタイムパスワード: 利用中"), "{}", home.text());
    server.stop();
}

/// The mails of a Maildir as Python's email package reads them: (to, subject, body).
fn mails(maildir: &std::path::Path) -> Vec<(String, String, String)> {
    let script = r#"
import email, email.header, json, mailbox, sys
out = []
for message in mailbox.Maildir(sys.argv[1], factory=None, create=False):
    subject = str(email.header.make_header(email.header.decode_header(message["Subject"])))
    body = message.get_payload(decode=True).decode(message.get_content_charset() or "utf-8")
    out.append([message["To"], subject, body])
print(json.dumps(sorted(out)))
"#;
    if !maildir.join("new").exists() {
        return Vec::new();
    }
    let out = common::run("python3", ["-c", script, s(maildir)], &[], None);
    assert!(out.status.success(), "reading the Maildir: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("mails as JSON")
}

/// Token issue, certificate expiry, OTP stop, revocation and an account lock go to the token's
/// mail address through a real SMTP server (aiosmtpd), each once, also across a restart.
#[test]
fn notices_go_to_the_tokens_mail_address_once() {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/aiosmtpd");
    assert!(venv.exists(), "needs aiosmtpd in ./.venv: run ./tests/run-all.sh, which installs it");
    let ca = TestCa::with_rate_limit(1000);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let maildir = ca.work().join("maildir");
    let mut smtp_command = std::process::Command::new(&venv);
    smtp_command.args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox", s(&maildir)]);
    let mut smtp = common::Daemon::spawn(smtp_command);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "aiosmtpd did not start: {}", smtp.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    ca.configure(&[
        ("# [mail]", "[mail]"),
        ("# smtp_url = \"smtp://127.0.0.1:25\"", &format!("smtp_url = \"smtp://127.0.0.1:{port}\"")),
        ("# from = \"inkan <noreply@example.jp>\"", "from = \"inkan <noreply@example.jp>\""),
        ("scan_interval_secs = 3600", "scan_interval_secs = 1"),
    ]);
    ca.add_user("boss", "master", None);
    let server = Service::watched(&ca, &[]);
    let (boss, _) = logged_in(&server, "boss");
    let (_, secret) = issue(&server, &boss, "boss@example.jp");
    away_from_step_end();
    server.login_post(&boss, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&secret, -30) })).expect(200);
    // A certificate 10 days from its end: the 14-day notice.
    let (_, short) = ca.issue(&common::p256_csr(ca.work(), "short"), "boss", "short", &["--days", "10"]);
    // Five wrong codes: stopped.
    relogin(&server, &boss, "boss");
    for _ in 0..5 {
        server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": "000002" }));
    }
    // The operator lifts it and revokes the token.
    ca.inkan(["user", "unlock-otp", "--login-id", "boss"]).ok();
    ca.inkan(["otp", "revoke", "--login-id", "boss"]).ok();
    // Five wrong passwords lock the account (issue 11): the token's address is told.
    for _ in 0..5 {
        server.enroll("boss", WRONG).expect_error(401, "invalid_credentials");
    }

    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = mails(&maildir);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let got = wait_for(5);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got.iter().all(|(to, _, _)| to == "boss@example.jp"), "{got:#?}");
    let subjects: Vec<&str> = got.iter().map(|(_, subject, _)| subject.as_str()).collect();
    for wanted in [
        "トークンを発行しました",
        "有効期限のお知らせ",
        "利用停止のお知らせ",
        "トークンを失効させました",
        "ロックされました",
    ] {
        assert!(subjects.iter().any(|s| s.contains(wanted)), "{wanted}: {subjects:?}");
    }
    let expiry = got.iter().find(|(_, subject, _)| subject.contains("有効期限")).expect("expiry mail");
    assert!(expiry.2.contains(&short) && expiry.2.contains("expires soon"), "{}", expiry.2);
    assert!(got.iter().all(|(_, _, body)| !body.contains(&secret)), "a secret in a mail");

    // Once only: a restart and several scans later, still five.
    let metrics = server.metrics();
    assert!(metrics.contains("inkan_mail_total{result=\"sent\"} 5"), "{metrics}");
    server.stop();
    let again = Service::watched(&ca, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mails(&maildir).len(), 5, "no notice twice");
    again.stop();
    smtp.signal("KILL");
    assert!(smtp.wait_exit(Duration::from_secs(10)).is_some());
}

/// The 40 digits of a customer card as printed, row by row.
fn card_digits(svg: &str) -> Vec<u8> {
    let marker = "font-family=\"monospace\" text-anchor=\"middle\">";
    svg.match_indices(marker).map(|(at, _)| svg.as_bytes()[at + marker.len()] - b'0').collect()
}

/// The digit of `cell` (`C4`) on a card.
fn digit(digits: &[u8], cell: &str) -> String {
    let column = usize::from(cell.as_bytes()[0] - b'A');
    let row: usize = cell[1..].parse().expect("row");
    digits[(row - 1) * 8 + column].to_string()
}

/// A master whose contract confirms with the customer card: the operator issues the card (SVG,
/// printable), the service asks two random cells, a wrong answer counts and spends the
/// challenge, the right digits of the cells asked unlock the general user's OTP.
#[test]
fn a_customer_card_confirms_the_masters_actions() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    ca.add_user("clerk", "general", Some("boss"));
    let work = ca.work();
    let card_file = work.join("boss-card.svg");
    ca.inkan(["user", "card", "--login-id", "clerk", "--out", s(&work.join("x.svg"))]).refused("for master users");
    ca.inkan(["user", "card", "--login-id", "nobody-here", "--out", s(&work.join("y.svg"))]).refused("nobody-here");
    ca.inkan(["user", "card", "--login-id", "boss", "--out", s(&card_file)]).ok();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&card_file).expect("card").permissions());
    assert_eq!(mode & 0o777, 0o600);
    ca.inkan(["user", "card", "--login-id", "boss", "--out", s(&card_file)]).refused("exists");
    let svg = read(&card_file);
    let digits = card_digits(&svg);
    assert_eq!(digits.len(), 40, "{svg}");
    assert!(digits.iter().all(|d| *d <= 9));
    assert!(svg.contains("ア (A)") && svg.contains("ク (H)"), "{svg}");
    let png = work.join("card.png");
    let rendered = common::run("rsvg-convert", ["-o", s(&png), s(&card_file)], &[], None);
    assert!(rendered.status.success(), "the card is an SVG rsvg renders: {}", rendered.stderr);
    // A PDF card, read back by poppler's pdftotext: the title, the login ID and a 5 x 8 grid.
    ca.add_user("boss2", "master", None);
    ca.inkan(["user", "card", "--login-id", "boss2", "--out", s(&work.join("card.txt"))]).refused(".svg or .pdf");
    let pdf = work.join("boss2-card.pdf");
    ca.inkan(["user", "card", "--login-id", "boss2", "--out", s(&pdf)]).ok();
    let text = common::run("pdftotext", ["-layout", s(&pdf), "-"], &[], None);
    assert!(text.status.success(), "pdftotext: {}", text.stderr);
    assert!(text.stdout.contains("お客様カード") && text.stdout.contains("login ID: boss2"), "{}", text.stdout);
    let grid: Vec<Vec<&str>> = text
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == 9 && cells.iter().all(|c| c.len() == 1 && c.as_bytes()[0].is_ascii_digit()))
        .collect();
    assert_eq!(grid.len(), 5, "five rows of a label and eight digits: {}", text.stdout);

    let server = Service::watched(&ca, &[]);
    let (clerk, _) = logged_in(&server, "clerk");
    let (_, secret) = issue(&server, &clerk, "clerk@example.jp");
    away_from_step_end();
    server.login_post(&clerk, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool(&secret, -30) })).expect(200);
    relogin(&server, &clerk, "clerk");
    for _ in 0..5 {
        server.login_post(&clerk, "/api/v1/login/otp", &json!({ "code": "000003" }));
    }
    server.login_api(&clerk, &user_password("clerk")).expect_error(403, "otp_stopped");

    let (boss, _) = logged_in(&server, "boss");
    let unlock = |confirmation: Value| {
        server.login_post(&boss, "/api/v1/users/clerk/otp/unlock", &json!({ "confirmation": confirmation }))
    };
    unlock(json!({ "password": "anything-at-all" })).expect_error(400, "invalid_request");
    let challenge = server.login_get(&boss, "/api/v1/confirmation-challenge").json();
    assert_eq!(challenge["kind"], "card", "{challenge}");
    let cells: Vec<String> =
        challenge["cells"].as_array().expect("cells").iter().map(|c| c.as_str().expect("cell").to_owned()).collect();
    assert_eq!(cells.len(), 2);
    assert_ne!(cells[0], cells[1]);
    // A wrong digit: refused, counted, and the challenge is spent.
    let right = |cells: &[String]| json!({ "cells": { &cells[0]: digit(&digits, &cells[0]), &cells[1]: digit(&digits, &cells[1]) } });
    let wrong_digit = (digit(&digits, &cells[1]).parse::<u8>().expect("digit") + 1) % 10;
    let wrong = json!({ "cells": { &cells[0]: digit(&digits, &cells[0]), &cells[1]: wrong_digit.to_string() } });
    unlock(wrong).expect_error(401, "invalid_credentials");
    unlock(right(&cells)).expect_error(400, "invalid_request");
    // Asked again: the right digits of the cells asked now.
    let challenge = server.login_get(&boss, "/api/v1/confirmation-challenge").json();
    let cells: Vec<String> =
        challenge["cells"].as_array().expect("cells").iter().map(|c| c.as_str().expect("cell").to_owned()).collect();
    let lifted = unlock(right(&cells));
    lifted.expect(200);
    assert_eq!(lifted.json()["stopped"], false);
    // The home page asks two cells of the card, not a password.
    let home = server.login_get(&boss, "/home?lang=ja");
    assert!(home.text().contains("お客様カードの数字"), "{}", home.text());
    assert!(home.text().contains("name=\"cell_a\""), "{}", home.text());
    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("user.card_issued") && audit.contains("user.confirmation_failure"), "{audit}");
    server.stop();
}

/// `oathtool --totp HEX` (the secret in hex), at `offset` seconds from now.
fn oathtool_hex(secret_hex: &str, offset: i64) -> String {
    let when = format!("now {} {} sec", if offset < 0 { "-" } else { "+" }, offset.abs());
    let out = common::run("oathtool", ["--totp", secret_hex, "-N", &when], &[], None);
    assert!(out.status.success(), "oathtool: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// Hardware tokens (manual 002): the operator imports seeds from a PSKC file the test makes
/// with Python's cryptography (encrypted, MACed); a changed file, a wrong key or garbage imports
/// nothing; a user registers a token by serial number and current code; a personal contract may
/// choose not to be asked at login, a business one may not.
#[test]
fn hardware_tokens_are_imported_from_pskc_and_registered_by_serial_and_code() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("boss", "master", None);
    ca.add_user("pat", "master", None);
    ca.inkan(["user", "contract", "--login-id", "pat", "--personal"]).ok();
    ca.add_user("corp", "master", None);
    ca.add_user("corp-1", "general", Some("corp"));
    ca.inkan(["user", "contract", "--login-id", "corp", "--business", "--require-otp", "--otp-step", "60"]).ok();
    let odd = ca.inkan(["user", "contract", "--login-id", "corp", "--otp-step", "45"]);
    assert_eq!(odd.status.code(), Some(2), "a usage error: {}", odd.stderr);
    assert!(odd.stderr.contains("'45'") && odd.stderr.contains("30, 60"), "{}", odd.stderr);
    ca.inkan(["user", "contract", "--login-id", "corp-1", "--business"]).refused("set on its master");
    let work = ca.work();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pskc/make-pskc.py");
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let psk = "000102030405060708090a0b0c0d0e0f";
    let (secret_a, secret_b) = ("3132333435363738393031323334353637383930", "41424344454647484950515253545556575859ff");
    let secret_c = "00112233445566778899aabbccddeeff00112233";
    let make = |name: &str, extra: &[&str]| {
        let out = work.join(name);
        let tokens = [format!("HW-100={secret_a}"), format!("HW-200={secret_b}"), format!("HW-300={secret_c}")];
        let mut args = vec![s(&script), psk, s(&out), &tokens[0], &tokens[1], &tokens[2]];
        args.extend_from_slice(extra);
        let made = common::run(s(&python), &args, &[], None);
        assert!(made.status.success(), "make-pskc.py: {}", made.stderr);
        out
    };
    let good = make("tokens.pskc", &[]);
    let tampered = make("tampered.pskc", &["--tamper"]);
    let key = work.join("psk.hex");
    write(&key, format!("{psk}\n"));
    let wrong_key = work.join("wrong.hex");
    write(&wrong_key, "ffffffffffffffffffffffffffffffff\n");
    let garbage = work.join("garbage.pskc");
    write(&garbage, "<KeyContainer><oops");
    let import = |file: &std::path::Path, key: Option<&std::path::Path>| {
        let mut args = vec!["otp", "import", "--pskc", s(file)];
        if let Some(key) = key {
            args.extend(["--key-file", s(key)]);
        }
        ca.inkan(args)
    };
    import(&tampered, Some(&key)).refused("the MAC does not verify");
    import(&good, Some(&wrong_key)).refused("does not decrypt");
    import(&good, None).refused("pre-shared key");
    import(&garbage, Some(&key)).refused("not XML");
    let imported = import(&good, Some(&key)).ok();
    assert!(imported.stdout.contains("Imported 3 hardware token(s): HW-100, HW-200, HW-300"), "{}", imported.stdout);
    import(&good, Some(&key)).refused("already imported: HW-100, HW-200, HW-300");

    let server = Service::watched(&ca, &[]);
    let (boss, _) = logged_in(&server, "boss");
    let register = |client: &Client, body: Value| server.login_post(client, "/api/v1/otp/hardware", &body);
    away_from_step_end();
    register(&boss, json!({ "serial": "HW-999", "code": "123456" })).expect_error(404, "not_found");
    let wrong = if oathtool_hex(secret_a, 0) == "000000" { "111111" } else { "000000" };
    register(&boss, json!({ "serial": "HW-100", "code": wrong })).expect_error(401, "invalid_otp");
    register(&boss, json!({ "serial": "HW-100", "code": oathtool_hex(secret_a, 0), "ask_at_login": false }))
        .expect_error(400, "invalid_request");
    let registered = register(&boss, json!({ "serial": "HW-100", "code": oathtool_hex(secret_a, -30) }));
    registered.expect(201);
    assert_eq!(registered.json()["ask_at_login"], true);
    assert_eq!(relogin(&server, &boss, "boss")["otp_required"], true);
    server.login_post(&boss, "/api/v1/login/otp", &json!({ "code": oathtool_hex(secret_a, 0) })).expect(200);

    // pat's personal contract: registered with no code at login.
    let (pat, _) = logged_in(&server, "pat");
    register(&pat, json!({ "serial": "HW-100", "code": oathtool_hex(secret_a, 0) })).expect_error(404, "not_found");
    let registered =
        register(&pat, json!({ "serial": "HW-200", "code": oathtool_hex(secret_b, 0), "ask_at_login": false }));
    registered.expect(201);
    assert_eq!(relogin(&server, &pat, "pat")["otp_required"], false);
    server.me(&pat).expect(200);
    // corp's contract requires OTP: its general user without a token can only set one up.
    let (corp_1, login) = logged_in(&server, "corp-1");
    assert_eq!(login["otp_setup_required"], true, "{login}");
    server.me(&corp_1).expect_error(403, "otp_setup_required");
    // It registers HW-300 on the page, and is logged in.
    let page = server.login_get(&corp_1, "/otp/token?lang=en");
    assert!(page.text().contains("data-testid=\"otp-hardware-form\""), "{}", page.text());
    let csrf = common::between(&page.text(), "name=\"csrf\" value=\"", "\"");
    let fields = format!("csrf={csrf}&serial=HW-300&code={}&ask_at_login=yes", oathtool_hex(secret_c, 0));
    let posted = server.post(
        &server.login_url("/otp/hardware?lang=en"),
        "application/x-www-form-urlencoded",
        fields.as_bytes(),
        &corp_1.args,
    );
    assert_eq!(posted.status, 303, "{}", posted.text());
    server.me(&corp_1).expect(200);
    // corp itself sets up an app token: 60-second steps, as its contract says.
    let (corp, login) = logged_in(&server, "corp");
    assert_eq!(login["otp_setup_required"], true, "{login}");
    let (issued, corp_secret) = issue(&server, &corp, "corp@example.jp");
    assert!(issued["otpauth_uri"].as_str().is_some_and(|u| u.contains("period=60")), "{issued}");
    let code = common::run("oathtool", ["--totp", "-s", "60s", "-b", &corp_secret], &[], None).stdout.trim().to_owned();
    server.login_post(&corp, "/api/v1/otp/tokens/verify", &json!({ "code": code })).expect(200);
    server.me(&corp).expect(200);
    let audit = read(&ca.file("audit/audit.log"));
    assert!(audit.contains("otp.seeds_imported") && audit.contains("otp.hardware_registered"), "{audit}");
    assert!(!audit.contains(secret_a) && !audit.contains(secret_b), "a seed in the audit trail");
    server.stop();
}
