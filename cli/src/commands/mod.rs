//! One module per command; [`run`] dispatches.

mod crl;
mod init;
mod issue;
mod registry;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ca::layout::DataDir;
use ca::{CertificateAuthority, SledStore};

use crate::args::{CaPassphraseArg, Command, RootCommand};
use crate::config::Config;
use crate::passphrase::{self, Key};

/// Runs one command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init::run(&args),
        Command::Issue(args) => issue::run(&args),
        Command::Revoke(args) => registry::revoke(&args),
        Command::List(args) => registry::list(&args),
        Command::Show(args) => registry::show(&args),
        Command::Crl(args) => crl::ca_crl(&args),
        Command::Root(RootCommand::SignCrl(args)) => crl::root_crl(&args),
    }
}

/// Opens the registry, explaining the one failure operators will meet: another process has it.
fn open_store(dir: &DataDir) -> anyhow::Result<SledStore> {
    if !dir.ca_cert().exists() {
        anyhow::bail!("{} has no CA: run `inkan init --data-dir {}` first", dir.path().display(), dir.path().display());
    }
    SledStore::open(&dir.db()).map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily unavailable") {
            anyhow::anyhow!("the registry {} is in use by another inkan process", dir.db().display())
        } else {
            anyhow::anyhow!(text)
        }
    })
}

/// Loads the configuration and the issuing CA with its key: the commands that sign.
fn open_ca(dir: &DataDir, pass: &CaPassphraseArg) -> anyhow::Result<(Config, CertificateAuthority)> {
    let config = Config::load(&dir.config())?;
    let store = open_store(dir)?;
    let passphrase = passphrase::resolve(Key::Ca, pass.ca_passphrase_file.as_deref(), false)?;
    let (signer, der) = ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &passphrase)?;
    let authority = CertificateAuthority::new(&der, Box::new(signer), Arc::new(store), config.profile_settings())?;
    Ok((config, authority))
}

/// Writes `contents` to `path` atomically, or to standard output for `None`.
fn write_output(path: Option<&Path>, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match path {
        Some(path) => ca::layout::replace(path, contents, 0o644).with_context(|| format!("writing {}", path.display())),
        None => std::io::stdout().write_all(contents).context("writing to standard output"),
    }
}

/// A time as RFC 3339 (`2026-11-21T05:01:46Z`), the form listings and JSON use.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}
