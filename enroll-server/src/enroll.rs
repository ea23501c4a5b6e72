//! The acquisition pipeline (manual 004) on the public listener: 電子証明書取得 →
//! 取得前処理 → 取得開始 → 発行処理中 → install, as pages and as the JSON API.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use pki::Profile;
use pki::registry::{CertRecord, Status};
use pki::request::IssueOrder;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::accounts::{Account, AccountError, Password};
use crate::backend::IssueError;
use crate::error::ApiError;
use crate::html::{self, esc, page};
use crate::i18n::Lang;
use crate::state::{Connection, Shared};
use crate::tokens::{Ticket, TicketError, random_token};

/// `?lang=`.
#[derive(Debug, Deserialize, Default)]
pub struct LangQuery {
    pub(crate) lang: Option<String>,
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub(crate) fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::InvalidCredentials => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", e.to_string())
        }
        AccountError::Locked { .. } => ApiError::new(StatusCode::FORBIDDEN, "account_locked", e.to_string()),
        AccountError::Inactive => ApiError::new(StatusCode::FORBIDDEN, "account_inactive", e.to_string()),
        AccountError::Store(detail) => ApiError::internal("account store", detail),
        other => ApiError::bad_request("invalid_request", other.to_string()),
    }
}

pub(crate) fn registry_error(e: pki::registry::RegistryError) -> ApiError {
    ApiError::internal("registry", e)
}

/// Appends to the audit trail (durable) off the async threads.
pub(crate) async fn audit(state: &Shared, event: &'static str, details: serde_json::Value) {
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || state.audit.record(event, details)).await;
}

/// Audits a failed password check, and the lockout it may have caused.
pub(crate) async fn audit_auth_failure(state: &Shared, login_id: &str, via: &str, e: &AccountError) {
    let code = account_error(e.clone()).code;
    audit(state, "login.failure", serde_json::json!({ "login_id": login_id, "via": via, "code": code })).await;
    if let AccountError::Locked { newly: true, .. } = e {
        audit(state, "account.locked", serde_json::json!({ "login_id": login_id })).await;
    }
}

/// Runs blocking work (password hashing, durable writes, signing) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal("blocking task", e))
}

fn rate_limit(state: &Shared, conn: &Connection) -> Result<(), ApiError> {
    state.limiter.check(conn.remote.ip()).map_err(ApiError::rate_limited)
}

/// Whether a valid certificate is inside the renewal window: the one rule the home page's
/// banner, `/api/v1/me` and enrollment all use.
pub(crate) fn renewal_due(record: &CertRecord, now: OffsetDateTime, window_days: u32) -> bool {
    record.status(now) == Status::Valid && record.not_after - now <= time::Duration::days(i64::from(window_days))
}

/// Whether `account` may obtain a certificate now: not while it holds a valid certificate
/// that is outside the renewal window.
fn check_eligible(state: &Shared, account: &Account, now: OffsetDateTime) -> Result<(), ApiError> {
    let window_days = state.settings.enrollment.renewal_window_days;
    let window = time::Duration::days(i64::from(window_days));
    let records = state.registry.valid_by_account(&account.login_id).map_err(registry_error)?;
    if let Some(valid) = records
        .iter()
        .filter(|r| r.status(now) == Status::Valid && !renewal_due(r, now, window_days))
        .max_by_key(|r| r.not_after)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "certificate_valid",
            format!(
                "a valid certificate (serial {}) exists until {}; it can be obtained again from {} \
                 (within {} days of expiry), or after it is revoked",
                valid.serial,
                rfc3339(valid.not_after),
                rfc3339(valid.not_after - window),
                state.settings.enrollment.renewal_window_days
            ),
        ));
    }
    Ok(())
}

/// 取得前処理: authenticate, check eligibility, make a single-use ticket.
async fn preprocess(state: &Shared, login_id: String, password: Password) -> Result<(String, Ticket), ApiError> {
    let accounts_state = state.clone();
    let id = login_id.clone();
    let account = match blocking(move || accounts_state.accounts.authenticate(&id, &password)).await? {
        Ok(account) => account,
        Err(e) => {
            audit_auth_failure(state, &login_id, "enrollment", &e).await;
            return Err(account_error(e));
        }
    };
    check_eligible(state, &account, OffsetDateTime::now_utc())?;
    let made = state.tickets.create(&account.login_id, state.settings.enrollment.ticket_ttl);
    tracing::info!(login_id = %account.login_id, "enrollment ticket created");
    audit(state, "enrollment.preprocessed", serde_json::json!({ "login_id": account.login_id })).await;
    Ok(made)
}

