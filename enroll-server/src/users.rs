//! A contract's users: the master adds general users and unlocks them; the operator (through
//! the admin socket or the CLI) adds any user, unlocks any, sets passwords. One implementation
//! of each action serves both paths and writes the one audit line.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, Accounts, EnrollToken, Password, Role};
use crate::error::{ErrorCode, WebError};
use crate::extract::{JsonBody, SignedIn};
use crate::forms::{SessionForm, error_page, session_form};
use crate::i18n::Lang;
use crate::otp::Otp;
use crate::pages::{Frame, TokenPage};
use crate::ports::Audit;
use crate::state::{Shared, blocking};
use crate::stores::OtpToken;

/// Who acts.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    /// The operator, through the CLI.
    Operator,
    /// A logged-in user.
    User(&'a Account),
}

impl Actor<'_> {
    /// The name the audit trail gives it.
    pub fn name(&self) -> &str {
        match self {
            Self::Operator => "operator",
            Self::User(account) => &account.login_id,
        }
    }
}

/// Creates an account: the operator any; a master only general users of its own contract.
pub fn create(
    accounts: &Accounts,
    audit: &dyn Audit,
    by: Actor<'_>,
    login_id: &str,
    role: Role,
    master: Option<&str>,
    password: &Password,
) -> Result<Account, WebError> {
    let master = match by {
        Actor::Operator => master,
        Actor::User(user) if user.role == Role::Master && role == Role::General => Some(user.login_id.as_str()),
        Actor::User(_) => return Err(master_only()),
    };
    let account = accounts.create(login_id, role, master, password, OffsetDateTime::now_utc())?;
    tracing::info!(by = by.name(), login_id = %account.login_id, role = role.name(), "account created");
    audit.record(
        "user.created",
        serde_json::json!({ "by": by.name(), "login_id": account.login_id, "role": role.name(), "master": account.master }),
    );
    Ok(account)
}

/// Unlocks an account locked after wrong passwords: the operator any; a master its general
/// users (others are as if they did not exist).
pub fn unlock(accounts: &Accounts, audit: &dyn Audit, by: Actor<'_>, login_id: &str) -> Result<Account, WebError> {
    if let Actor::User(master) = by {
        if master.role != Role::Master {
            return Err(master_only());
        }
        match accounts.get(login_id)? {
            Some(user) if user.master == master.login_id && user.role == Role::General => {}
            _ => return Err(WebError::not_found()),
        }
    }
    let account = accounts.unlock(login_id)?;
    tracing::info!(by = by.name(), login_id = %account.login_id, "account unlocked");
    audit.record("user.unlocked", serde_json::json!({ "by": by.name(), "login_id": account.login_id }));
    Ok(account)
}

/// Sets an account's password (and unlocks it): the operator only.
pub fn set_password(
    accounts: &Accounts,
    audit: &dyn Audit,
    login_id: &str,
    password: &Password,
) -> Result<Account, WebError> {
    let account = accounts.set_password(login_id, password)?;
    tracing::info!(login_id = %account.login_id, "password set by the operator");
    audit.record("user.password_set", serde_json::json!({ "by": "operator", "login_id": account.login_id }));
    Ok(account)
}

/// Sets an account's allowed-names policy (empty clears it): the operator only.
pub fn set_allowed_names(
    accounts: &Accounts,
    audit: &dyn Audit,
    login_id: &str,
    names: Vec<pki::names::AllowedName>,
) -> Result<Account, WebError> {
    if names.len() > MAX_ALLOWED_NAMES {
        return Err(WebError::new(
            ErrorCode::InvalidRequest,
            format!("{} entries; a policy holds at most {MAX_ALLOWED_NAMES}", names.len()),
        ));
    }
    let account = accounts.set_allowed_names(login_id, names)?;
    let shown: Vec<String> = account.allowed_names.iter().map(ToString::to_string).collect();
    tracing::info!(login_id = %account.login_id, names = ?shown, "allowed names set by the operator");
    audit.record(
        "user.allowed_names_set",
        serde_json::json!({ "by": "operator", "login_id": account.login_id, "names": shown }),
    );
    Ok(account)
}

/// Makes a one-time EST enrollment token for `login_id`, returned once with its record: the
/// operator for any account, a master for itself and its general users (others are as if they
/// did not exist).
pub fn create_token(
    accounts: &Accounts,
    audit: &dyn Audit,
    by: Actor<'_>,
    login_id: &str,
    ttl: time::Duration,
    now: OffsetDateTime,
) -> Result<(zeroize::Zeroizing<String>, EnrollToken), WebError> {
    if let Actor::User(master) = by {
        if master.role != Role::Master {
            return Err(master_only());
        }
        if login_id != master.login_id {
            match accounts.get(login_id)? {
                Some(user) if user.master == master.login_id && user.role == Role::General => {}
                _ => return Err(WebError::not_found()),
            }
        }
    }
    let (secret, token) = accounts.create_token(login_id, ttl, by.name(), now)?;
    let expires_at = pki::encoding::rfc3339(token.expires_at);
    tracing::info!(by = by.name(), %login_id, %expires_at, "enrollment token created");
    audit.record(
        "est.token_created",
        serde_json::json!({ "by": by.name(), "login_id": login_id, "expires_at": expires_at }),
    );
    Ok((secret, token))
}

