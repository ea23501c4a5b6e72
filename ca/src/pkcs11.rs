//! CA keys in a PKCS#11 token (a hardware security module, or SoftHSM in tests): the key is made
//! inside the token, marked sensitive and never extractable, and every signature is the token's.
//!
//! In the data directory the key file (`root/root.key`, `ca/ca.key`) then holds no key at all,
//! only a [`TokenKey`]: which module, which token and which key label. The "passphrase" that
//! would decrypt a key file is the token's user PIN, from the same sources (a file, the signer's
//! environment, or a prompt).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use pki::{KeyKind, SubjectKey};
use serde::{Deserialize, Serialize};

use crate::signer::{CaKeyType, Signer};
use crate::{Error, Passphrase};

/// The first line of a key file that names a key in a token.
const MARK: &str = "# inkan: this CA key is inside a PKCS#11 token; this file only names it.";

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const RSA_ALGORITHM: &[u8] =
    &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];

/// Where a CA key lives in a token: what a key file holds instead of the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenKey {
    /// The PKCS#11 module (a shared library).
    pub pkcs11_module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The label of the key pair inside the token.
    pub key_label: String,
}

impl TokenKey {
    /// The reference in the key file at `path`, or `None` when the file holds a key (PEM).
    pub fn read(path: &Path) -> Result<Option<Self>, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
        if !text.starts_with(MARK) {
            return Ok(None);
        }
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| Error::BadKey { path: path.into(), detail: format!("not a token key reference: {e}") })
    }

    /// The key file's text: the mark, then the reference as TOML.
    pub fn to_file_text(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("{MARK}\n# The token's user PIN is asked where a key passphrase would be.\n{body}")
    }

    fn what(&self) -> String {
        format!("key {:?} in token {:?} ({})", self.key_label, self.token_label, self.pkcs11_module.display())
    }

    /// Makes a new key pair of `key_type` inside the token: private, sensitive, never
    /// extractable, for signing only. Refuses a label already in use.
    pub fn generate(&self, pin: &Passphrase, key_type: CaKeyType) -> Result<TokenSigner, Error> {
        let session = self.session(pin)?;
        if !find(&session, ObjectClass::PRIVATE_KEY, &self.key_label).map_err(|e| self.failed(e))?.is_empty() {
            return Err(Error::Token {
                detail: format!("{} already exists; choose another token or remove it", self.what()),
            });
        }
        let label = Attribute::Label(self.key_label.as_bytes().to_vec());
        let id = Attribute::Id(self.key_label.as_bytes().to_vec());
        let (mechanism, mut public, mut private) = match key_type {
            CaKeyType::EcdsaP256 | CaKeyType::EcdsaP384 => {
                let curve = if key_type == CaKeyType::EcdsaP256 { OID_P256 } else { OID_P384 };
                (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(curve.to_vec())], vec![])
            }
            CaKeyType::Rsa3072 => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![Attribute::ModulusBits(3072.into()), Attribute::PublicExponent(vec![0x01, 0x00, 0x01])],
                vec![],
            ),
            CaKeyType::Ed25519 => {
                return Err(Error::Token {
                    detail: "ed25519 keys are not made in a token; use ecdsa-p256, ecdsa-p384 or rsa-3072".into(),
                });
            }
        };
        // Signing and verifying only: no decrypt, unwrap or derive with a CA key.
        public.extend([
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            label.clone(),
            id.clone(),
        ]);
        private.extend([
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            label,
            id,
        ]);
        session.generate_key_pair(&mechanism, &public, &private).map_err(|e| self.failed(e))?;
        self.signer(session)
    }

    /// Opens the key with the token's user PIN.
    pub fn open(&self, pin: &Passphrase) -> Result<TokenSigner, Error> {
        let session = self.session(pin)?;
        self.signer(session)
    }

    fn failed(&self, e: Pkcs11Error) -> Error {
        Error::Token { detail: format!("{}: {e}", self.what()) }
    }

    fn session(&self, pin: &Passphrase) -> Result<Session, Error> {
        let context = context(&self.pkcs11_module)?;
        let slot = self.slot(&context)?;
        let session = context.open_rw_session(slot).map_err(|e| self.failed(e))?;
        let text = std::str::from_utf8(pin.as_bytes())
            .map_err(|_| Error::Token { detail: "the PIN is not valid UTF-8".into() })?;
        match session.login(UserType::User, Some(&AuthPin::from(text.to_owned()))) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid, _)) => {
                Err(Error::Token { detail: format!("wrong PIN for token {:?}", self.token_label) })
            }
            Err(Pkcs11Error::Pkcs11(RvError::PinLocked, _)) => Err(Error::Token {
                detail: format!(
                    "the user PIN of token {:?} is locked; its security officer must reset it",
                    self.token_label
                ),
            }),
            Err(e) => Err(self.failed(e)),
        }
    }

    fn slot(&self, context: &Pkcs11) -> Result<Slot, Error> {
        let slots = context.get_slots_with_token().map_err(|e| self.failed(e))?;
        let mut labels = Vec::new();
        for slot in slots {
            let Ok(info) = context.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_owned();
            if label == self.token_label {
                return Ok(slot);
            }
            labels.push(format!("{label:?}"));
        }
        let found = if labels.is_empty() { "none".to_owned() } else { labels.join(", ") };
        Err(Error::Token {
            detail: format!(
                "no token labelled {:?} in {}; tokens found: {found}",
                self.token_label,
                self.pkcs11_module.display()
            ),
        })
    }

    fn signer(&self, session: Session) -> Result<TokenSigner, Error> {
        let not_found = || Error::Token { detail: format!("{} not found", self.what()) };
        let private = *find(&session, ObjectClass::PRIVATE_KEY, &self.key_label)
            .map_err(|e| self.failed(e))?
            .first()
            .ok_or_else(not_found)?;
        let public = *find(&session, ObjectClass::PUBLIC_KEY, &self.key_label)
            .map_err(|e| self.failed(e))?
            .first()
            .ok_or_else(not_found)?;
        let wanted = [AttributeType::KeyType, AttributeType::EcParams, AttributeType::EcPoint, AttributeType::Modulus];
        let wanted_rsa = [AttributeType::PublicExponent];
        let mut key_type = None;
        let (mut params, mut point, mut modulus, mut exponent) = (None, None, None, None);
        let attributes = session.get_attributes(public, &wanted).map_err(|e| self.failed(e))?;
        let rsa = session.get_attributes(public, &wanted_rsa).unwrap_or_default();
        for attribute in attributes.into_iter().chain(rsa) {
            match attribute {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                _ => {}
            }
        }
        let bad = |detail: &str| Error::Token { detail: format!("{}: {detail}", self.what()) };
        let spki = match (key_type, params, point, modulus, exponent) {
            (Some(KeyType::EC), Some(params), Some(point), _, _) => {
                if params != OID_P256 && params != OID_P384 {
                    return Err(bad("an EC key on a curve other than P-256 or P-384"));
                }
                // CKA_EC_POINT is the DER OCTET STRING around the uncompressed point.
                let point = match point.split_first() {
                    Some((0x04, rest)) if der_value(rest).is_some_and(|v| v.first() == Some(&0x04)) => {
                        der_value(rest).unwrap_or_default().to_vec()
                    }
                    _ => point,
                };
                tlv(0x30, &[tlv(0x30, &[OID_EC_PUBLIC_KEY.to_vec(), params]), bit_string(&point)])
            }
            (Some(KeyType::RSA), _, _, Some(modulus), Some(exponent)) => {
                let rsa_key = tlv(0x30, &[integer(&modulus), integer(&exponent)]);
                tlv(0x30, &[RSA_ALGORITHM.to_vec(), bit_string(&rsa_key)])
            }
            _ => return Err(bad("not an EC or RSA key pair, or its public key is not readable")),
        };
        let public = SubjectKey::from_spki_der(&spki).map_err(|e| bad(&e.to_string()))?;
        if let KeyKind::Rsa { bits } = public.kind()
            && bits < 2048
        {
            return Err(bad(&format!("an RSA key of {bits} bits")));
        }
        Ok(TokenSigner { session: Mutex::new(session), key: private, public, what: self.what() })
    }
}

