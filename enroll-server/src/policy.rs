//! Rules about an account's certificates that several features share: when a certificate may be
//! obtained again, and how many days it has left.

use pki::registry::{CertRecord, Status};
use time::OffsetDateTime;

/// Whether a valid certificate is inside the renewal window: the one rule the home page's
/// banner, `/api/v1/me` and enrollment all use.
pub fn renewal_due(record: &CertRecord, now: OffsetDateTime, window_days: u32) -> bool {
    record.status(now) == Status::Valid && record.not_after - now <= time::Duration::days(i64::from(window_days))
}

/// Days from `now` to the certificate's notAfter, rounded down, never negative.
pub fn days_left(record: &CertRecord, now: OffsetDateTime) -> i64 {
    (record.not_after - now).whole_days().max(0)
}
