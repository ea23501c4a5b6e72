//! The names of the files the CA signs into its CRL directory and the service serves from it:
//! one contract for the signer, the ceremony and the web worker.

use crate::shard::Shard;

/// The root's CRL (signed at the ceremony: `inkan root sign-crl`).
pub const ROOT_CRL: &str = "root.crl";
/// The issuing CA's CRL (signed by the signer).
pub const CA_CRL: &str = "ca.crl";
/// The root's OCSP answer about the issuing CA (signed at the ceremony).
pub const CA_OCSP: &str = "ca-ocsp.der";
/// The latest signed checkpoint of the audit trail (JSON), served at `/audit/checkpoint`.
pub const AUDIT_CHECKPOINT: &str = "audit-checkpoint.json";

/// The file generation `n` of the issuing CA's CRL is published as (`/crl/ca.crl` for 1,
/// `/crl/N/ca.crl` for later ones).
pub fn ca_crl(n: u16) -> String {
    if n <= 1 { CA_CRL.to_owned() } else { format!("ca-{n}.crl") }
}

/// The file shard `shard` of generation `n`'s CRL is published as: `ca-COUNT-INDEX.crl` for
/// generation 1 (`/crl/ca-COUNT-INDEX.crl`), `ca-N-COUNT-INDEX.crl` for later ones
/// (`/crl/N/ca-COUNT-INDEX.crl`): the URLs [`Shard::url`] makes of each generation's CRL URL.
pub fn ca_crl_shard(n: u16, shard: Shard) -> String {
    if n <= 1 {
        format!("ca-{}-{}.crl", shard.count, shard.index)
    } else {
        format!("ca-{n}-{}-{}.crl", shard.count, shard.index)
    }
}

/// The generation and shard of a file named by [`ca_crl_shard`], if it is one.
pub fn parse_ca_crl_shard(name: &str) -> Option<(u16, Shard)> {
    let numbers: Vec<u16> = name
        .strip_prefix("ca-")?
        .strip_suffix(".crl")?
        .split('-')
        .map(|part| if part.starts_with('0') && part != "0" { None } else { part.parse().ok() })
        .collect::<Option<_>>()?;
    let (n, count, index) = match numbers[..] {
        [count, index] => (1, count, index),
        [n, count, index] if n >= 2 => (n, count, index),
        _ => return None,
    };
    ((2..=crate::shard::MAX_SHARDS).contains(&count) && index < count).then_some((n, Shard { count, index }))
}

/// The file the root's pre-signed OCSP answer about generation `n` of the issuing CA is in.
pub fn ca_ocsp(n: u16) -> String {
    if n <= 1 { CA_OCSP.to_owned() } else { format!("ca-ocsp-{n}.der") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_file_names_read_back() {
        for (n, shard) in [
            (1, Shard { count: 16, index: 3 }),
            (2, Shard { count: 2, index: 0 }),
            (7, Shard { count: 1024, index: 1023 }),
        ] {
            assert_eq!(parse_ca_crl_shard(&ca_crl_shard(n, shard)), Some((n, shard)));
        }
        assert_eq!(ca_crl_shard(1, Shard { count: 16, index: 3 }), "ca-16-3.crl");
        assert_eq!(ca_crl_shard(2, Shard { count: 16, index: 3 }), "ca-2-16-3.crl");
        for other in [
            "ca.crl",
            "ca-2.crl",
            "root.crl",
            "ca-16-16.crl",
            "ca-1-0.crl",
            "ca-1-16-3.crl",
            "ca-016-3.crl",
            "ca-16-3.der",
            "ca-16--3.crl",
            "ca-2000-1.crl",
            "ca-a-b.crl",
        ] {
            assert_eq!(parse_ca_crl_shard(other), None, "{other}");
        }
    }
}
