//! The user's way through an authorization, page by page as in the manuals: API連携認証
//! (利用登録) with the API terms and a login (certificate + password, or login ID + password
//! where the client allows it), the one-time password when the user has a token, 追加認証 when
//! the login looks risky, 認可業務選択, 照会用暗証番号登録 for per-resource scopes, and
//! 情報アクセス許可; then back to the client with a code (or `access_denied`).
//!
//! The flow lives in the OAuth store under the hash of a cookie (`inkan_oauth`, path /oauth);
//! every form carries the flow's own CSRF token, and each step is accepted only at its stage.

use std::net::IpAddr;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{OAuthText, REQUEST_URI_PREFIX, endpoints::par_key, hash, secret, short_id, with_query};
use crate::accounts::{Account, Password};
use crate::error::{ErrorCode, WebError};
use crate::extract::{Peer, check_certificate};
use crate::forms::error_page;
use crate::html;
use crate::i18n::Lang;
use crate::otp::Verdict;
use crate::pages::Frame;
use crate::state::{Shared, blocking};
use crate::stores::OtpState;
use crate::stores::oauth::{CodeRecord, Flow, FlowStage, Grant, GrantResource, OAuthClient, Resource};

const FLOW_COOKIE: &str = "inkan_oauth";
/// The cookie that marks a browser a user completed a login in.
pub const DEVICE_COOKIE: &str = "inkan_device";
/// How long a user has for the pages.
const FLOW_TTL: time::Duration = time::Duration::minutes(15);
/// Wrong PINs in one flow before it ends.
const MAX_PIN_FAILURES: u32 = 5;
/// How many devices and networks a profile remembers.
const REMEMBERED: usize = 10;

/// A scope on a page.
#[derive(Debug)]
pub struct ScopeRow {
    /// Its name.
    pub name: String,
    /// Its description in the page's language.
    pub description: String,
    /// Chosen.
    pub checked: bool,
}

/// A resource on a page.
#[derive(Debug)]
pub struct ResourceRow {
    /// Its ID.
    pub id: String,
    /// Its label.
    pub label: String,
    /// The user registered its PIN before.
    pub registered: bool,
}

/// Every page of the flow (one template, by stage).
#[derive(Debug, Template)]
#[template(path = "oauth.html")]
pub struct FlowPage {
    /// Frame.
    pub frame: Frame,
    /// The flow's words.
    pub w: &'static OAuthText,
    /// `login`, `otp`, `question`, `scopes`, `resources` or `consent`.
    pub stage: &'static str,
    /// Why the last step was refused.
    pub error: Option<String>,
    /// The flow's form token.
    pub csrf: String,
    /// The client's name.
    pub client_name: String,
    /// Its company.
    pub client_company: String,
    /// API利用規定.
    pub terms: String,
    /// The certificate's login ID, when one was presented.
    pub certificate_login: Option<String>,
    /// The user's login ID, once known.
    pub login_id: String,
    /// The secret question.
    pub question: String,
    /// Scopes (requested on the scope page, chosen on the consent page).
    pub scopes: Vec<ScopeRow>,
    /// Resources (the contract's on the PIN page, chosen on the consent page).
    pub resources: Vec<ResourceRow>,
    /// The grant's period, in words.
    pub period: String,
    /// The consent page's explanation.
    pub explanation: String,
}

fn flow_key(id: &str) -> String {
    format!("flow:{}", pki::encoding::hex(&hash(id)))
}

fn missing() -> WebError {
    WebError::new(ErrorCode::NotFound, "this authorization was not found or has expired; start again from the service")
}

fn store_error(e: crate::stores::StoreError) -> WebError {
    WebError::internal("OAuth store", e)
}

/// The flow of this browser, and its client.
struct Current {
    id: String,
    flow: Flow,
    client: OAuthClient,
}

