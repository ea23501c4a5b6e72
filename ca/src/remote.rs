//! The signer process's socket: a narrow, versioned, length-prefixed protocol with six
//! requests — issue, sign a CRL, sign OCSP answers, CA info, and read the ledger's
//! certificates (for a registry catching up) — and nothing else.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON: `{"v":1,"op":...}`.
//! The signer ([`serve`]) re-validates everything it is sent (the CA validates the CSR and
//! applies its own profile) and records every issuance in its own ledger before signing; a
//! request id sent twice gets the same certificate. [`SignerClient`] is the other end.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pki::ocsp::{CertIdHash, CertStatus};
use pki::request::{OcspOrder, SignedOcsp};
use pki::{Profile, RevocationReason, RevokedEntry, San, Serial};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditLog;
use crate::generations::Authorities;
use crate::ledger::LogLedger;
use crate::responder::{OcspSigner, SignError};
use crate::{Error, IssueRequest};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The largest frame accepted: a CRL request with several million entries fits.
pub const MAX_FRAME: usize = 512 << 20;
/// At most this many serials in one [`Request::LedgerSince`] answer.
pub const LEDGER_PAGE: usize = 4096;
/// At most this many connections are served at once; more are refused.
const MAX_CONNECTIONS: usize = 256;

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&pki::encoding::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        pki::encoding::unhex(&text).ok_or_else(|| serde::de::Error::custom("invalid hex"))
    }
}

/// DER bytes on the wire, as hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Der(#[serde(with = "hex")] pub Vec<u8>);

/// The hash of an OCSP CertID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireHash {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// The status an OCSP answer is to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum WireStatus {
    /// Issued and not revoked.
    Good,
    /// Revoked at `revoked_at` (Unix seconds), with a reason code unless unspecified.
    Revoked {
        /// When.
        revoked_at: i64,
        /// RFC 5280 reason code.
        reason: Option<u8>,
    },
    /// Not known.
    Unknown,
}

/// One OCSP answer asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcspEntry {
    /// The serial asked about (its magnitude, big-endian).
    #[serde(with = "hex")]
    pub serial: Vec<u8>,
    /// The CertID hash.
    pub hash: WireHash,
    /// Its status.
    #[serde(flatten)]
    pub status: WireStatus,
}

impl From<&OcspOrder> for OcspEntry {
    fn from(order: &OcspOrder) -> Self {
        let hash = match order.hash {
            CertIdHash::Sha1 => WireHash::Sha1,
            CertIdHash::Sha256 => WireHash::Sha256,
        };
        let status = match order.status {
            CertStatus::Good => WireStatus::Good,
            CertStatus::Revoked { at, reason } => {
                WireStatus::Revoked { revoked_at: at.unix_timestamp(), reason: reason.map(RevocationReason::code) }
            }
            CertStatus::Unknown => WireStatus::Unknown,
        };
        Self { serial: order.serial.clone(), hash, status }
    }
}

impl OcspEntry {
    /// The order it asks for (about generation `issuer`'s certificates), or why it is
    /// malformed.
    pub fn order(&self, issuer: u16) -> Result<OcspOrder, String> {
        if self.serial.is_empty() || self.serial.len() > 32 {
            return Err(format!("a serial of {} bytes is not one a CA issues", self.serial.len()));
        }
        let serial = pki::encoding::hex(&self.serial);
        let hash = match self.hash {
            WireHash::Sha1 => CertIdHash::Sha1,
            WireHash::Sha256 => CertIdHash::Sha256,
        };
        let status = match self.status {
            WireStatus::Good => CertStatus::Good,
            WireStatus::Unknown => CertStatus::Unknown,
            WireStatus::Revoked { revoked_at, reason } => {
                let at = OffsetDateTime::from_unix_timestamp(revoked_at)
                    .map_err(|_| format!("revocation time of {serial} out of range"))?;
                let reason = reason
                    .map(|code| {
                        RevocationReason::from_code(code)
                            .ok_or_else(|| format!("unknown reason code {code} for {serial}"))
                    })
                    .transpose()?;
                CertStatus::Revoked { at, reason }
            }
        };
        Ok(OcspOrder { serial: self.serial.clone(), hash, status, issuer })
    }
}

