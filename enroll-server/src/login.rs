//! 電子証明書ログイン on the certificate-login listener: the client certificate from the
//! handshake (checked against the live registry at every request) plus the login password;
//! then the account's home, where a master user manages its general users.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use pki::registry::{CertRecord, Status};
use pki::{RevocationReason, Serial};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, Password, Role};
use crate::enroll::{LangQuery, account_error, blocking, days_left, json_body, registry_error, renewal_due, rfc3339};
use crate::error::ApiError;
use crate::html::{self, esc, page};
use crate::i18n::Lang;
use crate::state::{Connection, Shared};
use crate::tokens::{Session, random_token};

const SESSION_COOKIE: &str = "inkan_session";
const CSRF_COOKIE: &str = "inkan_login_csrf";

/// The client certificate of this connection, if it is one of ours, valid now, not revoked
/// (live registry state), and its account is active and unlocked.
fn check_certificate(state: &Shared, conn: &Connection) -> Result<(CertRecord, Account), ApiError> {
    let Some(der) = &conn.client_certificate else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "certificate_required",
            "no client certificate was presented; obtain one first and restart the browser",
        ));
    };
    let refused = |code, message: String| ApiError::new(StatusCode::FORBIDDEN, code, message);
    let summary = pki::certificate::Summary::from_der(der)
        .map_err(|e| refused("certificate_unknown", format!("unreadable certificate: {e}")))?;
    let serial: Serial = summary
        .serial
        .parse()
        .map_err(|_| refused("certificate_unknown", "this certificate was not issued by inkan".into()))?;
    let record = state
        .registry
        .get(&serial)
        .map_err(registry_error)?
        .ok_or_else(|| refused("certificate_unknown", format!("certificate {serial} is not in the registry")))?;
    match record.status(OffsetDateTime::now_utc()) {
        Status::Valid => {}
        Status::Revoked => return Err(refused("certificate_revoked", format!("certificate {serial} is revoked"))),
        Status::Superseded => {
            return Err(refused(
                "certificate_superseded",
                format!("certificate {serial} was replaced by a newer one; use the new certificate"),
            ));
        }
        Status::Expired => {
            return Err(refused("certificate_expired", format!("certificate {serial} has expired; obtain it again")));
        }
        Status::Pending => {
            return Err(refused("certificate_unknown", format!("certificate {serial} was never issued")));
        }
    }
    let account = state.accounts.get(&record.account).map_err(account_error)?;
    match account {
        Some(a) if a.locked => Err(account_error(crate::accounts::locked(&a))),
        Some(a) if a.active => Ok((record, a)),
        _ => Err(refused("account_inactive", "the certificate's account is not active".into())),
    }
}

/// The session of this request: cookie, idle timeout, same certificate, still valid.
fn require_session(state: &Shared, conn: &Connection, headers: &HeaderMap) -> Result<(Session, Account), ApiError> {
    let (record, account) = check_certificate(state, conn)?;
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "login_required", "log in with your password first");
    let id = html::cookie(headers, SESSION_COOKIE).ok_or_else(unauthorized)?;
    let session = state.sessions.touch(&id, state.settings.session_idle_timeout).ok_or_else(unauthorized)?;
    if session.certificate != record.serial || session.login_id != account.login_id {
        return Err(unauthorized());
    }
    Ok((session, account))
}

async fn login(state: &Shared, conn: &Connection, password: Password) -> Result<(String, Account), ApiError> {
    state.limiter.check(conn.remote.ip()).map_err(ApiError::rate_limited)?;
    let (record, account) = check_certificate(state, conn)?;
    let accounts = state.clone();
    let login_id = account.login_id.clone();
    let result = blocking(move || accounts.accounts.authenticate(&login_id, &password)).await?;
    let account = match result {
        Ok(account) => account,
        Err(e) => {
            crate::enroll::audit_auth_failure(state, &account.login_id, "certificate-login", &e).await;
            return Err(account_error(e));
        }
    };
    let (id, _) = state.sessions.create(&account.login_id, record.serial);
    tracing::info!(login_id = %account.login_id, serial = %record.serial, "certificate login");
    crate::enroll::audit(
        state,
        "login.success",
        serde_json::json!({ "login_id": account.login_id, "serial": record.serial }),
    )
    .await;
    Ok((id, account))
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
    Extension(conn): Extension<Connection>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let (id, account) = login(&state, &conn, body.password).await?;
    let mut response = Json(serde_json::json!({ "login_id": account.login_id, "role": account.role })).into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(&id, &state));
    Ok(response)
}