/// A key that stays in its token; signatures are made there.
pub struct TokenSigner {
    session: Mutex<Session>,
    key: ObjectHandle,
    public: SubjectKey,
    what: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner").field("key", &self.what).field("kind", &self.public.kind()).finish()
    }
}

impl Signer for TokenSigner {
    fn public_key(&self) -> &SubjectKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let session = self.session.lock().map_err(|_| Error::Signing)?;
        match self.public.kind() {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => {
                let hash = if self.public.kind() == KeyKind::EcdsaP256 { &digest::SHA256 } else { &digest::SHA384 };
                let digest = digest::digest(hash, message);
                let raw = session.sign(&Mechanism::Ecdsa, self.key, digest.as_ref()).map_err(|_| Error::Signing)?;
                ecdsa_der(&raw).ok_or(Error::Signing)
            }
            KeyKind::Rsa { .. } => {
                session.sign(&Mechanism::Sha256RsaPkcs, self.key, message).map_err(|_| Error::Signing)
            }
            _ => Err(Error::Signing),
        }
    }
}

/// One loaded and initialised module per path for the life of the process: PKCS#11 allows one
/// `C_Initialize` per process, and the root and the issuing CA may share a module.
fn context(module: &Path) -> Result<Pkcs11, Error> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Mutex::default).lock().map_err(|_| Error::Signing)?;
    if let Some(context) = loaded.get(module) {
        return Ok(context.clone());
    }
    let failed = |e: Pkcs11Error| Error::Token { detail: format!("PKCS#11 module {}: {e}", module.display()) };
    let context = Pkcs11::new(module).map_err(failed)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e)),
    }
    loaded.insert(module.to_owned(), context.clone());
    Ok(context)
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    session.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
}

