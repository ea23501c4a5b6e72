//! Revocation and expiry end to end, on the real `inkan serve`: the OCSP responder judged by
//! `openssl ocsp` and pkilint, the CRLs the service publishes judged by `openssl crl`/`verify`
//! and pkilint, revocation from the web (certificate login with curl), expiry notices caught
//! by a webhook receiver in the test, and the Prometheus metrics. Each test runs its own CA and
//! service; dropping the service (a failed assertion) kills it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    Enrolled, NONE, Out, Reply, Service, TestCa, assert_lint_clean, between, openssl, p256_csr, s, user_password, write,
};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Calls `check` every 50 ms until it gives a value; panics after `within`.
#[track_caller]
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number of CRLs signed once it has stopped moving: the same in two reads a coalescing
/// period (0.5 s) and more apart, so no CRL is still being made.
fn crl_count_settled(service: &Service) -> u64 {
    let mut last = metric(&service.metrics(), "inkan_crl_signed_total");
    wait_for(Duration::from_secs(10), "the CRL count to settle", || {
        std::thread::sleep(Duration::from_millis(700));
        let now = metric(&service.metrics(), "inkan_crl_signed_total");
        let settled = now == last;
        last = now;
        settled.then_some(now)
    })
}

/// A time as openssl prints it (`Jan  5 12:00:00 2026 GMT`).
#[track_caller]
fn openssl_time(text: &str) -> OffsetDateTime {
    let format = format_description!("[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT");
    PrimitiveDateTime::parse(text.trim(), format).unwrap_or_else(|e| panic!("{text:?}: {e}")).assume_utc()
}

/// An HTTP date (`Sat, 21 Nov 2026 05:01:46 GMT`, RFC 9110's IMF-fixdate).
#[track_caller]
fn http_date(text: &str) -> OffsetDateTime {
    let format =
        format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    PrimitiveDateTime::parse(text.trim(), format).unwrap_or_else(|e| panic!("HTTP date {text:?}: {e}")).assume_utc()
}

/// A certificate's notAfter as openssl reads it.
fn not_after(cert: &Path) -> OffsetDateTime {
    let out = openssl(["x509", "-noout", "-enddate", "-in", s(cert)]).ok();
    openssl_time(out.stdout.trim().strip_prefix("notAfter=").expect("notAfter="))
}

/// The value of `sample` (name and labels as printed) in a Prometheus text.
#[track_caller]
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

// ---- OCSP -----------------------------------------------------------------------------------

/// `openssl ocsp` asking the service about `target` (`-cert FILE` or `-serial N`) of the
/// issuing CA, verifying the response with the certificates in `cafile`; the response is saved
/// at `respout`.
fn ocsp(ca: &TestCa, service: &Service, target: &[&str], cafile: &Path, respout: &Path, extra: &[&str]) -> Out {
    let (issuer, url) = (ca.ca_crt(), service.http_url("/ocsp"));
    let mut args = vec!["ocsp", "-issuer", s(&issuer), "-url", &url, "-CAfile", s(cafile), "-resp_text"];
    args.extend(["-respout", s(respout)]);
    // openssl wants a CertID digest option before -cert or -serial.
    args.extend(extra);
    args.extend(target);
    openssl(args).ok()
}

/// What `openssl ocsp` says about `id` (the certificate file or the serial as given), from its
/// line `ID: STATUS`; asserts first that openssl verified the response.
#[track_caller]
fn ocsp_status(out: &Out, id: &str) -> String {
    let text = out.text();
    assert!(text.contains("Response verify OK"), "{}:\n{text}", out.what);
    let prefix = format!("{id}: ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no status for {id} in\n{text}"))
        .trim()
        .to_owned()
}

/// The status of the enrolled certificate `who` according to OCSP.
fn ocsp_of(ca: &TestCa, service: &Service, who: &Enrolled) -> (String, Out) {
    let respout = who.cert.with_extension("ocsp.der");
    let out = ocsp(ca, service, &["-cert", s(&who.cert)], &who.chain, &respout, &[]);
    (ocsp_status(&out, s(&who.cert)), out)
}

/// A DER OCSP request (no nonce) for `cert` issued by `issuer`, made by openssl.
fn ocsp_request(issuer: &Path, cert: &Path, out: &Path) -> Vec<u8> {
    openssl(["ocsp", "-issuer", s(issuer), "-cert", s(cert), "-no_nonce", "-reqout", s(out)]).ok();
    std::fs::read(out).expect("the OCSP request")
}

fn post_ocsp(service: &Service, content_type: &str, body: &[u8]) -> Reply {
    service.post(&service.http_url("/ocsp"), content_type, body, NONE)
}

/// Asserts RFC 5019 caching headers: max-age up to nextUpdate, Last-Modified (thisUpdate,
/// just now) and Expires (nextUpdate, 24 h later).
#[track_caller]
fn assert_cacheable(reply: &Reply) {
    let cache_control = reply.header("cache-control").unwrap_or_else(|| panic!("no Cache-Control: {}", reply.headers));
    let max_age: i64 = between(&format!("{cache_control},"), "max-age=", ",").trim().parse().expect("max-age");
    let last_modified = http_date(&reply.header("last-modified").expect("Last-Modified"));
    let expires = http_date(&reply.header("expires").expect("Expires"));
    let now = OffsetDateTime::now_utc();
    assert!((now - last_modified).whole_seconds().abs() <= 60, "Last-Modified {last_modified} is not now ({now})");
    assert_eq!(expires - last_modified, time::Duration::hours(24), "Expires - Last-Modified");
    let left = (expires - now).whole_seconds();
    assert!(max_age > 0 && (max_age - left).abs() <= 60, "max-age {max_age}, Expires in {left} s: {cache_control}");
}

