//! The few DER pieces inkan writes by hand (the CRL): tags with definite lengths, X.509 times.

use time::OffsetDateTime;

/// Bytes of a tag and a definite length for `len` content bytes.
pub(crate) fn header_len(len: usize) -> usize {
    match len {
        0..=0x7f => 2,
        0x80..=0xff => 3,
        0x100..=0xffff => 4,
        0x1_0000..=0xff_ffff => 5,
        _ => 6,
    }
}

pub(crate) fn header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    out.push(0x80 | (8 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Content bytes of `t` as RFC 5280 §5.1.2.4 wants it: UTCTime through 2049,
/// GeneralizedTime from 2050; `None` before 1950 or after 9999.
pub(crate) fn time_len(t: OffsetDateTime) -> Option<usize> {
    match t.year() {
        1950..=2049 => Some(13),
        2050..=9999 => Some(15),
        _ => None,
    }
}

/// `t` (UTC, whole seconds, in range: see [`time_len`]).
pub(crate) fn time(out: &mut Vec<u8>, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    let two = |out: &mut Vec<u8>, n: u8| out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    let year = t.year();
    if year < 2050 {
        der_header_utc(out);
        two(out, (year % 100) as u8);
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, (year / 100) as u8);
        two(out, (year % 100) as u8);
    }
    two(out, u8::from(t.month()));
    two(out, t.day());
    two(out, t.hour());
    two(out, t.minute());
    two(out, t.second());
    out.push(b'Z');
}

fn der_header_utc(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x17, 13]);
}
