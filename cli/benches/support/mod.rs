//! What the benchmarks share (not every benchmark uses all of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `inkan serve`, stopped when dropped: SIGTERM, then SIGKILL after 15 s.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `inkan serve`, stopped when dropped; its ports and processes.
pub struct Inkan {
    _server: Server,
    /// The public HTTPS listener's port.
    pub port: u16,
    /// The signer's process.
    pub signer: u32,
    /// The web worker's process.
    pub worker: u32,
}

/// Starts `inkan` (the command, with its environment) as `serve` on `dir` with every listener on
/// a free loopback port, and returns once it reported its port and processes.
pub fn start_inkan(mut cmd: Command, dir: &Path, pass_file: &Path, durable: bool) -> Inkan {
    cmd.args([
        "serve",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--ca-passphrase-file",
        pass_file.to_str().expect("utf-8 path"),
    ])
    .args(["--listen", "127.0.0.1:0", "--login-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
    .args(["--est-listen", "127.0.0.1:0"])
    .env_remove("INKAN_CA_PASSPHRASE")
    .env("INKAN_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if !durable {
        cmd.arg("--danger-no-fsync");
    }
    let mut child = cmd.spawn().expect("starting inkan serve");
    let stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
    let server = Server(child);
    let (mut port, mut signer, mut worker) = (None, None, None);
    let pid = |line: &str, prefix: &str| -> Option<u32> {
        line.trim_start().strip_prefix(prefix)?.split_whitespace().next()?.parse().ok()
    };
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("https://localhost:").nth(1)
            && line.contains("/cert/acquire")
        {
            port = rest.split('/').next().and_then(|p| p.parse().ok());
        }
        signer = signer.or_else(|| pid(&line, "signer: process "));
        worker = worker.or_else(|| pid(&line, "web worker: process "));
        if port.is_some() && signer.is_some() && worker.is_some() {
            break;
        }
    }
    Inkan {
        _server: server,
        port: port.expect("serve reported its port"),
        signer: signer.expect("serve reported its signer's process"),
        worker: worker.expect("serve reported its web worker's process"),
    }
}
