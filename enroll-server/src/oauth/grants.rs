//! Grants as users see them (their home page and `/api/v1/grants`; a master also sees its
//! users'), ending one (連携解除), registering the secret question of 追加認証, and inkan's own
//! API called with an access token ([`Bearer`]).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::OAuthText;
use crate::accounts::{Account, Password, Role};
use crate::error::{ErrorCode, WebError};
use crate::extract::{JsonBody, Peer, SignedIn};
use crate::forms::{SessionForm, session_form};
use crate::i18n::Lang;
use crate::pages::GrantRow;
use crate::state::{Shared, blocking};
use crate::stores::oauth::{Grant, TokenKind};

/// The grants in force that `account` may see: its own, and for a master its users'.
pub fn visible_grants(state: &Shared, account: &Account, now: OffsetDateTime) -> Result<Vec<Grant>, WebError> {
    let mut grants: Vec<Grant> = state
        .oauth
        .store
        .grants()
        .map_err(|e| WebError::internal("OAuth store", e))?
        .into_iter()
        .filter(|g| g.active(now))
        .filter(|g| g.login_id == account.login_id || (account.role == Role::Master && g.contract == account.login_id))
        .collect();
    grants.sort_by_key(|g| std::cmp::Reverse(g.granted_at));
    Ok(grants)
}

/// The home page's rows of [`visible_grants`].
pub fn grant_rows(state: &Shared, lang: Lang, account: &Account) -> Result<Vec<GrantRow>, WebError> {
    let now = OffsetDateTime::now_utc();
    let settings = &state.oauth.settings;
    let rows = visible_grants(state, account, now)?
        .into_iter()
        .map(|g| {
            let client = state.oauth.store.client(&g.client_id).ok().flatten().map_or(g.client_id.clone(), |c| c.name);
            let scopes = g
                .scopes
                .iter()
                .map(|s| {
                    settings.scope(s).map_or(s.clone(), |d| if lang == Lang::Ja { d.ja.clone() } else { d.en.clone() })
                })
                .collect::<Vec<_>>()
                .join(", ");
            GrantRow {
                client,
                scopes,
                resources: g.resources.iter().map(|r| r.label.as_str()).collect::<Vec<_>>().join(", "),
                granted: g.granted_at.date().to_string(),
                expires: g.expires_at.date().to_string(),
                login_id: g.login_id,
                id: g.id,
            }
        })
        .collect();
    Ok(rows)
}

/// Ends grant `id` for `account` (its own, or a master's user's); audited.
async fn end(state: &Shared, account: &Account, id: &str) -> Result<(), WebError> {
    let now = OffsetDateTime::now_utc();
    let allowed = visible_grants(state, account, now)?.into_iter().any(|g| g.id == id);
    if !allowed {
        return Err(WebError::new(ErrorCode::NotFound, format!("no grant {id} in force that you may end")));
    }
    let (s, grant_id, by) = (state.clone(), id.to_owned(), account.login_id.clone());
    let grant = blocking(move || s.oauth.end_grant(&grant_id, &by, now))
        .await?
        .map_err(|e| WebError::internal("OAuth store", e))?;
    if let Some(grant) = grant {
        state
            .audit(
                "oauth.grant_ended",
                serde_json::json!({ "grant": grant.id, "login_id": grant.login_id, "client_id": grant.client_id, "by": account.login_id }),
            )
            .await;
    }
    Ok(())
}

/// `GET /api/v1/grants`.
pub async fn api_list(State(state): State<Shared>, signed_in: SignedIn) -> Result<Json<serde_json::Value>, WebError> {
    let grants = visible_grants(&state, &signed_in.account, OffsetDateTime::now_utc())?;
    let items: Vec<_> = grants
        .iter()
        .map(|g| {
            let name = state.oauth.store.client(&g.client_id).ok().flatten().map(|c| c.name);
            serde_json::json!({
                "id": g.id,
                "client_id": g.client_id,
                "client_name": name,
                "login_id": g.login_id,
                "scopes": g.scopes,
                "resources": g.resources.iter().map(|r| &r.label).collect::<Vec<_>>(),
                "granted_at": pki::encoding::rfc3339(g.granted_at),
                "expires_at": pki::encoding::rfc3339(g.expires_at),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "grants": items })))
}

