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
    for (what, path) in [("root CA certificate", dir.root_cert()), ("issuing CA certificate", dir.ca_cert())] {
        let summary = layout::read_certificate(&path).and_then(|der| Ok(pki::certificate::Summary::from_der(&der)?));
        let (valid_until, days_left, warning) = match summary {
            Ok(s) => {
                let left = s.not_after - now;
                let warning = (left <= WARN_WITHIN).then(|| format!("the {what} expires at {}", rfc3339(s.not_after)));
                (Some(rfc3339(s.not_after)), Some(left.whole_days()), warning)
            }
            Err(e) => (None, None, Some(format!("the {what} is not usable: {e}"))),
        };
        items.push(Item { what: what.into(), file: path.display().to_string(), valid_until, days_left, warning });
    }
    // The issuing CA must be rolled over before it can no longer give certificates their
    // longest validity.
    if let Ok(ca) =
        layout::read_certificate(&dir.ca_cert()).and_then(|der| Ok(pki::certificate::Summary::from_der(&der)?))
    {
        let max_days = crate::config::Config::load(&dir.config()).map_or(825, |c| c.ca.max_days);
        let by = publications::rollover_by(ca.not_after, max_days);
        items.push(Item {
            what: "issuing CA rollover due".into(),
            file: dir.ca_cert().display().to_string(),
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
