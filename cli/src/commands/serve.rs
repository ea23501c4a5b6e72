//! `inkan serve`: the enrollment service with the CA in this process.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ca::layout::{self, DataDir};
use enroll_server::accounts::{Password, Role};
use enroll_server::state::AppState;
use enroll_server::tokens::{RateLimiter, Sessions, Tickets};

use super::{open_accounts, open_store};
use crate::args::{DataDirArg, InitArgs, ServeArgs};
use crate::backend::{InProcessIssuer, ensure_server_certificate};
use crate::config::Config;
use crate::passphrase::{self, Key};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INKAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
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
    let registry = Arc::new(open_store(&dir)?);
    let accounts = open_accounts(&dir, &config)?;
    let passphrase = passphrase::resolve(Key::Ca, ca_pass_file.as_deref(), false)?;
    let issuer = InProcessIssuer::open(&dir, &config, registry.clone(), &passphrase)?;
    let tls = ensure_server_certificate(&dir, &config, issuer.authority())?;

    let mut first_master = None;
    if args.dev && accounts.list()?.is_empty() {
        let password = Password::generate();
        accounts.create("master", Role::Master, None, &password, time::OffsetDateTime::now_utc())?;
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
        issuer: Arc::new(issuer),
        tickets: Tickets::default(),
        sessions: Sessions::default(),
        public_url: public_url.clone(),
        login_url: login_url.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let root = dir.root_cert();
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
        let _ = writeln!(out, "  trust the root CA in your browser:   {}", root.display());
        if let Some(password) = &first_master {
            let _ = writeln!(out, "  master user: login ID \"master\", one-time password {}", password.reveal());
            let _ = writeln!(out, "  (shown once; change it with `inkan user passwd --login-id master`)");
        }
        let _ = out.flush();
    }))?;
    eprintln!("inkan stopped");
    Ok(())
}

fn with_port(url: &str, port: u16) -> String {
    match url.rsplit_once(':') {
        Some((head, _)) => format!("{head}:{port}"),
        None => url.to_owned(),
    }
}
