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
