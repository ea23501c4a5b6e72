//! The acquisition pipeline (manual 004) on the public listener: 電子証明書取得 →
//! 取得前処理 → 取得開始 → 発行処理中 → install, as pages and as the JSON API. The protocol is
//! [`preprocess`] (authenticate, check eligibility, make a single-use ticket) and [`issue`]
//! (claim the ticket, have the CA issue, supersede); the handlers translate HTTP to them.

use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Redirect, Response};
use pki::Profile;
use pki::encoding::rfc3339;
use pki::registry::Status;
use pki::request::{IssueError, IssueOrder, IssuedCertificate};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::accounts::{Account, AccountError, Password};
use crate::error::{ErrorCode, WebError};
use crate::extract::{JsonBody, Peer};
use crate::html;
use crate::i18n::Lang;
use crate::pages::{AcquirePage, Frame, StartPage};
use crate::policy::renewal_due;
use crate::ports::Events;
use crate::state::{Shared, blocking};
use crate::tokens::{Ticket, TicketError};

/// Whether `account` may obtain a certificate now: not while it holds a valid certificate
/// that is outside the renewal window.
pub fn check_eligible(state: &Shared, account: &Account, now: OffsetDateTime) -> Result<(), WebError> {
    let window_days = state.settings.enrollment.renewal_window_days;
    let window = time::Duration::days(i64::from(window_days));
    let records = state.registry.valid_by_account(&account.login_id)?;
    if let Some(valid) = records
        .iter()
        .filter(|r| r.status(now) == Status::Valid && !renewal_due(r, now, window_days))
        .max_by_key(|r| r.not_after)
    {
        return Err(WebError::new(
            ErrorCode::CertificateValid,
            format!(
                "a valid certificate (serial {}) exists until {}; it can be obtained again from {} \
                 (within {} days of expiry), or after it is revoked",
                valid.serial,
                rfc3339(valid.not_after),
                rfc3339(valid.not_after - window),
                window_days
            ),
        ));
    }
    Ok(())
}

/// 取得前処理: authenticate, check eligibility, make a single-use ticket.
pub async fn preprocess(state: &Shared, login_id: String, password: Password) -> Result<(String, Ticket), WebError> {
    let account = state.authenticate(&login_id, password, "enrollment").await?;
    check_eligible(state, &account, OffsetDateTime::now_utc())?;
    let made = state.tickets.create(&account.login_id, state.settings.enrollment.ticket_ttl)?;
    tracing::info!(login_id = %account.login_id, "enrollment ticket created");
    state.audit("enrollment.preprocessed", serde_json::json!({ "login_id": account.login_id })).await;
    Ok(made)
}

impl From<TicketError> for WebError {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::Unknown => WebError::new(ErrorCode::TicketUnknown, "no such enrollment ticket"),
            TicketError::Expired => WebError::new(
                ErrorCode::TicketExpired,
                "the enrollment ticket has expired; sign in again to get a new one",
            ),
            TicketError::Used => WebError::new(
                ErrorCode::TicketUsed,
                "the enrollment ticket has already been used; sign in again to get a new one",
            ),
            TicketError::Busy => WebError::new(
                ErrorCode::IssuanceInProgress,
                "a certificate is being issued for this account now; wait for it and try again",
            ),
            TicketError::Unavailable => {
                WebError::unavailable("the service's storage is not answering; try again shortly")
            }
        }
    }
}

impl From<IssueError> for WebError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Rejected(message) => WebError::new(ErrorCode::CsrRejected, message),
            IssueError::Unavailable(message) => WebError::unavailable(format!(
                "the CA is unavailable; nothing was issued, try again shortly ({message})"
            )),
            other => WebError::internal("issuance", other),
        }
    }
}

/// What a successful issuance returns to the browser or API client.
#[derive(Debug, Serialize)]
pub struct IssuedBody {
    serial: String,
    subject: String,
    sha256_fingerprint: String,
    certificate_pem: String,
    chain_pem: String,
    not_before: String,
    not_after: String,
}

