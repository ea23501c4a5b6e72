//! Key ceremonies: creating the root and issuing CA, and signing the root's CRL.

use std::fs;

use pki::crl::{self, CrlOrder};
use pki::profile;
use pki::{IssuerInfo, Validity};
use time::{Duration, OffsetDateTime};

use crate::authority::random_serial;
pub use crate::key_file::load_signer;
use crate::layout::{self, DataDir};
use crate::pkcs11::TokenKey;
use crate::signer::{CaKeyType, FileSigner, RcgenKey, Signer};
use crate::{Error, Passphrase};

/// What `init` creates.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Key type of both CA keys.
    pub key_type: CaKeyType,
    /// Organization (O=) of both CA subjects.
    pub organization: String,
    /// Root validity in days.
    pub root_days: u32,
    /// Issuing CA validity in days (capped at the root's).
    pub ca_days: u32,
    /// URL of the root's CRL, written into the issuing CA certificate.
    pub root_crl_url: Option<String>,
    /// URL of the root certificate, written into the issuing CA certificate (AIA).
    pub root_cert_url: Option<String>,
    /// URL of the OCSP responder that answers for the issuing CA with the root's pre-signed
    /// answer, written into the issuing CA certificate (AIA).
    pub ca_ocsp_url: Option<String>,
    /// The commented configuration file to write beside the keys.
    pub config_toml: String,
    /// Make both keys inside this PKCS#11 token instead of encrypted files.
    pub token: Option<TokenOptions>,
}

/// The token `init` makes the CA keys in.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// The PKCS#11 module (shared library).
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token_label: String,
}

/// A new CA key: in a file (written encrypted) or in a token (the file names it).
enum NewKey {
    File(FileSigner),
    Token(crate::pkcs11::TokenSigner, TokenKey),
}

impl NewKey {
    fn make(options: &InitOptions, role: &str, pin: &Passphrase) -> Result<Self, Error> {
        match &options.token {
            None => Ok(Self::File(FileSigner::generate(options.key_type)?)),
            Some(token) => {
                let suffix = pki::encoding::hex(&random_serial()?.as_bytes()[..4]);
                let key = TokenKey {
                    pkcs11_module: token.module.clone(),
                    token_label: token.token_label.clone(),
                    key_label: format!("inkan-{role}-{suffix}"),
                };
                Ok(Self::Token(key.generate(pin, options.key_type)?, key))
            }
        }
    }

    fn signer(&self) -> &dyn Signer {
        match self {
            Self::File(s) => s,
            Self::Token(s, _) => s,
        }
    }

    fn file_text(&self, passphrase: &Passphrase) -> Result<zeroize::Zeroizing<String>, Error> {
        match self {
            Self::File(s) => s.to_encrypted_pem(passphrase),
            Self::Token(_, key) => Ok(zeroize::Zeroizing::new(key.to_file_text())),
        }
    }
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The root certificate, DER.
    pub root_der: Vec<u8>,
    /// The issuing CA certificate, DER.
    pub ca_der: Vec<u8>,
}

