//! `inkan crl` and `inkan root sign-crl`.

use ca::ceremony::RootPublications;
use ca::layout::DataDir;
use enroll_server::admin::{AdminReply, AdminRequest};
use pki::encoding::pem_encode;
use time::{Duration, OffsetDateTime};

use super::{Needs, admin, unexpected};
use crate::args::{CrlArgs, RootSignCrlArgs};
use crate::passphrase::{self, Key};
use ca::service::publish_crl;

pub fn ca_crl(args: &CrlArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let needs = Needs { issuer: true, ..Needs::default() };
    let (der, entries) = match admin(&dir, AdminRequest::Crl, needs, Some(&args.ca_passphrase))? {
        AdminReply::Crl { der, entries } => (der, entries),
        other => return Err(unexpected(other)),
    };
    match &args.out {
        Some(out) if args.pem => super::write_output(Some(out), pem_encode("X509 CRL", &der).as_bytes())?,
        Some(out) => super::write_output(Some(out), &der)?,
        None => print!("{}", pem_encode("X509 CRL", &der)),
    }
    eprintln!(
        "Signed the issuing CA's CRL ({entries} revoked certificate(s)); published as {}",
        dir.crl_dir().join(pki::published::CA_CRL).display()
    );
    Ok(())
}

pub fn root_crl(args: &RootSignCrlArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    if !(1..=3660).contains(&args.days) {
        anyhow::bail!("--days must be between 1 and 3660");
    }
    if !dir.root_cert().exists() {
        anyhow::bail!(
            "{} has no root CA: run `inkan init --data-dir {}` first",
            dir.path().display(),
            dir.path().display()
        );
    }
    let passphrase =
        passphrase::resolve_for(Key::Root, &dir.root_key(), args.root_passphrase.root_passphrase_file.as_deref())?;
    let published = publish_root(&dir, &passphrase, args.days)?;
    if let Some(out) = &args.out {
        super::write_output(Some(out), &published.crl)?;
    }
    eprintln!(
        "Signed the root CRL and the root's OCSP answer about the issuing CA into {}; sign the next ones within {} days.",
        dir.crl_dir().display(),
        args.days
    );
    Ok(())
}

/// The root ceremony's publications, signed and put where the service serves them.
pub fn publish_root(dir: &DataDir, passphrase: &ca::Passphrase, days: u32) -> anyhow::Result<RootPublications> {
    let validity = Duration::days(i64::from(days));
    let published = ca::ceremony::sign_root_publications(dir, passphrase, OffsetDateTime::now_utc(), validity)?;
    publish_crl(dir, pki::published::ROOT_CRL, &published.crl)?;
    publish_crl(dir, pki::published::CA_OCSP, &published.ca_ocsp)?;
    for (n, answer) in &published.later_ca_ocsp {
        publish_crl(dir, &pki::published::ca_ocsp(*n), answer)?;
    }
    Ok(published)
}

/// `inkan root cross-sign`: the old root certifies the new root's key and subject.
pub fn cross_sign(args: &crate::args::RootCrossSignArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    if !(1..=36_525).contains(&args.days) {
        anyhow::bail!("--days must be between 1 and 36525");
    }
    let new_root = ca::layout::read_certificate(&args.new_root)?;
    let passphrase =
        passphrase::resolve_for(Key::Root, &dir.root_key(), args.root_passphrase.root_passphrase_file.as_deref())?;
    let der = ca::ceremony::cross_sign(&dir, &new_root, &passphrase, OffsetDateTime::now_utc(), args.days)?;
    let summary = pki::certificate::Summary::from_der(&der)?;
    ca::layout::write_new(&args.out, pki::encoding::pem_encode("CERTIFICATE", &der).as_bytes(), 0o644)?;
    let audit = ca::audit::AuditLog::new(dir.path(), "cli");
    audit.append(
        "root.cross_signed",
        serde_json::json!({ "subject": summary.subject, "issuer": summary.issuer, "serial": summary.serial, "sha256": summary.sha256_fingerprint }),
    )?;
    println!("Cross-certificate written to {}", args.out.display());
    println!("  subject     {} (the new root's name and key)", summary.subject);
    println!("  issuer      {}", summary.issuer);
    println!("  valid until {}", pki::encoding::rfc3339(summary.not_after));
    println!("Publish it beside the new chain: clients that trust only the old root verify through it.");
    Ok(())
}
