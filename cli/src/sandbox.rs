//! What a process of `serve` gives up: core dumps and ptrace by other users (all of them),
//! memory that can be swapped out (the supervisor's passphrase), root (the web worker, when
//! `[server] user` names another user) and files outside its own (the web worker, with
//! Landlock). Each step that the system cannot do is said once in the log, and the process goes
//! on: a missing Landlock is a warning, not a refusal to serve.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ca::layout::DataDir;
use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules};

/// Makes this process non-dumpable: no core file, and /proc/PID/mem, environ and ptrace only
/// for root.
pub fn no_core_dumps() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "prctl(PR_SET_DUMPABLE, 0) failed: this process can be dumped");
    }
}

/// Raises this process's soft limit on open files to the hard one, and returns it: the web
/// worker's connection caps must fit under it.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Keeps the pages holding `bytes` in memory (never swapped out), while the guard lives.
pub fn lock_in_memory(bytes: &[u8]) -> Option<region::LockGuard> {
    if bytes.is_empty() {
        return None;
    }
    match region::lock(bytes.as_ptr(), bytes.len()) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(error = %e, "mlock is not allowed here: the passphrase may be swapped out");
            None
        }
    }
}

/// The user and group of `[server] user`, when this process runs as root and that user is
/// another: the web worker switches to it, the signer lets its group reach the socket.
pub fn service_user(user: &str) -> anyhow::Result<Option<nix::unistd::User>> {
    use nix::unistd::{User, getuid};
    if !getuid().is_root() {
        tracing::warn!(user, "[server] user is set but inkan was not started as root: not switching");
        return Ok(None);
    }
    let Some(found) = User::from_name(user).with_context(|| format!("looking up user {user:?}"))? else {
        bail!("[server] user {user:?}: no such user");
    };
    Ok((!found.uid.is_root()).then_some(found))
}

