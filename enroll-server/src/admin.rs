//! Operator commands, one implementation for both paths: the CLI calls [`execute`] directly
//! when no service runs, and sends the same [`AdminRequest`] over the admin socket
//! (`DATA_DIR/admin.sock`, mode 0600) when `serve` holds the stores (sled allows one process).
//!
//! The socket protocol: one JSON request per line, one JSON response line, then close.

pub use crate::ports::{SnapshotStore, Snapshotter};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pki::registry::{CertRecord, Registry, Status};
use pki::request::{IssueError, IssueOrder, Issuer};
use pki::{Profile, RevocationReason, San, Serial};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::accounts::{Account, Accounts, Password, Role};
use crate::ports::{Audit, Events};
use crate::revocation;
use crate::state::Shared;
use crate::users::{self, Actor};

/// A command.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Export the stores for a backup (into DATA_DIR/snapshot/).
    Snapshot,
    /// Create an account.
    UserAdd {
        /// Login ID.
        login_id: String,
        /// Role.
        role: Role,
        /// A general user's master.
        master: Option<String>,
        /// Initial password.
        password: SecretString,
    },
    /// All accounts.
    UserList,
    /// Unlock an account.
    UserUnlock {
        /// Login ID.
        login_id: String,
    },
    /// Set a password.
    UserPasswd {
        /// Login ID.
        login_id: String,
        /// New password.
        password: SecretString,
    },
    /// Certificates, filtered.
    List {
        /// Only valid certificates expiring within this many seconds.
        expiring_secs: Option<i64>,
        /// Only revoked and superseded ones.
        revoked: bool,
        /// Only this account's.
        account: Option<String>,
        /// At most this many (the first in notAfter order with `expiring_secs`).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// How many certificates there are of each status.
    Count {
        /// Also how many valid ones expire within this many seconds.
        #[serde(default)]
        expiring_secs: Option<i64>,
    },
    /// One certificate.
    Show {
        /// Its serial.
        serial: Serial,
    },
    /// Revoke a certificate.
    Revoke {
        /// Its serial.
        serial: Serial,
        /// Why.
        reason: RevocationReason,
    },
    /// Issue a certificate from a CSR.
    Issue {
        /// The CSR, PEM or DER (as sent; the CA decodes it).
        csr: Vec<u8>,
        /// The account.
        account: String,
        /// The profile.
        profile: Profile,
        /// Subject alternative names.
        sans: Vec<San>,
        /// Validity in days.
        days: Option<u32>,
    },
    /// Sign and publish the issuing CA's CRL.
    Crl,
    /// Set an account's confirmation password.
    UserConfirmation {
        /// The account.
        login_id: String,
        /// The new confirmation password.
        password: SecretString,
    },
    /// Give a master a new customer card (お客様カード); the card comes back once.
    UserCard {
        /// The account.
        login_id: String,
    },
    /// Import hardware-token seeds (read from a PSKC file by the CLI).
    OtpImport {
        /// The seeds.
        seeds: Vec<SeedWire>,
    },
    /// Set a master's contract: personal (users may choose no code at login) or business, and
    /// whether it requires OTP.
    UserContract {
        /// The master.
        login_id: String,
        /// Personal.
        personal: bool,
        /// OTP required.
        #[serde(default)]
        otp_required: bool,
        /// The contract's OTP time step (30 or 60); `None`: `[otp] step_secs`.
        #[serde(default)]
        otp_step_secs: Option<u32>,
    },
    /// OTP tokens, one line each.
    OtpList,
    /// Lift an account's OTP stop (利用停止解除).
    OtpUnlock {
        /// The account.
        login_id: String,
    },
    /// Revoke an account's OTP token (失効).
    OtpRevoke {
        /// The account.
        login_id: String,
    },
    /// Set (or clear, with none) an account's allowed-names policy.
    UserNames {
        /// The account.
        login_id: String,
        /// The policy's entries.
        names: Vec<pki::names::AllowedName>,
    },
    /// Register an OAuth client.
    OauthClientAdd {
        /// It.
        spec: crate::oauth::operator::ClientSpec,
    },
    /// The OAuth clients.
    OauthClientList,
    /// Remove an OAuth client (its grants end).
    OauthClientRemove {
        /// Its ID.
        client_id: String,
    },
    /// Add a contract's resource with its inquiry PIN.
    ResourceAdd {
        /// Its ID; `None`: made up.
        id: Option<String>,
        /// The contract (master login ID).
        contract: String,
        /// What users see.
        label: String,
        /// The inquiry PIN.
        pin: SecretString,
    },
    /// The resources.
    ResourceList,
    /// Remove a resource.
    ResourceRemove {
        /// Its ID.
        id: String,
    },
    /// Make a one-time enrollment token (EST simpleenroll).
    TokenCreate {
        /// The account it enrolls.
        login_id: String,
        /// How long it works, in seconds.
        ttl_secs: i64,
    },
}

