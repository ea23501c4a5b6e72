//! Accounts: a contract's master user and its general users, with argon2id passwords and
//! lockout after repeated wrong passwords. The rules live here; the records are kept by an
//! [`AccountStore`] (sled under `DATA_DIR/web/` by default).

use std::fmt;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::settings::AccountSettings;
pub use crate::stores::{Account, EnrollToken, Role};
use crate::stores::{AccountStore, StoreError};

/// What every enrollment token's secret starts with: a Basic password that does, is taken for a
/// token.
pub const TOKEN_PREFIX: &str = "inkan-est-";
/// The longest an enrollment token may live.
pub const TOKEN_MAX_TTL: time::Duration = time::Duration::days(30);

/// A token redeemed for an enrollment, to be put back if nothing is issued.
#[derive(Debug)]
pub struct RedeemedToken {
    hash: [u8; 32],
    token: EnrollToken,
}

fn token_hash(secret: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

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

/// What can go wrong with accounts.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountError {
    /// Unknown login ID or wrong password: deliberately the same.
    #[error("the login ID or password is not correct")]
    InvalidCredentials,
    /// Locked after too many wrong passwords (said only to whoever gave the right one).
    #[error("the account is locked after too many wrong passwords; {unlock_by}")]
    Locked {
        /// Who can unlock it.
        unlock_by: &'static str,
    },
    /// A wrong password that has just locked the account: answered as any wrong password, and
    /// audited as a lock.
    #[error("the login ID or password is not correct")]
    WrongPasswordLocked,
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
    /// A login ID the service's own certificates use.
    #[error("the login ID {0:?} is reserved: IDs starting with \"inkan-\" name the service's own certificates")]
    ReservedLoginId(String),
    /// A password that breaks the rules.
    #[error("the password must have {min} to 256 characters")]
    BadPassword {
        /// The minimum length.
        min: usize,
    },
    /// A wrong confirmation password.
    #[error("the confirmation password is not correct")]
    WrongConfirmation,
    /// A master without a confirmation password.
    #[error(
        "no confirmation password is set for this account; the operator sets one (inkan user confirmation-password)"
    )]
    NoConfirmation,
    /// A general user given without a master, a master with one, or a master that is not one.
    #[error("{0}")]
    BadRole(String),
    /// The store failed.
    #[error("account store: {0}")]
    Store(String),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.0)
    }
}

/// The prefix of the accounts the service's own certificates are recorded under
/// (`inkan-server`, `inkan-ocsp`): no login ID may take it.
pub const RESERVED_PREFIX: &str = "inkan-";

/// Checks a login ID's form.
pub fn check_login_id(login_id: &str) -> Result<(), AccountError> {
    let ok = (3..=64).contains(&login_id.len())
        && login_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !ok {
        return Err(AccountError::BadLoginId(login_id.chars().take(80).collect()));
    }
    if login_id.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
        return Err(AccountError::ReservedLoginId(login_id.to_owned()));
    }
    Ok(())
}

/// The accounts and their rules.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    settings: AccountSettings,
    /// A hash to verify against for unknown IDs, so they take as long as wrong passwords.
    dummy_hash: String,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

fn hash(password: &Password) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Store(e.to_string()))
}

fn verify(password: &Password, hash: &str) -> bool {
    Argon2::default().verify_password(password.bytes(), hash).is_ok()
}

/// The argon2id hash of a secret other than a login password (an activation password, a
/// confirmation password).
pub fn hash_secret(secret: &Password) -> Result<String, AccountError> {
    hash(secret)
}

/// Whether `secret` matches an argon2id `hash` made by [`hash_secret`].
pub fn verify_secret(hash: &str, secret: &Password) -> bool {
    verify(secret, hash)
}

impl Accounts {
    /// The accounts of `store`, under `settings`.
    pub fn new(store: Arc<dyn AccountStore>, settings: AccountSettings) -> Result<Self, AccountError> {
        let dummy_hash = hash(&Password::new("inkan dummy password for timing".into()))?;
        Ok(Self { store, settings, dummy_hash })
    }

