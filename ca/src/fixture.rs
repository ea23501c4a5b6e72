//! Certificate fixture sets for TLS client-auth tests: client certificates in every state a
//! relying party must tell apart, server certificates, the chain, the CRLs and OCSP answers.
//!
//! An ephemeral set is made by a throwaway root and issuing CA that live only in memory for the
//! length of the call. Their clock goes back 800 days so that an expired certificate can be
//! issued inside the issuing CA's validity; every certificate goes through the same issuance
//! (CSR check, profile, lint, ledger) as any other.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use pki::crl::{self, CrlOrder, RevocationReason};
use pki::ocsp::{self, CertId, CertIdHash, CertStatus};
use pki::registry::{CertRecord, RegistryError, RequestAnswer};
use pki::{IssuerInfo, Profile, ProfileSettings, RevokedEntry, San, Serial, Validity, profile};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::authority::random_serial;
use crate::ledger::Ledger;
use crate::signer::{CaKeyType, FileSigner, RcgenKey, Signer};
use crate::{CertificateAuthority, Error, IssueRequest};

/// The state of a fixture client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Good: issued now, not revoked.
    Valid,
    /// Issued now and revoked (keyCompromise): on the CRL and answered revoked by OCSP.
    Revoked,
    /// Issued 400 days ago for 30 days.
    Expired,
    /// Valid from 30 days ahead.
    NotYetValid,
    /// A server certificate (EKU serverAuth only) with the client's name.
    WrongEku,
    /// Valid, but issued by another CA that the relying party does not trust.
    ForeignCa,
}

impl ClientState {
    /// Every state, in the order of the documentation.
    pub const ALL: [Self; 6] =
        [Self::Valid, Self::Revoked, Self::Expired, Self::NotYetValid, Self::WrongEku, Self::ForeignCa];

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::WrongEku => "wrong-eku",
            Self::ForeignCa => "foreign-ca",
        }
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for ClientState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|state| state.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|state| state.name()).collect();
            format!("unknown state {:?}; the states are {}", s.chars().take(40).collect::<String>(), names.join(", "))
        })
    }
}

/// What a fixture set holds.
#[derive(Clone, Debug)]
pub struct FixtureOrder {
    /// Client certificates: name (the subject's CN) and state.
    pub clients: Vec<(String, ClientState)>,
    /// Server certificates: the names (DNS names or IP addresses) of each.
    pub servers: Vec<Vec<San>>,
    /// Validity of the good certificates and of the CRLs and OCSP answers, in days.
    pub days: u32,
}

/// A certificate of a fixture set, with its key.
pub struct FixtureCert {
    /// The client's name, or the server's first name.
    pub name: String,
    /// Client or server profile as asked for (a wrong-eku client is still a "client" here).
    pub role: Role,
    /// The state (servers are always valid).
    pub state: ClientState,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// The certificates above it, issuing CA first, root last.
    pub chain: Vec<Vec<u8>>,
    /// The OCSP answer about it, signed by its issuing CA (DER `OCSPResponse`); none when the
    /// data directory's CA issued it (its responder answers).
    pub ocsp: Option<Vec<u8>>,
}

impl fmt::Debug for FixtureCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixtureCert")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Whether a fixture certificate was asked for as a client or a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `--client`.
    Client,
    /// `--server`.
    Server,
}

/// A whole fixture set.
#[derive(Debug)]
pub struct FixtureSet {
    /// The trusted root, DER.
    pub root: Vec<u8>,
    /// The issuing CA, DER.
    pub issuing_ca: Vec<u8>,
    /// The issuing CA's CRL (DER), listing the revoked clients.
    pub crl: Vec<u8>,
    /// The root's CRL (DER), when there is one.
    pub root_crl: Option<Vec<u8>>,
    /// The other CA's root and issuing CA, when a foreign-ca client was asked for.
    pub foreign: Option<(Vec<u8>, Vec<u8>)>,
    /// The certificates, clients first, in the order asked.
    pub certificates: Vec<FixtureCert>,
}

/// A fresh key and its CSR, for a fixture certificate.
pub struct KeyAndCsr {
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// The CSR (DER), subject CN = the name.
    pub csr: Vec<u8>,
}

/// A fresh P-256 key and a CSR for `name`.
pub fn key_and_csr(name: &str) -> Result<KeyAndCsr, Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| pki::Error::Encoding { what: "fixture key", detail: e.to_string() })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| pki::Error::Encoding { what: "fixture CSR", detail: e.to_string() })?;
    Ok(KeyAndCsr { key_pkcs8: Zeroizing::new(key.serialize_der()), csr: csr.der().to_vec() })
}

