//! API連携認証: an OAuth 2.0 authorization server for third-party services, in the FAPI 2.0
//! Security Profile's shape. Pushed authorization requests (RFC 9126) only, the authorization
//! code with PKCE S256 (RFC 7636), confidential clients authenticated by mutual TLS with a
//! certificate inkan issued them (`tls_client_auth`, RFC 8705), opaque access tokens bound to
//! that certificate (`cnf.x5t#S256`), refresh tokens as long as the grant, introspection
//! (RFC 7662) and revocation (RFC 7009), the issuer in the authorization response (RFC 9207),
//! and the resources a user chose as `authorization_details` (RFC 9396).
//!
//! [`OAuth`] holds the rules and the store; `endpoints` answers the clients, `flow` walks the
//! user through the pages of the manuals (login, OTP, 追加認証, 認可業務選択, 照会用暗証番号登録,
//! 情報アクセス許可), `grants` shows and ends grants and accepts the tokens on inkan's API.

pub mod endpoints;
pub mod flow;
pub mod grants;
pub mod operator;
mod purge;
pub mod text;

use std::sync::Arc;

use pki::registry::{Registry, Status};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::stores::StoreError;
use crate::stores::oauth::{Grant, OAuthClient, OAuthStore, TokenKind, TokenRecord};

pub use purge::purger;
pub use text::OAuthText;

/// `request_uri` values start with this (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// The `authorization_details` type of a chosen resource.
pub const RESOURCE_DETAIL_TYPE: &str = "inkan_resource";

/// One scope clients may ask for, with what users read about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeDef {
    /// `certificates:read`.
    pub name: String,
    /// The description in Japanese.
    pub ja: String,
    /// The description in English.
    pub en: String,
    /// The user chooses which of the contract's resources it covers (照会用暗証番号登録).
    pub per_resource: bool,
}

/// Which signals make a login risky enough to ask the secret question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RiskSignals {
    /// A browser without a device cookie from an earlier login of the user.
    pub new_device: bool,
    /// An address outside the networks of the user's recent logins.
    pub new_network: bool,
    /// Wrong passwords since the last right one.
    pub recent_failures: bool,
}

/// The rules, from `[oauth]` in inkan.toml.
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// Access tokens live this long.
    pub access_token_ttl: Duration,
    /// Codes live this long.
    pub code_ttl: Duration,
    /// A pushed request's `request_uri` lives this long.
    pub request_uri_ttl: Duration,
    /// A client's grants last this many days unless it was registered with its own period.
    pub grant_days: u32,
    /// When the secret question is asked.
    pub risk: RiskSignals,
    /// The scopes.
    pub scopes: Vec<ScopeDef>,
    /// API利用規定 (the operator's text), Japanese and English.
    pub terms: (String, String),
    /// The explanation on the consent page, Japanese and English.
    pub explanation: (String, String),
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::minutes(10),
            code_ttl: Duration::seconds(60),
            request_uri_ttl: Duration::seconds(90),
            grant_days: 90,
            risk: RiskSignals { new_device: true, new_network: true, recent_failures: true },
            scopes: vec![
                ScopeDef {
                    name: "certificates:read".into(),
                    ja: "電子証明書の照会".into(),
                    en: "Read your certificates".into(),
                    per_resource: false,
                },
                ScopeDef {
                    name: "balance:read".into(),
                    ja: "残高照会".into(),
                    en: "Read account balances".into(),
                    per_resource: true,
                },
            ],
            terms: (
                "本サービスは、お客さまの同意にもとづき、外部の事業者がお客さまの情報を照会するためのものです。".into(),
                "With your consent, this service lets a third party read your information.".into(),
            ),
            explanation: (
                "許可すると、上記のサービスが期間内に上記の情報を照会できます。連携はホーム画面からいつでも解除できます。"
                    .into(),
                "If you allow it, the service above may read the information above for the period shown. You can end it at any time on your home page."
                    .into(),
            ),
        }
    }
}

impl OAuthSettings {
    /// The scope named `name`.
    pub fn scope(&self, name: &str) -> Option<&ScopeDef> {
        self.scopes.iter().find(|s| s.name == name)
    }
}

/// An OAuth error answered to a client (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// 400 or 401.
    pub status: u16,
    /// `invalid_request`, `invalid_client`, `invalid_grant`...
    pub error: &'static str,
    /// What was wrong, for the client's developer.
    pub description: String,
}

impl OAuthError {
    /// A 400 with `error`.
    pub fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self { status: 400, error, description: description.into() }
    }

    /// 401 `invalid_client`.
    pub fn client(description: impl Into<String>) -> Self {
        Self { status: 401, error: "invalid_client", description: description.into() }
    }

    /// 400 `invalid_grant`.
    pub fn grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }

    /// 500 `server_error` (the log says why).
    pub fn server(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "OAuth store");
        Self { status: 500, error: "server_error", description: "the service failed; try again later".into() }
    }
}

