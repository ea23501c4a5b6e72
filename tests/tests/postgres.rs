//! The stores and the registry against a real PostgreSQL (a throwaway PostgreSQL 15 cluster
//! each test starts and stops): the same conformance suites as sled. Each suite gets a
//! database of its own; "reopening" a store is connecting again.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;

use ca::pg_registry::PgRegistry;
use enroll_server::stores::conformance;
use enroll_server::stores::postgres::PgStores;
use inkan_tests::postgres::{BIN, Cluster, ok};

#[test]
fn postgres_passes_the_store_conformance_suite() {
    let cluster = Cluster::start();
    let open = |url: &str| Arc::new(PgStores::connect(url, None, 8).unwrap());
    let url = cluster.database("accounts");
    conformance::accounts(&|| open(&url));
    let url = cluster.database("notices");
    conformance::notices(&|| open(&url));
    let url = cluster.database("otp");
    conformance::otp(&|| open(&url));
    let url = cluster.database("outbox");
    conformance::outbox(&|| open(&url));
    let url = cluster.database("oauth");
    conformance::oauth(&|| open(&url));
    let url = cluster.database("sessions");
    conformance::sessions(&|| open(&url));
}

#[test]
fn a_newer_schema_is_refused_and_the_password_never_shows() {
    let cluster = Cluster::start();
    let url = cluster.database("schema");
    let stores = PgStores::connect(&url, Some("not-a-real-password-4711"), 2).unwrap();
    assert!(!format!("{stores:?}").contains("4711"), "Debug shows no password");
    drop(stores);
    ok(Command::new(format!("{BIN}/psql"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "inkan", "-d", "schema", "-c"])
        .arg("UPDATE inkan_schema SET version = 99"));
    let refused = PgStores::connect(&url, None, 2).unwrap_err().to_string();
    assert!(refused.contains("version 99") && refused.contains("upgrade inkan"), "{refused}");
}

#[test]
fn the_registry_on_postgres_passes_the_registry_conformance_suite() {
    let cluster = Cluster::start();
    let url = cluster.database("registry");
    let open = || -> Box<dyn pki::registry::Registry> { Box::new(PgRegistry::connect(&url, None, 4).unwrap()) };
    pki::registry::conformance::registry(&open, time::OffsetDateTime::now_utc());
    // One row per certificate, queryable with SQL by another team.
    let out = ok(Command::new(format!("{BIN}/psql"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "inkan", "-d", "registry", "-At", "-c"])
        .arg("SELECT count(*), count(DISTINCT serial) FROM certificates"));
    let (rows, serials) = out.trim().split_once('|').unwrap();
    assert_eq!(rows, serials, "one row per serial");
    assert!(rows.parse::<u32>().unwrap() > 0, "the suite's certificates are rows: {out}");
}

/// The statements `client`'s session holds prepared, from PostgreSQL's own view: how many
/// have the text `sql`.
fn prepared(client: &mut ca::pg_client::PgClient, sql: &str) -> i64 {
    let listed = client.query("SELECT statement FROM pg_prepared_statements", &[]).unwrap();
    listed.iter().filter(|row| row.get::<_, String>(0) == sql).count() as i64
}

#[test]
fn a_connection_prepares_each_statement_once_and_again_when_the_server_lost_it() {
    let cluster = Cluster::start();
    let url = cluster.database("prepared");
    let mut client = ca::pg_client::PgClient::new(postgres::Client::connect(&url, postgres::NoTls).unwrap());
    let add = "SELECT $1::int + 1";
    assert_eq!(prepared(&mut client, add), 0);
    for n in 0..3 {
        assert_eq!(client.query_one(add, &[&n]).unwrap().get::<_, i32>(0), n + 1);
    }
    assert_eq!(prepared(&mut client, add), 1, "three runs, one statement prepared");
    // A transaction uses the connection's statements, and what it prepares outlives it, also
    // when it is rolled back.
    let count = "SELECT count(*) FROM pg_class WHERE relname = $1";
    let mut tx = client.transaction().unwrap();
    assert_eq!(tx.query_one(add, &[&41]).unwrap().get::<_, i32>(0), 42);
    assert_eq!(tx.query_one(count, &[&"pg_class"]).unwrap().get::<_, i64>(0), 1);
    tx.rollback().unwrap();
    assert_eq!(prepared(&mut client, add), 1, "the transaction ran the prepared statement");
    assert_eq!(prepared(&mut client, count), 1, "prepared in a rolled-back transaction, kept");
    assert_eq!(client.query_one(count, &[&"pg_type"]).unwrap().get::<_, i64>(0), 1);

    // A table that changes under a prepared statement: PostgreSQL refuses the statement once
    // ("cached plan must not change result type"); the next run prepares it again.
    client.batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)").unwrap();
    let all = "SELECT * FROM t";
    assert_eq!(client.query(all, &[]).unwrap()[0].len(), 1);
    client.batch_execute("ALTER TABLE t ADD COLUMN b int DEFAULT 2").unwrap();
    let refused = client.query(all, &[]).unwrap_err();
    assert_eq!(refused.code(), Some(&postgres::error::SqlState::FEATURE_NOT_SUPPORTED), "{refused}");
    let rows = client.query(all, &[]).unwrap();
    assert_eq!((rows[0].len(), rows[0].get::<_, i32>(1)), (2, 2), "prepared again with the new column");
    assert_eq!(prepared(&mut client, all), 1, "the old statement was let go");

    // A statement the server no longer holds (as behind a pooler that does not carry them):
    // refused once, then prepared again.
    client.batch_execute("DEALLOCATE ALL").unwrap();
    let gone = client.query_one(add, &[&1]).unwrap_err();
    assert_eq!(gone.code(), Some(&postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME), "{gone}");
    assert_eq!(client.query_one(add, &[&1]).unwrap().get::<_, i32>(0), 2);
}
