//! Signed checkpoints of the audit trail: how many lines it had and the SHA-256 of the last,
//! at a time, signed by the issuing CA key in the signer. A hash chain alone cannot show lines
//! cut off its end, or a tail replaced by another valid chain; a checkpoint kept in the
//! signer's ledger, published at `/audit/checkpoint` and copied by whoever relies on the log
//! can.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use pki::{IssuerInfo, SignatureAlgorithm};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Error;
use crate::signer::Signer;

/// What is signed comes after this, so a checkpoint signature can never be taken for a
/// certificate's or a CRL's (those sign DER, which starts with 0x30).
const CONTEXT: &[u8] = b"inkan audit checkpoint v1\n";

/// What a checkpoint states. Its fields are in alphabetical order: the signed JSON is the
/// object with sorted keys, compact, which any JSON library can make again to check the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// SHA-256 (hex) of the last line, without its newline: the chain's head.
    pub last_line_sha256: String,
    /// The number of lines the trail had.
    pub lines: u64,
    /// When it was signed (RFC 3339).
    pub time: String,
}

/// A checkpoint with its signature: what the ledger keeps and `/audit/checkpoint` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The statement.
    pub checkpoint: Checkpoint,
    /// The signature algorithm's OID.
    pub algorithm: String,
    /// Base64 of the signature over "inkan audit checkpoint v1\n" followed by the statement's
    /// JSON (compact, keys sorted).
    pub signature: String,
    /// SHA-256 fingerprint of the CA certificate whose key signed it (hex, lower case).
    pub signer: String,
}

impl Checkpoint {
    fn message(&self) -> Vec<u8> {
        let mut message = CONTEXT.to_vec();
        message.extend(serde_json::to_vec(self).unwrap_or_default());
        message
    }

    /// Signs the checkpoint with the CA key of `ca_der`.
    pub fn sign(self, signer: &dyn Signer, ca_der: &[u8]) -> Result<SignedCheckpoint, Error> {
        let signature = signer.sign(&self.message())?;
        Ok(SignedCheckpoint {
            algorithm: signer.algorithm().oid().to_owned(),
            signature: pki::encoding::base64_lines(&signature).replace('\n', ""),
            signer: sha256_hex(ca_der),
            checkpoint: self,
        })
    }
}

impl SignedCheckpoint {
    /// The JSON form (one line).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an audit checkpoint: {e}"))
    }

    /// Checks the signature with the CA certificate among `cas` (DER) it names.
    pub fn verify(&self, cas: &[Vec<u8>]) -> Result<(), String> {
        let ca = cas
            .iter()
            .find(|der| sha256_hex(der) == self.signer)
            .ok_or_else(|| "the checkpoint is signed by a CA certificate that is not this CA's".to_owned())?;
        let issuer = IssuerInfo::from_der(ca).map_err(|e| e.to_string())?;
        let algorithm = SignatureAlgorithm::for_key(issuer.public_key().kind());
        let signature = pki::encoding::base64_decode(&self.signature).ok_or("the signature is not base64")?;
        if algorithm.oid() != self.algorithm
            || !issuer.public_key().verify_with(algorithm, &self.checkpoint.message(), &signature)
        {
            return Err("the checkpoint's signature does not verify with the CA certificate".into());
        }
        Ok(())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    pki::encoding::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// How a trail stands against a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Against {
    /// Line `lines` of the trail is the checkpoint's; `after` lines follow it.
    Covers {
        /// Lines the checkpoint covers.
        lines: u64,
        /// Lines written since.
        after: u64,
    },
    /// The trail is shorter than the checkpoint: lines were cut off its end.
    Truncated {
        /// Lines in the trail.
        lines: u64,
        /// Lines the checkpoint saw.
        expected: u64,
    },
    /// Line `line` differs from the one the checkpoint saw: the trail was rewritten from there
    /// or earlier and chained anew.
    Forked {
        /// The checkpoint's last line.
        line: u64,
    },
}

/// Compares the trail at `path` (its chain already verified, `lines` long) with `checkpoint`.
pub fn compare(path: &Path, lines: u64, checkpoint: &Checkpoint) -> Result<Against, Error> {
    if lines < checkpoint.lines {
        return Ok(Against::Truncated { lines, expected: checkpoint.lines });
    }
    if checkpoint.lines == 0 {
        return Ok(Against::Covers { lines: 0, after: lines });
    }
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    for _ in 0..checkpoint.lines {
        line.clear();
        reader.read_until(b'\n', &mut line).map_err(Error::io("reading", path))?;
    }
    let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
    if sha256_hex(bytes) != checkpoint.last_line_sha256 {
        return Ok(Against::Forked { line: checkpoint.lines });
    }
    Ok(Against::Covers { lines: checkpoint.lines, after: lines - checkpoint.lines })
}

