//! `inkan fixture`: a set of certificates in every state a TLS client-auth relying party must
//! tell apart, written to a new directory with a manifest.
//!
//! The set is written into a hidden sibling directory and renamed into place at the end: a
//! failure leaves no half-written set behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ca::fixture::{ClientState, EphemeralCa, FixtureCert, FixtureOrder, FixtureSet, KeyAndCsr, Role};
use ca::layout::DataDir;
use enroll_server::admin::{AdminReply, AdminRequest};
use pki::crl::RevocationReason;
use pki::encoding::{certificates_pem, pem_encode};
use pki::{Profile, San};
use serde_json::json;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{Needs, admin, unexpected};
use crate::args::FixtureArgs;

/// The PKCS#12 password when none is given: fixtures are test material, and a known password
/// is what test suites need (mkcert does the same).
const DEFAULT_P12_PASSWORD: &str = "inkan";

/// `inkan fixture`.
pub fn run(args: &FixtureArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let order = order_of(args)?;
    let password = match &args.p12_password_file {
        Some(path) => {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
            Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
        }
        None => Zeroizing::new(DEFAULT_P12_PASSWORD.to_owned()),
    };
    check_out_dir(&args.out)?;
    let now = OffsetDateTime::now_utc();
    let set = match &args.data_dir {
        Some(data_dir) if !args.ephemeral => from_data_dir(&DataDir::new(data_dir), args, &order, now)?,
        _ => ca::fixture::ephemeral(&order, now)?,
    };
    let written = Written { ephemeral: args.ephemeral, default_password: args.p12_password_file.is_none() };
    let files = write_set(&args.out, &set, &password, &written)?;
    for cert in &set.certificates {
        let summary = pki::certificate::Summary::from_der(&cert.der)?;
        println!(
            "{:<7} {:<24} {:<14} serial {}",
            match cert.role {
                Role::Client => "client",
                Role::Server => "server",
            },
            cert.name,
            cert.state,
            summary.serial
        );
    }
    println!(
        "wrote {} certificates ({files} files) to {} in {} ms; see manifest.json",
        set.certificates.len(),
        args.out.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// A set from the data directory's CA, through the running service's admin socket (or the
/// stores opened here when it does not run): every certificate is recorded in the registry, the
/// revoked ones are revoked there, and the CRL is signed and published. The service's
/// responder answers OCSP for them.
fn from_data_dir(
    dir: &DataDir,
    args: &FixtureArgs,
    order: &FixtureOrder,
    now: OffsetDateTime,
) -> anyhow::Result<FixtureSet> {
    for (name, state) in &order.clients {
        if matches!(state, ClientState::Expired | ClientState::NotYetValid) {
            bail!(
                "--client {name}:{state} needs --ephemeral: the data directory's CA signs only with its own \
                 clock (a CA does not backdate), so it has no {state} certificates to give"
            );
        }
    }
    super::require_ca(dir)?;
    let root = ca::layout::read_certificate(&dir.root_cert())?;
    let issuing_ca = ca::layout::read_certificate(&dir.ca_cert())?;
    let chain = vec![issuing_ca.clone(), root.clone()];
    let foreign = match order.clients.iter().any(|(_, state)| *state == ClientState::ForeignCa) {
        true => Some(EphemeralCa::new("inkan fixtures foreign", now)?),
        false => None,
    };
    let mut issued: Vec<String> = Vec::new();
    let mut issue =
        |name: &str, profile: Profile, sans: Vec<San>| -> anyhow::Result<(Vec<u8>, pki::Serial, KeyAndCsr)> {
            let made = ca::fixture::key_and_csr(name)?;
            let request = AdminRequest::Issue {
                csr: made.csr.clone(),
                account: name.to_owned(),
                profile,
                sans,
                days: Some(order.days),
            };
            let needs = Needs { issuer: true, ..Needs::default() };
            let reply =
                admin(dir, request, needs, Some(&args.ca_passphrase)).with_context(|| match issued.is_empty() {
                    true => format!("issuing {name}; nothing was issued"),
                    false => format!("issuing {name}; recorded in the registry before it: {}", issued.join(", ")),
                })?;
            match reply {
                AdminReply::Issued { record, der, .. } => {
                    issued.push(record.serial.to_string());
                    Ok((der, record.serial, made))
                }
                other => Err(unexpected(other)),
            }
        };
    let mut certificates = Vec::new();
    let mut revoke = Vec::new();
    for (name, state) in &order.clients {
        if *state == ClientState::ForeignCa {
            if let Some(other) = &foreign {
                certificates.push(other.client(name, order.days, now)?);
            }
            continue;
        }
        let (profile, sans) = match state {
            ClientState::WrongEku => (Profile::Server, vec![name.parse::<San>()?]),
            _ => (Profile::Client, vec![]),
        };
        let (der, serial, made) = issue(name, profile, sans)?;
        if *state == ClientState::Revoked {
            revoke.push(serial);
        }
        certificates.push(FixtureCert {
            name: name.clone(),
            role: Role::Client,
            state: *state,
            der,
            key_pkcs8: made.key_pkcs8,
            chain: chain.clone(),
            ocsp: None,
        });
    }
    for names in &order.servers {
        let name = names[0].to_string();
        let (der, _, made) = issue(&name, Profile::Server, names.clone())?;
        certificates.push(FixtureCert {
            name,
            role: Role::Server,
            state: ClientState::Valid,
            der,
            key_pkcs8: made.key_pkcs8,
            chain: chain.clone(),
            ocsp: None,
        });
    }
    for serial in revoke {
        let request = AdminRequest::Revoke { serial, reason: RevocationReason::KeyCompromise };
        match admin(dir, request, Needs::default(), None)? {
            AdminReply::Revoked { .. } => {}
            other => return Err(unexpected(other)),
        }
    }
    let needs = Needs { issuer: true, ..Needs::default() };
    let crl = match admin(dir, AdminRequest::Crl, needs, Some(&args.ca_passphrase))? {
        AdminReply::Crl { der, .. } => der,
        other => return Err(unexpected(other)),
    };
    let root_crl = std::fs::read(dir.crl_dir().join(pki::published::ROOT_CRL)).ok();
    Ok(FixtureSet {
        root,
        issuing_ca,
        crl,
        root_crl,
        foreign: foreign.map(|f| (f.root().to_vec(), f.issuing_ca().to_vec())),
        certificates,
    })
}

/// The order from the command line; every name is checked before anything is made.
fn order_of(args: &FixtureArgs) -> anyhow::Result<FixtureOrder> {
    if args.client.is_empty() && args.server.is_empty() {
        bail!("nothing to make: give at least one --client NAME[:STATE] or --server NAME");
    }
    if args.days == 0 || args.days > pki::profile::MAX_DAYS {
        bail!("--days {}: give 1 to {} days", args.days, pki::profile::MAX_DAYS);
    }
    let mut seen = HashSet::new();
    let mut clients = Vec::new();
    for spec in &args.client {
        let (name, state) = match spec.split_once(':') {
            Some((name, state)) => {
                (name, state.parse::<ClientState>().map_err(|e| anyhow::anyhow!("--client {spec}: {e}"))?)
            }
            None => (spec.as_str(), ClientState::Valid),
        };
        check_file_name(name).with_context(|| format!("--client {spec}"))?;
        if state == ClientState::WrongEku {
            name.parse::<San>()
                .with_context(|| format!("--client {spec}: a wrong-eku certificate carries its name as a DNS name"))?;
        }
        if !seen.insert(("client", name.to_owned())) {
            bail!("--client {name} is given twice; each name makes one set of files");
        }
        clients.push((name.to_owned(), state));
    }
    let mut servers = Vec::new();
    for spec in &args.server {
        let names = spec
            .split(',')
            .map(|name| name.trim().parse::<San>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--server {spec}"))?;
        let first = names[0].to_string();
        check_file_name(&first).with_context(|| format!("--server {spec}"))?;
        if !seen.insert(("server", first.clone())) {
            bail!("--server {first} is given twice; each server makes one set of files");
        }
        servers.push(names);
    }
    Ok(FixtureOrder { clients, servers, days: args.days })
}

/// A name that becomes a file name and a subject CN.
fn check_file_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if !ok {
        bail!(
            "{name:?} is not accepted as a name: use 1 to 64 letters, digits, '.', '_' and '-', not starting with '.'"
        );
    }
    Ok(())
}

/// The output directory must be new or empty.
fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} is not empty; give a new directory (a fixture set is written whole)", out.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", out.display())),
    }
}

