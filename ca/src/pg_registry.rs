//! The certificate registry on PostgreSQL: one row per certificate that another team can query
//! with SQL (serial, account, state, profile, validity, key hash, revocation, issuing
//! generation, the DER), indexed for the expiry, account and key-hash queries, with the record
//! as the service reads it beside them (`doc`). Every change is one transaction; the ones that
//! read before they write hold the rows they read, and concurrent reissues of one account are
//! serialised by a transaction lock on the account.

use std::sync::Mutex;
use std::time::Duration;

use pki::registry::{BlockedKey, CertRecord, Registry, RegistryError, RequestAnswer, State};
use pki::{RevocationReason, RevokedEntry, Serial};
use time::OffsetDateTime;

use crate::pg_client::{PgClient, PgTransaction};

/// The schema version of the registry's tables.
pub const REGISTRY_SCHEMA: i32 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial bytea PRIMARY KEY,
    serial_hex text NOT NULL,
    account text NOT NULL,
    state text NOT NULL,
    profile text NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    key_sha256 bytea NOT NULL,
    revoked_at timestamptz,
    reason text,
    issuer integer NOT NULL,
    request_id bytea,
    der bytea,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_account ON certificates (account, serial);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after, serial);
CREATE INDEX IF NOT EXISTS certificates_key ON certificates (key_sha256);
CREATE INDEX IF NOT EXISTS certificates_request ON certificates (request_id, recorded_at);
CREATE TABLE IF NOT EXISTS blocked_keys (key_sha256 bytea PRIMARY KEY, serial bytea NOT NULL, at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS registry_counters (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS registry_schema (version integer NOT NULL);
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS changed_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS certificates_changed ON certificates (changed_at) WHERE revoked_at IS NOT NULL;
";

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

/// How long a connection may sit unused before it is checked when taken.
const IDLE_CHECK: Duration = Duration::from_secs(1);

fn backend(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Backend(format!("PostgreSQL: {e}"))
}

/// The registry on one PostgreSQL database, over a small fixed set of connections (each
/// opened when first needed and again after it broke).
pub struct PgRegistry {
    /// Each connection, with when it was last used.
    clients: Vec<Mutex<Option<(PgClient, std::time::Instant)>>>,
    next: std::sync::atomic::AtomicUsize,
    config: postgres::Config,
}

/// One of the registry's connections, held until dropped.
struct Conn<'a>(std::sync::MutexGuard<'a, Option<(PgClient, std::time::Instant)>>);

impl std::ops::Deref for Conn<'_> {
    type Target = PgClient;
    fn deref(&self) -> &PgClient {
        &self.0.as_ref().unwrap_or_else(|| unreachable!("connected before it is handed out")).0
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgClient {
        &mut self.0.as_mut().unwrap_or_else(|| unreachable!("connected before it is handed out")).0
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some((_, used)) = self.0.as_mut() {
            *used = std::time::Instant::now();
        }
    }
}

impl std::fmt::Debug for PgRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRegistry").finish_non_exhaustive()
    }
}

fn state_name(state: &State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Issued => "issued",
        State::Revoked { reason: RevocationReason::Superseded, .. } => "superseded",
        State::Revoked { .. } => "revoked",
    }
}

fn decode(doc: serde_json::Value) -> Result<CertRecord, RegistryError> {
    serde_json::from_value(doc)
        .map_err(|e| RegistryError::Corrupt { key: "certificates.doc".into(), detail: e.to_string() })
}

/// The statement [`write`] runs.
const UPSERT: &str =
    "INSERT INTO certificates (serial, serial_hex, account, state, profile, not_before, not_after, recorded_at,
             key_sha256, revoked_at, reason, issuer, request_id, der, doc)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (serial) DO UPDATE SET state = $4, revoked_at = $10, reason = $11,
             der = COALESCE($14, certificates.der), doc = $15, changed_at = clock_timestamp()";

