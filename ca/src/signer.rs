//! Key access: the [`Signer`] trait, and [`FileSigner`], a key held in an encrypted PKCS#8 file.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use pki::{KeyKind, SignatureAlgorithm, SubjectKey};
use zeroize::Zeroizing;

use crate::{Error, Passphrase};

/// Something that signs with a CA key. One small trait, so a hardware module can replace the
/// key file.
pub trait Signer: Send + Sync {
    /// The public half of the key.
    fn public_key(&self) -> &SubjectKey;

    /// Signs `message` with [`Signer::algorithm`].
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;

    /// The signature algorithm, fixed by the key type.
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::for_key(self.public_key().kind())
    }
}

/// The key types `inkan init` can create for its CAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaKeyType {
    /// ECDSA on P-256, signing with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384, signing with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a 3072-bit modulus, PKCS#1 v1.5 with SHA-256.
    Rsa3072,
}

impl CaKeyType {
    /// The names accepted on the command line.
    pub const NAMES: &'static str = "ecdsa-p256, ecdsa-p384, ed25519, rsa-3072";
}

impl FromStr for CaKeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            "ecdsa-p384" => Ok(Self::EcdsaP384),
            "ed25519" => Ok(Self::Ed25519),
            "rsa-3072" => Ok(Self::Rsa3072),
            _ => Err(format!("unknown key type {s:?}; accepted: {}", Self::NAMES)),
        }
    }
}

enum KeyMaterial {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A CA key loaded from (or created for) an encrypted PKCS#8 file.
pub struct FileSigner {
    key: KeyMaterial,
    public: SubjectKey,
    rng: SystemRandom,
}

impl fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSigner").field("kind", &self.public.kind()).field("key", &"[redacted]").finish()
    }
}

const PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";

impl FileSigner {
    /// Creates a new key of `key_type`.
    pub fn generate(key_type: CaKeyType) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let key = match key_type {
            CaKeyType::EcdsaP256 => KeyMaterial::Ecdsa(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| Error::Signing)?,
            ),
            CaKeyType::EcdsaP384 => KeyMaterial::Ecdsa(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_ASN1_SIGNING).map_err(|_| Error::Signing)?,
            ),
            CaKeyType::Ed25519 => KeyMaterial::Ed25519(Ed25519KeyPair::generate().map_err(|_| Error::Signing)?),
            CaKeyType::Rsa3072 => KeyMaterial::Rsa(RsaKeyPair::generate(KeySize::Rsa3072).map_err(|_| Error::Signing)?),
        };
        Self::from_material(key, rng, Path::new("(new key)"))
    }

    fn from_material(key: KeyMaterial, rng: SystemRandom, path: &Path) -> Result<Self, Error> {
        let spki: Result<PublicKeyX509Der<'static>, _> = match &key {
            KeyMaterial::Ecdsa(k) => k.public_key().as_der(),
            KeyMaterial::Ed25519(k) => k.public_key().as_der(),
            KeyMaterial::Rsa(k) => k.public_key().as_der(),
        };
        let spki = spki.map_err(|_| Error::BadKey { path: path.into(), detail: "no public key".into() })?;
        let public = SubjectKey::from_spki_der(spki.as_ref())
            .map_err(|e| Error::BadKey { path: path.into(), detail: e.to_string() })?;
        Ok(Self { key, public, rng })
    }

    /// Encrypts the key as PKCS#8 PEM ("ENCRYPTED PRIVATE KEY"): PBES2 with scrypt
    /// (N=2^14, r=8, p=1, the parameters OpenSSL reads) and AES-256-CBC.
    pub fn to_encrypted_pem(&self, passphrase: &Passphrase) -> Result<Zeroizing<String>, Error> {
        let der = Zeroizing::new(self.pkcs8_der()?);
        let info = pkcs8::PrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|e| Error::BadKey { path: "(new key)".into(), detail: e.to_string() })?;
        let encrypted = info.encrypt(passphrase.as_bytes()).map_err(|_| Error::Signing)?;
        let pem = encrypted
            .to_pem(PEM_LABEL, pkcs8::LineEnding::LF)
            .map_err(|e| Error::BadKey { path: "(new key)".into(), detail: e.to_string() })?;
        Ok(pem)
    }

    fn pkcs8_der(&self) -> Result<Vec<u8>, Error> {
        let doc = match &self.key {
            KeyMaterial::Ecdsa(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            KeyMaterial::Ed25519(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            KeyMaterial::Rsa(k) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(k).map(|d| d.as_ref().to_vec()),
        };
        doc.map_err(|_| Error::Signing)
    }

    /// Loads an encrypted PKCS#8 PEM key file with `passphrase`.
    pub fn load(path: &Path, passphrase: &Passphrase) -> Result<Self, Error> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io("reading", path))?);
        let bad = |detail: String| Error::BadKey { path: path.into(), detail };
        let (label, doc) =
            pkcs8::SecretDocument::from_pem(&text).map_err(|e| bad(format!("not a PEM key file ({e})")))?;
        if label != PEM_LABEL {
            return Err(bad(format!("expected an {PEM_LABEL:?} PEM block, found {label:?}")));
        }
        let encrypted = pkcs8::EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes())
            .map_err(|e| bad(format!("not an encrypted PKCS#8 key ({e})")))?;
        let plain =
            encrypted.decrypt(passphrase.as_bytes()).map_err(|_| Error::WrongPassphrase { path: path.into() })?;
        let der = plain.as_bytes();
        let info = pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|e| bad(e.to_string()))?;
        let algorithm = info.algorithm.oid.to_string();
        let curve = info.algorithm.parameters_oid().ok().map(|oid| oid.to_string());
        let key = match (algorithm.as_str(), curve.as_deref()) {
            ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => KeyMaterial::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => KeyMaterial::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            ("1.3.101.112", _) => {
                KeyMaterial::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(|e| bad(e.to_string()))?)
            }
            ("1.2.840.113549.1.1.1", _) => {
                KeyMaterial::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|e| bad(e.to_string()))?)
            }
            _ => return Err(bad(format!("unsupported key algorithm {algorithm}"))),
        };
        let signer = Self::from_material(key, SystemRandom::new(), path)?;
        if let KeyKind::Rsa { bits } = signer.public.kind()
            && bits < 2048
        {
            return Err(bad(format!("RSA key of {bits} bits")));
        }
        Ok(signer)
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &SubjectKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.key {
            KeyMaterial::Ecdsa(k) => {
                k.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| Error::Signing)
            }
            KeyMaterial::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            KeyMaterial::Rsa(k) => {
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut out).map_err(|_| Error::Signing)?;
                Ok(out)
            }
        }
    }
}

/// Lets rcgen sign with a [`Signer`] (used only for the CA certificates made at `init`).
pub(crate) struct RcgenKey<'a>(pub &'a dyn Signer);

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self.0.public_key())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm().rcgen()
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}
