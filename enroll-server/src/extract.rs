//! Request extractors for what handlers keep asking: the reader's language ([`Lang`]), the
//! connection ([`Peer`]), the client certificate of a certificate-login connection checked
//! against the live registry ([`CertLogin`]), the logged-in session ([`SignedIn`]), and a JSON
//! body whose refusals are [`WebError`]s ([`JsonBody`]). A handler's signature says what it
//! needs; a page handler takes `Result<_, WebError>` to render the refusal itself.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use pki::Serial;
use pki::registry::{CertRecord, Status};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::accounts::{Account, locked};
use crate::error::{ErrorCode, WebError};
use crate::html;
use crate::i18n::Lang;
use crate::state::{Connection, Shared};
use crate::tokens::{Session, Stage};

/// The session cookie of the certificate-login listener.
pub const SESSION_COOKIE: &str = "inkan_session";

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = Infallible;

    /// `?lang=`, then Accept-Language, then Japanese.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let query = parts.uri.query().unwrap_or_default();
        let lang = query.split('&').find_map(|pair| pair.strip_prefix("lang="));
        Ok(Lang::detect(lang, &parts.headers))
    }
}

/// The connection a request came on (address, client certificate).
#[derive(Clone, Debug)]
pub struct Peer(pub Connection);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, WebError> {
        parts
            .extensions
            .get::<Connection>()
            .cloned()
            .map(Peer)
            .ok_or_else(|| WebError::internal("listener", "no connection information"))
    }
}

/// A certificate-login connection's client certificate: one of ours, valid now, not revoked
/// (live registry state), its account active and unlocked.
#[derive(Clone, Debug)]
pub struct CertLogin {
    /// The certificate's registry record.
    pub record: CertRecord,
    /// Its account.
    pub account: Account,
}

fn refused(code: ErrorCode, message: String) -> WebError {
    WebError::new(code, message)
}

/// Checks the client certificate of `conn` (see [`CertLogin`]).
pub fn check_certificate(state: &Shared, conn: &Connection) -> Result<CertLogin, WebError> {
    let Some(der) = &conn.client_certificate else {
        return Err(WebError::new(
            ErrorCode::CertificateRequired,
            "no client certificate was presented; obtain one first and restart the browser",
        ));
    };
    let summary = pki::certificate::Summary::from_der(der)
        .map_err(|e| refused(ErrorCode::CertificateUnknown, format!("unreadable certificate: {e}")))?;
    let serial: Serial = summary
        .serial
        .parse()
        .map_err(|_| refused(ErrorCode::CertificateUnknown, "this certificate was not issued by inkan".into()))?;
    let record = state.registry.get(&serial)?.ok_or_else(|| {
        refused(ErrorCode::CertificateUnknown, format!("certificate {serial} is not in the registry"))
    })?;
    match record.status(OffsetDateTime::now_utc()) {
        Status::Valid => {}
        Status::Revoked => {
            return Err(refused(ErrorCode::CertificateRevoked, format!("certificate {serial} is revoked")));
        }
        Status::Superseded => {
            return Err(refused(
                ErrorCode::CertificateSuperseded,
                format!("certificate {serial} was replaced by a newer one; use the new certificate"),
            ));
        }
        Status::Expired => {
            return Err(refused(
                ErrorCode::CertificateExpired,
                format!("certificate {serial} has expired; obtain it again"),
            ));
        }
        Status::Pending => {
            return Err(refused(ErrorCode::CertificateUnknown, format!("certificate {serial} was never issued")));
        }
    }
    match state.accounts.get(&record.account)? {
        Some(a) if a.locked => Err(locked(&a).into()),
        Some(account) if account.active => Ok(CertLogin { record, account }),
        _ => Err(refused(ErrorCode::AccountInactive, "the certificate's account is not active".into())),
    }
}

impl FromRequestParts<Shared> for CertLogin {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, WebError> {
        let Peer(conn) = Peer::from_request_parts(parts, state).await?;
        check_certificate(state, &conn)
    }
}

/// A logged-in session: the session cookie, within the idle timeout, made with this very
/// certificate, which is still valid.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The session's ID.
    pub id: String,
    /// The session.
    pub session: Session,
    /// Its account.
    pub account: Account,
}

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = WebError;

    /// A session at [`Stage::Complete`].
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, WebError> {
        let Partial { id, session, account } = Partial::from_request_parts(parts, state).await?;
        match session.stage {
            Stage::Complete => Ok(SignedIn { id, session, account }),
            Stage::OtpPending => Err(WebError::new(
                ErrorCode::OtpRequired,
                "give your one-time password to finish logging in (POST /api/v1/login/otp)",
            )),
            Stage::SetupOnly => Err(WebError::new(
                ErrorCode::OtpSetupRequired,
                "set up a one-time-password token first (POST /api/v1/otp/tokens)",
            )),
        }
    }
}

/// A session at any stage (the steps that finish a login), with its ID.
#[derive(Debug)]
pub struct Partial {
    /// The session's ID.
    pub id: String,
    /// The session.
    pub session: Session,
    /// Its account.
    pub account: Account,
}

impl FromRequestParts<Shared> for Partial {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, WebError> {
        let CertLogin { record, account } = CertLogin::from_request_parts(parts, state).await?;
        let unauthorized = || WebError::new(ErrorCode::LoginRequired, "log in with your password first");
        let id = html::cookie(&parts.headers, SESSION_COOKIE).ok_or_else(unauthorized)?;
        let session = state.sessions.touch(&id, state.settings.session_idle_timeout)?.ok_or_else(unauthorized)?;
        if session.certificate != record.serial || session.login_id != account.login_id {
            return Err(unauthorized());
        }
        Ok(Partial { id, session, account })
    }
}

/// A JSON body; a body that does not parse is `invalid_json`, one over the limit
/// `body_too_large`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &S) -> Result<Self, WebError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(WebError::new(ErrorCode::BodyTooLarge, "the request body is too large"))
            }
            Err(e) => Err(WebError::new(ErrorCode::InvalidJson, e.body_text())),
        }
    }
}
