//! The service's own stores, each behind a trait: the accounts and the log of delivered expiry
//! notices (the certificate registry is `pki::registry::Registry`). [`sled`] is the embedded
//! implementation; [`conformance`] is the suite any implementation must pass.
//!
//! Every change is durable before the call returns, and [`AccountStore::update`] is atomic: a
//! read-modify-write that concurrent writers (in this process or, for a shared database, in
//! another) cannot interleave with.

pub mod conformance;
pub mod migrate;
pub mod oauth;
pub mod postgres;
mod postgres_sessions;
mod postgres_shared;
pub mod sessions;
pub mod shared;
pub mod sled;
pub mod sled_oauth;

use std::fmt;
use std::sync::Arc;

use pki::Serial;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Every web store of one backend, each behind its trait.
#[derive(Clone)]
pub struct WebStores {
    /// The accounts.
    pub accounts: Arc<dyn AccountStore>,
    /// The log of delivered expiry notices.
    pub notices: Arc<dyn NoticeStore>,
    /// The OTP tokens and hardware seeds.
    pub otp: Arc<dyn OtpStore>,
    /// The mail outbox.
    pub outbox: Arc<dyn MailStore>,
    /// The OAuth clients, flows, grants and tokens.
    pub oauth: Arc<dyn oauth::OAuthStore>,
    /// Sessions and enrollment tickets.
    pub sessions: Arc<dyn sessions::SessionStore>,
    /// The background duties' lease and the shared CRLs.
    pub leases: Arc<dyn shared::LeaseStore>,
}

impl fmt::Debug for WebStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebStores").finish_non_exhaustive()
    }
}

/// A user's role in its contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The contract's administrator (MasterID): adds and unlocks general users.
    Master,
    /// A user added by the master.
    General,
}

impl Role {
    /// `master` or `general`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::General => "general",
        }
    }
}

/// One account as stored.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// The login ID; also the common name of the account's certificates.
    pub login_id: String,
    /// Master or general.
    pub role: Role,
    /// The contract's master login ID (the account itself for a master).
    pub master: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Wrong passwords since the last right one.
    pub failed_attempts: u32,
    /// Locked after too many wrong passwords.
    pub locked: bool,
    /// Inactive accounts cannot log in or obtain certificates.
    pub active: bool,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The DNS names and IP addresses its machines may have certified (EST labels of the server
    /// and client-server profiles), set by the operator; empty: client certificates only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_names: Vec<pki::names::AllowedName>,
    /// argon2id PHC string of the confirmation password (確認用パスワード) a master gives for
    /// its administrative actions, set by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_hash: Option<String>,
    /// Its customer card (お客様カード), sealed with the service's key: when set, the master
    /// confirms with two cells of it instead of a static confirmation password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_sealed: Option<Vec<u8>>,
    /// A personal contract (個人): its users may choose not to give a code at login; a business
    /// contract (法人, the default) always asks. Set on the master.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
    /// The contract requires OTP: its users without a token in use can only set one up. Set on
    /// the master (`[otp] required` requires it of every contract).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub otp_required: bool,
    /// The contract's OTP time step in seconds (the bank apps use 60), set on the master;
    /// `None`: `[otp] step_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_step_secs: Option<u32>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("login_id", &self.login_id)
            .field("role", &self.role)
            .field("master", &self.master)
            .field("failed_attempts", &self.failed_attempts)
            .field("locked", &self.locked)
            .field("active", &self.active)
            .field("allowed_names", &self.allowed_names)
            .finish_non_exhaustive()
    }
}

/// A store failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Wraps any error.
    pub fn from_display(e: impl fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// The accounts.
pub trait AccountStore: Send + Sync {
    /// One account.
    fn get(&self, login_id: &str) -> Result<Option<Account>, StoreError>;

    /// All accounts, by login ID.
    fn list(&self) -> Result<Vec<Account>, StoreError>;

    /// Adds `account`; `false` (and nothing changed) when its login ID is taken.
    fn insert(&self, account: &Account) -> Result<bool, StoreError>;

    /// Applies `change` to the account atomically and durably, and returns it as stored;
    /// `None` when there is no such account. `change` may run more than once (when another
    /// writer got there first), so it must depend on the account alone.
    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut Account)) -> Result<Option<Account>, StoreError>;

    /// Counts, durably, one failed login with an ID no account has, and returns the count. It
    /// is the write a wrong password makes to an account's count, made for unknown IDs so that
    /// both take the same time.
    fn count_unknown_login(&self) -> Result<u64, StoreError>;

    /// How many failed logins with unknown IDs were counted.
    fn unknown_logins(&self) -> Result<u64, StoreError>;

    /// Stores, durably, a one-time enrollment token under the SHA-256 of its secret.
    fn put_token(&self, hash: &[u8; 32], token: &EnrollToken) -> Result<(), StoreError>;

    /// Takes the token with this hash out of the store, durably and atomically: of concurrent
    /// callers, one gets it.
    fn take_token(&self, hash: &[u8; 32]) -> Result<Option<EnrollToken>, StoreError>;
}

/// A one-time enrollment token (EST `simpleenroll` with the token as the Basic password),
/// as stored: never its secret, which only its hash names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollToken {
    /// The account it enrolls.
    pub login_id: String,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who made it (`operator`, or a master's login ID).
    pub created_by: String,
}

