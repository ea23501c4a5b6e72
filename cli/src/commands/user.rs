//! `inkan user add|list|unlock|passwd`, `inkan token create`.

use ca::layout::DataDir;
use enroll_server::accounts::Role;
use enroll_server::admin::{AccountView, AdminReply, AdminRequest, OtpView, SecretString};

use pki::encoding::rfc3339;

use super::{Needs, admin, unexpected};
use crate::args::{
    OtpImportArgs, TokenCreateArgs, UserAddArgs, UserCardArgs, UserContractArgs, UserIdArgs, UserListArgs,
    UserNamesArgs,
};
use crate::passphrase;

const NEEDS: Needs = Needs { accounts: true, issuer: false, snapshot: false };

fn one(reply: AdminReply) -> anyhow::Result<AccountView> {
    match reply {
        AdminReply::Account { account } => Ok(account),
        other => Err(unexpected(other)),
    }
}

pub fn add(args: &UserAddArgs) -> anyhow::Result<()> {
    let role = match args.role.as_str() {
        "master" => Role::Master,
        _ => Role::General,
    };
    enroll_server::accounts::check_login_id(&args.login_id)?;
    let password = passphrase::user_password(&args.login_id)?;
    let request = AdminRequest::UserAdd {
        login_id: args.login_id.clone(),
        role,
        master: args.master.clone(),
        password: SecretString::new(&password),
    };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    println!("Created {} user {:?} (contract master {:?}).", account.role.name(), account.login_id, account.master);
    Ok(())
}

pub fn list(args: &UserListArgs) -> anyhow::Result<()> {
    let accounts = match admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::UserList, NEEDS, None)? {
        AdminReply::Accounts { accounts } => accounts,
        other => return Err(unexpected(other)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&accounts)?);
        return Ok(());
    }
    println!(
        "{:<24}  {:<7}  {:<24}  {:<6}  {:<6}  {:<20}  ALLOWED NAMES",
        "LOGIN ID", "ROLE", "MASTER", "LOCKED", "ACTIVE", "CREATED"
    );
    for a in &accounts {
        let names: Vec<String> = a.allowed_names.iter().map(ToString::to_string).collect();
        println!(
            "{:<24}  {:<7}  {:<24}  {:<6}  {:<6}  {:<20}  {}",
            a.login_id,
            a.role.name(),
            a.master,
            if a.locked { "yes" } else { "no" },
            if a.active { "yes" } else { "no" },
            rfc3339(a.created_at),
            if names.is_empty() { "-".to_owned() } else { names.join(",") }
        );
    }
    eprintln!("{} account(s)", accounts.len());
    Ok(())
}

pub fn unlock(args: &UserIdArgs) -> anyhow::Result<()> {
    let request = AdminRequest::UserUnlock { login_id: args.login_id.clone() };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    println!("Unlocked {:?}.", account.login_id);
    Ok(())
}

pub fn passwd(args: &UserIdArgs) -> anyhow::Result<()> {
    let password = passphrase::user_password(&args.login_id)?;
    let request = AdminRequest::UserPasswd { login_id: args.login_id.clone(), password: SecretString::new(&password) };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    println!("Set the password of {:?} (and unlocked it).", account.login_id);
    Ok(())
}

