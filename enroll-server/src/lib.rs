//! inkan's enrollment service.
//!
//! Three listeners share one [`state::AppState`]:
//! - public HTTPS ([`public_router`]): the acquisition pipeline of manual 004 as pages
//!   (電子証明書取得 → 取得前処理 → 取得開始 → 発行処理中 → install) and as the JSON API;
//! - certificate-login HTTPS ([`login_router`]): asks for a client certificate in the
//!   handshake, then password login, the account's home, a master's user administration;
//! - plain HTTP ([`publish_router`]): the CA certificates and CRLs.
//!
//! The service holds no CA key: it reaches the CA through [`backend::Issuer`] and the
//! registry through `pki::registry::Registry`. Operator commands arrive on the admin socket
//! ([`admin`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
pub mod admin;
pub mod backend;
mod enroll;
pub mod error;
mod html;
pub mod i18n;
mod listen;
mod login;
pub mod notify;
pub mod ocsp;
pub mod publish;
pub mod settings;
pub mod state;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::error::ApiError;
use crate::listen::ListenerConfig;
use crate::state::Shared;

const ENROLL_JS: &str = include_str!("../assets/enroll.js");
const ACQUIRE_JS: &str = include_str!("../assets/acquire.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

async fn request_timeout(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long").into_response()
        }
    }
}

fn common_layers(router: Router<Shared>, state: &Shared) -> Router {
    router
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(state.settings.body_limit))
        .layer(middleware::map_response(html::secure_headers))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .with_state(state.clone())
}

fn assets(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/assets/enroll.js", get(|| async { html::asset("text/javascript; charset=utf-8", ENROLL_JS) }))
        .route("/assets/acquire.js", get(|| async { html::asset("text/javascript; charset=utf-8", ACQUIRE_JS) }))
        .route("/assets/style.css", get(|| async { html::asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// The public listener's routes: acquisition pages and the enrollment API.
pub fn public_router(state: Shared) -> Router {
    let router = Router::new()
        .route("/", get(enroll::root))
        .route("/cert/acquire", get(enroll::acquire_form).post(enroll::acquire_submit))
        .route("/cert/reacquire", get(enroll::reacquire_form))
        .route("/api/v1/enrollments", post(enroll::api_create))
        .route("/api/v1/enrollments/{ticket}/csr", post(enroll::api_csr))
        .route("/api/v1/enrollments/{ticket}/installed", post(enroll::api_installed));
    common_layers(assets(router), &state)
}

/// The certificate-login listener's routes.
pub fn login_router(state: Shared) -> Router {
    let router = Router::new()
        .route("/", get(login::login_page))
        .route("/login", post(login::login_submit))
        .route("/home", get(login::home))
        .route("/users", post(login::add_user_form))
        .route("/users/{login_id}/unlock", post(login::unlock_user_form))
        .route("/logout", post(login::logout))
        .route("/api/v1/login", post(login::api_login))
        .route("/api/v1/me", get(login::api_me))
        .route("/api/v1/users", post(login::api_add_user))
        .route("/api/v1/users/{login_id}/unlock", post(login::api_unlock_user))
        .route("/api/v1/certificates/{serial}/revoke", post(login::api_revoke))
        .route("/certificates/{serial}/revoke", post(login::revoke_form));
    common_layers(assets(router), &state)
}

/// The plain-HTTP listener's routes: CA certificates, CRLs, OCSP, metrics.
pub fn publish_router(state: Shared) -> Router {
    publish::router(state.clone()).layer(middleware::from_fn_with_state(state, request_timeout))
}

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(std::io::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The admin socket could not be created.
    #[error("admin socket {path}: {source}")]
    Admin {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The addresses the listeners are bound to (a port 0 in the settings becomes a real one).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Public HTTPS.
    pub public: std::net::SocketAddr,
    /// Certificate-login HTTPS.
    pub login: std::net::SocketAddr,
    /// Plain HTTP.
    pub http: std::net::SocketAddr,
}

/// Runs the three listeners and the admin socket until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish. `ready` is called once everything listens.
pub async fn run(
    state: Shared,
    tls: &tls::TlsMaterial,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let settings = &state.settings;
    let public = listen::bind(settings.listen, "public HTTPS").await.map_err(ServeError::Bind)?;
    let login = listen::bind(settings.login_listen, "certificate-login HTTPS").await.map_err(ServeError::Bind)?;
    let http = listen::bind(settings.http_listen, "plain HTTP").await.map_err(ServeError::Bind)?;
    let bound = Bound {
        public: public.local_addr().map_err(ServeError::Bind)?,
        login: login.local_addr().map_err(ServeError::Bind)?,
        http: http.local_addr().map_err(ServeError::Bind)?,
    };
    let config = |tls: Option<TlsAcceptor>| ListenerConfig {
        tls,
        handshake_timeout: settings.handshake_timeout,
        header_timeout: settings.request_timeout,
    };
    let public_config = config(Some(TlsAcceptor::from(tls::public_config(tls)?)));
    let login_config = config(Some(TlsAcceptor::from(tls::login_config(tls)?)));
    let (stop_tx, stop) = watch::channel(false);

    let admin_path = settings.admin_socket.clone();
    let admin_state = state.clone();
    let admin_stop = stop.clone();
    // Bind the socket before announcing readiness, so the CLI finds it at once.
    let admin = {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let path = admin_path.clone();
        let task = tokio::spawn(async move {
            let result = admin::serve_socket(&path, admin_state, admin_stop, bound_tx).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "admin socket failed");
            }
        });
        match bound_rx.await {
            Ok(Ok(())) => task,
            Ok(Err(source)) => return Err(ServeError::Admin { path: admin_path, source }),
            Err(_) => {
                return Err(ServeError::Admin { path: admin_path, source: std::io::Error::other("admin task ended") });
            }
        }
    };

    let mut tasks = vec![
        tokio::spawn(listen::serve(public, public_router(state.clone()), public_config, stop.clone())),
        tokio::spawn(listen::serve(login, login_router(state.clone()), login_config, stop.clone())),
        tokio::spawn(listen::serve(http, publish_router(state.clone()), config(None), stop.clone())),
        tokio::spawn(publish::crl_publisher(state.clone(), stop.clone())),
        tokio::spawn(publish::ocsp_refresher(state.clone(), stop.clone())),
    ];
    if let Some(notify) = state.settings.notify.clone() {
        tasks.push(tokio::spawn(notify::notifier(state.clone(), notify, stop.clone())));
    }
    ready(bound);
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    Ok(())
}

pub use listen::shutdown_signal;