/// One generation of the issuing CA in a `CaInfo` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGeneration {
    /// Its number.
    pub number: u16,
    /// From when it issues (Unix seconds).
    pub active_from: i64,
    /// Its certificate.
    pub der: Der,
}

fn first_generation() -> u16 {
    1
}

/// The bytes of one revoked certificate in a CRL request: serial (16), revocation time (Unix
/// seconds, 8, big-endian), CRLReason code (1). A million entries are 25 MB packed so (50 MB as
/// hex on the wire) and read back without an allocation per entry.
pub const CRL_ENTRY_LEN: usize = 25;

/// `entries` packed for a CRL request (see [`CRL_ENTRY_LEN`]).
pub fn pack_crl_entries(entries: &[RevokedEntry]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(entries.len() * CRL_ENTRY_LEN);
    for e in entries {
        packed.extend_from_slice(e.serial.as_bytes());
        packed.extend_from_slice(&e.revoked_at.unix_timestamp().to_be_bytes());
        packed.push(e.reason.code());
    }
    packed
}

/// A certificate as the signer's ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLedgerEntry {
    /// Where it is in the ledger: a later certificate is further on.
    pub at: u64,
    /// The account.
    pub account: String,
    /// The profile.
    pub profile: Profile,
    /// The issuing-CA generation that signed it.
    pub issuer: u16,
    /// Whether it supersedes the account's others.
    pub supersede: bool,
    /// The certificate, DER.
    pub der: Der,
}

/// What the signer is asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Issue a certificate for `account` from a CSR.
    Issue {
        /// The sender's id: sent again, it gets the same certificate.
        #[serde(with = "hex")]
        request_id: Vec<u8>,
        /// The CSR, DER.
        #[serde(with = "hex")]
        csr: Vec<u8>,
        /// The account.
        account: String,
        /// The profile.
        profile: Profile,
        /// Subject alternative names (server profile).
        sans: Vec<San>,
        /// Validity in days, or the CA's default.
        days: Option<u32>,
        /// Whether the certificate is to supersede the account's others in the registry (kept
        /// in the ledger for a registry catching up).
        #[serde(default)]
        supersede: bool,
    },
    /// The serials of the certificates the ledger holds durably from byte `after` on, up to
    /// byte `until` if given.
    LedgerSince {
        /// 0, or a `next` answered before.
        after: u64,
        /// Where to stop (an `end` answered before).
        until: Option<u64>,
        /// At most this many (at most [`LEDGER_PAGE`]).
        limit: u32,
    },
    /// One certificate of the ledger, as the registry records it.
    LedgerEntry {
        /// Its serial.
        serial: Serial,
    },
    /// Sign a CRL listing `entries`, valid for `validity_secs`.
    SignCrl {
        /// The revoked certificates, packed (see [`CRL_ENTRY_LEN`]).
        #[serde(with = "hex")]
        revoked: Vec<u8>,
        /// Seconds from thisUpdate to nextUpdate.
        validity_secs: i64,
        /// The issuing-CA generation whose CRL it is (its certificates only).
        #[serde(default = "first_generation")]
        issuer: u16,
        /// One partition of the CRL (every entry in it), or the whole CRL.
        #[serde(default)]
        shard: Option<pki::crl::Shard>,
    },
    /// Sign OCSP answers, one per entry.
    SignOcsp {
        /// What to answer.
        entries: Vec<OcspEntry>,
        /// The issuing-CA generation asked about.
        #[serde(default = "first_generation")]
        issuer: u16,
    },
    /// The issuing CA and root certificates.
    CaInfo,
}

