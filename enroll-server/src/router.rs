//! Every route of the three listeners, and the layers they share.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::{ErrorCode, WebError};
use crate::state::Shared;
use crate::{csrf, enrollment, est, html, login, oauth, otp_web, publish, revocation, users};

const ENROLL_JS: &str = include_str!("../assets/enroll.js");
const ACQUIRE_JS: &str = include_str!("../assets/acquire.js");
const OAUTH_JS: &str = include_str!("../assets/oauth.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

async fn request_timeout(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => WebError::new(ErrorCode::Timeout, "the request took too long").into_response(),
    }
}

fn common_layers(router: Router<Shared>, state: &Shared) -> Router {
    router
        .fallback(|| async { WebError::not_found() })
        .layer(DefaultBodyLimit::max(state.settings.body_limit))
        .layer(middleware::from_fn(csrf::same_origin))
        .layer(middleware::map_response(html::secure_headers))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .with_state(state.clone())
}

fn assets(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/assets/enroll.js", get(|| async { html::asset("text/javascript; charset=utf-8", ENROLL_JS) }))
        .route("/assets/acquire.js", get(|| async { html::asset("text/javascript; charset=utf-8", ACQUIRE_JS) }))
        .route("/assets/oauth.js", get(|| async { html::asset("text/javascript; charset=utf-8", OAUTH_JS) }))
        .route("/assets/style.css", get(|| async { html::asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// The public listener: acquisition pages and the enrollment API.
pub fn public_router(state: Shared) -> Router {
    let router = Router::new()
        .route("/", get(enrollment::root))
        .route("/cert/acquire", get(enrollment::acquire_form).post(enrollment::acquire_submit))
        .route("/cert/reacquire", get(enrollment::reacquire_form))
        .route("/api/v1/enrollments", post(enrollment::api_create))
        .route("/api/v1/enrollments/{ticket}/csr", post(enrollment::api_csr))
        .route("/api/v1/enrollments/{ticket}/installed", post(enrollment::api_installed))
        .route("/api/v1/otp/provision", post(otp_web::api_provision));
    common_layers(assets(router), &state)
}

/// The certificate-login listener: login, home, users, revocation.
pub fn login_router(state: Shared) -> Router {
    let router = Router::new()
        .route("/", get(login::login_form))
        .route("/login", post(login::login_submit))
        .route("/home", get(login::home))
        .route("/logout", post(login::logout))
        .route("/users", post(users::add_user_form))
        .route("/users/{login_id}/unlock", post(users::unlock_user_form))
        .route("/tokens", post(users::token_form))
        .route("/otp", get(otp_web::code_form).post(otp_web::code_submit))
        .route("/otp/token", get(otp_web::token_form).post(otp_web::token_submit))
        .route("/otp/token/verify", post(otp_web::verify_submit))
        .route("/otp/hardware", post(otp_web::hardware_submit))
        .route("/users/{login_id}/otp/unlock", post(otp_web::unlock_form))
        .route("/users/{login_id}/otp/revoke", post(otp_web::revoke_form))
        .route("/certificates/{serial}/revoke", post(revocation::revoke_form))
        .route("/api/v1/login", post(login::api_login))
        .route("/api/v1/me", get(login::api_me))
        .route("/api/v1/users", post(users::api_add_user))
        .route("/api/v1/users/{login_id}/unlock", post(users::api_unlock_user))
        .route("/api/v1/users/{login_id}/tokens", post(users::api_create_token))
        .route("/api/v1/login/otp", post(otp_web::api_login_otp))
        .route("/api/v1/confirmation-challenge", get(otp_web::api_challenge))
        .route("/api/v1/otp/tokens", post(otp_web::api_issue))
        .route("/api/v1/otp/tokens/verify", post(otp_web::api_verify))
        .route("/api/v1/otp/hardware", post(otp_web::api_register_hardware))
        .route("/api/v1/users/{login_id}/otp/unlock", post(otp_web::api_unlock))
        .route("/api/v1/users/{login_id}/otp/revoke", post(otp_web::api_revoke))
        .route("/api/v1/certificates/{serial}/revoke", post(revocation::api_revoke))
        .route("/grants/{id}/end", post(oauth::grants::end_form))
        .route("/secret-question", post(oauth::grants::question_form))
        .route("/api/v1/grants", get(oauth::grants::api_list))
        .route("/api/v1/grants/{id}/end", post(oauth::grants::api_end))
        .route("/api/v1/secret-question", post(oauth::grants::api_question))
        .route("/.well-known/oauth-authorization-server", get(oauth::endpoints::metadata))
        .route("/oauth/par", post(oauth::endpoints::par))
        .route("/oauth/token", post(oauth::endpoints::token))
        .route("/oauth/introspect", post(oauth::endpoints::introspect))
        .route("/oauth/revoke", post(oauth::endpoints::revoke))
        .route("/oauth/authorize", get(oauth::flow::authorize))
        .route("/oauth/flow", get(oauth::flow::show))
        .route("/oauth/flow/{step}", post(oauth::flow::submit));
    common_layers(assets(router), &state)
}

/// The EST listener (RFC 7030): machines enroll and re-enroll.
pub fn est_router(state: Shared) -> Router {
    Router::new()
        .route("/.well-known/est/{op}", axum::routing::any(est::unlabelled))
        .route("/.well-known/est/{label}/{op}", axum::routing::any(est::labelled))
        .fallback(|| async {
            (axum::http::StatusCode::NOT_FOUND, "EST is served under /.well-known/est/\n").into_response()
        })
        .layer(DefaultBodyLimit::max(state.settings.body_limit))
        .layer(middleware::map_response(html::secure_headers))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .with_state(state)
}

/// The plain-HTTP listener: CA certificates, CRLs, OCSP, metrics.
pub fn publish_router(state: Shared) -> Router {
    Router::new()
        .route("/ca.crt", get(publish::ca_certificate))
        .route("/root.crt", get(publish::root_certificate))
        .route("/ca/{n}/ca.crt", get(publish::ca_generation_certificate))
        .route("/ca-chain.pem", get(publish::ca_chain))
        .route("/crl/{n}/{file}", get(publish::ca_generation_crl))
        .route("/crl/{file}", get(publish::ca_crl_shard))
        .route("/crl/ca.crl", get(publish::ca_crl))
        .route("/crl/root.crl", get(publish::root_crl))
        .route("/audit/checkpoint", get(publish::audit_checkpoint))
        .route("/ocsp", post(publish::ocsp_post))
        .route("/ocsp/{*request}", get(publish::ocsp_get))
        .route("/metrics", get(publish::metrics))
        .fallback(publish::not_found)
        .layer(DefaultBodyLimit::max(pki::ocsp::MAX_REQUEST))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .with_state(state)
}
