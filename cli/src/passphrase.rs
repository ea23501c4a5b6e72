//! Where passphrases come from: a file named by a flag, an environment variable, or a prompt
//! on the terminal. Never from an argument, so they stay out of `ps` and shell history. For a
//! key in a PKCS#11 token the same sources give the token's user PIN.

use std::path::Path;

use anyhow::{Context, bail};
use ca::Passphrase;

/// Which key a passphrase unlocks.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    Root,
    Ca,
}

impl Key {
    fn env(self) -> &'static str {
        match self {
            Self::Root => "INKAN_ROOT_PASSPHRASE",
            Self::Ca => "INKAN_CA_PASSPHRASE",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Root => "--root-passphrase-file",
            Self::Ca => "--ca-passphrase-file",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Root => "root CA key",
            Self::Ca => "issuing CA key",
        }
    }
}

/// The first line of a passphrase file, read without leaving copies behind: one buffer of
/// fixed size (zeroized when dropped) and one string of exactly the line's length.
fn first_line(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    const MAX: usize = 4096;
    let mut buffer = zeroize::Zeroizing::new(Vec::with_capacity(MAX + 1));
    std::fs::File::open(path)?.take(MAX as u64 + 1).read_to_end(&mut buffer)?;
    let line = buffer.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX - 1 {
        bail!("the first line is longer than {} bytes", MAX - 1);
    }
    let text = std::str::from_utf8(line).context("the passphrase is not valid UTF-8")?;
    let mut out = String::with_capacity(text.len());
    out.push_str(text);
    Ok(out)
}

/// Resolves the passphrase for `key`. With `confirm` (a new key), a prompt asks twice.
pub fn resolve(key: Key, file: Option<&Path>, confirm: bool) -> anyhow::Result<Passphrase> {
    resolve_as(key, file, confirm, None)
}

/// Resolves what unlocks the existing key file `key_file`: its passphrase, or the user PIN of
/// the token it names (from the same file, variable or prompt).
pub fn resolve_for(key: Key, key_file: &Path, file: Option<&Path>) -> anyhow::Result<Passphrase> {
    let token = ca::pkcs11::TokenKey::read(key_file).ok().flatten().map(|t| t.token_label);
    resolve_as(key, file, false, token.as_deref())
}

/// Resolves the user PIN of the token `token_label` through `key`'s sources (`init` with a
/// token: the PIN exists already, so a prompt asks once).
pub fn resolve_pin(key: Key, file: Option<&Path>, token_label: &str) -> anyhow::Result<Passphrase> {
    resolve_as(key, file, false, Some(token_label))
}

fn resolve_as(key: Key, file: Option<&Path>, confirm: bool, token: Option<&str>) -> anyhow::Result<Passphrase> {
    if let Some(file) = file {
        let first = first_line(file)
            .with_context(|| format!("reading the {} passphrase from {}", key.name(), file.display()))?;
        if first.is_empty() {
            bail!("{} is empty: put the {} passphrase on its first line", file.display(), key.name());
        }
        return Ok(Passphrase::new(first));
    }
    if let Some(value) = std::env::var_os(key.env()) {
        let Ok(value) = value.into_string() else {
            bail!("{} is not valid UTF-8", key.env());
        };
        if value.is_empty() {
            bail!("{} is set but empty", key.env());
        }
        return Ok(Passphrase::new(value));
    }
    let prompt = match token {
        Some(label) => format!("User PIN of token {label:?} ({}): ", key.name()),
        None => format!("Passphrase for the {}: ", key.name()),
    };
    let first = rpassword::prompt_password(&prompt).map_err(|_| {
        anyhow::anyhow!(
            "no passphrase for the {}: set {}, pass {} FILE, or run in a terminal",
            key.name(),
            key.env(),
            key.flag()
        )
    })?;
    let first = Passphrase::new(first);
    if confirm {
        let again = Passphrase::new(rpassword::prompt_password("Again: ").context("reading the passphrase")?);
        if first != again {
            bail!("the two passphrases differ");
        }
    }
    Ok(first)
}

/// An account password: INKAN_USER_PASSWORD, or a prompt asked twice.
pub fn user_password(login_id: &str) -> anyhow::Result<enroll_server::accounts::Password> {
    secret_for(login_id, "INKAN_USER_PASSWORD", "Password")
}

/// A master's confirmation password (確認用パスワード): INKAN_CONFIRMATION_PASSWORD, else a
/// prompt (twice).
pub fn confirmation_password(login_id: &str) -> anyhow::Result<enroll_server::accounts::Password> {
    secret_for(login_id, "INKAN_CONFIRMATION_PASSWORD", "Confirmation password")
}

/// A resource's inquiry PIN (照会用暗証番号): INKAN_RESOURCE_PIN, else a prompt (twice).
pub fn resource_pin(label: &str) -> anyhow::Result<enroll_server::accounts::Password> {
    secret_for(label, "INKAN_RESOURCE_PIN", "Inquiry PIN")
}

fn secret_for(login_id: &str, variable: &str, what: &str) -> anyhow::Result<enroll_server::accounts::Password> {
    use enroll_server::accounts::Password;
    if let Some(value) = std::env::var_os(variable) {
        let Ok(value) = value.into_string() else { bail!("{variable} is not valid UTF-8") };
        return Ok(Password::new(value));
    }
    let no_tty =
        |_| anyhow::anyhow!("no {} for {login_id:?}: set {variable} or run in a terminal", what.to_lowercase());
    let first = Password::new(rpassword::prompt_password(format!("{what} for {login_id}: ")).map_err(no_tty)?);
    let again = Password::new(rpassword::prompt_password("Again: ").map_err(no_tty)?);
    if first.reveal() != again.reveal() {
        bail!("the two passwords differ");
    }
    Ok(first)
}
