//! `inkan audit verify` and `inkan audit tail [-f]`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context;
use ca::audit::{self, Verdict};
use ca::checkpoint::{self, Against, SignedCheckpoint};
use ca::layout::DataDir;

use crate::args::{AuditArgs, AuditTailArgs};

fn log_path(dir: &DataDir) -> std::path::PathBuf {
    dir.audit_dir().join("audit.log")
}

pub fn verify(args: &AuditArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let path = log_path(&dir);
    let lines = match audit::verify(&path)? {
        Verdict::Intact { lines } => lines,
        Verdict::Broken { line, reason } => anyhow::bail!("{}: line {line} breaks the chain: {reason}", path.display()),
    };
    let last = audit::read(&path, Some(1))?.pop().unwrap_or_default();
    let head = pki::encoding::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, last.as_bytes()).as_ref());
    println!("{}: {lines} lines, chain intact", path.display());
    println!("last line's SHA-256: {head}");
    let (doc, from) = match &args.checkpoint {
        Some(file) => (
            Some(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
            file.display().to_string(),
        ),
        None => (ca::ledger::read_checkpoint(&dir.ledger())?, "the signer's ledger".to_owned()),
    };
    let Some(doc) = doc else {
        println!("no signed checkpoint yet: cutting lines off the end would not show; the signer signs one soon");
        return Ok(());
    };
    let signed = SignedCheckpoint::from_json(&doc).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
    signed.verify(&super::ca_certificates(&dir)?).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
    let checkpoint = &signed.checkpoint;
    match checkpoint::compare(&path, lines, checkpoint)? {
        Against::Covers { lines: covered, after } => {
            println!(
                "checkpoint of {} (from {from}, signature good): covers {covered} lines, {after} written since",
                checkpoint.time
            );
            Ok(())
        }
        Against::Truncated { lines, expected } => anyhow::bail!(
            "{}: TRUNCATED: the trail has {lines} lines, but the checkpoint of {} (from {from}) covers {expected}: \
             lines were cut off its end",
            path.display(),
            checkpoint.time
        ),
        Against::Forked { line } => anyhow::bail!(
            "{}: FORK: line {line} is not the line the checkpoint of {} (from {from}) covers: the trail was \
             rewritten at or before line {line} and chained anew",
            path.display(),
            checkpoint.time
        ),
    }
}

pub fn tail(args: &AuditTailArgs) -> anyhow::Result<()> {
    let path = log_path(&DataDir::new(&args.data_dir.data_dir));
    let mut out = std::io::stdout().lock();
    for line in audit::read(&path, Some(args.lines))? {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    let mut position = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(mut file) = std::fs::File::open(&path) else { continue };
        let len = file.metadata()?.len();
        if len < position {
            position = 0; // replaced or truncated: start again from the top
        }
        if len > position {
            file.seek(SeekFrom::Start(position))?;
            let mut new = String::new();
            file.read_to_string(&mut new)?;
            out.write_all(new.as_bytes())?;
            out.flush()?;
            position = len;
        }
    }
}
