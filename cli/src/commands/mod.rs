//! One module per command; [`run`] dispatches.
//!
//! Operator commands that touch the stores go through [`admin`]: over the running service's
//! admin socket when `serve` holds the stores (sled allows one process), else against the
//! stores opened here. Both paths run `enroll_server::admin::execute`.

mod audit;
mod backup;
mod crl;
mod est;
mod fixture;
mod init;
mod issue;
mod oauth;
mod registry;
mod serve;
mod signer;
mod status;
mod storage;
mod user;
mod worker;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ca::SledStore;
use ca::layout::DataDir;
use ca::service::{CaService, SignerLink, local_authority};
use enroll_server::accounts::Accounts;
use enroll_server::admin::{self, AdminContext, AdminReply, AdminRequest};
use enroll_server::ports::NoEvents;

use crate::args::{
    AuditCommand, CaCommand, CaPassphraseArg, Command, EstCommand, OauthClientCommand, OauthCommand, OtpCommand,
    ResourceCommand, RootCommand, StorageCommand, TokenCommand, UserCommand,
};
use crate::config::Config;
use crate::passphrase::{self, Key};
pub(crate) use crate::storage::in_use;

/// Runs one command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init::run(&args),
        Command::Issue(args) => issue::run(&args),
        Command::Revoke(args) => registry::revoke(&args),
        Command::List(args) => registry::list(&args),
        Command::Show(args) => registry::show(&args),
        Command::Count(args) => registry::count(&args),
        Command::Crl(args) => crl::ca_crl(&args),
        Command::Root(RootCommand::SignCrl(args)) => crl::root_crl(&args),
        Command::Root(RootCommand::CrossSign(args)) => crl::cross_sign(&args),
        Command::Ca(CaCommand::Status(args)) => status::run(&args),
        Command::Ca(CaCommand::Rollover(args)) => status::rollover(&args),
        Command::Serve(args) => serve::run(&args),
        Command::User(UserCommand::Add(args)) => user::add(&args),
        Command::User(UserCommand::List(args)) => user::list(&args),
        Command::User(UserCommand::Unlock(args)) => user::unlock(&args),
        Command::User(UserCommand::Passwd(args)) => user::passwd(&args),
        Command::Signer(args) => signer::run(&args),
        Command::Worker(args) => worker::run(&args),
        Command::Audit(AuditCommand::Verify(args)) => audit::verify(&args),
        Command::Audit(AuditCommand::Tail(args)) => audit::tail(&args),
        Command::Est(EstCommand::Enroll(args)) => est::enroll(&args),
        Command::Est(EstCommand::Renew(args)) => est::renew(&args),
        Command::Token(TokenCommand::Create(args)) => user::token_create(&args),
        Command::User(UserCommand::Names(args)) => user::names(&args),
        Command::User(UserCommand::UnlockOtp(args)) => user::unlock_otp(&args),
        Command::User(UserCommand::ConfirmationPassword(args)) => user::confirmation_password(&args),
        Command::User(UserCommand::Card(args)) => user::card(&args),
        Command::Oauth(OauthCommand::Client(OauthClientCommand::Add(args))) => oauth::client_add(&args),
        Command::Oauth(OauthCommand::Client(OauthClientCommand::List(args))) => oauth::client_list(&args),
        Command::Oauth(OauthCommand::Client(OauthClientCommand::Remove(args))) => oauth::client_remove(&args),
        Command::Resource(ResourceCommand::Add(args)) => oauth::resource_add(&args),
        Command::Resource(ResourceCommand::List(args)) => oauth::resource_list(&args),
        Command::Resource(ResourceCommand::Remove(args)) => oauth::resource_remove(&args),
        Command::Otp(OtpCommand::List(args)) => user::otp_list(&args),
        Command::Otp(OtpCommand::Revoke(args)) => user::otp_revoke(&args),
        Command::Otp(OtpCommand::Import(args)) => user::otp_import(&args),
        Command::User(UserCommand::Contract(args)) => user::contract(&args),
        Command::Fixture(args) => fixture::run(&args),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Storage(StorageCommand::Migrate(args)) => storage::migrate(&args),
    }
}

/// An error that ends the process with its own exit code, and what to say.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// What a command needs opened when it runs without the service.
#[derive(Clone, Copy, Debug, Default)]
struct Needs {
    accounts: bool,
    /// The CA key (asks for its passphrase).
    issuer: bool,
    /// The registry and the web stores, to export them for a backup.
    snapshot: bool,
}

/// Opens the registry, explaining the one failure operators will meet: another process has it.
fn open_store(dir: &DataDir) -> anyhow::Result<SledStore> {
    require_ca(dir)?;
    open_registry(dir, ca::sled_store::Durability::Flush)
}

/// Opens the registry without requiring the CA's files (a service with a separate signer
/// runs on a data directory without them).
fn open_registry(dir: &DataDir, durability: ca::sled_store::Durability) -> anyhow::Result<SledStore> {
    SledStore::open_with(&dir.db(), durability).map_err(|e| in_use(e.to_string(), &dir.db()))
}

fn require_ca(dir: &DataDir) -> anyhow::Result<()> {
    if !dir.ca_cert().exists() {
        anyhow::bail!("{} has no CA: run `inkan init --data-dir {}` first", dir.path().display(), dir.path().display());
    }
    Ok(())
}

