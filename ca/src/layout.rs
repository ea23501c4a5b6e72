//! Where things live under the data directory, and how files are written safely.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The data directory:
///
/// ```text
/// DIR/inkan.toml        configuration (commented, written by init)
/// DIR/root/root.crt     offline root certificate       DIR/root/root.key  (0600, encrypted)
/// DIR/root/crl-number   the root CRL's last number
/// DIR/ca/ca.crt         issuing CA certificate         DIR/ca/ca.key      (0600, encrypted)
/// DIR/db/               the registry (sled)
/// DIR/web/              the enrollment service's accounts (sled)
/// DIR/server/           the enrollment service's TLS certificate and key
/// DIR/ocsp/             the OCSP responder's certificate and key (the signer's)
/// DIR/signer/ledger.log the signer's issuance ledger (ledger.idx: its index, rebuilt from it)
/// DIR/audit/audit.log   the hash-chained audit trail
/// DIR/crl/              the last CRLs signed (ca.crl, root.crl), DER, and the root's OCSP
///                       answer about the issuing CA (ca-ocsp.der)
/// DIR/signer.sock       the signer's socket          DIR/admin.sock  the web worker's (0600)
/// DIR/serve.lock        held by a running `inkan serve`
/// DIR/dev-secrets/      generated passphrases of `serve --dev` (0700)
/// ```
///
/// The web worker of `serve` may open `db/`, `web/`, `server/`, `crl/` and `audit/` only: root/,
/// ca/, ocsp/, signer/ and dev-secrets/ hold what it must never read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// A data directory at `path` (nothing is touched).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `inkan.toml`.
    pub fn config(&self) -> PathBuf {
        self.path.join("inkan.toml")
    }

    /// The root CA's directory.
    pub fn root_dir(&self) -> PathBuf {
        self.path.join("root")
    }

    /// The root certificate (PEM).
    pub fn root_cert(&self) -> PathBuf {
        self.root_dir().join("root.crt")
    }

    /// The root key (encrypted PKCS#8 PEM).
    pub fn root_key(&self) -> PathBuf {
        self.root_dir().join("root.key")
    }

    /// The root CRL's last number.
    pub fn root_crl_number(&self) -> PathBuf {
        self.root_dir().join("crl-number")
    }

    /// The issuing CA's directory.
    pub fn ca_dir(&self) -> PathBuf {
        self.path.join("ca")
    }

    /// The issuing CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.crt")
    }

    /// The issuing CA key (encrypted PKCS#8 PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.ca_dir().join("ca.key")
    }

    /// The registry's directory.
    pub fn db(&self) -> PathBuf {
        self.path.join("db")
    }

    /// The enrollment service's own store (accounts).
    pub fn web(&self) -> PathBuf {
        self.path.join("web")
    }

    /// The enrollment service's TLS certificate chain (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.path.join("server").join("server.crt")
    }

    /// The enrollment service's TLS key (PKCS#8 PEM, unencrypted, 0600: the service starts
    /// unattended).
    pub fn server_key(&self) -> PathBuf {
        self.path.join("server").join("server.key")
    }

    /// The key that seals the enrollment service's OTP secrets (32 bytes, 0600).
    pub fn otp_key(&self) -> PathBuf {
        self.path.join("server").join("otp.key")
    }

    /// The OCSP responder's certificate chain (PEM), kept by the signer.
    pub fn ocsp_cert(&self) -> PathBuf {
        self.path.join("ocsp").join("responder.crt")
    }

    /// The OCSP responder's key (PKCS#8 PEM, 0600), kept by the signer.
    pub fn ocsp_key(&self) -> PathBuf {
        self.path.join("ocsp").join("responder.key")
    }

    /// The signer's issuance ledger.
    pub fn ledger(&self) -> PathBuf {
        self.path.join("signer").join("ledger.log")
    }

    /// The signer's default socket.
    pub fn signer_socket(&self) -> PathBuf {
        self.path.join("signer.sock")
    }

    /// The running service's admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.path.join("admin.sock")
    }

    /// The audit trail's directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.path.join("audit")
    }

    /// The audit trail.
    pub fn audit_log(&self) -> PathBuf {
        self.audit_dir().join("audit.log")
    }

    /// Where a running service exports its stores for `inkan backup` (the web worker writes
    /// there, the CLI reads and removes).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snapshot")
    }

    /// The file a running `inkan serve` holds locked.
    pub fn serve_lock(&self) -> PathBuf {
        self.path.join("serve.lock")
    }

    /// The generated passphrases of `serve --dev`.
    pub fn dev_secrets(&self) -> PathBuf {
        self.path.join("dev-secrets")
    }

    /// The root's pre-signed OCSP answer about the issuing CA, served by the responder.
    pub fn ca_ocsp(&self) -> PathBuf {
        self.crl_dir().join(pki::published::CA_OCSP)
    }

    /// Where signed CRLs are published from.
    pub fn crl_dir(&self) -> PathBuf {
        self.path.join("crl")
    }

    /// The files whose presence means a CA exists here.
    pub fn ca_files(&self) -> [PathBuf; 4] {
        [self.root_cert(), self.root_key(), self.ca_cert(), self.ca_key()]
    }
}

/// Creates `path` with `contents` and `mode`, failing if it exists, and syncs it to disk.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(Error::io("creating", path))?;
    // The umask may have narrowed the mode; a key must not end up wider than asked.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io("setting mode of", path))?;
    file.write_all(contents).map_err(Error::io("writing", path))?;
    file.sync_all().map_err(Error::io("syncing", path))
}

/// Replaces `path` with `contents` atomically (write a temporary file, sync, rename, sync the
/// directory), so a crash leaves either the old or the new contents.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(Error::io("renaming into", path))?;
    sync_dir(dir)
}

/// Syncs a directory, so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing", dir))
}

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(Error::io("creating", dir))
}

/// Reads one PEM certificate file and returns its DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = fs::read(path).map_err(Error::io("reading", path))?;
    Ok(pki::encoding::decode_one(&bytes, "certificate", &["CERTIFICATE"])?)
}