fn me_json(state: &Shared, account: &Account, now: OffsetDateTime) -> Result<serde_json::Value, ApiError> {
    let window = i64::from(state.settings.enrollment.renewal_window_days);
    let mut records = state.registry.by_account(&account.login_id).map_err(registry_error)?;
    records.sort_by_key(|r| std::cmp::Reverse(r.not_after));
    let certificates: Vec<_> = records
        .iter()
        .filter(|r| r.status(now) != Status::Pending)
        .map(|r| {
            let status = r.status(now);
            serde_json::json!({
                "serial": r.serial.to_string(),
                "status": status.name(),
                "not_before": rfc3339(r.not_before),
                "not_after": rfc3339(r.not_after),
                "days_left": days_left(r, now),
                "renewal_due": renewal_due(r, now, state.settings.enrollment.renewal_window_days),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "login_id": account.login_id,
        "role": account.role,
        "master": account.master,
        "renewal_window_days": window,
        "certificates": certificates,
    }))
}

/// `GET /api/v1/me`: the account and its certificates with days to expiry.
pub async fn api_me(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, account) = require_session(&state, &conn, &headers)?;
    Ok(Json(me_json(&state, &account, OffsetDateTime::now_utc())?))
}

/// `POST /api/v1/users` body (a master adds a general user).
#[derive(Debug, Deserialize)]
pub struct NewUser {
    login_id: String,
    password: Password,
}

fn require_master(account: &Account) -> Result<(), ApiError> {
    if account.role == Role::Master {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "master_only", "only the contract's master user can do this"))
    }
}

async fn add_user(state: &Shared, master: &Account, user: NewUser) -> Result<Account, ApiError> {
    require_master(master)?;
    let accounts = state.clone();
    let master_id = master.login_id.clone();
    let created = blocking(move || {
        accounts.accounts.create(
            &user.login_id,
            Role::General,
            Some(&master_id),
            &user.password,
            OffsetDateTime::now_utc(),
        )
    })
    .await?
    .map_err(|e| match e {
        crate::accounts::AccountError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        other => account_error(other),
    })?;
    tracing::info!(master = %master.login_id, login_id = %created.login_id, "general user added");
    crate::enroll::audit(
        state,
        "user.created",
        serde_json::json!({ "by": master.login_id, "login_id": created.login_id, "role": "general" }),
    )
    .await;
    Ok(created)
}

async fn unlock_user(state: &Shared, master: &Account, login_id: &str) -> Result<Account, ApiError> {
    require_master(master)?;
    match state.accounts.get(login_id).map_err(account_error)? {
        Some(user) if user.master == master.login_id && user.role == Role::General => {}
        _ => return Err(ApiError::not_found()),
    }
    let accounts = state.clone();
    let id = login_id.to_owned();
    let user = blocking(move || accounts.accounts.unlock(&id)).await?.map_err(account_error)?;
    tracing::info!(master = %master.login_id, login_id = %user.login_id, "general user unlocked by master");
    crate::enroll::audit(
        state,
        "user.unlocked",
        serde_json::json!({ "by": master.login_id, "login_id": user.login_id }),
    )
    .await;
    Ok(user)
}

/// `POST /api/v1/users`.
pub async fn api_add_user(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    body: Result<Json<NewUser>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (_, master) = require_session(&state, &conn, &headers)?;
    let user = json_body(body)?;
    let created = add_user(&state, &master, user).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "login_id": created.login_id, "master": created.master })))
        .into_response())
}

/// `POST /api/v1/users/{login_id}/unlock`.
pub async fn api_unlock_user(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Path(login_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, master) = require_session(&state, &conn, &headers)?;
    let user = unlock_user(&state, &master, &login_id).await?;
    Ok(Json(serde_json::json!({ "login_id": user.login_id, "locked": user.locked })))
}

// ---- Pages ------------------------------------------------------------------------------

