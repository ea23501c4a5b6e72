//! Certificate serial numbers: 16 random bytes, positive, printed as `openssl x509 -serial` does.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A serial number of an inkan certificate: 16 bytes, the first in `0x01..=0x7f`, so the DER
/// INTEGER is positive, exactly 16 bytes long, and prints as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial([u8; 16]);

impl Serial {
    /// Makes a serial from 16 random bytes: the top bit is cleared. Returns `None` when the
    /// first byte is then zero (1 in 128 draws); the caller draws again.
    pub fn from_random(mut bytes: [u8; 16]) -> Option<Self> {
        bytes[0] &= 0x7f;
        (bytes[0] != 0).then_some(Self(bytes))
    }

    /// Reads back a serial stored by [`Serial::as_bytes`]; `None` unless it has inkan's form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        (bytes[0] != 0 && bytes[0] & 0x80 == 0).then_some(Self(bytes))
    }

    /// The 16 bytes, which are also the DER INTEGER's content octets.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Serial {
    /// Uppercase hex without separators: `4A1F...`, as `openssl x509 -serial` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = Error;

    /// Accepts the hex as `openssl x509 -serial` prints it, in either case, with or without
    /// a `serial=` or `0x` prefix and with or without `:` separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::InvalidSerial { input: s.chars().take(80).collect() };
        let t = s.trim();
        let t = t.strip_prefix("serial=").unwrap_or(t);
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        let digits: Vec<u8> = t.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 32 {
            return Err(invalid());
        }
        let mut out = [0u8; 16];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            out[i] = hi << 4 | lo;
        }
        Self::from_bytes(&out).ok_or_else(invalid)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_become_positive_serials() {
        let s = Serial::from_random([0xff; 16]).expect("0x7f first byte is fine");
        assert_eq!(s.as_bytes()[0], 0x7f);
        assert_eq!(Serial::from_random([0x80; 16]), None, "0x80 clears to zero");
    }

    #[test]
    fn parses_what_it_prints_in_openssl_forms() {
        let s = Serial::from_random([0x1a; 16]).expect("serial");
        let hex = s.to_string();
        assert_eq!(hex, "1A".repeat(16));
        assert_eq!(hex.parse::<Serial>(), Ok(s));
        assert_eq!(format!("serial={}", hex.to_lowercase()).parse::<Serial>(), Ok(s));
        let colons = s.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        assert_eq!(colons.parse::<Serial>(), Ok(s));
    }

    #[test]
    fn refuses_other_forms() {
        for bad in ["", "12", &"G".repeat(32), &"80".repeat(16), &"00".repeat(16), &"1A".repeat(17)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} accepted");
        }
    }
}