/// A password in a request: deserialised into a [`Password`], never printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a password for sending.
    pub fn new(password: &Password) -> Self {
        Self(password.reveal().to_owned())
    }

    fn into_password(mut self) -> Password {
        Password::new(std::mem::take(&mut self.0))
    }

    /// The text, for showing once to whoever asked for it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An account as shown to the operator (no password hash).
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AccountView {
    /// Login ID.
    pub login_id: String,
    /// Role.
    pub role: Role,
    /// The contract's master.
    pub master: String,
    /// Locked after wrong passwords.
    pub locked: bool,
    /// Active.
    pub active: bool,
    /// Wrong passwords in a row.
    pub failed_attempts: u32,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its allowed-names policy (empty: none).
    #[serde(default)]
    pub allowed_names: Vec<pki::names::AllowedName>,
    /// Whether a confirmation password is set.
    #[serde(default)]
    pub has_confirmation: bool,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self {
            login_id: a.login_id,
            role: a.role,
            master: a.master,
            locked: a.locked,
            active: a.active,
            failed_attempts: a.failed_attempts,
            created_at: a.created_at,
            allowed_names: a.allowed_names,
            has_confirmation: a.confirmation_hash.is_some(),
        }
    }
}

/// A hardware-token seed on its way to the service: the secret in hex.
#[derive(Deserialize, Serialize)]
pub struct SeedWire {
    /// Serial number.
    pub serial: String,
    /// The secret, hex.
    pub secret_hex: SecretString,
    /// Digits.
    pub digits: u32,
    /// Step in seconds.
    pub step_secs: u32,
}

impl std::fmt::Debug for SeedWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedWire").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl SeedWire {
    /// The wire form of `seed`.
    pub fn of(seed: &crate::pskc::Seed) -> Self {
        Self {
            serial: seed.serial.clone(),
            secret_hex: SecretString(pki::encoding::hex(&seed.secret)),
            digits: seed.digits,
            step_secs: seed.step_secs,
        }
    }

    fn into_seed(self) -> Result<crate::pskc::Seed, String> {
        let secret = pki::encoding::unhex(self.secret_hex.reveal())
            .filter(|s| (16..=64).contains(&s.len()))
            .ok_or_else(|| format!("token {}: not a secret", self.serial))?;
        Ok(crate::pskc::Seed {
            serial: self.serial,
            secret: zeroize::Zeroizing::new(secret),
            digits: self.digits,
            step_secs: self.step_secs,
        })
    }
}

/// An OTP token as shown to the operator (no secret).
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct OtpView {
    /// The login ID.
    pub login_id: String,
    /// pending, active or revoked.
    pub state: crate::stores::OtpState,
    /// OTP use stopped (利用停止).
    pub stopped: bool,
    /// Wrong codes in a row.
    pub failures: u32,
    /// The mail address given for it.
    pub mail: Option<String>,
    /// Issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Revoked, and when a new token may be issued.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When a new token may be issued (after a revocation).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reissue_from: Option<OffsetDateTime>,
}

impl OtpView {
    /// The view of `token`.
    pub fn of(token: &crate::stores::OtpToken, otp: &crate::otp::Otp) -> Self {
        Self {
            login_id: token.login_id.clone(),
            state: token.state,
            stopped: token.stopped,
            failures: token.failures,
            mail: token.mail.clone(),
            created_at: token.created_at,
            revoked_at: token.revoked_at,
            reissue_from: token.revoked_at.map(|at| otp.reissue_from(at)),
        }
    }
}

