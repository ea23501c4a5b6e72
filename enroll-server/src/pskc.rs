//! PSKC (RFC 6030) files of hardware-token seeds, as token makers ship them: one KeyPackage per
//! token, with its serial number and a TOTP secret, in plain or encrypted with a pre-shared key
//! (AES-128-CBC, the IV before the ciphertext) and authenticated with HMAC-SHA1 under a MAC key
//! that the same pre-shared key encrypts. A file whose MAC does not verify, or that is not PSKC,
//! is refused whole: nothing is imported from it.

use aws_lc_rs::cipher::{AES_128, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

const NS_PSKC: &str = "urn:ietf:params:xml:ns:keyprov:pskc";
const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const ALG_TOTP: &str = "urn:ietf:params:xml:ns:keyprov:pskc:totp";
const ALG_AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const ALG_HMAC_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
/// The largest file read.
pub const MAX_FILE: usize = 4 << 20;

/// One token's seed.
pub struct Seed {
    /// The token's serial number (DeviceInfo/SerialNo).
    pub serial: String,
    /// The TOTP secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// Digits of a code (ResponseFormat Length).
    pub digits: u32,
    /// Time step in seconds (TimeInterval, 30 when absent).
    pub step_secs: u32,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed").field("serial", &self.serial).finish_non_exhaustive()
    }
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PskcError(pub String);

fn err(message: impl Into<String>) -> PskcError {
    PskcError(message.into())
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, ns: &str, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns))
}

fn text<'a>(node: roxmltree::Node<'a, '_>) -> &'a str {
    node.text().unwrap_or("").trim()
}

fn base64(value: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, PskcError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    pki::encoding::base64_decode(&compact).map(Zeroizing::new).ok_or_else(|| err(format!("{what} is not base64")))
}

/// An `xenc` encrypted value (EncryptionMethod + CipherData/CipherValue): its IV and
/// ciphertext, after checking the method is AES-128-CBC.
fn cipher_value(node: roxmltree::Node<'_, '_>, what: &str) -> Result<Zeroizing<Vec<u8>>, PskcError> {
    let method = child(node, NS_XENC, "EncryptionMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .ok_or_else(|| err(format!("{what}: no xenc:EncryptionMethod")))?;
    if method != ALG_AES128_CBC {
        return Err(err(format!("{what}: encryption {method} is not supported; use aes128-cbc")));
    }
    let value = child(node, NS_XENC, "CipherData")
        .and_then(|d| child(d, NS_XENC, "CipherValue"))
        .ok_or_else(|| err(format!("{what}: no xenc:CipherValue")))?;
    let bytes = base64(text(value), what)?;
    if bytes.len() < 32 || bytes.len() % 16 != 0 {
        return Err(err(format!("{what}: not an IV and whole AES blocks")));
    }
    Ok(bytes)
}

fn decrypt(key: &[u8; 16], iv_and_ciphertext: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, PskcError> {
    let broken = || err(format!("{what} does not decrypt with this pre-shared key"));
    let (iv, ciphertext) = iv_and_ciphertext.split_at(16);
    let iv: [u8; 16] = iv.try_into().map_err(|_| broken())?;
    let unbound = UnboundCipherKey::new(&AES_128, key).map_err(|_| broken())?;
    let decrypting = PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| broken())?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain = decrypting.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv))).map_err(|_| broken())?;
    Ok(Zeroizing::new(plain.to_vec()))
}

