//! Command-line flags, as clap parses them. `main` turns them into settings and calls the
//! libraries; nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// inkan: a private certificate authority with browser enrollment.
#[derive(Debug, Parser)]
#[command(name = "inkan", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The data directory, shared by every command.
#[derive(Debug, Args, Clone)]
pub struct DataDirArg {
    /// The data directory (keys, certificates, registry, inkan.toml).
    #[arg(long, env = "INKAN_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Where the root key's passphrase comes from when INKAN_ROOT_PASSPHRASE is not set.
#[derive(Debug, Args, Clone)]
pub struct RootPassphraseArg {
    /// Read the root key's passphrase from FILE instead of INKAN_ROOT_PASSPHRASE or a prompt.
    #[arg(long, value_name = "FILE")]
    pub root_passphrase_file: Option<PathBuf>,
}

/// Where the issuing CA's passphrase comes from when INKAN_CA_PASSPHRASE is not set.
#[derive(Debug, Args, Clone)]
pub struct CaPassphraseArg {
    /// Read the issuing CA key's passphrase from FILE (first line) instead of
    /// INKAN_CA_PASSPHRASE or a prompt.
    #[arg(long, value_name = "FILE")]
    pub ca_passphrase_file: Option<PathBuf>,
}

/// inkan's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the offline root CA and the issuing CA it signs, and a commented inkan.toml.
    ///
    /// Passphrases come from INKAN_ROOT_PASSPHRASE / INKAN_CA_PASSPHRASE, from
    /// --root-passphrase-file / --ca-passphrase-file, or from a prompt; never from an argument.
    /// Refuses to overwrite an existing CA.
    Init(InitArgs),
    /// Issue a certificate for an account from a CSR (PEM or DER).
    Issue(IssueArgs),
    /// Revoke a certificate. The next `inkan crl` lists it.
    Revoke(RevokeArgs),
    /// List certificates in the registry.
    List(ListArgs),
    /// Show one certificate.
    Show(ShowArgs),
    /// Count certificates by status (valid, expired, revoked, superseded, pending).
    ///
    /// Read from counters the registry keeps, not by reading every certificate: quick at
    /// millions (on PostgreSQL, one grouped pass over the table).
    Count(CountArgs),
    /// Sign the issuing CA's CRL (DER, to DATA_DIR/crl/ca.crl and --out).
    Crl(CrlArgs),
    /// Ceremonies with the offline root key.
    #[command(subcommand)]
    Root(RootCommand),
    /// The CA's state: certificates, and what relying parties need that must be signed again.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run the enrollment service: public HTTPS, certificate-login HTTPS and plain HTTP.
    ///
    /// Stops gracefully on SIGINT or SIGTERM. With --dev, a first run in ./inkan-data creates
    /// the CA with generated passphrase files and a master user whose password is printed.
    Serve(ServeArgs),
    /// Manage accounts (contracts' master users and their general users).
    #[command(subcommand)]
    User(UserCommand),
    /// Run the signer: the process that holds the issuing CA key, on a Unix socket (0600).
    ///
    /// `serve` starts one as its child by default; run it yourself (and `serve
    /// --signer-socket`) to keep the key in a process, or under a user, of its own.
    Signer(SignerArgs),
    /// The audit trail (DATA_DIR/audit/audit.log): verify its hash chain, or read it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// An EST client (RFC 7030) for machines: enroll once, then renew from cron or a systemd
    /// timer.
    ///
    /// Exit codes: 0 done (or, for renew, not due yet); 1 refused or failed (the reason is
    /// printed); 75 the CA stayed unavailable for the whole --wait (try again later).
    #[command(subcommand)]
    Est(EstCommand),
    /// One-time-password tokens (TOTP): list them, revoke one.
    #[command(subcommand)]
    Otp(OtpCommand),
    /// API consent (OAuth 2.0): register the third-party services users may connect.
    #[command(subcommand)]
    Oauth(OauthCommand),
    /// The contracts' resources (accounts) that per-resource scopes name, each with the inquiry
    /// PIN (照会用暗証番号) a user gives once before allowing a service to read it.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// One-time enrollment tokens: a machine enrolls over EST with its login ID and a token
    /// instead of the account's password.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a set of test certificates for TLS client-auth tests: clients in every state a
    /// relying party must tell apart, servers, the chain, CRLs, OCSP answers and a manifest.
    ///
    /// Client states: valid, revoked (on the CRL; its OCSP answer says revoked), expired,
    /// not-yet-valid, wrong-eku (serverAuth only), foreign-ca (issued by another CA). Keys are
    /// PEM (PKCS#8, 0600) and PKCS#12 (password "inkan" unless --p12-password-file).
    /// manifest.json lists every file with the state and what `openssl verify` says about it.
    ///
    /// Example: inkan fixture --ephemeral --out fixtures --client alice --client mallory:revoked
    /// --client old:expired --server localhost,127.0.0.1
    Fixture(FixtureArgs),
    /// Back up the data directory into one archive (tar): the stores, the ledger, the audit
    /// trail, the configuration, certificates and CRLs, with a manifest (SHA-256 per file).
    ///
    /// Works while `serve` runs (the service exports its stores through its admin socket).
    /// Private keys only with --include-keys, as they are (encrypted files; a key in a PKCS#11
    /// token stays in the token). Never passphrases.
    Backup(BackupArgs),
    /// Restore a backup into a new or empty data directory, after checking every file against
    /// the manifest and the audit trail's chain; a damaged or partial archive changes nothing.
    Restore(RestoreArgs),
    /// Where the stores live: move a data directory's stores into PostgreSQL.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// The web worker `serve` starts: it binds the listeners, gives up what it does not need
    /// and serves. Not for operators: run `inkan serve`.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `inkan token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for an account: printed once (only its hash is kept), good for one EST
    /// simpleenroll (`--user ID` with the token as the password) until it expires.
    Create(TokenCreateArgs),
}