async fn current(state: &Shared, headers: &HeaderMap) -> Result<Current, WebError> {
    let id = html::cookie(headers, FLOW_COOKIE).ok_or_else(missing)?;
    let (s, key) = (state.clone(), flow_key(&id));
    let flow = blocking(move || s.oauth.store.flow(&key)).await?.map_err(store_error)?.ok_or_else(missing)?;
    if flow.expires_at <= OffsetDateTime::now_utc() {
        return Err(missing());
    }
    let client = state.oauth.store.client(&flow.client_id).map_err(store_error)?.ok_or_else(missing)?;
    Ok(Current { id, flow, client })
}

async fn save(state: &Shared, current: &Current) -> Result<(), WebError> {
    let (s, key, flow) = (state.clone(), flow_key(&current.id), current.flow.clone());
    blocking(move || s.oauth.store.put_flow(&key, &flow)).await?.map_err(store_error)
}

/// The query of `GET /oauth/authorize`.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    request_uri: Option<String>,
}

/// `GET /oauth/authorize?client_id&request_uri`: takes the pushed request (once) and shows the
/// first page. Anything wrong is an error page here: the browser is never sent to a URI that
/// did not come from a pushed request.
pub async fn authorize(
    State(state): State<Shared>,
    lang: Lang,
    peer: Peer,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let w = OAuthText::of(lang);
    let refused = |message: &str| {
        let e = WebError::new(ErrorCode::InvalidRequest, message.to_owned());
        error_page(&state, lang, w.error_title, &e)
    };
    let Ok(Query(query)) = query else { return refused("the authorization request is malformed") };
    let (Some(client_id), Some(request_uri)) = (query.client_id, query.request_uri) else {
        return refused("client_id and request_uri are required (push the request to /oauth/par first)");
    };
    let Some(reference) = request_uri.strip_prefix(REQUEST_URI_PREFIX) else {
        return refused("request_uri is not one this server made");
    };
    let (s, key) = (state.clone(), par_key(reference));
    let taken = match blocking(move || s.oauth.store.take_flow(&key)).await {
        Ok(Ok(taken)) => taken,
        Ok(Err(e)) => return error_page(&state, lang, w.error_title, &store_error(e)),
        Err(e) => return error_page(&state, lang, w.error_title, &e),
    };
    let now = OffsetDateTime::now_utc();
    let Some(mut flow) = taken.filter(|f| f.stage == FlowStage::Pushed && f.expires_at > now) else {
        return refused("request_uri is unknown, expired or used already");
    };
    if flow.client_id != client_id {
        return refused("request_uri was pushed by another client");
    }
    let Ok(Some(client)) = state.oauth.store.client(&flow.client_id) else {
        return refused("the client is no longer registered");
    };
    flow.stage = FlowStage::Login;
    flow.csrf = crate::tokens::random_token();
    flow.expires_at = now + FLOW_TTL;
    let current = Current { id: secret(), flow, client };
    if let Err(e) = save(&state, &current).await {
        return error_page(&state, lang, w.error_title, &e);
    }
    state
        .audit(
            "oauth.authorize",
            serde_json::json!({ "client_id": current.client.client_id, "remote": peer.0.remote.ip().to_string() }),
        )
        .await;
    let page = render_stage(&state, lang, &peer, &current, None, StatusCode::OK).await;
    html::with_cookie(
        page,
        html::set_cookie(FLOW_COOKIE, &current.id, "/oauth", FLOW_TTL.whole_seconds().unsigned_abs()),
    )
}

/// `GET /oauth/flow`: the page of the flow's stage (after a language switch, a reload).
pub async fn show(State(state): State<Shared>, lang: Lang, peer: Peer, headers: HeaderMap) -> Response {
    match current(&state, &headers).await {
        Ok(current) => render_stage(&state, lang, &peer, &current, None, StatusCode::OK).await,
        Err(e) => error_page(&state, lang, OAuthText::of(lang).error_title, &e),
    }
}

