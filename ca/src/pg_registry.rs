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

/// The schema version of the registry's tables.
pub const REGISTRY_SCHEMA: i32 = 1;

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
";

fn backend(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Backend(format!("PostgreSQL: {e}"))
}

/// The registry on one PostgreSQL database (a single connection shared under a lock: the
/// registry's writes are short and serial per instance).
pub struct PgRegistry {
    client: Mutex<postgres::Client>,
    config: postgres::Config,
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

/// Inserts or replaces the row of `record` (the DER only when given).
fn write(
    tx: &mut impl postgres::GenericClient,
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
        "INSERT INTO certificates (serial, serial_hex, account, state, profile, not_before, not_after, recorded_at,
             key_sha256, revoked_at, reason, issuer, request_id, der, doc)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (serial) DO UPDATE SET state = $4, revoked_at = $10, reason = $11,
             der = COALESCE($14, certificates.der), doc = $15",
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
    /// Connects and brings the registry's tables to [`REGISTRY_SCHEMA`] (a newer one is refused).
    pub fn connect(url: &str, password: Option<&str>) -> Result<Self, RegistryError> {
        let mut config: postgres::Config = url.parse().map_err(|e| backend(format!("[storage] url: {e}")))?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(5));
        let mut client = config.connect(postgres::NoTls).map_err(backend)?;
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock(7312002)", &[]).map_err(backend)?;
        tx.batch_execute(SCHEMA).map_err(backend)?;
        let found: Option<i32> = tx.query_one("SELECT max(version) FROM registry_schema", &[]).map_err(backend)?.get(0);
        match found {
            Some(v) if v > REGISTRY_SCHEMA => {
                return Err(backend(format!(
                    "the registry's schema is version {v}, newer than this inkan's ({REGISTRY_SCHEMA}): upgrade inkan"
                )));
            }
            Some(_) => {}
            None => {
                tx.execute("INSERT INTO registry_schema (version) VALUES ($1)", &[&REGISTRY_SCHEMA])
                    .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)?;
        Ok(Self { client: Mutex::new(client), config })
    }

    /// The connection, opened again when the last one broke.
    fn client(&self) -> Result<std::sync::MutexGuard<'_, postgres::Client>, RegistryError> {
        let mut guard = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_closed() {
            *guard = self.config.connect(postgres::NoTls).map_err(backend)?;
        }
        Ok(guard)
    }

    fn records(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<CertRecord>, RegistryError> {
        self.client()?.query(sql, params).map_err(backend)?.into_iter().map(|r| decode(r.get(0))).collect()
    }

    /// Reads `serial` under its row lock in `tx`.
    fn locked(tx: &mut postgres::Transaction<'_>, serial: &Serial) -> Result<CertRecord, RegistryError> {
        let row = tx
            .query_opt("SELECT doc FROM certificates WHERE serial = $1 FOR UPDATE", &[&serial.as_bytes().to_vec()])
            .map_err(backend)?
            .ok_or(RegistryError::NotFound(*serial))?;
        decode(row.get(0))
    }
}