/// `inkan fixture`.
#[derive(Debug, Args)]
pub struct FixtureArgs {
    /// The directory to write (made; refused when it exists and is not empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Make a throwaway root and issuing CA for the set (their keys are not kept). Without it,
    /// the data directory's CA issues through the running service and records every
    /// certificate in its registry (expired and not-yet-valid need --ephemeral: a real CA
    /// does not sign outside its own clock).
    #[arg(long)]
    pub ephemeral: bool,
    /// The data directory, when not --ephemeral.
    #[arg(long, env = "INKAN_DATA_DIR", value_name = "DIR", required_unless_present = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// A client certificate: its name (letters, digits, '.', '_', '-'), and its state after a
    /// colon (valid when none). Repeat for more.
    #[arg(long, value_name = "NAME[:STATE]")]
    pub client: Vec<String>,
    /// A server certificate for these names (DNS names or IP addresses, comma-separated; the
    /// first names the files). Repeat for more.
    #[arg(long, value_name = "NAME[,NAME...]")]
    pub server: Vec<String>,
    /// Validity of the good certificates, the CRLs and the OCSP answers, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
    /// Protect the PKCS#12 files with the password in FILE (first line) instead of "inkan".
    #[arg(long, value_name = "FILE")]
    pub p12_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan otp`.
#[derive(Debug, Subcommand)]
pub enum OtpCommand {
    /// Every account's token: state, stop, failures.
    List(UserListArgs),
    /// Revoke an account's token (トークンの失効); a new one can be issued after the waiting
    /// time of [otp] in inkan.toml.
    Revoke(UserIdArgs),
    /// Import hardware-token seeds from a PSKC file (RFC 6030, TOTP): users then register a
    /// token by its serial number and current code. All or nothing: a MAC that does not verify,
    /// a serial imported before or anything not PSKC imports none.
    Import(OtpImportArgs),
}

/// `inkan oauth`.
#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Registered clients.
    #[command(subcommand)]
    Client(OauthClientCommand),
}

/// `inkan oauth client`.
#[derive(Debug, Subcommand)]
pub enum OauthClientCommand {
    /// Register a client (a confidential one). It authenticates with mutual TLS
    /// (tls_client_auth, RFC 8705): in the TLS handshake it presents a certificate inkan issued
    /// whose subject is --tls-subject; private_key_jwt is not supported.
    ///
    /// Example: inkan oauth client add --name 家計簿アプリ --company "Kakeibo K.K."
    /// --redirect-uri https://kakeibo.example/callback --scope certificates:read
    /// --scope balance:read --tls-subject "O=Example Bank, CN=kakeibo-app"
    Add(OauthClientAddArgs),
    /// Every registered client.
    List(UserListArgs),
    /// Remove a client: its grants end and their tokens stop working at once.
    Remove(OauthClientRemoveArgs),
}

/// `inkan oauth client add`.
#[derive(Debug, Args)]
pub struct OauthClientAddArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The client ID (letters, digits, '-', '_', '.'); made up when not given.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The service's name, shown to users on the consent page.
    #[arg(long)]
    pub name: String,
    /// The company that runs it, shown to users.
    #[arg(long)]
    pub company: String,
    /// A redirect URI (https; http only on a loopback address), matched exactly. Repeat for
    /// more.
    #[arg(long = "redirect-uri", value_name = "URI", required = true)]
    pub redirect_uris: Vec<String>,
    /// A scope it may ask for (configured in [oauth.scopes]). Repeat for more.
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    /// How long its grants last, in days (default: [oauth] grant_days, 90).
    #[arg(long, value_name = "DAYS")]
    pub grant_days: Option<u32>,
    /// Let its users log in with login ID + password instead of a certificate.
    #[arg(long)]
    pub allow_password_login: bool,
    /// The subject of the client's certificate, as `inkan show` prints it ("O=Org, CN=app").
    #[arg(long, value_name = "DN")]
    pub tls_subject: String,
    /// Print the client as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `inkan oauth client remove`.
#[derive(Debug, Args)]
pub struct OauthClientRemoveArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The client ID.
    pub client_id: String,
}

/// `inkan resource`.
#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Add a resource to a contract; its inquiry PIN (4 to 8 digits) comes from
    /// INKAN_RESOURCE_PIN or a prompt.
    Add(ResourceAddArgs),
    /// Every resource, with who registered its PIN.
    List(UserListArgs),
    /// Remove a resource.
    Remove(ResourceRemoveArgs),
}

/// `inkan resource add`.
#[derive(Debug, Args)]
pub struct ResourceAddArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The contract: its master user's login ID.
    #[arg(long, value_name = "LOGIN_ID")]
    pub contract: String,
    /// What users see (普通預金 1234567).
    #[arg(long)]
    pub label: String,
    /// The resource ID; made up when not given.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Print the resource as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `inkan resource remove`.
#[derive(Debug, Args)]
pub struct ResourceRemoveArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The resource ID.
    pub id: String,
}

/// `inkan otp import`.
#[derive(Debug, Args)]
pub struct OtpImportArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The PSKC file.
    #[arg(long, value_name = "FILE")]
    pub pskc: PathBuf,
    /// The pre-shared key that encrypts the file's secrets: 32 hex digits in FILE.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `inkan token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The account the token enrolls.
    #[arg(long, value_name = "ID")]
    pub account: String,
    /// How long it works (at most 30d).
    #[arg(long, value_name = "PERIOD", default_value = "24h")]
    pub ttl: String,
}

