//! One-time passwords on the certificate-login listener: the code that finishes a login, token
//! issue (トークン発行) with its first verification (認証確認), the app's own provisioning, and a
//! master's unlock (利用停止解除) and revocation (失効) with its confirmation password.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, Password};
use crate::error::{ErrorCode, WebError};
use crate::extract::{JsonBody, Partial, Peer, SignedIn};
use crate::forms::error_page;
use crate::html;
use crate::i18n::Lang;
use crate::login::otp_stopped;
use crate::otp::{Provisioning, Verdict};
use crate::pages::{Frame, OtpCodePage, OtpTokenPage};
use crate::state::{Shared, blocking};
use crate::stores::{OtpState, OtpToken};
use crate::tokens::Stage;
use crate::users::{self, Actor};

/// A code, as sent.
#[derive(Deserialize)]
pub struct CodeBody {
    code: String,
}

impl std::fmt::Debug for CodeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeBody").finish_non_exhaustive()
    }
}

/// Checks `code` against `login_id`'s token in state `want`, off the async threads, and audits
/// what happened (never the code).
async fn check_code(state: &Shared, account: &Account, code: String, want: OtpState) -> Result<Verdict, WebError> {
    let (worker, login_id) = (state.clone(), account.login_id.clone());
    let verdict = blocking(move || worker.otp.check(&login_id, &code, want, OffsetDateTime::now_utc())).await??;
    let event = match verdict {
        Verdict::Accepted => "otp.accepted",
        Verdict::Wrong { .. } => "otp.wrong",
        Verdict::Stopped => "otp.stopped",
    };
    state.audit(event, serde_json::json!({ "login_id": account.login_id, "token": want_name(want) })).await;
    Ok(verdict)
}

fn want_name(want: OtpState) -> &'static str {
    match want {
        OtpState::Pending => "first verification",
        _ => "login",
    }
}

fn wrong_code(failures: u32, max: u32) -> WebError {
    let left = max.saturating_sub(failures);
    WebError::new(
        ErrorCode::InvalidOtp,
        format!("the one-time password is not correct or was already used; {left} more wrong code(s) stop OTP use"),
    )
}

/// The login's last step: the code, for a session at [`Stage::OtpPending`]. A stop ends the
/// half-finished login.
async fn finish_login(state: &Shared, partial: &Partial, code: String) -> Result<(), WebError> {
    if partial.session.stage != Stage::OtpPending {
        return Err(WebError::new(ErrorCode::InvalidRequest, "this session is not waiting for a one-time password"));
    }
    match check_code(state, &partial.account, code, OtpState::Active).await? {
        Verdict::Accepted => {
            state.sessions.set_stage(&partial.id, Stage::Complete)?;
            let serial = partial.session.certificate;
            tracing::info!(login_id = %partial.account.login_id, %serial, "certificate login with OTP");
            state
                .audit("login.success", serde_json::json!({ "login_id": partial.account.login_id, "otp": true }))
                .await;
            Ok(())
        }
        Verdict::Wrong { failures } => Err(wrong_code(failures, state.otp.settings.max_failures)),
        Verdict::Stopped => {
            state.sessions.remove(&partial.id)?;
            Err(otp_stopped(&partial.account))
        }
    }
}

/// `POST /api/v1/login/otp` `{"code"}`.
pub async fn api_login_otp(
    State(state): State<Shared>,
    peer: Peer,
    partial: Partial,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    state.rate_limit(peer.0.remote)?;
    finish_login(&state, &partial, body.code).await?;
    Ok(Json(serde_json::json!({ "login_id": partial.account.login_id, "role": partial.account.role })))
}

/// A new token, as asked.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    mail: String,
    activation_password: Password,
}

