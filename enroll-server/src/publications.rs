//! What relying parties fetch that must be signed again before it runs out: the root's CRL and
//! its OCSP answer about the issuing CA (signed offline, by `inkan root sign-crl`), and the
//! issuing CA's CRL (signed by the service). The metrics, the log and `inkan ca status` read
//! them from the CRL directory.

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

/// A warning starts this long before a publication runs out.
pub const WARN_WITHIN: Duration = Duration::days(30);

/// From when the issuing CA (valid until `ca_not_after`) can no longer give a certificate the
/// longest validity (`max_days`): certificates are cut short to its end from then on, so a new
/// issuing CA must have taken over before.
pub fn rollover_by(ca_not_after: OffsetDateTime, max_days: u32) -> OffsetDateTime {
    ca_not_after.checked_sub(Duration::days(i64::from(max_days))).unwrap_or(ca_not_after)
}

/// The warning about the issuing CA at `now`: from [`WARN_WITHIN`] before [`rollover_by`].
pub fn rollover_problem(ca_not_after: OffsetDateTime, max_days: u32, now: OffsetDateTime) -> Option<String> {
    let by = rollover_by(ca_not_after, max_days);
    let when = pki::encoding::rfc3339(by);
    let until = pki::encoding::rfc3339(ca_not_after);
    if by <= now {
        Some(format!(
            "the issuing CA (valid until {until}) has less validity left than [ca] max_days ({max_days} days): \
             certificates are cut short to its end since {when}; roll it over to a new issuing CA signed by the root"
        ))
    } else if by - now <= WARN_WITHIN {
        Some(format!(
            "the issuing CA (valid until {until}) must be rolled over before {when}: from then on certificates of \
             [ca] max_days ({max_days} days) would outlive it and are cut short"
        ))
    } else {
        None
    }
}

/// One published file and when it runs out.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Its name in metrics (`root_crl`, `ca_ocsp`, `ca_crl`).
    pub key: &'static str,
    /// In words.
    pub what: &'static str,
    /// The file.
    pub file: PathBuf,
    /// Its nextUpdate, or why it is not known (missing, unreadable).
    pub next_update: Result<OffsetDateTime, String>,
    /// Signed offline: the operator must sign the next one (`inkan root sign-crl`).
    pub offline: bool,
}

impl Publication {
    /// What is wrong with it at `now`, if anything: missing (but for the service's own CRL,
    /// made at its first start), unreadable, expired, or, for what is signed offline, expiring
    /// within [`WARN_WITHIN`].
    pub fn problem(&self, now: OffsetDateTime) -> Option<String> {
        let renew = if self.offline { "sign the next one with `inkan root sign-crl`" } else { "the service signs it" };
        match &self.next_update {
            // Before the service first ran: it signs one as it starts.
            Err(e) if !self.offline && e == "missing" => None,
            Err(e) => Some(format!("the {} ({}) is not usable: {e}; {renew}", self.what, self.file.display())),
            Ok(next) if *next <= now => {
                Some(format!("the {} expired at {}; {renew}", self.what, pki::encoding::rfc3339(*next)))
            }
            // The service signs its CRL again daily: only the offline ones need warning ahead.
            Ok(next) if self.offline && *next - now <= WARN_WITHIN => Some(format!(
                "the {} expires at {} ({} days left); {renew}",
                self.what,
                pki::encoding::rfc3339(*next),
                (*next - now).whole_days()
            )),
            Ok(_) => None,
        }
    }
}

fn next_update(
    file: &Path,
    read: impl Fn(&[u8]) -> Result<(OffsetDateTime, Option<OffsetDateTime>), pki::Error>,
) -> Result<OffsetDateTime, String> {
    let der = std::fs::read(file)
        .map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { "missing".into() } else { e.to_string() })?;
    read(&der).map_err(|e| e.to_string())?.1.ok_or_else(|| "it has no nextUpdate".into())
}

/// The publications under `crl_dir`.
pub fn read(crl_dir: &Path) -> Vec<Publication> {
    let crl = |der: &[u8]| pki::crl::validity(der);
    let ocsp = |der: &[u8]| pki::ocsp::response_validity(der);
    let root_crl = crl_dir.join(pki::published::ROOT_CRL);
    let ca_ocsp = crl_dir.join(pki::published::CA_OCSP);
    let ca_crl = crl_dir.join(pki::published::CA_CRL);
    vec![
        Publication {
            key: "root_crl",
            what: "root CRL",
            next_update: next_update(&root_crl, crl),
            file: root_crl,
            offline: true,
        },
        Publication {
            key: "ca_ocsp",
            what: "root's OCSP answer about the issuing CA",
            next_update: next_update(&ca_ocsp, ocsp),
            file: ca_ocsp,
            offline: true,
        },
        Publication {
            key: "ca_crl",
            what: "issuing CA's CRL",
            next_update: next_update(&ca_crl, crl),
            file: ca_crl,
            offline: false,
        },
    ]
}

#[cfg(test)]
mod rollover_tests {
    use super::*;

    #[test]
    fn the_rollover_warning_starts_thirty_days_before_certificates_would_be_cut_short() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let ca_end = now + Duration::days(825 + 31);
        assert_eq!(rollover_by(ca_end, 825), now + Duration::days(31));
        assert_eq!(rollover_problem(ca_end, 825, now), None);
        let soon = rollover_problem(ca_end, 825, now + Duration::days(2)).expect("a warning");
        assert!(soon.contains("must be rolled over before"), "{soon}");
        let late = rollover_problem(ca_end, 825, now + Duration::days(40)).expect("a warning");
        assert!(late.contains("cut short to its end since"), "{late}");
    }
}
