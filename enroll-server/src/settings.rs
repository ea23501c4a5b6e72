//! The service's settings, already checked (the CLI reads them from inkan.toml and flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `serve` needs to know besides its stores and the CA.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Public HTTPS: pages, JSON API.
    pub listen: SocketAddr,
    /// Certificate-login HTTPS: asks for a client certificate in the handshake.
    pub login_listen: SocketAddr,
    /// Plain HTTP: CA certificates and CRLs.
    pub http_listen: SocketAddr,
    /// EST for machines.
    pub est: EstSettings,
    /// Where published CRLs are read from (`DATA_DIR/crl`).
    pub crl_dir: PathBuf,
    /// `[ca] max_days`: the longest validity a certificate gets (the issuing CA's rollover
    /// warning starts 30 days before it has less left).
    pub ca_max_days: u32,
    /// The admin socket (`DATA_DIR/admin.sock`).
    pub admin_socket: PathBuf,
    /// Enrollment rules.
    pub enrollment: EnrollmentSettings,
    /// Account rules.
    pub accounts: AccountSettings,
    /// Sessions expire after this long without a request.
    pub session_idle_timeout: Duration,
    /// Login and enrollment requests allowed per client address per minute.
    pub rate_limit_per_minute: u32,
    /// Requests (headers, body and handling) must finish within this.
    pub request_timeout: Duration,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// The CRL is signed again at least this often (and after revocations).
    pub crl_refresh: Duration,
    /// Expiry notices, when a webhook is configured.
    pub notify: Option<NotifySettings>,
    /// Connection caps and deadlines, per listener.
    pub connections: ConnectionLimits,
    /// One-time passwords.
    pub otp: OtpSettings,
    /// Mail notices; `None`: none.
    pub mail: Option<MailSettings>,
}

/// EST (RFC 7030) for machines.
#[derive(Clone, Debug, Default)]
pub struct EstSettings {
    /// Its HTTPS listener (asks for a client certificate, does not require one); `None`: off.
    pub listen: Option<SocketAddr>,
    /// The labels (`/.well-known/est/LABEL/...`) and the profile each issues under.
    pub labels: std::collections::BTreeMap<String, pki::Profile>,
}

/// What one listener lets a client hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, in all.
    pub total: usize,
    /// Connections open at once from one address.
    pub per_address: usize,
    /// From accept to the end of the TLS handshake, and from there (or from accept) to the
    /// first byte of the first request.
    pub first_request: Duration,
    /// Between requests, or any time no byte moves.
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { total: 4096, per_address: 256, first_request: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }
}

/// Where and when expiry notices go.
#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// The receiver: `http://` or `https://` URL.
    pub webhook_url: String,
    /// Thresholds in days, e.g. 30, 14, 7, 1.
    pub thresholds_days: Vec<u32>,
    /// How often the registry is scanned.
    pub scan_interval: Duration,
    /// Extra trust anchors (PEM) for an https receiver, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// How certificates are obtained.
#[derive(Clone, Debug)]
pub struct EnrollmentSettings {
    /// Validity of certificates obtained through enrollment.
    pub validity_days: u32,
    /// A valid certificate may be obtained again this many days before it expires.
    pub renewal_window_days: u32,
    /// How long a pre-processing ticket stays usable.
    pub ticket_ttl: Duration,
}

/// Password and lockout rules.
#[derive(Clone, Debug)]
pub struct AccountSettings {
    /// Wrong passwords in a row before an account is locked.
    pub lockout_threshold: u32,
    /// Shortest password accepted.
    pub min_password_length: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            login_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            est: EstSettings { listen: Some(SocketAddr::from(([127, 0, 0, 1], 8445))), labels: Default::default() },
            crl_dir: PathBuf::from("crl"),
            ca_max_days: 825,
            admin_socket: PathBuf::from("admin.sock"),
            enrollment: EnrollmentSettings {
                validity_days: 365,
                renewal_window_days: 30,
                ticket_ttl: Duration::from_secs(600),
            },
            accounts: AccountSettings { lockout_threshold: 5, min_password_length: 8 },
            session_idle_timeout: Duration::from_secs(900),
            rate_limit_per_minute: 30,
            request_timeout: Duration::from_secs(30),
            body_limit: 64 * 1024,
            crl_refresh: Duration::from_secs(24 * 3600),
            notify: None,
            connections: ConnectionLimits::default(),
            otp: OtpSettings::default(),
            mail: None,
        }
    }
}

/// The rules, from `[otp]` in inkan.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpSettings {
    /// Whether a user without an active token can do nothing but set one up.
    pub required: bool,
    /// Time step in seconds (30 for the standard apps; the bank apps use 60).
    pub step_secs: u32,
    /// Digits of a code.
    pub digits: u32,
    /// Wrong codes in a row that stop OTP use.
    pub max_failures: u32,
    /// The service ID an app is given (サービスID), and the issuer in the otpauth URI.
    pub service_id: String,
    /// After a revocation, how long before a new token may be issued.
    pub reissue_wait: time::Duration,
    /// The night window (local times): a token revoked inside it can be replaced from its end.
    pub night: (time::Time, time::Time),
    /// The local time zone's offset (Asia/Tokyo: +09:00, no summer time).
    pub utc_offset: time::UtcOffset,
}

impl Default for OtpSettings {
    fn default() -> Self {
        Self {
            required: false,
            step_secs: 30,
            digits: 6,
            max_failures: 5,
            service_id: "INKAN".into(),
            reissue_wait: time::Duration::minutes(30),
            night: (time::macros::time!(20:50), time::macros::time!(08:10)),
            utc_offset: time::macros::offset!(+9),
        }
    }
}

/// `[mail]`: where notices go out.
#[derive(Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// `smtp://HOST:PORT` (`?tls=required` for STARTTLS) or `smtps://HOST:PORT`, with
    /// `USER:PASSWORD@` when the server wants them. Never logged.
    pub smtp_url: String,
    /// The From address, `inkan <noreply@example.jp>`.
    pub from: String,
    /// Expiry notices at these thresholds, in days.
    pub expiry_thresholds_days: Vec<u32>,
    /// How often certificates are checked for expiry notices.
    pub scan_interval: Duration,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings").field("from", &self.from).finish_non_exhaustive()
    }
}