/// A master's token, after its password: the web form and the API.
async fn master_token(
    state: &Shared,
    master: &Account,
    login_id: String,
    password: Password,
    ttl_secs: i64,
) -> Result<(zeroize::Zeroizing<String>, EnrollToken), WebError> {
    if master.role != Role::Master {
        return Err(master_only());
    }
    // Confirm with the password (wrong ones count towards the lockout).
    state.authenticate(&master.login_id, password, "token").await?;
    let (state, master) = (state.clone(), master.clone());
    let ttl = time::Duration::seconds(ttl_secs);
    blocking(move || {
        create_token(
            &state.accounts,
            state.audit.as_ref(),
            Actor::User(&master),
            &login_id,
            ttl,
            OffsetDateTime::now_utc(),
        )
    })
    .await?
}

/// `POST /api/v1/users/{login_id}/tokens` body.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    password: Password,
    #[serde(default = "default_token_ttl")]
    ttl_secs: i64,
}

fn default_token_ttl() -> i64 {
    86_400
}

/// `POST /api/v1/users/{login_id}/tokens` (master): a one-time EST enrollment token for itself
/// or one of its users, answered once.
pub async fn api_create_token(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(login_id): Path<String>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, WebError> {
    let (secret, token) = master_token(&state, &signed_in.account, login_id, body.password, body.ttl_secs).await?;
    let out = serde_json::json!({
        "login_id": token.login_id,
        "token": secret.as_str(),
        "expires_at": pki::encoding::rfc3339(token.expires_at),
    });
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The token form's fields.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    csrf: String,
    login_id: String,
    password: Password,
    ttl: i64,
}

/// `POST /tokens` (master): the token, on a page of its own (shown once).
pub async fn token_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = lang.text();
    let signed_in = match signed_in {
        Ok(found) => found,
        Err(e) => return error_page(&state, lang, t.error_title, &e),
    };
    let form = match form {
        Ok(Form(form)) if crate::html::tokens_match(&signed_in.session.csrf, &form.csrf) => form,
        _ => return error_page(&state, lang, t.error_title, &WebError::new(ErrorCode::Csrf, "the form expired")),
    };
    match master_token(&state, &signed_in.account, form.login_id, form.password, form.ttl).await {
        Ok((secret, token)) => {
            let page = TokenPage {
                frame: Frame::new(lang, t.token_title, "/home"),
                login_id: token.login_id,
                token: secret,
                expires_at: pki::encoding::rfc3339(token.expires_at),
            };
            let mut response = crate::html::render(StatusCode::OK, &page);
            response
                .headers_mut()
                .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => error_page(&state, lang, t.error_title, &e),
    }
}

/// Sets an account's confirmation password: the operator only.
pub fn set_confirmation(
    accounts: &Accounts,
    audit: &dyn Audit,
    login_id: &str,
    confirmation: &Password,
) -> Result<Account, WebError> {
    let account = accounts.set_confirmation(login_id, confirmation)?;
    tracing::info!(login_id = %account.login_id, "confirmation password set by the operator");
    audit.record("user.confirmation_set", serde_json::json!({ "by": "operator", "login_id": account.login_id }));
    Ok(account)
}

/// Gives a master a new customer card: sealed on the account, returned once to be printed.
pub fn issue_card(
    accounts: &Accounts,
    otp: &Otp,
    audit: &dyn Audit,
    login_id: &str,
) -> Result<(Account, crate::card::Card), WebError> {
    match accounts.get(login_id)? {
        Some(account) if account.role == Role::Master => {}
        Some(_) => return Err(WebError::new(ErrorCode::InvalidRequest, "customer cards are for master users")),
        None => return Err(crate::accounts::AccountError::NotFound(login_id.to_owned()).into()),
    }
    let card = crate::card::Card::generate()?;
    let account = accounts.set_card(login_id, otp.seal_card(login_id, &card)?)?;
    tracing::info!(%login_id, "customer card issued by the operator");
    audit.record("user.card_issued", serde_json::json!({ "by": "operator", "login_id": login_id }));
    Ok((account, card))
}

/// Whom `by` may act on for OTP: the operator anyone; a master its general users (and itself
/// where `itself` allows); others nobody (as if the account did not exist).
fn may_manage(accounts: &Accounts, by: Actor<'_>, login_id: &str, itself: bool) -> Result<(), WebError> {
    if let Actor::User(master) = by {
        if master.role != Role::Master {
            return Err(master_only());
        }
        if itself && login_id == master.login_id {
            return Ok(());
        }
        match accounts.get(login_id)? {
            Some(user) if user.master == master.login_id && user.role == Role::General => {}
            _ => return Err(WebError::not_found()),
        }
    }
    Ok(())
}

/// Lifts an OTP stop (ワンタイムパスワード利用停止解除): a master for its general users, the
/// operator for anyone (a master's own stop only the operator lifts).
pub fn unlock_otp(
    accounts: &Accounts,
    otp: &Otp,
    audit: &dyn Audit,
    by: Actor<'_>,
    login_id: &str,
) -> Result<OtpToken, WebError> {
    may_manage(accounts, by, login_id, false)?;
    let token = otp.unlock(login_id)?;
    tracing::info!(by = by.name(), %login_id, "OTP stop lifted");
    audit.record("otp.unlocked", serde_json::json!({ "by": by.name(), "login_id": login_id }));
    Ok(token)
}

/// Revokes an OTP token (トークンの失効): a master for itself and its general users, the
/// operator for anyone.
pub fn revoke_otp(
    accounts: &Accounts,
    otp: &Otp,
    audit: &dyn Audit,
    by: Actor<'_>,
    login_id: &str,
    now: OffsetDateTime,
) -> Result<OtpToken, WebError> {
    may_manage(accounts, by, login_id, true)?;
    let token = otp.revoke(login_id, now)?;
    let from = token.revoked_at.map(|at| pki::encoding::rfc3339(otp.reissue_from(at)));
    tracing::info!(by = by.name(), %login_id, "OTP token revoked");
    audit.record("otp.revoked", serde_json::json!({ "by": by.name(), "login_id": login_id, "reissue_from": from }));
    Ok(token)
}

/// The most entries an allowed-names policy holds.
pub const MAX_ALLOWED_NAMES: usize = 100;

fn master_only() -> WebError {
    WebError::new(ErrorCode::MasterOnly, "only the contract's master user can do this")
}

/// A new general user, from the API or the home page.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    login_id: String,
    password: Password,
}

