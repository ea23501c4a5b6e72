//! Which instance does the background duties (CRL signing, expiry notices, mail, purging):
//! the holder of the `duties` lease ([`crate::stores::shared::LeaseStore`]). The lease lives
//! [`TTL`] and is renewed every [`RENEW`]; when its holder dies, another instance takes it
//! within TTL + RENEW. An embedded service always holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::stores::shared::LeaseStore;

/// How long a taken lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// How often the holder renews it (and the others try to take it).
pub const RENEW: Duration = Duration::from_secs(3);
const LEASE: &str = "duties";

/// This instance's part in the lease.
pub struct Duty {
    store: Arc<dyn LeaseStore>,
    holder: String,
    held: AtomicBool,
}

impl std::fmt::Debug for Duty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duty").field("holder", &self.holder).field("held", &self.held()).finish()
    }
}

impl Duty {
    /// This process, as a holder of the leases in `store`.
    pub fn new(store: Arc<dyn LeaseStore>) -> Self {
        let holder = format!("pid {} / {}", std::process::id(), &crate::tokens::random_token()[..12]);
        // Known at once: an embedded service holds it from the start.
        let held = store.hold(LEASE, &holder, TTL).unwrap_or(false);
        if held {
            tracing::info!(%holder, "this instance does the background duties");
        } else {
            tracing::info!(%holder, "another instance does the background duties");
        }
        Self { store, holder, held: AtomicBool::new(held) }
    }

    /// Whether this instance does the duties now.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// The store the lease and the shared publications are in.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    fn renew(&self) {
        let now = match self.store.hold(LEASE, &self.holder, TTL) {
            Ok(held) => held,
            Err(e) => {
                // Unconfirmed is not held: better no instance for a moment than two.
                tracing::warn!(error = %e, "renewing the duties lease");
                false
            }
        };
        let before = self.held.swap(now, Ordering::AcqRel);
        if now != before {
            if now {
                tracing::info!(holder = %self.holder, "this instance now does the background duties");
            } else {
                tracing::info!(holder = %self.holder, "another instance does the background duties now");
            }
        }
    }
}

/// Renews (or tries to take) the lease every [`RENEW`] until `stop`, then gives it up.
pub async fn keeper(duty: Arc<Duty>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let d = duty.clone();
        let _ = tokio::task::spawn_blocking(move || d.renew()).await;
    }
    if duty.held.swap(false, Ordering::AcqRel) {
        let d = duty.clone();
        let _ = tokio::task::spawn_blocking(move || d.store.release(LEASE, &d.holder)).await;
    }
}