/// Reads the seeds of a PSKC document. `psk` decrypts encrypted secrets (16 bytes, AES-128);
/// a file with encrypted secrets and no `psk`, a MAC that does not verify, an algorithm other
/// than TOTP, or anything that is not PSKC is refused whole.
pub fn parse(xml: &str, psk: Option<&[u8; 16]>) -> Result<Vec<Seed>, PskcError> {
    if xml.len() > MAX_FILE {
        return Err(err(format!("the file is over {MAX_FILE} bytes")));
    }
    let options = roxmltree::ParsingOptions { allow_dtd: false, ..roxmltree::ParsingOptions::default() };
    let doc = roxmltree::Document::parse_with_options(xml, options).map_err(|e| err(format!("not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "KeyContainer" || root.tag_name().namespace() != Some(NS_PSKC) {
        return Err(err("not a PSKC file: the root is not a pskc:KeyContainer"));
    }
    // The MAC key, encrypted under the pre-shared key.
    let mac_key = match child(root, NS_PSKC, "MACMethod") {
        None => None,
        Some(method) => {
            if method.attribute("Algorithm") != Some(ALG_HMAC_SHA1) {
                return Err(err("MACMethod: only hmac-sha1 is supported"));
            }
            let psk = psk.ok_or_else(|| err("the file is encrypted: give the pre-shared key (--key-file)"))?;
            let key_node = child(method, NS_PSKC, "MACKey").ok_or_else(|| err("MACMethod: no MACKey"))?;
            Some(decrypt(psk, &cipher_value(key_node, "MACKey")?, "MACKey")?)
        }
    };
    let mut seeds = Vec::new();
    for package in root.children().filter(|n| n.is_element() && n.tag_name().name() == "KeyPackage") {
        let serial = child(package, NS_PSKC, "DeviceInfo")
            .and_then(|d| child(d, NS_PSKC, "SerialNo"))
            .map(text)
            .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .ok_or_else(|| err("a KeyPackage without a DeviceInfo/SerialNo of letters, digits and '-'"))?;
        let key = child(package, NS_PSKC, "Key").ok_or_else(|| err(format!("token {serial}: no Key")))?;
        match key.attribute("Algorithm") {
            Some(ALG_TOTP) => {}
            other => {
                return Err(err(format!("token {serial}: algorithm {other:?} is not supported; only TOTP")));
            }
        }
        let digits = child(key, NS_PSKC, "AlgorithmParameters")
            .and_then(|p| child(p, NS_PSKC, "ResponseFormat"))
            .map(|f| (f.attribute("Length"), f.attribute("Encoding")))
            .map_or(Ok(6), |(length, encoding)| match (length.and_then(|l| l.parse::<u32>().ok()), encoding) {
                (Some(n @ (6 | 8)), Some("DECIMAL") | None) => Ok(n),
                _ => Err(err(format!("token {serial}: codes must be 6 or 8 decimal digits"))),
            })?;
        let data = child(key, NS_PSKC, "Data").ok_or_else(|| err(format!("token {serial}: no Data")))?;
        let step_secs = match child(data, NS_PSKC, "TimeInterval").and_then(|t| child(t, NS_PSKC, "PlainValue")) {
            None => 30,
            Some(v) => match text(v).parse::<u32>() {
                Ok(s @ (30 | 60)) => s,
                _ => return Err(err(format!("token {serial}: TimeInterval must be 30 or 60"))),
            },
        };
        let secret_node = child(data, NS_PSKC, "Secret").ok_or_else(|| err(format!("token {serial}: no Secret")))?;
        let secret = if let Some(plain) = child(secret_node, NS_PSKC, "PlainValue") {
            if mac_key.is_some() {
                return Err(err(format!("token {serial}: a plain secret in an encrypted file")));
            }
            base64(text(plain), "PlainValue")?
        } else {
            let encrypted = child(secret_node, NS_PSKC, "EncryptedValue")
                .ok_or_else(|| err(format!("token {serial}: no PlainValue or EncryptedValue")))?;
            let (Some(psk), Some(mac_key)) = (psk, mac_key.as_ref()) else {
                return Err(err("encrypted secrets need a MACMethod and the pre-shared key (--key-file)"));
            };
            let value = cipher_value(encrypted, "EncryptedValue")?;
            let mac = child(secret_node, NS_PSKC, "ValueMAC")
                .map(|m| base64(text(m), "ValueMAC"))
                .transpose()?
                .ok_or_else(|| err(format!("token {serial}: no ValueMAC")))?;
            hmac::verify(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, mac_key), &value, &mac).map_err(
                |_| err(format!("token {serial}: the MAC does not verify; the file was changed or the key is wrong")),
            )?;
            decrypt(psk, &value, "EncryptedValue")?
        };
        if !(16..=64).contains(&secret.len()) {
            return Err(err(format!("token {serial}: the secret is {} bytes; 16 to 64 are accepted", secret.len())));
        }
        if seeds.iter().any(|s: &Seed| s.serial == serial) {
            return Err(err(format!("token {serial} is in the file twice")));
        }
        seeds.push(Seed { serial: serial.to_owned(), secret, digits, step_secs });
    }
    if seeds.is_empty() {
        return Err(err("the file holds no KeyPackage"));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_and_garbage() {
        let plain = format!(
            r#"<?xml version="1.0"?><KeyContainer Version="1.0" xmlns="{NS_PSKC}"><KeyPackage>
            <DeviceInfo><SerialNo>HW-0001</SerialNo></DeviceInfo>
            <Key Id="1" Algorithm="{ALG_TOTP}"><AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
            <Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret><TimeInterval><PlainValue>30</PlainValue></TimeInterval></Data></Key>
            </KeyPackage></KeyContainer>"#
        );
        let seeds = parse(&plain, None).expect("plain PSKC");
        assert_eq!(seeds.len(), 1);
        assert_eq!(seeds[0].serial, "HW-0001");
        assert_eq!(seeds[0].secret.as_slice(), b"12345678901234567890");
        let hotp = plain.replace(ALG_TOTP, "urn:ietf:params:xml:ns:keyprov:pskc:hotp");
        let short = plain.replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", "MTIz");
        let twice = plain.replace(
            "</KeyPackage>",
            "</KeyPackage><KeyPackage><DeviceInfo><SerialNo>HW-0001</SerialNo></DeviceInfo></KeyPackage>",
        );
        for bad in ["", "<a/>", "not xml", "<KeyContainer xmlns=\"urn:other\"/>", &hotp, &short, &twice] {
            assert!(parse(bad, None).is_err(), "{bad:?}");
        }
        let doctype =
            format!("<!DOCTYPE x [<!ENTITY e \"y\">]>{}", plain.trim_start_matches("<?xml version=\"1.0\"?>"));
        assert!(parse(&doctype, None).is_err(), "no DTD");
    }

    /// A file from tests/pskc/make-pskc.py (Python's `cryptography`), kept as a fuzz seed.
    #[test]
    fn encrypted_files_from_another_implementation() {
        let file = include_bytes!("../../tests/fuzz/corpus/otp_input/pskc-encrypted");
        let xml = std::str::from_utf8(&file[1..]).expect("utf-8");
        let seeds = parse(xml, Some(b"inkan fuzz psk!!")).expect("the right key");
        assert_eq!(seeds.len(), 1);
        assert_eq!(seeds[0].serial, "HW-9");
        assert_eq!(seeds[0].secret.as_slice(), b"12345678901234567890");
        assert!(parse(xml, Some(b"the wrong key!!!")).is_err());
        assert!(parse(xml, None).expect_err("no key").0.contains("pre-shared key"));
    }
}