/// Creates the offline root and the issuing CA signed by it under `dir`.
///
/// Refuses if any CA file exists. Everything is written into a staging directory first and
/// moved into place at the end, so a failure leaves no partial CA behind. With a token, both
/// passphrases are its user PIN (no strength rule: the token sets its own), and the keys are
/// made there with fresh labels.
pub fn init(
    dir: &DataDir,
    options: &InitOptions,
    root_passphrase: &Passphrase,
    ca_passphrase: &Passphrase,
    now: OffsetDateTime,
) -> Result<InitReport, Error> {
    if options.token.is_none() {
        root_passphrase.check_strength()?;
        ca_passphrase.check_strength()?;
    }
    for path in dir.ca_files().iter().chain([&dir.config()]) {
        if path.exists() {
            return Err(Error::AlreadyInitialised { path: path.clone() });
        }
    }
    pki::profile::check_account(&options.organization).map_err(|_| {
        Error::Pki(pki::Error::InvalidAccount {
            account: options.organization.clone(),
            reason: "the organization must be 1 to 64 printable characters",
        })
    })?;
    let root_validity = Validity::for_days(now, options.root_days, None)?;
    Validity::for_days(now, options.ca_days, Some(&root_validity))?;
    layout::create_private_dir(dir.path())?;

    let root_key = NewKey::make(options, "root", root_passphrase)?;
    let root = root_key.signer();
    let root_params =
        profile::root_ca_params(&options.organization, &random_serial()?, &root_validity, root.public_key());
    let root_cert = root_params
        .self_signed(&RcgenKey(root))
        .map_err(|e| pki::Error::Encoding { what: "root certificate", detail: e.to_string() })?;

    let ca_key = NewKey::make(options, "ca", ca_passphrase)?;
    let ca = ca_key.signer();
    let ca_validity = Validity::for_days(now, options.ca_days, Some(&root_validity))?;
    let ca_params = profile::issuing_ca_params(
        &options.organization,
        &random_serial()?,
        &ca_validity,
        ca.public_key(),
        options.root_crl_url.as_deref(),
        options.root_cert_url.as_deref(),
        options.ca_ocsp_url.as_deref(),
    );
    let root_issuer = rcgen::Issuer::from_params(&root_params, RcgenKey(root));
    let ca_cert = ca_params
        .signed_by(ca.public_key(), &root_issuer)
        .map_err(|e| pki::Error::Encoding { what: "issuing CA certificate", detail: e.to_string() })?;
    // Check what was made with the same reader that will load it for issuance.
    IssuerInfo::from_der(root_cert.der())?;
    IssuerInfo::from_der(ca_cert.der())?;

    let staging = dir.path().join(".init-staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("removing", &staging))?;
    }
    let staged = DataDir::new(&staging);
    layout::create_private_dir(&staged.root_dir())?;
    layout::create_private_dir(&staged.ca_dir())?;
    layout::write_new(&staged.root_key(), root_key.file_text(root_passphrase)?.as_bytes(), 0o600)?;
    layout::write_new(&staged.root_cert(), root_cert.pem().as_bytes(), 0o644)?;
    layout::write_new(&staged.root_crl_number(), b"0\n", 0o644)?;
    layout::write_new(&staged.ca_key(), ca_key.file_text(ca_passphrase)?.as_bytes(), 0o600)?;
    layout::write_new(&staged.ca_cert(), ca_cert.pem().as_bytes(), 0o644)?;
    layout::write_new(&staged.config(), options.config_toml.as_bytes(), 0o644)?;

    for (from, to) in
        [(staged.root_dir(), dir.root_dir()), (staged.ca_dir(), dir.ca_dir()), (staged.config(), dir.config())]
    {
        fs::rename(&from, &to).map_err(Error::io("moving into place", &to))?;
    }
    fs::remove_dir(&staging).map_err(Error::io("removing", &staging))?;
    layout::sync_dir(dir.path())?;
    Ok(InitReport { root_der: root_cert.der().to_vec(), ca_der: ca_cert.der().to_vec() })
}

/// What `inkan ca rollover` makes.
#[derive(Debug, Clone)]
pub struct RolloverOptions {
    /// Organization (O=) of the new CA's subject.
    pub organization: String,
    /// From when the new CA issues (the service switches at this moment).
    pub active_from: OffsetDateTime,
    /// Its validity in days (capped at the root's).
    pub days: u32,
    /// URL of the root's CRL, written into the new CA certificate.
    pub root_crl_url: Option<String>,
    /// URL of the root certificate (AIA).
    pub root_cert_url: Option<String>,
    /// URL of the OCSP responder that answers for the new CA with the root's pre-signed answer.
    pub ca_ocsp_url: Option<String>,
}

