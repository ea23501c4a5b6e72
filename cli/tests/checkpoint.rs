//! Signed checkpoints of the audit trail: the signer signs them as the trail grows, serves the
//! latest at /audit/checkpoint (its signature checked here by openssl), and `inkan audit
//! verify` names lines cut off the end, a tail replaced by another valid chain, and an old
//! backup restored under a newer checkpoint a relying party kept.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Waits until /audit/checkpoint covers at least `lines` lines; returns its JSON text.
fn checkpoint_covering(service: &Service, lines: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = service.curl(&service.http_url("/audit/checkpoint"), NONE);
        if reply.status == 200 {
            let doc: Value = serde_json::from_slice(&reply.body).expect("checkpoint JSON");
            if doc["checkpoint"]["lines"].as_u64().unwrap_or(0) >= lines {
                assert_eq!(reply.header("content-type").as_deref(), Some("application/json"));
                return String::from_utf8(reply.body.clone()).expect("UTF-8");
            }
        } else {
            assert_eq!(reply.status, 404, "{}", reply.text());
        }
        assert!(Instant::now() < deadline, "no checkpoint covering {lines} lines: {}", reply.text());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn lines_of(path: &Path) -> u64 {
    read(path).lines().count() as u64
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rewrites the trail from line `from` (1-based) with altered details and a freshly computed
/// chain: every line still links to the one before.
fn forge_tail(path: &Path, from: usize) {
    let text = read(path);
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i + 1 < from {
            out.push(line.to_owned());
            continue;
        }
        let mut value: Value = serde_json::from_str(line).expect("audit line");
        value["details"]["forged"] = Value::Bool(true);
        value["prev"] = Value::String(sha256_hex(out.last().expect("a line before").as_bytes()));
        out.push(serde_json::to_string(&value).expect("json"));
    }
    write(path, out.iter().map(|l| format!("{l}\n")).collect::<String>());
}

#[test]
fn checkpoints_show_a_cut_a_forged_tail_and_an_old_backup() {
    let ca = TestCa::init(&[]);
    ca.configure(&[
        ("checkpoint_lines = 1000", "checkpoint_lines = 4"),
        ("checkpoint_interval_secs = 300", "checkpoint_interval_secs = 1"),
    ]);
    let work = ca.work().to_owned();
    let log = ca.file("audit/audit.log");
    let service = Service::start(&ca, &[]);
    for name in ["ann", "ben", "cal"] {
        ca.add_user(name, "master", None);
    }
    let first = checkpoint_covering(&service, lines_of(&log));
    let doc: Value = serde_json::from_str(&first).expect("json");
    let covered = doc["checkpoint"]["lines"].as_u64().expect("lines");

    // openssl checks the signature with the issuing CA's public key, over the context string
    // and the statement as compact JSON with sorted keys.
    let message = work.join("checkpoint.msg");
    write(&message, format!("inkan audit checkpoint v1\n{}", serde_json::to_string(&doc["checkpoint"]).expect("json")));
    let signature = work.join("checkpoint.sig");
    write(&signature, pki::encoding::base64_decode(doc["signature"].as_str().expect("signature")).expect("base64"));
    let public = work.join("ca.pub");
    openssl(["x509", "-in", s(&ca.ca_crt()), "-noout", "-pubkey", "-out", s(&public)]).ok();
    let checked = openssl(["dgst", "-sha256", "-verify", s(&public), "-signature", s(&signature), s(&message)]).ok();
    assert!(checked.stdout.contains("Verified OK"), "{}", checked.text());

    let verified = ca.inkan(["audit", "verify"]).ok();
    assert!(
        verified.stdout.contains("signature good") && verified.stdout.contains(&format!("covers {covered} lines")),
        "{}",
        verified.stdout
    );

    // A backup now; then the trail grows and a relying party keeps the newer checkpoint.
    let old = work.join("old.tar");
    ca.inkan(["backup", "--out", s(&old)]).ok();
    for name in ["dan", "eve", "fay", "gus"] {
        ca.add_user(name, "master", None);
    }
    let kept = work.join("relying-party.json");
    write(&kept, checkpoint_covering(&service, lines_of(&log)));
    service.stop();
    let newest: Value = serde_json::from_str(&read(&kept)).expect("json");
    let newest_lines = newest["checkpoint"]["lines"].as_u64().expect("lines");
    assert!(newest_lines > covered, "a newer checkpoint: {newest_lines} > {covered}");
    ca.inkan(["audit", "verify", "--checkpoint", s(&kept)]).ok();

    // Lines cut off the end: the chain still verifies, the checkpoint does not.
    let original = read(&log);
    let shorter: String = original.lines().take(newest_lines as usize - 2).map(|l| format!("{l}\n")).collect();
    write(&log, &shorter);
    ca.inkan(["audit", "verify"]).refused(&format!("TRUNCATED: the trail has {} lines", newest_lines - 2));
    write(&log, &original);

    // The tail replaced by another valid chain.
    forge_tail(&log, newest_lines as usize - 1);
    let out = ca.inkan(["audit", "verify"]).refused(&format!("FORK: line {newest_lines}"));
    assert!(out.stdout.contains("chain intact"), "the forged chain itself verifies: {}", out.stdout);
    write(&log, &original);
    ca.inkan(["audit", "verify"]).ok();

    // An old backup restored: fine against its own ledger, truncated against the newer copy.
    let restored = work.join("restored");
    inkan(["restore", "--from", s(&old), "--data-dir", s(&restored)], &TestCa::env()).ok();
    inkan(["audit", "verify", "--data-dir", s(&restored)], &TestCa::env()).ok();
    inkan(["audit", "verify", "--data-dir", s(&restored), "--checkpoint", s(&kept)], &TestCa::env())
        .refused("TRUNCATED");

    // A checkpoint altered after signing, or not one at all.
    let altered = work.join("altered.json");
    write(
        &altered,
        read(&kept).replace(&format!("\"lines\":{newest_lines}"), &format!("\"lines\":{}", newest_lines - 1)),
    );
    ca.inkan(["audit", "verify", "--checkpoint", s(&altered)]).refused("signature does not verify");
    let junk = work.join("junk.json");
    write(&junk, "{\"hello\": 1}");
    ca.inkan(["audit", "verify", "--checkpoint", s(&junk)]).refused("not an audit checkpoint");
}
