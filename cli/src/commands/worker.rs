//! `inkan worker`: the web worker `serve` starts. It binds the listeners and the admin socket,
//! gives up what it does not need (core dumps, root, every file but its own), and only then
//! opens its stores, reaches the signer and serves. It never sees the CA passphrase: it gets no
//! environment but `INKAN_LOG` (and `INKAN_DATABASE_PASSWORD` when the operator gives the
//! database password so), and its standard input is a pipe on which nothing is written.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ca::layout::{self, DataDir};
use ca::remote::SignerClient;
use ca::service::{CaService, SignerLink};
use ca::sled_store::Durability;
use enroll_server::accounts::{Accounts, Password, Role};
use enroll_server::serve::{Bound, Listeners};
use enroll_server::state::{AppState, Parts};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::{AuditSink, open_otp};
use crate::args::WorkerArgs;
use crate::config::Config;
use crate::sandbox::{self, Restricted};

/// The line that tells the supervisor the worker serves, and on which addresses (it is not
/// shown): `inkan-worker-ready public=ADDR login=ADDR http=ADDR [est=ADDR]`.
pub const READY: &str = "inkan-worker-ready";

pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    crate::logging::init();
    sandbox::no_core_dumps();
    let dir = DataDir::new(&args.data_dir);
    let mut config = Config::load(&dir.config())?;
    args.listeners.apply(&mut config);
    let mut settings = config.server_settings(&dir);
    // The listeners at their caps, the stores, the signer's connections and the admin socket
    // must fit under the open-files limit; the admin socket keeps a margin of its own.
    let files = sandbox::raise_open_files();
    let listeners = if settings.est.listen.is_some() { 4 } else { 3 };
    let fits = usize::try_from(files.saturating_sub(512) / listeners).unwrap_or(usize::MAX).max(16);
    if settings.connections.total > fits {
        tracing::warn!(
            configured = settings.connections.total,
            open_files = files,
            "[server] max_connections does not fit the open-files limit: {fits} per listener"
        );
        settings.connections.total = fits;
        settings.connections.per_address = settings.connections.per_address.min(fits);
    }
    // A signer over TCP: this instance's certificate and key are read now, before the file
    // restrictions.
    let signer_tls = match (&args.remote_signer.signer_client_cert, &args.remote_signer.signer_client_key) {
        (Some(cert), Some(key)) => Some(ca::signer_tls::ClientSide::new(cert, key, &super::ca_certificates(&dir)?)?),
        _ => None,
    };
    let writable = sandbox::worker_dirs(&dir);
    for path in &writable {
        layout::create_private_dir(path)?;
    }

    // Bound while privileged (ports below 1024); then privileges go, before any other thread
    // starts or any outside input is read.
    let listeners = Listeners::bind(&settings)?;
    if let Some(user) = &config.server.user
        && let Some(found) = sandbox::service_user(user)?
    {
        sandbox::switch_user(&found, &writable, dir.path())?;
    }
    let readable: Vec<_> = config.notify.ca_file.iter().chain(config.storage.password_file.iter()).cloned().collect();
    match sandbox::restrict_files(&writable, &readable, dir.path())? {
        Restricted::Fully => tracing::debug!("file access restricted to the web worker's own directories"),
        Restricted::Partly => tracing::warn!("this kernel enforces part of the web worker's file restrictions"),
        Restricted::Not => {
            tracing::warn!("Landlock is not available: the web worker is not kept out of the CA's files");
        }
    }

    let durability = if args.danger_no_fsync { Durability::Unsafe } else { Durability::Flush };
    let stores = crate::storage::open(&dir, &config, durability)?;
    let registry = stores.registry();
    let web = stores.web()?;
    let accounts = Accounts::new(web.accounts.clone(), settings.accounts.clone())?;
    let otp = open_otp(&dir, &web, &settings)?;
    let audit = ca::audit::AuditLog::new(dir.path(), "service");
    let audit = Arc::new(if args.danger_no_fsync { audit.without_sync() } else { audit });

    let client = match (&args.signer_socket, &args.remote_signer.signer_address, &signer_tls) {
        (Some(socket), _, _) => SignerClient::new(socket),
        (None, Some(address), Some(tls)) => {
            SignerClient::tls(address, &args.remote_signer.name().unwrap_or_default(), tls)?
        }
        _ => anyhow::bail!("no signer: give --signer-socket, or --signer-address with the instance's certificate"),
    };
    wait_for_signer(&client)?;
    let ca_service = Arc::new(
        CaService::new(SignerLink::Remote(client), registry.clone(), &dir, config.crl_validity(), audit.clone())?
            .with_crl_shards(config.ca.crl_shards),
    );
    // What the last worker recorded without waiting for the disk and lost in a crash, from the
    // signer's ledger, before anything is served.
    match ca_service.catch_up(None) {
        Ok(done) if done.recovered > 0 => tracing::warn!(
            recovered = done.recovered,
            checked = done.checked,
            "certificates missing from the registry were recorded from the signer's ledger"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "catching up with the signer's ledger; the follower tries again"),
    }
    let credential = ca_service.server_credential(&config.server.names)?;
    if let Err(e) = ca_service.ensure_ocsp_responder() {
        tracing::warn!(error = %e, "the signer has no OCSP responder yet; OCSP answers wait for it");
    }
    let tls = enroll_server::tls::TlsMaterial {
        chain: credential.chain.iter().cloned().map(CertificateDer::from).collect(),
        key: PrivatePkcs8KeyDer::from(credential.key.to_vec()),
        client_cas: pki::request::Issuer::ca_generations(&*ca_service)
            .into_iter()
            .map(|(_, der)| CertificateDer::from(der.to_vec()))
            .collect(),
    };
    drop(credential);

    let first_master = if args.dev { dev_master(&accounts, &audit)? } else { None };
    let public_url = config.url_of(listeners.bound.public);
    let login_url = config.url_of(listeners.bound.login);
    let state = Arc::new(AppState::new(Parts {
        settings,
        accounts,
        mail: otp.mail().cloned(),
        otp,
        notices: web.notices.clone(),
        oauth: enroll_server::oauth::OAuth::new(web.oauth.clone(), config.oauth.settings()?),
        registry,
        issuer: ca_service.clone(),
        audit: Arc::new(AuditSink(audit.clone())),
        public_url: public_url.clone(),
        login_url: login_url.clone(),
        sessions: web.sessions.clone(),
        leases: web.leases.clone(),
    })?);
    // A backup exports sled's stores; a database has its own tools (pg_dump).
    if let crate::storage::Stores::Sled { registry, web } = &stores {
        let (dir, registry, web) = (dir.clone(), registry.clone(), web.clone());
        state.set_snapshotter(Box::new(move || super::backup::snapshot_stores(&dir, &registry, &web)));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    audit.append("service.worker_start", serde_json::json!({ "pid": std::process::id() }))?;
    let mut signals = {
        let _context = runtime.enter();
        crate::process::StopSignals::register(true).context("installing the signal handlers")?
    };
    let stop = async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::process::on_stdin_closed(move || {
            let _ = tx.send(());
        });
        tokio::select! {
            _ = signals.wait() => {}
            _ = rx => tracing::info!("the supervisor is gone: stopping"),
        }
    };
    let follower = LedgerFollower::start(ca_service.clone(), state.clone())?;
    let root = dir.root_cert();
    runtime.block_on(enroll_server::serve::run(state, listeners, &tls, stop, move |bound| {
        announce(&dir, &root, bound, &public_url, &login_url, first_master.as_ref());
    }))?;
    // Every request has been answered: a last round leaves the registry durable.
    follower.stop();
    audit.append("service.worker_stop", serde_json::json!({ "pid": std::process::id() }))?;
    Ok(())
}

