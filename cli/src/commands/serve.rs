//! `inkan serve`: a small supervisor, in the manner of OpenSSH's privilege separation. It parses
//! no outside input and opens no network socket. It reads the CA passphrase (kept only in
//! locked, zeroized memory of this non-dumpable process), starts `inkan signer` with the
//! passphrase on a pipe, starts the web worker (`inkan worker`, which never gets the
//! passphrase), restarts either with backoff when it dies, and on SIGINT/SIGTERM stops the web
//! worker (requests in flight finish) and then the signer. See docs/ARCHITECTURE.md.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use ca::Passphrase;
use ca::audit::AuditLog;
use ca::layout::{self, DataDir};
use enroll_server::accounts::Password;

use super::require_ca;
use super::worker::READY;
use crate::args::{DataDirArg, InitArgs, ListenArgs, ServeArgs};
use crate::config::Config;
use crate::passphrase::{self, Key};
use crate::process::{Stop, Supervised};
use crate::sandbox;

/// First run of `--dev`: a CA with generated passphrases kept beside it (0600).
fn dev_setup(dir: &DataDir) -> anyhow::Result<PathBuf> {
    let secrets = dir.dev_secrets();
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
        root_crl_days: 365,
        root_passphrase: crate::args::RootPassphraseArg { root_passphrase_file: None },
        ca_passphrase: crate::args::CaPassphraseArg { ca_passphrase_file: None },
        pkcs11_module: None,
        token_label: None,
    };
    super::init::create(dir, &args, ca::CaKeyType::EcdsaP256, &passes[0], &passes[1])?;
    Ok(secrets)
}

/// Holds `DATA_DIR/serve.lock`: one `serve` per data directory.
pub(crate) fn lock_data_dir(dir: &DataDir) -> anyhow::Result<std::fs::File> {
    layout::create_private_dir(dir.path())?;
    let path = dir.serve_lock();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        anyhow::bail!("{} is in use by another inkan process (`inkan serve` runs on it)", dir.path().display());
    }
    Ok(file)
}

/// What a PKCS#11 module may need from the environment, the only variables the signer child
/// inherits: SoftHSM's configuration file, and the variables named (comma-separated) in
/// INKAN_PKCS11_ENV for other modules.
fn module_environment() -> Vec<(String, std::ffi::OsString)> {
    let named = std::env::var("INKAN_PKCS11_ENV").unwrap_or_default();
    let names = std::iter::once("SOFTHSM2_CONF").chain(named.split(',').map(str::trim).filter(|n| !n.is_empty()));
    let mut passed = Vec::new();
    for name in names {
        if name.starts_with("INKAN_") {
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            passed.push((name.to_owned(), value));
        }
    }
    passed
}

/// The signer child: the passphrase on its standard input, then a pipe it watches; no
/// environment of ours but what a PKCS#11 module reads ([`module_environment`]).
fn spawn_signer(dir: &DataDir, socket: &Path, passphrase: &Passphrase, no_fsync: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the inkan executable")?;
    let mut child = Command::new(exe)
        .args(["signer", "--passphrase-stdin", "--data-dir"])
        .arg(dir.path())
        .arg("--socket")
        .arg(socket)
        .args(no_fsync.then_some("--danger-no-fsync"))
        .env_clear()
        .envs(module_environment())
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
    wait_ready(child, stdout, "signer", |line| line.starts_with("signer ready"), false).map(|(child, _)| child)
}

/// What the web worker is told: everything but the passphrase.
struct WorkerSpec {
    dir: DataDir,
    /// The signer: its socket, or the arguments that reach it over TCP.
    signer: Result<PathBuf, crate::args::RemoteSignerArgs>,
    /// The listeners' addresses: after the first start, the ones it bound (a port 0 asked for
    /// became a real one, which a restarted worker must take again).
    listeners: Mutex<ListenArgs>,
    args: Vec<String>,
}

