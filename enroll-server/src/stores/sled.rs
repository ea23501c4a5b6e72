//! The stores on sled, in one database directory (`DATA_DIR/web`): tree `accounts` (login ID →
//! JSON), tree `notices` (serial → threshold, big-endian), tree `counters` (name → u64,
//! big-endian), tree `enroll_tokens` (SHA-256 of a token → JSON) and tree `otp_tokens` (login ID →
//! JSON, the secret sealed). sled allows one process per
//! directory, which is why operator commands reach a running service through its admin socket.

use std::path::Path;
use std::sync::Arc;

use pki::Serial;
use time::OffsetDateTime;

use super::{
    Account, AccountStore, EnrollToken, HardwareSeed, MailStore, NoticeStore, OtpStore, OtpToken, OutboxMail,
    StoreError,
};

/// Both stores of one sled directory.
#[derive(Clone)]
pub struct SledStores {
    db: sled::Db,
    accounts: sled::Tree,
    notices: sled::Tree,
    counters: sled::Tree,
    tokens: sled::Tree,
    otp: sled::Tree,
    outbox: sled::Tree,
    seeds: sled::Tree,
}

impl std::fmt::Debug for SledStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStores").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::from_display(e)
}

impl SledStores {
    /// Opens (or creates) the stores in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db =
            sled::Config::new().path(dir).open().map_err(|e| StoreError(format!("opening {}: {e}", dir.display())))?;
        let accounts = db.open_tree("accounts").map_err(err)?;
        let notices = db.open_tree("notices").map_err(err)?;
        let counters = db.open_tree("counters").map_err(err)?;
        let tokens = db.open_tree("enroll_tokens").map_err(err)?;
        let otp = db.open_tree("otp_tokens").map_err(err)?;
        let outbox = db.open_tree("mail_outbox").map_err(err)?;
        let seeds = db.open_tree("otp_hardware").map_err(err)?;
        Ok(Self { db, accounts, notices, counters, tokens, otp, outbox, seeds })
    }

    /// The database itself, for a backup's export.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The account store.
    pub fn accounts(&self) -> Arc<dyn AccountStore> {
        Arc::new(self.clone())
    }

    /// The mail outbox.
    pub fn outbox(&self) -> Arc<dyn MailStore> {
        Arc::new(self.clone())
    }

    /// The OTP token store.
    pub fn otp(&self) -> Arc<dyn OtpStore> {
        Arc::new(self.clone())
    }

    /// The OAuth stores, in the same database.
    pub fn oauth(&self) -> Result<Arc<dyn super::oauth::OAuthStore>, StoreError> {
        Ok(Arc::new(super::sled_oauth::SledOAuth::open(&self.db)?))
    }

    /// The notice store.
    pub fn notices(&self) -> Arc<dyn NoticeStore> {
        Arc::new(self.clone())
    }

    /// Every web store of this directory; sessions and tickets live in this process's memory.
    pub fn web_stores(&self) -> Result<super::WebStores, StoreError> {
        Ok(super::WebStores {
            accounts: self.accounts(),
            notices: self.notices(),
            otp: self.otp(),
            outbox: self.outbox(),
            oauth: self.oauth()?,
            sessions: Arc::new(super::sessions::MemorySessions::default()),
            leases: Arc::new(super::shared::Solo),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(err)
    }
}

fn decode(bytes: &[u8]) -> Result<Account, StoreError> {
    serde_json::from_slice(bytes).map_err(err)
}

impl AccountStore for SledStores {
    fn get(&self, login_id: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.get(login_id.as_bytes()).map_err(err)?.map(|v| decode(&v)).transpose()
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts.iter().map(|item| decode(&item.map_err(err)?.1)).collect()
    }

    fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(account).map_err(err)?;
        let swapped =
            self.accounts.compare_and_swap(account.login_id.as_bytes(), None::<&[u8]>, Some(value)).map_err(err)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut Account)) -> Result<Option<Account>, StoreError> {
        loop {
            let Some(old) = self.accounts.get(login_id.as_bytes()).map_err(err)? else { return Ok(None) };
            let mut account = decode(&old)?;
            change(&mut account);
            let new = serde_json::to_vec(&account).map_err(err)?;
            if new == old.as_ref() {
                return Ok(Some(account));
            }
            match self.accounts.compare_and_swap(login_id.as_bytes(), Some(old), Some(new)).map_err(err)? {
                Ok(()) => {
                    self.flush()?;
                    return Ok(Some(account));
                }
                Err(_) => continue, // another writer changed it first: apply the change again
            }
        }
    }

    fn count_unknown_login(&self) -> Result<u64, StoreError> {
        let next = self
            .counters
            .update_and_fetch(UNKNOWN_LOGINS, |old| Some(counter(old).saturating_add(1).to_be_bytes().to_vec()))
            .map_err(err)?;
        self.flush()?;
        Ok(counter(next.as_deref()))
    }

    fn unknown_logins(&self) -> Result<u64, StoreError> {
        self.unknown_logins_now()
    }

    fn put_token(&self, hash: &[u8; 32], token: &EnrollToken) -> Result<(), StoreError> {
        self.tokens.insert(hash, serde_json::to_vec(token).map_err(err)?).map_err(err)?;
        self.flush()
    }

    fn take_token(&self, hash: &[u8; 32]) -> Result<Option<EnrollToken>, StoreError> {
        let Some(value) = self.tokens.remove(hash).map_err(err)? else { return Ok(None) };
        self.flush()?;
        serde_json::from_slice(&value).map(Some).map_err(err)
    }
}

