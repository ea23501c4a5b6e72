//! 電子証明書ログイン on the certificate-login listener: the client certificate from the
//! handshake (checked against the live registry at every request, see `extract`) plus the
//! login password; then the account's home: its certificates, the reissue banner, revocation,
//! and a master's general users.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Redirect, Response};
use pki::encoding::rfc3339;
use pki::registry::Status;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, Password, Role};
use crate::error::{ErrorCode, WebError};
use crate::extract::{CertLogin, JsonBody, Peer, SESSION_COOKIE, SignedIn, check_certificate};
use crate::forms::error_page;
use crate::html;
use crate::i18n::{Lang, Text};
use crate::pages::{CertRow, Frame, HomePage, LoginPage, ReasonOption, UserRow};
use crate::policy::{days_left, renewal_due};
use crate::revocation::{MASTER_REASONS, OWN_REASONS};
use crate::state::Shared;
use crate::stores::{OtpState, OtpToken};
use crate::tokens::Stage;

const CSRF_COOKIE: &str = "inkan_login_csrf";
/// The login form's CSRF purpose.
const CSRF_PURPOSE: &str = "login";

/// Certificate (already checked) + password → a new session, whose ID is returned, at the
/// stage the user's token decides: a code still to come when it has an active token, setting
/// one up only when OTP is required and it has none. A user whose OTP use is stopped gets no
/// session. Callers count the attempt against the rate limit first.
async fn login(state: &Shared, cert: CertLogin, password: Password) -> Result<(String, Account, Stage), WebError> {
    let account = state.authenticate(&cert.account.login_id, password, "certificate-login").await?;
    let stage = match state.otp.active(&account.login_id)? {
        Some(token) if token.stopped => {
            state.audit("login.otp_stopped", serde_json::json!({ "login_id": account.login_id })).await;
            return Err(otp_stopped(&account));
        }
        Some(token) if !token.ask_at_login => Stage::Complete,
        Some(_) => Stage::OtpPending,
        None if state.otp.settings.required || contract_requires_otp(state, &account)? => Stage::SetupOnly,
        None => Stage::Complete,
    };
    let (id, _) = state.sessions.create(&account.login_id, cert.record.serial, stage)?;
    tracing::info!(login_id = %account.login_id, serial = %cert.record.serial, ?stage, "certificate login");
    let event = if stage == Stage::OtpPending { "login.password_ok" } else { "login.success" };
    state.audit(event, serde_json::json!({ "login_id": account.login_id, "serial": cert.record.serial })).await;
    Ok((id, account, stage))
}

/// Whether the account's contract (set on its master) requires OTP.
fn contract_requires_otp(state: &Shared, account: &Account) -> Result<bool, WebError> {
    Ok(state.accounts.contract_of(account)?.is_some_and(|m| m.otp_required))
}

/// The refusal for a user whose OTP use is stopped, naming who lifts it.
pub fn otp_stopped(account: &Account) -> WebError {
    let by = match account.role {
        Role::Master => "the operator",
        Role::General => "your contract's master user",
    };
    WebError::new(
        ErrorCode::OtpStopped,
        format!("one-time-password use is stopped after too many wrong codes; ask {by} to lift it"),
    )
}

fn session_cookie(id: &str, state: &Shared) -> axum::http::HeaderValue {
    html::set_cookie(SESSION_COOKIE, id, "/", state.settings.session_idle_timeout.as_secs())
}

// ---- JSON API ---------------------------------------------------------------------------

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    password: Password,
}

