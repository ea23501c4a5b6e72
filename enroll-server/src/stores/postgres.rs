//! The stores on PostgreSQL, for deployments with several service instances over one database.
//!
//! Each store is a table of key → JSONB document (the same documents as sled's), so both
//! backends keep one shape and `inkan storage migrate` copies documents as they are. Every
//! read-modify-write runs in one transaction that holds the row (`SELECT … FOR UPDATE`): the
//! change is decided on the row as it stands, and a writer on another instance waits for it.
//! A write is acknowledged after its COMMIT (synchronous_commit stays on).
//!
//! The client is the `postgres` crate (rust-postgres, synchronous): the stores' traits are
//! synchronous and are called off the async threads already, so a blocking client with a small
//! bounded pool of our own is all they need.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use pki::Serial;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::oauth::{CodeRecord, Flow, Grant, OAuthClient, OAuthStore, Redeemed, Resource, RiskProfile, TokenRecord};
use super::{
    Account, AccountStore, EnrollToken, HardwareSeed, MailStore, NoticeStore, OtpStore, OtpToken, OutboxMail,
    StoreError,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 3;

/// Sessions and tickets (schema version 2; `postgres_sessions`).
const SESSIONS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    key text PRIMARY KEY,
    login_id text NOT NULL,
    certificate text NOT NULL,
    last_seen timestamptz NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_login ON sessions (login_id, certificate);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions (last_seen);
CREATE TABLE IF NOT EXISTS tickets (
    key text PRIMARY KEY,
    login_id text NOT NULL,
    state text NOT NULL,
    expires_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_login ON tickets (login_id, state);
CREATE INDEX IF NOT EXISTS tickets_expires ON tickets (expires_at);
";

/// The lease and the shared publications (schema version 3; `postgres_shared`).
const SHARED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (name text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS publications (name text PRIMARY KEY, der bytea NOT NULL, published_at timestamptz NOT NULL);
";

/// Every key → document table.
pub(super) const TABLES: [&str; 13] = [
    "accounts",
    "enroll_tokens",
    "otp_tokens",
    "otp_hardware",
    "mail_outbox",
    "oauth_clients",
    "oauth_resources",
    "oauth_flows",
    "oauth_codes",
    "oauth_grants",
    "oauth_tokens",
    "oauth_profiles",
    "notices",
];

/// Runs `f`, which uses the blocking PostgreSQL client, where it may block: on a worker thread
/// of a multi-thread tokio runtime (the service's handlers call the stores from async code)
/// the thread first leaves the runtime (`block_in_place`), since the client's own runtime
/// refuses to start inside another; elsewhere `f` just runs. A current-thread runtime cannot
/// use these stores.
pub fn outside_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Checks a `[storage] url` without connecting; the message never repeats the URL (it may hold
/// a password).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError(
            "a PostgreSQL URL starts with postgres:// (postgres://USER@HOST[:PORT]/DATABASE)".into(),
        ));
    }
    let config: postgres::Config =
        url.parse().map_err(|_| StoreError("not a PostgreSQL URL: postgres://USER@HOST[:PORT]/DATABASE".into()))?;
    if config.get_hosts().is_empty() || config.get_dbname().is_none() || config.get_user().is_none() {
        return Err(StoreError(
            "the URL must name the user, the host and the database (postgres://USER@HOST/DATABASE)".into(),
        ));
    }
    Ok(())
}

/// Where a URL points, for messages: `DATABASE on HOST:PORT as USER` (never a password).
pub fn describe_url(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else { return "an unreadable URL".into() };
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("database {} on {host}:{port} as {}", config.get_dbname().unwrap_or("?"), config.get_user().unwrap_or("?"))
}

/// Whether a URL carries a password.
pub fn url_has_password(url: &str) -> bool {
    url.parse::<postgres::Config>().is_ok_and(|c| c.get_password().is_some())
}

pub(super) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("PostgreSQL: {e}"))
}

/// How long a free connection may sit before it is checked when taken.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A bounded pool of connections to one database.
pub struct PgStores {
    config: postgres::Config,
    /// Free connections, with when each was last given back.
    idle: Mutex<Vec<(postgres::Client, std::time::Instant)>>,
    open: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl std::fmt::Debug for PgStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the password.
        f.debug_struct("PgStores").field("max", &self.max).finish_non_exhaustive()
    }
}

