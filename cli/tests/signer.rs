//! The signer process and the audit trail end to end: the socket protocol spoken byte by byte
//! from the test, `inkan serve` on a data directory without any CA key talking to a separately
//! started `inkan signer`, the signer killed under a running service, the hash-chained audit log
//! checked and tampered with through the CLI, and the passphrase kept out of the child signer's
//! environment and command line. openssl and curl judge what comes back.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ca::Registry;
use common::{
    CA_PASS, Daemon, Enrolled, NONE, ROOT_PASS, SECRETS, STOP_WITHIN, Service, TestCa, WRONG, genpkey, inkan_bin, kill,
    ocsp_status, openssl, openssl_serial, p256_csr, read, req, s, start_signer, user_password, write,
};
use enroll_server::accounts::{Accounts, Password, Role};
use enroll_server::settings::AccountSettings;
use serde_json::{Value, json};

/// How long `serve` may take to have a killed child signer back.
const RESTART_WITHIN: Duration = Duration::from_secs(15);

/// The DER inside the (single) PEM block of `path`.
fn der_of_pem(path: &Path) -> Vec<u8> {
    pem::parse(read(path)).unwrap_or_else(|e| panic!("{}: not PEM: {e}", path.display())).into_contents()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[track_caller]
fn unhex(value: &Value) -> Vec<u8> {
    let text = value.as_str().unwrap_or_else(|| panic!("not a hex string: {value}"));
    assert!(text.len().is_multiple_of(2), "odd hex: {text}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry: count it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (bounded) until `pid` is gone.
#[track_caller]
fn wait_gone(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let entry = entry.expect("directory entry");
            if entry.file_type().expect("file type").is_dir() {
                todo.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

// ---- the audit log --------------------------------------------------------------------------

fn audit_path(data: &Path) -> PathBuf {
    data.join("audit").join("audit.log")
}

/// The audit log's lines, parsed.
fn audit_lines(data: &Path) -> Vec<Value> {
    read(&audit_path(data)).lines().map(|l| serde_json::from_str(l).expect("an audit line is JSON")).collect()
}

/// The audit lines of `event`.
fn events(data: &Path, event: &str) -> Vec<Value> {
    audit_lines(data).into_iter().filter(|l| l["event"] == event).collect()
}

// ---- the signer -----------------------------------------------------------------------------

/// One connection to the signer's socket, framing written here: a 4-byte big-endian length and
/// that many bytes of JSON.
struct Wire(UnixStream);

impl Wire {
    fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        Self(stream)
    }

    fn send_raw(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).expect("small frame");
        self.0.write_all(&len.to_be_bytes()).expect("writing the length");
        self.0.write_all(body).expect("writing the frame");
    }

    #[track_caller]
    fn receive(&mut self) -> Value {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).expect("reading an answer's length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).expect("reading an answer");
        let answer: Value = serde_json::from_slice(&body).expect("the answer is JSON");
        assert_eq!(answer["v"], 1, "every answer carries the protocol version: {answer}");
        answer
    }

    #[track_caller]
    fn call_raw(&mut self, body: &[u8]) -> Value {
        self.send_raw(body);
        self.receive()
    }

    #[track_caller]
    fn call(&mut self, request: &Value) -> Value {
        self.call_raw(request.to_string().as_bytes())
    }
}

fn issue_request(request_id: &[u8], csr: &[u8], account: &str, profile: &str, sans: &[&str]) -> Value {
    json!({
        "v": 1,
        "op": "issue",
        "request_id": hex(request_id),
        "csr": hex(csr),
        "account": account,
        "profile": profile,
        "sans": sans,
        "days": null,
    })
}

/// A CRL request as the wire carries it: each entry packed as serial (16 bytes), revocation
/// time (8, big-endian Unix seconds), reason code (1), all in hex.
fn sign_crl_request(entries: &[(&str, i64, u8)], validity_secs: i64) -> Value {
    let packed: String =
        entries.iter().map(|(serial, at, code)| format!("{serial}{:016X}{code:02X}", *at as u64)).collect();
    json!({ "v": 1, "op": "sign-crl", "revoked": packed, "validity_secs": validity_secs })
}

#[track_caller]
fn expect_error(answer: &Value, kind: &str, what: &str) {
    assert_eq!(answer["result"], "error", "{what}: {answer}");
    assert_eq!(answer["kind"], kind, "{what}: {answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message: {answer}");
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The CRL number openssl reads from a DER CRL.
fn crl_number(crl: &Path) -> u64 {
    let text = openssl(["crl", "-inform", "DER", "-in", s(crl), "-noout", "-text"]).ok().stdout;
    let after = text.split_once("X509v3 CRL Number:").unwrap_or_else(|| panic!("no CRL number in\n{text}")).1;
    let number = after.split_whitespace().next().expect("a CRL number");
    number.parse().unwrap_or_else(|_| u64::from_str_radix(number.trim_start_matches("0x"), 16).expect("a number"))
}

/// The ledger's records (the signer must be stopped: the ledger file is locked while in use).
fn ledger(data: &Path) -> Vec<ca::CertRecord> {
    let ledger =
        ca::ledger::LogLedger::open(&data.join("signer").join("ledger.log")).expect("opening the signer's ledger");
    ledger.records().expect("the ledger's records")
}

/// A web data directory for a service with a separate signer: a copy of DATA/inkan.toml and
/// nothing else.
fn web_dir(ca: &TestCa) -> PathBuf {
    let web = ca.work().join("web");
    std::fs::create_dir(&web).expect("creating the web data directory");
    std::fs::copy(ca.file("inkan.toml"), web.join("inkan.toml")).expect("copying inkan.toml");
    web
}

/// Adds master user `login_id` to the account store of the web data directory `web` with the
/// library: `inkan user add --data-dir WEB` refuses a directory without ca/ca.crt (see
/// `operator_commands_work_on_a_data_directory_without_the_ca`).
fn add_web_user(web: &Path, login_id: &str) {
    let settings = AccountSettings { lockout_threshold: 5, min_password_length: 8 };
    let stores = enroll_server::stores::sled::SledStores::open(&web.join("web")).expect("account store");
    let accounts = Accounts::new(stores.accounts(), settings).expect("account store");
    let now = time::OffsetDateTime::now_utc();
    accounts
        .create(login_id, Role::Master, None, &Password::new(user_password(login_id)), now)
        .expect("creating a user");
}

/// `openssl verify` of a client certificate under the CA of `ca`, and its subject.
#[track_caller]
fn verify_client(ca: &TestCa, cert: &Path, account: &str) {
    ca.openssl_verify(cert, &["-purpose", "sslclient"]).ok();
    let subject = openssl(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", s(cert)]).ok().stdout;
    assert!(subject.contains(&format!("CN={account}")), "{subject}");
}

// ---- tests ----------------------------------------------------------------------------------

/// The socket protocol spoken directly: CA info, issuance judged by openssl, a request id sent
/// twice gets the very same certificate, the signer re-validates what it is sent, framing
/// errors, and CRL signing.
#[test]
fn signer_protocol_spoken_directly() {
    let ca = TestCa::init(&[]);
    let work = ca.work();
    let socket = work.join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);

    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket(), "{} is not a socket", socket.display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode {:o}", meta.permissions().mode());

    let mut wire = Wire::connect(&socket);
    let info = wire.call(&json!({ "v": 1, "op": "ca-info" }));
    assert_eq!(info["result"], "ca-info", "{info}");
    assert_eq!(unhex(&info["ca"]), der_of_pem(&ca.ca_crt()), "ca-info: the issuing CA certificate");
    assert_eq!(unhex(&info["root"]), der_of_pem(&ca.root_crt()), "ca-info: the root certificate");

    // Issue from an openssl CSR; openssl verifies the result for TLS client use.
    let csr = der_of_pem(&p256_csr(work, "alice"));
    let first_id = [0x11u8; 16];
    let first = wire.call(&issue_request(&first_id, &csr, "alice", "client", &[]));
    assert_eq!(first["result"], "issued", "{first}");
    let cert = work.join("alice.crt");
    write(&cert, pki::encoding::pem_encode("CERTIFICATE", &unhex(&first["der"])));
    verify_client(&ca, &cert, "alice");
    assert_eq!(first["serial"], openssl_serial(&cert), "the serial answered is the certificate's");

    // The same request id, on this connection and a new one: the same certificate, byte for byte.
    let again = wire.call(&issue_request(&first_id, &csr, "alice", "client", &[]));
    assert_eq!(again["result"], "issued", "{again}");
    assert_eq!((&again["serial"], &again["der"]), (&first["serial"], &first["der"]), "a retry is answered alike");
    let again = Wire::connect(&socket).call(&issue_request(&first_id, &csr, "alice", "client", &[]));
    assert_eq!((&again["serial"], &again["der"]), (&first["serial"], &first["der"]), "on a new connection too");
    // Another request id: another certificate.
    let second = wire.call(&issue_request(&[0x22; 16], &csr, "alice", "client", &[]));
    assert_eq!(second["result"], "issued", "{second}");
    assert_ne!(second["serial"], first["serial"]);

    // The server profile with a SAN the CA certifies is signed (the control for the refusals
    // below).
    let web_csr = der_of_pem(&p256_csr(work, "web"));
    let web = wire.call(&issue_request(&[0x33; 16], &web_csr, "web", "server", &["localhost"]));
    assert_eq!(web["result"], "issued", "{web}");
    let web_cert = work.join("web.crt");
    write(&web_cert, pki::encoding::pem_encode("CERTIFICATE", &unhex(&web["der"])));
    ca.openssl_verify(&web_cert, &["-purpose", "sslserver", "-verify_hostname", "localhost"]).ok();

    // The signer re-validates: each of these is refused, and nothing is signed.
    let mut bad_signature = der_of_pem(&p256_csr(work, "forged"));
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x01; // the low byte of the ECDSA signature's s
    let rsa_key = genpkey(work, "rsa1024", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]);
    let rsa_1024 = der_of_pem(&req(work, "rsa1024", &rsa_key, &[]));
    let refused = [
        ("a CSR with a bad signature", issue_request(&[0x44; 16], &bad_signature, "mallory", "client", &[])),
        ("an RSA-1024 CSR", issue_request(&[0x45; 16], &rsa_1024, "mallory", "client", &[])),
        ("the server profile without SANs", issue_request(&[0x46; 16], &web_csr, "web2", "server", &[])),
        (
            "a server name outside [ca] server_names",
            issue_request(&[0x49; 16], &web_csr, "web3", "server", &["bank.example.test"]),
        ),
        ("the OCSP responder profile", issue_request(&[0x4a; 16], &web_csr, "ocsp", "ocsp-responder", &[])),
        ("an account with a newline", issue_request(&[0x47; 16], &csr, "alice\nevent: forged", "client", &[])),
        ("a 15-byte request id", issue_request(&[0x48; 15], &csr, "alice", "client", &[])),
    ];
    for (what, request) in &refused {
        expect_error(&wire.call(request), "rejected", what);
    }
    // The forged CSR is well-formed and only its signature is wrong: openssl reads it but
    // does not verify it, and verifies the original.
    let forged_file = work.join("forged.der");
    write(&forged_file, &bad_signature);
    openssl(["req", "-inform", "DER", "-in", s(&forged_file), "-noout", "-subject"]).ok();
    // (openssl 3.0 exits 0 either way: read what it says.)
    let forged = openssl(["req", "-inform", "DER", "-in", s(&forged_file), "-verify", "-noout"]).text();
    assert!(forged.contains("verify failure") && !forged.contains("verify OK"), "{forged}");
    let original = openssl(["req", "-in", s(&work.join("forged.csr")), "-verify", "-noout"]).ok().text();
    assert!(original.contains("verify OK"), "{original}");

    // A version this signer does not speak; garbage; the connection still works afterwards.
    expect_error(&wire.call(&json!({ "v": 2, "op": "ca-info" })), "version", "protocol version 2");
    let garbage = wire.call_raw(b"{\"v\":1,\"op\":");
    assert_eq!(garbage["result"], "error", "{garbage}");
    let garbage = wire.call_raw(b"\xff\xfe not json at all");
    assert_eq!(garbage["result"], "error", "{garbage}");
    assert_eq!(wire.call(&json!({ "v": 1, "op": "ca-info" }))["result"], "ca-info", "the connection survives garbage");

    // A length over 512 MiB: the connection is closed, the signer lives on.
    let mut huge = Wire::connect(&socket);
    huge.0.write_all(&((512u32 << 20) + 1).to_be_bytes()).expect("writing a length");
    let mut buf = [0u8; 16];
    match huge.0.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("an answer to an oversized frame: {:?}", &buf[..n]),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "the connection is closed: {e}"),
    }
    assert!(signer.running(), "the signer survives an oversized frame\n{}", signer.stderr());
    let after = Wire::connect(&socket).call(&json!({ "v": 1, "op": "ca-info" }));
    assert_eq!(after["result"], "ca-info", "a new connection works: {after}");

    // Eight connections that announce the largest frame allowed and send a few bytes of it:
    // the signer's memory grows with what arrives, not with what is announced (8 x 512 MiB).
    // Its address space grows by the connections' threads and their allocator arenas (about
    // 64 MiB each), well under 2 GiB.
    let vm_size = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", signer.pid)).expect("status");
        let line = status.lines().find(|l| l.starts_with("VmSize:")).expect("VmSize").to_owned();
        line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("kB")
    };
    let before = vm_size();
    let announced: Vec<Wire> = (0..8)
        .map(|_| {
            let mut wire = Wire::connect(&socket);
            wire.0.write_all(&(512u32 << 20).to_be_bytes()).expect("writing a length");
            wire.0.write_all(b"{\"v\":1,").expect("writing a little");
            wire
        })
        .collect();
    // The signer answers another connection meanwhile, so it has read what was sent.
    let meanwhile = Wire::connect(&socket).call(&json!({ "v": 1, "op": "ca-info" }));
    assert_eq!(meanwhile["result"], "ca-info", "{meanwhile}");
    std::thread::sleep(Duration::from_millis(200));
    let grown = vm_size().saturating_sub(before);
    assert!(grown < 2 * 1024 * 1024, "8 announced frames of 512 MiB grew the signer by {grown} kB of address space");
    drop(announced);

    // CRLs: refused with a revocation in the future, an unknown reason, a 10 s validity.
    let serial = first["serial"].as_str().expect("serial").to_owned();
    let now = now_unix();
    for (what, request) in [
        ("revoked in the future", sign_crl_request(&[(&serial, now + 3600, 1)], 86_400)),
        ("reason code 7 (unused)", sign_crl_request(&[(&serial, now - 60, 7)], 86_400)),
        ("reason code 200", sign_crl_request(&[(&serial, now - 60, 200)], 86_400)),
        ("validity 10 s", sign_crl_request(&[(&serial, now - 60, 1)], 10)),
        (
            "not a serial of inkan's (top bit set)",
            sign_crl_request(&[("FF000000000000000000000000000001", now - 60, 1)], 86_400),
        ),
        (
            "24 bytes: not whole entries",
            json!({ "v": 1, "op": "sign-crl", "revoked": "00".repeat(24), "validity_secs": 86_400 }),
        ),
        (
            "a shard of one",
            json!({ "v": 1, "op": "sign-crl", "revoked": "", "validity_secs": 86_400, "shard": { "count": 1, "index": 0 } }),
        ),
    ] {
        expect_error(&wire.call(&request), "rejected", what);
    }
    let crl_answer = wire.call(&sign_crl_request(&[(&serial, now - 60, 1)], 86_400));
    assert_eq!(crl_answer["result"], "crl", "{crl_answer}");
    let crl = work.join("one.crl");
    write(&crl, unhex(&crl_answer["der"]));
    let verified =
        openssl(["crl", "-inform", "DER", "-in", s(&crl), "-CAfile", s(&ca.ca_crt()), "-verify", "-noout"]).ok();
    assert!(verified.text().contains("verify OK"), "{}", verified.text());
    openssl(["crl", "-inform", "DER", "-in", s(&crl), "-CAfile", s(&ca.root_crt()), "-verify", "-noout"]).failed();
    let text = openssl(["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]).ok().stdout;
    assert!(text.contains(&format!("Serial Number: {serial}")) && text.contains("Key Compromise"), "{text}");
    let next = wire.call(&sign_crl_request(&[], 3600));
    assert_eq!(next["result"], "crl", "{next}");
    let crl2 = work.join("two.crl");
    write(&crl2, unhex(&next["der"]));
    openssl(["crl", "-inform", "DER", "-in", s(&crl2), "-CAfile", s(&ca.ca_crt()), "-verify", "-noout"]).ok();
    let (n1, n2) = (crl_number(&crl), crl_number(&crl2));
    assert!(n2 > n1, "CRL numbers increase: {n1} then {n2}");

    drop(wire);
    signer.stop(STOP_WITHIN);
    assert!(!socket.exists(), "the socket is removed at a clean stop");

    // The ledger: three certificates (alice twice, web once), nothing for the refused requests.
    let mut signed: Vec<(String, String)> = ledger(&ca.data)
        .into_iter()
        .filter(|r| r.account != "inkan-server")
        .map(|r| {
            assert_eq!(r.state, ca::State::Issued, "{r:?}");
            (r.account, r.serial.to_string())
        })
        .collect();
    signed.sort();
    let mut expected: Vec<(String, String)> = [("alice", &first), ("alice", &second), ("web", &web)]
        .iter()
        .map(|(account, answer)| ((*account).to_owned(), answer["serial"].as_str().expect("serial").to_owned()))
        .collect();
    expected.sort();
    assert_eq!(signed, expected, "the ledger holds exactly the certificates answered");

    // The audit trail: the signer's start and stop, two CRLs.
    let starts = events(&ca.data, "signer.start");
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0]["details"]["pid"], signer.pid);
    assert_eq!(starts[0]["source"], "signer");
    assert_eq!(events(&ca.data, "signer.stop").len(), 1);
    assert_eq!(events(&ca.data, "crl.signed").len(), 2);
    // One `certificate.signed` per certificate signed: a retry answered from the ledger
    // signs nothing.
    let mut audited: Vec<(String, String)> = events(&ca.data, "certificate.signed")
        .iter()
        .filter(|l| l["details"]["account"] != "inkan-server")
        .map(|l| {
            assert_eq!(l["source"], "signer", "{l}");
            let details = &l["details"];
            (
                details["account"].as_str().expect("account").to_owned(),
                details["serial"].as_str().expect("s").to_owned(),
            )
        })
        .collect();
    audited.sort();
    assert_eq!(audited, expected, "certificate.signed lines: one per certificate the signer signed");
}