pub fn names(args: &UserNamesArgs) -> anyhow::Result<()> {
    let names = args
        .allow
        .iter()
        .map(|name| name.parse::<pki::names::AllowedName>().map_err(|e| anyhow::anyhow!("--allow {name}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = AdminRequest::UserNames { login_id: args.login_id.clone(), names };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    if account.allowed_names.is_empty() {
        println!("{:?} has no allowed-names policy: client certificates only.", account.login_id);
    } else {
        let shown: Vec<String> = account.allowed_names.iter().map(ToString::to_string).collect();
        println!("{:?} may have certified: {}", account.login_id, shown.join(", "));
    }
    Ok(())
}

pub fn confirmation_password(args: &UserIdArgs) -> anyhow::Result<()> {
    let password = passphrase::confirmation_password(&args.login_id)?;
    let request =
        AdminRequest::UserConfirmation { login_id: args.login_id.clone(), password: SecretString::new(&password) };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    println!("Set the confirmation password of {:?}.", account.login_id);
    Ok(())
}

pub fn card(args: &UserCardArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if args.out.exists() {
        anyhow::bail!("{} exists: a card is written to a new file", args.out.display());
    }
    let pdf = match args.out.extension().and_then(|e| e.to_str()) {
        Some("pdf") => true,
        Some("svg") => false,
        _ => anyhow::bail!("--out {}: name the card .svg or .pdf", args.out.display()),
    };
    let request = AdminRequest::UserCard { login_id: args.login_id.clone() };
    let digits = match admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)? {
        AdminReply::Card { digits, .. } => digits,
        other => return Err(unexpected(other)),
    };
    let bytes: zeroize::Zeroizing<Vec<u8>> =
        zeroize::Zeroizing::new(digits.reveal().bytes().map(|b| b.wrapping_sub(b'0')).collect());
    let card =
        enroll_server::card::Card::from_bytes(&bytes).ok_or_else(|| anyhow::anyhow!("the service sent no card"))?;
    let document =
        zeroize::Zeroizing::new(if pdf { card.pdf(&args.login_id) } else { card.svg(&args.login_id).into_bytes() });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    file.write_all(&document)?;
    file.sync_all()?;
    println!(
        "Wrote the customer card of {:?} to {} (print it, hand it over, then delete the file).",
        args.login_id,
        args.out.display()
    );
    Ok(())
}

fn tokens(reply: AdminReply) -> anyhow::Result<Vec<OtpView>> {
    match reply {
        AdminReply::OtpTokens { tokens } => Ok(tokens),
        other => Err(unexpected(other)),
    }
}

pub fn unlock_otp(args: &UserIdArgs) -> anyhow::Result<()> {
    let request = AdminRequest::OtpUnlock { login_id: args.login_id.clone() };
    tokens(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    println!("Lifted the one-time-password stop of {:?}.", args.login_id);
    Ok(())
}

pub fn otp_revoke(args: &UserIdArgs) -> anyhow::Result<()> {
    let request = AdminRequest::OtpRevoke { login_id: args.login_id.clone() };
    let revoked = tokens(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    let from = revoked.first().and_then(|t| t.reissue_from).map(rfc3339).unwrap_or_default();
    println!("Revoked the token of {:?}; a new one can be issued from {from}.", args.login_id);
    Ok(())
}

pub fn otp_import(args: &OtpImportArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Read;
    let mut xml = String::new();
    std::fs::File::open(&args.pskc)
        .and_then(|f| f.take(enroll_server::pskc::MAX_FILE as u64 + 1).read_to_string(&mut xml))
        .with_context(|| format!("reading {} (a PSKC file is UTF-8 XML)", args.pskc.display()))?;
    let psk = match &args.key_file {
        None => None,
        Some(path) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            );
            let bytes = pki::encoding::unhex(text.trim())
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| anyhow::anyhow!("{}: the pre-shared key is 32 hex digits (AES-128)", path.display()))?;
            Some(zeroize::Zeroizing::new(bytes))
        }
    };
    let seeds = enroll_server::pskc::parse(&xml, psk.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was imported", args.pskc.display()))?;
    let wire = seeds.iter().map(enroll_server::admin::SeedWire::of).collect();
    match admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::OtpImport { seeds: wire }, NEEDS, None)? {
        AdminReply::Imported { count } => {
            let serials: Vec<&str> = seeds.iter().map(|s| s.serial.as_str()).collect();
            println!("Imported {count} hardware token(s): {}.", serials.join(", "));
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

pub fn contract(args: &UserContractArgs) -> anyhow::Result<()> {
    let request = AdminRequest::UserContract {
        login_id: args.login_id.clone(),
        personal: args.personal,
        otp_required: args.require_otp,
        otp_step_secs: args.otp_step.as_deref().and_then(|s| s.parse().ok()),
    };
    let account = one(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    let kind = if args.personal { "personal" } else { "business" };
    let otp = if args.require_otp { "requires" } else { "does not require" };
    println!("The contract of {:?} is {kind} and {otp} one-time passwords.", account.login_id);
    Ok(())
}

pub fn otp_list(args: &UserListArgs) -> anyhow::Result<()> {
    let tokens = tokens(admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::OtpList, NEEDS, None)?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(());
    }
    println!("{:<24}  {:<8}  {:<7}  {:<8}  ISSUED", "LOGIN ID", "STATE", "STOPPED", "FAILURES");
    for t in &tokens {
        let state = serde_json::to_value(t.state)?.as_str().unwrap_or("").to_owned();
        println!(
            "{:<24}  {:<8}  {:<7}  {:<8}  {}",
            t.login_id,
            state,
            if t.stopped { "yes" } else { "no" },
            t.failures,
            rfc3339(t.created_at)
        );
    }
    eprintln!("{} token(s)", tokens.len());
    Ok(())
}

pub fn token_create(args: &TokenCreateArgs) -> anyhow::Result<()> {
    let ttl = super::registry::parse_period(&args.ttl)?;
    let request = AdminRequest::TokenCreate { login_id: args.account.clone(), ttl_secs: ttl.whole_seconds() };
    match admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)? {
        AdminReply::Token { login_id, secret, expires_at } => {
            eprintln!(
                "One-time EST enrollment token for {login_id:?}, until {} (shown once; only its hash is kept):",
                rfc3339(expires_at)
            );
            println!("{}", secret.reveal());
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