/// Token issue: a logged-in session, or one that may only set up a token.
async fn issue_token(state: &Shared, partial: &Partial, body: NewToken) -> Result<Provisioning, WebError> {
    if partial.session.stage == Stage::OtpPending {
        return Err(WebError::new(ErrorCode::OtpRequired, "finish logging in with your one-time password first"));
    }
    let (worker, login_id) = (state.clone(), partial.account.login_id.clone());
    let step = contract_of(state, &partial.account).and_then(|c| c.otp_step_secs);
    let provisioning = blocking(move || {
        worker.otp.issue(&login_id, &body.mail, &body.activation_password, step, OffsetDateTime::now_utc())
    })
    .await??;
    state.audit("otp.issued", serde_json::json!({ "login_id": partial.account.login_id })).await;
    Ok(provisioning)
}

/// `POST /api/v1/otp/tokens` `{"mail","activation_password"}` → 201 with the service ID, user
/// ID, otpauth URI and QR code (SVG).
pub async fn api_issue(
    State(state): State<Shared>,
    partial: Partial,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, WebError> {
    let provisioning = issue_token(&state, &partial, body).await?;
    let mut response = (StatusCode::CREATED, Json(&provisioning)).into_response();
    no_store(&mut response);
    Ok(response)
}

fn no_store(response: &mut Response) {
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
}

/// The first verification: the pending token becomes active, and a session that could only set
/// one up is logged in.
async fn verify_token(state: &Shared, partial: &Partial, code: String) -> Result<(), WebError> {
    match check_code(state, &partial.account, code, OtpState::Pending).await? {
        Verdict::Accepted => {
            if partial.session.stage == Stage::SetupOnly {
                state.sessions.set_stage(&partial.id, Stage::Complete)?;
            }
            Ok(())
        }
        Verdict::Wrong { failures } => Err(wrong_code(failures, state.otp.settings.max_failures)),
        Verdict::Stopped => Err(otp_stopped(&partial.account)),
    }
}

/// `POST /api/v1/otp/tokens/verify` `{"code"}`.
pub async fn api_verify(
    State(state): State<Shared>,
    peer: Peer,
    partial: Partial,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    state.rate_limit(peer.0.remote)?;
    verify_token(&state, &partial, body.code).await?;
    Ok(Json(serde_json::json!({ "login_id": partial.account.login_id, "state": "active" })))
}

/// `POST /api/v1/otp/hardware` body.
#[derive(Deserialize)]
pub struct HardwareBody {
    serial: String,
    code: String,
    #[serde(default = "ask_by_default")]
    ask_at_login: bool,
}

impl std::fmt::Debug for HardwareBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareBody").field("serial", &self.serial).finish_non_exhaustive()
    }
}

fn ask_by_default() -> bool {
    true
}

