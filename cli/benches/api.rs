//! Durable issuance through the HTTPS API, beside the same run with durability off and beside
//! cfssl (Debian's golang-cfssl, `cfssl serve` with a SQLite certificate database, signing the
//! same CSRs with the same CA key over HTTPS). Prints figures; asserts nothing.
//!
//! `cargo bench -p inkan --bench api [-- REQUESTS]` (default 600 issuances per figure).
//!
//! For inkan one issuance is `POST /api/v1/enrollments/{ticket}/csr`: the service checks the
//! ticket, the signer process validates the CSR, records, signs and records, the service records
//! the certificate and supersedes the account's previous one, each step flushed before the
//! answer. Tickets are made before the clock starts (each costs an argon2id password check,
//! which is not issuance). For cfssl one issuance is `POST /api/v1/cfssl/sign`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

const ROOT_PASS: &str = "bench root passphrase";
const CA_PASS: &str = "bench issuing passphrase";
const USER_PASS: &str = "bench user password";
const CONCURRENCY: [usize; 3] = [1, 8, 64];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inkan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_ROOT_PASSPHRASE", ROOT_PASS).env("INKAN_CA_PASSPHRASE", CA_PASS).env("INKAN_USER_PASSWORD", USER_PASS);
    c
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn start_inkan(dir: &Path, pass_file: &Path, durable: bool) -> (Server, u16) {
    let mut cmd = inkan();
    cmd.args(["serve", "--data-dir", s(dir), "--ca-passphrase-file", s(pass_file)])
        .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env_remove("INKAN_CA_PASSPHRASE")
        .env("INKAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !durable {
        cmd.arg("--danger-no-fsync");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut port = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("https://localhost:").nth(1)
            && line.contains("/cert/acquire")
        {
            port = rest.split('/').next().and_then(|p| p.parse().ok());
            break;
        }
    }
    (Server(child), port.expect("serve reported its port"))
}

struct Client {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(port: u16, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let host = format!("localhost:{port}");
        let send = match tls {
            Some(config) => {
                let name = ServerName::try_from("localhost").unwrap();
                let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                send
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                send
            }
        };
        Self { send, host }
    }

    async fn post(&mut self, path: &str, body: String) -> (u16, Vec<u8>) {
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send.ready().await.unwrap();
        let response = self.send.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }
}

fn tls_config(root: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).unwrap();
    let der = pki::encoding::decode_one(&pem, "certificate", &["CERTIFICATE"]).unwrap();
    roots.add(rustls::pki_types::CertificateDer::from(der)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// `clients` connections, each sending its share of `bodies` to `path_of(i)` one after
/// another; every answer must be `expect`.
async fn load(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    jobs: Vec<(String, String)>,
    expect: u16,
) -> Figures {
    let mut per_client: Vec<Vec<(String, String)>> = vec![Vec::new(); clients];
    for (i, job) in jobs.into_iter().enumerate() {
        per_client[i % clients].push(job);
    }
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Client::connect(port, tls.clone()).await);
    }
    let total: usize = per_client.iter().map(Vec::len).sum();
    let started = Instant::now();
    let tasks: Vec<_> = per_client
        .into_iter()
        .zip(connections)
        .map(|(jobs, mut client)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(jobs.len());
                for (path, body) in jobs {
                    let t = Instant::now();
                    let (status, answer) = client.post(&path, body).await;
                    assert_eq!(status, expect, "{path}: {}", String::from_utf8_lossy(&answer));
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Figures { rate: total as f64 / elapsed.as_secs_f64(), p50: at(0.5), p99: at(0.99) }
}

fn csr_pem(dir: &Path, name: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    run(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&key),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-key",
        s(&key),
        "-subj",
        &format!("/CN={name}"),
        "-out",
        s(&csr),
    ]));
    std::fs::read_to_string(csr).unwrap()
}