fn error_page(lang: Lang, status: StatusCode, title: &str, message: &str, state: &Shared) -> Response {
    let t = lang.text();
    let body = format!(
        r#"{}<nav><a href="{}/cert/acquire?lang={}">{}</a></nav>"#,
        html::error_box(message),
        esc(&state.public_url),
        lang.code(),
        esc(t.acquire_title)
    );
    (status, page(lang, title, "/", &body, &[])).into_response()
}

fn refusal_message(lang: Lang, e: &ApiError) -> String {
    match (lang, e.code) {
        (Lang::Ja, "certificate_required") => lang.text().no_certificate.into(),
        (Lang::Ja, "certificate_revoked") => "この電子証明書は失効しています。".into(),
        (Lang::Ja, "certificate_superseded") => {
            "この電子証明書は再取得により置き換えられました。新しい電子証明書をお使いください。".into()
        }
        (Lang::Ja, "certificate_expired") => "この電子証明書は有効期限が切れています。再取得してください。".into(),
        (Lang::Ja, "invalid_credentials") => "ログインパスワードが正しくありません。".into(),
        (Lang::Ja, "account_locked") => "パスワードを続けて間違えたため、ロックされています。".into(),
        (Lang::En, "certificate_required") => lang.text().no_certificate.into(),
        _ => e.message.clone(),
    }
}

fn login_form(lang: Lang, record: &CertRecord, csrf: &str, error: Option<&str>) -> Html<String> {
    let t = lang.text();
    let body = format!(
        r#"<p>{lead}</p>{error}
<dl><dt>{cert}</dt><dd data-testid="login-certificate">{account} ({serial_label} {serial})</dd></dl>
<form method="post" action="/login?lang={code}" data-testid="login-form">
<input type="hidden" name="csrf" value="{csrf}">
<label>{password}<input type="password" name="password" autocomplete="current-password" required maxlength="256"></label>
<button type="submit" data-testid="submit-login">{button}</button>
</form>"#,
        lead = esc(t.login_lead),
        error = error.map(html::error_box).unwrap_or_default(),
        cert = esc(t.login_certificate),
        account = esc(&record.account),
        serial_label = esc(t.serial),
        serial = record.serial,
        code = lang.code(),
        csrf = esc(csrf),
        password = esc(t.password),
        button = esc(t.login_button),
    );
    page(lang, t.login_title, "/", &body, &[])
}

/// `GET /` on the login listener: 電子証明書ログイン.
pub async fn login_page(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let t = lang.text();
    match check_certificate(&state, &conn) {
        Ok((record, _)) => {
            let csrf = random_token();
            let mut response = login_form(lang, &record, &csrf, None).into_response();
            response.headers_mut().append(header::SET_COOKIE, html::set_cookie(CSRF_COOKIE, &csrf, "/", 3600));
            response
        }
        Err(e) => error_page(lang, e.status, t.certificate_unusable, &refusal_message(lang, &e), &state),
    }
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    password: Password,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let t = lang.text();
    let csrf = html::cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let form = match form {
        Ok(Form(form)) if html::tokens_match(&csrf, &form.csrf) => form,
        _ => {
            let e = ApiError::new(StatusCode::FORBIDDEN, "csrf", "the form expired; open the login page again");
            return error_page(lang, e.status, t.error_title, &e.message, &state);
        }
    };
    match login(&state, &conn, form.password).await {
        Ok((id, _)) => {
            let mut response = Redirect::to(&format!("/home?lang={}", lang.code())).into_response();
            response.headers_mut().append(header::SET_COOKIE, session_cookie(&id, &state));
            response
        }
        Err(e) => match check_certificate(&state, &conn) {
            Ok((record, _)) if e.code != "account_locked" => {
                (e.status, login_form(lang, &record, &csrf, Some(&refusal_message(lang, &e)))).into_response()
            }
            _ => error_page(lang, e.status, t.certificate_unusable, &refusal_message(lang, &e), &state),
        },
    }
}

/// `GET /home`: the account, its certificates, the reissue banner; a master's users.
pub async fn home(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let t = lang.text();
    let (session, account) = match require_session(&state, &conn, &headers) {
        Ok(found) => found,
        Err(e) if e.code == "login_required" => {
            return Redirect::to(&format!("/?lang={}", lang.code())).into_response();
        }
        Err(e) => return error_page(lang, e.status, t.certificate_unusable, &refusal_message(lang, &e), &state),
    };
    match home_body(&state, lang, &session, &account) {
        Ok(body) => page(lang, t.home_title, "/home", &body, &[]).into_response(),
        Err(e) => error_page(lang, e.status, t.error_title, &e.message, &state),
    }
}

