//! API連携認証: inkan as an OAuth 2.0 authorization server (FAPI 2.0 style: PAR, PKCE S256,
//! tls_client_auth, certificate-bound tokens, introspection, revocation) end to end, with a
//! real client library and a real browser. `inkan serve` runs; the CLI registers two apps
//! (each with a certificate inkan issued) and a resource (普通預金) of the user's contract; the
//! user has an active one-time-password token and a secret question. Then
//! tests/browser/oauth.mjs plays the app with openid-client (OpenID-certified; its TLS through
//! undici with the app's certificate) and the user in Debian's Chromium (the user's certificate
//! from NSS, presented by Chromium itself): allowed, denied and ended grants, an account locked
//! by wrong answers, password login for the app that allows it, and hostile requests at each
//! endpoint. This test asserts on what the script saw, then on the CLI, the audit trail and
//! the log (no token, code, PIN, answer or password in either). Screenshots of the pages are
//! left in target/screenshots/oauth-*.png.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Service, TestCa, openssl, p256_csr, read, run, s, user_password};
use serde_json::{Value, json};

/// The organization in every subject this CA issues.
const ORG: &str = "OAuth Test Bank";
/// The user: a master, whose contract holds the resource.
const USER: &str = "taro";
/// A second user (a master of another contract), whose account the script locks.
const SECOND_USER: &str = "hanako";
/// The PKCS#12 password of the user's certificate for Chromium's NSS database.
const P12_PASS: &str = "p12 pass 4711";
/// The resource's 照会用暗証番号, and a wrong one (8 digits: not found in a log by chance).
const RESOURCE_PIN: &str = "58204713";
const WRONG_PIN: &str = "90817263";
const RESOURCE_LABEL: &str = "普通預金 1234567";
/// The secret question, its answer and a wrong answer.
const QUESTION: &str = "初めて飼ったペットの名前は？";
const ANSWER: &str = "みけねこ二号";
const WRONG_ANSWER: &str = "しろくま三号";
/// Wrong passwords or answers in a row before the account locks (the default is 5: a
/// different number shows the count follows the configuration).
const LOCKOUT: usize = 4;
/// The apps' redirect URIs (hosts that do not exist: Chromium's resolver maps them to nothing).
const KAKEIBO_REDIRECT: &str = "https://kakeibo.example/callback";
const OTHER_REDIRECT: &str = "https://matome.example/cb";
const KAKEIBO_NAME: &str = "家計簿アプリ";
const KAKEIBO_COMPANY: &str = "株式会社かけいぼ";
const OTHER_NAME: &str = "まとめアプリ";
/// How long the browser script may take: several flows each wait for an unused OTP step.
const NODE_LIMIT: Duration = Duration::from_secs(480);
/// The RFC 7636 example challenge: well-formed, for requests that need any challenge.
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The screenshots the script leaves, one per page it shows people.
const SCREENSHOTS: [&str; 20] = [
    "oauth-01-login.png",
    "oauth-02-otp.png",
    "oauth-03-question.png",
    "oauth-04-scopes.png",
    "oauth-05-scopes-none.png",
    "oauth-06-pins.png",
    "oauth-07-pins-wrong.png",
    "oauth-08-consent.png",
    "oauth-09-consent-ticked.png",
    "oauth-10-request-uri-reused.png",
    "oauth-11-pins-registered.png",
    "oauth-12-consent-unticked.png",
    "oauth-12b-consent-en.png",
    "oauth-13-home-grants.png",
    "oauth-14-home-grant-ended.png",
    "oauth-15-password-login.png",
    "oauth-16-password-consent.png",
    "oauth-17-certificate-required.png",
    "oauth-18-question-wrong.png",
    "oauth-19-locked.png",
];

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An NSS database at HOME/.pki/nssdb (where Chromium looks) that trusts `root`; returns its
/// `sql:` name.
fn nss_db(home: &Path, root: &Path) -> String {
    let dir = home.join(".pki/nssdb");
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sql:{}", s(&dir));
    run("certutil", ["-N", "-d", &db, "--empty-password"], &[], None).ok();
    run("certutil", ["-A", "-d", &db, "-n", "inkan test root", "-t", "C,,", "-i", s(root)], &[], None).ok();
    db
}

/// The secret parameter of an otpauth URI.
fn secret_of(uri: &str) -> String {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
        .unwrap_or_else(|| panic!("no secret in {uri}"))
        .to_owned()
}

/// The TOTP step to activate a token with: the previous 30-second one, which the service still
/// takes, unless the current one is near its end (then the current one). The script goes on
/// from the step after it, so it has two codes before it waits for the next step.
fn activation_step() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if now % 30 < 20 { now / 30 - 1 } else { now / 30 }
}

/// A user as the browser script plays them.
struct BrowserUser {
    enrolled: common::Enrolled,
    /// A HOME whose NSS database trusts the root and holds the user's key and certificate.
    home: PathBuf,
    password: String,
    /// A logged-in certificate session.
    session: Client,
    otp_secret: String,
    /// The step the token was activated with.
    step: u64,
}

