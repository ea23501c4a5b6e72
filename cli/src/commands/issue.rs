//! `inkan issue`: one certificate from a CSR file.

use std::io::Read;

use anyhow::Context;
use ca::IssueRequest;
use ca::layout::DataDir;
use pki::encoding::{MAX_INPUT, certificates_pem};
use pki::{Profile, San};

use crate::args::IssueArgs;

pub fn run(args: &IssueArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let profile: Profile = args.profile.parse()?;
    let sans = args.san.iter().map(|s| s.parse::<San>()).collect::<Result<Vec<_>, _>>()?;
    pki::profile::check_account(&args.account)?;
    let csr = read_limited(&args.csr)?;
    let (_, authority) = super::open_ca(&dir, &args.ca_passphrase)?;
    let issued = authority
        .issue(&IssueRequest { csr: &csr, account: &args.account, profile, sans: &sans, days: args.days })
        .context("not issued")?;
    let mut pem = certificates_pem([issued.der.as_slice()]);
    if args.chain {
        pem.push_str(&certificates_pem([authority.issuer().certificate_der()]));
    }
    super::write_output(args.out.as_deref(), pem.as_bytes())?;
    eprintln!(
        "Issued serial {} to account {:?} ({} profile), valid until {}",
        issued.record.serial,
        issued.record.account,
        issued.record.profile,
        super::rfc3339(issued.record.not_after)
    );
    Ok(())
}

/// Reads a file (or standard input for `-`), at most [`MAX_INPUT`] + 1 bytes, so an
/// oversized input is refused by the CSR parser without being read whole.
fn read_limited(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = (MAX_INPUT + 1) as u64;
    if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut buf).context("reading the CSR from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .with_context(|| format!("reading the CSR {}", path.display()))?;
    }
    Ok(buf)
}
