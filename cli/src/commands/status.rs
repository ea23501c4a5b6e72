//! `inkan ca status`: how long the CA certificates and what relying parties fetch are valid,
//! with a warning for what needs doing.

use ca::layout::{self, DataDir};
use enroll_server::publications::{self, WARN_WITHIN};
use pki::encoding::rfc3339;
use serde::Serialize;
use time::OffsetDateTime;

use crate::args::CaStatusArgs;

#[derive(Serialize)]
struct Item {
    what: String,
    file: String,
    valid_until: Option<String>,
    days_left: Option<i64>,
    warning: Option<String>,
}

pub fn run(args: &CaStatusArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let now = OffsetDateTime::now_utc();
    let mut items = Vec::new();
    // The root, then every generation of the issuing CA (later ones from `inkan ca rollover`).
    let generations = ca::generations::list(&dir).unwrap_or_default();
    let mut certificates = vec![("root CA certificate".to_owned(), dir.root_cert())];
    certificates.push(("issuing CA certificate".to_owned(), dir.ca_cert()));
    for generation in generations.iter().skip(1) {
        let what = format!("issuing CA {} (from {})", generation.number, rfc3339(generation.active_from));
        certificates.push((what, generation.cert.clone()));
    }
    for (what, path) in certificates {
        let summary = layout::read_certificate(&path).and_then(|der| Ok(pki::certificate::Summary::from_der(&der)?));
        let (valid_until, days_left, warning) = match summary {
            Ok(s) => {
                let left = s.not_after - now;
                let warning = (left <= WARN_WITHIN).then(|| format!("the {what} expires at {}", rfc3339(s.not_after)));
                (Some(rfc3339(s.not_after)), Some(left.whole_days()), warning)
            }
            Err(e) => (None, None, Some(format!("the {what} is not usable: {e}"))),
        };
        items.push(Item { what, file: path.display().to_string(), valid_until, days_left, warning });
    }
    // The newest issuing CA must be rolled over before it can no longer give certificates their
    // longest validity.
    let newest = generations.last().map_or(dir.ca_cert(), |g| g.cert.clone());
    if let Ok(ca) = layout::read_certificate(&newest).and_then(|der| Ok(pki::certificate::Summary::from_der(&der)?)) {
        let max_days = crate::config::Config::load(&dir.config()).map_or(825, |c| c.ca.max_days);
        let by = publications::rollover_by(ca.not_after, max_days);
        items.push(Item {
            what: "issuing CA rollover due".into(),
            file: newest.display().to_string(),
            valid_until: Some(rfc3339(by)),
            days_left: Some((by - now).whole_days()),
            warning: publications::rollover_problem(ca.not_after, max_days, now),
        });
    }
    for p in publications::read(&dir.crl_dir()) {
        let next = p.next_update.as_ref().ok().copied();
        items.push(Item {
            what: p.what.into(),
            file: p.file.display().to_string(),
            valid_until: next.map(rfc3339),
            days_left: next.map(|n| (n - now).whole_days()),
            warning: p.problem(now),
        });
    }
    let warnings = items.iter().filter(|i| i.warning.is_some()).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for item in &items {
            let until = item.valid_until.as_deref().unwrap_or("-");
            let left = match item.days_left {
                Some(d) => format!("{d} days left"),
                None if item.warning.is_none() => "not signed yet: `inkan serve` signs it as it starts".into(),
                None => String::new(),
            };
            println!("{:<42} {until:<22} {left}", item.what);
        }
        for warning in items.iter().filter_map(|i| i.warning.as_deref()) {
            eprintln!("warning: {warning}");
        }
    }
    if warnings > 0 {
        // 2: read, but something needs doing (scripts and monitoring can tell).
        std::process::exit(2);
    }
    Ok(())
}

/// `inkan ca rollover`: the next generation of the issuing CA, then the root's publications
/// signed again (its CRL, and an OCSP answer about every generation).
pub fn rollover(args: &crate::args::CaRolloverArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = DataDir::new(&args.data_dir.data_dir);
    let config = crate::config::Config::load(&dir.config())?;
    let now = OffsetDateTime::now_utc();
    let active_from = match &args.at {
        Some(text) => pki::encoding::parse_rfc3339(text)
            .with_context(|| format!("--at {text:?}: not an RFC 3339 time like 2027-04-01T00:00:00+09:00"))?,
        None => now,
    };
    if !(1..=3660).contains(&args.root_crl_days) {
        anyhow::bail!("--root-crl-days must be between 1 and 3660");
    }
    let root_pass = crate::passphrase::resolve_for(
        crate::passphrase::Key::Root,
        &dir.root_key(),
        args.root_passphrase.root_passphrase_file.as_deref(),
    )?;
    let current = ca::generations::list(&dir)?.pop().context("no CA here: run `inkan init` first")?;
    let ca_pass = crate::passphrase::resolve_for(
        crate::passphrase::Key::Ca,
        &current.key,
        args.ca_passphrase.ca_passphrase_file.as_deref(),
    )?;
    let urls = crate::config::Urls::new(&config.publish.base_url);
    let options = ca::ceremony::RolloverOptions {
        organization: config.ca.organization.clone(),
        active_from,
        days: args.days,
        root_crl_url: Some(urls.root_crl),
        root_cert_url: Some(urls.root_cert),
        ca_ocsp_url: Some(urls.ocsp),
    };
    eprintln!("Creating issuing CA generation {} ...", current.number + 1);
    let made = ca::ceremony::rollover(&dir, &options, &root_pass, &ca_pass, now).context("inkan ca rollover")?;
    super::crl::publish_root(&dir, &root_pass, args.root_crl_days)?;
    let der = layout::read_certificate(&made.cert)?;
    let summary = pki::certificate::Summary::from_der(&der)?;
    let audit = ca::audit::AuditLog::new(dir.path(), "cli");
    audit.append(
        "ca.rollover",
        serde_json::json!({ "generation": made.number, "subject": summary.subject, "active_from": rfc3339(made.active_from), "sha256": summary.sha256_fingerprint }),
    )?;
    println!(
        "Issuing CA generation {} in {}",
        made.number,
        made.cert.parent().map(|p| p.display().to_string()).unwrap_or_default()
    );
    println!("  subject     {}", summary.subject);
    println!("  SHA-256     {}", summary.sha256_fingerprint);
    println!("  valid until {}", rfc3339(summary.not_after));
    println!("  issues from {}", rfc3339(made.active_from));
    println!("  the root CRL and the root's OCSP answers were signed again");
    println!(
        "Restart `inkan serve` to load it (the signer loads keys as it starts); generation {} keeps signing CRLs and OCSP answers for its certificates.",
        current.number
    );
    Ok(())
}
