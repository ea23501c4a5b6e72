//! Passphrases: zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

/// A passphrase that protects a private key. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase; a trailing newline (as files and prompts leave) is removed.
    pub fn new(mut text: String) -> Self {
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Self(Zeroizing::new(text))
    }

    /// Refuses passphrases too weak to protect a CA key: fewer than 12 characters.
    pub fn check_strength(&self) -> Result<(), crate::Error> {
        if self.0.chars().count() < 12 {
            return Err(crate::Error::WeakPassphrase { reason: "use at least 12 characters" });
        }
        Ok(())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The bytes, to hand to a child signer over a pipe (never argv or the environment).
    pub fn expose_for_pipe(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl PartialEq for Passphrase {
    /// Compares in constant time.
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.as_bytes(), other.as_bytes()).is_ok()
    }
}

impl Eq for Passphrase {}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_newline_trimmed() {
        let p = Passphrase::new("correct horse battery\n".into());
        assert_eq!(format!("{p:?}"), "[redacted]");
        assert_eq!(p.as_bytes(), b"correct horse battery");
        assert!(Passphrase::new("short".into()).check_strength().is_err());
    }
}