/// 発行: claim the ticket, have the CA issue, supersede the account's older certificates. The
/// ticket can be used again only when nothing was issued (the CSR or the account was refused,
/// the CA was unreachable); after any other failure, or when the request is cut off midway, it
/// is spent.
pub async fn issue(state: &Shared, token: &str, csr: &str) -> Result<IssuedBody, WebError> {
    // Decode before claiming the ticket: an unreadable CSR must not use it up.
    let csr_der =
        pki::encoding::decode_csr(csr.as_bytes()).map_err(|e| WebError::new(ErrorCode::CsrRejected, e.to_string()))?;
    let claim = state.tickets.claim(token)?;
    let ready = match account_may_issue(state, &claim.ticket().login_id) {
        Ok(account) => account,
        Err(e) => {
            claim.reopen();
            return Err(e);
        }
    };
    let issued = match issue_for(state, &ready.login_id, csr_der, Profile::Client, Vec::new()).await {
        Ok(issued) => issued,
        Err(Refused::NothingIssued(e)) => {
            claim.reopen();
            return Err(e);
        }
        Err(Refused::Failed(e)) => return Err(e),
    };
    claim.issued(issued.serial);

    let chain = [state.issuer.ca_certificate(), state.issuer.root_certificate()];
    let summary =
        pki::certificate::Summary::from_der(&issued.der).map_err(|e| WebError::internal("issued certificate", e))?;
    Ok(IssuedBody {
        serial: issued.serial.to_string(),
        subject: summary.subject,
        sha256_fingerprint: summary.sha256_fingerprint,
        certificate_pem: pki::encoding::pem_encode("CERTIFICATE", &issued.der),
        chain_pem: pki::encoding::certificates_pem(chain),
        not_before: rfc3339(issued.not_before),
        not_after: rfc3339(issued.not_after),
    })
}

/// The account `login_id`, checked again at issuance: active, unlocked, and eligible (another
/// ticket of the same account may have been used meanwhile).
fn account_may_issue(state: &Shared, login_id: &str) -> Result<Account, WebError> {
    let account = state.accounts.get(login_id)?.ok_or(AccountError::Inactive)?;
    if account.locked {
        return Err(crate::accounts::locked(&account).into());
    }
    if !account.active {
        return Err(AccountError::Inactive.into());
    }
    check_eligible(state, &account, OffsetDateTime::now_utc())?;
    Ok(account)
}

/// Why [`issue_for`] did not issue.
#[derive(Debug)]
pub enum Refused {
    /// Nothing was issued: the CSR was refused or the CA was unreachable. The same request may
    /// be made again.
    NothingIssued(WebError),
    /// The CA failed; it may have signed.
    Failed(WebError),
}

impl From<Refused> for WebError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NothingIssued(e) | Refused::Failed(e) => e,
        }
    }
}

/// Has the CA issue a certificate for `login_id` from `csr_der` under `profile` (`sans` for a
/// server), superseding the account's older certificates (再取得) in the same durable write,
/// and tells the running service. Whoever calls has authenticated the account.
pub async fn issue_for(
    state: &Shared,
    login_id: &str,
    csr_der: Vec<u8>,
    profile: Profile,
    sans: Vec<pki::profile::San>,
) -> Result<IssuedCertificate, Refused> {
    let mut request_id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut request_id).map_err(|e| Refused::NothingIssued(WebError::internal("random", e)))?;
    let order = IssueOrder {
        csr_der,
        account: login_id.to_owned(),
        profile,
        sans,
        days: Some(state.settings.enrollment.validity_days),
        request_id,
        supersede: true,
    };
    let issuer = state.issuer.clone();
    let issued = match blocking(move || issuer.issue(&order)).await.map_err(Refused::Failed)? {
        Ok(issued) => issued,
        Err(e @ (IssueError::Rejected(_) | IssueError::Unavailable(_))) => {
            return Err(Refused::NothingIssued(e.into()));
        }
        Err(e) => return Err(Refused::Failed(e.into())),
    };
    tracing::info!(%login_id, serial = %issued.serial, superseded = ?issued.superseded, "certificate issued");
    state.issued(&issued.serial);
    state.revoked(&issued.superseded);
    // The issuer's own audit line (certificate.issued) records the issuance.
    Ok(issued)
}

// ---- JSON API ---------------------------------------------------------------------------

/// `POST /api/v1/enrollments` body.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    login_id: String,
    password: Password,
}

