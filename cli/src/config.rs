//! `inkan.toml`: reading it into typed settings, and writing the commented default.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use pki::ProfileSettings;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[ca]`.
    pub ca: CaSection,
    /// `[publish]`.
    pub publish: PublishSection,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[enrollment]`.
    #[serde(default)]
    pub enrollment: EnrollmentSection,
    /// `[accounts]`.
    #[serde(default)]
    pub accounts: AccountsSection,
    /// `[notify]`.
    #[serde(default)]
    pub notify: NotifySection,
    /// `[est]`.
    #[serde(default)]
    pub est: EstSection,
    /// `[otp]`.
    #[serde(default)]
    pub otp: OtpSection,
    /// `[mail]`: absent, no mail.
    #[serde(default)]
    pub mail: Option<MailSection>,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[oauth]`.
    #[serde(default)]
    pub oauth: OauthSection,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageSection,
}

/// `[storage]`: where the registry and the web stores live.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `sled` (embedded, under the data directory) or `postgres`.
    pub backend: String,
    /// `postgres://USER@HOST[:PORT]/DATABASE`, for `postgres`.
    pub url: Option<String>,
    /// A file holding the database password (one line), when INKAN_DATABASE_PASSWORD is unset.
    pub password_file: Option<std::path::PathBuf>,
    /// Connections per process, at most.
    pub max_connections: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self { backend: "sled".into(), url: None, password_file: None, max_connections: 16 }
    }
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("StorageSection")
            .field("backend", &self.backend)
            .field("password_file", &self.password_file)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl StorageSection {
    /// Whether the stores are in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.backend == "postgres"
    }

    fn check(&self) -> anyhow::Result<()> {
        match (self.backend.as_str(), &self.url) {
            ("sled", _) => Ok(()),
            ("postgres", Some(url)) => {
                enroll_server::stores::postgres::check_url(url).map_err(|e| anyhow::anyhow!("[storage] url: {e}"))?;
                if !(1..=1000).contains(&self.max_connections) {
                    bail!("[storage] max_connections must be between 1 and 1000");
                }
                Ok(())
            }
            ("postgres", None) => {
                bail!("[storage] backend = \"postgres\" needs url = \"postgres://USER@HOST/DATABASE\"")
            }
            (other, _) => bail!("[storage] backend {other:?} is not one of \"sled\" and \"postgres\""),
        }
    }
}

/// `[oauth]`: API consent (the OAuth authorization server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthSection {
    pub access_token_secs: i64,
    pub code_secs: i64,
    pub request_uri_secs: i64,
    pub grant_days: u32,
    pub risk_signals: Vec<String>,
    pub terms_ja: Option<String>,
    pub terms_en: Option<String>,
    pub explanation_ja: Option<String>,
    pub explanation_en: Option<String>,
    pub scopes: Vec<ScopeSection>,
}

/// `[[oauth.scopes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSection {
    pub name: String,
    pub ja: String,
    pub en: String,
    #[serde(default)]
    pub per_resource: bool,
}

impl Default for OauthSection {
    fn default() -> Self {
        let d = enroll_server::oauth::OAuthSettings::default();
        Self {
            access_token_secs: d.access_token_ttl.whole_seconds(),
            code_secs: d.code_ttl.whole_seconds(),
            request_uri_secs: d.request_uri_ttl.whole_seconds(),
            grant_days: d.grant_days,
            risk_signals: vec!["new_device".into(), "new_network".into(), "recent_failures".into()],
            terms_ja: None,
            terms_en: None,
            explanation_ja: None,
            explanation_en: None,
            scopes: Vec::new(),
        }
    }
}