    fn check_password(&self, password: &Password) -> Result<(), AccountError> {
        let n = password.0.chars().count();
        if n < self.settings.min_password_length || n > 256 {
            return Err(AccountError::BadPassword { min: self.settings.min_password_length });
        }
        Ok(())
    }

    /// One account.
    pub fn get(&self, login_id: &str) -> Result<Option<Account>, AccountError> {
        Ok(self.store.get(login_id)?)
    }

    /// All accounts, by login ID.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        Ok(self.store.list()?)
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
            allowed_names: Vec::new(),
            confirmation_hash: None,
            card_sealed: None,
            personal: false,
            otp_required: false,
            otp_step_secs: None,
        };
        if !self.store.insert(&account)? {
            return Err(AccountError::Exists(login_id.to_owned()));
        }
        Ok(account)
    }

    /// Checks a login ID and password. Wrong passwords count towards the lockout; a right
    /// one resets the count. Unknown IDs cost the same time as wrong passwords (an Argon2
    /// verification and a durable write: they are counted too).
    pub fn authenticate(&self, login_id: &str, password: &Password) -> Result<Account, AccountError> {
        // The service's own names are no accounts to log in to.
        let account =
            if login_id.to_ascii_lowercase().starts_with(RESERVED_PREFIX) { None } else { self.get(login_id)? };
        let Some(account) = account else {
            // The same work as a wrong password: a verification and a durable write.
            let _ = verify(password, &self.dummy_hash);
            self.store.count_unknown_login()?;
            return Err(AccountError::InvalidCredentials);
        };
        let right = verify(password, &account.password_hash);
        let threshold = self.settings.lockout_threshold;
        // The count changes atomically: concurrent wrong passwords are all counted.
        let (mut was_locked, mut newly_locked) = (false, false);
        let account = self
            .store
            .update(login_id, &mut |a| {
                was_locked = a.locked;
                newly_locked = false;
                if a.locked || !a.active {
                    // Counted still: the same durable write as for any wrong password.
                    if !right {
                        a.failed_attempts = a.failed_attempts.saturating_add(1);
                    }
                    return;
                }
                if right {
                    a.failed_attempts = 0;
                } else {
                    a.failed_attempts += 1;
                    if a.failed_attempts >= threshold {
                        a.locked = true;
                        newly_locked = true;
                    }
                }
            })?
            .ok_or(AccountError::InvalidCredentials)?;
        // Only whoever knows the password learns that the account is locked or inactive: to a
        // wrong password every ID, existing or not, locked or not, gets the same answer.
        if !right {
            if newly_locked {
                tracing::warn!(login_id = %account.login_id, "account locked after repeated wrong passwords");
                return Err(AccountError::WrongPasswordLocked);
            }
            return Err(AccountError::InvalidCredentials);
        }
        if was_locked {
            return Err(locked(&account));
        }
        if !account.active {
            return Err(AccountError::Inactive);
        }
        Ok(account)
    }

    /// Makes a one-time enrollment token for the active account `login_id`, valid for `ttl`
    /// (at most [`TOKEN_MAX_TTL`]); returns its secret (shown once: only its hash is stored)
    /// and the token.
    pub fn create_token(
        &self,
        login_id: &str,
        ttl: time::Duration,
        created_by: &str,
        now: OffsetDateTime,
    ) -> Result<(zeroize::Zeroizing<String>, EnrollToken), AccountError> {
        if ttl <= time::Duration::ZERO || ttl > TOKEN_MAX_TTL {
            return Err(AccountError::BadRole(format!(
                "a token lives from 1 second to {} days",
                TOKEN_MAX_TTL.whole_days()
            )));
        }
        match self.get(login_id)? {
            Some(account) if account.active => {}
            Some(_) => return Err(AccountError::Inactive),
            None => return Err(AccountError::NotFound(login_id.to_owned())),
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut *bytes).map_err(|_| AccountError::Store("the random source failed".into()))?;
        let secret = zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{}", pki::encoding::hex(&*bytes)));
        let expires_at = now + ttl;
        let token = EnrollToken {
            login_id: login_id.to_owned(),
            expires_at: expires_at.replace_nanosecond(0).unwrap_or(expires_at),
            created_by: created_by.to_owned(),
        };
        self.store.put_token(&token_hash(&secret), &token)?;
        Ok((secret, token))
    }

    /// Redeems `secret` for `login_id`: the token is taken out of the store (once, whoever
    /// races) and returned when it is that account's and has not expired; `None` otherwise (a
    /// token of another account is put back untouched).
    pub fn redeem_token(
        &self,
        login_id: &str,
        secret: &str,
        now: OffsetDateTime,
    ) -> Result<Option<RedeemedToken>, AccountError> {
        let hash = token_hash(secret);
        let Some(token) = self.store.take_token(&hash)? else { return Ok(None) };
        if token.login_id != login_id {
            self.store.put_token(&hash, &token)?;
            return Ok(None);
        }
        if token.expires_at <= now {
            return Ok(None); // taken out for good: it is of no use any more
        }
        Ok(Some(RedeemedToken { hash, token }))
    }

    /// Puts a redeemed token back (nothing was issued with it).
    pub fn restore_token(&self, redeemed: RedeemedToken) -> Result<(), AccountError> {
        Ok(self.store.put_token(&redeemed.hash, &redeemed.token)?)
    }

    /// How many failed logins with IDs no account has were counted.
    pub fn unknown_logins(&self) -> Result<u64, AccountError> {
        Ok(self.store.unknown_logins()?)
    }

    /// Unlocks an account and clears its failure count.
    pub fn unlock(&self, login_id: &str) -> Result<Account, AccountError> {
        self.store
            .update(login_id, &mut |a| {
                a.locked = false;
                a.failed_attempts = 0;
            })?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }

    /// Checks `login_id`'s confirmation password: wrong ones count towards the lock like wrong
    /// login passwords; the right one resets the count.
    pub fn confirm(&self, login_id: &str, confirmation: &Password) -> Result<Account, AccountError> {
        let account = self.get(login_id)?.ok_or(AccountError::InvalidCredentials)?;
        if account.card_sealed.is_some() {
            return Err(AccountError::BadRole(
                "this contract confirms with the customer card: give the digits of the cells asked".into(),
            ));
        }
        let Some(hash) = account.confirmation_hash.clone() else { return Err(AccountError::NoConfirmation) };
        self.count_confirmation(login_id, verify(confirmation, &hash))
    }

    /// Counts a confirmation that was `right` or not (a wrong one towards the lock), and
    /// answers as [`Accounts::confirm`] does.
    pub fn count_confirmation(&self, login_id: &str, right: bool) -> Result<Account, AccountError> {
        let threshold = self.settings.lockout_threshold;
        let account = self
            .store
            .update(login_id, &mut |a| {
                if a.locked {
                    return;
                }
                if right {
                    a.failed_attempts = 0;
                } else {
                    a.failed_attempts += 1;
                    a.locked = a.failed_attempts >= threshold;
                }
            })?
            .ok_or(AccountError::InvalidCredentials)?;
        if account.locked {
            return Err(locked(&account));
        }
        if !right {
            return Err(AccountError::WrongConfirmation);
        }
        Ok(account)
    }

    /// Sets `login_id`'s contract: personal or business, OTP required or not.
    pub fn set_contract(
        &self,
        login_id: &str,
        personal: bool,
        otp_required: bool,
        otp_step_secs: Option<u32>,
    ) -> Result<Account, AccountError> {
        self.store
            .update(login_id, &mut |a| {
                a.personal = personal;
                a.otp_required = otp_required;
                a.otp_step_secs = otp_step_secs;
            })?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }

    /// Gives `login_id` a customer card (sealed), which replaces a static confirmation password.
    pub fn set_card(&self, login_id: &str, sealed: Vec<u8>) -> Result<Account, AccountError> {
        self.store
            .update(login_id, &mut |a| a.card_sealed = Some(sealed.clone()))?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }

    /// Sets `login_id`'s confirmation password.
    pub fn set_confirmation(&self, login_id: &str, confirmation: &Password) -> Result<Account, AccountError> {
        self.check_password(confirmation)?;
        let new_hash = hash(confirmation)?;
        self.store
            .update(login_id, &mut |a| a.confirmation_hash = Some(new_hash.clone()))?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }

    /// The account that holds `account`'s contract (personal or business, OTP rules): the
    /// master itself, or a general user's master.
    pub fn contract_of(&self, account: &Account) -> Result<Option<Account>, AccountError> {
        match account.role {
            Role::Master => Ok(Some(account.clone())),
            Role::General => self.get(&account.master),
        }
    }

    /// Replaces the account's allowed-names policy.
    pub fn set_allowed_names(
        &self,
        login_id: &str,
        names: Vec<pki::names::AllowedName>,
    ) -> Result<Account, AccountError> {
        self.store
            .update(login_id, &mut |a| a.allowed_names.clone_from(&names))?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }

    /// Sets a new password (and unlocks: the operator or master chose it).
    pub fn set_password(&self, login_id: &str, password: &Password) -> Result<Account, AccountError> {
        self.check_password(password)?;
        let new_hash = hash(password)?;
        self.store
            .update(login_id, &mut |a| {
                a.password_hash.clone_from(&new_hash);
                a.locked = false;
                a.failed_attempts = 0;
            })?
            .ok_or_else(|| AccountError::NotFound(login_id.to_owned()))
    }
}