/// The OTP tokens of `stores`, sealed with the data directory's OTP key (made on first use).
fn open_otp(
    dir: &DataDir,
    stores: &enroll_server::stores::WebStores,
    settings: &enroll_server::settings::ServerSettings,
) -> anyhow::Result<enroll_server::otp::Otp> {
    let path = dir.otp_key();
    if let Some(parent) = path.parent() {
        ca::layout::create_private_dir(parent)?;
    }
    let key = enroll_server::otp::OtpKey::load_or_create(&path)?;
    let mail = settings.mail.as_ref().map(|_| enroll_server::mail::MailQueue::new(stores.outbox.clone()));
    Ok(enroll_server::otp::Otp::new(stores.otp.clone(), key, settings.otp.clone()).with_mail(mail))
}

/// Runs an operator request: against the database directly when the stores are in
/// PostgreSQL (any number of processes may open it); else through the running service if
/// there is one (sled allows one process), else against the stores opened here.
fn admin(
    dir: &DataDir,
    request: AdminRequest,
    needs: Needs,
    pass: Option<&CaPassphraseArg>,
) -> anyhow::Result<AdminReply> {
    let socket = dir.admin_socket();
    let config = Config::load(&dir.config())?;
    let through_service = if config.storage.is_postgres() {
        None
    } else {
        admin::call(&socket, &request).with_context(|| format!("talking to {}", socket.display()))?
    };
    let reply = match through_service {
        Some(reply) => reply,
        None => locally(dir, &config, request, needs, pass)?,
    };
    match reply {
        AdminReply::Error { message } => Err(anyhow::anyhow!(message)),
        reply => Ok(reply),
    }
}

/// Runs an operator request against the stores opened here.
fn locally(
    dir: &DataDir,
    config: &Config,
    request: AdminRequest,
    needs: Needs,
    pass: Option<&CaPassphraseArg>,
) -> anyhow::Result<AdminReply> {
    // A service's data directory may hold no CA (its signer runs elsewhere): only issuing
    // here needs the CA's files.
    if needs.issuer {
        require_ca(dir)?;
    }
    let stores = crate::storage::open(dir, config, ca::sled_store::Durability::Flush)?;
    let registry = stores.registry();
    let (accounts, otp, oauth) = if needs.accounts {
        let web = stores.web()?;
        let settings = config.server_settings(dir);
        let oauth = enroll_server::oauth::OAuth::new(web.oauth.clone(), config.oauth.settings()?);
        let accounts = Accounts::new(web.accounts.clone(), settings.accounts.clone())?;
        (Some(accounts), Some(open_otp(dir, &web, &settings)?), Some(oauth))
    } else {
        (None, None, None)
    };
    let audit = Arc::new(ca::audit::AuditLog::new(dir.path(), "cli"));
    let issuer = if needs.issuer {
        let file = pass.and_then(|p| p.ca_passphrase_file.as_deref());
        let passphrase = passphrase::resolve_for(Key::Ca, &dir.ca_key(), file)?;
        let authority = local_authority(dir, config.profile_settings(), &passphrase, ca::sled_store::Durability::Flush)
            .map_err(|e| in_use(e.to_string(), &dir.ledger()))?;
        let link = SignerLink::Local(Box::new(authority));
        Some(
            CaService::new(link, registry.clone(), dir, config.crl_validity(), audit.clone())?
                .with_crl_shards(config.ca.crl_shards),
        )
    } else {
        None
    };
    let sink = AuditSink(audit);
    let snapshotter = match (&stores, needs.snapshot) {
        (crate::storage::Stores::Sled { registry, web }, true) => {
            let (registry, web) = (registry.clone(), web.clone());
            let dir = dir.clone();
            Some(move || backup::snapshot_stores(&dir, &registry, &web))
        }
        _ => None,
    };
    let ctx = AdminContext {
        accounts: accounts.as_ref(),
        otp: otp.as_ref(),
        oauth: oauth.as_ref(),
        registry: Some(registry.as_ref()),
        issuer: issuer.as_ref().map(|i| i as &dyn pki::request::Issuer),
        audit: &sink,
        events: &NoEvents,
        snapshot: snapshotter.as_ref().map(|f| f as &admin::Snapshotter),
    };
    Ok(admin::execute(&ctx, request))
}

/// Writes `contents` to `path` atomically, or to standard output for `None`.
fn write_output(path: Option<&Path>, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match path {
        Some(path) => ca::layout::replace(path, contents, 0o644).with_context(|| format!("writing {}", path.display())),
        None => std::io::stdout().write_all(contents).context("writing to standard output"),
    }
}

fn unexpected(reply: AdminReply) -> anyhow::Error {
    anyhow::anyhow!("unexpected reply from the service: {reply:?}")
}

/// The audit trail as the service's `Audit` trait: a write failure is logged, not fatal.
pub struct AuditSink(pub Arc<ca::audit::AuditLog>);

impl enroll_server::ports::Audit for AuditSink {
    fn record(&self, event: &str, details: serde_json::Value) {
        if let Err(e) = self.0.append(event, details) {
            tracing::error!(error = %e, event, "audit log write failed");
            eprintln!("warning: audit log: {e}");
        }
    }
}

/// The CA certificates of the data directory (DER) a signature may be checked with: every
/// generation of the issuing CA.
fn ca_certificates(dir: &DataDir) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(ca::generations::certificates(dir)?.into_iter().map(|(_, _, der)| der).collect())
}