impl OtpStore for SledStores {
    fn get(&self, login_id: &str) -> Result<Option<OtpToken>, StoreError> {
        self.otp.get(login_id.as_bytes()).map_err(err)?.map(|v| serde_json::from_slice(&v).map_err(err)).transpose()
    }

    fn put(&self, token: &OtpToken) -> Result<(), StoreError> {
        self.otp.insert(token.login_id.as_bytes(), serde_json::to_vec(token).map_err(err)?).map_err(err)?;
        self.flush()
    }

    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut OtpToken)) -> Result<Option<OtpToken>, StoreError> {
        loop {
            let Some(old) = self.otp.get(login_id.as_bytes()).map_err(err)? else { return Ok(None) };
            let mut token: OtpToken = serde_json::from_slice(&old).map_err(err)?;
            change(&mut token);
            let new = serde_json::to_vec(&token).map_err(err)?;
            if new == old.as_ref() {
                return Ok(Some(token));
            }
            match self.otp.compare_and_swap(login_id.as_bytes(), Some(old), Some(new)).map_err(err)? {
                Ok(()) => {
                    self.flush()?;
                    return Ok(Some(token));
                }
                Err(_) => continue, // another writer changed it first: decide again on its value
            }
        }
    }

    fn list(&self) -> Result<Vec<OtpToken>, StoreError> {
        self.otp.iter().map(|item| serde_json::from_slice(&item.map_err(err)?.1).map_err(err)).collect()
    }

    fn put_seeds(&self, seeds: &[HardwareSeed]) -> Result<Result<(), Vec<String>>, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let values: Vec<(String, Vec<u8>)> = seeds
            .iter()
            .map(|s| serde_json::to_vec(s).map(|v| (s.serial.clone(), v)))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let outcome = self.seeds.transaction(|tree| {
            let mut taken = Vec::new();
            for (serial, _) in &values {
                if tree.get(serial.as_bytes())?.is_some() {
                    taken.push(serial.clone());
                }
            }
            if !taken.is_empty() {
                return Err(ConflictableTransactionError::Abort(taken));
            }
            for (serial, value) in &values {
                tree.insert(serial.as_bytes(), value.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.flush()?;
                Ok(Ok(()))
            }
            Err(TransactionError::Abort(taken)) => Ok(Err(taken)),
            Err(TransactionError::Storage(e)) => Err(err(e)),
        }
    }

    fn seed(&self, serial: &str) -> Result<Option<HardwareSeed>, StoreError> {
        self.seeds.get(serial.as_bytes()).map_err(err)?.map(|v| serde_json::from_slice(&v).map_err(err)).transpose()
    }

    fn assign_seed(&self, serial: &str, login_id: &str) -> Result<bool, StoreError> {
        loop {
            let Some(old) = self.seeds.get(serial.as_bytes()).map_err(err)? else { return Ok(false) };
            let mut seed: HardwareSeed = serde_json::from_slice(&old).map_err(err)?;
            if seed.assigned_to.is_some() {
                return Ok(false);
            }
            seed.assigned_to = Some(login_id.to_owned());
            let new = serde_json::to_vec(&seed).map_err(err)?;
            if self.seeds.compare_and_swap(serial.as_bytes(), Some(old), Some(new)).map_err(err)?.is_ok() {
                self.flush()?;
                return Ok(true);
            }
        }
    }

    fn seeds(&self) -> Result<Vec<HardwareSeed>, StoreError> {
        self.seeds.iter().map(|item| serde_json::from_slice(&item.map_err(err)?.1).map_err(err)).collect()
    }
}

