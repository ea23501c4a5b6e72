//! What instances over one database coordinate through it: the lease that picks the one
//! instance doing the background duties (CRL signing, expiry notices, mail, purging), and the
//! CRLs that instance signs, which the others serve. An embedded service is alone: [`Solo`]
//! always holds the lease and shares nothing.

use std::time::Duration;

use time::OffsetDateTime;

use super::StoreError;

/// Leases: one holder at a time, until it stops renewing.
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` (or renews it) for `ttl`, when it is free, lapsed or
    /// `holder`'s already; whether `holder` has it now.
    fn hold(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives lease `name` up, if `holder` has it.
    fn release(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Published files (CRLs) the lease holder shares, newer than `since`: (name, DER, when).
    /// `None`: nothing is shared (one instance).
    #[allow(clippy::type_complexity)]
    fn publications_since(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Option<Vec<(String, Vec<u8>, OffsetDateTime)>>, StoreError>;

    /// Shares a published file with the other instances.
    fn publish(&self, name: &str, der: &[u8]) -> Result<(), StoreError>;
}

/// The only instance: it always holds every lease and shares nothing.
#[derive(Debug, Default)]
pub struct Solo;

impl LeaseStore for Solo {
    fn hold(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn release(&self, _name: &str, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn publications_since(
        &self,
        _since: Option<OffsetDateTime>,
    ) -> Result<Option<Vec<(String, Vec<u8>, OffsetDateTime)>>, StoreError> {
        Ok(None)
    }

    fn publish(&self, _name: &str, _der: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
}