impl Registry for PgRegistry {
    fn record_pending(&self, record: &CertRecord, request_id: Option<&[u8; 16]>) -> Result<(), RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        let taken = tx
            .query_opt("SELECT 1 FROM certificates WHERE serial = $1 FOR UPDATE", &[&record.serial.as_bytes().to_vec()])
            .map_err(backend)?
            .is_some();
        if taken {
            return Err(RegistryError::SerialTaken(record.serial));
        }
        write(&mut tx, record, None, request_id)?;
        tx.commit().map_err(backend)
    }

    fn record_issued(&self, serial: &Serial, der: &[u8]) -> Result<(), RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        let mut record = Self::locked(&mut tx, serial)?;
        if record.state != State::Pending {
            let status = record.status(OffsetDateTime::now_utc()).name();
            return Err(RegistryError::WrongState { serial: *serial, status });
        }
        record.state = State::Issued;
        write(&mut tx, &record, Some(der), None)?;
        tx.commit().map_err(backend)
    }

    fn find_request(&self, request_id: &[u8; 16]) -> Result<Option<RequestAnswer>, RegistryError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT doc, der FROM certificates WHERE request_id = $1 ORDER BY recorded_at DESC LIMIT 1",
                &[&request_id.to_vec()],
            )
            .map_err(backend)?;
        row.map(|r| Ok((decode(r.get(0))?, r.get::<_, Option<Vec<u8>>>(1)))).transpose()
    }

    fn record_certificate(
        &self,
        record: &CertRecord,
        der: &[u8],
        supersede_others: bool,
    ) -> Result<Vec<Serial>, RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        // Reissues of one account, from any instance, one at a time.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&record.account]).map_err(backend)?;
        let serial = record.serial.as_bytes().to_vec();
        if let Some(row) =
            tx.query_opt("SELECT der FROM certificates WHERE serial = $1 FOR UPDATE", &[&serial]).map_err(backend)?
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
                write(&mut tx, &old, None, None)?;
                superseded.push(old.serial);
            }
        }
        write(&mut tx, record, Some(der), None)?;
        tx.commit().map_err(backend)?;
        Ok(superseded)
    }

    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, RegistryError> {
        let row = self
            .client()?
            .query_opt("SELECT doc FROM certificates WHERE serial = $1", &[&serial.as_bytes().to_vec()])
            .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    fn certificate_der(&self, serial: &Serial) -> Result<Option<Vec<u8>>, RegistryError> {
        let row = self
            .client()?
            .query_opt("SELECT der FROM certificates WHERE serial = $1", &[&serial.as_bytes().to_vec()])
            .map_err(backend)?;
        Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    fn all(&self) -> Result<Vec<CertRecord>, RegistryError> {
        self.records("SELECT doc FROM certificates ORDER BY serial", &[])
    }

    fn by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        self.records("SELECT doc FROM certificates WHERE account = $1 ORDER BY serial", &[&account])
    }

    fn valid_by_account(&self, account: &str) -> Result<Vec<CertRecord>, RegistryError> {
        self.records(
            "SELECT doc FROM certificates WHERE account = $1 AND state = 'issued' ORDER BY serial",
            &[&account],
        )
    }

    fn by_key(&self, key_sha256: &[u8; 32]) -> Result<Vec<CertRecord>, RegistryError> {
        self.records("SELECT doc FROM certificates WHERE key_sha256 = $1 ORDER BY serial", &[&key_sha256.to_vec()])
    }

    fn expiring_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<CertRecord>, RegistryError> {
        self.records(
            "SELECT doc FROM certificates WHERE not_after >= $1 AND not_after <= $2 ORDER BY not_after, serial",
            &[&from, &to],
        )
    }

    fn revoke(
        &self,
        serial: &Serial,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<CertRecord, RegistryError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        let mut record = Self::locked(&mut tx, serial)?;
        if record.state != State::Issued {
            return Err(RegistryError::WrongState { serial: *serial, status: record.status(at).name() });
        }
        record.state = State::Revoked { at, reason };
        write(&mut tx, &record, None, None)?;
        tx.commit().map_err(backend)?;
        Ok(record)
    }

    fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<RevokedEntry>, RegistryError> {
        entries(self.records(
            "SELECT doc FROM certificates WHERE revoked_at IS NOT NULL AND not_after >= $1 ORDER BY serial",
            &[&now],
        )?)
    }

    fn revoked_unexpired_by(&self, now: OffsetDateTime, issuer: u16) -> Result<Vec<RevokedEntry>, RegistryError> {
        entries(self.records(
            "SELECT doc FROM certificates WHERE revoked_at IS NOT NULL AND not_after >= $1 AND issuer = $2
             ORDER BY serial",
            &[&now, &i32::from(issuer)],
        )?)
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        let row = self
            .client()?
            .query_one(
                "INSERT INTO registry_counters (name, value) VALUES ('crl_number', 1)
                 ON CONFLICT (name) DO UPDATE SET value = registry_counters.value + 1 RETURNING value",
                &[],
            )
            .map_err(backend)?;
        u64::try_from(row.get::<_, i64>(0)).map_err(backend)
    }

    fn block_key(&self, key_sha256: &[u8; 32], serial: &Serial, at: OffsetDateTime) -> Result<bool, RegistryError> {
        let n = self
            .client()?
            .execute(
                "INSERT INTO blocked_keys (key_sha256, serial, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&key_sha256.to_vec(), &serial.as_bytes().to_vec(), &at],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn blocked_key(&self, key_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, RegistryError> {
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