/// A certificate an ephemeral CA issued, with its key.
struct Leaf {
    der: Vec<u8>,
    serial: Serial,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

/// A throwaway two-level CA held in memory.
pub struct EphemeralCa {
    root: FileSigner,
    root_der: Vec<u8>,
    authority: CertificateAuthority,
    ca_der: Vec<u8>,
}

/// How far back the ephemeral CA's validity starts: room for a certificate that expired.
const CA_BACKDATE_DAYS: i64 = 800;
/// The ephemeral CA's validity from its start.
const CA_DAYS: u32 = 800 + 3650;

impl EphemeralCa {
    /// A new root and issuing CA (ECDSA P-256) for `organization`, valid from 800 days before
    /// `now` for about ten years after it.
    pub fn new(organization: &str, now: OffsetDateTime) -> Result<Self, Error> {
        let start = now - Duration::days(CA_BACKDATE_DAYS);
        let validity = Validity::for_days(start, CA_DAYS, None)?;
        let root = FileSigner::generate(CaKeyType::EcdsaP256)?;
        let root_params = profile::root_ca_params(organization, &random_serial()?, &validity, root.public_key());
        let root_cert = root_params
            .self_signed(&RcgenKey(&root))
            .map_err(|e| pki::Error::Encoding { what: "root certificate", detail: e.to_string() })?;
        let ca = FileSigner::generate(CaKeyType::EcdsaP256)?;
        let ca_params =
            profile::issuing_ca_params(organization, &random_serial()?, &validity, ca.public_key(), None, None, None);
        let root_issuer = rcgen::Issuer::from_params(&root_params, RcgenKey(&root));
        let ca_cert = ca_params
            .signed_by(ca.public_key(), &root_issuer)
            .map_err(|e| pki::Error::Encoding { what: "issuing CA certificate", detail: e.to_string() })?;
        let settings = ProfileSettings {
            organization: organization.to_owned(),
            crl_url: None,
            ca_issuers_url: None,
            ocsp_url: None,
            default_days: 365,
            max_days: pki::profile::MAX_DAYS,
            crl_shards: 1,
        };
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let authority = CertificateAuthority::new(ca_cert.der(), Box::new(ca), ledger, settings)?;
        Ok(Self { root, root_der: root_cert.der().to_vec(), authority, ca_der: ca_cert.der().to_vec() })
    }

    /// The root certificate, DER.
    pub fn root(&self) -> &[u8] {
        &self.root_der
    }

    /// The issuing CA certificate, DER.
    pub fn issuing_ca(&self) -> &[u8] {
        &self.ca_der
    }

    /// Issues one certificate for a fresh P-256 key, with `at` as the CA's clock.
    fn issue(&self, name: &str, profile: Profile, sans: &[San], days: u32, at: OffsetDateTime) -> Result<Leaf, Error> {
        let KeyAndCsr { key_pkcs8, csr } = key_and_csr(name)?;
        let request = IssueRequest {
            csr: &csr,
            account: name,
            profile,
            sans,
            days: Some(days),
            request_id: None,
            supersede: false,
        };
        let issued = self.authority.issue_at(&request, at)?;
        Ok(Leaf { der: issued.der, serial: issued.record.serial, key_pkcs8 })
    }

    /// A valid client certificate for `name`, with its chain (for a foreign-ca client of a set
    /// whose own CA is elsewhere).
    pub fn client(&self, name: &str, days: u32, now: OffsetDateTime) -> Result<FixtureCert, Error> {
        let leaf = self.issue(name, Profile::Client, &[], days, now)?;
        let ocsp = self.ocsp(&leaf.serial, CertStatus::Good, now, days)?;
        Ok(FixtureCert {
            name: name.to_owned(),
            role: Role::Client,
            state: ClientState::ForeignCa,
            der: leaf.der,
            key_pkcs8: leaf.key_pkcs8,
            chain: vec![self.ca_der.clone(), self.root_der.clone()],
            ocsp: Some(ocsp),
        })
    }

    /// The issuing CA's OCSP answer for `serial`, valid `days` from `now`.
    fn ocsp(&self, serial: &Serial, status: CertStatus, now: OffsetDateTime, days: u32) -> Result<Vec<u8>, Error> {
        let responder = ocsp::Responder::new(&self.ca_der)?;
        let id = CertId::for_serial(self.authority.issuer(), CertIdHash::Sha1, serial.as_bytes());
        let prepared = ocsp::prepare_response(&responder, &id, status, now, now, now + Duration::days(days.into()))?;
        let signature = self.authority.signer().sign(prepared.tbs_der())?;
        Ok(prepared.assemble(&signature))
    }