/// What `openssl verify -crl_check -purpose sslclient` reports for a certificate of this state,
/// against the set's root and CRLs: OpenSSL's error code and its name in `x509_vfy.h`.
fn openssl_verdict(state: ClientState) -> (u32, &'static str) {
    match state {
        ClientState::Valid => (0, "X509_V_OK"),
        ClientState::Revoked => (23, "X509_V_ERR_CERT_REVOKED"),
        ClientState::Expired => (10, "X509_V_ERR_CERT_HAS_EXPIRED"),
        ClientState::NotYetValid => (9, "X509_V_ERR_CERT_NOT_YET_VALID"),
        ClientState::WrongEku => (26, "X509_V_ERR_INVALID_PURPOSE"),
        ClientState::ForeignCa => (20, "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
    }
}

/// How the set was made, for the manifest.
struct Written {
    ephemeral: bool,
    default_password: bool,
}

/// Writes the set under `out` (through a staging directory) and returns how many files.
fn write_set(out: &Path, set: &FixtureSet, password: &str, written: &Written) -> anyhow::Result<usize> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("making {}", parent.display()))?;
    let name = out.file_name().context("--out needs a directory name")?.to_string_lossy();
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let result = write_files(&staging, set, password, written);
    let files = match result {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("replacing the empty {}", out.display()))?;
    }
    std::fs::rename(&staging, out).with_context(|| format!("moving the set to {}", out.display()))?;
    Ok(files)
}

