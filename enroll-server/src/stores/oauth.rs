//! What the OAuth authorization server (API連携認証) keeps: registered clients, the contracts'
//! resources with their inquiry PINs, authorization requests in progress, codes, grants,
//! tokens and each user's risk profile (secret question, known devices and networks). Secrets
//! are stored hashed (tokens, codes, request URIs, device cookies: SHA-256; PINs and answers:
//! argon2id).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StoreError;

/// A third-party service registered by the operator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthClient {
    /// `client_id`.
    pub client_id: String,
    /// The service's name, shown to users.
    pub name: String,
    /// The company behind it, shown to users.
    pub company: String,
    /// Its redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
    /// How long its grants last, in days.
    pub grant_days: u32,
    /// Whether its users may log in with login ID + password instead of a certificate.
    pub allow_password_login: bool,
    /// `tls_client_auth_subject_dn` (RFC 8705): the subject of the certificate inkan issued to
    /// it, which it presents in the TLS handshake.
    pub tls_subject: String,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One of a contract's resources (an account at the bank) that per-resource scopes name.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resource {
    /// Its ID.
    pub id: String,
    /// The contract (its master's login ID).
    pub contract: String,
    /// What users see (普通預金 1234567).
    pub label: String,
    /// argon2id PHC string of its inquiry PIN (照会用暗証番号).
    pub pin_hash: String,
    /// The login IDs that registered the PIN (登録済).
    pub registered: Vec<String>,
    /// When the operator added it.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("id", &self.id)
            .field("contract", &self.contract)
            .field("label", &self.label)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

/// Where an authorization in progress stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlowStage {
    /// Pushed, not opened by a browser yet.
    Pushed,
    /// The user logs in.
    Login,
    /// The one-time password.
    Otp,
    /// The additional (risk-based) question.
    Question,
    /// Choosing among the scopes.
    Scopes,
    /// Choosing resources and registering their PINs.
    Resources,
    /// The consent page.
    Consent,
}

/// A pushed authorization request (RFC 9126), then the user's way through the pages.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flow {
    /// The client.
    pub client_id: String,
    /// Its redirect URI (one of its registered ones).
    pub redirect_uri: String,
    /// The scopes it asked for.
    pub scopes: Vec<String>,
    /// Its `state`.
    pub state: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// Where it stands.
    pub stage: FlowStage,
    /// The form token of its pages.
    pub csrf: String,
    /// The user, once logged in.
    pub login_id: Option<String>,
    /// Whether the login looked risky (a signal of `[oauth] risk_signals` held): the secret
    /// question is asked.
    pub risky: bool,
    /// The scopes the user chose.
    pub chosen_scopes: Vec<String>,
    /// The resources the user chose.
    pub chosen_resources: Vec<String>,
    /// Wrong PINs in this flow.
    pub pin_failures: u32,
    /// When it lapses.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("stage", &self.stage)
            .field("login_id", &self.login_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An authorization code, as stored under its hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeRecord {
    /// The grant it redeems into.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of its request.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// When it lapses.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Redeemed already.
    pub used: bool,
}

/// A resource in a grant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantResource {
    /// Its ID.
    pub id: String,
    /// Its label.
    pub label: String,
}

/// What a user allowed a client, for how long.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    /// Its ID.
    pub id: String,
    /// The user.
    pub login_id: String,
    /// The user's contract (its master's login ID).
    pub contract: String,
    /// The client.
    pub client_id: String,
    /// The scopes allowed.
    pub scopes: Vec<String>,
    /// The resources allowed (RFC 9396 `authorization_details`).
    pub resources: Vec<GrantResource>,
    /// When it was granted.
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    /// When it ends by itself.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was ended (連携解除, revocation, a code used twice).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Who ended it.
    #[serde(default)]
    pub ended_by: Option<String>,
}

impl Grant {
    /// In force at `now`.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// Access or refresh.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A short-lived access token.
    Access,
    /// A refresh token, valid as long as its grant.
    Refresh,
}

/// A token, as stored under its hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Access or refresh.
    pub kind: TokenKind,
    /// Its grant.
    pub grant_id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub login_id: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// `cnf.x5t#S256`: the client certificate it is bound to.
    pub x5t_s256: String,
    /// Issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Lapses.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Revoked.
    pub revoked: bool,
}

