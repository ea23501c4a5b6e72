//! What clients call: metadata (RFC 8414), pushed authorization requests (RFC 9126), the
//! token endpoint, introspection (RFC 7662) and revocation (RFC 7009). Every one but the
//! metadata authenticates the client by its certificate (`tls_client_auth`).

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::{AuthenticatedClient, OAuth, OAuthError, REQUEST_URI_PREFIX, hash, pkce_matches, secret};
use crate::extract::Peer;
use crate::state::{Shared, blocking};
use crate::stores::oauth::{Flow, FlowStage, Redeemed, TokenKind};

/// The longest parameter value accepted.
const MAX_VALUE: usize = 2048;

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::json!({ "error": self.error, "error_description": self.description });
        no_store((status, axum::Json(body)).into_response())
    }
}

/// Answers must not be cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    no_store((status, axum::Json(body)).into_response())
}

/// Form parameters, each at most once (RFC 6749 §3.1).
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Checks a decoded form.
    fn new(
        form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
    ) -> Result<Self, OAuthError> {
        let Form(pairs) = form.map_err(|e| OAuthError::bad("invalid_request", format!("not a form: {e}")))?;
        for (i, (name, value)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(OAuthError::bad("invalid_request", format!("parameter {name} is repeated")));
            }
            if value.len() > MAX_VALUE {
                return Err(OAuthError::bad("invalid_request", format!("parameter {name} is too long")));
            }
        }
        Ok(Self(pairs))
    }

    /// The value of `name`, when present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, v)| n == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::bad("invalid_request", format!("{name} is missing")))
    }
}

type FormResult = Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>;

/// Authenticates the caller off the async threads (the registry may read the disk).
async fn client(state: &Shared, peer: &Peer, params: &Params) -> Result<AuthenticatedClient, OAuthError> {
    let (s, cert, id) = (state.clone(), peer.0.client_certificate.clone(), params.get("client_id").map(str::to_owned));
    let found = blocking(move || {
        s.oauth.authenticate_client(
            s.registry.as_ref(),
            cert.as_deref().map(Vec::as_slice),
            id.as_deref(),
            OffsetDateTime::now_utc(),
        )
    })
    .await
    .map_err(OAuthError::from)?;
    if let Err(e) = &found {
        state
            .audit(
                "oauth.client_refused",
                serde_json::json!({ "client_id": params.get("client_id"), "reason": e.description }),
            )
            .await;
    }
    found
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(state): State<Shared>) -> Response {
    let issuer = &state.login_url;
    let auth_methods = ["tls_client_auth"];
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "pushed_authorization_request_endpoint": format!("{issuer}/oauth/par"),
        "require_pushed_authorization_requests": true,
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "tls_client_certificate_bound_access_tokens": true,
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": state.oauth.settings.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "authorization_details_types_supported": [super::RESOURCE_DETAIL_TYPE],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    json(StatusCode::OK, body)
}

/// Checks a pushed request's parameters against the client's registration.
fn check_request(oauth: &OAuth, client: &AuthenticatedClient, params: &Params) -> Result<Flow, OAuthError> {
    let registered = &client.client;
    if params.get("request").is_some() || params.get("request_uri").is_some() {
        return Err(OAuthError::bad("invalid_request", "request objects and request_uri are not accepted here"));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => return Err(OAuthError::bad("unsupported_response_type", "only response_type=code is supported")),
        None => return Err(OAuthError::bad("invalid_request", "response_type is missing")),
    }
    let redirect_uri = params.require("redirect_uri")?;
    if !registered.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(OAuthError::bad("invalid_request", "redirect_uri is not one registered for this client"));
    }
    let scope = params.get("scope").ok_or_else(|| OAuthError::bad("invalid_scope", "scope is missing"))?;
    let mut scopes: Vec<String> = Vec::new();
    for name in scope.split(' ').filter(|s| !s.is_empty()) {
        if oauth.settings.scope(name).is_none() || !registered.scopes.iter().any(|s| s == name) {
            return Err(OAuthError::bad("invalid_scope", format!("scope {name:?} is not allowed for this client")));
        }
        if !scopes.iter().any(|s| s == name) {
            scopes.push(name.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err(OAuthError::bad("invalid_scope", "scope is empty"));
    }
    let challenge = params
        .get("code_challenge")
        .ok_or_else(|| OAuthError::bad("invalid_request", "code_challenge is missing (PKCE is required)"))?;
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::bad("invalid_request", "code_challenge_method must be S256"));
    }
    if challenge.len() != 43 || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(OAuthError::bad("invalid_request", "code_challenge is not a base64url SHA-256"));
    }
    let state = params.get("state").map(str::to_owned);
    if state.as_ref().is_some_and(|s| s.len() > 512) {
        return Err(OAuthError::bad("invalid_request", "state is longer than 512 characters"));
    }
    Ok(Flow {
        client_id: registered.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state,
        code_challenge: challenge.to_owned(),
        stage: FlowStage::Pushed,
        csrf: String::new(),
        login_id: None,
        risky: false,
        chosen_scopes: Vec::new(),
        chosen_resources: Vec::new(),
        pin_failures: 0,
        expires_at: OffsetDateTime::now_utc() + oauth.settings.request_uri_ttl,
    })
}

