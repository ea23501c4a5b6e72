//! API consent under load: what resource servers and clients call most. Token introspection,
//! the code exchange, the refresh grant, and inkan's `GET /api/v1/me` with a bearer token, each
//! at 1 and 16 connections, every connection a TLS session that presents the client's
//! certificate (tls_client_auth; the token is bound to it).
//!
//! `cargo bench -p inkan --bench oauth [-- SECONDS]` (default 5 s per figure).
//!
//! Set-up (not timed): `inkan init`, a user and a client app with certificates from `inkan
//! issue`, the client registered, then authorizations driven through the real pages with curl
//! (PAR, authorize, certificate login + password, consent) to get the codes the exchange
//! figure spends. Every answer counted must be a 200 whose body says what it should
//! (`"active":true`, an access token, the user's login ID); anything else stops the benchmark
//! with the reason. Needs curl and openssl.

#![allow(clippy::unwrap_used)]

mod support;
use support::Server;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const ROOT_PASS: &str = "bench root passphrase";
const CA_PASS: &str = "bench issuing passphrase";
const USER_PASS: &str = "bench user password";
/// Codes made for the exchange figure (each costs a password check in the set-up).
const CODES: usize = 160;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inkan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS)
        .env("INKAN_USER_PASSWORD", USER_PASS)
        .env("INKAN_DATA_DIR", dir);
    c
}