/// `inkan est`.
#[derive(Debug, Subcommand)]
pub enum EstCommand {
    /// Make a key here, have it certified with a login ID and password (HTTP Basic), and write
    /// the key (0600) and the certificate with its issuing CA.
    Enroll(EstEnrollArgs),
    /// Renew a certificate with itself (simplereenroll) when it is within --renew-within of its
    /// end; else say how many days are left and exit 0. The files are replaced only once the
    /// new pair is in hand.
    Renew(EstRenewArgs),
}

/// Where the EST server is and how to trust it.
#[derive(Debug, Args)]
pub struct EstServerArgs {
    /// The EST server: https://HOST:PORT (its /.well-known/est/ is added), optionally with a
    /// label: https://HOST:PORT/.well-known/est/LABEL.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The CA certificate(s) (PEM) to trust the server by: the root of its CA.
    #[arg(long, value_name = "FILE")]
    pub ca_file: PathBuf,
    /// How long to keep asking while the CA answers "try later" (202).
    #[arg(long, value_name = "PERIOD", default_value = "5m")]
    pub wait: String,
}

/// `inkan est enroll`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("secret").required(true).args(["password_file", "token_file"])))]
pub struct EstEnrollArgs {
    #[command(flatten)]
    pub server: EstServerArgs,
    /// The login ID the certificate is for.
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// A file holding the account's password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// A file holding a one-time enrollment token (`inkan token create`), instead of the
    /// password.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where to write the new private key (PKCS#8 PEM, mode 0600); must not exist.
    #[arg(long, value_name = "FILE")]
    pub key_out: PathBuf,
    /// A DNS name or IP address to ask for (the server URL's label must issue under the server
    /// or client-server profile, and the account's allowed names must cover it). Repeat for
    /// more.
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Where to write the certificate, followed by its issuing CA (PEM); must not exist.
    #[arg(long, value_name = "FILE")]
    pub cert_out: PathBuf,
    /// The key type.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
}