/// `POST /api/v1/otp/hardware` `{"serial","code","ask_at_login"}`: registers a hardware token
/// the operator imported, by its serial number and current code (manual 002).
pub async fn api_register_hardware(
    State(state): State<Shared>,
    peer: Peer,
    partial: Partial,
    JsonBody(body): JsonBody<HardwareBody>,
) -> Result<Response, WebError> {
    state.rate_limit(peer.0.remote)?;
    if partial.session.stage == Stage::OtpPending {
        return Err(WebError::new(ErrorCode::OtpRequired, "finish logging in with your one-time password first"));
    }
    let token = register_hardware(&state, &partial, body).await?;
    let out = serde_json::json!({ "serial": token.serial, "state": token.state, "ask_at_login": token.ask_at_login });
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Whether the account's contract (set on its master) is personal.
fn contract_personal(state: &Shared, account: &Account) -> bool {
    contract_of(state, account).is_some_and(|m| m.personal)
}

/// The account that holds the contract, if it can be read.
fn contract_of(state: &Shared, account: &Account) -> Option<Account> {
    state.accounts.contract_of(account).ok().flatten()
}

/// Registers a hardware token for the session's account, audits it, and finishes a login
/// that could only set up a token.
async fn register_hardware(state: &Shared, partial: &Partial, body: HardwareBody) -> Result<OtpToken, WebError> {
    let account = &partial.account;
    let personal = contract_personal(state, account);
    let (worker, login_id) = (state.clone(), account.login_id.clone());
    let serial = body.serial.trim().to_owned();
    let registered = {
        let serial = serial.clone();
        blocking(move || {
            worker.otp.register_hardware(
                &login_id,
                &serial,
                &body.code,
                body.ask_at_login,
                personal,
                OffsetDateTime::now_utc(),
            )
        })
        .await?
    };
    let ok = registered.is_ok();
    state
        .audit(
            "otp.hardware_registered",
            serde_json::json!({ "login_id": account.login_id, "serial": serial, "ok": ok }),
        )
        .await;
    let token = registered?;
    if partial.session.stage == Stage::SetupOnly {
        state.sessions.set_stage(&partial.id, Stage::Complete)?;
    }
    Ok(token)
}

/// The hardware form's fields (`ask_at_login` is a checkbox: present means yes).
#[derive(Deserialize)]
pub struct HardwareFields {
    csrf: String,
    serial: String,
    code: String,
    #[serde(default)]
    ask_at_login: Option<String>,
}

impl std::fmt::Debug for HardwareFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareFields").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl FormCsrf for HardwareFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /otp/hardware`: registers a hardware token from the page.
pub async fn hardware_submit(
    State(state): State<Shared>,
    peer: Peer,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<HardwareFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (partial, form) = match checked_form(&state, lang, partial, form) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    if partial.session.stage == Stage::OtpPending {
        return Redirect::to(&format!("/otp?lang={}", lang.code())).into_response();
    }
    let body = HardwareBody { serial: form.serial, code: form.code, ask_at_login: form.ask_at_login.is_some() };
    let result = match state.rate_limit(peer.0.remote) {
        Ok(()) => register_hardware(&state, &partial, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/home?lang={}", lang.code())).into_response(),
        Err(e) => html::render(e.status(), &token_page(&state, lang, &partial, None, Some(lang.error(&e)))),
    }
}

/// `POST /api/v1/otp/provision` body: what the app was shown, and the activation password.
#[derive(Debug, Deserialize)]
pub struct ProvisionBody {
    service_id: String,
    user_id: String,
    activation_password: Password,
}

/// `POST /api/v1/otp/provision` (the app's flow, 手順6): the secret, once.
pub async fn api_provision(
    State(state): State<Shared>,
    peer: Peer,
    JsonBody(body): JsonBody<ProvisionBody>,
) -> Result<Response, WebError> {
    state.rate_limit(peer.0.remote)?;
    let worker = state.clone();
    let user_id = body.user_id.clone();
    let secret = blocking(move || {
        worker.otp.provision(&body.service_id, &body.user_id, &body.activation_password, OffsetDateTime::now_utc())
    })
    .await?;
    let ok = secret.is_ok();
    state.audit("otp.provision", serde_json::json!({ "user_id": user_id, "ok": ok })).await;
    let mut response = Json(secret?).into_response();
    no_store(&mut response);
    Ok(response)
}

/// The confirmation a master gives for an administrative action: its static confirmation
/// password, or the digits of the customer-card cells it was asked.
#[derive(Deserialize, Default)]
pub struct Confirmation {
    #[serde(default)]
    password: Option<Password>,
    #[serde(default)]
    cells: Option<std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation").finish_non_exhaustive()
    }
}

/// `POST /api/v1/users/{login_id}/otp/unlock|revoke` body.
#[derive(Debug, Deserialize)]
pub struct ConfirmedBody {
    confirmation: Confirmation,
}

/// Checks the master's confirmation (wrong ones count towards its lock). A card answer is
/// one try: the cells asked are dropped whatever the answer.
async fn confirm(state: &Shared, signed_in: &SignedIn, confirmation: Confirmation) -> Result<(), WebError> {
    let master = &signed_in.account;
    let (worker, login_id) = (state.clone(), master.login_id.clone());
    let result = match (&master.card_sealed, confirmation) {
        (Some(sealed), Confirmation { cells: Some(answers), .. }) => {
            state.sessions.set_challenge(&signed_in.id, None)?;
            let Some(cells) = signed_in.session.challenge.clone() else {
                return Err(WebError::new(
                    ErrorCode::InvalidRequest,
                    "ask which cells first (GET /api/v1/confirmation-challenge), then give their digits",
                ));
            };
            let right = state.otp.open_card(&login_id, sealed)?.check(&cells, &answers);
            blocking(move || worker.accounts.count_confirmation(&login_id, right)).await?
        }
        (Some(_), _) => {
            return Err(WebError::new(
                ErrorCode::InvalidRequest,
                "this contract confirms with the customer card: give the digits of the cells asked",
            ));
        }
        (None, Confirmation { password: Some(password), .. }) => {
            blocking(move || worker.accounts.confirm(&login_id, &password)).await?
        }
        (None, _) => {
            return Err(WebError::new(ErrorCode::InvalidRequest, "give the confirmation password"));
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            state.audit("user.confirmation_failure", serde_json::json!({ "login_id": master.login_id })).await;
            Err(e.into())
        }
    }
}

/// `GET /api/v1/confirmation-challenge`: what the next confirmation asks for: the card's cells
/// (two, chosen now, for one answer) or the static password.
pub async fn api_challenge(
    State(state): State<Shared>,
    signed_in: SignedIn,
) -> Result<Json<serde_json::Value>, WebError> {
    if signed_in.account.card_sealed.is_none() {
        return Ok(Json(serde_json::json!({ "kind": "password" })));
    }
    let cells = crate::card::challenge()?;
    state.sessions.set_challenge(&signed_in.id, Some(cells.clone()))?;
    let labels: Vec<String> = cells.iter().map(|c| crate::card::label_ja(c)).collect();
    Ok(Json(serde_json::json!({ "kind": "card", "cells": cells, "labels": labels })))
}

/// What a master asks for a user's token.
#[derive(Clone, Copy, Debug)]
enum Action {
    Unlock,
    Revoke,
}

async fn master_action(
    state: &Shared,
    signed_in: &SignedIn,
    login_id: String,
    confirmation: Confirmation,
    action: Action,
) -> Result<OtpToken, WebError> {
    if signed_in.account.role != crate::accounts::Role::Master {
        return Err(WebError::new(ErrorCode::MasterOnly, "only the contract's master user can do this"));
    }
    confirm(state, signed_in, confirmation).await?;
    let (worker, master) = (state.clone(), signed_in.account.clone());
    blocking(move || {
        let (accounts, otp, audit) = (&worker.accounts, &worker.otp, worker.audit.as_ref());
        match action {
            Action::Unlock => users::unlock_otp(accounts, otp, audit, Actor::User(&master), &login_id),
            Action::Revoke => {
                users::revoke_otp(accounts, otp, audit, Actor::User(&master), &login_id, OffsetDateTime::now_utc())
            }
        }
    })
    .await?
}

fn token_json(state: &Shared, token: &OtpToken) -> serde_json::Value {
    serde_json::json!({
        "login_id": token.login_id,
        "state": token.state,
        "stopped": token.stopped,
        "reissue_from": token.revoked_at.map(|at| pki::encoding::rfc3339(state.otp.reissue_from(at))),
    })
}

/// `POST /api/v1/users/{login_id}/otp/unlock` (master, with its confirmation password).
pub async fn api_unlock(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(login_id): Path<String>,
    JsonBody(body): JsonBody<ConfirmedBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    let token = master_action(&state, &signed_in, login_id, body.confirmation, Action::Unlock).await?;
    Ok(Json(token_json(&state, &token)))
}

/// `POST /api/v1/users/{login_id}/otp/revoke` (master, with its confirmation password).
pub async fn api_revoke(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(login_id): Path<String>,
    JsonBody(body): JsonBody<ConfirmedBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    let token = master_action(&state, &signed_in, login_id, body.confirmation, Action::Revoke).await?;
    Ok(Json(token_json(&state, &token)))
}

// ---- Pages ------------------------------------------------------------------------------

fn checked_form<T: FormCsrf>(
    state: &Shared,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<T>, axum::extract::rejection::FormRejection>,
) -> Result<(Partial, T), Box<Response>> {
    let t = lang.text();
    let partial = partial.map_err(|e| Box::new(error_page(state, lang, t.error_title, &e)))?;
    match form {
        Ok(Form(form)) if html::tokens_match(&partial.session.csrf, form.csrf()) => Ok((partial, form)),
        _ => Err(Box::new(error_page(state, lang, t.error_title, &WebError::new(ErrorCode::Csrf, "the form expired")))),
    }
}

/// A form that carries the session's CSRF token.
pub trait FormCsrf {
    /// The token.
    fn csrf(&self) -> &str;
}

/// `GET /otp`: the one-time password that finishes the login.
pub async fn code_form(State(state): State<Shared>, lang: Lang, partial: Result<Partial, WebError>) -> Response {
    match partial {
        Ok(p) if p.session.stage == Stage::OtpPending => html::render(StatusCode::OK, &code_page(lang, &p, None)),
        Ok(_) => Redirect::to(&format!("/home?lang={}", lang.code())).into_response(),
        Err(e) => error_page(&state, lang, lang.text().error_title, &e),
    }
}

fn code_page(lang: Lang, partial: &Partial, error: Option<String>) -> OtpCodePage {
    let t = lang.text();
    OtpCodePage {
        frame: Frame::new(lang, t.otp_login_title, "/otp"),
        error,
        login_id: partial.account.login_id.clone(),
        csrf: partial.session.csrf.clone(),
    }
}

/// The code form's fields.
#[derive(Deserialize)]
pub struct CodeFields {
    csrf: String,
    code: String,
}

impl std::fmt::Debug for CodeFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeFields").finish_non_exhaustive()
    }
}

