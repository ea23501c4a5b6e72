//! A PostgreSQL connection that keeps its statements prepared: the first run of a statement's
//! text on a connection prepares it (one Parse round trip), every later run binds and executes
//! the prepared statement, and PostgreSQL may keep its plan. Without it the client had every
//! statement parsed and planned afresh, two round trips each, and an issuance runs about 25.
//!
//! The registry's pool ([`crate::pg_registry`]) holds these instead of bare clients. A
//! statement lives as long as its connection: a broken connection is dropped with its
//! statements, and a new one prepares them again.
//!
//! Behind a pooler in transaction mode, statements prepared on one server connection must be
//! usable on the others: PgBouncer does that from 1.21 on (`max_prepared_statements`). The
//! client prepared a named statement for every run before too, so this asks nothing new.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Error, GenericClient, Row, Statement};

/// A connection stops keeping statements past this many texts and starts afresh. They are
/// built from a fixed set of tables and queries: a guard, not a size to tune.
const MAX_KEPT: usize = 512;

/// The statements prepared on one connection, by their text.
#[derive(Default)]
pub struct Kept(HashMap<String, Statement>);

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} prepared statements", self.0.len())
    }
}

/// A connection (or a transaction on one) with the statements it keeps prepared: see
/// [`PgClient`] and [`PgTransaction`].
#[derive(Debug)]
pub struct Prepared<C, K> {
    inner: C,
    kept: K,
}

/// A connection and its prepared statements.
pub type PgClient = Prepared<postgres::Client, Kept>;

/// A transaction on a [`PgClient`], preparing into the connection's statements (prepared
/// statements outlive the transaction, whether it commits or not).
pub type PgTransaction<'a> = Prepared<postgres::Transaction<'a>, &'a mut Kept>;

impl<C: GenericClient, K: BorrowMut<Kept>> Prepared<C, K> {
    /// Runs `sql` with `run`, prepared the first time this connection sees its text.
    fn with<T>(&mut self, sql: &str, run: impl FnOnce(&mut C, &Statement) -> Result<T, Error>) -> Result<T, Error> {
        let kept = self.kept.borrow_mut();
        let statement = match kept.0.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = self.inner.prepare(sql)?;
                if kept.0.len() >= MAX_KEPT {
                    kept.0.clear();
                }
                kept.0.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        let result = run(&mut self.inner, &statement);
        // A statement whose table changed under it ("cached plan must not change result
        // type"), or that the server no longer holds (a pooler that does not carry prepared
        // statements between its connections), is prepared again at its next run.
        if let Err(e) = &result
            && [postgres::error::SqlState::FEATURE_NOT_SUPPORTED, postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME]
                .iter()
                .any(|code| e.code() == Some(code))
        {
            kept.0.remove(sql);
        }
        result
    }

    /// The rows of `sql`.
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        self.with(sql, |c, s| c.query(s, params))
    }

    /// The one row of `sql`, or none; more than one is an error.
    pub fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error> {
        self.with(sql, |c, s| c.query_opt(s, params))
    }

    /// The one row of `sql`; none or more is an error.
    pub fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        self.with(sql, |c, s| c.query_one(s, params))
    }

    /// Runs `sql`; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        self.with(sql, |c, s| c.execute(s, params))
    }

    /// Runs statements without parameters, as they are (the simple query protocol: nothing
    /// is prepared).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.inner.batch_execute(sql)
    }
}

impl PgClient {
    /// A connection that has prepared nothing yet.
    pub fn new(client: postgres::Client) -> Self {
        Self { inner: client, kept: Kept::default() }
    }

    /// Begins a transaction.
    pub fn transaction(&mut self) -> Result<PgTransaction<'_>, Error> {
        Ok(Prepared { inner: self.inner.transaction()?, kept: &mut self.kept })
    }

    /// Whether the connection to the server was lost.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Whether the server answers within `timeout`.
    pub fn is_valid(&mut self, timeout: Duration) -> Result<(), Error> {
        self.inner.is_valid(timeout)
    }
}

impl PgTransaction<'_> {
    /// Commits the transaction.
    pub fn commit(self) -> Result<(), Error> {
        self.inner.commit()
    }

    /// Rolls the transaction back.
    pub fn rollback(self) -> Result<(), Error> {
        self.inner.rollback()
    }
}
