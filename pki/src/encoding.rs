//! Reading PEM or DER input strictly, and writing PEM and PKCS#7 (certs-only) output; the
//! one hex, base64 and RFC 3339 helper of the workspace.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use yasna::Tag;

use crate::Error;

/// The largest CSR or certificate accepted as input, in bytes.
pub const MAX_INPUT: usize = 64 * 1024;

/// Returns the DER bytes of exactly one object, given either as DER or as one PEM block.
///
/// `what` names the object in errors ("CSR"); `labels` are the accepted PEM labels, the first
/// being the one named in errors. Empty input, input over [`MAX_INPUT`], PEM that does not
/// decode, a wrong label and anything but whitespace around the one PEM block are refused.
/// DER input is returned as is: the caller's parser must refuse trailing bytes (see
/// [`expect_no_trailing`]).
pub fn decode_one(input: &[u8], what: &'static str, labels: &[&'static str]) -> Result<Vec<u8>, Error> {
    if input.len() > MAX_INPUT {
        return Err(Error::TooLarge { what, size: input.len(), limit: MAX_INPUT });
    }
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(Error::Empty { what });
    }
    if !trimmed.starts_with(b"-----BEGIN ") {
        return Ok(input.to_vec());
    }

    let blocks = pem::parse_many(trimmed).map_err(|e| Error::MalformedPem { what, detail: e.to_string() })?;
    let first = match blocks.as_slice() {
        [] => {
            return Err(Error::MalformedPem { what, detail: "no complete PEM block".into() });
        }
        [one] => one,
        [_, ..] => {
            let end = end_of_first_block(trimmed).unwrap_or(trimmed.len());
            return Err(Error::TrailingData { what, extra: trimmed.len() - end });
        }
    };
    if !labels.contains(&first.tag()) {
        return Err(Error::UnexpectedPemLabel {
            expected: labels.first().copied().unwrap_or(what),
            found: first.tag().to_owned(),
        });
    }
    // The pem crate skips text around a block; inkan does not: the block must be all there is.
    match end_of_first_block(trimmed) {
        Some(end) if end == trimmed.len() => Ok(first.contents().to_vec()),
        Some(end) => Err(Error::TrailingData { what, extra: trimmed.len() - end }),
        None => Err(Error::MalformedPem { what, detail: "missing END line".into() }),
    }
}

/// The PEM labels a CSR may carry (`NEW CERTIFICATE REQUEST` is what old tools write).
pub const CSR_LABELS: &[&str] = &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// The DER of one CSR given as DER or PEM (see [`decode_one`]).
pub fn decode_csr(input: &[u8]) -> Result<Vec<u8>, Error> {
    decode_one(input, "CSR", CSR_LABELS)
}

/// Lowercase hex of `bytes`, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The bytes of hex text (either case); `None` for an odd length or a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// Decodes base64 leniently, as OCSP GET requests arrive (RFC 5019 §5): the standard and the
/// URL-safe alphabets, padding optional, whitespace ignored. `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// Encodes `bytes` as base64url without padding (RFC 4648 §5): PKCE challenges, `x5t#S256`,
/// tokens.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (j, b)| n | u32::from(*b) << (16 - 8 * j));
        for k in 0..=chunk.len() {
            text.push(char::from(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]));
        }
    }
    text
}

/// Encodes `bytes` as standard base64 with padding, in lines of 64 characters ending in LF
/// (the body of a PEM block, or of an EST answer).
pub fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4 + bytes.len() / 48 + 1);
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 16 == 0 {
            text.push('\n');
        }
        let n = chunk.iter().enumerate().fold(0u32, |n, (j, b)| n | u32::from(*b) << (16 - 8 * j));
        for k in 0..4 {
            if k <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    if !bytes.is_empty() {
        text.push('\n');
    }
    text
}

/// A time as RFC 3339 (`2026-11-21T05:01:46Z`), the form listings, JSON and pages use.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Reads an RFC 3339 time (`2026-12-02T09:00:00Z`, any offset); `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// The byte offset just past the first `-----END ...-----` line, if there is one.
fn end_of_first_block(text: &[u8]) -> Option<usize> {
    const END: &[u8] = b"-----END ";
    let start = text.windows(END.len()).position(|w| w == END)?;
    let after = start + END.len();
    let close = text[after..].windows(5).position(|w| w == b"-----")?;
    Some(after + close + 5)
}