fn print(label: &str, clients: usize, f: &Figures) {
    println!(
        "{label:<34} {clients:>3} clients  {:>8.0} issued/s   p50 {:>7.1} ms   p99 {:>7.1} ms",
        f.rate,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(600);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let dir = work.join("data");
    run(inkan().args(["init", "--data-dir", s(&dir)]));
    let config = dir.join("inkan.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("renewal_window_days = 30", "renewal_window_days = 400")
            .replace("rate_limit_per_minute = 30", "rate_limit_per_minute = 100000000"),
    )
    .unwrap();
    let pass_file = work.join("ca.pass");
    std::fs::write(&pass_file, format!("{CA_PASS}\n")).unwrap();
    let max_clients = *CONCURRENCY.iter().max().unwrap();
    let accounts: Vec<String> = (0..max_clients).map(|i| format!("bench{i:02}")).collect();
    for account in &accounts {
        run(inkan().args(["user", "add", "--data-dir", s(&dir), "--login-id", account, "--role", "master"]));
    }
    let csrs: Vec<String> = accounts.iter().map(|a| csr_pem(work, a)).collect();
    let root = dir.join("root/root.crt");
    let tls = tls_config(&root);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("HTTPS issuance benchmark: {requests} issuances per figure, {cores} cores, client in the same machine");

    let mut results = Vec::new();
    for durable in [true, false] {
        let label = if durable { "inkan (durable)" } else { "inkan (durability off)" };
        let (server, port) = start_inkan(&dir, &pass_file, durable);
        for clients in CONCURRENCY {
            // Tickets first, off the clock: one per issuance, spread over the clients' accounts.
            let mut ticket_jobs = Vec::new();
            for i in 0..requests {
                let account = &accounts[i % clients];
                ticket_jobs.push((
                    "/api/v1/enrollments".to_owned(),
                    format!(r#"{{"login_id":"{account}","password":"{USER_PASS}"}}"#),
                ));
            }
            let mut ticket_client = Client::connect(port, Some(tls.clone())).await;
            let mut jobs = Vec::new();
            for (i, (path, body)) in ticket_jobs.into_iter().enumerate() {
                let (status, answer) = ticket_client.post(&path, body).await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                let ticket: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                let csr = &csrs[i % clients];
                jobs.push((
                    format!("/api/v1/enrollments/{}/csr", ticket["ticket"].as_str().unwrap()),
                    serde_json::json!({ "csr_pem": csr }).to_string(),
                ));
            }
            let figures = load(port, Some(tls.clone()), clients, jobs, 201).await;
            print(label, clients, &figures);
            results.push((label, clients, figures));
        }
        drop(server);
    }

    // cfssl: the same issuing CA key (unencrypted for it), its own SQLite certificate database,
    // the same TLS certificate as inkan's service, the same CSRs.
    let have_cfssl = Command::new("cfssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !have_cfssl {
        println!("cfssl not installed (Debian package golang-cfssl): no comparison figures");
        return;
    }
    let cf = work.join("cfssl");
    std::fs::create_dir_all(&cf).unwrap();
    let ca_key = cf.join("ca-key.pem");
    run(Command::new("openssl")
        .args(["ec", "-in", s(&dir.join("ca/ca.key")), "-passin", "env:INKAN_CA_PASSPHRASE", "-out", s(&ca_key)])
        .env("INKAN_CA_PASSPHRASE", CA_PASS));
    let tls_key = cf.join("tls-key.pem");
    run(Command::new("openssl").args(["ec", "-in", s(&dir.join("server/server.key")), "-out", s(&tls_key)]));
    let db = cf.join("certs.db");
    // The certificate table cfssl's certdb writes to (columns from its documentation).
    run(Command::new("sqlite3").arg(&db).arg(
        "CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, \
         ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL, \
         PRIMARY KEY(serial_number, authority_key_identifier)); \
         CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, \
         body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));",
    ));
    let db_config = cf.join("db.json");
    std::fs::write(&db_config, serde_json::json!({ "driver": "sqlite3", "data_source": db }).to_string()).unwrap();
    let signing = cf.join("config.json");
    std::fs::write(
        &signing,
        r#"{"signing":{"default":{"expiry":"8760h","usages":["digital signature","client auth"]}}}"#,
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("cfssl")
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string(), "-loglevel", "4"])
        .args(["-ca", s(&dir.join("ca/ca.crt")), "-ca-key", s(&ca_key), "-config", s(&signing)])
        .args(["-db-config", s(&db_config), "-tls-cert", s(&dir.join("server/server.crt")), "-tls-key", s(&tls_key)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "cfssl did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for clients in CONCURRENCY {
        let jobs = (0..requests)
            .map(|i| {
                let body = serde_json::json!({ "certificate_request": csrs[i % clients] }).to_string();
                ("/api/v1/cfssl/sign".to_owned(), body)
            })
            .collect();
        let figures = load(port, Some(tls.clone()), clients, jobs, 200).await;
        print("cfssl 1.2.0 (SQLite certdb)", clients, &figures);
        results.push(("cfssl 1.2.0 (SQLite certdb)", clients, figures));
    }
    drop(server);
    let recorded = run(Command::new("sqlite3").arg(&db).arg("select count(*) from certificates"));
    println!("cfssl recorded {} certificates in its database", recorded.trim());
    println!();
    for clients in CONCURRENCY {
        let rate = |label: &str| results.iter().find(|(l, c, _)| *l == label && *c == clients).map(|(_, _, f)| f.rate);
        if let (Some(ours), Some(theirs)) = (rate("inkan (durable)"), rate("cfssl 1.2.0 (SQLite certdb)")) {
            println!("{clients:>3} clients: durable inkan / cfssl = {:.2}", ours / theirs);
        }
    }
}