/// Another CA and a client certificate it issued, from `inkan fixture --ephemeral`: (that CA's
/// certificate, the leaf).
fn foreign_ca_and_leaf(work: &Path) -> (PathBuf, PathBuf) {
    let dir = work.join("elsewhere");
    common::inkan(["fixture", "--ephemeral", "--out", s(&dir), "--client", "other-leaf"], &[]).ok();
    (dir.join("ca.pem"), dir.join("clients/other-leaf.crt"))
}

/// Percent-encodes base64 for a URL path segment.
fn url_encode(base64: &str) -> String {
    base64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

// ---- CRLs -----------------------------------------------------------------------------------

/// GET `path` on the plain-HTTP listener into `to`.
fn download(service: &Service, path: &str, to: &Path) -> Reply {
    let reply = service.curl(&service.http_url(path), NONE);
    write(to, &reply.body);
    reply
}

/// The CRL number openssl reads from a DER CRL.
#[track_caller]
fn crl_number(crl: &Path) -> u64 {
    let out = openssl(["crl", "-inform", "DER", "-in", s(crl), "-noout", "-crlnumber"]).ok();
    let hex = out.stdout.trim().strip_prefix("crlNumber=0x").unwrap_or_else(|| panic!("crlNumber: {}", out.stdout));
    u64::from_str_radix(hex, 16).expect("a hex CRL number")
}

/// `openssl crl -text` of a DER CRL.
fn crl_text(crl: &Path) -> String {
    openssl(["crl", "-inform", "DER", "-in", s(crl), "-noout", "-text"]).ok().stdout
}

fn lists(crl_text: &str, serial: &str) -> bool {
    crl_text.contains(&format!("Serial Number: {serial}\n"))
}

// ---- the webhook receiver -------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hook {
    at: Instant,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
    /// The status the receiver answered.
    answered: u16,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 that records every request and answers 500 to the
/// first `fail_first` and 200 to the rest.
struct Receiver {
    port: u16,
    hooks: Arc<Mutex<Vec<Hook>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        let port = listener.local_addr().expect("address").port();
        let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (sink, stopped) = (hooks.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let answered =
                    if sink.lock().unwrap_or_else(PoisonError::into_inner).len() < fail_first { 500 } else { 200 };
                let Some(hook) = read_hook(&stream, answered) else { continue };
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(hook);
                let reason = if answered == 200 { "OK" } else { "Internal Server Error" };
                let response =
                    format!("HTTP/1.1 {answered} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self { port, hooks, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP/1.1 request (headers lowercased, JSON body).
fn read_hook(stream: &TcpStream, answered: u16) -> Option<Hook> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(':')?;
        headers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    Some(Hook { at: Instant::now(), method, path, headers, body, answered })
}

// ---- certificate login ----------------------------------------------------------------------

/// `POST /api/v1/certificates/{serial}/revoke` as `who`.
fn revoke_api(service: &Service, who: &Enrolled, serial: &str, password: &str, reason: &str) -> Reply {
    let url = service.login_url(&format!("/api/v1/certificates/{serial}/revoke"));
    service.post_json(&url, &json!({ "password": password, "reason": reason }), &who.client_args())
}

/// The status `/api/v1/me` gives `who`'s own certificate.
#[track_caller]
fn own_status(service: &Service, who: &Enrolled) -> String {
    let reply = service.me(&who.client());
    reply.expect(200);
    let me = reply.json();
    let listed =
        me["certificates"].as_array().expect("certificates").iter().find(|c| c["serial"] == who.serial.as_str());
    listed.unwrap_or_else(|| panic!("{} not in {me}", who.serial))["status"].as_str().expect("status").to_owned()
}

// ---- tests ----------------------------------------------------------------------------------

/// The OCSP responder, judged by `openssl ocsp` and pkilint: good for an enrolled certificate,
/// revoked (reason and time) at the very next query after `inkan revoke` — for SHA-1 and
/// SHA-256 CertIDs alike — unknown for a serial never issued; the GET form answers the same;
/// error answers are OCSP responses (malformedRequest, unauthorized) with HTTP 200; a wrong
/// content type is 415; good answers carry RFC 5019 caching headers; the delegated responder
/// certificate is lint-clean with OCSP Signing and OCSP No Check.
#[test]
fn ocsp_answers_good_revoked_and_unknown_and_openssl_verifies_them() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("olga", "master", None);
    let work = ca.work();
    let service = Service::watched(&ca, &[]);
    let olga = service.acquire("olga", "olga");

    // Good, verified under the chain the API handed out; the SHA-256 CertID too.
    let good_der = work.join("good.der");
    let out = ocsp(&ca, &service, &["-cert", s(&olga.cert)], &olga.chain, &good_der, &[]);
    assert_eq!(ocsp_status(&out, s(&olga.cert)), "good", "{}", out.text());
    assert_lint_clean("lint_ocsp_response", &[s(&good_der)]);
    let sha256_der = work.join("good-sha256.der");
    let out = ocsp(&ca, &service, &["-cert", s(&olga.cert)], &olga.chain, &sha256_der, &["-sha256"]);
    assert_eq!(ocsp_status(&out, s(&olga.cert)), "good", "{}", out.text());
    assert!(out.text().contains("Hash Algorithm: sha256"), "{}", out.text());

    // POST by hand: content type and caching headers.
    let request = ocsp_request(&ca.ca_crt(), &olga.cert, &work.join("olga.req"));
    let posted = post_ocsp(&service, "application/ocsp-request", &request);
    posted.expect(200);
    assert_eq!(posted.header("content-type").as_deref(), Some("application/ocsp-response"));
    assert_cacheable(&posted);

    // GET /ocsp/{url-encoded base64 of the DER request}: the same answer, verified by openssl.
    let base64 = openssl(["base64", "-A", "-in", s(&work.join("olga.req"))]).ok().stdout.trim().to_owned();
    let fetched = download(&service, &format!("/ocsp/{}", url_encode(&base64)), &work.join("get.der"));
    fetched.expect(200);
    assert_cacheable(&fetched);
    let respin = openssl([
        "ocsp",
        "-respin",
        s(&work.join("get.der")),
        "-issuer",
        s(&ca.ca_crt()),
        "-cert",
        s(&olga.cert),
        "-CAfile",
        s(&olga.chain),
        "-resp_text",
    ])
    .ok();
    assert_eq!(ocsp_status(&respin, s(&olga.cert)), "good", "{}", respin.text());
    // Clients that do not encode the base64 are understood too.
    let raw = download(&service, &format!("/ocsp/{base64}"), &work.join("get-raw.der"));
    raw.expect(200);
    assert_eq!(raw.body, fetched.body, "the raw GET gets the cached answer the encoded one got");
    let slashed = download(&service, &format!("/ocsp/{}/", url_encode(&base64)), &work.join("get-slash.der"));
    slashed.expect(200);
    assert_eq!(slashed.body, fetched.body, "a trailing slash after the request is dropped");

    // Revoked while serving: the very next query says so.
    let before = OffsetDateTime::now_utc().replace_nanosecond(0).expect("whole seconds");
    ca.inkan(["revoke", &olga.serial, "--reason", "keyCompromise"]).ok();
    let revoked_at = Instant::now();
    let revoked_der = work.join("revoked.der");
    let out = ocsp(&ca, &service, &["-cert", s(&olga.cert)], &olga.chain, &revoked_der, &[]);
    let took = revoked_at.elapsed();
    assert_eq!(ocsp_status(&out, s(&olga.cert)), "revoked", "{}", out.text());
    eprintln!("revoked answer {took:?} after `inkan revoke` returned");
    assert!(took < Duration::from_secs(1), "the revoked answer took {took:?}");
    let text = out.text();
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    let time = openssl_time(&between(&text, "Revocation Time: ", "\n"));
    let after = OffsetDateTime::now_utc();
    assert!(before <= time && time <= after, "revocation time {time} not between {before} and {after}");
    assert_lint_clean("lint_ocsp_response", &[s(&revoked_der)]);
    // The SHA-256 answer cached above is gone too.
    let out = ocsp(&ca, &service, &["-cert", s(&olga.cert)], &olga.chain, &sha256_der, &["-sha256"]);
    assert_eq!(ocsp_status(&out, s(&olga.cert)), "revoked", "{}", out.text());
    // And the GET form, with the very same request as before.
    download(&service, &format!("/ocsp/{}", url_encode(&base64)), &work.join("get2.der")).expect(200);
    let respin = openssl([
        "ocsp",
        "-respin",
        s(&work.join("get2.der")),
        "-issuer",
        s(&ca.ca_crt()),
        "-cert",
        s(&olga.cert),
        "-CAfile",
        s(&olga.chain),
    ])
    .ok();
    assert_eq!(ocsp_status(&respin, s(&olga.cert)), "revoked", "{}", respin.text());

    // A serial this CA never issued.
    let unknown_der = work.join("unknown.der");
    let out = ocsp(&ca, &service, &["-serial", "0x1234"], &olga.chain, &unknown_der, &[]);
    assert_eq!(ocsp_status(&out, "0x1234"), "unknown", "{}", out.text());
    assert_lint_clean("lint_ocsp_response", &[s(&unknown_der)]);

    // Refusals are OCSP responses with HTTP 200, never cached.
    for (what, body) in [("garbage", b"hello, OCSP".as_slice()), ("empty", b"".as_slice())] {
        let reply = post_ocsp(&service, "application/ocsp-request", body);
        reply.expect(200);
        assert_eq!(reply.body, [0x30, 0x03, 0x0a, 0x01, 0x01], "{what}: malformedRequest");
        assert_eq!(reply.header("content-type").as_deref(), Some("application/ocsp-response"), "{what}");
        assert!(!reply.header("cache-control").unwrap_or_default().contains("max-age"), "{what}: {}", reply.headers);
    }
    let reply = service.curl(&service.http_url("/ocsp/%21%21not-base64"), NONE);
    reply.expect(200);
    assert_eq!(reply.body, [0x30, 0x03, 0x0a, 0x01, 0x01], "GET of garbage: malformedRequest");
    let (other_ca, other_leaf) = foreign_ca_and_leaf(work);
    let foreign = ocsp_request(&other_ca, &other_leaf, &work.join("other.req"));
    let reply = post_ocsp(&service, "application/ocsp-request", &foreign);
    reply.expect(200);
    assert_eq!(reply.body, [0x30, 0x03, 0x0a, 0x01, 0x06], "another CA's certificate: unauthorized");
    post_ocsp(&service, "application/json", &request).expect(415);

    // The delegated responder's certificate (the first in its file).
    let pem = std::fs::read_to_string(ca.file("ocsp/responder.crt")).expect("responder.crt");
    let end = "-----END CERTIFICATE-----";
    let first = format!("{}{end}\n", pem.split_once(end).expect("a PEM certificate").0);
    let responder = work.join("responder.pem");
    write(&responder, &first);
    assert_lint_clean("lint_pkix_cert", &[s(&responder)]);
    assert_lint_clean("lint_pkix_signer_signee_cert_chain", &[s(&ca.ca_crt()), s(&responder)]);
    let text = openssl(["x509", "-noout", "-text", "-in", s(&responder)]).ok().stdout;
    assert!(text.contains("OCSP Signing"), "no id-kp-OCSPSigning:\n{text}");
    assert!(text.contains("OCSP No Check"), "no id-pkix-ocsp-nocheck:\n{text}");
    service.stop();
}

/// CRL publishing: a CRL right after start; a revocation listed within ~2 s under a higher
/// CRL number; a burst of 10 revocations coalesced into a few CRLs that list them all;
/// lint-clean; with the root's CRL, `openssl verify -crl_check_all` over both CRLs fetched
/// over HTTP accepts a valid leaf and rejects a revoked one.
#[test]
fn crls_are_published_after_revocations_and_bursts_are_coalesced() {
    let ca = TestCa::with_rate_limit(1000);
    let work = ca.work();
    let keep = ca.issue_with_library(&p256_csr(work, "keep"), "keep", 30, "keep");
    let single = ca.issue_with_library(&p256_csr(work, "single"), "single", 30, "single");
    let burst: Vec<(PathBuf, String)> = (0..10)
        .map(|i| {
            ca.issue_with_library(&p256_csr(work, &format!("burst{i}")), &format!("burst{i}"), 30, &format!("burst{i}"))
        })
        .collect();
    assert!(!ca.file("crl/ca.crl").exists(), "init publishes no CRL: the first one is the service's");
    let started = Instant::now();
    let service = Service::watched(&ca, &[]);
    let crl = work.join("ca.crl");

    // No `inkan crl`: the service publishes one as it starts.
    wait_for(Duration::from_secs(10), "the first CRL", || {
        (download(&service, "/crl/ca.crl", &crl).status == 200).then_some(())
    });
    eprintln!("first CRL {:?} after starting serve", started.elapsed());
    let first = crl_number(&crl);
    assert!(!lists(&crl_text(&crl), &single.1));

    ca.inkan(["revoke", &single.1, "--reason", "keyCompromise"]).ok();
    let revoked = Instant::now();
    wait_for(Duration::from_secs(5), "the revocation in the CRL", || {
        download(&service, "/crl/ca.crl", &crl).expect(200);
        lists(&crl_text(&crl), &single.1).then_some(())
    });
    let took = revoked.elapsed();
    eprintln!("revocation listed after {took:?}");
    assert!(took <= Duration::from_millis(2500), "the CRL listed the revocation only after {took:?}");
    let second = crl_number(&crl);
    assert!(second > first, "CRL number {second} after {first}");
    assert!(crl_text(&crl).contains("Key Compromise"));
    let signed_before = crl_count_settled(&service);

    // Ten revocations at once.
    let children: Vec<_> = burst
        .iter()
        .map(|(_, serial)| {
            std::process::Command::new(common::inkan_bin())
                .args(["revoke", serial, "--reason", "cessationOfOperation", "--data-dir", s(&ca.data)])
                .env_remove("INKAN_ROOT_PASSPHRASE")
                .env_remove("INKAN_CA_PASSPHRASE")
                .env_remove("INKAN_DATA_DIR")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting inkan revoke")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("inkan revoke");
        assert!(out.status.success(), "inkan revoke: {}", String::from_utf8_lossy(&out.stderr));
    }
    let burst_done = Instant::now();
    wait_for(Duration::from_secs(5), "all ten revocations in the CRL", || {
        download(&service, "/crl/ca.crl", &crl).expect(200);
        let text = crl_text(&crl);
        burst.iter().all(|(_, serial)| lists(&text, serial)).then_some(())
    });
    eprintln!("burst of 10 listed after {:?}", burst_done.elapsed());
    let signed_after = crl_count_settled(&service);
    let new_crls = signed_after - signed_before;
    eprintln!("10 revocations made {new_crls} CRLs");
    assert!((1..=5).contains(&new_crls), "10 revocations made {new_crls} CRLs");
    download(&service, "/crl/ca.crl", &crl).expect(200);
    let text = crl_text(&crl);
    for serial in burst.iter().map(|(_, serial)| serial).chain([&single.1]) {
        assert!(lists(&text, serial), "{serial} missing from the last CRL:\n{text}");
    }
    assert!(!lists(&text, &keep.1), "the valid certificate is listed:\n{text}");
    assert!(crl_number(&crl) > second);
    assert_lint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX", s(&crl)]);

    // The whole chain checked against both CRLs, fetched over HTTP.
    ca.inkan(["root", "sign-crl", "--out", s(&work.join("root-signed.crl"))]).ok();
    let root_crl = work.join("root.crl");
    let reply = download(&service, "/crl/root.crl", &root_crl);
    reply.expect(200);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/pkix-crl"));
    assert_lint_clean("lint_crl", &["-t", "ARL", "-p", "PKIX", s(&root_crl)]);
    let mut crls = String::new();
    for der in [&crl, &root_crl] {
        crls.push_str(&openssl(["crl", "-inform", "DER", "-in", s(der), "-outform", "PEM"]).ok().stdout);
    }
    let crls_pem = work.join("crls.pem");
    write(&crls_pem, crls);
    let verify = |leaf: &Path| {
        openssl([
            "verify",
            "-crl_check_all",
            "-CAfile",
            s(&ca.root_crt()),
            "-untrusted",
            s(&ca.ca_crt()),
            "-CRLfile",
            s(&crls_pem),
            s(leaf),
        ])
    };
    verify(&keep.0).ok();
    let refused = verify(&burst[0].0).failed();
    assert!(refused.text().contains("certificate revoked"), "{}", refused.text());
    let refused = verify(&single.0).failed();
    assert!(refused.text().contains("certificate revoked"), "{}", refused.text());
    service.stop();
}

/// Revocation from the web, on the certificate-login listener: a user revokes its own
/// certificate (password again, an allowed reason) and it stops working at once, for OCSP and
/// for login; a wrong reason or password changes nothing; a master revokes its own general
/// user's certificate, but no one else's; a general user cannot revoke its master's; the home
/// page's form works once.
#[test]
fn users_and_masters_revoke_from_the_web() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("mia", "master", None);
    ca.add_user("gil", "general", Some("mia"));
    ca.add_user("gus", "general", Some("mia"));
    ca.add_user("max", "master", None);
    let service = Service::watched(&ca, &[]);
    let mia = service.acquire("mia", "mia");
    let gil = service.acquire("gil", "gil");
    let gus = service.acquire("gus", "gus");
    let max = service.acquire("max", "max");
    for (login_id, who) in [("mia", &mia), ("gil", &gil), ("gus", &gus), ("max", &max)] {
        service.login_api(&who.client(), &user_password(login_id)).expect(200);
    }

    // gus and its own certificate: a master's reason, then a wrong password, change nothing.
    revoke_api(&service, &gus, &gus.serial, &user_password("gus"), "affiliationChanged")
        .expect_error(400, "reason_not_allowed");
    revoke_api(&service, &gus, &gus.serial, "wrong.Pw-0000", "keyCompromise").expect_error(401, "invalid_credentials");
    assert_eq!(own_status(&service, &gus), "valid");
    assert_eq!(ocsp_of(&ca, &service, &gus).0, "good");
    // The right password and reason: revoked at once, for OCSP and for login.
    let done = revoke_api(&service, &gus, &gus.serial, &user_password("gus"), "keyCompromise");
    done.expect(200);
    assert_eq!(done.json(), json!({ "serial": gus.serial, "status": "revoked" }));
    let (status, out) = ocsp_of(&ca, &service, &gus);
    assert_eq!(status, "revoked");
    assert!(out.text().contains("Reason: keyCompromise"), "{}", out.text());
    service.me(&gus.client()).expect_error(403, "certificate_revoked");
    let again = json!({ "password": user_password("gus") });
    service
        .post_json(&service.login_url("/api/v1/login"), &again, &gus.client_args())
        .expect_error(403, "certificate_revoked");

    // Someone else's certificate is as if it did not exist.
    revoke_api(&service, &gil, &mia.serial, &user_password("gil"), "keyCompromise").expect_error(404, "not_found");
    revoke_api(&service, &max, &gil.serial, &user_password("max"), "affiliationChanged").expect_error(404, "not_found");
    assert_eq!(ocsp_of(&ca, &service, &mia).0, "good");
    assert_eq!(ocsp_of(&ca, &service, &gil).0, "good");

    // mia, gil's master, may.
    let done = revoke_api(&service, &mia, &gil.serial, &user_password("mia"), "affiliationChanged");
    done.expect(200);
    assert_eq!(done.json()["status"], "revoked");
    let (status, out) = ocsp_of(&ca, &service, &gil);
    assert_eq!(status, "revoked");
    assert!(out.text().contains("Reason: affiliationChanged"), "{}", out.text());
    service.me(&gil.client()).expect_error(403, "certificate_revoked");
    assert_eq!(own_status(&service, &mia), "valid", "the master's own certificate is untouched");
    revoke_api(&service, &mia, &gil.serial, &user_password("mia"), "keyCompromise").expect_error(409, "not_revocable");
    revoke_api(&service, &mia, &mia.serial, &user_password("mia"), "becauseISaidSo")
        .expect_error(400, "invalid_reason");
    revoke_api(&service, &mia, "not-a-serial", &user_password("mia"), "keyCompromise")
        .expect_error(400, "invalid_serial");

    // The home page's form, with the session's CSRF token: once.
    let home = service.curl(&service.login_url("/home?lang=en"), &max.client_args());
    home.expect(200);
    let action = format!("/certificates/{}/revoke?lang=en", max.serial);
    let form = between(&home.text(), &format!("action=\"{action}\""), "</form>");
    let csrf = between(&form, "name=\"csrf\" value=\"", "\"");
    let url = service.login_url(&action);
    let fields = |csrf: &str| format!("csrf={csrf}&reason=cessationOfOperation&password={}", user_password("max"));
    let form_type = "application/x-www-form-urlencoded";
    service.post(&url, form_type, fields(&"0".repeat(csrf.len())).as_bytes(), &max.client_args()).expect(403);
    assert_eq!(ocsp_of(&ca, &service, &max).0, "good", "a forged form revokes nothing");
    let posted = service.post(&url, form_type, fields(&csrf).as_bytes(), &max.client_args());
    posted.expect(303);
    assert_eq!(posted.header("location").as_deref(), Some("/home?lang=en"));
    let (status, out) = ocsp_of(&ca, &service, &max);
    assert_eq!(status, "revoked");
    assert!(out.text().contains("Reason: cessationOfOperation"), "{}", out.text());
    let twice = service.post(&url, form_type, fields(&csrf).as_bytes(), &max.client_args());
    assert_eq!(twice.status, 403, "the second form post: {}", twice.text());
    service.stop();
}

/// Expiry notices: one per certificate for the nearest threshold it is in, none for a
/// certificate outside all thresholds, a revoked one or a superseded one; never twice, not
/// even across a restart.
#[test]
fn expiry_notices_go_once_per_threshold_and_survive_a_restart() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("nora", "master", None);
    let work = ca.work();
    // (account, days of validity, the threshold of its notice)
    let plan = [("exp20", 20, Some(30)), ("exp10", 10, Some(14)), ("exp3", 3, Some(7)), ("exp1", 1, Some(1))];
    let mut expected = Vec::new();
    for (account, days, threshold) in plan.into_iter().chain([("exp60", 60, None), ("exp5r", 5, None)]) {
        let (cert, serial) = ca.issue_with_library(&p256_csr(work, account), account, days, account);
        if let Some(threshold) = threshold {
            let not_after = not_after(&cert);
            expected.push(json!({
                "event": "certificate.expiring",
                "account": account,
                "serial": serial,
                "not_after": not_after.format(&Rfc3339).expect("RFC 3339"),
                "threshold": threshold,
                "days_left": days - 1,
            }));
        }
        if account == "exp5r" {
            ca.inkan(["revoke", &serial, "--reason", "keyCompromise"]).ok();
        }
    }
    // nora's 10-day certificate is superseded by 再取得 (no notices are configured yet).
    let (old_cert, old) = ca.issue_with_library(&p256_csr(work, "nora-old"), "nora", 10, "nora-old");
    let service = Service::watched(&ca, &[]);
    // OCSP answers (and caches) good for it, then superseded once it is replaced.
    let chain = work.join("chain.pem");
    write(
        &chain,
        format!(
            "{}{}",
            std::fs::read_to_string(ca.ca_crt()).expect("CA"),
            std::fs::read_to_string(ca.root_crt()).expect("root")
        ),
    );
    let old_id = ["-cert", s(&old_cert)];
    let out = ocsp(&ca, &service, &old_id, &chain, &work.join("old.der"), &[]);
    assert_eq!(ocsp_status(&out, s(&old_cert)), "good");
    let new = service.acquire("nora", "nora-new");
    let out = ocsp(&ca, &service, &old_id, &chain, &work.join("old.der"), &[]);
    assert_eq!(ocsp_status(&out, s(&old_cert)), "revoked", "{}", out.text());
    assert!(out.text().contains("Reason: superseded"), "{}", out.text());
    service.stop();
    let statuses: Vec<(String, String)> = ca
        .list(&["--account", "nora"])
        .iter()
        .map(|c| (c["serial"].as_str().expect("serial").into(), c["status"].as_str().expect("status").into()))
        .collect();
    assert!(statuses.contains(&(old.clone(), "superseded".into())), "{statuses:?}");
    assert!(statuses.contains(&(new.serial.clone(), "valid".into())), "{statuses:?}");

    let receiver = Receiver::start(0);
    let webhook = format!("webhook_url = \"{}\"", receiver.url());
    ca.configure(&[
        ("# webhook_url = \"http://127.0.0.1:9000/inkan-expiry\"", &webhook),
        ("thresholds_days = [30, 14, 7, 1]", "thresholds_days = [30, 14, 7, 1]"),
        ("scan_interval_secs = 3600", "scan_interval_secs = 1"),
    ]);
    let started = Instant::now();
    let service = Service::watched(&ca, &[]);
    wait_for(Duration::from_secs(10), "four notices", || (receiver.hooks().len() >= expected.len()).then_some(()));
    eprintln!("{} notices within {:?} of starting serve", expected.len(), started.elapsed());
    std::thread::sleep(Duration::from_millis(3500)); // three more scans: nothing new may come
    let hooks = receiver.hooks();
    let mut bodies: Vec<Value> = hooks.iter().map(|h| h.body.clone()).collect();
    let key = |v: &Value| v["serial"].as_str().unwrap_or_default().to_owned();
    bodies.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(bodies, expected, "the notices");
    for hook in &hooks {
        assert_eq!((hook.method.as_str(), hook.path.as_str()), ("POST", "/hook"));
        assert_eq!(hook.header("content-type"), Some("application/json"));
        let idempotency = format!("{}-{}", hook.body["serial"].as_str().expect("serial"), hook.body["threshold"]);
        assert_eq!(hook.header("idempotency-key"), Some(idempotency.as_str()));
    }
    let metrics = service.metrics();
    assert_eq!(metric(&metrics, "inkan_notices_total{result=\"sent\"}"), expected.len() as u64);
    assert_eq!(metric(&metrics, "inkan_notices_total{result=\"failed\"}"), 0);
    service.stop();

    // Delivered notices are not sent again by the next service.
    let service = Service::watched(&ca, &[]);
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(receiver.hooks().len(), expected.len(), "notices sent again after a restart: {:?}", receiver.hooks());
    service.stop();

    // A nearer threshold than the one notified still gets its notice (here by configuration,
    // as time passing would): exp20, notified at 30, is inside 25; exp10, notified at 14, is
    // not inside a threshold nearer than 14.
    ca.configure(&[("thresholds_days = [30, 14, 7, 1]", "thresholds_days = [30, 25, 7, 1]")]);
    let service = Service::watched(&ca, &[]);
    wait_for(Duration::from_secs(10), "the notice for 25 days", || {
        (receiver.hooks().len() > expected.len()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    let hooks = receiver.hooks();
    let new: Vec<(&str, &Value)> = hooks[expected.len()..]
        .iter()
        .map(|h| (h.body["account"].as_str().unwrap_or_default(), &h.body["threshold"]))
        .collect();
    assert_eq!(new, [("exp20", &json!(25))], "notices after the thresholds changed");
    service.stop();
}

/// A receiver that fails: the notice is retried with backoff (1 s, 2 s, 4 s) and delivered
/// once; the failures are counted in the metrics.
#[test]
fn expiry_notices_are_retried_with_backoff_until_delivered() {
    let ca = TestCa::with_rate_limit(1000);
    let work = ca.work();
    let (_, serial) = ca.issue_with_library(&p256_csr(work, "late"), "late", 20, "late");
    let receiver = Receiver::start(3);
    let webhook = format!("webhook_url = \"{}\"", receiver.url());
    ca.configure(&[
        ("# webhook_url = \"http://127.0.0.1:9000/inkan-expiry\"", &webhook),
        ("scan_interval_secs = 3600", "scan_interval_secs = 1"),
    ]);
    let service = Service::watched(&ca, &[]);
    wait_for(Duration::from_secs(20), "the delivered notice", || {
        receiver.hooks().iter().any(|h| h.answered == 200).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500)); // two more scans: nothing new may come
    let hooks = receiver.hooks();
    let answered: Vec<u16> = hooks.iter().map(|h| h.answered).collect();
    assert_eq!(answered, [500, 500, 500, 200], "attempts");
    let key = format!("{serial}-30");
    for hook in &hooks {
        assert_eq!(hook.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(hook.body, hooks[0].body);
    }
    assert_eq!(hooks[0].body["serial"], serial.as_str());
    let metrics = service.metrics();
    assert!(metric(&metrics, "inkan_notices_total{result=\"failed\"}") >= 3, "{metrics}");
    assert_eq!(metric(&metrics, "inkan_notices_total{result=\"sent\"}"), 1);
    let gaps: Vec<Duration> = hooks.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("retried after {gaps:?}");
    for (gap, wanted) in gaps.iter().zip([1, 2, 4]) {
        let wanted = Duration::from_secs(wanted);
        assert!(
            *gap >= wanted.mul_f64(0.9) && *gap <= wanted + Duration::from_millis(1500),
            "retries came after {gaps:?}; the backoff is 1 s, 2 s, 4 s"
        );
    }
    service.stop();
}

/// `/metrics`: Prometheus text with HELP and TYPE; the registry census (the service's own TLS
/// and OCSP certificates included); counters that move with enrollments, OCSP queries and CRL
/// downloads.
#[test]
fn metrics_count_certificates_and_requests() {
    let ca = TestCa::with_rate_limit(1000);
    ca.add_user("pia", "master", None);
    let work = ca.work();
    for (account, days) in [("m5", 5), ("m20", 20), ("m60", 60)] {
        ca.issue_with_library(&p256_csr(work, account), account, days, account);
    }
    let service = Service::watched(&ca, &[]);
    let reply = service.curl(&service.http_url("/metrics"), NONE);
    reply.expect(200);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = reply.text();
    for (family, kind) in [
        ("inkan_certificates", "gauge"),
        ("inkan_certificates_expiring", "gauge"),
        ("inkan_issued_total", "counter"),
        ("inkan_revoked_total", "counter"),
        ("inkan_crl_signed_total", "counter"),
        ("inkan_crl_requests_total", "counter"),
        ("inkan_ocsp_requests_total", "counter"),
        ("inkan_notices_total", "counter"),
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {family}:\n{text}");
        assert!(text.contains(&format!("# TYPE {family} {kind}\n")), "no TYPE {kind} for {family}:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        assert!(name.starts_with("inkan_") && value.parse::<f64>().is_ok(), "not a sample: {line:?}");
    }
    // Three certificates of ours plus the service's TLS (365 days) and OCSP (90 days) ones.
    assert_eq!(metric(&text, "inkan_certificates{status=\"valid\"}"), 5, "{text}");
    assert_eq!(metric(&text, "inkan_certificates{status=\"revoked\"}"), 0, "{text}");
    assert_eq!(metric(&text, "inkan_certificates_expiring{within=\"30d\"}"), 2, "{text}");
    assert_eq!(metric(&text, "inkan_certificates_expiring{within=\"7d\"}"), 1, "{text}");

    let issued = metric(&text, "inkan_issued_total");
    let pia = service.acquire("pia", "pia");
    assert_eq!(metric(&service.metrics(), "inkan_issued_total"), issued + 1);

    let good = metric(&service.metrics(), "inkan_ocsp_requests_total{response=\"good\"}");
    assert_eq!(ocsp_of(&ca, &service, &pia).0, "good");
    assert_eq!(metric(&service.metrics(), "inkan_ocsp_requests_total{response=\"good\"}"), good + 1);

    wait_for(Duration::from_secs(10), "the first CRL", || {
        (metric(&service.metrics(), "inkan_crl_signed_total") >= 1).then_some(())
    });
    let downloads = metric(&service.metrics(), "inkan_crl_requests_total{crl=\"ca\"}");
    download(&service, "/crl/ca.crl", &work.join("ca.crl")).expect(200);
    assert_eq!(metric(&service.metrics(), "inkan_crl_requests_total{crl=\"ca\"}"), downloads + 1);
    assert_eq!(metric(&service.metrics(), "inkan_crl_requests_total{crl=\"root\"}"), 0);

    let revoked = metric(&service.metrics(), "inkan_revoked_total");
    ca.inkan(["revoke", &pia.serial]).ok();
    assert_eq!(metric(&service.metrics(), "inkan_revoked_total"), revoked + 1);
    service.stop();
}

/// The shard of `count` that lists the certificate with serial `hex` (its last eight bytes
/// modulo `count`), worked out here from the serial as openssl prints it.
fn shard_of(hex: &str, count: u64) -> u64 {
    let low = &hex[hex.len().saturating_sub(16)..];
    u64::from_str_radix(low, 16).expect("a hex serial") % count
}

/// The one CRL distribution point URI of a certificate, as openssl prints it.
fn distribution_point(cert: &Path) -> String {
    let text = openssl(["x509", "-noout", "-ext", "crlDistributionPoints", "-in", s(cert)]).ok().stdout;
    let uris: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("URI:")).collect();
    assert_eq!(uris.len(), 1, "{text}");
    uris[0].to_owned()
}

/// Partitioned CRLs (`crl_shards`): every certificate names its own shard; each shard carries
/// an issuingDistributionPoint naming itself and lists the revoked certificates of its part
/// only; openssl checks a certificate against its shard (revoked or not) and refuses a shard
/// that is not the certificate's; pkilint finds nothing; /crl/ca.crl keeps listing everything;
/// after the count changes, the earlier shards are still signed next to the new ones.
#[test]
fn crl_shards_each_list_their_part_and_openssl_checks_a_certificate_against_its_own() {
    let ca = TestCa::with_rate_limit(1000);
    ca.configure(&[("crl_shards = 1", "crl_shards = 3")]);
    let work = ca.work();
    let service = Service::watched(&ca, &[]);
    // The URL certificates name (the configured base URL), not necessarily the test's port.
    let mut http = String::new();
    let mut certs = Vec::new();
    for i in 0..18 {
        let name = format!("shard{i}");
        let cert = work.join(format!("{name}.crt"));
        let out = ca.inkan(["issue", "--csr", s(&p256_csr(work, &name)), "--account", &name, "--out", s(&cert)]).ok();
        let serial = between(&out.stderr, "Issued serial ", " ");
        let shard = shard_of(&serial, 3);
        let named = distribution_point(&cert);
        let suffix = format!("/crl/ca-3-{shard}.crl");
        assert!(named.starts_with("http://") && named.ends_with(&suffix), "{serial}: {named}, not …{suffix}");
        http = named.strip_suffix(&suffix).unwrap_or_default().to_owned();
        certs.push((cert, serial, shard, i % 2 == 0));
    }
    for (_, serial, _, revoke) in &certs {
        if *revoke {
            ca.inkan(["revoke", serial, "--reason", "keyCompromise"]).ok();
        }
    }
    let revoked: Vec<&String> = certs.iter().filter(|c| c.3).map(|c| &c.1).collect();
    let whole = work.join("ca.crl");
    wait_for(Duration::from_secs(10), "every revocation in /crl/ca.crl", || {
        download(&service, "/crl/ca.crl", &whole).expect(200);
        let text = crl_text(&whole);
        revoked.iter().all(|serial| lists(&text, serial)).then_some(())
    });
    assert!(!crl_text(&whole).contains("Issuing Distribution Point"), "the whole CRL is not a partition");

    let shard_file = |count: u64, k: u64| work.join(format!("ca-{count}-{k}.crl"));
    for k in 0..3 {
        let crl = shard_file(3, k);
        let reply = download(&service, &format!("/crl/ca-3-{k}.crl"), &crl);
        reply.expect(200);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/pkix-crl"));
        let text = crl_text(&crl);
        assert!(text.contains("X509v3 Issuing Distribution Point: critical"), "{text}");
        assert!(text.contains(&format!("URI:{http}/crl/ca-3-{k}.crl")), "{text}");
        assert!(text.contains("Only User Certificates"), "{text}");
        for (_, serial, shard, revoke) in &certs {
            assert_eq!(lists(&text, serial), *revoke && *shard == k, "{serial} (shard {shard}) in shard {k}:\n{text}");
        }
        let signature = openssl(["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-CAfile", s(&ca.ca_crt())]).ok();
        assert!(signature.text().contains("verify OK"), "{}", signature.text());
        assert_lint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX", s(&crl)]);
    }
    let verify = |leaf: &Path, crl: &Path| {
        let pem = work.join("shard.pem");
        write(&pem, openssl(["crl", "-inform", "DER", "-in", s(crl), "-outform", "PEM"]).ok().stdout);
        openssl([
            "verify",
            "-crl_check",
            "-CAfile",
            s(&ca.root_crt()),
            "-untrusted",
            s(&ca.ca_crt()),
            "-CRLfile",
            s(&pem),
            s(leaf),
        ])
    };
    for (cert, serial, shard, revoke) in &certs {
        let checked = verify(cert, &shard_file(3, *shard));
        if *revoke {
            assert!(checked.failed().text().contains("certificate revoked"), "{serial}");
        } else {
            checked.ok();
        }
        // Another shard does not cover it: its issuingDistributionPoint is not the certificate's
        // distribution point, and openssl says so.
        let other = verify(cert, &shard_file(3, (shard + 1) % 3)).failed();
        assert!(other.text().contains("different CRL scope"), "{serial}: {}", other.text());
    }
    for path in ["/crl/ca-3-3.crl", "/crl/ca-2-0.crl", "/crl/ca-03-1.crl", "/crl/2/ca-3-0.crl", "/crl/ca-3-1.der"] {
        assert_eq!(download(&service, path, &work.join("none")).status, 404, "{path}");
    }

    // Two shards from now on: certificates already out name the three-shard CRLs, which go on
    // being signed.
    let before = crl_number(&shard_file(3, 0));
    service.stop();
    ca.configure(&[("crl_shards = 3", "crl_shards = 2")]);
    let service = Service::watched(&ca, &[]);
    let (cert, serial) = {
        let cert = work.join("after.crt");
        let out =
            ca.inkan(["issue", "--csr", s(&p256_csr(work, "after")), "--account", "after", "--out", s(&cert)]).ok();
        (cert, between(&out.stderr, "Issued serial ", " "))
    };
    assert_eq!(distribution_point(&cert), format!("{http}/crl/ca-2-{}.crl", shard_of(&serial, 2)));
    ca.inkan(["revoke", &serial]).ok();
    wait_for(Duration::from_secs(10), "the new revocation in its two-shard CRL", || {
        let crl = shard_file(2, shard_of(&serial, 2));
        download(&service, &format!("/crl/ca-2-{}.crl", shard_of(&serial, 2)), &crl).expect(200);
        lists(&crl_text(&crl), &serial).then_some(())
    });
    download(&service, "/crl/ca-3-0.crl", &shard_file(3, 0)).expect(200);
    assert!(crl_number(&shard_file(3, 0)) > before, "the three-shard CRLs are signed again");
    for (cert, _, shard, revoke) in &certs {
        download(&service, &format!("/crl/ca-3-{shard}.crl"), &shard_file(3, *shard)).expect(200);
        let checked = verify(cert, &shard_file(3, *shard));
        assert_eq!(checked.status.success(), !revoke, "{}", checked.text());
    }
    service.stop();
}