/// `POST /oauth/flow/{step}`: one step's form.
pub async fn submit(
    State(state): State<Shared>,
    Path(step): Path<String>,
    lang: Lang,
    peer: Peer,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let w = OAuthText::of(lang);
    let mut current = match current(&state, &headers).await {
        Ok(found) => found,
        Err(e) => return error_page(&state, lang, w.error_title, &e),
    };
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(_) => {
            let e = WebError::new(ErrorCode::InvalidForm, "the form could not be read");
            return error_page(&state, lang, w.error_title, &e);
        }
    };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if !html::tokens_match(&current.flow.csrf, field("csrf").unwrap_or_default()) {
        state
            .audit("oauth.csrf_refused", serde_json::json!({ "client_id": current.client.client_id, "step": step }))
            .await;
        return error_page(
            &state,
            lang,
            w.error_title,
            &WebError::new(ErrorCode::Csrf, "the form expired; open the page again"),
        );
    }
    let expected = match step.as_str() {
        "login" => FlowStage::Login,
        "otp" => FlowStage::Otp,
        "question" => FlowStage::Question,
        "scopes" => FlowStage::Scopes,
        "resources" => FlowStage::Resources,
        "consent" => FlowStage::Consent,
        _ => return error_page(&state, lang, w.error_title, &WebError::not_found()),
    };
    if current.flow.stage != expected {
        // A form from an earlier page (the back button): show where the flow is.
        return render_stage(&state, lang, &peer, &current, None, StatusCode::CONFLICT).await;
    }
    let outcome = match expected {
        FlowStage::Login => login(&state, &peer, &headers, &mut current, &fields, lang).await,
        FlowStage::Otp => otp(&state, &headers, &peer, &mut current, field("code").unwrap_or_default(), lang).await,
        FlowStage::Question => {
            question(&state, &headers, &peer, &mut current, field("answer").unwrap_or_default(), lang).await
        }
        FlowStage::Scopes => scopes(&state, &mut current, &fields, lang).await,
        FlowStage::Resources => resources(&state, &mut current, &fields, lang).await,
        FlowStage::Consent => return consent(&state, &peer, current, &fields, lang).await,
        FlowStage::Pushed => Err(Step::Page(missing())),
    };
    match outcome {
        Ok(cookie) => {
            if let Err(e) = save(&state, &current).await {
                return error_page(&state, lang, w.error_title, &e);
            }
            let page = render_stage(&state, lang, &peer, &current, None, StatusCode::OK).await;
            match cookie {
                Some(cookie) => html::with_cookie(page, cookie),
                None => page,
            }
        }
        Err(Step::Again(status, message)) => {
            if let Err(e) = save(&state, &current).await {
                return error_page(&state, lang, w.error_title, &e);
            }
            render_stage(&state, lang, &peer, &current, Some(message), status).await
        }
        Err(Step::End(e)) => {
            let (s, key) = (state.clone(), flow_key(&current.id));
            let _ = blocking(move || s.oauth.store.take_flow(&key)).await;
            error_page(&state, lang, w.error_title, &e)
        }
        Err(Step::Page(e)) => error_page(&state, lang, w.error_title, &e),
    }
}

/// How a refused step goes on.
enum Step {
    /// The same page again, with this status and message.
    Again(StatusCode, String),
    /// The flow ends with this error.
    End(WebError),
    /// An error page; the flow stays.
    Page(WebError),
}

type StepResult = Result<Option<HeaderValue>, Step>;

/// The /24 (IPv4) or /48 (IPv6) of an address.
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

