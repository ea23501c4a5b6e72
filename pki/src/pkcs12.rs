//! PKCS#12 files (RFC 7292) holding one private key, its certificate and the chain, in the form
//! OpenSSL 3 writes by default: the key in a PBES2 shrouded bag (PBKDF2-HMAC-SHA256,
//! AES-256-CBC), the certificates in a plain bag (they are public), and an HMAC-SHA256 MAC
//! keyed by the PKCS#12 key derivation of Appendix B.

use aws_lc_rs::{cipher, digest, hmac, iv::FixedLength, pbkdf2, rand};
use yasna::models::ObjectIdentifier;
use yasna::{DERWriter, Tag};
use zeroize::Zeroizing;

use crate::Error;

/// PBKDF2 and MAC iterations: OpenSSL's default. A fixture file is not a vault; the password
/// keeps a stray copy from being read, it does not hold back an offline search.
const ITERATIONS: u32 = 2048;

const OID_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
const OID_PKCS8_SHROUDED_KEY_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 2];
const OID_CERT_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 3];
const OID_X509_CERTIFICATE: &[u64] = &[1, 2, 840, 113_549, 1, 9, 22, 1];
const OID_FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113_549, 1, 9, 20];
const OID_LOCAL_KEY_ID: &[u64] = &[1, 2, 840, 113_549, 1, 9, 21];
const OID_PBES2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 13];
const OID_PBKDF2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 12];
const OID_HMAC_SHA256: &[u64] = &[1, 2, 840, 113_549, 2, 9];
const OID_AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes).map_err(|_| Error::Encoding { what: "PKCS#12 file", detail: "no randomness".into() })?;
    Ok(bytes)
}

/// A PKCS#12 file (DER) with `key_pkcs8` (PKCS#8 DER) and `certificates` (DER, the key's own
/// certificate first), protected by `password`. `friendly_name` labels the key and its
/// certificate in key stores.
pub fn build(key_pkcs8: &[u8], certificates: &[&[u8]], friendly_name: &str, password: &str) -> Result<Vec<u8>, Error> {
    let Some(leaf) = certificates.first() else {
        return Err(Error::Encoding { what: "PKCS#12 file", detail: "no certificate for the key".into() });
    };
    // localKeyId ties the key to its certificate: the certificate's SHA-1, as OpenSSL does.
    let local_key_id = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let attributes = |w: DERWriter<'_>, with_name: bool| {
        w.write_set(|w| {
            if with_name {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&oid(OID_FRIENDLY_NAME));
                    w.next().write_set(|w| w.next().write_bmp_string(friendly_name));
                });
            }
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(OID_LOCAL_KEY_ID));
                w.next().write_set(|w| w.next().write_bytes(local_key_id.as_ref()));
            });
        });
    };

    let shrouded = shroud(key_pkcs8, password)?;
    let key_safe = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(OID_PKCS8_SHROUDED_KEY_BAG));
                w.next().write_tagged(Tag::context(0), |w| w.write_der(&shrouded));
                attributes(w.next(), true);
            });
        });
    });
    let cert_safe = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for (i, der) in certificates.iter().enumerate() {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&oid(OID_CERT_BAG));
                    w.next().write_tagged(Tag::context(0), |w| {
                        w.write_sequence(|w| {
                            w.next().write_oid(&oid(OID_X509_CERTIFICATE));
                            w.next().write_tagged(Tag::context(0), |w| w.write_bytes(der));
                        });
                    });
                    if i == 0 {
                        attributes(w.next(), true);
                    }
                });
            }
        });
    });
    let data_info = |w: DERWriter<'_>, content: &[u8]| {
        w.write_sequence(|w| {
            w.next().write_oid(&oid(OID_DATA));
            w.next().write_tagged(Tag::context(0), |w| w.write_bytes(content));
        });
    };
    let authenticated_safe = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            data_info(w.next(), &cert_safe);
            data_info(w.next(), &key_safe);
        });
    });

    let mac_salt: [u8; 16] = random()?;
    let mac_key = pkcs12_kdf(password, &mac_salt, 3, ITERATIONS, 32);
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key), &authenticated_safe);

    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(3);
            data_info(w.next(), &authenticated_safe);
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_SHA256));
                        w.next().write_null();
                    });
                    w.next().write_bytes(mac.as_ref());
                });
                w.next().write_bytes(&mac_salt);
                w.next().write_u32(ITERATIONS);
            });
        });
    }))
}

