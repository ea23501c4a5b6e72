//! `inkan serve`: the enrollment service with the CA in this process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use ca::layout::{self, DataDir};
use enroll_server::accounts::{Password, Role};
use enroll_server::state::AppState;
use enroll_server::tokens::{RateLimiter, Sessions, Tickets};

use ca::Passphrase;
use ca::audit::AuditLog;
use ca::remote::SignerClient;
use ca::sled_store::Durability;

use super::{AuditSink, open_accounts, open_registry, require_ca};
use crate::args::{DataDirArg, InitArgs, ServeArgs};
use crate::backend::{CaService, Signer, ensure_ocsp_responder, ensure_server_certificate, signer_socket};
use crate::config::Config;
use crate::passphrase::{self, Key};

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_env("INKAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // sled logs one trace line from a crossbeam-epoch deferred closure, which can run while a
    // worker thread's thread-locals are being destroyed; the fmt layer's thread-local buffer is
    // gone by then and the process aborts. Its trace lines are page-cache internals, so they
    // are never let through, whatever INKAN_LOG says.
    let no_sled_trace = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && (meta.target() == "sled" || meta.target().starts_with("sled::")))
    });
    let _ = tracing_subscriber::registry()
        .with(no_sled_trace)
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
        .try_init();
}

/// First run of `--dev`: a CA with generated passphrases kept beside it (0600).
fn dev_setup(dir: &DataDir) -> anyhow::Result<PathBuf> {
    let secrets = dir.path().join("dev-secrets");
    if dir.ca_cert().exists() {
        return Ok(secrets);
    }
    eprintln!("First --dev run: creating a CA in {} (passphrases kept in {})", dir.path().display(), secrets.display());
    layout::create_private_dir(&secrets)?;
    let mut passes = Vec::new();
    for name in ["root.pass", "ca.pass"] {
        let pass = Password::generate().reveal().to_owned() + &Password::generate().reveal()[..8];
        let path = secrets.join(name);
        if !path.exists() {
            layout::write_new(&path, format!("{pass}\n").as_bytes(), 0o600)?;
        }
        passes.push(passphrase::resolve(Key::Ca, Some(&path), false)?);
    }
    let args = InitArgs {
        data_dir: DataDirArg { data_dir: dir.path().to_owned() },
        key_type: "ecdsa-p256".into(),
        org: "inkan dev".into(),
        base_url: "http://127.0.0.1:8080".into(),
        server_names: vec!["localhost".into(), "127.0.0.1".into()],
        root_days: 7305,
        ca_days: 3652,
        root_passphrase_file: None,
        ca_passphrase: crate::args::CaPassphraseArg { ca_passphrase_file: None },
    };
    super::init::create(dir, &args, ca::CaKeyType::EcdsaP256, &passes[0], &passes[1])?;
    Ok(secrets)
}

/// The signer `serve` started: restarted if it dies, stopped when `serve` stops.
struct ChildSigner {
    stopping: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

fn spawn_signer(dir: &DataDir, socket: &Path, passphrase: &Passphrase, no_fsync: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the inkan executable")?;
    // The child gets no environment of ours, and the passphrase only through the pipe.
    let mut child = Command::new(exe)
        .args(["signer", "--passphrase-stdin", "--data-dir"])
        .arg(dir.path())
        .arg("--socket")
        .arg(socket)
        .args(no_fsync.then_some("--danger-no-fsync"))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the signer")?;
    let mut stdin = child.stdin.take().context("signer stdin")?;
    stdin.write_all(passphrase.expose_for_pipe())?;
    stdin.write_all(b"\n")?;
    stdin.flush()?;
    // Keep our end open: the signer exits when it closes.
    child.stdin = Some(stdin);
    let stdout = child.stdout.take().context("signer stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if line.starts_with("signer ready") => Ok(child),
        _ => {
            let _ = child.kill();
            let status = child.wait().ok();
            anyhow::bail!("the signer did not start ({status:?}); see the messages above")
        }
    }
}

impl ChildSigner {
    fn start(dir: &DataDir, socket: &Path, passphrase: Passphrase, no_fsync: bool) -> anyhow::Result<Self> {
        // A signer orphaned by a killed service exits when its stdin closes, which may take a
        // moment: try a few times before giving up.
        let mut attempt = 0;
        let first = loop {
            match spawn_signer(dir, socket, &passphrase, no_fsync) {
                Ok(child) => break child,
                Err(e) if attempt < 10 => {
                    attempt += 1;
                    tracing::warn!(error = %format!("{e:#}"), "starting the signer; trying again");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(Some(first)));
        let supervisor = {
            let (stopping, child, dir, socket) = (stopping.clone(), child.clone(), dir.clone(), socket.to_owned());
            std::thread::spawn(move || {
                let mut backoff = Duration::from_millis(500);
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let exited = {
                        let mut guard = child.lock().unwrap_or_else(PoisonError::into_inner);
                        match guard.as_mut().map(Child::try_wait) {
                            Some(Ok(Some(status))) => Some(status),
                            _ => None,
                        }
                    };
                    let Some(status) = exited else { continue };
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::error!(%status, "the signer exited; enrollment answers 503 until it is back");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    match spawn_signer(&dir, &socket, &passphrase, no_fsync) {
                        Ok(new) => {
                            tracing::info!("the signer is back");
                            backoff = Duration::from_millis(500);
                            *child.lock().unwrap_or_else(PoisonError::into_inner) = Some(new);
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "restarting the signer failed"),
                    }
                }
            })
        };
        Ok(Self { stopping, child, supervisor: Some(supervisor) })
    }

    /// The signer's process id (for tests and operators).
    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Child::id)
    }
}