fn home_body(state: &Shared, lang: Lang, session: &Session, account: &Account) -> Result<String, ApiError> {
    let t = lang.text();
    let now = OffsetDateTime::now_utc();
    let me = me_json(state, account, now)?;
    let mut rows = String::new();
    let mut banner = String::new();
    for c in me["certificates"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        let days = c["days_left"].as_i64().unwrap_or_default();
        rows.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text("serial")),
            esc(&text("not_after")),
            if text("status") == "valid" { days.to_string() } else { "-".into() },
            esc(t.status(&text("status")))
        ));
        if c["serial"] == session.certificate.to_string() && c["renewal_due"] == true {
            banner = format!(
                r#"<p class="banner" data-testid="renewal-banner">{} {} — <a href="{}/cert/reacquire?lang={}">{}</a></p>"#,
                esc(t.renewal_banner),
                days,
                esc(&state.public_url),
                lang.code(),
                esc(t.reacquire_title)
            );
        }
    }
    let mut body = format!(
        r#"<p>{login_id_label}: <strong data-testid="home-login-id">{login_id}</strong> ({role_label}: {role})</p>
{banner}
<h2>{certs}</h2>
<table data-testid="certificates"><tr><th>{serial}</th><th>{validity}</th><th>{days_left}</th><th>{status}</th></tr>{rows}</table>"#,
        login_id_label = esc(t.login_id),
        login_id = esc(&account.login_id),
        role_label = esc(t.role),
        role = account.role.name(),
        certs = esc(t.your_certificates),
        serial = esc(t.serial),
        validity = esc(t.validity),
        days_left = esc(t.days_left),
        status = esc(t.status),
    );
    let valid: Vec<&serde_json::Value> = me["certificates"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["status"] == "valid").collect())
        .unwrap_or_default();
    if !valid.is_empty() {
        body.push_str(&format!("<h2>{}</h2>", esc(t.revoke_title)));
        for c in valid {
            let serial = c["serial"].as_str().unwrap_or_default();
            body.push_str(&format!("<p class=\"mono\">{}</p>", esc(serial)));
            body.push_str(&revoke_widget(lang, serial, &session.csrf, &OWN_REASONS));
        }
    }
    if account.role == Role::Master {
        let mut users = String::new();
        for user in state.accounts.list().map_err(account_error)? {
            if user.master != account.login_id || user.role != Role::General {
                continue;
            }
            let unlock = if user.locked {
                format!(
                    r#"{} <form method="post" action="/users/{}/unlock?lang={}" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" data-testid="unlock-{}">{}</button></form>"#,
                    esc(t.locked),
                    esc(&user.login_id),
                    lang.code(),
                    esc(&session.csrf),
                    esc(&user.login_id),
                    esc(t.unlock)
                )
            } else {
                String::new()
            };
            let mut certificates = String::new();
            for c in state.registry.valid_by_account(&user.login_id).map_err(registry_error)? {
                if c.status(now) == Status::Valid {
                    let serial = c.serial.to_string();
                    certificates.push_str(&format!("<div class=\"mono\">{serial}</div>"));
                    certificates.push_str(&revoke_widget(lang, &serial, &session.csrf, &MASTER_REASONS));
                }
            }
            users.push_str(&format!("<tr><td>{}</td><td>{unlock}{certificates}</td></tr>", esc(&user.login_id)));
        }
        if users.is_empty() {
            users = format!("<tr><td>{}</td></tr>", esc(t.none));
        }
        body.push_str(&format!(
            r#"<h2>{title}</h2><table data-testid="users">{users}</table>
<form method="post" action="/users?lang={code}" data-testid="add-user-form">
<input type="hidden" name="csrf" value="{csrf}">
<label>{login_id}<input name="login_id" required maxlength="64"></label>
<label>{password}<input type="password" name="password" autocomplete="new-password" required maxlength="256"></label>
<button type="submit">{add}</button></form>"#,
            title = esc(t.users_title),
            code = lang.code(),
            csrf = esc(&session.csrf),
            login_id = esc(t.login_id),
            password = esc(t.new_password),
            add = esc(t.add_user),
        ));
    }
    body.push_str(&format!(
        r#"<form method="post" action="/logout?lang={}"><input type="hidden" name="csrf" value="{}"><button type="submit">{}</button></form>"#,
        lang.code(),
        esc(&session.csrf),
        esc(t.logout)
    ));
    Ok(body)
}

