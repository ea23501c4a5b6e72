//! Accounts: a contract's master user and its general users, with argon2id passwords and
//! lockout after repeated wrong passwords. Stored in sled under `DATA_DIR/web/`.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::settings::AccountSettings;

/// A password as typed. `Debug` prints `[redacted]`; the text is zeroized on drop.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl Password {
    /// Wraps a password.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Generates a random password of 16 letters and digits (for `serve --dev`).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut bytes = [0u8; 16];
        // A failing system RNG is unrecoverable for a CA: there is nothing safe to fall back to.
        aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| std::process::abort());
        Self::new(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
    }

    /// The text, for showing once to whoever set it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A user's role in its contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The contract's administrator (MasterID): adds and unlocks general users.
    Master,
    /// A user added by the master.
    General,
}

impl Role {
    /// `master` or `general`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::General => "general",
        }
    }
}

/// One account.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// The login ID; also the common name of the account's certificates.
    pub login_id: String,
    /// Master or general.
    pub role: Role,
    /// The contract's master login ID (the account itself for a master).
    pub master: String,
    /// argon2id PHC string.
    password_hash: String,
    /// Wrong passwords since the last right one.
    pub failed_attempts: u32,
    /// Locked after too many wrong passwords.
    pub locked: bool,
    /// Inactive accounts cannot log in or obtain certificates.
    pub active: bool,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("login_id", &self.login_id)
            .field("role", &self.role)
            .field("master", &self.master)
            .field("failed_attempts", &self.failed_attempts)
            .field("locked", &self.locked)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// What can go wrong with accounts.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountError {
    /// Unknown login ID or wrong password: deliberately the same.
    #[error("the login ID or password is not correct")]
    InvalidCredentials,
    /// Locked after too many wrong passwords.
    #[error("the account is locked after too many wrong passwords; {unlock_by}")]
    Locked {
        /// Who can unlock it.
        unlock_by: &'static str,
        /// Locked by this very attempt.
        newly: bool,
    },
    /// Disabled.
    #[error("the account is not active")]
    Inactive,
    /// A login ID that is taken.
    #[error("the login ID {0:?} is already in use")]
    Exists(String),
    /// No such account (for administration, where existence is no secret).
    #[error("no account with login ID {0:?}")]
    NotFound(String),
    /// A login ID in the wrong form.
    #[error("invalid login ID {0:?}: use 3 to 64 letters, digits, '.', '_', '-' or '@'")]
    BadLoginId(String),
    /// A password that breaks the rules.
    #[error("the password must have {min} to 256 characters")]
    BadPassword {
        /// The minimum length.
        min: usize,
    },
    /// A general user given without a master, a master with one, or a master that is not one.
    #[error("{0}")]
    BadRole(String),
    /// The store failed.
    #[error("account store: {0}")]
    Store(String),
}

impl AccountError {
    fn store(e: impl fmt::Display) -> Self {
        Self::Store(e.to_string())
    }
}

/// Checks a login ID's form.
pub fn check_login_id(login_id: &str) -> Result<(), AccountError> {
    let ok = (3..=64).contains(&login_id.len())
        && login_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok { Ok(()) } else { Err(AccountError::BadLoginId(login_id.chars().take(80).collect())) }
}

/// The account store, on sled.
pub struct Accounts {
    tree: sled::Tree,
    db: sled::Db,
    settings: AccountSettings,
    /// Serialises read-modify-write changes.
    writer: Mutex<()>,
    /// A hash to verify against for unknown IDs, so they take as long as wrong passwords.
    dummy_hash: String,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

fn hash(password: &Password) -> Result<String, AccountError> {
    Argon2::default().hash_password(password.bytes()).map(|h| h.to_string()).map_err(AccountError::store)
}

impl Accounts {
    /// Opens (or creates) the account store in `dir`.
    pub fn open(dir: &Path, settings: AccountSettings) -> Result<Self, AccountError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| AccountError::Store(format!("opening {}: {e}", dir.display())))?;
        let tree = db.open_tree("accounts").map_err(AccountError::store)?;
        let dummy_hash = hash(&Password::new("inkan dummy password for timing".into()))?;
        Ok(Self { tree, db, settings, writer: Mutex::new(()), dummy_hash })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_password(&self, password: &Password) -> Result<(), AccountError> {
        let n = password.0.chars().count();
        if n < self.settings.min_password_length || n > 256 {
            return Err(AccountError::BadPassword { min: self.settings.min_password_length });
        }
        Ok(())
    }