/// Every [`FOLLOW_EVERY`], makes what the service recorded without waiting for the disk
/// durable and moves the registry's cursor in the signer's ledger; records what the registry
/// lacks (the signer signed, but its answer never reached the service).
struct LedgerFollower {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The follower thread's name, which the durability test tells its syncs apart by.
const FOLLOWER_THREAD: &str = "ledger-follower";

impl LedgerFollower {
    fn start(ca: Arc<CaService>, events: Arc<AppState>) -> std::io::Result<Self> {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(FOLLOWER_THREAD.into()).spawn(move || {
            let mut settled = None;
            loop {
                let stopping = {
                    let (lock, wake) = &*flag;
                    let stopped = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *wake.wait_timeout(stopped, FOLLOW_EVERY).unwrap_or_else(std::sync::PoisonError::into_inner).0
                };
                // Issuances past the previous round's end may still be on their way into the
                // registry; once stopping, none is.
                match ca.catch_up(if stopping { None } else { settled }) {
                    Ok(done) => {
                        if done.recovered > 0 {
                            tracing::warn!(recovered = done.recovered, "recorded certificates the registry lacked");
                        }
                        enroll_server::ports::Events::revoked(&*events, &done.superseded);
                        settled = Some(done.end);
                    }
                    Err(e) => tracing::warn!(error = %e, "following the signer's ledger"),
                }
                if stopping {
                    return;
                }
            }
        });
        Ok(Self { stop, thread: thread? })
    }