/// `login_id` (added as a master) with a certificate obtained through the enrollment API, as a
/// PKCS#12 in the NSS database Chromium reads (at `work/home_name`), an active OTP token
/// (issued and verified in a certificate session) and the secret question for 追加認証.
fn browser_user(ca: &TestCa, server: &Service, login_id: &str, home_name: &str) -> BrowserUser {
    ca.add_user(login_id, "master", None);
    let password = user_password(login_id);
    let enrolled = server.acquire(login_id, login_id);
    let p12 = ca.work().join(format!("{login_id}.p12"));
    let pass = format!("pass:{P12_PASS}");
    openssl([
        "pkcs12",
        "-export",
        "-inkey",
        s(&enrolled.key),
        "-in",
        s(&enrolled.cert),
        "-certfile",
        s(&enrolled.chain),
        "-name",
        login_id,
        "-out",
        s(&p12),
        "-passout",
        &pass,
    ])
    .ok();
    let home = ca.work().join(home_name);
    let db = nss_db(&home, &ca.root_crt());
    let import = run("pk12util", ["-i", s(&p12), "-d", &db, "-W", P12_PASS, "-K", ""], &[], None).ok();
    assert!(import.text().contains("PKCS12 IMPORT SUCCESSFUL"), "{}", import.text());
    assert!(run("certutil", ["-L", "-d", &db], &[], None).ok().stdout.contains("u,u,u"), "the key is in NSS");

    let session = enrolled.client();
    server.login_api(&session, &password).expect(200);
    let issued = server.login_post(
        &session,
        "/api/v1/otp/tokens",
        &json!({ "mail": format!("{login_id}@example.jp"), "activation_password": "4321" }),
    );
    issued.expect(201);
    let otp_secret = secret_of(issued.json()["otpauth_uri"].as_str().expect("otpauth_uri"));
    server.secret(&otp_secret);
    let step = activation_step();
    server
        .login_post(&session, "/api/v1/otp/tokens/verify", &json!({ "code": oathtool_at(&otp_secret, step) }))
        .expect(200);
    assert_eq!(server.me(&session).json()["otp"]["state"], "active");

    let question = json!({ "question": QUESTION, "answer": ANSWER });
    let registered = server.login_post(&session, "/api/v1/secret-question", &question);
    registered.expect(200);
    assert_eq!(registered.json()["registered"], true, "{}", registered.text());
    BrowserUser { enrolled, home, password, session, otp_secret, step }
}

/// `oathtool --totp -b SECRET` for the time step `step` (as an authenticator app computes it).
fn oathtool_at(secret: &str, step: u64) -> String {
    let at = format!("@{}", step * 30);
    let out = run("oathtool", ["--totp", "-b", secret, "-N", &at], &[], None).ok();
    let code = out.stdout.trim().to_owned();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    code
}