impl OauthSection {
    /// The settings, checked.
    pub fn settings(&self) -> anyhow::Result<enroll_server::oauth::OAuthSettings> {
        let mut s = enroll_server::oauth::OAuthSettings::default();
        if !(60..=3600).contains(&self.access_token_secs) {
            bail!("[oauth] access_token_secs must be between 60 and 3600");
        }
        if !(1..=60).contains(&self.code_secs) {
            bail!("[oauth] code_secs must be between 1 and 60");
        }
        if !(10..=599).contains(&self.request_uri_secs) {
            bail!("[oauth] request_uri_secs must be between 10 and 599 (under ten minutes)");
        }
        if !(1..=365).contains(&self.grant_days) {
            bail!("[oauth] grant_days must be between 1 and 365");
        }
        s.access_token_ttl = time::Duration::seconds(self.access_token_secs);
        s.code_ttl = time::Duration::seconds(self.code_secs);
        s.request_uri_ttl = time::Duration::seconds(self.request_uri_secs);
        s.grant_days = self.grant_days;
        s.risk = enroll_server::oauth::RiskSignals::default();
        for signal in &self.risk_signals {
            match signal.as_str() {
                "new_device" => s.risk.new_device = true,
                "new_network" => s.risk.new_network = true,
                "recent_failures" => s.risk.recent_failures = true,
                other => {
                    bail!("[oauth] risk_signals: {other:?} is not a signal (new_device, new_network, recent_failures)")
                }
            }
        }
        if let Some(ja) = &self.terms_ja {
            s.terms.0.clone_from(ja);
        }
        if let Some(en) = &self.terms_en {
            s.terms.1.clone_from(en);
        }
        if let Some(ja) = &self.explanation_ja {
            s.explanation.0.clone_from(ja);
        }
        if let Some(en) = &self.explanation_en {
            s.explanation.1.clone_from(en);
        }
        if !self.scopes.is_empty() {
            s.scopes.clear();
            for scope in &self.scopes {
                let ok = !scope.name.is_empty()
                    && scope.name.len() <= 64
                    && scope.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_.-".contains(&b));
                if !ok {
                    bail!("[[oauth.scopes]] name {:?}: use 1 to 64 of a-z, 0-9, ':', '_', '.', '-'", scope.name);
                }
                if s.scope(&scope.name).is_some() {
                    bail!("[[oauth.scopes]] {} is listed twice", scope.name);
                }
                s.scopes.push(enroll_server::oauth::ScopeDef {
                    name: scope.name.clone(),
                    ja: scope.ja.clone(),
                    en: scope.en.clone(),
                    per_resource: scope.per_resource,
                });
            }
        }
        Ok(s)
    }
}

/// `[audit]`: signed checkpoints of the audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// A checkpoint after this many new lines.
    pub checkpoint_lines: u64,
    /// And at least this often while lines are added, in seconds.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { checkpoint_lines: 1000, checkpoint_interval_secs: 300 }
    }
}

/// `[mail]`: notices by mail.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    pub smtp_url: String,
    pub from: String,
}

impl std::fmt::Debug for MailSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSection").field("from", &self.from).finish_non_exhaustive()
    }
}

/// `[otp]`: one-time passwords.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpSection {
    pub required: bool,
    pub step_secs: u32,
    pub digits: u32,
    pub max_failures: u32,
    pub service_id: String,
    pub reissue_wait_mins: u32,
    pub night_start: String,
    pub night_end: String,
    pub utc_offset: String,
}

impl Default for OtpSection {
    /// The service's defaults ([`enroll_server::otp::OtpSettings::default`]), as written.
    fn default() -> Self {
        let d = enroll_server::otp::OtpSettings::default();
        let clock = |t: time::Time| format!("{:02}:{:02}", t.hour(), t.minute());
        let (hours, minutes, _) = d.utc_offset.as_hms();
        Self {
            required: d.required,
            step_secs: d.step_secs,
            digits: d.digits,
            max_failures: d.max_failures,
            service_id: d.service_id,
            reissue_wait_mins: u32::try_from(d.reissue_wait.whole_minutes()).unwrap_or(30),
            night_start: clock(d.night.0),
            night_end: clock(d.night.1),
            utc_offset: format!("{}{:02}:{:02}", if hours < 0 { '-' } else { '+' }, hours.abs(), minutes.abs()),
        }
    }
}