/// Fields of the master's forms.
#[derive(Debug, Deserialize)]
pub struct MasterForm {
    csrf: String,
    login_id: Option<String>,
    password: Option<Password>,
}

/// A form posted from the home page: it carries the session's CSRF token.
trait SessionForm {
    fn csrf(&self) -> &str;
}

impl SessionForm for MasterForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl SessionForm for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Handles a home-page form: session and CSRF checks, then `action`, then back to /home (or
/// an error page saying why not).
async fn session_form<T: SessionForm>(
    state: Shared,
    conn: Connection,
    headers: HeaderMap,
    lang: Lang,
    form: Result<Form<T>, axum::extract::rejection::FormRejection>,
    action: impl AsyncFnOnce(&Shared, &Account, T) -> Result<(), ApiError>,
) -> Response {
    let t = lang.text();
    let (session, account) = match require_session(&state, &conn, &headers) {
        Ok(found) => found,
        Err(e) => return error_page(lang, e.status, t.error_title, &refusal_message(lang, &e), &state),
    };
    let form = match form {
        Ok(Form(form)) if html::tokens_match(&session.csrf, form.csrf()) => form,
        _ => return error_page(lang, StatusCode::FORBIDDEN, t.error_title, "the form expired", &state),
    };
    match action(&state, &account, form).await {
        Ok(()) => Redirect::to(&format!("/home?lang={}", lang.code())).into_response(),
        Err(e) => error_page(lang, e.status, t.error_title, &refusal_message(lang, &e), &state),
    }
}

/// `POST /users` (master): add a general user.
pub async fn add_user_form(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
    form: Result<Form<MasterForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    session_form(state, conn, headers, lang, form, async |state, master, form: MasterForm| {
        let (Some(login_id), Some(password)) = (form.login_id, form.password) else {
            return Err(ApiError::bad_request("invalid_form", "login ID and password are required"));
        };
        add_user(state, master, NewUser { login_id, password }).await.map(drop)
    })
    .await
}

/// `POST /users/{login_id}/unlock` (master).
pub async fn unlock_user_form(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Path(login_id): Path<String>,
    Query(query): Query<LangQuery>,
    form: Result<Form<MasterForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    session_form(state, conn, headers, lang, form, async move |state, master, _: MasterForm| {
        unlock_user(state, master, &login_id).await.map(drop)
    })
    .await
}

/// `POST /logout`.
pub async fn logout(State(state): State<Shared>, headers: HeaderMap, Query(query): Query<LangQuery>) -> Response {
    if let Some(id) = html::cookie(&headers, SESSION_COOKIE) {
        state.sessions.remove(&id);
    }
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    let mut response = Redirect::to(&format!("/?lang={}", lang.code())).into_response();
    response.headers_mut().append(header::SET_COOKIE, html::set_cookie(SESSION_COOKIE, "", "/", 0));
    response
}

// ---- Revocation from the web -----------------------------------------------------------

/// `POST /api/v1/certificates/{serial}/revoke` body.
#[derive(Debug, Deserialize)]
pub struct RevokeBody {
    password: Password,
    reason: String,
}

/// The reasons a user may give for its own certificate.
const OWN_REASONS: [RevocationReason; 2] = [RevocationReason::KeyCompromise, RevocationReason::CessationOfOperation];
/// The reasons a master may give for its general users' certificates.
const MASTER_REASONS: [RevocationReason; 5] = [
    RevocationReason::KeyCompromise,
    RevocationReason::CessationOfOperation,
    RevocationReason::AffiliationChanged,
    RevocationReason::PrivilegeWithdrawn,
    RevocationReason::Unspecified,
];

/// Revokes `serial` for `account` (its own certificate, or, for a master, one of its general
/// users'), after the account's password is entered again.
async fn revoke_certificate(
    state: &Shared,
    account: &Account,
    serial: &str,
    password: Password,
    reason: &str,
) -> Result<CertRecord, ApiError> {
    let serial: Serial =
        serial.parse().map_err(|e: pki::Error| ApiError::bad_request("invalid_serial", e.to_string()))?;
    let reason: RevocationReason =
        reason.parse().map_err(|e: pki::Error| ApiError::bad_request("invalid_reason", e.to_string()))?;
    let record = state.registry.get(&serial).map_err(registry_error)?.ok_or_else(ApiError::not_found)?;
    let allowed: &[RevocationReason] = if record.account == account.login_id {
        &OWN_REASONS
    } else if account.role == Role::Master
        && state
            .accounts
            .get(&record.account)
            .map_err(account_error)?
            .is_some_and(|user| user.role == Role::General && user.master == account.login_id)
    {
        &MASTER_REASONS
    } else {
        // Someone else's certificate: as if it did not exist.
        return Err(ApiError::not_found());
    };
    if !allowed.contains(&reason) {
        let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
        return Err(ApiError::bad_request(
            "reason_not_allowed",
            format!("reason {reason} is not allowed here; use one of {}", names.join(", ")),
        ));
    }
    // Confirm with the password (wrong ones count towards the lockout).
    let (accounts, login_id) = (state.clone(), account.login_id.clone());
    if let Err(e) = blocking(move || accounts.accounts.authenticate(&login_id, &password)).await? {
        crate::enroll::audit_auth_failure(state, &account.login_id, "revocation", &e).await;
        return Err(account_error(e));
    }
    let registry = state.registry.clone();
    let now = OffsetDateTime::now_utc();
    let revoked = blocking(move || registry.revoke(&serial, now, reason)).await?.map_err(|e| match e {
        pki::registry::RegistryError::WrongState { status, .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_revocable", format!("certificate {serial} is {status}"))
        }
        other => registry_error(other),
    })?;
    state.revoked(&[serial]);
    tracing::info!(by = %account.login_id, %serial, reason = reason.name(), "certificate revoked from the web");
    crate::enroll::audit(
        state,
        "certificate.revoked",
        serde_json::json!({ "by": account.login_id, "serial": serial, "account": revoked.account, "reason": reason.name() }),
    )
    .await;
    Ok(revoked)
}

/// `POST /api/v1/certificates/{serial}/revoke`.
pub async fn api_revoke(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, account) = require_session(&state, &conn, &headers)?;
    let body = json_body(body)?;
    let record = revoke_certificate(&state, &account, &serial, body.password, &body.reason).await?;
    Ok(Json(serde_json::json!({
        "serial": record.serial.to_string(),
        "status": record.status(OffsetDateTime::now_utc()).name(),
    })))
}