impl FormCsrf for CodeFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Which code a code form sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeStep {
    /// The code that finishes a login.
    Login,
    /// The first verification of a new token.
    FirstVerification,
}

/// A code form: checks, then home; a wrong code shows its page again with the reason.
async fn submit_code(
    state: &Shared,
    peer: &Peer,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<CodeFields>, axum::extract::rejection::FormRejection>,
    step: CodeStep,
) -> Response {
    let (partial, form) = match checked_form(state, lang, partial, form) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    let result = match (state.rate_limit(peer.0.remote), step) {
        (Ok(()), CodeStep::Login) => finish_login(state, &partial, form.code).await,
        (Ok(()), CodeStep::FirstVerification) => verify_token(state, &partial, form.code).await,
        (Err(e), _) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/home?lang={}", lang.code())).into_response(),
        Err(e) if e.code == ErrorCode::InvalidOtp => {
            let said = Some(lang.error(&e));
            match step {
                CodeStep::Login => html::render(e.status(), &code_page(lang, &partial, said)),
                CodeStep::FirstVerification => html::render(e.status(), &token_page(state, lang, &partial, None, said)),
            }
        }
        Err(e) => error_page(state, lang, lang.text().error_title, &e),
    }
}

/// `POST /otp`.
pub async fn code_submit(
    State(state): State<Shared>,
    peer: Peer,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<CodeFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    submit_code(&state, &peer, lang, partial, form, CodeStep::Login).await
}