async fn login(
    state: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    current: &mut Current,
    fields: &[(String, String)],
    lang: Lang,
) -> StepResult {
    let w = OAuthText::of(lang);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    state.rate_limit(peer.0.remote).map_err(Step::Page)?;
    let password = Password::new(field("password").unwrap_or_default());
    let (login_id, via) = match check_certificate(state, &peer.0) {
        Ok(cert) => (cert.account.login_id, "oauth-certificate"),
        Err(e) if peer.0.client_certificate.is_some() => return Err(Step::Page(e)),
        Err(_) if current.client.allow_password_login => {
            (field("login_id").unwrap_or_default().trim().to_owned(), "oauth-password")
        }
        Err(e) => return Err(Step::Page(e)),
    };
    let before = state.accounts.get(&login_id).ok().flatten();
    let account = match state.authenticate(&login_id, password, via).await {
        Ok(account) => account,
        Err(e) if matches!(e.code, ErrorCode::InvalidCredentials) => {
            let message = if lang == Lang::Ja { lang.text().wrong_password.to_owned() } else { lang.error(&e) };
            return Err(Step::Again(StatusCode::UNAUTHORIZED, message));
        }
        Err(e) => return Err(Step::End(e)),
    };
    let _ = w;
    // Risk signals, read before this login changed anything.
    let profile =
        state.oauth.store.profile(&account.login_id).map_err(|e| Step::Page(store_error(e)))?.unwrap_or_default();
    let signals = state.oauth.settings.risk;
    let device = html::cookie(headers, DEVICE_COOKIE).map(|d| pki::encoding::hex(&hash(&d)));
    let new_device = device.is_none_or(|d| !profile.devices.contains(&d));
    let new_network = !profile.networks.contains(&network(peer.0.remote.ip()));
    let recent_failures = before.is_some_and(|a| a.failed_attempts > 0);
    current.flow.risky = (signals.new_device && new_device)
        || (signals.new_network && new_network)
        || (signals.recent_failures && recent_failures);
    current.flow.login_id = Some(account.login_id.clone());
    state
        .audit(
            "oauth.login",
            serde_json::json!({ "login_id": account.login_id, "client_id": current.client.client_id, "via": via,
                "new_device": new_device, "new_network": new_network, "recent_failures": recent_failures }),
        )
        .await;
    match state.otp.active(&account.login_id).map_err(Step::Page)? {
        Some(token) if token.stopped => Err(Step::End(crate::login::otp_stopped(&account))),
        Some(_) => {
            current.flow.stage = FlowStage::Otp;
            Ok(None)
        }
        None => after_authentication(state, peer, headers, current, &account).await,
    }
}

fn user(current: &Current) -> Result<String, Step> {
    current.flow.login_id.clone().ok_or_else(|| Step::End(missing()))
}

async fn account_of(state: &Shared, login_id: &str) -> Result<Account, Step> {
    state.accounts.get(login_id).map_err(|e| Step::End(e.into()))?.ok_or_else(|| Step::End(missing()))
}

async fn otp(
    state: &Shared,
    headers: &HeaderMap,
    peer: &Peer,
    current: &mut Current,
    code: &str,
    lang: Lang,
) -> StepResult {
    let login_id = user(current)?;
    let (s, id, code) = (state.clone(), login_id.clone(), code.to_owned());
    let verdict = blocking(move || s.otp.check(&id, &code, OtpState::Active, OffsetDateTime::now_utc()))
        .await
        .map_err(Step::Page)?;
    let account = account_of(state, &login_id).await?;
    match verdict {
        Ok(Verdict::Accepted) => after_authentication(state, peer, headers, current, &account).await,
        Ok(Verdict::Stopped) => {
            state.audit("login.otp_stopped", serde_json::json!({ "login_id": login_id })).await;
            Err(Step::End(crate::login::otp_stopped(&account)))
        }
        Ok(Verdict::Wrong { .. }) => {
            state.audit("oauth.otp_wrong", serde_json::json!({ "login_id": login_id })).await;
            Err(Step::Again(
                StatusCode::UNAUTHORIZED,
                lang.error(&WebError::new(ErrorCode::InvalidOtp, "the one-time password is not right")),
            ))
        }
        Err(e) if e.code == ErrorCode::InvalidOtp => Err(Step::Again(StatusCode::BAD_REQUEST, lang.error(&e))),
        Err(e) => Err(Step::End(e)),
    }
}

/// The password (and code) were right: the question when the login looks risky, else on.
async fn after_authentication(
    state: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    current: &mut Current,
    account: &Account,
) -> StepResult {
    let profile = state.oauth.store.profile(&account.login_id).map_err(|e| Step::Page(store_error(e)))?;
    if current.flow.risky && profile.is_some_and(|p| p.question.is_some()) {
        current.flow.stage = FlowStage::Question;
        return Ok(None);
    }
    authenticated(state, peer, headers, current, account).await
}