/// `POST /api/v1/login`: certificate (from the handshake) + password → session cookie.
pub async fn api_login(
    State(state): State<Shared>,
    peer: Peer,
    cert: Result<CertLogin, WebError>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, WebError> {
    state.rate_limit(peer.0.remote)?;
    let (id, account, stage) = login(&state, cert?, body.password).await?;
    let response = Json(serde_json::json!({
        "login_id": account.login_id,
        "role": account.role,
        "otp_required": stage == Stage::OtpPending,
        "otp_setup_required": stage == Stage::SetupOnly,
    }))
    .into_response();
    Ok(html::with_cookie(response, session_cookie(&id, &state)))
}

fn me_json(state: &Shared, account: &Account, now: OffsetDateTime) -> Result<serde_json::Value, WebError> {
    let window_days = state.settings.enrollment.renewal_window_days;
    let mut records = state.registry.by_account(&account.login_id)?;
    records.sort_by_key(|r| std::cmp::Reverse(r.not_after));
    let certificates: Vec<_> = records
        .iter()
        .filter(|r| r.status(now) != Status::Pending)
        .map(|r| {
            serde_json::json!({
                "serial": r.serial.to_string(),
                "status": r.status(now).name(),
                "not_before": rfc3339(r.not_before),
                "not_after": rfc3339(r.not_after),
                "days_left": days_left(r, now),
                "renewal_due": renewal_due(r, now, window_days),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "login_id": account.login_id,
        "role": account.role,
        "master": account.master,
        "renewal_window_days": i64::from(window_days),
        "certificates": certificates,
        "otp": state.otp.token(&account.login_id)?.map(|tok| serde_json::json!({
            "state": tok.state,
            "stopped": tok.stopped,
            "reissue_from": tok.revoked_at.map(|at| rfc3339(state.otp.reissue_from(at))),
        })),
    }))
}

/// `GET /api/v1/me`: the account and its certificates with days to expiry. A session, or an
/// access token with scope `certificates:read` over the certificate it is bound to.
pub async fn api_me(
    State(state): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    signed_in: Result<SignedIn, WebError>,
) -> Response {
    let account = match crate::oauth::grants::bearer_token(&headers) {
        Some(token) => match crate::oauth::grants::check_bearer(&state, &peer, token, "certificates:read").await {
            Ok(bearer) => bearer.account,
            Err(e) => return e.into_response(),
        },
        None => match signed_in {
            Ok(signed_in) => signed_in.account,
            Err(e) => return e.into_response(),
        },
    };
    match me_json(&state, &account, OffsetDateTime::now_utc()) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

// ---- Pages ------------------------------------------------------------------------------

fn login_page(lang: Lang, cert: &CertLogin, csrf: &str, error: Option<String>) -> LoginPage {
    LoginPage {
        frame: Frame::new(lang, lang.text().login_title, "/"),
        error,
        account: cert.record.account.clone(),
        serial: cert.record.serial.to_string(),
        csrf: csrf.to_owned(),
    }
}

/// What the login page says of a refused password.
fn login_error(lang: Lang, e: &WebError) -> String {
    match (lang, e.code) {
        (Lang::Ja, ErrorCode::InvalidCredentials) => lang.text().wrong_password.into(),
        _ => lang.error(e),
    }
}

/// `GET /` on the login listener: 電子証明書ログイン.
pub async fn login_form(State(state): State<Shared>, lang: Lang, cert: Result<CertLogin, WebError>) -> Response {
    match cert {
        Ok(cert) => {
            let csrf = state.csrf.token(CSRF_PURPOSE);
            let page = html::render(StatusCode::OK, &login_page(lang, &cert, &csrf, None));
            html::with_cookie(page, html::set_cookie(CSRF_COOKIE, &csrf, "/", 3600))
        }
        Err(e) => error_page(&state, lang, lang.text().certificate_unusable, &e),
    }
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginFields {
    csrf: String,
    password: Password,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<Shared>,
    peer: Peer,
    lang: Lang,
    headers: HeaderMap,
    form: Result<Form<LoginFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = lang.text();
    let csrf = html::cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let form = match form {
        Ok(Form(form)) if state.csrf.check(&csrf, &form.csrf, CSRF_PURPOSE) => form,
        _ => {
            let e = WebError::new(ErrorCode::Csrf, "the form expired; open the login page again");
            return error_page(&state, lang, t.error_title, &e);
        }
    };
    let result = match state.rate_limit(peer.0.remote).and_then(|()| check_certificate(&state, &peer.0)) {
        Ok(cert) => login(&state, cert, form.password).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((id, _, stage)) => {
            let next = match stage {
                Stage::Complete => "/home",
                Stage::OtpPending => "/otp",
                Stage::SetupOnly => "/otp/token",
            };
            html::with_cookie(
                Redirect::to(&format!("{next}?lang={}", lang.code())).into_response(),
                session_cookie(&id, &state),
            )
        }
        Err(e) => match check_certificate(&state, &peer.0) {
            Ok(cert) if e.code != ErrorCode::AccountLocked => {
                html::render(e.status(), &login_page(lang, &cert, &csrf, Some(login_error(lang, &e))))
            }
            _ => error_page(&state, lang, t.certificate_unusable, &e),
        },
    }
}

/// `GET /home`: the account, its certificates, the reissue banner; a master's users.
pub async fn home(State(state): State<Shared>, lang: Lang, signed_in: Result<SignedIn, WebError>) -> Response {
    let t = lang.text();
    let signed_in = match signed_in {
        Ok(found) => found,
        Err(e) if e.code == ErrorCode::LoginRequired => {
            return Redirect::to(&format!("/?lang={}", lang.code())).into_response();
        }
        Err(e) if e.code == ErrorCode::OtpRequired => {
            return Redirect::to(&format!("/otp?lang={}", lang.code())).into_response();
        }
        Err(e) if e.code == ErrorCode::OtpSetupRequired => {
            return Redirect::to(&format!("/otp/token?lang={}", lang.code())).into_response();
        }
        Err(e) => return error_page(&state, lang, t.certificate_unusable, &e),
    };
    match home_page(&state, lang, &signed_in) {
        Ok(page) => html::render(StatusCode::OK, &page),
        Err(e) => error_page(&state, lang, t.error_title, &e),
    }
}

/// A token's state, in the page's language.
fn otp_label(t: &'static Text, token: Option<&OtpToken>) -> &'static str {
    match token {
        None => t.otp_none,
        Some(tok) if tok.state == OtpState::Revoked => t.otp_revoked,
        Some(tok) if tok.stopped => t.otp_stopped,
        Some(tok) if tok.state == OtpState::Pending => t.otp_pending,
        Some(_) => t.otp_active,
    }
}

fn reasons(t: &'static Text, reasons: &[pki::RevocationReason]) -> Vec<ReasonOption> {
    reasons.iter().map(|r| ReasonOption { value: r.name(), label: t.reason(*r) }).collect()
}

fn home_page(state: &Shared, lang: Lang, signed_in: &SignedIn) -> Result<HomePage, WebError> {
    let t = lang.text();
    let now = OffsetDateTime::now_utc();
    let account = &signed_in.account;
    let window_days = state.settings.enrollment.renewal_window_days;
    let mut records = state.registry.by_account(&account.login_id)?;
    records.sort_by_key(|r| std::cmp::Reverse(r.not_after));
    records.retain(|r| r.status(now) != Status::Pending);
    let renewal_days = records
        .iter()
        .find(|r| r.serial == signed_in.session.certificate && renewal_due(r, now, window_days))
        .map(|r| days_left(r, now));
    let certificates = records
        .iter()
        .map(|r| {
            let status = r.status(now);
            CertRow {
                serial: r.serial.to_string(),
                not_after: rfc3339(r.not_after),
                days: if status == Status::Valid { days_left(r, now).to_string() } else { "-".into() },
                status: t.status(status.name()),
            }
        })
        .collect();
    let revocable = records.iter().filter(|r| r.status(now) == Status::Valid).map(|r| r.serial.to_string()).collect();
    let mut users = Vec::new();
    if account.role == Role::Master {
        for user in state.accounts.list()? {
            if user.master != account.login_id || user.role != Role::General {
                continue;
            }
            let certificates = state
                .registry
                .valid_by_account(&user.login_id)?
                .iter()
                .filter(|c| c.status(now) == Status::Valid && c.profile == pki::Profile::Client)
                .map(|c| c.serial.to_string())
                .collect();
            let token = state.otp.token(&user.login_id)?;
            users.push(UserRow {
                otp: otp_label(t, token.as_ref()),
                otp_stopped: token.as_ref().is_some_and(|tok| tok.stopped && tok.state != OtpState::Revoked),
                otp_revocable: token.as_ref().is_some_and(|tok| tok.state != OtpState::Revoked),
                login_id: user.login_id,
                locked: user.locked,
                certificates,
            });
        }
    }
    let own_token = state.otp.token(&account.login_id)?;
    // A master with a customer card confirms with two of its cells, chosen for this page.
    let card_cells = match (account.role, &account.card_sealed) {
        (Role::Master, Some(_)) => {
            let cells = crate::card::challenge()?;
            state.sessions.set_challenge(&signed_in.id, Some(cells.clone()))?;
            Some(cells.iter().map(|c| format!("{} ({c})", crate::card::label_ja(c))).collect())
        }
        _ => None,
    };
    Ok(HomePage {
        grants: crate::oauth::grants::grant_rows(state, lang, account)?,
        has_question: crate::oauth::grants::has_question(state, &account.login_id),
        ow: crate::oauth::grants::words(lang),
        card_cells,
        otp: otp_label(t, own_token.as_ref()),
        otp_revocable: own_token.as_ref().is_some_and(|tok| tok.state != OtpState::Revoked),
        frame: Frame::new(lang, t.home_title, "/home"),
        login_id: account.login_id.clone(),
        role: account.role.name(),
        renewal_days,
        public_url: state.public_url.clone(),
        certificates,
        revocable,
        own_reasons: reasons(t, &OWN_REASONS),
        master_reasons: reasons(t, &MASTER_REASONS),
        is_master: account.role == Role::Master,
        users,
        csrf: signed_in.session.csrf.clone(),
    })
}

/// The logout form's field: the session's token.
#[derive(Debug, Deserialize)]
pub struct LogoutFields {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session whose token the form carries (another site cannot log a
/// user out).
pub async fn logout(
    State(state): State<Shared>,
    lang: Lang,
    headers: HeaderMap,
    form: Result<Form<LogoutFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Some(id) = html::cookie(&headers, SESSION_COOKIE)
        && let Ok(Some(session)) = state.sessions.touch(&id, state.settings.session_idle_timeout)
    {
        let submitted = form.map(|Form(f)| f.csrf).unwrap_or_default();
        if !html::tokens_match(&session.csrf, &submitted) {
            let e = WebError::new(ErrorCode::Csrf, "the form expired; open the page again");
            return error_page(&state, lang, lang.text().error_title, &e);
        }
        if let Err(e) = state.sessions.remove(&id) {
            return error_page(&state, lang, lang.text().error_title, &WebError::from(e));
        }
    }
    html::with_cookie(
        Redirect::to(&format!("/?lang={}", lang.code())).into_response(),
        html::set_cookie(SESSION_COOKIE, "", "/", 0),
    )
}