/// `GET /otp/token`: token issue (トークン発行).
pub async fn token_form(State(state): State<Shared>, lang: Lang, partial: Result<Partial, WebError>) -> Response {
    match partial {
        Ok(p) if p.session.stage != Stage::OtpPending => {
            html::render(StatusCode::OK, &token_page(&state, lang, &p, None, None))
        }
        Ok(_) => Redirect::to(&format!("/otp?lang={}", lang.code())).into_response(),
        Err(e) => error_page(&state, lang, lang.text().error_title, &e),
    }
}

fn token_page(
    state: &Shared,
    lang: Lang,
    partial: &Partial,
    issued: Option<Provisioning>,
    error: Option<String>,
) -> OtpTokenPage {
    let t = lang.text();
    let current = state.otp.token(&partial.account.login_id).ok().flatten();
    let reissue_from = current
        .as_ref()
        .and_then(|tok| tok.revoked_at)
        .map(|at| state.otp.reissue_from(at))
        .filter(|from| *from > OffsetDateTime::now_utc())
        .map(|from| pki::encoding::rfc3339(from.to_offset(state.otp.settings.utc_offset)).replace('Z', ""));
    let pending = issued.is_some() || current.as_ref().is_some_and(|tok| tok.state == OtpState::Pending);
    OtpTokenPage {
        frame: Frame::new(lang, t.otp_token_title, "/otp/token"),
        error,
        login_id: partial.account.login_id.clone(),
        csrf: partial.session.csrf.clone(),
        setup_only: partial.session.stage == Stage::SetupOnly,
        active: current.as_ref().is_some_and(|tok| tok.state == OtpState::Active),
        pending,
        reissue_from,
        issued,
        personal: contract_personal(state, &partial.account),
    }
}