/// The revocation form's fields.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
    password: Password,
    reason: String,
}

/// `POST /certificates/{serial}/revoke` (form on the home page).
pub async fn revoke_form(
    State(state): State<Shared>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Query(query): Query<LangQuery>,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = Lang::detect(query.lang.as_deref(), &headers);
    // Revoking the certificate in use ends the session: the login page then says why.
    session_form(state, conn, headers, lang, form, async move |state, account, form: RevokeForm| {
        revoke_certificate(state, account, &serial, form.password, &form.reason).await.map(drop)
    })
    .await
}

/// A revocation form for one certificate on the home page.
fn revoke_widget(lang: Lang, serial: &str, csrf: &str, reasons: &[RevocationReason]) -> String {
    let t = lang.text();
    let options: String =
        reasons.iter().map(|r| format!(r#"<option value="{}">{}</option>"#, r.name(), esc(t.reason(*r)))).collect();
    format!(
        r#"<form method="post" action="/certificates/{serial}/revoke?lang={code}" class="revoke" data-testid="revoke-{serial}">
<input type="hidden" name="csrf" value="{csrf}">
<label>{reason_label}<select name="reason">{options}</select></label>
<label>{password}<input type="password" name="password" autocomplete="current-password" required maxlength="256"></label>
<button type="submit">{revoke}</button></form>"#,
        serial = esc(serial),
        code = lang.code(),
        csrf = esc(csrf),
        reason_label = esc(t.revocation_reason),
        password = esc(t.confirm_password),
        revoke = esc(t.revoke),
    )
}
