//! `inkan issue`: one certificate from a CSR file.

use std::io::Read;

use anyhow::Context;
use ca::layout::DataDir;
use enroll_server::admin::{AdminReply, AdminRequest};
use pki::encoding::{MAX_INPUT, certificates_pem};
use pki::{Profile, San};

use super::{Needs, admin, unexpected};
use crate::args::IssueArgs;

pub fn run(args: &IssueArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let profile: Profile = args.profile.parse()?;
    let sans = args.san.iter().map(|s| s.parse::<San>()).collect::<Result<Vec<_>, _>>()?;
    pki::profile::check_account(&args.account)?;
    let csr = read_limited(&args.csr)?;
    let request = AdminRequest::Issue { csr, account: args.account.clone(), profile, sans, days: args.days };
    let needs = Needs { issuer: true, ..Needs::default() };
    let (record, der, ca_der) = match admin(&dir, request, needs, Some(&args.ca_passphrase))? {
        AdminReply::Issued { record, der, ca_der } => (record, der, ca_der),
        other => return Err(unexpected(other)),
    };
    let mut pem = certificates_pem([der.as_slice()]);
    if args.chain {
        pem.push_str(&certificates_pem([ca_der.as_slice()]));
    }
    super::write_output(args.out.as_deref(), pem.as_bytes())?;
    eprintln!(
        "Issued serial {} to account {:?} ({} profile), valid until {}",
        record.serial,
        record.account,
        record.profile,
        pki::encoding::rfc3339(record.not_after)
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