/// Every check passed: remember this browser and network, and go on to the choices.
async fn authenticated(
    state: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    current: &mut Current,
    account: &Account,
) -> StepResult {
    let existing = html::cookie(headers, DEVICE_COOKIE).filter(|d| d.len() == 43);
    let device = existing.clone().unwrap_or_else(secret);
    let (device_hash, net) = (pki::encoding::hex(&hash(&device)), network(peer.0.remote.ip()));
    state
        .oauth
        .store
        .update_profile(&account.login_id, &mut |p| {
            remember(&mut p.devices, &device_hash);
            remember(&mut p.networks, &net);
        })
        .map_err(|e| Step::Page(store_error(e)))?;
    let flow = &mut current.flow;
    if flow.scopes.len() == 1 {
        flow.chosen_scopes = flow.scopes.clone();
        flow.stage = next_after_scopes(state, flow, account)?;
    } else {
        flow.stage = FlowStage::Scopes;
    }
    // A year; renewed at each login.
    Ok(Some(html::set_cookie(DEVICE_COOKIE, &device, "/", 365 * 24 * 3600)))
}

fn remember(list: &mut Vec<String>, value: &str) {
    list.retain(|v| v != value);
    list.push(value.to_owned());
    if list.len() > REMEMBERED {
        list.remove(0);
    }
}

/// The contract's resources.
fn contract_resources(state: &Shared, account: &Account) -> Result<Vec<Resource>, Step> {
    Ok(state
        .oauth
        .store
        .resources()
        .map_err(|e| Step::Page(store_error(e)))?
        .into_iter()
        .filter(|r| r.contract == account.master)
        .collect())
}

/// PINs when a chosen scope is per resource and the contract has resources, else consent.
fn next_after_scopes(state: &Shared, flow: &Flow, account: &Account) -> Result<FlowStage, Step> {
    let per_resource = flow.chosen_scopes.iter().any(|s| state.oauth.settings.scope(s).is_some_and(|d| d.per_resource));
    if per_resource && !contract_resources(state, account)?.is_empty() {
        Ok(FlowStage::Resources)
    } else {
        Ok(FlowStage::Consent)
    }
}

async fn question(
    state: &Shared,
    headers: &HeaderMap,
    peer: &Peer,
    current: &mut Current,
    answer: &str,
    lang: Lang,
) -> StepResult {
    let w = OAuthText::of(lang);
    let login_id = user(current)?;
    let profile = state.oauth.store.profile(&login_id).map_err(|e| Step::Page(store_error(e)))?.unwrap_or_default();
    let Some(hash) = profile.answer_hash else { return Err(Step::End(missing())) };
    let (s, id, given) = (state.clone(), login_id.clone(), Password::new(answer.trim().to_owned()));
    let counted = blocking(move || {
        let right = crate::accounts::verify_secret(&hash, &given);
        (right, s.accounts.count_confirmation(&id, right))
    })
    .await
    .map_err(Step::Page)?;
    match counted {
        (true, Ok(account)) => authenticated(state, peer, headers, current, &account).await,
        (_, Err(crate::accounts::AccountError::WrongConfirmation)) => {
            state.audit("oauth.question_wrong", serde_json::json!({ "login_id": login_id })).await;
            Err(Step::Again(StatusCode::UNAUTHORIZED, w.wrong_answer.to_owned()))
        }
        (_, Err(e)) => {
            state.audit("oauth.question_wrong", serde_json::json!({ "login_id": login_id, "locked": true })).await;
            state.audit("account.locked", serde_json::json!({ "login_id": login_id })).await;
            Err(Step::End(e.into()))
        }
        (false, Ok(_)) => Err(Step::Again(StatusCode::UNAUTHORIZED, w.wrong_answer.to_owned())),
    }
}

