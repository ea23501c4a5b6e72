//! Generations of the issuing CA. `inkan init` makes generation 1 (`ca/ca.crt`, `ca/ca.key`);
//! each `inkan ca rollover` makes the next (`ca/gen-N/ca.crt`, `ca.key`, `active-from`), signed
//! by the root, which takes over new issuance from its `active-from` moment. Every generation
//! keeps signing the CRLs and OCSP answers of the certificates it issued.
//!
//! What each generation's certificates point to: generation 1 keeps the URLs of `inkan.toml`
//! (`/crl/ca.crl`, `/ca.crt`); generation N gets `/crl/N/ca.crl` and `/ca/N/ca.crt`.

use std::path::PathBuf;
use std::sync::Arc;

use pki::{IssuerInfo, ProfileSettings};
use time::OffsetDateTime;

use crate::layout::{self, DataDir};
use crate::ledger::Ledger;
use crate::{CertificateAuthority, Error, Passphrase};

/// One generation's number, from when it issues, and its certificate (DER).
pub type GenerationCertificate = (u16, OffsetDateTime, Vec<u8>);

/// One generation's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// 1, 2, 3...
    pub number: u16,
    /// Its certificate.
    pub cert: PathBuf,
    /// Its key file (encrypted, or naming a key in a token).
    pub key: PathBuf,
    /// From when it issues (generation 1: always).
    pub active_from: OffsetDateTime,
}

/// Where generation `n` lives.
pub fn generation_dir(dir: &DataDir, n: u16) -> PathBuf {
    dir.ca_dir().join(format!("gen-{n}"))
}

/// The generations of `dir`, oldest first; none when there is no CA.
pub fn list(dir: &DataDir) -> Result<Vec<Generation>, Error> {
    let mut out = Vec::new();
    if !dir.ca_cert().exists() {
        return Ok(out);
    }
    out.push(Generation { number: 1, cert: dir.ca_cert(), key: dir.ca_key(), active_from: OffsetDateTime::UNIX_EPOCH });
    for n in 2..=u16::MAX {
        let folder = generation_dir(dir, n);
        if !folder.exists() {
            break;
        }
        let from = folder.join("active-from");
        let text = std::fs::read_to_string(&from).map_err(Error::io("reading", &from))?;
        let active_from = pki::encoding::parse_rfc3339(text.trim())
            .ok_or_else(|| Error::Backup { detail: format!("{}: not an RFC 3339 time", from.display()) })?;
        out.push(Generation { number: n, cert: folder.join("ca.crt"), key: folder.join("ca.key"), active_from });
    }
    Ok(out)
}

/// The generation that issues at `now`: the newest already active.
pub fn current(generations: &[Generation], now: OffsetDateTime) -> Option<&Generation> {
    generations.iter().rev().find(|g| g.active_from <= now)
}

/// The profile settings of generation `n`: its own CRL and CA-certificate URLs.
pub fn settings_for(settings: &ProfileSettings, n: u16) -> ProfileSettings {
    let mut out = settings.clone();
    if n > 1 {
        out.crl_url = settings.crl_url.as_ref().map(|u| u.replace("/crl/ca.crl", &format!("/crl/{n}/ca.crl")));
        out.ca_issuers_url = settings.ca_issuers_url.as_ref().map(|u| u.replace("/ca.crt", &format!("/ca/{n}/ca.crt")));
    }
    out
}

/// Every generation's CA, loaded with `passphrase` over one ledger.
pub struct Authorities {
    list: Vec<(OffsetDateTime, CertificateAuthority)>,
}

impl std::fmt::Debug for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorities").field("generations", &self.list.len()).finish()
    }
}

impl Authorities {
    /// Loads every generation of `dir`.
    pub fn load(
        dir: &DataDir,
        settings: &ProfileSettings,
        passphrase: &Passphrase,
        ledger: Arc<dyn Ledger>,
    ) -> Result<Self, Error> {
        let mut list = Vec::new();
        for generation in list_or_refuse(dir)? {
            let (signer, der) = crate::key_file::load_signer(&generation.key, &generation.cert, passphrase)?;
            let ca =
                CertificateAuthority::new(&der, signer, ledger.clone(), settings_for(settings, generation.number))?
                    .with_generation(generation.number);
            list.push((generation.active_from, ca));
        }
        Ok(Self { list })
    }

    /// One CA as the only generation (tests, fixtures).
    pub fn single(ca: CertificateAuthority) -> Self {
        Self { list: vec![(OffsetDateTime::UNIX_EPOCH, ca)] }
    }

    /// The CA that issues at `now`.
    pub fn current(&self, now: OffsetDateTime) -> &CertificateAuthority {
        let at = self.list.iter().rposition(|(from, _)| *from <= now).unwrap_or(0);
        &self.list[at].1
    }

    /// Generation `n`.
    pub fn get(&self, n: u16) -> Option<&CertificateAuthority> {
        self.list.iter().map(|(_, ca)| ca).find(|ca| ca.generation() == n)
    }

    /// Every generation, oldest first, with the moment it issues from.
    pub fn all(&self) -> impl Iterator<Item = (OffsetDateTime, &CertificateAuthority)> {
        self.list.iter().map(|(from, ca)| (*from, ca))
    }

    /// Applies `f` to every CA (hooks).
    pub fn map(self, f: impl Fn(CertificateAuthority) -> CertificateAuthority) -> Self {
        Self { list: self.list.into_iter().map(|(from, ca)| (from, f(ca))).collect() }
    }
}

fn list_or_refuse(dir: &DataDir) -> Result<Vec<Generation>, Error> {
    let generations = list(dir)?;
    if generations.is_empty() {
        return Err(Error::io("reading", &dir.ca_cert())(std::io::ErrorKind::NotFound.into()));
    }
    Ok(generations)
}

/// The CA certificate of every generation (DER), oldest first, and from when each issues.
pub fn certificates(dir: &DataDir) -> Result<Vec<GenerationCertificate>, Error> {
    list(dir)?.into_iter().map(|g| Ok((g.number, g.active_from, layout::read_certificate(&g.cert)?))).collect()
}

/// The subject's common name of a CA certificate, for listings.
pub fn subject(der: &[u8]) -> String {
    IssuerInfo::from_der(der).map(|i| i.subject().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_generations_get_their_own_urls() {
        let settings = ProfileSettings {
            organization: "o".into(),
            crl_url: Some("http://h:8080/crl/ca.crl".into()),
            ca_issuers_url: Some("http://h:8080/ca.crt".into()),
            ocsp_url: Some("http://h:8080/ocsp".into()),
            default_days: 1,
            max_days: 2,
            crl_shards: 1,
        };
        assert_eq!(settings_for(&settings, 1), settings);
        let second = settings_for(&settings, 2);
        assert_eq!(second.crl_url.as_deref(), Some("http://h:8080/crl/2/ca.crl"));
        assert_eq!(second.ca_issuers_url.as_deref(), Some("http://h:8080/ca/2/ca.crt"));
        assert_eq!(second.ocsp_url, settings.ocsp_url);
        assert_eq!(pki::published::ca_crl(1), "ca.crl");
        assert_eq!(pki::published::ca_crl(3), "ca-3.crl");
    }
}