/// A pooled connection, given back when dropped (a broken one is closed instead).
pub(super) struct Conn<'a> {
    pool: &'a PgStores,
    client: Option<postgres::Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.client.as_ref().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        if client.is_closed() {
            *self.pool.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        } else {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push((client, std::time::Instant::now()));
        }
        self.pool.freed.notify_one();
    }
}

impl PgStores {
    /// Connects to `url` (a `postgres://` URL; `password`, when given, overrides the URL's), with at
    /// most `max` connections, and brings the schema to [`SCHEMA_VERSION`] under an advisory
    /// transaction lock. A database of a newer schema is refused.
    pub fn connect(url: &str, password: Option<&str>, max: usize) -> Result<Self, StoreError> {
        check_url(url)?;
        let mut config: postgres::Config =
            url.parse().map_err(|_| StoreError("[storage] url does not parse".into()))?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(5));
        let stores =
            Self { config, idle: Mutex::new(Vec::new()), open: Mutex::new(0), freed: Condvar::new(), max: max.max(1) };
        stores.migrate()?;
        Ok(stores)
    }

    /// Every web store, all in this database (sessions and tickets too: any instance goes on
    /// with what another began).
    pub fn web_stores(self: &std::sync::Arc<Self>) -> super::WebStores {
        super::WebStores {
            accounts: self.clone(),
            notices: self.clone(),
            otp: self.clone(),
            outbox: self.clone(),
            oauth: self.clone(),
            sessions: self.clone(),
            leases: self.clone(),
        }
    }

    pub(super) fn conn(&self) -> Result<Conn<'_>, StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let free = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            if let Some((mut client, since)) = free {
                // A connection idle for a while may have lost its server (a restart): asked
                // first, so a request does not fail on it. Busy ones are not asked.
                if since.elapsed() < IDLE_CHECK || client.is_valid(Duration::from_secs(2)).is_ok() {
                    return Ok(Conn { pool: self, client: Some(client) });
                }
                drop(client);
                *self.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                continue;
            }
            {
                let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
                if *open < self.max {
                    *open += 1;
                    drop(open);
                    return match self.config.connect(postgres::NoTls) {
                        Ok(client) => Ok(Conn { pool: self, client: Some(client) }),
                        Err(e) => {
                            *self.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                            Err(err(e))
                        }
                    };
                }
                let wait = deadline.saturating_duration_since(std::time::Instant::now());
                if wait.is_zero() {
                    return Err(StoreError("PostgreSQL: no connection free within 10 s".into()));
                }
                let _ = self.freed.wait_timeout(open, wait.min(Duration::from_millis(100)));
            }
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // One migrator at a time, released with the transaction (not a session lock, which a
        // pooler may hand to another client).
        tx.execute("SELECT pg_advisory_xact_lock(7312001)", &[]).map_err(err)?;
        // "already exists, skipping" notices are not news.
        tx.batch_execute("SET LOCAL client_min_messages = warning").map_err(err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS inkan_schema (version integer NOT NULL)").map_err(err)?;
        let found: Option<i32> =
            tx.query_opt("SELECT max(version) FROM inkan_schema", &[]).map_err(err)?.and_then(|r| r.get(0));
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError(format!(
                    "the database's schema is version {v}, newer than this inkan's ({SCHEMA_VERSION}): upgrade inkan"
                )));
            }
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                for table in TABLES {
                    tx.batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, doc jsonb NOT NULL)"
                    ))
                    .map_err(err)?;
                }
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS counters (name text PRIMARY KEY, value bigint NOT NULL);
                     DELETE FROM inkan_schema;",
                )
                .map_err(err)?;
                // Version 2: sessions and tickets, shared by the instances; 3: the lease and the
                // shared CRLs.
                tx.batch_execute(SESSIONS_SCHEMA).map_err(err)?;
                tx.batch_execute(SHARED_SCHEMA).map_err(err)?;
                tx.execute("INSERT INTO inkan_schema (version) VALUES ($1)", &[&SCHEMA_VERSION]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, StoreError> {
        let row = self.conn()?.query_opt(&format!("SELECT doc FROM {table} WHERE key = $1"), &[&key]).map_err(err)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    fn all<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, StoreError> {
        let rows = self.conn()?.query(&format!("SELECT doc FROM {table} ORDER BY key"), &[]).map_err(err)?;
        rows.iter().map(|r| decode(r.get(0))).collect()
    }

    fn insert_new<T: Serialize>(&self, table: &str, key: &str, doc: &T) -> Result<bool, StoreError> {
        let n = self
            .conn()?
            .execute(
                &format!("INSERT INTO {table} (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"),
                &[&key, &encode(doc)?],
            )
            .map_err(err)?;
        Ok(n == 1)
    }

    fn put<T: Serialize>(&self, table: &str, key: &str, doc: &T) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                &format!("INSERT INTO {table} (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET doc = $2"),
                &[&key, &encode(doc)?],
            )
            .map_err(err)?;
        Ok(())
    }

    fn remove<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, StoreError> {
        let row = self
            .conn()?
            .query_opt(&format!("DELETE FROM {table} WHERE key = $1 RETURNING doc"), &[&key])
            .map_err(err)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    /// Changes the row under its lock; `default` makes a missing one.
    fn update<T: Serialize + DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
        default: Option<&dyn Fn() -> T>,
        change: &mut dyn FnMut(&mut T),
    ) -> Result<Option<T>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let row = tx.query_opt(&format!("SELECT doc FROM {table} WHERE key = $1 FOR UPDATE"), &[&key]).map_err(err)?;
        let (mut doc, existed): (T, bool) = match (row, default) {
            (Some(row), _) => (decode(row.get(0))?, true),
            (None, Some(make)) => (make(), false),
            (None, None) => return Ok(None),
        };
        let before = encode(&doc)?;
        change(&mut doc);
        let after = encode(&doc)?;
        if existed && before == after {
            return Ok(Some(doc));
        }
        // A row made by a concurrent writer since our read counts as a conflict: its insert
        // wins, ours is redone on its value.
        let sql = if existed {
            format!("UPDATE {table} SET doc = $2 WHERE key = $1")
        } else {
            format!("INSERT INTO {table} (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        };
        let n = tx.execute(&sql, &[&key, &after]).map_err(err)?;
        tx.commit().map_err(err)?;
        if n == 0 {
            drop(conn);
            return self.update(table, key, default, change);
        }
        Ok(Some(doc))
    }

    /// Every key and document of `table`.
    fn entries<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<(String, T)>, StoreError> {
        let rows = self.conn()?.query(&format!("SELECT key, doc FROM {table} ORDER BY key"), &[]).map_err(err)?;
        rows.iter().map(|r| Ok((r.get::<_, String>(0), decode(r.get(1))?))).collect()
    }
}