    fn put(&self, account: &Account) -> Result<(), AccountError> {
        let value = serde_json::to_vec(account).map_err(AccountError::store)?;
        self.tree.insert(account.login_id.as_bytes(), value).map_err(AccountError::store)?;
        self.db.flush().map_err(AccountError::store)?;
        Ok(())
    }

    /// One account.
    pub fn get(&self, login_id: &str) -> Result<Option<Account>, AccountError> {
        self.tree
            .get(login_id.as_bytes())
            .map_err(AccountError::store)?
            .map(|v| serde_json::from_slice(&v).map_err(AccountError::store))
            .transpose()
    }

    /// All accounts, by login ID.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.tree
            .iter()
            .map(|item| {
                let (_, v) = item.map_err(AccountError::store)?;
                serde_json::from_slice(&v).map_err(AccountError::store)
            })
            .collect()
    }

    /// Creates an account. A general user names its contract's master.
    pub fn create(
        &self,
        login_id: &str,
        role: Role,
        master: Option<&str>,
        password: &Password,
        now: OffsetDateTime,
    ) -> Result<Account, AccountError> {
        check_login_id(login_id)?;
        self.check_password(password)?;
        let master = match (role, master) {
            (Role::Master, None) => login_id.to_owned(),
            (Role::Master, Some(_)) => {
                return Err(AccountError::BadRole("a master user has no master (drop --master)".into()));
            }
            (Role::General, None) => {
                return Err(AccountError::BadRole("a general user needs its contract's master (--master ID)".into()));
            }
            (Role::General, Some(master)) => {
                match self.get(master)? {
                    Some(m) if m.role == Role::Master => {}
                    Some(_) => return Err(AccountError::BadRole(format!("{master:?} is not a master user"))),
                    None => return Err(AccountError::NotFound(master.to_owned())),
                }
                master.to_owned()
            }
        };
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let account = Account {
            login_id: login_id.to_owned(),
            role,
            master,
            password_hash: hash(password)?,
            failed_attempts: 0,
            locked: false,
            active: true,
            created_at: now,
        };
        let _writer = self.lock();
        if self.tree.contains_key(login_id.as_bytes()).map_err(AccountError::store)? {
            return Err(AccountError::Exists(login_id.to_owned()));
        }
        self.put(&account)?;
        Ok(account)
    }

    /// Checks a login ID and password. Wrong passwords count towards the lockout; a right
    /// one resets the count. Unknown IDs cost the same time as wrong passwords.
    pub fn authenticate(&self, login_id: &str, password: &Password) -> Result<Account, AccountError> {
        let Some(account) = self.get(login_id)? else {
            let _ = Argon2::default().verify_password(password.bytes(), self.dummy_hash.as_str());
            return Err(AccountError::InvalidCredentials);
        };
        let right = Argon2::default().verify_password(password.bytes(), account.password_hash.as_str()).is_ok();
        let _writer = self.lock();
        // Re-read under the lock: another request may have counted a failure meanwhile.
        let mut account = self.get(login_id)?.ok_or(AccountError::InvalidCredentials)?;
        if account.locked {
            return Err(locked(&account));
        }
        if !account.active {
            return Err(AccountError::Inactive);
        }
        if right {
            if account.failed_attempts != 0 {
                account.failed_attempts = 0;
                self.put(&account)?;
            }
            return Ok(account);
        }
        account.failed_attempts += 1;
        if account.failed_attempts >= self.settings.lockout_threshold {
            account.locked = true;
            tracing::warn!(login_id = %account.login_id, "account locked after repeated wrong passwords");
        }
        self.put(&account)?;
        Err(match locked(&account) {
            AccountError::Locked { unlock_by, .. } if account.locked => AccountError::Locked { unlock_by, newly: true },
            _ => AccountError::InvalidCredentials,
        })
    }

    /// Unlocks an account and clears its failure count.
    pub fn unlock(&self, login_id: &str) -> Result<Account, AccountError> {
        let _writer = self.lock();
        let mut account = self.get(login_id)?.ok_or_else(|| AccountError::NotFound(login_id.to_owned()))?;
        account.locked = false;
        account.failed_attempts = 0;
        self.put(&account)?;
        Ok(account)
    }

    /// Sets a new password (and unlocks: the operator or master chose it).
    pub fn set_password(&self, login_id: &str, password: &Password) -> Result<Account, AccountError> {
        self.check_password(password)?;
        let new_hash = hash(password)?;
        let _writer = self.lock();
        let mut account = self.get(login_id)?.ok_or_else(|| AccountError::NotFound(login_id.to_owned()))?;
        account.password_hash = new_hash;
        account.locked = false;
        account.failed_attempts = 0;
        self.put(&account)?;
        Ok(account)
    }
}