/// A command's result.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AdminReply {
    /// The stores, exported for a backup.
    Snapshot {
        /// One export file per store.
        stores: Vec<SnapshotStore>,
    },
    /// One account.
    Account {
        /// It.
        account: AccountView,
    },
    /// Accounts.
    Accounts {
        /// Them.
        accounts: Vec<AccountView>,
    },
    /// Certificate records.
    Certificates {
        /// Them.
        certificates: Vec<CertRecord>,
    },
    /// Certificates by status.
    Counts {
        /// By status, now.
        counts: pki::registry::StatusCounts,
        /// Valid ones that expire within the period asked for, if one was.
        expiring: Option<u64>,
    },
    /// What a revocation did.
    Revoked {
        /// It.
        revocation: revocation::Revocation,
    },
    /// One certificate.
    Certificate {
        /// Its record.
        record: CertRecord,
        /// The certificate DER, once issued.
        der: Option<Vec<u8>>,
    },
    /// A certificate was issued.
    Issued {
        /// Its record.
        record: CertRecord,
        /// The certificate, DER.
        der: Vec<u8>,
        /// The issuing CA certificate, DER.
        ca_der: Vec<u8>,
    },
    /// A CRL was signed.
    Crl {
        /// It, DER.
        der: Vec<u8>,
        /// How many entries it has.
        entries: usize,
    },
    /// Hardware-token seeds were imported.
    Imported {
        /// How many.
        count: usize,
    },
    /// A customer card, to print (its digits are secret).
    Card {
        /// The account.
        login_id: String,
        /// Its 40 digits, row by row.
        digits: SecretString,
    },
    /// OTP tokens.
    OtpTokens {
        /// Them.
        tokens: Vec<OtpView>,
    },
    /// A one-time enrollment token was made.
    Token {
        /// The account it enrolls.
        login_id: String,
        /// Its secret: shown once, stored only as a hash.
        secret: SecretString,
        /// When it stops working.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// OAuth clients.
    OauthClients {
        /// Them.
        clients: Vec<crate::stores::oauth::OAuthClient>,
    },
    /// Resources.
    Resources {
        /// Them.
        resources: Vec<crate::oauth::operator::ResourceView>,
    },
    /// Done; the message says what happened.
    Done {
        /// What.
        message: String,
    },
    /// The command failed; the message says why.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// What a command may touch. Commands that need a part that is `None` fail with a message
/// (the CLI opens only what a command needs).
pub struct AdminContext<'a> {
    /// The accounts.
    pub accounts: Option<&'a Accounts>,
    /// The OTP tokens (opened with the accounts).
    pub otp: Option<&'a crate::otp::Otp>,
    /// The OAuth authorization server (opened with the accounts).
    pub oauth: Option<&'a crate::oauth::OAuth>,
    /// The registry.
    pub registry: Option<&'a dyn Registry>,
    /// The CA.
    pub issuer: Option<&'a dyn Issuer>,
    /// The audit trail.
    pub audit: &'a dyn Audit,
    /// What follows a revocation or issuance (the running service's [`Events`]).
    pub events: &'a dyn Events,
    /// Exports the stores, in a running service.
    pub snapshot: Option<&'a Snapshotter>,
}

fn need<'a, T: ?Sized>(part: Option<&'a T>, what: &str) -> Result<&'a T, String> {
    part.ok_or_else(|| format!("internal: the {what} is not open for this command"))
}

/// Runs one command (blocking: it may hash passwords, flush and sign).
pub fn execute(ctx: &AdminContext<'_>, request: AdminRequest) -> AdminReply {
    match run(ctx, request) {
        Ok(reply) => reply,
        Err(message) => AdminReply::Error { message },
    }
}