fn ticket_error(e: TicketError) -> ApiError {
    match e {
        TicketError::Unknown => ApiError::new(StatusCode::NOT_FOUND, "ticket_unknown", "no such enrollment ticket"),
        TicketError::Expired => ApiError::new(
            StatusCode::GONE,
            "ticket_expired",
            "the enrollment ticket has expired; sign in again to get a new one",
        ),
        TicketError::Used => ApiError::new(
            StatusCode::CONFLICT,
            "ticket_used",
            "the enrollment ticket has already been used; sign in again to get a new one",
        ),
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

/// 発行: validate the ticket, have the CA issue, supersede the account's older certificates.
async fn issue(state: &Shared, token: &str, csr: &str) -> Result<IssuedBody, ApiError> {
    // Decode before claiming the ticket: an unreadable CSR must not use it up.
    let csr_der = pki::encoding::decode_one(csr.as_bytes(), "CSR", &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "csr_rejected", e.to_string()))?;
    let ticket = state.tickets.begin_issue(token).map_err(ticket_error)?;
    let result = issue_claimed(state, &ticket, csr_der).await;
    state.tickets.finish_issue(token, result.as_ref().ok().map(|(serial, _)| *serial));
    result.map(|(_, body)| body)
}

async fn issue_claimed(
    state: &Shared,
    ticket: &Ticket,
    csr_der: Vec<u8>,
) -> Result<(pki::Serial, IssuedBody), ApiError> {
    let login_id = ticket.login_id.clone();
    let account =
        state.accounts.get(&login_id).map_err(account_error)?.ok_or(AccountError::Inactive).map_err(account_error)?;
    if account.locked {
        return Err(account_error(crate::accounts::locked(&account)));
    }
    if !account.active {
        return Err(account_error(AccountError::Inactive));
    }
    // Again at issuance: another ticket of the same account may have been used meanwhile.
    check_eligible(state, &account, OffsetDateTime::now_utc())?;
    let mut request_id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut request_id).map_err(|e| ApiError::internal("random", e))?;
    let order = IssueOrder {
        csr_der,
        account: login_id.clone(),
        profile: Profile::Client,
        sans: Vec::new(),
        days: Some(state.settings.enrollment.validity_days),
        request_id,
        // 再取得: the older certificates of the account are superseded by the new one, in the
        // same durable write that records it.
        supersede: true,
    };
    let issuer = state.issuer.clone();
    let issued = blocking(move || issuer.issue(&order)).await?.map_err(|e| match e {
        IssueError::Rejected(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "csr_rejected", message),
        IssueError::Unavailable(message) => {
            ApiError::unavailable(format!("the CA is unavailable; nothing was issued, try again shortly ({message})"))
        }
        other => ApiError::internal("issuance", other),
    })?;
    tracing::info!(login_id = %login_id, serial = %issued.serial, superseded = ?issued.superseded, "certificate issued");
    state.metrics.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.revoked(&issued.superseded);
    // The issuer's own audit line (certificate.issued) records this step of the enrollment.

    let chain = [state.issuer.ca_certificate(), state.issuer.root_certificate()];
    let summary =
        pki::certificate::Summary::from_der(&issued.der).map_err(|e| ApiError::internal("issued certificate", e))?;
    Ok((
        issued.serial,
        IssuedBody {
            serial: issued.serial.to_string(),
            subject: summary.subject,
            sha256_fingerprint: summary.sha256_fingerprint,
            certificate_pem: pki::encoding::pem_encode("CERTIFICATE", &issued.der),
            chain_pem: pki::encoding::certificates_pem(chain),
            not_before: rfc3339(issued.not_before),
            not_after: rfc3339(issued.not_after),
        },
    ))
}

// ---- JSON API ---------------------------------------------------------------------------

/// `POST /api/v1/enrollments` body.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    login_id: String,
    password: Password,
}

pub(crate) fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
        } else {
            ApiError::bad_request("invalid_json", e.body_text())
        }
    })
}

/// `POST /api/v1/enrollments`: 取得前処理 for machine clients.
pub async fn api_create(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &conn)?;
    let body = json_body(body)?;
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
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    Path(ticket): Path<String>,
    body: Result<Json<CsrBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &conn)?;
    let body = json_body(body)?;
    let issued = issue(&state, &ticket, &body.csr_pem).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `POST /api/v1/enrollments/{ticket}/installed`: the page saved the certificate.