impl OtpSection {
    /// The settings, checked.
    pub fn settings(&self) -> anyhow::Result<enroll_server::otp::OtpSettings> {
        let clock = |name: &str, value: &str| -> anyhow::Result<time::Time> {
            let format = time::macros::format_description!("[hour]:[minute]");
            time::Time::parse(value, &format).with_context(|| format!("[otp] {name} = {value:?}: use HH:MM"))
        };
        let offset_format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
        let utc_offset = time::UtcOffset::parse(&self.utc_offset, &offset_format)
            .with_context(|| format!("[otp] utc_offset = {:?}: use +HH:MM (Asia/Tokyo is +09:00)", self.utc_offset))?;
        if ![30, 60].contains(&self.step_secs) {
            bail!("[otp] step_secs must be 30 (the standard apps) or 60");
        }
        if ![6, 8].contains(&self.digits) {
            bail!("[otp] digits must be 6 or 8");
        }
        if !(1..=20).contains(&self.max_failures) {
            bail!("[otp] max_failures must be between 1 and 20");
        }
        let id_ok = !self.service_id.is_empty()
            && self.service_id.len() <= 32
            && self.service_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !id_ok {
            bail!("[otp] service_id must be 1 to 32 letters, digits or '-'");
        }
        if self.reissue_wait_mins > 24 * 60 {
            bail!("[otp] reissue_wait_mins must be at most 1440 (a day)");
        }
        Ok(enroll_server::otp::OtpSettings {
            required: self.required,
            step_secs: self.step_secs,
            digits: self.digits,
            max_failures: self.max_failures,
            service_id: self.service_id.clone(),
            reissue_wait: time::Duration::minutes(i64::from(self.reissue_wait_mins)),
            night: (clock("night_start", &self.night_start)?, clock("night_end", &self.night_end)?),
            utc_offset,
        })
    }
}

/// `[est]`: enrollment for machines (RFC 7030).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstSection {
    /// `ADDR:PORT`, or `"off"`.
    pub listen: String,
    /// Label → profile (`client`).
    pub labels: std::collections::BTreeMap<String, pki::Profile>,
}

impl Default for EstSection {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8445".into(), labels: Default::default() }
    }
}

impl EstSection {
    /// The listener's address; `None` when EST is off.
    pub fn address(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.listen.trim() {
            "off" => Ok(None),
            addr => {
                addr.parse().map(Some).with_context(|| format!("[est] listen = {addr:?}: use ADDRESS:PORT, or \"off\""))
            }
        }
    }
}

/// `[server]`: the enrollment service's listeners and names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: SocketAddr,
    pub login_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub names: Vec<String>,
    pub rate_limit_per_minute: u32,
    /// Started as root, the web worker switches to this user once its listeners are bound.
    pub user: Option<String>,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub first_request_timeout_secs: u64,
    pub idle_timeout_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            login_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            rate_limit_per_minute: 30,
            user: None,
            max_connections: 4096,
            max_connections_per_address: 256,
            first_request_timeout_secs: 10,
            idle_timeout_secs: 60,
        }
    }
}

/// `[enrollment]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentSection {
    pub validity_days: u32,
    pub renewal_window_days: u32,
    pub ticket_ttl_secs: u64,
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        Self { validity_days: 365, renewal_window_days: 30, ticket_ttl_secs: 600 }
    }
}

/// `[accounts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsSection {
    pub lockout_threshold: u32,
    pub min_password_length: usize,
    pub session_idle_timeout_secs: u64,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self { lockout_threshold: 5, min_password_length: 8, session_idle_timeout_secs: 900 }
    }
}

/// `[ca]`: what goes into issued certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub organization: String,
    pub default_days: u32,
    pub max_days: u32,
    pub crl_validity_hours: u32,
    #[serde(default = "default_crl_refresh_hours")]
    pub crl_refresh_hours: u32,
    /// How many CRLs the revoked certificates are spread over (1: one CRL).
    #[serde(default = "default_crl_shards")]
    pub crl_shards: u16,
    /// The names the signer certifies for servers (`*.D` for any name under D); by default the
    /// service's own, `[server] names`.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
}