fn run(ctx: &AdminContext<'_>, request: AdminRequest) -> Result<AdminReply, String> {
    let now = OffsetDateTime::now_utc();
    let text = |e: &dyn std::fmt::Display| e.to_string();
    Ok(match request {
        AdminRequest::Snapshot => AdminReply::Snapshot { stores: need(ctx.snapshot, "store export")?()? },
        AdminRequest::UserAdd { login_id, role, master, password } => {
            let accounts = need(ctx.accounts, "account store")?;
            let account = users::create(
                accounts,
                ctx.audit,
                Actor::Operator,
                &login_id,
                role,
                master.as_deref(),
                &password.into_password(),
            )
            .map_err(|e| e.message)?;
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::UserList => {
            let accounts = need(ctx.accounts, "account store")?.list().map_err(|e| text(&e))?;
            AdminReply::Accounts { accounts: accounts.into_iter().map(Into::into).collect() }
        }
        AdminRequest::UserUnlock { login_id } => {
            let accounts = need(ctx.accounts, "account store")?;
            let account = users::unlock(accounts, ctx.audit, Actor::Operator, &login_id).map_err(|e| e.message)?;
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::UserConfirmation { login_id, password } => {
            let accounts = need(ctx.accounts, "account store")?;
            let account = users::set_confirmation(accounts, ctx.audit, &login_id, &password.into_password())
                .map_err(|e| e.message)?;
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::UserCard { login_id } => {
            let accounts = need(ctx.accounts, "account store")?;
            let otp = need(ctx.otp, "OTP store")?;
            let (account, card) = users::issue_card(accounts, otp, ctx.audit, &login_id).map_err(|e| e.message)?;
            let digits: String = card.to_bytes().iter().map(|d| char::from(b'0' + d)).collect();
            AdminReply::Card { login_id: account.login_id, digits: SecretString(digits) }
        }
        AdminRequest::OtpImport { seeds } => {
            let otp = need(ctx.otp, "OTP store")?;
            let seeds: Vec<crate::pskc::Seed> = seeds.into_iter().map(SeedWire::into_seed).collect::<Result<_, _>>()?;
            let count = otp.import(&seeds, now).map_err(|e| e.message)?;
            let serials: Vec<&str> = seeds.iter().map(|s| s.serial.as_str()).collect();
            ctx.audit.record("otp.seeds_imported", serde_json::json!({ "by": "operator", "serials": serials }));
            AdminReply::Imported { count }
        }
        AdminRequest::UserContract { login_id, personal, otp_required, otp_step_secs } => {
            if otp_step_secs.is_some_and(|s| s != 30 && s != 60) {
                return Err("the OTP step is 30 or 60 seconds".into());
            }
            let accounts = need(ctx.accounts, "account store")?;
            match accounts.get(&login_id).map_err(|e| text(&e))? {
                Some(a) if a.role == Role::Master => {}
                Some(_) => return Err("a contract is set on its master user".into()),
                None => return Err(format!("no account with login ID {login_id:?}")),
            }
            let account =
                accounts.set_contract(&login_id, personal, otp_required, otp_step_secs).map_err(|e| text(&e))?;
            let kind = if personal { "personal" } else { "business" };
            ctx.audit.record(
                "user.contract_set",
                serde_json::json!({ "by": "operator", "login_id": login_id, "contract": kind, "otp_required": otp_required }),
            );
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::OtpList => {
            let otp = need(ctx.otp, "OTP store")?;
            let tokens = otp.list().map_err(|e| e.message)?;
            AdminReply::OtpTokens { tokens: tokens.iter().map(|t| OtpView::of(t, otp)).collect() }
        }
        AdminRequest::OtpUnlock { login_id } => {
            let otp = need(ctx.otp, "OTP store")?;
            let accounts = need(ctx.accounts, "account store")?;
            let token =
                users::unlock_otp(accounts, otp, ctx.audit, Actor::Operator, &login_id).map_err(|e| e.message)?;
            AdminReply::OtpTokens { tokens: vec![OtpView::of(&token, otp)] }
        }
        AdminRequest::OtpRevoke { login_id } => {
            let otp = need(ctx.otp, "OTP store")?;
            let accounts = need(ctx.accounts, "account store")?;
            let token =
                users::revoke_otp(accounts, otp, ctx.audit, Actor::Operator, &login_id, now).map_err(|e| e.message)?;
            AdminReply::OtpTokens { tokens: vec![OtpView::of(&token, otp)] }
        }
        AdminRequest::UserNames { login_id, names } => {
            let accounts = need(ctx.accounts, "account store")?;
            let account = users::set_allowed_names(accounts, ctx.audit, &login_id, names).map_err(|e| e.message)?;
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::UserPasswd { login_id, password } => {
            let accounts = need(ctx.accounts, "account store")?;
            let account = users::set_password(accounts, ctx.audit, &login_id, &password.into_password())
                .map_err(|e| e.message)?;
            AdminReply::Account { account: account.into() }
        }
        AdminRequest::List { expiring_secs, revoked, account, limit } => {
            let registry = need(ctx.registry, "registry")?;
            let expiring = expiring_secs.map(time::Duration::seconds);
            let until = expiring.map(|p| now.checked_add(p).ok_or("the period is too long")).transpose()?;
            let wanted = |r: &pki::registry::CertRecord| {
                let status = r.status(now);
                let expiring_ok = until.is_none_or(|u| status == Status::Valid && r.not_after <= u);
                let revoked_ok = !revoked || matches!(status, Status::Revoked | Status::Superseded);
                expiring_ok && revoked_ok
            };
            let limit = limit.map_or(usize::MAX, |n| n as usize);
            let mut records = match (&account, until) {
                // The expiry index in order, read only as far as the page needs.
                (None, Some(until)) => registry.expiring_first(now, until, limit, &wanted),
                (Some(account), _) => registry.by_account(account),
                (None, None) => registry.all(),
            }
            .map_err(|e| text(&e))?;
            records.retain(|r| wanted(r));
            if until.is_some() {
                records.sort_by_key(|r| r.not_after);
            }
            records.truncate(limit);
            AdminReply::Certificates { certificates: records }
        }
        AdminRequest::Count { expiring_secs } => {
            let registry = need(ctx.registry, "registry")?;
            let until = expiring_secs
                .map(|secs| now.checked_add(time::Duration::seconds(secs)).ok_or("the period is too long"))
                .transpose()?;
            let counts = registry.count_by_status(now).map_err(|e| text(&e))?;
            let expiring = until.map(|u| registry.count_valid_expiring(now, u)).transpose().map_err(|e| text(&e))?;
            AdminReply::Counts { counts, expiring }
        }
        AdminRequest::Show { serial } => {
            let registry = need(ctx.registry, "registry")?;
            let record = registry
                .get(&serial)
                .map_err(|e| text(&e))?
                .ok_or_else(|| format!("no certificate with serial {serial}"))?;
            let der = registry.certificate_der(&serial).map_err(|e| text(&e))?;
            AdminReply::Certificate { record, der }
        }
        AdminRequest::Revoke { serial, reason } => {
            let registry = need(ctx.registry, "registry")?;
            let revocation = revocation::revoke(registry, ctx.audit, ctx.events, Actor::Operator, serial, reason)
                .map_err(|e| e.message)?;
            AdminReply::Revoked { revocation }
        }
        AdminRequest::Issue { csr, account, profile, sans, days } => {
            let issuer = need(ctx.issuer, "CA")?;
            let registry = need(ctx.registry, "registry")?;
            let csr_der = pki::encoding::decode_csr(&csr).map_err(|e| format!("not issued: {e}"))?;
            let mut request_id = [0u8; 16];
            aws_lc_rs::rand::fill(&mut request_id).map_err(|_| "no randomness".to_owned())?;
            let order = IssueOrder { csr_der, account, profile, sans, days, request_id, supersede: false };
            let issued = issuer.issue(&order).map_err(|e| match e {
                IssueError::Rejected(m) => format!("not issued: {m}"),
                other => other.to_string(),
            })?;
            let record = registry
                .get(&issued.serial)
                .map_err(|e| text(&e))?
                .ok_or_else(|| format!("issued {} but the registry does not have it", issued.serial))?;
            tracing::info!(serial = %issued.serial, account = %record.account, "certificate issued by the operator");
            ctx.events.issued(&issued.serial);
            ctx.audit
                .record("operator.issue", serde_json::json!({ "serial": issued.serial, "account": record.account }));
            AdminReply::Issued { record, der: issued.der, ca_der: issuer.ca_certificate().to_vec() }
        }
        AdminRequest::TokenCreate { login_id, ttl_secs } => {
            let accounts = need(ctx.accounts, "account store")?;
            let ttl = time::Duration::seconds(ttl_secs);
            let (secret, token) = users::create_token(accounts, ctx.audit, Actor::Operator, &login_id, ttl, now)
                .map_err(|e| e.message)?;
            AdminReply::Token { login_id, secret: SecretString(secret.to_string()), expires_at: token.expires_at }
        }
        AdminRequest::OauthClientAdd { spec } => {
            let client = crate::oauth::operator::add_client(need(ctx.oauth, "OAuth store")?, ctx.audit, spec, now)?;
            AdminReply::OauthClients { clients: vec![client] }
        }
        AdminRequest::OauthClientList => {
            AdminReply::OauthClients { clients: need(ctx.oauth, "OAuth store")?.store.clients().map_err(|e| text(&e))? }
        }
        AdminRequest::OauthClientRemove { client_id } => {
            let ended =
                crate::oauth::operator::remove_client(need(ctx.oauth, "OAuth store")?, ctx.audit, &client_id, now)?;
            AdminReply::Done { message: format!("client {client_id} removed; {ended} grant(s) ended") }
        }
        AdminRequest::ResourceAdd { id, contract, label, pin } => {
            let resource = crate::oauth::operator::add_resource(
                need(ctx.oauth, "OAuth store")?,
                need(ctx.accounts, "account store")?,
                ctx.audit,
                crate::oauth::operator::ResourceSpec { id, contract, label },
                &pin.into_password(),
                now,
            )?;
            AdminReply::Resources { resources: vec![resource] }
        }
        AdminRequest::ResourceList => AdminReply::Resources {
            resources: need(ctx.oauth, "OAuth store")?
                .store
                .resources()
                .map_err(|e| text(&e))?
                .into_iter()
                .map(Into::into)
                .collect(),
        },
        AdminRequest::ResourceRemove { id } => {
            crate::oauth::operator::remove_resource(need(ctx.oauth, "OAuth store")?, ctx.audit, &id)?;
            AdminReply::Done { message: format!("resource {id} removed") }
        }
        AdminRequest::Crl => {
            let issuer = need(ctx.issuer, "CA")?;
            let registry = need(ctx.registry, "registry")?;
            let der = issuer.sign_crl().map_err(|e| text(&e))?;
            let entries = registry.revoked_unexpired(now).map_err(|e| text(&e))?.len();
            AdminReply::Crl { der, entries }
        }
    })
}

/// The largest request line accepted on the socket.
const MAX_REQUEST: usize = 1 << 20;
/// The largest answer the CLI reads: a listing of about three million certificates.
const MAX_REPLY: u64 = 1 << 30;

/// Binds the admin socket at `path` (mode 0600), replacing one left by a crash. The service
/// binds it before it gives up its privileges, then serves it with [`serve_socket`].
pub fn bind_socket(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if path.exists() {
        // A socket left by a crash: nobody answers on it (the data directory's lock already
        // proved no other service runs on it).
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the admin socket `listener` for `state` until `stop` turns true.
pub async fn serve_socket(
    listener: std::os::unix::net::UnixListener,
    state: Shared,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, state).await {
                tracing::warn!(error = %e, "admin request failed");
            }
        });
    }
    Ok(())
}

async fn answer(stream: UnixStream, state: Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    reader.read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<AdminRequest>(&line) {
        Ok(request) => tokio::task::spawn_blocking(move || {
            let ctx = AdminContext {
                accounts: Some(&state.accounts),
                otp: Some(&state.otp),
                oauth: Some(&state.oauth),
                registry: Some(state.registry.as_ref()),
                issuer: Some(state.issuer.as_ref()),
                audit: state.audit.as_ref(),
                events: state.as_ref(),
                snapshot: state.snapshotter(),
            };
            execute(&ctx, request)
        })
        .await
        .unwrap_or_else(|e| AdminReply::Error { message: format!("internal: {e}") }),
        Err(e) => AdminReply::Error { message: format!("bad request: {e}") },
    };
    let mut out =
        serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"result\":\"error\",\"message\":\"encoding\"}".to_vec());
    if out.len() as u64 >= MAX_REPLY {
        let message = format!(
            "the answer is {} MiB, more than the {} MiB the CLI reads; ask for less (for `inkan list`: --limit, \
             --account or --expiring)",
            out.len() >> 20,
            MAX_REPLY >> 20
        );
        out = serde_json::to_vec(&AdminReply::Error { message }).unwrap_or_default();
    }
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends one request to a running service. `Ok(None)` when no service listens on `path`.
pub fn call(path: &Path, request: &AdminRequest) -> std::io::Result<Option<AdminReply>> {
    use std::io::{BufRead, Read, Write};
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = Vec::new();
    std::io::BufReader::new(stream).take(MAX_REPLY).read_until(b'\n', &mut reply)?;
    if reply.last() != Some(&b'\n') {
        let why = if reply.len() as u64 >= MAX_REPLY {
            format!(
                "the service's answer is larger than {} MiB; ask for less (for `inkan list`: --limit, --account or \
                 --expiring)",
                MAX_REPLY >> 20
            )
        } else {
            format!("the service's answer was cut off after {} bytes (did it stop?)", reply.len())
        };
        return Err(std::io::Error::other(why));
    }
    serde_json::from_slice(&reply).map(Some).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that stops in the middle of its answer: the CLI says the answer was cut off,
    /// not that JSON ended early.
    #[test]
    fn an_answer_cut_off_is_named() {
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut request = String::new();
            std::io::BufReader::new(&stream).read_line(&mut request).expect("request");
            (&stream).write_all(br#"{"result":"certificates","certificates":[{"serial":"#).expect("write");
        });
        let error = call(&path, &AdminRequest::Crl).expect_err("cut off");
        server.join().expect("server");
        assert!(error.to_string().contains("cut off after 51 bytes"), "{error}");
    }
}