/// `inkan serve` on a data directory holding only inkan.toml, with a separately started
/// signer: enrollment through the API works, the web data directory never gets a CA key, and
/// the plain-HTTP listener serves the signer's CA certificates.
#[test]
fn web_process_runs_without_any_ca_key() {
    let ca = TestCa::init(&[]);
    let web = web_dir(&ca);
    add_web_user(&web, "wendy");
    let socket = ca.work().join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let server = Service::start_with(&web, &ca, &["--signer-socket", s(&socket)], &[]);

    let csr = p256_csr(ca.work(), "wendy");
    let ticket = server.ticket("wendy");
    let reply = server.send_csr(&ticket, &read(&csr));
    reply.expect(201);
    let issued = reply.json();
    let Enrolled { cert, chain, .. } = server.save("wendy", &issued);
    verify_client(&ca, &cert, "wendy");
    let cert_key = openssl(["x509", "-noout", "-pubkey", "-in", s(&cert)]).ok().stdout;
    let own_key = openssl(["pkey", "-pubout", "-in", s(&ca.work().join("wendy.key"))]).ok().stdout;
    assert_eq!(cert_key, own_key, "the certificate certifies the CSR's key");
    let chain: Vec<Vec<u8>> =
        pem::parse_many(read(&chain)).expect("chain PEM").into_iter().map(pem::Pem::into_contents).collect();
    assert_eq!(chain, vec![der_of_pem(&ca.ca_crt()), der_of_pem(&ca.root_crt())], "the chain is D's");

    for (path, pem) in [("/ca.crt", ca.ca_crt()), ("/root.crt", ca.root_crt())] {
        let reply = server.curl(&server.http_url(path), NONE);
        reply.expect(200);
        assert_eq!(reply.body, der_of_pem(&pem), "{path} is D's certificate");
    }

    let serial = issued["serial"].as_str().expect("serial").to_owned();
    server.stop();
    signer.stop(STOP_WITHIN);

    // The signer (data directory D) signed it and the service (W) recorded it, each in its own
    // audit log.
    let signed = events(&ca.data, "certificate.signed");
    assert!(signed.iter().any(|l| l["details"]["serial"] == serial && l["source"] == "signer"), "{signed:?}");
    let recorded = events(&web, "certificate.issued");
    assert!(recorded.iter().any(|l| l["details"]["serial"] == serial && l["source"] == "service"), "{recorded:?}");
    assert!(ledger(&ca.data).iter().any(|r| r.serial.to_string() == serial), "in the signer's ledger");

    // No CA key, nor its bytes, anywhere under W.
    let secrets = [read(&ca.file("ca/ca.key")), read(&ca.file("root/root.key"))];
    let files = walk(&web);
    assert!(files.iter().any(|f| f.ends_with("inkan.toml")), "{files:?}");
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(!matches!(name, "ca.key" | "root.key"), "{} in the web data directory", file.display());
        let bytes = std::fs::read(file).expect("reading a file");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("ENCRYPTED PRIVATE KEY"), "an encrypted key in {}", file.display());
        for secret in &secrets {
            assert!(!text.contains(secret.trim()), "a CA key in {}", file.display());
        }
        assert!(!text.contains(CA_PASS) && !text.contains(ROOT_PASS), "a passphrase in {}", file.display());
    }
    assert!(!web.join("ca").exists() && !web.join("root").exists(), "no CA directories in W");
}