/// `inkan est renew`.
#[derive(Debug, Args)]
pub struct EstRenewArgs {
    #[command(flatten)]
    pub server: EstServerArgs,
    /// The current certificate (PEM, as `enroll` wrote it); replaced by the new one.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key (PEM); kept, or replaced with --new-key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Renew only when the certificate ends within this period (30d, 12h, 2w...).
    #[arg(long, value_name = "PERIOD", default_value = "30d")]
    pub renew_within: String,
    /// Make a new key for the new certificate instead of keeping the current one.
    #[arg(long)]
    pub new_key: bool,
    /// The key type of a new key.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
}

/// Key types `inkan est` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 3072 bits.
    #[value(name = "rsa-3072")]
    Rsa3072,
}

/// `inkan worker` (started by `serve`).
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The signer's socket.
    #[arg(long, value_name = "PATH", required_unless_present = "signer_address")]
    pub signer_socket: Option<PathBuf>,
    #[command(flatten)]
    pub remote_signer: RemoteSignerArgs,
    #[command(flatten)]
    pub listeners: ListenArgs,
    /// DANGER, for benchmarks only: see `serve --danger-no-fsync`.
    #[arg(long)]
    pub danger_no_fsync: bool,
    /// Create the master user "master" with a printed password when there are no accounts.
    #[arg(long)]
    pub dev: bool,
}

/// `inkan signer`.
#[derive(Debug, Args)]
pub struct SignerArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The socket to listen on [default: DATA_DIR/signer.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also listen on TCP (HOST:PORT) with mutual TLS, for service instances on other machines
    /// (`inkan serve --signer-address`): only certificates of the service-instance profile of
    /// this CA are accepted.
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub listen: Option<String>,
    /// The signer's TLS certificate for --listen (PEM, server profile of this CA, then the
    /// issuing CA certificate).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, unencrypted; keep it 0600).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Read the passphrase from the first line of standard input, and exit when standard input
    /// closes (how `serve` runs its child signer).
    #[arg(long)]
    pub passphrase_stdin: bool,
    /// DANGER, for benchmarks only: acknowledge writes before they are on disk. A crash then
    /// loses acknowledged issuances.
    #[arg(long)]
    pub danger_no_fsync: bool,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exits non-zero naming the first bad line.
    Verify(AuditArgs),
    /// Print the last lines (default 20); with -f, keep printing new ones.
    Tail(AuditTailArgs),
}

