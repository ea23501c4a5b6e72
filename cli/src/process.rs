//! The processes of `serve`: the signals each obeys, and the supervisor's watch over its
//! children (started, restarted with backoff when they die, stopped in order).

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The signals that stop this process: SIGTERM, and SIGINT unless `supervised`. A supervised
/// child (the signer and the web worker under `serve`) ignores SIGINT: Ctrl-C in a terminal
/// reaches the whole process group, and the supervisor stops its children in order (the web
/// worker first, so that requests in flight still reach the signer). Registered when made (in
/// a runtime's context), so that a signal arriving before [`StopSignals::wait`] is not lost
/// and does not kill the process by its default action.
pub struct StopSignals {
    supervised: bool,
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Registers the handlers now; call it inside a tokio runtime's context.
    pub fn register(supervised: bool) -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { supervised, term: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    /// Resolves when the process is asked to stop.
    pub async fn wait(&mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.interrupt.recv() => if !self.supervised { return },
            }
        }
    }
}

/// Calls `stop` once standard input reaches its end (the supervisor is gone, or let go of us).
pub fn on_stdin_closed(stop: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        use std::io::Read;
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        stop();
    });
}

type Spawn = Box<dyn Fn() -> anyhow::Result<Child> + Send + Sync>;

struct Inner {
    name: &'static str,
    stopping: AtomicBool,
    child: Mutex<Option<Child>>,
    spawn: Spawn,
}

/// A child of the supervisor: started by `spawn` (which returns once the child is ready), and
/// started again with backoff (0.5 s doubling to 30 s) whenever it exits until it is stopped.
pub struct Supervised {
    inner: Arc<Inner>,
    monitor: Option<std::thread::JoinHandle<()>>,
}

/// How a child is asked to stop.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGTERM (and its standard input closed).
    Terminate,
    /// Its standard input closed: it stops when it sees the end.
    CloseStdin,
}

impl Supervised {
    /// Starts the child (trying a few times: an orphan of a killed service may still hold what
    /// it needs) and watches it.
    pub fn start(name: &'static str, spawn: Spawn) -> anyhow::Result<Self> {
        let mut attempt = 0;
        let first = loop {
            match spawn() {
                Ok(child) => break child,
                Err(e) if attempt < 10 => {
                    attempt += 1;
                    tracing::warn!(error = %format!("{e:#}"), "starting the {name}; trying again");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        };
        let inner = Arc::new(Inner { name, stopping: AtomicBool::new(false), child: Mutex::new(Some(first)), spawn });
        let watched = inner.clone();
        let monitor = std::thread::spawn(move || watch(&watched));
        Ok(Self { inner, monitor: Some(monitor) })
    }

    /// The child's process id now.
    pub fn pid(&self) -> Option<u32> {
        self.inner.child.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Child::id)
    }

    /// Stops watching, asks the child to stop `how`, and waits up to `within` before killing
    /// it.
    pub fn stop(mut self, how: Stop, within: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.join();
        }
        let Some(mut child) = self.inner.child.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
        if let Stop::Terminate = how
            && let Ok(pid) = i32::try_from(child.id())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        drop(child.stdin.take());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("the {} did not stop within {within:?}; killing it", self.inner.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(mut child) = self.inner.child.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn watch(inner: &Inner) {
    let name = inner.name;
    let mut backoff = Duration::from_millis(500);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let exited = match inner.child.lock().unwrap_or_else(PoisonError::into_inner).as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status),
            _ => None,
        };
        let Some(status) = exited else { continue };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(%status, "the {name} exited; starting it again");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        match (inner.spawn)() {
            Ok(new) => {
                tracing::info!(pid = new.id(), "the {name} is back");
                backoff = Duration::from_millis(500);
                *inner.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(new);
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "restarting the {name} failed"),
        }
    }
}
