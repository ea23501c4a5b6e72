//! `inkan init`: the root and issuing CA ceremony.

use anyhow::Context;
use ca::ceremony::{self, InitOptions};
use ca::layout::DataDir;
use pki::certificate::Summary;

use crate::args::InitArgs;
use crate::config::{self, Urls};
use crate::passphrase::{self, Key};

pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir.data_dir);
    let key_type: ca::CaKeyType = args.key_type.parse().map_err(anyhow::Error::msg)?;
    config::check_base_url(&args.base_url)?;
    if !(1..=3660).contains(&args.root_crl_days) {
        anyhow::bail!("--root-crl-days must be between 1 and 3660");
    }
    for name in &args.server_names {
        name.parse::<pki::San>().map_err(|e| anyhow::anyhow!("--server-name: {e}"))?;
    }
    for path in dir.ca_files().iter().chain([&dir.config()]) {
        if path.exists() {
            anyhow::bail!("{} already exists; refusing to overwrite an existing CA", path.display());
        }
    }
    if let Some(label) = &args.token_label {
        if key_type == ca::CaKeyType::Ed25519 {
            anyhow::bail!("--key-type ed25519 is not made in a token; use ecdsa-p256, ecdsa-p384 or rsa-3072");
        }
        // One token, one user PIN for both keys.
        let pin = passphrase::resolve_pin(Key::Ca, args.ca_passphrase.ca_passphrase_file.as_deref(), label)?;
        return create(&dir, args, key_type, &pin, &pin);
    }
    let root_pass = passphrase::resolve(Key::Root, args.root_passphrase.root_passphrase_file.as_deref(), true)?;
    let ca_pass = passphrase::resolve(Key::Ca, args.ca_passphrase.ca_passphrase_file.as_deref(), true)?;
    create(&dir, args, key_type, &root_pass, &ca_pass)
}

/// The ceremony, then the service's TLS certificate (issued by the new CA and recorded).
pub fn create(
    dir: &DataDir,
    args: &InitArgs,
    key_type: ca::CaKeyType,
    root_pass: &ca::Passphrase,
    ca_pass: &ca::Passphrase,
) -> anyhow::Result<()> {
    let token = match (&args.pkcs11_module, &args.token_label) {
        (Some(module), Some(label)) => {
            Some(ca::ceremony::TokenOptions { module: module.clone(), token_label: label.clone() })
        }
        _ => None,
    };
    if token.is_none() && root_pass == ca_pass {
        anyhow::bail!("use different passphrases for the root and the issuing CA keys");
    }
    let urls = Urls::new(&args.base_url);
    let options = InitOptions {
        key_type,
        organization: args.org.clone(),
        root_days: args.root_days,
        ca_days: args.ca_days,
        root_crl_url: Some(urls.root_crl),
        root_cert_url: Some(urls.root_cert),
        ca_ocsp_url: Some(urls.ocsp),
        config_toml: config::default_toml(&args.org, &args.base_url, &args.server_names),
        token,
    };
    match &args.token_label {
        Some(label) => eprintln!("Creating the root and issuing CA keys ({}) in token {label:?} ...", args.key_type),
        None => eprintln!("Creating the root and issuing CA keys ({}) ...", args.key_type),
    }
    let report =
        ceremony::init(dir, &options, root_pass, ca_pass, time::OffsetDateTime::now_utc()).context("inkan init")?;
    let config = config::Config::load(&dir.config())?;
    let registry: std::sync::Arc<dyn ca::Registry> = std::sync::Arc::new(super::open_store(dir)?);
    let audit = std::sync::Arc::new(ca::audit::AuditLog::new(dir.path(), "cli"));
    audit.append(
        "ca.initialised",
        serde_json::json!({ "organization": args.org, "key_type": args.key_type, "root": Summary::from_der(&report.root_der)?.sha256_fingerprint, "issuing": Summary::from_der(&report.ca_der)?.sha256_fingerprint }),
    )?;
    let authority =
        ca::service::local_authority(dir, config.profile_settings(), ca_pass, ca::sled_store::Durability::Flush)?;
    let link = ca::service::SignerLink::Local(Box::new(authority));
    let ca_service = ca::service::CaService::new(link, registry, dir, config.crl_validity(), audit)?
        .with_crl_shards(config.ca.crl_shards);
    ca_service.server_credential(&config.server.names)?;
    // What relying parties check the chain with from the start: the root's CRL and its OCSP
    // answer about the issuing CA.
    super::crl::publish_root(dir, root_pass, args.root_crl_days)?;

    let root = Summary::from_der(&report.root_der)?;
    let ca = Summary::from_der(&report.ca_der)?;
    println!("Created a CA in {}", dir.path().display());
    match &args.token_label {
        Some(label) => {
            println!("  root CA     {}  (its key is in token {label:?}; root/root.key names it)", root.subject)
        }
        None => println!("  root CA     {}  (offline: keep root/root.key and its passphrase apart)", root.subject),
    }
    println!("              SHA-256 {}", root.sha256_fingerprint);
    println!("              valid until {}", pki::encoding::rfc3339(root.not_after));
    println!("  issuing CA  {}", ca.subject);
    println!("              SHA-256 {}", ca.sha256_fingerprint);
    println!("              valid until {}", pki::encoding::rfc3339(ca.not_after));
    println!(
        "  files       {}, {}, {}, {}",
        dir.root_cert().display(),
        dir.root_key().display(),
        dir.ca_cert().display(),
        dir.ca_key().display()
    );
    println!("  service TLS {} for {}", dir.server_cert().display(), args.server_names.join(", "));
    println!(
        "  root CRL    {} and {}, valid {} days",
        dir.crl_dir().join(pki::published::ROOT_CRL).display(),
        dir.ca_ocsp().display(),
        args.root_crl_days
    );
    println!("  config      {}", dir.config().display());
    println!("Next: inkan issue --data-dir {} --csr FILE --account ID, or inkan serve", dir.path().display());
    Ok(())
}