    /// The root's CRL: empty (the issuing CA is good), number 1.
    fn root_crl(&self, now: OffsetDateTime, days: u32) -> Result<Vec<u8>, Error> {
        let issuer = IssuerInfo::from_der(&self.root_der)?;
        let order = CrlOrder {
            number: 1,
            this_update: now,
            next_update: now + Duration::days(days.into()),
            entries: &[],
            distribution_point: None,
        };
        let prepared = crl::prepare_crl(&issuer, &order)?;
        let signature = self.root.sign(prepared.tbs_der())?;
        Ok(prepared.assemble(&signature))
    }
}

/// Makes a fixture set with a new ephemeral CA (and another one for foreign-ca clients).
pub fn ephemeral(order: &FixtureOrder, now: OffsetDateTime) -> Result<FixtureSet, Error> {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let ca = EphemeralCa::new("inkan fixtures", now)?;
    let foreign = match order.clients.iter().any(|(_, state)| *state == ClientState::ForeignCa) {
        true => Some(EphemeralCa::new("inkan fixtures foreign", now)?),
        false => None,
    };
    let chain = |ca: &EphemeralCa| vec![ca.ca_der.clone(), ca.root_der.clone()];
    let mut certificates = Vec::new();
    let mut revoked = Vec::new();
    for (name, state) in &order.clients {
        let (issuer, profile, sans, at, days) = match state {
            ClientState::Valid | ClientState::Revoked => (&ca, Profile::Client, vec![], now, order.days),
            ClientState::Expired => (&ca, Profile::Client, vec![], now - Duration::days(400), 30),
            ClientState::NotYetValid => (&ca, Profile::Client, vec![], now + Duration::days(30), order.days),
            ClientState::WrongEku => (&ca, Profile::Server, vec![name.parse::<San>()?], now, order.days),
            ClientState::ForeignCa => (foreign.as_ref().unwrap_or(&ca), Profile::Client, vec![], now, order.days),
        };
        let Leaf { der, serial, key_pkcs8 } = issuer.issue(name, profile, &sans, days, at)?;
        let status = match state {
            ClientState::Revoked => {
                let reason = RevocationReason::KeyCompromise;
                revoked.push(RevokedEntry { serial, revoked_at: now, reason });
                CertStatus::Revoked { at: now, reason: Some(reason) }
            }
            _ => CertStatus::Good,
        };
        let ocsp = issuer.ocsp(&serial, status, now, order.days)?;
        certificates.push(FixtureCert {
            name: name.clone(),
            role: Role::Client,
            state: *state,
            der,
            key_pkcs8,
            chain: chain(issuer),
            ocsp: Some(ocsp),
        });
    }
    for names in &order.servers {
        let Some(first) = names.first() else { continue };
        let name = first.to_string();
        let Leaf { der, serial, key_pkcs8 } = ca.issue(&name, Profile::Server, names, order.days, now)?;
        let ocsp = ca.ocsp(&serial, CertStatus::Good, now, order.days)?;
        certificates.push(FixtureCert {
            name,
            role: Role::Server,
            state: ClientState::Valid,
            der,
            key_pkcs8,
            chain: chain(&ca),
            ocsp: Some(ocsp),
        });
    }
    let crl = ca.authority.sign_crl_for(&revoked, now, Duration::days(order.days.into()), None)?;
    let root_crl = ca.root_crl(now, order.days)?;
    Ok(FixtureSet {
        root: ca.root_der.clone(),
        issuing_ca: ca.ca_der.clone(),
        crl,
        root_crl: Some(root_crl),
        foreign: foreign.map(|f| (f.root_der.clone(), f.ca_der.clone())),
        certificates,
    })
}

/// The ledger of an ephemeral CA: memory only, gone with it.
#[derive(Default)]
struct MemoryLedger {
    records: Mutex<HashMap<Serial, RequestAnswer>>,
    crl_number: Mutex<u64>,
}

impl Ledger for MemoryLedger {
    fn record_pending(
        &self,
        record: &CertRecord,
        _request_id: Option<&[u8; 16]>,
        _: bool,
    ) -> Result<(), RegistryError> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.contains_key(&record.serial) {
            return Err(RegistryError::SerialTaken(record.serial));
        }
        records.insert(record.serial, (record.clone(), None));
        Ok(())
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        match records.get_mut(serial) {
            Some((record, slot)) => {
                record.state = pki::registry::State::Issued;
                *slot = Some(der.to_vec());
                Ok(())
            }
            None => Err(RegistryError::NotFound(*serial)),
        }
    }

    fn find_request(&self, _request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        Ok(None)
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        let mut number = self.crl_number.lock().unwrap_or_else(PoisonError::into_inner);
        *number += 1;
        Ok(*number)
    }

    fn lookup(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(records.get(serial).map(|(record, _)| record.clone()))
    }
}