/// Checks that `der` is one DER value whose every length, down through the constructed values
/// inside it, is definite and in its shortest form (X.690 §10.1): the parsers inkan uses accept
/// a long form where the short one fits, and a CSR re-encoded so is not DER. Primitive values
/// (an OCTET STRING, a BIT STRING) are not looked into.
pub fn check_der_lengths(der: &[u8], what: &'static str) -> Result<(), Error> {
    fn value(input: &[u8], depth: usize) -> Result<usize, String> {
        if depth > 32 {
            return Err("nested more than 32 levels deep".into());
        }
        let (&tag, rest) = input.split_first().ok_or("a value ends early")?;
        if tag & 0x1f == 0x1f {
            return Err("a tag in the high-tag-number form".into());
        }
        let (&first, rest) = rest.split_first().ok_or("a length is missing")?;
        let (len, rest) = match first {
            0x80 => return Err("an indefinite length".into()),
            0..=0x7f => (usize::from(first), rest),
            _ => {
                let n = usize::from(first & 0x7f);
                if n > 4 || rest.len() < n {
                    return Err("a length that does not fit".into());
                }
                let (bytes, rest) = rest.split_at(n);
                if bytes[0] == 0 {
                    return Err("a length with a leading zero byte (not the shortest form)".into());
                }
                let len = bytes.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
                if len < 0x80 {
                    return Err(format!("a length of {len} in the long form (not the shortest form)"));
                }
                (len, rest)
            }
        };
        if rest.len() < len {
            return Err("a value longer than what follows it".into());
        }
        let header = input.len() - rest.len();
        if tag & 0x20 != 0 {
            let mut inner = &rest[..len];
            while !inner.is_empty() {
                let used = value(inner, depth + 1)?;
                inner = &inner[used..];
            }
        }
        Ok(header + len)
    }
    let used = value(der, 0).map_err(|detail| Error::MalformedDer { what, detail })?;
    expect_no_trailing(&der[used..], what)
}

/// Refuses DER input that has bytes after the parsed object.
pub fn expect_no_trailing(rest: &[u8], what: &'static str) -> Result<(), Error> {
    if rest.is_empty() { Ok(()) } else { Err(Error::TrailingData { what, extra: rest.len() }) }
}

/// Encodes DER as a PEM block with the given label and LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

/// Encodes certificates (DER) as PEM `CERTIFICATE` blocks, one after the other.
pub fn certificates_pem<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> String {
    certs.into_iter().map(|der| pem_encode("CERTIFICATE", der)).collect()
}

const OID_SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
const OID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];

/// The certificates (DER) of a PKCS#7 / CMS SignedData: what an EST server answers with. The
/// signatures, if any, are not looked at (a certs-only answer has none).
pub fn pkcs7_certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    const WHAT: &str = "PKCS#7 certificates";
    check_der_lengths(der, WHAT)?;
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            if r.next().read_oid()? != yasna::models::ObjectIdentifier::from_slice(OID_SIGNED_DATA) {
                return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
            r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    r.next().read_u32()?; // version
                    r.next().read_der()?; // digestAlgorithms
                    r.next().read_der()?; // encapContentInfo
                    let mut certs = Vec::new();
                    r.read_optional(|r| {
                        r.read_tagged_implicit(Tag::context(0), |r| {
                            r.read_set_of(|r| {
                                certs.push(r.read_der()?);
                                Ok(())
                            })
                        })
                    })?;
                    // crls [1] IMPLICIT, if any: skipped.
                    r.read_optional(|r| {
                        r.read_tagged_implicit(Tag::context(1), |r| r.read_set_of(|r| r.read_der().map(drop)))
                    })?;
                    r.next().read_der()?; // signerInfos
                    Ok(certs)
                })
            })
        })
    })
    .map_err(|e| Error::MalformedDer { what: WHAT, detail: e.to_string() })
}