/// Gives `paths` (recursively) to `user` and lets its group traverse `data_dir` (group owner,
/// mode 0710: it can reach its directories by name, list nothing), then switches to it (its
/// group, no supplementary groups). Afterwards the process is made non-dumpable again (a
/// credential change resets that), and each path is checked to be reachable.
pub fn switch_user(found: &nix::unistd::User, paths: &[PathBuf], data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    use nix::unistd::{Gid, setgid, setgroups, setuid};
    let user = found.name.as_str();
    for path in paths {
        chown_tree(path, found.uid.as_raw(), found.gid.as_raw())
            .with_context(|| format!("giving {} to {user}", path.display()))?;
    }
    std::os::unix::fs::chown(data_dir, None, Some(found.gid.as_raw()))
        .with_context(|| format!("chown {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o710))
        .with_context(|| format!("chmod {}", data_dir.display()))?;
    setgroups(&[found.gid]).context("setgroups")?;
    setgid(Gid::from_raw(found.gid.as_raw())).context("setgid")?;
    setuid(found.uid).context("setuid")?;
    no_core_dumps();
    for path in paths {
        if let Err(e) = std::fs::read_dir(path) {
            bail!(
                "as {user}, {} cannot be opened ({e}): every directory above the data directory must be \
                 searchable by {user}",
                path.display()
            );
        }
    }
    tracing::info!(user, uid = found.uid.as_raw(), "the web worker runs as {user}");
    Ok(())
}

/// Gives a tree to `uid`/`gid` without following a link in it: the worker that wrote the tree
/// last time could have planted a symbolic link (to /etc/shadow, say) or a hard link for root
/// to give away. Symbolic links are left as they are (lchown does not follow them) and files with
/// other names elsewhere (more than one hard link) are refused.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_file() && meta.nlink() > 1 {
        return Err(std::io::Error::other(format!("{} has other names (hard links): refused", path.display())));
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Lets the group `gid` (the web worker's) connect to the signer's socket: group owner, mode
/// 0660.
pub fn share_socket(socket: &Path, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(socket, None, Some(gid)).with_context(|| format!("chown {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok(())
}

/// The directories of the data directory the web worker writes.
pub fn worker_dirs(dir: &DataDir) -> Vec<PathBuf> {
    vec![dir.db(), dir.web(), dir.path().join("server"), dir.crl_dir(), dir.audit_dir(), dir.snapshot_dir()]
}

/// System paths the web worker reads: TLS roots and name resolution (expiry notices), time
/// zones, shared libraries (NSS modules load late).
const SYSTEM_READ: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/usr/lib",
    "/lib",
    "/lib64",
];

/// How far the file restriction went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    /// Every rule is enforced.
    Fully,
    /// The kernel enforces some of the rules.
    Partly,
    /// The kernel has no Landlock: nothing is restricted.
    Not,
}

/// Restricts this thread, and every thread it starts afterwards, to `writable` (read, write,
/// create, remove) and `readable` (read only) and the system paths above; everything else under
/// the file system, the CA's keys, ledger and passphrases among it, cannot be opened. Call it
/// before any other thread starts.
pub fn restrict_files(writable: &[PathBuf], readable: &[PathBuf], data_dir: &Path) -> anyhow::Result<Restricted> {
    let abi = ABI::V5;
    let data_dir = std::fs::canonicalize(data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    // A system path that holds the data directory would open all of it: leave such a path out.
    let system: Vec<PathBuf> = SYSTEM_READ
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists() && !data_dir.starts_with(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect();
    let existing = |paths: &[PathBuf]| -> Vec<PathBuf> { paths.iter().filter(|p| p.exists()).cloned().collect() };
    // Its own directories: files and folders to read, write, make and remove; no symbolic
    // links, devices, sockets, fifos, renames across folders or execution.
    let own = AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::MakeDir
        | AccessFs::MakeReg
        | AccessFs::Truncate;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(existing(writable), own))?
        .add_rules(path_beneath_rules(existing(readable), AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(system, AccessFs::from_read(abi)))?
        .restrict_self()
        .context("restricting file access (Landlock)")?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Restricted::Fully,
        RulesetStatus::PartiallyEnforced => Restricted::Partly,
        _ => Restricted::Not,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Landlock restricts the calling thread and the threads it starts: a thread restricted as
    /// the web worker is can use its own directories and the system's, and cannot open the CA's
    /// key, the signer's ledger or files outside.
    #[test]
    fn a_restricted_thread_cannot_open_the_ca_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path().join("data"));
        let signer_dir = dir.ledger().parent().expect("the ledger's folder").to_owned();
        for path in worker_dirs(&dir).iter().chain([&dir.ca_dir(), &dir.root_dir(), &signer_dir]) {
            std::fs::create_dir_all(path).expect("mkdir");
        }
        std::fs::write(dir.ca_key(), "key").expect("write");
        std::fs::write(dir.ledger(), "ledger").expect("write");
        std::fs::write(dir.db().join("conf"), "db").expect("write");
        std::fs::write(tmp.path().join("elsewhere"), "x").expect("write");
        let writable = worker_dirs(&dir);
        let (data, tmp_path) = (dir.clone(), tmp.path().to_owned());
        let outcome = std::thread::spawn(move || {
            let status = restrict_files(&writable, &[], data.path()).expect("restricting");
            let opens = |path: &Path| std::fs::File::open(path).is_ok();
            (
                status,
                opens(&data.ca_key()),
                opens(&data.ledger()) || std::os::unix::fs::symlink(data.ca_key(), data.db().join("key")).is_ok(),
                opens(&tmp_path.join("elsewhere")),
                opens(&data.db().join("conf")),
                std::fs::write(data.crl_dir().join("ca.crl"), "crl").is_ok(),
                std::fs::write(data.path().join("planted"), "x").is_ok(),
                opens(Path::new("/etc/ssl/certs")) || !Path::new("/etc/ssl/certs").exists(),
            )
        })
        .join()
        .expect("the restricted thread");
        let (status, ca_key, ledger, elsewhere, db, crl, planted, system) = outcome;
        assert_ne!(status, Restricted::Not, "this kernel has no Landlock: the web worker would run unrestricted");
        assert!(
            !ca_key && !ledger && !elsewhere,
            "opened a file outside the worker's own, or linked to one: {outcome:?}"
        );
        assert!(db && crl && system, "could not use its own directories: {outcome:?}");
        assert!(!planted, "created a file at the top of the data directory");
        // This thread was not restricted: only the one that asked is.
        assert!(std::fs::File::open(dir.ca_key()).is_ok());
    }
}