/// `inkan user add` and `inkan list` on the web data directory of a service with a separate
/// signer, which has no ca/ca.crt: the service runs there, so its operator commands must too.
#[test]
fn operator_commands_work_on_a_data_directory_without_the_ca() {
    let ca = TestCa::init(&[]);
    let web = web_dir(&ca);
    let pw = user_password("olga");
    let add = ["user", "add", "--login-id", "olga", "--role", "master", "--data-dir", s(&web)];
    let added = common::inkan(add, &[("INKAN_USER_PASSWORD", Some(&pw))]);
    let listed = common::inkan(["list", "--json", "--data-dir", s(&web)], &[]);
    let users = common::inkan(["user", "list", "--json", "--data-dir", s(&web)], &[]);
    let failures: Vec<String> = [added, listed, users]
        .into_iter()
        .filter(|out| !out.status.success())
        .map(|out| format!("{}: {}", out.what, out.stderr.trim()))
        .collect();
    assert!(failures.is_empty(), "refused on a data directory without ca/ca.crt:\n{}", failures.join("\n"));
}

/// The signer killed under a running service: issuance answers 503 `unavailable` and records
/// nothing; the ticket survives, and once a signer is back on the socket the same ticket gets
/// its certificate.
#[test]
fn signer_down_answers_503_then_the_same_ticket_succeeds() {
    let ca = TestCa::init(&[]);
    let web = web_dir(&ca);
    add_web_user(&web, "sam");
    let socket = ca.work().join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let mut server = Service::start_with(&web, &ca, &["--signer-socket", s(&socket)], &[]);
    let csr = p256_csr(ca.work(), "sam");
    let ticket = server.ticket("sam");

    signer.signal("KILL");
    assert!(signer.wait_exit(Duration::from_secs(10)).is_some(), "the signer is dead");
    for attempt in 1..=2 {
        let reply = server.send_csr(&ticket, &read(&csr));
        reply.expect_error(503, "unavailable");
        let message = reply.message();
        assert!(message.contains("CA is unavailable"), "attempt {attempt}: {message}");
        assert!(reply.header("retry-after").is_some(), "attempt {attempt}: a Retry-After header\n{}", reply.headers);
    }
    // Nothing was recorded: sam still has no valid certificate, so may start another enrollment.
    server.ticket("sam");
    assert!(server.serve.running(), "the service runs on without its signer");

    let mut signer = start_signer(&ca.data, &socket);
    let reply = server.send_csr(&ticket, &read(&csr));
    reply.expect(201);
    let issued = reply.json();
    let cert = server.save("sam", &issued).cert;
    verify_client(&ca, &cert, "sam");
    // Now it is recorded: no second certificate while this one is valid, the ticket is used.
    server.enroll("sam", &user_password("sam")).expect_error(409, "certificate_valid");
    server.send_csr(&ticket, &read(&csr)).expect_error(409, "ticket_used");

    server.stop();
    signer.stop(STOP_WITHIN);
    let serial = issued["serial"].as_str().expect("serial");
    let registry = ca::SledStore::open(&web.join("db")).expect("the service's registry");
    let sams: Vec<String> =
        registry.by_account("sam").expect("by account").iter().map(|r| r.serial.to_string()).collect();
    assert_eq!(sams, [serial], "the service recorded exactly one certificate for sam");
    let signed: Vec<String> =
        ledger(&ca.data).iter().filter(|r| r.account == "sam").map(|r| r.serial.to_string()).collect();
    assert_eq!(signed, [serial], "the signer signed exactly one certificate for sam");
}

