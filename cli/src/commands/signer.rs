//! `inkan signer`: the process that holds the issuing CA key, answering on a Unix socket and,
//! with `--listen`, on TCP with mutual TLS for service instances on other machines.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ca::Passphrase;
use ca::audit::AuditLog;
use ca::layout::{self, DataDir};
use ca::remote::{self, SignerService};
use ca::responder::OcspSigner;
use ca::service::local_signer;
use ca::sled_store::Durability;

use crate::args::SignerArgs;
use crate::config::Config;
use crate::passphrase::{self, Key};

pub fn run(args: &SignerArgs) -> anyhow::Result<()> {
    crate::sandbox::no_core_dumps();
    let dir = DataDir::new(&args.data_dir.data_dir);
    let config = Config::load(&dir.config())?;
    let passphrase = if args.passphrase_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim_end().is_empty() {
            anyhow::bail!("--passphrase-stdin: no passphrase on standard input");
        }
        Passphrase::new(line)
    } else {
        passphrase::resolve_for(Key::Ca, &dir.ca_key(), args.ca_passphrase.ca_passphrase_file.as_deref())?
    };
    let durability = if args.danger_no_fsync { Durability::Unsafe } else { Durability::Flush };
    let (authority, ledger) = local_signer(&dir, config.profile_settings(), &passphrase, durability)
        .map_err(|e| super::in_use(e.to_string(), &dir.ledger()))?;
    drop(passphrase);
    let root_der = layout::read_certificate(&dir.root_cert())?;
    let audit = AuditLog::new(dir.path(), "signer");
    let audit = Arc::new(if args.danger_no_fsync { audit.without_sync() } else { audit });
    let socket = args.socket.clone().unwrap_or_else(|| dir.signer_socket());
    let listener = remote::bind(&socket)?;
    // The web worker of `serve` may run as [server] user: its group reaches the socket.
    if let Some(user) = &config.server.user
        && let Some(found) = crate::sandbox::service_user(user)?
    {
        crate::sandbox::share_socket(&socket, found.gid.as_raw())?;
    }
    // TCP with mutual TLS: only this CA's service-instance certificates get through.
    let tcp = match &args.listen {
        Some(address) => {
            let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
                anyhow::bail!(
                    "--listen needs --tls-cert and --tls-key: the signer's TLS certificate (server profile) and key"
                );
            };
            let tls = ca::signer_tls::server_config(cert, key, &super::ca_certificates(&dir)?)?;
            let listener =
                std::net::TcpListener::bind(address).map_err(|e| anyhow::anyhow!("binding {address}: {e}"))?;
            Some((listener.local_addr()?, listener, tls))
        }
        None => None,
    };
    let pid = std::process::id();
    let tcp_at = tcp.as_ref().map(|(at, _, _)| at.to_string());
    audit.append("signer.start", serde_json::json!({ "socket": socket, "listen": tcp_at, "pid": pid }))?;
    let hook = SignerService::signed_hook(audit.clone());
    let authorities = authority.map(|ca| ca.with_signed_hook(hook.clone()));
    let ocsp = Some(authorities.all().map(|(_, ca)| OcspSigner::for_generation(&dir, ca.generation())).collect());
    let server_names = config.server_policy()?;
    let service = Arc::new(SignerService {
        authorities,
        root_der,
        server_names,
        ocsp,
        audit: Some(audit.clone()),
        ledger: Some(ledger),
    });

    // Stop on SIGINT/SIGTERM, or, for a child of `serve`, when its end of stdin closes.
    let stop = Arc::new(AtomicBool::new(false));
    spawn_checkpoints(&dir, service.clone(), audit.clone(), stop.clone(), &config.audit);
    let wake = {
        let (stop, socket, tcp_at) = (stop.clone(), socket.clone(), tcp.as_ref().map(|(at, _, _)| *at));
        move |why: &str| {
            if !stop.swap(true, Ordering::SeqCst) {
                eprintln!("signer: stopping ({why})");
                let _ = std::os::unix::net::UnixStream::connect(&socket);
                if let Some(at) = tcp_at {
                    let _ = std::net::TcpStream::connect(at);
                }
            }
        }
    };
    // A child of `serve` (passphrase on stdin) ignores SIGINT: its supervisor stops it, after
    // the web worker, by closing the pipe.
    let supervised = args.passphrase_stdin;
    {
        let wake = wake.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut signals = {
            let _context = runtime.enter();
            crate::process::StopSignals::register(supervised)?
        };
        std::thread::spawn(move || {
            runtime.block_on(signals.wait());
            wake("signal");
        });
    }
    if supervised {
        let wake = wake.clone();
        crate::process::on_stdin_closed(move || wake("the parent process is gone"));
    }
    let tcp_thread = tcp.map(|(at, listener, tls)| {
        let (service, stop) = (service.clone(), stop.clone());
        (at, std::thread::spawn(move || remote::serve_tls(listener, tls, service, stop)))
    });
    let mut out = std::io::stdout().lock();
    if let Some((at, _)) = &tcp_thread {
        writeln!(out, "signer listening on {at} (TLS, service-instance certificates only)")?;
    }
    writeln!(out, "signer ready on {}", socket.display())?;
    out.flush()?;
    drop(out);

    remote::serve(listener, service, stop);
    if let Some((_, thread)) = tcp_thread {
        let _ = thread.join();
    }
    let _ = std::fs::remove_file(&socket);
    audit.append("signer.stop", serde_json::json!({ "pid": pid }))?;
    Ok(())
}