/// `inkan audit verify`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Check the trail against this signed checkpoint (a copy of /audit/checkpoint kept
    /// elsewhere) instead of the latest one in the signer's ledger.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

/// `inkan audit tail`.
#[derive(Debug, Args)]
pub struct AuditTailArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// How many lines.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Follow: print lines as they are appended, until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// The listeners' addresses, instead of inkan.toml's.
#[derive(Debug, Args, Clone, Copy)]
pub struct ListenArgs {
    /// Public HTTPS address (pages, JSON API) [default from inkan.toml: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Certificate-login HTTPS address [default from inkan.toml: 127.0.0.1:8444].
    #[arg(long, value_name = "ADDR")]
    pub login_listen: Option<std::net::SocketAddr>,
    /// Plain HTTP address for CA certificates and CRLs [default from inkan.toml: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<std::net::SocketAddr>,
    /// EST HTTPS address [default from inkan.toml [est]: 127.0.0.1:8445].
    #[arg(long, value_name = "ADDR")]
    pub est_listen: Option<std::net::SocketAddr>,
}

impl ListenArgs {
    /// The same flags, for a child process.
    pub fn to_args(self) -> Vec<String> {
        let flags = [
            ("--listen", self.listen),
            ("--login-listen", self.login_listen),
            ("--http-listen", self.http_listen),
            ("--est-listen", self.est_listen),
        ];
        flags.into_iter().filter_map(|(flag, addr)| Some([flag.to_owned(), addr?.to_string()])).flatten().collect()
    }

    /// Applies the addresses given to `config`.
    pub fn apply(self, config: &mut crate::config::Config) {
        let server = &mut config.server;
        server.listen = self.listen.unwrap_or(server.listen);
        server.login_listen = self.login_listen.unwrap_or(server.login_listen);
        server.http_listen = self.http_listen.unwrap_or(server.http_listen);
        if let Some(est) = self.est_listen {
            config.est.listen = est.to_string();
        }
    }
}