fn default_crl_refresh_hours() -> u32 {
    24
}

fn default_crl_shards() -> u16 {
    1
}

/// `[notify]`: expiry notices to a webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    pub webhook_url: Option<String>,
    pub thresholds_days: Vec<u32>,
    pub scan_interval_secs: u64,
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self { webhook_url: None, thresholds_days: vec![30, 14, 7, 1], scan_interval_secs: 3600, ca_file: None }
    }
}

/// `[publish]`: where relying parties fetch CRLs and CA certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSection {
    pub base_url: String,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (run `inkan init` first?)", path.display()))?;
        let config: Self = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        config.check().with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        check_base_url(&self.publish.base_url)?;
        if self.ca.default_days == 0 || self.ca.default_days > self.ca.max_days {
            bail!("[ca] default_days must be between 1 and max_days ({})", self.ca.max_days);
        }
        if !(1..=8784).contains(&self.ca.crl_validity_hours) {
            bail!("[ca] crl_validity_hours must be between 1 and 8784 (a year)");
        }
        if !(1..=pki::crl::MAX_SHARDS).contains(&self.ca.crl_shards) {
            bail!("[ca] crl_shards must be between 1 (one CRL) and {}", pki::crl::MAX_SHARDS);
        }
        self.server_policy()?;
        if self.server.names.is_empty() {
            bail!("[server] names must list at least one DNS name or IP address");
        }
        for name in &self.server.names {
            name.parse::<pki::San>().with_context(|| format!("[server] names: {name:?}"))?;
        }
        if self.enrollment.validity_days == 0 || self.enrollment.validity_days > self.ca.max_days {
            bail!("[enrollment] validity_days must be between 1 and [ca] max_days ({})", self.ca.max_days);
        }
        if self.enrollment.ticket_ttl_secs == 0 || self.enrollment.ticket_ttl_secs > 86_400 {
            bail!("[enrollment] ticket_ttl_secs must be between 1 and 86400");
        }
        if self.ca.crl_refresh_hours == 0 || self.ca.crl_refresh_hours >= self.ca.crl_validity_hours {
            bail!(
                "[ca] crl_refresh_hours must be at least 1 and less than crl_validity_hours ({}), so a new CRL is out before the last expires",
                self.ca.crl_validity_hours
            );
        }
        if let Some(url) = &self.notify.webhook_url {
            enroll_server::notify::check_url(url).map_err(anyhow::Error::msg)?;
        }
        if self.notify.thresholds_days.is_empty() || self.notify.thresholds_days.contains(&0) {
            bail!("[notify] thresholds_days must list days of at least 1, like [30, 14, 7, 1]");
        }
        if self.audit.checkpoint_lines == 0 || self.audit.checkpoint_interval_secs == 0 {
            bail!("[audit] checkpoint_lines and checkpoint_interval_secs must be at least 1");
        }
        if self.notify.scan_interval_secs == 0 {
            bail!("[notify] scan_interval_secs must be at least 1");
        }
        if let Some(user) = &self.server.user
            && (user.is_empty() || user.contains(['/', ':', '\0']))
        {
            bail!("[server] user {user:?} is not a user name");
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_address == 0 {
            bail!("[server] max_connections and max_connections_per_address must be at least 1");
        }
        if self.server.max_connections_per_address > self.server.max_connections {
            bail!("[server] max_connections_per_address cannot be more than max_connections");
        }
        if !(1..=3600).contains(&self.server.first_request_timeout_secs)
            || !(1..=3600).contains(&self.server.idle_timeout_secs)
        {
            bail!("[server] first_request_timeout_secs and idle_timeout_secs must be between 1 and 3600");
        }
        if self.accounts.lockout_threshold == 0 {
            bail!("[accounts] lockout_threshold must be at least 1");
        }
        self.est.address()?;
        self.otp.settings()?;
        self.oauth.settings()?;
        self.storage.check()?;
        if let Some(mail) = self.mail_settings() {
            enroll_server::mail::check(&mail).map_err(anyhow::Error::msg)?;
        }
        for (label, profile) in &self.est.labels {
            let ok = !label.is_empty()
                && label.len() <= 64
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                && !["cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen"].contains(&label.as_str());
            if !ok {
                bail!(
                    "[est.labels] {label:?} is not a label: use letters, digits, '-' and '_', and no operation's name"
                );
            }
            if matches!(profile, pki::Profile::OcspResponder | pki::Profile::Instance) {
                bail!(
                    "[est.labels] {label} = {:?}: EST issues under the client, server and client-server profiles",
                    profile.name()
                );
            }
        }
        if self.ca.max_days > pki::profile::MAX_DAYS {
            bail!("[ca] max_days must be at most {}", pki::profile::MAX_DAYS);
        }
        Ok(())
    }

    /// The settings every issued certificate is built from.
    pub fn profile_settings(&self) -> ProfileSettings {
        let urls = Urls::new(&self.publish.base_url);
        ProfileSettings {
            organization: self.ca.organization.clone(),
            crl_url: Some(urls.ca_crl),
            ca_issuers_url: Some(urls.ca_cert),
            ocsp_url: Some(urls.ocsp),
            default_days: self.ca.default_days,
            max_days: self.ca.max_days,
            crl_shards: self.ca.crl_shards,
        }
    }

    /// `[mail]` as the service's settings (expiry thresholds and scan from `[notify]`).
    pub fn mail_settings(&self) -> Option<enroll_server::mail::MailSettings> {
        self.mail.as_ref().map(|m| enroll_server::mail::MailSettings {
            smtp_url: m.smtp_url.clone(),
            from: m.from.clone(),
            expiry_thresholds_days: self.notify.thresholds_days.clone(),
            scan_interval: std::time::Duration::from_secs(self.notify.scan_interval_secs),
        })
    }

    /// The configured CRL validity.
    pub fn crl_validity(&self) -> time::Duration {
        time::Duration::hours(i64::from(self.ca.crl_validity_hours))
    }
}