/// Signs checkpoints of the audit trail: after `checkpoint_lines` new lines, or once
/// `checkpoint_interval_secs` have passed since the last while lines were added. Each goes into
/// the ledger and is published at DATA_DIR/crl/audit-checkpoint.json (`/audit/checkpoint`). A
/// trail shorter than the last checkpoint is never signed again: the signer says so instead.
fn spawn_checkpoints(
    dir: &DataDir,
    service: Arc<SignerService>,
    audit: Arc<AuditLog>,
    stop: Arc<AtomicBool>,
    settings: &crate::config::AuditSection,
) {
    use ca::checkpoint::{SignedCheckpoint, Tail};
    let (path, published) = (dir.audit_log(), dir.crl_dir().join(pki::published::AUDIT_CHECKPOINT));
    let every = settings.checkpoint_lines;
    let interval = std::time::Duration::from_secs(settings.checkpoint_interval_secs);
    std::thread::spawn(move || {
        let mut tail = Tail::new(&path);
        let last = service.authorities.current(time::OffsetDateTime::now_utc()).ledger().latest_checkpoint();
        let mut covered = last.and_then(|doc| SignedCheckpoint::from_json(&doc).ok()).map_or(0, |c| c.checkpoint.lines);
        let mut since = std::time::Instant::now();
        let mut warned = false;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(500));
            // The certificate.signed lines written since the last round (see
            // `SignerService::signed_hook`).
            if let Err(e) = audit.sync() {
                eprintln!("signer: syncing the audit trail: {e}");
            }
            let (lines, head) = match tail.poll() {
                Ok(state) if state.0 >= covered => state,
                Ok((lines, _)) => {
                    if !std::mem::replace(&mut warned, true) {
                        eprintln!(
                            "signer: the audit trail has {lines} lines, fewer than the {covered} its last checkpoint \
                             covers: lines were cut off; no checkpoint is signed (run `inkan audit verify`)"
                        );
                    }
                    continue;
                }
                Err(e) => {
                    if !std::mem::replace(&mut warned, true) {
                        eprintln!("signer: audit checkpoints stopped: {e}");
                    }
                    continue;
                }
            };
            if lines == covered || (lines - covered < every && since.elapsed() < interval) {
                continue;
            }
            // A checkpoint covers only lines on the disk, whichever process wrote them.
            if let Err(e) = audit.sync_file() {
                eprintln!("signer: syncing the audit trail before a checkpoint: {e}");
                continue;
            }
            let now = time::OffsetDateTime::now_utc();
            match service.authorities.current(now).checkpoint_audit(lines, head, now) {
                Ok(signed) => {
                    covered = lines;
                    since = std::time::Instant::now();
                    if let Err(e) = layout::replace(&published, &signed.to_json(), 0o644) {
                        eprintln!("signer: publishing the audit checkpoint: {e}");
                    }
                }
                Err(e) => eprintln!("signer: signing an audit checkpoint: {e}"),
            }
        }
    });
}
