//! Running the service: [`Listeners::bind`] takes the three TCP listeners and the admin socket
//! (in the web worker, before it gives up its privileges), then [`run`] serves them with the
//! background duties (CRL publishing, OCSP refresh, expiry notices) until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::listen::{self, ListenerConfig};
use crate::router::{est_router, login_router, public_router, publish_router};
use crate::settings::ServerSettings;
use crate::state::Shared;
use crate::{admin, notify, publish, tls};

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
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The addresses the listeners are bound to (a port 0 in the settings becomes a real one).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Public HTTPS.
    pub public: SocketAddr,
    /// Certificate-login HTTPS.
    pub login: SocketAddr,
    /// Plain HTTP.
    pub http: SocketAddr,
    /// EST HTTPS, when on.
    pub est: Option<SocketAddr>,
}

/// The bound listeners, not yet served.
#[derive(Debug)]
pub struct Listeners {
    public: std::net::TcpListener,
    login: std::net::TcpListener,
    http: std::net::TcpListener,
    est: Option<std::net::TcpListener>,
    admin: std::os::unix::net::UnixListener,
    /// Where they are.
    pub bound: Bound,
}

impl Listeners {
    /// Binds the listeners and the admin socket of `settings`.
    pub fn bind(settings: &ServerSettings) -> Result<Self, ServeError> {
        let public = listen::bind(settings.listen, "public HTTPS").map_err(ServeError::Bind)?;
        let login = listen::bind(settings.login_listen, "certificate-login HTTPS").map_err(ServeError::Bind)?;
        let http = listen::bind(settings.http_listen, "plain HTTP").map_err(ServeError::Bind)?;
        let est =
            settings.est.listen.map(|addr| listen::bind(addr, "EST HTTPS")).transpose().map_err(ServeError::Bind)?;
        let bound = Bound {
            public: public.local_addr().map_err(ServeError::Bind)?,
            login: login.local_addr().map_err(ServeError::Bind)?,
            http: http.local_addr().map_err(ServeError::Bind)?,
            est: est.as_ref().map(std::net::TcpListener::local_addr).transpose().map_err(ServeError::Bind)?,
        };
        let admin = admin::bind_socket(&settings.admin_socket)
            .map_err(|source| ServeError::Admin { path: settings.admin_socket.clone(), source })?;
        Ok(Self { public, login, http, est, admin, bound })
    }
}

/// Serves `listeners` until `shutdown` resolves, then stops accepting and lets requests in
/// flight finish. `ready` is called once everything listens.
pub async fn run(
    state: Shared,
    listeners: Listeners,
    tls: &tls::TlsMaterial,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let settings = &state.settings;
    let tokio_listener = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l).map_err(ServeError::Bind);
    let (public, login, http) =
        (tokio_listener(listeners.public)?, tokio_listener(listeners.login)?, tokio_listener(listeners.http)?);
    let config = |tls: Option<TlsAcceptor>, stats: usize| ListenerConfig {
        tls,
        handshake_timeout: settings.connections.first_request,
        header_timeout: settings.request_timeout,
        limits: settings.connections,
        stats: state.metrics.listeners[stats].clone(),
    };
    let public_config = config(Some(TlsAcceptor::from(tls::public_config(tls)?)), 0);
    let login_config = config(Some(TlsAcceptor::from(tls::login_config(tls)?)), 1);
    let (stop_tx, stop) = watch::channel(false);

    let admin = tokio::spawn(admin::serve_socket(listeners.admin, state.clone(), stop.clone()));
    let mut tasks = vec![
        tokio::spawn(listen::serve(public, public_router(state.clone()), public_config, stop.clone())),
        tokio::spawn(listen::serve(login, login_router(state.clone()), login_config, stop.clone())),
        tokio::spawn(listen::serve(http, publish_router(state.clone()), config(None, 2), stop.clone())),
        tokio::spawn(publish::crl_publisher(state.clone(), stop.clone())),
        tokio::spawn(publish::ocsp_refresher(state.clone(), stop.clone())),
        tokio::spawn(crate::oauth::purger(state.clone(), stop.clone())),
        tokio::spawn(publish::revocation_follower(state.clone(), stop.clone())),
        tokio::spawn(publish::publication_follower(state.clone(), stop.clone())),
        tokio::spawn(crate::duty::keeper(state.duty.clone(), stop.clone())),
    ];
    if let Some(est) = listeners.est {
        // Asks for a client certificate (simplereenroll) without requiring one (simpleenroll).
        let est_config = config(Some(TlsAcceptor::from(tls::login_config(tls)?)), 3);
        tasks.push(tokio::spawn(listen::serve(
            tokio_listener(est)?,
            est_router(state.clone()),
            est_config,
            stop.clone(),
        )));
    }
    if let (Some(queue), Some(settings)) = (state.mail.clone(), state.settings.mail.clone()) {
        tasks.push(tokio::spawn(notify::mail_deliverer(state.clone(), queue, settings, stop.clone())));
    }
    if let Some(notify) = state.settings.notify.clone() {
        tasks.push(tokio::spawn(notify::notifier(state.clone(), notify, stop.clone())));
    }
    ready(listeners.bound);
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), admin).await {
        tracing::warn!(error = %e, "admin socket");
    }
    // Gone with the service; a supervisor removes it when this process may not.
    let _ = std::fs::remove_file(&state.settings.admin_socket);
    Ok(())
}
