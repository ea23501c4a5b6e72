//! OCSP responses per second on the cached path: `inkan serve` (release build) answers
//! `GET /ocsp/{request}` for one certificate while wrk (Debian's) drives it from the same
//! machine. Prints figures; asserts nothing. `cargo bench -p inkan --bench ocsp [-- SECONDS]`

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT_PASS: &str = "bench root passphrase";
const CA_PASS: &str = "bench issuing passphrase";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk is not installed (Debian package wrk): no figures");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    run(Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["init", "--data-dir", s(&dir)])
        .env("INKAN_ROOT_PASSPHRASE", ROOT_PASS)
        .env("INKAN_CA_PASSPHRASE", CA_PASS));
    let pass = tmp.path().join("ca.pass");
    std::fs::write(&pass, format!("{CA_PASS}\n")).expect("write");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["serve", "--data-dir", s(&dir), "--ca-passphrase-file", s(&pass)])
        .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env("INKAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut http = None;
    for line in BufReader::new(serve.stdout.take().expect("stdout")).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("http://").nth(1)
            && line.contains("root.crt")
        {
            http = rest.split('/').next().map(str::to_owned);
            break;
        }
    }
    let http = http.expect("serve printed its HTTP address");

    // The service's own TLS certificate is in the registry: ask about it.
    let chain = std::fs::read_to_string(dir.join("server/server.crt")).expect("server.crt");
    let leaf = tmp.path().join("leaf.pem");
    let end = chain.find("-----END CERTIFICATE-----").expect("pem") + "-----END CERTIFICATE-----\n".len();
    std::fs::write(&leaf, &chain[..end]).expect("write");
    let request = tmp.path().join("req.der");
    run(Command::new("openssl").args([
        "ocsp",
        "-issuer",
        s(&dir.join("ca/ca.crt")),
        "-cert",
        s(&leaf),
        "-no_nonce",
        "-reqout",
        s(&request),
    ]));
    let b64 = run(Command::new("openssl").args(["base64", "-A", "-in", s(&request)]));
    let encoded = b64.trim().replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let url = format!("http://{http}/ocsp/{encoded}");

    // Warm the cache and check the answer with openssl.
    let response = tmp.path().join("resp.der");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("curl").args(["-sS", "-o", s(&response), "-w", "%{http_code}", &url]).output();
        if ok.is_ok_and(|o| o.stdout == b"200") {
            break;
        }
        assert!(Instant::now() < deadline, "no OCSP answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = run(Command::new("openssl").args(["ocsp", "-respin", s(&response), "-resp_text", "-noverify"]));
    let status = status.lines().find(|l| l.contains("Cert Status")).unwrap_or("?").trim().to_owned();
    println!("OCSP on the cached path: GET /ocsp/{{request}} for one certificate ({status}), {seconds} s per run");
    for connections in [1, 16, 64] {
        let threads = connections.min(2);
        let out = run(Command::new("wrk").args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            &url,
        ]));
        let rate = out.lines().find(|l| l.starts_with("Requests/sec")).unwrap_or("Requests/sec: ?").trim().to_owned();
        let p50 = out.lines().find(|l| l.trim_start().starts_with("50%")).unwrap_or("").trim().to_owned();
        let p99 = out.lines().find(|l| l.trim_start().starts_with("99%")).unwrap_or("").trim().to_owned();
        let errors = out
            .lines()
            .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
            .unwrap_or("no errors")
            .trim()
            .to_owned();
        println!("{connections:>3} connections: {rate:<24} latency p50 {p50:<12} p99 {p99:<12} {errors}");
    }
    let metrics = run(Command::new("curl").args(["-sS", &format!("http://{http}/metrics")]));
    for line in metrics.lines().filter(|l| l.starts_with("inkan_ocsp_requests_total")) {
        println!("  {line}");
    }
    let _ = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    let _ = serve.wait();
}