/// The idle deadline runs only between requests: an issuance that waits on a stopped signer
/// for longer than it is answered, on its connection.
#[test]
fn a_request_waiting_on_the_signer_outlives_the_idle_timeout() {
    let ca = TestCa::init(&[]);
    let web = web_dir(&ca);
    let config = web.join("inkan.toml");
    let text = read(&config);
    for setting in ["first_request_timeout_secs = 10", "idle_timeout_secs = 60"] {
        assert!(text.contains(setting), "{text}");
    }
    let text = text.replace("first_request_timeout_secs = 10", "first_request_timeout_secs = 1");
    write(&config, text.replace("idle_timeout_secs = 60", "idle_timeout_secs = 1"));
    add_web_user(&web, "ida");
    let socket = ca.work().join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let server = Service::start_with(&web, &ca, &["--signer-socket", s(&socket)], &[]);
    let csr = p256_csr(ca.work(), "ida");
    let ticket = server.ticket("ida");

    signer.signal("STOP");
    let pid = signer.pid;
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        kill("CONT", pid);
    });
    let started = Instant::now();
    let reply = server.send_csr(&ticket, &read(&csr));
    let waited = started.elapsed();
    resume.join().expect("the thread that resumes the signer");
    reply.expect(201);
    assert!(waited >= Duration::from_secs(2), "the request waited on the signer ({waited:?})");
    let cert = server.save("ida", &reply.json()).cert;
    verify_client(&ca, &cert, "ida");
    server.stop();
    signer.stop(STOP_WITHIN);
}

