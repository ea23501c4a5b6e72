//! `inkan crl` and `inkan root sign-crl`.

use ca::layout::{self, DataDir};
use pki::encoding::pem_encode;
use time::{Duration, OffsetDateTime};

use crate::args::{CrlArgs, RootSignCrlArgs};
use crate::passphrase::{self, Key};

pub fn ca_crl(args: &CrlArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let (config, authority) = super::open_ca(&dir, &args.ca_passphrase)?;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let der = authority.sign_crl(now, config.crl_validity())?;
    publish(&dir, "ca.crl", &der)?;
    match &args.out {
        Some(out) if args.pem => super::write_output(Some(out), pem_encode("X509 CRL", &der).as_bytes())?,
        Some(out) => super::write_output(Some(out), &der)?,
        None => print!("{}", pem_encode("X509 CRL", &der)),
    }
    let entries = authority.store().revoked_unexpired(now)?.len();
    eprintln!(
        "Signed the issuing CA's CRL: {entries} revoked certificate(s), next update {}",
        super::rfc3339(now + config.crl_validity())
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
    let passphrase = passphrase::resolve(Key::Root, args.root_passphrase_file.as_deref(), false)?;
    let validity = Duration::days(i64::from(args.days));
    let der = ca::ceremony::sign_root_crl(&dir, &passphrase, OffsetDateTime::now_utc(), validity)?;
    publish(&dir, "root.crl", &der)?;
    super::write_output(Some(&args.out), &der)?;
    eprintln!("Signed the root CRL into {}; sign the next one within {} days.", args.out.display(), args.days);
    Ok(())
}

/// Keeps the latest CRL under DATA_DIR/crl/, where the HTTP listener serves it from.
fn publish(dir: &DataDir, name: &str, der: &[u8]) -> anyhow::Result<()> {
    layout::create_private_dir(&dir.crl_dir())?;
    layout::replace(&dir.crl_dir().join(name), der, 0o644)?;
    Ok(())
}