/// `inkan serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data directory (default with --dev: ./inkan-data).
    #[arg(long, env = "INKAN_DATA_DIR", value_name = "DIR", required_unless_present = "dev")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub listeners: ListenArgs,
    /// Use a signer started separately (`inkan signer`) at this socket, instead of starting
    /// one; the data directory then needs no CA key at all.
    #[arg(long, value_name = "PATH", conflicts_with = "signer_address")]
    pub signer_socket: Option<PathBuf>,
    #[command(flatten)]
    pub remote_signer: RemoteSignerArgs,
    /// DANGER, for benchmarks only: acknowledge writes (registry, ledger, audit) before they
    /// are on disk. A crash then loses acknowledged issuances.
    #[arg(long)]
    pub danger_no_fsync: bool,
    /// Development mode: set up ./inkan-data on first run (generated passphrases kept in
    /// inkan-data/dev-secrets, a master user "master" with a printed password).
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan user ...`. Passwords come from INKAN_USER_PASSWORD or a prompt.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account: a contract's master user, or a general user of a master.
    Add(UserAddArgs),
    /// List accounts.
    List(UserListArgs),
    /// Unlock an account locked after wrong passwords (a locked master needs the operator).
    Unlock(UserIdArgs),
    /// Set an account's password (from INKAN_USER_PASSWORD or a prompt); also unlocks it.
    Passwd(UserIdArgs),
    /// Lift an account's one-time-password stop (ワンタイムパスワード利用停止解除): the only way
    /// for a master; a master does it for its general users on the web.
    UnlockOtp(UserIdArgs),
    /// Set a master's confirmation password (確認用パスワード), asked on the web before it
    /// unlocks or revokes its users' tokens (from INKAN_CONFIRMATION_PASSWORD or a prompt).
    ConfirmationPassword(UserIdArgs),
    /// Set a master's contract: personal (its users may choose not to give a one-time password
    /// at login) or business (always asked, the default), and whether it requires OTP
    /// (--require-otp; without it, not).
    Contract(UserContractArgs),
    /// Give a master a new customer card (お客様カード): a grid of random digits, columns ア–ク
    /// and rows 1–5, written once as SVG to print and hand over; the web then asks two of its
    /// cells instead of the confirmation password.
    Card(UserCardArgs),
    /// Set the names an account's machines may have certified over EST (labels of the server
    /// and client-server profiles): DNS names, `*.D` for any name under D, IP addresses and
    /// networks (10.0.0.0/8). Replaces the policy; --clear removes it.
    Names(UserNamesArgs),
}

/// `inkan user contract`.
#[derive(Debug, Args)]
pub struct UserContractArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The master's login ID.
    #[arg(long, value_name = "ID")]
    pub login_id: String,
    /// A personal contract.
    #[arg(long, conflicts_with = "business", required_unless_present = "business")]
    pub personal: bool,
    /// A business contract.
    #[arg(long)]
    pub business: bool,
    /// The contract requires OTP: users without a token can only set one up after logging in.
    #[arg(long)]
    pub require_otp: bool,
    /// The contract's OTP time step for tokens issued from now on: 30 (the standard apps) or
    /// 60 (the bank apps); default: [otp] step_secs.
    #[arg(long, value_name = "SECONDS", value_parser = ["30", "60"])]
    pub otp_step: Option<String>,
}

/// `inkan user card`.
#[derive(Debug, Args)]
pub struct UserCardArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The master's login ID.
    #[arg(long, value_name = "ID")]
    pub login_id: String,
    /// Where to write the card, `.svg` or `.pdf` (mode 0600); must not exist.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `inkan user names`.
#[derive(Debug, Args)]
pub struct UserNamesArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The login ID.
    #[arg(long, value_name = "ID")]
    pub login_id: String,
    /// An allowed name, wildcard or network. Repeat for more.
    #[arg(long, value_name = "NAME", required_unless_present = "clear")]
    pub allow: Vec<String>,
    /// Remove the policy: the account gets client certificates only.
    #[arg(long, conflicts_with = "allow")]
    pub clear: bool,
}

/// `inkan user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The login ID: 3 to 64 letters, digits, '.', '_', '-' or '@'.
    #[arg(long, value_name = "ID")]
    pub login_id: String,
    /// master (a contract's administrator) or general (one of its users).
    #[arg(long, value_parser = ["master", "general"])]
    pub role: String,
    /// The contract's master login ID (general users only).
    #[arg(long, value_name = "ID")]
    pub master: Option<String>,
}

/// `inkan user list`.
#[derive(Debug, Args)]
pub struct UserListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `inkan user unlock` and `inkan user passwd`.
#[derive(Debug, Args)]
pub struct UserIdArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The login ID.
    #[arg(long, value_name = "ID")]
    pub login_id: String,
}

/// `inkan init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Key type of the root and issuing CA keys.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"])]
    pub key_type: String,
    /// Organization name (O=) for the CA subjects and every issued certificate.
    #[arg(long, default_value = "inkan", value_name = "NAME")]
    pub org: String,
    /// Base URL of the plain-HTTP listener that will serve CRLs and CA certificates; written
    /// into certificates.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub base_url: String,
    /// A name (DNS or IP) for the enrollment service's TLS certificate; repeat for several.
    #[arg(long = "server-name", value_name = "NAME", default_values = ["localhost", "127.0.0.1"])]
    pub server_names: Vec<String>,
    /// Validity of the root CA certificate, in days.
    #[arg(long, default_value_t = 7305, value_name = "DAYS")]
    pub root_days: u32,
    /// Validity of the issuing CA certificate, in days.
    #[arg(long, default_value_t = 3652, value_name = "DAYS")]
    pub ca_days: u32,
    /// Days until the first root CRL and root OCSP answer expire (sign new ones with `inkan
    /// root sign-crl` before then).
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub root_crl_days: u32,
    #[command(flatten)]
    pub root_passphrase: RootPassphraseArg,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
    /// Make both CA keys inside a PKCS#11 token (non-extractable) with this module (a shared
    /// library, e.g. /usr/lib/softhsm/libsofthsm2.so). The token's user PIN then comes from
    /// --ca-passphrase-file, INKAN_CA_PASSPHRASE or a prompt, here and wherever a CA key is used.
    #[arg(long, value_name = "PATH", requires = "token_label")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token to make the keys in (with --pkcs11-module).
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub token_label: Option<String>,
}