fn spawn_worker(spec: &WorkerSpec) -> anyhow::Result<Child> {
    let listeners = *spec.listeners.lock().unwrap_or_else(PoisonError::into_inner);
    let exe = std::env::current_exe().context("finding the inkan executable")?;
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--data-dir")
        .arg(spec.dir.path())
        .args(match &spec.signer {
            Ok(socket) => vec!["--signer-socket".into(), socket.clone().into_os_string()],
            Err(remote) => remote.to_args(),
        })
        .args(listeners.to_args())
        .args(&spec.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(level) = std::env::var_os("INKAN_LOG") {
        command.env("INKAN_LOG", level);
    }
    // The one secret the web worker needs itself, when the operator gave it this way.
    if let Some(password) = std::env::var_os(crate::storage::PASSWORD_VARIABLE) {
        command.env(crate::storage::PASSWORD_VARIABLE, password);
    }
    let mut child = command.spawn().context("starting the web worker")?;
    let stdout = child.stdout.take().context("web worker stdout")?;
    let (child, ready) = wait_ready(child, stdout, "web worker", |line| line.starts_with(READY), true)?;
    let bound = |name: &str| -> Option<std::net::SocketAddr> {
        ready.split_whitespace().find_map(|field| field.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    *spec.listeners.lock().unwrap_or_else(PoisonError::into_inner) = ListenArgs {
        listen: bound("public"),
        login_listen: bound("login"),
        http_listen: bound("http"),
        est_listen: bound("est"),
    };
    Ok(child)
}

/// Reads the child's standard output until `ready` accepts a line (up to a minute), passing the
/// other lines on to ours when `relay`; keeps relaying afterwards. Returns the child and that
/// line.
fn wait_ready(
    mut child: Child,
    stdout: std::process::ChildStdout,
    what: &str,
    ready: impl Fn(&str) -> bool + Send + 'static,
    relay: bool,
) -> anyhow::Result<(Child, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if ready(&line) {
                let _ = tx.send(line);
            } else if relay {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => Ok((child, line)),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            anyhow::bail!("the {what} did not start ({status:?}); see the messages above")
        }
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    crate::logging::init();
    sandbox::no_core_dumps();
    // Signals first: a SIGTERM during the start is then answered like any other.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let mut signals = {
        let _context = runtime.enter();
        crate::process::StopSignals::register(false).context("installing the signal handlers")?
    };
    let dir = DataDir::new(args.data_dir.clone().unwrap_or_else(|| PathBuf::from("inkan-data")));
    let _lock = lock_data_dir(&dir)?;
    let ca_pass_file =
        if args.dev { Some(dev_setup(&dir)?.join("ca.pass")) } else { args.ca_passphrase.ca_passphrase_file.clone() };
    // Checked here, where the operator sees the answer, before any child starts.
    Config::load(&dir.config())?;
    if args.danger_no_fsync {
        tracing::warn!("--danger-no-fsync: writes are acknowledged before they are on disk; a crash loses them");
    }

    // The CA key lives in a signer process: started here (the passphrase goes to it over a
    // pipe) or started separately and reached at --signer-socket.
    let mut passphrase_lock = None;
    let (socket, signer) = match (&args.signer_socket, &args.remote_signer.signer_address) {
        (Some(socket), _) => (Ok(socket.clone()), None),
        (None, Some(_)) => (Err(args.remote_signer.clone()), None),
        (None, None) => {
            if std::env::var_os("INKAN_CA_PASSPHRASE").is_some() {
                anyhow::bail!(
                    "unset INKAN_CA_PASSPHRASE for `serve`: the service hands the passphrase to its signer over a \
                     pipe and keeps it out of its environment; use --ca-passphrase-file FILE or the prompt"
                );
            }
            require_ca(&dir)?;
            let passphrase = Arc::new(passphrase::resolve_for(Key::Ca, &dir.ca_key(), ca_pass_file.as_deref())?);
            passphrase_lock = sandbox::lock_in_memory(passphrase.expose_for_pipe());
            // Checked here, where the operator sees the answer, before the child tries.
            ca::ceremony::load_signer(&dir.ca_key(), &dir.ca_cert(), &passphrase)?;
            let socket = dir.signer_socket();
            let (spawn_dir, spawn_socket, no_fsync) = (dir.clone(), socket.clone(), args.danger_no_fsync);
            let signer = Supervised::start(
                "signer",
                Box::new(move || spawn_signer(&spawn_dir, &spawn_socket, &passphrase, no_fsync)),
            )?;
            (Ok(socket), Some(signer))
        }
    };

    let mut worker_args = Vec::new();
    if args.danger_no_fsync {
        worker_args.push("--danger-no-fsync".into());
    }
    if args.dev {
        worker_args.push("--dev".into());
    }
    let spec = WorkerSpec {
        dir: dir.clone(),
        signer: socket.clone(),
        listeners: Mutex::new(args.listeners),
        args: worker_args,
    };
    let worker = match Supervised::start("web worker", Box::new(move || spawn_worker(&spec))) {
        Ok(worker) => worker,
        Err(e) => {
            if let Some(signer) = signer {
                signer.stop(Stop::CloseStdin, Duration::from_secs(10));
            }
            return Err(e);
        }
    };
    let signer_pid = signer.as_ref().and_then(Supervised::pid);
    let worker_pid = worker.pid();
    {
        let mut out = std::io::stdout().lock();
        if let (Some(pid), Ok(socket)) = (signer_pid, &socket) {
            let _ = writeln!(out, "  signer: process {pid} on {}", socket.display());
        }
        if let Some(pid) = worker_pid {
            let _ = writeln!(out, "  web worker: process {pid}");
        }
        let _ = out.flush();
    }
    let audit = AuditLog::new(dir.path(), "service");
    let audit = if args.danger_no_fsync { audit.without_sync() } else { audit };
    audit.append(
        "service.start",
        serde_json::json!({ "pid": std::process::id(), "signer_pid": signer_pid, "worker_pid": worker_pid }),
    )?;

    runtime.block_on(signals.wait());
    eprintln!("inkan: stopping the web worker (requests in flight finish), then the signer");
    worker.stop(Stop::Terminate, Duration::from_secs(20));
    // The web worker may not remove its socket (it cannot touch the data directory itself).
    let _ = std::fs::remove_file(dir.admin_socket());
    if let Some(signer) = signer {
        signer.stop(Stop::CloseStdin, Duration::from_secs(10));
    }
    drop(passphrase_lock);
    audit.append("service.stop", serde_json::json!({ "pid": std::process::id() }))?;
    eprintln!("inkan stopped");
    Ok(())
}