/// Makes the next generation of the issuing CA (a ceremony with the root key): a new key of the
/// current generation's type (in the same token when that one is in a token, else encrypted
/// with `ca_passphrase`, which must open the current key), certified by the root as "Issuing CA
/// N", that takes over issuance at `options.active_from`. Written to `ca/gen-N/` through a
/// staging directory; refused while another generation still waits for its moment.
pub fn rollover(
    dir: &DataDir,
    options: &RolloverOptions,
    root_passphrase: &Passphrase,
    ca_passphrase: &Passphrase,
    now: OffsetDateTime,
) -> Result<crate::generations::Generation, Error> {
    let generations = crate::generations::list(dir)?;
    let last =
        generations.last().ok_or_else(|| Error::io("reading", &dir.ca_cert())(std::io::ErrorKind::NotFound.into()))?;
    if last.active_from > now {
        return Err(Error::Rollover {
            detail: format!(
                "generation {} already takes over at {}; a new rollover after that",
                last.number,
                pki::encoding::rfc3339(last.active_from)
            ),
        });
    }
    if options.active_from < now - Duration::minutes(5) {
        return Err(Error::Rollover { detail: "the moment the new CA takes over is in the past".into() });
    }
    let number =
        last.number.checked_add(1).ok_or_else(|| Error::Rollover { detail: "no generation number is left".into() })?;
    let (root, root_der) = load_signer(&dir.root_key(), &dir.root_cert(), root_passphrase)?;
    let root_info = IssuerInfo::from_der(&root_der)?;
    let (current, _) = load_signer(&last.key, &last.cert, ca_passphrase)?;
    let key_type = match current.public_key().kind() {
        pki::KeyKind::EcdsaP256 => CaKeyType::EcdsaP256,
        pki::KeyKind::EcdsaP384 => CaKeyType::EcdsaP384,
        pki::KeyKind::Ed25519 => CaKeyType::Ed25519,
        pki::KeyKind::Rsa { .. } => CaKeyType::Rsa3072,
    };
    drop(current);
    let validity = Validity::for_days(now, options.days, Some(&root_info.validity()))?;
    let suffix = pki::encoding::hex(&random_serial()?.as_bytes()[..4]);
    let key = match TokenKey::read(&last.key)? {
        Some(token) => {
            let key = TokenKey { key_label: format!("inkan-ca{number}-{suffix}"), ..token };
            NewKey::Token(key.generate(ca_passphrase, key_type)?, key)
        }
        None => NewKey::File(FileSigner::generate(key_type)?),
    };
    let signer = key.signer();
    let mut params = profile::issuing_ca_params(
        &options.organization,
        &random_serial()?,
        &validity,
        signer.public_key(),
        options.root_crl_url.as_deref(),
        options.root_cert_url.as_deref(),
        options.ca_ocsp_url.as_deref(),
    );
    profile::name_issuing_ca_generation(&mut params, &options.organization, number);
    let root_cert_der = rustls_pki_types::CertificateDer::from(root_der.as_slice());
    let root_issuer = rcgen::Issuer::from_ca_cert_der(&root_cert_der, RcgenKey(root.as_ref()))
        .map_err(|e| pki::Error::Encoding { what: "root certificate", detail: e.to_string() })?;
    let cert = params
        .signed_by(signer.public_key(), &root_issuer)
        .map_err(|e| pki::Error::Encoding { what: "issuing CA certificate", detail: e.to_string() })?;
    IssuerInfo::from_der(cert.der())?;

    let target = crate::generations::generation_dir(dir, number);
    let staging = dir.ca_dir().join(format!(".gen-{number}-staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("removing", &staging))?;
    }
    layout::create_private_dir(&staging)?;
    layout::write_new(&staging.join("ca.key"), key.file_text(ca_passphrase)?.as_bytes(), 0o600)?;
    layout::write_new(&staging.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
    let from = options.active_from.replace_nanosecond(0).unwrap_or(options.active_from);
    layout::write_new(&staging.join("active-from"), format!("{}\n", pki::encoding::rfc3339(from)).as_bytes(), 0o644)?;
    fs::rename(&staging, &target).map_err(Error::io("moving into place", &target))?;
    layout::sync_dir(&dir.ca_dir())?;
    Ok(crate::generations::Generation {
        number,
        cert: target.join("ca.crt"),
        key: target.join("ca.key"),
        active_from: from,
    })
}

/// A cross-certificate for a new root (a root rollover, a ceremony with the old root key): the
/// new root's subject and key, certified by the old root, so that a client trusting only the old
/// root verifies chains under the new one (leaf → issuing CA → cross-certificate → old root).
/// Valid from `now` for `days`, capped at both roots' ends. The new root must be one inkan made
/// (its subject `O=…, CN=… Root CA`): the cross-certificate repeats its subject and key
/// identifier exactly, or path building would not find it.
pub fn cross_sign(
    dir: &DataDir,
    new_root_der: &[u8],
    root_passphrase: &Passphrase,
    now: OffsetDateTime,
    days: u32,
) -> Result<Vec<u8>, Error> {
    let new_root = IssuerInfo::from_der(new_root_der)?;
    let (old, old_der) = load_signer(&dir.root_key(), &dir.root_cert(), root_passphrase)?;
    let old_root = IssuerInfo::from_der(&old_der)?;
    if old_root.public_key() == new_root.public_key() {
        return Err(Error::Rollover { detail: "the new root has the old root's key".into() });
    }
    let end = old_root.validity().not_after.min(new_root.validity().not_after);
    let mut validity = Validity::for_days(now, days, Some(&old_root.validity()))?;
    validity.not_after = validity.not_after.min(end);
    let organization = pki::certificate::subject_organization(new_root_der)?;
    let mut params = profile::root_ca_params(&organization, &random_serial()?, &validity, new_root.public_key());
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(new_root.key_id().to_vec());
    params.use_authority_key_identifier_extension = true;
    let old_cert = rustls_pki_types::CertificateDer::from(old_der.as_slice());
    let issuer = rcgen::Issuer::from_ca_cert_der(&old_cert, RcgenKey(old.as_ref()))
        .map_err(|e| pki::Error::Encoding { what: "root certificate", detail: e.to_string() })?;
    let cross = params
        .signed_by(new_root.public_key(), &issuer)
        .map_err(|e| pki::Error::Encoding { what: "cross-certificate", detail: e.to_string() })?;
    let made = IssuerInfo::from_der(cross.der())?;
    if made.subject_name_der() != new_root.subject_name_der() {
        return Err(Error::Rollover {
            detail: format!(
                "the new root's subject {:?} is not one inkan makes (O=…, CN=… Root CA)",
                new_root.subject()
            ),
        });
    }
    Ok(cross.der().to_vec())
}

/// What the offline root publishes for relying parties: its CRL, and an OCSP answer about the
/// issuing CA signed ahead (the root has no responder online).
#[derive(Debug, Clone)]
pub struct RootPublications {
    /// The root's CRL (DER).
    pub crl: Vec<u8>,
    /// The root's OCSP answer for the issuing CA certificate: good (DER `OCSPResponse`).
    pub ca_ocsp: Vec<u8>,
    /// The same for each later generation of the issuing CA (`inkan ca rollover`).
    pub later_ca_ocsp: Vec<(u16, Vec<u8>)>,
}

/// Signs the root's CRL and its OCSP answer about the issuing CA (a ceremony: needs the root
/// passphrase), both valid for `validity` from `now`. The root has issued only the issuing CA,
/// which is not revoked: the CRL has no entries and the answer is good. The CRL number in
/// `root/crl-number` is advanced durably before signing.
pub fn sign_root_publications(
    dir: &DataDir,
    root_passphrase: &Passphrase,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<RootPublications, Error> {
    let (root, der) = load_signer(&dir.root_key(), &dir.root_cert(), root_passphrase)?;
    let issuer = IssuerInfo::from_der(&der)?;
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let next_update = now
        .checked_add(validity)
        .ok_or_else(|| pki::Error::InvalidValidity { reason: "the CRL's nextUpdate is out of range".into() })?;
    let path = dir.root_crl_number();
    let last: u64 = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| Error::BadKey {
            path: path.clone(),
            detail: "the CRL number file does not hold a number".into(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io("reading", &path)(e)),
    };
    let number = last + 1;
    layout::replace(&path, format!("{number}\n").as_bytes(), 0o644)?;
    let order = CrlOrder { number, this_update: now, next_update, entries: &[], distribution_point: None };
    let prepared = crl::prepare_crl(&issuer, &order)?;
    let signature = root.sign(prepared.tbs_der())?;
    let crl = prepared.assemble(&signature);

    // Each issuing CA's status, signed by the root itself (RFC 6960 §4.2.2.2: the CA that
    // issued the certificate may answer for it).
    let responder = pki::ocsp::Responder::new(&der)?;
    let mut answers = Vec::new();
    for (n, _, ca_der) in crate::generations::certificates(dir)? {
        let ca_serial = pki::certificate::Summary::from_der(&ca_der)?;
        let serial = pki::encoding::unhex(&ca_serial.serial)
            .ok_or_else(|| pki::Error::InvalidIssuer { detail: "the issuing CA's serial".into() })?;
        let id = pki::ocsp::CertId::for_serial(&issuer, pki::ocsp::CertIdHash::Sha1, &serial);
        let status = pki::ocsp::CertStatus::Good;
        let prepared = pki::ocsp::prepare_response(&responder, &id, status, now, now, next_update)?;
        let signature = root.sign(prepared.tbs_der())?;
        answers.push((n, prepared.assemble(&signature)));
    }
    let mut answers = answers.into_iter();
    let (_, ca_ocsp) =
        answers.next().ok_or_else(|| Error::io("reading", &dir.ca_cert())(std::io::ErrorKind::NotFound.into()))?;
    Ok(RootPublications { crl, ca_ocsp, later_ca_ocsp: answers.collect() })
}