/// What the signer answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// A certificate, signed and recorded in the ledger.
    Issued {
        /// Its serial.
        serial: Serial,
        /// The certificate, DER.
        #[serde(with = "hex")]
        der: Vec<u8>,
        /// The issuing-CA generation that signed it.
        #[serde(default = "first_generation")]
        issuer: u16,
    },
    /// Serials from the ledger ([`Request::LedgerSince`]).
    LedgerSince {
        /// The certificates, in ledger order.
        serials: Vec<Serial>,
        /// Where to ask from next.
        next: u64,
        /// The end of the ledger's durable part when asked.
        end: u64,
    },
    /// One certificate of the ledger ([`Request::LedgerEntry`]), if it holds one under the
    /// serial.
    LedgerEntry {
        /// The certificate.
        entry: Option<WireLedgerEntry>,
    },
    /// A CRL.
    Crl {
        /// The CRL, DER.
        #[serde(with = "hex")]
        der: Vec<u8>,
    },
    /// OCSP answers, in the order asked.
    Ocsp {
        /// The DER `OCSPResponse`s.
        answers: Vec<Der>,
        /// Their thisUpdate (Unix seconds).
        this_update: i64,
        /// Their nextUpdate (Unix seconds).
        next_update: i64,
        /// The responder certificate they carry (DER).
        #[serde(with = "hex")]
        responder: Vec<u8>,
    },
    /// The CA certificates.
    CaInfo {
        /// The issuing CA certificate that issues now, DER.
        #[serde(with = "hex")]
        ca: Vec<u8>,
        /// The root certificate, DER.
        #[serde(with = "hex")]
        root: Vec<u8>,
        /// Every generation of the issuing CA, oldest first.
        #[serde(default)]
        generations: Vec<WireGeneration>,
    },
    /// The request was refused (`rejected`: the sender's fault) or failed (`internal`).
    Error {
        /// `rejected`, `internal` or `version`.
        kind: String,
        /// Why.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// A connection to or from the signer: its Unix socket, or TLS over TCP.
pub trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

fn write_frame<T: Serialize>(stream: &mut (impl Write + ?Sized), body: T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&Envelope { v: VERSION, body }).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&bytes)
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
fn read_frame(stream: &mut (impl Read + ?Sized)) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    // Grown as bytes arrive, not allocated from the length alone: a peer that announces a large
    // frame and sends little holds little memory.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    stream.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

/// The signer: the issuing CA over its ledger, the root certificate, the OCSP responder, an
/// audit log, and what it certifies for servers.
pub struct SignerService {
    /// The CA, every generation of it.
    pub authorities: Authorities,
    /// The root certificate, DER.
    pub root_der: Vec<u8>,
    /// The names a server certificate may carry (`[ca] server_names` in inkan.toml, by default
    /// the service's own names): the signer certifies no other, whoever asks.
    pub server_names: Vec<pki::names::AllowedName>,
    /// The delegated OCSP responders (one per generation), when this signer answers OCSP.
    pub ocsp: Option<Vec<OcspSigner>>,
    /// Where signing events go.
    pub audit: Option<Arc<AuditLog>>,
    /// The ledger the authorities record in, read by a registry catching up.
    pub ledger: Option<Arc<LogLedger>>,
}

impl SignerService {
    fn audit(&self, event: &str, details: serde_json::Value) {
        if let Some(audit) = &self.audit
            && let Err(e) = audit.append(event, details)
        {
            eprintln!("signer: audit log: {e}");
        }
    }