impl Config {
    /// The enrollment service's settings, under `dir`.
    pub fn server_settings(&self, dir: &ca::layout::DataDir) -> enroll_server::settings::ServerSettings {
        use enroll_server::settings::{AccountSettings, EnrollmentSettings, ServerSettings};
        use std::time::Duration;
        ServerSettings {
            listen: self.server.listen,
            login_listen: self.server.login_listen,
            http_listen: self.server.http_listen,
            est: enroll_server::settings::EstSettings {
                // Checked when the file was read.
                listen: self.est.address().ok().flatten(),
                labels: self.est.labels.clone(),
            },
            crl_dir: dir.crl_dir(),
            ca_max_days: self.ca.max_days,
            admin_socket: dir.admin_socket(),
            enrollment: EnrollmentSettings {
                validity_days: self.enrollment.validity_days,
                renewal_window_days: self.enrollment.renewal_window_days,
                ticket_ttl: Duration::from_secs(self.enrollment.ticket_ttl_secs),
            },
            accounts: AccountSettings {
                lockout_threshold: self.accounts.lockout_threshold,
                min_password_length: self.accounts.min_password_length,
            },
            session_idle_timeout: Duration::from_secs(self.accounts.session_idle_timeout_secs),
            rate_limit_per_minute: self.server.rate_limit_per_minute,
            crl_refresh: Duration::from_secs(u64::from(self.ca.crl_refresh_hours) * 3600),
            notify: self.notify.webhook_url.clone().map(|webhook_url| enroll_server::settings::NotifySettings {
                webhook_url,
                thresholds_days: self.notify.thresholds_days.clone(),
                scan_interval: Duration::from_secs(self.notify.scan_interval_secs),
                ca_file: self.notify.ca_file.clone(),
            }),
            connections: enroll_server::settings::ConnectionLimits {
                total: self.server.max_connections,
                per_address: self.server.max_connections_per_address,
                first_request: Duration::from_secs(self.server.first_request_timeout_secs),
                idle: Duration::from_secs(self.server.idle_timeout_secs),
            },
            // Checked when the file was read.
            otp: self.otp.settings().unwrap_or_default(),
            mail: self.mail_settings(),
            ..ServerSettings::default()
        }
    }