/// `POST /oauth/par`: stores the request, answers its `request_uri`.
pub async fn par(State(state): State<Shared>, peer: Peer, form: FormResult) -> Response {
    let outcome = async {
        state.rate_limit(peer.0.remote).map_err(|_| OAuthError::bad("slow_down", "too many requests"))?;
        let params = Params::new(form)?;
        let client = client(&state, &peer, &params).await?;
        let flow = check_request(&state.oauth, &client, &params)?;
        let reference = secret();
        let s = state.clone();
        let key = par_key(&reference);
        let stored = flow.clone();
        blocking(move || s.oauth.store.put_flow(&key, &stored)).await.map_err(OAuthError::from)??;
        state
            .audit(
                "oauth.par",
                serde_json::json!({ "client_id": flow.client_id, "scopes": flow.scopes, "redirect_uri": flow.redirect_uri }),
            )
            .await;
        let ttl = state.oauth.settings.request_uri_ttl.whole_seconds();
        Ok::<_, OAuthError>(json(
            StatusCode::CREATED,
            serde_json::json!({ "request_uri": format!("{REQUEST_URI_PREFIX}{reference}"), "expires_in": ttl }),
        ))
    }
    .await;
    outcome.unwrap_or_else(IntoResponse::into_response)
}

/// The store key of a pushed request.
pub fn par_key(reference: &str) -> String {
    format!("par:{}", pki::encoding::hex(&hash(reference)))
}

/// `POST /oauth/token`.
pub async fn token(State(state): State<Shared>, peer: Peer, form: FormResult) -> Response {
    let outcome = async {
        let params = Params::new(form)?;
        let client = client(&state, &peer, &params).await?;
        match params.get("grant_type") {
            Some("authorization_code") => exchange_code(&state, &client, &params).await,
            Some("refresh_token") => refresh(&state, &client, &params).await,
            Some(other) => Err(OAuthError::bad(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported (authorization_code, refresh_token)"),
            )),
            None => Err(OAuthError::bad("invalid_request", "grant_type is missing")),
        }
    }
    .await;
    outcome.unwrap_or_else(IntoResponse::into_response)
}

async fn exchange_code(state: &Shared, client: &AuthenticatedClient, params: &Params) -> Result<Response, OAuthError> {
    let code = params.require("code")?.to_owned();
    let redirect_uri = params.require("redirect_uri")?.to_owned();
    let verifier = params.get("code_verifier").map(str::to_owned);
    let (s, c) = (state.clone(), client.clone());
    let result = blocking(move || -> Result<(serde_json::Value, Option<String>), OAuthError> {
        let now = OffsetDateTime::now_utc();
        let oauth = &s.oauth;
        let record = match oauth.store.redeem_code(&hash(&code))? {
            None => return Err(OAuthError::grant("the code is not known")),
            Some(Redeemed::Again(record)) => {
                // A second use: whoever has the code is not to be trusted, nor what the
                // first use got (RFC 6749 §4.1.2).
                oauth.end_grant(&record.grant_id, "code-reuse", now)?;
                return Ok((serde_json::json!({ "reused": record.grant_id }), None));
            }
            Some(Redeemed::First(record)) => record,
        };
        if record.client_id != c.client.client_id {
            return Err(OAuthError::grant("the code was issued to another client"));
        }
        if record.expires_at <= now {
            return Err(OAuthError::grant("the code has expired"));
        }
        if record.redirect_uri != redirect_uri {
            return Err(OAuthError::grant("redirect_uri is not the one of the authorization request"));
        }
        let Some(verifier) = verifier else {
            return Err(OAuthError::grant("code_verifier is missing (PKCE)"));
        };
        if !pkce_matches(&verifier, &record.code_challenge) {
            return Err(OAuthError::grant("code_verifier does not match the code_challenge"));
        }
        let grant = oauth
            .store
            .grant(&record.grant_id)?
            .filter(|g| g.active(now))
            .ok_or_else(|| OAuthError::grant("the grant has ended"))?;
        let tokens = oauth.issue_tokens(&grant, &c.thumbprint, true, now)?;
        let body = serde_json::to_value(&tokens).map_err(OAuthError::server)?;
        Ok((body, Some(grant.id)))
    })
    .await
    .map_err(OAuthError::from)??;
    match result {
        (body, Some(grant_id)) => {
            state
                .audit(
                    "oauth.token",
                    serde_json::json!({ "client_id": client.client.client_id, "grant": grant_id, "grant_type": "authorization_code" }),
                )
                .await;
            Ok(json(StatusCode::OK, body))
        }
        (reused, None) => {
            state
                .audit(
                    "oauth.code_reused",
                    serde_json::json!({ "client_id": client.client.client_id, "grant": reused["reused"] }),
                )
                .await;
            Err(OAuthError::grant("the code was used before; the tokens issued for it are revoked"))
        }
    }
}