    /// The hook that audits each certificate as it is signed (`certificate.signed`). The line
    /// is written before the certificate is released and synced within a second (the signer's
    /// checkpoint thread, or the service's ledger follower, which shares the file): the
    /// ledger, synced before the release, is the durable record of the signature, and a crash
    /// of the process loses no written line.
    pub fn signed_hook(audit: Arc<AuditLog>) -> crate::authority::SignedHook {
        Arc::new(move |record: &pki::registry::CertRecord| {
            let details =
                serde_json::json!({ "serial": record.serial, "account": record.account, "profile": record.profile });
            if let Err(e) = audit.append_deferred("certificate.signed", details) {
                eprintln!("signer: audit log: {e}");
            }
        })
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        let rejected = |message: String| Response::Error { kind: "rejected".into(), message };
        match request {
            Request::Issue { request_id, csr, account, profile, sans, days, supersede } => {
                let Ok(request_id) = <[u8; 16]>::try_from(request_id.as_slice()) else {
                    return rejected("request_id must be 16 bytes".into());
                };
                // What the signer certifies is its own decision, not the sender's: the OCSP
                // responder's certificate it makes for itself only, server names only inside
                // its policy.
                match profile {
                    Profile::OcspResponder => {
                        return rejected(
                            "the OCSP responder's certificate is the signer's own; it is not issued on request".into(),
                        );
                    }
                    Profile::Instance => {
                        return rejected(
                            "service-instance certificates open the signer itself: issue them offline with `inkan \
                             issue --profile service-instance` while the service is stopped"
                                .into(),
                        );
                    }
                    Profile::Server | Profile::ClientServer => {
                        if let Err(pki::Error::NameOutsidePolicy { name: outside, .. }) =
                            pki::names::check(&self.server_names, &sans)
                        {
                            return rejected(format!(
                                "{outside} is not a name this CA certifies for servers; allowed: {} ([ca] server_names)",
                                self.server_names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                    Profile::Client => {}
                }
                let request = IssueRequest {
                    csr: &csr,
                    account: &account,
                    profile,
                    sans: &sans,
                    days,
                    request_id: Some(request_id),
                    supersede,
                };
                let authority = self.authorities.current(OffsetDateTime::now_utc());
                match authority.issue(&request) {
                    Ok(issued) => {
                        // Fresh signings are audited by the CA's signed hook (see `signed_hook`),
                        // alongside the ledger's sync; a replay is audited here.
                        if issued.replayed {
                            self.audit(
                                "certificate.replayed",
                                serde_json::json!({ "serial": issued.record.serial, "account": account, "profile": profile }),
                            );
                        }
                        Response::Issued {
                            serial: issued.record.serial,
                            der: issued.der,
                            issuer: authority.generation(),
                        }
                    }
                    Err(e @ Error::RequestIdReused) => rejected(e.to_string()),
                    Err(Error::Pki(e @ (pki::Error::Lint { .. } | pki::Error::Encoding { .. }))) => {
                        eprintln!("signer: {e}");
                        Response::Error { kind: "internal".into(), message: e.to_string() }
                    }
                    Err(Error::Pki(e)) => rejected(e.to_string()),
                    Err(e) => {
                        eprintln!("signer: issuance failed: {e}");
                        Response::Error { kind: "internal".into(), message: e.to_string() }
                    }
                }
            }
            Request::SignCrl { revoked: packed, validity_secs, issuer, shard } => {
                let Some(authority) = self.authorities.get(issuer) else {
                    return rejected(format!("no issuing CA of generation {issuer} here"));
                };
                let now = OffsetDateTime::now_utc();
                let now = now.replace_nanosecond(0).unwrap_or(now);
                if !(3600..=366 * 86_400).contains(&validity_secs) {
                    return rejected("the CRL validity must be between one hour and a year".into());
                }
                if packed.len() % CRL_ENTRY_LEN != 0 {
                    return rejected(format!(
                        "the revoked list is {} bytes, not a whole number of {CRL_ENTRY_LEN}-byte entries",
                        packed.len()
                    ));
                }
                let mut revoked = Vec::with_capacity(packed.len() / CRL_ENTRY_LEN);
                // One check of the ledger per entry matters only when another generation exists.
                let several = self.authorities.all().nth(1).is_some();
                for entry in packed.chunks_exact(CRL_ENTRY_LEN) {
                    let (serial, rest) = entry.split_at(16);
                    let Some(serial) = Serial::from_bytes(serial) else {
                        return rejected(format!("{} is not a serial of inkan's", pki::encoding::hex(serial)));
                    };
                    let mut time = [0u8; 8];
                    time.copy_from_slice(&rest[..8]);
                    let (at, code) = (i64::from_be_bytes(time), rest[8]);
                    let Some(reason) = RevocationReason::from_code(code) else {
                        return rejected(format!("unknown reason code {code} for {serial}"));
                    };
                    let Ok(revoked_at) = OffsetDateTime::from_unix_timestamp(at) else {
                        return rejected(format!("revocation time of {serial} out of range"));
                    };
                    if revoked_at > now + time::Duration::minutes(5) {
                        return rejected(format!("{serial} is revoked in the future"));
                    }
                    // A CRL lists its own CA's certificates only.
                    if several
                        && let Ok(Some(record)) = authority.ledger().lookup(&serial)
                        && record.issuer != issuer
                    {
                        return rejected(format!("{serial} was issued by generation {}, not {issuer}", record.issuer));
                    }
                    revoked.push(RevokedEntry { serial, revoked_at, reason });
                }
                let count = revoked.len();
                match authority.sign_crl_for(&revoked, now, time::Duration::seconds(validity_secs), shard) {
                    Ok(der) => {
                        let mut line = serde_json::json!({ "entries": count, "issuer": issuer });
                        if let Some(shard) = shard {
                            line["shard"] = serde_json::json!([shard.index, shard.count]);
                        }
                        self.audit("crl.signed", line);
                        Response::Crl { der }
                    }
                    Err(e @ Error::CrlShard(_)) => rejected(e.to_string()),
                    Err(e) => Response::Error { kind: "internal".into(), message: e.to_string() },
                }
            }
            Request::SignOcsp { entries, issuer } => {
                let (Some(authority), Some(ocsp)) = (
                    self.authorities.get(issuer),
                    self.ocsp.as_ref().and_then(|all| all.iter().find(|o| o.generation() == issuer)),
                ) else {
                    return Response::Error {
                        kind: "internal".into(),
                        message: "this signer has no OCSP responder".into(),
                    };
                };
                let orders = match entries.iter().map(|e| e.order(issuer)).collect::<Result<Vec<_>, _>>() {
                    Ok(orders) => orders,
                    Err(message) => return rejected(message),
                };
                match ocsp.sign(authority, &orders, OffsetDateTime::now_utc()) {
                    Ok((answers, responder, made)) => {
                        if made {
                            let serial = pki::certificate::Summary::from_der(&responder).map(|s| s.serial).ok();
                            self.audit("signer.ocsp_certificate_issued", serde_json::json!({ "serial": serial }));
                        }
                        let (this_update, next_update) = answers
                            .first()
                            .map(|a| (a.this_update.unix_timestamp(), a.next_update.unix_timestamp()))
                            .unwrap_or_default();
                        Response::Ocsp {
                            answers: answers.into_iter().map(|a| Der(a.der)).collect(),
                            this_update,
                            next_update,
                            responder,
                        }
                    }
                    Err(SignError::Refused(refusal)) => rejected(refusal.to_string()),
                    Err(SignError::Failed(e)) => {
                        eprintln!("signer: OCSP signing failed: {e}");
                        Response::Error { kind: "internal".into(), message: e.to_string() }
                    }
                }
            }
            Request::LedgerSince { after, until, limit } => {
                let Some(ledger) = &self.ledger else { return rejected("this signer keeps no ledger file".into()) };
                match ledger.issued_since(after, until, (limit as usize).min(LEDGER_PAGE)) {
                    Ok(found) => Response::LedgerSince { serials: found.serials, next: found.next, end: found.end },
                    Err(e) => rejected(e.to_string()),
                }
            }
            Request::LedgerEntry { serial } => {
                let Some(ledger) = &self.ledger else { return rejected("this signer keeps no ledger file".into()) };
                match ledger.entry(&serial) {
                    Ok(entry) => Response::LedgerEntry {
                        entry: entry.map(|e| WireLedgerEntry {
                            at: e.at,
                            account: e.record.account,
                            profile: e.record.profile,
                            issuer: e.record.issuer,
                            supersede: e.supersede,
                            der: Der(e.der),
                        }),
                    },
                    Err(e) => Response::Error { kind: "internal".into(), message: e.to_string() },
                }
            }
            Request::CaInfo => Response::CaInfo {
                ca: self.authorities.current(OffsetDateTime::now_utc()).issuer().certificate_der().to_vec(),
                root: self.root_der.clone(),
                generations: self
                    .authorities
                    .all()
                    .map(|(from, ca)| WireGeneration {
                        number: ca.generation(),
                        active_from: from.unix_timestamp(),
                        der: Der(ca.issuer().certificate_der().to_vec()),
                    })
                    .collect(),
            },
        }
    }
}

/// The answer to one frame's bytes: a request of this version is handled, anything else gets
/// an error answer (nothing a sender writes makes the signer fail).
pub fn answer(service: &SignerService, frame: &[u8]) -> Response {
    match serde_json::from_slice::<Envelope<Request>>(frame) {
        Ok(Envelope { v: VERSION, body }) => service.handle(body),
        Ok(Envelope { v, .. }) => Response::Error {
            kind: "version".into(),
            message: format!("protocol version {v} is not spoken here; this signer speaks {VERSION}"),
        },
        Err(e) => match serde_json::from_slice::<serde_json::Value>(frame).ok().and_then(|v| v.get("v")?.as_u64()) {
            Some(v) if v != u64::from(VERSION) => Response::Error {
                kind: "version".into(),
                message: format!("protocol version {v} is not spoken here; this signer speaks {VERSION}"),
            },
            _ => Response::Error { kind: "rejected".into(), message: format!("malformed request: {e}") },
        },
    }
}

fn serve_connection(service: &SignerService, mut stream: impl Wire) -> std::io::Result<()> {
    while let Some(frame) = read_frame(&mut stream)? {
        write_frame(&mut stream, answer(service, &frame))?;
    }
    Ok(())
}

/// Binds the signer's socket at `path`, mode 0600, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    if UnixStream::connect(path).is_ok() {
        return Err(Error::Store(format!("{} is in use by a running signer", path.display())));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(Error::io("binding", path))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("setting mode of", path))?;
    Ok(listener)
}

/// Takes connections from `incoming` until `stop` is set (checked between connections; the
/// caller wakes the loop by connecting once), each on a thread of its own running `handle`, at
/// most [`MAX_CONNECTIONS`] at a time (more are closed at once).
fn accept<S: Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>>,
    stop: &AtomicBool,
    handle: impl Fn(S) + Clone + Send + 'static,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in incoming {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (active, handle) = (active.clone(), handle.clone());
        std::thread::spawn(move || {
            handle(stream);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Says why a connection ended, unless it just went away.
fn ended(peer: &str, e: &std::io::Error) {
    if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::BrokenPipe) {
        eprintln!("signer: connection{peer} ended: {e}");
    }
}

/// Serves TLS connections from service instances (their certificates checked in the handshake,
/// see [`crate::signer_tls`]) until `stop` is set, like [`serve`].
pub fn serve_tls(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<SignerService>,
    stop: Arc<AtomicBool>,
) {
    accept(listener.incoming(), &stop, move |tcp: std::net::TcpStream| {
        let peer = tcp.peer_addr().map(|a| format!(" from {a}")).unwrap_or_default();
        let served = (|| -> std::io::Result<()> {
            // The handshake too must come within the idle limit.
            tcp.set_read_timeout(Some(IDLE))?;
            tcp.set_nodelay(true)?;
            let conn = rustls::ServerConnection::new(tls.clone()).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            serve_connection(&service, stream)
        })();
        if let Err(e) = served {
            ended(&peer, &e);
        }
    });
}

/// Serves connections until `stop` is set (checked between connections; the caller wakes
/// the accept loop by connecting once).
pub fn serve(listener: UnixListener, service: Arc<SignerService>, stop: Arc<AtomicBool>) {
    accept(listener.incoming(), &stop, move |stream: UnixStream| {
        // An idle connection is closed after a while; the client reconnects.
        let served = stream.set_read_timeout(Some(IDLE)).and_then(|()| serve_connection(&service, stream));
        if let Err(e) = served {
            ended("", &e);
        }
    });
}

/// Why a call to the signer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The signer is not running or not reachable; nothing was done.
    #[error("the signer is not reachable at {at}: {source}")]
    Unavailable {
        /// Its socket or address.
        at: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request was refused.
    #[error("{0}")]
    Rejected(String),
    /// The signer failed.
    #[error("signer: {0}")]
    Internal(String),
}

/// Where the signer listens.
enum Endpoint {
    /// Its Unix socket.
    Unix(PathBuf),
    /// TCP with mutual TLS: the address, the name its certificate must carry, and the client's
    /// TLS configuration (the CA to trust, this instance's certificate).
    Tls { address: String, name: rustls_pki_types::ServerName<'static>, config: Arc<rustls::ClientConfig> },
}

/// A connection pool to the signer.
pub struct SignerClient {
    endpoint: Endpoint,
    idle: Mutex<Vec<Box<dyn Wire>>>,
}

impl std::fmt::Debug for SignerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerClient").field("at", &self.describe()).finish_non_exhaustive()
    }
}

/// How long a reply may take.
const REPLY_WITHIN: Duration = Duration::from_secs(120);
/// How long the signer keeps an idle connection.
const IDLE: Duration = Duration::from_secs(300);

impl SignerClient {
    /// A client of the signer at `path` (nothing is connected yet).
    pub fn new(path: &Path) -> Self {
        Self { endpoint: Endpoint::Unix(path.to_owned()), idle: Mutex::new(Vec::new()) }
    }

    /// A client of the signer listening with TLS at `address` (HOST:PORT), whose certificate
    /// names `name`, presenting `tls`'s client certificate.
    pub fn tls(address: &str, name: &str, tls: &crate::signer_tls::ClientSide) -> Result<Self, Error> {
        let name = rustls_pki_types::ServerName::try_from(name.to_owned())
            .map_err(|_| Error::Store(format!("{name:?} is not a DNS name or IP address")))?;
        Ok(Self {
            endpoint: Endpoint::Tls { address: address.to_owned(), name, config: tls.config() },
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Where the signer is, for messages.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Tls { address, .. } => format!("{address} (TLS)"),
        }
    }

    fn connect(&self) -> std::io::Result<Box<dyn Wire>> {
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(REPLY_WITHIN))?;
                Ok(Box::new(stream))
            }
            Endpoint::Tls { address, name, config } => {
                let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing");
                for addr in std::net::ToSocketAddrs::to_socket_addrs(address.as_str())? {
                    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                        Ok(tcp) => {
                            tcp.set_read_timeout(Some(REPLY_WITHIN))?;
                            tcp.set_nodelay(true)?;
                            let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                                .map_err(std::io::Error::other)?;
                            let mut stream = rustls::StreamOwned::new(conn, tcp);
                            // The handshake now, so a refusal shows as the signer being unreachable.
                            while stream.conn.is_handshaking() {
                                stream.conn.complete_io(&mut stream.sock)?;
                            }
                            return Ok(Box::new(stream));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    fn call_once(&self, stream: &mut dyn Wire, request: &Request) -> std::io::Result<Response> {
        write_frame(stream, request)?;
        stream.flush()?;
        let frame = read_frame(stream)?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let envelope: Envelope<Response> = serde_json::from_slice(&frame).map_err(std::io::Error::other)?;
        Ok(envelope.body)
    }

    /// Sends one request; a pooled connection that turns out dead is replaced once.
    pub fn call(&self, request: &Request) -> Result<Response, RemoteError> {
        let unavailable = |source| RemoteError::Unavailable { at: self.describe(), source };
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let fresh = || -> Result<(Response, Box<dyn Wire>), RemoteError> {
            let mut stream = self.connect().map_err(unavailable)?;
            self.call_once(stream.as_mut(), request).map(|r| (r, stream)).map_err(unavailable)
        };
        let (response, stream) = match pooled {
            Some(mut stream) => match self.call_once(stream.as_mut(), request) {
                Ok(response) => (response, stream),
                Err(_) => fresh()?,
            },
            None => fresh()?,
        };
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(stream);
        match response {
            Response::Error { kind, message } if kind == "rejected" => Err(RemoteError::Rejected(message)),
            Response::Error { message, .. } => Err(RemoteError::Internal(message)),
            other => Ok(other),
        }
    }

    /// Issue a certificate; the request must carry its id (sent again, it gets the same
    /// certificate).
    pub fn issue(&self, request: &IssueRequest<'_>) -> Result<(Serial, Vec<u8>, u16), RemoteError> {
        let request_id = request
            .request_id
            .ok_or_else(|| RemoteError::Internal("an issuance sent to the signer needs a request id".into()))?;
        let request = Request::Issue {
            request_id: request_id.to_vec(),
            csr: request.csr.to_vec(),
            account: request.account.to_owned(),
            profile: request.profile,
            sans: request.sans.to_vec(),
            days: request.days,
            supersede: request.supersede,
        };
        match self.call(&request)? {
            Response::Issued { serial, der, issuer } => Ok((serial, der, issuer)),
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// The serials of the certificates the signer's ledger holds durably from byte `after` on
    /// (up to byte `until`, at most `limit`), where to ask from next, and the ledger's durable
    /// end.
    pub fn ledger_since(
        &self,
        after: u64,
        until: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<Serial>, u64, u64), RemoteError> {
        match self.call(&Request::LedgerSince { after, until, limit })? {
            Response::LedgerSince { serials, next, end } => Ok((serials, next, end)),
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// The certificate the signer's ledger holds under `serial`, if any.
    pub fn ledger_entry(&self, serial: &Serial) -> Result<Option<WireLedgerEntry>, RemoteError> {
        match self.call(&Request::LedgerEntry { serial: *serial })? {
            Response::LedgerEntry { entry } => Ok(entry),
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Sign generation `issuer`'s CRL of `entries`, or with `shard` that partition of it.
    pub fn sign_crl(
        &self,
        issuer: u16,
        entries: &[RevokedEntry],
        validity: time::Duration,
        shard: Option<pki::crl::Shard>,
    ) -> Result<Vec<u8>, RemoteError> {
        let revoked = pack_crl_entries(entries);
        match self.call(&Request::SignCrl { revoked, validity_secs: validity.whole_seconds(), issuer, shard })? {
            Response::Crl { der } => Ok(der),
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Signed OCSP answers about generation `issuer`'s certificates, one per order, and the
    /// responder certificate they carry.
    pub fn sign_ocsp(&self, issuer: u16, orders: &[OcspOrder]) -> Result<(Vec<SignedOcsp>, Vec<u8>), RemoteError> {
        let entries = orders.iter().map(OcspEntry::from).collect();
        match self.call(&Request::SignOcsp { entries, issuer })? {
            Response::Ocsp { answers, this_update, next_update, responder } => {
                let time = |t| {
                    OffsetDateTime::from_unix_timestamp(t)
                        .map_err(|_| RemoteError::Internal(format!("OCSP answer time {t} out of range")))
                };
                let (this_update, next_update) = (time(this_update)?, time(next_update)?);
                if answers.len() != orders.len() {
                    return Err(RemoteError::Internal(format!(
                        "{} OCSP answers for {} orders",
                        answers.len(),
                        orders.len()
                    )));
                }
                let answers =
                    answers.into_iter().map(|Der(der)| SignedOcsp { der, this_update, next_update }).collect();
                Ok((answers, responder))
            }
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Every generation of the issuing CA (number, from when it issues, DER) and the root
    /// certificate (DER).
    pub fn ca_info(&self) -> Result<(Vec<crate::generations::GenerationCertificate>, Vec<u8>), RemoteError> {
        match self.call(&Request::CaInfo)? {
            Response::CaInfo { ca, root, generations } => {
                let mut list = Vec::with_capacity(generations.len().max(1));
                for g in generations {
                    let from = OffsetDateTime::from_unix_timestamp(g.active_from)
                        .map_err(|_| RemoteError::Internal("a generation's time is out of range".into()))?;
                    list.push((g.number, from, g.der.0));
                }
                if list.is_empty() {
                    list.push((1, OffsetDateTime::UNIX_EPOCH, ca));
                }
                Ok((list, root))
            }
            other => Err(RemoteError::Internal(format!("unexpected answer {other:?}"))),
        }
    }
}
