//! Accept loops: TLS handshakes with a timeout, hyper connections with header-read timeouts,
//! and a graceful stop that lets requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::state::Connection;

/// Binds a listener (before the process gives up its privileges), naming the address in the
/// error.
pub fn bind(addr: SocketAddr, what: &str) -> std::io::Result<std::net::TcpListener> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(named)?;
    listener.set_nonblocking(true).map_err(named)?;
    Ok(listener)
}

/// How connections of one listener are served.
#[derive(Clone)]
pub struct ListenerConfig {
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<TlsAcceptor>,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// Header read timeout.
    pub header_timeout: Duration,
}

async fn serve_io<I>(io: I, router: Router, conn: Connection, config: &ListenerConfig, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(conn.clone());
        request
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `router` on `listener` until `stop` turns true, then waits (up to 10 s) for the
/// connections in flight.
pub async fn serve(listener: TcpListener, router: Router, config: ListenerConfig, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
        };
        let (router, config, watcher) = (router.clone(), config.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match &config.tls {
                None => {
                    let conn = Connection { remote, client_certificate: None };
                    serve_io(tcp, router, conn, &config, watcher).await;
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client_certificate =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::new(c.to_vec()));
                    let conn = Connection { remote, client_certificate };
                    serve_io(tls, router, conn, &config, watcher).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