    /// The names the signer certifies for servers: `[ca] server_names`, else `[server] names`.
    pub fn server_policy(&self) -> anyhow::Result<Vec<pki::names::AllowedName>> {
        let names = self.ca.server_names.as_ref().unwrap_or(&self.server.names);
        names
            .iter()
            .map(|n| n.parse::<pki::names::AllowedName>().with_context(|| format!("[ca] server_names: {n:?}")))
            .collect()
    }

    /// `https://NAME:PORT` of a listener, NAME being the first server name.
    pub fn url_of(&self, addr: SocketAddr) -> String {
        let name = self.server.names.first().map(String::as_str).unwrap_or("localhost");
        let host = if name.contains(':') { format!("[{name}]") } else { name.to_owned() };
        format!("https://{host}:{}", addr.port())
    }
}

/// The published URLs under the HTTP base URL.
pub struct Urls {
    pub ocsp: String,
    pub ca_crl: String,
    pub root_crl: String,
    pub ca_cert: String,
    pub root_cert: String,
}

impl Urls {
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            ocsp: format!("{base}/ocsp"),
            ca_crl: format!("{base}/crl/ca.crl"),
            root_crl: format!("{base}/crl/root.crl"),
            ca_cert: format!("{base}/ca.crt"),
            root_cert: format!("{base}/root.crt"),
        }
    }
}

/// CRL and AIA URLs must be plain http (RFC 5280 §4.2.1.13: fetching them over TLS would need
/// the very certificates being checked).
pub fn check_base_url(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("base URL {url:?} must start with http:// (CRLs and CA certificates are served over plain HTTP)");
    };
    if rest.is_empty() || rest.starts_with('/') || !url.is_ascii() || url.contains(char::is_whitespace) {
        bail!("base URL {url:?} must be http://HOST[:PORT][/PATH] in ASCII");
    }
    Ok(())
}