/// The one-time-password token (トークン) of one login ID, as stored.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtpToken {
    /// The login ID it belongs to (one token per login ID).
    pub login_id: String,
    /// The ID the authenticator app shows beside the service ID (ユーザID): random, not the
    /// login ID.
    pub user_id: String,
    /// The secret, sealed with the service's OTP key (AES-256-GCM: nonce, then ciphertext and
    /// tag; the login ID is the associated data).
    pub sealed_secret: Vec<u8>,
    /// Time step in seconds.
    pub step_secs: u32,
    /// Digits of a code.
    pub digits: u32,
    /// The mail address the user gave for the token.
    pub mail: Option<String>,
    /// Where it stands.
    pub state: OtpState,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The last time step whose code was accepted: no code of that step or before is accepted
    /// again.
    pub last_step: Option<u64>,
    /// Wrong codes in a row.
    pub failures: u32,
    /// OTP use stopped (利用停止) after too many wrong codes: lifted by the master (general
    /// users) or the operator, never by time.
    pub stopped: bool,
    /// The app's provisioning of a pending token: the activation password's hash, wrong tries,
    /// and until when. `None` once the app took the secret.
    pub activation: Option<Activation>,
    /// The serial number of a hardware token (imported from PSKC); `None` for an app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Whether a code is asked at login (a personal contract may choose no).
    #[serde(default = "yes")]
    pub ask_at_login: bool,
}

fn yes() -> bool {
    true
}

/// A hardware token's seed, imported by the operator (PSKC), waiting for its user.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HardwareSeed {
    /// The serial number printed on the token.
    pub serial: String,
    /// The secret, sealed with the service's key (associated data `hw:SERIAL`).
    pub sealed_secret: Vec<u8>,
    /// Digits of a code.
    pub digits: u32,
    /// Time step in seconds.
    pub step_secs: u32,
    /// When it was imported.
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    /// The login ID that registered it.
    pub assigned_to: Option<String>,
}

impl fmt::Debug for HardwareSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwareSeed")
            .field("serial", &self.serial)
            .field("assigned_to", &self.assigned_to)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OtpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpToken")
            .field("login_id", &self.login_id)
            .field("user_id", &self.user_id)
            .field("state", &self.state)
            .field("last_step", &self.last_step)
            .field("failures", &self.failures)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// Where a token stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtpState {
    /// Issued, waiting for its first code (認証確認).
    Pending,
    /// In use.
    Active,
    /// Revoked (失効): a new token may be issued once the waiting time is over.
    Revoked,
}

/// The app-provisioning handle of a pending token.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Activation {
    /// argon2id PHC string of the activation password (利用開始パスワード).
    pub password_hash: String,
    /// Wrong activation passwords so far (locked at 5).
    pub tries: u32,
    /// Until when the app may take the secret.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// OTP tokens, one per login ID.
pub trait OtpStore: Send + Sync {
    /// The token of `login_id`.
    fn get(&self, login_id: &str) -> Result<Option<OtpToken>, StoreError>;

    /// Stores `token`, durably, replacing the login ID's token.
    fn put(&self, token: &OtpToken) -> Result<(), StoreError>;

    /// Applies `change` atomically and durably and returns the token as stored; `None` when the
    /// login ID has none. `change` may run more than once (another writer got there first):
    /// whatever it decides must come from the token it is given, and the last run counts.
    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut OtpToken)) -> Result<Option<OtpToken>, StoreError>;

    /// Every token, by login ID.
    fn list(&self) -> Result<Vec<OtpToken>, StoreError>;

    /// Stores hardware seeds, durably, all or none: `Err` naming the serials already stored
    /// (and nothing changed) when any is.
    fn put_seeds(&self, seeds: &[HardwareSeed]) -> Result<Result<(), Vec<String>>, StoreError>;

    /// The seed of `serial`.
    fn seed(&self, serial: &str) -> Result<Option<HardwareSeed>, StoreError>;

    /// Assigns the seed of `serial` to `login_id`, durably and atomically: `false` when it is
    /// gone or already assigned.
    fn assign_seed(&self, serial: &str, login_id: &str) -> Result<bool, StoreError>;

    /// Every seed, by serial.
    fn seeds(&self) -> Result<Vec<HardwareSeed>, StoreError>;
}

/// A mail notice in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxMail {
    /// The recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
    /// When the SMTP server took it; `None` while it waits.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
}

/// The mail outbox: each notice under a key of its own (`otp.issued:LOGIN:TIME`,
/// `expiry:SERIAL:DAYS`), queued once, kept once sent so that it is not queued again.
pub trait MailStore: Send + Sync {
    /// Queues `mail` under `key`, durably; `false` (nothing changed) when the key was queued
    /// before, sent or not.
    fn enqueue(&self, key: &str, mail: &OutboxMail) -> Result<bool, StoreError>;

    /// The mails not sent yet, by key.
    fn pending(&self) -> Result<Vec<(String, OutboxMail)>, StoreError>;

    /// Records, durably, that the mail under `key` was sent at `at`.
    fn mark_sent(&self, key: &str, at: OffsetDateTime) -> Result<(), StoreError>;
}

/// Which expiry notices were delivered: per certificate, the nearest threshold (in days)
/// notified.
pub trait NoticeStore: Send + Sync {
    /// The nearest threshold already notified for `serial`.
    fn last(&self, serial: &Serial) -> Result<Option<u32>, StoreError>;

    /// Records, durably, that the notice for `threshold` days was delivered.
    fn record(&self, serial: &Serial, threshold: u32) -> Result<(), StoreError>;
}