/// `inkan issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The certificate signing request (PEM or DER); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
    /// The account the certificate is for; it becomes the subject's common name.
    #[arg(long, value_name = "ID")]
    pub account: String,
    /// Certificate profile. service-instance: a service instance's client certificate for a
    /// signer listening on TCP (`inkan signer --listen`), issued only here while the service
    /// is stopped.
    #[arg(long, default_value = "client", value_parser = ["client", "server", "service-instance"])]
    pub profile: String,
    /// A DNS name or IP address for the server profile (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Validity in days (default from inkan.toml).
    #[arg(long, value_name = "N")]
    pub days: Option<u32>,
    /// Write the certificate (PEM) to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Append the issuing CA certificate after the certificate.
    #[arg(long)]
    pub chain: bool,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The serial, hex as `openssl x509 -serial` or `inkan list` print it.
    pub serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, privilegeWithdrawn.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

/// `inkan list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only valid certificates that expire within this period: 30d, 12h, 2w or a number of days.
    #[arg(long, value_name = "PERIOD")]
    pub expiring: Option<String>,
    /// Only revoked (and superseded) certificates.
    #[arg(long)]
    pub revoked: bool,
    /// Only the certificates of this account.
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// At most N certificates (with --expiring, the N expiring first), read without going
    /// through the whole registry.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `inkan count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Also count the valid certificates that expire within this period: 30d, 12h, 2w or a
    /// number of days.
    #[arg(long, value_name = "PERIOD")]
    pub expiring: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `inkan show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The serial.
    pub serial: String,
    /// Print only the certificate, PEM.
    #[arg(long)]
    pub pem: bool,
}

/// `inkan crl`.
#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Also write the CRL to FILE (DER, unless --pem).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write PEM instead of DER to --out.
    #[arg(long)]
    pub pem: bool,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan root ...`.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Sign the root's CRL and its OCSP answer about the issuing CA: a ceremony that needs the
    /// root passphrase. Both go to DATA_DIR/crl/, where the service publishes them.
    SignCrl(RootSignCrlArgs),
    /// Cross-certify a new root with this (old) root's key: the root rollover ceremony. Clients
    /// that trust only the old root then verify certificates under the new one through the
    /// cross-certificate (publish it beside the new chain).
    CrossSign(RootCrossSignArgs),
}

/// `inkan root cross-sign`.
#[derive(Debug, Args)]
pub struct RootCrossSignArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The new root certificate (PEM or DER), e.g. the root/root.crt of a data directory that
    /// `inkan init` made for the new hierarchy.
    #[arg(long, value_name = "FILE")]
    pub new_root: PathBuf,
    /// Where to write the cross-certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Its validity in days (capped at the end of both roots).
    #[arg(long, default_value_t = 1826, value_name = "DAYS")]
    pub days: u32,
    #[command(flatten)]
    pub root_passphrase: RootPassphraseArg,
}

/// `inkan ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// The root and issuing CA certificates, the CRLs and the root's OCSP answer: how long each
    /// is valid, with a warning for what expires within 30 days (exit status 2 then).
    Status(CaStatusArgs),
    /// Make the next issuing CA (a ceremony with the root key): a new key, certified by the
    /// root, that issues from --at on. The one before keeps signing CRLs and OCSP answers for
    /// its certificates. Run it with the service stopped, or restart it after: the signer loads
    /// keys only as it starts.
    Rollover(CaRolloverArgs),
}

