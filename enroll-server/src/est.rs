//! EST (RFC 7030, with the RFC 8951 clarifications): enrollment for machines, on a listener of
//! its own that asks for a client certificate without requiring one.
//!
//! - `GET cacerts`: the issuing CA and the root, certs-only PKCS#7;
//! - `GET csrattrs`: what a CSR should carry (a P-256 key signed with SHA-256);
//! - `POST simpleenroll`: HTTP Basic with an account's login ID and password (the lockout
//!   counts) or a one-time enrollment token (`inkan token create`), under the same rule as the
//!   web: no second certificate while one is valid outside the renewal window;
//! - `POST simplereenroll`: the account's current certificate in the TLS handshake; the new
//!   certificate supersedes it;
//! - `serverkeygen`: 501, the key never leaves the client.
//!
//! Each is served under `/.well-known/est/` and under `/.well-known/est/LABEL/`, a label of
//! `[est.labels]` naming the profile. Bodies are base64 (line breaks or not); certificates come
//! back base64 as `application/pkcs7-mime; smime-type=certs-only`; refusals are plain text
//! with a 4xx status, 401 with `WWW-Authenticate` when credentials are missing or wrong, and
//! 202 with `Retry-After` while the CA is unreachable.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pki::{Profile, San};

use crate::accounts::{Account, AccountError, Password, TOKEN_PREFIX};
use crate::enrollment::{Refused, check_eligible, issue_for};
use crate::error::{ErrorCode, WebError};
use crate::extract::{Peer, check_certificate};
use crate::state::{Shared, blocking};

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "Basic realm=\"inkan EST\", charset=\"UTF-8\"";
/// The content type of certificates answered.
const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
/// csrattrs: SEQUENCE { SEQUENCE { id-ecPublicKey, SET { secp256r1 } }, ecdsa-with-SHA256 }.
const CSR_ATTRS: &[u8] = &[
    0x30, 0x21, 0x30, 0x15, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x31, 0x0a, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The EST operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    CaCerts,
    CsrAttrs,
    SimpleEnroll,
    SimpleReenroll,
    ServerKeyGen,
}

impl Operation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cacerts" => Self::CaCerts,
            "csrattrs" => Self::CsrAttrs,
            "simpleenroll" => Self::SimpleEnroll,
            "simplereenroll" => Self::SimpleReenroll,
            "serverkeygen" => Self::ServerKeyGen,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Self::CaCerts | Self::CsrAttrs => Method::GET,
            Self::SimpleEnroll | Self::SimpleReenroll | Self::ServerKeyGen => Method::POST,
        }
    }
}