    fn stop(self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}

/// `serve --dev` on an empty account store: the master user "master" with a new password.
fn dev_master(accounts: &Accounts, audit: &ca::audit::AuditLog) -> anyhow::Result<Option<Password>> {
    if !accounts.list()?.is_empty() {
        return Ok(None);
    }
    let password = Password::generate();
    accounts.create("master", Role::Master, None, &password, time::OffsetDateTime::now_utc())?;
    audit.append("user.created", serde_json::json!({ "by": "serve --dev", "login_id": "master", "role": "master" }))?;
    Ok(Some(password))
}

/// Prints where the service is, then [`READY`] for the supervisor.
fn announce(
    dir: &DataDir,
    root: &std::path::Path,
    bound: Bound,
    public_url: &str,
    login_url: &str,
    first_master: Option<&Password>,
) {
    // Port 0 in the settings means "any": print the ports actually bound.
    let public_url = with_port(public_url, bound.public.port());
    let login_url = with_port(login_url, bound.login.port());
    let http_url = format!("http://{}", bound.http);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "inkan is serving (data directory {})", dir.path().display());
    let _ = writeln!(out, "  obtain a certificate (電子証明書取得): {public_url}/cert/acquire");
    let _ = writeln!(out, "  certificate login (電子証明書ログイン): {login_url}/");
    let _ = writeln!(out, "  CA certificates and CRLs:            {http_url}/root.crt, {http_url}/crl/ca.crl");
    if root.exists() {
        let _ = writeln!(out, "  trust the root CA in your browser:   {}", root.display());
    } else {
        let _ = writeln!(out, "  trust the root CA in your browser:   {http_url}/root.crt");
    }
    if let Some(password) = first_master {
        let _ = writeln!(out, "  master user: login ID \"master\", one-time password {}", password.reveal());
        let _ = writeln!(out, "  (shown once; change it with `inkan user passwd --login-id master`)");
    }
    if let Some(est) = bound.est {
        let _ = writeln!(
            out,
            "  EST for machines (RFC 7030):         {}/.well-known/est/",
            with_port(public_url.as_str(), est.port())
        );
    }
    let est = bound.est.map(|a| format!(" est={a}")).unwrap_or_default();
    let _ = writeln!(out, "{READY} public={} login={} http={}{est}", bound.public, bound.login, bound.http);
    let _ = out.flush();
}

fn with_port(url: &str, port: u16) -> String {
    match url.rsplit_once(':') {
        Some((head, _)) => format!("{head}:{port}"),
        None => url.to_owned(),
    }
}

/// Waits (up to a minute) for the signer to answer.
fn wait_for_signer(client: &SignerClient) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut told = false;
    loop {
        match client.ca_info() {
            Ok(_) => return Ok(()),
            Err(ca::remote::RemoteError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                if !told {
                    eprintln!("waiting for the signer at {} ...", client.describe());
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => anyhow::bail!("the signer at {}: {e}", client.describe()),
        }
    }
}
