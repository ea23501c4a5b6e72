//! `inkan.toml`: reading it into typed settings, and writing the commented default.

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
}

/// `[ca]`: what goes into issued certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub organization: String,
    pub default_days: u32,
    pub max_days: u32,
    pub crl_validity_hours: u32,
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
            ocsp_url: None,
            default_days: self.ca.default_days,
            max_days: self.ca.max_days,
        }
    }

    /// The configured CRL validity.
    pub fn crl_validity(&self) -> time::Duration {
        time::Duration::hours(i64::from(self.ca.crl_validity_hours))
    }
}

/// The published URLs under the HTTP base URL.
pub struct Urls {
    pub ca_crl: String,
    pub root_crl: String,
    pub ca_cert: String,
    pub root_cert: String,
}

impl Urls {
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
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
pub fn default_toml(organization: &str, base_url: &str) -> String {
    let organization = toml::Value::String(organization.to_owned());
    let base_url = toml::Value::String(base_url.to_owned());
    format!(
        r#"# inkan configuration, written by `inkan init`. Commands read it at start.

[ca]
# Organization (O=) in the subject of every certificate the issuing CA signs.
organization = {organization}
# Validity of issued certificates when `inkan issue --days` is not given, in days.
default_days = 365
# The longest validity `inkan issue --days` may ask for, in days.
max_days = 825
# How long a CRL signed by `inkan crl` is valid (its nextUpdate), in hours.
crl_validity_hours = 168

[publish]
# Base URL of the plain-HTTP listener that serves the CRLs and CA certificates
# (/crl/ca.crl, /crl/root.crl, /ca.crt, /root.crt). It is written into every
# certificate, so changing it affects only certificates issued afterwards.
base_url = {base_url}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_checks() {
        let text = default_toml("Ex \"quoted\" Org", "http://ca.example:8080/");
        let config: Config = toml::from_str(&text).expect("parses");
        config.check().expect("valid");
        let settings = config.profile_settings();
        assert_eq!(settings.organization, "Ex \"quoted\" Org");
        assert_eq!(settings.crl_url.as_deref(), Some("http://ca.example:8080/crl/ca.crl"));
    }

    #[test]
    fn refuses_bad_urls_and_unknown_keys() {
        assert!(check_base_url("https://x").is_err());
        assert!(check_base_url("http://").is_err());
        assert!(check_base_url("http://a b").is_err());
        let text = default_toml("o", "http://x").replace("max_days", "max_dayz");
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
