//! `inkan revoke`, `inkan list`, `inkan show`, `inkan count`: the registry, without the CA key.

use anyhow::{Context, bail};
use ca::layout::DataDir;
use ca::{CertRecord, State};
use enroll_server::admin::{AdminReply, AdminRequest};
use pki::{RevocationReason, Serial};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use pki::encoding::rfc3339;

use super::{Needs, admin, unexpected};
use crate::args::{CountArgs, ListArgs, RevokeArgs, ShowArgs};

pub fn revoke(args: &RevokeArgs) -> anyhow::Result<()> {
    let serial: Serial = args.serial.parse()?;
    let reason: RevocationReason = args.reason.parse()?;
    let dir = DataDir::new(&args.data_dir.data_dir);
    let needs = Needs::default();
    let done = match admin(&dir, AdminRequest::Revoke { serial, reason }, needs, None)? {
        AdminReply::Revoked { revocation } => revocation,
        other => return Err(unexpected(other)),
    };
    if !done.newly {
        let before = match done.asked.state {
            State::Revoked { reason, .. } => format!(", reason {reason}"),
            _ => String::new(),
        };
        println!("{} was revoked before (account {:?}{before}); its key is acted on now.", serial, done.asked.account);
    }
    for record in done.revoked() {
        println!("Revoked {} (account {:?}, reason {reason}).", record.serial, record.account);
    }
    if reason == RevocationReason::KeyCompromise {
        println!(
            "The key is {} for any future certificate{}.",
            if done.key_blocked { "blocked" } else { "already blocked" },
            if done.others.is_empty() { "" } else { "; every certificate with it is revoked" }
        );
    }
    println!("A running `inkan serve` publishes a CRL listing it within seconds (and OCSP answers revoked at once);");
    println!("without one, run `inkan crl`.");
    Ok(())
}

/// One line of `inkan list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    serial: String,
    account: &'a str,
    profile: &'a str,
    status: &'static str,
    not_before: String,
    not_after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_reason: Option<&'static str>,
    key_sha256: String,
    /// The generation of the issuing CA that signed it (1: the CA `init` made).
    issuer: u16,
}

impl<'a> Listed<'a> {
    fn new(r: &'a CertRecord, now: OffsetDateTime) -> Self {
        let (revoked_at, revocation_reason) = match r.state {
            State::Revoked { at, reason } => (Some(rfc3339(at)), Some(reason.name())),
            _ => (None, None),
        };
        Self {
            serial: r.serial.to_string(),
            account: &r.account,
            profile: r.profile.name(),
            status: r.status(now).name(),
            not_before: rfc3339(r.not_before),
            not_after: rfc3339(r.not_after),
            revoked_at,
            revocation_reason,
            key_sha256: pki::encoding::hex(&r.key_sha256),
            issuer: r.issuer,
        }
    }
}

/// `30d`, `12h`, `2w`, `90m`, or a plain number of days.
pub fn parse_period(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "d"),
    };
    let n: i64 = number.parse().with_context(|| format!("{text:?} is not a period like 30d, 12h or 2w"))?;
    // Nothing inkan issues lives longer than 100 years; longer periods would overflow.
    let limit = Duration::days(36_525);
    let period = match unit {
        "d" => Duration::days(n.min(36_526)),
        "h" => Duration::hours(n.min(36_526 * 24)),
        "w" => Duration::weeks(n.min(5_219)),
        "m" => Duration::minutes(n.min(36_526 * 24 * 60)),
        "s" => Duration::seconds(n.min(36_526 * 24 * 3600)),
        _ => bail!("{text:?}: unknown unit {unit:?}; use d (days), h (hours), w (weeks), m (minutes) or s (seconds)"),
    };
    if period > limit {
        bail!("{text:?} is too long a period; at most 100 years");
    }
    Ok(period)
}

pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let expiring = args.expiring.as_deref().map(parse_period).transpose()?;
    let request = AdminRequest::List {
        expiring_secs: expiring.map(|p| p.whole_seconds()),
        revoked: args.revoked,
        account: args.account.clone(),
        // One more than shown, to tell whether the list was cut.
        limit: args.limit.map(|n| n.saturating_add(1)),
    };
    let needs = Needs::default();
    let records = match admin(&DataDir::new(&args.data_dir.data_dir), request, needs, None)? {
        AdminReply::Certificates { certificates } => certificates,
        other => return Err(unexpected(other)),
    };
    let shown = args.limit.map_or(records.len(), |n| records.len().min(n as usize));
    let cut = shown < records.len();
    let listed: Vec<Listed<'_>> = records[..shown].iter().map(|r| Listed::new(r, now)).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    println!("{:<32}  {:<20}  {:<7}  {:<20}  {:<3}  STATUS", "SERIAL", "ACCOUNT", "PROFILE", "NOT AFTER", "CA");
    for l in &listed {
        println!(
            "{:<32}  {:<20}  {:<7}  {:<20}  {:<3}  {}",
            l.serial, l.account, l.profile, l.not_after, l.issuer, l.status
        );
    }
    if cut {
        eprintln!("{} certificate(s) shown; more match (raise --limit to see them)", listed.len());
    } else {
        eprintln!("{} certificate(s)", listed.len());
    }
    Ok(())
}

/// `inkan count --json`.
#[derive(Serialize)]
struct Counted {
    #[serde(flatten)]
    counts: pki::registry::StatusCounts,
    total: u64,
    /// With --expiring: the period as given, and the valid certificates expiring within it.
    #[serde(skip_serializing_if = "Option::is_none")]
    expiring_within: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_expiring: Option<u64>,
}

pub fn count(args: &CountArgs) -> anyhow::Result<()> {
    let expiring = args.expiring.as_deref().map(parse_period).transpose()?;
    let request = AdminRequest::Count { expiring_secs: expiring.map(|p| p.whole_seconds()) };
    let needs = Needs::default();
    let (counts, valid_expiring) = match admin(&DataDir::new(&args.data_dir.data_dir), request, needs, None)? {
        AdminReply::Counts { counts, expiring } => (counts, expiring),
        other => return Err(unexpected(other)),
    };
    if args.json {
        let counted = Counted { counts, total: counts.total(), expiring_within: args.expiring.clone(), valid_expiring };
        println!("{}", serde_json::to_string_pretty(&counted)?);
        return Ok(());
    }
    println!("{:<12}  {:>12}", "STATUS", "CERTIFICATES");
    for status in pki::registry::Status::ALL {
        println!("{:<12}  {:>12}", status.name(), counts.get(status));
    }
    println!("{:<12}  {:>12}", "total", counts.total());
    if let (Some(period), Some(n)) = (&args.expiring, valid_expiring) {
        println!("{n} valid certificate(s) expire within {period}.");
    }
    Ok(())
}

pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let serial: Serial = args.serial.parse()?;
    let needs = Needs::default();
    let (record, der) = match admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::Show { serial }, needs, None)?
    {
        AdminReply::Certificate { record, der } => (record, der),
        other => return Err(unexpected(other)),
    };
    if args.pem {
        let Some(der) = der else { bail!("certificate {serial} was never completed (status pending)") };
        print!("{}", pki::encoding::pem_encode("CERTIFICATE", &der));
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let listed = Listed::new(&record, now);
    println!("serial       {}", listed.serial);
    println!("account      {}", listed.account);
    println!("profile      {}", listed.profile);
    println!("status       {}", listed.status);
    if let (Some(at), Some(reason)) = (&listed.revoked_at, listed.revocation_reason) {
        println!("revoked      {at} ({reason})");
    }
    println!("not before   {}", listed.not_before);
    println!("not after    {}", listed.not_after);
    println!("key sha256   {}", listed.key_sha256);
    if let Some(der) = der {
        let summary = pki::certificate::Summary::from_der(&der)?;
        println!("subject      {}", summary.subject);
        println!("issuer       {}", summary.issuer);
        if let Some(key) = summary.key {
            println!("key          {key}");
        }
        println!("fingerprint  SHA-256 {}", summary.sha256_fingerprint);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("30d").expect("d"), Duration::days(30));
        assert_eq!(parse_period("30").expect("bare"), Duration::days(30));
        assert_eq!(parse_period("12h").expect("h"), Duration::hours(12));
        assert_eq!(parse_period("2w").expect("w"), Duration::weeks(2));
        assert!(parse_period("soon").is_err());
        assert!(parse_period("3y").is_err());
        assert!(parse_period("").is_err());
    }
}