pub async fn api_installed(State(state): State<Shared>, Path(ticket): Path<String>) -> Result<StatusCode, ApiError> {
    let serial = state.tickets.mark_installed(&ticket).map_err(ticket_error)?;
    tracing::info!(%serial, "certificate saved by the browser");
    audit(&state, "enrollment.installed", serde_json::json!({ "serial": serial })).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Pages ------------------------------------------------------------------------------

const CSRF_COOKIE: &str = "inkan_csrf";

fn form_page(lang: Lang, reacquire: bool, csrf: &str, error: Option<&str>, login_id: &str) -> String {
    let t = lang.text();
    let (title, lead, path) = if reacquire {
        (t.reacquire_title, t.reacquire_lead, "/cert/reacquire")
    } else {
        (t.acquire_title, t.acquire_lead, "/cert/acquire")
    };
    let body = format!(
        r#"<p>{lead}</p>
{error}
<form method="post" action="/cert/acquire?lang={code}" id="acquire-form" data-testid="acquire-form">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="mode" value="{mode}">
<label>{login_id_label}<input name="login_id" autocomplete="username" required maxlength="64" value="{login_id}"></label>
<label>{password_label}<input name="password" type="password" autocomplete="current-password" required maxlength="256"></label>
<button type="submit" data-testid="submit-acquire">{obtain}</button>
</form>
<section id="preprocessing" class="progress" hidden data-testid="preprocessing">
<h2>{pre_title}</h2><p>{pre_lead}</p><div class="spinner"></div>
</section>
<nav><a href="/cert/reacquire?lang={code}">{reacquire_link}</a></nav>"#,
        lead = esc(lead),
        error = error.map(html::error_box).unwrap_or_default(),
        code = lang.code(),
        csrf = esc(csrf),
        mode = if reacquire { "reacquire" } else { "acquire" },
        login_id_label = esc(t.login_id),
        password_label = esc(t.password),
        login_id = esc(login_id),
        obtain = esc(t.obtain),
        pre_title = esc(t.preprocessing_title),
        pre_lead = esc(t.preprocessing_lead),
        reacquire_link = esc(t.reacquire_link),
    );
    page(lang, title, path, &body, &["/assets/acquire.js"]).0
}

fn with_csrf_cookie(status: StatusCode, html: String, csrf: &str) -> Response {
    let mut response = (status, axum::response::Html(html)).into_response();
    response.headers_mut().append(header::SET_COOKIE, html::set_cookie(CSRF_COOKIE, csrf, "/cert", 3600));
    response
}

async fn show_form(headers: HeaderMap, query: LangQuery, reacquire: bool) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let csrf = html::cookie(&headers, CSRF_COOKIE).filter(|c| c.len() == 64).unwrap_or_else(random_token);
    with_csrf_cookie(StatusCode::OK, form_page(lang, reacquire, &csrf, None, ""), &csrf)
}

/// `GET /cert/acquire`: 電子証明書取得.
pub async fn acquire_form(headers: HeaderMap, Query(query): Query<LangQuery>) -> Response {
    show_form(headers, query, false).await
}

/// `GET /cert/reacquire`: 電子証明書再取得 (the same pipeline).
pub async fn reacquire_form(headers: HeaderMap, Query(query): Query<LangQuery>) -> Response {
    show_form(headers, query, true).await
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
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
    form: Result<Form<AcquireForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let csrf = html::cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            let fresh = random_token();
            let html = form_page(lang, false, &fresh, Some(&e.body_text()), "");
            let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
            return with_csrf_cookie(status, html, &fresh);
        }
    };
    let reacquire = form.mode == "reacquire";
    if !crate::html::tokens_match(&csrf, &form.csrf) {
        let fresh = random_token();
        let message = "the form expired; please try again";
        let html = form_page(lang, reacquire, &fresh, Some(message), &form.login_id);
        return with_csrf_cookie(StatusCode::FORBIDDEN, html, &fresh);
    }
    let login_id = form.login_id.clone();
    let result = match rate_limit(&state, &conn) {
        Ok(()) => preprocess(&state, form.login_id, form.password).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((ticket, t)) => start_page(lang, &ticket, &t).into_response(),
        Err(e) => {
            let message = page_message(lang, &e);
            with_csrf_cookie(e.status, form_page(lang, reacquire, &csrf, Some(&message), &login_id), &csrf)
        }
    }
}

/// The message shown on a page for an API error, in the page's language where it matters.
fn page_message(lang: Lang, e: &ApiError) -> String {
    match (lang, e.code) {
        (Lang::Ja, "invalid_credentials") => "ログインIDまたはログインパスワードが正しくありません。".into(),
        (Lang::Ja, "account_locked") => {
            "パスワードを続けて間違えたため、ロックされています。管理者（マスターユーザ）にロック解除を依頼してください。".into()
        }
        (Lang::Ja, "account_inactive") => "このアカウントは利用できません。".into(),
        (Lang::Ja, "rate_limited") => "しばらく時間をおいてから、もう一度お試しください。".into(),
        (Lang::Ja, "certificate_valid") => format!("有効な電子証明書がすでにあります。({})", e.message),
        _ => e.message.clone(),
    }
}