/// The x5t#S256 of a PEM certificate (RFC 8705 §3.1): base64url (no padding) of the SHA-256
/// of its DER, computed with openssl.
fn x5t_s256(cert: &Path) -> String {
    let der = openssl(["x509", "-in", s(cert), "-outform", "DER"]).ok().raw_stdout;
    let digest = run("openssl", ["dgst", "-sha256", "-binary"], &[], Some(&der)).ok().raw_stdout;
    assert_eq!(digest.len(), 32);
    let b64 = run("openssl", ["base64", "-A"], &[], Some(&digest)).ok().stdout;
    b64.trim().trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// The space-separated words of a JSON string, sorted (a scope).
fn words(value: &Value) -> Vec<String> {
    let mut words: Vec<String> = value.as_str().unwrap_or_default().split_whitespace().map(String::from).collect();
    words.sort();
    words
}

/// The strings of a JSON array, sorted.
fn strings(value: &Value) -> Vec<String> {
    let mut items: Vec<String> =
        value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
    items.sort();
    items
}

/// Runs `command` to its end, stopped after `limit` (SIGTERM, on which Playwright closes the
/// browsers it launched and node ends; SIGKILL 15 s later); returns its output.
fn output_within(mut command: Command, limit: Duration) -> Output {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("starting node");
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_ok() {
            return false;
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if finished.recv_timeout(Duration::from_secs(15)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        true
    });
    let output = child.wait_with_output().expect("waiting for node");
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    assert!(!timed_out, "node did not finish within {limit:?}:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `inkan oauth client add ARGS --json`, parsed.
fn add_client(ca: &TestCa, args: &[&str]) -> Value {
    let out = ca.inkan(["oauth", "client", "add"].iter().chain(args).chain(&["--json"])).ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("oauth client add --json: {e}\n{}", out.stdout))
}

/// `inkan oauth client list --json`: the client IDs, sorted.
fn client_ids(ca: &TestCa) -> (Vec<String>, Value) {
    let out = ca.inkan(["oauth", "client", "list", "--json"]).ok();
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("client list --json: {e}"));
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("client list --json is not an array: {list}"))
        .iter()
        .map(|c| c["client_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    (ids, list)
}

#[test]
fn api_renkei_with_openid_client_and_chromium_allowed_denied_ended_locked_and_hostile() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = workspace.join("tests/browser/oauth.mjs");
    let modules = workspace.join("tests/node_modules");
    assert!(
        ["playwright-core", "openid-client", "undici"].iter().all(|m| modules.join(m).exists())
            && Path::new("/usr/bin/chromium").exists(),
        "needs Debian's chromium, playwright-core, openid-client and undici: run ./tests/run-all.sh, which \
         installs them (or npm ci in tests/)"
    );

    // ---- the CA, the accounts, the apps' certificates --------------------------------------
    let ca = TestCa::init(&["--org", ORG]);
    let lockout = format!("lockout_threshold = {LOCKOUT}");
    ca.configure(&[
        ("rate_limit_per_minute = 30", "rate_limit_per_minute = 1000"),
        ("lockout_threshold = 5", &lockout),
        // An authorization code lives 2 s: the script waits 3 s to see one expire.
        ("code_secs = 60", "code_secs = 2"),
    ]);
    let work = ca.work().to_owned();
    // The apps are accounts like any other: inkan issues their certificates (with the chain,
    // as a client sends it), subject O=ORG, CN=account.
    let kakeibo_key = work.join("kakeibo-app.key");
    let (kakeibo_crt, _) = ca.issue(&p256_csr(&work, "kakeibo-app"), "kakeibo-app", "kakeibo-app", &["--chain"]);
    let other_key = work.join("other-app.key");
    let (other_crt, _) = ca.issue(&p256_csr(&work, "other-app"), "other-app", "other-app", &["--chain"]);
    let server = Service::watched(&ca, &[]);
    for secret in [RESOURCE_PIN, WRONG_PIN, ANSWER, WRONG_ANSWER] {
        server.secret(secret);
    }

    // The users' certificates in NSS databases, active tokens and secret questions; a database
    // that trusts the root and holds no key.
    let taro = browser_user(&ca, &server, USER, "home");
    let hanako = browser_user(&ca, &server, SECOND_USER, "second-home");
    let password = taro.password.clone();
    let session = &taro.session;
    let bare_home = work.join("bare-home");
    let bare_db = nss_db(&bare_home, &ca.root_crt());
    assert!(!run("certutil", ["-L", "-d", &bare_db], &[], None).ok().stdout.contains("u,u,u"), "no key in BARE_HOME");
    // The secret question only in a logged-in session.
    let question = json!({ "question": QUESTION, "answer": ANSWER });
    let stranger = Client::pem(&taro.enrolled.cert, &taro.enrolled.key, &work.join("no-session.jar"));
    let refused = server.login_post(&stranger, "/api/v1/secret-question", &question);
    assert_eq!(refused.status, 401, "a question without a session: {}", refused.text());

    // ---- the operator registers the apps and the resource (serve runs) ---------------------
    let kakeibo_subject = format!("O={ORG}, CN=kakeibo-app");
    let kakeibo = add_client(
        &ca,
        &[
            "--name",
            KAKEIBO_NAME,
            "--company",
            KAKEIBO_COMPANY,
            "--redirect-uri",
            KAKEIBO_REDIRECT,
            "--scope",
            "certificates:read",
            "--scope",
            "balance:read",
            "--tls-subject",
            &kakeibo_subject,
        ],
    );
    let kakeibo_id = kakeibo["client_id"].as_str().unwrap_or_else(|| panic!("no client_id: {kakeibo}")).to_owned();
    // RDN order does not matter: this one is given CN first.
    let other_subject = format!("CN=other-app, O={ORG}");
    let other = add_client(
        &ca,
        &[
            "--name",
            OTHER_NAME,
            "--company",
            "まとめ株式会社",
            "--redirect-uri",
            OTHER_REDIRECT,
            "--scope",
            "certificates:read",
            "--tls-subject",
            &other_subject,
            "--allow-password-login",
        ],
    );
    let other_id = other["client_id"].as_str().unwrap_or_else(|| panic!("no client_id: {other}")).to_owned();
    assert_ne!(kakeibo_id, other_id);
    let (ids, _) = client_ids(&ca);
    let mut both = [kakeibo_id.clone(), other_id.clone()];
    both.sort();
    assert_eq!(ids, both);

    // A PIN that is not 4–8 digits is refused; the right one registers the resource.
    let mut env = TestCa::env().to_vec();
    env.push(("INKAN_RESOURCE_PIN", Some("12a")));
    ca.inkan_env(["resource", "add", "--contract", USER, "--label", "口座 0000000", "--json"], &env).failed();
    env.pop();
    env.push(("INKAN_RESOURCE_PIN", Some(RESOURCE_PIN)));
    let added = ca.inkan_env(["resource", "add", "--contract", USER, "--label", RESOURCE_LABEL, "--json"], &env).ok();
    let added: Value = serde_json::from_str(&added.stdout).unwrap_or_else(|e| panic!("resource add --json: {e}"));
    let resource_id = added["id"].as_str().unwrap_or_else(|| panic!("no id: {added}")).to_owned();
    let resources: Value = serde_json::from_str(&ca.inkan(["resource", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(resources.as_array().map(Vec::len), Some(1), "only the valid PIN's resource: {resources}");

    // ---- the browser script ----------------------------------------------------------------
    let out = screenshots_dir();
    for name in SCREENSHOTS {
        let _ = std::fs::remove_file(out.join(name));
    }
    let login_url = server.login_url("");
    let mut node = Command::new("node");
    node.arg(&script)
        .env_remove("NODE_EXTRA_CA_CERTS")
        .env("HOME", &taro.home)
        .env("BARE_HOME", &bare_home)
        .env("LOGIN_URL", &login_url)
        .env("ROOT_CA", ca.root_crt())
        .env("USER_CERT", &taro.enrolled.cert)
        .env("KAKEIBO_CLIENT_ID", &kakeibo_id)
        .env("KAKEIBO_CERT", &kakeibo_crt)
        .env("KAKEIBO_KEY", &kakeibo_key)
        .env("KAKEIBO_REDIRECT_URI", KAKEIBO_REDIRECT)
        .env("OTHER_CLIENT_ID", &other_id)
        .env("OTHER_CERT", &other_crt)
        .env("OTHER_KEY", &other_key)
        .env("OTHER_REDIRECT_URI", OTHER_REDIRECT)
        .env("LOGIN_ID", USER)
        .env("PASSWORD", &password)
        .env("OTP_SECRET", &taro.otp_secret)
        .env("OTP_LAST_STEP", taro.step.to_string())
        .env("SECOND_LOGIN_ID", SECOND_USER)
        .env("SECOND_PASSWORD", &hanako.password)
        .env("SECOND_OTP_SECRET", &hanako.otp_secret)
        .env("SECOND_OTP_LAST_STEP", hanako.step.to_string())
        .env("SECOND_CERT", &hanako.enrolled.cert)
        .env("SECOND_HOME", &hanako.home)
        .env("RESOURCE_ID", &resource_id)
        .env("RESOURCE_PIN", RESOURCE_PIN)
        .env("WRONG_PIN", WRONG_PIN)
        .env("SECRET_ANSWER", ANSWER)
        .env("WRONG_ANSWER", WRONG_ANSWER)
        .env("OUT_DIR", &out);
    let node = output_within(node, NODE_LIMIT);
    assert!(node.status.success(), "browser run failed ({}):\n{}", node.status, String::from_utf8_lossy(&node.stderr));
    let results: Value = serde_json::from_slice(&node.stdout)
        .unwrap_or_else(|e| panic!("not one JSON line ({e}):\n{}", String::from_utf8_lossy(&node.stdout)));
    let r = |pointer: &str| results.pointer(pointer).cloned().unwrap_or(Value::Null);
    let text = |pointer: &str| r(pointer).as_str().unwrap_or_default().to_owned();
    let shown = serde_json::to_string_pretty(&results).unwrap();
    let both_scopes = ["balance:read", "certificates:read"];
    let kakeibo_x5t = x5t_s256(&kakeibo_crt);
    let other_x5t = x5t_s256(&other_crt);

    // RFC 8414 metadata: the issuer is the login listener's origin; FAPI 2.0's requirements.
    let endpoint = |path: &str| Value::from(format!("{login_url}{path}"));
    assert_eq!(r("/metadata/issuer"), login_url.as_str(), "{shown}");
    assert_eq!(r("/metadata/authorization_endpoint"), endpoint("/oauth/authorize"));
    assert_eq!(r("/metadata/token_endpoint"), endpoint("/oauth/token"));
    assert_eq!(r("/metadata/pushed_authorization_request_endpoint"), endpoint("/oauth/par"));
    assert_eq!(r("/metadata/introspection_endpoint"), endpoint("/oauth/introspect"));
    assert_eq!(r("/metadata/revocation_endpoint"), endpoint("/oauth/revoke"));
    assert_eq!(r("/metadata/require_pushed_authorization_requests"), true);
    assert_eq!(r("/metadata/response_types_supported"), json!(["code"]));
    assert_eq!(strings(&r("/metadata/grant_types_supported")), ["authorization_code", "refresh_token"]);
    assert_eq!(r("/metadata/code_challenge_methods_supported"), json!(["S256"]));
    assert_eq!(r("/metadata/token_endpoint_auth_methods_supported"), json!(["tls_client_auth"]));
    assert_eq!(r("/metadata/tls_client_certificate_bound_access_tokens"), true);
    assert_eq!(r("/metadata/authorization_response_iss_parameter_supported"), true);
    let scopes_supported = strings(&r("/metadata/scopes_supported"));
    assert!(both_scopes.iter().all(|s| scopes_supported.iter().any(|x| x == s)), "{scopes_supported:?}");

    // PAR: the well-formed request works; each one-thing-wrong variant is refused with its
    // RFC error and no request_uri.
    assert_eq!(r("/parBaseline/status"), 201, "{shown}");
    assert_eq!(r("/parBaseline/requestUriPrefix"), true, "{shown}");
    assert_eq!(r("/parBaseline/expiresIn"), 90, "{shown}");
    let cases: [(&str, u16, &[&str]); 9] = [
        ("noChallenge", 400, &["invalid_request"]),
        ("plain", 400, &["invalid_request"]),
        ("noMethod", 400, &["invalid_request"]),
        ("redirectOneChar", 400, &["invalid_request", "invalid_redirect_uri"]),
        ("unknownScope", 400, &["invalid_scope"]),
        ("jar", 400, &["invalid_request"]),
        ("unknownClient", 401, &["invalid_client"]),
        ("wrongCertificate", 401, &["invalid_client"]),
        ("noCertificate", 401, &["invalid_client"]),
    ];
    for (case, status, errors) in cases {
        let got = r(&format!("/par/{case}"));
        assert_eq!(got["status"], status, "PAR {case}: {got}");
        assert!(errors.contains(&got["error"].as_str().unwrap_or_default()), "PAR {case}: {got}");
        assert_eq!(got["requestUri"], false, "PAR {case} must give no request_uri: {got}");
    }

    // /oauth/authorize never redirects outside the service.
    for case in ["bogusRequestUri", "withoutPar", "mismatchedClient"] {
        let got = r(&format!("/authorize/{case}"));
        assert_eq!(got["status"], 400, "authorize {case}: {got}");
        assert_eq!(got["location"], Value::Null, "authorize {case}: {got}");
    }
    let extra = r("/authorize/extraRedirectUri");
    // Ignored (RFC 9126 §4: only the pushed parameters count): the flow's first page, which
    // for this caller without a certificate is the certificate_required refusal (401).
    assert_eq!(extra["status"], 401, "{extra}");
    assert_eq!(extra["inside"], true, "a redirect_uri beside request_uri is ignored or refused: {extra}");

    // The endpoints authenticate the app by its certificate; no grant, no token.
    assert_eq!(r("/tokenNoCertificate"), json!({ "status": 401, "error": "invalid_client" }), "{shown}");
    assert_eq!(r("/introspectNoCertificate"), json!({ "status": 401, "error": "invalid_client" }), "{shown}");
    assert_eq!(r("/revokeUnknown/status"), 200, "RFC 7009: an unknown token is no error");
    assert_eq!(r("/unsupportedGrant/error"), "unsupported_grant_type", "{shown}");

    // Flow A, the user's part: certificate login, OTP, the question (new device), both scopes
    // (none refused), the PIN (none and a wrong one refused), consent.
    assert_eq!(r("/flowA/login/status"), 200, "{shown}");
    assert_eq!(r("/flowA/login/clientName"), KAKEIBO_NAME);
    assert_eq!(r("/flowA/login/clientCompany"), KAKEIBO_COMPANY);
    assert_eq!(r("/flowA/login/termsShown"), true);
    assert!(text("/flowA/login/certificateLogin").contains(USER), "{shown}");
    assert_eq!(r("/flowA/login/loginIdField"), false, "the certificate gives the login ID");
    assert_eq!(r("/flowA/login/questionAsked"), true, "a new device is asked: {shown}");
    assert_eq!(r("/flowA/login/question"), QUESTION);
    assert_eq!(r("/flowA/login/afterAnswer"), "認可業務選択", "the answer, spaces around it, is right");
    assert_eq!(strings(&r("/flowA/scopes/offered")), both_scopes);
    assert_eq!(r("/flowA/scopes/initiallyChecked"), true);
    assert_eq!(r("/flowA/scopes/noneTitle"), "認可業務選択");
    assert!(!text("/flowA/scopes/noneError").is_empty(), "no scope chosen is an error: {shown}");
    assert_eq!(r("/flowA/pins/rows"), 1, "{shown}");
    assert!(text("/flowA/pins/label").contains(RESOURCE_LABEL), "{shown}");
    assert_eq!(r("/flowA/pins/pinField"), true);
    assert!(!text("/flowA/pins/noneError").is_empty(), "no resource chosen is an error: {shown}");
    assert_eq!(r("/flowA/pins/wrongTitle"), "照会用暗証番号登録");
    assert!(!text("/flowA/pins/wrongError").is_empty(), "a wrong PIN is an error: {shown}");
    assert_eq!(r("/flowA/pins/pinFieldAfterWrong"), true, "a wrong PIN registers nothing");
    assert_eq!(r("/flowA/pins/registeredAfterWrong"), false, "a wrong PIN registers nothing");
    assert_eq!(r("/flowA/consent/clientName"), KAKEIBO_NAME);
    assert_eq!(r("/flowA/consent/clientCompany"), KAKEIBO_COMPANY);
    let consented = r("/flowA/consent/scopes");
    assert_eq!(consented.as_array().map(Vec::len), Some(2), "{consented}");
    assert!(
        consented.to_string().contains("電子証明書の照会") && consented.to_string().contains("残高照会"),
        "{consented}"
    );
    assert_eq!(r("/flowA/consent/resources"), json!([RESOURCE_LABEL]));
    assert!(text("/flowA/consent/period").contains("90日"), "{shown}");
    assert!(!text("/flowA/consent/explanation").is_empty(), "{shown}");
    assert_eq!(r("/flowA/consent/allowLabel"), "許可");
    assert_eq!(r("/flowA/consent/denyLabel"), "拒否");
    assert_eq!(r("/flowA/consent/allowDisabledBefore"), true, "許可 waits for the tick");
    assert_eq!(r("/flowA/consent/continueName"), "continue", "the box labelled 認可手続きを継続する");
    assert_eq!(r("/flowA/consent/allowEnabledAfter"), true);
    // The redirect: code, state and the issuer (RFC 9207), nothing else.
    assert_eq!(r("/flowA/callback/keys"), json!(["code", "iss", "state"]), "{shown}");
    assert_eq!(r("/flowA/callback/iss"), login_url.as_str());
    assert_eq!(r("/flowA/callback/stateMatches"), true);
    // The request_uri is single-use: the browser gets an error page, no redirect.
    assert_eq!(r("/flowA/requestUriReused/status"), 400, "{shown}");
    assert_eq!(r("/flowA/requestUriReused/stayed"), true, "{shown}");
    assert!(!text("/flowA/requestUriReused/error").is_empty(), "{shown}");

    // Flow A, the app's part: tokens, refresh without rotation, introspection with the
    // certificate binding, the protected resource only with the same certificate.
    assert!(text("/flowA/token/tokenType").eq_ignore_ascii_case("bearer"), "{shown}");
    assert_eq!(r("/flowA/token/expiresIn"), 600);
    assert_eq!(words(&r("/flowA/token/scope")), both_scopes);
    assert_eq!(r("/flowA/token/refreshToken"), true);
    let details = r("/flowA/token/authorizationDetails");
    assert_eq!(details.as_array().map(Vec::len), Some(1), "{details}");
    assert_eq!(details[0]["type"], "inkan_resource");
    assert_eq!(details[0]["identifier"], resource_id.as_str());
    assert_eq!(details[0]["label"], RESOURCE_LABEL);
    assert_eq!(details[0]["actions"], json!(["read"]));
    assert_eq!(r("/flowA/refresh/accessToken"), true, "{shown}");
    assert_eq!(r("/flowA/refresh/newAccessToken"), true);
    assert_eq!(r("/flowA/refresh/refreshToken"), false, "no refresh-token rotation (FAPI 2.0)");
    let introspected = r("/flowA/introspectAccess");
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["client_id"], kakeibo_id.as_str());
    assert_eq!(introspected["username"], USER);
    assert_eq!(words(&introspected["scope"]), both_scopes);
    assert!(introspected["token_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")), "{introspected}");
    assert_eq!(r("/flowA/expectedX5t"), kakeibo_x5t.as_str(), "the script's and openssl's x5t#S256");
    assert_eq!(introspected["cnf"]["x5t#S256"], kakeibo_x5t.as_str(), "bound to the app's certificate");
    let (iat, exp, grant_expires) =
        (introspected["iat"].as_i64(), introspected["exp"].as_i64(), introspected["grant_expires_at"].as_i64());
    assert!(matches!((iat, exp), (Some(iat), Some(exp)) if exp > iat), "{introspected}");
    assert!(matches!((exp, grant_expires), (Some(exp), Some(end)) if end > exp), "the grant outlives the token");
    assert_eq!(introspected["authorization_details"][0]["identifier"], resource_id.as_str());
    assert_eq!(r("/flowA/introspectRefresh/active"), true);
    assert_eq!(r("/flowA/introspectRefresh/token_type"), "refresh_token");
    assert_eq!(r("/flowA/introspectByOther"), json!({ "active": false }), "another app sees nothing");
    assert_eq!(r("/flowA/refreshByOther/error"), "invalid_grant", "{shown}");
    assert_eq!(r("/flowA/me"), json!({ "status": 200, "error": null, "loginId": USER }));
    assert_eq!(r("/flowA/meOtherCertificate/status"), 401, "another certificate: {shown}");
    assert_eq!(r("/flowA/meOtherCertificate/error"), "invalid_token");
    assert_eq!(r("/flowA/meNoCertificate/status"), 401);
    assert!(text("/flowA/meNoCertificate/wwwAuthenticate").starts_with("Bearer"), "{shown}");
    assert_eq!(r("/flowA/meMadeUpToken/status"), 401);
    // Revoking the refreshed access token ends it alone.
    assert_eq!(
        r("/flowA/revoked"),
        json!({ "active": false, "me": 401, "firstAccessActive": true, "refreshActive": true })
    );
    // The code a second time: invalid_grant, and what its first use gave is revoked.
    assert_eq!(r("/flowA/codeReuse/ok"), false, "{shown}");
    assert_eq!(r("/flowA/codeReuse/error"), "invalid_grant");
    assert_eq!(r("/flowA/codeReuse/accessActive"), false, "the first use's access token is revoked");
    assert_eq!(r("/flowA/codeReuse/refreshActive"), false, "the first use's refresh token is revoked");
    assert_eq!(r("/flowA/codeReuse/refresh/error"), "invalid_grant");

    // Flow B: the device is known (no question), the PIN is registered; 許可 without the tick
    // and a forged POST are refused; 拒否 sends access_denied, which openid-client reports.
    assert_eq!(r("/flowB/login/questionAsked"), false, "a known device and network: {shown}");
    assert!(text("/flowB/pins/registered").contains("登録済"), "{shown}");
    assert_eq!(r("/flowB/pins/pinField"), false);
    assert_eq!(r("/flowB/consent/allowDisabledBefore"), true);
    assert_eq!(r("/flowB/consent/resources"), json!([RESOURCE_LABEL]));
    assert_eq!(r("/flowB/unticked/status"), 400, "{shown}");
    assert_eq!(r("/flowB/unticked/title"), "情報アクセス許可");
    assert!(!text("/flowB/unticked/error").is_empty(), "{shown}");
    assert_eq!(r("/flowB/csrf/status"), 403, "{shown}");
    assert_eq!(r("/flowB/english/title"), "Allow access", "{shown}");
    assert_eq!(r("/flowB/english/allow"), "Allow", "{shown}");
    assert_eq!(r("/flowB/english/continueLabel"), "Continue the authorization", "{shown}");
    assert_eq!(r("/flowB/callback/error"), "access_denied", "{shown}");
    assert_eq!(r("/flowB/callback/hasCode"), false);
    assert_eq!(r("/flowB/callback/iss"), login_url.as_str());
    assert_eq!(r("/flowB/callback/stateMatches"), true);
    assert_eq!(r("/flowB/grant/ok"), false);
    assert_eq!(r("/flowB/grant/name"), "AuthorizationResponseError");
    assert_eq!(r("/flowB/grant/error"), "access_denied");

    // Flow C: allowed, then 連携解除 on the home page ends the grant and its tokens.
    assert_eq!(r("/flowC/login/questionAsked"), false);
    assert_eq!(r("/flowC/meBefore/status"), 200, "{shown}");
    let grant = r("/flowC/grant");
    assert_eq!(grant["client_id"], kakeibo_id.as_str(), "{grant}");
    assert_eq!(grant["client_name"], KAKEIBO_NAME);
    assert_eq!(grant["login_id"], USER);
    assert_eq!(strings(&grant["scopes"]), both_scopes);
    assert_eq!(grant["resources"], json!([RESOURCE_LABEL]));
    assert!(
        text("/flowC/grantRow").contains(KAKEIBO_NAME) && text("/flowC/grantRow").contains(RESOURCE_LABEL),
        "{shown}"
    );
    assert_eq!(r("/flowC/endLabel"), "連携解除");
    assert_eq!(r("/flowC/endStatus"), 200, "{shown}");
    assert_eq!(r("/flowC/rowAfterEnd"), false, "an ended grant leaves the home page's list: {shown}");
    assert_eq!(r("/flowC/refreshAfterEnd/error"), "invalid_grant", "{shown}");
    assert_eq!(r("/flowC/accessActiveAfterEnd"), false);
    assert_eq!(r("/flowC/meAfterEnd/status"), 401);

    // Codes that do not work: expired (2 s), or with another PKCE verifier (the second user, on
    // a new device: the question the first time only).
    assert_eq!(r("/expiredCode/questionAsked"), true);
    assert_eq!(r("/wrongVerifier/questionAsked"), false);
    assert_eq!(r("/expiredCode/error"), "invalid_grant", "{shown}");
    assert_eq!(r("/wrongVerifier/error"), "invalid_grant", "{shown}");

    // Flow F (the second user): no certificate: login ID and password for the app that allows
    // it; a new device, so the question; the other app's certificate binds the token.
    assert_eq!(r("/passwordLogin/login/loginIdField"), true, "{shown}");
    assert_eq!(r("/passwordLogin/login/certificateLogin"), Value::Null);
    assert_eq!(r("/passwordLogin/login/clientName"), OTHER_NAME);
    assert_eq!(r("/passwordLogin/login/questionAsked"), true);
    assert_eq!(
        r("/passwordLogin/login/afterAnswer"),
        "情報アクセス許可",
        "one scope, no resource: straight to consent"
    );
    assert_eq!(r("/passwordLogin/consent/resources"), json!([]));
    let consented = r("/passwordLogin/consent/scopes");
    assert_eq!(consented.as_array().map(Vec::len), Some(1), "{consented}");
    assert!(consented.to_string().contains("電子証明書の照会"), "{consented}");
    assert_eq!(r("/passwordLogin/callback/keys"), json!(["code", "iss", "state"]));
    assert_eq!(words(&r("/passwordLogin/token/scope")), ["certificates:read"]);
    assert_eq!(r("/passwordLogin/token/authorizationDetails"), Value::Null, "no resource, no details");
    assert_eq!(r("/passwordLogin/introspect/active"), true, "{shown}");
    assert_eq!(r("/passwordLogin/introspect/client_id"), other_id.as_str());
    assert_eq!(r("/passwordLogin/introspect/username"), SECOND_USER);
    assert_eq!(r("/passwordLogin/introspect/cnf/x5t#S256"), other_x5t.as_str());
    assert_eq!(r("/passwordLogin/introspectByKakeibo"), json!({ "active": false }));
    assert_eq!(r("/passwordLogin/me/status"), 200);
    assert_eq!(r("/passwordLogin/me/loginId"), SECOND_USER);
    assert_eq!(r("/passwordLogin/meKakeiboCertificate/status"), 401);
    // The kakeibo app does not allow password login: the browser without a certificate gets
    // the certificate_required page (400 in spec.md, 401 as the existing error code maps it).
    let required = r("/certificateRequired");
    assert!(required["status"] == 400 || required["status"] == 401, "{required}");
    assert!(text("/certificateRequired/error").contains("電子証明書"), "{required}");
    assert_eq!(required["loginForm"], false, "{required}");

    // Last: wrong answers on a new device lock the (second user's) account at the configured
    // count.
    assert_eq!(r("/lock/login/questionAsked"), true, "{shown}");
    assert_eq!(r("/lock/wrongAnswers"), LOCKOUT, "{shown}");
    let wrong = r("/lock/wrongErrors");
    assert_eq!(wrong.as_array().map(Vec::len), Some(LOCKOUT - 1), "{shown}");
    assert!(wrong.as_array().unwrap().iter().all(|e| e.as_str().is_some_and(|e| !e.is_empty())), "{wrong}");
    assert_eq!(r("/lock/status"), 403, "account_locked: {shown}");
    assert!(text("/lock/error").contains("ロックされています"), "{shown}");
    assert_eq!(r("/lock/redirected"), false, "a locked account's flow ends on the service's page");

    // The whole run: five allowed flows (A, C, the expired code, the wrong verifier, F), no
    // request outside the service and the apps, no 5xx.
    assert_eq!(r("/allowedFlows"), 5);
    assert_eq!(r("/foreignRequests"), json!([]), "{shown}");
    assert_eq!(r("/serverErrors"), json!([]), "no 5xx answer: {shown}");
    let secrets: Vec<String> = strings(&r("/secrets"));
    assert!(secrets.len() >= 20, "tokens, codes and verifiers: {secrets:?}");
    for secret in &secrets {
        server.secret(secret);
    }
    for name in SCREENSHOTS {
        let png = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name} is not a screenshot");
    }

    // The account is locked for the certificate login too (the same counter); the first user's
    // is not.
    server.login_api(&hanako.session, &hanako.password).expect_error(403, "account_locked");
    server.login_api(session, &password).expect(200);

    // ---- the operator: list, remove ----------------------------------------------------------
    let (ids, list) = client_ids(&ca);
    assert_eq!(ids, both);
    let listed = list.as_array().unwrap().iter().find(|c| c["client_id"] == kakeibo_id.as_str()).unwrap();
    assert_eq!(listed["name"], KAKEIBO_NAME, "{listed}");
    // A PAR by the other app with curl (its certificate in the handshake).
    let par_as_other = || {
        let mut args =
            vec!["--cert".to_owned(), s(&other_crt).to_owned(), "--key".to_owned(), s(&other_key).to_owned()];
        for field in [
            "response_type=code".to_owned(),
            format!("client_id={other_id}"),
            format!("redirect_uri={OTHER_REDIRECT}"),
            "scope=certificates:read".to_owned(),
            "state=operator-check".to_owned(),
            format!("code_challenge={CHALLENGE}"),
            "code_challenge_method=S256".to_owned(),
        ] {
            args.extend(["--data-urlencode".to_owned(), field]);
        }
        server.curl(&server.login_url("/oauth/par"), &args)
    };
    par_as_other().expect(201);
    ca.inkan(["oauth", "client", "remove", &other_id]).ok();
    assert_eq!(client_ids(&ca).0, std::slice::from_ref(&kakeibo_id));
    let removed = par_as_other();
    removed.expect(401);
    assert_eq!(removed.json()["error"], "invalid_client", "{}", removed.text());

    // ---- the log and the audit trail ---------------------------------------------------------
    // Watched: no secret in the log (tokens, codes, verifiers, PINs, answers, the password, the
    // OTP secret), no 5xx to curl.
    server.stop();
    let audit = read(&ca.file("audit/audit.log"));
    let events: Vec<String> = audit
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line ({e}): {line}"));
            line["event"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    let counts: Vec<(&str, usize)> = [
        "oauth.par",
        "oauth.authorize",
        "oauth.granted",
        "oauth.denied",
        "oauth.token",
        "oauth.refresh",
        "oauth.revoked",
        "oauth.code_reused",
        "oauth.grant_ended",
        "oauth.question_wrong",
        "resource.pin_registered",
        "oauth.client_added",
        "oauth.client_removed",
        "resource.added",
    ]
    .iter()
    .map(|name| (*name, count(name)))
    .collect();
    let expect_count = |name: &str, at_least: usize, at_most: usize| {
        let n = count(name);
        assert!((at_least..=at_most).contains(&n), "{name}: {n} lines, expected {at_least}..={at_most}: {counts:?}");
    };
    expect_count("oauth.par", 8, usize::MAX);
    expect_count("oauth.authorize", 7, usize::MAX);
    // The five allowed flows; the unticked and forged consents granted nothing.
    expect_count("oauth.granted", 5, 5);
    expect_count("oauth.denied", 1, 1);
    // The codes of flows A, C and F.
    expect_count("oauth.token", 3, usize::MAX);
    expect_count("oauth.refresh", 1, usize::MAX);
    expect_count("oauth.revoked", 1, usize::MAX);
    expect_count("oauth.code_reused", 1, 1);
    expect_count("oauth.grant_ended", 1, usize::MAX);
    expect_count("oauth.question_wrong", LOCKOUT, LOCKOUT);
    // The wrong PIN registered nothing: one registration, flow A's right PIN.
    expect_count("resource.pin_registered", 1, 1);
    expect_count("oauth.client_added", 2, 2);
    expect_count("oauth.client_removed", 1, 1);
    expect_count("resource.added", 1, 1);
    let mut never = secrets.clone();
    never.extend(
        [
            RESOURCE_PIN,
            WRONG_PIN,
            ANSWER,
            WRONG_ANSWER,
            &password,
            &taro.otp_secret,
            &hanako.password,
            &hanako.otp_secret,
        ]
        .map(String::from),
    );
    for secret in &never {
        assert!(
            !audit.contains(secret.as_str()),
            "a secret in the audit trail: {}",
            secret.chars().take(6).collect::<String>()
        );
    }
}

/// The verifier of [`CHALLENGE`] (RFC 7636 appendix B).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A master sees its general user's grant on `/api/v1/grants` and ends it: the client's tokens
/// stop at once, and the audit trail names the master. The general user sees only its own, and
/// cannot end a grant it does not see. (curl drives the pages here; the browser test above
/// covers the user's own 連携解除.)
#[test]
fn a_master_sees_and_ends_its_general_users_grant() {
    let ca = TestCa::init(&["--org", ORG]);
    ca.configure(&[("rate_limit_per_minute = 30", "rate_limit_per_minute = 1000")]);
    ca.add_user("boss", "master", None);
    ca.add_user("boss-01", "general", Some("boss"));
    ca.add_user("boss-02", "general", Some("boss"));
    let work = ca.work().to_owned();
    let app_key = work.join("app.key");
    let (app_crt, _) = ca.issue(&p256_csr(&work, "app"), "app", "app", &["--chain"]);
    let server = Service::watched(&ca, &[]);
    let app = add_client(
        &ca,
        &[
            "--name",
            "App",
            "--company",
            "App K.K.",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "certificates:read",
            "--tls-subject",
            &format!("O={ORG}, CN=app"),
        ],
    );
    let app_id = app["client_id"].as_str().unwrap().to_owned();
    let as_app = |path: &str, fields: &[String]| {
        let mut args = vec!["--cert".to_owned(), s(&app_crt).to_owned(), "--key".to_owned(), s(&app_key).to_owned()];
        for field in fields {
            args.extend(["--data-urlencode".to_owned(), field.clone()]);
        }
        server.curl(&server.login_url(path), &args)
    };
    let person = |login_id: &str| {
        let enrolled = server.acquire(login_id, login_id);
        Client::pem(&enrolled.cert, &enrolled.key, &work.join(format!("{login_id}.jar")))
    };
    let (worker, boss, other) = (person("boss-01"), person("boss"), person("boss-02"));

    // boss-01 allows the app through the pages (one scope: no choice page, no question asked
    // without one registered).
    let par = as_app(
        "/oauth/par",
        &[
            format!("client_id={app_id}"),
            "response_type=code".into(),
            "redirect_uri=https://app.example/cb".into(),
            "scope=certificates:read".into(),
            format!("code_challenge={CHALLENGE}"),
            "code_challenge_method=S256".into(),
            "state=s1".into(),
        ],
    );
    par.expect(201);
    let request_uri = par.json()["request_uri"].as_str().unwrap().to_owned();
    let page = server.curl(
        &server.login_url(&format!("/oauth/authorize?client_id={app_id}&request_uri={request_uri}")),
        &worker.args,
    );
    page.expect(200);
    let csrf = common::between(&page.text(), "name=\"csrf\" value=\"", "\"");
    let form = |path: &str, fields: &[String]| {
        let mut args = worker.args.clone();
        for field in fields {
            args.extend(["--data-urlencode".to_owned(), field.clone()]);
        }
        server.curl(&server.login_url(path), &args)
    };
    let consent =
        form("/oauth/flow/login", &[format!("csrf={csrf}"), format!("password={}", user_password("boss-01"))]);
    consent.expect(200);
    assert!(consent.text().contains("data-testid=\"consent-form\""), "{}", consent.text());
    let back = form("/oauth/flow/consent", &[format!("csrf={csrf}"), "decision=allow".into(), "continue=on".into()]);
    back.expect(303);
    let location = back.header_values("location").pop().unwrap_or_default();
    assert!(location.starts_with("https://app.example/cb?code="), "{location}");
    assert!(location.contains("&state=s1&iss="), "{location}");
    let code = location.split("code=").nth(1).and_then(|c| c.split('&').next()).unwrap().to_owned();
    let tokens = as_app(
        "/oauth/token",
        &[
            format!("client_id={app_id}"),
            "grant_type=authorization_code".into(),
            format!("code={code}"),
            "redirect_uri=https://app.example/cb".into(),
            format!("code_verifier={VERIFIER}"),
        ],
    );
    tokens.expect(200);
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    server.secret(&access);
    let introspect = || as_app("/oauth/introspect", &[format!("client_id={app_id}"), format!("token={access}")]).json();
    assert_eq!(introspect()["active"], true);

    // The master's list has its user's grant; the other general user's has none.
    server.login_api(&boss, &user_password("boss")).expect(200);
    server.login_api(&other, &user_password("boss-02")).expect(200);
    let listed = server.login_get(&boss, "/api/v1/grants").json();
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{listed}");
    assert_eq!(grants[0]["login_id"], "boss-01");
    assert_eq!(grants[0]["client_id"], app_id.as_str());
    let id = grants[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.login_get(&other, "/api/v1/grants").json()["grants"], json!([]));
    let refused = server.login_post_empty(&other, &format!("/api/v1/grants/{id}/end"));
    refused.expect_error(404, "not_found");
    assert_eq!(introspect()["active"], true, "a user who may not see the grant did not end it");

    // The master ends it: the token stops at once.
    server.login_post_empty(&boss, &format!("/api/v1/grants/{id}/end")).expect(200);
    assert_eq!(introspect(), json!({ "active": false }));
    assert_eq!(server.login_get(&boss, "/api/v1/grants").json()["grants"], json!([]));
    let log = server.stop();
    assert!(!log.contains(&access) && !log.contains(&code), "no token or code in the log");
    let audit = read(&ca.file("audit/audit.log"));
    let ended: Vec<&str> = audit.lines().filter(|l| l.contains("\"event\":\"oauth.grant_ended\"")).collect();
    assert_eq!(ended.len(), 1, "{audit}");
    assert!(ended[0].contains("\"by\":\"boss\"") && ended[0].contains("\"login_id\":\"boss-01\""), "{}", ended[0]);
    assert!(!audit.contains(&access) && !audit.contains(&code), "no token or code in the audit trail");
}