/// `serve` with its own signer: SIGKILL the child, and the service starts a new one; the
/// enrollment that got 503 meanwhile succeeds with the same ticket within seconds.
#[test]
fn serve_restarts_its_own_signer_after_sigkill() {
    let ca = TestCa::init(&[]);
    ca.add_user("kai", "master", None);
    let pass = ca.ca_pass_file();
    let server = Service::start_with(&ca.data, &ca, &["--ca-passphrase-file", s(&pass)], &[]);
    let old = server.signer_pid.expect("serve printed its signer's pid");
    assert_eq!(parent_of(old), Some(server.serve.pid), "the signer is serve's child");
    let csr = p256_csr(ca.work(), "kai");
    let ticket = server.ticket("kai");

    kill("KILL", old);
    wait_gone(old, Duration::from_secs(5));
    let killed = Instant::now();
    let mut statuses = Vec::new();
    let reply = loop {
        let reply = server.send_csr(&ticket, &read(&csr));
        statuses.push(reply.status);
        match reply.status {
            201 => break reply,
            503 => {
                reply.expect_error(503, "unavailable");
                assert!(killed.elapsed() < RESTART_WITHIN, "no signer {RESTART_WITHIN:?} after SIGKILL: {statuses:?}");
                std::thread::sleep(Duration::from_millis(200)); // polling interval
            }
            _ => panic!("unexpected answer while the signer restarts: {statuses:?}\n{}", reply.text()),
        }
    };
    eprintln!("enrollment worked again {:?} after SIGKILL ({} tries)", killed.elapsed(), statuses.len());
    assert_eq!(statuses[0], 503, "right after SIGKILL the CA is unavailable: {statuses:?}");
    let cert = server.save("kai", &reply.json()).cert;
    verify_client(&ca, &cert, "kai");

    // A new signer, started by serve, announced in the audit log.
    let pids: Vec<u32> = events(&ca.data, "signer.start")
        .iter()
        .map(|l| u32::try_from(l["details"]["pid"].as_u64().expect("pid")).expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(pids[0], old);
    let new = pids[1];
    assert!(new != old && alive(new), "the new signer {new} runs");
    assert_eq!(parent_of(new), Some(server.serve.pid), "the new signer is serve's child");

    server.stop();
    wait_gone(new, Duration::from_secs(10));
    assert!(!ca.file("signer.sock").exists(), "the signer's socket is removed");
}

/// The audit trail through the CLI: the events of a whole session, no secret in them, `audit
/// verify` finds every alteration, removal and reordering, `audit tail` and `tail -f`.
#[test]
fn audit_trail_through_the_cli() {
    let ca = TestCa::init(&[]);
    ca.add_user("ada", "master", None);
    let pass = ca.ca_pass_file();
    let server = Service::start_with(&ca.data, &ca, &["--ca-passphrase-file", s(&pass)], &[]);
    let mut tickets = Vec::new();
    server.enroll("ada", WRONG).expect_error(401, "invalid_credentials");
    let ticket = server.ticket("ada");
    tickets.push(ticket.clone());
    let reply = server.send_csr(&ticket, &read(&p256_csr(ca.work(), "ada")));
    reply.expect(201);
    let issued = reply.json();
    let serial = issued["serial"].as_str().expect("serial").to_owned();
    let cert = server.save("ada", &issued).cert;
    let key = ca.work().join("ada.key");
    let jar = ca.work().join("ada.jar");
    let login_args = ["--cert", s(&cert), "--key", s(&key), "-b", s(&jar), "-c", s(&jar)];
    let login_url = server.login_url("/api/v1/login");
    server.post_json(&login_url, &json!({ "password": WRONG }), &login_args).expect_error(401, "invalid_credentials");
    server.post_json(&login_url, &json!({ "password": user_password("ada") }), &login_args).expect(200);
    let session = read(&jar).lines().find_map(|l| l.split_once("inkan_session\t").map(|(_, v)| v.trim().to_owned()));
    ca.inkan(["revoke", &serial, "--reason", "keyCompromise"]).ok();
    server.stop();

    let verified = ca.inkan(["audit", "verify"]).ok();
    assert!(verified.stdout.contains("chain intact"), "{}", verified.text());
    let lines = audit_lines(&ca.data);
    let find = |event: &str, source: &str| {
        lines.iter().find(|l| l["event"] == event && l["source"] == source).unwrap_or_else(|| {
            let seen: Vec<String> = lines.iter().map(|l| format!("{} ({})", l["event"], l["source"])).collect();
            panic!("no {event} from {source} in the audit log: {seen:?}")
        })
    };
    find("ca.initialised", "cli");
    assert_eq!(find("user.created", "cli")["details"]["login_id"], "ada");
    assert_eq!(find("enrollment.preprocessed", "service")["details"]["login_id"], "ada");
    // Signed by the signer, then recorded by the service, for the serial the API answered.
    // (The service's own certificates, TLS and OCSP responder, are signed too: look for ada's.)
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "certificate.signed" && l["source"] == "signer" && l["details"]["serial"] == serial),
        "certificate.signed for {serial}"
    );
    assert!(
        lines.iter().any(|l| l["event"] == "certificate.issued"
            && l["source"] == "service"
            && l["details"]["serial"] == serial),
        "certificate.issued for {serial}"
    );
    assert_eq!(find("certificate.revoked", "service")["details"]["serial"], serial);
    assert_eq!(find("login.success", "service")["details"]["login_id"], "ada");
    let failures: Vec<&Value> = lines.iter().filter(|l| l["event"] == "login.failure").collect();
    assert_eq!(failures.len(), 2, "a wrong password at enrollment and at login: {failures:?}");
    find("signer.start", "signer");
    find("signer.stop", "signer");
    find("service.start", "service");
    find("service.stop", "service");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i + 1, "{line}");
    }
    let log = read(&audit_path(&ca.data));
    let mut secrets = SECRETS.map(String::from).to_vec();
    secrets.extend(tickets);
    secrets.extend(session);
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the audit log contains a secret ({} chars)", secret.len());
    }

    // Tampering, each time on the intact original. m is a line in the middle, 1-based.
    let original: Vec<String> = log.lines().map(str::to_owned).collect();
    let n = original.len();
    assert!(n >= 10, "a session's worth of lines: {n}");
    let m = n / 2;
    let path = audit_path(&ca.data);
    let put = |lines: &[String]| write(&path, lines.join("\n") + "\n");
    let head_of =
        |out: &common::Out| out.stdout.lines().find(|l| l.starts_with("last line's SHA-256")).map(String::from);
    let intact_head = head_of(&verified).expect("verify prints the last line's hash");

    // One character of line m: line m itself still parses and chains, line m+1 no longer does.
    let mut altered = original.clone();
    let at = altered[m - 1].find("\"time\":\"").expect("a time field") + "\"time\":\"".len();
    let digit = altered[m - 1].as_bytes()[at];
    let replacement = if digit == b'3' { "4" } else { "3" };
    altered[m - 1].replace_range(at..=at, replacement);
    put(&altered);
    ca.inkan(["audit", "verify"]).refused(&format!("line {} breaks the chain", m + 1));

    let mut removed = original.clone();
    removed.remove(m - 1);
    put(&removed);
    ca.inkan(["audit", "verify"]).refused(&format!("line {m} breaks the chain"));

    let mut swapped = original.clone();
    swapped.swap(m - 1, m);
    put(&swapped);
    ca.inkan(["audit", "verify"]).refused(&format!("line {m} breaks the chain"));

    // Cutting off the end leaves a valid, shorter chain: only the printed hash tells.
    put(&original[..n - 1]);
    let cut = ca.inkan(["audit", "verify"]).ok();
    assert!(cut.stdout.contains(&format!("{} lines, chain intact", n - 1)), "{}", cut.text());
    assert_ne!(head_of(&cut), Some(intact_head.clone()));

    put(&original);
    let restored = ca.inkan(["audit", "verify"]).ok();
    assert!(restored.stdout.contains(&format!("{n} lines, chain intact")), "{}", restored.text());
    assert_eq!(head_of(&restored), Some(intact_head));

    let tail = ca.inkan(["audit", "tail", "-n", "3"]).ok();
    assert_eq!(tail.stdout, original[n - 3..].join("\n") + "\n");

    // tail -f prints a line appended by another command.
    let mut command = Command::new(inkan_bin());
    command.args(["audit", "tail", "-f", "-n", "1", "--data-dir", s(&ca.data)]);
    let mut follow = Daemon::spawn(command);
    let last = original[n - 1].clone();
    follow.wait_line(Duration::from_secs(10), |line| line == last);
    ca.add_user("late-comer", "master", None);
    let appended = follow.wait_line(Duration::from_secs(10), |line| line.contains("late-comer"));
    let appended: Value = serde_json::from_str(&appended).expect("a JSON line");
    assert_eq!((appended["event"].as_str(), appended["seq"].as_u64()), (Some("user.created"), Some(n as u64 + 1)));
    follow.signal("KILL");
    ca.inkan(["audit", "verify"]).ok();
}