/// One authorization through the pages with curl; returns its code.
fn authorize(work: &Path, login: &str, n: usize) -> Result<String, String> {
    let curl = |cert: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", s(&work.join("root.crt"))])
            .args(["--cert", s(&work.join(format!("{cert}.crt"))), "--key", s(&work.join(format!("{cert}.key")))])
            .args(extra)
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        if !out.status.success() {
            return Err(format!("curl {extra:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let par = curl(
        "app",
        &[
            &format!("{login}/oauth/par"),
            "-d",
            "client_id=bench",
            "-d",
            "response_type=code",
            "-d",
            "redirect_uri=https://bench.example/cb",
            "-d",
            "scope=certificates:read",
            "-d",
            &format!("code_challenge={challenge}"),
            "-d",
            "code_challenge_method=S256",
        ],
    )?;
    let uri = par.split("\"request_uri\":\"").nth(1).and_then(|r| r.split('"').next()).ok_or(format!("PAR: {par}"))?;
    let jar = work.join(format!("jar-{n}"));
    let jar = s(&jar);
    let page =
        curl("user", &["-b", jar, "-c", jar, &format!("{login}/oauth/authorize?client_id=bench&request_uri={uri}")])?;
    let csrf =
        page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).ok_or("no form")?.to_owned();
    let consent = curl(
        "user",
        &[
            "-b",
            jar,
            "-c",
            jar,
            &format!("{login}/oauth/flow/login"),
            "-d",
            &format!("csrf={csrf}"),
            "-d",
            &format!("password={USER_PASS}"),
        ],
    )?;
    if !consent.contains("data-testid=\"consent-form\"") {
        return Err("the login did not lead to the consent page".into());
    }
    let location = curl(
        "user",
        &[
            "-b",
            jar,
            "-c",
            jar,
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}",
            &format!("{login}/oauth/flow/consent"),
            "-d",
            &format!("csrf={csrf}"),
            "-d",
            "decision=allow",
            "-d",
            "continue=on",
        ],
    )?;
    location
        .split("code=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .map(str::to_owned)
        .ok_or(format!("no code in {location:?}"))
}

/// A TLS client configuration that trusts the test root and presents the app's certificate.
fn tls_config(work: &Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let root = pem::parse(std::fs::read(work.join("root.crt")).unwrap()).unwrap();
    roots.add(CertificateDer::from(root.contents().to_vec())).unwrap();
    let chain = vec![CertificateDer::from(
        pem::parse(std::fs::read(work.join("app.crt")).unwrap()).unwrap().contents().to_vec(),
    )];
    let key = pem::parse(std::fs::read(work.join("app.key")).unwrap()).unwrap();
    let key = PrivateKeyDer::try_from(key.contents().to_vec()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// What one request is, and what its answer must contain.
#[derive(Clone)]
enum Call {
    /// POST a form.
    Form { path: &'static str, body: String, expect: &'static str },
    /// The code exchange: one code per request, from a shared list.
    Exchange { codes: Arc<Vec<String>>, next: Arc<AtomicUsize> },
    /// GET with a bearer token.
    Bearer { path: &'static str, token: String, expect: &'static str },
}

/// Runs `call` on `connections` connections for `seconds` (or until the codes run out); returns
/// the rate and the median and 99th percentile latencies.
async fn load(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    call: Call,
    connections: usize,
    seconds: u64,
) -> Result<(f64, Duration, Duration, usize), String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (tls, call) = (tls.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).ok();
            let connector = tokio_rustls::TlsConnector::from(tls);
            let stream = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let (request, expect) = match &call {
                    Call::Form { path, body, expect } => (form(path, body.clone()), *expect),
                    Call::Exchange { codes, next } => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(code) = codes.get(i) else { break };
                        let body = format!(
                            "client_id=bench&grant_type=authorization_code&redirect_uri=https%3A%2F%2Fbench.example%2Fcb&code={code}&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
                        );
                        (form("/oauth/token", body), "\"access_token\"")
                    }
                    Call::Bearer { path, token, expect } => {
                        let request = hyper::Request::get(*path)
                            .header("host", "localhost")
                            .header("authorization", format!("Bearer {token}"))
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        (request, *expect)
                    }
                };
                let sent = Instant::now();
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                latencies.push(sent.elapsed());
                let text = String::from_utf8_lossy(&body);
                if status != 200 || !text.contains(expect) {
                    return Err(format!("answer {status}: {text}"));
                }
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed().min(Duration::from_secs(seconds)).max(Duration::from_millis(1));
    let elapsed = if matches!(call, Call::Exchange { .. }) { start.elapsed() } else { elapsed };
    if all.is_empty() {
        return Err("no request was answered".into());
    }
    all.sort();
    let pct = |p: usize| all[(all.len() * p / 100).min(all.len() - 1)];
    Ok((all.len() as f64 / elapsed.as_secs_f64(), pct(50), pct(99), all.len()))
}

fn form(path: &str, body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oauth benchmark failed, no further figures: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let tmp = tempfile::Builder::new().prefix("inkan-bench-oauth-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (work, dir) = (tmp.path().to_path_buf(), tmp.path().join("data"));
    run(inkan(&dir).args(["init", "--org", "Bench Bank"]));
    let config = dir.join("inkan.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("rate_limit_per_minute = 30", "rate_limit_per_minute = 1000000")).unwrap();
    for (account, name) in [("bench-user", "user"), ("bench-app", "app")] {
        run(inkan(&dir).args(["user", "add", "--login-id", account, "--role", "master"]));
        let key = work.join(format!("{name}.key"));
        let csr = work.join(format!("{name}.csr"));
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-keyout", s(&key), "-subj", &format!("/CN={account}"), "-out", s(&csr)]));
        run(inkan(&dir).args([
            "issue",
            "--csr",
            s(&csr),
            "--account",
            account,
            "--out",
            s(&work.join(format!("{name}.crt"))),
        ]));
    }
    std::fs::copy(dir.join("root/root.crt"), work.join("root.crt")).unwrap();
    run(inkan(&dir)
        .args(["oauth", "client", "add", "--id", "bench", "--name", "Bench", "--company", "Bench K.K."])
        .args(["--redirect-uri", "https://bench.example/cb", "--scope", "certificates:read"])
        .args(["--tls-subject", "O=Bench Bank, CN=bench-app"]));
    let pass = work.join("ca.pass");
    std::fs::write(&pass, format!("{CA_PASS}\n")).unwrap();
    let mut child = inkan(&dir)
        .env_remove("INKAN_CA_PASSPHRASE")
        .args(["serve", "--ca-passphrase-file", s(&pass)])
        .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env("INKAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut addr = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        // "  certificate login (電子証明書ログイン): https://localhost:PORT/"
        if line.contains("certificate login") {
            let port = line.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
            addr = port.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)));
            break;
        }
    }
    let addr = addr.ok_or("inkan serve stopped before printing its addresses")?;
    let login = format!("https://localhost:{}", addr.port());

    let started = Instant::now();
    let codes: Vec<String> = (0..CODES).map(|n| authorize(&work, &login, n)).collect::<Result<_, _>>()?;
    println!("set-up: {CODES} authorizations through the pages in {:.1} s", started.elapsed().as_secs_f64());
    // One grant's tokens for the other figures.
    let first = authorize(&work, &login, CODES)?;
    let tokens = run(Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            s(&work.join("root.crt")),
            "--cert",
            s(&work.join("app.crt")),
            "--key",
            s(&work.join("app.key")),
        ])
        .args([&format!("{login}/oauth/token"), "-d", "client_id=bench", "-d", "grant_type=authorization_code"])
        .args(["-d", "redirect_uri=https://bench.example/cb", "-d", &format!("code={first}")])
        .args(["-d", "code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"]));
    let field = |name: &str| {
        tokens.split(&format!("\"{name}\":\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_owned)
    };
    let (access, refresh) =
        field("access_token").zip(field("refresh_token")).ok_or(format!("token answer: {tokens}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tls = tls_config(&work);
    println!("{:<34} {:>5} {:>10} {:>9} {:>9}", "figure", "conns", "per second", "p50 ms", "p99 ms");
    // Half the codes for each number of connections.
    let halves: Vec<Arc<Vec<String>>> = codes.chunks(CODES / 2).map(|c| Arc::new(c.to_vec())).collect();
    for (connections, codes) in [1, 16].into_iter().zip(halves) {
        let calls = [
            (
                "introspection",
                Call::Form {
                    path: "/oauth/introspect",
                    body: format!("client_id=bench&token={access}"),
                    expect: "\"active\":true",
                },
            ),
            (
                "refresh grant",
                Call::Form {
                    path: "/oauth/token",
                    body: format!("client_id=bench&grant_type=refresh_token&refresh_token={refresh}"),
                    expect: "\"access_token\"",
                },
            ),
            (
                "GET /api/v1/me (bearer)",
                Call::Bearer { path: "/api/v1/me", token: access.clone(), expect: "\"login_id\":\"bench-user\"" },
            ),
            ("code exchange", Call::Exchange { codes: codes.clone(), next: Arc::new(AtomicUsize::new(0)) }),
        ];
        for (name, call) in calls {
            let (rate, p50, p99, n) = runtime.block_on(load(addr, tls.clone(), call, connections, seconds))?;
            println!(
                "{name:<34} {connections:>5} {rate:>10.0} {:>9.2} {:>9.2}   ({n} answers checked)",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