/// A user's secret question and what makes a login look familiar.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RiskProfile {
    /// The question the user registered.
    pub question: Option<String>,
    /// argon2id PHC string of its answer.
    pub answer_hash: Option<String>,
    /// SHA-256 (hex) of the device cookies of the user's browsers, newest last (at most 10).
    pub devices: Vec<String>,
    /// The networks (/24, /48) of the user's last successful logins, newest last (at most 10).
    pub networks: Vec<String>,
}

impl fmt::Debug for RiskProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RiskProfile")
            .field("question", &self.question.is_some())
            .field("devices", &self.devices.len())
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// How a code redemption went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// First use: the code, now marked used.
    First(CodeRecord),
    /// Used before.
    Again(CodeRecord),
}

/// The OAuth stores. Every change is durable before the call returns; `take_flow` and
/// `redeem_code` are atomic (of concurrent callers, one wins).
pub trait OAuthStore: Send + Sync {
    /// Registers a client; `false` (nothing changed) when its ID is taken.
    fn insert_client(&self, client: &OAuthClient) -> Result<bool, StoreError>;
    /// One client.
    fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError>;
    /// Every client, by ID.
    fn clients(&self) -> Result<Vec<OAuthClient>, StoreError>;
    /// Removes a client; `false` when there was none.
    fn remove_client(&self, client_id: &str) -> Result<bool, StoreError>;

    /// Adds a resource; `false` when its ID is taken.
    fn insert_resource(&self, resource: &Resource) -> Result<bool, StoreError>;
    /// Every resource, by ID.
    fn resources(&self) -> Result<Vec<Resource>, StoreError>;
    /// Applies `change` atomically; `None` when there is no such resource.
    fn update_resource(&self, id: &str, change: &mut dyn FnMut(&mut Resource)) -> Result<Option<Resource>, StoreError>;
    /// Removes a resource; `false` when there was none.
    fn remove_resource(&self, id: &str) -> Result<bool, StoreError>;

    /// Stores a flow under `key` (replacing it).
    fn put_flow(&self, key: &str, flow: &Flow) -> Result<(), StoreError>;
    /// The flow under `key`.
    fn flow(&self, key: &str) -> Result<Option<Flow>, StoreError>;
    /// Takes the flow under `key` out, atomically.
    fn take_flow(&self, key: &str) -> Result<Option<Flow>, StoreError>;

    /// Stores a code under its hash.
    fn put_code(&self, hash: &[u8; 32], code: &CodeRecord) -> Result<(), StoreError>;
    /// Marks the code used, atomically, and says whether this was its first use.
    fn redeem_code(&self, hash: &[u8; 32]) -> Result<Option<Redeemed>, StoreError>;

    /// Stores a grant (replacing one with its ID).
    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// One grant.
    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Every grant, by ID.
    fn grants(&self) -> Result<Vec<Grant>, StoreError>;
    /// Applies `change` atomically; `None` when there is no such grant.
    fn update_grant(&self, id: &str, change: &mut dyn FnMut(&mut Grant)) -> Result<Option<Grant>, StoreError>;

    /// Stores a token under its hash.
    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this hash.
    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;
    /// Revokes one token; `false` when there is none.
    fn revoke_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Revokes every token of a grant; returns how many were in force.
    fn revoke_grant_tokens(&self, grant_id: &str) -> Result<usize, StoreError>;

    /// The user's risk profile.
    fn profile(&self, login_id: &str) -> Result<Option<RiskProfile>, StoreError>;
    /// Applies `change` to the user's profile (an empty one when there is none) atomically.
    fn update_profile(
        &self,
        login_id: &str,
        change: &mut dyn FnMut(&mut RiskProfile),
    ) -> Result<RiskProfile, StoreError>;

    /// Removes flows, codes and tokens that lapsed before `now`, and grants that ended or
    /// lapsed before `now` along with their tokens; returns how many records went.
    fn purge(&self, now: OffsetDateTime) -> Result<usize, StoreError>;
}