/// `inkan ca rollover`.
#[derive(Debug, Args)]
pub struct CaRolloverArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// From when the new CA issues (RFC 3339, e.g. 2027-04-01T00:00:00+09:00); default now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Validity of the new issuing CA, in days (capped at the root's).
    #[arg(long, default_value_t = 3652, value_name = "DAYS")]
    pub days: u32,
    /// Days until the root CRL and the root's OCSP answers it signs again expire.
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub root_crl_days: u32,
    #[command(flatten)]
    pub root_passphrase: RootPassphraseArg,
    #[command(flatten)]
    pub ca_passphrase: CaPassphraseArg,
}

/// `inkan ca status`.
#[derive(Debug, Args)]
pub struct CaStatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `inkan root sign-crl`.
#[derive(Debug, Args)]
pub struct RootSignCrlArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Also write the CRL (DER) to FILE; it is kept as DATA_DIR/crl/root.crl, and the OCSP
    /// answer about the issuing CA as DATA_DIR/crl/ca-ocsp.der.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Days until the CRL's and the answer's nextUpdate: sign the next ones before then
    /// (`inkan ca status` warns 30 days ahead).
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub days: u32,
    #[command(flatten)]
    pub root_passphrase: RootPassphraseArg,
}

/// `inkan backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The archive to write (a new file, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also the private key files (the CA keys encrypted as they are; the service's TLS, OCSP
    /// responder and OTP sealing keys): keep such an archive as safe as the keys.
    #[arg(long)]
    pub include_keys: bool,
}

/// `inkan restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The archive `inkan backup` wrote.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
}

/// `inkan storage ...`.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Copy every store of the data directory (the registry with its history, accounts, OTP
    /// tokens, notices, mail, OAuth) from sled into an empty PostgreSQL database, then check
    /// the counts and a SHA-256 per store on both sides.
    ///
    /// The service must be stopped. The database password comes from INKAN_DATABASE_PASSWORD
    /// or --password-file, never the command line. Afterwards set `[storage] backend =
    /// "postgres"` and `url` in inkan.toml (the command prints the lines).
    Migrate(MigrateArgs),
}

/// `inkan storage migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The empty target database: postgres://USER@HOST[:PORT]/DATABASE (no password in it).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A file holding the database password, when INKAN_DATABASE_PASSWORD is unset.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// A signer on another machine, reached over TCP with mutual TLS (`inkan signer --listen`).
#[derive(Debug, Args, Clone, Default)]
pub struct RemoteSignerArgs {
    /// The signer's TCP address (HOST:PORT), instead of starting one or a Unix socket.
    #[arg(long, value_name = "ADDR", requires_all = ["signer_client_cert", "signer_client_key"])]
    pub signer_address: Option<String>,
    /// The name the signer's certificate must carry [default: the host of --signer-address].
    #[arg(long, value_name = "NAME", requires = "signer_address")]
    pub signer_name: Option<String>,
    /// This instance's certificate for the signer (PEM, service-instance profile:
    /// `inkan issue --profile service-instance`).
    #[arg(long, value_name = "FILE", requires = "signer_address")]
    pub signer_client_cert: Option<PathBuf>,
    /// The private key of --signer-client-cert (PEM, unencrypted; keep it 0600).
    #[arg(long, value_name = "FILE", requires = "signer_address")]
    pub signer_client_key: Option<PathBuf>,
}

impl RemoteSignerArgs {
    /// The same, as command-line arguments (paths and an address: no secret).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: Option<std::ffi::OsString>| {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value);
            }
        };
        push("--signer-address", self.signer_address.clone().map(Into::into));
        push("--signer-name", self.signer_name.clone().map(Into::into));
        push("--signer-client-cert", self.signer_client_cert.clone().map(Into::into));
        push("--signer-client-key", self.signer_client_key.clone().map(Into::into));
        args
    }

    /// The name the signer's certificate must carry.
    pub fn name(&self) -> Option<String> {
        let address = self.signer_address.as_deref()?;
        Some(self.signer_name.clone().unwrap_or_else(|| match address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => address.to_owned(),
        }))
    }
}