/// Which expiry notices were delivered: serial → the nearest threshold (in days) notified.
/// Kept beside the accounts, so a restart does not send them again.
pub struct NoticeLog {
    tree: sled::Tree,
    db: sled::Db,
}

impl fmt::Debug for NoticeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoticeLog").finish_non_exhaustive()
    }
}

impl NoticeLog {
    /// The nearest threshold already notified for `serial`.
    pub fn last(&self, serial: &pki::Serial) -> Result<Option<u32>, AccountError> {
        Ok(self
            .tree
            .get(serial.as_bytes())
            .map_err(AccountError::store)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes))
    }

    /// Records, durably, that the notice for `threshold` days was delivered.
    pub fn record(&self, serial: &pki::Serial, threshold: u32) -> Result<(), AccountError> {
        self.tree.insert(serial.as_bytes(), &threshold.to_be_bytes()).map_err(AccountError::store)?;
        self.db.flush().map_err(AccountError::store)?;
        Ok(())
    }
}

impl Accounts {
    /// The log of delivered expiry notices, in the same store.
    pub fn notice_log(&self) -> Result<NoticeLog, AccountError> {
        Ok(NoticeLog { tree: self.db.open_tree("notices").map_err(AccountError::store)?, db: self.db.clone() })
    }
}

/// The error for a locked account, naming who can unlock it.
pub fn locked(account: &Account) -> AccountError {
    AccountError::Locked {
        newly: false,
        unlock_by: match account.role {
            Role::Master => "ask the operator to unlock it",
            Role::General => "ask your contract's master user to unlock it",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Accounts {
        Accounts::open(dir, AccountSettings { lockout_threshold: 3, min_password_length: 8 }).expect("open")
    }

    #[test]
    fn lockout_unlock_and_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = store(dir.path());
        let now = OffsetDateTime::now_utc();
        let pw = Password::new("correct horse".into());
        accounts.create("boss", Role::Master, None, &pw, now).expect("master");
        assert_eq!(
            accounts.create("boss", Role::Master, None, &pw, now).map(|_| ()),
            Err(AccountError::Exists("boss".into()))
        );
        assert!(accounts.create("clerk", Role::General, None, &pw, now).is_err(), "general needs a master");
        assert!(accounts.create("x", Role::Master, None, &pw, now).is_err(), "short login ID");
        assert!(accounts.create("shorty", Role::Master, None, &Password::new("short".into()), now).is_err());
        accounts.create("clerk", Role::General, Some("boss"), &pw, now).expect("general");
        assert!(accounts.create("sub", Role::General, Some("clerk"), &pw, now).is_err(), "clerk is no master");

        let wrong = Password::new("wrong password".into());
        assert_eq!(accounts.authenticate("nobody", &pw).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert!(accounts.authenticate("clerk", &pw).is_ok(), "a right password resets the count");
        for _ in 0..2 {
            assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        }
        assert!(matches!(accounts.authenticate("clerk", &wrong), Err(AccountError::Locked { .. })));
        assert!(matches!(accounts.authenticate("clerk", &pw), Err(AccountError::Locked { .. })), "locked stays locked");
        drop(accounts);
        let accounts = store(dir.path());
        assert!(accounts.get("clerk").expect("get").expect("exists").locked, "lock survives reopening");
        accounts.unlock("clerk").expect("unlock");
        assert!(accounts.authenticate("clerk", &pw).is_ok());
        assert_eq!(format!("{pw:?}"), "[redacted]");
        assert!(!format!("{:?}", accounts.get("clerk")).contains("argon2"), "no hash in Debug");
    }
}
