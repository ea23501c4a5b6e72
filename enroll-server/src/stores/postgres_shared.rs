//! The lease and the shared publications on PostgreSQL. A lease is a row with an expiry, taken
//! or renewed by one conditional upsert, so it works through any connection pooler (a session
//! advisory lock would not) and lapses by itself when its holder dies.

use std::time::Duration;

use time::OffsetDateTime;

use super::StoreError;
use super::postgres::{PgStores, err, outside_runtime};
use super::shared::LeaseStore;

impl LeaseStore for PgStores {
    fn hold(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        outside_runtime(|| {
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            // The database's clock decides, so the instances' clocks need not agree.
            let row = self
                .conn()?
                .query_opt(
                    "INSERT INTO leases (name, holder, expires_at)
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::bigint / 1000.0))
                     ON CONFLICT (name) DO UPDATE SET holder = $2, expires_at = EXCLUDED.expires_at
                     WHERE leases.holder = $2 OR leases.expires_at < clock_timestamp()
                     RETURNING holder",
                    &[&name, &holder, &ms],
                )
                .map_err(err)?;
            Ok(row.is_some())
        })
    }

    fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        outside_runtime(|| {
            self.conn()?
                .execute("DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder])
                .map_err(err)?;
            Ok(())
        })
    }

    fn publications_since(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Option<Vec<(String, Vec<u8>, OffsetDateTime)>>, StoreError> {
        outside_runtime(|| {
            let since = since.unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let rows = self
                .conn()?
                .query(
                    "SELECT name, der, published_at FROM publications WHERE published_at > $1 ORDER BY published_at",
                    &[&since],
                )
                .map_err(err)?;
            Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()))
        })
    }

    fn publish(&self, name: &str, der: &[u8]) -> Result<(), StoreError> {
        outside_runtime(|| {
            self.conn()?
                .execute(
                    "INSERT INTO publications (name, der, published_at) VALUES ($1, $2, clock_timestamp())
                     ON CONFLICT (name) DO UPDATE SET der = $2, published_at = clock_timestamp()",
                    &[&name, &der],
                )
                .map_err(err)?;
            Ok(())
        })
    }
}
