//! The one error type of the `pki` crate.

/// Everything that can go wrong while validating input or building a certificate or CRL.
///
/// Messages are written for the person who sent the input: they say what was found and
/// what is accepted. They never carry secret material (there is none in this crate).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input had no bytes (or only whitespace).
    #[error("the {what} is empty")]
    Empty {
        /// What was being read ("CSR", "certificate").
        what: &'static str,
    },
    /// The input is larger than the limit for its kind.
    #[error("the {what} is {size} bytes; at most {limit} bytes are accepted")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Text that looks like PEM but does not decode.
    #[error("the {what} is not valid PEM: {detail}")]
    MalformedPem {
        /// What was being read.
        what: &'static str,
        /// What the decoder reported.
        detail: String,
    },
    /// A PEM block with a label other than the expected one.
    #[error("expected a PEM block labelled {expected:?}, found {found:?}")]
    UnexpectedPemLabel {
        /// The accepted label.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// Bytes after the one object that was expected (a second PEM block, text, DER bytes).
    #[error("the {what} is followed by {extra} more bytes; send exactly one {what}")]
    TrailingData {
        /// What was being read.
        what: &'static str,
        /// How many bytes followed it.
        extra: usize,
    },
    /// Bytes that are not a valid DER encoding of the expected structure.
    #[error("the {what} is not a valid DER {what}: {detail}")]
    MalformedDer {
        /// What was being read.
        what: &'static str,
        /// What the parser reported.
        detail: String,
    },
    /// A CSR with a version other than v1 (0).
    #[error("the CSR has version {version}; only version 1 (encoded 0) exists")]
    UnsupportedCsrVersion {
        /// The version number found.
        version: u32,
    },
    /// The CSR signature does not verify with the CSR's own key.
    #[error("the CSR signature does not verify with its public key (no proof of possession)")]
    BadCsrSignature,
    /// A public key of a type inkan does not certify.
    #[error("unsupported key: {found}; accepted: {}", crate::key::ACCEPTED_KEYS)]
    UnsupportedKey {
        /// A description of the key found.
        found: String,
    },
    /// An RSA key whose modulus size is outside the accepted range.
    #[error("RSA key of {bits} bits; accepted: RSA keys of 2048 to 8192 bits")]
    RsaKeySize {
        /// Modulus size in bits.
        bits: usize,
    },
    /// An RSA key whose public exponent is not 65537.
    #[error("RSA public exponent {exponent}; accepted: 65537")]
    RsaExponent {
        /// The exponent, in decimal (or hex for very large ones).
        exponent: String,
    },
    /// Key bytes that do not form a valid key of the named type.
    #[error("invalid {kind} public key: {detail}")]
    InvalidPublicKey {
        /// The key type named by the algorithm identifier.
        kind: String,
        /// What was wrong.
        detail: String,
    },
    /// A signature algorithm not accepted for the key it is used with.
    #[error("unsupported signature algorithm {found} with a {key} key; accepted: {accepted}")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm found.
        found: String,
        /// The key type.
        key: String,
        /// What is accepted for that key type.
        accepted: &'static str,
    },
    /// The request carries the CA's own public key.
    #[error("the CSR's public key is the CA's own key; generate a new key pair")]
    CaKeyReused,
    /// An account identifier that cannot go into a subject name.
    #[error("invalid account ID {account:?}: {reason}")]
    InvalidAccount {
        /// The account identifier given.
        account: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A subject alternative name that is neither a DNS name nor an IP address.
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The value given.
        san: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Subject alternative names given for a profile that does not carry them.
    #[error("the {profile} profile does not carry subject alternative names; use --profile server")]
    SanNotAllowed {
        /// The profile name.
        profile: &'static str,
    },
    /// A name asked for outside the account's allowed-names policy.
    #[error("{name} is outside the names this account may have certified ({allowed})")]
    NameOutsidePolicy {
        /// The name asked for.
        name: String,
        /// The policy, as entries.
        allowed: String,
    },
    /// The server (or client-server) profile without any subject alternative name.
    #[error("the server profile needs at least one subject alternative name (--san)")]
    MissingSan,
    /// A profile name that does not exist.
    #[error("unknown profile {found:?}; accepted: client, server, client-server")]
    UnknownProfile {
        /// The name given.
        found: String,
    },
    /// A requested validity that cannot be issued.
    #[error("invalid validity: {reason}")]
    InvalidValidity {
        /// Why it was refused.
        reason: String,
    },
    /// A CA certificate that cannot be used as an issuer.
    #[error("unusable CA certificate: {detail}")]
    InvalidIssuer {
        /// What was wrong.
        detail: String,
    },
    /// A pre-issuance check on the to-be-signed bytes failed. This is an inkan bug, not a
    /// user error: nothing is signed.
    #[error("pre-issuance check {check} failed: {detail}")]
    Lint {
        /// The name of the check.
        check: &'static str,
        /// What it found.
        detail: String,
    },
    /// The certificate or CRL encoder refused the parameters.
    #[error("could not encode the {what}: {detail}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// What the encoder reported.
        detail: String,
    },
    /// Text that is not a certificate serial number in inkan's form.
    #[error("invalid serial {input:?}: expected 32 hexadecimal digits, as `openssl x509 -serial` prints them")]
    InvalidSerial {
        /// The text given.
        input: String,
    },
    /// A revocation reason name that RFC 5280 does not define or inkan does not use.
    #[error("unknown revocation reason {input:?}; accepted: {}", crate::crl::ACCEPTED_REASONS)]
    InvalidReason {
        /// The text given.
        input: String,
    },
}