/// A DER TLV.
fn tlv(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = parts.iter().map(Vec::len).sum();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[vec![0], bytes.to_vec()])
}

/// A DER INTEGER of the unsigned big-endian `bytes`.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&trimmed);
    tlv(0x02, &[content])
}

/// The value of a DER TLV whose tag was already taken off (`rest` starts at the length).
fn der_value(rest: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)), &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// PKCS#11 gives an ECDSA signature as r‖s; X.509 wants the DER `ECDSA-Sig-Value`.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(tlv(0x30, &[integer(r), integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_integers_are_der() {
        assert_eq!(integer(&[0x00, 0x00, 0x7f]), vec![0x02, 0x01, 0x7f]);
        assert_eq!(integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0x00]), vec![0x02, 0x01, 0x00]);
        let mut raw = vec![0xff; 48];
        raw.extend([0x01; 48]);
        let der = ecdsa_der(&raw).expect("der");
        assert_eq!(&der[..3], &[0x30, 0x65, 0x02]);
        assert_eq!(der.len(), 2 + (2 + 49) + (2 + 48));
        assert_eq!(ecdsa_der(&[1, 2, 3]), None);
        let long = tlv(0x04, &[vec![7; 300]]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_value(&long[1..]).map(<[u8]>::len), Some(300));
        assert_eq!(der_value(&[0x05, 1, 2]), None);
    }

    #[test]
    fn a_reference_file_reads_back_and_a_pem_is_not_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TokenKey {
            pkcs11_module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "inkan \"test\"".into(),
            key_label: "inkan-ca-1".into(),
        };
        let path = dir.path().join("ca.key");
        std::fs::write(&path, key.to_file_text()).expect("write");
        assert_eq!(TokenKey::read(&path).expect("read"), Some(key));
        std::fs::write(&path, "-----BEGIN ENCRYPTED PRIVATE KEY-----\n").expect("write");
        assert_eq!(TokenKey::read(&path).expect("read"), None);
        std::fs::write(&path, format!("{MARK}\ntoken-label = 1\n")).expect("write");
        assert!(TokenKey::read(&path).is_err());
    }
}
