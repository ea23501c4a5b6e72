//! Accept loops that hold up to connection floods: a cap on connections per source address and
//! in total per listener (over the cap a connection is closed at once), a deadline for the TLS
//! handshake, another for the first bytes of the first request, an idle timeout between
//! requests (HTTP/1.1 keep-alive and HTTP/2 alike), accept that backs off when descriptors run
//! out, and a graceful stop that lets requests in flight finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::metrics::ListenerStats;
use crate::settings::ConnectionLimits;
use crate::state::Connection;

/// Binds a listener (before the process gives up its privileges), naming the address in the
/// error.
pub fn bind(addr: SocketAddr, what: &str) -> std::io::Result<std::net::TcpListener> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(named)?;
    // A longer queue than std's 128: under a burst of connections the accept loop (which closes
    // what is over the caps at once) drains it, and a client's SYN is not dropped meanwhile.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|e| named(std::io::Error::from(e)))?;
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
    /// Caps and deadlines.
    pub limits: ConnectionLimits,
    /// Counters for `/metrics`.
    pub stats: Arc<ListenerStats>,
}

/// Who holds how many connections now.
struct Gate {
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection: released when dropped.
struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
    stats: Arc<ListenerStats>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self.gate.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// Admits a connection from `ip`, or says which cap refuses it.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ConnectionLimits,
        stats: &Arc<ListenerStats>,
    ) -> Result<Admitted, &'static str> {
        let mut map = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        if stats.open.load(Ordering::Relaxed) >= limits.total {
            return Err("total");
        }
        let held = map.entry(ip).or_insert(0);
        if *held >= limits.per_address {
            if *held == 0 {
                map.remove(&ip);
            }
            return Err("per_address");
        }
        *held += 1;
        stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted { gate: self.clone(), ip, stats: stats.clone() })
    }
}

/// An IO stream that notes when it last moved bytes either way.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` plus one; 0 is never.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }
}

/// A request being answered: the idle deadline does not run meanwhile, and starts again when
/// the answer is made.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection has moved no byte for its deadline, with no request being
/// answered: `first` until the first byte moves, then `idle`. (A request's own time is bounded
/// by the request timeout.)
async fn idle(activity: Arc<Activity>, first: Duration, idle: Duration) {
    loop {
        let moved = activity.last.load(Ordering::Relaxed);
        let (since, limit) = if moved == 0 { (0, first) } else { (moved - 1, idle) };
        tokio::time::sleep_until((activity.epoch + Duration::from_millis(since) + limit).into()).await;
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            // Answering: look again after another deadline.
            activity.touch();
            continue;
        }
        if activity.last.load(Ordering::Relaxed) == moved {
            return;
        }
    }
}

async fn serve_io<I>(io: I, router: Router, conn: Connection, config: &ListenerConfig, watcher: Watcher, epoch: Instant)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { epoch, last: AtomicU64::new(0), in_flight: AtomicUsize::new(0) });
    let io = Watched { inner: io, activity: activity.clone() };
    let answering = activity.clone();
    let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(conn.clone());
        let (router, in_flight) = (router.clone(), InFlight::new(answering.clone()));
        async move {
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).into_owned();
    let limits = &config.limits;
    tokio::select! {
        served = watcher.watch(connection) => if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        () = idle(activity, limits.first_request, limits.idle) => {
            config.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closing an idle connection");
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then waits (up to 10 s) for the
/// connections in flight.
pub async fn serve(listener: TcpListener, router: Router, config: ListenerConfig, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let gate = Arc::new(Gate { by_address: Mutex::new(HashMap::new()) });
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff = Duration::from_millis(10);
                    pair
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; waiting {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
        };
        let admitted = match gate.admit(remote.ip(), &config.limits, &config.stats) {
            Ok(admitted) => admitted,
            Err(cap) => {
                // Closed at once: a flood costs a descriptor for an instant, not for its life.
                let counter = if cap == "total" { &config.stats.refused_total } else { &config.stats.refused_address };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, cap, "connection refused: over the cap");
                drop(tcp);
                continue;
            }
        };
        let (router, config, watcher) = (router.clone(), config.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _admitted = admitted;
            let epoch = Instant::now();
            let _ = tcp.set_nodelay(true);
            match &config.tls {
                None => {
                    let conn = Connection { remote, client_certificate: None };
                    serve_io(tcp, router, conn, &config, watcher, epoch).await;
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            config.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client_certificate =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::new(c.to_vec()));
                    let conn = Connection { remote, client_certificate };
                    serve_io(tls, router, conn, &config, watcher, Instant::now()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}