/// `serve` keeps the CA passphrase out of environments and command lines: it refuses it in its
/// own environment, and its child signer gets an empty environment, a command line without it,
/// and the passphrase through a pipe on its standard input.
#[test]
fn serve_keeps_the_passphrase_out_of_the_signers_environment() {
    let ca = TestCa::init(&[]);
    let pass = ca.ca_pass_file();
    let refused = Service::run_once(&ca, &[("INKAN_CA_PASSPHRASE", Some(CA_PASS))]);
    let refused = refused.refused("--ca-passphrase-file");
    assert!(refused.stderr.contains("INKAN_CA_PASSPHRASE"), "{}", refused.stderr);
    assert!(!refused.text().contains(CA_PASS), "{}", refused.text());
    assert!(!ca.file("signer.sock").exists(), "no signer was started");

    // Started properly, with a root passphrase and a marker in its environment that the child
    // must not inherit either.
    let env = [("INKAN_ROOT_PASSPHRASE", ROOT_PASS), ("INKAN_TEST_MARKER", "inherited-5d1e")];
    let server = Service::start_with(&ca.data, &ca, &["--ca-passphrase-file", s(&pass)], &env);
    let child = server.signer_pid.expect("serve printed its signer's pid");
    assert_eq!(parent_of(child), Some(server.serve.pid));
    let environ = std::fs::read(format!("/proc/{child}/environ")).expect("the signer's environment");
    let environ = String::from_utf8_lossy(&environ);
    for unwanted in ["INKAN_CA_PASSPHRASE", CA_PASS, "INKAN_ROOT_PASSPHRASE", ROOT_PASS, "inherited-5d1e"] {
        assert!(!environ.contains(unwanted), "the signer's environment has {unwanted:?}");
    }
    // (The marker is there in serve's own environment: the check above can see variables.)
    let serve_environ = std::fs::read(format!("/proc/{}/environ", server.serve.pid)).expect("serve's environment");
    assert!(String::from_utf8_lossy(&serve_environ).contains("inherited-5d1e"));
    let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).expect("the signer's command line");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(" signer ") && cmdline.contains("--passphrase-stdin"), "{cmdline}");
    assert!(!cmdline.contains(CA_PASS) && !cmdline.contains(ROOT_PASS), "a passphrase in {cmdline:?}");
    let stdin = std::fs::read_link(format!("/proc/{child}/fd/0")).expect("the signer's stdin");
    assert!(stdin.to_string_lossy().starts_with("pipe:"), "the signer's stdin is {}", stdin.display());
    for secret in [CA_PASS, ROOT_PASS] {
        assert!(!server.serve.stderr().contains(secret), "serve's log has a passphrase");
    }
}

