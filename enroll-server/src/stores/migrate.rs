//! Moving the web stores from sled to PostgreSQL (`inkan storage migrate`): every sled tree
//! becomes the rows of the table of the same name, its keys and documents as the PostgreSQL
//! stores write them; both sides are then read back as [`Table`]s and compared by digest.

use serde_json::Value;

use super::StoreError;
use super::postgres::{PgStores, TABLES, err};
use super::sled::SledStores;

/// One store's rows: key → document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The table (and sled tree) name.
    pub name: &'static str,
    /// Its rows, by key.
    pub rows: Vec<(String, Value)>,
}

impl Table {
    /// SHA-256 (hex) over the rows in key order, each document in its canonical JSON (sorted
    /// object keys).
    pub fn digest(&self) -> String {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (key, doc) in rows {
            let doc = doc.to_string();
            for part in [key.as_bytes(), doc.as_bytes()] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
        }
        pki::encoding::hex(ctx.finish().as_ref())
    }
}

/// Every store this build keeps, counters last.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLES.iter().copied().chain(std::iter::once("counters"))
}

fn corrupt(tree: &str, what: &str) -> StoreError {
    StoreError(format!("sled tree {tree}: {what}"))
}

fn utf8(tree: &str, key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec()).map_err(|_| corrupt(tree, "a key is not UTF-8"))
}

fn be_number(tree: &str, value: &[u8]) -> Result<Value, StoreError> {
    match value.len() {
        4 => Ok(Value::from(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))),
        8 => Ok(Value::from(u64::from_be_bytes(value.try_into().map_err(|_| corrupt(tree, "bad number"))?))),
        _ => Err(corrupt(tree, "a value is not a number")),
    }
}

/// Every store of a sled directory, as the PostgreSQL stores keep them.
pub fn sled_tables(stores: &SledStores) -> Result<Vec<Table>, StoreError> {
    let mut tables = Vec::new();
    for name in names() {
        let tree = stores.db().open_tree(name).map_err(StoreError::from_display)?;
        let mut rows = Vec::with_capacity(tree.len());
        for item in tree.iter() {
            let (k, v) = item.map_err(StoreError::from_display)?;
            let row = match name {
                "enroll_tokens" | "oauth_codes" | "oauth_tokens" => (pki::encoding::hex(&k), json(name, &v)?),
                "notices" => {
                    let serial = pki::Serial::from_bytes(&k).ok_or_else(|| corrupt(name, "a key is not a serial"))?;
                    (serial.to_string(), be_number(name, &v)?)
                }
                "counters" => (utf8(name, &k)?, be_number(name, &v)?),
                _ => (utf8(name, &k)?, json(name, &v)?),
            };
            rows.push(row);
        }
        tables.push(Table { name, rows });
    }
    Ok(tables)
}

fn json(tree: &str, value: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(value).map_err(|e| corrupt(tree, &format!("a document does not read: {e}")))
}

impl PgStores {
    /// How many rows the stores hold, sessions and tickets included.
    pub fn row_count(&self) -> Result<i64, StoreError> {
        let sum = names()
            .chain(["sessions", "tickets"])
            .map(|t| format!("(SELECT count(*) FROM {t})"))
            .collect::<Vec<_>>()
            .join(" + ");
        Ok(self.conn()?.query_one(&format!("SELECT {sum}"), &[]).map_err(err)?.get(0))
    }

    /// Writes `table` as it is, in one transaction per 1000 rows.
    pub fn import(&self, table: &Table) -> Result<(), StoreError> {
        if !names().any(|n| n == table.name) {
            return Err(StoreError(format!("no store {:?}", table.name)));
        }
        for chunk in table.rows.chunks(1000) {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            // Prepared once: each row is then one round trip.
            let statement = if table.name == "counters" {
                tx.prepare("INSERT INTO counters (name, value) VALUES ($1, $2)").map_err(err)?
            } else {
                tx.prepare(&format!("INSERT INTO {} (key, doc) VALUES ($1, $2)", table.name)).map_err(err)?
            };
            for (key, doc) in chunk {
                if table.name == "counters" {
                    let value = doc.as_i64().ok_or_else(|| StoreError(format!("counter {key} is not a number")))?;
                    tx.execute(&statement, &[key, &value]).map_err(err)?;
                } else {
                    tx.execute(&statement, &[key, doc]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    /// Every store, read back.
    pub fn tables(&self) -> Result<Vec<Table>, StoreError> {
        let mut conn = self.conn()?;
        let mut tables = Vec::new();
        for name in names() {
            let sql = if name == "counters" {
                "SELECT name, to_jsonb(value) FROM counters".to_owned()
            } else {
                format!("SELECT key, doc FROM {name}")
            };
            let rows = conn.query(&sql, &[]).map_err(err)?.iter().map(|r| (r.get(0), r.get(1))).collect();
            tables.push(Table { name, rows });
        }
        Ok(tables)
    }
}
