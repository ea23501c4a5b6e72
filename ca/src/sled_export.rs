//! A sled database as one stream of its trees, for backups: [`export_sled`] writes it,
//! [`import_sled`] reads it into a new database. Format: `inkan-sled-export-1\n`, then per tree
//! its type and name (u32 BE length + bytes each), its records (u32 2, key, value, each field
//! u32 BE length + bytes), and u32::MAX.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::Error;

const EXPORT_MAGIC: &[u8] = b"inkan-sled-export-1\n";
const END_OF_TREE: u32 = u32::MAX;

/// The record count of each tree of one sled database.
pub type TreeCounts = BTreeMap<String, u64>;

/// Writes every tree of `db` to `out`; returns each tree's record count.
pub fn export_sled(db: &sled::Db, out: &mut impl Write) -> Result<TreeCounts, Error> {
    let io = |e: std::io::Error| Error::Pki(pki::Error::Encoding { what: "store export", detail: e.to_string() });
    out.write_all(EXPORT_MAGIC).map_err(io)?;
    let mut counts = TreeCounts::new();
    for (kind, name, items) in db.export() {
        write_field(out, &kind).map_err(io)?;
        write_field(out, &name).map_err(io)?;
        let mut n = 0u64;
        for item in items {
            out.write_all(&u32::try_from(item.len()).unwrap_or(0).to_be_bytes()).map_err(io)?;
            for field in &item {
                write_field(out, field).map_err(io)?;
            }
            n += 1;
        }
        out.write_all(&END_OF_TREE.to_be_bytes()).map_err(io)?;
        counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
    }
    out.flush().map_err(io)?;
    Ok(counts)
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("a field over 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// Reads an export made by [`export_sled`] into a new sled database at `dir`, one record at a
/// time (a field is held only as far as its bytes arrive).
pub fn import_sled(mut export: impl Read, dir: &Path) -> Result<TreeCounts, Error> {
    let bad = |detail: &str| Error::Backup { detail: format!("store export: {detail}") };
    let mut magic = [0u8; EXPORT_MAGIC.len()];
    if export.read_exact(&mut magic).is_err() || magic != EXPORT_MAGIC {
        return Err(bad("not an inkan store export"));
    }
    let db = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|e| Error::Backup { detail: format!("creating {}: {e}", dir.display()) })?;
    let store = |e: sled::Error| Error::Backup { detail: format!("writing {}: {e}", dir.display()) };
    let mut counts = TreeCounts::new();
    // The end of the export is the end of a tree: nothing more where a tree's type would start.
    while let Some(kind) = take_field(&mut export, true).map_err(|_| bad("cut off in a tree's type"))? {
        let name = take_field(&mut export, false).ok().flatten().ok_or_else(|| bad("cut off in a tree's name"))?;
        if kind != b"tree" {
            return Err(bad("a collection that is not a tree"));
        }
        let tree = db.open_tree(&name).map_err(store)?;
        let mut n = 0u64;
        loop {
            match take_u32(&mut export).ok_or_else(|| bad("cut off in a tree"))? {
                END_OF_TREE => break,
                2 => {
                    let mut field =
                        || take_field(&mut export, false).ok().flatten().ok_or_else(|| bad("cut off in a record"));
                    let (key, value) = (field()?, field()?);
                    tree.insert(key, value).map_err(store)?;
                    n += 1;
                }
                _ => return Err(bad("a record that is not a key and a value")),
            }
        }
        counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
    }
    db.flush().map_err(store)?;
    Ok(counts)
}

fn take_u32(input: &mut impl Read) -> Option<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes).ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// A length-prefixed field. With `at_boundary`, a clean end of input before the length is
/// `Ok(None)`; anything else cut off is an error.
fn take_field(input: &mut impl Read, at_boundary: bool) -> Result<Option<Vec<u8>>, ()> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 && at_boundary => return Ok(None),
            Ok(0) => return Err(()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let len = u64::from(u32::from_be_bytes(len));
    let mut field = Vec::new();
    input.take(len).read_to_end(&mut field).map_err(|_| ())?;
    if field.len() as u64 != len {
        return Err(());
    }
    Ok(Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_exports_and_imports_tree_by_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path().join("a")).open().expect("open");
        db.open_tree("things").expect("tree").insert(b"k1", b"v1".as_slice()).expect("insert");
        db.open_tree("things").expect("tree").insert(b"k2", vec![0u8; 70_000]).expect("insert");
        db.insert(b"top", b"level".as_slice()).expect("insert");
        let mut export = Vec::new();
        let counts = export_sled(&db, &mut export).expect("export");
        assert_eq!(counts.get("things"), Some(&2));
        let imported = import_sled(export.as_slice(), &dir.path().join("b")).expect("import");
        assert_eq!(imported, counts);
        let back = sled::Config::new().path(dir.path().join("b")).open().expect("reopen");
        assert_eq!(back.open_tree("things").expect("tree").get(b"k2").expect("get").map(|v| v.len()), Some(70_000));
        assert_eq!(back.get(b"top").expect("get").as_deref(), Some(b"level".as_slice()));
        for cut in [3, EXPORT_MAGIC.len() + 2, export.len() - 1] {
            let again = tempfile::tempdir().expect("tempdir");
            assert!(import_sled(&export[..cut], again.path()).is_err(), "cut at {cut}");
        }
    }
}
