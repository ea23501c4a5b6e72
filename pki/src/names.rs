//! Allowed-names policies: which DNS names and IP addresses an account may have certified.
//!
//! A policy is a list of entries: a DNS name (exactly that name), `*.D` (any name under D, at
//! any depth; a wildcard SAN only when the entry is the same wildcard), an IP address, or an IP
//! network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::profile::San;

/// One entry of an allowed-names policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum AllowedName {
    /// A DNS name, or `*.D` for every name under D.
    Dns(String),
    /// The addresses whose first `prefix` bits are those of `network` (host bits cleared).
    Network {
        /// The network address.
        network: IpAddr,
        /// The prefix length: 0-32 for IPv4, 0-128 for IPv6.
        prefix: u8,
    },
}

impl AllowedName {
    /// Whether `san` is inside this entry.
    pub fn allows(&self, san: &San) -> bool {
        match (self, san) {
            (Self::Dns(pattern), San::Dns(_)) => san.allowed_by(&[San::Dns(pattern.clone())]),
            (Self::Network { network, prefix }, San::Ip(ip)) => masked(*ip, *prefix) == Some(*network),
            _ => false,
        }
    }
}

/// `ip` with all but its first `prefix` bits cleared; `None` when the families differ from the
/// prefix's range.
fn masked(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::from((u32::from(v4) & mask).to_be_bytes()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::from((u128::from(v6) & mask).to_be_bytes()))
        }
        _ => None,
    }
}

impl FromStr for AllowedName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidSan { san: s.chars().take(80).collect(), reason };
        if let Some((address, bits)) = s.split_once('/') {
            let ip: IpAddr =
                address.parse().map_err(|_| invalid("a network is an IP address, '/' and a prefix length"))?;
            let prefix: u8 = bits.parse().map_err(|_| invalid("the prefix length is a number"))?;
            let network =
                masked(ip, prefix).ok_or_else(|| invalid("the prefix length is at most 32 for IPv4, 128 for IPv6"))?;
            if network != ip {
                return Err(invalid("the address has bits set after the prefix; give the network address"));
            }
            return Ok(Self::Network { network, prefix });
        }
        match s.parse::<San>()? {
            San::Ip(ip) => Ok(Self::Network { network: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }),
            San::Dns(name) => Ok(Self::Dns(name)),
        }
    }
}

impl fmt::Display for AllowedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Network { network, prefix } if (network.is_ipv4() && *prefix == 32) || *prefix == 128 => {
                write!(f, "{network}")
            }
            Self::Network { network, prefix } => write!(f, "{network}/{prefix}"),
        }
    }
}

impl From<AllowedName> for String {
    fn from(name: AllowedName) -> Self {
        name.to_string()
    }
}

impl TryFrom<String> for AllowedName {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

/// Checks every name of `sans` against `policy`; the error names the first one outside it.
pub fn check(policy: &[AllowedName], sans: &[San]) -> Result<(), Error> {
    match sans.iter().find(|san| !policy.iter().any(|entry| entry.allows(san))) {
        None => Ok(()),
        Some(outside) => Err(Error::NameOutsidePolicy {
            name: outside.to_string(),
            allowed: policy.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> Vec<AllowedName> {
        entries.iter().map(|e| e.parse().expect("entry")).collect()
    }

    fn sans(names: &[&str]) -> Vec<San> {
        names.iter().map(|n| n.parse().expect("san")).collect()
    }

    #[test]
    fn names_inside_and_outside() {
        let p = policy(&["*.example.com", "api.example.net", "10.1.0.0/16", "2001:db8::/32", "192.0.2.7"]);
        for inside in ["a.example.com", "x.y.example.com", "api.example.net", "10.1.255.3", "2001:db8::1", "192.0.2.7"]
        {
            assert!(check(&p, &sans(&[inside])).is_ok(), "{inside} should be inside");
        }
        for outside in [
            "example.com",
            "a.example.com.evil.org",
            "badexample.com",
            "www.example.net",
            "10.2.0.1",
            "2001:db9::1",
            "192.0.2.8",
            "*.example.net",
        ] {
            let err = check(&p, &sans(&["a.example.com", outside])).expect_err(outside);
            assert!(err.to_string().contains(outside), "{err}");
        }
        // A wildcard SAN only under the same wildcard entry.
        assert!(check(&p, &sans(&["*.example.com"])).is_ok());
        assert!(check(&p, &sans(&["*.a.example.com"])).is_err());
    }

    #[test]
    fn entries_are_parsed_strictly() {
        assert_eq!(policy(&["10.0.0.0/8"])[0].to_string(), "10.0.0.0/8");
        assert_eq!(policy(&["192.0.2.7"])[0].to_string(), "192.0.2.7");
        assert_eq!(policy(&["0.0.0.0/0"])[0].to_string(), "0.0.0.0/0");
        assert!(check(&policy(&["0.0.0.0/0"]), &sans(&["203.0.113.9"])).is_ok());
        assert!(check(&policy(&["0.0.0.0/0"]), &sans(&["::1"])).is_err());
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "::/129", "10.0.0.0/x", "host/8", "exa mple.com", "*", ""] {
            assert!(bad.parse::<AllowedName>().is_err(), "{bad:?} was accepted");
        }
    }
}
