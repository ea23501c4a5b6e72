//! Connection exhaustion (issue 11): thousands of connections that send nothing, from one
//! address and from several, against every listener. The caps close what is over them at once,
//! the deadlines close the rest, a fresh client from another address is answered in under a
//! second meanwhile, the admin socket answers, and the web worker's memory stays bounded.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Service, TestCa};

const FIRST_REQUEST: Duration = Duration::from_secs(2);

fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB")
}

/// How many of `streams` the server still holds open (a read would block).
fn still_open(streams: &mut [TcpStream]) -> usize {
    streams
        .iter_mut()
        .map(|stream| {
            stream.set_nonblocking(true).expect("nonblocking");
            matches!(stream.read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .filter(|open| *open)
        .count()
}

/// A request from 127.0.0.2 (not the flooding address): its status and how long it took.
fn fresh(server: &Service, url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let reply = server.curl(url, &["--interface", "127.0.0.2", "--http1.1"]);
    (reply.status, started.elapsed())
}

fn metric(text: &str, sample: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(sample)).unwrap_or_else(|| panic!("no {sample} in\n{text}"));
    line.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).expect("a number")
}

#[test]
fn idle_connections_cannot_exhaust_the_service() {
    raise_open_files();
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[
        ("max_connections = 4096", "max_connections = 1500"),
        ("max_connections_per_address = 256", "max_connections_per_address = 1000"),
        ("first_request_timeout_secs = 10", "first_request_timeout_secs = 2"),
        ("idle_timeout_secs = 60", "idle_timeout_secs = 3"),
    ]);
    let server = Service::watched(&ca, &[]);
    let worker = server.worker_pid.expect("a web worker");
    let rss_before = vm_rss_kib(worker);
    let listeners = [
        ("public", server.public, server.public_url("/cert/acquire"), 200),
        ("login", server.login, server.login_url("/"), 401),
        ("http", server.http, server.http_url("/ca.crt"), 200),
    ];
    for (name, port, url, expected) in &listeners {
        // 5,000 connections that send nothing, from one address.
        let started = Instant::now();
        let mut idle: Vec<TcpStream> =
            (0..5000).map(|_| TcpStream::connect(("127.0.0.1", *port)).expect("connect")).collect();
        eprintln!("{name}: 5000 idle connections opened in {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        let held = still_open(&mut idle);
        assert!(held <= 1000, "{name}: {held} held from one address, over its cap of 1000");
        // Meanwhile a fresh client is answered at once, and so is the operator.
        let (status, took) = fresh(&server, url);
        assert_eq!(status, *expected, "{name}: a fresh request");
        assert!(took < Duration::from_secs(1), "{name}: a fresh request took {took:?}");
        ca.inkan(["user", "list"]).ok();
        // The held ones are closed once they missed their first request.
        std::thread::sleep(FIRST_REQUEST + Duration::from_millis(1500));
        assert_eq!(still_open(&mut idle), 0, "{name}: idle connections outlived the deadline");
        eprintln!("{name}: held {held}, all closed within the deadline");
    }
    let metrics = server.metrics();
    for (name, ..) in &listeners {
        let refused =
            metric(&metrics, &format!("inkan_connections_refused_total{{listener=\"{name}\",cap=\"per_address\"}}"));
        let timed_out = metric(&metrics, &format!("inkan_connections_timed_out_total{{listener=\"{name}\"}}"));
        // Every one of the 5,000 was closed by the server: at once over the cap, or by the
        // deadline.
        assert!(refused + timed_out >= 5000, "{name}: {refused} refused by the cap, {timed_out} timed out");
        assert!(refused > 0 && timed_out > 0, "{name}: {refused} refused by the cap, {timed_out} timed out");
    }
    assert_eq!(metric(&metrics, "inkan_connections_limit{listener=\"public\",scope=\"total\"}"), 1500);

    // 2,000 TLS connections that finish their handshake and then send nothing, from eight
    // addresses, against each HTTPS listener: the total cap (1,500) holds, the deadline closes
    // them all.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let root = rustls_pki_types::CertificateDer::from(
        pem::parse(common::read(&ca.root_crt())).expect("root PEM").into_contents(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut closed = 0;
    for (name, port) in [("public", server.public), ("login", server.login)] {
        let tls: Vec<_> = runtime.block_on(async {
            let handshakes: Vec<_> = (0..2000u32)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let socket = tokio::net::TcpSocket::new_v4().ok()?;
                        socket.bind(SocketAddr::from(([127, 0, 0, (i % 8 + 1) as u8], 0))).ok()?;
                        let tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.ok()?;
                        let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
                        let connector = tokio_rustls::TlsConnector::from(client);
                        tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp)).await.ok()?.ok()
                    })
                })
                .collect();
            let mut done = Vec::new();
            for handshake in handshakes {
                if let Ok(Some(stream)) = handshake.await {
                    done.push(stream);
                }
            }
            done
        });
        eprintln!("{name}: {} of 2000 TLS handshakes finished", tls.len());
        let open = metric(&server.metrics(), &format!("inkan_connections_open{{listener=\"{name}\"}}"));
        assert!(open <= 1500, "{open} open on the {name} listener, over its total cap of 1500");
        assert!(tls.len() >= 1000, "{name}: only {} TLS connections got through", tls.len());
        std::thread::sleep(FIRST_REQUEST + Duration::from_millis(1500));
        let shut = runtime.block_on(async {
            let mut shut = 0;
            for mut stream in tls {
                use tokio::io::AsyncReadExt;
                let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut [0u8; 16])).await;
                if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                    shut += 1;
                }
            }
            shut
        });
        eprintln!("{name}: {shut} TLS connections closed by the deadline");
        assert!(shut >= 1000, "{name}: {shut} TLS connections closed by the deadline");
        closed += shut;
    }
    let rss_after = vm_rss_kib(worker);
    eprintln!("{closed} TLS connections closed in all; web worker RSS {rss_before} kB before, {rss_after} kB after");
    assert!(rss_after < rss_before + 150 * 1024, "RSS grew from {rss_before} kB to {rss_after} kB");
    let (status, took) = fresh(&server, &server.public_url("/cert/acquire"));
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "after the flood: {took:?}");
    // (The request for the metrics is the one open on the plain-HTTP listener.)
    for (name, asking) in [("public", 0), ("login", 0), ("http", 1)] {
        let open = metric(&server.metrics(), &format!("inkan_connections_open{{listener=\"{name}\"}}"));
        assert_eq!(open, asking, "{name}: all closed");
    }
    server.stop();
}
