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
        // The monitor sees `stopping` within a step of its sleep (or after a spawn under way),
        // so no child is started after this.
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.join();
        }
        if let Some(mut child) = self.inner.child.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child that stays up this long is healthy again: its next restart waits the shortest time.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Sleeps `total` in short steps; false as soon as `inner` is being stopped.
fn sleep_unless_stopping(inner: &Inner, total: Duration) -> bool {
    let until = Instant::now() + total;
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn watch(inner: &Inner) {
    let name = inner.name;
    let mut backoff = Duration::from_millis(500);
    let mut started = Instant::now();
    loop {
        if !sleep_unless_stopping(inner, Duration::from_millis(200)) {
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
        // A child that dies soon after each start waits longer and longer (to 30 s) before the
        // next; one that ran a while starts again quickly.
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = Duration::from_millis(500);
        }
        tracing::error!(%status, "the {name} exited; starting it again in {backoff:?}");
        if !sleep_unless_stopping(inner, backoff) {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
        loop {
            match (inner.spawn)() {
                Ok(mut new) => {
                    let mut child = inner.child.lock().unwrap_or_else(PoisonError::into_inner);
                    if inner.stopping.load(Ordering::SeqCst) {
                        // Stopped while it was starting: it does not outlive the supervisor.
                        let _ = new.kill();
                        let _ = new.wait();
                        return;
                    }
                    tracing::info!(pid = new.id(), "the {name} is back");
                    *child = Some(new);
                    started = Instant::now();
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "restarting the {name} failed; trying again in {backoff:?}");
                    if !sleep_unless_stopping(inner, backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::atomic::AtomicUsize;

    /// A child that dies at once is started again after 0.5 s, 1 s, 2 s, ...: not reset to
    /// the shortest wait each time. Stopping does not wait out a backoff, and no child is left.
    #[test]
    fn a_child_that_keeps_dying_backs_off_and_stop_is_prompt() {
        let spawned = Arc::new(AtomicUsize::new(0));
        let count = spawned.clone();
        let supervised = Supervised::start(
            "test child",
            Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(Command::new("true").stdin(Stdio::piped()).spawn()?)
            }),
        )
        .expect("start");
        // Starts at about 0, 0.7, 1.9, 4.1 s (0.2 s watch step plus the backoff).
        std::thread::sleep(Duration::from_millis(4600));
        let starts = spawned.load(Ordering::SeqCst);
        assert!((3..=5).contains(&starts), "{starts} starts in 4.6 s: the backoff grows");
        // Now within a 4 s backoff: stop returns at once.
        let asked = Instant::now();
        supervised.stop(Stop::CloseStdin, Duration::from_secs(1));
        assert!(asked.elapsed() < Duration::from_millis(600), "stop waited {:?}", asked.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(spawned.load(Ordering::SeqCst), starts, "nothing is started after stop");
    }
}