async fn refresh(state: &Shared, client: &AuthenticatedClient, params: &Params) -> Result<Response, OAuthError> {
    let token = params.require("refresh_token")?.to_owned();
    let (s, c) = (state.clone(), client.clone());
    let (body, grant_id) = blocking(move || -> Result<_, OAuthError> {
        let now = OffsetDateTime::now_utc();
        let (record, grant) = s
            .oauth
            .live_token(&token, now)?
            .filter(|(r, _)| r.kind == TokenKind::Refresh)
            .ok_or_else(|| OAuthError::grant("the refresh token is not valid"))?;
        if record.client_id != c.client.client_id {
            return Err(OAuthError::grant("the refresh token was issued to another client"));
        }
        let tokens = s.oauth.issue_tokens(&grant, &c.thumbprint, false, now)?;
        Ok((serde_json::to_value(&tokens).map_err(OAuthError::server)?, grant.id))
    })
    .await
    .map_err(OAuthError::from)??;
    state.audit("oauth.refresh", serde_json::json!({ "client_id": client.client.client_id, "grant": grant_id })).await;
    Ok(json(StatusCode::OK, body))
}

/// `POST /oauth/introspect`: what a token is, for the client it was issued to.
pub async fn introspect(State(state): State<Shared>, peer: Peer, form: FormResult) -> Response {
    let outcome = async {
        let params = Params::new(form)?;
        let client = client(&state, &peer, &params).await?;
        let token = params.require("token")?.to_owned();
        let (s, issuer) = (state.clone(), state.login_url.clone());
        blocking(move || -> Result<Response, OAuthError> {
            let now = OffsetDateTime::now_utc();
            let Some((record, grant)) = s.oauth.live_token(&token, now)? else {
                return Ok(json(StatusCode::OK, serde_json::json!({ "active": false })));
            };
            if record.client_id != client.client.client_id {
                return Ok(json(StatusCode::OK, serde_json::json!({ "active": false })));
            }
            let mut body = serde_json::json!({
                "active": true,
                "iss": issuer,
                "client_id": record.client_id,
                "sub": record.login_id,
                "username": record.login_id,
                "scope": record.scopes.join(" "),
                "iat": record.issued_at.unix_timestamp(),
                "exp": record.expires_at.unix_timestamp(),
                "grant_expires_at": grant.expires_at.unix_timestamp(),
                "authorization_details": OAuth::details(&grant),
            });
            if record.kind == TokenKind::Access {
                body["token_type"] = "Bearer".into();
                body["cnf"] = serde_json::json!({ "x5t#S256": record.x5t_s256 });
            } else {
                body["token_type"] = "refresh_token".into();
            }
            Ok(json(StatusCode::OK, body))
        })
        .await
        .map_err(OAuthError::from)?
    }
    .await;
    outcome.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /oauth/revoke`: an access token goes alone; a refresh token ends its grant.
pub async fn revoke(State(state): State<Shared>, peer: Peer, form: FormResult) -> Response {
    let outcome = async {
        let params = Params::new(form)?;
        let client = client(&state, &peer, &params).await?;
        let token = params.require("token")?.to_owned();
        let s = state.clone();
        let client_id = client.client.client_id.clone();
        let revoked = blocking(move || -> Result<Option<(TokenKind, String)>, OAuthError> {
            let now = OffsetDateTime::now_utc();
            let Some(record) = s.oauth.store.token(&hash(&token))? else { return Ok(None) };
            // Another client's token is not revoked, and the answer does not tell (RFC 7009 §2.1).
            if record.client_id != client_id || record.revoked {
                return Ok(None);
            }
            match record.kind {
                TokenKind::Access => {
                    s.oauth.store.revoke_token(&hash(&token))?;
                }
                TokenKind::Refresh => {
                    s.oauth.end_grant(&record.grant_id, &format!("client:{client_id}"), now)?;
                }
            }
            Ok(Some((record.kind, record.grant_id)))
        })
        .await
        .map_err(OAuthError::from)??;
        if let Some((kind, grant)) = revoked {
            let kind = if kind == TokenKind::Access { "access_token" } else { "refresh_token" };
            state
                .audit(
                    "oauth.revoked",
                    serde_json::json!({ "client_id": client.client.client_id, "grant": grant, "token_type": kind }),
                )
                .await;
        }
        Ok::<_, OAuthError>(no_store(StatusCode::OK.into_response()))
    }
    .await;
    outcome.unwrap_or_else(IntoResponse::into_response)
}