fn start_page(lang: Lang, ticket: &str, t: &Ticket) -> axum::response::Html<String> {
    let x = lang.text();
    let body = format!(
        r#"<p class="done" id="preprocessed">{preprocessed}</p>
<section id="start" data-ticket="{ticket}" data-login-id="{login_id}" data-expires="{expires}" data-lang="{code}"
 data-title-issuing="{issuing_title}" data-title-installed="{installed_title}">
<p>{lead}</p>
<p class="note">{note}</p>
<label>{key_type}<select id="key-type" data-testid="key-type">
<option value="ecdsa-p256" selected>{ecdsa}</option><option value="rsa-2048">{rsa}</option></select></label>
<button type="button" id="start-issue" data-testid="start-issue">{obtain}</button>
<noscript><p class="error">{js}</p></noscript>
</section>
<section id="issuing" class="progress" hidden data-testid="issuing">
<p>{issuing_lead}</p><div class="spinner"></div>
</section>
<section id="installed" hidden data-testid="installed">
<p>{installed_lead}</p>
<dl>
<dt>{subject}</dt><dd id="cert-subject" data-testid="cert-subject"></dd>
<dt>{serial}</dt><dd id="cert-serial" data-testid="cert-serial"></dd>
<dt>{validity}</dt><dd id="cert-validity"></dd>
<dt>{fingerprint}</dt><dd id="cert-fingerprint" class="mono"></dd>
</dl>
<form id="p12-form">
<label>{p12_password}<input type="password" name="p12_password" id="p12_password" autocomplete="new-password" minlength="8" required></label>
<label>{p12_password_confirm}<input type="password" name="p12_password_confirm" id="p12_password_confirm" autocomplete="new-password" minlength="8" required></label>
<p class="hint">{hint}</p>
<p class="error" id="p12-error" role="alert" hidden></p>
<button type="submit" data-testid="download-p12">{download_p12}</button>
<button type="button" id="download-key-pem" data-testid="download-key-pem">{download_key}</button>
<button type="button" id="download-cert-pem" data-testid="download-cert-pem">{download_cert}</button>
</form>
<h3>{import_title}</h3>
<p>{import_steps}</p>
<p class="note">{macos}</p>
<p>{close}</p>
</section>
<p class="error" id="issue-error" role="alert" hidden data-testid="issue-error"></p>
<nav><a href="/cert/acquire?lang={code}">{back}</a></nav>"#,
        preprocessed = esc(x.preprocessed),
        ticket = esc(ticket),
        login_id = esc(&t.login_id),
        expires = esc(&rfc3339(t.expires_at)),
        code = lang.code(),
        lead = esc(x.start_lead),
        note = esc(x.start_note),
        key_type = esc(x.key_type),
        ecdsa = esc(x.key_ecdsa),
        rsa = esc(x.key_rsa),
        obtain = esc(x.obtain),
        js = esc(x.js_required),
        issuing_title = esc(x.issuing_title),
        issuing_lead = esc(x.issuing_lead),
        installed_title = esc(x.installed_title),
        installed_lead = esc(x.installed_lead),
        subject = esc(x.subject),
        serial = esc(x.serial),
        validity = esc(x.validity),
        fingerprint = esc(x.fingerprint),
        p12_password = esc(x.p12_password),
        p12_password_confirm = esc(x.p12_password_confirm),
        hint = esc(x.p12_password_hint),
        download_p12 = esc(x.download_p12),
        download_key = esc(x.download_key_pem),
        download_cert = esc(x.download_cert_pem),
        import_title = esc(x.import_title),
        import_steps = esc(x.import_steps),
        macos = esc(x.macos_note),
        close = esc(x.close_note),
        back = esc(x.back_to_start),
    );
    page(lang, x.start_title, "/cert/acquire", &body, &["/assets/acquire.js"])
}

/// `GET /`: the acquisition page.
pub async fn root(Query(query): Query<LangQuery>) -> Redirect {
    match query.lang.as_deref() {
        Some("en") => Redirect::to("/cert/acquire?lang=en"),
        _ => Redirect::to("/cert/acquire"),
    }
}

/// Days from `now` to `not_after`, rounded down, never negative.
pub fn days_left(record: &CertRecord, now: OffsetDateTime) -> i64 {
    (record.not_after - now).whole_days().max(0)
}