/// A request id answers one request: sent again with another CSR, account or profile it is
/// refused, and it keeps answering the original request with the original certificate
/// (remote.rs: "a request id sent twice gets the same certificate").
#[test]
fn a_request_id_reused_for_another_request_is_refused() {
    let ca = TestCa::init(&[]);
    let work = ca.work();
    let socket = work.join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let mut wire = Wire::connect(&socket);
    let id = [0x5au8; 16];
    let csr = der_of_pem(&p256_csr(work, "one"));
    let other_csr = der_of_pem(&p256_csr(work, "two"));
    let original = wire.call(&issue_request(&id, &csr, "alice", "client", &[]));
    assert_eq!(original["result"], "issued", "{original}");

    let mut problems = Vec::new();
    for (what, request) in [
        ("another CSR", issue_request(&id, &other_csr, "alice", "client", &[])),
        ("another account", issue_request(&id, &csr, "bob", "client", &[])),
        ("another profile", issue_request(&id, &csr, "alice", "server", &["x.example.test"])),
        ("the original request again", issue_request(&id, &csr, "alice", "client", &[])),
    ] {
        let answer = wire.call(&request);
        let fine = if what == "the original request again" {
            answer["result"] == "issued" && answer["der"] == original["der"]
        } else {
            answer["result"] == "error" && answer["kind"] == "rejected"
        };
        if !fine {
            problems.push(format!("{what}: {} {}", answer["result"], answer["serial"]));
        }
    }
    drop(wire);
    signer.stop(STOP_WITHIN);
    let signed = ledger(&ca.data).into_iter().filter(|r| r.account != "inkan-server").count();
    if signed != 1 {
        problems.push(format!("{signed} certificates in the ledger for one request"));
    }
    assert!(
        problems.is_empty(),
        "request id {} (first answer {}):\n{}",
        hex(&id),
        original["serial"],
        problems.join("\n")
    );
}