struct Writer {
    dir: PathBuf,
    count: usize,
}

impl Writer {
    fn put(&mut self, relative: &str, contents: &[u8], mode: u32) -> anyhow::Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(contents).with_context(|| format!("writing {}", path.display()))?;
        self.count += 1;
        Ok(relative.to_owned())
    }
}

fn write_files(dir: &Path, set: &FixtureSet, password: &str, written: &Written) -> anyhow::Result<usize> {
    std::fs::create_dir(dir).with_context(|| format!("making {}", dir.display()))?;
    let mut w = Writer { dir: dir.to_path_buf(), count: 0 };
    let root = w.put("root.pem", pem_encode("CERTIFICATE", &set.root).as_bytes(), 0o644)?;
    let ca = w.put("ca.pem", pem_encode("CERTIFICATE", &set.issuing_ca).as_bytes(), 0o644)?;
    let chain = w.put("chain.pem", certificates_pem([set.issuing_ca.as_slice(), &set.root]).as_bytes(), 0o644)?;
    let crl = w.put("ca.crl", &set.crl, 0o644)?;
    let root_crl = match &set.root_crl {
        Some(der) => Some(w.put("root.crl", der, 0o644)?),
        None => None,
    };
    let mut crls_pem = pem_encode("X509 CRL", &set.crl);
    if let Some(der) = &set.root_crl {
        crls_pem.push_str(&pem_encode("X509 CRL", der));
    }
    let crls = w.put("crls.pem", crls_pem.as_bytes(), 0o644)?;
    let foreign = match &set.foreign {
        Some((root, ca)) => Some(json!({
            "root": w.put("foreign/root.pem", pem_encode("CERTIFICATE", root).as_bytes(), 0o644)?,
            "ca": w.put("foreign/ca.pem", pem_encode("CERTIFICATE", ca).as_bytes(), 0o644)?,
        })),
        None => None,
    };
    let mut entries = Vec::new();
    for cert in &set.certificates {
        entries.push(write_cert(&mut w, cert, password)?);
    }
    let manifest = json!({
        "generated_at": pki::encoding::rfc3339(OffsetDateTime::now_utc()),
        "generator": "inkan fixture",
        "ephemeral": written.ephemeral,
        "p12_password": if written.default_password { Some(DEFAULT_P12_PASSWORD) } else { None },
        "trust": { "root": root, "issuing_ca": ca, "chain": chain, "crl": crl, "root_crl": root_crl, "crls_pem": crls },
        "foreign": foreign,
        "certificates": entries,
    });
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    w.put("manifest.json", text.as_bytes(), 0o644)?;
    Ok(w.count)
}

fn write_cert(w: &mut Writer, cert: &FixtureCert, password: &str) -> anyhow::Result<serde_json::Value> {
    let folder = match cert.role {
        Role::Client => "clients",
        Role::Server => "servers",
    };
    let base = format!("{folder}/{}", cert.name);
    let key_pem = Zeroizing::new(pem_encode("PRIVATE KEY", &cert.key_pkcs8));
    let key = w.put(&format!("{base}.key"), key_pem.as_bytes(), 0o600)?;
    let crt = w.put(&format!("{base}.crt"), pem_encode("CERTIFICATE", &cert.der).as_bytes(), 0o644)?;
    let full: Vec<&[u8]> = [cert.der.as_slice()].into_iter().chain(cert.chain.first().map(Vec::as_slice)).collect();
    let fullchain =
        w.put(&format!("{base}.fullchain.pem"), certificates_pem(full.iter().copied()).as_bytes(), 0o644)?;
    let mut p12_certs: Vec<&[u8]> = vec![&cert.der];
    p12_certs.extend(cert.chain.iter().map(Vec::as_slice));
    let p12 = pki::pkcs12::build(&cert.key_pkcs8, &p12_certs, &cert.name, password)?;
    let p12 = w.put(&format!("{base}.p12"), &p12, 0o600)?;
    let ocsp = match &cert.ocsp {
        Some(der) => Some(w.put(&format!("{base}.ocsp.der"), der, 0o644)?),
        None => None,
    };
    let summary = pki::certificate::Summary::from_der(&cert.der)?;
    let mut entry = json!({
        "name": cert.name,
        "role": match cert.role { Role::Client => "client", Role::Server => "server" },
        "state": cert.state.name(),
        "serial": summary.serial,
        "subject": summary.subject,
        "issuer": summary.issuer,
        "not_before": pki::encoding::rfc3339(summary.not_before),
        "not_after": pki::encoding::rfc3339(summary.not_after),
        "sha256_fingerprint": summary.sha256_fingerprint,
        "key": key,
        "certificate": crt,
        "fullchain": fullchain,
        "p12": p12,
        "ocsp_response": ocsp,
    });
    if cert.role == Role::Client {
        let (code, name) = openssl_verdict(cert.state);
        entry["openssl_verify"] = json!({ "code": code, "name": name });
    }
    Ok(entry)
}
