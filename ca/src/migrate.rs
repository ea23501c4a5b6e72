//! Moving a registry to another backend (`inkan storage migrate`): everything a registry holds
//! ([`Contents`]: every certificate with its DER and request id, the blocked keys, the CRL
//! number), read from sled, written to PostgreSQL, read back and compared by a digest.

use pki::Serial;
use pki::registry::{BlockedKey, CertRecord, RegistryError};

/// One certificate as a registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The record.
    pub record: CertRecord,
    /// The certificate, once signed.
    pub der: Option<Vec<u8>>,
    /// The id of the request it answered, if any.
    pub request_id: Option<[u8; 16]>,
}

/// Everything a registry holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// Every certificate, by serial (bytewise).
    pub certificates: Vec<Entry>,
    /// Every blocked key, by key hash.
    pub blocked: Vec<BlockedKey>,
    /// The last CRL number handed out (0: none yet).
    pub crl_number: u64,
}

impl Contents {
    /// Puts the lists in the order [`Contents::digest`] reads them.
    pub fn sort(&mut self) {
        self.certificates.sort_by(|a, b| a.record.serial.as_bytes().cmp(b.record.serial.as_bytes()));
        self.blocked.sort_by_key(|b| b.key_sha256);
    }

    /// SHA-256 (hex) over every certificate's serial, record, DER and request id, every blocked
    /// key and the CRL number, in order: equal on both sides of a move when nothing was lost or
    /// changed.
    pub fn digest(&self) -> Result<String, RegistryError> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        for entry in &self.certificates {
            field(entry.record.serial.as_bytes());
            let record = serde_json::to_vec(&entry.record).map_err(|e| RegistryError::Backend(e.to_string()))?;
            field(&record);
            field(entry.der.as_deref().unwrap_or_default());
            field(entry.request_id.as_ref().map_or(&[][..], |id| &id[..]));
        }
        for blocked in &self.blocked {
            field(&blocked.key_sha256);
            field(blocked.serial.as_bytes());
            field(&blocked.at.unix_timestamp().to_be_bytes());
        }
        field(&self.crl_number.to_be_bytes());
        Ok(pki::encoding::hex(ctx.finish().as_ref()))
    }
}

/// The serial of a blocked key or request entry, read from stored bytes.
pub(crate) fn serial_from(bytes: &[u8], what: &str) -> Result<Serial, RegistryError> {
    Serial::from_bytes(bytes).ok_or_else(|| RegistryError::Corrupt { key: what.into(), detail: "bad serial".into() })
}