/// Encodes certificates as a degenerate "certs-only" PKCS#7 SignedData (RFC 2315 / RFC 5652):
/// no content, no signers, the certificates in the `certificates` set. This is what EST's
/// `/cacerts` and `/simpleenroll` return and what `openssl pkcs7 -print_certs` reads.
pub fn pkcs7_certs_only<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let certs: Vec<&[u8]> = certs.into_iter().collect();
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(OID_SIGNED_DATA));
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(1); // version
                    w.next().write_set(|_| {}); // digestAlgorithms: none
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(OID_DATA));
                    });
                    w.next().write_tagged_implicit(Tag::context(0), |w| {
                        w.write_set_of(|w| {
                            for der in &certs {
                                w.next().write_der(der);
                            }
                        });
                    });
                    w.next().write_set(|_| {}); // signerInfos: none
                });
            });
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &[&str] = &["CERTIFICATE REQUEST"];

    fn block(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    }

    #[test]
    fn pem_with_surrounding_whitespace_decodes() {
        let text = format!("\n  {}\n\n", block("AQID"));
        assert_eq!(decode_one(text.as_bytes(), "CSR", LABELS), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn base64url_matches_rfc_7636_appendix_b() {
        // The PKCE example: the challenge of the verifier below, from the RFC's own bytes.
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(base64url(digest.as_ref()), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_decode(&base64url(&[0xfb, 0xff, 0x01, 0x02])), Some(vec![0xfb, 0xff, 0x01, 0x02]));
    }

    #[test]
    fn der_passes_through() {
        assert_eq!(decode_one(&[0x30, 0x00], "CSR", LABELS), Ok(vec![0x30, 0x00]));
    }

    #[test]
    fn refusals() {
        assert_eq!(decode_one(b"", "CSR", LABELS), Err(Error::Empty { what: "CSR" }));
        assert_eq!(decode_one(b" \n\t", "CSR", LABELS), Err(Error::Empty { what: "CSR" }));
        let big = vec![0x30; MAX_INPUT + 1];
        assert_eq!(
            decode_one(&big, "CSR", LABELS),
            Err(Error::TooLarge { what: "CSR", size: MAX_INPUT + 1, limit: MAX_INPUT })
        );
        let two = format!("{}{}", block("AQID"), block("AQID"));
        assert!(matches!(decode_one(two.as_bytes(), "CSR", LABELS), Err(Error::TrailingData { .. })));
        let tail = format!("{}junk", block("AQID"));
        assert_eq!(decode_one(tail.as_bytes(), "CSR", LABELS), Err(Error::TrailingData { what: "CSR", extra: 5 }));
        let wrong = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        assert!(matches!(decode_one(wrong.as_bytes(), "CSR", LABELS), Err(Error::UnexpectedPemLabel { .. })));
        let bad64 = block("!!!not base64!!!");
        assert!(matches!(decode_one(bad64.as_bytes(), "CSR", LABELS), Err(Error::MalformedPem { .. })));
        let cut = "-----BEGIN CERTIFICATE REQUEST-----\nAQID\n";
        assert!(matches!(decode_one(cut.as_bytes(), "CSR", LABELS), Err(Error::MalformedPem { .. })));
    }

    #[test]
    fn der_lengths_must_be_the_shortest() {
        // SEQUENCE { INTEGER 1, OCTET STRING 0x81 0x01 (opaque) }
        assert_eq!(check_der_lengths(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x04, 0x01, 0x81], "x"), Ok(()));
        let long_outer = [0x30, 0x81, 0x03, 0x02, 0x01, 0x01];
        assert!(matches!(check_der_lengths(&long_outer, "x"), Err(Error::MalformedDer { .. })));
        let long_inner = [0x30, 0x04, 0x02, 0x81, 0x01, 0x01];
        assert!(matches!(check_der_lengths(&long_inner, "x"), Err(Error::MalformedDer { .. })));
        let leading_zero = [0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x01];
        assert!(matches!(check_der_lengths(&leading_zero, "x"), Err(Error::MalformedDer { .. })));
        let indefinite = [0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00];
        assert!(matches!(check_der_lengths(&indefinite, "x"), Err(Error::MalformedDer { .. })));
        assert!(matches!(check_der_lengths(&[0x30, 0x05, 0x02, 0x01], "x"), Err(Error::MalformedDer { .. })));
        assert!(matches!(check_der_lengths(&[0x30, 0x00, 0x00], "x"), Err(Error::TrailingData { .. })));
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0; 0x80]);
        assert_eq!(check_der_lengths(&long, "x"), Ok(()), "0x81 is right for 128 bytes");
    }

    #[test]
    fn hex_base64_and_times() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(unhex("00AB7f"), Some(vec![0x00, 0xab, 0x7f]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(base64_decode("TWFu"), Some(b"Man".to_vec()));
        assert_eq!(base64_decode("TWE="), Some(b"Ma".to_vec()));
        assert_eq!(base64_decode("TQ"), Some(b"M".to_vec()));
        assert_eq!(base64_decode("T"), None);
        assert_eq!(base64_decode("T!=="), None);
        assert_eq!(base64_decode("-_8/"), base64_decode("+/8/"));
        // '/' is a digit like any other, also the last one (a PSKC value once lost its last byte).
        assert_eq!(base64_decode("////"), Some(vec![0xff, 0xff, 0xff]));
        assert_eq!(base64_decode("AAA/"), Some(vec![0x00, 0x00, 0x3f]));
        let t = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("time");
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn base64_lines_match_pem_bodies_and_decode_back() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_lines(&bytes);
            let pem = pem_encode("X", &bytes);
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(|l| format!("{l}\n")).collect();
            assert_eq!(text, body, "{len} bytes");
            assert_eq!(base64_decode(&text), Some(bytes));
        }
    }

    #[test]
    fn pkcs7_certificates_read_back_what_pkcs7_certs_only_wrote() {
        let a: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];
        let b: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x07];
        let der = pkcs7_certs_only([a, b]);
        let mut got = pkcs7_certificates(&der).expect("parses");
        got.sort();
        assert_eq!(got, [a.to_vec(), b.to_vec()]);
        assert!(pkcs7_certificates(&der[..der.len() - 1]).is_err());
        assert!(pkcs7_certificates(&[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn pkcs7_is_a_signed_data_content_info() {
        let der = pkcs7_certs_only([&[0x30u8, 0x00][..]]);
        // SEQUENCE { OID signedData, [0] { SEQUENCE { INTEGER 1, SET {}, ... } } }
        assert_eq!(der[0], 0x30);
        assert!(der.windows(11).any(|w| w == [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]));
        assert!(der.windows(4).any(|w| w == [0xa0, 0x02, 0x30, 0x00]), "certificate set holds the cert");
    }
}