async fn scopes(state: &Shared, current: &mut Current, fields: &[(String, String)], lang: Lang) -> StepResult {
    let w = OAuthText::of(lang);
    let chosen: Vec<String> =
        current.flow.scopes.iter().filter(|s| fields.iter().any(|(n, v)| n == "scope" && v == *s)).cloned().collect();
    if chosen.is_empty() {
        return Err(Step::Again(StatusCode::BAD_REQUEST, w.choose_scope.to_owned()));
    }
    current.flow.chosen_scopes = chosen;
    let account = account_of(state, &user(current)?).await?;
    current.flow.stage = next_after_scopes(state, &current.flow, &account)?;
    Ok(None)
}

async fn resources(state: &Shared, current: &mut Current, fields: &[(String, String)], lang: Lang) -> StepResult {
    let w = OAuthText::of(lang);
    let login_id = user(current)?;
    let account = account_of(state, &login_id).await?;
    let available = contract_resources(state, &account)?;
    let chosen: Vec<Resource> =
        available.into_iter().filter(|r| fields.iter().any(|(n, v)| n == "resource" && *v == r.id)).collect();
    if chosen.is_empty() {
        return Err(Step::Again(StatusCode::BAD_REQUEST, w.choose_resource.to_owned()));
    }
    // Every PIN is checked before any is registered: a wrong one registers nothing.
    let pins: Vec<(Resource, Option<String>)> = chosen
        .into_iter()
        .map(|r| {
            let pin = fields.iter().find(|(n, _)| *n == format!("pin_{}", r.id)).map(|(_, v)| v.clone());
            (r, pin)
        })
        .collect();
    let id = login_id.clone();
    let checked = blocking(move || {
        pins.into_iter()
            .map(|(r, pin)| {
                let registered = r.registered.contains(&id);
                let right =
                    registered || pin.is_some_and(|p| crate::accounts::verify_secret(&r.pin_hash, &Password::new(p)));
                (r, registered, right)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(Step::Page)?;
    if checked.iter().any(|(_, _, right)| !right) {
        current.flow.pin_failures += 1;
        state
            .audit(
                "oauth.pin_wrong",
                serde_json::json!({ "login_id": login_id, "failures": current.flow.pin_failures }),
            )
            .await;
        if current.flow.pin_failures >= MAX_PIN_FAILURES {
            return Err(Step::End(WebError::new(
                ErrorCode::InvalidCredentials,
                "too many wrong inquiry PINs; start again",
            )));
        }
        return Err(Step::Again(StatusCode::UNAUTHORIZED, w.wrong_pin.to_owned()));
    }
    for (resource, registered, _) in &checked {
        if *registered {
            continue;
        }
        state
            .oauth
            .store
            .update_resource(&resource.id, &mut |r| {
                if !r.registered.contains(&login_id) {
                    r.registered.push(login_id.clone());
                }
            })
            .map_err(|e| Step::Page(store_error(e)))?;
        state
            .audit("resource.pin_registered", serde_json::json!({ "login_id": login_id, "resource": resource.id }))
            .await;
    }
    current.flow.chosen_resources = checked.into_iter().map(|(r, _, _)| r.id).collect();
    current.flow.stage = FlowStage::Consent;
    Ok(None)
}

/// The origin (`https://host:port`) of an absolute URI.
fn origin(uri: &str) -> &str {
    let start = uri.find("://").map_or(0, |i| i + 3);
    uri[start..].find(['/', '?']).map_or(uri, |end| &uri[..start + end])
}

async fn consent(state: &Shared, peer: &Peer, current: Current, fields: &[(String, String)], lang: Lang) -> Response {
    let w = OAuthText::of(lang);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let decision = field("decision");
    if decision == Some("allow") && field("continue") != Some("on") {
        return render_stage(state, lang, peer, &current, Some(w.tick_continue.to_owned()), StatusCode::BAD_REQUEST)
            .await;
    }
    if !matches!(decision, Some("allow" | "deny")) {
        return render_stage(state, lang, peer, &current, Some(w.tick_continue.to_owned()), StatusCode::BAD_REQUEST)
            .await;
    }
    // Taken out first: a second press of the button finds nothing.
    let (s, key) = (state.clone(), flow_key(&current.id));
    let flow = match blocking(move || s.oauth.store.take_flow(&key)).await {
        Ok(Ok(Some(flow))) if flow.stage == FlowStage::Consent => flow,
        Ok(Ok(_)) => return error_page(state, lang, w.error_title, &missing()),
        Ok(Err(e)) => return error_page(state, lang, w.error_title, &store_error(e)),
        Err(e) => return error_page(state, lang, w.error_title, &e),
    };
    let Some(login_id) = flow.login_id.clone() else { return error_page(state, lang, w.error_title, &missing()) };
    let issuer = state.login_url.clone();
    let mut params: Vec<(&str, String)> = Vec::new();
    if decision == Some("deny") {
        state.audit("oauth.denied", serde_json::json!({ "login_id": login_id, "client_id": flow.client_id })).await;
        params.push(("error", "access_denied".into()));
        params.push(("error_description", "the user denied the request".into()));
    } else {
        match grant(state, &current.client, &flow, &login_id).await {
            Ok((grant, code)) => {
                state
                    .audit(
                        "oauth.granted",
                        serde_json::json!({ "login_id": login_id, "client_id": flow.client_id, "grant": grant.id,
                            "scopes": grant.scopes, "resources": grant.resources.iter().map(|r| &r.id).collect::<Vec<_>>(),
                            "expires_at": pki::encoding::rfc3339(grant.expires_at) }),
                    )
                    .await;
                params.push(("code", code));
            }
            Err(e) => return error_page(state, lang, w.error_title, &e),
        }
    }
    if let Some(s) = &flow.state {
        params.push(("state", s.clone()));
    }
    params.push(("iss", issuer));
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = with_query(&flow.redirect_uri, &pairs);
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    html::with_cookie(response, html::set_cookie(FLOW_COOKIE, "", "/oauth", 0))
}

/// Stores the grant and its code; returns both (the code's secret once).
async fn grant(state: &Shared, client: &OAuthClient, flow: &Flow, login_id: &str) -> Result<(Grant, String), WebError> {
    let now = OffsetDateTime::now_utc();
    let account = state.accounts.get(login_id)?.ok_or_else(missing)?;
    let resources = state.oauth.store.resources().map_err(store_error)?;
    let chosen = flow
        .chosen_resources
        .iter()
        .filter_map(|id| resources.iter().find(|r| &r.id == id && r.contract == account.master))
        .map(|r| GrantResource { id: r.id.clone(), label: r.label.clone() })
        .collect();
    let grant = Grant {
        id: short_id("g-"),
        login_id: login_id.to_owned(),
        contract: account.master.clone(),
        client_id: client.client_id.clone(),
        scopes: flow.chosen_scopes.clone(),
        resources: chosen,
        granted_at: now,
        expires_at: now + time::Duration::days(i64::from(client.grant_days)),
        ended_at: None,
        ended_by: None,
    };
    let code = secret();
    let record = CodeRecord {
        grant_id: grant.id.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        code_challenge: flow.code_challenge.clone(),
        expires_at: now + state.oauth.settings.code_ttl,
        used: false,
    };
    let (s, g, c) = (state.clone(), grant.clone(), code.clone());
    blocking(move || {
        s.oauth.store.put_grant(&g)?;
        s.oauth.store.put_code(&hash(&c), &record)
    })
    .await?
    .map_err(store_error)?;
    Ok((grant, code))
}

/// Renders the page of the flow's stage.
async fn render_stage(
    state: &Shared,
    lang: Lang,
    peer: &Peer,
    current: &Current,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let w = OAuthText::of(lang);
    let flow = &current.flow;
    let settings = &state.oauth.settings;
    let describe = |name: &str| {
        settings
            .scope(name)
            .map_or_else(|| name.to_owned(), |d| if lang == Lang::Ja { d.ja.clone() } else { d.en.clone() })
    };
    let (stage, title) = match flow.stage {
        FlowStage::Pushed | FlowStage::Login => ("login", w.login_title),
        FlowStage::Otp => ("otp", w.otp_title),
        FlowStage::Question => ("question", w.question_title),
        FlowStage::Scopes => ("scopes", w.scopes_title),
        FlowStage::Resources => ("resources", w.resources_title),
        FlowStage::Consent => ("consent", w.consent_title),
    };
    let login_id = flow.login_id.clone().unwrap_or_default();
    let mut page = FlowPage {
        frame: Frame::new(lang, title, "/oauth/flow"),
        w,
        stage,
        error,
        csrf: flow.csrf.clone(),
        client_name: current.client.name.clone(),
        client_company: current.client.company.clone(),
        terms: if lang == Lang::Ja { settings.terms.0.clone() } else { settings.terms.1.clone() },
        certificate_login: None,
        login_id: login_id.clone(),
        question: String::new(),
        scopes: Vec::new(),
        resources: Vec::new(),
        period: String::new(),
        explanation: if lang == Lang::Ja { settings.explanation.0.clone() } else { settings.explanation.1.clone() },
    };
    let mut csp = None;
    match flow.stage {
        FlowStage::Pushed | FlowStage::Login => match check_certificate(state, &peer.0) {
            Ok(cert) => page.certificate_login = Some(cert.account.login_id),
            Err(e) if peer.0.client_certificate.is_some() || !current.client.allow_password_login => {
                let e = if peer.0.client_certificate.is_none() {
                    WebError::new(
                        ErrorCode::CertificateRequired,
                        "this service is connected with certificate login only: open this page in the browser that holds your certificate",
                    )
                } else {
                    e
                };
                return error_page(state, lang, w.error_title, &e);
            }
            Err(_) => {}
        },
        FlowStage::Question => {
            let profile = state.oauth.store.profile(&login_id).ok().flatten().unwrap_or_default();
            page.question = profile.question.unwrap_or_default();
        }
        FlowStage::Scopes => {
            page.scopes = flow
                .scopes
                .iter()
                .map(|s| ScopeRow { name: s.clone(), description: describe(s), checked: true })
                .collect();
        }
        FlowStage::Resources => {
            let account = state.accounts.get(&login_id).ok().flatten();
            let all = state.oauth.store.resources().unwrap_or_default();
            page.resources = all
                .into_iter()
                .filter(|r| account.as_ref().is_some_and(|a| a.master == r.contract))
                .map(|r| ResourceRow { registered: r.registered.contains(&login_id), id: r.id, label: r.label })
                .collect();
        }
        FlowStage::Consent => {
            page.scopes = flow
                .chosen_scopes
                .iter()
                .map(|s| ScopeRow { name: s.clone(), description: describe(s), checked: true })
                .collect();
            let all = state.oauth.store.resources().unwrap_or_default();
            page.resources = all
                .into_iter()
                .filter(|r| flow.chosen_resources.contains(&r.id))
                .map(|r| ResourceRow { registered: true, id: r.id, label: r.label })
                .collect();
            let days = current.client.grant_days;
            let until = (OffsetDateTime::now_utc() + time::Duration::days(i64::from(days))).date();
            page.period = if lang == Lang::Ja {
                format!("{days}日（{until} まで）")
            } else {
                format!("{days} days (until {until})")
            };
            // The form goes on to the client's redirect URI: the policy allows its origin.
            csp = Some(format!(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
                 base-uri 'none'; frame-ancestors 'none'; form-action 'self' {}",
                origin(&flow.redirect_uri)
            ));
        }
        FlowStage::Otp => {}
    }
    if stage == "consent" {
        page.frame.scripts = &["/assets/oauth.js"];
    }
    let mut response = html::render(status, &page);
    if let Some(value) = csp.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_origins() {
        assert_eq!(network("192.0.2.77".parse().expect("ip")), "192.0.2.0/24");
        assert_eq!(network("2001:db8:1:2::5".parse().expect("ip")), "2001:db8:1::/48");
        assert_eq!(origin("https://kakeibo.example:8443/cb?x=1"), "https://kakeibo.example:8443");
        assert_eq!(origin("https://kakeibo.example"), "https://kakeibo.example");
    }
}