/// A plain-text answer.
fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// A refusal as EST answers it.
fn refusal(e: WebError) -> Response {
    if e.code == ErrorCode::Unavailable {
        // RFC 7030 4.2.3: the request is accepted but not processed yet; ask again.
        let mut response = text(StatusCode::ACCEPTED, &e.message);
        let seconds = e.retry_after.unwrap_or(5);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let mut response = text(e.status(), &e.message);
    if e.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    }
    if let Some(seconds) = e.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Base64 DER in an EST body, on one line: RFC 8951 lets a client accept line breaks, but some
/// (strongSwan 5.9) decode only an unbroken run.
fn base64_body(content_type: &'static str, der: &[u8]) -> Response {
    let body: String = pki::encoding::base64_lines(der).split('\n').collect();
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `/.well-known/est/{op}`.
pub async fn unlabelled(
    state: State<Shared>,
    peer: Result<Peer, WebError>,
    method: Method,
    headers: HeaderMap,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    answer(&state, peer, method, &headers, None, &op, body).await
}

/// `/.well-known/est/{label}/{op}`.
pub async fn labelled(
    state: State<Shared>,
    peer: Result<Peer, WebError>,
    method: Method,
    headers: HeaderMap,
    Path((label, op)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(&state, peer, method, &headers, Some(&label), &op, body).await
}

async fn answer(
    state: &Shared,
    peer: Result<Peer, WebError>,
    method: Method,
    headers: &HeaderMap,
    label: Option<&str>,
    op: &str,
    body: Bytes,
) -> Response {
    let Some(operation) = Operation::parse(op) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("no EST operation {op:?}; offered: cacerts, csrattrs, simpleenroll, simplereenroll"),
        );
    };
    let profile = match label {
        None => Profile::Client,
        Some(label) => match state.settings.est.labels.get(label) {
            Some(profile) => *profile,
            None => {
                let known: Vec<&str> = state.settings.est.labels.keys().map(String::as_str).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return text(StatusCode::NOT_FOUND, &format!("no EST label {label:?}; configured: {known}"));
            }
        },
    };
    if method != operation.method() {
        let mut response =
            text(StatusCode::METHOD_NOT_ALLOWED, &format!("{op} takes {}, not {method}", operation.method()));
        let allow = if operation.method() == Method::GET { "GET" } else { "POST" };
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    let result = match operation {
        Operation::CaCerts => {
            // Every generation of the issuing CA (the one issuing now first), then the root.
            let current = state.issuer.ca_certificate();
            let mut certs = vec![current];
            certs.extend(state.issuer.ca_generations().into_iter().rev().map(|(_, der)| der).filter(|d| *d != current));
            certs.push(state.issuer.root_certificate());
            return base64_body(CERTS_ONLY, &pki::encoding::pkcs7_certs_only(certs));
        }
        Operation::CsrAttrs => return base64_body("application/csrattrs", CSR_ATTRS),
        Operation::ServerKeyGen => {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "serverkeygen is not offered: the key is made by the client and never leaves it",
            );
        }
        Operation::SimpleEnroll | Operation::SimpleReenroll => {
            let conn = match peer.and_then(|Peer(conn)| state.rate_limit(conn.remote).map(|()| conn)) {
                Ok(conn) => conn,
                Err(e) => return refusal(e),
            };
            if operation == Operation::SimpleEnroll {
                enroll(state, headers, profile, &body).await
            } else {
                reenroll(state, &conn, headers, profile, &body).await
            }
        }
    };
    match result {
        Ok(der) => base64_body(CERTS_ONLY, &pki::encoding::pkcs7_certs_only([der.as_slice()])),
        Err(e) => refusal(e),
    }
}

/// The CSR of an enrollment body: `application/pkcs10`, base64 DER. Public for the fuzz target.
pub fn csr_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, WebError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/pkcs10") {
        return Err(WebError::new(
            ErrorCode::InvalidRequest,
            format!("the body must be a base64 PKCS#10 CSR sent as application/pkcs10, not {content_type:?}"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| WebError::new(ErrorCode::InvalidRequest, "the body is not base64 text"))?;
    let der = pki::encoding::base64_decode(text)
        .filter(|der| !der.is_empty())
        .ok_or_else(|| WebError::new(ErrorCode::InvalidRequest, "the body is not base64"))?;
    // Whatever else is wrong with it, the CA says (and nothing is recorded).
    pki::encoding::decode_csr(&der).map_err(|e| WebError::new(ErrorCode::CsrRejected, e.to_string()))
}

/// Login ID and password of an `Authorization: Basic` header. Public for the fuzz target.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, Password), WebError> {
    let missing = || {
        WebError::new(
            ErrorCode::InvalidCredentials,
            "simpleenroll needs HTTP Basic authentication with a login ID and its password",
        )
    };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(missing)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let decoded = pki::encoding::base64_decode(encoded.trim()).ok_or_else(missing)?;
    let decoded = zeroize::Zeroizing::new(decoded);
    let text = std::str::from_utf8(&decoded).map_err(|_| missing())?;
    let (login_id, password) = text.split_once(':').ok_or_else(missing)?;
    Ok((login_id.to_owned(), Password::new(password.to_owned())))
}

/// simpleenroll: HTTP Basic, then the same rule as the web.
async fn enroll(state: &Shared, headers: &HeaderMap, profile: Profile, body: &[u8]) -> Result<Vec<u8>, WebError> {
    let (login_id, password) = basic_credentials(headers)?;
    if password.reveal().starts_with(TOKEN_PREFIX) {
        return enroll_with_token(state, headers, profile, body, login_id, password).await;
    }
    let account = state.authenticate(&login_id, password, "est").await?;
    let csr = csr_of(headers, body)?;
    let sans = names_for(&account, profile, &csr)?;
    check_eligible(state, &account, time::OffsetDateTime::now_utc())?;
    let issued = issue_for(state, &account.login_id, csr, profile, sans).await.map_err(WebError::from)?;
    state
        .audit(
            "est.enrolled",
            serde_json::json!({ "login_id": account.login_id, "serial": issued.serial, "with": "password" }),
        )
        .await;
    Ok(issued.der)
}

/// simpleenroll with a one-time token as the Basic password: the token is taken when the
/// request starts, and put back when nothing was issued.
async fn enroll_with_token(
    state: &Shared,
    headers: &HeaderMap,
    profile: Profile,
    body: &[u8],
    login_id: String,
    secret: Password,
) -> Result<Vec<u8>, WebError> {
    let csr = csr_of(headers, body)?;
    let (redeemer, id) = (state.clone(), login_id.clone());
    let now = time::OffsetDateTime::now_utc();
    let Some(redeemed) = blocking(move || redeemer.accounts.redeem_token(&id, secret.reveal(), now)).await?? else {
        state.audit("login.failure", serde_json::json!({ "login_id": login_id, "via": "est-token" })).await;
        return Err(WebError::new(
            ErrorCode::InvalidCredentials,
            "the login ID or enrollment token is not correct, or the token was used or has expired",
        ));
    };
    let account = match state.accounts.get(&login_id) {
        Ok(Some(a)) if a.locked => Err(crate::accounts::locked(&a).into()),
        Ok(Some(a)) if a.active => Ok(a),
        Ok(_) => Err(WebError::from(AccountError::Inactive)),
        Err(e) => Err(e.into()),
    }
    .and_then(|account| check_eligible(state, &account, now).map(|()| account))
    .and_then(|account| names_for(&account, profile, &csr).map(|sans| (account, sans)));
    let (account, sans) = match account {
        Ok(found) => found,
        Err(e) => {
            state.accounts.restore_token(redeemed)?;
            return Err(e);
        }
    };
    let issued = match issue_for(state, &account.login_id, csr, profile, sans).await {
        Ok(issued) => issued,
        Err(Refused::NothingIssued(e)) => {
            state.accounts.restore_token(redeemed)?;
            return Err(e);
        }
        Err(Refused::Failed(e)) => return Err(e),
    };
    state
        .audit(
            "est.enrolled",
            serde_json::json!({ "login_id": account.login_id, "serial": issued.serial, "with": "token" }),
        )
        .await;
    Ok(issued.der)
}

/// simplereenroll: the account's current certificate in the handshake.
async fn reenroll(
    state: &Shared,
    conn: &crate::state::Connection,
    headers: &HeaderMap,
    profile: Profile,
    body: &[u8],
) -> Result<Vec<u8>, WebError> {
    let current = check_certificate(state, conn).map_err(|e| match e.code {
        // 403, not 401: no credentials in a header would do.
        ErrorCode::CertificateRequired => WebError::new(
            ErrorCode::CertificateUnknown,
            "simplereenroll needs the current certificate in the TLS handshake",
        ),
        _ => e,
    })?;
    if current.record.profile != profile {
        return Err(WebError::new(
            ErrorCode::InvalidRequest,
            format!(
                "certificate {} was issued under the {} profile; re-enroll under a label of that profile",
                current.record.serial,
                current.record.profile.name()
            ),
        ));
    }
    let csr = csr_of(headers, body)?;
    let sans = names_for(&current.account, profile, &csr)?;
    let login_id = current.account.login_id.clone();
    let issued = issue_for(state, &login_id, csr, profile, sans).await.map_err(|refused| match refused {
        Refused::NothingIssued(e) | Refused::Failed(e) => e,
    })?;
    state
        .audit(
            "est.reenrolled",
            serde_json::json!({ "login_id": login_id, "serial": issued.serial, "replaces": current.record.serial }),
        )
        .await;
    Ok(issued.der)
}

/// The names to certify under a label's `profile`: none for the client profile; for the
/// server and client-server profiles, the names the CSR asks for, each inside the account's
/// allowed-names policy (the signer then checks them against `[ca] server_names`).
fn names_for(account: &Account, profile: Profile, csr: &[u8]) -> Result<Vec<San>, WebError> {
    if profile == Profile::Client {
        return Ok(Vec::new());
    }
    if account.allowed_names.is_empty() {
        return Err(WebError::new(
            ErrorCode::NameNotAllowed,
            format!(
                "this label issues under the {} profile, which needs an allowed-names policy for the account; \
                 the operator sets one with `inkan user names`",
                profile.name()
            ),
        ));
    }
    let sans = pki::csr::requested_sans(csr).map_err(|e| WebError::new(ErrorCode::CsrRejected, e.to_string()))?;
    if sans.is_empty() {
        return Err(WebError::new(
            ErrorCode::CsrRejected,
            "the CSR asks for no names: put the DNS names and IP addresses in a subjectAltName extension request",
        ));
    }
    pki::names::check(&account.allowed_names, &sans)
        .map_err(|e| WebError::new(ErrorCode::NameNotAllowed, e.to_string()))?;
    Ok(sans)
}