impl From<crate::error::WebError> for OAuthError {
    /// A blocking task that failed to run.
    fn from(e: crate::error::WebError) -> Self {
        Self::server(e.code.as_str())
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Self::server(e)
    }
}

/// SHA-256 of `text`: how tokens, codes, request URIs and device cookies are stored.
pub fn hash(text: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `x5t#S256` of a DER certificate (RFC 8705 §3.1).
pub fn thumbprint(der: &[u8]) -> String {
    pki::encoding::base64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// A fresh secret: 32 random bytes, base64url.
pub fn secret() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| std::process::abort());
    pki::encoding::base64url(&bytes)
}

/// A short random ID with a prefix (`g-…` for grants).
pub fn short_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| std::process::abort());
    format!("{prefix}{}", pki::encoding::hex(&bytes))
}

/// A distinguished name as a set of `TYPE=value` parts: order and the spaces around commas
/// do not matter, attribute types are compared without case.
fn dn_parts(dn: &str) -> Vec<String> {
    let mut parts: Vec<String> = dn
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((kind, value)) => format!("{}={}", kind.trim().to_ascii_uppercase(), value.trim()),
            None => p.to_owned(),
        })
        .collect();
    parts.sort();
    parts
}

/// Whether a distinguished name has a common name.
fn dn_parts_have_cn(dn: &str) -> bool {
    dn_parts(dn).iter().any(|p| p.starts_with("CN=") && p.len() > 3)
}

/// Whether `a` and `b` name the same subject (see [`dn_parts`]).
pub fn same_dn(a: &str, b: &str) -> bool {
    dn_parts(a) == dn_parts(b)
}

/// A client that proved itself: its registration and its certificate's thumbprint.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    /// The registration.
    pub client: OAuthClient,
    /// `x5t#S256` of the certificate it presented.
    pub thumbprint: String,
}

/// The token pair of a grant, as answered to the client (the secrets, once).
#[derive(Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer` (bound to the certificate, RFC 8705).
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// The refresh token, on the code exchange only (no rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// The resources granted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<serde_json::Value>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The authorization server: its rules and its store.
#[derive(Clone)]
pub struct OAuth {
    /// The store.
    pub store: Arc<dyn OAuthStore>,
    /// The rules.
    pub settings: OAuthSettings,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl OAuth {
    /// The server over `store` with `settings`.
    pub fn new(store: Arc<dyn OAuthStore>, settings: OAuthSettings) -> Self {
        Self { store, settings }
    }

    /// Authenticates a client by the certificate of its TLS connection (`tls_client_auth`):
    /// one inkan issued, valid in the registry now, whose subject is the one registered for
    /// `client_id`.
    pub fn authenticate_client(
        &self,
        registry: &dyn Registry,
        certificate: Option<&[u8]>,
        client_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<AuthenticatedClient, OAuthError> {
        let client_id = client_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| OAuthError::client("client_id is missing (tls_client_auth sends it as a parameter)"))?;
        let client =
            self.store.client(client_id)?.ok_or_else(|| OAuthError::client("no client is registered with this ID"))?;
        let der = certificate.ok_or_else(|| {
            OAuthError::client("no client certificate in the TLS handshake (this server uses tls_client_auth)")
        })?;
        let summary = pki::certificate::Summary::from_der(der)
            .map_err(|_| OAuthError::client("the client certificate cannot be read"))?;
        let serial: pki::Serial =
            summary.serial.parse().map_err(|_| OAuthError::client("the client certificate is not inkan's"))?;
        let record = registry
            .get(&serial)
            .map_err(OAuthError::server)?
            .ok_or_else(|| OAuthError::client("the client certificate is not in inkan's registry"))?;
        if record.status(now) != Status::Valid {
            return Err(OAuthError::client(format!("the client certificate is {}", record.status(now).name())));
        }
        if !same_dn(&summary.subject, &client.tls_subject) {
            return Err(OAuthError::client("the client certificate is not the one registered for this client"));
        }
        Ok(AuthenticatedClient { client, thumbprint: thumbprint(der) })
    }

    /// The `authorization_details` of a grant's resources.
    pub fn details(grant: &Grant) -> Vec<serde_json::Value> {
        grant
            .resources
            .iter()
            .map(|r| {
                serde_json::json!({
                    "type": RESOURCE_DETAIL_TYPE,
                    "actions": ["read"],
                    "identifier": r.id,
                    "label": r.label,
                })
            })
            .collect()
    }

    /// Issues an access token (and, when `with_refresh`, a refresh token) for `grant`, bound to
    /// `thumbprint`.
    pub fn issue_tokens(
        &self,
        grant: &Grant,
        thumbprint: &str,
        with_refresh: bool,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, OAuthError> {
        let record = |kind, expires_at| TokenRecord {
            kind,
            grant_id: grant.id.clone(),
            client_id: grant.client_id.clone(),
            login_id: grant.login_id.clone(),
            scopes: grant.scopes.clone(),
            x5t_s256: thumbprint.to_owned(),
            issued_at: now,
            expires_at,
            revoked: false,
        };
        let access = format!("at_{}", secret());
        let access_expires = (now + self.settings.access_token_ttl).min(grant.expires_at);
        self.store.put_token(&hash(&access), &record(TokenKind::Access, access_expires))?;
        let refresh = if with_refresh {
            let refresh = format!("rt_{}", secret());
            self.store.put_token(&hash(&refresh), &record(TokenKind::Refresh, grant.expires_at))?;
            Some(refresh)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: (access_expires - now).whole_seconds().max(0),
            refresh_token: refresh,
            scope: grant.scopes.join(" "),
            authorization_details: Self::details(grant),
        })
    }

    /// A token in force: stored, not revoked, not lapsed, its grant in force.
    pub fn live_token(&self, token: &str, now: OffsetDateTime) -> Result<Option<(TokenRecord, Grant)>, OAuthError> {
        let Some(record) = self.store.token(&hash(token))? else { return Ok(None) };
        if record.revoked || record.expires_at <= now {
            return Ok(None);
        }
        let Some(grant) = self.store.grant(&record.grant_id)? else { return Ok(None) };
        if !grant.active(now) {
            return Ok(None);
        }
        Ok(Some((record, grant)))
    }

    /// Ends a grant and revokes its tokens at once; returns it as stored (`None`: no such
    /// grant). Ending an ended grant changes nothing.
    pub fn end_grant(&self, id: &str, by: &str, now: OffsetDateTime) -> Result<Option<Grant>, StoreError> {
        let grant = self.store.update_grant(id, &mut |g| {
            if g.ended_at.is_none() {
                g.ended_at = Some(now);
                g.ended_by = Some(by.to_owned());
            }
        })?;
        if grant.is_some() {
            self.store.revoke_grant_tokens(id)?;
        }
        Ok(grant)
    }
}

/// Checks a PKCE verifier (RFC 7636 §4.1: 43 to 128 unreserved characters) against an S256
/// challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return false;
    }
    let computed =
        pki::encoding::base64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes()).is_ok()
}