/// `inkan_ocsp_signed_total` in the service's /metrics.
fn ocsp_signed(server: &Service) -> u64 {
    let reply = server.curl(&server.http_url("/metrics"), common::NONE);
    reply.expect(200);
    let text = reply.text();
    text.lines()
        .find_map(|l| l.strip_prefix("inkan_ocsp_signed_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no inkan_ocsp_signed_total in /metrics:\n{text}"))
}

/// A fresh certificate's OCSP answer is signed right after issuance: the first request for it
/// is answered from the cache, so it is answered even with the signer gone (checked by
/// `openssl ocsp`, which verifies the response), and nothing more is signed for it.
#[test]
fn a_fresh_certificates_first_ocsp_answer_comes_from_the_presigned_cache() {
    let ca = TestCa::init(&[]);
    let web = web_dir(&ca);
    add_web_user(&web, "olga");
    let socket = ca.work().join("signer.sock");
    let mut signer = start_signer(&ca.data, &socket);
    let server = Service::start_with(&web, &ca, &["--signer-socket", s(&socket)], &[]);
    let before = ocsp_signed(&server);
    let olga = server.acquire("olga", "olga");
    // Both CertID hashes (SHA-1, SHA-256), signed in the background right after the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ocsp_signed(&server) < before + 2 {
        assert!(Instant::now() < deadline, "no OCSP answer was signed ahead for the new certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
    let signed = ocsp_signed(&server);

    signer.signal("KILL");
    assert!(signer.wait_exit(Duration::from_secs(10)).is_some(), "the signer is dead");
    assert_eq!(ocsp_status(&ca, &server, &olga), "good");
    assert_eq!(ocsp_signed(&server), signed, "the first request needed a signature of its own");
    server.stop();
}