impl MailStore for SledStores {
    fn enqueue(&self, key: &str, mail: &OutboxMail) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(mail).map_err(err)?;
        let swapped = self.outbox.compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(value)).map_err(err)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    fn pending(&self) -> Result<Vec<(String, OutboxMail)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.iter() {
            let (key, value) = item.map_err(err)?;
            let mail: OutboxMail = serde_json::from_slice(&value).map_err(err)?;
            if mail.sent_at.is_none() {
                out.push((String::from_utf8_lossy(&key).into_owned(), mail));
            }
        }
        Ok(out)
    }

    fn mark_sent(&self, key: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let Some(value) = self.outbox.get(key.as_bytes()).map_err(err)? else { return Ok(()) };
        let mut mail: OutboxMail = serde_json::from_slice(&value).map_err(err)?;
        mail.sent_at = Some(at);
        self.outbox.insert(key.as_bytes(), serde_json::to_vec(&mail).map_err(err)?).map_err(err)?;
        self.flush()
    }
}

const UNKNOWN_LOGINS: &[u8] = b"unknown_logins";

fn counter(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| <[u8; 8]>::try_from(v).ok()).map_or(0, u64::from_be_bytes)
}

impl SledStores {
    fn unknown_logins_now(&self) -> Result<u64, StoreError> {
        Ok(counter(self.counters.get(UNKNOWN_LOGINS).map_err(err)?.as_deref()))
    }
}

impl NoticeStore for SledStores {
    fn last(&self, serial: &Serial) -> Result<Option<u32>, StoreError> {
        Ok(self
            .notices
            .get(serial.as_bytes())
            .map_err(err)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes))
    }

    fn record(&self, serial: &Serial, threshold: u32) -> Result<(), StoreError> {
        self.notices.insert(serial.as_bytes(), &threshold.to_be_bytes()).map_err(err)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A store just dropped may hold the directory's lock a moment longer (sled's background
        // work on a loaded machine): reopening waits for it, boundedly.
        let open = || {
            for _ in 0..100 {
                match SledStores::open(dir.path()) {
                    Ok(stores) => return stores,
                    Err(e) if e.to_string().contains("lock") => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    Err(e) => panic!("open: {e}"),
                }
            }
            SledStores::open(dir.path()).expect("open after 5 s")
        };
        super::super::conformance::accounts(&|| open().accounts());
        super::super::conformance::notices(&|| open().notices());
        super::super::conformance::otp(&|| open().otp());
        super::super::conformance::outbox(&|| open().outbox());
        super::super::conformance::oauth(&|| open().oauth().expect("oauth trees"));
    }
}