pub(super) fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError(format!("a stored document does not read: {e}")))
}

pub(super) fn encode<T: Serialize>(doc: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(doc).map_err(|e| StoreError(format!("a document does not encode: {e}")))
}

fn hex_key(hash: &[u8; 32]) -> String {
    pki::encoding::hex(hash)
}

impl AccountStore for PgStores {
    fn get(&self, login_id: &str) -> Result<Option<Account>, StoreError> {
        outside_runtime(|| PgStores::get(self, "accounts", login_id))
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        outside_runtime(|| self.all("accounts"))
    }

    fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        outside_runtime(|| self.insert_new("accounts", &account.login_id, account))
    }

    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut Account)) -> Result<Option<Account>, StoreError> {
        outside_runtime(|| PgStores::update(self, "accounts", login_id, None, change))
    }

    fn count_unknown_login(&self) -> Result<u64, StoreError> {
        outside_runtime(|| {
            let row = self
                .conn()?
                .query_one(
                    "INSERT INTO counters (name, value) VALUES ('unknown_logins', 1)
                     ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
                    &[],
                )
                .map_err(err)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn unknown_logins(&self) -> Result<u64, StoreError> {
        outside_runtime(|| {
            let row =
                self.conn()?.query_opt("SELECT value FROM counters WHERE name = 'unknown_logins'", &[]).map_err(err)?;
            Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    fn put_token(&self, hash: &[u8; 32], token: &EnrollToken) -> Result<(), StoreError> {
        outside_runtime(|| self.put("enroll_tokens", &hex_key(hash), token))
    }

    fn take_token(&self, hash: &[u8; 32]) -> Result<Option<EnrollToken>, StoreError> {
        outside_runtime(|| self.remove("enroll_tokens", &hex_key(hash)))
    }
}

impl NoticeStore for PgStores {
    fn last(&self, serial: &Serial) -> Result<Option<u32>, StoreError> {
        outside_runtime(|| PgStores::get(self, "notices", &serial.to_string()))
    }

    fn record(&self, serial: &Serial, threshold: u32) -> Result<(), StoreError> {
        outside_runtime(|| self.put("notices", &serial.to_string(), &threshold))
    }
}

impl OtpStore for PgStores {
    fn get(&self, login_id: &str) -> Result<Option<OtpToken>, StoreError> {
        outside_runtime(|| PgStores::get(self, "otp_tokens", login_id))
    }

    fn put(&self, token: &OtpToken) -> Result<(), StoreError> {
        outside_runtime(|| PgStores::put(self, "otp_tokens", &token.login_id, token))
    }

    fn update(&self, login_id: &str, change: &mut dyn FnMut(&mut OtpToken)) -> Result<Option<OtpToken>, StoreError> {
        outside_runtime(|| PgStores::update(self, "otp_tokens", login_id, None, change))
    }

    fn list(&self) -> Result<Vec<OtpToken>, StoreError> {
        outside_runtime(|| self.all("otp_tokens"))
    }

    fn put_seeds(&self, seeds: &[HardwareSeed]) -> Result<Result<(), Vec<String>>, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let mut taken = Vec::new();
            for seed in seeds {
                let n = tx
                    .execute(
                        "INSERT INTO otp_hardware (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                        &[&seed.serial, &encode(seed)?],
                    )
                    .map_err(err)?;
                if n == 0 {
                    taken.push(seed.serial.clone());
                }
            }
            if !taken.is_empty() {
                tx.rollback().map_err(err)?;
                return Ok(Err(taken));
            }
            tx.commit().map_err(err)?;
            Ok(Ok(()))
        })
    }

    fn seed(&self, serial: &str) -> Result<Option<HardwareSeed>, StoreError> {
        outside_runtime(|| PgStores::get(self, "otp_hardware", serial))
    }

    fn assign_seed(&self, serial: &str, login_id: &str) -> Result<bool, StoreError> {
        outside_runtime(|| {
            let mut assigned = false;
            PgStores::update(self, "otp_hardware", serial, None, &mut |seed: &mut HardwareSeed| {
                assigned = seed.assigned_to.is_none();
                if assigned {
                    seed.assigned_to = Some(login_id.to_owned());
                }
            })?;
            Ok(assigned)
        })
    }

    fn seeds(&self) -> Result<Vec<HardwareSeed>, StoreError> {
        outside_runtime(|| self.all("otp_hardware"))
    }
}

impl MailStore for PgStores {
    fn enqueue(&self, key: &str, mail: &OutboxMail) -> Result<bool, StoreError> {
        outside_runtime(|| self.insert_new("mail_outbox", key, mail))
    }

    fn pending(&self) -> Result<Vec<(String, OutboxMail)>, StoreError> {
        outside_runtime(|| {
            Ok(self.entries::<OutboxMail>("mail_outbox")?.into_iter().filter(|(_, m)| m.sent_at.is_none()).collect())
        })
    }

    fn mark_sent(&self, key: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        outside_runtime(|| {
            PgStores::update(self, "mail_outbox", key, None, &mut |m: &mut OutboxMail| m.sent_at = Some(at))?;
            Ok(())
        })
    }
}

impl OAuthStore for PgStores {
    fn insert_client(&self, client: &OAuthClient) -> Result<bool, StoreError> {
        outside_runtime(|| self.insert_new("oauth_clients", &client.client_id, client))
    }

    fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        outside_runtime(|| PgStores::get(self, "oauth_clients", client_id))
    }

    fn clients(&self) -> Result<Vec<OAuthClient>, StoreError> {
        outside_runtime(|| self.all("oauth_clients"))
    }

    fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        outside_runtime(|| Ok(self.remove::<OAuthClient>("oauth_clients", client_id)?.is_some()))
    }

    fn insert_resource(&self, resource: &Resource) -> Result<bool, StoreError> {
        outside_runtime(|| self.insert_new("oauth_resources", &resource.id, resource))
    }

    fn resources(&self) -> Result<Vec<Resource>, StoreError> {
        outside_runtime(|| self.all("oauth_resources"))
    }

    fn update_resource(&self, id: &str, change: &mut dyn FnMut(&mut Resource)) -> Result<Option<Resource>, StoreError> {
        outside_runtime(|| PgStores::update(self, "oauth_resources", id, None, change))
    }

    fn remove_resource(&self, id: &str) -> Result<bool, StoreError> {
        outside_runtime(|| Ok(self.remove::<Resource>("oauth_resources", id)?.is_some()))
    }

    fn put_flow(&self, key: &str, flow: &Flow) -> Result<(), StoreError> {
        outside_runtime(|| self.put("oauth_flows", key, flow))
    }

    fn flow(&self, key: &str) -> Result<Option<Flow>, StoreError> {
        outside_runtime(|| PgStores::get(self, "oauth_flows", key))
    }

    fn take_flow(&self, key: &str) -> Result<Option<Flow>, StoreError> {
        outside_runtime(|| self.remove("oauth_flows", key))
    }

    fn put_code(&self, hash: &[u8; 32], code: &CodeRecord) -> Result<(), StoreError> {
        outside_runtime(|| self.put("oauth_codes", &hex_key(hash), code))
    }

    fn redeem_code(&self, hash: &[u8; 32]) -> Result<Option<Redeemed>, StoreError> {
        outside_runtime(|| {
            let mut first = false;
            let code = PgStores::update(self, "oauth_codes", &hex_key(hash), None, &mut |c: &mut CodeRecord| {
                first = !c.used;
                c.used = true;
            })?;
            Ok(code.map(|c| if first { Redeemed::First(c) } else { Redeemed::Again(c) }))
        })
    }

    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        outside_runtime(|| self.put("oauth_grants", &grant.id, grant))
    }

    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        outside_runtime(|| PgStores::get(self, "oauth_grants", id))
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        outside_runtime(|| self.all("oauth_grants"))
    }

    fn update_grant(&self, id: &str, change: &mut dyn FnMut(&mut Grant)) -> Result<Option<Grant>, StoreError> {
        outside_runtime(|| PgStores::update(self, "oauth_grants", id, None, change))
    }

    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError> {
        outside_runtime(|| self.put("oauth_tokens", &hex_key(hash), token))
    }

    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        outside_runtime(|| PgStores::get(self, "oauth_tokens", &hex_key(hash)))
    }

    fn revoke_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        outside_runtime(|| {
            Ok(PgStores::update(self, "oauth_tokens", &hex_key(hash), None, &mut |t: &mut TokenRecord| {
                t.revoked = true
            })?
            .is_some())
        })
    }

    fn revoke_grant_tokens(&self, grant_id: &str) -> Result<usize, StoreError> {
        outside_runtime(|| {
            let n = self
                .conn()?
                .execute(
                    "UPDATE oauth_tokens SET doc = jsonb_set(doc, '{revoked}', 'true')
                     WHERE doc->>'grant_id' = $1 AND doc->>'revoked' = 'false'",
                    &[&grant_id],
                )
                .map_err(err)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn profile(&self, login_id: &str) -> Result<Option<RiskProfile>, StoreError> {
        outside_runtime(|| PgStores::get(self, "oauth_profiles", login_id))
    }

    fn update_profile(
        &self,
        login_id: &str,
        change: &mut dyn FnMut(&mut RiskProfile),
    ) -> Result<RiskProfile, StoreError> {
        outside_runtime(|| {
            Ok(PgStores::update(self, "oauth_profiles", login_id, Some(&RiskProfile::default), change)?
                .unwrap_or_default())
        })
    }

    fn purge(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let mut gone = 0;
            let grants: Vec<(String, Grant)> = tx
                .query("SELECT key, doc FROM oauth_grants", &[])
                .map_err(err)?
                .iter()
                .map(|r| Ok((r.get::<_, String>(0), decode(r.get(1))?)))
                .collect::<Result<_, StoreError>>()?;
            let ended: Vec<String> = grants.iter().filter(|(_, g)| !g.active(now)).map(|(k, _)| k.clone()).collect();
            gone += tx.execute("DELETE FROM oauth_grants WHERE key = ANY($1)", &[&ended]).map_err(err)?;
            let lapsed = |table: &str, tx: &mut postgres::Transaction<'_>| -> Result<Vec<String>, StoreError> {
                let rows = tx
                    .query(&format!("SELECT key, doc->>'expires_at', doc->>'grant_id' FROM {table}"), &[])
                    .map_err(err)?;
                Ok(rows
                    .iter()
                    .filter(|r| {
                        let expired = r
                            .get::<_, Option<String>>(1)
                            .and_then(|t| pki::encoding::parse_rfc3339(&t))
                            .is_some_and(|t| t <= now);
                        let orphan = r.get::<_, Option<String>>(2).is_some_and(|g| ended.contains(&g));
                        expired || (table == "oauth_tokens" && orphan)
                    })
                    .map(|r| r.get::<_, String>(0))
                    .collect())
            };
            for table in ["oauth_tokens", "oauth_codes", "oauth_flows"] {
                let keys = lapsed(table, &mut tx)?;
                gone += tx.execute(&format!("DELETE FROM {table} WHERE key = ANY($1)"), &[&keys]).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(usize::try_from(gone).unwrap_or(usize::MAX))
        })
    }
}
