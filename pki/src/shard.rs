//! Partitions of a CA's CRL (`crl_shards`): which one lists a certificate, and its URL.

use serde::{Deserialize, Serialize};

use crate::Serial;

/// The largest `crl_shards`: more partitions than this would be more files than anyone fetches.
pub const MAX_SHARDS: u16 = 1024;

/// One partition of a CA's CRL (`crl_shards = N` in the configuration): serials are spread
/// over `count` CRLs by their last eight bytes, each certificate's CRL distribution point
/// names its own shard, and each shard's CRL names itself in its issuingDistributionPoint
/// (RFC 5280 §5.2.5), so a relying party can tell it is the partition to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// How many partitions (2..=[`MAX_SHARDS`]).
    pub count: u16,
    /// Which one (0..count).
    pub index: u16,
}

impl Shard {
    /// The shard of `count` that lists `serial` when it is revoked.
    pub fn of(serial: &Serial, count: u16) -> Self {
        let bytes = serial.as_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        let index = u64::from_be_bytes(low) % u64::from(count.max(1));
        Self { count, index: index as u16 }
    }

    /// Every shard of `count`, in order.
    pub fn all(count: u16) -> impl Iterator<Item = Self> {
        (0..count).map(move |index| Self { count, index })
    }

    /// The shard's URL, from the whole CRL's: `…/ca.crl` becomes `…/ca-COUNT-INDEX.crl`.
    pub fn url(&self, crl_url: &str) -> String {
        let stem = crl_url.strip_suffix(".crl").unwrap_or(crl_url);
        format!("{stem}-{}-{}.crl", self.count, self.index)
    }
}