/// The token form's fields.
#[derive(Debug, Deserialize)]
pub struct TokenFields {
    csrf: String,
    mail: String,
    activation_password: Password,
}

impl FormCsrf for TokenFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /otp/token`: the token is issued; the page shows the QR code and asks for a code.
pub async fn token_submit(
    State(state): State<Shared>,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<TokenFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (partial, form) = match checked_form(&state, lang, partial, form) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    let body = NewToken { mail: form.mail, activation_password: form.activation_password };
    let mut response = match issue_token(&state, &partial, body).await {
        Ok(issued) => html::render(StatusCode::OK, &token_page(&state, lang, &partial, Some(issued), None)),
        Err(e) => html::render(e.status(), &token_page(&state, lang, &partial, None, Some(lang.error(&e)))),
    };
    no_store(&mut response);
    response
}

/// `POST /otp/token/verify`: the first code (認証確認).
pub async fn verify_submit(
    State(state): State<Shared>,
    peer: Peer,
    lang: Lang,
    partial: Result<Partial, WebError>,
    form: Result<Form<CodeFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    submit_code(&state, &peer, lang, partial, form, CodeStep::FirstVerification).await
}

/// The fields of a master's unlock and revoke forms: the confirmation password, or the digits
/// of the two card cells the page asked.
#[derive(Deserialize)]
pub struct MasterFields {
    csrf: String,
    #[serde(default)]
    confirmation: Option<Password>,
    #[serde(default)]
    cell_a: Option<String>,
    #[serde(default)]
    cell_b: Option<String>,
}

impl std::fmt::Debug for MasterFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterFields").finish_non_exhaustive()
    }
}

impl crate::forms::SessionForm for MasterFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl MasterFields {
    /// The confirmation the form carries, with the cells `signed_in` was asked.
    fn confirmation(self, signed_in: &SignedIn) -> Confirmation {
        match (&signed_in.session.challenge, self.cell_a, self.cell_b) {
            (Some([a, b]), Some(da), Some(db)) => Confirmation {
                password: None,
                cells: Some(std::collections::BTreeMap::from([(a.clone(), da), (b.clone(), db)])),
            },
            _ => Confirmation { password: self.confirmation, cells: None },
        }
    }
}

/// `POST /users/{login_id}/otp/unlock` (master).
pub async fn unlock_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    Path(login_id): Path<String>,
    form: Result<Form<MasterFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    master_form(state, signed_in, lang, login_id, form, Action::Unlock).await
}

/// `POST /users/{login_id}/otp/revoke` (master).
pub async fn revoke_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    Path(login_id): Path<String>,
    form: Result<Form<MasterFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    master_form(state, signed_in, lang, login_id, form, Action::Revoke).await
}

async fn master_form(
    state: Shared,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    login_id: String,
    form: Result<Form<MasterFields>, axum::extract::rejection::FormRejection>,
    action: Action,
) -> Response {
    crate::forms::session_form(&state, signed_in, lang, form, async move |state, signed_in, form: MasterFields| {
        let confirmation = form.confirmation(signed_in);
        master_action(state, signed_in, login_id, confirmation, action).await.map(drop)
    })
    .await
}