impl Drop for ChildSigner {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        if let Some(mut child) = self.child.lock().unwrap_or_else(PoisonError::into_inner).take() {
            drop(child.stdin.take());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (up to a minute) for a separately started signer to answer.
fn wait_for_signer(client: &SignerClient) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut told = false;
    loop {
        match client.ca_info() {
            Ok(_) => return Ok(()),
            Err(ca::remote::RemoteError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                if !told {
                    eprintln!("waiting for the signer at {} ...", client.path().display());
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => anyhow::bail!("the signer at {}: {e}", client.path().display()),
        }
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let dir = DataDir::new(args.data_dir.clone().unwrap_or_else(|| PathBuf::from("inkan-data")));
    let ca_pass_file =
        if args.dev { Some(dev_setup(&dir)?.join("ca.pass")) } else { args.ca_passphrase.ca_passphrase_file.clone() };
    let mut config = Config::load(&dir.config())?;
    if let Some(addr) = args.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = args.login_listen {
        config.server.login_listen = addr;
    }
    if let Some(addr) = args.http_listen {
        config.server.http_listen = addr;
    }
    let durability = if args.danger_no_fsync {
        tracing::warn!("--danger-no-fsync: writes are acknowledged before they are on disk; a crash loses them");
        Durability::Unsafe
    } else {
        Durability::Flush
    };
    let registry = Arc::new(open_registry(&dir, durability)?);
    let accounts = open_accounts(&dir, &config)?;
    let audit = AuditLog::new(dir.path(), "service");
    let audit = Arc::new(if args.danger_no_fsync { audit.without_sync() } else { audit });

    // The CA key lives in a signer process: started here (the passphrase goes to it over a
    // pipe) or started separately and reached at --signer-socket.
    let (socket, child) = match &args.signer_socket {
        Some(socket) => (socket.clone(), None),
        None => {
            if std::env::var_os("INKAN_CA_PASSPHRASE").is_some() {
                anyhow::bail!(
                    "unset INKAN_CA_PASSPHRASE for `serve`: the service hands the passphrase to its signer over a \
                     pipe and keeps it out of its environment; use --ca-passphrase-file FILE or the prompt"
                );
            }
            require_ca(&dir)?;
            let passphrase = passphrase::resolve(Key::Ca, ca_pass_file.as_deref(), false)?;
            // Check it here, where the operator sees the answer, before the child tries.
            ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &passphrase)?;
            let socket = signer_socket(&dir);
            let child = ChildSigner::start(&dir, &socket, passphrase, args.danger_no_fsync)?;
            (socket, Some(child))
        }
    };
    let client = SignerClient::new(&socket);
    wait_for_signer(&client)?;
    let ca_service = CaService::new(Signer::Remote(client), registry.clone(), &dir, &config, audit.clone())?;
    let tls = ensure_server_certificate(&dir, &config, &ca_service)?;
    let ocsp = ensure_ocsp_responder(&dir, &ca_service)?;

    let mut first_master = None;
    if args.dev && accounts.list()?.is_empty() {
        let password = Password::generate();
        accounts.create("master", Role::Master, None, &password, time::OffsetDateTime::now_utc())?;
        audit.append(
            "user.created",
            serde_json::json!({ "by": "serve --dev", "login_id": "master", "role": "master" }),
        )?;
        first_master = Some(password);
    }

    let settings = config.server_settings(&dir);
    let public_url = config.url_of(settings.listen);
    let login_url = config.url_of(settings.login_listen);
    let state = Arc::new(AppState {
        limiter: RateLimiter::new(settings.rate_limit_per_minute),
        settings,
        accounts,
        registry,
        issuer: Arc::new(ca_service),
        audit: Arc::new(AuditSink(audit.clone())),
        tickets: Tickets::default(),
        sessions: Sessions::default(),
        public_url: public_url.clone(),
        login_url: login_url.clone(),
        ocsp: Some(Arc::new(ocsp)),
        crl_wake: tokio::sync::Notify::new(),
        metrics: enroll_server::publish::Metrics::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let root = dir.root_cert();
    let signer_pid = child.as_ref().and_then(ChildSigner::pid);
    audit.append("service.start", serde_json::json!({ "pid": std::process::id(), "signer_pid": signer_pid }))?;
    runtime.block_on(enroll_server::run(state, &tls, enroll_server::shutdown_signal(), move |bound| {
        // Port 0 in the settings means "any": print the ports actually bound.
        let public_url = with_port(&public_url, bound.public.port());
        let login_url = with_port(&login_url, bound.login.port());
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
        if let Some(pid) = signer_pid {
            let _ = writeln!(out, "  signer: process {pid} on {}", socket.display());
        }
        if let Some(password) = &first_master {
            let _ = writeln!(out, "  master user: login ID \"master\", one-time password {}", password.reveal());
            let _ = writeln!(out, "  (shown once; change it with `inkan user passwd --login-id master`)");
        }
        let _ = out.flush();
    }))?;
    drop(child);
    audit.append("service.stop", serde_json::json!({ "pid": std::process::id() }))?;
    eprintln!("inkan stopped");
    Ok(())
}

fn with_port(url: &str, port: u16) -> String {
    match url.rsplit_once(':') {
        Some((head, _)) => format!("{head}:{port}"),
        None => url.to_owned(),
    }
}