async fn add_general_user(state: &Shared, master: &Account, user: NewUser) -> Result<Account, WebError> {
    if master.role != Role::Master {
        return Err(master_only());
    }
    let (state, master) = (state.clone(), master.clone());
    blocking(move || {
        create(
            &state.accounts,
            state.audit.as_ref(),
            Actor::User(&master),
            &user.login_id,
            Role::General,
            None,
            &user.password,
        )
    })
    .await?
}

async fn unlock_general_user(state: &Shared, master: &Account, login_id: String) -> Result<Account, WebError> {
    let (state, master) = (state.clone(), master.clone());
    blocking(move || unlock(&state.accounts, state.audit.as_ref(), Actor::User(&master), &login_id)).await?
}

/// `POST /api/v1/users` (master): a general user.
pub async fn api_add_user(
    State(state): State<Shared>,
    signed_in: SignedIn,
    JsonBody(user): JsonBody<NewUser>,
) -> Result<Response, WebError> {
    let created = add_general_user(&state, &signed_in.account, user).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "login_id": created.login_id, "master": created.master })))
        .into_response())
}

/// `POST /api/v1/users/{login_id}/unlock` (master).
pub async fn api_unlock_user(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(login_id): Path<String>,
) -> Result<Json<serde_json::Value>, WebError> {
    let user = unlock_general_user(&state, &signed_in.account, login_id).await?;
    Ok(Json(serde_json::json!({ "login_id": user.login_id, "locked": user.locked })))
}

/// Fields of the master's forms.
#[derive(Debug, Deserialize)]
pub struct MasterForm {
    csrf: String,
    login_id: Option<String>,
    password: Option<Password>,
}

impl SessionForm for MasterForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /users` (master): add a general user.
pub async fn add_user_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    form: Result<Form<MasterForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    session_form(&state, signed_in, lang, form, async |state, signed_in, form: MasterForm| {
        let (Some(login_id), Some(password)) = (form.login_id, form.password) else {
            return Err(WebError::new(ErrorCode::InvalidForm, "login ID and password are required"));
        };
        add_general_user(state, &signed_in.account, NewUser { login_id, password }).await.map(drop)
    })
    .await
}

/// `POST /users/{login_id}/unlock` (master).
pub async fn unlock_user_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    Path(login_id): Path<String>,
    form: Result<Form<MasterForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    session_form(&state, signed_in, lang, form, async move |state, signed_in, _: MasterForm| {
        unlock_general_user(state, &signed_in.account, login_id).await.map(drop)
    })
    .await
}