/// `POST /api/v1/grants/{id}/end`.
pub async fn api_end(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, WebError> {
    end(&state, &signed_in.account, &id).await?;
    Ok(Json(serde_json::json!({ "ended": true, "id": id })))
}

/// The home page's 連携解除 form.
#[derive(Debug, Deserialize)]
pub struct EndFields {
    csrf: String,
}

impl SessionForm for EndFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /grants/{id}/end` from the home page.
pub async fn end_form(
    State(state): State<Shared>,
    Path(id): Path<String>,
    lang: Lang,
    signed_in: Result<SignedIn, WebError>,
    form: Result<Form<EndFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    session_form(&state, signed_in, lang, form, async |state, signed_in, _| end(state, &signed_in.account, &id).await)
        .await
}

/// A secret question and its answer.
#[derive(Deserialize)]
pub struct QuestionBody {
    question: String,
    answer: Password,
}

impl std::fmt::Debug for QuestionBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuestionBody").field("question", &self.question).finish_non_exhaustive()
    }
}

async fn set_question(state: &Shared, account: &Account, question: &str, answer: Password) -> Result<(), WebError> {
    let question = question.trim().to_owned();
    let answer = Password::new(answer.reveal().trim().to_owned());
    if question.is_empty() || question.chars().count() > 100 {
        return Err(WebError::new(ErrorCode::InvalidRequest, "the question must be 1 to 100 characters"));
    }
    if answer.reveal().chars().count() < 2 || answer.reveal().chars().count() > 64 {
        return Err(WebError::new(ErrorCode::InvalidRequest, "the answer must be 2 to 64 characters"));
    }
    let (s, login_id) = (state.clone(), account.login_id.clone());
    blocking(move || -> Result<(), WebError> {
        let hash = crate::accounts::hash_secret(&answer)?;
        s.oauth
            .store
            .update_profile(&login_id, &mut |p| {
                p.question = Some(question.clone());
                p.answer_hash = Some(hash.clone());
            })
            .map_err(|e| WebError::internal("OAuth store", e))?;
        Ok(())
    })
    .await??;
    state.audit("oauth.question_registered", serde_json::json!({ "login_id": account.login_id })).await;
    Ok(())
}

/// `POST /api/v1/secret-question`. The body is read before the session is checked: an answer
/// sent before the request is read breaks HTTP/2 clients still sending it.
pub async fn api_question(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    JsonBody(body): JsonBody<QuestionBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    let signed_in = signed_in?;
    set_question(&state, &signed_in.account, &body.question, body.answer).await?;
    Ok(Json(serde_json::json!({ "registered": true })))
}

/// The home page's question form.
#[derive(Deserialize)]
pub struct QuestionFields {
    csrf: String,
    question: String,
    answer: Password,
}

impl std::fmt::Debug for QuestionFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuestionFields").field("question", &self.question).finish_non_exhaustive()
    }
}

impl SessionForm for QuestionFields {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /secret-question` from the home page.
pub async fn question_form(
    State(state): State<Shared>,
    lang: Lang,
    signed_in: Result<SignedIn, WebError>,
    form: Result<Form<QuestionFields>, axum::extract::rejection::FormRejection>,
) -> Response {
    session_form(&state, signed_in, lang, form, async |state, signed_in, f| {
        set_question(state, &signed_in.account, &f.question, f.answer).await
    })
    .await
}

/// Whether the user registered a question (for the home page).
pub fn has_question(state: &Shared, login_id: &str) -> bool {
    state.oauth.store.profile(login_id).ok().flatten().is_some_and(|p| p.question.is_some())
}

/// The words of the home page's OAuth parts.
pub fn words(lang: Lang) -> &'static OAuthText {
    OAuthText::of(lang)
}

/// A call of inkan's API with an access token (`Authorization: Bearer`), over a connection
/// that presents the certificate the token is bound to.
#[derive(Debug)]
pub struct Bearer {
    /// The user's account.
    pub account: Account,
    /// The token's scopes.
    pub scopes: Vec<String>,
}

/// A refused bearer call (RFC 6750 §3): 401 `invalid_token` or 403 `insufficient_scope`.
#[derive(Debug)]
pub struct BearerError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let challenge = format!("Bearer error=\"{}\", error_description=\"{}\"", self.error, self.description);
        let body = serde_json::json!({ "error": { "code": self.error, "message": self.description } });
        let mut response = (self.status, Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The bearer token of `headers`, if the request carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks a bearer call that needs `scope`.
pub async fn check_bearer(state: &Shared, peer: &Peer, token: &str, scope: &str) -> Result<Bearer, BearerError> {
    let invalid = |description| BearerError { status: StatusCode::UNAUTHORIZED, error: "invalid_token", description };
    let (s, token) = (state.clone(), token.to_owned());
    let found = blocking(move || s.oauth.live_token(&token, OffsetDateTime::now_utc()))
        .await
        .map_err(|_| invalid("the token could not be checked"))?
        .map_err(|_| invalid("the token could not be checked"))?;
    let Some((record, _grant)) = found.filter(|(r, _)| r.kind == TokenKind::Access) else {
        return Err(invalid("the access token is not valid"));
    };
    let presented = peer.0.client_certificate.as_deref().map(|der| super::thumbprint(der));
    if presented.as_deref() != Some(record.x5t_s256.as_str()) {
        state
            .audit(
                "oauth.binding_refused",
                serde_json::json!({ "client_id": record.client_id, "login_id": record.login_id }),
            )
            .await;
        return Err(invalid("the token is bound to another client certificate"));
    }
    if !record.scopes.iter().any(|s| s == scope) {
        return Err(BearerError {
            status: StatusCode::FORBIDDEN,
            error: "insufficient_scope",
            description: "the token's scopes do not cover this call",
        });
    }
    let account = state
        .accounts
        .get(&record.login_id)
        .ok()
        .flatten()
        .filter(|a| a.active)
        .ok_or_else(|| invalid("the token's account is not active"))?;
    Ok(Bearer { account, scopes: record.scopes })
}
