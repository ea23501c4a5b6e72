//! `[storage]`: opening the registry and the web stores of a data directory, on sled (embedded,
//! one process) or PostgreSQL (any number of processes, so the CLI opens the database itself
//! even while `serve` runs). The database password comes from INKAN_DATABASE_PASSWORD, else
//! `[storage] password_file`, else the URL; it is never logged or shown.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ca::SledStore;
use ca::layout::DataDir;
use ca::pg_registry::PgRegistry;
use enroll_server::stores::WebStores;
use enroll_server::stores::postgres::PgStores;
use enroll_server::stores::sled::SledStores;
use zeroize::Zeroizing;

use crate::config::{Config, StorageSection};

/// A store that would not open, explained for the one failure operators will meet: another
/// process has it.
pub fn in_use(text: String, path: &Path) -> anyhow::Error {
    if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily unavailable") {
        anyhow::anyhow!("{} is in use by another inkan process", path.display())
    } else {
        anyhow::anyhow!(text)
    }
}

/// The variable the database password may come from.
pub const PASSWORD_VARIABLE: &str = "INKAN_DATABASE_PASSWORD";

/// The opened stores.
pub enum Stores {
    /// In the data directory.
    Sled {
        /// The registry.
        registry: Arc<SledStore>,
        /// The web stores' database.
        web: SledStores,
    },
    /// In one PostgreSQL database.
    Postgres {
        /// The registry.
        registry: Arc<PgRegistry>,
        /// The web stores.
        web: Arc<PgStores>,
    },
}

impl Stores {
    /// The registry.
    pub fn registry(&self) -> Arc<dyn ca::Registry> {
        match self {
            Self::Sled { registry, .. } => registry.clone(),
            Self::Postgres { registry, .. } => registry.clone(),
        }
    }

    /// Every web store.
    pub fn web(&self) -> anyhow::Result<WebStores> {
        Ok(match self {
            Self::Sled { web, .. } => web.web_stores()?,
            Self::Postgres { web, .. } => web.web_stores(),
        })
    }
}

/// The database password: INKAN_DATABASE_PASSWORD, else the password file, else none (the
/// URL's, if it has one).
pub fn password(storage: &StorageSection) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(value) = std::env::var_os(PASSWORD_VARIABLE) {
        let value = value.into_string().map_err(|_| anyhow::anyhow!("{PASSWORD_VARIABLE} is not UTF-8"))?;
        return Ok(Some(Zeroizing::new(value)));
    }
    let Some(path) = &storage.password_file else { return Ok(None) };
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading [storage] password_file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        anyhow::bail!("[storage] password_file {} is empty", path.display());
    }
    Ok(Some(Zeroizing::new(line.to_owned())))
}

/// Connects to the PostgreSQL `url` (the registry and the web stores), bringing the schema up
/// to date.
pub fn connect(url: &str, password: Option<&str>, max_connections: usize) -> anyhow::Result<Stores> {
    let web = PgStores::connect(url, password, max_connections).context("the PostgreSQL stores")?;
    let registry = PgRegistry::connect(url, password, max_connections).context("the PostgreSQL registry")?;
    Ok(Stores::Postgres { registry: Arc::new(registry), web: Arc::new(web) })
}

/// Opens the stores `config` names. `durability` applies to sled (PostgreSQL always commits
/// before it answers).
pub fn open(dir: &DataDir, config: &Config, durability: ca::sled_store::Durability) -> anyhow::Result<Stores> {
    let storage = &config.storage;
    if storage.is_postgres() {
        let url = storage.url.as_deref().context("[storage] url")?;
        let password = password(storage)?;
        return connect(url, password.as_ref().map(|p| p.as_str()), storage.max_connections);
    }
    let registry = SledStore::open_with(&dir.db(), durability).map_err(|e| in_use(e.to_string(), &dir.db()))?;
    let web = SledStores::open(&dir.web()).map_err(|e| in_use(e.to_string(), &dir.web()))?;
    Ok(Stores::Sled { registry: Arc::new(registry), web })
}
