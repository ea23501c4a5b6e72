//! To-be-signed bytes from rcgen, without a private key.
//!
//! rcgen encodes a certificate or CRL and hands the to-be-signed bytes to a `SigningKey`.
//! [`TbsCapture`] is a key that keeps those bytes instead of signing them, so inkan can lint
//! the exact bytes, record the issuance, and only then have the CA key sign them (ARCHITECTURE:
//! "record before sign"). The signature rcgen writes around them is empty and discarded.

use std::cell::RefCell;

use crate::Error;
use crate::key::SignatureAlgorithm;

thread_local! {
    /// rcgen calls `sign` synchronously on the calling thread, so a thread-local slot lets one
    /// shared issuer serve concurrent callers.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Stands in for the issuer's key while rcgen encodes: same public key, same algorithm.
pub(crate) struct TbsCapture {
    /// The issuer's subjectPublicKey bits.
    public_key: Vec<u8>,
    algorithm: SignatureAlgorithm,
}

impl TbsCapture {
    pub(crate) fn new(public_key: Vec<u8>, algorithm: SignatureAlgorithm) -> Self {
        Self { public_key, algorithm }
    }
}

impl rcgen::PublicKeyData for TbsCapture {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen()
    }
}

impl rcgen::SigningKey for TbsCapture {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        CAPTURED.with(|slot| *slot.borrow_mut() = Some(msg.to_vec()));
        Ok(Vec::new())
    }
}

/// Runs an rcgen encoding whose issuer key is a [`TbsCapture`] and returns the TBS bytes.
pub(crate) fn capture<T>(
    what: &'static str,
    encode: impl FnOnce() -> Result<T, rcgen::Error>,
) -> Result<Vec<u8>, Error> {
    CAPTURED.with(|slot| slot.borrow_mut().take());
    encode().map_err(|e| Error::Encoding { what, detail: e.to_string() })?;
    CAPTURED
        .with(|slot| slot.borrow_mut().take())
        .ok_or(Error::Encoding { what, detail: "the encoder produced nothing to sign".into() })
}

/// `SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }`: a signed certificate or CRL.
pub(crate) fn assemble(tbs: &[u8], algorithm: SignatureAlgorithm, signature: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(tbs);
            w.next().write_der(algorithm.algorithm_identifier());
            w.next().write_bitvec_bytes(signature, signature.len() * 8);
        });
    })
}