/// Follows the trail as it grows: its line count and head, reading only what is new.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    lines: u64,
    head: String,
    partial: Vec<u8>,
}

impl Tail {
    /// Starts at the beginning of the trail at `path`.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), offset: 0, lines: 0, head: String::new(), partial: Vec::new() }
    }

    /// Reads what was appended since the last call; the line count and the head after it.
    /// A file shorter than what was read is an error (cut, or replaced).
    pub fn poll(&mut self) -> Result<(u64, String), String> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.offset == 0 => return Ok((0, String::new())),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < self.offset {
            return Err(format!(
                "{} is shorter than when it was last read ({len} < {} bytes): cut or replaced",
                self.path.display(),
                self.offset
            ));
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| e.to_string())?;
        let mut new = Vec::new();
        file.take(len - self.offset).read_to_end(&mut new).map_err(|e| e.to_string())?;
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            self.head = sha256_hex(&self.partial[..end]);
            self.lines += 1;
            self.partial.drain(..=end);
        }
        Ok((self.lines, self.head.clone()))
    }
}

/// A new checkpoint for a trail of `lines` lines whose last hashes to `head`, at `now`.
pub fn statement(lines: u64, head: String, now: OffsetDateTime) -> Checkpoint {
    Checkpoint { lines, last_line_sha256: head, time: pki::encoding::rfc3339(now) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{CaKeyType, FileSigner, RcgenKey};

    fn ca_der(key: &FileSigner) -> Vec<u8> {
        let validity = pki::Validity::for_days(OffsetDateTime::now_utc(), 10, None).expect("validity");
        let serial = crate::authority::random_serial().expect("serial");
        let params = pki::profile::root_ca_params("test", &serial, &validity, key.public_key());
        params.self_signed(&RcgenKey(key)).expect("certificate").der().to_vec()
    }

    #[test]
    fn a_checkpoint_verifies_with_its_ca_and_nothing_else() {
        let key = FileSigner::generate(CaKeyType::EcdsaP256).expect("key");
        let other = FileSigner::generate(CaKeyType::EcdsaP256).expect("key");
        let ca = ca_der(&key);
        let signed = statement(3, "ab".repeat(32), OffsetDateTime::UNIX_EPOCH).sign(&key, &ca).expect("sign");
        assert_eq!(signed.verify(std::slice::from_ref(&ca)), Ok(()));
        let back = SignedCheckpoint::from_json(&signed.to_json()).expect("json");
        assert_eq!(back.verify(std::slice::from_ref(&ca)), Ok(()));
        let mut changed = signed.clone();
        changed.checkpoint.lines = 2;
        assert!(changed.verify(std::slice::from_ref(&ca)).is_err());
        let forged = statement(3, "ab".repeat(32), OffsetDateTime::UNIX_EPOCH).sign(&other, &ca).expect("sign");
        assert!(forged.verify(std::slice::from_ref(&ca)).is_err(), "signed by another key");
        assert!(signed.verify(&[]).is_err());
    }

    #[test]
    fn the_tail_follows_appends_and_notices_a_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut tail = Tail::new(&path);
        assert_eq!(tail.poll(), Ok((0, String::new())));
        std::fs::write(&path, "one\ntw").expect("write");
        assert_eq!(tail.poll().expect("poll").0, 1);
        std::fs::write(&path, "one\ntwo\nthree\n").expect("write");
        let (lines, head) = tail.poll().expect("poll");
        assert_eq!((lines, head), (3, sha256_hex(b"three")));
        let checkpoint = statement(2, sha256_hex(b"two"), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(compare(&path, 3, &checkpoint).expect("compare"), Against::Covers { lines: 2, after: 1 });
        let forked = statement(2, sha256_hex(b"TWO"), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(compare(&path, 3, &forked).expect("compare"), Against::Forked { line: 2 });
        assert_eq!(compare(&path, 1, &checkpoint).expect("compare"), Against::Truncated { lines: 1, expected: 2 });
        std::fs::write(&path, "one\n").expect("write");
        assert!(tail.poll().is_err());
    }
}