/// The commented configuration `init` writes.
pub fn default_toml(organization: &str, base_url: &str, names: &[String]) -> String {
    let organization = toml::Value::String(organization.to_owned());
    let base_url = toml::Value::String(base_url.to_owned());
    let names = toml::Value::Array(names.iter().cloned().map(toml::Value::String).collect());
    format!(
        r#"# inkan configuration, written by `inkan init`. Commands read it at start.

[ca]
# Organization (O=) in the subject of every certificate the issuing CA signs.
organization = {organization}
# Validity of issued certificates when `inkan issue --days` is not given, in days.
default_days = 365
# The longest validity `inkan issue --days` may ask for, in days.
max_days = 825
# How long a CRL is valid (its nextUpdate), in hours.
crl_validity_hours = 168
# `inkan serve` signs a new CRL after revocations and at least this often, in hours.
crl_refresh_hours = 24
# How many CRLs the revoked certificates are spread over (1 to 1024). With more than one, each
# certificate names its own part (/crl/ca-N-I.crl for part I of N) and a relying party fetches a
# small CRL instead of the whole list; /crl/ca.crl keeps listing everything. Parts of a count
# used before keep being signed, so changing it later is safe.
crl_shards = 1
# The names the signer certifies for servers, whoever asks (`*.example.com` for any name under
# example.com, `10.0.0.0/8` for a network); by default the service's own, [server] names. Offline `inkan issue` (no
# service running) certifies the names it is given.
# server_names = ["localhost", "127.0.0.1", "*.example.com"]

[publish]
# Base URL of the plain-HTTP listener that serves the CRLs and CA certificates
# (/crl/ca.crl, /crl/root.crl, /ca.crt, /root.crt) and answers OCSP (/ocsp). It is written
# into every certificate, so changing it affects only certificates issued afterwards.
base_url = {base_url}

[server]
# `inkan serve` listeners: public HTTPS (pages, JSON API), certificate-login HTTPS
# (asks for a client certificate), plain HTTP (CA certificates and CRLs).
listen = "127.0.0.1:8443"
login_listen = "127.0.0.1:8444"
http_listen = "127.0.0.1:8080"
# Names in the service's TLS certificate (issued by this CA); the first is used in links.
names = {names}
# Login and enrollment requests allowed per client address per minute.
rate_limit_per_minute = 30
# Started as root, the web worker (the process that parses requests) switches to this user
# once its listeners are bound; give it db/, web/, server/, crl/ and audit/.
# user = "inkan"
# Connections each listener holds at most, in all and from one address (over the cap a new
# connection is closed at once), and how long a connection may move no byte: before its first
# request, and between requests.
max_connections = 4096
max_connections_per_address = 256
first_request_timeout_secs = 10
idle_timeout_secs = 60

[enrollment]
# Validity of certificates obtained in the browser, in days.
validity_days = 365
# A valid certificate can be obtained again (再取得) this many days before it expires.
renewal_window_days = 30
# How long a pre-processing ticket (取得前処理) stays usable, in seconds.
ticket_ttl_secs = 600

[accounts]
# Wrong passwords in a row before an account is locked.
lockout_threshold = 5
# Shortest password accepted.
min_password_length = 8
# Sessions end after this many seconds without a request.
session_idle_timeout_secs = 900

[notify]
# Expiry notices: a JSON POST {{event, account, serial, not_after, threshold, days_left}} to
# this URL once per certificate per threshold it enters. Unset: no notices.
# webhook_url = "http://127.0.0.1:9000/inkan-expiry"
thresholds_days = [30, 14, 7, 1]
# How often certificates are checked, in seconds.
scan_interval_secs = 3600

[audit]
# The signer signs a checkpoint of the audit trail (its line count and last line's hash) after
# this many new lines, and at least this often while lines are added; published at
# /audit/checkpoint. `inkan audit verify` checks the trail against the latest.
checkpoint_lines = 1000
checkpoint_interval_secs = 300

[est]
# EST (RFC 7030) for machines: HTTPS at /.well-known/est/ (cacerts, csrattrs, simpleenroll with
# HTTP Basic login ID and password, simplereenroll with the current certificate). "off" turns
# it off.
listen = "127.0.0.1:8445"

[otp]
# One-time passwords (TOTP, RFC 6238). With required = true, a user without a token in use can
# do nothing after logging in but set one up.
required = false
# 30 seconds and 6 digits are what every authenticator app supports.
step_secs = 30
digits = 6
# Wrong codes in a row before OTP use is stopped (lifted by the master, or the operator for a
# master).
max_failures = 5
# The service ID users type into the app beside their user ID (and the issuer in the QR code).
service_id = "INKAN"
# After a token is revoked, a new one only after this many minutes; a token revoked between
# night_start and night_end (local time, utc_offset) can be replaced from night_end.
reissue_wait_mins = 30
night_start = "20:50"
night_end = "08:10"
utc_offset = "+09:00"

[oauth]
# API consent (API連携認証): third-party services registered with `inkan oauth client add` send
# users here to allow them access (OAuth 2.0, FAPI 2.0 shape: PAR, PKCE, mutual-TLS clients,
# certificate-bound tokens). Lifetimes in seconds; grants in days (a client may have its own).
access_token_secs = 600
code_secs = 60
request_uri_secs = 90
grant_days = 90
# When the user's secret question (追加認証) is asked: a browser never seen for the user, an
# address outside the networks of the user's recent logins, wrong passwords since the last
# right one. An empty list never asks.
risk_signals = ["new_device", "new_network", "recent_failures"]
# The API terms (API利用規定) and the consent page's explanation, your own text:
# terms_ja = "..."
# terms_en = "..."
# explanation_ja = "..."
# explanation_en = "..."

# The scopes clients may ask for, with what users read. per_resource: the user chooses which
# of the contract's resources (`inkan resource add`) it covers, and registers their PINs.
[[oauth.scopes]]
name = "certificates:read"
ja = "電子証明書の照会"
en = "Read your certificates"

[[oauth.scopes]]
name = "balance:read"
ja = "残高照会"
en = "Read account balances"
per_resource = true

# [mail]
# Notices by mail (token issued, token revoked, OTP use stopped, certificate expiry at the
# [notify] thresholds) to the address a user gave for its token; each is sent once. smtp://
# (add ?tls=required for STARTTLS) or smtps://; credentials in the URL keep this file private.
# smtp_url = "smtp://127.0.0.1:25"
# from = "inkan <noreply@example.jp>"

[storage]
# Where the registry and the other stores live: "sled" (embedded, in this data directory) or
# "postgres" for several `inkan serve` instances over one database (move the data there first
# with `inkan storage migrate --to postgres://...`). The password comes from
# INKAN_DATABASE_PASSWORD, else password_file, else the URL.
backend = "sled"
# url = "postgres://inkan@db.example/inkan"
# password_file = "/etc/inkan/database.pass"
# max_connections = 16

[est.labels]
# /.well-known/est/LABEL/... and the profile each label issues under: "client", or "server" /
# "client-server" for accounts with an allowed-names policy (`inkan user names`), whose CSRs'
# names must be inside it and inside [ca] server_names.
# devices = "client"
# hosts = "client-server"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_checks() {
        let text = default_toml("Ex \"quoted\" Org", "http://ca.example:8080/", &["localhost".into()]);
        let config: Config = toml::from_str(&text).expect("parses");
        config.check().expect("valid");
        let settings = config.profile_settings();
        assert_eq!(settings.organization, "Ex \"quoted\" Org");
        assert_eq!(settings.crl_url.as_deref(), Some("http://ca.example:8080/crl/ca.crl"));
    }

    #[test]
    fn crl_shards_are_one_to_the_limit() {
        let with = |value: &str| {
            let text = default_toml("o", "http://x", &["localhost".into()]).replace("crl_shards = 1", value);
            let config: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
            config.check().map(|()| config.profile_settings().crl_shards)
        };
        assert_eq!(with("crl_shards = 1").expect("the default"), 1);
        assert_eq!(with("crl_shards = 1024").expect("the largest"), 1024);
        assert_eq!(with("").expect("left out"), 1);
        for bad in ["crl_shards = 0", "crl_shards = 1025"] {
            let error = with(bad).expect_err(bad).to_string();
            assert!(error.contains("crl_shards must be between 1 (one CRL) and 1024"), "{error}");
        }
        assert!(with("crl_shards = 70000").is_err());
        assert!(with("crl_shards = \"many\"").is_err());
    }

    #[test]
    fn refuses_bad_urls_and_unknown_keys() {
        assert!(check_base_url("https://x").is_err());
        assert!(check_base_url("http://").is_err());
        assert!(check_base_url("http://a b").is_err());
        let text = default_toml("o", "http://x", &["localhost".into()]).replace("max_days", "max_dayz");
        assert!(toml::from_str::<Config>(&text).is_err());
    }

    #[test]
    fn storage_is_checked_and_its_url_never_shows() {
        let with = |storage: &str| {
            let text = default_toml("o", "http://x", &["localhost".into()]).replace("backend = \"sled\"", storage);
            let config: Config = toml::from_str(&text).expect("parses");
            config.check().map(|()| config)
        };
        let config =
            with("backend = \"postgres\"\nurl = \"postgres://inkan:hunter2@db.example/inkan\"").expect("valid");
        assert!(config.storage.is_postgres());
        assert!(!format!("{config:?}").contains("hunter2"), "Debug shows no password");
        let no_url = with("backend = \"postgres\"").expect_err("needs a url").to_string();
        assert!(no_url.contains("needs url"), "{no_url}");
        let bad = with("backend = \"mysql\"").expect_err("unknown backend").to_string();
        assert!(bad.contains("not one of"), "{bad}");
        let bad_url = with("backend = \"postgres\"\nurl = \"mysql://x\"").expect_err("bad url");
        assert!(!format!("{bad_url:#}").contains("hunter2"));
        assert!(format!("{bad_url:#}").contains("[storage] url"), "{bad_url:#}");
    }
}