/// EncryptedPrivateKeyInfo: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC. The password goes
/// into PBKDF2 as its UTF-8 bytes (what OpenSSL does for PBES2 inside PKCS#12).
fn shroud(key_pkcs8: &[u8], password: &str) -> Result<Vec<u8>, Error> {
    let failed = || Error::Encoding { what: "PKCS#12 file", detail: "encrypting the key failed".into() };
    let salt: [u8; 16] = random()?;
    let iv: [u8; 16] = random()?;
    let mut key = Zeroizing::new([0u8; 32]);
    let iterations = std::num::NonZeroU32::new(ITERATIONS).ok_or_else(failed)?;
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), key.as_mut());
    let unbound = cipher::UnboundCipherKey::new(&cipher::AES_256, key.as_ref()).map_err(|_| failed())?;
    let encrypting = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| failed())?;
    let mut sealed = key_pkcs8.to_vec();
    encrypting
        .less_safe_encrypt(&mut sealed, cipher::EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| failed())?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(OID_PBES2));
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_PBKDF2));
                        w.next().write_sequence(|w| {
                            w.next().write_bytes(&salt);
                            w.next().write_u32(ITERATIONS);
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&oid(OID_HMAC_SHA256));
                                w.next().write_null();
                            });
                        });
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_AES256_CBC));
                        w.next().write_bytes(&iv);
                    });
                });
            });
            w.next().write_bytes(&sealed);
        });
    }))
}

/// The PKCS#12 key derivation (RFC 7292 Appendix B.2) with SHA-256: `id` 3 for MAC keys. The
/// password is its BMPString with the two-byte terminator.
fn pkcs12_kdf(password: &str, salt: &[u8], id: u8, iterations: u32, n: usize) -> Zeroizing<Vec<u8>> {
    const U: usize = 32; // SHA-256 output
    const V: usize = 64; // SHA-256 block
    let mut bmp = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for unit in password.encode_utf16() {
        bmp.extend_from_slice(&unit.to_be_bytes());
    }
    bmp.extend_from_slice(&[0, 0]);
    let fill = |input: &[u8]| -> Vec<u8> {
        if input.is_empty() {
            return Vec::new();
        }
        let len = V * input.len().div_ceil(V);
        input.iter().copied().cycle().take(len).collect()
    };
    let mut i = Zeroizing::new([fill(salt), fill(&bmp)].concat());
    let d = [id; V];
    let mut out = Zeroizing::new(Vec::with_capacity(n.div_ceil(U) * U));
    while out.len() < n {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = ctx.finish();
        for _ in 1..iterations {
            a = digest::digest(&digest::SHA256, a.as_ref());
        }
        out.extend_from_slice(a.as_ref());
        // B is A repeated to V bytes; each V-byte block of I becomes (I_j + B + 1) mod 2^(8V).
        let b: Vec<u8> = a.as_ref().iter().copied().cycle().take(V).collect();
        for block in i.chunks_mut(V) {
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().zip(&b).rev() {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures from OpenSSL's own implementation:
    /// `openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexpass:0073006D006500670000
    /// -kdfopt hexsalt:0A58CF64530D823F -kdfopt iter:2048 -kdfopt id:3 PKCS12KDF`, and the same
    /// with the empty password (`hexpass:0000`) and 3 iterations.
    #[test]
    fn kdf_matches_openssl() {
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let key = pkcs12_kdf("smeg", &salt, 3, 2048, 32);
        assert_eq!(crate::encoding::hex(&key), "e4388cd88983083b1d1552867406cb3426e16cbcf4358c7bf5a97cdb2a11db46");
        let key = pkcs12_kdf("", &salt, 3, 3, 32);
        assert_eq!(crate::encoding::hex(&key), "a317ef4f8014570a33a6012e9e209b5aa06b8d39c4fc8ef150add8fef40816cb");
    }
}