/// Percent-encodes a query value (everything but the unreserved characters).
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `uri` with the query parameters `params` appended.
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&query_escape(v));
        sep = '&';
    }
    out
}

/// Checks a redirect URI the operator registers: absolute https (http only for loopback
/// addresses), no fragment, at most 512 characters.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    let https = uri.strip_prefix("https://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    let http_loopback =
        loopback.iter().any(|p| uri.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with([':', '/'])));
    if uri.len() > 512 || uri.contains('#') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redirect URI {uri:?}: at most 512 characters, without a fragment or spaces"));
    }
    if !https && !http_loopback {
        return Err(format!("redirect URI {uri:?}: use an https:// URI (http:// only on a loopback address)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_checks_the_rfc_example_and_refuses_the_rest() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!pkce_matches("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_matches(&format!("{verifier} "), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn subjects_match_in_any_order_and_only_whole() {
        assert!(same_dn("O=Bank, CN=app", "cn=app,O=Bank"));
        assert!(!same_dn("O=Bank, CN=app", "O=Bank, CN=app2"));
        assert!(!same_dn("O=Bank, CN=app", "CN=app"));
    }

    #[test]
    fn redirect_uris_are_https_or_loopback() {
        assert!(check_redirect_uri("https://kakeibo.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:8080/cb").is_ok());
        assert!(check_redirect_uri("http://kakeibo.example/cb").is_err());
        assert!(check_redirect_uri("http://127.0.0.1.evil.example/cb").is_err());
        assert!(check_redirect_uri("https://kakeibo.example/cb#x").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
    }

    #[test]
    fn token_answers_do_not_debug_their_secrets() {
        let answer = TokenResponse {
            access_token: "at_secret-access".into(),
            token_type: "Bearer",
            expires_in: 600,
            refresh_token: Some("rt_secret-refresh".into()),
            scope: "certificates:read".into(),
            authorization_details: Vec::new(),
        };
        let shown = format!("{answer:?}");
        assert!(!shown.contains("secret-access") && !shown.contains("secret-refresh"), "{shown}");
        assert!(shown.contains("certificates:read"), "{shown}");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            with_query("https://a.example/cb", &[("state", "a b&c"), ("iss", "https://x:1")]),
            "https://a.example/cb?state=a%20b%26c&iss=https%3A%2F%2Fx%3A1"
        );
        assert_eq!(with_query("https://a.example/cb?x=1", &[("code", "z")]), "https://a.example/cb?x=1&code=z");
    }
}
