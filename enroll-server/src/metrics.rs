//! Counters exported at `/metrics` (Prometheus text format, rendered by `publish`).

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Certificates by status (valid, pending, revoked, superseded, expired), and valid ones
/// expiring within 30 and 7 days.
pub type Census = ([u64; 5], u64, u64);

/// The OCSP answer kinds counted, in the order of [`Metrics::ocsp`].
pub const OCSP_LABELS: [&str; 6] = ["good", "revoked", "unknown", "malformed", "unauthorized", "error"];

/// One listener's connections.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Open now.
    pub open: AtomicUsize,
    /// Refused because the listener held its total cap.
    pub refused_total: AtomicU64,
    /// Refused because the address held its cap.
    pub refused_address: AtomicU64,
    /// Closed for moving no byte within their deadline (handshake, first request, idle).
    pub idle_closed: AtomicU64,
}

/// The listeners' names in metrics, in the order of [`Metrics::listeners`].
pub const LISTENERS: [&str; 4] = ["public", "login", "http", "est"];

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The public, certificate-login, plain-HTTP and EST listeners.
    pub listeners: [Arc<ListenerStats>; 4],
    /// Certificates issued by this service.
    pub issued: AtomicU64,
    /// Certificates revoked (including superseded) through this service.
    pub revoked: AtomicU64,
    /// CRLs signed.
    pub crl_signed: AtomicU64,
    /// CRL downloads: issuing CA, root.
    pub crl_requests: [AtomicU64; 2],
    /// OCSP answers by kind: good, revoked, unknown, malformed, unauthorized, other errors.
    pub ocsp: [AtomicU64; 6],
    /// Expiry notices delivered.
    pub notices_sent: AtomicU64,
    /// Failed webhook attempts.
    pub notices_failed: AtomicU64,
    /// Mail notices sent.
    pub mails_sent: AtomicU64,
    /// Failed SMTP rounds.
    pub mails_failed: AtomicU64,
    /// The last registry census and when it was taken.
    pub census: Mutex<Option<(Instant, Census)>>,
    /// When the root's publications were last looked at for the log's warning.
    pub publications_warned: Mutex<Option<Instant>>,
}