/// Inserts or replaces the row of `record` (the DER only when given).
fn write(
    tx: &mut PgTransaction<'_>,
    query: &str,
    record: &CertRecord,
    der: Option<&[u8]>,
    request_id: Option<&[u8; 16]>,
) -> Result<(), RegistryError> {
    let (revoked_at, reason) = match record.state {
        State::Revoked { at, reason } => (Some(at), Some(reason.name())),
        _ => (None, None),
    };
    let doc = serde_json::to_value(record).map_err(backend)?;
    tx.execute(
        query,
        &[
            &record.serial.as_bytes().to_vec(),
            &record.serial.to_string(),
            &record.account,
            &state_name(&record.state),
            &record.profile.name(),
            &record.not_before,
            &record.not_after,
            &record.recorded_at,
            &record.key_sha256.to_vec(),
            &revoked_at,
            &reason,
            &i32::from(record.issuer),
            &request_id.map(|id| id.to_vec()),
            &der.map(<[u8]>::to_vec),
            &doc,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

impl PgRegistry {
    /// Connects (with up to `max` connections) and brings the registry's tables to
    /// [`REGISTRY_SCHEMA`] (a newer one is refused).
    pub fn connect(url: &str, password: Option<&str>, max: usize) -> Result<Self, RegistryError> {
        let mut config: postgres::Config =
            url.parse().map_err(|_| backend("[storage] url does not parse: postgres://USER@HOST[:PORT]/DATABASE"))?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(5));
        let mut client = PgClient::new(config.connect(postgres::NoTls).map_err(backend)?);
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock(7312002)", &[]).map_err(backend)?;
        // "already exists, skipping" notices are not news.
        tx.batch_execute("SET LOCAL client_min_messages = warning").map_err(backend)?;
        tx.batch_execute(SCHEMA).map_err(backend)?;
        let found: Option<i32> = tx.query_one("SELECT max(version) FROM registry_schema", &[]).map_err(backend)?.get(0);
        match found {
            Some(v) if v > REGISTRY_SCHEMA => {
                return Err(backend(format!(
                    "the registry's schema is version {v}, newer than this inkan's ({REGISTRY_SCHEMA}): upgrade inkan"
                )));
            }
            Some(REGISTRY_SCHEMA) => {}
            // Version 1 gained changed_at (added above): the record of which version it is now.
            _ => {
                tx.execute("DELETE FROM registry_schema", &[]).map_err(backend)?;
                tx.execute("INSERT INTO registry_schema (version) VALUES ($1)", &[&REGISTRY_SCHEMA])
                    .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)?;
        let mut clients: Vec<_> = (0..max.max(1)).map(|_| Mutex::new(None)).collect();
        clients[0] = Mutex::new(Some((client, std::time::Instant::now())));
        Ok(Self { clients, next: std::sync::atomic::AtomicUsize::new(0), config })
    }

    /// Whether the registry holds nothing: no certificate, blocked key or CRL number.
    pub fn is_empty(&self) -> Result<bool, RegistryError> {
        let row = self
            .client()?
            .query_one(
                "SELECT (SELECT count(*) FROM certificates) + (SELECT count(*) FROM blocked_keys)
                      + (SELECT count(*) FROM registry_counters)",
                &[],
            )
            .map_err(backend)?;
        Ok(row.get::<_, i64>(0) == 0)
    }

    /// Writes `entries` as they are, in one transaction (a move from another backend).
    pub fn import(&self, entries: &[crate::migrate::Entry]) -> Result<(), RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        // Prepared at the first row: each row is then one round trip.
        for entry in entries {
            write(&mut tx, UPSERT, &entry.record, entry.der.as_deref(), entry.request_id.as_ref())?;
        }
        tx.commit().map_err(backend)
    }

    /// Writes the blocked keys and the CRL number (a move from another backend).
    pub fn import_rest(&self, blocked: &[BlockedKey], crl_number: u64) -> Result<(), RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        for key in blocked {
            tx.execute(
                "INSERT INTO blocked_keys (key_sha256, serial, at) VALUES ($1, $2, $3)",
                &[&key.key_sha256.to_vec(), &key.serial.as_bytes().to_vec(), &key.at],
            )
            .map_err(backend)?;
        }
        if crl_number > 0 {
            let value = i64::try_from(crl_number).map_err(backend)?;
            tx.execute("INSERT INTO registry_counters (name, value) VALUES ('crl_number', $1)", &[&value])
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    /// Everything the registry holds, read back (to compare with what was moved).
    pub fn contents(&self) -> Result<crate::migrate::Contents, RegistryError> {
        let mut client = self.client()?;
        let mut certificates = Vec::new();
        for row in client.query("SELECT doc, der, request_id FROM certificates", &[]).map_err(backend)? {
            let record = decode(row.get(0))?;
            let request_id =
                row.get::<_, Option<Vec<u8>>>(2).map(|id| <[u8; 16]>::try_from(id.as_slice())).transpose().map_err(
                    |_| RegistryError::Corrupt { key: "certificates.request_id".into(), detail: "not 16 bytes".into() },
                )?;
            certificates.push(crate::migrate::Entry { record, der: row.get(1), request_id });
        }
        let mut blocked = Vec::new();
        for row in client.query("SELECT key_sha256, serial, at FROM blocked_keys", &[]).map_err(backend)? {
            let hash: Vec<u8> = row.get(0);
            let serial: Vec<u8> = row.get(1);
            blocked.push(BlockedKey {
                key_sha256: <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| RegistryError::Corrupt { key: "blocked_keys".into(), detail: "bad hash".into() })?,
                serial: crate::migrate::serial_from(&serial, "blocked_keys.serial")?,
                at: row.get(2),
            });
        }
        let crl_number = client
            .query_opt("SELECT value FROM registry_counters WHERE name = 'crl_number'", &[])
            .map_err(backend)?
            .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
        let mut contents = crate::migrate::Contents { certificates, blocked, crl_number };
        contents.sort();
        Ok(contents)
    }

    /// A free connection (else the next in turn, once free), opened when it never was or broke.
    fn client(&self) -> Result<Conn<'_>, RegistryError> {
        let n = self.clients.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let free = (0..n).find_map(|i| self.clients[(start + i) % n].try_lock().ok());
        let mut guard = match free {
            Some(guard) => guard,
            None => self.clients[start % n].lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        // A connection unused for a while may have lost its server (a restart): asked first,
        // so a request does not fail on it.
        let usable = match guard.as_mut() {
            Some((client, used)) if !client.is_closed() => {
                used.elapsed() < IDLE_CHECK || client.is_valid(Duration::from_secs(2)).is_ok()
            }
            _ => false,
        };
        if !usable {
            *guard = Some((
                PgClient::new(self.config.connect(postgres::NoTls).map_err(backend)?),
                std::time::Instant::now(),
            ));
        }
        Ok(Conn(guard))
    }

    fn records(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<CertRecord>, RegistryError> {
        self.client()?.query(sql, params).map_err(backend)?.into_iter().map(|r| decode(r.get(0))).collect()
    }

    /// Reads `serial` under its row lock in `tx`.
    fn locked(tx: &mut PgTransaction<'_>, serial: &Serial) -> Result<CertRecord, RegistryError> {
        let row = tx
            .query_opt("SELECT doc FROM certificates WHERE serial = $1 FOR UPDATE", &[&serial.as_bytes().to_vec()])
            .map_err(backend)?
            .ok_or(RegistryError::NotFound(*serial))?;
        decode(row.get(0))
    }
}

impl Registry for PgRegistry {
    fn record_pending(&self, record: &CertRecord, request_id: Option<&[u8; 16]>) -> Result<(), RegistryError> {
        outside_runtime(|| {
            let mut client = self.client()?;
            let mut tx = client.transaction().map_err(backend)?;
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM certificates WHERE serial = $1 FOR UPDATE",
                    &[&record.serial.as_bytes().to_vec()],
                )
                .map_err(backend)?
                .is_some();
            if taken {
                return Err(RegistryError::SerialTaken(record.serial));
            }
            write(&mut tx, UPSERT, record, None, request_id)?;
            tx.commit().map_err(backend)
        })
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        outside_runtime(|| {
            let mut client = self.client()?;
            let mut tx = client.transaction().map_err(backend)?;
            let mut record = Self::locked(&mut tx, serial)?;
            if record.state != State::Pending {
                let status = record.status(OffsetDateTime::now_utc()).name();
                return Err(RegistryError::WrongState { serial: *serial, status });
            }
            record.state = State::Issued;
            write(&mut tx, UPSERT, &record, Some(der), None)?;
            tx.commit().map_err(backend)
        })
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_opt(
                    "SELECT doc, der FROM certificates WHERE request_id = $1 ORDER BY recorded_at DESC LIMIT 1",
                    &[&request_id.to_vec()],
                )
                .map_err(backend)?;
            row.map(|r| Ok((decode(r.get(0))?, r.get::<_, Option<Vec<u8>>>(1)))).transpose()
        })
    }

    fn record_certificate(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        outside_runtime(|| {
            let mut client = self.client()?;
            let mut tx = client.transaction().map_err(backend)?;
            // Reissues of one account, from any instance, one at a time.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&record.account]).map_err(backend)?;
            let serial = record.serial.as_bytes().to_vec();
            if let Some(row) = tx
                .query_opt("SELECT der FROM certificates WHERE serial = $1 FOR UPDATE", &[&serial])
                .map_err(backend)?
            {
                return match row.get::<_, Option<Vec<u8>>>(0) {
                    Some(existing) if existing == der => Ok(Vec::new()),
                    _ => Err(RegistryError::SerialTaken(record.serial)),
                };
            }
            let blocked = tx
                .query_opt("SELECT 1 FROM blocked_keys WHERE key_sha256 = $1", &[&record.key_sha256.to_vec()])
                .map_err(backend)?
                .is_some();
            if blocked {
                return Err(RegistryError::KeyBlocked);
            }
            let mut superseded = Vec::new();
            if supersede_others {
                let at = record.recorded_at;
                let rows = tx
                    .query(
                        "SELECT doc FROM certificates WHERE account = $1 AND state = 'issued' AND not_after > $2
                         ORDER BY serial FOR UPDATE",
                        &[&record.account, &at],
                    )
                    .map_err(backend)?;
                for row in rows {
                    let mut old = decode(row.get(0))?;
                    old.state = State::Revoked { at, reason: RevocationReason::Superseded };
                    write(&mut tx, UPSERT, &old, None, None)?;
                    superseded.push(old.serial);
                }
            }
            write(&mut tx, UPSERT, record, Some(der), None)?;
            tx.commit().map_err(backend)?;
            Ok(superseded)
        })
    }

    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_opt("SELECT doc FROM certificates WHERE serial = $1", &[&serial.as_bytes().to_vec()])
                .map_err(backend)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_opt("SELECT der FROM certificates WHERE serial = $1", &[&serial.as_bytes().to_vec()])
                .map_err(backend)?;
            Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })
    }

    fn all(&self) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| self.records("SELECT doc FROM certificates ORDER BY serial", &[]))
    }

    fn by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| self.records("SELECT doc FROM certificates WHERE account = $1 ORDER BY serial", &[&account]))
    }

    fn valid_by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| {
            self.records(
                "SELECT doc FROM certificates WHERE account = $1 AND state = 'issued' ORDER BY serial",
                &[&account],
            )
        })
    }

    fn by_key(&self, key_sha256: &[u8; 32]) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| {
            self.records("SELECT doc FROM certificates WHERE key_sha256 = $1 ORDER BY serial", &[&key_sha256.to_vec()])
        })
    }

    fn by_key_for_others(&self, key_sha256: &[u8; 32], account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| {
            self.records(
                "SELECT doc FROM certificates WHERE key_sha256 = $1 AND account <> $2 ORDER BY serial",
                &[&key_sha256.to_vec(), &account],
            )
        })
    }

    fn expiring_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<CertRecord>, RegistryError> {
        outside_runtime(|| {
            self.records(
                "SELECT doc FROM certificates WHERE not_after >= $1 AND not_after <= $2 ORDER BY not_after, serial",
                &[&from, &to],
            )
        })
    }

    fn expiring_first(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
        keep: &dyn Fn(&CertRecord) -> bool,
    ) -> Result<Vec<CertRecord>, RegistryError> {
        // Pages in (not_after, serial) order from the expiry index, until `limit` are kept.
        let page = i64::try_from(limit.clamp(100, 10_000)).unwrap_or(10_000);
        outside_runtime(|| {
            let mut kept = Vec::new();
            let mut after: Option<(OffsetDateTime, Vec<u8>)> = None;
            while kept.len() < limit {
                let records = match &after {
                    None => self.records(
                        "SELECT doc FROM certificates WHERE not_after >= $1 AND not_after <= $2
                         ORDER BY not_after, serial LIMIT $3",
                        &[&from, &to, &page],
                    )?,
                    Some((not_after, serial)) => self.records(
                        "SELECT doc FROM certificates WHERE (not_after, serial) > ($1, $2) AND not_after <= $3
                         ORDER BY not_after, serial LIMIT $4",
                        &[not_after, serial, &to, &page],
                    )?,
                };
                let Some(last) = records.last() else { break };
                after = Some((last.not_after, last.serial.as_bytes().to_vec()));
                let full = records.len() as i64 == page;
                kept.extend(records.into_iter().filter(|r| keep(r)));
                if !full {
                    break;
                }
            }
            kept.truncate(limit);
            Ok(kept)
        })
    }

    fn revoke(
        &self,
        serial: &Serial,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<CertRecord, RegistryError> {
        outside_runtime(|| {
            let mut client = self.client()?;
            let mut tx = client.transaction().map_err(backend)?;
            let mut record = Self::locked(&mut tx, serial)?;
            if record.state != State::Issued {
                return Err(RegistryError::WrongState { serial: *serial, status: record.status(at).name() });
            }
            record.state = State::Revoked { at, reason };
            write(&mut tx, UPSERT, &record, None, None)?;
            tx.commit().map_err(backend)?;
            Ok(record)
        })
    }

    fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<RevokedEntry>, RegistryError> {
        outside_runtime(|| {
            entries(self.records(
                "SELECT doc FROM certificates WHERE revoked_at IS NOT NULL AND not_after >= $1 ORDER BY serial",
                &[&now],
            )?)
        })
    }

    fn revoked_unexpired_by(&self, now: OffsetDateTime, issuer: u16) -> Result<Vec<RevokedEntry>, RegistryError> {
        outside_runtime(|| {
            entries(self.records(
                "SELECT doc FROM certificates WHERE revoked_at IS NOT NULL AND not_after >= $1 AND issuer = $2
                 ORDER BY serial",
                &[&now, &i32::from(issuer)],
            )?)
        })
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_one(
                    "INSERT INTO registry_counters (name, value) VALUES ('crl_number', 1)
                     ON CONFLICT (name) DO UPDATE SET value = registry_counters.value + 1 RETURNING value",
                    &[],
                )
                .map_err(backend)?;
            u64::try_from(row.get::<_, i64>(0)).map_err(backend)
        })
    }

    /// One pass over the table, grouped in the database: about a second per few million rows
    /// (PostgreSQL keeps no counts; a shared registry's counters would be a row every issuance
    /// of every instance waits on).
    fn count_by_status(&self, now: OffsetDateTime) -> Result<pki::registry::StatusCounts, RegistryError> {
        outside_runtime(|| {
            let rows = self
                .client()?
                .query(
                    "SELECT state, state = 'issued' AND not_after < $1, count(*) FROM certificates GROUP BY 1, 2",
                    &[&now],
                )
                .map_err(backend)?;
            let mut counts = pki::registry::StatusCounts::default();
            for row in rows {
                let (state, expired, n): (String, bool, i64) = (row.get(0), row.get(1), row.get(2));
                let n = u64::try_from(n).map_err(backend)?;
                match (state.as_str(), expired) {
                    ("issued", true) => counts.expired += n,
                    ("issued", false) => counts.valid += n,
                    ("pending", _) => counts.pending += n,
                    ("revoked", _) => counts.revoked += n,
                    ("superseded", _) => counts.superseded += n,
                    (other, _) => {
                        return Err(RegistryError::Corrupt {
                            key: "certificates.state".into(),
                            detail: format!("unknown state {other:?}"),
                        });
                    }
                }
            }
            Ok(counts)
        })
    }

    fn count_valid_expiring(&self, now: OffsetDateTime, until: OffsetDateTime) -> Result<u64, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_one(
                    "SELECT count(*) FROM certificates WHERE not_after >= $1 AND not_after <= $2 AND state = 'issued'",
                    &[&now, &until],
                )
                .map_err(backend)?;
            u64::try_from(row.get::<_, i64>(0)).map_err(backend)
        })
    }

    fn ledger_cursor(&self) -> Result<u64, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_opt("SELECT value FROM registry_counters WHERE name = 'ledger_cursor'", &[])
                .map_err(backend)?;
            row.map_or(Ok(0), |row| u64::try_from(row.get::<_, i64>(0)).map_err(backend))
        })
    }

    /// Several instances may move it: one going back a little only makes the next catch-up
    /// check more of the ledger.
    fn set_ledger_cursor(&self, at: u64) -> Result<(), RegistryError> {
        let at = i64::try_from(at).map_err(backend)?;
        outside_runtime(|| {
            self.client()?
                .execute(
                    "INSERT INTO registry_counters (name, value) VALUES ('ledger_cursor', $1)
                     ON CONFLICT (name) DO UPDATE SET value = $1",
                    &[&at],
                )
                .map_err(backend)?;
            Ok(())
        })
    }

    fn block_key(&self, key_sha256: &[u8; 32], serial: &Serial, at: OffsetDateTime) -> Result<bool, RegistryError> {
        outside_runtime(|| {
            let n = self
                .client()?
                .execute(
                    "INSERT INTO blocked_keys (key_sha256, serial, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&key_sha256.to_vec(), &serial.as_bytes().to_vec(), &at],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
    }

    fn revoked_since(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Option<pki::registry::Revocations>, RegistryError> {
        outside_runtime(|| {
            let mut client = self.client()?;
            let now: OffsetDateTime = client.query_one("SELECT clock_timestamp()", &[]).map_err(backend)?.get(0);
            let Some(since) = since else { return Ok(Some((now, Vec::new()))) };
            let rows = client
                .query(
                    "SELECT serial, changed_at FROM certificates WHERE revoked_at IS NOT NULL AND changed_at > $1",
                    &[&since],
                )
                .map_err(backend)?;
            let mut found = Vec::with_capacity(rows.len());
            for row in rows {
                let serial: Vec<u8> = row.get(0);
                found.push((crate::migrate::serial_from(&serial, "certificates.serial")?, row.get(1)));
            }
            Ok(Some((now, found)))
        })
    }

    fn blocked_key(&self, key_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, RegistryError> {
        outside_runtime(|| {
            let row = self
                .client()?
                .query_opt("SELECT serial, at FROM blocked_keys WHERE key_sha256 = $1", &[&key_sha256.to_vec()])
                .map_err(backend)?;
            row.map(|r| {
                let serial = Serial::from_bytes(&r.get::<_, Vec<u8>>(0)).ok_or_else(|| RegistryError::Corrupt {
                    key: "blocked_keys.serial".into(),
                    detail: "not a serial".into(),
                })?;
                Ok(BlockedKey { key_sha256: *key_sha256, serial, at: r.get(1) })
            })
            .transpose()
        })
    }
}

fn entries(records: Vec<CertRecord>) -> Result<Vec<RevokedEntry>, RegistryError> {
    Ok(records
        .into_iter()
        .filter_map(|r| match r.state {
            State::Revoked { at, reason } => Some(RevokedEntry { serial: r.serial, revoked_at: at, reason }),
            _ => None,
        })
        .collect())
}
