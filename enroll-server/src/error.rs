//! The web crate's one error type, and the one place errors become HTTP: a stable
//! [`ErrorCode`], the status it implies, and a clear English message for API clients. Pages say
//! the same in the reader's language through `i18n`; internals go to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::accounts::AccountError;

/// What went wrong, as API clients and pages see it. The names are stable: clients match on
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// An unknown login ID or a wrong password (deliberately the same).
    InvalidCredentials,
    /// Locked after too many wrong passwords.
    AccountLocked,
    /// The account is disabled.
    AccountInactive,
    /// A request that breaks the rules (login ID form, password length...).
    InvalidRequest,
    /// A form with missing or malformed fields.
    InvalidForm,
    /// A JSON body that does not parse or lacks fields.
    InvalidJson,
    /// A body over the limit.
    BodyTooLarge,
    /// The account holds a valid certificate outside its renewal window.
    CertificateValid,
    /// No such enrollment ticket.
    TicketUnknown,
    /// The ticket expired.
    TicketExpired,
    /// The ticket was already used.
    TicketUsed,
    /// Another issuance for the same account is in progress.
    IssuanceInProgress,
    /// The CA refused the CSR.
    CsrRejected,
    /// A name asked for is outside the account's allowed-names policy, or the account has none.
    NameNotAllowed,
    /// A one-time password that is wrong, malformed or already used.
    InvalidOtp,
    /// OTP use is stopped (利用停止) after too many wrong codes.
    OtpStopped,
    /// A one-time password is needed to finish the login.
    OtpRequired,
    /// The login ID must set up a token before anything else.
    OtpSetupRequired,
    /// A new token cannot be issued yet after a revocation.
    OtpReissueWait,
    /// No client certificate on the certificate-login listener.
    CertificateRequired,
    /// A client certificate inkan does not know.
    CertificateUnknown,
    /// The client certificate is revoked.
    CertificateRevoked,
    /// The client certificate was replaced by a reissue.
    CertificateSuperseded,
    /// The client certificate has expired.
    CertificateExpired,
    /// No session: log in first.
    LoginRequired,
    /// Only a contract's master user may do this.
    MasterOnly,
    /// The login ID is taken.
    Exists,
    /// A serial that does not parse.
    InvalidSerial,
    /// A revocation reason that does not parse.
    InvalidReason,
    /// A revocation reason not allowed for this certificate.
    ReasonNotAllowed,
    /// The certificate cannot be revoked in its state.
    NotRevocable,
    /// A form without the right CSRF token.
    Csrf,
    /// No such resource (or one the caller may not see).
    NotFound,
    /// Too many requests from this address.
    RateLimited,
    /// The CA is not reachable; nothing was done.
    Unavailable,
    /// The request took too long.
    Timeout,
    /// The service failed; the operator's log says why.
    Internal,
}

impl ErrorCode {
    /// The stable name (`invalid_credentials`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountLocked => "account_locked",
            Self::AccountInactive => "account_inactive",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidForm => "invalid_form",
            Self::InvalidJson => "invalid_json",
            Self::BodyTooLarge => "body_too_large",
            Self::CertificateValid => "certificate_valid",
            Self::TicketUnknown => "ticket_unknown",
            Self::TicketExpired => "ticket_expired",
            Self::TicketUsed => "ticket_used",
            Self::IssuanceInProgress => "issuance_in_progress",
            Self::CsrRejected => "csr_rejected",
            Self::NameNotAllowed => "name_not_allowed",
            Self::InvalidOtp => "invalid_otp",
            Self::OtpStopped => "otp_stopped",
            Self::OtpRequired => "otp_required",
            Self::OtpSetupRequired => "otp_setup_required",
            Self::OtpReissueWait => "otp_reissue_wait",
            Self::CertificateRequired => "certificate_required",
            Self::CertificateUnknown => "certificate_unknown",
            Self::CertificateRevoked => "certificate_revoked",
            Self::CertificateSuperseded => "certificate_superseded",
            Self::CertificateExpired => "certificate_expired",
            Self::LoginRequired => "login_required",
            Self::MasterOnly => "master_only",
            Self::Exists => "exists",
            Self::InvalidSerial => "invalid_serial",
            Self::InvalidReason => "invalid_reason",
            Self::ReasonNotAllowed => "reason_not_allowed",
            Self::NotRevocable => "not_revocable",
            Self::Csrf => "csrf",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest
            | Self::InvalidForm
            | Self::InvalidJson
            | Self::InvalidSerial
            | Self::InvalidReason
            | Self::ReasonNotAllowed => StatusCode::BAD_REQUEST,
            Self::InvalidCredentials
            | Self::CertificateRequired
            | Self::LoginRequired
            | Self::InvalidOtp
            | Self::OtpRequired => StatusCode::UNAUTHORIZED,
            Self::AccountLocked
            | Self::AccountInactive
            | Self::CertificateUnknown
            | Self::CertificateRevoked
            | Self::CertificateSuperseded
            | Self::CertificateExpired
            | Self::MasterOnly
            | Self::NameNotAllowed
            | Self::OtpStopped
            | Self::OtpSetupRequired
            | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound | Self::TicketUnknown => StatusCode::NOT_FOUND,
            Self::CertificateValid
            | Self::TicketUsed
            | Self::IssuanceInProgress
            | Self::Exists
            | Self::OtpReissueWait
            | Self::NotRevocable => StatusCode::CONFLICT,
            Self::TicketExpired => StatusCode::GONE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::CsrRejected => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client: `{"error":{"code","message"}}` with the code's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Said in English, specific to this case, safe to show.
    pub message: String,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl WebError {
    /// An error with `code` and an English `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }

    /// 500: the details go to the log, the client gets a generic message.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%context, %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error; the operator has been told")
    }

    /// 503 with a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(5), ..Self::new(ErrorCode::Unavailable, message) }
    }

    /// 503 for a store that failed (a database that went away): the details go to the log, the
    /// client is asked to try again.
    pub fn store_down(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%context, %detail, "store failed");
        Self::unavailable("the service's storage is not answering; try again shortly")
    }

    /// 429.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(ErrorCode::RateLimited, "too many requests; try again shortly")
        }
    }
}

impl From<AccountError> for WebError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidCredentials | AccountError::WrongPasswordLocked | AccountError::WrongConfirmation => {
                Self::new(ErrorCode::InvalidCredentials, e.to_string())
            }
            AccountError::Locked { .. } => Self::new(ErrorCode::AccountLocked, e.to_string()),
            AccountError::Inactive => Self::new(ErrorCode::AccountInactive, e.to_string()),
            AccountError::Exists(_) => Self::new(ErrorCode::Exists, e.to_string()),
            AccountError::NoConfirmation => Self::new(ErrorCode::MasterOnly, e.to_string()),
            AccountError::Store(detail) => Self::store_down("account store", detail),
            other => Self::new(ErrorCode::InvalidRequest, other.to_string()),
        }
    }
}

impl From<pki::registry::RegistryError> for WebError {
    fn from(e: pki::registry::RegistryError) -> Self {
        match e {
            pki::registry::RegistryError::Backend(detail) => Self::store_down("registry", detail),
            other => Self::internal("registry", other),
        }
    }
}

impl From<crate::stores::StoreError> for WebError {
    fn from(e: crate::stores::StoreError) -> Self {
        Self::store_down("store", e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = Body { error: Inner { code: self.code.as_str(), message: &self.message } };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