/// The error for a locked account, naming who can unlock it.
pub fn locked(account: &Account) -> AccountError {
    AccountError::Locked {
        unlock_by: match account.role {
            Role::Master => "ask the operator to unlock it",
            Role::General => "ask your contract's master user to unlock it",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn store(dir: &Path) -> Accounts {
        let stores = crate::stores::sled::SledStores::open(dir).expect("open");
        Accounts::new(stores.accounts(), AccountSettings { lockout_threshold: 3, min_password_length: 8 })
            .expect("accounts")
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
        for reserved in ["inkan-ocsp", "INKAN-server", "inkan-"] {
            assert!(
                matches!(
                    accounts.create(reserved, Role::Master, None, &pw, now),
                    Err(AccountError::ReservedLoginId(_))
                ),
                "{reserved} names the service's own certificates"
            );
        }
        assert!(accounts.create("shorty", Role::Master, None, &Password::new("short".into()), now).is_err());
        accounts.create("clerk", Role::General, Some("boss"), &pw, now).expect("general");
        assert!(accounts.create("sub", Role::General, Some("clerk"), &pw, now).is_err(), "clerk is no master");

        let wrong = Password::new("wrong password".into());
        assert_eq!(accounts.authenticate("nobody", &pw).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert_eq!(accounts.unknown_logins().expect("count"), 1);
        assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert!(accounts.authenticate("clerk", &pw).is_ok(), "a right password resets the count");
        for _ in 0..2 {
            assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        }
        assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::WrongPasswordLocked));
        assert!(matches!(accounts.authenticate("clerk", &pw), Err(AccountError::Locked { .. })), "locked stays locked");
        // A wrong password to a locked account is answered as to an unknown ID (issue 11), and
        // makes the same durable write: it is counted, as unknown IDs are.
        let before = accounts.get("clerk").expect("get").expect("exists").failed_attempts;
        assert_eq!(accounts.authenticate("clerk", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert_eq!(accounts.get("clerk").expect("get").expect("exists").failed_attempts, before + 1);
        let unknown = accounts.unknown_logins().expect("count");
        assert_eq!(accounts.authenticate("nobody-else", &wrong).map(|_| ()), Err(AccountError::InvalidCredentials));
        assert_eq!(accounts.unknown_logins().expect("count"), unknown + 1, "an unknown ID is counted");
        drop(accounts);
        let accounts = store(dir.path());
        assert!(accounts.get("clerk").expect("get").expect("exists").locked, "lock survives reopening");
        accounts.unlock("clerk").expect("unlock");
        assert!(accounts.authenticate("clerk", &pw).is_ok());
        assert_eq!(format!("{pw:?}"), "[redacted]");
        assert!(!format!("{:?}", accounts.get("clerk")).contains("argon2"), "no hash in Debug");
    }
}