/// `POST /api/v1/enrollments`: 取得前処理 for machine clients.
pub async fn api_create(
    state: axum::extract::State<Shared>,
    Peer(conn): Peer,
    body: Result<JsonBody<Credentials>, WebError>,
) -> Result<Response, WebError> {
    state.rate_limit(conn.remote)?;
    let JsonBody(body) = body?;
    let (ticket, t) = preprocess(&state, body.login_id, body.password).await?;
    let out = serde_json::json!({ "ticket": ticket, "expires_at": rfc3339(t.expires_at) });
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `POST /api/v1/enrollments/{ticket}/csr` body.
#[derive(Debug, Deserialize)]
pub struct CsrBody {
    csr_pem: String,
}

/// `POST /api/v1/enrollments/{ticket}/csr`: 発行.
pub async fn api_csr(
    state: axum::extract::State<Shared>,
    Peer(conn): Peer,
    Path(ticket): Path<String>,
    body: Result<JsonBody<CsrBody>, WebError>,
) -> Result<Response, WebError> {
    state.rate_limit(conn.remote)?;
    let JsonBody(body) = body?;
    let issued = issue(&state, &ticket, &body.csr_pem).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `POST /api/v1/enrollments/{ticket}/installed`: the page saved the certificate.
pub async fn api_installed(
    state: axum::extract::State<Shared>,
    Path(ticket): Path<String>,
) -> Result<StatusCode, WebError> {
    let serial = state.tickets.mark_installed(&ticket)?;
    tracing::info!(%serial, "certificate saved by the browser");
    state.audit("enrollment.installed", serde_json::json!({ "serial": serial })).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Pages ------------------------------------------------------------------------------

const CSRF_COOKIE: &str = "inkan_csrf";

fn form_page(lang: Lang, reacquire: bool, csrf: &str, error: Option<String>, login_id: &str) -> AcquirePage {
    let t = lang.text();
    let frame = if reacquire {
        Frame::new(lang, t.reacquire_title, "/cert/reacquire")
    } else {
        Frame::new(lang, t.acquire_title, "/cert/acquire")
    };
    AcquirePage {
        frame: frame.with_acquire_script(),
        lead: if reacquire { t.reacquire_lead } else { t.acquire_lead },
        error,
        csrf: csrf.to_owned(),
        mode: if reacquire { "reacquire" } else { "acquire" },
        login_id: login_id.to_owned(),
    }
}

fn with_csrf_cookie(status: StatusCode, page: &AcquirePage) -> Response {
    html::with_cookie(html::render(status, page), html::set_cookie(CSRF_COOKIE, &page.csrf, "/cert", 3600))
}

/// The form's CSRF purpose.
const PURPOSE: &str = "acquire";

fn show_form(state: &Shared, headers: &HeaderMap, lang: Lang, reacquire: bool) -> Response {
    let csrf = html::cookie(headers, CSRF_COOKIE)
        .filter(|c| state.csrf.made(c, PURPOSE))
        .unwrap_or_else(|| state.csrf.token(PURPOSE));
    with_csrf_cookie(StatusCode::OK, &form_page(lang, reacquire, &csrf, None, ""))
}

/// `GET /cert/acquire`: 電子証明書取得.
pub async fn acquire_form(state: axum::extract::State<Shared>, lang: Lang, headers: HeaderMap) -> Response {
    show_form(&state, &headers, lang, false)
}

/// `GET /cert/reacquire`: 電子証明書再取得 (the same pipeline).
pub async fn reacquire_form(state: axum::extract::State<Shared>, lang: Lang, headers: HeaderMap) -> Response {
    show_form(&state, &headers, lang, true)
}

/// The acquisition form's fields.
#[derive(Debug, Deserialize)]
pub struct AcquireForm {
    csrf: String,
    #[serde(default)]
    mode: String,
    login_id: String,
    password: Password,
}

/// `POST /cert/acquire`: 取得前処理; answers the 取得開始 page, or the form with the reason.
pub async fn acquire_submit(
    state: axum::extract::State<Shared>,
    Peer(conn): Peer,
    lang: Lang,
    headers: HeaderMap,
    form: Result<Form<AcquireForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = html::cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
            let fresh = state.csrf.token(PURPOSE);
            return with_csrf_cookie(status, &form_page(lang, false, &fresh, Some(e.body_text()), ""));
        }
    };
    let reacquire = form.mode == "reacquire";
    if !state.csrf.check(&csrf, &form.csrf, PURPOSE) {
        let error = WebError::new(ErrorCode::Csrf, "the form expired; please try again");
        let page = form_page(lang, reacquire, &state.csrf.token(PURPOSE), Some(lang.error(&error)), &form.login_id);
        return with_csrf_cookie(StatusCode::FORBIDDEN, &page);
    }
    let login_id = form.login_id.clone();
    let result = match state.rate_limit(conn.remote) {
        Ok(()) => preprocess(&state, form.login_id, form.password).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((ticket, t)) => {
            let page = StartPage {
                frame: Frame::new(lang, lang.text().start_title, "/cert/acquire").with_acquire_script(),
                ticket,
                login_id: t.login_id.clone(),
                expires: rfc3339(t.expires_at),
            };
            html::render(StatusCode::OK, &page)
        }
        Err(e) => with_csrf_cookie(e.status(), &form_page(lang, reacquire, &csrf, Some(lang.error(&e)), &login_id)),
    }
}

/// `GET /`: the acquisition page (an explicit `?lang=en` is kept; the page detects the rest).
pub async fn root(uri: axum::http::Uri) -> Redirect {
    let english = uri.query().unwrap_or_default().split('&').any(|pair| pair == "lang=en");
    Redirect::to(if english { "/cert/acquire?lang=en" } else { "/cert/acquire" })
}
